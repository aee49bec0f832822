//! NOTIFY (RFC 5465) against the store: what a session watches, what it
//! was last told of each watched mailbox, and the untagged STATUS and LIST
//! responses that tell it what changed since.
//!
//! Changes are found by comparison, not by a log: when the account's news
//! arrives (any commit touching it, from any session or delivery), the
//! session reads the account's mailbox list (one prefix scan; message
//! counts are kept in each mailbox's meta row) and its subscriptions if it
//! watches them, and reports what differs from what it last saw. News
//! coalesces, so a burst of changes costs one comparison, and what a
//! session holds is bounded by the account's number of mailboxes.

use super::commands::{Done, Outcome};
use super::convert::to_mailbox;
use super::imap_tag::Tag;
use super::Conn;
use ringpost_protocols::imap::notify::{
    EventGroup, Events, Filter, NotifyCommand, SUPPORTED_EVENTS,
};
use ringpost_protocols::imap::types::core::{Atom, QuotedChar};
use ringpost_protocols::imap::types::flag::FlagNameAttribute;
use ringpost_protocols::imap::types::response::Data;
use ringpost_protocols::imap::types::status::StatusDataItem;
use ringpost_protocols::imap::ImapSession;
use ringpost_storage::mailbox::{self, MailboxMeta};
use ringpost_storage::StoreError;
use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroU32;

/// The mailbox mail is delivered to (the `inboxes` filter).
const INBOX: &str = "INBOX";

/// Most mailboxes (and subscriptions) one session watches: what it keeps
/// of each is small, but an account may have any number. Past it, NOTIFY
/// SET is refused and a running NOTIFY ends, with NOTIFICATIONOVERFLOW
/// (RFC 5465 §5.8); the client can still poll.
pub(super) const MAX_WATCHED: usize = 2_000;

/// What a NOTIFY SET asked for, and what the session was last told.
pub(super) struct Watch {
    /// The events of the selected mailbox, when `selected` or
    /// `selected-delayed` named any: they are pushed as they happen.
    pub(super) selected: Option<Events>,
    /// `selected-delayed`: expunges wait for a command that allows them.
    pub(super) delayed: bool,
    /// The groups about other mailboxes, in the order given (the first
    /// that matches a mailbox decides its events).
    groups: Vec<EventGroup>,
    /// Each watched mailbox's state when last reported (or first seen).
    known: BTreeMap<String, Seen>,
    /// Every mailbox name with its UIDVALIDITY, when some group watches
    /// MailboxName (a rename keeps the UIDVALIDITY).
    names: Option<BTreeMap<String, u32>>,
    /// The subscriptions, when some group watches SubscriptionChange.
    subscriptions: Option<BTreeSet<String>>,
}

/// What a STATUS reports of a mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    messages: u32,
    uidnext: u32,
    uidvalidity: u32,
    highest_modseq: u64,
}

impl Seen {
    fn of(meta: &MailboxMeta) -> Seen {
        Seen {
            messages: meta.messages,
            uidnext: meta.uidnext,
            uidvalidity: meta.uidvalidity,
            highest_modseq: meta.highest_modseq,
        }
    }

    /// Whether `now` differs from this in what `events` report.
    fn differs(&self, now: &Seen, events: &Events) -> bool {
        let reported = |seen: &Seen| {
            let items = Items::of(events);
            (
                items.messages.then_some(seen.messages),
                items.uidnext.then_some(seen.uidnext),
                items.uidvalidity.then_some(seen.uidvalidity),
                items.highest_modseq.then_some(seen.highest_modseq),
            )
        };
        reported(self) != reported(now)
    }
}

/// The STATUS items that tell of `events`: MESSAGES for expunges, also
/// UIDNEXT and UIDVALIDITY for new messages, UIDVALIDITY and HIGHESTMODSEQ
/// for flag changes.
struct Items {
    messages: bool,
    uidnext: bool,
    uidvalidity: bool,
    highest_modseq: bool,
}

impl Items {
    fn of(events: &Events) -> Items {
        Items {
            messages: events.message_new || events.message_expunge,
            uidnext: events.message_new,
            uidvalidity: events.message_new || events.flag_change,
            highest_modseq: events.flag_change,
        }
    }
}

