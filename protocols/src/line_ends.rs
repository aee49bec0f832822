//! Line ends of stored message content: CRLF, whatever a client sent.
//!
//! SMTP refuses bare CR and LF in DATA, but IMAP's APPEND stores what the
//! client wrote, and some clients and migration tools write LF alone. POP3
//! must send CRLF only, and the size it announces (LIST, STAT, RETR) must
//! be what it sends; IMAP clients count on RFC822.SIZE the same way. So
//! APPEND stores content with CRLF line ends, and POP3 repairs older
//! content with the same rule.
//!
//! The rule: a line ends at LF, with any CRs just before it (`\r\r\n`, a
//! text-mode conversion's leftover, is one line end, not two); a CR
//! followed by anything else ends a line too; a last line without an end
//! gets CRLF.

use memchr::{memchr2, memchr_iter};
use std::borrow::Cow;

/// `message` with every line ended by CRLF ([the rule](self)); borrowed
/// when it already is.
pub fn with_crlf(message: &[u8]) -> Cow<'_, [u8]> {
    if is_crlf(message) {
        return Cow::Borrowed(message);
    }
    let mut out = Vec::with_capacity(message.len() + message.len() / 32 + 2);
    let mut rest = message;
    while !rest.is_empty() {
        let (line, next) = split_line(rest);
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
        rest = next;
    }
    Cow::Owned(out)
}

/// Whether every line of `message` ends in CRLF, the last one too, and no
/// CR or LF stands alone (an empty message is).
pub fn is_crlf(message: &[u8]) -> bool {
    if message.is_empty() {
        return true;
    }
    if !message.ends_with(b"\r\n") {
        return false;
    }
    let mut lf = 0;
    for at in memchr_iter(b'\n', message) {
        if at == 0 || message[at - 1] != b'\r' {
            return false;
        }
        lf += 1;
    }
    memchr_iter(b'\r', message).count() == lf
}

/// The first line of `text` without its end ([the rule](self)), and what
/// follows the end.
pub fn split_line(text: &[u8]) -> (&[u8], &[u8]) {
    let Some(at) = memchr2(b'\r', b'\n', text) else {
        return (text, &[]);
    };
    let crs = text[at..].iter().take_while(|&&b| b == b'\r').count();
    let end = match text.get(at + crs) {
        // CRs then LF: one line end.
        Some(b'\n') => at + crs + 1,
        // A lone CR (or LF) ends the line by itself.
        _ => at + 1,
    };
    (&text[..at], &text[end..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_ends_in_crlf() {
        let cases: [(&[u8], &[u8]); 9] = [
            (b"", b""),
            (b"a\r\nb\r\n", b"a\r\nb\r\n"),
            (b"a\nb\n", b"a\r\nb\r\n"),
            (b"a\r\nb", b"a\r\nb\r\n"),
            (b"a\rb\r\n", b"a\r\nb\r\n"),
            (
                b"Subject: x\r\r\n\r\nbody\r\n",
                b"Subject: x\r\n\r\nbody\r\n",
            ),
            (b"a\r\r\r\nb\n\nc", b"a\r\nb\r\n\r\nc\r\n"),
            (b"\n", b"\r\n"),
            (b"a\r", b"a\r\n"),
        ];
        for (given, expected) in cases {
            let out = with_crlf(given);
            assert_eq!(&*out, expected, "{:?}", String::from_utf8_lossy(given));
            assert!(is_crlf(&out));
        }
        assert!(matches!(with_crlf(b"a\r\nb\r\n"), Cow::Borrowed(_)));
    }
}
