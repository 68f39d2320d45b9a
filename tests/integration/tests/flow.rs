//! Flow control (sql/flow.sql) under real concurrency: queue and per-key concurrency limits,
//! rate windows, debounce and singleton keys, per-key order, fair queues, leases of per-key
//! slots, holds (job.rate_limit_pause) and the input checks of the new parameters.  Real
//! sessions on real threads; what ran when is measured inside the database by the workers
//! themselves, between the commit of their claim and their call to complete.

use pg_jobqueue_integration::*;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

/// How many jobs of `queue` are still live (waiting, scheduled or running).
fn live(c: &mut Client, queue: &str) -> i64 {
    one::<i64>(
        c,
        "SELECT count(*) FROM job.live_jobs WHERE queue = $1",
        &[&queue],
    )
}

/// `queue`'s live jobs (the first 12 by id), for failure messages.
fn live_summary(c: &mut Client, queue: &str) -> String {
    c.query(
        "SELECT format('job %s %s attempt %s run_at now%s%s', id, state, attempt,
                       to_char(extract(epoch FROM run_at - now()), 'SG990.999s'),
                       coalesce(' key ' || coalesce(order_key, singleton_key, concurrency_key), ''))
           FROM job.live_jobs WHERE queue = $1 ORDER BY id LIMIT 12",
        &[&queue],
    )
    .map(|rows| {
        rows.iter()
            .map(|r| r.get::<_, String>(0))
            .collect::<Vec<_>>()
            .join("; ")
    })
    .unwrap_or_else(|e| error_text(&e))
}

/// The server's clock, in seconds since the epoch.
fn server_clock(c: &mut Client) -> f64 {
    one::<f64>(
        c,
        "SELECT extract(epoch FROM clock_timestamp())::float8",
        &[],
    )
}

/// The probes workers run while they hold a job (installed in the test database).
/// `probe_start` runs after the claim committed and `probe_end` before the job is completed
/// or failed, each in a transaction of its own, so a probe's span lies within the span in
/// which the database counted the job as running.  `probe_counter` counts the jobs between
/// their probe_start and probe_end, overall (key '') and per key, under the counter rows'
/// locks (always '' first, so no deadlock): `max_seen` is the most ever at once, and can
/// exceed a limit only if the database let more jobs run at once than the limit allows.
const PROBES: &str = "
CREATE TABLE probe_counter (key text PRIMARY KEY, running int NOT NULL DEFAULT 0, max_seen int NOT NULL DEFAULT 0);
CREATE TABLE probe (job_id bigint NOT NULL, attempt int NOT NULL, key text NOT NULL, worker text NOT NULL,
                    started timestamptz NOT NULL, ended timestamptz, PRIMARY KEY (job_id, attempt));
