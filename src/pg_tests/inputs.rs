//! `#[pg_test]`s of bad input found by fuzzing 0.2.0: each was accepted, or refused without
//! naming what was wrong, or as an internal error (XX000).  Every refusal here also proves that
//! nothing changed (`assert_rejected`).

#[pgrx::pg_schema]
mod tests {
    use crate::pg_tests::support::*;
    use pgrx::prelude::*;

    #[pg_test]
    fn settings_whose_arithmetic_would_overflow_are_refused_by_name() {
        for setting in [
            "backoff_base",
            "backoff_max",
            "lease",
            "idempotency_window",
            "retention",
        ] {
            assert_rejected_with(
                &format!("SELECT job.create_queue('x', {setting} => '1000000 years')"),
                "22023",
                &format!("{setting} must be at most 100 years, got 1000000 years"),
            );
        }
        // At the bound, everything the queue's settings feed still works.
        run("SELECT job.create_queue('far', backoff_base => '100 years', backoff_max => '100 years',
                                     lease => '100 years', idempotency_window => '100 years',
                                     retention => '100 years')");
        let id = one::<i64>("SELECT job.enqueue('far', idempotency_key => 'k')");
        let token = one::<String>("SELECT lease_token::text FROM job.dequeue('far')");
        assert_eq!(
            one::<String>(&format!(
                "SELECT job.fail({id}, 'boom', token => '{token}')"
            )),
            "scheduled"
        );
        assert!(one::<i64>("SELECT job.apply_retention()") >= 0);
    }

    #[pg_test]
    fn one_queues_failing_retention_does_not_stop_the_others() {
        queue("good");
        let old = enqueue("good");
        claim("good");
        run(&format!("SELECT job.complete({old})"));
        run(&format!(
            "UPDATE job.finished_jobs SET finished_at = now() - interval '30 days' WHERE id = {old}"
        ));
        // A row no API call can make any more (the bounds above), as a 0.2.0 database may have.
        run("ALTER TABLE job.queues DROP CONSTRAINT queues_retention_check");
        run(
            "INSERT INTO job.queues (name, max_retries, backoff_base, backoff_max, jitter, lease,
                                     idempotency_window, retention)
             VALUES ('broken', 0, '1 s', '1 s', 0, '1 min', '1 day', '1000000 years')",
        );
        run("INSERT INTO job.finished_jobs (id, run_at, enqueued_at, priority, attempt, max_retries, state, queue, payload, errors)
             VALUES (999999, now(), now(), 0, 1, 0, 'completed', 'broken', '{}', '[]')");
        assert_eq!(one::<i64>("SELECT job.apply_retention()"), 1);
        assert_eq!(
            one::<i64>(&format!("SELECT count(*) FROM job.jobs WHERE id = {old}")),
            0
        );
    }

    #[pg_test]
    fn time_arguments_out_of_range_are_refused_by_name() {
        queue("q");
        let id = enqueue("q");
        let token = one::<String>("SELECT lease_token::text FROM job.dequeue('q')");
        run("SELECT job.schedule('s', '@daily', 'q')");
        for (call, name) in [
            ("SELECT job.enqueue('q', delay => '300000 years')", "delay"),
            ("SELECT job.dequeue('q', lease => '300000 years')", "lease"),
            (
                &format!("SELECT job.heartbeat({id}, extend => '300000 years')") as &str,
                "extend",
            ),
            (
                &format!("SELECT job.fail({id}, 'x', retry_after => '300000 years')"),
                "retry_after",
            ),
            (
                "SELECT job.schedule('s', '@daily', 'q', jitter => '300000 years')",
                "jitter",
            ),
            (
                "SELECT job.purge('q', 'dead', '300000 years')",
                "older_than",
            ),
        ] {
            assert_rejected_with(
                call,
                "22023",
                &format!("{name} must be at most 100 years, got 300000 years"),
            );
        }
        assert!(one::<bool>(&format!(
            "SELECT job.complete({id}, NULL, '{token}')"
        )));
    }

