//! The server as an attacker and as a mail client see it, on loopback with
//! real TLS (a test CA) and real outside clients: Python's smtplib, imaplib
//! and poplib, swaks, openssl s_client. TLS on every listener,
//! authenticated submission, no open relay, STARTTLS command injection,
//! slow clients, memory held by unauthenticated clients, password guessing.

mod common;
mod support;

use common::{add_user, connect_from, run_python_client, start_server, Client, LineClient};
use ringpost_engine::config::PlaintextAuth;
use ringpost_engine::{Config, RunningServer};
use rustls::pki_types::ServerName;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::ca::TestCa;
use support::tls_mx::{TlsMode, TlsMx};

/// A server with the test CA's certificate, no plaintext passwords, the
/// account alice@ours.test (password "secret").
fn tls_server(
    dir: &std::path::Path,
    tweak: impl FnOnce(&mut Config),
) -> (RunningServer, tempfile::TempDir, TestCa) {
    let ca = TestCa::new(dir, &["localhost", "mx.test"]);
    let pair = ca.pair();
    let (server, data) = start_server(|c| {
        c.smtp.local_domains = vec!["ours.test".into()];
        c.tls.certificates = vec![pair];
        c.tls.plaintext_auth = PlaintextAuth::Never;
        // Loopback stands for the internet here: no relaying without AUTH.
        c.smtp.relay_networks = vec![];
        tweak(c);
    });
    add_user(&server, "alice@ours.test");
    (server, data, ca)
}

/// A blocking TLS client trusting the test CA.
fn tls_client(ca: &TestCa) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(&ca.ca_file).unwrap();
    for cert in rustls_pemfile_certs(&pem) {
        roots.add(cert).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

fn rustls_pemfile_certs(pem: &[u8]) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .unwrap()
}

type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// Start TLS as a client on `stream` (after the server said go ahead).
fn handshake(stream: TcpStream, ca: &TestCa) -> TlsStream {
    let conn =
        rustls::ClientConnection::new(tls_client(ca), ServerName::try_from("localhost").unwrap())
            .unwrap();
    let mut tls = rustls::StreamOwned::new(conn, stream);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock).unwrap();
    }
    tls
}

fn read_line(r: &mut impl BufRead) -> String {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    line
}

