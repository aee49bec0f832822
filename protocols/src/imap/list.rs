//! LIST-EXTENDED (RFC 5258), LIST-STATUS (RFC 5819) and the SPECIAL-USE
//! options of LIST (RFC 6154): selection options, several patterns and
//! return options.
//!
//! imap-codec parses the LIST of RFC 9051 §6.3.9 without its extensions,
//! so the session takes an extended LIST apart here ([`split_list`]): the
//! options are read here, and each string (reference, patterns, STATUS
//! items) is still decoded by imap-codec, from a plain command made of its
//! own bytes, so quoting and literals follow one grammar.

use imap_codec::decode::Decoder;
use imap_codec::imap_types::command::CommandBody;
use imap_codec::imap_types::mailbox::ListMailbox;
use imap_codec::imap_types::status::StatusDataItemName;
use imap_codec::imap_types::IntoStatic;
use imap_codec::CommandCodec;

use super::lexer::{Lexer, Syntax};

/// Which mailboxes an extended LIST selects (RFC 5258 §3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ListSelect {
    /// Subscribed names only, existing or not.
    pub subscribed: bool,
    /// Remote mailboxes too (there are none here).
    pub remote: bool,
    /// A name that matches is also returned when only a child is
    /// selected, with CHILDINFO saying why.
    pub recursive_match: bool,
    /// Mailboxes with a special use only (RFC 6154 §3).
    pub special_use: bool,
}

/// What an extended LIST returns for each mailbox (RFC 5258 §3.2).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListReturn {
    /// `\Subscribed` on subscribed names.
    pub subscribed: bool,
    /// `\HasChildren` / `\HasNoChildren`.
    pub children: bool,
    /// The special-use attributes (RFC 6154 §3).
    pub special_use: bool,
    /// A STATUS response after each selectable mailbox (RFC 5819).
    pub status: Option<Vec<StatusDataItemName>>,
}

/// An extended LIST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListExtended {
    /// Selection options.
    pub select: ListSelect,
    /// Return options.
    pub returns: ListReturn,
    /// Every pattern, the first included (it is also the plain command's).
    pub patterns: Vec<ListMailbox<'static>>,
}

/// Why an extended LIST was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadList {
    /// Not well formed.
    Syntax,
    /// An option this server does not know, or RECURSIVEMATCH alone.
    Option,
}

impl From<Syntax> for BadList {
    fn from(_: Syntax) -> Self {
        BadList::Syntax
    }
}

/// If `command` (whole, literals included) is a LIST with any of the
/// extended syntax, the plain `tag LIST reference pattern` that imap-codec
/// reads and the options; `None` for a plain LIST or another command.
pub fn split_list(command: &[u8]) -> Option<Result<(Vec<u8>, ListExtended), BadList>> {
    let tag_end = command.iter().position(|&b| b == b' ')?;
    let verb = command.get(tag_end + 1..tag_end + 6)?;
    if !verb.eq_ignore_ascii_case(b"LIST ") {
        return None;
    }
    let mut lexer = Lexer {
        bytes: command,
        at: tag_end + 6,
    };
    let extended = lexer.peek() == Some(b'(')
        || command
            .windows(8)
            .any(|w| w.eq_ignore_ascii_case(b" RETURN "));
    let parsed = parse(&mut lexer, &command[..tag_end]);
    match parsed {
        Ok(Some(found)) => Some(Ok(found)),
        // A plain LIST (patterns not in parentheses, no options) is
        // imap-codec's, and so is a malformed one that looks plain.
        Ok(None) => None,
        Err(_) if !extended => None,
        Err(bad) => Some(Err(bad)),
    }
}

fn parse(lexer: &mut Lexer<'_>, tag: &[u8]) -> Result<Option<(Vec<u8>, ListExtended)>, BadList> {
    let mut extended = false;
    let mut select = ListSelect::default();
    if lexer.peek() == Some(b'(') {
        extended = true;
        for option in lexer.words()? {
            match option.to_ascii_uppercase().as_slice() {
                b"SUBSCRIBED" => select.subscribed = true,
                b"REMOTE" => select.remote = true,
                b"RECURSIVEMATCH" => select.recursive_match = true,
                b"SPECIAL-USE" => select.special_use = true,
                _ => return Err(BadList::Option),
            }
        }
        lexer.space()?;
    }
    // RFC 5258 §3.1: RECURSIVEMATCH modifies a base option.
    if select.recursive_match && !select.subscribed {
        return Err(BadList::Option);
    }
    let reference = lexer.string()?;
    lexer.space()?;
    let mut raw_patterns = Vec::new();
    if lexer.peek() == Some(b'(') {
        extended = true;
        lexer.at += 1;
        loop {
            raw_patterns.push(lexer.string()?);
            match lexer.next() {
                Some(b' ') => continue,
                Some(b')') => break,
                _ => return Err(BadList::Syntax),
            }
        }
    } else {
        raw_patterns.push(lexer.string()?);
    }
    let mut returns = ListReturn::default();
    if lexer.peek() == Some(b' ') {
        lexer.space()?;
        if !lexer.keyword(b"RETURN ") || lexer.peek() != Some(b'(') {
            return Err(BadList::Syntax);
        }
        extended = true;
        lexer.at += 1;
        while lexer.peek() != Some(b')') {
            let option = lexer.word();
            if option.is_empty() {
                return Err(BadList::Syntax);
            }
            match option.to_ascii_uppercase().as_slice() {
                b"SUBSCRIBED" => returns.subscribed = true,
                b"CHILDREN" => returns.children = true,
                b"SPECIAL-USE" => returns.special_use = true,
                b"STATUS" => {
                    lexer.space()?;
                    let start = lexer.at;
                    lexer.words()?;
                    returns.status = Some(status_items(tag, &lexer.bytes[start..lexer.at])?);
                }
                _ => return Err(BadList::Option),
            }
            match lexer.peek() {
                Some(b' ') => lexer.at += 1,
                Some(b')') => {}
                _ => return Err(BadList::Syntax),
            }
        }
        lexer.at += 1;
    }
    if &lexer.bytes[lexer.at..] != b"\r\n" {
        return Err(BadList::Syntax);
    }
    if !extended {
        return Ok(None);
    }
    let plain_list = |pattern: &[u8]| {
        let mut plain = tag.to_vec();
        plain.extend_from_slice(b" LIST ");
        plain.extend_from_slice(reference);
        plain.push(b' ');
        plain.extend_from_slice(pattern);
        plain.extend_from_slice(b"\r\n");
        plain
    };
    let mut patterns = Vec::new();
    for raw in &raw_patterns {
        match CommandCodec::default().decode(&plain_list(raw)) {
            Ok((_, command)) => match command.body {
                CommandBody::List {
                    mailbox_wildcard, ..
                } => patterns.push(mailbox_wildcard.into_static()),
                _ => return Err(BadList::Syntax),
            },
            Err(_) => return Err(BadList::Syntax),
        }
    }
    let plain = plain_list(raw_patterns[0]);
    Ok(Some((
        plain,
        ListExtended {
            select,
            returns,
            patterns,
        },
    )))
}

