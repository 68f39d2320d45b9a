-- pg_jobqueue tables, indexes, types and sequences: every table the extension keeps, each in
-- its current shape.  See docs/design.md for the reasoning.
--
--   job.queues            one row per queue: its retry, lease, retention and size settings.
--   job.live_jobs         jobs that can still run (waiting, scheduled, running): the hot table.
--   job.finished_jobs     jobs that are done (completed, dead, cancelled): history and the
--                         dead-letter queue, pruned by each queue's retention.
--   job.idempotency_keys  "one job per key per window", enforced by its primary key.
--   job.audit_log         manual interventions.
--   job.metric_*, job.queue_depth, job.queue_counters, job.workers_seen   metrics.
--   job.schedule_defs, job.schedule_runs   schedules and their fired ticks.
--   job.handlers          queues whose jobs the background worker runs itself.

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
    updated_at         timestamptz NOT NULL DEFAULT pg_catalog.now(),
    max_payload_bytes  int CHECK (max_payload_bytes > 0)
);

COMMENT ON TABLE job.queues IS 'One row per queue: retry, lease, idempotency and retention settings.';

COMMENT ON COLUMN job.queues.max_payload_bytes IS 'The largest payload (stored jsonb size) enqueue accepts; NULL: no limit.';

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

-- One row per manual intervention: retry, retry_dead, cancel, pause_queue, resume_queue,
-- create_queue (new queue or changed settings), drop_queue, purge, and every schedule and
-- handler change.  Written in the intervention's own transaction: a rolled-back change
-- leaves no row.  Pruned by the worker after pg_jobqueue.audit_retention.
CREATE TABLE job.audit_log (
    id           bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    at           timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    role         name NOT NULL DEFAULT CURRENT_USER,
    session_role name NOT NULL DEFAULT SESSION_USER,
    action       text NOT NULL,
    arguments    jsonb NOT NULL,
    jobs_touched bigint NOT NULL DEFAULT 0
);

CREATE INDEX audit_log_at_idx ON job.audit_log (at);

COMMENT ON TABLE job.audit_log IS 'Manual interventions: who (role, session role), when, what (action and arguments), how many jobs it touched.';

