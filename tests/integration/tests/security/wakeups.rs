//! Locks and wake-ups: no role can stall producers or handler queues by taking locks, read
//! queue names off the notification channel, or make anything happen by notifying it.

use super::*;
use std::sync::atomic::{AtomicU64, Ordering};

static SLOT_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Creates `queue` with an id no other queue of this test run is likely to have: wake-up
/// slots are `id mod 1024` and shared by every database of the cluster, and every database
/// numbers its queues from 1.  Returns the id (0.2.0, in the baseline run, has no ids: -1).
fn create_queue_in_own_slot(su: &mut Client, queue: &str) -> i64 {
    if baseline_0_2_0() {
        exec(su, &format!("SELECT job.create_queue('{queue}')"));
        return -1;
    }
    let n = SLOT_COUNTER.fetch_add(1, Ordering::Relaxed);
    let slot = 300 + (std::process::id() as u64 * 37 + n * 101) % 700;
    exec(
        su,
        &format!(
            "SELECT setval(pg_get_serial_sequence('job.queues', 'id'), {slot}, false);
             SELECT job.create_queue('{queue}')"
        ),
    );
    one(su, "SELECT id FROM job.queues WHERE name = $1", &[&queue])
}

/// 0.2.0's wake-up slots were advisory locks (key space x'6a717765'),
/// taken at pre-commit where no statement timeout applies; a role with only CONNECT held all
/// 1024 and every producer's commit hung while a consumer waited.  Now the slots are internal
/// locks: holding those advisory keys changes nothing, and 100 enqueues commit promptly (a
/// lock_timeout of 5 s turns any wait on them into an error).
#[test]
fn advisory_locks_on_the_old_wakeup_keys_do_not_stall_producers() {
    let (mut roles, db, mut su) = duty_db("wlock", "sec_wakeup_locks");
    let nobody = roles.add(&mut su, "nobody", "LOGIN");
    let queue_id = create_queue_in_own_slot(&mut su, "locked");

    let mut hostile = connect_as(&db, &nobody);
    let held: i64 = one(
        &mut hostile,
        "SELECT count(*) FROM (SELECT pg_advisory_lock(x'6a717765'::int, s)
                                 FROM generate_series(0, 1023) s) l",
        &[],
    );
    assert_eq!(held, 1024);

    let mut consumer = connect_as(&db, &roles.worker);
    listen(&mut consumer);
    exec(&mut consumer, "SET lock_timeout = '5s'");
    let claimed = consumer
        .query("SELECT id FROM job.dequeue('locked', 'w1')", &[])
        .unwrap_or_else(|e| panic!("dequeue failed: {}", error_text(&e)));
    assert!(claimed.is_empty());

    let mut producer = connect_as(&db, &roles.producer);
    exec(&mut producer, "SET lock_timeout = '5s'");
    let started = Instant::now();
    for n in 0..100 {
        producer
            .execute(
                "SELECT job.enqueue('locked', jsonb_build_object('n', $1::int))",
                &[&n],
            )
            .unwrap_or_else(|e| panic!("enqueue {n} failed: {}", error_text(&e)));
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "100 enqueues took {took:?} while another role held advisory locks"
    );
    let note = next_notification(&mut consumer, Duration::from_secs(5))
        .expect("the waiting consumer was not woken");
    assert_eq!(note.payload(), queue_id.to_string());
    assert_eq!(
        one::<i64>(
            &mut su,
            "SELECT count(*) FROM job.jobs WHERE queue = 'locked'",
            &[]
        ),
        100
    );
}

/// 0.2.0's executors took a handler queue's concurrency slots as
/// advisory locks (x'6a716578', hashtext('<queue>/<slot>')); a role with only CONNECT held
/// them and the queue never ran.  Now the claim turns are internal locks and the queue runs.
#[test]
fn advisory_locks_on_the_old_handler_keys_do_not_stop_a_handler_queue() {
    let (cluster, mut su) = served_cluster("sec-handler-locks", &[]);
    let mut roles = Roles::in_cluster("hlock", &mut su);
    let nobody = roles.add(&mut su, "nobody", "LOGIN");
    let runner = roles.add(&mut su, "runner", "NOLOGIN");
    exec(
        &mut su,
        &format!(
            "CREATE FUNCTION h(payload jsonb) RETURNS jsonb LANGUAGE sql AS $$ SELECT payload $$;
             GRANT EXECUTE ON FUNCTION h(jsonb) TO {runner};
             SELECT job.create_queue('q');"
        ),
    );
    let mut hostile = connect_cluster_as(&cluster, "postgres", &nobody);
    let held: i64 = one(
        &mut hostile,
        "SELECT count(*) FROM (SELECT pg_advisory_lock(x'6a716578'::int, hashtext('q/' || s))
                                 FROM generate_series(0, 3) s) l",
        &[],
    );
    assert_eq!(held, 4);
    exec(
        &mut su,
        &format!(
            "SELECT job.set_handler('q', 'h(jsonb)', concurrency => 2, run_as => '{runner}');
             SELECT job.enqueue('q', jsonb_build_object('n', g)) FROM generate_series(1, 3) g;"
        ),
    );
    wait_for_finished(&cluster, &mut su, "q", 3, Duration::from_secs(30));
    assert_eq!(
        one::<i64>(
            &mut su,
            "SELECT count(*) FROM job.jobs WHERE queue = 'q' AND state = 'completed'",
            &[]
        ),
        3
    );
}

