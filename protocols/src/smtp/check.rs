//! The session's promises, checked on any input: the engine's driving loop in
//! miniature ([`crate::check::drive`]), with assertions. The fuzz target, the
//! fuzz smoke test and the unit tests all drive sessions through [`drive`].
//!
//! Compiled for tests and with the `fuzzing` feature only.
//!
//! # What is checked (a violation panics)
//! - `feed` consumes no more than it was given, and stops early only at a
//!   question for the driver, at the end of the session, or to let its
//!   replies go out first;
//! - at most one question is out at a time, and nothing is consumed until it
//!   is answered;
//! - a closed session consumes nothing and says nothing more;
//! - every output line is a well-formed reply line ([`check_replies`]).

use std::sync::Arc;

use super::replies;
use super::{Event, Peer, ServerConfig, ServerSession};
use crate::check as shared;
pub use crate::check::{split_at, XorShift};

shared::impl_session!(ServerSession, Event);

/// How the driver answers the session's questions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answers {
    /// Accept every recipient; store every message as `Q1`, `Q2`…
    Accept,
    /// Accept or store the 1st, 3rd… question; refuse the 2nd, 4th…
    Alternate,
    /// Refuse every question.
    Refuse,
}

/// Everything a session said while driven.
pub type Trace = shared::Trace<Event>;

/// Drive a new session with `pieces` of input, one `feed` (or more) per
/// piece, answering its questions as `answers` says. Panics if the session
/// breaks a promise.
pub fn drive<'a>(
    config: Arc<ServerConfig>,
    pieces: impl IntoIterator<Item = &'a [u8]>,
    answers: Answers,
) -> Trace {
    // Passwords may be sent in plaintext here, so AUTH is reachable.
    let peer = Peer {
        plaintext_auth: true,
        ..Peer::default()
    };
    drive_peer(config, peer, pieces, answers)
}

/// [`drive`] for a client `peer` describes.
pub fn drive_peer<'a>(
    config: Arc<ServerConfig>,
    peer: Peer,
    pieces: impl IntoIterator<Item = &'a [u8]>,
    answers: Answers,
) -> Trace {
    let mut session = ServerSession::with_peer(config, peer);
    let trace = shared::drive(
        &mut session,
        pieces,
        check_replies,
        |session, event, earlier, unread| {
            if *event == Event::StartTls {
                // What came after STARTTLS is plaintext: swallowed unheard.
                let plaintext = b"MAIL FROM:<smuggled@x.test>\r\n";
                assert_eq!(
                    session.feed(plaintext),
                    plaintext.len(),
                    "plaintext after STARTTLS was not swallowed"
                );
                assert!(
                    session.output().is_empty(),
                    "plaintext after STARTTLS got a reply"
                );
            } else {
                shared::assert_waits(session, unread);
            }
            answer(session, event, earlier, answers);
        },
    );
    if trace.closed {
        assert!(!session.in_transaction() && !session.in_data());
    }
    trace
}

/// Check that `output` is a sequence of complete, well-formed reply lines:
/// a code 200..=599, `-` or space, text without CR or LF, CRLF; an enhanced
/// status code, where present, of the code's class; a multi-line reply keeps
/// its code and ends.
pub fn check_replies(output: &[u8]) -> Result<(), String> {
    let text = std::str::from_utf8(output).map_err(|e| format!("output not UTF-8: {e}"))?;
    let Some(body) = text.strip_suffix("\r\n") else {
        return if text.is_empty() {
            Ok(())
        } else {
            Err(format!("output does not end in CRLF: {text:?}"))
        };
    };
    let mut continued: Option<&str> = None;
    for line in body.split("\r\n") {
        if line.contains(['\r', '\n']) {
            return Err(format!("bare CR or LF in {line:?}"));
        }
        let (code, rest) = line
            .split_at_checked(3)
            .ok_or_else(|| format!("short line {line:?}"))?;
        if !code.bytes().all(|b| b.is_ascii_digit()) || !(b'2'..=b'5').contains(&code.as_bytes()[0])
        {
            return Err(format!("bad code in {line:?}"));
        }
        if continued.is_some_and(|c| c != code) {
            return Err(format!(
                "code changed inside a multi-line reply at {line:?}"
            ));
        }
        continued = match rest.as_bytes().first() {
            Some(b'-') => Some(code),
            Some(b' ') | None => None,
            Some(_) => return Err(format!("no separator after the code in {line:?}")),
        };
        let status = rest.get(1..).unwrap_or("").split(' ').next().unwrap_or("");
        let looks_like_status = status.len() >= 5 && status.as_bytes()[1] == b'.';
        if looks_like_status && status.as_bytes()[0] != code.as_bytes()[0] {
            return Err(format!("status class differs from the code in {line:?}"));
        }
    }
    match continued {
        Some(_) => Err("multi-line reply never ends".into()),
        None => Ok(()),
    }
}

/// Drive `input` whole, cut at pseudo-random points chosen by `seed`, and
/// byte by byte, answering [`Answers::Alternate`]; panics unless all three
/// traces are identical (and each run keeps every promise). Returns the trace.
pub fn check_input(config: Arc<ServerConfig>, input: &[u8], seed: u64) -> Trace {
    let peer = Peer {
        plaintext_auth: true,
        ..Peer::default()
    };
    check_input_from(config, peer, input, seed)
}

/// [`check_input`] for a client `peer` describes (an LMTP client, say).
pub fn check_input_from(config: Arc<ServerConfig>, peer: Peer, input: &[u8], seed: u64) -> Trace {
    shared::assert_same_when_cut(input, seed, |pieces| {
        drive_peer(config.clone(), peer, pieces, Answers::Alternate)
    })
}

