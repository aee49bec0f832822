//! Reports about relayed mail, end to end: a late bounce and a feedback
//! loop complaint sent to a feedback domain are read, suppress the
//! address for that sending domain, reach the webhook as events, and are
//! delivered to no mailbox; the relay then refuses mail to those
//! addresses.

mod common;

use common::{add_user, connect_from, metrics_with, start_server, Client};
use ringpost_loadtest::event_sink::EventSink;
use ringpost_protocols::smtp::dsn::{self, Action, Diagnostic};
use ringpost_storage::{mailbox, suppression};
use std::time::Duration;

const ORIGINAL: &[u8] = b"From: news@fb.test\r\nTo: gone@far.test\r\n\
    Message-ID: <m1@fb.test>\r\nSubject: Offers\r\n\r\nBuy.\r\n";

fn late_bounce() -> Vec<u8> {
    let status =
        |recipient: &str, action, status: &str, diagnostic: Option<&str>| dsn::RecipientStatus {
            recipient: recipient.into(),
            action,
            status: status.into(),
            remote_mta: Some("mx.far.test".into()),
            diagnostic: diagnostic.map(|d| Diagnostic::Smtp(d.into())),
            meaning: None,
            original_recipient: None,
        };
    let recipients = [
        status(
            "gone@far.test",
            Action::Failed,
            "5.1.1",
            Some("550 5.1.1 no such user"),
        ),
        status("slow@far.test", Action::Delayed, "4.4.1", None),
    ];
    dsn::compose(&dsn::Report {
        reporting_mta: "mx.far.test",
        to: "bounces@fb.test",
        date: "Tue, 3 Mar 2026 10:00:00 +0000",
        arrival_date: "Tue, 3 Mar 2026 09:00:00 +0000",
        message_id: "d1@mx.far.test",
        queue_id: "Q1",
        envelope_id: None,
        recipients: &recipients,
        original: ORIGINAL,
    })
}

const COMPLAINT: &str = "From: fbl@isp.test\r\nTo: fbl@fb.test\r\nSubject: report\r\n\
    MIME-Version: 1.0\r\n\
    Content-Type: multipart/report; report-type=feedback-report; boundary=\"F\"\r\n\r\n\
    --F\r\nContent-Type: text/plain\r\n\r\nAn abuse report.\r\n\
    --F\r\nContent-Type: message/feedback-report\r\n\r\n\
    Feedback-Type: abuse\r\nUser-Agent: ISP-FBL/1\r\nVersion: 1\r\n\
    Original-Rcpt-To: <reader@isp.test>\r\n\r\n\
    --F\r\nContent-Type: message/rfc822\r\n\r\n\
    From: news@fb.test\r\nTo: reader@isp.test\r\nMessage-ID: <m2@fb.test>\r\n\r\nBuy.\r\n\
    --F--\r\n";

fn send(c: &mut Client, from: &str, to: &[&str], data: &[u8]) -> String {
    common::transaction(c, from, to, data)
}

