//! Private clusters for the background worker's tests, and the helpers those tests share.
//!
//! The worker tests stop, kill, restart, reconfigure and promote PostgreSQL, so each one runs
//! its own cluster instead of the shared one at `PGJQ_TEST_URL`.  A [`Cluster`] lives in
//! `<state>/it-<name>` (`scripts/state-dir.sh` prints `<state>`), listens on a port of its own
//! from [`ports`], runs as the `postgres` OS user (PostgreSQL refuses root) and preloads
//! pg_jobqueue with a fast scheduler tick and maintenance interval.  Dropping it stops it
//! (immediate) and removes its directory; when the test failed, the server log is kept
//! (the panic message of the drop says where).

use crate::sql::{exec, one, rows};
use crate::{error_text, Client, Config, Error, NoTls};
use postgres::GenericClient;
use std::collections::HashSet;
use std::fs;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The pg_config of the private copy of PostgreSQL the test clusters run, where `make
/// install-private` put the extension (`scripts/private-pg.sh clusters`; the PostgreSQL it
/// copies is `$PG_CONFIG`'s, see `scripts/pg-config.sh`).
pub fn pg_config() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| PathBuf::from(run_script("private-pg.sh", &["clusters"])))
}

/// The directory of PostgreSQL's programs (of [`pg_config`]).
pub fn pg_bin() -> &'static Path {
    pg_config()
        .parent()
        .expect("pg_config is in the bin directory")
}

