//! The `ProcessUtility` hook: `DROP DATABASE` stops the database's worker processes first.
//!
//! `DROP DATABASE` waits only a few seconds for other sessions to leave, and our workers are
//! sessions: stop them first, and keep the launcher from restarting them meanwhile; should the
//! drop fail, serve the database again.

use crate::shmem;
use crate::worker::spi;
use pgrx::prelude::*;
use pgrx::PgList;
use std::panic::AssertUnwindSafe;

/// Called from `_PG_init` while preloading: hooks are installed once, in the postmaster,
/// before any backend exists.
pub fn init() {
    // SAFETY: reading a postmaster global during library load.
    if !unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        return;
    }
    // SAFETY: see above; the previous hook is chained.
    unsafe {
        PREV_PROCESS_UTILITY = pg_sys::ProcessUtility_hook;
        pg_sys::ProcessUtility_hook = Some(process_utility);
    }
}

static mut PREV_PROCESS_UTILITY: pg_sys::ProcessUtility_hook_type = None;

/// Stops the worker processes of a database about to be dropped (see the module comment).
#[pg_guard]
#[allow(clippy::too_many_arguments)]
unsafe extern "C-unwind" fn process_utility(
    pstmt: *mut pg_sys::PlannedStmt,
    query: *const std::ffi::c_char,
    read_only_tree: bool,
    context: pg_sys::ProcessUtilityContext::Type,
    params: pg_sys::ParamListInfo,
    query_env: *mut pg_sys::QueryEnvironment,
    dest: *mut pg_sys::DestReceiver,
    qc: *mut pg_sys::QueryCompletion,
) {
    let stmt = (*pstmt).utilityStmt;
    let mut stopped = None;
    let mut dropping = None;
    if !stmt.is_null() && (*stmt).type_ == pg_sys::NodeTag::T_DropdbStmt {
        let drop = stmt.cast::<pg_sys::DropdbStmt>();
        let db = pg_sys::get_database_oid((*drop).dbname, true);
        if db != pg_sys::InvalidOid {
            dropping = Some(db);
            if drop_will_proceed(db, drop) {
                shmem::mark_dropping(db);
                // Cancel a running handler, then ask the process to exit.
                shmem::signal_processes_of(db, libc::SIGINT);
                shmem::signal_processes_of(db, libc::SIGTERM);
                stopped = Some(db);
            }
        }
    }
    let run = AssertUnwindSafe(|| match PREV_PROCESS_UTILITY {
        Some(prev) => prev(
            pstmt,
            query,
            read_only_tree,
            context,
            params,
            query_env,
            dest,
            qc,
        ),
        None => pg_sys::standard_ProcessUtility(
            pstmt,
            query,
            read_only_tree,
            context,
            params,
            query_env,
            dest,
            qc,
        ),
    });
    match stopped {
        None => run(),
        // The drop failed after all: serve the database again at once.
        Some(db) => PgTryBuilder::new(run)
            .catch_others(|caught| {
                shmem::unmark_dropping(db);
                shmem::request_service(db);
                caught.rethrow()
            })
            .execute(),
    }
    // Dropped: its wake-up slots can serve another database.
    if let Some(db) = dropping {
        shmem::free_wakeup_block(db);
    }
}

/// Whether `DROP DATABASE` will get as far as waiting for other sessions: it runs outside a
/// transaction block, by the owner or a superuser, and either with FORCE or with no client
/// connected (which would make it fail anyway).  Anything else leaves the worker alone.
unsafe fn drop_will_proceed(db: pg_sys::Oid, drop: *mut pg_sys::DropdbStmt) -> bool {
    if pg_sys::IsTransactionBlock()
        || !(pg_sys::superuser() || pg_sys::pg_database_ownercheck(db, pg_sys::GetUserId()))
    {
        return false;
    }
    let options = PgList::<pg_sys::DefElem>::from_pg((*drop).options);
    let force = options
        .iter_ptr()
        .any(|option| std::ffi::CStr::from_ptr((*option).defname).to_bytes() == b"force");
    force
        || !spi(Spi::get_one_with_args::<bool>(
            // Runs under the caller's search_path: every operator is schema-qualified.
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_stat_activity
                             WHERE datid OPERATOR(pg_catalog.=) $1
                               AND pid OPERATOR(pg_catalog.<>) pg_catalog.pg_backend_pid()
                               AND backend_type OPERATOR(pg_catalog.<>) 'autovacuum worker'::pg_catalog.text
                               AND backend_type OPERATOR(pg_catalog.!~~) 'pg_jobqueue %'::pg_catalog.text)",
            &[db.into()],
        ))
        .unwrap_or(false)
}
