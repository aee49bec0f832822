//! MAIL FROM and RCPT TO: sequence, paths, parameters, limits, and the
//! pause for the driver's decision on each recipient.

use std::sync::Arc;

use super::*;
use crate::smtp::dsn_request::{Notify, Ret};
use crate::smtp::{replies, BodyType, ServerSession};

#[test]
fn mail_needs_helo_and_no_open_transaction() {
    assert_eq!(run(b"MAIL FROM:<a@b.test>\r\n").codes()[1..], ["503 5.5.1"]);
    assert_eq!(
        ehlo_codes(b"MAIL FROM:<a@b.test>\r\nMAIL FROM:<a@b.test>\r\n"),
        ["250 2.1.0", "503 5.5.1"]
    );
}

#[test]
fn mail_syntax() {
    assert_eq!(
        ehlo_codes(b"MAIL\r\nMAIL TO:<a@b.test>\r\nMAIL FROM:\r\nMAIL FROM:a@b.test\r\nMAIL FROM:<a@b.test\r\nMAIL FROM:<postmaster>\r\n"),
        ["501 5.5.4", "501 5.5.4", "501 5.1.7", "501 5.1.7", "501 5.1.7", "501 5.1.7"]
    );
}

#[test]
fn null_sender_and_lenient_spacing() {
    let run =
        ehlo_run(b"MAIL FROM:<>\r\nRCPT TO:<c@d.test>\r\nDATA\r\n.\r\nMAIL FROM: <a@b.test>\r\n");
    assert_eq!(run.after_ehlo(), [&DELIVERED[..], &["250 2.1.0"]].concat());
    assert_eq!(run.messages()[0].mail_from, "");
}

#[test]
fn mail_parameters() {
    let run = ehlo_run(b"MAIL FROM:<a@b.test> SIZE=100 BODY=8BITMIME SMTPUTF8\r\nRCPT TO:<c@d.test>\r\nDATA\r\n.\r\n");
    assert_eq!(run.after_ehlo(), DELIVERED);
    let tx = run.messages()[0];
    assert_eq!(
        (tx.body_type, tx.smtputf8, tx.esmtp),
        (BodyType::EightBitMime, true, true)
    );
    assert_eq!(tx.helo, "client.test");
}

#[test]
fn mail_parameter_errors() {
    let config = ServerConfig {
        max_message_size: 1000,
        ..config()
    };
    let input = b"EHLO c\r\n\
        MAIL FROM:<a@b.test> SIZE=1001\r\n\
        MAIL FROM:<a@b.test> SIZE=ten\r\n\
        MAIL FROM:<a@b.test> BODY=BINARYMIME\r\n\
        MAIL FROM:<a@b.test> BODY=9BIT\r\n\
        MAIL FROM:<a@b.test> SMTPUTF8=yes\r\n\
        MAIL FROM:<a@b.test> RET=HDRS RET=FULL\r\n\
        MAIL FROM:<a@b.test> AUTH=x+zz\r\n\
        MAIL FROM:<a@b.test> SIZE=1000 AUTH=<>\r\n";
    assert_eq!(
        run_with(config, input, Answers::Accept).codes()[2..],
        [
            "552 5.3.4",
            "501 5.5.4",
            "555 5.5.4",
            "501 5.5.4",
            "501 5.5.4",
            "501 5.5.4",
            "501 5.5.4",
            "250 2.1.0"
        ]
    );
}

#[test]
fn dsn_parameters_reach_the_transaction_per_recipient() {
    let run = ehlo_run(
        b"MAIL FROM:<a@b.test> RET=HDRS ENVID=QQ314\r\n\
          RCPT TO:<c@d.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;c+2Bx@d.test\r\n\
          RCPT TO:<e@d.test> NOTIFY=NEVERMORE\r\n\
          RCPT TO:<e@d.test>\r\n\
          RCPT TO:<f@d.test> NOTIFY=NEVER\r\n\
          DATA\r\nhi\r\n.\r\n",
    );
    assert_eq!(
        run.after_ehlo(),
        [
            "250 2.1.0",
            "250 2.1.5",
            "501 5.5.4",
            "250 2.1.5",
            "250 2.1.5",
            "354",
            "250 2.0.0"
        ]
    );
    let tx = run.messages()[0];
    assert_eq!(tx.ret, Some(Ret::Headers));
    assert_eq!(tx.envid.as_deref(), Some("QQ314"));
    assert_eq!(tx.recipients, ["c@d.test", "e@d.test", "f@d.test"]);
    let requests = &tx.recipient_requests;
    assert_eq!(requests.len(), 3);
    assert_eq!(requests[0].notify, Notify::parse("SUCCESS,FAILURE"));
    assert_eq!(requests[0].orcpt.as_deref(), Some("rfc822;c+2Bx@d.test"));
    assert!(requests[1].is_empty());
    assert_eq!(requests[2].notify, Some(Notify::NEVER));
}

#[test]
fn parameters_need_ehlo() {
    assert_eq!(
        run(b"HELO c\r\nMAIL FROM:<a@b.test> SIZE=10\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test> NOTIFY=NEVER\r\n").codes()[2..],
        ["555 5.5.4", "250 2.1.0", "555 5.5.4"]
    );
}

