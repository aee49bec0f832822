//! Parsing one command line: first the verb ([`split`]), then, once the
//! session has checked that the verb is allowed in its state, the arguments
//! ([`parse`]). A client in the wrong state hears "not valid in this state"
//! rather than a complaint about an argument that would not matter.
//!
//! Verbs are case-insensitive (RFC 1939 §3). Arguments are separated by
//! spaces; runs of spaces and trailing spaces are tolerated, except in PASS,
//! whose argument is the rest of the line as sent: RFC 1939 §7 lets a
//! password contain spaces.

use super::replies::{self, Reply};

/// The commands this server knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verb {
    User,
    Pass,
    Auth,
    Stls,
    Capa,
    Quit,
    Stat,
    List,
    Retr,
    Dele,
    Noop,
    Rset,
    Top,
    Uidl,
}

impl Verb {
    /// True if the verb may be used in this state (RFC 1939 §4, §5; RFC 2595
    /// §4: STLS only before login; RFC 2449 §5: CAPA in both).
    pub(super) fn allowed(self, authorized: bool) -> bool {
        match self {
            Verb::Capa | Verb::Quit => true,
            Verb::User | Verb::Pass | Verb::Auth | Verb::Stls => !authorized,
            Verb::Stat
            | Verb::List
            | Verb::Retr
            | Verb::Dele
            | Verb::Noop
            | Verb::Rset
            | Verb::Top
            | Verb::Uidl => authorized,
        }
    }
}

/// One command with its arguments, borrowing from the line.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Command<'a> {
    /// `USER name`
    User(&'a str),
    /// `PASS password` (the rest of the line).
    Pass(&'a str),
    /// `AUTH [mechanism [initial-response]]` (RFC 5034).
    Auth {
        /// Absent for a bare AUTH, which lists the mechanisms.
        mechanism: Option<&'a str>,
        /// The base64 initial response; `=` stands for an empty one.
        initial: Option<&'a str>,
    },
    /// `STLS` (RFC 2595)
    Stls,
    /// `CAPA` (RFC 2449)
    Capa,
    /// `QUIT`
    Quit,
    /// `STAT`
    Stat,
    /// `LIST [msg]`
    List(Option<usize>),
    /// `RETR msg`
    Retr(usize),
    /// `DELE msg`
    Dele(usize),
    /// `NOOP`
    Noop,
    /// `RSET`
    Rset,
    /// `TOP msg n`
    Top(usize, usize),
    /// `UIDL [msg]`
    Uidl(Option<usize>),
}

/// Why a line has no verb we know.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum ParseError {
    /// The line is not UTF-8.
    NotUtf8,
    /// A verb we do not know.
    Unknown,
}

impl ParseError {
    /// The response this error earns.
    pub(super) fn into_reply(self) -> Reply {
        match self {
            ParseError::NotUtf8 => replies::NOT_UTF8,
            ParseError::Unknown => replies::UNKNOWN_COMMAND,
        }
    }
}

/// The verb of a command line (terminator stripped) and the text after the
/// space that follows it.
pub(super) fn split(line: &[u8]) -> Result<(Verb, &str), ParseError> {
    let line = std::str::from_utf8(line).map_err(|_| ParseError::NotUtf8)?;
    let (word, arg) = line.split_once(' ').unwrap_or((line, ""));
    const VERBS: [(&str, Verb); 14] = [
        ("USER", Verb::User),
        ("PASS", Verb::Pass),
        ("AUTH", Verb::Auth),
        ("STLS", Verb::Stls),
        ("CAPA", Verb::Capa),
        ("QUIT", Verb::Quit),
        ("STAT", Verb::Stat),
        ("LIST", Verb::List),
        ("RETR", Verb::Retr),
        ("DELE", Verb::Dele),
        ("NOOP", Verb::Noop),
        ("RSET", Verb::Rset),
        ("TOP", Verb::Top),
        ("UIDL", Verb::Uidl),
    ];
    VERBS
        .iter()
        .find(|(name, _)| word.eq_ignore_ascii_case(name))
        .map(|&(_, verb)| (verb, arg))
        .ok_or(ParseError::Unknown)
}

/// The arguments of `verb`; the error is the syntax response.
pub(super) fn parse(verb: Verb, arg: &str) -> Result<Command<'_>, Reply> {
    let mut words = arg.split([' ', '\t']).filter(|w| !w.is_empty());
    let (first, second, third) = (words.next(), words.next(), words.next());
    let none = |command: Command<'static>| match first {
        None => Ok(command),
        Some(_) => Err(replies::NO_ARGUMENT),
    };
    let optional_number = || match (first, second) {
        (None, _) => Ok(None),
        (Some(n), None) => number(n).map(Some).ok_or(replies::NUMBER_SYNTAX),
        _ => Err(replies::NUMBER_SYNTAX),
    };
    let one_number = || match (first, second) {
        (Some(n), None) => number(n).ok_or(replies::NUMBER_SYNTAX),
        _ => Err(replies::NUMBER_SYNTAX),
    };
    match verb {
        Verb::User => match (first, second) {
            (Some(name), None) => Ok(Command::User(name)),
            _ => Err(replies::USER_SYNTAX),
        },
        Verb::Pass if arg.is_empty() => Err(replies::PASS_SYNTAX),
        Verb::Pass => Ok(Command::Pass(arg)),
        Verb::Auth => match third {
            None => Ok(Command::Auth {
                mechanism: first,
                initial: second,
            }),
            Some(_) => Err(replies::AUTH_SYNTAX),
        },
        Verb::Stls => none(Command::Stls),
        Verb::Capa => none(Command::Capa),
        Verb::Quit => none(Command::Quit),
        Verb::Stat => none(Command::Stat),
        Verb::Noop => none(Command::Noop),
        Verb::Rset => none(Command::Rset),
        Verb::List => optional_number().map(Command::List),
        Verb::Uidl => optional_number().map(Command::Uidl),
        Verb::Retr => one_number().map(Command::Retr),
        Verb::Dele => one_number().map(Command::Dele),
        Verb::Top => match (first.and_then(number), second.and_then(number), third) {
            (Some(msg), Some(lines), None) => Ok(Command::Top(msg, lines)),
            _ => Err(replies::TOP_SYNTAX),
        },
    }
}

