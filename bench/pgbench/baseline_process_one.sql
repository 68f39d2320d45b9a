-- Scenario 3, baseline: claim one job (its future run_at is the lease), then delete it, in two
-- autocommit transactions.  \gset fails the client if the claim returns no row.
WITH c AS (SELECT id FROM baseline_jobs
            WHERE queue = 'bench' AND run_at <= now()
            ORDER BY run_at, id LIMIT 1
            FOR UPDATE SKIP LOCKED)
UPDATE baseline_jobs b SET run_at = now() + interval '5 minutes', attempts = b.attempts + 1
  FROM c WHERE b.id = c.id
RETURNING b.id \gset
DELETE FROM baseline_jobs WHERE id = :id;
