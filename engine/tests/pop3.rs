//! Local delivery and POP3 end to end: mail for local accounts goes into
//! their INBOX in the commit that acknowledges it, stored once however many
//! accounts get it, and Python's poplib reads it back; the store then holds
//! exactly what was not deleted.

mod common;

use common::{
    add_user, http_get, run_python_client, split_trace_header, start_server, Client, LineClient,
};
use ringpost_storage::mailbox::{self, INBOX};
use ringpost_storage::{spool, Family, Store};

fn local_config(config: &mut ringpost_engine::Config) {
    config.smtp.local_domains = vec!["ours.test".into()];
    config.pop3.auth_failure_delay_secs = 0;
}

fn count(store: &dyn Store, family: Family) -> usize {
    let mut n = 0;
    store
        .scan(family, &[], None, &mut |_, _| {
            n += 1;
            true
        })
        .unwrap();
    n
}

/// Send one message over SMTP; return the 250 reply.
fn send(addr: std::net::SocketAddr, rcpts: &[&str], data: &str) -> String {
    let (mut c, _) = Client::connect(addr);
    c.cmd("EHLO client.test");
    assert!(c.cmd("MAIL FROM:<s@example.org>").starts_with("250"));
    for rcpt in rcpts {
        let reply = c.cmd(&format!("RCPT TO:<{rcpt}>"));
        assert!(reply.starts_with("250"), "{rcpt}: {reply}");
    }
    assert!(c.cmd("DATA").starts_with("354"));
    c.send(data.as_bytes());
    let reply = c.cmd(".");
    c.cmd("QUIT");
    reply
}

/// `alice+news@` is alice's; an alias sends to its accounts and remote
/// addresses; a catch-all takes what no account does; an unknown address
/// without one is still refused.
#[test]
fn subaddresses_aliases_and_catch_alls_reach_their_accounts() {
    let (server, _dir) = start_server(|c| {
        local_config(c);
        c.smtp.aliases = std::collections::BTreeMap::from([
            (
                "team@ours.test".to_owned(),
                vec![
                    "ann@ours.test".to_owned(),
                    "bo@ours.test".to_owned(),
                    "far@remote.test".to_owned(),
                ],
            ),
            ("@ours.test".to_owned(), vec!["bo@ours.test".to_owned()]),
        ]);
    });
    add_user(&server, "ann@ours.test");
    add_user(&server, "bo@ours.test");
    for rcpt in ["ann+news@ours.test", "team@ours.test", "nobody@ours.test"] {
        let reply = send(
            server.smtp_addr(),
            &[rcpt],
            &format!("Subject: to {rcpt}\r\n\r\nhi\r\n"),
        );
        assert!(reply.starts_with("250"), "{rcpt}: {reply}");
    }
    let store = server.store();
    let rows = |user: &str| {
        let meta = mailbox::meta(&*store, user, INBOX).unwrap().expect("INBOX");
        mailbox::all_rows(&*store, user, meta.uidvalidity)
            .unwrap()
            .len()
    };
    assert_eq!(rows("ann@ours.test"), 2, "ann+news and team");
    assert_eq!(rows("bo@ours.test"), 2, "team and the catch-all");
    assert!(mailbox::meta(&*store, "ann+news@ours.test", INBOX)
        .unwrap()
        .is_none());
    // The alias's remote target went to the relay.
    let queued = spool::list_envelopes(&*store).unwrap();
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].1.recipients, vec!["far@remote.test"]);
    server.shutdown();

    // Without the catch-all an unknown address is refused at RCPT.
    let (server, _dir) = start_server(local_config);
    let (mut c, _) = Client::connect(server.smtp_addr());
    c.cmd("EHLO client.test");
    assert!(c.cmd("MAIL FROM:<s@example.org>").starts_with("250"));
    assert!(c
        .cmd("RCPT TO:<nobody+x@ours.test>")
        .starts_with("550 5.1.1"));
    c.cmd("QUIT");
    server.shutdown();
}

