-- pg_jobqueue queues: creating, changing, pausing and dropping them (all audited).

-- The settings of a queue that create_queue and alter_queue take, by name: what `reset` may
-- name.
CREATE FUNCTION job._queue_setting_names() RETURNS text[] LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp AS $$
    SELECT '{max_retries,backoff_base,backoff_max,jitter,lease,idempotency_window,retention,
             max_payload_bytes,concurrency,key_concurrency,rate_limit,rate_period,key_rate_limit,
             key_rate_period,fair}'::text[]
$$;

-- Writes a queue's settings: creates it (if create_missing) with the defaults for what the call
-- does not name, or changes only what the call names (a NULL argument keeps the current value;
-- a setting in `reset` goes back to its default, for flow control: no limit).  The one place
-- the settings are checked, written, audited and their slots kept; job.create_queue and
-- job.alter_queue are its two faces.
CREATE FUNCTION job._set_queue(
    name text, create_missing boolean, reset text[],
    max_retries int, backoff_base interval, backoff_max interval, jitter float8, lease interval,
    idempotency_window interval, retention interval, max_payload_bytes int, concurrency int,
    key_concurrency int, rate_limit int, rate_period interval, key_rate_limit int,
    key_rate_period interval, fair boolean
) RETURNS void LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
DECLARE
    d job.queues;      -- a new queue's settings (set below, by name)
    unknown text[];
    before job.queues;
    base job.queues;   -- what a setting the call does not name keeps
    v job.queues;      -- the settings to write
    after job.queues;
    quiet constant text[] := '{id,name,paused,holds,serial_keys,flow_limited,produce_granted,work_granted,created_at,updated_at}';
