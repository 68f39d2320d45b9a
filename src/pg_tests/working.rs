//! `#[pg_test]`s of working: dequeue, complete, fail and backoff, heartbeat.

#[pgrx::pg_schema]
mod tests {
    use crate::pg_tests::support::*;
    use pgrx::prelude::*;

    #[pg_test]
    fn dequeue_claims_with_a_lease() {
        run("SELECT job.create_queue('q', lease => '2 minutes')");
        let a = enqueue("q");
        let b = enqueue("q");
        enqueue("q");
        let got: String = one(
            "SELECT string_agg(concat_ws(',', id, queue, attempt, max_retries, lease_expires_at = now() + interval '2 minutes'), ';' ORDER BY id)
               FROM job.dequeue('q', 'w1', batch => 2)",
        );
        assert_eq!(got, format!("{a},q,1,5,t;{b},q,1,5,t"));
        assert_eq!(
            one::<String>(&format!("SELECT concat_ws(',', state, claimed_by, claimed_at = now()) FROM job.jobs WHERE id = {a}")),
            "running,w1,t"
        );
        assert!(one::<bool>("SELECT lease_expires_at = now() + interval '10 seconds' FROM job.dequeue('q', lease => '10 seconds')"));
        assert_eq!(
            one::<i64>("SELECT count(*) FROM job.dequeue('q', batch => 100)"),
            0
        );
    }

    #[pg_test]
    fn dequeue_rejects_bad_input() {
        queue("q");
        enqueue("q");
        for (call, message) in [
            (
                "SELECT * FROM job.dequeue('q', batch => 0)",
                "batch must be between 1 and 10000, got 0",
            ),
            (
                "SELECT * FROM job.dequeue('q', batch => NULL)",
                "batch must not be NULL",
            ),
            (
                "SELECT * FROM job.dequeue('q', lease => '0')",
                "lease must be a positive interval, got 00:00:00",
            ),
            (
                "SELECT * FROM job.dequeue('q', worker => '')",
                "worker must not be empty",
            ),
            (
                "SELECT * FROM job.dequeue('nope')",
                "queue 'nope' does not exist",
            ),
        ] {
            assert_rejected(call, message);
        }
    }

    #[pg_test]
    fn a_stalled_job_is_claimed_again_as_a_transient_failure() {
        run("SET LOCAL pg_jobqueue.rescue_interval = 0");
        run("SELECT job.create_queue('q', max_retries => 1)");
        let id = enqueue("q");
        assert_eq!(claim("q"), id);
        age_job(id);
        assert_eq!(
            one::<i32>("SELECT attempt FROM job.dequeue('q', 'second')"),
            2
        );
        assert_eq!(
            one::<String>(&format!("SELECT concat_ws(',', errors -> 0 ->> 'attempt', errors -> 0 ->> 'worker', errors -> 0 ->> 'error') FROM job.jobs WHERE id = {id}")),
            "1,tester,lease expired: the worker neither completed, failed nor heartbeated the job in time"
        );
        age_job(id);
        assert_eq!(
            one::<i64>("SELECT count(*) FROM job.dequeue('q')"),
            0,
            "retries exhausted: not handed out"
        );
        assert_eq!(state(id), "dead");
        assert_eq!(
            one::<i64>(&format!(
                "SELECT jsonb_array_length(errors) FROM job.jobs WHERE id = {id}"
            )),
            2
        );
    }

    #[pg_test]
    fn a_session_looks_for_stalled_jobs_once_per_rescue_interval() {
        run("SET LOCAL pg_jobqueue.rescue_interval = '1h'");
        queue("q");
        let id = enqueue("q");
        assert_eq!(claim("q"), id);
        age_job(id);
        assert_eq!(
            one::<i64>("SELECT count(*) FROM job.dequeue('q')"),
            0,
            "not again within the hour"
        );
        assert_eq!(state(id), "running");
        assert_eq!(
            one::<i32>("SELECT job.rescue_stalled('q')"),
            1,
            "an explicit rescue always looks"
        );
        assert_eq!(claim("q"), id);
    }

