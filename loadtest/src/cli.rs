//! Command line: the `send` and `sink` subcommands and every option they take.
//!
//! Parsing only. Cross-option checks that clap cannot express live in
//! [`SendArgs::validate`] and [`SinkArgs::validate`], so that the load
//! generator and the sink can assume sane values.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Messages sent when neither `--messages` nor `--duration` is given.
pub const DEFAULT_MESSAGES: u64 = 10_000;

/// Largest sequence number the fixed-width `X-Blast-Seq` field can hold.
pub const MAX_SEQ: u64 = 999_999_999_999;

/// Most recipient domains `--domains` may ask for (their envelopes are built
/// up front, about 100 bytes each).
pub const MAX_DOMAINS: u32 = 100_000;

#[derive(Parser, Debug)]
#[command(
    name = "ringpost-blast",
    version,
    about = "SMTP load generator for ringpost (and any other SMTP server).",
    long_about = "SMTP load generator for ringpost (and any other SMTP server).\n\n\
        Exit status (send): 0 = every message accepted and no error seen; \
        1 = the run finished but some message failed or some error was counted; \
        2 = the run could not start (bad usage, unresolvable address, \
        unwritable ack log, io_uring unavailable).\n\n\
        Exit status (sink): 0 = stopped by SIGINT/SIGTERM or --exit-after, report printed; \
        2 = it could not start (bad usage, address in use, unwritable dump dir or id log, \
        io_uring unavailable)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once per process; boxing the big variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Blast SMTP transactions at a server and report throughput, latency and errors.
    Send(SendArgs),
    /// Fast SMTP sink with fault injection: accept (or fail) messages and report.
    Sink(SinkArgs),
    /// Download a whole mailbox over IMAP or POP3 and report the rate.
    Fetch(FetchArgs),
    /// The `send` load over ringpost's HTTP injection API, one message per request.
    Inject(InjectArgs),
}

#[derive(Args, Debug, Clone)]
pub struct InjectArgs {
    /// ringpost's control-plane listener (`metrics.listen`), as host:port.
    #[arg(long, value_name = "HOST:PORT")]
    pub to_addr: String,
    /// The API's bearer token.
    #[arg(long, conflicts_with = "token_file")]
    pub token: Option<String>,
    /// File holding the token (ringpost's DATA_DIR/admin.token).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Concurrent connections (one OS thread each).
    #[arg(long, short = 'c', default_value_t = 10)]
    pub connections: usize,
    /// Total messages.
    #[arg(long, short = 'n', default_value_t = DEFAULT_MESSAGES)]
    pub messages: u64,
    /// Message size in bytes, as `send --size`.
    #[arg(long, short = 's', value_name = "BYTES", default_value_t = 2048)]
    pub size: usize,
    /// Recipients per message: user1@DOMAIN .. userN@DOMAIN.
    #[arg(long, default_value_t = 1)]
    pub rcpts: usize,
    /// Envelope sender and From: header.
    #[arg(long, default_value = "blast@example.test")]
    pub from: String,
    /// Domain of the recipients.
    #[arg(long, default_value = "example.test")]
    pub rcpt_domain: String,
    /// Seconds to wait for an answer.
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    pub read_timeout: f64,
    /// Print the report as one JSON object (the keys of `send --json`).
    #[arg(long)]
    pub json: bool,
}

/// Which mail-access protocol `fetch` speaks.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum FetchProtocol {
    Imap,
    Pop3,
}

