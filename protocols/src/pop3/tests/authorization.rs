//! The AUTHORIZATION state: greeting, USER/PASS, AUTH PLAIN with an
//! initial response and with a continuation, the driver's three answers,
//! plaintext refused before TLS, QUIT before login.

use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use super::*;
use crate::pop3::{MessageInfo, Pop3Session};

/// Base64 of `\0alice\0pw`.
const ALICE_PW: &str = "AGFsaWNlAHB3";

fn authenticate(user: &str, password: &str) -> Event {
    Event::Authenticate {
        mechanism: "USER",
        user: user.into(),
        password: password.into(),
    }
}

fn authenticate_plain(user: &str, password: &str) -> Event {
    Event::Authenticate {
        mechanism: "PLAIN",
        user: user.into(),
        password: password.into(),
    }
}

/// `+OK maildrop has…` for the test maildrop.
fn maildrop_ready() -> String {
    let octets: usize = check::MESSAGES.iter().map(|m| m.len()).sum();
    format!("+OK maildrop has 5 messages ({octets} octets)")
}

#[test]
fn greeting_is_queued_on_new() {
    let session = Pop3Session::new(Arc::new(config()));
    assert_eq!(session.output(), b"+OK pop.test POP3 ready\r\n");
    assert!(!session.is_closed() && !session.in_transaction());
}

#[test]
fn user_and_pass_log_in() {
    let run = run(LOGIN);
    assert_eq!(
        run.lines(),
        [
            "+OK pop.test POP3 ready",
            "+OK send PASS",
            &maildrop_ready()
        ]
    );
    assert_eq!(run.0.events, [authenticate("alice", "secret")]);
    assert!(!run.0.closed);
}

#[test]
fn pass_is_the_rest_of_the_line() {
    let run = run("USER alice\r\nPASS  two words \r\n");
    assert_eq!(run.0.events, [authenticate("alice", " two words ")]);
}

#[test]
fn a_later_user_replaces_the_name() {
    let run = run("USER bob\r\nUSER alice\r\nPASS secret\r\n");
    assert_eq!(run.0.events, [authenticate("alice", "secret")]);
}

#[test]
fn pass_needs_user_first_and_user_is_good_for_one_pass() {
    let run = run_with(
        config(),
        b"PASS secret\r\nUSER alice\r\nPASS wrong\r\nPASS again\r\n",
        &always(Answer::No),
    );
    assert_eq!(
        run.statuses()[1..],
        [
            "-ERR send USER first",
            "+OK send PASS",
            "-ERR [AUTH] invalid credentials",
            "-ERR send USER first"
        ]
    );
    assert_eq!(run.0.events, [authenticate("alice", "wrong")]);
}

#[test]
fn user_and_pass_syntax() {
    assert_eq!(
        run("USER\r\nUSER a b\r\nUSER alice\r\nPASS\r\nPASS \r\n").statuses()[1..],
        [
            "-ERR syntax: USER name",
            "-ERR syntax: USER name",
            "+OK send PASS",
            "-ERR syntax: PASS password",
            "-ERR syntax: PASS password"
        ]
    );
}

#[test]
fn failed_login_stays_in_authorization() {
    let run = run_with(
        config(),
        format!("{LOGIN}STAT\r\n{LOGIN}").as_bytes(),
        &Driver {
            answers: &[Answer::No, Answer::Yes],
            ..ACCEPT
        },
    );
    assert_eq!(
        run.kinds()[1..],
        ["+OK", "-ERR [AUTH]", "-ERR", "+OK", "+OK"]
    );
    assert_eq!(run.lines()[3], "-ERR command not valid in this state");
    assert_eq!(run.0.events.len(), 2);
}

#[test]
fn locked_maildrop_gets_in_use() {
    let run = run_with(config(), LOGIN.as_bytes(), &always(Answer::Locked));
    assert_eq!(
        run.lines()[2],
        "-ERR [IN-USE] maildrop already locked by another session"
    );
    assert!(!run.0.closed);
}

#[test]
fn store_failure_at_login_is_temporary_and_not_counted() {
    let config = Pop3Config {
        max_errors: 1,
        ..config()
    };
    let run = run_with(
        config,
        format!("{LOGIN}{LOGIN}STAT\r\n").as_bytes(),
        &Driver {
            answers: &[Answer::Unavailable, Answer::Yes],
            ..ACCEPT
        },
    );
    assert_eq!(run.lines()[2], "-ERR [SYS/TEMP] maildrop unavailable");
    assert_eq!(run.kinds()[3..], ["+OK", "+OK", "+OK"], "the retry works");
    assert!(!run.0.closed);
}

