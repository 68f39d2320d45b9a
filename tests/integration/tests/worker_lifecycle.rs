//! The worker's life around the cluster's: maintenance without clients, new and dropped
//! databases, DROP / CREATE EXTENSION, crashes of its processes, SIGHUP, and standbys.
//!
//! Every test runs a private cluster (src/cluster.rs): 200 ms scheduler tick, maintenance
//! every 500 ms.

use pg_jobqueue_integration::cluster::*;
use pg_jobqueue_integration::sql::*;
use pg_jobqueue_integration::{complete_many, dequeue, enqueue_many, error_text, Client, SqlState};
use std::time::{Duration, Instant};

/// A handler that returns its payload, for queues whose jobs only need to run.
const ECHO_HANDLER: &str = "CREATE FUNCTION echo(payload jsonb) RETURNS jsonb
                            LANGUAGE sql AS $$ SELECT payload $$;";

/// A job claimed by a client that then goes silent is rescued by the worker once its 1 s
/// lease expires, with no client calling dequeue: waiting again, the attempt recorded as
/// stalled; abandoned once more, it is dead (max_retries 1).
/// A served cluster `name` whose queue 'h' runs the echo handler (concurrency 2), with
/// schedule 'tick' firing into queue 'q' every second; waits for the two executors (their
/// pids).
fn served_handler_and_tick(name: &str) -> (Cluster, Client, Vec<i32>) {
    let (cluster, mut client) = served_cluster(name, &[]);
    exec(
        &mut client,
        &format!(
            "{ECHO_HANDLER}
             SELECT job.create_queue('h');
             SELECT job.set_handler('h', 'echo(jsonb)', concurrency => 2);
             SELECT job.create_queue('q');
             SELECT job.schedule('tick', '1 second', 'q');"
        ),
    );
    let executors = wait_for_executors(&mut client, 2, Duration::from_secs(10));
    (cluster, client, executors)
}

/// DROP DATABASE `name` succeeds (else panics, saying it was `what` and who was still
/// connected, with the server log) within 5 s.
fn drop_database_within_5_s(cluster: &Cluster, admin: &mut Client, name: &str, what: &str) {
    let dropping = Instant::now();
    if let Err(e) = admin.batch_execute(&format!("DROP DATABASE {name}")) {
        let sessions = sessions_of(admin, name);
        panic!(
            "{what} failed: {}\nsessions of {name} now: {sessions:#?}\n{}",
            error_text(&e),
            cluster.log_tail(40)
        );
    }
    let took = dropping.elapsed();
    assert!(took < Duration::from_secs(5), "DROP DATABASE took {took:?}");
}

/// Schedule 'tick' fires at least twice after `since` (`failure`: what it means if not), and
/// fired each of its ticks once.
fn assert_ticks_after(client: &mut Client, since: f64, failure: impl FnOnce() -> String) {
    assert!(
        wait_for_runs(client, "tick", 2, since, Duration::from_secs(10)),
        "{}",
        failure()
    );
    assert_each_tick_fired_once(client, "tick", "q");
}

#[test]
fn stalled_job_is_rescued_without_any_dequeue() {
    let (cluster, mut client) = served_cluster("life-stalled", &[]);
    exec(
        &mut client,
        "SELECT job.create_queue('leased', max_retries => 1, lease => '1 second')",
    );
    let id = enqueue_json(&mut client, "leased", r#"{"n": 1}"#);
    let claimed = dequeue(&mut client, "leased", "vanishing-worker", 1, None);
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].id, id);

    let rescued = wait_until(Duration::from_secs(10), || {
        job(&mut client, id).state == "waiting"
    });
    assert!(
        rescued,
        "the stalled job was not rescued within 10 s: {:?}\n{}",
        job(&mut client, id),
        cluster.log_tail(20)
    );
    let errors = job_errors(&mut client, id);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].stalled && !errors[0].permanent, "{errors:?}");
    assert_eq!(errors[0].attempt, 1, "{errors:?}");
    assert!(errors[0].error.contains("lease expired"), "{errors:?}");

    // Claimed and abandoned again: out of retries, so the worker dead-letters it.
    let again = dequeue(&mut client, "leased", "vanishing-worker", 1, None);
    assert_eq!(again.first().map(|c| (c.id, c.attempt)), Some((id, 2)));
    assert!(
        wait_until(Duration::from_secs(10), || job(&mut client, id).state
            == "dead"),
        "the twice-stalled job did not go dead: {:?}",
        job(&mut client, id)
    );
    let errors = job_errors(&mut client, id);
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors.iter().all(|e| e.stalled), "{errors:?}");
}

