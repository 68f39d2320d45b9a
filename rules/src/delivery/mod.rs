//! What an endpoint URL, a delivery path, a header or a webhook id may be, which addresses
//! may be connected to ([`address`]), and the Standard Webhooks signature ([`signature`]):
//! the rules `job.create_endpoint`, `job.deliver` and the sender share.

pub mod address;
pub mod signature;

/// Headers neither an endpoint nor a delivery may set: those the sender sets itself (a forged
/// `webhook-signature` or `webhook-id`), hop-by-hop ones, and those that proxies and
/// frameworks read as where the request goes or what it is (a `host`, `forwarded` or
/// `x-http-method-override` that reroutes it, a `content-encoding` that recasts its body).
pub const RESERVED_HEADERS: &[&str] = &[
    "content-type",
    "content-length",
    "content-encoding",
    "host",
    "user-agent",
    "connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "keep-alive",
    "expect",
    "via",
    "max-forwards",
    "forwarded",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-original-url",
    "x-rewrite-url",
    "x-real-ip",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "idempotency-key",
];

/// Prefixes of reserved header names: `proxy-authorization` and the like, and every
/// `x-forwarded-*` (`x-forwarded-host` reroutes a request behind many proxies).
pub const RESERVED_HEADER_PREFIXES: &[&str] = &["proxy-", "x-forwarded-"];

/// The longest endpoint URL, in bytes, and the longest delivery path: far above any real
/// URL, well below what servers refuse (8 KiB is a common request-line limit).
pub const MAX_URL_BYTES: usize = 2048;
pub const MAX_PATH_BYTES: usize = 2048;

/// The longest idempotency key a delivery's `webhook-id` can be made of.
pub const MAX_WEBHOOK_KEY_BYTES: usize = 200;

/// The longest `tolerance` `verify_webhook` takes: Standard Webhooks suggests 5 minutes; a
/// day covers any clock skew and still refuses a replay of last week's request.
pub const MAX_TOLERANCE_SECS: i64 = 86_400;

/// The methods an endpoint may use (each sends the JSON body).
pub const METHODS: &[&str] = &["POST", "PUT", "PATCH", "DELETE"];

/// What is wrong with an endpoint URL, if anything: http or https, a host, no credentials
/// (they would show in `job.endpoints`; send them as a header), no fragment.
pub fn url_problem(text: &str) -> Option<String> {
    if text.len() > MAX_URL_BYTES {
        return Some(format!(
            "must be at most {MAX_URL_BYTES} bytes long, got {}",
            text.len()
        ));
    }
    // The URL parser drops tabs and line breaks, so the stored text would not be the URL
    // sent: refuse them instead.
    if text.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Some("must not contain whitespace or control characters".into());
    }
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
/// endpoint's scheme, host and port, and its path must begin with the endpoint's: a path can
/// only reach further into the endpoint.
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
    // path_problem refuses every dot segment, so this holds; checked again because the
    // endpoint's credentials go wherever the joined URL points.
    if !joined.path().starts_with(base.path().trim_end_matches('/')) {
        return Err("path leads out of the endpoint's URL".into());
    }
    Ok(joined)
}

/// What is wrong with a delivery's path, if anything.  It starts with "/" or "?", holds no
/// whitespace, control characters, backslashes or fragment, and nothing a server could
/// normalise into a step up out of the endpoint's URL: before its query, no "." or ".."
/// segment (also with a `;parameter`, as Tomcat reads `..;`) and no percent-encoded ".", "/",
/// "\\", "%" or control character, in any case.  Such paths are refused, never normalised:
/// what a server makes of them differs from server to server.
pub fn path_problem(path: &str) -> Option<String> {
    if !path.starts_with('/') && !path.starts_with('?') {
        return Some("must start with \"/\" or \"?\"".into());
    }
    if path.starts_with("//") {
        return Some("must not start with \"//\"".into());
    }
    if path.len() > MAX_PATH_BYTES {
        return Some(format!(
            "must be at most {MAX_PATH_BYTES} bytes long, got {}",
            path.len()
        ));
    }
    if path
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '\\' || c == '#')
    {
        return Some("must not contain whitespace, control characters, \"\\\" or \"#\"".into());
    }
    let before_query = path.split('?').next().unwrap_or_default();
    let bytes = before_query.as_bytes();
    for (i, _) in before_query.match_indices('%') {
        let decoded = bytes
            .get(i + 1..i + 3)
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match decoded {
            None => return Some("has a \"%\" not followed by two hex digits".into()),
            Some(b'.' | b'/' | b'\\' | b'%') => {
                return Some(
                    "must not percent-encode \".\", \"/\", \"\\\" or \"%\" (a server may decode them into a step out of the endpoint's URL)"
                        .into(),
                )
            }
            Some(byte) if byte < 0x20 || byte == 0x7f => {
                return Some("must not percent-encode control characters".into())
            }
            Some(_) => {}
        }
    }
    if before_query
        .split('/')
        .map(|segment| segment.split(';').next().unwrap_or_default())
        .any(|segment| segment == "." || segment == "..")
    {
        return Some(
            "must not have \".\" or \"..\" segments (it must stay under the endpoint's URL)".into(),
        );
    }
    None
}

