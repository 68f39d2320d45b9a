//! The `ProcessUtility` hook: `DROP DATABASE` and `DROP EXTENSION pg_jobqueue` stop the
//! database's worker processes first.
//!
//! `DROP DATABASE` waits only a few seconds for other sessions to leave, and our workers are
//! sessions: stop them first, and keep the launcher from restarting them meanwhile; should the
//! drop fail, serve the database again.
//!
//! `DROP EXTENSION` waits for the locks of a handler mid-run, and then executors kept going
//! for seconds against functions that were gone (or, with the extension created again
//! meanwhile, against the new extension's tables).  So the processes are cancelled and stopped
//! before the drop runs, and served again should its transaction roll back; whatever still
//! runs touches nothing once the extension it started with is gone (`worker::transaction`).
//! The schema `job`, which `CREATE EXTENSION` made but which is not a member of the extension,
//! goes with it when nothing else is left in it.

use crate::server::shmem;
use crate::worker::spi;
use pgrx::prelude::*;
use pgrx::PgList;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

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
    let dropped_schema = if drops_this_extension(stmt) {
        prepare_extension_drop()
    } else {
        None
    };
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
    if let Some(schema) = dropped_schema {
        drop_schema_if_left_empty(schema);
    }
}

/// Whether the current user owns database `db` (or is a member of its owner).
unsafe fn owns_database(db: pg_sys::Oid) -> bool {
    #[cfg(any(feature = "pg14", feature = "pg15"))]
    return pg_sys::pg_database_ownercheck(db, pg_sys::GetUserId());
    #[cfg(not(any(feature = "pg14", feature = "pg15")))]
    return pg_sys::object_ownercheck(pg_sys::DatabaseRelationId, db, pg_sys::GetUserId());
}

/// Whether `stmt` is a `DROP EXTENSION` naming pg_jobqueue.
unsafe fn drops_this_extension(stmt: *mut pg_sys::Node) -> bool {
    if stmt.is_null() || (*stmt).type_ != pg_sys::NodeTag::T_DropStmt {
        return false;
    }
    let drop = stmt.cast::<pg_sys::DropStmt>();
    (*drop).removeType == pg_sys::ObjectType::OBJECT_EXTENSION
        && PgList::<pg_sys::Node>::from_pg((*drop).objects)
            .iter_ptr()
            .any(|name| node_text(name) == Some(b"pg_jobqueue".as_slice()))
}

/// The text of a String node (an object's name in a `DropStmt`).
unsafe fn node_text<'a>(node: *mut pg_sys::Node) -> Option<&'a [u8]> {
    if node.is_null() || (*node).type_ != pg_sys::NodeTag::T_String {
        return None;
    }
    // PostgreSQL 15 gave String nodes a struct of their own (14: a Value).
    #[cfg(feature = "pg14")]
    let text = (*node.cast::<pg_sys::Value>()).val.str_;
    #[cfg(not(feature = "pg14"))]
    let text = (*node.cast::<pg_sys::String>()).sval;
    (!text.is_null()).then(|| std::ffi::CStr::from_ptr(text).to_bytes())
}

/// `DROP EXTENSION pg_jobqueue` is about to run in this database: when the extension is here
/// and the caller may drop it, stops this database's worker processes (cancelling a running
/// handler, which would hold the drop up) and keeps the launcher from starting them again
/// until the transaction ends: at commit the scheduler the launcher starts again finds no
/// extension and leaves; at abort the database is served again.  Returns the schema to drop
/// afterwards should it be left empty: `job`'s oid, when it is the extension's schema and
/// owned by the extension's owner (it is then the one `CREATE EXTENSION` made).
unsafe fn prepare_extension_drop() -> Option<pg_sys::Oid> {
    let extension = pg_sys::get_extension_oid(c"pg_jobqueue".as_ptr(), true);
    if extension == pg_sys::InvalidOid {
        return None;
    }
    let (owner, schema, schema_owner) = spi(Spi::get_three_with_args::<
        pg_sys::Oid,
        pg_sys::Oid,
        pg_sys::Oid,
    >(
        // Runs under the caller's search_path: every name and operator is schema-qualified.
        "SELECT e.extowner, n.oid, n.nspowner
           FROM pg_catalog.pg_extension e
           JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) e.extnamespace
          WHERE e.oid OPERATOR(pg_catalog.=) $1",
        &[extension.into()],
    ));
    let owner = owner?;
    if !(pg_sys::superuser() || pg_sys::has_privs_of_role(pg_sys::GetUserId(), owner)) {
        return None; // the drop fails on its own, and nothing was stopped
    }
    let db = pg_sys::MyDatabaseId;
    shmem::mark_dropping(db);
    shmem::signal_processes_of(db, libc::SIGINT);
    shmem::signal_processes_of(db, libc::SIGTERM);
    // Let them finish before the drop takes its locks: an executor whose handler was just
    // cancelled records the failure in its batch's transaction, which holds locks the drop
    // needs and wants tables the drop would already hold (a deadlock that failed the drop).
    // Past the timeout the drop goes ahead anyway.
    wait_until(Duration::from_secs(10), Duration::from_millis(10), || {
        shmem::processes_of(db).is_empty()
    });
    pgrx::register_xact_callback(pgrx::PgXactCallbackEvent::Commit, move || {
        shmem::unmark_dropping(db);
    });
    pgrx::register_xact_callback(pgrx::PgXactCallbackEvent::Abort, move || {
        shmem::unmark_dropping(db);
        shmem::request_service(db);
    });
    schema.filter(|_| schema_owner == Some(owner))
}

