-- pg_jobqueue queue API.  Public functions first, then the internal helpers they share
-- (named with a leading underscore; not part of the interface).
--
-- Conventions: bad input raises an error that names the bad argument and changes nothing;
-- functions whose parameters share names with columns use `#variable_conflict use_column`
-- and refer to parameters as function_name.parameter.
--
-- The hot paths (enqueue, dequeue, complete) test their input inline and call a _check_*
-- helper only to raise, because a nested PL/pgSQL call costs more than the test itself.
-- Their statements are written so that one cached generic plan serves every call: re-planning
-- on every call cost a quarter of a worker's CPU.  (Forcing it with a function-level
-- SET plan_cache_mode costs about as much as a small statement, so the statements avoid
-- shapes whose custom plans look cheaper than the generic one.)

---------------------------------------------------------------------------------------------
-- Validation helpers
---------------------------------------------------------------------------------------------

-- Raises unless `value` is a usable name: not NULL, not blank, at most max_len characters,
-- no control characters.
CREATE FUNCTION job._check_name(what text, value text, max_len int DEFAULT 128)
RETURNS void LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF value IS NULL THEN
        RAISE EXCEPTION '% must not be NULL', what USING ERRCODE = 'null_value_not_allowed';
    ELSIF btrim(value) = '' THEN
        RAISE EXCEPTION '% must not be empty', what USING ERRCODE = 'invalid_parameter_value';
    ELSIF length(value) > max_len THEN
        RAISE EXCEPTION '% is too long: % characters, at most % allowed', what, length(value), max_len
            USING ERRCODE = 'invalid_parameter_value';
    ELSIF value ~ '[[:cntrl:]]' THEN
        RAISE EXCEPTION '% must not contain control characters: %', what, quote_literal(value)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END $$;

-- The queue's settings row; raises when the name is bad or no such queue exists.
CREATE FUNCTION job._require_queue(queue_name text)
RETURNS job.queues LANGUAGE plpgsql STABLE AS $$
DECLARE
    q job.queues;
BEGIN
    SELECT * INTO q FROM job.queues WHERE name = queue_name;
    IF NOT FOUND THEN
        PERFORM job._check_name('queue name', queue_name);
        RAISE EXCEPTION 'queue % does not exist', quote_literal(queue_name)
            USING ERRCODE = 'undefined_object',
                  HINT = 'Create it with SELECT job.create_queue(''name'');';
    END IF;
    RETURN q;
END $$;

CREATE FUNCTION job._check_payload(what text, payload jsonb)
RETURNS void LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF payload IS NULL THEN
        RAISE EXCEPTION '% must not be NULL', what USING ERRCODE = 'null_value_not_allowed';
    ELSIF jsonb_typeof(payload) <> 'object' THEN
        RAISE EXCEPTION '% must be a JSON object, got %: %', what, jsonb_typeof(payload), left(payload::text, 100)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END $$;

CREATE FUNCTION job._check_not_null(what text, value anyelement)
RETURNS void LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF value IS NULL THEN
        RAISE EXCEPTION '% must not be NULL', what USING ERRCODE = 'null_value_not_allowed';
    END IF;
END $$;

CREATE FUNCTION job._check_interval(what text, value interval, allow_zero boolean)
RETURNS void LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    PERFORM job._check_not_null(what, value);
    IF value < interval '0' OR (NOT allow_zero AND value = interval '0') THEN
        RAISE EXCEPTION '% must be % interval, got %', what,
            CASE WHEN allow_zero THEN 'a non-negative' ELSE 'a positive' END, value
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END $$;

-- Raises unless a job with this id exists, in any state.
CREATE FUNCTION job._require_job(job_id bigint)
RETURNS void LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM job.jobs j WHERE j.id = job_id) THEN
        RAISE EXCEPTION 'job % does not exist', job_id USING ERRCODE = 'no_data_found';
    END IF;
END $$;

---------------------------------------------------------------------------------------------
-- Job movement helpers
---------------------------------------------------------------------------------------------

-- One entry of a job's `errors` array.
CREATE FUNCTION job._attempt_error(attempt int, worker text, detail jsonb)
RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('attempt', attempt, 'at', now(), 'worker', worker) || detail
$$;

-- Moves live jobs (those of `ids` whose state is in `from_states`) to history as
-- `final_state`, appending `error` (if any) to each job's errors.  Returns how many moved.
CREATE FUNCTION job._finish(ids bigint[], from_states text[], final_state text,
                            job_result jsonb DEFAULT NULL, error jsonb DEFAULT NULL)
