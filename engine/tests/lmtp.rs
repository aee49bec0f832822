//! LMTP (RFC 2033) end to end: swaks and Python's smtplib hand mail over
//! for local accounts, each recipient gets its own answer after the data,
//! users' filters run, and only the allowed networks get in.

mod common;

use common::{add_user, admin_call, connect_from, start_server, Client, LineClient};
use ringpost_engine::RunningServer;
use ringpost_storage::mailbox;
use std::process::Command;

fn count(server: &RunningServer, user: &str, name: &str) -> u32 {
    mailbox::meta(&*server.store(), user, name)
        .unwrap()
        .map_or(0, |m| m.messages)
}

/// The header of `user`'s newest INBOX message, read over IMAP.
fn newest_header(server: &RunningServer, user: &str) -> String {
    let (mut imap, _) = LineClient::connect(server.imap_addr().unwrap());
    let login = imap.tagged("a", &format!("LOGIN {user} secret"));
    assert!(login.last().unwrap().starts_with("a OK"), "{login:?}");
    imap.tagged("b", "SELECT INBOX");
    imap.tagged("c", "FETCH * BODY.PEEK[HEADER]").concat()
}

#[test]
fn lmtp_delivers_to_local_accounts_with_an_answer_per_recipient() {
    let (server, _data) = start_server(|c| {
        c.smtp.local_domains = vec!["ours.test".into()];
        c.smtp.aliases = [(
            "team@ours.test".to_owned(),
            vec!["alice@ours.test".to_owned(), "bob@ours.test".to_owned()],
        )]
        .into();
        c.lmtp.enabled = true;
    });
    for user in ["alice@ours.test", "bob@ours.test"] {
        add_user(&server, user);
    }
    // Bob's filter files list mail: LMTP delivery runs users' filters.
    let script = serde_json::json!({
        "text": "require [\"fileinto\", \"mailbox\"];\nif header :contains \"subject\" \"[list]\" { fileinto :create \"Lists\"; }"
    });
    let (status, answer) = admin_call(
        &server,
        "PUT",
        "/api/v1/users/bob@ours.test/sieve/main",
        &script.to_string(),
        true,
    );
    assert_eq!(status, 200, "{answer}");
    let lmtp = server.lmtp_addr().expect("LMTP listens");

    // swaks speaks LMTP: two recipients, two answers after the data.
    let out = Command::new("swaks")
        .args(["--protocol", "LMTP", "--server", "127.0.0.1", "--port"])
        .arg(lmtp.port().to_string())
        .args([
            "--from",
            "carol@far.test",
            "--to",
            "alice@ours.test,bob@ours.test",
            "--header",
            "Subject: [list] news",
            "--timeout",
            "20",
        ])
        .output()
        .expect("swaks runs (make test installs it)");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}");
    assert!(said.contains("220 mx.test LMTP"), "{said}");
    assert_eq!(said.matches("250 2.1.5 <").count(), 2, "{said}");
    assert!(said.contains("<alice@ours.test> delivered"), "{said}");
    assert!(said.contains("<bob@ours.test> delivered"), "{said}");
    assert_eq!(count(&server, "alice@ours.test", "INBOX"), 1);
    assert_eq!(count(&server, "bob@ours.test", "Lists"), 1);
    assert_eq!(count(&server, "bob@ours.test", "INBOX"), 0);
    let header = newest_header(&server, "alice@ours.test");
    assert!(header.contains("Return-Path: <carol@far.test>"), "{header}");
    assert!(header.contains("with LMTP"), "{header}");

    // Python's smtplib.LMTP, one recipient at a time (it reads one answer
    // after the data).
    let script = format!(
        "import smtplib\n\
         s = smtplib.LMTP('127.0.0.1', {port})\n\
         code, _ = s.ehlo('gateway.test')  # LMTP's ehlo says LHLO\n\
         assert code == 250, code\n\
         refused = s.sendmail('dave@far.test', ['alice@ours.test'], b'Subject: py\\r\\n\\r\\nhi\\r\\n')\n\
         assert not refused, refused\n\
         s.quit()\n",
        port = lmtp.port()
    );
    let out = Command::new("python3")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(count(&server, "alice@ours.test", "INBOX"), 2);

    // The session's rules: LHLO only, local recipients only, no AUTH.
    let (mut c, greeting) = Client::connect(lmtp);
    assert!(greeting.starts_with("220 mx.test LMTP"), "{greeting}");
    assert!(c.cmd("EHLO gateway.test").starts_with("500 5.5.1"));
    let offer = c.cmd("LHLO gateway.test");
    assert!(
        offer.contains("250-PIPELINING") && !offer.contains("AUTH"),
        "{offer}"
    );
    assert!(c.cmd("MAIL FROM:<erin@far.test>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<someone@far.test>").starts_with("550"));
    assert!(c.cmd("RCPT TO:<nobody@ours.test>").starts_with("550 5.1.1"));
    assert!(c.cmd("RCPT TO:<alice@ours.test>").starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    let reply = c.cmd("Subject: one\r\n\r\nhi\r\n.");
    assert!(
        reply.starts_with("250 2.1.5 <alice@ours.test> delivered"),
        "{reply}"
    );
    assert!(c.cmd("QUIT").starts_with("221"));
    assert_eq!(count(&server, "alice@ours.test", "INBOX"), 3);

    // A filter's refusal is that recipient's answer; the others get the
    // message (and the MTA in front reports the refusal).
    let script = serde_json::json!({
        "text": "require \"reject\";\nif header :contains \"subject\" \"rejectme\" { reject \"not from you\"; }"
    });
    let (status, answer) = admin_call(
        &server,
        "PUT",
        "/api/v1/users/alice@ours.test/sieve/main",
        &script.to_string(),
        true,
    );
    assert_eq!(status, 200, "{answer}");
    let (mut c, _) = Client::connect(lmtp);
    c.cmd("LHLO gateway.test");
    assert!(c.cmd("MAIL FROM:<erin@far.test>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<alice@ours.test>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<bob@ours.test>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<team@ours.test>").starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    let first = c.cmd("Subject: rejectme\r\n\r\nhi\r\n.");
    let (second, third) = (c.reply(), c.reply());
    assert!(first.starts_with("550 5.7.1 not from you"), "{first}");
    assert!(
        second.starts_with("250 2.1.5 <bob@ours.test> delivered"),
        "{second}"
    );
    // The alias reached bob too: delivered.
    assert!(
        third.starts_with("250 2.1.5 <team@ours.test> delivered"),
        "{third}"
    );
    assert_eq!(count(&server, "alice@ours.test", "INBOX"), 3);
    server.shutdown();
}

/// A mailbox that filled between RCPT and the end of the data is that
/// recipient's own `452`; the others get the message.
#[test]
fn a_mailbox_filled_since_rcpt_is_answered_apart() {
    let (server, _data) = start_server(|c| {
        c.smtp.local_domains = vec!["ours.test".into()];
        c.lmtp.enabled = true;
        c.quota.messages = 1;
    });
    for user in ["alice@ours.test", "bob@ours.test"] {
        add_user(&server, user);
    }
    let lmtp = server.lmtp_addr().unwrap();
    let (mut a, _) = Client::connect(lmtp);
    a.cmd("LHLO gateway.test");
    assert!(a.cmd("MAIL FROM:<erin@far.test>").starts_with("250"));
    assert!(a.cmd("RCPT TO:<alice@ours.test>").starts_with("250"));
    assert!(a.cmd("RCPT TO:<bob@ours.test>").starts_with("250"));
    assert!(a.cmd("DATA").starts_with("354"));
    // Meanwhile another session fills alice's mailbox.
    let (mut b, _) = Client::connect(lmtp);
    b.cmd("LHLO gateway.test");
    assert!(b.cmd("MAIL FROM:<erin@far.test>").starts_with("250"));
    assert!(b.cmd("RCPT TO:<alice@ours.test>").starts_with("250"));
    assert!(b.cmd("DATA").starts_with("354"));
    assert!(b.cmd("Subject: first\r\n\r\nhi\r\n.").starts_with("250"));
    let alice = a.cmd("Subject: second\r\n\r\nhi\r\n.");
    let bob = a.reply();
    assert!(alice.starts_with("452 4.2.2"), "{alice}");
    assert!(
        bob.starts_with("250 2.1.5 <bob@ours.test> delivered"),
        "{bob}"
    );
    assert_eq!(count(&server, "alice@ours.test", "INBOX"), 1);
    assert_eq!(count(&server, "bob@ours.test", "INBOX"), 1);
    drop((a, b));
    server.shutdown();
}

#[test]
fn lmtp_is_closed_to_addresses_outside_its_networks() {
    let (server, _data) = start_server(|c| {
        c.lmtp.enabled = true;
        c.lmtp.allowed_networks = vec!["127.0.0.1/32".parse().unwrap()];
    });
    let lmtp = server.lmtp_addr().unwrap();
    let mut c = Client::from_stream(connect_from("127.0.0.2", lmtp));
    let greeting = c.reply();
    assert!(greeting.starts_with("554 5.7.1"), "{greeting}");
    assert!(c.closed());
    // From an allowed address it is open.
    let (_c, greeting) = Client::connect(lmtp);
    assert!(greeting.starts_with("220"), "{greeting}");
    server.shutdown();
}