/// Any role may LISTEN on any channel, and 0.2.0's wake-ups carried the queue's
/// name.  Now a role with no grants at all hears only the queue's id (job.queue_id), never
/// the name.
#[test]
fn wakeup_notifications_carry_the_queue_id_not_its_name() {
    let (mut roles, db, mut su) = duty_db("ntfy", "sec_notify_payload");
    let nobody = roles.add(&mut su, "nobody", "LOGIN");
    let queue = "payroll-acme-layoffs";
    let queue_id = create_queue_in_own_slot(&mut su, queue);

    let mut eavesdropper = connect_as(&db, &nobody);
    listen(&mut eavesdropper);
    let mut consumer = connect_as(&db, &roles.worker);
    listen(&mut consumer);
    let claimed = consumer
        .query("SELECT id FROM job.dequeue($1, 'w1')", &[&queue])
        .unwrap_or_else(|e| panic!("dequeue failed: {}", error_text(&e)));
    assert!(claimed.is_empty());
    let mut producer = connect_as(&db, &roles.producer);
    exec(
        &mut producer,
        &format!("SELECT job.enqueue('{queue}', '{{\"salary\": 1}}')"),
    );

    let heard = next_notification(&mut eavesdropper, Duration::from_secs(5))
        .expect("no wake-up reached the listener: the test proves nothing");
    assert_eq!(heard.channel(), CHANNEL);
    assert!(
        !heard.payload().contains("payroll"),
        "a role with no grants read the queue name off the channel: {:?}",
        heard.payload()
    );
    assert_eq!(heard.payload(), queue_id.to_string());
    let id_for_worker: i64 = one(&mut consumer, "SELECT job.queue_id($1)", &[&queue]);
    assert_eq!(heard.payload(), id_for_worker.to_string());
}

/// A role with only CONNECT can NOTIFY pg_jobqueue with any payload; that is at
/// most a spurious wake-up: no job, queue, audit row or anything else changes.
#[test]
fn a_spoofed_wakeup_changes_nothing() {
    let (mut roles, db, mut su) = duty_db("spoof", "sec_spoof");
    let nobody = roles.add(&mut su, "nobody", "LOGIN");
    let queue_id = create_queue_in_own_slot(&mut su, "payroll");
    exec(
        &mut su,
        "SELECT job.enqueue('payroll', '{}', delay => '1 hour')",
    );
    let mut consumer = connect_as(&db, &roles.worker);
    listen(&mut consumer);
    let before = fingerprint(&mut su, &roles);

    let mut hostile = connect_as(&db, &nobody);
    exec(
        &mut hostile,
        &format!(
            "NOTIFY pg_jobqueue, 'x';
             NOTIFY pg_jobqueue, 'payroll';
             SELECT pg_notify('pg_jobqueue', '{queue_id}');
             SELECT pg_notify('pg_jobqueue', '');"
        ),
    );
    // The consumer hears the spoofs (a spurious wake-up) ...
    assert!(next_notification(&mut consumer, Duration::from_secs(5)).is_some());
    // ... and nothing reacts to them.
    std::thread::sleep(Duration::from_millis(1500));
    assert_unchanged(
        &before,
        &fingerprint(&mut su, &roles),
        "the extension's objects",
    );
    let claimed = consumer
        .query("SELECT id FROM job.dequeue('payroll', 'w1')", &[])
        .unwrap();
    assert!(
        claimed.is_empty(),
        "a spoofed wake-up made a delayed job ready"
    );
}

/// Wake-up idle marks are kept per slot (queue id mod 1024) in shared memory, for the whole
/// cluster, while every database numbers its queues from 1.  A producer in another database
/// whose queue falls in the same slot must not answer (and so swallow) the wake-up a
/// consumer in this database waits for.
#[test]
fn a_producer_in_another_database_cannot_swallow_this_databases_wakeup() {
    let roles = Roles::new("xdb");
    let here = security_db("sec_xdb_here");
    let there = security_db("sec_xdb_there");
    let mut su_here = here.connect();
    let mut su_there = there.connect();
    exec(&mut su_here, &roles.recipes());
    exec(&mut su_there, &roles.recipes());
    // The same name too: 0.2.0 (the baseline run) filed slots by name.
    let id_here = create_queue_in_own_slot(&mut su_here, "emails");
    if baseline_0_2_0() {
        exec(&mut su_there, "SELECT job.create_queue('emails')");
    } else {
        exec(
            &mut su_there,
            &format!(
                "SELECT setval(pg_get_serial_sequence('job.queues', 'id'), {id_here}, false);
                 SELECT job.create_queue('emails')"
            ),
        );
        let id_there: i64 = one(&mut su_there, "SELECT job.queue_id('emails')", &[]);
        assert_eq!(id_there, id_here, "the queues must share a slot");
    }

    let mut consumer = connect_as(&here, &roles.worker);
    listen(&mut consumer);
    assert!(consumer
        .query("SELECT id FROM job.dequeue('emails', 'w1')", &[])
        .unwrap()
        .is_empty());
    // Another database's producer commits first (its own queue, its own business) ...
    exec(
        &mut connect_as(&there, &roles.producer),
        "SELECT job.enqueue('emails', '{}')",
    );
    // ... then this database's producer.
    exec(
        &mut connect_as(&here, &roles.producer),
        "SELECT job.enqueue('emails', '{}')",
    );
    let woken = next_notification(&mut consumer, Duration::from_secs(5));
    assert!(
        woken.is_some(),
        "the consumer waiting on 'emails' was never woken: a producer of another database \
         answered its idle mark"
    );
}
