//! STLS (RFC 2595): the event, what TLS changes (CAPA, plaintext logins,
//! forgotten USER), and plaintext pipelined after STLS, which must never run.

use std::sync::Arc;

use super::*;
use crate::pop3::Pop3Session;

const CAPA_BEFORE_LOGIN: [&str; 11] = [
    "+OK capability list follows",
    "TOP",
    "UIDL",
    "RESP-CODES",
    "AUTH-RESP-CODE",
    "PIPELINING",
    "USER",
    "SASL PLAIN LOGIN",
    "STLS",
    "IMPLEMENTATION ringpost",
    ".",
];

#[test]
fn capa_before_and_after_tls_and_login() {
    let run = run(&format!("CAPA\r\nSTLS\r\nCAPA\r\n{LOGIN}CAPA\r\n"));
    let lines = run.lines();
    assert_eq!(lines[1..12], CAPA_BEFORE_LOGIN);
    assert_eq!(lines[12], "+OK begin TLS negotiation");
    let after_tls: Vec<_> = CAPA_BEFORE_LOGIN
        .into_iter()
        .filter(|l| *l != "STLS")
        .collect();
    assert_eq!(lines[13..23], after_tls);
    let after_login: Vec<_> = after_tls
        .into_iter()
        .filter(|l| !["USER", "SASL PLAIN LOGIN"].contains(l))
        .collect();
    assert_eq!(lines[25..], after_login);
    assert_eq!(run.0.events[0], Event::StartTls);
}

#[test]
fn capa_without_stls_offered_or_plaintext_allowed() {
    let config = Pop3Config {
        stls_available: false,
        plaintext_auth_allowed: false,
        ..config()
    };
    let run = run_with(config, b"CAPA\r\n", &ACCEPT);
    assert_eq!(
        run.lines()[1..],
        [
            "+OK capability list follows",
            "TOP",
            "UIDL",
            "RESP-CODES",
            "AUTH-RESP-CODE",
            "PIPELINING",
            "IMPLEMENTATION ringpost",
            ".",
        ]
    );
}

#[test]
fn tls_lifts_the_plaintext_ban() {
    let config = Pop3Config {
        plaintext_auth_allowed: false,
        ..config()
    };
    let input = format!("USER alice\r\nSTLS\r\n{LOGIN}STAT\r\n");
    let run = run_with(config, input.as_bytes(), &ACCEPT);
    assert_eq!(
        run.kinds()[1..],
        ["-ERR [AUTH]", "+OK", "+OK", "+OK", "+OK"]
    );
    assert_eq!(run.0.events.len(), 2);
}

#[test]
fn tls_forgets_the_user_name() {
    // RFC 2595 §4: knowledge from before TLS is discarded.
    let run = run("USER alice\r\nSTLS\r\nPASS secret\r\n");
    assert_eq!(run.statuses().last().unwrap(), &"-ERR send USER first");
    assert_eq!(run.0.events, [Event::StartTls]);
}

#[test]
fn stls_refused_when_not_offered_or_already_on() {
    let config = Pop3Config {
        stls_available: false,
        max_errors: 1,
        ..config()
    };
    let refused = run_with(config, b"STLS\r\nSTLS\r\nCAPA\r\n", &ACCEPT);
    assert_eq!(
        refused.statuses()[1..],
        [
            "-ERR STLS not available",
            "-ERR STLS not available",
            "+OK capability list follows"
        ]
    );
    let run = run("STLS\r\nSTLS\r\nSTLS x\r\n");
    assert_eq!(
        run.statuses()[1..],
        [
            "+OK begin TLS negotiation",
            "-ERR STLS not available",
            "-ERR syntax: command takes no argument"
        ]
    );
    assert_eq!(run.0.events, [Event::StartTls]);
}

#[test]
fn plaintext_after_stls_is_dropped() {
    let mut session = Pop3Session::new(Arc::new(config()));
    session.clear_output();
    let input = b"STLS\r\nUSER evil\r\nPASS evil\r\nQU";
    assert_eq!(session.feed(input), 6, "stops right after STLS");
    assert_eq!(session.output(), b"+OK begin TLS negotiation\r\n");
    session.clear_output();
    assert_eq!(
        session.feed(&input[6..]),
        0,
        "nothing before the event is taken"
    );
    assert_eq!(session.poll_event(), Some(Event::StartTls));
    // A driver that feeds what it still holds gets it swallowed, silently.
    assert_eq!(session.feed(&input[6..]), input.len() - 6);
    assert_eq!(session.feed(b"IT\r\n"), 4);
    assert!(session.output().is_empty() && !session.is_closed());
    session.tls_established();
    assert_eq!(session.feed(b"PASS evil\r\nCAPA\r\n"), 17);
    assert!(
        session.poll_event().is_none(),
        "no login from smuggled USER"
    );
    let output = String::from_utf8(session.output().to_vec()).unwrap();
    assert!(output.starts_with("-ERR send USER first\r\n+OK capability list follows\r\n"));
    assert!(!output.contains("STLS"));
}

#[test]
fn stls_pipelined_with_commands_is_split_invariant() {
    // The harness answers StartTls at once, so the rest reads as TLS input.
    let input = format!("CAPA\r\nUSER alice\r\nSTLS\r\nPASS x\r\n{LOGIN}LIST 1\r\nQUIT\r\n");
    let run = run(&input);
    assert_eq!(
        run.0.events,
        [
            Event::StartTls,
            Event::Authenticate {
                mechanism: "USER",
                user: "alice".into(),
                password: "secret".into()
            },
            Event::Commit { deleted: vec![] }
        ]
    );
    assert!(run.0.closed);
}

#[test]
fn tls_established_without_stls_is_ignored() {
    let mut session = Pop3Session::new(Arc::new(config()));
    session.tls_established();
    session.clear_output();
    assert_eq!(session.feed(b"CAPA\r\n"), 6);
    assert!(session
        .output()
        .ends_with(b"STLS\r\nIMPLEMENTATION ringpost\r\n.\r\n"));
}
