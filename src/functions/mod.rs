//! The SQL faces of the pure rules (pg_jobqueue_rules): `#[pg_extern]` functions that take
//! SQL values, apply a rule and raise its problem with a SQLSTATE.

pub mod backoff;
pub mod claimer;
pub mod classify;
pub mod cron;
pub mod delivery;
pub mod names;
