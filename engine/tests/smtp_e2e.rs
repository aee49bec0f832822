//! End to end: independent clients (Python's smtplib, raw pipelined sockets,
//! BDAT) send mail to a real server on loopback with a real RocksDB store;
//! every message is then found in the store byte for byte, behind one
//! Received: header, and survives a restart.

mod common;

use common::{run_python_client, split_trace_header, start_server, Client};
use ringpost_storage::{mailbox, spool, RocksOptions, RocksStore};
use std::collections::BTreeMap;

#[test]
fn python_clients_messages_are_stored_byte_for_byte() {
    let (server, dir) = start_server(|_| {});
    let sent_dir = tempfile::tempdir().unwrap();
    run_python_client(
        "smtp_send.py",
        &[
            server.smtp_addr().port().to_string(),
            sent_dir.path().display().to_string(),
        ],
    );

    let mut sent = BTreeMap::new();
    for entry in std::fs::read_dir(sent_dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "eml") {
            let id = path.file_stem().unwrap().to_string_lossy().into_owned();
            let envelope = std::fs::read_to_string(path.with_extension("env")).unwrap();
            sent.insert(id, (std::fs::read(&path).unwrap(), envelope));
        }
    }
    assert_eq!(sent.len(), 13, "the script sends 13 messages");

    let check = |store: &dyn ringpost_storage::Store| {
        let envelopes = spool::list_envelopes(store).unwrap();
        assert_eq!(envelopes.len(), sent.len());
        let mut found = 0;
        for (id, envelope) in envelopes {
            let stored = spool::read_body(store, &id)
                .unwrap()
                .expect("body stored with envelope");
            let (trace, content) = split_trace_header(&stored);
            let trace = String::from_utf8_lossy(trace);
            assert!(
                trace.contains(&format!(
                    "by mx.test (ringpost) with ESMTP id {}",
                    id.to_hex()
                )),
                "{trace}"
            );
            let test_id = String::from_utf8_lossy(content)
                .lines()
                .find_map(|l| l.strip_prefix("X-Test-Id: ").map(str::to_owned))
                .expect("X-Test-Id header");
            let (expected, env) = &sent[&test_id];
            assert!(
                content == expected.as_slice(),
                "{test_id}: stored content differs from what was sent"
            );
            let mut env_lines = env.lines();
            assert_eq!(
                envelope.sender,
                env_lines.next().unwrap_or(""),
                "{test_id} sender"
            );
            assert_eq!(
                envelope.recipients,
                env_lines.map(str::to_owned).collect::<Vec<_>>(),
                "{test_id} rcpts"
            );
            assert_eq!(envelope.size, stored.len() as u64);
            found += 1;
        }
        assert_eq!(found, sent.len());
    };
    check(&*server.store());

    let metrics = common::http_get(server.metrics_addr().unwrap(), "/metrics");
    let accepted: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("ringpost_smtp_messages_accepted_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(accepted, 13, "{metrics}");
    assert!(
        metrics.contains("ringpost_store_commit_batch_requests_count"),
        "{metrics}"
    );
    // "plain-long" (180 KB) went to a segment file, written once.
    let gauge = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {metrics}"))
    };
    let live = gauge("ringpost_store_segment_live_bytes");
    assert!((180_000..400_000).contains(&live), "{live}");
    assert!(gauge("ringpost_store_segment_bytes") >= live);

    server.shutdown();
    // Everything is still there after a clean stop, read-only as the tools read it.
    let store = RocksStore::open(
        &dir.path().join("data"),
        RocksOptions {
            read_only: true,
            ..Default::default()
        },
    )
    .unwrap();
    check(&store);
}

