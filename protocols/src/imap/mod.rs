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
