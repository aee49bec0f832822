//! The ringpost store.
//!
//! Everything ringpost keeps lives behind the engine-neutral [`Store`] trait:
//! ordered key/value families written in atomic batches. Two engines implement
//! it: RocksDB (the default, embedded, feature `rocksdb`) and memory (tests and
//! benchmarks). No RocksDB type appears in the trait, so an engine on a
//! distributed database can slot in later.
//!
//! Durability comes from the [`CommitPipeline`]: many writers hand over their
//! batches; one writer thread drains everything pending into one physical
//! write with `sync = true` (group commit) and then wakes every waiter.
//!
//! The typed records that SMTP and the queue share live in [`spool`]:
//! message ids, envelopes, queue entries and their key layouts. Accounts
//! live in [`users`], mailboxes in [`mailbox`].
//!
//! # Layout
//! - [`Store`], [`Family`], [`WriteBatch`]: the seam.
//! - [`memory`]: the in-memory engine.
//! - `rocks` (feature `rocksdb`): the RocksDB engine.
//! - [`pipeline`]: group commit.
//! - [`spool`]: typed records of the spool.
//! - [`users`]: accounts (name, password hash, settings).
//! - [`sieve`]: users' Sieve scripts and their vacation memory.
//! - [`mailbox`]: mailboxes, their rows, and the changes the commit writer
//!   sequences (UIDs, modseqs, body references).
//! - [`conformance`]: the test suite every engine passes.
#![deny(missing_docs)]

mod codec;
pub mod conformance;
mod error;
pub mod events;
pub mod mailbox;
pub mod memory;
pub mod pipeline;
pub mod quota;
#[cfg(feature = "rocksdb")]
pub mod rocks;
pub mod sieve;
pub mod spool;
pub mod state;
pub mod suppression;
pub mod users;

pub use error::StoreError;
pub use mailbox::Change;
pub use memory::MemoryStore;
pub use pipeline::{CommitHandle, CommitPipeline, CommitReport, MailboxListener, PipelineConfig};
#[cfg(feature = "rocksdb")]
pub use rocks::{RocksOptions, RocksStore};

/// A kind of record; each is its own ordered key space (a RocksDB column family).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// Message id → raw message bytes.
    Blobs,
    /// Message id → envelope.
    Envelopes,
    /// Due time ‖ message id ‖ domain → queue entry.
    Queue,
    /// User ‖ UIDVALIDITY ‖ uid → mailbox row ([`mailbox`]).
    Mailboxes,
    /// User ‖ mailbox name → mailbox metadata ([`mailbox`]).
    MailboxMeta,
    /// Account name → account ([`users`]).
    Users,
    /// Message id → how many mailbox rows point at its body ([`mailbox`]).
    MessageRefs,
    /// Scope ‖ address → why mail to it is not sent ([`suppression`]).
    Suppressions,
    /// Time ‖ source ‖ sequence → a delivery event for the webhook ([`events`]).
    Events,
    /// Name → a small value the server keeps across restarts ([`state`]).
    State,
}

impl Family {
    /// Every family, in a fixed order.
    pub const ALL: [Family; 10] = [
        Family::Blobs,
        Family::Envelopes,
        Family::Queue,
        Family::Mailboxes,
        Family::MailboxMeta,
        Family::Users,
        Family::MessageRefs,
        Family::Suppressions,
        Family::Events,
        Family::State,
    ];

    /// Stable name (used as the RocksDB column family name).
    pub fn name(self) -> &'static str {
        match self {
            Family::Blobs => "blobs",
            Family::Envelopes => "envelopes",
            Family::Queue => "queue",
            Family::Mailboxes => "mailboxes",
            Family::MailboxMeta => "mailbox_meta",
            Family::Users => "users",
            Family::MessageRefs => "message_refs",
            Family::Suppressions => "suppressions",
            Family::Events => "events",
            Family::State => "state",
        }
    }
}

/// One change inside a [`WriteBatch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Set `key` to `value`.
    Put {
        /// Family written.
        family: Family,
        /// Key.
        key: Vec<u8>,
        /// Value.
        value: Vec<u8>,
    },
    /// Remove `key` (no error when absent).
    Delete {
        /// Family written.
        family: Family,
        /// Key.
        key: Vec<u8>,
    },
}

/// Free disk space against the reserve a store keeps ([`Store::disk_room`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskRoom {
    /// Bytes free.
    pub free: u64,
    /// Bytes new mail must leave free.
    pub reserve: u64,
}

impl DiskRoom {
    /// Whether `bytes` more (as the engine writes them: twice, WAL and
    /// table) fit above the reserve.
    pub fn fits(&self, bytes: u64) -> bool {
        self.free >= self.reserve.saturating_add(bytes.saturating_mul(2))
    }

