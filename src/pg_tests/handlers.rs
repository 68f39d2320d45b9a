//! `#[pg_test]`s of handlers: set_handler, claims, failures.

#[pgrx::pg_schema]
mod tests {
    use crate::pg_tests::support::*;
    use pgrx::prelude::*;

    #[pg_test]
    fn set_handler_records_the_calling_role_and_replaces() {
        queue("q");
        run("CREATE FUNCTION public.handle_q(p jsonb) RETURNS jsonb LANGUAGE sql AS 'SELECT p'");
        run("SELECT job.set_handler('q', 'handle_q(jsonb)')");
        assert_eq!(
            one::<String>("SELECT concat_ws(',', handler, run_as = current_user::regrole, concurrency, timeout) FROM job.handlers"),
            "handle_q(jsonb),t,1,00:05:00"
        );
        run("SELECT job.set_handler('q', 'handle_q(jsonb)', concurrency => 4, timeout => '10 seconds')");
        assert_eq!(
            one::<String>(
                "SELECT concat_ws(',', count(*), min(concurrency), min(timeout)) FROM job.handlers"
            ),
            "1,4,00:00:10"
        );
        assert!(one::<bool>("SELECT job.remove_handler('q')"));
        assert!(!one::<bool>("SELECT job.remove_handler('q')"));
    }

    #[pg_test]
    fn set_handler_rejects_bad_handlers() {
        queue("q");
        run("CREATE FUNCTION public.two_args(a jsonb, b int) RETURNS void LANGUAGE sql AS ''");
        run("CREATE FUNCTION public.text_arg(a text) RETURNS void LANGUAGE sql AS ''");
        run("CREATE FUNCTION public.many(a jsonb) RETURNS SETOF int LANGUAGE sql AS 'SELECT 1'");
        run("CREATE PROCEDURE public.proc(a jsonb) LANGUAGE sql AS ''");
        run("CREATE FUNCTION public.good(a jsonb) RETURNS void LANGUAGE sql AS ''");
        run("CREATE FUNCTION public.secret(a jsonb) RETURNS void LANGUAGE sql AS ''");
        run("REVOKE EXECUTE ON FUNCTION public.secret(jsonb) FROM PUBLIC");
        let hint = "must be a function taking one jsonb argument and returning one value";
        for (call, message) in [
            (
                "SELECT job.set_handler('q', 'two_args(jsonb,int)')",
                format!("handler public.two_args(jsonb,integer) {hint}"),
            ),
            (
                "SELECT job.set_handler('q', 'text_arg(text)')",
                format!("handler public.text_arg(text) {hint}"),
            ),
            (
                "SELECT job.set_handler('q', 'many(jsonb)')",
                format!("handler public.many(jsonb) {hint}"),
            ),
            (
                "SELECT job.set_handler('q', 'proc(jsonb)')",
                format!("handler public.proc(jsonb) {hint}"),
            ),
            (
                "SELECT job.set_handler('nope', 'good(jsonb)')",
                "queue 'nope' does not exist".into(),
            ),
            (
                "SELECT job.set_handler('q', NULL)",
                "handler must not be NULL".into(),
            ),
            (
                "SELECT job.set_handler('q', 'good(jsonb)', concurrency => 0)",
                "concurrency must be between 1 and 1000, got 0".into(),
            ),
            (
                "SELECT job.set_handler('q', 'good(jsonb)', concurrency => 1001)",
                "concurrency must be between 1 and 1000, got 1001".into(),
            ),
            (
                "SELECT job.set_handler('q', 'good(jsonb)', timeout => '0')",
                "timeout must be a positive interval, got 00:00:00".into(),
            ),
            (
                "SELECT job.remove_handler('nope')",
                "queue 'nope' does not exist".into(),
            ),
        ] {
            assert_rejected(call, &message);
        }
        // A role may only hand over a function its run_as role may execute, and name as
        // run_as only a role it is a member of.
        run("CREATE ROLE handler_tester");
        run("CREATE ROLE handler_team");
        run("GRANT handler_team TO handler_tester");
        run("GRANT USAGE ON SCHEMA job TO handler_tester");
        run("GRANT EXECUTE ON FUNCTION job.set_handler TO handler_tester");
        run("SET LOCAL ROLE handler_tester");
        assert_rejected_with(
            "SELECT job.set_handler('q', 'secret(jsonb)')",
            "42501",
            "permission denied: role handler_tester may not execute handler public.secret(jsonb)",
        );
        assert_rejected_with(
            "SELECT job.set_handler('q', 'good(jsonb)', run_as => 'postgres')",
            "42501",
            "permission denied: role handler_tester is not a member of role postgres, so it cannot name it as run_as",
        );
        run("SELECT job.set_handler('q', 'good(jsonb)')");
        run("RESET ROLE");
        assert_eq!(
            one::<String>("SELECT concat_ws(',', run_as, set_by, state) FROM job.handlers"),
            "handler_tester,handler_tester,active"
        );
        run("SET LOCAL ROLE handler_tester");
        run("SELECT job.set_handler('q', 'good(jsonb)', run_as => 'handler_team')");
        run("RESET ROLE");
        assert_eq!(
            one::<String>("SELECT concat_ws(',', run_as, set_by, state) FROM job.handlers"),
            "handler_team,handler_tester,active"
        );
        // Membership is checked at every claim too: once revoked, the handler stops.
        run("REVOKE handler_team FROM handler_tester");
        assert_eq!(
            one::<String>("SELECT state FROM job.handlers"),
            "set_by no longer a member of run_as"
        );
        assert_eq!(
            one::<i64>("SELECT count(*) FROM job._runnable_handlers('handler_team')"),
            0
        );
    }

