//! The SQL face of failure classification (pg_jobqueue_rules::classify): `job.is_permanent_failure`.

use pg_jobqueue_rules::classify::{classify, Failure};
use pgrx::prelude::*;

/// SQL: true when `job.fail` would dead-letter this failure without retrying (NULL when the
/// error or the permanent flag is NULL).
#[pg_extern(immutable, parallel_safe)]
fn is_permanent_failure(
    error: Option<&str>,
    permanent: default!(Option<bool>, false),
    http_status: default!(Option<i32>, "NULL"),
) -> Option<bool> {
    if let Some(status) = http_status {
        if !(100..=599).contains(&status) {
            crate::raise(
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                format!(
                    "http_status must be an HTTP status code between 100 and 599, got {status}"
                ),
                "",
            );
        }
    }
    Some(classify(error?, permanent?, http_status) == Failure::Permanent)
}
