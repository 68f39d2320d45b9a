//! Failure classification: is a failed attempt worth retrying?

use pgrx::prelude::*;

/// HTTP statuses that mean "this request will never succeed as sent".
const PERMANENT_HTTP_STATUSES: [i32; 5] = [400, 401, 403, 404, 422];

/// The marker a worker puts in an error text to say "do not retry".
pub const PERMANENT_MARKER: &str = "PERMANENT";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Retried with backoff until retries run out.
    Transient,
    /// Dead-lettered at once.
    Permanent,
}

/// Classifies one failed attempt. Permanent: the caller says so, a 400/401/403/404/422, or the
/// error text contains `PERMANENT`. Everything else (408, 429, 5xx, unknown) is transient.
pub fn classify(error: &str, permanent: bool, http_status: Option<i32>) -> Failure {
    let permanent = permanent
        || http_status.is_some_and(|s| PERMANENT_HTTP_STATUSES.contains(&s))
        || error.contains(PERMANENT_MARKER);
    if permanent {
        Failure::Permanent
    } else {
        Failure::Transient
    }
}

/// SQL: true when `job.fail` would dead-letter this failure without retrying.
#[pg_extern(immutable, parallel_safe)]
fn is_permanent_failure(
    error: &str,
    permanent: default!(bool, false),
    http_status: default!(Option<i32>, "NULL"),
) -> bool {
    if let Some(status) = http_status {
        if !(100..=599).contains(&status) {
            error!("http_status must be an HTTP status code between 100 and 599, got {status}");
        }
    }
    classify(error, permanent, http_status) == Failure::Permanent
}

#[cfg(test)]
mod tests {
    use super::{classify, Failure::*};

    #[test]
    fn explicit_flag_is_permanent() {
        assert_eq!(classify("boom", true, None), Permanent);
        assert_eq!(classify("boom", true, Some(503)), Permanent);
    }

    #[test]
    fn client_errors_that_cannot_succeed_are_permanent() {
        for s in [400, 401, 403, 404, 422] {
            assert_eq!(classify("http error", false, Some(s)), Permanent, "{s}");
        }
    }

    #[test]
    fn timeouts_rate_limits_and_server_errors_are_transient() {
        for s in [408, 429, 500, 502, 503, 504, 599, 409, 410, 302] {
            assert_eq!(classify("http error", false, Some(s)), Transient, "{s}");
        }
        assert_eq!(classify("connection reset", false, None), Transient);
    }

    #[test]
    fn the_marker_in_the_text_is_permanent_and_case_sensitive() {
        assert_eq!(classify("PERMANENT: card declined", false, None), Permanent);
        assert_eq!(classify("gave up, PERMANENT", false, Some(503)), Permanent);
        assert_eq!(classify("moved permanently", false, None), Transient);
    }
}