    #[pg_test]
    fn a_handler_failure_keeps_its_sqlstate_and_follows_the_fail_rules() {
        queue("q");
        let transient = enqueue("q");
        let permanent = enqueue("q");
        run("CREATE TEMP TABLE claims AS SELECT id, lease_token FROM job.dequeue('q', 'executor', 2)");
        assert_eq!(
            one::<String>(&format!("SELECT job._fail_handler_job(id, lease_token, '40001', 'could not serialize access', false) FROM claims WHERE id = {transient}")),
            "scheduled"
        );
        assert_eq!(
            one::<String>(&format!(
                "SELECT job._fail_handler_job(id, lease_token, '22012', 'division by zero', true) FROM claims WHERE id = {permanent}"
            )),
            "dead"
        );
        assert_eq!(
            one::<String>("SELECT string_agg(concat_ws(' ', state, errors->-1->>'sqlstate', errors->-1->>'permanent', errors->-1->>'error'), ',' ORDER BY id) FROM job.jobs"),
            "scheduled 40001 false could not serialize access,dead 22012 true division by zero"
        );
        // Under a claim that is no longer the job's, nothing is recorded.
        assert_eq!(
            one_or_null::<String>(&format!("SELECT job._fail_handler_job(id, lease_token, '57014', 'late', false) FROM claims WHERE id = {transient}")),
            None
        );
        assert_eq!(
            one::<i32>(&format!(
                "SELECT jsonb_array_length(errors) FROM job.jobs WHERE id = {transient}"
            )),
            1
        );
    }

    #[pg_test]
    fn a_handler_job_is_claimed_within_its_queues_concurrency() {
        queue("q");
        queue("plain");
        run("CREATE FUNCTION public.handle(p jsonb) RETURNS jsonb LANGUAGE sql AS 'SELECT p'");
        run("SELECT job.set_handler('q', 'handle(jsonb)', timeout => '1 minute')");
        let id = one::<i64>("SELECT job.enqueue('q', '{\"x\": 1}')");
        let second = one::<i64>("SELECT job.enqueue('q', '{\"x\": 2}')");
        enqueue("plain"); // no handler: never claimed by an executor
        assert_eq!(
            one::<String>("SELECT concat_ws(',', job_id, token IS NOT NULL, payload, handler_schema, handler_name,
                                  returns_jsonb, timeout_ms)
                             FROM job._claim_handler_jobs('executor 0', current_user::regrole, 10)"),
            format!("{id},t,{{\"x\": 1}},public,handle,t,60000")
        );
        assert_eq!(
            one::<String>(&format!("SELECT concat_ws(',', state, claimed_by, lease_expires_at - now()) FROM job.jobs WHERE id = {id}")),
            "running,executor 0,00:01:30"
        );
        // Concurrency 1 and one running: nothing more to claim; other roles' executors get
        // nothing either.
        assert_eq!(
            one::<i64>(
                "SELECT count(*) FROM job._claim_handler_jobs('executor 1', current_user::regrole, 10)"
            ),
            0
        );
        assert_eq!(
            one::<i64>(
                "SELECT count(*) FROM job._claim_handler_jobs('executor 2', 'pg_monitor', 10)"
            ),
            0
        );
        run(&format!("SELECT job.complete({id})"));
        assert_eq!(
            one::<i64>(
                "SELECT job_id FROM job._claim_handler_jobs('executor 1', current_user::regrole, 10)"
            ),
            second
        );
        // No advisory lock is involved: nothing a session could take to stop a handler queue.
        assert_eq!(
            one::<i64>("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"),
            0
        );
    }

