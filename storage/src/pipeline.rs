//! Group commit.
//!
//! Every shard that needs something durable sends its [`WriteBatch`] to one
//! writer thread through a [`CommitHandle`] and awaits the answer. The writer
//! blocks for the first request, then takes whatever else is already queued
//! (up to [`PipelineConfig::max_batch_requests`] requests and
//! [`PipelineConfig::max_batch_bytes`] bytes), hands all of it to
//! [`Store::write`] as one atomic, synced write, and only then answers every
//! waiter. One fsync thus acknowledges as many commits as arrived while the
//! previous one ran: the busier the server, the bigger the groups.
//!
//! A waiter is told `Ok` only after the write that carried its batch returned
//! `Ok`. When a write fails, every waiter in it gets the error; none is
//! acknowledged.
//!
//! Mailbox [`Change`](crate::Change)s in a batch are resolved by the writer
//! as the batch joins a group (the [`crate::mailbox`] sequencer): that single
//! thread is what hands out UIDs and modseqs in commit order. A batch whose
//! changes are refused is answered at once and written not at all. After a
//! write the writer tells the [`MailboxListener`] whose mailboxes changed.
//!
//! The queue is a bounded flume channel: when the writer falls behind,
//! `commit` waits for room (back-pressure) instead of buffering without limit.
//! Both the send and the reply (a `futures` oneshot) are runtime-agnostic
//! futures, so glommio executors, tokio or `block_on` can all await them.

use crate::mailbox::{Applied, Sequencer};
use crate::{DiskRoom, RoomRule, Store, StoreError, WriteBatch};
use futures::channel::oneshot;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Tuning of the commit pipeline.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// Most requests waiting for the writer; senders wait (back-pressure) beyond it.
    pub queue_capacity: usize,
    /// Most requests merged into one physical write.
    pub max_batch_requests: usize,
    /// Most key+value bytes merged into one physical write (a single larger request still goes alone).
    pub max_batch_bytes: usize,
    /// Write with fsync (true in production; benchmarks may compare).
    pub sync: bool,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            queue_capacity: 8192,
            max_batch_requests: 1024,
            max_batch_bytes: 32 << 20,
            sync: true,
        }
    }
}

/// What one physical write carried, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitReport {
    /// Requests (logical commits) in this write.
    pub requests: usize,
    /// Operations in this write.
    pub ops: usize,
    /// Key+value bytes in this write.
    pub bytes: usize,
    /// Time the engine took to write and sync.
    pub latency: Duration,
    /// Whether it succeeded (true when there was nothing to write).
    pub ok: bool,
    /// The disk was (nearly) full for new mail: the write failed for it,
    /// or requests were refused before it (`refused`).
    pub disk_full: bool,
    /// Requests refused for want of room: before the write (the rest of
    /// the group went ahead), or all of them when the write was.
    pub refused: usize,
    /// The disk had been full for new mail and has room again.
    pub room_again: bool,
}

/// Called on the writer thread after every physical write (metrics).
///
/// It runs before the waiters are answered, so keep it short.
pub type Observer = Box<dyn Fn(&CommitReport) + Send>;

/// Called on the writer thread, before the waiters are answered, with each
/// account whose mailboxes a write changed (lowercased). Sessions waiting
/// in IMAP IDLE learn of new mail through it; keep it short.
pub type MailboxListener = Box<dyn Fn(&str) + Send>;

/// Where one request's outcome goes.
type Done = oneshot::Sender<Result<Vec<Applied>, StoreError>>;

/// What travels from the handles to the writer.
enum Message {
    /// Commit this batch, then answer on `done`.
    Commit {
        /// The changes.
        batch: WriteBatch,
        /// Where the outcome goes.
        done: Done,
    },
    /// Sent by [`CommitPipeline::shutdown`]: commit what is queued, then stop.
    Shutdown,
}

