//! The SQL API through PgBouncer in transaction pooling mode (Debian 12's pgbouncer 1.18),
//! started by these tests in front of the cluster under test (`PGJQ_TEST_URL`).
//!
//! What transaction pooling changes for a client: consecutive transactions of one client
//! connection may run on different server connections, and a server connection serves many
//! clients.  So (1) session state (`SET`, `LISTEN`, prepared statements) does not follow the
//! client, and (2) anything that must hold across calls has to live in the tables.  The tests
//! show that pg_jobqueue's API needs nothing of the session: jobs dequeued on one server
//! connection are completed, with their lease token, on another, each exactly once.
//!
//! **Prepared statements and the `postgres` crate.**  `Client::query`/`execute`/`query_one`
//! with a `&str` prepare a *named* statement first (Parse "sN" + Describe + Sync: one round
//! trip), then run it (Bind "sN" + Execute + Sync: another), then close it (Close "sN" + Sync).
//! Outside a transaction every Sync ends pgbouncer's transaction, so the Bind may reach a
//! server connection that never saw the Parse: `26000 prepared statement "sN" does not exist`
//! (or, when a statement left behind on a server connection meets a client process whose
//! counter also starts at s0, `42P05 prepared statement "s0" already exists`).
//! PgBouncer below 1.21 does not track protocol-level prepared statements at all (1.21+ can,
//! with `max_prepared_statements`).  What works through pgbouncer 1.18:
//! - `Client::query_typed` (postgres 0.19.8+; `query_typed_one` 0.19.13+): Parse, Bind,
//!   Describe, Execute and Sync of an *unnamed* statement in one message batch, so one server
//!   connection sees all of it; the caller gives the parameter types (`Type::TEXT` and a cast
//!   in the SQL, here).  Its result types must be built-in: an unknown OID makes the crate
//!   look the type up with a named statement of its own (its cached type-info query), which
//!   breaks the same way.
//! - `query`/`execute` with `&str` *inside an explicit transaction*: pgbouncer keeps the
//!   server connection from BEGIN to COMMIT, so Parse, Bind and Close all reach it.
//! - `simple_query`/`batch_execute` (no parameters).
//!
//! [`named_statements_break_and_session_settings_leak`] shows the breakage deterministically;
//! [`claim_calls_work_on_another_server_connection`] the lease calls with a claim made on
//! another server connection.

use pg_jobqueue_integration::cluster::{state_dir, PortLease};
use pg_jobqueue_integration::*;
use postgres::config::Host;
use postgres::types::Type;
use std::collections::HashSet;
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const PGBOUNCER: &str = "/usr/sbin/pgbouncer";

/// Ports the test pgbouncers take (apart from the clusters' `cluster::ports()`).
const BOUNCER_PORTS: std::ops::Range<u16> = 56500..56600;

/// The tests of this file run one at a time: the latency bound of the polling test should not
/// depend on the throughput test running beside it on a small machine.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The `postgres` OS user's uid and gid (pgbouncer refuses to run as root).
fn postgres_ids() -> (u32, u32) {
    let id = |flag: &str| -> u32 {
        let out = Command::new("id")
            .args([flag, "postgres"])
            .output()
            .expect("cannot run id");
        assert!(out.status.success(), "no `postgres` OS user");
        String::from_utf8(out.stdout)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    (id("-u"), id("-g"))
}

/// One `[databases]` entry: clients connect to `alias`, served by database `dbname` of the
/// cluster under test through a pool of `pool_size` server connections.
struct Pool<'a> {
    alias: &'a str,
    dbname: &'a str,
    pool_size: u32,
}

/// A pgbouncer (transaction pooling, trust authentication) run as `postgres` from a directory
/// of its own; stopped, and its directory removed (kept with its log when a test failed), on
/// drop.
struct PgBouncer {
    child: Child,
    dir: PathBuf,
    lease: PortLease,
    user: String,
}

