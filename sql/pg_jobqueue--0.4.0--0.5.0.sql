-- pg_jobqueue 0.4.0 -> 0.5.0.  Written for the 0.5.0 release; never edited after it (see
-- sql/README.md).  What changes and why: CHANGELOG.md.

---------------------------------------------------------------------------------------------
-- issue 20: typed seams
---------------------------------------------------------------------------------------------

-- The rows the sender (src/delivery/rows.rs) and SQL exchange, read and written by field
-- name on both sides, never by position or as loose JSON keys: a field renamed on one side
-- only fails at once instead of reading a wrong value or a NULL.
-- A claimed delivery, one request to make (job._claim_deliveries).
CREATE TYPE job._delivery_claim AS (
    endpoint         text,
    job_id           bigint,
    token            uuid,
    body             text,
    path             text,
    headers          jsonb,
    webhook_id       text,
    url              text,
    method           text,
    endpoint_headers jsonb,
    secrets          text[],
    timeout_ms       bigint,
    rate_limit       int
);
-- What one attempt came to (job._record_deliveries): `result` (delivered), or `error`,
-- `permanent`, `http_status`, `retry_after_ms` and `detail` (failed).
CREATE TYPE job._delivery_outcome AS (
    job_id         bigint,
    token          uuid,
    result         jsonb,
    error          text,
    permanent      boolean,
    http_status    int,
    retry_after_ms bigint,
    detail         jsonb
);
-- What a batch of attempts adds to one endpoint's counters (job._record_deliveries).
CREATE TYPE job._delivery_tally AS (
    endpoint               text,
    status_2xx             bigint,
    status_3xx             bigint,
    status_4xx             bigint,
    status_5xx             bigint,
    transport_errors       bigint,
    transient_failures     bigint,
    permanent_failures     bigint,
    latency                bigint[],
    latency_sum            float8,
    succeeded              boolean,
    failures_since_success int,
    last_status            int,
    last_error             text,
    gone                   boolean
);

-- job._claim_deliveries now returns job._delivery_claim rows, and job._record_deliveries takes
-- arrays of job._delivery_outcome and job._delivery_tally instead of JSON: new signatures,
-- created again below (and their EXECUTE revoked from PUBLIC at the end of this script).
DROP FUNCTION job._claim_deliveries(text, int, text[], int[]);
DROP FUNCTION job._record_deliveries(jsonb, jsonb, int);

-- The process id in a worker's claimed_by, read by job._expire_executor_leases (and written
-- by the same Rust module, src/worker/claimer.rs) instead of a regular expression.
CREATE FUNCTION "_claimer_pid"(
	"claimed_by" TEXT /* & str */
) RETURNS INT /* core::option::Option<i32> */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_claimer_pid_wrapper';
REVOKE EXECUTE ON FUNCTION job._claimer_pid(text) FROM PUBLIC;

---------------------------------------------------------------------------------------------
-- A job taken back keeps its place (issue 19, item 14)
---------------------------------------------------------------------------------------------

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
           SET state = 'waiting', lease_expires_at = NULL, lease_token = NULL,
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

---------------------------------------------------------------------------------------------
-- Duties that reach only their queues, and bounded settings (issue 19, items 9-12)
---------------------------------------------------------------------------------------------

-- Per-queue grants of the produce and work duties (job.grant_queue).  A queue without any
-- grant stays open to every holder of the duty, as in 0.4.0.
ALTER TABLE job.queues ADD COLUMN produce_granted boolean NOT NULL DEFAULT false,
                       ADD COLUMN work_granted boolean NOT NULL DEFAULT false;
COMMENT ON COLUMN job.queues.produce_granted IS 'The queue has per-queue grants of the produce duty (job.queue_grants): only their roles may enqueue into it.';
COMMENT ON COLUMN job.queues.work_granted IS 'The queue has per-queue grants of the work duty (job.queue_grants): only their roles may work it.';

CREATE TABLE job.queue_grant_defs (
    queue      text NOT NULL REFERENCES job.queues (name) ON DELETE CASCADE,
    duty       text NOT NULL CHECK (duty IN ('produce', 'work')),
    grantee    regrole NOT NULL,
    granted_by regrole NOT NULL,
    granted_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (queue, duty, grantee)
);
COMMENT ON TABLE job.queue_grant_defs IS 'Which roles may produce into or work each queue that has grants (read through job.queue_grants).';
SELECT pg_catalog.pg_extension_config_dump('job.queue_grant_defs', '');
REVOKE ALL ON job.queue_grant_defs FROM PUBLIC;

-- Only the role that enqueued a waiting singleton or debounced job replaces it.  Jobs
-- enqueued before the upgrade have none: no enqueue replaces them (they are merged into).
ALTER TABLE job.live_jobs ADD COLUMN enqueued_by regrole;
COMMENT ON COLUMN job.live_jobs.enqueued_by IS 'The role that enqueued a job of a singleton or debounce key: only its enqueues replace the job.';

-- New signatures: _check_limit takes its bound, _replace_pending the enqueuing role.
DROP FUNCTION job._check_limit(text, int);
DROP FUNCTION job._replace_pending(text, text, text, jsonb, timestamptz, interval);

-- The setting `name` (a pg_jobqueue. duration, set by a superuser) as an interval, or
-- `fallback` (its default) in a session that has not loaded the library.
CREATE OR REPLACE FUNCTION job._setting_interval(name text, fallback interval)
RETURNS interval LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(current_setting(name, true)::interval, fallback)
$$;

-- Raises unless `value` (an interval argument named `what`) is at most the setting `setting`
-- (default `fallback`): how far ahead a producer may start a job, debounce one, or a worker
-- hold a queue back.  A job or hold out of reach for years blocks others' jobs for as long.
CREATE OR REPLACE FUNCTION job._check_at_most(what text, value interval, setting text, fallback interval)
RETURNS void LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    bound interval := job._setting_interval(setting, fallback);
BEGIN
    IF value > bound THEN
        RAISE EXCEPTION '% must be at most % (%), got %', what, bound, setting, value
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('A superuser may raise %s.', setting);
    END IF;
END $$;