    #[pg_test]
    fn rescue_stalled_counts_and_spares_live_leases() {
        queue("q");
        queue("r");
        let stalled = enqueue("q");
        let healthy = enqueue("q");
        let other = enqueue("r");
        run("SELECT job.dequeue('q', batch => 2)");
        claim("r");
        age_job(stalled);
        age_job(other);
        assert_eq!(one::<i32>("SELECT job.rescue_stalled('q')"), 1);
        assert_eq!(state(stalled), "waiting");
        assert_eq!(state(healthy), "running");
        assert_eq!(state(other), "running");
        assert_eq!(one::<i32>("SELECT job.rescue_stalled()"), 1);
        assert_eq!(state(other), "waiting");
    }

    // ---- complete ----------------------------------------------------------------------------

    #[pg_test]
    fn complete_moves_a_running_job_to_history_with_its_result() {
        queue("q");
        let id = enqueue("q");
        assert!(
            !one::<bool>(&format!("SELECT job.complete({id})")),
            "a waiting job cannot complete"
        );
        claim("q");
        assert!(one::<bool>(&format!(
            "SELECT job.complete({id}, '{{\"sent\": true}}')"
        )));
        assert_eq!(
            one::<String>(&format!("SELECT concat_ws(',', state, result, finished_at = now(), attempt) FROM job.jobs WHERE id = {id}")),
            "completed,{\"sent\": true},t,1"
        );
        assert_eq!(one::<i64>("SELECT count(*) FROM job.live_jobs"), 0);
        assert!(
            !one::<bool>(&format!("SELECT job.complete({id})")),
            "completing twice"
        );
        assert_rejected("SELECT job.complete(424242)", "job 424242 does not exist");
        assert_rejected("SELECT job.complete(NULL)", "id must not be NULL");
    }

    #[pg_test]
    fn complete_many_acknowledges_the_running_ones() {
        queue("q");
        for _ in 0..5 {
            enqueue("q");
        }
        let waiting = enqueue("q");
        let ids: String = one("SELECT array_agg(id)::text FROM job.dequeue('q', batch => 5)");
        assert_eq!(one::<i32>(&format!("SELECT job.complete_many('{ids}'::bigint[] || {waiting}::bigint || 999999::bigint)")), 5);
        assert_eq!(one::<i64>("SELECT completed FROM job.queue_stats"), 5);
        assert_eq!(state(waiting), "waiting");
        assert_rejected("SELECT job.complete_many(NULL)", "ids must not be NULL");
    }

    // ---- fail, backoff and the dead-letter queue ---------------------------------------------

    #[pg_test]
    fn transient_failures_back_off_exponentially_then_dead_letter() {
        run("SELECT job.create_queue('q', max_retries => 5, backoff_base => '1 second', backoff_max => '10 seconds', jitter => 0)");
        let id = enqueue("q");
        for (attempt, wait) in [
            (1, "00:00:01"),
            (2, "00:00:02"),
            (3, "00:00:04"),
            (4, "00:00:08"),
            (5, "00:00:10"),
        ] {
            assert_eq!(one::<i32>("SELECT attempt FROM job.dequeue('q')"), attempt);
            assert_eq!(
                one::<String>(&format!(
                    "SELECT job.fail({id}, 'timeout {attempt}', http_status => 503)"
                )),
                "scheduled"
            );
            assert_eq!(
                one::<String>(&format!(
                    "SELECT (run_at - now())::text FROM job.jobs WHERE id = {id}"
                )),
                wait
            );
            assert_eq!(
                one::<i64>("SELECT count(*) FROM job.dequeue('q')"),
                0,
                "not before the backoff"
            );
            age_job(id);
        }
        assert_eq!(one::<i32>("SELECT attempt FROM job.dequeue('q')"), 6);
        assert_eq!(
            one::<String>(&format!("SELECT job.fail({id}, 'timeout 6')")),
            "dead"
        );
        assert_eq!(
            one::<String>(&format!("SELECT string_agg(e ->> 'error', ',' ORDER BY (e ->> 'attempt')::int) FROM job.jobs, jsonb_array_elements(errors) e WHERE id = {id}")),
            "timeout 1,timeout 2,timeout 3,timeout 4,timeout 5,timeout 6"
        );
        assert_eq!(one::<i64>("SELECT dead FROM job.queue_stats"), 1);
    }

