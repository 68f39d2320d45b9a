//! An executor: claims jobs of handler queues and calls `handler(payload jsonb)`.
//!
//! Each executor serves one `run_as` role for its whole life: it only ever runs that role's
//! handlers, so whatever a handler leaves in the session (temporary objects, prepared
//! statements, dblink connections, session advisory locks) can only meet that same role's
//! handlers later, never another role's.  The scheduler keeps executors per role.
//!
//! Per batch of jobs (one handler queue's, up to `pg_jobqueue.executor_batch`), two
//! transactions:
//! 1. the claim (`job._claim_handler_jobs`): the jobs become running with a lease of the
//!    handler's timeout plus a margin, as many as leave the queue within its `concurrency`.
//!    Committed asynchronously: if the server crashes before it is flushed the jobs simply
//!    are not claimed; what must be durable is the outcome.
//! 2. the run: each handler call runs in a subtransaction of its own, as `run_as`, under the
//!    handler's timeout, and its job is completed in that subtransaction
//!    (`job._complete_handler_job`), so a handler's writes and its job's completion commit
//!    together, and a failing call rolls back only its own writes; its job is then failed
//!    through `job.fail` (classified by SQLSTATE, `classify::classify_sqlstate`) in the same
//!    transaction.  The whole batch commits once, as `run_as`, so that triggers fired at
//!    commit (deferred constraint triggers) have that role's rights, never the executor's
//!    superuser rights.  `SET ROLE` and `SET SESSION AUTHORIZATION` are refused throughout.
//!
//! Batches are sized to take about [`BATCH_TIME`] (one job when handlers are slow, so nothing
//! waits behind a slow call), and no call starts later than [`BATCH_START_LIMIT`] after the
//! first (the rest are handed back with `job.release`), so every job of a batch commits well
//! within its lease.  Should the batch's commit fail (a deferred trigger raised, say), each of
//! its jobs runs again alone, in a transaction of its own, which pins the failure on its job.
//! If the executor dies mid-batch, nothing of the batch commits; the scheduler takes its jobs
//! back at once (their `claimed_by` names a process that is gone), as it does for any stalled
//! job.

use super::{sleep, spi, tick, transaction, WorkError};
use crate::server::gucs;
use crate::server::security::as_role;
use crate::server::shmem::{self, Kind};
use pg_jobqueue_rules::claimer::{claimed_by, Claimer};
use pg_jobqueue_rules::classify::{classify_sqlstate, Failure};
use pgrx::bgworkers::{BackgroundWorker, SignalWakeFlags};
use pgrx::prelude::*;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

extern "C-unwind" {
    // utils/timeout.h, not among pgrx's bindings.
    fn enable_timeout_after(id: std::ffi::c_int, delay_ms: std::ffi::c_int);
    fn disable_timeout(id: std::ffi::c_int, keep_indicator: bool);
}
/// `STATEMENT_TIMEOUT` in PostgreSQL's `TimeoutId` enum.  SPI does not arm
/// statement_timeout (only the client protocol loop does), so the executor arms it.
const STATEMENT_TIMEOUT: std::ffi::c_int = 3;

/// What a handler's code sees as its search path (its function's own SET clause wins).
const HANDLER_SEARCH_PATH: &str =
    "SELECT pg_catalog.set_config('search_path', '\"$user\", public', true)";

/// How long a batch should take: long enough to spread one commit over many fast jobs,
/// short enough that their completions become visible soon.
const BATCH_TIME: Duration = Duration::from_millis(50);
/// No handler call of a batch starts later than this after the batch began: a claim's lease
/// is the handler's timeout plus 30 seconds, so every job still commits within its lease.
const BATCH_START_LIMIT: Duration = Duration::from_secs(1);

struct Claimed {
    job_id: i64,
    token: pgrx::datum::Uuid,
    payload: String,
    handler_call: String,
    returns_jsonb: bool,
    timeout_ms: i64,
}

