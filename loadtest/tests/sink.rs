//! End-to-end tests of the SMTP sink: started in-process on 127.0.0.1 port 0
//! and driven by independent clients (Python's smtplib, and raw TCP from
//! std written here byte by byte), plus the `ringpost-blast sink` binary.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use ringpost_loadtest::sink::{self, Faults, ReceivedMessage, SinkConfig, SinkHandle};

const WAIT: Duration = Duration::from_secs(10);

fn temp_dir(name: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("sink-test-{}-{n}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn start(config: SinkConfig) -> SinkHandle {
    sink::start(config).expect("sink starts")
}

fn keeping(n: usize) -> SinkConfig {
    SinkConfig {
        keep_messages: n,
        ..SinkConfig::default()
    }
}

fn with_faults(faults: Faults) -> SinkConfig {
    SinkConfig {
        faults,
        keep_messages: 100,
        ..SinkConfig::default()
    }
}

/// A raw SMTP client: writes exactly the bytes it is given, reads replies.
struct Client {
    rd: BufReader<TcpStream>,
    wr: TcpStream,
}

impl Client {
    /// Connects without reading the greeting.
    fn raw(addr: SocketAddr) -> Self {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        s.set_nodelay(true).unwrap();
        Self {
            rd: BufReader::new(s.try_clone().unwrap()),
            wr: s,
        }
    }

    /// Connects, reads the 220 greeting and says EHLO.
    fn connect(addr: SocketAddr) -> Self {
        let mut c = Self::raw(addr);
        c.expect(220);
        c.cmd("EHLO raw.client.test", 250);
        c
    }

    fn send(&mut self, bytes: &[u8]) {
        self.wr.write_all(bytes).unwrap();
    }

    /// One whole reply: (code, text of all lines).
    fn reply(&mut self) -> (u16, String) {
        let mut text = String::new();
        loop {
            let mut line = String::new();
            let n = self.rd.read_line(&mut line).unwrap();
            assert!(n > 0, "connection closed; got so far: {text:?}");
            assert!(line.ends_with("\r\n"), "line without CRLF: {line:?}");
            text.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                return (line[..3].parse().unwrap(), text);
            }
        }
    }

    fn expect(&mut self, code: u16) -> String {
        let (got, text) = self.reply();
        assert_eq!(got, code, "{text}");
        text
    }

    fn cmd(&mut self, line: &str, code: u16) -> String {
        self.send(format!("{line}\r\n").as_bytes());
        self.expect(code)
    }

    /// True if the server closed the connection (EOF or reset).
    fn closed(&mut self) -> bool {
        let mut buf = [0u8; 64];
        matches!(self.rd.read(&mut buf), Ok(0) | Err(_))
    }

    /// One message with DATA; `body` is sent as given (already stuffed).
    /// Returns the final reply.
    fn data_message(&mut self, from: &str, rcpts: &[&str], body: &[u8]) -> (u16, String) {
        self.cmd(&format!("MAIL FROM:<{from}>"), 250);
        for r in rcpts {
            self.cmd(&format!("RCPT TO:<{r}>"), 250);
        }
        self.cmd("DATA", 354);
        self.send(body);
        self.send(b".\r\n");
        self.reply()
    }
}

fn message(n: u64) -> Vec<u8> {
    format!(
        "Message-ID: <{n}.test@client.test>\r\nX-Blast-Seq: {n:012}\r\nSubject: {n}\r\n\r\nbody {n}\r\n"
    )
    .into_bytes()
}

// ---------------------------------------------------------------------------
// Python smtplib

fn python(port: u16, out: &Path, mode: &str) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/sink_smtplib.py");
    let res = Command::new("python3")
        .arg(script)
        .arg(port.to_string())
        .arg(out)
        .arg(mode)
        .output()
        .expect("python3 runs");
    assert!(
        res.status.success(),
        "python client failed:\n{}\n{}",
        String::from_utf8_lossy(&res.stdout),
        String::from_utf8_lossy(&res.stderr)
    );
}

