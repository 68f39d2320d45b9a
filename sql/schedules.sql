-- pg_jobqueue schedules: cron and interval schedules, fired by the worker's scheduler.

-- Schedule expressions are parsed and computed in Rust (rules/src/cron.rs; job.cron_next,
-- job._cron_latest, job._check_cron and job._jitter_offset are declared from src/functions/cron.rs).
COMMENT ON FUNCTION job.cron_next(text, text, timestamptz) IS
    'When a schedule expression fires next after a given time, in a given time zone.';

CREATE VIEW job.schedules AS
SELECT s.name, s.cron, s.timezone, s.queue, s.payload, s.priority, s.job_type, s.misfire,
       s.jitter, s.paused,
       CASE WHEN NOT s.paused THEN s.next_run_at END AS next_run,
       CASE WHEN NOT s.paused THEN s.next_run_at AT TIME ZONE s.timezone END AS next_run_local,
       s.last_run_at AS last_run, s.last_tick, s.last_job_id, j.state AS last_job_state,
       s.last_error, s.id, s.created_at, s.updated_at
  FROM job.schedule_defs s
  LEFT JOIN LATERAL (SELECT jj.state FROM job.jobs jj WHERE jj.id = s.last_job_id) j ON true;

COMMENT ON VIEW job.schedules IS 'Every schedule with its next run (UTC and local time), last run, last job and its state.';

COMMENT ON COLUMN job.schedules.name IS 'The schedule''s name.';
COMMENT ON COLUMN job.schedules.cron IS 'When it fires: 5 cron fields (6 with leading seconds), a macro such as @daily, or an interval such as ''30 seconds''.';
COMMENT ON COLUMN job.schedules.timezone IS 'The IANA time zone the cron fields are read in (an interval ignores it).';
COMMENT ON COLUMN job.schedules.queue IS 'The queue each tick enqueues into.';
COMMENT ON COLUMN job.schedules.payload IS 'The payload of each tick''s job.';
COMMENT ON COLUMN job.schedules.priority IS 'The priority of each tick''s job.';
COMMENT ON COLUMN job.schedules.job_type IS 'The job type of each tick''s job; NULL: none.';
COMMENT ON COLUMN job.schedules.misfire IS 'skip (a missed tick fires only if at most pg_jobqueue.misfire_grace late) or catch_up (it fires however late); of the ticks missed, only the latest can fire.';
COMMENT ON COLUMN job.schedules.jitter IS 'The bound of the fixed offset, in [0, jitter), that every tick of the schedule is shifted by (derived from its name); 0: none.';
COMMENT ON COLUMN job.schedules.paused IS 'Whether the schedule is paused (job.pause_schedule).';
COMMENT ON COLUMN job.schedules.next_run IS 'When it fires next (its next tick plus its jitter offset); NULL while paused.';
COMMENT ON COLUMN job.schedules.next_run_local IS 'next_run as wall-clock time in the schedule''s time zone; NULL while paused.';
COMMENT ON COLUMN job.schedules.last_run IS 'When it last enqueued a job; NULL: never.';
COMMENT ON COLUMN job.schedules.last_tick IS 'The nominal time of the tick that last enqueued a job; NULL: none.';
COMMENT ON COLUMN job.schedules.last_job_id IS 'The id of the job it last enqueued; NULL: none.';
COMMENT ON COLUMN job.schedules.last_job_state IS 'That job''s state now; NULL when there is none, or it is no longer kept.';
COMMENT ON COLUMN job.schedules.last_error IS 'Why its last attempt to fire failed; NULL when that attempt succeeded.';
COMMENT ON COLUMN job.schedules.id IS 'The schedule''s id, returned by job.schedule and kept when it is replaced.';
COMMENT ON COLUMN job.schedules.created_at IS 'When the schedule was created.';
COMMENT ON COLUMN job.schedules.updated_at IS 'When job.schedule last replaced it, or it was last paused or resumed.';

