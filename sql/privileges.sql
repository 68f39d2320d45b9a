-- pg_jobqueue privileges, after every object.  See the README's "Roles" section for the GRANT
-- recipe of each duty (produce, work, monitor, administer).  Each function's own properties
-- (SECURITY DEFINER, the pinned search_path) are in its CREATE FUNCTION.

-- Nothing for PUBLIC by default: every duty is granted explicitly.
REVOKE ALL ON ALL TABLES IN SCHEMA job FROM PUBLIC;

REVOKE ALL ON ALL SEQUENCES IN SCHEMA job FROM PUBLIC;

REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA job FROM PUBLIC;

-- Pure helpers the views call (a view's caller needs EXECUTE on the functions it uses).
GRANT EXECUTE ON FUNCTION job._hist_of(float8), job._hist_add(bigint[], bigint[]),
                          job._hist_quantile(bigint[], float8), job._hist_sum(bigint[]),
                          job.cron_next(text, text, timestamptz) TO PUBLIC;
