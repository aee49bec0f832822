//! Helpers shared by the engine's integration tests: a server on loopback
//! port 0 with its own data dir, and a tiny line-based SMTP client.
#![allow(dead_code)]

use ringpost_engine::{Config, RunningServer};
use ringpost_storage::{users, WriteBatch};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// A server on 127.0.0.1 with ephemeral ports and a fresh RocksDB dir.
pub fn start_server(tweak: impl FnOnce(&mut Config)) -> (RunningServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config {
        hostname: "mx.test".into(),
        data_dir: dir.path().join("data"),
        shards: 2,
        pin_shards: false,
        ..Config::default()
    };
    config.use_ephemeral_ports([127, 0, 0, 1].into());
    // Tests of the receiving side keep their mail; relay tests turn this on.
    config.relay.enabled = false;
    // No DNS for SPF, DKIM and DMARC unless a test gives it a server.
    config.inbound_auth.enabled = false;
    // A small free-space reserve, so a test machine with little disk left
    // still runs these (the disk-full test sets its own).
    config.store.min_free_disk_mb = 16;
    tweak(&mut config);
    (ringpost_engine::start(config).expect("server starts"), dir)
}

/// Create the account `name` (password "secret") in a running server's store,
/// as `ringpost user add` would on a stopped one.
pub fn add_user(server: &RunningServer, name: &str) {
    let user = ringpost_engine::users::new_account(name, "secret", None, 1).unwrap();
    let mut batch = WriteBatch::new();
    users::put_user(&mut batch, &user);
    server.store().write(&[batch], true).unwrap();
}

/// Remove the account `name` (and its mailboxes) from a running server,
/// through its commit writer.
pub fn delete_user(server: &RunningServer, name: &str) {
    let mut batch = WriteBatch::new();
    users::delete_user(&mut batch, name);
    server.commit_handle().commit_blocking(batch).unwrap();
}

/// A blocking SMTP client for tests: send lines, read replies.
pub struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    /// Connect and read the greeting; returns the client and the greeting.
    pub fn connect(addr: std::net::SocketAddr) -> (Client, String) {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut c = Client::from_stream(stream);
        let greeting = c.reply();
        (c, greeting)
    }

    /// A client on a connected stream (nothing read yet).
    pub fn from_stream(stream: TcpStream) -> Client {
        Client {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
        }
    }

    /// The underlying stream (for raw writes).
    pub fn stream(&mut self) -> TcpStream {
        self.writer.try_clone().unwrap()
    }

    /// Send raw bytes.
    pub fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).unwrap();
    }

    /// Read one whole reply (all lines); empty string on EOF.
    pub fn reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line).unwrap_or(0) == 0 {
                return all;
            }
            all.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                return all;
            }
        }
    }

    /// Send a command line and return its reply.
    pub fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes());
        self.reply()
    }

    /// True once the server has closed the connection.
    pub fn closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.reader.read(&mut b), Ok(0))
    }
}

/// Open `count` SMTP sessions to `addr`, each taken by `begin` as far as
/// the 354 of DATA (all of them before any sends its message), then end
/// each message in turn: the replies after the final dot, in order. What
/// a limit checked at RCPT and again at the end of DATA does with
/// sessions that passed RCPT together.
pub fn messages_ended_together(
    addr: std::net::SocketAddr,
    count: usize,
    begin: impl Fn(&mut Client),
) -> Vec<String> {
    let mut sessions: Vec<Client> = (0..count)
        .map(|_| {
            let (mut c, _) = Client::connect(addr);
            begin(&mut c);
            assert!(c.cmd("DATA").starts_with("354"));
            c
        })
        .collect();
    sessions
        .iter_mut()
        .map(|c| c.cmd("Subject: at once\r\n\r\nhi\r\n."))
        .collect()
}

/// How many of `replies` start with `prefix`.
pub fn count_starting(replies: &[String], prefix: &str) -> usize {
    replies.iter().filter(|r| r.starts_with(prefix)).count()
}

/// Fetch a URL path from a local HTTP server.
pub fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut c = TcpStream::connect(addr).unwrap();
    write!(
        c,
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut s = String::new();
    c.read_to_string(&mut s).unwrap();
    s
}

