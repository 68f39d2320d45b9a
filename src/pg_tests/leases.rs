//! `#[pg_test]`s of leases: tokens that fence out a worker whose lease ran out, release,
//! heartbeat_many, and when the next job is due.

#[pgrx::pg_schema]
mod tests {
    use crate::pg_tests::support::*;
    use pgrx::prelude::*;

    /// Claims one job of `queue` as `worker`; returns (id, token as text).
    fn claim_with_token(queue: &str, worker: &str) -> (i64, String) {
        let row = one::<String>(&format!(
            "SELECT id || ' ' || lease_token FROM job.dequeue('{queue}', '{worker}')"
        ));
        let (id, token) = row.split_once(' ').unwrap();
        (id.parse().unwrap(), token.to_owned())
    }

    /// Lets the job's lease run out and takes it back, as the worker would.
    fn lapse_and_rescue(id: i64) {
        age_job(id);
        run("SELECT job.rescue_stalled()");
    }

    #[pg_test]
    fn a_stale_claim_can_neither_complete_fail_nor_heartbeat() {
        run("SELECT job.create_queue('q', lease => '1 minute')");
        let id = enqueue("q");
        let (_, stale) = claim_with_token("q", "a");
        lapse_and_rescue(id);
        let (again, current) = claim_with_token("q", "b");
        assert_eq!(again, id);
        assert_ne!(stale, current);
        let before = fingerprint();
        assert!(!one::<bool>(&format!(
            "SELECT job.complete({id}, '{{\"by\": \"a\"}}', '{stale}')"
        )));
        // NULL: nothing recorded (it returned 'running', which a recorded failure never does
        // but 'waiting', 'scheduled' and 'dead' also read as recorded ones).
        assert_eq!(
            one_or_null::<String>(&format!(
                "SELECT job.fail({id}, 'boom', permanent => true, token => '{stale}')"
            )),
            None
        );
        let never_issued = "00000000-0000-4000-8000-000000000000";
        assert_eq!(
            one_or_null::<String>(&format!(
                "SELECT job.fail({id}, 'boom', token => '{never_issued}')"
            )),
            None
        );
        assert_eq!(fingerprint(), before, "the stale worker changed something");
        assert_rejected_with(
            &format!("SELECT job.heartbeat({id}, token => '{stale}')"),
            "55000",
            &format!("job {id} is running under another claim than this token's (attempt 2)"),
        );
        assert_eq!(
            one::<String>(&format!(
                "SELECT concat_ws(',', id, held) FROM job.heartbeat_many(ARRAY[{id}], ARRAY['{stale}'::uuid])"
            )),
            format!("{id},f")
        );
        // The current holder is unaffected, and finishes the attempt.
        assert!(one::<bool>(&format!(
            "SELECT job.heartbeat({id}, '2 minutes', '{current}') > now() + interval '1 minute'"
        )));
        assert!(one::<bool>(&format!(
            "SELECT job.complete({id}, '{{\"by\": \"b\"}}', '{current}')"
        )));
        assert_eq!(
            one::<String>(&format!(
                "SELECT concat_ws(',', state, attempt, result) FROM job.jobs WHERE id = {id}"
            )),
            "completed,2,{\"by\": \"b\"}"
        );
    }

    #[pg_test]
    fn a_token_still_holds_its_job_past_the_lease_until_it_is_taken_back() {
        run("SELECT job.create_queue('q', lease => '1 minute')");
        let id = enqueue("q");
        let (_, token) = claim_with_token("q", "a");
        age_job(id); // expired, not yet taken back: nobody else holds it
        assert!(one::<bool>(&format!(
            "SELECT job.heartbeat({id}, token => '{token}') > now()"
        )));
        // Without a token, an expired lease cannot be extended (0.2.0's rule).
        age_job(id);
        assert_rejected(
            &format!("SELECT job.heartbeat({id})"),
            &format!(
                "job {id} is no longer held: its lease expired at {}",
                one::<String>(&format!(
                    "SELECT lease_expires_at::text FROM job.jobs WHERE id = {id}"
                ))
            ),
        );
        assert!(one::<bool>(&format!(
            "SELECT job.complete({id}, NULL, '{token}')"
        )));
    }

