//! The connection pool, and what the connected role may do.

use std::str::FromStr;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;

use crate::error::AppError;

pub fn pool(url: &str, size: usize) -> Result<Pool, String> {
    let mut config = tokio_postgres::Config::from_str(url)
        .map_err(|e| format!("--database-url is not a valid connection string: {e}"))?;
    if config.get_application_name().is_none() {
        config.application_name("pg_jobqueue-web");
    }
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size.max(1))
        .build()
        .map_err(|e| format!("cannot build the connection pool: {e}"))
}

/// The actions the connected role may take, asked of the database for every page so that a
/// grant or revoke shows at the next page load.  The database checks again at each call: an
/// action not offered is also refused.
#[derive(Clone, Copy, Debug, Default)]
pub struct Privileges {
    pub pause_queues: bool,
    pub retry_dead: bool,
    pub retry: bool,
    pub cancel: bool,
    pub pause_schedules: bool,
    pub pause_endpoints: bool,
}

impl Privileges {
    pub async fn of(client: &deadpool_postgres::Client) -> Result<Privileges, AppError> {
        let row = client
            .query_one(
                "SELECT has_function_privilege('job.pause_queue(text)', 'EXECUTE')
                        AND has_function_privilege('job.resume_queue(text)', 'EXECUTE'),
                        has_function_privilege('job.retry_dead(text)', 'EXECUTE'),
                        has_function_privilege('job.retry(bigint)', 'EXECUTE'),
                        has_function_privilege('job.cancel(bigint)', 'EXECUTE'),
                        has_function_privilege('job.pause_schedule(text)', 'EXECUTE')
                        AND has_function_privilege('job.resume_schedule(text)', 'EXECUTE'),
                        has_function_privilege('job.pause_endpoint(text)', 'EXECUTE')
                        AND has_function_privilege('job.resume_endpoint(text)', 'EXECUTE')",
                &[],
            )
            .await?;
        Ok(Privileges {
            pause_queues: row.get(0),
            retry_dead: row.get(1),
            retry: row.get(2),
            cancel: row.get(3),
            pause_schedules: row.get(4),
            pause_endpoints: row.get(5),
        })
    }
}