/// What `pg_config OPTION` prints (`--pkglibdir`, say) for the test clusters' PostgreSQL.
pub fn pg_config_value(option: &str) -> String {
    let out = Command::new(pg_config())
        .arg(option)
        .output()
        .expect("cannot run pg_config");
    assert!(out.status.success(), "pg_config {option} failed");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Ports the private clusters take, one each (below them: the demo, test and bench clusters
/// of the Makefile and `scripts/cluster.sh`).  `PGJQ_CLUSTER_PORTS=FIRST-LAST` moves them, so
/// that two checkouts can run their suites at once.
pub fn ports() -> std::ops::Range<u16> {
    match std::env::var("PGJQ_CLUSTER_PORTS") {
        Ok(range) => {
            let (first, last) = range
                .split_once('-')
                .and_then(|(a, b)| Some((a.parse::<u16>().ok()?, b.parse::<u16>().ok()?)))
                .unwrap_or_else(|| panic!("PGJQ_CLUSTER_PORTS={range}: expected FIRST-LAST"));
            first..last
        }
        Err(_) => 55460..55600,
    }
}

/// Runs `scripts/NAME ARGS` and returns what it printed, trimmed.
fn run_script(name: &str, args: &[&str]) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = Command::new("bash")
        .arg(root.join("scripts").join(name))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run scripts/{name}: {e}"));
    assert!(
        out.status.success(),
        "scripts/{name} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Settings every private cluster gets, before those a test passes.
const BASE_SETTINGS: &[(&str, &str)] = &[
    ("shared_preload_libraries", "'pg_jobqueue'"),
    ("listen_addresses", "'127.0.0.1'"),
    ("pg_jobqueue.scheduler_tick", "'200ms'"),
    ("pg_jobqueue.maintenance_interval", "'500ms'"),
    // A launcher, a scheduler and executors per database, the logical replication launcher.
    ("max_worker_processes", "32"),
    ("shared_buffers", "'64MB'"),
    ("log_line_prefix", "'%m [%p] %b %d: '"),
];

/// The directory for files the `postgres` user must reach (`scripts/state-dir.sh`).
pub fn state_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| PathBuf::from(run_script("state-dir.sh", &[])))
}

/// Runs a PostgreSQL program as the `postgres` OS user.
fn run_as_postgres(program: &str, args: &[&str]) -> Output {
    Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(pg_bin().join(program))
        .args(args)
        // As a developer's shell may have it: errors must read as PostgreSQL's all the same
        // (worker_lifecycle.rs errors_carry_no_rust_backtrace_whatever_the_environment).
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

fn chown_postgres(path: &Path) {
    let status = Command::new("chown")
        .arg("postgres:")
        .arg(path)
        .status()
        .expect("cannot run chown");
    assert!(
        status.success(),
        "chown postgres: {} failed",
        path.display()
    );
}

/// Sends `signal` (e.g. "KILL", "TERM") to process `pid`; false when it did not exist.
pub fn kill_process(pid: i32, signal: &str) -> bool {
    Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("cannot run kill")
        .success()
}

/// A port reserved for one server (a cluster, a pgbouncer) until dropped.  Reservations are
/// lock files (`<state>/it-ports/<port>`, holding the owner's pid), so test processes running
/// side by side stay apart too; a file whose owner died is taken over.
pub struct PortLease {
    port: u16,
    file: PathBuf,
}

static PORTS_TAKEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

impl PortLease {
    /// A port of [`ports`], for a cluster.
    fn reserve() -> PortLease {
        Self::reserve_in(ports())
    }

    /// A free port of `ports`.
    pub fn reserve_in(ports: std::ops::Range<u16>) -> PortLease {
        let dir = state_dir().join("it-ports");
        fs::create_dir_all(&dir).expect("cannot create the port lock directory");
        let mut taken = PORTS_TAKEN.lock().unwrap();
        let taken = taken.get_or_insert_with(HashSet::new);
        for port in ports.clone() {
            if taken.contains(&port) {
                continue;
            }
            let file = dir.join(port.to_string());
            if let Ok(owner) = fs::read_to_string(&file) {
                let alive = owner
                    .trim()
                    .parse::<u32>()
                    .is_ok_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
                if alive {
                    continue;
                }
                let _ = fs::remove_file(&file);
            }
            let Ok(mut lock) = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&file)
            else {
                continue; // another process got it first
            };
            // Something that is no cluster of ours may listen there.
            if TcpListener::bind(("127.0.0.1", port)).is_err() {
                drop(lock);
                let _ = fs::remove_file(&file);
                continue;
            }
            write!(lock, "{}", std::process::id()).unwrap();
            taken.insert(port);
            return PortLease { port, file };
        }
        panic!("no free port in {ports:?}");
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for PortLease {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.file);
        if let Some(taken) = PORTS_TAKEN.lock().unwrap().as_mut() {
            taken.remove(&self.port);
        }
    }
}

/// A private PostgreSQL 15 cluster with pg_jobqueue preloaded.
pub struct Cluster {
    name: String,
    dir: PathBuf,
    lease: PortLease,
}

impl Cluster {
    /// A new cluster in `<state>/it-<name>` (a leftover there is stopped and removed first),
    /// initialized and configured with [`BASE_SETTINGS`] plus `settings` (name, value as
    /// written in postgresql.conf, quotes included), and started.
    pub fn start_new(name: &str, settings: &[(&str, &str)]) -> Cluster {
        let cluster = Cluster::create_dir(name);
        let data = cluster.data_dir();
        let data = data.to_str().unwrap();
        let out = run_as_postgres(
            "initdb",
            &[
                "-D",
                data,
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        );
        assert!(
            out.status.success(),
            "initdb for cluster {name} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // initdb -A trust already lets 127.0.0.1 replicate; say so in case its template changes.
        cluster.append_file("pg_hba.conf", "host replication all 127.0.0.1/32 trust\n");
        cluster.configure(BASE_SETTINGS);
        cluster.configure(settings);
        cluster.start();
        cluster
    }

    /// A streaming standby of `primary` (which must be running), cloned with
    /// `pg_basebackup -R -X stream` into `<state>/it-<name>`, on a port of its own, started.
    pub fn standby_of(primary: &Cluster, name: &str) -> Cluster {
        let standby = Cluster::create_dir(name);
        let data = standby.data_dir();
        let port = primary.port().to_string();
        let out = run_as_postgres(
            "pg_basebackup",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-D",
                data.to_str().unwrap(),
                "-R",
                "-X",
                "stream",
                "--checkpoint=fast",
                "--no-sync",
            ],
        );
        assert!(
            out.status.success(),
            "pg_basebackup of {} into {name} failed: {}",
            primary.name,
            String::from_utf8_lossy(&out.stderr)
        );
        // The copy has the primary's port and socket directory; later lines win.
        standby.configure(&[]);
        standby.start();
        standby
    }

    fn create_dir(name: &str) -> Cluster {
        let dir = state_dir().join(format!("it-{name}"));
        if dir.join("data/postmaster.pid").exists() {
            // A leftover of an interrupted run: its postmaster may still be up.
            let _ = run_as_postgres(
                "pg_ctl",
                &[
                    "-D",
                    dir.join("data").to_str().unwrap(),
                    "-m",
                    "immediate",
                    "-w",
                    "stop",
                ],
            );
        }
        if dir.exists() {
            fs::remove_dir_all(&dir)
                .unwrap_or_else(|e| panic!("cannot remove leftover {}: {e}", dir.display()));
        }
        fs::create_dir_all(&dir).unwrap();
        chown_postgres(&dir);
        Cluster {
            name: name.to_owned(),
            dir,
            lease: PortLease::reserve(),
        }
    }

    /// Appends the cluster's own settings (port, socket directory) and `settings` to
    /// postgresql.conf; they take effect at the next start or [`Cluster::reload`].
    pub fn configure(&self, settings: &[(&str, &str)]) {
        let mut text = format!(
            "port = {}\nunix_socket_directories = '{}'\n",
            self.port(),
            self.dir.display()
        );
        for (key, value) in settings {
            text += &format!("{key} = {value}\n");
        }
        self.append_file("postgresql.conf", &text);
    }

    fn append_file(&self, file: &str, text: &str) {
        let path = self.data_dir().join(file);
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
        f.write_all(text.as_bytes()).unwrap();
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn port(&self) -> u16 {
        self.lease.port
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    pub fn log_file(&self) -> PathBuf {
        self.dir.join("postgres.log")
    }

    /// The last `lines` lines of the server log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = fs::read_to_string(self.log_file()).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The whole server log.
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_file()).unwrap_or_default()
    }

    fn pg_ctl(&self, args: &[&str]) -> Output {
        let data = self.data_dir();
        let mut all = vec!["-D", data.to_str().unwrap()];
        all.extend_from_slice(args);
        run_as_postgres("pg_ctl", &all)
    }

    fn pg_ctl_ok(&self, what: &str, args: &[&str]) {
        let out = self.pg_ctl(args);
        assert!(
            out.status.success(),
            "pg_ctl {what} of cluster {} failed: {}{}\n--- server log (tail) ---\n{}",
            self.name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log_tail(40)
        );
    }

    /// Starts the server and waits until it accepts connections (a standby: until it
    /// accepts read-only ones).
    pub fn start(&self) {
        let log = self.log_file();
        self.pg_ctl_ok(
            "start",
            &["-l", log.to_str().unwrap(), "-w", "-t", "60", "start"],
        );
    }

    /// `pg_ctl stop -m fast`: clean shutdown.
    pub fn stop_fast(&self) {
        self.pg_ctl_ok("stop -m fast", &["-m", "fast", "-w", "-t", "60", "stop"]);
    }

    /// `pg_ctl stop -m immediate`: every process quits at once, like a crash; the next start
    /// recovers from the WAL.
    pub fn stop_immediate(&self) {
        self.pg_ctl_ok("stop -m immediate", &["-m", "immediate", "-w", "stop"]);
    }

    /// Fast shutdown, then start.
    pub fn restart(&self) {
        self.stop_fast();
        self.start();
    }

    /// Promotes a standby and waits until it accepts writes.
    pub fn promote(&self) {
        self.pg_ctl_ok("promote", &["-w", "-t", "60", "promote"]);
    }

    /// Makes the server re-read its configuration (SIGHUP).
    pub fn reload(&self) {
        self.pg_ctl_ok("reload", &["reload"]);
    }

    /// Is the postmaster running?
    pub fn is_running(&self) -> bool {
        self.pg_ctl(&["status"]).status.success()
    }

    /// The postmaster's pid (first line of postmaster.pid).
    pub fn postmaster_pid(&self) -> i32 {
        let text = fs::read_to_string(self.data_dir().join("postmaster.pid"))
            .expect("no postmaster.pid: is the cluster running?");
        text.lines().next().unwrap().trim().parse().unwrap()
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/{db}", self.port())
    }

    fn config(&self, db: &str) -> Config {
        let mut config = Config::new();
        config
            .host("127.0.0.1")
            .port(self.port())
            .user("postgres")
            .dbname(db)
            .connect_timeout(Duration::from_secs(10));
        config
    }

    pub fn try_connect(&self, db: &str) -> Result<Client, Error> {
        self.config(db).connect(NoTls)
    }

    /// A new connection to database `db` of this cluster.
    pub fn connect(&self, db: &str) -> Client {
        self.try_connect(db).unwrap_or_else(|e| {
            panic!(
                "cannot connect to {}: {err}\n--- server log (tail) ---\n{}",
                self.url(db),
                self.log_tail(40),
                err = error_text(&e)
            )
        })
    }

    /// A connection as soon as the server takes one again (after a crash and its automatic
    /// restart, say), trying for at most `timeout`.
    pub fn connect_when_ready(&self, db: &str, timeout: Duration) -> Client {
        let mut last = None;
        let connected = wait_for(timeout, || match self.try_connect(db) {
            Ok(client) => Some(client),
            Err(e) => {
                last = Some(error_text(&e));
                None
            }
        });
        connected.unwrap_or_else(|| {
            panic!(
                "cluster {} took no connection to {db} within {timeout:?}: {last:?}\n\
                 --- server log (tail) ---\n{}",
                self.name,
                self.log_tail(40)
            )
        })
    }

    /// `CREATE DATABASE name`.
    pub fn create_database(&self, name: &str) {
        exec(
            &mut self.connect("postgres"),
            &format!("CREATE DATABASE {}", quote_ident(name)),
        );
    }

    /// `CREATE EXTENSION pg_jobqueue` in database `db`.
    pub fn create_extension(&self, db: &str) {
        exec(&mut self.connect(db), "CREATE EXTENSION pg_jobqueue");
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.data_dir().join("postmaster.pid").exists() {
            let _ = self.pg_ctl(&["-m", "immediate", "-w", "stop"]);
        }
        if std::thread::panicking() {
            let kept = state_dir().join(format!("it-{}.failed.log", self.name));
            if fs::copy(self.log_file(), &kept).is_ok() {
                eprintln!(
                    "cluster {}: server log kept in {}",
                    self.name,
                    kept.display()
                );
            }
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Polls `cond` (every 50 ms) until it holds or `timeout` passes; whether it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    wait_for(timeout, || cond().then_some(())).is_some()
}

/// Polls `probe` (every 50 ms) until it returns a value or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A started cluster (see [`Cluster::start_new`]) with pg_jobqueue installed in database
/// `postgres` and its scheduler running, and a connection to that database.
pub fn served_cluster(name: &str, settings: &[(&str, &str)]) -> (Cluster, Client) {
    let cluster = Cluster::start_new(name, settings);
    cluster.create_extension("postgres");
    let mut client = cluster.connect("postgres");
    wait_for_scheduler(&mut client, Duration::from_secs(15));
    (cluster, client)
}

/// This machine's clock (the servers' too), as seconds since the Unix epoch.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// The server's clock (`clock_timestamp()`), as seconds since the Unix epoch.
pub fn server_now(client: &mut Client) -> f64 {
    one(
        client,
        "SELECT extract(epoch FROM clock_timestamp())::float8",
        &[],
    )
}

/// `job.worker_processes()` of the connected database: (pid, kind), by kind and pid.
pub fn worker_processes(client: &mut Client) -> Vec<(i32, String)> {
    rows(
        client,
        "SELECT pid, kind FROM job.worker_processes() ORDER BY kind DESC, pid",
        &[],
    )
}

/// The pids of this database's worker processes of `kind` ("scheduler" or "executor").
pub fn worker_pids(client: &mut Client, kind: &str) -> Vec<i32> {
    worker_processes(client)
        .into_iter()
        .filter(|(_, k)| k == kind)
        .map(|(pid, _)| pid)
        .collect()
}

/// Waits until `job.worker_processes()` lists a scheduler; its pid.
pub fn wait_for_scheduler(client: &mut Client, timeout: Duration) -> i32 {
    wait_for(timeout, || {
        worker_pids(client, "scheduler").first().copied()
    })
    .unwrap_or_else(|| panic!("no pg_jobqueue scheduler within {timeout:?}"))
}

/// Waits until `job.worker_processes()` lists `count` executors; their pids.
pub fn wait_for_executors(client: &mut Client, count: usize, timeout: Duration) -> Vec<i32> {
    wait_for(timeout, || {
        let pids = worker_pids(client, "executor");
        (pids.len() == count).then_some(pids)
    })
    .unwrap_or_else(|| {
        panic!(
            "not {count} pg_jobqueue executors within {timeout:?}: {:?}",
            worker_processes(client)
        )
    })
}

/// Every session of database `datname`, one line each (pid, type, state, wait, start, query),
/// for the message of a DROP DATABASE that failed on them; empty when they cannot be read.
pub fn sessions_of(client: &mut Client, datname: &str) -> Vec<String> {
    client
        .query(
            "SELECT concat_ws(' ', pid, backend_type, state, wait_event_type, wait_event,
                              'since', backend_start, query)
               FROM pg_stat_activity WHERE datname = $1",
            &[&datname],
        )
        .map(|rows| rows.iter().map(|r| r.get(0)).collect())
        .unwrap_or_default()
}

/// pg_jobqueue processes in `pg_stat_activity` (of every database, the launcher included):
/// (pid, database or NULL, backend_type).
pub fn jobqueue_backends(client: &mut Client) -> Vec<(i32, Option<String>, String)> {
    client
        .query(
            "SELECT pid, datname::text, backend_type FROM pg_stat_activity
              WHERE backend_type LIKE 'pg_jobqueue%' ORDER BY backend_type, pid",
            &[],
        )
        .unwrap_or_else(|e| panic!("reading pg_stat_activity failed: {}", error_text(&e)))
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

/// The pg_jobqueue schedulers and executors that `pg_stat_activity` shows for `datname`.
pub fn jobqueue_backends_of(client: &mut Client, datname: &str) -> Vec<(i32, String)> {
    jobqueue_backends(client)
        .into_iter()
        .filter(|(_, db, _)| db.as_deref() == Some(datname))
        .map(|(pid, _, kind)| (pid, kind))
        .collect()
}

/// One row of `job.schedule_runs`, times in seconds since the Unix epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub tick: f64,
    pub due_at: f64,
    pub fired_at: f64,
    pub job_id: Option<i64>,
}

impl Run {
    /// How late the tick fired: `fired_at - due_at`.
    pub fn lateness(&self) -> f64 {
        self.fired_at - self.due_at
    }
}

/// The runs of `schedule`, oldest tick first.
pub fn schedule_runs(client: &mut impl GenericClient, schedule: &str) -> Vec<Run> {
    client
        .query(
            "SELECT extract(epoch FROM tick)::float8, extract(epoch FROM due_at)::float8,
                    extract(epoch FROM fired_at)::float8, job_id
               FROM job.schedule_runs WHERE schedule = $1 ORDER BY tick",
            &[&schedule],
        )
        .unwrap_or_else(|e| panic!("reading job.schedule_runs failed: {}", error_text(&e)))
        .iter()
        .map(|r| Run {
            tick: r.get(0),
            due_at: r.get(1),
            fired_at: r.get(2),
            job_id: r.get(3),
        })
        .collect()
}

/// Waits until `schedule` has at least `count` runs fired after `after` (seconds since the
/// Unix epoch; `f64::MIN` for any); whether it did within `timeout`.
pub fn wait_for_runs(
    client: &mut Client,
    schedule: &str,
    count: usize,
    after: f64,
    timeout: Duration,
) -> bool {
    wait_until(timeout, || {
        schedule_runs(client, schedule)
            .iter()
            .filter(|r| r.fired_at > after)
            .count()
            >= count
    })
}

/// Every tick of `schedule` (whose jobs go to `queue`, which no one else fills) fired
/// exactly once: one job per run, none without a run, no job named by two runs, no tick
/// twice.  Returns the runs.
pub fn assert_each_tick_fired_once(client: &mut Client, schedule: &str, queue: &str) -> Vec<Run> {
    // One snapshot for runs and jobs: the scheduler may fire between two statements.
    let mut tx = client
        .build_transaction()
        .isolation_level(postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .unwrap_or_else(|e| panic!("BEGIN failed: {}", error_text(&e)));
    let runs = schedule_runs(&mut tx, schedule);
    let jobs: HashSet<i64> = tx
        .query("SELECT id FROM job.jobs WHERE queue = $1", &[&queue])
        .unwrap_or_else(|e| panic!("reading job.jobs failed: {}", error_text(&e)))
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        jobs.len(),
        runs.len(),
        "schedule {schedule}: {} jobs in queue {queue} but {} runs\nruns: {runs:?}\njobs: {jobs:?}",
        jobs.len(),
        runs.len()
    );
    let mut named = HashSet::new();
    let mut ticks = HashSet::new();
    for run in &runs {
        let job_id = run
            .job_id
            .unwrap_or_else(|| panic!("schedule {schedule}: run without a job: {run:?}"));
        assert!(
            jobs.contains(&job_id),
            "schedule {schedule}: run {run:?} names a job not in {queue}"
        );
        assert!(
            named.insert(job_id),
            "schedule {schedule}: job {job_id} named by two runs"
        );
        assert!(
            ticks.insert(run.tick.to_bits()),
            "schedule {schedule}: tick {} fired twice",
            run.tick
        );
    }
    tx.commit().unwrap();
    runs
}

/// One entry of a job's `errors` array, times in seconds since the Unix epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptError {
    pub attempt: i32,
    pub at: f64,
    pub error: String,
    pub permanent: bool,
    /// Set by the worker's executors for handler errors.
    pub sqlstate: Option<String>,
    /// Set when the attempt's lease expired (stalled-job rescue).
    pub stalled: bool,
}

/// The `errors` of job `id`, in order.
pub fn job_errors(client: &mut Client, id: i64) -> Vec<AttemptError> {
    client
        .query(
            "SELECT (e->>'attempt')::int, extract(epoch FROM (e->>'at')::timestamptz)::float8,
                    e->>'error', coalesce((e->>'permanent')::bool, false), e->>'sqlstate',
                    coalesce((e->>'stalled')::bool, false)
               FROM job.jobs j CROSS JOIN LATERAL jsonb_array_elements(j.errors) WITH ORDINALITY AS x(e, n)
              WHERE j.id = $1 ORDER BY x.n",
            &[&id],
        )
        .unwrap_or_else(|e| panic!("reading job {id}'s errors failed: {}", error_text(&e)))
        .iter()
        .map(|r| AttemptError {
            attempt: r.get(0),
            at: r.get(1),
            error: r.get(2),
            permanent: r.get(3),
            sqlstate: r.get(4),
            stalled: r.get(5),
        })
        .collect()
}

/// A job's row of `job.jobs`, the parts the worker tests look at.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRow {
    pub id: i64,
    pub state: String,
    pub attempt: i32,
    /// `result` as JSON text.
    pub result: Option<String>,
    /// `payload` as JSON text.
    pub payload: String,
    pub enqueued_at: f64,
    pub finished_at: Option<f64>,
}

const JOB_COLUMNS: &str = "id, state, attempt, result::text, payload::text,
    extract(epoch FROM enqueued_at)::float8, extract(epoch FROM finished_at)::float8";

fn job_row(r: &postgres::Row) -> JobRow {
    JobRow {
        id: r.get(0),
        state: r.get(1),
        attempt: r.get(2),
        result: r.get(3),
        payload: r.get(4),
        enqueued_at: r.get(5),
        finished_at: r.get(6),
    }
}

/// Job `id` from `job.jobs`.
pub fn job(client: &mut Client, id: i64) -> JobRow {
    let sql = format!("SELECT {JOB_COLUMNS} FROM job.jobs WHERE id = $1");
    job_row(
        &client
            .query_one(&sql, &[&id])
            .unwrap_or_else(|e| panic!("reading job {id} failed: {}", error_text(&e))),
    )
}

/// Every job of `queue` in `job.jobs`, by id.
pub fn queue_jobs(client: &mut Client, queue: &str) -> Vec<JobRow> {
    let sql = format!("SELECT {JOB_COLUMNS} FROM job.jobs WHERE queue = $1 ORDER BY id");
    client
        .query(&sql, &[&queue])
        .unwrap_or_else(|e| panic!("reading the jobs of {queue} failed: {}", error_text(&e)))
        .iter()
        .map(job_row)
        .collect()
}

/// How many jobs of `queue` are finished (completed, dead or cancelled).
pub fn finished_count(client: &mut Client, queue: &str) -> i64 {
    one(
        client,
        "SELECT count(*) FROM job.jobs WHERE queue = $1
            AND state IN ('completed', 'dead', 'cancelled')",
        &[&queue],
    )
}

/// Waits until `count` jobs of `queue` are finished; panics (with the queue's jobs and the
/// server log) if they are not within `timeout`.
pub fn wait_for_finished(
    cluster: &Cluster,
    client: &mut Client,
    queue: &str,
    count: i64,
    timeout: Duration,
) {
    if !wait_until(timeout, || finished_count(client, queue) >= count) {
        panic!(
            "{queue}: not {count} jobs finished within {timeout:?}: {:#?}\n--- server log (tail) ---\n{}",
            queue_jobs(client, queue),
            cluster.log_tail(30)
        );
    }
}

/// `job.enqueue(queue, payload)` with the payload as JSON text; the job id.
pub fn enqueue_json(client: &mut Client, queue: &str, payload: &str) -> i64 {
    one(
        client,
        "SELECT job.enqueue($1, $2::text::jsonb)",
        &[&queue, &payload],
    )
}
