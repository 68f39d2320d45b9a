//! Adversarial tests of pg_jobqueue's security model (0.3.0): what each duty's role, a role
//! with nothing but CONNECT, and a role with only USAGE on schema `job` can and cannot do.
//!
//! Each test is named after what it proves and says which finding it closes.  The SQL-level
//! ones run in a database of their own on the shared cluster (`PGJQ_TEST_URL`); those that
//! need the background worker in a controlled setting run a private cluster
//! (`Cluster::start_new`).  Roles are cluster-wide, so every test creates its own, named
//! `<duty>_<test>_<pid>`, and drops them afterwards.
//!
//! `PGJQ_SECURITY_BASELINE=0.2.0` runs the same tests against databases created with
//! `CREATE EXTENSION pg_jobqueue VERSION '0.2.0'` and the 0.2.0 README's recipes, to show
//! which assertions the 0.2.0 SQL failed (a manual check: expect failures there).

use pg_jobqueue_integration::cluster::{
    exec, one, served_cluster, wait_for, wait_for_finished, wait_until, worker_pids, Cluster,
};
use pg_jobqueue_integration::{
    cluster_url, connect_admin, error_text, listen, next_notification, Client, Config, NoTls,
    TestDb, CHANNEL,
};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The README's "Roles" recipes, one per duty, read from the README itself (the block between
/// its `recipes` markers), so that what is tested is what users copy.  Tests substitute their
/// own role names for `app_producer`, `app_worker`, `jobs_monitor` and `jobs_admin`.
pub fn readme_recipes() -> String {
    let readme = include_str!("../../../README.md");
    let start = readme
        .find("<!-- recipes: begin -->")
        .expect("README.md has the recipes block");
    let block = &readme[start..];
    let sql = &block[block.find("```sql\n").expect("a sql block") + 7..];
    sql[..sql.find("```").expect("the block ends")].to_owned()
}

/// The 0.2.0 README's recipes, for the baseline run only.
const RECIPES_0_2_0: &str = "\
GRANT USAGE ON SCHEMA job TO app_producer;
GRANT EXECUTE ON FUNCTION job.enqueue, job.enqueue_many TO app_producer;
GRANT USAGE ON SCHEMA job TO app_worker;
GRANT EXECUTE ON FUNCTION job.dequeue, job.complete, job.complete_many, job.fail, job.heartbeat TO app_worker;
GRANT USAGE ON SCHEMA job TO jobs_monitor;
GRANT SELECT ON job.jobs, job.queue_stats, job.queue_metrics, job.metrics, job.workers,
                job.schedules, job.handlers, job.audit_log TO jobs_monitor;
GRANT EXECUTE ON FUNCTION job.prometheus_metrics TO jobs_monitor;
GRANT USAGE ON SCHEMA job TO jobs_admin;
GRANT ALL ON ALL TABLES IN SCHEMA job TO jobs_admin;
GRANT ALL ON ALL SEQUENCES IN SCHEMA job TO jobs_admin;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA job TO jobs_admin;
REVOKE UPDATE, DELETE, TRUNCATE ON job.audit_log FROM jobs_admin;
";

/// The functions each recipe grants EXECUTE on (what the catalog must show, no more).
const PRODUCER_FUNCTIONS: &[&str] = &["enqueue", "enqueue_many", "deliver"];
const WORKER_FUNCTIONS: &[&str] = &[
    "dequeue",
    "complete",
    "complete_many",
    "fail",
    "heartbeat",
    "heartbeat_many",
    "release",
    "next_due",
    "queue_id",
    "rate_limit_pause",
];
const MONITOR_FUNCTIONS: &[&str] = &["prometheus_metrics", "worker_processes"];
const ADMIN_FUNCTIONS: &[&str] = &[
    "create_queue",
    "drop_queue",
    "pause_queue",
    "resume_queue",
    "cancel",
    "retry",
    "retry_dead",
    "purge",
    "apply_retention",
    "rescue_stalled",
    "schedule",
    "unschedule",
    "pause_schedule",
    "resume_schedule",
    "set_handler",
    "remove_handler",
    "create_endpoint",
    "drop_endpoint",
    "pause_endpoint",
    "resume_endpoint",
    "rotate_endpoint_secret",
    "endpoint_secret",
    "endpoint_headers",
    "endpoint_url",
    "rate_limit_pause",
    "grant_queue",
    "revoke_queue",
    "prometheus_metrics",
    "worker_processes",
];
/// The views the monitor and admin recipes grant SELECT on.
const GRANTED_VIEWS: &[&str] = &[
    "jobs",
    "queue_stats",
    "queue_metrics",
    "queue_settings",
    "rate_limit_holds",
    "metrics",
    "workers",
    "schedules",
    "handlers",
    "audit_log",
    "endpoints",
    "endpoint_metrics",
    "queue_grants",
];
/// The only functions of schema `job` that PUBLIC may execute: pure helpers reading no table.
const PUBLIC_HELPERS: &[&str] = &[
    "job._hist_of(double precision)",
    "job._hist_add(bigint[],bigint[])",
    "job._hist_quantile(bigint[],double precision)",
    "job._hist_sum(bigint[])",
    "job.cron_next(text,text,timestamp with time zone)",
    "job.verify_webhook(text,text,text,text,text,interval)",
    "job._redacted_url(text)",
];

const INSUFFICIENT_PRIVILEGE: &str = "42501";

fn baseline_0_2_0() -> bool {
    std::env::var("PGJQ_SECURITY_BASELINE").is_ok_and(|v| v == "0.2.0")
}

/// `PGJQ_SECURITY_BASELINE=0.4.0` runs the tests against 0.4.0's SQL with today's recipes
/// (less what 0.4.0 lacks), to show which assertions of issue 19 0.4.0 failed (a manual
/// check: expect failures there).
fn baseline_0_4_0() -> bool {
    std::env::var("PGJQ_SECURITY_BASELINE").is_ok_and(|v| v == "0.4.0")
}

/// A scratch database with the extension (0.2.0's or 0.4.0's SQL in a baseline run).
fn security_db(test: &str) -> TestDb {
    if baseline_0_2_0() {
        TestDb::create_with(test, "CREATE EXTENSION pg_jobqueue VERSION '0.2.0'")
    } else if baseline_0_4_0() {
        TestDb::create_with(test, "CREATE EXTENSION pg_jobqueue VERSION '0.4.0'")
    } else {
        TestDb::create(test)
    }
}

/// A connection to database `db` of the cluster at `url`, as `role`.
fn connect_url_as(url: &str, db: &str, role: &str) -> Client {
    let mut config: Config = url.parse().expect("bad cluster URL");
    config
        .user(role)
        .dbname(db)
        .connect_timeout(Duration::from_secs(10));
    config
        .connect(NoTls)
        .unwrap_or_else(|e| panic!("cannot connect to {db} as {role}: {}", error_text(&e)))
}

/// A connection to a test database of the shared cluster, as `role`.
fn connect_as(db: &TestDb, role: &str) -> Client {
    connect_url_as(&cluster_url(), db.name(), role)
}

/// A connection to database `db` of a private cluster, as `role`.
fn connect_cluster_as(cluster: &Cluster, db: &str, role: &str) -> Client {
    connect_url_as(&cluster.url(db), db, role)
}

/// Login roles of one test: the four duties plus any others it asks for, named
/// `<base>_<tag>_<pid>`.  On the shared cluster they are dropped on drop (declare the guard
/// before the database, so the database goes first).
struct Roles {
    tag: String,
    names: Vec<String>,
    /// The shared cluster (drop the roles afterwards), or a private one (dropped with it).
    shared: bool,
    producer: String,
    worker: String,
    monitor: String,
    admin: String,
}

impl Roles {
    /// The duty roles, on the shared cluster.
    fn new(tag: &str) -> Roles {
        Self::create(tag, &mut connect_admin(), true)
    }

    /// The duty roles, in a private cluster (through `client`, a superuser connection).
    fn in_cluster(tag: &str, client: &mut Client) -> Roles {
        Self::create(tag, client, false)
    }

    fn create(tag: &str, client: &mut Client, shared: bool) -> Roles {
        let name = |base: &str| format!("{base}_{tag}_{}", std::process::id());
        let mut roles = Roles {
            tag: tag.to_owned(),
            names: Vec::new(),
            shared,
            producer: name("app_producer"),
            worker: name("app_worker"),
            monitor: name("jobs_monitor"),
            admin: name("jobs_admin"),
        };
        for role in [
            roles.producer.clone(),
            roles.worker.clone(),
            roles.monitor.clone(),
            roles.admin.clone(),
        ] {
            roles.create_role(client, &role, "LOGIN");
        }
        roles
    }

    fn create_role(&mut self, client: &mut Client, name: &str, options: &str) {
        // A leftover of an interrupted run with the same pid; it may own nothing by now.
        let _ = client.batch_execute(&format!("DROP ROLE IF EXISTS {name}"));
        exec(client, &format!("CREATE ROLE {name} {options}"));
        self.names.push(name.to_owned());
    }

    /// One more role of this test, `<base>_<tag>_<pid>`, created with `options`.
    fn add(&mut self, client: &mut Client, base: &str, options: &str) -> String {
        let name = format!("{base}_{}_{}", self.tag, std::process::id());
        self.create_role(client, &name, options);
        name
    }

    /// The recipes (the README's, or 0.2.0's in the baseline run) for this test's roles.
    fn recipes(&self) -> String {
        let text = if baseline_0_2_0() {
            RECIPES_0_2_0.to_owned()
        } else if baseline_0_4_0() {
            readme_recipes()
                .replace(",\n    job.grant_queue, job.revoke_queue", "")
                .replace(", job.queue_grants", "")
        } else {
            readme_recipes()
        };
        text.replace("app_producer", &self.producer)
            .replace("app_worker", &self.worker)
            .replace("jobs_monitor", &self.monitor)
            .replace("jobs_admin", &self.admin)
    }
}

impl Drop for Roles {
    fn drop(&mut self) {
        if !self.shared {
            return;
        }
        let mut admin = connect_admin();
        for name in self.names.iter().rev() {
            if let Err(e) = admin.batch_execute(&format!("DROP ROLE IF EXISTS {name}")) {
                eprintln!("warning: could not drop role {name}: {}", error_text(&e));
            }
        }
    }
}

