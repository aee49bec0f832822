//! The IMAP session: every state, framing and error path, with input split
//! at every byte where it matters.

use super::check::Run;
use super::server::Event;

const LOGIN: &str = "a LOGIN alice secret\r\n";

#[test]
fn pipelined_commands_wait_while_their_answers_pile_up() {
    // 5,000 CAPABILITYs in one read answer with about 1.5 MB: the session
    // runs commands only until 64 KiB of answers wait, and the rest once
    // they are written.
    use crate::Session;
    let mut session = super::ImapSession::new(std::sync::Arc::new(super::ImapConfig::default()));
    session.clear_output();
    session.feed("c CAPABILITY\r\n".repeat(5000).as_bytes());
    let mut answered = 0;
    let mut rounds = 0;
    loop {
        assert!(session.output().len() < super::server::OUTPUT_HIGH_WATER + 4096);
        answered += String::from_utf8_lossy(session.output())
            .matches("c OK")
            .count();
        session.clear_output();
        rounds += 1;
        if !session.has_more_to_run() {
            break;
        }
        session.feed(&[]);
    }
    assert_eq!(answered, 5000);
    assert!(rounds > 10, "{rounds} rounds");
}

#[test]
fn greeting_and_capability_before_login() {
    let mut run = Run::new();
    let greeting = run.take();
    assert!(
        greeting.starts_with("* OK [CAPABILITY IMAP4rev2 IMAP4rev1 "),
        "{greeting}"
    );
    assert!(greeting.ends_with("imap.test IMAP4rev2 server ready\r\n"));
    run.feed("c1 CAPABILITY\r\nc2 ID NIL\r\nc3 NOOP\r\n");
    let lines = run.lines();
    assert!(lines[0].starts_with("* CAPABILITY IMAP4rev2 "), "{lines:?}");
    assert!(lines[0].contains(" IDLE ") && lines[0].contains(" AUTH=PLAIN "));
    assert_eq!(lines[1], "c1 OK CAPABILITY completed\r\n");
    assert_eq!(lines[2], "* ID (\"name\" \"ringpost\")\r\n");
    // RFC 9051 §6.1.2: NOOP is valid in any state.
    assert_eq!(lines[4], "c3 OK NOOP completed\r\n");
}

#[test]
fn login_and_states() {
    let mut run = Run::new();
    run.take();
    run.feed("s1 SELECT INBOX\r\nx LOGIN bob pw\r\n");
    assert_eq!(
        run.take(),
        "s1 BAD log in first\r\nx NO [AUTHENTICATIONFAILED] invalid credentials\r\n"
    );
    run.feed(LOGIN);
    assert!(run.take().starts_with("a OK [CAPABILITY IMAP4rev2"));
    run.feed("b LOGIN alice secret\r\nf1 FETCH 1 FLAGS\r\nn NAMESPACE\r\ne ENABLE IMAP4rev2\r\n");
    assert_eq!(
        run.take(),
        "b BAD already authenticated\r\nf1 BAD no mailbox selected\r\n\
         * NAMESPACE ((\"\" \"/\")) NIL NIL\r\nn OK NAMESPACE completed\r\n\
         * ENABLED IMAP4rev2\r\ne OK ENABLE completed\r\n"
    );
    assert!(run.session.is_rev2());
    // Enabled once: the second time, and what is not offered, is not listed.
    run.feed("e2 ENABLE imap4rev2 X-UNKNOWN\r\n");
    assert_eq!(run.take(), "* ENABLED\r\ne2 OK ENABLE completed\r\n");
    assert!(!run.session.is_condstore());
    run.feed("e3 ENABLE CONDSTORE\r\n");
    assert_eq!(
        run.take(),
        "* ENABLED CONDSTORE\r\ne3 OK ENABLE completed\r\n"
    );
    assert!(run.session.is_condstore());
    assert!(!run.session.is_qresync());
    run.feed("e4 ENABLE QRESYNC\r\n");
    assert_eq!(
        run.take(),
        "* ENABLED QRESYNC\r\ne4 OK ENABLE completed\r\n"
    );
    assert!(run.session.is_qresync());
    run.feed("s2 SELECT INBOX\r\nf2 FETCH 1:* (FLAGS BODY.PEEK[])\r\n");
    assert_eq!(run.take(), "s2 OK done\r\nf2 OK done\r\n");
    let commands: Vec<_> = run
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Command { tag, .. } => Some(tag.as_ref().to_owned()),
            _ => None,
        })
        .collect();
    assert_eq!(commands, ["s2", "f2"]);
    run.session.unselected();
    assert!(!run.session.is_selected());
    run.feed("l LOGOUT\r\nn NOOP\r\n");
    assert_eq!(run.take(), "* BYE logging out\r\nl OK LOGOUT completed\r\n");
    assert!(run.session.is_closed());
}