    #[pg_test]
    fn jitter_stays_within_its_fraction() {
        run("SELECT job.create_queue('q', backoff_base => '10 seconds', backoff_max => '1 minute', jitter => 0.1)");
        let id = enqueue("q");
        claim("q");
        run(&format!("SELECT job.fail({id}, 'flaky')"));
        let wait: f64 = one(&format!(
            "SELECT extract(epoch FROM run_at - now())::float8 FROM job.jobs WHERE id = {id}"
        ));
        assert!((9.0..=11.0).contains(&wait), "{wait}");
        let spread: f64 = one("SELECT max(d) - min(d) FROM (SELECT extract(epoch FROM job.retry_delay(1, '10 seconds', '1 minute', 0.1))::float8 AS d FROM generate_series(1, 200)) s");
        assert!(spread > 0.5, "jitter varies between draws: {spread}");
    }

    #[pg_test]
    fn permanent_failures_dead_letter_at_once() {
        queue("q");
        for (args, expected) in [
            ("'bad card', permanent => true", "dead"),
            ("'not found', http_status => 404", "dead"),
            ("'unprocessable', http_status => 422", "dead"),
            ("'gone', http_status => 410", "dead"),
            ("'moved', http_status => 301", "dead"),
            ("'PERMANENT: account closed'", "dead"),
            ("'slow down', http_status => 429", "scheduled"),
            ("'in flight', http_status => 409", "scheduled"),
            ("'timeout', http_status => 408", "scheduled"),
            ("'bad gateway', http_status => 502", "scheduled"),
        ] {
            let id = enqueue("q");
            assert_eq!(claim("q"), id);
            assert_eq!(
                one::<String>(&format!("SELECT job.fail({id}, {args})")),
                expected,
                "{args}"
            );
            assert_eq!(state(id), expected);
        }
        let dead: String = one("SELECT string_agg((errors -> 0 ->> 'permanent') || '/' || coalesce(errors -> 0 ->> 'http_status', '-'), ',' ORDER BY id) FROM job.jobs WHERE state = 'dead'");
        assert_eq!(dead, "true/-,true/404,true/422,true/410,true/301,true/-");
    }

    #[pg_test]
    fn retry_after_replaces_the_computed_delay() {
        queue("q");
        let id = enqueue("q");
        claim("q");
        assert_eq!(one::<String>(&format!("SELECT job.fail({id}, 'rate limited', http_status => 429, retry_after => '90 seconds')")), "scheduled");
        assert!(one::<bool>(&format!(
            "SELECT run_at = now() + interval '90 seconds' FROM job.jobs WHERE id = {id}"
        )));
        age_job(id);
        claim("q");
        assert_eq!(
            one::<String>(&format!(
                "SELECT job.fail({id}, 'try now', retry_after => '0')"
            )),
            "waiting"
        );
        assert_eq!(claim("q"), id);
    }

    #[pg_test]
    fn no_retries_means_the_first_failure_is_final() {
        queue("q");
        let id: i64 = one("SELECT job.enqueue('q', max_retries => 0)");
        claim("q");
        assert_eq!(
            one::<String>(&format!("SELECT job.fail({id}, 'boom')")),
            "dead"
        );
    }

    #[pg_test]
    fn fail_rejects_bad_input_and_says_when_it_recorded_nothing() {
        queue("q");
        let running = enqueue("q");
        claim("q");
        let waiting = enqueue("q");
        for (call, message) in [
            (
                format!("SELECT job.fail({waiting}, 'x')"),
                format!("job {waiting} is waiting, not running: only a claimed job can fail"),
            ),
            (
                "SELECT job.fail(777777, 'x')".into(),
                "job 777777 does not exist".into(),
            ),
            (
                format!("SELECT job.fail({running}, NULL)"),
                "error must not be NULL".into(),
            ),
            (
                "SELECT job.fail(NULL, 'x')".into(),
                "id must not be NULL".into(),
            ),
            (
                format!("SELECT job.fail({running}, 'x', http_status => 42)"),
                "http_status must be an HTTP status code between 100 and 599, got 42".into(),
            ),
            (
                format!("SELECT job.fail({running}, 'x', retry_after => '-5 s')"),
                "retry_after must be a non-negative interval, got -00:00:05".into(),
            ),
            (
                format!("SELECT job.fail({running}, 'x', permanent => NULL)"),
                "permanent must not be NULL".into(),
            ),
        ] {
            assert_rejected(&call, &message);
        }
        // Finished meanwhile: nothing recorded, and NULL says so (it returned 'cancelled').
        run(&format!("SELECT job.cancel({running})"));
        let before = fingerprint();
        assert_eq!(
            one_or_null::<String>(&format!("SELECT job.fail({running}, 'late')")),
            None
        );
        assert_eq!(
            fingerprint(),
            before,
            "a fail after the cancel changed something"
        );
    }

