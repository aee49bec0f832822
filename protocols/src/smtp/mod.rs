//! SMTP (RFC 5321) for the server side: one [`ServerSession`] per connection.
//!
//! # Driving a session
//! 1. [`ServerSession::new`] queues the 220 greeting; write [`ServerSession::output`].
//! 2. Read bytes from the socket and [`ServerSession::feed`] them; it returns how
//!    many it consumed. Unconsumed bytes must be fed again later (keep them).
//! 3. After every `feed`, drain [`ServerSession::poll_event`]. An event that asks
//!    a question (`Recipient`, `Message`) pauses the session: `feed` consumes
//!    nothing until the driver answers with the matching method.
//! 4. Write [`ServerSession::output`] to the socket, then [`ServerSession::clear_output`].
//! 5. Once [`ServerSession::is_closed`] and the output is written, close the socket.
//!
//! # Layout
//! One concept per module, in the order bytes meet them:
//! - `crate::line` (shared with POP3): splits the stream into command lines,
//!   bounded by `max_line_len`.
//! - `command`: a command line into a `Command` (verb and argument shape).
//! - `address`, `params`: the paths and ESMTP parameters of MAIL and RCPT;
//!   [`dsn_request`]: what DSN's parameters ask for.
//! - `data`: the DATA receiver (end marker, dot-unstuffing, bare CR/LF).
//! - `bdat`: BDAT chunks and the line-ending check across them.
//! - `body`: the message buffer both share, with the size limit.
//! - `server`: the session that ties them together.
//! - [`replies`]: every reply the server sends.

mod address;
mod bdat;
mod body;
pub mod bounce_class;
#[cfg(any(test, feature = "fuzzing"))]
pub mod check;
pub mod client;
mod command;
mod data;
pub mod downgrade;
pub mod dsn;
pub mod dsn_request;
mod params;
pub mod replies;
mod server;

#[cfg(test)]
mod tests;

pub use address::{canonical_mailbox, ipv4_literal, is_mailbox, without_detail};
pub use replies::Reply;
pub use server::{
    AccountCheck, BodyType, Event, Peer, SenderAddresses, SenderPolicy, ServerConfig,
    ServerSession, Transaction,
};