#[test]
fn split_at_every_byte_means_the_same() {
    let input = format!("{LOGIN}c CREATE {{4+}}\r\nWork\r\ns SELECT \"INBOX\"\r\nl LOGOUT\r\n");
    let mut whole = Run::new();
    whole.feed(&input);
    for step in 1..8 {
        let mut split = Run::new();
        split.feed_in(input.as_bytes(), step);
        assert_eq!(split.out, whole.out, "step {step}");
        assert_eq!(split.events, whole.events, "step {step}");
    }
}

#[test]
fn literals() {
    let mut run = Run::new();
    run.feed(LOGIN);
    run.take();
    // A synchronizing literal gets a continuation first.
    run.feed("c CREATE {4}\r\n");
    assert_eq!(run.take(), "+ go ahead\r\n");
    run.feed("Work\r\n");
    assert_eq!(run.take(), "c OK done\r\n");
    // Too big: refused before it is sent, and the session goes on.
    run.feed("d CREATE {5000}\r\nn NOOP\r\n");
    assert_eq!(run.take(), "d NO [TOOBIG] literal too big\r\nn OK done\r\n");
    // Too big and non-synchronizing: read, dropped, refused.
    let big = format!("e CREATE {{5000+}}\r\n{}\r\nn2 NOOP\r\n", "x".repeat(5000));
    run.feed(&big);
    assert_eq!(run.take(), "e BAD command too long\r\nn2 OK done\r\n");
}

#[test]
fn authenticate_plain() {
    // With SASL-IR.
    let mut run = Run::new();
    run.feed("a AUTHENTICATE PLAIN AGFsaWNlAHNlY3JldA==\r\n");
    assert!(run.out.contains("a OK [CAPABILITY"), "{}", run.out);
    // By continuation.
    let mut run = Run::new();
    run.take();
    run.feed("a AUTHENTICATE PLAIN\r\n");
    assert_eq!(run.take(), "+ \r\n");
    run.feed("AGFsaWNlAHNlY3JldA==\r\n");
    assert!(run.take().starts_with("a OK"));
    // Cancelled, bad base64, bad PLAIN, another identity, other mechanisms.
    let mut run = Run::new();
    run.take();
    run.feed("a AUTHENTICATE PLAIN\r\n*\r\n");
    assert_eq!(run.take(), "+ \r\na BAD authentication cancelled\r\n");
    run.feed("b AUTHENTICATE PLAIN\r\n!!!\r\n");
    assert_eq!(run.take(), "+ \r\nb BAD invalid base64\r\n");
    run.feed("c AUTHENTICATE PLAIN YWxpY2U=\r\n");
    assert_eq!(run.take(), "c BAD malformed credentials\r\n");
    run.feed("d AUTHENTICATE PLAIN Ym9iAGFsaWNlAHNlY3JldA==\r\n");
    assert_eq!(
        run.take(),
        "d NO [AUTHORIZATIONFAILED] cannot act for another user\r\n"
    );
    run.feed("e AUTHENTICATE CRAM-MD5\r\n");
    assert_eq!(run.take(), "e NO unsupported mechanism\r\n");
    let logins = run
        .events
        .iter()
        .filter(|e| matches!(e, Event::Login { .. }))
        .count();
    assert_eq!(logins, 0);
}