/// Finished jobs of a queue with `retention => '1 second'` (and its expired idempotency
/// keys) disappear without anyone calling apply_retention; another queue's stay.
#[test]
fn worker_applies_retention() {
    let (cluster, mut client) = served_cluster("life-retention", &[]);
    exec(
        &mut client,
        "SELECT job.create_queue('brief', retention => '1 second', idempotency_window => '1 second');
         SELECT job.create_queue('kept');",
    );
    for queue in ["brief", "kept"] {
        exec(
            &mut client,
            &format!(
                "SELECT job.enqueue('{queue}', jsonb_build_object('n', g), idempotency_key => 'key-' || g)
                   FROM generate_series(1, 5) g"
            ),
        );
        let ids: Vec<i64> = dequeue(&mut client, queue, "w", 10, None)
            .iter()
            .map(|c| c.id)
            .collect();
        assert_eq!(complete_many(&mut client, &ids), 5);
    }
    let finished = |client: &mut postgres::Client, queue: &str| -> i64 {
        one(
            client,
            "SELECT count(*) FROM job.finished_jobs WHERE queue = $1",
            &[&queue],
        )
    };
    let keys = |client: &mut postgres::Client, queue: &str| -> i64 {
        one(
            client,
            "SELECT count(*) FROM job.idempotency_keys WHERE queue = $1",
            &[&queue],
        )
    };
    assert!(
        wait_until(Duration::from_secs(10), || {
            finished(&mut client, "brief") == 0 && keys(&mut client, "brief") == 0
        }),
        "retention was not applied within 10 s: {} finished jobs and {} keys left\n{}",
        finished(&mut client, "brief"),
        keys(&mut client, "brief"),
        cluster.log_tail(20)
    );
    assert_eq!(
        finished(&mut client, "kept"),
        5,
        "a 7-day retention removed jobs"
    );
    assert_eq!(
        keys(&mut client, "kept"),
        5,
        "a 24-hour idempotency window lost keys"
    );
}

/// CREATE EXTENSION in a new database brings its scheduler within seconds, and a schedule
/// there fires.  DROP DATABASE then succeeds at once although the worker serves it, even
/// with a handler in the middle of a 60 s pg_sleep; the launcher goes on serving others.
#[test]
fn new_database_is_served_and_can_be_dropped_while_served() {
    // Disconnections logged: a failed DROP DATABASE then shows who left when.
    let cluster = Cluster::start_new("life-databases", &[("log_disconnections", "on")]);
    let mut admin = cluster.connect("postgres");

    cluster.create_database("second");
    let started = Instant::now();
    cluster.create_extension("second");
    let mut second = cluster.connect("second");
    exec(
        &mut second,
        "SELECT job.create_queue('q'); SELECT job.schedule('tick', '1 second', 'q');",
    );
    assert!(
        wait_for_runs(&mut second, "tick", 1, f64::MIN, Duration::from_secs(5)),
        "no run within 5 s of CREATE EXTENSION in a new database\n{}",
        cluster.log_tail(20)
    );
    eprintln!("first run {:?} after CREATE EXTENSION", started.elapsed());
    let scheduler = wait_for_scheduler(&mut second, Duration::from_secs(1));
    assert!(
        jobqueue_backends_of(&mut admin, "second")
            .contains(&(scheduler, "pg_jobqueue scheduler".to_owned())),
        "pg_stat_activity does not show the scheduler {scheduler}: {:?}",
        jobqueue_backends(&mut admin)
    );
    drop(second);
    drop_database_within_5_s(
        &cluster,
        &mut admin,
        "second",
        "DROP DATABASE of a served database failed",
    );

    // A handler busy in a long sleep does not hold DROP DATABASE up either.
    cluster.create_database("third");
    cluster.create_extension("third");
    let mut third = cluster.connect("third");
    exec(
        &mut third,
        "CREATE FUNCTION nap(payload jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
         BEGIN PERFORM pg_sleep(60); RETURN '{}'; END $$;
         SELECT job.create_queue('naps');
         SELECT job.set_handler('naps', 'nap(jsonb)', concurrency => 2);
         SELECT job.enqueue('naps', '{}');",
    );
    let napping = wait_until(Duration::from_secs(10), || {
        one::<i64>(
            &mut admin,
            "SELECT count(*) FROM pg_stat_activity
              WHERE datname = 'third' AND backend_type = 'pg_jobqueue executor'
                AND wait_event = 'PgSleep'",
            &[],
        ) == 1
    });
    assert!(
        napping,
        "the handler never started its sleep: {:?}",
        jobqueue_backends(&mut admin)
    );
    drop(third);
    drop_database_within_5_s(
        &cluster,
        &mut admin,
        "third",
        "DROP DATABASE during a running handler failed",
    );
    assert!(
        wait_until(Duration::from_secs(5), || {
            jobqueue_backends(&mut admin)
                .iter()
                .all(|(_, db, _)| db.is_none())
        }),
        "worker processes outlived their databases: {:?}",
        jobqueue_backends(&mut admin)
    );

    // The launcher still serves new databases.
    cluster.create_database("fourth");
    cluster.create_extension("fourth");
    wait_for_scheduler(&mut cluster.connect("fourth"), Duration::from_secs(10));
}

