//! `ringpost queue list|stats|hold|release|delete|bounce|flush`: the relay
//! queue, as Postfix's `postqueue`/`postsuper` and KumoMTA's `kcli` show it.
//!
//! Against a running server everything goes through its admin API (found
//! in the data dir, as for `ringpost user`). With the server stopped,
//! `list` and `stats` read the store read-only, and `hold` and `release`
//! change it directly; `delete`, `bounce` and `flush` need the running
//! relay (a bounce is a DSN it sends, a flush an attempt it makes).

use crate::admin_client::AdminClient;
use ringpost_engine::queue_admin::{self, Action, EntryView, Filter, Outcome, State, Stats};
use ringpost_storage::{CommitPipeline, PipelineConfig, RocksOptions, RocksStore, StoreError};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

/// Help shown by `ringpost queue --help`.
pub const ABOUT: &str = "Inspect and manage the relay queue";

/// What to do.
#[derive(clap::Subcommand)]
pub enum QueueCommand {
    /// List queue entries (one per message and destination domain), in due order.
    List {
        #[command(flatten)]
        select: Select,
        /// Show at most this many.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
    /// One message: its envelope, its entries and its header.
    Show {
        /// The queue id (as `list` shows it).
        id: String,
        #[command(flatten)]
        target: Target,
    },
    /// Entries by destination: ready, deferred, held, and the oldest.
    Stats {
        #[command(flatten)]
        target: Target,
    },
    /// Keep entries and never deliver them until released (survives restarts).
    Hold(Selected),
    /// Make held entries due now.
    Release(Selected),
    /// Drop entries: no delivery, no DSN (the body goes when nothing needs it).
    Delete(Selected),
    /// Fail entries now: one DSN each to the sender.
    Bounce(Selected),
    /// Try entries now, whatever their due time.
    Flush(Selected),
}

/// Which data dir, and how to answer.
#[derive(clap::Args)]
pub struct Target {
    /// Store directory [default: ./ringpost-data].
    #[arg(long, default_value = "./ringpost-data")]
    data_dir: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Which entries.
#[derive(clap::Args)]
pub struct Select {
    /// Queue ids (as `list` shows them).
    ids: Vec<String>,
    /// Destination domain.
    #[arg(long)]
    domain: Option<String>,
    /// Envelope sender ("" for the null sender).
    #[arg(long)]
    sender: Option<String>,
    /// A recipient.
    #[arg(long)]
    recipient: Option<String>,
    /// At least this many seconds old.
    #[arg(long)]
    min_age: Option<u64>,
    /// ready, deferred or held.
    #[arg(long, value_parser = parse_state)]
    state: Option<State>,
    #[command(flatten)]
    target: Target,
}

/// Which entries an action takes, with `--all` to take every one.
#[derive(clap::Args)]
pub struct Selected {
    #[command(flatten)]
    select: Select,
    /// Every entry (an action with no other condition must say so).
    #[arg(long)]
    all: bool,
}

fn parse_state(text: &str) -> Result<State, String> {
    State::parse(text)
}

impl Select {
    fn filter(&self) -> Filter {
        Filter {
            ids: self.ids.clone(),
            domain: self.domain.clone(),
            sender: self.sender.clone(),
            recipient: self.recipient.clone(),
            min_age_secs: self.min_age,
            state: self.state,
        }
    }