#[derive(Args, Debug, Clone)]
pub struct FetchArgs {
    /// Protocol.
    #[arg(long, value_enum)]
    pub protocol: FetchProtocol,
    /// Server, as host:port.
    #[arg(long, value_name = "HOST:PORT")]
    pub addr: String,
    /// Login name.
    #[arg(long)]
    pub user: String,
    /// Password.
    #[arg(long)]
    pub password: String,
    /// Seconds to wait for any one read.
    #[arg(long, default_value_t = 120)]
    pub timeout_secs: u64,
    /// TLS from the first byte (IMAPS, POP3S).
    #[arg(long)]
    pub tls: bool,
    #[command(flatten)]
    pub trust: TrustArgs,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// How a TLS client trusts the server (`send --starttls/--tls`, `fetch --tls`).
#[derive(Args, Debug, Clone, Default)]
pub struct TrustArgs {
    /// Certificates are not checked (a server's self-signed one); without
    /// it the server must present one for the host it is reached at,
    /// signed by --ca-file.
    #[arg(long)]
    pub insecure: bool,
    /// PEM file of the CA that signed the server's certificate.
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
}

/// How progress is shown (`--progress`).
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressMode {
    /// Redrawn in place on a terminal; a plain line every 10 s otherwise.
    Auto,
    /// Redrawn in place.
    On,
    /// None.
    Off,
}

/// Message sizes and their weights (`--size 2k:70,20k:25,200k:5`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SizeMix(pub Vec<(usize, u32)>);

impl SizeMix {
    /// `2048`, `2k`, `1m`, or `SIZE:WEIGHT` pairs separated by commas.
    pub fn parse(text: &str) -> Result<SizeMix, String> {
        let mut mix = Vec::new();
        for part in text.split(',') {
            let (size, weight) = match part.split_once(':') {
                Some((size, weight)) => {
                    let weight: u32 = weight
                        .trim()
                        .parse()
                        .map_err(|_| format!("`{weight}` is not a weight (a whole number)"))?;
                    (size, weight)
                }
                None => (part, 1),
            };
            let size = size.trim().to_ascii_lowercase();
            let (digits, unit) = match size.strip_suffix('k') {
                Some(digits) => (digits, 1024),
                None => match size.strip_suffix('m') {
                    Some(digits) => (digits, 1024 * 1024),
                    None => (size.as_str(), 1),
                },
            };
            let n: usize = digits
                .parse()
                .map_err(|_| format!("`{part}` is not a size (e.g. 2048, 2k, 1m)"))?;
            if weight == 0 {
                return Err(format!("`{part}`: a weight is at least 1"));
            }
            mix.push((n.saturating_mul(unit), weight));
        }
        Ok(SizeMix(mix))
    }

    /// The one size, when there is no mix.
    pub fn single(&self) -> Option<usize> {
        match self.0.as_slice() {
            [(size, _)] => Some(*size),
            _ => None,
        }
    }
}

impl std::fmt::Display for SizeMix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|(s, w)| format!("{s}:{w}")).collect();
        f.write_str(&parts.join(","))
    }
}

/// `on` / `off` switch, spelled the way the benchmark scripts use it.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnOff {
    On,
    Off,
}

#[derive(Args, Debug, Clone)]
pub struct SendArgs {
    /// SMTP server to load, as host:port.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:2525")]
    pub to_addr: String,

    /// Concurrent SMTP connections, spread round-robin over the threads.
    #[arg(long, short = 'c', default_value_t = 10)]
    pub connections: usize,

    /// Total messages to send over all connections [default: 10000 unless --duration is given].
    #[arg(long, short = 'n', conflicts_with = "duration")]
    pub messages: Option<u64>,

    /// Send for this many seconds instead of a fixed message count (fractions allowed).
    #[arg(long, short = 'd', value_name = "SECS")]
    pub duration: Option<f64>,

    /// Message size in bytes as sent inside DATA (headers + body, CRLF line
    /// ends, without the final ".\r\n"), `k` and `m` meaning 1024 and
    /// 1024²; or a mix of sizes with weights, e.g. `2k:70,20k:25,200k:5`.
    /// Sizes below the header block give headers plus one short body line.
    #[arg(long, short = 's', value_name = "BYTES|MIX", default_value = "2048", value_parser = SizeMix::parse)]
    pub size: SizeMix,

    /// Open loop: start messages at this rate (per second, all connections
    /// together) whatever the server's pace, and measure each latency from
    /// the message's scheduled start (corrected for coordinated omission).
    /// Without it, each connection sends its next message when the last is
    /// answered.
    #[arg(long, value_name = "MSG_PER_S")]
    pub rate: Option<f64>,

    /// Write throughput over time and latency percentiles per second to
    /// FILE (SVG, two panels).
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,

    /// A live progress line on stderr: `auto` redraws it on a terminal and
    /// prints a plain line every 10 s otherwise.
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
    pub progress: ProgressMode,

    /// Recipients per message: user1@DOMAIN .. userN@DOMAIN.
    #[arg(long, default_value_t = 1)]
    pub rcpts: usize,

    /// Envelope sender (MAIL FROM) and From: header.
    #[arg(long, default_value = "blast@example.test")]
    pub from: String,

    /// Domain of the recipients user<k>@DOMAIN.
    #[arg(long, default_value = "example.test")]
    pub rcpt_domain: String,

