//! Session-level commands: greeting, EHLO/HELO, RSET, NOOP, QUIT, VRFY, EXPN,
//! HELP, unimplemented and unknown verbs, line limits, error counting,
//! shutdown and timeout.

use std::sync::Arc;

use super::*;
use crate::smtp::ServerSession;

#[test]
fn greeting_is_queued_on_new() {
    let session = ServerSession::new(Arc::new(config()));
    assert_eq!(session.output(), b"220 mx.test ESMTP ringpost\r\n");
    assert!(!session.is_closed() && !session.in_transaction() && !session.in_data());
}

#[test]
fn ehlo_lists_the_extensions() {
    let run = run(b"EHLO client.test\r\n");
    assert_eq!(
        run.lines()[1..],
        [
            "250-mx.test",
            "250-PIPELINING",
            "250-SIZE 52428800",
            "250-8BITMIME",
            "250-SMTPUTF8",
            "250-CHUNKING",
            "250-ENHANCEDSTATUSCODES",
            "250-DSN",
            // The test driver allows plaintext passwords.
            "250 AUTH PLAIN LOGIN",
        ]
    );
}

#[test]
fn helo_gets_a_plain_250() {
    assert_eq!(run(b"HELO client.test\r\n").lines()[1..], ["250 mx.test"]);
}

#[test]
fn ehlo_and_helo_need_a_domain() {
    assert_eq!(
        run(b"EHLO\r\nHELO \r\n").codes()[1..],
        ["501 5.5.4", "501 5.5.4"]
    );
    // A name in a Windows code page is taken, its 8-bit bytes as `?`; any
    // other command that is not UTF-8 is not.
    let windows = run(b"EHLO M\xfcller-PC\r\nMAIL FROM:<\xe9@x.test>\r\n");
    assert_eq!(
        windows.codes()[1..],
        ["250", "500 5.5.2"],
        "{:?}",
        windows.lines()
    );
    // Nor is a name with control characters one (it would reach headers).
    assert_eq!(
        run(b"EHLO a\x00b\r\nHELO x\x1b[2J\r\nEHLO a\tb\r\n").codes()[1..],
        ["501 5.5.4", "501 5.5.4", "501 5.5.4"]
    );
}

#[test]
fn ehlo_and_helo_reset_the_transaction() {
    for hello in ["EHLO again", "HELO again"] {
        let input = format!(
            "MAIL FROM:<a@b.test>\r\n{hello}\r\nRCPT TO:<c@d.test>\r\nMAIL FROM:<a@b.test>\r\n"
        );
        assert_eq!(
            ehlo_codes(input.as_bytes()),
            ["250 2.1.0", "250", "503 5.5.1", "250 2.1.0"],
            "{hello}"
        );
    }
}

#[test]
fn rset_resets_the_transaction_and_keeps_helo() {
    assert_eq!(
        ehlo_codes(b"MAIL FROM:<a@b.test>\r\nRSET\r\nRCPT TO:<c@d.test>\r\nMAIL FROM:<a@b.test>\r\nRSET now\r\n"),
        ["250 2.1.0", "250 2.0.0", "503 5.5.1", "250 2.1.0", "501 5.5.4"]
    );
}

#[test]
fn informational_commands() {
    assert_eq!(
        ehlo_codes(
            b"NOOP\r\nNOOP with text\r\nHELP\r\nHELP MAIL\r\nVRFY user\r\nVRFY\r\nEXPN list\r\n"
        ),
        [
            "250 2.0.0",
            "250 2.0.0",
            "214 2.0.0",
            "214 2.0.0",
            "252 2.0.0",
            "501 5.5.4",
            "502 5.5.1"
        ]
    );
}

#[test]
fn unknown_verbs_get_500() {
    assert_eq!(
        ehlo_codes(b"FROB\r\n\r\nMAILFROM:<a@b.test>\r\n"),
        ["500 5.5.1", "500 5.5.1", "500 5.5.1"]
    );
}

#[test]
fn known_verbs_not_offered_get_502() {
    assert_eq!(
        ehlo_codes(b"TURN\r\nETRN example.org\r\natrn\r\nSEND FROM:<a@b.test>\r\nSOML FROM:<a@b.test>\r\nSAML FROM:<a@b.test>\r\n"),
        ["502 5.5.1"; 6]
    );
}

#[test]
fn verbs_are_case_insensitive() {
    assert_eq!(
        run(b"ehlo x\r\nmail from:<a@b.test>\r\nRcPt tO:<c@d.test>\r\ndata\r\n.\r\nrset\r\nnoop\r\nquit\r\n").codes()[2..],
        ["250 2.1.0", "250 2.1.5", "354", "250 2.0.0", "250 2.0.0", "250 2.0.0", "221 2.0.0"]
    );
}

#[test]
fn a_bare_lf_ends_a_command_line() {
    assert_eq!(
        ehlo_codes(b"NOOP\nMAIL FROM:<a@b.test>\nRSET\r\n"),
        ["250 2.0.0", "250 2.1.0", "250 2.0.0"]
    );
}