/// A script that disconnects and drops the database at once: the client's backend is still
/// leaving when DROP DATABASE starts (it drops its temporary tables on the way out), and the
/// drop stops the worker all the same.  It once saw the client, left the worker running, and
/// failed after its 5 s wait for the worker (CI, twice, with clients that left in
/// milliseconds).
#[test]
fn drop_database_right_after_the_last_client_disconnects() {
    let cluster = Cluster::start_new("life-drop-leaving", &[("log_disconnections", "on")]);
    let mut admin = cluster.connect("postgres");
    cluster.create_database("leaving");
    cluster.create_extension("leaving");
    let mut client = cluster.connect("leaving");
    exec(
        &mut client,
        "SELECT job.create_queue('q'); SELECT job.schedule('tick', '1 second', 'q');
         DO $$ BEGIN
             FOR i IN 1..2000 LOOP EXECUTE format('CREATE TEMP TABLE t%s (a int)', i); END LOOP;
         END $$;",
    );
    wait_for_scheduler(&mut client, Duration::from_secs(10));
    drop(client);
    drop_database_within_5_s(
        &cluster,
        &mut admin,
        "leaving",
        "DROP DATABASE right after the client disconnected failed",
    );
}

/// DROP EXTENSION stops the database's scheduler and executors within seconds, and they
/// stay away; CREATE EXTENSION brings the scheduler back and schedules fire again.
#[test]
fn drop_extension_stops_the_worker_and_create_extension_restarts_it() {
    let (cluster, mut client) = served_cluster("life-drop-extension", &[]);
    exec(
        &mut client,
        &format!(
            "{ECHO_HANDLER}
             SELECT job.create_queue('h');
             SELECT job.set_handler('h', 'echo(jsonb)', concurrency => 2);"
        ),
    );
    wait_for_executors(&mut client, 2, Duration::from_secs(10));
    let before = jobqueue_backends_of(&mut client, "postgres");
    assert_eq!(before.len(), 3, "a scheduler and two executors: {before:?}");

    exec(&mut client, "DROP EXTENSION pg_jobqueue");
    assert!(
        wait_until(Duration::from_secs(10), || {
            jobqueue_backends_of(&mut client, "postgres").is_empty()
        }),
        "worker processes still serve the database after DROP EXTENSION: {:?}\n{}",
        jobqueue_backends_of(&mut client, "postgres"),
        cluster.log_tail(20)
    );
    assert!(
        !wait_until(Duration::from_secs(3), || {
            jobqueue_backends_of(&mut client, "postgres")
                .iter()
                .any(|(_, kind)| kind == "pg_jobqueue executor")
                || jobqueue_backends_of(&mut client, "postgres").len() > 1
        }),
        "worker processes came back without the extension: {:?}",
        jobqueue_backends_of(&mut client, "postgres")
    );

    exec(
        &mut client,
        "CREATE EXTENSION pg_jobqueue;
         SELECT job.create_queue('q');
         SELECT job.schedule('tick', '1 second', 'q');",
    );
    wait_for_scheduler(&mut client, Duration::from_secs(10));
    assert_ticks_after(&mut client, f64::MIN, || {
        format!(
            "schedules do not fire after CREATE EXTENSION again\n{}",
            cluster.log_tail(20)
        )
    });
}

