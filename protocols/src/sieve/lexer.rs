//! Sieve's tokens (RFC 5228 §8.1): identifiers, tags, numbers with their
//! K/M/G quantifiers, quoted and multi-line strings, and the punctuation
//! of string lists, test lists and blocks. Comments and white space are
//! skipped; line ends may be CRLF or a bare LF (scripts are often edited
//! on systems that write LF).

use super::SieveError;

/// One token and the line it starts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// What it is.
    pub kind: Kind,
    /// 1-based line number, for error messages.
    pub line: usize,
}

/// The kinds of token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// `if`, `fileinto`, `header`...
    Identifier(String),
    /// `:contains`, `:over`... (without the colon, lowercased).
    Tag(String),
    /// A number, its quantifier applied.
    Number(u64),
    /// A quoted or multi-line string, escapes and dot-stuffing undone.
    String(String),
    /// `[`, `]`, `(`, `)`, `{`, `}`, `,` or `;`.
    Punct(char),
}

/// The tokens of `script`, or where it first breaks the grammar.
pub fn tokens(script: &str) -> Result<Vec<Token>, SieveError> {
    let mut lexer = Lexer {
        text: script.as_bytes(),
        script,
        at: 0,
        line: 1,
    };
    let mut out = Vec::new();
    while let Some(token) = lexer.next()? {
        out.push(token);
    }
    Ok(out)
}

struct Lexer<'a> {
    text: &'a [u8],
    script: &'a str,
    at: usize,
    line: usize,
}

