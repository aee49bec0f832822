//! CONTEXT=SEARCH and CONTEXT=SORT (RFC 5267): searches whose results the
//! server keeps up to date while the mailbox stays selected.
//!
//! Each UPDATE search keeps its result as UIDs (in mailbox order, or in
//! sort order for SORT). At the end of every command, and whenever news is
//! pushed (IDLE, NOTIFY), the messages changed since the search last looked
//! are tried against its key again; a new message and a flag change both
//! raise a message's modseq, so "changed" is "modseq above what it saw".
//! The differences go out as `ADDTO` and `REMOVEFROM`. Expunged messages
//! leave the results just before their EXPUNGE responses go out, so the
//! number in a REMOVEFROM is still the client's. An unsorted result is in
//! mailbox order, so its position is 0; a sorted one says where in the
//! list each message goes, one message a response.
//!
//! What a session keeps is bounded: at most [`MAX_UPDATES`] searches, each
//! at most the mailbox's size; past that the client gets `NOUPDATE`.

use super::view::View;
use ringpost_protocols::imap::esearch::{update_line, Delta};
use ringpost_protocols::imap::sort::{self, SortFields, Sortable};
use ringpost_protocols::imap::types::extensions::sort::SortCriterion;
use ringpost_protocols::imap::types::search::SearchKey;
use ringpost_protocols::imap::ImapSession;
use std::collections::{BTreeSet, HashMap};

/// Most UPDATE searches one session keeps at once.
pub(super) const MAX_UPDATES: usize = 8;

/// The UPDATE searches of the selected mailbox.
#[derive(Default)]
pub(crate) struct Updates(Vec<Update>);

/// One UPDATE search.
pub(crate) struct Update {
    /// The tag of the command that asked, which its updates carry.
    pub tag: String,
    /// Numbers are UIDs (UID SEARCH, UID SORT).
    pub uid: bool,
    /// What a message must match.
    pub key: SearchKey<'static>,
    /// SORT's order, and what it compares of each message in the result;
    /// `None` for SEARCH.
    pub sort: Option<Sorted>,
    /// The result: UIDs in mailbox order, or in sort order.
    pub result: Vec<u32>,
    /// Messages whose modseq is at most this have been tried.
    pub checked: u64,
}

/// A SORT's criteria and the sort fields of its result's messages.
pub(crate) struct Sorted {
    pub criteria: Vec<SortCriterion>,
    /// By UID: arrival, size and header fields (the sequence number is
    /// filled in when sorting).
    pub fields: HashMap<u32, Sortable>,
}

impl Updates {
    /// Whether any search wants updates.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Keep `update` up to date, unless there are too many already; says
    /// which.
    pub fn add(&mut self, update: Update) -> bool {
        // A search under a tag in use replaces the old one.
        self.0.retain(|u| u.tag != update.tag);
        if self.0.len() >= MAX_UPDATES {
            return false;
        }
        self.0.push(update);
        true
    }

    /// CANCELUPDATE of the searches with these tags.
    pub fn cancel(&mut self, tags: &[String]) {
        self.0.retain(|u| !tags.contains(&u.tag));
    }

    /// The message at `seq` (UID `uid`) is being expunged: it leaves every
    /// result that has it, told before its EXPUNGE goes out.
    pub fn expunged(&mut self, session: &mut ImapSession, seq: u32, uid: u32) {
        for update in &mut self.0 {
            let Some(at) = update.result.iter().position(|&u| u == uid) else {
                continue;
            };
            update.result.remove(at);
            let position = match &mut update.sort {
                Some(sorted) => {
                    sorted.fields.remove(&uid);
                    at as u32 + 1
                }
                None => 0,
            };
            let number = if update.uid { uid } else { seq };
            let line = update_line(
                &update.tag,
                update.uid,
                Delta::RemoveFrom,
                position,
                &[number],
            );
            session.untagged(&line);
        }
    }

    /// Take the searches out (to try them against a view that holds them).
    pub fn take(&mut self) -> Vec<Update> {
        std::mem::take(&mut self.0)
    }

    /// Put them back.
    pub fn restore(&mut self, updates: Vec<Update>) {
        self.0 = updates;
    }
}

