//! The audit log: written only by the extension's functions, naming who really acted.

use super::*;

/// In 0.2.0 the admin duty could insert forged rows into job.audit_log and UPDATE
/// job.queues without leaving an audit row.  Now every such write is refused (42501) and
/// nothing changes.
#[test]
fn admin_duty_cannot_forge_audit_rows_or_change_tables_behind_the_audit() {
    let (roles, db, mut su) = duty_db("audw", "sec_audit_writes");
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

/// The audit log records the session's current role (the SET ROLE target) and
/// the login role, neither the extension's owner nor the owner of a SECURITY DEFINER
/// function in between; no duty can write it other than through the functions.
#[test]
fn audit_log_records_the_set_role_target_and_the_login_role() {
    let (mut roles, db, mut su) = duty_db("audr", "sec_audit_role");
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

    let rows: Vec<(String, String, String)> = rows(
        &mut su,
        "SELECT arguments->>'name', role::text, session_role::text FROM job.audit_log
              WHERE action = 'create_queue' ORDER BY id",
        &[],
    );
    assert_eq!(
        rows,
        vec![
            ("via_set_role".to_owned(), admin.clone(), alice.clone()),
            ("via_definer".to_owned(), bob.clone(), bob.clone()),
        ]
    );
}
