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

-- HTTP endpoints the worker's sender delivers to (read through the job.endpoints view).  An
-- endpoint owns one queue: its deliveries are that queue's jobs.  Deleted with its queue.
CREATE TABLE job.endpoint_defs (
    name            text PRIMARY KEY,
    queue           text NOT NULL UNIQUE REFERENCES job.queues (name) ON DELETE CASCADE,
    url             text NOT NULL,
    method          text NOT NULL,
    timeout         interval NOT NULL,
    concurrency     int NOT NULL,
    rate_limit      int,              -- requests per second; NULL: no limit
    paused          boolean NOT NULL DEFAULT false,
    disabled_reason text,             -- set: disabled (410 Gone, too many failures) until resumed
    disabled_at     timestamptz,
    created_at      timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at      timestamptz NOT NULL DEFAULT pg_catalog.now()
);

COMMENT ON TABLE job.endpoint_defs IS 'HTTP endpoints: where their queue''s deliveries go, with what method, timeout, concurrency and rate limit.';

-- What only the administrator may read back: each endpoint's signing secret (and, during a
-- rotation, the previous one) and its header values (an API key, say).  No view shows them.
CREATE TABLE job.endpoint_secrets (
    endpoint        text PRIMARY KEY REFERENCES job.endpoint_defs (name) ON DELETE CASCADE,
    secret          text NOT NULL,
    previous_secret text,
    previous_until  timestamptz,      -- requests carry both signatures until then
    headers         jsonb NOT NULL DEFAULT '{}'
);

COMMENT ON TABLE job.endpoint_secrets IS 'Endpoints'' signing secrets and header values: read only through job.endpoint_secret and job.endpoint_headers.';

-- Per endpoint: what its requests came to, kept by the sender (one update per endpoint per
-- batch of finished requests).  Apart from endpoint_defs so that the definitions stay put.
CREATE TABLE job.endpoint_stats (
    endpoint             text PRIMARY KEY REFERENCES job.endpoint_defs (name) ON DELETE CASCADE,
    status_2xx           bigint NOT NULL DEFAULT 0,
    status_3xx           bigint NOT NULL DEFAULT 0,
    status_4xx           bigint NOT NULL DEFAULT 0,
    status_5xx           bigint NOT NULL DEFAULT 0,
    transport_errors     bigint NOT NULL DEFAULT 0,  -- no answer: timeout, refused, reset, DNS, TLS
    transient_failures   bigint NOT NULL DEFAULT 0,
    permanent_failures   bigint NOT NULL DEFAULT 0,
    latency              bigint[],   -- every attempt's (job._hist_of buckets); NULL: none yet
    latency_sum          float8 NOT NULL DEFAULT 0,  -- seconds, every attempt's
    consecutive_failures int NOT NULL DEFAULT 0,
    last_status          int,
    last_error           text,
    last_attempt_at      timestamptz
);

COMMENT ON TABLE job.endpoint_stats IS 'Per endpoint: requests by status class, failures, a latency histogram, consecutive failures and the last answer.';

SELECT pg_catalog.pg_extension_config_dump('job.endpoint_defs', '');
SELECT pg_catalog.pg_extension_config_dump('job.endpoint_secrets', '');
SELECT pg_catalog.pg_extension_config_dump('job.endpoint_stats', '');

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

-- pg_jobqueue::delivery::_check_endpoint_url
CREATE OR REPLACE FUNCTION "_check_endpoint_url"(
	"url" TEXT /* & str */
) RETURNS void
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_check_endpoint_url_wrapper';

-- pg_jobqueue::delivery::_check_http_method
CREATE OR REPLACE FUNCTION "_check_http_method"(
	"method" TEXT /* & str */
) RETURNS TEXT /* String */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_check_http_method_wrapper';

-- pg_jobqueue::delivery::_check_delivery_path
CREATE OR REPLACE FUNCTION "_check_delivery_path"(
	"path" TEXT /* & str */
) RETURNS void
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_check_delivery_path_wrapper';

-- pg_jobqueue::delivery::_check_http_headers
CREATE OR REPLACE FUNCTION "_check_http_headers"(
	"what" TEXT, /* & str */
	"headers" jsonb /* pgrx :: JsonB */
) RETURNS void
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_check_http_headers_wrapper';

-- pg_jobqueue::delivery::_check_header_value
CREATE OR REPLACE FUNCTION "_check_header_value"(
	"what" TEXT, /* & str */
	"value" TEXT /* & str */
) RETURNS void
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_check_header_value_wrapper';

-- pg_jobqueue::delivery::_check_webhook_secret
CREATE OR REPLACE FUNCTION "_check_webhook_secret"(
	"secret" TEXT /* & str */
) RETURNS void
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_check_webhook_secret_wrapper';

