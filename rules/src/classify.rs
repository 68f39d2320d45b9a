//! Failure classification: is a failed attempt worth retrying?  The rules alone, shared by
//! `job.fail` (through [`classify`]) and the sender (`delivery::outcome`).

/// What an HTTP status says about the request that got it.  The one table of it: `job.fail`'s
/// `http_status` and the sender's answers are judged by [`http_status_verdict`] alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpStatusVerdict {
    /// 2xx: the request succeeded.
    Success,
    /// Worth sending again later.
    Retry,
    /// Will not succeed as sent, however often it is sent again.
    Permanent,
    /// 410 Gone: permanent, and the sender disables the endpoint too.
    Gone,
}

/// The verdict on an HTTP status:
/// * 2xx: success.
/// * 408 Request Timeout, 425 Too Early, 429 Too Many Requests and every 5xx: retry (the
///   receiver was busy, slow or broken for now).
/// * 409 Conflict: retry.  It says the resource's state conflicts with the request *now*:
///   Stripe, for one, answers 409 while a request with the same idempotency key is still in
///   flight, and a delivery sent again keeps its idempotency key (its webhook-id), so the
///   next attempt meets the first one finished.  A receiver that means "never" answers 4xx
///   otherwise, or 2xx to drop a duplicate.
/// * 410 Gone: permanent, the endpoint is gone.
/// * every other 4xx: permanent (the request is wrong, unauthorised or unwanted as sent).
/// * 3xx: permanent.  Redirects are not followed (a redirect could lead anywhere, past the
///   endpoint's own address and the address checks), so the same request gets the same
///   redirect; the endpoint should be pointed at the final URL.
/// * 1xx as a final answer, and anything outside 100-599: permanent (no working receiver
///   ends a request so, and sending again will not change it).
pub fn http_status_verdict(status: u16) -> HttpStatusVerdict {
    match status {
        200..=299 => HttpStatusVerdict::Success,
        408 | 409 | 425 | 429 | 500..=599 => HttpStatusVerdict::Retry,
        410 => HttpStatusVerdict::Gone,
        _ => HttpStatusVerdict::Permanent,
    }
}

/// The marker a worker puts in an error text to say "do not retry".
pub const PERMANENT_MARKER: &str = "PERMANENT";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Retried with backoff until retries run out.
    Transient,
    /// Dead-lettered at once.
    Permanent,
}

/// Classifies one failed attempt. Permanent: the caller says so, an HTTP status that
/// [`http_status_verdict`] calls permanent (3xx, 4xx but 408/409/425/429, 1xx), or the error
/// text contains `PERMANENT`. Everything else (a retryable status, no status) is transient;
/// so is a 2xx, which is no verdict on a failure.
pub fn classify(error: &str, permanent: bool, http_status: Option<i32>) -> Failure {
    let status_permanent = http_status.is_some_and(|s| {
        matches!(
            http_status_verdict(u16::try_from(s).unwrap_or(0)),
            HttpStatusVerdict::Permanent | HttpStatusVerdict::Gone
        )
    });
    let permanent = permanent || status_permanent || error.contains(PERMANENT_MARKER);
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

#[cfg(test)]
mod tests {
    use super::{classify, Failure::*};

    #[test]
    fn explicit_flag_is_permanent() {
        assert_eq!(classify("boom", true, None), Permanent);
        assert_eq!(classify("boom", true, Some(503)), Permanent);
    }

    /// Every status class, pinned: the table both job.fail and the sender read.
    #[test]
    fn every_http_status_has_one_verdict() {
        use super::{http_status_verdict, HttpStatusVerdict as V};
        let retry_4xx = [408, 409, 425, 429];
        for s in 0..=1000 {
            let verdict = match s {
                200..=299 => V::Success,
                410 => V::Gone,
                500..=599 => V::Retry,
                s if retry_4xx.contains(&s) => V::Retry,
                _ => V::Permanent, // 1xx, 3xx, the other 4xx, outside 100-599
            };
            assert_eq!(http_status_verdict(s), verdict, "{s}");
        }
        for (s, verdict) in [(100, V::Permanent), (204, V::Success), (302, V::Permanent)] {
            assert_eq!(http_status_verdict(s), verdict, "{s}");
        }
        for s in [400, 401, 403, 404, 405, 413, 415, 422, 451, 600, u16::MAX] {
            assert_eq!(http_status_verdict(s), V::Permanent, "{s}");
        }
        // job.fail reads the same table: permanent exactly where the sender gives up.
        for s in 100..=599 {
            let permanent = matches!(http_status_verdict(s), V::Permanent | V::Gone);
            let failure = classify("http error", false, Some(s as i32));
            assert_eq!(failure == Permanent, permanent, "{s}");
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
