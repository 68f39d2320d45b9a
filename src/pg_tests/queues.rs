//! `#[pg_test]`s of queues: creating, changing, pausing, dropping; payload size limits.

#[pgrx::pg_schema]
mod tests {
    use crate::pg_tests::support::*;
    use pgrx::prelude::*;

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

    /// The README's story: a queue's rate limit set first, then its concurrency by a second
    /// create_queue that does not name the rate limit.  0.4.0 reset every setting the call
    /// left out (the rate limit was gone); now only what a call names changes.
    #[pg_test]
    fn create_queue_on_an_existing_queue_changes_only_what_it_names() {
        let settings = "SELECT concat_ws(',', max_retries, lease, concurrency, key_concurrency, rate_limit, rate_period, fair)
                          FROM job.queues WHERE name = 'syncs'";
        run("SELECT job.create_queue('syncs', key_concurrency => 1, rate_limit => 100, rate_period => '1 minute', max_retries => 3)");
        run("SELECT job.create_queue('syncs', concurrency => 20, key_concurrency => 1)");
        assert_eq!(one::<String>(settings), "3,00:05:00,20,1,100,00:01:00,f");
        // The same call again changes nothing, and audits nothing.
        let audited = "SELECT count(*)::int FROM job.audit_log WHERE arguments->>'name' = 'syncs'";
        let entries = one::<i32>(audited);
        run("SELECT job.create_queue('syncs', concurrency => 20, key_concurrency => 1)");
        assert_eq!(one::<i32>(audited), entries);

        // alter_queue: one setting; the others stay.  A new limit without a period gets 1 s.
        run("SELECT job.alter_queue('syncs', rate_limit => 200, key_rate_limit => 5)");
        assert_eq!(one::<String>(settings), "3,00:05:00,20,1,200,00:01:00,f");
        assert_eq!(
            one::<String>("SELECT key_rate_period::text FROM job.queues WHERE name = 'syncs'"),
            "00:00:01"
        );
        // reset lifts a limit with its period, and puts a setting back to its default.
        run("SELECT job.alter_queue('syncs', reset => '{rate_limit,max_retries}', fair => true)");
        // (concat_ws skips the NULLs: no rate_limit, no rate_period.)
        assert_eq!(one::<String>(settings), "5,00:05:00,20,1,t");
        // Audited as alter_queue, with what changed before and after.
        assert_eq!(
            one::<String>(
                "SELECT format('%s,%s,%s,%s', arguments->'before'->>'rate_limit', arguments->'after'->>'rate_limit',
                                  arguments->'before'->>'max_retries', arguments->'after'->>'max_retries')
                   FROM job.audit_log WHERE action = 'alter_queue' ORDER BY id DESC LIMIT 1"
            ),
            "200,,3,5"
        );
    }

    /// Every setting `reset` names goes back to a new queue's value: the two agree.
    #[pg_test]
    fn alter_queue_resets_every_setting_to_a_new_queues_value() {
        let all = "concat_ws(',', max_retries, backoff_base, backoff_max, jitter, lease, idempotency_window, retention,
                             max_payload_bytes, concurrency, key_concurrency, rate_limit, rate_period,
                             key_rate_limit, key_rate_period, fair)";
        queue("fresh");
        run("SELECT job.create_queue('changed', max_retries => 1, backoff_base => '2 s', backoff_max => '3 s',
                 jitter => 0.5, lease => '1 minute', idempotency_window => '1 hour', retention => '1 day',
                 max_payload_bytes => 1000, concurrency => 2, key_concurrency => 1, rate_limit => 3,
                 rate_period => '1 minute', key_rate_limit => 2, key_rate_period => '1 minute', fair => true)");
        let changed = one::<String>(&format!(
            "SELECT {all} FROM job.queues WHERE name = 'changed'"
        ));
        let fresh = one::<String>(&format!(
            "SELECT {all} FROM job.queues WHERE name = 'fresh'"
        ));
        assert_ne!(changed, fresh);
        run("SELECT job.alter_queue('changed', reset => job._queue_setting_names())");
        assert_eq!(
            one::<String>(&format!(
                "SELECT {all} FROM job.queues WHERE name = 'changed'"
            )),
            fresh
        );
    }

    #[pg_test]
    fn alter_queue_refuses_what_it_cannot_do_and_changes_nothing() {
        run("SELECT job.create_queue('q', backoff_base => '10 s', backoff_max => '20 s')");
        for (call, state, message) in [
            (
                "SELECT job.alter_queue('missing', max_retries => 1)",
                "42704",
                "queue 'missing' does not exist",
            ),
            (
                "SELECT job.alter_queue('q', reset => '{rate_limit,color,NULL}')",
                "22023",
                "reset names no setting of a queue: color, NULL",
            ),
            (
                "SELECT job.alter_queue('q', rate_limit => 5, reset => '{rate_limit}')",
                "22023",
                "a setting both given and reset: rate_limit",
            ),
            // Checked against the queue's other settings as they stand.
            (
                "SELECT job.alter_queue('q', backoff_max => '5 s')",
                "22023",
                "backoff_max (00:00:05) must not be less than backoff_base (00:00:10)",
            ),
            (
                "SELECT job.alter_queue('q', rate_period => '1 minute')",
                "22023",
                "rate_period needs a rate_limit",
            ),
            (
                "SELECT job.alter_queue('q', concurrency => 0)",
                "22023",
                "concurrency must be between 1 and 10000 (or NULL for no limit), got 0",
            ),
        ] {
            assert_rejected_with(call, state, message);
        }
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
                "queue name must have a visible character: it is only white space or invisible characters".to_string(),
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
                "max_retries must be between 0 and 1000, got -1".to_string(),
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

    // A queue a test drops has a name no other test uses: the tests run at once, each in its
    // own transaction, and a drop's lock is the queue name's, so another test's enqueue into
    // its own 'q' failed with "queue 'q' is being dropped" now and then.
    #[pg_test]
    fn drop_queue_refuses_unfinished_jobs_unless_forced() {
        queue("dropped_forced");
        let id = enqueue("dropped_forced");
        run("SELECT job.enqueue('dropped_forced', idempotency_key => 'k')");
        assert_rejected(
            "SELECT job.drop_queue('dropped_forced')",
            "queue 'dropped_forced' still has 2 unfinished (waiting, scheduled or running) jobs",
        );
        run("SELECT job.drop_queue('dropped_forced', force => true)");
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
        queue("dropped_history");
        enqueue("dropped_history");
        let id = claim("dropped_history");
        run(&format!("SELECT job.complete({id})"));
        run("SELECT job.drop_queue('dropped_history')");
        assert_eq!(one::<i64>("SELECT count(*) FROM job.jobs"), 0);
        assert_rejected(
            "SELECT job.drop_queue('dropped_history')",
            "queue 'dropped_history' does not exist",
        );
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
            "max_payload_bytes must be between 1 and 100000000 (or NULL for no limit), got 0",
        );
        run("SELECT job.create_queue('small')"); // names nothing: changes nothing
        assert_rejected(
            &format!("SELECT job.enqueue('small', '{big}')"),
            &format!("payload is {size} bytes, more than queue 'small' accepts (max_payload_bytes = 100)"),
        );
        run("SELECT job.alter_queue('small', reset => '{max_payload_bytes}')"); // lifts the limit
        assert!(one::<i64>(&format!("SELECT job.enqueue('small', '{big}')")) > fits);
    }
}