-- Raises unless `value`, a limit named `what`, is NULL (no limit) or from 1 to `max`.  Every
-- count the API takes has a bound (the README's "Settings" lists them): a limit sizes rows or
-- work (a queue's concurrency is one slot row per unit), so an unbounded one lets one call
-- fill the disk.
CREATE OR REPLACE FUNCTION job._check_limit(what text, value int, max int)
RETURNS void LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF value < 1 OR value > max THEN
        RAISE EXCEPTION '% must be between 1 and % (or NULL for no limit), got %', what, max, value
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END $$;

-- Raises unless `value` is a row count for one call: not NULL, from 0 to 1,000,000 (one call
-- should not hold its locks over more; call again for the rest).
CREATE OR REPLACE FUNCTION job._check_count(what text, value bigint)
RETURNS void LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM job._check_not_null(what, value);
    IF value < 0 OR value > 1000000 THEN
        RAISE EXCEPTION '% must be between 0 and 1000000, got %', what, value USING ERRCODE = 'invalid_parameter_value';
    END IF;
END $$;

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
        PERFORM job._check_at_most('debounce', debounce, 'pg_jobqueue.max_debounce', interval '1 day');
        IF debounce_max_wait IS NOT NULL THEN
            PERFORM job._check_interval('debounce_max_wait', debounce_max_wait, false);
            PERFORM job._check_at_most('debounce_max_wait', debounce_max_wait, 'pg_jobqueue.max_debounce', interval '1 day');
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

-- Whether the calling role (job._calling_role: the session's role, not the owner these
-- functions run as) may do `duty` on `queue`, a queue that has grants of it.
CREATE OR REPLACE FUNCTION job._may(queue text, duty text)
RETURNS boolean LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp AS $$
    SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.rolname = job._calling_role() AND r.rolsuper)
        OR EXISTS (SELECT 1 FROM job.queue_grant_defs g
                    WHERE g.queue = _may.queue AND g.duty = _may.duty
                      AND pg_catalog.pg_has_role(job._calling_role(), g.grantee, 'MEMBER'))
$$;

-- Raises (42501) unless the calling role may do `duty` on `queue`, which has grants of it.
CREATE OR REPLACE FUNCTION job._require_may(queue text, duty text)
RETURNS void LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT job._may(queue, duty) THEN
        RAISE EXCEPTION 'permission denied: role % may not % queue %', job._calling_role(),
            CASE duty WHEN 'produce' THEN 'produce into' ELSE duty END, quote_literal(queue)
            USING ERRCODE = 'insufficient_privilege',
                  HINT = format('The queue has grants of the %s duty (job.queue_grants); an administrator adds one with job.grant_queue.', duty);
    END IF;
END $$;

-- Raises unless the calling role may work every job of `ids` that is live (for the work
-- duty's calls that name jobs without their claim's token: a token is proof enough, as only
-- the dequeue that claimed the job hands it out).  One probe per id.
CREATE OR REPLACE FUNCTION job._require_work_on_jobs(ids bigint[])
RETURNS void LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM job._require_may(q.name, 'work')
       FROM job.queues q
      WHERE q.work_granted AND q.name IN (SELECT l.queue FROM job.live_jobs l WHERE l.id = ANY (ids));
END $$;

CREATE OR REPLACE FUNCTION job._check_duty(duty text)
RETURNS void LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF duty IS NULL OR duty NOT IN ('produce', 'work') THEN
        RAISE EXCEPTION 'duty must be ''produce'' or ''work'', got %', coalesce(quote_literal(duty), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END $$;

-- Lets `role` (and its members) do `duty` ('produce' or 'work') on `queue`; from the queue's
-- first grant of the duty on, only granted roles may.  True when the grant is new.  Audited.
CREATE OR REPLACE FUNCTION job.grant_queue(queue text, role regrole, duty text)
RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
DECLARE
    q job.queues := job._require_queue(queue);
    added boolean;
BEGIN
    PERFORM job._check_not_null('role', role);
    PERFORM job._check_duty(duty);
    INSERT INTO job.queue_grant_defs (queue, duty, grantee, granted_by)
    VALUES (q.name, duty, role, (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = job._calling_role()))
    ON CONFLICT DO NOTHING;
    added := FOUND;
    UPDATE job.queues qs SET produce_granted = qs.produce_granted OR duty = 'produce',
                             work_granted = qs.work_granted OR duty = 'work'
     WHERE qs.name = q.name;
    PERFORM job._audit('grant_queue', jsonb_build_object('queue', q.name, 'role', role::text, 'duty', duty));
    RETURN added;
END $$;

-- Takes back a grant of job.grant_queue.  When it was the queue's last grant of the duty, the
-- queue is open again to every role with the duty's functions.  False when there was no such
-- grant.  Audited.
CREATE OR REPLACE FUNCTION job.revoke_queue(queue text, role regrole, duty text)
RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
DECLARE
    q job.queues := job._require_queue(queue);
    removed boolean;
BEGIN
    PERFORM job._check_not_null('role', role);
    PERFORM job._check_duty(duty);
    DELETE FROM job.queue_grant_defs g WHERE g.queue = q.name AND g.duty = duty AND g.grantee = role;
    removed := FOUND;
    UPDATE job.queues qs
       SET produce_granted = EXISTS (SELECT 1 FROM job.queue_grant_defs g WHERE g.queue = q.name AND g.duty = 'produce'),
           work_granted = EXISTS (SELECT 1 FROM job.queue_grant_defs g WHERE g.queue = q.name AND g.duty = 'work')
     WHERE qs.name = q.name;
    PERFORM job._audit('revoke_queue', jsonb_build_object('queue', q.name, 'role', role::text, 'duty', duty));
    RETURN removed;
END $$;

CREATE OR REPLACE VIEW job.queue_grants AS
SELECT g.queue, g.duty, g.grantee AS role, g.granted_by, g.granted_at
  FROM job.queue_grant_defs g;

COMMENT ON VIEW job.queue_grants IS 'Per-queue grants (job.grant_queue): which roles may produce into or work a queue; a queue without a grant of a duty is open to every role holding that duty''s functions.';

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
    IF max_retries < 0 OR max_retries > 1000 THEN
        RAISE EXCEPTION 'max_retries must be between 0 and 1000, got %', max_retries USING ERRCODE = 'invalid_parameter_value';
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
    -- Bounds (the README's "Settings"): concurrency is one slot row per unit.
    PERFORM job._check_limit('max_payload_bytes', max_payload_bytes, 100000000);
    PERFORM job._check_limit('concurrency', concurrency, 10000);
    PERFORM job._check_limit('key_concurrency', key_concurrency, 10000);
    PERFORM job._check_limit('rate_limit', rate_limit, 1000000);
    PERFORM job._check_limit('key_rate_limit', key_rate_limit, 1000000);
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
        PERFORM job._audit('create_queue', to_jsonb(after) - '{id,paused,holds,serial_keys,flow_limited,produce_granted,work_granted,created_at,updated_at}'::text[]);
    ELSIF to_jsonb(before) - '{created_at,updated_at}'::text[] <> to_jsonb(after) - '{created_at,updated_at}'::text[] THEN
        PERFORM job._audit('alter_queue', jsonb_build_object('name', name, 'before', to_jsonb(before) - '{id,name,paused,holds,serial_keys,flow_limited,produce_granted,work_granted,created_at,updated_at}'::text[],
                                                             'after', to_jsonb(after) - '{id,name,paused,holds,serial_keys,flow_limited,produce_granted,work_granted,created_at,updated_at}'::text[]));
    END IF;
END $$;

-- The queue's opaque number, the payload of its wake-up notifications (see the README's
-- "Wake-ups"): a worker LISTENs on pg_jobqueue and dequeues when a notification carries it.
CREATE OR REPLACE FUNCTION job.queue_id(queue text) RETURNS bigint LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    q job.queues := job._require_queue(queue);
BEGIN
    IF q.work_granted THEN
        PERFORM job._require_may(q.name, 'work');
    END IF;
    RETURN q.id;
END $$;



-- For an enqueue by role `producer` with a singleton or debounce key: the job of that key
-- that has not started yet, given `payload` (the last one wins) and a new start (`start_at`;
-- for a debounce, no later than `max_wait` after the job's first enqueue), or NULL when there
-- is none and the caller adds one.  A producer changes only a job it enqueued: when another
-- role's job of the key waits, that job's id is returned and the job is left as it is (the
-- key still has one job waiting; the enqueue merged into it).  Enqueues of the key take turns
-- until commit, so the later one sees the job the earlier one added.  A job that is being
-- claimed has started: it is left alone.
CREATE OR REPLACE FUNCTION job._replace_pending(queue text, singleton_key text, debounce_key text, payload jsonb,
                                     start_at timestamptz, max_wait interval, producer oid)
RETURNS bigint LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
DECLARE
    pending record;
    replaced record;
BEGIN
    PERFORM job._lock_enqueue_key(queue, CASE WHEN singleton_key IS NULL THEN 'd' ELSE 's' END,
                                  coalesce(singleton_key, debounce_key));
    -- The newest not-yet-started job of the key: a range of the key's index (one of the two
    -- keys is NULL, and its branch reads nothing).  One statement with OR is planned as a walk
    -- of the primary key.
    SELECT p.id, p.enqueued_at, p.enqueued_by INTO pending
      FROM ((SELECT p.id, p.enqueued_at, p.enqueued_by FROM job.live_jobs p
              WHERE p.queue = _replace_pending.queue AND p.singleton_key = _replace_pending.singleton_key
                AND p.state IN ('waiting', 'scheduled') AND p.attempt = 0
              ORDER BY p.id DESC LIMIT 1)
            UNION ALL
            (SELECT p.id, p.enqueued_at, p.enqueued_by FROM job.live_jobs p
              WHERE p.queue = _replace_pending.queue AND p.debounce_key = _replace_pending.debounce_key
                AND p.state IN ('waiting', 'scheduled') AND p.attempt = 0
              ORDER BY p.id DESC LIMIT 1)) p;
    IF NOT FOUND THEN
        RETURN NULL;
    ELSIF pending.enqueued_by IS DISTINCT FROM producer THEN
        RETURN pending.id;  -- another producer's job: merged into, not changed
    END IF;
    UPDATE job.live_jobs l
       SET payload = _replace_pending.payload, run_at = x.new_run_at,
           state = CASE WHEN x.new_run_at <= now() THEN 'waiting' ELSE 'scheduled' END
      FROM (SELECT CASE WHEN max_wait IS NULL THEN start_at
                        ELSE least(start_at, pending.enqueued_at + max_wait) END AS new_run_at) x
     WHERE l.id = pending.id AND l.state IN ('waiting', 'scheduled') AND l.attempt = 0
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
    IF rate_limit_pause.until > now() THEN
        -- A 429's Retry-After is seconds or minutes; a hold for years stops the queue for good.
        PERFORM job._check_at_most('until - now()', rate_limit_pause.until - now(), 'pg_jobqueue.max_hold',
                                   interval '1 day');
    END IF;
    -- The work duty holds only queues it may work, and never one the background worker serves
    -- (a handler's or an endpoint's): those belong to their administrators, who hold every
    -- queue (the admin duty is the one that may pause queues).
    IF NOT has_function_privilege(job._calling_role(), 'job.pause_queue(text)', 'EXECUTE') THEN
        IF EXISTS (SELECT 1 FROM job.handler_defs h WHERE h.queue = q.name)
           OR EXISTS (SELECT 1 FROM job.endpoint_defs e WHERE e.queue = q.name) THEN
            RAISE EXCEPTION 'permission denied: queue % is served by the background worker, so only an administrator may hold it',
                quote_literal(q.name)
                USING ERRCODE = 'insufficient_privilege';
        ELSIF q.work_granted THEN
            PERFORM job._require_may(q.name, 'work');
        END IF;
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
    IF q.work_granted THEN
        PERFORM job._require_may(q.name, 'work');  -- the queue has per-queue grants
    END IF;
    IF dequeue.batch IS NULL OR dequeue.batch < 1 OR dequeue.batch > 10000 THEN
        PERFORM job._check_not_null('batch', dequeue.batch);
        RAISE EXCEPTION 'batch must be between 1 and 10000, got %', dequeue.batch USING ERRCODE = 'invalid_parameter_value';
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
        IF dequeue.complete_tokens IS NULL THEN
            PERFORM job._require_work_on_jobs(dequeue.complete);
        END IF;
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
    IF q.work_granted THEN
        PERFORM job._require_may(q.name, 'work');
    END IF;
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
    IF complete.token IS NULL THEN
        PERFORM job._require_work_on_jobs(ARRAY[complete.id]);  -- (a token proves the claim)
    END IF;
    IF job._finish(ARRAY[complete.id], '{running}', 'completed', ARRAY[complete.result], NULL,
                   CASE WHEN complete.token IS NULL THEN NULL ELSE ARRAY[complete.token] END) = 1 THEN
        RETURN true;
    END IF;
    PERFORM job._require_job(complete.id);
    RETURN false;  -- not running under this claim: finished, cancelled, taken back or never claimed
END $$;

-- Acknowledges many jobs in one round trip, each under its claim's token (one token for all,
-- as a batch of one dequeue shares it, or one per id, paired by position); returns how many
-- were running under those claims and completed.
CREATE OR REPLACE FUNCTION job.complete_many(ids bigint[], tokens uuid[] DEFAULT NULL)
RETURNS int LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF ids IS NULL THEN
        PERFORM job._check_not_null('ids', ids);
    END IF;
    PERFORM job._check_tokens(ids, tokens);
    IF tokens IS NULL THEN
        PERFORM job._require_work_on_jobs(ids);
    END IF;
    RETURN job._finish(ids, '{running}', 'completed', NULL, NULL, tokens);
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
    IF fail.token IS NULL THEN
        PERFORM job._require_work_on_jobs(ARRAY[fail.id]);
    END IF;

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

-- Extends a running job's lease and returns the new expiry.  With `token`: while that claim
-- is the job's current one (even past its expiry, as long as nobody took the job back).
-- Without: while the job is running and its lease unexpired.  Otherwise raises SQLSTATE 55000
-- (object_not_in_prerequisite_state): the worker must stop working on the job.
CREATE OR REPLACE FUNCTION job.heartbeat(id bigint, extend interval DEFAULT NULL, token uuid DEFAULT NULL)
RETURNS timestamptz LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    expires timestamptz;
    found_job record;
    holder text;
BEGIN
    PERFORM job._check_not_null('id', heartbeat.id);
    IF heartbeat.extend IS NOT NULL THEN
        PERFORM job._check_interval('extend', heartbeat.extend, false);
    END IF;
    IF heartbeat.token IS NULL THEN
        PERFORM job._require_work_on_jobs(ARRAY[heartbeat.id]);
    END IF;
    UPDATE job.live_jobs l
       SET lease_expires_at = now() + coalesce(heartbeat.extend,
                                               (SELECT q.lease FROM job.queues q WHERE q.name = l.queue))
     WHERE l.id = heartbeat.id AND l.state = 'running'
       AND CASE WHEN heartbeat.token IS NULL THEN l.lease_expires_at > now()
                ELSE l.lease_token = heartbeat.token END
    RETURNING l.lease_expires_at, l.claimed_by INTO expires, holder;
    IF FOUND THEN
        PERFORM job._saw_worker(holder);
        RETURN expires;
    END IF;

    PERFORM job._require_job(heartbeat.id);
    SELECT j.state, j.lease_expires_at, j.attempt INTO found_job FROM job.jobs j WHERE j.id = heartbeat.id;
    IF found_job.state = 'running' AND heartbeat.token IS NOT NULL THEN
        RAISE EXCEPTION 'job % is no longer held by this lease: it was taken back and claimed again (attempt %)',
            heartbeat.id, found_job.attempt
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Stop working on it: another worker runs it now, and complete and fail with this token change nothing.';
    ELSIF found_job.state = 'running' THEN
        RAISE EXCEPTION 'job % is no longer held: its lease expired at %', heartbeat.id, found_job.lease_expires_at
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Stop working on it: another worker may claim it. Heartbeat before the lease runs out.';
    END IF;
    RAISE EXCEPTION 'job % is no longer held: it is %', heartbeat.id, found_job.state
        USING ERRCODE = 'object_not_in_prerequisite_state',
              HINT = 'Stop working on it: its lease ran out and it was taken back, or it was cancelled.';
END $$;

-- Extends the leases of many jobs in one call (a batch: pass the dequeue's token once, or one
-- per id, paired by position).  One row per id, in order: whether this claim still holds it
-- and its new expiry.
-- A job no longer held is not renewed; the worker should stop working on it.
CREATE OR REPLACE FUNCTION job.heartbeat_many(ids bigint[], tokens uuid[], extend interval DEFAULT NULL)
RETURNS TABLE (id bigint, held boolean, lease_expires_at timestamptz)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
    PERFORM job._check_not_null('ids', heartbeat_many.ids);
    PERFORM job._check_not_null('tokens', heartbeat_many.tokens);
    -- The shape complete_many and dequeue's complete take (a 2-D array was paired by position
    -- over its flattened elements).
    IF array_ndims(heartbeat_many.ids) > 1 OR array_ndims(heartbeat_many.tokens) > 1 THEN
        RAISE EXCEPTION 'ids and tokens must be one-dimensional arrays' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM job._check_tokens(heartbeat_many.ids, heartbeat_many.tokens);
    IF heartbeat_many.extend IS NOT NULL THEN
        PERFORM job._check_interval('extend', heartbeat_many.extend, false);
    END IF;
    RETURN QUERY
    WITH renewed AS (
        UPDATE job.live_jobs l
           SET lease_expires_at = now() + coalesce(heartbeat_many.extend,
                                                   (SELECT q.lease FROM job.queues q WHERE q.name = l.queue))
         WHERE l.id = ANY (heartbeat_many.ids) AND l.state = 'running'
           AND l.lease_token = CASE WHEN cardinality(heartbeat_many.tokens) = 1 THEN heartbeat_many.tokens[1]
                                    ELSE heartbeat_many.tokens[array_position(heartbeat_many.ids, l.id)] END
        RETURNING l.id, l.lease_expires_at
    )
    SELECT i.id, r.id IS NOT NULL, r.lease_expires_at
      FROM unnest(heartbeat_many.ids) WITH ORDINALITY AS i(id, ord)
      LEFT JOIN renewed r ON r.id = i.id
     ORDER BY i.ord;
