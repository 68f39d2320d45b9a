-- Scenario 4, baseline: claim 100 jobs the same way as one, then delete them, in two
-- autocommit transactions.  (run.sh checks afterwards that every batch was full.)
WITH c AS (SELECT id FROM baseline_jobs
            WHERE queue = 'bench' AND run_at <= now()
            ORDER BY run_at, id LIMIT 100
            FOR UPDATE SKIP LOCKED),
     u AS (UPDATE baseline_jobs b SET run_at = now() + interval '5 minutes', attempts = b.attempts + 1
             FROM c WHERE b.id = c.id
           RETURNING b.id)
SELECT array_agg(id) AS ids FROM u \gset
DELETE FROM baseline_jobs WHERE id = ANY (:ids::bigint[]);
