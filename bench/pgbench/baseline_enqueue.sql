-- Scenario 1, baseline: one job per transaction.
INSERT INTO baseline_jobs (queue, payload) VALUES ('bench', '{"task": "send_email", "user_id": 42}') RETURNING id;
