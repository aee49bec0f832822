//! Server replies on the client side: [`ServerReply`], the reader that
//! assembles one out of the stream (RFC 5321 §4.2), and every reply the
//! client makes up itself. No other client module names a reply code.
//!
//! # What the reader accepts
//! A reply is one or more lines `ddd-text` ending with one `ddd text`, every
//! line with the same code. Sloppy servers are tolerated where nothing can be
//! misread: a line may end in a bare LF, and may be a bare code (`250`) with
//! no separator or text. Anything else (a code outside 200..=599, a missing
//! separator, a code that changes inside a reply) is a protocol error: once
//! the replies stop making sense, no later reply can be trusted to belong to
//! the command we think it answers.
//!
//! # Bounds
//! A reply may take at most `max_reply_len` bytes, terminators included. The
//! reader consumes only complete lines, so an unfinished line stays with the
//! driver; it is judged too long as soon as it could no longer fit, which
//! keeps the driver's buffer bounded by the same limit.

use std::fmt;

use memchr::memchr;

/// One reply, from the server or made up by the client (see [`Self::local`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerReply {
    /// Three-digit reply code, 200..=599.
    pub code: u16,
    /// Enhanced status code such as `"4.2.0"` (RFC 2034, RFC 3463), if the
    /// first line of the reply began with one.
    pub status: Option<String>,
    /// Text of every line, codes stripped, joined with `" / "`. Control
    /// characters are replaced by `?`, so the text is safe to log and to quote
    /// in a bounce.
    pub text: String,
    /// True when the client made this reply up (lost connection, message too
    /// big for the server…): the server never said it.
    pub local: bool,
}

impl ServerReply {
    /// A reply the client (or its driver) makes up, e.g. for a failed connect.
    pub fn local(code: u16, status: &str, text: impl Into<String>) -> Self {
        ServerReply {
            code,
            status: Some(status.to_owned()),
            text: text.into(),
            local: true,
        }
    }

    /// 2xx: the command succeeded.
    pub fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// 4xx: failed for now; trying again later may work.
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// 5xx: failed for good.
    pub fn is_permanent(&self) -> bool {
        (500..600).contains(&self.code)
    }

    /// Build a reply from its code and the text of each line.
    fn from_lines(code: u16, lines: &[String]) -> Self {
        let status = lines
            .first()
            .and_then(|first| enhanced_status(first))
            .map(str::to_owned);
        let mut text = String::new();
        for line in lines {
            // RFC 2034 §4 repeats the status on every line; keep it once.
            let line = match &status {
                Some(status) => strip_status(line, status),
                None => line,
            };
            if line.is_empty() {
                continue;
            }
            if !text.is_empty() {
                text.push_str(" / ");
            }
            text.push_str(line);
        }
        ServerReply {
            code,
            status,
            text,
            local: false,
        }
    }
}

impl fmt::Display for ServerReply {
    /// `550 5.1.1 text`, leaving out a missing status or empty text.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        if let Some(status) = &self.status {
            write!(f, " {status}")?;
        }
        if !self.text.is_empty() {
            write!(f, " {}", self.text)?;
        }
        Ok(())
    }
}

/// The enhanced status code `text` starts with: `class.subject.detail`, the
/// class 2, 4 or 5 and the others one to three digits (RFC 3463 §2).
fn enhanced_status(text: &str) -> Option<&str> {
    let word = text.split(' ').next()?;
    let mut parts = word.split('.');
    let (class, subject, detail) = (parts.next()?, parts.next()?, parts.next()?);
    let number = |s: &str| (1..=3).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit());
    let valid = parts.next().is_none()
        && matches!(class, "2" | "4" | "5")
        && number(subject)
        && number(detail);
    valid.then_some(word)
}

/// `line` without a leading `status` and the space after it.
fn strip_status<'a>(line: &'a str, status: &str) -> &'a str {
    match line.strip_prefix(status) {
        Some("") => "",
        Some(rest) if rest.starts_with(' ') => &rest[1..],
        _ => line,
    }
}

// ---------------------------------------------------------------------------
// Codes the session acts on by value.

/// Service ready: the greeting, and the go-ahead for STARTTLS.
pub(super) const SERVICE_READY: u16 = 220;
/// Start mail input: the go-ahead for DATA.
pub(super) const START_MAIL_INPUT: u16 = 354;
/// Service not available, closing the channel: fatal wherever it comes.
pub(super) const SERVICE_CLOSING: u16 = 421;

// ---------------------------------------------------------------------------
// Replies the client makes up.

/// The connection ended before the reply came: 421 4.4.2.
pub(super) fn connection_lost() -> ServerReply {
    ServerReply::local(421, "4.4.2", "connection lost")
}

/// The server's replies stopped making sense: 421 4.5.0.
pub(super) fn protocol_error(what: &str) -> ServerReply {
    ServerReply::local(421, "4.5.0", format!("protocol error: {what}"))
}

