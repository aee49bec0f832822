//! Sans-IO mail protocol state machines for ringpost.
//!
//! Bytes go in through `feed`, replies come out through `output`, and anything
//! that needs the outside world (a policy decision, a durable commit) comes out
//! as an event the driver must answer. No sockets, no runtime, no clock: the
//! engine drives these machines over io_uring; tests, benches and fuzzers drive
//! them with plain byte slices.
//!
//! # Layout
//! - [`smtp`]: the SMTP server session (RFC 5321 with PIPELINING, SIZE,
//!   8BITMIME, SMTPUTF8, CHUNKING, ENHANCEDSTATUSCODES, DSN) and its reply table.
//!   With the `fuzzing` feature, `smtp::check` drives sessions and checks
//!   their invariants (used by `fuzz/` and by this crate's tests).
//! - [`pop3`]: the POP3 server session (RFC 1939 with CAPA, RESP-CODES,
//!   PIPELINING, AUTH PLAIN and STLS) and its response table; with
//!   `fuzzing`, `pop3::check` does the same job as `smtp::check`.
//! - `line`: the command-line receiver both servers share.
//! - [`line_ends`]: CRLF line ends for stored content (IMAP APPEND stores
//!   them, POP3 repairs what lacks them, by one rule).
//! - [`session`]: the [`Session`] interface every server session offers the
//!   engine's connection driver (bytes and time in; events, output and the
//!   next deadline out), and the deadlines they share.
//! - [`dkim`]: DKIM signatures (RFC 6376, 8463): relaxed canonicalization
//!   and the `DKIM-Signature` field, with ring's RSA and Ed25519.
//! - [`dmarc_report`]: DMARC aggregate reports (RFC 7489 §7.2): the XML
//!   document and the message that carries it.
//! - [`feedback`]: reports about mail sent earlier, read: delivery status
//!   notifications that come back later and feedback loop complaints (ARF).
//! - [`sasl`]: PLAIN and LOGIN, the SASL exchange SMTP AUTH, IMAP
//!   AUTHENTICATE and POP3 AUTH share.
//! - [`managesieve`]: the ManageSieve session (RFC 5804) that stores
//!   users' Sieve scripts.
//! - [`sieve`]: Sieve filters (RFC 5228 and the extensions mail clients
//!   use): scripts checked at upload, run per delivery to an outcome.
//! - [`check`] (with `fuzzing`): what those checkers share: the driving loop
//!   for a server session, the trace, the cut comparison, the token mapping,
//!   the pseudo-random generator and the smoke tests' case loop.
#![deny(missing_docs)]

#[cfg(any(test, feature = "fuzzing"))]
pub mod check;
pub mod dkim;
pub mod dmarc_report;
pub mod feedback;
pub mod imap;
mod line;
pub mod line_ends;
pub mod managesieve;
pub mod pop3;
pub mod sasl;
pub mod session;
pub mod sieve;
pub mod smtp;
pub mod spf;

pub use session::Session;
