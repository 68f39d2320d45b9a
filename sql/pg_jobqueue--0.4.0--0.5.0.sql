-- pg_jobqueue 0.4.0 -> 0.5.0.  Written for the 0.5.0 release; never edited after it (see
-- sql/README.md).  What changes and why: CHANGELOG.md.

---------------------------------------------------------------------------------------------
-- A job taken back keeps its place (issue 19, item 14)
---------------------------------------------------------------------------------------------

-- job.rescue_stalled's work, looking only at leases that ran out at `since` or later (NULL:
-- all).  Every finished job leaves its entry in the lease index until vacuum, and once its
-- lease time has passed that entry lies in the range a look for stalled jobs scans: the
-- scheduler, which looks again and again, starts where its last look left off (see
-- src/worker/scheduler.rs) instead of stepping over all of them each time.
CREATE OR REPLACE FUNCTION job._rescue_stalled(queue text, max_jobs int, since timestamptz)
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
    woken record;
BEGIN
    -- One probe of the lease index per queue: its entries are ordered by lease within a queue.
    SELECT array_agg(s.id), array_agg(s.id) FILTER (WHERE s.attempt > s.max_retries)
      INTO stalled, exhausted
      FROM (SELECT e.id, e.attempt, e.max_retries
              FROM job.queues q
             CROSS JOIN LATERAL (SELECT l.id, l.attempt, l.max_retries FROM job.live_jobs l
                                  WHERE l.queue = q.name AND l.state = 'running' AND l.lease_expires_at < now()
                                    AND l.lease_expires_at >= coalesce((SELECT _rescue_stalled.since), '-infinity')
                                  ORDER BY l.lease_expires_at
                                  LIMIT _rescue_stalled.max_jobs
                                  FOR UPDATE SKIP LOCKED) e
             WHERE _rescue_stalled.queue IS NULL OR q.name = _rescue_stalled.queue
             LIMIT _rescue_stalled.max_jobs) s;
    IF stalled IS NULL THEN
        RETURN 0;
    END IF;
    IF exhausted IS NOT NULL THEN
        PERFORM job._finish(exhausted, '{running}', 'dead', NULL, detail);
    END IF;
    WITH revived_jobs AS (
        UPDATE job.live_jobs l
           SET state = 'waiting', lease_expires_at = NULL, lease_token = NULL,
               errors = l.errors || jsonb_build_array(job._attempt_error(l.attempt, l.claimed_by, detail))
         WHERE l.id = ANY (stalled) AND l.state = 'running'
        RETURNING l.queue, l.job_type, l.claimed_at, l.run_at
    )
    SELECT count(*), array_agg(r.queue), array_agg(r.job_type), array_agg(r.claimed_at), array_agg(r.run_at)
      INTO revived, queues, job_types, claimed, ready
      FROM revived_jobs r;
    IF revived > 0 THEN
        PERFORM job._record_attempts('stalled', queues, job_types, claimed, ready);
        FOR woken IN SELECT qs.id FROM job.queues qs WHERE qs.name = ANY (queues) AND NOT qs.paused LOOP
            PERFORM job._wake_queue_on_commit(woken.id);
        END LOOP;
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

