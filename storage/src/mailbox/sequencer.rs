//! Mailbox changes become puts and deletes, in commit order, on the commit
//! writer thread.
//!
//! The writer builds a group of requests, then writes it. Each request's
//! [`Change`]s are resolved as the request joins the group: read what they
//! need (a mailbox's UIDNEXT, a row, a reference count), decide, and record
//! the writes. Reads see, newest first: this request's own writes, the
//! writes of the requests already in the group (not on disk yet), a cache of
//! committed `mailbox_meta` values, then the store. A request whose changes
//! are refused leaves no trace in the group.
//!
//! Once the group is on disk its meta writes go into the cache; when the
//! write fails, the group is forgotten and the cache cleared, so the next
//! group reads the store again. UIDs handed out in a failed write may be
//! handed out again: nobody was told about them.

use super::{
    decode_refs, encode_refs, expunged_account_prefix, expunged_prefix, meta_key, normalize_name,
    prefix_end, row_key, rows_prefix, subscription_key, subscriptions_prefix, user_prefix, Applied,
    Change, MailboxMeta, MailboxRow, Refusal, INBOX, NEXT_UIDVALIDITY_KEY,
};
use crate::codec::{put_varint, Reader, FORMAT_V1};
use crate::spool::MessageId;
use crate::{Family, Op, Store, StoreError, WriteBatch};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{SystemTime, UNIX_EPOCH};

/// Most committed meta values kept; past it the cache starts over.
const CACHE_LIMIT: usize = 65_536;

/// Pending writes: `None` is a delete.
type Writes = BTreeMap<(Family, Vec<u8>), Option<Vec<u8>>>;

/// The writer thread's mailbox state; see the module docs.
#[derive(Default)]
pub(crate) struct Sequencer {
    /// Committed `mailbox_meta` values; `None`: known to be absent.
    cache: HashMap<Vec<u8>, Option<Vec<u8>>>,
    /// Writes of the requests in the group being built.
    group: Writes,
    /// Accounts whose mailboxes the group changes.
    users: BTreeSet<String>,
}

impl Sequencer {
    /// Resolve the changes of one request into puts and deletes appended to
    /// `batch`. On refusal nothing is recorded and the caller must leave the
    /// whole request out of the write.
    pub(crate) fn resolve(
        &mut self,
        store: &dyn Store,
        batch: &mut WriteBatch,
    ) -> Result<Vec<Applied>, StoreError> {
        let changes = batch.take_changes();
        let mut applied = Vec::with_capacity(changes.len());
        if !changes.is_empty() {
            let mut view = View {
                store,
                cache: &mut self.cache,
                group: &self.group,
                tx: Writes::new(),
            };
            for change in &changes {
                applied.push(view.apply(change)?);
            }
            let tx = view.tx;
            for ((family, key), value) in tx {
                match &value {
                    Some(value) => batch.put(family, key.clone(), value.clone()),
                    None => batch.delete(family, key.clone()),
                }
                self.group.insert((family, key), value);
            }
            self.users.extend(
                changes
                    .iter()
                    .filter_map(Change::user)
                    .map(str::to_lowercase),
            );
        }
        // The request is taken: its envelope writes join the group's view,
        // so the changes after it see them. An account deleted in the same
        // group as a message's arrival must not take a body the relay
        // still needs (its envelope is in the group, not yet in the store).
        // Only whether an envelope exists is ever asked: no copy of it.
        for op in batch.ops() {
            match op {
                Op::Put {
                    family: Family::Envelopes,
                    key,
                    ..
                } => {
                    self.group
                        .insert((Family::Envelopes, key.clone()), Some(Vec::new()));
                }
                Op::Delete {
                    family: Family::Envelopes,
                    key,
                } => {
                    self.group.insert((Family::Envelopes, key.clone()), None);
                }
                _ => {}
            }
        }
        Ok(applied)
    }

    /// The group's write is over. On success its meta values join the cache
    /// and the accounts it changed are returned (for notifications).
    pub(crate) fn finish_group(&mut self, written: bool) -> Vec<String> {
        let group = std::mem::take(&mut self.group);
        let users = std::mem::take(&mut self.users);
        if !written {
            self.cache.clear();
            return Vec::new();
        }
        for ((family, key), value) in group {
            if family == Family::MailboxMeta {
                if self.cache.len() >= CACHE_LIMIT {
                    self.cache.clear();
                }
                self.cache.insert(key, value);
            }
        }
        users.into_iter().collect()
    }
}

