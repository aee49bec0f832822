//! ringpost's engine: the running server.
//!
//! One glommio executor per core (a *shard*) accepts SMTP, submission, IMAP
//! and POP3 connections (plain with STARTTLS, or implicit TLS) on its own
//! SO_REUSEPORT sockets and drives each session's sans-IO state machine
//! from `ringpost-protocols` over one connection driver. At end of data a shard builds the message's
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
//! - `shard`: one executor's accept loop and state; every connection's way
//!   from accept (limits first) to its protocol.
//! - `conn`: the one connection driver (plain or TLS, STARTTLS in place,
//!   deadlines, memory budget) that runs any protocol session.
//! - `budget`: a shard's memory budget for client data.
//! - [`tls`]: certificates by SNI, the self-signed one, reload.
//! - `smtp`: the SMTP side of a connection (MX and submission).
//! - `pop3`: one POP3 connection over the INBOX.
//! - `imap`: one IMAP connection: mailbox commands against the store.
//! - `managesieve`: one ManageSieve connection: users' Sieve scripts.
//! - [`auth`]: logins for every protocol: lockouts, a cache of verified
//!   passwords, Argon2 on its own threads.
//! - [`limits`]: per-address connection limits, lockouts, sending rates.
//! - [`access`]: what POP3 and IMAP sessions share: maildrop locks, session
//!   counts, news of changed mailboxes.
//! - [`intake`]: recipient policy; from finished transaction to stored records.
//! - [`sieve`]: users' Sieve filters, run on each local delivery before its
//!   commit (fileinto, flags, redirect, reject, vacation).
//! - [`users`]: password hashing, account name and password rules.
//! - [`relay`]: outbound delivery: ownership, schedule, MX, SMTP client, bounces.
//! - [`metrics`]: Prometheus counters and the `/metrics` endpoint.
#![deny(missing_docs)]

pub mod access;
pub mod accounts;
pub mod admin;
pub mod auth;
mod budget;
pub mod config;
mod conn;
pub mod dkim;
pub mod dmarc_reports;
pub mod dnsbl;
pub mod events;
mod feedback;
mod gather;
pub mod http_client;
mod imap;
pub mod inject;
pub mod intake;
pub mod limits;
pub mod live;
pub mod mail_auth;
pub mod maillog;
mod managesieve;
pub mod metrics;
mod pop3;
mod process_metrics;
pub mod queue_admin;
pub mod relay;
pub mod server;
mod shard;
pub mod sieve;
mod smtp;
pub mod srs;
pub mod suppressions;
pub mod tls;
pub mod users;
pub mod webhook;

pub use config::{Config, ConfigError};
pub use server::{start, RunningServer, StartError};