/// The server's `/metrics` text once it contains each of `lines` (metrics
/// counted just after a reply went out may lag it), or panics after 10 s.
pub fn metrics_with(server: &RunningServer, lines: &[&str]) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = http_get(server.metrics_addr().unwrap(), "/metrics");
        if lines.iter().all(|line| metrics.contains(line)) {
            return metrics;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "waiting for {lines:?} in\n{metrics}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Split a stored message into its leading Received: header and the rest.
pub fn split_trace_header(stored: &[u8]) -> (&[u8], &[u8]) {
    // Local delivery puts the envelope sender on top (RFC 5321 §4.4).
    let stored = match stored.starts_with(b"Return-Path: ") {
        true => &stored[stored.iter().position(|&b| b == b'\n').unwrap() + 1..],
        false => stored,
    };
    assert!(
        stored.starts_with(b"Received: "),
        "stored message starts with a trace header"
    );
    let mut end = 0;
    loop {
        let nl = stored[end..]
            .iter()
            .position(|&b| b == b'\n')
            .expect("header line ends")
            + end
            + 1;
        end = nl;
        if !matches!(stored.get(end), Some(b' ') | Some(b'\t')) {
            return stored.split_at(end);
        }
    }
}

/// Run one of the Python client scripts in `tests/clients/` (independent
/// clients: smtplib, poplib, imaplib) with `args`; fail the test with its
/// output unless it exits 0.
pub fn run_python_client(script: &str, args: &[String]) {
    let path = format!("{}/tests/clients/{script}", env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new("python3")
        .arg(&path)
        .args(args)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{script} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A line-at-a-time client for the error paths real clients hide (POP3,
/// IMAP): send a line, read lines back.
pub struct LineClient {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl LineClient {
    /// Connect; returns the client and the greeting line.
    pub fn connect(addr: std::net::SocketAddr) -> (LineClient, String) {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut c = LineClient::from_stream(stream);
        let greeting = c.line();
        (c, greeting)
    }

    /// A client on a connected stream (nothing read yet).
    pub fn from_stream(stream: TcpStream) -> LineClient {
        LineClient {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
        }
    }

    /// One line, CRLF included; empty on EOF.
    pub fn line(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap_or(0);
        line
    }

    /// Send bytes as they are.
    pub fn send(&mut self, bytes: &str) {
        self.writer.write_all(bytes.as_bytes()).unwrap();
    }

    /// Send raw bytes (literals).
    pub fn send_bytes(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).unwrap();
    }

    /// Exactly `n` bytes (a literal's octets).
    pub fn read_exact(&mut self, n: usize) -> Vec<u8> {
        let mut out = vec![0; n];
        std::io::Read::read_exact(&mut self.reader, &mut out).unwrap();
        out
    }

    /// Send `line` with CRLF; return the one line that answers it.
    pub fn cmd(&mut self, line: &str) -> String {
        self.send(&format!("{line}\r\n"));
        self.line()
    }

    /// Send an IMAP command; return every line up to the tagged one.
    pub fn tagged(&mut self, tag: &str, line: &str) -> Vec<String> {
        self.send(&format!("{tag} {line}\r\n"));
        let mut lines = Vec::new();
        loop {
            let line = self.line();
            let done = line.starts_with(&format!("{tag} ")) || line.is_empty();
            lines.push(line);
            if done {
                return lines;
            }
        }
    }
}

/// `method path` on the admin API, with the token or without; the status
/// and the JSON answer.
pub fn admin_call(
    server: &RunningServer,
    method: &str,
    path: &str,
    body: &str,
    with_token: bool,
) -> (u16, serde_json::Value) {
    use std::io::{Read, Write};
    let token = std::fs::read_to_string(ringpost_engine::admin::token_path(
        &server.config().data_dir,
    ))
    .unwrap();
    let authorization = match with_token {
        true => format!("Authorization: Bearer {}\r\n", token.trim()),
        false => String::new(),
    };
    let mut c = std::net::TcpStream::connect(server.metrics_addr().unwrap()).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        c,
        "{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{authorization}\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    let _ = c.read_to_string(&mut answer);
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    let status = head[9..12].parse().unwrap();
    (status, serde_json::from_str(body).unwrap())
}

/// A TCP connection to `to` from the loopback address `from` (another
/// client, as far as the server can tell), with a read timeout.
pub fn connect_from(from: &str, to: std::net::SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let here: std::net::SocketAddr = format!("{from}:0").parse().unwrap();
    socket.bind(&here.into()).unwrap();
    socket.connect(&to.into()).unwrap();
    let stream: TcpStream = socket.into();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream
}

/// One transaction on `c`: MAIL, each RCPT, then `data` (CRLF lines, dot
/// stuffed here) and the final dot. The reply to the first refused RCPT
/// (the transaction then reset), else the reply to the message.
pub fn transaction(c: &mut Client, from: &str, to: &[&str], data: &[u8]) -> String {
    assert!(c.cmd(&format!("MAIL FROM:<{from}>")).starts_with("250"));
    for rcpt in to {
        let reply = c.cmd(&format!("RCPT TO:<{rcpt}>"));
        if !reply.starts_with("250") {
            c.cmd("RSET");
            return reply;
        }
    }
    assert!(c.cmd("DATA").starts_with("354"));
    let mut stuffed = Vec::new();
    for line in data.split_inclusive(|&b| b == b'\n') {
        if line.starts_with(b".") {
            stuffed.push(b'.');
        }
        stuffed.extend_from_slice(line);
    }
    c.send(&stuffed);
    c.cmd(".")
}
