//! APPEND beyond imap-codec's grammar: MULTIAPPEND (RFC 3502), several
//! messages in one command, all appended or none; and CATENATE (RFC 4469),
//! a message made of text and of (parts of) messages the user already has,
//! named by IMAP URLs.
//!
//! imap-codec reads an APPEND of one literal. [`split_append`] takes any
//! other APPEND apart: one single-message APPEND per message (the mailbox,
//! each message's flags and date as the client wrote them, and its literal,
//! or an empty one for a CATENATE message), which imap-codec then reads one
//! by one, and the CATENATE parts of each message beside it.

use imap_codec::imap_types::datetime::DateTime;
use imap_codec::imap_types::extensions::binary::LiteralOrLiteral8;
use imap_codec::imap_types::flag::Flag;

use super::lexer::{astring, Lexer, Syntax};

/// One message of an APPEND that imap-codec alone cannot read: its flags,
/// date and content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendMessage {
    /// The flags to set.
    pub flags: Vec<Flag<'static>>,
    /// The internal date, when given.
    pub date: Option<DateTime>,
    /// The message, when the client sent it whole.
    pub message: LiteralOrLiteral8<'static>,
    /// The message to assemble instead, from these parts (CATENATE).
    pub catenate: Option<Vec<CatenatePart>>,
}

/// One part of a CATENATE message (RFC 4469 §5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatenatePart {
    /// `TEXT literal`: these octets.
    Text(Vec<u8>),
    /// `URL "..."`: (a section of) a message the user has; see
    /// [`super::url::ImapUrl`].
    Url(String),
}

/// One message as [`split_append`] gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitMessage {
    /// `tag APPEND mailbox [flags] [date] literal` for imap-codec; the
    /// literal is empty when the message is a CATENATE.
    pub command: Vec<u8>,
    /// The CATENATE parts, if the message is one.
    pub catenate: Option<Vec<CatenatePart>>,
}

/// If `command` (whole, literals included) is `tag APPEND mailbox`
/// followed by more than one message, or by a CATENATE, each message
/// apart, in order. `None` when it is no APPEND or a plain one (one
/// literal), and when it is malformed: imap-codec reads those itself, or
/// says what is wrong with them.
pub fn split_append(command: &[u8]) -> Option<Vec<SplitMessage>> {
    let tag_end = command.iter().position(|&b| b == b' ')?;
    let verb = command.get(tag_end + 1..tag_end + 8)?;
    if !verb.eq_ignore_ascii_case(b"APPEND ") {
        return None;
    }
    let mut lexer = Lexer {
        bytes: command,
        at: tag_end + 8,
    };
    let messages = messages(&mut lexer).ok()?;
    if messages.len() < 2 && messages.iter().all(|m| m.catenate.is_none()) {
        return None;
    }
    // Everything before the first message's arguments: "tag APPEND mailbox".
    let head = &command[..messages[0].options.start];
    Some(
        messages
            .into_iter()
            .map(|message| {
                let mut single = head.to_vec();
                single.extend_from_slice(&command[message.options]);
                match &message.literal {
                    Some(literal) => single.extend_from_slice(&command[literal.clone()]),
                    None => single.extend_from_slice(b" {0}\r\n"),
                }
                single.extend_from_slice(b"\r\n");
                SplitMessage {
                    command: single,
                    catenate: message.catenate,
                }
            })
            .collect(),
    )
}

/// Where one message's parts lie in the command.
struct Found {
    /// `[SP flags] [SP date]`, the leading space included.
    options: std::ops::Range<usize>,
    /// ` literal` (its announcement and octets), unless a CATENATE.
    literal: Option<std::ops::Range<usize>>,
    catenate: Option<Vec<CatenatePart>>,
}

/// The mailbox, then each message up to the command's CRLF.
fn messages(lexer: &mut Lexer<'_>) -> Result<Vec<Found>, Syntax> {
    lexer.string()?;
    let mut messages = Vec::new();
    loop {
        let start = lexer.at;
        lexer.space()?;
        if lexer.peek() == Some(b'(') {
            lexer.words()?;
            lexer.space()?;
        }
        if lexer.peek() == Some(b'"') {
            lexer.string()?;
            lexer.space()?;
        }
        let options = start..lexer.at - 1;
        if lexer.keyword(b"CATENATE (") {
            messages.push(Found {
                options,
                literal: None,
                catenate: Some(parts(lexer)?),
            });
        } else {
            let literal_start = lexer.at - 1;
            lexer.literal()?;
            messages.push(Found {
                options,
                literal: Some(literal_start..lexer.at),
                catenate: None,
            });
        }
        if lexer.keyword(b"\r\n") {
            return if lexer.at == lexer.bytes.len() {
                Ok(messages)
            } else {
                Err(Syntax)
            };
        }
    }
}