END $$;

-- Whether a handler set by `set_by` may run as `run_as`: a superuser `run_as` only when a
-- superuser set it.  Whoever can enqueue into a handler queue (a producer, a schedule) chooses
-- the handler's input; a superuser's handler given that input is a superuser's code path that
-- non-superusers steer, which only a superuser may set up.  Checked again by the executors, so
-- a role made superuser after a non-superuser named it stops its handlers.
CREATE OR REPLACE FUNCTION job._may_run_as(set_by oid, run_as oid)
RETURNS boolean LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp AS $$
    SELECT NOT coalesce((SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.oid = run_as), false)
        OR coalesce((SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.oid = set_by), false)
$$;

CREATE OR REPLACE VIEW job.handlers AS
SELECT h.queue, h.handler, h.run_as, h.concurrency, h.timeout, h.set_by,
       CASE WHEN NOT EXISTS (SELECT 1 FROM pg_catalog.pg_proc p WHERE p.oid = h.handler) THEN 'handler dropped'
            WHEN NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.oid = h.run_as) THEN 'run_as role dropped'
            WHEN NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.oid = h.set_by)
              OR NOT pg_catalog.pg_has_role(h.set_by, h.run_as, 'MEMBER') THEN 'set_by no longer a member of run_as'
            -- (job._may_run_as, inline: a view's readers would need EXECUTE on it.)
            WHEN EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.oid = h.run_as AND r.rolsuper)
             AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.oid = h.set_by AND r.rolsuper)
              THEN 'run_as is a superuser, set_by is not'
            WHEN q.paused THEN 'paused'
            ELSE 'active' END AS state,
       h.created_at, h.updated_at
  FROM job.handler_defs h
  JOIN job.queues q ON q.name = h.queue;

