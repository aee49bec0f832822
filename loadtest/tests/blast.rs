//! End-to-end tests of the `ringpost-blast` binary against a tiny fake SMTP
//! server (std threads, 127.0.0.1, port 0) that accepts everything, checks
//! what it receives and counts it; variants refuse every third DATA. One
//! test sends to the blaster's own sink instead (see tests/sink.rs for the
//! sink itself).

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Where (if anywhere) the fake server says 451 to every third message.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Fail {
    None,
    /// `451` instead of `354` to the DATA command.
    DataCommand,
    /// `451` instead of `250` after the final dot.
    FinalDot,
}

#[derive(Default)]
struct Counters {
    sessions: AtomicU64,
    data_commands: AtomicU64,
    accepted: AtomicU64,
    refused: AtomicU64,
    /// Messages whose final dot came with the next MAIL already behind it
    /// (`--chain`).
    chained: AtomicU64,
    /// X-Blast-Seq values of accepted messages.
    seqs: Mutex<HashSet<String>>,
    /// Anything the server found wrong with what it received.
    problems: Mutex<Vec<String>>,
}

struct FakeServer {
    addr: SocketAddr,
    counters: Arc<Counters>,
}

impl FakeServer {
    fn start(fail: Fail) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let counters = Arc::new(Counters::default());
        let c = counters.clone();
        // The accept loop lives until the test process exits.
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let c = c.clone();
                thread::spawn(move || {
                    c.sessions.fetch_add(1, Ordering::Relaxed);
                    if let Err(e) = serve(stream, &c, fail) {
                        c.problems.lock().unwrap().push(format!("session: {e}"));
                    }
                });
            }
        });
        Self { addr, counters }
    }
}

/// One SMTP session. Replies are written per command, so pipelined input is
/// answered in order just like a real server would.
fn serve(stream: TcpStream, c: &Counters, fail: Fail) -> std::io::Result<()> {
    let mut out = stream.try_clone()?;
    let mut rd = BufReader::new(stream);
    out.write_all(b"220 fake.test ESMTP ready\r\n")?;
    let mut line = Vec::new();
    loop {
        line.clear();
        if rd.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        let cmd = String::from_utf8_lossy(&line).to_ascii_uppercase();
        let verb = cmd.get(..4).unwrap_or("");
        match verb {
            "EHLO" => out.write_all(
                b"250-fake.test\r\n250-PIPELINING\r\n250-SIZE 10000000\r\n250 8BITMIME\r\n",
            )?,
            "HELO" => out.write_all(b"250 fake.test\r\n")?,
            "MAIL" => out.write_all(b"250 2.1.0 Ok\r\n")?,
            "RCPT" => out.write_all(b"250 2.1.5 Ok\r\n")?,
            "RSET" | "NOOP" => out.write_all(b"250 2.0.0 Ok\r\n")?,
            "QUIT" => {
                out.write_all(b"221 2.0.0 Bye\r\n")?;
                return Ok(());
            }
            "DATA" => {
                let n = c.data_commands.fetch_add(1, Ordering::Relaxed) + 1;
                let refuse = n.is_multiple_of(3);
                if refuse && fail == Fail::DataCommand {
                    c.refused.fetch_add(1, Ordering::Relaxed);
                    out.write_all(b"451 4.3.0 Try again later\r\n")?;
                    continue;
                }
                out.write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")?;
                let seq = read_message(&mut rd, c)?;
                if rd.buffer().starts_with(b"MAIL FROM:") {
                    c.chained.fetch_add(1, Ordering::Relaxed);
                }
                if refuse && fail == Fail::FinalDot {
                    c.refused.fetch_add(1, Ordering::Relaxed);
                    out.write_all(b"451 4.3.0 Try again later\r\n")?;
                } else {
                    c.accepted.fetch_add(1, Ordering::Relaxed);
                    if !c.seqs.lock().unwrap().insert(seq.clone()) {
                        c.problems
                            .lock()
                            .unwrap()
                            .push(format!("duplicate seq {seq}"));
                    }
                    out.write_all(format!("250 2.0.0 Ok: queued as Q{n}\r\n").as_bytes())?;
                }
            }
            _ => out.write_all(b"500 5.5.2 Error: command not recognized\r\n")?,
        }
    }
}