/// The account as one look at the store found it.
struct Snapshot {
    mailboxes: BTreeMap<String, MailboxMeta>,
    subscriptions: BTreeSet<String>,
}

impl Snapshot {
    /// More mailboxes or subscriptions than a session keeps track of.
    fn too_big(&self) -> bool {
        self.mailboxes.len() > MAX_WATCHED || self.subscriptions.len() > MAX_WATCHED
    }
}

impl Watch {
    fn new(groups: Vec<EventGroup>) -> Watch {
        let (selected, others): (Vec<EventGroup>, Vec<EventGroup>) =
            groups.into_iter().partition(|g| g.filter.is_selected());
        let selected = selected.into_iter().next();
        let delayed = selected
            .as_ref()
            .is_some_and(|g| g.filter == Filter::SelectedDelayed);
        let names = others
            .iter()
            .any(|g| g.events.mailbox_name)
            .then(BTreeMap::new);
        let subscriptions = others
            .iter()
            .any(|g| g.events.subscription_change)
            .then(BTreeSet::new);
        Watch {
            selected: selected.map(|g| g.events).filter(|e| e.about_messages()),
            delayed,
            groups: others,
            known: BTreeMap::new(),
            names,
            subscriptions,
        }
    }

    /// Whether a group needs the subscriptions to match mailboxes.
    fn filters_by_subscription(&self) -> bool {
        self.subscriptions.is_some() || self.groups.iter().any(|g| g.filter == Filter::Subscribed)
    }

    /// The events of the first group whose filter takes `name`.
    fn events_of(&self, name: &str, subscriptions: &BTreeSet<String>) -> Option<&Events> {
        self.groups
            .iter()
            .find(|g| takes(&g.filter, name, subscriptions))
            .map(|g| &g.events)
    }
}

/// Whether `filter` names mailbox `name`.
fn takes(filter: &Filter, name: &str, subscriptions: &BTreeSet<String>) -> bool {
    match filter {
        Filter::Selected | Filter::SelectedDelayed => false,
        Filter::Inboxes => name == INBOX,
        Filter::Personal => true,
        Filter::Subscribed => subscriptions.contains(name),
        Filter::Subtree(roots) => roots.iter().any(|root| {
            name == root
                || name
                    .strip_prefix(root.as_str())
                    .is_some_and(|rest| rest.starts_with('/'))
        }),
        Filter::Mailboxes(names) => names.iter().any(|n| n == name),
    }
}

