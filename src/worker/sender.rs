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
//!
//! This file keeps the loop, the claim and the record.  The requests (client, resolver,
//! signing) are in `delivery/http.rs`, what an answer comes to and what is recorded of it in
//! `delivery/outcome.rs`, the rows exchanged with SQL, by name, in `delivery/rows.rs`, and the
//! sleep on the latch and the pipe in `worker/wait.rs`.

use super::wait::Bell;
use super::{spi, transaction};
use crate::delivery::http::{self, Delivery};
use crate::delivery::outcome::{self, Attempt};
use crate::delivery::rows;
use crate::server::gucs;
use crate::server::shmem::{self, Kind};
use pg_jobqueue_rules::claimer::{claimed_by, Claimer};
use pg_jobqueue_rules::delivery::address::AddressPolicy;
use pgrx::bgworkers::{BackgroundWorker, SignalWakeFlags};
use pgrx::prelude::*;
use std::collections::{HashMap, VecDeque};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant, SystemTime};

/// The window a rate limit counts starts in: a second, and a margin so that the jitter of
/// the network cannot put one request more into a second as the receiver sees them.
const RATE_WINDOW: Duration = Duration::from_millis(1025);
/// How often the sender checks that its database still has endpoints (it costs a query).
const WANTED_CHECK_INTERVAL: Duration = Duration::from_secs(1);

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
    let runtime = match http::runtime() {
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
                            row.get_by_name::<String, _>("endpoint")?
                                .unwrap_or_default(),
                            row.get_by_name::<i32, _>("rate_limit")?.unwrap_or(1),
                            row.get_by_name::<f64, _>("started_ago")?.unwrap_or(0.0),
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
            let (outcomes, tallies) = outcome::records(batch, max_retry_after, SystemTime::now());
            transaction(|| {
                // Not waiting for the WAL flush: an outcome lost in a crash leaves its job
                // running until its lease runs out, and it is sent again with the same
                // webhook-id (at least once, as after any crash mid-request).  Waiting cost
                // a flush (2-3 ms here) per round of the loop.
                spi(Spi::run("SET LOCAL synchronous_commit = off"));
                spi(rows::record_deliveries(&outcomes, &tallies, disable_after))
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
            let client = http::build_client(Arc::clone(&policy)).map_err(|e| e.to_string())?;
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
            Ok(spi(rows::claim_deliveries(
                &worker,
                room as i32,
                endpoints,
                recent,
            )))
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
        for claim in deliveries {
            let rate_limit = claim.rate_limit;
            let delivery = Delivery::of_claim(claim);
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
                let attempt = http::send(&client, &policy, delivery, max_bytes).await;
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