impl PgBouncer {
    fn start(name: &str, pools: &[Pool]) -> PgBouncer {
        assert!(
            Path::new(PGBOUNCER).exists(),
            "{PGBOUNCER} is missing: pgbouncer is not installed. Run `bash scripts/setup.sh` \
             (as root) to install it (Debian package pgbouncer)"
        );
        let url: Config = cluster_url()
            .parse()
            .expect("PGJQ_TEST_URL is not a valid URL");
        let host = match url.get_hosts().first() {
            Some(Host::Tcp(h)) => h.clone(),
            Some(Host::Unix(dir)) => dir.display().to_string(),
            None => "127.0.0.1".to_string(),
        };
        let port = url.get_ports().first().copied().unwrap_or(5432);
        let user = url.get_user().unwrap_or("postgres").to_string();

        let dir = state_dir().join(format!("it-pgbouncer-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("cannot create pgbouncer's directory");
        let (uid, gid) = postgres_ids();
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).unwrap();

        let lease = PortLease::reserve_in(BOUNCER_PORTS);
        let databases: String = pools
            .iter()
            .map(|p| {
                format!(
                    "{} = host={host} port={port} dbname={} pool_size={}\n",
                    p.alias, p.dbname, p.pool_size
                )
            })
            .collect();
        let d = dir.display();
        // Trust on both sides (the test clusters trust local connections); the user must
        // still be listed in auth_file.  No Unix socket: the port is all the test needs.
        let ini = format!(
            "[databases]\n{databases}\n[pgbouncer]\n\
             listen_addr = 127.0.0.1\nlisten_port = {lp}\nunix_socket_dir =\n\
             auth_type = trust\nauth_file = {d}/userlist.txt\n\
             pool_mode = transaction\nmax_client_conn = 200\n\
             default_pool_size = 4\nreserve_pool_size = 0\n\
             ignore_startup_parameters = extra_float_digits\n\
             logfile = {d}/pgbouncer.log\npidfile = {d}/pgbouncer.pid\n",
            lp = lease.port()
        );
        fs::write(dir.join("pgbouncer.ini"), ini).unwrap();
        fs::write(dir.join("userlist.txt"), format!("\"{user}\" \"\"\n")).unwrap();

        let child = Command::new(PGBOUNCER)
            .arg(dir.join("pgbouncer.ini"))
            .uid(uid)
            .gid(gid)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {PGBOUNCER}: {e}"));
        let mut bouncer = PgBouncer {
            child,
            dir,
            lease,
            user,
        };
        bouncer.wait_ready(pools[0].alias, Duration::from_secs(10));
        bouncer
    }

    /// [`PgBouncer::start`] with one pool: `db`, under its own name, of `pool_size` server
    /// connections.
    fn for_db(name: &str, db: &TestDb, pool_size: u32) -> PgBouncer {
        Self::start(
            name,
            &[Pool {
                alias: db.name(),
                dbname: db.name(),
                pool_size,
            }],
        )
    }

    fn port(&self) -> u16 {
        self.lease.port()
    }

    fn config(&self, alias: &str) -> Config {
        let mut config = Config::new();
        config
            .host("127.0.0.1")
            .port(self.port())
            .user(&self.user)
            .dbname(alias)
            .connect_timeout(Duration::from_secs(10));
        config
    }

    /// Waits until pgbouncer accepts connections and serves `alias`.
    fn wait_ready(&mut self, alias: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "pgbouncer exited ({status}) at start; its log:\n{}",
                    self.log_tail(20)
                );
            }
            let tried = self
                .config(alias)
                .connect(NoTls)
                .and_then(|mut c| c.simple_query("SELECT 1").map(drop));
            match tried {
                Ok(()) => return,
                Err(e) if Instant::now() >= deadline => panic!(
                    "pgbouncer on port {} did not serve {alias} within {timeout:?}: {}\n{}",
                    self.port(),
                    error_text(&e),
                    self.log_tail(20)
                ),
                Err(_) => thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// A client connection through the pooler to `alias`.
    fn connect(&self, alias: &str) -> Client {
        self.config(alias).connect(NoTls).unwrap_or_else(|e| {
            panic!(
                "cannot connect to {alias} through pgbouncer: {}\n{}",
                error_text(&e),
                self.log_tail(20)
            )
        })
    }

    fn log_tail(&self, lines: usize) -> String {
        let log = fs::read_to_string(self.dir.join("pgbouncer.log")).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        // SIGINT: pgbouncer's "safe shutdown"; it has no transactions left by now.
        kill_pgbouncer(self.child.id(), "INT");
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.child.try_wait().ok().flatten().is_none() {
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
        if thread::panicking() {
            eprintln!("pgbouncer's files are kept in {}", self.dir.display());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

fn kill_pgbouncer(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status();
}

// The API calls the way a driver makes them through the pooler: parameterised, unnamed
// statements (`query_typed`), parameters sent as text and cast in the SQL.

fn create_queue_via(client: &mut Client, queue: &str) {
    client
        .query_typed("SELECT job.create_queue($1)", &[(&queue, Type::TEXT)])
        .unwrap_or_else(|e| panic!("create_queue({queue}) failed: {}", error_text(&e)));
}

fn enqueue_via(client: &mut Client, queue: &str, n: i64) -> i64 {
    client
        .query_typed_one(
            "SELECT job.enqueue($1, jsonb_build_object('n', $2))",
            &[(&queue, Type::TEXT), (&n, Type::INT8)],
        )
        .unwrap_or_else(|e| panic!("enqueue into {queue} failed: {}", error_text(&e)))
        .get(0)
}

/// A claimed job: id, lease token (as text) and the backend that claimed it.
struct Claim {
    id: i64,
    token: String,
    backend: i32,
}

fn dequeue_via(client: &mut Client, queue: &str, worker: &str, batch: i32) -> Vec<Claim> {
    client
        .query_typed(
            "SELECT id, lease_token::text, pg_backend_pid() FROM job.dequeue($1, $2, $3)",
            &[
                (&queue, Type::TEXT),
                (&worker, Type::TEXT),
                (&batch, Type::INT4),
            ],
        )
        .unwrap_or_else(|e| panic!("dequeue by {worker} failed: {}", error_text(&e)))
        .iter()
        .map(|r| Claim {
            id: r.get(0),
            token: r.get(1),
            backend: r.get(2),
        })
        .collect()
}

/// `job.complete(id, result, token)`: whether it completed, and the backend that ran it.
fn complete_via(client: &mut Client, claim: &Claim, result: &str) -> (bool, i32) {
    let row = client
        .query_typed_one(
            "SELECT job.complete($1, $2::jsonb, $3::uuid), pg_backend_pid()",
            &[
                (&claim.id, Type::INT8),
                (&result, Type::TEXT),
                (&claim.token, Type::TEXT),
            ],
        )
        .unwrap_or_else(|e| panic!("complete({}) failed: {}", claim.id, error_text(&e)));
    (row.get(0), row.get(1))
}

/// `job.next_due(queue)` as seconds since the Unix epoch (NULL: None).
fn next_due_via(client: &mut Client, queue: &str) -> Option<f64> {
    client
        .query_typed_one(
            "SELECT extract(epoch FROM job.next_due($1))::float8",
            &[(&queue, Type::TEXT)],
        )
        .unwrap_or_else(|e| panic!("next_due({queue}) failed: {}", error_text(&e)))
        .get(0)
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

const PRODUCERS: i64 = 2;
const WORKERS: usize = 8;
const POOL_SIZE: u32 = 4;
const JOBS: i64 = 20_000;
/// Jobs per producer chunk; every other chunk is one explicit transaction.
const CHUNK: i64 = 100;
const BATCH: i32 = 4;
/// The longest a worker sleeps between polls when `next_due` says nothing (or later).
const POLL: Duration = Duration::from_millis(20);

/// 2 producers and 8 workers (10 clients) share 4 server connections: every one of 20,000
/// jobs is completed exactly once, with its lease token, though dequeue and complete of one
/// job often run on different server connections.
#[test]
fn every_job_completed_once_through_transaction_pooling() {
    let _serial = serial();
    let db = TestDb::create("pgbouncer_once");
    // The test is about correctness through the pooler, not durability: without this, 60,000
    // commits wait for a disk flush each (~5 ms on a small VM: minutes).  A per-database
    // setting, which every server connection the pooler opens picks up (session SETs through
    // the pooler would not stick; see the last test).
    db.connect()
        .batch_execute(&format!(
            "ALTER DATABASE \"{}\" SET synchronous_commit = off",
            db.name()
        ))
        .unwrap();
    let bouncer = PgBouncer::for_db("once", &db, POOL_SIZE);
    let queue = unique_queue("bouncer");
    create_queue_via(&mut bouncer.connect(db.name()), &queue);

    let started = Instant::now();
    let producers_done = Arc::new(AtomicBool::new(false));
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let mut client = bouncer.connect(db.name());
            let queue = queue.clone();
            thread::spawn(move || {
                let per = JOBS / PRODUCERS;
                let mut n = p * per;
                for chunk in 0..per / CHUNK {
                    if chunk % 2 == 0 {
                        for _ in 0..CHUNK {
                            enqueue_via(&mut client, &queue, n);
                            n += 1;
                        }
                    } else {
                        // The crate's default path (a named statement per call) works here:
                        // pgbouncer keeps the server connection for the whole transaction.
                        let mut tx = client.transaction().unwrap();
                        for _ in 0..CHUNK {
                            tx.query_one(
                                "SELECT job.enqueue($1, jsonb_build_object('n', $2::bigint))",
                                &[&queue, &n],
                            )
                            .unwrap_or_else(|e| {
                                panic!("enqueue in a transaction failed: {}", error_text(&e))
                            });
                            n += 1;
                        }
                        tx.commit().unwrap();
                    }
                }
            })
        })
        .collect();

    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let mut client = bouncer.connect(db.name());
            let queue = queue.clone();
            let producers_done = producers_done.clone();
            thread::spawn(move || {
                let worker = format!("worker-{w}");
                let result = format!("{{\"by\": \"{worker}\"}}");
                let mut ids = Vec::new();
                let mut moved = 0u64; // completes on another backend than their dequeue
                let mut polls = 0u64;
                loop {
                    let done = producers_done.load(Ordering::SeqCst);
                    let claims = dequeue_via(&mut client, &queue, &worker, BATCH);
                    if claims.is_empty() {
                        polls += 1;
                        match next_due_via(&mut client, &queue) {
                            None if done => break, // nothing live, nothing more coming
                            None => thread::sleep(POLL),
                            Some(at) => thread::sleep(
                                Duration::from_secs_f64((at - unix_now()).max(0.0)).min(POLL),
                            ),
                        }
                        continue;
                    }
                    for claim in &claims {
                        let (completed, backend) = complete_via(&mut client, claim, &result);
                        assert!(completed, "{worker}: complete({}) returned false", claim.id);
                        moved += u64::from(backend != claim.backend);
                        ids.push(claim.id);
                    }
                }
                (ids, moved, polls)
            })
        })
        .collect();

    // How many server connections the database really has, sampled while the clients work.
    let mut observer = db.connect();
    let mut max_servers = 0i64;
    let sample = "SELECT count(*) FROM pg_stat_activity
                   WHERE datname = current_database() AND backend_type = 'client backend'
                     AND pid <> pg_backend_pid()";
    while !producers.iter().all(|p| p.is_finished()) {
        max_servers = max_servers.max(observer.query_one(sample, &[]).unwrap().get(0));
        thread::sleep(Duration::from_millis(50));
    }
    for p in producers {
        p.join().expect("a producer panicked");
    }
    let produced_in = started.elapsed();
    producers_done.store(true, Ordering::SeqCst);
    while !workers.iter().all(|w| w.is_finished()) {
        max_servers = max_servers.max(observer.query_one(sample, &[]).unwrap().get(0));
        thread::sleep(Duration::from_millis(50));
    }
    let mut all = Vec::new();
    let (mut moved, mut polls) = (0, 0);
    for w in workers {
        let (ids, m, p) = w.join().expect("a worker panicked");
        all.extend(ids);
        moved += m;
        polls += p;
    }
    let elapsed = started.elapsed();

    let distinct: HashSet<i64> = all.iter().copied().collect();
    assert_eq!(
        all.len(),
        JOBS as usize,
        "completions reported by the workers"
    );
    assert_eq!(distinct.len(), JOBS as usize, "a job was completed twice");
    let row = observer
        .query_one(
            "SELECT count(*), count(DISTINCT id) FROM job.jobs WHERE queue = $1 AND state = 'completed'",
            &[&queue],
        )
        .unwrap();
    let (completed, distinct_completed): (i64, i64) = (row.get(0), row.get(1));
    assert_eq!((completed, distinct_completed), (JOBS, JOBS));
    let left: i64 = one(
        &mut observer,
        "SELECT count(*) FROM job.jobs WHERE queue = $1 AND state <> 'completed'",
        &[&queue],
    );
    assert_eq!(left, 0, "jobs left waiting, scheduled, running or failed");
    let attempts: i64 = one(
        &mut observer,
        "SELECT count(*) FROM job.jobs WHERE queue = $1 AND attempt <> 1",
        &[&queue],
    );
    assert_eq!(
        attempts, 0,
        "every job should have been claimed exactly once"
    );
    assert!(
        max_servers <= i64::from(POOL_SIZE),
        "{max_servers} server connections for a pool of {POOL_SIZE}"
    );
    assert!(
        moved > 0,
        "no job was completed on another server connection than the one that dequeued it: \
         the pooler did not pool"
    );
    eprintln!(
        "pgbouncer: {JOBS} jobs by {PRODUCERS} producers and {WORKERS} workers over at most \
         {max_servers} server connections: produced in {produced_in:.2?}, all completed in \
         {elapsed:.2?} ({:.0} jobs/s); {moved} completes ran on another backend than their \
         dequeue; {polls} empty polls",
        JOBS as f64 / elapsed.as_secs_f64()
    );
}

/// A worker that cannot LISTEN through the pooler (the notification reaches a server
/// connection no client is linked to, and pgbouncer drops it) sleeps until `job.next_due`
/// and picks up a delayed job promptly.
#[test]
fn next_due_polling_picks_up_a_delayed_job_through_the_pooler() {
    let _serial = serial();
    let db = TestDb::create("pgbouncer_next_due");
    let bouncer = PgBouncer::for_db("next_due", &db, 2);
    let queue = unique_queue("bouncer_due");
    let mut worker = bouncer.connect(db.name());
    let mut producer = bouncer.connect(db.name());
    create_queue_via(&mut producer, &queue);

    // LISTEN through the pooler: the wake-up for this queue never arrives there, while a
    // direct connection's LISTEN gets it.
    let mut direct = db.connect();
    listen(&mut direct);
    listen(&mut worker);
    assert!(dequeue_via(&mut worker, &queue, "poller", 1).is_empty());
    assert_eq!(next_due_via(&mut worker, &queue), None, "empty queue");
    let ready = enqueue_via(&mut producer, &queue, 0);
    let queue_id: i64 = one(&mut direct, "SELECT job.queue_id($1)", &[&queue]);
    let n = next_notification(&mut direct, Duration::from_secs(2))
        .expect("the direct LISTEN got no wake-up");
    assert_eq!(n.payload(), queue_id.to_string());
    assert!(
        next_notification(&mut worker, Duration::from_secs(1)).is_none(),
        "a LISTEN through transaction pooling received a notification"
    );
    // A ready job: next_due is now.
    let due = next_due_via(&mut worker, &queue).expect("next_due NULL with a job ready");
    assert!((due - unix_now()).abs() < 0.5, "next_due {due} is not now");
    let claims = dequeue_via(&mut worker, &queue, "poller", 1);
    assert_eq!(claims.iter().map(|c| c.id).collect::<Vec<_>>(), [ready]);
    assert!(complete_via(&mut worker, &claims[0], "{}").0);
    assert_eq!(next_due_via(&mut worker, &queue), None, "drained queue");

    // A delayed job: next_due is its run_at; the poller sleeps until then.
    let id: i64 = producer
        .query_typed_one(
            "SELECT job.enqueue($1, '{}', delay => $2::interval)",
            &[(&queue, Type::TEXT), (&"1 second", Type::TEXT)],
        )
        .unwrap_or_else(|e| panic!("delayed enqueue failed: {}", error_text(&e)))
        .get(0);
    let run_at: f64 = producer
        .query_typed_one(
            "SELECT extract(epoch FROM run_at)::float8 FROM job.jobs WHERE id = $1",
            &[(&id, Type::INT8)],
        )
        .unwrap()
        .get(0);
    let (claim, picked_at, polls) = {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut polls = 0;
        loop {
            assert!(
                Instant::now() < deadline,
                "the delayed job was not picked up in 10 s"
            );
            let mut claims = dequeue_via(&mut worker, &queue, "poller", 1);
            if let Some(claim) = claims.pop() {
                break (claim, unix_now(), polls);
            }
            polls += 1;
            let due =
                next_due_via(&mut worker, &queue).expect("next_due NULL while a delayed job waits");
            // Unless the scheduler made the job ready between the dequeue and next_due: then
            // next_due is "now", just past run_at, and the next dequeue takes it.
            let promoted_meanwhile = due > run_at
                && producer
                    .query_typed_one(
                        "SELECT state FROM job.jobs WHERE id = $1",
                        &[(&id, Type::INT8)],
                    )
                    .unwrap()
                    .get::<_, String>(0)
                    == "waiting";
            assert!(
                (due - run_at).abs() < 1e-6 || promoted_meanwhile,
                "next_due {due} is not the delayed job's run_at {run_at}"
            );
            // Sleep until then, at most 5 s (the poll interval of a real worker).
            let wait = (due - unix_now()).clamp(0.0, 5.0);
            thread::sleep(Duration::from_secs_f64(wait));
        }
    };
    assert_eq!(claim.id, id);
    let late = picked_at - run_at;
    eprintln!(
        "pgbouncer: delayed job picked up {:.1} ms after its run_at ({polls} polls)",
        late * 1e3
    );
    assert!(late >= 0.0, "picked up {late} s before it was due");
    assert!(late < 0.3, "picked up {late:.3} s after it was due");
    assert!(complete_via(&mut worker, &claim, "{}").0);
}

/// Runs `call` on `a` on the server connection `avoid` does not pick, of a pool of two:
/// `holders` take both server connections in open transactions, `avoid` tells (run in each)
/// which one to keep away from `a`, the other holder lets its connection go, and `call` gets
/// it.  (Which idle server connection pgbouncer hands out next is not something to rely on.)
fn on_other_server<T>(
    a: &mut Client,
    holders: &mut [Client; 2],
    avoid: impl Fn(&mut postgres::Transaction) -> bool,
    call: impl FnOnce(&mut Client) -> T,
) -> T {
    let [h0, h1] = holders;
    let mut t0 = h0.transaction().unwrap();
    let mut t1 = h1.transaction().unwrap();
    let (avoid0, avoid1) = (avoid(&mut t0), avoid(&mut t1));
    assert!(
        avoid0 != avoid1,
        "not exactly one of the pool's two server connections is to be avoided"
    );
    let (keep, free) = if avoid0 { (t0, t1) } else { (t1, t0) };
    free.commit().unwrap();
    let result = call(a);
    keep.commit().unwrap();
    result
}

fn backend_of(tx: &mut postgres::Transaction) -> i32 {
    tx.query_typed_one("SELECT pg_backend_pid()", &[])
        .unwrap()
        .get(0)
}

/// [`on_other_server`] away from server connection `backend`; `call` returns its result and
/// the backend it ran on, which is checked.
fn elsewhere<T>(
    a: &mut Client,
    holders: &mut [Client; 2],
    backend: i32,
    call: impl FnOnce(&mut Client) -> (T, i32),
) -> T {
    let (result, ran_on) = on_other_server(a, holders, |tx| backend_of(tx) == backend, call);
    assert_ne!(
        ran_on, backend,
        "the call ran on the avoided server connection"
    );
    result
}

/// heartbeat, fail, release, complete and complete_many with the lease token, each on another
/// server connection than the dequeue that claimed the job; a stale token is refused there too.
#[test]
fn claim_calls_work_on_another_server_connection() {
    let _serial = serial();
    let db = TestDb::create("pgbouncer_claims");
    let bouncer = PgBouncer::for_db("claims", &db, 2);
    let queue = unique_queue("bouncer_claims");
    let mut a = bouncer.connect(db.name());
    let mut holders = [bouncer.connect(db.name()), bouncer.connect(db.name())];
    create_queue_via(&mut a, &queue);
    let ids: Vec<i64> = (0..3).map(|n| enqueue_via(&mut a, &queue, n)).collect();
    let claims = dequeue_via(&mut a, &queue, "w", 3);
    assert_eq!(claims.iter().map(|c| c.id).collect::<Vec<_>>(), ids);
    let (first, backend, token) = (&claims[0], claims[0].backend, claims[0].token.clone());

    let extended: Option<f64> = elsewhere(&mut a, &mut holders, backend, |a| {
        let row = a
            .query_typed_one(
                "SELECT extract(epoch FROM job.heartbeat($1, '10 minutes', $2::uuid))::float8,
                        pg_backend_pid()",
                &[(&ids[0], Type::INT8), (&token, Type::TEXT)],
            )
            .unwrap_or_else(|e| panic!("heartbeat failed: {}", error_text(&e)));
        (row.get(0), row.get(1))
    });
    assert!(extended.is_some_and(|at| at > unix_now() + 500.0));

    let state: String = elsewhere(&mut a, &mut holders, backend, |a| {
        let row = a
            .query_typed_one(
                "SELECT job.fail($1, 'boom', retry_after => '0'::interval, token => $2::uuid),
                        pg_backend_pid()",
                &[(&ids[1], Type::INT8), (&token, Type::TEXT)],
            )
            .unwrap_or_else(|e| panic!("fail failed: {}", error_text(&e)));
        (row.get(0), row.get(1))
    });
    assert_eq!(state, "waiting");

    let released: bool = elsewhere(&mut a, &mut holders, backend, |a| {
        let row = a
            .query_typed_one(
                "SELECT job.release($1, $2::uuid), pg_backend_pid()",
                &[(&ids[2], Type::INT8), (&token, Type::TEXT)],
            )
            .unwrap_or_else(|e| panic!("release failed: {}", error_text(&e)));
        (row.get(0), row.get(1))
    });
    assert!(released);

    let completed = elsewhere(&mut a, &mut holders, backend, |a| {
        complete_via(a, first, r#"{"ok": true}"#)
    });
    assert!(completed);

    // The failed and the released job, claimed again: a new token.
    let again = dequeue_via(&mut a, &queue, "w", 3);
    assert_eq!(again.iter().map(|c| c.id).collect::<Vec<_>>(), &ids[1..]);
    let (backend, new_token) = (again[0].backend, again[0].token.clone());
    assert_ne!(new_token, token);
    // The old claim's token changes nothing, wherever it runs.
    let stale: bool = elsewhere(&mut a, &mut holders, backend, |a| {
        let row = a
            .query_typed_one(
                "SELECT job.complete($1, NULL, $2::uuid), pg_backend_pid()",
                &[(&ids[1], Type::INT8), (&token, Type::TEXT)],
            )
            .unwrap();
        (row.get(0), row.get(1))
    });
    assert!(
        !stale,
        "complete with the previous claim's token completed the job"
    );
    assert_refused(
        a.query_typed(
            "SELECT job.heartbeat($1, token => $2::uuid)",
            &[(&ids[2], Type::INT8), (&token, Type::TEXT)],
        ),
        &SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE,
        "heartbeat with the previous claim's token should raise",
    );
    let many: i32 = elsewhere(&mut a, &mut holders, backend, |a| {
        let row = a
            .query_typed_one(
                "SELECT job.complete_many($1::text::bigint[], ARRAY[$2::uuid]), pg_backend_pid()",
                &[
                    (&format!("{{{},{}}}", ids[1], ids[2]), Type::TEXT),
                    (&new_token, Type::TEXT),
                ],
            )
            .unwrap_or_else(|e| panic!("complete_many failed: {}", error_text(&e)));
        (row.get(0), row.get(1))
    });
    assert_eq!(many, 2);

    let mut direct = db.connect();
    let rows = direct
        .query(
            "SELECT id, state, attempt FROM job.jobs WHERE queue = $1 ORDER BY id",
            &[&queue],
        )
        .unwrap();
    let jobs: Vec<(i64, String, i32)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        jobs,
        [
            (ids[0], "completed".to_string(), 1),
            (ids[1], "completed".to_string(), 2),
            (ids[2], "completed".to_string(), 1),
        ]
    );
}

/// What breaks through the pooler, deterministically, with a pool whose server connections
/// the test controls: a named prepared statement run on another server connection than the
/// one it was prepared on, and a session `SET` seen by another client (`SET LOCAL` is not).
#[test]
fn named_statements_break_and_session_settings_leak() {
    let _serial = serial();
    let db = TestDb::create("pgbouncer_session");
    let single = format!("{}_single", db.name());
    let bouncer = PgBouncer::start(
        "session",
        &[
            Pool {
                alias: db.name(),
                dbname: db.name(),
                pool_size: 2,
            },
            Pool {
                alias: &single,
                dbname: db.name(),
                pool_size: 1,
            },
        ],
    );

    // Named statements (the postgres crate's default outside query_typed): `a` prepares one
    // on some server connection of the pool; the holders find which (pg_prepared_statements)
    // and keep it, so `a`'s Bind goes to the other one, which has no such statement.
    let mut a = bouncer.connect(db.name());
    let mut holders = [bouncer.connect(db.name()), bouncer.connect(db.name())];
    let has_statement = |tx: &mut postgres::Transaction| -> bool {
        tx.query_typed_one("SELECT EXISTS (SELECT FROM pg_prepared_statements)", &[])
            .unwrap()
            .get(0)
    };
    let statement = a
        .prepare("SELECT job.next_due($1)")
        .unwrap_or_else(|e| panic!("prepare failed: {}", error_text(&e)));
    let err = on_other_server(&mut a, &mut holders, has_statement, |a| {
        a.query(&statement, &[&"no_such_queue"])
            .expect_err("a named statement ran on a server connection that never prepared it")
    });
    assert_eq!(
        err.code(),
        Some(&SqlState::INVALID_SQL_STATEMENT_NAME),
        "expected 'prepared statement does not exist', got {}",
        error_text(&err)
    );
    // The same call as an unnamed statement (query_typed) runs there: it raises what
    // next_due raises for a missing queue.
    let err = on_other_server(&mut a, &mut holders, has_statement, |a| {
        a.query_typed("SELECT job.next_due($1)", &[(&"no_such_queue", Type::TEXT)])
            .expect_err("next_due of a missing queue should raise")
    });
    assert_ne!(
        err.code(),
        Some(&SqlState::INVALID_SQL_STATEMENT_NAME),
        "{}",
        error_text(&err)
    );
    assert!(err.as_db_error().is_some(), "{}", error_text(&err));
    drop(statement);

    // Session settings: one server connection serves both clients of `single`.
    let mut c = bouncer.connect(&single);
    let mut d = bouncer.connect(&single);
    let show = |client: &mut Client| -> String {
        client
            .query_typed_one("SELECT current_setting('pg_jobqueue.rescue_interval')", &[])
            .unwrap()
            .get(0)
    };
    assert_eq!(show(&mut d), "1s", "the default");
    c.batch_execute("SET pg_jobqueue.rescue_interval = 0")
        .unwrap();
    assert_eq!(
        show(&mut d),
        "0",
        "a SET outside a transaction should leak to the next client of that server connection"
    );
    c.batch_execute("RESET pg_jobqueue.rescue_interval")
        .unwrap();
    assert_eq!(show(&mut d), "1s");
    let mut tx = c.transaction().unwrap();
    tx.batch_execute("SET LOCAL pg_jobqueue.rescue_interval = 0")
        .unwrap();
    let inside: String = tx
        .query_typed_one("SELECT current_setting('pg_jobqueue.rescue_interval')", &[])
        .unwrap()
        .get(0);
    assert_eq!(inside, "0");
    tx.commit().unwrap();
    assert_eq!(
        show(&mut d),
        "1s",
        "SET LOCAL should end with its transaction"
    );
}

/// Once a claimed job's lease runs out, a worker that polls on `job.next_due` (as it must
/// behind a pooler) gets the job without spinning: either the background worker has taken it
/// back already (next_due: now, and the dequeue gets it), or next_due says when a dequeue will
/// look for it (at most `pg_jobqueue.rescue_interval` ahead), never "now" for a job a dequeue
/// would not hand out.  (An early 0.3.0 said now, and a poller spun for up to a second.)
#[test]
fn a_poller_gets_a_job_whose_lease_ran_out_without_spinning() {
    let _serial = serial();
    let db = TestDb::create("pgbouncer_expired");
    let bouncer = PgBouncer::for_db("expired", &db, 1);
    let queue = unique_queue("bouncer_expired");
    let mut worker = bouncer.connect(db.name());
    create_queue_via(&mut worker, &queue);
    let id = enqueue_via(&mut worker, &queue, 0);
    // A short lease that the (crashed) worker lets run out; this dequeue also looked for
    // stalled jobs, so the session's next look is due in rescue_interval.
    let claimed: i64 = worker
        .query_typed_one(
            "SELECT id FROM job.dequeue($1, 'crashed', 1, '200 milliseconds')",
            &[(&queue, Type::TEXT)],
        )
        .unwrap()
        .get(0);
    assert_eq!(claimed, id);
    thread::sleep(Duration::from_millis(300));

    let started = Instant::now();
    let mut empty = 0;
    while dequeue_via(&mut worker, &queue, "poller", 1).is_empty() {
        empty += 1;
        assert!(
            empty <= 3,
            "{empty} empty polls following next_due: the poller spins"
        );
        let due = next_due_via(&mut worker, &queue).expect("next_due NULL with a running job");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never taken back"
        );
        thread::sleep(Duration::from_secs_f64((due - unix_now()).max(0.0)));
    }
    println!(
        "the expired job came back after {empty} empty polls, {:?}",
        started.elapsed()
    );
}
