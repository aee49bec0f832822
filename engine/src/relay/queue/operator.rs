//! An operator's actions on the entries this shard owns (`ringpost queue
//! hold|release|delete|bounce|flush`, through the admin API and the hub).
//!
//! The shard is the one place that knows where an entry is: waiting in
//! memory (deferred or ready), taken by a connection (in flight), or only in
//! the store (held, or left there for lack of memory). An entry in flight
//! is not touched: the answer is [`Outcome::InFlight`], and the operator
//! asks again once the attempt is over. Every change is one commit; memory
//! follows the store only after it succeeded.

use super::{now_millis, same_reply, EntryKey, Relay};
use crate::queue_admin::{Action, Outcome};
use ringpost_protocols::smtp::client::ServerReply;
use ringpost_storage::spool::{self, QueueEntry, HELD};
use ringpost_storage::{Family, WriteBatch};
use std::rc::Rc;

/// An entry an operator's action is on: store scans skip it meanwhile.
struct Leaving<'a> {
    relay: &'a Relay,
    key: EntryKey,
}

impl<'a> Leaving<'a> {
    fn start(relay: &'a Relay, key: EntryKey) -> Leaving<'a> {
        relay.state.borrow_mut().leaving.insert(key.clone());
        Leaving { relay, key }
    }
}

impl Drop for Leaving<'_> {
    fn drop(&mut self) {
        let mut state = self.relay.state.borrow_mut();
        state.leaving.remove(&self.key);
        // A scan running now may have read the entry as it was before.
        if state.scans > 0 {
            state.forgotten_in_scan.insert(self.key.clone());
        }
    }
}

/// Where an entry is.
enum Found {
    /// Taken out of memory (it was ready).
    Taken(QueueEntry),
    /// Taken out of memory, where it was deferred: the store has it whole.
    Deferred,
    /// A connection has it.
    InFlight,
    /// Not in memory: only the store has it, if anyone.
    Stored,
}

impl Relay {
    /// Do `action` to the entry `given` names (its id and domain; its other
    /// fields as the store showed them when it was listed).
    pub(crate) async fn administer(self: &Rc<Self>, action: Action, given: QueueEntry) -> Outcome {
        let key = (given.id, given.domain.clone());
        if action == Action::Flush {
            return self.flush(&key, given);
        }
        // Until the action is over, no store scan may bring the entry back
        // into memory (a held one would be delivered).
        let _leaving = Leaving::start(self, key.clone());
        let entry = match self.take(&key) {
            Found::InFlight => return Outcome::InFlight,
            Found::Taken(entry) => entry,
            Found::Stored | Found::Deferred => match self.stored(&given) {
                Ok(()) => given,
                Err(outcome) => return outcome,
            },
        };
        let outcome = match action {
            Action::Hold if entry.is_held() => Outcome::NotApplicable("already held"),
            Action::Release if !entry.is_held() => Outcome::NotApplicable("not held"),
            Action::Hold => self.move_to(&entry, HELD).await,
            Action::Release => {
                let outcome = self.move_to(&entry, now_millis()).await;
                if outcome == Outcome::Done {
                    let released = QueueEntry {
                        due: now_millis(),
                        ..entry.clone()
                    };
                    self.admit(released);
                }
                return outcome;
            }
            Action::Delete => self.delete(&entry).await,
            Action::Bounce => return self.bounce(entry).await,
            Action::Flush => unreachable!("handled above"),
        };
        if outcome != Outcome::Done && !entry.is_held() {
            // Nothing changed: it goes back where it was.
            self.admit(entry);
        }
        outcome
    }

    /// Take the entry out of memory if it waits there.
    fn take(&self, key: &EntryKey) -> Found {
        let mut state = self.state.borrow_mut();
        if !state.schedule.is_known(key.0, &key.1) {
            return Found::Stored;
        }
        if state.schedule.take_deferred(key.0, &key.1).is_some() {
            state.forget(key.0, &key.1);
            self.metrics.queued.set(state.schedule.known_len() as i64);
            self.metrics
                .deferred
                .set(state.schedule.deferred_len() as i64);
            return Found::Deferred;
        }
        let waiting = state.unresolved.get_mut(&key.1).and_then(|entries| {
            let at = entries.iter().position(|e| e.id == key.0)?;
            Some(entries.remove(at))
        });
        // Ready entries of a domain may sit in more than one site's queue
        // (its MX hosts changed): look in all.
        let taken = waiting.or_else(|| {
            state.sites.values_mut().find_map(|dest| {
                let at = dest
                    .ready
                    .iter()
                    .position(|e| e.id == key.0 && e.domain == key.1)?;
                dest.ready.remove(at)
            })
        });
        match taken {
            Some(entry) => {
                state.forget(key.0, &key.1);
                self.metrics.queued.set(state.schedule.known_len() as i64);
                Found::Taken(entry)
            }
            None => Found::InFlight,
        }
    }