#[test]
fn smuggled_end_of_data_is_not_obeyed() {
    let (server, _dir) = start_server(|_| {});
    let (mut c, greeting) = Client::connect(server.smtp_addr());
    assert!(greeting.starts_with("220 "), "{greeting}");
    assert!(c.cmd("EHLO smuggler.example").starts_with("250"));
    c.send(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n");
    for _ in 0..2 {
        assert!(c.reply().starts_with("250"));
    }
    assert!(c.reply().starts_with("354"));
    // "\n.\n" followed by a smuggled transaction, then the real end of data.
    c.send(b"Subject: x\r\n\r\nhello\n.\nMAIL FROM:<evil@example.org>\r\nRCPT TO:<victim@example.net>\r\nDATA\r\nsmuggled\r\n.\r\n");
    let reply = c.reply();
    assert!(reply.starts_with("550 5.6.0"), "bare LF refused: {reply}");
    // Nothing else was answered: the smuggled commands were message content.
    assert!(c.cmd("NOOP").starts_with("250"));
    assert_eq!(spool::stats(&*server.store()).unwrap().messages, 0);
    server.shutdown();
}

#[test]
fn commands_after_the_final_dot_wait_for_the_message_to_be_stored() {
    // RFC 2920: message content may open a group, so a client may send the
    // next transaction with the end of this one (ringpost-blast --chain).
    let (server, _dir) = start_server(|_| {});
    let (mut c, _) = Client::connect(server.smtp_addr());
    assert!(c.cmd("EHLO chained.example").starts_with("250"));
    c.send(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n");
    for code in ["250", "250", "354"] {
        assert!(c.reply().starts_with(code));
    }
    c.send(b"Subject: one\r\n\r\nfirst\r\n.\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n");
    let stored = c.reply();
    assert!(stored.starts_with("250 2.0.0 Ok: queued as "), "{stored}");
    // Its 250 came only once it was stored.
    assert_eq!(spool::stats(&*server.store()).unwrap().messages, 1);
    for code in ["250 2.1.0", "250 2.1.5", "354"] {
        let reply = c.reply();
        assert!(reply.starts_with(code), "{code}: {reply}");
    }
    c.send(b"Subject: two\r\n\r\nsecond\r\n.\r\n");
    assert!(c.reply().starts_with("250 2.0.0 Ok: queued as "));
    assert_eq!(spool::stats(&*server.store()).unwrap().messages, 2);
    server.shutdown();
}

#[test]
fn relay_is_refused_for_clients_outside_relay_networks() {
    let (server, _dir) = start_server(|c| {
        c.smtp.relay_networks = vec!["127.0.0.2/32".parse().unwrap()];
        c.smtp.local_domains = vec!["ours.test".into()];
    });
    common::add_user(&server, "someone@ours.test");
    let (mut c, _) = Client::connect(server.smtp_addr());
    assert!(c.cmd("EHLO outsider.example").starts_with("250"));
    assert!(c.cmd("MAIL FROM:<x@example.org>").starts_with("250"));
    let reply = c.cmd("RCPT TO:<someone@elsewhere.test>");
    assert!(reply.starts_with("550 5.7.1"), "{reply}");
    assert!(
        c.cmd("RCPT TO:<someone@Ours.Test>").starts_with("250"),
        "local domains accept anyone"
    );
    assert!(c.cmd("RCPT TO:<postmaster>").starts_with("250"));
    assert!(c.cmd("QUIT").starts_with("221"));
    server.shutdown();
}

#[test]
fn local_recipients_must_be_accounts() {
    // Loopback may relay, and still gets 550 for a local domain's unknown user.
    let (server, _dir) = start_server(|c| c.smtp.local_domains = vec!["ours.test".into()]);
    let (mut c, _) = Client::connect(server.smtp_addr());
    assert!(c.cmd("EHLO client.example").starts_with("250"));
    assert!(c.cmd("MAIL FROM:<x@example.org>").starts_with("250"));
    let reply = c.cmd("RCPT TO:<alice@ours.test>");
    assert!(
        reply.starts_with("550 5.1.1"),
        "unknown local user: {reply}"
    );

    // The check reads the store live: an account added now counts at once.
    common::add_user(&server, "Alice@Ours.Test");
    for rcpt in ["alice@ours.test", "ALICE@ours.TEST"] {
        let reply = c.cmd(&format!("RCPT TO:<{rcpt}>"));
        assert!(reply.starts_with("250"), "{rcpt}: {reply}");
    }
    let reply = c.cmd("RCPT TO:<bob@Ours.Test>");
    assert!(reply.starts_with("550 5.1.1"), "{reply}");
    for rcpt in ["postmaster@ours.test", "postmaster", "far@remote.test"] {
        let reply = c.cmd(&format!("RCPT TO:<{rcpt}>"));
        assert!(reply.starts_with("250"), "{rcpt}: {reply}");
    }
    assert!(c.cmd("DATA").starts_with("354"));
    let reply = c.cmd("Subject: hi\r\n\r\nhello\r\n.");
    assert!(reply.starts_with("250 2.0.0"), "{reply}");

    // Only the accepted recipients got it: the remote one through the
    // relay's envelope, the local ones in their INBOX, once each.
    let store = server.store();
    let envelopes = spool::list_envelopes(&*store).unwrap();
    assert_eq!(envelopes.len(), 1);
    assert_eq!(envelopes[0].1.recipients, ["far@remote.test"]);
    for user in [
        "alice@ours.test",
        "postmaster@ours.test",
        "postmaster@mx.test",
    ] {
        let inbox = mailbox::meta(&*store, user, mailbox::INBOX)
            .unwrap()
            .unwrap_or_else(|| panic!("{user} has an INBOX"));
        let rows = mailbox::all_rows(&*store, user, inbox.uidvalidity).unwrap();
        assert_eq!(rows.len(), 1, "{user}");
        assert_eq!(rows[0].1.message, envelopes[0].0);
    }

    // A deleted account is refused again.
    common::delete_user(&server, "alice@ours.test");
    assert!(c.cmd("MAIL FROM:<x@example.org>").starts_with("250"));
    let reply = c.cmd("RCPT TO:<alice@ours.test>");
    assert!(reply.starts_with("550 5.1.1"), "{reply}");
    assert!(c.cmd("QUIT").starts_with("221"));
    server.shutdown();
}

/// Mail to the literal of the address a client reached us at is ours
/// (RFC 1123 §5.2.17), even from a client that may not relay: it goes to
/// the account at our hostname. Other literals stay someone else's.
#[test]
fn mail_to_our_own_address_literal_is_ours() {
    let (server, _dir) = start_server(|c| c.smtp.relay_networks = vec![]);
    common::add_user(&server, "carol@mx.test");
    let (mut c, _) = Client::connect(server.smtp_addr());
    assert!(c.cmd("EHLO client.example").starts_with("250"));
    assert!(c.cmd("MAIL FROM:<x@example.org>").starts_with("250"));
    for (rcpt, code) in [
        ("postmaster@[127.0.0.1]", "250 2.1.5"),
        ("Carol@[127.0.0.1]", "250 2.1.5"),
        ("carol@[127.000.000.001]", "250 2.1.5"),
        ("dave@[127.0.0.1]", "550 5.1.1"),
        ("carol@[127.0.0.2]", "550 5.7.1"),
        ("carol@[IPv6:::1]", "550 5.7.1"),
    ] {
        let reply = c.cmd(&format!("RCPT TO:<{rcpt}>"));
        assert!(reply.starts_with(code), "{rcpt}: {reply}");
    }
    assert!(c.cmd("DATA").starts_with("354"));
    assert!(c
        .cmd("Subject: hi\r\n\r\nhello\r\n.")
        .starts_with("250 2.0.0"));
    let store = server.store();
    assert!(
        spool::list_envelopes(&*store).unwrap().is_empty(),
        "nothing relayed"
    );
    for user in ["carol@mx.test", "postmaster@mx.test"] {
        let inbox = mailbox::meta(&*store, user, mailbox::INBOX).unwrap();
        assert_eq!(inbox.map(|m| m.messages), Some(1), "{user}");
    }
    server.shutdown();
}

#[test]
fn idle_client_gets_421_timeout() {
    let (server, _dir) = start_server(|c| c.smtp.command_timeout_secs = 1);
    let (mut c, _) = Client::connect(server.smtp_addr());
    let reply = c.reply(); // say nothing; the server gives up
    assert!(reply.starts_with("421 4.4.2"), "{reply}");
    assert!(c.closed());
    server.shutdown();
}

#[test]
fn connections_over_the_shard_limit_are_refused_with_421() {
    let (server, _dir) = start_server(|c| {
        c.shards = 1;
        c.smtp.max_connections_per_shard = 1;
    });
    let (mut first, greeting) = Client::connect(server.smtp_addr());
    assert!(greeting.starts_with("220 "));
    let (mut second, refused) = Client::connect(server.smtp_addr());
    assert!(refused.starts_with("421 4.7.0"), "{refused}");
    assert!(second.closed());
    assert!(first.cmd("QUIT").starts_with("221"));
    server.shutdown();
}

#[test]
fn shutdown_finishes_the_transaction_in_flight_then_says_421() {
    let (server, dir) = start_server(|c| c.shards = 1);
    let (mut idle, _) = Client::connect(server.smtp_addr());
    let (mut busy, _) = Client::connect(server.smtp_addr());
    assert!(busy.cmd("EHLO busy.example").starts_with("250"));
    busy.send(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n");
    for expected in ["250", "250", "354"] {
        assert!(busy.reply().starts_with(expected));
    }
    busy.send(b"Subject: in flight\r\n\r\nfirst half\r\n");

    let stopper = std::thread::spawn(move || server.shutdown());
    // The idle session is told at once.
    let reply = idle.reply();
    assert!(reply.starts_with("421 4.3.2"), "{reply}");
    // The busy one may finish its message, which is stored, then is told.
    busy.send(b"second half\r\n.\r\n");
    let stored = busy.reply();
    assert!(stored.starts_with("250 2.0.0"), "{stored}");
    let bye = busy.reply();
    assert!(bye.starts_with("421 4.3.2"), "{bye}");
    stopper.join().unwrap();

    let store = RocksStore::open(&dir.path().join("data"), RocksOptions::default()).unwrap();
    assert_eq!(spool::stats(&store).unwrap().messages, 1);
}

/// SIGHUP's and the API's reload: local domains, relay networks and
/// limits change for what comes next; a session open across it keeps
/// going; a bad configuration changes nothing; what needs a restart is
/// named and kept.
#[test]
fn a_reload_changes_domains_networks_and_limits_without_dropping_sessions() {
    let (server, _dir) = start_server(|c| {
        c.smtp.relay_networks = vec!["127.0.0.2/32".parse().unwrap()];
        c.smtp.local_domains = vec!["ours.test".into()];
        c.metrics.listen = Some("127.0.0.1:0".parse().unwrap());
    });
    common::add_user(&server, "ann@new.test");
    let smtp = server.smtp_addr();
    let rcpt = |to: &str| {
        let (mut c, _) = Client::connect(smtp);
        assert!(c.cmd("EHLO client.test").starts_with("250"));
        assert!(c.cmd("MAIL FROM:<x@example.org>").starts_with("250"));
        c.cmd(&format!("RCPT TO:<{to}>"))
    };
    assert!(rcpt("ann@new.test").starts_with("550 5.7.1"));
    assert!(rcpt("bob@far.test").starts_with("550 5.7.1"));
    // A session that stays open across the reload.
    let (mut open, _) = Client::connect(smtp);
    assert!(open.cmd("EHLO client.test").starts_with("250"));
    assert!(open.cmd("MAIL FROM:<x@example.org>").starts_with("250"));

    let mut next = server.config().clone();
    next.smtp.local_domains.push("new.test".into());
    next.smtp.relay_networks = vec!["127.0.0.0/8".parse().unwrap()];
    next.smtp.max_recipients = 1;
    next.hostname = "renamed.test".into();
    let source = next.clone();
    server.set_config_source(std::sync::Arc::new(move || Ok(source.clone())));
    let reloaded = server.reload().unwrap();
    assert_eq!(reloaded.needs_restart, ["hostname"]);
    assert_eq!(reloaded.generation, 1);

    assert!(
        rcpt("ann@new.test").starts_with("250"),
        "new.test is local now"
    );
    assert!(rcpt("nobody@new.test").starts_with("550 5.1.1"));
    assert!(
        rcpt("bob@far.test").starts_with("250"),
        "loopback may relay now"
    );
    let (mut c, greeting) = Client::connect(smtp);
    assert!(
        greeting.contains("mx.test"),
        "the hostname needs a restart: {greeting}"
    );
    assert!(c.cmd("EHLO client.test").starts_with("250"));
    assert!(c.cmd("MAIL FROM:<x@example.org>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<ann@new.test>").starts_with("250"));
    let second = c.cmd("RCPT TO:<bob@far.test>");
    assert!(
        second.starts_with("452"),
        "max_recipients = 1 now: {second}"
    );
    assert!(c.cmd("QUIT").starts_with("221"));
    // The session opened before goes on, under the new domains.
    assert!(open.cmd("RCPT TO:<ann@new.test>").starts_with("250"));
    assert!(open.cmd("DATA").starts_with("354"));
    assert!(open
        .cmd("Subject: across a reload\r\n\r\nhi\r\n.")
        .starts_with("250"));
    assert!(open.cmd("QUIT").starts_with("221"));

    // A configuration that does not validate changes nothing, over the API too.
    let mut broken = next.clone();
    broken.smtp.max_line_length = 10;
    server.set_config_source(std::sync::Arc::new(move || Ok(broken.clone())));
    let (status, answer) = common::admin_call(&server, "POST", "/api/v1/config/reload", "", true);
    assert_eq!(status, 422, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("smtp.max_line_length"),
        "{answer}"
    );
    assert!(rcpt("ann@new.test").starts_with("250"));
    server.set_config_source(std::sync::Arc::new(move || Ok(next.clone())));
    let (status, answer) = common::admin_call(&server, "POST", "/api/v1/config/reload", "", true);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["generation"], 2, "{answer}");
    let (_, shown) = common::admin_call(&server, "GET", "/api/v1/config", "", true);
    assert_eq!(shown["smtp"]["max_recipients"], 1, "{shown}");
    server.shutdown();
}

/// RFC 3461: a local recipient given NOTIFY=SUCCESS earns the sender a
/// "delivered" DSN, stored with the message itself; NOTIFY=NEVER and no
/// NOTIFY earn nothing.
#[test]
fn notify_success_on_local_delivery_reports_it_to_the_sender() {
    let (server, _dir) = start_server(|c| c.smtp.local_domains = vec!["ours.test".into()]);
    for user in ["alice@ours.test", "carol@ours.test", "bob@ours.test"] {
        common::add_user(&server, user);
    }
    let (mut c, _) = Client::connect(server.smtp_addr());
    assert!(c.cmd("EHLO client.example").contains("DSN"));
    for (command, want) in [
        ("MAIL FROM:<bob@ours.test> ENVID=bob-1", "250"),
        (
            "RCPT TO:<alice@ours.test> NOTIFY=SUCCESS ORCPT=rfc822;Alice@ours.test",
            "250",
        ),
        ("RCPT TO:<carol@ours.test> NOTIFY=NEVER", "250"),
        ("DATA", "354"),
        ("Subject: tell me\r\n\r\nhello\r\n.", "250 2.0.0"),
    ] {
        let reply = c.cmd(command);
        assert!(reply.starts_with(want), "{command}: {reply}");
    }
    assert!(c.cmd("QUIT").starts_with("221"));

    let store = server.store();
    let inbox_of = |user: &str| {
        let inbox = mailbox::meta(&*store, user, mailbox::INBOX)
            .unwrap()
            .unwrap();
        mailbox::all_rows(&*store, user, inbox.uidvalidity).unwrap()
    };
    assert_eq!(inbox_of("alice@ours.test").len(), 1);
    assert_eq!(inbox_of("carol@ours.test").len(), 1);
    let rows = inbox_of("bob@ours.test");
    assert_eq!(rows.len(), 1, "one DSN, for alice only");
    let dsn = spool::read_body(&*store, &rows[0].1.message)
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&dsn);
    assert!(
        text.contains("Subject: Successful Mail Delivery Report"),
        "{text}"
    );
    assert!(text.contains("Original-Envelope-Id: bob-1\r\n"), "{text}");
    assert!(
        text.contains("Original-Recipient: rfc822;Alice@ours.test\r\nFinal-Recipient: rfc822;alice@ours.test\r\nAction: delivered\r\nStatus: 2.0.0\r\n"),
        "{text}"
    );
    assert!(!text.contains("carol@ours.test"), "{text}");
    assert!(
        text.contains("Subject: tell me"),
        "the original's headers: {text}"
    );
    let metrics = common::http_get(server.metrics_addr().unwrap(), "/metrics");
    assert!(
        metrics.contains("ringpost_local_delivery_dsns_total{shard="),
        "{metrics}"
    );
    server.shutdown();
}

/// An account has one spelling for mail: a recipient written with other
/// case (KELVIN SIGN for K, Ä for ä) reaches the account's own INBOX,
/// not a second set of mailboxes under that spelling.
#[test]
fn every_spelling_of_an_account_reaches_its_one_inbox() {
    let (server, _dir) = start_server(|c| c.smtp.local_domains = vec!["ours.test".into()]);
    common::add_user(&server, "kate@ours.test");
    common::add_user(&server, "änn@ours.test");
    let (mut c, _) = Client::connect(server.smtp_addr());
    assert!(c.cmd("EHLO client.example").starts_with("250"));
    for (command, want) in [
        ("MAIL FROM:<x@example.org> SMTPUTF8", "250"),
        ("RCPT TO:<\u{212A}ATE@ours.test>", "250"),
        ("RCPT TO:<ÄNN@Ours.Test>", "250"),
        ("DATA", "354"),
        ("Subject: hi\r\n\r\nhello\r\n.", "250 2.0.0"),
    ] {
        let reply = c.cmd(command);
        assert!(reply.starts_with(want), "{command}: {reply}");
    }
    let store = server.store();
    for user in ["kate@ours.test", "änn@ours.test"] {
        let inbox = mailbox::meta(&*store, user, mailbox::INBOX)
            .unwrap()
            .unwrap();
        let rows = mailbox::all_rows(&*store, user, inbox.uidvalidity).unwrap();
        assert_eq!(rows.len(), 1, "{user}");
    }
    server.shutdown();
}

/// A stranger's NOTIFY=SUCCESS earns no DSN unless its sender is vouched
/// for (SPF, a login, a relay network): to a forged sender the report
/// would be backscatter carrying the stranger's headers.
#[test]
fn a_strangers_notify_success_sends_no_report_to_an_unvouched_sender() {
    let (server, _dir) = start_server(|c| {
        c.smtp.local_domains = vec!["ours.test".into()];
        // 127.0.0.1 is a stranger here (and no SPF is checked).
        c.smtp.relay_networks = vec!["127.0.0.2/32".parse().unwrap()];
    });
    common::add_user(&server, "alice@ours.test");
    common::add_user(&server, "bob@ours.test");
    let (mut c, _) = Client::connect(server.smtp_addr());
    assert!(c.cmd("EHLO client.example").starts_with("250"));
    for (command, want) in [
        ("MAIL FROM:<bob@ours.test>", "250"),
        ("RCPT TO:<alice@ours.test> NOTIFY=SUCCESS", "250"),
        ("DATA", "354"),
        ("Subject: cheap pills\r\n\r\nhello\r\n.", "250 2.0.0"),
    ] {
        let reply = c.cmd(command);
        assert!(reply.starts_with(want), "{command}: {reply}");
    }
    let store = server.store();
    let count = |user: &str| {
        mailbox::meta(&*store, user, mailbox::INBOX)
            .unwrap()
            .map_or(0, |m| m.messages)
    };
    assert_eq!(count("alice@ours.test"), 1);
    assert_eq!(
        count("bob@ours.test"),
        0,
        "no report to the unvouched sender"
    );
    server.shutdown();
}
