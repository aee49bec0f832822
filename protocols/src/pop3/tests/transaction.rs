//! The TRANSACTION and UPDATE states: STAT, LIST, UIDL, RETR, TOP, DELE,
//! RSET, NOOP, QUIT and the commit, with every refusal.

use std::sync::Arc;

use super::*;
use crate::pop3::Pop3Session;

fn retrieve(number: usize, top_lines: Option<usize>) -> Event {
    Event::Retrieve { number, top_lines }
}

/// The lines after the greeting and login.
fn lines_after_login(run: &Run) -> Vec<&str> {
    run.lines().split_off(3)
}

#[test]
fn stat_counts_the_maildrop() {
    assert_eq!(logged_in("STAT\r\n").after_login(), ["+OK 5 90"]);
}

#[test]
fn list_without_and_with_argument() {
    let run = logged_in("LIST\r\nLIST 2\r\nlist 05\r\n");
    assert_eq!(
        lines_after_login(&run),
        [
            "+OK 5 messages (90 octets)",
            "1 28",
            "2 29",
            "3 12",
            "4 0",
            "5 21",
            ".",
            "+OK 2 29",
            "+OK 5 21"
        ]
    );
}

#[test]
fn uidl_without_and_with_argument() {
    let run = logged_in("UIDL\r\nUIDL 3\r\n");
    assert_eq!(
        lines_after_login(&run),
        [
            "+OK unique-id listing follows",
            "1 uid-1",
            "2 uid-2",
            "3 uid-3",
            "4 uid-4",
            "5 uid-5",
            ".",
            "+OK 3 uid-3"
        ]
    );
}

#[test]
fn numbers_out_of_range() {
    let run = logged_in(concat!(
        "LIST 0\r\nLIST 6\r\nUIDL 0\r\nUIDL 6\r\nRETR 0\r\nRETR 6\r\nTOP 6 1\r\nDELE 0\r\n",
        "DELE 99999999999999999999999999\r\n",
    ));
    assert_eq!(run.after_login(), ["-ERR no such message"; 9]);
    assert_eq!(run.0.events.len(), 1, "only the login was asked");
}

#[test]
fn argument_syntax() {
    let run = logged_in(concat!(
        "LIST x\r\nLIST 1 2\r\nUIDL -1\r\nRETR\r\nRETR 1 2\r\nDELE\r\nTOP 1\r\nTOP 1 x\r\n",
        "STAT 1\r\nNOOP 1\r\nRSET x\r\nQUIT x\r\n"
    ));
    assert_eq!(
        run.after_login(),
        [
            "-ERR syntax: message number expected",
            "-ERR syntax: message number expected",
            "-ERR syntax: message number expected",
            "-ERR syntax: message number expected",
            "-ERR syntax: message number expected",
            "-ERR syntax: message number expected",
            "-ERR syntax: TOP msg n",
            "-ERR syntax: TOP msg n",
            "-ERR syntax: command takes no argument",
            "-ERR syntax: command takes no argument",
            "-ERR pop.test too many errors, closing",
        ]
    );
    assert!(run.0.closed, "ten counted errors close the session");
}

#[test]
fn retr_sends_the_message_stuffed() {
    let run = logged_in("RETR 1\r\nRETR 2\r\nRETR 3\r\nRETR 4\r\nRETR 5\r\n");
    assert_eq!(
        lines_after_login(&run),
        [
            "+OK 28 octets",
            "Subject: one",
            "",
            "body",
            "..dot",
            ".",
            "+OK 29 octets",
            "Subject: two",
            "X: y",
            "",
            "bare",
            "lf",
            "..",
            ".",
            "+OK 12 octets",
            "Header: only",
            ".",
            "+OK 0 octets",
            ".",
            "+OK 21 octets",
            "A: b",
            "",
            "line",
            "",
            "...",
            "end",
            ".",
        ]
    );
    let asked: Vec<_> = (1..=5).map(|n| retrieve(n, None)).collect();
    assert_eq!(run.0.events[1..], asked);
}

#[test]
fn top_sends_header_and_n_lines() {
    let run = logged_in("TOP 1 0\r\nTOP 2 1\r\nTOP 3 5\r\nTOP 5 99999999999999999999999\r\n");
    assert_eq!(
        lines_after_login(&run),
        [
            "+OK top of message follows",
            "Subject: one",
            "",
            ".",
            "+OK top of message follows",
            "Subject: two",
            "X: y",
            "",
            "bare",
            ".",
            "+OK top of message follows",
            "Header: only",
            ".",
            "+OK top of message follows",
            "A: b",
            "",
            "line",
            "",
            "...",
            "end",
            ".",
        ]
    );
    assert_eq!(
        run.0.events[1..],
        [
            retrieve(1, Some(0)),
            retrieve(2, Some(1)),
            retrieve(3, Some(5)),
            retrieve(5, Some(usize::MAX))
        ]
    );
}

#[test]
fn a_message_the_store_cannot_serve() {
    let driver = Driver {
        answers: &[Answer::Yes, Answer::No],
        ..ACCEPT
    };
    let run = run_with(
        config(),
        format!("{LOGIN}RETR 1\r\nTOP 2 0\r\nNOOP\r\n").as_bytes(),
        &driver,
    );
    assert_eq!(
        run.after_login(),
        [
            "-ERR [SYS/TEMP] message unavailable",
            "+OK top of message follows",
            "+OK"
        ]
    );
}

