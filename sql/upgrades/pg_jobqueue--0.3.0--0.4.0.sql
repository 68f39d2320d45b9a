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

-- Flow control (sql/flow.sql): the queues' limits, the jobs' keys, their indexes, and the
-- rate windows, holds and concurrency slots.
ALTER TABLE job.queues
    ADD COLUMN concurrency        int CHECK (concurrency >= 1),
    ADD COLUMN key_concurrency    int CHECK (key_concurrency >= 1),
    ADD COLUMN rate_limit         int CHECK (rate_limit >= 1),
    ADD COLUMN rate_period        interval CHECK (rate_period > interval '0' AND rate_period <= interval '100 years'),
    ADD COLUMN key_rate_limit     int CHECK (key_rate_limit >= 1),
    ADD COLUMN key_rate_period    interval CHECK (key_rate_period > interval '0' AND key_rate_period <= interval '100 years'),
    ADD COLUMN fair               boolean NOT NULL DEFAULT false,
    ADD COLUMN holds              boolean NOT NULL DEFAULT false,
    ADD COLUMN serial_keys        boolean NOT NULL DEFAULT false,
    ADD CONSTRAINT queues_rate_check CHECK ((rate_limit IS NULL) = (rate_period IS NULL)),
    ADD CONSTRAINT queues_key_rate_check CHECK ((key_rate_limit IS NULL) = (key_rate_period IS NULL)),
    ADD COLUMN flow_limited       boolean GENERATED ALWAYS AS (
                           concurrency IS NOT NULL OR key_concurrency IS NOT NULL OR rate_limit IS NOT NULL
                           OR key_rate_limit IS NOT NULL OR holds OR serial_keys OR fair) STORED;

COMMENT ON TABLE job.queues IS 'One row per queue: retry, lease, idempotency, retention and flow-control settings.';

ALTER TABLE job.live_jobs
    ADD COLUMN concurrency_key text,
    ADD COLUMN order_key       text,
    ADD COLUMN singleton_key   text,
    ADD COLUMN debounce_key    text,
    ADD COLUMN flow_claimed    boolean;

ALTER TABLE job.finished_jobs
    ADD COLUMN concurrency_key text,
    ADD COLUMN order_key       text,
    ADD COLUMN singleton_key   text,
    ADD COLUMN debounce_key    text;

-- Running jobs of a concurrency key: what a claim counts against the queue's key_concurrency
-- (those whose lease has not run out).  With lease_expires_at in it, the count is one range of
-- this index: without, the generic plan took the lease index and read every running job of the
-- queue for each key it tested (800 per test with 1,000 keys busy).
CREATE INDEX live_jobs_running_key_idx ON job.live_jobs (queue, concurrency_key, lease_expires_at)
    WHERE state = 'running' AND concurrency_key IS NOT NULL;

-- A fair queue's claims go from key to key, taking each key's first job in claim order.
CREATE INDEX live_jobs_fair_idx ON job.live_jobs (queue, concurrency_key, priority DESC, run_at, id)
    WHERE state = 'waiting' AND concurrency_key IS NOT NULL;

-- The jobs of an order, singleton or debounce key, oldest first: a job of an order or
-- singleton key starts only when it is its key's oldest; an enqueue finds the job it replaces.
CREATE INDEX live_jobs_order_key_idx ON job.live_jobs (queue, order_key, id) WHERE order_key IS NOT NULL;
CREATE INDEX live_jobs_singleton_key_idx ON job.live_jobs (queue, singleton_key, id) WHERE singleton_key IS NOT NULL;
CREATE INDEX live_jobs_debounce_key_idx ON job.live_jobs (queue, debounce_key, id) WHERE debounce_key IS NOT NULL;

-- Flow control's state per queue (key '') and per concurrency key: the rate window (starts
-- per slot, see src/flow.rs), a hold set by job.rate_limit_pause, and when the scheduler must
-- wake the queue's consumers because the window or the hold lets a job start again.  A claim
-- holds the row it counts in until it commits, so the starts it counts stay exact.
CREATE TABLE job.rate_windows (
    queue      text NOT NULL REFERENCES job.queues (name) ON DELETE CASCADE,
    key        text NOT NULL,             -- '': the queue's own window and hold
    -- A queue's rate limit is split over up to 8 windows (shards), each with its share of the
    -- limit, so that claims in different transactions count in different rows instead of
    -- queueing for one row until each commits.  Keys and holds use shard 0.
    shard      smallint NOT NULL DEFAULT 0,
    base       bigint NOT NULL DEFAULT 0, -- the slot counts[1] counts
    counts     int[] NOT NULL DEFAULT '{}',
    held_until timestamptz,
    wake_at    timestamptz,
    PRIMARY KEY (queue, key, shard)
);

COMMENT ON TABLE job.rate_windows IS 'Rate windows and holds of rate-limited queues and concurrency keys (read through job.queue_settings and job.rate_limit_holds).';

-- The scheduler's next wake-up for a window or hold.
CREATE INDEX rate_windows_wake_idx ON job.rate_windows (wake_at) WHERE wake_at IS NOT NULL;

-- A queue's concurrency slots: a claim takes one per job, locking its row (SKIP LOCKED: claims
-- in other transactions take other slots, and never wait) and writing the job's id in it.  A
-- slot is free when its job no longer holds a lease; so no finish, failure or crash has to
-- give it back, and a worker that died frees its slot when its lease runs out.
CREATE TABLE job.concurrency_slots (
    queue  text NOT NULL REFERENCES job.queues (name) ON DELETE CASCADE,
    slot   int NOT NULL,
    job_id bigint,
    PRIMARY KEY (queue, slot)
);

COMMENT ON TABLE job.concurrency_slots IS 'Concurrency slots of queues with a concurrency limit: the job that last took each.';

SELECT pg_catalog.pg_extension_config_dump('job.rate_windows', '');
SELECT pg_catalog.pg_extension_config_dump('job.concurrency_slots', '');

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

-- pg_jobqueue::flow::_rate_take
CREATE OR REPLACE FUNCTION "_rate_take"(
	"base" bigint, /* i64 */
	"counts" INT[], /* Vec < i32 > */
	"period_ms" bigint, /* i64 */
	"rate_limit" INT, /* i32 */
	"wanted" INT, /* i32 */
	"at_ms" bigint /* i64 */
) RETURNS TABLE (
	"granted" INT,  /* i32 */
	"base" bigint,  /* i64 */
	"counts" INT[],  /* Vec < i32 > */
	"next_at_ms" bigint  /* Option < i64 > */
)
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_rate_take_wrapper';

-- pg_jobqueue::flow::_try_lock_key
CREATE OR REPLACE FUNCTION "_try_lock_key"(
	"queue" TEXT, /* & str */
	"key" TEXT /* & str */
) RETURNS bool /* bool */
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_try_lock_key_wrapper';

-- pg_jobqueue::flow::_lock_enqueue_key
CREATE OR REPLACE FUNCTION "_lock_enqueue_key"(
	"queue" TEXT, /* & str */
	"kind" TEXT, /* & str */
	"key" TEXT /* & str */
) RETURNS void
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_lock_enqueue_key_wrapper';

-- pg_jobqueue::flow::_fair_cursor
CREATE OR REPLACE FUNCTION "_fair_cursor"(
	"queue_id" bigint /* i64 */
) RETURNS TEXT /* Option < String > */
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_fair_cursor_wrapper';

-- pg_jobqueue::flow::_move_fair_cursor
CREATE OR REPLACE FUNCTION "_move_fair_cursor"(
	"queue_id" bigint, /* i64 */
	"key" TEXT /* Option < & str > */
) RETURNS void
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_move_fair_cursor_wrapper';

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
    held_turns boolean;
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
                                       errors, result, concurrency_key, order_key, singleton_key, debounce_key)
        SELECT m.id, m.run_at, m.enqueued_at, m.claimed_at, m.priority, m.attempt, m.max_retries,
               final_state, m.queue, m.job_type, m.claimed_by, m.idempotency_key, m.payload,
               CASE WHEN error IS NULL THEN m.errors
                    ELSE m.errors || jsonb_build_array(job._attempt_error(m.attempt, m.claimed_by, error)) END,
               CASE WHEN cardinality(job_results) = 1 THEN job_results[1]
                    ELSE job_results[array_position(ids, m.id)] END,
               m.concurrency_key, m.order_key, m.singleton_key, m.debounce_key
          FROM moved m
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM kept), array_agg(m.queue), array_agg(m.job_type),
           array_agg(m.claimed_at), array_agg(m.run_at), bool_or(m.flow_claimed)
      INTO moved_count, queues, job_types, claimed, ready, held_turns
      FROM moved m WHERE m.claimed_at IS NOT NULL;
    IF held_turns THEN
        -- A job claimed under flow control held a concurrency slot or its key's turn: another
        -- may start now.  (Only these look the queue up: 22 us a call for every other job.)
        PERFORM job._wake_queue_on_commit(qs.id) FROM job.queues qs
         WHERE qs.name = ANY (queues) AND NOT qs.paused;
    END IF;
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
    q job.queues;
    limited boolean;
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
    SELECT * INTO q FROM job.queues qs WHERE qs.name = dequeue.queue;
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
    limited := q.flow_limited;
    -- Where this session's last claim on the queue left off, unless a claim from the front is
    -- due (see src/claim_cursor.rs): the dead index entries of every job claimed since vacuum
    -- last ran lie before it.  (Values the statements below compare with are read through
    -- sub-selects, so that one generic plan serves every call: see producing.sql.)
    SELECT c.priority, c.run_at, c.id INTO resume_priority, resume_run_at, resume_id FROM job._claim_cursor(q.id) c;
    FOR pass IN 1..2 LOOP
        picked := '{}';
        front_took := NULL;
        IF limited THEN
            -- Within the queue's concurrency and rate limits (see flow.sql).
            picked := job._pick_limited(q, dequeue.batch);
        END IF;
        -- A higher priority than the cursor's waiting (enqueued since, say): from the front.
        -- (A scalar sub-select in claim order, not EXISTS: it must be a range of the claim
        -- index, which ends at the cursor's priority, not a scan of the table.)
        IF NOT limited AND resume_id IS NOT NULL
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
        IF NOT limited AND cardinality(picked) < dequeue.batch THEN
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
               claimed_by = dequeue.worker, lease_expires_at = now() + lease_for, lease_token = token,
               flow_claimed = CASE WHEN limited THEN true END
         WHERE j.id = ANY ((SELECT picked)::bigint[])
        RETURNING j.id, j.queue, j.job_type, j.payload, j.attempt, j.max_retries, j.enqueued_at,
                  j.lease_expires_at, j.lease_token;
        GET DIAGNOSTICS claimed = ROW_COUNT;
        IF NOT limited THEN
            PERFORM job._move_claim_cursor(q.id, last_priority, last_run_at,
                                           picked[cardinality(picked)], front_took);
        END IF;
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

-- The earliest time a job becomes due, a lease runs out, or a rate window or hold lets jobs
-- of a queue start, over all queues (NULL: none): when the scheduler must next promote,
-- rescue or wake.  One index probe per queue and kind.  Leases
-- that already ran out are the scheduler's rescue's business (it looks on every round); the
-- probe starts at now, past the entries finished jobs leave in the lease index, which lie
-- there, their leases run out, until vacuum removes them.
CREATE OR REPLACE FUNCTION job._next_job_due()
RETURNS timestamptz LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN least((SELECT min(w.wake_at) FROM job.rate_windows w WHERE w.wake_at IS NOT NULL),
                 (SELECT least(min(d.run_at), min(r.lease_expires_at))
              FROM job.queues q
              LEFT JOIN LATERAL (SELECT l.run_at FROM job.live_jobs l
                                  WHERE l.queue = q.name AND l.state = 'scheduled'
                                  ORDER BY l.run_at LIMIT 1) d ON true
              LEFT JOIN LATERAL (SELECT l.lease_expires_at FROM job.live_jobs l
                                  WHERE l.queue = q.name AND l.state = 'running' AND l.lease_expires_at >= now()
                                  ORDER BY l.lease_expires_at LIMIT 1) r ON true));
END $$;

-- How many more of `queue`'s jobs may run now, for a limit of `concurrency` running at once.
-- Takes the queue's internal claim lock (held until commit), so that claimers of one queue
-- take turns and the count each tests stays exact until it claims.
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
LANGUAGE plpgsql VOLATILE  -- EXPLAIN, which it runs for an estimate, is refused in a STABLE function
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
-- event_type.  The request's webhook-id is the idempotency key, or "msg_<job id>".  A
-- `concurrency_key` or `order_key` puts the delivery under its queue's flow control (see
-- flow.sql): per-key limits, or one at a time in order per key.
CREATE OR REPLACE FUNCTION job.deliver(
    endpoint text,
    body jsonb,
    event_type text DEFAULT NULL,
    idempotency_key text DEFAULT NULL,
    path text DEFAULT NULL,
    headers jsonb DEFAULT NULL,
    run_at timestamptz DEFAULT NULL,
    delay interval DEFAULT NULL,
    priority int DEFAULT 0,
    concurrency_key text DEFAULT NULL,
    order_key text DEFAULT NULL
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
                       idempotency_key => idempotency_key, job_type => event_type,
                       concurrency_key => concurrency_key, order_key => order_key);
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
-- Flow control (sql/flow.sql): concurrency and rate limits per queue and per key, holds,
-- order, singleton and debounce keys, fair queues
---------------------------------------------------------------------------------------------