CREATE FUNCTION probe_start(j bigint, a int, k text, w text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO probe_counter (key) VALUES (''), (k) ON CONFLICT DO NOTHING;
    UPDATE probe_counter SET running = running + 1, max_seen = greatest(max_seen, running + 1) WHERE key = '';
    UPDATE probe_counter SET running = running + 1, max_seen = greatest(max_seen, running + 1) WHERE key = k;
    INSERT INTO probe VALUES (j, a, k, w, clock_timestamp(), NULL);
END $$;
CREATE FUNCTION probe_end(j bigint, a int, k text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    UPDATE probe SET ended = clock_timestamp() WHERE job_id = j AND attempt = a AND ended IS NULL;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'probe of job % attempt % ended twice or never started', j, a;
    END IF;
    UPDATE probe_counter SET running = running - 1 WHERE key = '';
    UPDATE probe_counter SET running = running - 1 WHERE key = k;
END $$;
";

/// Makes the probe table and functions, with counters for '' and each of `keys`.
fn install_probes(c: &mut Client, keys: &[String]) {
    c.batch_execute(PROBES)
        .unwrap_or_else(|e| panic!("installing the probes: {}", error_text(&e)));
    execute(
        c,
        "INSERT INTO probe_counter (key) SELECT unnest($1::text[]) UNION SELECT ''",
        &[&keys],
    );
}

/// `max_seen` per key ('' overall), and asserts every counter went back to 0.
fn probe_maxima(c: &mut Client) -> HashMap<String, i32> {
    let mut maxima = HashMap::new();
    for r in c
        .query("SELECT key, running, max_seen FROM probe_counter", &[])
        .unwrap()
    {
        let (key, running, max_seen): (String, i32, i32) = (r.get(0), r.get(1), r.get(2));
        assert_eq!(running, 0, "probe counter {key:?} did not go back to 0");
        maxima.insert(key, max_seen);
    }
    maxima
}

/// `workers` threads drain `queue`: each claims 1 to `max_batch` jobs, runs probe_start for
/// each, sleeps 2 to 8 ms, runs probe_end, then fails the first attempt of jobs whose payload
/// says "fail" (a retry) and completes the others.  Stops when the queue has no live job.
/// Returns the (job id, attempt) pairs each worker finished.
fn probe_workers(db: &TestDb, queue: &str, workers: usize, max_batch: i32) -> Vec<(i64, i32)> {
    on_workers(db, workers, |w, c| {
        let worker = format!("w{w}");
        let mut rng = Rng::new(w as u64 + 17);
        let mut done = Vec::new();
        let started = Instant::now();
        loop {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "{worker}: the queue was not drained within 20 s; {} live: {}",
                live(c, queue),
                live_summary(c, queue)
            );
            let batch = rng.range(1, max_batch as u64) as i32;
            let jobs = claim(c, queue, &worker, batch, None);
            if jobs.is_empty() {
                if live(c, queue) == 0 {
                    break;
                }
                thread::sleep(Duration::from_millis(rng.range(1, 3)));
                continue;
            }
            assert!(jobs.len() <= batch as usize, "{worker}: batch {batch} gave {jobs:?}");
            for j in &jobs {
                execute(
                    c,
                    "SELECT probe_start($1, $2, $3, $4)",
                    &[&j.id, &j.attempt, &j.key, &worker],
                );
            }
            thread::sleep(Duration::from_millis(rng.range(2, 8)));
            for j in &jobs {
                execute(
                    c,
                    "SELECT probe_end($1, $2, $3)",
                    &[&j.id, &j.attempt, &j.key],
                );
                if j.fail && j.attempt == 1 {
                    let state: String = c
                        .query_one(
                            "SELECT job.fail($1, 'the first attempt fails', token => $2::text::uuid)",
                            &[&j.id, &j.token],
                        )
                        .unwrap_or_else(|e| panic!("fail({}): {}", j.id, error_text(&e)))
                        .get(0);
                    assert_eq!(state, "scheduled", "job {} after its failed first attempt", j.id);
                } else {
                    assert!(complete(c, j), "{worker} could not complete job {}", j.id);
                }
                done.push((j.id, j.attempt));
            }
        }
        done
    })
    .into_iter()
    .flatten()
    .collect()
}

/// 8 workers (batches of 1 or 2) drain 400 jobs spread over 10 concurrency keys of a queue
/// with concurrency => 3 and key_concurrency => 1.  Measured by the workers while they hold
/// their jobs: never more than 3 jobs at once, never 2 of one key at once, and 3 at once
/// did happen (the limit bound); every job ran exactly once, on its first attempt.
#[test]
fn queue_and_key_concurrency_are_never_exceeded() {
    const JOBS: i64 = 400;
    const KEYS: i64 = 10;
    let (db, queue, mut c) = queue_db(
        "flow_conc",
        "conc",
        ", concurrency => 3, key_concurrency => 1",
    );
    let keys: Vec<String> = (0..KEYS).map(|k| format!("k{k}")).collect();
    install_probes(&mut c, &keys);
    // Keys unevenly spread: k0 gets a quarter of the jobs, the rest share the others.
    let enqueued: HashSet<i64> = c
        .query(
            "SELECT job.enqueue($1, jsonb_build_object('n', g, 'key', k), concurrency_key => k)
               FROM generate_series(1, $2::bigint) g,
                    LATERAL (SELECT 'k' || CASE WHEN g % 4 = 0 THEN 0 ELSE 1 + g % ($3::bigint - 1) END AS k) kk
              ORDER BY g",
            &[&queue, &JOBS, &KEYS],
        )
        .unwrap_or_else(|e| panic!("enqueue: {}", error_text(&e)))
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(enqueued.len(), JOBS as usize);

    let started = Instant::now();
    let done = probe_workers(&db, &queue, 8, 2);
    eprintln!("drained {JOBS} jobs in {:?}", started.elapsed());

    let maxima = probe_maxima(&mut c);
    eprintln!("most at once: {maxima:?}");
    assert!(
        maxima[""] <= 3,
        "{} jobs ran at once with concurrency => 3",
        maxima[""]
    );
    assert_eq!(
        maxima[""], 3,
        "3 jobs never ran at once: the test did not load the limit"
    );
    for key in &keys {
        assert!(
            maxima[key] <= 1,
            "{} jobs of key {key} ran at once with key_concurrency => 1",
            maxima[key]
        );
        assert_eq!(maxima[key], 1, "no job of key {key} ran");
    }

    let mut seen = HashSet::new();
    for (id, attempt) in &done {
        assert_eq!(*attempt, 1, "job {id} ran a second attempt");
        assert!(seen.insert(*id), "job {id} was handed out twice");
    }
    assert_eq!(seen, enqueued, "the jobs run differ from the jobs enqueued");
    let probed = one::<i64>(&mut c, "SELECT count(DISTINCT job_id) FROM probe", &[]);
    assert_eq!(probed, JOBS);
    let stats = queue_stats(&mut c, &queue);
    assert_eq!(
        (stats.completed, stats.waiting, stats.running),
        (JOBS, 0, 0)
    );
    // The probes and the database agree on each job's key.
    let mismatched = one::<i64>(
        &mut c,
        "SELECT count(*) FROM probe p JOIN job.jobs j ON j.id = p.job_id
          WHERE j.concurrency_key IS DISTINCT FROM p.key",
        &[],
    );
    assert_eq!(
        mismatched, 0,
        "jobs whose concurrency_key is not the one enqueued"
    );
}

/// The most starts (microsecond timestamps, sorted) in any window [t, t + width) that begins
/// at a start.
fn busiest_window(starts: &[i64], width: i64) -> (usize, i64) {
    let mut best = (0, 0);
    let mut end = 0;
    for (i, &t) in starts.iter().enumerate() {
        while end < starts.len() && starts[end] < t + width {
            end += 1;
        }
        if end - i > best.0 {
            best = (end - i, t);
        }
    }
    best
}

/// 6 workers (batches of 1 to 4) drain 600 jobs of a queue with rate_limit => 50 (per
/// second): over the jobs' claimed_at, no window of one second holds more than 50 starts, and
/// the queue still started at least 35 per second (the limit bound, and did not starve).
#[test]
fn a_rate_limit_is_never_exceeded_in_any_window() {
    const JOBS: i64 = 600;
    const WORKERS: usize = 6;
    let (db, queue, mut c) = queue_db("flow_rate", "rate", ", rate_limit => 50");
    let period: String = one(
        &mut c,
        "SELECT rate_period::text FROM job.queue_settings WHERE queue = $1",
        &[&queue],
    );
    assert_eq!(period, "00:00:01", "rate_period's default");
    let enqueued: HashSet<i64> = enqueue_many(&mut c, &queue, 0, JOBS).into_iter().collect();

    let barrier = Arc::new(Barrier::new(WORKERS));
    let handles: Vec<_> = (0..WORKERS)
        .map(|w| {
            let mut c = db.connect();
            let queue = queue.clone();
            let barrier = barrier.clone();
            thread::spawn(move || {
                let worker = format!("w{w}");
                let mut rng = Rng::new(w as u64 + 5);
                let mut done = Vec::new();
                barrier.wait();
                let started = Instant::now();
                loop {
                    assert!(
                        started.elapsed() < Duration::from_secs(40),
                        "{worker}: not drained in 40 s"
                    );
                    let batch = rng.range(1, 4) as i32;
                    let jobs = claim(&mut c, &queue, &worker, batch, None);
                    if jobs.is_empty() {
                        if live(&mut c, &queue) == 0 {
                            break;
                        }
                        thread::sleep(Duration::from_millis(rng.range(2, 6)));
                        continue;
                    }
                    let ids = ids(&jobs);
                    assert_eq!(complete_many(&mut c, &ids) as usize, ids.len());
                    done.extend(ids);
                }
                done
            })
        })
        .collect();
    let mut seen = HashSet::new();
    for h in handles {
        for id in h.join().expect("a worker panicked") {
            assert!(seen.insert(id), "job {id} was handed out twice");
        }
    }
    assert_eq!(seen, enqueued);

    let starts: Vec<i64> = column(
        &mut c,
        "SELECT (extract(epoch FROM claimed_at) * 1000000)::bigint FROM job.jobs
              WHERE queue = $1 AND state = 'completed' ORDER BY 1",
        &[&queue],
    );
    assert_eq!(starts.len(), JOBS as usize);
    let (most, at) = busiest_window(&starts, 1_000_000);
    let span = (starts[starts.len() - 1] - starts[0]) as f64 / 1e6;
    let rate = (starts.len() - 1) as f64 / span;
    eprintln!("{JOBS} starts in {span:.2} s: {rate:.1}/s; busiest second {most} starts");
    assert!(
        most <= 50,
        "{most} jobs started within one second from {at} µs after the epoch (rate_limit => 50)"
    );
    assert!(
        rate >= 35.0,
        "only {rate:.1} starts per second: the queue was held back below its limit"
    );
}

/// Debounce, sequentially: enqueues of one key within the quiet period return the same id
/// and replace the payload (the last wins); each pushes run_at back to now() + debounce, but
/// never past enqueued_at + debounce_max_wait; the job is not claimable before run_at and is
/// after it; once it started, an enqueue of the key makes a new job (which later enqueues
/// merge into), leaving the running one as it was.
#[test]
fn debounce_merges_enqueues_until_the_job_starts() {
    let (db, queue, mut c) = queue_db("flow_debounce", "debounce", "");
    let mut consumer = db.connect();

    let enq = |c: &mut Client, v: i64| -> (i64, f64) {
        let r = c
            .query_one(
                "SELECT job.enqueue($1, jsonb_build_object('n', $2::bigint), debounce_key => 'd',
                                    debounce => '3 seconds', debounce_max_wait => '4 seconds'),
                        extract(epoch FROM now())::float8",
                &[&queue, &v],
            )
            .unwrap_or_else(|e| panic!("debounced enqueue: {}", error_text(&e)));
        (r.get(0), r.get(1))
    };
    let job_row = |c: &mut Client, id: i64| -> (f64, f64, i64, String) {
        let r = c
            .query_one(
                "SELECT extract(epoch FROM run_at)::float8, extract(epoch FROM enqueued_at)::float8,
                        (payload->>'n')::bigint, state FROM job.jobs WHERE id = $1",
                &[&id],
            )
            .unwrap();
        (r.get(0), r.get(1), r.get(2), r.get(3))
    };
    let close = |a: f64, b: f64| (a - b).abs() < 0.002;

    let (id, t1) = enq(&mut c, 1);
    let (run_at, enqueued_at, n, state) = job_row(&mut c, id);
    assert!(
        close(run_at, t1 + 3.0),
        "first enqueue: run_at {run_at}, now {t1}"
    );
    assert_eq!((n, state.as_str()), (1, "scheduled"));
    assert!(close(enqueued_at, t1));

    thread::sleep(Duration::from_millis(300));
    let (id2, t2) = enq(&mut c, 2);
    assert_eq!(id2, id, "an enqueue within the quiet period made a new job");
    let (run_at, _, n, _) = job_row(&mut c, id);
    assert!(
        close(run_at, t2 + 3.0),
        "run_at {run_at} was not pushed back to {}",
        t2 + 3.0
    );
    assert_eq!(n, 2, "the payload is not the last one");

    thread::sleep(Duration::from_millis(1200));
    let (id3, t3) = enq(&mut c, 3);
    assert_eq!(id3, id);
    assert!(
        t3 + 3.0 > enqueued_at + 4.0,
        "the test's third enqueue came too soon to reach the cap"
    );
    let (run_at, _, n, _) = job_row(&mut c, id);
    assert!(
        close(run_at, enqueued_at + 4.0),
        "run_at {run_at} is not capped at enqueued_at + debounce_max_wait ({})",
        enqueued_at + 4.0
    );
    assert_eq!(n, 3);
    assert_eq!(job_count(&mut c, &queue), 1);

    // Not claimable before run_at; claimable after it.
    let deadline = run_at + 5.0;
    let claimed = loop {
        let got = claim(&mut consumer, &queue, "consumer", 5, None);
        let now = server_clock(&mut consumer);
        if !got.is_empty() {
            break got;
        }
        assert!(now < deadline, "the debounced job was never handed out");
        thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(ids(&claimed), [id]);
    assert_eq!(claimed[0].n, 3);
    let claimed_at = one::<f64>(
        &mut c,
        "SELECT extract(epoch FROM claimed_at)::float8 FROM job.jobs WHERE id = $1",
        &[&id],
    );
    assert!(
        claimed_at >= run_at,
        "claimed at {claimed_at}, before its run_at {run_at}"
    );

    // It started: a new enqueue makes a new job, and leaves the running one alone.
    let (new_id, _) = enq(&mut c, 4);
    assert_ne!(new_id, id, "an enqueue merged into a job already running");
    let (again, _) = enq(&mut c, 5);
    assert_eq!(
        again, new_id,
        "the next enqueue did not merge into the new job"
    );
    let (_, _, n, state) = job_row(&mut c, id);
    assert_eq!(
        (n, state.as_str()),
        (3, "running"),
        "the running job was changed"
    );
    let (_, _, n, state) = job_row(&mut c, new_id);
    assert_eq!((n, state.as_str()), (5, "scheduled"));
    assert!(complete(&mut consumer, &claimed[0]));
    assert_eq!(job_count(&mut c, &queue), 2);
}

/// Debounce under concurrency: 6 sessions enqueue the same debounce key at once, 30 times
/// with a new key each round: every round ends with exactly one job, whose id every enqueue
/// of the round returned.  Then a producer enqueues one key 300 times in quick succession
/// (debounce 20 ms, max wait 60 ms) while a consumer claims the jobs as they come due: no
/// enqueue changes a job once it was claimed (each finished job's payload is the one its
/// claim saw) and each job's payload is the last enqueue that returned its id.
#[test]
fn concurrent_debounced_enqueues_make_one_job_and_never_touch_a_started_one() {
    const SESSIONS: usize = 6;
    const ROUNDS: usize = 30;
    let (db, queue, mut c) = queue_db("flow_debounce_race", "debrace", "");
    let mut sessions: Vec<Client> = (0..SESSIONS).map(|_| db.connect()).collect();
    for round in 0..ROUNDS {
        let key = format!("round-{round}");
        let got = race(&mut sessions, |i, s| {
            (0..2)
                .map(|k| {
                    s.query_one(
                        "SELECT job.enqueue($1, jsonb_build_object('n', $2::bigint), debounce_key => $3,
                                            debounce => '1 hour')",
                        &[&queue, &((i * 2 + k) as i64), &key],
                    )
                    .unwrap_or_else(|e| panic!("enqueue: {}", error_text(&e)))
                    .get::<_, i64>(0)
                })
                .collect::<Vec<i64>>()
        });
        let distinct: HashSet<i64> = got.iter().flatten().copied().collect();
        assert_eq!(
            distinct.len(),
            1,
            "round {round}: the enqueues returned {distinct:?}"
        );
        let jobs = one::<i64>(
            &mut c,
            "SELECT count(*) FROM job.live_jobs WHERE queue = $1 AND debounce_key = $2",
            &[&queue, &key],
        );
        assert_eq!(jobs, 1, "round {round}: {jobs} jobs for one debounce key");
    }

    // A producer and a consumer racing on one key.
    let stream = unique_queue("debstream");
    create_queue(&mut c, &stream);
    const ENQUEUES: i64 = 300;
    let producer = {
        let mut p = db.connect();
        let stream = stream.clone();
        thread::spawn(move || {
            let mut rng = Rng::new(3);
            let mut returned = Vec::new();
            for n in 0..ENQUEUES {
                let id: i64 = p
                    .query_one(
                        "SELECT job.enqueue($1, jsonb_build_object('n', $2::bigint), debounce_key => 'stream',
                                            debounce => '20 milliseconds', debounce_max_wait => '60 milliseconds')",
                        &[&stream, &n],
                    )
                    .unwrap_or_else(|e| panic!("enqueue: {}", error_text(&e)))
                    .get(0);
                returned.push((n, id));
                thread::sleep(Duration::from_micros(rng.range(500, 4000)));
            }
            returned
        })
    };
    let mut consumer = db.connect();
    let mut seen_at_claim: HashMap<i64, i64> = HashMap::new();
    let started = Instant::now();
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the stream was not drained"
        );
        let got = claim(&mut consumer, &stream, "consumer", 10, None);
        if got.is_empty() {
            if producer.is_finished() && live(&mut consumer, &stream) == 0 {
                break;
            }
            thread::sleep(Duration::from_millis(1));
            continue;
        }
        // Hold the claim a little, so that enqueues come in while it runs.
        thread::sleep(Duration::from_millis(3));
        for j in &got {
            assert!(
                seen_at_claim.insert(j.id, j.n).is_none(),
                "job {} claimed twice",
                j.id
            );
            assert!(complete(&mut consumer, j));
        }
    }
    let returned = producer.join().expect("the producer panicked");
    let mut last_of: HashMap<i64, i64> = HashMap::new();
    for (n, id) in &returned {
        let e = last_of.entry(*id).or_insert(*n);
        *e = (*e).max(*n);
    }
    let finished: HashMap<i64, i64> = c
        .query(
            "SELECT id, (payload->>'n')::bigint FROM job.jobs WHERE queue = $1 AND state = 'completed'",
            &[&stream],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        job_count(&mut c, &stream),
        finished.len() as i64,
        "jobs not completed"
    );
    assert_eq!(
        finished.keys().collect::<HashSet<_>>(),
        last_of.keys().collect::<HashSet<_>>(),
        "the jobs differ from the ids the enqueues returned"
    );
    for (id, n) in &finished {
        assert_eq!(
            seen_at_claim[id], *n,
            "job {id} was claimed with payload {} but finished with {n}: an enqueue changed a started job",
            seen_at_claim[id]
        );
        assert_eq!(
            last_of[id], *n,
            "job {id}'s payload is {n}, but the last enqueue that returned its id was {}",
            last_of[id]
        );
    }
    eprintln!(
        "{ENQUEUES} debounced enqueues became {} jobs",
        finished.len()
    );
    assert!(
        finished.len() >= 2,
        "the stream never started a job while enqueues went on"
    );
}