#[test]
fn late_bounces_and_complaints_suppress_and_are_reported() {
    let hook = EventSink::start("127.0.0.1:0".parse().unwrap(), 0).unwrap();
    let hook_addr = hook.addr();
    let (server, _data) = start_server(move |c| {
        c.smtp.local_domains = vec!["ours.test".into()];
        c.smtp.relay_networks = vec!["127.0.0.1/32".parse().unwrap()];
        c.feedback.domains = vec!["fb.test".into()];
        c.feedback.suppress_bounces = true;
        c.feedback.suppress_complaints = true;
        // A report suppresses for the domain it came to, whatever the
        // suppression list's scope.
        c.suppression.scope = ringpost_engine::config::SuppressionScope::Global;
        c.webhook.url = Some(format!("http://{hook_addr}/events"));
        c.webhook.retry_max_secs = 1;
    });
    add_user(&server, "alice@ours.test");
    // Reports come from anyone: a stranger's connection.
    let mut c = Client::from_stream(connect_from("127.0.0.2", server.smtp_addr()));
    assert!(c.reply().starts_with("220"));
    assert!(c.cmd("EHLO mx.far.test").starts_with("250"));
    let reply = send(&mut c, "", &["bounces+42@fb.test"], &late_bounce());
    assert!(reply.starts_with("250"), "{reply}");
    let reply = send(
        &mut c,
        "fbl@isp.test",
        &["fbl@fb.test", "alice@ours.test"],
        COMPLAINT.as_bytes(),
    );
    assert!(reply.starts_with("250"), "{reply}");
    let reply = send(
        &mut c,
        "x@else.test",
        &["anything@fb.test"],
        b"Subject: hi\r\n\r\nno report\r\n",
    );
    assert!(reply.starts_with("250"), "{reply}");

    // Suppressed for the sending domain that got the reports; the delayed
    // recipient is not.
    let store = server.store();
    let now = ringpost_engine::intake::unix_micros();
    let gone = suppression::find(&*store, "fb.test", "gone@far.test", now).unwrap();
    assert_eq!(gone.map(|s| s.class), Some("invalid_recipient".to_owned()));
    let reader = suppression::find(&*store, "fb.test", "reader@isp.test", now).unwrap();
    assert_eq!(reader.map(|s| s.class), Some("complaint".to_owned()));
    assert!(suppression::find(&*store, "fb.test", "slow@far.test", now)
        .unwrap()
        .is_none());
    assert!(
        suppression::find(&*store, "other.test", "gone@far.test", now)
            .unwrap()
            .is_none()
    );
    // Only alice's copy went into a mailbox.
    let inbox = mailbox::meta(&*store, "alice@ours.test", "INBOX")
        .unwrap()
        .unwrap();
    assert_eq!(inbox.messages, 1);

    // The sender's next mail to them is refused.
    let (mut app, _) = Client::connect(server.smtp_addr());
    assert!(app.cmd("EHLO app.test").starts_with("250"));
    assert!(app.cmd("MAIL FROM:<news@fb.test>").starts_with("250"));
    for rcpt in ["gone@far.test", "reader@isp.test"] {
        let reply = app.cmd(&format!("RCPT TO:<{rcpt}>"));
        assert!(reply.starts_with("550"), "{rcpt}: {reply}");
    }

    assert!(
        hook.wait_for(Duration::from_secs(20), |events| {
            events.iter().any(|e| e["type"] == "out_of_band_bounce")
                && events.iter().any(|e| e["type"] == "complaint")
        }),
        "{:?}",
        hook.events()
    );
    let events = hook.events();
    let bounce = events
        .iter()
        .find(|e| e["type"] == "out_of_band_bounce")
        .unwrap();
    assert_eq!(bounce["recipient"], "gone@far.test", "{bounce}");
    assert_eq!(bounce["class"], "invalid_recipient", "{bounce}");
    assert_eq!(bounce["message_id"], "m1@fb.test", "{bounce}");
    assert_eq!(bounce["feedback_address"], "bounces+42@fb.test", "{bounce}");
    let complaint = events.iter().find(|e| e["type"] == "complaint").unwrap();
    assert_eq!(complaint["recipient"], "reader@isp.test", "{complaint}");
    assert_eq!(complaint["feedback_type"], "abuse", "{complaint}");
    assert_eq!(complaint["message_id"], "m2@fb.test", "{complaint}");
    assert_eq!(
        events
            .iter()
            .filter(|e| e["type"] == "out_of_band_bounce")
            .count(),
        1,
        "the delayed recipient is no bounce"
    );
    metrics_with(
        &server,
        &[
            "ringpost_feedback_reports_total{kind=\"delivery\"} 1",
            "ringpost_feedback_reports_total{kind=\"complaint\"} 1",
            "ringpost_feedback_reports_total{kind=\"unknown\"} 1",
            "ringpost_feedback_reports_total{kind=\"suppressed\"} 2",
        ],
    );
    // Out of their transactions, so the shutdown need not wait for them.
    drop((c, app));
    server.shutdown();
}

/// Anyone can write a report: by default it is an event, and stops no
/// mail.
#[test]
fn reports_suppress_nothing_unless_the_operator_says_so() {
    let (server, _data) = start_server(|c| {
        c.feedback.domains = vec!["fb.test".into()];
    });
    let (mut c, _) = Client::connect(server.smtp_addr());
    assert!(c.cmd("EHLO mx.far.test").starts_with("250"));
    let reply = send(&mut c, "", &["bounces@fb.test"], &late_bounce());
    assert!(reply.starts_with("250"), "{reply}");
    let reply = send(
        &mut c,
        "fbl@isp.test",
        &["fbl@fb.test"],
        COMPLAINT.as_bytes(),
    );
    assert!(reply.starts_with("250"), "{reply}");
    let now = ringpost_engine::intake::unix_micros();
    let store = server.store();
    for address in ["gone@far.test", "reader@isp.test"] {
        assert!(suppression::find(&*store, "fb.test", address, now)
            .unwrap()
            .is_none());
    }
    metrics_with(
        &server,
        &[
            "ringpost_feedback_reports_total{kind=\"delivery\"} 1",
            "ringpost_feedback_reports_total{kind=\"complaint\"} 1",
        ],
    );
    drop(c);
    server.shutdown();
}

#[test]
fn a_feedback_domain_cannot_also_be_a_local_one() {
    let error = ringpost_engine::Config::parse(
        "[smtp]\nlocal_domains = [\"ours.test\"]\n[feedback]\ndomains = [\"ours.test\"]\n",
    )
    .unwrap_err()
    .to_string();
    assert!(error.starts_with("feedback.domains"), "{error}");
}
