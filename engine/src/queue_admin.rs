//! Queue administration: what is queued (list, stats) and what an operator
//! may do to an entry (hold, release, delete, bounce, flush).
//!
//! Reading is a scan of the store's `queue` family (with each message's
//! envelope for its sender), off any shard; `ringpost queue list` works on
//! a stopped server's store the same way. Changing an entry is the job of
//! the shard that owns its domain ([`crate::relay`]), asked over its inbox:
//! it alone knows whether the entry is in memory, waiting or in flight, and
//! it changes memory and store together. A hold is durable: the entry's due
//! time becomes [`HELD`], which the scheduler never loads, so held mail
//! stays held across restarts until released.

use ringpost_storage::spool::{self, MessageId, QueueEntry, HELD};
use ringpost_storage::{Store, StoreError};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// What an operator may do to a queue entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Keep it, never deliver it, until released.
    Hold,
    /// A held entry becomes due now.
    Release,
    /// Drop it: no delivery, no DSN; the body goes when nothing else needs it.
    Delete,
    /// Fail it now: one DSN to the sender, as for a permanent failure.
    Bounce,
    /// Try it now, whatever its due time.
    Flush,
}

impl Action {
    /// The action named `name` (`hold`, `release`, ...).
    pub fn parse(name: &str) -> Option<Action> {
        Some(match name {
            "hold" => Action::Hold,
            "release" => Action::Release,
            "delete" => Action::Delete,
            "bounce" => Action::Bounce,
            "flush" => Action::Flush,
            _ => return None,
        })
    }

    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Action::Hold => "hold",
            Action::Release => "release",
            Action::Delete => "delete",
            Action::Bounce => "bounce",
            Action::Flush => "flush",
        }
    }
}

/// How one entry's action ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Done.
    Done,
    /// No such entry any more (delivered, or changed since it was listed).
    NotFound,
    /// A delivery attempt has it now; ask again when it is over.
    InFlight,
    /// The action does not apply (e.g. release of an entry not held).
    NotApplicable(&'static str),
    /// The store refused.
    Failed(String),
}

/// An entry's state as the store shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Due now (waiting for a connection, or being delivered).
    Ready,
    /// Waiting for its due time (a retry after a temporary failure).
    Deferred,
    /// Held by an operator.
    Held,
}

impl State {
    /// The state named `name` (`ready`, `deferred`, `held`).
    pub fn parse(name: &str) -> Result<State, String> {
        match name {
            "ready" => Ok(State::Ready),
            "deferred" => Ok(State::Deferred),
            "held" => Ok(State::Held),
            _ => Err(format!("state `{name}` is none of ready, deferred, held")),
        }
    }

    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            State::Ready => "ready",
            State::Deferred => "deferred",
            State::Held => "held",
        }
    }
}

/// One queue entry as `list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EntryView {
    /// The message's queue id.
    pub id: String,
    /// The destination domain.
    pub domain: String,
    /// The envelope sender ("" for the null sender).
    pub sender: String,
    /// Recipients at the domain still to do.
    pub recipients: Vec<String>,
    /// State.
    pub state: State,
    /// When the message arrived, Unix seconds.
    pub arrived: u64,
    /// When it is next due, Unix milliseconds; `None` when held.
    pub due_ms: Option<u64>,
    /// Attempts made.
    pub attempts: u32,
    /// The last temporary error.
    pub last_error: Option<String>,
    /// Message size, bytes.
    pub size: u64,
    /// The egress pool it leaves through, if not the default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
}

/// Which entries: every condition given must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Queue ids (hex).
    pub ids: Vec<String>,
    /// Destination domain (any case).
    pub domain: Option<String>,
    /// Envelope sender (any case; "" for the null sender).
    pub sender: Option<String>,
    /// A recipient (any case).
    pub recipient: Option<String>,
    /// At least this old, seconds.
    pub min_age_secs: Option<u64>,
    /// In this state.
    pub state: Option<State>,
}

