//! The connection around transactions: greeting, EHLO and HELO, STARTTLS,
//! QUIT, and the ways a connection fails.

use super::super::reply;
use super::*;

#[test]
fn multi_line_greeting_and_ehlo_keywords() {
    let mut script = Script::with_config(ClientConfig {
        try_starttls: false,
        ..config()
    });
    script
        .server("220-mx.test ESMTP\r\n220-no UCE\r\n220 ready\r\n")
        .phase(Phase::Ehlo)
        .client("EHLO client.test\r\n")
        .server(concat!(
            "250-mx.test greets client.test\r\n",
            "250-pipelining\r\n",
            "250-Size 12345\r\n",
            "250-8bitmime\n",
            "250-SMTPUTF8\r\n",
            "250-AUTH PLAIN LOGIN\r\n",
            "250-EnhancedStatusCodes\r\n",
            "250-chunking\r\n",
            "250 STARTTLS\r\n",
        ))
        .event(ClientEvent::Ready)
        .inspect(|session| {
            assert_eq!(
                *session.extensions(),
                Extensions {
                    pipelining: true,
                    size: Some(12345),
                    eightbitmime: true,
                    smtputf8: true,
                    starttls: true,
                    chunking: true,
                    enhanced_status_codes: true,
                    dsn: false,
                }
            );
            assert!(session.is_idle());
        })
        .phase(Phase::Idle)
        .quits()
        .run();
}

#[test]
fn size_without_a_readable_limit_means_no_limit() {
    for (line, size) in [
        ("250 SIZE\r\n", Some(0)),
        ("250 SIZE 0\r\n", Some(0)),
        ("250 SIZE lots\r\n", Some(0)),
        ("250 HELP\r\n", None),
    ] {
        let mut session = ClientSession::new(Arc::new(config()));
        assert_eq!(session.feed(b"220 mx\r\n"), 8);
        let ehlo = format!("250-mx\r\n{line}");
        assert_eq!(session.feed(ehlo.as_bytes()), ehlo.len());
        assert_eq!(session.extensions().size, size, "{line:?}");
    }
}

#[test]
fn helo_when_ehlo_is_refused() {
    Script::new()
        .server("220 mx.test\r\n")
        .client("EHLO client.test\r\n")
        .server("502 5.5.1 Command not implemented\r\n")
        .client("HELO client.test\r\n")
        .phase(Phase::Ehlo)
        .server("250 mx.test\r\n")
        .event(ClientEvent::Ready)
        .inspect(|session| assert_eq!(*session.extensions(), Extensions::default()))
        .send(message(&["c@d.test"], "hi\r\n"))
        .client("MAIL FROM:<a@b.test>\r\n")
        .server("250 ok\r\n")
        .client("RCPT TO:<c@d.test>\r\n")
        .server("250 ok\r\n")
        .client("DATA\r\n")
        .server("354 go\r\n")
        .client("hi\r\n.\r\n")
        .server("250 queued\r\n")
        .event(finished(&[("c@d.test", reply("250 queued"))]))
        .quits()
        .run();
}

#[test]
fn ehlo_and_helo_refused_fails_with_quit() {
    Script::new()
        .server("220 mx.test\r\n")
        .client("EHLO client.test\r\n")
        .server("500 what\r\n")
        .client("HELO client.test\r\n")
        .server("550 5.7.1 not you\r\n")
        .client("QUIT\r\n")
        .event(ClientEvent::Failed(reply("550 5.7.1 not you")))
        .phase(Phase::Closed)
        .run();
}

#[test]
fn transient_ehlo_refusal_does_not_fall_back() {
    Script::new()
        .server("220 mx.test\r\n")
        .client("EHLO client.test\r\n")
        .server("451 4.3.0 later\r\n")
        .client("QUIT\r\n")
        .event(ClientEvent::Failed(reply("451 4.3.0 later")))
        .run();
}

