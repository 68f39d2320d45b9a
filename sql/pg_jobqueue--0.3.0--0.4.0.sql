-- pg_jobqueue 0.3.0 -> 0.4.0.  Written for the 0.4.0 release; never edited after it (see
-- sql/README.md).  What changes and why: CHANGELOG.md.

---------------------------------------------------------------------------------------------
-- Tables
---------------------------------------------------------------------------------------------

-- A queue's depth is counted exactly up to 10,000 jobs per state and estimated above that.
ALTER TABLE job.queue_depth ADD COLUMN estimated boolean NOT NULL DEFAULT false;
COMMENT ON TABLE job.queue_depth IS 'Live jobs per queue and state, counted by the worker every pg_jobqueue.maintenance_interval (exact up to 10,000 per state, estimated above).';

-- Queue and state together: a queue's depth above 10,000 jobs per state is estimated from
-- these (job._live_count), and without them the planner multiplies the two selectivities.
CREATE STATISTICS job.live_jobs_queue_state (mcv) ON queue, state FROM job.live_jobs;

-- Internal functions 0.4.0 replaces.  (Public functions whose signature changes are dropped
-- at the end, once their grants are carried over.)
DROP FUNCTION job._finish(bigint[], text[], text, jsonb, jsonb, uuid[]);
DROP FUNCTION job._claim_handler_job(text, regrole);

---------------------------------------------------------------------------------------------
-- Functions and views: their 0.4.0 definitions
---------------------------------------------------------------------------------------------

-- Rust functions new in 0.4.0 (as pgrx declares them).

-- pg_jobqueue::claim_cursor::_claim_cursor
CREATE OR REPLACE FUNCTION "_claim_cursor"(
	"queue_id" bigint /* i64 */
) RETURNS TABLE (
	"priority" INT,  /* i32 */
	"run_at" timestamp with time zone,  /* TimestampWithTimeZone */
	"id" bigint  /* i64 */
)
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_claim_cursor_wrapper';

-- pg_jobqueue::claim_cursor::_move_claim_cursor
CREATE OR REPLACE FUNCTION "_move_claim_cursor"(
	"queue_id" bigint, /* i64 */
	"priority" INT, /* Option < i32 > */
	"run_at" timestamp with time zone, /* Option < TimestampWithTimeZone > */
	"id" bigint, /* Option < i64 > */
	"front_scan_took" double precision /* Option < f64 > */
) RETURNS void
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_move_claim_cursor_wrapper';