/// DROP EXTENSION while handlers run: it cancels them and stops every process of the
/// database before it drops anything, so it neither waits for a handler nor leaves executors
/// running against functions that are gone; the schema `job` goes with the extension; and an
/// extension created again at once is served by new processes only (0.4.0's executors went on
/// for seconds, then wrote against the new extension's tables: "job 2 does not exist").
#[test]
fn drop_extension_mid_handler_stops_every_process_before_the_drop() {
    let (cluster, mut client) = served_cluster("life-drop-mid-handler", &[]);
    exec(
        &mut client,
        "CREATE FUNCTION nap(payload jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
         BEGIN PERFORM pg_sleep(60); RETURN '{}'; END $$;
         SELECT job.create_queue('naps');
         SELECT job.set_handler('naps', 'nap(jsonb)', concurrency => 2);
         SELECT job.enqueue('naps', '{}') FROM generate_series(1, 4);",
    );
    let napping = wait_until(Duration::from_secs(15), || {
        one::<i64>(
            &mut client,
            "SELECT count(*) FROM pg_stat_activity
              WHERE backend_type = 'pg_jobqueue executor' AND wait_event = 'PgSleep'",
            &[],
        ) == 2
    });
    assert!(
        napping,
        "two handlers never slept: {:?}",
        jobqueue_backends(&mut client)
    );
    let log_before = cluster.log().len();

    let dropping = Instant::now();
    exec(&mut client, "DROP EXTENSION pg_jobqueue");
    let took = dropping.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "DROP EXTENSION waited for the handlers: {took:?}"
    );
    assert!(
        wait_until(Duration::from_secs(2), || {
            jobqueue_backends_of(&mut client, "postgres").is_empty()
        }),
        "worker processes outlived DROP EXTENSION: {:?}",
        jobqueue_backends_of(&mut client, "postgres")
    );
    assert!(
        one::<bool>(&mut client, "SELECT to_regnamespace('job') IS NULL", &[]),
        "an empty schema job survived DROP EXTENSION"
    );

    // Created again at once: only processes started for it touch it.
    exec(
        &mut client,
        "CREATE EXTENSION pg_jobqueue;
         SELECT job.create_queue('naps');
         SELECT job.set_handler('naps', 'nap(jsonb)', concurrency => 2);
         SELECT job.enqueue('naps', '{}');",
    );
    wait_for_executors(&mut client, 2, Duration::from_secs(15));
    std::thread::sleep(Duration::from_secs(2));
    let log = cluster.log()[log_before..].to_owned();
    assert!(
        !log.contains("does not exist"),
        "a process of the dropped extension touched the new one:\n{log}"
    );
}

/// A schema `job` the user keeps something of their own in survives DROP EXTENSION.
#[test]
fn drop_extension_keeps_a_schema_that_is_not_empty() {
    let (_cluster, mut client) = served_cluster("life-drop-keeps-schema", &[]);
    exec(
        &mut client,
        "CREATE TABLE job.mine (x int);
         DROP EXTENSION pg_jobqueue;",
    );
    assert!(one::<bool>(
        &mut client,
        "SELECT to_regclass('job.mine') IS NOT NULL",
        &[]
    ));
    // A rolled-back drop leaves the database served.
    exec(
        &mut client,
        "DROP TABLE job.mine; CREATE EXTENSION pg_jobqueue",
    );
    let before = wait_for_scheduler(&mut client, Duration::from_secs(10));
    exec(&mut client, "BEGIN; DROP EXTENSION pg_jobqueue; ROLLBACK;");
    assert!(
        wait_until(Duration::from_secs(10), || {
            let now = worker_pids(&mut client, "scheduler");
            !now.is_empty() && !now.contains(&before)
        }),
        "no new scheduler after a rolled-back DROP EXTENSION: {:?}",
        jobqueue_backends(&mut client)
    );
    assert!(one::<bool>(
        &mut client,
        "SELECT to_regnamespace('job') IS NOT NULL",
        &[]
    ));
}

/// The scheduler, terminated, is replaced within seconds and schedules go on firing.  An
/// executor killed with SIGKILL makes the postmaster reset the whole cluster; afterwards
/// the worker is back, schedules fire and handler jobs run.
#[test]
fn worker_recovers_from_terminated_and_killed_processes() {
    let (cluster, mut client, executors) = served_handler_and_tick("life-crash");
    let old = wait_for_scheduler(&mut client, Duration::from_secs(5));

    assert!(one::<bool>(
        &mut client,
        "SELECT pg_terminate_backend($1)",
        &[&old]
    ));
    let new = wait_for(Duration::from_secs(10), || {
        worker_pids(&mut client, "scheduler")
            .into_iter()
            .find(|&p| p != old)
    })
    .unwrap_or_else(|| {
        panic!(
            "no new scheduler within 10 s of terminating {old}: {:?}\n{}",
            worker_processes(&mut client),
            cluster.log_tail(20)
        )
    });
    let replaced_at = server_now(&mut client);
    assert_ticks_after(&mut client, replaced_at, || {
        format!("the new scheduler {new} does not fire schedules")
    });

    // SIGKILL: the postmaster treats it as a crash and restarts every process.
    let postmaster = cluster.postmaster_pid();
    let victim = executors[0];
    assert!(
        kill_process(victim, "KILL"),
        "executor {victim} was not running"
    );
    assert!(
        wait_until(Duration::from_secs(10), || client
            .simple_query("SELECT 1")
            .is_err()),
        "the cluster did not reset after an executor was killed"
    );
    let mut client = cluster.connect_when_ready("postgres", Duration::from_secs(30));
    let back_at = server_now(&mut client);
    assert_eq!(
        cluster.postmaster_pid(),
        postmaster,
        "the postmaster itself restarted"
    );
    assert!(
        cluster.log().contains("terminated by signal 9"),
        "the log does not show the crash:\n{}",
        cluster.log_tail(20)
    );
    wait_for_scheduler(&mut client, Duration::from_secs(15));
    let executors_after = wait_for_executors(&mut client, 2, Duration::from_secs(10));
    assert!(!executors_after.contains(&victim));
    enqueue_many(&mut client, "h", 1, 10);
    wait_for_finished(&cluster, &mut client, "h", 10, Duration::from_secs(15));
    assert!(
        queue_jobs(&mut client, "h")
            .iter()
            .all(|j| j.state == "completed"),
        "{:?}",
        queue_jobs(&mut client, "h")
    );
    assert_ticks_after(&mut client, back_at, || {
        "schedules do not fire after the crash restart".to_string()
    });
}

