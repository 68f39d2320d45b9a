-- pg_jobqueue 0.2.0: manual interventions on jobs (changed: audited) and retention (changed:
-- keeps the dead-letter queue's size).

-- A waiting, scheduled or running job never runs (again); its worker cannot complete it.
CREATE OR REPLACE FUNCTION job.cancel(id bigint)
RETURNS boolean LANGUAGE plpgsql AS $$
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

-- A dead or cancelled job runs again now, with a fresh retry budget.
CREATE OR REPLACE FUNCTION job.retry(id bigint)
RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    revived boolean;
BEGIN
    PERFORM job._check_not_null('id', id);
    revived := job._revive(ARRAY[id], '{dead,cancelled}') = 1;
    IF NOT revived THEN
        PERFORM job._require_job(id);
    END IF;
    PERFORM job._audit('retry', jsonb_build_object('id', id), revived::int);
    RETURN revived;
END $$;

-- Replays the queue's whole dead-letter queue; returns how many jobs run again.
CREATE OR REPLACE FUNCTION job.retry_dead(queue text)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    q job.queues := job._require_queue(queue);
    revived bigint;
BEGIN
    revived := job._revive(ARRAY(SELECT f.id FROM job.finished_jobs f
                                  WHERE f.queue = q.name AND f.state = 'dead'), '{dead}');
    PERFORM job._audit('retry_dead', jsonb_build_object('queue', q.name), revived);
    RETURN revived;
END $$;

-- Deletes finished jobs older than their queue's retention and expired idempotency keys, at
-- most max_rows of each per call (call again while it returns max_rows).  Returns rows deleted.
CREATE OR REPLACE FUNCTION job.apply_retention(max_rows int DEFAULT 10000)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    jobs_deleted bigint;
    keys_deleted bigint;
    dead_queue record;
BEGIN
    PERFORM job._check_not_null('max_rows', max_rows);
    FOR dead_queue IN
        WITH gone AS (
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
                             LIMIT max_rows)
            RETURNING f.queue, f.state
        )
        SELECT g.queue, count(*) AS n, count(*) FILTER (WHERE g.state = 'dead') AS dead FROM gone g GROUP BY g.queue
    LOOP
        jobs_deleted := coalesce(jobs_deleted, 0) + dead_queue.n;
        IF dead_queue.dead > 0 THEN
            PERFORM job._count_dead_letters(dead_queue.queue, -dead_queue.dead);
        END IF;
    END LOOP;
    DELETE FROM job.idempotency_keys k
     WHERE (k.queue, k.key) IN (SELECT e.queue, e.key FROM job.idempotency_keys e
                                 WHERE e.expires_at <= now()
                                 ORDER BY e.expires_at LIMIT max_rows);
    GET DIAGNOSTICS keys_deleted = ROW_COUNT;
    RETURN coalesce(jobs_deleted, 0) + keys_deleted;
END $$;