/// Limits small enough that short random inputs reach them, chosen by `seed`.
pub fn small_config(seed: u64) -> ServerConfig {
    let pick = |options: &[usize], shift: u32| options[(seed >> shift) as usize % options.len()];
    ServerConfig {
        hostname: "fuzz.test".into(),
        max_line_len: pick(&[16, 64, 512], 0),
        max_message_size: pick(&[0, 10, 100, 100_000], 8),
        max_recipients: pick(&[1, 2, 100], 16),
        max_errors: pick(&[1, 5, 1000], 24),
        max_rejected_recipients: pick(&[1, 3, 1000], 32),
        tls_available: seed & (1 << 40) != 0,
        ..ServerConfig::default()
    }
}

/// Pieces of SMTP that random bytes are mapped onto by [`smtp_like`].
const TOKENS: &[&[u8]] = &[
    b"EHLO c\r\n",
    b"HELO c\r\n",
    b"MAIL FROM:<a@b.test>\r\n",
    b"MAIL FROM:<> SIZE=10 BODY=8BITMIME SMTPUTF8\r\n",
    b"MAIL FROM:<a@b.test> SIZE=99999\r\n",
    b"RCPT TO:<c@d.test>\r\n",
    b"RCPT TO:<postmaster>\r\n",
    b"RCPT TO:<\xc3\xbc@d.test>\r\n",
    b"DATA\r\n",
    b"BDAT 3\r\n",
    b"BDAT 5 LAST\r\n",
    b"BDAT 0 LAST\r\n",
    b"BDAT 99 LAST\r\n",
    b"RSET\r\n",
    b"NOOP\r\n",
    b"QUIT\r\n",
    b"VRFY x\r\n",
    b"HELP\r\n",
    b"STARTTLS\r\n",
    b"AUTH PLAIN AGEAcHc=\r\n",
    b"AUTH PLAIN\r\n",
    b"AUTH LOGIN\r\n",
    b"AUTH LOGIN YQ==\r\n",
    b"YQ==\r\n",
    b"*\r\n",
    b"\r\n",
    b"\r\n.\r\n",
    b".\r\n",
    b"..",
    b".",
    b"\r",
    b"\n",
    b"\n.\n",
    b"\r.\r",
    b"text",
    b" ",
    b"<",
    b">",
    b"@",
    b"\xff",
    b"\xc3",
    b"\x00",
    b"x",
    // The common path, several times over so that random picks follow it often.
    ENVELOPE,
    ENVELOPE,
    ENVELOPE,
    ENVELOPE,
    MESSAGE,
    MESSAGE,
    MESSAGE,
    CHUNK,
    CHUNK,
    CHUNK,
];
const ENVELOPE: &[u8] = b"MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\n";
const MESSAGE: &[u8] = b"DATA\r\nSubject: s\r\n\r\nbody\r\n.\r\n";
const CHUNK: &[u8] = b"BDAT 6 LAST\r\nbody\r\n";

/// Map each byte to a piece of SMTP (a command, a whole envelope or message,
/// a line ending, a dot, a stray byte). Random bytes mapped this way reach
/// deep into a session; raw random bytes rarely get past the first command.
pub fn smtp_like(bytes: &[u8]) -> Vec<u8> {
    shared::map_tokens(TOKENS, bytes)
}

/// [`smtp_like`] for an LMTP session: its greetings are LHLO.
pub fn lmtp_like(bytes: &[u8]) -> Vec<u8> {
    let mut input = smtp_like(bytes);
    let mut at = 0;
    while let Some(found) = memchr::memmem::find(&input[at..], b"EHLO c\r\n") {
        input[at + found] = b'L';
        at += found + 1;
    }
    input
}

fn answer(session: &mut ServerSession, event: &Event, earlier: &[Event], answers: Answers) {
    let yes = match answers {
        Answers::Accept => true,
        Answers::Refuse => false,
        Answers::Alternate => earlier.len().is_multiple_of(2),
    };
    match (event, yes) {
        (Event::Recipient { .. }, true) => session.accept_recipient(),
        (Event::Recipient { .. }, false) => session.reject_recipient(replies::NO_SUCH_USER),
        (Event::Message(_), true) => {
            let stored = earlier
                .iter()
                .filter(|e| matches!(e, Event::Message(_)))
                .count()
                + 1;
            session.message_stored(&format!("Q{stored}"));
        }
        (Event::Message(_), false) => session.message_failed(replies::STORAGE_FAILED),
        (Event::Authenticate(credentials), true) => session.auth_succeeded(&credentials.user),
        (Event::Authenticate(_), false) => session.auth_failed(),
        (Event::StartTls, _) => session.tls_established(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_formed_replies_pass() {
        assert_eq!(check_replies(b""), Ok(()));
        assert_eq!(
            check_replies(b"250-a\r\n250 b\r\n354 go\r\n250 2.0.0 ok\r\n"),
            Ok(())
        );
    }

    #[test]
    fn malformed_replies_fail() {
        for bad in [
            &b"250 ok"[..],
            b"250 o\rk\r\n",
            b"25 ok\r\n",
            b"650 ok\r\n",
            b"250-a\r\n",
            b"250-a\r\n251 b\r\n",
            b"250x\r\n",
            b"250 5.0.0 mismatch\r\n",
        ] {
            assert!(check_replies(bad).is_err(), "{bad:?}");
        }
    }
}