impl Lexer<'_> {
    fn error(&self, what: impl Into<String>) -> SieveError {
        SieveError::new(self.line, what)
    }

    fn peek(&self) -> Option<u8> {
        self.text.get(self.at).copied()
    }

    fn next(&mut self) -> Result<Option<Token>, SieveError> {
        self.skip_blanks()?;
        let Some(c) = self.peek() else {
            return Ok(None);
        };
        let line = self.line;
        let kind = match c {
            b'[' | b']' | b'(' | b')' | b'{' | b'}' | b',' | b';' => {
                self.at += 1;
                Kind::Punct(c as char)
            }
            b'"' => Kind::String(self.quoted()?),
            b':' => {
                self.at += 1;
                let name = self.identifier();
                if name.is_empty() {
                    return Err(self.error("a tag needs a name after ':'"));
                }
                Kind::Tag(name.to_ascii_lowercase())
            }
            b'0'..=b'9' => Kind::Number(self.number()?),
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let name = self.identifier();
                if name.eq_ignore_ascii_case("text") && self.peek() == Some(b':') {
                    self.at += 1;
                    Kind::String(self.multi_line()?)
                } else {
                    Kind::Identifier(name.to_ascii_lowercase())
                }
            }
            _ => {
                let shown = self.script[self.at..].chars().next().unwrap_or('?');
                return Err(self.error(format!("unexpected character {shown:?}")));
            }
        };
        Ok(Some(Token { kind, line }))
    }

    /// White space and comments (`# ...` to the line's end, `/* ... */`).
    fn skip_blanks(&mut self) -> Result<(), SieveError> {
        loop {
            match self.peek() {
                Some(b'\n') => {
                    self.line += 1;
                    self.at += 1;
                }
                Some(b' ' | b'\t' | b'\r') => self.at += 1,
                Some(b'#') => {
                    while self.peek().is_some_and(|c| c != b'\n') {
                        self.at += 1;
                    }
                }
                Some(b'/') if self.text.get(self.at + 1) == Some(&b'*') => {
                    let start = self.line;
                    self.at += 2;
                    loop {
                        match self.peek() {
                            None => {
                                return Err(SieveError::new(start, "comment never closed ('*/')"))
                            }
                            Some(b'*') if self.text.get(self.at + 1) == Some(&b'/') => {
                                self.at += 2;
                                break;
                            }
                            Some(c) => {
                                self.line += usize::from(c == b'\n');
                                self.at += 1;
                            }
                        }
                    }
                }
                _ => return Ok(()),
            }
        }
    }

    fn identifier(&mut self) -> String {
        let start = self.at;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_')
        {
            self.at += 1;
        }
        self.script[start..self.at].to_owned()
    }

    fn number(&mut self) -> Result<u64, SieveError> {
        let start = self.at;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.at += 1;
        }
        let digits = &self.script[start..self.at];
        let scale: u64 = match self.peek().map(|c| c.to_ascii_uppercase()) {
            Some(b'K') => 1 << 10,
            Some(b'M') => 1 << 20,
            Some(b'G') => 1 << 30,
            _ => 1,
        };
        if scale > 1 {
            self.at += 1;
        }
        digits
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(scale))
            .ok_or_else(|| self.error(format!("number {digits} is too large")))
    }

    /// A quoted string: `\` takes the next character as it is.
    fn quoted(&mut self) -> Result<String, SieveError> {
        let start = self.line;
        self.at += 1;
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None => return Err(SieveError::new(start, "string never closed ('\"')")),
                Some(b'"') => {
                    self.at += 1;
                    break;
                }
                Some(b'\\') if self.at + 1 < self.text.len() => {
                    let c = self.text[self.at + 1];
                    self.line += usize::from(c == b'\n');
                    out.push(c);
                    self.at += 2;
                }
                Some(c) => {
                    self.line += usize::from(c == b'\n');
                    out.push(c);
                    self.at += 1;
                }
            }
        }
        // An escape splits no UTF-8 sequence: it takes one ASCII octet, or
        // the first octet of a character whose rest follows unescaped.
        String::from_utf8(out).map_err(|_| SieveError::new(start, "string is not UTF-8"))
    }

    /// `text:` then blanks or a comment to the line's end, then lines up to
    /// one holding a lone `.`; a line's leading `..` stands for `.`.
    fn multi_line(&mut self) -> Result<String, SieveError> {
        let start = self.line;
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.at += 1;
        }
        if self.peek() == Some(b'#') {
            while self.peek().is_some_and(|c| c != b'\n') {
                self.at += 1;
            }
        }
        if self.peek() == Some(b'\r') {
            self.at += 1;
        }
        if self.peek() != Some(b'\n') {
            return Err(self.error("text: must end its line"));
        }
        self.at += 1;
        self.line += 1;
        let mut out = String::new();
        loop {
            let rest = &self.script[self.at..];
            let Some(end) = rest.find('\n') else {
                return Err(SieveError::new(
                    start,
                    "text: never ended (a line with '.')",
                ));
            };
            let line = rest[..end].strip_suffix('\r').unwrap_or(&rest[..end]);
            self.at += end + 1;
            self.line += 1;
            if line == "." {
                return Ok(out);
            }
            out.push_str(
                line.strip_prefix('.')
                    .filter(|l| l.starts_with('.'))
                    .unwrap_or(line),
            );
            out.push_str("\r\n");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(script: &str) -> Vec<Kind> {
        tokens(script)
            .unwrap()
            .into_iter()
            .map(|t| t.kind)
            .collect()
    }

    #[test]
    fn tokens_of_a_small_script() {
        let got = kinds("if size :over 100K { fileinto \"Big\"; } # big\n/* c */ stop;");
        use Kind::*;
        assert_eq!(
            got,
            vec![
                Identifier("if".into()),
                Identifier("size".into()),
                Tag("over".into()),
                Number(100 * 1024),
                Punct('{'),
                Identifier("fileinto".into()),
                String("Big".into()),
                Punct(';'),
                Punct('}'),
                Identifier("stop".into()),
                Punct(';'),
            ]
        );
    }

    #[test]
    fn escapes_multi_line_strings_and_dot_stuffing() {
        assert_eq!(
            kinds(r#""a\"b\\c\d""#),
            vec![Kind::String("a\"b\\cd".into())]
        );
        let text = "text: # reason\r\nI am away.\r\n..hidden dot\n.\r\n;";
        assert_eq!(
            kinds(text),
            vec![
                Kind::String("I am away.\r\n.hidden dot\r\n".into()),
                Kind::Punct(';')
            ]
        );
    }

    #[test]
    fn errors_name_their_line() {
        let e = tokens("keep;\n\"open").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(tokens("/* open").is_err());
        assert!(tokens("text:\nno end").is_err());
        assert!(tokens("99999999999999999999").is_err());
        assert!(tokens("18446744073709551615G").is_err());
        assert!(tokens("keep; @").is_err());
    }
}
