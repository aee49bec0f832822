//! Which entries a shard holds in memory, and when the deferred ones are
//! due: compact, because a deep queue is mostly deferred entries.
//!
//! A deferred entry is kept as its key alone — due time, message id,
//! domain — and read back from the store when it is due (the store has it
//! whole: every deferral is committed before it is scheduled). Domains are
//! interned, so the thousands of entries for one domain share one string.
//! About a hundred bytes per deferred entry instead of the whole entry
//! (recipients, last error) and two copies of its domain.

use ringpost_storage::spool::MessageId;
use std::collections::{BTreeSet, HashSet};
use std::rc::Rc;

/// A deferred entry as the schedule keeps it: when to wake it, its message
/// and domain, and the due time its key in the store has (the same, unless
/// it waits after a failed store write: then the store still has the old).
pub(crate) type Slot = (u64, MessageId, Rc<str>, u64);

/// The entries in memory and the deferred ones' times.
#[derive(Default)]
pub(crate) struct Schedule {
    domains: HashSet<Rc<str>>,
    known: HashSet<(MessageId, Rc<str>)>,
    deferred: BTreeSet<Slot>,
}

impl Schedule {
    /// The shared copy of `domain`.
    fn intern(&mut self, domain: &str) -> Rc<str> {
        if let Some(shared) = self.domains.get(domain) {
            return shared.clone();
        }
        let shared: Rc<str> = domain.into();
        self.domains.insert(shared.clone());
        shared
    }

    /// Whether the entry of `id` at `domain` is in memory (deferred, ready
    /// or in flight).
    pub fn is_known(&self, id: MessageId, domain: &str) -> bool {
        self.domains
            .get(domain)
            .is_some_and(|d| self.known.contains(&(id, d.clone())))
    }

    /// Note the entry as in memory; false if it already was.
    pub fn insert_known(&mut self, id: MessageId, domain: &str) -> bool {
        let domain = self.intern(domain);
        self.known.insert((id, domain))
    }

    /// The entry left memory (done, or taken out).
    pub fn forget(&mut self, id: MessageId, domain: &str) {
        if let Some(d) = self.domains.get(domain).cloned() {
            self.known.remove(&(id, d));
        }
    }

    /// Wake the entry at `wake` (ms); the store has it under `stored_due`.
    pub fn defer(&mut self, wake: u64, id: MessageId, domain: &str, stored_due: u64) {
        let domain = self.intern(domain);
        self.deferred.insert((wake, id, domain, stored_due));
    }

    /// The next deferred entry whose time has come, if any.
    pub fn pop_due(&mut self, now: u64) -> Option<Slot> {
        match self.deferred.first() {
            Some((wake, ..)) if *wake <= now => self.deferred.pop_first(),
            _ => None,
        }
    }

    /// When the deferred entry due last wakes.
    pub fn latest_wake(&self) -> Option<u64> {
        self.deferred.last().map(|(wake, ..)| *wake)
    }

    /// Take the deferred entry due last out of memory (it stays in the
    /// store); its stored due time.
    pub fn evict_latest(&mut self) -> Option<u64> {
        let (_, id, domain, stored_due) = self.deferred.pop_last()?;
        self.known.remove(&(id, domain));
        Some(stored_due)
    }

    /// Take the deferred entry of `id` at `domain` out of the schedule (it
    /// stays known); its slot, if it was deferred. A scan: operators' use.
    pub fn take_deferred(&mut self, id: MessageId, domain: &str) -> Option<Slot> {
        let slot = self
            .deferred
            .iter()
            .find(|(_, i, d, _)| *i == id && &**d == domain)
            .cloned()?;
        self.deferred.remove(&slot);
        Some(slot)
    }

    /// Entries in memory.
    pub fn known_len(&self) -> usize {
        self.known.len()
    }

    /// Deferred entries in memory.
    pub fn deferred_len(&self) -> usize {
        self.deferred.len()
    }

    /// The arrival (µs) of the oldest message in memory.
    pub fn oldest_micros(&self) -> Option<u64> {
        self.known.iter().map(|(id, _)| id.unix_micros()).min()
    }

    /// Drop interned domains no entry uses any more.
    pub fn prune_domains(&mut self) {
        self.domains.retain(|d| Rc::strong_count(d) > 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64) -> MessageId {
        MessageId::new(n, 0, n)
    }

    #[test]
    fn deferred_entries_wake_in_order_and_the_latest_can_be_evicted() {
        let mut s = Schedule::default();
        for (n, wake) in [(1, 30), (2, 10), (3, 20)] {
            assert!(s.insert_known(id(n), "a.test"));
            s.defer(wake, id(n), "a.test", wake);
        }
        assert!(!s.insert_known(id(1), "a.test"), "once");
        assert_eq!(s.latest_wake(), Some(30));
        assert_eq!(s.evict_latest(), Some(30));
        assert!(!s.is_known(id(1), "a.test"));
        assert_eq!(s.pop_due(15).map(|slot| slot.1), Some(id(2)));
        assert_eq!(s.pop_due(15), None);
        let taken = s.take_deferred(id(3), "a.test").unwrap();
        assert_eq!((taken.0, taken.3), (20, 20));
        drop(taken);
        assert_eq!(s.deferred_len(), 0);
        assert_eq!(s.known_len(), 2, "taken and woken entries stay known");
        s.forget(id(2), "a.test");
        s.forget(id(3), "a.test");
        s.prune_domains();
        assert!(s.domains.is_empty());
    }

    #[test]
    fn one_domain_is_stored_once() {
        let mut s = Schedule::default();
        for n in 0..100 {
            s.insert_known(id(n), "big.test");
            s.defer(n, id(n), "big.test", n);
        }
        assert_eq!(s.domains.len(), 1);
        let shared = s.domains.get("big.test").unwrap();
        assert_eq!(Rc::strong_count(shared), 201);
    }
}
