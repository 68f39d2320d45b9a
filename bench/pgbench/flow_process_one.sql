-- bench/flow.sh, single-job: bench/run.sh's process_one (jobqueue_process_one.sql) on queue
-- :queue (-D queue=...): claim one job, then acknowledge it with its claim's lease token, in
-- two autocommit transactions.  \gset fails the client (and the run) if the claim returns no
-- row: the queue ran dry, or a limit held every waiting job back.
SELECT id, lease_token FROM job.dequeue(:queue, 'bench-worker', 1, '5 minutes') \gset
SELECT job.complete(:id, NULL, :lease_token::uuid);