impl Filter {
    /// Whether `view` (at `now_ms`) passes.
    fn admits(&self, view: &EntryView, now_ms: u64) -> bool {
        let same = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
        (self.ids.is_empty() || self.ids.iter().any(|id| same(id, &view.id)))
            && self.domain.as_deref().is_none_or(|d| same(d, &view.domain))
            && self.sender.as_deref().is_none_or(|s| same(s, &view.sender))
            && self
                .recipient
                .as_deref()
                .is_none_or(|r| view.recipients.iter().any(|v| same(r, v)))
            && self
                .min_age_secs
                .is_none_or(|age| now_ms / 1000 >= view.arrived.saturating_add(age))
            && self.state.is_none_or(|state| state == view.state)
    }
}

/// The entries `filter` picks (at most `limit`), in due order, each with
/// the entry itself (to act on) and how it shows.
pub fn select(
    store: &dyn Store,
    filter: &Filter,
    now_ms: u64,
    limit: usize,
) -> Result<Vec<(QueueEntry, EntryView)>, StoreError> {
    let mut envelopes: HashMap<MessageId, Option<spool::Envelope>> = HashMap::new();
    let mut out = Vec::new();
    let mut failure = None;
    spool::scan_queue_entries(store, &mut |entry| {
        let envelope = match envelopes.get(&entry.id) {
            Some(known) => known.clone(),
            None => match spool::read_envelope(store, &entry.id) {
                Ok(read) => {
                    envelopes.insert(entry.id, read.clone());
                    read
                }
                Err(e) => {
                    failure = Some(e);
                    return false;
                }
            },
        };
        let view = view(&entry, envelope.as_ref(), now_ms);
        if filter.admits(&view, now_ms) {
            out.push((entry, view));
        }
        out.len() < limit
    })?;
    failure.map_or(Ok(out), Err)
}

fn view(entry: &QueueEntry, envelope: Option<&spool::Envelope>, now_ms: u64) -> EntryView {
    let state = if entry.is_held() {
        State::Held
    } else if entry.due > now_ms {
        State::Deferred
    } else {
        State::Ready
    };
    EntryView {
        id: entry.id.to_hex(),
        domain: entry.domain.clone(),
        sender: envelope.map(|e| e.sender.clone()).unwrap_or_default(),
        recipients: entry.recipients.clone(),
        state,
        arrived: entry.id.unix_micros() / 1_000_000,
        due_ms: (!entry.is_held()).then_some(entry.due),
        attempts: entry.attempts,
        last_error: entry.last_error.clone(),
        size: envelope.map_or(0, |e| e.size),
        pool: entry.pool.clone(),
    }
}

/// One queued message as `show` tells it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MessageView {
    /// Its queue id.
    pub id: String,
    /// The envelope sender ("" for the null sender).
    pub sender: String,
    /// When it arrived, Unix seconds.
    pub arrived: u64,
    /// Its size, bytes.
    pub size: u64,
    /// The recipients the relay still has to deliver to.
    pub recipients: Vec<String>,
    /// Its queue entries, one per destination domain.
    pub entries: Vec<EntryView>,
    /// Its header section as stored (our trace field first), at most
    /// [`MAX_SHOWN_HEADER`] octets, as text.
    pub header: String,
}

/// The most of a message's header `show` gives.
pub const MAX_SHOWN_HEADER: usize = 64 * 1024;

/// The queued message `id` (hex), if the store has it: its envelope, its
/// entries (a scan of the `queue` family) and its header.
pub fn show(store: &dyn Store, id: &str, now_ms: u64) -> Result<Option<MessageView>, StoreError> {
    let Some(id) = MessageId::from_hex(id) else {
        return Ok(None);
    };
    let Some(envelope) = spool::read_envelope(store, &id)? else {
        return Ok(None);
    };
    let mut entries = Vec::new();
    spool::scan_queue_entries(store, &mut |entry| {
        if entry.id == id {
            entries.push(view(&entry, Some(&envelope), now_ms));
        }
        true
    })?;
    let body = spool::read_body(store, &id)?.unwrap_or_default();
    let end = body
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(body.len(), |at| at + 2);
    let header = String::from_utf8_lossy(&body[..end.min(MAX_SHOWN_HEADER)]).into_owned();
    Ok(Some(MessageView {
        id: id.to_hex(),
        sender: envelope.sender,
        arrived: envelope.received_at / 1_000_000,
        size: envelope.size,
        recipients: envelope.recipients,
        entries,
        header,
    }))
}