RETURNS int LANGUAGE plpgsql AS $$
DECLARE
    moved_count int;
BEGIN
    -- The state test is written (COLLATE) so that no partial index can serve it: with a
    -- constant from_states a custom plan would otherwise walk a partial index (every running
    -- job) instead of probing the primary key, and be re-planned on every call.
    WITH moved AS (
        DELETE FROM job.live_jobs j
         WHERE j.id = ANY (ids) AND (j.state COLLATE "C") = ANY (from_states)
        RETURNING j.*
    )
    INSERT INTO job.finished_jobs (id, run_at, enqueued_at, claimed_at, priority, attempt, max_retries,
                                   state, queue, job_type, claimed_by, idempotency_key, payload,
                                   errors, result)
    SELECT m.id, m.run_at, m.enqueued_at, m.claimed_at, m.priority, m.attempt, m.max_retries,
           final_state, m.queue, m.job_type, m.claimed_by, m.idempotency_key, m.payload,
           CASE WHEN error IS NULL THEN m.errors
                ELSE m.errors || jsonb_build_array(job._attempt_error(m.attempt, m.claimed_by, error)) END,
           job_result
      FROM moved m;
    GET DIAGNOSTICS moved_count = ROW_COUNT;
    RETURN moved_count;
END $$;

-- Moves finished jobs (those of `ids` whose state is in `from_states`) back to the live table,
-- ready now with a fresh retry budget; their past errors stay.  Returns how many moved.
CREATE FUNCTION job._revive(ids bigint[], from_states text[])
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    revived_count bigint := 0;
    revived_in_queue bigint;
    revived_queue text;
BEGIN
    FOR revived_queue, revived_in_queue IN
        WITH back AS (
            DELETE FROM job.finished_jobs f
             WHERE f.id = ANY (ids) AND f.state = ANY (from_states)
            RETURNING f.*
        ), inserted AS (
            INSERT INTO job.live_jobs (id, run_at, enqueued_at, priority, attempt, max_retries, state,
                                       queue, job_type, idempotency_key, payload, errors)
            SELECT b.id, now(), b.enqueued_at, b.priority, 0, b.max_retries, 'waiting',
                   b.queue, b.job_type, b.idempotency_key, b.payload, b.errors
              FROM back b
            RETURNING queue
        )
        SELECT i.queue, count(*) FROM inserted i GROUP BY i.queue
    LOOP
        PERFORM job._wake_on_commit(revived_queue);
        revived_count := revived_count + revived_in_queue;
    END LOOP;
    RETURN revived_count;
END $$;

---------------------------------------------------------------------------------------------
-- Queues
---------------------------------------------------------------------------------------------

CREATE FUNCTION job.create_queue(
    name text,
    max_retries int DEFAULT 5,
    backoff_base interval DEFAULT '1 second',
    backoff_max interval DEFAULT '60 seconds',
    jitter float8 DEFAULT 0.1,
    lease interval DEFAULT '5 minutes',
    idempotency_window interval DEFAULT '24 hours',
    retention interval DEFAULT '7 days'
) RETURNS void LANGUAGE plpgsql AS $$
#variable_conflict use_variable
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

    INSERT INTO job.queues AS q (name, max_retries, backoff_base, backoff_max, jitter, lease,
                                 idempotency_window, retention)
    VALUES (name, max_retries, backoff_base, backoff_max, jitter, lease, idempotency_window, retention)
    ON CONFLICT ON CONSTRAINT queues_pkey DO UPDATE
       SET max_retries = EXCLUDED.max_retries, backoff_base = EXCLUDED.backoff_base,
           backoff_max = EXCLUDED.backoff_max, jitter = EXCLUDED.jitter, lease = EXCLUDED.lease,
           idempotency_window = EXCLUDED.idempotency_window, retention = EXCLUDED.retention,
           updated_at = now();
END $$;

CREATE FUNCTION job.drop_queue(name text, force boolean DEFAULT false)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    q job.queues := job._require_queue(name);
    unfinished bigint;
