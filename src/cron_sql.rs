//! SQL face of `cron.rs`: the functions `job.schedule` and the scheduler call.
//! Declared in `sql/pg_jobqueue--0.1.0--0.2.0.sql`, hence `sql = false`.

use crate::cron::{jitter_micros, time_zone, Schedule};
use pgrx::prelude::*;

/// Seconds between the Unix epoch and PostgreSQL's (2000-01-01).
const PG_EPOCH_UNIX_SECONDS: i64 = 946_684_800;

fn parse(cron: &str, timezone: &str) -> (Schedule, jiff::tz::TimeZone) {
    let schedule = Schedule::parse(cron).unwrap_or_else(|msg| {
        crate::raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("invalid schedule {}: {msg}", quote(cron)),
            "Use 5 cron fields (minute hour day month weekday), 6 with leading seconds, a macro such as @daily, or an interval such as '30 seconds'.",
        )
    });
    let tz = time_zone(timezone).unwrap_or_else(|msg| {
        crate::raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            msg,
            "Use an IANA time zone name such as 'Europe/London' or 'UTC' (see pg_timezone_names).",
        )
    });
    (schedule, tz)
}

fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

fn to_instant(ts: TimestampWithTimeZone, what: &str) -> jiff::Timestamp {
    if ts.is_infinity() || ts.is_neg_infinity() {
        error!("{what} must be a finite time");
    }
    let micros = ts.into_inner() + PG_EPOCH_UNIX_SECONDS * 1_000_000;
    jiff::Timestamp::from_microsecond(micros)
        .unwrap_or_else(|_| error!("{what} is out of the supported range"))
}

fn from_instant(t: jiff::Timestamp) -> TimestampWithTimeZone {
    let micros = t.as_microsecond() - PG_EPOCH_UNIX_SECONDS * 1_000_000;
    // SAFETY-free: any i64 between the infinities is a valid timestamptz.
    TimestampWithTimeZone::try_from(micros).unwrap_or_else(|_| error!("fire time out of range"))
}

#[pg_extern(sql = false, stable, parallel_safe)]
fn cron_next(
    cron: &str,
    timezone: &str,
    after: TimestampWithTimeZone,
) -> Option<TimestampWithTimeZone> {
    let (schedule, tz) = parse(cron, timezone);
    schedule
        .next_after(to_instant(after, "after"), &tz)
        .map(from_instant)
}

#[pg_extern(sql = false, stable, parallel_safe)]
fn _cron_latest(
    cron: &str,
    timezone: &str,
    lower: TimestampWithTimeZone,
    upper: TimestampWithTimeZone,
) -> Option<TimestampWithTimeZone> {
    let (schedule, tz) = parse(cron, timezone);
    schedule
        .latest_in(to_instant(lower, "lower"), to_instant(upper, "upper"), &tz)
        .map(from_instant)
}

#[pg_extern(sql = false, stable, parallel_safe)]
fn _check_cron(cron: &str, timezone: &str) {
    parse(cron, timezone);
}

#[pg_extern(sql = false, immutable, parallel_safe)]
fn _jitter_offset(name: &str, bound: Interval) -> Interval {
    let bound_micros = bound.as_micros();
    let bound_micros = i64::try_from(bound_micros).unwrap_or(i64::MAX);
    let offset = jitter_micros(name, bound_micros);
    // Whole seconds when the bound allows: fire times stay readable.
    let offset = if bound_micros >= 1_000_000 {
        offset - offset % 1_000_000
    } else {
        offset
    };
    Interval::from_micros(offset)
}
