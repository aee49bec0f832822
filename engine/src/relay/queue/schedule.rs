//! Which entries a shard holds in memory, and when the deferred ones are
//! due: compact, because a deep queue is mostly deferred entries.
//!
//! A deferred entry is kept as its key alone — message id, domain, wake
//! time — and read back from the store when it is due (the store has it
//! whole: every deferral is committed before it is scheduled). Domains are
//! interned as small numbers, so the thousands of entries for one domain
//! share one string and each entry holds four bytes of it.
//!
//! Deferred entries wait in one bucket per second of their wake time (a
//! `Vec` each, in a B-tree by second): deferrals mostly arrive in the
//! order they wake, which leaves a B-tree of single entries with half-full
//! nodes; buckets keep the entries dense. Within a second, order does not
//! matter. About 24 bytes per deferred entry and 20 per known one, plus
//! their containers' slack.

use ringpost_storage::spool::MessageId;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::rc::Rc;

/// A deferred entry as the schedule gives it back: when it woke (ms), its
/// message and domain, and the due time its key in the store has (the
/// same, unless it waits after a failed store write: then the store still
/// has the old).
pub type Slot = (u64, MessageId, Rc<str>, u64);

/// A domain, as the schedule numbers it.
type DomainId = u32;

/// An entry: its message and its domain.
type Key = (MessageId, DomainId);

/// A deferred entry in its second's bucket.
#[derive(Clone, Copy)]
struct Waiting {
    id: MessageId,
    domain: DomainId,
    /// The millisecond within the bucket's second.
    ms: u16,
}

/// The entries in memory and the deferred ones' times.
#[derive(Default)]
pub struct Schedule {
    domains: Domains,
    known: HashSet<Key>,
    /// Deferred entries by the second they wake.
    deferred: BTreeMap<u64, Vec<Waiting>>,
    deferred_len: usize,
    /// Stored due times that differ from the wake time.
    stored: HashMap<Key, u64>,
}

/// Interned domain names, with how many entries (known or deferred) use
/// each, so unused ones can be dropped and their numbers reused.
#[derive(Default)]
struct Domains {
    ids: HashMap<Rc<str>, DomainId>,
    names: Vec<Option<(Rc<str>, usize)>>,
    free: Vec<DomainId>,
}

impl Domains {
    fn find(&self, domain: &str) -> Option<DomainId> {
        self.ids.get(domain).copied()
    }

    /// The number of `domain`, counting one more use.
    fn take(&mut self, domain: &str) -> DomainId {
        let id = match self.ids.get(domain) {
            Some(&id) => id,
            None => {
                let name: Rc<str> = domain.into();
                let id = match self.free.pop() {
                    Some(id) => id,
                    None => {
                        self.names.push(None);
                        DomainId::try_from(self.names.len() - 1).expect("fewer than 2^32 domains")
                    }
                };
                self.names[id as usize] = Some((name.clone(), 0));
                self.ids.insert(name, id);
                id
            }
        };
        if let Some((_, uses)) = &mut self.names[id as usize] {
            *uses += 1;
        }
        id
    }

    /// One use of `id` fewer.
    fn put_back(&mut self, id: DomainId) {
        if let Some((_, uses)) = self.names.get_mut(id as usize).and_then(Option::as_mut) {
            *uses = uses.saturating_sub(1);
        }
    }

    fn name(&self, id: DomainId) -> Rc<str> {
        match self.names.get(id as usize).and_then(Option::as_ref) {
            Some((name, _)) => name.clone(),
            None => Rc::from(""),
        }
    }