BEGIN
    PERFORM job._check_not_null('force', force);
    -- Wait out in-flight producers and keep new ones out until this commits, so no enqueue
    -- slips into the queue between the check below and the delete.
    LOCK TABLE job.live_jobs IN SHARE ROW EXCLUSIVE MODE;
    SELECT count(*) INTO unfinished FROM job.live_jobs WHERE queue = q.name;
    IF unfinished > 0 AND NOT force THEN
        RAISE EXCEPTION 'queue % still has % unfinished (waiting, scheduled or running) jobs',
            quote_literal(q.name), unfinished
            USING ERRCODE = 'object_in_use',
                  HINT = 'Let them finish, cancel them, or drop with force => true to discard them.';
    END IF;
    DELETE FROM job.live_jobs WHERE queue = q.name;
    DELETE FROM job.finished_jobs WHERE queue = q.name;
    DELETE FROM job.idempotency_keys WHERE queue = q.name;
    DELETE FROM job.queues WHERE queues.name = q.name;
END $$;

CREATE FUNCTION job._set_paused(queue_name text, paused boolean)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM job._require_queue(queue_name);
    UPDATE job.queues q SET paused = _set_paused.paused, updated_at = now()
     WHERE q.name = queue_name AND q.paused IS DISTINCT FROM _set_paused.paused;
    IF NOT paused THEN
        PERFORM job._wake_on_commit(queue_name);
    END IF;
END $$;

-- A paused queue accepts enqueues but hands out nothing.
CREATE FUNCTION job.pause_queue(name text) RETURNS void LANGUAGE sql AS $$
    SELECT job._set_paused(name, true)
$$;

CREATE FUNCTION job.resume_queue(name text) RETURNS void LANGUAGE sql AS $$
    SELECT job._set_paused(name, false)
$$;

---------------------------------------------------------------------------------------------
-- Producing
---------------------------------------------------------------------------------------------

CREATE FUNCTION job.enqueue(
    queue text,
    payload jsonb DEFAULT '{}',
    run_at timestamptz DEFAULT NULL,
    delay interval DEFAULT NULL,
    priority int DEFAULT 0,
    idempotency_key text DEFAULT NULL,
    max_retries int DEFAULT NULL,
    job_type text DEFAULT NULL
) RETURNS bigint LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    start_at timestamptz := now();
    new_id bigint;
    existing_id bigint;
BEGIN
    IF enqueue.payload IS NULL OR jsonb_typeof(enqueue.payload) <> 'object' THEN
        PERFORM job._require_queue(enqueue.queue);
        PERFORM job._check_payload('payload', enqueue.payload);
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
    IF enqueue.job_type IS NOT NULL THEN
        PERFORM job._check_name('job_type', enqueue.job_type);
    END IF;

    IF enqueue.idempotency_key IS NOT NULL THEN
        PERFORM job._check_name('idempotency_key', enqueue.idempotency_key, 512);
        -- The primary key arbitrates: a racing enqueue of the same key waits for ours to
        -- commit or roll back.  An expired key is taken over by the new job.
        new_id := nextval('job.job_id_seq');
        INSERT INTO job.idempotency_keys AS k (queue, key, job_id, expires_at)
        SELECT qs.name, enqueue.idempotency_key, new_id, now() + qs.idempotency_window
          FROM job.queues qs WHERE qs.name = enqueue.queue
        ON CONFLICT (queue, key) DO UPDATE
           SET job_id = EXCLUDED.job_id, expires_at = EXCLUDED.expires_at
         WHERE k.expires_at <= now();
        IF NOT FOUND THEN
            SELECT k.job_id INTO existing_id FROM job.idempotency_keys k
             WHERE k.queue = enqueue.queue AND k.key = enqueue.idempotency_key;
            IF FOUND THEN
                RETURN existing_id;
            END IF;
            PERFORM job._require_queue(enqueue.queue);  -- no such queue: raises
        END IF;
    END IF;

    -- The queue lookup and the insert in one statement: no row means no such queue.
    INSERT INTO job.live_jobs (id, run_at, priority, max_retries, state, queue, job_type,
                               idempotency_key, payload)
    SELECT coalesce(new_id, nextval('job.job_id_seq')), start_at, enqueue.priority,
           coalesce(enqueue.max_retries, qs.max_retries),
           CASE WHEN start_at <= now() THEN 'waiting' ELSE 'scheduled' END,
           qs.name, enqueue.job_type, enqueue.idempotency_key, enqueue.payload
      FROM job.queues qs WHERE qs.name = enqueue.queue
    RETURNING id INTO new_id;
    IF NOT FOUND THEN
        PERFORM job._require_queue(enqueue.queue);  -- raises
    END IF;
    IF start_at <= now() THEN
        PERFORM job._wake_on_commit(enqueue.queue);
    END IF;
    RETURN new_id;
