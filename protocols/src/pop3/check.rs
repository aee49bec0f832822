//! The session's promises, checked on any input: the engine's driving loop
//! in miniature ([`crate::check::drive`]), with assertions. The fuzz target,
//! the fuzz smoke test and the unit tests all drive sessions through
//! [`drive`].
//!
//! Compiled for tests and with the `fuzzing` feature only.
//!
//! # What is checked (a violation panics)
//! - `feed` consumes no more than it was given, and stops early only at a
//!   question for the driver or at the end of the session;
//! - at most one question is out at a time, and nothing is consumed until it
//!   is answered, except plaintext after STLS, which is consumed silently;
//! - `Retrieve` names a listed message, `Commit` lists each marked message
//!   once, and both come only in the TRANSACTION state;
//! - a closed session consumes nothing and says nothing more;
//! - the output is a sequence of well-formed responses ([`check_responses`]).

use std::sync::Arc;

use super::{Event, MessageInfo, Pop3Config, Pop3Session};
use crate::check as shared;
pub use crate::check::{split_at, XorShift};

shared::impl_session!(Pop3Session, Event);

/// How the driver answers one question.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Credentials good, message served, deletions committed.
    Yes,
    /// Credentials bad, message missing, commit failed.
    No,
    /// Maildrop locked for `Authenticate`; [`Answer::No`] for the others.
    Locked,
    /// Store down for `Authenticate`; [`Answer::No`] for the others.
    Unavailable,
}

/// The driver the session talks to: how it answers, and what the maildrop
/// holds. `StartTls` is always answered with `tls_established`, as if the
/// rest of the input came through TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Driver {
    /// Answers to the 1st, 2nd… question, starting over when used up.
    pub answers: &'static [Answer],
    /// The messages listed at login, in order. Their lines must not start
    /// with `+` or `-`, so that [`check_responses`] can tell them from
    /// status lines.
    pub messages: &'static [&'static [u8]],
}

/// Every question answered yes, over [`MESSAGES`].
pub const ACCEPT: Driver = Driver {
    answers: &[Answer::Yes],
    messages: MESSAGES,
};

/// Yes, no, yes, locked, over [`MESSAGES`].
pub const ALTERNATE: Driver = Driver {
    answers: &[Answer::Yes, Answer::No, Answer::Yes, Answer::Locked],
    messages: MESSAGES,
};

/// The maildrop most tests use: CRLF, bare LF and bare CR line endings,
/// lines that need stuffing, a message without body and an empty one.
pub const MESSAGES: &[&[u8]] = &[
    b"Subject: one\r\n\r\nbody\r\n.dot\r\n",
    b"Subject: two\nX: y\n\nbare\nlf\n.\n",
    b"Header: only",
    b"",
    b"A: b\r\rline\r\n\r\n..\r\nend",
];

/// The listing the driver gives for `messages`: uid `uid-<n>`, size the
/// stored length.
pub fn maildrop(messages: &[&[u8]]) -> Vec<MessageInfo> {
    messages
        .iter()
        .enumerate()
        .map(|(index, bytes)| MessageInfo {
            uid: format!("uid-{}", index + 1),
            size: bytes.len() as u64,
        })
        .collect()
}

/// Everything a session said while driven.
pub type Trace = shared::Trace<Event>;

/// Drive a new session with `pieces` of input, one `feed` (or more) per
/// piece, answering its questions as `driver` says. Panics if the session
/// breaks a promise.
pub fn drive<'a>(
    config: Arc<Pop3Config>,
    pieces: impl IntoIterator<Item = &'a [u8]>,
    driver: &Driver,
) -> Trace {
    let mut session = Pop3Session::new(config);
    let trace = shared::drive(
        &mut session,
        pieces,
        check_responses,
        |session, event, earlier, unread| {
            check_event(session, event, driver);
            if *event == Event::StartTls {
                let plaintext = b"USER smuggled\r\n";
                assert_eq!(
                    session.feed(plaintext),
                    plaintext.len(),
                    "plaintext after STLS was not swallowed"
                );
                assert!(
                    session.output().is_empty(),
                    "plaintext after STLS got a reply"
                );
            } else {
                shared::assert_waits(session, unread);
            }
            answer(session, event, earlier.len(), driver);
        },
    );
    if trace.closed {
        assert!(!session.in_transaction());
    }
    trace
}