/// The SQLSTATE of a statement's error; panics when it succeeded.
fn error_code(client: &mut Client, sql: &str) -> String {
    match client.batch_execute(sql) {
        Ok(()) => panic!("{sql}\nsucceeded; it must be refused"),
        Err(e) => e
            .code()
            .map(|c| c.code().to_owned())
            .unwrap_or_else(|| panic!("{sql}\nfailed without a SQLSTATE: {}", error_text(&e))),
    }
}

/// The statement must fail with SQLSTATE 42501 (insufficient_privilege).
fn denied(client: &mut Client, sql: &str) {
    match client.batch_execute(sql) {
        Ok(()) => panic!("{sql}\nsucceeded; it must fail with permission denied (42501)"),
        Err(e) => assert_eq!(
            e.code().map(|c| c.code()),
            Some(INSUFFICIENT_PRIVILEGE),
            "{sql}\nmust fail with permission denied (42501), failed with: {}",
            error_text(&e)
        ),
    }
}

/// What a hostile role could change: every table's rows (the worker's own bookkeeping
/// column `counted_at` left out), every sequence, the triggers, rules and policies on the
/// extension's relations, their privileges, the extension's functions, and every role's
/// attributes.  Read as a superuser.
fn fingerprint(client: &mut Client, roles: &Roles) -> BTreeMap<String, String> {
    // The worker recounts queue depths every maintenance interval: count now, so that its
    // next count changes nothing.  (0.2.0 may lack the function: then skip.)
    let _ = client.batch_execute("SELECT job._count_queue_depth()");
    let mut print = BTreeMap::new();
    let relations: Vec<(String, String)> = client
        .query(
            "SELECT c.oid::regclass::text, c.relkind::text FROM pg_class c
              WHERE c.relnamespace = 'job'::regnamespace AND c.relkind IN ('r', 'p', 'S')
              ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    for (rel, kind) in relations {
        let sql = if kind == "S" {
            format!("SELECT last_value::text || '/' || is_called::text FROM {rel}")
        } else {
            format!(
                "SELECT coalesce(md5(string_agg(r, E'\\n' ORDER BY r)), 'empty')
                   FROM (SELECT (to_jsonb(t) - 'counted_at')::text AS r FROM {rel} t) s"
            )
        };
        print.insert(rel, one::<String>(client, &sql, &[]));
    }
    for (what, sql) in [
        (
            "triggers",
            "SELECT coalesce(string_agg(tgrelid::regclass || '.' || tgname, ',' ORDER BY 1), '')
               FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
              WHERE c.relnamespace = 'job'::regnamespace AND NOT t.tgisinternal",
        ),
        (
            "rules",
            "SELECT coalesce(string_agg(ev_class::regclass || '.' || rulename, ',' ORDER BY 1), '')
               FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class
              WHERE c.relnamespace = 'job'::regnamespace AND r.rulename <> '_RETURN'",
        ),
        (
            "policies",
            "SELECT coalesce(string_agg(polrelid::regclass || '.' || polname, ',' ORDER BY 1), '')
               FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid
              WHERE c.relnamespace = 'job'::regnamespace",
        ),
        (
            "relations",
            "SELECT md5(string_agg(concat_ws('|', oid::regclass, relkind, relowner::regrole, relacl,
                                          relrowsecurity, relhastriggers, relhasrules), ',' ORDER BY oid::regclass::text))
               FROM pg_class WHERE relnamespace = 'job'::regnamespace",
        ),
        (
            "columns",
            "SELECT coalesce(md5(string_agg(attrelid::regclass || '.' || attname || attacl::text, ',' ORDER BY 1)), '')
               FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
              WHERE c.relnamespace = 'job'::regnamespace AND a.attacl IS NOT NULL",
        ),
        (
            "functions",
            "SELECT md5(string_agg(concat_ws('|', oid::regprocedure, proowner::regrole, prosecdef,
                                          proconfig, proacl, md5(prosrc)), ',' ORDER BY oid::regprocedure::text))
               FROM pg_proc WHERE pronamespace = 'job'::regnamespace",
        ),
        (
            "schema",
            "SELECT concat_ws('|', nspowner::regrole, nspacl) FROM pg_namespace WHERE nspname = 'job'",
        ),
    ] {
        print.insert(what.to_owned(), one::<String>(client, sql, &[]));
    }
    // This test's roles (others come and go with the tests running alongside).
    for (what, sql) in [
        (
            "roles",
            "SELECT string_agg(concat_ws('|', rolname, rolsuper, rolcreaterole, rolcreatedb, rolbypassrls,
                                         rolreplication), ',' ORDER BY rolname)
               FROM pg_roles WHERE rolname = ANY ($1)",
        ),
        (
            "memberships",
            "SELECT coalesce(string_agg(roleid::regrole || '>' || member::regrole, ',' ORDER BY 1), '')
               FROM pg_auth_members WHERE roleid::regrole::text = ANY ($1) OR member::regrole::text = ANY ($1)",
        ),
    ] {
        print.insert(what.to_owned(), one::<String>(client, sql, &[&roles.names]));
    }
    print
}

fn assert_unchanged(
    before: &BTreeMap<String, String>,
    after: &BTreeMap<String, String>,
    what: &str,
) {
    let changed: Vec<&String> = before
        .keys()
        .chain(after.keys())
        .filter(|k| before.get(*k) != after.get(*k))
        .collect();
    assert!(
        changed.is_empty(),
        "{what} changed: {changed:?}\nbefore: {before:#?}\nafter: {after:#?}"
    );
}

fn is_superuser(client: &mut Client, role: &str) -> bool {
    one(
        client,
        "SELECT rolsuper FROM pg_roles WHERE rolname = $1",
        &[&role],
    )
}

