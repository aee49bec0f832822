//! Session-wide behaviour: case, line endings, unknown and malformed lines,
//! the line limit, error counting, shutdown and timeout, answers out of
//! turn, and pipelining (RFC 2449 §6.6) with outcomes that never depend on
//! how the input was cut.

use std::sync::Arc;

use super::*;
use crate::pop3::Pop3Session;

#[test]
fn verbs_are_case_insensitive() {
    let run = run("user alice\r\npAsS secret\r\nstat\r\nlist 1\r\nnoop\r\nQuit\r\n");
    assert_eq!(
        run.after_login(),
        [
            "+OK 5 90",
            "+OK 1 28",
            "+OK",
            "+OK pop.test POP3 server signing off (5 messages left)"
        ]
    );
    assert!(run.0.closed);
}

#[test]
fn a_bare_lf_ends_a_command_line() {
    let run = run("USER alice\nPASS secret\nSTAT\r\n");
    assert_eq!(run.after_login(), ["+OK 5 90"]);
}

#[test]
fn unknown_commands() {
    let run = run("FROB\r\n\r\nAPOP alice 0123\r\n STAT\r\nSTATS\r\nCAPA\r\n");
    assert_eq!(
        run.statuses()[1..],
        [
            "-ERR unknown command",
            "-ERR unknown command",
            "-ERR unknown command",
            "-ERR unknown command",
            "-ERR unknown command",
            "+OK capability list follows"
        ]
    );
}

#[test]
fn command_line_not_utf8() {
    let run = run_with(config(), b"USER \xff\r\nCAPA\xc3\r\nQUIT\r\n", &ACCEPT);
    assert_eq!(
        run.statuses()[1..],
        [
            "-ERR command line is not valid UTF-8",
            "-ERR command line is not valid UTF-8",
            "+OK pop.test POP3 server signing off"
        ]
    );
}

#[test]
fn line_length_limit_counts_crlf() {
    let config = Pop3Config {
        max_line_len: 13,
        ..config()
    };
    // "PASS secret\r\n" is 13 bytes; "USER alicexy\r\n" is 14.
    let input = b"USER alicexy\r\nUSER 12345678901234567890\r\nUSER alice\r\nPASS secret\r\n";
    let run = run_with(config, input, &ACCEPT);
    assert_eq!(
        run.statuses()[1..],
        [
            "-ERR line too long",
            "-ERR line too long",
            "+OK send PASS",
            "+OK maildrop has 5 messages (90 octets)"
        ]
    );
}

#[test]
fn the_default_line_limit_is_rfc_2449s() {
    let ok = format!("USER {}\r\n", "a".repeat(255 - 7));
    let long = format!("USER {}\r\n", "a".repeat(256 - 7));
    let run = run(&format!("{ok}{long}"));
    assert_eq!(run.statuses()[1..], ["+OK send PASS", "-ERR line too long"]);
}

#[test]
fn a_long_line_is_never_buffered() {
    let mut session = Pop3Session::new(Arc::new(config()));
    let junk = vec![b'x'; 100_000];
    for _ in 0..10 {
        assert_eq!(session.feed(&junk), junk.len());
    }
    assert_eq!(session.feed(b"\r\nCAPA\r\n"), 8);
    assert!(session.output().ends_with(b"-ERR line too long\r\n+OK capability list follows\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\nUSER\r\nSASL PLAIN LOGIN\r\nSTLS\r\nIMPLEMENTATION ringpost\r\n.\r\n"));
    assert!(
        format!("{session:?}").len() < 2000,
        "the session kept the junk"
    );
}

#[test]
fn the_autologout_timer_starts_when_the_answer_is_out() {
    use crate::Session;
    use std::time::{Duration, Instant};
    let config = Pop3Config {
        login_timeout: Duration::from_secs(3600),
        ..config()
    };
    let mut session = Pop3Session::new(Arc::new(config));
    let t0 = Instant::now();
    session.handle_timeout(t0);
    assert_eq!(session.receive(t0, b"CAPA\r\n"), 6);
    assert_eq!(session.poll_timeout(), Some(t0 + Duration::from_secs(600)));
    // The answer took 100 s to go out (a slow reader): ten minutes from then.
    session.clear_output();
    session.output_written(t0 + Duration::from_secs(100));
    assert_eq!(session.poll_timeout(), Some(t0 + Duration::from_secs(700)));
    session.handle_timeout(t0 + Duration::from_secs(650));
    assert!(!session.is_closed());
}