COMMENT ON VIEW job.handlers IS 'Queues whose jobs the background worker runs: handler, run_as, concurrency, timeout, who set it, and whether it runs (active) or why not.';

-- Records a handler (job.set_handler has checked who may name run_as).  `caller` is the role
-- that called job.set_handler; only the extension's owner can call this.
CREATE OR REPLACE FUNCTION job._set_handler(caller regrole, queue text, handler regprocedure, concurrency int,
                                 timeout interval, run_as regrole)
RETURNS void LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    fn record;
    q job.queues;
BEGIN
    PERFORM job._require_worker('handlers');
    q := job._require_queue(_set_handler.queue);
    PERFORM job._check_not_null('handler', _set_handler.handler);
    PERFORM job._check_not_null('run_as', _set_handler.run_as);
    SELECT p.prokind, p.proretset, p.pronargs, p.proargtypes[0] AS argtype INTO fn
      FROM pg_catalog.pg_proc p WHERE p.oid = _set_handler.handler;
    IF fn.prokind <> 'f' OR fn.proretset OR fn.pronargs <> 1 OR fn.argtype <> 'jsonb'::regtype THEN
        RAISE EXCEPTION 'handler % must be a function taking one jsonb argument and returning one value', _set_handler.handler
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'CREATE FUNCTION my_handler(payload jsonb) RETURNS jsonb ...';
    END IF;
    IF NOT pg_has_role(_set_handler.caller, _set_handler.run_as, 'MEMBER') THEN
        RAISE EXCEPTION 'permission denied: role % is not a member of role %, so it cannot name it as run_as',
            _set_handler.caller, _set_handler.run_as
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'A handler runs with the rights of run_as: name a role you belong to (yourself, by default).';
    END IF;
    IF NOT job._may_run_as(_set_handler.caller, _set_handler.run_as) THEN
        RAISE EXCEPTION 'permission denied: run_as % is a superuser, and only a superuser may name one', _set_handler.run_as
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Whoever enqueues into the queue feeds the handler: give it a role with only the rights it needs.';
    END IF;
    IF NOT has_function_privilege(_set_handler.run_as, _set_handler.handler, 'EXECUTE') THEN
        RAISE EXCEPTION 'permission denied: role % may not execute handler %', _set_handler.run_as, _set_handler.handler
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF _set_handler.concurrency IS NULL OR _set_handler.concurrency NOT BETWEEN 1 AND 1000 THEN
        RAISE EXCEPTION 'concurrency must be between 1 and 1000, got %', coalesce(_set_handler.concurrency::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM job._check_interval('timeout', _set_handler.timeout, false);

    INSERT INTO job.handler_defs AS h (queue, handler, run_as, concurrency, timeout, set_by)
    VALUES (q.name, _set_handler.handler, _set_handler.run_as, _set_handler.concurrency,
            _set_handler.timeout, _set_handler.caller)
    ON CONFLICT (queue) DO UPDATE
       SET handler = EXCLUDED.handler, run_as = EXCLUDED.run_as, concurrency = EXCLUDED.concurrency,
           timeout = EXCLUDED.timeout, set_by = EXCLUDED.set_by, updated_at = now();
    PERFORM job._wake_queue_on_commit(q.id);
    PERFORM job._wake_scheduler();  -- starts the executors
    PERFORM job._audit('set_handler', jsonb_build_object(
        'queue', q.name, 'handler', _set_handler.handler::text, 'run_as', _set_handler.run_as::text,
        'set_by', _set_handler.caller::text, 'concurrency', _set_handler.concurrency,
        'timeout', _set_handler.timeout));
END $$;

-- The handler queues an executor serving role `run_as` may claim from: active ones (the queue
-- is not paused, the handler and both roles exist, and the role that set it is still a member
-- of run_as), with how to call the handler.  (PL/pgSQL, not SQL: it runs for every claim, and
-- only PL/pgSQL keeps its plan for the session.)
CREATE OR REPLACE FUNCTION job._runnable_handlers(run_as regrole)
RETURNS TABLE (queue text, concurrency int, timeout interval, handler_schema name, handler_name name,
               returns_jsonb boolean)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN QUERY
    SELECT hd.queue, hd.concurrency, hd.timeout, n.nspname, p.proname,
           p.prorettype = 'jsonb'::regtype
      FROM job.handler_defs hd
      JOIN job.queues q ON q.name = hd.queue AND NOT q.paused
      JOIN pg_catalog.pg_proc p ON p.oid = hd.handler
      JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
     WHERE hd.run_as = _runnable_handlers.run_as
       AND EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.oid = hd.run_as)
       AND EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.oid = hd.set_by)
       AND pg_catalog.pg_has_role(hd.set_by, hd.run_as, 'MEMBER')
       AND job._may_run_as(hd.set_by, hd.run_as);