/// The writer thread and its queue. Dropping it or calling [`CommitPipeline::shutdown`]
/// commits everything already queued, then stops.
///
/// Both block until the writer thread has exited, so call them from a thread
/// that may block (not from inside an executor task).
pub struct CommitPipeline {
    /// Used to send [`Message::Shutdown`]; `None` once that happened.
    sender: Option<flume::Sender<Message>>,
    /// The writer thread; `None` once joined.
    writer: Option<JoinHandle<()>>,
}

/// A cheap, cloneable, `Send` handle that shards use to commit.
#[derive(Clone)]
pub struct CommitHandle {
    sender: flume::Sender<Message>,
}

impl CommitPipeline {
    /// Start the writer thread over `store`. `observer` is called on the writer
    /// thread after every physical write.
    ///
    /// # Panics
    /// When the operating system refuses to start the thread.
    pub fn start(
        store: Arc<dyn Store>,
        config: PipelineConfig,
        observer: Option<Observer>,
    ) -> (CommitPipeline, CommitHandle) {
        Self::start_with_listener(store, config, observer, None)
    }

    /// [`CommitPipeline::start`], with a listener told whose mailboxes changed.
    pub fn start_with_listener(
        store: Arc<dyn Store>,
        config: PipelineConfig,
        observer: Option<Observer>,
        listener: Option<MailboxListener>,
    ) -> (CommitPipeline, CommitHandle) {
        let (sender, receiver) = flume::bounded(config.queue_capacity.max(1));
        // Kept to empty the queue if the writer dies: a channel keeps what
        // is queued while any sender lives, and the shards' handles live as
        // long as the process, so those requests would wait for ever.
        let leftover = receiver.clone();
        let writer = Writer {
            receiver,
            store,
            config,
            observer,
            listener,
            sequencer: Sequencer::default(),
            stopping: false,
            held: None,
            room: None,
            growth: 0,
            refused: 0,
            full: false,
        };
        let thread = std::thread::Builder::new()
            .name("ringpost-commit".into())
            .spawn(move || {
                // Said at once (not only when the pipeline stops): from
                // here on every commit fails, and the operator must know.
                let run = std::panic::AssertUnwindSafe(|| writer.run());
                if let Err(panic) = std::panic::catch_unwind(run) {
                    tracing::error!("the commit writer stopped on a panic: every commit fails until the server restarts");
                    // Each request dropped unanswered: its waiter hears
                    // `Closed`. Later ones find the channel closed.
                    while leftover.try_recv().is_ok() {}
                    drop(leftover);
                    std::panic::resume_unwind(panic);
                }
            })
            .expect("spawn the commit writer thread");
        let handle = CommitHandle {
            sender: sender.clone(),
        };
        (
            CommitPipeline {
                sender: Some(sender),
                writer: Some(thread),
            },
            handle,
        )
    }

    /// Commit what is queued, stop the writer and wait for it.
    pub fn shutdown(mut self) {
        self.stop();
    }

    /// Shared by `shutdown` and `Drop` (where it finds nothing left to do after `shutdown`).
    fn stop(&mut self) {
        if let Some(sender) = self.sender.take() {
            // The marker queues behind every request already sent. An error
            // means the writer is gone already (it panicked): nothing to drain.
            let _ = sender.send(Message::Shutdown);
        }
        if let Some(writer) = self.writer.take() {
            if writer.join().is_err() {
                tracing::error!("commit writer thread panicked");
            }
        }
    }
}

impl Drop for CommitPipeline {
    fn drop(&mut self) {
        self.stop();
    }
}

impl CommitHandle {
    /// Whether the writer still takes commits (not stopped, not dead):
    /// what a readiness check asks.
    pub fn is_open(&self) -> bool {
        !self.sender.is_disconnected()
    }

    /// Commit `batch` durably; resolves once it is on disk (or failed).
    /// Works on any executor (glommio, tokio, block_on): runtime-agnostic wakers.
    ///
    /// Waits for room when the queue is full. Returns [`StoreError::Closed`]
    /// once the pipeline has shut down (or its writer died), and the engine's
    /// error when the write carrying `batch` failed.
    pub async fn commit(&self, batch: WriteBatch) -> Result<(), StoreError> {
        self.commit_changes(batch).await.map(drop)
    }