#[test]
fn failed_logins_count_toward_max_errors() {
    let config = Pop3Config {
        max_errors: 2,
        ..config()
    };
    let run = run_with(config, LOGIN.repeat(3).as_bytes(), &always(Answer::No));
    assert_eq!(
        run.kinds()[1..],
        ["+OK", "-ERR [AUTH]", "+OK", "-ERR [AUTH]", "-ERR"]
    );
    assert_eq!(
        run.lines().last().unwrap(),
        &"-ERR pop.test too many errors, closing"
    );
    assert_eq!(run.0.events.len(), 2);
    assert!(run.0.closed);
}

#[test]
fn a_locked_maildrop_is_not_counted() {
    let config = Pop3Config {
        max_errors: 1,
        ..config()
    };
    let run = run_with(config, LOGIN.repeat(3).as_bytes(), &always(Answer::Locked));
    assert_eq!(run.0.events.len(), 3);
    assert!(!run.0.closed);
}

#[test]
fn auth_plain_with_initial_response() {
    let run = run(&format!("AUTH PLAIN {ALICE_PW}\r\nSTAT\r\n"));
    assert_eq!(run.0.events, [authenticate_plain("alice", "pw")]);
    assert_eq!(run.statuses()[1..], [maildrop_ready().as_str(), "+OK 5 90"]);
}

#[test]
fn auth_plain_with_continuation() {
    let run = run(&format!("auth plain\r\n{ALICE_PW}\r\nSTAT\r\n"));
    assert_eq!(run.lines()[1], "+ ");
    assert_eq!(run.0.events, [authenticate_plain("alice", "pw")]);
    assert_eq!(run.statuses()[2..], [maildrop_ready().as_str(), "+OK 5 90"]);
}

#[test]
fn a_continuation_is_not_a_command() {
    // The line after `+ ` is base64, even when it reads like a command
    // ("QUIT" is valid base64 for three octets that are not PLAIN).
    let run = run("AUTH PLAIN\r\nQUIT\r\nAUTH PLAIN\r\nLIST 1\r\n");
    assert_eq!(
        run.statuses()[1..],
        [
            "+ ",
            "-ERR [AUTH] malformed PLAIN credentials",
            "+ ",
            "-ERR invalid base64"
        ]
    );
    assert!(!run.0.closed);
}

#[test]
fn star_cancels_the_exchange() {
    let run = run("AUTH PLAIN\r\n*\r\nQUIT\r\n");
    assert_eq!(
        run.statuses()[1..],
        [
            "+ ",
            "-ERR authentication cancelled",
            "+OK pop.test POP3 server signing off"
        ]
    );
    assert!(run.0.events.is_empty());
}

#[test]
fn auth_plain_errors() {
    let run = run(concat!(
        "AUTH PLAIN !!!!\r\n",
        "AUTH PLAIN =\r\n",
        "AUTH PLAIN Ym9iAGFsaWNlAHB3\r\n", // bob\0alice\0pw
        "AUTH PLAIN\r\n\r\n",
        "AUTH PLAIN a b\r\n",
        "AUTH CRAM-MD5\r\n",
        "AUTH CRAM-MD5 abc\r\n",
    ));
    assert_eq!(
        run.statuses()[1..],
        [
            "-ERR invalid base64",
            "-ERR [AUTH] malformed PLAIN credentials",
            "-ERR [AUTH] authorization identity not permitted",
            "+ ",
            "-ERR [AUTH] malformed PLAIN credentials",
            "-ERR syntax: AUTH mechanism [initial-response]",
            "-ERR unsupported SASL mechanism",
            "-ERR unsupported SASL mechanism",
        ]
    );
    assert!(run.0.events.is_empty());
}

#[test]
fn auth_login_asks_for_name_then_password() {
    let name = STANDARD.encode("alice");
    let password = STANDARD.encode("pw");
    let two_steps = run(&format!("AUTH LOGIN\r\n{name}\r\n{password}\r\nSTAT\r\n"));
    assert_eq!(
        two_steps.lines()[1..3],
        ["+ VXNlcm5hbWU6", "+ UGFzc3dvcmQ6"]
    );
    assert_eq!(
        two_steps.0.events,
        [Event::Authenticate {
            mechanism: "LOGIN",
            user: "alice".into(),
            password: "pw".into()
        }]
    );
    assert_eq!(
        two_steps.statuses()[1..],
        [maildrop_ready().as_str(), "+OK 5 90"]
    );
    // With the name as the initial response.
    let one_step = run(&format!("AUTH LOGIN {name}\r\n{password}\r\n"));
    assert_eq!(one_step.lines()[1], "+ UGFzc3dvcmQ6");
    assert_eq!(one_step.0.events.len(), 1);
}