    /// A scheduler that starts takes back the jobs of executors and senders that are gone, by
    /// the pid in their `claimed_by`, and nobody else's: a client worker's name holds no pid of
    /// ours, also when no executor is alive (`NULL <> ALL ('{}')` is true; the regression had
    /// every client's running job taken back whenever a scheduler started).
    #[pg_test]
    fn only_the_jobs_of_gone_executors_and_senders_are_taken_back() {
        queue("q");
        run("SELECT job.enqueue('q') FROM generate_series(1, 4)");
        run("SELECT count(*) FROM job.dequeue('q', 'w', batch => 4)");
        run("UPDATE job.live_jobs SET claimed_by = CASE id % 4
                 WHEN 1 THEN 'host:4242:abcd' WHEN 2 THEN 'w'
                 WHEN 3 THEN 'pg_jobqueue executor 10/0 (pid 4242)'
                 ELSE 'pg_jobqueue sender (pid 4343)' END");
        let expired = "SELECT string_agg(claimed_by, ', ' ORDER BY id) FROM job.live_jobs
                        WHERE lease_expires_at <= now()";
        // None alive: the executor's and the sender's, not the clients'.
        assert_eq!(
            one::<i64>("SELECT job._expire_executor_leases('{}', '{}')"),
            2
        );
        assert_eq!(
            one::<String>(expired),
            "pg_jobqueue executor 10/0 (pid 4242), pg_jobqueue sender (pid 4343)"
        );
        // The sender alive: the executor's alone.
        run("UPDATE job.live_jobs SET lease_expires_at = now() + interval '1 minute'");
        assert_eq!(
            one::<i64>("SELECT job._expire_executor_leases('{}', ARRAY[4343])"),
            1
        );
        assert_eq!(
            one::<String>(expired),
            "pg_jobqueue executor 10/0 (pid 4242)"
        );
        // By name, a stopped executor's, whatever it is.
        run("UPDATE job.live_jobs SET lease_expires_at = now() + interval '1 minute'");
        assert_eq!(
            one::<i64>("SELECT job._expire_executor_leases(ARRAY['w'], NULL)"),
            1
        );
        assert_eq!(one::<String>(expired), "w");
    }

    #[pg_test]
    fn an_executor_claims_a_batch_within_the_concurrency_left() {
        queue("q");
        run("CREATE FUNCTION public.handle(p jsonb) RETURNS jsonb LANGUAGE sql AS 'SELECT p'");
        run("SELECT job.set_handler('q', 'handle(jsonb)', concurrency => 5, timeout => '10 seconds')");
        let ids = ids_of(
            "SELECT job.enqueue('q', jsonb_build_object('n', g)) FROM generate_series(1, 8) g",
        );
        // Batch 3 of 5 free slots: 3 jobs, in claim order, under one token.
        assert_eq!(
            one::<String>("SELECT string_agg(job_id::text, ',' ORDER BY job_id) || ' ' || count(DISTINCT token)
                             FROM job._claim_handler_jobs('e0', current_user::regrole, 3)"),
            format!("{},{},{} 1", ids[0], ids[1], ids[2])
        );
        // Batch 10, but only 2 slots left.
        assert_eq!(
            one::<i64>(
                "SELECT count(*) FROM job._claim_handler_jobs('e1', current_user::regrole, 10)"
            ),
            2
        );
        assert_eq!(
            one::<i64>(
                "SELECT count(*) FROM job._claim_handler_jobs('e2', current_user::regrole, 10)"
            ),
            0
        );
        assert_eq!(
            one::<i64>("SELECT count(*) FROM job.live_jobs WHERE state = 'running'"),
            5
        );
    }
}
