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

mod backoff;
mod claim_cursor;
mod classify;
mod cron;
mod cron_sql;
mod delivery;
mod flow;
mod gucs;
mod handlers;
mod locks;
mod metrics;
mod rescue;
mod security;
mod shmem;
mod utility_hook;
mod validation;
mod wakeup;
mod worker;

::pgrx::pg_module_magic!(name, version);

// The SQL, one file per concept, each holding the current definition of its objects (see
// sql/README.md).  The install script runs them in this order; the Rust functions a file uses
// are declared (by pgrx, from their #[pg_extern]) before it.
extension_sql_file!("../sql/tables.sql", name = "tables", bootstrap);
extension_sql_file!(
    "../sql/validation.sql",
    name = "validation",
    requires = ["tables", validation::_name_problem]
);
extension_sql_file!(
    "../sql/audit.sql",
    name = "audit",
    requires = ["validation", security::_calling_role]
);
extension_sql_file!(
    "../sql/metrics.sql",
    name = "metrics",
    requires = [
        "audit",
        metrics::_hist_of,
        metrics::_hist_bucket,
        metrics::_hist_add,
        metrics::_hist_quantile,
        metrics::_writer_shard,
        metrics::_worker_seen_due,
        worker::worker_processes
    ]
);
extension_sql_file!(
    "../sql/queues.sql",
    name = "queues",
    requires = [
        "metrics",
        locks::_lock_queue_for_drop,
        wakeup::_wake_queue_on_commit
    ]
);
extension_sql_file!(
    "../sql/producing.sql",
    name = "producing",
    requires = ["queues", locks::_guard_queue, wakeup::_due_on_commit]
);
extension_sql_file!(
    "../sql/flow.sql",
    name = "flow",
    requires = [
        "producing",
        flow::_rate_take,
        flow::_try_lock_key,
        flow::_lock_enqueue_key,
        flow::_fair_cursor,
        flow::_move_fair_cursor,
        locks::_lock_handler_queue
    ]
);
extension_sql_file!(
    "../sql/working.sql",
    name = "working",
    requires = [
        "flow",
        claim_cursor::_claim_cursor,
        claim_cursor::_move_claim_cursor,
        backoff::retry_delay,
        classify::is_permanent_failure,
        rescue::_rescue_due,
        wakeup::_consumer_waits
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
        cron_sql::cron_next,
        cron_sql::_cron_latest,
        cron_sql::_check_cron,
        cron_sql::_jitter_offset,
        worker::_require_worker,
        worker::_wake_scheduler
    ]
);
extension_sql_file!(
    "../sql/handlers.sql",
    name = "handlers",
    requires = [
        "schedules",
        handlers::set_handler,
        locks::_lock_handler_queue,
        worker::claimer::_claimer_pid
    ]
);
extension_sql_file!(
    "../sql/endpoints.sql",
    name = "endpoints",
    requires = [
        "handlers",
        delivery::_check_endpoint_url,
        delivery::_check_http_method,
        delivery::_check_delivery_path,
        delivery::_check_http_headers,
        delivery::_check_header_value,
        delivery::_check_delivery_headers,
        delivery::_check_webhook_key,
        delivery::_redacted_url,
        delivery::_check_webhook_secret,
        delivery::_new_webhook_secret,
        wakeup::_wake_sender
    ]
);
extension_sql_file!(
    "../sql/privileges.sql",
    name = "privileges",
    requires = ["endpoints", delivery::verify_webhook]
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

/// `text` as a SQL string literal, for messages (as SQL's quote_literal).
pub(crate) fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    gucs::init();
    shmem::init();
    utility_hook::init();
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
