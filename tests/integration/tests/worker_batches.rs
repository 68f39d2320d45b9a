//! The executor's batches: many handler calls in one transaction, each in a subtransaction of
//! its own.  A failing or timed-out call takes nothing else with it, a batch whose commit
//! fails is run again job by job, and an executor killed mid-batch loses and doubles nothing.
//!
//! Every test runs a private cluster (src/cluster.rs) with one executor, so that its batches
//! grow as its handler proves fast.

use pg_jobqueue_integration::cluster::*;
use pg_jobqueue_integration::enqueue_many;
use pg_jobqueue_integration::sql::*;
use std::time::Duration;

/// A handler that records its payload's `n` in `seen`, with the transaction it ran in (the
/// batch's); with `"fail": true` it then divides by zero (22012, permanent), with
/// `"sleep": s` it sleeps first.
const RECORDING_HANDLER: &str = "
    CREATE TABLE seen (n int NOT NULL, batch text NOT NULL DEFAULT (txid_current() % 4294967296)::text);
    CREATE FUNCTION record(payload jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_sleep(coalesce((payload->>'sleep')::float8, 0));
        INSERT INTO seen (n) VALUES ((payload->>'n')::int);
        IF (payload->>'fail')::boolean THEN
            PERFORM 1 / 0;
        END IF;
        RETURN jsonb_build_object('n', payload->'n');
    END $$;";

fn one_executor(name: &str, setup: &str) -> (Cluster, postgres::Client) {
    let (cluster, mut client) = served_cluster(name, &[("pg_jobqueue.executors", "1")]);
    exec(&mut client, RECORDING_HANDLER);
    exec(&mut client, setup);
    (cluster, client)
}

/// Runs `count` quick jobs through queue `queue` so the executor learns its handler is fast
/// and sizes its batches up; waits until they are done.
fn warm_up(cluster: &Cluster, client: &mut postgres::Client, queue: &str, count: i64) {
    enqueue_many(client, queue, 100_000, count);
    wait_for_finished(cluster, client, queue, count, Duration::from_secs(60));
}

/// Enqueues `payloads` while the queue is paused, so the executor finds them all at once.
fn enqueue_together(client: &mut postgres::Client, queue: &str, payloads: &[String]) -> Vec<i64> {
    exec(client, &format!("SELECT job.pause_queue('{queue}')"));
    let ids = payloads
        .iter()
        .map(|p| enqueue_json(client, queue, p))
        .collect();
    exec(client, &format!("SELECT job.resume_queue('{queue}')"));
    ids
}

/// Asserts that every job of `ids` but the one at `except` completed on its first attempt.
fn assert_others_completed_first_time(client: &mut postgres::Client, ids: &[i64], except: usize) {
    for (n, &id) in ids.iter().enumerate().filter(|(n, _)| *n != except) {
        let done = job(client, id);
        assert_eq!(
            (done.state.as_str(), done.attempt),
            ("completed", 1),
            "job {n}: {:?}",
            job_errors(client, id)
        );
    }
}

/// The `n`s the handler recorded for the jobs of a test (below 1000; warm-up jobs are above).
fn seen(client: &mut postgres::Client) -> Vec<i32> {
    client
        .query("SELECT n FROM seen WHERE n < 1000 ORDER BY n", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// In a batch of 20 jobs one handler call fails: only its own writes roll back, it is
/// dead-lettered with its SQLSTATE, and the other 19 complete in the same commit as that
/// failure.
#[test]
fn a_failing_call_rolls_back_only_its_own_writes() {
    let (cluster, mut client) = one_executor(
        "batch-failing",
        "SELECT job.create_queue('b');
         SELECT job.set_handler('b', 'record(jsonb)', concurrency => 100);",
    );
    warm_up(&cluster, &mut client, "b", 300);
    let warm_transactions: i64 = one(&mut client, "SELECT count(DISTINCT batch) FROM seen", &[]);
    assert!(
        warm_transactions < 100,
        "300 quick jobs took {warm_transactions} transactions: the executor did not batch"
    );

    let payloads: Vec<String> = (0..20)
        .map(|n| format!(r#"{{"n": {n}, "fail": {}}}"#, n == 10))
        .collect();
    let ids = enqueue_together(&mut client, "b", &payloads);
    wait_for_finished(&cluster, &mut client, "b", 320, Duration::from_secs(30));

    let failed = job(&mut client, ids[10]);
    let errors = job_errors(&mut client, ids[10]);
    assert_eq!(
        (failed.state.as_str(), failed.attempt),
        ("dead", 1),
        "{errors:?}"
    );
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].sqlstate.as_deref(), Some("22012"), "{errors:?}");
    assert_others_completed_first_time(&mut client, &ids, 10);
    assert_eq!(
        seen(&mut client),
        (0..20).filter(|n| *n != 10).collect::<Vec<_>>(),
        "the failed call's insert must roll back, and only it"
    );
    // The failure was recorded (its finished_jobs row written) in the transaction the other
    // calls of its batch ran in.
    let shared: i64 = one(
        &mut client,
        "SELECT count(*) FROM seen s, job.finished_jobs f
          WHERE f.id = $1 AND s.batch = f.xmin::text AND s.n < 100",
        &[&ids[10]],
    );
    assert!(
        shared > 0,
        "no completed job committed with the failure: the failure was not part of a batch"
    );
}

/// A call that runs past the handler's timeout is cancelled (57014) and retried; the batch's
/// other jobs complete on their first attempt.
#[test]
fn a_call_that_times_out_takes_nothing_else_with_it() {
    let (cluster, mut client) = one_executor(
        "batch-timeout",
        "SELECT job.create_queue('t', max_retries => 0);
         SELECT job.set_handler('t', 'record(jsonb)', concurrency => 100, timeout => '500 milliseconds');",
    );
    warm_up(&cluster, &mut client, "t", 300);
    let payloads: Vec<String> = (0..20)
        .map(|n| {
            let sleep = if n == 5 { 3 } else { 0 };
            format!(r#"{{"n": {n}, "sleep": {sleep}}}"#)
        })
        .collect();
    let ids = enqueue_together(&mut client, "t", &payloads);
    wait_for_finished(&cluster, &mut client, "t", 320, Duration::from_secs(30));

    let slow = job(&mut client, ids[5]);
    let errors = job_errors(&mut client, ids[5]);
    assert_eq!(slow.state, "dead", "{errors:?}");
    assert_eq!(errors[0].sqlstate.as_deref(), Some("57014"), "{errors:?}");
    assert_others_completed_first_time(&mut client, &ids, 5);
    assert_eq!(
        seen(&mut client),
        (0..20).filter(|n| *n != 5).collect::<Vec<_>>(),
        "the timed-out call's insert must roll back"
    );
}

/// A deferred constraint trigger raises at commit for one job's write: the batch's commit
/// fails, so its jobs run again one by one; the culprit fails with the trigger's SQLSTATE and
/// the others complete.
#[test]
fn a_batch_whose_commit_fails_runs_its_jobs_one_by_one() {
    let (cluster, mut client) = one_executor(
        "batch-commit",
        "CREATE FUNCTION no_thirteen() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF NEW.n = 13 THEN
                 RAISE EXCEPTION 'thirteen is not allowed' USING ERRCODE = 'check_violation';
             END IF;
             RETURN NULL;
         END $$;
         CREATE CONSTRAINT TRIGGER no_thirteen AFTER INSERT ON seen
             DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION no_thirteen();
         SELECT job.create_queue('c', max_retries => 0);
         SELECT job.set_handler('c', 'record(jsonb)', concurrency => 100);",
    );
    warm_up(&cluster, &mut client, "c", 300);
    let payloads: Vec<String> = (0..20).map(|n| format!(r#"{{"n": {n}}}"#)).collect();
    let ids = enqueue_together(&mut client, "c", &payloads);
    wait_for_finished(&cluster, &mut client, "c", 320, Duration::from_secs(30));

    let culprit = job(&mut client, ids[13]);
    let errors = job_errors(&mut client, ids[13]);
    assert_eq!(
        (culprit.state.as_str(), culprit.attempt),
        ("dead", 1),
        "{errors:?}"
    );
    assert_eq!(errors[0].sqlstate.as_deref(), Some("23514"), "{errors:?}");
    assert_others_completed_first_time(&mut client, &ids, 13);
    assert_eq!(
        seen(&mut client),
        (0..20).filter(|n| *n != 13).collect::<Vec<_>>()
    );
}

/// The executor is killed (SIGKILL, so the server restarts) while it runs a batch: nothing of
/// that batch commits, its jobs are taken back as the scheduler starts again (not after their
/// leases of a minute and a half), and in the end every job's write is there exactly once.
#[test]
fn an_executor_killed_mid_batch_loses_and_doubles_nothing() {
    let (cluster, mut client) = one_executor(
        "batch-kill",
        "ALTER TABLE seen ADD CONSTRAINT seen_once UNIQUE (n);
         SELECT job.create_queue('k');
         SELECT job.set_handler('k', 'record(jsonb)', concurrency => 100, timeout => '1 minute');",
    );
    warm_up(&cluster, &mut client, "k", 300);
    // 400 jobs of 5 ms each: batches of about 10, for two seconds.
    let payloads: Vec<String> = (0..400)
        .map(|n| format!(r#"{{"n": {n}, "sleep": 0.005}}"#))
        .collect();
    let ids = enqueue_together(&mut client, "k", &payloads);
    let executor = wait_for_executors(&mut client, 1, Duration::from_secs(10))[0];
    assert!(
        wait_until(Duration::from_secs(30), || {
            one::<i64>(&mut client, "SELECT count(*) FROM seen WHERE n < 1000", &[]) >= 50
        }),
        "the executor did not get going"
    );
    let killed_at = std::time::Instant::now();
    assert!(
        kill_process(executor, "KILL"),
        "could not kill the executor"
    );
    // The server restarts: every session ends, ours too.
    assert!(
        wait_until(Duration::from_secs(30), || client
            .simple_query("SELECT 1")
            .is_err()),
        "the server did not restart after an executor was killed"
    );
    let mut client = cluster.connect_when_ready("postgres", Duration::from_secs(60));
    wait_for_finished(&cluster, &mut client, "k", 700, Duration::from_secs(60));
    assert!(
        killed_at.elapsed() < Duration::from_secs(60),
        "the killed executor's jobs waited for their leases"
    );
    let seen: i64 = one(&mut client, "SELECT count(*) FROM seen WHERE n < 1000", &[]);
    assert_eq!(
        seen, 400,
        "every job's write exactly once (a UNIQUE constraint forbids twice)"
    );
    for &id in &ids {
        assert_eq!(job(&mut client, id).state, "completed", "job {id}");
    }
    let retried: i64 = one(
        &mut client,
        "SELECT count(*) FROM job.jobs WHERE queue = 'k' AND attempt > 1",
        &[],
    );
    eprintln!("{retried} jobs ran again after the kill");
}