/// What is wrong with an idempotency key a producer chose for a delivery's `webhook-id`, if
/// anything: 1 to MAX_WEBHOOK_KEY_BYTES letters, digits, "-", "_", ".", ":" or "~".
pub fn webhook_key_problem(key: &str) -> Option<String> {
    if key.is_empty() || key.len() > MAX_WEBHOOK_KEY_BYTES {
        return Some(format!(
            "must be 1 to {MAX_WEBHOOK_KEY_BYTES} bytes long, got {}",
            key.len()
        ));
    }
    if !key
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'~'))
    {
        return Some("may hold only letters, digits, \"-\", \"_\", \".\", \":\" and \"~\"".into());
    }
    None
}

/// The `webhook-id` of a delivery: `msg_<job id>`, or `key_<key>` for an idempotency key the
/// producer chose.  Two namespaces: no key can take the id another job will be given.
pub fn webhook_id(job_id: i64, chosen_key: Option<&str>) -> Result<String, String> {
    match chosen_key {
        None => Ok(format!("msg_{job_id}")),
        Some(key) => match webhook_key_problem(key) {
            None => Ok(format!("key_{key}")),
            Some(problem) => Err(format!("webhook_id {problem}")),
        },
    }
}

/// What is wrong with a header, if anything.
pub fn header_problem(name: &str, value: &str) -> Option<String> {
    if http::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
        return Some(format!(
            "header name \"{name}\" is not a valid HTTP header name"
        ));
    }
    let lower = name.to_ascii_lowercase();
    if RESERVED_HEADERS.contains(&lower.as_str())
        || RESERVED_HEADER_PREFIXES
            .iter()
            .any(|prefix| lower.starts_with(prefix))
    {
        return Some(format!(
            "header \"{name}\" is reserved (set by pg_jobqueue itself, hop-by-hop, or read by proxies as the request's route)"
        ));
    }
    if http::header::HeaderValue::from_str(value).is_err() || value.contains(['\r', '\n']) {
        return Some(format!(
            "the value of header \"{name}\" must be visible ASCII text without line breaks"
        ));
    }
    None
}

/// What is wrong with a delivery's own headers, if anything: each must pass [`header_problem`],
/// no name may appear twice (in any case), and none may be one the endpoint sets (it would be
/// sent twice, and a receiver may read either).
pub fn delivery_headers_problem<'a>(
    headers: impl IntoIterator<Item = (&'a str, &'a str)>,
    endpoint_header_names: &[String],
) -> Option<String> {
    let mut seen = std::collections::HashSet::new();
    for (name, value) in headers {
        if let Some(problem) = header_problem(name, value) {
            return Some(problem);
        }
        let lower = name.to_ascii_lowercase();
        if endpoint_header_names
            .iter()
            .any(|set| set.eq_ignore_ascii_case(&lower))
        {
            return Some(format!("header \"{name}\" is set by the endpoint"));
        }
        if !seen.insert(lower) {
            return Some(format!("header \"{name}\" is given twice"));
        }
    }
    None
}

