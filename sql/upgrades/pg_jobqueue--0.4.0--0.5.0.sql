-- pg_jobqueue 0.4.0 -> 0.5.0, its hand-written part: what re-running the definitions cannot do.
-- scripts/upgrade-script.py appends the rest at build time (every function and view 0.5.0
-- defines otherwise than 0.4.0, their comments and grants); freezing 0.5.0 writes the whole
-- script here once, never edited after (see sql/README.md).  What changes and why: CHANGELOG.md.

---------------------------------------------------------------------------------------------
-- Duties that reach only their queues (issue 19, items 9-12)
---------------------------------------------------------------------------------------------

-- Per-queue grants of the produce and work duties (job.grant_queue).  A queue without any
-- grant stays open to every holder of the duty, as in 0.4.0.
ALTER TABLE job.queues ADD COLUMN produce_granted boolean NOT NULL DEFAULT false,
                       ADD COLUMN work_granted boolean NOT NULL DEFAULT false;

CREATE TABLE job.queue_grant_defs (
    queue      text NOT NULL REFERENCES job.queues (name) ON DELETE CASCADE,
    duty       text NOT NULL CHECK (duty IN ('produce', 'work')),
    grantee    regrole NOT NULL,
    granted_by regrole NOT NULL,
    granted_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (queue, duty, grantee)
);
SELECT pg_catalog.pg_extension_config_dump('job.queue_grant_defs', '');

-- Only the role that enqueued a waiting singleton or debounced job replaces it.  Jobs
-- enqueued before the upgrade have none: no enqueue replaces them (they are merged into).
ALTER TABLE job.live_jobs ADD COLUMN enqueued_by regrole;

-- New signatures: _check_limit takes its bound, _replace_pending the enqueuing role.
DROP FUNCTION job._check_limit(text, int);
DROP FUNCTION job._replace_pending(text, text, text, jsonb, timestamptz, interval);
