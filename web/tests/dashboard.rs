//! The dashboard binary against a real cluster (`PGJQ_TEST_URL`, as `make web-test` sets it),
//! connected as a role made with the README's monitor or admin recipe: what each page shows,
//! which actions each role is offered and may take, and what the dashboard refuses.

mod common;

use std::process::Command;

use common::*;
use pg_jobqueue_integration::error_text;

const PAGES: &[&str] = &[
    "/",
    "/queues/emails",
    "/dead",
    "/schedules",
    "/endpoints",
    "/audit",
];

#[test]
fn monitor_sees_every_page_and_is_offered_no_action() {
    let f = Fixture::new("web_monitor");
    let d = f.dashboard(&f.roles.monitor(), None);

    let overview = get_ok(&d, "/");
    for text in ["emails", "reports", "hooks", "Background processes", "<svg"] {
        assert!(overview.contains(text), "overview lacks {text:?}");
    }
    let queue = get_ok(&d, "/queues/emails");
    assert!(queue.contains(&format!("/jobs/{}", f.waiting_id)));
    for id in &f.dead_ids {
        assert!(
            queue.contains(&format!("/jobs/{id}\"")),
            "queue page lacks dead job {id}"
        );
    }
    // Filters: dead jobs only; a job type; an idempotency key; an id.
    let dead = get_ok(&d, "/queues/emails?state=dead");
    assert!(!dead.contains(&format!("/jobs/{}\"", f.waiting_id)));
    assert!(dead.contains(&format!("/jobs/{}\"", f.dead_ids[0])));
    let digest = get_ok(&d, "/queues/emails?type=digest");
    assert!(digest.contains(&format!("/jobs/{}\"", f.waiting_id)));
    assert!(!digest.contains(&format!("/jobs/{}\"", f.dead_ids[0])));
    let by_key = get_ok(&d, "/queues/emails?q=signup-41");
    assert!(by_key.contains(&format!("/jobs/{}\"", f.dead_ids[0])));
    assert!(!by_key.contains(&format!("/jobs/{}\"", f.dead_ids[1])));
    let by_id = get_ok(&d, &format!("/queues/emails?q={}", f.dead_ids[1]));
    assert!(by_id.contains(&format!("/jobs/{}\"", f.dead_ids[1])));
    assert!(!by_id.contains(&format!("/jobs/{}\"", f.dead_ids[0])));

    let job = get_ok(&d, &format!("/jobs/{}", f.dead_ids[0]));
    for text in [
        "a@example.com",
        "smtp said 550 mailbox unavailable",
        "550",
        "worker-a",
        "signup-41",
    ] {
        assert!(job.contains(text), "job page lacks {text:?}");
    }
    let dead_letters = get_ok(&d, "/dead");
    assert!(dead_letters.contains("smtp said 550 mailbox unavailable"));
    let schedules = get_ok(&d, "/schedules");
    assert!(schedules.contains("nightly") && schedules.contains("Europe/Paris"));
    let endpoints = get_ok(&d, "/endpoints");
    assert!(endpoints.contains("hooks") && endpoints.contains("Authorization"));
    let audit = get_ok(&d, "/audit");
    assert!(audit.contains("create_queue"));
    assert!(get_ok(&d, "/audit?action=schedule").contains("nightly"));
    assert!(!get_ok(&d, "/audit?action=schedule").contains("create_queue"));

    // No action is offered to a monitor, on any page.
    for path in PAGES
        .iter()
        .map(|p| p.to_string())
        .chain([format!("/jobs/{}", f.dead_ids[0])])
    {
        let body = get_ok(&d, &path);
        assert!(
            !body.contains("method=\"post\""),
            "{path} offers an action to a monitor"
        );
    }
    // And the database refuses one sent anyway, with a valid form token: nothing changes.
    let token = get(&d, "/")
        .form_token()
        .expect("pages carry the form token");
    let mut c = f.connect();
    let audit_before = audit_count(&mut c);
    for (path, _) in [
        ("/queues/emails/pause".to_string(), ()),
        ("/queues/emails/retry-dead".to_string(), ()),
        (format!("/jobs/{}/retry", f.dead_ids[0]), ()),
        (format!("/jobs/{}/cancel", f.waiting_id), ()),
        ("/schedules/nightly/pause".to_string(), ()),
        ("/endpoints/hooks/pause".to_string(), ()),
    ] {
        let a = post_form(&d, &path, Some(&token), None);
        assert_eq!(a.status, 403, "POST {path} as the monitor: {}", a.body);
    }
    assert!(!queue_paused(&mut c, "emails"));
    assert_eq!(job_state(&mut c, f.dead_ids[0]), "dead");
    assert_eq!(job_state(&mut c, f.waiting_id), "waiting");
    assert_eq!(audit_count(&mut c), audit_before);
}