/// One destination's line of `stats`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DomainStats {
    /// Entries (one per message).
    pub entries: u64,
    /// Recipients in them.
    pub recipients: u64,
    /// Entries due now.
    pub ready: u64,
    /// Entries waiting for a retry.
    pub deferred: u64,
    /// Entries held.
    pub held: u64,
    /// When its oldest message arrived, Unix seconds.
    pub oldest_arrived: u64,
}

/// The queue by destination, and in all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Every destination, by name.
    pub domains: BTreeMap<String, DomainStats>,
    /// All of them together.
    pub total: DomainStats,
}

impl DomainStats {
    fn add(&mut self, entry: &QueueEntry, now_ms: u64) {
        let arrived = entry.id.unix_micros() / 1_000_000;
        if self.entries == 0 || arrived < self.oldest_arrived {
            self.oldest_arrived = arrived;
        }
        self.entries += 1;
        self.recipients += entry.recipients.len() as u64;
        match () {
            _ if entry.is_held() => self.held += 1,
            _ if entry.due > now_ms => self.deferred += 1,
            _ => self.ready += 1,
        }
    }
}

/// Counts by destination: one scan of the `queue` family, keys and small
/// values only.
pub fn stats(store: &dyn Store, now_ms: u64) -> Result<Stats, StoreError> {
    let mut stats = Stats::default();
    spool::scan_queue_entries(store, &mut |entry| {
        stats.total.add(&entry, now_ms);
        stats
            .domains
            .entry(entry.domain.clone())
            .or_default()
            .add(&entry, now_ms);
        true
    })?;
    Ok(stats)
}