    /// Whether `bytes` more fit as `rule` says.
    pub fn fits_under(&self, rule: RoomRule, bytes: u64) -> bool {
        match rule {
            RoomRule::Reserve => self.fits(bytes),
            RoomRule::Floor => self.floor().fits(bytes),
        }
    }

    /// The room left to changes that add no mail: a quarter of the
    /// reserve is theirs.
    pub fn floor(&self) -> DiskRoom {
        DiskRoom {
            free: self.free,
            reserve: self.reserve / 4,
        }
    }

    /// The refusal for a write that does not fit.
    pub fn refusal(&self) -> StoreError {
        StoreError::DiskFull {
            free: self.free,
            reserve: self.reserve,
        }
    }
}

/// Changes applied all together or not at all.
///
/// Besides plain puts and deletes a batch may carry mailbox [`Change`]s,
/// which only the [`CommitPipeline`] can apply: its writer turns them into
/// puts and deletes in commit order (see [`mailbox`]). A [`Store`] refuses a
/// batch that still carries some.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteBatch {
    ops: Vec<Op>,
    changes: Vec<Change>,
    bytes: usize,
    /// Held to no room check, whatever it holds: it records what happened
    /// to mail ([`WriteBatch::pass_reserve`]).
    reserve_passed: bool,
    /// The commit writer judged its room already: the store does not.
    room_judged: bool,
}

/// What a nearly full disk holds a batch to ([`Store::disk_room`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoomRule {
    /// New mail: the whole reserve stays free.
    Reserve,
    /// Changes to what is stored: a quarter of the reserve stays free,
    /// so the engine itself never meets a full disk.
    Floor,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }
    /// Add a put.
    pub fn put(&mut self, family: Family, key: Vec<u8>, value: Vec<u8>) {
        self.bytes += key.len() + value.len();
        self.ops.push(Op::Put { family, key, value });
    }
    /// Add a delete.
    pub fn delete(&mut self, family: Family, key: Vec<u8>) {
        self.bytes += key.len();
        self.ops.push(Op::Delete { family, key });
    }
    /// Move every change of `other` to the end of this batch, so records
    /// built separately (a delivery outcome and the bounce it causes) commit
    /// together.
    pub fn append(&mut self, other: WriteBatch) {
        self.bytes += other.bytes;
        self.reserve_passed |= other.reserve_passed;
        self.room_judged &= other.room_judged;
        self.ops.extend(other.ops);
        self.changes.extend(other.changes);
    }
    /// Add a mailbox change, applied by the commit writer.
    pub fn change(&mut self, change: Change) {
        self.changes.push(change);
    }
    /// The mailbox changes not yet turned into puts and deletes.
    pub fn changes(&self) -> &[Change] {
        &self.changes
    }
    /// Take the mailbox changes out (the commit writer resolves them).
    pub(crate) fn take_changes(&mut self) -> Vec<Change> {
        std::mem::take(&mut self.changes)
    }
    /// The changes, in order.
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }
    /// Whether it stores a message body.
    pub fn adds_bodies(&self) -> bool {
        self.ops.iter().any(|op| {
            matches!(
                op,
                Op::Put {
                    family: Family::Blobs,
                    ..
                }
            )
        })
    }

    /// What a nearly full disk holds it to, if its room is still to be
    /// judged: new mail the reserve, changes to what is stored
    /// (deliveries recorded, flags, deletions: what the reserve is kept
    /// for) only the floor.
    pub fn room_rule(&self) -> Option<RoomRule> {
        match (self.room_judged || self.reserve_passed, self.adds_bodies()) {
            (true, _) => None,
            (false, false) => Some(RoomRule::Floor),
            (false, true) => Some(RoomRule::Reserve),
        }
    }

    /// Whether it stores new mail, held to the reserve (a DSN in a
    /// delivery's outcome is not).
    pub fn holds_new_mail(&self) -> bool {
        !self.reserve_passed && self.adds_bodies()
    }

    /// Let it pass every room check, body and all: a delivery's outcome
    /// with its DSN. Refusing it would send the mail again, to whoever
    /// took it, at every retry; it is small, and what it records frees
    /// more than it takes.
    pub fn pass_reserve(&mut self) {
        self.reserve_passed = true;
    }

    /// Its room was judged (the commit writer, once per request): the
    /// store does not judge it again.
    pub(crate) fn room_judged(&mut self) {
        self.room_judged = true;
    }
    /// Number of puts and deletes.
    pub fn len(&self) -> usize {
        self.ops.len()
    }
    /// True when there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty() && self.changes.is_empty()
    }
    /// Key and value bytes carried.
    pub fn byte_size(&self) -> usize {
        self.bytes
    }
}

