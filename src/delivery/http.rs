//! HTTP requests of deliveries: the client (no redirects, no proxy, every address checked
//! against `pg_jobqueue.http_deny` / `http_allow` as it is resolved), the signed request of
//! one claimed delivery, and what its answer or its failure comes to ([`Attempt`]).  Runs on
//! the sender's HTTP threads (`worker/sender.rs`), never touching PostgreSQL.

use super::outcome::{Answer, Attempt, TransportError};
use super::rows::DeliveryClaim;
use pg_jobqueue_rules::delivery::address::AddressPolicy;
use pg_jobqueue_rules::delivery::{delivery_headers_problem, delivery_url, signature, webhook_id};
use pgrx::datum::Uuid;
use serde_json::{Map, Value};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Response headers kept in a delivered job's result.
pub const KEPT_RESPONSE_HEADERS: &[&str] = &[
    "content-type",
    "date",
    "etag",
    "location",
    "request-id",
    "retry-after",
    "x-request-id",
];
/// The most of an error answer's body kept in the attempt's record.
const ERROR_BODY_BYTES: usize = 1024;

/// A claimed delivery, ready to send.
pub struct Delivery {
    pub job_id: i64,
    token: Uuid,
    pub endpoint: String,
    url: Result<url::Url, String>,
    method: String,
    headers: Vec<(String, String)>,
    body: String,
    keys: Vec<Vec<u8>>,
    /// What no recorded answer may repeat (an echoing receiver would hand it to the monitor).
    hidden: Redactions,
    webhook_id: String,
    timeout: Duration,
}

impl Delivery {
    /// The request a claimed delivery makes.  job.deliver and job.enqueue checked its path,
    /// headers and key; a job that got in another way (an older release, a restore) is
    /// checked again here, and dies with the reason rather than being sent.
    pub fn of_claim(claim: DeliveryClaim) -> Delivery {
        let job_id = claim.job_id;
        let mut headers = header_list(claim.endpoint_headers);
        let delivery_headers = header_list(claim.headers);
        let mut url = delivery_url(&claim.url, claim.path.as_deref());
        let endpoint_header_names: Vec<String> =
            headers.iter().map(|(name, _)| name.clone()).collect();
        if let Some(problem) = delivery_headers_problem(
            delivery_headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str())),
            &endpoint_header_names,
        ) {
            url = Err(format!("headers: {problem}"));
        }
        let webhook_id = match webhook_id(job_id, claim.webhook_id.as_deref()) {
            Ok(id) => id,
            Err(problem) => {
                url = Err(problem);
                webhook_id(job_id, None).unwrap_or_default()
            }
        };
        let keys = claim
            .secrets
            .iter()
            .filter_map(|s| signature::secret_key(s).ok())
            .collect();
        let hidden = Redactions::of(&headers, &claim.secrets);
        headers.extend(delivery_headers);
        Delivery {
            job_id,
            token: claim.token,
            endpoint: claim.endpoint,
            url,
            method: claim.method.unwrap_or_else(|| "POST".into()),
            headers,
            body: claim.body.unwrap_or_else(|| "null".into()),
            keys,
            hidden,
            webhook_id,
            timeout: Duration::from_millis(claim.timeout_ms.unwrap_or(30_000).max(1) as u64),
        }
    }
}

/// The (name, value) pairs of a JSON object of headers.
fn header_list(json: Option<Value>) -> Vec<(String, String)> {
    let Some(Value::Object(map)) = json else {
        return Vec::new();
    };
    map.into_iter()
        .filter_map(|(name, value)| match value {
            Value::String(value) => Some((name, value)),
            _ => None,
        })
        .collect()
}

/// The endpoint's header values and signing secrets, replaced by "[redacted]" wherever an
/// answer's kept headers or body excerpt repeat them.  A value with a scheme
/// (`Bearer <token>`) also hides its token alone; values shorter than MIN_REDACTED_BYTES
/// are no secret and are left alone (hiding "1" would garble every answer).
#[derive(Default)]
struct Redactions(Vec<String>);

const MIN_REDACTED_BYTES: usize = 6;

impl Redactions {
    fn of(endpoint_headers: &[(String, String)], secrets: &[String]) -> Redactions {
        let mut hidden: Vec<String> = Vec::new();
        for value in endpoint_headers
            .iter()
            .map(|(_, v)| v.as_str())
            .chain(secrets.iter().map(String::as_str))
        {
            hidden.push(value.to_owned());
            if let Some((_, token)) = value.split_once(' ') {
                hidden.push(token.trim().to_owned());
            }
            if let Some(key) = value.strip_prefix("whsec_") {
                hidden.push(key.to_owned());
            }
        }
        hidden.retain(|v| v.len() >= MIN_REDACTED_BYTES);
        // Longest first, so that a value is hidden whole before a part of it is.
        hidden.sort_by_key(|v| std::cmp::Reverse(v.len()));
        hidden.dedup();
        Redactions(hidden)
    }

