//! The `ringpost` command: a thin layer that parses arguments, loads the
//! configuration and calls the engine.
//!
//! - `ringpost serve [--config FILE] [overrides]`: run the server until SIGTERM/SIGINT.
//! - `ringpost config check FILE`: validate a configuration file.
//! - `ringpost config show [FILE]`: the effective configuration, defaults included.
//! - `ringpost spool stats [--data-dir DIR]`: count stored messages, read-only.
//! - `ringpost user add|passwd|del|quota|list`: accounts (see `user`).
//! - `ringpost dkim keygen|record`: DKIM keys and their DNS records.
//! - `ringpost queue list|stats|hold|release|delete|bounce|flush`: the relay
//!   queue (see `queue`).

use clap::{Parser, Subcommand};
use ringpost_engine::config::StoreEngine;
use ringpost_engine::Config;
use ringpost_storage::{spool, RocksOptions, RocksStore, Store};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

mod admin_client;
mod dkim;
mod queue;
mod suppression;
mod user;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "ringpost",
    version,
    about = "ringpost: a fast, durable mail server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (with no options: SMTP on 127.0.0.1:2525, store in ./ringpost-data).
    Serve(Box<ServeArgs>),
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Inspect the message spool.
    Spool {
        #[command(subcommand)]
        command: SpoolCommand,
    },
    #[command(about = dkim::ABOUT)]
    Dkim {
        #[command(subcommand)]
        command: dkim::DkimCommand,
    },
    #[command(about = queue::ABOUT)]
    Queue {
        #[command(subcommand)]
        command: queue::QueueCommand,
    },
    #[command(about = suppression::ABOUT)]
    Suppression {
        #[command(subcommand)]
        command: suppression::SuppressionCommand,
    },
    #[command(about = user::ABOUT, long_about = user::LONG_ABOUT)]
    User {
        #[command(subcommand)]
        command: user::UserCommand,
    },
}

