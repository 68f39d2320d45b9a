-- pg_jobqueue background worker: its SQL-callable functions, implemented in Rust (src/worker/).

-- Raises unless the background worker can run (the library is preloaded); `what` names
-- the feature that needs it.
CREATE FUNCTION job._require_worker(what text)
RETURNS void LANGUAGE c STABLE
AS 'MODULE_PATHNAME', '_require_worker_wrapper';

-- Asks the launcher to serve this database once the current transaction commits.
CREATE FUNCTION job._request_service()
RETURNS void LANGUAGE c VOLATILE
AS 'MODULE_PATHNAME', '_request_service_wrapper';

-- Wakes this database's scheduler once the current transaction commits.
CREATE FUNCTION job._wake_scheduler()
RETURNS void LANGUAGE c VOLATILE
AS 'MODULE_PATHNAME', '_wake_scheduler_wrapper';

-- The background worker processes serving this database right now.
CREATE FUNCTION job.worker_processes(OUT pid int, OUT kind text)
RETURNS SETOF record LANGUAGE c VOLATILE
AS 'MODULE_PATHNAME', 'worker_processes_wrapper';

COMMENT ON FUNCTION job.worker_processes() IS
    'The pg_jobqueue background worker processes serving this database: scheduler and executors.';
