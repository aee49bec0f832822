//! `ringpost-blast sink`: a fast SMTP server that accepts everything (or,
//! on request, fails some of it) and throws it away, for measuring a relay's
//! outbound side and testing its retry logic.
//!
//! It is a library first: a test starts one in-process with [`start`],
//! points the relay under test at [`SinkHandle::addr`], and inspects
//! [`SinkHandle::stats`] and [`SinkHandle::messages`]; the CLI subcommand is
//! a thin wrapper ([`command`]).
//!
//! Like the rest of the blaster it shares no code with ringpost: its SMTP
//! server side is its own, so a protocol bug in ringpost cannot hide by
//! being mirrored here. It runs one tokio-uring runtime per thread, each
//! with its own `SO_REUSEPORT` listener on the same port, so the kernel
//! spreads connections over threads and no two threads touch the same
//! connection. Per connection: reads of up to 64 KiB, every complete command
//! in a read handled before one write of all replies, DATA copied in bulk up
//! to the next line that starts with '.'.
//!
//! # Layout
//! - [`session`]: the SMTP state machine of one connection, sans I/O;
//! - [`replies`]: every reply the sink sends;
//! - [`faults`]: what to fail and the seeded dice deciding it;
//! - [`record`]: kept messages, the dump directory and the id log;
//! - [`stats`]: per-thread counters and the report;
//! - `server` (private): listeners, threads, stopping, [`SinkHandle`];
//! - `conn` (private): one connection's I/O loop;
//! - [`command`]: the `sink` subcommand (signals, printing).
//!
//! ```no_run
//! use ringpost_loadtest::sink::{self, SinkConfig};
//! use std::time::Duration;
//!
//! let sink = sink::start(SinkConfig::default()).unwrap();
//! // ... make the relay under test deliver to sink.addr() ...
//! assert!(sink.wait_for_messages(10, Duration::from_secs(5)));
//! let stats = sink.stop();
//! assert_eq!(stats.messages, 10);
//! ```

#![deny(missing_docs)]

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

pub mod command;
mod conn;
pub mod faults;
pub mod record;
pub mod replies;
mod server;
pub mod session;
pub mod stats;

pub use faults::Faults;
pub use server::{start, SinkHandle, Stopper};
pub use stats::SinkStats;

/// How to run a sink. `SinkConfig::default()` listens on 127.0.0.1 with a
/// port chosen by the OS, one thread, no faults, nothing recorded.
#[derive(Debug, Clone)]
pub struct SinkConfig {
    /// Where to listen; port 0 lets the OS choose (see [`SinkHandle::addr`]).
    pub listen: SocketAddr,
    /// Runtime threads, each with its own listener on the same port (at
    /// least 1). With more than one, the listeners use `SO_REUSEPORT`, so a
    /// second process of the same user could bind the same fixed port too.
    pub threads: usize,
    /// Named in the greeting and the EHLO reply.
    pub hostname: String,
    /// Failures to inject.
    pub faults: Faults,
    /// Keep the first this many accepted messages in memory for
    /// [`SinkHandle::messages`] (0: none).
    pub keep_messages: usize,
    /// Write each accepted message `n` as `<n>.eml` (exact unstuffed bytes)
    /// and `<n>.json` (`{"mail_from":..,"rcpt_to":[..],"helo":..}`); the
    /// directory is created if needed.
    pub dump_dir: Option<PathBuf>,
    /// Append `<Message-ID value> <X-Blast-Seq value or "-">` per accepted
    /// message to this file.
    pub id_log: Option<PathBuf>,
    /// Stop after this many accepted messages. The last one is answered
    /// (and recorded) first; messages completed after it get 421.
    pub exit_after: Option<u64>,
}

impl Default for SinkConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            threads: 1,
            hostname: "sink.test".into(),
            faults: Faults::default(),
            keep_messages: 0,
            dump_dir: None,
            id_log: None,
            exit_after: None,
        }
    }
}

/// An accepted message as [`SinkHandle::messages`] returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    /// The client's address (the relay's source address).
    pub client: std::net::SocketAddr,
    /// The name the client gave with EHLO or HELO.
    pub helo: String,
    /// Reverse path without angle brackets ("" for the null sender).
    pub mail_from: String,
    /// Accepted recipients, in RCPT order, without angle brackets.
    pub recipients: Vec<String>,
    /// The message exactly as received: DATA dot-unstuffed, up to and
    /// including the CRLF before the final dot; or the BDAT chunks joined.
    pub data: Vec<u8>,
}