    #[pg_test]
    fn rust_functions_raise_user_errors_with_a_sqlstate_and_the_argument() {
        for (call, state, message) in [
            ("SELECT job.retry_delay(-1, '1 s', '1 min', 0.1)", "22023", "attempt must be 1 or more, got -1"),
            ("SELECT job.retry_delay(1, '0 s', '1 min', 0.1)", "22023", "backoff_base must be a positive interval, got 00:00:00"),
            ("SELECT job.retry_delay(1, '1 s', '1 min', 2)", "22023", "jitter must be between 0 and 1, got 2"),
            ("SELECT job.is_permanent_failure('x', false, 999)", "22023", "http_status must be an HTTP status code between 100 and 599, got 999"),
            ("SELECT job.cron_next('@daily', 'UTC', 'infinity')", "22023", "after must be a finite time, got infinity"),
            ("SELECT job.cron_next('@daily', 'UTC', '-infinity')", "22023", "after must be a finite time, got -infinity"),
            ("SELECT job.cron_next('@daily', 'UTC', '200000-01-01')", "22008",
             "after is out of the range schedules are computed for (years -9000 to 9000), got 200000-01-01 00:00:00+00"),
            ("SELECT job.cron_next('@daily', 'Mars/Base')", "22023", "unknown time zone \"Mars/Base\""),
        ] {
            assert_rejected_with(call, state, message);
        }
        // Far in the past is fine: a real answer, never a silent NULL.
        assert_eq!(
            one::<String>("SELECT job.cron_next('@daily', 'UTC', '4713-01-01 BC')::text"),
            "4713-01-02 00:00:00+00 BC"
        );
    }

    #[pg_test]
    fn rust_functions_return_null_for_null_arguments() {
        assert!(one::<bool>(
            "SELECT job.cron_next(NULL) IS NULL AND job.cron_next('@daily', NULL) IS NULL"
        ));
        assert!(one::<bool>(
            "SELECT job.is_permanent_failure(NULL, NULL, NULL) IS NULL
                AND job.is_permanent_failure('x', NULL) IS NULL
                AND job.is_permanent_failure('x') = false"
        ));
        assert!(one::<bool>(
            "SELECT job.retry_delay(NULL, '1 s', '1 s', 0) IS NULL"
        ));
        // The pure helpers anyone may call, too.
        assert!(one::<bool>(
            "SELECT job._hist_quantile(NULL, NULL) IS NULL AND job._hist_quantile(job._hist_of(1), NULL) IS NULL
                AND job._hist_add(NULL, NULL) IS NOT NULL AND job._hist_of(NULL) IS NOT NULL"
        ));
    }

    #[pg_test]
    fn counts_are_checked_and_named() {
        queue("q");
        for (call, message) in [
            (
                "SELECT job.rescue_stalled('q', -1)",
                "max_jobs must be between 0 and 1000000, got -1",
            ),
            (
                "SELECT job.rescue_stalled('q', NULL)",
                "max_jobs must not be NULL",
            ),
            (
                "SELECT job.apply_retention(-1)",
                "max_rows must be between 0 and 1000000, got -1",
            ),
            (
                "SELECT job.rescue_stalled('no-such-queue')",
                "queue 'no-such-queue' does not exist",
            ),
        ] {
            assert_rejected(call, message);
        }
        assert_eq!(one::<i32>("SELECT job.rescue_stalled('q', 0)"), 0);
    }