END $$;


COMMENT ON FUNCTION job.grant_queue(text, regrole, text) IS 'Lets a role produce into or work a queue; from a queue''s first grant of a duty on, only granted roles may do that duty on it (audited).';
COMMENT ON FUNCTION job.revoke_queue(text, regrole, text) IS 'Takes back a per-queue grant; a queue without grants of a duty is open to every holder of the duty (audited).';

-- New functions are executable by PUBLIC until revoked: every duty is granted explicitly.
REVOKE EXECUTE ON FUNCTION job._setting_interval(text, interval), job._check_at_most(text, interval, text, interval),
    job._check_limit(text, int, int), job._may(text, text), job._require_may(text, text),
    job._require_work_on_jobs(bigint[]), job._check_duty(text), job.grant_queue(text, regrole, text),
    job.revoke_queue(text, regrole, text),
    job._replace_pending(text, text, text, jsonb, timestamptz, interval, oid),
    job._may_run_as(oid, oid) FROM PUBLIC;

-- ---------------------------------------------------------------------------------------
-- Deliveries hardened (issue 19): paths stay under the endpoint's URL, delivery headers repeat
-- none of the endpoint's, chosen webhook ids are key_<key>, job.enqueue on an endpoint's
-- queue is checked like job.deliver, URLs are shown redacted (job.endpoint_url reads them),
-- and a starting sender reads the recent claims into its rate windows.
-- ---------------------------------------------------------------------------------------

