//! The `ringpost` command as operators use it: a real process on loopback,
//! SIGKILL in the middle of a load (nothing acknowledged may be lost) and in
//! the middle of relaying to a sink (everything acknowledged arrives),
//! SIGTERM for a clean stop, `spool stats`, `config check` and `user`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const RINGPOST: &str = env!("CARGO_BIN_EXE_ringpost");

/// Start `ringpost serve` on ephemeral loopback ports; return it and its SMTP address.
/// The caller waits for the child; if start-up fails, the test fails right here.
fn spawn_server(data_dir: &Path, extra: &[&str]) -> (Child, SocketAddr) {
    spawn_server_logging_to(data_dir, extra, Stdio::null())
}

/// [`spawn_server`] with its stderr (the logs) going to `stderr`.
#[allow(clippy::zombie_processes)]
fn spawn_server_logging_to(data_dir: &Path, extra: &[&str], stderr: Stdio) -> (Child, SocketAddr) {
    let mut child = Command::new(RINGPOST)
        .args([
            "serve",
            "--ephemeral-ports",
            "127.0.0.1",
            "--shards",
            "2",
            "--data-dir",
        ])
        .arg(data_dir)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("ringpost starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let line = lines
            .next()
            .expect("server prints its start-up lines")
            .unwrap();
        let mut words = line.split_whitespace();
        if words.next() == Some("smtp") {
            let addr = words
                .next()
                .and_then(|a| a.parse().ok())
                .expect("smtp line has an address");
            // Keep draining stdout so the server never blocks on a full pipe.
            std::thread::spawn(move || for _ in lines {});
            return (child, addr);
        }
    }
    panic!("server did not print its SMTP address in time");
}

/// The listeners that take an address or `off` on the command line take
/// both (they once made clap panic at start).
#[test]
fn listeners_can_be_turned_off_on_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(RINGPOST)
        .args(["serve", "--ephemeral-ports", "127.0.0.1", "--shards", "1"])
        .args(["--imaps", "off", "--pop3s", "off", "--submissions", "off"])
        .args(["--metrics", "off", "--data-dir"])
        .arg(dir.path().join("data"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let mut seen = Vec::new();
    for line in stdout.lines() {
        let line = line.unwrap();
        let done = line.trim_start().starts_with("relay");
        seen.push(line);
        if done {
            break;
        }
    }
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    // Its stdout is closed by now, and it still shuts down cleanly.
    assert!(child.wait().unwrap().success());
    let text = seen.join("\n");
    assert!(text.contains("ready"), "{text}");
    assert!(text.contains("metrics      off"), "{text}");
    for gone in ["imaps", "pop3s", "submissions"] {
        assert!(!text.contains(gone), "{gone}: {text}");
    }
}

fn read_reply(r: &mut BufReader<TcpStream>) -> std::io::Result<String> {
    let mut all = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        all.push_str(&line);
        if line.as_bytes().get(3) != Some(&b'-') {
            return Ok(all);
        }
    }
}

/// Send messages until the server goes away; record (seq, queue id) of each 250.
fn blast(
    addr: SocketAddr,
    worker: usize,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<(String, String)>>>,
) {
    let Ok(stream) = TcpStream::connect(addr) else {
        return;
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut w = stream.try_clone().unwrap();
    let mut r = BufReader::new(stream);
    let mut run = || -> std::io::Result<()> {
        read_reply(&mut r)?;
        w.write_all(b"EHLO blaster.example\r\n")?;
        read_reply(&mut r)?;
        for n in 0.. {
            if stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            let seq = format!("{worker}-{n}");
            // Every fourth is large enough for a segment file, so both
            // ways a body is stored are killed in mid-write.
            let text = text_bytes(n);
            let body = format!(
                "Subject: crash test {seq}\r\nX-Seq: {seq}\r\n\r\n{}\r\n.\r\n",
                "x".repeat(text)
            );
            w.write_all(b"MAIL FROM:<load@example.org>\r\nRCPT TO:<sink@example.net>\r\nDATA\r\n")?;
            for _ in 0..3 {
                read_reply(&mut r)?;
            }
            w.write_all(body.as_bytes())?;
            let reply = read_reply(&mut r)?;
            if let Some(id) = reply.trim().strip_prefix("250 2.0.0 Ok: queued as ") {
                acked.lock().unwrap().push((seq, id.to_owned()));
            }
        }
        Ok(())
    };
    let _ = run();
}

/// Bytes of text in the blaster's message number `n`.
fn text_bytes(n: u64) -> usize {
    if n.is_multiple_of(4) {
        80_000
    } else {
        1500
    }
}

fn spool_stats(data_dir: &Path) -> (u64, String) {
    let out = Command::new(RINGPOST)
        .args(["spool", "stats", "--data-dir"])
        .arg(data_dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "spool stats failed: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let messages = text
        .lines()
        .find_map(|l| l.strip_prefix("messages "))
        .expect("messages line")
        .parse()
        .unwrap();
    (messages, text)
}

#[test]
fn sigkill_during_load_loses_no_acknowledged_message() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (mut server, addr) = spawn_server(&data, &["--no-relay"]);
    // Let load build up, then kill without warning.
    let acked = load_then_kill(&mut server, addr, 500);
    assert!(acked.len() >= 100, "load ran: {} acknowledged", acked.len());

    // spool stats reads the crashed store read-only.
    let (messages, text) = spool_stats(&data);
    assert!(
        messages >= acked.len() as u64,
        "lost messages: acked {} but {text}",
        acked.len()
    );

    // The large ones are in segment files, and spool stats says how much.
    let live: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("segment_live_bytes "))
        .expect("segment_live_bytes line")
        .parse()
        .unwrap();
    assert!(live >= 80_000, "{text}");

    // Every acknowledged message is there with its own content.
    let store = open_read_only(&data);
    for (seq, id) in &acked {
        let id =
            ringpost_storage::spool::MessageId::from_hex(id).expect("queue id is a message id");
        let body = ringpost_storage::spool::read_body(&store, &id)
            .unwrap()
            .expect("acknowledged message stored");
        assert!(String::from_utf8_lossy(&body).contains(&format!("X-Seq: {seq}\r\n")));
        let n = seq.rsplit('-').next().unwrap().parse().unwrap();
        let text = format!("\r\n\r\n{}\r\n", "x".repeat(text_bytes(n)));
        assert!(body.ends_with(text.as_bytes()), "{seq}: the whole text");
    }
    drop(store);

    // The crashed store opens again for a new server, which stops cleanly on SIGTERM.
    let (mut server, addr) = spawn_server(&data, &["--no-relay"]);
    let mut c = TcpStream::connect(addr).unwrap();
    let mut greeting = [0u8; 3];
    c.read_exact(&mut greeting).unwrap();
    assert_eq!(&greeting, b"220");
    unsafe { libc::kill(server.id() as i32, libc::SIGTERM) };
    let status = server.wait().unwrap();
    assert!(status.success(), "clean exit after SIGTERM: {status:?}");
    assert!(spool_stats(&data).0 >= acked.len() as u64);
}

