//! Schedule expressions: cron (5 or 6 fields, macros) and plain intervals.
//!
//! Pure Rust on top of `jiff`, so it can be unit tested without PostgreSQL.
//!
//! # Language
//! * `min hour dom month dow` (second 0) or `sec min hour dom month dow`. A field is `*`,
//!   `n`, `a-b`, `*/n`, `a-b/n`, `a/n` (a to the field maximum) or a comma list of those.
//!   Months `JAN`-`DEC` and weekdays `SUN`-`SAT` may be named; weekday 7 is Sunday too.
//! * Days follow Vixie cron: when both day-of-month and day-of-week are restricted, a day
//!   matches if EITHER matches. As in Vixie cron, a field starting with `*` (even `*/2`)
//!   counts as unrestricted for this rule.
//! * Macros `@yearly`/`@annually`, `@monthly`, `@weekly`, `@daily`/`@midnight`, `@hourly`.
//! * Intervals `<n> <unit>` (`30 seconds`, `5m`, `2 hours`, `1 day`), from 1 second to 366
//!   days. They fire at every multiple of their length since the Unix epoch and ignore the
//!   time zone, so they never drift and never see DST.
//!
//! # Time zones
//! Cron fields are matched against local wall-clock time in the schedule's zone. DST makes
//! that mapping non-trivial, and two kinds of schedules want different answers:
//! * Schedules firing every hour (hour field matches all 24 hours, e.g. `* * * * *`,
//!   `*/5 * * * *`, `0 * * * *`) fire by real elapsed time: the fields are matched against
//!   the local time of each instant. A repeated (fall-back) hour is fired in both passes and
//!   wall times inside a spring-forward gap simply do not exist, so an every-minute job
//!   keeps firing every 60 real seconds and an hourly job once per real hour.
//! * All other ("fixed-time") schedules, e.g. `30 2 * * *` or `0 9 * * MON-FRI`, run once per
//!   matching wall time, which users expect even when DST moves it: a time in a
//!   spring-forward gap fires once at the end of the gap (the transition instant; several
//!   gap times collapse into that single fire, and a time exactly at the gap end is not
//!   fired twice), and a time in a repeated hour fires once, at its first occurrence.
//!
//! Searches are bounded: `next_after` looks about 10 years ahead and `latest_in` 10 years
//! back from its upper bound. Only freak schedules fire more rarely (`0 0 29 2 */7`, Feb 29
//! on a Sunday, fires every 28 years) and they show up as not firing; parsing rejects
//! expressions with no fire within 10 years of 2000-01-01.

use jiff::civil::{Date, DateTime};
use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::Timestamp;

/// How far `next_after` and `latest_in` look, in seconds (10 years and a few days).
const HORIZON_SECS: i64 = 3655 * 86_400;
/// Backward probe windows for `latest_in`: 1 min, 1 h, 1 day, 35 days, 400 days, 10 years.
const PROBE_WINDOWS: [i64; 6] = [60, 3_600, 86_400, 35 * 86_400, 400 * 86_400, 3650 * 86_400];
const MAX_INTERVAL_SECS: i64 = 366 * 86_400;
const ALL_HOURS: u64 = (1 << 24) - 1;

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
const MONTH_FULL: &str = "January February March April May June July August September \
                          October November December";

/// Static description of one cron field.
struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    /// (what a name denotes, lowercase 3-letter names for min, min + 1, ...)
    names: Option<(&'static str, &'static [&'static str])>,
}

const fn field(name: &'static str, min: u32, max: u32) -> Field {
    Field {
        name,
        min,
        max,
        names: None,
    }
}

const SEC: Field = field("second", 0, 59);
const MIN: Field = field("minute", 0, 59);
const HOUR: Field = field("hour", 0, 23);
const DOM: Field = field("day of month", 1, 31);
const MONTH: Field = Field {
    names: Some(("month", &MONTHS)),
    ..field("month", 1, 12)
};
const DOW: Field = Field {
    names: Some(("weekday", &WEEKDAYS)),
    ..field("day of week", 0, 7)
};

/// A parsed schedule expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    kind: Kind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Cron(Cron),
    /// Length in seconds.
    Interval(i64),
}

/// Cron fields as bit sets (bit n set = value n allowed). Weekday 7 is folded into 0.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Cron {
    sec: u64,
    min: u64,
    hour: u64,
    dom: u64,
    month: u64,
    dow: u64,
    dom_star: bool,
    dow_star: bool,
}

impl Schedule {
    /// Parses a cron expression or an interval. Err is a one-line, user-facing message that
    /// names the bad part, e.g. "cron field 2 (hour) \"25\": 25 is out of range 0-23".
    pub fn parse(expr: &str) -> Result<Schedule, String> {
        let expr = expr.trim();
        if expr.is_empty() {
            return Err("empty schedule expression".to_string());
        }
        let kind = if let Some(name) = expr.strip_prefix('@') {
            Kind::Cron(Cron::parse(expand_macro(name, expr)?)?)
        } else if looks_like_interval(expr) {
            Kind::Interval(parse_interval(expr)?)
        } else {
            Kind::Cron(Cron::parse(expr)?)
        };
        let schedule = Schedule { kind };
        // Safety net behind Cron::check_days_exist for rarer never-firing combinations.
        let y2k = Timestamp::from_second(946_684_800).expect("valid timestamp");
        if schedule.next_after(y2k, &TimeZone::UTC).is_none() {
            return Err(format!(
                "never fires: \"{expr}\" has no fire time within 10 years"
            ));
        }
        Ok(schedule)
    }