/// Singleton keys, one session at a time: a second enqueue while the job waits returns its id
/// and replaces its payload; once it runs, an enqueue makes exactly one more job (later ones
/// merge into it), which no claim hands out while the first runs (other jobs still come out);
/// once the first completes, it is claimable.  A job that failed and waits out its retry
/// keeps the key: the waiting job stays unclaimable through the backoff and the retry, and
/// the retry comes first.
#[test]
fn a_singleton_key_has_one_waiting_and_one_running_job() {
    let (db, queue, mut c) = queue_db(
        "flow_singleton",
        "single",
        ", backoff_base => '1 second', backoff_max => '1 second', jitter => 0",
    );
    let mut w = db.connect();
    let enq = |c: &mut Client, key: &str, n: i64| -> i64 {
        c.query_one(
            "SELECT job.enqueue($1, jsonb_build_object('n', $2::bigint), singleton_key => $3)",
            &[&queue, &n, &key],
        )
        .unwrap_or_else(|e| panic!("singleton enqueue: {}", error_text(&e)))
        .get(0)
    };
    let payload_n = |c: &mut Client, id: i64| -> i64 {
        one::<i64>(
            c,
            "SELECT (payload->>'n')::bigint FROM job.jobs WHERE id = $1",
            &[&id],
        )
    };

    let s1 = enq(&mut c, "S", 1);
    assert_eq!(
        enq(&mut c, "S", 2),
        s1,
        "a second enqueue while the job waits made a new job"
    );
    assert_eq!(payload_n(&mut c, s1), 2);
    assert_eq!(job_count(&mut c, &queue), 1);

    let running = claim(&mut w, &queue, "w", 10, None);
    assert_eq!(ids(&running), [s1]);
    assert_eq!(running[0].n, 2);
    let s2 = enq(&mut c, "S", 3);
    assert_ne!(s2, s1, "an enqueue merged into the running job");
    assert_eq!(enq(&mut c, "S", 4), s2);
    assert_eq!(
        payload_n(&mut c, s1),
        2,
        "the running job's payload changed"
    );
    assert_eq!(payload_n(&mut c, s2), 4);
    assert_eq!(job_count(&mut c, &queue), 2);

    let plain = enqueue(&mut c, &queue, 99);
    let mut other = db.connect();
    let got = claim(&mut other, &queue, "other", 10, None);
    assert_eq!(ids(&got), [plain], "a claim while the singleton runs");
    assert!(complete(&mut other, &got[0]));
    assert!(claim(&mut other, &queue, "other", 10, None).is_empty());
    assert!(complete(&mut w, &running[0]));
    let got = claim(&mut other, &queue, "other", 10, None);
    assert_eq!(
        ids(&got),
        [s2],
        "the waiting singleton after the running one completed"
    );
    assert_eq!(got[0].n, 4);
    assert!(complete(&mut other, &got[0]));

    // A failed attempt waiting out its backoff keeps the key.
    let r1 = enq(&mut c, "R", 1);
    let first = claim(&mut w, &queue, "w", 10, None);
    assert_eq!(ids(&first), [r1]);
    let r2 = enq(&mut c, "R", 2);
    assert_ne!(r2, r1);
    let state: String = one(
        &mut w,
        "SELECT job.fail($1, 'try again', token => $2::text::uuid)",
        &[&r1, &first[0].token],
    );
    assert_eq!(state, "scheduled");
    let retry_at = one::<f64>(
        &mut c,
        "SELECT extract(epoch FROM run_at)::float8 FROM job.jobs WHERE id = $1",
        &[&r1],
    );
    assert_eq!(
        enq(&mut c, "R", 3),
        r2,
        "an enqueue during the retry's backoff did not merge into the waiting job"
    );
    assert_eq!(
        payload_n(&mut c, r1),
        1,
        "the retrying job's payload changed"
    );
    let started = Instant::now();
    let retry = loop {
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "job {r1}'s retry was not handed out within 8 s of its failure (backoff 1 s); live: {}",
            live_summary(&mut c, &queue)
        );
        let got = claim(&mut other, &queue, "other", 10, None);
        if !got.is_empty() {
            break got;
        }
        thread::sleep(Duration::from_millis(25));
    };
    assert_eq!(
        retry.iter().map(|j| (j.id, j.attempt)).collect::<Vec<_>>(),
        [(r1, 2)],
        "the first claim after the failure (job {r2} must wait for {r1}'s retry)"
    );
    let claimed_at = one::<f64>(
        &mut c,
        "SELECT extract(epoch FROM claimed_at)::float8 FROM job.jobs WHERE id = $1",
        &[&r1],
    );
    assert!(
        claimed_at >= retry_at,
        "the retry started before its backoff ended"
    );
    assert!(
        claim(&mut w, &queue, "w", 10, None).is_empty(),
        "a claim while the retry runs"
    );
    assert!(complete(&mut other, &retry[0]));
    let got = claim(&mut w, &queue, "w", 10, None);
    assert_eq!(ids(&got), [r2]);
    assert_eq!(got[0].n, 3);
    assert!(complete(&mut w, &got[0]));
    assert_eq!(live(&mut c, &queue), 0);
}