-- The fired ticks, for the monitor and admin duties (the table itself is granted to no one).
CREATE VIEW job.schedule_runs AS
SELECT t.schedule, t.tick, t.due_at, t.fired_at, t.fired_at - t.due_at AS lateness, t.job_id,
       j.state AS job_state
  FROM job.schedule_ticks t
  LEFT JOIN LATERAL (SELECT jj.state FROM job.jobs jj WHERE jj.id = t.job_id) j ON true;

COMMENT ON VIEW job.schedule_runs IS 'The recent fired ticks of each schedule (the newest pg_jobqueue.schedule_history per schedule): when due, when fired, which job.';
COMMENT ON COLUMN job.schedule_runs.schedule IS 'The schedule''s name.';
COMMENT ON COLUMN job.schedule_runs.tick IS 'The tick''s nominal time, before the schedule''s jitter offset.';
COMMENT ON COLUMN job.schedule_runs.due_at IS 'When the tick was due: its nominal time plus the jitter offset.';
COMMENT ON COLUMN job.schedule_runs.fired_at IS 'When the scheduler fired it (the clock just before it enqueued the job).';
COMMENT ON COLUMN job.schedule_runs.lateness IS 'fired_at - due_at: how late it fired.';
COMMENT ON COLUMN job.schedule_runs.job_id IS 'The job the tick enqueued (a tick whose enqueue failed leaves no row: see job.schedules.last_error).';
COMMENT ON COLUMN job.schedule_runs.job_state IS 'That job''s state now; NULL when there is none, or it is no longer kept.';

---------------------------------------------------------------------------------------------
-- Schedules
---------------------------------------------------------------------------------------------

-- The schedule's row; raises when no such schedule exists.
CREATE FUNCTION job._require_schedule(schedule_name text)
RETURNS job.schedule_defs LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s job.schedule_defs;
BEGIN
    SELECT * INTO s FROM job.schedule_defs WHERE name = schedule_name;
    IF NOT FOUND THEN
        PERFORM job._check_name('schedule name', schedule_name);
        RAISE EXCEPTION 'schedule % does not exist', quote_literal(schedule_name)
            USING ERRCODE = 'undefined_object';
    END IF;
    RETURN s;
END $$;

-- Creates or replaces the schedule `name`: every tick of `cron` (in `timezone`) enqueues
-- `payload` into `queue`.  Returns the schedule's id (kept when it is replaced).
CREATE FUNCTION job.schedule(
    name text,
    cron text,
    queue text,
    payload jsonb DEFAULT '{}',
    timezone text DEFAULT 'UTC',
    priority int DEFAULT 0,
    job_type text DEFAULT NULL,
    misfire text DEFAULT 'skip',
    jitter interval DEFAULT NULL
) RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    jitter_bound interval := coalesce(schedule.jitter, interval '0');
    offset_by interval;
    first_tick timestamptz;
    schedule_id bigint;
