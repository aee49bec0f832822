//! Outbound delivery: from a committed queue entry to the right MX host.
//!
//! Every queue entry (one message's recipients at one domain) belongs to
//! one shard, [`owner_of`], a hash of its domain *and* message id: a
//! domain's mail, and a site's, is spread over every shard, so one
//! destination that is 40% of the traffic keeps every core busy rather than
//! one. The shard that accepts a message hands each new queue entry to its
//! owner through the [`Hub`]'s bounded channels; no lock is shared. The
//! owner learns the entry's MX *site* (the set of MX hosts its domain
//! shares with others, [`shaping`]) and keeps, per site, a ready queue, its
//! open connections and the connections waiting idle for more mail, so one
//! connection carries mail for every domain of the site; deferred entries
//! wait on a timer ([`queue`]). The site's limits (connections, rates)
//! hold across shards through atomics ([`shaping::SiteLimiter`]). Each
//! connection finds the hosts ([`route`], [`resolver`]) and drives the
//! sans-IO SMTP client over them ([`deliver`]).
//! Each attempt's outcome is committed atomically: finished recipients leave
//! the queue, deferred ones get a later due time, failed ones produce a
//! delivery status notification ([`bounce`]) in the same commit.
//!
//! The store stays the source of truth. Memory holds a bounded cache of
//! entries; whatever does not fit stays in the store and is swept in later,
//! and on start every shard rebuilds its schedule with one range scan of the
//! due-time index.
//!
//! A message with recipients at several domains has one entry per domain,
//! possibly on several shards. Its body may go only when all of them are
//! done, so finished domains are reported to the message's *home* shard (the
//! one that accepted it), which alone rewrites the envelope's list of
//! recipients left and deletes the message when it is empty.

pub(crate) mod bounce;
pub mod dane;
pub(crate) mod deliver;
pub mod egress;
pub mod mta_sts;
pub mod ourselves;
pub(crate) mod queue;
pub mod resolver;
pub mod route;
pub mod shaping;
pub mod tls;

/// The compact schedule of a shard's queue entries (public for its
/// benchmark).
pub use queue::{Schedule, Slot};

use crate::queue_admin::{Action, Outcome};
use ringpost_storage::spool::{MessageId, QueueEntry};
use std::sync::atomic::{AtomicBool, Ordering};

/// The shard that owns a queue entry: FNV-1a over its domain (lowercase)
/// and message id, then mixed, so every shard and every restart agree without any
/// shared state, and a busy domain's entries are spread over all shards.
pub fn owner_of(domain: &str, id: &MessageId, shards: usize) -> usize {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in domain.bytes().chain(id.0) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    // FNV's low bits mix poorly (ids that differ in a counter could all
    // land on one shard of four): a final avalanche (splitmix64's).
    hash ^= hash >> 30;
    hash = hash.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash ^= hash >> 27;
    hash = hash.wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^= hash >> 31;
    (hash % shards.max(1) as u64) as usize
}

/// Ids of messages the relay creates itself (bounces) carry this bit in their
/// shard field, so they never collide with ids the SMTP intake hands out.
pub(crate) const RELAY_ID_BIT: u16 = 0x8000;
/// Ids of messages injected over HTTP ([`crate::inject`]) carry this bit,
/// for the same reason.
pub(crate) const INJECT_ID_BIT: u16 = 0x4000;

/// The home shard of a message: the one that accepted (or created) it.
pub fn home_of(id: &MessageId, shards: usize) -> usize {
    usize::from(id.shard() & !(RELAY_ID_BIT | INJECT_ID_BIT)) % shards.max(1)
}

/// What one shard sends another.
#[derive(Debug)]
pub(crate) enum Inbox {
    /// A committed queue entry the receiving shard owns.
    Entry(QueueEntry),
    /// Every recipient of `domain` of this message is done; the receiving
    /// shard is the message's home and updates its envelope.
    DomainDone {
        /// The message.
        id: MessageId,
        /// The finished domain (lowercase).
        domain: String,
    },
    /// An operator's action on an entry the receiving shard owns; the
    /// outcome goes back on `reply`.
    Operator {
        /// What to do.
        action: Action,
        /// The entry as the store showed it.
        entry: QueueEntry,
        /// Where the outcome goes.
        reply: futures::channel::oneshot::Sender<Outcome>,
    },
}