/// Singleton keys under concurrency, 20 rounds with a new key each: 6 sessions enqueue the
/// key at once (twice each) and end with exactly one waiting job, whose id they all got; once
/// it is claimed, 6 sessions enqueue again at once and end with exactly one more job, which
/// no claim hands out until the running one completes.
#[test]
fn concurrent_singleton_enqueues_make_one_waiting_job() {
    const SESSIONS: usize = 6;
    const ROUNDS: usize = 20;
    let (db, queue, mut c) = queue_db("flow_singleton_race", "singrace", "");
    let mut w = db.connect();
    let mut sessions: Vec<Client> = (0..SESSIONS).map(|_| db.connect()).collect();
    let enqueue_all = |sessions: &mut [Client], key: &str| -> HashSet<i64> {
        race(sessions, |i, s| {
            (0..2)
                .map(|k| {
                    s.query_one(
                        "SELECT job.enqueue($1, jsonb_build_object('n', $2::bigint), singleton_key => $3)",
                        &[&queue, &((i * 2 + k) as i64), &key],
                    )
                    .unwrap_or_else(|e| panic!("enqueue: {}", error_text(&e)))
                    .get::<_, i64>(0)
                })
                .collect::<Vec<i64>>()
        })
        .into_iter()
        .flatten()
        .collect()
    };
    let count_key = |c: &mut Client, key: &str| -> i64 {
        one::<i64>(
            c,
            "SELECT count(*) FROM job.live_jobs WHERE queue = $1 AND singleton_key = $2",
            &[&queue, &key],
        )
    };
    for round in 0..ROUNDS {
        let key = format!("s{round}");
        let first = enqueue_all(&mut sessions, &key);
        assert_eq!(first.len(), 1, "round {round}: enqueues returned {first:?}");
        assert_eq!(count_key(&mut c, &key), 1, "round {round}: jobs of the key");
        let first = *first.iter().next().unwrap();
        let running = claim(&mut w, &queue, "w", 10, None);
        assert_eq!(ids(&running), [first], "round {round}");

        let second = enqueue_all(&mut sessions, &key);
        assert_eq!(
            second.len(),
            1,
            "round {round}, key running: enqueues returned {second:?}"
        );
        let second = *second.iter().next().unwrap();
        assert_ne!(
            second, first,
            "round {round}: an enqueue merged into the running job"
        );
        assert_eq!(count_key(&mut c, &key), 2, "round {round}: jobs of the key");
        assert!(
            claim(&mut c, &queue, "c", 10, None).is_empty(),
            "round {round}: the second job was handed out while the first ran"
        );
        assert!(complete(&mut w, &running[0]));
        let next = claim(&mut w, &queue, "w", 10, None);
        assert_eq!(ids(&next), [second], "round {round}");
        assert!(complete(&mut w, &next[0]));
    }
    assert_eq!(live(&mut c, &queue), 0);
    assert_eq!(queue_stats(&mut c, &queue).completed, 2 * ROUNDS as i64);
}

