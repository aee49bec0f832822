//! Large message bodies, written once: segment files beside the database.
//!
//! RocksDB writes every value to its WAL, and again to a table or blob file
//! when the memtable is flushed, so a 100 KB body costs the disk 200 KB. A
//! body of at least [`RocksOptions::segment_min_bytes`](super::RocksOptions)
//! is instead appended to a segment file (`segments/NNNNNNNN.seg` in the
//! store's directory), and the WAL carries only its place: 25 bytes.
//!
//! # Records
//! Two private column families beside the public ones:
//! - `body_places`: blob key → [`Place`] (segment, offset, length, CRC-32).
//! - `body_segments`: segment (u32, big-endian) ‖ blob key → length. The
//!   same facts ordered by segment, so that the bodies of one segment are a
//!   prefix scan (compaction) and the live bytes of each are one scan at open.
//!
//! A blob key lives in `blobs` (small bodies) or in `body_places`; a large
//! put also deletes the key from `blobs`, and a read tries `blobs` first, so
//! a small body put over a large one wins at once, and the large one's place
//! goes when the key is deleted.
//!
//! # Durability
//! A write appends its large bodies to the open segment and fdatasyncs it
//! (a segment filled in mid-write is synced before the next is opened),
//! then writes its batch, places included, to RocksDB. A crash between the
//! two leaves bytes no place points at, never a place that points at bytes
//! not on disk; a new segment's directory entry is synced before any place
//! names it. Bytes go at explicit offsets (`pwrite`), so a failed append is
//! overwritten by the next one. The segment is synced even for a write
//! RocksDB does not sync: a later synced write makes its places durable.
//!
//! # Space
//! Live bytes per segment are counted at open and kept as bodies come and
//! go. The rest happens in [`Segments::maintain`], which the commit writer
//! calls after answering a group (`Store::maintain`), so no waiter pays for
//! it: once the WAL is synced (making the deletes durable), sealed segments
//! with no live body are unlinked, and a sealed segment less than half live
//! is compacted, up to [`COMPACT_BYTES_PER_STEP`] of its live bodies copied
//! to the open segment and their places rewritten per call. Its failures
//! are logged, never reported as a write's: a segment compaction cannot
//! empty is left alone until the next open.
//!
//! Segment numbers are never reused: the highest one ever named is kept in
//! `body_segments` (under the reserved segment `u32::MAX`), written with
//! the first place in each new segment.
//!
//! # Reads
//! A read looks up the place and `pread`s the bytes through a cached file
//! handle. Compaction may unlink a segment between the two, so a segment
//! that is gone means: look the place up again, once.
//!
//! # Limits
//! A small body put over a large one leaves the large one's place (reads
//! prefer `blobs`): its bytes count as live until the key is deleted. Blob
//! keys are message ids, written once, so this does not happen in ringpost.

use crate::StoreError;
use rocksdb::{ColumnFamily, WriteBatch as RocksBatch, WriteOptions, DB};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

/// Column family: blob key → place.
pub(super) const PLACES: &str = "body_places";
/// Column family: segment ‖ blob key → length.
pub(super) const BY_SEGMENT: &str = "body_segments";

/// Bytes of live bodies one compaction step copies, at most.
const COMPACT_BYTES_PER_STEP: u64 = 8 << 20;
/// `body_segments` key of the high-water mark: the next segment number.
/// Segment `u32::MAX` is reserved for it.
const NEXT_SEGMENT_KEY: &[u8] = b"\xff\xff\xff\xffnext";
/// After compaction found no room on the disk, it waits this long before
/// trying again (each try syncs the WAL).
const NO_ROOM_PAUSE: Duration = Duration::from_secs(10);
/// Removed segments remembered, so that a reader that opened one just
/// before it went cannot cache its handle (and keep its disk space).
const REMEMBERED_REMOVALS: usize = 64;
/// Version byte of an encoded [`Place`].
const PLACE_V1: u8 = 1;
/// Encoded size of a [`Place`].
const PLACE_LEN: usize = 1 + 4 + 8 + 8 + 4;

/// Where a body lies: `len` bytes at `offset` of segment `segment`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Place {
    segment: u32,
    offset: u64,
    len: u64,
    /// CRC-32 (IEEE) of the bytes: a torn or damaged segment is told, not served.
    crc: u32,
}

