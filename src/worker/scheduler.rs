//! A database's scheduler: fires due schedules, makes due jobs ready and takes back jobs
//! whose lease ran out (waking their consumers), runs maintenance, and keeps executors
//! running for each role that has handlers.
//!
//! It sleeps until the earliest schedule or job is due (at most one tick), so a schedule
//! fires, and a delayed job or a retry becomes ready, within milliseconds of its time; a
//! commit that makes something due sooner than that wakes it (`wakeup.rs`).  Each step is a
//! transaction of its own, bounded in rows.

use super::executor;
use super::{sleep, spi, start_database_worker, transaction};
use crate::gucs;
use crate::shmem::{self, Kind};
use pgrx::bgworkers::{
    BackgroundWorker, BackgroundWorkerStatus, DynamicBackgroundWorker, SignalWakeFlags,
};
use pgrx::prelude::*;
use std::collections::HashMap;
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
    let slot = shmem::register_process(db, Kind::Scheduler);

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
            shmem::decline(db);
            return;
        }
        Ok(None) => {
            shmem::decline(db);
            return;
        }
        Err(e) => {
            log!("pg_jobqueue scheduler: could not look for the extension: {e}");
            return;
        }
    }
    log!("pg_jobqueue scheduler started");

    let mut executors: HashMap<(pg_sys::Oid, usize), DynamicBackgroundWorker> = HashMap::new();
    let mut next_maintenance = Instant::now();
    loop {
        // Awake: a commit that makes a job due from now on signals (see wakeup.rs).
        shmem::publish_wake_at(slot, None);
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
                shmem::decline(db);
                break;
            }
            Err(e) => log!("pg_jobqueue scheduler: {e}"),
        }

        fire_due_schedules();
        run_due_jobs();
        if Instant::now() >= next_maintenance {
            run_maintenance();
            next_maintenance = Instant::now() + maintenance_interval();
        }
        supervise_executors(db, &mut executors);

        let due = super::next_due(
            "scheduler",
            "SELECT least(job._next_schedule_due(), job._next_job_due())",
            &[],
        );
        let wait =
            super::until(due).min(next_maintenance.saturating_duration_since(Instant::now()));
        // SAFETY: reads the clock.
        let wake_at = unsafe { pg_sys::GetCurrentTimestamp() } + wait.as_micros() as i64;
        shmem::publish_wake_at(slot, Some(wake_at));
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

/// Makes due jobs ready and takes back jobs whose lease ran out, waking their consumers at
/// each commit; bounded like a maintenance step.
fn run_due_jobs() {
    let batch = i64::from(gucs::MAINTENANCE_BATCH.get());
    run_step(
        "make due jobs ready",
        "SELECT job._promote_due($1::int)",
        [batch, 0],
    );
    run_step(
        "rescue stalled jobs",
        "SELECT job.rescue_stalled(NULL, $1::int)::bigint",
        [batch, 0],
    );
}

/// Runs `sql` (a bigint count of rows; parameters $1 = the batch, $2 = `args[1]`) in
/// transactions of its own while it keeps filling its batch, at most [`MAX_BATCHES_PER_STEP`]
/// times.  A failure is logged, and the next step runs.
fn run_step(what: &str, sql: &str, args: [i64; 2]) {
    let batch = args[0];
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

/// One maintenance round: apply retention (which also expires idempotency keys), prune
/// schedule history, merge and fold old metric buckets, prune the audit log, each in batches
/// of pg_jobqueue.maintenance_batch rows per transaction; then count the live jobs per queue
/// for the metrics.  (Stalled jobs are taken back by [`run_due_jobs`], as their leases run
/// out.)
fn run_maintenance() {
    let batch = i64::from(gucs::MAINTENANCE_BATCH.get());
    let keep = i64::from(gucs::SCHEDULE_HISTORY.get());
    let audit_days = i64::from(gucs::AUDIT_RETENTION_DAYS.get());
    let steps: [(&str, &str, [i64; 2]); 5] = [
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
        run_step(what, sql, args);
    }
    if let Err(e) = transaction(|| spi(Spi::run("SELECT job._count_queue_depth()"))) {
        log!("pg_jobqueue scheduler: counting queue depth failed: {e}");
    }
}

/// Keeps executors running for each role that has handlers: pg_jobqueue.executors of them,
/// or fewer when the role's handlers allow fewer jobs at once.  Executors no longer wanted
/// stop on their own (they check the same numbers).
fn supervise_executors(
    db: pg_sys::Oid,
    executors: &mut HashMap<(pg_sys::Oid, usize), DynamicBackgroundWorker>,
) {
    let wanted = match transaction(|| {
        Spi::connect(|client| {
            client
                .select(
                    "SELECT run_as::pg_catalog.oid, executors FROM job._executors_wanted($1)",
                    None,
                    &[gucs::EXECUTORS.get().max(0).into()],
                )?
                .map(|row| Ok((row.get::<pg_sys::Oid>(1)?, row.get::<i32>(2)?)))
                .collect::<Result<Vec<_>, pgrx::spi::Error>>()
        })
    }) {
        Ok(Ok(rows)) => rows,
        Ok(Err(e)) => {
            log!("pg_jobqueue scheduler: {e}");
            return;
        }
        Err(e) => {
            log!("pg_jobqueue scheduler: {e}");
            return;
        }
    };
    executors.retain(|_, handle| {
        !matches!(
            handle.pid(),
            Err(BackgroundWorkerStatus::Stopped | BackgroundWorkerStatus::PostmasterDied)
        )
    });
    for (role, count) in wanted {
        let (Some(role), Some(count)) = (role, count) else {
            continue;
        };
        for index in 0..count.max(0) as usize {
            if executors.contains_key(&(role, index)) {
                continue;
            }
            if let Some(handle) = start_database_worker(
                "pg_jobqueue_executor_main",
                "executor",
                db,
                &executor::extra(role, index),
            ) {
                executors.insert((role, index), handle);
            }
        }
    }
}
