//! Sieve filters end to end: scripts stored through the admin API, mail
//! sent over SMTP, and what each filter did read back from the store, the
//! relay's smarthost and the metrics.

mod common;
mod support;

use common::{add_user, admin_call, metrics_with, start_server, Client};
use ringpost_engine::RunningServer;
use ringpost_storage::mailbox::{self, flag};
use std::time::{Duration, Instant};
use support::tls_mx::{TlsMode, TlsMx};

const SCRIPT: &str = r#"require ["fileinto", "mailbox", "imap4flags", "reject", "vacation", "copy"];
# Lists into their own folder, read already.
if header :contains "subject" "[list]" {
    fileinto :create :flags "\\Seen" "Lists/Dev";
    stop;
}
if address :is "from" "spam@bad.test" { discard; stop; }
if header :contains "subject" "refuse me" { reject "I do not take such mail"; stop; }
if header :contains "subject" "forward" {
    redirect "bob@ours.test";
    redirect :copy "friend@far.test";
    stop;
}
if header :contains "subject" "missing box" { fileinto "Nowhere"; stop; }
if header :contains "subject" "flag me" { addflag "$Important"; }
vacation :days 3 :subject "Away" text:
I am away until Monday.
.
;
"#;

fn count(server: &RunningServer, user: &str, name: &str) -> u32 {
    mailbox::meta(&*server.store(), user, name)
        .unwrap()
        .map_or(0, |m| m.messages)
}

/// Each row's flags in `user`'s mailbox `name`.
fn flags(server: &RunningServer, user: &str, name: &str) -> Vec<mailbox::Flags> {
    let store = server.store();
    let meta = mailbox::meta(&*store, user, name).unwrap().unwrap();
    let mut out = Vec::new();
    mailbox::rows(&*store, user, meta.uidvalidity, &mut |_, row| {
        out.push(row.flags);
        true
    })
    .unwrap();
    out
}

/// Send one message; the reply to its end of data.
fn send(server: &RunningServer, from: &str, to: &[&str], subject: &str) -> String {
    let (mut c, _) = Client::connect(server.smtp_addr());
    assert!(c.cmd("EHLO client.test").starts_with("250"));
    assert!(c.cmd(&format!("MAIL FROM:<{from}>")).starts_with("250"));
    for rcpt in to {
        let reply = c.cmd(&format!("RCPT TO:<{rcpt}>"));
        assert!(reply.starts_with("250"), "{rcpt}: {reply}");
    }
    assert!(c.cmd("DATA").starts_with("354"));
    let reply = c.cmd(&format!(
        "From: <{from}>\r\nTo: <alice@ours.test>\r\nSubject: {subject}\r\n\
         Message-ID: <{}@client.test>\r\n\r\nbody\r\n.",
        subject.len()
    ));
    c.cmd("QUIT");
    reply
}