impl Place {
    fn encode(&self) -> [u8; PLACE_LEN] {
        let mut out = [0; PLACE_LEN];
        out[0] = PLACE_V1;
        out[1..5].copy_from_slice(&self.segment.to_be_bytes());
        out[5..13].copy_from_slice(&self.offset.to_be_bytes());
        out[13..21].copy_from_slice(&self.len.to_be_bytes());
        out[21..25].copy_from_slice(&self.crc.to_be_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Result<Place, StoreError> {
        if bytes.len() != PLACE_LEN || bytes[0] != PLACE_V1 {
            return Err(corrupt(format!(
                "body place of {} bytes, version {:?}",
                bytes.len(),
                bytes.first()
            )));
        }
        let be64 = |at: usize| u64::from_be_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        Ok(Place {
            segment: u32::from_be_bytes(bytes[1..5].try_into().expect("4 bytes")),
            offset: be64(5),
            len: be64(13),
            crc: u32::from_be_bytes(bytes[21..25].try_into().expect("4 bytes")),
        })
    }
}

fn corrupt(detail: String) -> StoreError {
    StoreError::Corrupt {
        family: PLACES,
        detail,
    }
}

/// `body_segments` key of `key` in `segment`.
fn by_segment_key(segment: u32, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + key.len());
    out.extend_from_slice(&segment.to_be_bytes());
    out.extend_from_slice(key);
    out
}

/// Live bodies of one segment, and its size on disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct SegmentStats {
    size: u64,
    live_bytes: u64,
    live_bodies: u64,
}

impl SegmentStats {
    /// Less than half of it is live: worth compacting.
    fn sparse(&self) -> bool {
        self.live_bytes < self.size / 2
    }
}

/// The segment bodies are appended to.
struct OpenSegment {
    id: u32,
    file: File,
    len: u64,
    /// Bytes appended since its last fdatasync.
    dirty: bool,
}

/// What only the writer touches.
struct WriterState {
    open: Option<OpenSegment>,
    next_id: u32,
    stats: BTreeMap<u32, SegmentStats>,
    /// Live bodies in all segments.
    live_bodies: u64,
    /// Segments sealed since the counts were last settled: emptied ones
    /// among them go too.
    sealed: Vec<u32>,
    /// Sealed segments (and their sizes) with no live body, unlinked by
    /// the next [`Segments::maintain`] once it has synced the WAL (the write
    /// that emptied them may not have been synced).
    emptied: Vec<(u32, u64)>,
    /// Segments compaction found it cannot empty (a body unreadable, or the
    /// counts wrong): left alone until the next open.
    stuck: BTreeSet<u32>,
    /// The disk had no room for compaction's copies: no try before this.
    no_room_until: Option<Instant>,
}

/// Read handles by segment, and the segments removed lately.
#[derive(Default)]
struct Readers {
    open: HashMap<u32, Arc<File>>,
    removed: VecDeque<u32>,
}

/// Segment sizes, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct SegmentUsage {
    /// Bytes of segment files.
    pub size: u64,
    /// Bytes of live bodies in them.
    pub live: u64,
}

/// Read handles kept open at most; past it they are dropped and reopened.
const MAX_READERS: usize = 256;

/// The segment files of one store.
pub(super) struct Segments {
    dir: PathBuf,
    read_only: bool,
    /// Bodies of at least this many bytes go to segments.
    min_bytes: u64,
    /// A segment is sealed, and a new one opened, past this size.
    file_bytes: u64,
    writer: Mutex<WriterState>,
    readers: RwLock<Readers>,
    /// Bytes of segment files, and of live bodies in them: read by metrics
    /// without waiting for the writer.
    size_bytes: AtomicU64,
    live_bytes: AtomicU64,
}

