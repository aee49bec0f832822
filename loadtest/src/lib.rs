//! ringpost-blast: the load generator used to measure ringpost (and, for
//! comparison, Postfix or any other SMTP server), and the SMTP sink that
//! ringpost relays to when its outbound side is measured or its retry
//! logic tested.
//!
//! It deliberately shares no code with the server it measures: its SMTP
//! client, reply parser and message builder are its own, so a bug in the
//! server's protocol code cannot hide itself by being mirrored here. It runs
//! on tokio-uring (one runtime per OS thread) to keep the generator cheap
//! enough that the server under test, not the blaster, is the bottleneck.
//!
//! Modules, one concept each:
//! - [`cli`]: command-line options;
//! - [`message`]: the message template, patched per message;
//! - [`reply`]: the SMTP reply parser;
//! - [`client`]: one client connection and its send loop;
//! - [`acklog`]: the per-acknowledged-message log for crash tests;
//! - [`stats`]: counters, latency histograms and the final report;
//! - [`timeline`] and [`plot`]: the run second by second, drawn as SVG
//!   (`--plot`);
//! - [`progress`]: the live progress line (`--progress`);
//! - [`send`]: the `send` subcommand, wiring threads and runtimes together;
//! - [`fetch`]: the `fetch` subcommand: a whole mailbox over IMAP or POP3,
//!   timed, to compare mail-access servers;
//! - [`inject`]: the `inject` subcommand: `send`'s messages over ringpost's
//!   HTTP injection API, to compare it with SMTP;
//! - [`event_sink`]: a webhook receiver that fails, then recovers, for
//!   the tests of ringpost's delivery events;
//! - [`sink`]: the SMTP sink with fault injection, as a library (in-process
//!   sinks for tests) and as the `sink` subcommand.

pub mod acklog;
pub mod cli;
pub mod client;
pub mod event_sink;
pub mod fetch;
pub mod inject;
pub mod message;
pub mod plot;
pub mod progress;
pub mod reply;
pub mod send;
pub mod sink;
pub mod stats;
pub mod timeline;
pub mod tls;
