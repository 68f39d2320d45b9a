-- pg_jobqueue tables, indexes and views.  See docs/design.md for the reasoning.
--
-- Three tables do the work:
--   job.queues         one row per queue: its retry, lease and retention settings.
--   job.live_jobs      jobs that can still run (waiting, scheduled, running): the hot table.
--   job.finished_jobs  jobs that are done (completed, dead, cancelled): history and the
--                      dead-letter queue, pruned by each queue's retention.
-- and job.idempotency_keys enforces "one job per key per window" with its primary key.

CREATE TABLE job.queues (
    name               text PRIMARY KEY,
    max_retries        int NOT NULL CHECK (max_retries >= 0),
    backoff_base       interval NOT NULL CHECK (backoff_base > interval '0'),
    backoff_max        interval NOT NULL CHECK (backoff_max >= backoff_base),
    jitter             float8 NOT NULL CHECK (jitter >= 0 AND jitter <= 1),
    lease              interval NOT NULL CHECK (lease > interval '0'),
    idempotency_window interval NOT NULL CHECK (idempotency_window >= interval '0'),
    retention          interval NOT NULL CHECK (retention >= interval '0'),
    paused             boolean NOT NULL DEFAULT false,
    created_at         timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at         timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE job.queues IS 'One row per queue: retry, lease, idempotency and retention settings.';

CREATE SEQUENCE job.job_id_seq AS bigint;

-- The hot table.  Only jobs that can still run live here, so claims scan a small table.
-- No foreign keys (every insert would look up and lock the queue row) and no CHECK
-- constraints (the API functions are the only writers and validate their input; the checks
-- cost several percent of an enqueue).
CREATE TABLE job.live_jobs (
    id               bigint PRIMARY KEY DEFAULT pg_catalog.nextval('job.job_id_seq'),
    run_at           timestamptz NOT NULL,
    enqueued_at      timestamptz NOT NULL DEFAULT pg_catalog.now(),
    claimed_at       timestamptz,
    lease_expires_at timestamptz,
    priority         int NOT NULL DEFAULT 0,
    attempt          int NOT NULL DEFAULT 0,
    max_retries      int NOT NULL,
    state            text NOT NULL,  -- waiting | scheduled | running
    queue            text NOT NULL,
    job_type         text,
    claimed_by       text,
    idempotency_key  text,
    payload          jsonb NOT NULL,
    errors           jsonb NOT NULL DEFAULT '[]'
) WITH (
    -- Rows churn (insert, claim, delete): vacuum early and without throttling so that
    -- dead index entries at the head of the claim index are reclaimed quickly.
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_insert_scale_factor = 0.01,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_vacuum_cost_delay = 0
);
COMMENT ON TABLE job.live_jobs IS 'Jobs that can still run: waiting, scheduled or running.';

-- The claim index: exactly the rows a claim may take, in the order it takes them.
CREATE INDEX live_jobs_claim_idx ON job.live_jobs (queue, priority DESC, run_at, id)
    WHERE state = 'waiting';
-- Scheduled jobs (a future run_at, or a retry waiting out its backoff) become waiting
-- when due; this index finds the due ones without touching the rest.
CREATE INDEX live_jobs_due_idx ON job.live_jobs (queue, run_at)
    WHERE state = 'scheduled';
-- Running jobs by lease expiry: finds stalled jobs (the worker died) cheaply.
CREATE INDEX live_jobs_lease_idx ON job.live_jobs (queue, lease_expires_at)
    WHERE state = 'running';

-- History and the dead-letter queue.  Insert-mostly; rows leave by retention or by retry.
CREATE TABLE job.finished_jobs (
    id               bigint PRIMARY KEY,
    run_at           timestamptz NOT NULL,
    enqueued_at      timestamptz NOT NULL,
    claimed_at       timestamptz,
    finished_at      timestamptz NOT NULL DEFAULT pg_catalog.now(),
    priority         int NOT NULL,
    attempt          int NOT NULL,
    max_retries      int NOT NULL,
    state            text NOT NULL,  -- completed | dead | cancelled
    queue            text NOT NULL,
    job_type         text,
    claimed_by       text,
    idempotency_key  text,
    payload          jsonb NOT NULL,
    errors           jsonb NOT NULL,
    result           jsonb
) WITH (
    autovacuum_vacuum_insert_scale_factor = 0.05,
    autovacuum_vacuum_cost_delay = 0
);
COMMENT ON TABLE job.finished_jobs IS 'Completed, dead (the dead-letter queue) and cancelled jobs, kept for each queue''s retention.';

-- Serves retention (queue, state, finished_at < cutoff), the dead-letter queue
-- (queue, state = 'dead') and per-state counts.
CREATE INDEX finished_jobs_queue_state_idx ON job.finished_jobs (queue, state, finished_at);

-- One job per (queue, key) per idempotency window, whatever that job's state.
-- Kept apart from the job tables so that the key outlives the job's move to history
-- and the primary key arbitrates racing enqueues.
CREATE TABLE job.idempotency_keys (
    queue      text NOT NULL,
    key        text NOT NULL,
    job_id     bigint NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (queue, key)
);
CREATE INDEX idempotency_keys_expires_idx ON job.idempotency_keys (expires_at);
COMMENT ON TABLE job.idempotency_keys IS 'Idempotency keys and the job each one maps to, until expires_at.';

-- Every job, whatever its state.  A scheduled job whose run_at has passed is ready
-- now and shows as waiting.
CREATE VIEW job.jobs AS
SELECT id, queue, job_type,
       CASE WHEN state = 'scheduled' AND run_at <= pg_catalog.now() THEN 'waiting' ELSE state END AS state,
       payload, priority, attempt, max_retries, run_at, enqueued_at, claimed_at, claimed_by,
       lease_expires_at, NULL::timestamptz AS finished_at, errors, NULL::jsonb AS result,
       idempotency_key
  FROM job.live_jobs
UNION ALL
SELECT id, queue, job_type, state,
       payload, priority, attempt, max_retries, run_at, enqueued_at, claimed_at, claimed_by,
       NULL::timestamptz, finished_at, errors, result,
       idempotency_key
  FROM job.finished_jobs;
COMMENT ON VIEW job.jobs IS 'Every job in every state with its attempts, errors, result and timestamps.';

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

-- The row type job.dequeue returns.
CREATE TYPE job.claimed_job AS (
    id               bigint,
    queue            text,
    job_type         text,
    payload          jsonb,
    attempt          int,
    max_retries      int,
    enqueued_at      timestamptz,
    lease_expires_at timestamptz
);

-- Queue settings, unfinished jobs, history and keys are user data: pg_dump keeps them.
SELECT pg_catalog.pg_extension_config_dump('job.queues', '');
SELECT pg_catalog.pg_extension_config_dump('job.live_jobs', '');
SELECT pg_catalog.pg_extension_config_dump('job.finished_jobs', '');
SELECT pg_catalog.pg_extension_config_dump('job.idempotency_keys', '');
SELECT pg_catalog.pg_extension_config_dump('job.job_id_seq', '');