impl Update {
    /// Tell `session` how this search's result changed, given which of the
    /// view's changed messages (`tried`, by index) now match (`matched`),
    /// and the sort fields of those new to the result (`fields_of`).
    pub fn report(
        &mut self,
        session: &mut ImapSession,
        view: &View,
        tried: &[usize],
        matched: &[usize],
        fields_of: &mut dyn FnMut(usize) -> Option<Sortable>,
    ) {
        // Whatever left the view unseen (it cannot: expunges pass through
        // `expunged`) is dropped quietly.
        let present: BTreeSet<u32> = view.messages.iter().map(|m| m.uid).collect();
        self.result.retain(|uid| present.contains(uid));
        let matched: BTreeSet<usize> = matched.iter().copied().collect();
        let had: BTreeSet<u32> = self.result.iter().copied().collect();
        let mut added = Vec::new();
        let mut removed = Vec::new();
        for &index in tried {
            let uid = view.messages[index].uid;
            match (matched.contains(&index), had.contains(&uid)) {
                (true, false) => added.push(index),
                (false, true) => removed.push(uid),
                _ => {}
            }
        }
        let number = |uid: u32| match self.uid {
            true => uid,
            false => seq_of(view, uid),
        };
        match &mut self.sort {
            None => {
                if !removed.is_empty() {
                    self.result.retain(|uid| !removed.contains(uid));
                    let numbers: Vec<u32> = removed.iter().map(|&u| number(u)).collect();
                    session.untagged(&update_line(
                        &self.tag,
                        self.uid,
                        Delta::RemoveFrom,
                        0,
                        &sorted(numbers),
                    ));
                }
                if !added.is_empty() {
                    let uids: Vec<u32> = added.iter().map(|&i| view.messages[i].uid).collect();
                    self.result.extend(&uids);
                    self.result.sort_unstable();
                    let numbers: Vec<u32> = uids.iter().map(|&u| number(u)).collect();
                    session.untagged(&update_line(
                        &self.tag,
                        self.uid,
                        Delta::AddTo,
                        0,
                        &sorted(numbers),
                    ));
                }
            }
            Some(order) => {
                // Removals from the end, so each position is the one the
                // client's list has at that point.
                let mut leaving: Vec<(usize, u32)> = self
                    .result
                    .iter()
                    .enumerate()
                    .filter(|(_, uid)| removed.contains(uid))
                    .map(|(at, &uid)| (at, uid))
                    .collect();
                leaving.sort_unstable_by_key(|&(at, _)| std::cmp::Reverse(at));
                for (at, uid) in leaving {
                    self.result.remove(at);
                    order.fields.remove(&uid);
                    let line = update_line(
                        &self.tag,
                        self.uid,
                        Delta::RemoveFrom,
                        at as u32 + 1,
                        &[number(uid)],
                    );
                    session.untagged(&line);
                }
                if added.is_empty() {
                    return;
                }
                for &index in &added {
                    if let Some(fields) = fields_of(index) {
                        order.fields.insert(view.messages[index].uid, fields);
                    }
                }
                let mut list: Vec<Sortable> = self
                    .result
                    .iter()
                    .chain(added.iter().map(|&i| &view.messages[i].uid))
                    .filter_map(|uid| {
                        let mut one = order.fields.get(uid)?.clone();
                        one.seq = seq_of(view, *uid);
                        Some(one)
                    })
                    .collect();
                sort::sort(&mut list, &order.criteria);
                let now: Vec<u32> = list
                    .iter()
                    .map(|s| view.messages[s.seq as usize - 1].uid)
                    .collect();
                // The rest kept their order; the new ones go in, lowest
                // position first.
                let joining: BTreeSet<u32> = added.iter().map(|&i| view.messages[i].uid).collect();
                for (at, uid) in now.iter().enumerate() {
                    if joining.contains(uid) {
                        let line = update_line(
                            &self.tag,
                            self.uid,
                            Delta::AddTo,
                            at as u32 + 1,
                            &[number(*uid)],
                        );
                        session.untagged(&line);
                    }
                }
                self.result = now;
            }
        }
    }
}

/// Whether a message's match of `key` can change without its modseq
/// changing: keys on sequence numbers (which expunges shift), on UID sets
/// (`*` moves with new mail) or on `\Recent`. Searches with such keys are tried whole each time.
pub(crate) fn shifts(key: &SearchKey<'_>) -> bool {
    match key {
        SearchKey::SequenceSet(_)
        | SearchKey::Uid(_)
        | SearchKey::Recent
        | SearchKey::New
        | SearchKey::Old => true,
        SearchKey::And(keys) => keys.as_ref().iter().any(shifts),
        SearchKey::Or(a, b) => shifts(a) || shifts(b),
        SearchKey::Not(inner) => shifts(inner),
        _ => false,
    }
}

/// Ascending, for an unsorted result's sets.
fn sorted(mut numbers: Vec<u32>) -> Vec<u32> {
    numbers.sort_unstable();
    numbers
}

/// The sequence number of the view's message `uid` (which it holds).
fn seq_of(view: &View, uid: u32) -> u32 {
    view.messages.partition_point(|m| m.uid < uid) as u32 + 1
}

/// What SORT compares of one message, without its sequence number.
pub(crate) fn sortable(arrival: i64, size: u64, fields: SortFields) -> Sortable {
    Sortable {
        seq: 0,
        arrival,
        size,
        fields,
    }
}