/// Order keys: 30 jobs of key A and 30 of B (interleaved), 8 workers with batches of 1 to 3;
/// A's 10th and B's 20th job fail their first attempt (100 ms backoff).  Per key, the
/// workers' probes show the jobs strictly one at a time (each starts after the previous one
/// ended) in enqueue order, the failed job's retry before the next job; the two keys did run
/// at the same time.
#[test]
fn order_keys_run_one_at_a_time_in_order_and_a_retry_holds_its_place() {
    const PER_KEY: i64 = 30;
    let (db, queue, mut c) = queue_db(
        "flow_order",
        "order",
        ", backoff_base => '100 milliseconds', backoff_max => '100 milliseconds', jitter => 0",
    );
    let keys = vec!["A".to_owned(), "B".to_owned()];
    install_probes(&mut c, &keys);
    let mut expected: HashMap<&str, Vec<(i64, i32)>> = HashMap::new();
    for i in 0..PER_KEY {
        for key in ["A", "B"] {
            let fail = (key == "A" && i == 9) || (key == "B" && i == 19);
            let id: i64 = c
                .query_one(
                    "SELECT job.enqueue($1, jsonb_build_object('n', $2::bigint, 'key', $3::text, 'fail', $4::boolean),
                                        order_key => $3)",
                    &[&queue, &i, &key, &fail],
                )
                .unwrap_or_else(|e| panic!("enqueue: {}", error_text(&e)))
                .get(0);
            let runs = expected.entry(key).or_default();
            runs.push((id, 1));
            if fail {
                runs.push((id, 2));
            }
        }
    }

    let done = probe_workers(&db, &queue, 8, 3);
    assert_eq!(done.len(), 2 * PER_KEY as usize + 2);
    let maxima = probe_maxima(&mut c);
    eprintln!("most at once: {maxima:?}");
    assert!(
        maxima["A"] <= 1 && maxima["B"] <= 1,
        "two jobs of one order key ran at once: {maxima:?}"
    );
    assert_eq!(maxima[""], 2, "the two keys never ran at the same time");

    for key in ["A", "B"] {
        let rows = c
            .query(
                "SELECT job_id, attempt, worker, extract(epoch FROM started)::float8, extract(epoch FROM ended)::float8
                   FROM probe WHERE key = $1 ORDER BY started",
                &[&key],
            )
            .unwrap();
        let runs: Vec<(i64, i32)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        assert_eq!(
            runs, expected[key],
            "key {key}: the (job, attempt) runs in the order they started"
        );
        for pair in rows.windows(2) {
            let (prev_id, prev_end): (i64, f64) = (pair[0].get(0), pair[0].get(4));
            let (next_id, next_start): (i64, f64) = (pair[1].get(0), pair[1].get(3));
            assert!(
                next_start > prev_end,
                "key {key}: job {next_id} started {:.3} ms before job {prev_id} ended",
                (prev_end - next_start) * 1000.0
            );
        }
    }
    let stats = queue_stats(&mut c, &queue);
    assert_eq!((stats.completed, stats.dead), (2 * PER_KEY, 0));
}

/// A fair queue: key A's 10,000 jobs are enqueued (enqueue_many) before key B's 100; one
/// worker taking one job at a time has finished all of B's within 250 jobs (round-robin
/// would take 200), and A was not starved meanwhile.
#[test]
fn a_fair_queue_serves_a_small_key_behind_a_large_one() {
    let (db, queue, mut c) = queue_db("flow_fair", "fair", ", fair => true");
    for (key, count) in [("A", 10_000i64), ("B", 100)] {
        let n = c
            .query(
                "SELECT job.enqueue_many($1, ARRAY(SELECT jsonb_build_object('n', g, 'key', $2::text)
                                                     FROM generate_series(1, $3::bigint) g ORDER BY g),
                                         concurrency_key => $2)",
                &[&queue, &key, &count],
            )
            .unwrap_or_else(|e| panic!("enqueue_many: {}", error_text(&e)))
            .len();
        assert_eq!(n as i64, count);
    }
    let mut w = db.connect();
    let (mut processed, mut a_done, mut b_done) = (0, 0, 0);
    let mut b_last = 0;
    while b_done < 100 {
        assert!(
            processed < 1000,
            "B had {b_done} of 100 jobs done after {processed} jobs"
        );
        let got = claim(&mut w, &queue, "w", 1, None);
        assert_eq!(
            got.len(),
            1,
            "a claim of the fair queue came back with {got:?}"
        );
        let job = &got[0];
        processed += 1;
        match job.key.as_str() {
            "A" => a_done += 1,
            "B" => {
                b_done += 1;
                assert!(
                    job.n > b_last,
                    "B's job {} came after its job {b_last}",
                    job.n
                );
                b_last = job.n;
            }
            other => panic!("job of unknown key {other:?}"),
        }
        assert!(complete(&mut w, job));
    }
    eprintln!("B's 100 jobs done after {processed} jobs ({a_done} of A's)");
    assert!(
        processed <= 250,
        "B's 100 jobs took {processed} jobs to finish (fair => true)"
    );
    assert!(
        a_done >= 90,
        "A got only {a_done} turns while B ran its 100 jobs"
    );
}

