-- pg_jobqueue queue API.  Public functions first, then the internal helpers they share
-- (named with a leading underscore; not part of the interface).
--
-- Conventions: bad input raises an error that names the bad argument and changes nothing;
-- functions whose parameters share names with columns use `#variable_conflict use_column`
-- and refer to parameters as function_name.parameter.
--
-- The hot paths (enqueue, dequeue, complete) test their input inline and call a _check_*
-- helper only to raise, because a nested PL/pgSQL call costs more than the test itself.
-- Their statements are written so that one cached generic plan serves every call: re-planning
-- on every call cost a quarter of a worker's CPU.  (Forcing it with a function-level
-- SET plan_cache_mode costs about as much as a small statement, so the statements avoid
-- shapes whose custom plans look cheaper than the generic one.)

---------------------------------------------------------------------------------------------
-- Validation helpers
---------------------------------------------------------------------------------------------

-- Raises unless `value` is a usable name: not NULL, not blank, at most max_len characters,
-- no control characters.
CREATE FUNCTION job._check_name(what text, value text, max_len int DEFAULT 128)
RETURNS void LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF value IS NULL THEN
        RAISE EXCEPTION '% must not be NULL', what USING ERRCODE = 'null_value_not_allowed';
    ELSIF btrim(value) = '' THEN
        RAISE EXCEPTION '% must not be empty', what USING ERRCODE = 'invalid_parameter_value';
    ELSIF length(value) > max_len THEN
        RAISE EXCEPTION '% is too long: % characters, at most % allowed', what, length(value), max_len
            USING ERRCODE = 'invalid_parameter_value';
    ELSIF value ~ '[[:cntrl:]]' THEN
        RAISE EXCEPTION '% must not contain control characters: %', what, quote_literal(value)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END $$;

-- The queue's settings row; raises when the name is bad or no such queue exists.
CREATE FUNCTION job._require_queue(queue_name text)
RETURNS job.queues LANGUAGE plpgsql STABLE AS $$
DECLARE
    q job.queues;
BEGIN
    SELECT * INTO q FROM job.queues WHERE name = queue_name;
    IF NOT FOUND THEN
        PERFORM job._check_name('queue name', queue_name);
        RAISE EXCEPTION 'queue % does not exist', quote_literal(queue_name)
            USING ERRCODE = 'undefined_object',
                  HINT = 'Create it with SELECT job.create_queue(''name'');';
    END IF;
    RETURN q;
END $$;

CREATE FUNCTION job._check_payload(what text, payload jsonb)
RETURNS void LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF payload IS NULL THEN
        RAISE EXCEPTION '% must not be NULL', what USING ERRCODE = 'null_value_not_allowed';
    ELSIF jsonb_typeof(payload) <> 'object' THEN
        RAISE EXCEPTION '% must be a JSON object, got %: %', what, jsonb_typeof(payload), left(payload::text, 100)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END $$;

CREATE FUNCTION job._check_not_null(what text, value anyelement)
RETURNS void LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF value IS NULL THEN
        RAISE EXCEPTION '% must not be NULL', what USING ERRCODE = 'null_value_not_allowed';
    END IF;
END $$;

CREATE FUNCTION job._check_interval(what text, value interval, allow_zero boolean)
RETURNS void LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    PERFORM job._check_not_null(what, value);
    IF value < interval '0' OR (NOT allow_zero AND value = interval '0') THEN
        RAISE EXCEPTION '% must be % interval, got %', what,
            CASE WHEN allow_zero THEN 'a non-negative' ELSE 'a positive' END, value
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END $$;

-- Raises unless a job with this id exists, in any state.
CREATE FUNCTION job._require_job(job_id bigint)
RETURNS void LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM job.jobs j WHERE j.id = job_id) THEN
        RAISE EXCEPTION 'job % does not exist', job_id USING ERRCODE = 'no_data_found';
    END IF;
END $$;

---------------------------------------------------------------------------------------------
-- Job movement helpers
---------------------------------------------------------------------------------------------

-- One entry of a job's `errors` array.
CREATE FUNCTION job._attempt_error(attempt int, worker text, detail jsonb)
RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('attempt', attempt, 'at', now(), 'worker', worker) || detail
$$;

---------------------------------------------------------------------------------------------
-- Acknowledging (see sql/0.2.0/ for the functions 0.2.0 changed)
---------------------------------------------------------------------------------------------

CREATE FUNCTION job.complete(id bigint, result jsonb DEFAULT NULL)
RETURNS boolean LANGUAGE plpgsql AS $$
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
RETURNS int LANGUAGE plpgsql AS $$
BEGIN
    IF ids IS NULL THEN
        PERFORM job._check_not_null('ids', ids);
    END IF;
    RETURN job._finish(ids, '{running}', 'completed');
END $$;
