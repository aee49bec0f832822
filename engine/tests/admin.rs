//! The control plane end to end on loopback: `/metrics` as scrapers and
//! promtool read it, health checks, the token, and accounts changed through
//! the API taking effect at once in IMAP sessions.

mod common;

use common::{start_server, LineClient};
use ringpost_engine::admin::{self, token_path};
use ringpost_engine::RunningServer;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

fn local_config(config: &mut ringpost_engine::Config) {
    config.smtp.local_domains = vec!["ours.test".into()];
    config.imap.auth_failure_delay_secs = 0;
}

/// An HTTP answer: status, head, body.
struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }
}

/// One request on its own connection (`Connection: close`).
fn request(addr: SocketAddr, method: &str, path: &str, headers: &[&str], body: &str) -> Answer {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut text = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
    for header in headers {
        text.push_str(header);
        text.push_str("\r\n");
    }
    text.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    c.write_all(text.as_bytes()).unwrap();
    let mut raw = String::new();
    c.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("a whole answer");
    let status = head[9..12].parse().unwrap();
    Answer {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

fn bearer(server: &RunningServer) -> String {
    let data_dir = &server.config().data_dir;
    let token = std::fs::read_to_string(token_path(data_dir)).unwrap();
    format!("Authorization: Bearer {}", token.trim())
}

#[test]
fn metrics_in_both_formats_health_and_head() {
    let (server, _dir) = start_server(local_config);
    let addr = server.metrics_addr().unwrap();

    let classic = request(addr, "GET", "/metrics", &[], "");
    assert_eq!(classic.status, 200);
    assert_eq!(
        classic.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert!(classic
        .body
        .contains("# TYPE ringpost_store_commits_total counter\n"));
    assert!(!classic.body.contains("# EOF"));

    let open = request(
        addr,
        "GET",
        "/metrics",
        &["Accept: application/openmetrics-text;version=1.0.0,text/plain;q=0.5"],
        "",
    );
    assert_eq!(open.status, 200);
    assert!(open
        .header("content-type")
        .unwrap()
        .starts_with("application/openmetrics-text"));
    assert!(open
        .body
        .contains("# TYPE ringpost_store_commits counter\n"));
    assert!(open.body.ends_with("# EOF\n"));

    // HEAD: the same head, no body (a scraper's or a load balancer's probe).
    let head = request(addr, "HEAD", "/metrics", &[], "");
    assert_eq!(head.status, 200);
    assert_eq!(head.body, "");
    let length: usize = head.header("content-length").unwrap().parse().unwrap();
    assert!(length > 1000, "{length}");

    assert_eq!(request(addr, "GET", "/healthz", &[], "").status, 200);
    let ready = request(addr, "GET", "/readyz", &[], "");
    assert_eq!((ready.status, ready.body.as_str()), (200, "ready\n"));
    let post = request(addr, "POST", "/metrics", &[], "");
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
    assert_eq!(request(addr, "GET", "/nope", &[], "").status, 404);

    // promtool (Debian's prometheus package) lints what scrapers read.
    let lint = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool runs (make test installs it)");
    let mut stdin = lint.stdin.as_ref().unwrap();
    stdin.write_all(classic.body.as_bytes()).unwrap();
    let out = lint.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    server.shutdown();
}

#[test]
fn the_api_wants_the_token() {
    let (server, _dir) = start_server(local_config);
    let addr = server.metrics_addr().unwrap();
    let token_file = token_path(&server.config().data_dir);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
    assert_eq!(
        mode & 0o777,
        0o600,
        "only the server's user reads the token"
    );

    let none = request(addr, "GET", "/api/v1/users", &[], "");
    assert_eq!(none.status, 401);
    assert_eq!(
        none.header("www-authenticate"),
        Some("Bearer realm=\"ringpost\"")
    );
    let wrong = request(
        addr,
        "GET",
        "/api/v1/users",
        &["Authorization: Bearer 0000"],
        "",
    );
    assert_eq!(wrong.status, 401);
    let body = r#"{"name":"eve@ours.test","password":"x"}"#;
    let refused = request(
        addr,
        "POST",
        "/api/v1/users",
        &["Authorization: Basic eDp4"],
        body,
    );
    assert_eq!(refused.status, 401);
    let ok = request(addr, "GET", "/api/v1/users", &[&bearer(&server)], "");
    assert_eq!((ok.status, ok.body.as_str()), (200, "[]\n"));
    let config = request(addr, "GET", "/api/v1/config", &[&bearer(&server)], "");
    assert_eq!(config.status, 200);
    let config: serde_json::Value = serde_json::from_str(&config.body).unwrap();
    assert_eq!(config["smtp"]["local_domains"][0], "ours.test", "{config}");
    assert_eq!(request(addr, "GET", "/api/v1/config", &[], "").status, 401);
    let address_file = ringpost_engine::admin::address_path(&server.config().data_dir);
    assert!(address_file.exists());
    server.shutdown();
    // Nothing listens there now: the CLI must not send the token there.
    assert!(!address_file.exists());
}

#[test]
fn accounts_through_the_api_take_effect_at_once() {
    let (server, _dir) = start_server(local_config);
    let addr = server.metrics_addr().unwrap();
    let auth = bearer(&server);
    let imap = server.imap_addr().unwrap();
    let login = |password: &str| {
        let (mut c, _) = LineClient::connect(imap);
        let reply = c.tagged("l", &format!("LOGIN ann@ours.test {password}"));
        (c, reply.last().unwrap().starts_with("l OK"))
    };

    let added = request(
        addr,
        "POST",
        "/api/v1/users",
        &[&auth, "Content-Type: application/json"],
        r#"{"name":"Ann@Ours.test","password":"first"}"#,
    );
    assert_eq!(added.status, 201, "{}", added.body);
    assert_eq!(added.body, "{\"name\":\"ann@ours.test\"}\n");
    assert!(login("first").1, "a new account logs in at once");

    let again = request(
        addr,
        "POST",
        "/api/v1/users",
        &[&auth],
        r#"{"name":"ann@ours.test","password":"x"}"#,
    );
    assert_eq!(again.status, 409);
    let foreign = request(
        addr,
        "POST",
        "/api/v1/users",
        &[&auth],
        r#"{"name":"ann@elsewhere.test","password":"x"}"#,
    );
    assert_eq!(foreign.status, 400);
    assert!(foreign.body.contains("local domains"), "{}", foreign.body);
    assert_eq!(
        request(addr, "POST", "/api/v1/users", &[&auth], "{nope").status,
        400
    );
    assert_eq!(
        request(addr, "POST", "/api/v1/users", &[&auth], "{}").status,
        400
    );
    let huge = format!(
        r#"{{"name":"a@ours.test","password":"{}"}}"#,
        "x".repeat(100_000)
    );
    assert_eq!(
        request(addr, "POST", "/api/v1/users", &[&auth], &huge).status,
        413
    );

    let changed = request(
        addr,
        "PUT",
        "/api/v1/users/ann%40ours.test/password",
        &[&auth],
        r#"{"password":"second"}"#,
    );
    assert_eq!(changed.status, 200, "{}", changed.body);
    assert!(!login("first").1, "the old password is refused at once");
    let (mut session, ok) = login("second");
    assert!(ok);

    let quota = request(
        addr,
        "PUT",
        "/api/v1/users/ann@ours.test/quota",
        &[&auth],
        r#"{"storage_bytes":1048576,"messages":"none"}"#,
    );
    assert_eq!(quota.status, 200, "{}", quota.body);
    let listed = request(addr, "GET", "/api/v1/users", &[&auth], "");
    let listed: serde_json::Value = serde_json::from_str(&listed.body).unwrap();
    assert_eq!(listed[0]["name"], "ann@ours.test");
    assert_eq!(listed[0]["quota_bytes"], 1048576);
    assert_eq!(listed[0]["quota_messages"], serde_json::Value::Null);

    // Deleted while a session idles: it is logged out.
    assert!(session
        .tagged("s", "SELECT INBOX")
        .last()
        .unwrap()
        .starts_with("s OK"));
    session.send("i IDLE\r\n");
    assert!(session.line().starts_with("+ "));
    let deleted = request(addr, "DELETE", "/api/v1/users/ann@ours.test", &[&auth], "");
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    let deleted: serde_json::Value = serde_json::from_str(&deleted.body).unwrap();
    assert_eq!(deleted["mailboxes"], 5);
    assert_eq!(deleted["name"], "ann@ours.test");
    let bye = session.line();
    assert!(bye.starts_with("* BYE"), "{bye}");
    assert!(!login("second").1, "a deleted account cannot log in");
    let gone = request(addr, "DELETE", "/api/v1/users/ann@ours.test", &[&auth], "");
    assert_eq!(gone.status, 404);
    let wrong_method = request(addr, "PATCH", "/api/v1/users/ann@ours.test", &[&auth], "");
    assert_eq!(wrong_method.status, 405);
    server.shutdown();
}

#[test]
fn connections_past_the_cap_hear_503_and_the_rest_are_still_served() {
    let (server, _dir) = start_server(local_config);
    let addr = server.metrics_addr().unwrap();
    // Connections that never send a request hold every slot...
    let idle: Vec<TcpStream> = (0..admin::MAX_CONNECTIONS)
        .map(|_| TcpStream::connect(addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    // ...so one more hears 503 and is closed at once rather than queued.
    let mut extra = TcpStream::connect(addr).unwrap();
    extra
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let _ = extra.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut answer = Vec::new();
    let _ = extra.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 503 "),
        "turned away, not served: {answer:?}"
    );
    drop(idle);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(request(addr, "GET", "/healthz", &[], "").status, 200);
    server.shutdown();
}

/// Send `count` messages to a local account over SMTP.
fn deliver(server: &RunningServer, count: usize) {
    let (mut c, greeting) = common::Client::connect(server.smtp_addr());
    assert!(greeting.starts_with("220"), "{greeting}");
    assert!(c.cmd("EHLO client.test").starts_with("250"));
    for n in 0..count {
        assert!(c.cmd("MAIL FROM:<a@example.org>").starts_with("250"));
        assert!(c.cmd("RCPT TO:<ann@ours.test>").starts_with("250"));
        assert!(c.cmd("DATA").starts_with("354"));
        let reply = c.cmd(&format!("Subject: {n}\r\n\r\nbody\r\n."));
        assert!(reply.starts_with("250"), "{reply}");
    }
    assert!(c.cmd("QUIT").starts_with("221"));
}

/// A real Prometheus (Debian's package) scrapes the server, and a query of
/// what it scraped counts the accepted messages.
#[test]
fn prometheus_scrapes_and_counts_accepted_mail() {
    use std::io::BufRead;
    let (server, dir) = start_server(local_config);
    common::add_user(&server, "ann@ours.test");
    deliver(&server, 3);
    let target = server.metrics_addr().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: ringpost\n    \
             static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .unwrap();
    let mut prometheus = std::process::Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("tsdb").display()
        ))
        .arg("--web.listen-address=127.0.0.1:0")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("prometheus runs (make test installs it)");
    // It logs the port it got: `msg="Listening on" address=127.0.0.1:PORT`.
    let (found, port) = std::sync::mpsc::channel();
    let stderr = prometheus.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains("msg=\"Listening on\"") {
                let address = line.rsplit("address=").next().unwrap_or_default();
                let _ = found.send(address.trim().to_owned());
            }
        }
    });
    let api: SocketAddr = port
        .recv_timeout(Duration::from_secs(60))
        .expect("prometheus listens")
        .parse()
        .unwrap();
    let query = "/api/v1/query?query=sum(ringpost_smtp_messages_accepted_total)";
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut last;
    let counted = loop {
        last = request(api, "GET", query, &[], "").body;
        let value: Option<String> = serde_json::from_str::<serde_json::Value>(&last)
            .ok()
            .and_then(|v| {
                v["data"]["result"][0]["value"][1]
                    .as_str()
                    .map(str::to_owned)
            });
        if value.as_deref() == Some("3") {
            break true;
        }
        if std::time::Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let _ = prometheus.kill();
    let _ = prometheus.wait();
    assert!(
        counted,
        "prometheus never counted 3 accepted messages: {last}"
    );
    server.shutdown();
}

