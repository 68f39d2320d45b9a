//! Shared helpers for pg_jobqueue's multi-session integration tests.
//!
//! The tests drive a real cluster (with `shared_preload_libraries = 'pg_jobqueue'`) over real
//! connections.  `PGJQ_TEST_URL` names it, e.g. `postgresql://postgres@127.0.0.1:55433/postgres`
//! (`make integration-test` sets it).  Every test works in a database of its own, created by
//! [`TestDb::create`] and dropped when the guard goes out of scope, so tests run in parallel.

pub mod cluster;
pub mod fingerprint;
pub mod http_server;
pub mod jobs;
pub mod roles;
pub mod sql;

pub use jobs::*;
pub use sql::*;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use postgres::error::SqlState;
use postgres::fallible_iterator::FallibleIterator;
pub use postgres::{Client, Config, Error, NoTls, Notification};

/// The channel pg_jobqueue notifies on; the payload is the queue's id.
pub const CHANNEL: &str = "pg_jobqueue";

/// The payload of `queue`'s wake-up notifications: its id (`job.queue_id`), as text.
pub fn queue_id(client: &mut Client, queue: &str) -> String {
    client
        .query_one("SELECT job.queue_id($1)::text", &[&queue])
        .unwrap_or_else(|e| panic!("job.queue_id({queue}): {}", error_text(&e)))
        .get(0)
}

/// An error as the server reported it (SQLSTATE, message, detail, hint): `postgres::Error`'s
/// Display says only "db error".
pub fn error_text(e: &Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut text = format!("{} {}: {}", db.severity(), db.code().code(), db.message());
            if let Some(detail) = db.detail() {
                text += &format!(" DETAIL: {detail}");
            }
            if let Some(hint) = db.hint() {
                text += &format!(" HINT: {hint}");
            }
            text
        }
        None => match std::error::Error::source(e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        },
    }
}

/// The version this tree builds (the root Cargo.toml's package version).
pub fn current_version() -> String {
    let manifest =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.toml"))
            .expect("root Cargo.toml");
    manifest
        .lines()
        .find_map(|l| l.strip_prefix("version = \""))
        .and_then(|v| v.strip_suffix('"'))
        .expect("a package version in the root Cargo.toml")
        .to_owned()
}

/// Every released version, oldest first: each has its install script frozen in sql/released/.
pub fn released_versions() -> Vec<String> {
    let mut versions: Vec<String> =
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../../sql/released"))
            .unwrap()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                Some(
                    name.strip_prefix("pg_jobqueue--")?
                        .strip_suffix(".sql")?
                        .to_owned(),
                )
            })
            .filter(|v| *v != current_version())
            .collect();
    // By number: "0.10.0" comes after "0.9.0".
    versions.sort_by_key(|v| {
        v.split('.')
            .map(|n| n.parse::<u32>().unwrap_or(0))
            .collect::<Vec<_>>()
    });
    versions
}

/// The cluster under test, from `PGJQ_TEST_URL`.
pub fn cluster_url() -> String {
    std::env::var("PGJQ_TEST_URL").unwrap_or_else(|_| {
        panic!(
            "PGJQ_TEST_URL is not set. These tests need a running cluster with pg_jobqueue \
             preloaded: run `make integration-test`, or start one with \
             `bash scripts/cluster.sh start itest 55440` and set \
             PGJQ_TEST_URL=postgresql://postgres@127.0.0.1:55440/postgres"
        )
    })
}

fn config_for(dbname: &str) -> Config {
    let mut config: Config = cluster_url()
        .parse()
        .expect("PGJQ_TEST_URL is not a valid connection URL");
    config.dbname(dbname);
    config.connect_timeout(Duration::from_secs(10));
    config
}

/// A new connection to database `dbname` of the cluster under test.
pub fn connect(dbname: &str) -> Client {
    config_for(dbname).connect(NoTls).unwrap_or_else(|e| {
        panic!(
            "cannot connect to database {dbname}: {err}",
            err = error_text(&e)
        )
    })
}

