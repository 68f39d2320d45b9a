//! The SQL face of the claimer names (pg_jobqueue_rules::claimer): `job._claimer_pid`, which
//! the scheduler finds the jobs of gone processes by.

use pg_jobqueue_rules::claimer::claimer_pid;
use pgrx::prelude::*;

/// SQL (internal): the process id of the executor or sender that a `claimed_by` names, NULL
/// when it names none.
#[pg_extern(immutable, parallel_safe, strict)]
fn _claimer_pid(claimed_by: &str) -> Option<i32> {
    claimer_pid(claimed_by)
}
