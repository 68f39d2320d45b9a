//! Per-queue grants, and what one duty's role can do to queues and jobs that are not its
//! own: other teams' queues, other producers' jobs, holds, schedule ticks.

use super::*;

/// In 0.4.0 (issue 19, item 9) duties were per database, so any worker could claim, finish and hold another
/// team's queue and any producer feed it.  Per-queue grants keep each team's roles to its
/// queues (42501 elsewhere, nothing changed), in every function of the two duties; a queue
/// without grants stays open to every holder of the duty, and revoking its last grant opens
/// it again.
#[test]
fn per_queue_grants_keep_each_team_to_its_queues() {
    let (mut roles, db, mut su) = duty_db("pq", "sec_per_queue");
    let mut admin_su = connect_admin();
    let team_a = roles.add(&mut admin_su, "team_a", "LOGIN");
    let team_b = roles.add(&mut admin_su, "team_b", "LOGIN");
    exec(
        &mut su,
        &format!(
            "GRANT {p}, {w} TO {team_a}, {team_b};",
            p = roles.producer,
            w = roles.worker
        ),
    );
    let mut admin = connect_as(&db, &roles.admin);
    exec(
        &mut admin,
        &format!(
            "SELECT job.create_queue('a'); SELECT job.create_queue('b'); SELECT job.create_queue('open');
             SELECT job.grant_queue('a', '{team_a}', 'produce'); SELECT job.grant_queue('a', '{team_a}', 'work');
             SELECT job.grant_queue('b', '{team_b}', 'produce'); SELECT job.grant_queue('b', '{team_b}', 'work');"
        ),
    );
    let mut worker = connect_as(&db, &roles.worker);
    denied(
        &mut worker,
        &format!("SELECT job.grant_queue('open', '{team_b}', 'work')"),
    );

    let mut a = connect_as(&db, &team_a);
    let mut b = connect_as(&db, &team_b);
    let job_a: i64 = one(&mut a, "SELECT job.enqueue('a', '{\"n\": 1}')", &[]);
    let claimed: i64 = one(&mut a, "SELECT id FROM job.dequeue('a', 'wa')", &[]);
    assert_eq!(claimed, job_a);

    for sql in [
        "SELECT job.enqueue('a', '{}')".to_owned(),
        "SELECT job.enqueue_many('a', ARRAY['{}'::jsonb])".to_owned(),
        "SELECT * FROM job.dequeue('a', 'wb')".to_owned(),
        "SELECT job.next_due('a')".to_owned(),
        "SELECT job.queue_id('a')".to_owned(),
        "SELECT job.rate_limit_pause('a', until => now() + interval '1 minute')".to_owned(),
        format!("SELECT job.complete({job_a})"),
        format!("SELECT job.complete_many(ARRAY[{job_a}]::bigint[])"),
        format!("SELECT job.fail({job_a}, 'stolen')"),
        format!("SELECT job.heartbeat({job_a})"),
        format!("SELECT * FROM job.dequeue('b', 'wb', complete => ARRAY[{job_a}]::bigint[])"),
    ] {
        assert_eq!(
            refused_unchanged(&mut su, &roles, &mut b, &sql),
            INSUFFICIENT_PRIVILEGE,
            "team b: {sql}"
        );
    }
    // The plain holders of the duty are not granted 'a' either.
    let mut producer = connect_as(&db, &roles.producer);
    denied(&mut producer, "SELECT job.enqueue('a', '{}')");

    // A queue without grants is open to every holder of the duty (as in 0.4.0).
    let open: i64 = one(&mut b, "SELECT job.enqueue('open', '{}')", &[]);
    let claimed: i64 = one(&mut a, "SELECT id FROM job.dequeue('open', 'wa')", &[]);
    assert_eq!(claimed, open);
    assert!(one::<bool>(
        &mut a,
        &format!("SELECT job.complete({open})"),
        &[]
    ));
    assert!(one::<bool>(
        &mut a,
        &format!("SELECT job.complete({job_a})"),
        &[]
    ));

    let grants: i64 = one(&mut su, "SELECT count(*) FROM job.queue_grants", &[]);
    assert_eq!(grants, 4);
    exec(
        &mut admin,
        &format!("SELECT job.revoke_queue('a', '{team_a}', 'produce')"),
    );
    exec(&mut b, "SELECT job.enqueue('a', '{}')"); // open again to producers
    denied(&mut b, "SELECT * FROM job.dequeue('a', 'wb')"); // still granted for work
    let audited: i64 = one(
        &mut su,
        "SELECT count(*) FROM job.audit_log WHERE action IN ('grant_queue', 'revoke_queue')",
        &[],
    );
    assert_eq!(audited, 5);
}

