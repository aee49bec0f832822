//! A small lexer over a whole IMAP command (literals included), for the
//! extensions whose grammar imap-codec lacks (the extended LIST, MULTIAPPEND):
//! it finds where each argument lies, so the command can be taken apart and
//! its pieces handed to imap-codec.

/// The command does not follow the grammar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Syntax;

/// A position in a command's bytes.
pub(crate) struct Lexer<'a> {
    pub(crate) bytes: &'a [u8],
    pub(crate) at: usize,
}

impl<'a> Lexer<'a> {
    pub(crate) fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    pub(crate) fn next(&mut self) -> Option<u8> {
        let byte = self.peek();
        self.at += 1;
        byte
    }

    pub(crate) fn space(&mut self) -> Result<(), Syntax> {
        match self.next() {
            Some(b' ') => Ok(()),
            _ => Err(Syntax),
        }
    }

    /// `keyword` (case-insensitive), taken if it is next.
    pub(crate) fn keyword(&mut self, keyword: &[u8]) -> bool {
        let found = self
            .bytes
            .get(self.at..self.at + keyword.len())
            .is_some_and(|w| w.eq_ignore_ascii_case(keyword));
        if found {
            self.at += keyword.len();
        }
        found
    }

    /// An atom: up to a space, a parenthesis or the line's end.
    pub(crate) fn word(&mut self) -> &'a [u8] {
        let start = self.at;
        while let Some(b) = self.peek() {
            if matches!(b, b' ' | b'(' | b')' | b'\r' | b'\n') {
                break;
            }
            self.at += 1;
        }
        &self.bytes[start..self.at]
    }

    /// `(word word ...)`, the parentheses taken too.
    pub(crate) fn words(&mut self) -> Result<Vec<&'a [u8]>, Syntax> {
        if self.next() != Some(b'(') {
            return Err(Syntax);
        }
        let mut words = Vec::new();
        loop {
            match self.peek() {
                Some(b')') => {
                    self.at += 1;
                    return Ok(words);
                }
                Some(b' ') if !words.is_empty() => self.at += 1,
                _ => {}
            }
            let word = self.word();
            if word.is_empty() {
                return Err(Syntax);
            }
            words.push(word);
        }
    }

    /// A string as written: an atom (wildcards included), a quoted string
    /// or a literal with its `{n}` and CRLF.
    pub(crate) fn string(&mut self) -> Result<&'a [u8], Syntax> {
        let start = self.at;
        match self.peek() {
            Some(b'"') => {
                self.at += 1;
                loop {
                    match self.next() {
                        Some(b'\\') => self.at += 1,
                        Some(b'"') => break,
                        Some(b'\r' | b'\n') | None => return Err(Syntax),
                        Some(_) => {}
                    }
                }
            }
            Some(b'{') => {
                self.literal()?;
            }
            _ => {
                if self.word().is_empty() {
                    return Err(Syntax);
                }
            }
        }
        Ok(&self.bytes[start..self.at])
    }

    /// A literal: `{n}`, `{n+}`, or a literal8 (`~{n}`, RFC 3516) with
    /// its CRLF and its `n` octets; returns where its octets lie.
    pub(crate) fn literal(&mut self) -> Result<std::ops::Range<usize>, Syntax> {
        self.keyword(b"~");
        if self.next() != Some(b'{') {
            return Err(Syntax);
        }
        let close = self.bytes[self.at..]
            .iter()
            .position(|&b| b == b'}')
            .ok_or(Syntax)?;
        let digits = &self.bytes[self.at..self.at + close];
        let digits = digits.strip_suffix(b"+").unwrap_or(digits);
        let length: usize = std::str::from_utf8(digits)
            .ok()
            .and_then(|d| d.parse().ok())
            .ok_or(Syntax)?;
        self.at += close + 1;
        // A length near usize::MAX must not wrap past the end: whatever
        // the client announces, the octets are only those it sent.
        if !self.keyword(b"\r\n") || self.bytes.len() - self.at < length {
            return Err(Syntax);
        }
        self.at += length;
        Ok(self.at - length..self.at)
    }
}

/// The value of an astring as [`Lexer::string`] found it written: an atom,
/// a quoted string (escapes undone) or a literal (its octets).
pub(crate) fn astring(written: &[u8]) -> Result<String, Syntax> {
    let value = match written.first() {
        Some(b'"') => {
            let inner = written
                .get(1..written.len().saturating_sub(1))
                .unwrap_or_default();
            let mut out = Vec::with_capacity(inner.len());
            let mut escaped = false;
            for &b in inner {
                if b == b'\\' && !escaped {
                    escaped = true;
                    continue;
                }
                escaped = false;
                out.push(b);
            }
            out
        }
        Some(b'{' | b'~') => {
            let start = written.iter().position(|&b| b == b'\n').ok_or(Syntax)? + 1;
            written[start..].to_vec()
        }
        _ => written.to_vec(),
    };
    String::from_utf8(value).map_err(|_| Syntax)
}