/// Reads a message up to its final dot, checking line ends; returns its
/// X-Blast-Seq value.
fn read_message(rd: &mut impl BufRead, c: &Counters) -> std::io::Result<String> {
    let mut seq = None;
    let mut line = Vec::new();
    loop {
        line.clear();
        if rd.read_until(b'\n', &mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if line == b".\r\n" {
            break;
        }
        if !line.ends_with(b"\r\n") || line[..line.len() - 2].contains(&b'\r') {
            c.problems.lock().unwrap().push("bad line end".into());
        }
        if let Some(v) = line.strip_prefix(b"X-Blast-Seq: ") {
            seq = Some(String::from_utf8_lossy(&v[..v.len() - 2]).into_owned());
        }
    }
    Ok(seq.unwrap_or_else(|| {
        c.problems.lock().unwrap().push("no X-Blast-Seq".into());
        String::new()
    }))
}

fn temp_path(name: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("blast-test-{}-{n}-{name}", std::process::id()))
}

fn blast(args: &[&str]) -> (Output, Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_ringpost-blast"))
        .arg("send")
        .args(args)
        .arg("--json")
        .output()
        .expect("run ringpost-blast");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON object ({e}): {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out, json)
}

/// Runs 200 messages over 4 connections and checks the report against what
/// the server saw.
fn run_case(fail: Fail, pipelining: &str) {
    run_chained_case(fail, pipelining, "on");
}

/// The same, with `--chain` as given.
fn run_chained_case(fail: Fail, pipelining: &str, chain: &str) {
    let server = FakeServer::start(fail);
    let ack = temp_path("ack.log");
    let addr = server.addr.to_string();
    let (out, json) = blast(&[
        "--to-addr",
        &addr,
        "--messages",
        "200",
        "--connections",
        "4",
        "--threads",
        "2",
        "--size",
        "1500",
        "--pipelining",
        pipelining,
        "--chain",
        chain,
        "--ack-log",
        ack.to_str().unwrap(),
    ]);
    let c = &server.counters;
    let ok = json["messages_ok"].as_u64().unwrap();
    let failed = json["messages_failed"].as_u64().unwrap();
    let ctx = format!("{fail:?}/{pipelining}/chain {chain}: {json}");
    // Chained only when pipelining, and then nearly always (each message
    // but a connection's last, when the server read both at once).
    let chained = c.chained.load(Ordering::Relaxed);
    if pipelining == "on" && chain == "on" && fail != Fail::DataCommand {
        assert!(chained > 100, "{chained} chained: {ctx}");
    } else if pipelining == "off" || chain == "off" {
        assert_eq!(chained, 0, "{ctx}");
    }

    assert_eq!(ok + failed, 200, "{ctx}");
    assert_eq!(ok, c.accepted.load(Ordering::Relaxed), "{ctx}");
    assert_eq!(failed, c.refused.load(Ordering::Relaxed), "{ctx}");
    assert_eq!(
        c.seqs.lock().unwrap().len() as u64,
        ok,
        "unique seqs: {ctx}"
    );
    assert!(
        c.problems.lock().unwrap().is_empty(),
        "{:?}",
        c.problems.lock().unwrap()
    );
    assert_eq!(json["size"], 1500, "{ctx}");
    assert_eq!(json["pipelining"], pipelining == "on", "{ctx}");

    // One ack-log line per accepted message, naming the seq the server saw.
    let log = std::fs::read_to_string(&ack).unwrap();
    std::fs::remove_file(&ack).unwrap();
    let logged: HashSet<String> = log
        .lines()
        .map(|l| {
            let (seq, reply) = l.split_once(' ').expect("seq and reply");
            assert!(reply.starts_with("250 2.0.0 Ok: queued as Q"), "{l}");
            seq.to_owned()
        })
        .collect();
    assert_eq!(log.lines().count() as u64, ok, "{ctx}");
    assert_eq!(logged, *c.seqs.lock().unwrap(), "{ctx}");

    if fail == Fail::None {
        assert_eq!(out.status.code(), Some(0), "{ctx}");
        assert_eq!(failed, 0);
        assert_eq!(json["errors"].as_object().unwrap().len(), 0, "{ctx}");
    } else {
        // Every third DATA of 200 (plus retries of nothing: failed
        // messages are not resent) is refused.
        assert_eq!(out.status.code(), Some(1), "{ctx}");
        assert!(failed >= 60, "{ctx}");
        assert_eq!(json["errors"]["451"].as_u64(), Some(failed), "{ctx}");
        assert_eq!(json["errors"].as_object().unwrap().len(), 1, "{ctx}");
    }
    assert!(json["latency_ms"]["p50"].as_f64().unwrap() > 0.0 || ok == 0);
}

