//! IMAP4rev2 (RFC 9051), usable by IMAP4rev1 (RFC 3501) clients: the
//! server side, sans-IO. The grammar is imap-codec's; MIME structure is
//! mail-parser's.
//!
//! # Layout
//! - `server`: the session: framing, states, login, IDLE; every mailbox
//!   command comes out as an event for the driver.
//! - `mime`: ENVELOPE, BODYSTRUCTURE and BODY[section] of a stored message.
//! - `binary`: BINARY[section] (RFC 3516): parts with their transfer
//!   encoding removed, and binary content appended in a literal8.
//! - `search`: whether a message matches a SEARCH key.
//! - `esearch`: SEARCH RETURN options and the ESEARCH response.
//! - `list`: the extended LIST of RFC 5258 (selection and return options).
//! - `multiappend`: APPEND of several messages (RFC 3502), taken apart.
//! - `notify`: the NOTIFY command (RFC 5465): what to push, where.
//! - `lexer`: where the arguments of a command lie, for the two above.
//! - `url`, `urlauth`: IMAP URLs (RFC 5092) and their authorization
//!   (RFC 4467: GENURLAUTH, URLFETCH, RESETKEY).
//! - `sort`: SORT keys, the base subject, the order.
//! - `thread`: THREAD=ORDEREDSUBJECT and THREAD=REFERENCES.
//! - `mutf7`: modified UTF-7, the mailbox names of IMAP4rev1 clients.
//! - `check` (tests and the `fuzzing` feature): a driver that checks the
//!   session's promises, shared by the unit tests and `fuzz/`.

pub mod binary;
#[cfg(any(test, feature = "fuzzing"))]
pub mod check;
pub mod esearch;
mod lexer;
pub mod list;
pub mod mime;
pub mod multiappend;
pub mod mutf7;
pub mod notify;
pub mod search;
mod server;
pub mod sort;
pub mod thread;
pub mod url;
pub mod urlauth;

#[cfg(test)]
mod tests;

pub use crate::session::Peer;
pub use imap_codec::imap_types as types;
pub use server::{
    Event, Extra, FetchItem, ImapConfig, ImapSession, CAPABILITIES, MAX_LOGIN_COMMAND,
};

/// `text` as an IMAP string in a response: quoted when it can be, a
/// literal when it holds a line end (in a quoted string it would end the
/// response line, and the rest would read as a response of its own). NUL,
/// which no IMAP string may carry, is left out.
pub fn string(text: &str) -> String {
    let text: std::borrow::Cow<'_, str> = match text.contains('\0') {
        true => text.replace('\0', "").into(),
        false => text.into(),
    };
    if text.contains(['\r', '\n']) {
        return format!("{{{}}}\r\n{text}", text.len());
    }
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// `text` as an IMAP quoted string where a literal may not stand (a
/// response code's argument): line ends and other controls become `?`.
pub fn quoted(text: &str) -> String {
    let clean: String = text
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    string(&clean)
}
