//! HTTP deliveries and endpoints, as the README's roles: a producer stays within its
//! endpoint, and an endpoint's URL token is for the administrator only.

use super::*;

/// As the recipes' roles (issue 19, items 1, 4, 5 and 7): the producer cannot send a delivery
/// out of its endpoint's URL, add or repeat sensitive headers, or take a generated webhook-id
/// (22023 and nothing changes); the monitor sees an endpoint's URL without its token, in
/// job.endpoints and job.audit_log, and cannot read it whole; the administrator can, audited.
#[test]
fn delivery_duties_cannot_reach_past_the_endpoint_or_see_its_token() {
    if baseline_0_2_0() {
        return; // 0.2.0 had no HTTP deliveries.
    }
    let (roles, db, mut su) = duty_db("deliv", "sec_deliv");
    let mut admin = connect_as(&db, &roles.admin);
    let url = "http://127.0.0.1:9/tenant-a/hooks/T000/B000/urlTOKENq4?token=queryTOKENq4";
    admin
        .execute(
            "SELECT job.create_endpoint('hooks-a', $1,
                    headers => '{\"authorization\": \"Bearer a\", \"x-api-key\": \"k\"}')",
            &[&url],
        )
        .unwrap_or_else(|e| panic!("create_endpoint: {}", error_text(&e)));
    exec(&mut su, "SELECT job.pause_endpoint('hooks-a')");

    let before = fingerprint(&mut su, &roles);
    let mut producer = connect_as(&db, &roles.producer);
    for sql in [
        "SELECT job.deliver('hooks-a', '{}', path => '/../../admin/secret-api')",
        "SELECT job.deliver('hooks-a', '{}', path => '/%2e%2e/%2E%2e/admin/pct')",
        "SELECT job.enqueue('hooks-a', '{\"body\": {}, \"path\": \"/../../admin/secret-api\"}')",
        "SELECT job.enqueue_many('hooks-a', ARRAY['{\"body\": {}, \"path\": \"/%2e%2e/x\"}'::jsonb])",
        "SELECT job.deliver('hooks-a', '{}', headers => '{\"Authorization\": \"Bearer ATTACKER\"}')",
        "SELECT job.deliver('hooks-a', '{}', headers => '{\"X-API-KEY\": \"attacker\"}')",
        "SELECT job.deliver('hooks-a', '{}', headers => '{\"X-Forwarded-Host\": \"evil\"}')",
        "SELECT job.deliver('hooks-a', '{}', headers => '{\"X-HTTP-Method-Override\": \"DELETE\"}')",
        "SELECT job.deliver('hooks-a', '{}', idempotency_key => 'msg 1')",
        "SELECT job.enqueue('hooks-a', '{\"body\": {}, \"webhook_id\": \"msg 1\"}')",
    ] {
        assert_eq!(error_code(&mut producer, sql), "22023", "{sql}");
    }
    assert_unchanged(&before, &fingerprint(&mut su, &roles), "a refused delivery");

    let mut monitor = connect_as(&db, &roles.monitor);
    let shown: String = one(
        &mut monitor,
        "SELECT concat((SELECT string_agg(e::text, ' ') FROM job.endpoints e),
                       (SELECT string_agg(a::text, ' ') FROM job.audit_log a))",
        &[],
    );
    assert!(shown.contains("http://127.0.0.1:9/…?token=…"), "{shown}");
    assert!(
        !shown.contains("urlTOKENq4") && !shown.contains("queryTOKENq4"),
        "the monitor sees the URL's token: {shown}"
    );
    denied(&mut monitor, "SELECT job.endpoint_url('hooks-a')");
    let whole: String = one(&mut admin, "SELECT job.endpoint_url('hooks-a')", &[]);
    assert_eq!(whole, url);
    let audited: i64 = one(
        &mut su,
        "SELECT count(*) FROM job.audit_log WHERE action = 'read_endpoint_url'",
        &[],
    );
    assert_eq!(audited, 1);
}