enum Claim {
    /// Jobs of one handler queue (so one handler, one timeout), in claim order.
    Jobs(Vec<Claimed>),
    Idle,
    /// The extension is gone, or this role has no handlers (or no longer needs this
    /// executor): nothing for it to do.
    Retire,
}

/// The executor's main argument is its database; its extra, "<role oid>:<index>".
pub fn extra(run_as: pg_sys::Oid, index: usize) -> String {
    format!("{}:{index}", run_as.to_u32())
}

fn parse_extra(extra: &str) -> Option<(pg_sys::Oid, usize)> {
    let (role, index) = extra.split_once(':')?;
    Some((
        pg_sys::Oid::from(role.parse::<u32>().ok()?),
        index.parse().ok()?,
    ))
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn pg_jobqueue_executor_main(arg: pg_sys::Datum) {
    let db = super::database_argument(arg);
    let Some((run_as, index)) = parse_extra(BackgroundWorker::get_extra()) else {
        log!("pg_jobqueue executor: bad start argument; exiting");
        return;
    };
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    BackgroundWorker::connect_worker_to_spi_by_oid(Some(db), None);
    shmem::register_process(db, Kind::Executor);
    // SAFETY: MyProcPid is set at process start.
    let worker = claimed_by(
        Claimer::Executor {
            run_as: run_as.to_u32(),
            index,
        },
        unsafe { pg_sys::MyProcPid },
    );
    if let Err(e) = transaction(super::pin_search_path) {
        log!("pg_jobqueue executor: {e}");
        return;
    }
    let mut me = Executor {
        worker,
        run_as,
        index,
        wanted_checked: None,
        handler_ran: false,
        seconds_per_job: None,
    };

    loop {
        super::reload_config_if_asked();
        if !gucs::ENABLED.get() {
            break;
        }
        match transaction(|| me.claim()) {
            Ok(claimed) => {
                me.handler_ran = false; // the claim's transaction reset the settings
                match claimed {
                    Claim::Jobs(jobs) => me.run(&jobs),
                    Claim::Retire => break,
                    Claim::Idle => {
                        if !sleep(idle_wait(run_as)) {
                            break;
                        }
                    }
                }
            }
            Err(e) => {
                log!("pg_jobqueue executor: claiming a job failed: {e}");
                if !sleep(tick()) {
                    break;
                }
            }
        }
        if BackgroundWorker::sigterm_received() {
            break;
        }
    }
}

/// An executor's state between its transactions.
struct Executor {
    worker: String,
    run_as: pg_sys::Oid,
    index: usize,
    /// When the executor last checked that its role still needs it.
    wanted_checked: Option<Instant>,
    /// A handler ran since the session's settings were last reset.
    handler_ran: bool,
    /// How long a job of this executor's batches takes (a moving average); None before the
    /// first batch.
    seconds_per_job: Option<f64>,
}

/// How often an executor checks that its role still needs it (it costs a query).
const WANTED_CHECK_INTERVAL: Duration = Duration::from_secs(1);

impl Executor {
    fn claim(&mut self) -> Claim {
        if self.handler_ran {
            reset_settings();
        }
        if !super::extension_installed() {
            return Claim::Retire;
        }
        if self
            .wanted_checked
            .is_none_or(|t| t.elapsed() >= WANTED_CHECK_INTERVAL)
        {
            let wanted = spi(Spi::get_one_with_args::<i32>(
                "SELECT (SELECT w.executors FROM job._executors_wanted($1) w
                          WHERE w.run_as::pg_catalog.oid OPERATOR(pg_catalog.=) $2)",
                &[gucs::EXECUTORS.get().into(), self.run_as.into()],
            ));
            if wanted.is_none_or(|n| self.index >= n.max(0) as usize) {
                return Claim::Retire;
            }
            self.wanted_checked = Some(Instant::now());
        }
        spi(Spi::run("SET LOCAL synchronous_commit = off"));
        let batch = batch_size(self.seconds_per_job, gucs::EXECUTOR_BATCH.get());
        let claimed = Spi::connect_mut(|client| {
            client
                .update(
                    "SELECT job_id, token, payload::pg_catalog.text AS payload,
                            pg_catalog.format('%I.%I', handler_schema, handler_name) AS handler_call,
                            returns_jsonb, timeout_ms
                       FROM job._claim_handler_jobs($1, $2::pg_catalog.regrole, $3)",
                    None,
                    &[self.worker.as_str().into(), self.run_as.into(), batch.into()],
                )?
                // By name, as the claim's columns are called: a column renamed or moved
                // fails here instead of filling another field.
                .map(|row| {
                    Ok(Claimed {
                        job_id: row.get_by_name("job_id")?.unwrap_or_default(),
                        token: row
                            .get_by_name("token")?
                            .unwrap_or_else(|| pgrx::datum::Uuid::from_bytes([0; 16])),
                        payload: row.get_by_name("payload")?.unwrap_or_default(),
                        handler_call: row.get_by_name("handler_call")?.unwrap_or_default(),
                        returns_jsonb: row.get_by_name("returns_jsonb")?.unwrap_or_default(),
                        timeout_ms: row.get_by_name("timeout_ms")?.unwrap_or(0),
                    })
                })
                .collect::<Result<Vec<_>, pgrx::spi::Error>>()
        });
        let jobs = spi(claimed);
        if jobs.is_empty() {
            Claim::Idle
        } else {
            Claim::Jobs(jobs)
        }
    }

    /// Runs a claimed batch: in one transaction, or, should that fail as a whole, job by job.
    fn run(&mut self, jobs: &[Claimed]) {
        self.handler_ran = true;
        let started = Instant::now();
        match run_batch(jobs, self.run_as) {
            Ok(ran) => {
                let per_job = started.elapsed().as_secs_f64() / ran.max(1) as f64;
                self.seconds_per_job = Some(moving_average(self.seconds_per_job, per_job));
            }
            Err(error) => {
                if jobs.len() > 1 {
                    debug1!("pg_jobqueue executor: a batch of {} jobs failed at commit ({error}); running them one by one", jobs.len());
                }
                // Alone, a job's failure is its own: it is recorded in a transaction that
                // resets the settings first.
                for job in jobs {
                    let outcome = match run_batch(std::slice::from_ref(job), self.run_as) {
                        Ok(_) => continue,
                        Err(e) => e,
                    };
                    if record_failure(job, &outcome) {
                        self.handler_ran = false;
                    }
                }
                // A batch that failed says nothing of a job's time; batches start small again.
                self.seconds_per_job = None;
            }
        }
    }
}