END $$;

-- Many jobs in one statement; ids come back in payload order.
CREATE FUNCTION job.enqueue_many(
    queue text,
    payloads jsonb[],
    priority int DEFAULT 0,
    job_type text DEFAULT NULL
) RETURNS SETOF bigint LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    q job.queues := job._require_queue(enqueue_many.queue);
    bad record;
BEGIN
    PERFORM job._check_not_null('payloads', enqueue_many.payloads);
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
    PERFORM job._wake_on_commit(q.name);
END $$;

---------------------------------------------------------------------------------------------
-- Consuming
---------------------------------------------------------------------------------------------

-- Claims up to `batch` ready jobs.  Never waits for rows another worker holds (SKIP LOCKED);
-- a job is handed to one worker at a time until its lease expires.
CREATE FUNCTION job.dequeue(
    queue text,
    worker text DEFAULT NULL,
    batch int DEFAULT 1,
    lease interval DEFAULT NULL
) RETURNS SETOF job.claimed_job LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    q record;
    lease_for interval;
    claimed bigint;
BEGIN
    SELECT qs.name, qs.lease, qs.paused INTO q FROM job.queues qs WHERE qs.name = dequeue.queue;
    IF NOT FOUND THEN
        PERFORM job._require_queue(dequeue.queue);
    END IF;
    IF dequeue.batch IS NULL OR dequeue.batch < 1 THEN
        PERFORM job._check_not_null('batch', dequeue.batch);
        RAISE EXCEPTION 'batch must be 1 or more, got %', dequeue.batch USING ERRCODE = 'invalid_parameter_value';
    END IF;
    lease_for := coalesce(dequeue.lease, q.lease);
    IF lease_for <= interval '0' THEN
        PERFORM job._check_interval('lease', lease_for, false);
    END IF;
    IF dequeue.worker IS NOT NULL AND (length(dequeue.worker) > 128 OR btrim(dequeue.worker) = ''
                                       OR dequeue.worker ~ '[[:cntrl:]]') THEN
        PERFORM job._check_name('worker', dequeue.worker);
    END IF;
    IF q.paused THEN
        -- Nothing to hand out: this consumer now waits, and resume_queue will wake it.
        PERFORM job._consumer_idle(q.name);
        RETURN;
    END IF;

    -- Due scheduled jobs (delayed, or retrying after backoff) become ready.
    IF EXISTS (SELECT 1 FROM job.live_jobs d
                WHERE d.queue = q.name AND d.state = 'scheduled' AND d.run_at <= now()) THEN
        UPDATE job.live_jobs j SET state = 'waiting'
         WHERE j.id = ANY (ARRAY(SELECT d.id FROM job.live_jobs d
                                  WHERE d.queue = q.name AND d.state = 'scheduled' AND d.run_at <= now()
                                  ORDER BY d.run_at LIMIT 1000
                                  FOR UPDATE SKIP LOCKED));
    END IF;
    -- Jobs whose worker vanished go back to waiting (or dead) before anything else is claimed;
    -- looked for at most every pg_jobqueue.rescue_interval per session (see src/rescue.rs).
    IF job._rescue_due(q.name) THEN
        PERFORM job.rescue_stalled(q.name);
    END IF;

    FOR pass IN 1..2 LOOP
        RETURN QUERY
        UPDATE job.live_jobs j
           SET state = 'running', attempt = j.attempt + 1, claimed_at = now(),
               claimed_by = dequeue.worker, lease_expires_at = now() + lease_for
         WHERE j.id = ANY (ARRAY(SELECT n.id FROM job.live_jobs n
                                  WHERE n.queue = q.name AND n.state = 'waiting'
                                  ORDER BY n.priority DESC, n.run_at, n.id
                                  LIMIT (SELECT dequeue.batch)
                                  FOR UPDATE SKIP LOCKED))
        RETURNING j.id, j.queue, j.job_type, j.payload, j.attempt, j.max_retries, j.enqueued_at,
                  j.lease_expires_at;
        GET DIAGNOSTICS claimed = ROW_COUNT;
        -- Found nothing: mark this consumer as waiting for a wake-up, then look once more
        -- for jobs whose producers committed while we looked (see src/wakeup.rs).
        EXIT WHEN claimed > 0 OR pass = 2 OR NOT job._consumer_idle(q.name);
    END LOOP;
