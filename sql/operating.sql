-- pg_jobqueue operating: looking at jobs, and manual interventions on them (cancel, retry,
-- purge; all audited), and retention.

-- Every job, whatever its state.  A scheduled job whose run_at has passed is ready
-- now and shows as waiting.
CREATE VIEW job.jobs AS
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

COMMENT ON COLUMN job.jobs.id IS 'The job''s id, drawn at enqueue.';
COMMENT ON COLUMN job.jobs.queue IS 'The queue the job belongs to.';
COMMENT ON COLUMN job.jobs.job_type IS 'A label given at enqueue (metrics count per type; a delivery''s event_type); NULL: none.';
COMMENT ON COLUMN job.jobs.state IS 'waiting (ready now; a scheduled job that has come due shows as waiting), scheduled (run_at ahead), running, completed, dead or cancelled.';
COMMENT ON COLUMN job.jobs.payload IS 'The job''s input, a JSON object.';
COMMENT ON COLUMN job.jobs.priority IS 'Claim order: a higher priority is claimed first (default 0).';
COMMENT ON COLUMN job.jobs.attempt IS 'Attempts started so far: 1 during the first; 0 before the first claim, or after job.retry.';
COMMENT ON COLUMN job.jobs.max_retries IS 'Retries the job gets after its first attempt: it is dead when attempt max_retries + 1 fails.';
COMMENT ON COLUMN job.jobs.run_at IS 'When the job became or becomes ready: its requested start, or the end of a retry''s backoff.';
COMMENT ON COLUMN job.jobs.enqueued_at IS 'When the job was enqueued.';
COMMENT ON COLUMN job.jobs.claimed_at IS 'When its last attempt was claimed; NULL: never claimed, or released.';
COMMENT ON COLUMN job.jobs.claimed_by IS 'The worker name its last claim gave (dequeue''s worker); NULL: none given, or never claimed.';
COMMENT ON COLUMN job.jobs.lease_expires_at IS 'When a running job''s lease runs out unless heartbeated; NULL unless running.';
COMMENT ON COLUMN job.jobs.finished_at IS 'When the job completed, died or was cancelled; NULL while waiting, scheduled or running.';
COMMENT ON COLUMN job.jobs.errors IS 'One entry per failed attempt, oldest first (attempt, at, worker, error, permanent, and http_status, sqlstate or a delivery''s class and latency_ms where they apply); [] when none.';
COMMENT ON COLUMN job.jobs.result IS 'What the worker or handler completed the job with; NULL unless completed, or completed without one.';
COMMENT ON COLUMN job.jobs.idempotency_key IS 'The key that makes enqueues within the queue''s idempotency_window return this job; NULL: none.';
COMMENT ON COLUMN job.jobs.concurrency_key IS 'The key the queue''s per-key limits and fair turns count the job under; NULL: none.';
COMMENT ON COLUMN job.jobs.order_key IS 'Jobs of this key start one at a time, in id order; NULL: none.';
COMMENT ON COLUMN job.jobs.singleton_key IS 'At most one job of this key waits and one runs; NULL: none.';
COMMENT ON COLUMN job.jobs.debounce_key IS 'Enqueues of this key merge into this job until it starts; NULL: none.';

CREATE VIEW job.queue_stats AS
SELECT q.name AS queue,
       q.paused,
       COALESCE(l.waiting, 0)   AS waiting,
       COALESCE(l.scheduled, 0) AS scheduled,
       COALESCE(l.running, 0)   AS running,
       COALESCE(f.completed, 0) AS completed,
       COALESCE(f.dead, 0)      AS dead,
       COALESCE(f.cancelled, 0) AS cancelled,
       pg_catalog.now() - l.oldest_ready_at AS oldest_waiting_age
  FROM job.queues q
  LEFT JOIN LATERAL (
        SELECT count(*) FILTER (WHERE j.state = 'waiting'
                                   OR (j.state = 'scheduled' AND j.run_at <= pg_catalog.now())) AS waiting,
               count(*) FILTER (WHERE j.state = 'scheduled' AND j.run_at > pg_catalog.now()) AS scheduled,
               count(*) FILTER (WHERE j.state = 'running') AS running,
               min(j.run_at) FILTER (WHERE j.state = 'waiting'
                                        OR (j.state = 'scheduled' AND j.run_at <= pg_catalog.now())) AS oldest_ready_at
          FROM job.live_jobs j
         WHERE j.queue = q.name) l ON true
  LEFT JOIN LATERAL (
        SELECT count(*) FILTER (WHERE h.state = 'completed') AS completed,
               count(*) FILTER (WHERE h.state = 'dead') AS dead,
               count(*) FILTER (WHERE h.state = 'cancelled') AS cancelled
          FROM job.finished_jobs h
         WHERE h.queue = q.name) f ON true;

COMMENT ON VIEW job.queue_stats IS 'Per queue: jobs waiting (ready now), scheduled (later), running, completed, dead and cancelled, and the age of the oldest ready job.';

COMMENT ON COLUMN job.queue_stats.queue IS 'The queue''s name.';
COMMENT ON COLUMN job.queue_stats.paused IS 'Whether the queue is paused: it hands out no job.';
COMMENT ON COLUMN job.queue_stats.waiting IS 'Jobs ready to claim now (scheduled ones that have come due included), counted now.';
COMMENT ON COLUMN job.queue_stats.scheduled IS 'Jobs whose run_at is still ahead (delayed, or waiting out a retry''s backoff), counted now.';
COMMENT ON COLUMN job.queue_stats.running IS 'Jobs claimed and not yet finished, counted now.';
COMMENT ON COLUMN job.queue_stats.completed IS 'Completed jobs still kept (the queue''s retention).';
COMMENT ON COLUMN job.queue_stats.dead IS 'Dead jobs still kept: the dead-letter queue.';
COMMENT ON COLUMN job.queue_stats.cancelled IS 'Cancelled jobs still kept.';
COMMENT ON COLUMN job.queue_stats.oldest_waiting_age IS 'How long the oldest ready job has been ready; NULL: none is ready.';

