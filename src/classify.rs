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

/// SQLSTATE classes whose errors repeat however often the statement is retried: data
/// exceptions (22), integrity violations (23), syntax errors and undefined or forbidden
/// objects (42), unsupported features (0A), invalid schema or catalog names (3D, 3F) and
/// routine exceptions such as a function ending without RETURN (2F).
const PERMANENT_SQLSTATE_CLASSES: [&str; 7] = ["22", "23", "42", "0A", "3D", "3F", "2F"];

/// Classifies an error a SQL handler raised. Permanent: a class in
/// [`PERMANENT_SQLSTATE_CLASSES`], or a message carrying the `PERMANENT` marker (how a
/// handler's `RAISE EXCEPTION` asks not to be retried). Transient: everything else, notably
/// serialization failures and deadlocks (40), lock timeouts (55P03), statement timeouts and
/// cancels (57014), shutdowns (57P0x), connection (08) and resource (53) errors, and a plain
/// `RAISE EXCEPTION` (P0001).
pub fn classify_sqlstate(sqlstate: &str, message: &str) -> Failure {
    let class = sqlstate.get(..2).unwrap_or("");
    if PERMANENT_SQLSTATE_CLASSES.contains(&class) {
        Failure::Permanent
    } else {
        classify(message, false, None)
    }
}

/// SQL: true when `job.fail` would dead-letter this failure without retrying (NULL when the
/// error or the permanent flag is NULL).
#[pg_extern(immutable, parallel_safe)]
fn is_permanent_failure(
    error: Option<&str>,
    permanent: default!(Option<bool>, false),
    http_status: default!(Option<i32>, "NULL"),
) -> Option<bool> {
    if let Some(status) = http_status {
        if !(100..=599).contains(&status) {
            crate::raise(
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                format!(
                    "http_status must be an HTTP status code between 100 and 599, got {status}"
                ),
                "",
            );
        }
    }
    Some(classify(error?, permanent?, http_status) == Failure::Permanent)
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
    fn handler_errors_classify_by_sqlstate() {
        use super::classify_sqlstate;
        // serialization, deadlock, lock timeout, statement timeout, connection, resources
        for code in [
            "40001", "40P01", "55P03", "57014", "08006", "53100", "53200", "57P01", "XX000",
            "P0001",
        ] {
            assert_eq!(classify_sqlstate(code, "boom"), Transient, "{code}");
        }
        // data, integrity, syntax, undefined table/function/column, privilege
        for code in [
            "22012", "22P02", "23505", "23503", "42601", "42P01", "42883", "42703", "42501",
            "0A000",
        ] {
            assert_eq!(classify_sqlstate(code, "boom"), Permanent, "{code}");
        }
        assert_eq!(
            classify_sqlstate("P0001", "PERMANENT: no such customer"),
            Permanent
        );
    }

    #[test]
    fn the_marker_in_the_text_is_permanent_and_case_sensitive() {
        assert_eq!(classify("PERMANENT: card declined", false, None), Permanent);
        assert_eq!(classify("gave up, PERMANENT", false, Some(503)), Permanent);
        assert_eq!(classify("moved permanently", false, None), Transient);
    }
}