    /// The filter as the API's query string.
    fn query(&self, limit: usize) -> String {
        let encode = crate::admin_client::path_segment;
        let mut pairs = vec![format!("limit={limit}")];
        if !self.ids.is_empty() {
            pairs.push(format!("ids={}", encode(&self.ids.join(","))));
        }
        for (key, value) in [
            ("domain", &self.domain),
            ("sender", &self.sender),
            ("recipient", &self.recipient),
        ] {
            if let Some(value) = value {
                pairs.push(format!("{key}={}", encode(value)));
            }
        }
        if let Some(age) = self.min_age {
            pairs.push(format!("min_age={age}"));
        }
        if let Some(state) = self.state {
            pairs.push(format!("state={}", state.name()));
        }
        pairs.join("&")
    }
}

/// Run one `ringpost queue` command.
pub fn run(command: QueueCommand) -> ExitCode {
    let result = match command {
        QueueCommand::List { select, limit } => list(&select, limit),
        QueueCommand::Stats { target } => stats(&target),
        QueueCommand::Show { id, target } => show(&id, &target),
        QueueCommand::Hold(s) => act(Action::Hold, &s),
        QueueCommand::Release(s) => act(Action::Release, &s),
        QueueCommand::Delete(s) => act(Action::Delete, &s),
        QueueCommand::Bounce(s) => act(Action::Bounce, &s),
        QueueCommand::Flush(s) => act(Action::Flush, &s),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(text) => {
            eprintln!("ringpost: {text}");
            ExitCode::FAILURE
        }
    }
}

/// How to reach the queue: the running server's API, or the stopped
/// server's store.
pub(crate) enum Reach {
    Server(AdminClient),
    Store(Arc<RocksStore>),
}

/// The running server's API when one holds the store, else the store
/// (read-only unless `write`).
pub(crate) fn reach(data_dir: &Path, write: bool) -> Result<Reach, String> {
    if !data_dir.join("CURRENT").is_file() {
        return Err(format!(
            "no store at {} (name the server's data dir with --data-dir, e.g. /var/lib/ringpost)",
            data_dir.display()
        ));
    }
    if !write {
        // A running server answers through its API. Otherwise the store is
        // only read: opened read-only, nothing in it is replayed, created or
        // left owned by whoever ran the command, and a server starting
        // meanwhile is not kept out.
        if let Ok(api) = AdminClient::for_data_dir(data_dir) {
            if api.answers() {
                return Ok(Reach::Server(api));
            }
        }
        let store = RocksStore::open(
            data_dir,
            RocksOptions {
                read_only: true,
                ..Default::default()
            },
        )
        .map_err(|e| format!("cannot open {}: {e}", data_dir.display()))?;
        return Ok(Reach::Store(Arc::new(store)));
    }
    match RocksStore::open(data_dir, RocksOptions::default()) {
        Ok(store) => Ok(Reach::Store(Arc::new(store))),
        Err(StoreError::Locked(_)) => AdminClient::for_data_dir(data_dir)
            .map(Reach::Server)
            .map_err(|e| {
                format!(
                    "the store at {} is in use by a running ringpost, and its admin API \
                     cannot be reached: {e}",
                    data_dir.display()
                )
            }),
        Err(e) => Err(format!("cannot open {}: {e}", data_dir.display())),
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn list(select: &Select, limit: usize) -> Result<(), String> {
    let target = &select.target;
    let views: Vec<EntryView> = match reach(&target.data_dir, false)? {
        Reach::Server(api) => {
            let answer = api.call(
                "GET",
                &format!("/api/v1/queue?{}", select.query(limit)),
                None,
            )?;
            if target.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&answer).unwrap_or_default()
                );
                return Ok(());
            }
            entry_views(&answer)?
        }
        Reach::Store(store) => {
            let picked = queue_admin::select(&*store, &select.filter(), now_ms(), limit)
                .map_err(|e| e.to_string())?;
            picked.into_iter().map(|(_, view)| view).collect()
        }
    };
    if target.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&views).unwrap_or_default()
        );
        return Ok(());
    }
    print_entries(&views);
    Ok(())
}

/// Entry views back from the API's JSON.
fn entry_views(answer: &Value) -> Result<Vec<EntryView>, String> {
    let rows = answer
        .as_array()
        .ok_or("the server's answer is not a list")?;
    Ok(rows
        .iter()
        .map(|row| EntryView {
            id: row["id"].as_str().unwrap_or_default().to_owned(),
            domain: row["domain"].as_str().unwrap_or_default().to_owned(),
            sender: row["sender"].as_str().unwrap_or_default().to_owned(),
            recipients: row["recipients"]
                .as_array()
                .map(|r| {
                    r.iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
            state: parse_state(row["state"].as_str().unwrap_or_default()).unwrap_or(State::Ready),
            arrived: row["arrived"].as_u64().unwrap_or_default(),
            due_ms: row["due_ms"].as_u64(),
            attempts: row["attempts"].as_u64().unwrap_or_default() as u32,
            last_error: row["last_error"].as_str().map(str::to_owned),
            size: row["size"].as_u64().unwrap_or_default(),
            pool: row["pool"].as_str().map(str::to_owned),
        })
        .collect())
}

/// Seconds as a short age: `42s`, `7m`, `3h`, `2d`.
fn age(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        3600..86400 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86400),
    }
}

