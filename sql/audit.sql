-- pg_jobqueue audit log: one row per manual intervention, written by the intervention itself.

CREATE FUNCTION job._audit(action text, arguments jsonb, jobs_touched bigint DEFAULT 0)
RETURNS void LANGUAGE sql
SET search_path = pg_catalog, pg_temp AS $$
    INSERT INTO job.audit_log (action, arguments, jobs_touched) VALUES (action, arguments, jobs_touched)
$$;

-- Deletes audit rows older than `older_than`, at most max_rows; returns how many.
CREATE FUNCTION job._prune_audit_log(older_than interval, max_rows int)
RETURNS int LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    pruned int;
BEGIN
    DELETE FROM job.audit_log a
     WHERE a.id IN (SELECT o.id FROM job.audit_log o WHERE o.at < now() - older_than
                     ORDER BY o.at LIMIT max_rows);
    GET DIAGNOSTICS pruned = ROW_COUNT;
    RETURN pruned;
END $$;
