//! `#[pg_test]`s of metrics: rollups, histograms, reads that never touch history, Prometheus.

#[pgrx::pg_schema]
mod tests {
    use crate::pg_tests::support::*;
    use pgrx::prelude::*;

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
        // By rank, not id: tests running at the same time draw ids from the same sequence.
        run("UPDATE job.live_jobs l SET claimed_at = now() - make_interval(secs => r.rank)
               FROM (SELECT id, row_number() OVER (ORDER BY id) AS rank FROM job.live_jobs) r WHERE l.id = r.id");
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
    fn a_queue_deeper_than_the_exact_count_is_estimated() {
        run("SELECT job.create_queue('deep')");
        run("SELECT job.enqueue_many('deep', array_fill('{}'::jsonb, ARRAY[10050]))");
        run("ANALYZE job.live_jobs");
        // Above 10,000 the count is an estimate, read off EXPLAIN (which a STABLE function may
        // not run: the worker's count failed on every round for every deep queue).
        run("SELECT job._count_queue_depth()");
        assert_eq!(
            one::<String>("SELECT concat_ws(',', waiting > 10000, depth_estimated) FROM job.queue_metrics WHERE queue = 'deep'"),
            "t,t"
        );
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
        run("SELECT job.dequeue(E'we\"ird\\\\q', 'w')");
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
}
