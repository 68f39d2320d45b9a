//! What an attempt's answer means: delivered, retried later, or dead.

use crate::classify::{http_status_verdict, HttpStatusVerdict};
use std::time::{Duration, SystemTime};

/// How an attempt ended, as the sender decides it (pure: no database, no clock but `now`).
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// 2xx: the job completes.
    Delivered,
    /// Retried with the queue's backoff, or after `retry_after` when the answer said when.
    Transient { retry_after: Option<Duration> },
    /// Dead at once; `disable` also disables the endpoint (410 Gone).
    Permanent { disable: bool },
}

/// The verdict on an HTTP status: [`http_status_verdict`]'s, the table `job.fail` reads too,
/// with the answer's `Retry-After` for a status worth retrying.
pub fn verdict_of_status(status: u16, retry_after: Option<&str>, now: SystemTime) -> Verdict {
    match http_status_verdict(status) {
        HttpStatusVerdict::Success => Verdict::Delivered,
        HttpStatusVerdict::Gone => Verdict::Permanent { disable: true },
        HttpStatusVerdict::Retry => Verdict::Transient {
            retry_after: retry_after.and_then(|value| parse_retry_after(value, now)),
        },
        HttpStatusVerdict::Permanent => Verdict::Permanent { disable: false },
    }
}

/// The error text recorded for a status that is not 2xx.
pub fn status_error(status: u16, reason: Option<&str>) -> String {
    let reason = reason.map(|r| format!(" {r}")).unwrap_or_default();
    match status {
        300..=399 => format!(
            "HTTP {status}{reason}: redirects are not followed (point the endpoint at the final URL)"
        ),
        _ => format!("HTTP {status}{reason}"),
    }
}

/// A `Retry-After` value: delta-seconds or an HTTP-date (RFC 9110 §10.2.3).  A date in the
/// past means now.  None when it is neither.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Transport failures (no HTTP answer), by what the receiver would need to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportError {
    Timeout,
    Connect,
    Dns,
    Tls,
    /// The connection broke (reset, closed before an answer).
    Connection,
    /// The resolved address is not allowed (pg_jobqueue.http_deny / http_allow): permanent.
    Refused,
    /// The request could not be built (a bad URL or header): permanent.
    Request,
}

impl TransportError {
    /// Its name in the attempt record (`class`).
    pub fn class(self) -> &'static str {
        match self {
            TransportError::Timeout => "timeout",
            TransportError::Connect => "connect",
            TransportError::Dns => "dns",
            TransportError::Tls => "tls",
            TransportError::Connection => "connection",
            TransportError::Refused => "address_refused",
            TransportError::Request => "bad_request",
        }
    }

    pub fn permanent(self) -> bool {
        matches!(self, TransportError::Refused | TransportError::Request)
    }
}

/// The class of an HTTP status for metrics and the attempt record: "2xx" … "5xx".
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn statuses_have_the_documented_verdicts() {
        let now = at(1_700_000_000);
        for s in [200, 201, 204, 299] {
            assert_eq!(verdict_of_status(s, None, now), Verdict::Delivered, "{s}");
        }
        for s in [301, 302, 307, 400, 401, 403, 404, 422, 405] {
            assert_eq!(
                verdict_of_status(s, None, now),
                Verdict::Permanent { disable: false },
                "{s}"
            );
        }
        assert_eq!(
            verdict_of_status(410, None, now),
            Verdict::Permanent { disable: true }
        );
        for s in [408, 409, 425, 429, 500, 502, 503, 504, 599] {
            assert_eq!(
                verdict_of_status(s, None, now),
                Verdict::Transient { retry_after: None },
                "{s}"
            );
        }
        assert_eq!(
            verdict_of_status(429, Some("7"), now),
            Verdict::Transient {
                retry_after: Some(Duration::from_secs(7))
            }
        );
        assert!(status_error(301, Some("Moved Permanently")).contains("redirects are not followed"));
        assert_eq!(status_error(404, None), "HTTP 404");
    }

    #[test]
    fn retry_after_reads_both_forms() {
        let now = at(1_445_412_480); // Wed, 21 Oct 2015 07:28:00 GMT
        assert_eq!(
            parse_retry_after(" 120 ", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:30:00 GMT", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("-5", now), None);
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
