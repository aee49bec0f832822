//! The selected mailbox as one IMAP session sees it: messages in sequence
//! order, and how to bring that view up to date with the store.
//!
//! Other sessions (and deliveries) change the mailbox under us. The view
//! keeps what the client was told, so a change becomes the untagged
//! responses RFC 9051 §7.5 asks for: EXPUNGE for rows gone, FETCH FLAGS for
//! flags changed elsewhere, EXISTS for new rows. Expunges are held back
//! while a FETCH, STORE or SEARCH by sequence number runs, as the RFC
//! requires; the rows stay in the view until the next chance.
//!
//! The view also keeps what only this session knows: which messages are
//! `\Recent` to it (IMAP4rev1 sessions; claimed through the commit writer
//! so only one session gets each) and which keywords the client has been
//! told of in FLAGS, so a new keyword is announced before it is used.

use super::convert::flags_to_imap;
use super::rows_cache::RowsCache;
use ringpost_protocols::imap::esearch::sequence_set;
use ringpost_protocols::imap::types::fetch::MessageDataItem;
use ringpost_protocols::imap::types::flag::FlagFetch;
use ringpost_protocols::imap::types::response::Data;
use ringpost_protocols::imap::types::sequence::{SeqOrUid, Sequence, SequenceSet};
use ringpost_protocols::imap::ImapSession;
use ringpost_storage::mailbox::{self, Flags, MailboxMeta, MailboxRow};
use ringpost_storage::{Store, StoreError};
use std::cell::RefCell;
use std::collections::HashMap;
use std::num::{NonZeroU32, NonZeroU64};

/// One message of the view.
#[derive(Debug, Clone)]
pub(crate) struct Message {
    /// Its UID.
    pub uid: u32,
    /// Its row as last seen.
    pub row: MailboxRow,
    /// `\Recent` in this session.
    pub recent: bool,
}

impl Message {
    /// Its flags as FETCH shows them, with `\Seen` added when the FETCH
    /// itself sets it.
    pub fn fetch_flags(&self, set_seen: bool) -> Vec<FlagFetch<'static>> {
        let mut flags = flags_to_imap(&self.row.flags);
        if set_seen && !self.row.flags.has(mailbox::flag::SEEN) {
            flags.insert(0, ringpost_protocols::imap::types::flag::Flag::Seen);
        }
        let mut out: Vec<FlagFetch<'static>> = flags.into_iter().map(FlagFetch::Flag).collect();
        if self.recent {
            out.push(FlagFetch::Recent);
        }
        out
    }
}

impl Message {
    /// `MODSEQ (n)` (RFC 7162 §3.1.4).
    pub fn modseq_item(&self) -> MessageDataItem<'static> {
        MessageDataItem::ModSeq(NonZeroU64::new(self.row.modseq).unwrap_or(NonZeroU64::MIN))
    }
}

/// The system flags, as FLAGS and PERMANENTFLAGS list them.
const SYSTEM_FLAGS: &str = "\\Answered \\Flagged \\Deleted \\Seen \\Draft";

/// The selected mailbox.
pub(crate) struct View {
    /// Account.
    pub user: String,
    /// Mailbox name.
    pub name: String,
    /// UIDVALIDITY when selected.
    pub uidvalidity: u32,
    /// UIDNEXT as last read.
    pub uidnext: u32,
    /// EXAMINE: no flag changes, no expunges.
    pub read_only: bool,
    /// HIGHESTMODSEQ as last read (RFC 7162).
    pub highest_modseq: u64,
    /// By sequence number - 1.
    pub messages: Vec<Message>,
    /// Messages below this UID have been claimed for `\Recent` (by this
    /// session or another); see [`View::mark_recent`].
    pub recent_to: u32,
    /// The keywords the client has been told of in FLAGS.
    keywords: Vec<String>,
    /// Show `\Recent` (an IMAP4rev1 session).
    show_recent: bool,
    /// The searches kept up to date here (CONTEXT=SEARCH, RFC 5267).
    pub updates: super::context::Updates,
}