/// A connection to the cluster's maintenance database (the one `PGJQ_TEST_URL` names).
pub fn connect_admin() -> Client {
    let config: Config = cluster_url()
        .parse()
        .expect("PGJQ_TEST_URL is not a valid connection URL");
    config.connect(NoTls).unwrap_or_else(|e| {
        panic!(
            "cannot connect to {}: {err}",
            cluster_url(),
            err = error_text(&e)
        )
    })
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A scratch database with pg_jobqueue installed; dropped (`WITH (FORCE)`) on drop.
pub struct TestDb {
    name: String,
}

impl TestDb {
    /// Creates `itest_<test>_<pid>` (dropping a leftover of that name first) and runs
    /// `CREATE EXTENSION pg_jobqueue` in it.
    pub fn create(test: &str) -> TestDb {
        Self::create_with(test, "CREATE EXTENSION pg_jobqueue")
    }

    /// Like [`TestDb::create`], with `setup` run in the new database instead (`""`: none).
    pub fn create_with(test: &str, setup: &str) -> TestDb {
        let name = format!("itest_{}_{}", test, std::process::id()).to_lowercase();
        let mut admin = connect_admin();
        let quoted = quote_ident(&name);
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {quoted} WITH (FORCE)"))
            .unwrap_or_else(|e| {
                panic!(
                    "cannot drop leftover database {name}: {err}",
                    err = error_text(&e)
                )
            });
        // CREATE DATABASE fails while another session uses the template ("source database is
        // being accessed by other users"); that passes, so retry.
        let mut tries = 0;
        loop {
            match admin.batch_execute(&format!("CREATE DATABASE {quoted}")) {
                Ok(()) => break,
                Err(e) if tries < 20 && e.code() == Some(&SqlState::OBJECT_IN_USE) => {
                    tries += 1;
                    eprintln!(
                        "CREATE DATABASE {name} failed ({err}), retrying",
                        err = error_text(&e)
                    );
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => panic!("cannot create database {name}: {err}", err = error_text(&e)),
            }
        }
        // The guard exists from here on, so a failure below still drops the database.
        let db = TestDb { name };
        db.connect().batch_execute(setup).unwrap_or_else(|e| {
            panic!("{setup} failed in {}: {err}", db.name, err = error_text(&e))
        });
        db
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A new connection to this database.
    pub fn connect(&self) -> Client {
        connect(&self.name)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let sql = format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            quote_ident(&self.name)
        );
        match connect_admin().batch_execute(&sql) {
            Ok(()) => {}
            Err(e) => eprintln!(
                "warning: could not drop test database {}: {err}",
                self.name,
                err = error_text(&e)
            ),
        }
    }
}

/// The wake-up slot pg_jobqueue files `queue` under (src/wakeup.rs: FNV-1a modulo 1024).
/// Idle marks live in shared memory per slot, across databases, so two queues sharing a slot
/// in concurrently running tests could see each other's wake-ups.
pub fn wakeup_slot(queue: &str) -> usize {
    let hash = queue.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    });
    (hash % 1024) as usize
}

static USED_SLOTS: Mutex<Option<HashSet<usize>>> = Mutex::new(None);
static QUEUE_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A queue name unique to this run whose wake-up slot no other queue named by this function
/// in this test process uses, so parallel tests never share idle marks.
pub fn unique_queue(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let mut used = USED_SLOTS.lock().unwrap();
    let used = used.get_or_insert_with(HashSet::new);
    loop {
        let n = QUEUE_COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("{prefix}_{}_{nanos}_{n}", std::process::id());
        if used.insert(wakeup_slot(&name)) {
            return name;
        }
    }
}

/// The server process id of a connection.
pub fn backend_pid(client: &mut Client) -> i32 {
    client
        .query_one("SELECT pg_backend_pid()", &[])
        .unwrap()
        .get(0)
}

/// `LISTEN pg_jobqueue` on this connection.
pub fn listen(client: &mut Client) {
    client
        .batch_execute(&format!("LISTEN {CHANNEL}"))
        .expect("LISTEN failed");
}

/// The next notification, waiting up to `timeout` for one; None when none came.
pub fn next_notification(client: &mut Client, timeout: Duration) -> Option<Notification> {
    client
        .notifications()
        .timeout_iter(timeout)
        .next()
        .expect("connection failed while waiting for a notification")
}

/// Every notification already delivered to the client, without waiting.
pub fn drain_notifications(client: &mut Client) -> Vec<Notification> {
    client
        .notifications()
        .iter()
        .collect()
        .expect("connection failed while reading notifications")
}

/// Waits (polling every 20 ms, up to `timeout`) until the backend `pid` waits on a heavyweight
/// lock; returns false if it never did.
pub fn wait_until_lock_waiting(observer: &mut Client, pid: i32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let waiting: bool = observer
            .query_one(
                "SELECT coalesce(bool_or(wait_event_type = 'Lock'), false)
                   FROM pg_stat_activity WHERE pid = $1",
                &[&pid],
            )
            .unwrap()
            .get(0);
        if waiting {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Runs `f` on every client at once, each on its own thread, released together by a barrier;
/// returns what each returned, in client order.
pub fn race<T: Send>(clients: &mut [Client], f: impl Fn(usize, &mut Client) -> T + Sync) -> Vec<T> {
    let barrier = Barrier::new(clients.len());
    thread::scope(|s| {
        let handles: Vec<_> = clients
            .iter_mut()
            .enumerate()
            .map(|(i, c)| {
                let (barrier, f) = (&barrier, &f);
                s.spawn(move || {
                    barrier.wait();
                    f(i, c)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a racing session panicked"))
            .collect()
    })
}

/// Runs `work(w, client)` for each worker `w` in `0..workers` at once, each on a thread of its
/// own with a new connection to `db`, released together by a barrier; returns what each
/// returned, in worker order.
pub fn on_workers<T: Send>(
    db: &TestDb,
    workers: usize,
    work: impl Fn(usize, &mut Client) -> T + Sync,
) -> Vec<T> {
    let mut clients: Vec<Client> = (0..workers).map(|_| db.connect()).collect();
    race(&mut clients, work)
}

/// A small deterministic pseudo-random generator (xorshift64*); the tests need no more.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }
}
