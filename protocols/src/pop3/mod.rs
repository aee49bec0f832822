//! POP3 (RFC 1939) for the server side: one [`Pop3Session`] per connection,
//! with CAPA and response codes (RFC 2449), AUTH PLAIN and LOGIN (RFC 5034,
//! RFC 4616, through [`crate::sasl`]) and STLS (RFC 2595).
//!
//! # Driving a session
//! See [`Pop3Session`]: feed bytes, answer each [`Event`] with the method it
//! names, write the output, close once [`Pop3Session::is_closed`]. What the
//! driver owns, because the session has no sockets, store or clock:
//! - the maildrop lock, taken when it answers `Authenticate` and released
//!   when the session ends, however it ends;
//! - deletion: messages are removed only when the driver gets
//!   [`Event::Commit`] (QUIT in the TRANSACTION state). A dropped
//!   connection, a timeout, a shutdown or too many errors never reach
//!   UPDATE, so nothing is deleted (RFC 1939 §6);
//! - the clock: the session keeps its own deadlines (the autologout timer
//!   of at least 10 minutes, RFC 1939 §3, counted from the last complete
//!   command; and a cap on the time before login), but only hears the time
//!   through [`crate::Session::receive`] and
//!   [`crate::Session::handle_timeout`];
//! - the TLS handshake after [`Event::StartTls`], and dropping any input
//!   read but not consumed when the event came.
//!
//! # Layout
//! One concept per module, in the order bytes meet them:
//! - `crate::line` (shared with SMTP): splits the stream into lines, bounded
//!   by `max_line_len`.
//! - `command`: a line into a verb, then into a `Command` with arguments.
//! - `maildrop`: the listed messages and their deletion marks.
//! - `content`: a message as a RETR/TOP response (CRLF, dot-stuffing, TOP).
//! - `server`: the session that ties them together.
//! - [`replies`]: every response the server sends.

#[cfg(any(test, feature = "fuzzing"))]
pub mod check;
mod command;
mod content;
mod maildrop;
pub mod replies;
mod server;

#[cfg(test)]
mod tests;

pub use crate::session::Peer;
pub use maildrop::{MessageInfo, MAX_UID_LEN};
pub use replies::Reply;
pub use server::{Event, Pop3Config, Pop3Session, MAX_COMMAND_LEN, OUTPUT_HIGH_WATER};
