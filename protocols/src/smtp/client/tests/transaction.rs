//! Transactions: MAIL, RCPT, DATA or BDAT, with and without PIPELINING, and
//! which reply decides each recipient.

use super::super::reply;
use super::*;

const THREE: [&str; 3] = ["1@d.test", "2@d.test", "3@d.test"];

#[test]
fn pipelined_three_recipients_one_refused() {
    let body = "Subject: hi\r\n\r\nhello\r\n";
    let queued = reply("250 2.0.0 queued as X");
    Script::greeted(
        "250-mx.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SIZE 1000\r\n250 ENHANCEDSTATUSCODES\r\n",
    )
    .send(message(&THREE, body))
    .client(format!(
        "MAIL FROM:<a@b.test> SIZE={}\r\nRCPT TO:<1@d.test>\r\nRCPT TO:<2@d.test>\r\nRCPT TO:<3@d.test>\r\nDATA\r\n",
        body.len()
    ))
    .phase(Phase::Mail)
    .inspect(|session| assert!(!session.is_idle()))
    .server("250 2.1.0 ok\r\n250 2.1.5 ok\r\n550 5.1.1 no such user\r\n250 2.1.5 ok\r\n354 go ahead\r\n")
    .client("Subject: hi\r\n\r\nhello\r\n.\r\n")
    .phase(Phase::DataDone)
    .server("250 2.0.0 queued as X\r\n")
    .event(finished(&[
        ("1@d.test", queued.clone()),
        ("2@d.test", reply("550 5.1.1 no such user")),
        ("3@d.test", queued),
    ]))
    .phase(Phase::Idle)
    .quits()
    .run();
}

#[test]
fn without_pipelining_one_command_at_a_time() {
    Script::greeted(EHLO_PLAIN)
        .send(message(&["1@d.test", "2@d.test"], "hi\r\n"))
        .client("MAIL FROM:<a@b.test>\r\n")
        .phase(Phase::Mail)
        .server("250 ok\r\n")
        .client("RCPT TO:<1@d.test>\r\n")
        .phase(Phase::Rcpt)
        .server("550 5.1.1 no\r\n")
        .client("RCPT TO:<2@d.test>\r\n")
        .server("250 ok\r\n")
        .client("DATA\r\n")
        .phase(Phase::DataInit)
        .server("354 go\r\n")
        .client("hi\r\n.\r\n")
        .phase(Phase::DataDone)
        .server("250 2.0.0 queued\r\n")
        .event(finished(&[
            ("1@d.test", reply("550 5.1.1 no")),
            ("2@d.test", reply("250 2.0.0 queued")),
        ]))
        .quits()
        .run();
}

#[test]
fn without_pipelining_no_data_when_every_recipient_is_refused() {
    Script::greeted(EHLO_PLAIN)
        .send(message(&["1@d.test", "2@d.test"], "hi\r\n"))
        .client("MAIL FROM:<a@b.test>\r\n")
        .server("250 ok\r\n")
        .client("RCPT TO:<1@d.test>\r\n")
        .server("550 5.1.1 no\r\n")
        .client("RCPT TO:<2@d.test>\r\n")
        .server("450 4.2.0 later\r\n")
        .client("")
        .event(finished(&[
            ("1@d.test", reply("550 5.1.1 no")),
            ("2@d.test", reply("450 4.2.0 later")),
        ]))
        .phase(Phase::Idle)
        .quits()
        .run();
}

#[test]
fn mail_refused_decides_every_recipient() {
    let refused = reply("451 4.3.0 try later");
    Script::greeted(EHLO_PIPELINING)
        .send(message(&THREE[..2], "hi\r\n"))
        .client("MAIL FROM:<a@b.test>\r\nRCPT TO:<1@d.test>\r\nRCPT TO:<2@d.test>\r\nDATA\r\n")
        .server("451 4.3.0 try later\r\n503 5.5.1 no MAIL\r\n503 5.5.1 no MAIL\r\n")
        .phase(Phase::DataInit)
        .server("503 5.5.1 no MAIL\r\n")
        .event(finished(&[
            ("1@d.test", refused.clone()),
            ("2@d.test", refused),
        ]))
        .run();
    Script::greeted(EHLO_PLAIN)
        .send(message(&THREE[..2], "hi\r\n"))
        .client("MAIL FROM:<a@b.test>\r\n")
        .server("550 5.7.1 not from you\r\n")
        .event(finished(&[
            ("1@d.test", reply("550 5.7.1 not from you")),
            ("2@d.test", reply("550 5.7.1 not from you")),
        ]))
        .run();
}