    fn longest(&self) -> usize {
        self.0.first().map_or(0, String::len)
    }

    fn apply(&self, text: &str) -> String {
        self.0.iter().fold(text.to_owned(), |text, value| {
            text.replace(value.as_str(), "[redacted]")
        })
    }
}

/// The runtime the requests run on: two threads of its own, started with every signal
/// blocked (see [`without_signals`]).
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    without_signals(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("pg_jobqueue http")
            .enable_all()
            .build()
    })
}

/// Runs `start` (which starts threads) with every signal blocked, so that the threads it
/// starts, and those they start, inherit a mask that blocks them all: PostgreSQL's signal
/// handlers (SIGTERM, SIGHUP, SIGUSR1 set the latch) must run on the main thread, and pgrx
/// panics, aborting the process, when one runs on another.
fn without_signals<R>(start: impl FnOnce() -> R) -> R {
    // SAFETY: sigset_t values initialised by sigfillset/pthread_sigmask before use; the
    // main thread's own mask is restored right after.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut saved: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut saved);
        let started = start();
        libc::pthread_sigmask(libc::SIG_SETMASK, &saved, std::ptr::null_mut());
        started
    }
}

/// A client that resolves every host itself and refuses denied addresses, follows no
/// redirect, uses no proxy from the environment, and trusts the system's root certificates.
pub fn build_client(policy: Arc<AddressPolicy>) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .user_agent(concat!("pg_jobqueue/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .dns_resolver(Arc::new(CheckedResolver {
            policy: policy.clone(),
        }))
        .pool_max_idle_per_host(256)
        .tcp_nodelay(true)
        .build()
}

/// Resolves with the system resolver, then keeps only the addresses the policy allows.
struct CheckedResolver {
    policy: Arc<AddressPolicy>,
}

/// Why the resolver gave no address for a host: every address was refused
/// (`TransportError::Refused`), or it did not resolve (`TransportError::Dns`).
#[derive(Debug)]
struct Unresolved(TransportError, String);
impl std::fmt::Display for Unresolved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.1)
    }
}
impl std::error::Error for Unresolved {}