    /// Whether the store still has `entry` as it was listed.
    fn stored(&self, entry: &QueueEntry) -> Result<(), Outcome> {
        match self.store.get(Family::Queue, &entry.key()) {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(Outcome::NotFound),
            Err(e) => Err(Outcome::Failed(e.to_string())),
        }
    }

    /// Give `entry` the due time `due` (HELD holds it), durably.
    async fn move_to(&self, entry: &QueueEntry, due: u64) -> Outcome {
        let moved = QueueEntry {
            due,
            ..entry.clone()
        };
        let mut batch = WriteBatch::new();
        spool::reschedule(&mut batch, entry, &moved);
        self.commit_outcome(batch).await
    }

    /// Drop `entry` without a delivery or a DSN; the message goes when no
    /// other domain or mailbox needs it (its home shard decides that).
    async fn delete(self: &Rc<Self>, entry: &QueueEntry) -> Outcome {
        let envelope = match self.load(entry.id).await {
            Ok(Some(loaded)) => Some(loaded.envelope),
            Ok(None) => None,
            Err(e) => return Outcome::Failed(e.to_string()),
        };
        let mut batch = WriteBatch::new();
        spool::delete_queue_entry(&mut batch, entry);
        let hostname = &self.config().hostname;
        let only_domain = envelope.as_ref().is_none_or(|e| {
            e.recipients
                .iter()
                .all(|r| crate::intake::recipient_domain(r, hostname) == entry.domain)
        });
        if only_domain {
            spool::delete_message(&mut batch, &entry.id);
        }
        let outcome = self.commit_outcome(batch).await;
        if outcome == Outcome::Done {
            tracing::info!(shard = self.shard, queue_id = %entry.id, domain = %entry.domain, "queue entry deleted by the operator");
            if !only_domain {
                self.hub.domain_done(entry.id, entry.domain.clone()).await;
            }
        }
        outcome
    }

    /// Fail every recipient of `entry` now: the DSN and the release of the
    /// message are what a permanent failure brings.
    async fn bounce(self: &Rc<Self>, entry: QueueEntry) -> Outcome {
        let reply = ServerReply {
            code: 550,
            status: Some("5.0.0".into()),
            text: "delivery cancelled by the mail administrator".into(),
            local: true,
        };
        let results = same_reply(&entry, &reply);
        let key = entry.key();
        // `finish` needs the entry known while its outcome is recorded.
        self.state
            .borrow_mut()
            .schedule
            .insert_known(entry.id, &entry.domain);
        self.clone().finish(entry, results, None, None).await;
        // On a failed commit `finish` keeps the entry for later: say so.
        match self.store.get(Family::Queue, &key) {
            Ok(None) => Outcome::Done,
            Ok(Some(_)) => Outcome::Failed("the bounce could not be recorded".into()),
            Err(e) => Outcome::Failed(e.to_string()),
        }
    }

    /// Try the entry now: a deferred one becomes ready, one only in the
    /// store is loaded as due.
    fn flush(self: &Rc<Self>, key: &EntryKey, given: QueueEntry) -> Outcome {
        let deferred = {
            let mut state = self.state.borrow_mut();
            if state.schedule.is_known(key.0, &key.1) {
                match state.schedule.take_deferred(key.0, &key.1) {
                    Some(slot) => Some(slot),
                    // Ready or in flight already.
                    None => return Outcome::Done,
                }
            } else {
                None
            }
        };
        match deferred {
            // The schedule keeps only its key: the store has it whole.
            Some(slot) => match self.stored(&given) {
                Ok(()) => {
                    self.make_ready(given);
                    Outcome::Done
                }
                Err(outcome) => {
                    let (wake, id, domain, stored_due) = slot;
                    let mut state = self.state.borrow_mut();
                    state.schedule.defer(wake, id, &domain, stored_due);
                    outcome
                }
            },
            None if given.is_held() => Outcome::NotApplicable("held: release it first"),
            None => match self.stored(&given) {
                Ok(()) => {
                    self.admit(QueueEntry {
                        due: now_millis(),
                        ..given
                    });
                    Outcome::Done
                }
                Err(outcome) => outcome,
            },
        }
    }

    async fn commit_outcome(&self, batch: WriteBatch) -> Outcome {
        match self.commits.commit(batch).await {
            Ok(()) => Outcome::Done,
            Err(e) => Outcome::Failed(e.to_string()),
        }
    }
}