/// The stored text of the newest message in `user`'s INBOX.
fn newest_body(server: &RunningServer, user: &str) -> String {
    let store = server.store();
    let meta = mailbox::meta(&*store, user, "INBOX").unwrap().unwrap();
    let rows = mailbox::all_rows(&*store, user, meta.uidvalidity).unwrap();
    let (_, row) = rows.last().unwrap();
    let body = ringpost_storage::spool::read_body(&*store, &row.message)
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&body).into_owned()
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn filters_file_flag_discard_reject_redirect_and_answer_while_away() {
    let smarthost = TlsMx::start("sink.test", TlsMode::Working);
    let smarthost_addr = smarthost.addr().to_string();
    let (server, _data) = start_server(|c| {
        c.smtp.local_domains = vec!["ours.test".into()];
        c.relay.enabled = true;
        c.relay.smarthost = Some(smarthost_addr);
        c.relay.retry_initial_secs = 1;
        c.dkim.keys = vec![ringpost_engine::config::DkimKeyConfig {
            domain: "ours.test".into(),
            selector: "s1".into(),
            key: concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/dkim-rsa2048.pem").into(),
        }];
    });
    for user in ["alice@ours.test", "bob@ours.test", "carol@ours.test"] {
        add_user(&server, user);
    }

    // A script with a mistake is refused with its line; nothing is stored.
    let (status, answer) = admin_call(
        &server,
        "PUT",
        "/api/v1/users/alice@ours.test/sieve/main",
        r#"{"text": "require \"fileinto\";\nfileinto \"A\""}"#,
        true,
    );
    assert_eq!(status, 422, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().starts_with("line 2: "),
        "{answer}"
    );
    let body = serde_json::json!({ "text": SCRIPT }).to_string();
    let (status, answer) = admin_call(
        &server,
        "PUT",
        "/api/v1/users/alice@ours.test/sieve/main",
        &body,
        true,
    );
    assert_eq!(status, 200, "{answer}");
    let (_, listed) = admin_call(
        &server,
        "GET",
        "/api/v1/users/alice@ours.test/sieve",
        "",
        true,
    );
    assert_eq!(listed["scripts"][0]["name"], "main");
    assert_eq!(listed["scripts"][0]["active"], true);

    let alice = "alice@ours.test";
    let inbox = |server: &RunningServer, user: &str| count(server, user, "INBOX");

    // fileinto :create :flags: a new mailbox (and its parent), seen.
    let reply = send(&server, "carol@ours.test", &[alice], "[list] release notes");
    assert!(reply.starts_with("250"), "{reply}");
    assert_eq!(count(&server, alice, "Lists/Dev"), 1);
    assert!(mailbox::meta(&*server.store(), alice, "Lists")
        .unwrap()
        .is_some());
    assert!(flags(&server, alice, "Lists/Dev")[0].has(flag::SEEN));
    assert_eq!(inbox(&server, alice), 0);

    // discard: accepted, stored nowhere.
    let reply = send(&server, "spam@bad.test", &[alice], "cheap pills");
    assert!(reply.starts_with("250"), "{reply}");
    assert_eq!(inbox(&server, alice), 0);

    // reject with no one else to take it: refused at the protocol level.
    let reply = send(&server, "carol@ours.test", &[alice], "refuse me");
    assert!(
        reply.starts_with("550 5.7.1 I do not take such mail"),
        "{reply}"
    );
    // With another recipient: taken for bob; carol (a sender this server
    // trusts) hears of alice's refusal in a DSN.
    let (bob_before, carol_before) = (
        inbox(&server, "bob@ours.test"),
        inbox(&server, "carol@ours.test"),
    );
    let reply = send(
        &server,
        "carol@ours.test",
        &[alice, "bob@ours.test"],
        "refuse me",
    );
    assert!(reply.starts_with("250"), "{reply}");
    assert_eq!(inbox(&server, "bob@ours.test"), bob_before + 1);
    assert_eq!(inbox(&server, "carol@ours.test"), carol_before + 1);
    assert_eq!(inbox(&server, alice), 0);

    // A fileinto to a mailbox that does not exist keeps the mail in INBOX.
    let reply = send(&server, "carol@ours.test", &[alice], "missing box");
    assert!(reply.starts_with("250"), "{reply}");
    assert_eq!(inbox(&server, alice), 1);
    assert!(mailbox::meta(&*server.store(), alice, "Nowhere")
        .unwrap()
        .is_none());

    // redirect: to bob's INBOX and, as a copy, through the relay; alice's
    // own copy is cancelled by the first.
    let bob_before = inbox(&server, "bob@ours.test");
    let reply = send(&server, "dave@far.test", &[alice], "forward this");
    assert!(reply.starts_with("250"), "{reply}");
    assert_eq!(inbox(&server, "bob@ours.test"), bob_before + 1);
    assert_eq!(inbox(&server, alice), 1);
    // It leaves from our SRS address for dave, so the next server's SPF
    // check passes.
    wait_for("the redirected copy", || {
        smarthost.received().iter().any(|r| {
            r.mail_from.starts_with("SRS0=")
                && r.mail_from.ends_with("=far.test=dave@mx.test")
                && String::from_utf8_lossy(&r.data).contains("Subject: forward this")
        })
    });
    // The Return-Path local delivery added is not sent on (RFC 5321 §4.4:
    // the server that delivers adds its own).
    assert!(smarthost
        .received()
        .iter()
        .all(|r| !String::from_utf8_lossy(&r.data).contains("Return-Path")));

    // vacation: one reply per sender in :days, from the null sender, with
    // the flags the script added on the kept copy.
    let carol_before = inbox(&server, "carol@ours.test");
    let reply = send(&server, "carol@ours.test", &[alice], "flag me, lunch?");
    assert!(reply.starts_with("250"), "{reply}");
    assert_eq!(inbox(&server, alice), 2);
    assert_eq!(flags(&server, alice, "INBOX")[1].keywords, ["$Important"]);
    assert_eq!(inbox(&server, "carol@ours.test"), carol_before + 1);
    let reply = send(&server, "carol@ours.test", &[alice], "lunch again?");
    assert!(reply.starts_with("250"), "{reply}");
    assert_eq!(inbox(&server, alice), 3);
    assert_eq!(
        inbox(&server, "carol@ours.test"),
        carol_before + 1,
        "one vacation reply per sender"
    );
    // A remote sender's reply leaves through the relay.
    let reply = send(&server, "erin@far.test", &[alice], "hello");
    assert!(reply.starts_with("250"), "{reply}");
    wait_for("the vacation reply", || {
        smarthost.received().iter().any(|r| {
            let text = String::from_utf8_lossy(&r.data);
            r.mail_from.is_empty()
                && text.contains("To: <erin@far.test>")
                && text.contains("Subject: Away")
                && text.contains("Auto-Submitted: auto-replied")
                && text.contains("In-Reply-To: <5@client.test>")
                && text.contains("I am away until Monday.")
                // Signed as alice's own mail would be: it is From her.
                && text.starts_with("DKIM-Signature:")
                && text.contains("d=ours.test;")
        })
    });

    let metrics = metrics_with(
        &server,
        &[
            "ringpost_sieve_actions_total{action=\"fileinto\"} 2",
            "ringpost_sieve_actions_total{action=\"discard\"} 1",
            "ringpost_sieve_actions_total{action=\"reject\"} 2",
            "ringpost_sieve_actions_total{action=\"redirect\"} 2",
            "ringpost_sieve_actions_total{action=\"vacation\"} 2",
            "ringpost_sieve_actions_total{action=\"vacation_skipped\"} 1",
        ],
    );
    assert!(
        metrics.contains("ringpost_sieve_actions_total"),
        "{metrics}"
    );

    // Turned off: mail goes to INBOX as before.
    let (status, _) = admin_call(
        &server,
        "POST",
        "/api/v1/users/alice@ours.test/sieve/activate",
        r#"{"name": null}"#,
        true,
    );
    assert_eq!(status, 200);
    let reply = send(&server, "carol@ours.test", &[alice], "[list] after");
    assert!(reply.starts_with("250"), "{reply}");
    assert_eq!(count(&server, alice, "Lists/Dev"), 1);
    assert_eq!(inbox(&server, alice), 5);
    server.shutdown();
}