/// `pg_jobqueue.enabled = off` and a reload stop the scheduler and executors: no schedule
/// fires, no handler job runs.  `on` and a reload bring them back, and the waiting job runs.
#[test]
fn sighup_disables_and_reenables_the_worker() {
    let (cluster, mut client, _) = served_handler_and_tick("life-sighup");

    // Two statements: ALTER SYSTEM refuses to run in a (multi-statement) transaction.
    exec(&mut client, "ALTER SYSTEM SET pg_jobqueue.enabled = off");
    exec(&mut client, "SELECT pg_reload_conf()");
    assert!(
        wait_until(Duration::from_secs(10), || {
            worker_processes(&mut client).is_empty()
                && jobqueue_backends_of(&mut client, "postgres").is_empty()
        }),
        "the worker kept running with pg_jobqueue.enabled = off: {:?}",
        jobqueue_backends(&mut client)
    );
    let off_at = server_now(&mut client);
    let waiting = enqueue_json(&mut client, "h", r#"{"while": "off"}"#);
    assert!(
        !wait_until(Duration::from_secs(3), || {
            schedule_runs(&mut client, "tick")
                .iter()
                .any(|r| r.fired_at > off_at)
                || job(&mut client, waiting).state != "waiting"
        }),
        "the disabled worker still works: runs {:?}, job {:?}",
        schedule_runs(&mut client, "tick").last(),
        job(&mut client, waiting)
    );

    exec(&mut client, "ALTER SYSTEM SET pg_jobqueue.enabled = on");
    exec(&mut client, "SELECT pg_reload_conf()");
    let on_at = server_now(&mut client);
    wait_for_scheduler(&mut client, Duration::from_secs(15));
    wait_for_executors(&mut client, 2, Duration::from_secs(10));
    wait_for_finished(&cluster, &mut client, "h", 1, Duration::from_secs(10));
    assert_eq!(job(&mut client, waiting).state, "completed");
    assert_ticks_after(&mut client, on_at, || {
        "schedules do not fire after re-enabling".to_string()
    });
}

/// A scheduler that starts takes back at once the jobs of executors that died before it, and
/// no client worker's: a job a client holds keeps its lease across the restart.  (A regression
/// had every client's running job taken back at each scheduler start while no executor ran.)
#[test]
fn a_client_workers_job_keeps_its_lease_when_the_scheduler_starts() {
    let (_cluster, mut client) = served_cluster("life-client-lease", &[]);
    exec(
        &mut client,
        "SELECT job.create_queue('c'); SELECT job.enqueue('c') FROM generate_series(1, 2)",
    );
    let held: i64 = one(
        &mut client,
        "SELECT id FROM job.dequeue('c', 'host:4242:abcd', lease => '10 minutes')",
        &[],
    );
    let dead: i64 = one(
        &mut client,
        "SELECT id FROM job.dequeue('c', 'w', lease => '10 minutes')",
        &[],
    );
    // An executor that died with the server, as its claim reads (no process has that pid).
    exec(
        &mut client,
        &format!(
            "UPDATE job.live_jobs SET claimed_by = 'pg_jobqueue executor 10/0 (pid 2147483646)'
              WHERE id = {dead}"
        ),
    );
    let lease_of = |client: &mut Client, id: i64| -> String {
        one(
            client,
            "SELECT lease_expires_at::text FROM job.live_jobs WHERE id = $1",
            &[&id],
        )
    };
    let before = lease_of(&mut client, held);

    exec(&mut client, "ALTER SYSTEM SET pg_jobqueue.enabled = off");
    exec(&mut client, "SELECT pg_reload_conf()");
    assert!(
        wait_until(Duration::from_secs(10), || worker_processes(&mut client)
            .is_empty()),
        "the worker kept running with pg_jobqueue.enabled = off"
    );
    exec(&mut client, "ALTER SYSTEM SET pg_jobqueue.enabled = on");
    exec(&mut client, "SELECT pg_reload_conf()");
    wait_for_scheduler(&mut client, Duration::from_secs(15));
    assert!(
        wait_until(Duration::from_secs(10), || {
            one::<bool>(
                &mut client,
                "SELECT coalesce((SELECT state <> 'running' OR lease_expires_at <= now()
                                    FROM job.live_jobs WHERE id = $1), true)",
                &[&dead],
            )
        }),
        "the starting scheduler did not take back the dead executor's job"
    );
    assert_eq!(
        lease_of(&mut client, held),
        before,
        "the client's job lost its lease to the starting scheduler"
    );
}