impl Conn<'_> {
    /// Run NOTIFY and write its answer (and, for SET STATUS, the STATUS of
    /// each watched mailbox first).
    pub(super) fn notify(&mut self, imap: &mut ImapSession, tag: &Tag, command: NotifyCommand) {
        let outcome = match command {
            NotifyCommand::None => {
                self.watch = None;
                Ok(Done::Ok("NOTIFY completed"))
            }
            NotifyCommand::Set { status, groups } => self.notify_set(imap, status, groups),
        };
        self.answer(imap, tag, outcome);
    }

    fn notify_set(
        &mut self,
        imap: &mut ImapSession,
        status: bool,
        groups: Vec<EventGroup>,
    ) -> Outcome {
        if groups.iter().any(|g| !g.events.unsupported.is_empty()) {
            // RFC 5465 §5: the events the server does support.
            let code = format!("BADEVENT ({SUPPORTED_EVENTS})");
            return Ok(Done::NoCode(code, "some of those events are not supported"));
        }
        // The names a filter gives are the client's: modified UTF-7 from
        // an IMAP4rev1 session.
        let rev2 = imap.is_rev2();
        let groups = groups
            .into_iter()
            .map(|mut group| {
                if let Filter::Subtree(names) | Filter::Mailboxes(names) = &mut group.filter {
                    for name in names.iter_mut() {
                        *name = super::convert::from_client(name, rev2);
                    }
                }
                group
            })
            .collect();
        let mut watch = Watch::new(groups);
        let snapshot = self.snapshot(&watch)?;
        if snapshot.too_big() {
            return Ok(Done::No(
                Some("NOTIFICATIONOVERFLOW"),
                "too many mailboxes to watch",
            ));
        }
        let selected = self.view.as_ref().map(|v| v.name.clone());
        for (name, meta) in &snapshot.mailboxes {
            let Some(events) = watch.events_of(name, &snapshot.subscriptions) else {
                continue;
            };
            if !events.about_messages() {
                continue;
            }
            let seen = Seen::of(meta);
            // The selected mailbox is reported as such, not by STATUS.
            if status && selected.as_deref() != Some(name) {
                send_status(imap, name, &seen, events);
            }
            watch.known.insert(name.clone(), seen);
        }
        if let Some(names) = &mut watch.names {
            *names = uidvalidities(&snapshot);
        }
        if let Some(subscriptions) = &mut watch.subscriptions {
            *subscriptions = snapshot.subscriptions;
        }
        self.watch = Some(watch);
        Ok(Done::Ok("NOTIFY completed"))
    }

    /// The account's mailboxes, and its subscriptions when `watch` needs
    /// them.
    fn snapshot(&self, watch: &Watch) -> Result<Snapshot, StoreError> {
        let store = &*self.shard.store;
        let mailboxes = mailbox::list(store, self.user())?
            .into_iter()
            .map(|m| (m.name, m.meta))
            .collect();
        let subscriptions = match watch.filters_by_subscription() {
            true => mailbox::subscriptions(store, self.user())?
                .into_iter()
                .collect(),
            false => BTreeSet::new(),
        };
        Ok(Snapshot {
            mailboxes,
            subscriptions,
        })
    }

    /// Tell the session what changed in the mailboxes it watches (other
    /// than the selected one) since it was last told.
    /// Only after news (between commands, or taken at a command's end).
    pub(super) fn report_watched(&mut self, imap: &mut ImapSession) {
        if !std::mem::take(&mut self.unwatched_news) {
            return;
        }
        let Some(mut watch) = self.watch.take() else {
            return;
        };
        match self.snapshot(&watch) {
            Ok(snapshot) if snapshot.too_big() => {
                // RFC 5465 §5.8: notifications end, the client is told.
                imap.untagged(
                    "OK [NOTIFICATIONOVERFLOW] too many mailboxes to watch; NOTIFY is off",
                );
                return;
            }
            Ok(snapshot) => self.compare(imap, &mut watch, snapshot),
            Err(e) => {
                // Told later, when the next change brings news.
                tracing::warn!(shard = self.shard.id, error = %e, "imap NOTIFY: cannot read mailboxes");
            }
        }
        self.watch = Some(watch);
    }

    fn compare(&self, imap: &mut ImapSession, watch: &mut Watch, snapshot: Snapshot) {
        if let Some(known) = watch.names.take() {
            let now = uidvalidities(&snapshot);
            report_names(imap, watch, &known, &now, &snapshot.subscriptions);
            watch.names = Some(now);
        }
        if let Some(known) = watch.subscriptions.take() {
            for name in snapshot.subscriptions.symmetric_difference(&known) {
                let wanted = watch
                    .events_of(name, &snapshot.subscriptions)
                    .or_else(|| watch.events_of(name, &known))
                    .is_some_and(|e| e.subscription_change);
                if wanted {
                    let subscribed = snapshot.subscriptions.contains(name);
                    let exists = snapshot.mailboxes.contains_key(name);
                    send_list(imap, name, subscribed, exists, None);
                }
            }
            watch.subscriptions = Some(snapshot.subscriptions.clone());
        }
        let selected = self.view.as_ref().map(|v| v.name.as_str());
        watch
            .known
            .retain(|name, _| snapshot.mailboxes.contains_key(name));
        for (name, meta) in &snapshot.mailboxes {
            let Some(events) = watch.events_of(name, &snapshot.subscriptions) else {
                watch.known.remove(name);
                continue;
            };
            if !events.about_messages() {
                continue;
            }
            let now = Seen::of(meta);
            if selected == Some(name.as_str()) {
                // Reported as the selected mailbox; kept up to date here
                // so that closing it is no news.
                watch.known.insert(name.clone(), now);
                continue;
            }
            let changed = match watch.known.get(name) {
                Some(before) => before.differs(&now, events),
                // Newly watched (created, subscribed, renamed in): only
                // news if it already holds mail.
                None => now.messages > 0,
            };
            if changed {
                send_status(imap, name, &now, events);
            }
            watch.known.insert(name.clone(), now);
        }
    }
}

