-- Scenario 3, pg_jobqueue: claim one job, then acknowledge it, in two autocommit transactions.
-- \gset fails the client (and the run) if the claim returns no row: the queue ran dry.
SELECT id FROM job.dequeue('bench', 'bench-worker', 1, '5 minutes') \gset
SELECT job.complete(:id);