    // ---- heartbeat ---------------------------------------------------------------------------

    #[pg_test]
    fn heartbeat_extends_a_held_lease_only() {
        run("SET LOCAL TimeZone = 'UTC'");
        run("SELECT job.create_queue('q', lease => '1 minute')");
        let id = enqueue("q");
        assert_rejected(
            &format!("SELECT job.heartbeat({id})"),
            &format!("job {id} is no longer held: it is waiting"),
        );
        claim("q");
        assert!(one::<bool>(&format!(
            "SELECT job.heartbeat({id}) = now() + interval '1 minute'"
        )));
        assert!(one::<bool>(&format!(
            "SELECT job.heartbeat({id}, '1 hour') = now() + interval '1 hour'"
        )));
        assert!(one::<bool>(&format!(
            "SELECT lease_expires_at = now() + interval '1 hour' FROM job.jobs WHERE id = {id}"
        )));
        assert_rejected(
            &format!("SELECT job.heartbeat({id}, '0')"),
            "extend must be a positive interval, got 00:00:00",
        );
        run(&format!(
            "UPDATE job.live_jobs SET lease_expires_at = '2020-01-01 00:00:00+00' WHERE id = {id}"
        ));
        assert_rejected(
            &format!("SELECT job.heartbeat({id})"),
            &format!("job {id} is no longer held: its lease expired at 2020-01-01 00:00:00+00"),
        );
        run(&format!("SELECT job.complete({id})"));
        assert_rejected(
            &format!("SELECT job.heartbeat({id})"),
            &format!("job {id} is no longer held: it is completed"),
        );
        assert_rejected("SELECT job.heartbeat(31337)", "job 31337 does not exist");
    }