    /// Smallest fire instant strictly after `after`, or None if there is none within 10 years
    /// (e.g. "0 0 30 2 *").
    pub fn next_after(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let limit = after.as_second().saturating_add(HORIZON_SECS);
        let next = match &self.kind {
            Kind::Interval(len) => {
                let k = floor_secs(after).div_euclid(*len).checked_add(1)?;
                Timestamp::from_second(k.checked_mul(*len)?).ok()
            }
            Kind::Cron(c) if c.hour == ALL_HOURS => c.next_elapsed(after, tz, limit),
            Kind::Cron(c) => c.next_fixed(after, tz, limit),
        }?;
        (next.as_second() <= limit).then_some(next)
    }

    /// Largest fire instant t with lower <= t <= upper, or None. Probes growing windows back
    /// from `upper` for a fire, then binary-searches the last one, so it stays fast for
    /// every-second schedules over years. Ranges longer than 10 years only see their last
    /// 10 years.
    pub fn latest_in(
        &self,
        lower: Timestamp,
        upper: Timestamp,
        tz: &TimeZone,
    ) -> Option<Timestamp> {
        // All fire instants are whole seconds, so work on the whole seconds in the range.
        let lo = ceil_secs(lower);
        let hi = floor_secs(upper);
        if lo > hi {
            return None;
        }
        if let Kind::Interval(len) = self.kind {
            let last = hi.div_euclid(len) * len;
            return (last >= lo)
                .then(|| Timestamp::from_second(last).ok())
                .flatten();
        }
        // First fire at or after second `s` (fires are whole seconds).
        let first_from = |s: i64| -> Option<i64> {
            let t = Timestamp::from_second(s.checked_sub(1)?).ok()?;
            Some(self.next_after(t, tz)?.as_second())
        };
        for window in PROBE_WINDOWS {
            let start = hi.saturating_sub(window).max(lo);
            if let Some(mut found) = first_from(start).filter(|&f| f <= hi) {
                // Invariant: `found` is a fire and the last fire lies in [found, top].
                let mut top = hi;
                while found < top {
                    let mid = found + (top - found + 1) / 2;
                    match first_from(mid) {
                        Some(f) if f <= top => found = f,
                        _ => top = mid - 1,
                    }
                }
                return Timestamp::from_second(found).ok();
            }
            if start == lo {
                return None;
            }
        }
        None
    }
}

/// Looks up an IANA time zone name ("Europe/London", "UTC").
pub fn time_zone(name: &str) -> Result<TimeZone, String> {
    TimeZone::get(name).map_err(|_| format!("unknown time zone \"{name}\""))
}

/// A stable per-schedule offset in [0, bound_micros) microseconds derived from `name` with
/// FNV-1a 64-bit (std's hasher is randomly seeded, so it would differ between processes).
/// bound_micros <= 0 gives 0.
pub fn jitter_micros(name: &str, bound_micros: i64) -> i64 {
    if bound_micros <= 0 {
        return 0;
    }
    (fnv1a64(name.as_bytes()) % bound_micros as u64) as i64
}

fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn floor_secs(t: Timestamp) -> i64 {
    t.as_second() - i64::from(t.subsec_nanosecond() < 0)
}

fn ceil_secs(t: Timestamp) -> i64 {
    t.as_second() + i64::from(t.subsec_nanosecond() > 0)
}

fn expand_macro(name: &str, expr: &str) -> Result<&'static str, String> {
    Ok(match name.to_ascii_lowercase().as_str() {
        "yearly" | "annually" => "0 0 1 1 *",
        "monthly" => "0 0 1 * *",
        "weekly" => "0 0 * * 0",
        "daily" | "midnight" => "0 0 * * *",
        "hourly" => "0 * * * *",
        _ => return Err(format!("unknown cron macro \"{expr}\"")),
    })
}

/// `<digits><letters...>` in at most two words: cron needs five, so there is no overlap.
fn looks_like_interval(expr: &str) -> bool {
    expr.split_whitespace().count() <= 2
        && expr.starts_with(|c: char| c.is_ascii_digit())
        && expr.contains(|c: char| c.is_ascii_alphabetic())
}