impl Segments {
    /// The segments of the store at `store_dir`, their live bytes counted
    /// from `body_segments`. `min_bytes`: bodies that go to segments
    /// (`u64::MAX`: none, though those stored before are still read and
    /// deleted). A writable open removes the segment files no live body is
    /// in (bytes a crash left unreferenced).
    pub(super) fn open(
        store_dir: &Path,
        (min_bytes, file_bytes): (u64, u64),
        db: &DB,
        read_only: bool,
    ) -> Result<Segments, StoreError> {
        let dir = store_dir.join("segments");
        let mut stats: BTreeMap<u32, SegmentStats> = BTreeMap::new();
        let mut next_id = 0u32;
        if let Some(cf) = db.cf_handle(BY_SEGMENT) {
            let mut iter = db.raw_iterator_cf(cf);
            iter.seek_to_first();
            while let (Some(key), Some(value)) = (iter.key(), iter.value()) {
                if key == NEXT_SEGMENT_KEY {
                    let next = value.try_into().map(u32::from_be_bytes);
                    next_id = next_id.max(next.map_err(|_| corrupt("bad segment mark".into()))?);
                    iter.next();
                    continue;
                }
                let segment = key
                    .get(..4)
                    .map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")))
                    .ok_or_else(|| corrupt("short body_segments key".into()))?;
                let len = value
                    .try_into()
                    .map(u64::from_be_bytes)
                    .map_err(|_| corrupt("body_segments length not 8 bytes".into()))?;
                let entry = stats.entry(segment).or_default();
                entry.live_bytes = entry.live_bytes.saturating_add(len);
                entry.live_bodies += 1;
                iter.next();
            }
            iter.status().map_err(StoreError::engine)?;
        }
        if let Some(last) = stats.keys().next_back() {
            next_id = next_id.max(last.saturating_add(1));
        }
        if !read_only {
            std::fs::create_dir_all(&dir).map_err(StoreError::engine)?;
            sync_dir(store_dir).map_err(StoreError::engine)?;
        }
        // A file no place names (left by a crash) goes, and its number may
        // be used again: nothing ever named it durably.
        for (id, size) in segment_files(&dir).map_err(StoreError::engine)? {
            match stats.get_mut(&id) {
                Some(entry) => entry.size = size,
                None if !read_only => {
                    std::fs::remove_file(segment_path(&dir, id)).map_err(StoreError::engine)?
                }
                None => {}
            }
        }
        let live_bodies = stats.values().map(|s| s.live_bodies).sum();
        let size_bytes = stats.values().map(|s| s.size).sum();
        let live_bytes = stats.values().map(|s| s.live_bytes).sum();
        Ok(Segments {
            dir,
            read_only,
            min_bytes,
            file_bytes,
            writer: Mutex::new(WriterState {
                open: None,
                next_id,
                stats,
                live_bodies,
                sealed: Vec::new(),
                emptied: Vec::new(),
                stuck: BTreeSet::new(),
                no_room_until: None,
            }),
            readers: RwLock::default(),
            size_bytes: AtomicU64::new(size_bytes),
            live_bytes: AtomicU64::new(live_bytes),
        })
    }

