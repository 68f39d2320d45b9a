//! pg_jobqueue: background jobs inside PostgreSQL.
//!
//! The queue API is SQL (`sql/queue_api.sql`): it is mostly statements, and PL/pgSQL keeps
//! their plans cached per session.  Rust holds the logic that is clearer as code: retry
//! backoff, failure classification, commit-time wake-ups and
//! the stalled-job look-up throttle.

use pgrx::prelude::*;

mod backoff;
mod classify;
mod gucs;
mod rescue;
mod wakeup;

::pgrx::pg_module_magic!(name, version);

extension_sql_file!("../sql/schema.sql", name = "schema", bootstrap);
extension_sql_file!("../sql/queue_api.sql", name = "queue_api", finalize);

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    gucs::init();
    wakeup::init();
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
