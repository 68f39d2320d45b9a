-- pg_jobqueue walk-through, run by `make demo`.
\pset footer off
CREATE EXTENSION pg_jobqueue;

\echo '== A queue with 3 retries, backoff starting at 2 seconds'
SELECT job.create_queue('emails', max_retries => 3, backoff_base => '2 seconds');

\echo '== Enqueue in the same transaction as your own write: committed, so the job exists'
CREATE TABLE orders (id serial PRIMARY KEY, customer text);
BEGIN;
INSERT INTO orders (customer) VALUES ('ada');
SELECT job.enqueue('emails', '{"template": "order_confirmation", "order_id": 1}') AS committed_job;
COMMIT;

\echo '== A rolled-back order never sends its email'
BEGIN;
INSERT INTO orders (customer) VALUES ('bob');
SELECT job.enqueue('emails', '{"template": "order_confirmation", "order_id": 2}') AS rolled_back_job;
ROLLBACK;
SELECT count(*) AS jobs_for_order_2 FROM job.jobs WHERE payload ->> 'order_id' = '2';

\echo '== Idempotency: the same key within the window returns the same job'
SELECT job.enqueue('emails', '{"template": "welcome", "user_id": 7}', idempotency_key => 'welcome-7') AS first,
       job.enqueue('emails', '{"template": "welcome", "user_id": 7}', idempotency_key => 'welcome-7') AS again;

\echo '== A worker claims two jobs (FOR UPDATE SKIP LOCKED, 5-minute lease, one lease token for the claim)'
CREATE TEMP TABLE claim AS
SELECT id, payload, attempt, lease_expires_at, lease_token FROM job.dequeue('emails', worker => 'demo-worker', batch => 2);
SELECT id, payload, attempt, lease_expires_at FROM claim;

\echo '== One succeeds, one fails with a 503: retried after backoff (each call passes the claim''s token)'
SELECT job.complete(id, '{"delivered": true}', lease_token) AS completed
  FROM claim WHERE payload ->> 'template' = 'order_confirmation';
SELECT job.fail(id, 'SMTP server unavailable', http_status => 503, token => lease_token) AS new_state
  FROM claim WHERE payload ->> 'template' = 'welcome';
SELECT id, state, attempt, run_at - now() AS retry_in, errors -> 0 ->> 'error' AS last_error
  FROM job.jobs WHERE payload ->> 'template' = 'welcome';

\echo '== A stale token changes nothing: the claim that completed the job cannot complete it again'
SELECT job.complete(id, '{"again": true}', lease_token) AS completed_again
  FROM claim WHERE payload ->> 'template' = 'order_confirmation';

\echo '== A permanent failure (HTTP 404) goes straight to the dead-letter queue'
SELECT job.enqueue('emails', '{"template": "newsletter", "list": "gone"}') AS newsletter_job;
SELECT job.fail(id, 'list not found', http_status => 404, token => lease_token) AS new_state
  FROM job.dequeue('emails', worker => 'demo-worker');

\echo '== When a worker that cannot LISTEN should look next: the welcome email''s retry'
SELECT job.next_due('emails') - now() AS next_due_in;

\echo '== Queue at a glance'
SELECT * FROM job.queue_stats;

\echo '== Every job, every state'
SELECT id, state, attempt, payload ->> 'template' AS template, result, jsonb_array_length(errors) AS errors
  FROM job.jobs ORDER BY id;

