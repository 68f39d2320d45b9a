//! An executor: claims jobs of handler queues and calls `handler(payload jsonb)`.
//!
//! Per job, two transactions:
//! 1. the claim (`job._claim_handler_job`): the job becomes running with a lease of the
//!    handler's timeout plus a margin, and the executor holds one of the queue's concurrency
//!    slots.  Committed asynchronously: if the server crashes before it is flushed the job
//!    simply is not claimed; what must be durable is the outcome.
//! 2. the run: the handler is called as the role that set it (it cannot SET ROLE its way
//!    back) under `statement_timeout = timeout`, and `job.complete` records its result in
//!    the same transaction, so a handler's writes and its job's completion commit together.
//!
//! When the run fails, its transaction is rolled back and a third one fails the job through
//! `job.fail`, classified by SQLSTATE (`classify::classify_sqlstate`).  If the executor
//! dies mid-run, the lease expires and the job is rescued like any stalled job.

use super::registry::{self, Kind};
use super::{sleep, spi, tick, transaction, WorkError};
use crate::classify::{classify_sqlstate, Failure};
use crate::gucs;
use pgrx::bgworkers::{BackgroundWorker, SignalWakeFlags};
use pgrx::prelude::*;
use std::time::Duration;

extern "C-unwind" {
    // utils/timeout.h, not among pgrx's bindings.
    fn enable_timeout_after(id: std::ffi::c_int, delay_ms: std::ffi::c_int);
    fn disable_timeout(id: std::ffi::c_int, keep_indicator: bool);
}
/// `STATEMENT_TIMEOUT` in PostgreSQL's `TimeoutId` enum.  SPI does not arm
/// statement_timeout (only the client protocol loop does), so the executor arms it.
const STATEMENT_TIMEOUT: std::ffi::c_int = 3;

struct Claimed {
    job_id: i64,
    payload: String,
    handler_call: String,
    returns_jsonb: bool,
    run_as: pg_sys::Oid,
    timeout_ms: i64,
    slot_key: i32,
}

