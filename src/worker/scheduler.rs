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
use crate::server::gucs;
use crate::server::shmem::{self, Kind};
use pg_jobqueue_rules::claimer::{claimed_by, Claimer};
use pgrx::bgworkers::{
    BackgroundWorker, BackgroundWorkerStatus, DynamicBackgroundWorker, SignalWakeFlags,
};
use pgrx::prelude::*;
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering as AtomicOrdering};
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

    take_back_jobs_of_gone_executors(db);
    let mut executors: HashMap<Runner, Executor> = HashMap::new();
    let mut maintenance = Maintenance::new();
    let mut budget = Budget::default();
    let mut last_full_rescue = Instant::now();
    let mut looked_again = false;
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
        // The rest can wait for the next tick, and never delays it.
        budget.next_tick = next_schedule_due();
        run_due_jobs(&mut budget, &mut last_full_rescue);
        maintenance.advance(&mut budget);
        supervise_executors(db, &mut executors);

        let due = super::next_due(
            "scheduler",
            "SELECT least(job._next_schedule_due(), job._next_job_due())",
            &[],
        );
        let mut wait = super::until(due).min(maintenance.wait());
        // A schedule that came due while this round ran (the round began a moment before its
        // tick) fires now rather than after the 50 ms retry pause, which had made about one
        // tick a minute 51 ms late; once in a row only, so a tick that cannot fire (its row
        // is locked) never makes the loop spin.
        let tick_passed = budget.next_tick.is_some_and(|tick| tick <= Instant::now());
        if tick_passed && !looked_again {
            wait = Duration::ZERO;
        }
        looked_again = tick_passed && !looked_again;
        // SAFETY: reads the clock.
        let wake_at = unsafe { pg_sys::GetCurrentTimestamp() } + wait.as_micros() as i64;
        shmem::publish_wake_at(slot, Some(wake_at));
        if !wait.is_zero() && !sleep(wait) {
            break;
        }
    }
    // Executors notice on their own (they check the setting and the extension).
    log!("pg_jobqueue scheduler stopping");
}

fn maintenance_interval() -> Duration {
    Duration::from_millis(gucs::MAINTENANCE_INTERVAL_MS.get().max(1) as u64)
}

/// When the next schedule is due, if one is.
fn next_schedule_due() -> Option<Instant> {
    let due = super::next_due("scheduler", "SELECT job._next_schedule_due()", &[])?;
    // SAFETY: reads the clock.
    let now = unsafe { pg_sys::GetCurrentTimestamp() };
    Some(Instant::now() + Duration::from_micros(due.saturating_sub(now).max(0) as u64))
}

/// How much of the work that can wait (making due jobs ready, taking back stalled ones,
/// maintenance) fits before the next schedule is due: a transaction of it starts only if
/// twice the longest one seen so far still ends [`TICK_MARGIN`] before the tick.  Under load,
/// maintenance once delayed 1-second ticks by up to 364 ms.
#[derive(Default)]
struct Budget {
    next_tick: Option<Instant>,
    longest: Duration,
    /// Since when work was put off without any running: ticks too close together for the
    /// slowest transaction must not starve it for good.
    put_off_since: Option<Instant>,
}

/// How early before a tick the scheduler stops starting work that can wait.
const TICK_MARGIN: Duration = Duration::from_millis(5);
/// The longest work that can wait is put off, however close together the ticks.
const MAX_PUT_OFF: Duration = Duration::from_secs(2);

impl Budget {
    fn allows_another(&mut self) -> bool {
        let fits = self
            .next_tick
            .is_none_or(|tick| Instant::now() + self.longest * 2 + TICK_MARGIN <= tick);
        if fits
            || self
                .put_off_since
                .is_some_and(|t| t.elapsed() >= MAX_PUT_OFF)
        {
            self.put_off_since = None;
            return true;
        }
        self.put_off_since.get_or_insert_with(Instant::now);
        false
    }

