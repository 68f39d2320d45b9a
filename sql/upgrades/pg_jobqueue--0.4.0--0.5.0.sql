-- pg_jobqueue 0.4.0 -> 0.5.0, its hand-written part: what the definitions cannot do.
-- scripts/upgrade-script.py appends the rest at build time (the tables and types 0.4.0 lacks,
-- every function and view 0.5.0 defines otherwise, their comments and grants); freezing 0.5.0
-- writes the whole script here once, never edited after (see sql/README.md).  What changes
-- and why: CHANGELOG.md.

-- Per-queue grants of the produce and work duties (issue 19, items 9-12; job.grant_queue).  A
-- queue without any grant stays open to every holder of the duty, as in 0.4.0.
ALTER TABLE job.queues ADD COLUMN produce_granted boolean NOT NULL DEFAULT false,
                       ADD COLUMN work_granted boolean NOT NULL DEFAULT false;

-- Only the role that enqueued a waiting singleton or debounced job replaces it.  Jobs
-- enqueued before the upgrade have none: no enqueue replaces them (they are merged into).
ALTER TABLE job.live_jobs ADD COLUMN enqueued_by regrole;

-- New signatures: _check_limit takes its bound, _replace_pending the enqueuing role, and the
-- sender's claim and record exchange typed rows (job._delivery_claim, _delivery_outcome,
-- _delivery_tally) instead of JSON (issue 20).
DROP FUNCTION job._check_limit(text, int);
DROP FUNCTION job._replace_pending(text, text, text, jsonb, timestamptz, interval);
DROP FUNCTION job._claim_deliveries(text, int, text[], int[]);
DROP FUNCTION job._record_deliveries(jsonb, jsonb, int);

-- The fired ticks become readable by the monitor and admin duties through a view named as the
-- table was (issue 22: the README's job.schedule_runs query was refused to both); the table
-- is renamed, its rows and pg_dump registration kept.
ALTER TABLE job.schedule_runs RENAME TO schedule_ticks;
ALTER INDEX job.schedule_runs_pkey RENAME TO schedule_ticks_pkey;