-- Raises unless a worker's acknowledgement is well formed: `ids` a flat array without NULL,
-- `results` NULL or one per id, `tokens` as job._check_tokens wants.
CREATE OR REPLACE FUNCTION job._check_finished(ids bigint[], results jsonb[], tokens uuid[])
RETURNS void LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF array_ndims(ids) > 1 OR array_position(ids, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'complete must be a one-dimensional array of job ids without NULL'
            USING ERRCODE = 'invalid_parameter_value';
    ELSIF results IS NOT NULL AND (array_ndims(results) > 1 OR cardinality(results) <> cardinality(ids)) THEN
        RAISE EXCEPTION 'results must hold one result per completed id (% ids), got %', cardinality(ids), cardinality(results)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pair each id in complete with its result by position; pass NULL elements for jobs without one.';
    END IF;
    PERFORM job._check_tokens(ids, tokens);
END $$;

-- Moves live jobs (those of `ids` whose state is in `from_states`, and whose current claim
-- is the token paired with the id in `tokens` unless that is NULL: see job._check_tokens) to
-- history as `final_state`, with the result paired with the id in `job_results` (one for all,
-- or one per id), appending `error` (if any) to each job's errors, and counts the finished
-- attempts.  Returns how many moved.
CREATE OR REPLACE FUNCTION job._finish(ids bigint[], from_states text[], final_state text,
                            job_results jsonb[] DEFAULT NULL, error jsonb DEFAULT NULL,
                            tokens uuid[] DEFAULT NULL)
RETURNS int LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    moved_count int;
    queues text[];
    job_types text[];
    claimed timestamptz[];
    ready timestamptz[];
    dead_queue record;
BEGIN
    -- The state test is written (COLLATE) so that no partial index can serve it: with a
    -- constant from_states a custom plan would otherwise walk a partial index (every running
    -- job) instead of probing the primary key.  The ids are read through a sub-select so
    -- that a custom plan cannot count them and look cheaper than the generic one: planned
    -- anew on every call, this statement cost 0.17 ms of a 0.45 ms complete.
    WITH moved AS (
        DELETE FROM job.live_jobs j
         WHERE j.id = ANY ((SELECT ids)::bigint[]) AND (j.state COLLATE "C") = ANY (from_states)
           AND (tokens IS NULL
                OR j.lease_token = CASE WHEN cardinality(tokens) = 1 THEN tokens[1]
                                        ELSE tokens[array_position(ids, j.id)] END)
        RETURNING j.*
    ), kept AS (
        INSERT INTO job.finished_jobs (id, run_at, enqueued_at, claimed_at, priority, attempt, max_retries,
                                       state, queue, job_type, claimed_by, idempotency_key, payload,
                                       errors, result)
        SELECT m.id, m.run_at, m.enqueued_at, m.claimed_at, m.priority, m.attempt, m.max_retries,
               final_state, m.queue, m.job_type, m.claimed_by, m.idempotency_key, m.payload,
               CASE WHEN error IS NULL THEN m.errors
                    ELSE m.errors || jsonb_build_array(job._attempt_error(m.attempt, m.claimed_by, error)) END,
               CASE WHEN cardinality(job_results) = 1 THEN job_results[1]
                    ELSE job_results[array_position(ids, m.id)] END
          FROM moved m
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM kept), array_agg(m.queue), array_agg(m.job_type),
           array_agg(m.claimed_at), array_agg(m.run_at)
      INTO moved_count, queues, job_types, claimed, ready
      FROM moved m WHERE m.claimed_at IS NOT NULL;
    IF moved_count = 0 OR final_state = 'cancelled' THEN
        RETURN moved_count;  -- a cancel abandons attempts; it finishes none
    END IF;
    PERFORM job._record_attempts(CASE WHEN final_state = 'completed' THEN 'completed'
                                      WHEN (error ->> 'stalled')::boolean THEN 'stalled_dead'
                                      ELSE 'dead' END,
                                 queues, job_types, claimed, ready);
    IF final_state = 'dead' THEN
        FOR dead_queue IN SELECT q, count(*) AS n FROM unnest(queues) q GROUP BY q LOOP
            PERFORM job._count_dead_letters(dead_queue.q, dead_queue.n);
        END LOOP;
    END IF;
    RETURN moved_count;
END $$;

-- Claims up to `batch` ready jobs.  Never waits for rows another worker holds (SKIP LOCKED);
-- a job is handed to one worker at a time until its lease expires.  Every job of one call
-- carries the same new lease token, which complete, fail, heartbeat and release take to act
-- only on this claim.
--
-- A worker's loop can acknowledge what it finished in the same call, and so in one round
-- trip and one commit per job: `complete` (ids), their `results` (one per id, paired by
-- position, or NULL) and `complete_tokens` (as complete_many's `tokens`).  They are completed
-- as complete_many would, before anything is claimed; one whose claim is no longer current
-- is left alone (a worker that must know calls job.complete).
CREATE OR REPLACE FUNCTION job.dequeue(
    queue text,
    worker text DEFAULT NULL,
    batch int DEFAULT 1,
    lease interval DEFAULT NULL,
    complete bigint[] DEFAULT NULL,
    results jsonb[] DEFAULT NULL,
    complete_tokens uuid[] DEFAULT NULL
) RETURNS SETOF job.claimed_job LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    q record;
    lease_for interval;
    claimed bigint;
    promoted bigint := 0;
    token uuid;
    resume_priority int;
    resume_run_at timestamptz;
    resume_id bigint;
    picked bigint[];
    last_priority int;
    last_run_at timestamptz;
    front_started timestamptz;
    front_took float8;
BEGIN
    SELECT qs.name, qs.id, qs.lease, qs.paused INTO q FROM job.queues qs WHERE qs.name = dequeue.queue;
    IF NOT FOUND THEN
        PERFORM job._require_queue(dequeue.queue);
    END IF;
    IF dequeue.batch IS NULL OR dequeue.batch < 1 THEN
        PERFORM job._check_not_null('batch', dequeue.batch);
        RAISE EXCEPTION 'batch must be 1 or more, got %', dequeue.batch USING ERRCODE = 'invalid_parameter_value';
    END IF;
    lease_for := coalesce(dequeue.lease, q.lease);
    IF lease_for <= interval '0' OR lease_for > interval '100 years' THEN
        PERFORM job._check_interval('lease', lease_for, false);
    END IF;
    IF dequeue.worker IS NOT NULL AND job._name_problem(dequeue.worker, 128) IS NOT NULL THEN
        PERFORM job._check_name('worker', dequeue.worker);
    END IF;
    PERFORM job._saw_worker(dequeue.worker);
    IF dequeue.complete IS NOT NULL THEN
        PERFORM job._check_finished(dequeue.complete, dequeue.results, dequeue.complete_tokens);
        PERFORM job._finish(dequeue.complete, '{running}', 'completed', dequeue.results, NULL,
                            dequeue.complete_tokens);
    END IF;
    IF q.paused THEN
        -- Nothing to hand out: this consumer now waits, and resume_queue will wake it.
        PERFORM job._consumer_waits(q.id);
        RETURN;
    END IF;

    -- Due scheduled jobs (delayed, or retrying after backoff) become ready.  The worker does
    -- this too (and wakes consumers); here it keeps the queue moving without the worker.
    IF EXISTS (SELECT 1 FROM job.live_jobs d
                WHERE d.queue = q.name AND d.state = 'scheduled' AND d.run_at <= now()) THEN
        UPDATE job.live_jobs j SET state = 'waiting'
         WHERE j.id = ANY (ARRAY(SELECT d.id FROM job.live_jobs d
                                  WHERE d.queue = q.name AND d.state = 'scheduled' AND d.run_at <= now()
                                  ORDER BY d.run_at LIMIT 1000
                                  FOR UPDATE SKIP LOCKED));
        GET DIAGNOSTICS promoted = ROW_COUNT;
    END IF;
    -- Jobs whose worker vanished go back to waiting (or dead) before anything else is claimed;
    -- looked for at most every pg_jobqueue.rescue_interval per session, and only where no
    -- background worker does it (see src/rescue.rs).
    IF job._rescue_due(q.name) THEN
        PERFORM job._rescue_stalled(q.name, 1000, NULL);
    END IF;

    token := gen_random_uuid();
    -- Where this session's last claim on the queue left off, unless a claim from the front is
    -- due (see src/claim_cursor.rs): the dead index entries of every job claimed since vacuum
    -- last ran lie before it.  (Values the statements below compare with are read through
    -- sub-selects, so that one generic plan serves every call: see producing.sql.)
    SELECT c.priority, c.run_at, c.id INTO resume_priority, resume_run_at, resume_id FROM job._claim_cursor(q.id) c;
    FOR pass IN 1..2 LOOP
        picked := '{}';
        front_took := NULL;
        -- A higher priority than the cursor's waiting (enqueued since, say): from the front.
        -- (A scalar sub-select in claim order, not EXISTS: it must be a range of the claim
        -- index, which ends at the cursor's priority, not a scan of the table.)
        IF resume_id IS NOT NULL
           AND (SELECT h.id FROM job.live_jobs h
                 WHERE h.queue = q.name AND h.state = 'waiting' AND h.priority > (SELECT resume_priority)
                 ORDER BY h.priority DESC, h.run_at, h.id LIMIT 1) IS NULL THEN
            -- The rest of the cursor's priority, in claim order, from the cursor on.
            SELECT coalesce(array_agg(n.id), '{}'), (array_agg(n.priority))[count(*)], (array_agg(n.run_at))[count(*)]
              INTO picked, last_priority, last_run_at
              FROM (SELECT n.id, n.priority, n.run_at FROM job.live_jobs n
                     WHERE n.queue = q.name AND n.state = 'waiting' AND n.priority = (SELECT resume_priority)
                       AND (n.run_at, n.id) > ((SELECT resume_run_at), (SELECT resume_id))
                     ORDER BY n.run_at, n.id
                     LIMIT (SELECT dequeue.batch)
                     FOR UPDATE SKIP LOCKED) n;
        END IF;
        IF cardinality(picked) < dequeue.batch THEN
            -- From the front of the queue, for what the cursor's priority did not have.
            front_started := clock_timestamp();
            SELECT picked || coalesce(array_agg(n.id), '{}'),
                   coalesce((array_agg(n.priority))[count(*)], last_priority),
                   coalesce((array_agg(n.run_at))[count(*)], last_run_at)
              INTO picked, last_priority, last_run_at
              FROM (SELECT n.id, n.priority, n.run_at FROM job.live_jobs n
                     WHERE n.queue = q.name AND n.state = 'waiting' AND n.id <> ALL (picked)
                     ORDER BY n.priority DESC, n.run_at, n.id
                     LIMIT (SELECT dequeue.batch - cardinality(picked))
                     FOR UPDATE SKIP LOCKED) n;
            front_took := extract(epoch FROM clock_timestamp() - front_started);
        END IF;
        RETURN QUERY
        UPDATE job.live_jobs j
           SET state = 'running', attempt = j.attempt + 1, claimed_at = now(),
               claimed_by = dequeue.worker, lease_expires_at = now() + lease_for, lease_token = token
         WHERE j.id = ANY ((SELECT picked)::bigint[])
        RETURNING j.id, j.queue, j.job_type, j.payload, j.attempt, j.max_retries, j.enqueued_at,
                  j.lease_expires_at, j.lease_token;
        GET DIAGNOSTICS claimed = ROW_COUNT;
        PERFORM job._move_claim_cursor(q.id, last_priority, last_run_at,
                                       picked[cardinality(picked)], front_took);
        -- Found nothing: mark this consumer as waiting for a wake-up, then look once more
        -- for jobs whose producers committed while we looked (see src/wakeup.rs).
        EXIT WHEN claimed > 0 OR pass = 2 OR NOT job._consumer_waits(q.id);
        resume_id := NULL;
    END LOOP;
    IF promoted > claimed THEN
        PERFORM job._wake_queue_on_commit(q.id);  -- more became ready than this call took
    END IF;
    IF claimed > 0 THEN
        -- Should the lease run out before the worker means to look, it looks then.
        PERFORM job._due_on_commit(now() + lease_for);
    END IF;
END $$;

-- Completes a running job with its result.  With `token`, only while that claim is the job's
-- current one; without, whoever claimed it (unsafe once the lease may have run out: another
-- worker may hold the job by then).  False when nothing was completed.
CREATE OR REPLACE FUNCTION job.complete(id bigint, result jsonb DEFAULT NULL, token uuid DEFAULT NULL)
RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
    IF complete.id IS NULL THEN
        PERFORM job._check_not_null('id', complete.id);
    END IF;
    IF job._finish(ARRAY[complete.id], '{running}', 'completed', ARRAY[complete.result], NULL,
                   CASE WHEN complete.token IS NULL THEN NULL ELSE ARRAY[complete.token] END) = 1 THEN
        RETURN true;
    END IF;
    PERFORM job._require_job(complete.id);
    RETURN false;  -- not running under this claim: finished, cancelled, taken back or never claimed
END $$;

-- Running jobs whose lease expired: the attempt counts as a transient failure; the job is
-- ready again at once, or dead when it has no retries left.  Returns how many were rescued.
CREATE OR REPLACE FUNCTION job.rescue_stalled(queue text DEFAULT NULL, max_jobs int DEFAULT 1000)
RETURNS int LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF rescue_stalled.queue IS NOT NULL THEN
        PERFORM job._require_queue(rescue_stalled.queue);
    END IF;
    PERFORM job._check_count('max_jobs', rescue_stalled.max_jobs);
    RETURN job._rescue_stalled(rescue_stalled.queue, rescue_stalled.max_jobs, NULL);
END $$;

-- job.rescue_stalled's work, looking only at leases that ran out at `since` or later (NULL:
-- all).  Every finished job leaves its entry in the lease index until vacuum, and once its
-- lease time has passed that entry lies in the range a look for stalled jobs scans: the
-- scheduler, which looks again and again, starts where its last look left off (see
-- src/worker/scheduler.rs) instead of stepping over all of them each time.
CREATE OR REPLACE FUNCTION job._rescue_stalled(queue text, max_jobs int, since timestamptz)
RETURNS int LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    stalled bigint[];
    exhausted bigint[];
    detail jsonb := jsonb_build_object('error', 'lease expired: the worker neither completed, failed nor heartbeated the job in time',
                                       'permanent', false, 'stalled', true);
    revived int;
    queues text[];
    job_types text[];
    claimed timestamptz[];
    ready timestamptz[];
    woken record;
BEGIN
    -- One probe of the lease index per queue: its entries are ordered by lease within a queue.
    SELECT array_agg(s.id), array_agg(s.id) FILTER (WHERE s.attempt > s.max_retries)
      INTO stalled, exhausted
      FROM (SELECT e.id, e.attempt, e.max_retries
              FROM job.queues q
             CROSS JOIN LATERAL (SELECT l.id, l.attempt, l.max_retries FROM job.live_jobs l
                                  WHERE l.queue = q.name AND l.state = 'running' AND l.lease_expires_at < now()
                                    AND l.lease_expires_at >= coalesce((SELECT _rescue_stalled.since), '-infinity')
                                  ORDER BY l.lease_expires_at
                                  LIMIT _rescue_stalled.max_jobs
                                  FOR UPDATE SKIP LOCKED) e
             WHERE _rescue_stalled.queue IS NULL OR q.name = _rescue_stalled.queue
             LIMIT _rescue_stalled.max_jobs) s;
    IF stalled IS NULL THEN
        RETURN 0;
    END IF;
    IF exhausted IS NOT NULL THEN
        PERFORM job._finish(exhausted, '{running}', 'dead', NULL, detail);
    END IF;
    WITH revived_jobs AS (
        UPDATE job.live_jobs l
           SET state = 'waiting', run_at = l.lease_expires_at, lease_expires_at = NULL, lease_token = NULL,
               errors = l.errors || jsonb_build_array(job._attempt_error(l.attempt, l.claimed_by, detail))
         WHERE l.id = ANY (stalled) AND l.state = 'running'
        RETURNING l.queue, l.job_type, l.claimed_at, l.run_at
    )
    SELECT count(*), array_agg(r.queue), array_agg(r.job_type), array_agg(r.claimed_at), array_agg(r.run_at)
      INTO revived, queues, job_types, claimed, ready
      FROM revived_jobs r;
    IF revived > 0 THEN
        PERFORM job._record_attempts('stalled', queues, job_types, claimed, ready);
        FOR woken IN SELECT qs.id FROM job.queues qs WHERE qs.name = ANY (queues) AND NOT qs.paused LOOP
            PERFORM job._wake_queue_on_commit(woken.id);
        END LOOP;
    END IF;
    UPDATE job.workers_seen w SET stalled = w.stalled + s.n
      FROM (SELECT x.claimed_by, count(*) AS n
              FROM (SELECT l.claimed_by FROM job.live_jobs l WHERE l.id = ANY (stalled)
                    UNION ALL
                    SELECT f.claimed_by FROM job.finished_jobs f WHERE f.id = ANY (exhausted)) x
             GROUP BY x.claimed_by) s
     WHERE w.worker = s.claimed_by;
    RETURN revived + coalesce(cardinality(exhausted), 0);
END $$;

-- The earliest time a job becomes due or a lease runs out, over all queues (NULL: none):
-- when the scheduler must next promote or rescue.  One index probe per queue and kind.  Leases
-- that already ran out are the scheduler's rescue's business (it looks on every round); the
-- probe starts at now, past the entries finished jobs leave in the lease index, which lie
-- there, their leases run out, until vacuum removes them.
CREATE OR REPLACE FUNCTION job._next_job_due()
RETURNS timestamptz LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN (SELECT least(min(d.run_at), min(r.lease_expires_at))
              FROM job.queues q
              LEFT JOIN LATERAL (SELECT l.run_at FROM job.live_jobs l
                                  WHERE l.queue = q.name AND l.state = 'scheduled'
                                  ORDER BY l.run_at LIMIT 1) d ON true
              LEFT JOIN LATERAL (SELECT l.lease_expires_at FROM job.live_jobs l
                                  WHERE l.queue = q.name AND l.state = 'running' AND l.lease_expires_at >= now()
                                  ORDER BY l.lease_expires_at LIMIT 1) r ON true);
END $$;

-- Claims up to `batch` jobs for an executor serving role `run_as`, all from one of its
-- handler queues, and no more than leave the queue's running jobs within its `concurrency`.
-- Executors claiming from one queue take turns (an internal lock, held until the claim
-- commits), so the count they test is exact.  No row: nothing to run.
CREATE OR REPLACE FUNCTION job._claim_handler_jobs(worker text, run_as regrole, batch int)
RETURNS TABLE (job_id bigint, token uuid, payload jsonb, attempt int, handler_schema name,
               handler_name name, returns_jsonb boolean, timeout_ms bigint)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    h record;
    free_slots int;
BEGIN
    FOR h IN SELECT * FROM job._runnable_handlers(_claim_handler_jobs.run_as) ORDER BY random() LOOP
        PERFORM job._lock_handler_queue(h.queue);
        free_slots := h.concurrency - (SELECT count(*) FROM (SELECT 1 FROM job.live_jobs l
                                                             WHERE l.queue = h.queue AND l.state = 'running'
                                                             LIMIT h.concurrency) r);
        CONTINUE WHEN free_slots <= 0;
        RETURN QUERY
        SELECT c.id, c.lease_token, c.payload, c.attempt, h.handler_schema, h.handler_name, h.returns_jsonb,
               (extract(epoch FROM h.timeout) * 1000)::bigint
          FROM job.dequeue(h.queue, worker, least(batch, free_slots), h.timeout + interval '30 seconds') c;
        IF FOUND THEN
            RETURN;
        END IF;
    END LOOP;
END $$;

-- Expires the leases of running jobs held by executors that are gone, so that the scheduler
-- takes them back at once instead of a handler's timeout plus 30 seconds later: those
-- claimed by `gone` (executors the scheduler saw stop, named as in their claims), and, when
-- `alive` is given (the process ids of this database's running executors), those of every
-- other executor (the scheduler passes it as it starts, before it starts executors: their
-- jobs are of executors that died with the server, or with a scheduler before it).  Returns
-- how many.
CREATE OR REPLACE FUNCTION job._expire_executor_leases(gone text[], alive int[])
RETURNS bigint LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    expired bigint;
BEGIN
    UPDATE job.live_jobs l SET lease_expires_at = now()
     WHERE l.state = 'running' AND l.lease_expires_at > now()
       AND (l.claimed_by = ANY (gone)
            OR alive IS NOT NULL AND l.claimed_by LIKE 'pg\_jobqueue executor %'
               AND substring(l.claimed_by FROM '\(pid ([0-9]+)\)$')::int <> ALL (alive));
    GET DIAGNOSTICS expired = ROW_COUNT;
    RETURN expired;
END $$;

-- How many live jobs of `queue` are in `state` ('waiting', 'scheduled' or 'running'), and for
-- 'scheduled' due (run_at passed) or not: counted exactly up to 10,000 (an index range scan of
-- at most that many entries), estimated above that from the table's statistics (the extended
-- statistics on queue and state) with `estimated` true.  What the worker counts every
-- maintenance_interval must not cost more as a backlog grows: an exact count of 10 million
-- waiting jobs took 11 s of CPU in every 30.
CREATE OR REPLACE FUNCTION job._live_count(queue text, state text, due boolean DEFAULT NULL,
                                OUT n bigint, OUT estimated boolean)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
DECLARE
    exact_limit constant int := 10000;
    plan json;
BEGIN
    -- One static query per state, each a range of that state's partial index.
    n := CASE WHEN state = 'waiting' THEN
                  (SELECT count(*) FROM (SELECT FROM job.live_jobs l
                                          WHERE l.queue = _live_count.queue AND l.state = 'waiting'
                                          LIMIT exact_limit + 1) x)
              WHEN state = 'running' THEN
                  (SELECT count(*) FROM (SELECT FROM job.live_jobs l
                                          WHERE l.queue = _live_count.queue AND l.state = 'running'
                                          LIMIT exact_limit + 1) x)
              WHEN due THEN
                  (SELECT count(*) FROM (SELECT FROM job.live_jobs l
                                          WHERE l.queue = _live_count.queue AND l.state = 'scheduled'
                                            AND l.run_at <= now()
                                          LIMIT exact_limit + 1) x)
              ELSE
                  (SELECT count(*) FROM (SELECT FROM job.live_jobs l
                                          WHERE l.queue = _live_count.queue AND l.state = 'scheduled'
                                            AND l.run_at > now()
                                          LIMIT exact_limit + 1) x) END;
    estimated := n > exact_limit;
    IF estimated THEN
        EXECUTE format('EXPLAIN (FORMAT JSON) SELECT FROM job.live_jobs l WHERE l.queue = %L AND l.state = %L%s',
                       queue, state,
                       CASE WHEN state <> 'scheduled' THEN ''
                            WHEN due THEN ' AND l.run_at <= now()' ELSE ' AND l.run_at > now()' END)
           INTO plan;
        n := greatest(n, (plan -> 0 -> 'Plan' ->> 'Plan Rows')::bigint);
    END IF;
END $$;

-- The time the oldest ready job of `queue` became ready: the earliest run_at among its waiting
-- jobs (one index probe per distinct priority, as the claim index orders them by priority
-- first) and its due scheduled jobs.
CREATE OR REPLACE FUNCTION job._oldest_ready_at(queue text)
RETURNS timestamptz LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp AS $$
    WITH RECURSIVE by_priority AS (
        (SELECT l.priority, l.run_at FROM job.live_jobs l
          WHERE l.queue = _oldest_ready_at.queue AND l.state = 'waiting'
          ORDER BY l.priority DESC, l.run_at LIMIT 1)
        UNION ALL
        SELECT lower_priority.priority, lower_priority.run_at
          FROM by_priority p
         CROSS JOIN LATERAL (SELECT l.priority, l.run_at FROM job.live_jobs l
                              WHERE l.queue = _oldest_ready_at.queue AND l.state = 'waiting'
                                AND l.priority < p.priority
                              ORDER BY l.priority DESC, l.run_at LIMIT 1) lower_priority
    )
    SELECT least((SELECT min(b.run_at) FROM by_priority b),
                 (SELECT l.run_at FROM job.live_jobs l
                   WHERE l.queue = _oldest_ready_at.queue AND l.state = 'scheduled' AND l.run_at <= now()
                   ORDER BY l.run_at LIMIT 1))
$$;

-- Counts live jobs per queue and state into job.queue_depth (see job._live_count: exact up to
-- 10,000 per state, estimated above).  Returns the number of queues.
CREATE OR REPLACE FUNCTION job._count_queue_depth()
RETURNS int LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    counted int;
BEGIN
    INSERT INTO job.queue_depth AS d (queue, waiting, scheduled, running, oldest_ready_at, counted_at, estimated)
    SELECT q.name, w.n + due.n, later.n, r.n, job._oldest_ready_at(q.name), now(),
           w.estimated OR due.estimated OR later.estimated OR r.estimated
      FROM job.queues q
     CROSS JOIN LATERAL job._live_count(q.name, 'waiting') w
     CROSS JOIN LATERAL job._live_count(q.name, 'scheduled', true) due
     CROSS JOIN LATERAL job._live_count(q.name, 'scheduled', false) later
     CROSS JOIN LATERAL job._live_count(q.name, 'running') r
    ON CONFLICT (queue) DO UPDATE
       SET waiting = EXCLUDED.waiting, scheduled = EXCLUDED.scheduled, running = EXCLUDED.running,
           oldest_ready_at = EXCLUDED.oldest_ready_at, counted_at = EXCLUDED.counted_at,
           estimated = EXCLUDED.estimated;
    GET DIAGNOSTICS counted = ROW_COUNT;
    DELETE FROM job.queue_depth d WHERE NOT EXISTS (SELECT 1 FROM job.queues q WHERE q.name = d.queue);
    RETURN counted;
END $$;

CREATE OR REPLACE VIEW job.queue_metrics AS
SELECT q.name AS queue, q.paused,
       coalesce(d.waiting, 0) AS waiting, coalesce(d.scheduled, 0) AS scheduled,
       coalesce(d.running, 0) AS running, coalesce(c.dead_letters, 0) AS dead_letters,
       now() - d.oldest_ready_at AS oldest_ready_age,
       d.counted_at AS depth_counted_at,
       coalesce(d.estimated, false) AS depth_estimated
  FROM job.queues q
  LEFT JOIN job.queue_depth d ON d.queue = q.name
  LEFT JOIN job.queue_counters c ON c.queue = q.name;

COMMENT ON VIEW job.queue_metrics IS 'Per queue: jobs waiting, scheduled and running (as of depth_counted_at; exact up to 10,000 per state, estimated from statistics above that when depth_estimated), the dead-letter queue''s size, the oldest ready job''s age.';

---------------------------------------------------------------------------------------------
-- Privileges
---------------------------------------------------------------------------------------------

-- Public functions whose signature changed: whoever could execute the 0.3.0 one can execute
-- the 0.4.0 one; then the old one goes.
DO $$
DECLARE
    changed record;
    grantee record;
BEGIN
    FOR changed IN SELECT * FROM (VALUES
            ('job.dequeue(text, text, integer, interval)',
             'job.dequeue(text, text, integer, interval, bigint[], jsonb[], uuid[])')
        ) AS c(old_signature, new_signature)
    LOOP
        FOR grantee IN SELECT a.grantee FROM pg_catalog.pg_proc p, pg_catalog.aclexplode(p.proacl) a
                        WHERE p.oid = changed.old_signature::regprocedure AND a.privilege_type = 'EXECUTE'
                          AND a.grantee <> p.proowner AND a.grantee <> 0
        LOOP
            EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %I', changed.new_signature,
                           (SELECT rolname FROM pg_catalog.pg_roles WHERE oid = grantee.grantee));
        END LOOP;
        EXECUTE format('DROP FUNCTION %s', changed.old_signature);
    END LOOP;
END $$;

-- Nothing for PUBLIC: every duty is granted explicitly (the new functions included).
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA job FROM PUBLIC;

-- Pure helpers the views call (a view's caller needs EXECUTE on the functions it uses); they
-- read no table.  cron_next previews a schedule expression.
GRANT EXECUTE ON FUNCTION job._hist_of(float8), job._hist_add(bigint[], bigint[]),
                          job._hist_quantile(bigint[], float8), job._hist_sum(bigint[]),
                          job.cron_next(text, text, timestamptz) TO PUBLIC;

-- The worker serves this database again, at the new version.
SELECT job._request_service();