-- pg_jobqueue::delivery::_new_webhook_secret
CREATE OR REPLACE FUNCTION "_new_webhook_secret"() RETURNS TEXT /* String */
STRICT VOLATILE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_new_webhook_secret_wrapper';

-- pg_jobqueue::wakeup::_wake_sender
CREATE OR REPLACE FUNCTION "_wake_sender"() RETURNS void
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_wake_sender_wrapper';

-- pg_jobqueue::delivery::verify_webhook
CREATE OR REPLACE FUNCTION "verify_webhook"(
	"secret" TEXT, /* & str */
	"msg_id" TEXT, /* & str */
	"msg_timestamp" TEXT, /* & str */
	"body" TEXT, /* & str */
	"signature" TEXT, /* & str */
	"tolerance" interval DEFAULT '5 minutes' /* pgrx :: datum :: Interval */
) RETURNS bool /* bool */
STRICT STABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'verify_webhook_wrapper';

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

-- How many more of `queue`'s jobs may run now, for a limit of `concurrency` running at once.
-- Takes the queue's internal claim lock (held until commit), so that claimers of one queue
-- (executors, the sender) take turns and the count each tests stays exact until it claims.
CREATE OR REPLACE FUNCTION job._free_slots(queue text, concurrency int)
RETURNS int LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM job._lock_handler_queue(queue);
    RETURN concurrency - (SELECT count(*) FROM (SELECT 1 FROM job.live_jobs l
                                                WHERE l.queue = _free_slots.queue AND l.state = 'running'
                                                LIMIT concurrency) r)::int;
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
        free_slots := job._free_slots(h.queue, h.concurrency);
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

