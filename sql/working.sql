-- pg_jobqueue working: claiming jobs, acknowledging, failing and heartbeating them, and taking
-- back the jobs of workers that vanished.  Every finished, failed or stalled attempt is
-- counted into job.metric_buckets; the dead-letter queue's size is kept; workers are recorded
-- as seen.

-- The retry rules are in Rust (rules/src/backoff.rs, rules/src/classify.rs; job.retry_delay
-- and job.is_permanent_failure are declared from src/functions/backoff.rs and
-- src/functions/classify.rs): job.fail applies them.
COMMENT ON FUNCTION job.retry_delay(int, interval, interval, float8) IS
    'The delay job.fail waits after the attempt-th failed attempt: min(backoff_max, backoff_base * 2^(attempt-1)) * (1 + u), u uniform in [-jitter, +jitter], drawn anew on each call.';

COMMENT ON FUNCTION job.is_permanent_failure(text, boolean, int) IS
    'Whether job.fail dead-letters this failure at once instead of retrying it: permanent, an http_status of 1xx, 3xx or 4xx other than 408, 409, 425 and 429, or an error text containing PERMANENT; NULL when error or permanent is NULL.';

---------------------------------------------------------------------------------------------
-- Job movement helpers
---------------------------------------------------------------------------------------------

-- One entry of a job's `errors` array.
CREATE FUNCTION job._attempt_error(attempt int, worker text, detail jsonb)
RETURNS jsonb LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp AS $$
    SELECT jsonb_build_object('attempt', attempt, 'at', now(), 'worker', worker) || detail
$$;