/// Start load, SIGKILL the server once `min_acked` messages were acknowledged.
fn load_then_kill(server: &mut Child, addr: SocketAddr, min_acked: usize) -> Vec<(String, String)> {
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..8)
        .map(|w| {
            let (stop, acked) = (stop.clone(), acked.clone());
            std::thread::spawn(move || blast(addr, w, stop, acked))
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while acked.lock().unwrap().len() < min_acked && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(server.id() as i32, libc::SIGKILL) };
    server.wait().unwrap();
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    acked
}

/// The X-Seq of every message a sink received, with repeats.
fn seqs_at(sink: &ringpost_loadtest::sink::SinkHandle) -> Vec<String> {
    sink.messages()
        .iter()
        .filter_map(|m| {
            let text = String::from_utf8_lossy(&m.data);
            let start = text.find("X-Seq: ")? + "X-Seq: ".len();
            let len = text[start..].find("\r\n")?;
            Some(text[start..start + len].to_owned())
        })
        .collect()
}

#[test]
fn sigkill_while_relaying_delivers_every_acknowledged_message() {
    use ringpost_loadtest::sink::{self, SinkConfig};
    use std::collections::HashSet;

    let sink = sink::start(SinkConfig {
        keep_messages: 1_000_000,
        ..SinkConfig::default()
    })
    .unwrap();
    let smarthost = sink.addr().to_string();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (mut server, addr) = spawn_server(&data, &["--smarthost", &smarthost]);
    let acked = load_then_kill(&mut server, addr, 1000);
    assert!(acked.len() >= 100, "load ran: {} acknowledged", acked.len());

    // Restarted on the crashed store, the server finds what it had not
    // delivered yet (including what was in flight) and delivers it.
    let (mut server, _) = spawn_server(&data, &["--smarthost", &smarthost]);
    let wanted: HashSet<String> = acked.iter().map(|(seq, _)| seq.clone()).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    let missing = loop {
        let got: HashSet<String> = seqs_at(&sink).into_iter().collect();
        let missing = wanted.difference(&got).count();
        if missing == 0 || Instant::now() > deadline {
            break missing;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let received = seqs_at(&sink);
    let unique: HashSet<&String> = received.iter().collect();
    eprintln!(
        "relay crash: acked {}, received {} ({} unique, {} duplicates), lost {missing}",
        acked.len(),
        received.len(),
        unique.len(),
        received.len() - unique.len()
    );
    assert_eq!(missing, 0, "acknowledged messages never reached the sink");
    // Each whole, the large ones (from segment files) included.
    for message in sink.messages() {
        let text = String::from_utf8_lossy(&message.data);
        let seq = text
            .split("X-Seq: ")
            .nth(1)
            .and_then(|t| t.split("\r\n").next());
        let n: u64 = seq
            .and_then(|s| s.rsplit('-').next()?.parse().ok())
            .unwrap();
        let tail = format!("\r\n\r\n{}\r\n", "x".repeat(text_bytes(n)));
        assert!(
            text.ends_with(&tail),
            "message {seq:?} arrived cut or changed"
        );
    }
    unsafe { libc::kill(server.id() as i32, libc::SIGTERM) };
    assert!(server.wait().unwrap().success());
}

#[test]
fn config_check_names_the_problem_and_its_place() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "shards = 2\n[smtp]\nlisten = \"127.0.0.1:2526\"\n").unwrap();
    let out = Command::new(RINGPOST)
        .args(["config", "check"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok"));

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "shards = 2\n[smtp]\nlisten = \"127.0.0.1:2526\"\nmax_recipient = 5\n",
    )
    .unwrap();
    let out = Command::new(RINGPOST)
        .args(["config", "check"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml") && err.contains("line 4") && err.contains("max_recipient"),
        "{err}"
    );

    let out = Command::new(RINGPOST)
        .args(["config", "check", "/nonexistent/ringpost.toml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));

    // What `serve` would refuse to start with, the check refuses too.
    let missing = dir.path().join("missing.toml");
    std::fs::write(
        &missing,
        "[[tls.certificates]]\ncert = \"/nonexistent/cert.pem\"\nkey = \"/nonexistent/key.pem\"\n",
    )
    .unwrap();
    let out = Command::new(RINGPOST)
        .args(["config", "check"])
        .arg(&missing)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/cert.pem"), "{err}");

    // Valid but risky: passes, with a warning that says why.
    let risky = dir.path().join("risky.toml");
    std::fs::write(
        &risky,
        "[tls]\nplaintext_auth = \"always\"\n[imap]\nlisten = \"0.0.0.0:1143\"\n",
    )
    .unwrap();
    let out = Command::new(RINGPOST)
        .args(["config", "check"])
        .arg(&risky)
        .output()
        .unwrap();
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("warning: tls.plaintext_auth") && err.contains("imap.listen"),
        "{err}"
    );
}

/// `config show` prints every setting, defaults included, as a file that
/// reads back the same.
#[test]
fn config_show_prints_the_effective_config() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ringpost.toml");
    std::fs::write(
        &file,
        "hostname = \"mx.example.test\"\n[smtp]\nlocal_domains = [\"example.test\"]\n[pop3]\ntls_listen = \"off\"\n",
    )
    .unwrap();
    let out = Command::new(RINGPOST)
        .args(["config", "show"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("hostname = \"mx.example.test\""), "{text}");
    assert!(
        text.contains("max_message_size = "),
        "defaults are shown: {text}"
    );
    assert!(text.contains("tls_listen = \"off\""), "{text}");
    let again = ringpost_engine::Config::parse(&text).expect("what it prints reads back");
    assert_eq!(again.smtp.local_domains, vec!["example.test"]);
    assert_eq!(again.pop3.tls_listen, None);
    let defaults = Command::new(RINGPOST)
        .args(["config", "show"])
        .output()
        .unwrap();
    assert!(defaults.status.success());
    assert!(String::from_utf8_lossy(&defaults.stdout).contains("listen = \"127.0.0.1:2525\""));
}

#[test]
fn spool_stats_on_a_missing_store_fails_clearly() {
    let out = Command::new(RINGPOST)
        .args(["spool", "stats", "--data-dir", "/nonexistent/ringpost"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot open"));
}

/// Run `ringpost ARGS` with `stdin` as standard input; return (success, stdout, stderr).
fn ringpost(args: &[&str], data_dir: &Path, stdin: &str) -> (bool, String, String) {
    let mut child = Command::new(RINGPOST)
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The tool may refuse before it reads: a closed pipe is no failure here.
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `user add` with neither --config nor --data-dir makes no store in the
/// working directory: the server, whose store is elsewhere, would never
/// see the account it says it added.
#[test]
fn user_add_without_a_named_store_makes_none() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(RINGPOST)
        .args(["user", "add", "alice@example.test", "--password-stdin"])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("no store at ./ringpost-data"), "{err}");
    assert!(!dir.path().join("ringpost-data").exists());
}

/// The stored account `name`, read as the tools read the store.
/// Store a message in `user`'s INBOX the way local delivery does (through
/// a commit writer); returns its id.
fn deliver_locally(data_dir: &Path, user: &str) -> ringpost_storage::spool::MessageId {
    use ringpost_storage::spool::{Envelope, MessageId, NewMessage};
    let store: Arc<dyn ringpost_storage::Store> =
        Arc::new(ringpost_storage::RocksStore::open(data_dir, Default::default()).unwrap());
    let (pipeline, commits) = ringpost_storage::CommitPipeline::start(
        store,
        ringpost_storage::PipelineConfig::default(),
        None,
    );
    let id = MessageId::new(1_700_000_000_000_000, 0, 1);
    let body = b"Subject: hi\r\n\r\nhello\r\n".to_vec();
    let message = NewMessage {
        id,
        envelope: Envelope {
            sender: "bob@example.org".into(),
            received_at: 1_700_000_000_000_000,
            size: body.len() as u64,
            recipients: Vec::new(),
            dsn: Default::default(),
        },
        body,
        queue: Vec::new(),
        mailboxes: vec![user.to_owned()],
        junk: Vec::new(),
        filed: Vec::new(),
    };
    commits.commit_blocking(message.into_batch()).unwrap();
    drop(commits);
    pipeline.shutdown();
    id
}

fn stored_user(data_dir: &Path, name: &str) -> Option<ringpost_storage::users::User> {
    ringpost_storage::users::get_user(&open_read_only(data_dir), name).unwrap()
}

/// The store at `data_dir`, opened read-only (beside a running server too).
fn open_read_only(data_dir: &Path) -> ringpost_storage::RocksStore {
    let options = ringpost_storage::RocksOptions {
        read_only: true,
        ..Default::default()
    };
    ringpost_storage::RocksStore::open(data_dir, options).unwrap()
}

fn config_with_local_domains(dir: &Path) -> String {
    let path = dir.join("ringpost.toml");
    std::fs::write(
        &path,
        "hostname = \"mx.example.test\"\n[smtp]\nlocal_domains = [\"example.test\"]\n",
    )
    .unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn user_add_list_passwd_del() {
    use ringpost_engine::users::verify_password;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = config_with_local_domains(dir.path());
    let cfg = ["--config", config.as_str()];

    let (ok, out, err) = ringpost(
        &[
            &["user", "add", "Alice@Example.Test", "--password-stdin"][..],
            &cfg[..],
        ]
        .concat(),
        &data,
        "first pw\n",
    );
    assert!(ok, "{out}{err}");
    assert!(out.contains("added alice@example.test"), "{out}");
    // A new account starts with the folders mail clients look for.
    let store = open_read_only(&data);
    let names: Vec<String> = ringpost_storage::mailbox::list(&store, "alice@example.test")
        .unwrap()
        .into_iter()
        .map(|m| m.name)
        .collect();
    assert_eq!(names, ["Drafts", "INBOX", "Junk", "Sent", "Trash"]);
    let subscribed = ringpost_storage::mailbox::subscriptions(&store, "alice@example.test");
    assert_eq!(subscribed.unwrap(), names);
    drop(store);
    let (ok, out, _) = ringpost(&["user", "list"], &data, "");
    assert!(ok);
    assert!(out.starts_with("alice@example.test  created 20"), "{out}");
    let alice = stored_user(&data, "alice@example.test").expect("stored");
    assert!(alice.password_hash.starts_with("$argon2id$"));
    assert_eq!(verify_password("first pw", &alice.password_hash), Ok(true));

    let (ok, _, err) = ringpost(
        &[
            &["user", "add", "alice@example.test", "--password-stdin"][..],
            &cfg[..],
        ]
        .concat(),
        &data,
        "other\n",
    );
    assert!(!ok && err.contains("already exists"), "{err}");

    // passwd: a new hash, the rest kept; a CRLF line ending is not part of it.
    let (ok, out, err) = ringpost(
        &["user", "passwd", "ALICE@example.test", "--password-stdin"],
        &data,
        "second pw\r\n",
    );
    assert!(ok, "{out}{err}");
    let changed = stored_user(&data, "alice@example.test").unwrap();
    assert_ne!(changed.password_hash, alice.password_hash);
    assert_eq!(
        verify_password("second pw", &changed.password_hash),
        Ok(true)
    );
    assert_eq!(
        verify_password("first pw", &changed.password_hash),
        Ok(false)
    );
    assert_eq!(changed.created, alice.created);

    let (ok, _, err) = ringpost(
        &["user", "passwd", "nobody@example.test", "--password-stdin"],
        &data,
        "x\n",
    );
    assert!(
        !ok && err.contains("no account nobody@example.test"),
        "{err}"
    );

    // Mail for alice, as the server's local delivery stores it.
    let mail = deliver_locally(&data, "alice@example.test");

    // quota: the account's own limits, shown with its usage by list.
    let (ok, out, err) = ringpost(
        &[
            "user",
            "quota",
            "alice@example.test",
            "--storage-mb",
            "5",
            "--messages",
            "none",
        ],
        &data,
        "",
    );
    assert!(
        ok && out.contains("changed the quota of alice@example.test"),
        "{out}{err}"
    );
    let (ok, out, _) = ringpost(&["user", "list"], &data, "");
    assert!(
        ok && out.contains("  0.0 MB of 5.0 MB  1 messages\n"),
        "{out}"
    );
    let (ok, out, err) = ringpost(
        &["user", "quota", "alice@example.test", "--messages", "100"],
        &data,
        "",
    );
    assert!(ok, "{out}{err}");
    let (_, out, _) = ringpost(&["user", "list"], &data, "");
    assert!(
        out.contains("  0.0 MB of 5.0 MB  1 messages of 100\n"),
        "kept: {out}"
    );
    let (ok, _, err) = ringpost(
        &["user", "quota", "alice@example.test", "--messages", "lots"],
        &data,
        "",
    );
    assert!(!ok && err.contains("not a positive number"), "{err}");
    ringpost(
        &[
            "user",
            "quota",
            "alice@example.test",
            "--storage-mb",
            "default",
            "--messages",
            "default",
        ],
        &data,
        "",
    );
    let (_, out, _) = ringpost(&["user", "list"], &data, "");
    assert!(
        out.contains("  0.0 MB  1 messages\n"),
        "back to the default: {out}"
    );

    let (ok, out, _) = ringpost(&["user", "del", "alice@example.test"], &data, "");
    assert!(
        ok && out.contains("deleted alice@example.test and its 5 mailboxes"),
        "{out}"
    );
    assert_eq!(stored_user(&data, "alice@example.test"), None);
    let store = open_read_only(&data);
    let mailboxes = ringpost_storage::mailbox::list(&store, "alice@example.test").unwrap();
    assert!(mailboxes.is_empty(), "{mailboxes:?}");
    assert_eq!(
        ringpost_storage::spool::read_body(&store, &mail).unwrap(),
        None
    );
    drop(store);
    let (ok, out, err) = ringpost(&["user", "list"], &data, "");
    assert!(
        ok && out.is_empty() && err.contains("no accounts"),
        "{out}{err}"
    );
    let (ok, _, err) = ringpost(&["user", "del", "alice@example.test"], &data, "");
    assert!(!ok && err.contains("no account"), "{err}");
}

#[test]
fn user_add_refuses_bad_names_and_passwords() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = config_with_local_domains(dir.path());
    let add = |name: &str, stdin: &str| {
        ringpost(
            &["user", "add", name, "--password-stdin", "--config", &config],
            &data,
            stdin,
        )
    };
    let (ok, _, err) = add("alice", "pw\n");
    assert!(!ok && err.contains("local@domain"), "{err}");
    let (ok, _, err) = add("alice@elsewhere.test", "pw\n");
    assert!(
        !ok && err.contains("elsewhere.test") && err.contains("smtp.local_domains"),
        "{err}"
    );
    let (ok, _, err) = add("al ice@example.test", "pw\n");
    assert!(!ok && err.contains("whitespace"), "{err}");
    let (ok, _, err) = add("alice@example.test", "\n");
    assert!(!ok && err.contains("password is empty"), "{err}");
    let (ok, _, err) = add("alice@example.test", &format!("{}\n", "x".repeat(1025)));
    assert!(!ok && err.contains("1024"), "{err}");
    // No --password-stdin and no terminal: told how to do it.
    let (ok, _, err) = ringpost(
        &["user", "add", "alice@example.test", "--config", &config],
        &data,
        "pw\n",
    );
    assert!(!ok && err.contains("--password-stdin"), "{err}");
    assert_eq!(stored_user(&data, "alice@example.test"), None);

    // Without a configuration any domain will do, and the tool says so.
    let (ok, out, err) = ringpost(
        &["user", "add", "x@anywhere.test", "--password-stdin"],
        &data,
        "pw\n",
    );
    assert!(ok, "{out}{err}");
    assert!(
        err.contains("not checked against the local domains"),
        "{err}"
    );

    let out = Command::new(RINGPOST)
        .args(["user", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("stopped") && help.contains("read-only"),
        "{help}"
    );
}

/// Accounts made with the tool decide RCPT on the server; while it runs,
/// the tool changes them through the server's admin API, at once.
#[test]
fn user_accounts_and_a_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = config_with_local_domains(dir.path());
    let add = |name: &str| {
        ringpost(
            &["user", "add", name, "--password-stdin", "--config", &config],
            &data,
            "pw\n",
        )
    };
    let (ok, _, err) = add("alice@example.test");
    assert!(ok, "{err}");

    let (mut server, addr) = spawn_server(&data, &["--no-relay", "--config", &config]);
    let rcpt = |to: &str| {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut w = stream.try_clone().unwrap();
        let mut r = BufReader::new(stream);
        assert!(read_reply(&mut r).unwrap().starts_with("220"));
        let mut cmd = |line: &str| {
            w.write_all(format!("{line}\r\n").as_bytes()).unwrap();
            read_reply(&mut r).unwrap()
        };
        assert!(cmd("EHLO client.example").starts_with("250"));
        assert!(cmd("MAIL FROM:<x@example.org>").starts_with("250"));
        let reply = cmd(&format!("RCPT TO:<{to}>"));
        assert!(cmd("QUIT").starts_with("221"));
        reply
    };
    assert!(rcpt("Alice@Example.Test").starts_with("250"));
    let reply = rcpt("bob@example.test");
    assert!(reply.starts_with("550 5.1.1"), "{reply}");

    // While it runs, the tool goes through its admin API: at once.
    let (ok, out, err) = add("bob@example.test");
    assert!(ok, "{err}");
    assert!(out.contains("added bob@example.test"), "{out}");
    let reply = rcpt("bob@example.test");
    assert!(reply.starts_with("250"), "bob takes mail at once: {reply}");
    let (ok, _, err) = add("bob@example.test");
    assert!(
        !ok && err.contains("409") && err.contains("already exists"),
        "{err}"
    );
    let (ok, _, err) = add("carol@elsewhere.test");
    assert!(!ok && err.contains("not one of the local domains"), "{err}");
    // The hostname's domain is local too (postmaster lives there).
    let (ok, _, err) = add("postmaster@mx.example.test");
    assert!(ok, "{err}");
    let (ok, _, err) = ringpost(
        &["user", "passwd", "bob@example.test", "--password-stdin"],
        &data,
        "new\n",
    );
    assert!(ok, "{err}");
    let (ok, _, err) = ringpost(
        &["user", "quota", "bob@example.test", "--storage-mb", "5"],
        &data,
        "",
    );
    assert!(ok, "{err}");
    let (ok, out, err) = ringpost(&["user", "del", "alice@example.test"], &data, "");
    assert!(ok, "{err}");
    assert!(
        out.contains("deleted alice@example.test and its 5 mailboxes"),
        "{out}"
    );
    let reply = rcpt("alice@example.test");
    assert!(
        reply.starts_with("550 5.1.1"),
        "alice is gone at once: {reply}"
    );
    let (ok, _, err) = ringpost(&["user", "del", "alice@example.test"], &data, "");
    assert!(!ok && err.contains("404"), "{err}");
    let (ok, out, _) = ringpost(&["user", "list"], &data, "");
    assert!(
        ok && out.contains("bob@example.test") && out.contains("of 5.0 MB"),
        "list works beside the server: {out}"
    );
    assert!(!out.contains("alice@"), "{out}");

    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(server.id() as i32, libc::SIGTERM) };
    assert!(server.wait().unwrap().success());
    // Stopped: the store itself again.
    let (ok, _, err) = add("carol@example.test");
    assert!(ok, "stopped: {err}");
    assert!(stored_user(&data, "carol@example.test").is_some());
    let bob = stored_user(&data, "bob@example.test").unwrap();
    assert!(ringpost_engine::users::verify_password("new", &bob.password_hash).unwrap());
}

/// The queue id of the first entry `ringpost queue list --json` shows.
fn stats_id(data: &Path) -> String {
    let (ok, out, err) = ringpost(&["queue", "list", "--json"], data, "");
    assert!(ok, "{err}");
    let listed: serde_json::Value = serde_json::from_str(&out).unwrap();
    listed[0]["id"].as_str().unwrap().to_owned()
}

/// `ringpost queue` beside a running server (through its API) and on a
/// stopped one's store.
#[test]
fn queue_list_stats_hold_and_release() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (mut server, addr) = spawn_server(&data, &["--no-relay"]);
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut w = stream.try_clone().unwrap();
    let mut r = BufReader::new(stream);
    assert!(read_reply(&mut r).unwrap().starts_with("220"));
    let mut cmd = |line: &str| {
        w.write_all(format!("{line}\r\n").as_bytes()).unwrap();
        read_reply(&mut r).unwrap()
    };
    assert!(cmd("EHLO client.example").starts_with("250"));
    for to in ["x@a.example", "y@b.example"] {
        assert!(cmd("MAIL FROM:<s@example.org>").starts_with("250"));
        assert!(cmd(&format!("RCPT TO:<{to}>")).starts_with("250"));
        assert!(cmd("DATA").starts_with("354"));
        assert!(cmd("Subject: q\r\n\r\nbody\r\n.").starts_with("250"));
    }
    assert!(cmd("QUIT").starts_with("221"));
    let queue = |args: &[&str]| {
        let mut all = vec!["queue"];
        all.extend_from_slice(args);
        ringpost(&all, &data, "")
    };

    let (ok, out, err) = queue(&["list"]);
    assert!(ok, "{err}");
    assert!(out.starts_with("QUEUE ID"), "{out}");
    assert!(
        out.contains("a.example") && out.contains("b.example"),
        "{out}"
    );
    assert!(out.contains("s@example.org"), "{out}");
    let (ok, out, err) = queue(&["stats", "--json"]);
    assert!(ok, "{err}");
    let stats: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(stats["total"]["entries"], 2, "{stats}");
    assert_eq!(stats["domains"]["a.example"]["ready"], 1, "{stats}");

    let id = stats_id(&data);
    let (ok, out, err) = queue(&["show", &id]);
    assert!(ok, "{err}");
    assert!(
        out.contains("from        <s@example.org>") && out.contains("Subject: q"),
        "{out}"
    );
    let (ok, out, _) = queue(&["show", &id, "--json"]);
    let shown: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(
        ok && shown["entries"].as_array().unwrap().len() == 1,
        "{out}"
    );
    let (ok, _, err) = queue(&["show", "00000000000000000000000000000000"]);
    assert!(!ok && err.contains("404"), "{err}");
    let (ok, out, err) = queue(&["hold", "--domain", "a.example"]);
    assert!(ok, "{err}");
    assert!(out.contains("1 matched, 1 done"), "{out}");
    let (ok, _, err) = queue(&["delete"]);
    assert!(!ok && err.contains("name the entries"), "{err}");
    // An id that names nothing: said, and a failure for scripts.
    let (ok, out, err) = queue(&["delete", "00000000000000000000000000000000"]);
    assert!(!ok && out.contains("0 matched"), "{out}{err}");
    assert!(err.contains("no entry has the id"), "{err}");
    let (ok, out, err) = queue(&["list", "--state", "held", "--json"]);
    assert!(ok, "{err}");
    let held: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(held.as_array().unwrap().len(), 1, "{held}");
    assert_eq!(held[0]["domain"], "a.example");
    // The relay is off: what it would do is refused, and said.
    let (ok, out, err) = queue(&["bounce", "--all"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("2 matched, 0 done") && out.contains("2 not applicable"),
        "{out}"
    );

    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(server.id() as i32, libc::SIGTERM) };
    assert!(server.wait().unwrap().success());
    // Stopped: the held entry is still held, and release works on the store.
    let (ok, out, err) = queue(&["stats"]);
    assert!(ok, "{err}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("a.example") && l.split_whitespace().nth(5) == Some("1")),
        "{out}"
    );
    let (ok, out, err) = queue(&["release", "--state", "held"]);
    assert!(ok, "{err}");
    assert!(out.contains("1 matched, 1 done"), "{out}");
    let (ok, out, _) = queue(&["list", "--state", "held", "--json"]);
    assert!(ok && out.trim() == "[]", "{out}");
    let (ok, _, err) = queue(&["flush", "--all"]);
    assert!(!ok && err.contains("needs the running server"), "{err}");
}

/// `ringpost dkim keygen` makes keys the server signs with, and prints the
/// record to publish; a key the server cannot read stops its start.
#[test]
fn dkim_keygen_record_and_a_bad_key() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(RINGPOST).args(args).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let rsa = dir.path().join("rsa.pem");
    let ed = dir.path().join("ed.pem");
    let rsa_path = rsa.to_str().unwrap();
    let ed_path = ed.to_str().unwrap();
    let (ok, out, err) = run(&[
        "dkim",
        "keygen",
        "Example.COM",
        "--selector",
        "s1",
        "--out",
        rsa_path,
    ]);
    assert!(ok, "{err}");
    assert!(
        out.contains("s1._domainkey.example.com. IN TXT ( \"v=DKIM1; k=rsa; p=MIIBIjAN"),
        "{out}"
    );
    assert!(
        out.contains("[[dkim.keys]]") && out.contains("selector = \"s1\""),
        "{out}"
    );
    let (ok, out, err) = run(&[
        "dkim",
        "keygen",
        "example.com",
        "--selector",
        "e1",
        "--algorithm",
        "ed25519",
        "--out",
        ed_path,
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("\"v=DKIM1; k=ed25519; p="), "{out}");
    for key in [&rsa, &ed] {
        let mode = std::fs::metadata(key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{}", key.display());
    }
    // Never over an existing key.
    let (ok, _, err) = run(&[
        "dkim",
        "keygen",
        "example.com",
        "--selector",
        "s1",
        "--out",
        rsa_path,
    ]);
    assert!(!ok && err.contains("exists"), "{err}");
    let (ok, out, _) = run(&[
        "dkim",
        "record",
        "example.com",
        "--selector",
        "e1",
        "--key",
        ed_path,
    ]);
    assert!(ok && out.contains("e1._domainkey.example.com."), "{out}");

    // A key file that is no key stops the start, naming it.
    let bad = dir.path().join("bad.pem");
    std::fs::write(
        &bad,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let config = dir.path().join("ringpost.toml");
    std::fs::write(
        &config,
        format!(
            "[[dkim.keys]]\ndomain = \"example.com\"\nselector = \"x\"\nkey = \"{}\"\n",
            bad.display()
        ),
    )
    .unwrap();
    let out = Command::new(RINGPOST)
        .args([
            "serve",
            "--ephemeral-ports",
            "127.0.0.1",
            "--no-relay",
            "--config",
        ])
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("DKIM") && err.contains("bad.pem"), "{err}");
}

/// Logs are written by a thread of their own: a log reader that stops
/// reading (a full pipe) never stalls the server. Every accepted message
/// logs a line; a pipe holds 64 KiB, a few hundred of them.
#[test]
fn a_stalled_log_reader_does_not_stall_mail() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (mut server, addr) = spawn_server_logging_to(&data, &["--no-relay"], Stdio::piped());
    // The pipe is never read.
    let _stderr = server.stderr.take();
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let worker = {
        let (stop, acked) = (stop.clone(), acked.clone());
        std::thread::spawn(move || blast(addr, 0, stop, acked))
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    // Three times what fills the pipe: a server that logged in line would
    // have stopped at a third of it. (Kept small: every message is synced
    // to disk, one at a time, on a debug build.)
    while acked.lock().unwrap().len() < 1000 && Instant::now() < deadline && !worker.is_finished() {
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    let _ = worker.join();
    let count = acked.lock().unwrap().len();
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(server.id() as i32, libc::SIGKILL) };
    let _ = server.wait();
    assert!(
        count >= 1000,
        "only {count} messages accepted with the log pipe full"
    );
}

/// The RCPT reply for `to` from a new session.
fn rcpt_reply(addr: SocketAddr, to: &str) -> String {
    let (mut c, _) = smtp_client(addr);
    c.cmd("EHLO t");
    c.cmd("MAIL FROM:<a@b.test>");
    let reply = c.cmd(&format!("RCPT TO:<{to}>"));
    c.cmd("QUIT");
    reply
}

#[test]
fn sighup_reloads_the_config_and_certificates_and_logs_are_plain_in_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let log = std::fs::File::create(dir.path().join("ringpost.log")).unwrap();
    let config = dir.path().join("ringpost.toml");
    std::fs::write(&config, "").unwrap();
    let mut child = Command::new(RINGPOST)
        .args([
            "serve",
            "--ephemeral-ports",
            "127.0.0.1",
            "--no-relay",
            "--config",
        ])
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("ringpost starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut tls, mut smtp) = (String::new(), None);
    for line in lines.by_ref() {
        let line = line.unwrap();
        let mut words = line.split_whitespace();
        match words.next() {
            Some("tls") => tls = line.clone(),
            Some("smtp") => smtp = words.next().and_then(|a| a.parse::<SocketAddr>().ok()),
            Some("relay") => break,
            _ => {}
        }
    }
    assert!(tls.contains("self-signed"), "{tls}");
    let smtp = smtp.expect("the smtp line");
    assert!(
        rcpt_reply(smtp, "x@new.test").starts_with("250"),
        "relayed before"
    );

    std::fs::write(
        &config,
        "hostname = \"elsewhere.test\"\n[smtp]\nlocal_domains = [\"new.test\"]\n",
    )
    .unwrap();
    unsafe { libc::kill(child.id() as i32, libc::SIGHUP) };
    let said: Vec<String> = lines.by_ref().take(3).map(|l| l.unwrap()).collect();
    assert_eq!(
        said[0], "ringpost: configuration reloaded (generation 1)",
        "{said:?}"
    );
    assert_eq!(
        said[1], "ringpost: these settings need a restart; their old values stay: hostname",
        "{said:?}"
    );
    assert!(
        said[2].starts_with("ringpost: certificates reloaded: ") && said[2].contains("self-signed"),
        "{said:?}"
    );
    let reply = rcpt_reply(smtp, "x@new.test");
    assert!(
        reply.starts_with("550 5.1.1"),
        "new.test is local now: {reply}"
    );

    // The same through the API, with the command.
    std::fs::write(
        &config,
        "[smtp]\nlocal_domains = [\"new.test\", \"other.test\"]\n",
    )
    .unwrap();
    let (ok, out, err) = ringpost(&["config", "reload"], &dir.path().join("data"), "");
    assert!(
        ok && out.starts_with("configuration reloaded (generation 2)"),
        "{out}{err}"
    );
    assert!(rcpt_reply(smtp, "x@other.test").starts_with("550 5.1.1"));

    // A broken file changes nothing.
    std::fs::write(&config, "[smtp]\nlocal_domain = [\"typo\"]\n").unwrap();
    let (ok, _, err) = ringpost(&["config", "reload"], &dir.path().join("data"), "");
    assert!(
        !ok && err.contains("422") && err.contains("local_domain"),
        "{err}"
    );
    unsafe { libc::kill(child.id() as i32, libc::SIGHUP) };
    let reply = rcpt_reply(smtp, "x@new.test");
    assert!(reply.starts_with("550 5.1.1"), "{reply}");
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
    // stderr went to a file: no colour escapes in it.
    let text = std::fs::read_to_string(dir.path().join("ringpost.log")).unwrap();
    assert!(text.contains("ringpost started"), "{text}");
    assert!(
        text.contains("reload failed") && text.contains("local_domain"),
        "{text}"
    );
    assert!(!text.contains('\u{1b}'), "escape codes in the log file");
}

#[test]
fn json_logs_are_one_object_a_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(RINGPOST)
        .args([
            "serve",
            "--ephemeral-ports",
            "127.0.0.1",
            "--no-relay",
            "--log-format",
            "json",
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ringpost starts");
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    for line in out.by_ref() {
        if line.unwrap().trim_start().starts_with("relay ") {
            break;
        }
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(child.wait().unwrap().success());
    let mut started = false;
    for line in err.lines() {
        assert!(line.starts_with('{') && line.ends_with('}'), "{line}");
        started |= line.contains("\"message\":\"ringpost started\"");
    }
    assert!(started, "{err}");
}

/// `ringpost suppression` beside a running server (through its API) and on
/// a stopped one's store.
#[test]
fn suppression_add_list_remove() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (mut server, _) = spawn_server(&data, &["--no-relay"]);
    let listed = |data: &Path| -> serde_json::Value {
        let (ok, out, err) = ringpost(&["suppression", "list", "--json"], data, "");
        assert!(ok, "{err}");
        serde_json::from_str(&out).unwrap()
    };
    let (ok, out, err) = ringpost(
        &[
            "suppression",
            "add",
            "Bob@Far.Test",
            "--reason",
            "asked us to stop",
        ],
        &data,
        "",
    );
    assert!(ok && out.contains("suppressed bob@far.test"), "{out}{err}");
    let (ok, _, err) = ringpost(&["suppression", "add", "not-an-address"], &data, "");
    assert!(
        !ok && err.contains("400") && err.contains("not an email address"),
        "{err}"
    );
    let now = listed(&data);
    assert_eq!(now[0]["address"], "bob@far.test", "{now}");
    assert_eq!(now[0]["class"], "manual", "{now}");
    assert_eq!(now[0]["reason"], "asked us to stop", "{now}");
    let (ok, out, _) = ringpost(&["suppression", "list"], &data, "");
    assert!(
        ok && out.contains("(all senders)") && out.contains("1 suppressed"),
        "{out}"
    );

    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(server.id() as i32, libc::SIGTERM) };
    assert!(server.wait().unwrap().success());
    assert_eq!(listed(&data)[0]["address"], "bob@far.test", "durable");
    let (ok, out, err) = ringpost(&["suppression", "remove", "bob@far.test"], &data, "");
    assert!(ok && out.contains("removed"), "{out}{err}");
    let (ok, _, err) = ringpost(&["suppression", "remove", "bob@far.test"], &data, "");
    assert!(!ok && err.contains("not suppressed"), "{err}");
    assert_eq!(listed(&data), serde_json::json!([]));
}

/// Delivery events wait in the store until the webhook takes them: events
/// of mail acknowledged while the endpoint was down survive a SIGKILL and
/// are posted after the restart, every one.
#[test]
fn webhook_events_survive_sigkill() {
    use ringpost_loadtest::event_sink::EventSink;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // A port nobody listens on yet: the endpoint is down.
    let port = unused_addr().port();
    let config = dir.path().join("ringpost.toml");
    std::fs::write(
        &config,
        format!("[webhook]\nurl = \"http://{UNUSED_IP}:{port}/hook\"\nretry_max_secs = 1\n"),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let (mut server, addr) = spawn_server(&data, &["--no-relay", "--config", config]);
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..2)
        .map(|w| {
            let (stop, acked) = (stop.clone(), acked.clone());
            std::thread::spawn(move || blast(addr, w, stop, acked))
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked.lock().unwrap().len() < 50 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    server.kill().unwrap();
    server.wait().unwrap();
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    let acked: Vec<String> = acked
        .lock()
        .unwrap()
        .iter()
        .map(|(_, id)| id.clone())
        .collect();
    assert!(acked.len() >= 50, "only {} acknowledged", acked.len());

    let hook = EventSink::start((UNUSED_IP, port).into(), 0).unwrap();
    let (mut server, _) = spawn_server(&data, &["--no-relay", "--config", config]);
    let all_there = |events: &[serde_json::Value]| {
        acked.iter().all(|id| {
            events
                .iter()
                .any(|e| e["type"] == "reception" && e["queue_id"] == id.as_str())
        })
    };
    let arrived = hook.wait_for(Duration::from_secs(30), all_there);
    unsafe { libc::kill(server.id() as i32, libc::SIGTERM) };
    server.wait().unwrap();
    assert!(
        arrived,
        "{} acknowledged, {} events posted",
        acked.len(),
        hook.events().len()
    );
}

/// A loopback address no other test of this file listens on, so a port
/// found free on it stays free (on 127.0.0.1 a parallel test may take it).
const UNUSED_IP: std::net::Ipv4Addr = std::net::Ipv4Addr::new(127, 0, 0, 9);

/// An address on [`UNUSED_IP`] that nothing listens on.
fn unused_addr() -> SocketAddr {
    std::net::TcpListener::bind((UNUSED_IP, 0))
        .unwrap()
        .local_addr()
        .unwrap()
}

/// The reload the operator does most: a route changed in the file, SIGHUP,
/// and mail waiting for the old (dead) route goes out through the new one,
/// while a session opened before the reload carries on and is delivered
/// through it too.
#[test]
fn sighup_applies_a_changed_route_without_dropping_an_open_session() {
    use ringpost_loadtest::sink::{self, SinkConfig};
    let sink = sink::start(SinkConfig::default()).unwrap();
    let dead = unused_addr();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ringpost.toml");
    let write_config = |route: SocketAddr| {
        std::fs::write(
            &config,
            format!(
                "[relay]\nretry_initial_secs = 1\nretry_max_secs = 1\nconnect_timeout_secs = 2\n\
                 [relay.routes]\n\"far.test\" = \"{route}\"\n"
            ),
        )
        .unwrap();
    };
    write_config(dead);
    let (mut server, addr) = spawn_server(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    // A session that stays open across the reload.
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut w = stream.try_clone().unwrap();
    let mut r = BufReader::new(stream);
    read_reply(&mut r).unwrap();
    w.write_all(b"EHLO open.test\r\n").unwrap();
    read_reply(&mut r).unwrap();

    // Mail for far.test meets the dead route and waits.
    let (mut c, _) = smtp_client(addr);
    for line in [
        "EHLO t",
        "MAIL FROM:<a@origin.test>",
        "RCPT TO:<x@far.test>",
        "DATA",
    ] {
        c.cmd(line);
    }
    assert!(c
        .cmd("Subject: first\r\n\r\nwaited\r\n.")
        .starts_with("250"));
    c.cmd("QUIT");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(sink.stats().messages, 0);

    write_config(sink.addr());
    unsafe { libc::kill(server.id() as i32, libc::SIGHUP) };
    assert!(
        sink.wait_for_messages(1, Duration::from_secs(20)),
        "the waiting mail took the new route"
    );

    for line in ["MAIL FROM:<a@origin.test>", "RCPT TO:<y@far.test>", "DATA"] {
        w.write_all(format!("{line}\r\n").as_bytes()).unwrap();
        let reply = read_reply(&mut r).unwrap();
        assert!(
            reply.starts_with('2') || reply.starts_with('3'),
            "{line}: {reply}"
        );
    }
    w.write_all(b"Subject: second\r\n\r\nacross the reload\r\n.\r\n")
        .unwrap();
    assert!(read_reply(&mut r).unwrap().starts_with("250"));
    w.write_all(b"QUIT\r\n").unwrap();
    assert!(
        sink.wait_for_messages(2, Duration::from_secs(20)),
        "the open session's mail too"
    );
    unsafe { libc::kill(server.id() as i32, libc::SIGTERM) };
    assert!(server.wait().unwrap().success());
}

/// A minimal line client for one-off SMTP commands.
struct SmtpClient {
    w: TcpStream,
    r: BufReader<TcpStream>,
}

impl SmtpClient {
    fn cmd(&mut self, line: &str) -> String {
        self.w.write_all(format!("{line}\r\n").as_bytes()).unwrap();
        read_reply(&mut self.r).unwrap()
    }
}

fn smtp_client(addr: SocketAddr) -> (SmtpClient, String) {
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let w = stream.try_clone().unwrap();
    let mut r = BufReader::new(stream);
    let greeting = read_reply(&mut r).unwrap();
    (SmtpClient { w, r }, greeting)
}