#[test]
fn go_ahead_without_recipients_gets_an_empty_message_end() {
    // A pipelining server may say 354 although it refused every RCPT;
    // the message must not go out, and the session must stay in step.
    Script::greeted(EHLO_PIPELINING)
        .send(message(&["1@d.test"], "secret\r\n"))
        .client("MAIL FROM:<a@b.test>\r\nRCPT TO:<1@d.test>\r\nDATA\r\n")
        .server("250 ok\r\n550 5.1.1 no\r\n354 go\r\n")
        .client(".\r\n")
        .server("554 5.5.1 no valid recipients\r\n")
        .event(finished(&[("1@d.test", reply("550 5.1.1 no"))]))
        .inspect(|session| assert!(session.is_idle()))
        .run();
}

#[test]
fn data_refused_decides_the_accepted_recipients() {
    Script::greeted(EHLO_PIPELINING)
        .send(message(&THREE[..2], "hi\r\n"))
        .client("MAIL FROM:<a@b.test>\r\nRCPT TO:<1@d.test>\r\nRCPT TO:<2@d.test>\r\nDATA\r\n")
        .server("250 ok\r\n250 ok\r\n552 5.2.2 mailbox full\r\n451 4.3.0 not now\r\n")
        // RFC 5321 §4.5.3.1.10: 552 to RCPT is taken as 452.
        .event(finished(&[
            ("1@d.test", reply("451 4.3.0 not now")),
            ("2@d.test", reply("452 4.2.2 mailbox full")),
        ]))
        .run();
}

#[test]
fn final_refusal_after_the_content() {
    Script::greeted(EHLO_PIPELINING)
        .send(message(&["1@d.test"], "spam\r\n"))
        .client("MAIL FROM:<a@b.test>\r\nRCPT TO:<1@d.test>\r\nDATA\r\n")
        .server("250 ok\r\n250 ok\r\n354 go\r\n")
        .client("spam\r\n.\r\n")
        .server("554-5.7.1 rejected\r\n554 5.7.1 as spam\r\n")
        .event(finished(&[(
            "1@d.test",
            reply("554 5.7.1 rejected / as spam"),
        )]))
        .run();
}

#[test]
fn service_closing_mid_transaction() {
    let closing = reply("421 4.3.2 shutting down");
    Script::greeted(EHLO_PIPELINING)
        .send(message(&THREE, "hi\r\n"))
        .client("MAIL FROM:<a@b.test>\r\nRCPT TO:<1@d.test>\r\nRCPT TO:<2@d.test>\r\nRCPT TO:<3@d.test>\r\nDATA\r\n")
        .server("250 ok\r\n250 ok\r\n550 5.1.1 no\r\n421 4.3.2 shutting down\r\n")
        .event(finished(&[
            ("1@d.test", closing.clone()),
            ("2@d.test", reply("550 5.1.1 no")),
            ("3@d.test", closing.clone()),
        ]))
        .event(ClientEvent::Failed(closing.clone()))
        .phase(Phase::Closed)
        .run();
    Script::greeted(EHLO_PLAIN)
        .send(message(&["1@d.test"], "hi\r\n"))
        .client("MAIL FROM:<a@b.test>\r\n")
        .server("250 ok\r\n")
        .client("RCPT TO:<1@d.test>\r\n")
        .server("421 4.3.2 shutting down\r\n")
        .event(finished(&[("1@d.test", closing.clone())]))
        .event(ClientEvent::Failed(closing))
        .run();
}

