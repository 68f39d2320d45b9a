//! `#[pg_test]`s of the audit log.

#[pgrx::pg_schema]
mod tests {
    use crate::pg_tests::support::*;
    use pgrx::prelude::*;

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
        queue("audited");
        run("SELECT job.create_queue('audited', max_retries => 0)"); // a change
        run("SELECT job.create_queue('audited', max_retries => 0)"); // no change: nothing to audit
        let dead = enqueue("audited");
        claim("audited");
        run(&format!("SELECT job.fail({dead}, 'boom')"));
        let waiting = enqueue("audited");
        run(&format!("SELECT job.retry({dead})"));
        run(&format!("SELECT job.cancel({waiting})"));
        run("SELECT job.pause_queue('audited')");
        run("SELECT job.resume_queue('audited')");
        run("SELECT job.retry_dead('audited')");
        run("SELECT job.schedule('s', '@daily', 'audited')");
        run("SELECT job.pause_schedule('s')");
        run("SELECT job.resume_schedule('s')");
        run("SELECT job.unschedule('s')");
        run(&format!("UPDATE job.finished_jobs SET finished_at = now() - interval '2 days' WHERE id = {waiting}"));
        run("SELECT job.purge('audited', 'cancelled', '1 day')");
        run("CREATE FUNCTION public.h(p jsonb) RETURNS void LANGUAGE sql AS ''");
        run("SELECT job.set_handler('audited', 'h(jsonb)')");
        run("SELECT job.remove_handler('audited')");
        run("SELECT job.drop_queue('audited', force => true)");
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
            trail[1].contains("\"before\": {\"fair\": false, \"lease\": \"00:05:00\""),
            "{}",
            trail[1]
        );
        assert!(trail[1].contains("\"max_retries\": 5") && trail[1].contains("\"max_retries\": 0"));
        assert_eq!(trail[2], format!("retry {{\"id\": {dead}}} 1 postgres"));
        assert_eq!(trail[3], format!("cancel {{\"id\": {waiting}}} 1 postgres"));
        assert_eq!(trail[6], "retry_dead {\"queue\": \"audited\"} 0 postgres");
        assert_eq!(trail[11], "purge {\"queue\": \"audited\", \"state\": \"cancelled\", \"older_than\": \"1 day\"} 1 postgres");
        assert_eq!(
            trail[14],
            "drop_queue {\"name\": \"audited\", \"force\": true} 1 postgres"
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
}