    #[pg_test]
    fn a_token_fences_every_claim_of_a_batch() {
        queue("q");
        let ids: Vec<i64> = (0..3).map(|_| enqueue("q")).collect();
        let tokens = one::<String>(
            "SELECT string_agg(DISTINCT lease_token::text, ',') FROM job.dequeue('q', 'w', 3)",
        );
        assert!(!tokens.contains(','), "one token per dequeue: {tokens}");
        assert_eq!(
            one::<String>(&format!(
                "SELECT string_agg(held::text, ',' ORDER BY ord)
                   FROM job.heartbeat_many(ARRAY[{}, {}, 999999], ARRAY['{tokens}'::uuid], '1 hour')
                   WITH ORDINALITY AS h(id, held, lease_expires_at, ord)",
                ids[0], ids[1]
            )),
            "true,true,false"
        );
        assert_eq!(
            one::<i32>(&format!(
                "SELECT job.complete_many(ARRAY[{}, {}, {}], ARRAY['{tokens}'::uuid])",
                ids[0], ids[1], ids[2]
            )),
            3
        );
        assert_eq!(
            one::<i32>(&format!(
                "SELECT job.complete_many(ARRAY[{}], ARRAY[gen_random_uuid()])",
                ids[0]
            )),
            0
        );
    }

    #[pg_test]
    fn tokens_pair_with_ids_so_a_stale_claim_never_rides_on_a_new_one() {
        run("SELECT job.create_queue('q', lease => '1 minute')");
        let x = enqueue("q");
        let z = enqueue("q");
        let (_, stale) = claim_with_token("q", "w");
        lapse_and_rescue(x);
        // The same worker claims X again, with Z, under a new token.
        let fresh = one::<String>("SELECT min(lease_token::text) FROM job.dequeue('q', 'w', 2)");
        assert_rejected_with(
            &format!("SELECT job.complete_many(ARRAY[{x}], ARRAY['{stale}', '{fresh}']::uuid[])"),
            "22023",
            "tokens must hold one token, or one per id (1 ids), got 2",
        );
        assert_rejected_with(
            &format!("SELECT job.complete_many(ARRAY[{x}, {z}], ARRAY['{stale}', NULL]::uuid[])"),
            "22004",
            "tokens must not contain NULL",
        );
        assert_eq!(
            one::<String>(&format!(
                "SELECT string_agg(held::text, ',' ORDER BY ord)
                   FROM job.heartbeat_many(ARRAY[{x}, {z}], ARRAY['{stale}', '{fresh}']::uuid[])
                   WITH ORDINALITY AS h(id, held, lease_expires_at, ord)"
            )),
            "false,true"
        );
        // X with its stale token is refused though X's new token is in the same call.
        assert_eq!(
            one::<i32>(&format!(
                "SELECT job.complete_many(ARRAY[{x}, {z}], ARRAY['{stale}', '{fresh}']::uuid[])"
            )),
            1
        );
        assert_eq!(
            one::<String>(&format!(
                "SELECT string_agg(state, ',' ORDER BY id) FROM job.jobs WHERE id IN ({x}, {z})"
            )),
            "running,completed"
        );
    }

    #[pg_test]
    fn release_hands_a_job_back_without_spending_an_attempt() {
        queue("q");
        let first = enqueue("q");
        let later = enqueue("q");
        let (id, token) = claim_with_token("q", "shutting-down");
        assert_eq!(id, first);
        assert!(one::<bool>(&format!("SELECT job.release({id}, '{token}')")));
        assert_eq!(
            one::<String>(&format!(
                "SELECT concat_ws(',', state, attempt, coalesce(claimed_by, '-'), jsonb_array_length(errors))
                   FROM job.jobs WHERE id = {id}"
            )),
            "waiting,0,-,0"
        );
        // Back in its old place, ahead of the job enqueued after it.
        assert_eq!(claim("q"), first);
        let (_, token) = claim_with_token("q", "w");
        assert!(one::<bool>(&format!(
            "SELECT job.release({later}, '{token}', delay => '1 hour')"
        )));
        assert_eq!(
            one::<String>(&format!(
                "SELECT concat_ws(',', state, run_at > now() + interval '59 minutes') FROM job.jobs WHERE id = {later}"
            )),
            "scheduled,t"
        );
        assert!(!one::<bool>(&format!(
            "SELECT job.release({later}, '{token}')"
        )));
        for (call, message) in [
            (
                format!("SELECT job.release({first}, NULL)"),
                "token must not be NULL".to_owned(),
            ),
            (
                "SELECT job.release(424242, gen_random_uuid())".to_owned(),
                "job 424242 does not exist".to_owned(),
            ),
            (
                format!("SELECT job.release({first}, gen_random_uuid(), delay => '-1 s')"),
                "delay must be a non-negative interval, got -00:00:01".to_owned(),
            ),
        ] {
            assert_rejected(&call, &message);
        }
    }