/// How many jobs to claim: enough to take about [`BATCH_TIME`] at `seconds_per_job`, within
/// 1 and `max`; one while nothing is known yet.
fn batch_size(seconds_per_job: Option<f64>, max: i32) -> i32 {
    let max = max.max(1);
    match seconds_per_job {
        Some(s) if s > 0.0 => (BATCH_TIME.as_secs_f64() / s).clamp(1.0, f64::from(max)) as i32,
        Some(_) => max,
        None => 1,
    }
}

/// The moving average of a job's time, giving the newest batch a quarter of the weight.
fn moving_average(average: Option<f64>, newest: f64) -> f64 {
    match average {
        Some(a) => a * 0.75 + newest * 0.25,
        None => newest,
    }
}

/// Until the earliest delayed or backing-off job of this role's handler queues is due, at
/// most a tick.  Jobs that become ready by a commit wake the executor at once (see
/// `wakeup.rs`).
fn idle_wait(run_as: pg_sys::Oid) -> Duration {
    super::until(super::next_due(
        "executor",
        "SELECT job._next_handler_job_due($1::pg_catalog.regrole)",
        &[run_as.into()],
    ))
}

/// Runs a batch's handler calls, each in a subtransaction with its job's completion (or its
/// failure recorded when it raised), and commits them together; returns how many calls
/// started.  The error when the batch failed as a whole (its commit, or recording a
/// failure): the transaction is rolled back, and the jobs are still claimed.
fn run_batch(jobs: &[Claimed], run_as: pg_sys::Oid) -> Result<usize, WorkError> {
    let mut saved_user = pg_sys::InvalidOid;
    let mut saved_context = 0;
    // SAFETY: reads the executor's own identity, restored after the transaction.
    unsafe { pg_sys::GetUserIdAndSecContext(&mut saved_user, &mut saved_context) };
    let started = Instant::now();
    let outcome = transaction(|| {
        let mut ran = 0;
        for (i, job) in jobs.iter().enumerate() {
            if i > 0 && started.elapsed() >= BATCH_START_LIMIT {
                release(&jobs[i..]);
                break;
            }
            ran += 1;
            let call = subtransaction(|| {
                arm_timeout(job.timeout_ms);
                let result = as_role(run_as, || call_handler(job));
                complete(job, result);
            });
            disarm_timeout();
            if let Err(error) = call {
                fail(job, &error);
            }
        }
        // Commit as run_as: deferred triggers the handlers queued fire with its rights, under
        // the search path a handler sees, and within a handler's timeout.  The abort of a
        // failed commit restores the user.
        arm_timeout(jobs[0].timeout_ms);
        spi(Spi::run(HANDLER_SEARCH_PATH));
        // SAFETY: switched back to the executor's identity right after the commit, below.
        unsafe {
            pg_sys::SetUserIdAndSecContext(
                run_as,
                saved_context | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32,
            )
        };
        ran
    });
    // SAFETY: the executor's own identity again (a successful commit does not restore it).
    unsafe { pg_sys::SetUserIdAndSecContext(saved_user, saved_context) };
    disarm_timeout();
    outcome
}

