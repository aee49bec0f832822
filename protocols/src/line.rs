//! The command-line receiver both SMTP and POP3 use: splits the byte stream
//! into command lines without ever holding more than `max_line_len` bytes.
//!
//! A command line ends at LF. A CR right before it is part of the terminator;
//! a line ended by a bare LF is accepted as well, as Postfix does: being
//! lenient here is harmless, because commands are never relayed. The strict
//! CRLF rules that stop SMTP smuggling apply to message content (see
//! `smtp::data`).

use memchr::memchr;

/// What one call to [`LineReader::read`] found.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Line<'a> {
    /// A whole line, terminator stripped.
    Complete(&'a [u8]),
    /// A line longer than the limit ended here; its bytes were dropped.
    TooLong,
}

/// Accumulates one command line across `feed` calls.
#[derive(Debug, Default)]
pub(super) struct LineReader {
    /// Start of a line that has not reached its LF yet. Its capacity is reused.
    partial: Vec<u8>,
    /// The line in `partial` was handed out: clear it on the next read.
    handed_out: bool,
    /// Inside a too-long line: drop bytes until its LF.
    skipping: bool,
}

impl LineReader {
    /// Consume bytes from `input` up to and including the first LF.
    ///
    /// Returns the bytes consumed and the line if one ended. Without an LF in
    /// `input` everything is consumed (kept or, past the limit, dropped).
    /// `max_len` counts the terminator. A line that never needed buffering is
    /// returned straight from `input`, without a copy.
    pub(super) fn read<'a>(
        &'a mut self,
        input: &'a [u8],
        max_len: usize,
    ) -> (usize, Option<Line<'a>>) {
        if self.handed_out {
            self.partial.clear();
            self.handed_out = false;
        }
        let Some(lf) = memchr(b'\n', input) else {
            // No end yet. A line already at the limit without its LF is too
            // long whatever comes next, so stop keeping it.
            if self.skipping || self.partial.len() + input.len() >= max_len {
                self.partial.clear();
                self.skipping = true;
            } else {
                self.partial.extend_from_slice(input);
            }
            return (input.len(), None);
        };
        let used = lf + 1;
        if self.skipping || self.partial.len() + used > max_len {
            self.partial.clear();
            self.skipping = false;
            return (used, Some(Line::TooLong));
        }
        let line = if self.partial.is_empty() {
            &input[..lf]
        } else {
            self.partial.extend_from_slice(&input[..lf]);
            self.handed_out = true;
            &self.partial[..]
        };
        (
            used,
            Some(Line::Complete(line.strip_suffix(b"\r").unwrap_or(line))),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(chunks: &[&[u8]], max: usize) -> Vec<Option<Vec<u8>>> {
        let mut reader = LineReader::default();
        let mut found = Vec::new();
        for chunk in chunks {
            let mut rest = *chunk;
            while !rest.is_empty() {
                let (used, line) = reader.read(rest, max);
                match line {
                    Some(Line::Complete(l)) => found.push(Some(l.to_vec())),
                    Some(Line::TooLong) => found.push(None),
                    None => {}
                }
                rest = &rest[used..];
            }
        }
        found
    }

    #[test]
    fn strips_crlf_or_lf() {
        assert_eq!(
            lines(&[b"A\r\nB\nC\r\r\n"], 100),
            [
                Some(b"A".to_vec()),
                Some(b"B".to_vec()),
                Some(b"C\r".to_vec())
            ]
        );
    }

    #[test]
    fn joins_lines_across_reads() {
        assert_eq!(
            lines(&[b"NO", b"OP\r", b"\n"], 100),
            [Some(b"NOOP".to_vec())]
        );
    }

    #[test]
    fn limit_counts_the_terminator() {
        assert_eq!(lines(&[b"1234\r\n"], 6), [Some(b"1234".to_vec())]);
        assert_eq!(lines(&[b"12345\r\n"], 6), [None]);
        assert_eq!(
            lines(&[b"123", b"45\r\nOK\r\n"], 6),
            [None, Some(b"OK".to_vec())]
        );
        assert_eq!(
            lines(&[b"123456", b"789", b"\nOK\n"], 6),
            [None, Some(b"OK".to_vec())]
        );
    }
}