#[test]
fn idle_until_done() {
    let mut run = Run::new();
    run.feed(LOGIN);
    run.take();
    run.feed("i IDLE\r\n");
    assert_eq!(run.take(), "+ idling\r\n");
    assert!(run.session.is_idling());
    // Updates may be written while idling.
    run.session.untagged("3 EXISTS");
    run.feed("DONE\r\nn NOOP\r\n");
    assert_eq!(
        run.take(),
        "* 3 EXISTS\r\ni OK IDLE terminated\r\nn OK done\r\n"
    );
    assert!(!run.session.is_idling());
    // Anything but DONE ends the session.
    run.feed("j IDLE\r\nFETCH\r\n");
    assert_eq!(
        run.take(),
        "+ idling\r\n* BAD expected DONE\r\n* BYE protocol error in IDLE\r\n"
    );
    assert!(run.session.is_closed());
}

#[test]
fn errors_are_bad_and_too_many_close() {
    let mut run = Run::new();
    run.take();
    run.feed("a1 FROB\r\n\r\n* junk\r\na2 LOGIN\r\n");
    assert_eq!(
        run.take(),
        "a1 BAD syntax error\r\n* BAD syntax error\r\n* BAD syntax error\r\n\
         a2 BAD syntax error\r\n"
    );
    run.feed("a3 FETCH\r\n");
    assert_eq!(
        run.take(),
        "a3 BAD syntax error\r\n* BYE too many errors\r\n"
    );
    assert!(run.session.is_closed());
    // Nothing is read after the end.
    run.feed("a4 NOOP\r\n");
    assert_eq!(run.take(), "");
}

#[test]
fn a_long_line_is_refused_without_buffering_it() {
    let mut run = Run::new();
    run.take();
    let long = format!("a1 LOGIN {} x\r\nc CAPABILITY\r\n", "u".repeat(10_000));
    run.feed(&long);
    let lines = run.lines();
    assert_eq!(lines[0], "a1 BAD command too long\r\n");
    assert!(lines[1].starts_with("* CAPABILITY"));
}

#[test]
fn timeout_and_shutdown_say_bye() {
    let mut run = Run::new();
    run.take();
    run.session.timed_out();
    run.answer();
    assert_eq!(run.take(), "* BYE autologout; idle for too long\r\n");
    assert!(run.session.is_closed());
    let mut run = Run::new();
    run.take();
    run.session.shutdown();
    run.session.shutdown();
    run.answer();
    assert_eq!(run.take(), "* BYE server shutting down\r\n");
}

#[test]
fn garbage_never_panics_and_cuts_change_nothing() {
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    for _ in 0..300 {
        let mut input = Vec::new();
        for _ in 0..200 {
            seed = super::check::next(seed);
            input.push((seed >> 24) as u8);
        }
        super::check::check_input(&super::check::imap_like(&input), seed);
    }
}