    /// Start a write: the writer's state is held until it is done.
    pub(super) fn begin(&self) -> SegmentWrite<'_> {
        SegmentWrite {
            segments: self,
            state: self.writer.lock().unwrap_or_else(|p| p.into_inner()),
            touched: HashMap::new(),
            changes: Vec::new(),
        }
    }

    /// The body at `key`, if it lives in a segment.
    pub(super) fn read(&self, db: &DB, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(places) = db.cf_handle(PLACES) else {
            return Ok(None);
        };
        for _ in 0..2 {
            let Some(raw) = db.get_pinned_cf(places, key).map_err(StoreError::engine)? else {
                return Ok(None);
            };
            match self.read_place(&Place::decode(&raw)?) {
                Err(SegmentGone) => continue,
                Ok(read) => return read.map(Some),
            }
        }
        Err(corrupt(if self.read_only {
            "a body's segment file is gone (moved or deleted since this read-only open)".into()
        } else {
            "a body's segment file is missing (see the store's segments/)".into()
        }))
    }

    /// The body at the place encoded in `place` (a `body_places` value);
    /// `None` when its segment is gone (compacted or deleted since).
    pub(super) fn read_encoded(&self, place: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        match self.read_place(&Place::decode(place)?) {
            Ok(read) => read.map(Some),
            Err(SegmentGone) => Ok(None),
        }
    }

    fn read_place(&self, place: &Place) -> Result<Result<Vec<u8>, StoreError>, SegmentGone> {
        let file = match self.reader(place.segment)? {
            Ok(file) => file,
            Err(e) => return Ok(Err(e)),
        };
        // A damaged place must not make us allocate what it says.
        let size = match file.metadata() {
            Ok(meta) => meta.len(),
            Err(e) => return Ok(Err(StoreError::engine(e))),
        };
        if place.offset.saturating_add(place.len) > size {
            return Ok(Err(corrupt(format!(
                "body at {}+{} past the end of segment {} ({size} bytes)",
                place.offset, place.len, place.segment
            ))));
        }
        let mut body = vec![0; place.len as usize];
        if let Err(e) = file.read_exact_at(&mut body, place.offset) {
            return Ok(Err(StoreError::engine(e)));
        }
        if crc32fast::hash(&body) != place.crc {
            return Ok(Err(corrupt(format!(
                "checksum mismatch in segment {} at {}",
                place.segment, place.offset
            ))));
        }
        Ok(Ok(body))
    }

    /// A read handle on segment `id`, opened on first use. Only a file
    /// that is not there is gone; any other failure to open it (out of
    /// descriptors, an I/O error) is an error to retry, not a missing body.
    fn reader(&self, id: u32) -> Result<Result<Arc<File>, StoreError>, SegmentGone> {
        let readers = self.readers.read().unwrap_or_else(|p| p.into_inner());
        if let Some(file) = readers.open.get(&id) {
            return Ok(Ok(file.clone()));
        }
        drop(readers);
        let file = match File::open(segment_path(&self.dir, id)) {
            Ok(file) => Arc::new(file),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(SegmentGone),
            Err(e) => return Ok(Err(StoreError::engine(e))),
        };
        let mut readers = self.readers.write().unwrap_or_else(|p| p.into_inner());
        if readers.removed.contains(&id) {
            return Err(SegmentGone);
        }
        if readers.open.len() >= MAX_READERS {
            readers.open.clear();
        }
        Ok(Ok(readers.open.entry(id).or_insert(file).clone()))
    }

    /// Segment sizes now.
    pub(super) fn usage(&self) -> SegmentUsage {
        SegmentUsage {
            size: self.size_bytes.load(Ordering::Relaxed),
            live: self.live_bytes.load(Ordering::Relaxed),
        }
    }

    /// Unlink segment `id` and forget its read handle.
    fn remove(&self, id: u32) -> io::Result<()> {
        let mut readers = self.readers.write().unwrap_or_else(|p| p.into_inner());
        readers.open.remove(&id);
        readers.removed.push_back(id);
        if readers.removed.len() > REMEMBERED_REMOVALS {
            readers.removed.pop_front();
        }
        drop(readers);
        match std::fs::remove_file(segment_path(&self.dir, id)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Unlink emptied segments and compact a sparse one a step, once the
    /// WAL is synced (see the module docs). `room` says whether the disk
    /// has room for that many bytes more. Failures are logged.
    pub(super) fn maintain(&self, db: &DB, room: &dyn Fn(u64) -> Result<(), StoreError>) {
        let mut work = self.begin();
        if work.state.emptied.is_empty() && work.victim().is_none() {
            return;
        }
        // Deletes made by unsynced writes must be durable before the bytes
        // they free can go.
        if let Err(error) = db.flush_wal(true) {
            tracing::warn!(%error, "cannot sync the WAL; segment files are kept for now");
            return;
        }
        work.remove_emptied();
        if let Err(error) = work.compact_step(db, room) {
            tracing::warn!(%error, "segment compaction failed; that segment is left for now");
        }
    }
}

/// A segment file was unlinked under a reader (compaction moved its bodies).
struct SegmentGone;

/// One body counted in or out of a segment.
#[derive(Debug, Clone, Copy)]
struct Change {
    segment: u32,
    bytes: u64,
    added: bool,
}

/// One write's use of the segments: bodies appended, places planned. The
/// counts change only in [`SegmentWrite::committed`], once RocksDB took the
/// batch.
pub(super) struct SegmentWrite<'a> {
    segments: &'a Segments,
    state: MutexGuard<'a, WriterState>,
    /// Places this write set (Some) or removed (None) so far, by key: a
    /// later op on the same key in the same write sees them.
    touched: HashMap<Vec<u8>, Option<Place>>,
    changes: Vec<Change>,
}

