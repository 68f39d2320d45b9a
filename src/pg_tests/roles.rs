//! `#[pg_test]`s of roles: what each duty can and cannot do; search_path and quoting attacks.

#[pgrx::pg_schema]
mod tests {
    use crate::pg_tests::support::*;
    use pgrx::prelude::*;

    /// The README's GRANT recipes, exactly as written there, with the roles renamed.
    pub fn readme_recipes() -> String {
        let readme = include_str!("../../README.md");
        let start = readme
            .find("<!-- recipes: begin -->")
            .expect("README has the recipes");
        let block = &readme[start..];
        let sql = &block[block.find("```sql\n").expect("a sql block") + 7..];
        sql[..sql.find("```").expect("the block ends")]
            .replace("app_producer", "jq_producer")
            .replace("app_worker", "jq_worker")
            .replace("jobs_monitor", "jq_monitor")
            .replace("jobs_admin", "jq_admin")
    }

    fn create_duty_roles() {
        for role in [
            "jq_producer",
            "jq_worker",
            "jq_monitor",
            "jq_admin",
            "jq_nobody",
        ] {
            run(&format!("CREATE ROLE {role}"));
        }
        run(&readme_recipes());
    }

    /// Runs `query` as `role`; returns its error message, or None when it succeeded.
    fn as_role(role: &str, query: &str) -> Option<String> {
        run(&format!("SET LOCAL ROLE {role}"));
        let quoted = query.replace('\'', "''");
        let outcome =
            Spi::get_one::<String>(&format!("SELECT pg_temp.error_of('{quoted}')")).unwrap();
        run("RESET ROLE");
        outcome.map(|e| e[6..].to_owned())
    }

    #[pg_test]
    fn each_duty_can_do_its_part_and_nothing_more() {
        error_of("SELECT 1/0"); // creates pg_temp.error_of as the superuser
        create_duty_roles();
        queue("q");
        let denied = |role: &str, query: &str| {
            let error = as_role(role, query).unwrap_or_else(|| panic!("{role} may run {query}"));
            assert!(
                error.starts_with("permission denied"),
                "{role}: {query}: {error}"
            );
        };
        let allowed = |role: &str, query: &str| {
            assert_eq!(as_role(role, query), None, "{role}: {query}");
        };
        allowed("jq_producer", "SELECT job.enqueue('q', '{\"n\": 1}')");
        allowed(
            "jq_producer",
            "SELECT job.enqueue_many('q', ARRAY['{}']::jsonb[])",
        );
        for query in [
            "SELECT job.dequeue('q')",
            "SELECT job.complete(1)",
            "SELECT job.fail(1, 'x')",
            "SELECT job.create_queue('q2')",
            "SELECT job.pause_queue('q')",
            "SELECT job.cancel(1)",
            "SELECT job.retry(1)",
            "SELECT job.purge('q', 'dead', '0')",
            "SELECT job.schedule('s', '@daily', 'q')",
            "SELECT * FROM job.jobs",
            "SELECT * FROM job.live_jobs",
            "DELETE FROM job.live_jobs",
            "UPDATE job.live_jobs SET state = 'running'",
            "SELECT job.prometheus_metrics()",
            "SELECT job._finish(ARRAY[1::bigint], '{running}', 'completed')",
        ] {
            denied("jq_producer", query);
        }
        allowed("jq_worker", "SELECT job.dequeue('q', 'w')");
        allowed(
            "jq_worker",
            "SELECT job.complete(id, NULL, lease_token) FROM job.dequeue('q', 'w')",
        );
        allowed("jq_worker", "SELECT job.next_due('q')");
        allowed("jq_worker", "SELECT job.queue_id('q')");
        for query in [
            "SELECT job.enqueue('q')",
            "SELECT job.cancel(1)",
            "SELECT job.retry_dead('q')",
            "SELECT job.drop_queue('q', true)",
            "SELECT job.set_handler('q', 'pg_catalog.jsonb_typeof(jsonb)')",
            "UPDATE job.queues SET paused = true",
            "SELECT * FROM job.jobs",
        ] {
            denied("jq_worker", query);
        }
        allowed("jq_monitor", "SELECT count(*) FROM job.jobs");
        allowed("jq_monitor", "SELECT count(*) FROM job.metrics");
        allowed("jq_monitor", "SELECT count(*) FROM job.queue_metrics");
        allowed("jq_monitor", "SELECT count(*) FROM job.audit_log");
        allowed("jq_monitor", "SELECT count(*) FROM job.handlers");
        allowed("jq_monitor", "SELECT job.prometheus_metrics()");
        for query in [
            "SELECT job.enqueue('q')",
            "SELECT job.dequeue('q')",
            "SELECT job.retry_dead('q')",
            "DELETE FROM job.audit_entries",
            "INSERT INTO job.audit_log (action, arguments) VALUES ('forged', '{}')",
            "INSERT INTO job.queues (name) VALUES ('x')",
        ] {
            denied("jq_monitor", query);
        }
        for query in [
            "SELECT job.enqueue('q')",
            "SELECT count(*) FROM job.jobs",
            "SELECT job.cron_next('@daily')",
        ] {
            denied("jq_nobody", query);
        }
        allowed("jq_admin", "SELECT job.pause_queue('q')");
        allowed("jq_admin", "SELECT job.retry_dead('q')");
        allowed("jq_admin", "SELECT job.purge('q', 'dead', '0')");
        allowed("jq_admin", "SELECT count(*) FROM job.audit_log");
        for query in [
            "DELETE FROM job.audit_entries",
            "INSERT INTO job.audit_entries (role, session_role, action, arguments) VALUES ('x', 'x', 'forged', '{}')",
            "UPDATE job.queues SET paused = true",
            "INSERT INTO job.handler_defs (queue, handler, run_as, concurrency, timeout, set_by)
             VALUES ('q', 'pg_catalog.jsonb_typeof(jsonb)', 'postgres', 1, '1 minute', 'postgres')",
            "CREATE TRIGGER z BEFORE INSERT ON job.live_jobs FOR EACH ROW EXECUTE FUNCTION pg_catalog.suppress_redundant_updates_trigger()",
            "SELECT job.dequeue('q')",
            "SELECT job.enqueue('q')",
        ] {
            denied("jq_admin", query);
        }
        assert_eq!(
            one::<String>("SELECT string_agg(DISTINCT role || '/' || session_role, ',') FROM job.audit_log WHERE action <> 'create_queue'"),
            format!("jq_admin/{}", one::<String>("SELECT session_user::text"))
        );
    }

