//! A scripted HTTP/1.1 receiver on 127.0.0.1, for the delivery tests (tests/deliveries.rs).
//!
//! [`Receiver::start`] listens on a random port and serves every connection on a thread of its
//! own (keep-alive, as the sender's client pools connections).  Requests are parsed with
//! `httparse` (hyper's parser); each is recorded ([`Recorded`]: method, target, headers, body,
//! arrival time) and answered by the script: the next [`Action`] queued for its path, else the
//! next one queued for any path, else the path's default, else the receiver's default (200).
//! An action answers (status, headers, body, after a delay), closes the connection without
//! answering, or resets it (RST).  The receiver counts requests in flight (read, not yet
//! answered) and their peak.

use std::collections::{HashMap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// One answer: status, headers, body, and how long to wait before sending it.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub delay: Duration,
}

impl Reply {
    /// `status` with an empty body, at once.
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            delay: Duration::ZERO,
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Reply {
        self.body = body.into();
        self
    }

    pub fn delay(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }
}

/// What the receiver does with a request.
#[derive(Debug, Clone)]
pub enum Action {
    Respond(Reply),
    /// Waits this long, then closes the connection (FIN) without answering.
    Close(Duration),
    /// Waits this long, then resets the connection (RST: SO_LINGER 0) without answering.
    Reset(Duration),
}

impl From<Reply> for Action {
    fn from(reply: Reply) -> Action {
        Action::Respond(reply)
    }
}

/// A request as it arrived.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// The request target: path and query.
    pub target: String,
    /// Header names in lower case, values as sent, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// When its headers had arrived.
    pub arrived: Instant,
    /// The same, as seconds since the Unix epoch.
    pub arrived_unix: f64,
    /// The receiver's connection number (1, 2, ... in accept order).
    pub connection: u64,
}

impl Recorded {
    /// The path of the target (without the query).
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    /// The value of header `name` (any case); the first if sent more than once.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// How many times header `name` was sent.
    pub fn header_count(&self, name: &str) -> usize {
        let name = name.to_ascii_lowercase();
        self.headers.iter().filter(|(n, _)| *n == name).count()
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

#[derive(Default)]
struct Script {
    by_path: HashMap<String, VecDeque<Action>>,
    any: VecDeque<Action>,
    default_by_path: HashMap<String, Action>,
    default: Option<Action>,
}

impl Script {
    fn next(&mut self, path: &str) -> Action {
        if let Some(action) = self.by_path.get_mut(path).and_then(VecDeque::pop_front) {
            return action;
        }
        if let Some(action) = self.any.pop_front() {
            return action;
        }
        if let Some(action) = self.default_by_path.get(path) {
            return action.clone();
        }
        self.default
            .clone()
            .unwrap_or_else(|| Reply::status(200).body("ok").into())
    }
}

#[derive(Default)]
struct Log {
    requests: Vec<Recorded>,
    in_flight: usize,
    peak: usize,
    connections: u64,
}

struct Shared {
    script: Mutex<Script>,
    log: Mutex<Log>,
    changed: Condvar,
    stop: AtomicBool,
}

/// The receiver; stops listening when dropped (connections still open end within a second
/// or when their scripted delay is over).
pub struct Receiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<std::thread::JoinHandle<()>>,
}

impl Receiver {
    /// A receiver on 127.0.0.1 at a port the system picks; answers 200 "ok" unless scripted.
    pub fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("cannot bind a receiver port");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            script: Mutex::new(Script::default()),
            log: Mutex::new(Log::default()),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let for_thread = Arc::clone(&shared);
        let accept = std::thread::Builder::new()
            .name(format!("receiver {}", addr.port()))
            .spawn(move || accept_loop(listener, for_thread))
            .unwrap();
        Receiver {
            addr,
            shared,
            accept: Some(accept),
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `http://127.0.0.1:<port>` followed by `path` (e.g. "/hook").
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.addr.port())
    }

    /// Queues `action` for the next request to any path (after those queued for its path).
    pub fn push(&self, action: impl Into<Action>) {
        self.shared
            .script
            .lock()
            .unwrap()
            .any
            .push_back(action.into());
    }

    /// Queues `action` for the next request to `path`.
    pub fn push_for(&self, path: &str, action: impl Into<Action>) {
        self.shared
            .script
            .lock()
            .unwrap()
            .by_path
            .entry(path.to_owned())
            .or_default()
            .push_back(action.into());
    }

    /// What requests get when nothing is queued for them.
    pub fn set_default(&self, action: impl Into<Action>) {
        self.shared.script.lock().unwrap().default = Some(action.into());
    }

    /// What requests to `path` get when nothing is queued for them.
    pub fn set_default_for(&self, path: &str, action: impl Into<Action>) {
        self.shared
            .script
            .lock()
            .unwrap()
            .default_by_path
            .insert(path.to_owned(), action.into());
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.log.lock().unwrap().requests.clone()
    }

