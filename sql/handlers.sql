-- pg_jobqueue handlers: jobs the worker's executors run inside the database by calling a SQL
-- function, with the rights of the handler's run_as role for the whole transaction.
--
-- job.set_handler itself is in Rust (src/server/handlers.rs): it must know which role called it,
-- which a SECURITY DEFINER function cannot tell, and it then records the handler through
-- job._set_handler as the extension's owner.

COMMENT ON FUNCTION job.set_handler(text, regprocedure, int, interval, regrole) IS
    'Has the background worker''s executors run the queue''s jobs by calling handler(payload jsonb) as run_as (NULL: the caller, who must be a member of it), at most concurrency at once, each call under statement_timeout = timeout; replaces the queue''s handler (audited).';

CREATE VIEW job.handlers AS
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

COMMENT ON COLUMN job.handlers.queue IS 'The queue whose jobs the handler runs.';
COMMENT ON COLUMN job.handlers.handler IS 'The function called with each job''s payload (one jsonb argument); a jsonb return value becomes the job''s result.';
COMMENT ON COLUMN job.handlers.run_as IS 'The role the handler''s whole transaction runs as.';
COMMENT ON COLUMN job.handlers.concurrency IS 'The most jobs of the queue the executors run at once.';
COMMENT ON COLUMN job.handlers.timeout IS 'The statement_timeout of each call (and its commit); the job''s lease is this plus 30 seconds.';
COMMENT ON COLUMN job.handlers.set_by IS 'The role that set the handler; the handler runs only while it is a member of run_as.';
COMMENT ON COLUMN job.handlers.state IS 'active, or why the handler does not run: paused (the queue is), handler dropped, run_as role dropped, set_by no longer a member of run_as, run_as is a superuser, set_by is not.';
COMMENT ON COLUMN job.handlers.created_at IS 'When the queue got its handler.';
COMMENT ON COLUMN job.handlers.updated_at IS 'When job.set_handler last set it.';

-- Whether a handler set by `set_by` may run as `run_as`: a superuser `run_as` only when a
-- superuser set it.  Whoever can enqueue into a handler queue (a producer, a schedule) chooses
-- the handler's input; a superuser's handler given that input is a superuser's code path that
-- non-superusers steer, which only a superuser may set up.  Checked again by the executors, so
-- a role made superuser after a non-superuser named it stops its handlers.
CREATE FUNCTION job._may_run_as(set_by oid, run_as oid)
RETURNS boolean LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp AS $$
    SELECT NOT coalesce((SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.oid = run_as), false)
        OR coalesce((SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.oid = set_by), false)
$$;