    /// [`CommitHandle::commit`] for a batch with mailbox changes: also says
    /// what each change did, in order. Refused changes come back as
    /// [`StoreError::Refused`], with nothing of the batch written.
    pub async fn commit_changes(&self, batch: WriteBatch) -> Result<Vec<Applied>, StoreError> {
        let (done, outcome) = oneshot::channel();
        self.sender
            .send_async(Message::Commit { batch, done })
            .await
            .map_err(|_| StoreError::Closed)?;
        // A dropped `done` means the writer stopped without answering: the
        // batch may or may not be on disk, but it was never acknowledged.
        outcome.await.unwrap_or(Err(StoreError::Closed))
    }

    /// [`CommitHandle::commit`] for plain threads (tools, tests): blocks the caller.
    pub fn commit_blocking(&self, batch: WriteBatch) -> Result<(), StoreError> {
        futures::executor::block_on(self.commit(batch))
    }

    /// [`CommitHandle::commit_changes`] for plain threads: blocks the caller.
    pub fn commit_changes_blocking(&self, batch: WriteBatch) -> Result<Vec<Applied>, StoreError> {
        futures::executor::block_on(self.commit_changes(batch))
    }

    /// Requests waiting for the writer right now (a queue-depth gauge).
    pub fn queued(&self) -> usize {
        self.sender.len()
    }
}

/// Under steady load, [`Store::maintain`] runs after every this many groups.
const MAINTAIN_EVERY: u64 = 16;

/// State of the writer thread.
struct Writer {
    receiver: flume::Receiver<Message>,
    store: Arc<dyn Store>,
    config: PipelineConfig,
    observer: Option<Observer>,
    listener: Option<MailboxListener>,
    /// Resolves mailbox changes (the only place they are resolved).
    sequencer: Sequencer,
    /// A shutdown marker arrived: finish what is queued without blocking, then exit.
    stopping: bool,
    /// A request taken off the queue that did not fit the previous group
    /// (byte limit); it starts the next one.
    held: Option<(WriteBatch, Done)>,
    /// The group's room on disk: read from the store at its first
    /// request, then less what the group's requests take.
    room: Option<Option<DiskRoom>>,
    /// Bytes the group's requests take so far.
    growth: u64,
    /// Requests of the group refused for want of room.
    refused: usize,
    /// The disk was last found full for new mail (until a write with mail
    /// succeeds, or the disk says it has room).
    full: bool,
}

impl Writer {
    fn run(mut self) {
        let max_requests = self.config.max_batch_requests.max(1);
        let mut batches: Vec<WriteBatch> = Vec::with_capacity(max_requests);
        let mut waiters = Vec::with_capacity(max_requests);
        let mut groups = 0u64;
        while let Some((batch, done)) = self.first() {
            let mut bytes = 0;
            self.join(batch, done, &mut batches, &mut waiters, &mut bytes);
            while batches.len() < max_requests && bytes < self.config.max_batch_bytes {
                let Some((batch, done)) = self.next_queued() else {
                    break;
                };
                if bytes + batch.byte_size() > self.config.max_batch_bytes {
                    self.held = Some((batch, done));
                    break;
                }
                self.join(batch, done, &mut batches, &mut waiters, &mut bytes);
            }
            if !batches.is_empty() || self.refused > 0 {
                self.commit(&batches, bytes, &mut waiters);
                groups += 1;
            }
            batches.clear();
            (self.room, self.growth, self.refused) = (None, 0, 0);
            // After the answers, so no waiter pays for it; when idle, or now
            // and then under steady load so that it still makes progress.
            if self.receiver.is_empty() || groups.is_multiple_of(MAINTAIN_EVERY) {
                self.store.maintain();
            }
        }
        // Dropping the receiver now makes every later `commit` fail with
        // `Closed`; requests that slipped in after the marker are dropped
        // unanswered, which their senders also read as `Closed`.
    }