fn parse_interval(expr: &str) -> Result<i64, String> {
    let digits = expr
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(expr.len());
    let (number, unit) = (&expr[..digits], expr[digits..].trim());
    if !unit.chars().all(|c| c.is_ascii_alphabetic()) {
        return Err(format!(
            "invalid interval \"{expr}\": expected a whole number and a unit, e.g. \"30 seconds\""
        ));
    }
    let unit_secs = match unit.to_ascii_lowercase().as_str() {
        "s" | "sec" | "secs" | "second" | "seconds" => 1,
        "m" | "min" | "mins" | "minute" | "minutes" => 60,
        "h" | "hr" | "hour" | "hours" => 3_600,
        "d" | "day" | "days" => 86_400,
        _ => {
            return Err(format!(
                "unknown interval unit \"{unit}\" (use seconds, minutes, hours or days)"
            ))
        }
    };
    let too_long = || "interval must be at most 366 days".to_string();
    let n: i64 = number.parse().map_err(|_| too_long())?;
    match n.checked_mul(unit_secs) {
        Some(0) => Err("interval must be at least 1 second".to_string()),
        Some(secs) if secs <= MAX_INTERVAL_SECS => Ok(secs),
        _ => Err(too_long()),
    }
}

impl Cron {
    fn parse(expr: &str) -> Result<Cron, String> {
        let parts: Vec<&str> = expr.split_whitespace().collect();
        let (fields, specs): (&[&str], &[Field]) = match parts.len() {
            5 => (&parts, &[MIN, HOUR, DOM, MONTH, DOW]),
            6 => (&parts, &[SEC, MIN, HOUR, DOM, MONTH, DOW]),
            n => return Err(format!("cron expression must have 5 or 6 fields, got {n}")),
        };
        let mut sets = Vec::with_capacity(6);
        for (i, (text, spec)) in fields.iter().zip(specs).enumerate() {
            let set = parse_field(text, spec).map_err(|msg| {
                format!("cron field {} ({}) \"{}\": {}", i + 1, spec.name, text, msg)
            })?;
            sets.push(set);
        }
        if sets.len() == 5 {
            sets.insert(0, 1); // second 0
        }
        let dow = sets[5];
        let cron = Cron {
            sec: sets[0],
            min: sets[1],
            hour: sets[2],
            dom: sets[3],
            month: sets[4],
            dow: (dow | (dow >> 7)) & 0x7f,
            dom_star: fields[fields.len() - 3].starts_with('*'),
            dow_star: fields[fields.len() - 1].starts_with('*'),
        };
        cron.check_days_exist()?;
        Ok(cron)
    }

    /// Rejects day-of-month sets that no selected month has, like "0 0 30 2 *".
    fn check_days_exist(&self) -> Result<(), String> {
        if !self.dow_star {
            return Ok(()); // a restricted weekday alone can fire (Vixie "or" rule)
        }
        const MAX_DAYS: [u32; 12] = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
        let months: Vec<usize> = (0..12).filter(|m| self.month & (2 << m) != 0).collect();
        if months
            .iter()
            .any(|&m| self.dom & ((2u64 << MAX_DAYS[m]) - 2) != 0)
        {
            return Ok(());
        }
        let names: Vec<&str> = months
            .iter()
            .filter_map(|&m| MONTH_FULL.split_whitespace().nth(m))
            .collect();
        let list = match names.split_last() {
            Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
            _ => names.join(""),
        };
        let day = self.dom.trailing_zeros();
        Err(format!("never fires: day {day} does not occur in {list}"))
    }

    fn day_matches(&self, date: Date) -> bool {
        let dom = self.dom & (1 << date.day()) != 0;
        let dow = self.dow & (1 << date.weekday().to_sunday_zero_offset()) != 0;
        if self.dom_star || self.dow_star {
            dom && dow
        } else {
            dom || dow
        }
    }

    /// Earliest matching time of day (h, m, s) at or after the given one.
    fn time_from(&self, mut h: u32, mut m: u32, mut s: u32) -> Option<(u32, u32, u32)> {
        loop {
            let nh = next_bit(self.hour, h)?;
            if nh != h {
                (h, m, s) = (nh, 0, 0);
            }
            match next_bit(self.min, m) {
                None => (h, m, s) = (h + 1, 0, 0),
                Some(nm) => {
                    if nm != m {
                        (m, s) = (nm, 0);
                    }
                    match next_bit(self.sec, s) {
                        Some(ns) => return Some((h, m, ns)),
                        None => (m, s) = (m + 1, 0),
                    }
                }
            }
        }
    }

    /// Earliest matching wall-clock time >= `start` (whole seconds) on or before `limit`.
    fn next_local(&self, start: DateTime, limit: Date) -> Option<DateTime> {
        let mut date = start.date();
        let mut hms = (
            start.hour() as u32,
            start.minute() as u32,
            start.second() as u32,
        );
        while date <= limit {
            if self.month & (1 << date.month()) == 0 {
                date = date.last_of_month().tomorrow().ok()?;
            } else if !self.day_matches(date) {
                date = date.tomorrow().ok()?;
            } else if let Some((h, m, s)) = self.time_from(hms.0, hms.1, hms.2) {
                return Some(date.at(h as i8, m as i8, s as i8, 0));
            } else {
                date = date.tomorrow().ok()?;
            }
            if date != start.date() {
                hms = (0, 0, 0);
            }
        }
        None
    }