CREATE FUNCTION "_check_delivery_headers"(
	"what" TEXT, /* & str */
	"headers" jsonb, /* pgrx :: JsonB */
	"endpoint_headers" jsonb /* pgrx :: JsonB */
) RETURNS void
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_check_delivery_headers_wrapper';

CREATE FUNCTION "_check_webhook_key"(
	"what" TEXT, /* & str */
	"key" TEXT /* & str */
) RETURNS void
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_check_webhook_key_wrapper';

CREATE FUNCTION "_redacted_url"(
	"url" TEXT /* & str */
) RETURNS TEXT /* String */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_redacted_url_wrapper';

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
    producer oid;
BEGIN
    -- A drop of this queue in progress makes this fail at once instead of waiting for it.
    PERFORM job._guard_queue(enqueue.queue);
    SELECT qs.id, qs.name, qs.max_retries, qs.idempotency_window, qs.max_payload_bytes, qs.produce_granted INTO q
      FROM job.queues qs WHERE qs.name = enqueue.queue;
    IF NOT FOUND THEN
        PERFORM job._require_queue(enqueue.queue);  -- raises
    END IF;
    IF q.produce_granted THEN
        PERFORM job._require_may(q.name, 'produce');  -- the queue has per-queue grants
    END IF;
    IF enqueue.payload IS NULL OR jsonb_typeof(enqueue.payload) <> 'object' THEN
        PERFORM job._check_payload('payload', enqueue.payload);
    END IF;
    IF pg_column_size(enqueue.payload) > q.max_payload_bytes THEN
        PERFORM job._check_payload_size(job._require_queue(q.name), 'payload', enqueue.payload);
    END IF;
    IF enqueue.payload ? 'body' AND enqueue.payload ?| '{path,headers,webhook_id}' THEN
        -- What the sender would read as a delivery's path, headers or webhook id.
        PERFORM job._check_enqueued_delivery(q.name, enqueue.payload, 'payload.');
    END IF;
    IF enqueue.delay IS NOT NULL THEN
        IF enqueue.run_at IS NOT NULL THEN
            RAISE EXCEPTION 'give run_at or delay, not both' USING ERRCODE = 'invalid_parameter_value';
        END IF;
        PERFORM job._check_interval('delay', enqueue.delay, true);
        PERFORM job._check_at_most('delay', enqueue.delay, 'pg_jobqueue.max_delay', interval '365 days');
        start_at := now() + enqueue.delay;
    ELSIF enqueue.run_at IS NOT NULL THEN
        IF NOT isfinite(enqueue.run_at) THEN
            RAISE EXCEPTION 'run_at must be a finite time, got %', enqueue.run_at USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF enqueue.run_at > now() THEN
            -- (A job due years ahead holds its order key, or its singleton's place, as long.)
            PERFORM job._check_at_most('run_at - now()', enqueue.run_at - now(), 'pg_jobqueue.max_delay',
                                       interval '365 days');
        END IF;
        start_at := enqueue.run_at;
    END IF;
    IF enqueue.priority IS NULL THEN
        PERFORM job._check_not_null('priority', enqueue.priority);
    END IF;
    IF enqueue.max_retries < 0 OR enqueue.max_retries > 1000 THEN
        RAISE EXCEPTION 'max_retries must be between 0 and 1000, got %', enqueue.max_retries USING ERRCODE = 'invalid_parameter_value';
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
            producer := (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = job._calling_role());
            existing_id := job._replace_pending(q.name, enqueue.singleton_key, enqueue.debounce_key,
                                                enqueue.payload, start_at, enqueue.debounce_max_wait, producer);
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
                               idempotency_key, payload, concurrency_key, order_key, singleton_key, debounce_key,
                               enqueued_by)
    VALUES (coalesce(new_id, nextval('job.job_id_seq')), start_at, enqueue.priority,
            coalesce(enqueue.max_retries, q.max_retries),
            CASE WHEN start_at <= now() THEN 'waiting' ELSE 'scheduled' END,
            q.name, enqueue.job_type, enqueue.idempotency_key, enqueue.payload, enqueue.concurrency_key,
            enqueue.order_key, enqueue.singleton_key, enqueue.debounce_key, producer)
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
    IF q.produce_granted THEN
        PERFORM job._require_may(q.name, 'produce');
    END IF;
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
    FOR bad IN SELECT p.payload, p.ord FROM unnest(enqueue_many.payloads) WITH ORDINALITY AS p(payload, ord)
                WHERE p.payload ? 'body' AND p.payload ?| '{path,headers,webhook_id}' ORDER BY p.ord
    LOOP
        PERFORM job._check_enqueued_delivery(q.name, bad.payload, format('payloads[%s].', bad.ord));
    END LOOP;
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
        || jsonb_build_object('url', job._redacted_url(after.url),
                              'header_names', (SELECT coalesce(jsonb_agg(k ORDER BY k), '[]') FROM jsonb_object_keys(headers) k),
                              'secret_given', secret IS NOT NULL));
