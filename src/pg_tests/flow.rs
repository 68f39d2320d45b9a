//! `#[pg_test]`s of flow control (sql/flow.sql): each limit and key in one session, and every
//! rejection.  Several sessions at once: tests/integration/tests/flow.rs.

#[pgrx::pg_schema]
mod tests {
    use crate::pg_tests::support::*;
    use pgrx::prelude::*;

    fn claim_ids(queue: &str, batch: i32) -> Vec<i64> {
        let mut ids = ids_of(&format!(
            "SELECT id FROM job.dequeue('{queue}', 'tester', {batch})"
        ));
        ids.sort();
        ids
    }

    fn complete(id: i64) {
        run(&format!(
            "SELECT job.complete({id}, NULL, (SELECT lease_token FROM job.live_jobs WHERE id = {id}))"
        ));
    }

    #[pg_test]
    fn flow_settings_are_validated_and_a_refusal_changes_nothing() {
        queue("plain");
        for (call, state, message) in [
            ("SELECT job.create_queue('plain', concurrency => 0)", "22023",
             "concurrency must be between 1 and 10000 (or NULL for no limit), got 0"),
            ("SELECT job.create_queue('plain', key_concurrency => -1)", "22023",
             "key_concurrency must be between 1 and 10000 (or NULL for no limit), got -1"),
            ("SELECT job.create_queue('plain', rate_period => '1 minute')", "22023",
             "rate_period needs a rate_limit"),
            ("SELECT job.create_queue('plain', key_rate_limit => 5, key_rate_period => '0 seconds')", "22023",
             "key_rate_period must be a positive interval, got 00:00:00"),
            ("SELECT job.enqueue('plain', concurrency_key => 'k')", "22023",
             "queue 'plain' has no per-key limit and is not fair, so concurrency_key 'k' would do nothing"),
            ("SELECT job.enqueue_many('plain', ARRAY['{}']::jsonb[], concurrency_key => 'k')", "22023",
             "queue 'plain' has no per-key limit and is not fair, so concurrency_key 'k' would do nothing"),
            ("SELECT job.enqueue('plain', order_key => 'a', singleton_key => 'a')", "22023",
             "give at most one of order_key, singleton_key and debounce_key"),
            ("SELECT job.enqueue('plain', debounce_key => 'a')", "22004",
             "debounce_key needs debounce, the quiet period"),
            ("SELECT job.enqueue('plain', debounce => '1 second')", "22023",
             "debounce and debounce_max_wait need a debounce_key"),
            ("SELECT job.enqueue('plain', debounce_key => 'a', debounce => '5 seconds', debounce_max_wait => '1 second')", "22023",
             "debounce_max_wait (00:00:01) must not be less than debounce (00:00:05)"),
            ("SELECT job.enqueue('plain', debounce_key => 'a', debounce => '1 second', delay => '1 minute')", "22023",
             "a debounced job starts after its quiet period: give no run_at or delay"),
            ("SELECT job.enqueue('plain', singleton_key => 'a', idempotency_key => 'i')", "22023",
             "give idempotency_key or a singleton key, not both"),
            ("SELECT job.enqueue('plain', order_key => '')", "22023",
             "order_key must not be empty"),
            ("SELECT job.rate_limit_pause('plain', until => 'infinity')", "22023",
             "until must be a finite time, got infinity"),
            ("SELECT job.rate_limit_pause('nope')", "42704", "queue 'nope' does not exist"),
        ] {
            assert_rejected_with(call, state, message);
        }
    }

    #[pg_test]
    fn queue_concurrency_caps_running_jobs_and_frees_a_slot_when_one_finishes() {
        run("SELECT job.create_queue('c', concurrency => 2)");
        for _ in 0..5 {
            enqueue("c");
        }
        let first = claim_ids("c", 5);
        assert_eq!(first.len(), 2);
        assert!(claim_ids("c", 5).is_empty(), "both slots are taken");
        complete(first[0]);
        assert_eq!(claim_ids("c", 5).len(), 1, "one slot freed");
        // A lapsed lease frees its slot too (a worker that died).
        age_job(first[1]);
        assert_eq!(claim_ids("c", 5).len(), 1);
        assert_eq!(
            one::<i64>("SELECT count(*) FROM job.concurrency_slots WHERE queue = 'c'"),
            2
        );
    }

