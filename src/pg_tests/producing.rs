//! `#[pg_test]`s of producing: enqueue, enqueue_many, idempotency keys.

#[pgrx::pg_schema]
mod tests {
    use crate::pg_tests::support::*;
    use pgrx::prelude::*;

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
                "max_retries must be between 0 and 1000, got -2".to_string(),
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
}
