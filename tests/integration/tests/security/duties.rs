//! What each duty's role, a role with only CONNECT and a role with only USAGE on schema
//! `job` can reach: exactly the functions and views the README's recipes grant, and no way
//! to write the extension's tables or hang code on them.

use super::*;

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
    "alter_queue",
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
    "schedule_runs",
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

/// After the README's recipes, the catalog shows no duty holding any privilege on
/// a table or sequence of schema job, only SELECT on views, never TRIGGER, INSERT, UPDATE,
/// DELETE, TRUNCATE or REFERENCES on anything (columns included), USAGE without CREATE on
/// the schema, and EXECUTE on exactly the functions its recipe names.
#[test]
fn the_recipes_grant_each_duty_exactly_its_functions_and_views() {
    let (roles, _db, mut su) = duty_db("cat", "sec_catalog");
    let duties: [(&str, &[&str], &[&str]); 4] = [
        (&roles.admin, ADMIN_FUNCTIONS, GRANTED_VIEWS),
        (&roles.monitor, MONITOR_FUNCTIONS, GRANTED_VIEWS),
        (&roles.producer, PRODUCER_FUNCTIONS, &[]),
        (&roles.worker, WORKER_FUNCTIONS, &[]),
    ];
    for (role, functions, views) in duties {
        // Privileges granted to the role itself, from pg_class.relacl.
        let rel_grants: Vec<(String, String, String)> = rows(
            &mut su,
            "SELECT c.relname::text, c.relkind::text, a.privilege_type
                   FROM pg_class c CROSS JOIN LATERAL aclexplode(c.relacl) a
                  WHERE c.relnamespace = 'job'::regnamespace AND a.grantee = $1::text::regrole
                  ORDER BY 1, 3",
            &[&role],
        );
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
        let is_grants: Vec<(String, String)> = rows(
            &mut su,
            "SELECT table_name::text, privilege_type::text FROM information_schema.table_privileges
                  WHERE table_schema = 'job' AND grantee::text IN ($1, 'PUBLIC') ORDER BY 1, 2",
            &[&role],
        );
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
        let effective: Vec<(String, String)> = rows(
            &mut su,
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
        );
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
        let schema: Vec<String> = column(
            &mut su,
            "SELECT a.privilege_type FROM pg_namespace n CROSS JOIN LATERAL aclexplode(n.nspacl) a
                  WHERE n.nspname = 'job' AND a.grantee = $1::text::regrole ORDER BY 1",
            &[&role],
        );
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

/// The relations of schema `job` the README's SQL reads (`FROM job.x`, `JOIN job.x`, not
/// followed by a call's parenthesis).
fn relations_the_readme_reads() -> Vec<String> {
    let readme = include_str!("../../../../README.md");
    let mut names = Vec::new();
    for (at, _) in readme.match_indices(" job.") {
        let before = readme[..at].trim_end();
        if !(before.ends_with("FROM") || before.ends_with("JOIN")) {
            continue;
        }
        let rest = &readme[at + 5..];
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        if !rest[end..].starts_with('(') {
            names.push(rest[..end].to_owned());
        }
    }
    names.sort();
    names.dedup();
    names
}

/// Every relation the README tells users to read is one the monitor and admin recipes grant
/// and each can read (the README's `job.schedule_runs` was a table, refused to both).
#[test]
fn the_monitor_and_admin_may_read_every_relation_the_readme_reads() {
    let (roles, db, mut su) = duty_db("reads", "sec_readme_reads");
    let names = relations_the_readme_reads();
    assert!(
        names.len() >= 5 && names.iter().any(|n| n == "jobs"),
        "found too few: {names:?}"
    );
    // A table would be readable once granted, but no recipe may grant one (the duties read
    // through views only): each must be a view.
    for name in &names {
        let kind: String = one(
            &mut su,
            "SELECT relkind::text FROM pg_class WHERE oid = $1::text::regclass",
            &[&format!("job.{name}")],
        );
        assert_eq!(
            kind, "v",
            "the README reads job.{name}, which is not a view"
        );
    }
    for role in [&roles.monitor, &roles.admin] {
        let mut client = connect_as(&db, role);
        for name in &names {
            assert!(
                GRANTED_VIEWS.contains(&name.as_str()),
                "the README reads job.{name}, which the recipes do not grant"
            );
            if let Err(e) = client.batch_execute(&format!("SELECT * FROM job.{name} LIMIT 0")) {
                panic!("{role} cannot read job.{name}: {}", error_text(&e));
            }
        }
    }
}

/// Each duty can do its part (producer enqueues; worker dequeues and completes;
/// monitor reads every view; admin creates a queue, audited as itself) and none of the
/// others' (producer cannot dequeue, cancel or read job.jobs; worker cannot enqueue or
/// cancel; monitor cannot enqueue; admin cannot dequeue).
#[test]
fn each_duty_does_its_part_and_none_of_the_others() {
    let (roles, db, mut su) = duty_db("duty", "sec_duties");
    let mut producer = connect_as(&db, &roles.producer);
    let mut worker = connect_as(&db, &roles.worker);
    let mut monitor = connect_as(&db, &roles.monitor);
    let mut admin = connect_as(&db, &roles.admin);

    exec(&mut admin, "SELECT job.create_queue('emails')");
    let audited: (String, String) = one_row(
        &mut su,
        "SELECT role::text, session_role::text FROM job.audit_log
                  WHERE action = 'create_queue' AND arguments->>'name' = 'emails'",
        &[],
    );
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

/// A role with only CONNECT (PUBLIC's default on a database) reaches nothing in
/// schema job: every function, view, table and sequence is refused with 42501, and nothing
/// changes.
#[test]
fn a_connect_only_role_is_refused_every_function_view_and_table() {
    let (mut roles, db, mut su) = duty_db("conn", "sec_connect_only");
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

/// A role with USAGE on schema job and nothing else is refused (42501) everything
/// but the pure helpers granted to PUBLIC, and changes nothing.
#[test]
fn schema_usage_alone_reaches_only_the_public_pure_helpers() {
    let (mut roles, db, mut su) = duty_db("usage", "sec_usage_only");
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

/// In 0.2.0 the admin duty attached a trigger to job.live_jobs that an enqueue fired as
/// the extension's owner (a superuser), and made itself superuser.  Now no duty may create a
/// trigger or rule on any job table or view, and the enqueue leaves the admin as it was.
#[test]
fn admin_duty_cannot_attach_a_trigger_that_runs_as_the_owner() {
    let (roles, db, mut su) = duty_db("trig", "sec_trigger");
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
    // 0.2.0's attack first, then every other way to hang code on the tables.
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