impl View {
    /// Read a mailbox into a view; `None` if it does not exist.
    pub fn load(
        store: &dyn Store,
        cache: &RefCell<RowsCache>,
        user: &str,
        name: &str,
        read_only: bool,
        show_recent: bool,
    ) -> Result<Option<View>, StoreError> {
        let Some(meta) = mailbox::meta(store, user, name)? else {
            return Ok(None);
        };
        let mut view = View {
            user: user.to_owned(),
            name: mailbox::normalize_name(name).to_owned(),
            uidvalidity: meta.uidvalidity,
            uidnext: meta.uidnext,
            read_only,
            highest_modseq: meta.highest_modseq,
            messages: Vec::new(),
            // Nothing to claim when every message has been seen already:
            // a SELECT then costs no commit.
            recent_to: if meta.recent_from >= meta.uidnext {
                meta.uidnext
            } else {
                0
            },
            keywords: Vec::new(),
            show_recent,
            updates: Default::default(),
        };
        let rows = cache.borrow_mut().rows(store, user, &meta)?;
        for (uid, row) in rows.iter().cloned() {
            view.learn(&row.flags);
            let recent = view.seen_as_recent(&meta, uid);
            view.messages.push(Message { uid, row, recent });
        }
        Ok(Some(view))
    }

    /// A message a read-only session finds: `\Recent` if no read-write
    /// session has claimed it (EXAMINE shows `\Recent` but takes nothing).
    /// A read-write session's messages become recent by [`View::mark_recent`].
    fn seen_as_recent(&self, meta: &MailboxMeta, uid: u32) -> bool {
        self.show_recent && self.read_only && uid >= meta.recent_from
    }

    /// This session claimed `from..self.uidnext` (see
    /// `Change::ClaimRecent`): those of its messages are `\Recent`.
    /// Returns whether any became so.
    pub fn mark_recent(&mut self, from: u32) -> bool {
        let to = self.uidnext;
        self.recent_to = to;
        let mut marked = false;
        let start = self.messages.partition_point(|m| m.uid < from);
        for message in &mut self.messages[start..] {
            if message.uid >= to {
                break;
            }
            marked |= !message.recent;
            message.recent = true;
        }
        marked
    }

    /// Whether this session should claim `\Recent` messages now: it shows
    /// them, may take them, and has messages it has not claimed yet.
    pub fn wants_recent(&self) -> bool {
        self.show_recent && !self.read_only && self.recent_to < self.uidnext
    }

    /// How many messages are `\Recent` in this session.
    pub fn recent(&self) -> usize {
        self.messages.iter().filter(|m| m.recent).count()
    }

    /// `* n RECENT`, for IMAP4rev1 sessions.
    pub fn send_recent(&self, session: &mut ImapSession) {
        if self.show_recent {
            session.untagged(&format!("{} RECENT", self.recent()));
        }
    }

    /// Note the keywords of `flags`; true if one is new to the client.
    pub fn learn(&mut self, flags: &Flags) -> bool {
        let mut new = false;
        for keyword in &flags.keywords {
            if !self
                .keywords
                .iter()
                .any(|known| known.eq_ignore_ascii_case(keyword))
            {
                self.keywords.push(keyword.clone());
                new = true;
            }
        }
        new
    }

    /// FLAGS and PERMANENTFLAGS with every keyword the mailbox uses (RFC
    /// 9051 §7.3.5: a client must be told of a keyword before it sees it).
    pub fn send_flags_list(&self, session: &mut ImapSession) {
        let mut keywords = String::new();
        for keyword in &self.keywords {
            keywords.push(' ');
            keywords.push_str(keyword);
        }
        session.untagged(&format!("FLAGS ({SYSTEM_FLAGS}{keywords})"));
        if self.read_only {
            session.untagged("OK [PERMANENTFLAGS ()] read-only");
        } else {
            session.untagged(&format!(
                "OK [PERMANENTFLAGS ({SYSTEM_FLAGS}{keywords} \\*)] flags and keywords"
            ));
        }
    }

    /// Learn the flags of a message about to be shown, announcing new
    /// keywords first.
    pub fn announce(&mut self, flags: &Flags, session: &mut ImapSession) {
        if self.learn(flags) {
            self.send_flags_list(session);
        }
    }