-- Raises unless an enqueue's flow-control keys make sense for queue `q`: well-formed keys;
-- a concurrency key only where the queue has a per-key limit or is fair; an order key with
-- neither a singleton nor a debounce key; a debounce key with its quiet period, and neither a
-- start time (the debounce sets it) nor an idempotency key (the debounce key already merges).
CREATE OR REPLACE FUNCTION job._check_job_keys(q job.queues, concurrency_key text, order_key text, singleton_key text,
                                    debounce_key text, debounce interval, debounce_max_wait interval,
                                    idempotency_key text, run_at timestamptz, delay interval)
RETURNS void LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF concurrency_key IS NOT NULL THEN
        PERFORM job._check_name('concurrency_key', concurrency_key, 512);
        IF q.key_concurrency IS NULL AND q.key_rate_limit IS NULL AND NOT q.fair THEN
            RAISE EXCEPTION 'queue % has no per-key limit and is not fair, so concurrency_key % would do nothing',
                quote_literal(q.name), quote_literal(concurrency_key)
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Give the queue key_concurrency, key_rate_limit or fair => true with job.create_queue first.';
        END IF;
    END IF;
    IF order_key IS NOT NULL THEN
        PERFORM job._check_name('order_key', order_key, 512);
    END IF;
    IF singleton_key IS NOT NULL THEN
        PERFORM job._check_name('singleton_key', singleton_key, 512);
    END IF;
    IF debounce_key IS NOT NULL THEN
        PERFORM job._check_name('debounce_key', debounce_key, 512);
    END IF;
    IF num_nonnulls(order_key, singleton_key, debounce_key) > 1 THEN
        RAISE EXCEPTION 'give at most one of order_key, singleton_key and debounce_key'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF debounce_key IS NULL AND (debounce IS NOT NULL OR debounce_max_wait IS NOT NULL) THEN
        RAISE EXCEPTION 'debounce and debounce_max_wait need a debounce_key' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF debounce_key IS NOT NULL THEN
        IF debounce IS NULL THEN
            RAISE EXCEPTION 'debounce_key needs debounce, the quiet period' USING ERRCODE = 'null_value_not_allowed',
                HINT = 'For example debounce => ''5 seconds'': the job starts once no enqueue of its key came for that long.';
        END IF;
        PERFORM job._check_interval('debounce', debounce, false);
        IF debounce_max_wait IS NOT NULL THEN
            PERFORM job._check_interval('debounce_max_wait', debounce_max_wait, false);
            IF debounce_max_wait < debounce THEN
                RAISE EXCEPTION 'debounce_max_wait (%) must not be less than debounce (%)', debounce_max_wait, debounce
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
        END IF;
        IF run_at IS NOT NULL OR delay IS NOT NULL THEN
            RAISE EXCEPTION 'a debounced job starts after its quiet period: give no run_at or delay'
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END IF;
    IF idempotency_key IS NOT NULL AND (debounce_key IS NOT NULL OR singleton_key IS NOT NULL) THEN
        RAISE EXCEPTION 'give idempotency_key or a % key, not both', CASE WHEN debounce_key IS NULL THEN 'singleton' ELSE 'debounce' END
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'A singleton or debounce key already merges enqueues of the same key into one job.';
    END IF;
END $$;

-- Raises unless `value`, a limit named `what`, is NULL (no limit) or 1 or more.
CREATE OR REPLACE FUNCTION job._check_limit(what text, value int)
RETURNS void LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF value < 1 THEN
        RAISE EXCEPTION '% must be 1 or more (or NULL for no limit), got %', what, value
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END $$;

-- Creates the queue, or changes the settings of an existing one (audited either way).  Flow
-- control (NULL: no limit; see sql/flow.sql): `concurrency` jobs of the queue running at once,
-- `key_concurrency` per concurrency key; at most `rate_limit` starts per `rate_period`
-- (default 1 second) for the queue, `key_rate_limit` per `key_rate_period` for each key;
-- `fair`: claims take jobs round-robin across concurrency keys.
CREATE OR REPLACE FUNCTION job.create_queue(
    name text,
    max_retries int DEFAULT 5,
    backoff_base interval DEFAULT '1 second',
    backoff_max interval DEFAULT '60 seconds',
    jitter float8 DEFAULT 0.1,
    lease interval DEFAULT '5 minutes',
    idempotency_window interval DEFAULT '24 hours',
    retention interval DEFAULT '7 days',
    max_payload_bytes int DEFAULT NULL,
    concurrency int DEFAULT NULL,
    key_concurrency int DEFAULT NULL,
    rate_limit int DEFAULT NULL,
    rate_period interval DEFAULT NULL,
    key_rate_limit int DEFAULT NULL,
    key_rate_period interval DEFAULT NULL,
    fair boolean DEFAULT false
) RETURNS void LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
DECLARE
    before job.queues;
    after job.queues;
BEGIN
    PERFORM job._check_name('queue name', name);
    PERFORM job._check_not_null('max_retries', max_retries);
    IF max_retries < 0 THEN
        RAISE EXCEPTION 'max_retries must be 0 or more, got %', max_retries USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM job._check_interval('backoff_base', backoff_base, false);
    PERFORM job._check_interval('backoff_max', backoff_max, false);
    IF backoff_max < backoff_base THEN
        RAISE EXCEPTION 'backoff_max (%) must not be less than backoff_base (%)', backoff_max, backoff_base
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM job._check_not_null('jitter', jitter);
    IF jitter < 0 OR jitter > 1 OR jitter = 'NaN'::float8 THEN
        RAISE EXCEPTION 'jitter must be between 0 and 1, got %', jitter USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM job._check_interval('lease', lease, false);
    PERFORM job._check_interval('idempotency_window', idempotency_window, true);
    PERFORM job._check_interval('retention', retention, true);
    IF max_payload_bytes < 1 THEN
        RAISE EXCEPTION 'max_payload_bytes must be 1 or more (or NULL for no limit), got %', max_payload_bytes
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    PERFORM job._check_limit('concurrency', concurrency);
    PERFORM job._check_limit('key_concurrency', key_concurrency);
    PERFORM job._check_limit('rate_limit', rate_limit);
    PERFORM job._check_limit('key_rate_limit', key_rate_limit);
    IF rate_period IS NOT NULL AND rate_limit IS NULL THEN
        RAISE EXCEPTION 'rate_period needs a rate_limit' USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Give rate_limit (starts per rate_period) too, or leave rate_period out.';
    ELSIF key_rate_period IS NOT NULL AND key_rate_limit IS NULL THEN
        RAISE EXCEPTION 'key_rate_period needs a key_rate_limit' USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Give key_rate_limit (starts per key_rate_period and key) too, or leave key_rate_period out.';
    END IF;
    PERFORM job._check_not_null('fair', fair);
    IF rate_limit IS NOT NULL THEN
        rate_period := coalesce(rate_period, interval '1 second');
        PERFORM job._check_interval('rate_period', rate_period, false);
    END IF;
    IF key_rate_limit IS NOT NULL THEN
        key_rate_period := coalesce(key_rate_period, interval '1 second');
        PERFORM job._check_interval('key_rate_period', key_rate_period, false);
    END IF;

    SELECT * INTO before FROM job.queues q WHERE q.name = create_queue.name FOR UPDATE;
    INSERT INTO job.queues AS q (name, max_retries, backoff_base, backoff_max, jitter, lease,
                                 idempotency_window, retention, max_payload_bytes, concurrency,
                                 key_concurrency, rate_limit, rate_period, key_rate_limit, key_rate_period, fair)
    VALUES (name, max_retries, backoff_base, backoff_max, jitter, lease, idempotency_window, retention,
            max_payload_bytes, concurrency, key_concurrency, rate_limit, rate_period, key_rate_limit,
            key_rate_period, fair)
    ON CONFLICT ON CONSTRAINT queues_pkey DO UPDATE
       SET max_retries = EXCLUDED.max_retries, backoff_base = EXCLUDED.backoff_base,
           backoff_max = EXCLUDED.backoff_max, jitter = EXCLUDED.jitter, lease = EXCLUDED.lease,
           idempotency_window = EXCLUDED.idempotency_window, retention = EXCLUDED.retention,
           max_payload_bytes = EXCLUDED.max_payload_bytes, concurrency = EXCLUDED.concurrency,
           key_concurrency = EXCLUDED.key_concurrency, rate_limit = EXCLUDED.rate_limit,
           rate_period = EXCLUDED.rate_period, key_rate_limit = EXCLUDED.key_rate_limit,
           key_rate_period = EXCLUDED.key_rate_period, fair = EXCLUDED.fair, updated_at = now()
    RETURNING * INTO after;
    IF before.name IS NOT NULL AND (after.concurrency IS DISTINCT FROM before.concurrency
                                    OR after.key_concurrency IS DISTINCT FROM before.key_concurrency
                                    OR after.rate_limit IS DISTINCT FROM before.rate_limit
                                    OR after.key_rate_limit IS DISTINCT FROM before.key_rate_limit) THEN
        PERFORM job._wake_queue_on_commit(after.id);  -- a limit raised or lifted: look again
    END IF;
    IF after.concurrency IS NOT NULL THEN
        INSERT INTO job.concurrency_slots (queue, slot)
        SELECT after.name, g FROM generate_series(0, after.concurrency - 1) g
        ON CONFLICT DO NOTHING;
    END IF;
    IF before.name IS NULL THEN
        PERFORM job._audit('create_queue', to_jsonb(after) - '{id,paused,holds,serial_keys,flow_limited,created_at,updated_at}'::text[]);
    ELSIF to_jsonb(before) - '{created_at,updated_at}'::text[] <> to_jsonb(after) - '{created_at,updated_at}'::text[] THEN
        PERFORM job._audit('alter_queue', jsonb_build_object('name', name, 'before', to_jsonb(before) - '{id,name,paused,holds,serial_keys,flow_limited,created_at,updated_at}'::text[],
                                                             'after', to_jsonb(after) - '{id,name,paused,holds,serial_keys,flow_limited,created_at,updated_at}'::text[]));
    END IF;