/// Check that `output` is a sequence of complete, well-formed responses: a
/// status line (`+OK`, `-ERR`, or the `+ ` continuation) of at most 512
/// octets (RFC 2449 §4), with a well-formed response code if any; after
/// `+OK`, possibly lines of a multi-line response, dot-stuffed and ended by
/// `.`; every line ended by CRLF, no CR or LF elsewhere.
pub fn check_responses(output: &[u8]) -> Result<(), String> {
    if output.is_empty() {
        return Ok(());
    }
    // Without its last LF, the output splits at LF into lines that must
    // each end in CR.
    let Some(body) = output.strip_suffix(b"\n").filter(|b| b.ends_with(b"\r")) else {
        return Err(format!(
            "output does not end in CRLF: {:?}",
            String::from_utf8_lossy(output)
        ));
    };
    let mut after_ok = false;
    let mut in_body = false;
    for line in body.split(|&b| b == b'\n') {
        let shown = || String::from_utf8_lossy(line);
        let Some(line) = line.strip_suffix(b"\r") else {
            return Err(format!("bare LF before {:?}", shown()));
        };
        if line.contains(&b'\r') {
            return Err(format!("bare CR in {:?}", shown()));
        }
        let status = |word: &[u8]| {
            line.strip_prefix(word)
                .is_some_and(|rest| rest.is_empty() || rest[0] == b' ')
        };
        // A SASL challenge: `+ ` and base64 (RFC 5034 §4).
        let challenge = line.strip_prefix(b"+ ").is_some_and(|rest| {
            rest.iter()
                .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(b))
        });
        if !in_body && (status(b"+OK") || status(b"-ERR") || challenge) {
            if line.len() + 2 > 512 {
                return Err(format!("status line over 512 octets: {:?}", shown()));
            }
            if status(b"-ERR") {
                check_code(&line[4..]).map_err(|e| format!("{e} in {:?}", shown()))?;
            }
            after_ok = status(b"+OK");
            continue;
        }
        if !in_body && !after_ok {
            return Err(format!("line outside any response: {:?}", shown()));
        }
        in_body = true;
        if line == b"." {
            in_body = false;
            after_ok = false;
        } else if line.first() == Some(&b'.') && line.get(1) != Some(&b'.') {
            return Err(format!("dot not stuffed in {:?}", shown()));
        }
    }
    if in_body {
        return Err("multi-line response never ends".into());
    }
    Ok(())
}

/// The response code after `-ERR`, if any: `[` uppercase letters, digits,
/// `/` or `-` `]`.
fn check_code(rest: &[u8]) -> Result<(), String> {
    let Some(code) = rest.strip_prefix(b" [") else {
        return Ok(());
    };
    let Some(end) = code.iter().position(|&b| b == b']') else {
        return Err("unclosed response code".into());
    };
    let ok = end > 0
        && code[..end]
            .iter()
            .all(|&b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'/' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err("malformed response code".into())
    }
}

/// Drive `input` whole, cut at pseudo-random points chosen by `seed`, and
/// byte by byte, with [`ALTERNATE`]; panics unless all three traces are
/// identical (and each run keeps every promise). Returns the trace.
pub fn check_input(config: Arc<Pop3Config>, input: &[u8], seed: u64) -> Trace {
    shared::assert_same_when_cut(input, seed, |pieces| {
        drive(config.clone(), pieces, &ALTERNATE)
    })
}

/// Limits small enough that short random inputs reach them, and the TLS
/// options, chosen by `seed`.
pub fn small_config(seed: u64) -> Pop3Config {
    let pick = |options: &[usize], shift: u32| options[(seed >> shift) as usize % options.len()];
    Pop3Config {
        hostname: "fuzz.test".into(),
        max_line_len: pick(&[16, 64, 255], 0),
        max_errors: pick(&[1, 5, 1000], 8),
        stls_available: seed >> 16 & 1 == 1,
        plaintext_auth_allowed: seed >> 17 & 1 == 1,
        ..Pop3Config::default()
    }
}

