-- Scenario 4, pg_jobqueue: claim 100 jobs, then acknowledge them with complete_many, in two
-- autocommit transactions.  An empty claim makes ids NULL, which complete_many rejects.
SELECT array_agg(id) AS ids FROM job.dequeue('bench', 'bench-worker', 100, '5 minutes') \gset
SELECT job.complete_many(:ids::bigint[]);