#[test]
fn admin_takes_each_action() {
    let f = Fixture::new("web_admin");
    let d = f.dashboard(&f.roles.admin(), None);
    let mut c = f.connect();
    let page = get(&d, "/queues/emails");
    assert!(
        page.body.contains("/queues/emails/pause\""),
        "pause offered"
    );
    assert!(
        page.body.contains("/queues/emails/retry-dead\""),
        "retry dead offered"
    );
    let token = page.form_token().unwrap();

    let a = post_form(&d, "/queues/emails/pause", Some(&token), None);
    assert_eq!(a.status, 303, "{}", a.body);
    assert_eq!(a.header("location"), Some("/queues/emails"));
    assert!(queue_paused(&mut c, "emails"));
    assert!(get_ok(&d, "/queues/emails").contains("/queues/emails/resume\""));
    assert_eq!(
        post_form(&d, "/queues/emails/resume", Some(&token), None).status,
        303
    );
    assert!(!queue_paused(&mut c, "emails"));

    // One dead job retried from its page, then the rest of the queue's dead letters.
    let job = get_ok(&d, &format!("/jobs/{}", f.dead_ids[0]));
    assert!(job.contains(&format!("/jobs/{}/retry\"", f.dead_ids[0])));
    assert!(!job.contains("/cancel\""), "a dead job cannot be cancelled");
    assert_eq!(
        post_form(
            &d,
            &format!("/jobs/{}/retry", f.dead_ids[0]),
            Some(&token),
            None
        )
        .status,
        303
    );
    assert_eq!(job_state(&mut c, f.dead_ids[0]), "waiting");
    assert_eq!(
        post_form(&d, "/queues/emails/retry-dead", Some(&token), None).status,
        303
    );
    assert_eq!(job_state(&mut c, f.dead_ids[1]), "waiting");

    assert!(get_ok(&d, &format!("/jobs/{}", f.waiting_id)).contains("/cancel\""));
    assert_eq!(
        post_form(
            &d,
            &format!("/jobs/{}/cancel", f.waiting_id),
            Some(&token),
            None
        )
        .status,
        303
    );
    assert_eq!(job_state(&mut c, f.waiting_id), "cancelled");

    assert_eq!(
        post_form(&d, "/schedules/nightly/pause", Some(&token), None).status,
        303
    );
    let paused: bool = c
        .query_one(
            "SELECT paused FROM job.schedules WHERE name = 'nightly'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(paused);
    assert!(get_ok(&d, "/schedules").contains("/schedules/nightly/resume\""));
    assert_eq!(
        post_form(&d, "/schedules/nightly/resume", Some(&token), None).status,
        303
    );

    assert_eq!(
        post_form(&d, "/endpoints/hooks/pause", Some(&token), None).status,
        303
    );
    let state: String = c
        .query_one("SELECT state FROM job.endpoints WHERE name = 'hooks'", &[])
        .unwrap()
        .get(0);
    assert_eq!(state, "paused");

    // Each is audited as the dashboard's role.
    let admin = f.roles.admin();
    let audited: Vec<String> = c
        .query(
            "SELECT action FROM job.audit_log WHERE role::text = $1 ORDER BY id",
            &[&admin],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        audited,
        [
            "pause_queue",
            "resume_queue",
            "retry",
            "retry_dead",
            "cancel",
            "pause_schedule",
            "resume_schedule",
            "pause_endpoint"
        ]
    );
    // An action on what does not exist is a clear refusal, not a server error.
    let a = post_form(&d, "/queues/nosuch/pause", Some(&token), None);
    assert_eq!(a.status, 400, "{}", a.body);
}

#[test]
fn actions_need_the_form_token_and_this_origin() {
    let f = Fixture::new("web_csrf");
    let d = f.dashboard(&f.roles.admin(), None);
    let mut c = f.connect();
    let token = get(&d, "/").form_token().unwrap();
    let other = f.dashboard(&f.roles.admin(), None);
    let other_token = get(&other, "/").form_token().unwrap();
    assert_ne!(token, other_token, "each process has its own form token");
    let audit_before = audit_count(&mut c);
    for (what, answer) in [
        (
            "no token",
            post_form(&d, "/queues/emails/pause", None, None),
        ),
        (
            "a wrong token",
            post_form(&d, "/queues/emails/pause", Some("forged"), None),
        ),
        (
            "another process's token",
            post_form(&d, "/queues/emails/pause", Some(&other_token), None),
        ),
        (
            "a foreign Origin",
            post_form(
                &d,
                "/queues/emails/pause",
                Some(&token),
                Some("http://evil.example"),
            ),
        ),
        (
            "a foreign Origin on a job",
            post_form(
                &d,
                &format!("/jobs/{}/retry", f.dead_ids[0]),
                Some(&token),
                Some("http://evil.example"),
            ),
        ),
    ] {
        assert_eq!(answer.status, 403, "{what}: {}", answer.body);
    }
    // A page of a name that resolves to 127.0.0.1 (DNS rebinding) reads nothing and acts on
    // nothing: without a token only loopback host names are answered.
    let rebound = |method: &str, path: &str, body: &str| rebound_request(&d, method, path, body);
    assert_eq!(rebound("GET", "/", "").status, 403);
    assert_eq!(
        rebound("POST", "/queues/emails/pause", &format!("csrf={token}")).status,
        403
    );
    // GET never acts.
    assert_eq!(get(&d, "/queues/emails/pause").status, 405);
    assert!(!queue_paused(&mut c, "emails"));
    assert_eq!(job_state(&mut c, f.dead_ids[0]), "dead");
    assert_eq!(audit_count(&mut c), audit_before);
}

/// A request as a browser sends it to a name of the attacker's that resolves to the dashboard.
fn rebound_request(d: &Dashboard, method: &str, path: &str, body: &str) -> Answer {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(&d.addr).unwrap();
    let port = d.addr.rsplit_once(':').unwrap().1;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: rebind.example:{port}\r\nOrigin: http://rebind.example:{port}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let status = raw.split(' ').nth(1).unwrap().parse().unwrap();
    Answer {
        status,
        headers: Vec::new(),
        body: raw,
    }
}

#[test]
fn secure_headers_on_every_answer() {
    let f = Fixture::new("web_headers");
    let d = f.dashboard(&f.roles.monitor(), None);
    for path in ["/", "/jobs/abc", "/nosuch", "/style.css"] {
        let a = get(&d, path);
        let csp = a.header("content-security-policy").unwrap_or("");
        assert!(
            csp.contains("default-src 'none'") && !csp.contains("unsafe-inline"),
            "{path}: {csp}"
        );
        assert_eq!(a.header("x-frame-options"), Some("DENY"), "{path}");
        assert_eq!(
            a.header("x-content-type-options"),
            Some("nosniff"),
            "{path}"
        );
        assert!(a.header("referrer-policy").is_some(), "{path}");
    }
    // No inline script anywhere (the CSP would block it).
    for path in PAGES {
        assert!(!get_ok(&d, path).contains("<script"), "{path}");
    }
}

#[test]
fn token_is_required_when_given() {
    let f = Fixture::new("web_token");
    let d = f.dashboard(&f.roles.monitor(), Some("tok-93e1"));
    let a = get(&d, "/");
    assert_eq!(a.status, 401);
    assert!(a
        .header("www-authenticate")
        .unwrap_or("")
        .starts_with("Basic"));
    assert!(!a.body.contains("emails"));
    assert_eq!(
        request(&d, "GET", "/", &[("Authorization", "Bearer tok-93e")], "").status,
        401
    );
    assert_eq!(
        request(&d, "GET", "/", &[("Authorization", "Bearer tok-93e1")], "").status,
        200
    );
    // base64("ops:tok-93e1"), as a browser sends it after the prompt.
    assert_eq!(
        request(
            &d,
            "GET",
            "/",
            &[("Authorization", "Basic b3BzOnRvay05M2Ux")],
            ""
        )
        .status,
        200
    );
    // Unauthenticated actions are refused before anything else.
    let a = post_form(&d, "/queues/emails/pause", None, None);
    assert_eq!(a.status, 401);
}

#[test]
fn refuses_a_public_address_without_a_token() {
    for addr in ["0.0.0.0:0", "[::]:0"] {
        let out = Command::new(env!("CARGO_BIN_EXE_pg_jobqueue-web"))
            .args([
                "--database-url",
                "postgresql://nobody@127.0.0.1:1/none",
                "--listen",
                addr,
            ])
            .env_remove("PGJQ_WEB_TOKEN")
            .output()
            .unwrap();
        assert!(!out.status.success(), "{addr}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("refusing to listen") && err.contains("--token"),
            "{err}"
        );
        assert!(
            out.stdout.is_empty(),
            "it did not listen: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

#[test]
fn no_page_shows_a_secret() {
    let f = Fixture::new("web_secrets");
    let mut c = f.connect();
    // A delivery to the endpoint, so that its job has a page too.
    let delivery: i64 = c
        .query_one("SELECT job.deliver('hooks', '{\"event\": \"x\"}')", &[])
        .unwrap_or_else(|e| panic!("deliver: {}", error_text(&e)))
        .get(0);
    let d = f.dashboard(&f.roles.admin(), None);
    let secrets = [
        f.endpoint_secret.as_str(),
        f.endpoint_secret.trim_start_matches("whsec_"),
        HEADER_SECRET,
        "hdr-value-7f3a9c",
        URL_SECRET,
    ];
    for path in PAGES.iter().map(|p| p.to_string()).chain([
        "/queues/hooks".to_string(),
        format!("/jobs/{delivery}"),
        "/audit?action=create_endpoint".into(),
    ]) {
        let body = get_ok(&d, &path);
        for s in secrets {
            assert!(!body.contains(s), "{path} shows a secret ({s})");
        }
    }
    // The endpoint's origin is shown; its path and query only redacted (job.endpoints).
    let endpoints = get_ok(&d, "/endpoints");
    assert!(endpoints.contains("http://127.0.0.1:9/"), "{endpoints}");
    assert!(
        !endpoints.contains("127.0.0.1:9/hook"),
        "the endpoint's path is shown"
    );
}

#[test]
fn bad_input_is_a_clear_400() {
    let f = Fixture::new("web_badinput");
    let d = f.dashboard(&f.roles.admin(), None);
    let long = "x".repeat(201);
    let bad = [
        "/jobs/abc".to_string(),
        "/jobs/0".into(),
        "/jobs/-1".into(),
        "/jobs/1.5".into(),
        "/jobs/99999999999999999999".into(),
        "/jobs/1%00".into(),
        "/queues/emails?state=bogus".into(),
        "/queues/emails?state=dead%27%3B".into(),
        "/queues/emails?before=x".into(),
        "/queues/emails?before=-5".into(),
        "/queues/emails?before=1e9".into(),
        format!("/queues/emails?q={long}"),
        "/queues/emails?type=a%00b".into(),
        "/queues/emails?refresh=1".into(),
        "/queues/emails?refresh=abc".into(),
        "/queues/%FF".into(),
        format!("/queues/{long}"),
        "/audit?before=abc".into(),
        "/audit?action=%0a".into(),
        "/?refresh=-3".into(),
        "/dead?refresh=99999".into(),
    ];
    for path in &bad {
        let a = get(&d, path);
        assert_eq!(a.status, 400, "GET {path}: {}", a.body);
        assert!(
            a.body.contains("400"),
            "GET {path}: an HTML page saying 400"
        );
        for leak in ["ERROR", "syntax", "SQLSTATE", "job.", "select"] {
            assert!(
                !a.body.contains(leak),
                "GET {path} shows {leak:?}: {}",
                a.body
            );
        }
    }
    let token = get(&d, "/").form_token().unwrap();
    for path in ["/jobs/abc/retry", "/jobs/0/cancel", "/queues/%FF/pause"] {
        let a = post_form(&d, path, Some(&token), None);
        assert_eq!(a.status, 400, "POST {path}: {}", a.body);
    }
    // A form that is not a form.
    let a = request(
        &d,
        "POST",
        "/queues/emails/pause",
        &[
            ("Content-Type", "application/json"),
            ("Origin", &format!("http://{}", d.addr)),
        ],
        "{}",
    );
    assert_eq!(a.status, 400, "{}", a.body);
    // Unknown things are 404, not 500.
    for path in ["/jobs/999999999", "/queues/nosuch", "/nosuch"] {
        assert_eq!(get(&d, path).status, 404, "{path}");
    }
    // Keyset pages: a cursor below every id is an empty page, not an error.
    assert!(get_ok(&d, "/queues/emails?before=1").contains("No job matches"));
    let mut c = f.connect();
    assert!(!queue_paused(&mut c, "emails"));
}

#[test]
fn dead_letters_retry_by_group() {
    let f = Fixture::new("web_deadgroup");
    let mut c = f.connect();
    let other: i64 = c
        .query_one(
            "SELECT d.id FROM job.dequeue('reports', 'worker-b') d
              WHERE job.fail(d.id, 'report template missing', permanent => true) = 'dead'",
            &[],
        )
        .unwrap_or_else(|e| panic!("fail: {}", error_text(&e)))
        .get(0);
    let d = f.dashboard(&f.roles.admin(), None);
    let page = get(&d, "/dead");
    assert!(page.body.contains("report template missing"));
    assert!(
        page.body.contains("Retry 2</button>"),
        "the emails group holds two jobs"
    );
    let token = page.form_token().unwrap();
    let origin = format!("http://{}", d.addr);
    let post = |body: &str| {
        request(
            &d,
            "POST",
            "/dead/retry",
            &[
                ("Content-Type", "application/x-www-form-urlencoded"),
                ("Origin", &origin),
            ],
            body,
        )
    };
    // Without a queue, or with an over-long error: refused, nothing retried.
    assert_eq!(post(&format!("csrf={token}")).status, 400);
    assert_eq!(
        post(&format!(
            "csrf={token}&queue=emails&error={}",
            "e".repeat(301)
        ))
        .status,
        400
    );
    assert_eq!(
        post("csrf=forged&queue=emails&error=smtp+said+550+mailbox+unavailable").status,
        403
    );
    assert_eq!(job_state(&mut c, f.dead_ids[0]), "dead");

    let a = post(&format!(
        "csrf={token}&queue=emails&error=smtp+said+550+mailbox+unavailable"
    ));
    assert_eq!(a.status, 303, "{}", a.body);
    assert_eq!(job_state(&mut c, f.dead_ids[0]), "waiting");
    assert_eq!(job_state(&mut c, f.dead_ids[1]), "waiting");
    assert_eq!(
        job_state(&mut c, other),
        "dead",
        "another group is left alone"
    );
}