enum Claim {
    Job(Claimed),
    Idle,
    /// The extension is gone or there are no handlers: nothing for an executor to do.
    Retire,
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn pg_jobqueue_executor_main(arg: pg_sys::Datum) {
    let db = super::database_argument(arg);
    let index: i32 = BackgroundWorker::get_extra().parse().unwrap_or(0);
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    BackgroundWorker::connect_worker_to_spi_by_oid(Some(db), None);
    registry::register_process(db, Kind::Executor);
    // SAFETY: MyProcPid is set at process start.
    let worker = format!("pg_jobqueue executor {index} (pid {})", unsafe {
        pg_sys::MyProcPid
    });
    if let Err(e) = transaction(super::pin_search_path) {
        log!("pg_jobqueue executor: {e}");
        return;
    }

    loop {
        super::reload_config_if_asked();
        if !gucs::ENABLED.get() || index >= gucs::EXECUTORS.get() {
            break;
        }
        match transaction(|| claim(&worker)) {
            Ok(Claim::Job(job)) => run(job),
            Ok(Claim::Retire) => break,
            Ok(Claim::Idle) => {
                if !sleep(idle_wait()) {
                    break;
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

fn claim(worker: &str) -> Claim {
    if !super::extension_installed() {
        return Claim::Retire;
    }
    spi(Spi::run("SET LOCAL synchronous_commit = off"));
    let claimed = Spi::connect_mut(|client| {
        let rows = client.update(
            "SELECT job_id, payload::text, pg_catalog.format('%I.%I', handler_schema, handler_name),
                    returns_jsonb, run_as, timeout_ms, slot_key
               FROM job._claim_handler_job($1)",
            Some(1),
            &[worker.into()],
        )?;
        let Some(row) = rows.into_iter().next() else {
            return Ok::<_, pgrx::spi::Error>(None);
        };
        Ok(Some(Claimed {
            job_id: row.get(1)?.unwrap_or_default(),
            payload: row.get(2)?.unwrap_or_default(),
            handler_call: row.get(3)?.unwrap_or_default(),
            returns_jsonb: row.get(4)?.unwrap_or_default(),
            run_as: row.get(5)?.unwrap_or(pg_sys::InvalidOid),
            timeout_ms: row.get(6)?.unwrap_or(0),
            slot_key: row.get(7)?.unwrap_or(0),
        }))
    });
    match spi(claimed) {
        Some(job) => Claim::Job(job),
        None if spi(Spi::get_one::<bool>(
            "SELECT EXISTS (SELECT 1 FROM job.handlers)",
        )) == Some(true) =>
        {
            Claim::Idle
        }
        None => Claim::Retire,
    }
}

/// Until the earliest delayed or backing-off job of a handler queue is due, at most a tick.
/// Jobs that become ready by a commit wake the executor at once (see `wakeup.rs`).
fn idle_wait() -> Duration {
    super::wait_until_due("executor", "SELECT job._next_handler_job_due()")
}

fn run(job: Claimed) {
    let outcome = transaction(|| {
        let result = call_handler(&job);
        spi(Spi::get_one_with_args::<bool>(
            "SELECT job.complete($1, $2::jsonb)",
            &[job.job_id.into(), result.into()],
        ));
        release_slot(job.slot_key);
    });
    // SAFETY: the timeout may still be armed when the handler raised.
    unsafe {
        disable_timeout(STATEMENT_TIMEOUT, false);
        pg_sys::QueryCancelPending = 0;
    }
    if let Err(error) = outcome {
        record_failure(&job, &error);
    }
}

/// Calls the handler as its role under its timeout; returns its result as JSON text.
///
/// Whatever settings the handler changes, even with a session-level `SET`, are undone when it
/// returns (a GUC nest level rolled back like an aborted subtransaction's): they must not
/// leak into the executor's own statements, which run as superuser, or into the next job.
fn call_handler(job: &Claimed) -> Option<String> {
    // SAFETY: a nest level closed below; an error aborts the transaction, which closes it.
    let nest_level = unsafe { pg_sys::NewGUCNestLevel() };
    // A handler sees an ordinary session's default path (its own SET clause still wins).
    spi(Spi::run(
        "SELECT pg_catalog.set_config('search_path', '\"$user\", public', true)",
    ));
    let mut saved_user = pg_sys::InvalidOid;
    let mut saved_context = 0;
    // SAFETY: switches the current user the way SECURITY DEFINER functions do; restored
    // below, or by the transaction abort should the handler raise.
    unsafe {
        pg_sys::GetUserIdAndSecContext(&mut saved_user, &mut saved_context);
        pg_sys::SetUserIdAndSecContext(
            job.run_as,
            saved_context | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32,
        );
        enable_timeout_after(
            STATEMENT_TIMEOUT,
            job.timeout_ms.clamp(1, i32::MAX as i64) as i32,
        );
    }
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
    // SAFETY: undoes the switches above, innermost first.
    unsafe {
        disable_timeout(STATEMENT_TIMEOUT, false);
        pg_sys::SetUserIdAndSecContext(saved_user, saved_context);
        pg_sys::AtEOXact_GUC(false, nest_level);
    }
    result
}

fn release_slot(slot_key: i32) {
    spi(Spi::run_with_args(
        "SELECT job._release_handler_slot($1)",
        &[slot_key.into()],
    ));
}

fn record_failure(job: &Claimed, error: &WorkError) {
    let permanent = classify_sqlstate(&error.sqlstate, &error.message) == Failure::Permanent;
    let recorded = transaction(|| {
        let state = spi(Spi::get_one_with_args::<String>(
            "SELECT job._fail_handler_job($1, $2, $3, $4)",
            &[
                job.job_id.into(),
                error.sqlstate.as_str().into(),
                error.message.as_str().into(),
                permanent.into(),
            ],
        ));
        release_slot(job.slot_key);
        state
    });
    match recorded {
        Ok(state) => debug1!(
            "pg_jobqueue executor: job {} failed ({error}); now {}",
            job.job_id,
            state.unwrap_or_default()
        ),
        Err(e) => {
            log!(
                "pg_jobqueue executor: recording the failure of job {} failed: {e}",
                job.job_id
            );
            // Free the slot however we can; the lease brings the job back.
            let _ = transaction(|| spi(Spi::run("SELECT pg_advisory_unlock_all()")));
        }
    }
}
