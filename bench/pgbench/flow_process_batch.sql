-- bench/flow.sh, batched: bench/run.sh's process_batch (jobqueue_process_batch.sql) on queue
-- :queue (-D queue=...): claim up to 100 jobs, then acknowledge them with complete_many and the
-- claim's lease token, in two autocommit transactions.  An empty claim makes ids NULL, which
-- complete_many rejects; flow.sh checks afterwards that every claim was full.
SELECT array_agg(id) AS ids, min(lease_token::text) AS token
  FROM job.dequeue(:queue, 'bench-worker', 100, '5 minutes') \gset
SELECT job.complete_many(:ids::bigint[], ARRAY[:token::uuid]);
