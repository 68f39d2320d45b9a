//! The background worker fires schedules: one job per tick, exactly once however many
//! sessions fire at the same time, across a crash (misfire 'skip' and 'catch_up'), with
//! pause / resume / unschedule, and in local time zones.
//!
//! Every test runs a private cluster (src/cluster.rs) with a 200 ms scheduler tick.

use pg_jobqueue_integration::cluster::*;
use pg_jobqueue_integration::sql::*;
use pg_jobqueue_integration::{error_text, Client, SqlState};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

/// Consecutive ticks are `period` seconds apart.
fn assert_consecutive(runs: &[Run], period: f64) {
    for pair in runs.windows(2) {
        assert!(
            (pair[1].tick - pair[0].tick - period).abs() < 1e-3,
            "ticks {} and {} are not {period} s apart (a tick was skipped or repeated)\nruns: {runs:?}",
            pair[0].tick,
            pair[1].tick
        );
    }
}

/// A schedule firing every second, left alone for about 5 s: every second's tick fires
/// once, within a second of its time, and enqueues exactly one job keyed by the tick.
#[test]
fn every_second_schedule_enqueues_one_job_per_second() {
    let (_cluster, mut client) = served_cluster("sched-every-second", &[]);
    exec(&mut client, "SELECT job.create_queue('q')");
    let created = server_now(&mut client);
    exec(
        &mut client,
        "SELECT job.schedule('tick', '* * * * * *', 'q')",
    );

    assert!(
        wait_for_runs(&mut client, "tick", 6, f64::MIN, Duration::from_secs(15)),
        "fewer than 6 runs in 15 s: {:?}",
        schedule_runs(&mut client, "tick")
    );
    let runs = assert_each_tick_fired_once(&mut client, "tick", "q");
    assert_consecutive(&runs, 1.0);
    assert!(
        runs[0].tick > created && runs[0].tick <= created.floor() + 2.0,
        "the first tick {} is not the first second after the schedule was created ({created})",
        runs[0].tick
    );
    for run in &runs {
        assert_eq!(
            run.tick,
            run.tick.floor(),
            "tick {} is not a whole second",
            run.tick
        );
        assert_eq!(run.due_at, run.tick, "no jitter was asked for: {run:?}");
        assert!(
            run.lateness() >= 0.0 && run.lateness() < 1.0,
            "tick fired {:.3} s after it was due: {run:?}",
            run.lateness()
        );
    }
    // job.schedules reports the newest run (paused first, so that none follows).
    exec(&mut client, "SELECT job.pause_schedule('tick')");
    let newest = schedule_runs(&mut client, "tick").pop().unwrap();
    let row = client
        .query_one(
            "SELECT extract(epoch FROM last_tick)::float8, last_job_id, last_job_state
               FROM job.schedules WHERE name = 'tick'",
            &[],
        )
        .unwrap();
    assert_eq!(
        (row.get::<_, f64>(0), row.get::<_, Option<i64>>(1)),
        (newest.tick, newest.job_id),
        "job.schedules does not show the newest run {newest:?}"
    );
    assert_eq!(row.get::<_, Option<String>>(2).as_deref(), Some("waiting"));
}

/// While the worker fires a one-second schedule, four sessions call
/// `job._fire_due_schedules()` as fast as they can for 4 s: still one run and one job per
/// tick, no key twice, no tick skipped, and no schedule error.
/// A served cluster `name` whose schedule 'tick' fires into queue 'q' every second, once it
/// has fired `runs` times (`failure`: what it means if it does not within 10 s).
fn ticking_cluster(name: &str, runs: usize, failure: &str) -> (Cluster, Client) {
    let (cluster, mut client) = served_cluster(name, &[]);
    exec(&mut client, "SELECT job.create_queue('q')");
    exec(&mut client, "SELECT job.schedule('tick', '1 second', 'q')");
    assert!(
        wait_for_runs(&mut client, "tick", runs, f64::MIN, Duration::from_secs(10)),
        "{failure}"
    );
    (cluster, client)
}