    #[pg_test]
    fn names_made_only_of_invisible_characters_are_refused() {
        queue("q");
        let invisible =
            "queue name must have a visible character: it is only white space or invisible characters";
        for name in [
            "E'\\u00a0'",
            "E'\\u200b'",
            "E'\\u3000\\u2060'",
            "E'\\ufeff'",
            "'  '",
        ] {
            assert_rejected_with(
                &format!("SELECT job.create_queue({name})"),
                "22023",
                invisible,
            );
        }
        assert_rejected(
            "SELECT job.enqueue('q', job_type => E'\\u200b')",
            "job_type must have a visible character: it is only white space or invisible characters",
        );
        assert_rejected(
            "SELECT job.enqueue('q', idempotency_key => E'\\u00a0')",
            "idempotency_key must have a visible character: it is only white space or invisible characters",
        );
        assert_rejected(
            "SELECT job.dequeue('q', worker => E'\\u200b')",
            "worker must have a visible character: it is only white space or invisible characters",
        );
        assert_rejected(
            "SELECT job.create_queue('')",
            "queue name must not be empty",
        );
        // Names in other scripts are names.
        run("SELECT job.create_queue('émails-送信')");
    }

    #[pg_test]
    fn a_two_dimensional_payload_array_is_refused() {
        queue("q");
        assert_rejected_with(
            r#"SELECT job.enqueue_many('q', '{{"{}","{}"},{"{}","{}"}}'::jsonb[])"#,
            "22023",
            "payloads must be a one-dimensional array, got 2 dimensions",
        );
    }

    #[pg_test]
    fn a_huge_error_text_is_kept_in_part() {
        queue("q");
        let id = enqueue("q");
        claim("q");
        run(&format!(
            "SELECT job.fail({id}, repeat('x', 20 * 1024 * 1024))"
        ));
        assert_eq!(
            one::<String>(&format!(
                "SELECT concat_ws(',', length(errors -> -1 ->> 'error'), errors -> -1 ->> 'error_length')
                   FROM job.jobs WHERE id = {id}"
            )),
            "8192,20971520"
        );
    }