/// Every relation of schema `job` of the given kinds (`r`, `p`, `v`, `S`...), qualified.
fn job_relations(client: &mut Client, kinds: &[&str]) -> Vec<String> {
    let kinds: Vec<String> = kinds.iter().map(|k| k.to_string()).collect();
    client
        .query(
            "SELECT c.oid::regclass::text FROM pg_class c
              WHERE c.relnamespace = 'job'::regnamespace AND c.relkind::text = ANY ($1)
              ORDER BY 1",
            &[&kinds],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

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

// ------------------------------------------------------------------------------------------
// Finding 1: triggers
// ------------------------------------------------------------------------------------------

/// Finding 1: the admin duty attached a trigger to job.live_jobs that an enqueue fired as
/// the extension's owner (a superuser), and made itself superuser.  Now no duty may create a
/// trigger or rule on any job table or view, and the enqueue leaves the admin as it was.
#[test]
fn admin_duty_cannot_attach_a_trigger_that_runs_as_the_owner() {
    let roles = Roles::new("trig");
    let db = security_db("sec_trigger");
    let mut su = db.connect();
    exec(&mut su, &roles.recipes());
    exec(&mut su, "SELECT job.create_queue('emails')");
    let before = fingerprint(&mut su, &roles);

    let mut admin = connect_as(&db, &roles.admin);
    exec(
        &mut admin,
        &format!(
            "CREATE FUNCTION pg_temp.e() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
                     EXECUTE 'ALTER ROLE {} SUPERUSER';
                 END IF;
                 RETURN NEW;
             END $$",
            roles.admin
        ),
    );
    // The finding's statement first, then every other way to hang code on the tables.
    denied(
        &mut admin,
        "CREATE TRIGGER z BEFORE INSERT ON job.live_jobs FOR EACH ROW EXECUTE FUNCTION pg_temp.e()",
    );
    for table in job_relations(&mut su, &["r", "p"]) {
        denied(
            &mut admin,
            &format!(
                "CREATE TRIGGER z BEFORE INSERT OR UPDATE OR DELETE ON {table}
                 FOR EACH ROW EXECUTE FUNCTION pg_temp.e()"
            ),
        );
        denied(
            &mut admin,
            &format!(
                "CREATE CONSTRAINT TRIGGER zc AFTER INSERT ON {table} DEFERRABLE INITIALLY DEFERRED
                 FOR EACH ROW EXECUTE FUNCTION pg_temp.e()"
            ),
        );
        denied(
            &mut admin,
            &format!("CREATE RULE zr AS ON INSERT TO {table} DO ALSO NOTIFY pg_jobqueue"),
        );
    }
    for view in job_relations(&mut su, &["v"]) {
        denied(
            &mut admin,
            &format!(
                "CREATE TRIGGER z INSTEAD OF INSERT ON {view} FOR EACH ROW EXECUTE FUNCTION pg_temp.e()"
            ),
        );
        denied(
            &mut admin,
            &format!("CREATE RULE zr AS ON INSERT TO {view} DO INSTEAD NOTHING"),
        );
    }
    assert_unchanged(
        &before,
        &fingerprint(&mut su, &roles),
        "the extension's objects",
    );

    // The enqueue that fired the trigger (a producer's; the admin duty may not enqueue).
    denied(&mut admin, "SELECT job.enqueue('emails', '{}')");
    let mut producer = connect_as(&db, &roles.producer);
    exec(&mut producer, "SELECT job.enqueue('emails', '{}')");
    assert!(
        !is_superuser(&mut su, &roles.admin),
        "the admin duty made itself superuser"
    );
}

// ------------------------------------------------------------------------------------------
// Finding 2: forged handlers
// ------------------------------------------------------------------------------------------

/// Finding 2: the admin duty wrote a handler row naming run_as => postgres, and the worker
/// ran its function as the superuser.  Now it can write no handler row (job.handlers is a
/// view, job.handler_defs takes no privilege from anyone), and job.set_handler refuses a
/// run_as it is not a member of (42501).  Its own handler, as itself, is still allowed.
#[test]
fn admin_duty_cannot_forge_a_handler_or_name_a_role_it_is_not() {
    let roles = Roles::new("forge");
    let db = security_db("sec_forge");
    let mut su = db.connect();
    exec(&mut su, &roles.recipes());
    exec(
        &mut su,
        &format!(
            "CREATE SCHEMA adm AUTHORIZATION {admin};
             SELECT job.create_queue('b');",
            admin = roles.admin
        ),
    );
    let mut admin = connect_as(&db, &roles.admin);
    exec(
        &mut admin,
        "CREATE FUNCTION adm.h(payload jsonb) RETURNS jsonb LANGUAGE sql
             AS $$ SELECT jsonb_build_object('ran_as', current_user::text) $$",
    );
    let before = fingerprint(&mut su, &roles);

    // job.handlers is a view over two tables: not insertable, and not granted for writes.
    let code = error_code(
        &mut admin,
        "INSERT INTO job.handlers (queue, handler, run_as, concurrency, timeout)
         VALUES ('b', 'adm.h(jsonb)', 'postgres', 1, '1 minute')",
    );
    assert!(
        code == INSUFFICIENT_PRIVILEGE || code == "55000",
        "inserting into job.handlers failed with {code}, not for lack of privilege or updatability"
    );
    if !baseline_0_2_0() {
        denied(
            &mut admin,
            "INSERT INTO job.handler_defs (queue, handler, run_as, concurrency, timeout, set_by)
             VALUES ('b', 'adm.h(jsonb)', 'postgres', 1, '1 minute', 'postgres')",
        );
        denied(
            &mut admin,
            "UPDATE job.handler_defs SET run_as = 'postgres', set_by = 'postgres'",
        );
    }
    denied(
        &mut admin,
        "SELECT job.set_handler('b', 'adm.h(jsonb)', run_as => 'postgres')",
    );
    // Nor any other role it does not belong to.
    denied(
        &mut admin,
        &format!(
            "SELECT job.set_handler('b', 'adm.h(jsonb)', run_as => '{}')",
            roles.producer
        ),
    );
    assert_unchanged(
        &before,
        &fingerprint(&mut su, &roles),
        "the extension's objects",
    );
    assert_eq!(
        one::<i64>(&mut su, "SELECT count(*) FROM job.handlers", &[]),
        0
    );

    // Its own handler is fine, and records who set it and as whom it runs.
    exec(&mut admin, "SELECT job.set_handler('b', 'adm.h(jsonb)')");
    let (run_as, set_by): (String, String) = {
        let row = su
            .query_one(
                "SELECT run_as::text, set_by::text FROM job.handlers WHERE queue = 'b'",
                &[],
            )
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!(
        (run_as.as_str(), set_by.as_str()),
        (roles.admin.as_str(), roles.admin.as_str())
    );
}

/// Finding 9a: set_handler called inside a SECURITY DEFINER function owned by the admin duty,
/// which a superuser then calls: the caller set_handler sees is the function's owner, so
/// naming run_as => postgres is refused, and the default run_as is the owner, not the
/// superuser who called.
#[test]
fn set_handler_through_a_definer_function_acts_for_its_owner_not_the_superuser_calling() {
    let roles = Roles::new("defr");
    let db = security_db("sec_definer");
    let mut su = db.connect();
    exec(&mut su, &roles.recipes());
    exec(
        &mut su,
        &format!(
            "CREATE SCHEMA adm AUTHORIZATION {admin};
             SELECT job.create_queue('b');",
            admin = roles.admin
        ),
    );
    let mut admin = connect_as(&db, &roles.admin);
    exec(
        &mut admin,
        "CREATE FUNCTION adm.h(payload jsonb) RETURNS jsonb LANGUAGE sql AS $$ SELECT payload $$;
         CREATE FUNCTION adm.install_as_postgres() RETURNS void LANGUAGE sql SECURITY DEFINER
             AS $$ SELECT job.set_handler('b', 'adm.h(jsonb)', run_as => 'postgres') $$;
         CREATE FUNCTION adm.install_as_caller() RETURNS void LANGUAGE sql SECURITY DEFINER
             AS $$ SELECT job.set_handler('b', 'adm.h(jsonb)') $$;",
    );
    let before = fingerprint(&mut su, &roles);
    // The superuser falls for it: still refused, for the function's owner is no superuser.
    denied(&mut su, "SELECT adm.install_as_postgres()");
    assert_unchanged(
        &before,
        &fingerprint(&mut su, &roles),
        "the extension's objects",
    );

    exec(&mut su, "SELECT adm.install_as_caller()");
    let row = su
        .query_one(
            "SELECT run_as::text, set_by::text FROM job.handlers WHERE queue = 'b'",
            &[],
        )
        .unwrap();
    let (run_as, set_by): (String, String) = (row.get(0), row.get(1));
    assert_eq!(
        (run_as.as_str(), set_by.as_str()),
        (roles.admin.as_str(), roles.admin.as_str()),
        "the handler must run as (and be set by) the definer function's owner"
    );
}

/// set_handler switches to the extension's owner to record the handler; a refusal caught in
/// a subtransaction (a PL/pgSQL exception block, a savepoint) must leave the caller itself,
/// not the owner.
#[test]
fn a_caught_set_handler_refusal_leaves_the_caller_as_itself() {
    let roles = Roles::new("subx");
    let db = security_db("sec_subxact");
    let mut su = db.connect();
    exec(&mut su, &roles.recipes());
    exec(
        &mut su,
        &format!(
            "CREATE SCHEMA adm AUTHORIZATION {admin};
             SELECT job.create_queue('b');",
            admin = roles.admin
        ),
    );
    let mut admin = connect_as(&db, &roles.admin);
    exec(
        &mut admin,
        "CREATE FUNCTION adm.h(payload jsonb) RETURNS jsonb LANGUAGE sql AS $$ SELECT payload $$;
         CREATE TABLE adm.seen (at text, who text);
         DO $$
         BEGIN
             BEGIN
                 PERFORM job.set_handler('b', 'adm.h(jsonb)', run_as => 'postgres');
             EXCEPTION WHEN insufficient_privilege THEN
                 INSERT INTO adm.seen VALUES ('in handler', current_user);
             END;
             INSERT INTO adm.seen VALUES ('after block', current_user);
         END $$;
         BEGIN;
         SAVEPOINT s;",
    );
    denied(
        &mut admin,
        "SELECT job.set_handler('b', 'adm.h(jsonb)', run_as => 'postgres')",
    );
    exec(
        &mut admin,
        "ROLLBACK TO SAVEPOINT s;
         INSERT INTO adm.seen VALUES ('after savepoint', current_user);
         COMMIT;",
    );
    let seen: Vec<(String, String)> = su
        .query("SELECT at, who FROM adm.seen ORDER BY at", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let who = roles.admin.clone();
    assert_eq!(
        seen,
        vec![
            ("after block".to_owned(), who.clone()),
            ("after savepoint".to_owned(), who.clone()),
            ("in handler".to_owned(), who.clone()),
        ]
    );
    // Nor can it become the owner by any SET afterwards.
    denied(&mut admin, "SET ROLE postgres");
    assert!(!is_superuser(&mut su, &roles.admin));
}

// ------------------------------------------------------------------------------------------
// Finding 3: commit-time code of a handler
// ------------------------------------------------------------------------------------------

/// Finding 3: a handler's deferred constraint trigger fired at commit, which the executor ran
/// as its superuser (0.2.0), so the trigger could ALTER ROLE ... SUPERUSER.  Now the commit
/// runs as the handler's role: the trigger sees that role as current_user, is no superuser,
/// and every way out (ALTER ROLE, SET ROLE, SET SESSION AUTHORIZATION, set_config('role'),
/// RESET ROLE) fails.
#[test]
fn a_handlers_deferred_trigger_fires_as_the_handlers_role() {
    let (cluster, mut su) = served_cluster("sec-deferred", &[]);
    let roles = Roles::in_cluster("dfr", &mut su);
    exec(&mut su, &roles.recipes());
    let role = roles.admin.clone();
    exec(
        &mut su,
        &format!(
            "CREATE SCHEMA hs AUTHORIZATION {role};
             SELECT job.create_queue('deferred');"
        ),
    );
    let mut h = connect_cluster_as(&cluster, "postgres", &role);
    exec(
        &mut h,
        "CREATE TABLE hs.seen (who text, session_who text, was_superuser boolean, escapes text);
         CREATE TABLE hs.t (n int);
         CREATE FUNCTION hs.at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
         DECLARE
             escapes text := '';
         BEGIN
             BEGIN
                 EXECUTE format('ALTER ROLE %I SUPERUSER', current_user);
                 escapes := escapes || 'alter_role:ok ';
             EXCEPTION WHEN OTHERS THEN escapes := escapes || 'alter_role:' || SQLSTATE || ' ';
             END;
             BEGIN
                 SET ROLE postgres;
                 escapes := escapes || 'set_role:ok ';
             EXCEPTION WHEN OTHERS THEN escapes := escapes || 'set_role:' || SQLSTATE || ' ';
             END;
             BEGIN
                 SET SESSION AUTHORIZATION postgres;
                 escapes := escapes || 'session_authorization:ok ';
             EXCEPTION WHEN OTHERS THEN escapes := escapes || 'session_authorization:' || SQLSTATE || ' ';
             END;
             BEGIN
                 PERFORM set_config('role', 'postgres', false);
                 escapes := escapes || 'set_config_role:ok ';
             EXCEPTION WHEN OTHERS THEN escapes := escapes || 'set_config_role:' || SQLSTATE || ' ';
             END;
             BEGIN
                 RESET ROLE;
                 escapes := escapes || 'reset_role:ok ';
             EXCEPTION WHEN OTHERS THEN escapes := escapes || 'reset_role:' || SQLSTATE || ' ';
             END;
             -- After the attempts: whoever we are now is who we stayed.
             INSERT INTO hs.seen VALUES (current_user, session_user,
                                         (SELECT rolsuper FROM pg_roles WHERE rolname = current_user),
                                         escapes);
             RETURN NULL;
         END $$;
         CREATE CONSTRAINT TRIGGER at_commit AFTER INSERT ON hs.t
             DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION hs.at_commit();
         CREATE FUNCTION hs.h(payload jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
         BEGIN
             INSERT INTO hs.t VALUES ((payload->>'n')::int);
             RETURN jsonb_build_object('inserted', payload->'n');
         END $$;
         SELECT job.set_handler('deferred', 'hs.h(jsonb)');",
    );
    let id: i64 = one(&mut su, "SELECT job.enqueue('deferred', '{\"n\": 1}')", &[]);
    wait_for_finished(&cluster, &mut su, "deferred", 1, Duration::from_secs(30));
    let state: String = one(&mut su, "SELECT state FROM job.jobs WHERE id = $1", &[&id]);
    assert_eq!(state, "completed");

    let row = su
        .query_one(
            "SELECT who, session_who, was_superuser, escapes FROM hs.seen",
            &[],
        )
        .unwrap_or_else(|e| {
            panic!(
                "the deferred trigger did not record once: {}",
                error_text(&e)
            )
        });
    let (who, session_who, was_superuser, escapes): (String, String, bool, String) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    assert_eq!(
        who, role,
        "the deferred trigger ran as {who} (session {session_who}), not as the handler's role"
    );
    assert!(!was_superuser, "the deferred trigger ran as a superuser");
    assert!(
        !escapes.contains(":ok"),
        "the deferred trigger got out of the handler's role: {escapes}"
    );
    assert!(
        !is_superuser(&mut su, &role),
        "the handler's role made itself superuser"
    );
}

/// Beyond finding 3: commit-time code runs as the handler's role, but whatever settings it
/// makes at session level outlive the commit, into the executor's next statements, which run
/// as the superuser.  A deferred trigger that sets search_path = 'hs, pg_catalog' (hs: the
/// role's schema, holding an operator = on regrole, which pg_catalog lacks) must not get that
/// operator called by the executor as superuser.
#[test]
fn a_handlers_commit_cannot_steer_the_executors_own_statements() {
    let (cluster, mut su) = served_cluster("sec-commit-guc", &[]);
    let roles = Roles::in_cluster("guc", &mut su);
    exec(&mut su, &roles.recipes());
    let role = roles.admin.clone();
    exec(
        &mut su,
        &format!(
            "CREATE SCHEMA hs AUTHORIZATION {role};
             SELECT job.create_queue('steer');"
        ),
    );
    let mut h = connect_cluster_as(&cluster, "postgres", &role);
    exec(
        &mut h,
        "CREATE TABLE hs.calls (decoy text, who text);
         GRANT INSERT ON hs.calls TO PUBLIC;
         CREATE FUNCTION hs.regrole_eq(regrole, regrole) RETURNS boolean LANGUAGE plpgsql AS $$
         BEGIN
             INSERT INTO hs.calls VALUES ('regrole =', current_user);
             IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
                 EXECUTE format('ALTER ROLE %I SUPERUSER', (SELECT nspowner::regrole::text
                                                              FROM pg_namespace WHERE nspname = 'hs'));
             END IF;
             RETURN $1::oid OPERATOR(pg_catalog.=) $2::oid;
         END $$;
         CREATE OPERATOR hs.= (LEFTARG = regrole, RIGHTARG = regrole, FUNCTION = hs.regrole_eq);
         CREATE TABLE hs.t (n int);
         CREATE FUNCTION hs.at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             PERFORM set_config('search_path', 'hs, pg_catalog', false);
             INSERT INTO hs.calls VALUES ('at_commit', current_user);
             RETURN NULL;
         END $$;
         CREATE CONSTRAINT TRIGGER at_commit AFTER INSERT ON hs.t
             DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION hs.at_commit();
         CREATE FUNCTION hs.h(payload jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
         BEGIN
             INSERT INTO hs.t VALUES (1);
             RETURN payload;
         END $$;
         SELECT job.set_handler('steer', 'hs.h(jsonb)');",
    );
    exec(&mut su, "SELECT job.enqueue('steer', '{}')");
    wait_for_finished(&cluster, &mut su, "steer", 1, Duration::from_secs(30));
    // The executor goes on claiming (every tick, and for this job).
    exec(&mut su, "SELECT job.enqueue('steer', '{}')");
    wait_for_finished(&cluster, &mut su, "steer", 2, Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(1));

    let calls: Vec<(String, String, i64)> = su
        .query(
            "SELECT decoy, who, count(*) FROM hs.calls GROUP BY 1, 2 ORDER BY 1, 2",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert!(
        calls.iter().any(|(decoy, _, _)| decoy == "at_commit"),
        "the deferred trigger never ran: the test proves nothing ({calls:?})"
    );
    let foreign: Vec<&(String, String, i64)> =
        calls.iter().filter(|(_, who, _)| *who != role).collect();
    assert!(
        foreign.is_empty(),
        "the executor ran the handler role's operator as another role (decoy, as whom, how \
         often): {foreign:?}"
    );
    assert!(
        !is_superuser(&mut su, &role),
        "the handler's role made itself superuser through the executor's own statements"
    );
}

/// Finding 9b: a handler set by a member of run_as, whose membership is revoked afterwards:
/// the executors stop running it (job.handlers says why) and its jobs wait; granted again,
/// they run.
#[test]
fn revoking_the_setters_membership_in_run_as_stops_the_handler() {
    let (cluster, mut su) = served_cluster("sec-revoked", &[]);
    let mut roles = Roles::in_cluster("rvk", &mut su);
    exec(&mut su, &roles.recipes());
    let service = roles.add(&mut su, "svc", "NOLOGIN");
    let deployer = roles.admin.clone();
    exec(
        &mut su,
        &format!(
            "GRANT {service} TO {deployer};
             CREATE SCHEMA svc AUTHORIZATION {service};
             CREATE TABLE svc.calls (n int, who text);
             ALTER TABLE svc.calls OWNER TO {service};
             SELECT job.create_queue('svcq');"
        ),
    );
    let mut d = connect_cluster_as(&cluster, "postgres", &deployer);
    exec(
        &mut d,
        &format!(
            "SET ROLE {service};
             CREATE FUNCTION svc.h(payload jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
             BEGIN
                 INSERT INTO svc.calls VALUES ((payload->>'n')::int, current_user);
                 RETURN payload;
             END $$;
             RESET ROLE;
             SELECT job.set_handler('svcq', 'svc.h(jsonb)', run_as => '{service}');"
        ),
    );
    exec(&mut su, "SELECT job.enqueue('svcq', '{\"n\": 1}')");
    wait_for_finished(&cluster, &mut su, "svcq", 1, Duration::from_secs(30));

    exec(&mut su, &format!("REVOKE {service} FROM {deployer}"));
    let state: String = one(
        &mut su,
        "SELECT state FROM job.handlers WHERE queue = 'svcq'",
        &[],
    );
    assert_eq!(state, "set_by no longer a member of run_as");
    let waiting: i64 = one(&mut su, "SELECT job.enqueue('svcq', '{\"n\": 2}')", &[]);
    std::thread::sleep(Duration::from_secs(3));
    let job_state: String = one(
        &mut su,
        "SELECT state FROM job.jobs WHERE id = $1",
        &[&waiting],
    );
    assert_eq!(
        job_state, "waiting",
        "a handler whose setter left run_as still ran"
    );
    assert_eq!(
        one::<i64>(&mut su, "SELECT count(*) FROM svc.calls WHERE n = 2", &[]),
        0
    );

    exec(&mut su, &format!("GRANT {service} TO {deployer}"));
    wait_for_finished(&cluster, &mut su, "svcq", 2, Duration::from_secs(30));
    let calls: Vec<(i32, String)> = su
        .query("SELECT n, who FROM svc.calls ORDER BY n", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(calls, vec![(1, service.clone()), (2, service.clone())]);
}

/// Finding 9c: run_as dropped after set_handler: its jobs stay waiting, job.handlers says
/// 'run_as role dropped', its executors retire, nothing crashes, and another role's handler
/// queue keeps running.
#[test]
fn a_dropped_run_as_role_leaves_its_jobs_waiting_and_nothing_crashes() {
    let (cluster, mut su) = served_cluster("sec-dropped", &[]);
    let mut roles = Roles::in_cluster("drp", &mut su);
    let doomed = roles.add(&mut su, "doomed", "NOLOGIN");
    let other = roles.add(&mut su, "other", "NOLOGIN");
    exec(
        &mut su,
        &format!(
            "CREATE TABLE calls (queue text, who text);
             GRANT INSERT ON calls TO {doomed}, {other};
             CREATE FUNCTION h(payload jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
             BEGIN
                 INSERT INTO calls VALUES (payload->>'q', current_user);
                 RETURN payload;
             END $$;
             SELECT job.create_queue('dq');
             SELECT job.create_queue('oq');
             SELECT job.set_handler('dq', 'h(jsonb)', run_as => '{doomed}');
             SELECT job.set_handler('oq', 'h(jsonb)', run_as => '{other}');"
        ),
    );
    exec(
        &mut su,
        "SELECT job.enqueue('dq', '{\"q\": \"dq\"}'); SELECT job.enqueue('oq', '{\"q\": \"oq\"}');",
    );
    wait_for_finished(&cluster, &mut su, "dq", 1, Duration::from_secs(30));
    wait_for_finished(&cluster, &mut su, "oq", 1, Duration::from_secs(30));
    let scheduler = worker_pids(&mut su, "scheduler");

    exec(
        &mut su,
        &format!("REVOKE INSERT ON calls FROM {doomed}; DROP ROLE {doomed};"),
    );
    let state: String = one(
        &mut su,
        "SELECT state FROM job.handlers WHERE queue = 'dq'",
        &[],
    );
    assert_eq!(state, "run_as role dropped");
    let stuck: i64 = one(&mut su, "SELECT job.enqueue('dq', '{\"q\": \"dq\"}')", &[]);
    exec(&mut su, "SELECT job.enqueue('oq', '{\"q\": \"oq\"}')");
    wait_for_finished(&cluster, &mut su, "oq", 2, Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(2));
    let job_state: String = one(
        &mut su,
        "SELECT state FROM job.jobs WHERE id = $1",
        &[&stuck],
    );
    assert_eq!(job_state, "waiting");
    assert_eq!(
        one::<i64>(
            &mut su,
            "SELECT count(*) FROM calls WHERE queue = 'dq'",
            &[]
        ),
        1
    );
    assert_eq!(
        worker_pids(&mut su, "scheduler"),
        scheduler,
        "the scheduler was replaced"
    );
    let log = cluster.log();
    for bad in ["PANIC", "terminated by signal"] {
        assert!(
            !log.contains(bad),
            "the server log shows a crash ({bad}):\n{}",
            cluster.log_tail(30)
        );
    }
    // The dropped role's executor retires: only the other role's is left.
    let retired = wait_until(Duration::from_secs(15), || {
        worker_pids(&mut su, "executor").len() == 1
    });
    assert!(
        retired,
        "the executor of the dropped run_as role did not retire: {:?}\n--- server log (tail) ---\n{}",
        worker_pids(&mut su, "executor"),
        cluster.log_tail(5)
    );
}

// ------------------------------------------------------------------------------------------
// Finding 4: locks any role could take
// ------------------------------------------------------------------------------------------

/// Finding 4 (producers): 0.2.0's wake-up slots were advisory locks (key space x'6a717765'),
/// taken at pre-commit where no statement timeout applies; a role with only CONNECT held all
/// 1024 and every producer's commit hung while a consumer waited.  Now the slots are internal
/// locks: holding those advisory keys changes nothing, and 100 enqueues commit promptly (a
/// lock_timeout of 5 s turns any wait on them into an error).
#[test]
fn advisory_locks_on_the_old_wakeup_keys_do_not_stall_producers() {
    let mut roles = Roles::new("wlock");
    let db = security_db("sec_wakeup_locks");
    let mut su = db.connect();
    exec(&mut su, &roles.recipes());
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

/// Finding 4 (handlers): 0.2.0's executors took a handler queue's concurrency slots as
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

// ------------------------------------------------------------------------------------------
// Finding 5: schedule ticks
// ------------------------------------------------------------------------------------------

/// Finding 5: a tick's job carried the idempotency key `schedule:<name>:<tick epoch>`, so a
/// producer that enqueued that key into the schedule's queue first suppressed the tick (the
/// schedule's enqueue returned the producer's job).  Now the tick fires a job of its own with
/// the schedule's payload, and the producer's job is left as it was.
#[test]
fn a_producer_cannot_suppress_a_schedule_tick_by_taking_its_idempotency_key() {
    let roles = Roles::new("tick");
    let db = security_db("sec_tick");
    let mut su = db.connect();
    exec(&mut su, &roles.recipes());
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

// ------------------------------------------------------------------------------------------
// Finding 6: the audit log, and what the channel tells
// ------------------------------------------------------------------------------------------

/// Finding 6: the admin duty could insert forged rows into job.audit_log and UPDATE
/// job.queues without leaving an audit row.  Now every such write is refused (42501) and
/// nothing changes.
#[test]
fn admin_duty_cannot_forge_audit_rows_or_change_tables_behind_the_audit() {
    let roles = Roles::new("audw");
    let db = security_db("sec_audit_writes");
    let mut su = db.connect();
    exec(&mut su, &roles.recipes());
    exec(
        &mut su,
        "SELECT job.create_queue('emails'); SELECT job.enqueue('emails', '{}');",
    );
    let before = fingerprint(&mut su, &roles);
    let mut admin = connect_as(&db, &roles.admin);
    let mut statements = vec![
        "INSERT INTO job.audit_log (role, session_role, action, arguments)
         VALUES ('postgres', 'postgres', 'create_queue', '{}')",
        "UPDATE job.audit_log SET role = 'postgres'",
        "DELETE FROM job.audit_log",
        "UPDATE job.queues SET paused = true",
        "UPDATE job.queues SET max_retries = 0",
        "DELETE FROM job.live_jobs",
        "UPDATE job.live_jobs SET payload = '{\"forged\": true}'",
        "TRUNCATE job.finished_jobs",
    ];
    if !baseline_0_2_0() {
        statements.extend([
            "INSERT INTO job.audit_entries (role, session_role, action, arguments)
             VALUES ('postgres', 'postgres', 'create_queue', '{}')",
            "UPDATE job.audit_entries SET role = 'postgres'",
            "DELETE FROM job.audit_entries",
        ]);
    }
    for sql in statements {
        denied(&mut admin, sql);
    }
    assert_unchanged(
        &before,
        &fingerprint(&mut su, &roles),
        "the extension's objects",
    );
}

/// Finding 6: any role may LISTEN on any channel, and 0.2.0's wake-ups carried the queue's
/// name.  Now a role with no grants at all hears only the queue's id (job.queue_id), never
/// the name.
#[test]
fn wakeup_notifications_carry_the_queue_id_not_its_name() {
    let mut roles = Roles::new("ntfy");
    let db = security_db("sec_notify_payload");
    let mut su = db.connect();
    exec(&mut su, &roles.recipes());
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

/// Finding 6: a role with only CONNECT can NOTIFY pg_jobqueue with any payload; that is at
/// most a spurious wake-up: no job, queue, audit row or anything else changes.
#[test]
fn a_spoofed_wakeup_changes_nothing() {
    let mut roles = Roles::new("spoof");
    let db = security_db("sec_spoof");
    let mut su = db.connect();
    exec(&mut su, &roles.recipes());
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

/// Finding 9e: the audit log records the session's current role (the SET ROLE target) and
/// the login role, neither the extension's owner nor the owner of a SECURITY DEFINER
/// function in between; no duty can write it other than through the functions.
#[test]
fn audit_log_records_the_set_role_target_and_the_login_role() {
    let mut roles = Roles::new("audr");
    let db = security_db("sec_audit_role");
    let mut su = db.connect();
    exec(&mut su, &roles.recipes());
    let alice = roles.add(&mut su, "alice", "LOGIN NOINHERIT");
    let bob = roles.add(&mut su, "bob", "LOGIN");
    let admin = roles.admin.clone();
    exec(
        &mut su,
        &format!(
            "GRANT {admin} TO {alice};
             CREATE SCHEMA adm AUTHORIZATION {admin};"
        ),
    );
    let mut a = connect_as(&db, &alice);
    denied(&mut a, "SELECT job.create_queue('as_alice')");
    exec(
        &mut a,
        &format!("SET ROLE {admin}; SELECT job.create_queue('via_set_role');"),
    );
    // A definer function of the admin duty, called by bob.
    exec(
        &mut a,
        &format!(
            "CREATE FUNCTION adm.make_queue(name text) RETURNS void LANGUAGE sql SECURITY DEFINER
                 AS $$ SELECT job.create_queue(name) $$;
             GRANT USAGE ON SCHEMA adm TO {bob};
             GRANT EXECUTE ON FUNCTION adm.make_queue(text) TO {bob};"
        ),
    );
    let mut b = connect_as(&db, &bob);
    exec(&mut b, "SELECT adm.make_queue('via_definer')");

    let rows: Vec<(String, String, String)> = su
        .query(
            "SELECT arguments->>'name', role::text, session_role::text FROM job.audit_log
              WHERE action = 'create_queue' ORDER BY id",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        rows,
        vec![
            ("via_set_role".to_owned(), admin.clone(), alice.clone()),
            ("via_definer".to_owned(), bob.clone(), bob.clone()),
        ]
    );
}

// ------------------------------------------------------------------------------------------
// 7: every object of the schema, for roles without the recipes
// ------------------------------------------------------------------------------------------

/// A call of every function of schema `job`: (signature, SQL).  Arguments are NULLs of the
/// argument types; for STRICT functions a value instead (the planner folds a strict call
/// with a NULL constant argument to NULL without calling the function or checking EXECUTE,
/// so a NULL probe would prove nothing about them).
fn function_probes(su: &mut Client) -> Vec<(String, String)> {
    let rows = su
        .query(
            "SELECT p.oid::regprocedure::text, quote_ident(p.proname), p.proisstrict,
                    array(SELECT format_type(t, NULL) FROM unnest(p.proargtypes::oid[]) WITH ORDINALITY u(t, n)
                           ORDER BY n)
               FROM pg_proc p WHERE p.pronamespace = 'job'::regnamespace ORDER BY 1",
            &[],
        )
        .unwrap();
    rows.iter()
        .map(|r| {
            let signature: String = r.get(0);
            let name: String = r.get(1);
            let strict: bool = r.get(2);
            let types: Vec<String> = r.get(3);
            let args: Vec<String> = types
                .iter()
                .map(|t| {
                    if t == "anyelement" {
                        return if strict { "1".into() } else { "NULL::int".into() };
                    }
                    if !strict {
                        return format!("NULL::{t}");
                    }
                    let value = match t.as_str() {
                        "text" => "'x'",
                        "integer" => "1",
                        "bigint" => "1",
                        "double precision" => "0.5",
                        "boolean" => "false",
                        "interval" => "'1 second'",
                        "timestamp with time zone" => "'2000-01-01 00:00:00+00'",
                        "jsonb" => "'{}'",
                        "uuid" => "'00000000-0000-0000-0000-000000000000'",
                        "regrole" => "'pg_monitor'",
                        "regprocedure" => "'pg_catalog.now()'",
                        t if t.ends_with("[]") => "'{}'",
                        other => panic!(
                            "{signature}: no sample value for a strict argument of type {other}; add one"
                        ),
                    };
                    format!("{value}::{t}")
                })
                .collect();
            (
                signature,
                format!("SELECT job.{name}({})", args.join(", ")),
            )
        })
        .collect()
}

/// Runs every function probe, every SELECT and every write on every relation of schema
/// `job` as `client`; returns what was not refused with 42501 (statement, outcome).
fn probe_everything(su: &mut Client, client: &mut Client) -> Vec<(String, String)> {
    let mut not_denied = Vec::new();
    let mut check = |client: &mut Client, what: String, sql: String| {
        let result = client.batch_execute(&sql);
        // A failed statement may leave a transaction open (LOCK below).
        let _ = client.batch_execute("ROLLBACK");
        let outcome = match result {
            Ok(()) => "succeeded".to_owned(),
            Err(e) if e.code().map(|c| c.code()) == Some(INSUFFICIENT_PRIVILEGE) => return,
            Err(e) => error_text(&e),
        };
        not_denied.push((what, format!("{sql} -> {outcome}")));
    };
    for (signature, sql) in function_probes(su) {
        check(client, signature, sql);
    }
    for rel in job_relations(su, &["r", "p", "v", "m", "S"]) {
        check(
            client,
            format!("{rel} select"),
            format!("SELECT * FROM {rel} LIMIT 1"),
        );
    }
    for seq in job_relations(su, &["S"]) {
        check(
            client,
            format!("{seq} nextval"),
            format!("SELECT nextval('{seq}')"),
        );
    }
    for table in job_relations(su, &["r", "p"]) {
        let column: String = one(
            su,
            "SELECT quote_ident(attname) FROM pg_attribute WHERE attrelid = $1::text::regclass
                AND attnum = 1",
            &[&table],
        );
        for (what, sql) in [
            ("insert", format!("INSERT INTO {table} DEFAULT VALUES")),
            ("update", format!("UPDATE {table} SET {column} = {column}")),
            ("delete", format!("DELETE FROM {table}")),
            ("truncate", format!("TRUNCATE {table}")),
            (
                "lock",
                format!("BEGIN; LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE NOWAIT; ROLLBACK"),
            ),
        ] {
            check(client, format!("{table} {what}"), sql);
        }
    }
    not_denied
}

/// Finding 7: a role with only CONNECT (PUBLIC's default on a database) reaches nothing in
/// schema job: every function, view, table and sequence is refused with 42501, and nothing
/// changes.
#[test]
fn a_connect_only_role_is_refused_every_function_view_and_table() {
    let mut roles = Roles::new("conn");
    let db = security_db("sec_connect_only");
    let mut su = db.connect();
    exec(&mut su, &roles.recipes());
    let nobody = roles.add(&mut su, "nobody", "LOGIN");
    exec(
        &mut su,
        "SELECT job.create_queue('emails'); SELECT job.enqueue('emails', '{}');",
    );
    let before = fingerprint(&mut su, &roles);
    let mut hostile = connect_as(&db, &nobody);
    let not_denied = probe_everything(&mut su, &mut hostile);
    assert!(
        not_denied.is_empty(),
        "a role with only CONNECT was not refused (42501):\n{not_denied:#?}"
    );
    assert_unchanged(
        &before,
        &fingerprint(&mut su, &roles),
        "the extension's objects",
    );
}

/// Finding 7: a role with USAGE on schema job and nothing else is refused (42501) everything
/// but the pure helpers granted to PUBLIC, and changes nothing.
#[test]
fn schema_usage_alone_reaches_only_the_public_pure_helpers() {
    let mut roles = Roles::new("usage");
    let db = security_db("sec_usage_only");
    let mut su = db.connect();
    exec(&mut su, &roles.recipes());
    let usage_only = roles.add(&mut su, "usage", "LOGIN");
    exec(
        &mut su,
        &format!(
            "GRANT USAGE ON SCHEMA job TO {usage_only};
             SELECT job.create_queue('emails'); SELECT job.enqueue('emails', '{{}}');"
        ),
    );
    let before = fingerprint(&mut su, &roles);
    let mut role = connect_as(&db, &usage_only);
    let not_denied = probe_everything(&mut su, &mut role);
    let reached: BTreeSet<&str> = not_denied.iter().map(|(what, _)| what.as_str()).collect();
    let helpers: BTreeSet<&str> = PUBLIC_HELPERS.iter().copied().collect();
    assert_eq!(
        reached, helpers,
        "with USAGE only, these were not refused (42501):\n{not_denied:#?}"
    );
    assert_unchanged(
        &before,
        &fingerprint(&mut su, &roles),
        "the extension's objects",
    );
}

// ------------------------------------------------------------------------------------------
// 8: the recipes in the catalog, and each duty doing its part and no other
// ------------------------------------------------------------------------------------------

/// Finding 8: after the README's recipes, the catalog shows no duty holding any privilege on
/// a table or sequence of schema job, only SELECT on views, never TRIGGER, INSERT, UPDATE,
/// DELETE, TRUNCATE or REFERENCES on anything (columns included), USAGE without CREATE on
/// the schema, and EXECUTE on exactly the functions its recipe names.
#[test]
fn the_recipes_grant_each_duty_exactly_its_functions_and_views() {
    let roles = Roles::new("cat");
    let db = security_db("sec_catalog");
    let mut su = db.connect();
    exec(&mut su, &roles.recipes());
    let duties: [(&str, &[&str], &[&str]); 4] = [
        (&roles.admin, ADMIN_FUNCTIONS, GRANTED_VIEWS),
        (&roles.monitor, MONITOR_FUNCTIONS, GRANTED_VIEWS),
        (&roles.producer, PRODUCER_FUNCTIONS, &[]),
        (&roles.worker, WORKER_FUNCTIONS, &[]),
    ];
    for (role, functions, views) in duties {
        // Privileges granted to the role itself, from pg_class.relacl.
        let rel_grants: Vec<(String, String, String)> = su
            .query(
                "SELECT c.relname::text, c.relkind::text, a.privilege_type
                   FROM pg_class c CROSS JOIN LATERAL aclexplode(c.relacl) a
                  WHERE c.relnamespace = 'job'::regnamespace AND a.grantee = $1::text::regrole
                  ORDER BY 1, 3",
                &[&role],
            )
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        let expected: Vec<(String, String, String)> = {
            let mut v: Vec<_> = views
                .iter()
                .map(|v| (v.to_string(), "v".to_owned(), "SELECT".to_owned()))
                .collect();
            v.sort();
            v
        };
        assert_eq!(
            rel_grants, expected,
            "{role}: privileges in pg_class.relacl"
        );

        // The same through information_schema (which also counts grants to PUBLIC).
        let is_grants: Vec<(String, String)> = su
            .query(
                "SELECT table_name::text, privilege_type::text FROM information_schema.table_privileges
                  WHERE table_schema = 'job' AND grantee::text IN ($1, 'PUBLIC') ORDER BY 1, 2",
                &[&role],
            )
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let expected: Vec<(String, String)> = expected
            .iter()
            .map(|(v, _, p)| (v.clone(), p.clone()))
            .collect();
        assert_eq!(
            is_grants, expected,
            "{role}: information_schema.table_privileges"
        );

        // Effective rights, whatever their source (PUBLIC, memberships): no table or
        // sequence at all, views read-only, nothing that writes or hangs code anywhere.
        let effective: Vec<(String, String)> = su
            .query(
                "SELECT c.relname::text, p FROM pg_class c
                  CROSS JOIN unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE',
                                          'REFERENCES', 'TRIGGER']) p
                  WHERE c.relnamespace = 'job'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
                    AND has_table_privilege($1, c.oid, p)
                 UNION ALL
                 SELECT c.relname::text, p FROM pg_class c
                  CROSS JOIN unnest(ARRAY['USAGE', 'SELECT', 'UPDATE']) p
                  WHERE c.relnamespace = 'job'::regnamespace AND c.relkind = 'S'
                    AND has_sequence_privilege($1, c.oid, p)
                 UNION ALL
                 SELECT c.relname || '.' || a.attname, p FROM pg_class c
                   JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                  CROSS JOIN unnest(ARRAY['INSERT', 'UPDATE', 'REFERENCES']) p
                  WHERE c.relnamespace = 'job'::regnamespace
                    AND has_column_privilege($1, c.oid, a.attnum, p)
                  ORDER BY 1, 2",
                &[&role],
            )
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let expected: Vec<(String, String)> = {
            let mut v: Vec<_> = views
                .iter()
                .map(|v| (v.to_string(), "SELECT".to_owned()))
                .collect();
            v.sort();
            v
        };
        assert_eq!(effective, expected, "{role}: effective relation privileges");

        // Column-level grants in pg_attribute.attacl: none.
        let column_grants: i64 = one(
            &mut su,
            "SELECT count(*) FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
               CROSS JOIN LATERAL aclexplode(a.attacl) x
              WHERE c.relnamespace = 'job'::regnamespace AND x.grantee = $1::text::regrole",
            &[&role],
        );
        assert_eq!(column_grants, 0, "{role}: column privileges");

        // EXECUTE granted to the role, from pg_proc.proacl: exactly the recipe's functions.
        let executes: BTreeSet<String> = su
            .query(
                "SELECT DISTINCT p.proname::text FROM pg_proc p CROSS JOIN LATERAL aclexplode(p.proacl) a
                  WHERE p.pronamespace = 'job'::regnamespace AND a.grantee = $1::text::regrole
                    AND a.privilege_type = 'EXECUTE'",
                &[&role],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let expected: BTreeSet<String> = functions.iter().map(|f| f.to_string()).collect();
        assert_eq!(executes, expected, "{role}: EXECUTE in pg_proc.proacl");
        // Effective EXECUTE (PUBLIC included): those, plus the pure helpers.
        let effective: BTreeSet<String> = su
            .query(
                "SELECT p.oid::regprocedure::text FROM pg_proc p
                  WHERE p.pronamespace = 'job'::regnamespace
                    AND has_function_privilege($1, p.oid, 'EXECUTE')",
                &[&role],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .filter(|s: &String| !PUBLIC_HELPERS.contains(&s.as_str()))
            .map(|s: String| {
                s.trim_start_matches("job.")
                    .split('(')
                    .next()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(effective, expected, "{role}: effective EXECUTE");

        // The schema: USAGE, never CREATE.
        let schema: Vec<String> = su
            .query(
                "SELECT a.privilege_type FROM pg_namespace n CROSS JOIN LATERAL aclexplode(n.nspacl) a
                  WHERE n.nspname = 'job' AND a.grantee = $1::text::regrole ORDER BY 1",
                &[&role],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(
            schema,
            vec!["USAGE".to_owned()],
            "{role}: schema privileges"
        );
        assert!(!one::<bool>(
            &mut su,
            "SELECT has_schema_privilege($1, 'job', 'CREATE')",
            &[&role]
        ));
    }
    // Nothing for PUBLIC on any relation of the schema.
    let public_grants: i64 = one(
        &mut su,
        "SELECT count(*) FROM pg_class c CROSS JOIN LATERAL aclexplode(c.relacl) a
          WHERE c.relnamespace = 'job'::regnamespace AND a.grantee = 0",
        &[],
    );
    assert_eq!(public_grants, 0, "PUBLIC holds privileges on job relations");
}

/// Finding 8: each duty can do its part (producer enqueues; worker dequeues and completes;
/// monitor reads every view; admin creates a queue, audited as itself) and none of the
/// others' (producer cannot dequeue, cancel or read job.jobs; worker cannot enqueue or
/// cancel; monitor cannot enqueue; admin cannot dequeue).
#[test]
fn each_duty_does_its_part_and_none_of_the_others() {
    let roles = Roles::new("duty");
    let db = security_db("sec_duties");
    let mut su = db.connect();
    exec(&mut su, &roles.recipes());
    let mut producer = connect_as(&db, &roles.producer);
    let mut worker = connect_as(&db, &roles.worker);
    let mut monitor = connect_as(&db, &roles.monitor);
    let mut admin = connect_as(&db, &roles.admin);

    exec(&mut admin, "SELECT job.create_queue('emails')");
    let audited: (String, String) = {
        let row = su
            .query_one(
                "SELECT role::text, session_role::text FROM job.audit_log
                  WHERE action = 'create_queue' AND arguments->>'name' = 'emails'",
                &[],
            )
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!(audited, (roles.admin.clone(), roles.admin.clone()));

    let id: i64 = one(
        &mut producer,
        "SELECT job.enqueue('emails', '{\"to\": \"a@example.com\"}')",
        &[],
    );
    exec(
        &mut producer,
        "SELECT job.enqueue_many('emails', ARRAY['{}'::jsonb, '{}'::jsonb])",
    );
    let (claimed, done): (i64, bool) = if baseline_0_2_0() {
        // 0.2.0 had no lease tokens.
        let claimed: i64 = one(
            &mut worker,
            "SELECT id FROM job.dequeue('emails', 'w1')",
            &[],
        );
        let done = one(
            &mut worker,
            "SELECT job.complete($1, '{\"sent\": true}')",
            &[&claimed],
        );
        (claimed, done)
    } else {
        let row = worker
            .query_one(
                "SELECT id, lease_token::text FROM job.dequeue('emails', 'w1')",
                &[],
            )
            .unwrap_or_else(|e| panic!("the worker cannot dequeue: {}", error_text(&e)));
        let (claimed, token): (i64, String) = (row.get(0), row.get(1));
        let done = one(
            &mut worker,
            "SELECT job.complete($1, '{\"sent\": true}', $2::text::uuid)",
            &[&claimed, &token],
        );
        (claimed, done)
    };
    assert_eq!(claimed, id);
    assert!(done);
    for view in GRANTED_VIEWS {
        monitor
            .batch_execute(&format!("SELECT * FROM job.{view}"))
            .unwrap_or_else(|e| panic!("the monitor cannot read job.{view}: {}", error_text(&e)));
    }
    exec(&mut monitor, "SELECT job.prometheus_metrics()");

    denied(&mut producer, "SELECT * FROM job.dequeue('emails', 'p')");
    denied(&mut producer, &format!("SELECT job.cancel({id})"));
    denied(&mut producer, "SELECT * FROM job.jobs");
    denied(&mut worker, "SELECT job.enqueue('emails', '{}')");
    denied(&mut worker, &format!("SELECT job.cancel({id})"));
    denied(&mut worker, "SELECT job.create_queue('w')");
    denied(&mut monitor, "SELECT job.enqueue('emails', '{}')");
    denied(&mut monitor, &format!("SELECT job.cancel({id})"));
    denied(&mut admin, "SELECT * FROM job.dequeue('emails', 'a')");
    denied(&mut admin, "SELECT job.enqueue('emails', '{}')");
    let state: String = one(&mut su, "SELECT state FROM job.jobs WHERE id = $1", &[&id]);
    assert_eq!(state, "completed");
}

// ------------------------------------------------------------------------------------------
// 9d: a hostile search_path and shadowing objects
// ------------------------------------------------------------------------------------------

/// Decoys a hostile role plants where a careless function would find them: a function and
/// operators in public that shadow pg_catalog's exactly (public first in its search_path),
/// and functions in pg_temp.  Each records the call, and as whom, in public.decoy_calls.
const DECOYS: &str = "
    CREATE TABLE public.decoy_calls (decoy text, who text);
    GRANT INSERT ON public.decoy_calls TO PUBLIC;
    CREATE FUNCTION public.jsonb_typeof(jsonb) RETURNS text LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO public.decoy_calls VALUES ('jsonb_typeof', current_user);
        RETURN pg_catalog.jsonb_typeof($1);
    END $$;
    CREATE FUNCTION public.now() RETURNS timestamptz LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO public.decoy_calls VALUES ('now', current_user);
        RETURN pg_catalog.now();
    END $$;
    CREATE FUNCTION public.gen_random_uuid() RETURNS uuid LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO public.decoy_calls VALUES ('gen_random_uuid', current_user);
        RETURN pg_catalog.gen_random_uuid();
    END $$;
    CREATE FUNCTION pg_temp.now() RETURNS timestamptz LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO public.decoy_calls VALUES ('pg_temp.now', current_user);
        RETURN pg_catalog.now();
    END $$;
    CREATE FUNCTION public.text_eq(text, text) RETURNS boolean LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO public.decoy_calls VALUES ('text =', current_user);
        RETURN $1 OPERATOR(pg_catalog.=) $2;
    END $$;
    CREATE OPERATOR public.= (LEFTARG = text, RIGHTARG = text, FUNCTION = public.text_eq);
    CREATE FUNCTION public.int8_eq(bigint, bigint) RETURNS boolean LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO public.decoy_calls VALUES ('bigint =', current_user);
        RETURN $1 OPERATOR(pg_catalog.=) $2;
    END $$;
    CREATE OPERATOR public.= (LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = public.int8_eq);
    CREATE FUNCTION public.oid_regprocedure_eq(oid, regprocedure) RETURNS boolean LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO public.decoy_calls VALUES ('oid = regprocedure', current_user);
        RETURN $1 OPERATOR(pg_catalog.=) $2::oid;
    END $$;
    CREATE OPERATOR public.= (LEFTARG = oid, RIGHTARG = regprocedure, FUNCTION = public.oid_regprocedure_eq);
    CREATE TEMP TABLE queues (name text);
    CREATE TEMP TABLE live_jobs (id bigint);
    SET search_path = public, pg_catalog, pg_temp;
";

/// Finding 9d: a role that plants decoys (public.jsonb_typeof, public.now, an operator
/// public.= on text and on bigint, pg_temp.now, temp tables named like the extension's) and
/// calls the producer and worker functions with search_path = public, pg_catalog, pg_temp:
/// none of its objects runs inside them, and they work.
#[test]
fn definer_functions_use_nothing_of_a_hostile_search_path() {
    let mut roles = Roles::new("path");
    let db = security_db("sec_search_path");
    let mut su = db.connect();
    exec(&mut su, &roles.recipes());
    let evil = roles.add(&mut su, "evil", "LOGIN");
    exec(
        &mut su,
        &format!(
            "GRANT CREATE ON SCHEMA public TO {evil};
             GRANT {producer}, {worker} TO {evil};
             SELECT job.create_queue('emails');",
            producer = roles.producer,
            worker = roles.worker
        ),
    );
    let mut e = connect_as(&db, &evil);
    exec(&mut e, DECOYS);
    // The decoys do work for the role's own statements (so they would be found).
    exec(
        &mut e,
        "SELECT jsonb_typeof('{}'::jsonb), 'a'::text = 'a'::text, now()",
    );
    let own: i64 = one(&mut su, "SELECT count(*) FROM public.decoy_calls", &[]);
    assert!(
        own >= 3,
        "the decoys are not reachable from the role's own SQL"
    );
    exec(&mut su, "TRUNCATE public.decoy_calls");

    exec(
        &mut e,
        "SELECT job.enqueue('emails', '{\"n\": 1}');
         SELECT job.enqueue('emails', '{\"n\": 2}', idempotency_key => 'k', delay => '1 hour');
         SELECT job.enqueue_many('emails', ARRAY['{\"n\": 3}'::jsonb, '{\"n\": 4}'::jsonb]);
         SELECT job.next_due('emails');
         SELECT job.queue_id('emails');",
    );
    let claimed: Vec<(i64, String)> = e
        .query(
            "SELECT id, lease_token::text FROM job.dequeue('emails', 'w1', 10)",
            &[],
        )
        .unwrap_or_else(|err| panic!("dequeue failed: {}", error_text(&err)))
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(claimed.len(), 3, "the delayed job must not be claimed yet");
    let (first, first_token) = &claimed[0];
    let (second, second_token) = &claimed[1];
    exec(
        &mut e,
        &format!(
            "SELECT job.heartbeat({first}, '1 minute', '{t1}');
             SELECT job.complete({first}, '{{\"ok\": true}}', '{t1}');
             SELECT job.fail({second}, 'boom', token => '{t2}');",
            t1 = first_token,
            t2 = second_token
        ),
    );
    let calls: Vec<(String, String)> = su
        .query("SELECT decoy, who FROM public.decoy_calls", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert!(
        calls.is_empty(),
        "the extension's functions ran the caller's decoys: {calls:?}"
    );
    let states: Vec<String> = su
        .query("SELECT state FROM job.jobs ORDER BY id", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(states.len(), 4, "{states:?}");
    assert!(states.contains(&"completed".to_owned()), "{states:?}");
}

/// Finding 9d, for the one administrative function in Rust: job.set_handler runs as its
/// caller and looks up the extension's owner and records the handler over SPI, under the
/// caller's search_path.  None of the caller's objects may run inside it.
#[test]
fn set_handler_uses_nothing_of_a_hostile_search_path() {
    let roles = Roles::new("hpath");
    let db = security_db("sec_handler_path");
    let mut su = db.connect();
    exec(&mut su, &roles.recipes());
    let evil = roles.admin.clone();
    exec(
        &mut su,
        &format!(
            "GRANT CREATE ON SCHEMA public TO {evil};
             SELECT job.create_queue('b');"
        ),
    );
    let mut e = connect_as(&db, &evil);
    exec(&mut e, DECOYS);
    exec(
        &mut e,
        "CREATE FUNCTION public.h(payload jsonb) RETURNS jsonb LANGUAGE sql AS $$ SELECT payload $$;
         SELECT job.set_handler('b', 'public.h(jsonb)');
         SELECT job.remove_handler('b');",
    );
    let calls: Vec<(String, String, i64)> = su
        .query(
            "SELECT decoy, who, count(*) FROM public.decoy_calls GROUP BY 1, 2 ORDER BY 1, 2",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert!(
        calls.is_empty(),
        "job.set_handler ran the caller's decoys (decoy, as whom, how often): {calls:?}"
    );
}

// ------------------------------------------------------------------------------------------
// Wake-ups across databases
// ------------------------------------------------------------------------------------------

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

// ------------------------------------------------------------------------------------------
// Issue 19, items 9-11: duties that reach only their queues
// ------------------------------------------------------------------------------------------

/// The SQLSTATE of `sql`'s error, and proof that it changed nothing the fingerprint sees
/// (but job.workers_seen, which a database's sender and executors write on their own).
fn refused_unchanged(su: &mut Client, roles: &Roles, client: &mut Client, sql: &str) -> String {
    let print = |su: &mut Client| {
        let mut print = fingerprint(su, roles);
        print.remove("job.workers_seen");
        print
    };
    let before = print(su);
    let code = error_code(client, sql);
    assert_unchanged(&before, &print(su), sql);
    code
}

/// Item 9: the work duty held a superuser's handler queue and another team's endpoint queue
/// until the year 200000.  Now a hold reaches at most pg_jobqueue.max_hold ahead (22023), and
/// the work duty holds no queue the background worker serves (42501); the admin duty still
/// holds any queue.
#[test]
fn the_work_duty_cannot_hold_a_queue_for_ever_nor_one_the_background_worker_serves() {
    let roles = Roles::new("hold");
    let db = security_db("sec_hold");
    let mut su = db.connect();
    exec(&mut su, &roles.recipes());
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

/// Item 9: duties were per database, so any worker could claim, finish and hold another
/// team's queue and any producer feed it.  Per-queue grants keep each team's roles to its
/// queues (42501 elsewhere, nothing changed), in every function of the two duties; a queue
/// without grants stays open to every holder of the duty, and revoking its last grant opens
/// it again.
#[test]
fn per_queue_grants_keep_each_team_to_its_queues() {
    let mut roles = Roles::new("pq");
    let db = security_db("sec_per_queue");
    let mut su = db.connect();
    exec(&mut su, &roles.recipes());
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

/// Item 10: a singleton enqueue replaced another producer's payload and moved its start to
/// 9999, a debounce of 100 years did the same, and an order-keyed job due in 9999 blocked
/// its key for everyone.  Now starts, delays and debounces are bounded (22023, nothing
/// changed), and an enqueue of another role's waiting singleton or debounced job returns its
/// id and leaves it as it was; the job's own producer still replaces it.
#[test]
fn a_producer_cannot_rewrite_another_producers_job_nor_block_a_key_for_years() {
    let mut roles = Roles::new("keys");
    let db = security_db("sec_keys");
    let mut su = db.connect();
    exec(&mut su, &roles.recipes());
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

/// Item 11: job.schedule fed an admin-chosen payload to a handler whose run_as is a superuser.
/// Now only a superuser names a superuser run_as (42501 for a member of a superuser role), and
/// the executors stop running a handler whose run_as became a superuser after a non-superuser
/// set it (job.handlers says so; its jobs wait).
#[test]
fn only_a_superuser_may_name_a_superuser_run_as_and_executors_stop_one_made_superuser() {
    let (cluster, mut su) = served_cluster("sec-su-handler", &[]);
    if baseline_0_4_0() {
        exec(
            &mut su,
            "DROP EXTENSION pg_jobqueue; CREATE EXTENSION pg_jobqueue VERSION '0.4.0'",
        );
    }
    let mut roles = Roles::in_cluster("suh", &mut su);
    exec(&mut su, &roles.recipes());
    let root = roles.add(&mut su, "root", "SUPERUSER NOLOGIN");
    let service = roles.add(&mut su, "svc", "NOLOGIN");
    let deployer = roles.admin.clone();
    exec(
        &mut su,
        &format!(
            "GRANT {root}, {service} TO {deployer};
             CREATE SCHEMA svc AUTHORIZATION {service};
             CREATE TABLE svc.calls (n int, who text);
             ALTER TABLE svc.calls OWNER TO {service};
             GRANT INSERT ON svc.calls TO PUBLIC;
             CREATE FUNCTION svc.h(payload jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
             BEGIN
                 INSERT INTO svc.calls VALUES ((payload->>'n')::int, current_user);
                 RETURN payload;
             END $$;
             ALTER FUNCTION svc.h(jsonb) OWNER TO {service};
             SELECT job.create_queue('svcq');"
        ),
    );
    // (A private cluster: its roles go with it, so the superuser left behind harms nothing.)
    let mut d = connect_cluster_as(&cluster, "postgres", &deployer);
    let before = fingerprint(&mut su, &roles);
    denied(
        &mut d,
        &format!("SELECT job.set_handler('svcq', 'svc.h(jsonb)', run_as => '{root}')"),
    );
    assert_unchanged(
        &before,
        &fingerprint(&mut su, &roles),
        "a refused set_handler",
    );

    exec(
        &mut d,
        &format!("SELECT job.set_handler('svcq', 'svc.h(jsonb)', run_as => '{service}')"),
    );
    exec(&mut su, "SELECT job.enqueue('svcq', '{\"n\": 1}')");
    wait_for_finished(&cluster, &mut su, "svcq", 1, Duration::from_secs(30));

    exec(&mut su, &format!("ALTER ROLE {service} SUPERUSER"));
    let state: String = one(
        &mut su,
        "SELECT state FROM job.handlers WHERE queue = 'svcq'",
        &[],
    );
    assert_eq!(state, "run_as is a superuser, set_by is not");
    let waiting: i64 = one(&mut su, "SELECT job.enqueue('svcq', '{\"n\": 2}')", &[]);
    std::thread::sleep(Duration::from_secs(3));
    let job_state: String = one(
        &mut su,
        "SELECT state FROM job.jobs WHERE id = $1",
        &[&waiting],
    );
    assert_eq!(
        job_state, "waiting",
        "a handler made superuser after a non-superuser set it still ran"
    );

    // A superuser may name it.
    exec(
        &mut su,
        &format!("SELECT job.set_handler('svcq', 'svc.h(jsonb)', run_as => '{service}')"),
    );
    wait_for_finished(&cluster, &mut su, "svcq", 2, Duration::from_secs(30));
}

// ------------------------------------------------------------------------------------------
// Issue 19: HTTP deliveries, as the README's roles
// ------------------------------------------------------------------------------------------

/// Issue 19, items 1, 4, 5 and 7, as the recipes' roles: the producer cannot send a delivery
/// out of its endpoint's URL, add or repeat sensitive headers, or take a generated webhook-id
/// (22023 and nothing changes); the monitor sees an endpoint's URL without its token, in
/// job.endpoints and job.audit_log, and cannot read it whole; the administrator can, audited.
#[test]
fn delivery_duties_cannot_reach_past_the_endpoint_or_see_its_token() {
    if baseline_0_2_0() {
        return; // 0.2.0 had no HTTP deliveries.
    }
    let roles = Roles::new("deliv");
    let db = security_db("sec_deliv");
    let mut su = db.connect();
    exec(&mut su, &roles.recipes());
    let mut admin = connect_as(&db, &roles.admin);
    let url = "http://127.0.0.1:9/tenant-a/hooks/T000/B000/urlTOKENq4?token=queryTOKENq4";
    admin
        .execute(
            "SELECT job.create_endpoint('hooks-a', $1,
                    headers => '{\"authorization\": \"Bearer a\", \"x-api-key\": \"k\"}')",
            &[&url],
        )
        .unwrap_or_else(|e| panic!("create_endpoint: {}", error_text(&e)));
    exec(&mut su, "SELECT job.pause_endpoint('hooks-a')");

    let before = fingerprint(&mut su, &roles);
    let mut producer = connect_as(&db, &roles.producer);
    for sql in [
        "SELECT job.deliver('hooks-a', '{}', path => '/../../admin/secret-api')",
        "SELECT job.deliver('hooks-a', '{}', path => '/%2e%2e/%2E%2e/admin/pct')",
        "SELECT job.enqueue('hooks-a', '{\"body\": {}, \"path\": \"/../../admin/secret-api\"}')",
        "SELECT job.enqueue_many('hooks-a', ARRAY['{\"body\": {}, \"path\": \"/%2e%2e/x\"}'::jsonb])",
        "SELECT job.deliver('hooks-a', '{}', headers => '{\"Authorization\": \"Bearer ATTACKER\"}')",
        "SELECT job.deliver('hooks-a', '{}', headers => '{\"X-API-KEY\": \"attacker\"}')",
        "SELECT job.deliver('hooks-a', '{}', headers => '{\"X-Forwarded-Host\": \"evil\"}')",
        "SELECT job.deliver('hooks-a', '{}', headers => '{\"X-HTTP-Method-Override\": \"DELETE\"}')",
        "SELECT job.deliver('hooks-a', '{}', idempotency_key => 'msg 1')",
        "SELECT job.enqueue('hooks-a', '{\"body\": {}, \"webhook_id\": \"msg 1\"}')",
    ] {
        assert_eq!(error_code(&mut producer, sql), "22023", "{sql}");
    }
    assert_unchanged(&before, &fingerprint(&mut su, &roles), "a refused delivery");

    let mut monitor = connect_as(&db, &roles.monitor);
    let shown: String = one(
        &mut monitor,
        "SELECT concat((SELECT string_agg(e::text, ' ') FROM job.endpoints e),
                       (SELECT string_agg(a::text, ' ') FROM job.audit_log a))",
        &[],
    );
    assert!(shown.contains("http://127.0.0.1:9/…?token=…"), "{shown}");
    assert!(
        !shown.contains("urlTOKENq4") && !shown.contains("queryTOKENq4"),
        "the monitor sees the URL's token: {shown}"
    );
    denied(&mut monitor, "SELECT job.endpoint_url('hooks-a')");
    let whole: String = one(&mut admin, "SELECT job.endpoint_url('hooks-a')", &[]);
    assert_eq!(whole, url);
    let audited: i64 = one(
        &mut su,
        "SELECT count(*) FROM job.audit_log WHERE action = 'read_endpoint_url'",
        &[],
    );
    assert_eq!(audited, 1);
}