    #[pg_test]
    fn no_recipe_grants_a_table_sequence_or_trigger_privilege() {
        create_duty_roles();
        let roles = "'jq_producer', 'jq_worker', 'jq_monitor', 'jq_admin'";
        // On relations: only SELECT, and only on views.
        assert_eq!(
            one::<String>(&format!(
                "SELECT coalesce(string_agg(r.rolname || ' ' || a.privilege_type || ' ' || c.relname || ' ' || c.relkind::text, ', '), 'none')
                   FROM pg_class c, aclexplode(c.relacl) a JOIN pg_roles r ON r.oid = a.grantee
                  WHERE c.relnamespace = 'job'::regnamespace AND r.rolname IN ({roles})
                    AND (c.relkind <> 'v' OR a.privilege_type <> 'SELECT')"
            )),
            "none"
        );
        // On functions: EXECUTE, and never on an internal one.
        assert_eq!(
            one::<String>(&format!(
                "SELECT coalesce(string_agg(r.rolname || ' ' || p.proname, ', '), 'none')
                   FROM pg_proc p, aclexplode(p.proacl) a JOIN pg_roles r ON r.oid = a.grantee
                  WHERE p.pronamespace = 'job'::regnamespace AND r.rolname IN ({roles})
                    AND (p.proname LIKE '\\_%' OR a.privilege_type <> 'EXECUTE')"
            )),
            "none"
        );
        // Nothing but the owner holds a privilege on a table or sequence; PUBLIC executes only
        // the pure helpers.
        assert_eq!(
            one::<String>(
                "SELECT coalesce(string_agg(c.relname, ', '), 'none')
                   FROM pg_class c, aclexplode(c.relacl) a
                  WHERE c.relnamespace = 'job'::regnamespace AND c.relkind IN ('r', 'p', 'S')
                    AND a.grantee <> c.relowner"
            ),
            "none"
        );
        assert_eq!(
            one::<String>(
                "SELECT string_agg(p.proname, ',' ORDER BY p.proname)
                   FROM pg_proc p, aclexplode(p.proacl) a
                  WHERE p.pronamespace = 'job'::regnamespace AND a.grantee = 0"
            ),
            "_hist_add,_hist_of,_hist_quantile,_hist_sum,_redacted_url,cron_next,verify_webhook"
        );
    }