-- Records a handler (job.set_handler has checked who may name run_as).  `caller` is the role
-- that called job.set_handler; only the extension's owner can call this.
CREATE FUNCTION job._set_handler(caller regrole, queue text, handler regprocedure, concurrency int,
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

-- The executors stop taking the queue's jobs (a running one finishes).  False when the queue
-- had no handler.
CREATE FUNCTION job.remove_handler(queue text)
RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    removed boolean;
BEGIN
    PERFORM job._require_queue(queue);
    DELETE FROM job.handler_defs h WHERE h.queue = remove_handler.queue;
    removed := FOUND;
    PERFORM job._audit('remove_handler', jsonb_build_object('queue', queue));
    RETURN removed;
END $$;

COMMENT ON FUNCTION job.remove_handler(text) IS 'Stops the executors taking the queue''s jobs (a running one finishes; the jobs stay in the queue); false when the queue had no handler (audited).';

-- The handler queues an executor serving role `run_as` may claim from: active ones (the queue
-- is not paused, the handler and both roles exist, and the role that set it is still a member
-- of run_as), with how to call the handler.  (PL/pgSQL, not SQL: it runs for every claim, and
-- only PL/pgSQL keeps its plan for the session.)
CREATE FUNCTION job._runnable_handlers(run_as regrole)
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

-- Claims up to `batch` jobs for an executor serving role `run_as`, all from one of its
-- handler queues, and no more than leave the queue's running jobs within its `concurrency`.
-- Executors claiming from one queue take turns (an internal lock per queue, held until the
-- claim commits), so the count they test is exact.  No row: nothing to run.
CREATE FUNCTION job._claim_handler_jobs(worker text, run_as regrole, batch int)
RETURNS TABLE (job_id bigint, token uuid, payload jsonb, attempt int, handler_schema name,
               handler_name name, returns_jsonb boolean, timeout_ms bigint)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    h record;
    free_slots int;
    locked text[] := '{}';
BEGIN
    -- Every queue's claim lock first, in one order (by name) for every executor.  The queues
    -- are tried in random order below, and one that has nothing to claim keeps its lock until
    -- commit: taken there, one at a time, an executor holding A's lock waited for B's while
    -- another holding B's waited for A's (issue 22: deadlock detected, 40P01).
    FOR h IN SELECT r.queue FROM job._runnable_handlers(_claim_handler_jobs.run_as) r
              ORDER BY r.queue COLLATE "C" LOOP
        PERFORM job._lock_handler_queue(h.queue);
        locked := locked || h.queue;
    END LOOP;
    -- (Only the queues locked above: one that became runnable since waits for the next claim.)
    FOR h IN SELECT * FROM job._runnable_handlers(_claim_handler_jobs.run_as) r
              WHERE r.queue = ANY (locked) ORDER BY random() LOOP
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

-- When an executor serving `run_as` must next look for work: the earliest scheduled (delayed
-- or backing off) job of its handler queues (NULL: none).
CREATE FUNCTION job._next_handler_job_due(run_as regrole)
RETURNS timestamptz LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN (SELECT min(d.run_at)
              FROM job.handler_defs h
             CROSS JOIN LATERAL (SELECT l.run_at FROM job.live_jobs l
                                  WHERE l.queue = h.queue AND l.state = 'scheduled'
                                  ORDER BY l.run_at LIMIT 1) d
             WHERE h.run_as = _next_handler_job_due.run_as);
END $$;

-- How many executors each run_as role needs (pg_jobqueue.executors at most, and no more than
-- its handlers' concurrency in all).  Read by the scheduler, and by each executor now and then.
CREATE FUNCTION job._executors_wanted(per_role int)
RETURNS TABLE (run_as regrole, executors int)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN QUERY
    SELECT hd.run_as, least(per_role, sum(hd.concurrency))::int
      FROM job.handler_defs hd
     WHERE EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.oid = hd.run_as)
     GROUP BY hd.run_as;
END $$;

-- Expires the leases of running jobs held by executors (or the sender) that are gone, so that the scheduler
-- takes them back at once instead of a handler's timeout plus 30 seconds later: those
-- claimed by `gone` (executors the scheduler saw stop, named as in their claims), and, when
-- `alive` is given (the process ids of this database's running executors and sender), those
-- of every other executor or sender (the scheduler passes it as it starts, before it starts executors: their
-- jobs are of executors that died with the server, or with a scheduler before it).  The
-- process id in a claim is read by job._claimer_pid (rules/src/claimer.rs, which writes
-- it too).  Returns how many.
CREATE FUNCTION job._expire_executor_leases(gone text[], alive int[])
RETURNS bigint LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    expired bigint;
BEGIN
    UPDATE job.live_jobs l SET lease_expires_at = now()
     WHERE l.state = 'running' AND l.lease_expires_at > now()
       AND (l.claimed_by = ANY (gone)
            -- Only a claim of an executor or the sender has a pid (a client worker's has
            -- none), and the NULL test is needed: NULL <> ALL ('{}') is true.
            OR alive IS NOT NULL AND job._claimer_pid(l.claimed_by) IS NOT NULL
               AND job._claimer_pid(l.claimed_by) <> ALL (alive));
    GET DIAGNOSTICS expired = ROW_COUNT;
    RETURN expired;
END $$;

-- Completes a handler's job with its result, under the executor's claim.
CREATE FUNCTION job._complete_handler_job(job_id bigint, token uuid, result jsonb)
RETURNS boolean LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN job.complete(job_id, result, token);
END $$;

-- Records a handler's failed attempt through job.fail's rules (under the executor's claim),
-- keeping the SQLSTATE with it.
CREATE FUNCTION job._fail_handler_job(job_id bigint, token uuid, sqlstate text, message text, permanent boolean)
RETURNS text LANGUAGE sql
SET search_path = pg_catalog, pg_temp AS $$
    SELECT job._fail_attempt(job_id, token, message, permanent, NULL, NULL,
                             jsonb_build_object('sqlstate', sqlstate))
$$;