    /// A job whose worker died keeps its place, as a released one does: taken back, it is
    /// claimed before jobs that were enqueued after it (0.4.0 put it behind them, at the
    /// time its lease ran out: 35–143 s behind a 20,000-job backlog).
    #[pg_test]
    fn a_job_taken_back_keeps_its_place_in_the_queue() {
        run("SELECT job.create_queue('q', lease => '1 minute')");
        let first = enqueue("q");
        let later = enqueue("q");
        run(&format!(
            "UPDATE job.live_jobs SET run_at = now() - interval '10 minutes' WHERE id = {first};
             UPDATE job.live_jobs SET run_at = now() - interval '5 minutes' WHERE id = {later}"
        ));
        let (id, _) = claim_with_token("q", "dies");
        assert_eq!(id, first);
        // Its lease ran out after the later job became ready.
        run(&format!(
            "UPDATE job.live_jobs SET lease_expires_at = now() - interval '1 minute' WHERE id = {first}"
        ));
        assert_eq!(one::<i32>("SELECT job.rescue_stalled('q')"), 1);
        assert!(one::<bool>(&format!(
            "SELECT run_at = now() - interval '10 minutes' FROM job.live_jobs WHERE id = {first}"
        )));
        assert_eq!(claim("q"), first);
    }

    #[pg_test]
    fn next_due_says_when_a_dequeue_finds_something() {
        queue("q");
        assert_eq!(
            one::<String>("SELECT coalesce(job.next_due('q')::text, 'none')"),
            "none"
        );
        run("SELECT job.enqueue('q', delay => '10 minutes')");
        assert!(one::<bool>(
            "SELECT job.next_due('q') BETWEEN now() + interval '9 minutes' AND now() + interval '10 minutes'"
        ));
        let ready = enqueue("q");
        assert!(one::<bool>("SELECT job.next_due('q') = now()"));
        let (id, _) = claim_with_token("q", "w");
        assert_eq!(id, ready);
        // A running job's lease counts too: it is taken back then.
        run("SELECT job.create_queue('q', lease => '1 minute')");
        run(&format!(
            "UPDATE job.live_jobs SET lease_expires_at = now() + interval '30 seconds' WHERE id = {id}"
        ));
        assert!(one::<bool>(
            "SELECT job.next_due('q') = now() + interval '30 seconds'"
        ));
        run("SELECT job.pause_queue('q')");
        assert!(one::<bool>("SELECT job.next_due('q') IS NULL"));
        assert_rejected("SELECT job.next_due('nope')", "queue 'nope' does not exist");
    }

    #[pg_test]
    fn the_worker_makes_due_jobs_ready_and_says_when_to_look_next() {
        queue("a");
        queue("b");
        let due = one::<i64>("SELECT job.enqueue('a', delay => '1 second')");
        run("SELECT job.enqueue('b', delay => '1 hour')");
        assert!(one::<bool>(
            "SELECT job._next_job_due() = now() + interval '1 second'"
        ));
        age_job(due);
        assert_eq!(one::<i64>("SELECT job._promote_due(100)"), 1);
        assert_eq!(state(due), "waiting");
        assert!(one::<bool>(
            "SELECT job._next_job_due() = now() + interval '1 hour'"
        ));
    }
}