/// The error a [`Store`] gives for batches whose mailbox changes were not
/// resolved by the commit pipeline, if any batch has some.
pub fn unresolved_changes(batches: &[WriteBatch]) -> Result<(), StoreError> {
    if batches.iter().any(|b| !b.changes.is_empty()) {
        return Err(StoreError::Engine(
            "mailbox changes must be committed through the commit pipeline".into(),
        ));
    }
    Ok(())
}

/// Bytes held by a cache, and the most it may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheUsage {
    /// Bytes held now.
    pub used: usize,
    /// Capacity in bytes.
    pub capacity: usize,
}

/// What an engine says of its own state (for metrics and alerts); each
/// figure summed over the families.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EngineHealth {
    /// Bytes of data files on disk (tables, blob files, body segments).
    pub disk_bytes: u64,
    /// Bytes of body segment files (part of `disk_bytes`).
    pub segment_bytes: u64,
    /// Bytes of live bodies in the segment files; the rest is garbage
    /// that segment compaction reclaims.
    pub segment_live_bytes: u64,
    /// Bytes in memtables (written, not yet flushed).
    pub memtable_bytes: u64,
    /// Bytes compaction is estimated to have to rewrite.
    pub pending_compaction_bytes: u64,
    /// Writes are stopped until compaction catches up.
    pub write_stopped: bool,
    /// Writes are being slowed to this many bytes a second (0: not slowed).
    pub delayed_write_rate: u64,
}

/// A value lent by a [`Store`] without copying; see [`Store::get_pinned`].
pub struct Pinned<'a>(Box<dyn AsRef<[u8]> + 'a>);

impl<'a> Pinned<'a> {
    /// Wrap whatever holds the bytes (an engine handle, or a plain `Vec`).
    pub fn new(holder: impl AsRef<[u8]> + 'a) -> Pinned<'a> {
        Pinned(Box::new(holder))
    }
}

impl std::ops::Deref for Pinned<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        (*self.0).as_ref()
    }
}

/// An ordered, durable key/value store with families and atomic batches.
///
/// Implementations are shared between threads; `write` may block (it is
/// called from the commit pipeline's writer thread, never from a shard).
pub trait Store: Send + Sync + 'static {
    /// Apply every batch atomically, as one unit; with `sync`, return only once
    /// the data would survive a crash (fsync). A batch that still carries
    /// mailbox changes is refused ([`unresolved_changes`]).
    fn write(&self, batches: &[WriteBatch], sync: bool) -> Result<(), StoreError>;

    /// The value at `key`, if any.
    fn get(&self, family: Family, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;

    /// The value at `key`, lent where the engine holds it (RocksDB's block
    /// or blob cache, a memtable) instead of copied out: message bodies on
    /// their way to a socket. The engine keeps it while the [`Pinned`] lives,
    /// so hold it only as long as the write that needs it.
    fn get_pinned(&self, family: Family, key: &[u8]) -> Result<Option<Pinned<'_>>, StoreError> {
        Ok(self.get(family, key)?.map(Pinned::new))
    }

    /// The value at `key` if the engine can answer from memory alone (its
    /// memtables and caches): `Some(found)`, where `found` is the same as
    /// [`Store::get`]'s; `None` when answering would read the disk. An
    /// executor thread may read what is hot itself and hand only the rest
    /// to a blocking pool. The default answers nothing from memory.
    fn get_in_memory(
        &self,
        family: Family,
        key: &[u8],
    ) -> Result<Option<Option<Vec<u8>>>, StoreError> {
        let _ = (family, key);
        Ok(None)
    }

    /// How full the engine's in-memory cache of message bodies is, if it
    /// has one (for metrics).
    fn body_cache_usage(&self) -> Option<CacheUsage> {
        None
    }

    /// How the engine is doing (disk use, backlog, stalls), if it can say.
    fn health(&self) -> Option<EngineHealth> {
        None
    }

    /// Visit keys in `[start, end)` (no end: to the last key) in ascending order
    /// until `visit` returns false.
    fn scan(
        &self,
        family: Family,
        start: &[u8],
        end: Option<&[u8]>,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StoreError>;

    /// Flush whatever is buffered so a clean reopen is fast. Called at shutdown.
    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// The disk's free space and the reserve new mail must leave of it,
    /// when the store keeps one (None: no limit is kept). The commit
    /// pipeline refuses new bodies that would eat into the reserve one
    /// request at a time, so the rest of a group still commits.
    fn disk_room(&self) -> Result<Option<DiskRoom>, StoreError> {
        Ok(None)
    }

    /// Housekeeping the engine keeps off the commit path (the RocksDB
    /// engine: unlinking emptied segment files and compacting sparse
    /// ones). The commit writer calls it after answering a group, when no
    /// request is waiting, and every few groups under steady load. Its
    /// failures are the engine's to log: no write depends on it.
    fn maintain(&self) {}
}