    #[pg_test]
    fn key_concurrency_skips_saturated_keys_and_keeps_claim_order_for_the_rest() {
        run("SELECT job.create_queue('k', key_concurrency => 1)");
        let a1 = one::<i64>("SELECT job.enqueue('k', concurrency_key => 'a', priority => 5)");
        let a2 = one::<i64>("SELECT job.enqueue('k', concurrency_key => 'a', priority => 5)");
        let b1 = one::<i64>("SELECT job.enqueue('k', concurrency_key => 'b')");
        let free = enqueue("k");
        assert_eq!(
            claim_ids("k", 10),
            vec![a1, b1, free],
            "one per key, and the keyless job"
        );
        assert!(claim_ids("k", 10).is_empty(), "a2 waits for a1");
        complete(a1);
        assert_eq!(claim_ids("k", 10), vec![a2]);
    }

    #[pg_test]
    fn a_job_behind_a_saturated_keys_long_backlog_is_still_found() {
        // More jobs of key a at the front than a claim reads in claim order (1,000 + 10 per
        // job wanted): past them the claim goes key by key.
        run("SELECT job.create_queue('hol', key_concurrency => 1)");
        run("SELECT job.enqueue_many('hol', array_fill('{}'::jsonb, ARRAY[1200]), concurrency_key => 'a')");
        let b = one::<i64>("SELECT job.enqueue('hol', concurrency_key => 'b')");
        assert_eq!(claim_ids("hol", 1).len(), 1, "a's first job");
        assert_eq!(claim_ids("hol", 1), vec![b]);
        assert!(claim_ids("hol", 5).is_empty());

        queue("hol_order");
        run("SELECT job.enqueue_many('hol_order', array_fill('{}'::jsonb, ARRAY[1200]), order_key => 'a')");
        let ob = one::<i64>("SELECT job.enqueue('hol_order', order_key => 'b')");
        assert_eq!(claim_ids("hol_order", 1).len(), 1, "a's first job");
        assert_eq!(claim_ids("hol_order", 1), vec![ob]);
    }

    #[pg_test]
    fn a_rate_limit_delays_starts_and_says_when_the_next_may_come() {
        run("SELECT job.create_queue('r', rate_limit => 3, rate_period => '1 hour')");
        for _ in 0..5 {
            enqueue("r");
        }
        // Each claim counts in one of the queue's windows (here 3, with one start an hour each).
        let started: usize = (0..3).map(|_| claim_ids("r", 10).len()).sum();
        assert_eq!(started, 3);
        assert!(claim_ids("r", 10).is_empty());
        assert!(one::<bool>(
            "SELECT job.next_due('r') > now() + interval '59 minutes'"
        ));
        assert!(
            one::<bool>(
                "SELECT bool_and(wake_at > now()) FROM job.rate_windows WHERE queue = 'r' AND key = ''"
            ),
            "the scheduler wakes the queue when the window allows"
        );
        assert_eq!(
            one::<i64>("SELECT count(*) FROM job.jobs WHERE queue = 'r' AND state = 'waiting'"),
            2
        );
    }

    #[pg_test]
    fn a_key_rate_limit_holds_back_only_its_key() {
        run("SELECT job.create_queue('kr', key_rate_limit => 1, key_rate_period => '1 hour')");
        let a1 = one::<i64>("SELECT job.enqueue('kr', concurrency_key => 'a')");
        one::<i64>("SELECT job.enqueue('kr', concurrency_key => 'a')");
        let b1 = one::<i64>("SELECT job.enqueue('kr', concurrency_key => 'b')");
        assert_eq!(claim_ids("kr", 10), vec![a1, b1]);
        complete(a1);
        assert!(
            claim_ids("kr", 10).is_empty(),
            "a's window is full for the hour"
        );
    }