/// What the script says it sent: X-Test-Id → (envelope, bytes).
fn sent_by_python(dir: &Path) -> BTreeMap<String, (Vec<String>, Vec<u8>)> {
    let mut sent = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "eml") {
            let id = path.file_stem().unwrap().to_string_lossy().into_owned();
            let env = std::fs::read_to_string(path.with_extension("env")).unwrap();
            let env = env.split('\n').map(str::to_owned).collect();
            sent.insert(id, (env, std::fs::read(&path).unwrap()));
        }
    }
    sent
}

fn test_id(data: &[u8]) -> String {
    let text = String::from_utf8_lossy(data);
    text.lines()
        .find_map(|l| l.strip_prefix("X-Test-Id: "))
        .expect("X-Test-Id header")
        .to_owned()
}

/// Checks that the sink holds exactly what the script sent, byte for byte.
fn assert_same_as_sent(kept: &[ReceivedMessage], sent: &BTreeMap<String, (Vec<String>, Vec<u8>)>) {
    assert_eq!(kept.len(), sent.len());
    for m in kept {
        let id = test_id(&m.data);
        let (env, data) = &sent[&id];
        assert_eq!(&m.mail_from, &env[0], "{id}");
        assert_eq!(&m.recipients, &env[1..], "{id}");
        assert!(m.data == *data, "{id}: bytes differ");
    }
}

#[test]
fn python_smtplib_messages_arrive_byte_for_byte() {
    let out = temp_dir("py-out");
    let dump = temp_dir("py-dump");
    let sink = start(SinkConfig {
        keep_messages: 100,
        dump_dir: Some(dump.clone()),
        ..SinkConfig::default()
    });
    python(sink.addr().port(), &out, "accept");
    let sent = sent_by_python(&out);
    assert_eq!(sent.len(), 6);
    let kept = sink.messages();
    assert_same_as_sent(&kept, &sent);

    // The dump holds the same bytes, numbered in arrival order.
    for (i, m) in kept.iter().enumerate() {
        let n = i + 1;
        assert_eq!(
            std::fs::read(dump.join(format!("{n}.eml"))).unwrap(),
            m.data
        );
        let env: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dump.join(format!("{n}.json"))).unwrap())
                .unwrap();
        assert_eq!(env["mail_from"], m.mail_from.as_str());
        assert_eq!(env["rcpt_to"], serde_json::json!(m.recipients));
        assert_eq!(env["helo"], "client.example");
    }
    let stats = sink.stop();
    assert_eq!(stats.messages, 6);
    assert_eq!(stats.connections, 2);
    assert_eq!(stats.recipients, 7);
    assert_eq!(
        stats.bytes,
        kept.iter().map(|m| m.data.len() as u64).sum::<u64>()
    );
    assert_eq!((stats.tempfails, stats.permfails, stats.refused), (0, 0, 0));
    std::fs::remove_dir_all(&out).unwrap();
    std::fs::remove_dir_all(&dump).unwrap();
}

#[test]
fn python_smtplib_retries_after_tempfail_data_first() {
    let out = temp_dir("py-retry");
    let sink = start(with_faults(Faults {
        tempfail_data_first: 1,
        ..Faults::default()
    }));
    python(sink.addr().port(), &out, "tempfail-first");
    assert_same_as_sent(&sink.messages(), &sent_by_python(&out));
    let stats = sink.stop();
    assert_eq!((stats.messages, stats.tempfails), (1, 1));
    std::fs::remove_dir_all(&out).unwrap();
}

// ---------------------------------------------------------------------------
// Raw TCP