/// A streaming standby runs no pg_jobqueue process and creates nothing: its schedule_runs
/// mirror the primary's.  Promoted after the primary stops, it fires the schedule itself
/// within seconds, continuing the primary's ticks without firing one twice.
#[test]
fn standby_stays_passive_until_promoted() {
    let (primary, mut client) = served_cluster("life-primary", &[]);
    exec(
        &mut client,
        "SELECT job.create_queue('q'); SELECT job.schedule('tick', '1 second', 'q');",
    );
    assert!(
        wait_for_runs(&mut client, "tick", 2, f64::MIN, Duration::from_secs(10)),
        "the primary's schedule does not fire"
    );
    let standby = Cluster::standby_of(&primary, "life-standby");
    let mut replica = standby.connect("postgres");
    assert!(one::<bool>(&mut replica, "SELECT pg_is_in_recovery()", &[]));

    // It replays the primary's runs...
    let primary_count = schedule_runs(&mut client, "tick").len();
    assert!(
        wait_until(Duration::from_secs(10), || {
            schedule_runs(&mut replica, "tick").len() >= primary_count + 2
        }),
        "the standby does not replay the primary's runs"
    );
    // ...runs no pg_jobqueue process (not even the launcher)...
    assert!(
        !wait_until(Duration::from_secs(2), || !jobqueue_backends(&mut replica)
            .is_empty()),
        "pg_jobqueue processes on a standby: {:?}",
        jobqueue_backends(&mut replica)
    );
    assert!(worker_processes(&mut replica).is_empty());
    // ...cannot fire a schedule...
    assert_refused(
        replica.query_one("SELECT job._fire_due_schedules()", &[]),
        &SqlState::READ_ONLY_SQL_TRANSACTION,
        "a standby fired schedules",
    );
    // ...and shows exactly what the primary fired.
    let mirrored = schedule_runs(&mut replica, "tick");
    let fired = schedule_runs(&mut client, "tick");
    for run in &mirrored {
        assert!(
            fired.contains(run),
            "the standby has a run the primary never fired: {run:?}"
        );
    }
    assert_each_tick_fired_once(&mut replica, "tick", "q");

    let before_stop = schedule_runs(&mut client, "tick");
    drop(client);
    primary.stop_fast();
    let promoted_at = unix_now();
    standby.promote();
    let mut promoted = standby.connect("postgres");
    assert!(!one::<bool>(
        &mut promoted,
        "SELECT pg_is_in_recovery()",
        &[]
    ));
    assert!(
        wait_for_runs(
            &mut promoted,
            "tick",
            2,
            promoted_at,
            Duration::from_secs(10)
        ),
        "the promoted standby does not fire the schedule within 10 s: {:?}\n{}",
        jobqueue_backends(&mut promoted),
        standby.log_tail(20)
    );
    wait_for_scheduler(&mut promoted, Duration::from_secs(1));
    let runs = assert_each_tick_fired_once(&mut promoted, "tick", "q");
    for run in &before_stop {
        assert!(
            runs.contains(run),
            "the primary's run {run:?} is missing after failover"
        );
    }
}