#[test]
fn path_length_limits() {
    let local65 = "l".repeat(65);
    let input = format!(
        "MAIL FROM:<{local65}@b.test>\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<{local65}@d.test>\r\n"
    );
    assert_eq!(
        ehlo_codes(input.as_bytes()),
        ["501 5.1.7", "250 2.1.0", "501 5.1.3"]
    );
}

#[test]
fn non_ascii_addresses_need_smtputf8() {
    assert_eq!(
        ehlo_codes("MAIL FROM:<jöran@b.test>\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<ü@d.test>\r\nRSET\r\nMAIL FROM:<jöran@b.test> SMTPUTF8\r\nRCPT TO:<ü@bücher.test>\r\n".as_bytes()),
        ["553 5.6.7", "250 2.1.0", "553 5.6.7", "250 2.0.0", "250 2.1.0", "250 2.1.5"]
    );
}

#[test]
fn rcpt_needs_mail() {
    assert_eq!(ehlo_codes(b"RCPT TO:<c@d.test>\r\n"), ["503 5.5.1"]);
}

#[test]
fn rcpt_syntax() {
    assert_eq!(
        ehlo_codes(b"MAIL FROM:<a@b.test>\r\nRCPT\r\nRCPT FROM:<c@d.test>\r\nRCPT TO:<>\r\nRCPT TO:<c@>\r\nRCPT TO:<c@d.test> FOO\r\nRCPT TO:<c@d.test> =\r\n"),
        ["250 2.1.0", "501 5.5.4", "501 5.5.4", "501 5.1.3", "501 5.1.3", "555 5.5.4", "501 5.5.4"]
    );
}

#[test]
fn rcpt_postmaster_without_domain() {
    let run = ehlo_run(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<Postmaster>\r\n");
    assert_eq!(run.after_ehlo(), ["250 2.1.0", "250 2.1.5"]);
    assert_eq!(run.asked(), ["Postmaster"]);
}

#[test]
fn too_many_recipients() {
    let config = ServerConfig {
        max_recipients: 2,
        ..config()
    };
    let input = b"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<1@d.test>\r\nRCPT TO:<2@d.test>\r\nRCPT TO:<3@d.test>\r\nDATA\r\n.\r\n";
    let run = run_with(config, input, Answers::Accept);
    assert_eq!(
        run.codes()[2..],
        [
            "250 2.1.0",
            "250 2.1.5",
            "250 2.1.5",
            "452 4.5.3",
            "354",
            "250 2.0.0"
        ]
    );
    assert_eq!(run.messages()[0].recipients, ["1@d.test", "2@d.test"]);
}

#[test]
fn refused_recipients_are_left_out() {
    // Alternate: 1st accepted, 2nd refused, 3rd accepted, then the message is refused (4th).
    let input = b"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<1@d.test>\r\nRCPT TO:<2@d.test>\r\nRCPT TO:<3@d.test>\r\nDATA\r\n.\r\n";
    let run = run_with(config(), input, Answers::Alternate);
    assert_eq!(
        run.codes()[2..],
        [
            "250 2.1.0",
            "250 2.1.5",
            "550 5.1.1",
            "250 2.1.5",
            "354",
            "451 4.3.0"
        ]
    );
    assert_eq!(run.messages()[0].recipients, ["1@d.test", "3@d.test"]);
}

#[test]
fn rcpt_pauses_until_the_driver_answers() {
    let mut session = ServerSession::new(Arc::new(config()));
    session.clear_output();
    let input =
        b"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@d.test>\r\nRCPT TO:<y@d.test>\r\nNOOP\r\n";
    let first = session.feed(input);
    assert_eq!(&input[first..], b"RCPT TO:<y@d.test>\r\nNOOP\r\n");
    assert_eq!(
        session.poll_event(),
        Some(Event::Recipient {
            address: "x@d.test".into()
        })
    );
    assert_eq!(session.poll_event(), None);
    assert_eq!(
        session.feed(&input[first..]),
        0,
        "nothing is read before the answer"
    );
    assert!(session.in_transaction());
    session.accept_recipient();
    let second = session.feed(&input[first..]);
    assert_eq!(&input[first + second..], b"NOOP\r\n");
    assert_eq!(
        session.poll_event(),
        Some(Event::Recipient {
            address: "y@d.test".into()
        })
    );
    session.reject_recipient(replies::RELAYING_DENIED);
    assert_eq!(session.feed(&input[first + second..]), 6);
    let out = std::str::from_utf8(session.output()).unwrap();
    assert!(out.ends_with("250 2.1.0 Sender ok\r\n250 2.1.5 Recipient ok\r\n550 5.7.1 Relay access denied\r\n250 2.0.0 Ok\r\n"), "{out}");
}

#[test]
fn answers_without_a_question_are_ignored() {
    let mut session = ServerSession::new(Arc::new(config()));
    session.clear_output();
    session.accept_recipient();
    session.reject_recipient(replies::NO_SUCH_USER);
    session.message_stored("Q1");
    session.message_failed(replies::STORAGE_FAILED);
    assert!(session.output().is_empty());
    assert_eq!(session.feed(b"NOOP\r\n"), 6);
}