#[test]
fn pipelined_transactions_are_answered_in_order() {
    let sink = start(keeping(10));
    let mut c = Client::connect(sink.addr());
    // Three whole transactions, bodies included, plus QUIT in one write.
    let mut burst = Vec::new();
    for n in 1..=3u64 {
        burst.extend_from_slice(
            format!(
                "MAIL FROM:<p{n}@x.test>\r\nRCPT TO:<a@y.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n"
            )
            .as_bytes(),
        );
        burst.extend_from_slice(&message(n));
        burst.extend_from_slice(b".\r\n");
    }
    burst.extend_from_slice(b"NOOP\r\nQUIT\r\n");
    c.send(&burst);
    for n in 1..=3 {
        for code in [250, 250, 250, 354] {
            c.expect(code);
        }
        assert_eq!(c.expect(250), format!("250 2.0.0 Ok: {n}\r\n"));
    }
    c.expect(250);
    c.expect(221);
    assert!(c.closed());
    let kept = sink.messages();
    assert_eq!(kept.len(), 3);
    for (i, m) in kept.iter().enumerate() {
        let n = i as u64 + 1;
        assert_eq!(m.mail_from, format!("p{n}@x.test"));
        assert_eq!(m.recipients, ["a@y.test", "b@y.test"]);
        assert_eq!(m.data, message(n));
    }
    assert_eq!(sink.stats().recipients, 6);
}

#[test]
fn bdat_chunks_across_commands_and_writes() {
    let sink = start(keeping(10));
    let mut c = Client::connect(sink.addr());
    c.cmd("MAIL FROM:<chunk@x.test>", 250);
    c.cmd("RCPT TO:<r@y.test>", 250);
    // The chunks hold what would end DATA; BDAT takes them by count.
    let parts: [&[u8]; 3] = [
        b"Subject: c\r\n\r\n",
        b"line\r\n.\r\n..dot\r\n",
        b"\r\nlast\r\n",
    ];
    c.send(format!("BDAT {}\r\n", parts[0].len()).as_bytes());
    c.send(parts[0]);
    assert_eq!(
        c.expect(250),
        format!("250 2.0.0 {} octets received\r\n", parts[0].len())
    );
    // Header and chunk split over writes, the chunk one byte at a time.
    c.send(format!("BDAT {}", parts[1].len()).as_bytes());
    thread::sleep(Duration::from_millis(20));
    c.send(b"\r\n");
    for b in parts[1] {
        c.send(&[*b]);
    }
    c.expect(250);
    // The last chunk pipelined with the next transaction.
    let mut tail = format!("BDAT {} LAST\r\n", parts[2].len()).into_bytes();
    tail.extend_from_slice(parts[2]);
    tail.extend_from_slice(b"MAIL FROM:<>\r\nRCPT TO:<z@y.test>\r\nBDAT 0 LAST\r\n");
    c.send(&tail);
    assert_eq!(c.expect(250), "250 2.0.0 Ok: 1\r\n");
    c.expect(250);
    c.expect(250);
    assert_eq!(c.expect(250), "250 2.0.0 Ok: 2\r\n");
    // DATA is refused once BDAT started a transaction; BDAT without MAIL
    // still has its octets consumed.
    c.cmd("MAIL FROM:<m@x.test>", 250);
    c.cmd("RCPT TO:<r@y.test>", 250);
    c.send(b"BDAT 3\r\nabc");
    c.expect(250);
    c.cmd("DATA", 503);
    c.cmd("RSET", 250);
    c.send(b"BDAT 4 LAST\r\nQUIT");
    c.expect(503);
    c.cmd("NOOP", 250);

    let kept = sink.messages();
    assert_eq!(kept.len(), 2);
    assert_eq!(kept[0].data, parts.concat());
    assert_eq!(kept[0].mail_from, "chunk@x.test");
    assert_eq!(kept[1].data, b"");
    assert_eq!(kept[1].mail_from, "");
}

