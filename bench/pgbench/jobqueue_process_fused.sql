-- Scenario 5, pg_jobqueue: one round trip and one commit per job.  Each call acknowledges the
-- job the previous call claimed (with that claim's lease token, as a worker should) and claims
-- the next.  The first call of each client completes id 0 with a zero token (run.sh passes
-- -D id=0 -D lease_token=0...0), which matches no job.  Each client ends holding one claimed
-- job, which run.sh counts.  \gset fails the client (and the run) if the claim returns no row.
SELECT id, lease_token
  FROM job.dequeue('bench', 'bench-worker', 1, '5 minutes',
                   complete => ARRAY[:id]::bigint[], complete_tokens => ARRAY[:lease_token]::uuid[]) \gset