    /// Elapsed-time semantics: walk the stretches of constant UTC offset between
    /// transitions and match fields against `instant + offset` within each.
    fn next_elapsed(&self, after: Timestamp, tz: &TimeZone, limit: i64) -> Option<Timestamp> {
        let mut from = Timestamp::from_second(floor_secs(after).checked_add(1)?).ok()?;
        while from.as_second() <= limit {
            let offset = tz.to_offset(from);
            let end = tz.following(from).next().map(|t| t.timestamp());
            let stop = Timestamp::from_second(limit).ok()?;
            let stop = end.map_or(stop, |e| e.min(stop));
            let found = self.next_local(offset.to_datetime(from), offset.to_datetime(stop).date());
            if let Some(t) = found.and_then(|dt| offset.to_timestamp(dt).ok()) {
                if end.is_none_or(|e| t < e) {
                    return Some(t);
                }
            }
            from = Timestamp::from_second(ceil_secs(end?)).ok()?;
        }
        None
    }

    /// Fixed-time semantics: walk matching wall-clock times and map each to one instant.
    /// The mapping never decreases, so the first one landing after `after` is the answer.
    fn next_fixed(&self, after: Timestamp, tz: &TimeZone, limit: i64) -> Option<Timestamp> {
        let mut local = tz.to_datetime(Timestamp::from_second(floor_secs(after)).ok()?);
        let limit_date = tz.to_datetime(Timestamp::from_second(limit).ok()?).date();
        loop {
            let dt = self.next_local(local, limit_date)?;
            let t = resolve_fixed(dt, tz)?;
            if t > after {
                return Some(t);
            }
            local = dt.checked_add(jiff::SignedDuration::from_secs(1)).ok()?;
        }
    }
}

/// Instant of a fixed-time wall-clock time: gap times move to the transition ending the gap,
/// repeated times take their first occurrence.
fn resolve_fixed(dt: DateTime, tz: &TimeZone) -> Option<Timestamp> {
    match tz.to_ambiguous_timestamp(dt).offset() {
        AmbiguousOffset::Unambiguous { offset } => offset.to_timestamp(dt).ok(),
        AmbiguousOffset::Fold { before, after } => Some(
            before
                .to_timestamp(dt)
                .ok()?
                .min(after.to_timestamp(dt).ok()?),
        ),
        AmbiguousOffset::Gap { before, after } => {
            // Read with the later offset, dt lies just before the transition.
            let early = before
                .to_timestamp(dt)
                .ok()?
                .min(after.to_timestamp(dt).ok()?);
            Some(tz.following(early).next()?.timestamp())
        }
    }
}

/// Smallest set bit >= `from`.
fn next_bit(set: u64, from: u32) -> Option<u32> {
    let rest = set.checked_shr(from)?.checked_shl(from)?;
    (rest != 0).then(|| rest.trailing_zeros())
}

/// Parses one field into a bit set; errors omit the field prefix (added by the caller).
fn parse_field(text: &str, spec: &Field) -> Result<u64, String> {
    let mut set = 0u64;
    for item in text.split(',') {
        if item.is_empty() {
            return Err("empty list item".to_string());
        }
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => {
                let step: u32 = match step.parse() {
                    Ok(n) if n >= 1 => n,
                    Ok(_) => return Err("step must be at least 1".to_string()),
                    Err(_) => return Err(format!("step \"{step}\" is not a number")),
                };
                (range, Some(step))
            }
            None => (item, None),
        };
        let (a, b) = if range == "*" {
            (spec.min, spec.max)
        } else if let Some((a, b)) = range.split_once('-') {
            let (a, b) = (parse_value(a, spec)?, parse_value(b, spec)?);
            if a > b {
                return Err(format!("range start {a} is greater than end {b}"));
            }
            (a, b)
        } else {
            let a = parse_value(range, spec)?;
            (a, if step.is_some() { spec.max } else { a })
        };
        for v in (a..=b).step_by(step.unwrap_or(1) as usize) {
            set |= 1 << v;
        }
    }
    Ok(set)
}