impl SegmentWrite<'_> {
    /// Whether a body of `len` bytes goes to a segment.
    pub(super) fn takes(&self, len: usize) -> bool {
        len as u64 >= self.segments.min_bytes
    }

    /// Put a large body: append it, and record its place in `batch`.
    pub(super) fn put(
        &mut self,
        db: &DB,
        key: &[u8],
        body: &[u8],
        blobs: &ColumnFamily,
        batch: &mut RocksBatch,
    ) -> Result<(), StoreError> {
        self.forget(db, key, batch)?;
        let place = self.append(db, body, batch)?;
        self.place(db, key, place, batch)?;
        batch.delete_cf(blobs, key);
        Ok(())
    }

    /// Delete whatever body `key` has in a segment (the caller deletes the
    /// inline one).
    pub(super) fn delete(
        &mut self,
        db: &DB,
        key: &[u8],
        batch: &mut RocksBatch,
    ) -> Result<(), StoreError> {
        self.forget(db, key, batch)
    }

    /// Make the appended bodies durable: before RocksDB's write, which names them.
    pub(super) fn sync(&mut self) -> Result<(), StoreError> {
        if let Some(open) = self.state.open.as_mut().filter(|open| open.dirty) {
            open.file.sync_data().map_err(StoreError::engine)?;
            open.dirty = false;
        }
        Ok(())
    }

    /// RocksDB took the batch: count the changes.
    pub(super) fn committed(mut self) {
        self.settle();
    }

    /// The place `key` has now, in this write or in the store.
    fn current(&self, db: &DB, key: &[u8]) -> Result<Option<Place>, StoreError> {
        if let Some(place) = self.touched.get(key) {
            return Ok(*place);
        }
        // No live body anywhere: nothing to look up (the common case of a
        // store that only ever saw small bodies).
        if self.state.live_bodies == 0 && self.changes.is_empty() {
            return Ok(None);
        }
        let places = cf(db, PLACES)?;
        db.get_pinned_cf(places, key)
            .map_err(StoreError::engine)?
            .map(|raw| Place::decode(&raw))
            .transpose()
    }

    /// Drop `key`'s place, if it has one.
    fn forget(&mut self, db: &DB, key: &[u8], batch: &mut RocksBatch) -> Result<(), StoreError> {
        if let Some(old) = self.current(db, key)? {
            batch.delete_cf(cf(db, PLACES)?, key);
            batch.delete_cf(cf(db, BY_SEGMENT)?, by_segment_key(old.segment, key));
            self.changes.push(Change {
                segment: old.segment,
                bytes: old.len,
                added: false,
            });
            self.touched.insert(key.to_vec(), None);
        }
        Ok(())
    }

    /// Record `place` as `key`'s.
    fn place(
        &mut self,
        db: &DB,
        key: &[u8],
        place: Place,
        batch: &mut RocksBatch,
    ) -> Result<(), StoreError> {
        batch.put_cf(cf(db, PLACES)?, key, place.encode());
        batch.put_cf(
            cf(db, BY_SEGMENT)?,
            by_segment_key(place.segment, key),
            place.len.to_be_bytes(),
        );
        self.changes.push(Change {
            segment: place.segment,
            bytes: place.len,
            added: true,
        });
        self.touched.insert(key.to_vec(), Some(place));
        Ok(())
    }

    /// Write `body` at the end of the open segment (opening one when there
    /// is none or it is full; `batch` then records the new high-water mark).
    /// Not yet synced.
    fn append(
        &mut self,
        db: &DB,
        body: &[u8],
        batch: &mut RocksBatch,
    ) -> Result<Place, StoreError> {
        let len = body.len() as u64;
        let full = self.state.open.as_ref().is_none_or(|open| {
            open.len > 0 && open.len.saturating_add(len) > self.segments.file_bytes
        });
        if full {
            self.open_next()?;
            let next = self.state.next_id.to_be_bytes();
            batch.put_cf(cf(db, BY_SEGMENT)?, NEXT_SEGMENT_KEY, next);
        }
        let open = self.state.open.as_mut().expect("a segment is open");
        open.file
            .write_all_at(body, open.len)
            .map_err(StoreError::engine)?;
        let place = Place {
            segment: open.id,
            offset: open.len,
            len,
            crc: crc32fast::hash(body),
        };
        open.len += len;
        open.dirty = true;
        let size = open.len;
        self.state.stats.entry(place.segment).or_default().size = size;
        self.segments.size_bytes.fetch_add(len, Ordering::Relaxed);
        Ok(place)
    }

    /// Seal the open segment, synced (this write may have appended to it),
    /// and open the next.
    fn open_next(&mut self) -> Result<(), StoreError> {
        self.sync()?;
        let id = self.state.next_id;
        // Past this id whatever happens: a file left by a failed attempt
        // must not block the next one.
        if id >= u32::MAX - 1 {
            return Err(StoreError::Engine("segment numbers exhausted".into()));
        }
        self.state.next_id = id + 1;
        let path = segment_path(&self.segments.dir, id);
        let file = OpenOptions::new()
            .create_new(true)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(StoreError::engine)?;
        // Its name must be durable before a place names it.
        if let Err(e) = sync_dir(&self.segments.dir) {
            let _ = std::fs::remove_file(&path);
            return Err(StoreError::engine(e));
        }
        let open = OpenSegment {
            id,
            file,
            len: 0,
            dirty: false,
        };
        if let Some(sealed) = self.state.open.replace(open) {
            self.state.sealed.push(sealed.id);
        }
        self.state.stats.entry(id).or_default();
        Ok(())
    }

    /// Count this write's bodies in and out; a sealed segment left with no
    /// live body is to go at the next [`Segments::maintain`].
    fn settle(&mut self) {
        let changes = std::mem::take(&mut self.changes);
        for change in &changes {
            let stats = self.state.stats.entry(change.segment).or_default();
            let live = &self.segments.live_bytes;
            if change.added {
                stats.live_bytes = stats.live_bytes.saturating_add(change.bytes);
                stats.live_bodies += 1;
                self.state.live_bodies += 1;
                live.fetch_add(change.bytes, Ordering::Relaxed);
            } else {
                stats.live_bytes = stats.live_bytes.saturating_sub(change.bytes);
                stats.live_bodies = stats.live_bodies.saturating_sub(1);
                self.state.live_bodies = self.state.live_bodies.saturating_sub(1);
                live.fetch_sub(
                    change.bytes.min(live.load(Ordering::Relaxed)),
                    Ordering::Relaxed,
                );
            }
        }
        let open = self.state.open.as_ref().map(|o| o.id);
        let sealed = std::mem::take(&mut self.state.sealed);
        for segment in changes.iter().map(|c| c.segment).chain(sealed) {
            let Some(stats) = self.state.stats.get(&segment) else {
                continue;
            };
            if stats.live_bodies == 0 && Some(segment) != open {
                let size = stats.size;
                self.state.stats.remove(&segment);
                self.state.emptied.push((segment, size));
            }
        }
        self.touched.clear();
    }

    /// Unlink the emptied segments.
    fn remove_emptied(&mut self) {
        let emptied = std::mem::take(&mut self.state.emptied);
        for (id, size) in emptied {
            match self.segments.remove(id) {
                Ok(()) => {
                    let total = &self.segments.size_bytes;
                    total.fetch_sub(size.min(total.load(Ordering::Relaxed)), Ordering::Relaxed);
                }
                // Not tried again (each try would sync the WAL): no place
                // names it, so the next open removes it.
                Err(error) => {
                    tracing::warn!(%error, segment = id, "cannot remove an emptied segment file; the next start will")
                }
            }
        }
    }

    /// The emptiest sparse sealed segment compaction may take on.
    fn victim(&self) -> Option<u32> {
        if self
            .state
            .no_room_until
            .is_some_and(|until| Instant::now() < until)
        {
            return None;
        }
        let open = self.state.open.as_ref().map(|o| o.id);
        self.state
            .stats
            .iter()
            .filter(|(id, s)| Some(**id) != open && s.sparse() && !self.state.stuck.contains(id))
            .min_by_key(|(_, s)| u128::from(s.live_bytes) * 1000 / u128::from(s.size.max(1)))
            .map(|(id, _)| *id)
    }

    /// Copy some live bodies out of the victim and commit their new places
    /// (synced). Every body is read before the first is copied; a body that
    /// cannot be read stays, and anything that goes wrong leaves the segment
    /// stuck, so no step repeats a failure.
    fn compact_step(
        &mut self,
        db: &DB,
        room: &dyn Fn(u64) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let Some(victim) = self.victim() else {
            return Ok(());
        };
        // Stuck unless it goes through.
        self.state.stuck.insert(victim);
        let mut moving = Vec::new();
        let mut unreadable = false;
        let mut bytes = 0u64;
        let prefix = victim.to_be_bytes();
        let places = cf(db, PLACES)?;
        let mut iter = db.raw_iterator_cf(cf(db, BY_SEGMENT)?);
        iter.seek(prefix);
        while let Some(key) = iter.key().filter(|key| key.starts_with(&prefix)) {
            if bytes >= COMPACT_BYTES_PER_STEP {
                break;
            }
            let key = key[4..].to_vec();
            iter.next();
            let Some(raw) = db.get_pinned_cf(places, &key).map_err(StoreError::engine)? else {
                continue;
            };
            let old = Place::decode(&raw)?;
            let body = match self.segments.read_place(&old) {
                Ok(Ok(body)) => body,
                Ok(Err(error)) => {
                    tracing::warn!(%error, segment = victim, "a body compaction cannot read stays where it is");
                    unreadable = true;
                    continue;
                }
                Err(SegmentGone) => return Err(corrupt(format!("segment {victim} is missing"))),
            };
            // Near the reserve, one body at a time.
            if room(bytes.saturating_add(old.len)).is_err() {
                if moving.is_empty() {
                    tracing::debug!(segment = victim, "no room to compact now");
                    self.state.stuck.remove(&victim);
                    self.state.no_room_until = Some(Instant::now() + NO_ROOM_PAUSE);
                    return Ok(());
                }
                break;
            }
            bytes = bytes.saturating_add(old.len);
            moving.push((key, body));
        }
        iter.status().map_err(StoreError::engine)?;
        drop(iter);
        if moving.is_empty() {
            // Counted live, yet nothing names it: the counts are off until
            // the next open recounts them.
            return Ok(());
        }
        let mut batch = RocksBatch::default();
        for (key, body) in &moving {
            self.forget(db, key, &mut batch)?;
            let new = self.append(db, body, &mut batch)?;
            self.place(db, key, new, &mut batch)?;
        }
        self.sync()?;
        let mut write_opts = WriteOptions::default();
        write_opts.set_sync(true);
        db.write_opt(batch, &write_opts)
            .map_err(StoreError::engine)?;
        self.settle();
        self.remove_emptied();
        if !unreadable {
            self.state.stuck.remove(&victim);
        }
        Ok(())
    }
}

