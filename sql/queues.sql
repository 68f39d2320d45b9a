-- pg_jobqueue queues: creating, changing, pausing and dropping them (all audited).

-- Creates the queue, or changes the settings of an existing one (audited either way).  Flow
-- control (NULL: no limit; see sql/flow.sql): `concurrency` jobs of the queue running at once,
-- `key_concurrency` per concurrency key; at most `rate_limit` starts per `rate_period`
-- (default 1 second) for the queue, `key_rate_limit` per `key_rate_period` for each key;
-- `fair`: claims take jobs round-robin across concurrency keys.
CREATE FUNCTION job.create_queue(
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

CREATE FUNCTION job.resume_queue(name text) RETURNS void LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
    SELECT job._set_paused(name, false)
$$;

-- The queue's opaque number, the payload of its wake-up notifications (see the README's
-- "Wake-ups"): a worker LISTENs on pg_jobqueue and dequeues when a notification carries it.
CREATE FUNCTION job.queue_id(queue text) RETURNS bigint LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN (job._require_queue(queue)).id;
END $$;
