//! A webhook receiver for tests: an HTTP/1.1 listener that takes POSTs of
//! JSON arrays (ringpost's delivery events), answers the first
//! `fail_first` with 503 (an endpoint that is down, then recovers), those
//! holding a given text with 400 (an event it refuses for good), and keeps
//! every event of the POSTs it answered with 200, in arrival order.
//! Blocking sockets on a thread of its own; one request per connection.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running receiver.
pub struct EventSink {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    events: Mutex<Vec<serde_json::Value>>,
    requests: AtomicUsize,
    refused: AtomicUsize,
    authorization: Mutex<Vec<String>>,
}

impl EventSink {
    /// Listen on `addr` (port 0: any); refuse the first `fail_first` POSTs.
    pub fn start(addr: SocketAddr, fail_first: usize) -> std::io::Result<EventSink> {
        EventSink::start_refusing(addr, fail_first, None)
    }

    /// The same, and answer 400 to every POST whose body holds `refuse`.
    pub fn start_refusing(
        addr: SocketAddr,
        fail_first: usize,
        refuse: Option<String>,
    ) -> std::io::Result<EventSink> {
        EventSink::start_with(addr, fail_first, "503 Service Unavailable", refuse)
    }

    /// Answer the first `fail_first` POSTs with `status` (e.g. `"401
    /// Unauthorized"`: an endpoint whose secret is being rotated).
    pub fn start_answering(
        addr: SocketAddr,
        fail_first: usize,
        status: &'static str,
    ) -> std::io::Result<EventSink> {
        EventSink::start_with(addr, fail_first, status, None)
    }

    fn start_with(
        addr: SocketAddr,
        fail_first: usize,
        failing: &'static str,
        refuse: Option<String>,
    ) -> std::io::Result<EventSink> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let serving = shared.clone();
        std::thread::Builder::new()
            .name("event-sink".into())
            .spawn(move || {
                for stream in listener.incoming().flatten() {
                    let _ = serve(stream, &serving, (fail_first, failing), refuse.as_deref());
                }
            })?;
        Ok(EventSink { addr, shared })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every event taken so far.
    pub fn events(&self) -> Vec<serde_json::Value> {
        self.shared.events.lock().unwrap().clone()
    }

    /// POSTs seen, and of them those refused.
    pub fn requests(&self) -> (usize, usize) {
        (
            self.shared.requests.load(Ordering::Relaxed),
            self.shared.refused.load(Ordering::Relaxed),
        )
    }

    /// The Authorization headers seen.
    pub fn authorizations(&self) -> Vec<String> {
        self.shared.authorization.lock().unwrap().clone()
    }

    /// Wait until `done` holds for the events taken, or `timeout`.
    pub fn wait_for(&self, timeout: Duration, done: impl Fn(&[serde_json::Value]) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if done(&self.events()) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Answer one POST; the first `fail_first` with `failing`.
fn serve(
    stream: TcpStream,
    shared: &Shared,
    (fail_first, failing): (usize, &str),
    refuse: Option<&str>,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut length = 0;
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        let field = line.trim_end();
        if field.is_empty() {
            break;
        }
        if let Some((name, value)) = field.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
            if name.eq_ignore_ascii_case("authorization") {
                shared
                    .authorization
                    .lock()
                    .unwrap()
                    .push(value.trim().to_owned());
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let n = shared.requests.fetch_add(1, Ordering::Relaxed);
    let parsed: Option<Vec<serde_json::Value>> = serde_json::from_slice(&body).ok();
    let poisoned = refuse.is_some_and(|text| String::from_utf8_lossy(&body).contains(text));
    let status = match (n < fail_first, parsed) {
        (false, Some(_)) if poisoned => "400 Bad Request",
        (false, Some(events)) => {
            shared.events.lock().unwrap().extend(events);
            "200 OK"
        }
        (false, None) => "400 Bad Request",
        (true, _) => {
            shared.refused.fetch_add(1, Ordering::Relaxed);
            failing
        }
    };
    write!(
        writer,
        "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    writer.flush()
}
