-- pg_jobqueue privileges, after every object.  See the README's "Roles" section for the GRANT
-- recipe of each duty (produce, work, monitor, administer) and docs/design.md for the model.
-- Each function's own properties (SECURITY DEFINER, the pinned search_path) are in its
-- CREATE FUNCTION.
--
-- No role but the extension's owner holds any privilege on a table or sequence: every duty
-- works through functions (SECURITY DEFINER, so they act as the owner and do exactly what
-- they say) and reads through views.  Nothing that could run a role's own code as the owner
-- (a trigger, a rule, a forged handler row) can be attached to the tables by anyone else.

-- Nothing for PUBLIC: every duty is granted explicitly.
REVOKE ALL ON ALL TABLES IN SCHEMA job FROM PUBLIC;

REVOKE ALL ON ALL SEQUENCES IN SCHEMA job FROM PUBLIC;

REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA job FROM PUBLIC;

-- Pure helpers the views call (a view's caller needs EXECUTE on the functions it uses); they
-- read no table.  cron_next previews a schedule expression; verify_webhook checks a
-- signature for a receiver; _redacted_url hides the path and query of job.endpoints' URLs.
GRANT EXECUTE ON FUNCTION job._hist_of(float8), job._hist_add(bigint[], bigint[]),
                          job._hist_quantile(bigint[], float8), job._hist_sum(bigint[]),
                          job._redacted_url(text),
                          job.cron_next(text, text, timestamptz),
                          job.verify_webhook(text, text, text, text, text, interval) TO PUBLIC;