/// The message is over the server's SIZE limit (RFC 1870 §6.1): 552 5.3.4.
pub(super) fn too_big(limit: u64) -> ServerReply {
    ServerReply::local(
        552,
        "5.3.4",
        format!("message size exceeds the server's limit of {limit} bytes"),
    )
}

/// The envelope needs SMTPUTF8 and the server lacks it (RFC 6531 §3.2): 553 5.6.7.
pub(super) fn needs_smtputf8() -> ServerReply {
    ServerReply::local(553, "5.6.7", "server does not support SMTPUTF8")
}

/// 8-bit content that cannot be made 7-bit for a server without 8BITMIME
/// (RFC 6152 §3): 554 5.6.3, conversion required and not possible.
pub(super) fn needs_8bitmime() -> ServerReply {
    ServerReply::local(
        554,
        "5.6.3",
        "server does not support 8BITMIME and the message cannot be made 7-bit",
    )
}

/// A sender that cannot be written into a command line: 553 5.1.7.
pub(super) fn bad_sender() -> ServerReply {
    ServerReply::local(553, "5.1.7", "sender address contains control characters")
}

/// A recipient that cannot be written into a command line: 553 5.1.3.
pub(super) fn bad_recipient() -> ServerReply {
    ServerReply::local(
        553,
        "5.1.3",
        "recipient address contains control characters",
    )
}

/// `send` while the session cannot take a transaction: 451 4.3.0.
pub(super) fn not_ready() -> ServerReply {
    ServerReply::local(451, "4.3.0", "session not ready for a transaction")
}

// ---------------------------------------------------------------------------
// The reader.

/// A complete reply and the text of each of its lines (codes stripped,
/// enhanced status kept), which the EHLO keywords are read from.
#[derive(Debug)]
pub(super) struct Parsed {
    pub(super) reply: ServerReply,
    pub(super) lines: Vec<String>,
}

/// Why the reply stream stopped making sense.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ReplyError {
    /// Over `max_reply_len` bytes.
    TooLong,
    /// A line that does not start with a code and a separator.
    Malformed,
    /// A continuation line with a different code.
    CodeChanged,
}

impl ReplyError {
    /// Words for the local protocol-error reply.
    pub(super) fn describe(self) -> &'static str {
        match self {
            ReplyError::TooLong => "reply too long",
            ReplyError::Malformed => "malformed reply line",
            ReplyError::CodeChanged => "reply code changed between lines",
        }
    }
}

/// Assembles one reply at a time out of complete lines.
#[derive(Debug, Default)]
pub(super) struct ReplyReader {
    /// Code of the continuation lines read so far.
    code: Option<u16>,
    /// Text of the lines read so far.
    lines: Vec<String>,
    /// Bytes of the reply so far, terminators included.
    len: usize,
}

impl ReplyReader {
    /// Consume complete lines of `input` until a reply ends.
    ///
    /// Returns the bytes consumed and, when a reply ended or an error was
    /// found, the outcome. Without an outcome, what is left of `input` is an
    /// unfinished line the driver must keep. After an error the reader is
    /// left as it was: the session reads nothing more.
    pub(super) fn read(
        &mut self,
        input: &[u8],
        max_len: usize,
    ) -> (usize, Option<Result<Parsed, ReplyError>>) {
        let mut used = 0;
        loop {
            let rest = &input[used..];
            let Some(lf) = memchr(b'\n', rest) else {
                // The line will need at least one more byte (its LF), so at
                // this length it can no longer fit.
                if !rest.is_empty() && self.len + rest.len() >= max_len {
                    return (input.len(), Some(Err(ReplyError::TooLong)));
                }
                return (used, None);
            };
            used += lf + 1;
            self.len += lf + 1;
            if self.len > max_len {
                return (used, Some(Err(ReplyError::TooLong)));
            }
            let line = &rest[..lf];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let Some((code, more, text)) = parse_line(line) else {
                return (used, Some(Err(ReplyError::Malformed)));
            };
            if self.code.is_some_and(|first| first != code) {
                return (used, Some(Err(ReplyError::CodeChanged)));
            }
            self.code = Some(code);
            self.lines.push(clean_text(text));
            if !more {
                let lines = std::mem::take(&mut self.lines);
                *self = ReplyReader::default();
                let reply = ServerReply::from_lines(code, &lines);
                return (used, Some(Ok(Parsed { reply, lines })));
            }
        }
    }
}