    /// Catch up with the store and tell the client what changed. Returns
    /// false when the mailbox is gone or was replaced (the client must
    /// select again).
    pub fn sync(
        &mut self,
        store: &dyn Store,
        cache: &RefCell<RowsCache>,
        session: &mut ImapSession,
        allow_expunge: bool,
    ) -> Result<bool, StoreError> {
        let Some(meta) = mailbox::meta(store, &self.user, &self.name)? else {
            return Ok(false);
        };
        if meta.uidvalidity != self.uidvalidity {
            return Ok(false);
        }
        self.uidnext = meta.uidnext;
        self.highest_modseq = meta.highest_modseq;
        let mut current: HashMap<u32, MailboxRow> = cache
            .borrow_mut()
            .rows(store, &self.user, &meta)?
            .iter()
            .cloned()
            .collect();
        if allow_expunge {
            // From the end, so every EXPUNGE number is right when sent. A
            // QRESYNC session is told by UID, in one VANISHED (RFC 7162 §3.2.10).
            let mut vanished = Vec::new();
            for index in (0..self.messages.len()).rev() {
                if !current.contains_key(&self.messages[index].uid) {
                    let gone = self.messages.remove(index);
                    // Out of UPDATE results first, under its number.
                    self.updates.expunged(session, index as u32 + 1, gone.uid);
                    if session.is_qresync() {
                        vanished.push(gone.uid);
                    } else {
                        session.untagged(&format!("{} EXPUNGE", index + 1));
                    }
                }
            }
            if !vanished.is_empty() {
                vanished.reverse();
                session.untagged(&format!("VANISHED {}", sequence_set(&vanished)));
            }
        }
        for index in 0..self.messages.len() {
            let Some(row) = current.remove(&self.messages[index].uid) else {
                continue;
            };
            let changed = row.flags != self.messages[index].row.flags;
            if changed {
                self.announce(&row.flags, session);
            }
            self.messages[index].row = row;
            if changed {
                send_flags(session, index + 1, &self.messages[index], false);
            }
        }
        if !current.is_empty() {
            let mut new: Vec<(u32, MailboxRow)> = current.into_iter().collect();
            new.sort_unstable_by_key(|(uid, _)| *uid);
            let last = self.messages.last().map_or(0, |m| m.uid);
            let mut announce = false;
            for (uid, row) in new.into_iter().filter(|(uid, _)| *uid > last) {
                announce |= self.learn(&row.flags);
                let recent = self.seen_as_recent(&meta, uid);
                self.messages.push(Message { uid, row, recent });
            }
            if announce {
                self.send_flags_list(session);
            }
            session.untagged(&format!("{} EXISTS", self.messages.len()));
        }
        Ok(true)
    }

    /// Whether a sequence set names a number past the last message:
    /// RFC 9051 §9 asks for BAD then. Anything with `*` is let through,
    /// in an empty mailbox too: clients poll with `N:*`, and scripts clean
    /// a folder with `STORE 1:* +FLAGS (\Deleted)` whether or not it holds
    /// anything. UID sets may name UIDs that are gone or never were, and
    /// are not asked about.
    pub fn beyond_the_end(&self, set: &SequenceSet) -> bool {
        let count = self.messages.len() as u32;
        let past = |v: &SeqOrUid| matches!(v, SeqOrUid::Value(n) if n.get() > count);
        set.0.as_ref().iter().any(|sequence| match sequence {
            Sequence::Single(one) => past(one),
            Sequence::Range(a, b) if [a, b].contains(&&SeqOrUid::Asterisk) => false,
            Sequence::Range(a, b) => past(a) || past(b),
        })
    }

