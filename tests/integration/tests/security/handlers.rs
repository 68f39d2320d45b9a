//! Handlers and run_as: who may name which role a handler runs as, and that the executors
//! run a handler's code (its commit included) as that role and no other.

use super::*;
use pg_jobqueue_integration::cluster::Cluster;

/// The duty roles `<duty>_<tag>_<pid>` and database `test` ([`duty_db`]) with queue 'b', and
/// schema adm of the admin duty holding its handler function adm.h(jsonb) (the payload back);
/// a connection as the admin last.
fn admin_with_a_handler(tag: &str, test: &str) -> (Roles, TestDb, Client, Client) {
    let (roles, db, mut su) = duty_db(tag, test);
    admin_schema(&mut su, &roles, "adm", "b");
    let mut admin = connect_as(&db, &roles.admin);
    exec(
        &mut admin,
        "CREATE FUNCTION adm.h(payload jsonb) RETURNS jsonb LANGUAGE sql AS $$ SELECT payload $$;",
    );
    (roles, db, su, admin)
}

/// Queue `queue`, and schema hs of the admin duty (the handler's role in the tests below): the
/// admin's name and a connection as the admin, to the private cluster's database `postgres`.
fn admin_in_hs(cluster: &Cluster, su: &mut Client, roles: &Roles, queue: &str) -> (String, Client) {
    admin_schema(su, roles, "hs", queue);
    let role = roles.admin.clone();
    let client = connect_cluster_as(cluster, "postgres", &role);
    (role, client)
}

/// Job {"n": 1} of queue 'svcq' runs (its handler works); then `change`, run as the superuser,
/// makes job.handlers show `state` for the queue, and a job {"n": 2} enqueued then is still
/// waiting 3 s later (`ran`: what it means if it is not).
fn stop_svcq_handler(cluster: &Cluster, su: &mut Client, change: &str, state: &str, ran: &str) {
    exec(su, "SELECT job.enqueue('svcq', '{\"n\": 1}')");
    wait_for_finished(cluster, su, "svcq", 1, Duration::from_secs(30));

    exec(su, change);
    let shown: String = one(
        su,
        "SELECT state FROM job.handlers WHERE queue = 'svcq'",
        &[],
    );
    assert_eq!(shown, state);
    let waiting: i64 = one(su, "SELECT job.enqueue('svcq', '{\"n\": 2}')", &[]);
    std::thread::sleep(Duration::from_secs(3));
    let job_state: String = one(su, "SELECT state FROM job.jobs WHERE id = $1", &[&waiting]);
    assert_eq!(job_state, "waiting", "{ran}");
}

/// In 0.2.0 the admin duty wrote a handler row naming run_as => postgres, and the worker
/// ran its function as the superuser.  Now it can write no handler row (job.handlers is a
/// view, job.handler_defs takes no privilege from anyone), and job.set_handler refuses a
/// run_as it is not a member of (42501).  Its own handler, as itself, is still allowed.
#[test]
fn admin_duty_cannot_forge_a_handler_or_name_a_role_it_is_not() {
    let (roles, db, mut su) = duty_db("forge", "sec_forge");
    admin_schema(&mut su, &roles, "adm", "b");
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
    let (run_as, set_by): (String, String) = one_row(
        &mut su,
        "SELECT run_as::text, set_by::text FROM job.handlers WHERE queue = 'b'",
        &[],
    );
    assert_eq!(
        (run_as.as_str(), set_by.as_str()),
        (roles.admin.as_str(), roles.admin.as_str())
    );
}

