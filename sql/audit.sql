-- pg_jobqueue audit log: one row per manual intervention, written by the intervention itself.
-- The table takes no privilege from anyone: the administrative functions write it (they run
-- as the extension's owner), and roles read it through the job.audit_log view.

-- Records an intervention.  `role` is the session's current role when it called: the role it
-- logged in as, or the one it chose with SET ROLE.  Inside the extension's SECURITY DEFINER
-- functions current_user is the extension's owner, so it is read from the session
-- (job._calling_role, in Rust) instead: the role the client acts as is the one accountable,
-- whatever function of another role may stand between it and the call.
CREATE FUNCTION job._audit(action text, arguments jsonb, jobs_touched bigint DEFAULT 0)
RETURNS void LANGUAGE sql
SET search_path = pg_catalog, pg_temp AS $$
    INSERT INTO job.audit_entries (role, session_role, action, arguments, jobs_touched)
    VALUES (job._calling_role(), session_user, action, arguments, jobs_touched)
$$;

-- Deletes audit rows older than `older_than`, at most max_rows; returns how many.
CREATE FUNCTION job._prune_audit_log(older_than interval, max_rows int)
RETURNS int LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    pruned int;
BEGIN
    -- ARRAY(...): the ids are read once, then deleted by primary key, whatever plan is cached
    -- (an `IN` sub-select may be planned as a nested loop over the table: see apply_retention).
    DELETE FROM job.audit_entries a
     WHERE a.id = ANY (ARRAY(SELECT o.id FROM job.audit_entries o WHERE o.at < now() - older_than
                              ORDER BY o.at LIMIT max_rows));
    GET DIAGNOSTICS pruned = ROW_COUNT;
    RETURN pruned;
END $$;

CREATE VIEW job.audit_log AS
SELECT a.id, a.at, a.role, a.session_role, a.action, a.arguments, a.jobs_touched
  FROM job.audit_entries a;
COMMENT ON VIEW job.audit_log IS 'Manual interventions: who (the session''s role and login role), when, what (action and arguments), how many jobs it touched.';

COMMENT ON COLUMN job.audit_log.id IS 'The entry''s number, drawn as entries are written.';
COMMENT ON COLUMN job.audit_log.at IS 'When the intervention ran (clock time as it wrote the entry).';
COMMENT ON COLUMN job.audit_log.role IS 'The session''s current role at the call (its login role, or the one it chose with SET ROLE): the one accountable.';
COMMENT ON COLUMN job.audit_log.session_role IS 'The role the session logged in as.';
COMMENT ON COLUMN job.audit_log.action IS 'What was done, named after the function (create_queue, alter_queue, cancel, retry_dead, schedule, read_endpoint_secret, ...), or disable_endpoint when the sender disabled one.';
COMMENT ON COLUMN job.audit_log.arguments IS 'The call''s arguments as a JSON object (alter_queue: the settings before and after); never a secret or a header value.';
COMMENT ON COLUMN job.audit_log.jobs_touched IS 'How many jobs the intervention changed or deleted; a count.';
