-- pg_jobqueue 0.4.0 -> 0.5.0.  Written for the 0.5.0 release; never edited after it (see
-- sql/README.md).  What changes and why: CHANGELOG.md.

-- ---------------------------------------------------------------------------------------
-- Deliveries hardened (issue 19): paths stay under the endpoint's URL, delivery headers repeat
-- none of the endpoint's, chosen webhook ids are key_<key>, job.enqueue on an endpoint's
-- queue is checked like job.deliver, URLs are shown redacted (job.endpoint_url reads them),
-- and a starting sender reads the recent claims into its rate windows.
-- ---------------------------------------------------------------------------------------

CREATE FUNCTION "_check_delivery_headers"(
	"what" TEXT, /* & str */
	"headers" jsonb, /* pgrx :: JsonB */
	"endpoint_headers" jsonb /* pgrx :: JsonB */
) RETURNS void
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_check_delivery_headers_wrapper';

CREATE FUNCTION "_check_webhook_key"(
	"what" TEXT, /* & str */
	"key" TEXT /* & str */
) RETURNS void
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_check_webhook_key_wrapper';

CREATE FUNCTION "_redacted_url"(
	"url" TEXT /* & str */
) RETURNS TEXT /* String */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_redacted_url_wrapper';

-- Enqueues one job; returns its id (or, for a known idempotency key, the existing job's; for a
-- singleton or debounce key whose job has not started, that job's, which takes this payload).
-- Flow-control keys (see flow.sql): `concurrency_key` (the queue's per-key limits and fair
-- turns), `order_key` (its jobs run one at a time, oldest first), `singleton_key` (one job
-- waits and one runs), `debounce_key` with `debounce` (the job starts once no enqueue of the
-- key came for that long) and `debounce_max_wait` (but no later than that after the first).
CREATE OR REPLACE FUNCTION job.enqueue(
    queue text,
    payload jsonb DEFAULT '{}',
    run_at timestamptz DEFAULT NULL,
    delay interval DEFAULT NULL,
    priority int DEFAULT 0,
    idempotency_key text DEFAULT NULL,
    max_retries int DEFAULT NULL,
    job_type text DEFAULT NULL,
    concurrency_key text DEFAULT NULL,
    order_key text DEFAULT NULL,
    singleton_key text DEFAULT NULL,
    debounce_key text DEFAULT NULL,
    debounce interval DEFAULT NULL,
    debounce_max_wait interval DEFAULT NULL
) RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    q record;
    start_at timestamptz := now();
    new_id bigint;
    existing_id bigint;
    keyed job.queues;
BEGIN
    -- A drop of this queue in progress makes this fail at once instead of waiting for it.
    PERFORM job._guard_queue(enqueue.queue);
    SELECT qs.id, qs.name, qs.max_retries, qs.idempotency_window, qs.max_payload_bytes INTO q
      FROM job.queues qs WHERE qs.name = enqueue.queue;
    IF NOT FOUND THEN
        PERFORM job._require_queue(enqueue.queue);  -- raises
    END IF;
    IF enqueue.payload IS NULL OR jsonb_typeof(enqueue.payload) <> 'object' THEN
        PERFORM job._check_payload('payload', enqueue.payload);
    END IF;
    IF pg_column_size(enqueue.payload) > q.max_payload_bytes THEN
        PERFORM job._check_payload_size(job._require_queue(q.name), 'payload', enqueue.payload);
    END IF;
    IF enqueue.payload ? 'body' AND enqueue.payload ?| '{path,headers,webhook_id}' THEN
        -- What the sender would read as a delivery's path, headers or webhook id.
        PERFORM job._check_enqueued_delivery(q.name, enqueue.payload, 'payload.');
    END IF;
    IF enqueue.delay IS NOT NULL THEN
        IF enqueue.run_at IS NOT NULL THEN
            RAISE EXCEPTION 'give run_at or delay, not both' USING ERRCODE = 'invalid_parameter_value';
        END IF;
        PERFORM job._check_interval('delay', enqueue.delay, true);
        start_at := now() + enqueue.delay;
    ELSIF enqueue.run_at IS NOT NULL THEN
        IF NOT isfinite(enqueue.run_at) THEN
            RAISE EXCEPTION 'run_at must be a finite time, got %', enqueue.run_at USING ERRCODE = 'invalid_parameter_value';
        END IF;
        start_at := enqueue.run_at;
    END IF;
    IF enqueue.priority IS NULL THEN
        PERFORM job._check_not_null('priority', enqueue.priority);
    END IF;
    IF enqueue.max_retries < 0 THEN
        RAISE EXCEPTION 'max_retries must be 0 or more, got %', enqueue.max_retries USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF enqueue.job_type IS NOT NULL AND job._name_problem(enqueue.job_type, 128) IS NOT NULL THEN
        PERFORM job._check_name('job_type', enqueue.job_type);
    END IF;
    IF num_nonnulls(enqueue.concurrency_key, enqueue.order_key, enqueue.singleton_key, enqueue.debounce_key,
                    enqueue.debounce, enqueue.debounce_max_wait) > 0 THEN
        -- Flow control (see flow.sql).
        keyed := job._require_queue(q.name);
        PERFORM job._check_job_keys(keyed, enqueue.concurrency_key, enqueue.order_key, enqueue.singleton_key,
                                    enqueue.debounce_key, enqueue.debounce, enqueue.debounce_max_wait,
                                    enqueue.idempotency_key, enqueue.run_at, enqueue.delay);
        IF enqueue.debounce_key IS NOT NULL THEN
            start_at := now() + enqueue.debounce;
        END IF;
        IF (enqueue.order_key IS NOT NULL OR enqueue.singleton_key IS NOT NULL) AND NOT keyed.serial_keys THEN
            UPDATE job.queues qs SET serial_keys = true WHERE qs.name = q.name;  -- claims now look at keys
        END IF;
        IF enqueue.singleton_key IS NOT NULL OR enqueue.debounce_key IS NOT NULL THEN
            existing_id := job._replace_pending(q.name, enqueue.singleton_key, enqueue.debounce_key,
                                                enqueue.payload, start_at, enqueue.debounce_max_wait);
            IF existing_id IS NOT NULL THEN
                RETURN existing_id;
            END IF;
        END IF;
    END IF;

    IF enqueue.idempotency_key IS NOT NULL THEN
        IF job._name_problem(enqueue.idempotency_key, 512) IS NOT NULL THEN
            PERFORM job._check_name('idempotency_key', enqueue.idempotency_key, 512);
        END IF;
        -- The primary key arbitrates: a racing enqueue of the same key waits for ours to
        -- commit or roll back.  An expired key is taken over by the new job.
        new_id := nextval('job.job_id_seq');
        INSERT INTO job.idempotency_keys AS k (queue, key, job_id, expires_at)
        VALUES (q.name, enqueue.idempotency_key, new_id, now() + q.idempotency_window)
        ON CONFLICT (queue, key) DO UPDATE
           SET job_id = EXCLUDED.job_id, expires_at = EXCLUDED.expires_at
         WHERE k.expires_at <= now();
        IF NOT FOUND THEN
            SELECT k.job_id INTO existing_id FROM job.idempotency_keys k
             WHERE k.queue = q.name AND k.key = enqueue.idempotency_key;
            RETURN existing_id;
        END IF;
    END IF;

    INSERT INTO job.live_jobs (id, run_at, priority, max_retries, state, queue, job_type,
                               idempotency_key, payload, concurrency_key, order_key, singleton_key, debounce_key)
    VALUES (coalesce(new_id, nextval('job.job_id_seq')), start_at, enqueue.priority,
            coalesce(enqueue.max_retries, q.max_retries),
            CASE WHEN start_at <= now() THEN 'waiting' ELSE 'scheduled' END,
            q.name, enqueue.job_type, enqueue.idempotency_key, enqueue.payload, enqueue.concurrency_key,
            enqueue.order_key, enqueue.singleton_key, enqueue.debounce_key)
    RETURNING id INTO new_id;
    IF start_at <= now() THEN
        PERFORM job._wake_queue_on_commit(q.id);
    ELSE
        PERFORM job._due_on_commit(start_at);  -- the worker makes it ready when due, and wakes consumers
    END IF;
    RETURN new_id;
END $$;

-- Many jobs in one statement (all of one concurrency or order key, if given: an order key runs
-- them in payload order); ids come back in payload order.
CREATE OR REPLACE FUNCTION job.enqueue_many(
    queue text,
    payloads jsonb[],
    priority int DEFAULT 0,
    job_type text DEFAULT NULL,
    concurrency_key text DEFAULT NULL,
    order_key text DEFAULT NULL
) RETURNS SETOF bigint LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    q job.queues;
    bad record;
BEGIN
    PERFORM job._guard_queue(enqueue_many.queue);
    q := job._require_queue(enqueue_many.queue);
    PERFORM job._check_not_null('payloads', enqueue_many.payloads);
    IF array_ndims(enqueue_many.payloads) > 1 THEN
        RAISE EXCEPTION 'payloads must be a one-dimensional array, got % dimensions', array_ndims(enqueue_many.payloads)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM job._check_not_null('priority', enqueue_many.priority);
    IF enqueue_many.job_type IS NOT NULL THEN
        PERFORM job._check_name('job_type', enqueue_many.job_type);
    END IF;
    IF enqueue_many.concurrency_key IS NOT NULL OR enqueue_many.order_key IS NOT NULL THEN
        PERFORM job._check_job_keys(q, enqueue_many.concurrency_key, enqueue_many.order_key, NULL, NULL, NULL, NULL,
                                    NULL, NULL, NULL);
        IF enqueue_many.order_key IS NOT NULL AND NOT q.serial_keys THEN
            UPDATE job.queues qs SET serial_keys = true WHERE qs.name = q.name;  -- claims now look at keys
        END IF;
    END IF;
    SELECT p.payload, p.ord INTO bad
      FROM unnest(enqueue_many.payloads) WITH ORDINALITY AS p(payload, ord)
     WHERE p.payload IS NULL OR jsonb_typeof(p.payload) <> 'object'
     ORDER BY p.ord LIMIT 1;
    IF FOUND THEN
        PERFORM job._check_payload(format('payloads[%s]', bad.ord), bad.payload);
    END IF;
    IF q.max_payload_bytes IS NOT NULL THEN
        SELECT p.payload, p.ord INTO bad
          FROM unnest(enqueue_many.payloads) WITH ORDINALITY AS p(payload, ord)
         WHERE pg_column_size(p.payload) > q.max_payload_bytes
         ORDER BY p.ord LIMIT 1;
        IF FOUND THEN
            PERFORM job._check_payload_size(q, format('payloads[%s]', bad.ord), bad.payload);
        END IF;
    END IF;
    FOR bad IN SELECT p.payload, p.ord FROM unnest(enqueue_many.payloads) WITH ORDINALITY AS p(payload, ord)
                WHERE p.payload ? 'body' AND p.payload ?| '{path,headers,webhook_id}' ORDER BY p.ord
    LOOP
        PERFORM job._check_enqueued_delivery(q.name, bad.payload, format('payloads[%s].', bad.ord));
    END LOOP;
    IF cardinality(enqueue_many.payloads) = 0 THEN
        RETURN;
    END IF;

    -- ids are drawn in payload order (the insert consumes the ordered rows one by one).
    RETURN QUERY
    WITH inserted AS (
        INSERT INTO job.live_jobs (run_at, priority, max_retries, state, queue, job_type, payload, concurrency_key,
                                   order_key)
        SELECT now(), enqueue_many.priority, q.max_retries, 'waiting', q.name, enqueue_many.job_type, p.payload,
               enqueue_many.concurrency_key, enqueue_many.order_key
          FROM unnest(enqueue_many.payloads) WITH ORDINALITY AS p(payload, ord)
         ORDER BY p.ord
        RETURNING id
    )
    SELECT i.id FROM inserted i ORDER BY i.id;
    PERFORM job._wake_queue_on_commit(q.id);
END $$;

-- Creates the endpoint, or changes an existing one (audited either way; the audit entry
-- names header names, never their values or the secret).  `secret` NULL makes one for a new
-- endpoint and keeps an existing endpoint's.  `queue` NULL is the endpoint's name; the queue
-- is created with the defaults when absent, and its retry settings are the deliveries'.
CREATE OR REPLACE FUNCTION job.create_endpoint(
    name text,
    url text,
    method text DEFAULT 'POST',
    headers jsonb DEFAULT '{}',
    secret text DEFAULT NULL,
    timeout interval DEFAULT '30 seconds',
    concurrency int DEFAULT 16,
    rate_limit int DEFAULT NULL,
    queue text DEFAULT NULL
) RETURNS void LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
DECLARE
    queue_name text := coalesce(queue, name);
    verb text;
    before job.endpoint_defs;
    after job.endpoint_defs;
    q job.queues;
BEGIN
    PERFORM job._require_worker('endpoints');
    PERFORM job._check_name('endpoint name', name);
    PERFORM job._check_not_null('url', url);
    PERFORM job._check_endpoint_url(url);
    PERFORM job._check_not_null('method', method);
    verb := job._check_http_method(method);
    PERFORM job._check_not_null('headers', headers);
    PERFORM job._check_http_headers('headers', headers);
    IF secret IS NOT NULL THEN
        PERFORM job._check_webhook_secret(secret);
    END IF;
    PERFORM job._check_interval('timeout', timeout, false);
    IF timeout > interval '1 hour' THEN
        RAISE EXCEPTION 'timeout must be at most 1 hour, got %', timeout USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF concurrency IS NULL OR concurrency NOT BETWEEN 1 AND 1000 THEN
        RAISE EXCEPTION 'concurrency must be between 1 and 1000, got %', coalesce(concurrency::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF rate_limit NOT BETWEEN 1 AND 100000 THEN
        RAISE EXCEPTION 'rate_limit must be between 1 and 100000 requests per second (or NULL for none), got %', rate_limit
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM job._check_name('queue name', queue_name);
    IF EXISTS (SELECT 1 FROM job.handler_defs h WHERE h.queue = queue_name) THEN
        RAISE EXCEPTION 'queue % has a handler, so it cannot be an endpoint''s queue', quote_literal(queue_name)
            USING ERRCODE = 'object_in_use',
                  HINT = 'Name another queue, or remove the handler first (job.remove_handler).';
    END IF;
    IF EXISTS (SELECT 1 FROM job.endpoint_defs d WHERE d.queue = queue_name AND d.name <> create_endpoint.name) THEN
        RAISE EXCEPTION 'queue % is already the queue of endpoint %', quote_literal(queue_name),
            quote_literal((SELECT d.name FROM job.endpoint_defs d WHERE d.queue = queue_name))
            USING ERRCODE = 'object_in_use';
    END IF;

    -- (Aliases differ from this function's variables: use_variable would read `q.name` as the
    -- variable q's.)  An existing queue keeps its settings.
    IF NOT EXISTS (SELECT 1 FROM job.queues existing WHERE existing.name = queue_name) THEN
        PERFORM job.create_queue(queue_name);
    END IF;
    q := job._require_queue(queue_name);
    SELECT * INTO before FROM job.endpoint_defs d WHERE d.name = create_endpoint.name FOR UPDATE;
    INSERT INTO job.endpoint_defs AS d (name, queue, url, method, timeout, concurrency, rate_limit)
    VALUES (name, queue_name, url, verb, timeout, concurrency, rate_limit)
    ON CONFLICT ON CONSTRAINT endpoint_defs_pkey DO UPDATE
       SET queue = EXCLUDED.queue, url = EXCLUDED.url, method = EXCLUDED.method,
           timeout = EXCLUDED.timeout, concurrency = EXCLUDED.concurrency,
           rate_limit = EXCLUDED.rate_limit, updated_at = now()
    RETURNING * INTO after;
    INSERT INTO job.endpoint_secrets AS s (endpoint, secret, headers)
    VALUES (name, coalesce(secret, job._new_webhook_secret()), headers)
    ON CONFLICT (endpoint) DO UPDATE
       SET secret = coalesce(create_endpoint.secret, s.secret), headers = EXCLUDED.headers;
    INSERT INTO job.endpoint_stats (endpoint) VALUES (name) ON CONFLICT DO NOTHING;
    PERFORM job._wake_scheduler();  -- starts the sender
    PERFORM job._wake_sender();     -- or has it look now
    PERFORM job._audit(CASE WHEN before.name IS NULL THEN 'create_endpoint' ELSE 'alter_endpoint' END,
        to_jsonb(after) - '{paused,disabled_reason,disabled_at,created_at,updated_at}'::text[]
        || jsonb_build_object('url', job._redacted_url(after.url),
                              'header_names', (SELECT coalesce(jsonb_agg(k ORDER BY k), '[]') FROM jsonb_object_keys(headers) k),
                              'secret_given', secret IS NOT NULL));
END $$;

-- The endpoint's full URL (audited): job.endpoints shows the monitor only its origin, since a
-- path or query can hold a token (Slack-style URLs).
CREATE OR REPLACE FUNCTION job.endpoint_url(name text)
RETURNS text LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    e job.endpoint_defs := job._require_endpoint(name);
BEGIN
    PERFORM job._audit('read_endpoint_url', jsonb_build_object('name', e.name));
    RETURN e.url;
END $$;
COMMENT ON FUNCTION job.endpoint_url(text) IS 'The endpoint''s full URL, path and query included (job.endpoints shows them redacted); audited.';

-- Raises 22023 unless a delivery payload (as job.deliver writes it: a "body" with "path",
-- "headers", "webhook_id") is fit for endpoint `e`: a path that stays under its URL, headers
-- that repeat none of the endpoint's nor name a reserved one, a webhook_id of the allowed
-- characters.  `what` prefixes the argument names ('' for job.deliver's own, 'payload.' for
-- a job.enqueue).  The sender checks them again before sending.
CREATE OR REPLACE FUNCTION job._check_delivery(e job.endpoint_defs, payload jsonb, what text)
RETURNS void LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF payload ? 'path' THEN
        IF jsonb_typeof(payload -> 'path') <> 'string' THEN
            RAISE EXCEPTION '%path must be a string', what USING ERRCODE = 'invalid_parameter_value';
        END IF;
        PERFORM job._check_delivery_path(payload ->> 'path');
    END IF;
    IF payload ? 'headers' THEN
        PERFORM job._check_delivery_headers(what || 'headers', payload -> 'headers',
                                            (SELECT s.headers FROM job.endpoint_secrets s WHERE s.endpoint = e.name));
    END IF;
    IF payload ? 'webhook_id' THEN
        IF jsonb_typeof(payload -> 'webhook_id') <> 'string' THEN
            RAISE EXCEPTION '%webhook_id must be a string', what USING ERRCODE = 'invalid_parameter_value';
        END IF;
        PERFORM job._check_webhook_key(CASE what WHEN '' THEN 'idempotency_key' ELSE what || 'webhook_id' END,
                                       payload ->> 'webhook_id');
    END IF;
END $$;

-- Called by job.enqueue and job.enqueue_many for a payload that job.deliver could have
-- written (an object with "body" and any of "path", "headers", "webhook_id"): on an
-- endpoint's queue it is checked as job.deliver checks its arguments.
CREATE OR REPLACE FUNCTION job._check_enqueued_delivery(queue_name text, payload jsonb, what text)
RETURNS void LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    e job.endpoint_defs;
BEGIN
    SELECT * INTO e FROM job.endpoint_defs d WHERE d.queue = queue_name;
    IF FOUND THEN
        PERFORM job._check_delivery(e, payload, what);
    END IF;
END $$;

-- Enqueues one delivery to an existing endpoint, as a job of its queue (idempotency key,
-- delay, priority and the job views work as for any job).  The job's payload is
-- {"body": …} with the path, headers and webhook id it was given; its job_type is
-- event_type.  The request's webhook-id is "key_<idempotency key>", or "msg_<job id>": a
-- producer's key can never name the id another delivery is given.  A
-- `concurrency_key` or `order_key` puts the delivery under its queue's flow control (see
-- flow.sql): per-key limits, or one at a time in order per key.
CREATE OR REPLACE FUNCTION job.deliver(
    endpoint text,
    body jsonb,
    event_type text DEFAULT NULL,
    idempotency_key text DEFAULT NULL,
    path text DEFAULT NULL,
    headers jsonb DEFAULT NULL,
    run_at timestamptz DEFAULT NULL,
    delay interval DEFAULT NULL,
    priority int DEFAULT 0,
    concurrency_key text DEFAULT NULL,
    order_key text DEFAULT NULL
) RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    e job.endpoint_defs := job._require_endpoint(endpoint);
    payload jsonb;
BEGIN
    PERFORM job._check_not_null('body', body);
    payload := jsonb_build_object('body', body)
               || jsonb_strip_nulls(jsonb_build_object('path', path, 'headers', headers,
                                                       'webhook_id', idempotency_key));
    PERFORM job._check_delivery(e, payload, '');
    RETURN job.enqueue(e.queue, payload,
                       run_at => run_at, delay => delay, priority => priority,
                       idempotency_key => idempotency_key, job_type => event_type,
                       concurrency_key => concurrency_key, order_key => order_key);
END $$;

-- The claims of the last `within` on the queues of rate-limited endpoints, oldest first, as
-- seconds ago: a starting sender counts them into its rate windows, so that a restart cannot
-- start a second full window's worth of requests inside one second.  (A job's claimed_at is
-- its last attempt's claim, kept when it fails and moved to finished_jobs when it ends.)
CREATE OR REPLACE FUNCTION job._recent_delivery_starts(within interval)
RETURNS TABLE (endpoint text, rate_limit int, started_ago float8)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp AS $$
    SELECT d.name, d.rate_limit, extract(epoch FROM clock_timestamp() - c.claimed_at)::float8
      FROM job.endpoint_defs d
     CROSS JOIN LATERAL (
           SELECT l.claimed_at FROM job.live_jobs l
            WHERE l.queue = d.queue AND l.claimed_at > clock_timestamp() - within
           UNION ALL
           SELECT f.claimed_at FROM job.finished_jobs f
            WHERE f.queue = d.queue AND f.state IN ('completed', 'dead', 'cancelled')
              AND f.finished_at > clock_timestamp() - within AND f.claimed_at > clock_timestamp() - within
           ) c
     WHERE d.rate_limit IS NOT NULL
     ORDER BY d.name, c.claimed_at
$$;

-- Claims up to `max_jobs` deliveries for the sender, from active endpoints in random order,
-- each within its concurrency (job._free_slots, as handler claims count it) and its rate
-- limit (the sender passes how many requests each
-- endpoint started in the last second: `recent_starts`, paired with `endpoints`).  Each row
-- is one request to make, with its endpoint's settings; `webhook_id` is the key the producer
-- chose, if any (the sender makes the id of it: src/delivery/mod.rs).  A job enqueued on an endpoint's queue
-- without job.deliver is posted with its payload as the body (unless that payload is an
-- object with a "body" key: then it is read as job.deliver writes it).
CREATE OR REPLACE FUNCTION job._claim_deliveries(worker text, max_jobs int, endpoints text[], recent_starts int[])
RETURNS TABLE (endpoint text, job_id bigint, token uuid, body text, path text, headers jsonb,
               webhook_id text, url text, method text, endpoint_headers jsonb, secrets text[],
               timeout_ms bigint, rate_limit int)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    e record;
    remaining int := max_jobs;
    wanted int;
    claimed int;
BEGIN
    FOR e IN SELECT d.name, d.queue, d.url, d.method, d.timeout, d.concurrency, d.rate_limit, s.headers,
                    CASE WHEN s.previous_until > now() THEN ARRAY[s.secret, s.previous_secret]
                         ELSE ARRAY[s.secret] END AS secrets
               FROM job.endpoint_defs d
               JOIN job.queues q ON q.name = d.queue AND NOT q.paused
               JOIN job.endpoint_secrets s ON s.endpoint = d.name
              WHERE NOT d.paused AND d.disabled_reason IS NULL
              ORDER BY random()
    LOOP
        EXIT WHEN remaining <= 0;
        wanted := remaining;
        IF e.rate_limit IS NOT NULL THEN
            wanted := least(wanted, e.rate_limit - coalesce(recent_starts[array_position(endpoints, e.name)], 0));
        END IF;
        CONTINUE WHEN wanted <= 0;
        wanted := least(wanted, job._free_slots(e.queue, e.concurrency));
        CONTINUE WHEN wanted <= 0;
        RETURN QUERY
        SELECT e.name, c.id, c.lease_token,
               (CASE WHEN envelope THEN c.payload -> 'body' ELSE c.payload END)::text,
               CASE WHEN envelope THEN c.payload ->> 'path' END,
               CASE WHEN envelope AND jsonb_typeof(c.payload -> 'headers') = 'object' THEN c.payload -> 'headers' END,
               CASE WHEN envelope THEN c.payload ->> 'webhook_id' END,
               e.url, e.method, e.headers, e.secrets,
               (extract(epoch FROM e.timeout) * 1000)::bigint, e.rate_limit
          FROM job.dequeue(e.queue, worker, wanted, e.timeout + interval '30 seconds') c
         CROSS JOIN LATERAL (SELECT jsonb_typeof(c.payload) = 'object' AND c.payload ? 'body' AS envelope) x;
        GET DIAGNOSTICS claimed = ROW_COUNT;
        remaining := remaining - claimed;
    END LOOP;
END $$;

CREATE OR REPLACE VIEW job.endpoints AS
SELECT d.name, job._redacted_url(d.url) AS url, d.method, d.queue,
       ARRAY(SELECT k FROM jsonb_object_keys(s.headers) k ORDER BY k) AS header_names,
       d.timeout, d.concurrency, d.rate_limit,
       CASE WHEN d.disabled_reason IS NOT NULL THEN 'disabled'
            WHEN d.paused OR q.paused THEN 'paused'
            ELSE 'active' END AS state,
       d.disabled_reason, d.disabled_at,
       (SELECT count(*) FROM job.live_jobs l WHERE l.queue = d.queue AND l.state = 'running') AS in_flight,
       st.consecutive_failures, st.last_status, st.last_error, st.last_attempt_at,
       s.previous_until > now() AS rotating_secret,
       d.created_at, d.updated_at
  FROM job.endpoint_defs d
  JOIN job.queues q ON q.name = d.queue
  JOIN job.endpoint_secrets s ON s.endpoint = d.name
  LEFT JOIN job.endpoint_stats st ON st.endpoint = d.name;

COMMENT ON VIEW job.endpoints IS 'HTTP endpoints: URL (its origin; path and query redacted: job.endpoint_url reads it whole), method, header names (never values or secrets), limits, state (active, paused, disabled and why), requests in flight, consecutive failures and the last answer.';

-- New functions are nobody's until a recipe grants them (privileges.sql); the views' pure
-- helper is everyone's.
REVOKE EXECUTE ON FUNCTION job._check_delivery_headers(text, jsonb, jsonb), job._check_webhook_key(text, text),
    job.endpoint_url(text), job._check_delivery(job.endpoint_defs, jsonb, text),
    job._check_enqueued_delivery(text, jsonb, text), job._recent_delivery_starts(interval),
    job._redacted_url(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION job._redacted_url(text) TO PUBLIC;  -- after the revoke, as a fresh install has it