#[test]
fn dot_unstuffing_is_byte_exact() {
    let sink = start(keeping(10));
    let mut c = Client::connect(sink.addr());
    // What the client means to send, and the same stuffed for the wire.
    let meant: &[u8] = b"Subject: dots\r\n\r\n.\r\n..\r\n.a\r\nx\n.\r\ny\r.\r\n\
        \xff\x00binary\r\n\r\n \r\n.\r.\r\nend";
    let stuffed: &[u8] = b"Subject: dots\r\n\r\n..\r\n...\r\n..a\r\nx\n.\r\ny\r.\r\n\
        \xff\x00binary\r\n\r\n \r\n..\r.\r\nend";
    // The final CRLF belongs to the message; the dot line ends it.
    let wire = [stuffed, b"\r\n"].concat();
    c.cmd("MAIL FROM:<d@x.test>", 250);
    c.cmd("RCPT TO:<r@y.test>", 250);
    c.cmd("DATA", 354);
    // Sent in awkward pieces: CR, LF and the dot arrive in separate reads.
    for piece in wire.chunks(3) {
        c.send(piece);
        thread::sleep(Duration::from_millis(1));
    }
    c.send(b".");
    thread::sleep(Duration::from_millis(20));
    c.send(b"\r");
    thread::sleep(Duration::from_millis(20));
    c.send(b"\n");
    c.expect(250);
    // LF.LF and CR.CR never end the data: the next message is only
    // complete at a real CRLF.CRLF.
    let (code, _) = c.data_message("e@x.test", &["r@y.test"], b"a\n.\nb\r.\rc\r\n");
    assert_eq!(code, 250);

    let kept = sink.messages();
    assert_eq!(kept[0].data, [meant, b"\r\n"].concat());
    assert_eq!(kept[1].data, b"a\n.\nb\r.\rc\r\n");
}

#[test]
fn tempfail_data_first_then_success() {
    let sink = start(with_faults(Faults {
        tempfail_data_first: 2,
        ..Faults::default()
    }));
    let mut c = Client::connect(sink.addr());
    let mut codes = Vec::new();
    for n in 0..4 {
        let (code, text) = c.data_message("s@x.test", &["r@y.test"], &message(n));
        if code == 451 {
            assert!(text.starts_with("451 4.3.0 "), "{text}");
        }
        codes.push(code);
    }
    assert_eq!(codes, [451, 451, 250, 250]);
    let stats = sink.stop();
    assert_eq!(
        (stats.messages, stats.tempfails, stats.permfails),
        (2, 2, 0)
    );
}

#[test]
fn refused_connections_get_554_and_are_closed() {
    let sink = start(with_faults(Faults {
        refuse_pct: 100.0,
        ..Faults::default()
    }));
    for _ in 0..3 {
        let mut c = Client::raw(sink.addr());
        assert_eq!(c.expect(554), "554 5.3.2 refused\r\n");
        assert!(c.closed());
    }
    let stats = sink.stop();
    assert_eq!(
        (stats.connections, stats.refused, stats.messages),
        (3, 3, 0)
    );
}

#[test]
fn connections_over_max_connections_get_421_and_the_peak_is_counted() {
    let sink = start(with_faults(Faults {
        max_connections: 2,
        ..Faults::default()
    }));
    let first = Client::connect(sink.addr());
    let second = Client::connect(sink.addr());
    for _ in 0..2 {
        let mut c = Client::raw(sink.addr());
        assert!(c.expect(421).starts_with("421 4.7.0 Too many concurrent"));
        assert!(c.closed());
    }
    // A slot frees when a connection ends.
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut third = loop {
        let mut c = Client::raw(sink.addr());
        let (code, _) = c.reply();
        if code == 220 {
            break c;
        }
        assert!(Instant::now() < deadline, "the slot never freed");
        thread::sleep(Duration::from_millis(20));
    };
    third.cmd("QUIT", 221);
    drop(second);
    let stats = sink.stop();
    assert!(stats.throttled >= 2, "{stats:?}");
    assert_eq!(stats.peak_connections, 2, "{stats:?}");
}