-- Raises unless `tokens` is NULL, one token, or one per id.  The token a call gives for a job
-- is the only one, or the one at the job's position in `ids`.  Pairing matters: a worker
-- holding a stale claim of a job and a new claim of the same job (taken back and claimed
-- again) must not finish the new attempt with the stale one because the new token happens to
-- be in the same call.
CREATE FUNCTION job._check_tokens(ids bigint[], tokens uuid[])
RETURNS void LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF tokens IS NOT NULL AND cardinality(tokens) <> 1 AND cardinality(tokens) <> cardinality(ids) THEN
        RAISE EXCEPTION 'tokens must hold one token, or one per id (% ids), got %', cardinality(ids), cardinality(tokens)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass the token of the dequeue that claimed them all, or each job''s own token in the order of ids.';
    ELSIF array_position(tokens, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'tokens must not contain NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
END $$;

-- Raises unless a worker's acknowledgement is well formed: `ids` a flat array without NULL,
-- `results` NULL or one per id, `tokens` as job._check_tokens wants.
CREATE FUNCTION job._check_finished(ids bigint[], results jsonb[], tokens uuid[])
RETURNS void LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF array_ndims(ids) > 1 OR array_position(ids, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'complete must be a one-dimensional array of job ids without NULL'
            USING ERRCODE = 'invalid_parameter_value';
    ELSIF results IS NOT NULL AND (array_ndims(results) > 1 OR cardinality(results) <> cardinality(ids)) THEN
        RAISE EXCEPTION 'results must hold one result per completed id (% ids), got %', cardinality(ids), cardinality(results)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pair each id in complete with its result by position; pass NULL elements for jobs without one.';
    END IF;
    PERFORM job._check_tokens(ids, tokens);
END $$;

-- Moves live jobs (those of `ids` whose state is in `from_states`, and whose current claim
-- is the token paired with the id in `tokens` unless that is NULL: see job._check_tokens) to
-- history as `final_state`, with the result paired with the id in `job_results` (one for all,
-- or one per id), appending `error` (if any) to each job's errors, and counts the finished
-- attempts.  Returns how many moved.
CREATE FUNCTION job._finish(ids bigint[], from_states text[], final_state text,
                            job_results jsonb[] DEFAULT NULL, error jsonb DEFAULT NULL,
                            tokens uuid[] DEFAULT NULL)
RETURNS int LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    moved_count int;
    queues text[];
    job_types text[];
    claimed timestamptz[];
    ready timestamptz[];
    held_turns boolean;
    dead_queue record;
BEGIN
    -- The state test is written (COLLATE) so that no partial index can serve it: with a
    -- constant from_states a custom plan would otherwise walk a partial index (every running
    -- job) instead of probing the primary key.  The ids are read through a sub-select so
    -- that a custom plan cannot count them and look cheaper than the generic one: planned
    -- anew on every call, this statement cost 0.17 ms of a 0.45 ms complete.
    WITH moved AS (
        DELETE FROM job.live_jobs j
         WHERE j.id = ANY ((SELECT ids)::bigint[]) AND (j.state COLLATE "C") = ANY (from_states)
           AND (tokens IS NULL
                OR j.lease_token = CASE WHEN cardinality(tokens) = 1 THEN tokens[1]
                                        ELSE tokens[array_position(ids, j.id)] END)
        RETURNING j.*
    ), kept AS (
        INSERT INTO job.finished_jobs (id, run_at, enqueued_at, claimed_at, priority, attempt, max_retries,
                                       state, queue, job_type, claimed_by, idempotency_key, payload,
                                       errors, result, concurrency_key, order_key, singleton_key, debounce_key)
        SELECT m.id, m.run_at, m.enqueued_at, m.claimed_at, m.priority, m.attempt, m.max_retries,
               final_state, m.queue, m.job_type, m.claimed_by, m.idempotency_key, m.payload,
               CASE WHEN error IS NULL THEN m.errors
                    ELSE m.errors || jsonb_build_array(job._attempt_error(m.attempt, m.claimed_by, error)) END,
               CASE WHEN cardinality(job_results) = 1 THEN job_results[1]
                    ELSE job_results[array_position(ids, m.id)] END,
               m.concurrency_key, m.order_key, m.singleton_key, m.debounce_key
          FROM moved m
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM kept), array_agg(m.queue), array_agg(m.job_type),
           array_agg(m.claimed_at), array_agg(m.run_at), bool_or(m.flow_claimed)
      INTO moved_count, queues, job_types, claimed, ready, held_turns
      FROM moved m WHERE m.claimed_at IS NOT NULL;
    IF held_turns THEN
        -- A job claimed under flow control held a concurrency slot or its key's turn: another
        -- may start now.  (Only these look the queue up: 22 us a call for every other job.)
        PERFORM job._wake_queue_on_commit(qs.id) FROM job.queues qs
         WHERE qs.name = ANY (queues) AND NOT qs.paused;
    END IF;
    IF moved_count = 0 OR final_state = 'cancelled' THEN
        RETURN moved_count;  -- a cancel abandons attempts; it finishes none
    END IF;
    PERFORM job._record_attempts(CASE WHEN final_state = 'completed' THEN 'completed'
                                      WHEN (error ->> 'stalled')::boolean THEN 'stalled_dead'
                                      ELSE 'dead' END,
                                 queues, job_types, claimed, ready);
    IF final_state = 'dead' THEN
        FOR dead_queue IN SELECT q, count(*) AS n FROM unnest(queues) q GROUP BY q LOOP
            PERFORM job._count_dead_letters(dead_queue.q, dead_queue.n);
        END LOOP;
    END IF;
    RETURN moved_count;
END $$;

-- Claims up to `batch` ready jobs.  Never waits for rows another worker holds (SKIP LOCKED);
-- a job is handed to one worker at a time until its lease expires.  Every job of one call
-- carries the same new lease token, which complete, fail, heartbeat and release take to act
-- only on this claim.
--
-- A worker's loop can acknowledge what it finished in the same call, and so in one round
-- trip and one commit per job: `complete` (ids), their `results` (one per id, paired by
-- position, or NULL) and `complete_tokens` (as complete_many's `tokens`).  They are completed
-- as complete_many would, before anything is claimed; one whose claim is no longer current
-- is left alone (a worker that must know calls job.complete).
CREATE FUNCTION job.dequeue(
    queue text,
    worker text DEFAULT NULL,
    batch int DEFAULT 1,
    lease interval DEFAULT NULL,
    complete bigint[] DEFAULT NULL,
    results jsonb[] DEFAULT NULL,
    complete_tokens uuid[] DEFAULT NULL
) RETURNS SETOF job.claimed_job LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    q job.queues;
    limited boolean;
    lease_for interval;
    claimed bigint;
    promoted bigint := 0;
    token uuid;
    resume_priority int;
    resume_run_at timestamptz;
    resume_id bigint;
    picked bigint[];
    last_priority int;
    last_run_at timestamptz;
    front_started timestamptz;
    front_took float8;
BEGIN
    SELECT * INTO q FROM job.queues qs WHERE qs.name = dequeue.queue;
    IF NOT FOUND THEN
        PERFORM job._require_queue(dequeue.queue);
    END IF;
    IF q.work_granted THEN
        PERFORM job._require_may(q.name, 'work');  -- the queue has per-queue grants
    END IF;
    IF dequeue.batch IS NULL OR dequeue.batch < 1 OR dequeue.batch > 10000 THEN
        PERFORM job._check_not_null('batch', dequeue.batch);
        RAISE EXCEPTION 'batch must be between 1 and 10000, got %', dequeue.batch USING ERRCODE = 'invalid_parameter_value';
    END IF;
    lease_for := coalesce(dequeue.lease, q.lease);
    IF lease_for <= interval '0' OR lease_for > interval '100 years' THEN
        PERFORM job._check_interval('lease', lease_for, false);
    END IF;
    IF dequeue.worker IS NOT NULL AND job._name_problem(dequeue.worker, 128) IS NOT NULL THEN
        PERFORM job._check_name('worker', dequeue.worker);
    END IF;
    PERFORM job._saw_worker(dequeue.worker);
    IF dequeue.complete IS NOT NULL THEN
        PERFORM job._check_finished(dequeue.complete, dequeue.results, dequeue.complete_tokens);
        IF dequeue.complete_tokens IS NULL THEN
            PERFORM job._require_work_on_jobs(dequeue.complete);
        END IF;
        PERFORM job._finish(dequeue.complete, '{running}', 'completed', dequeue.results, NULL,
                            dequeue.complete_tokens);
    END IF;
    IF q.paused THEN
        -- Nothing to hand out: this consumer now waits, and resume_queue will wake it.
        PERFORM job._consumer_waits(q.id);
        RETURN;
    END IF;

    -- Due scheduled jobs (delayed, or retrying after backoff) become ready.  The worker does
    -- this too (and wakes consumers); here it keeps the queue moving without the worker.
    IF EXISTS (SELECT 1 FROM job.live_jobs d
                WHERE d.queue = q.name AND d.state = 'scheduled' AND d.run_at <= now()) THEN
        UPDATE job.live_jobs j SET state = 'waiting'
         WHERE j.id = ANY (ARRAY(SELECT d.id FROM job.live_jobs d
                                  WHERE d.queue = q.name AND d.state = 'scheduled' AND d.run_at <= now()
                                  ORDER BY d.run_at LIMIT 1000
                                  FOR UPDATE SKIP LOCKED));
        GET DIAGNOSTICS promoted = ROW_COUNT;
    END IF;
    -- Jobs whose worker vanished go back to waiting (or dead) before anything else is claimed;
    -- looked for at most every pg_jobqueue.rescue_interval per session, and only where no
    -- background worker does it (see src/session/rescue.rs).
    IF job._rescue_due(q.name) THEN
        PERFORM job._rescue_stalled(q.name, 1000, NULL);
    END IF;

    token := gen_random_uuid();
    limited := q.flow_limited;
    -- Where this session's last claim on the queue left off, unless a claim from the front is
    -- due (see src/session/claim_cursor.rs): the dead index entries of every job claimed since vacuum
    -- last ran lie before it.  (Values the statements below compare with are read through
    -- sub-selects, so that one generic plan serves every call: see producing.sql.)
    SELECT c.priority, c.run_at, c.id INTO resume_priority, resume_run_at, resume_id FROM job._claim_cursor(q.id) c;
    FOR pass IN 1..2 LOOP
        picked := '{}';
        front_took := NULL;
        IF limited THEN
            -- Within the queue's concurrency and rate limits (see flow.sql).
            picked := job._pick_limited(q, dequeue.batch);
        END IF;
        -- A higher priority than the cursor's waiting (enqueued since, say): from the front.
        -- (A scalar sub-select in claim order, not EXISTS: it must be a range of the claim
        -- index, which ends at the cursor's priority, not a scan of the table.)
        IF NOT limited AND resume_id IS NOT NULL
           AND (SELECT h.id FROM job.live_jobs h
                 WHERE h.queue = q.name AND h.state = 'waiting' AND h.priority > (SELECT resume_priority)
                 ORDER BY h.priority DESC, h.run_at, h.id LIMIT 1) IS NULL THEN
            -- The rest of the cursor's priority, in claim order, from the cursor on.
            SELECT coalesce(array_agg(n.id), '{}'), (array_agg(n.priority))[count(*)], (array_agg(n.run_at))[count(*)]
              INTO picked, last_priority, last_run_at
              FROM (SELECT n.id, n.priority, n.run_at FROM job.live_jobs n
                     WHERE n.queue = q.name AND n.state = 'waiting' AND n.priority = (SELECT resume_priority)
                       AND (n.run_at, n.id) > ((SELECT resume_run_at), (SELECT resume_id))
                     ORDER BY n.run_at, n.id
                     LIMIT (SELECT dequeue.batch)
                     FOR UPDATE SKIP LOCKED) n;
        END IF;
        IF NOT limited AND cardinality(picked) < dequeue.batch THEN
            -- From the front of the queue, for what the cursor's priority did not have.
            front_started := clock_timestamp();
            SELECT picked || coalesce(array_agg(n.id), '{}'),
                   coalesce((array_agg(n.priority))[count(*)], last_priority),
                   coalesce((array_agg(n.run_at))[count(*)], last_run_at)
              INTO picked, last_priority, last_run_at
              FROM (SELECT n.id, n.priority, n.run_at FROM job.live_jobs n
                     WHERE n.queue = q.name AND n.state = 'waiting' AND n.id <> ALL (picked)
                     ORDER BY n.priority DESC, n.run_at, n.id
                     LIMIT (SELECT dequeue.batch - cardinality(picked))
                     FOR UPDATE SKIP LOCKED) n;
            front_took := extract(epoch FROM clock_timestamp() - front_started);
        END IF;
        RETURN QUERY
        UPDATE job.live_jobs j
           SET state = 'running', attempt = j.attempt + 1, claimed_at = now(),
               claimed_by = dequeue.worker, lease_expires_at = now() + lease_for, lease_token = token,
               flow_claimed = CASE WHEN limited THEN true END
         WHERE j.id = ANY ((SELECT picked)::bigint[])
        RETURNING j.id, j.queue, j.job_type, j.payload, j.attempt, j.max_retries, j.enqueued_at,
                  j.lease_expires_at, j.lease_token;
        GET DIAGNOSTICS claimed = ROW_COUNT;
        IF NOT limited THEN
            PERFORM job._move_claim_cursor(q.id, last_priority, last_run_at,
                                           picked[cardinality(picked)], front_took);
        END IF;
        -- Found nothing: mark this consumer as waiting for a wake-up, then look once more
        -- for jobs whose producers committed while we looked (see src/server/wakeup.rs).
        EXIT WHEN claimed > 0 OR pass = 2 OR NOT job._consumer_waits(q.id);
        resume_id := NULL;
    END LOOP;
    IF promoted > claimed THEN
        PERFORM job._wake_queue_on_commit(q.id);  -- more became ready than this call took
    END IF;
    IF claimed > 0 THEN
        -- Should the lease run out before the worker means to look, it looks then.
        PERFORM job._due_on_commit(now() + lease_for);
    END IF;
END $$;

COMMENT ON FUNCTION job.dequeue(text, text, int, interval, bigint[], jsonb[], uuid[]) IS 'Claims up to batch ready jobs of a queue (SKIP LOCKED), all under one lease (NULL: the queue''s) and one new lease token, after completing the jobs given in complete; returns them as job.claimed_job rows, none when nothing may start.';

-- When a dequeue on `queue` next has something to claim: now when a job is ready, else the
-- earliest time a delayed job or a retry becomes due or a lease runs out (its job is then
-- taken back; for a lease already out, when a dequeue next looks for it); NULL when the
-- queue has no live jobs, or is paused (resume_queue wakes LISTENers).  For workers that
-- cannot LISTEN: sleep until then (at most a poll interval).
CREATE FUNCTION job.next_due(queue text)
RETURNS timestamptz LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    q job.queues := job._require_queue(next_due.queue);
BEGIN
    IF q.work_granted THEN
        PERFORM job._require_may(q.name, 'work');
    END IF;
    IF q.paused THEN
        RETURN NULL;
    END IF;
    IF EXISTS (SELECT 1 FROM job.live_jobs w WHERE w.queue = q.name AND w.state = 'waiting') THEN
        IF q.flow_limited THEN
            RETURN coalesce(job._flow_next_start(q), now());
        END IF;
        RETURN now();
    END IF;
    RETURN least((SELECT greatest(d.run_at, now()) FROM job.live_jobs d
                   WHERE d.queue = q.name AND d.state = 'scheduled'
                   ORDER BY d.run_at LIMIT 1),
                 -- A lease that already ran out: the worker takes the job back at once, or
                 -- else a dequeue does, once per pg_jobqueue.rescue_interval and session.
                 (SELECT CASE WHEN r.lease_expires_at > now() THEN r.lease_expires_at
                              ELSE now() + coalesce(current_setting('pg_jobqueue.rescue_interval', true), '1s')::interval END
                    FROM job.live_jobs r
                   WHERE r.queue = q.name AND r.state = 'running'
                   ORDER BY r.lease_expires_at LIMIT 1));
END $$;

COMMENT ON FUNCTION job.next_due(text) IS 'When a dequeue on the queue next finds a job: now when one is ready, else when a delayed job or a retry comes due or a lease runs out; NULL when the queue has no live jobs or is paused.';

---------------------------------------------------------------------------------------------
-- Acknowledging
---------------------------------------------------------------------------------------------

-- Completes a running job with its result.  With `token`, only while that claim is the job's
-- current one; without, whoever claimed it (unsafe once the lease may have run out: another
-- worker may hold the job by then).  False when nothing was completed.
CREATE FUNCTION job.complete(id bigint, result jsonb DEFAULT NULL, token uuid DEFAULT NULL)
RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
    IF complete.id IS NULL THEN
        PERFORM job._check_not_null('id', complete.id);
    END IF;
    IF complete.token IS NULL THEN
        PERFORM job._require_work_on_jobs(ARRAY[complete.id]);  -- (a token proves the claim)
    END IF;
    IF job._finish(ARRAY[complete.id], '{running}', 'completed', ARRAY[complete.result], NULL,
                   CASE WHEN complete.token IS NULL THEN NULL ELSE ARRAY[complete.token] END) = 1 THEN
        RETURN true;
    END IF;
    PERFORM job._require_job(complete.id);
    RETURN false;  -- not running under this claim: finished, cancelled, taken back or never claimed
END $$;

COMMENT ON FUNCTION job.complete(bigint, jsonb, uuid) IS 'Completes a running job, storing result (NULL: none); with token only while that claim is the job''s current one. True when completed, false when not (finished, cancelled or taken back).';

-- Acknowledges many jobs in one round trip, each under its claim's token (one token for all,
-- as a batch of one dequeue shares it, or one per id, paired by position); returns how many
-- were running under those claims and completed.
CREATE FUNCTION job.complete_many(ids bigint[], tokens uuid[] DEFAULT NULL)
RETURNS int LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF ids IS NULL THEN
        PERFORM job._check_not_null('ids', ids);
    END IF;
    PERFORM job._check_tokens(ids, tokens);
    IF tokens IS NULL THEN
        PERFORM job._require_work_on_jobs(ids);
    END IF;
    RETURN job._finish(ids, '{running}', 'completed', NULL, NULL, tokens);
END $$;

COMMENT ON FUNCTION job.complete_many(bigint[], uuid[]) IS 'Completes many running jobs in one call, each under its claim''s token (one for all, or one per id by position); returns how many were completed.';

-- Records a failed attempt.  Returns the job's new state: 'scheduled' or 'waiting' (it will be
-- retried) or 'dead' (permanent, or out of retries).  NULL when nothing was recorded: with
-- `token`, the claim is not the job's current one (taken back, finished, or never its);
-- without, the job finished meanwhile.  (Up to 0.4.0 that returned the job's current state,
-- which a caller could not tell from a recorded failure's.)  Error texts are kept up to 8,192
-- characters (the entry says how long the whole was).
CREATE FUNCTION job.fail(
    id bigint,
    error text,
    permanent boolean DEFAULT false,
    http_status int DEFAULT NULL,
    retry_after interval DEFAULT NULL,
    token uuid DEFAULT NULL
) RETURNS text LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    j job.live_jobs;
    q job.queues;
    is_permanent boolean;
    detail jsonb;
    retry_in interval;
    new_state text;
BEGIN
    PERFORM job._check_not_null('id', fail.id);
    PERFORM job._check_not_null('error', fail.error);
    PERFORM job._check_not_null('permanent', fail.permanent);
    IF fail.retry_after IS NOT NULL THEN
        PERFORM job._check_interval('retry_after', fail.retry_after, true);
    END IF;
    is_permanent := job.is_permanent_failure(fail.error, fail.permanent, fail.http_status);
    IF fail.token IS NULL THEN
        PERFORM job._require_work_on_jobs(ARRAY[fail.id]);
    END IF;

    SELECT * INTO j FROM job.live_jobs l WHERE l.id = fail.id FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM job._require_job(fail.id);
        RETURN NULL;  -- finished meanwhile (cancelled, say): nothing recorded
    END IF;
    IF fail.token IS NOT NULL AND (j.state <> 'running' OR j.lease_token IS DISTINCT FROM fail.token) THEN
        RETURN NULL;  -- not this claim's attempt (taken back, maybe claimed again): nothing recorded
    END IF;
    IF j.state <> 'running' THEN
        RAISE EXCEPTION 'job % is %, not running: only a claimed job can fail', j.id, j.state
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;

    detail := jsonb_build_object('error', left(fail.error, 8192), 'permanent', is_permanent)
              || CASE WHEN fail.http_status IS NULL THEN '{}'::jsonb
                      ELSE jsonb_build_object('http_status', fail.http_status) END
              || CASE WHEN length(fail.error) <= 8192 THEN '{}'::jsonb
                      ELSE jsonb_build_object('error_length', length(fail.error)) END;
    IF is_permanent OR j.attempt > j.max_retries THEN
        PERFORM job._finish(ARRAY[j.id], '{running}', 'dead', NULL, detail);
        RETURN 'dead';
    END IF;

    PERFORM job._record_attempts('failed', ARRAY[j.queue], ARRAY[j.job_type], ARRAY[j.claimed_at], ARRAY[j.run_at]);
    q := job._require_queue(j.queue);
    retry_in := coalesce(fail.retry_after, job.retry_delay(j.attempt, q.backoff_base, q.backoff_max, q.jitter));
    new_state := CASE WHEN retry_in > interval '0' THEN 'scheduled' ELSE 'waiting' END;
    UPDATE job.live_jobs l
       SET state = new_state, run_at = now() + retry_in, lease_expires_at = NULL, lease_token = NULL,
           errors = l.errors || jsonb_build_array(job._attempt_error(l.attempt, l.claimed_by, detail))
     WHERE l.id = j.id;
    IF new_state = 'waiting' OR j.flow_claimed THEN
        PERFORM job._wake_queue_on_commit(q.id);  -- ready again, or a slot or key's turn freed
    END IF;
    IF new_state = 'scheduled' THEN
        PERFORM job._due_on_commit(now() + retry_in);
    END IF;
    RETURN new_state;
END $$;

COMMENT ON FUNCTION job.fail(bigint, text, boolean, int, interval, uuid) IS 'Records a failed attempt and returns the job''s new state: scheduled or waiting (retried after its backoff or retry_after) or dead (permanent, or out of retries); NULL when it recorded nothing (a token that is not the job''s current claim, or a job that finished meanwhile).';

-- Records a failed attempt of the background worker (a handler's, a delivery's) through
-- job.fail's rules, under its claim, and adds `detail` (the SQLSTATE; the HTTP attempt's class
-- and latency) to the attempt's entry in the job's errors.  A claim that is no longer current
-- records nothing.
CREATE FUNCTION job._fail_attempt(job_id bigint, token uuid, error text, permanent boolean,
                                  http_status int, retry_after interval, detail jsonb)
RETURNS text LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    errors_before int;
    outcome text;
BEGIN
    SELECT jsonb_array_length(j.errors) INTO errors_before FROM job.jobs j WHERE j.id = job_id;
    outcome := job.fail(job_id, error, permanent, http_status, retry_after, token);
    -- Annotate the entry fail just added, if it added one (a lost claim records nothing).
    UPDATE job.live_jobs l
       SET errors = jsonb_set(l.errors, '{-1}', (l.errors -> -1) || detail)
     WHERE l.id = job_id AND jsonb_array_length(l.errors) > errors_before AND detail IS NOT NULL;
    UPDATE job.finished_jobs f
       SET errors = jsonb_set(f.errors, '{-1}', (f.errors -> -1) || detail)
     WHERE f.id = job_id AND jsonb_array_length(f.errors) > errors_before AND detail IS NOT NULL;
    RETURN outcome;
END $$;

-- Extends a running job's lease and returns the new expiry.  With `token`: while that claim
-- is the job's current one (even past its expiry, as long as nobody took the job back).
-- Without: while the job is running and its lease unexpired.  Otherwise raises SQLSTATE 55000
-- (object_not_in_prerequisite_state): the worker must stop working on the job.
CREATE FUNCTION job.heartbeat(id bigint, extend interval DEFAULT NULL, token uuid DEFAULT NULL)
RETURNS timestamptz LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    expires timestamptz;
    found_job record;
    holder text;
BEGIN
    PERFORM job._check_not_null('id', heartbeat.id);
    IF heartbeat.extend IS NOT NULL THEN
        PERFORM job._check_interval('extend', heartbeat.extend, false);
    END IF;
    IF heartbeat.token IS NULL THEN
        PERFORM job._require_work_on_jobs(ARRAY[heartbeat.id]);
    END IF;
    UPDATE job.live_jobs l
       SET lease_expires_at = now() + coalesce(heartbeat.extend,
                                               (SELECT q.lease FROM job.queues q WHERE q.name = l.queue))
     WHERE l.id = heartbeat.id AND l.state = 'running'
       AND CASE WHEN heartbeat.token IS NULL THEN l.lease_expires_at > now()
                ELSE l.lease_token = heartbeat.token END
    RETURNING l.lease_expires_at, l.claimed_by INTO expires, holder;
    IF FOUND THEN
        PERFORM job._saw_worker(holder);
        RETURN expires;
    END IF;

    PERFORM job._require_job(heartbeat.id);
    SELECT j.state, j.lease_expires_at, j.attempt INTO found_job FROM job.jobs j WHERE j.id = heartbeat.id;
    IF found_job.state = 'running' AND heartbeat.token IS NOT NULL THEN
        -- Tokens are not kept once replaced, so whether this one was ever the job's is unknown.
        RAISE EXCEPTION 'job % is running under another claim than this token''s (attempt %)',
            heartbeat.id, found_job.attempt
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Stop working on it: the token is not its current claim''s (the job was taken back and claimed again, or the token was never its), and complete and fail with it change nothing.';
    ELSIF found_job.state = 'running' THEN
        RAISE EXCEPTION 'job % is no longer held: its lease expired at %', heartbeat.id, found_job.lease_expires_at
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Stop working on it: another worker may claim it. Heartbeat before the lease runs out.';
    END IF;
    RAISE EXCEPTION 'job % is no longer held: it is %', heartbeat.id, found_job.state
        USING ERRCODE = 'object_not_in_prerequisite_state',
              HINT = 'Stop working on it: its lease ran out and it was taken back, or it was cancelled.';
END $$;

COMMENT ON FUNCTION job.heartbeat(bigint, interval, uuid) IS 'Extends a running job''s lease to now + extend (NULL: the queue''s lease) and returns the new expiry; raises SQLSTATE 55000 when the job is no longer held.';

-- Extends the leases of many jobs in one call (a batch: pass the dequeue's token once, or one
-- per id, paired by position).  One row per id, in order: whether this claim still holds it
-- and its new expiry.
-- A job no longer held is not renewed; the worker should stop working on it.
CREATE FUNCTION job.heartbeat_many(ids bigint[], tokens uuid[], extend interval DEFAULT NULL)
RETURNS TABLE (id bigint, held boolean, lease_expires_at timestamptz)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
    PERFORM job._check_not_null('ids', heartbeat_many.ids);
    PERFORM job._check_not_null('tokens', heartbeat_many.tokens);
    -- The shape complete_many and dequeue's complete take (a 2-D array was paired by position
    -- over its flattened elements).
    IF array_ndims(heartbeat_many.ids) > 1 OR array_ndims(heartbeat_many.tokens) > 1 THEN
        RAISE EXCEPTION 'ids and tokens must be one-dimensional arrays' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM job._check_tokens(heartbeat_many.ids, heartbeat_many.tokens);
    IF heartbeat_many.extend IS NOT NULL THEN
        PERFORM job._check_interval('extend', heartbeat_many.extend, false);
    END IF;
    RETURN QUERY
    WITH renewed AS (
        UPDATE job.live_jobs l
           SET lease_expires_at = now() + coalesce(heartbeat_many.extend,
                                                   (SELECT q.lease FROM job.queues q WHERE q.name = l.queue))
         WHERE l.id = ANY (heartbeat_many.ids) AND l.state = 'running'
           AND l.lease_token = CASE WHEN cardinality(heartbeat_many.tokens) = 1 THEN heartbeat_many.tokens[1]
                                    ELSE heartbeat_many.tokens[array_position(heartbeat_many.ids, l.id)] END
        RETURNING l.id, l.lease_expires_at
    )
    SELECT i.id, r.id IS NOT NULL, r.lease_expires_at
      FROM unnest(heartbeat_many.ids) WITH ORDINALITY AS i(id, ord)
      LEFT JOIN renewed r ON r.id = i.id
     ORDER BY i.ord;
END $$;

COMMENT ON FUNCTION job.heartbeat_many(bigint[], uuid[], interval) IS 'Extends the leases of many jobs in one call: one row per id, in order, with held (whether this claim still holds the job) and its new lease_expires_at (NULL when not held).';

-- Hands a claimed job back without spending an attempt (for a worker shutting down): it is
-- ready again at once in its old place, or after `delay`.  False when `token` is not the
-- job's current claim.
CREATE FUNCTION job.release(id bigint, token uuid, delay interval DEFAULT NULL)
RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    released record;
BEGIN
    PERFORM job._check_not_null('id', release.id);
    PERFORM job._check_not_null('token', release.token);
    IF release.delay IS NOT NULL THEN
        PERFORM job._check_interval('delay', release.delay, true);
    END IF;
    UPDATE job.live_jobs l
       SET state = CASE WHEN release.delay > interval '0' THEN 'scheduled' ELSE 'waiting' END,
           run_at = CASE WHEN release.delay IS NULL THEN l.run_at ELSE now() + release.delay END,
           attempt = l.attempt - 1, claimed_at = NULL, claimed_by = NULL,
           lease_expires_at = NULL, lease_token = NULL
     WHERE l.id = release.id AND l.state = 'running' AND l.lease_token = release.token
    RETURNING l.queue, l.state, l.run_at INTO released;
    IF NOT FOUND THEN
        PERFORM job._require_job(release.id);
        RETURN false;
    END IF;
    IF released.state = 'waiting' THEN
        PERFORM job._wake_queue_on_commit((job._require_queue(released.queue)).id);
    ELSE
        PERFORM job._due_on_commit(released.run_at);
    END IF;
    RETURN true;
END $$;

COMMENT ON FUNCTION job.release(bigint, uuid, interval) IS 'Hands a claimed job back without spending an attempt, ready again in its old place (or after delay); false when token is not the job''s current claim.';

-- Running jobs whose lease expired: the attempt counts as a transient failure; the job is
-- ready again at once in its old place (its run_at is kept, as release keeps it: a worker's
-- death is no reason to wait behind everything enqueued since), or dead when it has no retries
-- left.  Returns how many were rescued.
CREATE FUNCTION job.rescue_stalled(queue text DEFAULT NULL, max_jobs int DEFAULT 1000)
RETURNS int LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF rescue_stalled.queue IS NOT NULL THEN
        PERFORM job._require_queue(rescue_stalled.queue);
    END IF;
    PERFORM job._check_count('max_jobs', rescue_stalled.max_jobs);
    RETURN job._rescue_stalled(rescue_stalled.queue, rescue_stalled.max_jobs, NULL);
END $$;

COMMENT ON FUNCTION job.rescue_stalled(text, int) IS 'Takes back up to max_jobs running jobs whose lease ran out (of one queue; NULL: all): each attempt counts as a transient failure, the job is ready again or dead; returns how many.';

-- job.rescue_stalled's work, looking only at leases that ran out at `since` or later (NULL:
-- all).  Every finished job leaves its entry in the lease index until vacuum, and once its
-- lease time has passed that entry lies in the range a look for stalled jobs scans: the
-- scheduler, which looks again and again, starts where its last look left off (see
-- src/worker/scheduler.rs) instead of stepping over all of them each time.
CREATE FUNCTION job._rescue_stalled(queue text, max_jobs int, since timestamptz)
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