/// STATUS items `(MESSAGES UNSEEN)`, read by imap-codec as a STATUS's.
fn status_items(tag: &[u8], items: &[u8]) -> Result<Vec<StatusDataItemName>, BadList> {
    let mut plain = tag.to_vec();
    plain.extend_from_slice(b" STATUS INBOX ");
    plain.extend_from_slice(items);
    plain.extend_from_slice(b"\r\n");
    match CommandCodec::default().decode(&plain) {
        Ok((_, command)) => match command.body {
            CommandBody::Status { item_names, .. } => Ok(item_names.into_owned()),
            _ => Err(BadList::Syntax),
        },
        Err(_) => Err(BadList::Syntax),
    }
}

/// The tokens of a LIST, over the command's bytes.
#[cfg(test)]
mod tests {
    use super::*;

    fn split(command: &str) -> (String, ListExtended) {
        let (plain, extended) = split_list(command.as_bytes()).unwrap().unwrap();
        (String::from_utf8(plain).unwrap(), extended)
    }

    fn pattern(p: &ListMailbox<'_>) -> String {
        match p {
            ListMailbox::Token(t) => String::from_utf8_lossy(t.as_ref()).into_owned(),
            ListMailbox::String(s) => String::from_utf8_lossy(s.as_ref()).into_owned(),
        }
    }

    #[test]
    fn plain_lists_are_left_to_imap_codec() {
        assert_eq!(split_list(b"a LIST \"\" *\r\n"), None);
        assert_eq!(split_list(b"a LIST \"\" \"%\"\r\n"), None);
        assert_eq!(split_list(b"a LSUB \"\" (*)\r\n"), None);
        assert_eq!(split_list(b"a SELECT INBOX\r\n"), None);
        assert_eq!(split_list(b"a LIST \"\r\n"), None, "malformed but plain");
    }

    #[test]
    fn selection_patterns_and_return_options_come_out() {
        let (plain, list) = split(
            "t1 list (subscribed RECURSIVEMATCH) \"\" (\"a/%\" {3+}\r\nb/*) return (children STATUS (MESSAGES UIDNEXT))\r\n",
        );
        assert_eq!(plain, "t1 LIST \"\" \"a/%\"\r\n");
        assert!(list.select.subscribed && list.select.recursive_match && !list.select.remote);
        assert!(list.returns.children && !list.returns.subscribed);
        assert_eq!(
            list.returns.status,
            Some(vec![
                StatusDataItemName::Messages,
                StatusDataItemName::UidNext
            ])
        );
        let patterns: Vec<String> = list.patterns.iter().map(pattern).collect();
        assert_eq!(patterns, ["a/%", "b/*"]);

        let (plain, list) = split("t2 LIST \"\" % RETURN (SPECIAL-USE SUBSCRIBED)\r\n");
        assert_eq!(plain, "t2 LIST \"\" %\r\n");
        assert!(list.returns.special_use && list.returns.subscribed);
        assert_eq!(list.select, ListSelect::default());
        let (_, list) = split("t3 LIST () \"\" % RETURN ()\r\n");
        assert_eq!(list.returns, ListReturn::default());
        let (_, list) = split("t4 LIST (SPECIAL-USE) \"\" *\r\n");
        assert!(list.select.special_use);
    }

    #[test]
    fn bad_options_and_syntax_are_refused() {
        let bad = |c: &str| split_list(c.as_bytes()).unwrap().unwrap_err();
        assert_eq!(bad("a LIST (RECURSIVEMATCH) \"\" *\r\n"), BadList::Option);
        assert_eq!(bad("a LIST (X-UNKNOWN) \"\" *\r\n"), BadList::Option);
        assert_eq!(bad("a LIST \"\" * RETURN (X-FOO)\r\n"), BadList::Option);
        assert_eq!(
            bad("a LIST \"\" * RETURN (STATUS (BOGUS))\r\n"),
            BadList::Syntax
        );
        assert_eq!(bad("a LIST \"\" (* RETURN ()\r\n"), BadList::Syntax);
        assert_eq!(bad("a LIST \"\" * RETURN ( \r\n"), BadList::Syntax);
        assert_eq!(
            bad("a LIST (SUBSCRIBED) \"\" {9}\r\nab\r\n"),
            BadList::Syntax
        );
    }
}