#[test]
fn clean_run_pipelined() {
    run_case(Fail::None, "on");
}

#[test]
fn clean_run_pipelined_unchained() {
    run_chained_case(Fail::None, "on", "off");
}

#[test]
fn refused_after_final_dot_pipelined_unchained() {
    run_chained_case(Fail::FinalDot, "on", "off");
}

#[test]
fn clean_run_lockstep() {
    run_case(Fail::None, "off");
}

#[test]
fn refused_data_command_pipelined() {
    run_case(Fail::DataCommand, "on");
}

#[test]
fn refused_data_command_lockstep() {
    run_case(Fail::DataCommand, "off");
}

#[test]
fn refused_after_final_dot_pipelined() {
    run_case(Fail::FinalDot, "on");
}

#[test]
fn refused_after_final_dot_lockstep() {
    run_case(Fail::FinalDot, "off");
}

#[test]
fn reconnects_after_messages_per_connection() {
    let server = FakeServer::start(Fail::None);
    let addr = server.addr.to_string();
    let (out, json) = blast(&[
        "--to-addr",
        &addr,
        "--messages",
        "100",
        "--connections",
        "2",
        "--messages-per-connection",
        "10",
        "--rcpts",
        "3",
    ]);
    assert_eq!(out.status.code(), Some(0), "{json}");
    assert_eq!(json["messages_ok"], 100);
    // 10 full sessions; a connection may race the other one for the last
    // message and open one more session that finds the budget spent.
    let sessions = server.counters.sessions.load(Ordering::Relaxed);
    assert!((10..=11).contains(&sessions), "{sessions} sessions");
}