impl reqwest::dns::Resolve for CheckedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = Arc::clone(&self.policy);
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|e| -> Box<dyn std::error::Error + Send + Sync> {
                    Box::new(Unresolved(
                        TransportError::Dns,
                        format!("{host} did not resolve: {e}"),
                    ))
                })?
                .collect();
            let mut refusal = None;
            let allowed: Vec<SocketAddr> = resolved
                .into_iter()
                .filter(|a| match policy.refusal(a.ip()) {
                    None => true,
                    Some(why) => {
                        refusal.get_or_insert(why);
                        false
                    }
                })
                .collect();
            if allowed.is_empty() {
                let why = refusal.unwrap_or_else(|| format!("{host} has no address"));
                let refused: Box<dyn std::error::Error + Send + Sync> = Box::new(Unresolved(
                    TransportError::Refused,
                    format!("{host}: {why}"),
                ));
                return Err(refused);
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Sends one delivery and reads its answer, within its timeout.
pub async fn send(
    client: &reqwest::Client,
    policy: &AddressPolicy,
    delivery: Delivery,
    max_bytes: usize,
) -> Attempt {
    let started = Instant::now();
    let answer = attempt(client, policy, &delivery, max_bytes).await;
    Attempt {
        job_id: delivery.job_id,
        token: delivery.token,
        endpoint: delivery.endpoint,
        webhook_id: delivery.webhook_id,
        latency: started.elapsed(),
        answer,
    }
}

async fn attempt(
    client: &reqwest::Client,
    policy: &AddressPolicy,
    delivery: &Delivery,
    max_bytes: usize,
) -> Result<Answer, (TransportError, String)> {
    let url = delivery
        .url
        .clone()
        .map_err(|e| (TransportError::Request, e))?;
    // A literal address is never resolved, so it is checked here.
    let literal = match url.host() {
        Some(url::Host::Ipv4(ip)) => Some(std::net::IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => Some(std::net::IpAddr::V6(ip)),
        _ => None,
    };
    if let Some(why) = literal.and_then(|ip| policy.refusal(ip)) {
        return Err((TransportError::Refused, why));
    }
    let method = reqwest::Method::from_bytes(delivery.method.as_bytes()).map_err(|_| {
        (
            TransportError::Request,
            format!("method {} is not valid", delivery.method),
        )
    })?;
    let timestamp = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let mut request = client
        .request(method, url)
        .timeout(delivery.timeout)
        .header("content-type", "application/json")
        .header("webhook-id", &delivery.webhook_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("idempotency-key", &delivery.webhook_id);
    if !delivery.keys.is_empty() {
        request = request.header(
            "webhook-signature",
            signature::signature_header(
                &delivery.keys,
                &delivery.webhook_id,
                timestamp,
                delivery.body.as_bytes(),
            ),
        );
    }
    for (name, value) in &delivery.headers {
        request = request.header(name.as_str(), value.as_str());
    }
    let mut response = request
        .body(delivery.body.clone())
        .send()
        .await
        .map_err(transport_error)?;
    let status = response.status();
    let headers = response.headers();
    let kept: Map<String, Value> = KEPT_RESPONSE_HEADERS
        .iter()
        .filter_map(|&name| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(|v| (name.to_owned(), Value::String(delivery.hidden.apply(v))))
        })
        .collect();
    let retry_after = headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let limit = if status.is_success() {
        max_bytes
    } else {
        ERROR_BODY_BYTES.min(max_bytes)
    };
    // Read past the limit by the longest hidden value, hide, then cut: a cut made before
    // hiding could leave the start of a secret.
    let read_limit = limit + delivery.hidden.longest();
    let mut body = Vec::new();
    let mut body_truncated = false;
    while let Some(chunk) = response.chunk().await.map_err(transport_error)? {
        let room = read_limit.saturating_sub(body.len());
        if chunk.len() > room {
            body.extend_from_slice(&chunk[..room]);
            body_truncated = true;
            break;
        }
        body.extend_from_slice(&chunk);
    }
    let read = body.len();
    let mut body = delivery.hidden.apply(&String::from_utf8_lossy(&body));
    if read > limit && body.len() > limit {
        let mut cut = limit;
        while !body.is_char_boundary(cut) {
            cut -= 1;
        }
        body.truncate(cut);
        body_truncated = true;
    }
    Ok(Answer {
        status: status.as_u16(),
        reason: status.canonical_reason().map(str::to_owned),
        retry_after,
        headers: kept,
        body,
        body_truncated,
    })
}

/// The class and text of a request that got no answer.  The text never holds the URL.
fn transport_error(error: reqwest::Error) -> (TransportError, String) {
    let chain = error_chain(&error);
    let kind = if error.is_timeout() {
        TransportError::Timeout
    } else if let Some(Unresolved(kind, _)) = source_of::<Unresolved>(&error) {
        *kind
    } else if error.is_builder() {
        TransportError::Request
    } else if chain.contains("certificate") || chain.contains("tls") || chain.contains("TLS") {
        TransportError::Tls
    } else if error.is_connect() {
        TransportError::Connect
    } else {
        TransportError::Connection
    };
    (kind, chain)
}

fn error_chain(error: &reqwest::Error) -> String {
    let mut text = String::new();
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(error);
    let top = format!("{}", ErrorWithoutUrl(error));
    text.push_str(&top);
    while let Some(e) = source {
        let part = e.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = e.source();
    }
    text
}

/// reqwest's message without the URL it appends.
struct ErrorWithoutUrl<'a>(&'a reqwest::Error);
impl std::fmt::Display for ErrorWithoutUrl<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let e = self.0;
        let what = if e.is_timeout() {
            "the request timed out"
        } else if e.is_connect() {
            "could not connect"
        } else if e.is_body() || e.is_decode() {
            "the answer broke off"
        } else if e.is_builder() {
            "the request could not be built"
        } else {
            "the request failed"
        };
        f.write_str(what)
    }
}

/// The first error of type `E` in `error`'s chain of sources.
fn source_of<E: std::error::Error + 'static>(error: &reqwest::Error) -> Option<&E> {
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(error);
    while let Some(e) = source {
        if let Some(found) = e.downcast_ref::<E>() {
            return Some(found);
        }
        source = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::dns::Resolve;
    use std::str::FromStr;

    fn resolve(policy: AddressPolicy, host: &str) -> Result<Vec<SocketAddr>, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let resolver = CheckedResolver {
            policy: Arc::new(policy),
        };
        runtime.block_on(async {
            resolver
                .resolve(reqwest::dns::Name::from_str(host).unwrap())
                .await
                .map(|addrs| addrs.collect())
                .map_err(|e| e.to_string())
        })
    }

    #[test]
    fn a_name_is_refused_when_every_address_it_resolves_to_is_denied() {
        let open = AddressPolicy::new("169.254.0.0/16", None).unwrap();
        assert!(!resolve(open, "localhost").unwrap().is_empty());
        let closed = AddressPolicy::new("127.0.0.0/8, ::1/128", None).unwrap();
        let refusal = resolve(closed, "localhost").unwrap_err();
        assert!(
            refusal.contains("denied by pg_jobqueue.http_deny"),
            "{refusal}"
        );
        let elsewhere = AddressPolicy::new("", Some("10.0.0.0/8")).unwrap();
        assert!(resolve(elsewhere, "localhost")
            .unwrap_err()
            .contains("http_allow"));
    }
}
