//! pg_jobqueue: background jobs inside PostgreSQL.
//!
//! The queue API is SQL (`sql/`, a file per concept): it is mostly statements, and PL/pgSQL
//! keeps their plans cached per session.  Rust holds what is clearer as code or needs the
//! server's internals: retry backoff (`backoff`), failure classification (`classify`), cron
//! expressions (`cron`, `cron_sql`), name rules (`validation`), commit-time wake-ups
//! (`wakeup`), HTTP delivery's checks and signatures (`delivery`), where a session's claims start (`claim_cursor`), internal locks (`locks`), shared memory (`shmem`), the calling role
//! (`security`), `set_handler` (`handlers`), metrics helpers (`metrics`), the stalled-job
//! look-up throttle (`rescue`), settings (`gucs`), the background worker (`worker`) and the
//! `DROP DATABASE` hook (`utility_hook`).

use pgrx::prelude::*;

mod delivery;
mod functions;
mod server;
mod session;
mod worker;

::pgrx::pg_module_magic!(name, version);

// The SQL, one file per concept, each holding the current definition of its objects (see
// sql/README.md).  The install script runs them in this order; the Rust functions a file uses
// are declared (by pgrx, from their #[pg_extern]) before it.
extension_sql_file!("../sql/tables.sql", name = "tables", bootstrap);
extension_sql_file!(
    "../sql/validation.sql",
    name = "validation",
    requires = ["tables", functions::names::_name_problem]
);
extension_sql_file!(
    "../sql/audit.sql",
    name = "audit",
    requires = ["validation", server::security::_calling_role]
);
extension_sql_file!(
    "../sql/metrics.sql",
    name = "metrics",
    requires = [
        "audit",
        session::metrics::_hist_of,
        session::metrics::_hist_bucket,
        session::metrics::_hist_add,
        session::metrics::_hist_quantile,
        session::metrics::_writer_shard,
        session::metrics::_worker_seen_due,
        worker::worker_processes
    ]
);
extension_sql_file!(
    "../sql/queues.sql",
    name = "queues",
    requires = [
        "metrics",
        server::locks::_lock_queue_for_drop,
        server::wakeup::_wake_queue_on_commit
    ]
);
extension_sql_file!(
    "../sql/producing.sql",
    name = "producing",
    requires = [
        "queues",
        server::locks::_guard_queue,
        server::wakeup::_due_on_commit
    ]
);
extension_sql_file!(
    "../sql/flow.sql",
    name = "flow",
    requires = [
        "producing",
        session::flow::_rate_take,
        session::flow::_try_lock_key,
        session::flow::_lock_enqueue_key,
        session::flow::_fair_cursor,
        session::flow::_move_fair_cursor,
        server::locks::_lock_handler_queue
    ]
);
extension_sql_file!(
    "../sql/working.sql",
    name = "working",
    requires = [
        "flow",
        session::claim_cursor::_claim_cursor,
        session::claim_cursor::_move_claim_cursor,
        functions::backoff::retry_delay,
        functions::classify::is_permanent_failure,
        session::rescue::_rescue_due,
        server::wakeup::_consumer_waits
    ]
);
extension_sql_file!(
    "../sql/operating.sql",
    name = "operating",
    requires = ["working"]
);
extension_sql_file!(
    "../sql/schedules.sql",
    name = "schedules",
    requires = [
        "operating",
        functions::cron::cron_next,
        functions::cron::_cron_latest,
        functions::cron::_check_cron,
        functions::cron::_jitter_offset,
        worker::_require_worker,
        worker::_wake_scheduler
    ]
);
extension_sql_file!(
    "../sql/handlers.sql",
    name = "handlers",
    requires = [
        "schedules",
        server::handlers::set_handler,
        server::locks::_lock_handler_queue,
        functions::claimer::_claimer_pid
    ]
);
extension_sql_file!(
    "../sql/endpoints.sql",
    name = "endpoints",
    requires = [
        "handlers",
        functions::delivery::_check_endpoint_url,
        functions::delivery::_check_http_method,
        functions::delivery::_check_delivery_path,
        functions::delivery::_check_http_headers,
        functions::delivery::_check_header_value,
        functions::delivery::_check_delivery_headers,
        functions::delivery::_check_webhook_key,
        functions::delivery::_redacted_url,
        functions::delivery::_check_webhook_secret,
        functions::delivery::_new_webhook_secret,
        functions::delivery::verify_webhook,
        server::wakeup::_wake_sender
    ]
);
extension_sql_file!(
    "../sql/privileges.sql",
    name = "privileges",
    requires = ["endpoints", functions::delivery::verify_webhook]
);
extension_sql_file!(
    "../sql/service.sql",
    name = "service",
    finalize,
    requires = [worker::_request_service]
);

/// Raises an ERROR with a hint line (pgrx's `ereport!` takes a detail, not a hint).
/// An empty hint adds none.
pub(crate) fn raise(code: PgSqlErrorCode, message: String, hint: &str) -> ! {
    let report = pgrx::pg_sys::panic::ErrorReport::new(code, message, "pg_jobqueue");
    let report = if hint.is_empty() {
        report
    } else {
        report.set_hint(hint)
    };
    report.report(PgLogLevel::ERROR);
    unreachable!("ERROR does not return")
}

pub(crate) use pg_jobqueue_rules::quote_literal;

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    server::keep_rust_backtraces_out_of_errors();
    server::gucs::init();
    server::shmem::init();
    server::utility_hook::init();
    worker::init();
}

#[cfg(any(test, feature = "pg_test"))]
mod pg_tests;

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        // Production runs preloaded (the background worker needs it); test the same way.
        vec!["shared_preload_libraries = 'pg_jobqueue'"]
    }
}