#[test]
fn greeting_554_fails_with_quit() {
    Script::new()
        .server("554-5.7.1 mx.test\r\n554 5.7.1 no mail from you\r\n")
        .client("QUIT\r\n")
        .event(ClientEvent::Failed(reply(
            "554 5.7.1 mx.test / no mail from you",
        )))
        .inspect(|session| assert!(session.is_closed() && !session.is_idle()))
        .phase(Phase::Closed)
        // A closed session ignores whatever else comes.
        .server("221 bye\r\n")
        .eof()
        .run();
}

#[test]
fn greeting_421_fails_without_quit() {
    Script::new()
        .server("421 4.3.2 busy\r\n")
        .event(ClientEvent::Failed(reply("421 4.3.2 busy")))
        .run();
}

#[test]
fn starttls_then_ehlo_again() {
    Script::new()
        .server("220 mx.test\r\n")
        .client("EHLO client.test\r\n")
        .server("250-mx.test\r\n250-STARTTLS\r\n250 SIZE 100\r\n")
        .client("STARTTLS\r\n")
        .phase(Phase::StartTls)
        .server("220 2.0.0 Ready to start TLS\r\n")
        .event(ClientEvent::StartTls)
        .phase(Phase::StartTls)
        .tls()
        .inspect(|session| assert_eq!(*session.extensions(), Extensions::default()))
        .client("EHLO client.test\r\n")
        .phase(Phase::Ehlo)
        // Offered again inside TLS: not taken again.
        .server("250-mx.test\r\n250-STARTTLS\r\n250-PIPELINING\r\n250 SIZE 200\r\n")
        .event(ClientEvent::Ready)
        .inspect(|session| {
            let ext = session.extensions();
            assert!(ext.pipelining && ext.starttls && ext.size == Some(200));
        })
        .quits()
        .run();
}

#[test]
fn starttls_refused_carries_on_in_plain_text() {
    Script::new()
        .server("220 mx.test\r\n")
        .client("EHLO client.test\r\n")
        .server("250-mx.test\r\n250 STARTTLS\r\n")
        .client("STARTTLS\r\n")
        .server("454 4.7.0 TLS not available\r\n")
        .event(ClientEvent::Ready)
        .quits()
        .run();
}

#[test]
fn starttls_not_tried_when_not_configured() {
    Script::with_config(ClientConfig {
        try_starttls: false,
        ..config()
    })
    .ehlo("250-mx.test\r\n250 STARTTLS\r\n")
    .quits()
    .run();
}

#[test]
fn plain_text_after_the_starttls_go_ahead_is_refused() {
    // Sent in the same read as the 220, these bytes would otherwise be
    // taken for the first reply inside TLS.
    let mut session = ClientSession::new(Arc::new(config()));
    let input = b"220 mx\r\n250-mx\r\n250 STARTTLS\r\n220 go\r\n250-mx\r\n250 PIPELINING\r\n";
    assert_eq!(session.feed(input), input.len());
    assert_eq!(session.poll_event(), Some(ClientEvent::StartTls));
    assert_eq!(
        session.poll_event(),
        Some(ClientEvent::Failed(reply::protocol_error(
            "data after the 220 to STARTTLS"
        )))
    );
    assert!(session.is_closed());
    // The engine may still call this for the event it polled.
    session.tls_established();
    assert_eq!(session.output(), b"EHLO client.test\r\nSTARTTLS\r\n");
}

