-- pg_jobqueue working: claiming jobs, acknowledging, failing and heartbeating them, and taking
-- back the jobs of workers that vanished.  Every finished, failed or stalled attempt is
-- counted into job.metric_buckets; the dead-letter queue's size is kept; workers are recorded
-- as seen.

---------------------------------------------------------------------------------------------
-- Job movement helpers
---------------------------------------------------------------------------------------------

-- One entry of a job's `errors` array.
CREATE FUNCTION job._attempt_error(attempt int, worker text, detail jsonb)
RETURNS jsonb LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp AS $$
    SELECT jsonb_build_object('attempt', attempt, 'at', now(), 'worker', worker) || detail
$$;

-- Moves live jobs (those of `ids` whose state is in `from_states`) to history as
-- `final_state`, appending `error` (if any) to each job's errors, and counts the finished
-- attempts.  Returns how many moved.
CREATE FUNCTION job._finish(ids bigint[], from_states text[], final_state text,
                            job_result jsonb DEFAULT NULL, error jsonb DEFAULT NULL)
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
    -- job) instead of probing the primary key, and be re-planned on every call.
    WITH moved AS (
        DELETE FROM job.live_jobs j
         WHERE j.id = ANY (ids) AND (j.state COLLATE "C") = ANY (from_states)
        RETURNING j.*
    ), kept AS (
        INSERT INTO job.finished_jobs (id, run_at, enqueued_at, claimed_at, priority, attempt, max_retries,
                                       state, queue, job_type, claimed_by, idempotency_key, payload,
                                       errors, result)
        SELECT m.id, m.run_at, m.enqueued_at, m.claimed_at, m.priority, m.attempt, m.max_retries,
               final_state, m.queue, m.job_type, m.claimed_by, m.idempotency_key, m.payload,
               CASE WHEN error IS NULL THEN m.errors
                    ELSE m.errors || jsonb_build_array(job._attempt_error(m.attempt, m.claimed_by, error)) END,
               job_result
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
-- a job is handed to one worker at a time until its lease expires.
CREATE FUNCTION job.dequeue(
    queue text,
    worker text DEFAULT NULL,
    batch int DEFAULT 1,
    lease interval DEFAULT NULL
) RETURNS SETOF job.claimed_job LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
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
    PERFORM job._saw_worker(dequeue.worker);
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

---------------------------------------------------------------------------------------------
-- Acknowledging
---------------------------------------------------------------------------------------------

CREATE FUNCTION job.complete(id bigint, result jsonb DEFAULT NULL)
RETURNS boolean LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
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
RETURNS int LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
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
) RETURNS text LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
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

    PERFORM job._record_attempts('failed', ARRAY[j.queue], ARRAY[j.job_type], ARRAY[j.claimed_at], ARRAY[j.run_at]);
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
RETURNS timestamptz LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
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
    UPDATE job.live_jobs l
       SET lease_expires_at = now() + coalesce(heartbeat.extend,
                                               (SELECT q.lease FROM job.queues q WHERE q.name = l.queue))
     WHERE l.id = heartbeat.id AND l.state = 'running' AND l.lease_expires_at > now()
    RETURNING l.lease_expires_at, l.claimed_by INTO expires, holder;
    IF FOUND THEN
        PERFORM job._saw_worker(holder);
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
    WITH revived_jobs AS (
        UPDATE job.live_jobs l
           SET state = 'waiting', run_at = l.lease_expires_at, lease_expires_at = NULL,
               errors = l.errors || jsonb_build_array(job._attempt_error(l.attempt, l.claimed_by, detail))
         WHERE l.id = ANY (stalled) AND l.state = 'running'
        RETURNING l.queue, l.job_type, l.claimed_at, l.run_at
    )
    SELECT count(*), array_agg(r.queue), array_agg(r.job_type), array_agg(r.claimed_at), array_agg(r.run_at)
      INTO revived, queues, job_types, claimed, ready
      FROM revived_jobs r;
    IF revived > 0 THEN
        PERFORM job._record_attempts('stalled', queues, job_types, claimed, ready);
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
