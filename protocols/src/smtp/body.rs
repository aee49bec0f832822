//! The message body being received, shared by DATA and BDAT.
//!
//! Bytes are kept until the message turns out to be a lost cause (over the
//! size limit, or a bare CR/LF was seen); from then on they are counted out
//! and dropped, so a refused message costs no memory however long it is.
//!
//! Both faults are tracked exactly to the end, whichever came first: the
//! verdict must not depend on where the input happened to be cut (a cut can
//! change which fault is *noticed* first, never which faults there are).
//! The buffer's capacity survives between messages when the driver hands it
//! back through [`ServerSession::recycle`](super::ServerSession::recycle).

use super::replies::{self, Reply};

/// Most bytes reserved ahead of time from a client's size claim (SIZE= or a
/// BDAT chunk size): a claim is not a promise, and an idle session should not
/// pin megabytes.
const MAX_RESERVE: usize = 1 << 20;

/// Largest buffer kept for the next message once the current one is done or
/// refused; bigger ones are freed.
const MAX_KEPT: usize = 1 << 20;

/// One message's content and what went wrong with it.
#[derive(Debug, Default)]
pub(super) struct Body {
    /// The content, while the message may still be accepted.
    data: Vec<u8>,
    /// Content bytes so far, kept or not.
    size: usize,
    limit: usize,
    bare_line_ending: bool,
    too_big: bool,
}

impl Body {
    /// Start a message of at most `limit` bytes; `expected` is the client's
    /// size claim, if any, used only to pre-size the buffer.
    pub(super) fn begin(&mut self, limit: usize, expected: usize) {
        self.data.clear();
        self.size = 0;
        self.limit = limit;
        self.bare_line_ending = false;
        self.too_big = false;
        self.reserve(expected);
    }

    /// Make room for `additional` more bytes, within reason.
    pub(super) fn reserve(&mut self, additional: usize) {
        let room = self.limit.saturating_sub(self.size);
        self.data.reserve(additional.min(room).min(MAX_RESERVE));
    }

    /// Append message bytes.
    pub(super) fn extend(&mut self, bytes: &[u8]) {
        self.size = self.size.saturating_add(bytes.len());
        if self.size > self.limit && !self.too_big {
            self.too_big = true;
            self.discard();
        }
        if !self.is_refused() {
            self.grow_for(bytes.len());
            self.data.extend_from_slice(bytes);
        }
    }

    /// Make room for `more` bytes, growing by a quarter (not by doubling),
    /// so that what the buffer holds stays close to what it was sent: the
    /// driver charges the capacity to its memory budget.
    fn grow_for(&mut self, more: usize) {
        let free = self.data.capacity() - self.data.len();
        if free >= more {
            return;
        }
        let step = more.max(self.data.len() / 4).max(64 * 1024);
        let room = self.limit.saturating_sub(self.data.len()).max(more);
        self.data.reserve_exact(step.min(room));
    }

    /// Note a bare CR or LF: the message will be refused.
    pub(super) fn bare_line_ending(&mut self) {
        self.bare_line_ending = true;
        self.discard();
    }

    /// The message already went over the size limit.
    pub(super) fn is_too_big(&self) -> bool {
        self.too_big
    }

    /// Content bytes received so far, kept or not.
    pub(super) fn received(&self) -> usize {
        self.size
    }

    /// Bytes of memory the buffer holds.
    pub(super) fn held(&self) -> usize {
        self.data.capacity()
    }

    /// A bare CR or LF was seen.
    pub(super) fn has_bare_line_ending(&self) -> bool {
        self.bare_line_ending
    }

    /// True once the message can only be refused.
    fn is_refused(&self) -> bool {
        self.bare_line_ending || self.too_big
    }

    /// End of the message: its bytes, or the refusal it earned. With both
    /// faults, size is reported, as BDAT must (it refuses an oversized chunk
    /// at once, before LAST), so that DATA and BDAT answer alike.
    pub(super) fn finish(&mut self) -> Result<Vec<u8>, Reply> {
        if self.too_big {
            Err(replies::MESSAGE_TOO_BIG)
        } else if self.bare_line_ending {
            Err(replies::BARE_LINE_ENDING)
        } else {
            Ok(std::mem::take(&mut self.data))
        }
    }

    /// Drop what was kept, and keep the buffer only if it is modest.
    pub(super) fn discard(&mut self) {
        self.data.clear();
        self.data.shrink_to(MAX_KEPT);
    }

    /// Take back a finished message's buffer for the next message.
    pub(super) fn recycle(&mut self, mut buf: Vec<u8>) {
        if buf.capacity() <= MAX_KEPT && buf.capacity() > self.data.capacity() {
            buf.clear();
            self.data = buf;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_bytes_within_the_limit() {
        let mut body = Body::default();
        body.begin(5, 0);
        body.extend(b"abc");
        body.extend(b"de");
        assert_eq!(body.finish(), Ok(b"abcde".to_vec()));
    }

    #[test]
    fn over_the_limit_drops_everything() {
        let mut body = Body::default();
        body.begin(5, 100);
        body.extend(b"abc");
        body.extend(b"def");
        assert!(body.is_too_big());
        assert!(body.data.is_empty());
        body.extend(b"g");
        assert!(body.data.is_empty());
        assert_eq!(body.finish(), Err(replies::MESSAGE_TOO_BIG));
    }

    #[test]
    fn size_is_counted_after_a_bare_line_ending() {
        let mut body = Body::default();
        body.begin(3, 0);
        body.extend(b"ab");
        body.bare_line_ending();
        assert!(!body.is_too_big());
        body.extend(b"cd");
        assert!(body.is_too_big());
        assert_eq!(body.finish(), Err(replies::MESSAGE_TOO_BIG));
    }

    #[test]
    fn recycled_buffer_is_reused() {
        let mut body = Body::default();
        body.recycle(Vec::with_capacity(4096));
        body.begin(10_000, 0);
        assert!(body.data.capacity() >= 4096);
        body.recycle(Vec::with_capacity(MAX_KEPT + 1));
        assert!(body.data.capacity() < MAX_KEPT);
    }
}
