-- pg_jobqueue handlers: jobs the worker's executors run inside the database by calling a SQL
-- function.

---------------------------------------------------------------------------------------------
-- Handlers: jobs run inside the database
---------------------------------------------------------------------------------------------

-- From now on the worker's executors run `queue`'s jobs by calling handler(payload jsonb) as
-- the current role, at most `concurrency` at a time, each under statement_timeout = timeout.
CREATE FUNCTION job.set_handler(
    queue text,
    handler regprocedure,
    concurrency int DEFAULT 1,
    timeout interval DEFAULT '5 minutes'
) RETURNS void LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    fn record;
BEGIN
    PERFORM job._require_worker('handlers');
    PERFORM job._require_queue(set_handler.queue);
    PERFORM job._check_not_null('handler', set_handler.handler);
    SELECT p.prokind, p.proretset, p.pronargs, p.proargtypes[0] AS argtype INTO fn
      FROM pg_catalog.pg_proc p WHERE p.oid = set_handler.handler;
    IF fn.prokind <> 'f' OR fn.proretset OR fn.pronargs <> 1 OR fn.argtype <> 'jsonb'::regtype THEN
        RAISE EXCEPTION 'handler % must be a function taking one jsonb argument and returning one value', set_handler.handler
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'CREATE FUNCTION my_handler(payload jsonb) RETURNS jsonb ...';
    END IF;
    IF NOT has_function_privilege(current_user, set_handler.handler, 'EXECUTE') THEN
        RAISE EXCEPTION 'permission denied: role % may not execute handler %', current_user, set_handler.handler
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF set_handler.concurrency IS NULL OR set_handler.concurrency NOT BETWEEN 1 AND 1000 THEN
        RAISE EXCEPTION 'concurrency must be between 1 and 1000, got %', coalesce(set_handler.concurrency::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM job._check_interval('timeout', set_handler.timeout, false);

    INSERT INTO job.handlers AS h (queue, handler, run_as, concurrency, timeout)
    VALUES (set_handler.queue, set_handler.handler, current_user::regrole, set_handler.concurrency,
            set_handler.timeout)
    ON CONFLICT (queue) DO UPDATE
       SET handler = EXCLUDED.handler, run_as = EXCLUDED.run_as, concurrency = EXCLUDED.concurrency,
           timeout = EXCLUDED.timeout, updated_at = now();
    PERFORM job._wake_on_commit(set_handler.queue);
    PERFORM job._wake_scheduler();  -- starts the executors
    PERFORM job._audit('set_handler', jsonb_build_object(
        'queue', set_handler.queue, 'handler', set_handler.handler::text, 'run_as', current_user,
        'concurrency', set_handler.concurrency, 'timeout', set_handler.timeout));
END $$;

-- The executors stop taking the queue's jobs (a running one finishes).  False when the queue
-- had no handler.
CREATE FUNCTION job.remove_handler(queue text)
RETURNS boolean LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    removed boolean;
BEGIN
    PERFORM job._require_queue(queue);
    DELETE FROM job.handlers h WHERE h.queue = remove_handler.queue;
    removed := FOUND;
    PERFORM job._audit('remove_handler', jsonb_build_object('queue', queue));
    RETURN removed;
END $$;

-- Claims one job for an executor from a handler queue with a free concurrency slot.  The slot
-- is a session-level advisory lock the executor holds while it runs the job (released by
-- job._release_handler_slot, or when the executor exits).  No row: nothing to run.
CREATE FUNCTION job._claim_handler_job(worker text)
RETURNS TABLE (job_id bigint, payload jsonb, attempt int, handler_schema name, handler_name name,
               returns_jsonb boolean, run_as oid, timeout_ms bigint, slot_key int)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    h record;
    claimed job.claimed_job;
BEGIN
    FOR h IN SELECT hd.queue, hd.concurrency, hd.timeout, hd.run_as, n.nspname, p.proname,
                    p.prorettype = 'jsonb'::regtype AS returns_jsonb
               FROM job.handlers hd
               JOIN job.queues q ON q.name = hd.queue AND NOT q.paused
               JOIN pg_catalog.pg_proc p ON p.oid = hd.handler
               JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
               JOIN pg_catalog.pg_roles r ON r.oid = hd.run_as
              ORDER BY random()
    LOOP
        FOR slot IN 0 .. h.concurrency - 1 LOOP
            slot_key := hashtext(h.queue || '/' || slot);
            CONTINUE WHEN NOT pg_try_advisory_lock(x'6a716578'::int, slot_key);
            SELECT * INTO claimed
              FROM job.dequeue(h.queue, worker, 1, h.timeout + interval '30 seconds');
            IF claimed.id IS NULL THEN
                PERFORM pg_advisory_unlock(x'6a716578'::int, slot_key);
                EXIT;  -- nothing ready in this queue
            END IF;
            job_id := claimed.id;
            payload := claimed.payload;
            attempt := claimed.attempt;
            handler_schema := h.nspname;
            handler_name := h.proname;
            returns_jsonb := h.returns_jsonb;
            run_as := h.run_as;
            timeout_ms := (extract(epoch FROM h.timeout) * 1000)::bigint;
            RETURN NEXT;
            RETURN;
        END LOOP;
    END LOOP;
END $$;

CREATE FUNCTION job._release_handler_slot(slot_key int)
RETURNS void LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM pg_advisory_unlock(x'6a716578'::int, slot_key);
END $$;

-- When an executor must next look for work: the earliest scheduled (delayed or backing off)
-- job of a handler queue (NULL: none).
CREATE FUNCTION job._next_handler_job_due()
RETURNS timestamptz LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp AS $$
    SELECT min(d.run_at)
      FROM job.handlers h
     CROSS JOIN LATERAL (SELECT l.run_at FROM job.live_jobs l
                          WHERE l.queue = h.queue AND l.state = 'scheduled'
                          ORDER BY l.run_at LIMIT 1) d
$$;

-- Records a handler's failed attempt through job.fail's rules, keeping the SQLSTATE with it.
CREATE FUNCTION job._fail_handler_job(job_id bigint, sqlstate text, message text, permanent boolean)
RETURNS text LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    outcome text := job.fail(job_id, message, permanent);
BEGIN
    UPDATE job.live_jobs l
       SET errors = jsonb_set(l.errors, '{-1,sqlstate}', to_jsonb(sqlstate))
     WHERE l.id = job_id;
    UPDATE job.finished_jobs f
       SET errors = jsonb_set(f.errors, '{-1,sqlstate}', to_jsonb(sqlstate))
     WHERE f.id = job_id;
    RETURN outcome;
END $$;