    /// Runs one transaction of `what` if it fits; None when it did not.
    fn run(&mut self, what: &str, sql: &str, args: [i64; 2]) -> Option<Result<i64, ()>> {
        if !self.allows_another() {
            return None;
        }
        let started = Instant::now();
        let params = args.map(|a| a.into());
        let outcome = transaction(|| spi(Spi::get_one_with_args::<i64>(sql, &params)));
        // The longest transaction decays slowly, so one slow moment does not hold maintenance
        // back for good.
        self.longest = (self.longest * 15 / 16).max(started.elapsed());
        Some(match outcome {
            Ok(n) => Ok(n.unwrap_or(0)),
            Err(e) => {
                log!("pg_jobqueue scheduler: {what} failed: {e}");
                Err(())
            }
        })
    }
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

/// A step of the work that can wait: what it does, its SQL (a bigint count of rows;
/// parameters $1 = the batch, $2 = the step's argument), and that argument.
type Step = (&'static str, &'static str, fn() -> i64);

fn no_argument() -> i64 {
    0
}

/// Makes due jobs ready and takes back jobs whose lease ran out, waking their consumers at
/// each commit; bounded like a maintenance step.
const DUE_JOB_STEPS: [Step; 2] = [
    (
        "make due jobs ready",
        "SELECT job._promote_due($1::int)",
        no_argument,
    ),
    (
        "rescue stalled jobs",
        "SELECT job._rescue_stalled(NULL, $1::int,
                    CASE WHEN $2 <> 0 THEN timestamptz '2000-01-01 00:00:00+00' + $2 * interval '1 microsecond' END)::bigint",
        rescue_from,
    ),
];

/// Where the scheduler's next look for stalled jobs starts (a lease time, TimestampTz; 0:
/// from the front).  A lease is never set to run out in the past, so a running job whose
/// lease ran out before the last complete look was taken back then, unless its claim had
/// not committed yet: the look starts 10 seconds before the last one, and once a minute
/// from the front.
static RESCUE_FROM: AtomicI64 = AtomicI64::new(0);
const RESCUE_OVERLAP_MICROS: i64 = 10_000_000;
const FULL_RESCUE_INTERVAL: Duration = Duration::from_secs(60);

fn rescue_from() -> i64 {
    RESCUE_FROM.load(AtomicOrdering::Relaxed)
}

fn run_due_jobs(budget: &mut Budget, last_full_rescue: &mut Instant) {
    for (i, step) in DUE_JOB_STEPS.iter().enumerate() {
        let rescuing = i == 1;
        if rescuing && last_full_rescue.elapsed() >= FULL_RESCUE_INTERVAL {
            RESCUE_FROM.store(0, AtomicOrdering::Relaxed);
            *last_full_rescue = Instant::now();
        }
        // SAFETY: reads the clock.
        let started = unsafe { pg_sys::GetCurrentTimestamp() };
        let mut batches = 0;
        let finished = loop {
            match run_batch_of(step, budget) {
                Some(true) if batches + 1 < MAX_BATCHES_PER_STEP => batches += 1,
                Some(false) => break true,
                _ => break false,
            }
        };
        if rescuing && finished {
            RESCUE_FROM.store(started - RESCUE_OVERLAP_MICROS, AtomicOrdering::Relaxed);
        }
    }
}

/// Runs one transaction of `step`; Some(true) when it filled its batch (more may wait), None
/// when the budget did not allow it.
fn run_batch_of(step: &Step, budget: &mut Budget) -> Option<bool> {
    let (what, sql, argument) = step;
    let batch = i64::from(gucs::MAINTENANCE_BATCH.get());
    let done = budget.run(what, sql, [batch, argument()])?;
    Some(matches!(done, Ok(n) if n >= batch))
}