fn parse_value(token: &str, spec: &Field) -> Result<u32, String> {
    if token.is_empty() {
        return Err("missing value".to_string());
    }
    let value = if token.chars().all(|c| c.is_ascii_digit()) {
        token.parse::<u32>().unwrap_or(u32::MAX)
    } else if let Some((kind, names)) = spec.names {
        let lower = token.to_ascii_lowercase();
        match names.iter().position(|n| *n == lower) {
            Some(i) => i as u32 + spec.min,
            None => return Err(format!("unknown {kind} name \"{token}\"")),
        }
    } else {
        return Err(format!("\"{token}\" is not a number"));
    };
    if value < spec.min || value > spec.max {
        let shown = if value == u32::MAX {
            token.to_string()
        } else {
            value.to_string()
        };
        return Err(format!("{shown} is out of range {}-{}", spec.min, spec.max));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::SignedDuration;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn sched(expr: &str) -> Schedule {
        Schedule::parse(expr).unwrap_or_else(|e| panic!("{expr}: {e}"))
    }

    fn tz(name: &str) -> TimeZone {
        time_zone(name).unwrap()
    }

    fn cron(expr: &str) -> Cron {
        match sched(expr).kind {
            Kind::Cron(c) => c,
            Kind::Interval(_) => panic!("{expr} is an interval"),
        }
    }

    fn bits(values: &[u32]) -> u64 {
        values.iter().fold(0, |s, v| s | 1 << v)
    }

    /// Each case is (expression, zone, after, expected fires separated by spaces): checks the
    /// chain of next_after calls starting at `after`.
    fn check(cases: &[(&str, &str, &str, &str)]) {
        for (expr, zone, from, want) in cases {
            let (s, tz) = (sched(expr), tz(zone));
            let mut t = ts(from);
            let got: Vec<String> = want
                .split(' ')
                .map(|_| {
                    t = s.next_after(t, &tz).unwrap();
                    t.to_string()
                })
                .collect();
            assert_eq!(got.join(" "), *want, "{expr:?} in {zone} after {from}");
        }
    }

    /// Number of fires in [from, to).
    fn count(expr: &str, zone: &str, from: Timestamp, to: Timestamp) -> usize {
        let (s, tz) = (sched(expr), tz(zone));
        let mut t = from - SignedDuration::from_nanos(1);
        let mut n = 0;
        while let Some(f) = s.next_after(t, &tz).filter(|f| *f < to) {
            n += 1;
            t = f;
        }
        n
    }

    #[test]
    fn parses_fields_lists_ranges_steps() {
        let c = cron("*/15 0-6/2,12 1,15 * *");
        assert_eq!(c.sec, 1);
        assert_eq!(c.min, bits(&[0, 15, 30, 45]));
        assert_eq!(c.hour, bits(&[0, 2, 4, 6, 12]));
        assert_eq!(c.dom, bits(&[1, 15]));
        assert_eq!(c.month, bits(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]));
        assert!(!c.dom_star && c.dow_star);
        let c = cron("  10/20   5 4 * * *  ");
        assert_eq!(
            [c.sec, c.min, c.hour],
            [bits(&[10, 30, 50]), 1 << 5, 1 << 4]
        );
        assert_eq!(cron("0 0 * * 7").dow, bits(&[0]));
        assert_eq!(cron("0 0 * * 5-7").dow, bits(&[0, 5, 6]));
        assert_eq!(cron("0 0 * * */2").dow, bits(&[0, 2, 4, 6]));
    }

    #[test]
    fn parses_names_case_insensitive() {
        assert_eq!(cron("0 0 * jan,Mar-MAY *").month, bits(&[1, 3, 4, 5]));
        assert_eq!(cron("0 9 * * MON-FRI").dow, bits(&[1, 2, 3, 4, 5]));
        assert_eq!(cron("0 9 * * sun,Sat").dow, bits(&[0, 6]));
        assert_eq!(sched("0 0 * DEC SUN"), sched("0 0 * 12 0"));
    }

    #[test]
    fn parses_macros() {
        for (m, e) in [
            ("@yearly", "0 0 1 1 *"),
            ("@annually", "0 0 1 1 *"),
            ("@monthly", "0 0 1 * *"),
            ("@weekly", "0 0 * * 0"),
            ("@daily", "0 0 * * *"),
            ("@MIDNIGHT", "0 0 * * *"),
            ("@hourly", "0 * * * *"),
        ] {
            assert_eq!(sched(m), sched(e), "{m}");
        }
    }

    #[test]
    fn parses_intervals() {
        #[rustfmt::skip]
        let cases = [
            ("30 seconds", 30), ("1s", 1), ("5 SEC", 5), ("2 secs", 2), ("1 second", 1),
            ("5m", 300), ("5 min", 300), ("3 mins", 180), ("1 Minute", 60), ("10minutes", 600),
            ("1h", 3_600), ("2 hr", 7_200), ("1 hour", 3_600), ("12 hours", 43_200),
            ("1d", 86_400), ("1 day", 86_400), (" 366 days ", MAX_INTERVAL_SECS),
        ];
        for (expr, secs) in cases {
            let s = sched(expr);
            assert_eq!(s.kind, Kind::Interval(secs), "{expr}");
        }
        assert!(!matches!(sched("* * * * *").kind, Kind::Interval(_)));
        assert!(!matches!(sched("@daily").kind, Kind::Interval(_)));
    }

    #[test]
    fn parse_errors_name_the_bad_part() {
        #[rustfmt::skip]
        let cases = [
            ("", "empty schedule expression"),
            ("* * * *", "cron expression must have 5 or 6 fields, got 4"),
            ("* * * * * * *", "cron expression must have 5 or 6 fields, got 7"),
            ("0 25 * * *", "cron field 2 (hour) \"25\": 25 is out of range 0-23"),
            ("60 * * * * *", "cron field 1 (second) \"60\": 60 is out of range 0-59"),
            ("0 0 0 * *", "cron field 3 (day of month) \"0\": 0 is out of range 1-31"),
            ("0 0 * 13 *", "cron field 4 (month) \"13\": 13 is out of range 1-12"),
            ("0 0 * * 8", "cron field 5 (day of week) \"8\": 8 is out of range 0-7"),
            ("0 0 1 jnu *", "cron field 4 (month) \"jnu\": unknown month name \"jnu\""),
            ("0 0 * * mo", "unknown weekday name \"mo\""),
            ("0 0 * * january", "unknown weekday name \"january\""),
            ("x * * * *", "cron field 1 (minute) \"x\": \"x\" is not a number"),
            ("0 mon * * *", "cron field 2 (hour) \"mon\": \"mon\" is not a number"),
            ("5-3 * * * *", "cron field 1 (minute) \"5-3\": range start 5 is greater than end 3"),
            ("*/0 * * * *", "cron field 1 (minute) \"*/0\": step must be at least 1"),
            ("*/x * * * *", "step \"x\" is not a number"),
            ("1,,2 * * * *", "cron field 1 (minute) \"1,,2\": empty list item"),
            ("1- * * * *", "cron field 1 (minute) \"1-\": missing value"),
            ("99999999999 * * * *", "99999999999 is out of range 0-59"),
            ("@fortnightly", "unknown cron macro \"@fortnightly\""),
            ("0 seconds", "interval must be at least 1 second"),
            ("367 days", "interval must be at most 366 days"),
            ("99999999999999999999 s", "interval must be at most 366 days"),
            ("3 weeks", "unknown interval unit \"weeks\""),
            ("1.5 hours", "invalid interval \"1.5 hours\""),
            ("0 0 30 2 *", "never fires: day 30 does not occur in February"),
            ("0 0 30,31 2 *", "never fires: day 30 does not occur in February"),
            ("0 0 31 2,4 *", "never fires: day 31 does not occur in February or April"),
            ("0 0 31 4,6,9,11 *", "day 31 does not occur in April, June, September or November"),
        ];
        for (expr, msg) in cases {
            let err = Schedule::parse(expr).expect_err(expr);
            assert!(err.contains(msg), "{expr:?}: got {err:?}, want {msg:?}");
        }
        // A restricted weekday makes an impossible day harmless (either may match).
        sched("0 0 30 2 MON");
        sched("0 0 29 2 *");
    }

    #[test]
    fn utc_basics() {
        #[rustfmt::skip]
        check(&[
            ("* * * * * *", "UTC", "2026-01-31T23:59:58.5Z",
             "2026-01-31T23:59:59Z 2026-02-01T00:00:00Z 2026-02-01T00:00:01Z"),
            ("* * * * *", "UTC", "2026-01-01T00:00:00Z",
             "2026-01-01T00:01:00Z 2026-01-01T00:02:00Z"),
            ("*/15 * * * *", "UTC", "2026-01-01T00:50:00Z",
             "2026-01-01T01:00:00Z 2026-01-01T01:15:00Z"),
            ("@hourly", "UTC", "2026-01-01T23:00:00Z", "2026-01-02T00:00:00Z 2026-01-02T01:00:00Z"),
            ("30 4 * * *", "UTC", "2026-01-01T04:30:00Z",
             "2026-01-02T04:30:00Z 2026-01-03T04:30:00Z"),
            // The 31st skips short months.
            ("0 0 31 * *", "UTC", "2026-01-31T00:00:00Z",
             "2026-03-31T00:00:00Z 2026-05-31T00:00:00Z 2026-07-31T00:00:00Z"),
            // 2026-01-02 is a Friday.
            ("0 9 * * MON-FRI", "UTC", "2026-01-02T09:00:00Z",
             "2026-01-05T09:00:00Z 2026-01-06T09:00:00Z"),
            // Both day fields restricted: the 13th OR any Friday.
            ("0 0 13 * 5", "UTC", "2026-01-01T00:00:00Z",
             "2026-01-02T00:00:00Z 2026-01-09T00:00:00Z 2026-01-13T00:00:00Z 2026-01-16T00:00:00Z"),
            // Day of month starts with '*': both must match (odd days that are Fridays).
            ("0 0 */2 * 5", "UTC", "2026-01-01T00:00:00Z",
             "2026-01-09T00:00:00Z 2026-01-23T00:00:00Z"),
            ("0 0 29 2 *", "UTC", "2025-01-01T00:00:00Z",
             "2028-02-29T00:00:00Z 2032-02-29T00:00:00Z"),
            ("@yearly", "UTC", "2026-01-01T00:00:00Z", "2027-01-01T00:00:00Z 2028-01-01T00:00:00Z"),
            ("0 0 1 1 *", "Europe/London", "2025-12-31T23:59:59Z", "2026-01-01T00:00:00Z"),
            // A half-hour offset zone matches the local minute, not the UTC one.
            ("0 * * * *", "Asia/Kolkata", "2026-01-01T00:00:00Z", "2026-01-01T00:30:00Z"),
        ]);
        assert_eq!(
            sched("0 0 30 2 MON").next_after(ts("2026-01-01T00:00:00Z"), &TimeZone::UTC),
            Some(ts("2026-02-02T00:00:00Z"))
        );
    }

    #[test]
    fn fixed_time_in_gap_fires_once_at_gap_end() {
        #[rustfmt::skip]
        check(&[
            ("30 2 * * *", "America/New_York", "2026-03-07T12:00:00Z",
             "2026-03-08T07:00:00Z 2026-03-09T06:30:00Z 2026-03-10T06:30:00Z"),
            ("30 1 * * *", "Europe/London", "2026-03-28T12:00:00Z",
             "2026-03-29T01:00:00Z 2026-03-30T00:30:00Z"),
            // Several gap times and the gap end itself collapse into one fire.
            ("0,15 2,3 * * *", "America/New_York", "2026-03-08T00:00:00Z",
             "2026-03-08T07:00:00Z 2026-03-08T07:15:00Z 2026-03-09T06:00:00Z"),
            ("0 1,2 * * *", "Europe/London", "2026-03-29T00:00:00Z",
             "2026-03-29T01:00:00Z 2026-03-30T00:00:00Z"),
        ]);
    }

    #[test]
    fn fixed_time_in_repeated_hour_fires_once() {
        #[rustfmt::skip]
        check(&[
            ("30 1 * * *", "America/New_York", "2026-10-31T12:00:00Z",
             "2026-11-01T05:30:00Z 2026-11-02T06:30:00Z"),
            ("30 1 * * *", "Europe/London", "2026-10-24T12:00:00Z",
             "2026-10-25T00:30:00Z 2026-10-26T01:30:00Z"),
            // Asking from inside the second pass does not fire the repeated time again.
            ("30 1 * * *", "America/New_York", "2026-11-01T06:10:00Z", "2026-11-02T06:30:00Z"),
            ("30 1 * * *", "Europe/London", "2026-10-25T01:10:00Z", "2026-10-26T01:30:00Z"),
        ]);
        // Every minute of a fixed hour: 60 fires in the repeated hour, not 120.
        let (from, to) = (ts("2026-11-01T04:00:00Z"), ts("2026-11-01T09:00:00Z"));
        assert_eq!(count("* 1 * * *", "America/New_York", from, to), 60);
    }

    #[test]
    fn every_minute_keeps_real_time_across_transitions() {
        for (zone, t) in [
            ("Europe/London", "2026-03-29T01:00:00Z"),
            ("Europe/London", "2026-10-25T01:00:00Z"),
            ("America/New_York", "2026-03-08T07:00:00Z"),
            ("America/New_York", "2026-11-01T06:00:00Z"),
        ] {
            let (t, hour) = (ts(t), SignedDuration::from_hours(1));
            assert_eq!(
                count("* * * * *", zone, t - hour, t + hour),
                120,
                "{zone} {t}"
            );
            assert_eq!(
                count("*/5 * * * *", zone, t - hour, t + hour),
                24,
                "{zone} {t}"
            );
            let s = sched("* * * * *");
            let first = s.next_after(t - SignedDuration::from_secs(30), &tz(zone));
            assert_eq!(first, Some(t));
        }
    }

    #[test]
    fn hourly_fires_once_per_real_hour() {
        #[rustfmt::skip]
        check(&[
            ("0 * * * *", "America/New_York", "2026-11-01T03:30:00Z",
             "2026-11-01T04:00:00Z 2026-11-01T05:00:00Z 2026-11-01T06:00:00Z \
              2026-11-01T07:00:00Z 2026-11-01T08:00:00Z"),
            ("0 * * * *", "Europe/London", "2026-10-24T23:30:00Z",
             "2026-10-25T00:00:00Z 2026-10-25T01:00:00Z 2026-10-25T02:00:00Z"),
            ("0 * * * *", "America/New_York", "2026-03-08T05:30:00Z",
             "2026-03-08T06:00:00Z 2026-03-08T07:00:00Z 2026-03-08T08:00:00Z"),
            ("0 * * * *", "Europe/London", "2026-03-28T23:30:00Z",
             "2026-03-29T00:00:00Z 2026-03-29T01:00:00Z 2026-03-29T02:00:00Z"),
        ]);
    }

    #[test]
    fn nine_am_stays_nine_am_local() {
        #[rustfmt::skip]
        check(&[
            ("0 9 * * *", "America/New_York", "2026-03-06T15:00:00Z",
             "2026-03-07T14:00:00Z 2026-03-08T13:00:00Z"),
            ("0 9 * * *", "America/New_York", "2026-10-30T14:00:00Z",
             "2026-10-31T13:00:00Z 2026-11-01T14:00:00Z"),
            ("0 9 * * *", "Europe/London", "2026-03-27T12:00:00Z",
             "2026-03-28T09:00:00Z 2026-03-29T08:00:00Z"),
            ("0 9 * * *", "Europe/London", "2026-10-23T12:00:00Z",
             "2026-10-24T08:00:00Z 2026-10-25T09:00:00Z"),
        ]);
    }

    #[test]
    fn intervals_ignore_time_zone() {
        #[rustfmt::skip]
        check(&[
            ("30 seconds", "Europe/London", "2026-03-29T00:59:45.5Z",
             "2026-03-29T01:00:00Z 2026-03-29T01:00:30Z 2026-03-29T01:01:00Z"),
            ("1 day", "America/New_York", "2026-03-08T00:00:00Z",
             "2026-03-09T00:00:00Z 2026-03-10T00:00:00Z"),
            ("7m", "UTC", "1969-12-31T23:59:59.5Z", "1970-01-01T00:00:00Z"),
        ]);
        let (s, tokyo) = (sched("1 day"), tz("Asia/Tokyo"));
        let (lo, hi) = (ts("2026-01-01T00:00:00Z"), ts("2026-01-05T12:00:00Z"));
        assert_eq!(
            s.latest_in(lo, hi, &tokyo),
            Some(ts("2026-01-05T00:00:00Z"))
        );
        assert_eq!(s.latest_in(ts("2026-01-05T00:00:01Z"), hi, &tokyo), None);
    }

    #[test]
    fn latest_in_finds_last_fire_in_range() {
        let (s, utc) = (sched("0 12 * * *"), TimeZone::UTC);
        let (lo, hi) = (ts("2026-01-01T00:00:00Z"), ts("2026-01-10T11:59:59Z"));
        let noon9 = ts("2026-01-09T12:00:00Z");
        assert_eq!(s.latest_in(lo, hi, &utc), Some(noon9));
        let noon10 = ts("2026-01-10T12:00:00Z");
        assert_eq!(s.latest_in(lo, noon10, &utc), Some(noon10));
        assert_eq!(s.latest_in(noon9, hi, &utc), Some(noon9));
        assert_eq!(s.latest_in(ts("2026-01-09T12:00:01Z"), hi, &utc), None);
        assert_eq!(s.latest_in(hi, lo, &utc), None);
        let leap = sched("0 0 29 2 *").latest_in(lo, ts("2030-01-01T00:00:00Z"), &utc);
        assert_eq!(leap, Some(ts("2028-02-29T00:00:00Z")));
        // A fixed-time fire in the gap is found at its collapsed instant.
        let gap =
            sched("30 2 * * *").latest_in(lo, ts("2026-03-08T12:00:00Z"), &tz("America/New_York"));
        assert_eq!(gap, Some(ts("2026-03-08T07:00:00Z")));
    }

    #[test]
    fn latest_in_is_fast_for_dense_schedules_over_years() {
        let (lo, hi) = (ts("2021-01-01T00:00:00Z"), ts("2026-01-01T12:34:56.789Z"));
        let s = sched("* * * * * *");
        assert_eq!(
            s.latest_in(lo, hi, &tz("Europe/London")),
            Some(ts("2026-01-01T12:34:56Z"))
        );
        // Every second, but only 00:xx on January 1st: the last fire is far back from upper.
        let s = sched("* * 0 1 1 *");
        assert_eq!(
            s.latest_in(lo, hi, &TimeZone::UTC),
            Some(ts("2026-01-01T00:59:59Z"))
        );
        let hi = ts("2025-12-31T23:00:00Z");
        assert_eq!(
            s.latest_in(lo, hi, &TimeZone::UTC),
            Some(ts("2025-01-01T00:59:59Z"))
        );
    }

    #[test]
    fn latest_in_agrees_with_next_after_around_dst() {
        let exprs = [
            "*/7 * * * *",
            "30 1 * * *",
            "0,30 2,3 * * *",
            "0 * * * *",
            "17 */5 * * *",
        ];
        for (zone, lo) in [
            ("America/New_York", "2026-03-07T00:00:00Z"),
            ("America/New_York", "2026-10-31T00:00:00Z"),
            ("Europe/London", "2026-03-28T00:00:00Z"),
            ("Europe/London", "2026-10-24T00:00:00Z"),
        ] {
            let (tz, lo) = (tz(zone), ts(lo));
            for expr in exprs {
                let s = sched(expr);
                let mut all = vec![];
                let mut t = lo - SignedDuration::from_nanos(1);
                while let Some(f) = s
                    .next_after(t, &tz)
                    .filter(|f| *f < lo + SignedDuration::from_hours(72))
                {
                    all.push(f);
                    t = f;
                }
                for k in 0..200 {
                    let hi = lo + SignedDuration::from_secs(k * 1_201);
                    let want = all.iter().rev().find(|f| **f <= hi).copied();
                    assert_eq!(s.latest_in(lo, hi, &tz), want, "{zone} {expr} {hi}");
                }
            }
        }
    }

    #[test]
    fn time_zone_lookup() {
        assert!(time_zone("Europe/London").is_ok());
        assert!(time_zone("UTC").is_ok());
        let err = time_zone("Mars/Base").unwrap_err();
        assert_eq!(err, "unknown time zone \"Mars/Base\"");
    }

    #[test]
    fn jitter_is_stable_fnv1a() {
        // Published FNV-1a 64-bit test vectors.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
        let foobar = (0x8594_4171_f739_67e8u64 % i64::MAX as u64) as i64;
        assert_eq!(jitter_micros("foobar", i64::MAX), foobar);
        // An independent inline FNV-1a (decimal offset basis and prime).
        let mut h: u64 = 14_695_981_039_346_656_037;
        for b in "nightly-report".bytes() {
            h = (h ^ b as u64).wrapping_mul(1_099_511_628_211);
        }
        let want = (h % 60_000_000) as i64;
        assert_eq!(jitter_micros("nightly-report", 60_000_000), want);
        for name in ["a", "b", "job-1", "job-2", ""] {
            let j = jitter_micros(name, 1_000);
            assert!((0..1_000).contains(&j));
            assert_eq!(j, jitter_micros(name, 1_000));
        }
        assert_eq!(jitter_micros("anything", 0), 0);
        assert_eq!(jitter_micros("anything", -5), 0);
        assert_eq!(jitter_micros("anything", 1), 0);
    }
}