/// A decimal number of ASCII digits only (no sign). Values past `usize`
/// saturate: as a message number that is simply out of range, as a TOP line
/// count it means "all of them".
fn number(digits: &str) -> Option<usize> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(digits.bytes().fold(0usize, |n, d| {
        n.saturating_mul(10).saturating_add(usize::from(d - b'0'))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(line: &str) -> Command<'_> {
        let (verb, arg) = split(line.as_bytes()).unwrap();
        parse(verb, arg).unwrap()
    }

    fn err(line: &str) -> Reply {
        let (verb, arg) = split(line.as_bytes()).unwrap();
        parse(verb, arg).unwrap_err()
    }

    #[test]
    fn verbs_are_case_insensitive() {
        assert_eq!(ok("stat"), Command::Stat);
        assert_eq!(ok("Top 1 0"), Command::Top(1, 0));
        assert_eq!(ok("uIdL"), Command::Uidl(None));
        assert_eq!(ok("capa"), Command::Capa);
        assert_eq!(ok("stls"), Command::Stls);
    }

    #[test]
    fn numbers() {
        assert_eq!(ok("LIST 2"), Command::List(Some(2)));
        assert_eq!(ok("LIST  02 "), Command::List(Some(2)));
        assert_eq!(ok("RETR 0"), Command::Retr(0));
        assert_eq!(
            ok("DELE 99999999999999999999999"),
            Command::Dele(usize::MAX)
        );
        assert_eq!(
            ok("TOP 1 99999999999999999999999"),
            Command::Top(1, usize::MAX)
        );
        for bad in [
            "RETR", "RETR x", "RETR -1", "RETR +1", "RETR 1 2", "LIST 1 2", "UIDL a",
        ] {
            assert_eq!(err(bad), replies::NUMBER_SYNTAX, "{bad}");
        }
        for bad in [
            "TOP",
            "TOP 1",
            "TOP 1 x",
            "TOP x 1",
            "TOP 1 2 3",
            "TOP 1 -2",
        ] {
            assert_eq!(err(bad), replies::TOP_SYNTAX, "{bad}");
        }
    }

    #[test]
    fn pass_keeps_the_rest_of_the_line() {
        assert_eq!(ok("PASS a b "), Command::Pass("a b "));
        assert_eq!(ok("pass  x"), Command::Pass(" x"));
        assert_eq!(err("PASS"), replies::PASS_SYNTAX);
        assert_eq!(err("PASS "), replies::PASS_SYNTAX);
    }

    #[test]
    fn user_and_auth() {
        assert_eq!(ok("USER alice "), Command::User("alice"));
        assert_eq!(err("USER"), replies::USER_SYNTAX);
        assert_eq!(err("USER a b"), replies::USER_SYNTAX);
        assert_eq!(
            ok("AUTH"),
            Command::Auth {
                mechanism: None,
                initial: None
            }
        );
        assert_eq!(
            ok("AUTH PLAIN AGEAYg=="),
            Command::Auth {
                mechanism: Some("PLAIN"),
                initial: Some("AGEAYg==")
            }
        );
        assert_eq!(err("AUTH PLAIN a b"), replies::AUTH_SYNTAX);
    }

    #[test]
    fn no_argument_commands() {
        for bad in ["STAT 1", "NOOP x", "RSET 1", "QUIT now", "CAPA x", "STLS x"] {
            assert_eq!(err(bad), replies::NO_ARGUMENT, "{bad}");
        }
        assert_eq!(ok("QUIT  "), Command::Quit);
    }

    #[test]
    fn unknown_and_not_utf8() {
        assert_eq!(split(b"FROB"), Err(ParseError::Unknown));
        assert_eq!(split(b""), Err(ParseError::Unknown));
        assert_eq!(split(b" STAT"), Err(ParseError::Unknown));
        assert_eq!(split(b"STATX"), Err(ParseError::Unknown));
        assert_eq!(split(b"APOP a b"), Err(ParseError::Unknown));
        assert_eq!(split(b"USER \xff"), Err(ParseError::NotUtf8));
    }

    #[test]
    fn verbs_by_state() {
        assert!(Verb::User.allowed(false) && !Verb::User.allowed(true));
        assert!(Verb::Stls.allowed(false) && !Verb::Stls.allowed(true));
        assert!(Verb::Stat.allowed(true) && !Verb::Stat.allowed(false));
        assert!(Verb::Noop.allowed(true) && !Verb::Noop.allowed(false));
        assert!(Verb::Capa.allowed(true) && Verb::Capa.allowed(false));
        assert!(Verb::Quit.allowed(true) && Verb::Quit.allowed(false));
    }
}
