//! SMTP reply parsing (RFC 5321 §4.2), sans I/O.
//!
//! The client keeps whatever bytes it has read in one buffer and asks
//! [`parse_reply`] whether a whole reply sits at its front. Replies may
//! arrive split across reads or several in one read (PIPELINING), and may
//! span lines (`250-...` continuation lines, then `250 ...`). A peer that
//! sends something that is not a reply gets a [`ReplyError`] rather than an
//! ever-growing buffer.

use std::fmt;

/// Longest reply line we accept, CRLF excluded. RFC 5321 allows 512 octets;
/// real servers sometimes send more, so be generous but bounded.
pub const MAX_LINE: usize = 4096;

/// Most lines in one reply (EHLO replies have a dozen or two).
pub const MAX_LINES: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyError {
    /// A line does not start with a three-digit code 2xx..5xx followed by
    /// ' ', '-' or the line end.
    BadLine,
    /// A continuation line carries a different code than the first line.
    CodeMismatch,
    /// A line longer than [`MAX_LINE`], or more than [`MAX_LINES`] lines.
    TooLong,
}

impl fmt::Display for ReplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReplyError::BadLine => "malformed reply line",
            ReplyError::CodeMismatch => "reply lines with different codes",
            ReplyError::TooLong => "reply too long",
        })
    }
}

impl std::error::Error for ReplyError {}

/// A complete reply found at the front of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parsed {
    pub code: u16,
    /// Bytes the reply occupies, final line end included.
    pub len: usize,
}

/// Looks for one complete reply at the start of `buf`.
///
/// `Ok(None)` means "need more bytes". Lines end in CRLF; a bare LF is
/// accepted too, since being lenient here costs nothing and a load generator
/// should not fail on a server's cosmetic sloppiness.
pub fn parse_reply(buf: &[u8]) -> Result<Option<Parsed>, ReplyError> {
    let mut pos = 0;
    let mut code = None;
    for _ in 0..MAX_LINES {
        let rest = &buf[pos..];
        let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
            // Check what is there already, so that garbage is reported as
            // soon as it arrives instead of after the read timeout.
            check_partial_line(rest)?;
            return Ok(None);
        };
        let line = rest[..nl].strip_suffix(b"\r").unwrap_or(&rest[..nl]);
        if line.len() > MAX_LINE {
            return Err(ReplyError::TooLong);
        }
        let (line_code, last) = parse_line(line)?;
        match code {
            None => code = Some(line_code),
            Some(c) if c != line_code => return Err(ReplyError::CodeMismatch),
            Some(_) => {}
        }
        pos += nl + 1;
        if last {
            return Ok(Some(Parsed {
                code: line_code,
                len: pos,
            }));
        }
    }
    Err(ReplyError::TooLong)
}

/// Code of one reply line and whether it is the last line of the reply.
fn parse_line(line: &[u8]) -> Result<(u16, bool), ReplyError> {
    if line.len() < 3
        || !line[..3].iter().all(u8::is_ascii_digit)
        || !(b'2'..=b'5').contains(&line[0])
    {
        return Err(ReplyError::BadLine);
    }
    let code = line[..3]
        .iter()
        .fold(0u16, |acc, &d| acc * 10 + u16::from(d - b'0'));
    match line.get(3) {
        None | Some(b' ') => Ok((code, true)),
        Some(b'-') => Ok((code, false)),
        Some(_) => Err(ReplyError::BadLine),
    }
}

/// Rejects an unterminated line early if what has arrived of it can already
/// not be a reply line (or is too long to ever become one).
fn check_partial_line(partial: &[u8]) -> Result<(), ReplyError> {
    if partial.len() > MAX_LINE + 1 {
        return Err(ReplyError::TooLong);
    }
    let ok = partial.iter().take(4).enumerate().all(|(i, &b)| match i {
        0 => (b'2'..=b'5').contains(&b),
        1 | 2 => b.is_ascii_digit(),
        _ => matches!(b, b' ' | b'-' | b'\r'),
    });
    if ok {
        Ok(())
    } else {
        Err(ReplyError::BadLine)
    }
}

/// The reply as one line of text: each line without its line end, joined
/// with " / " (e.g. `250 2.0.0 Ok: queued as 4F2A1`). Used for the ack log
/// and error messages; non-UTF-8 bytes are replaced.
pub fn reply_text(reply: &[u8]) -> String {
    let mut out = Vec::with_capacity(reply.len());
    push_reply_text(&mut out, reply);
    String::from_utf8_lossy(&out).into_owned()
}

/// [`reply_text`] appended to a byte buffer as is, without allocating (the
/// ack log's hot path).
pub fn push_reply_text(out: &mut Vec<u8>, reply: &[u8]) {
    for (i, line) in reply_lines(reply).enumerate() {
        if i > 0 {
            out.extend_from_slice(b" / ");
        }
        out.extend_from_slice(line);
    }
}