/// Hold or release `entry` in the store alone: for a server whose relay is
/// off (nothing else touches its queue). `commit` writes a batch durably.
pub fn hold_or_release_stored(
    store: &dyn Store,
    commit: &dyn Fn(ringpost_storage::WriteBatch) -> Result<(), StoreError>,
    entry: &QueueEntry,
    action: Action,
    now_ms: u64,
) -> Outcome {
    let due = match (action, entry.is_held()) {
        (Action::Hold, false) => HELD,
        (Action::Release, true) => now_ms,
        (Action::Hold, true) => return Outcome::NotApplicable("already held"),
        (Action::Release, false) => return Outcome::NotApplicable("not held"),
        _ => return Outcome::NotApplicable("the relay is off"),
    };
    match store.get(ringpost_storage::Family::Queue, &entry.key()) {
        Ok(Some(_)) => {}
        Ok(None) => return Outcome::NotFound,
        Err(e) => return Outcome::Failed(e.to_string()),
    }
    let moved = QueueEntry {
        due,
        ..entry.clone()
    };
    let mut batch = ringpost_storage::WriteBatch::new();
    spool::reschedule(&mut batch, entry, &moved);
    match commit(batch) {
        Ok(()) => Outcome::Done,
        Err(e) => Outcome::Failed(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringpost_storage::spool::Envelope;
    use ringpost_storage::{MemoryStore, WriteBatch};

    fn queued(store: &MemoryStore, seq: u64, domain: &str, due: u64, sender: &str) -> QueueEntry {
        let id = MessageId::new(1_000_000_000 * (seq + 1), 0, seq);
        let entry = QueueEntry {
            pool: None,
            due,
            id,
            domain: domain.into(),
            recipients: vec![format!("r{seq}@{domain}")],
            attempts: 0,
            last_error: None,
        };
        let mut batch = WriteBatch::new();
        spool::put_envelope(
            &mut batch,
            &id,
            &Envelope {
                sender: sender.into(),
                received_at: id.unix_micros(),
                size: 100 + seq,
                recipients: entry.recipients.clone(),
                dsn: Default::default(),
            },
        );
        spool::put_queue_entry(&mut batch, &entry);
        store.write(&[batch], true).unwrap();
        entry
    }

    #[test]
    fn select_filters_and_stats_count() {
        let store = MemoryStore::new();
        let now = 10_000_000;
        queued(&store, 1, "a.test", 5, "s@x.test");
        queued(&store, 2, "a.test", now + 60_000, "t@x.test");
        queued(&store, 3, "b.test", HELD, "");
        let all = select(&store, &Filter::default(), now, 100).unwrap();
        let states: Vec<State> = all.iter().map(|(_, v)| v.state).collect();
        assert_eq!(states, [State::Ready, State::Deferred, State::Held]);
        let pick = |filter: Filter| -> Vec<String> {
            select(&store, &filter, now, 100)
                .unwrap()
                .into_iter()
                .map(|(_, v)| v.recipients[0].clone())
                .collect()
        };
        let by_domain = Filter {
            domain: Some("A.test".into()),
            ..Filter::default()
        };
        assert_eq!(pick(by_domain), ["r1@a.test", "r2@a.test"]);
        let null_sender = Filter {
            sender: Some(String::new()),
            ..Filter::default()
        };
        assert_eq!(pick(null_sender), ["r3@b.test"]);
        let held = Filter {
            state: Some(State::Held),
            ..Filter::default()
        };
        assert_eq!(pick(held), ["r3@b.test"]);
        let rcpt = Filter {
            recipient: Some("R2@A.TEST".into()),
            ..Filter::default()
        };
        assert_eq!(pick(rcpt), ["r2@a.test"]);
        // Message 1 arrived at 2000 s, 2 at 3000 s; now is 10000 s.
        let old = Filter {
            min_age_secs: Some(7500),
            ..Filter::default()
        };
        assert_eq!(pick(old), ["r1@a.test"]);
        assert_eq!(select(&store, &Filter::default(), now, 2).unwrap().len(), 2);

        let stats = stats(&store, now).unwrap();
        assert_eq!(stats.total.entries, 3);
        assert_eq!(
            (stats.total.ready, stats.total.deferred, stats.total.held),
            (1, 1, 1)
        );
        assert_eq!(stats.domains["a.test"].entries, 2);
        assert_eq!(stats.domains["a.test"].oldest_arrived, 2000);
        assert_eq!(stats.domains["b.test"].held, 1);
    }

    #[test]
    fn show_gives_envelope_entries_and_header() {
        let store = MemoryStore::new();
        let entry = queued(&store, 1, "a.test", 5, "s@x.test");
        let mut batch = WriteBatch::new();
        batch.put(
            ringpost_storage::Family::Blobs,
            entry.id.0.to_vec(),
            b"Subject: hi\r\nTo: r1@a.test\r\n\r\nsecret body\r\n".to_vec(),
        );
        store.write(&[batch], true).unwrap();
        let shown = show(&store, &entry.id.to_hex(), 100).unwrap().unwrap();
        assert_eq!(shown.sender, "s@x.test");
        assert_eq!(shown.entries.len(), 1);
        assert_eq!(shown.entries[0].domain, "a.test");
        assert_eq!(shown.header, "Subject: hi\r\nTo: r1@a.test\r\n");
        assert_eq!(show(&store, "nothex", 100).unwrap(), None);
        assert_eq!(show(&store, &"0".repeat(32), 100).unwrap(), None);
    }

    #[test]
    fn hold_and_release_in_the_store() {
        let store = MemoryStore::new();
        let entry = queued(&store, 1, "a.test", 5, "s@x.test");
        let commit = |batch| store.write(&[batch], true);
        assert_eq!(
            hold_or_release_stored(&store, &commit, &entry, Action::Hold, 100),
            Outcome::Done
        );
        let held = select(&store, &Filter::default(), 100, 10).unwrap();
        assert_eq!(held.len(), 1);
        assert!(held[0].0.is_held());
        assert_eq!(
            hold_or_release_stored(&store, &commit, &held[0].0, Action::Hold, 100),
            Outcome::NotApplicable("already held")
        );
        // The entry as it was before the hold is gone.
        assert_eq!(
            hold_or_release_stored(&store, &commit, &entry, Action::Hold, 100),
            Outcome::NotFound
        );
        let stale = QueueEntry {
            due: 6,
            ..entry.clone()
        };
        assert_eq!(
            hold_or_release_stored(&store, &commit, &stale, Action::Hold, 100),
            Outcome::NotFound
        );
        assert_eq!(
            hold_or_release_stored(&store, &commit, &held[0].0, Action::Release, 100),
            Outcome::Done
        );
        let released = select(&store, &Filter::default(), 100, 10).unwrap();
        assert_eq!(
            (released[0].0.due, released[0].1.state),
            (100, State::Ready)
        );
    }
}
