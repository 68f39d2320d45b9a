-- pg_jobqueue HTTP endpoints and deliveries: the worker's sender (src/worker/sender.rs) posts
-- each delivery, a job of its endpoint's queue, as a signed request (Standard Webhooks).
--
-- An endpoint is administered by the admin duty (all audited); its secret and header values
-- are read back only through job.endpoint_secret and job.endpoint_headers.  The produce duty
-- delivers to endpoints that exist, and can add a path under the endpoint's URL and headers
-- of its own, never another host, a step out of the URL, a header the endpoint or
-- pg_jobqueue sets, or a webhook-id of another delivery (src/delivery/mod.rs).  The monitor
-- sees an endpoint's URL redacted (its path and query can hold a token).

-- Receivers written in SQL check a request's signature with job.verify_webhook, declared from
-- src/functions/delivery.rs.
COMMENT ON FUNCTION job.verify_webhook(text, text, text, text, text, interval) IS
    'True when signature (a webhook-signature header: space-separated v1,<base64> values) holds a Standard Webhooks signature by secret of msg_id, msg_timestamp and body, and msg_timestamp (Unix seconds) is within tolerance (0 to 1 day; default 5 minutes) of now.';

-- Raises unless the endpoint exists; returns it.
CREATE FUNCTION job._require_endpoint(endpoint_name text)
RETURNS job.endpoint_defs LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    e job.endpoint_defs;
BEGIN
    SELECT * INTO e FROM job.endpoint_defs d WHERE d.name = endpoint_name;
    IF NOT FOUND THEN
        PERFORM job._check_name('endpoint name', endpoint_name);
        RAISE EXCEPTION 'endpoint % does not exist', quote_literal(endpoint_name)
            USING ERRCODE = 'undefined_object',
                  HINT = 'Create it with SELECT job.create_endpoint(''name'', ''https://…'');';
    END IF;
    RETURN e;
END $$;

