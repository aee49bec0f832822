//! ringpost's engine: the running server.
//!
//! One glommio executor per core (a *shard*) accepts SMTP connections on its
//! own SO_REUSEPORT socket and drives each session's sans-IO state machine
//! from `ringpost-protocols`. At end of data a shard builds the message's
//! records and hands them to the group-commit writer of `ringpost-storage`;
//! the client hears 250 only once they are on disk. Then each queue entry
//! goes to the shard that owns its domain, which delivers it to the domain's
//! MX hosts. Mail for local accounts goes into their INBOX in the same
//! commit, and POP3 (later IMAP) sessions on any shard read it from the
//! same store. Shards share no locks on the hot path: each has its own
//! counters, id sequence, sessions and destinations.
//!
//! # Layout
//! - [`config`]: every setting, its default and its checks.
//! - [`server`]: start and stop the whole thing; read this first.
//! - `shard`: one executor's accept loop and state.
//! - `session`: one SMTP connection.
//! - `pop3`: one POP3 connection over the INBOX.
//! - `imap`: one IMAP connection: mailbox commands against the store.
//! - [`access`]: what POP3 and IMAP sessions share: logins, maildrop locks,
//!   news of changed mailboxes.
//! - [`intake`]: recipient policy; from finished transaction to stored records.
//! - [`users`]: password hashing, account name and password rules.
//! - [`relay`]: outbound delivery: ownership, schedule, MX, SMTP client, bounces.
//! - [`metrics`]: Prometheus counters and the `/metrics` endpoint.
#![deny(missing_docs)]

pub mod access;
pub mod config;
mod gather;
mod imap;
pub mod intake;
pub mod metrics;
mod pop3;
pub mod relay;
pub mod server;
mod session;
mod shard;
pub mod users;

pub use config::{Config, ConfigError};
pub use server::{start, RunningServer, StartError};
