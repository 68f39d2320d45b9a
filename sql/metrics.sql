-- pg_jobqueue metrics that cost the same at any table size.
--
-- Nothing here reads the job tables when metrics are read:
--   job.metric_buckets   per minute, queue, job type and writer shard: counts and duration
--                        histograms, added to in the transaction that finishes or fails a job;
--                        kept for two hours, then folded into
--   job.metric_totals    the running totals behind the Prometheus counters;
--   job.queue_depth      jobs per live state and the oldest ready job, per queue, counted by
--                        the worker every pg_jobqueue.maintenance_interval;
--   job.queue_counters   the dead-letter queue's size, kept exact as jobs die and leave it;
--   job.workers_seen     every worker name dequeue and heartbeat saw.

-- Histograms, the writer shard and the worker-seen throttle are in Rust (src/session/metrics.rs).
CREATE AGGREGATE job._hist_sum(bigint[]) (SFUNC = job._hist_add, STYPE = bigint[]);

---------------------------------------------------------------------------------------------
-- Writing (called where jobs finish, fail and stall)
---------------------------------------------------------------------------------------------

---------------------------------------------------------------------------------------------
-- Writing (called where jobs finish, fail and stall)
---------------------------------------------------------------------------------------------

-- Adds `rows` to the buckets with the same minute, queue, job type and shard (or inserts them).
-- (The writers here are PL/pgSQL, not SQL functions: these run on every completion, and only
-- PL/pgSQL keeps their plans for the session.)
CREATE FUNCTION job._add_buckets(rows job.metric_buckets[])
RETURNS void LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO job.metric_buckets AS m SELECT * FROM unnest(rows)
    ON CONFLICT (bucket, queue, job_type, shard) DO UPDATE
       SET completed = m.completed + EXCLUDED.completed,
           failed = m.failed + EXCLUDED.failed,
           dead = m.dead + EXCLUDED.dead,
           stalled = m.stalled + EXCLUDED.stalled,
           processing = job._hist_add(m.processing, EXCLUDED.processing),
           processing_sum = m.processing_sum + EXCLUDED.processing_sum,
           waiting = job._hist_add(m.waiting, EXCLUDED.waiting),
           waiting_sum = m.waiting_sum + EXCLUDED.waiting_sum;
END $$;

-- Adds finished or failed attempts to this minute's bucket: one per element of the arrays
-- (queue, job type, claimed at, ready at), all with one outcome: 'completed', 'failed'
-- (to be retried), 'dead', 'stalled' (lease expired, to be retried) or 'stalled_dead'.
CREATE FUNCTION job._record_attempts(outcome text, queues text[], job_types text[],
                                     claimed timestamptz[], ready timestamptz[])
RETURNS void LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    took float8;      -- claim to finish, seconds
    waited float8;    -- ready to claim, seconds
    n int := CASE WHEN outcome = 'completed' THEN 0 ELSE 1 END;
BEGIN
    IF cardinality(queues) = 1 THEN
        -- One attempt (complete, fail): the common case, so it bumps one element of each
        -- histogram in place; only the minute's first attempt inserts the row.
        took := extract(epoch FROM now() - claimed[1]);
        waited := greatest(extract(epoch FROM claimed[1] - ready[1]), 0);
        UPDATE job.metric_buckets m
           SET completed = m.completed + 1 - n, failed = m.failed + n,
               dead = m.dead + CASE WHEN outcome IN ('dead', 'stalled_dead') THEN 1 ELSE 0 END,
               stalled = m.stalled + CASE WHEN outcome IN ('stalled', 'stalled_dead') THEN 1 ELSE 0 END,
               processing[job._hist_bucket(took)] = m.processing[job._hist_bucket(took)] + 1,
               processing_sum = m.processing_sum + took,
               waiting[job._hist_bucket(waited)] = m.waiting[job._hist_bucket(waited)] + 1,
               waiting_sum = m.waiting_sum + waited
         WHERE m.bucket = date_trunc('minute', now()) AND m.queue = queues[1]
           AND m.job_type = coalesce(job_types[1], '') AND m.shard = job._writer_shard();
        IF NOT FOUND THEN
            PERFORM job._add_buckets(ARRAY[ROW(
                date_trunc('minute', now()), queues[1], coalesce(job_types[1], ''), job._writer_shard(),
                1 - n, n, CASE WHEN outcome IN ('dead', 'stalled_dead') THEN 1 ELSE 0 END,
                CASE WHEN outcome IN ('stalled', 'stalled_dead') THEN 1 ELSE 0 END,
                job._hist_of(took), took, job._hist_of(waited), waited)::job.metric_buckets]);
        END IF;
        RETURN;
    END IF;
    PERFORM job._add_buckets(array_agg(ROW(
               date_trunc('minute', now()), a.queue, a.job_type, job._writer_shard(),
               CASE WHEN outcome = 'completed' THEN a.n ELSE 0 END,
               CASE WHEN outcome <> 'completed' THEN a.n ELSE 0 END,
               CASE WHEN outcome IN ('dead', 'stalled_dead') THEN a.n ELSE 0 END,
               CASE WHEN outcome IN ('stalled', 'stalled_dead') THEN a.n ELSE 0 END,
               a.processing, a.processing_sum, a.waiting, a.waiting_sum)::job.metric_buckets))
      FROM (SELECT r.queue, coalesce(r.job_type, '') AS job_type, count(*) AS n,
                   job._hist_sum(job._hist_of(extract(epoch FROM now() - r.claimed_at)::float8)) AS processing,
                   coalesce(sum(extract(epoch FROM now() - r.claimed_at)::float8), 0) AS processing_sum,
                   job._hist_sum(job._hist_of(extract(epoch FROM r.claimed_at - r.ready_at)::float8)) AS waiting,
                   coalesce(sum(greatest(extract(epoch FROM r.claimed_at - r.ready_at)::float8, 0)), 0) AS waiting_sum
              FROM unnest(queues, job_types, claimed, ready) AS r(queue, job_type, claimed_at, ready_at)
             GROUP BY r.queue, coalesce(r.job_type, '')) a;
