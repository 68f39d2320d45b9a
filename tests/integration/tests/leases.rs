//! Lease tokens: a worker that froze past its lease cannot finish, fail or extend the attempt
//! of the worker that took the job over.  Real sessions, real time, the background worker
//! taking jobs back as their leases run out.

use pg_jobqueue_integration::*;
use std::collections::HashMap;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

/// Worker A claims with a 1 s lease and stalls; the worker takes the job back, B claims it
/// (attempt 2).  Then A's complete returns false and stores nothing, A's fail(permanent)
/// records nothing and returns 'running', A's heartbeat raises SQLSTATE 55000; B finishes.
#[test]
fn a_worker_that_lost_its_lease_cannot_touch_the_next_attempt() {
    let db = TestDb::create("lease_fence");
    let mut a = db.connect();
    let mut b = db.connect();
    let queue = unique_queue("fence");
    create_queue(&mut a, &queue);
    let id = enqueue(&mut a, &queue, 1);
    let claim_a = dequeue(&mut a, &queue, "a", 1, Some("1 second"));
    assert_eq!(ids_attempts(&claim_a), [(id, 1)]);

    // A stalls; once its lease runs out the job is taken back (by the worker's scheduler, or
    // by B's own dequeue) and B gets attempt 2.
    let started = Instant::now();
    let claim_b = loop {
        let got = dequeue(&mut b, &queue, "b", 1, Some("1 minute"));
        if !got.is_empty() {
            break got;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "nobody took the job back"
        );
        thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(ids_attempts(&claim_b), [(id, 2)]);
    let stale = &claim_a[0].token;

    let completed: bool = one(
        &mut a,
        "SELECT job.complete($1, '{\"by\": \"a\"}', $2::text::uuid)",
        &[&id, stale],
    );
    assert!(!completed, "A completed B's attempt");
    let state: Option<String> = one(
        &mut a,
        "SELECT job.fail($1, 'A gives up', permanent => true, token => $2::text::uuid)",
        &[&id, stale],
    );
    assert_eq!(
        state, None,
        "A's fail must record nothing and say so (NULL), not end B's attempt"
    );
    assert_refused(
        a.query_one(
            "SELECT job.heartbeat($1, token => $2::text::uuid)",
            &[&id, stale],
        ),
        &SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE,
        "A's heartbeat extended B's lease",
    );
    let lease_b: f64 = one(
        &mut b,
        "SELECT extract(epoch FROM lease_expires_at - now())::float8 FROM job.jobs WHERE id = $1",
        &[&id],
    );
    assert!(lease_b > 50.0, "B's lease was changed: {lease_b} s left");

    let done: bool = one(
        &mut b,
        "SELECT job.complete($1, '{\"by\": \"b\"}', $2::text::uuid)",
        &[&id, &claim_b[0].token],
    );
    assert!(done);
    let (state, attempt, result, errors): (String, i32, String, i32) = one_row(&mut b, "SELECT state, attempt, result::text, jsonb_array_length(errors) FROM job.jobs WHERE id = $1", &[&id]);
    assert_eq!(
        (state.as_str(), attempt, result.as_str(), errors),
        ("completed", 2, "{\"by\": \"b\"}", 1),
        "one error (A's stalled attempt), B's result"
    );
}

/// Six workers with 500 ms leases drain 300 jobs; every third claim, a worker freezes for
/// 1.5 s (past its lease) before finishing with its token.  Every job completes exactly once,
/// and its stored result is always that of the attempt that completed it: a frozen worker
/// never finishes an attempt that was taken over.
#[test]
fn frozen_workers_never_finish_an_attempt_taken_over() {
    const JOBS: i64 = 300;
    const WORKERS: usize = 6;
    let db = TestDb::create("lease_freeze");
    let queue = unique_queue("freeze");
    {
        let mut c = db.connect();
        c.execute(
            "SELECT job.create_queue($1, max_retries => 100, backoff_base => '10 ms', backoff_max => '10 ms')",
            &[&queue],
        )
        .unwrap();
        enqueue_many(&mut c, &queue, 0, JOBS);
    }
    let barrier = Arc::new(Barrier::new(WORKERS));
    let handles: Vec<_> = (0..WORKERS)
        .map(|w| {
            let barrier = barrier.clone();
            let queue = queue.clone();
            let mut c = db.connect();
            thread::spawn(move || {
                barrier.wait();
                let started = Instant::now();
                let (mut completed, mut refused, mut claims) = (0u32, 0u32, 0u32);
                let mut idle_since: Option<Instant> = None;
                loop {
                    assert!(started.elapsed() < Duration::from_secs(90), "worker {w} ran out of time");
                    let got = dequeue(&mut c, &queue, &format!("w{w}"), 1, Some("500 milliseconds"));
                    let Some(job) = got.first() else {
                        let left: i64 = one(&mut c, "SELECT count(*) FROM job.jobs WHERE queue = $1 AND state <> 'completed'", &[&queue]);
                        if left == 0 {
                            break;
                        }
                        // Jobs held by frozen workers come back when their leases run out.
                        idle_since.get_or_insert_with(Instant::now);
                        thread::sleep(Duration::from_millis(20));
                        continue;
                    };
                    idle_since = None;
                    claims += 1;
                    if claims % 3 == 0 {
                        thread::sleep(Duration::from_millis(1500)); // frozen past the lease
                    }
                    let result = format!("{{\"worker\": {w}, \"attempt\": {}}}", job.attempt);
                    let ok: bool = one(&mut c, "SELECT job.complete($1, $2::text::jsonb, $3::text::uuid)", &[&job.id, &result, &job.token]);
                    if ok {
                        completed += 1;
                    } else {
                        refused += 1;
                    }
                }
                (completed, refused)
            })
        })
        .collect();
    let (mut completed, mut refused) = (0, 0);
    for h in handles {
        let (c, r) = h.join().expect("a worker panicked");
        completed += c;
        refused += r;
    }
    let mut c = db.connect();
    let rows = c
        .query(
            "SELECT id, state, attempt, (result->>'attempt')::int FROM job.jobs WHERE queue = $1",
            &[&queue],
        )
        .unwrap();
    let mut states: HashMap<String, i64> = HashMap::new();
    for r in &rows {
        let (id, state, attempt, result_attempt): (i64, String, i32, i32) =
            (r.get(0), r.get(1), r.get(2), r.get(3));
        *states.entry(state).or_default() += 1;
        assert_eq!(
            result_attempt, attempt,
            "job {id}: the stored result is attempt {result_attempt}'s, but attempt {attempt} finished it"
        );
    }
    assert_eq!(states.get("completed").copied(), Some(JOBS), "{states:?}");
    assert_eq!(completed as i64, JOBS, "each job completed exactly once");
    assert!(
        refused > 0,
        "no frozen worker lost its lease: the test proved nothing"
    );
    println!("{JOBS} jobs: {completed} completions, {refused} refused to frozen workers");
}