/// One maintenance round: apply retention (which also expires idempotency keys), prune
/// schedule history, merge and fold old metric buckets, prune the audit log and idle keys' rate
/// windows, each in batches
/// of pg_jobqueue.maintenance_batch rows per transaction, at most [`MAX_BATCHES_PER_STEP`] of
/// them per step and round; then count the live jobs per queue for the metrics.  (Stalled
/// jobs are taken back by [`run_due_jobs`], as their leases run out.)
const MAINTENANCE_STEPS: [Step; 7] = [
    (
        "apply retention",
        "SELECT job.apply_retention($1::int)",
        no_argument,
    ),
    (
        "prune schedule history",
        "SELECT job._prune_schedule_runs($2::int, $1::int)::bigint",
        || i64::from(gucs::SCHEDULE_HISTORY.get()),
    ),
    (
        "merge metric shards",
        "SELECT job._compact_metric_buckets($1::int)::bigint",
        no_argument,
    ),
    (
        "fold metric buckets",
        "SELECT job._fold_metric_buckets($1::int)::bigint",
        no_argument,
    ),
    (
        "prune the audit log",
        "SELECT job._prune_audit_log(make_interval(days => $2::int), $1::int)::bigint",
        || i64::from(gucs::AUDIT_RETENTION_DAYS.get()),
    ),
    (
        "prune rate windows",
        "SELECT job._prune_rate_windows($1::int)::bigint",
        no_argument,
    ),
    (
        "count queue depth",
        // Once per round: the step reports no rows, so none more follows.
        "SELECT 0::bigint FROM job._count_queue_depth()",
        no_argument,
    ),
];

/// Where the scheduler is in its maintenance round: a round runs every
/// pg_jobqueue.maintenance_interval, one transaction at a time between ticks.
struct Maintenance {
    /// When the next round starts.
    next_round: Instant,
    /// The step under way, and its transactions so far; None between rounds.
    at: Option<(usize, usize)>,
}

impl Maintenance {
    fn new() -> Maintenance {
        Maintenance {
            next_round: Instant::now(),
            at: None,
        }
    }

    /// Runs what the budget allows of the round under way, starting one if it is time.
    fn advance(&mut self, budget: &mut Budget) {
        if self.at.is_none() && Instant::now() >= self.next_round {
            self.at = Some((0, 0));
        }
        while let Some((step, batches)) = self.at {
            let Some(more) = run_batch_of(&MAINTENANCE_STEPS[step], budget) else {
                return; // the next tick comes first
            };
            self.at = if more && batches + 1 < MAX_BATCHES_PER_STEP {
                Some((step, batches + 1))
            } else if step + 1 < MAINTENANCE_STEPS.len() {
                Some((step + 1, 0))
            } else {
                self.next_round = Instant::now() + maintenance_interval();
                None
            };
        }
    }

    /// How long the scheduler may sleep as far as maintenance goes.
    fn wait(&self) -> Duration {
        match self.at {
            // A round put off for a tick goes on right after it (the tick bounds the sleep).
            Some(_) => Duration::MAX,
            None => self.next_round.saturating_duration_since(Instant::now()),
        }
    }
}

/// Takes back at once the jobs held by executors that are gone: those of an earlier scheduler
/// (it died, or the server restarted after a crash) that no longer run.  Called before this
/// scheduler starts any executor, so none can claim meanwhile.
fn take_back_jobs_of_gone_executors(db: pg_sys::Oid) {
    let alive: Vec<i32> = shmem::processes_of(db)
        .into_iter()
        .filter(|(_, kind)| matches!(kind, Kind::Executor | Kind::Sender))
        .map(|(pid, _)| pid)
        .collect();
    report_taken_back(transaction(|| {
        spi(Spi::get_one_with_args::<i64>(
            "SELECT job._expire_executor_leases('{}', $1)",
            &[alive.into()],
        ))
    }));
}

fn report_taken_back(outcome: Result<Option<i64>, super::WorkError>) {
    match outcome {
        Ok(Some(n)) if n > 0 => {
            log!("pg_jobqueue scheduler: {n} jobs of stopped executors are taken back")
        }
        Ok(_) => {}
        Err(e) => {
            log!("pg_jobqueue scheduler: taking back the jobs of stopped executors failed: {e}")
        }
    }
}

