//! BDAT chunks (RFC 3030 CHUNKING).
//!
//! A chunk is exactly `size` octets after the BDAT line: no dot-stuffing, no
//! end marker. Those octets are always consumed, even when the chunk is
//! refused (no MAIL, no recipients, over the size limit), because otherwise
//! they would be read as commands: RFC 3030 §4.2 asks a server that
//! pipelines to accept and discard them.
//!
//! The content must still use CRLF line endings: a message received by BDAT
//! may be relayed with DATA, where a bare LF would be a smuggling vector. The
//! check runs across chunk boundaries (a CR ending one chunk must be followed
//! by the LF starting the next), and a bad message is refused at LAST.

use memchr::memchr2_iter;

use super::replies::Reply;

/// One announced chunk being received.
#[derive(Debug)]
pub(super) struct Chunk {
    /// The announced size.
    pub(super) size: u64,
    /// Octets still to come.
    remaining: u64,
    /// `BDAT n LAST`: the message ends with this chunk.
    pub(super) last: bool,
    /// Known before any octet arrives: the chunk is dropped and this is the
    /// answer once it has been read.
    pub(super) refusal: Option<Reply>,
}

impl Chunk {
    /// A chunk of `size` octets.
    pub(super) fn new(size: u64, last: bool, refusal: Option<Reply>) -> Self {
        Chunk {
            size,
            remaining: size,
            last,
            refusal,
        }
    }

    /// The part of `input` that belongs to this chunk, now counted as read.
    pub(super) fn take<'a>(&mut self, input: &'a [u8]) -> &'a [u8] {
        let n = usize::try_from(self.remaining).map_or(input.len(), |r| r.min(input.len()));
        self.remaining -= n as u64;
        &input[..n]
    }

    /// Every octet of the chunk has been read.
    pub(super) fn is_complete(&self) -> bool {
        self.remaining == 0
    }
}

/// Checks that every CR is followed by LF and every LF preceded by CR, over
/// the concatenation of a message's chunks.
#[derive(Debug, Default, Clone)]
pub(super) struct LineEndings {
    /// The previous chunk ended with CR.
    after_cr: bool,
}

impl LineEndings {
    /// Scan the next bytes of the message; false if they hold a bare CR or LF.
    pub(super) fn scan(&mut self, bytes: &[u8]) -> bool {
        let Some(&last) = bytes.last() else {
            return true;
        };
        if self.after_cr && bytes[0] != b'\n' {
            return false;
        }
        for i in memchr2_iter(b'\r', b'\n', bytes) {
            let ok = if bytes[i] == b'\r' {
                // A CR at the very end is settled by the next chunk.
                bytes.get(i + 1).is_none_or(|&b| b == b'\n')
            } else if i == 0 {
                self.after_cr
            } else {
                bytes[i - 1] == b'\r'
            };
            if !ok {
                return false;
            }
        }
        self.after_cr = last == b'\r';
        true
    }

    /// End of the message: false if it ended with a bare CR.
    pub(super) fn finish(&self) -> bool {
        !self.after_cr
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clean(chunks: &[&[u8]]) -> bool {
        let mut check = LineEndings::default();
        chunks.iter().all(|c| check.scan(c)) && check.finish()
    }

    #[test]
    fn crlf_across_chunks_is_fine() {
        assert!(clean(&[b"a\r\nb\r\n"]));
        assert!(clean(&[b"a\r", b"\nb\r", b"", b"\n"]));
        assert!(clean(&[b"no line end at all"]));
        assert!(clean(&[]));
    }

    #[test]
    fn bare_endings_are_caught_across_chunks() {
        assert!(!clean(&[b"a\nb"]));
        assert!(!clean(&[b"a\rb"]));
        assert!(!clean(&[b"a\r", b"b"]));
        assert!(!clean(&[b"a", b"\nb"]));
        assert!(!clean(&[b"a\r"]));
        assert!(!clean(&[b"\n"]));
        assert!(!clean(&[b"\r\r\n"]));
    }

    #[test]
    fn chunk_takes_exactly_its_size() {
        let mut chunk = Chunk::new(5, false, None);
        assert_eq!(chunk.take(b"abc"), b"abc");
        assert!(!chunk.is_complete());
        assert_eq!(chunk.take(b"defgh"), b"de");
        assert!(chunk.is_complete());
        assert_eq!(chunk.take(b"x"), b"");
    }
}