    /// Issue 19, item 12: `create_queue(concurrency => 2147483647)` inserted 2^31 slot rows
    /// (3 GB in 8 minutes before it was cancelled), and no count the API takes had an upper
    /// bound.  Each is now refused past its documented bound (22023 naming the argument and
    /// the bound), changing nothing, and works at it.
    #[pg_test]
    fn every_count_has_a_documented_bound() {
        queue("q");
        let big = i32::MAX;
        for (call, message) in [
            (format!("SELECT job.create_queue('q3', concurrency => {big})"),
             format!("concurrency must be between 1 and 10000 (or NULL for no limit), got {big}")),
            (format!("SELECT job.create_queue('q', key_concurrency => {big})"),
             format!("key_concurrency must be between 1 and 10000 (or NULL for no limit), got {big}")),
            (format!("SELECT job.create_queue('q', rate_limit => {big})"),
             format!("rate_limit must be between 1 and 1000000 (or NULL for no limit), got {big}")),
            (format!("SELECT job.create_queue('q', key_rate_limit => {big})"),
             format!("key_rate_limit must be between 1 and 1000000 (or NULL for no limit), got {big}")),
            (format!("SELECT job.create_queue('q', max_payload_bytes => {big})"),
             format!("max_payload_bytes must be between 1 and 100000000 (or NULL for no limit), got {big}")),
            (format!("SELECT job.create_queue('q', max_retries => {big})"),
             format!("max_retries must be between 0 and 1000, got {big}")),
            (format!("SELECT job.enqueue('q', max_retries => {big})"),
             format!("max_retries must be between 0 and 1000, got {big}")),
            (format!("SELECT * FROM job.dequeue('q', batch => {big})"),
             format!("batch must be between 1 and 10000, got {big}")),
            (format!("SELECT job.rescue_stalled('q', {big})"),
             format!("max_jobs must be between 0 and 1000000, got {big}")),
            (format!("SELECT job.apply_retention({big})"),
             format!("max_rows must be between 0 and 1000000, got {big}")),
        ] {
            assert_rejected_with(&call, "22023", &message);
        }
        // At the bounds, everything works.
        run(
            "SELECT job.create_queue('wide', concurrency => 10000, key_concurrency => 10000,
                                     rate_limit => 1000000, key_rate_limit => 1000000,
                                     max_payload_bytes => 100000000, max_retries => 1000)",
        );
        assert_eq!(
            one::<i64>("SELECT count(*) FROM job.concurrency_slots WHERE queue = 'wide'"),
            10000
        );
        let id = one::<i64>("SELECT job.enqueue('wide', max_retries => 1000)");
        assert_eq!(
            one::<i64>("SELECT id FROM job.dequeue('wide', batch => 10000)"),
            id
        );
    }

    /// Issue 19, item 12: heartbeat_many paired a two-dimensional array's flattened elements
    /// with tokens, where complete_many and dequeue(complete => ...) refuse one.
    #[pg_test]
    fn heartbeat_many_refuses_a_two_dimensional_array_as_complete_does() {
        queue("q");
        enqueue("q");
        enqueue("q");
        let token = one::<String>(
            "SELECT (array_agg(lease_token))[1]::text FROM job.dequeue('q', batch => 2)",
        );
        let ids = one::<String>("SELECT string_agg(id::text, ',') FROM job.jobs");
        for call in [
            format!("SELECT * FROM job.heartbeat_many(ARRAY[ARRAY[{ids}]]::bigint[], ARRAY['{token}']::uuid[])"),
            format!("SELECT * FROM job.heartbeat_many(ARRAY[{ids}]::bigint[], ARRAY[ARRAY['{token}']]::uuid[])"),
        ] {
            assert_rejected_with(&call, "22023", "ids and tokens must be one-dimensional arrays");
        }
        assert_eq!(
            one::<i64>(&format!(
                "SELECT count(*) FROM job.heartbeat_many(ARRAY[{ids}]::bigint[], ARRAY['{token}']::uuid[]) WHERE held"
            )),
            2
        );
    }

    /// Issue 19, items 9 and 10: starts, delays, debounces and holds years ahead held keys and
    /// queues for as long.  Each is bounded by its setting (22023 naming the argument, the
    /// bound and the setting; nothing changed), which a superuser may lower or raise.
    #[pg_test]
    fn starts_debounces_and_holds_are_bounded_by_their_settings() {
        queue("q");
        for (call, message) in [
            ("SELECT job.enqueue('q', delay => '366 days')",
             "delay must be at most 365 days (pg_jobqueue.max_delay), got 366 days"),
            ("SELECT job.enqueue('q', debounce_key => 'd', debounce => '2 days')",
             "debounce must be at most 1 day (pg_jobqueue.max_debounce), got 2 days"),
            ("SELECT job.enqueue('q', debounce_key => 'd', debounce => '1 hour', debounce_max_wait => '2 days')",
             "debounce_max_wait must be at most 1 day (pg_jobqueue.max_debounce), got 2 days"),
        ] {
            assert_rejected_with(call, "22023", message);
        }
        for call in [
            "SELECT job.enqueue('q', order_key => 'o', run_at => '9999-01-01')",
            "SELECT job.rate_limit_pause('q', until => '200000-01-01')",
            "SELECT job.rate_limit_pause('q', key => 'k', until => now() + interval '25 hours')",
        ] {
            let (state, message) = error_state_of(call);
            assert_eq!(state, "22023", "{call}: {message}");
            let before = fingerprint();
            let _ = error_state_of(call);
            assert_eq!(fingerprint(), before, "{call} changed something");
        }
        // Within the bounds, and past a bound a superuser raised.
        run("SELECT job.enqueue('q', run_at => now() + interval '364 days')");
        run("SELECT job.rate_limit_pause('q', until => now() + interval '23 hours')");
        run("SET pg_jobqueue.max_hold = '2d'");
        run("SELECT job.rate_limit_pause('q', until => now() + interval '47 hours')");
        run("SET pg_jobqueue.max_delay = '1h'");
        assert_eq!(
            error_state_of("SELECT job.enqueue('q', delay => '2 hours')").0,
            "22023"
        );
    }
}