-- Expires the leases of running jobs held by executors (or the sender) that are gone, so that the scheduler
-- takes them back at once instead of a handler's timeout plus 30 seconds later: those
-- claimed by `gone` (executors the scheduler saw stop, named as in their claims), and, when
-- `alive` is given (the process ids of this database's running executors and sender), those
-- of every other executor or sender (the scheduler passes it as it starts, before it starts executors: their
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
            OR alive IS NOT NULL AND l.claimed_by ~ '^pg_jobqueue (executor|sender) '
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

-- HTTP endpoints and deliveries (new in 0.4.0).

-- Every metric in the Prometheus text exposition format (version 0.0.4): one HELP and TYPE
-- line per family, then its samples.
CREATE OR REPLACE FUNCTION job.prometheus_metrics()
RETURNS text LANGUAGE sql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
WITH q AS (SELECT * FROM job.queue_metrics),
t AS (SELECT *, job._prometheus_label(queue) AS ql, job._prometheus_label(job_type) AS tl
        FROM job._metric_running_totals),
w AS (SELECT *, job._prometheus_label(worker) AS wl FROM job.workers),
e AS (SELECT st.*, d.disabled_reason IS NOT NULL AS disabled, job._prometheus_label(st.endpoint) AS el,
             (SELECT count(*) FROM job.live_jobs l WHERE l.queue = d.queue AND l.state = 'running') AS in_flight
        FROM job.endpoint_stats st JOIN job.endpoint_defs d ON d.name = st.endpoint),
families (n, name, type, help) AS (VALUES
    (1, 'pg_jobqueue_jobs', 'gauge', 'Jobs per queue and state (live states as of the worker''s last count).'),
    (2, 'pg_jobqueue_oldest_ready_age_seconds', 'gauge', 'Age of the oldest job ready to run.'),
    (3, 'pg_jobqueue_completed_total', 'counter', 'Jobs completed.'),
    (4, 'pg_jobqueue_failed_attempts_total', 'counter', 'Failed attempts, retried or not, stalled ones included.'),
    (5, 'pg_jobqueue_dead_total', 'counter', 'Jobs moved to the dead-letter queue.'),
    (6, 'pg_jobqueue_stalled_total', 'counter', 'Attempts whose lease expired before their worker finished them.'),
    (7, 'pg_jobqueue_processing_seconds', 'summary', 'Claim to finish of finished attempts; quantiles over the last 5 minutes.'),
    (8, 'pg_jobqueue_wait_seconds', 'summary', 'Ready to claim of finished attempts; quantiles over the last 5 minutes.'),
    (9, 'pg_jobqueue_worker_jobs', 'gauge', 'Jobs each worker holds.'),
    (10, 'pg_jobqueue_worker_last_seen_timestamp_seconds', 'gauge', 'When dequeue or heartbeat last saw each worker.'),
    (11, 'pg_jobqueue_http_requests_total', 'counter', 'HTTP delivery attempts per endpoint by answer: status class, or error (no answer).'),
    (12, 'pg_jobqueue_http_failed_attempts_total', 'counter', 'Failed HTTP delivery attempts per endpoint: transient (retried) or permanent.'),
    (13, 'pg_jobqueue_http_request_seconds', 'summary', 'HTTP delivery attempts'' duration per endpoint since it was created.'),
    (14, 'pg_jobqueue_http_in_flight', 'gauge', 'HTTP deliveries being sent per endpoint.'),
    (15, 'pg_jobqueue_http_endpoint_disabled', 'gauge', '1 when the endpoint is disabled (410 Gone, or too many failures in a row).')),
samples (n, sort1, sort2, line) AS (
    SELECT 1, q.queue, s.state, format('pg_jobqueue_jobs{queue=%s,state="%s"} %s', job._prometheus_label(q.queue), s.state, s.n)
      FROM q CROSS JOIN LATERAL (VALUES ('waiting', q.waiting), ('scheduled', q.scheduled),
                                        ('running', q.running), ('dead', q.dead_letters)) s(state, n)
    UNION ALL
    SELECT 2, q.queue, '', format('pg_jobqueue_oldest_ready_age_seconds{queue=%s} %s', job._prometheus_label(q.queue),
                                  coalesce(extract(epoch FROM q.oldest_ready_age), 0))
      FROM q
    UNION ALL
    SELECT c.n, t.queue, t.job_type, format('%s{queue=%s,job_type=%s} %s', f.name, t.ql, t.tl, c.value)
      FROM t CROSS JOIN LATERAL (VALUES (3, t.completed), (4, t.failed), (5, t.dead), (6, t.stalled)) c(n, value)
      JOIN families f ON f.n = c.n
    UNION ALL
    SELECT h.n, t.queue, t.job_type || h.sort, format('%s%s{queue=%s,job_type=%s%s} %s', f.name, h.suffix, t.ql, t.tl, h.label, h.value)
      FROM t CROSS JOIN LATERAL (VALUES
               (7, '1', '', ',quantile="0.5"', coalesce(job._hist_quantile(t.processing, 0.5)::text, 'NaN')),
               (7, '2', '', ',quantile="0.95"', coalesce(job._hist_quantile(t.processing, 0.95)::text, 'NaN')),
               (7, '3', '', ',quantile="0.99"', coalesce(job._hist_quantile(t.processing, 0.99)::text, 'NaN')),
               (7, '4', '_sum', '', t.processing_sum::text),
               (7, '5', '_count', '', t.processing_count::text),
               (8, '1', '', ',quantile="0.5"', coalesce(job._hist_quantile(t.waiting, 0.5)::text, 'NaN')),
               (8, '2', '', ',quantile="0.95"', coalesce(job._hist_quantile(t.waiting, 0.95)::text, 'NaN')),
               (8, '3', '', ',quantile="0.99"', coalesce(job._hist_quantile(t.waiting, 0.99)::text, 'NaN')),
               (8, '4', '_sum', '', t.waiting_sum::text),
               (8, '5', '_count', '', t.waiting_count::text)) h(n, sort, suffix, label, value)
      JOIN families f ON f.n = h.n
    UNION ALL
    SELECT 9, w.worker, '', format('pg_jobqueue_worker_jobs{worker=%s} %s', w.wl, w.jobs_held) FROM w
    UNION ALL
    SELECT 10, w.worker, '', format('pg_jobqueue_worker_last_seen_timestamp_seconds{worker=%s} %s', w.wl,
                                    extract(epoch FROM w.last_seen)) FROM w
    UNION ALL
    SELECT 11, e.endpoint, c.class, format('pg_jobqueue_http_requests_total{endpoint=%s,class="%s"} %s', e.el, c.class, c.n)
      FROM e CROSS JOIN LATERAL (VALUES ('2xx', e.status_2xx), ('3xx', e.status_3xx), ('4xx', e.status_4xx),
                                        ('5xx', e.status_5xx), ('error', e.transport_errors)) c(class, n)
    UNION ALL
    SELECT 12, e.endpoint, k.kind, format('pg_jobqueue_http_failed_attempts_total{endpoint=%s,kind="%s"} %s', e.el, k.kind, k.n)
      FROM e CROSS JOIN LATERAL (VALUES ('permanent', e.permanent_failures), ('transient', e.transient_failures)) k(kind, n)
    UNION ALL
    SELECT 13, e.endpoint, h.sort, format('pg_jobqueue_http_request_seconds%s{endpoint=%s%s} %s', h.suffix, e.el, h.label, h.value)
      FROM e CROSS JOIN LATERAL (VALUES
               ('1', '', ',quantile="0.5"', coalesce(job._hist_quantile(e.latency, 0.5)::text, 'NaN')),
               ('2', '', ',quantile="0.95"', coalesce(job._hist_quantile(e.latency, 0.95)::text, 'NaN')),
               ('3', '', ',quantile="0.99"', coalesce(job._hist_quantile(e.latency, 0.99)::text, 'NaN')),
               ('4', '_sum', '', e.latency_sum::text),
               ('5', '_count', '', (SELECT coalesce(sum(x), 0) FROM unnest(e.latency) x)::text)) h(sort, suffix, label, value)
    UNION ALL
    SELECT 14, e.endpoint, '', format('pg_jobqueue_http_in_flight{endpoint=%s} %s', e.el, e.in_flight) FROM e
    UNION ALL
    SELECT 15, e.endpoint, '', format('pg_jobqueue_http_endpoint_disabled{endpoint=%s} %s', e.el, e.disabled::int) FROM e
)
SELECT string_agg(format(E'# HELP %s %s\n# TYPE %s %s\n', f.name, f.help, f.name, f.type)
                  || coalesce((SELECT string_agg(s.line || E'\n', '' ORDER BY s.sort1, s.sort2)
                                 FROM samples s WHERE s.n = f.n), ''),
                  '' ORDER BY f.n)
  FROM families f
$$;

-- Records a failed attempt of the background worker (a handler's, a delivery's) through
-- job.fail's rules, under its claim, and adds `detail` (the SQLSTATE; the HTTP attempt's class
-- and latency) to the attempt's entry in the job's errors.  A claim that is no longer current
-- records nothing.
CREATE OR REPLACE FUNCTION job._fail_attempt(job_id bigint, token uuid, error text, permanent boolean,
                                  http_status int, retry_after interval, detail jsonb)
RETURNS text LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    errors_before int;
    outcome text;
BEGIN
    SELECT jsonb_array_length(j.errors) INTO errors_before FROM job.jobs j WHERE j.id = job_id;
    outcome := job.fail(job_id, error, permanent, http_status, retry_after, token);
    -- Annotate the entry fail just added, if it added one (a lost claim records nothing).
    UPDATE job.live_jobs l
       SET errors = jsonb_set(l.errors, '{-1}', (l.errors -> -1) || detail)
     WHERE l.id = job_id AND jsonb_array_length(l.errors) > errors_before AND detail IS NOT NULL;
    UPDATE job.finished_jobs f
       SET errors = jsonb_set(f.errors, '{-1}', (f.errors -> -1) || detail)
     WHERE f.id = job_id AND jsonb_array_length(f.errors) > errors_before AND detail IS NOT NULL;
    RETURN outcome;
END $$;

-- Records a handler's failed attempt through job.fail's rules (under the executor's claim),
-- keeping the SQLSTATE with it.
CREATE OR REPLACE FUNCTION job._fail_handler_job(job_id bigint, token uuid, sqlstate text, message text, permanent boolean)
RETURNS text LANGUAGE sql
SET search_path = pg_catalog, pg_temp AS $$
    SELECT job._fail_attempt(job_id, token, message, permanent, NULL, NULL,
                             jsonb_build_object('sqlstate', sqlstate))
$$;

-- Raises unless the endpoint exists; returns it.
CREATE OR REPLACE FUNCTION job._require_endpoint(endpoint_name text)
RETURNS job.endpoint_defs LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    e job.endpoint_defs;
BEGIN
    SELECT * INTO e FROM job.endpoint_defs d WHERE d.name = endpoint_name;
    IF NOT FOUND THEN
        PERFORM job._check_name('endpoint name', endpoint_name);
        RAISE EXCEPTION 'endpoint % does not exist', quote_literal(endpoint_name)
            USING ERRCODE = 'undefined_object',
                  HINT = 'Create it with SELECT job.create_endpoint(''name'', ''https://…'');';
    END IF;
    RETURN e;
END $$;

-- Creates the endpoint, or changes an existing one (audited either way; the audit entry
-- names header names, never their values or the secret).  `secret` NULL makes one for a new
-- endpoint and keeps an existing endpoint's.  `queue` NULL is the endpoint's name; the queue
-- is created with the defaults when absent, and its retry settings are the deliveries'.
CREATE OR REPLACE FUNCTION job.create_endpoint(
    name text,
    url text,
    method text DEFAULT 'POST',
    headers jsonb DEFAULT '{}',
    secret text DEFAULT NULL,
    timeout interval DEFAULT '30 seconds',
    concurrency int DEFAULT 16,
    rate_limit int DEFAULT NULL,
    queue text DEFAULT NULL
) RETURNS void LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
DECLARE
    queue_name text := coalesce(queue, name);
    verb text;
    before job.endpoint_defs;
    after job.endpoint_defs;
    q job.queues;
BEGIN
    PERFORM job._require_worker('endpoints');
    PERFORM job._check_name('endpoint name', name);
    PERFORM job._check_not_null('url', url);
    PERFORM job._check_endpoint_url(url);
    PERFORM job._check_not_null('method', method);
    verb := job._check_http_method(method);
    PERFORM job._check_not_null('headers', headers);
    PERFORM job._check_http_headers('headers', headers);
    IF secret IS NOT NULL THEN
        PERFORM job._check_webhook_secret(secret);
    END IF;
    PERFORM job._check_interval('timeout', timeout, false);
    IF timeout > interval '1 hour' THEN
        RAISE EXCEPTION 'timeout must be at most 1 hour, got %', timeout USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF concurrency IS NULL OR concurrency NOT BETWEEN 1 AND 1000 THEN
        RAISE EXCEPTION 'concurrency must be between 1 and 1000, got %', coalesce(concurrency::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF rate_limit NOT BETWEEN 1 AND 100000 THEN
        RAISE EXCEPTION 'rate_limit must be between 1 and 100000 requests per second (or NULL for none), got %', rate_limit
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM job._check_name('queue name', queue_name);
    IF EXISTS (SELECT 1 FROM job.handler_defs h WHERE h.queue = queue_name) THEN
        RAISE EXCEPTION 'queue % has a handler, so it cannot be an endpoint''s queue', quote_literal(queue_name)
            USING ERRCODE = 'object_in_use',
                  HINT = 'Name another queue, or remove the handler first (job.remove_handler).';
    END IF;
    IF EXISTS (SELECT 1 FROM job.endpoint_defs d WHERE d.queue = queue_name AND d.name <> create_endpoint.name) THEN
        RAISE EXCEPTION 'queue % is already the queue of endpoint %', quote_literal(queue_name),
            quote_literal((SELECT d.name FROM job.endpoint_defs d WHERE d.queue = queue_name))
            USING ERRCODE = 'object_in_use';
    END IF;

    -- (Aliases differ from this function's variables: use_variable would read `q.name` as the
    -- variable q's.)  An existing queue keeps its settings.
    IF NOT EXISTS (SELECT 1 FROM job.queues existing WHERE existing.name = queue_name) THEN
        PERFORM job.create_queue(queue_name);
    END IF;
    q := job._require_queue(queue_name);
    SELECT * INTO before FROM job.endpoint_defs d WHERE d.name = create_endpoint.name FOR UPDATE;
    INSERT INTO job.endpoint_defs AS d (name, queue, url, method, timeout, concurrency, rate_limit)
    VALUES (name, queue_name, url, verb, timeout, concurrency, rate_limit)
    ON CONFLICT ON CONSTRAINT endpoint_defs_pkey DO UPDATE
       SET queue = EXCLUDED.queue, url = EXCLUDED.url, method = EXCLUDED.method,
           timeout = EXCLUDED.timeout, concurrency = EXCLUDED.concurrency,
           rate_limit = EXCLUDED.rate_limit, updated_at = now()
    RETURNING * INTO after;
    INSERT INTO job.endpoint_secrets AS s (endpoint, secret, headers)
    VALUES (name, coalesce(secret, job._new_webhook_secret()), headers)
    ON CONFLICT (endpoint) DO UPDATE
       SET secret = coalesce(create_endpoint.secret, s.secret), headers = EXCLUDED.headers;
    INSERT INTO job.endpoint_stats (endpoint) VALUES (name) ON CONFLICT DO NOTHING;
    PERFORM job._wake_scheduler();  -- starts the sender
    PERFORM job._wake_sender();     -- or has it look now
    PERFORM job._audit(CASE WHEN before.name IS NULL THEN 'create_endpoint' ELSE 'alter_endpoint' END,
        to_jsonb(after) - '{paused,disabled_reason,disabled_at,created_at,updated_at}'::text[]
        || jsonb_build_object('header_names', (SELECT coalesce(jsonb_agg(k ORDER BY k), '[]') FROM jsonb_object_keys(headers) k),
                              'secret_given', secret IS NOT NULL));
END $$;

-- Makes and returns a new secret.  Until `overlap` has passed, every request carries the
-- signatures of both the new and the previous secret, so receivers can switch at leisure.
CREATE OR REPLACE FUNCTION job.rotate_endpoint_secret(name text, overlap interval DEFAULT '24 hours')
RETURNS text LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    e job.endpoint_defs := job._require_endpoint(name);
    new_secret text := job._new_webhook_secret();
BEGIN
    PERFORM job._check_interval('overlap', overlap, true);
    UPDATE job.endpoint_secrets s
       SET previous_secret = s.secret, previous_until = now() + overlap, secret = new_secret
     WHERE s.endpoint = e.name;
    PERFORM job._audit('rotate_endpoint_secret', jsonb_build_object('name', e.name, 'overlap', overlap));
    RETURN new_secret;
END $$;

-- The endpoint's current secret, for the administrator to hand to the receiver (audited).
CREATE OR REPLACE FUNCTION job.endpoint_secret(name text)
RETURNS text LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    e job.endpoint_defs := job._require_endpoint(name);
BEGIN
    PERFORM job._audit('read_endpoint_secret', jsonb_build_object('name', e.name));
    RETURN (SELECT s.secret FROM job.endpoint_secrets s WHERE s.endpoint = e.name);
END $$;

-- The endpoint's headers with their values (audited).
CREATE OR REPLACE FUNCTION job.endpoint_headers(name text)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    e job.endpoint_defs := job._require_endpoint(name);
BEGIN
    PERFORM job._audit('read_endpoint_headers', jsonb_build_object('name', e.name));
    RETURN (SELECT s.headers FROM job.endpoint_secrets s WHERE s.endpoint = e.name);
END $$;

-- Drops the endpoint (its queue stays).  Refuses while the queue has unfinished deliveries
-- unless forced, which cancels them.
CREATE OR REPLACE FUNCTION job.drop_endpoint(name text, force boolean DEFAULT false)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    e job.endpoint_defs := job._require_endpoint(name);
    unfinished bigint[];
    cancelled int := 0;
BEGIN
    PERFORM job._check_not_null('force', force);
    SELECT array_agg(l.id) INTO unfinished FROM job.live_jobs l WHERE l.queue = e.queue;
    IF unfinished IS NOT NULL AND NOT force THEN
        RAISE EXCEPTION 'endpoint % still has % unfinished deliveries', quote_literal(e.name), cardinality(unfinished)
            USING ERRCODE = 'object_in_use',
                  HINT = 'Let them finish, or drop with force => true to cancel them.';
    END IF;
    IF unfinished IS NOT NULL THEN
        cancelled := job._finish(unfinished, '{waiting,scheduled,running}', 'cancelled');
    END IF;
    DELETE FROM job.endpoint_defs d WHERE d.name = e.name;  -- its secrets and stats go with it
    PERFORM job._audit('drop_endpoint', jsonb_build_object('name', e.name, 'force', force), cancelled);
END $$;

-- Pauses or resumes the endpoint; resuming also ends a disablement and its failure count.
CREATE OR REPLACE FUNCTION job._set_endpoint_paused(endpoint_name text, pause boolean)
RETURNS void LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    e job.endpoint_defs := job._require_endpoint(endpoint_name);
BEGIN
    UPDATE job.endpoint_defs d
       SET paused = pause,
           disabled_reason = CASE WHEN pause THEN d.disabled_reason END,
           disabled_at = CASE WHEN pause THEN d.disabled_at END,
           updated_at = now()
     WHERE d.name = e.name;
    IF NOT pause THEN
        UPDATE job.endpoint_stats s SET consecutive_failures = 0 WHERE s.endpoint = e.name;
        PERFORM job._wake_sender();
    END IF;
    PERFORM job._audit(CASE WHEN pause THEN 'pause_endpoint' ELSE 'resume_endpoint' END,
                       jsonb_build_object('name', e.name, 'was_disabled', e.disabled_reason));
END $$;

CREATE OR REPLACE FUNCTION job.pause_endpoint(name text) RETURNS void LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
    SELECT job._set_endpoint_paused(name, true)
$$;

CREATE OR REPLACE FUNCTION job.resume_endpoint(name text) RETURNS void LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
    SELECT job._set_endpoint_paused(name, false)
$$;

CREATE OR REPLACE VIEW job.endpoints AS
SELECT d.name, d.url, d.method, d.queue,
       ARRAY(SELECT k FROM jsonb_object_keys(s.headers) k ORDER BY k) AS header_names,
       d.timeout, d.concurrency, d.rate_limit,
       CASE WHEN d.disabled_reason IS NOT NULL THEN 'disabled'
            WHEN d.paused OR q.paused THEN 'paused'
            ELSE 'active' END AS state,
       d.disabled_reason, d.disabled_at,
       (SELECT count(*) FROM job.live_jobs l WHERE l.queue = d.queue AND l.state = 'running') AS in_flight,
       st.consecutive_failures, st.last_status, st.last_error, st.last_attempt_at,
       s.previous_until > now() AS rotating_secret,
       d.created_at, d.updated_at
  FROM job.endpoint_defs d
  JOIN job.queues q ON q.name = d.queue
  JOIN job.endpoint_secrets s ON s.endpoint = d.name
  LEFT JOIN job.endpoint_stats st ON st.endpoint = d.name;

COMMENT ON VIEW job.endpoints IS 'HTTP endpoints: URL, method, header names (never values or secrets), limits, state (active, paused, disabled and why), requests in flight, consecutive failures and the last answer.';

CREATE OR REPLACE VIEW job.endpoint_metrics AS
SELECT st.endpoint, st.status_2xx, st.status_3xx, st.status_4xx, st.status_5xx,
       st.transport_errors, st.transient_failures, st.permanent_failures,
       job._hist_quantile(st.latency, 0.5)  AS latency_p50,
       job._hist_quantile(st.latency, 0.95) AS latency_p95,
       job._hist_quantile(st.latency, 0.99) AS latency_p99,
       (SELECT count(*) FROM job.live_jobs l WHERE l.queue = d.queue AND l.state = 'running') AS in_flight,
       d.disabled_reason IS NOT NULL AS disabled
  FROM job.endpoint_stats st
  JOIN job.endpoint_defs d ON d.name = st.endpoint;

COMMENT ON VIEW job.endpoint_metrics IS 'Per endpoint since it was created: requests by status class, transport errors, transient and permanent failures, latency quantiles (seconds), requests in flight, disabled.';

-- Enqueues one delivery to an existing endpoint, as a job of its queue (idempotency key,
-- delay, priority and the job views work as for any job).  The job's payload is
-- {"body": …} with the path, headers and webhook id it was given; its job_type is
-- event_type.  The request's webhook-id is the idempotency key, or "msg_<job id>".
CREATE OR REPLACE FUNCTION job.deliver(
    endpoint text,
    body jsonb,
    event_type text DEFAULT NULL,
    idempotency_key text DEFAULT NULL,
    path text DEFAULT NULL,
    headers jsonb DEFAULT NULL,
    run_at timestamptz DEFAULT NULL,
    delay interval DEFAULT NULL,
    priority int DEFAULT 0
) RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    e job.endpoint_defs := job._require_endpoint(endpoint);
BEGIN
    PERFORM job._check_not_null('body', body);
    IF path IS NOT NULL THEN
        PERFORM job._check_delivery_path(path);
    END IF;
    IF headers IS NOT NULL THEN
        PERFORM job._check_http_headers('headers', headers);
    END IF;
    IF idempotency_key IS NOT NULL THEN
        PERFORM job._check_header_value('idempotency_key', idempotency_key);
    END IF;
    RETURN job.enqueue(e.queue,
                       jsonb_build_object('body', body)
                       || jsonb_strip_nulls(jsonb_build_object('path', path, 'headers', headers,
                                                               'webhook_id', idempotency_key)),
                       run_at => run_at, delay => delay, priority => priority,
                       idempotency_key => idempotency_key, job_type => event_type);
END $$;

-- Whether the database needs a sender: it has an endpoint.
CREATE OR REPLACE FUNCTION job._sender_wanted()
RETURNS boolean LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp AS $$
    SELECT EXISTS (SELECT 1 FROM job.endpoint_defs)
$$;

-- Claims up to `max_jobs` deliveries for the sender, from active endpoints in random order,
-- each within its concurrency (job._free_slots, as handler claims count it) and its rate
-- limit (the sender passes how many requests each
-- endpoint started in the last second: `recent_starts`, paired with `endpoints`).  Each row
-- is one request to make, with its endpoint's settings.  A job enqueued on an endpoint's queue
-- without job.deliver is posted with its payload as the body (unless that payload is an
-- object with a "body" key: then it is read as job.deliver writes it).
CREATE OR REPLACE FUNCTION job._claim_deliveries(worker text, max_jobs int, endpoints text[], recent_starts int[])
RETURNS TABLE (endpoint text, job_id bigint, token uuid, body text, path text, headers jsonb,
               webhook_id text, url text, method text, endpoint_headers jsonb, secrets text[],
               timeout_ms bigint, rate_limit int)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    e record;
    remaining int := max_jobs;
    wanted int;
    claimed int;
BEGIN
    FOR e IN SELECT d.name, d.queue, d.url, d.method, d.timeout, d.concurrency, d.rate_limit, s.headers,
                    CASE WHEN s.previous_until > now() THEN ARRAY[s.secret, s.previous_secret]
                         ELSE ARRAY[s.secret] END AS secrets
               FROM job.endpoint_defs d
               JOIN job.queues q ON q.name = d.queue AND NOT q.paused
               JOIN job.endpoint_secrets s ON s.endpoint = d.name
              WHERE NOT d.paused AND d.disabled_reason IS NULL
              ORDER BY random()
    LOOP
        EXIT WHEN remaining <= 0;
        wanted := remaining;
        IF e.rate_limit IS NOT NULL THEN
            wanted := least(wanted, e.rate_limit - coalesce(recent_starts[array_position(endpoints, e.name)], 0));
        END IF;
        CONTINUE WHEN wanted <= 0;
        wanted := least(wanted, job._free_slots(e.queue, e.concurrency));
        CONTINUE WHEN wanted <= 0;
        RETURN QUERY
        SELECT e.name, c.id, c.lease_token,
               (CASE WHEN envelope THEN c.payload -> 'body' ELSE c.payload END)::text,
               CASE WHEN envelope THEN c.payload ->> 'path' END,
               CASE WHEN envelope AND jsonb_typeof(c.payload -> 'headers') = 'object' THEN c.payload -> 'headers' END,
               coalesce(CASE WHEN envelope THEN c.payload ->> 'webhook_id' END, 'msg_' || c.id),
               e.url, e.method, e.headers, e.secrets,
               (extract(epoch FROM e.timeout) * 1000)::bigint, e.rate_limit
          FROM job.dequeue(e.queue, worker, wanted, e.timeout + interval '30 seconds') c
         CROSS JOIN LATERAL (SELECT jsonb_typeof(c.payload) = 'object' AND c.payload ? 'body' AS envelope) x;
        GET DIAGNOSTICS claimed = ROW_COUNT;
        remaining := remaining - claimed;
    END LOOP;
END $$;

-- Records what the sender's finished requests came to, in one transaction:
-- * `outcomes`, one object per attempt: job_id, token, and either `result` (delivered: the job
--   completes with it) or `error`, `permanent`, `http_status`, `retry_after_ms` and `detail`
--   (the attempt's class, latency and webhook id, kept in the job's errors entry): the job
--   fails through job.fail's rules.  An attempt whose claim is no longer current changes
--   nothing.
-- * `stats`, one object per endpoint: what to add to its counters, and whether it answered
--   410 Gone.  An endpoint that did, or that has failed `disable_after` times in a row, is
--   disabled (audited).
CREATE OR REPLACE FUNCTION job._record_deliveries(outcomes jsonb, stats jsonb, disable_after int)
RETURNS void LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    ids bigint[];
    tokens uuid[];
    results jsonb[];
    f record;
    gone record;
BEGIN
    SELECT array_agg(o.job_id), array_agg(o.token), array_agg(o.result)
      INTO ids, tokens, results
      FROM jsonb_to_recordset(outcomes) AS o(job_id bigint, token uuid, result jsonb)
     WHERE o.result IS NOT NULL;
    IF ids IS NOT NULL THEN
        PERFORM job._finish(ids, '{running}', 'completed', results, NULL, tokens);
    END IF;
    FOR f IN SELECT * FROM jsonb_to_recordset(outcomes)
                 AS o(job_id bigint, token uuid, result jsonb, error text, permanent boolean,
                      http_status int, retry_after_ms bigint, detail jsonb)
              WHERE o.result IS NULL
    LOOP
        PERFORM job._fail_attempt(f.job_id, f.token, f.error, f.permanent, f.http_status,
                                  f.retry_after_ms * interval '1 millisecond', f.detail);
    END LOOP;

    UPDATE job.endpoint_stats st
       SET status_2xx = st.status_2xx + x.status_2xx, status_3xx = st.status_3xx + x.status_3xx,
           status_4xx = st.status_4xx + x.status_4xx, status_5xx = st.status_5xx + x.status_5xx,
           transport_errors = st.transport_errors + x.transport_errors,
           transient_failures = st.transient_failures + x.transient_failures,
           permanent_failures = st.permanent_failures + x.permanent_failures,
           latency = job._hist_add(st.latency, x.latency),
           latency_sum = st.latency_sum + x.latency_sum,
           consecutive_failures = CASE WHEN x.succeeded THEN x.failures_since_success
                                       ELSE st.consecutive_failures + x.failures_since_success END,
           last_status = coalesce(x.last_status, st.last_status),
           last_error = CASE WHEN x.failures_since_success > 0 THEN x.last_error ELSE NULL END,
           last_attempt_at = now()
      FROM jsonb_to_recordset(stats)
        AS x(endpoint text, status_2xx bigint, status_3xx bigint, status_4xx bigint, status_5xx bigint,
             transport_errors bigint, transient_failures bigint, permanent_failures bigint,
             latency bigint[], latency_sum float8, succeeded boolean, failures_since_success int, last_status int,
             last_error text, gone boolean)
     WHERE st.endpoint = x.endpoint;

    FOR gone IN
        SELECT d.name, CASE WHEN x.gone THEN 'the endpoint answered 410 Gone'
                            ELSE format('%s consecutive failed attempts (pg_jobqueue.http_disable_after)', st.consecutive_failures)
                       END AS reason
          FROM jsonb_to_recordset(stats) AS x(endpoint text, gone boolean)
          JOIN job.endpoint_defs d ON d.name = x.endpoint AND d.disabled_reason IS NULL
          JOIN job.endpoint_stats st ON st.endpoint = d.name
         WHERE x.gone OR st.consecutive_failures >= disable_after
    LOOP
        UPDATE job.endpoint_defs d SET disabled_reason = gone.reason, disabled_at = now()
         WHERE d.name = gone.name;
        PERFORM job._audit('disable_endpoint', jsonb_build_object('name', gone.name, 'reason', gone.reason));
    END LOOP;
END $$;

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
-- read no table.  cron_next previews a schedule expression; verify_webhook checks a
-- signature for a receiver.
GRANT EXECUTE ON FUNCTION job._hist_of(float8), job._hist_add(bigint[], bigint[]),
                          job._hist_quantile(bigint[], float8), job._hist_sum(bigint[]),
                          job.cron_next(text, text, timestamptz),
                          job.verify_webhook(text, text, text, text, text, interval) TO PUBLIC;

-- The worker serves this database again, at the new version.
SELECT job._request_service();
