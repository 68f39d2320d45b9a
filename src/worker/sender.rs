//! The sender: delivers the jobs of HTTP endpoints' queues (`job.deliver`) as signed HTTP
//! requests, many at once, from one process per database.
//!
//! PostgreSQL is touched only from the process's main thread; requests run on a small tokio
//! runtime of their own threads.  The main loop:
//! 1. records the attempts that finished since it last looked, in one transaction
//!    (`job._record_deliveries`: completions in bulk, failures through `job.fail`'s rules,
//!    each endpoint's counters, and the endpoints to disable);
//! 2. claims as many deliveries as `pg_jobqueue.http_max_in_flight` leaves room for
//!    (`job._claim_deliveries`), each endpoint within its `concurrency` (running jobs of its
//!    queue, counted in the claim) and its `rate_limit` (this process's count of requests
//!    started in the last second), and starts their requests;
//! 3. sleeps until a request finishes (a byte on a pipe), a commit makes deliveries ready
//!    (its latch), a rate limit's window opens, or a tick passes.
//!
//! Each request has its own deadline (the endpoint's `timeout`); nothing waits for a batch.
//! A delivery is a job with a lease of the timeout plus 30 seconds: should this process die
//! mid-request, the scheduler takes its jobs back at once and they are sent again, with the
//! same `webhook-id`.

use super::claimer::{claimed_by, Claimer};
use super::{spi, transaction};
use crate::delivery::address::AddressPolicy;
use crate::delivery::outcome::{self, TransportError, Verdict};
use crate::delivery::{delivery_headers_problem, delivery_url, signature, webhook_id};
use crate::gucs;
use crate::metrics;
use crate::shmem::{self, Kind};
use pgrx::bgworkers::{BackgroundWorker, SignalWakeFlags};
use pgrx::prelude::*;
use serde_json::{json, Map, Value};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant, SystemTime};

