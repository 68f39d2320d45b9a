//! Queues and jobs as the tests make and take them: queues, enqueues, claims (with or
//! without their payload's test fields), completions, and what `job.queue_stats` and
//! `job.jobs` say of them.

use crate::{error_text, Client, Error};

/// `job.create_queue(queue)` with its defaults.
pub fn create_queue(client: &mut Client, queue: &str) {
    client
        .execute("SELECT job.create_queue($1)", &[&queue])
        .unwrap_or_else(|e| panic!("create_queue({queue}) failed: {err}", err = error_text(&e)));
}

/// `job.enqueue(queue, {"n": n})`; returns the job id.
pub fn enqueue(client: &mut Client, queue: &str, n: i64) -> i64 {
    client
        .query_one(
            "SELECT job.enqueue($1, jsonb_build_object('n', $2::bigint))",
            &[&queue, &n],
        )
        .unwrap_or_else(|e| panic!("enqueue into {queue} failed: {err}", err = error_text(&e)))
        .get(0)
}

/// `job.enqueue` with an idempotency key; returns the id enqueue reports.
pub fn enqueue_with_key(client: &mut Client, queue: &str, key: &str) -> Result<i64, Error> {
    client
        .query_one(
            "SELECT job.enqueue($1, '{}'::jsonb, idempotency_key => $2)",
            &[&queue, &key],
        )
        .map(|row| row.get(0))
}

/// `job.enqueue_many(queue, [{"n": first}, ..., {"n": first + count - 1}])`; returns the ids.
pub fn enqueue_many(client: &mut Client, queue: &str, first: i64, count: i64) -> Vec<i64> {
    client
        .query(
            "SELECT job.enqueue_many($1, ARRAY(SELECT jsonb_build_object('n', g)
                                                 FROM generate_series($2::bigint, $3::bigint) g
                                                ORDER BY g))",
            &[&queue, &first, &(first + count - 1)],
        )
        .unwrap_or_else(|e| {
            panic!(
                "enqueue_many into {queue} failed: {err}",
                err = error_text(&e)
            )
        })
        .iter()
        .map(|row| row.get(0))
        .collect()
}

/// A job claimed by `job.dequeue`, with the claim's lease token (as text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    pub id: i64,
    pub attempt: i32,
    pub token: String,
}

/// `job.dequeue(queue, worker, batch, lease)`; `lease` is an interval literal or None for the
/// queue's default.
pub fn try_dequeue(
    client: &mut Client,
    queue: &str,
    worker: &str,
    batch: i32,
    lease: Option<&str>,
) -> Result<Vec<Claimed>, Error> {
    let rows = client.query(
        "SELECT id, attempt, lease_token::text FROM job.dequeue($1, $2, $3, $4::text::interval)",
        &[&queue, &worker, &batch, &lease],
    )?;
    Ok(rows
        .iter()
        .map(|r| Claimed {
            id: r.get(0),
            attempt: r.get(1),
            token: r.get(2),
        })
        .collect())
}

/// What a claim handed out, without its token: (id, attempt) per job.
pub fn ids_attempts(claimed: &[Claimed]) -> Vec<(i64, i32)> {
    claimed.iter().map(|c| (c.id, c.attempt)).collect()
}

/// [`try_dequeue`], panicking on error.
pub fn dequeue(
    client: &mut Client,
    queue: &str,
    worker: &str,
    batch: i32,
    lease: Option<&str>,
) -> Vec<Claimed> {
    try_dequeue(client, queue, worker, batch, lease).unwrap_or_else(|e| {
        panic!(
            "dequeue from {queue} by {worker} failed: {err}",
            err = error_text(&e)
        )
    })
}

/// `job.complete_many(ids)`: how many of them were running and are now completed.
pub fn complete_many(client: &mut Client, ids: &[i64]) -> i32 {
    client
        .query_one("SELECT job.complete_many($1)", &[&ids])
        .unwrap_or_else(|e| panic!("complete_many failed: {err}", err = error_text(&e)))
        .get(0)
}

/// One queue's row of `job.queue_stats`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueStats {
    pub waiting: i64,
    pub scheduled: i64,
    pub running: i64,
    pub completed: i64,
    pub dead: i64,
    pub cancelled: i64,
}