END $$;

-- Enqueues one job; returns its id (or, for a known idempotency key, the existing job's; for a
-- singleton or debounce key whose job has not started, that job's, which takes this payload).
-- Flow-control keys (see flow.sql): `concurrency_key` (the queue's per-key limits and fair
-- turns), `order_key` (its jobs run one at a time, oldest first), `singleton_key` (one job
-- waits and one runs), `debounce_key` with `debounce` (the job starts once no enqueue of the
-- key came for that long) and `debounce_max_wait` (but no later than that after the first).
CREATE OR REPLACE FUNCTION job.enqueue(
    queue text,
    payload jsonb DEFAULT '{}',
    run_at timestamptz DEFAULT NULL,
    delay interval DEFAULT NULL,
    priority int DEFAULT 0,
    idempotency_key text DEFAULT NULL,
    max_retries int DEFAULT NULL,
    job_type text DEFAULT NULL,
    concurrency_key text DEFAULT NULL,
    order_key text DEFAULT NULL,
    singleton_key text DEFAULT NULL,
    debounce_key text DEFAULT NULL,
    debounce interval DEFAULT NULL,
    debounce_max_wait interval DEFAULT NULL
) RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    q record;
    start_at timestamptz := now();
    new_id bigint;
    existing_id bigint;
    keyed job.queues;
BEGIN
    -- A drop of this queue in progress makes this fail at once instead of waiting for it.
    PERFORM job._guard_queue(enqueue.queue);
    SELECT qs.id, qs.name, qs.max_retries, qs.idempotency_window, qs.max_payload_bytes INTO q
      FROM job.queues qs WHERE qs.name = enqueue.queue;
    IF NOT FOUND THEN
        PERFORM job._require_queue(enqueue.queue);  -- raises
    END IF;
    IF enqueue.payload IS NULL OR jsonb_typeof(enqueue.payload) <> 'object' THEN
        PERFORM job._check_payload('payload', enqueue.payload);
    END IF;
    IF pg_column_size(enqueue.payload) > q.max_payload_bytes THEN
        PERFORM job._check_payload_size(job._require_queue(q.name), 'payload', enqueue.payload);
    END IF;
    IF enqueue.delay IS NOT NULL THEN
        IF enqueue.run_at IS NOT NULL THEN
            RAISE EXCEPTION 'give run_at or delay, not both' USING ERRCODE = 'invalid_parameter_value';
        END IF;
        PERFORM job._check_interval('delay', enqueue.delay, true);
        start_at := now() + enqueue.delay;
    ELSIF enqueue.run_at IS NOT NULL THEN
        IF NOT isfinite(enqueue.run_at) THEN
            RAISE EXCEPTION 'run_at must be a finite time, got %', enqueue.run_at USING ERRCODE = 'invalid_parameter_value';
        END IF;
        start_at := enqueue.run_at;
    END IF;
    IF enqueue.priority IS NULL THEN
        PERFORM job._check_not_null('priority', enqueue.priority);
    END IF;
    IF enqueue.max_retries < 0 THEN
        RAISE EXCEPTION 'max_retries must be 0 or more, got %', enqueue.max_retries USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF enqueue.job_type IS NOT NULL AND job._name_problem(enqueue.job_type, 128) IS NOT NULL THEN
        PERFORM job._check_name('job_type', enqueue.job_type);
    END IF;
    IF num_nonnulls(enqueue.concurrency_key, enqueue.order_key, enqueue.singleton_key, enqueue.debounce_key,
                    enqueue.debounce, enqueue.debounce_max_wait) > 0 THEN
        -- Flow control (see flow.sql).
        keyed := job._require_queue(q.name);
        PERFORM job._check_job_keys(keyed, enqueue.concurrency_key, enqueue.order_key, enqueue.singleton_key,
                                    enqueue.debounce_key, enqueue.debounce, enqueue.debounce_max_wait,
                                    enqueue.idempotency_key, enqueue.run_at, enqueue.delay);
        IF enqueue.debounce_key IS NOT NULL THEN
            start_at := now() + enqueue.debounce;
        END IF;
        IF (enqueue.order_key IS NOT NULL OR enqueue.singleton_key IS NOT NULL) AND NOT keyed.serial_keys THEN
            UPDATE job.queues qs SET serial_keys = true WHERE qs.name = q.name;  -- claims now look at keys
        END IF;
        IF enqueue.singleton_key IS NOT NULL OR enqueue.debounce_key IS NOT NULL THEN
            existing_id := job._replace_pending(q.name, enqueue.singleton_key, enqueue.debounce_key,
                                                enqueue.payload, start_at, enqueue.debounce_max_wait);
            IF existing_id IS NOT NULL THEN
                RETURN existing_id;
            END IF;
        END IF;
    END IF;

    IF enqueue.idempotency_key IS NOT NULL THEN
        IF job._name_problem(enqueue.idempotency_key, 512) IS NOT NULL THEN
            PERFORM job._check_name('idempotency_key', enqueue.idempotency_key, 512);
        END IF;
        -- The primary key arbitrates: a racing enqueue of the same key waits for ours to
        -- commit or roll back.  An expired key is taken over by the new job.
        new_id := nextval('job.job_id_seq');
        INSERT INTO job.idempotency_keys AS k (queue, key, job_id, expires_at)
        VALUES (q.name, enqueue.idempotency_key, new_id, now() + q.idempotency_window)
        ON CONFLICT (queue, key) DO UPDATE
           SET job_id = EXCLUDED.job_id, expires_at = EXCLUDED.expires_at
         WHERE k.expires_at <= now();
        IF NOT FOUND THEN
            SELECT k.job_id INTO existing_id FROM job.idempotency_keys k
             WHERE k.queue = q.name AND k.key = enqueue.idempotency_key;
            RETURN existing_id;
        END IF;
    END IF;

    INSERT INTO job.live_jobs (id, run_at, priority, max_retries, state, queue, job_type,
                               idempotency_key, payload, concurrency_key, order_key, singleton_key, debounce_key)
    VALUES (coalesce(new_id, nextval('job.job_id_seq')), start_at, enqueue.priority,
            coalesce(enqueue.max_retries, q.max_retries),
            CASE WHEN start_at <= now() THEN 'waiting' ELSE 'scheduled' END,
            q.name, enqueue.job_type, enqueue.idempotency_key, enqueue.payload, enqueue.concurrency_key,
            enqueue.order_key, enqueue.singleton_key, enqueue.debounce_key)
    RETURNING id INTO new_id;
    IF start_at <= now() THEN
        PERFORM job._wake_queue_on_commit(q.id);
    ELSE
        PERFORM job._due_on_commit(start_at);  -- the worker makes it ready when due, and wakes consumers
    END IF;
    RETURN new_id;
END $$;

-- Many jobs in one statement (all of one concurrency or order key, if given: an order key runs
-- them in payload order); ids come back in payload order.
CREATE OR REPLACE FUNCTION job.enqueue_many(
    queue text,
    payloads jsonb[],
    priority int DEFAULT 0,
    job_type text DEFAULT NULL,
    concurrency_key text DEFAULT NULL,
    order_key text DEFAULT NULL
) RETURNS SETOF bigint LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    q job.queues;
    bad record;
BEGIN
    PERFORM job._guard_queue(enqueue_many.queue);
    q := job._require_queue(enqueue_many.queue);
    PERFORM job._check_not_null('payloads', enqueue_many.payloads);
    IF array_ndims(enqueue_many.payloads) > 1 THEN
        RAISE EXCEPTION 'payloads must be a one-dimensional array, got % dimensions', array_ndims(enqueue_many.payloads)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM job._check_not_null('priority', enqueue_many.priority);
    IF enqueue_many.job_type IS NOT NULL THEN
        PERFORM job._check_name('job_type', enqueue_many.job_type);
    END IF;
    IF enqueue_many.concurrency_key IS NOT NULL OR enqueue_many.order_key IS NOT NULL THEN
        PERFORM job._check_job_keys(q, enqueue_many.concurrency_key, enqueue_many.order_key, NULL, NULL, NULL, NULL,
                                    NULL, NULL, NULL);
        IF enqueue_many.order_key IS NOT NULL AND NOT q.serial_keys THEN
            UPDATE job.queues qs SET serial_keys = true WHERE qs.name = q.name;  -- claims now look at keys
        END IF;
    END IF;
    SELECT p.payload, p.ord INTO bad
      FROM unnest(enqueue_many.payloads) WITH ORDINALITY AS p(payload, ord)
     WHERE p.payload IS NULL OR jsonb_typeof(p.payload) <> 'object'
     ORDER BY p.ord LIMIT 1;
    IF FOUND THEN
        PERFORM job._check_payload(format('payloads[%s]', bad.ord), bad.payload);
    END IF;
    IF q.max_payload_bytes IS NOT NULL THEN
        SELECT p.payload, p.ord INTO bad
          FROM unnest(enqueue_many.payloads) WITH ORDINALITY AS p(payload, ord)
         WHERE pg_column_size(p.payload) > q.max_payload_bytes
         ORDER BY p.ord LIMIT 1;
        IF FOUND THEN
            PERFORM job._check_payload_size(q, format('payloads[%s]', bad.ord), bad.payload);
        END IF;
    END IF;
    IF cardinality(enqueue_many.payloads) = 0 THEN
        RETURN;
    END IF;

    -- ids are drawn in payload order (the insert consumes the ordered rows one by one).
    RETURN QUERY
    WITH inserted AS (
        INSERT INTO job.live_jobs (run_at, priority, max_retries, state, queue, job_type, payload, concurrency_key,
                                   order_key)
        SELECT now(), enqueue_many.priority, q.max_retries, 'waiting', q.name, enqueue_many.job_type, p.payload,
               enqueue_many.concurrency_key, enqueue_many.order_key
          FROM unnest(enqueue_many.payloads) WITH ORDINALITY AS p(payload, ord)
         ORDER BY p.ord
        RETURNING id
    )
    SELECT i.id FROM inserted i ORDER BY i.id;
    PERFORM job._wake_queue_on_commit(q.id);
END $$;

-- For an enqueue with a singleton or debounce key: the job of that key that has not started
-- yet, given `payload` (the last one wins) and a new start (`start_at`; for a debounce, no
-- later than `max_wait` after the job's first enqueue), or NULL when there is none and the
-- caller adds one.  Enqueues of the key take turns until commit, so the later one sees the
-- job the earlier one added.  A job that is being claimed has started: it is left alone.
CREATE OR REPLACE FUNCTION job._replace_pending(queue text, singleton_key text, debounce_key text, payload jsonb,
                                     start_at timestamptz, max_wait interval)
RETURNS bigint LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
DECLARE
    replaced record;
BEGIN
    PERFORM job._lock_enqueue_key(queue, CASE WHEN singleton_key IS NULL THEN 'd' ELSE 's' END,
                                  coalesce(singleton_key, debounce_key));
    UPDATE job.live_jobs l
       SET payload = _replace_pending.payload, run_at = x.new_run_at,
           state = CASE WHEN x.new_run_at <= now() THEN 'waiting' ELSE 'scheduled' END
      FROM (SELECT p.id,
                   CASE WHEN max_wait IS NULL THEN start_at ELSE least(start_at, p.enqueued_at + max_wait) END AS new_run_at
              -- The newest not-yet-started job of the key: a range of the key's index (one of
              -- the two keys is NULL, and its branch reads nothing).  One statement with OR is
              -- planned as a walk of the primary key.
              FROM ((SELECT p.id, p.enqueued_at FROM job.live_jobs p
                      WHERE p.queue = _replace_pending.queue AND p.singleton_key = _replace_pending.singleton_key
                        AND p.state IN ('waiting', 'scheduled') AND p.attempt = 0
                      ORDER BY p.id DESC LIMIT 1)
                    UNION ALL
                    (SELECT p.id, p.enqueued_at FROM job.live_jobs p
                      WHERE p.queue = _replace_pending.queue AND p.debounce_key = _replace_pending.debounce_key
                        AND p.state IN ('waiting', 'scheduled') AND p.attempt = 0
                      ORDER BY p.id DESC LIMIT 1)) p) x
     WHERE l.id = x.id AND l.state IN ('waiting', 'scheduled') AND l.attempt = 0
    RETURNING l.id, l.state, l.run_at, (SELECT qs.id FROM job.queues qs WHERE qs.name = l.queue) AS queue_id
    INTO replaced;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF replaced.state = 'waiting' THEN
        PERFORM job._wake_queue_on_commit(replaced.queue_id);
    ELSE
        PERFORM job._due_on_commit(replaced.run_at);
    END IF;
    RETURN replaced.id;
END $$;

-- The flow-control row of (queue, key, shard), locked until this transaction ends; made on
-- first use.
CREATE OR REPLACE FUNCTION job._rate_window(queue text, key text, shard smallint DEFAULT 0)
RETURNS job.rate_windows LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    w job.rate_windows;
BEGIN
    SELECT * INTO w FROM job.rate_windows r
     WHERE r.queue = _rate_window.queue AND r.key = _rate_window.key AND r.shard = _rate_window.shard FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO job.rate_windows AS r (queue, key, shard)
        VALUES (_rate_window.queue, _rate_window.key, _rate_window.shard)
        ON CONFLICT DO NOTHING;
        SELECT * INTO w FROM job.rate_windows r
         WHERE r.queue = _rate_window.queue AND r.key = _rate_window.key AND r.shard = _rate_window.shard FOR UPDATE;
    END IF;
    RETURN w;
END $$;

-- How many of `wanted` jobs may start now under the window of (queue, key, shard) ('': the
-- queue's own) for a limit of `rate_limit` starts per `rate_period` (NULL: no limit, only a
-- hold), and 0 while a hold lasts.  With `record`, they are counted as started.  When none may
-- start, the scheduler wakes the queue's consumers once one may.
CREATE OR REPLACE FUNCTION job._rate_room(queue text, key text, rate_limit int, rate_period interval,
                               wanted int, record boolean, shard smallint DEFAULT 0)
RETURNS int LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    w job.rate_windows;
    t record;
    granted int;
    wake timestamptz;
BEGIN
    IF rate_limit IS NULL THEN
        -- Holds only: nothing to count, so nothing to lock or make.
        SELECT * INTO w FROM job.rate_windows r
         WHERE r.queue = _rate_room.queue AND r.key = _rate_room.key AND r.shard = 0;
        IF NOT FOUND OR w.held_until IS NULL OR w.held_until <= now() THEN
            RETURN wanted;
        END IF;
        RETURN 0;  -- rate_limit_pause set the scheduler's wake-up
    END IF;
    w := job._rate_window(queue, key, shard);
    IF w.held_until > now() THEN
        RETURN 0;
    END IF;
    SELECT * INTO t FROM job._rate_take(w.base, w.counts, (extract(epoch FROM rate_period) * 1000)::bigint,
                                         rate_limit, wanted, (extract(epoch FROM now()) * 1000)::bigint) t;
    granted := t.granted;
    IF record AND granted > 0 THEN
        UPDATE job.rate_windows r SET base = t.base, counts = t.counts
         WHERE r.queue = _rate_room.queue AND r.key = _rate_room.key AND r.shard = _rate_room.shard;
    ELSIF granted = 0 THEN
        wake := to_timestamp(t.next_at_ms / 1000.0);
        IF w.wake_at IS NULL OR w.wake_at > wake THEN
            UPDATE job.rate_windows r SET wake_at = wake
             WHERE r.queue = _rate_room.queue AND r.key = _rate_room.key AND r.shard = _rate_room.shard;
            PERFORM job._due_on_commit(wake);
        END IF;
    END IF;
    RETURN granted;
END $$;

-- For a claim of queue `q` with a rate limit: one of the queue's windows (its `shard`, with
-- `shard_limit`, its share of the limit) and how many of `wanted` jobs it lets start now
-- (`room`), the window locked until this transaction ends.  Windows another claim holds are
-- skipped, so claims in different transactions count side by side; the sum of the shares is
-- the limit, so no window of one period ever holds more starts in all.  A claim waits for a
-- window only when other claims hold every one.
CREATE OR REPLACE FUNCTION job._queue_rate_room(q job.queues, wanted int, OUT shard smallint, OUT shard_limit int, OUT room int)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    -- One window per 16 starts of the limit, 8 at most: a claim takes at most its window's
    -- share at once, so small limits keep one window (claims of a queue limited to a few
    -- starts a second need no parallel counting) and a share is never below 16.
    shards int := greatest(1, least(8, q.rate_limit / 16));
    s smallint;
