-- bench/flow.sh, a rate limit that binds: single-job as in flow_process_one.sql, but a claim
-- the limit leaves empty is expected; the client then looks again 10 ms later, as a polling
-- worker would (one woken by the scheduler's notification would not need to).
SELECT count(*) AS n, min(id) AS id, min(lease_token::text) AS lease_token
  FROM job.dequeue(:queue, 'bench-worker', 1, '5 minutes') \gset
\if :n = 0
\sleep 10 ms
\else
SELECT job.complete(:id, NULL, :lease_token::uuid);
\endif