#[test]
fn concurrent_manual_fires_do_not_duplicate_ticks() {
    let (cluster, mut client) = ticking_cluster("sched-race", 1, "the schedule never fired");

    let stop = Arc::new(AtomicBool::new(false));
    let racers: Vec<_> = (0..4)
        .map(|_| {
            let mut racer = cluster.connect("postgres");
            let stop = stop.clone();
            thread::spawn(move || {
                let (mut calls, mut fired) = (0u64, 0i64);
                while !stop.load(Ordering::Relaxed) {
                    let n: i32 = racer
                        .query_one("SELECT job._fire_due_schedules()", &[])
                        .unwrap_or_else(|e| {
                            panic!("_fire_due_schedules failed: {}", error_text(&e))
                        })
                        .get(0);
                    calls += 1;
                    fired += i64::from(n);
                }
                (calls, fired)
            })
        })
        .collect();
    thread::sleep(Duration::from_secs(4));
    stop.store(true, Ordering::Relaxed);
    let results: Vec<(u64, i64)> = racers.into_iter().map(|r| r.join().unwrap()).collect();
    let fired_by_racers: i64 = results.iter().map(|r| r.1).sum();
    eprintln!("racers (calls, ticks fired): {results:?}");

    // Let the worker alone fire a couple more ticks.
    let after = server_now(&mut client);
    assert!(
        wait_until(Duration::from_secs(10), || {
            schedule_runs(&mut client, "tick")
                .iter()
                .filter(|r| r.tick > after)
                .count()
                >= 2
        }),
        "the worker stopped firing after the race"
    );

    let runs = assert_each_tick_fired_once(&mut client, "tick", "q");
    assert_consecutive(&runs, 1.0);
    assert!(
        fired_by_racers > 0,
        "the racing sessions never fired a tick: the race did not happen"
    );
    assert!(
        (fired_by_racers as usize) < runs.len(),
        "racers fired {fired_by_racers} ticks, but there are only {} runs",
        runs.len()
    );
    let last_error: Option<String> = one(
        &mut client,
        "SELECT last_error FROM job.schedules WHERE name = 'tick'",
        &[],
    );
    assert_eq!(last_error, None, "the schedule recorded an error");
    assert!(
        !cluster.log().contains("could not fire"),
        "a tick failed to fire:\n{}",
        cluster.log_tail(40)
    );
}

