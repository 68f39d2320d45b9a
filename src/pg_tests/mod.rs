//! `#[pg_test]`s: every function and rule of the SQL API, each error case included, a module
//! per concept like the SQL files.
//!
//! Each test runs inside one transaction, where `now()` stands still; tests that need time to
//! pass move a job's timestamps into the past instead (the integration tests wait for real).
//! pgrx runs every test as `tests.<name>()`, so each module's tests sit in a `tests` schema
//! module and their names are unique across modules.

mod support;

mod audit;
mod endpoints;
mod flow;
mod handlers;
mod inputs;
mod leases;
mod metrics;
mod operating;
mod producing;
mod queues;
mod roles;
mod schedules;
mod working;
