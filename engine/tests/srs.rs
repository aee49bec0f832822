//! SRS end to end: mail an alias forwards to another domain leaves from
//! an SRS address of ours (the rest of the message's recipients as it
//! came), a bounce to that address goes on to the original sender, and a
//! forged one is refused.

mod common;
mod support;

use common::{add_user, connect_from, metrics_with, start_server, Client};
use std::time::{Duration, Instant};
use support::tls_mx::{Received, TlsMode, TlsMx};

fn wait_for(smarthost: &TlsMx, count: usize) -> Vec<Received> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let received = smarthost.received();
        if received.len() >= count {
            return received;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {count} arrived",
            received.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn send(c: &mut Client, from: &str, to: &[&str], subject: &str) -> String {
    let data = format!("Subject: {subject}\r\n\r\nhello\r\n");
    common::transaction(c, from, to, data.as_bytes())
}

#[test]
fn forwarded_mail_leaves_from_an_srs_address_and_its_bounce_goes_home() {
    let smarthost = TlsMx::start("sink.test", TlsMode::Working);
    let smarthost_addr = smarthost.addr().to_string();
    let (server, _data) = start_server(|c| {
        c.smtp.local_domains = vec!["ours.test".into()];
        // 127.0.0.1 is an application that may relay; 127.0.0.2 a stranger.
        c.smtp.relay_networks = vec!["127.0.0.1/32".parse().unwrap()];
        c.smtp.aliases = [
            (
                "info@ours.test".to_owned(),
                vec!["alice@ours.test".to_owned(), "alice@far.test".to_owned()],
            ),
            (
                "fwd@ours.test".to_owned(),
                vec!["carol@far.test".to_owned()],
            ),
        ]
        .into();
        c.relay.enabled = true;
        c.relay.smarthost = Some(smarthost_addr);
        c.relay.retry_initial_secs = 1;
    });
    add_user(&server, "alice@ours.test");
    let (mut c, _) = Client::connect(server.smtp_addr());
    assert!(c.cmd("EHLO client.test").starts_with("250"));

    // A stranger's mail to the alias: alice here gets it as it came, her
    // address elsewhere from our SRS address for the sender.
    let reply = send(
        &mut c,
        "dave@sender.test",
        &["info@ours.test"],
        "to the desk",
    );
    assert!(reply.starts_with("250"), "{reply}");
    let received = wait_for(&smarthost, 1);
    let forwarded = &received[0];
    assert_eq!(forwarded.rcpt_to, ["alice@far.test"]);
    let srs = forwarded.mail_from.clone();
    assert!(
        srs.starts_with("SRS0=") && srs.ends_with("=sender.test=dave@mx.test"),
        "{srs}"
    );
    assert!(!String::from_utf8_lossy(&forwarded.data).contains("Return-Path"));

    // The same message to the alias and to someone elsewhere by name: two
    // transactions, each from its own sender.
    let reply = send(
        &mut c,
        "dave@sender.test",
        &["info@ours.test", "bob@far.test"],
        "both",
    );
    assert!(reply.starts_with("250"), "{reply}");
    let received = wait_for(&smarthost, 3);
    let mut senders: Vec<(String, Vec<String>)> = received[1..]
        .iter()
        .map(|r| (r.mail_from.clone(), r.rcpt_to.clone()))
        .collect();
    senders.sort();
    assert_eq!(
        senders[1],
        (
            "dave@sender.test".to_owned(),
            vec!["bob@far.test".to_owned()]
        )
    );
    assert!(senders[0].0.starts_with("SRS0="), "{senders:?}");
    assert_eq!(senders[0].1, ["alice@far.test"]);

    // A bounce to the SRS address, from anyone, goes on to the original
    // sender; the sender of a bounce is null, and stays so.
    let mut c = Client::from_stream(connect_from("127.0.0.2", server.smtp_addr()));
    assert!(c.reply().starts_with("220"));
    assert!(c.cmd("EHLO stranger.test").starts_with("250"));
    let reply = send(&mut c, "", &[&srs], "bounce");
    assert!(reply.starts_with("250"), "{reply}");
    let received = wait_for(&smarthost, 4);
    assert_eq!(received[3].mail_from, "");
    assert_eq!(received[3].rcpt_to, ["dave@sender.test"]);

    // Only bounces: anyone else who saw the address cannot send through
    // us to the sender it stands for.
    let reply = send(&mut c, "spammer@bad.test", &[&srs], "spam");
    assert!(reply.starts_with("550 5.7.1"), "{reply}");
    // Forged or mangled: no such user.
    let forged = srs.replacen("=sender.test=", "=victim.test=", 1);
    let reply = send(&mut c, "", &[&forged], "forged");
    assert!(reply.starts_with("550 5.1.1"), "{reply}");
    // A sender at our own domain needs no rewriting.
    add_user(&server, "carol@ours.test");
    let (mut own, _) = Client::connect(server.smtp_addr());
    assert!(own.cmd("EHLO client.test").starts_with("250"));
    let reply = send(&mut own, "carol@ours.test", &["info@ours.test"], "from us");
    assert!(reply.starts_with("250"), "{reply}");
    let received = wait_for(&smarthost, 5);
    assert_eq!(received[4].mail_from, "carol@ours.test");

    // A stranger asking for success reports gets none for the forwarded
    // copy (an alias of one address passes the request on): it would go
    // to whoever the stranger named.
    let mut c = Client::from_stream(connect_from("127.0.0.2", server.smtp_addr()));
    assert!(c.reply().starts_with("220"));
    assert!(c.cmd("EHLO stranger.test").starts_with("250"));
    assert!(c
        .cmd("MAIL FROM:<victim@ext.test> RET=FULL")
        .starts_with("250"));
    assert!(c
        .cmd("RCPT TO:<fwd@ours.test> NOTIFY=SUCCESS,FAILURE")
        .starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    assert!(c
        .cmd("Subject: chosen by a stranger\r\n\r\nhi\r\n.")
        .starts_with("250"));
    let received = wait_for(&smarthost, 6);
    assert!(
        received[5].mail_from.starts_with("SRS0="),
        "{:?}",
        received[5].mail_from
    );
    std::thread::sleep(Duration::from_millis(1500));
    let reports: Vec<_> = smarthost
        .received()
        .into_iter()
        .filter(|r| r.rcpt_to.iter().any(|t| t == "victim@ext.test"))
        .collect();
    assert!(reports.is_empty(), "a report went to the named sender");
    drop(c);

    metrics_with(
        &server,
        &[
            "ringpost_srs_total{action=\"forwarded\"} 3",
            "ringpost_srs_total{action=\"returned\"} 1",
            "ringpost_srs_total{action=\"refused\"} 2",
        ],
    );
    server.shutdown();
}