/// The window a rate limit counts starts in: a second, and a margin so that the jitter of
/// the network cannot put one request more into a second as the receiver sees them.
const RATE_WINDOW: Duration = Duration::from_millis(1025);
/// How often the sender checks that its database still has endpoints (it costs a query).
const WANTED_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// Response headers kept in a delivered job's result.
const KEPT_RESPONSE_HEADERS: &[&str] = &[
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
struct Delivery {
    job_id: i64,
    token: String,
    endpoint: String,
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

/// What a request came to, sent back to the main thread.
struct Attempt {
    job_id: i64,
    token: String,
    endpoint: String,
    webhook_id: String,
    latency: Duration,
    answer: Result<Answer, (TransportError, String)>,
}

struct Answer {
    status: u16,
    reason: Option<String>,
    retry_after: Option<String>,
    headers: Map<String, Value>,
    body: String,
    body_truncated: bool,
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn pg_jobqueue_sender_main(arg: pg_sys::Datum) {
    let db = super::database_argument(arg);
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    BackgroundWorker::connect_worker_to_spi_by_oid(Some(db), None);
    shmem::register_process(db, Kind::Sender);
    // SAFETY: MyProcPid is set at process start.
    let worker = claimed_by(Claimer::Sender, unsafe { pg_sys::MyProcPid });
    if let Err(e) = transaction(super::pin_search_path) {
        log!("pg_jobqueue sender: {e}");
        return;
    }
    let runtime = match without_signals(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("pg_jobqueue http")
            .enable_all()
            .build()
    }) {
        Ok(runtime) => runtime,
        Err(e) => {
            log!("pg_jobqueue sender: could not start its HTTP threads: {e}");
            return;
        }
    };
    let Some(bell) = Bell::new() else {
        log!("pg_jobqueue sender: could not create its wake-up pipe");
        return;
    };
    let mut me = Sender {
        worker,
        policy_text: (String::new(), None),
        client: None,
        runtime,
        bell: Arc::new(bell),
        finished: mpsc::channel(),
        in_flight: 0,
        starts: HashMap::new(),
        rate_limits: HashMap::new(),
        unrecorded: Vec::new(),
        wanted_checked: None,
    };
    me.restore_rate_windows();
    log!("pg_jobqueue sender started");
    loop {
        super::reload_config_if_asked();
        if !gucs::ENABLED.get() || BackgroundWorker::sigterm_received() {
            break;
        }
        me.collect_finished();
        me.record();
        let claimed_all = match me.claim_and_send() {
            Ok(full) => full,
            Err(Retire) => break,
        };
        let wait = if claimed_all {
            Duration::ZERO
        } else {
            me.next_window_opens().min(super::tick())
        };
        if !wait.is_zero() && !me.bell.wait(wait) {
            break;
        }
    }
    log!("pg_jobqueue sender stopping");
    // Requests still in flight are abandoned (their jobs are taken back and sent again); a
    // DROP DATABASE waits for this process to leave.
    me.runtime.shutdown_background();
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

struct Retire;

struct Sender {
    worker: String,
    /// The address lists the client was built with.
    policy_text: (String, Option<String>),
    client: Option<(reqwest::Client, Arc<AddressPolicy>)>,
    runtime: tokio::runtime::Runtime,
    bell: Arc<Bell>,
    finished: (mpsc::Sender<Attempt>, mpsc::Receiver<Attempt>),
    in_flight: usize,
    /// Per endpoint, when its requests of the last RATE_WINDOW started.
    starts: HashMap<String, VecDeque<Instant>>,
    /// Per endpoint, its rate limit as of its last claim.
    rate_limits: HashMap<String, i32>,
    /// Finished attempts not yet recorded.
    unrecorded: Vec<Attempt>,
    wanted_checked: Option<Instant>,
}

impl Sender {
    /// Fills the rate windows with the claims of the last RATE_WINDOW, as recorded: a sender
    /// that starts with empty windows (after a SIGTERM, a crash, a retirement) would start a
    /// full limit's worth of requests in the second its predecessor already did.
    fn restore_rate_windows(&mut self) {
        let within = format!("{} milliseconds", RATE_WINDOW.as_millis());
        let restored = transaction(|| {
            if !super::extension_installed() {
                return Vec::new();
            }
            spi(Spi::connect(|client| {
                client
                    .select(
                        "SELECT endpoint, rate_limit, started_ago
                           FROM job._recent_delivery_starts($1::pg_catalog.interval)",
                        None,
                        &[within.as_str().into()],
                    )?
                    .map(|row| {
                        Ok((
                            row.get::<String>(1)?.unwrap_or_default(),
                            row.get::<i32>(2)?.unwrap_or(1),
                            row.get::<f64>(3)?.unwrap_or(0.0),
                        ))
                    })
                    .collect::<Result<Vec<_>, pgrx::spi::Error>>()
            }))
        });
        let rows = match restored {
            Ok(rows) => rows,
            Err(e) => {
                log!("pg_jobqueue sender: could not read the recent deliveries' starts ({e}); rate windows start empty");
                return;
            }
        };
        let now = Instant::now();
        // Oldest first (the query's order), as the windows keep them.
        for (endpoint, limit, ago) in rows {
            let ago = Duration::from_secs_f64(ago.max(0.0));
            let Some(started) = now.checked_sub(ago) else {
                continue;
            };
            self.rate_limits.insert(endpoint.clone(), limit);
            self.starts.entry(endpoint).or_default().push_back(started);
        }
    }

    fn collect_finished(&mut self) {
        self.bell.drain();
        while let Ok(attempt) = self.finished.1.try_recv() {
            self.in_flight -= 1;
            self.unrecorded.push(attempt);
        }
    }

    /// Records the finished attempts: all in one transaction, or, should that fail, one by
    /// one (an attempt that cannot be recorded is logged; its job is sent again after its
    /// lease).
    fn record(&mut self) {
        if self.unrecorded.is_empty() {
            return;
        }
        let attempts = std::mem::take(&mut self.unrecorded);
        let max_retry_after = Duration::from_secs(gucs::HTTP_MAX_RETRY_AFTER_S.get().max(0) as u64);
        let disable_after = gucs::HTTP_DISABLE_AFTER.get();
        let write = |batch: &[Attempt]| {
            let (outcomes, stats) = outcome_records(batch, max_retry_after);
            transaction(|| {
                // Not waiting for the WAL flush: an outcome lost in a crash leaves its job
                // running until its lease runs out, and it is sent again with the same
                // webhook-id (at least once, as after any crash mid-request).  Waiting cost
                // a flush (2-3 ms here) per round of the loop.
                spi(Spi::run("SET LOCAL synchronous_commit = off"));
                spi(Spi::run_with_args(
                    "SELECT job._record_deliveries($1, $2, $3)",
                    &[
                        pgrx::JsonB(outcomes).into(),
                        pgrx::JsonB(stats).into(),
                        disable_after.into(),
                    ],
                ))
            })
        };
        if let Err(e) = write(&attempts) {
            log!(
                "pg_jobqueue sender: recording {} attempts failed ({e}); recording them one by one",
                attempts.len()
            );
            for attempt in attempts.chunks(1) {
                if let Err(e) = write(attempt) {
                    log!(
                        "pg_jobqueue sender: the attempt of job {} could not be recorded: {e}",
                        attempt[0].job_id
                    );
                }
            }
        }
    }

    /// The client and the address lists it checks, rebuilt when the lists changed.
    fn client(&mut self) -> Result<(reqwest::Client, Arc<AddressPolicy>), String> {
        let deny = gucs::string(&gucs::HTTP_DENY).unwrap_or_default();
        let allow = gucs::string(&gucs::HTTP_ALLOW);
        if self.client.is_none() || self.policy_text != (deny.clone(), allow.clone()) {
            let policy = AddressPolicy::new(&deny, allow.as_deref())
                .map_err(|e| format!("pg_jobqueue.http_deny or http_allow: {e}"))?;
            let policy = Arc::new(policy);
            let client = build_client(Arc::clone(&policy)).map_err(|e| e.to_string())?;
            self.client = Some((client, policy));
            self.policy_text = (deny, allow);
        }
        Ok(self.client.clone().expect("built above"))
    }

    /// Claims what there is room for and starts its requests.  Ok(true) when it took all the
    /// room (there may be more ready).
    fn claim_and_send(&mut self) -> Result<bool, Retire> {
        let max_in_flight = gucs::HTTP_MAX_IN_FLIGHT.get().max(1) as usize;
        let room = max_in_flight.saturating_sub(self.in_flight);
        if room == 0 {
            return Ok(false);
        }
        let (client, policy) = match self.client() {
            Ok(built) => built,
            Err(e) => {
                log!("pg_jobqueue sender: {e}; sending nothing until it is fixed");
                return Ok(false);
            }
        };
        let now = Instant::now();
        let (endpoints, recent): (Vec<String>, Vec<i32>) = self
            .starts
            .iter_mut()
            .filter_map(|(endpoint, starts)| {
                while starts
                    .front()
                    .is_some_and(|&t| now.duration_since(t) >= RATE_WINDOW)
                {
                    starts.pop_front();
                }
                (!starts.is_empty()).then(|| (endpoint.clone(), starts.len() as i32))
            })
            .unzip();
        self.starts.retain(|_, starts| !starts.is_empty());
        let check_wanted = self
            .wanted_checked
            .is_none_or(|t| t.elapsed() >= WANTED_CHECK_INTERVAL);
        let worker = self.worker.clone();
        let claimed = transaction(|| {
            if check_wanted
                && (!super::extension_installed()
                    || !spi(Spi::get_one::<bool>("SELECT job._sender_wanted()")).unwrap_or(false))
            {
                return Err(Retire);
            }
            spi(Spi::run("SET LOCAL synchronous_commit = off"));
            Ok(spi(claim(&worker, room as i32, endpoints, recent)))
        });
        let deliveries = match claimed {
            Ok(Ok(deliveries)) => deliveries,
            Ok(Err(Retire)) => return Err(Retire),
            Err(e) => {
                log!("pg_jobqueue sender: claiming deliveries failed: {e}");
                return Ok(false);
            }
        };
        if check_wanted {
            self.wanted_checked = Some(Instant::now());
        }
        let took_all = deliveries.len() >= room;
        for (delivery, rate_limit) in deliveries {
            match rate_limit {
                Some(limit) => {
                    self.rate_limits.insert(delivery.endpoint.clone(), limit);
                    self.starts
                        .entry(delivery.endpoint.clone())
                        .or_default()
                        .push_back(Instant::now());
                }
                None => {
                    self.rate_limits.remove(&delivery.endpoint);
                }
            }
            self.in_flight += 1;
            let client = client.clone();
            let policy = Arc::clone(&policy);
            let done = self.finished.0.clone();
            let bell = Arc::clone(&self.bell);
            let max_bytes = gucs::HTTP_MAX_RESPONSE_BYTES.get().max(0) as usize;
            self.runtime.spawn(async move {
                let attempt = send(&client, &policy, delivery, max_bytes).await;
                // The main thread is gone only when the process exits.
                let _ = done.send(attempt);
                bell.ring();
            });
        }
        Ok(took_all)
    }

    /// How long until a rate-limited endpoint whose window is full may start again.
    fn next_window_opens(&self) -> Duration {
        let now = Instant::now();
        self.starts
            .iter()
            .filter(|(endpoint, starts)| {
                self.rate_limits
                    .get(*endpoint)
                    .is_some_and(|&limit| starts.len() >= limit.max(1) as usize)
            })
            .filter_map(|(_, starts)| starts.front())
            .map(|&first| (first + RATE_WINDOW).saturating_duration_since(now))
            .min()
            .unwrap_or(Duration::MAX)
            .max(Duration::from_millis(1))
    }
}

/// Claims up to `room` deliveries (with each one's endpoint's rate limit).
fn claim(
    worker: &str,
    room: i32,
    endpoints: Vec<String>,
    recent: Vec<i32>,
) -> Result<Vec<(Delivery, Option<i32>)>, pgrx::spi::Error> {
    Spi::connect_mut(|client| {
        client
            .update(
                "SELECT endpoint, job_id, token::pg_catalog.text, body, path, headers::pg_catalog.text,
                        webhook_id, url, method, endpoint_headers::pg_catalog.text, secrets,
                        timeout_ms, rate_limit
                   FROM job._claim_deliveries($1, $2, $3, $4)",
                None,
                &[worker.into(), room.into(), endpoints.into(), recent.into()],
            )?
            .map(|row| {
                let job_id: i64 = row.get(2)?.unwrap_or_default();
                let endpoint: String = row.get(1)?.unwrap_or_default();
                let url: String = row.get(8)?.unwrap_or_default();
                let path: Option<String> = row.get(5)?;
                let mut headers = header_list(row.get::<String>(10)?.as_deref());
                let delivery_headers = header_list(row.get::<String>(6)?.as_deref());
                // job.deliver and job.enqueue checked path, headers and key; a job that got
                // in another way (an older release, a restore) is checked again here, and
                // dies with the reason rather than being sent.
                let mut url = delivery_url(&url, path.as_deref());
                let endpoint_header_names: Vec<String> =
                    headers.iter().map(|(name, _)| name.clone()).collect();
                if let Some(problem) = delivery_headers_problem(
                    delivery_headers.iter().map(|(n, v)| (n.as_str(), v.as_str())),
                    &endpoint_header_names,
                ) {
                    url = Err(format!("headers: {problem}"));
                }
                let webhook_id = match webhook_id(job_id, row.get::<String>(7)?.as_deref()) {
                    Ok(id) => id,
                    Err(problem) => {
                        url = Err(problem);
                        webhook_id(job_id, None).unwrap_or_default()
                    }
                };
                let secrets: Vec<String> = row.get::<Vec<String>>(11)?.unwrap_or_default();
                let keys = secrets
                    .iter()
                    .filter_map(|s| signature::secret_key(s).ok())
                    .collect();
                let hidden = Redactions::of(&headers, &secrets);
                headers.extend(delivery_headers);
                Ok((
                    Delivery {
                        job_id,
                        token: row.get(3)?.unwrap_or_default(),
                        endpoint,
                        url,
                        method: row.get(9)?.unwrap_or_else(|| "POST".into()),
                        headers,
                        body: row.get(4)?.unwrap_or_else(|| "null".into()),
                        keys,
                        hidden,
                        webhook_id,
                        timeout: Duration::from_millis(row.get::<i64>(12)?.unwrap_or(30_000).max(1) as u64),
                    },
                    row.get::<i32>(13)?,
                ))
            })
            .collect()
    })
}

/// The (name, value) pairs of a JSON object of headers.
fn header_list(json: Option<&str>) -> Vec<(String, String)> {
    let Some(Value::Object(map)) = json.and_then(|j| serde_json::from_str(j).ok()) else {
        return Vec::new();
    };
    map.into_iter()
        .filter_map(|(name, value)| match value {
            Value::String(value) => Some((name, value)),
            _ => None,
        })
        .collect()
}

/// A client that resolves every host itself and refuses denied addresses, follows no
/// redirect, uses no proxy from the environment, and trusts the system's root certificates.
fn build_client(policy: Arc<AddressPolicy>) -> reqwest::Result<reqwest::Client> {
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

/// A host whose every address was refused.
#[derive(Debug)]
struct AddressRefused(String);
impl std::fmt::Display for AddressRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for AddressRefused {}

/// A host that did not resolve.
#[derive(Debug)]
struct NameNotResolved(String);
impl std::fmt::Display for NameNotResolved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for NameNotResolved {}

impl reqwest::dns::Resolve for CheckedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = Arc::clone(&self.policy);
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|e| -> Box<dyn std::error::Error + Send + Sync> {
                    Box::new(NameNotResolved(format!("{host} did not resolve: {e}")))
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
                let refused: Box<dyn std::error::Error + Send + Sync> =
                    Box::new(AddressRefused(format!("{host}: {why}")));
                return Err(refused);
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Sends one delivery and reads its answer, within its timeout.
async fn send(
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
    } else if has_source::<AddressRefused>(&error) {
        TransportError::Refused
    } else if has_source::<NameNotResolved>(&error) {
        TransportError::Dns
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

/// `text` as jsonb can store it: PostgreSQL's jsonb refuses the NUL character, and an answer
/// holding one must not make its attempt impossible to record (and so sent again and again).
fn storable(text: &str) -> String {
    text.replace('\0', "\u{fffd}")
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

fn has_source<E: std::error::Error + 'static>(error: &reqwest::Error) -> bool {
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(error);
    while let Some(e) = source {
        if e.is::<E>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// Per endpoint, what a batch of attempts adds to its counters.
#[derive(Default)]
struct EndpointTally {
    status_2xx: i64,
    status_3xx: i64,
    status_4xx: i64,
    status_5xx: i64,
    transport_errors: i64,
    transient_failures: i64,
    permanent_failures: i64,
    latency: Vec<i64>,
    latency_sum: f64,
    succeeded: bool,
    /// Failed attempts since the batch's last success (all of them if none succeeded).
    failures_since_success: i64,
    last_status: Option<u16>,
    last_error: Option<String>,
    gone: bool,
}

/// The JSON `job._record_deliveries` takes: one outcome per attempt, one tally per endpoint.
fn outcome_records(attempts: &[Attempt], max_retry_after: Duration) -> (Value, Value) {
    let now = SystemTime::now();
    let mut tallies: HashMap<&str, EndpointTally> = HashMap::new();
    let mut outcomes = Vec::with_capacity(attempts.len());
    for a in attempts {
        let latency_ms = (a.latency.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0;
        let tally = tallies.entry(a.endpoint.as_str()).or_default();
        if tally.latency.is_empty() {
            tally.latency = vec![0; metrics::BUCKETS];
        }
        tally.latency[metrics::bucket_of(a.latency.as_secs_f64())] += 1;
        tally.latency_sum += a.latency.as_secs_f64();
        let mut record = json!({
            "job_id": a.job_id,
            "token": a.token,
            "webhook_id": a.webhook_id,
            "latency_ms": latency_ms,
        });
        let verdict = match &a.answer {
            Ok(answer) => {
                tally.last_status = Some(answer.status);
                match answer.status {
                    200..=299 => tally.status_2xx += 1,
                    300..=399 => tally.status_3xx += 1,
                    400..=499 => tally.status_4xx += 1,
                    _ => tally.status_5xx += 1,
                }
                let verdict =
                    outcome::verdict_of_status(answer.status, answer.retry_after.as_deref(), now);
                if verdict == Verdict::Delivered {
                    record["result"] = json!({
                        "status": answer.status,
                        "latency_ms": latency_ms,
                        "webhook_id": a.webhook_id,
                        "headers": answer.headers,
                        "body": storable(&answer.body),
                        "body_truncated": answer.body_truncated,
                    });
                } else {
                    record["error"] = json!(outcome::status_error(
                        answer.status,
                        answer.reason.as_deref()
                    ));
                    record["http_status"] = json!(answer.status);
                    record["detail"] = json!({
                        "class": outcome::status_class(answer.status),
                        "latency_ms": latency_ms,
                        "webhook_id": a.webhook_id,
                        "body": storable(&answer.body),
                    });
                }
                verdict
            }
            Err((kind, message)) => {
                tally.transport_errors += 1;
                record["error"] = json!(storable(message));
                record["detail"] = json!({
                    "class": kind.class(),
                    "latency_ms": latency_ms,
                    "webhook_id": a.webhook_id,
                });
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
                record["permanent"] = json!(false);
                if let Some(after) = retry_after {
                    record["retry_after_ms"] = json!(after.min(max_retry_after).as_millis() as i64);
                }
            }
            Verdict::Permanent { disable } => {
                tally.permanent_failures += 1;
                tally.failures_since_success += 1;
                tally.gone |= disable;
                record["permanent"] = json!(true);
            }
        }
        if let Some(error) = record.get("error").and_then(Value::as_str) {
            tally.last_error = Some(error.to_owned());
        }
        outcomes.push(record);
    }
    let stats = tallies
        .into_iter()
        .map(|(endpoint, t)| {
            json!({
                "endpoint": endpoint,
                "status_2xx": t.status_2xx, "status_3xx": t.status_3xx,
                "status_4xx": t.status_4xx, "status_5xx": t.status_5xx,
                "transport_errors": t.transport_errors,
                "transient_failures": t.transient_failures,
                "permanent_failures": t.permanent_failures,
                "latency": t.latency,
                "latency_sum": t.latency_sum,
                "succeeded": t.succeeded,
                "failures_since_success": t.failures_since_success,
                "last_status": t.last_status,
                "last_error": t.last_error,
                "gone": t.gone,
            })
        })
        .collect();
    (Value::Array(outcomes), Value::Array(stats))
}

/// A pipe the HTTP threads write a byte to when a request finished, so that the main thread
/// can sleep on its latch and the pipe at once.
struct Bell {
    read: OwnedFd,
    write: OwnedFd,
}

impl Bell {
    fn new() -> Option<Bell> {
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills fds on success.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
            return None;
        }
        // SAFETY: both descriptors were just created and are owned here alone.
        Some(unsafe {
            Bell {
                read: OwnedFd::from_raw_fd(fds[0]),
                write: OwnedFd::from_raw_fd(fds[1]),
            }
        })
    }

    /// Called from any thread.  A full pipe already wakes the reader.
    fn ring(&self) {
        let byte = 1u8;
        // SAFETY: writes one byte from a valid buffer to an open descriptor.
        unsafe { libc::write(self.write.as_raw_fd(), (&byte as *const u8).cast(), 1) };
    }

    fn drain(&self) {
        let mut buf = [0u8; 256];
        // SAFETY: reads into a valid buffer from an open non-blocking descriptor.
        while unsafe { libc::read(self.read.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) } > 0 {
        }
    }

    /// Sleeps until the bell rings, the latch is set or `timeout` passes; false when the
    /// process must stop.  Only from the main thread.
    fn wait(&self, timeout: Duration) -> bool {
        let millis = timeout
            .as_micros()
            .div_ceil(1000)
            .clamp(1, i32::MAX as u128) as std::ffi::c_long;
        // SAFETY: the standard latch wait of a background worker, with one socket.
        unsafe {
            pg_sys::WaitLatchOrSocket(
                pg_sys::MyLatch,
                (pg_sys::WL_LATCH_SET
                    | pg_sys::WL_SOCKET_READABLE
                    | pg_sys::WL_TIMEOUT
                    | pg_sys::WL_EXIT_ON_PM_DEATH) as i32,
                self.read.as_raw_fd(),
                millis,
                pg_sys::PG_WAIT_EXTENSION,
            );
            pg_sys::ResetLatch(pg_sys::MyLatch);
            pg_sys::QueryCancelPending = 0;
            pg_sys::check_for_interrupts!();
        }
        !BackgroundWorker::sigterm_received()
    }
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

    fn attempt(endpoint: &str, answer: Result<u16, TransportError>) -> Attempt {
        Attempt {
            job_id: 1,
            token: String::new(),
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
    fn outcomes_count_failures_since_the_last_success_and_cap_retry_after() {
        let attempts = [
            attempt("a", Err(TransportError::Timeout)),
            attempt("a", Ok(200)),
            attempt("a", Ok(503)),
            attempt("a", Ok(429)),
            attempt("b", Ok(410)),
            attempt("b", Err(TransportError::Refused)),
        ];
        let (outcomes, stats) = outcome_records(&attempts, Duration::from_secs(60));
        let outcomes = outcomes.as_array().unwrap();
        assert_eq!(outcomes[0]["detail"]["class"], "timeout");
        assert_eq!(outcomes[0]["permanent"], false);
        assert_eq!(outcomes[1]["result"]["status"], 200);
        assert_eq!(outcomes[1]["result"]["body"], "a\u{fffd}b");
        assert_eq!(outcomes[3]["retry_after_ms"], 60_000);
        assert_eq!(outcomes[5]["permanent"], true);
        let stats = stats.as_array().unwrap();
        let of = |name: &str| {
            stats
                .iter()
                .find(|s| s["endpoint"] == name)
                .unwrap()
                .clone()
        };
        let a = of("a");
        assert_eq!(a["succeeded"], true);
        assert_eq!(a["failures_since_success"], 2);
        assert_eq!(a["status_5xx"], 1);
        assert_eq!(a["status_4xx"], 1);
        assert_eq!(a["transport_errors"], 1);
        let b = of("b");
        assert_eq!(b["succeeded"], false);
        assert_eq!(b["failures_since_success"], 2);
        assert_eq!(b["gone"], true);
        assert_eq!(b["permanent_failures"], 2);
    }
}