/// A URL as the monitor sees it: its origin, "/…" for a path and the query's parameter names
/// with "…" for their values (Slack-style URLs carry their token in the path or query).
pub fn redacted_url(text: &str) -> String {
    let Ok(url) = url::Url::parse(text) else {
        return "…".into();
    };
    let mut shown = url.origin().ascii_serialization();
    if url.path() != "/" && !url.path().is_empty() {
        shown.push_str("/…");
    }
    if let Some(query) = url.query() {
        let names: Vec<String> = query
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) => format!("{name}=…"),
                None => "…".into(),
            })
            .collect();
        shown.push('?');
        shown.push_str(&names.join("&"));
    }
    shown
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
        assert!(url_problem("not-a-url").unwrap().contains("not a URL"));
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
    fn a_path_never_steps_out_of_the_endpoints_url() {
        let base = "http://127.0.0.1:8080/tenant-a/hooks";
        for escape in [
            "/../../admin/secret-api",
            "/%2e%2e/%2E%2e/admin/pct",
            "/%2E%2E/admin",
            "/.%2e/admin",
            "/x/%2fadmin",
            "/x%2F..%2Fadmin",
            "/x/%5c../admin",
            "/%252e%252e/admin",
            "/..;/admin",
            "/./x",
            "/x/..",
            "/x/%00",
            "/x/%zz",
        ] {
            assert!(path_problem(escape).is_some(), "{escape}");
            assert!(delivery_url(base, Some(escape)).is_err(), "{escape}");
        }
        assert_eq!(
            delivery_url(base, Some("/orders/a.b..c/%41?next=/../x&p=%2e"))
                .unwrap()
                .as_str(),
            "http://127.0.0.1:8080/tenant-a/hooks/orders/a.b..c/%41?next=/../x&p=%2e"
        );
        assert!(path_problem(&format!("/{}", "a".repeat(MAX_PATH_BYTES))).is_some());
    }

    #[test]
    fn endpoint_urls_are_bounded_and_hold_no_control_characters() {
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_BYTES));
        assert!(url_problem(&long).unwrap().contains("at most"));
        assert!(url_problem("https://example.com/a\nb")
            .unwrap()
            .contains("control"));
        assert!(url_problem("https://example.com/a\tb").is_some());
    }

    #[test]
    fn chosen_webhook_ids_live_apart_from_generated_ones() {
        assert_eq!(webhook_id(7, None).unwrap(), "msg_7");
        assert_eq!(webhook_id(7, Some("msg_999999")).unwrap(), "key_msg_999999");
        assert_eq!(
            webhook_id(7, Some("invoice-42.paid:v~1")).unwrap(),
            "key_invoice-42.paid:v~1"
        );
        for bad in [
            "",
            "a b",
            "a/b",
            "ü",
            &"k".repeat(MAX_WEBHOOK_KEY_BYTES + 1),
        ] {
            assert!(webhook_id(7, Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_delivery_cannot_repeat_or_add_routing_headers() {
        let endpoint = vec!["Authorization".to_string(), "x-api-key".to_string()];
        assert_eq!(
            delivery_headers_problem([("x-tenant", "a")], &endpoint),
            None
        );
        for name in ["authorization", "X-API-KEY"] {
            assert!(delivery_headers_problem([(name, "v")], &endpoint)
                .unwrap()
                .contains("set by the endpoint"));
        }
        assert!(delivery_headers_problem([("x-a", "1"), ("X-A", "2")], &[])
            .unwrap()
            .contains("twice"));
        for name in [
            "X-HTTP-Method-Override",
            "Forwarded",
            "X-Forwarded-Host",
            "x-forwarded-for",
            "Content-Encoding",
            "Proxy-Connection",
        ] {
            assert!(
                header_problem(name, "x").unwrap().contains("reserved"),
                "{name}"
            );
        }
    }

    #[test]
    fn a_redacted_url_shows_the_origin_and_query_names_only() {
        assert_eq!(
            redacted_url("https://hooks.slack.com/services/T000/B000/TOKEN?token=abc&x"),
            "https://hooks.slack.com/…?token=…&…"
        );
        assert_eq!(
            redacted_url("http://127.0.0.1:8080"),
            "http://127.0.0.1:8080"
        );
        assert_eq!(redacted_url("http://h:81/"), "http://h:81");
    }

    #[test]
    fn headers_are_checked_and_reserved_ones_refused() {
        assert_eq!(header_problem("Authorization", "Bearer abc"), None);
        assert!(header_problem("Webhook-Signature", "v1,x")
            .unwrap()
            .contains("set by pg_jobqueue"));
        assert!(header_problem("proxy-authorization", "x").is_some());
        assert!(header_problem("host", "evil").is_some());
        assert!(header_problem("bad name", "x")
            .unwrap()
            .contains("not a valid"));
        assert!(header_problem("x-a", "line\r\nbreak")
            .unwrap()
            .contains("line breaks"));
    }
}