/// The cross-shard channels, one bounded inbox per shard.
pub(crate) struct Hub {
    inboxes: Vec<flume::Sender<Inbox>>,
    /// Set when an entry did not fit its owner's inbox: it stays in the store
    /// and the owner sweeps it in.
    overflowed: Vec<AtomicBool>,
}

impl Hub {
    /// A hub for `shards` shards with inboxes of `capacity` messages, and
    /// each shard's receiving end.
    pub fn new(shards: usize, capacity: usize) -> (Hub, Vec<flume::Receiver<Inbox>>) {
        let (inboxes, receivers) = (0..shards).map(|_| flume::bounded(capacity)).unzip();
        let hub = Hub {
            inboxes,
            overflowed: (0..shards).map(|_| AtomicBool::new(false)).collect(),
        };
        (hub, receivers)
    }

    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.inboxes.len()
    }

    /// Hand committed entries to their owners. Never waits: an entry that does
    /// not fit is already durable, and its owner will sweep it in.
    pub fn route(&self, entries: impl IntoIterator<Item = QueueEntry>) {
        for entry in entries {
            let owner = owner_of(&entry.domain, &entry.id, self.shards());
            if self.inboxes[owner].try_send(Inbox::Entry(entry)).is_err() {
                self.overflowed[owner].store(true, Ordering::Relaxed);
            }
        }
    }

    /// Tell a message's home shard that one of its domains is done. Waits for
    /// room: dropping this would keep the body forever.
    pub async fn domain_done(&self, id: MessageId, domain: String) {
        let home = home_of(&id, self.shards());
        // Err only when the home shard has stopped; the body then stays until
        // shard 0 next looks for leftovers (`queue::leftovers`).
        let _ = self.inboxes[home]
            .send_async(Inbox::DomainDone { id, domain })
            .await;
    }

    /// Have the shard that owns `entry`'s domain do `action` to it, and
    /// wait for the outcome (from any thread or runtime).
    pub async fn administer(&self, action: Action, entry: QueueEntry) -> Outcome {
        let owner = owner_of(&entry.domain, &entry.id, self.shards());
        let (reply, outcome) = futures::channel::oneshot::channel();
        let sent = self.inboxes[owner]
            .send_async(Inbox::Operator {
                action,
                entry,
                reply,
            })
            .await;
        if sent.is_err() {
            return Outcome::Failed("the shard has stopped".into());
        }
        outcome
            .await
            .unwrap_or_else(|_| Outcome::Failed("the shard stopped before answering".into()))
    }

    /// Whether entries for `shard` had to stay in the store; clears the flag.
    pub fn take_overflow(&self, shard: usize) -> bool {
        self.overflowed[shard].swap(false, Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ownership_is_stable_and_spreads_one_domain_over_shards() {
        let id = |n| MessageId::new(n, 0, n);
        assert_eq!(owner_of("example.test", &id(1), 1), 0);
        let a = owner_of("example.test", &id(1), 8);
        assert_eq!(a, owner_of("example.test", &id(1), 8));
        let mut seen = [0usize; 4];
        for i in 0..1000 {
            seen[owner_of(&format!("d{i}.test"), &id(7), 4)] += 1;
        }
        assert!(seen.iter().all(|&n| n > 150), "{seen:?}");
        let mut seen = [0usize; 4];
        for i in 0..1000 {
            seen[owner_of("gmail.com", &id(i), 4)] += 1;
        }
        assert!(seen.iter().all(|&n| n > 150), "one domain: {seen:?}");
    }

    #[test]
    fn home_ignores_the_relay_bit() {
        let id = MessageId::new(1, 3 | RELAY_ID_BIT, 1);
        assert_eq!(home_of(&id, 4), 3);
        assert_eq!(home_of(&MessageId::new(1, 5, 1), 4), 1);
    }

    #[test]
    fn full_inbox_sets_the_overflow_flag() {
        let (hub, receivers) = Hub::new(1, 1);
        let entry = |n| QueueEntry {
            pool: None,
            due: 0,
            id: MessageId::new(n, 0, n),
            domain: "a.test".into(),
            recipients: vec!["x@a.test".into()],
            attempts: 0,
            last_error: None,
        };
        hub.route([entry(1), entry(2)]);
        assert_eq!(receivers[0].len(), 1);
        assert!(hub.take_overflow(0));
        assert!(!hub.take_overflow(0));
    }
}