/// Arms statement_timeout for a handler call, or for the commit-time work handlers leave.
fn arm_timeout(timeout_ms: i64) {
    // SAFETY: disarmed by disarm_timeout whatever happens.
    unsafe {
        enable_timeout_after(
            STATEMENT_TIMEOUT,
            timeout_ms.clamp(1, i32::MAX as i64) as i32,
        )
    };
}

/// Disarms the timeout, and forgets a cancel it raised that nothing consumed.
fn disarm_timeout() {
    // SAFETY: disarming an unarmed timeout is a no-op.
    unsafe {
        disable_timeout(STATEMENT_TIMEOUT, false);
        pg_sys::QueryCancelPending = 0;
    }
}

/// Completes a job in the subtransaction its handler ran in, or raises when the claim is no
/// longer the job's: then the handler's writes must not commit either.
fn complete(job: &Claimed, result: Option<String>) {
    let completed = spi(Spi::get_one_with_args::<bool>(
        "SELECT job._complete_handler_job($1, $2, $3::pg_catalog.jsonb)",
        &[job.job_id.into(), job.token.into(), result.into()],
    ));
    if completed != Some(true) {
        // Cancelled meanwhile, or taken back: the attempt is not ours to finish.
        error!(
            "job {} is no longer held by this executor (cancelled, or its lease ran out); \
             the handler's work is rolled back",
            job.job_id
        );
    }
}

/// Hands jobs back that a batch had no time left to start: ready again in their place, no
/// attempt spent.
fn release(jobs: &[Claimed]) {
    for job in jobs {
        spi(Spi::run_with_args(
            "SELECT job.release($1, $2)",
            &[job.job_id.into(), job.token.into()],
        ));
    }
}

/// Runs `body` in a subtransaction: committed (released) when it returns, rolled back when
/// it raises, and the error comes back as `Err`; the enclosing transaction goes on either way.
fn subtransaction<R>(body: impl FnOnce() -> R) -> Result<R, WorkError> {
    // SAFETY: the sequence PL/pgSQL uses for an exception block: memory context and resource
    // owner are the transaction's again on either path.
    let (context, owner) = unsafe {
        let saved = (pg_sys::CurrentMemoryContext, pg_sys::CurrentResourceOwner);
        pg_sys::BeginInternalSubTransaction(std::ptr::null());
        pg_sys::MemoryContextSwitchTo(saved.0);
        saved
    };
    let body = AssertUnwindSafe(body);
    let outcome = PgTryBuilder::new(move || {
        let result = body();
        // SAFETY: commits the subtransaction begun above.
        unsafe { pg_sys::ReleaseCurrentSubTransaction() };
        Ok(result)
    })
    .catch_others(|caught| Err(super::work_error(caught)))
    .execute();
    // SAFETY: as above; the rollback undoes the subtransaction's writes, locks, user id and
    // settings.
    unsafe {
        if outcome.is_err() {
            pg_sys::RollbackAndReleaseCurrentSubTransaction();
        }
        pg_sys::MemoryContextSwitchTo(context);
        pg_sys::CurrentResourceOwner = owner;
    }
    outcome
}

