//! Operations: upgrading from the previous release, pg_dump and pg_restore, the Prometheus
//! export read by a real parser, and the comments psql shows on every public object.

use pg_jobqueue_integration::{
    cluster, connect, current_version, error_text, one, released_versions, Client, TestDb,
};
use std::collections::BTreeSet;
use std::process::Command;

fn strings(client: &mut Client, query: &str) -> Vec<String> {
    client
        .query(query, &[])
        .unwrap_or_else(|e| panic!("{query}: {}", error_text(&e)))
        .iter()
        .map(|row| {
            row.get::<_, Option<String>>(0)
                .unwrap_or_else(|| "NULL".into())
        })
        .collect()
}

fn one_string(client: &mut Client, query: &str) -> String {
    strings(client, query).pop().unwrap_or_default()
}

/// Everything the extension defines, one line per object and property, so two databases
/// can be compared: functions (definition, settings, security, privileges), tables and
/// their columns, constraints, indexes and privileges, views, sequences, types and what
/// pg_dump keeps.
///
/// NOT NULL constraints (rows of pg_constraint from PostgreSQL 18 on) are left out: the
/// columns' notnull says the same, and their names are the server's, made from the table's
/// name when the column got NOT NULL, so on 18 a release created under an older table name
/// (0.1.0's audit_log, now audit_entries) keeps the old one through the renames.  No real
/// database meets that: 0.1.0–0.4.0 ran on 15 only, and pg_upgrade to 18 names them afresh.
const SCHEMA_DESCRIPTION: &str = "
    SELECT 'function ' || p.oid::regprocedure || ' ' || pg_get_functiondef(p.oid)
           || ' config=' || coalesce(p.proconfig::text, '') || ' definer=' || p.prosecdef
           || ' acl=' || coalesce(p.proacl::text, '')
      FROM pg_proc p WHERE p.pronamespace = 'job'::regnamespace AND p.prokind <> 'a'
    UNION ALL
    SELECT 'aggregate ' || p.oid::regprocedure FROM pg_proc p
     WHERE p.pronamespace = 'job'::regnamespace AND p.prokind = 'a'
    UNION ALL
    SELECT 'relation ' || c.relname || ' ' || c.relkind::text || ' options=' || coalesce(c.reloptions::text, '')
           || ' acl=' || coalesce(c.relacl::text, '')
      FROM pg_class c WHERE c.relnamespace = 'job'::regnamespace
    UNION ALL
    SELECT 'column ' || c.relname || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
           || ' notnull=' || a.attnotnull || ' default=' || coalesce(pg_get_expr(d.adbin, d.adrelid), '')
           || ' identity=' || a.attidentity::text || ' position=' || a.attnum
      FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
      LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
     WHERE c.relnamespace = 'job'::regnamespace AND a.attnum > 0 AND NOT a.attisdropped
       AND c.relkind IN ('r', 'v', 'c')
    UNION ALL
    SELECT 'constraint ' || conrelid::regclass || ' ' || conname || ' ' || pg_get_constraintdef(oid)
      FROM pg_constraint WHERE connamespace = 'job'::regnamespace AND contype <> 'n'
    UNION ALL
    SELECT 'index ' || pg_get_indexdef(indexrelid) FROM pg_index
     WHERE indrelid IN (SELECT oid FROM pg_class WHERE relnamespace = 'job'::regnamespace)
    UNION ALL
    SELECT 'view ' || c.relname || ' ' || pg_get_viewdef(c.oid)
      FROM pg_class c WHERE c.relnamespace = 'job'::regnamespace AND c.relkind = 'v'
    UNION ALL
    SELECT 'comment ' || c.relname || ' ' || obj_description(c.oid, 'pg_class')
      FROM pg_class c WHERE c.relnamespace = 'job'::regnamespace AND obj_description(c.oid, 'pg_class') IS NOT NULL
    UNION ALL
    SELECT 'dumped ' || unnest(extconfig)::regclass::text FROM pg_extension WHERE extname = 'pg_jobqueue'
    UNION ALL
    SELECT 'schema acl ' || coalesce(nspacl::text, '') FROM pg_namespace WHERE nspname = 'job'";

fn schema_of(client: &mut Client) -> BTreeSet<String> {
    strings(client, SCHEMA_DESCRIPTION).into_iter().collect()
}