    #[pg_test]
    fn dequeue_completes_what_the_worker_finished_and_claims_the_next() {
        queue("q");
        let a = enqueue("q");
        let b = enqueue("q");
        let c = enqueue("q");
        let first = one::<String>("SELECT lease_token::text FROM job.dequeue('q', 'w1')");
        // Completes a with its result, then claims b, in one call.
        let got: String = one(&format!(
            "SELECT string_agg(id::text, ',') FROM job.dequeue('q', 'w1', complete => ARRAY[{a}],
                    results => ARRAY['{{\"sent\": 1}}'::jsonb], complete_tokens => ARRAY['{first}'::uuid])"
        ));
        assert_eq!(got, b.to_string());
        assert_eq!(
            one::<String>(&format!(
                "SELECT concat_ws(',', state, result) FROM job.jobs WHERE id = {a}"
            )),
            r#"completed,{"sent": 1}"#
        );
        // A completion under a claim that is no longer current is left alone; the claim goes on.
        let second = one::<String>(&format!(
            "SELECT lease_token::text FROM job.live_jobs WHERE id = {b}"
        ));
        let got: String = one(&format!(
            "SELECT string_agg(id::text, ',') FROM job.dequeue('q', 'w1', complete => ARRAY[{b}],
                    complete_tokens => ARRAY['{first}'::uuid])"
        ));
        assert_eq!(got, c.to_string());
        assert_eq!(state(b), "running");
        // The last acknowledgement, with nothing left to claim: it still completes.
        assert_eq!(
            one::<i64>(&format!(
                "SELECT count(*) FROM job.dequeue('q', 'w1', complete => ARRAY[{b}],
                        complete_tokens => ARRAY['{second}'::uuid])"
            )),
            0
        );
        assert_eq!(state(b), "completed");
        assert!(one::<bool>(&format!(
            "SELECT result IS NULL FROM job.jobs WHERE id = {b}"
        )));
        // Counted like any completion.
        assert_eq!(
            one::<i64>("SELECT sum(completed)::bigint FROM job.metric_buckets WHERE queue = 'q'"),
            2
        );
    }

    #[pg_test]
    fn dequeue_rejects_a_malformed_acknowledgement() {
        queue("q");
        enqueue("q");
        let a = enqueue("q");
        run("SELECT * FROM job.dequeue('q', batch => 2)");
        for (call, message) in [
            (
                format!("SELECT * FROM job.dequeue('q', complete => ARRAY[{a}], results => ARRAY['1', '2']::jsonb[])"),
                "results must hold one result per completed id (1 ids), got 2".to_owned(),
            ),
            (
                format!("SELECT * FROM job.dequeue('q', complete => ARRAY[[{a}]])"),
                "complete must be a one-dimensional array of job ids without NULL".to_owned(),
            ),
            (
                format!("SELECT * FROM job.dequeue('q', complete => ARRAY[{a}, NULL])"),
                "complete must be a one-dimensional array of job ids without NULL".to_owned(),
            ),
            (
                format!("SELECT * FROM job.dequeue('q', complete => ARRAY[{a}, {a}], complete_tokens => ARRAY[gen_random_uuid(), gen_random_uuid(), gen_random_uuid()])"),
                "tokens must hold one token, or one per id (2 ids), got 3".to_owned(),
            ),
        ] {
            assert_rejected_with(&call, "22023", &message);
        }
    }

    #[pg_test]
    fn claims_resume_where_they_left_off_while_dead_entries_make_the_front_slow() {
        queue("q");
        // One transaction: every job gets the same run_at, so claim order is by id.  While
        // claims from the front are quick, each starts there: exact order.
        let ids = ids_of(
            "SELECT job.enqueue('q', jsonb_build_object('n', g)) FROM generate_series(1, 3) g",
        );
        assert_eq!(claim("q"), ids[0]);
        assert_eq!(claim("q"), ids[1]);
        let older = one::<i64>("SELECT job.enqueue('q', run_at => now() - interval '1 hour')");
        assert_eq!(claim("q"), older);
        assert_eq!(claim("q"), ids[2]);

        // 20,000 jobs claimed and finished: their dead entries (dead to this transaction
        // only, so no scan can mark them) lie at the front of the claim index.
        run("SELECT job.enqueue_many('q', array_fill('{}'::jsonb, ARRAY[20000]))");
        for _ in 0..2 {
            // (A batch is at most 10,000.)
            run("SELECT job.complete_many(array_agg(id)) FROM job.dequeue('q', batch => 10000)");
        }
        let ids = ids_of(
            "SELECT job.enqueue('q', jsonb_build_object('n', g)) FROM generate_series(1, 11) g",
        );
        let (a, b, c) = (ids[8], ids[9], ids[10]);
        for (n, &id) in ids[..8].iter().enumerate() {
            assert_eq!(claim("q"), id, "from the front (slow {})", n + 1);
        }
        assert_eq!(claim("q"), a, "from the cursor the eighth slow claim set");
        // Older than the cursor, same priority: found by the next claim from the front.
        let older = one::<i64>("SELECT job.enqueue('q', run_at => now() - interval '1 hour')");
        assert_eq!(claim("q"), b, "the claim resumes after the last one");
        // A higher priority is taken at once.
        let urgent = one::<i64>("SELECT job.enqueue('q', priority => 10)");
        assert_eq!(claim("q"), urgent);
        // Nothing after the urgent job at its priority: from the front, the older job first.
        assert_eq!(claim("q"), older);
        assert_eq!(claim("q"), c);

        // At least every 200 ms a claim starts from the front.
        let d = enqueue("q");
        let e = enqueue("q");
        assert_eq!(claim("q"), d);
        let late = one::<i64>("SELECT job.enqueue('q', run_at => now() - interval '1 hour')");
        run("SELECT pg_sleep(0.25)");
        assert_eq!(claim("q"), late);
        assert_eq!(claim("q"), e);
    }
}
