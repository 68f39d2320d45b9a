//! The background worker: a launcher, and per database a scheduler and executors.
//!
//! * The launcher (one per cluster, registered in `_PG_init`, started once recovery has
//!   finished, so a hot standby runs none) lists the databases and starts a scheduler for
//!   each one that may have the extension.  It restarts schedulers that die.
//! * A scheduler (one per database) fires due schedules, runs maintenance (stalled-job
//!   rescue, retention, history pruning) and keeps `pg_jobqueue.executors` executors running
//!   while the database has handlers.  It exits when the extension is not installed.
//! * An executor claims jobs of handler queues and calls their SQL handlers.
//!
//! Every unit of work runs in its own transaction ([`transaction`]); an error in one is
//! logged and aborted, and the loop goes on.

mod executor;
mod launcher;
mod scheduler;
mod sender;
mod wait;

pub use wait::sleep;

use crate::server::gucs;
use crate::server::shmem;
use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, BgWorkerStartTime};
use pgrx::pg_sys::panic::CaughtError;
use pgrx::prelude::*;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

pub const LIBRARY: &str = "pg_jobqueue";

/// Called from `_PG_init`.
pub fn init() {
    // SAFETY: reading a postmaster global during library load.
    if !unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        return;
    }
    BackgroundWorkerBuilder::new("pg_jobqueue launcher")
        .set_type("pg_jobqueue launcher")
        .set_library(LIBRARY)
        .set_function("pg_jobqueue_launcher_main")
        .enable_spi_access()
        .set_start_time(BgWorkerStartTime::RecoveryFinished)
        .set_restart_time(Some(Duration::from_secs(5)))
        .load();
}

/// An error raised by a unit of work, as its SQLSTATE and message.
#[derive(Debug, Clone)]
pub struct WorkError {
    pub sqlstate: String,
    pub message: String,
}

impl std::fmt::Display for WorkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (SQLSTATE {})", self.message, self.sqlstate)
    }
}

/// The five-character SQLSTATE of an error code (PostgreSQL packs 6 bits per character).
fn sqlstate_text(code: i32) -> String {
    (0..5)
        .map(|i| char::from(b'0' + ((code >> (6 * i)) & 0x3f) as u8))
        .collect()
}

fn work_error(caught: CaughtError) -> WorkError {
    let (code, message) = match &caught {
        CaughtError::PostgresError(r) | CaughtError::ErrorReport(r) => {
            (r.sql_error_code() as i32, r.message().to_owned())
        }
        CaughtError::RustPanic { ereport, .. } => (
            ereport.sql_error_code() as i32,
            ereport.message().to_owned(),
        ),
    };
    WorkError {
        sqlstate: sqlstate_text(code),
        message,
    }
}

/// Runs `body` in a transaction of its own and commits it.  An error (in the body or at
/// commit) aborts the transaction and comes back as `Err`; the process goes on.
///
/// Should the extension this process started with be gone (dropped, or dropped and created
/// again), the process exits before `body` touches anything: its work belonged to that
/// extension's tables (see [`served_extension_is_gone`]).
pub fn transaction<R>(body: impl FnOnce() -> R) -> Result<R, WorkError> {
    let body = AssertUnwindSafe(body);
    // SAFETY: the standard sequence for a transaction in a background worker.
    unsafe {
        pg_sys::SetCurrentStatementStartTimestamp();
        pg_sys::StartTransactionCommand();
        pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
    }
    if served_extension_is_gone() {
        // SAFETY: leaves the transaction just begun, then the process (its shared-memory
        // entries are released by the exit callbacks, as at a normal stop).
        unsafe {
            pg_sys::AbortCurrentTransaction();
            log!("pg_jobqueue: the extension this process served was dropped; stopping");
            pg_sys::proc_exit(0);
        }
    }
    let outcome = PgTryBuilder::new(move || {
        let result = body();
        // SAFETY: pairs with the push above; commit may raise, which is caught below.
        unsafe {
            pg_sys::PopActiveSnapshot();
            pg_sys::CommitTransactionCommand();
        }
        Ok(result)
    })
    .catch_others(|caught| Err(work_error(caught)))
    .execute();
    if outcome.is_err() {
        // SAFETY: cleans up the failed transaction: locks, snapshots, SPI, user id, GUCs.
        unsafe { pg_sys::AbortCurrentTransaction() };
    }
    outcome
}

