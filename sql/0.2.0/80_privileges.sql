-- pg_jobqueue 0.2.0, after every object: privileges.  See the README's "Roles" section for
-- the GRANT recipe of each duty (produce, work, monitor, administer).

-- Nothing for PUBLIC by default: every duty is granted explicitly.
REVOKE ALL ON ALL TABLES IN SCHEMA job FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA job FROM PUBLIC;
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA job FROM PUBLIC;
-- Pure helpers the views call (a view's caller needs EXECUTE on the functions it uses).
GRANT EXECUTE ON FUNCTION job._hist_of(float8), job._hist_add(bigint[], bigint[]),
                          job._hist_quantile(bigint[], float8), job._hist_sum(bigint[]),
                          job.cron_next(text, text, timestamptz) TO PUBLIC;

-- Producing, working and reading metrics run as the extension's owner, so producer, worker
-- and monitor roles need EXECUTE on these functions and nothing on the tables: they can do
-- exactly what the functions do.  Administration runs as the caller (an administrator holds
-- the table privileges), which is also the role the audit log records.
ALTER FUNCTION job.enqueue(text, jsonb, timestamptz, interval, int, text, int, text) SECURITY DEFINER;
ALTER FUNCTION job.enqueue_many(text, jsonb[], int, text) SECURITY DEFINER;
ALTER FUNCTION job.dequeue(text, text, int, interval) SECURITY DEFINER;
ALTER FUNCTION job.complete(bigint, jsonb) SECURITY DEFINER;
ALTER FUNCTION job.complete_many(bigint[]) SECURITY DEFINER;
ALTER FUNCTION job.fail(bigint, text, boolean, int, interval) SECURITY DEFINER;
ALTER FUNCTION job.heartbeat(bigint, interval) SECURITY DEFINER;
ALTER FUNCTION job.prometheus_metrics() SECURITY DEFINER;

-- Every SQL and PL/pgSQL function resolves names with a fixed search_path, so a caller's
-- search_path cannot slip its own functions or operators into ours (which matters most for
-- the SECURITY DEFINER ones).  Temporary objects come last, never first.
DO $$
DECLARE
    fn regprocedure;
BEGIN
    FOR fn IN SELECT p.oid FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_language l ON l.oid = p.prolang
               WHERE p.pronamespace = 'job'::regnamespace AND p.prokind = 'f'
                 AND l.lanname IN ('sql', 'plpgsql')
    LOOP
        EXECUTE format('ALTER FUNCTION %s SET search_path = pg_catalog, pg_temp', fn);
    END LOOP;
END $$;