    /// The requests so far to `path`.
    pub fn requests_to(&self, path: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.path() == path)
            .collect()
    }

    pub fn count(&self) -> usize {
        self.shared.log.lock().unwrap().requests.len()
    }

    /// Requests read and not yet answered (or closed) now.
    pub fn in_flight(&self) -> usize {
        self.shared.log.lock().unwrap().in_flight
    }

    /// The most requests in flight at once so far.
    pub fn peak_in_flight(&self) -> usize {
        self.shared.log.lock().unwrap().peak
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.shared.log.lock().unwrap().connections
    }

    /// Waits until at least `count` requests arrived; all of them, or None after `timeout`.
    pub fn wait_for_requests(&self, count: usize, timeout: Duration) -> Option<Vec<Recorded>> {
        self.wait_for_matching(count, timeout, |_| true)
    }

    /// Waits until at least `count` requests to `path` arrived; those, or None after
    /// `timeout`.
    pub fn wait_for_requests_to(
        &self,
        path: &str,
        count: usize,
        timeout: Duration,
    ) -> Option<Vec<Recorded>> {
        self.wait_for_matching(count, timeout, |r| r.path() == path)
    }

    fn wait_for_matching(
        &self,
        count: usize,
        timeout: Duration,
        keep: impl Fn(&Recorded) -> bool,
    ) -> Option<Vec<Recorded>> {
        let deadline = Instant::now() + timeout;
        let mut log = self.shared.log.lock().unwrap();
        loop {
            let matching: Vec<Recorded> =
                log.requests.iter().filter(|r| keep(r)).cloned().collect();
            if matching.len() >= count {
                return Some(matching);
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            log = self
                .shared
                .changed
                .wait_timeout(log, deadline - now)
                .unwrap()
                .0;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

/// A port on 127.0.0.1 that nothing listens on (bound, then released).
pub fn unused_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("cannot bind a port");
    listener.local_addr().unwrap().port()
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else { continue };
        let number = {
            let mut log = shared.log.lock().unwrap();
            log.connections += 1;
            log.connections
        };
        let shared = Arc::clone(&shared);
        std::thread::spawn(move || serve_connection(stream, shared, number));
    }
}

/// Sleeps `delay`, a slice at a time, unless the receiver stops meanwhile.
fn pause(delay: Duration, shared: &Shared) {
    let until = Instant::now() + delay;
    while !shared.stop.load(Ordering::SeqCst) {
        let now = Instant::now();
        if now >= until {
            return;
        }
        std::thread::sleep((until - now).min(Duration::from_millis(50)));
    }
}

/// Reads what comes next into `buf`: how many bytes, or None when the peer closed the
/// connection (or the receiver stops).
fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>, shared: &Shared) -> Option<usize> {
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            return None;
        }
        match stream.read(&mut chunk) {
            Ok(0) => return None,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                return Some(n);
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        400 => "Bad Request",
        404 => "Not Found",
        408 => "Request Timeout",
        410 => "Gone",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

fn serve_connection(mut stream: TcpStream, shared: Arc<Shared>, connection: u64) {
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let _ = stream.set_nodelay(true);
    let mut buf: Vec<u8> = Vec::new();
    loop {
        // The head: up to the blank line.
        let head_len = loop {
            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            if read_more(&mut stream, &mut buf, &shared).is_none() {
                return;
            }
        };
        let arrived = Instant::now();
        let arrived_unix = unix_now();
        let mut header_slots = [httparse::EMPTY_HEADER; 64];
        let mut request = httparse::Request::new(&mut header_slots);
        match request.parse(&buf[..head_len]) {
            Ok(httparse::Status::Complete(_)) => {}
            _ => {
                let _ = stream.write_all(
                    b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                );
                return;
            }
        }
        let method = request.method.unwrap_or("").to_owned();
        let target = request.path.unwrap_or("").to_owned();
        let headers: Vec<(String, String)> = request
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_ascii_lowercase(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect();
        let find = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        if find("transfer-encoding").is_some() {
            // The sender sends a known length; this receiver reads nothing else.
            let _ = stream.write_all(
                b"HTTP/1.1 501 Not Implemented\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            );
            return;
        }
        let length: usize = find("content-length")
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        let close_after = find("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
        buf.drain(..head_len);
        while buf.len() < length {
            if read_more(&mut stream, &mut buf, &shared).is_none() {
                return;
            }
        }
        let body: Vec<u8> = buf.drain(..length).collect();
        let recorded = Recorded {
            method,
            target,
            headers,
            body,
            arrived,
            arrived_unix,
            connection,
        };
        let path = recorded.path().to_owned();
        {
            let mut log = shared.log.lock().unwrap();
            log.requests.push(recorded);
            log.in_flight += 1;
            log.peak = log.peak.max(log.in_flight);
            shared.changed.notify_all();
        }
        let action = shared.script.lock().unwrap().next(&path);
        let keep_going = match action {
            Action::Respond(reply) => {
                pause(reply.delay, &shared);
                let mut head = format!(
                    "HTTP/1.1 {} {}\r\ncontent-length: {}\r\n",
                    reply.status,
                    reason(reply.status),
                    reply.body.len()
                );
                for (name, value) in &reply.headers {
                    head += &format!("{name}: {value}\r\n");
                }
                if close_after {
                    head += "connection: close\r\n";
                }
                head += "\r\n";
                let mut out = head.into_bytes();
                out.extend_from_slice(&reply.body);
                // Done before the answer leaves, so that the sender never sees a request as
                // answered that the receiver still counts.
                finish(&shared);
                stream.write_all(&out).is_ok() && stream.flush().is_ok() && !close_after
            }
            Action::Close(delay) => {
                pause(delay, &shared);
                finish(&shared);
                let _ = stream.shutdown(Shutdown::Both);
                false
            }
            Action::Reset(delay) => {
                pause(delay, &shared);
                finish(&shared);
                let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
                false
            }
        };
        if !keep_going {
            return; // dropping the stream closes (or, with linger 0, resets) it
        }
    }
}

fn finish(shared: &Shared) {
    let mut log = shared.log.lock().unwrap();
    log.in_flight -= 1;
    shared.changed.notify_all();
}
