-- Scenario 3, pg_jobqueue: claim one job, then acknowledge it with its claim's lease token (as a
-- worker should), in two autocommit transactions.
-- \gset fails the client (and the run) if the claim returns no row: the queue ran dry.
SELECT id, lease_token FROM job.dequeue('bench', 'bench-worker', 1, '5 minutes') \gset
SELECT job.complete(:id, NULL, :lease_token::uuid);
