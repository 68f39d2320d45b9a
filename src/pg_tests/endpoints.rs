//! `#[pg_test]`s of HTTP endpoints and deliveries: what create_endpoint and deliver accept and
//! refuse, where secrets go (and do not), what the sender's claim hands out, and how its
//! recorded outcomes change jobs and endpoints.  The requests themselves are sent in the
//! integration tests (tests/integration/tests/deliveries.rs).

#[pgrx::pg_schema]
mod tests {
    use crate::delivery::outcome::{DeliveryOutcome, EndpointTally};
    use crate::delivery::rows::{claim_deliveries, record_deliveries, DeliveryClaim};
    use crate::pg_tests::support::*;
    use pgrx::prelude::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn endpoint(name: &str) {
        run(&format!(
            "SELECT job.create_endpoint('{name}', 'https://hooks.example.com/in',
                    headers => '{{\"authorization\": \"Bearer tok-123\"}}', secret => '{SECRET}')"
        ));
    }

    #[pg_test]
    fn create_endpoint_makes_its_queue_and_keeps_secrets_out_of_every_view() {
        endpoint("billing");
        assert_eq!(
            one::<String>(
                "SELECT concat_ws(',', name, url, method, queue, header_names::text, timeout, concurrency,
                                  coalesce(rate_limit::text, '-'), state, in_flight)
                   FROM job.endpoints"
            ),
            "billing,https://hooks.example.com/…,POST,billing,{authorization},00:00:30,16,-,active,0"
        );
        assert!(one::<bool>(
            "SELECT EXISTS (SELECT 1 FROM job.queues WHERE name = 'billing')"
        ));
        assert_eq!(
            one::<String>("SELECT job.endpoint_secret('billing')"),
            SECRET
        );
        assert_eq!(
            one::<String>("SELECT job.endpoint_headers('billing')::text"),
            r#"{"authorization": "Bearer tok-123"}"#
        );
        // Neither the secret nor the header's value shows in a view or the audit log.
        for view in [
            "job.endpoints",
            "job.endpoint_metrics",
            "job.audit_log",
            "job.queues",
            "job.jobs",
        ] {
            let text = one::<String>(&format!(
                "SELECT coalesce(string_agg(v::text, ' '), '') FROM {view} v"
            ));
            assert!(
                !text.contains("MfKQ9r8") && !text.contains("tok-123"),
                "{view}: {text}"
            );
        }
        // Reading them is audited.
        assert_eq!(
            one::<i64>("SELECT count(*) FROM job.audit_log WHERE action IN ('read_endpoint_secret', 'read_endpoint_headers')"),
            2
        );
    }

    #[pg_test]
    fn a_new_endpoint_gets_a_fresh_secret_and_an_update_keeps_it() {
        run("SELECT job.create_endpoint('a', 'https://a.example.com')");
        run("SELECT job.create_endpoint('b', 'https://b.example.com')");
        let a = one::<String>("SELECT job.endpoint_secret('a')");
        assert!(a.starts_with("whsec_") && a.len() == 6 + 44, "{a}");
        assert_ne!(a, one::<String>("SELECT job.endpoint_secret('b')"));
        run("SELECT job.create_endpoint('a', 'https://a.example.com/v2', concurrency => 4)");
        assert_eq!(one::<String>("SELECT job.endpoint_secret('a')"), a);
        assert_eq!(
            one::<String>("SELECT url || ' ' || concurrency FROM job.endpoints WHERE name = 'a'"),
            "https://a.example.com/… 4"
        );
        // A rotation keeps the old secret for the overlap, and the view says so.
        let new = one::<String>("SELECT job.rotate_endpoint_secret('a', '1 hour')");
        assert_ne!(new, a);
        assert_eq!(one::<String>("SELECT job.endpoint_secret('a')"), new);
        assert!(one::<bool>(
            "SELECT rotating_secret FROM job.endpoints WHERE name = 'a'"
        ));
        // Requests carry both signatures until the overlap ends.
        run("SELECT job.deliver('a', '{}')");
        assert_eq!(
            one::<String>("SELECT array_to_string(secrets, ' ') FROM job._claim_deliveries('t', 1, '{}', '{}')"),
            format!("{new} {a}")
        );
    }

    #[pg_test]
    fn create_endpoint_refuses_bad_input_and_changes_nothing() {
        endpoint("ok");
        run("CREATE FUNCTION public.handle(p jsonb) RETURNS void LANGUAGE sql AS ''");
        queue("handled");
        run("SELECT job.set_handler('handled', 'handle(jsonb)')");
        for (call, state, message) in [
            ("SELECT job.create_endpoint('x', 'ftp://example.com')", "22023", "url must be http or https, not ftp"),
            ("SELECT job.create_endpoint('x', 'https://u:p@example.com')", "22023",
             "url must not hold credentials (send them in a header: they would be shown in job.endpoints)"),
            ("SELECT job.create_endpoint('x', 'example.com')", "22023", "url is not a URL (relative URL without a base)"),
            ("SELECT job.create_endpoint('x', NULL)", "22004", "url must not be NULL"),
            ("SELECT job.create_endpoint('x', 'https://example.com', method => 'GET')", "22023",
             "method must be one of POST, PUT, PATCH, DELETE, got \"GET\""),
            ("SELECT job.create_endpoint('x', 'https://example.com', headers => '[1]')", "22023",
             "headers must be a JSON object of header names and string values"),
            ("SELECT job.create_endpoint('x', 'https://example.com', headers => '{\"webhook-id\": \"1\"}')", "22023",
             "headers: header \"webhook-id\" is reserved (set by pg_jobqueue itself, hop-by-hop, or read by proxies as the request's route)"),
            ("SELECT job.create_endpoint('x', 'https://example.com', headers => '{\"a\": 1}')", "22023",
             "headers: the value of header \"a\" must be a string"),
            ("SELECT job.create_endpoint('x', 'https://example.com', secret => 'hunter2')", "22023",
             "secret: a webhook secret starts with \"whsec_\" followed by base64"),
            ("SELECT job.create_endpoint('x', 'https://example.com', secret => 'whsec_AAAA')", "22023",
             "secret: a webhook secret's key must be 24 to 64 bytes, this one has 3"),
            ("SELECT job.create_endpoint('x', 'https://example.com', timeout => '2 hours')", "22023",
             "timeout must be at most 1 hour, got 02:00:00"),
            ("SELECT job.create_endpoint('x', 'https://example.com', concurrency => 0)", "22023",
             "concurrency must be between 1 and 1000, got 0"),
            ("SELECT job.create_endpoint('x', 'https://example.com', rate_limit => 0)", "22023",
             "rate_limit must be between 1 and 100000 requests per second (or NULL for none), got 0"),
            ("SELECT job.create_endpoint('x', 'https://example.com', queue => 'handled')", "55006",
             "queue 'handled' has a handler, so it cannot be an endpoint's queue"),
            ("SELECT job.create_endpoint('x', 'https://example.com', queue => 'ok')", "55006",
             "queue 'ok' is already the queue of endpoint 'ok'"),
            ("SELECT job.endpoint_secret('nope')", "42704", "endpoint 'nope' does not exist"),
        ] {
            assert_rejected_with(call, state, message);
        }
    }

    #[pg_test]
    fn deliver_enqueues_an_envelope_and_refuses_what_would_leave_the_endpoint() {
        endpoint("hooks");
        let id = one::<i64>(
            "SELECT job.deliver('hooks', '{\"order\": 7}', event_type => 'order.paid', path => '/orders/7',
                                headers => '{\"x-tenant\": \"42\"}', idempotency_key => 'order-7')",
        );
        assert_eq!(
            one::<String>(&format!("SELECT concat_ws(' ', queue, job_type, state, payload::text) FROM job.jobs WHERE id = {id}")),
            r#"hooks order.paid waiting {"body": {"order": 7}, "path": "/orders/7", "headers": {"x-tenant": "42"}, "webhook_id": "order-7"}"#
        );
        // The same key within the window: the same job.
        assert_eq!(
            one::<i64>("SELECT job.deliver('hooks', '{}', idempotency_key => 'order-7')"),
            id
        );
        for (call, message) in [
            ("SELECT job.deliver('hooks', '{}', path => '@evil.example/x')", "path must start with \"/\" or \"?\""),
            ("SELECT job.deliver('hooks', '{}', path => '//evil.example/x')", "path must not start with \"//\""),
            ("SELECT job.deliver('hooks', '{}', path => '/a b')",
             "path must not contain whitespace, control characters, \"\\\" or \"#\""),
            ("SELECT job.deliver('hooks', '{}', headers => '{\"Host\": \"evil\"}')",
             "headers: header \"Host\" is reserved (set by pg_jobqueue itself, hop-by-hop, or read by proxies as the request's route)"),
            ("SELECT job.deliver('hooks', '{}', headers => '{\"webhook-signature\": \"v1,x\"}')",
             "headers: header \"webhook-signature\" is reserved (set by pg_jobqueue itself, hop-by-hop, or read by proxies as the request's route)"),
            ("SELECT job.deliver('hooks', '{}', headers => '{\"x\": \"a\\nb\"}')",
             "headers: the value of header \"x\" must be visible ASCII text without line breaks"),
            ("SELECT job.deliver('hooks', '{}', idempotency_key => E'k\\n2')",
             "idempotency_key may hold only letters, digits, \"-\", \"_\", \".\", \":\" and \"~\""),
        ] {
            assert_rejected_with(call, "22023", message);
        }
        assert_rejected_with(
            "SELECT job.deliver('hooks', NULL)",
            "22004",
            "body must not be NULL",
        );
        assert_rejected_with(
            "SELECT job.deliver('nowhere', '{}')",
            "42704",
            "endpoint 'nowhere' does not exist",
        );
    }

    /// Issue 19, items 1, 4 and 5: what a producer gives job.deliver, or job.enqueue on the
    /// endpoint's queue, cannot leave the endpoint's URL, repeat or add sensitive headers, or
    /// take another delivery's webhook-id; nothing is enqueued.
    #[pg_test]
    fn deliveries_stay_under_the_endpoints_url_headers_and_id_namespace() {
        run(
            "SELECT job.create_endpoint('hooks-a', 'http://127.0.0.1:9/tenant-a/hooks',
                    headers => '{\"authorization\": \"Bearer tok-a\", \"x-api-key\": \"key-a\"}')",
        );
        let before = fingerprint();
        let reserved = "is reserved (set by pg_jobqueue itself, hop-by-hop, or read by proxies as the request's route)";
        let dots =
            "path must not have \".\" or \"..\" segments (it must stay under the endpoint's URL)";
        let encoded = "path must not percent-encode \".\", \"/\", \"\\\" or \"%\" (a server may decode them into a step out of the endpoint's URL)";
        let cases: Vec<(&str, String)> = vec![
            ("SELECT job.deliver('hooks-a', '{}', path => '/../../admin/secret-api')", dots.into()),
            ("SELECT job.deliver('hooks-a', '{}', path => '/%2e%2e/%2E%2e/admin/pct')", encoded.into()),
            ("SELECT job.deliver('hooks-a', '{}', path => '/..;/admin')", dots.into()),
            ("SELECT job.deliver('hooks-a', '{}', path => '/x%2F..%2Fadmin')", encoded.into()),
            ("SELECT job.deliver('hooks-a', '{}', path => '/%252e%252e/admin')", encoded.into()),
            ("SELECT job.enqueue('hooks-a', '{\"body\": {}, \"path\": \"/../../admin/secret-api\"}')", dots.into()),
            ("SELECT job.enqueue_many('hooks-a', ARRAY['{\"body\": {}, \"path\": \"/%2e%2e/admin\"}'::jsonb])", encoded.into()),
            ("SELECT job.deliver('hooks-a', '{}', headers => '{\"Authorization\": \"Bearer ATTACKER\"}')",
             "headers: header \"Authorization\" is set by the endpoint".into()),
            ("SELECT job.deliver('hooks-a', '{}', headers => '{\"X-API-Key\": \"mine\"}')",
             "headers: header \"X-API-Key\" is set by the endpoint".into()),
            ("SELECT job.enqueue('hooks-a', '{\"body\": {}, \"headers\": {\"authorization\": \"x\"}}')",
             "payload.headers: header \"authorization\" is set by the endpoint".into()),
            ("SELECT job.deliver('hooks-a', '{}', headers => '{\"x-a\": \"1\", \"X-A\": \"2\"}')",
             "headers: header \"x-a\" is given twice".into()),
            ("SELECT job.deliver('hooks-a', '{}', headers => '{\"X-HTTP-Method-Override\": \"DELETE\"}')",
             format!("headers: header \"X-HTTP-Method-Override\" {reserved}")),
            ("SELECT job.deliver('hooks-a', '{}', headers => '{\"Forwarded\": \"host=evil\"}')",
             format!("headers: header \"Forwarded\" {reserved}")),
            ("SELECT job.deliver('hooks-a', '{}', headers => '{\"X-Forwarded-Host\": \"evil\"}')",
             format!("headers: header \"X-Forwarded-Host\" {reserved}")),
            ("SELECT job.deliver('hooks-a', '{}', headers => '{\"Content-Encoding\": \"gzip\"}')",
             format!("headers: header \"Content-Encoding\" {reserved}")),
            ("SELECT job.deliver('hooks-a', '{}', idempotency_key => 'a b')",
             "idempotency_key may hold only letters, digits, \"-\", \"_\", \".\", \":\" and \"~\"".into()),
            ("SELECT job.enqueue('hooks-a', '{\"body\": {}, \"webhook_id\": \"msg 1\"}')",
             "payload.webhook_id may hold only letters, digits, \"-\", \"_\", \".\", \":\" and \"~\"".into()),
            ("SELECT job.enqueue('hooks-a', '{\"body\": {}, \"webhook_id\": 7}')",
             "payload.webhook_id must be a string".into()),
        ];
        for (call, message) in &cases {
            assert_rejected_with(call, "22023", message);
        }
        assert_eq!(
            fingerprint(),
            before,
            "a refused delivery changed something"
        );
        // A path under the URL, and a key that spells a generated id: the key gets a
        // namespace of its own at the sender (the claim hands out the key as chosen).
        run("SELECT job.deliver('hooks-a', '{}', path => '/orders/a.b..c?next=/../x', idempotency_key => 'msg_999999')");
        assert_eq!(
            one::<String>(
                "SELECT path || ' ' || webhook_id FROM job._claim_deliveries('t', 1, '{}', '{}')"
            ),
            "/orders/a.b..c?next=/../x msg_999999"
        );
        // The same payload on a queue that is no endpoint's is just a payload.
        queue("plain");
        run("SELECT job.enqueue('plain', '{\"body\": {}, \"path\": \"/../x\"}')");
    }

    /// Issue 19, item 7 and the URL bounds: the monitor sees an endpoint's origin, never its
    /// path or query (a token); the admin reads the URL through an audited function.
    #[pg_test]
    fn the_monitor_sees_a_redacted_url_and_the_admin_reads_it_audited() {
        run("SELECT job.create_endpoint('slack', 'https://hooks.slack.com/services/T000/B000/SECRETTOKEN?token=QUERYTOKEN')");
        assert_eq!(
            one::<String>("SELECT url FROM job.endpoints WHERE name = 'slack'"),
            "https://hooks.slack.com/…?token=…"
        );
        for view in ["job.endpoints", "job.audit_log", "job.endpoint_metrics"] {
            let text = one::<String>(&format!(
                "SELECT coalesce(string_agg(v::text, ' '), '') FROM {view} v"
            ));
            assert!(
                !text.contains("SECRETTOKEN") && !text.contains("QUERYTOKEN"),
                "{view}: {text}"
            );
        }
        assert_eq!(
            one::<String>("SELECT job.endpoint_url('slack')"),
            "https://hooks.slack.com/services/T000/B000/SECRETTOKEN?token=QUERYTOKEN"
        );
        assert_eq!(
            one::<i64>("SELECT count(*) FROM job.audit_log WHERE action = 'read_endpoint_url'"),
            1
        );
        let before = fingerprint();
        let long = format!("https://example.com/{}", "a".repeat(2048));
        assert_rejected_with(
            &format!("SELECT job.create_endpoint('x', '{long}')"),
            "22023",
            "url must be at most 2048 bytes long, got 2068",
        );
        assert_rejected_with(
            "SELECT job.create_endpoint('x', E'https://example.com/a\\nb')",
            "22023",
            "url must not contain whitespace or control characters",
        );
        assert_eq!(fingerprint(), before);
        assert_rejected_with(
            "SELECT job.verify_webhook('whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', 'msg_1', '0', '{}', 'v1,x', '4000000 years')",
            "22023",
            "tolerance must be at most 1 day (86400 seconds)",
        );
        assert_rejected_with(
            "SELECT job.verify_webhook('whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', 'msg_1', '0', '{}', 'v1,x', '-1 second')",
            "22023",
            "tolerance must not be negative",
        );
    }

    #[pg_test]
    fn the_claim_respects_concurrency_rate_limits_pauses_and_reads_plain_payloads() {
        run("SELECT job.create_endpoint('e', 'https://e.example.com/in', concurrency => 2, rate_limit => 3)");
        for i in 0..5 {
            run(&format!(
                "SELECT job.deliver('e', '{{\"n\": {i}}}', path => '/p{i}')"
            ));
        }
        run("SELECT job.enqueue('e', '{\"plain\": true}')");
        let claimed = || {
            Spi::connect_mut(|c| {
                c.update("SELECT body || ' ' || coalesce(path, '-') || ' ' || coalesce(webhook_id, '-') FROM job._claim_deliveries('t', 10, '{e}', '{1}')", None, &[])
                    .unwrap()
                    .map(|r| r.get::<String>(1).unwrap().unwrap())
                    .collect::<Vec<_>>()
            })
        };
        // Concurrency 2 (rate allows 3 - 1 = 2 as well).
        let first = claimed();
        assert_eq!(first.len(), 2, "{first:?}");
        assert_eq!(first[0], "{\"n\": 0} /p0 -", "{first:?}");
        // Both slots taken: nothing more until one finishes.
        assert!(claimed().is_empty());
        run("UPDATE job.live_jobs SET state = 'waiting', lease_token = NULL WHERE queue = 'e' AND state = 'running'");
        // Rate: 3 per second, and the sender says 3 started in the last second.
        let none = Spi::get_one::<i64>(
            "SELECT count(*) FROM job._claim_deliveries('t', 10, '{e}', '{3}')",
        )
        .unwrap();
        assert_eq!(none, Some(0));
        // Paused endpoints and disabled ones give nothing.
        run("SELECT job.pause_endpoint('e')");
        assert_eq!(
            one::<i64>("SELECT count(*) FROM job._claim_deliveries('t', 10, '{}', '{}')"),
            0
        );
        run("SELECT job.resume_endpoint('e')");
        run("UPDATE job.endpoint_defs SET disabled_reason = 'test'");
        assert_eq!(
            one::<i64>("SELECT count(*) FROM job._claim_deliveries('t', 10, '{}', '{}')"),
            0
        );
        run("SELECT job.resume_endpoint('e')");
        assert_eq!(one::<String>("SELECT state FROM job.endpoints"), "active");
        // A job enqueued without job.deliver is posted with its payload as the body.
        run("DELETE FROM job.live_jobs WHERE queue = 'e' AND payload ? 'body'");
        assert_eq!(
            one::<String>("SELECT body || ' ' || coalesce(path, '-') FROM job._claim_deliveries('t', 10, '{}', '{}')"),
            "{\"plain\": true} -"
        );
    }

    /// An outcome of the sender's, as it would record it: delivered with `result`, or failed.
    fn outcome(claim: &DeliveryClaim, result: Option<serde_json::Value>) -> DeliveryOutcome {
        DeliveryOutcome {
            job_id: claim.job_id,
            token: claim.token,
            result,
            error: None,
            permanent: None,
            http_status: None,
            retry_after_ms: None,
            detail: None,
        }
    }

    fn failed(claim: &DeliveryClaim, status: i32, permanent: bool) -> DeliveryOutcome {
        DeliveryOutcome {
            error: Some(format!("HTTP {status}")),
            permanent: Some(permanent),
            http_status: Some(status),
            ..outcome(claim, None)
        }
    }

    fn claim_all() -> Vec<DeliveryClaim> {
        let mut claims = claim_deliveries("t", 10, vec![], vec![]).unwrap();
        claims.sort_by_key(|c| c.job_id);
        claims
    }

    /// Issue 20: the sender reads a claim's fields by name (job._delivery_claim); each one
    /// arrives where its name says, so a field renamed, dropped or moved on either side fails
    /// here.
    #[pg_test]
    fn a_claimed_delivery_reaches_the_sender_field_by_field() {
        run("SELECT job.create_endpoint('e', 'https://e.example.com/in', method => 'PUT',
                    headers => '{\"authorization\": \"Bearer tok-123\"}', secret => 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw',
                    timeout => '5 seconds', rate_limit => 7)");
        let id = one::<i64>(
            "SELECT job.deliver('e', '{\"n\": 1}', path => '/p', headers => '{\"x-tenant\": \"42\"}',
                                idempotency_key => 'evt-1')",
        );
        let claims = claim_deliveries("t", 10, vec!["e".into()], vec![1]).unwrap();
        assert_eq!(
            claims,
            vec![DeliveryClaim {
                endpoint: "e".into(),
                job_id: id,
                token: one::<pgrx::datum::Uuid>(&format!(
                    "SELECT lease_token FROM job.live_jobs WHERE id = {id}"
                )),
                body: Some(r#"{"n": 1}"#.into()),
                path: Some("/p".into()),
                headers: Some(serde_json::json!({"x-tenant": "42"})),
                webhook_id: Some("evt-1".into()),
                url: "https://e.example.com/in".into(),
                method: Some("PUT".into()),
                endpoint_headers: Some(serde_json::json!({"authorization": "Bearer tok-123"})),
                secrets: vec!["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into()],
                timeout_ms: Some(5000),
                rate_limit: Some(7),
            }]
        );
        assert_eq!(
            one::<String>(&format!(
                "SELECT claimed_by FROM job.live_jobs WHERE id = {id}"
            )),
            "t"
        );
    }

    /// Issue 20: the sender's outcomes and tallies reach SQL field by field
    /// (job._delivery_outcome, job._delivery_tally, set by name): each one shows where its
    /// name says.
    #[pg_test]
    fn recorded_outcomes_complete_fail_and_disable() {
        run("SELECT job.create_queue('e', backoff_base => '1 second', jitter => 0)");
        run("SELECT job.create_endpoint('e', 'https://e.example.com/in')");
        for i in 0..3 {
            run(&format!("SELECT job.deliver('e', '{{\"n\": {i}}}')"));
        }
        let claims = claim_all();
        assert_eq!(claims.len(), 3);
        let outcomes = [
            outcome(&claims[0], Some(serde_json::json!({"status": 200}))),
            DeliveryOutcome {
                retry_after_ms: Some(7000),
                detail: Some(serde_json::json!({"class": "5xx", "latency_ms": 3.5})),
                ..failed(&claims[1], 503, false)
            },
            DeliveryOutcome {
                detail: Some(serde_json::json!({"class": "4xx"})),
                ..failed(&claims[2], 410, true)
            },
        ];
        let mut latency = vec![0; crate::session::metrics::BUCKETS];
        latency[0] = 3;
        let tally = EndpointTally {
            endpoint: "e".into(),
            status_2xx: 1,
            status_3xx: 2,
            status_4xx: 3,
            status_5xx: 4,
            transport_errors: 5,
            transient_failures: 6,
            permanent_failures: 7,
            latency,
            latency_sum: 0.25,
            succeeded: true,
            failures_since_success: 2,
            last_status: Some(410),
            last_error: Some("HTTP 410".into()),
            gone: true,
        };
        record_deliveries(&outcomes, &[tally], 100).unwrap();
        assert_eq!(
            one::<String>(&format!(
                "SELECT concat_ws(' ', state, result::text) FROM job.jobs WHERE id = {}",
                claims[0].job_id
            )),
            r#"completed {"status": 200}"#
        );
        assert_eq!(
            one::<String>(&format!(
                "SELECT concat_ws(' ', state, round(extract(epoch FROM run_at - now())), errors -> -1 ->> 'error',
                                  errors -> -1 ->> 'permanent', errors -> -1 ->> 'http_status',
                                  errors -> -1 ->> 'class', errors -> -1 ->> 'latency_ms')
                   FROM job.jobs WHERE id = {}", claims[1].job_id
            )),
            "scheduled 7 HTTP 503 false 503 5xx 3.5"
        );
        assert_eq!(state(claims[2].job_id), "dead");
        assert_eq!(
            one::<String>(
                "SELECT concat_ws(' ', status_2xx, status_3xx, status_4xx, status_5xx, transport_errors,
                                  transient_failures, permanent_failures, (SELECT sum(n) FROM unnest(latency) n), latency_sum,
                                  consecutive_failures, last_status, last_error)
                   FROM job.endpoint_stats WHERE endpoint = 'e'"
            ),
            "1 2 3 4 5 6 7 3 0.25 2 410 HTTP 410"
        );
        assert_eq!(
            one::<String>("SELECT concat_ws(' ', state, disabled_reason, consecutive_failures, last_status) FROM job.endpoints"),
            "disabled the endpoint answered 410 Gone 2 410"
        );
        assert_eq!(
            one::<i64>("SELECT count(*) FROM job.audit_log WHERE action = 'disable_endpoint'"),
            1
        );
        // An outcome whose claim is no longer current records nothing.
        run("SELECT job.resume_endpoint('e')");
        let id = one::<i64>("SELECT job.deliver('e', '{}')");
        let mut claims = claim_all();
        assert_eq!(claims.len(), 1);
        assert_eq!(claims[0].job_id, id);
        claims[0].token = pgrx::datum::Uuid::from_bytes([1; 16]);
        record_deliveries(
            &[outcome(&claims[0], Some(serde_json::json!({})))],
            &[],
            100,
        )
        .unwrap();
        assert_eq!(state(id), "running");
    }

    #[pg_test]
    fn a_retried_dead_delivery_keeps_its_webhook_id() {
        endpoint("r");
        let plain = one::<i64>("SELECT job.deliver('r', '{}')");
        let keyed = one::<i64>("SELECT job.deliver('r', '{}', idempotency_key => 'evt-1')");
        let ids_and_keys = |claims: &[DeliveryClaim]| {
            claims
                .iter()
                .map(|c| (c.job_id, c.webhook_id.clone()))
                .collect::<Vec<_>>()
        };
        let first = claim_all();
        assert_eq!(
            ids_and_keys(&first),
            // The key as chosen; none for the plain one (the sender makes msg_<id> and key_<key>).
            vec![(plain, None), (keyed, Some("evt-1".to_owned()))]
        );
        let outcomes: Vec<_> = first.iter().map(|c| failed(c, 404, true)).collect();
        record_deliveries(&outcomes, &[], 100).unwrap();
        assert_eq!(
            (state(plain), state(keyed)),
            ("dead".to_owned(), "dead".to_owned())
        );
        run("SELECT job.retry_dead('r')");
        assert_eq!(ids_and_keys(&claim_all()), ids_and_keys(&first));
    }

    #[pg_test]
    fn drop_endpoint_refuses_with_unfinished_deliveries_unless_forced() {
        endpoint("d");
        let id = one::<i64>("SELECT job.deliver('d', '{}')");
        assert_rejected_with(
            "SELECT job.drop_endpoint('d')",
            "55006",
            "endpoint 'd' still has 1 unfinished deliveries",
        );
        run("SELECT job.drop_endpoint('d', force => true)");
        assert_eq!(state(id), "cancelled");
        assert_eq!(one::<i64>("SELECT count(*) FROM job.endpoints"), 0);
        assert_eq!(one::<i64>("SELECT count(*) FROM job.endpoint_secrets"), 0);
        // Dropping the queue drops its endpoint too.
        endpoint("e2");
        run("SELECT job.drop_queue('e2')");
        assert_eq!(one::<i64>("SELECT count(*) FROM job.endpoint_defs"), 0);
    }

    #[pg_test]
    fn verify_webhook_checks_signature_and_tolerance() {
        let now = one::<i64>("SELECT extract(epoch FROM now())::bigint");
        // Signed here with the same code the sender uses; the integration tests verify what
        // the sender sends with an independent implementation.
        let key = pg_jobqueue_rules::delivery::signature::secret_key(SECRET).unwrap();
        let sig = pg_jobqueue_rules::delivery::signature::sign(&key, "msg_1", now, b"{\"a\": 1}");
        let call = |ts: i64, body: &str, tolerance: &str| {
            one::<bool>(&format!(
                "SELECT job.verify_webhook('{SECRET}', 'msg_1', '{ts}', '{body}', 'v1,bogus {sig}', '{tolerance}')"
            ))
        };
        assert!(call(now, "{\"a\": 1}", "5 minutes"));
        assert!(!call(now, "{\"a\": 2}", "5 minutes"));
        let old = one::<bool>(&format!(
            "SELECT job.verify_webhook('{SECRET}', 'msg_1', '{}', '{{\"a\": 1}}', '{sig}', '1 second')",
            now - 600
        ));
        assert!(!old);
        assert_rejected_with(
            "SELECT job.verify_webhook('nope', 'm', '1', '', 'v1,x')",
            "22023",
            "secret: a webhook secret starts with \"whsec_\" followed by base64",
        );
    }
}
