//! DATA: sequence, content, dot-unstuffing, smuggling, size limit, and the
//! pause for the driver's commit.

use std::sync::Arc;

use super::*;
use crate::smtp::{Reply, ServerSession};

#[test]
fn a_message_is_handed_out_and_queued() {
    let run = ehlo_run(&transaction(
        "c@d.test",
        "Subject: hi\r\n\r\nHello\r\n.\r\n",
    ));
    assert_eq!(run.after_ehlo(), DELIVERED);
    assert_eq!(run.lines().last().unwrap(), &"250 2.0.0 Ok: queued as Q1");
    let tx = run.messages()[0];
    assert_eq!(tx.mail_from, "sender@client.test");
    assert_eq!(tx.recipients, ["c@d.test"]);
    assert_eq!(tx.data, b"Subject: hi\r\n\r\nHello\r\n");
    assert!(!tx.chunked);
}

#[test]
fn data_sequence_errors() {
    assert_eq!(ehlo_codes(b"DATA\r\n"), ["503 5.5.1"]);
    assert_eq!(
        ehlo_codes(b"MAIL FROM:<a@b.test>\r\nDATA\r\n"),
        ["250 2.1.0", "554 5.5.1"]
    );
    assert_eq!(
        ehlo_codes(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA now\r\n"),
        ["250 2.1.0", "250 2.1.5", "501 5.5.4"]
    );
}

#[test]
fn empty_message() {
    let run = ehlo_run(&transaction("c@d.test", ".\r\n"));
    assert_eq!(run.after_ehlo(), DELIVERED);
    assert!(run.messages()[0].data.is_empty());
}

#[test]
fn dot_unstuffing() {
    let run = ehlo_run(&transaction(
        "c@d.test",
        "..\r\n..leading\r\nmid.dle\r\n...\r\n.\r\n",
    ));
    assert_eq!(
        run.messages()[0].data,
        b".\r\n.leading\r\nmid.dle\r\n..\r\n"
    );
}

/// Each case hides a complete second transaction behind a fake end marker.
/// None of it may run: the content goes on to the real CRLF.CRLF and the
/// message is refused with 550 5.6.0.
#[test]
fn smuggled_commands_are_body_bytes() {
    let hidden = "MAIL FROM:<forged@victim.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\nforged\r\n";
    for fake_end in [
        "\n.\n", "\r.\r", "\r\n.\n", "\n.\r\n", "\r.\r\n", "\r\n.\r", "\n.\r",
    ] {
        let body = format!("Subject: a\r\n\r\nreal{fake_end}{hidden}.\r\nNOOP\r\n");
        let run = ehlo_run(&transaction("c@d.test", &body));
        assert_eq!(
            run.after_ehlo(),
            ["250 2.1.0", "250 2.1.5", "354", "550 5.6.0", "250 2.0.0"],
            "{fake_end:?}"
        );
        assert!(run.messages().is_empty(), "{fake_end:?}");
        assert!(run
            .lines()
            .contains(&"550 5.6.0 Message contains bare CR or LF; line endings must be CRLF"));
    }
}

#[test]
fn bare_cr_or_lf_anywhere_refuses_the_message() {
    for body in [
        "a\rb\r\n.\r\n",
        "a\nb\r\n.\r\n",
        "\n\r\n.\r\n",
        "a\r\r\n.\r\n",
        "line\r\n.x\n\r\n.\r\n",
    ] {
        assert_eq!(
            ehlo_codes(&transaction("c@d.test", body)),
            ["250 2.1.0", "250 2.1.5", "354", "550 5.6.0"],
            "{body:?}"
        );
    }
}

#[test]
fn a_refused_message_resets_the_transaction_but_not_helo() {
    let mut input = transaction("c@d.test", "a\nb\r\n.\r\n");
    input.extend_from_slice(b"RCPT TO:<c@d.test>\r\n");
    input.extend(transaction("c@d.test", ".\r\n"));
    assert_eq!(
        ehlo_codes(&input),
        [
            &["250 2.1.0", "250 2.1.5", "354", "550 5.6.0", "503 5.5.1"][..],
            &DELIVERED
        ]
        .concat()
    );
}

#[test]
fn message_size_limit() {
    let config = ServerConfig {
        max_message_size: 10,
        ..config()
    };
    // Exactly 10 bytes; 11 on the wire but 10 once unstuffed; then 11 bytes.
    let exact = transaction("c@d.test", "12345678\r\n.\r\n");
    let stuffed = transaction("c@d.test", "..2345678\r\n.\r\n");
    let over = transaction(
        "c@d.test",
        "123456789\r\nmore lines that are not buffered\r\n.\r\n",
    );
    let input = [&b"EHLO c\r\n"[..], &exact, &stuffed, &over, b"NOOP\r\n"].concat();
    let run = run_with(config, &input, Answers::Accept);
    assert_eq!(
        run.codes()[2..],
        [
            &DELIVERED[..],
            &DELIVERED,
            &["250 2.1.0", "250 2.1.5", "354", "552 5.3.4", "250 2.0.0"]
        ]
        .concat()
    );
    assert_eq!(run.messages()[1].data, b".2345678\r\n");
}

#[test]
fn a_failed_commit_is_reported_and_the_session_goes_on() {
    let input = [
        &b"EHLO c\r\n"[..],
        &transaction("a@d.test", ".\r\n"),
        &transaction("b@d.test", ".\r\n"),
    ]
    .concat();
    // Alternate: RCPT a yes, message 1 no, RCPT b yes, message 2 no.
    let run = run_with(config(), &input, Answers::Alternate);
    assert_eq!(
        run.codes()[2..],
        [
            "250 2.1.0",
            "250 2.1.5",
            "354",
            "451 4.3.0",
            "250 2.1.0",
            "250 2.1.5",
            "354",
            "451 4.3.0"
        ]
    );
}

#[test]
fn several_messages_in_one_session() {
    let mut input = b"EHLO c\r\n".to_vec();
    for i in 0..5 {
        input.extend(transaction(
            &format!("r{i}@d.test"),
            &format!("message {i}\r\n.\r\n"),
        ));
    }
    input.extend_from_slice(b"QUIT\r\n");
    let run = run(&input);
    assert_eq!(run.messages().len(), 5);
    for (i, tx) in run.messages().iter().enumerate() {
        assert_eq!(tx.recipients, [format!("r{i}@d.test")]);
        assert_eq!(tx.data, format!("message {i}\r\n").as_bytes());
        assert_eq!(tx.helo, "c");
    }
    assert!(run.lines().contains(&"250 2.0.0 Ok: queued as Q5"));
    assert_eq!(run.codes().last().unwrap(), "221 2.0.0");
}

#[test]
fn state_flags_follow_the_message() {
    let mut session = ServerSession::new(Arc::new(config()));
    let setup = b"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\n";
    assert_eq!(session.feed(setup), setup.len());
    assert!(session.in_transaction() && !session.in_data());
    session.accept_recipient();
    assert_eq!(session.feed(b"DATA\r\npart"), 10);
    assert!(session.in_transaction() && session.in_data());
    assert_eq!(session.feed(b" two\r\n.\r\nNOOP\r\n"), 9);
    assert!(session.in_transaction() && !session.in_data());
    let Some(Event::Message(tx)) = session.poll_event() else {
        panic!("no message")
    };
    assert_eq!(tx.data, b"part two\r\n");
    session.recycle(tx.data);
    session.message_stored("ABC123");
    assert!(!session.in_transaction());
    assert!(session
        .output()
        .ends_with(b"354 End data with <CR><LF>.<CR><LF>\r\n250 2.0.0 Ok: queued as ABC123\r\n"));
    assert_eq!(session.feed(b"NOOP\r\n"), 6);
}

#[test]
fn the_driver_refusal_text_cannot_break_the_reply_stream() {
    let mut session = ServerSession::new(Arc::new(config()));
    let input = b"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\n";
    assert_eq!(session.feed(input), input.len());
    session.clear_output();
    session.reject_recipient(Reply::new(550, "5.1.1", "no\r\n250 fake"));
    assert_eq!(session.output(), b"550-5.1.1 no\r\n550 5.1.1 250 fake\r\n");
}

#[test]
fn a_message_both_too_big_and_bare_gets_552_however_it_is_cut() {
    let config = ServerConfig {
        max_message_size: 4,
        ..config()
    };
    let input = [
        &b"EHLO c\r\n"[..],
        &transaction("c@d.test", "ab\ncdefg\r\n.\r\n"),
    ]
    .concat();
    assert_split_invariant(config.clone(), &input, Answers::Accept);
    assert_eq!(
        run_with(config, &input, Answers::Accept).codes()[2..],
        ["250 2.1.0", "250 2.1.5", "354", "552 5.3.4"]
    );
}
