//! `#[pg_test]`s: every function and rule of the queue API, each error case included.
//!
//! Each test runs inside one transaction, where `now()` stands still; tests that need time to
//! pass move a job's timestamps into the past instead (the integration tests wait for real).

#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    /// The single value `query` returns.
    fn one<T: IntoDatum + FromDatum>(query: &str) -> T {
        Spi::get_one::<T>(query)
            .unwrap_or_else(|e| panic!("{query}: {e}"))
            .unwrap_or_else(|| panic!("{query}: returned NULL"))
    }

    fn run(query: &str) {
        Spi::run(query).unwrap_or_else(|e| panic!("{query}: {e}"));
    }

    /// The error message `query` raises (run in a subtransaction, so the test goes on).
    fn error_of(query: &str) -> String {
        // Created once per session, so that it also works after SET ROLE.
        run("DO $do$ BEGIN
               IF to_regprocedure('pg_temp.error_of(text)') IS NULL THEN
                 CREATE FUNCTION pg_temp.error_of(q text) RETURNS text LANGUAGE plpgsql AS $$
                 BEGIN EXECUTE q; RETURN NULL; EXCEPTION WHEN OTHERS THEN RETURN SQLERRM; END $$;
               END IF; END $do$");
        let quoted = query.replace('\'', "''");
        Spi::get_one::<String>(&format!("SELECT pg_temp.error_of('{quoted}')"))
            .unwrap()
            .unwrap_or_else(|| panic!("expected an error from: {query}"))
    }

    /// Asserts that `query` fails with `message` and leaves every job table as it was.
    fn assert_rejected(query: &str, message: &str) {
        let fingerprint = "SELECT md5(concat_ws('|',
            (SELECT string_agg(l::text, ',' ORDER BY id) FROM job.live_jobs l),
            (SELECT string_agg(f::text, ',' ORDER BY id) FROM job.finished_jobs f),
            (SELECT string_agg(q::text, ',' ORDER BY name) FROM job.queues q),
            (SELECT string_agg(k::text, ',' ORDER BY queue, key) FROM job.idempotency_keys k),
            (SELECT string_agg(s::text, ',' ORDER BY name) FROM job.schedule_defs s),
            (SELECT string_agg(r::text, ',' ORDER BY schedule, tick) FROM job.schedule_runs r),
            (SELECT string_agg(h::text, ',' ORDER BY queue) FROM job.handlers h)))";
        let before = one::<String>(fingerprint);
        assert_eq!(error_of(query), message, "{query}");
        assert_eq!(
            one::<String>(fingerprint),
            before,
            "{query} changed something"
        );
    }

    /// The first column of every row `query` returns.
    fn ids_of(query: &str) -> Vec<i64> {
        Spi::connect(|client| {
            client
                .select(query, None, &[])
                .unwrap_or_else(|e| panic!("{query}: {e}"))
                .map(|row| row.get::<i64>(1).unwrap().unwrap())
                .collect()
        })
    }

    fn queue(name: &str) {
        run(&format!("SELECT job.create_queue('{name}')"));
    }

    fn enqueue(queue: &str) -> i64 {
        one(&format!("SELECT job.enqueue('{queue}')"))
    }

    fn claim(queue: &str) -> i64 {
        one(&format!("SELECT id FROM job.dequeue('{queue}', 'tester')"))
    }

    fn state(id: i64) -> String {
        one(&format!("SELECT state FROM job.jobs WHERE id = {id}"))
    }

    /// Makes a scheduled job due and a running job's lease lapse, as time passing would.
    fn age_job(id: i64) {
        run(&format!(
            "UPDATE job.live_jobs SET run_at = now() - interval '1 second',
                    lease_expires_at = lease_expires_at - interval '1 hour' WHERE id = {id}"
        ));
    }

    // ---- queues ------------------------------------------------------------------------------

    #[pg_test]
    fn create_queue_stores_defaults_and_updates_in_place() {
        queue("q");
        assert_eq!(
            one::<String>("SELECT concat_ws(',', max_retries, backoff_base, backoff_max, jitter, lease, idempotency_window, retention, paused) FROM job.queues WHERE name = 'q'"),
            "5,00:00:01,00:01:00,0.1,00:05:00,24:00:00,7 days,f"
        );
        run("SELECT job.create_queue('q', max_retries => 2, lease => '30 seconds')");
        assert_eq!(
            one::<String>(
                "SELECT concat_ws(',', count(*), min(max_retries), min(lease)) FROM job.queues"
            ),
            "1,2,00:00:30"
        );
    }

    #[pg_test]
    fn create_queue_rejects_bad_settings() {
        let long = "x".repeat(129);
        for (call, message) in [
            (
                "SELECT job.create_queue(NULL)",
                "queue name must not be NULL".to_string(),
            ),
            (
                "SELECT job.create_queue('  ')",
                "queue name must not be empty".to_string(),
            ),
            (
                &format!("SELECT job.create_queue('{long}')"),
                "queue name is too long: 129 characters, at most 128 allowed".to_string(),
            ),
            (
                "SELECT job.create_queue(E'a\\nb')",
                "queue name must not contain control characters: 'a\nb'".to_string(),
            ),
            (
                "SELECT job.create_queue('q', max_retries => -1)",
                "max_retries must be 0 or more, got -1".to_string(),
            ),
            (
                "SELECT job.create_queue('q', max_retries => NULL)",
                "max_retries must not be NULL".to_string(),
            ),
            (
                "SELECT job.create_queue('q', backoff_base => '0')",
                "backoff_base must be a positive interval, got 00:00:00".to_string(),
            ),
            (
                "SELECT job.create_queue('q', backoff_base => '10 s', backoff_max => '5 s')",
                "backoff_max (00:00:05) must not be less than backoff_base (00:00:10)".to_string(),
            ),
            (
                "SELECT job.create_queue('q', jitter => 1.5)",
                "jitter must be between 0 and 1, got 1.5".to_string(),
            ),
            (
                "SELECT job.create_queue('q', jitter => 'NaN')",
                "jitter must be between 0 and 1, got NaN".to_string(),
            ),
            (
                "SELECT job.create_queue('q', lease => '-1 minute')",
                "lease must be a positive interval, got -00:01:00".to_string(),
            ),
            (
                "SELECT job.create_queue('q', idempotency_window => '-1 s')",
                "idempotency_window must be a non-negative interval, got -00:00:01".to_string(),
            ),
            (
                "SELECT job.create_queue('q', retention => NULL)",
                "retention must not be NULL".to_string(),
            ),
        ] {
            assert_rejected(call, &message);
        }
    }

    #[pg_test]
    fn odd_queue_names_are_data_not_sql() {
        queue("it''s; DROP TABLE job.live_jobs; --");
        let id = enqueue("it''s; DROP TABLE job.live_jobs; --");
        assert_eq!(claim("it''s; DROP TABLE job.live_jobs; --"), id);
        assert_eq!(
            one::<String>(&format!("SELECT queue FROM job.jobs WHERE id = {id}")),
            "it's; DROP TABLE job.live_jobs; --"
        );
    }

    #[pg_test]
    fn drop_queue_refuses_unfinished_jobs_unless_forced() {
        queue("q");
        let id = enqueue("q");
        run("SELECT job.enqueue('q', idempotency_key => 'k')");
        assert_rejected(
            "SELECT job.drop_queue('q')",
            "queue 'q' still has 2 unfinished (waiting, scheduled or running) jobs",
        );
        run("SELECT job.drop_queue('q', force => true)");
        assert_eq!(one::<i64>("SELECT count(*) FROM job.queues"), 0);
        assert_eq!(one::<i64>("SELECT count(*) FROM job.jobs"), 0);
        assert_eq!(one::<i64>("SELECT count(*) FROM job.idempotency_keys"), 0);
        assert_rejected(
            &format!("SELECT job.complete({id})"),
            &format!("job {id} does not exist"),
        );
    }

    #[pg_test]
    fn drop_queue_with_only_history_needs_no_force() {
        queue("q");
        enqueue("q");
        let id = claim("q");
        run(&format!("SELECT job.complete({id})"));
        run("SELECT job.drop_queue('q')");
        assert_eq!(one::<i64>("SELECT count(*) FROM job.jobs"), 0);
        assert_rejected("SELECT job.drop_queue('q')", "queue 'q' does not exist");
    }

    #[pg_test]
    fn a_paused_queue_accepts_jobs_but_hands_out_none() {
        queue("q");
        run("SELECT job.pause_queue('q')");
        let id = enqueue("q");
        assert_eq!(one::<i64>("SELECT count(*) FROM job.dequeue('q')"), 0);
        assert!(one::<bool>(
            "SELECT paused FROM job.queue_stats WHERE queue = 'q'"
        ));
        run("SELECT job.resume_queue('q')");
        assert_eq!(claim("q"), id);
        assert_rejected(
            "SELECT job.pause_queue('nope')",
            "queue 'nope' does not exist",
        );
        assert_rejected(
            "SELECT job.resume_queue('')",
            "queue name must not be empty",
        );
    }

    // ---- enqueue -----------------------------------------------------------------------------

    #[pg_test]
    fn enqueue_creates_a_waiting_job_with_the_queue_defaults() {
        run("SELECT job.create_queue('q', max_retries => 3)");
        let id: i64 = one("SELECT job.enqueue('q', '{\"to\": \"ada\"}', job_type => 'email')");
        assert_eq!(
            one::<String>(&format!("SELECT concat_ws(',', state, attempt, max_retries, payload, job_type, priority, run_at = now()) FROM job.jobs WHERE id = {id}")),
            "waiting,0,3,{\"to\": \"ada\"},email,0,t"
        );
        let own: i64 = one("SELECT job.enqueue('q', max_retries => 0)");
        assert_eq!(
            one::<i32>(&format!(
                "SELECT max_retries FROM job.jobs WHERE id = {own}"
            )),
            0
        );
    }

    #[pg_test]
    fn enqueue_later_schedules_the_job() {
        queue("q");
        let delayed: i64 = one("SELECT job.enqueue('q', delay => '1 hour')");
        let at: i64 = one("SELECT job.enqueue('q', run_at => now() + interval '1 day')");
        let past: i64 = one("SELECT job.enqueue('q', run_at => now() - interval '1 day')");
        assert_eq!(state(delayed), "scheduled");
        assert_eq!(state(at), "scheduled");
        assert_eq!(state(past), "waiting");
        assert!(one::<bool>(&format!(
            "SELECT run_at = now() + interval '1 hour' FROM job.jobs WHERE id = {delayed}"
        )));
        assert_eq!(
            one::<i64>("SELECT count(*) FROM job.dequeue('q', batch => 10)"),
            1
        );
        age_job(delayed);
        assert_eq!(claim("q"), delayed);
        assert_eq!(
            one::<i64>("SELECT count(*) FROM job.dequeue('q', batch => 10)"),
            0
        );
    }

    #[pg_test]
    fn enqueue_rejects_bad_input() {
        queue("q");
        let long_key = "k".repeat(513);
        for (call, message) in [
            (
                "SELECT job.enqueue('nope')",
                "queue 'nope' does not exist".to_string(),
            ),
            (
                "SELECT job.enqueue(NULL)",
                "queue name must not be NULL".to_string(),
            ),
            (
                "SELECT job.enqueue('')",
                "queue name must not be empty".to_string(),
            ),
            (
                "SELECT job.enqueue('q', NULL)",
                "payload must not be NULL".to_string(),
            ),
            (
                "SELECT job.enqueue('q', '[1, 2]')",
                "payload must be a JSON object, got array: [1, 2]".to_string(),
            ),
            (
                "SELECT job.enqueue('q', '\"text\"')",
                "payload must be a JSON object, got string: \"text\"".to_string(),
            ),
            (
                "SELECT job.enqueue('q', delay => '-1 second')",
                "delay must be a non-negative interval, got -00:00:01".to_string(),
            ),
            (
                "SELECT job.enqueue('q', delay => '1 s', run_at => now())",
                "give run_at or delay, not both".to_string(),
            ),
            (
                "SELECT job.enqueue('q', run_at => 'infinity')",
                "run_at must be a finite time, got infinity".to_string(),
            ),
            (
                "SELECT job.enqueue('q', priority => NULL)",
                "priority must not be NULL".to_string(),
            ),
            (
                "SELECT job.enqueue('q', max_retries => -2)",
                "max_retries must be 0 or more, got -2".to_string(),
            ),
            (
                "SELECT job.enqueue('q', job_type => '')",
                "job_type must not be empty".to_string(),
            ),
            (
                "SELECT job.enqueue('q', idempotency_key => '')",
                "idempotency_key must not be empty".to_string(),
            ),
            (
                &format!("SELECT job.enqueue('q', idempotency_key => '{long_key}')"),
                "idempotency_key is too long: 513 characters, at most 512 allowed".to_string(),
            ),
        ] {
            assert_rejected(call, &message);
        }
    }

    #[pg_test]
    fn dequeue_order_is_priority_then_run_at_then_id() {
        queue("q");
        let low: i64 = one("SELECT job.enqueue('q', priority => -1)");
        let first: i64 = one("SELECT job.enqueue('q')");
        let second: i64 = one("SELECT job.enqueue('q')");
        let older: i64 = one("SELECT job.enqueue('q', run_at => now() - interval '1 minute')");
        let urgent: i64 = one("SELECT job.enqueue('q', priority => 10)");
        let order: Vec<i64> = (0..5).map(|_| claim("q")).collect();
        assert_eq!(order, vec![urgent, older, first, second, low]);
    }

    #[pg_test]
    fn idempotency_key_returns_the_existing_job_in_any_state() {
        queue("q");
        queue("other");
        let id: i64 = one("SELECT job.enqueue('q', '{\"n\": 1}', idempotency_key => 'order-1')");
        assert_eq!(
            one::<i64>("SELECT job.enqueue('q', '{\"n\": 2}', idempotency_key => 'order-1')"),
            id
        );
        assert_ne!(
            one::<i64>("SELECT job.enqueue('other', idempotency_key => 'order-1')"),
            id
        );
        run(&format!(
            "SELECT job.complete(id) FROM job.dequeue('q') WHERE id = {id}"
        ));
        assert_eq!(state(id), "completed");
        assert_eq!(
            one::<i64>("SELECT job.enqueue('q', idempotency_key => 'order-1')"),
            id
        );
        assert_eq!(
            one::<i64>("SELECT count(*) FROM job.jobs WHERE queue = 'q'"),
            1
        );
        assert_eq!(
            one::<String>(&format!(
                "SELECT payload::text FROM job.jobs WHERE id = {id}"
            )),
            "{\"n\": 1}"
        );
    }

    #[pg_test]
    fn an_expired_idempotency_key_admits_a_new_job() {
        run("SELECT job.create_queue('q', idempotency_window => '1 hour')");
        let id: i64 = one("SELECT job.enqueue('q', idempotency_key => 'k')");
        assert!(one::<bool>(&format!("SELECT expires_at = now() + interval '1 hour' FROM job.idempotency_keys WHERE job_id = {id}")));
        run("UPDATE job.idempotency_keys SET expires_at = now() - interval '1 second'");
        let again: i64 = one("SELECT job.enqueue('q', idempotency_key => 'k')");
        assert_ne!(again, id);
        assert_eq!(
            one::<i64>("SELECT job_id FROM job.idempotency_keys WHERE key = 'k'"),
            again
        );
    }

    #[pg_test]
    fn enqueue_many_returns_ids_in_payload_order() {
        queue("q");
        let ids = ids_of("SELECT * FROM job.enqueue_many('q', ARRAY(SELECT jsonb_build_object('n', g) FROM generate_series(1, 50) g), priority => 3, job_type => 'bulk')");
        let by_payload = ids_of("SELECT id FROM job.jobs ORDER BY (payload ->> 'n')::int");
        assert_eq!(ids.len(), 50);
        assert_eq!(ids, by_payload, "the i-th id is the i-th payload's job");
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids ascend");
        assert_eq!(
            one::<i64>("SELECT count(*) FROM job.jobs WHERE priority = 3 AND job_type = 'bulk' AND state = 'waiting'"),
            50
        );
        assert_eq!(
            one::<i64>("SELECT count(*) FROM job.enqueue_many('q', '{}')"),
            0
        );
    }

    #[pg_test]
    fn enqueue_many_rejects_bad_input_and_inserts_nothing() {
        queue("q");
        for (call, message) in [
            (
                "SELECT job.enqueue_many('q', NULL)",
                "payloads must not be NULL",
            ),
            (
                "SELECT job.enqueue_many('q', ARRAY['{}', NULL]::jsonb[])",
                "payloads[2] must not be NULL",
            ),
            (
                "SELECT job.enqueue_many('q', ARRAY['{}', '{}', '3']::jsonb[])",
                "payloads[3] must be a JSON object, got number: 3",
            ),
            (
                "SELECT job.enqueue_many('q', ARRAY['{}']::jsonb[], priority => NULL)",
                "priority must not be NULL",
            ),
            (
                "SELECT job.enqueue_many('nope', ARRAY['{}']::jsonb[])",
                "queue 'nope' does not exist",
            ),
        ] {
            assert_rejected(call, message);
        }
    }

    // ---- dequeue -----------------------------------------------------------------------------

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
                "batch must be 1 or more, got 0",
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
            ("'PERMANENT: account closed'", "dead"),
            ("'slow down', http_status => 429", "scheduled"),
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
        assert_eq!(dead, "true/-,true/404,true/422,true/-");
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
    fn fail_rejects_bad_input_and_reports_finished_jobs() {
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
        run(&format!("SELECT job.cancel({running})"));
        assert_eq!(
            one::<String>(&format!("SELECT job.fail({running}, 'late')")),
            "cancelled"
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

    // ---- cancel and retry ----------------------------------------------------------------------

    #[pg_test]
    fn cancel_stops_waiting_and_running_jobs() {
        queue("q");
        let running = enqueue("q");
        claim("q");
        let waiting = enqueue("q");
        let later: i64 = one("SELECT job.enqueue('q', delay => '1 day')");
        for id in [running, waiting, later] {
            assert!(one::<bool>(&format!("SELECT job.cancel({id})")));
            assert_eq!(state(id), "cancelled");
        }
        assert!(
            !one::<bool>(&format!("SELECT job.complete({running})")),
            "its worker cannot complete it"
        );
        assert!(
            !one::<bool>(&format!("SELECT job.cancel({running})")),
            "already cancelled"
        );
        assert_eq!(one::<i64>("SELECT count(*) FROM job.dequeue('q')"), 0);
        assert_eq!(one::<i64>("SELECT cancelled FROM job.queue_stats"), 3);
        assert_rejected("SELECT job.cancel(5555)", "job 5555 does not exist");
    }

    #[pg_test]
    fn retry_runs_a_dead_or_cancelled_job_again() {
        run("SELECT job.create_queue('q', max_retries => 0)");
        let dead = enqueue("q");
        claim("q");
        run(&format!("SELECT job.fail({dead}, 'boom')"));
        let cancelled = enqueue("q");
        run(&format!("SELECT job.cancel({cancelled})"));
        let done = enqueue("q");
        claim("q");
        run(&format!("SELECT job.complete({done})"));
        let live = enqueue("q");

        assert!(one::<bool>(&format!("SELECT job.retry({dead})")));
        assert_eq!(
            one::<String>(&format!("SELECT concat_ws(',', state, attempt, jsonb_array_length(errors)) FROM job.jobs WHERE id = {dead}")),
            "waiting,0,1"
        );
        assert!(one::<bool>(&format!("SELECT job.retry({cancelled})")));
        assert!(
            !one::<bool>(&format!("SELECT job.retry({done})")),
            "completed jobs stay completed"
        );
        assert!(
            !one::<bool>(&format!("SELECT job.retry({live})")),
            "live jobs are left alone"
        );
        assert_eq!(claim("q"), dead);
        assert_rejected("SELECT job.retry(8888)", "job 8888 does not exist");
    }

    #[pg_test]
    fn retry_dead_replays_the_whole_dead_letter_queue() {
        run("SELECT job.create_queue('q', max_retries => 0)");
        queue("other");
        for _ in 0..3 {
            let id = enqueue("q");
            claim("q");
            run(&format!("SELECT job.fail({id}, 'boom')"));
        }
        let elsewhere = enqueue("other");
        claim("other");
        run(&format!(
            "SELECT job.fail({elsewhere}, 'boom', permanent => true)"
        ));
        assert_eq!(one::<i64>("SELECT job.retry_dead('q')"), 3);
        assert_eq!(
            one::<i64>("SELECT waiting FROM job.queue_stats WHERE queue = 'q'"),
            3
        );
        assert_eq!(state(elsewhere), "dead");
        assert_eq!(one::<i64>("SELECT job.retry_dead('q')"), 0);
        assert_rejected(
            "SELECT job.retry_dead('nope')",
            "queue 'nope' does not exist",
        );
    }

    // ---- retention, stats and helpers -----------------------------------------------------------

    #[pg_test]
    fn apply_retention_prunes_old_history_and_expired_keys() {
        run("SELECT job.create_queue('short', retention => '1 hour')");
        run("SELECT job.create_queue('long', retention => '30 days')");
        let mut finished = Vec::new();
        for q in ["short", "short", "long"] {
            let id: i64 = one(&format!(
                "SELECT job.enqueue('{q}', idempotency_key => 'k{}')",
                finished.len()
            ));
            claim(q);
            run(&format!("SELECT job.complete({id})"));
            finished.push(id);
        }
        run(&format!("UPDATE job.finished_jobs SET finished_at = now() - interval '2 days' WHERE id IN ({}, {})", finished[0], finished[2]));
        run("UPDATE job.idempotency_keys SET expires_at = now() - interval '1 second' WHERE key = 'k0'");
        let live = enqueue("short");
        assert_eq!(one::<i64>("SELECT job.apply_retention()"), 2);
        assert_eq!(one::<i64>("SELECT count(*) FROM job.jobs"), 3);
        assert_eq!(
            one::<i64>(&format!(
                "SELECT count(*) FROM job.jobs WHERE id = {}",
                finished[0]
            )),
            0
        );
        assert_eq!(state(live), "waiting");
        assert_eq!(one::<i64>("SELECT count(*) FROM job.idempotency_keys"), 2);
        assert_eq!(one::<i64>("SELECT job.apply_retention()"), 0);
    }

    #[pg_test]
    fn queue_stats_counts_every_state() {
        queue("q");
        queue("empty");
        let done = enqueue("q");
        let failed = enqueue("q");
        let running = enqueue("q");
        run("SELECT job.dequeue('q', batch => 3)");
        run(&format!("SELECT job.complete({done})"));
        run(&format!(
            "SELECT job.fail({failed}, 'x', permanent => true)"
        ));
        let _ = running;
        let cancelled = enqueue("q");
        run(&format!("SELECT job.cancel({cancelled})"));
        enqueue("q");
        run("SELECT job.enqueue('q', delay => '1 hour')");
        run("UPDATE job.live_jobs SET run_at = now() - interval '30 seconds' WHERE state = 'waiting'");
        assert_eq!(
            one::<String>("SELECT concat_ws(',', waiting, scheduled, running, completed, dead, cancelled, oldest_waiting_age) FROM job.queue_stats WHERE queue = 'q'"),
            "1,1,1,1,1,1,00:00:30"
        );
        assert_eq!(
            one::<String>("SELECT concat_ws(',', waiting, scheduled, running, completed, dead, cancelled, coalesce(oldest_waiting_age::text, '-')) FROM job.queue_stats WHERE queue = 'empty'"),
            "0,0,0,0,0,0,-"
        );
    }

    #[pg_test]
    fn sql_helpers_reject_bad_input() {
        assert_eq!(
            error_of("SELECT job.retry_delay(0, '1 s', '1 min', 0.1)"),
            "attempt must be 1 or more, got 0"
        );
        assert_eq!(
            error_of("SELECT job.retry_delay(1, '0', '1 min', 0.1)"),
            "backoff_base must be a positive interval, got 00:00:00"
        );
        assert_eq!(
            error_of("SELECT job.retry_delay(1, '1 min', '1 s', 0.1)"),
            "backoff_max (00:00:01) must not be less than backoff_base (00:01:00)"
        );
        assert_eq!(
            error_of("SELECT job.retry_delay(1, '1 s', '1 min', 2)"),
            "jitter must be between 0 and 1, got 2"
        );
        assert_eq!(
            one::<String>("SELECT job.retry_delay(3, '1 s', '1 min', 0)::text"),
            "00:00:04"
        );
        assert!(one::<bool>(
            "SELECT job.is_permanent_failure('x', http_status => 401)"
        ));
        assert!(!one::<bool>(
            "SELECT job.is_permanent_failure('x', http_status => 500)"
        ));
    }

    // ---- schedules ---------------------------------------------------------------------------

    /// Puts a schedule's next tick at `tick` (and its run time there too), as if it were due.
    fn make_due(name: &str, tick: &str) {
        run(&format!(
            "UPDATE job.schedule_defs SET next_tick = '{tick}', next_run_at = '{tick}' WHERE name = '{name}'"
        ));
    }

    #[pg_test]
    fn schedule_creates_then_replaces_keeping_its_id() {
        queue("q");
        queue("other");
        let id = one::<i64>(
            "SELECT job.schedule('nightly', '30 2 * * *', 'q', '{\"k\": 1}', 'America/New_York')",
        );
        assert_eq!(
            one::<String>("SELECT concat_ws(',', cron, timezone, queue, payload, misfire, paused,
                                  next_run > now(), next_run_local = next_run AT TIME ZONE 'America/New_York',
                                  to_char(next_run_local, 'HH24:MI'))
                             FROM job.schedules WHERE name = 'nightly'"),
            "30 2 * * *,America/New_York,q,{\"k\": 1},skip,f,t,t,02:30"
        );
        let again =
            one::<i64>("SELECT job.schedule('nightly', '@hourly', 'other', misfire => 'catch_up')");
        assert_eq!(again, id);
        assert_eq!(
            one::<String>("SELECT concat_ws(',', count(*), min(cron), min(queue), min(timezone), min(misfire),
                                  min(to_char(next_run, 'MI:SS')))
                             FROM job.schedules"),
            "1,@hourly,other,UTC,catch_up,00:00"
        );
    }

    #[pg_test]
    fn schedule_rejects_bad_input() {
        queue("q");
        run("SELECT job.schedule('kept', '@daily', 'q')");
        for (call, message) in [
            ("SELECT job.schedule('s', '* * * *', 'q')",
             "invalid schedule '* * * *': cron expression must have 5 or 6 fields, got 4"),
            ("SELECT job.schedule('s', '0 25 * * *', 'q')",
             "invalid schedule '0 25 * * *': cron field 2 (hour) \"25\": 25 is out of range 0-23"),
            ("SELECT job.schedule('s', '0 0 30 2 *', 'q')",
             "invalid schedule '0 0 30 2 *': never fires: day 30 does not occur in February"),
            ("SELECT job.schedule('s', '@fortnightly', 'q')",
             "invalid schedule '@fortnightly': unknown cron macro \"@fortnightly\""),
            ("SELECT job.schedule('s', '0 seconds', 'q')",
             "invalid schedule '0 seconds': interval must be at least 1 second"),
            ("SELECT job.schedule('s', '@daily', 'q', timezone => 'Mars/Base')",
             "unknown time zone \"Mars/Base\""),
            ("SELECT job.schedule('s', '@daily', 'nope')", "queue 'nope' does not exist"),
            ("SELECT job.schedule('s', '@daily', 'q', '[1]')", "payload must be a JSON object, got array: [1]"),
            ("SELECT job.schedule('s', '@daily', 'q', misfire => 'later')",
             "misfire must be 'skip' or 'catch_up', got 'later'"),
            ("SELECT job.schedule('s', '@daily', 'q', jitter => '-1 s')",
             "jitter must be a non-negative interval, got -00:00:01"),
            ("SELECT job.schedule('', '@daily', 'q')", "schedule name must not be empty"),
            ("SELECT job.schedule('s', NULL, 'q')", "cron must not be NULL"),
            ("SELECT job.schedule('s', '@daily', 'q', priority => NULL)", "priority must not be NULL"),
            ("SELECT job.pause_schedule('nope')", "schedule 'nope' does not exist"),
            ("SELECT job.resume_schedule('nope')", "schedule 'nope' does not exist"),
        ] {
            assert_rejected(call, message);
        }
        assert!(!one::<bool>("SELECT job.unschedule('nope')"));
    }

    #[pg_test]
    fn cron_next_follows_the_time_zone_through_daylight_saving() {
        // 02:30 does not exist in New York on 2026-03-08: it fires once, when the gap ends.
        assert_eq!(
            one::<String>("SELECT job.cron_next('30 2 * * *', 'America/New_York', '2026-03-08 06:00+00')::text"),
            "2026-03-08 07:00:00+00"
        );
        // 01:30 happens twice in London on 2026-10-25: it fires at the first one only.
        assert_eq!(
            one::<String>("SELECT string_agg(t::text, ' ') FROM (
                               SELECT job.cron_next('30 1 * * *', 'Europe/London', '2026-10-24 12:00+00') AS t
                               UNION ALL
                               SELECT job.cron_next('30 1 * * *', 'Europe/London', '2026-10-25 00:30+00')) x"),
            "2026-10-25 00:30:00+00 2026-10-26 01:30:00+00"
        );
        assert_eq!(
            one::<String>(
                "SELECT job.cron_next('30 seconds', 'Asia/Tokyo', '2026-01-01 00:00:10+00')::text"
            ),
            "2026-01-01 00:00:30+00"
        );
    }

    #[pg_test]
    fn a_due_schedule_fires_one_job_per_tick_with_a_tick_key() {
        queue("q");
        run("SELECT job.schedule('every', '1 second', 'q', '{\"n\": 1}', priority => 3, job_type => 'ping')");
        make_due("every", "2000-01-01 00:00:00+00"); // long ago: skip only fires a recent tick
        run(
            "UPDATE job.schedule_defs SET next_tick = date_trunc('second', clock_timestamp()),
                    next_run_at = date_trunc('second', clock_timestamp())",
        );
        assert_eq!(one::<i32>("SELECT job._fire_due_schedules()"), 1);
        assert_eq!(
            one::<String>("SELECT concat_ws(',', j.payload, j.priority, j.job_type,
                                  j.idempotency_key = 'schedule:every:' || extract(epoch FROM r.tick)::bigint,
                                  s.last_job_id = j.id, s.last_job_state, s.next_run > r.tick)
                             FROM job.schedule_runs r JOIN job.jobs j ON j.id = r.job_id
                             JOIN job.schedules s ON s.name = r.schedule"),
            "{\"n\": 1},3,ping,t,t,waiting,t"
        );
        // Not due again yet; and the same tick never fires twice, whoever tries.
        assert_eq!(one::<i32>("SELECT job._fire_due_schedules()"), 0);
        run(
            "UPDATE job.schedule_defs s SET next_tick = r.tick, next_run_at = r.tick
               FROM job.schedule_runs r WHERE r.schedule = s.name",
        );
        run("SELECT job._fire_due_schedules()");
        assert_eq!(
            one::<String>(
                "SELECT concat_ws(',', (SELECT count(*) FROM job.jobs),
                                  (SELECT count(*) FROM job.schedule_runs))"
            ),
            one::<String>("SELECT concat_ws(',', count(*), count(*)) FROM job.schedule_runs")
        );
    }

    #[pg_test]
    fn missed_ticks_are_skipped_or_caught_up_once() {
        queue("q");
        run("SELECT job.schedule('skipper', '0 0 1 1 *', 'q')");
        run("SELECT job.schedule('catcher', '0 0 1 1 *', 'q', misfire => 'catch_up')");
        make_due("skipper", "2020-01-01 00:00:00+00");
        make_due("catcher", "2020-01-01 00:00:00+00");
        assert_eq!(one::<i32>("SELECT job._fire_due_schedules()"), 1);
        // catch_up fires once, for the latest missed tick; skip fires nothing; both move on.
        let this_year =
            one::<String>("SELECT date_trunc('year', now() AT TIME ZONE 'UTC')::date::text");
        assert_eq!(
            one::<String>(
                "SELECT string_agg(schedule || ' ' || tick::date, ',') FROM job.schedule_runs"
            ),
            format!("catcher {this_year}")
        );
        assert_eq!(
            one::<i64>("SELECT count(*) FROM job.schedule_defs WHERE next_tick > now()"),
            2
        );
    }

    #[pg_test]
    fn jitter_is_a_stable_offset_within_its_bound() {
        queue("q");
        run("SELECT job.schedule('a', '@hourly', 'q', jitter => '10 minutes')");
        run("SELECT job.schedule('b', '@hourly', 'q', jitter => '10 minutes')");
        assert_eq!(
            one::<String>("SELECT concat_ws(',', bool_and(next_run - next_run_local AT TIME ZONE 'UTC' = '0'),
                                  bool_and(d.next_run_at - d.next_tick = job._jitter_offset(d.name, '10 minutes')),
                                  bool_and(d.jitter_offset >= '0' AND d.jitter_offset < '10 minutes'),
                                  count(DISTINCT d.jitter_offset))
                             FROM job.schedule_defs d JOIN job.schedules s USING (name)"),
            "t,t,t,2"
        );
        assert_eq!(
            one::<String>("SELECT job._jitter_offset('a', '10 minutes')::text"),
            one::<String>("SELECT jitter_offset::text FROM job.schedule_defs WHERE name = 'a'")
        );
    }

    #[pg_test]
    fn pause_resume_and_unschedule() {
        queue("q");
        run("SELECT job.schedule('s', '1 second', 'q')");
        run("SELECT job.pause_schedule('s')");
        make_due("s", "2000-01-01 00:00:00+00");
        assert_eq!(one::<i32>("SELECT job._fire_due_schedules()"), 0);
        assert!(one::<bool>(
            "SELECT paused AND next_run IS NULL FROM job.schedules WHERE name = 's'"
        ));
        run("SELECT job.resume_schedule('s')");
        assert!(one::<bool>(
            "SELECT NOT paused AND next_run > now() FROM job.schedules WHERE name = 's'"
        ));
        assert!(one::<bool>("SELECT job.unschedule('s')"));
        assert_eq!(one::<i64>("SELECT count(*) FROM job.schedules"), 0);
    }

    #[pg_test]
    fn dropping_a_queue_drops_its_schedules_and_handler() {
        queue("q");
        run("CREATE FUNCTION pg_temp.h(p jsonb) RETURNS jsonb LANGUAGE sql AS 'SELECT p'");
        run("SELECT job.schedule('s', '@daily', 'q')");
        run("SELECT job.set_handler('q', 'pg_temp.h(jsonb)')");
        run("SELECT job.drop_queue('q')");
        assert_eq!(
            one::<i64>("SELECT (SELECT count(*) FROM job.schedule_defs) + (SELECT count(*) FROM job.handlers)"),
            0
        );
    }

    #[pg_test]
    fn schedule_history_keeps_the_newest_runs() {
        queue("q");
        run("SELECT job.schedule('s', '1 second', 'q')");
        run("INSERT INTO job.schedule_runs (schedule, tick, due_at, fired_at)
             SELECT 's', t, t, t FROM generate_series(timestamptz '2026-01-01', '2026-01-01 00:00:09', '1 second') t");
        assert_eq!(one::<i32>("SELECT job._prune_schedule_runs(3, 2)"), 2);
        assert_eq!(one::<i32>("SELECT job._prune_schedule_runs(3, 100)"), 5);
        assert_eq!(
            one::<String>(
                "SELECT string_agg(to_char(tick, 'SS'), ',' ORDER BY tick) FROM job.schedule_runs"
            ),
            "07,08,09"
        );
    }

    // ---- handlers ----------------------------------------------------------------------------

    #[pg_test]
    fn set_handler_records_the_calling_role_and_replaces() {
        queue("q");
        run("CREATE FUNCTION public.handle_q(p jsonb) RETURNS jsonb LANGUAGE sql AS 'SELECT p'");
        run("SELECT job.set_handler('q', 'handle_q(jsonb)')");
        assert_eq!(
            one::<String>("SELECT concat_ws(',', handler, run_as = current_user::regrole, concurrency, timeout) FROM job.handlers"),
            "handle_q(jsonb),t,1,00:05:00"
        );
        run("SELECT job.set_handler('q', 'handle_q(jsonb)', concurrency => 4, timeout => '10 seconds')");
        assert_eq!(
            one::<String>(
                "SELECT concat_ws(',', count(*), min(concurrency), min(timeout)) FROM job.handlers"
            ),
            "1,4,00:00:10"
        );
        assert!(one::<bool>("SELECT job.remove_handler('q')"));
        assert!(!one::<bool>("SELECT job.remove_handler('q')"));
    }

    #[pg_test]
    fn set_handler_rejects_bad_handlers() {
        queue("q");
        run("CREATE FUNCTION public.two_args(a jsonb, b int) RETURNS void LANGUAGE sql AS ''");
        run("CREATE FUNCTION public.text_arg(a text) RETURNS void LANGUAGE sql AS ''");
        run("CREATE FUNCTION public.many(a jsonb) RETURNS SETOF int LANGUAGE sql AS 'SELECT 1'");
        run("CREATE PROCEDURE public.proc(a jsonb) LANGUAGE sql AS ''");
        run("CREATE FUNCTION public.good(a jsonb) RETURNS void LANGUAGE sql AS ''");
        run("CREATE FUNCTION public.secret(a jsonb) RETURNS void LANGUAGE sql AS ''");
        run("REVOKE EXECUTE ON FUNCTION public.secret(jsonb) FROM PUBLIC");
        let hint = "must be a function taking one jsonb argument and returning one value";
        for (call, message) in [
            (
                "SELECT job.set_handler('q', 'two_args(jsonb,int)')",
                format!("handler public.two_args(jsonb,integer) {hint}"),
            ),
            (
                "SELECT job.set_handler('q', 'text_arg(text)')",
                format!("handler public.text_arg(text) {hint}"),
            ),
            (
                "SELECT job.set_handler('q', 'many(jsonb)')",
                format!("handler public.many(jsonb) {hint}"),
            ),
            (
                "SELECT job.set_handler('q', 'proc(jsonb)')",
                format!("handler public.proc(jsonb) {hint}"),
            ),
            (
                "SELECT job.set_handler('nope', 'good(jsonb)')",
                "queue 'nope' does not exist".into(),
            ),
            (
                "SELECT job.set_handler('q', NULL)",
                "handler must not be NULL".into(),
            ),
            (
                "SELECT job.set_handler('q', 'good(jsonb)', concurrency => 0)",
                "concurrency must be between 1 and 1000, got 0".into(),
            ),
            (
                "SELECT job.set_handler('q', 'good(jsonb)', concurrency => 1001)",
                "concurrency must be between 1 and 1000, got 1001".into(),
            ),
            (
                "SELECT job.set_handler('q', 'good(jsonb)', timeout => '0')",
                "timeout must be a positive interval, got 00:00:00".into(),
            ),
            (
                "SELECT job.remove_handler('nope')",
                "queue 'nope' does not exist".into(),
            ),
        ] {
            assert_rejected(call, &message);
        }
        // A role may only hand over a function it may execute itself.
        run("CREATE ROLE handler_tester");
        run("GRANT USAGE ON SCHEMA job TO handler_tester");
        run("GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA job TO handler_tester");
        run("GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA job TO handler_tester");
        run("SET LOCAL ROLE handler_tester");
        assert_rejected(
            "SELECT job.set_handler('q', 'secret(jsonb)')",
            "permission denied: role handler_tester may not execute handler public.secret(jsonb)",
        );
        run("SELECT job.set_handler('q', 'good(jsonb)')");
        run("RESET ROLE");
        assert_eq!(
            one::<String>("SELECT run_as::text FROM job.handlers"),
            "handler_tester"
        );
    }

    #[pg_test]
    fn a_handler_failure_keeps_its_sqlstate_and_follows_the_fail_rules() {
        queue("q");
        let transient = enqueue("q");
        let permanent = enqueue("q");
        claim("q");
        claim("q");
        assert_eq!(
            one::<String>(&format!("SELECT job._fail_handler_job({transient}, '40001', 'could not serialize access', false)")),
            "scheduled"
        );
        assert_eq!(
            one::<String>(&format!(
                "SELECT job._fail_handler_job({permanent}, '22012', 'division by zero', true)"
            )),
            "dead"
        );
        assert_eq!(
            one::<String>("SELECT string_agg(concat_ws(' ', state, errors->-1->>'sqlstate', errors->-1->>'permanent', errors->-1->>'error'), ',' ORDER BY id) FROM job.jobs"),
            "scheduled 40001 false could not serialize access,dead 22012 true division by zero"
        );
    }

    #[pg_test]
    fn a_handler_job_is_claimed_with_a_concurrency_slot() {
        queue("q");
        queue("plain");
        run("CREATE FUNCTION public.handle(p jsonb) RETURNS jsonb LANGUAGE sql AS 'SELECT p'");
        run("SELECT job.set_handler('q', 'handle(jsonb)', timeout => '1 minute')");
        let id = one::<i64>("SELECT job.enqueue('q', '{\"x\": 1}')");
        enqueue("plain"); // no handler: never claimed by an executor
        assert_eq!(
            one::<String>("SELECT concat_ws(',', job_id, payload, handler_schema, handler_name, returns_jsonb,
                                  run_as = current_user::regrole, timeout_ms)
                             FROM job._claim_handler_job('executor 0')"),
            format!("{id},{{\"x\": 1}},public,handle,t,t,60000")
        );
        assert_eq!(
            one::<String>(&format!("SELECT concat_ws(',', state, claimed_by, lease_expires_at - now()) FROM job.jobs WHERE id = {id}")),
            "running,executor 0,00:01:30"
        );
        assert_eq!(one::<i64>("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = x'6a716578'::int::oid AND pid = pg_backend_pid()"), 1);
        assert_eq!(
            one::<i64>("SELECT count(*) FROM job._claim_handler_job('executor 0')"),
            0
        );
        run("SELECT job._release_handler_slot(slot_key) FROM (SELECT hashtext('q/0') AS slot_key) s");
        assert_eq!(one::<i64>("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = x'6a716578'::int::oid AND pid = pg_backend_pid()"), 0);
    }

    // ---- audit log ---------------------------------------------------------------------------

    /// The audit rows so far: "action arguments jobs_touched role", oldest first.
    fn audit_trail() -> Vec<String> {
        Spi::connect(|client| {
            client
                .select(
                    "SELECT concat_ws(' ', action, arguments, jobs_touched, role) FROM job.audit_log ORDER BY id",
                    None,
                    &[],
                )
                .unwrap()
                .map(|row| row.get::<String>(1).unwrap().unwrap())
                .collect()
        })
    }

    #[pg_test]
    fn every_manual_intervention_is_audited() {
        queue("q");
        run("SELECT job.create_queue('q', max_retries => 0)"); // a change
        run("SELECT job.create_queue('q', max_retries => 0)"); // no change: nothing to audit
        let dead = enqueue("q");
        claim("q");
        run(&format!("SELECT job.fail({dead}, 'boom')"));
        let waiting = enqueue("q");
        run(&format!("SELECT job.retry({dead})"));
        run(&format!("SELECT job.cancel({waiting})"));
        run("SELECT job.pause_queue('q')");
        run("SELECT job.resume_queue('q')");
        run("SELECT job.retry_dead('q')");
        run("SELECT job.schedule('s', '@daily', 'q')");
        run("SELECT job.pause_schedule('s')");
        run("SELECT job.resume_schedule('s')");
        run("SELECT job.unschedule('s')");
        run(&format!("UPDATE job.finished_jobs SET finished_at = now() - interval '2 days' WHERE id = {waiting}"));
        run("SELECT job.purge('q', 'cancelled', '1 day')");
        run("CREATE FUNCTION public.h(p jsonb) RETURNS void LANGUAGE sql AS ''");
        run("SELECT job.set_handler('q', 'h(jsonb)')");
        run("SELECT job.remove_handler('q')");
        run("SELECT job.drop_queue('q', force => true)");
        // A refused intervention leaves no row.
        error_of("SELECT job.retry(424242)");
        let trail = audit_trail();
        let actions: Vec<&str> = trail.iter().map(|t| t.split(' ').next().unwrap()).collect();
        assert_eq!(
            actions,
            [
                "create_queue",
                "alter_queue",
                "retry",
                "cancel",
                "pause_queue",
                "resume_queue",
                "retry_dead",
                "schedule",
                "pause_schedule",
                "resume_schedule",
                "unschedule",
                "purge",
                "set_handler",
                "remove_handler",
                "drop_queue"
            ]
        );
        assert!(
            trail[1].contains("\"before\": {\"lease\": \"00:05:00\""),
            "{}",
            trail[1]
        );
        assert!(trail[1].contains("\"max_retries\": 5") && trail[1].contains("\"max_retries\": 0"));
        assert_eq!(trail[2], format!("retry {{\"id\": {dead}}} 1 postgres"));
        assert_eq!(trail[3], format!("cancel {{\"id\": {waiting}}} 1 postgres"));
        assert_eq!(trail[6], "retry_dead {\"queue\": \"q\"} 0 postgres");
        assert_eq!(trail[11], "purge {\"queue\": \"q\", \"state\": \"cancelled\", \"older_than\": \"1 day\"} 1 postgres");
        assert_eq!(
            trail[14],
            "drop_queue {\"name\": \"q\", \"force\": true} 1 postgres"
        );
    }

    #[pg_test]
    fn purge_deletes_old_finished_jobs_of_one_state() {
        queue("q");
        queue("other");
        run("SELECT job.create_queue('q', max_retries => 0)");
        let ids: Vec<i64> = (0..3).map(|_| enqueue("q")).collect();
        for &id in &ids {
            claim("q");
            run(&format!("SELECT job.fail({id}, 'boom')"));
        }
        let kept_other = enqueue("other");
        claim("other");
        run(&format!(
            "SELECT job.fail({kept_other}, 'boom', permanent => true)"
        ));
        run(&format!("UPDATE job.finished_jobs SET finished_at = now() - interval '10 days' WHERE id IN ({}, {}, {kept_other})", ids[0], ids[1]));
        assert_eq!(
            one::<i64>("SELECT dead_letters FROM job.queue_metrics WHERE queue = 'q'"),
            3
        );
        assert_eq!(one::<i64>("SELECT job.purge('q', 'completed', '1 day')"), 0);
        assert_eq!(one::<i64>("SELECT job.purge('q', 'dead', '1 day')"), 2);
        assert_eq!(
            one::<String>(
                "SELECT string_agg(queue || ':' || state, ',' ORDER BY id) FROM job.finished_jobs"
            ),
            "q:dead,other:dead"
        );
        assert_eq!(
            one::<i64>("SELECT dead_letters FROM job.queue_metrics WHERE queue = 'q'"),
            1
        );
        assert_rejected(
            "SELECT job.purge('q', 'running', '1 day')",
            "state must be 'completed', 'dead' or 'cancelled', got 'running'",
        );
        assert_rejected(
            "SELECT job.purge('q', 'dead', '-1 day')",
            "older_than must be a non-negative interval, got -1 days",
        );
        assert_rejected(
            "SELECT job.purge('nope', 'dead', '1 day')",
            "queue 'nope' does not exist",
        );
    }

    // ---- payload size limit ------------------------------------------------------------------

    #[pg_test]
    fn a_queue_refuses_payloads_over_its_limit() {
        run("SELECT job.create_queue('small', max_payload_bytes => 100)");
        let fits = one::<i64>("SELECT job.enqueue('small', '{\"id\": 42}')");
        assert!(fits > 0);
        let big = format!("{{\"blob\": \"{}\"}}", "x".repeat(200));
        let size = one::<i32>(&format!("SELECT pg_column_size('{big}'::jsonb)"));
        assert_rejected(
            &format!("SELECT job.enqueue('small', '{big}')"),
            &format!("payload is {size} bytes, more than queue 'small' accepts (max_payload_bytes = 100)"),
        );
        assert_rejected(
            &format!("SELECT job.enqueue('small', '{big}', idempotency_key => 'k')"),
            &format!("payload is {size} bytes, more than queue 'small' accepts (max_payload_bytes = 100)"),
        );
        assert_rejected(
            &format!("SELECT job.enqueue_many('small', ARRAY['{{}}', '{big}']::jsonb[])"),
            &format!("payloads[2] is {size} bytes, more than queue 'small' accepts (max_payload_bytes = 100)"),
        );
        assert_rejected(
            "SELECT job.create_queue('small', max_payload_bytes => 0)",
            "max_payload_bytes must be 1 or more (or NULL for no limit), got 0",
        );
        run("SELECT job.create_queue('small')"); // lifts the limit
        assert!(one::<i64>(&format!("SELECT job.enqueue('small', '{big}')")) > fits);
    }

    // ---- metrics -----------------------------------------------------------------------------

    #[pg_test]
    fn finished_failed_and_stalled_attempts_are_counted() {
        run("SELECT job.create_queue('m', max_retries => 1)");
        let done = one::<i64>("SELECT job.enqueue('m', job_type => 'email')");
        let retried = one::<i64>("SELECT job.enqueue('m', job_type => 'email')");
        let stalled = one::<i64>("SELECT job.enqueue('m')");
        for _ in 0..3 {
            run("SELECT job.dequeue('m', 'w1')");
        }
        run(&format!("SELECT job.complete({done})"));
        run(&format!("SELECT job.fail({retried}, 'boom')"));
        age_job(retried);
        run(&format!("UPDATE job.live_jobs SET lease_expires_at = now() - interval '1 second' WHERE id = {stalled}"));
        run("SELECT job.rescue_stalled()");
        run("SELECT job.dequeue('m', 'w1', 5)");
        run(&format!("SELECT job.fail({retried}, 'PERMANENT: no')"));
        assert_eq!(
            one::<String>("SELECT string_agg(concat_ws(' ', coalesce(job_type, '-'), completed_5m, failed_5m, dead_5m, stalled_5m,
                                                       round(failure_rate_5m::numeric, 2), processing_p50 >= 0, wait_p99 >= 0), ','
                                             ORDER BY job_type NULLS FIRST)
                             FROM job.metrics WHERE queue = 'm'"),
            "- 0 1 0 1 1.00 t t,email 1 2 1 0 0.67 t t"
        );
        assert_eq!(
            one::<i64>("SELECT sum(completed + failed)::bigint FROM job.metric_buckets"),
            4
        );
        assert_eq!(
            one::<String>(
                "SELECT concat_ws(' ', worker, jobs_held, jobs_stalled) FROM job.workers"
            ),
            "w1 1 1"
        );
        assert_eq!(one::<i32>("SELECT job._count_queue_depth()"), 1);
        assert_eq!(
            one::<String>("SELECT concat_ws(' ', waiting, scheduled, running, dead_letters, oldest_ready_age IS NULL) FROM job.queue_metrics"),
            "0 0 1 1 t"
        );
    }

    #[pg_test]
    fn histogram_quantiles_track_durations() {
        run("SELECT job.create_queue('h')");
        // 100 jobs claimed 1..100 seconds ago, completed now.
        run("SELECT job.enqueue_many('h', array_fill('{}'::jsonb, ARRAY[100]))");
        run("SELECT job.dequeue('h', 'w', 100)");
        run("UPDATE job.live_jobs SET claimed_at = now() - make_interval(secs => id - (SELECT min(id) - 1 FROM job.live_jobs))");
        run("SELECT job.complete_many(array_agg(id)) FROM job.live_jobs");
        let (p50, p99) = Spi::get_two::<f64, f64>(
            "SELECT processing_p50, processing_p99 FROM job.metrics WHERE queue = 'h'",
        )
        .unwrap();
        let (p50, p99) = (p50.unwrap(), p99.unwrap());
        // Within one bucket (a factor of √2) of the true 50 and 99 seconds.
        assert!((50.0 / 1.42..50.0 * 1.42).contains(&p50), "p50 {p50}");
        assert!((99.0 / 1.42..99.0 * 1.42).contains(&p99), "p99 {p99}");
    }

    #[pg_test]
    fn old_buckets_fold_into_totals_and_counters_keep_counting() {
        run("SELECT job.create_queue('t')");
        for _ in 0..3 {
            let id = enqueue("t");
            claim("t");
            run(&format!("SELECT job.complete({id})"));
        }
        run("UPDATE job.metric_buckets SET bucket = bucket - interval '3 hours'");
        let id = enqueue("t");
        claim("t");
        run(&format!("SELECT job.complete({id})"));
        let before = one::<String>("SELECT job.prometheus_metrics()");
        assert!(one::<i32>("SELECT job._fold_metric_buckets(1000)") >= 1);
        assert_eq!(
            one::<String>(
                "SELECT concat_ws(' ', completed, processing_count) FROM job.metric_totals"
            ),
            "3 3"
        );
        let after = one::<String>("SELECT job.prometheus_metrics()");
        let completed = |text: &str| {
            text.lines()
                .find(|l| l.starts_with("pg_jobqueue_completed_total{queue=\"t\""))
                .unwrap()
                .to_string()
        };
        assert_eq!(
            completed(&before),
            "pg_jobqueue_completed_total{queue=\"t\",job_type=\"\"} 4"
        );
        assert_eq!(completed(&after), completed(&before));
    }

    #[pg_test]
    fn reading_metrics_never_touches_the_history_table() {
        run("SELECT job.create_queue('r')");
        let id = enqueue("r");
        claim("r");
        run(&format!("SELECT job.complete({id})"));
        run("SELECT job._count_queue_depth()");
        let scans =
            "SELECT coalesce(seq_scan, 0) + coalesce(idx_scan, 0) FROM pg_stat_xact_user_tables
                      WHERE relid = 'job.finished_jobs'::regclass";
        let before = one::<i64>(scans);
        run("SELECT count(*) FROM job.metrics");
        run("SELECT count(*) FROM job.queue_metrics");
        run("SELECT count(*) FROM job.workers");
        run("SELECT length(job.prometheus_metrics())");
        assert_eq!(one::<i64>(scans), before);
    }

    #[pg_test]
    fn prometheus_text_escapes_labels_and_names_each_family_once() {
        run("SELECT job.create_queue(E'we\"ird\\\\q')");
        let id = one::<i64>("SELECT job.enqueue(E'we\"ird\\\\q')");
        run(&format!("SELECT job.dequeue(E'we\"ird\\\\q', 'w')"));
        run(&format!("SELECT job.complete({id})"));
        run("SELECT job._count_queue_depth()");
        let text = one::<String>("SELECT job.prometheus_metrics()");
        assert!(
            text.contains("pg_jobqueue_jobs{queue=\"we\\\"ird\\\\q\",state=\"running\"} 0"),
            "{text}"
        );
        assert!(
            text.contains(
                "pg_jobqueue_processing_seconds_count{queue=\"we\\\"ird\\\\q\",job_type=\"\"} 1"
            ),
            "{text}"
        );
        for family in [
            "pg_jobqueue_jobs",
            "pg_jobqueue_completed_total",
            "pg_jobqueue_processing_seconds",
            "pg_jobqueue_worker_jobs",
        ] {
            assert_eq!(
                text.matches(&format!("# TYPE {family} ")).count(),
                1,
                "{family}"
            );
        }
        assert!(text.ends_with('\n'));
    }

    // ---- least privilege ---------------------------------------------------------------------

    /// The README's GRANT recipes, one role per duty.
    fn create_duty_roles() {
        for sql in [
            "CREATE ROLE jq_producer", "CREATE ROLE jq_worker", "CREATE ROLE jq_monitor",
            "CREATE ROLE jq_admin", "CREATE ROLE jq_nobody",
            "GRANT USAGE ON SCHEMA job TO jq_producer, jq_worker, jq_monitor, jq_admin",
            "GRANT EXECUTE ON FUNCTION job.enqueue, job.enqueue_many TO jq_producer",
            "GRANT EXECUTE ON FUNCTION job.dequeue, job.complete, job.complete_many, job.fail, job.heartbeat TO jq_worker",
            "GRANT SELECT ON job.jobs, job.queue_stats, job.queue_metrics, job.metrics, job.workers,
                             job.schedules, job.handlers, job.audit_log TO jq_monitor",
            "GRANT EXECUTE ON FUNCTION job.prometheus_metrics TO jq_monitor",
            "GRANT ALL ON ALL TABLES IN SCHEMA job TO jq_admin",
            "GRANT ALL ON ALL SEQUENCES IN SCHEMA job TO jq_admin",
            "GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA job TO jq_admin",
            "REVOKE UPDATE, DELETE, TRUNCATE ON job.audit_log FROM jq_admin",
        ] {
            run(sql);
        }
    }

    /// Runs `query` as `role`; returns its error message, or None when it succeeded.
    fn as_role(role: &str, query: &str) -> Option<String> {
        run(&format!("SET LOCAL ROLE {role}"));
        let quoted = query.replace('\'', "''");
        let outcome =
            Spi::get_one::<String>(&format!("SELECT pg_temp.error_of('{quoted}')")).unwrap();
        run("RESET ROLE");
        outcome
    }

    #[pg_test]
    fn each_duty_can_do_its_part_and_nothing_more() {
        error_of("SELECT 1/0"); // creates pg_temp.error_of as the superuser
        create_duty_roles();
        queue("q");
        let denied = |role: &str, query: &str| {
            let error = as_role(role, query).unwrap_or_else(|| panic!("{role} may run {query}"));
            assert!(
                error.starts_with("permission denied"),
                "{role}: {query}: {error}"
            );
        };
        let allowed = |role: &str, query: &str| {
            assert_eq!(as_role(role, query), None, "{role}: {query}");
        };
        allowed("jq_producer", "SELECT job.enqueue('q', '{\"n\": 1}')");
        allowed(
            "jq_producer",
            "SELECT job.enqueue_many('q', ARRAY['{}']::jsonb[])",
        );
        for query in [
            "SELECT job.dequeue('q')",
            "SELECT job.complete(1)",
            "SELECT job.fail(1, 'x')",
            "SELECT job.create_queue('q2')",
            "SELECT job.pause_queue('q')",
            "SELECT job.cancel(1)",
            "SELECT job.retry(1)",
            "SELECT job.purge('q', 'dead', '0')",
            "SELECT job.schedule('s', '@daily', 'q')",
            "SELECT * FROM job.jobs",
            "SELECT * FROM job.live_jobs",
            "DELETE FROM job.live_jobs",
            "UPDATE job.live_jobs SET state = 'running'",
            "SELECT job.prometheus_metrics()",
        ] {
            denied("jq_producer", query);
        }
        allowed("jq_worker", "SELECT job.dequeue('q', 'w')");
        allowed(
            "jq_worker",
            "SELECT job.complete(id) FROM job.dequeue('q', 'w')",
        );
        for query in [
            "SELECT job.enqueue('q')",
            "SELECT job.cancel(1)",
            "SELECT job.retry_dead('q')",
            "SELECT job.drop_queue('q', true)",
            "SELECT job.set_handler('q', 'pg_catalog.jsonb_typeof(jsonb)')",
            "UPDATE job.queues SET paused = true",
        ] {
            denied("jq_worker", query);
        }
        allowed("jq_monitor", "SELECT count(*) FROM job.jobs");
        allowed("jq_monitor", "SELECT count(*) FROM job.metrics");
        allowed("jq_monitor", "SELECT count(*) FROM job.queue_metrics");
        allowed("jq_monitor", "SELECT job.prometheus_metrics()");
        for query in [
            "SELECT job.enqueue('q')",
            "SELECT job.dequeue('q')",
            "SELECT job.retry_dead('q')",
            "DELETE FROM job.audit_log",
            "INSERT INTO job.queues (name) VALUES ('x')",
        ] {
            denied("jq_monitor", query);
        }
        for query in [
            "SELECT job.enqueue('q')",
            "SELECT count(*) FROM job.jobs",
            "SELECT job.cron_next('@daily')",
        ] {
            denied("jq_nobody", query);
        }
        allowed("jq_admin", "SELECT job.pause_queue('q')");
        allowed("jq_admin", "SELECT job.retry_dead('q')");
        allowed("jq_admin", "SELECT job.purge('q', 'dead', '0')");
        denied("jq_admin", "DELETE FROM job.audit_log");
        assert_eq!(
            one::<String>("SELECT string_agg(DISTINCT role, ',') FROM job.audit_log WHERE action <> 'create_queue'"),
            "jq_admin"
        );
    }

    #[pg_test]
    fn every_function_pins_its_search_path() {
        assert_eq!(
            one::<i64>("SELECT count(*) FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
                         WHERE p.pronamespace = 'job'::regnamespace AND p.prokind = 'f'
                           AND l.lanname IN ('sql', 'plpgsql')
                           AND NOT coalesce(p.proconfig, '{}') @> '{\"search_path=pg_catalog, pg_temp\"}'"),
            0
        );
        assert_eq!(
            one::<String>(
                "SELECT string_agg(p.proname, ',' ORDER BY p.proname) FROM pg_proc p
                            WHERE p.pronamespace = 'job'::regnamespace AND p.prosecdef"
            ),
            "complete,complete_many,dequeue,enqueue,enqueue_many,fail,heartbeat,prometheus_metrics"
        );
    }

    #[pg_test]
    fn a_hostile_search_path_name_or_payload_gains_nothing() {
        error_of("SELECT 1/0");
        create_duty_roles();
        queue("q");
        // A producer who owns a schema puts look-alikes of what enqueue calls first on its path.
        run("CREATE SCHEMA evil AUTHORIZATION jq_producer");
        run("CREATE TABLE public.trap (who text)");
        run("GRANT INSERT ON public.trap TO PUBLIC");
        run("SET LOCAL ROLE jq_producer");
        for sql in [
            "CREATE FUNCTION evil.now() RETURNS timestamptz LANGUAGE sql AS
               $$ INSERT INTO public.trap VALUES (current_user) RETURNING pg_catalog.now() $$",
            "CREATE FUNCTION evil.jsonb_typeof(jsonb) RETURNS text LANGUAGE sql AS
               $$ INSERT INTO public.trap VALUES (current_user) RETURNING 'object' $$",
            "CREATE FUNCTION evil.nextval(regclass) RETURNS bigint LANGUAGE sql AS
               $$ INSERT INTO public.trap VALUES (current_user) RETURNING 1::bigint $$",
            "CREATE FUNCTION evil.eq(text, text) RETURNS boolean LANGUAGE sql AS
               $$ INSERT INTO public.trap VALUES (current_user) RETURNING true $$",
            "CREATE OPERATOR evil.= (LEFTARG = text, RIGHTARG = text, FUNCTION = evil.eq)",
            "SET LOCAL search_path = evil, pg_catalog",
        ] {
            run(sql);
        }
        let id =
            one::<i64>("SELECT job.enqueue('q', '{\"sql\": \"''); DROP TABLE job.queues; --\"}')");
        run("RESET search_path");
        run("RESET ROLE");
        assert_eq!(one::<i64>("SELECT count(*) FROM public.trap"), 0);
        assert_eq!(
            one::<String>(&format!(
                "SELECT payload ->> 'sql' FROM job.jobs WHERE id = {id}"
            )),
            "'); DROP TABLE job.queues; --"
        );
        // Names are data too, in every function that takes one.
        let name = "x'); DROP TABLE job.queues; --";
        let quoted = name.replace('\'', "''");
        run(&format!("SELECT job.create_queue('{quoted}')"));
        run(&format!("SELECT job.enqueue('{quoted}')"));
        run(&format!(
            "SELECT job.schedule('{quoted}', '@daily', '{quoted}')"
        ));
        run(&format!("SELECT job.pause_queue('{quoted}')"));
        run("SELECT job._count_queue_depth()");
        assert!(one::<String>("SELECT job.prometheus_metrics()")
            .contains("queue=\"x'); DROP TABLE job.queues; --\""));
        assert_eq!(
            one::<i64>(&format!(
                "SELECT count(*) FROM job.queues WHERE name IN ('q', '{quoted}')"
            )),
            2
        );
    }

    #[pg_test]
    fn past_minutes_merge_their_writer_shards() {
        run("SELECT job.create_queue('c')");
        run("INSERT INTO job.metric_buckets
             SELECT date_trunc('minute', now()) - interval '5 minutes', 'c', '', s, 2, 1, 0, 0,
                    job._hist_add(job._hist_of(0.5), job._hist_of(2)), 2.5, job._hist_of(0.1), 0.1
               FROM generate_series(0, 3) s");
        run("INSERT INTO job.metric_buckets
             SELECT date_trunc('minute', now()), 'c', '', 0, 1, 0, 0, 0, job._hist_of(1), 1, job._hist_of(1), 1");
        assert_eq!(one::<i32>("SELECT job._compact_metric_buckets(1000)"), 4);
        assert_eq!(
            one::<String>("SELECT string_agg(concat_ws(' ', shard, completed, failed, processing_sum,
                                                       (SELECT sum(c) FROM unnest(processing) c)), ',' ORDER BY bucket)
                             FROM job.metric_buckets"),
            "-1 8 4 10 8,0 1 0 1 1"
        );
        assert_eq!(one::<i32>("SELECT job._compact_metric_buckets(1000)"), 0);
    }
}
