//! The DATA receiver: finds the end of the message, undoes dot-stuffing and
//! flags bare line endings (RFC 5321 §4.1.1.4, §4.5.2).
//!
//! # Smuggling
//! Only `CRLF . CRLF` ends the message. A bare LF or bare CR anywhere in the
//! content marks the message bad but never ends it, so `\n.\n`, `\r.\r`,
//! `\r\n.\n` or `\n.\r\n` followed by "commands" stay body bytes. A bad
//! message is then refused as a whole (550 5.6.0): another server reading the
//! same bytes might find a different end, and relaying it would let a sender
//! slip a second, forged message past that server (SMTP smuggling).
//!
//! The receiver is a five-state machine over the bytes. Inside text, lines
//! ending in CRLF and followed by anything but a dot need no edit, so the
//! scan (`memchr2_iter` over CR and LF) steps over them and a whole run of
//! such lines is copied in one go: one copy per read, not per line.

use memchr::memchr2_iter;

use super::body::Body;

/// Where in a line the receiver is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum State {
    /// After CRLF (or at the start of the content: the DATA line's own CRLF
    /// counts as the first CRLF of `CRLF.CRLF`).
    #[default]
    LineStart,
    /// Inside a line.
    Text,
    /// After a CR inside a line.
    Cr,
    /// After a `.` at the start of a line.
    Dot,
    /// After `.` CR at the start of a line: one LF from the end.
    DotCr,
}

/// Receives one message after `354`.
#[derive(Debug, Default)]
pub(super) struct DataReceiver {
    state: State,
}

impl DataReceiver {
    /// Consume message bytes from `input` into `body`.
    ///
    /// Returns the bytes consumed and whether the end marker was reached; if
    /// it was, the bytes after it are not consumed. The CRLF before the final
    /// dot belongs to the message, so the content ends with CRLF (or is empty).
    pub(super) fn ingest(&mut self, input: &[u8], body: &mut Body) -> (usize, bool) {
        let mut i = 0;
        while let Some(&byte) = input.get(i) {
            match self.state {
                State::Text => {
                    let rest = &input[i..];
                    let mut hits = memchr2_iter(b'\r', b'\n', rest);
                    loop {
                        let Some(hit) = hits.next() else {
                            body.extend(rest);
                            return (input.len(), false);
                        };
                        if rest[hit] == b'\r' {
                            match rest.get(hit + 1) {
                                // CRLF, then more text: nothing to edit; the
                                // next hit is this LF.
                                Some(b'\n') if rest.get(hit + 2).is_some_and(|&b| b != b'.') => {
                                    hits.next();
                                    continue;
                                }
                                // CRLF, then a dot or the end of the input:
                                // the line start decides.
                                Some(b'\n') => {
                                    body.extend(&rest[..hit + 2]);
                                    i += hit + 2;
                                    self.state = State::LineStart;
                                    break;
                                }
                                None => {
                                    body.extend(&rest[..hit]);
                                    i += hit + 1;
                                    self.state = State::Cr;
                                    break;
                                }
                                Some(_) => {}
                            }
                        }
                        // A bare CR or LF: not content; the message is bad.
                        body.extend(&rest[..hit]);
                        i += hit + 1;
                        body.bare_line_ending();
                        break;
                    }
                }
                State::Cr => {
                    if byte == b'\n' {
                        body.extend(b"\r\n");
                        i += 1;
                        self.state = State::LineStart;
                    } else {
                        // A CR not followed by LF; look at this byte again as text.
                        body.bare_line_ending();
                        self.state = State::Text;
                    }
                }
                State::LineStart => {
                    if byte == b'.' {
                        i += 1;
                        self.state = State::Dot;
                    } else {
                        self.state = State::Text;
                    }
                }
                State::Dot => {
                    if byte == b'\r' {
                        i += 1;
                        self.state = State::DotCr;
                    } else {
                        // Dot-stuffing: a leading dot followed by more text is
                        // dropped. The next byte is ordinary text (a bare LF
                        // here is flagged like anywhere else).
                        self.state = State::Text;
                    }
                }
                State::DotCr => {
                    if byte == b'\n' {
                        self.state = State::LineStart;
                        return (i + 1, true);
                    }
                    // `.` CR then something else: the CR is bare.
                    body.bare_line_ending();
                    self.state = State::Text;
                }
            }
        }
        (input.len(), false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smtp::replies;
    use crate::smtp::Reply;

    /// Feed `input` in pieces of `step` bytes; returns the content (or the
    /// refusal) and how many bytes the message took.
    fn receive(input: &[u8], step: usize) -> (Result<Vec<u8>, Reply>, Option<usize>) {
        let mut rx = DataReceiver::default();
        let mut body = Body::default();
        body.begin(1000, 0);
        let mut pos = 0;
        while pos < input.len() {
            let end = (pos + step).min(input.len());
            let (used, done) = rx.ingest(&input[pos..end], &mut body);
            pos += used;
            if done {
                return (body.finish(), Some(pos));
            }
        }
        (body.finish(), None)
    }

    fn every_step(input: &[u8]) -> (Result<Vec<u8>, Reply>, Option<usize>) {
        let whole = receive(input, input.len().max(1));
        for step in 1..input.len() {
            assert_eq!(receive(input, step), whole, "step {step}");
        }
        whole
    }

    #[test]
    fn plain_message() {
        let (data, end) = every_step(b"Subject: x\r\n\r\nhi\r\n.\r\nNOOP\r\n");
        assert_eq!(data.unwrap(), b"Subject: x\r\n\r\nhi\r\n");
        assert_eq!(end, Some(21));
    }

    #[test]
    fn empty_message() {
        assert_eq!(every_step(b".\r\n"), (Ok(vec![]), Some(3)));
    }

    #[test]
    fn dot_unstuffing() {
        let (data, _) = every_step(b"..\r\n...x\r\n.y.\r\na.b\r\n.\r\n");
        assert_eq!(data.unwrap(), b".\r\n..x\r\ny.\r\na.b\r\n");
    }

    #[test]
    fn smuggling_attempts_do_not_end_the_message() {
        for smuggle in [
            &b"a\n.\nMAIL FROM:<x@y>\r\n"[..],
            b"a\r.\rMAIL FROM:<x@y>\r\n",
            b"a\r\n.\nMAIL FROM:<x@y>\r\n",
            b"a\n.\r\nMAIL FROM:<x@y>\r\n",
            b"a\r.\r\nMAIL FROM:<x@y>\r\n",
            b"a\r\n.\rMAIL FROM:<x@y>\r\n",
            b"a\rb\r\n",
            b"a\r\r\n",
            b"\n\r\n",
        ] {
            let mut input = smuggle.to_vec();
            input.extend_from_slice(b".\r\n");
            let (data, end) = every_step(&input);
            assert_eq!(data, Err(replies::BARE_LINE_ENDING), "{smuggle:?}");
            assert_eq!(end, Some(input.len()), "{smuggle:?}");
        }
    }

    #[test]
    fn not_finished_without_the_marker() {
        assert_eq!(every_step(b"abc\r\n.\r").1, None);
        assert_eq!(every_step(b"abc\r\n. \r\n").1, None);
    }
}