#[test]
fn dele_marks_and_hides() {
    let run = logged_in(
        "DELE 1\r\nDELE 1\r\nDELE 3\r\nSTAT\r\nLIST\r\nUIDL\r\nLIST 1\r\nUIDL 1\r\nRETR 1\r\nTOP 3 0\r\n",
    );
    assert_eq!(
        lines_after_login(&run),
        [
            "+OK message 1 deleted",
            "-ERR message 1 already deleted",
            "+OK message 3 deleted",
            "+OK 3 50",
            "+OK 3 messages (50 octets)",
            "2 29",
            "4 0",
            "5 21",
            ".",
            "+OK unique-id listing follows",
            "2 uid-2",
            "4 uid-4",
            "5 uid-5",
            ".",
            "-ERR no such message",
            "-ERR no such message",
            "-ERR no such message",
            "-ERR no such message",
        ]
    );
    assert_eq!(run.0.events.len(), 1);
}

#[test]
fn rset_unmarks_and_noop_does_nothing() {
    let run = logged_in("DELE 1\r\nDELE 2\r\nRSET\r\nSTAT\r\nNOOP\r\nRETR 1\r\n");
    assert_eq!(
        run.after_login(),
        [
            "+OK message 1 deleted",
            "+OK message 2 deleted",
            "+OK maildrop has 5 messages (90 octets)",
            "+OK 5 90",
            "+OK",
            "+OK 28 octets"
        ]
    );
}

#[test]
fn quit_commits_the_marks() {
    let run = logged_in("DELE 4\r\nDELE 2\r\nQUIT\r\nNOOP\r\n");
    assert_eq!(
        run.0.events[1],
        Event::Commit {
            deleted: vec![2, 4]
        }
    );
    assert_eq!(
        run.lines().last().unwrap(),
        &"+OK pop.test POP3 server signing off (3 messages left)"
    );
    assert!(run.0.closed);
    assert_eq!(
        run.0.consumed,
        LOGIN.len() + "DELE 4\r\nDELE 2\r\nQUIT\r\n".len()
    );
}

#[test]
fn quit_with_nothing_or_everything_deleted() {
    let run = logged_in("QUIT\r\n");
    assert_eq!(run.0.events[1], Event::Commit { deleted: vec![] });
    assert_eq!(
        run.lines().last().unwrap(),
        &"+OK pop.test POP3 server signing off (5 messages left)"
    );
    let run = logged_in("DELE 1\r\nDELE 2\r\nDELE 3\r\nDELE 4\r\nDELE 5\r\nQUIT\r\n");
    assert_eq!(
        run.0.events[1],
        Event::Commit {
            deleted: vec![1, 2, 3, 4, 5]
        }
    );
    assert_eq!(
        run.lines().last().unwrap(),
        &"+OK pop.test POP3 server signing off (maildrop empty)"
    );
}

#[test]
fn a_failed_commit_still_closes() {
    let driver = Driver {
        answers: &[Answer::Yes, Answer::No],
        ..ACCEPT
    };
    let run = run_with(
        config(),
        format!("{LOGIN}DELE 1\r\nQUIT\r\n").as_bytes(),
        &driver,
    );
    assert_eq!(
        run.lines().last().unwrap(),
        &"-ERR [SYS/TEMP] some deleted messages not removed"
    );
    assert!(run.0.closed);
}

#[test]
fn a_dropped_connection_commits_nothing() {
    let run = logged_in("DELE 1\r\nDELE 2\r\nQU");
    assert_eq!(run.0.events.len(), 1);
    assert!(!run.0.closed);
}

#[test]
fn authorization_commands_after_login() {
    let run = logged_in("USER bob\r\nPASS x\r\nAUTH PLAIN AGFsaWNlAHB3\r\nAUTH\r\nSTLS\r\n");
    assert_eq!(
        run.after_login(),
        ["-ERR command not valid in this state"; 5]
    );
    assert_eq!(run.0.events.len(), 1);
}

#[test]
fn an_empty_maildrop() {
    let mut session = Pop3Session::new(Arc::new(config()));
    assert_eq!(session.feed(LOGIN.as_bytes()), LOGIN.len());
    assert!(session.poll_event().is_some());
    session.auth_succeeded(Vec::new());
    assert!(session.in_transaction());
    session.clear_output();
    let input = b"STAT\r\nLIST\r\nUIDL\r\nLIST 1\r\nRETR 1\r\nQUIT\r\n";
    assert_eq!(session.feed(input), input.len());
    assert_eq!(
        session.output(),
        &b"+OK 0 0\r\n+OK 0 messages (0 octets)\r\n.\r\n+OK unique-id listing follows\r\n.\r\n\
           -ERR no such message\r\n-ERR no such message\r\n"[..]
    );
    assert_eq!(
        session.poll_event(),
        Some(Event::Commit { deleted: vec![] })
    );
    assert!(!session.in_transaction());
    session.clear_output();
    session.committed();
    assert_eq!(
        session.output(),
        b"+OK pop.test POP3 server signing off (maildrop empty)\r\n"
    );
    assert!(session.is_closed());
}