    /// Indices of the messages a sequence set (or UID set) names, ascending.
    /// Each range becomes a span of indices (a binary search for UIDs);
    /// the spans are merged before any message is touched, so a set of
    /// many overlapping ranges costs its length plus the mailbox's, not
    /// their product.
    pub fn select(&self, set: &SequenceSet, uid: bool) -> Vec<usize> {
        let count = self.messages.len();
        if count == 0 {
            return Vec::new();
        }
        let mut spans: Vec<(usize, usize)> = Vec::with_capacity(set.0.as_ref().len());
        for sequence in set.0.as_ref() {
            let (low, high) = match sequence {
                Sequence::Single(one) => (*one, *one),
                Sequence::Range(a, b) => (*a, *b),
            };
            let span = if uid {
                let max = self.messages[count - 1].uid;
                let (a, b) = (value(low, max), value(high, max));
                let (lo, hi) = (a.min(b), a.max(b));
                (
                    self.messages.partition_point(|m| m.uid < lo),
                    self.messages.partition_point(|m| m.uid <= hi),
                )
            } else {
                let max = count as u32;
                let (a, b) = (value(low, max), value(high, max));
                let (lo, hi) = (a.min(b).max(1), a.max(b).min(max));
                (lo as usize - 1, hi as usize)
            };
            if span.0 < span.1 {
                spans.push(span);
            }
        }
        spans.sort_unstable();
        let mut picked = Vec::new();
        let mut next = 0;
        for (start, end) in spans {
            for index in start.max(next)..end {
                picked.push(index);
            }
            next = next.max(end);
        }
        picked
    }
}

impl View {
    /// The UIDs below UIDNEXT that a UID set names and the mailbox no
    /// longer holds, as inclusive ranges: what `VANISHED (EARLIER)` reports
    /// (RFC 7162 §3.2.5.1, §3.2.6). Expunges leave no trace in the store, so
    /// this also names UIDs that were never used, which the RFC allows; a
    /// client removes what it does not have. UIDs below `from` are left out.
    pub fn vanished(&self, known: &SequenceSet, from: u32) -> Vec<(u32, u32)> {
        let top = self.uidnext.saturating_sub(1);
        let mut ranges: Vec<(u32, u32)> = known
            .0
            .as_ref()
            .iter()
            .map(|sequence| {
                let (a, b) = match sequence {
                    Sequence::Single(one) => (value(*one, top), value(*one, top)),
                    Sequence::Range(a, b) => (value(*a, top), value(*b, top)),
                };
                (a.min(b).max(from), a.max(b).min(top))
            })
            .filter(|(lo, hi)| lo <= hi)
            .collect();
        ranges.sort_unstable();
        let mut gone = Vec::new();
        let mut next = 0u32; // the lowest UID not yet looked at
        for (lo, hi) in ranges {
            let mut at = lo.max(next);
            if at > hi {
                continue;
            }
            let mut index = self.messages.partition_point(|m| m.uid < at);
            while at <= hi {
                let present = self.messages.get(index).map(|m| m.uid);
                match present {
                    Some(uid) if uid == at => {
                        index += 1;
                        at += 1;
                    }
                    Some(uid) if uid <= hi => {
                        push_range(&mut gone, at, uid - 1);
                        at = uid;
                    }
                    _ => {
                        push_range(&mut gone, at, hi);
                        at = hi + 1;
                    }
                }
            }
            next = hi.saturating_add(1);
        }
        gone
    }

    /// What `VANISHED (EARLIER)` reports to a client that knew the mailbox
    /// at `modseq`: the UIDs of `known` (from `from` on) expunged since, as
    /// the store recorded them; where the record does not reach back that
    /// far, every UID of `known` the mailbox lacks ([`View::vanished`]).
    pub fn vanished_since(
        &self,
        store: &dyn Store,
        known: &SequenceSet,
        from: u32,
        modseq: u64,
    ) -> Result<Vec<(u32, u32)>, StoreError> {
        let Some(expunged) = mailbox::expunged_since(store, &self.user, self.uidvalidity, modseq)?
        else {
            return Ok(self.vanished(known, from));
        };
        let top = self.uidnext.saturating_sub(1);
        let mut gone = Vec::new();
        for uid in expunged {
            if uid >= from && contains(known, uid, top) {
                push_range(&mut gone, uid, uid);
            }
        }
        Ok(gone)
    }