fn extversion(c: &mut Client) -> String {
    one_string(
        c,
        "SELECT extversion FROM pg_extension WHERE extname = 'pg_jobqueue'",
    )
}

/// Every job as one line (what an upgrade must keep).
fn jobs_of(c: &mut Client) -> Vec<String> {
    strings(
        c,
        "SELECT concat_ws(' ', id, queue, state, attempt, max_retries, payload, result, idempotency_key,
                          claimed_by, run_at, errors) FROM job.jobs ORDER BY id",
    )
}

/// Fills a database at `version` through that version's own API: queues, jobs in every state
/// (waiting, scheduled, running, completed, dead, cancelled) and, from 0.2.0 on, schedules, a
/// handler, audit rows and roles granted by that version's README recipes.
fn fill(c: &mut Client, version: &str, roles: &str) {
    c.batch_execute(
        "SELECT job.create_queue('mail', max_retries => 0, lease => '1 minute');
         SELECT job.create_queue('reports');
         SELECT job.enqueue('mail', '{\"n\": 1}', idempotency_key => 'first');
         SELECT job.enqueue('mail', '{\"n\": 2}', delay => '1 hour');
         SELECT job.enqueue_many('reports', ARRAY['{\"r\": 1}', '{\"r\": 2}', '{\"r\": 3}', '{\"r\": 4}']::jsonb[]);
         SELECT job.complete(id, '{\"ok\": true}') FROM job.dequeue('reports', 'w1');
         SELECT job.fail(id, 'boom') FROM job.dequeue('mail', 'w1');
         SELECT job.cancel(id) FROM job.dequeue('reports', 'w3');
         SELECT job.dequeue('reports', 'w2');",
    )
    .unwrap_or_else(|e| panic!("filling {version}: {}", error_text(&e)));
    if version == "0.1.0" {
        return;
    }
    // 0.2.0 took a retention of 1000 years (0.3.0 brings it to the 100-year bound) and its
    // administrator recipe granted every table; from 0.3.0 on, duties get functions only.
    let (huge, admin_recipe) = if version == "0.2.0" {
        (
            "1000 years",
            format!(
                "GRANT ALL ON ALL TABLES IN SCHEMA job TO {roles}_admin;
                 GRANT ALL ON ALL SEQUENCES IN SCHEMA job TO {roles}_admin;
                 GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA job TO {roles}_admin;
                 REVOKE UPDATE, DELETE, TRUNCATE ON job.audit_log FROM {roles}_admin;"
            ),
        )
    } else {
        (
            "100 years",
            format!("GRANT EXECUTE ON FUNCTION job.create_queue, job.cancel, job.retry TO {roles}_admin;"),
        )
    };
    c.batch_execute(&format!(
        "SELECT job.create_queue('receipts');
         SELECT job.pause_queue('receipts');
         CREATE FUNCTION public.send_receipt(payload jsonb) RETURNS jsonb LANGUAGE sql AS 'SELECT payload';
         SELECT job.set_handler('receipts', 'send_receipt(jsonb)', concurrency => 3, timeout => '30 seconds');
         SELECT job.schedule('nightly', '0 3 * * *', 'reports', '{{\"kind\": \"nightly\"}}', timezone => 'Europe/Paris');
         SELECT job.create_queue('huge', retention => '{huge}');
         -- The version's README recipes.
         GRANT USAGE ON SCHEMA job TO {roles}_worker, {roles}_monitor, {roles}_admin;
         GRANT EXECUTE ON FUNCTION job.dequeue, job.complete, job.complete_many, job.fail, job.heartbeat TO {roles}_worker;
         GRANT SELECT ON job.jobs, job.queue_stats, job.queue_metrics, job.metrics, job.workers,
                         job.schedules, job.handlers, job.audit_log TO {roles}_monitor;
         {admin_recipe}"
    ))
    .unwrap_or_else(|e| panic!("filling {version}: {}", error_text(&e)));
}