fn print_entries(views: &[EntryView]) {
    let now = now_ms() / 1000;
    println!(
        "{:<32}  {:<24}  {:<8}  {:>3}  {:>4}  {:<28}  RECIPIENTS / LAST ERROR",
        "QUEUE ID", "DOMAIN", "STATE", "TRY", "AGE", "SENDER"
    );
    for v in views {
        let sender = if v.sender.is_empty() { "<>" } else { &v.sender };
        println!(
            "{:<32}  {:<24}  {:<8}  {:>3}  {:>4}  {:<28}  {}",
            v.id,
            v.domain,
            v.state.name(),
            v.attempts,
            age(now.saturating_sub(v.arrived)),
            sender,
            v.recipients.join(", ")
        );
        if let Some(error) = &v.last_error {
            println!("{:>112}  {}", "", error);
        }
    }
    eprintln!(
        "{} entr{}",
        views.len(),
        if views.len() == 1 { "y" } else { "ies" }
    );
}

fn show(id: &str, target: &Target) -> Result<(), String> {
    let shown: Value = match reach(&target.data_dir, false)? {
        Reach::Server(api) => api.call(
            "GET",
            &format!("/api/v1/queue/{}", crate::admin_client::path_segment(id)),
            None,
        )?,
        Reach::Store(store) => match queue_admin::show(&*store, id, now_ms()) {
            Ok(Some(shown)) => serde_json::to_value(shown).map_err(|e| e.to_string())?,
            Ok(None) => return Err(format!("no queued message {id}")),
            Err(e) => return Err(e.to_string()),
        },
    };
    if target.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&shown).unwrap_or_default()
        );
        return Ok(());
    }
    let text = |key: &str| shown[key].as_str().unwrap_or_default().to_owned();
    let sender = text("sender");
    println!("queue id    {}", text("id"));
    println!("from        <{sender}>");
    println!(
        "arrived     {} ago",
        age((now_ms() / 1000).saturating_sub(shown["arrived"].as_u64().unwrap_or_default()))
    );
    println!("size        {} bytes", shown["size"]);
    let recipients: Vec<&str> = shown["recipients"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    println!("to do       {}", recipients.join(", "));
    print_entries(&entry_views(&shown["entries"])?);
    println!();
    print!("{}", text("header"));
    Ok(())
}

fn stats(target: &Target) -> Result<(), String> {
    let stats: Stats = match reach(&target.data_dir, false)? {
        Reach::Server(api) => {
            let answer = api.call("GET", "/api/v1/queue/stats", None)?;
            if target.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&answer).unwrap_or_default()
                );
                return Ok(());
            }
            stats_from_json(&answer)
        }
        Reach::Store(store) => queue_admin::stats(&*store, now_ms()).map_err(|e| e.to_string())?,
    };
    if target.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&stats).unwrap_or_default()
        );
        return Ok(());
    }
    let now = now_ms() / 1000;
    println!(
        "{:<32}  {:>8}  {:>8}  {:>8}  {:>8}  {:>8}  {:>6}",
        "DOMAIN", "ENTRIES", "RCPTS", "READY", "DEFERRED", "HELD", "OLDEST"
    );
    let line = |name: &str, d: &queue_admin::DomainStats| {
        println!(
            "{:<32}  {:>8}  {:>8}  {:>8}  {:>8}  {:>8}  {:>6}",
            name,
            d.entries,
            d.recipients,
            d.ready,
            d.deferred,
            d.held,
            if d.entries == 0 {
                "-".to_owned()
            } else {
                age(now.saturating_sub(d.oldest_arrived))
            }
        )
    };
    for (domain, d) in &stats.domains {
        line(domain, d);
    }
    line("(all)", &stats.total);
    Ok(())
}

