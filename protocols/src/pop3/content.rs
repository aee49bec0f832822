//! Message content in a RETR or TOP response: CRLF line endings, dot-stuffed
//! (RFC 1939 §3), cut after the header and `n` body lines for TOP, and ended
//! by the terminator line.
//!
//! Stored messages should already end every line in CRLF, but the session
//! must never send a bare CR or LF whatever the store holds: a client that
//! splits lines differently could read the end of the response, and then
//! commands of its own, out of a message's content. So lines end here as
//! [`crate::line_ends`] says: a bare LF or CR ends one (CRs before an LF
//! belong to that line end), and a last line without an ending gets CRLF.

use crate::line_ends::split_line;

use super::replies;

/// Append `message` as the body of a multi-line response, then the
/// terminator. With `top`, only the header, the blank line after it and the
/// first `top` body lines are sent (RFC 1939 §7); a message without a blank
/// line is all header and is sent whole.
pub(super) fn write(out: &mut Vec<u8>, message: &[u8], top: Option<usize>) {
    // Room for the content, a little stuffing and the terminator.
    out.reserve(message.len() + message.len() / 64 + replies::END.len());
    if top.is_none() && sendable_as_is(message) {
        // Stored mail is CRLF throughout and rarely has a line that starts
        // with a dot: then the response is the message itself.
        out.extend_from_slice(message);
        out.extend_from_slice(replies::END);
        return;
    }
    let mut rest = message;
    let mut in_header = true;
    let mut body_lines_left = top;
    while !rest.is_empty() {
        if !in_header && body_lines_left == Some(0) {
            break;
        }
        let (line, next) = split_line(rest);
        if line.first() == Some(&b'.') {
            out.push(b'.');
        }
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
        if in_header {
            in_header = !line.is_empty();
        } else if let Some(left) = &mut body_lines_left {
            *left -= 1;
        }
        rest = next;
    }
    out.extend_from_slice(replies::END);
}

/// Whether `message` needs no stuffing and no line-end repair: every line
/// ends in CRLF (the last one too), no CR or LF stands alone, and no line
/// starts with a dot. Two vectorised scans instead of one per line.
fn sendable_as_is(message: &[u8]) -> bool {
    if message.is_empty() || message[0] == b'.' || !message.ends_with(b"\r\n") {
        return false;
    }
    let mut lf = 0;
    for at in memchr::memchr_iter(b'\n', message) {
        if at == 0 || message[at - 1] != b'\r' || message.get(at + 1) == Some(&b'.') {
            return false;
        }
        lf += 1;
    }
    memchr::memchr_iter(b'\r', message).count() == lf
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(message: &[u8], top: Option<usize>) -> String {
        let mut out = Vec::new();
        write(&mut out, message, top);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn whole_message_is_stuffed_and_terminated() {
        assert_eq!(
            sent(b"A: b\r\n\r\n.hidden\r\n..two\r\nx.\r\n", None),
            "A: b\r\n\r\n..hidden\r\n...two\r\nx.\r\n.\r\n"
        );
        assert_eq!(sent(b".\r\n", None), "..\r\n.\r\n");
        assert_eq!(sent(b"", None), ".\r\n");
        assert_eq!(sent(b"\r\n", None), "\r\n.\r\n");
    }

    #[test]
    fn clean_messages_go_out_as_they_are() {
        assert!(sendable_as_is(b"A: b\r\n\r\nbody\r\n"));
        for needs_work in [
            &b""[..],
            b".x\r\n",
            b"a\r\n.b\r\n",
            b"a\nb\r\n",
            b"a\rb\r\n",
            b"a\r\nb",
            b"\n",
        ] {
            assert!(!sendable_as_is(needs_work), "{needs_work:?}");
        }
        assert_eq!(sent(b"A: b\r\n\r\nx\r\n", None), "A: b\r\n\r\nx\r\n.\r\n");
    }

    #[test]
    fn line_endings_become_crlf() {
        assert_eq!(sent(b"a\nb\rc\r\nd", None), "a\r\nb\r\nc\r\nd\r\n.\r\n");
        // A bare LF before a dot cannot end the response early.
        assert_eq!(sent(b"a\n.\nb", None), "a\r\n..\r\nb\r\n.\r\n");
        // CRs before an LF are one line end: a header line ended `\r\r\n`
        // must not become a blank line that ends the header.
        assert_eq!(sent(b"a\r\r\n", None), "a\r\n.\r\n");
        assert_eq!(
            sent(b"Subject: x\r\r\nTo: y\r\n\r\nb\r\n", Some(0)),
            "Subject: x\r\nTo: y\r\n\r\n.\r\n"
        );
    }

    #[test]
    fn top_cuts_after_header_and_n_lines() {
        let message = b"A: 1\r\nB: 2\r\n\r\none\r\n.two\r\nthree\r\n";
        assert_eq!(sent(message, Some(0)), "A: 1\r\nB: 2\r\n\r\n.\r\n");
        assert_eq!(sent(message, Some(1)), "A: 1\r\nB: 2\r\n\r\none\r\n.\r\n");
        assert_eq!(
            sent(message, Some(2)),
            "A: 1\r\nB: 2\r\n\r\none\r\n..two\r\n.\r\n"
        );
        assert_eq!(sent(message, Some(usize::MAX)), sent(message, None));
        // Blank lines in the body are body lines.
        assert_eq!(
            sent(b"A: 1\n\n\n\nx\n", Some(2)),
            "A: 1\r\n\r\n\r\n\r\n.\r\n"
        );
    }

    #[test]
    fn top_of_a_message_without_body() {
        assert_eq!(sent(b"A: 1\r\nB: 2", Some(0)), "A: 1\r\nB: 2\r\n.\r\n");
        assert_eq!(sent(b"A: 1\r\n\r\n", Some(5)), "A: 1\r\n\r\n.\r\n");
    }
}
