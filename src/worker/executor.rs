//! An executor: claims jobs of handler queues and calls `handler(payload jsonb)`.
//!
//! Each executor serves one `run_as` role for its whole life: it only ever runs that role's
//! handlers, so whatever a handler leaves in the session (temporary objects, prepared
//! statements, dblink connections, session advisory locks) can only meet that same role's
//! handlers later, never another role's.  The scheduler keeps executors per role.
//!
//! Per job, two transactions:
//! 1. the claim (`job._claim_handler_job`): the job becomes running with a lease of the
//!    handler's timeout plus a margin, if its queue has fewer than `concurrency` jobs
//!    running.  Committed asynchronously: if the server crashes before it is flushed the job
//!    simply is not claimed; what must be durable is the outcome.
//! 2. the run: the whole transaction runs as `run_as`, commit included, so that triggers
//!    fired at commit (deferred constraint triggers) have that role's rights, never the
//!    executor's superuser rights.  Only the completion (`job._complete_handler_job`, which
//!    records the handler's result in the same transaction, so a handler's writes and its
//!    job's completion commit together) runs as the executor, after the handler's settings
//!    were rolled back.  `SET ROLE` and `SET SESSION AUTHORIZATION` are refused throughout.
//!
//! When the run fails, its transaction is rolled back and a third one fails the job through
//! `job.fail`, classified by SQLSTATE (`classify::classify_sqlstate`).  If the executor
//! dies mid-run, the lease expires and the job is rescued like any stalled job.

use super::{sleep, spi, tick, transaction, WorkError};
use crate::classify::{classify_sqlstate, Failure};
use crate::gucs;
use crate::security::as_role;
use crate::shmem::{self, Kind};
use pgrx::bgworkers::{BackgroundWorker, SignalWakeFlags};
use pgrx::prelude::*;
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

struct Claimed {
    job_id: i64,
    token: pgrx::datum::Uuid,
    payload: String,
    handler_call: String,
    returns_jsonb: bool,
    timeout_ms: i64,
}

enum Claim {
    Job(Claimed),
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
    let worker = format!(
        "pg_jobqueue executor {}/{index} (pid {})",
        run_as.to_u32(),
        unsafe { pg_sys::MyProcPid }
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
                    Claim::Job(job) => {
                        me.handler_ran = true;
                        // A failure is recorded in a transaction that resets the settings first.
                        if let Err(error) = run(&job, run_as) {
                            if record_failure(&job, &error) {
                                me.handler_ran = false;
                            }
                        }
                    }
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
        let claimed = Spi::connect_mut(|client| {
            let rows = client.update(
                "SELECT job_id, token, payload::pg_catalog.text,
                        pg_catalog.format('%I.%I', handler_schema, handler_name), returns_jsonb, timeout_ms
                   FROM job._claim_handler_job($1, $2::pg_catalog.regrole)",
                Some(1),
                &[self.worker.as_str().into(), self.run_as.into()],
            )?;
            let Some(row) = rows.into_iter().next() else {
                return Ok::<_, pgrx::spi::Error>(None);
            };
            Ok(Some(Claimed {
                job_id: row.get(1)?.unwrap_or_default(),
                token: row
                    .get(2)?
                    .unwrap_or_else(|| pgrx::datum::Uuid::from_bytes([0; 16])),
                payload: row.get(3)?.unwrap_or_default(),
                handler_call: row.get(4)?.unwrap_or_default(),
                returns_jsonb: row.get(5)?.unwrap_or_default(),
                timeout_ms: row.get(6)?.unwrap_or(0),
            }))
        });
        match spi(claimed) {
            Some(job) => Claim::Job(job),
            None => Claim::Idle,
        }
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

/// Runs a claimed job's handler and completes the job, in one transaction; the error when
/// either failed (the transaction is rolled back).
fn run(job: &Claimed, run_as: pg_sys::Oid) -> Result<(), WorkError> {
    let mut saved_user = pg_sys::InvalidOid;
    let mut saved_context = 0;
    // SAFETY: reads the executor's own identity, restored after the transaction.
    unsafe { pg_sys::GetUserIdAndSecContext(&mut saved_user, &mut saved_context) };
    let outcome = transaction(|| {
        // SAFETY: armed for the handler and for the commit-time work it may leave behind;
        // disarmed below whatever happens.
        unsafe {
            enable_timeout_after(
                STATEMENT_TIMEOUT,
                job.timeout_ms.clamp(1, i32::MAX as i64) as i32,
            )
        };
        let result = as_role(run_as, || call_handler(job));
        let completed = spi(Spi::get_one_with_args::<bool>(
            "SELECT job._complete_handler_job($1, $2, $3::pg_catalog.jsonb)",
            &[job.job_id.into(), job.token.into(), result.into()],
        ));
        if completed != Some(true) {
            // Cancelled meanwhile, or taken back: the attempt is not ours to finish, and the
            // handler's writes must not commit without it.
            error!(
                "job {} is no longer held by this executor (cancelled, or its lease ran out); \
                 the handler's work is rolled back",
                job.job_id
            );
        }
        // Commit as run_as: deferred triggers the handler queued fire with its rights, under
        // the search path a handler sees.  The abort of a failed commit restores the user.
        spi(Spi::run(HANDLER_SEARCH_PATH));
        // SAFETY: switched back to the executor's identity right after the commit, below.
        unsafe {
            pg_sys::SetUserIdAndSecContext(
                run_as,
                saved_context | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32,
            )
        };
    });
    // SAFETY: the executor's own identity again (a successful commit does not restore it), and
    // the timeout may still be armed.
    unsafe {
        pg_sys::SetUserIdAndSecContext(saved_user, saved_context);
        disable_timeout(STATEMENT_TIMEOUT, false);
        pg_sys::QueryCancelPending = 0;
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

/// Fails the job through `job.fail`'s rules; true when that transaction committed (and with
/// it the reset of the session's settings it begins with).
fn record_failure(job: &Claimed, error: &WorkError) -> bool {
    let permanent = classify_sqlstate(&error.sqlstate, &error.message) == Failure::Permanent;
    let recorded = transaction(|| {
        reset_settings();
        spi(Spi::get_one_with_args::<String>(
            "SELECT job._fail_handler_job($1, $2, $3, $4, $5)",
            &[
                job.job_id.into(),
                job.token.into(),
                error.sqlstate.as_str().into(),
                error.message.as_str().into(),
                permanent.into(),
            ],
        ))
    });
    match recorded {
        Ok(state) => {
            debug1!(
                "pg_jobqueue executor: job {} failed ({error}); now {}",
                job.job_id,
                state.unwrap_or_default()
            );
            true
        }
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