END $$;

-- The endpoint's full URL (audited): job.endpoints shows the monitor only its origin, since a
-- path or query can hold a token (Slack-style URLs).
CREATE OR REPLACE FUNCTION job.endpoint_url(name text)
RETURNS text LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    e job.endpoint_defs := job._require_endpoint(name);
BEGIN
    PERFORM job._audit('read_endpoint_url', jsonb_build_object('name', e.name));
    RETURN e.url;
END $$;
COMMENT ON FUNCTION job.endpoint_url(text) IS 'The endpoint''s full URL, path and query included (job.endpoints shows them redacted); audited.';

-- Raises 22023 unless a delivery payload (as job.deliver writes it: a "body" with "path",
-- "headers", "webhook_id") is fit for endpoint `e`: a path that stays under its URL, headers
-- that repeat none of the endpoint's nor name a reserved one, a webhook_id of the allowed
-- characters.  `what` prefixes the argument names ('' for job.deliver's own, 'payload.' for
-- a job.enqueue).  The sender checks them again before sending.
CREATE OR REPLACE FUNCTION job._check_delivery(e job.endpoint_defs, payload jsonb, what text)
RETURNS void LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF payload ? 'path' THEN
        IF jsonb_typeof(payload -> 'path') <> 'string' THEN
            RAISE EXCEPTION '%path must be a string', what USING ERRCODE = 'invalid_parameter_value';
        END IF;
        PERFORM job._check_delivery_path(payload ->> 'path');
    END IF;
    IF payload ? 'headers' THEN
        PERFORM job._check_delivery_headers(what || 'headers', payload -> 'headers',
                                            (SELECT s.headers FROM job.endpoint_secrets s WHERE s.endpoint = e.name));
    END IF;
    IF payload ? 'webhook_id' THEN
        IF jsonb_typeof(payload -> 'webhook_id') <> 'string' THEN
            RAISE EXCEPTION '%webhook_id must be a string', what USING ERRCODE = 'invalid_parameter_value';
        END IF;
        PERFORM job._check_webhook_key(CASE what WHEN '' THEN 'idempotency_key' ELSE what || 'webhook_id' END,
                                       payload ->> 'webhook_id');
    END IF;
END $$;

-- Called by job.enqueue and job.enqueue_many for a payload that job.deliver could have
-- written (an object with "body" and any of "path", "headers", "webhook_id"): on an
-- endpoint's queue it is checked as job.deliver checks its arguments.
CREATE OR REPLACE FUNCTION job._check_enqueued_delivery(queue_name text, payload jsonb, what text)
RETURNS void LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    e job.endpoint_defs;
BEGIN
    SELECT * INTO e FROM job.endpoint_defs d WHERE d.queue = queue_name;
    IF FOUND THEN
        PERFORM job._check_delivery(e, payload, what);
    END IF;
END $$;

-- Enqueues one delivery to an existing endpoint, as a job of its queue (idempotency key,
-- delay, priority and the job views work as for any job).  The job's payload is
-- {"body": …} with the path, headers and webhook id it was given; its job_type is
-- event_type.  The request's webhook-id is "key_<idempotency key>", or "msg_<job id>": a
-- producer's key can never name the id another delivery is given.  A
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
    payload jsonb;
BEGIN
    PERFORM job._check_not_null('body', body);
    payload := jsonb_build_object('body', body)
               || jsonb_strip_nulls(jsonb_build_object('path', path, 'headers', headers,
                                                       'webhook_id', idempotency_key));
    PERFORM job._check_delivery(e, payload, '');
    RETURN job.enqueue(e.queue, payload,
                       run_at => run_at, delay => delay, priority => priority,
                       idempotency_key => idempotency_key, job_type => event_type,
                       concurrency_key => concurrency_key, order_key => order_key);
END $$;

-- The claims of the last `within` on the queues of rate-limited endpoints, oldest first, as
-- seconds ago: a starting sender counts them into its rate windows, so that a restart cannot
-- start a second full window's worth of requests inside one second.  (A job's claimed_at is
-- its last attempt's claim, kept when it fails and moved to finished_jobs when it ends.)
CREATE OR REPLACE FUNCTION job._recent_delivery_starts(within interval)
RETURNS TABLE (endpoint text, rate_limit int, started_ago float8)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp AS $$
    SELECT d.name, d.rate_limit, extract(epoch FROM clock_timestamp() - c.claimed_at)::float8
      FROM job.endpoint_defs d
     CROSS JOIN LATERAL (
           SELECT l.claimed_at FROM job.live_jobs l
            WHERE l.queue = d.queue AND l.claimed_at > clock_timestamp() - within
           UNION ALL
           SELECT f.claimed_at FROM job.finished_jobs f
            WHERE f.queue = d.queue AND f.state IN ('completed', 'dead', 'cancelled')
              AND f.finished_at > clock_timestamp() - within AND f.claimed_at > clock_timestamp() - within
           ) c
     WHERE d.rate_limit IS NOT NULL
     ORDER BY d.name, c.claimed_at
$$;