/// Reads and writes of one request: its own writes over the group's over
/// the cache over the store.
struct View<'a> {
    store: &'a dyn Store,
    cache: &'a mut HashMap<Vec<u8>, Option<Vec<u8>>>,
    group: &'a Writes,
    tx: Writes,
}

impl View<'_> {
    fn get(&mut self, family: Family, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let slot = (family, key.to_vec());
        if let Some(value) = self.tx.get(&slot).or_else(|| self.group.get(&slot)) {
            return Ok(value.clone());
        }
        if family != Family::MailboxMeta {
            return self.store.get(family, key);
        }
        if let Some(value) = self.cache.get(key) {
            return Ok(value.clone());
        }
        let value = self.store.get(family, key)?;
        if self.cache.len() >= CACHE_LIMIT {
            self.cache.clear();
        }
        self.cache.insert(key.to_vec(), value.clone());
        Ok(value)
    }

    fn put(&mut self, family: Family, key: Vec<u8>, value: Vec<u8>) {
        self.tx.insert((family, key), Some(value));
    }

    fn delete(&mut self, family: Family, key: Vec<u8>) {
        self.tx.insert((family, key), None);
    }

    /// Keys that start with `prefix`, as they will be once the pending
    /// writes land.
    fn keys_with_prefix(&self, family: Family, prefix: &[u8]) -> Result<Vec<Vec<u8>>, StoreError> {
        let end = prefix_end(prefix);
        let mut keys = BTreeSet::new();
        self.store
            .scan(family, prefix, end.as_deref(), &mut |key, _| {
                keys.insert(key.to_vec());
                true
            })?;
        for pending in [self.group, &self.tx] {
            let start = (family, prefix.to_vec());
            for ((f, key), value) in pending.range(start..) {
                if *f != family || !key.starts_with(prefix) {
                    break;
                }
                match value {
                    Some(_) => keys.insert(key.clone()),
                    None => keys.remove(key),
                };
            }
        }
        Ok(keys.into_iter().collect())
    }

    fn meta(&mut self, user: &str, mailbox: &str) -> Result<Option<MailboxMeta>, StoreError> {
        self.get(Family::MailboxMeta, &meta_key(user, mailbox))?
            .map(|value| super::counted(self.store, user, MailboxMeta::decode(&value)?))
            .transpose()
    }

    fn put_meta(&mut self, user: &str, mailbox: &str, meta: &MailboxMeta) {
        self.put(Family::MailboxMeta, meta_key(user, mailbox), meta.encode());
    }

    /// A subscription kept the old way, in the mailbox's meta
    /// ([`MailboxMeta::subscribed`]), becomes a subscription key.
    fn take_legacy_subscription(&mut self, user: &str, mailbox: &str) -> Result<(), StoreError> {
        if let Some(mut meta) = self.meta(user, mailbox)?.filter(|m| m.subscribed) {
            meta.subscribed = false;
            self.put_meta(user, mailbox, &meta);
            self.put(
                Family::MailboxMeta,
                subscription_key(user, mailbox),
                Vec::new(),
            );
        }
        Ok(())
    }

    /// The mailbox, which must exist and, when the caller names one, still
    /// have the UIDVALIDITY it saw.
    fn existing(
        &mut self,
        user: &str,
        mailbox: &str,
        uidvalidity: Option<u32>,
    ) -> Result<MailboxMeta, StoreError> {
        let meta = self
            .meta(user, mailbox)?
            .ok_or(StoreError::Refused(Refusal::NoSuchMailbox))?;
        match uidvalidity {
            Some(seen) if seen != meta.uidvalidity => {
                Err(StoreError::Refused(Refusal::MailboxReplaced))
            }
            _ => Ok(meta),
        }
    }

    fn apply(&mut self, change: &Change) -> Result<Applied, StoreError> {
        match change {
            Change::Append { user, mailbox, row } => self.append(user, mailbox, row),
            Change::Copy {
                user,
                mailbox,
                row,
                from_uidvalidity,
                from_uid,
            } => {
                let source = row_key(user, *from_uidvalidity, *from_uid);
                if self.get(Family::Mailboxes, &source)?.is_none() {
                    return Ok(Applied::Gone);
                }
                self.append(user, mailbox, row)
            }
            Change::SetFlags {
                user,
                mailbox,
                uidvalidity,
                uid,
                how,
                flags,
                unchanged_since,
            } => {
                let mut meta = self.existing(user, mailbox, Some(*uidvalidity))?;
                let key = row_key(user, meta.uidvalidity, *uid);
                let Some(value) = self.get(Family::Mailboxes, &key)? else {
                    return Ok(Applied::Gone);
                };
                let mut row = MailboxRow::decode(&value)?;
                if unchanged_since.is_some_and(|since| row.modseq > since) {
                    return Ok(Applied::Modified { modseq: row.modseq });
                }
                // Applied to the flags as stored now, not as the session saw
                // them: a concurrent +FLAGS from another session survives.
                let new = row.flags.changed(*how, flags);
                if row.flags == new {
                    return Ok(Applied::Flags {
                        modseq: row.modseq,
                        flags: new,
                    });
                }
                meta.highest_modseq += 1;
                row.flags = new.clone();
                row.modseq = meta.highest_modseq;
                self.put(Family::Mailboxes, key, row.encode());
                self.put_meta(user, mailbox, &meta);
                Ok(Applied::Flags {
                    modseq: meta.highest_modseq,
                    flags: new,
                })
            }
            Change::Expunge {
                user,
                mailbox,
                uidvalidity,
                uid,
                if_deleted,
            } => {
                let mut meta = self.existing(user, mailbox, Some(*uidvalidity))?;
                let key = row_key(user, meta.uidvalidity, *uid);
                let Some(value) = self.get(Family::Mailboxes, &key)? else {
                    return Ok(Applied::Gone);
                };
                let row = MailboxRow::decode(&value)?;
                if *if_deleted && !row.flags.has(super::flag::DELETED) {
                    return Ok(Applied::Modified { modseq: row.modseq });
                }
                self.delete(Family::Mailboxes, key);
                self.release_ref(&row.message)?;
                meta.messages = meta.messages.saturating_sub(1);
                meta.bytes = meta.bytes.saturating_sub(row.size);
                let records = self.expunges_recorded(user, &meta)?;
                meta.highest_modseq += 1;
                let mut record = records;
                record.extend_from_slice(&uid.to_be_bytes());
                self.put(
                    Family::MailboxMeta,
                    record,
                    meta.highest_modseq.to_be_bytes().to_vec(),
                );
                self.put_meta(user, mailbox, &meta);
                Ok(Applied::Changed {
                    modseq: meta.highest_modseq,
                })
            }
            Change::Create { user, mailbox } => {
                if self.meta(user, mailbox)?.is_some() {
                    return Err(StoreError::Refused(Refusal::MailboxExists));
                }
                self.create(user, mailbox)?;
                Ok(Applied::Done)
            }
            Change::Delete { user, mailbox } => {
                if normalize_name(mailbox) == INBOX {
                    return Err(StoreError::Refused(Refusal::InboxIsPermanent));
                }
                let meta = self.existing(user, mailbox, None)?;
                for key in
                    self.keys_with_prefix(Family::Mailboxes, &rows_prefix(user, meta.uidvalidity))?
                {
                    if let Some(value) = self.get(Family::Mailboxes, &key)? {
                        let row = MailboxRow::decode(&value)?;
                        self.release_ref(&row.message)?;
                    }
                    self.delete(Family::Mailboxes, key);
                }
                self.delete(Family::MailboxMeta, meta_key(user, mailbox));
                for key in self.keys_with_prefix(
                    Family::MailboxMeta,
                    &expunged_prefix(user, meta.uidvalidity),
                )? {
                    self.delete(Family::MailboxMeta, key);
                }
                // The name stays subscribed (RFC 9051 §6.3.7).
                if meta.subscribed {
                    self.put(
                        Family::MailboxMeta,
                        subscription_key(user, mailbox),
                        Vec::new(),
                    );
                }
                Ok(Applied::Done)
            }
            Change::Rename { user, from, to } => {
                let mut meta = self.existing(user, from, None)?;
                if self.meta(user, to)?.is_some() || normalize_name(to) == INBOX {
                    return Err(StoreError::Refused(Refusal::MailboxExists));
                }
                // A subscription moves with the mailbox, as users expect of
                // a folder they rename (Dovecot does the same).
                let from_key = subscription_key(user, from);
                if std::mem::take(&mut meta.subscribed)
                    || self.get(Family::MailboxMeta, &from_key)?.is_some()
                {
                    if normalize_name(from) != INBOX {
                        self.delete(Family::MailboxMeta, from_key);
                    }
                    self.put(Family::MailboxMeta, subscription_key(user, to), Vec::new());
                }
                if normalize_name(from) == INBOX {
                    self.move_inbox(user, to, meta)?;
                } else {
                    self.put_meta(user, to, &meta);
                    self.delete(Family::MailboxMeta, meta_key(user, from));
                }
                Ok(Applied::Done)
            }
            Change::ClaimRecent {
                user,
                mailbox,
                uidvalidity,
                up_to,
            } => {
                let mut meta = self.existing(user, mailbox, Some(*uidvalidity))?;
                let from = meta.recent_from;
                if from < *up_to {
                    meta.recent_from = *up_to;
                    self.put_meta(user, mailbox, &meta);
                }
                Ok(Applied::Recent { from })
            }
            Change::Subscribe {
                user,
                mailbox,
                subscribed,
            } => {
                self.take_legacy_subscription(user, mailbox)?;
                let key = subscription_key(user, mailbox);
                if *subscribed {
                    self.put(Family::MailboxMeta, key, Vec::new());
                } else {
                    self.delete(Family::MailboxMeta, key);
                }
                Ok(Applied::Done)
            }
            Change::DeleteAccount { user } => {
                // Every row of every mailbox, then the mailboxes themselves.
                let prefix = user_prefix(user);
                for key in self.keys_with_prefix(Family::Mailboxes, &prefix)? {
                    if let Some(value) = self.get(Family::Mailboxes, &key)? {
                        let row = MailboxRow::decode(&value)?;
                        self.release_ref(&row.message)?;
                    }
                    self.delete(Family::Mailboxes, key);
                }
                for key in self.keys_with_prefix(Family::MailboxMeta, &prefix)? {
                    self.delete(Family::MailboxMeta, key);
                }
                for prefix in [subscriptions_prefix(user), expunged_account_prefix(user)] {
                    for key in self.keys_with_prefix(Family::MailboxMeta, &prefix)? {
                        self.delete(Family::MailboxMeta, key);
                    }
                }
                Ok(Applied::Done)
            }
            Change::ReleaseSpooled { message } => {
                self.delete(Family::Envelopes, message.0.to_vec());
                if self.ref_count(message)? == 0 {
                    self.delete(Family::Blobs, message.0.to_vec());
                }
                Ok(Applied::Done)
            }
        }
    }

    fn append(
        &mut self,
        user: &str,
        mailbox: &str,
        row: &MailboxRow,
    ) -> Result<Applied, StoreError> {
        let mut meta = match self.meta(user, mailbox)? {
            Some(meta) => meta,
            None if normalize_name(mailbox) == INBOX => self.create(user, INBOX)?,
            None => return Err(StoreError::Refused(Refusal::NoSuchMailbox)),
        };
        // UIDs are non-zero u32s and UIDNEXT must stay above the last one.
        if meta.uidnext == u32::MAX {
            return Err(StoreError::Refused(Refusal::UidsExhausted));
        }
        let uid = meta.uidnext;
        meta.uidnext += 1;
        meta.messages += 1;
        meta.bytes += row.size;
        meta.highest_modseq += 1;
        let mut row = row.clone();
        row.modseq = meta.highest_modseq;
        self.put(
            Family::Mailboxes,
            row_key(user, meta.uidvalidity, uid),
            row.encode(),
        );
        self.put_meta(user, mailbox, &meta);
        let refs = self.ref_count(&row.message)? + 1;
        self.put(
            Family::MessageRefs,
            row.message.0.to_vec(),
            encode_refs(refs),
        );
        Ok(Applied::Appended {
            uidvalidity: meta.uidvalidity,
            uid,
            modseq: row.modseq,
        })
    }

    /// The prefix of `meta`'s mailbox's expunge records, making sure they
    /// are kept from now on: a mailbox from before records gets its floor
    /// (the modseq from which the record is complete) first.
    fn expunges_recorded(&mut self, user: &str, meta: &MailboxMeta) -> Result<Vec<u8>, StoreError> {
        let records = expunged_prefix(user, meta.uidvalidity);
        let mut floor = records.clone();
        floor.extend_from_slice(&0u32.to_be_bytes());
        if self.get(Family::MailboxMeta, &floor)?.is_none() {
            let since = meta.highest_modseq.to_be_bytes().to_vec();
            self.put(Family::MailboxMeta, floor, since);
        }
        Ok(records)
    }

    /// RENAME INBOX (RFC 9051 §6.3.6): its messages move to a new mailbox
    /// `to`, and INBOX stays, empty, with its UIDVALIDITY: sessions that
    /// have it selected see the messages expunged, not the mailbox gone.
    /// The rows are keyed by UIDVALIDITY, so they are written again under
    /// the new mailbox's, with their UIDs.
    fn move_inbox(
        &mut self,
        user: &str,
        to: &str,
        mut inbox: MailboxMeta,
    ) -> Result<(), StoreError> {
        let moved = MailboxMeta {
            uidvalidity: self.next_uidvalidity()?,
            recent_from: inbox.uidnext,
            ..inbox
        };
        let mut floor = expunged_prefix(user, moved.uidvalidity);
        floor.extend_from_slice(&0u32.to_be_bytes());
        self.put(Family::MailboxMeta, floor, 0u64.to_be_bytes().to_vec());
        let records = self.expunges_recorded(user, &inbox)?;
        inbox.highest_modseq += 1;
        let expunged_at = inbox.highest_modseq.to_be_bytes().to_vec();
        let prefix = rows_prefix(user, inbox.uidvalidity);
        for key in self.keys_with_prefix(Family::Mailboxes, &prefix)? {
            let Some(value) = self.get(Family::Mailboxes, &key)? else {
                continue;
            };
            let uid = u32::from_be_bytes(key[prefix.len()..].try_into().map_err(|_| {
                StoreError::Corrupt {
                    family: Family::Mailboxes.name(),
                    detail: "a mailbox row key without its UID".into(),
                }
            })?);
            self.put(
                Family::Mailboxes,
                row_key(user, moved.uidvalidity, uid),
                value,
            );
            self.delete(Family::Mailboxes, key);
            let mut record = records.clone();
            record.extend_from_slice(&uid.to_be_bytes());
            self.put(Family::MailboxMeta, record, expunged_at.clone());
        }
        self.put_meta(user, to, &moved);
        inbox.messages = 0;
        inbox.bytes = 0;
        inbox.recent_from = inbox.uidnext;
        self.put_meta(user, INBOX, &inbox);
        Ok(())
    }

    /// A new, empty mailbox with a UIDVALIDITY never used before.
    fn create(&mut self, user: &str, mailbox: &str) -> Result<MailboxMeta, StoreError> {
        let meta = MailboxMeta {
            uidvalidity: self.next_uidvalidity()?,
            uidnext: 1,
            highest_modseq: 1,
            subscribed: false,
            recent_from: 1,
            ..MailboxMeta::default()
        };
        self.put_meta(user, mailbox, &meta);
        // Every expunge of this mailbox will be recorded (see `expunged_since`).
        let mut floor = expunged_prefix(user, meta.uidvalidity);
        floor.extend_from_slice(&0u32.to_be_bytes());
        self.put(Family::MailboxMeta, floor, 0u64.to_be_bytes().to_vec());
        Ok(meta)
    }

    /// UIDVALIDITY values only grow. They start from the clock (unix
    /// seconds), so a store wiped and started again does not hand a client
    /// the UIDVALIDITY of a mailbox it had cached.
    fn next_uidvalidity(&mut self) -> Result<u32, StoreError> {
        let stored = match self.get(Family::MailboxMeta, NEXT_UIDVALIDITY_KEY)? {
            None => 0,
            Some(value) => {
                let mut r = Reader::new(Family::MailboxMeta, &value);
                r.version()?;
                let next = r.varint()?;
                r.finish()?;
                u32::try_from(next).map_err(|_| r.corrupt("next UIDVALIDITY exceeds u32"))?
            }
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX));
        let uidvalidity = stored.max(now).max(1);
        if uidvalidity == u32::MAX {
            return Err(StoreError::Refused(Refusal::UidsExhausted));
        }
        let mut value = vec![FORMAT_V1];
        put_varint(&mut value, u64::from(uidvalidity) + 1);
        self.put(Family::MailboxMeta, NEXT_UIDVALIDITY_KEY.to_vec(), value);
        Ok(uidvalidity)
    }

    fn ref_count(&mut self, message: &MessageId) -> Result<u64, StoreError> {
        match self.get(Family::MessageRefs, &message.0)? {
            None => Ok(0),
            Some(value) => decode_refs(&value),
        }
    }

    /// One row less points at `message`; the last one out deletes the body
    /// unless the relay still holds it (its envelope exists).
    fn release_ref(&mut self, message: &MessageId) -> Result<(), StoreError> {
        let left = self.ref_count(message)?.saturating_sub(1);
        if left > 0 {
            self.put(Family::MessageRefs, message.0.to_vec(), encode_refs(left));
            return Ok(());
        }
        self.delete(Family::MessageRefs, message.0.to_vec());
        if self.get(Family::Envelopes, &message.0)?.is_none() {
            self.delete(Family::Blobs, message.0.to_vec());
        }
        Ok(())
    }
}