/// Two schedules with the same 5-second ticks, one `misfire => 'skip'`, one `'catch_up'`,
/// with `pg_jobqueue.misfire_grace = 500ms`; the server stops with `-m immediate` and stays
/// down for over two ticks.  No tick fires twice; the skip schedule fires nothing more than 500 ms
/// late; the catch-up schedule fires exactly one of the missed ticks (the latest) once the
/// server is back.
#[test]
fn immediate_shutdown_skips_or_catches_up_missed_ticks() {
    const GRACE: f64 = 0.5;
    // 5 s, not less: the restarted server's crash recovery, launcher and scheduler must be up
    // before the next tick (4.4 s after the restart) for its first fire to be a missed tick's;
    // on a loaded 2-core machine that took over 1.4 s.
    const PERIOD: f64 = 5.0;
    let (cluster, mut client) =
        served_cluster("sched-misfire", &[("pg_jobqueue.misfire_grace", "'500ms'")]);
    exec(
        &mut client,
        "SELECT job.create_queue('qs'); SELECT job.create_queue('qc');
         SELECT job.schedule('skipper', '5 seconds', 'qs', misfire => 'skip');
         SELECT job.schedule('catcher', '5 seconds', 'qc', misfire => 'catch_up');",
    );
    assert!(
        wait_until(Duration::from_secs(30), || {
            schedule_runs(&mut client, "skipper").len() >= 2
                && schedule_runs(&mut client, "catcher").len() >= 2
        }),
        "the schedules did not fire twice in 30 s"
    );
    let seen_before = (
        schedule_runs(&mut client, "skipper"),
        schedule_runs(&mut client, "catcher"),
    );
    drop(client);

    cluster.stop_immediate();
    let stopped_at = unix_now();
    // Down for over two ticks, and back a little after a tick, so that the first tick the
    // scheduler sees after the restart is well over the grace late.
    let mut restart_at = (stopped_at + 2.0 * PERIOD).ceil();
    while restart_at.rem_euclid(PERIOD) != 0.0 {
        restart_at += 1.0;
    }
    restart_at += 0.6;
    thread::sleep(Duration::from_secs_f64(restart_at - unix_now()));
    // The scheduler may fire before pg_ctl notices that the server is up: the outage ends
    // when the start begins.
    let up_at = unix_now();
    cluster.start();
    let mut client = cluster.connect("postgres");

    assert!(
        wait_until(Duration::from_secs(30), || {
            ["skipper", "catcher"].iter().all(|s| {
                schedule_runs(&mut client, s)
                    .iter()
                    .any(|r| r.tick >= up_at + PERIOD)
            })
        }),
        "the schedules did not fire normally after the restart\n{}",
        cluster.log_tail(30)
    );

    // Nothing fired twice, before, across or after the crash; what was fired survived.
    let skipper = assert_each_tick_fired_once(&mut client, "skipper", "qs");
    let catcher = assert_each_tick_fired_once(&mut client, "catcher", "qc");
    for (before, after) in [(&seen_before.0, &skipper), (&seen_before.1, &catcher)] {
        for run in before {
            assert!(after.contains(run), "run {run:?} was lost in the crash");
        }
    }
    assert_consecutive(
        &skipper
            .iter()
            .filter(|r| r.fired_at > up_at)
            .cloned()
            .collect::<Vec<_>>(),
        PERIOD,
    );

    // skip: nothing fired more than the grace late, so no tick of the outage fired late.
    for run in &skipper {
        assert!(
            run.lateness() <= GRACE + 1e-3,
            "skip schedule fired a tick {:.3} s late (grace {GRACE} s): {run:?}\nall: {skipper:?}",
            run.lateness()
        );
        assert!(
            !(run.fired_at > up_at && run.due_at < up_at - GRACE - 1e-3),
            "skip schedule fired a tick of the outage ({} s before the restart): {run:?}",
            up_at - run.due_at
        );
    }

    // catch_up: of the ticks missed, exactly one fired: the latest, after the restart.
    let last_before = catcher
        .iter()
        .filter(|r| r.fired_at < stopped_at)
        .map(|r| r.tick)
        .fold(f64::MIN, f64::max);
    let first_after = catcher
        .iter()
        .find(|r| r.fired_at > stopped_at)
        .expect("catch-up schedule fired nothing after the restart")
        .clone();
    let missed: Vec<&Run> = catcher
        .iter()
        .filter(|r| r.tick > last_before && r.tick <= first_after.fired_at)
        .collect();
    assert!(
        first_after.fired_at - last_before > 2.0 * PERIOD,
        "fewer than two ticks were missed (last before {last_before}, first after {first_after:?})"
    );
    assert_eq!(
        missed,
        vec![&first_after],
        "catch-up schedule: ticks between the last one before the crash ({last_before}) and its \
         first fire after the restart are not exactly that one\nall: {catcher:?}"
    );
    assert!(
        first_after.tick < up_at && first_after.fired_at > up_at,
        "the catch-up run is not for a tick inside the outage (server back at {up_at}): {first_after:?}"
    );
    assert!(
        first_after.fired_at - first_after.tick < PERIOD,
        "the catch-up run is not the latest missed tick: {first_after:?}"
    );
    if first_after.lateness() > GRACE {
        assert!(
            !skipper.iter().any(|r| r.tick == first_after.tick),
            "skip schedule fired tick {} although it was {:.3} s late",
            first_after.tick,
            first_after.lateness()
        );
    } else {
        eprintln!(
            "note: the scheduler was back within the grace ({:.3} s late); skip and catch-up \
             both fired that tick",
            first_after.lateness()
        );
    }
}

