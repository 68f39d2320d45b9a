//! What every `#[pg_test]` module shares: running statements, reading errors, and the one
//! assertion the suite is built on: a rejected call raises its message and changes nothing.

use pgrx::prelude::*;

/// The single value `query` returns.
pub fn one<T: IntoDatum + FromDatum>(query: &str) -> T {
    Spi::get_one::<T>(query)
        .unwrap_or_else(|e| panic!("{query}: {e}"))
        .unwrap_or_else(|| panic!("{query}: returned NULL"))
}

/// The single value `query` returns, None for NULL.
pub fn one_or_null<T: IntoDatum + FromDatum>(query: &str) -> Option<T> {
    Spi::get_one::<T>(query).unwrap_or_else(|e| panic!("{query}: {e}"))
}

pub fn run(query: &str) {
    Spi::run(query).unwrap_or_else(|e| panic!("{query}: {e}"));
}

/// The SQLSTATE and message of the error `query` raises (run in a subtransaction, so the test
/// goes on).
pub fn error_state_of(query: &str) -> (String, String) {
    // Created once per session, so that it also works after SET ROLE.
    run("DO $do$ BEGIN
           IF to_regprocedure('pg_temp.error_of(text)') IS NULL THEN
             CREATE FUNCTION pg_temp.error_of(q text) RETURNS text LANGUAGE plpgsql AS $$
             BEGIN EXECUTE q; RETURN NULL;
             EXCEPTION WHEN OTHERS THEN RETURN SQLSTATE || ' ' || SQLERRM; END $$;
           END IF; END $do$");
    let quoted = query.replace('\'', "''");
    let error = Spi::get_one::<String>(&format!("SELECT pg_temp.error_of('{quoted}')"))
        .unwrap()
        .unwrap_or_else(|| panic!("expected an error from: {query}"));
    let (state, message) = error.split_at(5);
    (state.to_owned(), message[1..].to_owned())
}

/// The error message `query` raises.
pub fn error_of(query: &str) -> String {
    error_state_of(query).1
}

/// Asserts that `query` fails with `message`, under a SQLSTATE that is not an internal error
/// (XX000 is for bugs, never for a caller's mistake), and leaves every table of the extension
/// as it was.
pub fn assert_rejected(query: &str, message: &str) {
    let before = fingerprint();
    let (state, error) = error_state_of(query);
    assert_eq!(error, message, "{query}");
    assert!(
        !state.starts_with("XX"),
        "{query} failed with internal error {state}: {error}"
    );
    assert_eq!(fingerprint(), before, "{query} changed something");
}

/// Like [`assert_rejected`], and the error has SQLSTATE `state`.
pub fn assert_rejected_with(query: &str, state: &str, message: &str) {
    assert_rejected(query, message);
    assert_eq!(error_state_of(query).0, state, "{query}");
}

/// A digest of every table of the extension: equal digests, nothing changed.  Read as the
/// role that first asked (the superuser the tests run as), even after a test's SET ROLE.
pub fn fingerprint() -> String {
    run("DO $do$ BEGIN
           IF to_regprocedure('pg_temp.jq_fingerprint()') IS NULL THEN
             CREATE FUNCTION pg_temp.jq_fingerprint() RETURNS text LANGUAGE sql SECURITY DEFINER AS $$
               SELECT md5(concat_ws('|',
                 (SELECT string_agg(l::text, ',' ORDER BY id) FROM job.live_jobs l),
                 (SELECT string_agg(f::text, ',' ORDER BY id) FROM job.finished_jobs f),
                 (SELECT string_agg(q::text, ',' ORDER BY name) FROM job.queues q),
                 (SELECT string_agg(k::text, ',' ORDER BY queue, key) FROM job.idempotency_keys k),
                 (SELECT string_agg(s::text, ',' ORDER BY name) FROM job.schedule_defs s),
                 (SELECT string_agg(r::text, ',' ORDER BY schedule, tick) FROM job.schedule_ticks r),
                 (SELECT string_agg(h::text, ',' ORDER BY queue) FROM job.handler_defs h),
                 (SELECT string_agg(e::text, ',' ORDER BY name) FROM job.endpoint_defs e),
                 (SELECT string_agg(s::text, ',' ORDER BY endpoint) FROM job.endpoint_secrets s),
                 (SELECT string_agg(t::text, ',' ORDER BY endpoint) FROM job.endpoint_stats t),
                 (SELECT string_agg(w::text, ',' ORDER BY queue, key) FROM job.rate_windows w),
                 (SELECT string_agg(c::text, ',' ORDER BY queue, slot) FROM job.concurrency_slots c),
                 (SELECT string_agg(g::text, ',' ORDER BY queue, duty, grantee) FROM job.queue_grant_defs g),
                 (SELECT string_agg(a::text, ',' ORDER BY id) FROM job.audit_entries a)))
             $$;
           END IF; END $do$");
    one::<String>("SELECT pg_temp.jq_fingerprint()")
}

/// The first column of every row `query` returns.
pub fn ids_of(query: &str) -> Vec<i64> {
    Spi::connect(|client| {
        client
            .select(query, None, &[])
            .unwrap_or_else(|e| panic!("{query}: {e}"))
            .map(|row| row.get::<i64>(1).unwrap().unwrap())
            .collect()
    })
}

pub fn queue(name: &str) {
    run(&format!("SELECT job.create_queue('{name}')"));
}

pub fn enqueue(queue: &str) -> i64 {
    one(&format!("SELECT job.enqueue('{queue}')"))
}

pub fn claim(queue: &str) -> i64 {
    one(&format!("SELECT id FROM job.dequeue('{queue}', 'tester')"))
}

pub fn state(id: i64) -> String {
    one(&format!("SELECT state FROM job.jobs WHERE id = {id}"))
}

/// Makes a scheduled job due and a running job's lease lapse, as time passing would.
pub fn age_job(id: i64) {
    run(&format!(
        "UPDATE job.live_jobs SET run_at = now() - interval '1 second',
                lease_expires_at = lease_expires_at - interval '1 hour' WHERE id = {id}"
    ));
}
