//! The memory budget of one shard's sessions: client data they hold (a
//! message being received, an APPEND literal, read buffers) is counted
//! against one limit, and a session that would go over it waits before
//! its socket is read again. The client is then slowed by TCP's own flow
//! control; nothing more is buffered.
//!
//! Untrusted clients (not from a relay network, not authenticated) draw
//! from a pool half the size, so that they can never take all of it from
//! the users who are logged in; and the sessions of one address (an IPv6
//! /64) from at most [`CLIENT_SHARE`] of that pool, so that one sender
//! pushing large messages over many connections cannot take it from the
//! other servers sending us mail. The first [`FREE_PER_SESSION`] bytes of
//! each session are not counted: commands and small messages never wait,
//! and the connection caps bound that part.

use glommio::sync::Semaphore;
use std::cell::RefCell;
use std::collections::HashMap;
use std::net::IpAddr;
use std::rc::Rc;

/// Bytes of each session that are not charged.
pub(crate) const FREE_PER_SESSION: usize = 64 * 1024;
/// The part of the untrusted pool one address's sessions may hold
/// together: a quarter.
pub(crate) const CLIENT_SHARE: u64 = 4;

/// One shard's budget.
pub(crate) struct MemoryBudget {
    total: Semaphore,
    untrusted: Semaphore,
    limit: u64,
    /// Each address's share of the untrusted pool, while it has sessions.
    clients: RefCell<HashMap<IpAddr, Rc<Semaphore>>>,
}

impl MemoryBudget {
    /// A budget of `bytes`, half of it open to untrusted clients.
    pub(crate) fn new(bytes: usize) -> MemoryBudget {
        let limit = bytes as u64;
        MemoryBudget {
            total: Semaphore::new(limit),
            untrusted: Semaphore::new(limit / 2),
            limit,
            clients: RefCell::new(HashMap::new()),
        }
    }

    /// Bytes charged now.
    pub(crate) fn used(&self) -> u64 {
        self.limit - self.total.available()
    }

    fn client_share(&self) -> u64 {
        self.limit / 2 / CLIENT_SHARE
    }

    /// The share of `client`'s sessions (made with its first).
    fn share_of(&self, client: IpAddr) -> Rc<Semaphore> {
        let key = crate::limits::client_key(client);
        let share = self.client_share();
        self.clients
            .borrow_mut()
            .entry(key)
            .or_insert_with(|| Rc::new(Semaphore::new(share)))
            .clone()
    }

    /// Forget `client`'s share once no session holds it.
    fn release(&self, client: IpAddr, share: &Rc<Semaphore>) {
        let mut clients = self.clients.borrow_mut();
        let key = crate::limits::client_key(client);
        // The map's reference and the one being dropped.
        if Rc::strong_count(share) <= 2 {
            clients.remove(&key);
        }
    }

    /// Addresses with a share now (tests).
    #[cfg(test)]
    fn clients(&self) -> usize {
        self.clients.borrow().len()
    }
}

/// What one session holds of the budget; given back when dropped.
pub(crate) struct Lease<'a> {
    budget: &'a MemoryBudget,
    client: IpAddr,
    share: Rc<Semaphore>,
    /// Held of the client's share, of the untrusted pool, of the total.
    held: [u64; 3],
}

