//! What an attempt's answer means: delivered, retried later, or dead; and what the sender
//! records of a batch of attempts ([`records`]: one [`DeliveryOutcome`] per attempt, one
//! [`EndpointTally`] per endpoint, the rows `job._record_deliveries` takes; `rows.rs` hands
//! them over).  Pure: no database, no network, no clock but the `now` given.

use crate::session::metrics;
use pg_jobqueue_rules::classify::{http_status_verdict, HttpStatusVerdict};
use pgrx::datum::Uuid;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::time::{Duration, SystemTime};

/// What a request came to (`http::send`), sent back to the sender's main thread.
pub struct Attempt {
    pub job_id: i64,
    pub token: Uuid,
    pub endpoint: String,
    pub webhook_id: String,
    pub latency: Duration,
    pub answer: Result<Answer, (TransportError, String)>,
}

/// An HTTP answer, as much of it as is kept.
pub struct Answer {
    pub status: u16,
    pub reason: Option<String>,
    pub retry_after: Option<String>,
    /// The kept response headers (`http::KEPT_RESPONSE_HEADERS`), secrets hidden.
    pub headers: Map<String, Value>,
    pub body: String,
    pub body_truncated: bool,
}

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

/// One attempt's outcome: a row of `job._delivery_outcome`, field for field.  Delivered:
/// `result` (the job completes with it).  Failed: `error`, `permanent`, `http_status`,
/// `retry_after_ms` and `detail` (kept in the job's errors entry), through job.fail's rules.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryOutcome {
    pub job_id: i64,
    pub token: Uuid,
    pub result: Option<Value>,
    pub error: Option<String>,
    pub permanent: Option<bool>,
    pub http_status: Option<i32>,
    pub retry_after_ms: Option<i64>,
    pub detail: Option<Value>,
}

/// What a batch of attempts adds to one endpoint's counters: a row of `job._delivery_tally`,
/// field for field.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EndpointTally {
    pub endpoint: String,
    pub status_2xx: i64,
    pub status_3xx: i64,
    pub status_4xx: i64,
    pub status_5xx: i64,
    pub transport_errors: i64,
    pub transient_failures: i64,
    pub permanent_failures: i64,
    /// Latency histogram counts (`metrics::BUCKETS`).
    pub latency: Vec<i64>,
    pub latency_sum: f64,
    pub succeeded: bool,
    /// Failed attempts since the batch's last success (all of them if none succeeded).
    pub failures_since_success: i32,
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
    /// It answered 410 Gone: disable it.
    pub gone: bool,
}

/// `text` as jsonb can store it: PostgreSQL's jsonb refuses the NUL character, and an answer
/// holding one must not make its attempt impossible to record (and so sent again and again).
fn storable(text: &str) -> String {
    text.replace('\0', "\u{fffd}")
}