fn stats_from_json(answer: &Value) -> Stats {
    let domain = |v: &Value| queue_admin::DomainStats {
        entries: v["entries"].as_u64().unwrap_or_default(),
        recipients: v["recipients"].as_u64().unwrap_or_default(),
        ready: v["ready"].as_u64().unwrap_or_default(),
        deferred: v["deferred"].as_u64().unwrap_or_default(),
        held: v["held"].as_u64().unwrap_or_default(),
        oldest_arrived: v["oldest_arrived"].as_u64().unwrap_or_default(),
    };
    Stats {
        domains: answer["domains"]
            .as_object()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), domain(v))).collect())
            .unwrap_or_default(),
        total: domain(&answer["total"]),
    }
}

fn act(action: Action, selected: &Selected) -> Result<(), String> {
    let select = &selected.select;
    let filter = select.filter();
    if filter == Filter::default() && !selected.all {
        return Err(format!(
            "name the entries to {} (ids, --domain, --sender, --recipient, --min-age, --state), or say --all",
            action.name()
        ));
    }
    let target = &select.target;
    let counts = match reach(&target.data_dir, true)? {
        Reach::Server(api) => {
            let mut body = json!({
                "ids": filter.ids,
                "domain": filter.domain,
                "sender": filter.sender,
                "recipient": filter.recipient,
                "min_age_secs": filter.min_age_secs,
                "state": filter.state.map(State::name),
            });
            if selected.all {
                body["all"] = json!(true);
            }
            api.call(
                "POST",
                &format!("/api/v1/queue/{}", action.name()),
                Some(body),
            )?
        }
        Reach::Store(store) => offline(action, &store, &filter)?,
    };
    if target.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&counts).unwrap_or_default()
        );
    } else {
        let n = |key: &str| counts[key].as_u64().unwrap_or_default();
        println!(
            "{}: {} matched, {} done, {} in flight (try again), {} not found, {} not applicable, {} failed",
            action.name(),
            n("matched"),
            n("done"),
            n("in_flight"),
            n("not_found"),
            n("not_applicable"),
            n("failed"),
        );
        for problem in counts["problems"].as_array().into_iter().flatten() {
            eprintln!("  {}", problem.as_str().unwrap_or_default());
        }
    }
    // A script must see that the action did not take on every entry meant:
    // some failed or were busy, or an id named none.
    let count = |key: &str| counts[key].as_u64().unwrap_or_default();
    let left: u64 = ["failed", "in_flight", "not_found"]
        .iter()
        .map(|key| count(key))
        .sum();
    if left > 0 {
        return Err(format!(
            "{}: {left} of the entries named were not done (failed, in flight or not found)",
            action.name()
        ));
    }
    if !filter.ids.is_empty() && count("matched") == 0 {
        return Err(format!("{}: no entry has the id given", action.name()));
    }
    Ok(())
}

/// Hold or release on a stopped server's store, with a commit writer of
/// our own.
fn offline(action: Action, store: &Arc<RocksStore>, filter: &Filter) -> Result<Value, String> {
    if !matches!(action, Action::Hold | Action::Release) {
        return Err(format!(
            "`queue {}` needs the running server (its relay does it); start it first",
            action.name()
        ));
    }
    let now = now_ms();
    let picked =
        queue_admin::select(&**store, filter, now, usize::MAX).map_err(|e| e.to_string())?;
    let (pipeline, commits) = CommitPipeline::start(store.clone(), PipelineConfig::default(), None);
    let commit = |batch| commits.commit_blocking(batch);
    let (mut done, mut not_applicable, mut not_found, mut failed) = (0, 0, 0, 0);
    let mut problems = Vec::new();
    for (entry, view) in &picked {
        match queue_admin::hold_or_release_stored(&**store, &commit, entry, action, now) {
            Outcome::Done => done += 1,
            Outcome::NotFound => not_found += 1,
            Outcome::NotApplicable(why) => {
                not_applicable += 1;
                problems.push(format!("{} {}: {why}", view.id, view.domain));
            }
            Outcome::InFlight => {}
            Outcome::Failed(why) => {
                failed += 1;
                problems.push(format!("{} {}: {why}", view.id, view.domain));
            }
        }
    }
    drop(commits);
    pipeline.shutdown();
    ringpost_storage::Store::flush(&**store).map_err(|e| e.to_string())?;
    problems.truncate(20);
    Ok(json!({
        "action": action.name(),
        "matched": picked.len(),
        "done": done,
        "in_flight": 0,
        "not_found": not_found,
        "not_applicable": not_applicable,
        "failed": failed,
        "problems": problems,
    }))
}
