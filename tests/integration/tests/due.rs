//! Jobs that come due: a LISTENing worker hears of a delayed job, a retry whose backoff ended
//! and a job taken back from a stalled worker as they become ready, from the background
//! worker, with nobody calling dequeue; and a worker without LISTEN can ask when to look.
//!
//! The cluster's scheduler tick is 30 s, so a wake-up that comes in well under a second came
//! from the worker waking for the due job (or from the commit that made it due telling it),
//! not from the scheduler's periodic look.  The latencies are printed; the timed aim (p99 under
//! 100 ms) is measured by `make bench`, the test only bounds them to prove the mechanism.

use pg_jobqueue_integration::cluster::*;
use pg_jobqueue_integration::sql::{exec, one};
use pg_jobqueue_integration::{error_text, next_notification, queue_id, Client};
use std::time::{Duration, Instant};

const SAMPLES: usize = 12;

/// Waits for a notification with `payload`; the time it arrived.
fn wait_for_payload(listener: &mut Client, payload: &str, within: Duration) -> Instant {
    let started = Instant::now();
    while started.elapsed() < within {
        if let Some(n) = next_notification(listener, within.saturating_sub(started.elapsed())) {
            if n.payload() == payload {
                return Instant::now();
            }
        }
    }
    panic!("no notification with payload {payload} within {within:?}");
}

/// Comes up empty on `queue` (marking this session a waiting consumer) with LISTEN on.
fn wait_as_consumer(listener: &mut Client, queue: &str) {
    let n: i64 = one(
        listener,
        "SELECT count(*) FROM job.dequeue($1, 'listener')",
        &[&queue],
    );
    assert_eq!(n, 0, "{queue} should be empty");
}

fn report(what: &str, mut late: Vec<f64>) -> f64 {
    late.sort_by(f64::total_cmp);
    let p50 = late[late.len() / 2];
    let max = *late.last().unwrap();
    println!(
        "{what}: {} samples, lateness p50 {:.1} ms, max {:.1} ms",
        late.len(),
        p50 * 1e3,
        max * 1e3
    );
    max
}

/// When job `id` is due, in seconds since the epoch.
fn run_at(client: &mut Client, id: i64) -> f64 {
    one(
        client,
        "SELECT extract(epoch FROM run_at)::float8 FROM job.jobs WHERE id = $1",
        &[&id],
    )
}

/// SAMPLES times: `make_due(client, listener)` makes a job of `queue` due at the time it
/// returns (seconds since the epoch), `listener` waiting on the queue by then; the listener
/// hears of it, then takes and completes it.  Each must be heard within a second of being due.
fn assert_heard_when_due(
    client: &mut Client,
    listener: &mut Client,
    queue: &str,
    what: &str,
    mut make_due: impl FnMut(&mut Client, &mut Client) -> f64,
) {
    let payload = queue_id(client, queue);
    let mut late = Vec::new();
    for _ in 0..SAMPLES {
        let due = make_due(client, listener);
        wait_for_payload(listener, &payload, Duration::from_secs(5));
        late.push(unix_now() - due);
        exec(
            listener,
            &format!("SELECT job.complete(id) FROM job.dequeue('{queue}')"),
        );
    }
    assert!(report(what, late) < 1.0);
}

#[test]
fn listeners_hear_of_jobs_as_they_come_due() {
    let (_cluster, mut client) = served_cluster(
        "due-wakeups",
        &[
            ("pg_jobqueue.scheduler_tick", "'30s'"),
            ("pg_jobqueue.maintenance_interval", "'30s'"),
        ],
    );
    client
        .batch_execute(
            "SELECT job.create_queue('delayed');
             SELECT job.create_queue('retried', backoff_base => '700 ms', backoff_max => '700 ms', jitter => 0);
             SELECT job.create_queue('stalled');",
        )
        .unwrap_or_else(|e| panic!("setup: {}", error_text(&e)));
    let mut listener = _cluster.connect("postgres");
    listener.batch_execute("LISTEN pg_jobqueue").unwrap();

    // Delayed jobs: due 800 ms after the enqueue commits.
    assert_heard_when_due(
        &mut client,
        &mut listener,
        "delayed",
        "delayed job",
        |client, listener| {
            wait_as_consumer(listener, "delayed");
            let id: i64 = one(
                client,
                "SELECT job.enqueue('delayed', delay => '800 milliseconds')",
                &[],
            );
            run_at(client, id)
        },
    );

    // Retries: a failed attempt backs off 700 ms.
    assert_heard_when_due(
        &mut client,
        &mut listener,
        "retried",
        "retry after backoff",
        |client, listener| {
            exec(client, "SELECT job.enqueue('retried')");
            let id: i64 = one(client, "SELECT id FROM job.dequeue('retried', 'w')", &[]);
            wait_as_consumer(listener, "retried");
            let state: String = one(client, "SELECT job.fail($1, 'transient')", &[&id]);
            assert_eq!(state, "scheduled");
            run_at(client, id)
        },
    );

    // Stalled jobs: claimed with a 1 s lease and abandoned.
    assert_heard_when_due(
        &mut client,
        &mut listener,
        "stalled",
        "stalled job taken back",
        |client, listener| {
            exec(client, "SELECT job.enqueue('stalled')");
            let expires: f64 = one(
            client,
            "SELECT extract(epoch FROM lease_expires_at)::float8 FROM job.dequeue('stalled', 'crashed', lease => '1 second')",
            &[],
        );
            wait_as_consumer(listener, "stalled");
            expires
        },
    );
}

/// A worker that cannot LISTEN (behind a transaction pooler) asks job.next_due and sleeps
/// exactly that long: it finds the delayed job right after it is due.
#[test]
fn a_polling_worker_sleeps_until_next_due() {
    let (_cluster, mut client) =
        served_cluster("due-polling", &[("pg_jobqueue.scheduler_tick", "'30s'")]);
    client
        .batch_execute("SELECT job.create_queue('q')")
        .unwrap();
    let no_job: Option<f64> = one(
        &mut client,
        "SELECT extract(epoch FROM job.next_due('q'))::float8",
        &[],
    );
    assert_eq!(no_job, None);
    client
        .batch_execute("SELECT job.enqueue('q', delay => '1 second')")
        .unwrap();
    let due: f64 = one(
        &mut client,
        "SELECT extract(epoch FROM job.next_due('q'))::float8",
        &[],
    );
    let wait = (due - unix_now()).max(0.0);
    assert!(wait > 0.5 && wait <= 1.0, "next_due said to wait {wait} s");
    std::thread::sleep(Duration::from_secs_f64(wait - 0.3));
    let early: i64 = one(&mut client, "SELECT count(*) FROM job.dequeue('q')", &[]);
    assert_eq!(early, 0, "the job was handed out before its due time");
    std::thread::sleep(Duration::from_secs_f64((due - unix_now()).max(0.0)));
    // At the due time the background worker may be making the job ready in the same instant:
    // a dequeue then skips the row it has locked and finds nothing yet, and the worker's
    // commit wakes LISTENers (not this poller). A poller looks again shortly after.
    let came_due = Instant::now();
    let mut got = 0_i64;
    while got == 0 && came_due.elapsed() < Duration::from_secs(2) {
        got = one(&mut client, "SELECT count(*) FROM job.dequeue('q')", &[]);
        if got == 0 {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    assert_eq!(got, 1, "the job was not there at its due time");
    println!("found {:?} after its due time", came_due.elapsed());
}