#[test]
fn starttls_and_logindisabled() {
    use super::{ImapSession, Peer};
    use std::sync::Arc;
    let strict = Peer {
        implicit_tls: false,
        plaintext_auth: false,
    };
    let mut session = ImapSession::with_peer(Arc::new(super::check::config()), strict);
    let greeting = String::from_utf8(session.output().to_vec()).unwrap();
    assert!(
        greeting.contains(" STARTTLS") && greeting.contains(" LOGINDISABLED"),
        "{greeting}"
    );
    assert!(!greeting.contains(" AUTH="), "{greeting}");
    session.clear_output();
    session.feed(b"a LOGIN alice secret\r\nb AUTHENTICATE PLAIN AGFsaWNlAHNlY3JldA==\r\n");
    assert!(session.poll_event().is_none());
    assert_eq!(
        String::from_utf8(session.output().to_vec()).unwrap(),
        "a NO [PRIVACYREQUIRED] login is disabled until STARTTLS\r\n\
         b NO [PRIVACYREQUIRED] login is disabled until STARTTLS\r\n"
    );
    session.clear_output();
    // STARTTLS, with a smuggled command pipelined behind it.
    session.feed(b"t STARTTLS\r\nx LOGIN alice secret\r\n");
    assert_eq!(session.poll_event(), Some(Event::StartTls));
    assert_eq!(
        String::from_utf8(session.output().to_vec()).unwrap(),
        "t OK Begin TLS negotiation now\r\n"
    );
    session.clear_output();
    session.feed(b"y LOGIN alice secret\r\n");
    assert!(
        session.poll_event().is_none(),
        "plaintext before the handshake ran"
    );
    session.tls_established();
    session.feed(b"");
    assert!(session.poll_event().is_none(), "the smuggled LOGIN ran");
    assert!(session.output().is_empty());
    session.feed(b"c CAPABILITY\r\n");
    let caps = String::from_utf8(session.output().to_vec()).unwrap();
    assert!(
        caps.contains("AUTH=PLAIN AUTH=LOGIN") && !caps.contains("STARTTLS"),
        "{caps}"
    );
    session.clear_output();
    session.feed(b"d STARTTLS\r\n");
    assert_eq!(
        String::from_utf8(session.output().to_vec()).unwrap(),
        "d BAD STARTTLS not available\r\n"
    );
}

#[test]
fn authenticate_login() {
    let mut run = Run::new();
    run.take();
    run.feed("a AUTHENTICATE LOGIN\r\n");
    assert_eq!(run.take(), "+ VXNlcm5hbWU6\r\n");
    run.feed("YWxpY2U=\r\n");
    assert_eq!(run.take(), "+ UGFzc3dvcmQ6\r\n");
    run.feed("c2VjcmV0\r\n");
    assert!(run.take().starts_with("a OK [CAPABILITY"));
    assert!(matches!(
        &run.events[..],
        [Event::Login {
            mechanism: "AUTHENTICATE LOGIN",
            ..
        }]
    ));
}

#[test]
fn before_login_commands_are_small() {
    // A synchronizing literal over the login limit is refused unsent.
    let mut run = Run::new();
    run.take();
    run.feed("a LOGIN {41944040}\r\n");
    assert_eq!(run.take(), "a NO [TOOBIG] literal too big\r\n");
    assert!(!run.session.is_closed());
    // A non-synchronizing one ends the session at once.
    run.feed("b LOGIN {41944040+}\r\n");
    assert!(run.take().ends_with("* BYE literal too big\r\n"));
    assert!(run.session.is_closed());
    // So does a line that never ends (with room for it after login).
    let mut run = Run::with(super::ImapConfig {
        max_command_size: 1 << 20,
        ..super::check::config()
    });
    run.take();
    let long = "x".repeat(super::MAX_LOGIN_COMMAND + 10);
    run.feed(&format!("a LOGIN {long}"));
    assert!(run.session.is_closed(), "{}", run.out);
    // After login the larger limit applies.
    let mut run = Run::new();
    run.feed(LOGIN);
    run.take();
    run.feed("c CREATE {3000}\r\n");
    assert_eq!(run.take(), "+ go ahead\r\n");
}

#[test]
fn compress_once_after_login_and_nothing_pipelined_after_it() {
    let mut run = Run::new();
    run.take();
    run.feed("c COMPRESS DEFLATE\r\n");
    assert_eq!(run.take(), "c BAD log in first\r\n");
    run.feed(LOGIN);
    run.take();
    run.feed("c COMPRESS DEFLATE\r\nn NOOP\r\n");
    assert_eq!(
        run.take(),
        "c OK DEFLATE active\r\n",
        "NOOP pipelined after it is dropped"
    );
    assert!(run.events.contains(&Event::Compress));
    run.feed("c2 COMPRESS DEFLATE\r\n");
    assert_eq!(
        run.take(),
        "c2 NO [COMPRESSIONACTIVE] DEFLATE is on already\r\n"
    );
}