    /// Spread messages over N recipient domains: with N > 1, message SEQ goes
    /// to user<k>@d<SEQ % N>.DOMAIN (envelope only; the To: header keeps DOMAIN).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub domains: u32,

    /// on: MAIL+RCPT*+DATA in one write, then the body in one write (RFC 2920);
    /// off: one command at a time, waiting for each reply.
    #[arg(long, value_enum, default_value_t = OnOff::On)]
    pub pipelining: OnOff,

    /// With pipelining, on: the next message's MAIL+RCPT*+DATA goes in the
    /// same write as this message's body, as RFC 2920 allows (message
    /// content may open a group), so a message costs one write instead of
    /// two; off: the envelope waits for the body's reply. Closed loop only
    /// (never with --rate).
    #[arg(long, value_enum, default_value_t = OnOff::On)]
    pub chain: OnOff,

    /// QUIT and reconnect after this many messages on one connection (0 = never).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub messages_per_connection: u64,

    /// STARTTLS after EHLO (RFC 3207), then EHLO again, on every connection.
    #[arg(long, conflicts_with = "tls")]
    pub starttls: bool,

    /// TLS from the first byte (submissions, RFC 8314).
    #[arg(long)]
    pub tls: bool,

    #[command(flatten)]
    pub trust: TrustArgs,

    /// Name to ask for (SNI) and check in the certificate [default: the
    /// host of --to-addr].
    #[arg(long, value_name = "NAME")]
    pub tls_name: Option<String>,

    /// AUTH PLAIN as USER:PASSWORD after EHLO (and after TLS, if any).
    #[arg(long, value_name = "USER:PASSWORD")]
    pub auth: Option<String>,

    /// OS threads, each running its own tokio-uring runtime [default: number of CPUs].
    #[arg(long)]
    pub threads: Option<usize>,

    /// Name sent with EHLO (also the right-hand side of the Message-IDs).
    #[arg(long, default_value = "blast.example.test")]
    pub helo: String,

    /// Seconds to wait for any reply (or for a write to drain) before counting a "timeout".
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    pub read_timeout: f64,

    /// Seconds to wait for a TCP connect before counting a "connect-timeout".
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    pub connect_timeout: f64,

    /// A connection gives up after this many failed attempts in a row (connect
    /// refused, bad greeting, session lost before any message got through), so
    /// that a dead server ends the run in bounded time.
    #[arg(long, value_name = "K", default_value_t = 5)]
    pub max_connect_failures: u32,

    /// Append one line per accepted message to FILE:
    /// "<X-Blast-Seq value> <final reply text>" (the reply carries the queue id).
    #[arg(long, value_name = "FILE")]
    pub ack_log: Option<PathBuf>,

    /// First X-Blast-Seq number, so that consecutive runs can use disjoint ranges.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub seq_start: u64,

    /// Print the report as one JSON object on stdout instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Options of `ringpost-blast sink`. Percentages are 0..=100; each decides
/// independently per RCPT, message or connection (see `sink::faults`).
#[derive(Args, Debug, Clone)]
pub struct SinkArgs {
    /// Address to listen on, as host:port (port 0: any free port; the
    /// "listening on" line names it).
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:2526")]
    pub listen: String,

    /// OS threads, each with its own tokio-uring runtime and SO_REUSEPORT listener.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,

    /// Name in the greeting and the EHLO reply.
    #[arg(long, default_value = "sink.test")]
    pub hostname: String,

    /// Answer this share of RCPTs with 450 4.2.0.
    #[arg(long, value_name = "PCT", default_value_t = 0.0)]
    pub tempfail_rcpt: f64,

    /// Answer this share of RCPTs with 550 5.1.1.
    #[arg(long, value_name = "PCT", default_value_t = 0.0)]
    pub permfail_rcpt: f64,

    /// Answer this share of messages with 451 4.3.0 after the final dot.
    #[arg(long, value_name = "PCT", default_value_t = 0.0)]
    pub tempfail_data: f64,

    /// Answer this share of messages with 554 5.6.0 after the final dot.
    #[arg(long, value_name = "PCT", default_value_t = 0.0)]
    pub permfail_data: f64,

    /// Answer the first N messages (sink-wide) with 451 4.3.0, then judge normally.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub tempfail_data_first: u64,

    /// Greet this share of connections with 554 5.3.2 and close them.
    #[arg(long, value_name = "PCT", default_value_t = 0.0)]
    pub refuse: f64,