    /// Add a request to the group: its mailbox changes are resolved now, in
    /// order after every request already in it. A refused request is
    /// answered here and left out.
    fn join(
        &mut self,
        mut batch: WriteBatch,
        done: Done,
        batches: &mut Vec<WriteBatch>,
        waiters: &mut Vec<(Done, Vec<Applied>)>,
        bytes: &mut usize,
    ) {
        if let Some(rule) = batch.room_rule() {
            match self.make_room(rule, batch.byte_size() as u64) {
                // Judged here: the store need not judge it again.
                Ok(()) => batch.room_judged(),
                Err(error) => {
                    match &error {
                        StoreError::DiskFull { .. } => self.refused += 1,
                        error => tracing::error!(%error, "cannot read the disk's free space"),
                    }
                    let _ = done.send(Err(error));
                    return;
                }
            }
        }
        match self.sequencer.resolve(&*self.store, &mut batch) {
            Ok(applied) => {
                *bytes += batch.byte_size();
                batches.push(batch);
                waiters.push((done, applied));
            }
            Err(error) => {
                let _ = done.send(Err(error));
            }
        }
    }

    /// Count a request's `bytes` against the group's room, as `rule`
    /// says, or refuse it: each request is judged alone (the disk read
    /// once per group), so a nearly full disk refuses new mail and still
    /// records deliveries, flags and deletions that share its group.
    fn make_room(&mut self, rule: RoomRule, bytes: u64) -> Result<(), StoreError> {
        let room = match self.room {
            Some(room) => room,
            None => match self.store.disk_room() {
                Ok(room) => *self.room.insert(room),
                // The disk cannot be asked (a network filesystem's error):
                // changes to what is stored go ahead, new mail waits.
                Err(error) if rule == RoomRule::Floor => {
                    tracing::warn!(%error, "cannot read the disk's free space; the write goes ahead");
                    return Ok(());
                }
                Err(error) => return Err(error),
            },
        };
        let growth = self.growth.saturating_add(bytes);
        match room {
            Some(room) if !room.fits_under(rule, growth) => Err(room.refusal()),
            _ => {
                self.growth = growth;
                Ok(())
            }
        }
    }

    /// The request that opens the next group: blocks while idle, `None` when it is time to exit.
    fn first(&mut self) -> Option<(WriteBatch, Done)> {
        if let Some(held) = self.held.take() {
            return Some(held);
        }
        if self.stopping {
            return self.next_queued();
        }
        match self.receiver.recv() {
            Ok(Message::Commit { batch, done }) => Some((batch, done)),
            Ok(Message::Shutdown) => {
                self.stopping = true;
                self.next_queued()
            }
            // Unreachable while the pipeline holds a sender; harmless anyway.
            Err(flume::RecvError::Disconnected) => None,
        }
    }

    /// A request already queued, without waiting.
    fn next_queued(&mut self) -> Option<(WriteBatch, Done)> {
        loop {
            match self.receiver.try_recv() {
                Ok(Message::Commit { batch, done }) => return Some((batch, done)),
                Ok(Message::Shutdown) => self.stopping = true,
                Err(_) => return None,
            }
        }
    }