/// Split a line (terminator stripped) into its code, whether more lines
/// follow, and its text.
fn parse_line(line: &[u8]) -> Option<(u16, bool, &[u8])> {
    let (digits, rest) = line.split_first_chunk::<3>()?;
    if !(b'2'..=b'5').contains(&digits[0]) || !digits[1..].iter().all(u8::is_ascii_digit) {
        return None;
    }
    let code = digits
        .iter()
        .fold(0u16, |code, digit| code * 10 + u16::from(digit - b'0'));
    match rest.split_first() {
        None => Some((code, false, &[])),
        Some((b' ', text)) => Some((code, false, text)),
        Some((b'-', text)) => Some((code, true, text)),
        Some(_) => None,
    }
}

/// Reply text as a string: invalid UTF-8 replaced, control characters
/// (a stray CR, escape sequences) turned into `?`.
fn clean_text(text: &[u8]) -> String {
    let text = String::from_utf8_lossy(text);
    if text.chars().any(char::is_control) {
        text.chars()
            .map(|c| if c.is_control() { '?' } else { c })
            .collect()
    } else {
        text.into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every reply in `input`, read in one go; errors end the list.
    fn replies(input: &[u8], max: usize) -> Vec<Result<ServerReply, ReplyError>> {
        let mut reader = ReplyReader::default();
        let mut found = Vec::new();
        let mut rest = input;
        loop {
            let (used, outcome) = reader.read(rest, max);
            rest = &rest[used..];
            match outcome {
                Some(Ok(parsed)) => found.push(Ok(parsed.reply)),
                Some(Err(error)) => {
                    found.push(Err(error));
                    return found;
                }
                None => return found,
            }
        }
    }

    fn one(input: &str) -> ServerReply {
        match &replies(input.as_bytes(), 1024)[..] {
            [Ok(reply)] => reply.clone(),
            other => panic!("{input:?} gave {other:?}"),
        }
    }

    #[test]
    fn single_and_multi_line() {
        let reply = one("250 2.1.0 Sender ok\r\n");
        assert_eq!(
            (reply.code, reply.status.as_deref(), &reply.text[..]),
            (250, Some("2.1.0"), "Sender ok")
        );
        let reply = one("550-5.1.1 no such\r\n550 5.1.1 user here\r\n");
        assert_eq!(reply.to_string(), "550 5.1.1 no such / user here");
        assert!(reply.is_permanent() && !reply.local);
    }

    #[test]
    fn tolerates_bare_codes_and_bare_lf() {
        let reply = one("250-mx\n250-\n250\n");
        assert_eq!(
            (reply.code, &reply.text[..], reply.status),
            (250, "mx", None)
        );
        assert_eq!(one("354\r\n").to_string(), "354");
    }

    #[test]
    fn status_only_when_it_looks_like_one() {
        assert_eq!(one("220 mx.example.com ESMTP\r\n").status, None);
        assert_eq!(one("250 2.0.0.1 x\r\n").status, None);
        assert_eq!(one("250 1.2.3 x\r\n").status, None);
        assert_eq!(
            one("451 4.123.45 later\r\n").status.as_deref(),
            Some("4.123.45")
        );
        assert_eq!(one("250 2.0.0\r\n").to_string(), "250 2.0.0");
    }

    #[test]
    fn control_characters_are_replaced() {
        let found = replies(b"250 a\rb\x1b[0m\xff\r\n", 1024);
        assert_eq!(found[0].as_ref().unwrap().text, "a?b?[0m\u{fffd}");
    }

    #[test]
    fn malformed_lines_are_errors() {
        for bad in [
            "25 x\r\n",
            "199 x\r\n",
            "600 x\r\n",
            "250x\r\n",
            "abc\r\n",
            "\r\n",
        ] {
            assert_eq!(
                replies(bad.as_bytes(), 1024),
                [Err(ReplyError::Malformed)],
                "{bad:?}"
            );
        }
        assert_eq!(
            replies(b"250-a\r\n251 b\r\n", 1024),
            [Err(ReplyError::CodeChanged)]
        );
    }

    #[test]
    fn limit_counts_every_line_and_unfinished_ones() {
        assert!(replies(b"250 12345\r\n", 11)[0].is_ok());
        assert_eq!(replies(b"250 123456\r\n", 11), [Err(ReplyError::TooLong)]);
        assert_eq!(
            replies(b"250-1\r\n250 2\r\n", 13),
            [Err(ReplyError::TooLong)]
        );
        // Ten bytes without an LF cannot become a line of at most ten.
        assert_eq!(replies(b"250 123456", 10), [Err(ReplyError::TooLong)]);
        assert_eq!(replies(b"250 12345", 10), []);
    }

    #[test]
    fn leaves_unfinished_lines_and_keeps_continuations() {
        let mut reader = ReplyReader::default();
        let (used, outcome) = reader.read(b"250-a\r\n250 b", 100);
        assert_eq!(used, 7);
        assert!(outcome.is_none());
        let (used, outcome) = reader.read(b"250 b\r\n", 100);
        assert_eq!(used, 7);
        assert_eq!(outcome.unwrap().unwrap().reply.text, "a / b");
    }
}