/// What `job._record_deliveries` takes of a batch of attempts: one outcome per attempt, in
/// order, and one tally per endpoint.  A `Retry-After` is capped at `max_retry_after`.
pub fn records(
    attempts: &[Attempt],
    max_retry_after: Duration,
    now: SystemTime,
) -> (Vec<DeliveryOutcome>, Vec<EndpointTally>) {
    let mut tallies: HashMap<&str, EndpointTally> = HashMap::new();
    let mut outcomes = Vec::with_capacity(attempts.len());
    for a in attempts {
        let latency_ms = (a.latency.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0;
        let tally = tallies
            .entry(a.endpoint.as_str())
            .or_insert_with(|| EndpointTally {
                endpoint: a.endpoint.clone(),
                latency: vec![0; metrics::BUCKETS],
                ..EndpointTally::default()
            });
        tally.latency[metrics::bucket_of(a.latency.as_secs_f64())] += 1;
        tally.latency_sum += a.latency.as_secs_f64();
        let mut outcome = DeliveryOutcome {
            job_id: a.job_id,
            token: a.token,
            result: None,
            error: None,
            permanent: None,
            http_status: None,
            retry_after_ms: None,
            detail: None,
        };
        let verdict = match &a.answer {
            Ok(answer) => {
                tally.last_status = Some(answer.status.into());
                match status_class(answer.status) {
                    "2xx" => tally.status_2xx += 1,
                    "3xx" => tally.status_3xx += 1,
                    "4xx" => tally.status_4xx += 1,
                    _ => tally.status_5xx += 1,
                }
                let verdict = verdict_of_status(answer.status, answer.retry_after.as_deref(), now);
                if verdict == Verdict::Delivered {
                    outcome.result = Some(json!({
                        "status": answer.status,
                        "latency_ms": latency_ms,
                        "webhook_id": a.webhook_id,
                        "headers": answer.headers,
                        "body": storable(&answer.body),
                        "body_truncated": answer.body_truncated,
                    }));
                } else {
                    outcome.error = Some(status_error(answer.status, answer.reason.as_deref()));
                    outcome.http_status = Some(answer.status.into());
                    outcome.detail = Some(json!({
                        "class": status_class(answer.status),
                        "latency_ms": latency_ms,
                        "webhook_id": a.webhook_id,
                        "body": storable(&answer.body),
                    }));
                }
                verdict
            }
            Err((kind, message)) => {
                tally.transport_errors += 1;
                outcome.error = Some(storable(message));
                outcome.detail = Some(json!({
                    "class": kind.class(),
                    "latency_ms": latency_ms,
                    "webhook_id": a.webhook_id,
                }));
                if kind.permanent() {
                    Verdict::Permanent { disable: false }
                } else {
                    Verdict::Transient { retry_after: None }
                }
            }
        };
        match verdict {
            Verdict::Delivered => {
                tally.succeeded = true;
                tally.failures_since_success = 0;
                tally.last_error = None;
            }
            Verdict::Transient { retry_after } => {
                tally.transient_failures += 1;
                tally.failures_since_success += 1;
                outcome.permanent = Some(false);
                outcome.retry_after_ms =
                    retry_after.map(|after| after.min(max_retry_after).as_millis() as i64);
            }
            Verdict::Permanent { disable } => {
                tally.permanent_failures += 1;
                tally.failures_since_success += 1;
                tally.gone |= disable;
                outcome.permanent = Some(true);
            }
        }
        if let Some(error) = &outcome.error {
            tally.last_error = Some(error.clone());
        }
        outcomes.push(outcome);
    }
    (outcomes, tallies.into_values().collect())
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

    fn attempt(endpoint: &str, answer: Result<u16, TransportError>) -> Attempt {
        Attempt {
            job_id: 1,
            token: Uuid::from_bytes([0; 16]),
            endpoint: endpoint.into(),
            webhook_id: "msg_1".into(),
            latency: Duration::from_millis(5),
            answer: match answer {
                Ok(status) => Ok(Answer {
                    status,
                    reason: None,
                    retry_after: (status == 429).then(|| "9999999".into()),
                    headers: Map::new(),
                    body: "a\0b".into(),
                    body_truncated: false,
                }),
                Err(kind) => Err((kind, "no answer".into())),
            },
        }
    }

    #[test]
    fn records_count_failures_since_the_last_success_and_cap_retry_after() {
        let attempts = [
            attempt("a", Err(TransportError::Timeout)),
            attempt("a", Ok(200)),
            attempt("a", Ok(503)),
            attempt("a", Ok(429)),
            attempt("b", Ok(410)),
            attempt("b", Err(TransportError::Refused)),
        ];
        let (outcomes, tallies) = records(&attempts, Duration::from_secs(60), SystemTime::now());
        assert_eq!(outcomes[0].detail.as_ref().unwrap()["class"], "timeout");
        assert_eq!(outcomes[0].permanent, Some(false));
        let result = outcomes[1].result.as_ref().unwrap();
        assert_eq!(result["status"], 200);
        assert_eq!(result["body"], "a\u{fffd}b");
        assert_eq!(outcomes[1].error, None);
        assert_eq!(outcomes[2].http_status, Some(503));
        assert_eq!(outcomes[3].retry_after_ms, Some(60_000));
        assert_eq!(outcomes[4].error.as_deref(), Some("HTTP 410"));
        assert_eq!(outcomes[5].permanent, Some(true));
        let of = |name: &str| tallies.iter().find(|t| t.endpoint == name).unwrap();
        let a = of("a");
        assert!(a.succeeded);
        assert_eq!(a.failures_since_success, 2);
        assert_eq!(a.status_5xx, 1);
        assert_eq!(a.status_4xx, 1);
        assert_eq!(a.transport_errors, 1);
        assert_eq!(a.latency.iter().sum::<i64>(), 4);
        let b = of("b");
        assert!(!b.succeeded);
        assert_eq!(b.failures_since_success, 2);
        assert!(b.gone);
        assert_eq!(b.permanent_failures, 2);
        assert_eq!(b.last_status, Some(410));
    }
}