#[test]
fn a_literal_length_near_usize_max_is_bad_syntax_not_a_panic() {
    // The length wrapped past the end of the command and indexed
    // backwards: one line before login killed the whole shard.
    for command in [
        "a APPEND x CATENATE (TEXT {18446744073709551615}\r\n",
        "a APPEND x CATENATE (TEXT {18446744073709551614+}\r\n",
        "a LIST {18446744073709551615}\r\n",
    ] {
        let mut run = Run::new();
        run.take();
        run.feed(command);
        let answer = run.take();
        assert!(
            answer.starts_with("a BAD") || answer.starts_with("a NO") || answer.is_empty(),
            "{command:?}: {answer:?}"
        );
        run.feed("b NOOP\r\n");
        assert!(run.take().contains("b OK"), "{command:?}");
    }
}

#[test]
fn a_command_line_over_64_kib_ends_the_session_but_literals_may_be_long() {
    use super::server::MAX_COMMAND_LINE;
    let config = || super::ImapConfig {
        max_command_size: 1024 * 1024,
        ..super::check::config()
    };
    // A long UID set well inside the limit is a command like any other.
    let mut run = Run::with(config());
    run.feed(LOGIN).feed("s SELECT INBOX\r\n");
    run.take();
    let set: Vec<String> = (1..5000).map(|n| (n * 2).to_string()).collect();
    run.feed(&format!("f UID FETCH {} (FLAGS)\r\n", set.join(",")));
    assert_eq!(run.take(), "f OK done\r\n");
    // A literal far over the line limit, and lines around it under it.
    let body = "y".repeat(3 * MAX_COMMAND_LINE);
    let append = format!("a APPEND INBOX {{{}+}}\r\n{body}\r\n", body.len());
    run.feed_in(append.as_bytes(), 1000);
    assert_eq!(run.take(), "a OK done\r\n");
    // Megabytes of "1,1,1,..." on one line: fed whole, or piece by piece
    // (the line is refused before it is all read).
    let long = format!("b FETCH {} (FLAGS)\r\n", "1,".repeat(MAX_COMMAND_LINE));
    for step in [usize::MAX, 4096] {
        let mut run = Run::with(config());
        run.feed(LOGIN);
        run.take();
        run.feed_in(long.as_bytes(), step);
        let out = run.take();
        assert!(
            out.starts_with("* BAD command line too long\r\n* BYE "),
            "{step}: {out:.200}"
        );
    }
}

#[test]
fn idle_gets_a_whole_idle_timeout_however_long_the_client_was_silent() {
    use crate::Session;
    use std::time::{Duration, Instant};
    let mut session = super::ImapSession::new(std::sync::Arc::new(super::ImapConfig::default()));
    let start = Instant::now();
    let minutes = |m: u64| start + Duration::from_secs(60 * m);
    session.receive(start, LOGIN.as_bytes());
    while session.poll_event().is_some() {
        session.login_succeeded(&imap_codec::imap_types::core::Tag::try_from("a").unwrap());
    }
    session.clear_output();
    // Silent 25 minutes, then IDLE (as RFC 2177 clients do every 29).
    session.receive(minutes(25), b"i IDLE\r\n");
    assert!(matches!(session.poll_event(), Some(super::Event::Idle)));
    assert_eq!(session.poll_timeout(), Some(minutes(55)));
    session.handle_timeout(minutes(40));
    assert!(!session.is_closed(), "cut off 15 minutes into IDLE");
    session.handle_timeout(minutes(55));
    assert!(session.is_closed());
}

#[test]
fn quoted_strings_may_hold_utf8() {
    // RFC 9051's QUOTED-CHAR takes UTF-8: IMAP4rev2 clients send
    // non-ASCII mailbox names and search strings quoted.
    let mut run = Run::new();
    run.feed(LOGIN);
    run.take();
    run.feed("s SELECT \"Entwürfe\"\r\nf SEARCH CHARSET UTF-8 SUBJECT \"Grüße\"\r\n");
    assert_eq!(run.take(), "s OK done\r\nf OK done\r\n");
}
