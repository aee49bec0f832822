//! The `ringpost` command: a thin layer that parses arguments, loads the
//! configuration and calls the engine.
//!
//! - `ringpost serve [--config FILE] [overrides]`: run the server until SIGTERM/SIGINT.
//! - `ringpost config check FILE`: validate a configuration file.
//! - `ringpost spool stats [--data-dir DIR]`: count stored messages, read-only.
//! - `ringpost user add|passwd|del|list`: accounts (see `user`).

use clap::{Parser, Subcommand};
use ringpost_engine::config::StoreEngine;
use ringpost_engine::Config;
use ringpost_storage::{spool, RocksOptions, RocksStore};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

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
    Serve(ServeArgs),
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
    /// POP3 listen address (config: pop3.listen).
    #[arg(long)]
    pop3: Option<SocketAddr>,
    /// IMAP listen address (config: imap.listen).
    #[arg(long)]
    imap: Option<SocketAddr>,
    /// Metrics listen address (config: metrics.listen).
    #[arg(long)]
    metrics: Option<SocketAddr>,
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::Config {
            command: ConfigCommand::Check { file },
        } => match Config::load(&file) {
            Ok(_) => {
                println!("{}: ok", file.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::Spool {
            command: SpoolCommand::Stats { data_dir },
        } => spool_stats(&data_dir),
        Command::User { command } => user::run(command),
    }
}

/// Logs go to stderr, so stdout carries only the start-up summary that
/// scripts and tests read. `RUST_LOG` filters them (default `info`).
fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
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
}

fn serve(args: ServeArgs) -> ExitCode {
    init_logging(args.log_format);
    let mut config = match &args.config {
        Some(path) => match Config::load(path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("ringpost: {e}");
                return ExitCode::FAILURE;
            }
        },
        None => Config::default(),
    };
    if let Some(d) = args.data_dir {
        config.data_dir = d;
    }
    if let Some(a) = args.smtp {
        config.smtp.listen = a;
    }
    if let Some(a) = args.pop3 {
        config.pop3.listen = a;
    }
    if let Some(a) = args.imap {
        config.imap.listen = a;
    }
    if let Some(a) = args.metrics {
        config.metrics.listen = Some(a);
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
        config.relay.smarthost = args.smarthost;
    }
    if let Err(e) = config.validate() {
        eprintln!("ringpost: {e}");
        return ExitCode::FAILURE;
    }

    // Install the handlers before the shards start, so a signal that arrives
    // during start-up still leads to a clean shutdown.
    let mut signals = match signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
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
    println!("ringpost {} ready", env!("CARGO_PKG_VERSION"));
    println!("  smtp     {}", server.smtp_addr());
    match server.pop3_addr() {
        Some(a) => println!("  pop3     {a}"),
        None => println!("  pop3     off"),
    }
    match server.imap_addr() {
        Some(a) => println!("  imap     {a}"),
        None => println!("  imap     off"),
    }
    match server.metrics_addr() {
        Some(a) => println!("  metrics  http://{a}/metrics"),
        None => println!("  metrics  off"),
    }
    println!("  store    {}", server.store_description());
    println!("  shards   {}", server.shard_count());
    println!("  relay    {}", relay_line(&relay));
    let signal = signals.forever().next();
    println!(
        "ringpost: signal {} received, shutting down",
        signal.unwrap_or(0)
    );
    server.shutdown();
    println!("ringpost: stopped");
    ExitCode::SUCCESS
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
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ringpost: reading {} failed: {e}", data_dir.display());
            ExitCode::FAILURE
        }
    }
}