BEGIN
    PERFORM job._require_worker('schedules');
    PERFORM job._check_name('schedule name', schedule.name);
    PERFORM job._check_not_null('cron', schedule.cron);
    PERFORM job._check_not_null('timezone', schedule.timezone);
    PERFORM job._check_cron(schedule.cron, schedule.timezone);
    PERFORM job._require_queue(schedule.queue);
    PERFORM job._check_payload('payload', schedule.payload);
    PERFORM job._check_not_null('priority', schedule.priority);
    IF schedule.job_type IS NOT NULL THEN
        PERFORM job._check_name('job_type', schedule.job_type);
    END IF;
    IF schedule.misfire IS NULL OR schedule.misfire NOT IN ('skip', 'catch_up') THEN
        RAISE EXCEPTION 'misfire must be ''skip'' or ''catch_up'', got %', coalesce(quote_literal(schedule.misfire), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM job._check_interval('jitter', jitter_bound, true);

    offset_by := job._jitter_offset(schedule.name, jitter_bound);
    first_tick := job.cron_next(schedule.cron, schedule.timezone, now() - offset_by);
    INSERT INTO job.schedule_defs AS s (name, cron, timezone, queue, payload, priority, job_type,
                                        misfire, jitter, jitter_offset, next_tick, next_run_at)
    VALUES (schedule.name, schedule.cron, schedule.timezone, schedule.queue, schedule.payload,
            schedule.priority, schedule.job_type, schedule.misfire, jitter_bound, offset_by,
            first_tick, first_tick + offset_by)
    ON CONFLICT (name) DO UPDATE
       SET cron = EXCLUDED.cron, timezone = EXCLUDED.timezone, queue = EXCLUDED.queue,
           payload = EXCLUDED.payload, priority = EXCLUDED.priority, job_type = EXCLUDED.job_type,
           misfire = EXCLUDED.misfire, jitter = EXCLUDED.jitter,
           jitter_offset = EXCLUDED.jitter_offset, next_tick = EXCLUDED.next_tick,
           next_run_at = EXCLUDED.next_run_at, last_error = NULL, updated_at = now()
    RETURNING s.id INTO schedule_id;
    PERFORM job._wake_scheduler();
    PERFORM job._audit('schedule', jsonb_build_object(
        'name', schedule.name, 'cron', schedule.cron, 'queue', schedule.queue, 'payload', schedule.payload,
        'timezone', schedule.timezone, 'priority', schedule.priority, 'job_type', schedule.job_type,
        'misfire', schedule.misfire, 'jitter', jitter_bound));
    RETURN schedule_id;
END $$;

COMMENT ON FUNCTION job.schedule(text, text, text, jsonb, text, int, text, text, interval) IS 'Creates or replaces a schedule: every tick of cron (5 or 6 cron fields, a macro such as @daily, or an interval such as ''30 seconds'') in timezone enqueues payload into queue; returns the schedule''s id, kept when replaced (audited).';

-- Deletes the schedule (its fired jobs stay).  Raises when there is no such schedule, as
-- every function naming something that does not exist does (README, "What is not there").  Its
-- boolean is always true: it returned false for a missing schedule up to 0.4.0, and callers
-- that read it keep working.
CREATE FUNCTION job.unschedule(name text)
RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    DELETE FROM job.schedule_defs s WHERE s.name = unschedule.name;
    IF NOT FOUND THEN
        PERFORM job._require_schedule(name);
    END IF;
    DELETE FROM job.schedule_ticks r WHERE r.schedule = unschedule.name;
    PERFORM job._audit('unschedule', jsonb_build_object('name', name));
    RETURN true;
END $$;

COMMENT ON FUNCTION job.unschedule(text) IS 'Deletes a schedule and its run history (the jobs it enqueued stay); returns true, and raises 42704 when there is no such schedule (audited).';

CREATE FUNCTION job.pause_schedule(name text)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM job._require_schedule(name);
    UPDATE job.schedule_defs s SET paused = true, updated_at = now() WHERE s.name = pause_schedule.name;
    PERFORM job._audit('pause_schedule', jsonb_build_object('name', name));
END $$;

COMMENT ON FUNCTION job.pause_schedule(text) IS 'Stops a schedule firing until job.resume_schedule (audited).';

-- Resumes with the next tick from now: ticks that passed while paused never fire.
CREATE FUNCTION job.resume_schedule(name text)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s job.schedule_defs := job._require_schedule(name);
    resume_tick timestamptz;
BEGIN
    IF s.paused THEN
        resume_tick := job.cron_next(s.cron, s.timezone, now() - s.jitter_offset);
        UPDATE job.schedule_defs d
           SET paused = false, next_tick = resume_tick, next_run_at = resume_tick + s.jitter_offset,
               updated_at = now()
         WHERE d.name = s.name;
        PERFORM job._wake_scheduler();
    END IF;
    PERFORM job._audit('resume_schedule', jsonb_build_object('name', name));
END $$;

COMMENT ON FUNCTION job.resume_schedule(text) IS 'Resumes a paused schedule with its next tick after now: ticks that passed while it was paused never fire (audited).';

-- Fires the due ticks of at most max_schedules schedules; returns how many jobs it enqueued.
-- Run by the worker's scheduler; safe to run from anywhere at the same time: each schedule is
-- locked (SKIP LOCKED) while it fires, and schedule_ticks' primary key refuses a second fire
-- of a tick.  Of the ticks missed since the last fire, only the latest can fire: at once when
-- it is at most pg_jobqueue.misfire_grace late, otherwise only with misfire = 'catch_up'.
CREATE FUNCTION job._fire_due_schedules(max_schedules int DEFAULT 100)
RETURNS int LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    grace interval := coalesce(current_setting('pg_jobqueue.misfire_grace', true), '1min')::interval;
    fired int := 0;
    s job.schedule_defs;
    at_now timestamptz;
    fire_tick timestamptz;
    fired_job bigint;
BEGIN
    FOR s IN SELECT * FROM job.schedule_defs d
              WHERE NOT d.paused AND d.next_run_at <= clock_timestamp()
              ORDER BY d.next_run_at LIMIT max_schedules
              FOR UPDATE SKIP LOCKED
    LOOP
        at_now := clock_timestamp();
        fire_tick := job._cron_latest(s.cron, s.timezone, s.next_tick, at_now - s.jitter_offset);
        fired_job := NULL;
        IF fire_tick IS NOT NULL AND (s.misfire = 'catch_up' OR at_now - (fire_tick + s.jitter_offset) <= grace) THEN
            BEGIN
                INSERT INTO job.schedule_ticks (schedule, tick, due_at, fired_at)
                VALUES (s.name, fire_tick, fire_tick + s.jitter_offset, at_now)
                ON CONFLICT DO NOTHING;
                IF FOUND THEN
                    -- No idempotency key: the run row above is what makes the tick fire once,
                    -- and a key would live where producers' keys live, so a producer could
                    -- take a tick's key first and suppress it.
                    fired_job := job.enqueue(s.queue, s.payload, priority => s.priority, job_type => s.job_type);
                    UPDATE job.schedule_ticks r SET job_id = fired_job
                     WHERE r.schedule = s.name AND r.tick = fire_tick;
                    fired := fired + 1;
                END IF;
                s.last_error := NULL;
            EXCEPTION WHEN OTHERS THEN
                -- One broken schedule must not stop the others: record why and move on.
                s.last_error := format('%s (SQLSTATE %s)', SQLERRM, SQLSTATE);
                RAISE WARNING 'pg_jobqueue: schedule % could not fire its % tick: %', quote_literal(s.name), fire_tick, SQLERRM;
            END;
        END IF;
        s.next_tick := job.cron_next(s.cron, s.timezone, at_now - s.jitter_offset);
        UPDATE job.schedule_defs d
           SET next_tick = s.next_tick, next_run_at = s.next_tick + s.jitter_offset,
               last_tick = CASE WHEN fired_job IS NULL THEN d.last_tick ELSE fire_tick END,
               last_run_at = CASE WHEN fired_job IS NULL THEN d.last_run_at ELSE at_now END,
               last_job_id = coalesce(fired_job, d.last_job_id),
               last_error = s.last_error
         WHERE d.name = s.name;
    END LOOP;
    RETURN fired;
END $$;

-- When the scheduler must next wake up for a schedule (NULL: no active schedule).
CREATE FUNCTION job._next_schedule_due()
RETURNS timestamptz LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp AS $$
    SELECT min(next_run_at) FROM job.schedule_defs WHERE NOT paused
$$;

-- Keeps the newest `keep` runs of each schedule, deleting at most max_rows; returns how many.
CREATE FUNCTION job._prune_schedule_runs(keep int, max_rows int)
RETURNS int LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    pruned int;
BEGIN
    -- ARRAY(...) of row addresses: read once, then deleted by address (see apply_retention).
    DELETE FROM job.schedule_ticks r
     WHERE r.ctid = ANY (ARRAY(
           SELECT o.ctid
             FROM job.schedule_defs d
            CROSS JOIN LATERAL (SELECT k.tick FROM job.schedule_ticks k
                                 WHERE k.schedule = d.name
                                 ORDER BY k.tick DESC OFFSET keep LIMIT 1) boundary
            CROSS JOIN LATERAL (SELECT x.ctid FROM job.schedule_ticks x
                                 WHERE x.schedule = d.name AND x.tick <= boundary.tick
                                 ORDER BY x.tick LIMIT max_rows) o
            LIMIT max_rows));
    GET DIAGNOSTICS pruned = ROW_COUNT;
    RETURN pruned;
END $$;
