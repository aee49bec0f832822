//! MULTIAPPEND (RFC 3502): one APPEND command carrying several messages,
//! all appended or none.
//!
//! imap-codec reads an APPEND of one message. [`split_append`] takes a
//! command of several apart into one single-message APPEND per message (the
//! mailbox, each message's flags, date and literal as the client wrote
//! them), which imap-codec then reads one by one.

use imap_codec::imap_types::datetime::DateTime;
use imap_codec::imap_types::extensions::binary::LiteralOrLiteral8;
use imap_codec::imap_types::flag::Flag;

use super::lexer::{Lexer, Syntax};

/// One message of an APPEND after the first: its flags, date and content
/// (the first is the command's own [`CommandBody::Append`]).
///
/// [`CommandBody::Append`]: imap_codec::imap_types::command::CommandBody::Append
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendMessage {
    /// The flags to set.
    pub flags: Vec<Flag<'static>>,
    /// The internal date, when given.
    pub date: Option<DateTime>,
    /// The message.
    pub message: LiteralOrLiteral8<'static>,
}

/// If `command` (whole, literals included) is `tag APPEND mailbox` followed
/// by more than one message, one `tag APPEND mailbox [flags] [date]
/// literal` command per message, in order. `None` when it is no APPEND or
/// carries one message (or none: CATENATE), and when it is malformed:
/// imap-codec reads those itself, or says what is wrong with them.
pub fn split_append(command: &[u8]) -> Option<Vec<Vec<u8>>> {
    let tag_end = command.iter().position(|&b| b == b' ')?;
    let verb = command.get(tag_end + 1..tag_end + 8)?;
    if !verb.eq_ignore_ascii_case(b"APPEND ") {
        return None;
    }
    let mut lexer = Lexer {
        bytes: command,
        at: tag_end + 8,
    };
    let messages = messages(&mut lexer).ok().filter(|m| m.len() > 1)?;
    // Everything before the first message's arguments: "tag APPEND mailbox".
    let head = &command[..messages[0].start];
    Some(
        messages
            .iter()
            .map(|arguments| {
                let mut single = head.to_vec();
                single.extend_from_slice(&command[arguments.clone()]);
                single.extend_from_slice(b"\r\n");
                single
            })
            .collect(),
    )
}

/// The mailbox, then each message's arguments (`[SP flags] [SP date] SP
/// literal`, the leading space included) up to the command's CRLF.
fn messages(lexer: &mut Lexer<'_>) -> Result<Vec<std::ops::Range<usize>>, Syntax> {
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
        lexer.literal()?;
        messages.push(start..lexer.at);
        if lexer.keyword(b"\r\n") {
            return if lexer.at == lexer.bytes.len() {
                Ok(messages)
            } else {
                Err(Syntax)
            };
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
            .map(|c| String::from_utf8(c).unwrap())
            .collect()
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
        assert_eq!(
            split_append(b"a APPEND INBOX CATENATE (TEXT {1}\r\nx)\r\n"),
            None
        );
        // Malformed: imap-codec answers BAD for them.
        assert_eq!(split_append(b"a APPEND INBOX {1}\r\nx {9}\r\ny\r\n"), None);
        assert_eq!(split_append(b"a APPEND INBOX {1}\r\nx {1}\r\nyz\r\n"), None);
    }
}