#[test]
fn real_clients_over_tls_and_submission_is_relayed() {
    let dir = tempfile::tempdir().unwrap();
    let sink = TlsMx::start("sink.test", TlsMode::Working);
    let sink_addr = sink.addr().to_string();
    let (server, _data, ca) = tls_server(dir.path(), |c| {
        c.relay.enabled = true;
        c.relay.smarthost = Some(sink_addr);
        c.relay.retry_initial_secs = 1;
    });
    let port = |a: Option<SocketAddr>| a.unwrap().port().to_string();
    run_python_client(
        "tls_clients.py",
        &[
            ca.ca_file.display().to_string(),
            server.smtp_addr().port().to_string(),
            port(server.submission_addr()),
            port(server.submissions_addr()),
            port(server.imap_addr()),
            port(server.imaps_addr()),
            port(server.pop3_addr()),
            port(server.pop3s_addr()),
        ],
    );
    // The two submitted messages reach the sink, from alice; the forged
    // sender and the open-relay attempt do not.
    let deadline = Instant::now() + Duration::from_secs(30);
    while sink.received().len() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    let received = sink.received();
    assert_eq!(received.len(), 2, "{received:?}");
    assert!(received.iter().all(|r| r.mail_from == "alice@ours.test"));
    // The trace header says how they came (RFC 3848).
    let text = String::from_utf8_lossy(&received[0].data);
    assert!(text.contains("with ESMTPSA"), "{text}");
    // They had a Message-ID and no Date: a Date was added (RFC 6409 §8.3),
    // and the Message-ID kept, once.
    for r in &received {
        let text = String::from_utf8_lossy(&r.data);
        assert_eq!(
            text.matches("\r\nDate: ").count() + usize::from(text.starts_with("Date: ")),
            1,
            "{text}"
        );
        assert_eq!(text.matches("Message-ID: ").count(), 1, "{text}");
    }
    let metrics = common::http_get(server.metrics_addr().unwrap(), "/metrics");
    assert!(
        metrics.contains("ringpost_tls_handshakes_total{service=\"submissions\",result=\"ok\",version=\"TLSv1.3\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("ringpost_auth_attempts_total{service=\"submission\",mechanism=\"PLAIN\",result=\"failed\"} 1"),
        "{metrics}"
    );
    server.shutdown();
}

#[test]
fn swaks_submits_over_starttls_and_implicit_tls() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _data, ca) = tls_server(dir.path(), |_| {});
    let swaks = |extra: &[&str]| {
        let out = Command::new("swaks")
            .args([
                "--to",
                "alice@ours.test",
                "--from",
                "alice@ours.test",
                "--timeout",
                "20",
                "--tls-verify",
                "--tls-ca-path",
            ])
            .arg(&ca.ca_file)
            .args(extra)
            .output()
            .expect("swaks runs (make test installs it)");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let sub = format!("localhost:{}", server.submission_addr().unwrap().port());
    let subs = format!("localhost:{}", server.submissions_addr().unwrap().port());
    let auth = [
        "--auth",
        "PLAIN",
        "--auth-user",
        "alice@ours.test",
        "--auth-password",
        "secret",
    ];
    let (ok, out) = swaks(&[&["--server", &sub, "--tls"][..], &auth[..]].concat());
    assert!(ok && out.contains("235 2.7.0"), "{ok} {out}");
    let (ok, out) = swaks(&[&["--server", &subs, "--tlsc"][..], &auth[..]].concat());
    assert!(ok && out.contains("250 2.0.0 Ok: queued"), "{out}");
    let login = [
        "--auth",
        "LOGIN",
        "--auth-user",
        "alice@ours.test",
        "--auth-password",
        "secret",
    ];
    let (ok, out) = swaks(&[&["--server", &subs, "--tlsc"][..], &login[..]].concat());
    assert!(ok && out.contains("235 2.7.0"), "{out}");
    // Without AUTH the submission port refuses the mail.
    let (ok, out) = swaks(&["--server", &sub, "--tls"]);
    assert!(!ok && out.contains("530 5.7.0"), "{out}");
    // Without TLS, AUTH is not even offered.
    let (ok, out) = swaks(&[&["--server", &sub][..], &auth[..]].concat());
    assert!(!ok, "{out}");
    server.shutdown();
}

#[test]
fn openssl_s_client_starttls_for_smtp_imap_and_pop3() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _data, ca) = tls_server(dir.path(), |_| {});
    let s_client = |proto: &str, addr: SocketAddr, input: &str| {
        let mut child = Command::new("openssl")
            .args([
                "s_client",
                "-quiet",
                "-crlf",
                "-verify_return_error",
                "-starttls",
                proto,
            ])
            .args(["-servername", "localhost", "-CAfile"])
            .arg(&ca.ca_file)
            .arg("-connect")
            .arg(addr.to_string())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("openssl runs");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{proto}: {text}");
        text
    };
    let smtp = s_client("smtp", server.smtp_addr(), "EHLO probe\nQUIT\n");
    assert!(
        smtp.contains("verify return:1") && smtp.contains("250-PIPELINING"),
        "{smtp}"
    );
    assert!(smtp.contains("221 2.0.0"), "{smtp}");
    let imap = s_client(
        "imap",
        server.imap_addr().unwrap(),
        "a LOGIN alice@ours.test secret\nb LOGOUT\n",
    );
    assert!(imap.contains("a OK [CAPABILITY"), "{imap}");
    let pop3 = s_client(
        "pop3",
        server.pop3_addr().unwrap(),
        "USER alice@ours.test\nPASS secret\nSTAT\nQUIT\n",
    );
    assert!(pop3.contains("+OK 0 0"), "{pop3}");
    server.shutdown();
}

/// Connect to `addr`, read the greeting, say `hello` (and read its whole
/// reply), then send `upgrade` — the STARTTLS command with commands
/// pipelined behind it — in one write. The plaintext answer must start with
/// `go_ahead` and nothing may follow it; then shake hands, send `probe`
/// under TLS, and return the first line the server says there.
fn first_line_after_starttls(
    addr: SocketAddr,
    ca: &TestCa,
    hello: &[u8],
    upgrade: &[u8],
    go_ahead: &str,
    probe: &[u8],
) -> String {
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    read_line(&mut reader);
    if !hello.is_empty() {
        (&stream).write_all(hello).unwrap();
        while read_line(&mut reader).as_bytes().get(3) == Some(&b'-') {}
    }
    (&stream).write_all(upgrade).unwrap();
    let answer = read_line(&mut reader);
    assert!(answer.starts_with(go_ahead), "{answer}");
    assert!(reader.buffer().is_empty(), "nothing else in plaintext");
    let tls = handshake(stream, ca);
    let mut reply = BufReader::new(tls);
    reply.get_mut().write_all(probe).unwrap();
    read_line(&mut reply)
}