END $$;

CREATE FUNCTION job.complete(id bigint, result jsonb DEFAULT NULL)
RETURNS boolean LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    IF complete.id IS NULL THEN
        PERFORM job._check_not_null('id', complete.id);
    END IF;
    IF job._finish(ARRAY[complete.id], '{running}', 'completed', complete.result) = 1 THEN
        RETURN true;
    END IF;
    PERFORM job._require_job(complete.id);
    RETURN false;  -- not running: already finished, cancelled, or never claimed
END $$;

-- Acknowledges many jobs in one round trip; returns how many were running and completed.
CREATE FUNCTION job.complete_many(ids bigint[])
RETURNS int LANGUAGE plpgsql AS $$
BEGIN
    IF ids IS NULL THEN
        PERFORM job._check_not_null('ids', ids);
    END IF;
    RETURN job._finish(ids, '{running}', 'completed');
END $$;

-- Records a failed attempt.  Returns the job's new state: 'scheduled' or 'waiting' (it will be
-- retried) or 'dead' (permanent, or out of retries).
CREATE FUNCTION job.fail(
    id bigint,
    error text,
    permanent boolean DEFAULT false,
    http_status int DEFAULT NULL,
    retry_after interval DEFAULT NULL
) RETURNS text LANGUAGE plpgsql AS $$
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
    IF j.state <> 'running' THEN
        RAISE EXCEPTION 'job % is %, not running: only a claimed job can fail', j.id, j.state
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;

    detail := jsonb_build_object('error', fail.error, 'permanent', is_permanent)
              || CASE WHEN fail.http_status IS NULL THEN '{}'::jsonb
                      ELSE jsonb_build_object('http_status', fail.http_status) END;
    IF is_permanent OR j.attempt > j.max_retries THEN
        PERFORM job._finish(ARRAY[j.id], '{running}', 'dead', NULL, detail);
        RETURN 'dead';
    END IF;

    q := job._require_queue(j.queue);
    retry_in := coalesce(fail.retry_after, job.retry_delay(j.attempt, q.backoff_base, q.backoff_max, q.jitter));
    new_state := CASE WHEN retry_in > interval '0' THEN 'scheduled' ELSE 'waiting' END;
    UPDATE job.live_jobs l
       SET state = new_state, run_at = now() + retry_in, lease_expires_at = NULL,
           errors = l.errors || jsonb_build_array(job._attempt_error(l.attempt, l.claimed_by, detail))
     WHERE l.id = j.id;
    IF new_state = 'waiting' THEN
        PERFORM job._wake_on_commit(j.queue);
    END IF;
    RETURN new_state;
END $$;

-- Extends a running job's lease; raises unless the caller still holds it (running, unexpired).
CREATE FUNCTION job.heartbeat(id bigint, extend interval DEFAULT NULL)
RETURNS timestamptz LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    expires timestamptz;
    found_job record;
BEGIN
    PERFORM job._check_not_null('id', heartbeat.id);
    IF heartbeat.extend IS NOT NULL THEN
        PERFORM job._check_interval('extend', heartbeat.extend, false);
    END IF;
    UPDATE job.live_jobs l
       SET lease_expires_at = now() + coalesce(heartbeat.extend,
                                               (SELECT q.lease FROM job.queues q WHERE q.name = l.queue))
     WHERE l.id = heartbeat.id AND l.state = 'running' AND l.lease_expires_at > now()
    RETURNING l.lease_expires_at INTO expires;
    IF FOUND THEN
        RETURN expires;
    END IF;

    PERFORM job._require_job(heartbeat.id);
    SELECT j.state, j.lease_expires_at INTO found_job FROM job.jobs j WHERE j.id = heartbeat.id;
    IF found_job.state = 'running' THEN
        RAISE EXCEPTION 'job % is no longer held: its lease expired at %', heartbeat.id, found_job.lease_expires_at
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Stop working on it: another worker may claim it. Heartbeat before the lease runs out.';
    END IF;
    RAISE EXCEPTION 'job % is no longer held: it is %', heartbeat.id, found_job.state
        USING ERRCODE = 'object_not_in_prerequisite_state';
END $$;

