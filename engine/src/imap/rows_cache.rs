//! The rows of recently read mailboxes, shared by a shard's IMAP sessions.
//!
//! Every session of an account hears of every change and reads its
//! selected mailbox's rows again. With many sessions on one mailbox (a
//! client on several devices, a team mailbox, imaptest's stress run) they
//! read the same rows one after another, and each read also walks past the
//! store's recent deletions (expunged rows are tombstones until RocksDB
//! compacts them): a profile of 50 sessions on one mailbox had three
//! quarters of the server's time in RocksDB's iterators.
//!
//! A mailbox's HIGHESTMODSEQ rises with every change to its rows (append,
//! flags, expunge), so (UIDVALIDITY, HIGHESTMODSEQ) names one state of
//! them: the first session to read that state keeps it here, the others
//! take it. The rows are read after the mailbox's meta, so what is kept
//! under a modseq is never older than that modseq says.

use ringpost_storage::mailbox::{self, MailboxMeta, MailboxRow};
use ringpost_storage::{Store, StoreError};
use std::collections::HashMap;
use std::rc::Rc;

/// Most mailboxes kept. With [`MAX_ROWS`], at most about 16 MB a shard
/// (a row is under 100 bytes).
const MAX_MAILBOXES: usize = 16;
/// Larger mailboxes are not kept: one copy each would be too much memory
/// (they still start their reads at the lowest UID left).
const MAX_ROWS: usize = 10_000;

/// One mailbox's rows, by UID.
pub(crate) type Rows = Rc<Vec<(u32, MailboxRow)>>;

/// Rows of mailboxes by (account, UIDVALIDITY), each with the
/// HIGHESTMODSEQ they were read at, and the lowest UID each last had: no
/// row below it can come back (UIDs are never reused), so the next read
/// starts there and skips the deletions of everything expunged below.
#[derive(Default)]
pub(crate) struct RowsCache {
    entries: HashMap<(String, u32), (u64, Rows)>,
    lowest: HashMap<(String, u32), u32>,
    /// Counted as reads from the store and reads shared (none in tests).
    metrics: Option<(
        prometheus_client::metrics::counter::Counter,
        prometheus_client::metrics::counter::Counter,
    )>,
}

impl RowsCache {
    /// A cache counting its reads: from the store, and shared.
    pub fn counted(metrics: &crate::metrics::ImapMetrics) -> RowsCache {
        RowsCache {
            metrics: Some((metrics.rows_read.clone(), metrics.rows_shared.clone())),
            ..RowsCache::default()
        }
    }

    /// The rows of `user`'s mailbox whose meta is `meta` (just read).
    pub fn rows(
        &mut self,
        store: &dyn Store,
        user: &str,
        meta: &MailboxMeta,
    ) -> Result<Rows, StoreError> {
        let key = (user.to_ascii_lowercase(), meta.uidvalidity);
        if let Some((modseq, rows)) = self.entries.get(&key) {
            if *modseq == meta.highest_modseq {
                if let Some((_, shared)) = &self.metrics {
                    shared.inc();
                }
                return Ok(rows.clone());
            }
        }
        if let Some((read, _)) = &self.metrics {
            read.inc();
        }
        let from = self.lowest.get(&key).copied().unwrap_or(0);
        let mut read = Vec::new();
        mailbox::rows_from(store, user, meta.uidvalidity, from, &mut |uid, row| {
            read.push((uid, row));
            true
        })?;
        let rows: Rows = Rc::new(read);
        if self.lowest.len() >= MAX_MAILBOXES && !self.lowest.contains_key(&key) {
            self.lowest.clear();
        }
        // An empty mailbox keeps what it had: its next row is above it.
        if let Some((first, _)) = rows.first() {
            self.lowest.insert(key.clone(), *first);
        }
        if rows.len() <= MAX_ROWS {
            if self.entries.len() >= MAX_MAILBOXES && !self.entries.contains_key(&key) {
                // Any other: a mailbox read again soon is read again once.
                if let Some(any) = self.entries.keys().find(|k| **k != key).cloned() {
                    self.entries.remove(&any);
                }
            }
            self.entries
                .insert(key, (meta.highest_modseq, rows.clone()));
        }
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringpost_storage::{Family, MemoryStore, WriteBatch};

    fn put_row(store: &MemoryStore, uid: u32) {
        let mut batch = WriteBatch::new();
        let key = mailbox::row_key("u@x.test", 7, uid);
        batch.put(Family::Mailboxes, key, MailboxRow::default().encode());
        store.write(&[batch], false).unwrap();
    }

    #[test]
    fn a_state_is_read_once_and_a_change_is_read_again() {
        let store = MemoryStore::new();
        put_row(&store, 1);
        let mut meta = MailboxMeta::default();
        meta.uidvalidity = 7;
        meta.highest_modseq = 1;
        let mut cache = RowsCache::default();
        let first = cache.rows(&store, "u@x.test", &meta).unwrap();
        let again = cache.rows(&store, "U@x.test", &meta).unwrap();
        assert!(
            Rc::ptr_eq(&first, &again),
            "the same state is not read twice"
        );
        put_row(&store, 2);
        meta.highest_modseq = 2;
        let changed = cache.rows(&store, "u@x.test", &meta).unwrap();
        assert_eq!((first.len(), changed.len()), (1, 2));
        // Row 1 expunged: the next read starts at the lowest UID left.
        let mut batch = WriteBatch::new();
        batch.delete(Family::Mailboxes, mailbox::row_key("u@x.test", 7, 1));
        store.write(&[batch], false).unwrap();
        meta.highest_modseq = 3;
        let left = cache.rows(&store, "u@x.test", &meta).unwrap();
        assert_eq!(left.iter().map(|(uid, _)| *uid).collect::<Vec<_>>(), [2]);
        assert_eq!(cache.lowest.get(&("u@x.test".into(), 7)), Some(&2));
    }
}
