//! `ringpost user add|passwd|del|quota|sieve|list`: accounts in the store's
//! `users` family, and their Sieve filters.
//!
//! `add`, `passwd`, `del` and `quota` change a stopped server's store
//! directly, and a running server's through its admin API (RocksDB lets
//! one process at a time open a store read-write): both ways run
//! `ringpost_engine::accounts`. `list` opens the store read-only and works
//! beside a running server.

use crate::admin_client::{path_segment, AdminClient};
use ringpost_engine::accounts::{self, AccountError, Limit};
use ringpost_engine::config::StoreEngine;
use ringpost_engine::sieve::scripts::{self, ScriptError};
use ringpost_engine::{users as rules, Config};
use ringpost_storage::{CommitPipeline, PipelineConfig, RocksOptions, RocksStore};
use ringpost_storage::{Store, StoreError};
use serde_json::{json, Value};
use std::io::{BufRead, IsTerminal};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Help shown by `ringpost user --help`.
pub const ABOUT: &str = "Manage accounts (names and passwords)";

/// The longer help of `ringpost user --help`.
pub const LONG_ABOUT: &str = "\
Manage accounts: full addresses (alice@example.com) with an Argon2id password hash.
A local domain's recipient must be an account, or RCPT gets 550 5.1.1.

add, passwd, del and quota work on a stopped server's store, and on a running
server's through its admin API (found in the data dir: admin.addr, admin.token):
a new account can log in at once, a deleted one is logged out. list opens the
store read-only and works beside a running server.

Passwords: with --password-stdin, the first line of standard input; otherwise
asked for twice on the terminal.";