BEGIN
    room := 0;
    IF NOT EXISTS (SELECT 1 FROM job.rate_windows r WHERE r.queue = q.name AND r.key = '' AND r.shard = shards - 1) THEN
        INSERT INTO job.rate_windows (queue, key, shard)
        SELECT q.name, '', g FROM generate_series(0, shards - 1) g
        ON CONFLICT DO NOTHING;
    END IF;
    FOR s IN SELECT r.shard FROM job.rate_windows r
              WHERE r.queue = q.name AND r.key = '' AND r.shard < shards ORDER BY random() LOOP
        PERFORM FROM job.rate_windows r
          WHERE r.queue = q.name AND r.key = '' AND r.shard = s FOR UPDATE SKIP LOCKED;
        CONTINUE WHEN NOT FOUND;
        shard := s;
        shard_limit := q.rate_limit / shards + (s < q.rate_limit % shards)::int;
        room := job._rate_room(q.name, '', shard_limit, q.rate_period, wanted, false, s);
        EXIT WHEN room > 0;
    END LOOP;
    IF shard IS NULL THEN
        shard := floor(random() * shards)::smallint;  -- every window is held: wait for one
        shard_limit := q.rate_limit / shards + (shard < q.rate_limit % shards)::int;
        room := job._rate_room(q.name, '', shard_limit, q.rate_period, wanted, false, shard);
    END IF;
END $$;

-- Up to `wanted` of queue `q`'s concurrency slots that are free (their job no longer holds a
-- lease), locked by this transaction: other claims skip them, and take other slots.  Each is
-- tested in a statement of its own, after its row is locked, so that it sees the commit of
-- the claim that last took it.
CREATE OR REPLACE FUNCTION job._take_slots(q job.queues, wanted int)
RETURNS int[] LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    slots refcursor;
    s record;
    taken int[] := '{}';