fn cf<'a>(db: &'a DB, name: &str) -> Result<&'a ColumnFamily, StoreError> {
    db.cf_handle(name)
        .ok_or_else(|| StoreError::Engine(format!("column family {name} is missing")))
}

fn segment_path(dir: &Path, id: u32) -> PathBuf {
    dir.join(format!("{id:08x}.seg"))
}

/// The segment files in `dir`, with their sizes (none when it is missing).
fn segment_files(dir: &Path) -> io::Result<Vec<(u32, u64)>> {
    let entries = match std::fs::read_dir(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        other => other?,
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let id = name
            .to_str()
            .and_then(|n| n.strip_suffix(".seg"))
            .filter(|hex| hex.len() == 8)
            .and_then(|hex| u32::from_str_radix(hex, 16).ok());
        if let Some(id) = id {
            out.push((id, entry.metadata()?.len()));
        }
    }
    Ok(out)
}

/// fsync a directory, so the names created in it survive a crash.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_round_trip_and_bad_ones_are_corrupt() {
        let place = Place {
            segment: 7,
            offset: 1 << 33,
            len: 102_400,
            crc: 0xdead_beef,
        };
        assert_eq!(Place::decode(&place.encode()), Ok(place));
        assert!(Place::decode(&place.encode()[..24]).is_err());
        let mut wrong_version = place.encode();
        wrong_version[0] = 9;
        assert!(Place::decode(&wrong_version).is_err());
    }
}