    #[pg_test]
    fn holds_keep_a_queue_or_a_key_back_until_lifted() {
        run("SELECT job.create_queue('h', key_concurrency => 5)");
        let a = one::<i64>("SELECT job.enqueue('h', concurrency_key => 'a')");
        let b = one::<i64>("SELECT job.enqueue('h', concurrency_key => 'b')");
        run("SELECT job.rate_limit_pause('h', 'a', now() + interval '1 hour')");
        assert_eq!(
            one::<i64>("SELECT count(*) FROM job.rate_limit_holds WHERE queue = 'h' AND key = 'a'"),
            1
        );
        assert_eq!(claim_ids("h", 10), vec![b]);
        run("SELECT job.rate_limit_pause('h', 'a', NULL)");
        assert_eq!(claim_ids("h", 10), vec![a]);

        let c = enqueue("h");
        run("SELECT job.rate_limit_pause('h', until => now() + interval '1 minute')");
        assert!(claim_ids("h", 10).is_empty(), "the whole queue is held");
        assert_eq!(
            one::<String>(
                "SELECT (held_until - now())::text FROM job.queue_settings WHERE queue = 'h'"
            ),
            "00:01:00"
        );
        run("SELECT job.rate_limit_pause('h')");
        assert_eq!(claim_ids("h", 10), vec![c]);
        assert_eq!(
            one::<i64>("SELECT count(*) FROM job.audit_log WHERE action = 'rate_limit_pause'"),
            4
        );
    }

    #[pg_test]
    fn an_order_key_runs_its_jobs_one_at_a_time_oldest_first_and_a_retry_holds_its_place() {
        queue("o");
        let a1 = one::<i64>("SELECT job.enqueue('o', order_key => 'a')");
        let a2 = one::<i64>("SELECT job.enqueue('o', order_key => 'a', priority => 10)");
        let b1 = one::<i64>("SELECT job.enqueue('o', order_key => 'b')");
        assert_eq!(
            claim_ids("o", 10),
            vec![a1, b1],
            "a2's priority does not put it before a1"
        );
        run(&format!(
            "SELECT job.fail({a1}, 'flaky', token => (SELECT lease_token FROM job.live_jobs WHERE id = {a1}))"
        ));
        assert_eq!(state(a1), "scheduled");
        age_job(a1);
        assert!(
            claim_ids("o", 10).iter().all(|&id| id != a2),
            "the retry goes first"
        );
        complete(a1);
        assert_eq!(claim_ids("o", 10), vec![a2]);
    }

    #[pg_test]
    fn a_singleton_key_keeps_one_job_waiting_and_one_running() {
        queue("s");
        let first = one::<i64>("SELECT job.enqueue('s', '{\"v\": 1}', singleton_key => 'x')");
        assert_eq!(
            one::<i64>("SELECT job.enqueue('s', '{\"v\": 2}', singleton_key => 'x')"),
            first
        );
        assert_eq!(claim_ids("s", 10), vec![first]);
        let next = one::<i64>("SELECT job.enqueue('s', '{\"v\": 3}', singleton_key => 'x')");
        assert_ne!(next, first);
        assert_eq!(
            one::<i64>("SELECT job.enqueue('s', '{\"v\": 4}', singleton_key => 'x')"),
            next
        );
        assert!(claim_ids("s", 10).is_empty(), "one runs already");
        assert_eq!(
            one::<String>(&format!(
                "SELECT payload::text FROM job.jobs WHERE id = {first}"
            )),
            "{\"v\": 2}"
        );
        assert_eq!(
            one::<String>(&format!(
                "SELECT payload::text FROM job.jobs WHERE id = {next}"
            )),
            "{\"v\": 4}"
        );
        complete(first);
        assert_eq!(claim_ids("s", 10), vec![next]);
    }

