//! One walk through the dashboard in headless Chromium (Debian's `chromium` and
//! `chromium-driver`, installed by scripts/setup-browser.sh), over the WebDriver protocol:
//! open the overview, follow a queue, filter to its dead jobs, open one and retry it, as an
//! operator would.  Screenshots of the pages it passes go to
//! `target/tmp/web-screenshots/`, to look at (docs/screenshots/ holds the demo's pages).

mod common;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use common::*;
use serde_json::{json, Value};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

struct Driver {
    child: Child,
    addr: String,
    session: String,
    _profile: TempDir,
}

struct TempDir(PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Driver {
    fn start() -> Driver {
        let port = (56340..56400)
            .find(|p| TcpListener::bind(("127.0.0.1", *p)).is_ok())
            .expect("a free port in 56340-56399 for chromedriver");
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (run scripts/setup-browser.sh)");
        let addr = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let profile =
            TempDir(std::env::temp_dir().join(format!("pgjq-web-chromium-{}", std::process::id())));
        let _ = std::fs::remove_dir_all(&profile.0);
        let mut driver = Driver {
            child,
            addr,
            session: String::new(),
            _profile: profile,
        };
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--window-size=1280,900",
            &format!("--user-data-dir={}", driver._profile.0.display()),
        ];
        let v = driver.call(
            "POST",
            "/session",
            json!({"capabilities": {"alwaysMatch": {"browserName": "chrome",
                "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": args}}}}),
        );
        driver.session = v["sessionId"].as_str().expect("a session").to_owned();
        driver
    }

    fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let body = if method == "GET" || method == "DELETE" {
            String::new()
        } else {
            body.to_string()
        };
        let a = http(
            &self.addr,
            method,
            path,
            &[("Content-Type", "application/json")],
            &body,
        );
        let v: Value = serde_json::from_str(&a.body).unwrap_or(Value::Null);
        assert_eq!(a.status, 200, "WebDriver {method} {path}: {}", a.body);
        v["value"].clone()
    }

    fn s(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    fn go(&self, url: &str) {
        self.call("POST", &self.s("/url"), json!({"url": url}));
    }

    fn url(&self) -> String {
        self.call("GET", &self.s("/url"), Value::Null)
            .as_str()
            .unwrap()
            .to_owned()
    }

    fn source(&self) -> String {
        self.call("GET", &self.s("/source"), Value::Null)
            .as_str()
            .unwrap()
            .to_owned()
    }

    fn find(&self, css: &str) -> String {
        let v = self.call(
            "POST",
            &self.s("/element"),
            json!({"using": "css selector", "value": css}),
        );
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}"))
            .to_owned()
    }

    fn click(&self, css: &str) {
        let e = self.find(css);
        self.call("POST", &self.s(&format!("/element/{e}/click")), json!({}));
    }

    fn screenshot(&self, name: &str) {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("web-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        // The whole page: as tall as its content.
        let height = self.call(
            "POST",
            &self.s("/execute/sync"),
            json!({"script": "return document.documentElement.scrollHeight", "args": []}),
        );
        let height = height.as_u64().unwrap_or(900).clamp(400, 3000);
        self.call(
            "POST",
            &self.s("/window/rect"),
            json!({"width": 1280, "height": height + 140}),
        );
        let png = self.call("GET", &self.s("/screenshot"), Value::Null);
        let png = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap())
            .unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
        self.call(
            "POST",
            &self.s("/window/rect"),
            json!({"width": 1280, "height": 900}),
        );
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = http(&self.addr, "DELETE", &self.s(""), &[], "");
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A browser whose session was never closed (a test that failed midway) outlives its
        // driver: stop the processes of this test's own profile, by their ids.
        let profile = self._profile.0.to_string_lossy().into_owned();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(&profile) {
                let _ = Command::new("kill").arg(pid.to_string()).status();
            }
        }
    }
}

#[test]
fn an_operator_retries_a_dead_job_in_a_browser() {
    let f = Fixture::new("web_browser");
    let d = f.dashboard(&f.roles.admin(), None);
    let base = format!("http://{}", d.addr);
    let browser = Driver::start();

    browser.go(&format!("{base}/"));
    assert!(browser.source().contains("Background processes"));
    browser.screenshot("overview");

    browser.click("a[href='/queues/emails']");
    assert_eq!(browser.url(), format!("{base}/queues/emails"));
    browser.click("select[name=state] option[value=dead]");
    browser.click("form.filter button");
    assert!(browser.url().contains("state=dead"), "{}", browser.url());
    let listed = browser.source();
    assert!(
        !listed.contains(&format!("/jobs/{}\"", f.waiting_id)),
        "the filter shows dead jobs only"
    );
    browser.screenshot("queue");

    let dead = f.dead_ids[0];
    browser.click(&format!("a[href='/jobs/{dead}']"));
    assert!(browser
        .source()
        .contains("smtp said 550 mailbox unavailable"));
    browser.screenshot("job");
    browser.click(&format!("form[action='/jobs/{dead}/retry'] button"));
    // The form posted (with its token and the page's Origin) and came back to the job.
    assert_eq!(browser.url(), format!("{base}/jobs/{dead}"));
    let mut c = f.connect();
    let state: String = c
        .query_one("SELECT state FROM job.jobs WHERE id = $1", &[&dead])
        .unwrap()
        .get(0);
    assert_eq!(state, "waiting");
    assert!(browser.source().contains(">waiting<"));

    browser.go(&format!("{base}/dead"));
    browser.screenshot("dead");
    browser.go(&format!("{base}/endpoints"));
    browser.screenshot("endpoints");
    browser.go(&format!("{base}/schedules"));
    browser.screenshot("schedules");
}
