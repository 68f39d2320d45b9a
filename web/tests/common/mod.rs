//! What the dashboard's tests share: a scratch database filled with queues, jobs in every
//! state, a schedule and an endpoint with secrets; the README's roles; the running binary; a
//! plain HTTP/1.1 client.
#![allow(dead_code)] // each test file uses a part

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use pg_jobqueue_integration::{cluster_url, connect_admin, error_text, Client, TestDb};

/// The README's "Roles" recipes (the block between its `recipes` markers), as users copy them.
pub fn readme_recipes() -> String {
    let readme = include_str!("../../../README.md");
    let block = &readme[readme
        .find("<!-- recipes: begin -->")
        .expect("recipes block")..];
    let sql = &block[block.find("```sql\n").expect("a sql block") + 7..];
    sql[..sql.find("```").expect("the block ends")].to_owned()
}

/// Login roles for the four duties, named after the test; dropped last.
pub struct Roles {
    pub suffix: String,
}

impl Roles {
    pub fn monitor(&self) -> String {
        format!("jobs_monitor_{}", self.suffix)
    }
    pub fn admin(&self) -> String {
        format!("jobs_admin_{}", self.suffix)
    }
    pub fn all(&self) -> Vec<String> {
        ["app_producer", "app_worker", "jobs_monitor", "jobs_admin"]
            .iter()
            .map(|r| format!("{r}_{}", self.suffix))
            .collect()
    }
}

impl Drop for Roles {
    fn drop(&mut self) {
        let mut admin = connect_admin();
        for role in self.all() {
            if let Err(e) = admin.batch_execute(&format!("DROP ROLE IF EXISTS {role}")) {
                eprintln!("warning: could not drop role {role}: {}", error_text(&e));
            }
        }
    }
}

/// A running dashboard; killed on drop.
pub struct Dashboard {
    pub child: Child,
    pub addr: String,
}

impl Drop for Dashboard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the tests read: a scratch database with queues, jobs in every state, a schedule, an
/// endpoint with a secret and a secret header; the roles. Fields drop in order: the
/// database before the roles it grants to.
pub struct Fixture {
    pub db: TestDb,
    pub roles: Roles,
    pub dead_ids: Vec<i64>,
    pub waiting_id: i64,
    pub endpoint_secret: String,
}

pub const HEADER_SECRET: &str = "Bearer hdr-value-7f3a9c";
pub const URL_SECRET: &str = "qs-secret-5b2e81";

impl Fixture {
    pub fn new(test: &str) -> Fixture {
        let db = TestDb::create(test);
        let roles = Roles {
            suffix: format!("{test}_{}", std::process::id()),
        };
        let mut admin = connect_admin();
        for role in roles.all() {
            admin
                .batch_execute(&format!(
                    "DROP ROLE IF EXISTS {role}; CREATE ROLE {role} LOGIN"
                ))
                .unwrap_or_else(|e| panic!("create role {role}: {}", error_text(&e)));
        }
        let mut recipes = readme_recipes();
        for (role, named) in ["app_producer", "app_worker", "jobs_monitor", "jobs_admin"]
            .iter()
            .zip(roles.all())
        {
            recipes = recipes.replace(role, &named);
        }
        let mut c = db.connect();
        c.batch_execute(&recipes)
            .unwrap_or_else(|e| panic!("the README's recipes: {}", error_text(&e)));
        c.batch_execute(
            "SELECT job.create_queue('emails', max_retries => 0);
             SELECT job.create_queue('reports');
             SELECT job.enqueue('emails', '{\"to\": \"a@example.com\"}', job_type => 'welcome',
                                idempotency_key => 'signup-41');
             SELECT job.enqueue('emails', '{\"to\": \"b@example.com\"}', job_type => 'welcome');
             SELECT job.enqueue('emails', '{\"to\": \"c@example.com\"}', job_type => 'digest',
                                idempotency_key => 'signup-42');
             SELECT job.enqueue('reports', '{\"n\": 1}');
             SELECT job.schedule('nightly', '0 3 * * *', 'reports', timezone => 'Europe/Paris');",
        )
        .unwrap_or_else(|e| panic!("fixture: {}", error_text(&e)));
        // The two oldest emails die (max_retries 0): an HTTP-looking failure.
        let dead_ids: Vec<i64> = c
            .query(
                "SELECT d.id FROM job.dequeue('emails', 'worker-a', 2) d
                  WHERE job.fail(d.id, 'smtp said 550 mailbox unavailable', http_status => 550) = 'dead'
                  ORDER BY d.id",
                &[],
            )
            .unwrap_or_else(|e| panic!("fail: {}", error_text(&e)))
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(dead_ids.len(), 2, "two emails died");
        let waiting_id: i64 = c
            .query_one(
                "SELECT id FROM job.jobs WHERE queue = 'emails' AND state = 'waiting'",
                &[],
            )
            .unwrap()
            .get(0);
        c.execute("SELECT job.create_queue('hooks')", &[]).unwrap();
        c.execute(
            "SELECT job.create_endpoint('hooks', $1, headers => jsonb_build_object('Authorization', $2::text))",
            &[&format!("http://127.0.0.1:9/hook?api_key={URL_SECRET}"), &HEADER_SECRET],
        )
        .unwrap_or_else(|e| panic!("create_endpoint: {}", error_text(&e)));
        let endpoint_secret: String = c
            .query_one("SELECT job.endpoint_secret('hooks')", &[])
            .unwrap_or_else(|e| panic!("endpoint_secret: {}", error_text(&e)))
            .get(0);
        Fixture {
            db,
            roles,
            dead_ids,
            waiting_id,
            endpoint_secret,
        }
    }