#[test]
fn commands_pipelined_after_starttls_are_never_run() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _data, ca) = tls_server(dir.path(), |_| {});

    // SMTP: MAIL pipelined behind STARTTLS, in the same packet. Had MAIL
    // been run, RCPT would be accepted; the session started over.
    let first = first_line_after_starttls(
        server.smtp_addr(),
        &ca,
        b"EHLO probe\r\n",
        b"STARTTLS\r\nMAIL FROM:<evil@x.test>\r\n",
        "220 2.0.0 Ready to start TLS",
        b"RCPT TO:<alice@ours.test>\r\n",
    );
    assert_eq!(first, "503 5.5.1 Send MAIL first\r\n");
    // IMAP: a LOGIN pipelined behind STARTTLS. The first thing said under
    // TLS answers NOOP, and the session is still logged out.
    let first = first_line_after_starttls(
        server.imap_addr().unwrap(),
        &ca,
        b"",
        b"s STARTTLS\r\nx LOGIN alice@ours.test secret\r\n",
        "s OK Begin TLS negotiation now",
        b"n NOOP\r\n",
    );
    assert_eq!(first, "n OK NOOP completed\r\n");
    // POP3: USER/PASS pipelined behind STLS.
    let first = first_line_after_starttls(
        server.pop3_addr().unwrap(),
        &ca,
        b"",
        b"STLS\r\nUSER alice@ours.test\r\nPASS secret\r\n",
        "+OK begin TLS",
        b"STAT\r\n",
    );
    assert_eq!(first, "-ERR command not valid in this state\r\n");
    server.shutdown();
}

#[test]
fn the_mx_port_is_never_an_open_relay() {
    let (server, _data) = start_server(|c| {
        c.smtp.local_domains = vec!["ours.test".into()];
        c.smtp.relay_networks = vec![];
        c.smtp.max_rejected_recipients = 1000;
    });
    add_user(&server, "alice@ours.test");
    let (mut c, _) = Client::connect(server.smtp_addr());
    c.cmd("EHLO attacker.test");
    assert!(c.cmd("MAIL FROM:<a@attacker.test>").starts_with("250"));
    // The classic tricks (RFC 2505, the old relay test suites): none may
    // reach anything but a local mailbox that exists.
    let tricks = [
        "victim@far.test",
        "victim@FAR.TEST",
        "victim%far.test@ours.test",
        "victim%far.test",
        "far.test!victim@ours.test",
        "far.test!victim",
        "@ours.test:victim@far.test",
        "@ours.test,@far.test:victim@far.test",
        "\"victim@far.test\"@ours.test",
        "\"victim%far.test\"@ours.test",
        "victim@far.test@ours.test",
        "victim@[192.0.2.1]",
        "victim@[127.0.0.1]",
        "victim@[IPv6:::1]",
        "victim@ours.test.",
        "victim@far.test.",
        "victim@ours.test.far.test",
        "victim@oursxtest",
        "victim@ours-test.far.test",
        "victim@far.test%ours.test",
        "victim@ours.test\\@far.test",
        "alice@ours.test@far.test",
        "<victim@far.test>",
        "victim@far.test>",
    ];
    for trick in tricks {
        let reply = c.cmd(&format!("RCPT TO:<{trick}>"));
        assert!(reply.starts_with('5'), "{trick}: {reply}");
    }
    // The real local user is still accepted, so the session is sound.
    assert!(c.cmd("RCPT TO:<alice@ours.test>").starts_with("250"));
    assert!(c.cmd("RSET").starts_with("250"));
    // Nothing was queued for delivery.
    let stats = ringpost_storage::spool::stats(&*server.store()).unwrap();
    assert_eq!(stats.queue_entries, 0);
    // And the refusals are counted by why.
    let metrics = common::http_get(server.metrics_addr().unwrap(), "/metrics");
    let relay_denied = metrics
        .lines()
        .find(|l| {
            l.starts_with("ringpost_smtp_recipients_rejected_total{")
                && l.contains("reason=\"relay_denied\"")
                && l.contains("code=\"550\"")
        })
        .unwrap_or_else(|| panic!("no relay_denied count: {metrics}"));
    let counted: u64 = relay_denied.rsplit(' ').next().unwrap().parse().unwrap();
    // victim@[127.0.0.1] is ours (the address it came to): no such user.
    assert!(counted >= 9, "{relay_denied}");
    server.shutdown();
}

