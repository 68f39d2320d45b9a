//! What a hostile role could change in the extension, read as a superuser: a fingerprint of
//! every table's rows, sequence, trigger, rule, policy, privilege and function of schema
//! `job`, and of a test's roles, compared before and after an attempt.

use crate::roles::Roles;
use crate::sql::{error_code, one};
use crate::Client;
use std::collections::BTreeMap;

/// What a hostile role could change: every table's rows (the worker's own bookkeeping
/// column `counted_at` left out), every sequence, the triggers, rules and policies on the
/// extension's relations, their privileges, the extension's functions, and every role's
/// attributes.  Read as a superuser.
pub fn fingerprint(client: &mut Client, roles: &Roles) -> BTreeMap<String, String> {
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

/// Asserts two fingerprints are the same, naming what changed.
pub fn assert_unchanged(
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

/// Every relation of schema `job` of the given kinds (`r`, `p`, `v`, `S`...), qualified.
pub fn job_relations(client: &mut Client, kinds: &[&str]) -> Vec<String> {
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

/// The SQLSTATE of `sql`'s error, and proof that it changed nothing the fingerprint sees
/// (but job.workers_seen, which a database's sender and executors write on their own).
pub fn refused_unchanged(su: &mut Client, roles: &Roles, client: &mut Client, sql: &str) -> String {
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
