-- pg_jobqueue input checks shared by every API function.
--
-- Conventions: bad input raises an error that names the bad argument, with a SQLSTATE that
-- says what kind of mistake it is, and changes nothing.  The hot paths (enqueue, dequeue,
-- complete) test their input inline and call these helpers only to raise, because a nested
-- PL/pgSQL call costs more than the test itself.

-- Raises unless `value` is a usable name: not NULL, at most max_len characters, with at least
-- one visible character and no control characters (job._name_problem, in Rust, decides; the hot
-- paths call it inline and this only to raise).
CREATE FUNCTION job._check_name(what text, value text, max_len int DEFAULT 128)
RETURNS void LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    problem text := job._name_problem(value, max_len);
BEGIN
    IF value IS NULL THEN
        RAISE EXCEPTION '% must not be NULL', what USING ERRCODE = 'null_value_not_allowed';
    ELSIF problem IS NOT NULL THEN
        RAISE EXCEPTION '% %', what, problem USING ERRCODE = 'invalid_parameter_value';
    END IF;
END $$;

CREATE FUNCTION job._check_not_null(what text, value anyelement)
RETURNS void LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF value IS NULL THEN
        RAISE EXCEPTION '% must not be NULL', what USING ERRCODE = 'null_value_not_allowed';
    END IF;
END $$;

-- Raises unless `value` is an interval from 0 (or just above, unless allow_zero) up to 100
-- years: every interval the API takes is added to or subtracted from now(), and 100 years
-- keeps that and the backoff arithmetic far from the end of the timestamp range.
CREATE FUNCTION job._check_interval(what text, value interval, allow_zero boolean)
RETURNS void LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM job._check_not_null(what, value);
    IF value < interval '0' OR (NOT allow_zero AND value = interval '0') THEN
        RAISE EXCEPTION '% must be % interval, got %', what,
            CASE WHEN allow_zero THEN 'a non-negative' ELSE 'a positive' END, value
            USING ERRCODE = 'invalid_parameter_value';
    ELSIF value > interval '100 years' THEN
        RAISE EXCEPTION '% must be at most 100 years, got %', what, value
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END $$;

-- Raises unless `value` is a row count: not NULL and not negative.
CREATE FUNCTION job._check_count(what text, value bigint)
RETURNS void LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM job._check_not_null(what, value);
    IF value < 0 THEN
        RAISE EXCEPTION '% must be 0 or more, got %', what, value USING ERRCODE = 'invalid_parameter_value';
    END IF;
END $$;

CREATE FUNCTION job._check_payload(what text, payload jsonb)
RETURNS void LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF payload IS NULL THEN
        RAISE EXCEPTION '% must not be NULL', what USING ERRCODE = 'null_value_not_allowed';
    ELSIF jsonb_typeof(payload) <> 'object' THEN
        RAISE EXCEPTION '% must be a JSON object, got %: %', what, jsonb_typeof(payload), left(payload::text, 100)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END $$;

-- Raises when `payload` is larger than the queue `q` accepts.
CREATE FUNCTION job._check_payload_size(q job.queues, what text, payload jsonb)
RETURNS void LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF pg_column_size(payload) > q.max_payload_bytes THEN
        RAISE EXCEPTION '% is % bytes, more than queue % accepts (max_payload_bytes = %)',
            what, pg_column_size(payload), quote_literal(q.name), q.max_payload_bytes
            USING ERRCODE = 'program_limit_exceeded',
                  HINT = 'Store large data in a table and put its id in the payload.';
    END IF;
END $$;

-- The queue's settings row; raises when the name is bad or no such queue exists.
CREATE FUNCTION job._require_queue(queue_name text)
RETURNS job.queues LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp AS $$
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

-- Raises unless a job with this id exists, in any state.
CREATE FUNCTION job._require_job(job_id bigint)
RETURNS void LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM job.jobs j WHERE j.id = job_id) THEN
        RAISE EXCEPTION 'job % does not exist', job_id USING ERRCODE = 'no_data_found';
    END IF;
END $$;