/// Run sieve-connect (a real ManageSieve client) against `server` as
/// alice, with `args`; its exit status and what it printed.
fn sieve_connect(server: &RunningServer, password: &str, args: &[&str]) -> (bool, String) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let addr = server.managesieve_addr().unwrap();
    let mut child = Command::new("sieve-connect")
        .args(["--server", &addr.ip().to_string()])
        .args(["--port", &addr.port().to_string()])
        .args(["--user", "alice@ours.test", "--passwordfd", "0"])
        // The test server's certificate is its own self-signed one.
        .arg("--notlsverify")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sieve-connect runs (scripts/setup.sh test installs it)");
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn a_managesieve_client_uploads_checks_activates_and_lists_scripts() {
    let (server, data) = start_server(|c| {
        c.smtp.local_domains = vec!["ours.test".into()];
    });
    // add_user's password is "secret".
    add_user(&server, "alice@ours.test");
    let dir = data.path();
    let script = dir.join("filters.sieve");
    std::fs::write(
        &script,
        "require [\"fileinto\", \"mailbox\"];\nif header :contains \"subject\" \"[list]\" {\n  fileinto :create \"Lists\";\n}\n",
    )
    .unwrap();
    let broken = dir.join("broken.sieve");
    std::fs::write(&broken, "require \"fileinto\";\nfileinto \"A\"\n").unwrap();
    let path = |p: &std::path::Path| p.display().to_string();

    let (ok, said) = sieve_connect(&server, "wrong", &["--list"]);
    assert!(!ok, "{said}");
    let (ok, said) = sieve_connect(
        &server,
        "secret",
        &["--checkscript", "--localsieve", &path(&broken)],
    );
    assert!(!ok && said.contains("line 2: "), "{said}");
    let (ok, said) = sieve_connect(
        &server,
        "secret",
        &[
            "--upload",
            "--localsieve",
            &path(&broken),
            "--remotesieve",
            "broken",
        ],
    );
    assert!(!ok, "a broken script is not stored: {said}");
    let (ok, said) = sieve_connect(
        &server,
        "secret",
        &[
            "--upload",
            "--localsieve",
            &path(&script),
            "--remotesieve",
            "filters",
        ],
    );
    assert!(ok, "{said}");
    let (ok, said) = sieve_connect(
        &server,
        "secret",
        &["--activate", "--remotesieve", "filters"],
    );
    assert!(ok, "{said}");
    let (ok, said) = sieve_connect(&server, "secret", &["--list"]);
    assert!(ok && said.contains("\"filters\" ACTIVE"), "{said}");
    let fetched = dir.join("fetched.sieve");
    let (ok, said) = sieve_connect(
        &server,
        "secret",
        &[
            "--download",
            "--remotesieve",
            "filters",
            "--localsieve",
            &path(&fetched),
        ],
    );
    assert!(ok, "{said}");
    assert_eq!(
        std::fs::read(&fetched).unwrap(),
        std::fs::read(&script).unwrap()
    );
    let (ok, said) = sieve_connect(&server, "secret", &["--delete", "--remotesieve", "filters"]);
    assert!(
        !ok && said.contains("ACTIVE"),
        "the active script stays: {said}"
    );

    // The script it stored is the one delivery runs.
    let reply = send(
        &server,
        "carol@ours.test",
        &["alice@ours.test"],
        "[list] news",
    );
    assert!(reply.starts_with("250"), "{reply}");
    assert_eq!(count(&server, "alice@ours.test", "Lists"), 1);

    let (ok, said) = sieve_connect(&server, "secret", &["--deactivate"]);
    assert!(ok, "{said}");
    let (ok, said) = sieve_connect(&server, "secret", &["--delete", "--remotesieve", "filters"]);
    assert!(ok, "{said}");
    let (ok, said) = sieve_connect(&server, "secret", &["--list"]);
    assert!(ok && !said.contains("filters"), "{said}");
    metrics_with(
        &server,
        &["ringpost_managesieve_commands_total{command=\"putscript\",result=\"ok\"} 1"],
    );
    server.shutdown();
}

