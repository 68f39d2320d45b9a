//! The roles of the security tests: the README's recipes for the four duties (producer,
//! worker, monitor, admin), login roles named per test, and connections as them.
//!
//! `PGJQ_SECURITY_BASELINE=0.2.0` (or `0.4.0`) makes [`security_db`] create databases with
//! that release's SQL and [`Roles::recipes`] give that release's recipes, to show which
//! assertions the old SQL failed (a manual check: expect failures there).

use crate::sql::{exec, one};
use crate::{
    cluster::Cluster, cluster_url, connect_admin, error_text, Client, Config, NoTls, TestDb,
};
use std::time::Duration;

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

pub fn baseline_0_2_0() -> bool {
    std::env::var("PGJQ_SECURITY_BASELINE").is_ok_and(|v| v == "0.2.0")
}

/// `PGJQ_SECURITY_BASELINE=0.4.0` runs the tests against 0.4.0's SQL with today's recipes
/// (less what 0.4.0 lacks), to show which assertions of issue 19 0.4.0 failed (a manual
/// check: expect failures there).
pub fn baseline_0_4_0() -> bool {
    std::env::var("PGJQ_SECURITY_BASELINE").is_ok_and(|v| v == "0.4.0")
}

/// A scratch database with the extension (0.2.0's or 0.4.0's SQL in a baseline run).
pub fn security_db(test: &str) -> TestDb {
    if baseline_0_2_0() {
        TestDb::create_with(test, "CREATE EXTENSION pg_jobqueue VERSION '0.2.0'")
    } else if baseline_0_4_0() {
        TestDb::create_with(test, "CREATE EXTENSION pg_jobqueue VERSION '0.4.0'")
    } else {
        TestDb::create(test)
    }
}

/// A connection to database `db` of the cluster at `url`, as `role`.
pub fn connect_url_as(url: &str, db: &str, role: &str) -> Client {
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
pub fn connect_as(db: &TestDb, role: &str) -> Client {
    connect_url_as(&cluster_url(), db.name(), role)
}

/// A connection to database `db` of a private cluster, as `role`.
pub fn connect_cluster_as(cluster: &Cluster, db: &str, role: &str) -> Client {
    connect_url_as(&cluster.url(db), db, role)
}

/// Login roles of one test: the four duties plus any others it asks for, named
/// `<base>_<tag>_<pid>`.  On the shared cluster they are dropped on drop (declare the guard
/// before the database, so the database goes first).
pub struct Roles {
    tag: String,
    pub names: Vec<String>,
    /// The shared cluster (drop the roles afterwards), or a private one (dropped with it).
    shared: bool,
    pub producer: String,
    pub worker: String,
    pub monitor: String,
    pub admin: String,
}

impl Roles {
    /// The duty roles, on the shared cluster.
    pub fn new(tag: &str) -> Roles {
        Self::create(tag, &mut connect_admin(), true)
    }

    /// The duty roles, in a private cluster (through `client`, a superuser connection).
    pub fn in_cluster(tag: &str, client: &mut Client) -> Roles {
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
    pub fn add(&mut self, client: &mut Client, base: &str, options: &str) -> String {
        let name = format!("{base}_{}_{}", self.tag, std::process::id());
        self.create_role(client, &name, options);
        name
    }

    /// The recipes (the README's, or 0.2.0's in the baseline run) for this test's roles.
    pub fn recipes(&self) -> String {
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

/// Whether `role` is a superuser.
pub fn is_superuser(client: &mut Client, role: &str) -> bool {
    one(
        client,
        "SELECT rolsuper FROM pg_roles WHERE rolname = $1",
        &[&role],
    )
}

/// A test database of the shared cluster with the duty roles `<duty>_<tag>_<pid>` and their
/// recipes, and a superuser connection to it: `let (roles, db, mut su) = duty_db(...)`, so that
/// the connection drops first, then the database (which may still hold the roles' objects),
/// then the roles.  `test` names the database ([`security_db`]).
pub fn duty_db(tag: &str, test: &str) -> (Roles, TestDb, Client) {
    let roles = Roles::new(tag);
    let db = security_db(test);
    let mut su = db.connect();
    exec(&mut su, &roles.recipes());
    (roles, db, su)
}

/// A private cluster `name` whose background worker serves database `postgres` (see
/// [`crate::cluster::served_cluster`]), with the duty roles `<duty>_<tag>_<pid>` and their
/// recipes, and a superuser connection; its roles go with the cluster.
pub fn duty_cluster(name: &str, tag: &str) -> (Cluster, Client, Roles) {
    let (cluster, mut su) = crate::cluster::served_cluster(name, &[]);
    let roles = Roles::in_cluster(tag, &mut su);
    exec(&mut su, &roles.recipes());
    (cluster, su, roles)
}

/// Creates queue `queue`, and schema `schema` owned by the admin duty (where it keeps its
/// handlers), through `su`.
pub fn admin_schema(su: &mut Client, roles: &Roles, schema: &str, queue: &str) {
    exec(
        su,
        &format!(
            "CREATE SCHEMA {schema} AUTHORIZATION {admin};
             SELECT job.create_queue('{queue}');",
            admin = roles.admin
        ),
    );
}

/// A NOLOGIN role `<base>_<pid>` for one test database, made with `grants` (`{role}` standing
/// for its name) and dropped, with what it owns in the database, when the guard goes.
pub struct DbRole {
    db: String,
    pub name: String,
}

impl DbRole {
    pub fn create(db: &TestDb, base: &str, grants: &str) -> DbRole {
        let name = format!("{base}_{}", std::process::id());
        let mut client = db.connect();
        exec(&mut client, &format!("DROP ROLE IF EXISTS {name}"));
        exec(
            &mut client,
            &format!(
                "CREATE ROLE {name} NOLOGIN;\n{}",
                grants.replace("{role}", &name)
            ),
        );
        DbRole {
            db: db.name().to_owned(),
            name,
        }
    }

    /// A new connection to the database, switched to this role (`SET ROLE`).
    pub fn connect(&self) -> Client {
        let mut client = crate::connect(&self.db);
        exec(&mut client, &format!("SET ROLE {}", self.name));
        client
    }
}

impl Drop for DbRole {
    fn drop(&mut self) {
        let _ =
            crate::connect(&self.db).batch_execute(&format!("DROP OWNED BY {} CASCADE", self.name));
        if let Err(e) = connect_admin().batch_execute(&format!("DROP ROLE IF EXISTS {}", self.name))
        {
            eprintln!(
                "warning: could not drop role {}: {}",
                self.name,
                error_text(&e)
            );
        }
    }
}