#[test]
fn quit_closes_and_nothing_after_it_runs() {
    let input = b"EHLO c\r\nQUIT\r\nMAIL FROM:<a@b.test>\r\nNOOP\r\n";
    let run = run(input);
    assert_eq!(run.lines()[run.lines().len() - 1], "221 2.0.0 Bye");
    assert_eq!(run.codes().len(), 3);
    assert!(run.0.closed);
    assert_eq!(run.0.consumed, b"EHLO c\r\nQUIT\r\n".len());
}

#[test]
fn quit_takes_no_argument() {
    let run = ehlo_run(b"QUIT now\r\n");
    assert_eq!(run.after_ehlo(), ["501 5.5.4"]);
    assert!(!run.0.closed);
}

#[test]
fn command_line_not_utf8_gets_500() {
    assert_eq!(
        ehlo_codes(b"MAIL FROM:<\xff@b.test>\r\nNOOP\xc3\r\nNOOP\r\n"),
        ["500 5.5.2", "500 5.5.2", "250 2.0.0"]
    );
}

#[test]
fn line_length_limit_counts_crlf() {
    let config = ServerConfig {
        max_line_len: 10,
        ..config()
    };
    // "NOOP 1234\r\n" is 11 bytes; "NOOP 123\r\n" is 10.
    let run = run_with(
        config,
        b"NOOP 123\r\nNOOP 1234\r\nNOOP 12345678901234567890\r\nNOOP\r\n",
        Answers::Accept,
    );
    assert_eq!(
        run.codes()[1..],
        ["250 2.0.0", "500 5.5.2", "500 5.5.2", "250 2.0.0"]
    );
    assert_eq!(run.lines()[2], "500 5.5.2 Line too long");
}

#[test]
fn a_long_line_is_never_buffered() {
    let mut session = ServerSession::new(Arc::new(ServerConfig {
        max_line_len: 64,
        ..config()
    }));
    let junk = vec![b'x'; 100_000];
    for _ in 0..10 {
        assert_eq!(session.feed(&junk), junk.len());
    }
    assert_eq!(session.feed(b"\r\nNOOP\r\n"), 8);
    assert!(session
        .output()
        .ends_with(b"500 5.5.2 Line too long\r\n250 2.0.0 Ok\r\n"));
    assert!(
        format!("{session:?}").len() < 2000,
        "the session kept the junk"
    );
}

#[test]
fn too_many_errors_close_the_session() {
    let config = ServerConfig {
        max_errors: 3,
        ..config()
    };
    let run = run_with(
        config,
        b"FROB\r\nNOOP\r\nMAIL FROM:<a@b.test>\r\nDATA x\r\nFROB\r\nNOOP\r\n",
        Answers::Accept,
    );
    assert_eq!(
        run.codes()[1..],
        [
            "500 5.5.1",
            "250 2.0.0",
            "503 5.5.1",
            "501 5.5.4",
            "421 4.7.0"
        ]
    );
    assert_eq!(
        run.lines().last().unwrap(),
        &"421 4.7.0 mx.test Too many errors"
    );
    assert!(run.0.closed);
}

#[test]
fn policy_refusals_do_not_count_as_errors() {
    let config = ServerConfig {
        max_errors: 1,
        max_message_size: 10,
        ..config()
    };
    let run = run_with(
        config,
        b"EHLO c\r\nMAIL FROM:<a@b.test> SIZE=99\r\nSTARTTLS\r\nNOOP\r\n",
        Answers::Accept,
    );
    assert_eq!(run.codes()[2..], ["552 5.3.4", "502 5.5.1", "250 2.0.0"]);
}

#[test]
fn shutdown_and_timeout_close_with_421() {
    type Close = fn(&mut ServerSession);
    // Shutdown waits for a transaction in progress (see `deadlines.rs`);
    // outside one it closes at once.
    let mut session = ServerSession::new(Arc::new(config()));
    assert_eq!(session.feed(b"EHLO c\r\n"), 8);
    session.clear_output();
    session.shutdown();
    assert_eq!(
        session.output(),
        b"421 4.3.2 mx.test Service shutting down\r\n"
    );
    assert!(session.is_closed());
    let cases: [(Close, &[u8]); 1] = [(ServerSession::timed_out, b"421 4.4.2 mx.test Timeout\r\n")];
    for (close, expected) in cases {
        let mut session = ServerSession::new(Arc::new(config()));
        let input = b"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test>\r\n";
        assert_eq!(session.feed(input), input.len());
        assert!(session.in_transaction());
        session.clear_output();
        close(&mut session);
        assert_eq!(session.output(), expected);
        assert!(session.is_closed() && !session.in_transaction());
        assert_eq!(
            session.poll_event(),
            None,
            "a pending question dies with the session"
        );
        // Late answers and input are ignored; closing twice says nothing more.
        session.accept_recipient();
        close(&mut session);
        assert_eq!(session.feed(b"NOOP\r\n"), 0);
        assert_eq!(session.output(), expected);
    }
}