/// pause_schedule stops a schedule; resume_schedule restarts it at the next tick from now,
/// without firing the paused period; unschedule removes it and its runs, not its jobs.
#[test]
fn pause_resume_and_unschedule() {
    let (_cluster, mut client) =
        ticking_cluster("sched-pause", 2, "the schedule did not fire twice");

    exec(&mut client, "SELECT job.pause_schedule('tick')");
    let paused_at = server_now(&mut client);
    let row = client
        .query_one(
            "SELECT paused, next_run IS NULL, next_run_local IS NULL FROM job.schedules
              WHERE name = 'tick'",
            &[],
        )
        .unwrap();
    assert_eq!(
        (
            row.get::<_, bool>(0),
            row.get::<_, bool>(1),
            row.get::<_, bool>(2)
        ),
        (true, true, true),
        "job.schedules of a paused schedule: paused, no next run"
    );
    assert!(
        !wait_for_runs(
            &mut client,
            "tick",
            1,
            paused_at,
            Duration::from_millis(2500)
        ),
        "a paused schedule fired: {:?}",
        schedule_runs(&mut client, "tick")
    );

    let resume_called = server_now(&mut client);
    exec(&mut client, "SELECT job.resume_schedule('tick')");
    let next_run: f64 = one(
        &mut client,
        "SELECT extract(epoch FROM next_run)::float8 FROM job.schedules WHERE name = 'tick'",
        &[],
    );
    assert!(
        next_run > resume_called && next_run <= resume_called.floor() + 1.0,
        "after resume the next run ({next_run}) is not the next second after {resume_called}"
    );
    assert!(
        wait_for_runs(
            &mut client,
            "tick",
            2,
            resume_called,
            Duration::from_secs(10)
        ),
        "the resumed schedule did not fire"
    );
    let runs = assert_each_tick_fired_once(&mut client, "tick", "q");
    let during_pause: Vec<&Run> = runs
        .iter()
        .filter(|r| r.tick > paused_at && r.tick <= resume_called)
        .collect();
    assert!(
        during_pause.is_empty(),
        "ticks of the paused period fired after resume: {during_pause:?}"
    );
    let first_resumed = runs.iter().find(|r| r.tick > resume_called).unwrap();
    assert_eq!(
        first_resumed.tick, next_run,
        "the first tick after resume is not the one job.schedules announced"
    );

    let jobs_before: i64 = one(
        &mut client,
        "SELECT count(*) FROM job.jobs WHERE queue = 'q'",
        &[],
    );
    assert!(one::<bool>(
        &mut client,
        "SELECT job.unschedule('tick')",
        &[]
    ));
    assert_eq!(
        one::<i64>(
            &mut client,
            "SELECT count(*) FROM job.schedules WHERE name = 'tick'",
            &[]
        ),
        0
    );
    assert!(
        schedule_runs(&mut client, "tick").is_empty(),
        "unschedule kept the runs"
    );
    let jobs_after: i64 = one(
        &mut client,
        "SELECT count(*) FROM job.jobs WHERE queue = 'q'",
        &[],
    );
    // A tick may have fired between the count and the unschedule.
    assert!(
        jobs_after == jobs_before || jobs_after == jobs_before + 1,
        "unschedule changed the queue's jobs: {jobs_before} -> {jobs_after}"
    );
    assert!(
        !wait_until(Duration::from_millis(2500), || {
            one::<i64>(
                &mut client,
                "SELECT count(*) FROM job.jobs WHERE queue = 'q'",
                &[],
            ) > jobs_after
        }),
        "an unscheduled schedule still enqueues jobs"
    );
    assert_refused(
        client.batch_execute("SELECT job.unschedule('tick')"),
        &SqlState::UNDEFINED_OBJECT,
        "unschedule of a schedule already removed",
    );
}

