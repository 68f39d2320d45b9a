//! `#[pg_test]`s of operating: cancel, retry, retention, stats and the SQL helpers.

#[pgrx::pg_schema]
mod tests {
    use crate::pg_tests::support::*;
    use pgrx::prelude::*;

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
        // A completed job is refused, not passed over with a false that reads as done.
        assert_rejected_with(
            &format!("SELECT job.retry({done})"),
            "55000",
            &format!("job {done} completed: only a dead or cancelled job can be retried"),
        );
        assert!(
            !one::<bool>(&format!("SELECT job.retry({live})")),
            "live jobs are left alone"
        );
        assert_eq!(claim("q"), dead);
        assert_rejected_with("SELECT job.retry(8888)", "P0002", "job 8888 does not exist");
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
}
