//! Arbitrary bytes as a Sieve script, then through ManageSieve: the parts
//! that read what users and strangers send.
//!
//! The first byte picks the case.
//! - Even: the rest is a script. Checked: `check` never panics; a script
//!   it takes runs over a message (the rest again, as the message too)
//!   without panicking, and its outcome keeps the rules: no more than
//!   `MAX_REDIRECTS` redirects, each mailbox once, a rejection alone, a
//!   failed run only the implicit keep.
//! - Odd: the rest is a ManageSieve client's bytes, cut into reads at each
//!   NUL, with every login accepted and every script request answered.
//!   Checked: no panic; the input held stays within the bounds (login
//!   limit before a login, a script's size after); every output line of
//!   the server ends in CRLF.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ringpost_protocols::managesieve::{Answer, Event, ManageSieveConfig, ManageSieveSession};
use ringpost_protocols::session::{Peer, Session};
use ringpost_protocols::sieve::{self, Mail};
use std::sync::Arc;

fuzz_target!(|data: &[u8]| {
    let Some((&head, rest)) = data.split_first() else {
        return;
    };
    if head & 1 == 0 {
        script(rest);
    } else {
        managesieve(rest);
    }
});

fn script(text: &[u8]) {
    let Ok(script) = sieve::check(text) else {
        return;
    };
    let message = [b"From: a@b.test\r\nTo: c@d.test\r\nSubject: hi\r\n\r\n".as_slice(), text].concat();
    for message in [&message[..], text] {
        let outcome = sieve::run(
            &script,
            &Mail {
                message,
                envelope_from: "bounce+x@b.test",
                envelope_to: "c+tag@d.test",
                detail_separator: Some('+'),
            },
        );
        assert!(outcome.redirects.len() <= sieve::MAX_REDIRECTS);
        for (i, filing) in outcome.filings.iter().enumerate() {
            assert!(!outcome.filings[..i].iter().any(|f| f.mailbox == filing.mailbox));
        }
        if outcome.reject.is_some() {
            assert!(outcome.filings.is_empty() && outcome.redirects.is_empty());
            assert!(outcome.vacation.is_none());
        }
        if outcome.error.is_some() {
            assert_eq!(outcome.filings.len(), 1);
            assert!(outcome.redirects.is_empty() && outcome.reject.is_none());
        }
    }
}

fn managesieve(input: &[u8]) {
    let config = Arc::new(ManageSieveConfig::default());
    let mut session = ManageSieveSession::new(config, Peer::default());
    let mut output = Vec::new();
    for read in input.split(|&b| b == 0) {
        let mut rest = read;
        for _ in 0..64 {
            let used = session.feed(rest);
            rest = &rest[used..];
            let mut asked = false;
            while let Some(event) = session.poll_event() {
                asked = true;
                match event {
                    Event::Authenticate(credentials) => session.auth_succeeded(credentials.user),
                    Event::StartTls => session.tls_established(),
                    Event::Scripts { .. } => session.answer(Answer::Listing(vec![("a\r\nb".into(), true)])),
                }
            }
            let most = match session.is_authenticated() {
                true => sieve::MAX_SCRIPT_SIZE + 8192,
                false => ringpost_protocols::managesieve::server::MAX_LOGIN_COMMAND,
            };
            assert!(session.buffered() <= most, "{} held", session.buffered());
            output.extend_from_slice(session.output());
            session.clear_output();
            if session.is_closed() || (rest.is_empty() && !asked && !session.has_more_to_run()) {
                break;
            }
        }
        if session.is_closed() {
            break;
        }
    }
    // Literals aside, every line the server wrote ends in CRLF.
    assert!(output.is_empty() || output.ends_with(b"\r\n"));
}