    /// Greet connections beyond N open at once with 421 4.7.0 "too many
    /// connections" and close them, as a throttling provider does (0: no limit).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub max_connections: usize,

    /// Wait this long before every reply to the end of a message.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub latency_ms: u64,

    /// Seed for the random fault decisions (same seed, same decisions).
    #[arg(long, value_name = "S", default_value_t = 0)]
    pub seed: u64,

    /// Write accepted message number N as DIR/N.eml (exact bytes) and its envelope as DIR/N.json.
    #[arg(long, value_name = "DIR")]
    pub dump_dir: Option<PathBuf>,

    /// Append one line per accepted message to FILE: its Message-ID, a space, its X-Blast-Seq (or "-").
    #[arg(long, value_name = "FILE")]
    pub id_log: Option<PathBuf>,

    /// Stop after N accepted messages (the last one is answered first) and report.
    #[arg(long, value_name = "N")]
    pub exit_after: Option<u64>,

    /// A live line on stderr with the messages taken and the rate:
    /// `auto` redraws it on a terminal and prints a plain line every 10 s
    /// otherwise.
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
    pub progress: ProgressMode,

    /// Print the report as one JSON object on stdout instead of text.
    #[arg(long)]
    pub json: bool,
}

impl SinkArgs {
    /// Checks what clap cannot; returns a message for the user on failure.
    /// (Fault percentages are checked by the sink itself.)
    pub fn validate(&self) -> Result<(), String> {
        if self.threads == 0 {
            return Err("--threads must be at least 1".into());
        }
        if self.exit_after == Some(0) {
            return Err("--exit-after must be at least 1".into());
        }
        if self.hostname.is_empty()
            || self
                .hostname
                .bytes()
                .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            return Err("--hostname must be non-empty without spaces or control characters".into());
        }
        Ok(())
    }
}

impl SendArgs {
    /// Checks what clap cannot; returns a message for the user on failure.
    pub fn validate(&self) -> Result<(), String> {
        if self.connections == 0 {
            return Err("--connections must be at least 1".into());
        }
        if self.rcpts == 0 {
            return Err("--rcpts must be at least 1".into());
        }
        if self.domains == 0 || self.domains > MAX_DOMAINS {
            return Err(format!("--domains must be between 1 and {MAX_DOMAINS}"));
        }
        if self.threads == Some(0) {
            return Err("--threads must be at least 1".into());
        }
        if let Some(d) = self.duration {
            if !(d.is_finite() && d > 0.0) {
                return Err("--duration must be a positive number of seconds".into());
            }
        }
        for (name, v) in [
            ("--read-timeout", self.read_timeout),
            ("--connect-timeout", self.connect_timeout),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(format!("{name} must be a positive number of seconds"));
            }
        }
        if self.max_connect_failures == 0 {
            return Err("--max-connect-failures must be at least 1".into());
        }
        if let Some(rate) = self.rate {
            if !(rate.is_finite() && rate > 0.0) {
                return Err("--rate must be a positive number of messages per second".into());
            }
        }
        if self.size.0.len() > 16 {
            return Err("--size mixes at most 16 sizes".into());
        }
        if self.size.0.iter().any(|(size, _)| *size > 64 * 1024 * 1024) {
            return Err("--size is at most 64m".into());
        }
        let last = self.seq_start.checked_add(self.messages.unwrap_or(0));
        if last.is_none_or(|l| l > MAX_SEQ) {
            return Err(format!(
                "--seq-start + --messages must stay below {MAX_SEQ}"
            ));
        }
        for (name, v) in [
            ("--from", &self.from),
            ("--rcpt-domain", &self.rcpt_domain),
            ("--helo", &self.helo),
        ] {
            if v.is_empty()
                || v.bytes()
                    .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
            {
                return Err(format!(
                    "{name} must be non-empty without spaces or control characters"
                ));
            }
        }
        Ok(())
    }

    /// The message budget: `--messages`, or the default when no `--duration`.
    pub fn message_limit(&self) -> Option<u64> {
        match (self.messages, self.duration) {
            (Some(n), _) => Some(n),
            (None, Some(_)) => None,
            (None, None) => Some(DEFAULT_MESSAGES),
        }
    }

    pub fn run_duration(&self) -> Option<Duration> {
        self.duration.map(Duration::from_secs_f64)
    }

    pub fn threads(&self) -> usize {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        // More threads than connections would only start idle runtimes.
        self.threads.unwrap_or(cpus).min(self.connections).max(1)
    }
}