    #[pg_test]
    fn a_debounce_key_merges_enqueues_and_pushes_the_start_back_up_to_max_wait() {
        queue("d");
        let call = |payload: &str| {
            one::<i64>(&format!(
                "SELECT job.enqueue('d', '{payload}', debounce_key => 'x', debounce => '10 seconds', debounce_max_wait => '25 seconds')"
            ))
        };
        let id = call("{\"v\": 1}");
        assert_eq!(state(id), "scheduled");
        // The first enqueue was 20 seconds ago: the next pushes the start to 25 s after it, not 10 s from now.
        run(&format!(
            "UPDATE job.live_jobs SET enqueued_at = now() - interval '20 seconds' WHERE id = {id}"
        ));
        assert_eq!(call("{\"v\": 2}"), id);
        assert_eq!(
            one::<String>(&format!(
                "SELECT concat_ws(',', payload, run_at - now()) FROM job.live_jobs WHERE id = {id}"
            )),
            "{\"v\": 2},00:00:05"
        );
        // Started: a new enqueue makes a new job.
        run(&format!(
            "UPDATE job.live_jobs SET run_at = now(), state = 'waiting' WHERE id = {id}"
        ));
        assert_eq!(claim_ids("d", 1), vec![id]);
        assert_ne!(call("{\"v\": 3}"), id);
    }

    #[pg_test]
    fn a_fair_queue_takes_keys_in_turn() {
        run("SELECT job.create_queue('f', fair => true)");
        run("SELECT job.enqueue_many('f', array_fill('{}'::jsonb, ARRAY[20]), concurrency_key => 'big')");
        run("SELECT job.enqueue_many('f', array_fill('{}'::jsonb, ARRAY[2]), concurrency_key => 'small')");
        let mut keys = Vec::new();
        for _ in 0..4 {
            keys.push(one::<String>(
                "SELECT j.concurrency_key FROM job.dequeue('f', 'tester') d JOIN job.jobs j USING (id)",
            ));
        }
        assert_eq!(keys, ["big", "small", "big", "small"]);
    }

    #[pg_test]
    fn idle_keys_rate_windows_are_pruned_and_held_or_recent_ones_kept() {
        run("SELECT job.create_queue('p', key_rate_limit => 10)");
        for key in ["old", "recent", "held"] {
            run(&format!(
                "SELECT job.enqueue('p', concurrency_key => '{key}')"
            ));
        }
        assert_eq!(claim_ids("p", 10).len(), 3);
        run("SELECT job.rate_limit_pause('p', 'held', now() + interval '1 hour')");
        // 'old' and 'held' started long ago (their slots moved an hour back).
        run("UPDATE job.rate_windows SET base = base - 72000 WHERE key IN ('old', 'held')");
        run("UPDATE job.rate_windows SET wake_at = NULL");
        assert_eq!(one::<i32>("SELECT job._prune_rate_windows(100)"), 1);
        assert_eq!(
            one::<String>(
                "SELECT string_agg(key, ',' ORDER BY key) FROM job.rate_windows WHERE queue = 'p'"
            ),
            "held,recent"
        );
    }

    #[pg_test]
    fn a_jobs_keys_stay_with_it_in_history_and_when_retried() {
        run("SELECT job.create_queue('kept', max_retries => 0)");
        let id = one::<i64>("SELECT job.enqueue('kept', order_key => 'o')");
        claim_ids("kept", 1);
        run(&format!("SELECT job.fail({id}, 'boom')"));
        let keys = format!("SELECT concat_ws(',', state, order_key) FROM job.jobs WHERE id = {id}");
        assert_eq!(one::<String>(&keys), "dead,o");
        run(&format!("SELECT job.retry({id})"));
        assert_eq!(one::<String>(&keys), "waiting,o");
    }

    #[pg_test]
    fn queue_settings_show_every_limit() {
        run("SELECT job.create_queue('v', concurrency => 4, key_concurrency => 2, rate_limit => 10, key_rate_limit => 3, key_rate_period => '1 minute', fair => true)");
        assert_eq!(
            one::<String>("SELECT concat_ws(',', concurrency, key_concurrency, rate_limit, rate_period, key_rate_limit, key_rate_period, fair) FROM job.queue_settings WHERE queue = 'v'"),
            "4,2,10,00:00:01,3,00:01:00,t"
        );
    }
}