/// In 0.4.0 (issue 19, item 9) the work duty held a superuser's handler queue and another team's endpoint queue
/// until the year 200000.  Now a hold reaches at most pg_jobqueue.max_hold ahead (22023), and
/// the work duty holds no queue the background worker serves (42501); the admin duty still
/// holds any queue.
#[test]
fn the_work_duty_cannot_hold_a_queue_for_ever_nor_one_the_background_worker_serves() {
    let (roles, db, mut su) = duty_db("hold", "sec_hold");
    exec(
        &mut su,
        "SELECT job.create_queue('mine');
         SELECT job.create_queue('handled');
         CREATE FUNCTION public.h(payload jsonb) RETURNS jsonb LANGUAGE sql AS $$ SELECT payload $$;
         SELECT job.set_handler('handled', 'public.h(jsonb)');
         SELECT job.create_endpoint('hook', 'http://127.0.0.1:9/hook');",
    );
    let mut worker = connect_as(&db, &roles.worker);
    let mut admin = connect_as(&db, &roles.admin);

    for sql in [
        "SELECT job.rate_limit_pause('mine', until => '200000-01-01')",
        "SELECT job.rate_limit_pause('mine', key => 'k', until => now() + interval '2 days')",
    ] {
        assert_eq!(
            refused_unchanged(&mut su, &roles, &mut worker, sql),
            "22023"
        );
    }
    for queue in ["handled", "hook"] {
        let sql =
            format!("SELECT job.rate_limit_pause('{queue}', until => now() + interval '1 minute')");
        assert_eq!(
            refused_unchanged(&mut su, &roles, &mut worker, &sql),
            INSUFFICIENT_PRIVILEGE,
            "the work duty held {queue}"
        );
        exec(&mut admin, &sql);
    }
    exec(
        &mut worker,
        "SELECT job.rate_limit_pause('mine', key => 'k', until => now() + interval '1 hour')",
    );
    let held: i64 = one(&mut su, "SELECT count(*) FROM job.rate_limit_holds", &[]);
    assert_eq!(held, 3);
}

/// In 0.4.0 (issue 19, item 10) a singleton enqueue replaced another producer's payload and moved its start to
/// 9999, a debounce of 100 years did the same, and an order-keyed job due in 9999 blocked
/// its key for everyone.  Now starts, delays and debounces are bounded (22023, nothing
/// changed), and an enqueue of another role's waiting singleton or debounced job returns its
/// id and leaves it as it was; the job's own producer still replaces it.
#[test]
fn a_producer_cannot_rewrite_another_producers_job_nor_block_a_key_for_years() {
    let (mut roles, db, mut su) = duty_db("keys", "sec_keys");
    let mut admin_su = connect_admin();
    let other = roles.add(&mut admin_su, "other_producer", "LOGIN");
    exec(
        &mut su,
        &format!(
            "GRANT {p} TO {other}; SELECT job.create_queue('q');",
            p = roles.producer
        ),
    );
    let mut producer = connect_as(&db, &roles.producer);
    let mut intruder = connect_as(&db, &other);

    let single: i64 = one(
        &mut producer,
        "SELECT job.enqueue('q', '{\"v\": 1}', singleton_key => 's')",
        &[],
    );
    let debounced: i64 = one(
        &mut producer,
        "SELECT job.enqueue('q', '{\"v\": 1}', debounce_key => 'd', debounce => '1 hour')",
        &[],
    );
    let snapshot = |su: &mut Client| -> Vec<String> {
        su.query(
            "SELECT payload::text || ' ' || run_at::text || ' ' || state FROM job.jobs ORDER BY id",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
    };
    let before = snapshot(&mut su);

    for sql in [
        "SELECT job.enqueue('q', '{\"evil\": 1}', singleton_key => 's', run_at => '9999-01-01')",
        "SELECT job.enqueue('q', '{\"evil\": 1}', debounce_key => 'd', debounce => '100 years')",
        "SELECT job.enqueue('q', '{\"evil\": 1}', debounce_key => 'd', debounce => '1 second',
                            debounce_max_wait => '100 years')",
        "SELECT job.enqueue('q', '{\"evil\": 1}', order_key => 'o', run_at => '9999-01-01')",
        "SELECT job.enqueue('q', '{\"evil\": 1}', order_key => 'o', delay => '100 years')",
    ] {
        assert_eq!(
            refused_unchanged(&mut su, &roles, &mut intruder, sql),
            "22023",
            "{sql}"
        );
    }
    // Within the bounds: merged into the other producer's job, which stays as it was.
    let merged: i64 = one(
        &mut intruder,
        "SELECT job.enqueue('q', '{\"evil\": 1}', singleton_key => 's', delay => '300 days')",
        &[],
    );
    assert_eq!(merged, single);
    let merged: i64 = one(
        &mut intruder,
        "SELECT job.enqueue('q', '{\"evil\": 1}', debounce_key => 'd', debounce => '23 hours')",
        &[],
    );
    assert_eq!(merged, debounced);
    assert_eq!(
        snapshot(&mut su),
        before,
        "another producer changed the jobs"
    );

    // Its own producer still replaces it.
    let again: i64 = one(
        &mut producer,
        "SELECT job.enqueue('q', '{\"v\": 2}', singleton_key => 's')",
        &[],
    );
    assert_eq!(again, single);
    let payload: String = one(
        &mut su,
        "SELECT payload::text FROM job.jobs WHERE id = $1",
        &[&single],
    );
    assert_eq!(payload, "{\"v\": 2}");
}