    /// The lowest UID whose expunge the client may not know of, from the
    /// message sequence match data of SELECT (QRESYNC ...) (RFC 7162
    /// §3.2.5.2): where the client's sequence number still holds its UID,
    /// no message below that UID has gone since.
    pub fn unchanged_below(&self, sequences: &SequenceSet, uids: &SequenceSet) -> u32 {
        let numbers = |set: &SequenceSet| -> Vec<u32> {
            let mut out = Vec::new();
            for sequence in set.0.as_ref() {
                let (a, b) = match sequence {
                    Sequence::Single(one) => (value(*one, 0), value(*one, 0)),
                    Sequence::Range(a, b) => (value(*a, 0), value(*b, 0)),
                };
                // The match data is a sample; a range too large to be one
                // is not used.
                if a.abs_diff(b) > 10_000 || out.len() > 10_000 {
                    return Vec::new();
                }
                out.extend(a.min(b)..=a.max(b));
            }
            out
        };
        let mut from = 0;
        for (seq, uid) in numbers(sequences).into_iter().zip(numbers(uids)) {
            match self.messages.get((seq as usize).wrapping_sub(1)) {
                Some(message) if message.uid == uid => from = uid + 1,
                _ => break,
            }
        }
        from
    }
}

/// Whether a UID set names `uid`, `*` being `top`.
fn contains(set: &SequenceSet, uid: u32, top: u32) -> bool {
    set.0.as_ref().iter().any(|sequence| {
        let (a, b) = match sequence {
            Sequence::Single(one) => (value(*one, top), value(*one, top)),
            Sequence::Range(a, b) => (value(*a, top), value(*b, top)),
        };
        (a.min(b)..=a.max(b)).contains(&uid)
    })
}

/// Add `lo..=hi` to ascending ranges, joining it to the last one if they touch.
fn push_range(ranges: &mut Vec<(u32, u32)>, lo: u32, hi: u32) {
    match ranges.last_mut() {
        Some(last) if last.1.checked_add(1) == Some(lo) => last.1 = hi,
        _ => ranges.push((lo, hi)),
    }
}

/// Inclusive ranges as an IMAP set: `1:3,5`.
pub(crate) fn ranges_text(ranges: &[(u32, u32)]) -> String {
    let parts: Vec<String> = ranges
        .iter()
        .map(|&(lo, hi)| {
            if lo == hi {
                lo.to_string()
            } else {
                format!("{lo}:{hi}")
            }
        })
        .collect();
    parts.join(",")
}

/// A number of a set, `*` being `max`.
fn value(v: SeqOrUid, max: u32) -> u32 {
    match v {
        SeqOrUid::Value(n) => n.get(),
        SeqOrUid::Asterisk => max,
    }
}

/// `* n FETCH (FLAGS (...) [UID u])`.
/// A QRESYNC session gets the UID in every FETCH (RFC 7162 §3.2.4).
pub(crate) fn send_flags(session: &mut ImapSession, seq: usize, message: &Message, with_uid: bool) {
    let mut items = vec![MessageDataItem::Flags(message.fetch_flags(false))];
    if with_uid || session.is_qresync() {
        if let Some(uid) = NonZeroU32::new(message.uid) {
            items.push(MessageDataItem::Uid(uid));
        }
    }
    if session.is_condstore() {
        items.push(message.modseq_item());
    }
    if let Ok(data) = Data::fetch(seq as u32, items) {
        session.data(data);
    }
}

/// A CONDSTORE-enabling command came: turn CONDSTORE on, and tell the
/// client the selected mailbox's HIGHESTMODSEQ if it was off (RFC 7162
/// §3.1.1).
pub(crate) fn condstore_on(session: &mut ImapSession, view: Option<&View>) {
    if session.enable_condstore() {
        if let Some(view) = view {
            session.untagged(&format!(
                "OK [HIGHESTMODSEQ {}] highest modseq",
                view.highest_modseq.max(1)
            ));
        }
    }
}

