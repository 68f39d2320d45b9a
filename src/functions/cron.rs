//! SQL face of `cron.rs`: the functions `job.schedule` and the scheduler call.

use pg_jobqueue_rules::cron::{jitter_micros, time_zone, Schedule};
use pgrx::prelude::*;

/// Seconds between the Unix epoch and PostgreSQL's (2000-01-01).
const PG_EPOCH_UNIX_SECONDS: i64 = 946_684_800;

fn parse(cron: &str, timezone: &str) -> (Schedule, jiff::tz::TimeZone) {
    let schedule = Schedule::parse(cron).unwrap_or_else(|msg| {
        crate::raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("invalid schedule {}: {msg}", crate::quote_literal(cron)),
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

/// Schedules are computed for times within these years (jiff's range, less a margin for
/// time zone offsets and the 10-year search horizon).
const SUPPORTED_YEARS: &str = "years -9000 to 9000";

fn out_of_range(what: &str, ts: TimestampWithTimeZone) -> ! {
    crate::raise(
        PgSqlErrorCode::ERRCODE_DATETIME_FIELD_OVERFLOW,
        format!(
            "{what} is out of the range schedules are computed for ({SUPPORTED_YEARS}), got {ts}"
        ),
        "",
    )
}

fn to_instant(ts: TimestampWithTimeZone, what: &str) -> jiff::Timestamp {
    if ts.is_infinity() || ts.is_neg_infinity() {
        crate::raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("{what} must be a finite time, got {ts}"),
            "",
        );
    }
    let micros = ts.into_inner() + PG_EPOCH_UNIX_SECONDS * 1_000_000;
    jiff::Timestamp::from_microsecond(micros)
        .ok()
        .filter(|t| (-9000..=9000).contains(&t.to_zoned(jiff::tz::TimeZone::UTC).year()))
        .unwrap_or_else(|| out_of_range(what, ts))
}

fn from_instant(t: jiff::Timestamp) -> TimestampWithTimeZone {
    let micros = t.as_microsecond() - PG_EPOCH_UNIX_SECONDS * 1_000_000;
    // Any i64 between the infinities is a valid timestamptz, and jiff's range lies inside.
    TimestampWithTimeZone::try_from(micros).expect("jiff's range lies inside PostgreSQL's")
}

/// SQL: when the schedule `cron` fires next after `after`, in time zone `timezone`.
#[pg_extern(stable, parallel_safe)]
fn cron_next(
    cron: &str,
    timezone: default!(&str, "'UTC'"),
    after: default!(TimestampWithTimeZone, "now()"),
) -> TimestampWithTimeZone {
    let (schedule, tz) = parse(cron, timezone);
    // A valid expression fires within its search horizon from any time in range.
    let next = schedule
        .next_after(to_instant(after, "after"), &tz)
        .unwrap_or_else(|| out_of_range("after", after));
    from_instant(next)
}

#[pg_extern(stable, parallel_safe)]
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

#[pg_extern(stable, parallel_safe)]
fn _check_cron(cron: &str, timezone: &str) {
    parse(cron, timezone);
}

#[pg_extern(immutable, parallel_safe)]
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