BEGIN
    -- A new queue's settings (the README's "create_queue"); the rest NULL: no limit.
    d.max_retries := 5;
    d.backoff_base := interval '1 second';
    d.backoff_max := interval '60 seconds';
    d.jitter := 0.1;
    d.lease := interval '5 minutes';
    d.idempotency_window := interval '24 hours';
    d.retention := interval '7 days';
    d.fair := false;
    PERFORM job._check_name('queue name', name);
    reset := coalesce(reset, '{}');
    unknown := ARRAY(SELECT coalesce(r, 'NULL') FROM unnest(reset) r
                      WHERE r IS NULL OR r <> ALL (job._queue_setting_names()));
    IF cardinality(unknown) > 0 THEN
        RAISE EXCEPTION 'reset names no setting of a queue: %', array_to_string(unknown, ', ')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'The settings: ' || array_to_string(job._queue_setting_names(), ', ') || '.';
    END IF;
    unknown := ARRAY(SELECT r FROM unnest(reset) r
                      WHERE (r = 'max_retries' AND max_retries IS NOT NULL) OR (r = 'backoff_base' AND backoff_base IS NOT NULL)
                         OR (r = 'backoff_max' AND backoff_max IS NOT NULL) OR (r = 'jitter' AND jitter IS NOT NULL)
                         OR (r = 'lease' AND lease IS NOT NULL) OR (r = 'idempotency_window' AND idempotency_window IS NOT NULL)
                         OR (r = 'retention' AND retention IS NOT NULL) OR (r = 'max_payload_bytes' AND max_payload_bytes IS NOT NULL)
                         OR (r = 'concurrency' AND concurrency IS NOT NULL) OR (r = 'key_concurrency' AND key_concurrency IS NOT NULL)
                         OR (r = 'rate_limit' AND rate_limit IS NOT NULL) OR (r = 'rate_period' AND rate_period IS NOT NULL)
                         OR (r = 'key_rate_limit' AND key_rate_limit IS NOT NULL) OR (r = 'key_rate_period' AND key_rate_period IS NOT NULL)
                         OR (r = 'fair' AND fair IS NOT NULL));
    IF cardinality(unknown) > 0 THEN
        RAISE EXCEPTION 'a setting both given and reset: %', array_to_string(unknown, ', ')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    -- A queue created meanwhile by another call is changed, not overwritten with defaults.
    LOOP
        SELECT * INTO before FROM job.queues q WHERE q.name = _set_queue.name FOR UPDATE;
        IF before.name IS NULL AND NOT create_missing THEN
            PERFORM job._require_queue(name);  -- raises: no such queue
        END IF;
        base := CASE WHEN before.name IS NULL THEN d ELSE before END;
        v := base;
        v.max_retries        := coalesce(max_retries, CASE WHEN 'max_retries' = ANY (reset) THEN d.max_retries ELSE base.max_retries END);
        v.backoff_base       := coalesce(backoff_base, CASE WHEN 'backoff_base' = ANY (reset) THEN d.backoff_base ELSE base.backoff_base END);
        v.backoff_max        := coalesce(backoff_max, CASE WHEN 'backoff_max' = ANY (reset) THEN d.backoff_max ELSE base.backoff_max END);
        v.jitter             := coalesce(jitter, CASE WHEN 'jitter' = ANY (reset) THEN d.jitter ELSE base.jitter END);
        v.lease              := coalesce(lease, CASE WHEN 'lease' = ANY (reset) THEN d.lease ELSE base.lease END);
        v.idempotency_window := coalesce(idempotency_window, CASE WHEN 'idempotency_window' = ANY (reset) THEN d.idempotency_window ELSE base.idempotency_window END);
        v.retention          := coalesce(retention, CASE WHEN 'retention' = ANY (reset) THEN d.retention ELSE base.retention END);
        v.max_payload_bytes  := coalesce(max_payload_bytes, CASE WHEN 'max_payload_bytes' = ANY (reset) THEN d.max_payload_bytes ELSE base.max_payload_bytes END);
        v.concurrency        := coalesce(concurrency, CASE WHEN 'concurrency' = ANY (reset) THEN d.concurrency ELSE base.concurrency END);
        v.key_concurrency    := coalesce(key_concurrency, CASE WHEN 'key_concurrency' = ANY (reset) THEN d.key_concurrency ELSE base.key_concurrency END);
        v.rate_limit         := coalesce(rate_limit, CASE WHEN 'rate_limit' = ANY (reset) THEN d.rate_limit ELSE base.rate_limit END);
        v.rate_period        := coalesce(rate_period, CASE WHEN 'rate_period' = ANY (reset) THEN d.rate_period ELSE base.rate_period END);
        v.key_rate_limit     := coalesce(key_rate_limit, CASE WHEN 'key_rate_limit' = ANY (reset) THEN d.key_rate_limit ELSE base.key_rate_limit END);
        v.key_rate_period    := coalesce(key_rate_period, CASE WHEN 'key_rate_period' = ANY (reset) THEN d.key_rate_period ELSE base.key_rate_period END);
        v.fair               := coalesce(fair, CASE WHEN 'fair' = ANY (reset) THEN d.fair ELSE base.fair END);
        -- A period goes with its limit: lifting the limit drops the period it kept; a new
        -- limit without one gets 1 second.  A period given without any limit is refused.
        IF rate_period IS NOT NULL AND v.rate_limit IS NULL THEN
            RAISE EXCEPTION 'rate_period needs a rate_limit' USING ERRCODE = 'invalid_parameter_value',
                HINT = 'Give rate_limit (starts per rate_period) too, or leave rate_period out.';
        ELSIF key_rate_period IS NOT NULL AND v.key_rate_limit IS NULL THEN
            RAISE EXCEPTION 'key_rate_period needs a key_rate_limit' USING ERRCODE = 'invalid_parameter_value',
                HINT = 'Give key_rate_limit (starts per key_rate_period and key) too, or leave key_rate_period out.';
        END IF;
        v.rate_period := CASE WHEN v.rate_limit IS NOT NULL THEN coalesce(v.rate_period, interval '1 second') END;
        v.key_rate_period := CASE WHEN v.key_rate_limit IS NOT NULL THEN coalesce(v.key_rate_period, interval '1 second') END;

        -- Bounds (the README's "Settings"), on what would be written.
        IF v.max_retries < 0 OR v.max_retries > 1000 THEN
            RAISE EXCEPTION 'max_retries must be between 0 and 1000, got %', v.max_retries USING ERRCODE = 'invalid_parameter_value';
        END IF;
        PERFORM job._check_interval('backoff_base', v.backoff_base, false);
        PERFORM job._check_interval('backoff_max', v.backoff_max, false);
        IF v.backoff_max < v.backoff_base THEN
            RAISE EXCEPTION 'backoff_max (%) must not be less than backoff_base (%)', v.backoff_max, v.backoff_base
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF v.jitter < 0 OR v.jitter > 1 OR v.jitter = 'NaN'::float8 THEN
            RAISE EXCEPTION 'jitter must be between 0 and 1, got %', v.jitter USING ERRCODE = 'invalid_parameter_value';
        END IF;
        PERFORM job._check_interval('lease', v.lease, false);
        PERFORM job._check_interval('idempotency_window', v.idempotency_window, true);
        PERFORM job._check_interval('retention', v.retention, true);
        -- concurrency is one slot row per unit.
        PERFORM job._check_limit('max_payload_bytes', v.max_payload_bytes, 100000000);
        PERFORM job._check_limit('concurrency', v.concurrency, 10000);
        PERFORM job._check_limit('key_concurrency', v.key_concurrency, 10000);
        PERFORM job._check_limit('rate_limit', v.rate_limit, 1000000);
        PERFORM job._check_limit('key_rate_limit', v.key_rate_limit, 1000000);
        IF v.rate_period IS NOT NULL THEN
            PERFORM job._check_interval('rate_period', v.rate_period, false);
        END IF;
        IF v.key_rate_period IS NOT NULL THEN
            PERFORM job._check_interval('key_rate_period', v.key_rate_period, false);
        END IF;

        IF before.name IS NOT NULL THEN
            UPDATE job.queues q
               SET max_retries = v.max_retries, backoff_base = v.backoff_base, backoff_max = v.backoff_max,
                   jitter = v.jitter, lease = v.lease, idempotency_window = v.idempotency_window,
                   retention = v.retention, max_payload_bytes = v.max_payload_bytes,
                   concurrency = v.concurrency, key_concurrency = v.key_concurrency,
                   rate_limit = v.rate_limit, rate_period = v.rate_period, key_rate_limit = v.key_rate_limit,
                   key_rate_period = v.key_rate_period, fair = v.fair, updated_at = now()
             WHERE q.name = before.name
            RETURNING * INTO after;
            EXIT;
        END IF;
        INSERT INTO job.queues (name, max_retries, backoff_base, backoff_max, jitter, lease,
                                idempotency_window, retention, max_payload_bytes, concurrency,
                                key_concurrency, rate_limit, rate_period, key_rate_limit, key_rate_period, fair)
        VALUES (name, v.max_retries, v.backoff_base, v.backoff_max, v.jitter, v.lease, v.idempotency_window,
                v.retention, v.max_payload_bytes, v.concurrency, v.key_concurrency, v.rate_limit,
                v.rate_period, v.key_rate_limit, v.key_rate_period, v.fair)
        ON CONFLICT ON CONSTRAINT queues_pkey DO NOTHING
        RETURNING * INTO after;
        EXIT WHEN after.name IS NOT NULL;
    END LOOP;

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
        PERFORM job._audit('create_queue', to_jsonb(after) - array_remove(quiet, 'name'));
    ELSIF to_jsonb(before) - '{created_at,updated_at}'::text[] <> to_jsonb(after) - '{created_at,updated_at}'::text[] THEN
        PERFORM job._audit('alter_queue', jsonb_build_object('name', name, 'before', to_jsonb(before) - quiet,
                                                             'after', to_jsonb(after) - quiet));
    END IF;
END $$;

-- Creates the queue, or changes the settings the call names of an existing one (audited
-- either way).  Flow control (NULL: no limit; see sql/flow.sql): `concurrency` jobs of the
-- queue running at once, `key_concurrency` per concurrency key; at most `rate_limit` starts per
-- `rate_period` (default 1 second) for the queue, `key_rate_limit` per `key_rate_period` for
-- each key; `fair`: claims take jobs round-robin across concurrency keys.  Every argument
-- defaults to NULL, "not named": a new queue takes the default (max_retries 5, backoff 1 to 60
-- seconds, jitter 0.1, lease 5 minutes, idempotency window 24 hours, retention 7 days, no
-- limits, not fair), an existing one keeps what it has.
CREATE FUNCTION job.create_queue(
    name text,
    max_retries int DEFAULT NULL,
    backoff_base interval DEFAULT NULL,
    backoff_max interval DEFAULT NULL,
    jitter float8 DEFAULT NULL,
    lease interval DEFAULT NULL,
    idempotency_window interval DEFAULT NULL,
    retention interval DEFAULT NULL,
    max_payload_bytes int DEFAULT NULL,
    concurrency int DEFAULT NULL,
    key_concurrency int DEFAULT NULL,
    rate_limit int DEFAULT NULL,
    rate_period interval DEFAULT NULL,
    key_rate_limit int DEFAULT NULL,
    key_rate_period interval DEFAULT NULL,
    fair boolean DEFAULT NULL
) RETURNS void LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
    SELECT job._set_queue(name, true, NULL, max_retries, backoff_base, backoff_max, jitter, lease,
                          idempotency_window, retention, max_payload_bytes, concurrency,
                          key_concurrency, rate_limit, rate_period, key_rate_limit,
                          key_rate_period, fair)
$$;

COMMENT ON FUNCTION job.create_queue(text, int, interval, interval, float8, interval, interval, interval, int, int, int, int, interval, int, interval, boolean) IS 'Creates a queue with the settings given and the defaults for the rest, or changes only the settings given of an existing one (NULL or left out: unchanged): retries and backoff, lease, idempotency window, retention, largest payload (bytes) and flow control; audited.';

-- Changes the settings the call names of an existing queue (NULL or left out: unchanged), and
-- puts those named in `reset` back to their defaults (for max_payload_bytes and flow control:
-- no limit).  Refuses a queue that does not exist.
CREATE FUNCTION job.alter_queue(
    name text,
    max_retries int DEFAULT NULL,
    backoff_base interval DEFAULT NULL,
    backoff_max interval DEFAULT NULL,
    jitter float8 DEFAULT NULL,
    lease interval DEFAULT NULL,
    idempotency_window interval DEFAULT NULL,
    retention interval DEFAULT NULL,
    max_payload_bytes int DEFAULT NULL,
    concurrency int DEFAULT NULL,
    key_concurrency int DEFAULT NULL,
    rate_limit int DEFAULT NULL,
    rate_period interval DEFAULT NULL,
    key_rate_limit int DEFAULT NULL,
    key_rate_period interval DEFAULT NULL,
    fair boolean DEFAULT NULL,
    reset text[] DEFAULT NULL
) RETURNS void LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
    SELECT job._set_queue(name, false, reset, max_retries, backoff_base, backoff_max, jitter, lease,
                          idempotency_window, retention, max_payload_bytes, concurrency,
                          key_concurrency, rate_limit, rate_period, key_rate_limit,
                          key_rate_period, fair)
$$;

COMMENT ON FUNCTION job.alter_queue(text, int, interval, interval, float8, interval, interval, interval, int, int, int, int, interval, int, interval, boolean, text[]) IS 'Changes only the settings given of an existing queue (NULL or left out: unchanged) and puts those named in reset back to their defaults (flow control and max_payload_bytes: no limit); audited.';

-- Drops the queue with its history, keys, schedules and handler; refuses while it has
-- unfinished jobs unless forced.
CREATE FUNCTION job.drop_queue(name text, force boolean DEFAULT false)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    q job.queues := job._require_queue(name);
    unfinished bigint;
    history bigint;
BEGIN
    PERFORM job._check_not_null('force', force);
    -- Waits out the queue's in-flight producers, and makes new ones fail at once until this
    -- commits (job._guard_queue), so no job slips into the queue between the check below and
    -- the delete.  Producers of other queues never wait.
    PERFORM job._lock_queue_for_drop(q.name);
    q := job._require_queue(name);  -- a concurrent drop may have committed while we waited
    SELECT count(*) INTO unfinished FROM job.live_jobs WHERE queue = q.name;
    IF unfinished > 0 AND NOT force THEN
        RAISE EXCEPTION 'queue % still has % unfinished (waiting, scheduled or running) jobs',
            quote_literal(q.name), unfinished
            USING ERRCODE = 'object_in_use',
                  HINT = 'Let them finish, cancel them, or drop with force => true to discard them.';
    END IF;
    DELETE FROM job.live_jobs WHERE queue = q.name;
    DELETE FROM job.finished_jobs WHERE queue = q.name;
    GET DIAGNOSTICS history = ROW_COUNT;
    DELETE FROM job.idempotency_keys WHERE queue = q.name;
    DELETE FROM job.queue_counters WHERE queue = q.name;
    DELETE FROM job.queue_depth WHERE queue = q.name;
    DELETE FROM job.queues WHERE queues.name = q.name;  -- schedules and handler go with it
    PERFORM job._audit('drop_queue', jsonb_build_object('name', q.name, 'force', force), unfinished + history);
END $$;

COMMENT ON FUNCTION job.drop_queue(text, boolean) IS 'Drops a queue with its jobs, history, idempotency keys, schedules, handler and endpoint; refuses while it has waiting, scheduled or running jobs unless force (audited).';

CREATE FUNCTION job._set_paused(queue_name text, paused boolean)
RETURNS void LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    q job.queues := job._require_queue(queue_name);
BEGIN
    UPDATE job.queues qs SET paused = _set_paused.paused, updated_at = now()
     WHERE qs.name = q.name AND qs.paused IS DISTINCT FROM _set_paused.paused;
    IF NOT paused THEN
        PERFORM job._wake_queue_on_commit(q.id);
    END IF;
    PERFORM job._audit(CASE WHEN paused THEN 'pause_queue' ELSE 'resume_queue' END,
                       jsonb_build_object('name', queue_name));
END $$;

-- A paused queue accepts enqueues but hands out nothing.
CREATE FUNCTION job.pause_queue(name text) RETURNS void LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
    SELECT job._set_paused(name, true)
$$;

COMMENT ON FUNCTION job.pause_queue(text) IS 'Pauses a queue: it still accepts enqueues but hands out no job (dequeue, handlers, deliveries) until job.resume_queue (audited).';

CREATE FUNCTION job.resume_queue(name text) RETURNS void LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
    SELECT job._set_paused(name, false)
$$;

COMMENT ON FUNCTION job.resume_queue(text) IS 'Resumes a paused queue and wakes its waiting workers (audited).';

-- The queue's opaque number, the payload of its wake-up notifications (see the README's
-- "Wake-ups"): a worker LISTENs on pg_jobqueue and dequeues when a notification carries it.
CREATE FUNCTION job.queue_id(queue text) RETURNS bigint LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    q job.queues := job._require_queue(queue);
BEGIN
    IF q.work_granted THEN
        PERFORM job._require_may(q.name, 'work');
    END IF;
    RETURN q.id;
