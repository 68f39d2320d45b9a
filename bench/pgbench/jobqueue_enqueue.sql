-- Scenario 1, pg_jobqueue: one job per transaction.
SELECT job.enqueue('bench', '{"task": "send_email", "user_id": 42}');
