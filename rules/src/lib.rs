//! pg_jobqueue's pure rules: what the extension decides without PostgreSQL, a clock or a
//! network, so that each rule is unit-tested in milliseconds (`make check`) and shared by the
//! SQL functions (`src/`, their `#[pg_extern]` faces raise each problem with its SQLSTATE) and
//! the background worker's processes.
//!
//! | module | rule |
//! |---|---|
//! | [`backoff`] | the delay before a retry: exponential, capped, jittered |
//! | [`claimer`] | the `claimed_by` of the worker's processes, written and read back |
//! | [`classify`] | which failures are permanent: HTTP statuses, SQLSTATEs, the marker |
//! | [`cron`] | cron and interval schedules: parsing, next fire times across DST |
//! | [`delivery`] | endpoint URLs, delivery paths, headers, webhook ids, addresses, signatures |
//! | [`names`] | which queue, job type, worker and key names are accepted |

pub mod backoff;
pub mod claimer;
pub mod classify;
pub mod cron;
pub mod delivery;
pub mod names;

/// `text` as a SQL string literal, for messages (as SQL's quote_literal).
pub fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}