#[test]
fn permfail_rcpt_refuses_every_recipient() {
    let sink = start(with_faults(Faults {
        permfail_rcpt_pct: 100.0,
        ..Faults::default()
    }));
    let mut c = Client::connect(sink.addr());
    c.cmd("MAIL FROM:<s@x.test>", 250);
    assert!(c.cmd("RCPT TO:<a@y.test>", 550).starts_with("550 5.1.1 "));
    c.cmd("RCPT TO:<b@y.test>", 550);
    c.cmd("DATA", 554);
    c.send(b"BDAT 2 LAST\r\nhi");
    c.expect(554);
    c.cmd("QUIT", 221);
    let stats = sink.stop();
    assert_eq!(
        (stats.permfails, stats.tempfails, stats.messages),
        (2, 0, 0)
    );
}

#[test]
fn same_seed_same_faults() {
    let run = |seed| {
        let sink = start(with_faults(Faults {
            tempfail_rcpt_pct: 30.0,
            permfail_rcpt_pct: 20.0,
            tempfail_data_pct: 25.0,
            permfail_data_pct: 25.0,
            seed,
            ..Faults::default()
        }));
        let mut codes = Vec::new();
        for _ in 0..4 {
            let mut c = Client::connect(sink.addr());
            for n in 0..10 {
                c.cmd("MAIL FROM:<s@x.test>", 250);
                c.send(b"RCPT TO:<a@y.test>\r\n");
                let code = c.reply().0;
                codes.push(code);
                if code == 250 {
                    c.cmd("DATA", 354);
                    c.send(&message(n));
                    c.send(b".\r\n");
                    codes.push(c.reply().0);
                } else {
                    c.cmd("RSET", 250);
                }
            }
        }
        let stats = sink.stop();
        let fails = codes.iter().filter(|&&c| c >= 400).count() as u64;
        assert_eq!(stats.tempfails + stats.permfails, fails);
        codes
    };
    let a = run(7);
    assert_eq!(a, run(7));
    assert_ne!(a, run(8));
    for code in [250, 450, 550, 451, 554] {
        assert!(a.contains(&code), "{code} never drawn in {a:?}");
    }
}

#[test]
fn exit_after_answers_the_last_message_then_stops() {
    let sink = start(SinkConfig {
        exit_after: Some(2),
        keep_messages: 10,
        ..SinkConfig::default()
    });
    let addr = sink.addr();
    let mut c = Client::connect(addr);
    let mut idle = Client::connect(addr);
    assert_eq!(
        c.data_message("s@x.test", &["r@y.test"], &message(1)).0,
        250
    );
    // The second (last) message and a third, pipelined: the last is
    // answered, the one after it is not accepted.
    let mut burst = Vec::new();
    for n in 2..=3 {
        burst.extend_from_slice(b"MAIL FROM:<s@x.test>\r\nRCPT TO:<r@y.test>\r\nDATA\r\n");
        burst.extend_from_slice(&message(n));
        burst.extend_from_slice(b".\r\n");
    }
    c.send(&burst);
    for code in [250, 250, 354] {
        c.expect(code);
    }
    assert_eq!(c.expect(250), "250 2.0.0 Ok: 2\r\n");
    // The third gets 421 if it arrived with the second; if it came in a
    // later read, the stop may close the connection first. Either way it is
    // not accepted.
    let mut rest = String::new();
    let _ = c.rd.read_to_string(&mut rest);
    assert!(
        "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n\
         421 4.3.2 Service shutting down\r\n"
            .starts_with(&rest),
        "{rest}"
    );
    sink.wait();
    // Stopping closes idle connections and the listener.
    assert!(idle.closed());
    let stats = sink.stop();
    assert_eq!(stats.messages, 2);
    assert!(TcpStream::connect(addr).is_err());
}