CREATE TABLE job.metric_buckets (
    bucket          timestamptz NOT NULL,  -- the minute
    queue           text NOT NULL,
    job_type        text NOT NULL,         -- '' for jobs without a type
    shard           smallint NOT NULL,     -- job._writer_shard(): concurrent writers, different rows
    completed       bigint NOT NULL,
    failed          bigint NOT NULL,       -- failed attempts, retried or not
    dead            bigint NOT NULL,
    stalled         bigint NOT NULL,       -- attempts whose lease expired
    processing      bigint[] NOT NULL,     -- claim to finish of every attempt counted above
                                           -- (completed + failed of them: the histogram's count)
    processing_sum  float8 NOT NULL,       -- seconds
    waiting         bigint[] NOT NULL,     -- ready to claim, of the same attempts
    waiting_sum     float8 NOT NULL,
    PRIMARY KEY (bucket, queue, job_type, shard)
) WITH (fillfactor = 50);

  -- room for HOT updates: rows are rewritten many times a minute
COMMENT ON TABLE job.metric_buckets IS 'Per minute, queue and job type: finished, failed, dead and stalled attempts and duration histograms (last two hours).';

CREATE TABLE job.metric_totals (
    queue            text NOT NULL,
    job_type         text NOT NULL,
    completed        bigint NOT NULL,
    failed           bigint NOT NULL,
    dead             bigint NOT NULL,
    stalled          bigint NOT NULL,
    processing_count bigint NOT NULL,
    processing_sum   float8 NOT NULL,
    waiting_count    bigint NOT NULL,
    waiting_sum      float8 NOT NULL,
    PRIMARY KEY (queue, job_type)
);

COMMENT ON TABLE job.metric_totals IS 'Running totals of the minute buckets older than two hours.';

CREATE TABLE job.queue_depth (
    queue           text PRIMARY KEY,
    waiting         bigint NOT NULL,
    scheduled       bigint NOT NULL,
    running         bigint NOT NULL,
    oldest_ready_at timestamptz,
    counted_at      timestamptz NOT NULL
);

COMMENT ON TABLE job.queue_depth IS 'Live jobs per queue and state, counted by the worker every pg_jobqueue.maintenance_interval.';

CREATE TABLE job.queue_counters (
    queue        text PRIMARY KEY,
    dead_letters bigint NOT NULL
);

COMMENT ON TABLE job.queue_counters IS 'The size of each queue''s dead-letter queue, kept exact.';

CREATE TABLE job.workers_seen (
    worker     text PRIMARY KEY,
    first_seen timestamptz NOT NULL,
    last_seen  timestamptz NOT NULL,
    stalled    bigint NOT NULL DEFAULT 0
);

COMMENT ON TABLE job.workers_seen IS 'Every worker name dequeue and heartbeat saw (recorded at most once a second per session), and how many of its jobs stalled.';

-- One row per schedule.  The worker fires a schedule when next_run_at passes:
-- next_tick is the schedule's nominal time, next_run_at adds the schedule's jitter offset.
CREATE TABLE job.schedule_defs (
    name          text PRIMARY KEY,
    id            bigint GENERATED BY DEFAULT AS IDENTITY UNIQUE,
    cron          text NOT NULL,
    timezone      text NOT NULL,
    queue         text NOT NULL REFERENCES job.queues (name) ON DELETE CASCADE,
    payload       jsonb NOT NULL,
    priority      int NOT NULL,
    job_type      text,
    misfire       text NOT NULL CHECK (misfire IN ('skip', 'catch_up')),
    jitter        interval NOT NULL CHECK (jitter >= interval '0'),
    jitter_offset interval NOT NULL,
    paused        boolean NOT NULL DEFAULT false,
    next_tick     timestamptz NOT NULL,
    next_run_at   timestamptz NOT NULL,
    last_tick     timestamptz,
    last_run_at   timestamptz,
    last_job_id   bigint,
    last_error    text,
    created_at    timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at    timestamptz NOT NULL DEFAULT pg_catalog.now()
);

CREATE INDEX schedule_defs_due_idx ON job.schedule_defs (next_run_at) WHERE NOT paused;

COMMENT ON TABLE job.schedule_defs IS 'Cron and interval schedules; read them through the job.schedules view.';

-- One row per fired tick.  The primary key is what makes a tick fire at most once, whoever
-- fires it; the worker keeps the newest pg_jobqueue.schedule_history rows per schedule.
CREATE TABLE job.schedule_runs (
    schedule  text NOT NULL,
    tick      timestamptz NOT NULL,
    due_at    timestamptz NOT NULL,
    fired_at  timestamptz NOT NULL,
    job_id    bigint,
    PRIMARY KEY (schedule, tick)
);

COMMENT ON TABLE job.schedule_runs IS 'Recent fired ticks of each schedule: when due, when fired, which job.';

-- Queues whose jobs the worker's executors run by calling a SQL function.
CREATE TABLE job.handlers (
    queue       text PRIMARY KEY REFERENCES job.queues (name) ON DELETE CASCADE,
    handler     regprocedure NOT NULL,
    run_as      regrole NOT NULL,
    concurrency int NOT NULL CHECK (concurrency BETWEEN 1 AND 1000),
    timeout     interval NOT NULL CHECK (timeout > interval '0'),
    created_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at  timestamptz NOT NULL DEFAULT pg_catalog.now()
);

COMMENT ON TABLE job.handlers IS 'Queues whose jobs the background worker runs itself: handler(payload jsonb), as run_as, under timeout.';

-- Settings, jobs, history, keys, the audit log, metrics, schedules and handlers are user
-- data: pg_dump keeps them.
SELECT pg_catalog.pg_extension_config_dump('job.queues', '');
SELECT pg_catalog.pg_extension_config_dump('job.live_jobs', '');
SELECT pg_catalog.pg_extension_config_dump('job.finished_jobs', '');
SELECT pg_catalog.pg_extension_config_dump('job.idempotency_keys', '');
SELECT pg_catalog.pg_extension_config_dump('job.job_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('job.audit_log', '');
SELECT pg_catalog.pg_extension_config_dump('job.audit_log_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('job.metric_buckets', '');
SELECT pg_catalog.pg_extension_config_dump('job.metric_totals', '');
SELECT pg_catalog.pg_extension_config_dump('job.queue_counters', '');
SELECT pg_catalog.pg_extension_config_dump('job.workers_seen', '');
SELECT pg_catalog.pg_extension_config_dump('job.schedule_defs', '');
SELECT pg_catalog.pg_extension_config_dump('job.schedule_runs', '');
SELECT pg_catalog.pg_extension_config_dump('job.schedule_defs_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('job.handlers', '');
