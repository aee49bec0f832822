//! `ringpost user add|passwd|del|list`: accounts in the store's `users` family.
//!
//! `add`, `passwd` and `del` open the store read-write. RocksDB lets one
//! process at a time do that, so they work on a stopped server's data dir
//! only; against a running server they fail and say so. `list` opens the
//! store read-only and works beside a running server.

use ringpost_engine::config::StoreEngine;
use ringpost_engine::{users as rules, Config};
use ringpost_storage::quota;
use ringpost_storage::users::{self, User};
use ringpost_storage::{
    mailbox, CommitPipeline, PipelineConfig, RocksOptions, RocksStore, Store, StoreError,
    WriteBatch,
};
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

add, passwd and del open the store read-write, which RocksDB allows one process
at a time: run them while the server is stopped. Changing the users of a running
server is not supported yet. list opens the store read-only and works beside a
running server.

Passwords: with --password-stdin, the first line of standard input; otherwise
asked for twice on the terminal.";

/// What to do.
#[derive(clap::Subcommand)]
pub enum UserCommand {
    /// Create an account. With --config, its domain must be in smtp.local_domains.
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
        storage_mb: Option<Limit>,
        /// Most messages.
        #[arg(long, value_parser = parse_limit)]
        messages: Option<Limit>,
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
    /// Configuration file; `add` then accepts only names in its smtp.local_domains.
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
    let local_domains = config.as_ref().map(|c| c.smtp.local_domains.as_slice());
    if local_domains.is_none() {
        eprintln!(
            "note: no --config given, so the domain is not checked against smtp.local_domains"
        );
    }
    // Check the name before asking for a password.
    let key = rules::validate_name(name, local_domains).map_err(|e| e.to_string())?;
    let store = Arc::new(open_writable(&data_dir, true)?);
    if users::user_exists(&*store, &key).map_err(|e| reading(&data_dir, e))? {
        return Err(format!(
            "{key} already exists (`ringpost user passwd {key}` changes its password)"
        )
        .into());
    }
    let password = read_password(password_stdin)?;
    let user = rules::new_account(&key, &password, local_domains, unix_secs())
        .map_err(|e| e.to_string())?;
    // The account and its first mailboxes in one commit (mailboxes are
    // changed by the commit writer only, as in the server).
    let mut batch = WriteBatch::new();
    users::put_user(&mut batch, &user);
    rules::default_mailboxes(&mut batch, &user.name);
    commit(&store, &data_dir, batch)?;
    println!(
        "added {} with INBOX, {}",
        user.name,
        rules::DEFAULT_MAILBOXES.join(", ")
    );
    Ok(())
}

fn passwd(name: &str, password_stdin: bool, args: &StoreArgs) -> Result<(), Failed> {
    let (_, data_dir) = settings(args)?;
    let store = open_writable(&data_dir, false)?;
    let mut user = existing(&store, &data_dir, name)?;
    let password = read_password(password_stdin)?;
    rules::set_password(&mut user, &password).map_err(|e| e.to_string())?;
    write(&store, &data_dir, |batch| users::put_user(batch, &user))?;
    println!("changed the password of {}", user.name);
    Ok(())
}

fn del(name: &str, args: &StoreArgs) -> Result<(), Failed> {
    let (_, data_dir) = settings(args)?;
    let store = Arc::new(open_writable(&data_dir, false)?);
    let user = existing(&*store, &data_dir, name)?;
    let mailboxes = mailbox::list(&*store, &user.name).map_err(|e| reading(&data_dir, e))?;
    let mut batch = WriteBatch::new();
    users::delete_user(&mut batch, &user.name);
    // The commit writer resolves the deletion into rows, references and
    // bodies.
    commit(&store, &data_dir, batch)?;
    println!(
        "deleted {} and its {} mailbox{}",
        user.name,
        mailboxes.len(),
        if mailboxes.len() == 1 { "" } else { "es" }
    );
    Ok(())
}

/// A quota limit as given on the command line.
#[derive(Debug, Clone, Copy)]
pub enum Limit {
    /// This many (megabytes or messages).
    At(u64),
    /// No limit for this account.
    None,
    /// The server's default.
    Default,
}

fn parse_limit(text: &str) -> Result<Limit, String> {
    match text {
        "none" => Ok(Limit::None),
        "default" => Ok(Limit::Default),
        n => n
            .parse::<u64>()
            .ok()
            .filter(|&n| n > 0)
            .map(Limit::At)
            .ok_or_else(|| format!("{text:?} is not a positive number, `none` or `default`")),
    }
}