/// `cat-part *(SP cat-part) ")"`, the opening parenthesis taken.
fn parts(lexer: &mut Lexer<'_>) -> Result<Vec<CatenatePart>, Syntax> {
    let mut parts = Vec::new();
    loop {
        if lexer.keyword(b"TEXT ") {
            let octets = lexer.literal()?;
            parts.push(CatenatePart::Text(lexer.bytes[octets].to_vec()));
        } else if lexer.keyword(b"URL ") {
            parts.push(CatenatePart::Url(astring(lexer.string()?)?));
        } else {
            return Err(Syntax);
        }
        match lexer.next() {
            Some(b' ') => {}
            Some(b')') => return Ok(parts),
            _ => return Err(Syntax),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(command: &[u8]) -> Vec<String> {
        split_append(command)
            .expect("a MULTIAPPEND")
            .into_iter()
            .map(|m| String::from_utf8(m.command).unwrap())
            .collect()
    }

    #[test]
    fn catenate_parts_are_read() {
        let command = b"c APPEND Drafts (\\Seen) CATENATE (URL \"/Drafts;UIDVALIDITY=3/;UID=5/;SECTION=HEADER\" TEXT {7}\r\nhello\r\n URL /INBOX/;UID=1)\r\n";
        let split = split_append(command).unwrap();
        assert_eq!(split.len(), 1);
        assert_eq!(split[0].command, b"c APPEND Drafts (\\Seen) {0}\r\n\r\n");
        assert_eq!(
            split[0].catenate.as_deref().unwrap(),
            [
                CatenatePart::Url("/Drafts;UIDVALIDITY=3/;UID=5/;SECTION=HEADER".into()),
                CatenatePart::Text(b"hello\r\n".to_vec()),
                CatenatePart::Url("/INBOX/;UID=1".into()),
            ]
        );
        // With MULTIAPPEND: a CATENATE message and a plain one.
        let both = b"c APPEND x CATENATE (TEXT {1+}\r\na) {1}\r\nb\r\n";
        let split = split_append(both).unwrap();
        assert_eq!(split.len(), 2);
        assert_eq!(split[0].command, b"c APPEND x {0}\r\n\r\n");
        assert_eq!(split[1].command, b"c APPEND x {1}\r\nb\r\n");
        assert!(split[1].catenate.is_none());
        // Malformed: left to imap-codec (which says BAD).
        assert_eq!(split_append(b"c APPEND x CATENATE (FOO 1)\r\n"), None);
        assert_eq!(split_append(b"c APPEND x CATENATE ()\r\n"), None);
    }

    #[test]
    fn each_message_becomes_an_append_of_its_own() {
        let command =
            b"a1 APPEND \"Sent Items\" (\\Seen) \"24-Mar-2007 23:00:00 +0200\" {5}\r\nhello \
            {6+}\r\nworld! (\\Flagged $Work) ~{3}\r\n\0\x01\x02\r\n";
        assert_eq!(
            split(command),
            [
                "a1 APPEND \"Sent Items\" (\\Seen) \"24-Mar-2007 23:00:00 +0200\" {5}\r\nhello\r\n",
                "a1 APPEND \"Sent Items\" {6+}\r\nworld!\r\n",
                "a1 APPEND \"Sent Items\" (\\Flagged $Work) ~{3}\r\n\0\x01\x02\r\n",
            ]
        );
        // A mailbox name given as a literal is repeated as written.
        let command = b"t append {5}\r\nINBOX {1}\r\nx {1}\r\ny\r\n";
        assert_eq!(
            split(command),
            [
                "t append {5}\r\nINBOX {1}\r\nx\r\n",
                "t append {5}\r\nINBOX {1}\r\ny\r\n"
            ]
        );
    }

    #[test]
    fn one_message_and_other_commands_are_left_to_imap_codec() {
        assert_eq!(split_append(b"a APPEND INBOX {1}\r\nx\r\n"), None);
        assert_eq!(split_append(b"a APPEND INBOX (\\Seen) {1}\r\nx\r\n"), None);
        assert_eq!(split_append(b"a SELECT INBOX\r\n"), None);
        // Malformed: imap-codec answers BAD for them.
        assert_eq!(split_append(b"a APPEND INBOX {1}\r\nx {9}\r\ny\r\n"), None);
        assert_eq!(split_append(b"a APPEND INBOX {1}\r\nx {1}\r\nyz\r\n"), None);
    }
}