/// Every setting back to its default (as RESET ALL does), then the executor's pinned search
/// path.  Settings a commit-time trigger of a handler's transaction made at session level
/// survive that commit; none may steer the executor's own statements, which run as the
/// superuser: after a handler ran, the executor's next transaction begins with this, before
/// any statement (and until one that did commits, every next one does).
fn reset_settings() {
    // SAFETY: RESET ALL's own routine, inside a transaction, as the executor's superuser.
    unsafe { pg_sys::ResetAllOptions() };
    super::pin_search_path();
}

/// Calls the handler (the caller has switched to its role); returns its result as JSON text.
///
/// Whatever settings the handler changes, even with a session-level `SET`, are undone when it
/// returns (a GUC nest level rolled back like an aborted subtransaction's): they must not
/// reach the executor's own statements or the next job.
fn call_handler(job: &Claimed) -> Option<String> {
    // SAFETY: a nest level closed below; an error aborts the transaction, which closes it.
    let nest_level = unsafe { pg_sys::NewGUCNestLevel() };
    spi(Spi::run(HANDLER_SEARCH_PATH));
    let args = [job.payload.as_str().into()];
    let result = if job.returns_jsonb {
        spi(Spi::get_one_with_args::<String>(
            &format!(
                "SELECT {}($1::pg_catalog.jsonb)::pg_catalog.text",
                job.handler_call
            ),
            &args,
        ))
    } else {
        spi(Spi::run_with_args(
            &format!("SELECT {}($1::pg_catalog.jsonb)", job.handler_call),
            &args,
        ));
        None
    };
    // SAFETY: undoes the handler's settings, restoring the executor's pinned search path.
    unsafe { pg_sys::AtEOXact_GUC(false, nest_level) };
    result
}

/// Fails a job whose handler call raised, through `job.fail`'s rules (its SQLSTATE kept).
fn fail(job: &Claimed, error: &WorkError) {
    let permanent = classify_sqlstate(&error.sqlstate, &error.message) == Failure::Permanent;
    let state = spi(Spi::get_one_with_args::<String>(
        "SELECT job._fail_handler_job($1, $2, $3, $4, $5)",
        &[
            job.job_id.into(),
            job.token.into(),
            error.sqlstate.as_str().into(),
            error.message.as_str().into(),
            permanent.into(),
        ],
    ));
    let outcome = state.map_or_else(
        || "not recorded: the claim is no longer its".to_owned(),
        |state| format!("now {state}"),
    );
    debug1!(
        "pg_jobqueue executor: job {} failed ({error}); {outcome}",
        job.job_id
    );
}

/// Fails a job that failed alone in a transaction that resets the session's settings first;
/// true when it committed (and with it that reset).
fn record_failure(job: &Claimed, error: &WorkError) -> bool {
    let recorded = transaction(|| {
        reset_settings();
        fail(job, error);
    });
    match recorded {
        Ok(()) => true,
        // The lease brings the job back.
        Err(e) => {
            log!(
                "pg_jobqueue executor: recording the failure of job {} failed: {e}",
                job.job_id
            );
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{extra, parse_extra};
    use pgrx::pg_sys::Oid;

    #[test]
    fn the_start_argument_round_trips() {
        assert_eq!(
            parse_extra(&extra(Oid::from(16384), 3)),
            Some((Oid::from(16384), 3))
        );
        assert_eq!(parse_extra("x:1"), None);
        assert_eq!(parse_extra(""), None);
    }
}