    pub fn connect(&self) -> Client {
        self.db.connect()
    }

    /// The cluster's URL (`postgresql://user@host:port/db`) for `role` and this database.
    pub fn url_as(&self, role: &str) -> String {
        let url = cluster_url();
        let after_user = &url[url.find('@').expect("a user in PGJQ_TEST_URL") + 1..];
        let host_port = &after_user[..after_user.find('/').unwrap_or(after_user.len())];
        format!("postgresql://{role}@{host_port}/{}", self.db.name())
    }

    pub fn dashboard(&self, role: &str, token: Option<&str>) -> Dashboard {
        start(
            &[
                "--database-url",
                &self.url_as(role),
                "--listen",
                "127.0.0.1:0",
            ],
            token,
        )
    }
}

pub fn start(args: &[&str], token: Option<&str>) -> Dashboard {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pg_jobqueue-web"));
    cmd.args(args)
        .env_remove("PGJQ_WEB_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Some(t) = token {
        cmd.env("PGJQ_WEB_TOKEN", t);
    }
    let mut child = cmd.spawn().expect("start pg_jobqueue-web");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("pg_jobqueue-web listening on http://")
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
        .to_owned();
    Dashboard { child, addr }
}

pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    /// The form token the page carries (in its head), if any.
    pub fn form_token(&self) -> Option<String> {
        let at = self.body.find("<meta name=\"form-token\" content=\"")? + 33;
        Some(self.body[at..at + self.body[at..].find('"')?].to_owned())
    }
}

/// One HTTP/1.1 request to the dashboard on a fresh connection, read to its end.
pub fn request(
    d: &Dashboard,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Answer {
    http(&d.addr, method, path, headers, body)
}

/// One HTTP/1.1 request to `addr` on a fresh connection, read to its end.
pub fn http(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Answer {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req += &format!("{k}: {v}\r\n");
    }
    req += "\r\n";
    req += body;
    s.write_all(req.as_bytes()).unwrap();
    // Read to the end of the body that Content-Length announces (chromedriver keeps the
    // connection open whatever the request asked), or else to the end of the connection.
    let mut raw = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        let n = s.read(&mut buf).unwrap();
        raw.extend_from_slice(&buf[..n]);
        if n == 0 {
            break;
        }
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            if length.is_some_and(|len| raw.len() >= end + 4 + len) {
                break;
            }
        }
    }
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").expect("a complete answer");
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    Answer {
        status,
        headers,
        body: if chunked {
            dechunk(body)
        } else {
            body.to_owned()
        },
    }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        body = &rest[n + 2..];
    }
    out
}

pub fn get(d: &Dashboard, path: &str) -> Answer {
    request(d, "GET", path, &[], "")
}

pub fn get_ok(d: &Dashboard, path: &str) -> String {
    let a = get(d, path);
    assert_eq!(a.status, 200, "GET {path}: {}", a.body);
    a.body
}

/// A form POST as a browser on the dashboard's own page sends it.
pub fn post_form(d: &Dashboard, path: &str, token: Option<&str>, origin: Option<&str>) -> Answer {
    let body = token.map_or(String::new(), |t| format!("csrf={t}"));
    let own = format!("http://{}", d.addr);
    let mut headers = vec![("Content-Type", "application/x-www-form-urlencoded")];
    headers.push(("Origin", origin.unwrap_or(&own)));
    request(d, "POST", path, &headers, &body)
}

pub fn queue_paused(c: &mut Client, queue: &str) -> bool {
    c.query_one(
        "SELECT paused FROM job.queue_stats WHERE queue = $1",
        &[&queue],
    )
    .unwrap()
    .get(0)
}

pub fn job_state(c: &mut Client, id: i64) -> String {
    c.query_one("SELECT state FROM job.jobs WHERE id = $1", &[&id])
        .unwrap()
        .get(0)
}

pub fn audit_count(c: &mut Client) -> i64 {
    c.query_one("SELECT count(*) FROM job.audit_log", &[])
        .unwrap()
        .get(0)
}