    /// Drop the domains nothing uses.
    fn prune(&mut self) {
        for (id, slot) in self.names.iter_mut().enumerate() {
            if let Some((name, 0)) = slot {
                self.ids.remove(&**name);
                *slot = None;
                self.free.push(id as DomainId);
            }
        }
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

impl Schedule {
    /// Whether the entry of `id` at `domain` is in memory (deferred, ready
    /// or in flight).
    pub fn is_known(&self, id: MessageId, domain: &str) -> bool {
        self.domains
            .find(domain)
            .is_some_and(|d| self.known.contains(&(id, d)))
    }

    /// Note the entry as in memory; false if it already was.
    pub fn insert_known(&mut self, id: MessageId, domain: &str) -> bool {
        if self.is_known(id, domain) {
            return false;
        }
        let domain = self.domains.take(domain);
        self.known.insert((id, domain))
    }

    /// The entry left memory (done, or taken out).
    pub fn forget(&mut self, id: MessageId, domain: &str) {
        if let Some(d) = self.domains.find(domain) {
            if self.known.remove(&(id, d)) {
                self.domains.put_back(d);
            }
        }
    }

    /// Wake the entry at `wake` (ms); the store has it under `stored_due`.
    pub fn defer(&mut self, wake: u64, id: MessageId, domain: &str, stored_due: u64) {
        let domain = self.domains.take(domain);
        if stored_due != wake {
            self.stored.insert((id, domain), stored_due);
        }
        let waiting = Waiting {
            id,
            domain,
            ms: (wake % 1000) as u16,
        };
        self.deferred.entry(wake / 1000).or_default().push(waiting);
        self.deferred_len += 1;
    }

    /// `waiting`, taken out of the bucket of second `second`, as a slot.
    fn slot(&mut self, second: u64, waiting: Waiting) -> Slot {
        self.deferred_len -= 1;
        let wake = second * 1000 + u64::from(waiting.ms);
        let key = (waiting.id, waiting.domain);
        let stored = self.stored.remove(&key).unwrap_or(wake);
        let name = self.domains.name(waiting.domain);
        self.domains.put_back(waiting.domain);
        (wake, waiting.id, name, stored)
    }

    /// The next deferred entry whose time has come, if any.
    pub fn pop_due(&mut self, now: u64) -> Option<Slot> {
        let mut first = self.deferred.first_entry()?;
        let second = *first.key();
        if second > now / 1000 {
            return None;
        }
        let bucket = first.get_mut();
        // Within the current second, only those whose millisecond came.
        let at = match second == now / 1000 {
            true => bucket.iter().position(|w| u64::from(w.ms) <= now % 1000)?,
            false => bucket.len() - 1,
        };
        let waiting = bucket.swap_remove(at);
        if bucket.is_empty() {
            first.remove();
        }
        Some(self.slot(second, waiting))
    }

    /// When the deferred entry due last wakes.
    pub fn latest_wake(&self) -> Option<u64> {
        let (second, bucket) = self.deferred.last_key_value()?;
        let ms = bucket.iter().map(|w| w.ms).max()?;
        Some(second * 1000 + u64::from(ms))
    }

    /// Take the deferred entry due last out of memory (it stays in the
    /// store); its stored due time.
    pub fn evict_latest(&mut self) -> Option<u64> {
        let mut last = self.deferred.last_entry()?;
        let second = *last.key();
        let bucket = last.get_mut();
        let at = (0..bucket.len()).max_by_key(|&i| bucket[i].ms)?;
        let waiting = bucket.swap_remove(at);
        if bucket.is_empty() {
            last.remove();
        }
        let (_, id, domain, stored) = self.slot(second, waiting);
        self.forget(id, &domain);
        Some(stored)
    }

    /// Take the deferred entry of `id` at `domain` out of the schedule (it
    /// stays known); its slot, if it was deferred. A scan: operators' use.
    pub fn take_deferred(&mut self, id: MessageId, domain: &str) -> Option<Slot> {
        let d = self.domains.find(domain)?;
        let (second, at) = self.deferred.iter().find_map(|(second, bucket)| {
            let at = bucket.iter().position(|w| w.id == id && w.domain == d)?;
            Some((*second, at))
        })?;
        let bucket = self.deferred.get_mut(&second)?;
        let waiting = bucket.swap_remove(at);
        if bucket.is_empty() {
            self.deferred.remove(&second);
        }
        Some(self.slot(second, waiting))
    }

    /// Entries in memory.
    pub fn known_len(&self) -> usize {
        self.known.len()
    }

    /// Deferred entries in memory.
    pub fn deferred_len(&self) -> usize {
        self.deferred_len
    }

    /// The arrival (µs) of the oldest message in memory.
    pub fn oldest_micros(&self) -> Option<u64> {
        self.known.iter().map(|(id, _)| id.unix_micros()).min()
    }

    /// Drop interned domains no entry uses any more.
    pub fn prune_domains(&mut self) {
        self.domains.prune();
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
        for (n, wake) in [(1, 30_000), (2, 10_000), (3, 20_000)] {
            assert!(s.insert_known(id(n), "a.test"));
            s.defer(wake, id(n), "a.test", wake);
        }
        assert!(!s.insert_known(id(1), "a.test"), "once");
        assert_eq!(s.latest_wake(), Some(30_000));
        assert_eq!(s.evict_latest(), Some(30_000));
        assert!(!s.is_known(id(1), "a.test"));
        assert_eq!(s.pop_due(15_000).map(|slot| slot.1), Some(id(2)));
        assert_eq!(s.pop_due(15_000), None);
        let taken = s.take_deferred(id(3), "a.test").unwrap();
        assert_eq!((taken.0, taken.3), (20_000, 20_000));
        drop(taken);
        assert_eq!(s.deferred_len(), 0);
        assert_eq!(s.known_len(), 2, "taken and woken entries stay known");
        s.forget(id(2), "a.test");
        s.forget(id(3), "a.test");
        s.prune_domains();
        assert!(s.domains.is_empty());
    }

    #[test]
    fn milliseconds_count_within_a_second_and_stored_times_come_back() {
        let mut s = Schedule::default();
        s.insert_known(id(1), "a.test");
        s.insert_known(id(2), "a.test");
        s.defer(5_700, id(1), "a.test", 5_700);
        // Waiting again after a failed store write: the store has 4,000.
        s.defer(5_200, id(2), "a.test", 4_000);
        assert_eq!(s.pop_due(5_100), None, "not yet, within the second");
        assert_eq!(
            s.pop_due(5_300),
            Some((5_200, id(2), "a.test".into(), 4_000))
        );
        assert_eq!(s.pop_due(5_300), None);
        assert_eq!(s.latest_wake(), Some(5_700));
        assert_eq!(
            s.pop_due(6_000).map(|slot| (slot.0, slot.3)),
            Some((5_700, 5_700))
        );
        assert!(s.stored.is_empty());
    }

    #[test]
    fn one_domain_is_stored_once_and_its_number_is_reused() {
        let mut s = Schedule::default();
        for n in 0..100 {
            s.insert_known(id(n), "big.test");
            s.defer(n * 1000, id(n), "big.test", n * 1000);
        }
        assert_eq!(s.domains.ids.len(), 1);
        while s.pop_due(u64::MAX).is_some() {}
        for n in 0..100 {
            s.forget(id(n), "big.test");
        }
        s.prune_domains();
        assert!(s.domains.is_empty());
        s.insert_known(id(1), "other.test");
        assert_eq!(s.domains.names.len(), 1, "the freed number is reused");
    }
}