/// A process this scheduler runs jobs with: an executor (of a role, by index) or the sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Runner {
    Executor(pg_sys::Oid, usize),
    Sender,
}

impl Runner {
    fn worker_name(self, pid: i32) -> String {
        let claimer = match self {
            Runner::Executor(role, index) => Claimer::Executor {
                run_as: role.to_u32(),
                index,
            },
            Runner::Sender => Claimer::Sender,
        };
        claimed_by(claimer, pid)
    }

    fn start(self, db: pg_sys::Oid) -> Option<DynamicBackgroundWorker> {
        match self {
            Runner::Executor(role, index) => start_database_worker(
                "pg_jobqueue_executor_main",
                "executor",
                db,
                &executor::extra(role, index),
            ),
            Runner::Sender => start_database_worker("pg_jobqueue_sender_main", "sender", db, ""),
        }
    }
}

/// An executor or sender this scheduler started, and its process id once it ran.
struct Executor {
    handle: DynamicBackgroundWorker,
    pid: Option<i32>,
}

/// Keeps executors running for each role that has handlers: pg_jobqueue.executors of them,
/// or fewer when the role's handlers allow fewer jobs at once.  Executors no longer wanted
/// stop on their own (they check the same numbers).  The jobs an executor held when it
/// stopped (it died mid-batch, say) are taken back at once rather than when their leases run
/// out.
fn supervise_executors(db: pg_sys::Oid, executors: &mut HashMap<Runner, Executor>) {
    let mut gone = Vec::new();
    executors.retain(|&runner, executor| match executor.handle.pid() {
        Ok(pid) => {
            executor.pid = Some(pid);
            true
        }
        Err(BackgroundWorkerStatus::Stopped | BackgroundWorkerStatus::PostmasterDied) => {
            if let Some(pid) = executor.pid {
                gone.push(runner.worker_name(pid));
            }
            false
        }
        Err(_) => true,
    });
    if !gone.is_empty() {
        report_taken_back(transaction(|| {
            spi(Spi::get_one_with_args::<i64>(
                "SELECT job._expire_executor_leases($1, NULL)",
                &[gone.clone().into()],
            ))
        }));
    }

    let wanted = match transaction(|| {
        Spi::connect(|client| {
            let mut wanted = Vec::new();
            for row in client.select(
                "SELECT run_as::pg_catalog.oid AS run_as, executors FROM job._executors_wanted($1)",
                None,
                &[gucs::EXECUTORS.get().max(0).into()],
            )? {
                if let (Some(role), Some(count)) = (
                    row.get_by_name::<pg_sys::Oid, _>("run_as")?,
                    row.get_by_name::<i32, _>("executors")?,
                ) {
                    wanted.extend((0..count.max(0) as usize).map(|i| Runner::Executor(role, i)));
                }
            }
            Ok::<_, pgrx::spi::Error>(wanted)
        })
    })
    .map(|executors| {
        // A transaction of its own: one that read handler_defs and then endpoint_defs could
        // deadlock with a DROP EXTENSION locking them the other way round.
        let sender = transaction(|| spi(Spi::get_one::<bool>("SELECT job._sender_wanted()")));
        executors.map(|mut wanted| {
            if matches!(sender, Ok(Some(true))) {
                wanted.push(Runner::Sender);
            }
            wanted
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
    // A DROP DATABASE marks the database, signals every process of it, then waits for them
    // to leave: an executor that stopped for it must not be started again meanwhile.  (Not
    // BackgroundWorker::sigterm_received(): it clears the flag the main loop stops on.)
    if shmem::is_dropping(db.to_u32()) {
        return;
    }
    for runner in wanted {
        if executors.contains_key(&runner) {
            continue;
        }
        if let Some(handle) = runner.start(db) {
            executors.insert(runner, Executor { handle, pid: None });
        }
    }
}
