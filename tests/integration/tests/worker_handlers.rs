//! The worker's executors run the jobs of handler queues by calling SQL functions: every
//! job once, transient errors retried with backoff, permanent ones dead-lettered, timeouts
//! enforced, the handler confined to the role that set it, and the concurrency cap kept.
//!
//! Every test runs a private cluster (src/cluster.rs) with the default two executors.

use pg_jobqueue_integration::cluster::*;
use pg_jobqueue_integration::enqueue_many;
use pg_jobqueue_integration::sql::*;
use std::collections::HashMap;
use std::time::Duration;

/// Role alice: no superuser, no login, but allowed to set handlers (the administrator's grant
/// of set_handler): her handlers run as her.
const ALICE: &str = "CREATE ROLE alice NOLOGIN;
    GRANT USAGE ON SCHEMA job TO alice;
    GRANT EXECUTE ON FUNCTION job.set_handler, job.remove_handler TO alice;";

/// 50 jobs of a handler queue: each completes once, its result stored, its payload
/// recorded exactly once by the handler (whose writes commit with the job).
#[test]
fn handler_queue_runs_every_job_once() {
    let (cluster, mut client) = served_cluster("handlers-run", &[]);
    exec(
        &mut client,
        "CREATE TABLE seen (n int NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp());
         CREATE FUNCTION record_payload(payload jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
         BEGIN
             INSERT INTO seen (n) VALUES ((payload->>'n')::int);
             RETURN jsonb_build_object('ok', true, 'n', payload->'n');
         END $$;
         SELECT job.create_queue('h');
         SELECT job.set_handler('h', 'record_payload(jsonb)', concurrency => 2);",
    );
    let ids = enqueue_many(&mut client, "h", 0, 50);
    wait_for_finished(&cluster, &mut client, "h", 50, Duration::from_secs(30));

    let jobs = queue_jobs(&mut client, "h");
    assert_eq!(jobs.len(), 50);
    for job in &jobs {
        assert!(ids.contains(&job.id));
        assert_eq!(
            (job.state.as_str(), job.attempt),
            ("completed", 1),
            "job {job:?}: errors {:?}",
            job_errors(&mut client, job.id)
        );
        let n: i64 = one(
            &mut client,
            "SELECT ($1::text::jsonb->>'n')::bigint",
            &[&job.payload],
        );
        assert_eq!(
            job.result.as_deref(),
            Some(format!(r#"{{"n": {n}, "ok": true}}"#).as_str()),
            "job {} stored the wrong result",
            job.id
        );
    }
    let counts: Vec<(i32, i64)> = rows(
        &mut client,
        "SELECT n, count(*) FROM seen GROUP BY n ORDER BY n",
        &[],
    );
    assert_eq!(
        counts,
        (0..50).map(|n| (n, 1)).collect::<Vec<_>>(),
        "each payload must be recorded exactly once"
    );
}

/// A handler that raises serialization_failure (40001) on its first two calls: the job is
/// retried with the queue's backoff (1 s, then 2 s; no jitter) and completes on attempt 3,
/// its two errors recorded with their SQLSTATE as transient.  A sequence counts the calls,
/// since nextval survives the rollback of a failed attempt.
#[test]
fn transient_handler_error_is_retried_with_backoff() {
    let (cluster, mut client) = served_cluster("handlers-transient", &[]);
    exec(
        &mut client,
        "CREATE SEQUENCE calls;
         CREATE FUNCTION flaky(payload jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
         DECLARE
             call bigint := nextval('calls');
         BEGIN
             IF call <= 2 THEN
                 RAISE EXCEPTION 'simulated conflict on call %', call
                     USING ERRCODE = 'serialization_failure';
             END IF;
             RETURN jsonb_build_object('call', call);
         END $$;
         SELECT job.create_queue('flaky', max_retries => 5, backoff_base => '1 second', jitter => 0);
         SELECT job.set_handler('flaky', 'flaky(jsonb)');",
    );
    let id = enqueue_json(&mut client, "flaky", "{}");
    wait_for_finished(&cluster, &mut client, "flaky", 1, Duration::from_secs(20));

    let done = job(&mut client, id);
    let errors = job_errors(&mut client, id);
    assert_eq!(
        (done.state.as_str(), done.attempt, done.result.as_deref()),
        ("completed", 3, Some(r#"{"call": 3}"#)),
        "errors: {errors:?}"
    );
    assert_eq!(errors.len(), 2, "{errors:?}");
    for (k, e) in errors.iter().enumerate() {
        assert_eq!(e.attempt, k as i32 + 1, "{errors:?}");
        assert_eq!(e.sqlstate.as_deref(), Some("40001"), "{errors:?}");
        assert!(!e.permanent, "a serialization failure is transient: {e:?}");
        assert!(e.error.contains("simulated conflict"), "{e:?}");
    }
    // Backoff: base × 2^(k-1) after the k-th failure.  Generous upper bounds: an executor
    // wakes for a job when it is due, not seconds later.
    let first_gap = errors[1].at - errors[0].at;
    let second_gap = done.finished_at.unwrap() - errors[1].at;
    assert!(
        (1.0..4.0).contains(&first_gap),
        "attempt 2 failed {first_gap:.3} s after attempt 1; the backoff is 1 s"
    );
    assert!(
        (2.0..5.0).contains(&second_gap),
        "attempt 3 completed {second_gap:.3} s after attempt 2 failed; the backoff is 2 s"
    );
    assert_eq!(
        one::<i64>(&mut client, "SELECT last_value FROM calls", &[]),
        3
    );
}

/// Errors that retrying cannot fix are dead-lettered at the first attempt: a division by
/// zero (22012) and a `RAISE EXCEPTION 'PERMANENT: ...'` (P0001 with the marker).  The same
/// handler succeeds for a good payload.
#[test]
fn permanent_handler_error_is_dead_lettered() {
    let (cluster, mut client) = served_cluster("handlers-permanent", &[]);
    exec(
        &mut client,
        "CREATE FUNCTION picky(payload jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
         BEGIN
             IF payload ? 'divide_by' THEN
                 RETURN jsonb_build_object('quotient', 10 / (payload->>'divide_by')::int);
             END IF;
             RAISE EXCEPTION 'PERMANENT: no such customer';
         END $$;
         SELECT job.create_queue('picky', max_retries => 5, backoff_base => '1 second');
         SELECT job.set_handler('picky', 'picky(jsonb)');",
    );
    let by_zero = enqueue_json(&mut client, "picky", r#"{"divide_by": 0}"#);
    let refused = enqueue_json(&mut client, "picky", r#"{"customer": 7}"#);
    let good = enqueue_json(&mut client, "picky", r#"{"divide_by": 5}"#);
    wait_for_finished(&cluster, &mut client, "picky", 3, Duration::from_secs(20));

    let ok = job(&mut client, good);
    assert_eq!(
        (ok.state.as_str(), ok.result.as_deref()),
        ("completed", Some(r#"{"quotient": 2}"#))
    );
    for (id, sqlstate, text) in [
        (by_zero, "22012", "division by zero"),
        (refused, "P0001", "PERMANENT: no such customer"),
    ] {
        let dead = job(&mut client, id);
        let errors = job_errors(&mut client, id);
        assert_eq!(
            (dead.state.as_str(), dead.attempt),
            ("dead", 1),
            "job {id} should be dead after one attempt: {errors:?}"
        );
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].sqlstate.as_deref(), Some(sqlstate), "{errors:?}");
        assert!(errors[0].permanent, "{errors:?}");
        assert!(errors[0].error.contains(text), "{errors:?}");
    }
}

/// A handler that sleeps 5 s under `timeout => '1 second'` is cancelled after a second
/// (57014, transient) and retried; with max_retries 1 the second timeout dead-letters it.
/// The executors survive, and a short job of the same handler then completes.
#[test]
fn handler_timeout_cancels_the_attempt_and_retries() {
    let (cluster, mut client) = served_cluster("handlers-timeout", &[]);
    exec(
        &mut client,
        "CREATE FUNCTION sleepy(payload jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
         BEGIN
             PERFORM pg_sleep((payload->>'sleep')::float8);
             RETURN jsonb_build_object('slept', payload->'sleep');
         END $$;
         SELECT job.create_queue('sleepy', max_retries => 1, backoff_base => '1 second', jitter => 0);
         SELECT job.set_handler('sleepy', 'sleepy(jsonb)', concurrency => 2, timeout => '1 second');",
    );
    let executors = wait_for_executors(&mut client, 2, Duration::from_secs(10));
    let id = enqueue_json(&mut client, "sleepy", r#"{"sleep": 5}"#);
    wait_for_finished(&cluster, &mut client, "sleepy", 1, Duration::from_secs(20));

    let dead = job(&mut client, id);
    let errors = job_errors(&mut client, id);
    assert_eq!(
        (dead.state.as_str(), dead.attempt),
        ("dead", 2),
        "two timed-out attempts with max_retries 1: {errors:?}"
    );
    assert_eq!(errors.len(), 2, "{errors:?}");
    for e in &errors {
        assert_eq!(e.sqlstate.as_deref(), Some("57014"), "{errors:?}");
        assert!(!e.permanent, "a timeout is transient: {e:?}");
        assert!(e.error.contains("statement timeout"), "{e:?}");
    }
    assert!(
        errors[0].at - dead.enqueued_at < 4.0,
        "the first attempt ended {:.3} s after the enqueue: the 1 s timeout did not cut the 5 s sleep",
        errors[0].at - dead.enqueued_at
    );
    assert!(
        errors[1].at - errors[0].at >= 1.0 && errors[1].at - errors[0].at < 4.5,
        "attempt 2 (1 s backoff + 1 s timeout) ended {:.3} s after attempt 1",
        errors[1].at - errors[0].at
    );

    let quick = enqueue_json(&mut client, "sleepy", r#"{"sleep": 0.2}"#);
    wait_for_finished(&cluster, &mut client, "sleepy", 2, Duration::from_secs(10));
    let quick = job(&mut client, quick);
    assert_eq!(
        (quick.state.as_str(), quick.attempt, quick.result.as_deref()),
        ("completed", 1, Some(r#"{"slept": 0.2}"#)),
        "a short job after the timeouts: {:?}",
        job_errors(&mut client, quick.id)
    );
    assert_eq!(
        worker_pids(&mut client, "executor"),
        executors,
        "the executors were replaced: a timeout must not kill the process"
    );
}

/// A handler set by role alice runs as alice, not as the worker's superuser, and cannot
/// become anyone else: RESET ROLE, SET ROLE, SET SESSION AUTHORIZATION and set_config('role')
/// all fail inside it, and a handler that tries without catching the error is dead-lettered.
#[test]
fn handler_runs_as_the_role_that_set_it_and_cannot_escape() {
    let (cluster, mut client) = served_cluster("handlers-role", &[]);
    exec(&mut client, ALICE);
    exec(
        &mut client,
        r#"         CREATE TABLE alice_log (queue text, who text, superuser boolean, note text);
         GRANT SELECT, INSERT ON alice_log TO alice;

         CREATE FUNCTION log_self(queue text, note text) RETURNS void LANGUAGE sql AS $$
             INSERT INTO alice_log
             SELECT queue, current_user, (SELECT rolsuper FROM pg_roles WHERE rolname = current_user), note
         $$;
         CREATE FUNCTION whoami(payload jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
         BEGIN
             PERFORM log_self('whoami', NULL);
             RETURN jsonb_build_object('user', current_user::text);
         END $$;
         CREATE FUNCTION escape_caught(payload jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
         DECLARE
             stmt text;
         BEGIN
             FOREACH stmt IN ARRAY ARRAY['RESET ROLE', 'SET ROLE postgres',
                                         'SET SESSION AUTHORIZATION postgres',
                                         'RESET SESSION AUTHORIZATION',
                                         'SELECT set_config(''role'', ''postgres'', false)'] LOOP
                 BEGIN
                     EXECUTE stmt;
                     PERFORM log_self('escape_caught', 'succeeded: ' || stmt);
                 EXCEPTION WHEN OTHERS THEN
                     PERFORM log_self('escape_caught', 'refused: ' || stmt || ': ' || SQLERRM);
                 END;
             END LOOP;
             PERFORM log_self('escape_caught', 'after');
             RETURN jsonb_build_object('user', current_user::text);
         END $$;
         CREATE FUNCTION escape_raw(payload jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
         BEGIN
             RESET ROLE;
             PERFORM log_self('escape_raw', 'after RESET ROLE');
             RETURN jsonb_build_object('user', current_user::text);
         END $$;
         SELECT job.create_queue('whoami', max_retries => 0);
         SELECT job.create_queue('escape_caught', max_retries => 0);
         SELECT job.create_queue('escape_raw', max_retries => 0);

         SET ROLE alice;
         SELECT job.set_handler('whoami', 'whoami(jsonb)');
         SELECT job.set_handler('escape_caught', 'escape_caught(jsonb)');
         SELECT job.set_handler('escape_raw', 'escape_raw(jsonb)');
         RESET ROLE;"#,
    );
    let run_as: Vec<String> = column(
        &mut client,
        "SELECT run_as::text FROM job.handlers ORDER BY queue",
        &[],
    );
    assert_eq!(run_as, ["alice", "alice", "alice"]);

    let whoami = enqueue_json(&mut client, "whoami", "{}");
    let caught = enqueue_json(&mut client, "escape_caught", "{}");
    let raw = enqueue_json(&mut client, "escape_raw", "{}");
    for queue in ["whoami", "escape_caught", "escape_raw"] {
        wait_for_finished(&cluster, &mut client, queue, 1, Duration::from_secs(20));
    }

    for id in [whoami, caught] {
        let done = job(&mut client, id);
        assert_eq!(
            (done.state.as_str(), done.result.as_deref()),
            ("completed", Some(r#"{"user": "alice"}"#)),
            "job {id}: {:?}",
            job_errors(&mut client, id)
        );
    }
    let log: Vec<(String, String, bool, Option<String>)> = rows(
        &mut client,
        "SELECT queue, who, superuser, note FROM alice_log ORDER BY queue, note",
        &[],
    );
    for (queue, who, superuser, note) in &log {
        assert_eq!(
            (who.as_str(), *superuser),
            ("alice", false),
            "{queue} ran as {who} (superuser {superuser}) at {note:?}\nlog: {log:#?}"
        );
    }
    let caught_notes: Vec<&str> = log
        .iter()
        .filter(|row| row.0 == "escape_caught")
        .filter_map(|row| row.3.as_deref())
        .collect();
    assert_eq!(caught_notes.len(), 6, "{caught_notes:#?}");
    assert!(caught_notes.contains(&"after"), "{caught_notes:#?}");
    for note in caught_notes.iter().filter(|n| **n != "after") {
        assert!(
            note.starts_with("refused: "),
            "the handler changed its role: {note}"
        );
    }
    assert!(
        log.iter().any(|row| row.0 == "whoami"),
        "whoami logged nothing: {log:#?}"
    );
    assert!(
        !log.iter().any(|row| row.0 == "escape_raw"),
        "escape_raw got past RESET ROLE: {log:#?}"
    );

    let failed = job(&mut client, raw);
    let errors = job_errors(&mut client, raw);
    assert_eq!(failed.state, "dead", "{errors:?}");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(
        errors[0].sqlstate.as_deref(),
        Some("42501"),
        "RESET ROLE inside the handler must fail with insufficient_privilege: {errors:?}"
    );
}

/// `concurrency => 1` lets one job of the queue run at a time although two executors are
/// idle; `concurrency => 2` on another queue with the same handler does run two at once.
/// SQL making table `spans` and handler function `name`, which sleeps `sleep` seconds and
/// records the span it ran (start, end) under its payload's `field` (as `key`) and `n`.
fn span_recorder(name: &str, sleep: &str, field: &str) -> String {
    format!(
        "CREATE TABLE spans (key text, n int, started timestamptz, ended timestamptz);
         CREATE FUNCTION {name}(payload jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
         DECLARE
             t0 timestamptz := clock_timestamp();
         BEGIN
             PERFORM pg_sleep({sleep});
             INSERT INTO spans VALUES (payload->>'{field}', (payload->>'n')::int, t0, clock_timestamp());
             RETURN '{{}}';
         END $$;"
    )
}

#[test]
fn handler_concurrency_cap_is_respected() {
    let (cluster, mut client) = served_cluster("handlers-concurrency", &[]);
    exec(
        &mut client,
        &format!(
            "{}
             SELECT job.create_queue('one');
             SELECT job.create_queue('two');
             SELECT job.set_handler('one', 'slow(jsonb)', concurrency => 1);
             SELECT job.set_handler('two', 'slow(jsonb)', concurrency => 2);",
            span_recorder("slow", "0.5", "queue")
        ),
    );
    wait_for_executors(&mut client, 2, Duration::from_secs(10));

    let spans = |client: &mut postgres::Client, queue: &str| -> Vec<(f64, f64)> {
        rows(
            client,
            "SELECT extract(epoch FROM started)::float8, extract(epoch FROM ended)::float8
               FROM spans WHERE key = $1 ORDER BY started",
            &[&queue],
        )
    };
    let mut by_queue = HashMap::new();
    for queue in ["one", "two"] {
        exec(
            &mut client,
            &format!(
                "SELECT job.enqueue_many('{queue}', ARRAY(SELECT jsonb_build_object('queue', '{queue}', 'n', g)
                                                          FROM generate_series(1, 6) g))"
            ),
        );
        wait_for_finished(&cluster, &mut client, queue, 6, Duration::from_secs(30));
        let s = spans(&mut client, queue);
        assert_eq!(s.len(), 6, "{queue}: {s:?}");
        by_queue.insert(queue, s);
    }

    let one_spans = &by_queue["one"];
    for pair in one_spans.windows(2) {
        assert!(
            pair[1].0 >= pair[0].1,
            "two jobs of a concurrency-1 queue overlapped: {:?} and {:?}\nall: {one_spans:?}",
            pair[0],
            pair[1]
        );
    }
    let two_spans = &by_queue["two"];
    let overlapping = two_spans.windows(2).filter(|p| p[1].0 < p[0].1).count();
    assert!(
        overlapping > 0,
        "a concurrency-2 queue with two executors never ran two jobs at once: {two_spans:?}"
    );
    let completed: i64 = one(
        &mut client,
        "SELECT count(*) FROM job.jobs WHERE state = 'completed' AND attempt = 1",
        &[],
    );
    assert_eq!(completed, 12);
}

/// Flow control applies to the executors too: a handler queue with `key_concurrency => 1` and
/// a handler `concurrency` of 2, 12 jobs over 3 keys, 2 executors.  Jobs of one key never
/// overlap, jobs of different keys do, and each job runs once.
#[test]
fn executors_keep_a_queues_key_concurrency() {
    let (cluster, mut client) = served_cluster("handlers-keys", &[]);
    exec(
        &mut client,
        &format!(
            "{}
             SELECT job.create_queue('keyed', key_concurrency => 1);
             SELECT job.set_handler('keyed', 'slow_key(jsonb)', concurrency => 2);",
            span_recorder("slow_key", "0.2", "key")
        ),
    );
    wait_for_executors(&mut client, 2, Duration::from_secs(10));
    exec(
        &mut client,
        "SELECT job.enqueue('keyed', jsonb_build_object('key', 'k' || (g % 3), 'n', g), concurrency_key => 'k' || (g % 3))
           FROM generate_series(1, 12) g",
    );
    wait_for_finished(&cluster, &mut client, "keyed", 12, Duration::from_secs(60));
    let spans: Vec<(String, f64, f64)> = rows(
        &mut client,
        "SELECT key, extract(epoch FROM started)::float8, extract(epoch FROM ended)::float8
               FROM spans ORDER BY started",
        &[],
    );
    assert_eq!(spans.len(), 12, "{spans:?}");
    let mut across_keys = 0;
    for (i, a) in spans.iter().enumerate() {
        for b in &spans[i + 1..] {
            if b.1 < a.2 {
                assert_ne!(
                    a.0, b.0,
                    "two jobs of key {} overlapped: {a:?} and {b:?}",
                    a.0
                );
                across_keys += 1;
            }
        }
    }
    assert!(
        across_keys > 0,
        "jobs of different keys never ran at once: {spans:?}"
    );
    let completed: i64 = one(
        &mut client,
        "SELECT count(*) FROM job.jobs WHERE queue = 'keyed' AND state = 'completed' AND attempt = 1",
        &[],
    );
    assert_eq!(completed, 12);
}

/// A handler's settings end with its job.  Alice's handler sets search_path to put a
/// schema of hers first and sets a custom setting; neither may reach the executor's own
/// statements (job.complete, the slot release, the next claim: they run as the superuser, so
/// a function of hers named like a built-in one they call unqualified would run as
/// superuser) nor the next job of another queue, which runs in the same executor.
#[test]
fn handler_settings_cannot_hijack_the_executor() {
    let (cluster, mut client) =
        served_cluster("handlers-settings", &[("pg_jobqueue.executors", "1")]);
    exec(&mut client, ALICE);
    exec(
        &mut client,
        r#"         CREATE SCHEMA alice_s AUTHORIZATION alice;
         CREATE TABLE public.alice_log (who text, superuser boolean, note text);
         GRANT SELECT, INSERT ON public.alice_log TO alice;
         SELECT job.create_queue('sneaky', max_retries => 0);
         SELECT job.create_queue('after', max_retries => 0);

         SET ROLE alice;
         -- A trap named like the built-in the worker's slot release calls unqualified.
         CREATE FUNCTION alice_s.pg_advisory_unlock(int, int) RETURNS boolean LANGUAGE plpgsql AS $$
         BEGIN
             INSERT INTO public.alice_log
             SELECT current_user, (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user),
                    'alice_s.pg_advisory_unlock';
             RETURN pg_catalog.pg_advisory_unlock($1, $2);
         END $$;
         -- And one named like the built-in the executor's claim query calls unqualified.
         CREATE FUNCTION alice_s.format(text, name, name) RETURNS text LANGUAGE plpgsql AS $$
         BEGIN
             INSERT INTO public.alice_log
             SELECT current_user, (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user),
                    'alice_s.format';
             RETURN pg_catalog.format($1, $2, $3);
         END $$;
         CREATE FUNCTION alice_s.sneaky(payload jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
         BEGIN
             PERFORM pg_catalog.set_config('search_path', 'alice_s, pg_catalog', false);
             PERFORM pg_catalog.set_config('alice.note', 'set by alice', false);
             RETURN '{"done": true}';
         END $$;
         SELECT job.set_handler('sneaky', 'alice_s.sneaky(jsonb)');
         RESET ROLE;

         CREATE FUNCTION public.settings(payload jsonb) RETURNS jsonb LANGUAGE sql AS $$
             SELECT jsonb_build_object('note', coalesce(current_setting('alice.note', true), ''),
                                       'search_path', current_setting('search_path'))
         $$;
         SELECT job.set_handler('after', 'public.settings(jsonb)');"#,
    );
    let sneaky = enqueue_json(&mut client, "sneaky", "{}");
    wait_for_finished(&cluster, &mut client, "sneaky", 1, Duration::from_secs(20));
    let after = enqueue_json(&mut client, "after", "{}");
    wait_for_finished(&cluster, &mut client, "after", 1, Duration::from_secs(20));

    let escalations: Vec<(String, bool, String)> = rows(
        &mut client,
        "SELECT who, superuser, note FROM alice_log WHERE who <> 'alice' OR superuser",
        &[],
    );
    assert!(
        escalations.is_empty(),
        "alice's functions ran as another role after her handler changed search_path \
         ({} calls), e.g. {:?}",
        escalations.len(),
        escalations.first()
    );
    let sneaky = job(&mut client, sneaky);
    assert_eq!(
        (sneaky.state.as_str(), sneaky.result.as_deref()),
        ("completed", Some(r#"{"done": true}"#)),
        "{:?}",
        job_errors(&mut client, sneaky.id)
    );
    let after = job(&mut client, after);
    assert_eq!(
        (after.state.as_str(), after.result.as_deref()),
        (
            "completed",
            Some(r#"{"note": "", "search_path": "\"$user\", public"}"#)
        ),
        "the next job saw the settings of alice's handler"
    );
}
