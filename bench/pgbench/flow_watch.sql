-- bench/flow.sh's watcher, one client beside each measured run (application_name flow-watch),
-- every 100 ms, each statement in a snapshot of its own:
-- 1. what pgbench's busy backends are doing (their wait event, or CPU), into flow_waits;
-- 2. whether any concurrency key of queue :queue has more than :key_limit jobs running.  One
--    snapshot is one consistent state, so two running jobs of a key there is a breach, not a
--    race of the sample (leases are 5 minutes: none runs out).  A breach fails the watcher
--    with an error naming it, and flow.sh with it.  (Sampled: a breach shorter than 100 ms can
--    slip between two samples.  It is a check of the claim under load, not a proof.)
INSERT INTO flow_waits (queue, mode, round, what)
SELECT :queue::text, :mode::text, :round::int, coalesce(wait_event_type || ':' || wait_event, 'CPU')
  FROM pg_stat_activity
 WHERE application_name = 'pgbench' AND state = 'active' AND datname = current_database();
SELECT count(*) AS over FROM (SELECT 1 FROM job.live_jobs
                               WHERE queue = :queue::text AND state = 'running' AND concurrency_key IS NOT NULL
                               GROUP BY concurrency_key HAVING count(*) > :key_limit::int) o \gset
\if :over > 0
SELECT ('concurrency keys over key_concurrency in one snapshot: ' || :over::text)::int;
\endif
\sleep 100 ms
