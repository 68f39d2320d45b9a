//! The launcher: keeps one scheduler running per database that has the extension.
//!
//! It is connected to no database (it reads only the shared catalog `pg_database`), so it
//! never stands in the way of `DROP DATABASE`.  It learns of databases three ways: every
//! database is tried once when first seen (its scheduler exits at once when the extension
//! is absent), `CREATE EXTENSION` asks for service at commit, and a scheduler that stopped
//! without declining is restarted.

use super::{sleep, start_database_worker};
use crate::server::gucs;
use crate::server::shmem;
use pgrx::bgworkers::{
    BackgroundWorker, BackgroundWorkerStatus, DynamicBackgroundWorker, SignalWakeFlags,
};
use pgrx::prelude::*;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// How often the database list is read again (new databases, created from a template that
/// has the extension, are found this way).
const RESCAN_INTERVAL: Duration = Duration::from_secs(10);
/// The wait before restarting a scheduler that stopped on its own (crashed or errored).
const RESTART_DELAY: Duration = Duration::from_secs(2);

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn pg_jobqueue_launcher_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    BackgroundWorker::connect_worker_to_spi(None, None);
    // SAFETY: MyProcPid is set at process start.
    shmem::set_launcher_pid(unsafe { pg_sys::MyProcPid });
    log!("pg_jobqueue launcher started");

    let mut running: HashMap<u32, DynamicBackgroundWorker> = HashMap::new();
    let mut last_start: HashMap<u32, Instant> = HashMap::new();
    let mut seen: HashSet<u32> = HashSet::new();
    let mut wanted: HashSet<u32> = HashSet::new();
    let mut last_scan: Option<Instant> = None;

    loop {
        super::reload_config_if_asked();
        let enabled = gucs::ENABLED.get();

        for db in shmem::take_declined() {
            wanted.remove(&db);
        }
        wanted.extend(shmem::take_service_requests());

        if last_scan.is_none_or(|t| t.elapsed() >= RESCAN_INTERVAL) {
            let databases = list_databases();
            for &db in &databases {
                if seen.insert(db) {
                    wanted.insert(db); // first sight: let its scheduler look
                }
            }
            seen.retain(|db| databases.contains(db));
            wanted.retain(|db| databases.contains(db));
            last_scan = Some(Instant::now());
        }

        // Forget schedulers that stopped; restart the ones still wanted.
        running.retain(|_, handle| {
            !matches!(
                handle.pid(),
                Err(BackgroundWorkerStatus::Stopped | BackgroundWorkerStatus::PostmasterDied)
            )
        });
        last_start.retain(|db, _| wanted.contains(db));
        let mut restart_pending = false;
        if enabled {
            for &db in &wanted {
                if running.contains_key(&db) || shmem::is_dropping(db) {
                    continue;
                }
                if last_start
                    .get(&db)
                    .is_some_and(|t| t.elapsed() < RESTART_DELAY)
                {
                    restart_pending = true; // do not spin on a scheduler that fails at once
                    continue;
                }
                last_start.insert(db, Instant::now());
                if let Some(handle) = start_database_worker(
                    "pg_jobqueue_scheduler_main",
                    "scheduler",
                    pg_sys::Oid::from(db),
                    "",
                ) {
                    running.insert(db, handle);
                }
            }
        }

        let wait = if restart_pending {
            RESTART_DELAY
        } else {
            RESCAN_INTERVAL
        };
        if !sleep(wait) {
            break;
        }
    }
    log!("pg_jobqueue launcher stopping");
}

/// Connectable, non-template databases.  Templates are never served: a session in one
/// would block CREATE DATABASE.
fn list_databases() -> HashSet<u32> {
    let mut found = HashSet::new();
    // SAFETY: a heap scan of a shared catalog inside a transaction of its own, the way
    // autovacuum's launcher reads it.
    unsafe {
        pg_sys::StartTransactionCommand();
        let rel = pg_sys::table_open(pg_sys::DatabaseRelationId, pg_sys::AccessShareLock as _);
        let scan = pg_sys::table_beginscan_catalog(rel, 0, std::ptr::null_mut());
        loop {
            let tuple = pg_sys::heap_getnext(scan, pg_sys::ScanDirection::ForwardScanDirection);
            if tuple.is_null() {
                break;
            }
            let db = &*pg_sys::heap_tuple_get_struct::<pg_sys::FormData_pg_database>(tuple);
            // datconnlimit -2 marks a database whose DROP was interrupted.
            if db.datallowconn && !db.datistemplate && db.datconnlimit != -2 {
                found.insert(db.oid.to_u32());
            }
        }
        pg_sys::table_endscan(scan);
        pg_sys::table_close(rel, pg_sys::AccessShareLock as _);
        pg_sys::CommitTransactionCommand();
    }
    found
}
