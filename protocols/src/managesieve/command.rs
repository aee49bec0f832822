//! ManageSieve commands as they arrive (RFC 5804 §4): a command name, then
//! arguments that are quoted strings, literals (`{n}` or `{n+}`, then CRLF
//! and n octets) or numbers, then CRLF. Parsing starts again from a
//! command's first byte each time more input comes, so nothing is kept
//! between calls but the bytes; [`Parsed::Incomplete`] says how many are
//! needed at least, so a large literal is not re-read at every packet.

/// One argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arg {
    /// A quoted string or a literal.
    String(Vec<u8>),
    /// A number.
    Number(u64),
}

/// What the parser made of the input.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A whole command (name in upper case) and how many octets it took.
    Command {
        /// The name.
        name: String,
        /// Its arguments.
        args: Vec<Arg>,
        /// Octets used, CRLF included.
        used: usize,
    },
    /// More input is needed: at least this many octets in all.
    Incomplete(usize),
    /// The command is malformed; the line it is on ends at `used` (the
    /// session answers NO and goes on after it), or `None` when its end
    /// cannot be found (the session closes).
    Bad {
        /// Why.
        why: &'static str,
        /// Where the bad line ends, if known.
        used: Option<usize>,
    },
    /// A literal larger than `limit` was announced: `size` octets that
    /// start at `from`.
    TooLarge {
        /// Where its octets start.
        from: usize,
        /// How many were announced.
        size: usize,
    },
}

/// Longest quoted string (RFC 5804 §4: at most 1024 octets).
pub const MAX_QUOTED: usize = 1024;

/// Most arguments a command takes (AUTHENTICATE, PUTSCRIPT, RENAMESCRIPT
/// and HAVESPACE take two).
pub const MAX_ARGS: usize = 4;

/// Most octets of a command outside its literals.
pub const MAX_LINE: usize = 8 * 1024;

/// Parse one command at the start of `input`; literals up to `limit`.
pub fn parse(input: &[u8], limit: usize) -> Parsed {
    let name_end = input
        .iter()
        .position(|b| !b.is_ascii_alphabetic())
        .unwrap_or(input.len());
    if name_end == input.len() {
        return Parsed::Incomplete(input.len() + 1);
    }
    let name = String::from_utf8_lossy(&input[..name_end]).to_ascii_uppercase();
    let mut at = name_end;
    let mut args = Vec::new();
    // Octets of literals so far: the rest of the command is its line.
    let mut literals = 0;
    loop {
        while input.get(at) == Some(&b' ') {
            at += 1;
        }
        if at - literals > MAX_LINE {
            return Parsed::Bad {
                why: "Command line too long",
                used: None,
            };
        }
        if args.len() > MAX_ARGS {
            return bad_line(input, at, "Too many arguments");
        }
        let Some(&c) = input.get(at) else {
            return Parsed::Incomplete(at + 1);
        };
        match c {
            b'\r' | b'\n' => {
                let end = match (c, input.get(at + 1)) {
                    (b'\n', _) => at + 1,
                    (_, Some(b'\n')) => at + 2,
                    (_, None) => return Parsed::Incomplete(at + 2),
                    _ => return bad_line(input, at, "CR without LF"),
                };
                if name.is_empty() {
                    return bad_line(input, at, "expected a command");
                }
                return Parsed::Command {
                    name,
                    args,
                    used: end,
                };
            }
            b'"' => {
                let mut value = Vec::new();
                let mut i = at + 1;
                loop {
                    if value.len() > MAX_QUOTED {
                        return bad_line(input, i, "Quoted string too long; send a literal");
                    }
                    match input.get(i) {
                        None => return Parsed::Incomplete(i + 1),
                        Some(b'"') => break,
                        Some(b'\\') => match input.get(i + 1) {
                            None => return Parsed::Incomplete(i + 2),
                            Some(&e @ (b'"' | b'\\')) => {
                                value.push(e);
                                i += 2;
                            }
                            Some(_) => return bad_line(input, i, "bad escape in a string"),
                        },
                        Some(b'\r' | b'\n') => return bad_line(input, i, "line end in a string"),
                        Some(&b) => {
                            value.push(b);
                            i += 1;
                        }
                    }
                }
                args.push(Arg::String(value));
                at = i + 1;
            }
            b'{' => {
                let Some(close) = input[at..].iter().position(|&b| b == b'}') else {
                    if input.len() - at > 24 {
                        return bad_line(input, at, "bad literal");
                    }
                    return Parsed::Incomplete(input.len() + 1);
                };
                let spec = &input[at + 1..at + close];
                let digits = spec.strip_suffix(b"+").unwrap_or(spec);
                let Some(size) = std::str::from_utf8(digits)
                    .ok()
                    .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|d| d.parse::<usize>().ok())
                else {
                    return bad_line(input, at, "bad literal");
                };
                let mut start = at + close + 1;
                match (input.get(start), input.get(start + 1)) {
                    (Some(b'\r'), Some(b'\n')) => start += 2,
                    (Some(b'\n'), _) => start += 1,
                    (None, _) | (Some(b'\r'), None) => return Parsed::Incomplete(start + 2),
                    _ => return bad_line(input, at, "a literal's size must end its line"),
                }
                if size > limit {
                    return Parsed::TooLarge { from: start, size };
                }
                if input.len() < start + size {
                    return Parsed::Incomplete(start + size);
                }
                args.push(Arg::String(input[start..start + size].to_vec()));
                literals += size;
                at = start + size;
            }
            b'0'..=b'9' => {
                let end = input[at..]
                    .iter()
                    .position(|b| !b.is_ascii_digit())
                    .map_or(input.len(), |n| at + n);
                if end == input.len() {
                    return Parsed::Incomplete(end + 1);
                }
                match std::str::from_utf8(&input[at..end])
                    .ok()
                    .and_then(|d| d.parse().ok())
                {
                    Some(n) => args.push(Arg::Number(n)),
                    None => return bad_line(input, at, "number too large"),
                }
                at = end;
            }
            _ => return bad_line(input, at, "unexpected character"),
        }
    }
}

