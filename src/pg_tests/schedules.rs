//! `#[pg_test]`s of schedules: creating, firing, missed ticks, jitter, history.

#[pgrx::pg_schema]
mod tests {
    use crate::pg_tests::support::*;
    use pgrx::prelude::*;

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
            ("SELECT job.unschedule('nope')", "schedule 'nope' does not exist"),
            ("SELECT job.unschedule('')", "schedule name must not be empty"),
        ] {
            assert_rejected(call, message);
        }
        // What is not there: 42704, whichever function names it (it was false from unschedule).
        for call in [
            "SELECT job.unschedule('nope')",
            "SELECT job.pause_schedule('nope')",
            "SELECT job.resume_schedule('nope')",
        ] {
            assert_eq!(error_state_of(call).0, "42704", "{call}");
        }
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
    fn a_due_schedule_fires_one_job_per_tick_without_an_idempotency_key() {
        queue("q");
        // Every minute, fired at this minute's tick with at least 5 s of it left, so the next
        // tick cannot come due while the test runs (a 1-second schedule's did, now and then).
        run("SELECT job.schedule('every', '1 minute', 'q', '{\"n\": 1}', priority => 3, job_type => 'ping')");
        make_due("every", "2000-01-01 00:00:00+00"); // long ago: skip only fires a recent tick
        run(
            "SELECT pg_sleep(60.1 - extract(second FROM clock_timestamp()))
              WHERE extract(second FROM clock_timestamp()) > 55",
        );
        run(
            "UPDATE job.schedule_defs SET next_tick = date_trunc('minute', clock_timestamp()),
                    next_run_at = date_trunc('minute', clock_timestamp())",
        );
        assert_eq!(one::<i32>("SELECT job._fire_due_schedules()"), 1);
        assert_eq!(
            one::<String>(
                "SELECT concat_ws(',', j.payload, j.priority, j.job_type,
                                  j.idempotency_key IS NULL,
                                  s.last_job_id = j.id, s.last_job_state, s.next_run > r.tick)
                             FROM job.schedule_runs r JOIN job.jobs j ON j.id = r.job_id
                             JOIN job.schedules s ON s.name = r.schedule"
            ),
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
        queue("dropped_scheduled");
        run("CREATE FUNCTION pg_temp.h(p jsonb) RETURNS jsonb LANGUAGE sql AS 'SELECT p'");
        run("SELECT job.schedule('s', '@daily', 'dropped_scheduled')");
        run("SELECT job.set_handler('dropped_scheduled', 'pg_temp.h(jsonb)')");
        run("SELECT job.drop_queue('dropped_scheduled')");
        assert_eq!(
            one::<i64>("SELECT (SELECT count(*) FROM job.schedule_defs) + (SELECT count(*) FROM job.handlers)"),
            0
        );
    }

    #[pg_test]
    fn schedule_history_keeps_the_newest_runs() {
        queue("q");
        run("SELECT job.schedule('s', '1 second', 'q')");
        run("INSERT INTO job.schedule_ticks (schedule, tick, due_at, fired_at)
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
}