#[test]
fn over_long_reply_fails() {
    let config = ClientConfig {
        max_reply_len: 40,
        ..config()
    };
    let failed = ClientEvent::Failed(reply::protocol_error("reply too long"));
    // Too long over several lines.
    Script::with_config(config.clone())
        .server("220 mx.test\r\n")
        .client("EHLO client.test\r\n")
        .server("250-mx.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
        .event(failed.clone())
        .run();
    // One line that never ends: refused once it cannot fit, which keeps
    // the engine's buffer bounded too.
    Script::with_config(config)
        .server("220 mx.test\r\n")
        .client("EHLO client.test\r\n")
        .server("250 xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx")
        .event(failed)
        .run();
}

#[test]
fn garbage_and_wrong_codes_are_protocol_errors() {
    for (bad, what) in [
        ("HTTP/1.1 400 Bad Request\r\n", "malformed reply line"),
        ("250-mx\r\n220 mx\r\n", "reply code changed between lines"),
        ("354 go ahead\r\n", "unexpected 354 reply"),
    ] {
        Script::new()
            .server("220 mx.test\r\n")
            .client("EHLO client.test\r\n")
            .server(bad)
            .event(ClientEvent::Failed(reply::protocol_error(what)))
            .run();
    }
}

#[test]
fn unsolicited_replies_end_the_session() {
    Script::greeted(EHLO_PLAIN)
        .server("250 hello?\r\n")
        .event(ClientEvent::Failed(reply::protocol_error(
            "reply to no command",
        )))
        .run();
    // RFC 5321 §3.8: a server shutting down may say 421 at any time.
    Script::greeted(EHLO_PLAIN)
        .server("421 4.3.2 shutting down\r\n")
        .event(ClientEvent::Failed(reply("421 4.3.2 shutting down")))
        .run();
}

#[test]
fn eof_before_ready_and_when_idle() {
    Script::new()
        .server("220 mx.test\r\n")
        .client("EHLO client.test\r\n")
        .server("250-mx.test\r\n250-PIPEL")
        .eof()
        .event(ClientEvent::Failed(reply::connection_lost()))
        .run();
    Script::greeted(EHLO_PLAIN)
        .eof()
        .event(ClientEvent::Failed(reply::connection_lost()))
        .run();
}

#[test]
fn eof_or_anything_after_quit_closes() {
    Script::greeted(EHLO_PLAIN)
        .quit()
        .client("QUIT\r\n")
        .eof()
        .event(ClientEvent::Closed)
        .run();
    Script::greeted(EHLO_PLAIN)
        .quit()
        .client("QUIT\r\n")
        .server("500 what\r\n")
        .event(ClientEvent::Closed)
        .run();
}

#[test]
fn quit_during_the_greeting_waits_for_it() {
    Script::new()
        .server("220 mx.test\r\n")
        .client("EHLO client.test\r\n")
        .quit()
        .client("")
        .server("250-mx.test\r\n250 STARTTLS\r\n")
        // No Ready, no STARTTLS: straight to QUIT.
        .client("QUIT\r\n")
        .server("221 bye\r\n")
        .event(ClientEvent::Closed)
        .run();
}

#[test]
fn feed_pauses_after_ready_until_the_engine_answers() {
    let mut session = ClientSession::new(Arc::new(config()));
    let input = b"220 mx\r\n250 mx\r\n250 ok\r\n250 ok\r\n";
    let used = session.feed(input);
    assert_eq!(&input[used..], b"250 ok\r\n250 ok\r\n");
    assert_eq!(session.poll_event(), Some(ClientEvent::Ready));
    session.send(message(&["c@d.test"], "hi\r\n"));
    session.clear_output();
    let rest = &input[used..];
    // MAIL, then RCPT, answered from what the server had already sent.
    assert_eq!(session.feed(rest), rest.len());
    assert_eq!(session.output(), b"RCPT TO:<c@d.test>\r\nDATA\r\n");
    assert_eq!(session.phase(), Phase::DataInit);
}

#[test]
fn send_on_a_closed_session_finishes_at_once() {
    let mut session = ClientSession::new(Arc::new(config()));
    session.eof();
    assert_eq!(
        session.poll_event(),
        Some(ClientEvent::Failed(reply::connection_lost()))
    );
    session.send(message(&["c@d.test"], "hi\r\n"));
    assert_eq!(
        session.poll_event(),
        Some(finished(&[("c@d.test", reply::connection_lost())]))
    );
    assert!(session.output().is_empty());
}

#[test]
fn replies_display_like_the_wire() {
    assert_eq!(
        reply("550 5.1.1 no such user").to_string(),
        "550 5.1.1 no such user"
    );
    assert_eq!(reply("250 mx.test").to_string(), "250 mx.test");
    let lost = reply::connection_lost();
    assert!(lost.local && lost.is_transient() && !lost.is_positive());
    assert_eq!(lost.to_string(), "421 4.4.2 connection lost");
}