/// Installs every released version, fills it with jobs in every state (and schedules,
/// handlers, audit rows and granted roles where the version has them), upgrades it to this
/// version with ALTER EXTENSION UPDATE, checks the data, uses the new API on it, and compares
/// its catalog with a fresh install.
#[test]
fn every_release_upgrades_keeping_its_data_and_matches_a_fresh_install() {
    let current = current_version();
    let fresh = TestDb::create("upgrade_fresh");
    let installed = schema_of(&mut fresh.connect());
    let versions = released_versions();
    assert!(versions.contains(&"0.1.0".to_owned()) && versions.contains(&"0.2.0".to_owned()));
    for version in versions {
        let tag = version.replace('.', "_");
        let roles = format!("upg{tag}_{}", std::process::id());
        let mut admin = pg_jobqueue_integration::connect_admin();
        for duty in ["worker", "monitor", "admin"] {
            admin
                .batch_execute(&format!(
                    "DROP ROLE IF EXISTS {roles}_{duty}; CREATE ROLE {roles}_{duty}"
                ))
                .unwrap_or_else(|e| panic!("roles: {}", error_text(&e)));
        }
        let old = TestDb::create_with(
            &format!("upgrade_{tag}"),
            &format!("CREATE EXTENSION pg_jobqueue VERSION '{version}'"),
        );
        let mut c = old.connect();
        assert_eq!(extversion(&mut c), version);
        fill(&mut c, &version, &roles);
        let jobs_before = jobs_of(&mut c);
        assert_eq!(jobs_before.len(), 6, "{version}: jobs in every state");

        c.batch_execute("ALTER EXTENSION pg_jobqueue UPDATE")
            .unwrap_or_else(|e| panic!("{version}: ALTER EXTENSION UPDATE: {}", error_text(&e)));
        assert_eq!(extversion(&mut c), current);
        assert_eq!(jobs_of(&mut c), jobs_before, "{version}: the jobs changed");
        assert_eq!(
            strings(&mut c, "SELECT concat_ws(' ', queue, dead_letters) FROM job.queue_metrics WHERE queue IN ('mail', 'reports') ORDER BY queue"),
            ["mail 1", "reports 0"],
            "{version}: the dead-letter counts"
        );
        assert_eq!(
            one_string(
                &mut c,
                "SELECT (count(DISTINCT id) = count(*) AND min(id) > 0)::text FROM job.queues"
            ),
            "true",
            "{version}: every queue got an id"
        );

        // The new API works on the old data: the running job (claimed without a token) can be
        // completed as before, new claims carry tokens, keys survive.
        c.batch_execute(
            "SELECT job.complete(id) FROM job.jobs WHERE state = 'running';
             SELECT job.retry_dead('mail');",
        )
        .unwrap_or_else(|e| panic!("{version}: using the upgraded data: {}", error_text(&e)));
        assert_eq!(
            one_string(
                &mut c,
                "SELECT job.complete(id, '{}', lease_token)::text FROM job.dequeue('mail', 'w')"
            ),
            "true"
        );
        assert_eq!(
            one_string(
                &mut c,
                "SELECT job.enqueue('mail', '{\"n\": 1}', idempotency_key => 'first')::text"
            ),
            one_string(
                &mut c,
                "SELECT id::text FROM job.jobs WHERE idempotency_key = 'first'"
            ),
            "{version}: idempotency keys survive the upgrade"
        );

        if version != "0.1.0" {
            assert_eq!(
                one_string(&mut c, "SELECT concat_ws(' ', queue, handler, run_as = set_by, concurrency, timeout, state) FROM job.handlers"),
                "receipts send_receipt(jsonb) t 3 00:00:30 paused",
                "{version}: the handler, set by its run_as role"
            );
            assert_eq!(
                one_string(&mut c, "SELECT concat_ws(' ', name, cron, timezone, queue, payload) FROM job.schedules"),
                "nightly 0 3 * * * Europe/Paris reports {\"kind\": \"nightly\"}"
            );
            assert_eq!(
                one_string(
                    &mut c,
                    "SELECT retention::text FROM job.queues WHERE name = 'huge'"
                ),
                "100 years",
                "{version}: settings beyond the bound are brought to it"
            );
            assert!(
                one_string(&mut c, "SELECT string_agg(action, ',' ORDER BY id) FROM job.audit_log")
                    .starts_with("create_queue,create_queue,cancel,create_queue,pause_queue,set_handler,schedule,create_queue,"),
                "{version}: the audit log survives"
            );
            // The 0.2.0 administrator recipe's table privileges are gone; what readers and
            // workers could do, they still can.
            assert_eq!(
                one_string(&mut c, &format!(
                    "SELECT coalesce(string_agg(c.relname, ','), 'none') FROM pg_class c, aclexplode(c.relacl) a
                      WHERE c.relnamespace = 'job'::regnamespace AND c.relkind IN ('r', 'S')
                        AND a.grantee = '{roles}_admin'::regrole"
                )),
                "none"
            );
            for (role, query) in [
                ("monitor", "SELECT count(*) FROM job.audit_log"),
                ("monitor", "SELECT count(*) FROM job.handlers"),
                (
                    "worker",
                    "SELECT job.complete(id, NULL, lease_token) FROM job.dequeue('reports', 'w')",
                ),
            ] {
                c.batch_execute(&format!("SET ROLE {roles}_{role}; {query}; RESET ROLE"))
                    .unwrap_or_else(|e| {
                        panic!(
                            "{version}: {role} after the upgrade: {query}: {}",
                            error_text(&e)
                        )
                    });
            }
            let denied = c
                .batch_execute(&format!(
                    "SET ROLE {roles}_admin; INSERT INTO job.audit_entries (role, session_role, action, arguments) VALUES ('x', 'x', 'forged', '{{}}')"
                ))
                .expect_err("the old admin recipe still writes the audit log");
            assert_eq!(
                denied.code(),
                Some(&pg_jobqueue_integration::SqlState::INSUFFICIENT_PRIVILEGE)
            );
            c.batch_execute("RESET ROLE").unwrap();
        }

        // The catalog, with the grants this test made taken back, is a fresh install's.
        c.batch_execute(&format!(
            "REVOKE ALL ON ALL TABLES IN SCHEMA job FROM {roles}_worker, {roles}_monitor, {roles}_admin;
             REVOKE ALL ON ALL FUNCTIONS IN SCHEMA job FROM {roles}_worker, {roles}_monitor, {roles}_admin;
             REVOKE ALL ON SCHEMA job FROM {roles}_worker, {roles}_monitor, {roles}_admin;"
        ))
        .unwrap();
        // (The schema's ACL stays explicit once granted and revoked: compared without it.)
        let upgraded = schema_of(&mut c);
        let installed: BTreeSet<String> = installed
            .iter()
            .filter(|l| !l.starts_with("schema acl"))
            .cloned()
            .collect();
        let upgraded: BTreeSet<String> = upgraded
            .into_iter()
            .filter(|l| !l.starts_with("schema acl"))
            .collect();
        let only_upgraded: Vec<_> = upgraded.difference(&installed).collect();
        let only_fresh: Vec<_> = installed.difference(&upgraded).collect();
        assert!(
            only_upgraded.is_empty() && only_fresh.is_empty(),
            "{version} upgraded differs from a fresh install:\n only after upgrade: {only_upgraded:#?}\n only in fresh install: {only_fresh:#?}"
        );
        drop(c);
        drop(old);
        for duty in ["worker", "monitor", "admin"] {
            admin
                .batch_execute(&format!("DROP ROLE IF EXISTS {roles}_{duty}"))
                .unwrap_or_else(|e| panic!("dropping roles: {}", error_text(&e)));
        }
    }
}

