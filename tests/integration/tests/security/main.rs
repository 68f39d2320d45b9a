//! Adversarial tests of pg_jobqueue's security model: what each duty's role (the README's
//! recipes: producer, worker, monitor, admin), a role with nothing but CONNECT, and a role with
//! only USAGE on schema `job` can and cannot do, grouped by what they protect.
//!
//! The SQL-level tests run in a database of their own on the shared cluster
//! (`PGJQ_TEST_URL`, [`duty_db`]); those that need the background worker in a controlled
//! setting run a private cluster ([`duty_cluster`]).  Roles are cluster-wide, so every test
//! creates its own, named `<duty>_<test>_<pid>`, and drops them afterwards.  The fixtures
//! (roles, recipes, the fingerprint of what a role could change) are in the crate's
//! `roles` and `fingerprint` modules.
//!
//! `PGJQ_SECURITY_BASELINE=0.2.0` (or `0.4.0`) runs the same tests against databases created
//! with that release's SQL and recipes, to show which assertions it failed (a manual check:
//! expect failures there).

mod audit;
mod deliveries;
mod duties;
mod handlers;
mod queues;
mod search_path;
mod wakeups;

pub use pg_jobqueue_integration::cluster::{
    served_cluster, wait_for, wait_for_finished, wait_until, worker_pids,
};
pub use pg_jobqueue_integration::fingerprint::*;
pub use pg_jobqueue_integration::roles::*;
pub use pg_jobqueue_integration::{
    column, connect_admin, denied, error_code, error_text, exec, listen, next_notification, one,
    one_row, rows, Client, TestDb, CHANNEL, INSUFFICIENT_PRIVILEGE,
};
pub use std::collections::BTreeSet;
pub use std::time::{Duration, Instant};