/// A DROP DATABASE that PostgreSQL refuses (the role does not own the database; it runs in a
/// transaction block; a client stays connected) changes nothing: the running handler job is not cancelled, and
/// the scheduler and executors keep serving the database.
#[test]
fn refused_drop_database_leaves_the_worker_alone() {
    let cluster = Cluster::start_new("life-refused-drop", &[]);
    cluster.create_database("victim");
    cluster.create_extension("victim");
    let mut victim = cluster.connect("victim");
    exec(
        &mut victim,
        "CREATE FUNCTION nap(payload jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
         BEGIN PERFORM pg_sleep(2); RETURN '{\"rested\": true}'; END $$;
         SELECT job.create_queue('naps', max_retries => 0);
         SELECT job.set_handler('naps', 'nap(jsonb)', concurrency => 2);
         SELECT job.create_queue('q');
         SELECT job.schedule('tick', '1 second', 'q');",
    );
    let scheduler = wait_for_scheduler(&mut victim, Duration::from_secs(10));
    let executors = wait_for_executors(&mut victim, 2, Duration::from_secs(10));
    let napping = enqueue_json(&mut victim, "naps", "{}");
    assert!(
        wait_until(Duration::from_secs(10), || job(&mut victim, napping).state
            == "running"),
        "the handler job never started"
    );

    let mut admin = cluster.connect("postgres");
    exec(&mut admin, "CREATE ROLE mallory; SET ROLE mallory");
    assert_refused(
        admin.batch_execute("DROP DATABASE victim"),
        &SqlState::INSUFFICIENT_PRIVILEGE,
        "a non-owner dropped the database",
    );
    exec(&mut admin, "RESET ROLE");
    assert_refused(
        admin.batch_execute("BEGIN; DROP DATABASE victim"),
        &SqlState::ACTIVE_SQL_TRANSACTION,
        "DROP DATABASE ran in a transaction block",
    );
    exec(&mut admin, "ROLLBACK");
    // The victim's own session stays connected: the drop waits 5 s for it to leave, then
    // leaves the worker alone, and PostgreSQL refuses after its own 5 s.
    assert_refused(
        admin.batch_execute("DROP DATABASE victim"),
        &SqlState::OBJECT_IN_USE,
        "DROP DATABASE ran with a client connected",
    );
    let refused_at = server_now(&mut victim);

    wait_for_finished(&cluster, &mut victim, "naps", 1, Duration::from_secs(10));
    let napped = job(&mut victim, napping);
    assert_eq!(
        (napped.state.as_str(), napped.attempt),
        ("completed", 1),
        "the refused DROP DATABASE disturbed the running handler: {:?}",
        job_errors(&mut victim, napping)
    );
    assert!(
        wait_for_runs(&mut victim, "tick", 2, refused_at, Duration::from_secs(5)),
        "schedules stopped firing after a refused DROP DATABASE: {:?}",
        worker_processes(&mut victim)
    );
    assert_eq!(worker_pids(&mut victim, "scheduler"), vec![scheduler]);
    assert_eq!(worker_pids(&mut victim, "executor"), executors);
}

/// A database whose extension is still at 0.1.0 when the 0.2.0 library starts (the
/// upgrade's first restart, before ALTER EXTENSION ... UPDATE) gets no scheduler that fails
/// on every tick for the 0.2.0 objects it lacks; after the update it is served.
#[test]
fn database_still_at_0_1_0_is_served_after_update_without_log_errors_before() {
    let cluster = Cluster::start_new("life-upgrade", &[]);
    exec(
        &mut cluster.connect("postgres"),
        "CREATE EXTENSION pg_jobqueue VERSION '0.1.0'",
    );
    cluster.restart();
    let mut client = cluster.connect("postgres");
    let failing = |log: &str| {
        log.lines()
            .filter(|l| l.contains("pg_jobqueue scheduler") && l.contains("does not exist"))
            .count()
    };
    assert!(
        !wait_until(Duration::from_secs(3), || failing(&cluster.log()) > 0),
        "with the extension at 0.1.0 the scheduler fails for missing 0.2.0 objects \
         ({} log lines within 3 s of the restart, and more on every tick):\n{}",
        failing(&cluster.log()),
        cluster.log_tail(8)
    );

    exec(
        &mut client,
        "ALTER EXTENSION pg_jobqueue UPDATE;
         SELECT job.create_queue('q');
         SELECT job.schedule('tick', '1 second', 'q');",
    );
    assert!(
        wait_for_runs(&mut client, "tick", 2, f64::MIN, Duration::from_secs(10)),
        "the updated database is not served\n{}",
        cluster.log_tail(20)
    );
    wait_for_scheduler(&mut client, Duration::from_secs(1));
}