/// The public objects without a comment (what `\df+`, `\dv+` and `\d+` in psql would leave
/// blank): functions, views, and the columns of views and of composite types (job.claimed_job)
/// in schema `job` whose names do not start with `_`.
const UNCOMMENTED: &str = "
    SELECT p.oid::regprocedure::text FROM pg_proc p
     WHERE p.pronamespace = 'job'::regnamespace AND p.proname !~ '^_'
       AND obj_description(p.oid, 'pg_proc') IS NULL
    UNION ALL
    SELECT c.relname::text FROM pg_class c
     WHERE c.relnamespace = 'job'::regnamespace AND c.relkind = 'v' AND c.relname !~ '^_'
       AND obj_description(c.oid, 'pg_class') IS NULL
    UNION ALL
    SELECT c.relname || '.' || a.attname FROM pg_class c
      JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
     WHERE c.relnamespace = 'job'::regnamespace AND c.relkind IN ('v', 'c') AND c.relname !~ '^_'
       AND col_description(c.oid, a.attnum) IS NULL
     ORDER BY 1";

/// Every public function, view and view column, and job.claimed_job's attributes, say what
/// they are in psql: on a fresh install, and on the previous release updated with ALTER
/// EXTENSION UPDATE (the generated upgrade script must carry the install script's comments).
#[test]
fn every_public_function_view_and_column_has_a_comment() {
    let fresh = TestDb::create("comments_fresh");
    let missing = strings(&mut fresh.connect(), UNCOMMENTED);
    assert!(
        missing.is_empty(),
        "a fresh install has no COMMENT on: {missing:#?}"
    );
    let previous = released_versions().pop().expect("a released version");
    let updated = TestDb::create_with(
        "comments_updated",
        &format!("CREATE EXTENSION pg_jobqueue VERSION '{previous}'"),
    );
    let mut c = updated.connect();
    c.batch_execute("ALTER EXTENSION pg_jobqueue UPDATE")
        .unwrap_or_else(|e| panic!("{previous}: ALTER EXTENSION UPDATE: {}", error_text(&e)));
    assert_eq!(extversion(&mut c), current_version());
    let missing = strings(&mut c, UNCOMMENTED);
    assert!(
        missing.is_empty(),
        "{previous} updated to {} has no COMMENT on: {missing:#?}",
        current_version()
    );
}

