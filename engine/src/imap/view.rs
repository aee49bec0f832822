//! The selected mailbox as one IMAP session sees it: messages in sequence
//! order, and how to bring that view up to date with the store.
//!
//! Other sessions (and deliveries) change the mailbox under us. The view
//! keeps what the client was told, so a change becomes the untagged
//! responses RFC 9051 §7.5 asks for: EXPUNGE for rows gone, FETCH FLAGS for
//! flags changed elsewhere, EXISTS for new rows. Expunges are held back
//! while a FETCH, STORE or SEARCH by sequence number runs, as the RFC
//! requires; the rows stay in the view until the next chance.

use super::convert::flags_to_imap;
use ringpost_protocols::imap::types::fetch::MessageDataItem;
use ringpost_protocols::imap::types::flag::FlagFetch;
use ringpost_protocols::imap::types::response::Data;
use ringpost_protocols::imap::types::sequence::{SeqOrUid, Sequence, SequenceSet};
use ringpost_protocols::imap::ImapSession;
use ringpost_storage::mailbox::{self, MailboxRow};
use ringpost_storage::{Store, StoreError};
use std::collections::HashMap;
use std::num::NonZeroU32;

/// One message of the view.
#[derive(Debug, Clone)]
pub(crate) struct Message {
    /// Its UID.
    pub uid: u32,
    /// Its row as last seen.
    pub row: MailboxRow,
}

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
    /// By sequence number - 1.
    pub messages: Vec<Message>,
}

impl View {
    /// Read a mailbox into a view; `None` if it does not exist.
    pub fn load(
        store: &dyn Store,
        user: &str,
        name: &str,
        read_only: bool,
    ) -> Result<Option<View>, StoreError> {
        let Some(meta) = mailbox::meta(store, user, name)? else {
            return Ok(None);
        };
        let messages = mailbox::all_rows(store, user, meta.uidvalidity)?
            .into_iter()
            .map(|(uid, row)| Message { uid, row })
            .collect();
        Ok(Some(View {
            user: user.to_owned(),
            name: mailbox::normalize_name(name).to_owned(),
            uidvalidity: meta.uidvalidity,
            uidnext: meta.uidnext,
            read_only,
            messages,
        }))
    }

    /// Catch up with the store and tell the client what changed. Returns
    /// false when the mailbox is gone or was replaced (the client must
    /// select again).
    pub fn sync(
        &mut self,
        store: &dyn Store,
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
        let mut current: HashMap<u32, MailboxRow> =
            mailbox::all_rows(store, &self.user, self.uidvalidity)?
                .into_iter()
                .collect();
        if allow_expunge {
            // From the end, so every EXPUNGE number is right when sent.
            for index in (0..self.messages.len()).rev() {
                if !current.contains_key(&self.messages[index].uid) {
                    self.messages.remove(index);
                    session.untagged(&format!("{} EXPUNGE", index + 1));
                }
            }
        }
        for (index, message) in self.messages.iter_mut().enumerate() {
            if let Some(row) = current.remove(&message.uid) {
                if row.flags != message.row.flags {
                    message.row = row;
                    send_flags(session, index + 1, message, false);
                } else {
                    message.row = row;
                }
            }
        }
        if !current.is_empty() {
            let mut new: Vec<(u32, MailboxRow)> = current.into_iter().collect();
            new.sort_unstable_by_key(|(uid, _)| *uid);
            let last = self.messages.last().map_or(0, |m| m.uid);
            self.messages.extend(
                new.into_iter()
                    .filter(|(uid, _)| *uid > last)
                    .map(|(uid, row)| Message { uid, row }),
            );
            session.untagged(&format!("{} EXISTS", self.messages.len()));
        }
        Ok(true)
    }

    /// Indices of the messages a sequence set (or UID set) names, ascending.
    pub fn select(&self, set: &SequenceSet, uid: bool) -> Vec<usize> {
        let count = self.messages.len();
        if count == 0 {
            return Vec::new();
        }
        let mut picked = vec![false; count];
        for sequence in set.0.as_ref() {
            let (low, high) = match sequence {
                Sequence::Single(one) => (*one, *one),
                Sequence::Range(a, b) => (*a, *b),
            };
            if uid {
                let max = self.messages[count - 1].uid;
                let (a, b) = (value(low, max), value(high, max));
                let (lo, hi) = (a.min(b), a.max(b));
                let start = self.messages.partition_point(|m| m.uid < lo);
                for (index, message) in self.messages.iter().enumerate().skip(start) {
                    if message.uid > hi {
                        break;
                    }
                    picked[index] = true;
                }
            } else {
                let max = count as u32;
                let (a, b) = (value(low, max), value(high, max));
                let (lo, hi) = (a.min(b), a.max(b).min(max));
                for seq in lo..=hi {
                    if seq >= 1 {
                        picked[seq as usize - 1] = true;
                    }
                }
            }
        }
        picked
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.then_some(i))
            .collect()
    }
}

/// A number of a set, `*` being `max`.
fn value(v: SeqOrUid, max: u32) -> u32 {
    match v {
        SeqOrUid::Value(n) => n.get(),
        SeqOrUid::Asterisk => max,
    }
}

/// `* n FETCH (FLAGS (...) [UID u])`.
pub(crate) fn send_flags(session: &mut ImapSession, seq: usize, message: &Message, with_uid: bool) {
    let mut items = vec![MessageDataItem::Flags(
        flags_to_imap(&message.row.flags)
            .into_iter()
            .map(FlagFetch::Flag)
            .collect(),
    )];
    if with_uid {
        if let Some(uid) = NonZeroU32::new(message.uid) {
            items.push(MessageDataItem::Uid(uid));
        }
    }
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
            messages: uids
                .iter()
                .map(|&uid| Message {
                    uid,
                    row: MailboxRow::default(),
                })
                .collect(),
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