BEGIN
    IF NOT EXISTS (SELECT 1 FROM job.concurrency_slots cs WHERE cs.queue = q.name AND cs.slot = q.concurrency - 1) THEN
        -- Made by create_queue; made here too for a limit raised since (or rows not restored).
        INSERT INTO job.concurrency_slots (queue, slot)
        SELECT q.name, g FROM generate_series(0, q.concurrency - 1) g
        ON CONFLICT DO NOTHING;
    END IF;
    -- One row at a time (FETCH): a FOR loop would lock ten slots ahead.
    OPEN slots NO SCROLL FOR
        SELECT cs.slot, cs.job_id FROM job.concurrency_slots cs
         WHERE cs.queue = q.name AND cs.slot < q.concurrency
         ORDER BY cs.slot
         FOR UPDATE SKIP LOCKED;
    LOOP
        FETCH slots INTO s;
        EXIT WHEN NOT FOUND;
        CONTINUE WHEN s.job_id = ANY (ARRAY(SELECT l.id FROM job.live_jobs l
                                             WHERE l.id = s.job_id AND l.state = 'running'
                                               AND l.lease_expires_at > now()));
        taken := taken || s.slot;
        EXIT WHEN cardinality(taken) >= wanted;
    END LOOP;
    CLOSE slots;
    RETURN taken;
END $$;