/// Pieces of POP3 that random bytes are mapped onto by [`pop3_like`].
const TOKENS: &[&[u8]] = &[
    b"USER alice\r\n",
    b"PASS secret\r\n",
    b"PASS two words \r\n",
    b"AUTH PLAIN AGFsaWNlAHB3\r\n",
    b"AUTH PLAIN\r\n",
    b"AUTH LOGIN\r\n",
    b"AUTH LOGIN YWxpY2U=\r\n",
    b"YWxpY2U=\r\n",
    b"AGFsaWNlAHB3\r\n",
    b"*\r\n",
    b"AUTH PLAIN =\r\n",
    b"AUTH\r\n",
    b"AUTH CRAM-MD5\r\n",
    b"STLS\r\n",
    b"CAPA\r\n",
    b"STAT\r\n",
    b"LIST\r\n",
    b"LIST 1\r\n",
    b"LIST 9\r\n",
    b"UIDL\r\n",
    b"UIDL 2\r\n",
    b"RETR 1\r\n",
    b"RETR 2\r\n",
    b"RETR 5\r\n",
    b"TOP 1 0\r\n",
    b"TOP 2 1\r\n",
    b"TOP 5 9\r\n",
    b"DELE 1\r\n",
    b"DELE 3\r\n",
    b"RSET\r\n",
    b"NOOP\r\n",
    b"QUIT\r\n",
    b"RETR 0\r\n",
    b"DELE x\r\n",
    b"stat\r\n",
    b"\r\n",
    b"\n",
    b"\r",
    b" ",
    b"x",
    b"1",
    b"\xff",
    // The common path, several times over so that random picks follow it often.
    LOGIN,
    LOGIN,
    LOGIN,
    LOGIN,
    b"STLS\r\n",
    b"DELE 2\r\nQUIT\r\n",
];
const LOGIN: &[u8] = b"USER alice\r\nPASS secret\r\n";

/// Map each byte to a piece of POP3 (a command, a login, a SASL line, a
/// line ending, a stray byte). Random bytes mapped this way reach deep into
/// a session; raw random bytes rarely get past the first command.
pub fn pop3_like(bytes: &[u8]) -> Vec<u8> {
    shared::map_tokens(TOKENS, bytes)
}

/// The promises an event itself makes.
fn check_event(session: &Pop3Session, event: &Event, driver: &Driver) {
    match event {
        Event::Retrieve { number, .. } => {
            assert!(session.in_transaction(), "Retrieve outside TRANSACTION");
            assert!(
                (1..=driver.messages.len()).contains(number),
                "Retrieve of unlisted message {number}"
            );
        }
        Event::Commit { deleted } => {
            assert!(!session.in_transaction(), "Commit without entering UPDATE");
            assert!(
                deleted.windows(2).all(|w| w[0] < w[1]),
                "Commit not ascending: {deleted:?}"
            );
            assert!(
                deleted
                    .iter()
                    .all(|n| (1..=driver.messages.len()).contains(n)),
                "Commit of unlisted message: {deleted:?}"
            );
        }
        Event::Authenticate { .. } | Event::StartTls => {
            assert!(!session.in_transaction(), "{event:?} after login");
        }
    }
}

fn answer(session: &mut Pop3Session, event: &Event, asked: usize, driver: &Driver) {
    let answer = driver.answers[asked % driver.answers.len()];
    match (event, answer) {
        (Event::Authenticate { .. }, Answer::Yes) => {
            session.auth_succeeded(maildrop(driver.messages));
        }
        (Event::Authenticate { .. }, Answer::No) => session.auth_failed(),
        (Event::Authenticate { .. }, Answer::Locked) => session.maildrop_locked(),
        (Event::Authenticate { .. }, Answer::Unavailable) => session.auth_unavailable(),
        (Event::Retrieve { number, .. }, Answer::Yes) => {
            session.message(driver.messages[number - 1]);
        }
        (Event::Retrieve { .. }, _) => session.message_missing(),
        (Event::Commit { .. }, Answer::Yes) => session.committed(),
        (Event::Commit { .. }, _) => session.commit_failed(),
        (Event::StartTls, _) => session.tls_established(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_formed_responses_pass() {
        for good in [
            &b""[..],
            b"+OK\r\n",
            b"+OK hi\r\n-ERR no\r\n+ \r\n",
            b"-ERR [SYS/TEMP] later\r\n-ERR [IN-USE] x\r\n",
            b"+OK list\r\n1 10\r\n2 20\r\n.\r\n+OK\r\n",
            b"+OK\r\n.\r\n",
            b"+OK\r\n..dot\r\n\r\nx\r\n.\r\n",
        ] {
            assert_eq!(
                check_responses(good),
                Ok(()),
                "{:?}",
                String::from_utf8_lossy(good)
            );
        }
    }

    #[test]
    fn malformed_responses_fail() {
        for bad in [
            &b"+OK"[..],
            b"OK\r\n",
            b"-ERR\r\nstray\r\n",
            b"+OK\r\nline\r\n",
            b"+OK\r\n.dot\r\n.\r\n",
            b"+OK a\rb\r\n",
            b"+OK a\nb\r\n",
            b"-ERR [open\r\n",
            b"-ERR [lower] x\r\n",
            b"+OKAY\r\n",
        ] {
            assert!(
                check_responses(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = [b"+OK ".as_slice(), &[b'x'; 600], b"\r\n"].concat();
        assert!(check_responses(&long).is_err());
    }
}
