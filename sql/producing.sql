-- pg_jobqueue producing: enqueueing jobs, alone or many at once.
--
-- Functions whose parameters share names with columns use `#variable_conflict use_column`
-- and refer to parameters as function_name.parameter.  Their statements are written so that
-- one cached generic plan serves every call: re-planning on every call cost a quarter of a
-- worker's CPU.  (Forcing it with a function-level SET plan_cache_mode costs about as much as
-- a small statement, so the statements avoid shapes whose custom plans look cheaper than the
-- generic one.)

-- Enqueues one job; returns its id (or, for a known idempotency key, the existing job's).
CREATE FUNCTION job.enqueue(
    queue text,
    payload jsonb DEFAULT '{}',
    run_at timestamptz DEFAULT NULL,
    delay interval DEFAULT NULL,
    priority int DEFAULT 0,
    idempotency_key text DEFAULT NULL,
    max_retries int DEFAULT NULL,
    job_type text DEFAULT NULL
) RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    q record;
    start_at timestamptz := now();
    new_id bigint;
    existing_id bigint;
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
                               idempotency_key, payload)
    VALUES (coalesce(new_id, nextval('job.job_id_seq')), start_at, enqueue.priority,
            coalesce(enqueue.max_retries, q.max_retries),
            CASE WHEN start_at <= now() THEN 'waiting' ELSE 'scheduled' END,
            q.name, enqueue.job_type, enqueue.idempotency_key, enqueue.payload)
    RETURNING id INTO new_id;
    IF start_at <= now() THEN
        PERFORM job._wake_queue_on_commit(q.id);
    ELSE
        PERFORM job._due_on_commit(start_at);  -- the worker makes it ready when due, and wakes consumers
    END IF;
    RETURN new_id;
END $$;

-- Many jobs in one statement; ids come back in payload order.
CREATE FUNCTION job.enqueue_many(
    queue text,
    payloads jsonb[],
    priority int DEFAULT 0,
    job_type text DEFAULT NULL
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
        INSERT INTO job.live_jobs (run_at, priority, max_retries, state, queue, job_type, payload)
        SELECT now(), enqueue_many.priority, q.max_retries, 'waiting', q.name, enqueue_many.job_type, p.payload
          FROM unnest(enqueue_many.payloads) WITH ORDINALITY AS p(payload, ord)
         ORDER BY p.ord
        RETURNING id
    )
    SELECT i.id FROM inserted i ORDER BY i.id;
    PERFORM job._wake_queue_on_commit(q.id);
END $$;
