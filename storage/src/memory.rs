//! The in-memory engine.
//!
//! One `BTreeMap` per [`Family`], all behind a single lock so that a write of
//! several batches is atomic across families, exactly like a RocksDB
//! `WriteBatch`. Nothing survives the process: this engine exists to prove the
//! [`Store`] seam in every test run and to take the disk out of benchmarks.

use crate::{Family, Op, Store, StoreError, WriteBatch};
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

/// One ordered key space.
type Tree = BTreeMap<Vec<u8>, Vec<u8>>;

/// How many entries [`MemoryStore::scan`] copies out per lock acquisition.
///
/// Scans visit entries without holding the lock, so a visitor may read or
/// write the store (as it could with RocksDB) without deadlocking; copying in
/// chunks keeps each lock hold short.
const SCAN_CHUNK: usize = 256;

/// Store kept in memory: for tests and benchmarks.
///
/// Writes are atomic (one lock over every family); `sync` is ignored because
/// there is no disk. Scans see entries in chunks, so unlike a RocksDB iterator
/// a long scan is not one consistent snapshot when writers run beside it.
#[derive(Default)]
pub struct MemoryStore {
    /// Indexed by [`slot`]; one lock so that multi-family batches are atomic.
    families: RwLock<[Tree; Family::ALL.len()]>,
}

/// Position of `family` in the `families` array.
fn slot(family: Family) -> usize {
    match family {
        Family::Blobs => 0,
        Family::Envelopes => 1,
        Family::Queue => 2,
        Family::Mailboxes => 3,
        Family::MailboxMeta => 4,
        Family::Users => 5,
        Family::MessageRefs => 6,
        Family::Suppressions => 7,
        Family::Events => 8,
        Family::State => 9,
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The trees for reading. A panic while holding the lock cannot leave a
    /// half-applied batch (see `write`), so a poisoned lock is still usable.
    fn read(&self) -> RwLockReadGuard<'_, [Tree; Family::ALL.len()]> {
        self.families
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write_lock(&self) -> RwLockWriteGuard<'_, [Tree; Family::ALL.len()]> {
        self.families
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Store for MemoryStore {
    fn write(&self, batches: &[WriteBatch], _sync: bool) -> Result<(), StoreError> {
        crate::unresolved_changes(batches)?;
        let mut trees = self.write_lock();
        // Applying ops cannot fail or panic (short of allocation failure), so
        // every batch lands completely once we hold the lock.
        for op in batches.iter().flat_map(WriteBatch::ops) {
            match op {
                Op::Put { family, key, value } => {
                    trees[slot(*family)].insert(key.clone(), value.clone());
                }
                Op::Delete { family, key } => {
                    trees[slot(*family)].remove(key);
                }
            }
        }
        Ok(())
    }

    fn get(&self, family: Family, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.read()[slot(family)].get(key).cloned())
    }

    fn get_in_memory(
        &self,
        family: Family,
        key: &[u8],
    ) -> Result<Option<Option<Vec<u8>>>, StoreError> {
        self.get(family, key).map(Some)
    }

    fn scan(
        &self,
        family: Family,
        start: &[u8],
        end: Option<&[u8]>,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StoreError> {
        let upper = match end {
            Some(end) if end <= start => return Ok(()),
            Some(end) => Bound::Excluded(end),
            None => Bound::Unbounded,
        };
        let mut lower: Bound<Vec<u8>> = Bound::Included(start.to_vec());
        loop {
            let chunk: Vec<(Vec<u8>, Vec<u8>)> = {
                let trees = self.read();
                let range = (lower.as_ref().map(Vec::as_slice), upper);
                trees[slot(family)]
                    .range::<[u8], _>(range)
                    .take(SCAN_CHUNK)
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            };
            for (key, value) in &chunk {
                if !visit(key, value) {
                    return Ok(());
                }
            }
            if chunk.len() < SCAN_CHUNK {
                return Ok(());
            }
            match chunk.into_iter().last() {
                Some((last, _)) => lower = Bound::Excluded(last),
                None => return Ok(()),
            }
        }
    }
}