---------------------------------------------------------------------------------------------
-- Coming due (the worker's scheduler runs these, so that LISTENing workers hear of jobs as
-- they become ready, without anyone calling dequeue)
---------------------------------------------------------------------------------------------

-- Makes due scheduled jobs (delayed, or retrying after backoff) ready, at most max_jobs,
-- and wakes the consumers of their queues at commit; also wakes those of queues whose rate
-- window or hold lets jobs start again.  Returns how many became ready.
CREATE FUNCTION job._promote_due(max_jobs int)
RETURNS bigint LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    q record;
    promoted bigint;
    total bigint := 0;
BEGIN
    PERFORM job._wake_rate_limited();
    FOR q IN SELECT qs.name, qs.id, qs.paused FROM job.queues qs
              WHERE EXISTS (SELECT 1 FROM job.live_jobs d
                             WHERE d.queue = qs.name AND d.state = 'scheduled' AND d.run_at <= now()) LOOP
        EXIT WHEN total >= max_jobs;
        UPDATE job.live_jobs j SET state = 'waiting'
         WHERE j.id = ANY (ARRAY(SELECT d.id FROM job.live_jobs d
                                  WHERE d.queue = q.name AND d.state = 'scheduled' AND d.run_at <= now()
                                  ORDER BY d.run_at LIMIT max_jobs - total
                                  FOR UPDATE SKIP LOCKED));
        GET DIAGNOSTICS promoted = ROW_COUNT;
        IF promoted > 0 AND NOT q.paused THEN
            PERFORM job._wake_queue_on_commit(q.id);
        END IF;
        total := total + promoted;
    END LOOP;
    RETURN total;
END $$;

-- The earliest time a job becomes due, a lease runs out, or a rate window or hold lets jobs
-- of a queue start, over all queues (NULL: none): when the scheduler must next promote,
-- rescue or wake.  One index probe per queue and kind.  Leases
-- that already ran out are the scheduler's rescue's business (it looks on every round); the
-- probe starts at now, past the entries finished jobs leave in the lease index, which lie
-- there, their leases run out, until vacuum removes them.
CREATE FUNCTION job._next_job_due()
RETURNS timestamptz LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN least((SELECT min(w.wake_at) FROM job.rate_windows w WHERE w.wake_at IS NOT NULL),
                 (SELECT least(min(d.run_at), min(r.lease_expires_at))
              FROM job.queues q
              LEFT JOIN LATERAL (SELECT l.run_at FROM job.live_jobs l
                                  WHERE l.queue = q.name AND l.state = 'scheduled'
                                  ORDER BY l.run_at LIMIT 1) d ON true
              LEFT JOIN LATERAL (SELECT l.lease_expires_at FROM job.live_jobs l
                                  WHERE l.queue = q.name AND l.state = 'running' AND l.lease_expires_at >= now()
                                  ORDER BY l.lease_expires_at LIMIT 1) r ON true));
END $$;