thread_local! {
    /// The oid of the extension this process serves, as its first transaction found it.
    static SERVED_EXTENSION: std::cell::Cell<pg_sys::Oid> =
        const { std::cell::Cell::new(pg_sys::InvalidOid) };
}

/// Whether the extension this process first saw in its database is no longer there (its
/// oid is gone, or belongs to an extension created since).  A process that starts without
/// the extension serves none, and is never told it is gone.  A catalog index probe, in the
/// current transaction: one per unit of work.
fn served_extension_is_gone() -> bool {
    // SAFETY: a catalog look-up by name inside a transaction.
    let now = unsafe { pg_sys::get_extension_oid(c"pg_jobqueue".as_ptr(), true) };
    SERVED_EXTENSION.with(|served| {
        if served.get() == pg_sys::InvalidOid {
            served.set(now);
            false
        } else {
            served.get() != now
        }
    })
}

/// Unwraps the result of an SPI call, raising its error as a PostgreSQL error.
pub fn spi<T>(result: Result<T, pgrx::spi::Error>) -> T {
    result.unwrap_or_else(|e| error!("{e}"))
}

/// Reloads the configuration after SIGHUP (pgrx's handler only sets a flag).
pub fn reload_config_if_asked() {
    if BackgroundWorker::sighup_received() {
        // SAFETY: called from the worker's main loop, outside any transaction.
        unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
    }
}

/// Is the extension installed in the connected database?  Needs a transaction.
pub fn extension_installed() -> bool {
    // SAFETY: a syscache lookup with a constant name.
    unsafe { pg_sys::get_extension_oid(c"pg_jobqueue".as_ptr(), true) != pg_sys::InvalidOid }
}

/// The extension's version in the connected database, if installed.  Needs a transaction.
pub fn installed_version() -> Option<String> {
    spi(Spi::get_one::<String>(
        "SELECT (SELECT extversion FROM pg_catalog.pg_extension
                  WHERE extname OPERATOR(pg_catalog.=) 'pg_jobqueue'::pg_catalog.name)",
    ))
}

/// The version of this library: a database at another version is not served until
/// `ALTER EXTENSION pg_jobqueue UPDATE` (whose script asks for service again).
pub const LIBRARY_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Pins this process's own search_path, so that no database or role default, and nothing a
/// handler did, decides what the worker's statements resolve to.  Needs a transaction.
pub fn pin_search_path() {
    spi(Spi::run(
        "SELECT pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', false)",
    ));
}

/// The scheduler's tick: the longest it sleeps without looking at its tables.
pub fn tick() -> Duration {
    Duration::from_millis(gucs::SCHEDULER_TICK_MS.get().max(1) as u64)
}

/// The shortest sleep before looking again at work that was due but could not be done
/// (its rows were locked, or a handler queue was at its concurrency): no busy loop.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// How long to sleep until `due` (a TimestampTz; None: nothing is due), at most one tick.
pub fn until(due: Option<i64>) -> Duration {
    match due {
        Some(due) => {
            // SAFETY: reads the clock.
            let now = unsafe { pg_sys::GetCurrentTimestamp() };
            if due <= now {
                RETRY_PAUSE
            } else {
                Duration::from_micros((due - now) as u64).min(tick())
            }
        }
        None => tick(),
    }
}

