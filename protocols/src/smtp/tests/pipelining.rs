//! Pipelining (RFC 2920): many commands per read, pauses at questions, and
//! outcomes that never depend on how the input was cut.

use std::sync::Arc;

use super::*;
use crate::smtp::server::OUTPUT_HIGH_WATER;
use crate::smtp::ServerSession;

#[test]
fn a_whole_transaction_in_one_read() {
    let input =
        b"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<1@d.test>\r\nRCPT TO:<2@d.test>\r\nDATA\r\n";
    let run = run(input);
    assert_eq!(
        run.codes()[2..],
        ["250 2.1.0", "250 2.1.5", "250 2.1.5", "354"]
    );
    assert_eq!(run.asked(), ["1@d.test", "2@d.test"]);
}

#[test]
fn feed_stops_at_each_question_and_resumes_after_the_answer() {
    let mut session = ServerSession::new(Arc::new(config()));
    let input = b"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<1@d.test>\r\nRCPT TO:<2@d.test>\r\nDATA\r\nhi\r\n.\r\nQUIT\r\n";
    let mut pos = session.feed(input);
    assert!(matches!(
        session.poll_event(),
        Some(Event::Recipient { .. })
    ));
    session.accept_recipient();
    pos += session.feed(&input[pos..]);
    assert!(matches!(
        session.poll_event(),
        Some(Event::Recipient { .. })
    ));
    session.accept_recipient();
    pos += session.feed(&input[pos..]);
    assert_eq!(&input[pos..], b"QUIT\r\n");
    let Some(Event::Message(tx)) = session.poll_event() else {
        panic!("no message")
    };
    assert_eq!((tx.recipients.len(), &tx.data[..]), (2, &b"hi\r\n"[..]));
    assert!(!session.output().ends_with(b"queued as Q\r\n"));
    session.message_stored("Q");
    pos += session.feed(&input[pos..]);
    assert_eq!(pos, input.len());
    assert!(session.is_closed());
    assert!(session
        .output()
        .ends_with(b"250 2.0.0 Ok: queued as Q\r\n221 2.0.0 Bye\r\n"));
}

#[test]
fn pipelined_commands_wait_while_many_replies_are_unwritten() {
    let mut session = ServerSession::new(Arc::new(config()));
    session.clear_output();
    // Each EHLO answer is far longer than its command.
    let input = b"EHLO x\n".repeat(9_000);
    let used = session.feed(&input);
    assert!(used < input.len(), "it stopped to let its replies out");
    let unwritten = session.output().len();
    assert!(
        (OUTPUT_HIGH_WATER..OUTPUT_HIGH_WATER + 1024).contains(&unwritten),
        "{unwritten}"
    );
    assert!(session.poll_event().is_none());
    // Once written, the rest is taken, a piece at a time.
    let mut fed = used;
    while fed < input.len() {
        session.clear_output();
        let more = session.feed(&input[fed..]);
        assert!(more > 0);
        fed += more;
        assert!(session.output().len() < OUTPUT_HIGH_WATER + 1024);
    }
    assert!(!session.is_closed());
}

#[test]
fn replies_come_in_command_order() {
    let run = ehlo_run(b"NOOP\r\nFROB\r\nRSET\r\nVRFY a\r\nMAIL FROM:<a@b.test>\r\nHELP\r\n");
    assert_eq!(
        run.after_ehlo(),
        [
            "250 2.0.0",
            "500 5.5.1",
            "250 2.0.0",
            "252 2.0.0",
            "250 2.1.0",
            "214 2.0.0"
        ]
    );
}

/// A session that touches most paths: parameters, refused and accepted
/// recipients, stuffing, a smuggling attempt, BDAT with a CRLF across
/// chunks, a long line, bad UTF-8, an error, QUIT with input after it.
fn busy_session() -> Vec<u8> {
    let mut input = b"EHLO client.test\r\n".to_vec();
    input.extend_from_slice(b"MAIL FROM:<a@b.test> SIZE=100 BODY=8BITMIME\r\nRCPT TO:<1@d.test>\r\nRCPT TO:<2@d.test>\r\nRCPT TO:<3@d.test>\r\n");
    input.extend_from_slice(b"DATA\r\nSubject: x\r\n\r\n..dot\r\n.\r\n");
    input.extend(transaction("4@d.test", "a\n.\nRSET\r\n.\r\n"));
    input.extend_from_slice(
        b"MAIL FROM:<>\r\nRCPT TO:<5@d.test>\r\nBDAT 4\r\nab\r\rBDAT 3 LAST\r\n\nc\n",
    );
    input.extend_from_slice(
        b"MAIL FROM:<>\r\nRCPT TO:<6@d.test>\r\nBDAT 4\r\nab\r\nBDAT 3 LAST\r\ncd\r",
    );
    input.extend(vec![b'x'; 600]);
    input.extend_from_slice(b"\r\nNOOP \xff\r\nFROB\r\nQUIT\r\nNOOP\r\n");
    input
}

/// [`busy_session`]'s limits: the long line must be too long.
fn busy_config() -> ServerConfig {
    ServerConfig {
        max_line_len: 512,
        ..config()
    }
}

#[test]
fn busy_session_outcome() {
    // Alternate answers: questions 0, 2, 4… are accepted, 1, 3, 5… refused.
    let run = run_with(busy_config(), &busy_session(), Answers::Alternate);
    assert_eq!(
        run.codes()[2..],
        [
            "250 2.1.0",
            "250 2.1.5",
            "550 5.1.1",
            "250 2.1.5",
            "354",
            "451 4.3.0", // the message is refused by the driver
            "250 2.1.0",
            "250 2.1.5",
            "354",
            "550 5.6.0", // the smuggling attempt
            "250 2.1.0",
            "550 5.1.1",
            "554 5.5.1",
            "554 5.5.1", // BDAT without recipients: chunks consumed
            "250 2.1.0",
            "250 2.1.5",
            "250 2.0.0",
            "550 5.6.0", // BDAT message ending in a bare CR
            "500 5.5.2",
            "500 5.5.2",
            "500 5.5.1",
            "221 2.0.0",
        ]
    );
    assert_eq!(run.messages().len(), 1);
}

#[test]
fn busy_session_is_split_invariant() {
    assert_split_invariant(busy_config(), &busy_session(), Answers::Alternate);
    assert_split_invariant(busy_config(), &busy_session(), Answers::Accept);
}

#[test]
fn data_and_bdat_transactions_are_split_invariant() {
    let input = [
        &b"EHLO c\r\n"[..],
        &transaction("c@d.test", "Subject: s\r\n\r\n..a\r\nb\r\n.\r\n"),
        b"MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nBDAT 3\r\na\r\nBDAT 2\r\nb\rBDAT 1 LAST\r\n\n",
        b"QUIT\r\n",
    ]
    .concat();
    assert_split_invariant(config(), &input, Answers::Accept);
    let run = run(&input);
    assert_eq!(run.messages()[1].data, b"a\r\nb\r\n");
}
