//! A hostile search_path: objects a caller plants to shadow pg_catalog's never run inside
//! the extension's functions.

use super::*;

/// Decoys a hostile role plants where a careless function would find them: a function and
/// operators in public that shadow pg_catalog's exactly (public first in its search_path),
/// and functions in pg_temp.  Each records the call, and as whom, in public.decoy_calls.
fn decoys() -> String {
    // (function, its arguments, its result type, what it records, what it returns)
    let functions = [
        (
            "public.jsonb_typeof",
            "jsonb",
            "text",
            "jsonb_typeof",
            "pg_catalog.jsonb_typeof($1)",
        ),
        ("public.now", "", "timestamptz", "now", "pg_catalog.now()"),
        (
            "public.gen_random_uuid",
            "",
            "uuid",
            "gen_random_uuid",
            "pg_catalog.gen_random_uuid()",
        ),
        (
            "pg_temp.now",
            "",
            "timestamptz",
            "pg_temp.now",
            "pg_catalog.now()",
        ),
        (
            "public.text_eq",
            "text, text",
            "boolean",
            "text =",
            "$1 OPERATOR(pg_catalog.=) $2",
        ),
        (
            "public.int8_eq",
            "bigint, bigint",
            "boolean",
            "bigint =",
            "$1 OPERATOR(pg_catalog.=) $2",
        ),
        (
            "public.oid_regprocedure_eq",
            "oid, regprocedure",
            "boolean",
            "oid = regprocedure",
            "$1 OPERATOR(pg_catalog.=) $2::oid",
        ),
    ];
    let mut sql = "CREATE TABLE public.decoy_calls (decoy text, who text);
                   GRANT INSERT ON public.decoy_calls TO PUBLIC;\n"
        .to_owned();
    for (name, args, returns, records, result) in functions {
        sql += &format!(
            "CREATE FUNCTION {name}({args}) RETURNS {returns} LANGUAGE plpgsql AS $$
             BEGIN
                 INSERT INTO public.decoy_calls VALUES ('{records}', current_user);
                 RETURN {result};
             END $$;\n"
        );
    }
    sql + "CREATE OPERATOR public.= (LEFTARG = text, RIGHTARG = text, FUNCTION = public.text_eq);
           CREATE OPERATOR public.= (LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = public.int8_eq);
           CREATE OPERATOR public.= (LEFTARG = oid, RIGHTARG = regprocedure,
                                     FUNCTION = public.oid_regprocedure_eq);
           CREATE TEMP TABLE queues (name text);
           CREATE TEMP TABLE live_jobs (id bigint);
           SET search_path = public, pg_catalog, pg_temp;"
}

/// A role that plants decoys (public.jsonb_typeof, public.now, an operator
/// public.= on text and on bigint, pg_temp.now, temp tables named like the extension's) and
/// calls the producer and worker functions with search_path = public, pg_catalog, pg_temp:
/// none of its objects runs inside them, and they work.
#[test]
fn definer_functions_use_nothing_of_a_hostile_search_path() {
    let (mut roles, db, mut su) = duty_db("path", "sec_search_path");
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
    exec(&mut e, &decoys());
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
    let claimed: Vec<(i64, String)> = rows(
        &mut e,
        "SELECT id, lease_token::text FROM job.dequeue('emails', 'w1', 10)",
        &[],
    );
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
    let calls: Vec<(String, String)> =
        rows(&mut su, "SELECT decoy, who FROM public.decoy_calls", &[]);
    assert!(
        calls.is_empty(),
        "the extension's functions ran the caller's decoys: {calls:?}"
    );
    let states: Vec<String> = column(&mut su, "SELECT state FROM job.jobs ORDER BY id", &[]);
    assert_eq!(states.len(), 4, "{states:?}");
    assert!(states.contains(&"completed".to_owned()), "{states:?}");
}

/// The same for the one administrative function in Rust: job.set_handler runs as its
/// caller and looks up the extension's owner and records the handler over SPI, under the
/// caller's search_path.  None of the caller's objects may run inside it.
#[test]
fn set_handler_uses_nothing_of_a_hostile_search_path() {
    let (roles, db, mut su) = duty_db("hpath", "sec_handler_path");
    let evil = roles.admin.clone();
    exec(
        &mut su,
        &format!(
            "GRANT CREATE ON SCHEMA public TO {evil};
             SELECT job.create_queue('b');"
        ),
    );
    let mut e = connect_as(&db, &evil);
    exec(&mut e, &decoys());
    exec(
        &mut e,
        "CREATE FUNCTION public.h(payload jsonb) RETURNS jsonb LANGUAGE sql AS $$ SELECT payload $$;
         SELECT job.set_handler('b', 'public.h(jsonb)');
         SELECT job.remove_handler('b');",
    );
    let calls: Vec<(String, String, i64)> = rows(
        &mut su,
        "SELECT decoy, who, count(*) FROM public.decoy_calls GROUP BY 1, 2 ORDER BY 1, 2",
        &[],
    );
    assert!(
        calls.is_empty(),
        "job.set_handler ran the caller's decoys (decoy, as whom, how often): {calls:?}"
    );
}