#[test]
fn dead_server_ends_in_bounded_time_with_errors() {
    // Bind and drop, on an address no other test listens on: nothing
    // listens on this port any more.
    let addr = TcpListener::bind("127.0.0.9:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let t0 = Instant::now();
    let (out, json) = blast(&[
        "--to-addr",
        &addr.to_string(),
        "--messages",
        "1000",
        "--connections",
        "4",
    ]);
    assert!(
        t0.elapsed() < Duration::from_secs(20),
        "took {:?}",
        t0.elapsed()
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(json["messages_ok"], 0);
    // 4 connections × 5 attempts each.
    assert_eq!(json["errors"]["connect"], 20, "{json}");
}

#[test]
fn duration_mode_stops() {
    let server = FakeServer::start(Fail::None);
    let t0 = Instant::now();
    let (out, json) = blast(&[
        "--to-addr",
        &server.addr.to_string(),
        "--duration",
        "0.5",
        "--connections",
        "2",
    ]);
    assert!(t0.elapsed() < Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(0), "{json}");
    assert!(json["messages_ok"].as_u64().unwrap() > 0);
    assert_eq!(
        json["messages_ok"].as_u64().unwrap(),
        server.counters.accepted.load(Ordering::Relaxed)
    );
}

/// The blaster against its own sink: every acknowledged message is in the
/// sink's id log with the same X-Blast-Seq, and the sink's 250 (which
/// names the message number) is what the ack log recorded.
#[test]
fn send_to_the_sink_with_faults() {
    use ringpost_loadtest::sink::{self, Faults, SinkConfig};

    let dir = temp_path("sink");
    std::fs::create_dir_all(&dir).unwrap();
    let (ack, ids) = (dir.join("ack.log"), dir.join("ids.log"));
    let sink = sink::start(SinkConfig {
        threads: 2,
        id_log: Some(ids.clone()),
        faults: Faults {
            tempfail_data_first: 5,
            permfail_rcpt_pct: 10.0,
            seed: 3,
            ..Faults::default()
        },
        ..SinkConfig::default()
    })
    .unwrap();
    let (out, json) = blast(&[
        "--to-addr",
        &sink.addr().to_string(),
        "--messages",
        "300",
        "--connections",
        "4",
        "--threads",
        "2",
        "--ack-log",
        ack.to_str().unwrap(),
    ]);
    let stats = sink.stop();
    let ok = json["messages_ok"].as_u64().unwrap();
    assert_eq!(out.status.code(), Some(1), "{json}");
    assert_eq!(
        ok + json["messages_failed"].as_u64().unwrap(),
        300,
        "{json}"
    );
    assert_eq!(ok, stats.messages, "{json} {stats:?}");
    assert_eq!(json["errors"]["451"], 5, "{json}");
    assert_eq!(
        json["errors"]["550"].as_u64(),
        Some(stats.permfails),
        "{json}"
    );

    let acked: HashSet<String> = std::fs::read_to_string(&ack)
        .unwrap()
        .lines()
        .map(|l| {
            let (seq, reply) = l.split_once(' ').unwrap();
            assert!(reply.starts_with("250 2.0.0 Ok: "), "{l}");
            seq.to_owned()
        })
        .collect();
    let logged: HashSet<String> = std::fs::read_to_string(&ids)
        .unwrap()
        .lines()
        .map(|l| {
            let (id, seq) = l.split_once(' ').unwrap();
            assert!(id.starts_with('<') && id.ends_with('>'), "{l}");
            seq.to_owned()
        })
        .collect();
    assert_eq!(acked.len() as u64, ok);
    assert_eq!(acked, logged);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `--domains N`: each message's recipients are at `d<seq % N>.DOMAIN`.
#[test]
fn domains_spread_recipients_over_domains() {
    use ringpost_loadtest::sink::{self, SinkConfig};

    let sink = sink::start(SinkConfig {
        keep_messages: 100,
        ..SinkConfig::default()
    })
    .unwrap();
    let (out, json) = blast(&[
        "--to-addr",
        &sink.addr().to_string(),
        "--messages",
        "40",
        "--connections",
        "3",
        "--domains",
        "4",
        "--rcpts",
        "2",
        "--seq-start",
        "1001",
    ]);
    assert_eq!(out.status.code(), Some(0), "{json}");
    let messages = sink.messages();
    sink.stop();
    assert_eq!(messages.len(), 40);
    let mut per_domain = [0u32; 4];
    for m in &messages {
        let text = String::from_utf8_lossy(&m.data);
        let seq: u64 = text
            .split("\r\n")
            .find_map(|l| l.strip_prefix("X-Blast-Seq: "))
            .expect("X-Blast-Seq")
            .parse()
            .unwrap();
        let d = seq % 4;
        let want = [
            format!("user1@d{d}.example.test"),
            format!("user2@d{d}.example.test"),
        ];
        assert_eq!(m.recipients, want, "seq {seq}");
        per_domain[d as usize] += 1;
    }
    assert_eq!(per_domain, [10; 4]);
}

#[test]
fn bad_usage_exits_2() {
    let out = Command::new(env!("CARGO_BIN_EXE_ringpost-blast"))
        .args(["send", "--connections", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// `--size` mixes: every message has one of the sizes, in about the
/// weights asked; `--plot` draws the run as an SVG with both panels; no
/// progress line is redrawn when stderr is not a terminal.
#[test]
fn size_mix_plot_and_no_progress_in_a_pipe() {
    use ringpost_loadtest::sink::{self, SinkConfig};
    let sink = sink::start(SinkConfig {
        keep_messages: 1000,
        ..SinkConfig::default()
    })
    .unwrap();
    let plot = temp_path("run.svg");
    let (out, json) = blast(&[
        "--to-addr",
        &sink.addr().to_string(),
        "--messages",
        "400",
        "--connections",
        "4",
        "--size",
        "1k:75,8k:25",
        "--plot",
        plot.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{json}");
    assert_eq!(json["size_mix"], "1024:75,8192:25", "{json}");
    let sizes: Vec<usize> = sink.messages().iter().map(|m| m.data.len()).collect();
    assert_eq!(sizes.len(), 400);
    let small = sizes.iter().filter(|&&n| n.abs_diff(1024) < 64).count();
    let large = sizes.iter().filter(|&&n| n.abs_diff(8192) < 64).count();
    assert_eq!(small + large, 400, "{sizes:?}");
    assert!((250..=350).contains(&small), "{small} small of 400");
    let mean = json["size"].as_u64().unwrap();
    assert!((2500..=3200).contains(&mean), "{json}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains('\r'),
        "no redrawn line in a pipe: {stderr:?}"
    );

    // The SVG parses (Python's XML parser) and has both panels with lines.
    let check = "import sys, xml.etree.ElementTree as ET\n\
        ns = {'s': 'http://www.w3.org/2000/svg'}\n\
        root = ET.parse(sys.argv[1]).getroot()\n\
        for panel in ('throughput', 'latency'):\n\
        \x20   g = root.find(f\".//s:g[@id='{panel}']\", ns)\n\
        \x20   lines = g.findall('s:polyline', ns)\n\
        \x20   assert lines and any(l.get('points') for l in lines), panel\n\
        print('ok')\n";
    let parsed = Command::new("python3")
        .args(["-c", check, plot.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        parsed.status.success(),
        "{}",
        String::from_utf8_lossy(&parsed.stderr)
    );
    std::fs::remove_file(&plot).unwrap();
    sink.stop();
}

/// `--rate`: an open loop. Against a server slower than the rate, the
/// latencies count the wait behind the backlog (coordinated omission
/// corrected), where a closed loop would show only the server's 50 ms.
#[test]
fn open_loop_rate_counts_the_backlog() {
    use ringpost_loadtest::sink::{self, Faults, SinkConfig};
    let sink = sink::start(SinkConfig {
        faults: Faults {
            latency: Duration::from_millis(50),
            ..Faults::default()
        },
        ..SinkConfig::default()
    })
    .unwrap();
    let (out, json) = blast(&[
        "--to-addr",
        &sink.addr().to_string(),
        "--messages",
        "60",
        "--connections",
        "1",
        "--rate",
        "60",
    ]);
    assert!(out.status.success(), "{json}");
    assert_eq!(json["rate"], 60.0, "{json}");
    // 60 messages at 50 ms each take 3 s; they were due within 1 s, so the
    // last waited about 2 s beyond its 50 ms.
    let p99 = json["latency_ms"]["p99"].as_f64().unwrap();
    assert!(p99 > 1500.0, "{json}");
    let p50 = json["latency_ms"]["p50"].as_f64().unwrap();
    assert!(p50 > 500.0, "{json}");
    sink.stop();

    // A server that keeps up is held to the rate: 100 messages at 100/s.
    let sink = sink::start(SinkConfig::default()).unwrap();
    let started = std::time::Instant::now();
    let (_, json) = blast(&[
        "--to-addr",
        &sink.addr().to_string(),
        "--messages",
        "100",
        "--connections",
        "4",
        "--rate",
        "100",
    ]);
    let took = started.elapsed().as_secs_f64();
    assert!((0.95..3.0).contains(&took), "{took} s: {json}");
    assert!(
        json["latency_ms"]["p99"].as_f64().unwrap() < 200.0,
        "{json}"
    );
    sink.stop();
}

/// A port free right now on loopback.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Under a pseudo-terminal (`script`), `send` and `sink` redraw a progress
/// line in place.
#[test]
fn progress_is_redrawn_on_a_terminal() {
    let blast_bin = env!("CARGO_BIN_EXE_ringpost-blast");
    let port = free_port();
    let sink = Command::new("script")
        .args([
            "-qec",
            &format!("{blast_bin} sink --listen 127.0.0.1:{port} --exit-after 300"),
            "/dev/null",
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("script (util-linux) runs");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the sink did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let sent = Command::new("script")
        .args([
            "-qec",
            &format!(
                "{blast_bin} send --to-addr 127.0.0.1:{port} --messages 300 --connections 2 --rate 300"
            ),
            "/dev/null",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let sent = String::from_utf8_lossy(&sent.stdout);
    assert!(sent.contains("\r\x1b[2K["), "{sent:?}");
    assert!(
        sent.contains("sent ") && sent.contains(" msg/s"),
        "{sent:?}"
    );
    assert!(sent.contains("messages ok:      300"), "{sent:?}");
    let received = sink.wait_with_output().unwrap();
    let received = String::from_utf8_lossy(&received.stdout);
    assert!(received.contains("\r\x1b[2Kreceived "), "{received:?}");
}