-- Claims up to `max_jobs` deliveries for the sender, from active endpoints in random order,
-- each within its concurrency (job._free_slots, as handler claims count it) and its rate
-- limit (the sender passes how many requests each
-- endpoint started in the last second: `recent_starts`, paired with `endpoints`).  Each row
-- is one request to make, with its endpoint's settings; `webhook_id` is the key the producer
-- chose, if any (the sender makes the id of it: src/delivery/mod.rs).  A job enqueued on an endpoint's queue
-- without job.deliver is posted with its payload as the body (unless that payload is an
-- object with a "body" key: then it is read as job.deliver writes it).
CREATE OR REPLACE FUNCTION job._claim_deliveries(worker text, max_jobs int, endpoints text[], recent_starts int[])
RETURNS SETOF job._delivery_claim
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
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
        SELECT e.name AS endpoint, c.id AS job_id, c.lease_token AS token,
               (CASE WHEN envelope THEN c.payload -> 'body' ELSE c.payload END)::text AS body,
               CASE WHEN envelope THEN c.payload ->> 'path' END AS path,
               CASE WHEN envelope AND jsonb_typeof(c.payload -> 'headers') = 'object' THEN c.payload -> 'headers' END AS headers,
               CASE WHEN envelope THEN c.payload ->> 'webhook_id' END AS webhook_id,
               e.url, e.method, e.headers AS endpoint_headers, e.secrets,
               (extract(epoch FROM e.timeout) * 1000)::bigint AS timeout_ms, e.rate_limit
          FROM job.dequeue(e.queue, worker, wanted, e.timeout + interval '30 seconds') c
         CROSS JOIN LATERAL (SELECT jsonb_typeof(c.payload) = 'object' AND c.payload ? 'body' AS envelope) x;
        GET DIAGNOSTICS claimed = ROW_COUNT;
        remaining := remaining - claimed;
    END LOOP;
END $$;

CREATE OR REPLACE VIEW job.endpoints AS
SELECT d.name, job._redacted_url(d.url) AS url, d.method, d.queue,
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

COMMENT ON VIEW job.endpoints IS 'HTTP endpoints: URL (its origin; path and query redacted: job.endpoint_url reads it whole), method, header names (never values or secrets), limits, state (active, paused, disabled and why), requests in flight, consecutive failures and the last answer.';

-- New functions are nobody's until a recipe grants them (privileges.sql); the views' pure
-- helper is everyone's.
REVOKE EXECUTE ON FUNCTION job._check_delivery_headers(text, jsonb, jsonb), job._check_webhook_key(text, text),
    job.endpoint_url(text), job._check_delivery(job.endpoint_defs, jsonb, text),
    job._check_enqueued_delivery(text, jsonb, text), job._recent_delivery_starts(interval),
    job._redacted_url(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION job._redacted_url(text) TO PUBLIC;  -- after the revoke, as a fresh install has it

-- ---------------------------------------------------------------------------------------
-- issue 20: typed seams (the functions dropped at the top of this script, created again
-- with their new signatures, and the executors' leases read through job._claimer_pid)
-- ---------------------------------------------------------------------------------------

-- Records what the sender's finished requests came to, in one transaction:
-- * `outcomes`, one per attempt: job_id, token, and either `result` (delivered: the job
--   completes with it) or `error`, `permanent`, `http_status`, `retry_after_ms` and `detail`
--   (the attempt's class, latency and webhook id, kept in the job's errors entry): the job
--   fails through job.fail's rules.  An attempt whose claim is no longer current changes
--   nothing.
-- * `stats`, one per endpoint: what to add to its counters, and whether it answered 410
--   Gone.  An endpoint that did, or that has failed `disable_after` times in a row, is
--   disabled (audited).
CREATE OR REPLACE FUNCTION job._record_deliveries(outcomes job._delivery_outcome[], stats job._delivery_tally[], disable_after int)
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
      FROM unnest(outcomes) o
     WHERE o.result IS NOT NULL;
    IF ids IS NOT NULL THEN
        PERFORM job._finish(ids, '{running}', 'completed', results, NULL, tokens);
    END IF;
    FOR f IN SELECT * FROM unnest(outcomes) o WHERE o.result IS NULL
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
      FROM unnest(stats) x
     WHERE st.endpoint = x.endpoint;

    FOR gone IN
        SELECT d.name, CASE WHEN x.gone THEN 'the endpoint answered 410 Gone'
                            ELSE format('%s consecutive failed attempts (pg_jobqueue.http_disable_after)', st.consecutive_failures)
                       END AS reason
          FROM unnest(stats) x
          JOIN job.endpoint_defs d ON d.name = x.endpoint AND d.disabled_reason IS NULL
          JOIN job.endpoint_stats st ON st.endpoint = d.name
         WHERE x.gone OR st.consecutive_failures >= disable_after
    LOOP
        UPDATE job.endpoint_defs d SET disabled_reason = gone.reason, disabled_at = now()
         WHERE d.name = gone.name;
        PERFORM job._audit('disable_endpoint', jsonb_build_object('name', gone.name, 'reason', gone.reason));
    END LOOP;
END $$;

-- Expires the leases of running jobs held by executors (or the sender) that are gone, so that the scheduler
-- takes them back at once instead of a handler's timeout plus 30 seconds later: those
-- claimed by `gone` (executors the scheduler saw stop, named as in their claims), and, when
-- `alive` is given (the process ids of this database's running executors and sender), those
-- of every other executor or sender (the scheduler passes it as it starts, before it starts executors: their
-- jobs are of executors that died with the server, or with a scheduler before it).  The
-- process id in a claim is read by job._claimer_pid (src/worker/claimer.rs, which writes
-- it too).  Returns how many.
CREATE OR REPLACE FUNCTION job._expire_executor_leases(gone text[], alive int[])
RETURNS bigint LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    expired bigint;
BEGIN
    UPDATE job.live_jobs l SET lease_expires_at = now()
     WHERE l.state = 'running' AND l.lease_expires_at > now()
       AND (l.claimed_by = ANY (gone)
            OR alive IS NOT NULL AND job._claimer_pid(l.claimed_by) <> ALL (alive));
    GET DIAGNOSTICS expired = ROW_COUNT;
    RETURN expired;
END $$;

REVOKE EXECUTE ON FUNCTION job._claim_deliveries(text, int, text[], int[]),
    job._record_deliveries(job._delivery_outcome[], job._delivery_tally[], int) FROM PUBLIC;