/// `job.queue_stats` for `queue`.
pub fn queue_stats(client: &mut Client, queue: &str) -> QueueStats {
    let row = client
        .query_one(
            "SELECT waiting, scheduled, running, completed, dead, cancelled
               FROM job.queue_stats WHERE queue = $1",
            &[&queue],
        )
        .unwrap_or_else(|e| {
            panic!(
                "queue_stats for {queue} failed: {err}",
                err = error_text(&e)
            )
        });
    QueueStats {
        waiting: row.get(0),
        scheduled: row.get(1),
        running: row.get(2),
        completed: row.get(3),
        dead: row.get(4),
        cancelled: row.get(5),
    }
}

/// The state of job `id` in `job.jobs`, or None when there is no such row.
pub fn job_state(client: &mut Client, id: i64) -> Option<String> {
    client
        .query_opt("SELECT state FROM job.jobs WHERE id = $1", &[&id])
        .unwrap_or_else(|e| panic!("reading job.jobs failed: {err}", err = error_text(&e)))
        .map(|row| row.get(0))
}

/// How many rows `job.jobs` has for `queue`, whatever their state.
pub fn job_count(client: &mut Client, queue: &str) -> i64 {
    client
        .query_one("SELECT count(*) FROM job.jobs WHERE queue = $1", &[&queue])
        .unwrap_or_else(|e| panic!("counting job.jobs failed: {err}", err = error_text(&e)))
        .get(0)
}

/// A job as `job.dequeue` handed it out, with what its payload says (the flow tests'
/// payloads: {"key": ..., "n": ..., "fail": ...}).
#[derive(Debug, Clone)]
pub struct Job {
    pub id: i64,
    pub attempt: i32,
    pub token: String,
    /// The payload's "key" ('' when none): the test's record of the job's concurrency or
    /// order key.
    pub key: String,
    /// The payload's "n" (-1 when none).
    pub n: i64,
    /// The payload's "fail": the worker fails the first attempt.
    pub fail: bool,
}

/// `job.dequeue(queue, worker, batch, lease)`, panicking on error.
pub fn claim(
    c: &mut Client,
    queue: &str,
    worker: &str,
    batch: i32,
    lease: Option<&str>,
) -> Vec<Job> {
    let rows = c
        .query(
            "SELECT id, attempt, lease_token::text, coalesce(payload->>'key', ''),
                    coalesce((payload->>'n')::bigint, -1), coalesce((payload->>'fail')::boolean, false)
               FROM job.dequeue($1, $2, $3, $4::text::interval)",
            &[&queue, &worker, &batch, &lease],
        )
        .unwrap_or_else(|e| panic!("dequeue from {queue} by {worker}: {}", error_text(&e)));
    rows.iter()
        .map(|r| Job {
            id: r.get(0),
            attempt: r.get(1),
            token: r.get(2),
            key: r.get(3),
            n: r.get(4),
            fail: r.get(5),
        })
        .collect()
}

/// The ids of a claim.
pub fn ids(jobs: &[Job]) -> Vec<i64> {
    jobs.iter().map(|j| j.id).collect()
}

/// `job.complete(id, NULL, token)`: whether the claim completed the job.
pub fn complete(c: &mut Client, job: &Job) -> bool {
    c.query_one(
        "SELECT job.complete($1, NULL, $2::text::uuid)",
        &[&job.id, &job.token],
    )
    .unwrap_or_else(|e| panic!("complete({}): {}", job.id, error_text(&e)))
    .get(0)
}

/// A scratch database `test` ([`crate::TestDb::create`]), a queue in it named after `prefix`
/// ([`crate::unique_queue`]) made by `job.create_queue(<name><options>)` (`options`: further
/// named arguments, e.g. `", max_retries => 1"`, or `""`), and a connection to the database.
pub fn queue_db(test: &str, prefix: &str, options: &str) -> (crate::TestDb, String, Client) {
    let db = crate::TestDb::create(test);
    let queue = crate::unique_queue(prefix);
    let mut client = db.connect();
    let sql = format!("SELECT job.create_queue($1{options})");
    client
        .execute(&sql, &[&queue])
        .unwrap_or_else(|e| panic!("{sql} ({queue}) failed: {err}", err = error_text(&e)));
    (db, queue, client)
}