/// A schedule in America/New_York: job.schedules shows its next run in UTC and local time
/// consistently (02:30 local); cron_next puts a 02:30 in the spring-forward gap at the end
/// of the gap, once; and the worker fires a fixed local time at the right instant.
#[test]
fn time_zones_end_to_end() {
    let (_cluster, mut client) = served_cluster("sched-tz", &[]);
    exec(&mut client, "SELECT job.create_queue('q')");
    exec(
        &mut client,
        "SELECT job.schedule('nightly', '30 2 * * *', 'q', timezone => 'America/New_York')",
    );
    let nightly = client
        .query_one(
            "SELECT timezone,
                    next_run_local = (next_run AT TIME ZONE 'America/New_York'),
                    to_char(next_run_local, 'HH24:MI:SS'),
                    extract(month FROM next_run_local)::int,
                    next_run > now() AND next_run <= now() + interval '25 hours',
                    next_run = job.cron_next(cron, timezone, now())
               FROM job.schedules WHERE name = 'nightly'",
            &[],
        )
        .unwrap();
    assert_eq!(nightly.get::<_, String>(0), "America/New_York");
    assert!(
        nightly.get::<_, bool>(1),
        "next_run_local is not next_run in New York time"
    );
    let local_time: String = nightly.get(2);
    let month: i32 = nightly.get(3);
    assert!(
        local_time == "02:30:00" || (month == 3 && local_time == "03:00:00"),
        "next_run_local is {local_time}, not 02:30 (or 03:00 on the spring-forward day)"
    );
    assert!(
        nightly.get::<_, bool>(4),
        "next_run is not within the next 25 hours"
    );
    assert!(
        nightly.get::<_, bool>(5),
        "next_run is not cron_next from now"
    );

    // Around the 2026 transitions (spring forward 2026-03-08 02:00 EST -> 03:00 EDT, fall
    // back 2026-11-01 02:00 EDT -> 01:00 EST).
    for (after, expected) in [
        ("2026-03-07 06:00+00", "2026-03-07 07:30+00"), // 02:30 EST
        ("2026-03-08 06:00+00", "2026-03-08 07:00+00"), // in the gap: at its end, 03:00 EDT
        ("2026-03-08 07:00+00", "2026-03-09 06:30+00"), // not twice; 02:30 EDT next day
        ("2026-10-31 12:00+00", "2026-11-01 07:30+00"), // 02:30 EST, after the repeated hour
    ] {
        let same: bool = one(
            &mut client,
            "SELECT job.cron_next('30 2 * * *', 'America/New_York', $1::text::timestamptz)
                    = $2::text::timestamptz",
            &[&after, &expected],
        );
        let got: String = one(
            &mut client,
            "SELECT job.cron_next('30 2 * * *', 'America/New_York', $1::text::timestamptz)::text",
            &[&after],
        );
        assert!(
            same,
            "cron_next('30 2 * * *', New York, {after}) = {got}, expected {expected}"
        );
    }

    // The worker fires a fixed New York wall time at its instant: a few seconds from now.
    let (cron, expected_tick): (String, f64) = one_row(
        &mut client,
        "SELECT to_char(t AT TIME ZONE 'America/New_York', 'FMSS FMMI FMHH24 * * *'),
                        extract(epoch FROM t)::float8
                   FROM (SELECT date_trunc('second', clock_timestamp()) + interval '3 seconds' AS t) s",
        &[],
    );
    exec(
        &mut client,
        &format!(
            "SELECT job.schedule('soon', '{cron}', 'q', timezone => 'America/New_York', \
             payload => '{{\"soon\": true}}')"
        ),
    );
    let run = wait_for(Duration::from_secs(10), || {
        schedule_runs(&mut client, "soon").into_iter().next()
    })
    .unwrap_or_else(|| panic!("schedule '{cron}' in New York did not fire"));
    assert_eq!(
        run.tick, expected_tick,
        "'{cron}' New York time fired the wrong instant"
    );
    assert!(run.lateness() < 1.0, "fired {:.3} s late", run.lateness());
    let (next_local_matches, one_day_later): (bool, bool) = one_row(
        &mut client,
        "SELECT next_run_local = next_run AT TIME ZONE 'America/New_York',
                        next_run - last_tick BETWEEN interval '23 hours' AND interval '25 hours'
                   FROM job.schedules WHERE name = 'soon'",
        &[],
    );
    assert!(
        next_local_matches && one_day_later,
        "after firing, the next run is not a day later"
    );
    let payload: String = one(
        &mut client,
        "SELECT payload::text FROM job.jobs WHERE id = (SELECT last_job_id FROM job.schedules WHERE name = 'soon')",
        &[],
    );
    assert_eq!(payload, r#"{"soon": true}"#);
}

/// With `pg_jobqueue.schedule_history = 3` the worker keeps the 3 newest runs of a schedule
/// (one more may appear between two maintenance rounds); the jobs stay.
#[test]
fn schedule_history_is_pruned_to_the_setting() {
    let (_cluster, mut client) =
        served_cluster("sched-history", &[("pg_jobqueue.schedule_history", "3")]);
    exec(
        &mut client,
        "SELECT job.create_queue('q'); SELECT job.schedule('tick', '1 second', 'q');",
    );
    let jobs = |client: &mut postgres::Client| -> i64 {
        one(
            client,
            "SELECT count(*) FROM job.jobs WHERE queue = 'q'",
            &[],
        )
    };
    let mut most = 0;
    assert!(
        wait_until(Duration::from_secs(15), || {
            most = most.max(schedule_runs(&mut client, "tick").len());
            jobs(&mut client) >= 7
        }),
        "the schedule did not fire 7 times"
    );
    // Maintenance runs every 500 ms, ticks come every second: at most one unpruned run.
    let pruned = wait_until(Duration::from_secs(3), || {
        schedule_runs(&mut client, "tick").len() <= 3
    });
    assert!(
        pruned,
        "schedule_runs keeps {} runs with schedule_history = 3",
        schedule_runs(&mut client, "tick").len()
    );
    assert!(
        most <= 4,
        "schedule_runs grew to {most} rows with schedule_history = 3"
    );
    exec(&mut client, "SELECT job.pause_schedule('tick')");
    let runs = schedule_runs(&mut client, "tick");
    let newest: Vec<Option<i64>> = client
        .query(
            "SELECT id FROM job.jobs WHERE queue = 'q' ORDER BY id DESC LIMIT 3",
            &[],
        )
        .unwrap()
        .iter()
        .rev()
        .map(|r| Some(r.get(0)))
        .collect();
    assert!(runs.len() >= 2 && runs.len() <= 4, "{runs:?}");
    assert_eq!(
        runs.iter().map(|r| r.job_id).collect::<Vec<_>>(),
        newest[newest.len() - runs.len()..],
        "the kept runs are not the newest ones"
    );
    assert!(jobs(&mut client) >= 7, "pruning the history removed jobs");
}
