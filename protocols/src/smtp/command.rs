//! Parsing one command line into a [`Command`].
//!
//! This layer knows verbs and argument shapes only. Addresses and ESMTP
//! parameters are parsed later by the session, after it has checked that the
//! command is allowed now, so that a client out of sequence hears 503 rather
//! than a syntax complaint about an argument that would not matter.
//!
//! Verbs are case-insensitive (RFC 5321 §2.4). Trailing spaces are ignored;
//! `MAIL FROM: <a@b>` (space after the colon) is accepted, as most servers do.

use super::replies::{self, Reply};

/// One parsed command line, borrowing its arguments from the line.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Command<'a> {
    /// `EHLO domain`
    Ehlo(&'a str),
    /// `HELO domain`
    Helo(&'a str),
    /// `LHLO domain` (LMTP, RFC 2033 §4.1)
    Lhlo(&'a str),
    /// `MAIL FROM:<path> [params]`: the text after `FROM:`.
    Mail(&'a str),
    /// `RCPT TO:<path> [params]`: the text after `TO:`.
    Rcpt(&'a str),
    /// `DATA`
    Data,
    /// `BDAT size [LAST]` (RFC 3030).
    Bdat {
        /// Octets that follow the command line.
        size: u64,
        /// This chunk ends the message.
        last: bool,
    },
    /// `RSET`
    Rset,
    /// `NOOP [string]`
    Noop,
    /// `QUIT`
    Quit,
    /// `VRFY string`
    Vrfy,
    /// `EXPN string`
    Expn,
    /// `HELP [string]`
    Help,
    /// `STARTTLS` (RFC 3207).
    StartTls,
    /// `AUTH mechanism [initial-response]` (RFC 4954).
    Auth {
        /// The SASL mechanism name, as sent.
        mechanism: &'a str,
        /// The base64 initial response; `=` stands for an empty one.
        initial: Option<&'a str>,
    },
}

/// Why a line is not a command we can run.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum ParseError {
    /// The line is not UTF-8.
    NotUtf8,
    /// A verb we do not know.
    Unknown,
    /// A verb of SMTP or its extensions that we do not offer (TURN,
    /// ETRN, ATRN, SEND, SOML, SAML): 502, not 500 (RFC 5321 §4.2.4).
    NotImplemented,
    /// A known verb with bad arguments; the reply says which.
    Syntax(Reply),
    /// BDAT with a size but something other than LAST after it: its
    /// octets follow all the same, and must not be read as commands.
    BdatKeyword {
        /// The chunk's size, to be read and dropped.
        size: u64,
    },
}

impl ParseError {
    /// The reply this error earns.
    pub(super) fn into_reply(self) -> Reply {
        match self {
            ParseError::NotUtf8 => replies::NOT_UTF8,
            ParseError::Unknown => replies::UNKNOWN_COMMAND,
            ParseError::NotImplemented => replies::NOT_IMPLEMENTED,
            ParseError::Syntax(reply) => reply,
            ParseError::BdatKeyword { .. } => replies::BDAT_SYNTAX,
        }
    }
}

/// Significant digits past which a BDAT size is `u64::MAX`'s width.
const MAX_SIZE_DIGITS: usize = 20;

/// Parse a command line, terminator already stripped.
pub(super) fn parse(line: &[u8]) -> Result<Command<'_>, ParseError> {
    let line = std::str::from_utf8(line).map_err(|_| ParseError::NotUtf8)?;
    let line = line.trim_end_matches([' ', '\t']);
    let (verb, arg) = match line.split_once(' ') {
        Some((verb, arg)) => (verb, arg.trim_start_matches(' ')),
        None => (line, ""),
    };
    let is = |name: &str| verb.eq_ignore_ascii_case(name);
    let syntax = |reply: Reply| Err(ParseError::Syntax(reply));

    if is("EHLO") || is("HELO") || is("LHLO") {
        // A name with control characters (NUL, escapes, tabs) is no domain
        // or address literal (RFC 5321 §4.1.1.1), and would travel on into
        // trace and Authentication-Results fields.
        let named = !arg.is_empty() && !arg.chars().any(char::is_control);
        match (is("EHLO"), is("HELO"), named) {
            (true, _, true) => Ok(Command::Ehlo(arg)),
            (_, true, true) => Ok(Command::Helo(arg)),
            (_, _, true) => Ok(Command::Lhlo(arg)),
            (true, _, false) => syntax(replies::EHLO_SYNTAX),
            (_, true, false) => syntax(replies::HELO_SYNTAX),
            (_, _, false) => syntax(replies::LHLO_SYNTAX),
        }
    } else if is("MAIL") {
        after_prefix(arg, "FROM:")
            .map(Command::Mail)
            .ok_or(ParseError::Syntax(replies::MAIL_SYNTAX))
    } else if is("RCPT") {
        after_prefix(arg, "TO:")
            .map(Command::Rcpt)
            .ok_or(ParseError::Syntax(replies::RCPT_SYNTAX))
    } else if is("DATA") {
        no_argument(arg, Command::Data, replies::DATA_SYNTAX)
    } else if is("BDAT") {
        parse_bdat(arg)
    } else if is("RSET") {
        no_argument(arg, Command::Rset, replies::RSET_SYNTAX)
    } else if is("NOOP") {
        Ok(Command::Noop)
    } else if is("QUIT") {
        no_argument(arg, Command::Quit, replies::QUIT_SYNTAX)
    } else if is("VRFY") {
        if arg.is_empty() {
            return syntax(replies::VRFY_SYNTAX);
        }
        Ok(Command::Vrfy)
    } else if is("EXPN") {
        Ok(Command::Expn)
    } else if is("HELP") {
        Ok(Command::Help)
    } else if is("STARTTLS") {
        no_argument(arg, Command::StartTls, replies::STARTTLS_SYNTAX)
    } else if is("AUTH") {
        let mut words = arg.split(' ').filter(|w| !w.is_empty());
        match (words.next(), words.next(), words.next()) {
            (Some(mechanism), initial, None) => Ok(Command::Auth { mechanism, initial }),
            _ => syntax(replies::AUTH_SYNTAX),
        }
    } else if NOT_OFFERED.iter().any(|verb| is(verb)) {
        Err(ParseError::NotImplemented)
    } else {
        Err(ParseError::Unknown)
    }
}

/// Verbs of RFC 5321 and its extensions that this server does not offer.
const NOT_OFFERED: [&str; 6] = ["TURN", "ETRN", "ATRN", "SEND", "SOML", "SAML"];

/// `arg` without its case-insensitive `prefix` and the spaces after it.
fn after_prefix<'a>(arg: &'a str, prefix: &str) -> Option<&'a str> {
    let head = arg.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| arg[prefix.len()..].trim_start_matches(' '))
}

