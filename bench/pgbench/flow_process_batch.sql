-- bench/flow.sh, batched: bench/run.sh's process_batch (jobqueue_process_batch.sql) on queue
-- :queue (-D queue=...): claim up to 100 jobs, then acknowledge them with complete_many and the
-- claim's lease token, in two autocommit transactions.  A claim that comes back empty (the
-- queue ran dry, or, in keyed_batch, every key at the front was at its limit or being claimed
-- by another client) looks again 1 ms later, as a woken worker would; flow.sh checks
-- afterwards that every claim of the other variants was full.
SELECT count(*) AS n, array_agg(id) AS ids, min(lease_token::text) AS token
  FROM job.dequeue(:queue, 'bench-worker', 100, '5 minutes') \gset
\if :n = 0
\sleep 1 ms
\else
SELECT job.complete_many(:ids::bigint[], ARRAY[:token::uuid]);
\endif