#[test]
fn eof_after_the_message_end() {
    let lost = reply::connection_lost();
    Script::greeted(EHLO_PIPELINING)
        .send(message(&THREE[..2], "hi\r\n"))
        .client("MAIL FROM:<a@b.test>\r\nRCPT TO:<1@d.test>\r\nRCPT TO:<2@d.test>\r\nDATA\r\n")
        .server("250 ok\r\n550 5.1.1 no\r\n250 ok\r\n354 go\r\n")
        .client("hi\r\n.\r\n")
        .server("250 2.0.0 que")
        .eof()
        .event(finished(&[
            ("1@d.test", reply("550 5.1.1 no")),
            ("2@d.test", lost.clone()),
        ]))
        .event(ClientEvent::Failed(lost))
        .run();
}

#[test]
fn protocol_error_mid_transaction() {
    let error = reply::protocol_error("unexpected 250 reply");
    Script::greeted(EHLO_PIPELINING)
        .send(message(&["1@d.test"], "hi\r\n"))
        .client("MAIL FROM:<a@b.test>\r\nRCPT TO:<1@d.test>\r\nDATA\r\n")
        // 250 to DATA: never read as "delivered".
        .server("250 ok\r\n250 ok\r\n250 ok\r\n")
        .event(finished(&[("1@d.test", error.clone())]))
        .event(ClientEvent::Failed(error))
        .run();
}

#[test]
fn message_over_the_size_limit_is_not_sent() {
    Script::greeted("250-mx.test\r\n250-PIPELINING\r\n250 SIZE 10\r\n")
        .send(message(&THREE[..2], "12345678901"))
        .client("")
        .event(finished(&[
            ("1@d.test", reply::too_big(10)),
            ("2@d.test", reply::too_big(10)),
        ]))
        .phase(Phase::Idle)
        // Nothing went out, so the next transaction needs no RSET.
        .send(message(&["1@d.test"], "hi\r\n"))
        .client("MAIL FROM:<a@b.test> SIZE=4\r\nRCPT TO:<1@d.test>\r\nDATA\r\n")
        .server("250 ok\r\n250 ok\r\n354 go\r\n")
        .client("hi\r\n.\r\n")
        .server("250 ok\r\n")
        .event(finished(&[("1@d.test", reply("250 ok"))]))
        .run();
}

#[test]
fn smtputf8_needed_but_not_offered() {
    let refused = reply::needs_smtputf8();
    let utf8_sender = OutgoingMessage {
        mail_from: "\u{fc}@b.test".into(),
        smtputf8: true,
        ..message(&["1@d.test"], "hi\r\n")
    };
    Script::greeted(EHLO_PIPELINING)
        .send(utf8_sender.clone())
        .client("")
        .event(finished(&[("1@d.test", refused.clone())]))
        // Not flagged, but a non-ASCII address still needs it.
        .send(message(&["\u{fc}@d.test"], "hi\r\n"))
        .event(finished(&[("\u{fc}@d.test", refused)]))
        .run();
    Script::greeted("250-mx.test\r\n250-PIPELINING\r\n250 SMTPUTF8\r\n")
        .send(utf8_sender)
        .client("MAIL FROM:<\u{fc}@b.test> SMTPUTF8\r\nRCPT TO:<1@d.test>\r\nDATA\r\n")
        .run();
}