#[test]
fn local_recipients_share_one_stored_body() {
    let (server, _dir) = start_server(local_config);
    add_user(&server, "ann@ours.test");
    add_user(&server, "bo@ours.test");
    let data = "Subject: shared\r\n\r\nfor two locals and a remote\r\n";
    let reply = send(
        server.smtp_addr(),
        &[
            "Ann@Ours.test",
            "bo@ours.test",
            "far@remote.test",
            "ann@ours.test",
        ],
        data,
    );
    assert!(reply.starts_with("250"), "{reply}");

    let store = server.store();
    let mut ids = Vec::new();
    for user in ["ann@ours.test", "bo@ours.test"] {
        let meta = mailbox::meta(&*store, user, INBOX).unwrap().expect("INBOX");
        let rows = mailbox::all_rows(&*store, user, meta.uidvalidity).unwrap();
        assert_eq!(rows.len(), 1, "{user}: one row, however often named");
        assert_eq!(rows[0].0, 1);
        ids.push(rows[0].1.message);
    }
    assert_eq!(ids[0], ids[1], "one body for both");
    assert_eq!(count(&*store, Family::Blobs), 1);
    let body = spool::read_body(&*store, &ids[0]).unwrap().unwrap();
    assert_eq!(split_trace_header(&body).1, data.as_bytes());
    // The relay keeps only the remote recipient.
    let envelope = spool::read_envelope(&*store, &ids[0]).unwrap().unwrap();
    assert_eq!(envelope.recipients, vec!["far@remote.test"]);
    assert_eq!(mailbox::refs(&*store, &ids[0]).unwrap(), 2);

    let metrics = http_get(server.metrics_addr().unwrap(), "/metrics");
    let delivered: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("ringpost_local_deliveries_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(delivered, 2, "{metrics}");
    server.shutdown();
}

#[test]
fn postmaster_mail_waits_in_its_mailbox() {
    let (server, _dir) = start_server(local_config);
    let reply = send(
        server.smtp_addr(),
        &["postmaster"],
        "Subject: pm\r\n\r\nhi\r\n",
    );
    assert!(reply.starts_with("250"), "{reply}");
    let reply = send(
        server.smtp_addr(),
        &["PostMaster@ours.test"],
        "Subject: pm\r\n\r\nhi\r\n",
    );
    assert!(reply.starts_with("250"), "{reply}");
    let store = server.store();
    for user in ["postmaster@mx.test", "postmaster@ours.test"] {
        assert!(
            mailbox::meta(&*store, user, INBOX).unwrap().is_some(),
            "{user}"
        );
    }
    assert_eq!(count(&*store, Family::Queue), 0, "nothing for the relay");
    server.shutdown();
}

#[test]
fn poplib_reads_what_smtplib_sent() {
    let (server, _dir) = start_server(local_config);
    add_user(&server, "alice@ours.test");
    add_user(&server, "bob@ours.test");
    run_python_client(
        "pop3_read.py",
        &[
            server.smtp_addr().port().to_string(),
            server.pop3_addr().unwrap().port().to_string(),
        ],
    );
    // Deleted over POP3: messages 1 and 2, whose bodies nobody else held.
    let store = server.store();
    let alice = mailbox::meta(&*store, "alice@ours.test", INBOX)
        .unwrap()
        .unwrap();
    let uids: Vec<u32> = mailbox::all_rows(&*store, "alice@ours.test", alice.uidvalidity)
        .unwrap()
        .into_iter()
        .map(|(uid, _)| uid)
        .collect();
    assert_eq!(uids, vec![3, 4]);
    assert_eq!(count(&*store, Family::Blobs), 2, "deleted bodies are gone");

    let metrics = http_get(server.metrics_addr().unwrap(), "/metrics");
    for needle in [
        "ringpost_pop3_logins_total{shard=",
        "ringpost_pop3_messages_deleted_total{",
        "ringpost_pop3_messages_retrieved_total{",
    ] {
        assert!(metrics.contains(needle), "{needle} missing:\n{metrics}");
    }
    server.shutdown();
}

#[test]
fn pop3_limits_and_unknown_accounts() {
    let (server, _dir) = start_server(|c| {
        local_config(c);
        c.pop3.max_connections_per_shard = 1;
        c.shards = 1;
    });
    add_user(&server, "alice@ours.test");
    let addr = server.pop3_addr().unwrap();
    let (mut first, greeting) = LineClient::connect(addr);
    assert!(greeting.starts_with("+OK"), "{greeting}");
    // The shard is full: a second connection is turned away.
    let (_, refused) = LineClient::connect(addr);
    assert_eq!(
        refused,
        "-ERR [SYS/TEMP] too many connections, try again later\r\n"
    );
    // Unknown account and bad password look the same.
    assert!(first.cmd("USER nobody@ours.test").starts_with("+OK"));
    assert_eq!(
        first.cmd("PASS secret"),
        "-ERR [AUTH] invalid credentials\r\n"
    );
    assert!(first.cmd("USER alice@ours.test").starts_with("+OK"));
    assert_eq!(
        first.cmd("PASS nope"),
        "-ERR [AUTH] invalid credentials\r\n"
    );
    // An account that never got mail has an empty maildrop.
    assert!(first.cmd("USER Alice@Ours.Test").starts_with("+OK"));
    assert_eq!(
        first.cmd("PASS secret"),
        "+OK maildrop has 0 messages (0 octets)\r\n"
    );
    assert_eq!(first.cmd("STAT"), "+OK 0 0\r\n");
    assert!(first.cmd("RETR 1").starts_with("-ERR"));
    // An oversized command line is refused without closing the session.
    assert!(first.cmd(&"X".repeat(400)).starts_with("-ERR"));
    assert!(first.cmd("QUIT").starts_with("+OK"));
    server.shutdown();
}

/// A message APPENDed over IMAP with bare LFs (as scripts and migration
/// tools write them) is stored with CRLF: POP3's LIST and RETR sizes are
/// what it sends, and IMAP's RFC822.SIZE is the same number.
#[test]
fn appended_bare_lf_mail_has_one_size_in_imap_and_pop3() {
    let (server, _dir) = start_server(local_config);
    add_user(&server, "alice@ours.test");
    let (mut imap, _) = LineClient::connect(server.imap_addr().unwrap());
    assert!(imap.tagged("l", "LOGIN alice@ours.test secret")[0].starts_with("l OK"));
    let message = "Subject: hi\nX: y\r\r\n\nbody";
    let reply = imap.tagged(
        "a",
        &format!("APPEND INBOX {{{}+}}\r\n{message}", message.len()),
    );
    assert!(reply.last().unwrap().starts_with("a OK"), "{reply:?}");
    let sent = "Subject: hi\r\nX: y\r\n\r\nbody\r\n";
    assert!(imap
        .tagged("s", "SELECT INBOX")
        .last()
        .unwrap()
        .starts_with("s OK"));
    let size = imap.tagged("f", "FETCH 1 (RFC822.SIZE)");
    assert_eq!(
        size[0],
        format!("* 1 FETCH (RFC822.SIZE {})\r\n", sent.len())
    );
    drop(imap);

    let (mut pop, _) = LineClient::connect(server.pop3_addr().unwrap());
    assert!(pop.cmd("USER alice@ours.test").starts_with("+OK"));
    assert!(pop.cmd("PASS secret").starts_with("+OK"));
    assert_eq!(pop.cmd("LIST 1"), format!("+OK 1 {}\r\n", sent.len()));
    assert_eq!(pop.cmd("RETR 1"), format!("+OK {} octets\r\n", sent.len()));
    let mut got = String::new();
    loop {
        let line = pop.line();
        if line == ".\r\n" {
            break;
        }
        got.push_str(&line);
    }
    assert_eq!(got, sent);
    assert!(pop.cmd("QUIT").starts_with("+OK"));
    server.shutdown();
}
