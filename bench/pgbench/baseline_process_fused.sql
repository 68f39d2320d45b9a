-- Scenario 5, baseline: the same its best way, one statement (one round trip, one commit) per
-- job: delete the job the previous statement claimed, and claim the next as in scenario 3.
-- The first statement of each client deletes id 0 (run.sh passes -D id=0), which is no job.
-- Both parts see the same snapshot; the claimed job's future run_at keeps the claim away from
-- it anyway.  \gset fails the client if the claim returns no row.
WITH done AS (DELETE FROM baseline_jobs WHERE id = :id),
     c AS (SELECT id FROM baseline_jobs
            WHERE queue = 'bench' AND run_at <= now()
            ORDER BY run_at, id LIMIT 1
            FOR UPDATE SKIP LOCKED)
UPDATE baseline_jobs b SET run_at = now() + interval '5 minutes', attempts = b.attempts + 1
  FROM c WHERE b.id = c.id
RETURNING b.id \gset