/// A malformed command: its line ends at the next LF from `from`.
fn bad_line(input: &[u8], from: usize, why: &'static str) -> Parsed {
    let used = memchr::memchr(b'\n', &input[from..]).map(|lf| from + lf + 1);
    Parsed::Bad { why, used }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(input: &[u8]) -> (String, Vec<Arg>, usize) {
        match parse(input, 1000) {
            Parsed::Command { name, args, used } => (name, args, used),
            other => panic!("{other:?}"),
        }
    }

    fn s(text: &str) -> Arg {
        Arg::String(text.as_bytes().to_vec())
    }

    #[test]
    fn strings_literals_and_numbers() {
        let (name, args, used) =
            command(b"putScript \"my \\\"x\\\" \\\\\" {5+}\r\nkeep;\r\nNOOP\r\n");
        assert_eq!(name, "PUTSCRIPT");
        assert_eq!(args, [s("my \"x\" \\"), s("keep;")]);
        assert_eq!(used, 37);
        let (name, args, _) = command(b"HAVESPACE \"a\" 1024\r\n");
        assert_eq!(name, "HAVESPACE");
        assert_eq!(args, [s("a"), Arg::Number(1024)]);
        let (_, args, _) = command(b"CHECKSCRIPT {2}\nab\n");
        assert_eq!(args, [s("ab")]);
        let (name, args, _) = command(b"LOGOUT\r\n");
        assert_eq!((name.as_str(), args.len()), ("LOGOUT", 0));
    }

    #[test]
    fn incomplete_input_says_how_much_is_needed() {
        assert_eq!(parse(b"LIST", 10), Parsed::Incomplete(5));
        assert_eq!(parse(b"GETSCRIPT \"a", 10), Parsed::Incomplete(13));
        assert_eq!(
            parse(b"PUTSCRIPT \"a\" {100+}\r\nkeep", 1000),
            Parsed::Incomplete(122)
        );
        assert_eq!(
            parse(b"PUTSCRIPT \"a\" {100+}\r\n", 10),
            Parsed::TooLarge {
                from: 22,
                size: 100
            }
        );
        let quoted = format!("GETSCRIPT \"{}\"\r\n", "x".repeat(MAX_QUOTED + 1));
        assert!(matches!(
            parse(quoted.as_bytes(), 10),
            Parsed::Bad { used: Some(_), .. }
        ));
        let spaces = format!("NOOP{}", " ".repeat(MAX_LINE + 1));
        assert!(matches!(
            parse(spaces.as_bytes(), 10),
            Parsed::Bad { used: None, .. }
        ));
        let many = format!("NOOP{}\r\n", " {1+}\r\nx".repeat(MAX_ARGS + 2));
        assert!(matches!(
            parse(many.as_bytes(), 10),
            Parsed::Bad { used: Some(_), .. }
        ));
    }

    #[test]
    fn malformed_commands_end_at_their_line() {
        for input in [
            &b"GETSCRIPT \"a\nb\"\r\nNOOP\r\n"[..],
            b"GETSCRIPT (a)\r\nNOOP\r\n",
            b"GETSCRIPT {x}\r\nNOOP\r\n",
            b"GETSCRIPT \"\\n\"\r\nNOOP\r\n",
        ] {
            match parse(input, 100) {
                Parsed::Bad {
                    used: Some(used), ..
                } => {
                    assert!(
                        input[used..].starts_with(b"b\"") || input[used..].starts_with(b"NOOP"),
                        "{:?}",
                        String::from_utf8_lossy(input)
                    )
                }
                other => panic!("{other:?} for {:?}", String::from_utf8_lossy(input)),
            }
        }
        assert!(matches!(
            parse(b"\r\n", 10),
            Parsed::Bad { used: Some(2), .. }
        ));
    }
}