/// key_concurrency => 1: a worker claims a job of key k with a 1 s lease and vanishes (its
/// session closes).  Another worker's claims meanwhile hand out a job of another key but no
/// job of k; once the lease has run out (never before), k is free again and one job of k is
/// handed out: k's second job, or the vanished worker's job if the scheduler took it back
/// first (a job taken back keeps its place, ahead of k's second).  The other one runs once
/// that one completes, and the lost job runs again as its second attempt.
#[test]
fn a_lost_lease_frees_its_key_only_when_it_expires() {
    let (db, queue, mut c) = queue_db("flow_lease", "keylease", ", key_concurrency => 1");
    let enq = |c: &mut Client, key: &str| -> i64 {
        c.query_one(
            "SELECT job.enqueue($1, jsonb_build_object('key', $2::text), concurrency_key => $2)",
            &[&queue, &key],
        )
        .unwrap()
        .get(0)
    };
    let k1 = enq(&mut c, "k");
    let k2 = enq(&mut c, "k");
    let other = enq(&mut c, "other");

    let mut vanishing = db.connect();
    let held = claim(&mut vanishing, &queue, "vanishing", 1, Some("1 second"));
    assert_eq!(ids(&held), [k1]);
    drop(vanishing);
    let expires = one::<f64>(
        &mut c,
        "SELECT extract(epoch FROM lease_expires_at)::float8 FROM job.jobs WHERE id = $1",
        &[&k1],
    );

    let mut w = db.connect();
    let got = claim(&mut w, &queue, "w", 1, Some("1 minute"));
    assert_eq!(
        ids(&got),
        [other],
        "a claim skips the saturated key and takes another key's job"
    );
    assert!(complete(&mut w, &got[0]));
    let (mut empty_polls, started) = (0, Instant::now());
    let second = loop {
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "k's second job never came"
        );
        let got = claim(&mut w, &queue, "w", 5, Some("1 minute"));
        if !got.is_empty() {
            break got;
        }
        empty_polls += 1;
        thread::sleep(Duration::from_millis(20));
    };
    assert!(empty_polls > 0, "the first poll already got a job of k");
    assert_eq!(second.len(), 1, "one job of k at a time: {second:?}");
    let (first_of_k, then) = match (second[0].id, second[0].attempt) {
        (id, 1) if id == k2 => (k2, k1),
        (id, 2) if id == k1 => (k1, k2),
        other => panic!("the claim after the lease ran out handed out {other:?}"),
    };
    let claimed_at = one::<f64>(
        &mut c,
        "SELECT extract(epoch FROM claimed_at)::float8 FROM job.jobs WHERE id = $1",
        &[&first_of_k],
    );
    assert!(
        claimed_at >= expires,
        "job {first_of_k} started {:.3} s before job {k1}'s lease ran out",
        expires - claimed_at
    );
    assert!(
        claimed_at < expires + 5.0,
        "job {first_of_k} started {:.1} s after the lease ran out",
        claimed_at - expires
    );

    // The lost job is taken back (by the scheduler) if it was not already.
    let started = Instant::now();
    while job_state(&mut c, k1).as_deref() == Some("running") && first_of_k != k1 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "job {k1} was never taken back"
        );
        thread::sleep(Duration::from_millis(50));
    }
    assert!(
        claim(&mut w, &queue, "w", 5, None).is_empty(),
        "two jobs of k at once"
    );
    assert!(complete(&mut w, &second[0]));
    let again = claim(&mut w, &queue, "w", 5, None);
    let attempt_of_then = if then == k1 { 2 } else { 1 };
    assert_eq!(
        again.iter().map(|j| (j.id, j.attempt)).collect::<Vec<_>>(),
        [(then, attempt_of_then)]
    );
    assert!(complete(&mut w, &again[0]));
    assert_eq!(live(&mut c, &queue), 0);
}

/// Waits (polling `every`, up to `timeout`) for a claim of `queue` to hand something out.
fn poll_claim(
    c: &mut Client,
    queue: &str,
    batch: i32,
    every: Duration,
    timeout: Duration,
) -> Vec<Job> {
    let started = Instant::now();
    loop {
        let got = claim(c, queue, "poller", batch, None);
        if !got.is_empty() {
            return got;
        }
        assert!(
            started.elapsed() < timeout,
            "nothing was handed out within {timeout:?}"
        );
        thread::sleep(every);
    }
}

/// `job.rate_limit_pause(queue, key, until => now() + hold)` (NULL hold: lifts it); returns
/// `until` in seconds since the epoch (0 when lifted).
fn hold(c: &mut Client, queue: &str, key: Option<&str>, hold: Option<&str>) -> f64 {
    c.query_one(
        "SELECT job.rate_limit_pause($1, $2, now() + $3::text::interval),
                coalesce(extract(epoch FROM now() + $3::text::interval)::float8, 0)",
        &[&queue, &key, &hold],
    )
    .unwrap_or_else(|e| panic!("rate_limit_pause: {}", error_text(&e)))
    .get(1)
}

/// Holds of a key: its jobs wait while other keys' (and unkeyed) jobs run; the hold shows in
/// job.rate_limit_holds and job.queue_settings; lifting it (until NULL) lets them run at once;
/// a hold that runs out lets them run once it has (not before).
#[test]
fn a_key_hold_keeps_only_that_key_waiting() {
    let (db, queue, mut c) = queue_db("flow_key_hold", "keyhold", ", key_concurrency => 10");
    let mut by_key: HashMap<&str, Vec<i64>> = HashMap::new();
    for key in ["A", "B", "A", "B", "A", "B"] {
        let id: i64 = one(
            &mut c,
            "SELECT job.enqueue($1, jsonb_build_object('key', $2::text), concurrency_key => $2)",
            &[&queue, &key],
        );
        by_key.entry(key).or_default().push(id);
    }
    let plain = enqueue(&mut c, &queue, 1);
    hold(&mut c, &queue, Some("A"), Some("1 hour"));
    let holds = c
        .query(
            "SELECT key, held_until > now() + interval '59 minutes' FROM job.rate_limit_holds WHERE queue = $1",
            &[&queue],
        )
        .unwrap();
    assert_eq!(
        holds
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect::<Vec<(Option<String>, bool)>>(),
        [(Some("A".to_owned()), true)]
    );
    let (held_until, keys_held): (Option<f64>, i64) = one_row(&mut c, "SELECT extract(epoch FROM held_until)::float8, keys_held FROM job.queue_settings WHERE queue = $1", &[&queue]);
    assert_eq!((held_until, keys_held), (None, 1));

    let mut w = db.connect();
    let got = claim(&mut w, &queue, "w", 20, None);
    let mut expected: Vec<i64> = by_key["B"].clone();
    expected.push(plain);
    let mut got_ids = ids(&got);
    got_ids.sort();
    expected.sort();
    assert_eq!(
        got_ids, expected,
        "with A held: B's jobs and the unkeyed one"
    );
    assert_eq!(complete_many(&mut w, &got_ids), 4);
    assert!(
        claim(&mut w, &queue, "w", 20, None).is_empty(),
        "A's jobs came out during the hold"
    );

    hold(&mut c, &queue, Some("A"), None);
    assert_eq!(
        one::<i64>(
            &mut c,
            "SELECT count(*) FROM job.rate_limit_holds WHERE queue = $1",
            &[&queue]
        ),
        0
    );
    let got = claim(&mut w, &queue, "w", 20, None);
    let mut got_ids = ids(&got);
    got_ids.sort();
    assert_eq!(got_ids, by_key["A"], "A's jobs after the hold was lifted");
    assert_eq!(complete_many(&mut w, &got_ids), 3);

    // A hold that runs out by itself.
    let until = hold(&mut c, &queue, Some("A"), Some("1500 milliseconds"));
    let a = c
        .query_one(
            "SELECT job.enqueue($1, '{\"key\": \"A\"}', concurrency_key => 'A')",
            &[&queue],
        )
        .unwrap()
        .get::<_, i64>(0);
    let b = c
        .query_one(
            "SELECT job.enqueue($1, '{\"key\": \"B\"}', concurrency_key => 'B')",
            &[&queue],
        )
        .unwrap()
        .get::<_, i64>(0);
    let got = claim(&mut w, &queue, "w", 20, None);
    assert_eq!(ids(&got), [b]);
    assert!(complete(&mut w, &got[0]));
    let got = poll_claim(
        &mut w,
        &queue,
        20,
        Duration::from_millis(25),
        Duration::from_secs(6),
    );
    assert_eq!(ids(&got), [a]);
    let claimed_at = one::<f64>(
        &mut c,
        "SELECT extract(epoch FROM claimed_at)::float8 FROM job.jobs WHERE id = $1",
        &[&a],
    );
    assert!(
        claimed_at >= until,
        "A's job started {:.3} s before its hold ended",
        until - claimed_at
    );
    assert!(complete(&mut w, &got[0]));
}