/// True if a (complete, EHLO) reply advertises `keyword` as an extension,
/// e.g. `PIPELINING`. Case-insensitive, matches the first word of a line.
pub fn has_extension(reply: &[u8], keyword: &str) -> bool {
    reply_lines(reply).skip(1).any(|line| {
        let text = line.get(4..).unwrap_or_default();
        let word = text.split(|&b| b == b' ').next().unwrap_or_default();
        word.eq_ignore_ascii_case(keyword.as_bytes())
    })
}

fn reply_lines(reply: &[u8]) -> impl Iterator<Item = &[u8]> {
    reply
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .filter(|l| !l.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(buf: &[u8]) -> Parsed {
        parse_reply(buf).unwrap().expect("complete reply")
    }

    #[test]
    fn single_line() {
        assert_eq!(complete(b"250 OK\r\n"), Parsed { code: 250, len: 8 });
        assert_eq!(complete(b"354 go ahead\r\n").code, 354);
        // A code alone on its line is a complete reply too.
        assert_eq!(complete(b"250\r\n"), Parsed { code: 250, len: 5 });
    }

    #[test]
    fn multi_line_ehlo() {
        let ehlo =
            b"250-mx.example.test\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250 8BITMIME\r\n";
        let p = complete(ehlo);
        assert_eq!(
            p,
            Parsed {
                code: 250,
                len: ehlo.len()
            }
        );
        assert!(has_extension(ehlo, "pipelining"));
        assert!(has_extension(ehlo, "SIZE"));
        assert!(!has_extension(ehlo, "STARTTLS"));
        // The greeting line is the host name, not an extension.
        assert!(!has_extension(ehlo, "mx.example.test"));
    }

    #[test]
    fn split_anywhere_is_incomplete_until_the_last_line_end() {
        let full = b"250-first\r\n250-second\r\n250 last\r\n";
        for cut in 0..full.len() {
            assert_eq!(parse_reply(&full[..cut]), Ok(None), "cut at {cut}");
        }
        assert_eq!(complete(full).len, full.len());
    }

    #[test]
    fn pipelined_replies_come_out_one_at_a_time() {
        let buf = b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n451 4.3.0 later\r\n354 go\r\n";
        let mut pos = 0;
        let mut codes = vec![];
        while pos < buf.len() {
            let p = complete(&buf[pos..]);
            codes.push(p.code);
            pos += p.len;
        }
        assert_eq!(codes, [250, 250, 451, 354]);
        assert_eq!(pos, buf.len());
    }

    #[test]
    fn bare_lf_is_accepted() {
        assert_eq!(complete(b"250-a\n250 b\n"), Parsed { code: 250, len: 12 });
    }

    #[test]
    fn garbage_is_an_error() {
        assert_eq!(
            parse_reply(b"HTTP/1.1 400 Bad\r\n"),
            Err(ReplyError::BadLine)
        );
        assert_eq!(parse_reply(b"hello"), Err(ReplyError::BadLine));
        assert_eq!(parse_reply(b"25x OK\r\n"), Err(ReplyError::BadLine));
        assert_eq!(parse_reply(b"250OK\r\n"), Err(ReplyError::BadLine));
        assert_eq!(
            parse_reply(b"650 no such class\r\n"),
            Err(ReplyError::BadLine)
        );
        assert_eq!(parse_reply(b"\r\n"), Err(ReplyError::BadLine));
        assert_eq!(
            parse_reply(b"250-a\r\n251 b\r\n"),
            Err(ReplyError::CodeMismatch)
        );
        // Partial garbage is reported before its line end arrives.
        assert_eq!(parse_reply(b"GET"), Err(ReplyError::BadLine));
        assert_eq!(parse_reply(b"2"), Ok(None));
        assert_eq!(parse_reply(b"250"), Ok(None));
        assert_eq!(parse_reply(b"250x"), Err(ReplyError::BadLine));
    }

    #[test]
    fn overlong_input_is_bounded() {
        let mut long = b"250 ".to_vec();
        long.resize(MAX_LINE + 10, b'a');
        assert_eq!(parse_reply(&long), Err(ReplyError::TooLong));
        long.extend_from_slice(b"\r\n");
        assert_eq!(parse_reply(&long), Err(ReplyError::TooLong));
        let many = b"250-x\r\n".repeat(MAX_LINES + 1);
        assert_eq!(parse_reply(&many), Err(ReplyError::TooLong));
    }

    #[test]
    fn reply_text_joins_lines() {
        assert_eq!(
            reply_text(b"250 2.0.0 Ok: queued as 4F2A1\r\n"),
            "250 2.0.0 Ok: queued as 4F2A1"
        );
        assert_eq!(reply_text(b"250-a\r\n250 b\r\n"), "250-a / 250 b");
    }
}