#[test]
fn pipelined_commands_wait_while_their_answers_pile_up() {
    // 2,000 CAPAs in one read answer with about 260 KB: the session takes
    // commands only until 64 KiB of answers wait, and the rest once they
    // are written.
    let mut session = Pop3Session::new(Arc::new(config()));
    session.clear_output();
    let input = "CAPA\r\n".repeat(2000);
    let mut fed = 0;
    let mut written = 0;
    let mut rounds = 0;
    while fed < input.len() {
        let used = session.feed(&input.as_bytes()[fed..]);
        assert!(used > 0, "stuck at {fed}");
        assert!(
            session.output().len() < crate::pop3::OUTPUT_HIGH_WATER + 200,
            "{} bytes waiting",
            session.output().len()
        );
        fed += used;
        written += session.output().len();
        session.clear_output();
        rounds += 1;
    }
    let one = written / 2000;
    assert_eq!(written, one * 2000, "every CAPA answered once");
    assert!(rounds >= 4, "{rounds} rounds");
}

#[test]
fn too_many_errors_close_the_session() {
    let config = Pop3Config {
        max_errors: 3,
        ..config()
    };
    let run = run_with(
        config,
        b"FROB\r\nCAPA\r\nSTAT\r\nAUTH CRAM-MD5\r\nNOOP x\r\nCAPA\r\n",
        &ACCEPT,
    );
    assert_eq!(
        run.statuses()[1..],
        [
            "-ERR unknown command",
            "+OK capability list follows",
            "-ERR command not valid in this state",
            "-ERR unsupported SASL mechanism",
            "-ERR command not valid in this state",
            "-ERR pop.test too many errors, closing",
        ]
    );
    assert!(run.0.closed);
}

#[test]
fn refusals_do_not_count() {
    let config = Pop3Config {
        max_errors: 1,
        stls_available: false,
        ..config()
    };
    let input = format!(
        "AUTH CRAM-MD5\r\nSTLS\r\nAUTH PLAIN\r\n*\r\n{LOGIN}RETR 9\r\nDELE 1\r\nDELE 1\r\nLIST 0\r\nNOOP\r\n"
    );
    let run = run_with(config, input.as_bytes(), &ACCEPT);
    assert_eq!(run.statuses().last().unwrap(), &"+OK");
    assert!(!run.0.closed);
}

#[test]
fn shutdown_and_timeout_close_without_commit() {
    type Close = fn(&mut Pop3Session);
    let cases: [(Close, &[u8]); 2] = [
        (
            Pop3Session::shutdown,
            b"-ERR [SYS/TEMP] pop.test shutting down\r\n",
        ),
        (
            Pop3Session::timed_out,
            b"-ERR pop.test autologout, idle too long\r\n",
        ),
    ];
    for (close, expected) in cases {
        let mut session = Pop3Session::new(Arc::new(config()));
        let input = format!("{LOGIN}DELE 1\r\nRETR 2\r\n");
        let mut used = session.feed(input.as_bytes());
        assert!(session.poll_event().is_some());
        session.auth_succeeded(check::maildrop(check::MESSAGES));
        used += session.feed(&input.as_bytes()[used..]);
        assert_eq!(used, input.len());
        assert_eq!(
            session.poll_event(),
            Some(Event::Retrieve {
                number: 2,
                top_lines: None
            })
        );
        assert!(session.in_transaction());
        session.clear_output();
        close(&mut session);
        assert_eq!(session.output(), expected);
        assert!(session.is_closed() && !session.in_transaction());
        assert_eq!(session.poll_event(), None);
        // Late answers and input are ignored; closing twice says nothing more.
        session.message(b"late");
        session.committed();
        close(&mut session);
        session.timed_out();
        assert_eq!(session.feed(b"QUIT\r\n"), 0);
        assert_eq!(session.poll_event(), None, "no Commit after close");
        assert_eq!(session.output(), expected);
    }
}

#[test]
fn a_pending_question_dies_with_the_session() {
    let mut session = Pop3Session::new(Arc::new(config()));
    assert_eq!(session.feed(LOGIN.as_bytes()), LOGIN.len());
    session.shutdown();
    assert_eq!(session.poll_event(), None);
    session.auth_succeeded(Vec::new());
    assert!(!session.in_transaction());
}

#[test]
fn answers_out_of_turn_are_ignored() {
    let mut session = Pop3Session::new(Arc::new(config()));
    session.clear_output();
    session.auth_succeeded(check::maildrop(check::MESSAGES));
    session.auth_failed();
    session.maildrop_locked();
    session.auth_unavailable();
    session.message(b"x");
    session.message_missing();
    session.committed();
    session.commit_failed();
    session.tls_established();
    assert!(session.output().is_empty());
    assert!(!session.in_transaction() && !session.is_closed());
    // An answer to a different question is ignored too.
    assert_eq!(session.feed(LOGIN.as_bytes()), LOGIN.len());
    assert!(session.poll_event().is_some());
    session.clear_output();
    session.message(b"x");
    session.committed();
    session.tls_established();
    assert!(session.output().is_empty());
    assert_eq!(
        session.feed(b"STAT\r\n"),
        0,
        "still waiting for the login answer"
    );
}