\echo '== Inside the database: a SQL function handles the receipts queue'
SELECT job.create_queue('receipts', backoff_base => '1 second');
CREATE TABLE receipts (order_id int PRIMARY KEY, sent_at timestamptz NOT NULL DEFAULT now());
CREATE FUNCTION send_receipt(payload jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO receipts (order_id) VALUES ((payload ->> 'order_id')::int);
    RETURN jsonb_build_object('receipt_for', payload -> 'order_id');
END $$;
SELECT job.set_handler('receipts', 'send_receipt(jsonb)', concurrency => 2, timeout => '30 seconds');
SELECT job.enqueue('receipts', jsonb_build_object('order_id', id)) AS receipt_job FROM orders;

\echo '== Schedules: a report every 2 seconds, and a weekday digest at 07:00 New York time'
SELECT job.create_queue('reports');
CREATE TABLE reports (id serial PRIMARY KEY, kind text, made_at timestamptz NOT NULL DEFAULT now());
CREATE FUNCTION make_report(payload jsonb) RETURNS void LANGUAGE sql AS $$
    INSERT INTO reports (kind) VALUES (payload ->> 'kind')
$$;
SELECT job.set_handler('reports', 'make_report(jsonb)');
SELECT job.schedule('pulse', '*/2 * * * * *', 'reports', '{"kind": "pulse"}');
SELECT job.schedule('digest', '0 7 * * MON-FRI', 'reports', '{"kind": "digest"}',
                    timezone => 'America/New_York', jitter => '5 minutes');
SELECT name, cron, timezone, next_run, next_run_local FROM job.schedules ORDER BY name;

\echo '== Five seconds later: the worker fired the schedule and ran every job itself'
SELECT pg_sleep(5);
SELECT order_id, result FROM receipts JOIN job.jobs j ON (j.payload ->> 'order_id')::int = order_id
 WHERE j.queue = 'receipts';
SELECT schedule, tick, fired_at - due_at AS lateness, job_id FROM job.schedule_runs ORDER BY tick;
SELECT kind, count(*) AS reports FROM reports GROUP BY kind;
SELECT pid, kind FROM job.worker_processes() ORDER BY kind, pid;

\echo '== HTTP deliveries: the worker posts each one as a signed request (Standard Webhooks)'
-- `make demo` runs examples/webhook_receiver.py on this port with this secret.  The secret is
-- a DEMO VALUE, public (the base64 of "pg_jobqueue demo secret, public!"): never reuse it.
-- Leave out `secret` and pg_jobqueue makes one; job.endpoint_secret('name') hands it out.
\if :{?receiver_port}
\else
\set receiver_port 55437
\endif
\if :{?webhook_secret}
\else
\set webhook_secret 'whsec_cGdfam9icXVldWUgZGVtbyBzZWNyZXQsIHB1YmxpYyE='
\endif
SELECT job.create_queue('hooks', max_retries => 3, backoff_base => '1 second', jitter => 0);
SELECT job.create_endpoint('hooks', 'http://127.0.0.1:' || :'receiver_port' || '/hooks',
                           secret => :'webhook_secret', concurrency => 4);
SELECT name, url, method, concurrency, state FROM job.endpoints;

\echo '== Three deliveries: to /hooks/ok (200), /hooks/flaky (503 once, then 200), /hooks/missing (404)'
SELECT job.deliver('hooks', '{"order_id": 1, "status": "paid"}', event_type => 'order.paid', path => '/ok') AS ok,
       job.deliver('hooks', '{"order_id": 2, "status": "paid"}', event_type => 'order.paid', path => '/flaky') AS flaky,
       job.deliver('hooks', '{"order_id": 3, "status": "paid"}', event_type => 'order.paid', path => '/missing') AS missing;

\echo '== Waiting (10 s at most) until all three are finished: the 503 is retried after 1 second'
DO $$
BEGIN
    FOR i IN 1..100 LOOP
        EXIT WHEN NOT EXISTS (SELECT 1 FROM job.jobs
                               WHERE queue = 'hooks' AND state IN ('waiting', 'scheduled', 'running'));
        PERFORM pg_sleep(0.1);
    END LOOP;
END $$;
SELECT id, payload ->> 'path' AS path, state, attempt, result -> 'status' AS status,
       result ->> 'body' AS answer, jsonb_path_query_array(errors, '$[*].error') AS errors
  FROM job.jobs WHERE queue = 'hooks' ORDER BY id;

\echo '== The endpoint at a glance, and its metrics (latency in seconds)'
SELECT name, state, in_flight, consecutive_failures, last_status, last_error FROM job.endpoints;
SELECT endpoint, status_2xx, status_4xx, status_5xx, transient_failures, permanent_failures,
       round(latency_p50::numeric, 4) AS latency_p50, round(latency_p99::numeric, 4) AS latency_p99
  FROM job.endpoint_metrics;

\echo '== Flow control: one sync per customer at a time, and at most 3 at once'
SELECT job.create_queue('syncs', concurrency => 3, key_concurrency => 1);
SELECT count(job.enqueue('syncs', jsonb_build_object('customer', c, 'n', n), concurrency_key => 'customer-' || c))
       AS sync_jobs
  FROM generate_series(1, 4) c, generate_series(1, 2) n;
\echo 'A worker asks for 10 jobs and gets 3: one per customer, three at most'
SELECT id, payload ->> 'customer' AS customer FROM job.dequeue('syncs', 'demo-worker', 10) ORDER BY id;
\echo 'Another worker gets nothing until one of them finishes'
SELECT count(*) AS claimed FROM job.dequeue('syncs', 'demo-worker-2', 10);

\echo '== Singleton and debounce: a second enqueue of the same key returns the same job'
SELECT job.create_queue('reindex');
SELECT job.enqueue('reindex', '{"since": "09:00"}', singleton_key => 'search') AS first_call,
       job.enqueue('reindex', '{"since": "09:05"}', singleton_key => 'search') AS second_call_same_job;
SELECT job.enqueue('reindex', '{"unread": 1}', debounce_key => 'user-7', debounce => '5 seconds') AS debounced,
       job.enqueue('reindex', '{"unread": 2}', debounce_key => 'user-7', debounce => '5 seconds') AS same_job_later_start;
SELECT id, state, payload, singleton_key, debounce_key FROM job.jobs WHERE queue = 'reindex' ORDER BY id;
\echo '== A provider allows 2 calls a second: a claim of 10 gets 2, and the next waits for the window'
SELECT job.create_queue('provider', rate_limit => 2);
SELECT count(job.enqueue('provider', jsonb_build_object('call', n))) AS calls FROM generate_series(1, 5) n;
SELECT count(*) AS started FROM job.dequeue('provider', 'demo-worker', 10);
SELECT count(*) AS started_too_soon FROM job.dequeue('provider', 'demo-worker', 10);
SELECT job.next_due('provider') > now() AS next_start_is_later;
SELECT queue, concurrency, key_concurrency, rate_limit, rate_period, fair FROM job.queue_settings
 WHERE concurrency IS NOT NULL OR rate_limit IS NOT NULL;
