//! The memory budget of one shard's sessions: client data they hold (a
//! message being received, an APPEND literal, read buffers) is counted
//! against one limit, and a session that would go over it waits before
//! its socket is read again. The client is then slowed by TCP's own flow
//! control; nothing more is buffered.
//!
//! Untrusted clients (not from a relay network, not authenticated) draw
//! from a pool half the size, so that they can never take all of it from
//! the users who are logged in. The first [`FREE_PER_SESSION`] bytes of
//! each session are not counted: commands and small messages never wait,
//! and the connection caps bound that part.

use glommio::sync::Semaphore;

/// Bytes of each session that are not charged.
pub(crate) const FREE_PER_SESSION: usize = 64 * 1024;

/// One shard's budget.
pub(crate) struct MemoryBudget {
    total: Semaphore,
    untrusted: Semaphore,
    limit: u64,
}

impl MemoryBudget {
    /// A budget of `bytes`, half of it open to untrusted clients.
    pub(crate) fn new(bytes: usize) -> MemoryBudget {
        let limit = bytes as u64;
        MemoryBudget {
            total: Semaphore::new(limit),
            untrusted: Semaphore::new(limit / 2),
            limit,
        }
    }

    /// Bytes charged now.
    pub(crate) fn used(&self) -> u64 {
        self.limit - self.total.available()
    }
}

/// What one session holds of the budget; given back when dropped.
pub(crate) struct Lease<'a> {
    budget: &'a MemoryBudget,
    total: u64,
    untrusted: u64,
}

impl<'a> Lease<'a> {
    /// A lease holding nothing.
    pub(crate) fn new(budget: &'a MemoryBudget) -> Lease<'a> {
        Lease {
            budget,
            total: 0,
            untrusted: 0,
        }
    }

    /// What holding `bytes` means for each pool: (untrusted, total).
    fn targets(&self, bytes: usize, trusted: bool) -> (u64, u64) {
        let target = bytes.saturating_sub(FREE_PER_SESSION) as u64;
        // A single request bigger than a pool could never be granted: cap
        // it at the pool, which then serializes such sessions.
        let untrusted = if trusted {
            0
        } else {
            target.min(self.budget.limit / 2)
        };
        (untrusted, target.min(self.budget.limit))
    }

    /// Whether holding `bytes` needs no wait: it shrinks, stays, or fits in
    /// what is free now. (The common case: the caller then skips a timer.)
    pub(crate) fn fits(&self, bytes: usize, trusted: bool) -> bool {
        let (untrusted, total) = self.targets(bytes, trusted);
        let more = |want: u64, held: u64, pool: &Semaphore| {
            want <= held || pool.available() >= want - held
        };
        more(untrusted, self.untrusted, &self.budget.untrusted)
            && more(total, self.total, &self.budget.total)
    }

    /// Hold `bytes` (less the free part), waiting for room if it grows.
    /// A session that became trusted gives its untrusted share back.
    pub(crate) async fn hold(&mut self, bytes: usize, trusted: bool) {
        let (untrusted, total) = self.targets(bytes, trusted);
        adjust(&self.budget.untrusted, &mut self.untrusted, untrusted).await;
        adjust(&self.budget.total, &mut self.total, total).await;
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
        self.budget.untrusted.signal(self.untrusted);
        self.budget.total.signal(self.total);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::FutureExt;
    use std::time::Duration;

    #[test]
    fn sessions_wait_for_room_and_untrusted_get_half() {
        glommio::LocalExecutorBuilder::default()
            .spawn(|| async {
                let budget = MemoryBudget::new(1 << 20);
                let mut a = Lease::new(&budget);
                let mut b = Lease::new(&budget);
                // Small holdings are free.
                a.hold(FREE_PER_SESSION, false).await;
                assert_eq!(budget.used(), 0);
                // An untrusted session gets at most half.
                a.hold(FREE_PER_SESSION + (512 << 10), false).await;
                assert_eq!(budget.used(), 512 << 10);
                let blocked = async {
                    b.hold(FREE_PER_SESSION + 1, false).await;
                    true
                };
                let timeout = async {
                    glommio::timer::sleep(Duration::from_millis(50)).await;
                    false
                };
                assert!(!blocked.or(timeout).await, "untrusted pool is full");
                // A trusted one still has the other half.
                let mut c = Lease::new(&budget);
                c.hold(FREE_PER_SESSION + (256 << 10), true).await;
                assert_eq!(budget.used(), 768 << 10);
                // Giving back lets the waiter in.
                drop(a);
                b.hold(FREE_PER_SESSION + 1, false).await;
                assert_eq!(budget.used(), (256 << 10) + 1);
                drop(b);
                drop(c);
                assert_eq!(budget.used(), 0);
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