/// What to do.
#[derive(clap::Subcommand)]
pub enum UserCommand {
    /// Create an account. With --config, its domain must be local (hostname or smtp.local_domains).
    Add {
        /// The account name: a full address, local@domain (stored lowercased).
        name: String,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Set a new password for an account.
    Passwd {
        /// The account name.
        name: String,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Delete an account, with its mailboxes and the mail in them.
    Del {
        /// The account name.
        name: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Give an account its own quota (the server's default is the config's
    /// `[quota]`): a number, `none` (no limit) or `default`.
    Quota {
        /// The account name.
        name: String,
        /// Most megabytes of messages.
        #[arg(long, value_parser = parse_limit)]
        storage_mb: Option<GivenLimit>,
        /// Most messages.
        #[arg(long, value_parser = parse_limit)]
        messages: Option<GivenLimit>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// An account's Sieve filter: with FILE (`-` for standard input),
    /// check it, store it and make it the one delivery runs; with --off,
    /// run none; with neither, list the scripts and print the active one.
    Sieve {
        /// The account name.
        name: String,
        /// The script to store.
        file: Option<PathBuf>,
        /// The script's name (ManageSieve clients see it by this name).
        #[arg(long, default_value = "main")]
        script: String,
        /// Turn filtering off (the scripts stay stored).
        #[arg(long, conflicts_with = "file")]
        off: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List the accounts with their usage and quota (read-only: works
    /// beside a running server).
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// Which store, and which configuration to check names against.
#[derive(clap::Args)]
pub struct StoreArgs {
    /// Store directory [default: the config's data_dir, else ./ringpost-data].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Configuration file; `add` then accepts only names at its hostname or smtp.local_domains.
    #[arg(long)]
    config: Option<PathBuf>,
}

/// A failure, already phrased for the operator.
struct Failed(String);

impl From<String> for Failed {
    fn from(text: String) -> Self {
        Failed(text)
    }
}

impl From<ScriptError> for Failed {
    fn from(e: ScriptError) -> Self {
        Failed(e.to_string())
    }
}

/// Run one `ringpost user` command.
pub fn run(command: UserCommand) -> ExitCode {
    let result = match command {
        UserCommand::Add {
            name,
            password_stdin,
            store,
        } => add(&name, password_stdin, &store),
        UserCommand::Passwd {
            name,
            password_stdin,
            store,
        } => passwd(&name, password_stdin, &store),
        UserCommand::Del { name, store } => del(&name, &store),
        UserCommand::Quota {
            name,
            storage_mb,
            messages,
            store,
        } => set_quota(&name, storage_mb, messages, &store),
        UserCommand::Sieve {
            name,
            file,
            script,
            off,
            store,
        } => sieve(&name, file.as_deref(), &script, off, &store),
        UserCommand::List { store } => list(&store),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failed(text)) => {
            eprintln!("ringpost: {text}");
            ExitCode::FAILURE
        }
    }
}

fn add(name: &str, password_stdin: bool, args: &StoreArgs) -> Result<(), Failed> {
    let (config, data_dir) = settings(args)?;
    let locals = config.as_ref().map(Config::local_domain_list);
    let local_domains = locals.as_deref();
    // Check the name before asking for a password.
    let key = rules::validate_name(name, local_domains).map_err(|e| e.to_string())?;
    // A new store is made only where one was named: by default (the
    // working directory's) it would quietly take accounts that the server
    // elsewhere never sees.
    let named = args.data_dir.is_some() || config.is_some();
    let target = target(&data_dir, named)?;
    if local_domains.is_none() && matches!(target, Target::Store(_)) {
        eprintln!(
            "note: no --config given, so the domain is not checked against the local domains"
        );
    }
    let password = read_password(password_stdin)?;
    match target {
        Target::Store(store) => {
            with_writer(&store, &data_dir, |commit| {
                accounts::add(&*store, commit, &key, &password, local_domains, unix_secs())
            })?;
        }
        Target::Server(api) => {
            let body = json!({ "name": key, "password": password });
            api.call("POST", "/api/v1/users", Some(body))?;
        }
    }
    println!(
        "added {key} with INBOX, {}",
        rules::DEFAULT_MAILBOXES.join(", ")
    );
    Ok(())
}

fn passwd(name: &str, password_stdin: bool, args: &StoreArgs) -> Result<(), Failed> {
    let (_, data_dir) = settings(args)?;
    let target = target(&data_dir, false)?;
    if let Target::Store(store) = &target {
        // Say so before asking for a password nobody needs.
        accounts::existing(&**store, name).map_err(|e| failed(&data_dir, e))?;
    }
    let password = read_password(password_stdin)?;
    let key = name.to_lowercase();
    match target {
        Target::Store(store) => {
            with_writer(&store, &data_dir, |commit| {
                accounts::set_password(&*store, commit, &key, &password)
            })?;
        }
        Target::Server(api) => {
            let path = format!("/api/v1/users/{}/password", path_segment(&key));
            api.call("PUT", &path, Some(json!({ "password": password })))?;
        }
    }
    println!("changed the password of {key}");
    Ok(())
}

fn del(name: &str, args: &StoreArgs) -> Result<(), Failed> {
    let (_, data_dir) = settings(args)?;
    let key = name.to_lowercase();
    let mailboxes = match target(&data_dir, false)? {
        Target::Store(store) => with_writer(&store, &data_dir, |commit| {
            accounts::delete(&*store, commit, &key)
        })?,
        Target::Server(api) => {
            let path = format!("/api/v1/users/{}", path_segment(&key));
            let answer = api.call("DELETE", &path, None)?;
            answer["mailboxes"].as_u64().unwrap_or_default() as usize
        }
    };
    println!(
        "deleted {key} and its {mailboxes} mailbox{}",
        if mailboxes == 1 { "" } else { "es" }
    );
    Ok(())
}

/// A quota limit as given on the command line: a number (megabytes or
/// messages), `none` or `default`.
#[derive(Debug, Clone, Copy)]
pub struct GivenLimit(Limit);

fn parse_limit(text: &str) -> Result<GivenLimit, String> {
    match text {
        "none" => Ok(GivenLimit(Limit::Unlimited)),
        "default" => Ok(GivenLimit(Limit::Default)),
        n => n
            .parse::<u64>()
            .ok()
            .filter(|&n| n > 0)
            .map(|n| GivenLimit(Limit::At(n)))
            .ok_or_else(|| format!("{text:?} is not a positive number, `none` or `default`")),
    }
}

fn set_quota(
    name: &str,
    storage_mb: Option<GivenLimit>,
    messages: Option<GivenLimit>,
    args: &StoreArgs,
) -> Result<(), Failed> {
    if storage_mb.is_none() && messages.is_none() {
        return Err("give --storage-mb, --messages or both".to_owned().into());
    }
    let storage_bytes = storage_mb.map(|GivenLimit(limit)| match limit {
        Limit::At(mb) => Limit::At(mb.saturating_mul(1024 * 1024)),
        other => other,
    });
    let messages = messages.map(|GivenLimit(limit)| limit);
    let (_, data_dir) = settings(args)?;
    let key = name.to_lowercase();
    match target(&data_dir, false)? {
        Target::Store(store) => {
            with_writer(&store, &data_dir, |commit| {
                accounts::set_quota(&*store, commit, &key, storage_bytes, messages)
            })?;
        }
        Target::Server(api) => {
            let as_json = |limit: Option<Limit>| match limit {
                None => Value::Null,
                Some(Limit::At(n)) => json!(n),
                Some(Limit::Unlimited) => json!("none"),
                Some(Limit::Default) => json!("default"),
            };
            let body = json!({
                "storage_bytes": as_json(storage_bytes),
                "messages": as_json(messages),
            });
            let path = format!("/api/v1/users/{}/quota", path_segment(&key));
            api.call("PUT", &path, Some(body))?;
        }
    }
    println!("changed the quota of {key}");
    Ok(())
}

fn sieve(
    name: &str,
    file: Option<&Path>,
    script: &str,
    off: bool,
    args: &StoreArgs,
) -> Result<(), Failed> {
    let (_, data_dir) = settings(args)?;
    let key = name.to_lowercase();
    if file.is_none() && !off {
        return show_sieve(&key, &data_dir);
    }
    let text = match file {
        None => None,
        Some(path) if path == Path::new("-") => {
            let mut text = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut text)
                .map_err(|e| format!("reading standard input: {e}"))?;
            Some(text)
        }
        Some(path) => {
            Some(std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?)
        }
    };
    // Checked here too, so a mistake is named before anything is opened.
    if let Some(text) = &text {
        scripts::check(text).map_err(|e| {
            let shown = file.map_or("standard input".into(), |p| p.display().to_string());
            format!("{shown}: {e}")
        })?;
    }
    match target(&data_dir, false)? {
        Target::Store(store) => {
            let store_ref = &*store;
            let result = with_writer_of(&store, &data_dir, |commit| match &text {
                Some(text) => scripts::put(store_ref, commit, &key, script, text, true),
                None => scripts::activate(store_ref, commit, &key, None),
            });
            result?;
        }
        Target::Server(api) => {
            let user = path_segment(&key);
            match &text {
                Some(text) => {
                    let path = format!("/api/v1/users/{user}/sieve/{}", path_segment(script));
                    let text = String::from_utf8_lossy(text);
                    api.call(
                        "PUT",
                        &path,
                        Some(json!({ "text": text, "activate": true })),
                    )?;
                }
                None => {
                    let path = format!("/api/v1/users/{user}/sieve/activate");
                    api.call("POST", &path, Some(json!({ "name": null })))?;
                }
            }
        }
    }
    match text {
        Some(_) => println!("{key} now filters with the Sieve script {script:?}"),
        None => println!("{key} has no active Sieve script now"),
    }
    Ok(())
}

/// List `user`'s scripts and print the active one (read-only).
fn show_sieve(user: &str, data_dir: &Path) -> Result<(), Failed> {
    let store = RocksStore::open(
        data_dir,
        RocksOptions {
            read_only: true,
            ..Default::default()
        },
    )
    .map_err(|e| format!("cannot open {} read-only: {e}", data_dir.display()))?;
    accounts::existing(&store, user).map_err(|e| failed(data_dir, e))?;
    let listed = scripts::list(&store, user).map_err(|e| e.to_string())?;
    if listed.is_empty() {
        println!("{user} has no Sieve scripts");
    }
    for script in &listed {
        let active = if script.active { "  (active)" } else { "" };
        println!("# {}  {} bytes{active}", script.name, script.size);
    }
    if let Some(active) = listed.iter().find(|s| s.active) {
        let text = scripts::get(&store, user, &active.name).map_err(|e| e.to_string())?;
        print!("{}", String::from_utf8_lossy(&text));
    }
    Ok(())
}

fn list(args: &StoreArgs) -> Result<(), Failed> {
    let (config, data_dir) = settings(args)?;
    let default = config.map(|c| c.quota.default_quota()).unwrap_or_default();
    let store = RocksStore::open(
        &data_dir,
        RocksOptions {
            read_only: true,
            ..Default::default()
        },
    )
    .map_err(|e| format!("cannot open {} read-only: {e}", data_dir.display()))?;
    let all = accounts::list(&store, default).map_err(|e| failed(&data_dir, e))?;
    if all.is_empty() {
        eprintln!("no accounts in {}", data_dir.display());
    }
    for account in all {
        let created = chrono::DateTime::from_timestamp(account.created as i64, 0)
            .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
            .unwrap_or_else(|| account.created.to_string());
        let of = |limit: Option<u64>, show: fn(u64) -> String| {
            limit.map_or_else(String::new, |l| format!(" of {}", show(l)))
        };
        let mb = |bytes: u64| format!("{:.1} MB", bytes as f64 / (1024.0 * 1024.0));
        println!(
            "{}  created {created}  {}{}  {} messages{}",
            account.name,
            mb(account.bytes),
            of(account.quota_bytes, mb),
            account.messages,
            of(account.quota_messages, |n| n.to_string()),
        );
    }
    Ok(())
}

/// The configuration (when given) and the data dir to use: `--data-dir`,
/// else the configuration's `data_dir`, else `./ringpost-data`.
fn settings(args: &StoreArgs) -> Result<(Option<Config>, PathBuf), Failed> {
    let config = match &args.config {
        Some(path) => {
            let config = Config::load(path).map_err(|e| e.to_string())?;
            if config.store.engine == StoreEngine::Memory {
                return Err(format!(
                    "{}: store.engine is \"memory\", which keeps no accounts; \
                     accounts live in a RocksDB store",
                    path.display()
                )
                .into());
            }
            Some(config)
        }
        None => None,
    };
    let data_dir = match (&args.data_dir, &config) {
        (Some(dir), _) => dir.clone(),
        (None, Some(config)) => config.data_dir.clone(),
        (None, None) => PathBuf::from("./ringpost-data"),
    };
    Ok((config, data_dir))
}

/// Where a change goes: the store itself when no server holds it, else
/// the running server's admin API (RocksDB lets one process at a time
/// open a store read-write).
enum Target {
    Store(Arc<RocksStore>),
    Server(AdminClient),
}

/// The target for a change to the store at `data_dir` (made when `create`
/// and missing).
fn target(data_dir: &Path, create: bool) -> Result<Target, Failed> {
    if !create && !data_dir.join("CURRENT").is_file() {
        return Err(Failed(format!(
            "no store at {} (name the server's with --config or --data-dir; a new one is made only there)",
            data_dir.display()
        )));
    }
    match RocksStore::open(data_dir, RocksOptions::default()) {
        Ok(store) => Ok(Target::Store(Arc::new(store))),
        Err(StoreError::Locked(_)) => AdminClient::for_data_dir(data_dir)
            .map(Target::Server)
            .map_err(|e| {
                Failed(format!(
                    "the store at {} is in use by a running ringpost, and its admin API \
                     cannot be reached: {e}",
                    data_dir.display()
                ))
            }),
        Err(other) => Err(Failed(format!(
            "cannot open {}: {other}",
            data_dir.display()
        ))),
    }
}

/// Run `change` with a commit writer of our own over the stopped server's
/// store (mailbox changes are the commit writer's, as in the server), then
/// flush, so the next open (the server's) is quick.
fn with_writer<T>(
    store: &Arc<RocksStore>,
    data_dir: &Path,
    change: impl FnOnce(accounts::Commit<'_>) -> Result<T, AccountError>,
) -> Result<T, Failed> {
    with_writer_of(store, data_dir, |commit| {
        change(commit).map_err(|e| failed(data_dir, e))
    })
}

/// [`with_writer`] for a change with failures of its own.
fn with_writer_of<T, E: Into<Failed>>(
    store: &Arc<RocksStore>,
    data_dir: &Path,
    change: impl FnOnce(accounts::Commit<'_>) -> Result<T, E>,
) -> Result<T, Failed> {
    let (pipeline, commits) = CommitPipeline::start(store.clone(), PipelineConfig::default(), None);
    let commit = |batch| commits.commit_blocking(batch);
    let result = change(&commit);
    drop(commits);
    pipeline.shutdown();
    let value = result.map_err(Into::into)?;
    store
        .flush()
        .map_err(|e| Failed(format!("writing {} failed: {e}", data_dir.display())))?;
    Ok(value)
}

/// An account operation's failure, phrased for the operator.
fn failed(data_dir: &Path, e: AccountError) -> Failed {
    match e {
        AccountError::Exists(key) => Failed(format!(
            "{key} already exists (`ringpost user passwd {key}` changes its password)"
        )),
        AccountError::NotFound(key) => {
            Failed(format!("no account {key} in {}", data_dir.display()))
        }
        AccountError::Store(e) => Failed(format!("{} failed: {e}", data_dir.display())),
        other => Failed(other.to_string()),
    }
}

/// The new password: the first line of stdin, or asked twice on the terminal.
fn read_password(from_stdin: bool) -> Result<String, Failed> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| format!("cannot read the password from standard input: {e}"))?;
        let password = line.strip_suffix('\n').unwrap_or(&line);
        let password = password.strip_suffix('\r').unwrap_or(password);
        return Ok(password.to_owned());
    }
    if !std::io::stdin().is_terminal() {
        return Err(
            "no terminal to ask for the password on: pass --password-stdin \
                    and write the password to standard input"
                .to_owned()
                .into(),
        );
    }
    let ask = |prompt: &str| {
        rpassword::prompt_password(prompt)
            .map_err(|e| Failed(format!("cannot read the password: {e}")))
    };
    let first = ask("Password: ")?;
    rules::validate_password(&first).map_err(|e| e.to_string())?;
    if ask("Again: ")? != first {
        return Err("the two passwords differ; nothing changed"
            .to_owned()
            .into());
    }
    Ok(first)
}

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
