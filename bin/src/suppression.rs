//! `ringpost suppression list|add|remove`: the addresses mail is no
//! longer sent to. The relay adds one by itself when a remote says the
//! mailbox does not exist; operators add and remove them here. Against a
//! running server this goes through its admin API, else to the store.

use crate::admin_client::path_segment;
use crate::queue::{reach, Reach};
use ringpost_engine::suppressions::{self, Entry};
use ringpost_storage::Store;
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;

/// Help shown by `ringpost suppression --help`.
pub const ABOUT: &str = "List, add and remove suppressed addresses (hard bounces)";

/// What to do.
#[derive(clap::Subcommand)]
pub enum SuppressionCommand {
    /// The suppressed addresses: global ones first, then by sending domain.
    List {
        /// Show at most this many.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Stop relayed mail to an address.
    Add {
        /// The address.
        address: String,
        /// Only for senders of this domain (default: every sender).
        #[arg(long, default_value = "")]
        scope: String,
        /// A note on why.
        #[arg(long, default_value = "")]
        reason: String,
        /// Days it lasts (0: until removed).
        #[arg(long, default_value_t = 0)]
        ttl_days: u64,
        #[command(flatten)]
        target: Target,
    },
    /// Send to an address again.
    Remove {
        /// The address.
        address: String,
        /// The sending domain it was suppressed for (default: the global entry).
        #[arg(long, default_value = "")]
        scope: String,
        #[command(flatten)]
        target: Target,
    },
}

/// Which data dir.
#[derive(clap::Args)]
pub struct Target {
    /// Store directory [default: ./ringpost-data].
    #[arg(long, default_value = "./ringpost-data")]
    data_dir: PathBuf,
}

/// Run one `ringpost suppression` command.
pub fn run(command: SuppressionCommand) -> ExitCode {
    let result = match command {
        SuppressionCommand::List {
            limit,
            json,
            target,
        } => list(&target, limit, json),
        SuppressionCommand::Add {
            address,
            scope,
            reason,
            ttl_days,
            target,
        } => add(&target, &address, &scope, &reason, ttl_days),
        SuppressionCommand::Remove {
            address,
            scope,
            target,
        } => remove(&target, &address, &scope),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(text) => {
            eprintln!("ringpost: {text}");
            ExitCode::FAILURE
        }
    }
}

fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn list(target: &Target, limit: usize, as_json: bool) -> Result<(), String> {
    let entries: Vec<Entry> = match reach(&target.data_dir, false)? {
        Reach::Server(api) => {
            let answer = api.call("GET", &format!("/api/v1/suppressions?limit={limit}"), None)?;
            serde_json::from_value(answer).map_err(|e| format!("the server's answer: {e}"))?
        }
        Reach::Store(store) => {
            suppressions::list(&*store, limit, now_micros()).map_err(|e| e.to_string())?
        }
    };
    if as_json {
        println!(
            "{}",
            serde_json::to_string_pretty(&entries).unwrap_or_default()
        );
        return Ok(());
    }
    println!("{:<40} {:<24} {:<18} REASON", "ADDRESS", "SCOPE", "CLASS");
    for e in &entries {
        let scope = if e.scope.is_empty() {
            "(all senders)"
        } else {
            &e.scope
        };
        println!(
            "{:<40} {:<24} {:<18} {}",
            e.address, scope, e.class, e.reason
        );
    }
    println!("{} suppressed", entries.len());
    Ok(())
}

fn add(
    target: &Target,
    address: &str,
    scope: &str,
    reason: &str,
    ttl_days: u64,
) -> Result<(), String> {
    let entry: Entry = match reach(&target.data_dir, true)? {
        Reach::Server(api) => {
            let body = json!({ "address": address, "scope": scope, "reason": reason, "ttl_days": ttl_days });
            let answer = api.call("POST", "/api/v1/suppressions", Some(body))?;
            serde_json::from_value(answer).map_err(|e| format!("the server's answer: {e}"))?
        }
        Reach::Store(store) => {
            let commit = |batch| store.write(&[batch], true);
            suppressions::add(&commit, address, scope, reason, ttl_days, now_micros())
                .map_err(|e| e.to_string())?
        }
    };
    println!("suppressed {}", entry.address);
    Ok(())
}

fn remove(target: &Target, address: &str, scope: &str) -> Result<(), String> {
    match reach(&target.data_dir, true)? {
        Reach::Server(api) => {
            let path = format!(
                "/api/v1/suppressions/{}?scope={}",
                path_segment(address),
                path_segment(scope)
            );
            api.call("DELETE", &path, None)?;
        }
        Reach::Store(store) => {
            let commit = |batch| store.write(&[batch], true);
            let listed = suppressions::remove(&*store, &commit, address, scope, now_micros())
                .map_err(|e| e.to_string())?;
            if !listed {
                return Err(format!("{address} is not suppressed for scope {scope:?}"));
            }
        }
    }
    println!("removed {address}");
    Ok(())
}