#[test]
fn thousands_of_slow_clients_do_not_stop_others_and_are_cut() {
    let (server, _data) = start_server(|c| {
        c.smtp.relay_networks = vec![];
        c.smtp.local_domains = vec!["ours.test".into()];
        // Long enough for the 2,000 connects below on a loaded machine:
        // sessions cut before the count would free slots for more.
        c.smtp.command_timeout_secs = 5;
        c.limits.max_connections_per_ip = 50;
        c.limits.connections_per_minute_per_ip = 0;
    });
    add_user(&server, "alice@ours.test");
    let addr = server.smtp_addr();
    // 2,000 connections from 127.0.0.1 that each trickle a byte.
    let mut slow = Vec::new();
    let mut refused = 0;
    for _ in 0..2000 {
        match TcpStream::connect(addr) {
            Ok(mut s) => {
                let _ = s.write_all(b"E");
                slow.push(s);
            }
            Err(_) => refused += 1,
        }
    }
    // A normal client from another address is served at once.
    let started = Instant::now();
    let stream = connect_from("127.0.0.2", addr);
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    assert!(read_line(&mut reader).starts_with("220 "));
    (&stream).write_all(b"EHLO friend.test\r\n").unwrap();
    while read_line(&mut reader).starts_with("250-") {}
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    // Only 50 of the 2,000 got a session; the rest heard 421 at once.
    let mut sessions = 0;
    let mut turned_away = 0;
    for s in &mut slow {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut line = String::new();
        let _ = BufReader::new(&*s).read_line(&mut line);
        if line.starts_with("220 ") {
            sessions += 1;
        } else if line.starts_with("421 ") {
            turned_away += 1;
        }
    }
    assert_eq!(sessions, 50, "turned away {turned_away}, refused {refused}");
    // The 50 are cut by the command deadline although they keep trickling.
    let trickle_until = Instant::now() + Duration::from_secs(8);
    while Instant::now() < trickle_until {
        for s in &mut slow {
            let _ = s.write_all(b"H");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let metrics = common::http_get(server.metrics_addr().unwrap(), "/metrics");
    let active: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("ringpost_smtp_connections_active"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(active <= 1.0, "{active} sessions still open\n{metrics}");
    assert!(
        metrics.contains("ringpost_connections_refused_total{service=\"smtp\",reason=\"per_ip\"}")
    );
    server.shutdown();
}

#[test]
fn unauthenticated_clients_cannot_make_the_server_hold_much() {
    let (server, _data) = start_server(|c| {
        c.smtp.relay_networks = vec![];
        c.smtp.local_domains = vec!["ours.test".into()];
        c.smtp.data_timeout_secs = 4;
        c.smtp.min_data_rate = 0;
        c.shards = 1;
        c.limits.session_memory_mb = 8;
        c.limits.max_connections_per_ip = 0;
        c.limits.connections_per_minute_per_ip = 0;
        c.imap.max_command_size = 64 << 20;
    });
    add_user(&server, "alice@ours.test");
    // 20 clients start 3 MiB messages (no final dot): 60 MiB on offer.
    let chunk = vec![b'x'; 64 * 1024];
    let mut senders = Vec::new();
    for _ in 0..20 {
        let (mut c, _) = Client::connect(server.smtp_addr());
        c.cmd("EHLO big.test");
        c.cmd("MAIL FROM:<a@big.test>");
        assert!(c.cmd("RCPT TO:<postmaster@ours.test>").starts_with("250"));
        assert!(c.cmd("DATA").starts_with("354"));
        senders.push(c);
    }
    let writers: Vec<_> = senders
        .into_iter()
        .map(|mut c| {
            let chunk = chunk.clone();
            std::thread::spawn(move || {
                let stream = c.stream();
                stream
                    .set_write_timeout(Some(Duration::from_secs(3)))
                    .unwrap();
                let mut sent = 0;
                for _ in 0..48 {
                    if (&stream).write_all(&chunk).is_err() {
                        break;
                    }
                    sent += chunk.len();
                }
                (c, sent)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    let metrics = common::http_get(server.metrics_addr().unwrap(), "/metrics");
    let held: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("ringpost_session_memory_bytes"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    // Untrusted clients draw from half of the 8 MiB budget, and one
    // address from a quarter of that.
    assert!(held <= (1 << 20) as f64, "{held} bytes held\n{metrics}");
    assert!(held > 0.0, "the budget was used");
    // So another server's large message is not held up by that address.
    let started = Instant::now();
    let mut other = Client::from_stream(connect_from("127.0.0.2", server.smtp_addr()));
    assert!(other.reply().starts_with("220"));
    other.cmd("EHLO other.test");
    other.cmd("MAIL FROM:<b@other.test>");
    assert!(other
        .cmd("RCPT TO:<postmaster@ours.test>")
        .starts_with("250"));
    assert!(other.cmd("DATA").starts_with("354"));
    let line = format!("{}\r\n", "y".repeat(998));
    other.send(line.repeat(2 << 10).as_bytes());
    let reply = other.cmd(".");
    assert!(reply.starts_with("250"), "{reply}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "held up for {:?} by another address's flood",
        started.elapsed()
    );
    // IMAP before login: a huge literal is refused before it is sent.
    let (mut imap, _) = LineClient::connect(server.imap_addr().unwrap());
    imap.send("a LOGIN {41944040}\r\n");
    assert_eq!(imap.line(), "a NO [TOOBIG] literal too big\r\n");
    imap.send("b LOGIN {41944040+}\r\n");
    assert!(imap.line().contains("BAD literal too big"));
    for w in writers {
        let (_c, _sent) = w.join().unwrap();
    }
    server.shutdown();
}

#[test]
fn password_guessing_is_locked_out_but_the_owner_gets_in() {
    let (server, _data) = start_server(|c| {
        c.smtp.local_domains = vec!["ours.test".into()];
        c.tls.plaintext_auth = PlaintextAuth::Always;
        c.limits.auth_failures_per_ip = 5;
        c.limits.exempt_networks = vec![];
        c.smtp.relay_networks = vec![];
        c.imap.auth_failure_delay_secs = 0;
        c.pop3.auth_failure_delay_secs = 0;
        c.submission.auth_failure_delay_secs = 0;
    });
    add_user(&server, "alice@ours.test");
    let smtp_auth = |addr: SocketAddr, from: &str, password: &str| -> String {
        let stream = connect_from(from, addr);
        let mut c = Client::from_stream(stream);
        c.reply();
        c.cmd("EHLO x");
        let plain =
            ringpost_protocols::sasl::encode(format!("\0alice@ours.test\0{password}").as_bytes());
        c.cmd(&format!("AUTH PLAIN {plain}"))
    };
    let sub = server.submission_addr().unwrap();
    // A flood of guesses from 127.0.0.1: four guessers in parallel.
    let guessers: Vec<_> = (0..4)
        .map(|g| {
            std::thread::spawn(move || {
                (0..5)
                    .map(|i| smtp_auth(sub, "127.0.0.1", &format!("guess{g}{i}")))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let answers: Vec<String> = guessers
        .into_iter()
        .flat_map(|g| g.join().unwrap())
        .collect();
    assert!(
        answers
            .iter()
            .all(|a| a.starts_with("535") || a.starts_with("454")),
        "{answers:?}"
    );
    assert!(
        answers.iter().any(|a| a.starts_with("454 4.7.0")),
        "{answers:?}"
    );
    // The right password from the guessing address is refused now...
    assert!(smtp_auth(sub, "127.0.0.1", "secret").starts_with("454 4.7.0"));
    // ...while the owner, elsewhere, logs in within a second.
    let started = Instant::now();
    assert!(smtp_auth(sub, "127.0.0.2", "secret").starts_with("235"));
    assert!(started.elapsed() < Duration::from_secs(1));
    // IMAP and POP3 share the lockout of the address.
    let (mut imap, _) = LineClient::connect(server.imap_addr().unwrap());
    imap.send("a LOGIN alice@ours.test secret\r\n");
    assert_eq!(
        imap.line(),
        "a NO [UNAVAILABLE] too many failed logins, try again later\r\n"
    );
    let (mut pop3, _) = LineClient::connect(server.pop3_addr().unwrap());
    pop3.send("USER alice@ours.test\r\nPASS secret\r\n");
    pop3.line();
    assert!(pop3
        .line()
        .starts_with("-ERR [SYS/TEMP] too many failed logins"));
    // And from 127.0.0.3 IMAP guessing locks that address out too.
    let imap_addr = server.imap_addr().unwrap();
    for i in 0..5 {
        let stream = connect_from("127.0.0.3", imap_addr);
        let mut c = LineClient::from_stream(stream);
        c.line();
        c.send(&format!("a LOGIN alice@ours.test guess{i}\r\n"));
        assert!(c.line().starts_with("a NO [AUTHENTICATIONFAILED]"));
    }
    let mut c = LineClient::from_stream(connect_from("127.0.0.3", imap_addr));
    c.line();
    c.send("a LOGIN alice@ours.test secret\r\n");
    assert!(c.line().starts_with("a NO [UNAVAILABLE]"));
    let metrics = common::http_get(server.metrics_addr().unwrap(), "/metrics");
    assert!(
        metrics.contains("ringpost_auth_lockouts_total{kind=\"ip\"} 2"),
        "{metrics}"
    );
    server.shutdown();
}

#[test]
fn one_account_cannot_open_unbounded_imap_sessions() {
    let (server, _data) = start_server(|c| {
        c.smtp.local_domains = vec!["ours.test".into()];
        c.imap.max_sessions_per_account = 3;
    });
    add_user(&server, "alice@ours.test");
    let mut open = Vec::new();
    for _ in 0..3 {
        let (mut c, _) = LineClient::connect(server.imap_addr().unwrap());
        c.send("a LOGIN alice@ours.test secret\r\n");
        assert!(c.line().starts_with("a OK"));
        open.push(c);
    }
    let (mut c, _) = LineClient::connect(server.imap_addr().unwrap());
    c.send("a LOGIN alice@ours.test secret\r\n");
    assert_eq!(
        c.line(),
        "a NO [LIMIT] too many sessions for this account\r\n"
    );
    // One logs out: a slot is free again.
    let mut first = open.remove(0);
    first.send("z LOGOUT\r\n");
    while !first.line().is_empty() {}
    std::thread::sleep(Duration::from_millis(100));
    c.send("b LOGIN alice@ours.test secret\r\n");
    assert!(c.line().starts_with("b OK"));
    server.shutdown();
}

#[test]
fn a_self_signed_certificate_is_made_at_first_start_and_reloads() {
    // No certificate configured: one is made, and STARTTLS works with it.
    let (server, data) = start_server(|_| {});
    let cert = data.path().join("data/tls/self-signed.crt");
    assert!(cert.exists());
    assert!(server.certificates().unwrap().contains("self-signed"));
    let mut stream = TcpStream::connect(server.smtp_addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = [0u8; 512];
    let _ = stream.read(&mut buf).unwrap();
    stream.write_all(b"STARTTLS\r\n").unwrap();
    let n = stream.read(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"220 2.0.0 Ready to start TLS\r\n");
    let ca = TestCa {
        ca_file: cert.clone(),
        cert_file: cert.clone(),
        key_file: cert,
    };
    let mut tls = handshake(stream, &ca);
    tls.write_all(b"QUIT\r\n").unwrap();
    let mut reply = String::new();
    BufReader::new(tls).read_line(&mut reply).unwrap();
    assert_eq!(reply, "221 2.0.0 Bye\r\n");
    // A reload reads the same files again (here: the same certificate).
    let config = server.config().clone();
    server.set_config_source(std::sync::Arc::new(move || Ok(config.clone())));
    let reloaded = server.reload().unwrap();
    assert!(reloaded.certificates.unwrap().contains("self-signed"));
    assert!(reloaded.needs_restart.is_empty());
    server.shutdown();
}

/// Mount a tmpfs of `mib` MiB at `dir` (root only); false if it cannot be.
fn mount_tmpfs(dir: &std::path::Path, mib: u64) -> bool {
    Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
        .arg(dir)
        .status()
        .is_ok_and(|s| s.success())
}

/// Unmounts a tmpfs when dropped.
struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_refuses_mail_loses_nothing_and_recovers_by_itself() {
    let outer = tempfile::tempdir().unwrap();
    let mount = outer.path().join("small-disk");
    std::fs::create_dir(&mount).unwrap();
    if !mount_tmpfs(&mount, 320) {
        // Only root can mount; CI runs as root (`.ci/run`).
        eprintln!("skipped: cannot mount a tmpfs here (not root?)");
        return;
    }
    let _mounted = Mounted(mount.clone());
    let data = mount.join("data");
    let server = {
        let mut config = Config {
            hostname: "mx.test".into(),
            data_dir: data.clone(),
            shards: 2,
            pin_shards: false,
            ..Config::default()
        };
        config.use_ephemeral_ports([127, 0, 0, 1].into());
        config.relay.enabled = false;
        config.store.min_free_disk_mb = 40;
        config.store.body_cache_mb = 0;
        ringpost_engine::start(config).expect("server starts")
    };
    let send = |n: usize| -> String {
        let (mut c, _) = Client::connect(server.smtp_addr());
        c.cmd("EHLO filler.test");
        c.cmd("MAIL FROM:<a@filler.test>");
        c.cmd("RCPT TO:<b@far.test>");
        c.cmd("DATA");
        c.cmd(&format!("Subject: {n}\r\n\r\n{}\r\n.", "x".repeat(2000)))
    };
    let mut acked = 0;
    for n in 0..20 {
        assert!(send(n).starts_with("250 "));
        acked += 1;
    }
    // Fill the disk to 30 MiB free: less than the 40 MiB reserve.
    let filler = mount.join("filler");
    let free = || {
        let out = Command::new("df")
            .args(["-B1", "--output=avail"])
            .arg(&mount)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .unwrap()
            .trim()
            .parse::<u64>()
            .unwrap()
    };
    let size = free().saturating_sub(30 << 20);
    std::fs::write(&filler, vec![0u8; size as usize]).unwrap();
    for n in 0..5 {
        let reply = send(100 + n);
        assert!(reply.starts_with("452 4.3.1"), "{reply}");
    }
    let metrics = common::http_get(server.metrics_addr().unwrap(), "/metrics");
    assert!(metrics.contains("ringpost_store_disk_full 1"), "{metrics}");
    // Free the space: mail is taken again within seconds, no restart.
    std::fs::remove_file(&filler).unwrap();
    let freed = Instant::now();
    loop {
        let reply = send(200);
        if reply.starts_with("250 ") {
            acked += 1;
            break;
        }
        assert!(freed.elapsed() < Duration::from_secs(5), "still {reply}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let metrics = common::http_get(server.metrics_addr().unwrap(), "/metrics");
    assert!(metrics.contains("ringpost_store_disk_full 0"), "{metrics}");
    // Nothing acknowledged was lost: all of it is there after a restart.
    server.shutdown();
    let store = ringpost_storage::RocksStore::open(
        &data,
        ringpost_storage::RocksOptions {
            read_only: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(
        ringpost_storage::spool::stats(&store).unwrap().messages,
        acked
    );
}

#[test]
fn a_client_that_never_finishes_the_handshake_is_dropped() {
    let (server, _data) = start_server(|c| c.tls.handshake_timeout_secs = 1);
    let mut stream = TcpStream::connect(server.imaps_addr().unwrap()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 16];
    // Nothing sent, nothing heard: closed after the handshake timeout.
    assert_eq!(stream.read(&mut buf).unwrap_or(0), 0);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    // Garbage instead of a ClientHello fails at once.
    let mut stream = TcpStream::connect(server.submissions_addr().unwrap()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(b"EHLO plaintext.test\r\n").unwrap();
    let _ = stream.read(&mut buf);
    // The alert may reach us before the server counts the failure.
    common::metrics_with(
        &server,
        &[
            "ringpost_tls_handshakes_total{service=\"imaps\",result=\"timeout\",version=\"\"} 1",
            "ringpost_tls_handshakes_total{service=\"submissions\",result=\"protocol\",version=\"\"} 1",
        ],
    );
    server.shutdown();
}

#[test]
fn an_account_over_its_sending_rate_is_told_to_wait() {
    let (server, _data) = start_server(|c| {
        c.smtp.local_domains = vec!["ours.test".into()];
        c.submission.max_messages_per_hour = 2;
    });
    add_user(&server, "alice@ours.test");
    let (mut c, _) = Client::connect(server.submission_addr().unwrap());
    c.cmd("EHLO client.test");
    let plain = ringpost_protocols::sasl::encode(b"\0alice@ours.test\0secret");
    assert!(c.cmd(&format!("AUTH PLAIN {plain}")).starts_with("235"));
    for n in 0..2 {
        assert!(c.cmd("MAIL FROM:<alice@ours.test>").starts_with("250"));
        assert!(c.cmd("RCPT TO:<friend@far.test>").starts_with("250"));
        assert!(c.cmd("DATA").starts_with("354"));
        let reply = c.cmd(&format!("Subject: {n}\r\n\r\nhi\r\n."));
        assert!(reply.starts_with("250 2.0.0"), "{reply}");
    }
    assert!(c.cmd("MAIL FROM:<alice@ours.test>").starts_with("250"));
    let reply = c.cmd("RCPT TO:<friend@far.test>");
    assert!(reply.starts_with("450 4.7.1"), "{reply}");
    c.cmd("QUIT");
    server.shutdown();
}

#[test]
fn sessions_of_one_account_at_once_share_its_sending_rate() {
    // Five sessions pass RCPT while the account still has room; only the
    // allowance's worth of them are stored, the others told to wait.
    let (server, _data) = start_server(|c| {
        c.smtp.local_domains = vec!["ours.test".into()];
        c.submission.max_messages_per_hour = 2;
    });
    add_user(&server, "alice@ours.test");
    let plain = ringpost_protocols::sasl::encode(b"\0alice@ours.test\0secret");
    let replies = common::messages_ended_together(server.submission_addr().unwrap(), 5, |c| {
        c.cmd("EHLO client.test");
        assert!(c.cmd(&format!("AUTH PLAIN {plain}")).starts_with("235"));
        assert!(c.cmd("MAIL FROM:<alice@ours.test>").starts_with("250"));
        assert!(c.cmd("RCPT TO:<friend@far.test>").starts_with("250"));
    });
    let stored = common::count_starting(&replies, "250 ");
    let waiting = common::count_starting(&replies, "450 4.7.1");
    assert_eq!((stored, waiting), (2, 3), "{replies:?}");
    server.shutdown();
}

/// A client that asks for much and reads nothing (pipelined CAPABILITYs
/// before login) is let go at its login deadline, not held for as long as
/// its writes wait (WRITE_STALL restarts at every byte it reads).
#[test]
fn a_stranger_that_stops_reading_is_dropped_at_its_deadline() {
    let (server, _data) = start_server(|c| {
        c.imap.login_timeout_secs = 2;
    });
    let stream = TcpStream::connect(server.imap_addr().unwrap()).unwrap();
    let mut writer = stream.try_clone().unwrap();
    // Tens of megabytes of answers asked for: the server's writes fill the
    // buffers and wait, it stops reading, and this writer blocks until the
    // server hangs up (its writes then fail). Nothing is ever read.
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let line = "a CAPABILITY\r\n".repeat(1000);
        for _ in 0..2000 {
            if writer.write_all(line.as_bytes()).is_err() {
                break;
            }
        }
        let _ = done.send(());
    });
    let hung_up = finished.recv_timeout(Duration::from_secs(15)).is_ok();
    assert!(hung_up, "the server still holds the connection");
    drop(stream);
    server.shutdown();
}

/// A stranger that keeps its session busy (a NOOP every second, each
/// within the command timeout) is still let go at `max_session_secs`; a
/// client in `relay_networks` is not capped.
#[test]
fn a_busy_strangers_session_ends_at_max_session_secs() {
    let (server, _data) = start_server(|c| {
        c.smtp.relay_networks = vec![];
        c.smtp.max_session_secs = 3;
    });
    let stream = TcpStream::connect(server.smtp_addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    assert!(read_line(&mut reader).starts_with("220"));
    let started = Instant::now();
    let mut closing = None;
    while started.elapsed() < Duration::from_secs(12) {
        if writer.write_all(b"NOOP\r\n").is_err() {
            break;
        }
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) if line.starts_with("421") => {
                closing = Some(line);
                break;
            }
            Ok(_) => assert!(line.starts_with("250"), "{line}"),
        }
        std::thread::sleep(Duration::from_millis(900));
    }
    let lasted = started.elapsed();
    assert!(
        lasted < Duration::from_secs(6),
        "the session lasted {lasted:?} against a 3 s cap"
    );
    assert!(closing.is_some(), "no 421 before the close");
    server.shutdown();
}
