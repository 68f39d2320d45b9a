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

-- The setting `name` (a pg_jobqueue. duration, set by a superuser) as an interval, or
-- `fallback` (its default) in a session that has not loaded the library.
CREATE FUNCTION job._setting_interval(name text, fallback interval)
RETURNS interval LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(current_setting(name, true)::interval, fallback)
$$;

-- Raises unless `value` (an interval argument named `what`) is at most the setting `setting`
-- (default `fallback`): how far ahead a producer may start a job, debounce one, or a worker
-- hold a queue back.  A job or hold out of reach for years blocks others' jobs for as long.
CREATE FUNCTION job._check_at_most(what text, value interval, setting text, fallback interval)
RETURNS void LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    bound interval := job._setting_interval(setting, fallback);
BEGIN
    IF value > bound THEN
        RAISE EXCEPTION '% must be at most % (%), got %', what, bound, setting, value
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('A superuser may raise %s.', setting);
    END IF;
END $$;

-- Raises unless `value` is a row count for one call: not NULL, from 0 to 1,000,000 (one call
-- should not hold its locks over more; call again for the rest).
CREATE FUNCTION job._check_count(what text, value bigint)
RETURNS void LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM job._check_not_null(what, value);
    IF value < 0 OR value > 1000000 THEN
        RAISE EXCEPTION '% must be between 0 and 1000000, got %', what, value USING ERRCODE = 'invalid_parameter_value';
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

-- Raises unless an enqueue's flow-control keys make sense for queue `q`: well-formed keys;
-- a concurrency key only where the queue has a per-key limit or is fair; an order key with
-- neither a singleton nor a debounce key; a debounce key with its quiet period, and neither a
-- start time (the debounce sets it) nor an idempotency key (the debounce key already merges).
CREATE FUNCTION job._check_job_keys(q job.queues, concurrency_key text, order_key text, singleton_key text,
                                    debounce_key text, debounce interval, debounce_max_wait interval,
                                    idempotency_key text, run_at timestamptz, delay interval)
RETURNS void LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF concurrency_key IS NOT NULL THEN
        PERFORM job._check_name('concurrency_key', concurrency_key, 512);
        IF q.key_concurrency IS NULL AND q.key_rate_limit IS NULL AND NOT q.fair THEN
            RAISE EXCEPTION 'queue % has no per-key limit and is not fair, so concurrency_key % would do nothing',
                quote_literal(q.name), quote_literal(concurrency_key)
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Give the queue key_concurrency, key_rate_limit or fair => true with job.create_queue first.';
        END IF;
    END IF;
    IF order_key IS NOT NULL THEN
        PERFORM job._check_name('order_key', order_key, 512);
    END IF;
    IF singleton_key IS NOT NULL THEN
        PERFORM job._check_name('singleton_key', singleton_key, 512);
    END IF;
    IF debounce_key IS NOT NULL THEN
        PERFORM job._check_name('debounce_key', debounce_key, 512);
    END IF;
    IF num_nonnulls(order_key, singleton_key, debounce_key) > 1 THEN
        RAISE EXCEPTION 'give at most one of order_key, singleton_key and debounce_key'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF debounce_key IS NULL AND (debounce IS NOT NULL OR debounce_max_wait IS NOT NULL) THEN
        RAISE EXCEPTION 'debounce and debounce_max_wait need a debounce_key' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF debounce_key IS NOT NULL THEN
        IF debounce IS NULL THEN
            RAISE EXCEPTION 'debounce_key needs debounce, the quiet period' USING ERRCODE = 'null_value_not_allowed',
                HINT = 'For example debounce => ''5 seconds'': the job starts once no enqueue of its key came for that long.';
        END IF;
        PERFORM job._check_interval('debounce', debounce, false);
        PERFORM job._check_at_most('debounce', debounce, 'pg_jobqueue.max_debounce', interval '1 day');
        IF debounce_max_wait IS NOT NULL THEN
            PERFORM job._check_interval('debounce_max_wait', debounce_max_wait, false);
            PERFORM job._check_at_most('debounce_max_wait', debounce_max_wait, 'pg_jobqueue.max_debounce', interval '1 day');
            IF debounce_max_wait < debounce THEN
                RAISE EXCEPTION 'debounce_max_wait (%) must not be less than debounce (%)', debounce_max_wait, debounce
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
        END IF;
        IF run_at IS NOT NULL OR delay IS NOT NULL THEN
            RAISE EXCEPTION 'a debounced job starts after its quiet period: give no run_at or delay'
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END IF;
    IF idempotency_key IS NOT NULL AND (debounce_key IS NOT NULL OR singleton_key IS NOT NULL) THEN
        RAISE EXCEPTION 'give idempotency_key or a % key, not both', CASE WHEN debounce_key IS NULL THEN 'singleton' ELSE 'debounce' END
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'A singleton or debounce key already merges enqueues of the same key into one job.';
    END IF;
END $$;

-- Raises unless `value`, a limit named `what`, is NULL (no limit) or from 1 to `max`.  Every
-- count the API takes has a bound (the README's "Settings" lists them): a limit sizes rows or
-- work (a queue's concurrency is one slot row per unit), so an unbounded one lets one call
-- fill the disk.
CREATE FUNCTION job._check_limit(what text, value int, max int)
RETURNS void LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF value < 1 OR value > max THEN
        RAISE EXCEPTION '% must be between 1 and % (or NULL for no limit), got %', what, max, value
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END $$;