#[test]
fn dump_dir_and_id_log_contents() {
    let dir = temp_dir("dump");
    let log = dir.join("ids.log");
    let dump = dir.join("msgs");
    let sink = start(SinkConfig {
        dump_dir: Some(dump.clone()),
        id_log: Some(log.clone()),
        ..SinkConfig::default()
    });
    let mut c = Client::connect(sink.addr());
    c.cmd("HELO dumper.test", 250);
    for n in 1..=3 {
        assert_eq!(
            c.data_message("s@x.test", &["a@y.test", "b@y.test"], &message(n))
                .0,
            250
        );
    }
    // No X-Blast-Seq, no Message-ID.
    assert_eq!(
        c.data_message("", &["c@y.test"], b"Subject: bare\r\n\r\nhi\r\n")
            .0,
        250
    );
    // The line is in the log as soon as the 250 is read, before any stop.
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        text,
        "<1.test@client.test> 000000000001\n<2.test@client.test> 000000000002\n\
         <3.test@client.test> 000000000003\n- -\n"
    );
    for n in 1..=3u64 {
        assert_eq!(
            std::fs::read(dump.join(format!("{n}.eml"))).unwrap(),
            message(n)
        );
        let env: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dump.join(format!("{n}.json"))).unwrap())
                .unwrap();
        assert_eq!(
            env,
            serde_json::json!({"mail_from": "s@x.test", "rcpt_to": ["a@y.test", "b@y.test"], "helo": "dumper.test"})
        );
    }
    let env: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dump.join("4.json")).unwrap()).unwrap();
    assert_eq!(env["mail_from"], "");
    assert!(sink.messages().is_empty(), "keep_messages is 0");
    drop(sink);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn overlong_line_is_refused_and_the_session_goes_on() {
    let sink = start(keeping(1));
    let mut c = Client::connect(sink.addr());
    let long = format!("MAIL FROM:<{}@x.test>\r\n", "a".repeat(10_000));
    // Streamed in pieces so that the sink sees the line grow past the limit.
    for piece in long.as_bytes().chunks(1000) {
        c.send(piece);
        thread::sleep(Duration::from_millis(2));
    }
    assert!(c.expect(500).starts_with("500 5.5.0 "));
    c.cmd("NOOP", 250);
    c.cmd("FROB", 500);
    assert_eq!(
        c.data_message("s@x.test", &["r@y.test"], &message(1)).0,
        250
    );
    assert_eq!(sink.messages().len(), 1);
}

#[test]
fn oversized_announcement_is_refused() {
    let sink = start(SinkConfig::default());
    let mut c = Client::connect(sink.addr());
    assert!(c
        .cmd("MAIL FROM:<s@x.test> SIZE=1000000000", 552)
        .starts_with("552 5.3.4 "));
    c.cmd("MAIL FROM:<s@x.test> SIZE=1000", 250);
}

#[test]
fn latency_delays_the_end_of_data_reply() {
    let sink = start(with_faults(Faults {
        latency: Duration::from_millis(150),
        ..Faults::default()
    }));
    let mut c = Client::connect(sink.addr());
    let t0 = Instant::now();
    c.cmd("MAIL FROM:<s@x.test>", 250);
    c.cmd("RCPT TO:<r@y.test>", 250);
    assert!(
        t0.elapsed() < Duration::from_millis(150),
        "commands are not delayed"
    );
    c.cmd("DATA", 354);
    c.send(b"hi\r\n.\r\n");
    c.expect(250);
    assert!(t0.elapsed() >= Duration::from_millis(150));
}