END $$;

-- The dead-letter queue of `queue` grew (or shrank, for a negative delta) by `delta` jobs.
CREATE FUNCTION job._count_dead_letters(dead_queue text, delta bigint)
RETURNS void LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO job.queue_counters AS c (queue, dead_letters) VALUES (dead_queue, greatest(delta, 0))
    ON CONFLICT ON CONSTRAINT queue_counters_pkey
    DO UPDATE SET dead_letters = greatest(c.dead_letters + EXCLUDED.dead_letters + least(delta, 0), 0);
END $$;

-- dequeue and heartbeat saw `worker`: at most once a second per session, record it.
-- Records that worker `seen` is alive (at most once a second per session, see
-- job._worker_seen_due).  Never waits: sessions sharing a worker name in open transactions
-- skip the row another one holds (only the very first sighting of a name may wait, for the
-- other session's insert of it).
CREATE FUNCTION job._saw_worker(seen text)
RETURNS void LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF seen IS NOT NULL AND job._worker_seen_due(seen) THEN
        UPDATE job.workers_seen w SET last_seen = now()
         WHERE w.worker = (SELECT s.worker FROM job.workers_seen s WHERE s.worker = seen
                            FOR UPDATE SKIP LOCKED)
           AND w.last_seen < now();
        IF NOT FOUND AND NOT EXISTS (SELECT 1 FROM job.workers_seen s WHERE s.worker = seen) THEN
            INSERT INTO job.workers_seen (worker, first_seen, last_seen) VALUES (seen, now(), now())
            ON CONFLICT (worker) DO NOTHING;
        END IF;
    END IF;
END $$;

---------------------------------------------------------------------------------------------
-- Maintenance (run by the worker's scheduler)
---------------------------------------------------------------------------------------------

-- How many live jobs of `queue` are in `state` ('waiting', 'scheduled' or 'running'), and for
-- 'scheduled' due (run_at passed) or not: counted exactly up to 10,000 (an index range scan of
-- at most that many entries), estimated above that from the table's statistics (the extended
-- statistics on queue and state) with `estimated` true.  What the worker counts every
-- maintenance_interval must not cost more as a backlog grows: an exact count of 10 million
-- waiting jobs took 11 s of CPU in every 30.
CREATE FUNCTION job._live_count(queue text, state text, due boolean DEFAULT NULL,
                                OUT n bigint, OUT estimated boolean)
LANGUAGE plpgsql VOLATILE  -- EXPLAIN, which it runs for an estimate, is refused in a STABLE function
SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
DECLARE
    exact_limit constant int := 10000;
    plan json;
BEGIN
    -- One static query per state, each a range of that state's partial index.
    n := CASE WHEN state = 'waiting' THEN
                  (SELECT count(*) FROM (SELECT FROM job.live_jobs l
                                          WHERE l.queue = _live_count.queue AND l.state = 'waiting'
                                          LIMIT exact_limit + 1) x)
              WHEN state = 'running' THEN
                  (SELECT count(*) FROM (SELECT FROM job.live_jobs l
                                          WHERE l.queue = _live_count.queue AND l.state = 'running'
                                          LIMIT exact_limit + 1) x)
              WHEN due THEN
                  (SELECT count(*) FROM (SELECT FROM job.live_jobs l
                                          WHERE l.queue = _live_count.queue AND l.state = 'scheduled'
                                            AND l.run_at <= now()
                                          LIMIT exact_limit + 1) x)
              ELSE
                  (SELECT count(*) FROM (SELECT FROM job.live_jobs l
                                          WHERE l.queue = _live_count.queue AND l.state = 'scheduled'
                                            AND l.run_at > now()
                                          LIMIT exact_limit + 1) x) END;
    estimated := n > exact_limit;
    IF estimated THEN
        EXECUTE format('EXPLAIN (FORMAT JSON) SELECT FROM job.live_jobs l WHERE l.queue = %L AND l.state = %L%s',
                       queue, state,
                       CASE WHEN state <> 'scheduled' THEN ''
                            WHEN due THEN ' AND l.run_at <= now()' ELSE ' AND l.run_at > now()' END)
           INTO plan;
        n := greatest(n, (plan -> 0 -> 'Plan' ->> 'Plan Rows')::bigint);
    END IF;
END $$;

-- The time the oldest ready job of `queue` became ready: the earliest run_at among its waiting
-- jobs (one index probe per distinct priority, as the claim index orders them by priority
-- first) and its due scheduled jobs.
CREATE FUNCTION job._oldest_ready_at(queue text)
RETURNS timestamptz LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp AS $$
    WITH RECURSIVE by_priority AS (
        (SELECT l.priority, l.run_at FROM job.live_jobs l
          WHERE l.queue = _oldest_ready_at.queue AND l.state = 'waiting'
          ORDER BY l.priority DESC, l.run_at LIMIT 1)
        UNION ALL
        SELECT lower_priority.priority, lower_priority.run_at
          FROM by_priority p
         CROSS JOIN LATERAL (SELECT l.priority, l.run_at FROM job.live_jobs l
                              WHERE l.queue = _oldest_ready_at.queue AND l.state = 'waiting'
                                AND l.priority < p.priority
                              ORDER BY l.priority DESC, l.run_at LIMIT 1) lower_priority
    )
    SELECT least((SELECT min(b.run_at) FROM by_priority b),
                 (SELECT l.run_at FROM job.live_jobs l
                   WHERE l.queue = _oldest_ready_at.queue AND l.state = 'scheduled' AND l.run_at <= now()
                   ORDER BY l.run_at LIMIT 1))
$$;

-- Counts live jobs per queue and state into job.queue_depth (see job._live_count: exact up to
-- 10,000 per state, estimated above).  Returns the number of queues.
CREATE FUNCTION job._count_queue_depth()
RETURNS int LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    counted int;
BEGIN
    INSERT INTO job.queue_depth AS d (queue, waiting, scheduled, running, oldest_ready_at, counted_at, estimated)
    SELECT q.name, w.n + due.n, later.n, r.n, job._oldest_ready_at(q.name), now(),
           w.estimated OR due.estimated OR later.estimated OR r.estimated
      FROM job.queues q
     CROSS JOIN LATERAL job._live_count(q.name, 'waiting') w
     CROSS JOIN LATERAL job._live_count(q.name, 'scheduled', true) due
     CROSS JOIN LATERAL job._live_count(q.name, 'scheduled', false) later
     CROSS JOIN LATERAL job._live_count(q.name, 'running') r
    ON CONFLICT (queue) DO UPDATE
       SET waiting = EXCLUDED.waiting, scheduled = EXCLUDED.scheduled, running = EXCLUDED.running,
           oldest_ready_at = EXCLUDED.oldest_ready_at, counted_at = EXCLUDED.counted_at,
           estimated = EXCLUDED.estimated;
    GET DIAGNOSTICS counted = ROW_COUNT;
    DELETE FROM job.queue_depth d WHERE NOT EXISTS (SELECT 1 FROM job.queues q WHERE q.name = d.queue);
    RETURN counted;
END $$;

-- Merges the writer shards of every minute before the last two into one row (shard -1), at
-- most max_rows rows per call, so that reads scan about one row per minute, queue and job
-- type.  A late writer (a transaction that began in that minute) just adds a shard row that
-- the next call merges.  Returns how many rows it merged.
CREATE FUNCTION job._compact_metric_buckets(max_rows int)
RETURNS int LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    compacted int;
    merged job.metric_buckets[];
BEGIN
    WITH old AS (
        DELETE FROM job.metric_buckets b
         WHERE (b.bucket, b.queue, b.job_type, b.shard) IN (
               SELECT o.bucket, o.queue, o.job_type, o.shard FROM job.metric_buckets o
                WHERE o.bucket < date_trunc('minute', now()) - interval '1 minute' AND o.shard <> -1
                ORDER BY o.bucket LIMIT max_rows)
        RETURNING b.*
    )
    SELECT coalesce(sum(m.n), 0), array_agg(m.row) INTO compacted, merged
      FROM (SELECT count(*) AS n,
                   ROW(o.bucket, o.queue, o.job_type, -1, sum(o.completed), sum(o.failed), sum(o.dead),
                       sum(o.stalled), job._hist_sum(o.processing), sum(o.processing_sum),
                       job._hist_sum(o.waiting), sum(o.waiting_sum))::job.metric_buckets AS row
              FROM old o GROUP BY o.bucket, o.queue, o.job_type) m;
    IF compacted > 0 THEN
        PERFORM job._add_buckets(merged);
    END IF;
    RETURN compacted;
END $$;

-- Folds minute buckets older than two hours into job.metric_totals (at most max_rows of
-- them), and forgets workers unseen for a day.  Returns how many buckets it folded.
CREATE FUNCTION job._fold_metric_buckets(max_rows int)
RETURNS int LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    folded int;
BEGIN
    WITH old AS (
        DELETE FROM job.metric_buckets b
         WHERE (b.bucket, b.queue, b.job_type, b.shard) IN (
               SELECT o.bucket, o.queue, o.job_type, o.shard FROM job.metric_buckets o
                WHERE o.bucket < now() - interval '2 hours' ORDER BY o.bucket LIMIT max_rows)
        RETURNING b.*
    ), summed AS (
        SELECT o.queue, o.job_type, sum(o.completed) AS completed, sum(o.failed) AS failed,
               sum(o.dead) AS dead, sum(o.stalled) AS stalled,
               sum(o.completed + o.failed) AS processing_count,
               sum(o.processing_sum) AS processing_sum,
               sum(o.completed + o.failed) AS waiting_count,
               sum(o.waiting_sum) AS waiting_sum
          FROM old o GROUP BY o.queue, o.job_type
    )
    INSERT INTO job.metric_totals AS t
    SELECT s.queue, s.job_type, s.completed, s.failed, s.dead, s.stalled, s.processing_count,
           s.processing_sum, s.waiting_count, s.waiting_sum
      FROM summed s
    ON CONFLICT (queue, job_type) DO UPDATE
       SET completed = t.completed + EXCLUDED.completed, failed = t.failed + EXCLUDED.failed,
           dead = t.dead + EXCLUDED.dead, stalled = t.stalled + EXCLUDED.stalled,
           processing_count = t.processing_count + EXCLUDED.processing_count,
           processing_sum = t.processing_sum + EXCLUDED.processing_sum,
           waiting_count = t.waiting_count + EXCLUDED.waiting_count,
           waiting_sum = t.waiting_sum + EXCLUDED.waiting_sum;
    GET DIAGNOSTICS folded = ROW_COUNT;
    DELETE FROM job.workers_seen w
     WHERE w.last_seen < now() - interval '1 day'
       AND NOT EXISTS (SELECT 1 FROM job.live_jobs l WHERE l.state = 'running' AND l.claimed_by = w.worker);
    RETURN folded;
END $$;

---------------------------------------------------------------------------------------------
-- Reading
---------------------------------------------------------------------------------------------

-- Per queue and job type: attempts over the last 1, 5 and 60 minutes (minute resolution: a
-- window holds the buckets of the minutes that started within it), failure rate and duration
-- quantiles over the last 5 minutes.
CREATE VIEW job.metrics AS
WITH recent AS (
    SELECT b.queue, b.job_type,
           sum(b.completed) FILTER (WHERE b.bucket > now() - interval '1 minute')  AS completed_1m,
           sum(b.completed) FILTER (WHERE b.bucket > now() - interval '5 minutes') AS completed_5m,
           sum(b.completed)                                                        AS completed_1h,
           sum(b.failed)    FILTER (WHERE b.bucket > now() - interval '1 minute')  AS failed_1m,
           sum(b.failed)    FILTER (WHERE b.bucket > now() - interval '5 minutes') AS failed_5m,
           sum(b.failed)                                                           AS failed_1h,
           sum(b.dead)      FILTER (WHERE b.bucket > now() - interval '1 minute')  AS dead_1m,
           sum(b.dead)      FILTER (WHERE b.bucket > now() - interval '5 minutes') AS dead_5m,
           sum(b.dead)                                                             AS dead_1h,
           sum(b.stalled)   FILTER (WHERE b.bucket > now() - interval '1 minute')  AS stalled_1m,
           sum(b.stalled)   FILTER (WHERE b.bucket > now() - interval '5 minutes') AS stalled_5m,
           sum(b.stalled)                                                          AS stalled_1h,
           job._hist_sum(b.processing) FILTER (WHERE b.bucket > now() - interval '5 minutes') AS processing,
           job._hist_sum(b.waiting)    FILTER (WHERE b.bucket > now() - interval '5 minutes') AS waiting
      FROM job.metric_buckets b
     WHERE b.bucket > now() - interval '60 minutes'
     GROUP BY b.queue, b.job_type
)
SELECT r.queue, nullif(r.job_type, '') AS job_type,
       coalesce(r.completed_1m, 0) AS completed_1m, coalesce(r.completed_5m, 0) AS completed_5m,
       r.completed_1h,
       coalesce(r.failed_1m, 0) AS failed_1m, coalesce(r.failed_5m, 0) AS failed_5m, r.failed_1h,
       coalesce(r.dead_1m, 0) AS dead_1m, coalesce(r.dead_5m, 0) AS dead_5m, r.dead_1h,
       coalesce(r.stalled_1m, 0) AS stalled_1m, coalesce(r.stalled_5m, 0) AS stalled_5m, r.stalled_1h,
       coalesce(r.failed_5m, 0)::float8 / nullif(coalesce(r.completed_5m, 0) + coalesce(r.failed_5m, 0), 0) AS failure_rate_5m,
       job._hist_quantile(r.processing, 0.5)  AS processing_p50,
       job._hist_quantile(r.processing, 0.95) AS processing_p95,
       job._hist_quantile(r.processing, 0.99) AS processing_p99,
       job._hist_quantile(r.waiting, 0.5)     AS wait_p50,
       job._hist_quantile(r.waiting, 0.95)    AS wait_p95,
       job._hist_quantile(r.waiting, 0.99)    AS wait_p99
  FROM recent r;

COMMENT ON VIEW job.metrics IS 'Per queue and job type: completed, failed, dead and stalled attempts over 1/5/60 minutes; failure rate and processing and wait time quantiles (seconds) over 5 minutes.';

COMMENT ON COLUMN job.metrics.queue IS 'The queue.';
COMMENT ON COLUMN job.metrics.job_type IS 'The job type; NULL: jobs without one.';
COMMENT ON COLUMN job.metrics.completed_1m IS 'Jobs completed in the last minute (minute resolution: the minutes that began within it); a count.';
COMMENT ON COLUMN job.metrics.completed_5m IS 'Jobs completed in the last 5 minutes (minute resolution); a count.';
COMMENT ON COLUMN job.metrics.completed_1h IS 'Jobs completed in the last 60 minutes (minute resolution); a count.';
COMMENT ON COLUMN job.metrics.failed_1m IS 'Failed attempts (retried, dead or stalled) in the last minute (minute resolution); a count.';
COMMENT ON COLUMN job.metrics.failed_5m IS 'Failed attempts (retried, dead or stalled) in the last 5 minutes (minute resolution); a count.';
COMMENT ON COLUMN job.metrics.failed_1h IS 'Failed attempts (retried, dead or stalled) in the last 60 minutes (minute resolution); a count.';
COMMENT ON COLUMN job.metrics.dead_1m IS 'Jobs that died (permanent failure, or out of retries) in the last minute (minute resolution); a count.';
COMMENT ON COLUMN job.metrics.dead_5m IS 'Jobs that died (permanent failure, or out of retries) in the last 5 minutes (minute resolution); a count.';
COMMENT ON COLUMN job.metrics.dead_1h IS 'Jobs that died (permanent failure, or out of retries) in the last 60 minutes (minute resolution); a count.';
COMMENT ON COLUMN job.metrics.stalled_1m IS 'Attempts whose lease ran out (taken back, or dead when out of retries) in the last minute (minute resolution); a count.';
COMMENT ON COLUMN job.metrics.stalled_5m IS 'Attempts whose lease ran out (taken back, or dead when out of retries) in the last 5 minutes (minute resolution); a count.';
COMMENT ON COLUMN job.metrics.stalled_1h IS 'Attempts whose lease ran out (taken back, or dead when out of retries) in the last 60 minutes (minute resolution); a count.';
COMMENT ON COLUMN job.metrics.failure_rate_5m IS 'failed_5m / (completed_5m + failed_5m), from 0 to 1; NULL: no attempt finished in the last 5 minutes.';
COMMENT ON COLUMN job.metrics.processing_p50 IS 'Median time from claim to completion, failure or take-back of the attempts of the last 5 minutes, in seconds; NULL: none.';
COMMENT ON COLUMN job.metrics.processing_p95 IS '95th percentile of the time from claim to completion, failure or take-back of the attempts of the last 5 minutes, in seconds; NULL: none.';
COMMENT ON COLUMN job.metrics.processing_p99 IS '99th percentile of the time from claim to completion, failure or take-back of the attempts of the last 5 minutes, in seconds; NULL: none.';
COMMENT ON COLUMN job.metrics.wait_p50 IS 'Median time from ready (run_at) to claim of the attempts that finished in the last 5 minutes, in seconds; NULL: none.';
COMMENT ON COLUMN job.metrics.wait_p95 IS '95th percentile of the time from ready (run_at) to claim of the attempts that finished in the last 5 minutes, in seconds; NULL: none.';
COMMENT ON COLUMN job.metrics.wait_p99 IS '99th percentile of the time from ready (run_at) to claim of the attempts that finished in the last 5 minutes, in seconds; NULL: none.';

CREATE VIEW job.queue_metrics AS
SELECT q.name AS queue, q.paused,
       coalesce(d.waiting, 0) AS waiting, coalesce(d.scheduled, 0) AS scheduled,
       coalesce(d.running, 0) AS running, coalesce(c.dead_letters, 0) AS dead_letters,
       now() - d.oldest_ready_at AS oldest_ready_age,
       d.counted_at AS depth_counted_at,
       coalesce(d.estimated, false) AS depth_estimated
  FROM job.queues q
  LEFT JOIN job.queue_depth d ON d.queue = q.name
  LEFT JOIN job.queue_counters c ON c.queue = q.name;

COMMENT ON VIEW job.queue_metrics IS 'Per queue: jobs waiting, scheduled and running (as of depth_counted_at; exact up to 10,000 per state, estimated from statistics above that when depth_estimated), the dead-letter queue''s size, the oldest ready job''s age.';

COMMENT ON COLUMN job.queue_metrics.queue IS 'The queue''s name.';
COMMENT ON COLUMN job.queue_metrics.paused IS 'Whether the queue is paused: it hands out no job.';
COMMENT ON COLUMN job.queue_metrics.waiting IS 'Jobs ready to claim (scheduled ones that had come due included) as of depth_counted_at; 0 before the first count.';
COMMENT ON COLUMN job.queue_metrics.scheduled IS 'Jobs whose run_at was still ahead, as of depth_counted_at; 0 before the first count.';
COMMENT ON COLUMN job.queue_metrics.running IS 'Jobs claimed and not yet finished, as of depth_counted_at; 0 before the first count.';
COMMENT ON COLUMN job.queue_metrics.dead_letters IS 'Dead jobs kept (the dead-letter queue); exact and current.';
COMMENT ON COLUMN job.queue_metrics.oldest_ready_age IS 'How long the job that was the oldest ready one at depth_counted_at has been ready; NULL: none was ready, or not counted yet.';
COMMENT ON COLUMN job.queue_metrics.depth_counted_at IS 'When the background worker last counted the queue''s jobs (every pg_jobqueue.maintenance_interval); NULL: not counted yet.';
COMMENT ON COLUMN job.queue_metrics.depth_estimated IS 'True when a count above 10,000 jobs in a state was estimated from table statistics instead of counted.';

CREATE VIEW job.workers AS
SELECT w.worker, w.first_seen, w.last_seen, coalesce(h.held, 0) AS jobs_held, w.stalled AS jobs_stalled
  FROM job.workers_seen w
  LEFT JOIN (SELECT l.claimed_by, count(*) AS held FROM job.live_jobs l
              WHERE l.state = 'running' GROUP BY l.claimed_by) h ON h.claimed_by = w.worker;

COMMENT ON VIEW job.workers IS 'Every worker name seen by dequeue or heartbeat (the worker''s executors included): when last seen, jobs held now, jobs of it that stalled.';

COMMENT ON COLUMN job.workers.worker IS 'A worker name given to dequeue, or one of the background worker''s executors or sender; forgotten a day after it was last seen, unless it holds jobs.';
COMMENT ON COLUMN job.workers.first_seen IS 'When dequeue or heartbeat first saw the name.';
COMMENT ON COLUMN job.workers.last_seen IS 'When dequeue or heartbeat last saw the name (recorded at most once a second per session).';
COMMENT ON COLUMN job.workers.jobs_held IS 'Running jobs claimed under this name now (those whose lease ran out but that were not taken back yet included); a count.';
COMMENT ON COLUMN job.workers.jobs_stalled IS 'How many of its jobs were taken back after their lease ran out, since the name was first seen; a count.';

-- Escapes a Prometheus label value.
CREATE FUNCTION job._prometheus_label(value text)
RETURNS text LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp AS $$
    SELECT '"' || replace(replace(replace(value, '\', '\\'), '"', '\"'), E'\n', '\n') || '"'
$$;

-- Per queue and job type: the running totals behind the Prometheus counters (folded totals
-- plus the recent buckets), and the last 5 minutes' histograms.
CREATE VIEW job._metric_running_totals AS
SELECT k.queue, k.job_type,
       coalesce(t.completed, 0) + coalesce(b.completed, 0) AS completed,
       coalesce(t.failed, 0) + coalesce(b.failed, 0) AS failed,
       coalesce(t.dead, 0) + coalesce(b.dead, 0) AS dead,
       coalesce(t.stalled, 0) + coalesce(b.stalled, 0) AS stalled,
       coalesce(t.processing_count, 0) + coalesce(b.processing_count, 0) AS processing_count,
       coalesce(t.processing_sum, 0) + coalesce(b.processing_sum, 0) AS processing_sum,
       coalesce(t.waiting_count, 0) + coalesce(b.waiting_count, 0) AS waiting_count,
       coalesce(t.waiting_sum, 0) + coalesce(b.waiting_sum, 0) AS waiting_sum,
       b.processing, b.waiting
  FROM (SELECT queue, job_type FROM job.metric_totals
        UNION SELECT queue, job_type FROM job.metric_buckets) k
  LEFT JOIN job.metric_totals t ON t.queue = k.queue AND t.job_type = k.job_type
  LEFT JOIN (SELECT mb.queue, mb.job_type, sum(mb.completed) AS completed, sum(mb.failed) AS failed,
                    sum(mb.dead) AS dead, sum(mb.stalled) AS stalled,
                    sum(mb.completed + mb.failed) AS processing_count,
                    sum(mb.processing_sum) AS processing_sum,
                    sum(mb.completed + mb.failed) AS waiting_count,
                    sum(mb.waiting_sum) AS waiting_sum,
                    job._hist_sum(mb.processing) FILTER (WHERE mb.bucket > now() - interval '5 minutes') AS processing,
                    job._hist_sum(mb.waiting) FILTER (WHERE mb.bucket > now() - interval '5 minutes') AS waiting
               FROM job.metric_buckets mb GROUP BY mb.queue, mb.job_type) b
         ON b.queue = k.queue AND b.job_type = k.job_type;

-- Every metric in the Prometheus text exposition format (version 0.0.4): one HELP and TYPE
-- line per family, then its samples.
CREATE FUNCTION job.prometheus_metrics()
RETURNS text LANGUAGE sql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
WITH q AS (SELECT * FROM job.queue_metrics),
t AS (SELECT *, job._prometheus_label(queue) AS ql, job._prometheus_label(job_type) AS tl
        FROM job._metric_running_totals),
w AS (SELECT *, job._prometheus_label(worker) AS wl FROM job.workers),
e AS (SELECT st.*, d.disabled_reason IS NOT NULL AS disabled, job._prometheus_label(st.endpoint) AS el,
             (SELECT count(*) FROM job.live_jobs l WHERE l.queue = d.queue AND l.state = 'running') AS in_flight
        FROM job.endpoint_stats st JOIN job.endpoint_defs d ON d.name = st.endpoint),
families (n, name, type, help) AS (VALUES
    (1, 'pg_jobqueue_jobs', 'gauge', 'Jobs per queue and state (live states as of the worker''s last count).'),
    (2, 'pg_jobqueue_oldest_ready_age_seconds', 'gauge', 'Age of the oldest job ready to run.'),
    (3, 'pg_jobqueue_completed_total', 'counter', 'Jobs completed.'),
    (4, 'pg_jobqueue_failed_attempts_total', 'counter', 'Failed attempts, retried or not, stalled ones included.'),
    (5, 'pg_jobqueue_dead_total', 'counter', 'Jobs moved to the dead-letter queue.'),
    (6, 'pg_jobqueue_stalled_total', 'counter', 'Attempts whose lease expired before their worker finished them.'),
    (7, 'pg_jobqueue_processing_seconds', 'summary', 'Claim to finish of finished attempts; quantiles over the last 5 minutes.'),
    (8, 'pg_jobqueue_wait_seconds', 'summary', 'Ready to claim of finished attempts; quantiles over the last 5 minutes.'),
    (9, 'pg_jobqueue_worker_jobs', 'gauge', 'Jobs each worker holds.'),
    (10, 'pg_jobqueue_worker_last_seen_timestamp_seconds', 'gauge', 'When dequeue or heartbeat last saw each worker.'),
    (11, 'pg_jobqueue_http_requests_total', 'counter', 'HTTP delivery attempts per endpoint by answer: status class, or error (no answer).'),
    (12, 'pg_jobqueue_http_failed_attempts_total', 'counter', 'Failed HTTP delivery attempts per endpoint: transient (retried) or permanent.'),
    (13, 'pg_jobqueue_http_request_seconds', 'summary', 'HTTP delivery attempts'' duration per endpoint since it was created.'),
    (14, 'pg_jobqueue_http_in_flight', 'gauge', 'HTTP deliveries being sent per endpoint.'),
    (15, 'pg_jobqueue_http_endpoint_disabled', 'gauge', '1 when the endpoint is disabled (410 Gone, or too many failures in a row).')),
samples (n, sort1, sort2, line) AS (
    SELECT 1, q.queue, s.state, format('pg_jobqueue_jobs{queue=%s,state="%s"} %s', job._prometheus_label(q.queue), s.state, s.n)
      FROM q CROSS JOIN LATERAL (VALUES ('waiting', q.waiting), ('scheduled', q.scheduled),
                                        ('running', q.running), ('dead', q.dead_letters)) s(state, n)
    UNION ALL
    SELECT 2, q.queue, '', format('pg_jobqueue_oldest_ready_age_seconds{queue=%s} %s', job._prometheus_label(q.queue),
                                  coalesce(extract(epoch FROM q.oldest_ready_age), 0))
      FROM q
    UNION ALL
    SELECT c.n, t.queue, t.job_type, format('%s{queue=%s,job_type=%s} %s', f.name, t.ql, t.tl, c.value)
      FROM t CROSS JOIN LATERAL (VALUES (3, t.completed), (4, t.failed), (5, t.dead), (6, t.stalled)) c(n, value)
      JOIN families f ON f.n = c.n
    UNION ALL
    SELECT h.n, t.queue, t.job_type || h.sort, format('%s%s{queue=%s,job_type=%s%s} %s', f.name, h.suffix, t.ql, t.tl, h.label, h.value)
      FROM t CROSS JOIN LATERAL (VALUES
               (7, '1', '', ',quantile="0.5"', coalesce(job._hist_quantile(t.processing, 0.5)::text, 'NaN')),
               (7, '2', '', ',quantile="0.95"', coalesce(job._hist_quantile(t.processing, 0.95)::text, 'NaN')),
               (7, '3', '', ',quantile="0.99"', coalesce(job._hist_quantile(t.processing, 0.99)::text, 'NaN')),
               (7, '4', '_sum', '', t.processing_sum::text),
               (7, '5', '_count', '', t.processing_count::text),
               (8, '1', '', ',quantile="0.5"', coalesce(job._hist_quantile(t.waiting, 0.5)::text, 'NaN')),
               (8, '2', '', ',quantile="0.95"', coalesce(job._hist_quantile(t.waiting, 0.95)::text, 'NaN')),
               (8, '3', '', ',quantile="0.99"', coalesce(job._hist_quantile(t.waiting, 0.99)::text, 'NaN')),
               (8, '4', '_sum', '', t.waiting_sum::text),
               (8, '5', '_count', '', t.waiting_count::text)) h(n, sort, suffix, label, value)
      JOIN families f ON f.n = h.n
    UNION ALL
    SELECT 9, w.worker, '', format('pg_jobqueue_worker_jobs{worker=%s} %s', w.wl, w.jobs_held) FROM w
    UNION ALL
    SELECT 10, w.worker, '', format('pg_jobqueue_worker_last_seen_timestamp_seconds{worker=%s} %s', w.wl,
                                    extract(epoch FROM w.last_seen)) FROM w
    UNION ALL
    SELECT 11, e.endpoint, c.class, format('pg_jobqueue_http_requests_total{endpoint=%s,class="%s"} %s', e.el, c.class, c.n)
      FROM e CROSS JOIN LATERAL (VALUES ('2xx', e.status_2xx), ('3xx', e.status_3xx), ('4xx', e.status_4xx),
                                        ('5xx', e.status_5xx), ('error', e.transport_errors)) c(class, n)
    UNION ALL
    SELECT 12, e.endpoint, k.kind, format('pg_jobqueue_http_failed_attempts_total{endpoint=%s,kind="%s"} %s', e.el, k.kind, k.n)
      FROM e CROSS JOIN LATERAL (VALUES ('permanent', e.permanent_failures), ('transient', e.transient_failures)) k(kind, n)
    UNION ALL
    SELECT 13, e.endpoint, h.sort, format('pg_jobqueue_http_request_seconds%s{endpoint=%s%s} %s', h.suffix, e.el, h.label, h.value)
      FROM e CROSS JOIN LATERAL (VALUES
               ('1', '', ',quantile="0.5"', coalesce(job._hist_quantile(e.latency, 0.5)::text, 'NaN')),
               ('2', '', ',quantile="0.95"', coalesce(job._hist_quantile(e.latency, 0.95)::text, 'NaN')),
               ('3', '', ',quantile="0.99"', coalesce(job._hist_quantile(e.latency, 0.99)::text, 'NaN')),
               ('4', '_sum', '', e.latency_sum::text),
               ('5', '_count', '', (SELECT coalesce(sum(x), 0) FROM unnest(e.latency) x)::text)) h(sort, suffix, label, value)
    UNION ALL
    SELECT 14, e.endpoint, '', format('pg_jobqueue_http_in_flight{endpoint=%s} %s', e.el, e.in_flight) FROM e
    UNION ALL
    SELECT 15, e.endpoint, '', format('pg_jobqueue_http_endpoint_disabled{endpoint=%s} %s', e.el, e.disabled::int) FROM e
)
SELECT string_agg(format(E'# HELP %s %s\n# TYPE %s %s\n', f.name, f.help, f.name, f.type)
                  || coalesce((SELECT string_agg(s.line || E'\n', '' ORDER BY s.sort1, s.sort2)
                                 FROM samples s WHERE s.n = f.n), ''),
                  '' ORDER BY f.n)
  FROM families f
$$;

COMMENT ON FUNCTION job.prometheus_metrics() IS 'Every pg_jobqueue metric in the Prometheus text exposition format.';

COMMENT ON FUNCTION job.worker_processes() IS
    'The pg_jobqueue background worker processes serving this database, one row each: pid and kind (scheduler, executor or sender).';