/// In 0.2.0 a tick's job carried the idempotency key `schedule:<name>:<tick epoch>`, so a
/// producer that enqueued that key into the schedule's queue first suppressed the tick (the
/// schedule's enqueue returned the producer's job).  Now the tick fires a job of its own with
/// the schedule's payload, and the producer's job is left as it was.
#[test]
fn a_producer_cannot_suppress_a_schedule_tick_by_taking_its_idempotency_key() {
    let (roles, db, mut su) = duty_db("tick", "sec_tick");
    exec(
        &mut su,
        "SELECT job.create_queue('reports');
         SELECT job.schedule('nightly', '* * * * *', 'reports', '{\"from\": \"schedule\"}',
                             misfire => 'catch_up');
         SELECT job.pause_schedule('nightly');",
    );
    // The tick that will fire is this minute's (or the next one's, should the minute turn
    // meanwhile): the producer takes both keys.
    let tick: f64 = one(
        &mut su,
        "SELECT extract(epoch FROM date_trunc('minute', now()))::float8",
        &[],
    );
    let tick = tick as i64;
    let mut producer = connect_as(&db, &roles.producer);
    let mut squatters = Vec::new();
    for t in [tick, tick + 60] {
        let id: i64 = one(
            &mut producer,
            "SELECT job.enqueue('reports', '{\"from\": \"producer\"}', idempotency_key => $1)",
            &[&format!("schedule:nightly:{t}")],
        );
        squatters.push(id);
    }

    exec(
        &mut su,
        &format!(
            "UPDATE job.schedule_defs SET paused = false, next_tick = to_timestamp({tick}),
                    next_run_at = to_timestamp({tick}) WHERE name = 'nightly';
             SELECT job._fire_due_schedules();"
        ),
    );
    // The worker's scheduler may have fired it first; either way one run has a job.
    let (fired_tick, job_id) = wait_for(Duration::from_secs(10), || {
        su.query_opt(
            "SELECT extract(epoch FROM tick)::bigint, job_id FROM job.schedule_runs
              WHERE schedule = 'nightly' AND job_id IS NOT NULL ORDER BY tick LIMIT 1",
            &[],
        )
        .unwrap()
        .map(|r| (r.get::<_, i64>(0), r.get::<_, i64>(1)))
    })
    .expect("the schedule did not fire");
    assert!(
        fired_tick == tick || fired_tick == tick + 60,
        "fired tick {fired_tick}, expected {tick} or the next minute"
    );
    assert!(
        !squatters.contains(&job_id),
        "tick {fired_tick} was answered with the producer's job {job_id}: the producer suppressed it"
    );
    let payload: String = one(
        &mut su,
        "SELECT payload::text FROM job.jobs WHERE id = $1",
        &[&job_id],
    );
    assert_eq!(payload, r#"{"from": "schedule"}"#);
    for id in squatters {
        let payload: String = one(
            &mut su,
            "SELECT payload::text FROM job.jobs WHERE id = $1",
            &[&id],
        );
        assert_eq!(payload, r#"{"from": "producer"}"#);
    }
    exec(&mut su, "SELECT job.unschedule('nightly')");
}
