//! Messages the relay finished with but whose envelope stayed behind.
//!
//! A message leaves the spool in two steps: the shard that owns a domain
//! commits the domain's last outcome, then tells the message's home shard,
//! which rewrites or deletes the envelope ([`Relay::domain_done`]). A crash
//! or a stop between the two, or a failed commit of the second, leaves an
//! envelope (and its body) that no queue entry names: nothing would ever
//! delete it, and the disk would fill a little at every restart. Shard 0
//! looks for such messages a little after start, then every hour, and
//! removes them as the home shard would have.

use super::Relay;
use ringpost_storage::spool;
use ringpost_storage::WriteBatch;
use std::rc::Rc;
use std::time::Duration;

/// The first look, after start: late enough not to slow the start itself.
const FIRST_LOOK: Duration = Duration::from_secs(10);
/// Then one look per this long: a scan of every envelope and queue entry.
const LOOK_EVERY: Duration = Duration::from_secs(3600);
/// Messages removed per commit.
const REMOVE_BATCH: usize = 1_000;

/// Look for leftovers until the shard stops. Only on a store whose queue
/// scans read a snapshot ([`spool::orphaned_messages`]); the memory store
/// keeps nothing across a restart anyway.
pub(super) async fn look_from_time_to_time(relay: Rc<Relay>) {
    // The task ends with the shard, waiting or looking: it holds the store
    // open.
    let mut wait = FIRST_LOOK;
    loop {
        let slept = unless_stopped(&relay, glommio::timer::sleep(wait)).await;
        if slept.is_none() || relay.state.borrow().stopping {
            return;
        }
        if unless_stopped(&relay, remove(&relay)).await.is_none() {
            return;
        }
        wait = LOOK_EVERY;
    }
}

/// `work`'s outcome, or `None` if the shard stops first.
async fn unless_stopped<T>(relay: &Relay, work: impl std::future::Future<Output = T>) -> Option<T> {
    let stopped = async {
        relay.stopped().await;
        None
    };
    futures_lite::future::or(stopped, async { Some(work.await) }).await
}

/// Find leftovers and remove them; returns how many went.
async fn remove(relay: &Rc<Relay>) -> usize {
    let store = relay.store.clone();
    let found = glommio::executor()
        .spawn_blocking(move || spool::orphaned_messages(&*store))
        .await;
    let ids = match found {
        Ok(ids) => ids,
        Err(e) => {
            tracing::error!(shard = relay.shard, error = %e, "cannot look for finished messages left in the spool; will look again");
            return 0;
        }
    };
    let mut removed = 0;
    for chunk in ids.chunks(REMOVE_BATCH) {
        let mut batch = WriteBatch::new();
        for id in chunk {
            spool::delete_message(&mut batch, id);
        }
        // It frees room: even a nearly full disk must take it.
        batch.pass_reserve();
        if let Err(e) = relay.commits.commit(batch).await {
            tracing::error!(shard = relay.shard, error = %e, "cannot remove finished messages left in the spool; will look again");
            break;
        }
        removed += chunk.len();
        relay.metrics.leftovers_removed.inc_by(chunk.len() as u64);
    }
    if removed > 0 {
        tracing::warn!(
            shard = relay.shard,
            messages = removed,
            first = %ids[0].to_hex(),
            "removed finished messages left in the spool (after a crash or a stop mid-delivery)"
        );
    }
    removed
}