    /// One physical write for the group, then every answer.
    fn commit(
        &mut self,
        batches: &[WriteBatch],
        bytes: usize,
        waiters: &mut Vec<(Done, Vec<Applied>)>,
    ) {
        let started = Instant::now();
        let outcome = match batches.is_empty() {
            // Every request was refused: nothing to write.
            true => Ok(()),
            false => self.store.write(batches, self.config.sync),
        };
        let write_refused = matches!(outcome, Err(StoreError::DiskFull { .. }));
        let added_bodies = outcome.is_ok() && batches.iter().any(WriteBatch::holds_new_mail);
        let disk_full = self.refused > 0 || write_refused;
        // While the disk was full, a write without mail cannot tell that
        // room came back: ask the disk itself.
        let room_again = self.full
            && !disk_full
            && outcome.is_ok()
            && (added_bodies
                || matches!(self.store.disk_room(), Ok(room) if room.is_none_or(|r| r.fits(0))));
        self.full = disk_full || (self.full && !room_again);
        let report = CommitReport {
            requests: batches.len(),
            ops: batches.iter().map(WriteBatch::len).sum(),
            bytes,
            latency: started.elapsed(),
            ok: outcome.is_ok(),
            disk_full,
            refused: self.refused + if write_refused { batches.len() } else { 0 },
            room_again,
        };
        match &outcome {
            // Said once per episode by the observer, not once per write.
            Err(StoreError::DiskFull { .. }) => {}
            Err(error) => {
                tracing::error!(%error, requests = report.requests, "group commit failed")
            }
            Ok(_) => {}
        }
        if let Some(observer) = &self.observer {
            observer(&report);
        }
        let changed = self.sequencer.finish_group(outcome.is_ok());
        // News first, answers after: a session that changed its own mailbox
        // (APPEND, COPY into it) has heard of it by the time its commit
        // returns, so it reports EXISTS before its tagged OK.
        if let Some(listener) = &self.listener {
            for user in &changed {
                listener(user);
            }
        }
        for (done, applied) in waiters.drain(..) {
            // The waiter may have given up (its future dropped): nothing to tell.
            let _ = done.send(outcome.clone().map(|()| applied));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Family;

    /// A store whose every write is a bug: it panics, once `open` (a
    /// gate the test may hold shut to queue requests behind the first).
    struct Panicking {
        open: std::sync::Mutex<bool>,
        opened: std::sync::Condvar,
    }

    impl Panicking {
        fn new(open: bool) -> Arc<Panicking> {
            Arc::new(Panicking {
                open: std::sync::Mutex::new(open),
                opened: std::sync::Condvar::new(),
            })
        }

        fn open(&self) {
            *self.open.lock().unwrap() = true;
            self.opened.notify_all();
        }
    }

    impl Store for Panicking {
        fn write(&self, _: &[WriteBatch], _: bool) -> Result<(), StoreError> {
            let open = self.open.lock().unwrap();
            drop(self.opened.wait_while(open, |open| !*open).unwrap());
            panic!("injected: a bug in the write path");
        }
        fn get(&self, _: Family, _: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
            Ok(None)
        }
        fn scan(
            &self,
            _: Family,
            _: &[u8],
            _: Option<&[u8]>,
            _: &mut dyn FnMut(&[u8], &[u8]) -> bool,
        ) -> Result<(), StoreError> {
            Ok(())
        }
    }

    #[test]
    fn a_writer_that_died_fails_every_commit_and_says_it_is_closed() {
        let (pipeline, commits) =
            CommitPipeline::start(Panicking::new(true), PipelineConfig::default(), None);
        assert!(commits.is_open());
        let mut batch = WriteBatch::new();
        batch.put(Family::Mailboxes, b"k".to_vec(), b"v".to_vec());
        assert!(matches!(
            commits.commit_blocking(batch.clone()),
            Err(StoreError::Closed)
        ));
        let deadline = Instant::now() + Duration::from_secs(10);
        while commits.is_open() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!commits.is_open(), "a readiness check sees it");
        assert!(matches!(
            commits.commit_blocking(batch),
            Err(StoreError::Closed)
        ));
        drop(pipeline);
    }

    #[test]
    fn requests_queued_behind_a_dying_writer_are_answered_too() {
        // The first write waits until many requests are queued, then dies.
        let store = Panicking::new(false);
        let config = PipelineConfig {
            max_batch_requests: 1,
            ..PipelineConfig::default()
        };
        let (pipeline, commits) = CommitPipeline::start(store.clone(), config, None);
        let waiters: Vec<_> = (0..8u8)
            .map(|n| {
                let commits = commits.clone();
                std::thread::spawn(move || {
                    let mut batch = WriteBatch::new();
                    batch.put(Family::Mailboxes, vec![n], b"v".to_vec());
                    commits.commit_blocking(batch)
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(200));
        store.open();
        for waiter in waiters {
            assert!(matches!(waiter.join().unwrap(), Err(StoreError::Closed)));
        }
        drop(pipeline);
    }
}