#[derive(clap::Args)]
struct ServeArgs {
    /// TOML configuration file; options below override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Store directory (config: data_dir).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// SMTP listen address (config: smtp.listen).
    #[arg(long)]
    smtp: Option<SocketAddr>,
    /// Submission (STARTTLS, AUTH required) listen address (config:
    /// submission.listen).
    #[arg(long)]
    submission: Option<SocketAddr>,
    /// Submission over implicit TLS listen address, or "off" (config:
    /// submission.tls_listen).
    #[arg(long, value_parser = optional_addr)]
    submissions: Option<ListenAddr>,
    /// POP3 listen address (config: pop3.listen).
    #[arg(long)]
    pop3: Option<SocketAddr>,
    /// POP3S listen address, or "off" (config: pop3.tls_listen).
    #[arg(long, value_parser = optional_addr)]
    pop3s: Option<ListenAddr>,
    /// IMAP listen address (config: imap.listen).
    #[arg(long)]
    imap: Option<SocketAddr>,
    /// IMAPS listen address, or "off" (config: imap.tls_listen).
    #[arg(long, value_parser = optional_addr)]
    imaps: Option<ListenAddr>,
    /// ManageSieve listen address, or "off" (config: managesieve.listen
    /// and managesieve.enabled).
    #[arg(long, value_parser = optional_addr)]
    managesieve: Option<ListenAddr>,
    /// LMTP listen address, or "off" (config: lmtp.listen and
    /// lmtp.enabled; off unless configured).
    #[arg(long, value_parser = optional_addr)]
    lmtp: Option<ListenAddr>,
    /// Every listener (SMTP, submission, IMAP, POP3, ManageSieve, metrics) on this IP
    /// with ports the OS picks (tests, side-by-side runs); the ready lines
    /// say which.
    #[arg(long)]
    ephemeral_ports: Option<std::net::IpAddr>,
    /// Control plane (metrics, health, admin API) listen address, or
    /// "off" (config: metrics.listen).
    #[arg(long, value_parser = optional_addr)]
    metrics: Option<ListenAddr>,
    /// Shard count, 0 = one per CPU (config: shards).
    #[arg(long)]
    shards: Option<usize>,
    /// Keep the spool in memory only (nothing survives a restart).
    #[arg(long)]
    memory_store: bool,
    /// Accept and keep mail, deliver nothing (config: relay.enabled = false).
    #[arg(long)]
    no_relay: bool,
    /// Deliver everything to this host:port instead of MX hosts (config: relay.smarthost).
    #[arg(long)]
    smarthost: Option<String>,
    /// Log lines on stderr as plain text (coloured only on a terminal) or as
    /// one JSON object per line, for log shippers.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

/// How `serve` writes its log lines.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// Human-readable lines; ANSI colour only when stderr is a terminal
    /// (and `NO_COLOR` is unset), so a file gets plain text.
    Text,
    /// One JSON object per line: timestamp, level, target, fields.
    Json,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Check a configuration file and say exactly what is wrong.
    Check {
        /// The file.
        file: PathBuf,
    },
    /// Print the effective configuration (the file over the defaults) as
    /// TOML, every setting with its value.
    Show {
        /// The file [default: none, the defaults alone].
        file: Option<PathBuf>,
    },
    /// Have the running server read its configuration again (as SIGHUP
    /// does) and say what it did.
    Reload {
        /// The running server's data directory.
        #[arg(long, default_value = "./ringpost-data")]
        data_dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum SpoolCommand {
    /// Count stored messages and bytes. Opens the store read-only, so it works
    /// beside a running server and after a crash.
    Stats {
        /// Store directory.
        #[arg(long, default_value = "./ringpost-data")]
        data_dir: PathBuf,
    },
}

/// `println!` for what a running server says on stdout (its ready lines,
/// reloads, shutdown): a stdout nobody reads any more (a closed pipe) must
/// not panic the server, above all not before it shuts down cleanly.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(*args),
        Command::Config {
            command: ConfigCommand::Check { file },
        } => {
            // The files it names are read too: what `serve` would refuse,
            // the check refuses.
            let checked = Config::load(&file)
                .map_err(|e| e.to_string())
                .and_then(|config| {
                    let loaded = ringpost_engine::server::check_files(&config)?;
                    Ok((loaded, config.cautions()))
                });
            match checked {
                Ok((loaded, cautions)) => {
                    for line in loaded {
                        println!("  {line}");
                    }
                    for caution in cautions {
                        eprintln!("warning: {caution}");
                    }
                    println!("{}: ok", file.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Config {
            command: ConfigCommand::Show { file },
        } => {
            let config = match &file {
                Some(file) => Config::load(file),
                None => Ok(Config::default()),
            };
            match config.map_err(|e| e.to_string()).and_then(|c| c.to_toml()) {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Config {
            command: ConfigCommand::Reload { data_dir },
        } => config_reload(&data_dir),
        Command::Spool {
            command: SpoolCommand::Stats { data_dir },
        } => spool_stats(&data_dir),
        Command::User { command } => user::run(command),
        Command::Queue { command } => queue::run(command),
        Command::Suppression { command } => suppression::run(command),
        Command::Dkim { command } => dkim::run(command),
    }
}

/// Logs go to stderr, so stdout carries only the start-up summary that
/// scripts and tests read. `RUST_LOG` filters them (default `info`).
fn init_logging(
    format: LogFormat,
) -> (
    tracing_appender::non_blocking::WorkerGuard,
    tracing_appender::non_blocking::ErrorCounter,
) {
    use std::io::IsTerminal;
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    // Lines queue for the writer thread; past the limit they are dropped
    // (and counted by the appender) rather than stall whoever logs.
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(LOG_BACKLOG)
        .thread_name("ringpost-log")
        // The writer thread flushes whenever it has emptied its queue, so a
        // buffer delays no line; under load it turns a write(2) per line
        // into one per batch.
        .finish(std::io::BufWriter::with_capacity(
            LOG_WRITE_BUFFER,
            std::io::stderr(),
        ));
    let dropped = writer.error_counter();
    let builder = tracing_subscriber::fmt()
        .with_writer(writer)
        .with_env_filter(filter);
    match format {
        LogFormat::Text => {
            let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            builder.with_ansi(colour).init();
        }
        LogFormat::Json => builder
            .json()
            .with_ansi(false)
            .flatten_event(true)
            .with_current_span(false)
            .init(),
    }
    (guard, dropped)
}

/// `ringpost config reload`: the running server's reload, through its API.
fn config_reload(data_dir: &std::path::Path) -> ExitCode {
    let reloaded = admin_client::AdminClient::for_data_dir(data_dir)
        .and_then(|api| api.call("POST", "/api/v1/config/reload", None));
    match reloaded {
        Ok(answer) => {
            println!(
                "configuration reloaded (generation {})",
                answer["generation"]
            );
            let kept: Vec<&str> = answer["needs_restart"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str())
                .collect();
            if !kept.is_empty() {
                println!(
                    "these settings need a restart; their old values stay: {}",
                    kept.join(", ")
                );
            }
            if let Some(certificates) = answer["certificates"].as_str() {
                println!("certificates: {certificates}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ringpost config reload: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The configuration `serve` runs with: the file (or the defaults) and the
/// command line's overrides; read again at every reload.
fn effective_config(args: &ServeArgs) -> Result<Config, String> {
    let mut config = match &args.config {
        Some(path) => Config::load(path).map_err(|e| e.to_string())?,
        None => Config::default(),
    };
    if let Some(d) = args.data_dir.clone() {
        config.data_dir = d;
    }
    if let Some(ip) = args.ephemeral_ports {
        config.use_ephemeral_ports(ip);
    }
    if let Some(a) = args.smtp {
        config.smtp.listen = a;
    }
    if let Some(a) = args.submission {
        config.submission.listen = a;
    }
    if let Some(a) = args.submissions {
        config.submission.tls_listen = a.0;
    }
    if let Some(a) = args.pop3 {
        config.pop3.listen = a;
    }
    if let Some(a) = args.pop3s {
        config.pop3.tls_listen = a.0;
    }
    if let Some(a) = args.imap {
        config.imap.listen = a;
    }
    if let Some(a) = args.imaps {
        config.imap.tls_listen = a.0;
    }
    if let Some(a) = args.managesieve {
        match a.0 {
            Some(addr) => config.managesieve.listen = addr,
            None => config.managesieve.enabled = false,
        }
    }
    if let Some(a) = args.lmtp {
        config.lmtp.enabled = a.0.is_some();
        if let Some(addr) = a.0 {
            config.lmtp.listen = addr;
        }
    }
    if let Some(a) = args.metrics {
        config.metrics.listen = a.0;
    }
    if let Some(n) = args.shards {
        config.shards = n;
    }
    if args.memory_store {
        config.store.engine = StoreEngine::Memory;
    }
    if args.no_relay {
        config.relay.enabled = false;
    }
    if args.smarthost.is_some() {
        config.relay.smarthost = args.smarthost.clone();
    }
    Ok(config)
}

/// Log lines waiting for the log writer thread.
const LOG_BACKLOG: usize = 64 * 1024;
/// Bytes the log writer gathers before a write(2) when lines come faster
/// than it writes them.
const LOG_WRITE_BUFFER: usize = 64 * 1024;

fn serve(args: ServeArgs) -> ExitCode {
    // Dropped when serve returns: what is queued is written first.
    let (_log_writer, log_drops) = init_logging(args.log_format);
    let config = match effective_config(&args) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("ringpost: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = config.validate() {
        eprintln!("ringpost: {e}");
        return ExitCode::FAILURE;
    }

    // Install the handlers before the shards start, so a signal that arrives
    // during start-up still leads to a clean shutdown.
    let mut signals = match signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGHUP,
    ]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ringpost: cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let relay = config.relay.clone();
    let server = match ringpost_engine::start(config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ringpost: {e}");
            return ExitCode::FAILURE;
        }
    };
    let source = Arc::new(args);
    server.set_config_source(Arc::new(move || effective_config(&source)));
    server
        .metrics()
        .watch_log_drops("log", move || log_drops.dropped_lines() as u64);
    say!("ringpost {} ready", env!("CARGO_PKG_VERSION"));
    for (service, addr) in server.listeners() {
        let note = match service {
            "smtp" | "imap" | "pop3" | "managesieve" | "lmtp"
                if server.certificates().is_some() =>
            {
                "  (STARTTLS)"
            }
            "submission" if server.certificates().is_some() => "  (STARTTLS, AUTH required)",
            "submission" => "  (AUTH required)",
            "submissions" | "imaps" | "pop3s" => "  (TLS)",
            _ => "",
        };
        say!("  {service:<12} {addr}{note}");
    }
    match server.metrics_addr() {
        Some(a) => say!(
            "  {:<12} http://{a}/metrics  (and /healthz, /readyz, /api/v1 with {})",
            "metrics",
            ringpost_engine::admin::token_path(&server.config().data_dir).display()
        ),
        None => say!("  {:<12} off", "metrics"),
    }
    match server.certificates() {
        Some(c) => say!("  {:<12} {c}", "tls"),
        None => say!("  {:<12} off", "tls"),
    }
    say!("  {:<12} {}", "store", server.store_description());
    say!("  {:<12} {}", "shards", server.shard_count());
    say!("  {:<12} {}", "relay", relay_line(&relay));
    let signal = loop {
        match signals.forever().next() {
            // SIGHUP: the configuration and certificates again (connections
            // already up keep theirs), and the mail log file opened again
            // (logrotate).
            Some(signal_hook::consts::SIGHUP) => {
                // The reload opens the mail log again first, whatever
                // the outcome, and logs a failure too.
                let reloaded = match server.reload() {
                    Ok(reloaded) => reloaded,
                    Err(why) => {
                        say!("ringpost: reload failed, keeping the configuration in force: {why}");
                        continue;
                    }
                };
                say!(
                    "ringpost: configuration reloaded (generation {})",
                    reloaded.generation
                );
                if !reloaded.needs_restart.is_empty() {
                    say!(
                        "ringpost: these settings need a restart; their old values stay: {}",
                        reloaded.needs_restart.join(", ")
                    );
                }
                if let Some(described) = reloaded.certificates {
                    say!("ringpost: certificates reloaded: {described}");
                }
            }
            other => break other,
        }
    };
    say!(
        "ringpost: signal {} received, shutting down",
        signal.unwrap_or(0)
    );
    // A shutdown that went wrong (logged) is a failure for whoever
    // watches the exit status (systemd, a script).
    let clean = server.shutdown();
    say!("ringpost: stopped");
    match clean {
        true => ExitCode::SUCCESS,
        false => ExitCode::FAILURE,
    }
}

/// A listen address given on the command line, or `off` (None).
///
/// A type of its own: clap reads `Option<Option<T>>` as a flag whose value
/// may be left out, not as a value that may say "none".
#[derive(Debug, Clone, Copy)]
struct ListenAddr(Option<SocketAddr>);

fn optional_addr(text: &str) -> Result<ListenAddr, String> {
    if text.eq_ignore_ascii_case("off") {
        return Ok(ListenAddr(None));
    }
    text.parse()
        .map(|addr| ListenAddr(Some(addr)))
        .map_err(|_| format!("`{text}` is not an address:port or \"off\""))
}

/// How outbound mail is routed, in words.
fn relay_line(relay: &ringpost_engine::config::RelayConfig) -> String {
    if !relay.enabled {
        return "off (mail is accepted and kept)".into();
    }
    match &relay.smarthost {
        Some(host) => format!("via smarthost {host}"),
        None => format!("to MX hosts, port {}", relay.mx_port),
    }
}

fn spool_stats(data_dir: &std::path::Path) -> ExitCode {
    let store = match RocksStore::open(
        data_dir,
        RocksOptions {
            read_only: true,
            ..Default::default()
        },
    ) {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "ringpost: cannot open {} read-only: {e}",
                data_dir.display()
            );
            return ExitCode::FAILURE;
        }
    };
    match spool::stats(&store) {
        Ok(s) => {
            println!("messages {}", s.messages);
            println!("bytes {}", s.bytes);
            println!("queue_entries {}", s.queue_entries);
            // Large bodies live in segment files beside the database.
            if let Some(health) = store.health() {
                println!("segment_bytes {}", health.segment_bytes);
                println!("segment_live_bytes {}", health.segment_live_bytes);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ringpost: reading {} failed: {e}", data_dir.display());
            ExitCode::FAILURE
        }
    }
}