/// A hold of the whole queue (2 s) stops every claim, keyed jobs or not, until it ends; a
/// worker that LISTENs is notified when it ends (nobody enqueues anything), and then gets the
/// job; on another held queue, a worker that polls is told by job.next_due when the hold
/// ends, and gets the job then.
#[test]
fn a_queue_hold_stops_all_claims_and_its_end_wakes_the_workers() {
    let db = TestDb::create("flow_queue_hold");
    let mut c = db.connect();

    // The LISTENing worker.
    let queue = unique_queue("qhold");
    execute(
        &mut c,
        "SELECT job.create_queue($1, key_concurrency => 2)",
        &[&queue],
    );
    let until = hold(&mut c, &queue, None, Some("2 seconds"));
    let mut jobs: Vec<i64> = ["A", "B"]
        .iter()
        .map(|key| {
            c.query_one(
                "SELECT job.enqueue($1, jsonb_build_object('key', $2::text), concurrency_key => $2)",
                &[&queue, key],
            )
            .unwrap()
            .get(0)
        })
        .collect();
    jobs.push(enqueue(&mut c, &queue, 1));
    let held: Option<f64> = one(
        &mut c,
        "SELECT extract(epoch FROM held_until)::float8 FROM job.queue_settings WHERE queue = $1",
        &[&queue],
    );
    assert!(
        held.is_some_and(|h| (h - until).abs() < 0.002),
        "queue_settings.held_until {held:?}"
    );

    let mut listener = db.connect();
    listen(&mut listener);
    assert!(
        claim(&mut listener, &queue, "listener", 10, None).is_empty(),
        "a claim during the hold"
    );
    let qid = queue_id(&mut c, &queue);
    drain_notifications(&mut listener);
    let mut other = db.connect();
    for _ in 0..5 {
        assert!(
            claim(&mut other, &queue, "other", 10, None).is_empty(),
            "a claim during the hold"
        );
        thread::sleep(Duration::from_millis(100));
    }

    // The polling worker, meanwhile, on a queue of its own.
    let polled = unique_queue("phold");
    create_queue(&mut c, &polled);
    let poll_until = hold(&mut c, &polled, None, Some("2 seconds"));
    let polled_job = enqueue(&mut c, &polled, 1);
    let poller = {
        let mut p = db.connect();
        let polled = polled.clone();
        thread::spawn(move || {
            assert!(
                claim(&mut p, &polled, "poller", 1, None).is_empty(),
                "a claim during the hold"
            );
            let (due, now): (f64, f64) = one_row(&mut p, "SELECT extract(epoch FROM job.next_due($1))::float8, extract(epoch FROM now())::float8", &[&polled]);
            thread::sleep(Duration::from_secs_f64((due - now).max(0.0) + 0.01));
            (due, claim(&mut p, &polled, "poller", 1, None))
        })
    };

    // Woken (nobody enqueues); a wake-up before the hold's end would find nothing, so the
    // worker goes back to waiting, as a real one would.
    let waited = Instant::now();
    let mut early_wakeups = 0;
    let got = loop {
        let n = next_notification(&mut listener, Duration::from_secs(6))
            .expect("no wake-up within 6 s: the hold's end woke nobody");
        if n.payload() != qid {
            continue;
        }
        assert_eq!(n.channel(), CHANNEL);
        let got = claim(&mut listener, &queue, "listener", 10, None);
        if !got.is_empty() {
            break got;
        }
        early_wakeups += 1;
        assert!(
            waited.elapsed() < Duration::from_secs(8),
            "woken {early_wakeups} times, never with work"
        );
    };
    let at = server_clock(&mut listener);
    eprintln!(
        "woken {:?} after listening, {:.3} s after the hold's end ({early_wakeups} early wake-ups)",
        waited.elapsed(),
        at - until
    );
    let claimed_at = one::<f64>(
        &mut c,
        "SELECT extract(epoch FROM min(claimed_at))::float8 FROM job.jobs WHERE id = ANY ($1)",
        &[&jobs],
    );
    assert!(
        claimed_at >= until,
        "claimed {:.3} s before the hold ended",
        until - claimed_at
    );
    assert!(
        claimed_at < until + 5.0,
        "claimed {:.1} s after the hold ended",
        claimed_at - until
    );
    let mut got_ids = ids(&got);
    got_ids.sort();
    assert_eq!(got_ids, jobs, "the claim after the wake-up");
    assert_eq!(complete_many(&mut listener, &got_ids), 3);

    let (due, got) = poller.join().expect("the poller panicked");
    assert!(
        (due - poll_until).abs() < 0.05,
        "next_due said {due}, the hold ends at {poll_until}"
    );
    assert_eq!(
        ids(&got),
        [polled_job],
        "the poller's claim once next_due had come"
    );
}