    #[pg_test]
    fn every_function_pins_its_search_path() {
        assert_eq!(
            one::<i64>("SELECT count(*) FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
                         WHERE p.pronamespace = 'job'::regnamespace AND p.prokind = 'f'
                           AND l.lanname IN ('sql', 'plpgsql')
                           AND NOT coalesce(p.proconfig, '{}') @> '{\"search_path=pg_catalog, pg_temp\"}'"),
            0
        );
        // Every public SQL function acts as the owner; internal ones are called only from
        // those (or by the worker) and are executable by nobody else.
        assert_eq!(
            one::<String>(
                "SELECT coalesce(string_agg(p.proname, ',' ORDER BY p.proname), 'none')
                   FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
                  WHERE p.pronamespace = 'job'::regnamespace AND l.lanname IN ('sql', 'plpgsql')
                    AND p.proname NOT LIKE '\\_%' AND NOT p.prosecdef"
            ),
            "none"
        );
    }

    #[pg_test]
    fn a_hostile_search_path_name_or_payload_gains_nothing() {
        error_of("SELECT 1/0");
        create_duty_roles();
        queue("q");
        // A producer who owns a schema puts look-alikes of what enqueue calls first on its path.
        run("CREATE SCHEMA evil AUTHORIZATION jq_producer");
        run("CREATE TABLE public.trap (who text)");
        run("GRANT INSERT ON public.trap TO PUBLIC");
        run("SET LOCAL ROLE jq_producer");
        for sql in [
            "CREATE FUNCTION evil.now() RETURNS timestamptz LANGUAGE sql AS
               $$ INSERT INTO public.trap VALUES (current_user) RETURNING pg_catalog.now() $$",
            "CREATE FUNCTION evil.jsonb_typeof(jsonb) RETURNS text LANGUAGE sql AS
               $$ INSERT INTO public.trap VALUES (current_user) RETURNING 'object' $$",
            "CREATE FUNCTION evil.nextval(regclass) RETURNS bigint LANGUAGE sql AS
               $$ INSERT INTO public.trap VALUES (current_user) RETURNING 1::bigint $$",
            "CREATE FUNCTION evil.eq(text, text) RETURNS boolean LANGUAGE sql AS
               $$ INSERT INTO public.trap VALUES (current_user) RETURNING true $$",
            "CREATE OPERATOR evil.= (LEFTARG = text, RIGHTARG = text, FUNCTION = evil.eq)",
            "SET LOCAL search_path = evil, pg_catalog",
        ] {
            run(sql);
        }
        let id =
            one::<i64>("SELECT job.enqueue('q', '{\"sql\": \"''); DROP TABLE job.queues; --\"}')");
        run("RESET search_path");
        run("RESET ROLE");
        assert_eq!(one::<i64>("SELECT count(*) FROM public.trap"), 0);
        assert_eq!(
            one::<String>(&format!(
                "SELECT payload ->> 'sql' FROM job.jobs WHERE id = {id}"
            )),
            "'); DROP TABLE job.queues; --"
        );
        // Names are data too, in every function that takes one.
        let name = "x'); DROP TABLE job.queues; --";
        let quoted = name.replace('\'', "''");
        run(&format!("SELECT job.create_queue('{quoted}')"));
        run(&format!("SELECT job.enqueue('{quoted}')"));
        run(&format!(
            "SELECT job.schedule('{quoted}', '@daily', '{quoted}')"
        ));
        run(&format!("SELECT job.pause_queue('{quoted}')"));
        run("SELECT job._count_queue_depth()");
        assert!(one::<String>("SELECT job.prometheus_metrics()")
            .contains("queue=\"x'); DROP TABLE job.queues; --\""));
        assert_eq!(
            one::<i64>(&format!(
                "SELECT count(*) FROM job.queues WHERE name IN ('q', '{quoted}')"
            )),
            2
        );
    }

    #[pg_test]
    fn past_minutes_merge_their_writer_shards() {
        run("SELECT job.create_queue('c')");
        run("INSERT INTO job.metric_buckets
             SELECT date_trunc('minute', now()) - interval '5 minutes', 'c', '', s, 2, 1, 0, 0,
                    job._hist_add(job._hist_of(0.5), job._hist_of(2)), 2.5, job._hist_of(0.1), 0.1
               FROM generate_series(0, 3) s");
        run("INSERT INTO job.metric_buckets
             SELECT date_trunc('minute', now()), 'c', '', 0, 1, 0, 0, 0, job._hist_of(1), 1, job._hist_of(1), 1");
        assert_eq!(one::<i32>("SELECT job._compact_metric_buckets(1000)"), 4);
        assert_eq!(
            one::<String>("SELECT string_agg(concat_ws(' ', shard, completed, failed, processing_sum,
                                                       (SELECT sum(c) FROM unnest(processing) c)), ',' ORDER BY bucket)
                             FROM job.metric_buckets"),
            "-1 8 4 10 8,0 1 0 1 1"
        );
        assert_eq!(one::<i32>("SELECT job._compact_metric_buckets(1000)"), 0);
    }
}
