//! pg_jobqueue: background jobs inside PostgreSQL.
//!
//! The queue API is SQL (`sql/queue_api.sql`): it is mostly statements, and PL/pgSQL keeps
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

extension_sql_file!("../sql/schema.sql", name = "schema", bootstrap);
extension_sql_file!(
    "../sql/queue_api.sql",
    name = "queue_api",
    requires = [
        "schema",
        backoff::retry_delay,
        classify::is_permanent_failure,
        rescue::_rescue_due,
        wakeup::_wake_on_commit,
        wakeup::_consumer_idle
    ]
);
// Objects new or changed in 0.2.0: the same files make the 0.1.0 -> 0.2.0 upgrade script
// (scripts/upgrade-scripts.sh), so a fresh install and an upgrade run the same SQL.
extension_sql_file!(
    "../sql/0.2.0/01_worker.sql",
    name = "v0_2_0_worker",
    requires = ["queue_api"]
);
extension_sql_file!(
    "../sql/0.2.0/05_audit.sql",
    name = "v0_2_0_audit",
    requires = ["v0_2_0_worker"]
);
extension_sql_file!(
    "../sql/0.2.0/06_metrics.sql",
    name = "v0_2_0_metrics",
    requires = ["v0_2_0_audit"]
);
extension_sql_file!(
    "../sql/0.2.0/10_queues.sql",
    name = "v0_2_0_queues",
    requires = ["v0_2_0_metrics"]
);
extension_sql_file!(
    "../sql/0.2.0/15_producing.sql",
    name = "v0_2_0_producing",
    requires = ["v0_2_0_queues"]
);
extension_sql_file!(
    "../sql/0.2.0/16_working.sql",
    name = "v0_2_0_working",
    requires = ["v0_2_0_producing"]
);
extension_sql_file!(
    "../sql/0.2.0/17_operating.sql",
    name = "v0_2_0_operating",
    requires = ["v0_2_0_working"]
);
extension_sql_file!(
    "../sql/0.2.0/20_schedules.sql",
    name = "v0_2_0_schedules",
    requires = ["v0_2_0_operating"]
);
extension_sql_file!(
    "../sql/0.2.0/30_handlers.sql",
    name = "v0_2_0_handlers",
    requires = ["v0_2_0_schedules"]
);
extension_sql_file!(
    "../sql/0.2.0/80_privileges.sql",
    name = "v0_2_0_privileges",
    requires = ["v0_2_0_handlers"]
);
extension_sql_file!(
    "../sql/0.2.0/90_service.sql",
    name = "v0_2_0_service",
    finalize
);

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