fn pg_tool(tool: &str, args: &[&str]) {
    let url = pg_jobqueue_integration::cluster_url();
    let config: postgres::Config = url.parse().unwrap();
    let port = config
        .get_ports()
        .first()
        .copied()
        .unwrap_or(5432)
        .to_string();
    let output = Command::new(cluster::pg_bin().join(tool))
        .args(["-h", "127.0.0.1", "-p", &port, "-U", "postgres"])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {tool}: {e}"));
    assert!(
        output.status.success(),
        "{tool} {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn dump_and_restore_keep_settings_schedules_handlers_and_unfinished_jobs() {
    let source = TestDb::create("dump_source");
    let mut c = source.connect();
    c.batch_execute(
        "CREATE FUNCTION public.handle_mail(p jsonb) RETURNS jsonb LANGUAGE sql AS 'SELECT p';
         SELECT job.create_queue('mail', max_retries => 2, backoff_base => '3 seconds', lease => '90 seconds',
                                 retention => '2 days', max_payload_bytes => 4096);
         SELECT job.create_queue('held');
         SELECT job.pause_queue('held');
         SELECT job.set_handler('held', 'public.handle_mail(jsonb)', concurrency => 3, timeout => '10 seconds');
         SELECT job.schedule('digest', '0 7 * * MON-FRI', 'mail', '{\"kind\": \"digest\"}',
                             timezone => 'America/New_York', jitter => '5 minutes', misfire => 'catch_up');
         SELECT job.enqueue('held', '{\"n\": 1}', idempotency_key => 'k1');
         SELECT job.enqueue('held', '{\"n\": 2}', delay => '1 day', priority => 7);
         SELECT job.enqueue('mail', '{\"n\": 3}');
         SELECT job.dequeue('mail', 'w1');
         SELECT job.enqueue('mail', '{\"n\": 4}');
         SELECT job.complete(id) FROM job.dequeue('mail', 'w1');",
    )
    .unwrap_or_else(|e| panic!("filling the source: {}", error_text(&e)));
    let snapshot = |c: &mut Client| {
        [
            "SELECT string_agg(to_jsonb(q)::text, ',' ORDER BY name) FROM (SELECT * FROM job.queues) q",
            "SELECT string_agg(concat_ws(' ', name, id, cron, timezone, queue, payload, misfire, jitter, jitter_offset, paused, next_tick), ',' ORDER BY name) FROM job.schedule_defs",
            "SELECT string_agg(concat_ws(' ', queue, handler, run_as, concurrency, timeout), ',') FROM job.handlers",
            "SELECT string_agg(concat_ws(' ', id, queue, state, priority, attempt, run_at, payload, claimed_by, lease_expires_at, idempotency_key), ',' ORDER BY id) FROM job.jobs",
            "SELECT string_agg(concat_ws(' ', queue, key, job_id, expires_at), ',') FROM job.idempotency_keys",
            "SELECT string_agg(concat_ws(' ', action, arguments, role), ',' ORDER BY id) FROM job.audit_log",
        ]
        .map(|q| one_string(c, q))
    };
    let before = snapshot(&mut c);
    let max_id = one_string(&mut c, "SELECT max(id)::text FROM job.jobs");

    let dump = std::env::temp_dir().join(format!("pg_jobqueue_dump_{}.pgdump", std::process::id()));
    let dump_path = dump.to_str().unwrap();
    pg_tool("pg_dump", &["-Fc", "-f", dump_path, "-d", source.name()]);
    let target = TestDb::create_with("dump_target", "");
    pg_tool(
        "pg_restore",
        &["--exit-on-error", "-d", target.name(), dump_path],
    );
    std::fs::remove_file(&dump).ok();

    let mut t = connect(target.name());
    assert_eq!(snapshot(&mut t), before);
    // The sequences continue where they were: new ids do not collide with restored ones.
    let new_id: i64 = one(&mut t, "SELECT job.enqueue('mail', '{}')", &[]);
    assert!(new_id > max_id.parse::<i64>().unwrap());
    let new_schedule: i64 = one(
        &mut t,
        "SELECT job.schedule('other', '@hourly', 'mail')",
        &[],
    );
    assert!(new_schedule > 1);
    // The restored handler resolves to the restored function.
    assert_eq!(
        one_string(&mut t, "SELECT (handler::oid = 'public.handle_mail(jsonb)'::regprocedure::oid)::text FROM job.handlers")
            .as_str(),
        "true"
    );
}

#[test]
fn prometheus_export_parses_as_the_text_format() {
    let db = TestDb::create("prometheus");
    let mut c = db.connect();
    c.batch_execute(
        "SELECT job.create_queue('mail', max_retries => 0);
         SELECT job.enqueue_many('mail', array_fill('{}'::jsonb, ARRAY[5]));
         SELECT job.enqueue('mail', '{}', job_type => 'welcome');
         SELECT job.complete(id) FROM job.dequeue('mail', 'w1', 3);
         SELECT job.fail(id, 'boom') FROM job.dequeue('mail', 'w2', 1);
         SELECT job._count_queue_depth();",
    )
    .unwrap();
    let text = one_string(&mut c, "SELECT job.prometheus_metrics()");

    // Every line is a HELP, TYPE or sample line of the format, and every sample belongs to
    // the family declared just before it (families are contiguous).
    let mut family = String::new();
    let mut declared = BTreeSet::new();
    for line in text.lines() {
        match prometheus_parse::LineInfo::parse(line) {
            prometheus_parse::LineInfo::Doc { .. } => {}
            prometheus_parse::LineInfo::Type { metric_name, .. } => {
                assert!(
                    declared.insert(metric_name.clone()),
                    "{metric_name} declared twice"
                );
                family = metric_name;
            }
            prometheus_parse::LineInfo::Sample {
                metric_name, value, ..
            } => {
                assert!(
                    metric_name == family
                        || metric_name == format!("{family}_sum")
                        || metric_name == format!("{family}_count"),
                    "sample {metric_name} outside its family {family}: {line}"
                );
                assert!(
                    value == "NaN" || value.parse::<f64>().is_ok(),
                    "bad value in {line}"
                );
            }
            other => panic!("not a valid exposition line ({other:?}): {line:?}"),
        }
    }

    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
    let find = |name: &str, labels: &[(&str, &str)]| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .unwrap_or_else(|| panic!("no sample {name} {labels:?} in:\n{text}"))
            .value
            .clone()
    };
    use prometheus_parse::Value;
    assert_eq!(
        find(
            "pg_jobqueue_jobs",
            &[("queue", "mail"), ("state", "waiting")]
        ),
        Value::Gauge(2.0)
    );
    assert_eq!(
        find("pg_jobqueue_jobs", &[("queue", "mail"), ("state", "dead")]),
        Value::Gauge(1.0)
    );
    assert_eq!(
        find(
            "pg_jobqueue_completed_total",
            &[("queue", "mail"), ("job_type", "")]
        ),
        Value::Counter(3.0)
    );
    assert_eq!(
        find(
            "pg_jobqueue_failed_attempts_total",
            &[("queue", "mail"), ("job_type", "")]
        ),
        Value::Counter(1.0)
    );
    match find(
        "pg_jobqueue_processing_seconds",
        &[("queue", "mail"), ("job_type", "")],
    ) {
        Value::Summary(quantiles) => {
            let qs: Vec<f64> = quantiles.iter().map(|q| q.quantile).collect();
            assert_eq!(qs, [0.5, 0.95, 0.99]);
            assert!(quantiles.iter().all(|q| q.count >= 0.0));
        }
        other => panic!("processing_seconds is not a summary: {other:?}"),
    }
    assert_eq!(
        find("pg_jobqueue_worker_jobs", &[("worker", "w1")]),
        Value::Gauge(0.0)
    );
}
