//! Producing from several sessions: enqueues are transactional, and racing enqueues of one
//! idempotency key make one job.

use pg_jobqueue_integration::*;
use std::collections::HashSet;
use std::sync::mpsc;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

/// A job enqueued in a transaction exists for others only once that transaction commits, and
/// never if it rolls back.
/// Job `id` of `queue`, not committed yet, is invisible to `other`: not in job.jobs, and not
/// dequeued.
fn assert_unseen(other: &mut Client, queue: &str, id: i64) {
    assert_eq!(
        job_state(other, id),
        None,
        "uncommitted job visible to another session"
    );
    assert!(
        dequeue(other, queue, "other", 10, None).is_empty(),
        "uncommitted job was dequeued"
    );
}

#[test]
fn enqueue_is_transactional() {
    let (db, queue, mut producer) = queue_db("transactional", "tx", "");
    let mut other = db.connect();

    // Rolled back: the job never exists.
    let mut tx = producer.transaction().unwrap();
    let rolled_back: i64 = one(
        &mut tx,
        "SELECT job.enqueue($1, '{\"n\": 1}'::jsonb)",
        &[&queue],
    );
    // The producer's own transaction sees it ...
    let own: i64 = one(
        &mut tx,
        "SELECT count(*) FROM job.jobs WHERE id = $1 AND state = 'waiting'",
        &[&rolled_back],
    );
    assert_eq!(own, 1, "the enqueuing transaction should see its own job");
    // ... nobody else does.
    assert_unseen(&mut other, &queue, rolled_back);
    tx.rollback().unwrap();
    assert_eq!(
        job_state(&mut other, rolled_back),
        None,
        "rolled-back job exists"
    );
    assert_eq!(
        job_state(&mut producer, rolled_back),
        None,
        "rolled-back job exists"
    );
    assert_eq!(job_count(&mut other, &queue), 0);
    assert!(
        dequeue(&mut other, &queue, "other", 10, None).is_empty(),
        "rolled-back job was dequeued"
    );

    // Committed: visible and dequeueable, once.
    let mut tx = producer.transaction().unwrap();
    let committed: i64 = one(
        &mut tx,
        "SELECT job.enqueue($1, '{\"n\": 2}'::jsonb)",
        &[&queue],
    );
    assert_ne!(committed, rolled_back);
    assert_unseen(&mut other, &queue, committed);
    tx.commit().unwrap();
    assert_eq!(job_state(&mut other, committed).as_deref(), Some("waiting"));
    let claimed = dequeue(&mut other, &queue, "other", 10, None);
    assert_eq!(ids_attempts(&claimed), [(committed, 1)]);
    assert_eq!(
        job_state(&mut producer, committed).as_deref(),
        Some("running")
    );
    assert_eq!(complete_many(&mut other, &[committed]), 1);
    assert_eq!(
        job_count(&mut other, &queue),
        1,
        "exactly the committed job exists"
    );
}

/// Starts `enqueue_with_key` on a new connection in another thread; the receiver gets its
/// result.  Returns the connection's backend pid as well.
fn enqueue_in_thread(
    db: &TestDb,
    queue: &str,
    key: &str,
) -> (i32, mpsc::Receiver<Result<i64, String>>) {
    let mut client = db.connect();
    let pid = backend_pid(&mut client);
    let (send, receive) = mpsc::channel();
    let (queue, key) = (queue.to_owned(), key.to_owned());
    thread::spawn(move || {
        client
            .batch_execute("SET statement_timeout = '20s'")
            .unwrap();
        let result = enqueue_with_key(&mut client, &queue, &key).map_err(|e| error_text(&e));
        let _ = send.send(result);
    });
    (pid, receive)
}

/// Session `a` enqueues key 'K' into `queue` in a transaction it leaves open, and session B
/// (a new connection, in another thread) enqueues 'K' too and is seen waiting for A's
/// transaction.  A's open transaction, A's job id and where B's result will come.
fn race_for_a_key_held_open<'a>(
    db: &TestDb,
    queue: &str,
    a: &'a mut Client,
    observer: &mut Client,
) -> (
    postgres::Transaction<'a>,
    i64,
    mpsc::Receiver<Result<i64, String>>,
) {
    let mut tx = a.transaction().unwrap();
    let a_id: i64 = one(
        &mut tx,
        "SELECT job.enqueue($1, '{}'::jsonb, idempotency_key => 'K')",
        &[&queue],
    );
    let (b_pid, b_result) = enqueue_in_thread(db, queue, "K");
    assert!(
        wait_until_lock_waiting(observer, b_pid, Duration::from_secs(5)),
        "B's enqueue of the same key should wait for A's transaction"
    );
    (tx, a_id, b_result)
}

