//! pg_jobqueue: background jobs inside PostgreSQL.
//!
//! The queue API is SQL (`sql/`, a file per concept): it is mostly statements, and PL/pgSQL keeps
//! their plans cached per session.  Rust holds the logic that is clearer as code: retry
//! backoff, failure classification, commit-time wake-ups and
//! the stalled-job look-up throttle.

use pgrx::prelude::*;

mod backoff;
mod classify;
mod cron;
mod cron_sql;
mod gucs;
mod metrics;
mod rescue;
mod wakeup;
mod worker;

::pgrx::pg_module_magic!(name, version);

// The SQL, one file per concept, each holding the current definition of its objects (see
// sql/README.md).  The install script runs them in this order; Rust functions are declared by
// pgrx and come first where a file needs them.
extension_sql_file!("../sql/tables.sql", name = "tables", bootstrap);
extension_sql_file!("../sql/validation.sql", name = "validation", requires = ["tables"]);
extension_sql_file!("../sql/worker.sql", name = "worker", requires = ["validation"]);
extension_sql_file!("../sql/audit.sql", name = "audit", requires = ["worker"]);
extension_sql_file!("../sql/metrics.sql", name = "metrics", requires = ["audit"]);
extension_sql_file!("../sql/queues.sql", name = "queues", requires = ["metrics"]);
extension_sql_file!("../sql/producing.sql", name = "producing", requires = ["queues"]);
extension_sql_file!(
    "../sql/working.sql",
    name = "working",
    requires = [
        "producing",
        backoff::retry_delay,
        classify::is_permanent_failure,
        rescue::_rescue_due,
        wakeup::_wake_on_commit,
        wakeup::_consumer_idle
    ]
);
extension_sql_file!("../sql/operating.sql", name = "operating", requires = ["working"]);
extension_sql_file!("../sql/schedules.sql", name = "schedules", requires = ["operating"]);
extension_sql_file!("../sql/handlers.sql", name = "handlers", requires = ["schedules"]);
extension_sql_file!("../sql/privileges.sql", name = "privileges", requires = ["handlers"]);
extension_sql_file!("../sql/service.sql", name = "service", finalize);

/// Raises an ERROR with a hint line (pgrx's `ereport!` takes a detail, not a hint).
pub(crate) fn raise(code: PgSqlErrorCode, message: String, hint: &str) -> ! {
    pgrx::pg_sys::panic::ErrorReport::new(code, message, "pg_jobqueue")
        .set_hint(hint)
        .report(PgLogLevel::ERROR);
    unreachable!("ERROR does not return")
}

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    gucs::init();
    wakeup::init();
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