-- Moves finished jobs of one queue (those of `ids` whose state is in `from_states`) back to
-- the live table, ready now with a fresh retry budget; their past errors stay.  Returns how
-- many moved.
CREATE FUNCTION job._revive(queue_name text, ids bigint[], from_states text[])
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

-- A waiting, scheduled or running job never runs (again); its worker cannot complete it.
CREATE FUNCTION job.cancel(id bigint)
RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    cancelled boolean;
BEGIN
    PERFORM job._check_not_null('id', id);
    cancelled := job._finish(ARRAY[id], '{waiting,scheduled,running}', 'cancelled') = 1;
    IF NOT cancelled THEN
        PERFORM job._require_job(id);
    END IF;
    PERFORM job._audit('cancel', jsonb_build_object('id', id), cancelled::int);
    RETURN cancelled;
END $$;

COMMENT ON FUNCTION job.cancel(bigint) IS 'Cancels a waiting, scheduled or running job: it never runs again and its worker cannot complete it; false when it had already finished (audited).';

-- A dead or cancelled job runs again now, with a fresh retry budget.  False for a job that
-- will run anyway (waiting, scheduled or running); a completed job is refused: it did its
-- work, and running it again is a new job's business (it returned false up to 0.4.0, which
-- read as "nothing to do" to a caller that meant to run it again).
CREATE FUNCTION job.retry(id bigint)
RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    job_queue text;
    job_state text;
    revived boolean := false;
BEGIN
    PERFORM job._check_not_null('id', id);
    SELECT f.queue, f.state INTO job_queue, job_state FROM job.finished_jobs f WHERE f.id = retry.id;
    IF job_state = 'completed' THEN
        RAISE EXCEPTION 'job % completed: only a dead or cancelled job can be retried', id
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Enqueue a new job to run its work again.';
    END IF;
    IF FOUND THEN
        revived := job._revive(job_queue, ARRAY[id], '{dead,cancelled}') = 1;
    END IF;
    IF NOT revived THEN
        PERFORM job._require_job(id);
    END IF;
    PERFORM job._audit('retry', jsonb_build_object('id', id), revived::int);
    RETURN revived;
END $$;

COMMENT ON FUNCTION job.retry(bigint) IS 'Runs a dead or cancelled job again now with a fresh retry budget (its errors stay); false when it will run anyway (waiting, scheduled or running); raises 55000 for a completed job and P0002 for none (audited).';

-- Replays the queue's whole dead-letter queue; returns how many jobs run again.
CREATE FUNCTION job.retry_dead(queue text)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    q job.queues := job._require_queue(queue);
    revived bigint;
BEGIN
    revived := job._revive(q.name, ARRAY(SELECT f.id FROM job.finished_jobs f
                                          WHERE f.queue = q.name AND f.state = 'dead'), '{dead}');
    PERFORM job._audit('retry_dead', jsonb_build_object('queue', q.name), revived);
    RETURN revived;
END $$;

COMMENT ON FUNCTION job.retry_dead(text) IS 'Runs every dead job of the queue (its dead-letter queue) again now with a fresh retry budget; returns how many (audited).';

-- Deletes the queue's finished jobs in `state` (completed, dead or cancelled) that finished
-- more than `older_than` ago; audited.  Returns how many it deleted.
CREATE FUNCTION job.purge(queue text, state text, older_than interval)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
DECLARE
    q job.queues := job._require_queue(queue);
    purged bigint;
BEGIN
    IF state IS NULL OR state NOT IN ('completed', 'dead', 'cancelled') THEN
        RAISE EXCEPTION 'state must be ''completed'', ''dead'' or ''cancelled'', got %', coalesce(quote_literal(state), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Unfinished jobs are not purged: cancel them first.';
    END IF;
    PERFORM job._check_interval('older_than', older_than, true);
    DELETE FROM job.finished_jobs f
     WHERE f.queue = q.name AND f.state = purge.state AND f.finished_at < now() - older_than;
    GET DIAGNOSTICS purged = ROW_COUNT;
    IF state = 'dead' AND purged > 0 THEN
        PERFORM job._count_dead_letters(q.name, -purged);
    END IF;
    PERFORM job._audit('purge', jsonb_build_object('queue', q.name, 'state', state, 'older_than', older_than), purged);
    RETURN purged;
END $$;

COMMENT ON FUNCTION job.purge(text, text, interval) IS 'Deletes the queue''s finished jobs in state (completed, dead or cancelled) that finished more than older_than ago; returns how many (audited).';

-- Deletes finished jobs older than their queue's retention and expired idempotency keys, at
-- most max_rows of each per call (call again while it returns max_rows).  Returns rows deleted.
-- Each queue is pruned on its own: should one fail, the others are still pruned (the failure
-- is reported as a warning naming the queue).
CREATE FUNCTION job.apply_retention(max_rows int DEFAULT 10000)
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

COMMENT ON FUNCTION job.apply_retention(int) IS 'Deletes finished jobs older than their queue''s retention and expired idempotency keys, at most max_rows of each; returns how many rows (the background worker runs it every pg_jobqueue.maintenance_interval).';
