//! The SQL faces of the HTTP delivery rules (pg_jobqueue_rules::delivery) behind
//! `job.create_endpoint`, `job.deliver` and `job.verify_webhook`, raising each problem with
//! its SQLSTATE.

use pg_jobqueue_rules::delivery::*;
use pgrx::prelude::*;

fn invalid(message: String, hint: &str) -> ! {
    crate::raise(
        PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
        message,
        hint,
    )
}

/// SQL (internal): the URL with its path and query values hidden ([`redacted_url`]).
#[pg_extern(immutable, parallel_safe, strict)]
fn _redacted_url(url: &str) -> String {
    redacted_url(url)
}

/// SQL (internal): raises 22023 unless `key` can be a delivery's `webhook-id` (`what` names it).
#[pg_extern(immutable, parallel_safe)]
fn _check_webhook_key(what: &str, key: &str) {
    if let Some(problem) = webhook_key_problem(key) {
        invalid(
            format!("{what} {problem}"),
            "It is sent as webhook-id \"key_<key>\": e.g. 'invoice-42-paid'.",
        );
    }
}

/// SQL (internal): raises 22023 unless `headers` (`what` names them) can be a delivery's own
/// headers to an endpoint that sets `endpoint_headers` ([`delivery_headers_problem`]).
#[pg_extern(immutable, parallel_safe)]
fn _check_delivery_headers(what: &str, headers: pgrx::JsonB, endpoint_headers: pgrx::JsonB) {
    let serde_json::Value::Object(map) = headers.0 else {
        invalid(
            format!("{what} must be a JSON object of header names and string values"),
            "e.g. '{\"x-tenant\": \"acme\"}'",
        );
    };
    let mut pairs = Vec::with_capacity(map.len());
    for (name, value) in &map {
        let serde_json::Value::String(value) = value else {
            invalid(
                format!("{what}: the value of header \"{name}\" must be a string"),
                "",
            );
        };
        pairs.push((name.as_str(), value.as_str()));
    }
    let set_by_endpoint: Vec<String> = match endpoint_headers.0 {
        serde_json::Value::Object(map) => map.keys().cloned().collect(),
        _ => Vec::new(),
    };
    if let Some(problem) = delivery_headers_problem(pairs, &set_by_endpoint) {
        invalid(format!("{what}: {problem}"), "");
    }
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
    // Checked: '4000000 years' in microseconds overflows an i64.
    let tolerance_secs = i64::from(tolerance.months())
        .checked_mul(30 * 86_400_000_000)
        .and_then(|m| m.checked_add(i64::from(tolerance.days()).checked_mul(86_400_000_000)?))
        .and_then(|m| m.checked_add(tolerance.micros()))
        .map(|micros| micros / 1_000_000);
    match tolerance_secs {
        Some(secs) if secs < 0 => invalid("tolerance must not be negative".into(), ""),
        Some(secs) if secs <= MAX_TOLERANCE_SECS => {}
        _ => invalid(
            format!("tolerance must be at most 1 day ({MAX_TOLERANCE_SECS} seconds)"),
            "Standard Webhooks suggests 5 minutes.",
        ),
    }
    let tolerance_secs = tolerance_secs.unwrap_or_default();
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