#[test]
fn eight_bit_bodies_are_declared_when_possible() {
    let body = "caf\u{e9}\r\n";
    Script::greeted("250-mx.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
        .send(message(&["1@d.test"], body))
        .client("MAIL FROM:<a@b.test> BODY=8BITMIME\r\nRCPT TO:<1@d.test>\r\nDATA\r\n")
        .run();
}

#[test]
fn eight_bit_bodies_are_made_7bit_for_a_server_without_8bitmime() {
    let message_8bit = "Subject: s\r\n\r\ncaf\u{e9}\r\n";
    Script::greeted(EHLO_PIPELINING)
        .send(message(&["1@d.test"], message_8bit))
        .client("MAIL FROM:<a@b.test>\r\nRCPT TO:<1@d.test>\r\nDATA\r\n")
        .server("250 ok\r\n250 ok\r\n354 go\r\n")
        .client(
            "Subject: s\r\nContent-Transfer-Encoding: quoted-printable\r\n\
             Content-Type: text/plain; charset=utf-8\r\nMIME-Version: 1.0\r\n\r\n\
             caf=C3=A9\r\n.\r\n",
        )
        .server("250 ok\r\n")
        .event(finished(&[("1@d.test", reply("250 ok"))]))
        // An 8-bit header field cannot be: refused here, nothing written.
        .send(message(&["2@d.test"], "Subject: caf\u{e9}\r\n\r\nx\r\n"))
        .client("")
        .event(finished(&[("2@d.test", reply::needs_8bitmime())]))
        .run();
}

#[test]
fn content_is_dot_stuffed_and_terminated() {
    Script::greeted(EHLO_PIPELINING)
        .send(message(
            &["1@d.test"],
            ".leading\r\nmid.dot\r\n.\r\n..two\r\nlast line",
        ))
        .client("MAIL FROM:<a@b.test>\r\nRCPT TO:<1@d.test>\r\nDATA\r\n")
        .server("250 ok\r\n250 ok\r\n354 go\r\n")
        .client("..leading\r\nmid.dot\r\n..\r\n...two\r\nlast line\r\n.\r\n")
        .server("250 ok\r\n")
        .event(finished(&[("1@d.test", reply("250 ok"))]))
        .run();
}

#[test]
fn later_transactions_start_with_rset() {
    Script::greeted(EHLO_PIPELINING)
        .send(message(&["1@d.test"], "one\r\n"))
        .client("MAIL FROM:<a@b.test>\r\nRCPT TO:<1@d.test>\r\nDATA\r\n")
        .server("250 ok\r\n550 5.1.1 no\r\n554 5.5.1 no valid recipients\r\n")
        .event(finished(&[("1@d.test", reply("550 5.1.1 no"))]))
        .send(message(&["2@d.test"], "two\r\n"))
        .client("RSET\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<2@d.test>\r\nDATA\r\n")
        .phase(Phase::Rset)
        .server("250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n")
        .client("two\r\n.\r\n")
        .server("250 ok\r\n")
        .event(finished(&[("2@d.test", reply("250 ok"))]))
        .run();
    Script::greeted(EHLO_PLAIN)
        .send(message(&["1@d.test"], "one\r\n"))
        .client("MAIL FROM:<a@b.test>\r\n")
        .server("550 5.7.1 no\r\n")
        .event(finished(&[("1@d.test", reply("550 5.7.1 no"))]))
        .send(message(&["2@d.test"], "two\r\n"))
        .client("RSET\r\n")
        .phase(Phase::Rset)
        // RSET's answer is not judged; MAIL's is.
        .server("500 what\r\n")
        .client("MAIL FROM:<a@b.test>\r\n")
        .run();
}

#[test]
fn bdat_with_chunking_and_pipelining() {
    let ehlo = "250-mx.test\r\n250-PIPELINING\r\n250 CHUNKING\r\n";
    // Sent raw: no dot-stuffing, no CRLF added.
    let body = ".raw\r\nbody";
    Script::greeted(ehlo)
        .send(message(&["1@d.test", "2@d.test"], body))
        .client("MAIL FROM:<a@b.test>\r\nRCPT TO:<1@d.test>\r\nRCPT TO:<2@d.test>\r\nBDAT 10 LAST\r\n.raw\r\nbody")
        .server("250 ok\r\n250 ok\r\n550 5.1.1 no\r\n")
        .phase(Phase::DataDone)
        .server("250 2.0.0 queued\r\n")
        .event(finished(&[
            ("1@d.test", reply("250 2.0.0 queued")),
            ("2@d.test", reply("550 5.1.1 no")),
        ]))
        .quits()
        .run();
    // Turned off, or without PIPELINING: DATA.
    Script::with_config(ClientConfig {
        use_chunking: false,
        ..config()
    })
    .ehlo(ehlo)
    .send(message(&["1@d.test"], body))
    .client("MAIL FROM:<a@b.test>\r\nRCPT TO:<1@d.test>\r\nDATA\r\n")
    .run();
    Script::greeted("250-mx.test\r\n250 CHUNKING\r\n")
        .send(message(&["1@d.test"], body))
        .client("MAIL FROM:<a@b.test>\r\n")
        .run();
}

#[test]
fn content_phase_lasts_until_the_output_is_written() {
    let mut session = ClientSession::new(Arc::new(config()));
    let input = b"220 mx\r\n250-mx\r\n250 PIPELINING\r\n";
    assert_eq!(session.feed(input), input.len());
    session.send(message(&["1@d.test"], "hi\r\n"));
    assert_eq!(session.feed(b"250 ok\r\n250 ok\r\n354 go\r\n"), 24);
    assert_eq!(session.phase(), Phase::DataBlock);
    assert!(session.output().ends_with(b"hi\r\n.\r\n"));
    session.clear_output();
    assert_eq!(session.phase(), Phase::DataDone);
}

#[test]
fn addresses_with_control_characters_never_reach_the_wire() {
    Script::greeted(EHLO_PIPELINING)
        .send(message(&["1@d.test\r\nRSET", "2@d.test"], "hi\r\n"))
        .client("MAIL FROM:<a@b.test>\r\nRCPT TO:<2@d.test>\r\nDATA\r\n")
        .server("250 ok\r\n250 ok\r\n354 go\r\n")
        .client("hi\r\n.\r\n")
        .server("250 ok\r\n")
        .event(finished(&[
            ("1@d.test\r\nRSET", reply::bad_recipient()),
            ("2@d.test", reply("250 ok")),
        ]))
        .send(OutgoingMessage {
            mail_from: "a@b.test>\r\nDATA".into(),
            ..message(&["2@d.test"], "hi\r\n")
        })
        .client("")
        .event(finished(&[("2@d.test", reply::bad_sender())]))
        .run();
}

#[test]
fn no_recipients_no_transaction() {
    Script::greeted(EHLO_PIPELINING)
        .send(message(&[], "hi\r\n"))
        .client("")
        .event(ClientEvent::Finished(Vec::new()))
        .inspect(|session| assert!(session.is_idle()))
        .run();
}

#[test]
fn quit_during_a_transaction_waits_for_its_end() {
    Script::greeted(EHLO_PIPELINING)
        .send(message(&["1@d.test"], "hi\r\n"))
        .client("MAIL FROM:<a@b.test>\r\nRCPT TO:<1@d.test>\r\nDATA\r\n")
        .quit()
        .client("")
        .server("250 ok\r\n250 ok\r\n354 go\r\n")
        .client("hi\r\n.\r\n")
        .server("250 ok\r\n")
        .event(finished(&[("1@d.test", reply("250 ok"))]))
        .client("QUIT\r\n")
        .server("221 bye\r\n")
        .event(ClientEvent::Closed)
        .run();
}

/// PIPELINING and CHUNKING: transactions may follow each other unanswered.
const EHLO_BDAT: &str =
    "250-mx.test\r\n250-PIPELINING\r\n250-ENHANCEDSTATUSCODES\r\n250 CHUNKING\r\n";

/// Greeted by a server that takes BDAT with PIPELINING, two messages sent
/// back to back, both on the wire in one go.
fn two_back_to_back() -> Script {
    let mut script = Script::greeted(EHLO_BDAT);
    script
        .send(message(&["1@d.test"], "one\r\n"))
        .send(message(&["2@d.test"], "two\r\n"))
        .client(concat!(
            "MAIL FROM:<a@b.test>\r\nRCPT TO:<1@d.test>\r\nBDAT 5 LAST\r\none\r\n",
            "RSET\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<2@d.test>\r\nBDAT 5 LAST\r\ntwo\r\n",
        ));
    script
}

#[test]
fn with_bdat_transactions_go_out_back_to_back_and_finish_in_order() {
    Script::greeted(EHLO_BDAT)
        .inspect(|session| assert!(session.can_send()))
        .send(message(&["1@d.test"], "one\r\n"))
        .inspect(|session| {
            assert!(session.can_send(), "written whole: the next may follow");
            assert!(!session.is_idle());
            assert_eq!(session.in_flight(), 1);
        })
        .send(message(&["2@d.test", "3@d.test"], "two\r\n"))
        .inspect(|session| assert_eq!(session.in_flight(), 2))
        .client(concat!(
            "MAIL FROM:<a@b.test>\r\nRCPT TO:<1@d.test>\r\nBDAT 5 LAST\r\none\r\n",
            "RSET\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<2@d.test>\r\nRCPT TO:<3@d.test>\r\nBDAT 5 LAST\r\ntwo\r\n",
        ))
        .phase(Phase::Mail)
        .server("250 2.1.0 ok\r\n250 2.1.5 ok\r\n250 2.0.0 one\r\n250 2.0.0 reset\r\n250 2.1.0 ok\r\n550 5.1.1 no\r\n250 2.1.5 ok\r\n250 2.0.0 two\r\n")
        .event(finished(&[("1@d.test", reply("250 2.0.0 one"))]))
        .inspect(|session| assert_eq!(session.in_flight(), 1))
        .resume()
        .event(finished(&[
            ("2@d.test", reply("550 5.1.1 no")),
            ("3@d.test", reply("250 2.0.0 two")),
        ]))
        .phase(Phase::Idle)
        .inspect(|session| assert!(session.is_idle()))
        .quits()
        .run();
}

#[test]
fn a_refused_mail_fails_only_its_own_transaction() {
    Script::greeted(EHLO_BDAT)
        .send(message(&["1@d.test"], "one\r\n"))
        .send(message(&["2@d.test"], "two\r\n"))
        .send(message(&["3@d.test"], "three\r\n"))
        .client(concat!(
            "MAIL FROM:<a@b.test>\r\nRCPT TO:<1@d.test>\r\nBDAT 5 LAST\r\none\r\n",
            "RSET\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<2@d.test>\r\nBDAT 5 LAST\r\ntwo\r\n",
            "RSET\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<3@d.test>\r\nBDAT 7 LAST\r\nthree\r\n",
        ))
        // The second MAIL refused: its RCPT and BDAT get 503s, which decide
        // nothing more; the third goes through.
        .server("250 ok\r\n250 ok\r\n250 2.0.0 one\r\n250 reset\r\n451 4.3.0 later\r\n503 5.5.1 no MAIL\r\n503 5.5.1 no MAIL\r\n")
        .event(finished(&[("1@d.test", reply("250 2.0.0 one"))]))
        .resume()
        .event(finished(&[("2@d.test", reply("451 4.3.0 later"))]))
        .server("250 reset\r\n250 ok\r\n250 ok\r\n250 2.0.0 three\r\n")
        .event(finished(&[("3@d.test", reply("250 2.0.0 three"))]))
        .quits()
        .run();
}

#[test]
fn a_lost_connection_ends_every_transaction_in_flight() {
    let lost = reply::connection_lost();
    two_back_to_back()
        .server("250 ok\r\n250 ok\r\n")
        .eof()
        .event(finished(&[("1@d.test", lost.clone())]))
        .event(ClientEvent::Unanswered(vec![RecipientResult {
            recipient: "2@d.test".into(),
            reply: lost.clone(),
        }]))
        .event(ClientEvent::Failed(lost))
        .phase(Phase::Closed)
        .inspect(|session| assert!(!session.can_send()))
        .run();
}

#[test]
fn a_421_between_pipelined_transactions_ends_the_rest() {
    two_back_to_back()
        .server("250 ok\r\n250 ok\r\n250 2.0.0 one\r\n421 4.3.2 shutting down\r\n")
        .event(finished(&[("1@d.test", reply("250 2.0.0 one"))]))
        .resume()
        .event(finished(&[("2@d.test", reply("421 4.3.2 shutting down"))]))
        .event(ClientEvent::Failed(reply("421 4.3.2 shutting down")))
        .run();
}

#[test]
fn a_message_refused_locally_behind_others_finishes_in_its_turn() {
    let ehlo = "250-mx.test\r\n250-PIPELINING\r\n250-SIZE 10\r\n250 CHUNKING\r\n";
    Script::greeted(ehlo)
        .send(message(&["1@d.test"], "one\r\n"))
        .send(message(&["2@d.test"], "far too big for it\r\n"))
        .inspect(|session| assert_eq!(session.in_flight(), 2))
        .client("MAIL FROM:<a@b.test> SIZE=5\r\nRCPT TO:<1@d.test>\r\nBDAT 5 LAST\r\none\r\n")
        .server("250 ok\r\n250 ok\r\n250 2.0.0 one\r\n")
        .event(finished(&[("1@d.test", reply("250 2.0.0 one"))]))
        .event(finished(&[("2@d.test", reply::too_big(10))]))
        .phase(Phase::Idle)
        .quits()
        .run();
}

#[test]
fn quit_waits_for_every_transaction_in_flight() {
    two_back_to_back()
        .quit()
        .inspect(|session| assert!(!session.can_send(), "no more after quit"))
        .server("250 ok\r\n250 ok\r\n250 2.0.0 one\r\n")
        .event(finished(&[("1@d.test", reply("250 2.0.0 one"))]))
        .client("")
        .server("250 reset\r\n250 ok\r\n250 ok\r\n250 2.0.0 two\r\n")
        .event(finished(&[("2@d.test", reply("250 2.0.0 two"))]))
        .client("QUIT\r\n")
        .server("221 bye\r\n")
        .event(ClientEvent::Closed)
        .run();
}

#[test]
fn with_data_a_transaction_waits_for_the_one_before() {
    Script::greeted(EHLO_PIPELINING)
        .send(message(&["1@d.test"], "one\r\n"))
        .inspect(|session| assert!(!session.can_send(), "DATA needs its 354 first"))
        .client("MAIL FROM:<a@b.test>\r\nRCPT TO:<1@d.test>\r\nDATA\r\n")
        .server("250 ok\r\n250 ok\r\n354 go\r\n")
        .client("one\r\n.\r\n")
        .inspect(|session| assert!(!session.can_send()))
        .server("250 2.0.0 one\r\n")
        .event(finished(&[("1@d.test", reply("250 2.0.0 one"))]))
        .inspect(|session| assert!(session.can_send()))
        .quits()
        .run();
}

/// The sender's DSN parameters go on to a server that offers DSN (RFC 3461
/// §5.2), and not to one that does not (it would refuse them).
#[test]
fn dsn_parameters_go_only_to_a_server_that_offers_dsn() {
    use crate::smtp::dsn_request::{Notify, RecipientRequest, Ret};
    let with_dsn = || OutgoingMessage {
        ret: Some(Ret::Headers),
        envid: Some("E+2B1".into()),
        recipient_requests: vec![RecipientRequest {
            notify: Notify::parse("SUCCESS"),
            orcpt: Some("rfc822;1@d.test".into()),
        }],
        ..message(&["1@d.test", "2@d.test"], "hi\r\n")
    };
    let queued = reply("250 2.0.0 queued");
    let results = [("1@d.test", queued.clone()), ("2@d.test", queued)];
    Script::greeted("250-mx.test\r\n250-PIPELINING\r\n250 DSN\r\n")
        .send(with_dsn())
        .client(
            "MAIL FROM:<a@b.test> RET=HDRS ENVID=E+2B1\r\n\
             RCPT TO:<1@d.test> NOTIFY=SUCCESS ORCPT=rfc822;1@d.test\r\n\
             RCPT TO:<2@d.test>\r\nDATA\r\n",
        )
        .server("250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n")
        .client("hi\r\n.\r\n")
        .server("250 2.0.0 queued\r\n")
        .event(finished(&results))
        .quits()
        .run();
    Script::greeted(EHLO_PIPELINING)
        .send(with_dsn())
        .client("MAIL FROM:<a@b.test>\r\nRCPT TO:<1@d.test>\r\nRCPT TO:<2@d.test>\r\nDATA\r\n")
        .server("250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n")
        .client("hi\r\n.\r\n")
        .server("250 2.0.0 queued\r\n")
        .event(finished(&results))
        .quits()
        .run();
}