/// The metric names a file uses (`ringpost_*`, `process_*`), histogram
/// series suffixes taken off.
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    for start in ["ringpost_", "process_"] {
        let mut rest = text;
        while let Some(at) = rest.find(start) {
            let before = rest[..at].chars().last();
            let tail = &rest[at..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            let name = &tail[..end];
            rest = &tail[end..];
            // Part of a longer word or a path, or a prefix (`process_*`).
            if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '/')
                || name.ends_with('_')
            {
                continue;
            }
            let name = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(name);
            names.insert(name.to_owned());
        }
    }
    names
}

/// What ships in contrib/ for operators uses only metrics the server has,
/// and Prometheus accepts the alert rules.
#[test]
fn contrib_alerts_and_dashboard_use_real_metrics() {
    let (server, _dir) = start_server(local_config);
    let exposed = request(server.metrics_addr().unwrap(), "GET", "/metrics", &[], "").body;
    let mut known = std::collections::BTreeSet::new();
    // Declared families (a labelled counter has no sample before its first
    // event, but its `# TYPE` line is there) and every sample's name.
    for line in exposed.lines() {
        let name = match line.strip_prefix("# TYPE ") {
            Some(declared) => declared.split(' ').next().unwrap_or_default(),
            None if line.starts_with('#') => continue,
            None => line.split(['{', ' ']).next().unwrap_or_default(),
        };
        known.insert(name.to_owned());
        for suffix in ["_bucket", "_sum", "_count"] {
            if let Some(base) = name.strip_suffix(suffix) {
                known.insert(base.to_owned());
            }
        }
    }
    let contrib = concat!(env!("CARGO_MANIFEST_DIR"), "/../contrib");
    for file in [
        "prometheus/ringpost-alerts.yml",
        "grafana/ringpost-dashboard.json",
    ] {
        let text = std::fs::read_to_string(format!("{contrib}/{file}")).unwrap();
        let used = metric_names(&text);
        assert!(used.len() > 5, "{file}: {used:?}");
        let unknown: Vec<_> = used.iter().filter(|n| !known.contains(*n)).collect();
        assert!(
            unknown.is_empty(),
            "{file} uses metrics the server lacks: {unknown:?}"
        );
    }
    // The rules parse, and the unit tests beside them (alerts firing on
    // made-up series) pass.
    for (action, file) in [
        ("check", "ringpost-alerts.yml"),
        ("test", "ringpost-alerts.test.yml"),
    ] {
        let rules = std::process::Command::new("promtool")
            .args([action, "rules", &format!("{contrib}/prometheus/{file}")])
            .output()
            .expect("promtool runs");
        assert!(
            rules.status.success(),
            "promtool {action} rules {file}:\n{}{}",
            String::from_utf8_lossy(&rules.stdout),
            String::from_utf8_lossy(&rules.stderr)
        );
    }
    server.shutdown();
}