/// set_handler called inside a SECURITY DEFINER function owned by the admin duty,
/// which a superuser then calls: the caller set_handler sees is the function's owner, so
/// naming run_as => postgres is refused, and the default run_as is the owner, not the
/// superuser who called.
#[test]
fn set_handler_through_a_definer_function_acts_for_its_owner_not_the_superuser_calling() {
    let (roles, _db, mut su, mut admin) = admin_with_a_handler("defr", "sec_definer");
    exec(
        &mut admin,
        "CREATE FUNCTION adm.install_as_postgres() RETURNS void LANGUAGE sql SECURITY DEFINER
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
    let (roles, _db, mut su, mut admin) = admin_with_a_handler("subx", "sec_subxact");
    exec(
        &mut admin,
        "CREATE TABLE adm.seen (at text, who text);
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
    let seen: Vec<(String, String)> =
        rows(&mut su, "SELECT at, who FROM adm.seen ORDER BY at", &[]);
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

/// In 0.4.0 (issue 19, item 11) job.schedule fed an admin-chosen payload to a handler whose
/// run_as is a superuser.  Now only a superuser names a superuser run_as (42501 for a member of a superuser role), and
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
    stop_svcq_handler(
        &cluster,
        &mut su,
        &format!("ALTER ROLE {service} SUPERUSER"),
        "run_as is a superuser, set_by is not",
        "a handler made superuser after a non-superuser set it still ran",
    );

    // A superuser may name it.
    exec(
        &mut su,
        &format!("SELECT job.set_handler('svcq', 'svc.h(jsonb)', run_as => '{service}')"),
    );
    wait_for_finished(&cluster, &mut su, "svcq", 2, Duration::from_secs(30));
}

/// In 0.2.0 a handler's deferred constraint trigger fired at commit, which the executor ran
/// as its superuser (0.2.0), so the trigger could ALTER ROLE ... SUPERUSER.  Now the commit
/// runs as the handler's role: the trigger sees that role as current_user, is no superuser,
/// and every way out (ALTER ROLE, SET ROLE, SET SESSION AUTHORIZATION, set_config('role'),
/// RESET ROLE) fails.
#[test]
fn a_handlers_deferred_trigger_fires_as_the_handlers_role() {
    let (cluster, mut su, roles) = duty_cluster("sec-deferred", "dfr");
    let (role, mut h) = admin_in_hs(&cluster, &mut su, &roles, "deferred");
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

/// Beyond the deferred trigger above: commit-time code runs as the handler's role, but
/// whatever settings it makes at session level outlive the commit, into the executor's next
/// statements, which run as the superuser.  A deferred trigger that sets search_path = 'hs, pg_catalog' (hs: the
/// role's schema, holding an operator = on regrole, which pg_catalog lacks) must not get that
/// operator called by the executor as superuser.
#[test]
fn a_handlers_commit_cannot_steer_the_executors_own_statements() {
    let (cluster, mut su, roles) = duty_cluster("sec-commit-guc", "guc");
    let (role, mut h) = admin_in_hs(&cluster, &mut su, &roles, "steer");
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

    let calls: Vec<(String, String, i64)> = rows(
        &mut su,
        "SELECT decoy, who, count(*) FROM hs.calls GROUP BY 1, 2 ORDER BY 1, 2",
        &[],
    );
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

/// A handler set by a member of run_as, whose membership is revoked afterwards:
/// the executors stop running it (job.handlers says why) and its jobs wait; granted again,
/// they run.
#[test]
fn revoking_the_setters_membership_in_run_as_stops_the_handler() {
    let (cluster, mut su, mut roles) = duty_cluster("sec-revoked", "rvk");
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
    stop_svcq_handler(
        &cluster,
        &mut su,
        &format!("REVOKE {service} FROM {deployer}"),
        "set_by no longer a member of run_as",
        "a handler whose setter left run_as still ran",
    );
    assert_eq!(
        one::<i64>(&mut su, "SELECT count(*) FROM svc.calls WHERE n = 2", &[]),
        0
    );

    exec(&mut su, &format!("GRANT {service} TO {deployer}"));
    wait_for_finished(&cluster, &mut su, "svcq", 2, Duration::from_secs(30));
    let calls: Vec<(i32, String)> = rows(&mut su, "SELECT n, who FROM svc.calls ORDER BY n", &[]);
    assert_eq!(calls, vec![(1, service.clone()), (2, service.clone())]);
}

/// run_as dropped after set_handler: its jobs stay waiting, job.handlers says
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