/// Runs `next_due_query` (one timestamptz, NULL for none) in a transaction of its own.  A
/// failed query is logged and counts as nothing due.
pub fn next_due(
    who: &str,
    next_due_query: &str,
    args: &[pgrx::datum::DatumWithOid],
) -> Option<i64> {
    match transaction(|| {
        spi(Spi::get_one_with_args::<pgrx::datum::TimestampWithTimeZone>(next_due_query, args))
    }) {
        Ok(due) => due.map(|t| t.into_inner()),
        Err(e) => {
            log!("pg_jobqueue {who}: {e}");
            None
        }
    }
}

/// The database a scheduler or executor serves: its main argument.
pub fn database_argument(arg: pg_sys::Datum) -> pg_sys::Oid {
    pg_sys::Oid::from(arg.value() as u32)
}

/// Starts a per-database worker whose main function is `function`.
pub fn start_database_worker(
    function: &str,
    kind: &str,
    db: pg_sys::Oid,
    extra: &str,
) -> Option<pgrx::bgworkers::DynamicBackgroundWorker> {
    let name = format!("pg_jobqueue {kind} for database {}", db.to_u32());
    let started = BackgroundWorkerBuilder::new(&name)
        .set_type(&format!("pg_jobqueue {kind}"))
        .set_library(LIBRARY)
        .set_function(function)
        .enable_spi_access()
        .set_start_time(BgWorkerStartTime::RecoveryFinished)
        .set_restart_time(None)
        .set_argument(Some(pg_sys::Datum::from(db.to_u32())))
        .set_extra(extra)
        // SAFETY: MyProcPid is set at process start.
        .set_notify_pid(unsafe { pg_sys::MyProcPid })
        .load_dynamic();
    match started {
        Ok(handle) => Some(handle),
        Err(_) => {
            log!("pg_jobqueue: could not start {name}: no free background worker slot (raise max_worker_processes)");
            None
        }
    }
}

/// SQL (internal): raises unless the background worker can run `what`.
#[pg_extern(stable)]
fn _require_worker(what: &str) {
    if !shmem::available() {
        crate::raise(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            format!("{what} need the pg_jobqueue background worker, which runs only when the library is preloaded"),
            "Add pg_jobqueue to shared_preload_libraries in postgresql.conf and restart PostgreSQL.",
        );
    }
}

/// SQL (internal): the launcher should serve this database once this transaction commits.
#[pg_extern(volatile)]
fn _request_service() {
    crate::server::wakeup::request_service_on_commit();
}

/// SQL (internal): schedules or handlers changed; the scheduler should look at commit.
#[pg_extern(volatile)]
fn _wake_scheduler() {
    crate::server::wakeup::wake_scheduler_on_commit();
}

/// SQL: the worker processes serving this database.
#[pg_extern(volatile)]
fn worker_processes() -> TableIterator<'static, (name!(pid, i32), name!(kind, String))> {
    // SAFETY: MyDatabaseId is set at backend start.
    let db = unsafe { pg_sys::MyDatabaseId };
    let rows = shmem::processes_of(db)
        .into_iter()
        .map(|(pid, kind)| {
            let kind = match kind {
                shmem::Kind::Scheduler => "scheduler",
                shmem::Kind::Executor => "executor",
                shmem::Kind::Sender => "sender",
            };
            (pid, kind.to_owned())
        })
        .collect::<Vec<_>>();
    TableIterator::new(rows)
}

#[cfg(test)]
mod tests {
    use super::sqlstate_text;

    #[test]
    fn sqlstates_unpack_like_postgres() {
        // MAKE_SQLSTATE('4','0','0','0','1'): 6 bits per character, first character lowest.
        let pack = |s: &str| {
            s.bytes().enumerate().fold(0i32, |acc, (i, b)| {
                acc | (((b - b'0') as i32 & 0x3f) << (6 * i))
            })
        };
        for code in ["40001", "57014", "P0001", "23505", "42P01", "XX000"] {
            assert_eq!(sqlstate_text(pack(code)), code);
        }
    }
}