/// Session B enqueues the key session A holds in an open transaction: B waits for A, and
/// returns A's job once A commits.
#[test]
fn idempotency_key_race_waits_for_commit() {
    let (db, queue, mut a) = queue_db("idem_commit", "idem", "");
    let mut observer = db.connect();
    let (tx, a_id, b_result) = race_for_a_key_held_open(&db, &queue, &mut a, &mut observer);
    assert!(
        b_result.recv_timeout(Duration::from_millis(300)).is_err(),
        "B's enqueue returned while A's transaction was still open"
    );
    tx.commit().unwrap();
    let b_id = b_result
        .recv_timeout(Duration::from_secs(10))
        .expect("B's enqueue did not return after A committed")
        .expect("B's enqueue failed");
    assert_eq!(
        b_id, a_id,
        "B should get the job A enqueued under the same key"
    );

    let rows = observer
        .query(
            "SELECT id, idempotency_key FROM job.jobs WHERE queue = $1",
            &[&queue],
        )
        .unwrap();
    assert_eq!(rows.len(), 1, "one key, one job");
    assert_eq!(rows[0].get::<_, i64>(0), a_id);
    assert_eq!(rows[0].get::<_, Option<String>>(1).as_deref(), Some("K"));

    // Later enqueues of the key, from anyone, keep returning that job.
    assert_eq!(enqueue_with_key(&mut observer, &queue, "K").unwrap(), a_id);
    assert_eq!(job_count(&mut observer, &queue), 1);
}

/// The same race where A rolls back: B, which waited, enqueues its own job.
#[test]
fn idempotency_key_race_after_rollback() {
    let (db, queue, mut a) = queue_db("idem_rollback", "idem_rb", "");
    let mut observer = db.connect();
    let (tx, a_id, b_result) = race_for_a_key_held_open(&db, &queue, &mut a, &mut observer);
    tx.rollback().unwrap();
    let b_id = b_result
        .recv_timeout(Duration::from_secs(10))
        .expect("B's enqueue did not return after A rolled back")
        .expect("B's enqueue failed");
    assert_ne!(b_id, a_id, "A's job was rolled back; B must not return it");

    let ids: Vec<i64> = column(
        &mut observer,
        "SELECT id FROM job.jobs WHERE queue = $1",
        &[&queue],
    );
    assert_eq!(ids, vec![b_id], "exactly B's job should exist");
    assert_eq!(job_state(&mut observer, a_id), None);
    let key_owner: i64 = one(
        &mut observer,
        "SELECT job_id FROM job.idempotency_keys WHERE queue = $1 AND key = 'K'",
        &[&queue],
    );
    assert_eq!(key_owner, b_id);
    assert_eq!(
        ids_attempts(&dequeue(&mut observer, &queue, "w", 10, None)),
        [(b_id, 1)]
    );
}

/// 8 sessions released together enqueue the same key, over several rounds: each round makes
/// exactly one job and every session gets its id.
#[test]
fn idempotency_key_many_way_race() {
    const THREADS: usize = 8;
    const ROUNDS: usize = 25;
    let (db, queue, mut observer) = queue_db("idem_race", "idem_race", "");

    let barrier = Arc::new(Barrier::new(THREADS));
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let mut client = db.connect();
            client
                .batch_execute("SET statement_timeout = '20s'")
                .unwrap();
            let queue = queue.clone();
            let barrier = barrier.clone();
            thread::spawn(move || {
                (0..ROUNDS)
                    .map(|round| {
                        barrier.wait();
                        enqueue_with_key(&mut client, &queue, &format!("key-{round}"))
                            .unwrap_or_else(|e| {
                                panic!(
                                    "enqueue in round {round} failed: {err}",
                                    err = error_text(&e)
                                )
                            })
                    })
                    .collect::<Vec<i64>>()
            })
        })
        .collect();
    let results: Vec<Vec<i64>> = threads
        .into_iter()
        .map(|t| t.join().expect("an enqueuer panicked"))
        .collect();

    let mut round_ids = HashSet::new();
    for round in 0..ROUNDS {
        let ids: HashSet<i64> = results.iter().map(|r| r[round]).collect();
        assert_eq!(
            ids.len(),
            1,
            "round {round}: the sessions got different jobs for one key: {ids:?}"
        );
        let id = *ids.iter().next().unwrap();
        assert!(round_ids.insert(id), "two keys returned the same job {id}");
        let rows = observer
            .query(
                "SELECT id FROM job.jobs WHERE queue = $1 AND idempotency_key = $2",
                &[&queue, &format!("key-{round}")],
            )
            .unwrap();
        assert_eq!(
            rows.len(),
            1,
            "round {round}: {} jobs for one key",
            rows.len()
        );
        assert_eq!(rows[0].get::<_, i64>(0), id);
    }
    assert_eq!(
        job_count(&mut observer, &queue),
        ROUNDS as i64,
        "one job per key, nothing else"
    );
}