fn set_quota(
    name: &str,
    storage_mb: Option<Limit>,
    messages: Option<Limit>,
    args: &StoreArgs,
) -> Result<(), Failed> {
    if storage_mb.is_none() && messages.is_none() {
        return Err("give --storage-mb, --messages or both".to_owned().into());
    }
    let (_, data_dir) = settings(args)?;
    let store = open_writable(&data_dir, false)?;
    let mut user = existing(&store, &data_dir, name)?;
    // Unchanged where not given; `default` drops the account's own limit.
    let current = |tag| user.settings.contains_key(&tag);
    let limit = |given: Option<Limit>, tag, scale: u64, was: Option<u64>| match given {
        None => current(tag).then_some(was),
        Some(Limit::Default) => None,
        Some(Limit::None) => Some(None),
        Some(Limit::At(n)) => Some(Some(n.saturating_mul(scale))),
    };
    let own = quota::of(&user, quota::Quota::default()).map_err(|e| reading(&data_dir, e))?;
    let storage = limit(storage_mb, quota::SETTING_STORAGE, 1024 * 1024, own.storage);
    let messages = limit(messages, quota::SETTING_MESSAGES, 1, own.messages);
    quota::set(&mut user, storage, messages);
    write(&store, &data_dir, |batch| users::put_user(batch, &user))?;
    println!("changed the quota of {}", user.name);
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
    let all = users::list_users(&store).map_err(|e| reading(&data_dir, e))?;
    if all.is_empty() {
        eprintln!("no accounts in {}", data_dir.display());
    }
    for user in all {
        let created = chrono::DateTime::from_timestamp(user.created as i64, 0)
            .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
            .unwrap_or_else(|| user.created.to_string());
        let used = quota::usage(&store, &user.name).map_err(|e| reading(&data_dir, e))?;
        let limits = quota::of(&user, default).map_err(|e| reading(&data_dir, e))?;
        let of = |limit: Option<u64>, show: fn(u64) -> String| {
            limit.map_or_else(String::new, |l| format!(" of {}", show(l)))
        };
        let mb = |bytes: u64| format!("{:.1} MB", bytes as f64 / (1024.0 * 1024.0));
        println!(
            "{}  created {created}  {}{}  {} messages{}",
            user.name,
            mb(used.bytes),
            of(limits.storage, mb),
            used.messages,
            of(limits.messages, |n| n.to_string()),
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

/// Open the store read-write (creating it only when `create`), with the one
/// failure operators will meet named plainly: a running server holds it.
fn open_writable(data_dir: &Path, create: bool) -> Result<RocksStore, Failed> {
    if !create && !data_dir.join("CURRENT").is_file() {
        return Err(Failed(format!("no store at {}", data_dir.display())));
    }
    RocksStore::open(data_dir, RocksOptions::default()).map_err(|e| {
        Failed(match e {
            StoreError::Locked(_) => format!(
                "the store at {} is in use by a running ringpost; stop it first \
                 — changing users of a running server is not supported yet",
                data_dir.display()
            ),
            other => format!("cannot open {}: {other}", data_dir.display()),
        })
    })
}

/// The account `name`, which must exist.
fn existing(store: &dyn Store, data_dir: &Path, name: &str) -> Result<User, Failed> {
    users::get_user(store, name)
        .map_err(|e| reading(data_dir, e))?
        .ok_or_else(|| {
            Failed(format!(
                "no account {} in {}",
                name.to_lowercase(),
                data_dir.display()
            ))
        })
}

/// Write one batch durably and flush, so the next open (the server's) is quick.
fn write(
    store: &RocksStore,
    data_dir: &Path,
    change: impl FnOnce(&mut WriteBatch),
) -> Result<(), Failed> {
    let mut batch = WriteBatch::new();
    change(&mut batch);
    store
        .write(&[batch], true)
        .and_then(|()| store.flush())
        .map_err(|e| Failed(format!("writing {} failed: {e}", data_dir.display())))
}

/// Commit a batch with mailbox changes through a commit writer of our own
/// (the server's is not running: we hold the store), durably, and flush.
fn commit(store: &Arc<RocksStore>, data_dir: &Path, batch: WriteBatch) -> Result<(), Failed> {
    let (pipeline, commits) = CommitPipeline::start(store.clone(), PipelineConfig::default(), None);
    let written = commits.commit_blocking(batch);
    drop(commits);
    pipeline.shutdown();
    written
        .and_then(|()| store.flush())
        .map_err(|e| Failed(format!("writing {} failed: {e}", data_dir.display())))
}

fn reading(data_dir: &Path, e: StoreError) -> Failed {
    Failed(format!("reading {} failed: {e}", data_dir.display()))
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
