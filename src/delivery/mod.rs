//! HTTP delivery: the checks and signatures behind `job.create_endpoint`, `job.deliver` and
//! `job.verify_webhook`.  The sender that makes the requests is `worker/sender.rs`.
//!
//! Pure logic lives in the submodules: signatures ([`signature`]), what an answer means
//! ([`outcome`]), which addresses may be connected to ([`address`]) and what a URL, path or
//! header may be (here).

pub mod address;
pub mod outcome;
pub mod signature;

use pgrx::prelude::*;

/// Headers the sender sets itself; neither an endpoint nor a delivery may set them (a
/// forged `webhook-signature` or `webhook-id`, a `host` that reroutes the request).
pub const RESERVED_HEADERS: &[&str] = &[
    "content-type",
    "content-length",
    "host",
    "user-agent",
    "connection",
    "transfer-encoding",
    "te",
    "upgrade",
    "keep-alive",
    "expect",
    "proxy-authorization",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "idempotency-key",
];

/// The methods an endpoint may use (each sends the JSON body).
pub const METHODS: &[&str] = &["POST", "PUT", "PATCH", "DELETE"];

fn invalid(message: String, hint: &str) -> ! {
    crate::raise(
        PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
        message,
        hint,
    )
}

/// What is wrong with an endpoint URL, if anything: http or https, a host, no credentials
/// (they would show in `job.endpoints`; send them as a header), no fragment.
pub fn url_problem(text: &str) -> Option<String> {
    let url = match url::Url::parse(text) {
        Ok(url) => url,
        Err(e) => return Some(format!("is not a URL ({e})")),
    };
    if url.scheme() != "http" && url.scheme() != "https" {
        return Some(format!("must be http or https, not {}", url.scheme()));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Some("has no host".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Some("must not hold credentials (send them in a header: they would be shown in job.endpoints)".into());
    }
    if url.fragment().is_some() {
        return Some("must not have a fragment (#…)".into());
    }
    None
}

/// The URL of a delivery: the endpoint's URL with `path` appended.  The result must keep the
/// endpoint's scheme, host and port: a path can only reach further into the endpoint.
pub fn delivery_url(endpoint_url: &str, path: Option<&str>) -> Result<url::Url, String> {
    let base = url::Url::parse(endpoint_url).map_err(|e| format!("endpoint URL: {e}"))?;
    let Some(path) = path.filter(|p| !p.is_empty()) else {
        return Ok(base);
    };
    if let Some(problem) = path_problem(path) {
        return Err(format!("path {problem}"));
    }
    let joined = url::Url::parse(&format!("{endpoint_url}{path}"))
        .map_err(|e| format!("endpoint URL and path: {e}"))?;
    if joined.origin() != base.origin() {
        return Err("path leads away from the endpoint's host".into());
    }
    Ok(joined)
}

/// What is wrong with a delivery's path, if anything: it starts with "/" or "?", and holds
/// no whitespace, control characters, backslashes or fragment.
pub fn path_problem(path: &str) -> Option<String> {
    if !path.starts_with('/') && !path.starts_with('?') {
        return Some("must start with \"/\" or \"?\"".into());
    }
    if path.starts_with("//") {
        return Some("must not start with \"//\"".into());
    }
    if path
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '\\' || c == '#')
    {
        return Some("must not contain whitespace, control characters, \"\\\" or \"#\"".into());
    }
    None
}

/// What is wrong with a header, if anything.
pub fn header_problem(name: &str, value: &str) -> Option<String> {
    if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
        return Some(format!(
            "header name \"{name}\" is not a valid HTTP header name"
        ));
    }
    if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
        return Some(format!("header \"{name}\" is set by pg_jobqueue itself"));
    }
    if reqwest::header::HeaderValue::from_str(value).is_err() || value.contains(['\r', '\n']) {
        return Some(format!(
            "the value of header \"{name}\" must be visible ASCII text without line breaks"
        ));
    }
    None
}

/// SQL (internal): raises 22023 unless `url` can be an endpoint's URL.
#[pg_extern(immutable, parallel_safe)]
fn _check_endpoint_url(url: &str) {
    if let Some(problem) = url_problem(url) {
        invalid(
            format!("url {problem}"),
            "e.g. 'https://api.example.com/hooks'",
        );
    }
}

/// SQL (internal): the method in capitals; raises 22023 unless it is one of [`METHODS`].
#[pg_extern(immutable, parallel_safe)]
fn _check_http_method(method: &str) -> String {
    let upper = method.to_ascii_uppercase();
    if !METHODS.contains(&upper.as_str()) {
        invalid(
            format!(
                "method must be one of {}, got {method:?}",
                METHODS.join(", ")
            ),
            "",
        );
    }
    upper
}

/// SQL (internal): raises 22023 unless `path` can be appended to an endpoint's URL.
#[pg_extern(immutable, parallel_safe)]
fn _check_delivery_path(path: &str) {
    if let Some(problem) = path_problem(path) {
        invalid(format!("path {problem}"), "e.g. '/orders/42'");
    }
}

