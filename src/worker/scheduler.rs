//! A database's scheduler: fires due schedules, runs maintenance and keeps the executors
//! running while the database has handlers.
//!
//! It sleeps until the earliest schedule is due (at most one tick), so a schedule fires
//! within milliseconds of its time.  Each step is a transaction of its own, bounded in rows.

use super::registry::{self, Kind};
use super::{sleep, spi, start_database_worker, transaction};
use crate::gucs;
use pgrx::bgworkers::{
    BackgroundWorker, BackgroundWorkerStatus, DynamicBackgroundWorker, SignalWakeFlags,
};
use pgrx::prelude::*;
use std::time::{Duration, Instant};

/// Schedules fired per transaction; more due ones are fired in the next.
const SCHEDULES_PER_TRANSACTION: i32 = 100;
/// Transactions per maintenance step and round: each step is bounded even when a backlog
/// of work waits (the next round continues).
const MAX_BATCHES_PER_STEP: usize = 10;

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn pg_jobqueue_scheduler_main(arg: pg_sys::Datum) {
    let db = super::database_argument(arg);
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    BackgroundWorker::connect_worker_to_spi_by_oid(Some(db), None);
    registry::register_process(db, Kind::Scheduler);

    match transaction(|| {
        super::pin_search_path();
        super::installed_version()
    }) {
        Ok(Some(version)) if version == super::LIBRARY_VERSION => {}
        Ok(Some(version)) => {
            log!(
                "pg_jobqueue scheduler: this database has pg_jobqueue {version} and the library is {}: \
                 run ALTER EXTENSION pg_jobqueue UPDATE to start its worker",
                super::LIBRARY_VERSION
            );
            registry::decline(db);
            return;
        }
        Ok(None) => {
            registry::decline(db);
            return;
        }
        Err(e) => {
            log!("pg_jobqueue scheduler: could not look for the extension: {e}");
            return;
        }
    }
    log!("pg_jobqueue scheduler started");

    let mut executors: Vec<Option<DynamicBackgroundWorker>> = Vec::new();
    let mut next_maintenance = Instant::now();
    loop {
        super::reload_config_if_asked();
        if !gucs::ENABLED.get() {
            break;
        }
        match transaction(super::installed_version) {
            Ok(Some(version)) if version == super::LIBRARY_VERSION => {}
            Ok(_) => {
                log!(
                    "pg_jobqueue scheduler: the extension was dropped or changed version; stopping"
                );
                registry::decline(db);
                break;
            }
            Err(e) => log!("pg_jobqueue scheduler: {e}"),
        }

        fire_due_schedules();
        if Instant::now() >= next_maintenance {
            run_maintenance();
            next_maintenance = Instant::now() + maintenance_interval();
        }
        supervise_executors(db, &mut executors);

        let until_due = super::wait_until_due("scheduler", "SELECT job._next_schedule_due()");
        let wait = until_due.min(next_maintenance.saturating_duration_since(Instant::now()));
        if !sleep(wait) {
            break;
        }
    }
    // Executors notice on their own (they check the setting and the extension).
    log!("pg_jobqueue scheduler stopping");
}

fn maintenance_interval() -> Duration {
    Duration::from_millis(gucs::MAINTENANCE_INTERVAL_MS.get().max(1) as u64)
}

fn fire_due_schedules() {
    for _ in 0..MAX_BATCHES_PER_STEP {
        let fired = transaction(|| {
            spi(Spi::get_one_with_args::<i32>(
                "SELECT job._fire_due_schedules($1)",
                &[SCHEDULES_PER_TRANSACTION.into()],
            ))
        });
        match fired {
            Ok(Some(n)) if n >= SCHEDULES_PER_TRANSACTION => continue,
            Ok(_) => return,
            Err(e) => {
                log!("pg_jobqueue scheduler: firing schedules failed: {e}");
                return;
            }
        }
    }
}

/// One maintenance round: rescue stalled jobs, apply retention (which also expires
/// idempotency keys), prune schedule history, merge and fold old metric buckets, prune the audit
/// log, each in batches of pg_jobqueue.maintenance_batch rows per transaction; then count
/// the live jobs per queue for the metrics.
fn run_maintenance() {
    let batch = i64::from(gucs::MAINTENANCE_BATCH.get());
    let keep = i64::from(gucs::SCHEDULE_HISTORY.get());
    let audit_days = i64::from(gucs::AUDIT_RETENTION_DAYS.get());
    let steps: [(&str, &str, [i64; 2]); 6] = [
        (
            "rescue stalled jobs",
            "SELECT job.rescue_stalled(NULL, $1::int)::bigint",
            [batch, 0],
        ),
        (
            "apply retention",
            "SELECT job.apply_retention($1::int)",
            [batch, 0],
        ),
        (
            "prune schedule history",
            "SELECT job._prune_schedule_runs($2::int, $1::int)::bigint",
            [batch, keep],
        ),
        (
            "merge metric shards",
            "SELECT job._compact_metric_buckets($1::int)::bigint",
            [batch, 0],
        ),
        (
            "fold metric buckets",
            "SELECT job._fold_metric_buckets($1::int)::bigint",
            [batch, 0],
        ),
        (
            "prune the audit log",
            "SELECT job._prune_audit_log(make_interval(days => $2::int), $1::int)::bigint",
            [batch, audit_days],
        ),
    ];
    for (what, sql, args) in steps {
        let mut total = 0i64;
        for _ in 0..MAX_BATCHES_PER_STEP {
            let params = args.map(|a| a.into());
            match transaction(|| spi(Spi::get_one_with_args::<i64>(sql, &params))) {
                Ok(n) => {
                    let n = n.unwrap_or(0);
                    total += n;
                    if n < batch {
                        break;
                    }
                }
                Err(e) => {
                    log!("pg_jobqueue scheduler: {what} failed: {e}");
                    break;
                }
            }
        }
        if total > 0 {
            debug1!("pg_jobqueue scheduler: {what}: {total} rows");
        }
    }
    if let Err(e) = transaction(|| spi(Spi::run("SELECT job._count_queue_depth()"))) {
        log!("pg_jobqueue scheduler: counting queue depth failed: {e}");
    }
}

/// Keeps pg_jobqueue.executors executors running while the database has handlers.
fn supervise_executors(db: pg_sys::Oid, executors: &mut Vec<Option<DynamicBackgroundWorker>>) {
    let has_handlers = match transaction(|| {
        spi(Spi::get_one::<bool>(
            "SELECT EXISTS (SELECT 1 FROM job.handlers)",
        ))
    }) {
        Ok(found) => found.unwrap_or(false),
        Err(e) => {
            log!("pg_jobqueue scheduler: {e}");
            return;
        }
    };
    let wanted = if has_handlers {
        gucs::EXECUTORS.get().max(0) as usize
    } else {
        0
    };
    if executors.len() < wanted {
        executors.resize_with(wanted, || None);
    }
    for (index, slot) in executors.iter_mut().enumerate().take(wanted) {
        let alive = slot.as_ref().is_some_and(|handle| {
            !matches!(
                handle.pid(),
                Err(BackgroundWorkerStatus::Stopped | BackgroundWorkerStatus::PostmasterDied)
            )
        });
        if !alive {
            *slot = start_database_worker(
                "pg_jobqueue_executor_main",
                "executor",
                db,
                &index.to_string(),
            );
        }
    }
    // Executors beyond the wanted count stop on their own.
}