/// Every mailbox's UIDVALIDITY by name.
fn uidvalidities(snapshot: &Snapshot) -> BTreeMap<String, u32> {
    snapshot
        .mailboxes
        .iter()
        .map(|(name, meta)| (name.clone(), meta.uidvalidity))
        .collect()
}

/// MailboxName (RFC 5465 §5.4): a LIST for each mailbox created, deleted
/// or renamed (a name gone and a name come with the same UIDVALIDITY),
/// the new name with `OLDNAME`.
fn report_names(
    imap: &mut ImapSession,
    watch: &Watch,
    known: &BTreeMap<String, u32>,
    now: &BTreeMap<String, u32>,
    subscriptions: &BTreeSet<String>,
) {
    let wanted = |name: &str| {
        watch
            .events_of(name, subscriptions)
            .is_some_and(|e| e.mailbox_name)
    };
    let gone: Vec<(&String, &u32)> = known
        .iter()
        .filter(|(n, _)| !now.contains_key(*n))
        .collect();
    let mut renamed_from: BTreeMap<&str, &str> = BTreeMap::new();
    for (name, uidvalidity) in now.iter().filter(|(n, _)| !known.contains_key(*n)) {
        let old = gone
            .iter()
            .find(|(_, v)| *v == uidvalidity)
            .map(|(old, _)| old.as_str());
        if let Some(old) = old {
            renamed_from.insert(old, name);
        }
        if wanted(name) || old.is_some_and(wanted) {
            send_list(imap, name, subscriptions.contains(name), true, old);
        }
    }
    for (name, _) in gone {
        if !renamed_from.contains_key(name.as_str()) && wanted(name) {
            send_list(imap, name, false, false, None);
        }
    }
}

/// `* STATUS name (...)` with the [`Items`] that tell of `events`.
fn send_status(imap: &mut ImapSession, name: &str, seen: &Seen, events: &Events) {
    let Some(mailbox) = to_mailbox(name, imap.is_rev2()) else {
        return;
    };
    let nonzero = |n: u32| NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN);
    let wanted = Items::of(events);
    let mut items = Vec::with_capacity(4);
    if wanted.messages {
        items.push(StatusDataItem::Messages(seen.messages));
    }
    if wanted.uidnext {
        items.push(StatusDataItem::UidNext(nonzero(seen.uidnext)));
    }
    if wanted.uidvalidity {
        items.push(StatusDataItem::UidValidity(nonzero(seen.uidvalidity)));
    }
    if wanted.highest_modseq {
        items.push(StatusDataItem::HighestModSeq(seen.highest_modseq.max(1)));
    }
    imap.data(Data::Status {
        mailbox,
        items: items.into(),
    });
}

/// `* LIST (attributes) "/" name`, with `\Subscribed` or `\NonExistent`,
/// and `("OLDNAME" ("old"))` after a rename.
fn send_list(
    imap: &mut ImapSession,
    name: &str,
    subscribed: bool,
    exists: bool,
    old: Option<&str>,
) {
    let Some(mailbox) = to_mailbox(name, imap.is_rev2()) else {
        return;
    };
    let atom = |text: &'static str| FlagNameAttribute::from(Atom::unvalidated(text));
    let mut items = Vec::new();
    if !exists {
        items.push(atom("NonExistent"));
    }
    if subscribed {
        items.push(atom("Subscribed"));
    }
    let data = Data::List {
        items,
        delimiter: QuotedChar::try_from('/').ok(),
        mailbox,
    };
    match old {
        Some(old) => {
            let old = match imap.is_rev2() {
                true => old.to_owned(),
                false => ringpost_protocols::imap::mutf7::encode(old),
            };
            let quoted = old.replace('\\', "\\\\").replace('"', "\\\"");
            imap.data_extended(data, &format!(" (\"OLDNAME\" (\"{quoted}\"))"));
        }
        None => imap.data(data),
    }
}