/// SQL (internal): raises 22023 unless `headers` is an object of valid header names and
/// string values, none of them a header pg_jobqueue sets.  `what` names the argument.
#[pg_extern(immutable, parallel_safe)]
fn _check_http_headers(what: &str, headers: pgrx::JsonB) {
    let serde_json::Value::Object(map) = headers.0 else {
        invalid(
            format!("{what} must be a JSON object of header names and string values"),
            "e.g. '{\"authorization\": \"Bearer …\"}'",
        );
    };
    for (name, value) in map {
        let serde_json::Value::String(value) = value else {
            invalid(
                format!("{what}: the value of header \"{name}\" must be a string"),
                "",
            );
        };
        if let Some(problem) = header_problem(&name, &value) {
            invalid(format!("{what}: {problem}"), "");
        }
    }
}

/// SQL (internal): raises 22023 unless `value` can be sent as a header's value (`what`
/// names it).
#[pg_extern(immutable, parallel_safe)]
fn _check_header_value(what: &str, value: &str) {
    if reqwest::header::HeaderValue::from_str(value).is_err() {
        invalid(
            format!(
                "{what} is sent as a header, so it must be visible ASCII text without line breaks"
            ),
            "",
        );
    }
}

/// SQL (internal): raises 22023 unless `secret` is a Standard Webhooks secret.
#[pg_extern(immutable, parallel_safe)]
fn _check_webhook_secret(secret: &str) {
    if let Err(problem) = signature::secret_key(secret) {
        // The message never repeats the secret.
        invalid(
            format!("secret: {problem}"),
            "Leave it NULL to have one made, or pass 'whsec_' followed by the base64 of 24 to 64 random bytes.",
        );
    }
}

/// SQL (internal): a new Standard Webhooks secret of 32 random bytes.
#[pg_extern(volatile, parallel_safe)]
fn _new_webhook_secret() -> String {
    let mut key = [0u8; signature::NEW_KEY_BYTES];
    // SAFETY: writes exactly key.len() bytes into key.
    if !unsafe { pg_sys::pg_strong_random(key.as_mut_ptr().cast(), key.len()) } {
        error!("pg_jobqueue: could not generate random bytes for a webhook secret");
    }
    signature::secret_text(&key)
}

/// SQL: whether `signature` (a `webhook-signature` header: one or more `v1,<base64>`
/// separated by spaces) holds a valid signature of `body` by `secret`, and `msg_timestamp`
/// (Unix seconds) is within `tolerance` of now.  For receivers written in SQL, and tests.
#[pg_extern(stable, parallel_safe)]
fn verify_webhook(
    secret: &str,
    msg_id: &str,
    msg_timestamp: &str,
    body: &str,
    signature: &str,
    tolerance: default!(pgrx::datum::Interval, "'5 minutes'"),
) -> bool {
    let key = match signature::secret_key(secret) {
        Ok(key) => key,
        Err(problem) => invalid(format!("secret: {problem}"), ""),
    };
    let tolerance_secs = (tolerance.micros()
        + i64::from(tolerance.days()) * 86_400_000_000
        + i64::from(tolerance.months()) * 30 * 86_400_000_000)
        / 1_000_000;
    if tolerance_secs < 0 {
        invalid("tolerance must not be negative".into(), "");
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    signature::verify(
        &key,
        msg_id,
        msg_timestamp,
        body.as_bytes(),
        signature,
        now,
        tolerance_secs,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_urls_are_http_with_a_host_and_no_credentials() {
        assert_eq!(url_problem("https://api.example.com/hooks?x=1"), None);
        assert_eq!(url_problem("http://127.0.0.1:8080"), None);
        assert!(url_problem("ftp://example.com")
            .unwrap()
            .contains("http or https"));
        assert!(url_problem("file:///etc/passwd")
            .unwrap()
            .contains("http or https"));
        assert!(url_problem("https://user:pw@example.com")
            .unwrap()
            .contains("credentials"));
        assert!(url_problem("https://example.com/#x")
            .unwrap()
            .contains("fragment"));
        assert!(url_problem("not a url").unwrap().contains("not a URL"));
    }

    #[test]
    fn a_path_reaches_only_into_the_endpoint() {
        let base = "https://api.example.com/v1";
        assert_eq!(
            delivery_url(base, Some("/orders/42?x=1")).unwrap().as_str(),
            "https://api.example.com/v1/orders/42?x=1"
        );
        assert_eq!(delivery_url(base, None).unwrap().as_str(), base);
        for escape in [
            "@evil.example/x",
            ".evil.example/x",
            ":1@evil.example",
            "//evil.example",
        ] {
            assert!(delivery_url(base, Some(escape)).is_err(), "{escape}");
        }
        let host_only = "https://api.example.com";
        assert!(delivery_url(host_only, Some("@evil.example")).is_err());
        assert!(delivery_url(host_only, Some("/a b")).is_err());
        assert!(delivery_url(host_only, Some("/a\r\nHost: x")).is_err());
    }

    #[test]
    fn headers_are_checked_and_reserved_ones_refused() {
        assert_eq!(header_problem("Authorization", "Bearer abc"), None);
        assert!(header_problem("Webhook-Signature", "v1,x")
            .unwrap()
            .contains("set by pg_jobqueue"));
        assert!(header_problem("host", "evil").is_some());
        assert!(header_problem("bad name", "x")
            .unwrap()
            .contains("not a valid"));
        assert!(header_problem("x-a", "line\r\nbreak")
            .unwrap()
            .contains("line breaks"));
    }
}
