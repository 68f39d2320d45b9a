-- Scenario 2, pg_jobqueue: 100 jobs per transaction with enqueue_many.
SELECT job.enqueue_many('bench',
    ARRAY(SELECT jsonb_build_object('task', 'send_email', 'user_id', g) FROM generate_series(1, 100) g));