END $$;

COMMENT ON FUNCTION job.queue_id(text) IS 'The queue''s number: the payload of its wake-up notifications on channel pg_jobqueue.';

-- Per-queue grants of the produce and work duties.  The duty's functions (the README's Roles
-- recipes) say what a role may do; a queue's grants say on which queues: once a queue has a
-- grant of a duty, only members of its granted roles (and superusers) may do that duty on it.
-- A queue without any grant of a duty stays open to every role holding the duty's functions,
-- as in 0.4.0, so that existing databases and recipes keep working.

-- Whether the calling role (job._calling_role: the session's role, not the owner these
-- functions run as) may do `duty` on `queue`, a queue that has grants of it.
CREATE FUNCTION job._may(queue text, duty text)
RETURNS boolean LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp AS $$
    SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.rolname = job._calling_role() AND r.rolsuper)
        OR EXISTS (SELECT 1 FROM job.queue_grant_defs g
                    WHERE g.queue = _may.queue AND g.duty = _may.duty
                      AND pg_catalog.pg_has_role(job._calling_role(), g.grantee, 'MEMBER'))
$$;

-- Raises (42501) unless the calling role may do `duty` on `queue`, which has grants of it.
CREATE FUNCTION job._require_may(queue text, duty text)
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
CREATE FUNCTION job._require_work_on_jobs(ids bigint[])
RETURNS void LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM job._require_may(q.name, 'work')
       FROM job.queues q
      WHERE q.work_granted AND q.name IN (SELECT l.queue FROM job.live_jobs l WHERE l.id = ANY (ids));