/// `* n FETCH ([UID u] MODSEQ (m))`: a flag change the client asked to
/// hear nothing of but its modseq (STORE .SILENT under CONDSTORE).
pub(crate) fn send_modseq(
    session: &mut ImapSession,
    seq: usize,
    message: &Message,
    with_uid: bool,
) {
    let mut items = Vec::new();
    if with_uid || session.is_qresync() {
        if let Some(uid) = NonZeroU32::new(message.uid) {
            items.push(MessageDataItem::Uid(uid));
        }
    }
    items.push(message.modseq_item());
    if let Ok(data) = Data::fetch(seq as u32, items) {
        session.data(data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(uids: &[u32]) -> View {
        View {
            user: "a@x.test".into(),
            name: "INBOX".into(),
            uidvalidity: 7,
            uidnext: uids.last().map_or(1, |u| u + 1),
            read_only: false,
            highest_modseq: 1,
            messages: uids
                .iter()
                .map(|&uid| Message {
                    uid,
                    row: MailboxRow::default(),
                    recent: false,
                })
                .collect(),
            recent_to: 0,
            keywords: Vec::new(),
            show_recent: true,
            updates: Default::default(),
        }
    }

    fn set(text: &str) -> SequenceSet {
        SequenceSet::try_from(text).unwrap()
    }

    #[test]
    fn sequence_sets_pick_messages() {
        let v = view(&[3, 5, 9, 10, 20]);
        assert_eq!(v.select(&set("1:3"), false), [0, 1, 2]);
        assert_eq!(v.select(&set("4:*"), false), [3, 4]);
        assert_eq!(v.select(&set("*:4"), false), [3, 4]);
        assert_eq!(
            v.select(&set("2,2,5,9"), false),
            [1, 4],
            "duplicates once, 9 is past the end"
        );
        assert_eq!(v.select(&set("*"), false), [4]);
        // UIDs: ranges between and beyond the ones held, `*` the last.
        assert_eq!(v.select(&set("4:9,20"), true), [1, 2, 4]);
        assert_eq!(v.select(&set("9999:*"), true), [4]);
        assert_eq!(v.select(&set("6:8"), true), Vec::<usize>::new());
        assert_eq!(v.select(&set("10:3,5"), true), [0, 1, 2, 3]);
        // Many overlapping ranges: each message once, in order.
        let many = vec!["1:*"; 10_000].join(",");
        assert_eq!(v.select(&set(&many), true), [0, 1, 2, 3, 4]);
        assert_eq!(v.select(&set("5,1,3:2"), false), [0, 1, 2, 4]);
    }

    #[test]
    fn vanished_uids_are_the_known_ones_gone() {
        let mut v = view(&[3, 5, 9, 10, 20]);
        v.uidnext = 25;
        assert_eq!(
            ranges_text(&v.vanished(&set("1:*"), 0)),
            "1:2,4,6:8,11:19,21:24"
        );
        assert_eq!(ranges_text(&v.vanished(&set("5,9:12,30"), 0)), "11:12");
        assert_eq!(ranges_text(&v.vanished(&set("8:4,1:2,2"), 0)), "1:2,4,6:8");
        assert_eq!(ranges_text(&v.vanished(&set("1:*"), 10)), "11:19,21:24");
        assert!(v.vanished(&set("3,5"), 0).is_empty());
        // Match data: seq 2 is still UID 5, seq 3 no longer UID 8.
        assert_eq!(v.unchanged_below(&set("1:3"), &set("3,5,8")), 6);
        assert_eq!(v.unchanged_below(&set("1"), &set("2")), 0);
    }

    #[test]
    fn uid_sets_pick_messages() {
        let v = view(&[3, 5, 9, 10, 20]);
        assert_eq!(v.select(&set("5:10"), true), [1, 2, 3]);
        assert_eq!(v.select(&set("10:5"), true), [1, 2, 3]);
        assert_eq!(v.select(&set("4,6:8"), true), Vec::<usize>::new());
        // n:* always includes the highest UID, even above it (RFC 9051 §6.4.8).
        assert_eq!(v.select(&set("100:*"), true), [4]);
        assert_eq!(v.select(&set("1:*"), true), [0, 1, 2, 3, 4]);
        assert!(view(&[]).select(&set("1:*"), true).is_empty());
    }
}
