-- Scenario 2, baseline: 100 jobs per transaction with one INSERT ... SELECT.
INSERT INTO baseline_jobs (queue, payload)
SELECT 'bench', jsonb_build_object('task', 'send_email', 'user_id', g) FROM generate_series(1, 100) g
RETURNING id;
