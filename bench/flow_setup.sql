-- Objects of bench/flow.sh, run once per run in a fresh database `bench_flow`: the queues it
-- compares, how it resets and loads them, and where it keeps what it sampled.
--
--   plain   no limits: what every limited queue is rated against
--   keyed   key_concurrency => 1; its jobs go round-robin over :keys concurrency keys
--   rated   rate_limit => :rate per second, high enough never to bind: the cost of the
--           machinery (the window's row, read, locked and written by every claim), not of waiting
--   bound   rate_limit => :bind_rate per second, which binds: are starts held to it?
--   ballast never claimed from: its completed jobs keep job.finished_jobs from being empty

CREATE EXTENSION pg_jobqueue;
SELECT job.create_queue('plain');
SELECT job.create_queue('keyed', key_concurrency => 1);
SELECT job.create_queue('rated', rate_limit => :rate);
SELECT job.create_queue('bound', rate_limit => :bind_rate);
SELECT job.create_queue('ballast');

-- Every measured run starts from empty tables (restarted ids too) and fresh rate windows, as
-- bench/setup.sql's bench_reset does for bench/run.sh; but job.finished_jobs keeps 10,000
-- completed jobs of queue `ballast`, as in any cluster that has run for a while.  (Analyzed
-- empty, the table once made the scheduler's retention statement cache a nested loop that
-- read finished_jobs again for each of its rows, and run for hours once a run had filled it,
-- holding back vacuum, the next TRUNCATE and shutdown; found while writing this benchmark and
-- fixed in job.apply_retention, which now reads the ids once.)
CREATE PROCEDURE flow_reset() LANGUAGE sql AS $$
    TRUNCATE job.live_jobs, job.finished_jobs, job.idempotency_keys, job.rate_windows RESTART IDENTITY;
    SELECT setval('job.job_id_seq', 1, false);
    SELECT count(*) FROM job.enqueue_many('ballast', array_fill('{}'::jsonb, ARRAY[10000]));
    SELECT job.complete_many(array_agg(id), array_agg(DISTINCT lease_token))
      FROM job.dequeue('ballast', 'ballast', 10000);
$$;

-- A backlog of `total` jobs in queue `q`, `chunk` jobs per transaction, with bench/setup.sql's
-- payloads.  With `keys`, job g gets concurrency key 'k' || (g % keys), so that in claim order
-- the keys take turns, as jobs of many customers arriving together would.  That takes one
-- job.enqueue per job (several times slower to load): job.enqueue_many gives all of its jobs
-- one key, which would line each key's jobs up one after another in claim order, and a claim
-- would step over all but one of them.
CREATE PROCEDURE flow_load(q text, total int, keys int DEFAULT NULL, chunk int DEFAULT 50000)
LANGUAGE plpgsql AS $$
DECLARE
    done int := 0;
    n int;
BEGIN
    WHILE done < total LOOP
        n := least(chunk, total - done);
        IF keys IS NULL THEN
            PERFORM count(*) FROM job.enqueue_many(q,
                ARRAY(SELECT jsonb_build_object('task', 'send_email', 'user_id', g)
                        FROM generate_series(done + 1, done + n) g));
        ELSE
            PERFORM count(job.enqueue(q, jsonb_build_object('task', 'send_email', 'user_id', g),
                                      concurrency_key => 'k' || (g % keys)))
               FROM generate_series(done + 1, done + n) g;
        END IF;
        done := done + n;
        COMMIT;
    END LOOP;
END $$;

-- Where queue q's jobs are, for the checks around each run.  waiting: can be claimed;
-- running: claimed and not acknowledged; done / done_ids: completed rows and distinct ids (a
-- job completed twice would count twice in the first); other: anything else (scheduled for a
-- retry, failed, dead), which no run here should leave.
CREATE FUNCTION flow_counts(q text, OUT waiting bigint, OUT running bigint, OUT done bigint,
                            OUT done_ids bigint, OUT other bigint)
LANGUAGE plpgsql AS $$
BEGIN
    SELECT count(*) FILTER (WHERE state = 'waiting'), count(*) FILTER (WHERE state = 'running'),
           count(*) FILTER (WHERE state NOT IN ('waiting', 'running'))
      INTO waiting, running, other FROM job.live_jobs WHERE queue = q;
    SELECT count(*) FILTER (WHERE state = 'completed'), count(DISTINCT id) FILTER (WHERE state = 'completed'),
           other + count(*) FILTER (WHERE state <> 'completed')
      INTO done, done_ids, other FROM job.finished_jobs WHERE queue = q;
END $$;

-- The busiest window of one second of queue q's starts, on the rate limiter's own clock: each
-- claim's now() (claimed_at) in whole milliseconds, windows [t, t + 1000 ms).
CREATE FUNCTION flow_busiest_second(q text) RETURNS bigint LANGUAGE sql AS $$
    SELECT coalesce(max(n), 0) FROM (
        SELECT count(*) OVER (ORDER BY ms RANGE BETWEEN CURRENT ROW AND 999 FOLLOWING) AS n
          FROM (SELECT round(extract(epoch FROM claimed_at) * 1000)::bigint AS ms
                  FROM job.finished_jobs WHERE queue = q) s) w
$$;

-- Where the time goes, per measured run (run: queue/mode/round).
--   flow_runs       pgbench's numbers, and its mean latency per statement (-r)
--   flow_functions  self time and calls of each function the run's sessions called
--                   (track_functions = all, for pgbench's sessions only): the difference of
--                   pg_stat_user_functions across the run (flow_functions_before)
--   flow_waits      what pgbench's busy backends were doing, sampled every 100 ms by the
--                   watcher (bench/pgbench/flow_watch.sql); unlogged: sampling writes no WAL
CREATE TABLE flow_runs (queue text, mode text, round int, tx bigint, jobs bigint, jobs_s float8,
                        dequeue_ms float8, complete_ms float8);
CREATE TABLE flow_functions (queue text, mode text, round int, funcname text, calls bigint, self_ms float8);
CREATE TABLE flow_functions_before (funcid oid, calls bigint, self_ms float8);
CREATE UNLOGGED TABLE flow_waits (queue text, mode text, round int, what text);

CREATE PROCEDURE flow_functions_mark() LANGUAGE sql AS $$
    TRUNCATE flow_functions_before;
    INSERT INTO flow_functions_before SELECT funcid, calls, self_time FROM pg_stat_user_functions;
$$;

CREATE PROCEDURE flow_functions_since(q text, m text, r int) LANGUAGE sql AS $$
    INSERT INTO flow_functions
    SELECT q, m, r, f.funcname, f.calls - coalesce(b.calls, 0), f.self_time - coalesce(b.self_ms, 0)
      FROM pg_stat_user_functions f LEFT JOIN flow_functions_before b USING (funcid)
     WHERE f.schemaname = 'job' AND f.calls > coalesce(b.calls, 0);
$$;

-- One line on where the time of queue q's runs in mode m went, over all rounds: pgbench's
-- mean latency of the claim and of the acknowledgement, the functions with the most self
-- time per transaction (with calls per transaction when not 1), and the sampled wait events.
CREATE FUNCTION flow_where(q text, m text) RETURNS text LANGUAGE sql AS $$
    WITH r AS (SELECT sum(tx) AS tx, avg(dequeue_ms) AS dq, avg(complete_ms) AS cm
                 FROM flow_runs WHERE queue = q AND mode = m),
         f AS (SELECT funcname, sum(calls)::float8 / (SELECT tx FROM r) AS calls,
                      sum(self_ms) / (SELECT tx FROM r) AS self_ms
                 FROM flow_functions WHERE queue = q AND mode = m GROUP BY funcname
                 ORDER BY 3 DESC LIMIT 4),
         w AS (SELECT what, count(*) AS n, sum(count(*)) OVER () AS total
                 FROM flow_waits WHERE queue = q AND mode = m GROUP BY what
                 ORDER BY 2 DESC LIMIT 4)
    SELECT format('dequeue %s ms, %s %s ms per call (pgbench -r); self time per transaction: %s; busy backends sampled: %s',
                  round(r.dq::numeric, 2), CASE m WHEN 'batch' THEN 'complete_many' ELSE 'complete' END,
                  round(r.cm::numeric, 2),
                  coalesce((SELECT string_agg(format('%s %s ms%s', funcname, round(self_ms::numeric, 3),
                                                     CASE WHEN round(calls::numeric, 1) <> 1
                                                          THEN format(' (%s calls)', round(calls::numeric, 1)) END),
                                              ', ' ORDER BY self_ms DESC) FROM f), 'none recorded'),
                  coalesce((SELECT string_agg(format('%s %s%%', what, round(100.0 * n / total)), ', ' ORDER BY n DESC)
                              FROM w), 'none'))
      FROM r
$$;