/// Store `script` as `user`'s active one through the admin API.
fn activate(server: &RunningServer, user: &str, script: &str) {
    let body = serde_json::json!({ "text": script }).to_string();
    let path = format!("/api/v1/users/{user}/sieve/main");
    let (status, answer) = admin_call(server, "PUT", &path, &body, true);
    assert_eq!(status, 200, "{answer}");
}

/// Send a message with this Message-ID and To; the reply to its data.
fn send_as(server: &RunningServer, from: &str, rcpt: &str, to_header: &str, id: &str) -> String {
    let (mut c, _) = Client::connect(server.smtp_addr());
    assert!(c.cmd("EHLO client.test").starts_with("250"));
    assert!(c.cmd(&format!("MAIL FROM:<{from}>")).starts_with("250"));
    assert!(c.cmd(&format!("RCPT TO:<{rcpt}>")).starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    let reply = c.cmd(&format!(
        "From: <{from}>\r\nTo: <{to_header}>\r\nSubject: hi\r\nMessage-ID: <{id}>\r\n\r\nbody\r\n."
    ));
    c.cmd("QUIT");
    reply
}

#[test]
fn redirects_that_cannot_go_keep_the_mail_and_repeats_are_not_sent_again() {
    // No relay: a remote redirect cannot go, so the message is kept.
    let (server, _data) = start_server(|c| {
        c.smtp.local_domains = vec!["ours.test".into()];
        c.smtp.recipient_delimiter = "+".into();
    });
    for user in [
        "alice@ours.test",
        "bob@ours.test",
        "carol@ours.test",
        "dave@ours.test",
    ] {
        add_user(&server, user);
    }
    activate(&server, "alice@ours.test", "redirect \"friend@far.test\";");
    let reply = send_as(
        &server,
        "carol@ours.test",
        "alice@ours.test",
        "alice@ours.test",
        "m1@c",
    );
    assert!(reply.starts_with("250"), "{reply}");
    assert_eq!(
        count(&server, "alice@ours.test", "INBOX"),
        1,
        "kept, not lost"
    );

    // The same message redirected to the same address twice goes once.
    activate(&server, "alice@ours.test", "redirect \"bob@ours.test\";");
    for _ in 0..2 {
        let reply = send_as(
            &server,
            "carol@ours.test",
            "alice@ours.test",
            "alice@ours.test",
            "m2@c",
        );
        assert!(reply.starts_with("250"), "{reply}");
    }
    assert_eq!(count(&server, "bob@ours.test", "INBOX"), 1);
    let reply = send_as(
        &server,
        "carol@ours.test",
        "alice@ours.test",
        "alice@ours.test",
        "m3@c",
    );
    assert!(reply.starts_with("250"), "{reply}");
    assert_eq!(
        count(&server, "bob@ours.test", "INBOX"),
        2,
        "another message goes"
    );
    // What a filter sends to another account here meets that account's
    // own filter; two filters sending to each other deliver once each.
    activate(
        &server,
        "bob@ours.test",
        "require [\"fileinto\", \"mailbox\", \"copy\"];\n\
         redirect :copy \"alice@ours.test\";\nfileinto :create \"From alice\";",
    );
    let reply = send_as(
        &server,
        "carol@ours.test",
        "alice@ours.test",
        "alice@ours.test",
        "m5@c",
    );
    assert!(reply.starts_with("250"), "{reply}");
    assert_eq!(count(&server, "bob@ours.test", "From alice"), 1);
    assert_eq!(count(&server, "bob@ours.test", "INBOX"), 2);
    assert_eq!(
        count(&server, "alice@ours.test", "INBOX"),
        1,
        "no copy back"
    );

    // Vacation answers mail that came by an address with a detail, from
    // that address.
    activate(
        &server,
        "alice@ours.test",
        "require \"vacation\"; vacation :subject \"Away\" \"Back Monday.\";",
    );
    let carol = count(&server, "carol@ours.test", "INBOX");
    let reply = send_as(
        &server,
        "carol@ours.test",
        "alice+shop@ours.test",
        "alice+shop@ours.test",
        "m4@c",
    );
    assert!(reply.starts_with("250"), "{reply}");
    assert_eq!(count(&server, "carol@ours.test", "INBOX"), carol + 1);
    // A `:from` she may not send from is not used: the reply is signed as
    // her domain's mail, and must not speak for the boss.
    activate(
        &server,
        "alice@ours.test",
        "require \"vacation\"; vacation :from \"Boss <boss@ours.test>\" :subject \"Pay\" \"Wire it.\";",
    );
    let reply = send_as(
        &server,
        "dave@ours.test",
        "alice@ours.test",
        "alice@ours.test",
        "m6@c",
    );
    assert!(reply.starts_with("250"), "{reply}");
    let newest = newest_body(&server, "dave@ours.test");
    assert!(
        newest.contains("\r\nFrom: <alice@ours.test>\r\n"),
        "{newest}"
    );
    assert!(!newest.contains("boss@"), "{newest}");
    metrics_with(
        &server,
        &[
            "ringpost_sieve_actions_total{action=\"error\"} 1",
            "ringpost_sieve_actions_total{action=\"redirect_duplicate\"} 1",
        ],
    );
    server.shutdown();
}

#[test]
fn a_server_filter_rejects_discards_and_archives_before_users_filters() {
    let dir = tempfile::tempdir().unwrap();
    let filter = dir.path().join("filter.sieve");
    std::fs::write(
        &filter,
        "require [\"reject\", \"copy\"];\n\
         if header :contains \"subject\" \"viagra\" { reject \"Spam is not welcome here\"; stop; }\n\
         if address :domain :is \"from\" \"spammer.test\" { discard; stop; }\n\
         redirect :copy \"archive@ours.test\";\n",
    )
    .unwrap();
    // A broken one is refused with its line when the configuration is read.
    let broken = dir.path().join("broken.sieve");
    std::fs::write(&broken, "discard\n").unwrap();
    let toml = format!(
        "[smtp]\nsieve_filter = {:?}\n",
        broken.display().to_string()
    );
    let error = ringpost_engine::Config::parse(&toml)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("smtp.sieve_filter") && error.contains("line 1: "),
        "{error}"
    );

    let path = filter.clone();
    let (server, _data) = start_server(move |c| {
        c.smtp.local_domains = vec!["ours.test".into()];
        c.smtp.sieve_filter = Some(path);
    });
    for user in ["alice@ours.test", "archive@ours.test"] {
        add_user(&server, user);
    }
    let reply = send(
        &server,
        "bob@far.test",
        &["alice@ours.test"],
        "cheap viagra",
    );
    assert!(
        reply.starts_with("550 5.7.1 Spam is not welcome here"),
        "{reply}"
    );
    let reply = send(&server, "x@spammer.test", &["alice@ours.test"], "hello");
    assert!(reply.starts_with("250"), "{reply}");
    assert_eq!(count(&server, "alice@ours.test", "INBOX"), 0);
    assert_eq!(count(&server, "archive@ours.test", "INBOX"), 0);
    let reply = send(&server, "bob@far.test", &["alice@ours.test"], "lunch");
    assert!(reply.starts_with("250"), "{reply}");
    assert_eq!(count(&server, "alice@ours.test", "INBOX"), 1);
    assert_eq!(count(&server, "archive@ours.test", "INBOX"), 1);
    metrics_with(
        &server,
        &[
            "ringpost_sieve_actions_total{action=\"server_reject\"} 1",
            "ringpost_sieve_actions_total{action=\"server_discard\"} 1",
            "ringpost_sieve_actions_total{action=\"server_redirect\"} 1",
        ],
    );
    server.shutdown();
}