fn no_argument<'a>(
    arg: &str,
    command: Command<'a>,
    usage: Reply,
) -> Result<Command<'a>, ParseError> {
    if arg.is_empty() {
        Ok(command)
    } else {
        Err(ParseError::Syntax(usage))
    }
}

/// `size [LAST]` of BDAT.
fn parse_bdat(arg: &str) -> Result<Command<'static>, ParseError> {
    let (size, rest) = match arg.split_once(' ') {
        Some((size, rest)) => (size, rest.trim_start_matches(' ')),
        None => (arg, ""),
    };
    let size = parse_decimal(size).ok_or(ParseError::Syntax(replies::BDAT_SYNTAX))?;
    let last = match rest {
        "" => false,
        _ if rest.eq_ignore_ascii_case("LAST") => true,
        _ => return Err(ParseError::BdatKeyword { size }),
    };
    Ok(Command::Bdat { size, last })
}

/// A decimal number of ASCII digits only (RFC 3030's `1*DIGIT`: leading
/// zeros allowed), no sign, no spaces; one past `u64::MAX` is `u64::MAX`,
/// a chunk no message can hold, read and dropped like any too big.
fn parse_decimal(digits: &str) -> Option<u64> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let significant = digits.trim_start_matches('0');
    if significant.len() > MAX_SIZE_DIGITS {
        return Some(u64::MAX);
    }
    Some(
        significant
            .parse()
            .unwrap_or(if significant.is_empty() { 0 } else { u64::MAX }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(line: &str) -> Command<'_> {
        parse(line.as_bytes()).unwrap()
    }

    fn err(line: &[u8]) -> Reply {
        parse(line).unwrap_err().into_reply()
    }

    #[test]
    fn verbs_are_case_insensitive() {
        assert_eq!(ok("ehlo a.b"), Command::Ehlo("a.b"));
        assert_eq!(ok("HeLo a.b"), Command::Helo("a.b"));
        assert_eq!(ok("lhlo a.b"), Command::Lhlo("a.b"));
        assert_eq!(ok("mail from:<a@b> SIZE=1"), Command::Mail("<a@b> SIZE=1"));
        assert_eq!(ok("MAIL FROM: <a@b>"), Command::Mail("<a@b>"));
        assert_eq!(ok("rcpt To:<a@b>"), Command::Rcpt("<a@b>"));
        assert_eq!(ok("data"), Command::Data);
        assert_eq!(ok("Quit "), Command::Quit);
        assert_eq!(ok("noop anything"), Command::Noop);
        assert_eq!(ok("starttls"), Command::StartTls);
        assert_eq!(
            ok("auth plain AGEAYg=="),
            Command::Auth {
                mechanism: "plain",
                initial: Some("AGEAYg==")
            }
        );
        assert_eq!(
            ok("AUTH LOGIN"),
            Command::Auth {
                mechanism: "LOGIN",
                initial: None
            }
        );
    }

    #[test]
    fn bdat_arguments() {
        assert_eq!(
            ok("BDAT 0 LAST"),
            Command::Bdat {
                size: 0,
                last: true
            }
        );
        assert_eq!(
            ok("bdat 12  last"),
            Command::Bdat {
                size: 12,
                last: true
            }
        );
        assert_eq!(
            ok("BDAT 18446744073709551615"),
            Command::Bdat {
                size: u64::MAX,
                last: false
            }
        );
        // Any number of digits (RFC 3030): leading zeros, and sizes past
        // u64 (a chunk no message holds, read and dropped).
        for (line, size) in [
            ("BDAT 000000000000000000006", 6),
            ("BDAT 18446744073709551616", u64::MAX),
            ("BDAT 99999999999999999999999", u64::MAX),
            ("BDAT 000", 0),
        ] {
            assert_eq!(ok(line), Command::Bdat { size, last: false }, "{line}");
        }
        for bad in ["BDAT", "BDAT -1", "BDAT +1", "BDAT 1x"] {
            assert_eq!(err(bad.as_bytes()), replies::BDAT_SYNTAX, "{bad}");
        }
        for keyword in ["BDAT 1 LATER", "BDAT 1 LAST x"] {
            assert_eq!(err(keyword.as_bytes()), replies::BDAT_SYNTAX, "{keyword}");
        }
    }

    #[test]
    fn argument_errors() {
        assert_eq!(err(b"EHLO"), replies::EHLO_SYNTAX);
        assert_eq!(err(b"HELO  "), replies::HELO_SYNTAX);
        assert_eq!(err(b"MAIL TO:<a@b>"), replies::MAIL_SYNTAX);
        assert_eq!(err(b"MAIL"), replies::MAIL_SYNTAX);
        assert_eq!(err(b"RCPT FROM:<a@b>"), replies::RCPT_SYNTAX);
        assert_eq!(err(b"DATA now"), replies::DATA_SYNTAX);
        assert_eq!(err(b"RSET x"), replies::RSET_SYNTAX);
        assert_eq!(err(b"QUIT x"), replies::QUIT_SYNTAX);
        assert_eq!(err(b"VRFY"), replies::VRFY_SYNTAX);
        assert_eq!(err(b"STARTTLS now"), replies::STARTTLS_SYNTAX);
        assert_eq!(err(b"AUTH"), replies::AUTH_SYNTAX);
        assert_eq!(err(b"AUTH PLAIN a b"), replies::AUTH_SYNTAX);
    }

    #[test]
    fn unknown_and_not_utf8() {
        assert_eq!(err(b"FROB"), replies::UNKNOWN_COMMAND);
        assert_eq!(err(b""), replies::UNKNOWN_COMMAND);
        assert_eq!(err(b"MAILFROM:<a@b>"), replies::UNKNOWN_COMMAND);
        assert_eq!(err(b"NOOP \xff"), replies::NOT_UTF8);
    }
}