/// The new parameters' checks, each refusal changing nothing: a concurrency_key on a queue
/// without a per-key limit or fairness (22023, enqueue and enqueue_many); create_queue with a
/// limit of 0 or less, or a rate period without its limit (22023, the queue's settings
/// unchanged, a new queue not made); debounce_key without debounce (22004,
/// null_value_not_allowed); debounce without debounce_key, debounce_max_wait below debounce,
/// a negative debounce, a debounced job with a delay, two of order, singleton and debounce
/// keys, an idempotency key with a singleton key (22023).
#[test]
fn flow_parameters_are_checked_and_refusals_change_nothing() {
    let (_db, queue, mut c) = queue_db("flow_checks", "checks", "");

    let refusals: [(&str, SqlState); 9] = [
        (
            "SELECT job.enqueue($1, '{}', concurrency_key => 'k')",
            SqlState::INVALID_PARAMETER_VALUE,
        ),
        (
            "SELECT job.enqueue_many($1, ARRAY['{}'::jsonb, '{}'], concurrency_key => 'k')",
            SqlState::INVALID_PARAMETER_VALUE,
        ),
        (
            "SELECT job.enqueue($1, '{}', debounce_key => 'd')",
            SqlState::NULL_VALUE_NOT_ALLOWED,
        ),
        (
            "SELECT job.enqueue($1, '{}', debounce => '1 second')",
            SqlState::INVALID_PARAMETER_VALUE,
        ),
        (
            "SELECT job.enqueue($1, '{}', debounce_key => 'd', debounce => '2 seconds', debounce_max_wait => '1 second')",
            SqlState::INVALID_PARAMETER_VALUE,
        ),
        (
            "SELECT job.enqueue($1, '{}', debounce_key => 'd', debounce => '1 second', delay => '1 minute')",
            SqlState::INVALID_PARAMETER_VALUE,
        ),
        (
            "SELECT job.enqueue($1, '{}', order_key => 'o', singleton_key => 's')",
            SqlState::INVALID_PARAMETER_VALUE,
        ),
        (
            "SELECT job.enqueue($1, '{}', singleton_key => 's', idempotency_key => 'i')",
            SqlState::INVALID_PARAMETER_VALUE,
        ),
        (
            "SELECT job.enqueue($1, '{}', debounce_key => 'd', debounce => '-1 second')",
            SqlState::INVALID_PARAMETER_VALUE,
        ),
    ];
    for (sql, want) in &refusals {
        let got = sqlstate(c.query(*sql, &[&queue]).map(|r| r.len()), sql);
        assert_eq!(&got, want, "{sql}: SQLSTATE {}", got.code());
        assert_eq!(job_count(&mut c, &queue), 0, "{sql} enqueued something");
    }
    // debounce_key without debounce: null_value_not_allowed, as the checks raise.
    assert_eq!(SqlState::NULL_VALUE_NOT_ALLOWED.code(), "22004");

    // Limits of 0 or less, and a period without its limit: refused, the queue unchanged.
    let limited = unique_queue("limits");
    execute(
        &mut c,
        "SELECT job.create_queue($1, concurrency => 2, key_concurrency => 1, rate_limit => 10)",
        &[&limited],
    );
    let settings = |c: &mut Client| -> String {
        c.query_one(
            "SELECT row(concurrency, key_concurrency, rate_limit, rate_period, key_rate_limit, key_rate_period,
                        fair, max_retries, updated_at)::text
               FROM job.queue_settings WHERE queue = $1",
            &[&limited],
        )
        .unwrap()
        .get(0)
    };
    let before = settings(&mut c);
    for args in [
        "concurrency => 0",
        "concurrency => -1",
        "key_concurrency => 0",
        "rate_limit => 0",
        "key_rate_limit => -5",
        // (The queue has a rate_limit: a new rate_period alone changes it; 0 is refused.)
        "rate_period => '0 seconds'",
        "key_rate_period => '1 second'",
        "rate_limit => 5, rate_period => '0 seconds'",
        "max_retries => 3, concurrency => 0",
    ] {
        let sql = format!("SELECT job.create_queue($1, {args})");
        let got = sqlstate(c.execute(sql.as_str(), &[&limited]), &sql);
        assert_eq!(
            got,
            SqlState::INVALID_PARAMETER_VALUE,
            "{sql}: SQLSTATE {}",
            got.code()
        );
        assert_eq!(settings(&mut c), before, "{sql} changed the queue");
    }
    // A new queue refused is not made.
    let never = unique_queue("never");
    let got = sqlstate(
        c.execute("SELECT job.create_queue($1, concurrency => 0)", &[&never]),
        "create_queue(concurrency => 0)",
    );
    assert_eq!(got, SqlState::INVALID_PARAMETER_VALUE);
    assert_eq!(
        one::<i64>(
            &mut c,
            "SELECT count(*) FROM job.queue_settings WHERE queue = $1",
            &[&never]
        ),
        0
    );
    // The same concurrency_key is accepted once the queue has a per-key limit.
    execute(
        &mut c,
        "SELECT job.create_queue($1, key_concurrency => 1)",
        &[&queue],
    );
    execute(
        &mut c,
        "SELECT job.enqueue($1, '{}', concurrency_key => 'k')",
        &[&queue],
    );
    assert_eq!(job_count(&mut c, &queue), 1);
}

/// job.next_due for a poller, when every waiting job is held back by a running job: with
/// key_concurrency => 1 (the control), and with an order key and a singleton key, next_due
/// is not now (a poller would spin) but a later time, no later than the running job's lease
/// expiry (when it may be taken back).
#[test]
fn next_due_is_not_now_while_every_waiting_job_is_held_by_its_key() {
    let db = TestDb::create("flow_next_due");
    let mut c = db.connect();
    let mut w = db.connect();
    for (setup, keys) in [
        ("key_concurrency => 1", "concurrency_key"),
        ("max_retries => 5", "order_key"),
        ("max_retries => 5", "singleton_key"),
    ] {
        let queue = unique_queue("nextdue");
        execute(
            &mut c,
            &format!("SELECT job.create_queue($1, {setup})"),
            &[&queue],
        );
        let enq = format!("SELECT job.enqueue($1, '{{}}', {keys} => 'k')");
        let first: i64 = c.query_one(enq.as_str(), &[&queue]).unwrap().get(0);
        let running = claim(&mut w, &queue, "w", 1, Some("30 seconds"));
        assert_eq!(ids(&running), [first]);
        let second: i64 = c.query_one(enq.as_str(), &[&queue]).unwrap().get(0);
        assert_ne!(second, first);
        assert!(
            claim(&mut w, &queue, "w", 5, None).is_empty(),
            "{keys}: two jobs of k at once"
        );
        let r = c
            .query_one(
                "SELECT extract(epoch FROM job.next_due($1) - now())::float8,
                        extract(epoch FROM lease_expires_at - now())::float8
                   FROM job.jobs WHERE id = $2",
                &[&queue, &first],
            )
            .unwrap();
        let (due_in, lease_in): (Option<f64>, f64) = (r.get(0), r.get(1));
        let due_in =
            due_in.unwrap_or_else(|| panic!("{keys}: next_due is NULL with a job waiting"));
        assert!(
            due_in > 0.0 && due_in <= lease_in + 0.001,
            "{keys}: next_due is now + {due_in:.3} s while nothing can start before the running \
             job finishes or its lease runs out (in {lease_in:.3} s)"
        );
        assert!(complete(&mut w, &running[0]));
        let got = claim(&mut w, &queue, "w", 5, None);
        assert_eq!(
            ids(&got),
            [second],
            "{keys}: the held job once the key is free"
        );
    }
}

/// A worker told "limit reached" is woken when a slot frees: on a queue with concurrency 1,
/// a LISTENing worker's claim comes back empty while another holds the slot; when that job
/// completes (nobody enqueues anything), the worker is notified, and its next claim gets the
/// waiting job.  The same for a key at its key_concurrency.
#[test]
fn a_worker_refused_by_a_limit_is_woken_when_a_slot_frees() {
    let db = TestDb::create("flow_slot_wakeup");
    let mut c = db.connect();
    for (settings, key) in [
        ("concurrency => 1", None),
        ("key_concurrency => 1", Some("k")),
    ] {
        let queue = unique_queue("slotwake");
        execute(
            &mut c,
            &format!("SELECT job.create_queue($1, {settings})"),
            &[&queue],
        );
        for _ in 0..2 {
            execute(
                &mut c,
                "SELECT job.enqueue($1, '{}', concurrency_key => $2)",
                &[&queue, &key],
            );
        }
        let held = claim(&mut c, &queue, "holder", 1, None);
        assert_eq!(held.len(), 1, "{settings}");

        let mut listener = db.connect();
        listen(&mut listener);
        assert!(
            claim(&mut listener, &queue, "listener", 1, None).is_empty(),
            "{settings}: the slot is taken"
        );
        drain_notifications(&mut listener);
        assert!(complete(&mut c, &held[0]), "{settings}");
        let woken = next_notification(&mut listener, Duration::from_secs(5));
        assert_eq!(
            woken.map(|n| n.payload().to_owned()),
            Some(queue_id(&mut c, &queue)),
            "{settings}: no wake-up when the slot freed"
        );
        assert_eq!(
            claim(&mut listener, &queue, "listener", 1, None).len(),
            1,
            "{settings}: the woken worker gets the job"
        );
    }
}