#[test]
fn feed_stops_at_each_question_and_resumes_after_the_answer() {
    let mut session = Pop3Session::new(Arc::new(config()));
    let input = format!("{LOGIN}RETR 1\r\nDELE 1\r\nQUIT\r\nNOOP\r\n");
    let input = input.as_bytes();
    let mut pos = session.feed(input);
    assert_eq!(pos, LOGIN.len());
    assert!(matches!(
        session.poll_event(),
        Some(Event::Authenticate { .. })
    ));
    session.auth_succeeded(check::maildrop(check::MESSAGES));
    pos += session.feed(&input[pos..]);
    assert_eq!(
        session.poll_event(),
        Some(Event::Retrieve {
            number: 1,
            top_lines: None
        })
    );
    session.clear_output();
    session.message(check::MESSAGES[0]);
    pos += session.feed(&input[pos..]);
    assert_eq!(
        session.poll_event(),
        Some(Event::Commit { deleted: vec![1] })
    );
    assert_eq!(&input[pos..], b"NOOP\r\n");
    session.committed();
    assert_eq!(session.feed(&input[pos..]), 0);
    assert!(session.is_closed());
    assert_eq!(
        session.output(),
        &b"+OK 28 octets\r\nSubject: one\r\n\r\nbody\r\n..dot\r\n.\r\n+OK message 1 deleted\r\n\
           +OK pop.test POP3 server signing off (4 messages left)\r\n"[..]
    );
}

/// A session that touches most paths: STLS, a refused login, AUTH PLAIN by
/// continuation, listings, retrievals served and missing, TOP, marks, RSET,
/// errors, a long line, bad UTF-8, QUIT with input after it.
fn busy_session() -> Vec<u8> {
    let mut input = b"CAPA\r\nSTLS\r\nUSER alice\r\nPASS wrong\r\n".to_vec();
    input.extend_from_slice(b"AUTH PLAIN\r\nAGFsaWNlAHB3\r\n");
    input.extend_from_slice(b"STAT\r\nLIST\r\nUIDL 2\r\nRETR 1\r\nRETR 2\r\nTOP 5 1\r\n");
    input.extend_from_slice(b"DELE 2\r\nDELE 2\r\nRSET\r\nDELE 5\r\nFROB\r\n");
    input.extend(vec![b'x'; 300]);
    input.extend_from_slice(b"\r\nNOOP \xff\r\nQUIT\r\nNOOP\r\n");
    input
}

#[test]
fn busy_session_outcome() {
    // ALTERNATE answers question 0, 1, 2… yes, no, yes, locked, yes, no, yes.
    let run = run_with(config(), &busy_session(), &ALTERNATE);
    assert_eq!(
        run.kinds()[1..],
        [
            "+OK",             // CAPA
            "+OK",             // STLS (question 0)
            "+OK",             // USER
            "-ERR [AUTH]",     // PASS (1: no)
            "+",               // AUTH PLAIN
            "+OK",             // logged in (2: yes)
            "+OK",             // STAT
            "+OK",             // LIST
            "+OK",             // UIDL 2
            "-ERR [SYS/TEMP]", // RETR 1 (3: locked, a no here)
            "+OK",             // RETR 2 (4: yes)
            "-ERR [SYS/TEMP]", // TOP 5 1 (5: no)
            "+OK",             // DELE 2
            "-ERR",            // DELE 2 again
            "+OK",             // RSET
            "+OK",             // DELE 5
            "-ERR",            // FROB
            "-ERR",            // the long line
            "-ERR",            // not UTF-8
            "+OK",             // QUIT (6: committed)
        ]
    );
    assert_eq!(
        run.0.events.last().unwrap(),
        &Event::Commit { deleted: vec![5] }
    );
    assert_eq!(
        run.lines().last().unwrap(),
        &"+OK pop.test POP3 server signing off (4 messages left)"
    );
    assert!(run.0.closed);
}

#[test]
fn busy_session_is_split_invariant_with_any_answers() {
    run_with(config(), &busy_session(), &ACCEPT);
    run_with(config(), &busy_session(), &always(Answer::No));
    run_with(config(), &busy_session(), &always(Answer::Locked));
}