#[test]
fn continuation_not_utf8_is_bad_base64() {
    let run = run_with(config(), b"AUTH PLAIN\r\n\xff\r\n", &ACCEPT);
    assert_eq!(run.statuses()[1..], ["+ ", "-ERR invalid base64"]);
}

#[test]
fn continuation_has_its_own_line_limit() {
    // Longer than max_line_len, within the SASL bound: accepted.
    let config = Pop3Config {
        max_line_len: 16,
        ..config()
    };
    let password = "p".repeat(300);
    let response = STANDARD.encode(format!("\0alice\0{password}"));
    let input = format!("AUTH PLAIN\r\n{response}\r\n");
    let run = run_with(config.clone(), input.as_bytes(), &ACCEPT);
    assert_eq!(run.0.events, [authenticate_plain("alice", &password)]);
    // Past the SASL bound: line too long, and back to commands.
    let long = format!("AUTH PLAIN\r\n{}\r\nCAPA\r\n", "A".repeat(2000));
    let run = run_with(config, long.as_bytes(), &ACCEPT);
    assert_eq!(
        run.statuses()[1..],
        ["+ ", "-ERR line too long", "+OK capability list follows"]
    );
}

#[test]
fn a_pending_user_is_dropped_by_auth() {
    let input = format!("USER bob\r\nAUTH PLAIN {ALICE_PW}\r\nPASS x\r\n");
    let run = run_with(config(), input.as_bytes(), &always(Answer::No));
    assert_eq!(run.0.events, [authenticate_plain("alice", "pw")]);
    assert_eq!(run.statuses().last().unwrap(), &"-ERR send USER first");
}

#[test]
fn bare_auth_lists_mechanisms() {
    assert_eq!(
        run("AUTH\r\n").lines()[1..],
        ["+OK SASL mechanisms follow", "PLAIN", "LOGIN", "."]
    );
    let config = Pop3Config {
        plaintext_auth_allowed: false,
        ..config()
    };
    assert_eq!(
        run_with(config, b"AUTH\r\n", &ACCEPT).lines()[1..],
        ["+OK SASL mechanisms follow", "."]
    );
}

#[test]
fn plaintext_refused_before_tls_and_not_counted() {
    let config = Pop3Config {
        plaintext_auth_allowed: false,
        max_errors: 1,
        ..config()
    };
    let input =
        format!("USER alice\r\nPASS secret\r\nAUTH PLAIN {ALICE_PW}\r\nAUTH PLAIN\r\nCAPA\r\n");
    let run = run_with(config, input.as_bytes(), &ACCEPT);
    let refused = "-ERR [AUTH] plaintext authentication disallowed, use STLS first";
    assert_eq!(
        run.statuses()[1..],
        [
            refused,
            refused,
            refused,
            refused,
            "+OK capability list follows"
        ]
    );
    assert!(run.0.events.is_empty());
    assert!(!run.lines().contains(&"USER") && !run.lines().contains(&"SASL PLAIN LOGIN"));
}

#[test]
fn quit_before_login_closes_without_commit() {
    let input = b"USER alice\r\nQUIT\r\nPASS secret\r\n";
    let run = run_with(config(), input, &ACCEPT);
    assert_eq!(
        run.lines().last().unwrap(),
        &"+OK pop.test POP3 server signing off"
    );
    assert!(run.0.closed && run.0.events.is_empty());
    assert_eq!(run.0.consumed, b"USER alice\r\nQUIT\r\n".len());
}

#[test]
fn transaction_commands_before_login() {
    let config = Pop3Config {
        max_errors: 100,
        ..config()
    };
    let input = "STAT\r\nLIST\r\nLIST 1\r\nRETR 1\r\nDELE 1\r\nNOOP\r\nRSET\r\nTOP 1 1\r\nUIDL\r\nRETR x\r\n";
    let run = run_with(config, input.as_bytes(), &ACCEPT);
    let statuses = run.statuses();
    assert_eq!(statuses.len(), 11);
    assert!(statuses[1..]
        .iter()
        .all(|s| *s == "-ERR command not valid in this state"));
    assert!(run.0.events.is_empty());
}

#[test]
fn a_maildrop_with_a_bad_uid_is_refused() {
    for uid in ["", "a b", "a\r\n.", &"x".repeat(71)] {
        let mut session = Pop3Session::new(Arc::new(config()));
        assert_eq!(session.feed(LOGIN.as_bytes()), LOGIN.len());
        assert!(session.poll_event().is_some());
        session.clear_output();
        session.auth_succeeded(vec![
            MessageInfo {
                uid: "good".into(),
                size: 1,
            },
            MessageInfo {
                uid: uid.into(),
                size: 1,
            },
        ]);
        assert_eq!(
            session.output(),
            b"-ERR [SYS/TEMP] maildrop unavailable\r\n"
        );
        assert!(!session.in_transaction());
    }
}