-- Whether waiting job `job_id` of queue `q`, with these keys, may start now, `admitted`
-- holding the concurrency keys of the jobs this claim already took.  NULL when it may: it is
-- then locked for the caller.  Otherwise what refused it, which the caller remembers for the
-- rest of its claim: 'o:' or 's:' and the key, when the oldest job of its order or singleton
-- key runs or waits out a retry (it holds the key's place); 'c:' and the key,
-- when another transaction is claiming the concurrency key (this one then holds it until it
-- ends: src/flow.rs), key_concurrency of its jobs hold a lease, or its window is full or held;
-- '' when another claim has the job, or an older job of its order or singleton key waits (the
-- claim takes that one when it gets to it).  Each count is a statement of its own, after the key's
-- lock, so it sees every claim of the key that committed.
CREATE OR REPLACE FUNCTION job._admit(q job.queues, job_id bigint, concurrency_key text, order_key text,
                           singleton_key text, admitted text[])
RETURNS text LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    older text;
BEGIN
    -- (A job has one of the two keys at most: _check_job_keys.  Two statements, each a range of
    -- its key's index: one with OR is planned as a walk of the primary key.)
    IF order_key IS NOT NULL THEN
        SELECT o.state INTO older FROM job.live_jobs o
         WHERE o.queue = q.name AND o.order_key = _admit.order_key AND o.id < job_id ORDER BY o.id LIMIT 1;
    ELSIF singleton_key IS NOT NULL THEN
        SELECT o.state INTO older FROM job.live_jobs o
         WHERE o.queue = q.name AND o.singleton_key = _admit.singleton_key AND o.id < job_id ORDER BY o.id LIMIT 1;
    END IF;
    IF older IS NOT NULL THEN
        -- An older job that runs or waits out a retry holds the key for this claim; one that
        -- waits goes first, when the claim gets to it.
        RETURN CASE WHEN older = 'waiting' THEN ''
                    WHEN order_key IS NOT NULL THEN 'o:' || order_key
                    ELSE 's:' || singleton_key END;
    END IF;
    IF concurrency_key IS NOT NULL AND (q.key_concurrency IS NOT NULL OR q.key_rate_limit IS NOT NULL OR q.holds) THEN
        IF NOT job._try_lock_key(q.name, concurrency_key) THEN
            RETURN 'c:' || concurrency_key;
        END IF;
        IF q.key_concurrency IS NOT NULL
           AND cardinality(array_positions(admitted, concurrency_key))
               + (SELECT count(*) FROM (SELECT 1 FROM job.live_jobs r
                                         WHERE r.queue = q.name AND r.concurrency_key = _admit.concurrency_key
                                           AND r.state = 'running' AND r.concurrency_key IS NOT NULL
                                           AND r.lease_expires_at > now()
                                         LIMIT q.key_concurrency) running) >= q.key_concurrency THEN
            RETURN 'c:' || concurrency_key;
        END IF;
    END IF;
    PERFORM FROM job.live_jobs n WHERE n.id = job_id AND n.state = 'waiting' FOR UPDATE SKIP LOCKED;
    IF NOT FOUND THEN
        RETURN '';
    END IF;
    IF concurrency_key IS NOT NULL AND (q.key_rate_limit IS NOT NULL OR q.holds)
       AND job._rate_room(q.name, concurrency_key, q.key_rate_limit, q.key_rate_period, 1, true) = 0 THEN
        RETURN 'c:' || concurrency_key;
    END IF;
    RETURN NULL;
END $$;

-- A batch claim of a queue whose only limit per key is key_concurrency, in a few set-based
-- statements instead of a test per job (a batch of 100 from 1,000 keys made about 780 tests
-- and took 0.5 s under 8 claimers): the front of the queue in claim order (1,000 + 10 × wanted
-- jobs at most) without the keys at their limit, and at most key_concurrency jobs of each
-- other key, whose keys are tried in that order until `wanted` are taken (a key another
-- claim holds is left to it); the room of each key counted in a statement of its own, after
-- its lock; the candidates within their key's room locked SKIP LOCKED, up to `wanted`.
-- `crowded`: every job of the front belongs to a key at its limit, and more lie beyond it
-- (job._pick_limited then goes key by key).  A key whose last job another claim committed a
-- moment after the statement began turns out full once locked: the claim comes back short
-- rather than reading the front again (three rounds of it halved the throughput).
CREATE OR REPLACE FUNCTION job._pick_by_key_sets(q job.queues, wanted int, OUT picked bigint[], OUT crowded boolean)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    budget int := 1000 + 10 * wanted;
    seen bigint;
    open_count bigint;
    cand_ids bigint[];
    cand_keys text[];
    locked text[];
    rooms jsonb;
BEGIN
    picked := '{}';
    WITH front AS (
        SELECT n.id, n.concurrency_key, row_number() OVER (ORDER BY n.priority DESC, n.run_at, n.id) AS ord
          FROM (SELECT n.id, n.concurrency_key, n.priority, n.run_at FROM job.live_jobs n
                 WHERE n.queue = q.name AND n.state = 'waiting'
                 ORDER BY n.priority DESC, n.run_at, n.id
                 LIMIT budget) n
    ), busy AS (
        SELECT r.concurrency_key AS key FROM job.live_jobs r
         WHERE r.queue = q.name AND r.state = 'running' AND r.concurrency_key IS NOT NULL
           AND r.lease_expires_at > now()
         GROUP BY r.concurrency_key
        HAVING count(*) >= q.key_concurrency
    ), open AS (
        SELECT f.id, f.concurrency_key, f.ord,
               row_number() OVER (PARTITION BY f.concurrency_key ORDER BY f.ord) AS nth
          FROM front f LEFT JOIN busy b ON b.key = f.concurrency_key
         WHERE b.key IS NULL
    )
    SELECT (SELECT count(*) FROM front), (SELECT count(*) FROM open),
           array_agg(o.id ORDER BY o.ord), array_agg(o.concurrency_key ORDER BY o.ord)
      INTO seen, open_count, cand_ids, cand_keys
      FROM (SELECT o.id, o.concurrency_key, o.ord
              FROM (SELECT o.id, o.concurrency_key, o.ord FROM open o
                     WHERE o.concurrency_key IS NULL OR o.nth <= q.key_concurrency
                     ORDER BY o.ord) o
             -- Tried in claim order, as the rows come, until enough are taken: a key another
             -- claim holds is passed over, so claims running side by side spread over keys.
             WHERE o.concurrency_key IS NULL OR job._try_lock_key(q.name, o.concurrency_key)
             LIMIT wanted) o;
    crowded := seen >= budget AND open_count = 0;
    IF cand_ids IS NULL THEN
        RETURN;
    END IF;
    SELECT coalesce(array_agg(DISTINCT k), '{}') INTO locked FROM unnest(cand_keys) k WHERE k IS NOT NULL;
    SELECT coalesce(jsonb_object_agg(l.k, q.key_concurrency - r.n), '{}') INTO rooms
      FROM unnest(locked) l(k)
     CROSS JOIN LATERAL (SELECT count(*) AS n FROM job.live_jobs r
                          WHERE r.queue = q.name AND r.concurrency_key = l.k AND r.state = 'running'
                            AND r.concurrency_key IS NOT NULL AND r.lease_expires_at > now()) r;
    SELECT coalesce(array_agg(n.id), '{}') INTO picked
      FROM (SELECT n.id FROM job.live_jobs n
             WHERE n.id = ANY (ARRAY(SELECT c.id
                                       FROM (SELECT c.id, c.key, c.ord,
                                                    row_number() OVER (PARTITION BY c.key ORDER BY c.ord) AS nth
                                               FROM unnest(cand_ids, cand_keys) WITH ORDINALITY AS c(id, key, ord)) c
                                      WHERE c.key IS NULL OR c.nth <= (rooms ->> c.key)::int))
               AND n.state = 'waiting'
             ORDER BY n.priority DESC, n.run_at, n.id
             LIMIT wanted
             FOR UPDATE SKIP LOCKED) n;
END $$;

-- Up to `batch` waiting jobs of queue `q` that its limits let start now, locked for the caller
-- to claim: in claim order, or, in a fair queue, one per concurrency key in turn.  A job whose
-- key is at its limit is stepped over, so a saturated key never holds back the others:
-- - the keys at their key_concurrency are read first, in one range of the running-key index,
--   and their jobs are stepped over without a test; a key refused during the claim joins them
--   (a jsonb object used as a set: a lookup is a binary search, where an array's was a scan);
-- - a claim in claim order reads at most 1,000 + 10 × batch candidates.  Past that (a front
--   made of saturated keys' backlogs, or keys other claims took meanwhile) it goes key by key
--   as a fair claim does, once round: each concurrency key's best job, then each order or
--   singleton key's oldest, so a job behind a long saturated backlog is still found, at a
--   cost that grows with the number of keys, not of jobs.
CREATE OR REPLACE FUNCTION job._pick_limited(q job.queues, batch int)
RETURNS bigint[] LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    wanted int := batch;
    slots int[];
    rate record;
    picked bigint[] := '{}';
    admitted text[] := '{}';   -- the concurrency key of each keyed job picked
    refused jsonb := '{}';     -- 'c:', 'o:', 's:' and the key: held back for this claim
    candidates refcursor;
    c record;
    refusal text;
    examined int := 0;
    key_by_key boolean;
    general boolean;
    fair_key text;
    idle_rounds int := 0;
    picked_before int := 0;
BEGIN
    IF q.concurrency IS NOT NULL THEN
        slots := job._take_slots(q, wanted);
        wanted := cardinality(slots);
    END IF;
    IF wanted > 0 AND q.holds THEN
        wanted := job._rate_room(q.name, '', NULL, NULL, wanted, false);  -- a hold of the queue
    END IF;
    IF wanted > 0 AND q.rate_limit IS NOT NULL THEN
        rate := job._queue_rate_room(q, wanted);
        wanted := least(wanted, rate.room);
    END IF;
    IF wanted <= 0 THEN
        RETURN picked;  -- woken when a job finishes, or by the scheduler when the window allows
    END IF;
    IF NOT q.fair AND NOT q.serial_keys
       AND (q.key_concurrency IS NULL AND q.key_rate_limit IS NULL AND NOT q.holds) THEN
        SELECT coalesce(array_agg(n.id), '{}') INTO picked
          FROM (SELECT n.id FROM job.live_jobs n
                 WHERE n.queue = q.name AND n.state = 'waiting'
                 ORDER BY n.priority DESC, n.run_at, n.id
                 LIMIT wanted
                 FOR UPDATE SKIP LOCKED) n;
    ELSE
        general := true;
        IF wanted > 1 AND q.key_concurrency IS NOT NULL AND NOT q.fair AND NOT q.serial_keys
           AND q.key_rate_limit IS NULL AND NOT q.holds THEN
            -- A batch: by key sets.  (One job is found as fast job by job, and never missed
            -- because a key's last claim committed a moment after the statement began.)
            SELECT k.picked, k.crowded AND cardinality(k.picked) = 0 INTO picked, general
              FROM job._pick_by_key_sets(q, wanted) k;
        END IF;
        IF general THEN
            IF q.key_concurrency IS NOT NULL THEN
                SELECT coalesce(jsonb_object_agg('c:' || r.concurrency_key, true), '{}') INTO refused
                  FROM (SELECT r.concurrency_key FROM job.live_jobs r
                         WHERE r.queue = q.name AND r.state = 'running' AND r.concurrency_key IS NOT NULL
                           AND r.lease_expires_at > now()
                         GROUP BY r.concurrency_key
                        HAVING count(*) >= q.key_concurrency) r;
            END IF;
            -- Candidates in claim order from the front of the queue (at most 1,000 + 10 × batch,
            -- read without locking: each job is locked once admitted); past them, or in a fair
            -- queue from the start, key by key: from the key after the one this session served
            -- last (a fair queue; else from the first), each key's first job in claim order, and
            -- past the last key one job without a key, then from the first key again.
            key_by_key := q.fair;
            IF NOT q.fair THEN
                -- The LIMIT also makes it a range of the claim index: a cursor without one is
                -- planned for its first 10% (cursor_tuple_fraction), which for a large backlog
                -- is a sort of the whole queue.
                OPEN candidates NO SCROLL FOR
                    SELECT n.id, n.concurrency_key, n.order_key, n.singleton_key FROM job.live_jobs n
                     WHERE n.queue = q.name AND n.state = 'waiting'
                     ORDER BY n.priority DESC, n.run_at, n.id
                     LIMIT 1000 + 10 * wanted;
            END IF;
            fair_key := CASE WHEN q.fair THEN job._fair_cursor(q.id) END;
            LOOP
                IF NOT key_by_key THEN
                    FETCH candidates INTO c;
                    IF NOT FOUND THEN
                        EXIT WHEN examined < 1000 + 10 * wanted;  -- that was the whole queue
                        key_by_key := true;
                        CONTINUE;
                    END IF;
                    examined := examined + 1;
                    CONTINUE WHEN (c.concurrency_key IS NOT NULL AND refused ? ('c:' || c.concurrency_key))
                               OR (c.order_key IS NOT NULL AND refused ? ('o:' || c.order_key))
                               OR (c.singleton_key IS NOT NULL AND refused ? ('s:' || c.singleton_key));
                ELSE
                    IF fair_key IS NULL THEN
                        -- Round the keys again while the last round took a job (and once more
                        -- after a round begun after the cursor).
                        idle_rounds := CASE WHEN cardinality(picked) = picked_before THEN idle_rounds + 1 ELSE 0 END;
                        EXIT WHEN idle_rounds >= 2;
                        picked_before := cardinality(picked);
                    END IF;
                    SELECT n.concurrency_key INTO fair_key FROM job.live_jobs n
                     WHERE n.queue = q.name AND n.state = 'waiting' AND n.concurrency_key IS NOT NULL
                       AND n.concurrency_key > coalesce(fair_key, '')
                     ORDER BY n.concurrency_key LIMIT 1;
                    IF NOT FOUND THEN
                        fair_key := NULL;
                        SELECT n.id, n.concurrency_key, n.order_key, n.singleton_key INTO c FROM job.live_jobs n
                         WHERE n.queue = q.name AND n.state = 'waiting' AND n.concurrency_key IS NULL
                           AND n.id <> ALL (picked)
                         ORDER BY n.priority DESC, n.run_at, n.id LIMIT 1
                         FOR UPDATE SKIP LOCKED;
                        CONTINUE WHEN NOT FOUND;
                    ELSE
                        CONTINUE WHEN refused ? ('c:' || fair_key);
                        SELECT n.id, n.concurrency_key, n.order_key, n.singleton_key INTO c FROM job.live_jobs n
                         WHERE n.queue = q.name AND n.state = 'waiting' AND n.concurrency_key = fair_key
                           AND n.id <> ALL (picked)
                         ORDER BY n.priority DESC, n.run_at, n.id LIMIT 1;
                        CONTINUE WHEN NOT FOUND;
                    END IF;
                END IF;
                refusal := job._admit(q, c.id, c.concurrency_key, c.order_key, c.singleton_key, admitted);
                IF refusal IS NOT NULL THEN
                    IF refusal <> '' THEN
                        refused := refused || jsonb_build_object(refusal, true);
                    END IF;
                    CONTINUE;
                END IF;
                picked := picked || c.id;
                admitted := admitted || c.concurrency_key;
                EXIT WHEN cardinality(picked) >= wanted;
            END LOOP;
            IF NOT q.fair THEN
                CLOSE candidates;
            ELSE
                PERFORM job._move_fair_cursor(q.id, fair_key);
            END IF;
            IF key_by_key AND q.serial_keys AND cardinality(picked) < wanted THEN
                -- Each order or singleton key's oldest job, when it waits: a loose scan of each key
                -- index (one probe per key), so a job behind another key's long backlog is found.
                FOR c IN
                    WITH RECURSIVE order_keys AS (
                        (SELECT o.order_key AS key FROM job.live_jobs o
                          WHERE o.queue = q.name AND o.order_key IS NOT NULL ORDER BY o.order_key LIMIT 1)
                        UNION ALL
                        SELECT (SELECT o.order_key FROM job.live_jobs o
                                 WHERE o.queue = q.name AND o.order_key > k.key ORDER BY o.order_key LIMIT 1)
                          FROM order_keys k WHERE k.key IS NOT NULL
                    ), singleton_keys AS (
                        (SELECT o.singleton_key AS key FROM job.live_jobs o
                          WHERE o.queue = q.name AND o.singleton_key IS NOT NULL ORDER BY o.singleton_key LIMIT 1)
                        UNION ALL
                        SELECT (SELECT o.singleton_key FROM job.live_jobs o
                                 WHERE o.queue = q.name AND o.singleton_key > k.key ORDER BY o.singleton_key LIMIT 1)
                          FROM singleton_keys k WHERE k.key IS NOT NULL
                    )
                    SELECT h.id, h.concurrency_key, h.order_key, h.singleton_key
                      FROM order_keys k
                     CROSS JOIN LATERAL (SELECT o.id, o.state, o.concurrency_key, o.order_key, o.singleton_key
                                           FROM job.live_jobs o WHERE o.queue = q.name AND o.order_key = k.key
                                          ORDER BY o.id LIMIT 1) h
                     WHERE h.state = 'waiting' AND h.id <> ALL (picked)
                    UNION ALL
                    SELECT h.id, h.concurrency_key, h.order_key, h.singleton_key
                      FROM singleton_keys k
                     CROSS JOIN LATERAL (SELECT o.id, o.state, o.concurrency_key, o.order_key, o.singleton_key
                                           FROM job.live_jobs o WHERE o.queue = q.name AND o.singleton_key = k.key
                                          ORDER BY o.id LIMIT 1) h
                     WHERE h.state = 'waiting' AND h.id <> ALL (picked)
                LOOP
                    CONTINUE WHEN c.concurrency_key IS NOT NULL AND refused ? ('c:' || c.concurrency_key);
                    IF job._admit(q, c.id, c.concurrency_key, c.order_key, c.singleton_key, admitted) IS NULL THEN
                        picked := picked || c.id;
                        admitted := admitted || c.concurrency_key;
                        EXIT WHEN cardinality(picked) >= wanted;
                    END IF;
                END LOOP;
            END IF;
        END IF;
    END IF;
    IF q.concurrency IS NOT NULL AND cardinality(picked) > 0 THEN
        UPDATE job.concurrency_slots cs SET job_id = picked[array_position(slots, cs.slot)]
         WHERE cs.queue = q.name AND cs.slot = ANY (slots[1:cardinality(picked)]);
    END IF;
    IF q.rate_limit IS NOT NULL AND cardinality(picked) > 0 THEN
        PERFORM job._rate_room(q.name, '', rate.shard_limit, q.rate_period, cardinality(picked), true, rate.shard);
    END IF;
    RETURN picked;
END $$;

-- For job.next_due on a queue with limits and waiting jobs: now when one of them may start,
-- else the earliest time that may change (a window or hold ends, a lease runs out; a job
-- finishing sooner wakes LISTENers, and a poller looks again after its poll interval).
CREATE OR REPLACE FUNCTION job._flow_next_start(q job.queues)
RETURNS timestamptz LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    queue_wake timestamptz;
BEGIN
    SELECT min(r.wake_at) INTO queue_wake FROM job.rate_windows r
     WHERE r.queue = q.name AND r.key = '' AND r.wake_at > now();
    IF queue_wake IS NULL
       AND (q.concurrency IS NULL
            OR (SELECT count(*) FROM (SELECT 1 FROM job.live_jobs l WHERE l.queue = q.name AND l.state = 'running'
                                       LIMIT q.concurrency) r) < q.concurrency)
       AND EXISTS (SELECT 1 FROM job.live_jobs n
                    WHERE n.queue = q.name AND n.state = 'waiting'
                      AND (n.order_key IS NULL
                           OR NOT EXISTS (SELECT 1 FROM job.live_jobs o
                                           WHERE o.queue = q.name AND o.order_key = n.order_key AND o.id < n.id))
                      AND (n.singleton_key IS NULL
                           OR NOT EXISTS (SELECT 1 FROM job.live_jobs o
                                           WHERE o.queue = q.name AND o.singleton_key = n.singleton_key AND o.id < n.id))
                      AND (n.concurrency_key IS NULL
                           OR ((q.key_concurrency IS NULL
                                OR (SELECT count(*) FROM job.live_jobs r
                                     WHERE r.queue = q.name AND r.concurrency_key = n.concurrency_key
                                       AND r.state = 'running' AND r.concurrency_key IS NOT NULL
                                       AND r.lease_expires_at > now()) < q.key_concurrency)
                               AND NOT EXISTS (SELECT 1 FROM job.rate_windows w
                                                WHERE w.queue = q.name AND w.key = n.concurrency_key
                                                  AND w.wake_at > now())))) THEN
        RETURN now();
    END IF;
    IF queue_wake IS NOT NULL THEN
        RETURN queue_wake;  -- nothing of the queue starts before its window or hold allows
    END IF;
    RETURN least((SELECT min(w.wake_at) FROM job.rate_windows w WHERE w.queue = q.name AND w.wake_at > now()),
                 (SELECT min(l.lease_expires_at) FROM job.live_jobs l
                   WHERE l.queue = q.name AND l.state = 'running' AND l.lease_expires_at > now()));
END $$;

-- Holds back `queue` (or, with `key`, its jobs of that concurrency key) until `until`: what
-- a worker does on a 429.  Jobs wait and start when the hold ends (the scheduler wakes the
-- queue's consumers then); running jobs go on.  A later hold replaces an earlier one, and
-- `until` NULL or past lifts it.  Audited.
CREATE OR REPLACE FUNCTION job.rate_limit_pause(queue text, key text DEFAULT NULL, until timestamptz DEFAULT NULL)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    q job.queues := job._require_queue(rate_limit_pause.queue);
BEGIN
    IF rate_limit_pause.key IS NOT NULL AND job._name_problem(rate_limit_pause.key, 512) IS NOT NULL THEN
        PERFORM job._check_name('key', rate_limit_pause.key, 512);
    END IF;
    IF rate_limit_pause.until IS NOT NULL AND NOT isfinite(rate_limit_pause.until) THEN
        RAISE EXCEPTION 'until must be a finite time, got %', rate_limit_pause.until
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM job._rate_window(q.name, coalesce(rate_limit_pause.key, ''));
    UPDATE job.rate_windows r
       SET held_until = CASE WHEN rate_limit_pause.until > now() THEN rate_limit_pause.until END,
           wake_at = CASE WHEN rate_limit_pause.until > now() THEN least(r.wake_at, rate_limit_pause.until) ELSE now() END
     WHERE r.queue = q.name AND r.key = coalesce(rate_limit_pause.key, '') AND r.shard = 0;
    IF NOT q.holds THEN
        UPDATE job.queues qs SET holds = true WHERE qs.name = q.name;
    END IF;
    PERFORM job._due_on_commit(greatest(coalesce(rate_limit_pause.until, now()), now()));
    PERFORM job._audit('rate_limit_pause', jsonb_build_object('queue', q.name, 'key', rate_limit_pause.key,
                                                              'until', rate_limit_pause.until));
END $$;

-- Wakes the consumers of queues whose rate window or hold lets jobs start again (the
-- scheduler runs this with the due jobs).  Returns how many queues.
CREATE OR REPLACE FUNCTION job._wake_rate_limited()
RETURNS int LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    woken text[];
BEGIN
    WITH due AS (
        UPDATE job.rate_windows r SET wake_at = NULL
         WHERE r.wake_at <= now()
        RETURNING r.queue
    )
    SELECT array_agg(DISTINCT d.queue) INTO woken FROM due d;
    PERFORM job._wake_queue_on_commit(qs.id) FROM job.queues qs
     WHERE qs.name = ANY (woken) AND NOT qs.paused;
    RETURN coalesce(cardinality(woken), 0);
END $$;

-- Deletes up to `max_rows` rows of keys' rate windows that say nothing any more: no hold, no
-- wake-up due, and no start a claim would still count (the newest is two periods old, or
-- the queue no longer limits keys' rates).  A key's row is made again by its next claim.
-- Keeps the table as small as the set of recently active keys; a row a claim holds is left
-- for the next round.  (The scheduler's maintenance runs this.)
CREATE OR REPLACE FUNCTION job._prune_rate_windows(max_rows int)
RETURNS int LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    pruned int;
BEGIN
    DELETE FROM job.rate_windows r
     WHERE r.ctid = ANY (ARRAY(
           SELECT w.ctid FROM job.rate_windows w
             JOIN job.queues q ON q.name = w.queue
            WHERE w.key <> '' AND (w.held_until IS NULL OR w.held_until <= now()) AND w.wake_at IS NULL
              AND (q.key_rate_period IS NULL
                   OR (w.base + cardinality(w.counts))
                      * ceil(extract(epoch FROM q.key_rate_period) * 1000 / 20)
                      < extract(epoch FROM now() - 2 * q.key_rate_period) * 1000)
            LIMIT max_rows
            FOR UPDATE OF w SKIP LOCKED));
    GET DIAGNOSTICS pruned = ROW_COUNT;
    RETURN pruned;
END $$;

-- Every queue's settings, flow control included, with its active holds.
CREATE OR REPLACE VIEW job.queue_settings AS
SELECT q.name AS queue, q.max_retries, q.backoff_base, q.backoff_max, q.jitter, q.lease,
       q.idempotency_window, q.retention, q.max_payload_bytes, q.paused,
       q.concurrency, q.key_concurrency, q.rate_limit, q.rate_period, q.key_rate_limit, q.key_rate_period, q.fair,
       (SELECT r.held_until FROM job.rate_windows r
         WHERE r.queue = q.name AND r.key = '' AND r.shard = 0 AND r.held_until > pg_catalog.now()) AS held_until,
       (SELECT pg_catalog.count(*) FROM job.rate_windows r
         WHERE r.queue = q.name AND r.key <> '' AND r.held_until > pg_catalog.now()) AS keys_held,
       q.created_at, q.updated_at
  FROM job.queues q;

COMMENT ON VIEW job.queue_settings IS 'Every queue''s settings (retries, lease, retention, flow control) and its active holds.';

-- Active holds (job.rate_limit_pause) of queues and keys.
CREATE OR REPLACE VIEW job.rate_limit_holds AS
SELECT r.queue, NULLIF(r.key, '') AS key, r.held_until
  FROM job.rate_windows r
 WHERE r.held_until > pg_catalog.now();

COMMENT ON VIEW job.rate_limit_holds IS 'Queues and concurrency keys held back by job.rate_limit_pause, until when.';

-- When a dequeue on `queue` next has something to claim: now when a job is ready, else the
-- earliest time a delayed job or a retry becomes due or a lease runs out (its job is then
-- taken back; for a lease already out, when a dequeue next looks for it); NULL when the
-- queue has no live jobs, or is paused (resume_queue wakes LISTENers).  For workers that
-- cannot LISTEN: sleep until then (at most a poll interval).
CREATE OR REPLACE FUNCTION job.next_due(queue text)
RETURNS timestamptz LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    q job.queues := job._require_queue(next_due.queue);
BEGIN
    IF q.paused THEN
        RETURN NULL;
    END IF;
    IF EXISTS (SELECT 1 FROM job.live_jobs w WHERE w.queue = q.name AND w.state = 'waiting') THEN
        IF q.flow_limited THEN
            RETURN coalesce(job._flow_next_start(q), now());
        END IF;
        RETURN now();
    END IF;
    RETURN least((SELECT greatest(d.run_at, now()) FROM job.live_jobs d
                   WHERE d.queue = q.name AND d.state = 'scheduled'
                   ORDER BY d.run_at LIMIT 1),
                 -- A lease that already ran out: the worker takes the job back at once, or
                 -- else a dequeue does, once per pg_jobqueue.rescue_interval and session.
                 (SELECT CASE WHEN r.lease_expires_at > now() THEN r.lease_expires_at
                              ELSE now() + coalesce(current_setting('pg_jobqueue.rescue_interval', true), '1s')::interval END
                    FROM job.live_jobs r
                   WHERE r.queue = q.name AND r.state = 'running'
                   ORDER BY r.lease_expires_at LIMIT 1));
END $$;

-- Records a failed attempt.  Returns the job's new state: 'scheduled' or 'waiting' (it will be
-- retried) or 'dead' (permanent, or out of retries).  With `token`, a claim that is no longer
-- the job's current one records nothing and gets the job's current state back.  Error texts
-- are kept up to 8,192 characters (the entry says how long the whole was).
CREATE OR REPLACE FUNCTION job.fail(
    id bigint,
    error text,
    permanent boolean DEFAULT false,
    http_status int DEFAULT NULL,
    retry_after interval DEFAULT NULL,
    token uuid DEFAULT NULL
) RETURNS text LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    j job.live_jobs;
    q job.queues;
    is_permanent boolean;
    detail jsonb;
    retry_in interval;
    new_state text;
BEGIN
    PERFORM job._check_not_null('id', fail.id);
    PERFORM job._check_not_null('error', fail.error);
    PERFORM job._check_not_null('permanent', fail.permanent);
    IF fail.retry_after IS NOT NULL THEN
        PERFORM job._check_interval('retry_after', fail.retry_after, true);
    END IF;
    is_permanent := job.is_permanent_failure(fail.error, fail.permanent, fail.http_status);

    SELECT * INTO j FROM job.live_jobs l WHERE l.id = fail.id FOR UPDATE;
    IF NOT FOUND THEN
        -- Finished meanwhile (cancelled, say): report where it is, change nothing.
        PERFORM job._require_job(fail.id);
        SELECT f.state INTO new_state FROM job.finished_jobs f WHERE f.id = fail.id;
        RETURN new_state;
    END IF;
    IF fail.token IS NOT NULL AND (j.state <> 'running' OR j.lease_token IS DISTINCT FROM fail.token) THEN
        RETURN j.state;  -- taken back, and maybe claimed again: that attempt is not ours
    END IF;
    IF j.state <> 'running' THEN
        RAISE EXCEPTION 'job % is %, not running: only a claimed job can fail', j.id, j.state
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;

    detail := jsonb_build_object('error', left(fail.error, 8192), 'permanent', is_permanent)
              || CASE WHEN fail.http_status IS NULL THEN '{}'::jsonb
                      ELSE jsonb_build_object('http_status', fail.http_status) END
              || CASE WHEN length(fail.error) <= 8192 THEN '{}'::jsonb
                      ELSE jsonb_build_object('error_length', length(fail.error)) END;
    IF is_permanent OR j.attempt > j.max_retries THEN
        PERFORM job._finish(ARRAY[j.id], '{running}', 'dead', NULL, detail);
        RETURN 'dead';
    END IF;

    PERFORM job._record_attempts('failed', ARRAY[j.queue], ARRAY[j.job_type], ARRAY[j.claimed_at], ARRAY[j.run_at]);
    q := job._require_queue(j.queue);
    retry_in := coalesce(fail.retry_after, job.retry_delay(j.attempt, q.backoff_base, q.backoff_max, q.jitter));
    new_state := CASE WHEN retry_in > interval '0' THEN 'scheduled' ELSE 'waiting' END;
    UPDATE job.live_jobs l
       SET state = new_state, run_at = now() + retry_in, lease_expires_at = NULL, lease_token = NULL,
           errors = l.errors || jsonb_build_array(job._attempt_error(l.attempt, l.claimed_by, detail))
     WHERE l.id = j.id;
    IF new_state = 'waiting' OR j.flow_claimed THEN
        PERFORM job._wake_queue_on_commit(q.id);  -- ready again, or a slot or key's turn freed
    END IF;
    IF new_state = 'scheduled' THEN
        PERFORM job._due_on_commit(now() + retry_in);
    END IF;
    RETURN new_state;
END $$;

-- Makes due scheduled jobs (delayed, or retrying after backoff) ready, at most max_jobs,
-- and wakes the consumers of their queues at commit; also wakes those of queues whose rate
-- window or hold lets jobs start again.  Returns how many became ready.
CREATE OR REPLACE FUNCTION job._promote_due(max_jobs int)
RETURNS bigint LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    q record;
    promoted bigint;
    total bigint := 0;
BEGIN
    PERFORM job._wake_rate_limited();
    FOR q IN SELECT qs.name, qs.id, qs.paused FROM job.queues qs
              WHERE EXISTS (SELECT 1 FROM job.live_jobs d
                             WHERE d.queue = qs.name AND d.state = 'scheduled' AND d.run_at <= now()) LOOP
        EXIT WHEN total >= max_jobs;
        UPDATE job.live_jobs j SET state = 'waiting'
         WHERE j.id = ANY (ARRAY(SELECT d.id FROM job.live_jobs d
                                  WHERE d.queue = q.name AND d.state = 'scheduled' AND d.run_at <= now()
                                  ORDER BY d.run_at LIMIT max_jobs - total
                                  FOR UPDATE SKIP LOCKED));
        GET DIAGNOSTICS promoted = ROW_COUNT;
        IF promoted > 0 AND NOT q.paused THEN
            PERFORM job._wake_queue_on_commit(q.id);
        END IF;
        total := total + promoted;
    END LOOP;
    RETURN total;
END $$;

-- Moves finished jobs of one queue (those of `ids` whose state is in `from_states`) back to
-- the live table, ready now with a fresh retry budget; their past errors stay.  Returns how
-- many moved.
CREATE OR REPLACE FUNCTION job._revive(queue_name text, ids bigint[], from_states text[])
RETURNS bigint LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    q job.queues := job._require_queue(queue_name);
    revived_count bigint;
    revived_dead bigint;
BEGIN
    PERFORM job._guard_queue(q.name);  -- no revival into a queue being dropped
    WITH back AS (
        DELETE FROM job.finished_jobs f
         WHERE f.id = ANY (ids) AND f.queue = q.name AND f.state = ANY (from_states)
        RETURNING f.*
    ), inserted AS (
        INSERT INTO job.live_jobs (id, run_at, enqueued_at, priority, attempt, max_retries, state,
                                   queue, job_type, idempotency_key, payload, errors, concurrency_key,
                                   order_key, singleton_key, debounce_key)
        SELECT b.id, now(), b.enqueued_at, b.priority, 0, b.max_retries, 'waiting',
               b.queue, b.job_type, b.idempotency_key, b.payload, b.errors, b.concurrency_key,
               b.order_key, b.singleton_key, b.debounce_key
          FROM back b
        RETURNING 1
    )
    SELECT count(*), count(*) FILTER (WHERE b.state = 'dead') INTO revived_count, revived_dead
      FROM back b WHERE EXISTS (SELECT 1 FROM inserted);
    IF revived_count > 0 THEN
        PERFORM job._wake_queue_on_commit(q.id);
    END IF;
    IF revived_dead > 0 THEN
        PERFORM job._count_dead_letters(q.name, -revived_dead);
    END IF;
    RETURN revived_count;
END $$;

-- Every job, whatever its state.  A scheduled job whose run_at has passed is ready
-- now and shows as waiting.
CREATE OR REPLACE VIEW job.jobs AS
SELECT id, queue, job_type,
       CASE WHEN state = 'scheduled' AND run_at <= pg_catalog.now() THEN 'waiting' ELSE state END AS state,
       payload, priority, attempt, max_retries, run_at, enqueued_at, claimed_at, claimed_by,
       lease_expires_at, NULL::timestamptz AS finished_at, errors, NULL::jsonb AS result,
       idempotency_key, concurrency_key, order_key, singleton_key, debounce_key
  FROM job.live_jobs
UNION ALL
SELECT id, queue, job_type, state,
       payload, priority, attempt, max_retries, run_at, enqueued_at, claimed_at, claimed_by,
       NULL::timestamptz, finished_at, errors, result,
       idempotency_key, concurrency_key, order_key, singleton_key, debounce_key
  FROM job.finished_jobs;

COMMENT ON VIEW job.jobs IS 'Every job in every state with its attempts, errors, result and timestamps.';

---------------------------------------------------------------------------------------------
-- Maintenance deletes that read their rows once and delete by key, whatever plan is cached
---------------------------------------------------------------------------------------------

-- Deletes finished jobs older than their queue's retention and expired idempotency keys, at
-- most max_rows of each per call (call again while it returns max_rows).  Returns rows deleted.
-- Each queue is pruned on its own: should one fail, the others are still pruned (the failure
-- is reported as a warning naming the queue).
CREATE OR REPLACE FUNCTION job.apply_retention(max_rows int DEFAULT 10000)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    q record;
    left_to_delete bigint := max_rows;
    deleted bigint;
    dead bigint;
    keys_deleted bigint;
BEGIN
    PERFORM job._check_count('max_rows', max_rows);
    FOR q IN SELECT qs.name, qs.retention FROM job.queues qs ORDER BY qs.name LOOP
        EXIT WHEN left_to_delete <= 0;
        BEGIN
            WITH gone AS (
                -- The ids are gathered first (ARRAY: run once), then deleted by primary key.
                -- Written as `id IN (...)`, the generic plan cached while the table was empty
                -- (analyzed so) was a nested loop that read the whole table for every id: a
                -- worker's retention ran for over 16 minutes once history had filled up.
                DELETE FROM job.finished_jobs f
                 WHERE f.id = ANY (ARRAY(SELECT old.id
                                           FROM unnest(ARRAY['completed', 'dead', 'cancelled']) AS s(state)
                                          CROSS JOIN LATERAL (
                                                SELECT h.id FROM job.finished_jobs h
                                                 WHERE h.queue = q.name AND h.state = s.state
                                                   AND h.finished_at < now() - q.retention
                                                 ORDER BY h.finished_at
                                                 LIMIT left_to_delete) old
                                          LIMIT left_to_delete))
                RETURNING f.state
            )
            SELECT count(*), count(*) FILTER (WHERE g.state = 'dead') INTO deleted, dead FROM gone g;
            IF dead > 0 THEN
                PERFORM job._count_dead_letters(q.name, -dead);
            END IF;
            left_to_delete := left_to_delete - deleted;
        EXCEPTION WHEN OTHERS THEN
            RAISE WARNING 'pg_jobqueue: retention of queue % failed: % (SQLSTATE %)', quote_literal(q.name), SQLERRM, SQLSTATE;
        END;
    END LOOP;
    DELETE FROM job.idempotency_keys k
     WHERE k.ctid = ANY (ARRAY(SELECT e.ctid FROM job.idempotency_keys e
                                WHERE e.expires_at <= now()
                                ORDER BY e.expires_at LIMIT max_rows));
    GET DIAGNOSTICS keys_deleted = ROW_COUNT;
    RETURN max_rows - left_to_delete + keys_deleted;
END $$;

-- Deletes audit rows older than `older_than`, at most max_rows; returns how many.
CREATE OR REPLACE FUNCTION job._prune_audit_log(older_than interval, max_rows int)
RETURNS int LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    pruned int;
BEGIN
    -- ARRAY(...): the ids are read once, then deleted by primary key, whatever plan is cached
    -- (an `IN` sub-select may be planned as a nested loop over the table: see apply_retention).
    DELETE FROM job.audit_entries a
     WHERE a.id = ANY (ARRAY(SELECT o.id FROM job.audit_entries o WHERE o.at < now() - older_than
                              ORDER BY o.at LIMIT max_rows));
    GET DIAGNOSTICS pruned = ROW_COUNT;
    RETURN pruned;
END $$;

-- Keeps the newest `keep` runs of each schedule, deleting at most max_rows; returns how many.
CREATE OR REPLACE FUNCTION job._prune_schedule_runs(keep int, max_rows int)
RETURNS int LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    pruned int;
BEGIN
    -- ARRAY(...) of row addresses: read once, then deleted by address (see apply_retention).
    DELETE FROM job.schedule_runs r
     WHERE r.ctid = ANY (ARRAY(
           SELECT o.ctid
             FROM job.schedule_defs d
            CROSS JOIN LATERAL (SELECT k.tick FROM job.schedule_runs k
                                 WHERE k.schedule = d.name
                                 ORDER BY k.tick DESC OFFSET keep LIMIT 1) boundary
            CROSS JOIN LATERAL (SELECT x.ctid FROM job.schedule_runs x
                                 WHERE x.schedule = d.name AND x.tick <= boundary.tick
                                 ORDER BY x.tick LIMIT max_rows) o
            LIMIT max_rows));
    GET DIAGNOSTICS pruned = ROW_COUNT;
    RETURN pruned;
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
             'job.dequeue(text, text, integer, interval, bigint[], jsonb[], uuid[])'),
            ('job.create_queue(text, integer, interval, interval, double precision, interval, interval, interval, integer)',
             'job.create_queue(text, integer, interval, interval, double precision, interval, interval, interval, integer, integer, integer, integer, interval, integer, interval, boolean)'),
            ('job.enqueue(text, jsonb, timestamp with time zone, interval, integer, text, integer, text)',
             'job.enqueue(text, jsonb, timestamp with time zone, interval, integer, text, integer, text, text, text, text, text, interval, interval)'),
            ('job.enqueue_many(text, jsonb[], integer, text)',
             'job.enqueue_many(text, jsonb[], integer, text, text, text)')
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