#[test]
fn several_threads_share_one_port() {
    let sink = start(SinkConfig {
        threads: 4,
        keep_messages: 1000,
        ..SinkConfig::default()
    });
    let addr = sink.addr();
    let clients: Vec<_> = (0..16u64)
        .map(|k| {
            thread::spawn(move || {
                let mut c = Client::connect(addr);
                for n in 0..25 {
                    let (code, _) =
                        c.data_message("s@x.test", &["r@y.test"], &message(k * 100 + n));
                    assert_eq!(code, 250);
                }
                c.cmd("QUIT", 221);
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    assert!(sink.wait_for_messages(400, WAIT));
    assert!(!sink.wait_for_messages(401, Duration::from_millis(20)));
    let kept = sink.messages();
    assert_eq!(kept.len(), 400);
    let stats = sink.stop();
    assert_eq!((stats.messages, stats.connections), (400, 16));
    assert!(stats.msg_per_sec() > 0.0);
    assert!(stats.first_message_secs <= stats.last_message_secs);
}

#[test]
fn stop_is_prompt_with_idle_connections() {
    let sink = start(SinkConfig {
        threads: 2,
        ..SinkConfig::default()
    });
    let mut idle: Vec<_> = (0..8).map(|_| Client::connect(sink.addr())).collect();
    let t0 = Instant::now();
    let stats = sink.stop();
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    assert_eq!(stats.connections, 8);
    for c in &mut idle {
        assert!(c.closed());
    }
}

#[test]
fn bad_configurations_fail_to_start() {
    let zero = SinkConfig {
        threads: 0,
        ..SinkConfig::default()
    };
    assert!(sink::start(zero).is_err());
    let pct = with_faults(Faults {
        refuse_pct: 150.0,
        ..Faults::default()
    });
    assert!(sink::start(pct).is_err());
    let taken = start(SinkConfig::default());
    let again = SinkConfig {
        listen: taken.addr(),
        ..SinkConfig::default()
    };
    assert!(sink::start(again).is_err());
}

// ---------------------------------------------------------------------------
// The binary

/// Starts `ringpost-blast sink ARGS` on port 0; returns it and its address.
fn spawn_sink(
    args: &[&str],
) -> (
    std::process::Child,
    BufReader<std::process::ChildStdout>,
    SocketAddr,
) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringpost-blast"))
        .args(["sink", "--listen", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    let addr = first
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("first line: {first:?}"))
        .trim()
        .parse()
        .unwrap();
    (child, stdout, addr)
}

/// Waits (bounded) for the child to exit; returns its exit code.
fn exit_code(child: &mut std::process::Child) -> Option<i32> {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("sink did not exit");
        }
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn cli_exit_after_reports_json() {
    let dir = temp_dir("cli");
    let log = dir.join("ids.log");
    let (mut child, mut stdout, addr) = spawn_sink(&[
        "--exit-after",
        "3",
        "--json",
        "--threads",
        "2",
        "--tempfail-data-first",
        "1",
        "--id-log",
        log.to_str().unwrap(),
    ]);
    let mut c = Client::connect(addr);
    let mut codes = Vec::new();
    for n in 1..=4 {
        codes.push(
            c.data_message("s@x.test", &["a@y.test", "b@y.test"], &message(n))
                .0,
        );
    }
    assert_eq!(codes, [451, 250, 250, 250]);
    assert_eq!(exit_code(&mut child), Some(0));
    let mut report = String::new();
    stdout.read_to_string(&mut report).unwrap();
    let json: serde_json::Value = serde_json::from_str(report.trim()).unwrap();
    assert_eq!(json["messages"], 3, "{json}");
    assert_eq!(json["recipients"], 6);
    assert_eq!(json["tempfails"], 1);
    assert_eq!(json["connections"], 1);
    assert_eq!(json["refused"], 0);
    assert!(json["bytes"].as_u64().unwrap() > 0);
    assert!(json["msg_per_sec"].as_f64().unwrap() > 0.0);
    assert_eq!(std::fs::read_to_string(&log).unwrap().lines().count(), 3);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn cli_sigterm_prints_the_text_report() {
    let (mut child, mut stdout, addr) = spawn_sink(&[]);
    let mut c = Client::connect(addr);
    assert_eq!(
        c.data_message("s@x.test", &["r@y.test"], &message(1)).0,
        250
    );
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    assert_eq!(exit_code(&mut child), Some(0));
    let mut report = String::new();
    stdout.read_to_string(&mut report).unwrap();
    assert!(report.contains("messages:      1\n"), "{report}");
    assert!(report.contains("connections:   1\n"), "{report}");
    assert!(report.contains("msg/s"), "{report}");
}

#[test]
fn cli_bad_usage_exits_2() {
    for args in [
        &["--threads", "0"][..],
        &["--refuse", "101"],
        &["--exit-after", "0"],
        &["--listen", "no-such-host.invalid:25"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_ringpost-blast"))
            .arg("sink")
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(!out.stderr.is_empty());
    }
}