/// A database at the previous release, declined by this library's scheduler, is served once
/// `ALTER EXTENSION pg_jobqueue UPDATE` commits, with nothing else asking for service: the
/// upgrade script asks itself (its generated part re-runs the install script's
/// `job._request_service()`; the hand-written 0.4.0 -> 0.5.0 script had forgotten it).
#[test]
fn database_at_the_previous_release_is_served_after_the_update_alone() {
    let previous = pg_jobqueue_integration::released_versions()
        .pop()
        .expect("a released version");
    let cluster = Cluster::start_new("life-update", &[]);
    let mut client = cluster.connect("postgres");
    exec(
        &mut client,
        &format!(
            "CREATE EXTENSION pg_jobqueue VERSION '{previous}';
             SELECT job.create_queue('q');
             SELECT job.schedule('tick', '1 second', 'q');"
        ),
    );
    assert!(
        !wait_for_runs(&mut client, "tick", 1, f64::MIN, Duration::from_secs(3)),
        "a database at {previous} was served by the {} library before its update",
        pg_jobqueue_integration::current_version()
    );
    exec(&mut client, "ALTER EXTENSION pg_jobqueue UPDATE");
    assert!(
        wait_for_runs(&mut client, "tick", 2, f64::MIN, Duration::from_secs(10)),
        "the database updated from {previous} is not served\n{}",
        cluster.log_tail(20)
    );
}

/// Without shared_preload_libraries there is no worker: the queue API works, and schedules
/// and handlers are refused with an error that says what to do.
#[test]
fn without_preload_schedules_and_handlers_refuse_clearly() {
    let cluster = Cluster::start_new("life-no-preload", &[("shared_preload_libraries", "''")]);
    let mut client = cluster.connect("postgres");
    exec(
        &mut client,
        &format!(
            "CREATE EXTENSION pg_jobqueue;
             {ECHO_HANDLER}
             SELECT job.create_queue('q');
             SELECT job.enqueue('q');"
        ),
    );
    assert_eq!(dequeue(&mut client, "q", "w", 1, None).len(), 1);
    for (call, what) in [
        ("SELECT job.schedule('s', '@daily', 'q')", "schedules"),
        ("SELECT job.set_handler('q', 'echo(jsonb)')", "handlers"),
    ] {
        let error = client.batch_execute(call).expect_err(call);
        let text = error_text(&error);
        assert!(
            text.contains(&format!(
                "{what} need the pg_jobqueue background worker, which runs only when the library is preloaded"
            )) && text.contains("HINT: Add pg_jobqueue to shared_preload_libraries"),
            "{call}: {text}"
        );
    }
    assert_eq!(
        one::<i64>(&mut client, "SELECT count(*) FROM job.schedule_defs", &[])
            + one::<i64>(&mut client, "SELECT count(*) FROM job.handlers", &[]),
        0
    );
    assert!(jobqueue_backends(&mut client).is_empty());
}

/// A server started with RUST_BACKTRACE=1 in its environment (as every cluster these tests
/// start is: cluster.rs) reports errors as PostgreSQL does: a DDL error, which passes through
/// the extension's utility hook, and an error the extension's Rust code raises carry no Rust
/// backtrace in their DETAIL (0.4.0 appended ~20 lines to each).
#[test]
fn errors_carry_no_rust_backtrace_whatever_the_environment() {
    let cluster = Cluster::start_new("backtraces", &[]);
    cluster.create_extension("postgres");
    let mut client = cluster.connect("postgres");
    // The postmaster's environment (a backend's own is overwritten by its process title).
    let backend: i32 = one(&mut client, "SELECT pg_backend_pid()", &[]);
    let stat = std::fs::read_to_string(format!("/proc/{backend}/stat")).unwrap();
    let postmaster = stat.rsplit(") ").next().unwrap().split(' ').nth(1).unwrap();
    let environ = std::fs::read(format!("/proc/{postmaster}/environ")).unwrap();
    assert!(
        environ
            .split(|&b| b == 0)
            .any(|var| var == b"RUST_BACKTRACE=1"),
        "the server was to run with RUST_BACKTRACE=1"
    );
    exec(&mut client, "CREATE TABLE twice ()");
    for (what, sql) in [
        ("a DDL error", "CREATE TABLE twice ()"),
        (
            "an error of the extension's Rust code",
            "SELECT job.cron_next('not cron')",
        ),
    ] {
        let e = client.batch_execute(sql).expect_err(what);
        let db = e.as_db_error().unwrap_or_else(|| panic!("{what}: {e}"));
        assert_ne!(
            db.code(),
            &SqlState::INTERNAL_ERROR,
            "{what}: {}",
            error_text(&e)
        );
        assert!(
            db.detail()
                .is_none_or(|d| !d.contains("backtrace") && !d.contains("  0: ")),
            "{what} carries a Rust backtrace: {}",
            error_text(&e)
        );
    }
}