/// Whether `done` holds within `timeout`, asked every `pause`; the caller can cancel the wait.
unsafe fn wait_until(timeout: Duration, pause: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        pg_sys::WaitLatch(
            pg_sys::MyLatch,
            (pg_sys::WL_LATCH_SET | pg_sys::WL_TIMEOUT | pg_sys::WL_EXIT_ON_PM_DEATH) as i32,
            pause.as_millis() as std::ffi::c_long,
            pg_sys::PG_WAIT_EXTENSION,
        );
        pg_sys::ResetLatch(pg_sys::MyLatch);
        pg_sys::check_for_interrupts!();
    }
}

/// Drops the extension's former schema when the drop left nothing in it (every object in a
/// schema depends on it in pg_depend); one the user keeps something in stays.
unsafe fn drop_schema_if_left_empty(schema: pg_sys::Oid) {
    // Its name, quoted, when it still exists and nothing is left in it.
    let name = spi(Spi::get_one_with_args::<String>(
        "SELECT (SELECT pg_catalog.quote_ident(n.nspname) FROM pg_catalog.pg_namespace n
                  WHERE n.oid OPERATOR(pg_catalog.=) $1
                    AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                                     WHERE d.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_namespace'::pg_catalog.regclass
                                       AND d.refobjid OPERATOR(pg_catalog.=) $1))",
        &[schema.into()],
    ));
    if let Some(name) = name {
        spi(Spi::run(&format!("DROP SCHEMA {name}")));
    }
}

/// Whether `DROP DATABASE` will get as far as waiting for other sessions: it runs outside a
/// transaction block, by the owner or a superuser, and either with FORCE or once no client is
/// connected (one that is would make it fail anyway).  Anything else leaves the worker alone.
///
/// A client that has just disconnected is still listed while its backend exits (dropping its
/// temporary tables, say): a script that disconnects and drops at once met one, left the
/// worker running, and then failed after DROP DATABASE's own 5 s wait for the worker.  So
/// clients get the same 5 s to leave here; a drop that will fail on a client that stays
/// takes 10 s to fail instead of 5.
unsafe fn drop_will_proceed(db: pg_sys::Oid, drop: *mut pg_sys::DropdbStmt) -> bool {
    if pg_sys::IsTransactionBlock() || !(pg_sys::superuser() || owns_database(db)) {
        return false;
    }
    let options = PgList::<pg_sys::DefElem>::from_pg((*drop).options);
    let force = options
        .iter_ptr()
        .any(|option| std::ffi::CStr::from_ptr((*option).defname).to_bytes() == b"force");
    force || clients_leave_in_time(db)
}

/// As long as `DROP DATABASE` waits for sessions to leave (CountOtherDBBackends: 50 × 100 ms).
const CLIENTS_LEAVE_WAIT: Duration = Duration::from_secs(5);

/// Whether every client session of `db` (any backend but ours, autovacuum's and this one) is
/// gone within [`CLIENTS_LEAVE_WAIT`], looked at every 100 ms as `dropdb` does.
unsafe fn clients_leave_in_time(db: pg_sys::Oid) -> bool {
    wait_until(CLIENTS_LEAVE_WAIT, Duration::from_millis(100), || {
        // The activity snapshot is kept for the transaction: cleared to see who left.
        spi(Spi::run("SELECT pg_catalog.pg_stat_clear_snapshot()"));
        !spi(Spi::get_one_with_args::<bool>(
            // Runs under the caller's search_path: every operator is schema-qualified.
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_stat_activity
                             WHERE datid OPERATOR(pg_catalog.=) $1
                               AND pid OPERATOR(pg_catalog.<>) pg_catalog.pg_backend_pid()
                               AND backend_type OPERATOR(pg_catalog.<>) 'autovacuum worker'::pg_catalog.text
                               AND backend_type OPERATOR(pg_catalog.!~~) 'pg_jobqueue %'::pg_catalog.text)",
            &[db.into()],
        ))
        .unwrap_or(false)
    })
}