-- Creates the endpoint, or changes an existing one (audited either way; the audit entry
-- names header names, never their values or the secret).  `secret` NULL makes one for a new
-- endpoint and keeps an existing endpoint's.  `queue` NULL is the endpoint's name; the queue
-- is created with the defaults when absent, and its retry settings are the deliveries'.
CREATE FUNCTION job.create_endpoint(
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

COMMENT ON FUNCTION job.create_endpoint(text, text, text, jsonb, text, interval, int, int, text) IS 'Creates an HTTP endpoint, or sets every setting of an existing one: URL, method, headers (name to value), signing secret (NULL: make one, or keep the current), timeout per request, concurrency, rate_limit (requests started per second; NULL: none) and queue (NULL: the endpoint''s name; created when absent); audited.';

-- Makes and returns a new secret.  Until `overlap` has passed, every request carries the
-- signatures of both the new and the previous secret, so receivers can switch at leisure.
CREATE FUNCTION job.rotate_endpoint_secret(name text, overlap interval DEFAULT '24 hours')
RETURNS text LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    e job.endpoint_defs := job._require_endpoint(name);
    new_secret text := job._new_webhook_secret();
BEGIN
    PERFORM job._check_interval('overlap', overlap, true);
    UPDATE job.endpoint_secrets s
       SET previous_secret = s.secret, previous_until = now() + overlap, secret = new_secret
     WHERE s.endpoint = e.name;
    PERFORM job._audit('rotate_endpoint_secret', jsonb_build_object('name', e.name, 'overlap', overlap));
    RETURN new_secret;
END $$;

COMMENT ON FUNCTION job.rotate_endpoint_secret(text, interval) IS 'Makes and returns a new signing secret; until overlap has passed, requests carry signatures by both the new and the previous secret (audited).';

-- The endpoint's current secret, for the administrator to hand to the receiver (audited).
CREATE FUNCTION job.endpoint_secret(name text)
RETURNS text LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    e job.endpoint_defs := job._require_endpoint(name);
BEGIN
    PERFORM job._audit('read_endpoint_secret', jsonb_build_object('name', e.name));
    RETURN (SELECT s.secret FROM job.endpoint_secrets s WHERE s.endpoint = e.name);
END $$;

COMMENT ON FUNCTION job.endpoint_secret(text) IS 'The endpoint''s current signing secret (whsec_...), to give to the receiver (audited).';

-- The endpoint's headers with their values (audited).
CREATE FUNCTION job.endpoint_headers(name text)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    e job.endpoint_defs := job._require_endpoint(name);
BEGIN
    PERFORM job._audit('read_endpoint_headers', jsonb_build_object('name', e.name));
    RETURN (SELECT s.headers FROM job.endpoint_secrets s WHERE s.endpoint = e.name);
END $$;

COMMENT ON FUNCTION job.endpoint_headers(text) IS 'The headers the endpoint sends, with their values, as a JSON object (audited).';

-- The endpoint's full URL (audited): job.endpoints shows the monitor only its origin, since a
-- path or query can hold a token (Slack-style URLs).
CREATE FUNCTION job.endpoint_url(name text)
RETURNS text LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    e job.endpoint_defs := job._require_endpoint(name);
BEGIN
    PERFORM job._audit('read_endpoint_url', jsonb_build_object('name', e.name));
    RETURN e.url;
END $$;
COMMENT ON FUNCTION job.endpoint_url(text) IS 'The endpoint''s full URL, path and query included (job.endpoints shows them redacted); audited.';

-- Drops the endpoint (its queue stays).  Refuses while the queue has unfinished deliveries
-- unless forced, which cancels them.
CREATE FUNCTION job.drop_endpoint(name text, force boolean DEFAULT false)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    e job.endpoint_defs := job._require_endpoint(name);
    unfinished bigint[];
    cancelled int := 0;
BEGIN
    PERFORM job._check_not_null('force', force);
    SELECT array_agg(l.id) INTO unfinished FROM job.live_jobs l WHERE l.queue = e.queue;
    IF unfinished IS NOT NULL AND NOT force THEN
        RAISE EXCEPTION 'endpoint % still has % unfinished deliveries', quote_literal(e.name), cardinality(unfinished)
            USING ERRCODE = 'object_in_use',
                  HINT = 'Let them finish, or drop with force => true to cancel them.';
    END IF;
    IF unfinished IS NOT NULL THEN
        cancelled := job._finish(unfinished, '{waiting,scheduled,running}', 'cancelled');
    END IF;
    DELETE FROM job.endpoint_defs d WHERE d.name = e.name;  -- its secrets and stats go with it
    PERFORM job._audit('drop_endpoint', jsonb_build_object('name', e.name, 'force', force), cancelled);
END $$;

COMMENT ON FUNCTION job.drop_endpoint(text, boolean) IS 'Drops an endpoint with its secret and statistics (its queue stays); refuses while it has unfinished deliveries unless force, which cancels them (audited).';

-- Pauses or resumes the endpoint; resuming also ends a disablement and its failure count.
CREATE FUNCTION job._set_endpoint_paused(endpoint_name text, pause boolean)
RETURNS void LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    e job.endpoint_defs := job._require_endpoint(endpoint_name);
BEGIN
    UPDATE job.endpoint_defs d
       SET paused = pause,
           disabled_reason = CASE WHEN pause THEN d.disabled_reason END,
           disabled_at = CASE WHEN pause THEN d.disabled_at END,
           updated_at = now()
     WHERE d.name = e.name;
    IF NOT pause THEN
        UPDATE job.endpoint_stats s SET consecutive_failures = 0 WHERE s.endpoint = e.name;
        PERFORM job._wake_sender();
    END IF;
    PERFORM job._audit(CASE WHEN pause THEN 'pause_endpoint' ELSE 'resume_endpoint' END,
                       jsonb_build_object('name', e.name, 'was_disabled', e.disabled_reason));
END $$;

CREATE FUNCTION job.pause_endpoint(name text) RETURNS void LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
    SELECT job._set_endpoint_paused(name, true)
$$;

COMMENT ON FUNCTION job.pause_endpoint(text) IS 'Stops sending the endpoint''s deliveries until job.resume_endpoint; they wait in its queue (audited).';

CREATE FUNCTION job.resume_endpoint(name text) RETURNS void LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
    SELECT job._set_endpoint_paused(name, false)
$$;

COMMENT ON FUNCTION job.resume_endpoint(text) IS 'Resumes a paused or disabled endpoint and resets its count of consecutive failures (audited).';

CREATE VIEW job.endpoints AS
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

COMMENT ON COLUMN job.endpoints.name IS 'The endpoint''s name.';
COMMENT ON COLUMN job.endpoints.url IS 'Where its requests go, redacted: the origin, with /… for a path and name=… for each query parameter (job.endpoint_url reads it whole).';
COMMENT ON COLUMN job.endpoints.method IS 'The HTTP method of its requests.';
COMMENT ON COLUMN job.endpoints.queue IS 'The queue whose jobs are its deliveries (its retry settings apply).';
COMMENT ON COLUMN job.endpoints.header_names IS 'The names of the headers it sends with every request, sorted; their values only through job.endpoint_headers.';
COMMENT ON COLUMN job.endpoints.timeout IS 'The longest one request may take; a delivery''s lease is this plus 30 seconds.';
COMMENT ON COLUMN job.endpoints.concurrency IS 'The most requests in flight at once.';
COMMENT ON COLUMN job.endpoints.rate_limit IS 'The most requests started per second; NULL: no limit.';
COMMENT ON COLUMN job.endpoints.state IS 'active, paused (the endpoint or its queue is), or disabled (see disabled_reason).';
COMMENT ON COLUMN job.endpoints.disabled_reason IS 'Why the sender disabled it (410 Gone, or pg_jobqueue.http_disable_after failed attempts in a row) until job.resume_endpoint; NULL: not disabled.';
COMMENT ON COLUMN job.endpoints.disabled_at IS 'When it was disabled; NULL: not disabled.';
COMMENT ON COLUMN job.endpoints.in_flight IS 'Deliveries of its queue running now; a count.';
COMMENT ON COLUMN job.endpoints.consecutive_failures IS 'Failed attempts since the last delivered one (job.resume_endpoint resets it); a count.';
COMMENT ON COLUMN job.endpoints.last_status IS 'The HTTP status of the last answer received; NULL: none yet (an attempt without an answer keeps the previous one).';
COMMENT ON COLUMN job.endpoints.last_error IS 'The error of the last failed attempt since the last delivered one; NULL when none failed since.';
COMMENT ON COLUMN job.endpoints.last_attempt_at IS 'When the sender last recorded attempts to it; NULL: never.';
COMMENT ON COLUMN job.endpoints.rotating_secret IS 'True while a rotation''s overlap lasts (requests are signed with the new and the previous secret); false once it ended, NULL when the secret was never rotated.';
COMMENT ON COLUMN job.endpoints.created_at IS 'When the endpoint was created.';
COMMENT ON COLUMN job.endpoints.updated_at IS 'When job.create_endpoint last set it, or it was last paused or resumed.';

CREATE VIEW job.endpoint_metrics AS
SELECT st.endpoint, st.status_2xx, st.status_3xx, st.status_4xx, st.status_5xx,
       st.transport_errors, st.transient_failures, st.permanent_failures,
       job._hist_quantile(st.latency, 0.5)  AS latency_p50,
       job._hist_quantile(st.latency, 0.95) AS latency_p95,
       job._hist_quantile(st.latency, 0.99) AS latency_p99,
       (SELECT count(*) FROM job.live_jobs l WHERE l.queue = d.queue AND l.state = 'running') AS in_flight,
       d.disabled_reason IS NOT NULL AS disabled
  FROM job.endpoint_stats st
  JOIN job.endpoint_defs d ON d.name = st.endpoint;
COMMENT ON VIEW job.endpoint_metrics IS 'Per endpoint since it was created: requests by status class, transport errors, transient and permanent failures, latency quantiles (seconds), requests in flight, disabled.';

COMMENT ON COLUMN job.endpoint_metrics.endpoint IS 'The endpoint''s name.';
COMMENT ON COLUMN job.endpoint_metrics.status_2xx IS 'Attempts answered with a 2xx status (delivered) since the endpoint was created; a count.';
COMMENT ON COLUMN job.endpoint_metrics.status_3xx IS 'Attempts answered with a 3xx status (redirects are not followed) since the endpoint was created; a count.';
COMMENT ON COLUMN job.endpoint_metrics.status_4xx IS 'Attempts answered with a 4xx status since the endpoint was created; a count.';
COMMENT ON COLUMN job.endpoint_metrics.status_5xx IS 'Attempts answered with a 5xx status, or any other status outside 200-499, since the endpoint was created; a count.';
COMMENT ON COLUMN job.endpoint_metrics.transport_errors IS 'Attempts that got no answer (timeout, refused or reset connection, DNS or TLS failure, refused address) since the endpoint was created; a count.';
COMMENT ON COLUMN job.endpoint_metrics.transient_failures IS 'Failed attempts to be retried (408, 409, 425, 429, 5xx, most transport errors) since the endpoint was created; a count.';
COMMENT ON COLUMN job.endpoint_metrics.permanent_failures IS 'Failed attempts whose delivery is dead at once (3xx, other 4xx, a refused address) since the endpoint was created; a count.';
COMMENT ON COLUMN job.endpoint_metrics.latency_p50 IS 'Median duration of a request, from its start to its answer or error, over every attempt since the endpoint was created, in seconds; NULL: no attempt yet.';
COMMENT ON COLUMN job.endpoint_metrics.latency_p95 IS '95th percentile of the duration of a request over every attempt since the endpoint was created, in seconds; NULL: no attempt yet.';
COMMENT ON COLUMN job.endpoint_metrics.latency_p99 IS '99th percentile of the duration of a request over every attempt since the endpoint was created, in seconds; NULL: no attempt yet.';
COMMENT ON COLUMN job.endpoint_metrics.in_flight IS 'Deliveries of its queue running now; a count.';
COMMENT ON COLUMN job.endpoint_metrics.disabled IS 'Whether the sender disabled the endpoint (410 Gone, or too many failed attempts in a row) until job.resume_endpoint.';

-- Raises 22023 unless a delivery payload (as job.deliver writes it: a "body" with "path",
-- "headers", "webhook_id") is fit for endpoint `e`: a path that stays under its URL, headers
-- that repeat none of the endpoint's nor name a reserved one, a webhook_id of the allowed
-- characters.  `what` prefixes the argument names ('' for job.deliver's own, 'payload.' for
-- a job.enqueue).  The sender checks them again before sending.
CREATE FUNCTION job._check_delivery(e job.endpoint_defs, payload jsonb, what text)
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
CREATE FUNCTION job._check_enqueued_delivery(queue_name text, payload jsonb, what text)
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
CREATE FUNCTION job.deliver(
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

COMMENT ON FUNCTION job.deliver(text, jsonb, text, text, text, jsonb, timestamptz, interval, int, text, text) IS 'Enqueues one HTTP request to an existing endpoint as a job of its queue and returns the job''s id: body is the JSON sent, path is appended to the endpoint''s URL, headers are added, event_type becomes the job type, idempotency_key the webhook-id.';

-- The claims of the last `within` on the queues of rate-limited endpoints, oldest first, as
-- seconds ago: a starting sender counts them into its rate windows, so that a restart cannot
-- start a second full window's worth of requests inside one second.  (A job's claimed_at is
-- its last attempt's claim, kept when it fails and moved to finished_jobs when it ends.)
CREATE FUNCTION job._recent_delivery_starts(within interval)
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

-- Whether the database needs a sender: it has an endpoint.
CREATE FUNCTION job._sender_wanted()
RETURNS boolean LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp AS $$
    SELECT EXISTS (SELECT 1 FROM job.endpoint_defs)
$$;

-- Claims up to `max_jobs` deliveries for the sender, from active endpoints in random order,
-- each within its concurrency (job._free_slots, as handler claims count it) and its rate
-- limit (the sender passes how many requests each
-- endpoint started in the last second: `recent_starts`, paired with `endpoints`).  Each row
-- is one request to make, with its endpoint's settings; `webhook_id` is the key the producer
-- chose, if any (the sender makes the id of it: src/delivery/mod.rs).  A job enqueued on an endpoint's queue
-- without job.deliver is posted with its payload as the body (unless that payload is an
-- object with a "body" key: then it is read as job.deliver writes it).
CREATE FUNCTION job._claim_deliveries(worker text, max_jobs int, endpoints text[], recent_starts int[])
RETURNS SETOF job._delivery_claim
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
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
        SELECT e.name AS endpoint, c.id AS job_id, c.lease_token AS token,
               (CASE WHEN envelope THEN c.payload -> 'body' ELSE c.payload END)::text AS body,
               CASE WHEN envelope THEN c.payload ->> 'path' END AS path,
               CASE WHEN envelope AND jsonb_typeof(c.payload -> 'headers') = 'object' THEN c.payload -> 'headers' END AS headers,
               CASE WHEN envelope THEN c.payload ->> 'webhook_id' END AS webhook_id,
               e.url, e.method, e.headers AS endpoint_headers, e.secrets,
               (extract(epoch FROM e.timeout) * 1000)::bigint AS timeout_ms, e.rate_limit
          FROM job.dequeue(e.queue, worker, wanted, e.timeout + interval '30 seconds') c
         CROSS JOIN LATERAL (SELECT jsonb_typeof(c.payload) = 'object' AND c.payload ? 'body' AS envelope) x;
        GET DIAGNOSTICS claimed = ROW_COUNT;
        remaining := remaining - claimed;
    END LOOP;
END $$;

-- Records what the sender's finished requests came to, in one transaction:
-- * `outcomes`, one per attempt: job_id, token, and either `result` (delivered: the job
--   completes with it) or `error`, `permanent`, `http_status`, `retry_after_ms` and `detail`
--   (the attempt's class, latency and webhook id, kept in the job's errors entry): the job
--   fails through job.fail's rules.  An attempt whose claim is no longer current changes
--   nothing.
-- * `stats`, one per endpoint: what to add to its counters, and whether it answered 410
--   Gone.  An endpoint that did, or that has failed `disable_after` times in a row, is
--   disabled (audited).
CREATE FUNCTION job._record_deliveries(outcomes job._delivery_outcome[], stats job._delivery_tally[], disable_after int)
RETURNS void LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    ids bigint[];
    tokens uuid[];
    results jsonb[];
    f record;
    gone record;
BEGIN
    SELECT array_agg(o.job_id), array_agg(o.token), array_agg(o.result)
      INTO ids, tokens, results
      FROM unnest(outcomes) o
     WHERE o.result IS NOT NULL;
    IF ids IS NOT NULL THEN
        PERFORM job._finish(ids, '{running}', 'completed', results, NULL, tokens);
    END IF;
    FOR f IN SELECT * FROM unnest(outcomes) o WHERE o.result IS NULL
    LOOP
        PERFORM job._fail_attempt(f.job_id, f.token, f.error, f.permanent, f.http_status,
                                  f.retry_after_ms * interval '1 millisecond', f.detail);
    END LOOP;

    UPDATE job.endpoint_stats st
       SET status_2xx = st.status_2xx + x.status_2xx, status_3xx = st.status_3xx + x.status_3xx,
           status_4xx = st.status_4xx + x.status_4xx, status_5xx = st.status_5xx + x.status_5xx,
           transport_errors = st.transport_errors + x.transport_errors,
           transient_failures = st.transient_failures + x.transient_failures,
           permanent_failures = st.permanent_failures + x.permanent_failures,
           latency = job._hist_add(st.latency, x.latency),
           latency_sum = st.latency_sum + x.latency_sum,
           consecutive_failures = CASE WHEN x.succeeded THEN x.failures_since_success
                                       ELSE st.consecutive_failures + x.failures_since_success END,
           last_status = coalesce(x.last_status, st.last_status),
           last_error = CASE WHEN x.failures_since_success > 0 THEN x.last_error ELSE NULL END,
           last_attempt_at = now()
      FROM unnest(stats) x
     WHERE st.endpoint = x.endpoint;

    FOR gone IN
        SELECT d.name, CASE WHEN x.gone THEN 'the endpoint answered 410 Gone'
                            ELSE format('%s consecutive failed attempts (pg_jobqueue.http_disable_after)', st.consecutive_failures)
                       END AS reason
          FROM unnest(stats) x
          JOIN job.endpoint_defs d ON d.name = x.endpoint AND d.disabled_reason IS NULL
          JOIN job.endpoint_stats st ON st.endpoint = d.name
         WHERE x.gone OR st.consecutive_failures >= disable_after
    LOOP
        UPDATE job.endpoint_defs d SET disabled_reason = gone.reason, disabled_at = now()
         WHERE d.name = gone.name;
        PERFORM job._audit('disable_endpoint', jsonb_build_object('name', gone.name, 'reason', gone.reason));
    END LOOP;
END $$;