-- Running jobs whose lease expired: the attempt counts as a transient failure; the job is
-- ready again at once, or dead when it has no retries left.  Returns how many were rescued.
CREATE FUNCTION job.rescue_stalled(queue text DEFAULT NULL, max_jobs int DEFAULT 1000)
RETURNS int LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    stalled bigint[];
    exhausted bigint[];
    detail jsonb := jsonb_build_object('error', 'lease expired: the worker neither completed, failed nor heartbeated the job in time',
                                       'permanent', false, 'stalled', true);
    revived int;
BEGIN
    PERFORM job._check_not_null('max_jobs', rescue_stalled.max_jobs);
    SELECT array_agg(s.id), array_agg(s.id) FILTER (WHERE s.attempt > s.max_retries)
      INTO stalled, exhausted
      FROM (SELECT l.id, l.attempt, l.max_retries FROM job.live_jobs l
             WHERE l.state = 'running' AND l.lease_expires_at < now()
               AND (rescue_stalled.queue IS NULL OR l.queue = rescue_stalled.queue)
             ORDER BY l.lease_expires_at
             LIMIT rescue_stalled.max_jobs
             FOR UPDATE SKIP LOCKED) s;
    IF stalled IS NULL THEN
        RETURN 0;
    END IF;
    IF exhausted IS NOT NULL THEN
        PERFORM job._finish(exhausted, '{running}', 'dead', NULL, detail);
    END IF;
    UPDATE job.live_jobs l
       SET state = 'waiting', run_at = l.lease_expires_at, lease_expires_at = NULL,
           errors = l.errors || jsonb_build_array(job._attempt_error(l.attempt, l.claimed_by, detail))
     WHERE l.id = ANY (stalled) AND l.state = 'running';
    GET DIAGNOSTICS revived = ROW_COUNT;
    RETURN revived + coalesce(cardinality(exhausted), 0);
END $$;

---------------------------------------------------------------------------------------------
-- Administering
---------------------------------------------------------------------------------------------

-- A waiting, scheduled or running job never runs (again); its worker cannot complete it.
CREATE FUNCTION job.cancel(id bigint)
RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    PERFORM job._check_not_null('id', id);
    IF job._finish(ARRAY[id], '{waiting,scheduled,running}', 'cancelled') = 1 THEN
        RETURN true;
    END IF;
    PERFORM job._require_job(id);
    RETURN false;
END $$;

-- A dead or cancelled job runs again now, with a fresh retry budget.
CREATE FUNCTION job.retry(id bigint)
RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    PERFORM job._check_not_null('id', id);
    IF job._revive(ARRAY[id], '{dead,cancelled}') = 1 THEN
        RETURN true;
    END IF;
    PERFORM job._require_job(id);
    RETURN false;
END $$;

-- Replays the queue's whole dead-letter queue; returns how many jobs run again.
CREATE FUNCTION job.retry_dead(queue text)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    q job.queues := job._require_queue(queue);
BEGIN
    RETURN job._revive(ARRAY(SELECT f.id FROM job.finished_jobs f
                              WHERE f.queue = q.name AND f.state = 'dead'), '{dead}');
END $$;

-- Deletes finished jobs older than their queue's retention and expired idempotency keys, at
-- most max_rows of each per call (call again while it returns max_rows).  Returns rows deleted.
CREATE FUNCTION job.apply_retention(max_rows int DEFAULT 10000)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    jobs_deleted bigint;
    keys_deleted bigint;
BEGIN
    PERFORM job._check_not_null('max_rows', max_rows);
    DELETE FROM job.finished_jobs f
     WHERE f.id IN (SELECT old.id
                      FROM job.queues q
                     CROSS JOIN unnest(ARRAY['completed', 'dead', 'cancelled']) AS s(state)
                     CROSS JOIN LATERAL (
                           SELECT h.id FROM job.finished_jobs h
                            WHERE h.queue = q.name AND h.state = s.state
                              AND h.finished_at < now() - q.retention
                            ORDER BY h.finished_at
                            LIMIT max_rows) old
                     LIMIT max_rows);
    GET DIAGNOSTICS jobs_deleted = ROW_COUNT;
    DELETE FROM job.idempotency_keys k
     WHERE (k.queue, k.key) IN (SELECT e.queue, e.key FROM job.idempotency_keys e
                                 WHERE e.expires_at <= now()
                                 ORDER BY e.expires_at LIMIT max_rows);
    GET DIAGNOSTICS keys_deleted = ROW_COUNT;
    RETURN jobs_deleted + keys_deleted;
END $$;
