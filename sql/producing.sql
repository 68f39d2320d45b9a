-- pg_jobqueue producing: enqueueing jobs, alone or many at once.
--
-- Functions whose parameters share names with columns use `#variable_conflict use_column`
-- and refer to parameters as function_name.parameter.  Their statements are written so that
-- one cached generic plan serves every call: re-planning on every call cost a quarter of a
-- worker's CPU.  (Forcing it with a function-level SET plan_cache_mode costs about as much as
-- a small statement, so the statements avoid shapes whose custom plans look cheaper than the
-- generic one.)

-- Enqueues one job; returns its id (or, for a known idempotency key, the existing job's; for a
-- singleton or debounce key whose job has not started, that job's, which takes this payload).
-- Flow-control keys (see flow.sql): `concurrency_key` (the queue's per-key limits and fair
-- turns), `order_key` (its jobs run one at a time, oldest first), `singleton_key` (one job
-- waits and one runs), `debounce_key` with `debounce` (the job starts once no enqueue of the
-- key came for that long) and `debounce_max_wait` (but no later than that after the first).
CREATE FUNCTION job.enqueue(
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

COMMENT ON FUNCTION job.enqueue(text, jsonb, timestamptz, interval, int, text, int, text, text, text, text, text, interval, interval) IS 'Enqueues one job (payload: a JSON object) and returns its id, or the id of the job an idempotency, singleton or debounce key merged it into; run_at or delay starts it later, a higher priority is claimed first, max_retries NULL takes the queue''s.';

-- Many jobs in one statement (all of one concurrency or order key, if given: an order key runs
-- them in payload order); ids come back in payload order.
CREATE FUNCTION job.enqueue_many(
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

COMMENT ON FUNCTION job.enqueue_many(text, jsonb[], int, text, text, text) IS 'Enqueues one job per payload, all ready now with one priority, job type, concurrency key and order key; returns their ids in payload order (an order key runs them in that order).';

-- For an enqueue by role `producer` with a singleton or debounce key: the job of that key
-- that has not started yet, given `payload` (the last one wins) and a new start (`start_at`;
-- for a debounce, no later than `max_wait` after the job's first enqueue), or NULL when there
-- is none and the caller adds one.  A producer changes only a job it enqueued: when another
-- role's job of the key waits, that job's id is returned and the job is left as it is (the
-- key still has one job waiting; the enqueue merged into it).  Enqueues of the key take turns
-- until commit, so the later one sees the job the earlier one added.  A job that is being
-- claimed has started: it is left alone.
CREATE FUNCTION job._replace_pending(queue text, singleton_key text, debounce_key text, payload jsonb,
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
