//! The SQL face of the name rule (pg_jobqueue_rules::names): `job._name_problem`.

use pg_jobqueue_rules::names::name_problem;
use pgrx::prelude::*;

/// SQL (internal): what is wrong with a name, or NULL when it is fine.
#[pg_extern(immutable, parallel_safe)]
fn _name_problem(value: &str, max_len: i32) -> Option<String> {
    name_problem(value, max_len.max(0) as usize)
}