END $$;

CREATE FUNCTION job._check_duty(duty text)
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
CREATE FUNCTION job.grant_queue(queue text, role regrole, duty text)
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
CREATE FUNCTION job.revoke_queue(queue text, role regrole, duty text)
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

CREATE VIEW job.queue_grants AS
SELECT g.queue, g.duty, g.grantee AS role, g.granted_by, g.granted_at
  FROM job.queue_grant_defs g;

COMMENT ON VIEW job.queue_grants IS 'Per-queue grants (job.grant_queue): which roles may produce into or work a queue; a queue without a grant of a duty is open to every role holding that duty''s functions.';

COMMENT ON COLUMN job.queue_grants.queue IS 'The queue the grant is on.';
COMMENT ON COLUMN job.queue_grants.duty IS 'produce (enqueue, enqueue_many, deliver) or work (dequeue, complete, fail, heartbeat and the rest of a worker''s calls).';
COMMENT ON COLUMN job.queue_grants.role IS 'The role granted; its members may do the duty on the queue.';
COMMENT ON COLUMN job.queue_grants.granted_by IS 'The role that called job.grant_queue.';
COMMENT ON COLUMN job.queue_grants.granted_at IS 'When the grant was made.';

COMMENT ON FUNCTION job.grant_queue(text, regrole, text) IS 'Lets a role produce into or work a queue; from a queue''s first grant of a duty on, only granted roles may do that duty on it; true when the grant is new (audited).';

COMMENT ON FUNCTION job.revoke_queue(text, regrole, text) IS 'Takes back a per-queue grant; a queue without grants of a duty is open to every holder of the duty; false when there was no such grant (audited).';