impl<'a> Lease<'a> {
    /// A lease holding nothing, for a session of `client`.
    pub(crate) fn new(budget: &'a MemoryBudget, client: IpAddr) -> Lease<'a> {
        Lease {
            budget,
            client,
            share: budget.share_of(client),
            held: [0; 3],
        }
    }

    /// What holding `bytes` means for the client's share, the untrusted
    /// pool and the total.
    fn targets(&self, bytes: usize, trusted: bool) -> [u64; 3] {
        let target = bytes.saturating_sub(FREE_PER_SESSION) as u64;
        // A single request bigger than a pool could never be granted: cap
        // it at the pool (for a stranger, its address's share), which then
        // serializes such sessions.
        match trusted {
            true => [0, 0, target.min(self.budget.limit)],
            // Counted the same in every pool, so strangers never hold more
            // of the total than of their half.
            false => [target.min(self.budget.client_share()); 3],
        }
    }

    fn pools(&self) -> [&Semaphore; 3] {
        [&self.share, &self.budget.untrusted, &self.budget.total]
    }

    /// Whether holding `bytes` needs no wait: it shrinks, stays, or fits in
    /// what is free now. (The common case: the caller then skips a timer.)
    pub(crate) fn fits(&self, bytes: usize, trusted: bool) -> bool {
        let wanted = self.targets(bytes, trusted);
        let pools = self.pools();
        (0..3)
            .all(|i| wanted[i] <= self.held[i] || pools[i].available() >= wanted[i] - self.held[i])
    }

    /// Hold `bytes` (less the free part), waiting for room if it grows.
    /// A session that became trusted gives its untrusted shares back.
    /// Always in the same order (the address's share, the untrusted pool,
    /// the total); sessions that grow while others hold what they wait
    /// for can still wait on each other, and the caller's deadline ends
    /// any wait.
    pub(crate) async fn hold(&mut self, bytes: usize, trusted: bool) {
        let wanted = self.targets(bytes, trusted);
        adjust(&self.share, &mut self.held[0], wanted[0]).await;
        adjust(&self.budget.untrusted, &mut self.held[1], wanted[1]).await;
        adjust(&self.budget.total, &mut self.held[2], wanted[2]).await;
    }
}

/// Grow or shrink a holding of `semaphore` to `target`.
async fn adjust(semaphore: &Semaphore, held: &mut u64, target: u64) {
    if target < *held {
        semaphore.signal(*held - target);
        *held = target;
    } else if target > *held {
        // The semaphores are never closed while sessions run.
        if semaphore.acquire(target - *held).await.is_ok() {
            *held = target;
        }
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        for (pool, held) in self.pools().into_iter().zip(self.held) {
            pool.signal(held);
        }
        self.budget.release(self.client, &self.share);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::FutureExt;
    use std::time::Duration;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, n])
    }

    /// Whether `lease` gets `bytes` within 50 ms.
    async fn gets(lease: &mut Lease<'_>, bytes: usize, trusted: bool) -> bool {
        let held = async {
            lease.hold(bytes, trusted).await;
            true
        };
        let timeout = async {
            glommio::timer::sleep(Duration::from_millis(50)).await;
            false
        };
        held.or(timeout).await
    }

    #[test]
    fn strangers_get_half_and_each_address_a_quarter_of_that() {
        glommio::LocalExecutorBuilder::default()
            .spawn(|| async {
                // 1 MiB: 512 KiB for strangers, 128 KiB per address.
                let budget = MemoryBudget::new(1 << 20);
                let mut a = Lease::new(&budget, ip(1));
                // Small holdings are free.
                a.hold(FREE_PER_SESSION, false).await;
                assert_eq!(budget.used(), 0);
                // One address's sessions share its quarter: a second one
                // waits while the first holds it all.
                a.hold(FREE_PER_SESSION + (128 << 10), false).await;
                assert_eq!(budget.used(), 128 << 10);
                let mut a2 = Lease::new(&budget, ip(1));
                assert!(
                    !gets(&mut a2, FREE_PER_SESSION + 1, false).await,
                    "its share is held"
                );
                // Other addresses are not held back by it...
                let mut others: Vec<Lease> = (2..=4).map(|n| Lease::new(&budget, ip(n))).collect();
                for lease in &mut others {
                    assert!(gets(lease, FREE_PER_SESSION + (128 << 10), false).await);
                }
                // ...until the strangers' half is spent.
                let mut e = Lease::new(&budget, ip(5));
                assert!(
                    !gets(&mut e, FREE_PER_SESSION + 1, false).await,
                    "strangers' half is full"
                );
                // A trusted session still has the other half.
                let mut trusted = Lease::new(&budget, ip(1));
                assert!(gets(&mut trusted, FREE_PER_SESSION + (256 << 10), true).await);
                assert_eq!(budget.used(), (768 << 10));
                // Giving back lets the waiters in.
                drop(a);
                assert!(gets(&mut a2, FREE_PER_SESSION + 1, false).await);
                drop(others);
                assert!(gets(&mut e, FREE_PER_SESSION + 1, false).await);
                drop((a2, e, trusted));
                assert_eq!(budget.used(), 0);
                assert_eq!(
                    budget.clients(),
                    0,
                    "shares are forgotten with their sessions"
                );
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
