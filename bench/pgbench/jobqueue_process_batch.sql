-- Scenario 4, pg_jobqueue: claim 100 jobs, then acknowledge them with complete_many and the
-- claim's lease token (one per dequeue), in two autocommit transactions.  An empty claim makes
-- ids NULL, which complete_many rejects.
SELECT array_agg(id) AS ids, min(lease_token::text) AS token
  FROM job.dequeue('bench', 'bench-worker', 100, '5 minutes') \gset
SELECT job.complete_many(:ids::bigint[], ARRAY[:token::uuid]);
