//! The RocksDB engine.
//!
//! One database, one column family per [`Family`] (named by [`Family::name`]).
//! A call to [`Store::write`] becomes exactly one RocksDB write: every batch the
//! commit pipeline drained is merged into one `rocksdb::WriteBatch`, so one
//! WAL append and (with `sync`) one fsync acknowledge them all.
//!
//! # Tuning, and why
//! - Every family compresses with LZ4 (cheap enough for the write path); the
//!   bottommost level, which holds most of the data, uses Zstd.
//! - Message bodies of at least [`RocksOptions::segment_min_bytes`] bytes
//!   bypass RocksDB: they are appended to segment files and the WAL carries
//!   only their place, so their bytes reach the disk once ([`segments`]).
//! - The `blobs` family keeps the other bodies of at least
//!   [`RocksOptions::min_blob_size`] bytes in blob files. The WAL still carries
//!   the whole value, so this changes nothing on the commit path; it keeps big
//!   bodies out of compactions, which then only move keys and small records.
//!   Blob garbage collection reclaims the bodies of deleted messages.
//! - The WAL is capped at 256 MiB in total, so a restart (or a read-only
//!   open) never replays more than that.
//!
//! # A full disk
//! RocksDB that runs out of space in a WAL write stops taking writes until
//! it recovers by itself, which needs free space of at least its largest
//! memtable, and some ENOSPC paths need a reopen. So writes are refused
//! before that: with [`RocksOptions::min_free_bytes`] set, every write
//! checks the free space of the store's filesystem (one `statvfs(2)`) and
//! fails with [`StoreError::DiskFull`] when the write would eat into the
//! reserve. The engine never sees the ENOSPC, and writes go through again
//! the moment space is freed.
//!
//! # Read-only mode
//! [`RocksOptions::read_only`] opens without taking the database lock, replaying
//! the WAL into memory without writing anything. That lets `ringpost spool
//! stats` look at a store a running server holds, or one left behind by a
//! crash. It sees the data as of the moment it opened.

use crate::{
    CacheUsage, DiskRoom, EngineHealth, Family, Op, Pinned, RoomRule, Store, StoreError, WriteBatch,
};
use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, DBCompressionType,
    FlushOptions, Options, ReadOptions, ReadTier, WriteOptions, DB,
};
use std::path::Path;

mod segments;
use segments::Segments;

/// WAL bytes kept before RocksDB flushes the families holding the oldest WAL file.
const MAX_TOTAL_WAL_SIZE: u64 = 256 << 20;

/// RocksDB store.
pub struct RocksStore {
    db: DB,
    read_only: bool,
    /// The store's directory, for free-space checks.
    path: std::path::PathBuf,
    /// Bytes of the filesystem kept free: writes that would eat into them
    /// are refused (0: no check).
    min_free_bytes: u64,
    /// The blob cache of the `blobs` family and its capacity, when configured.
    body_cache: Option<(Cache, usize)>,
    /// Where large bodies go (see [`RocksOptions::segment_min_bytes`]).
    segments: Segments,
}

/// Options for opening a RocksDB store.
///
/// Build it with `..Default::default()` so that new fields do not break callers.
#[derive(Debug, Clone)]
pub struct RocksOptions {
    /// Open read-only (no lock; works beside a running server and after a crash).
    pub read_only: bool,
    /// Values in the `blobs` family of at least this many bytes go to RocksDB
    /// blob files instead of SST files; `None` keeps every value inline.
    /// Default: 4 KiB.
    pub min_blob_size: Option<u64>,
    /// Size of each family's memtable in bytes (RocksDB's `write_buffer_size`).
    /// Default: 64 MiB, RocksDB's own default.
    pub write_buffer_size: usize,
    /// LZ4-compress message bodies in blob files: less disk, more CPU on
    /// every read (IMAP FETCH, POP3 RETR, relay). Default: off, bodies are
    /// kept as received, as Maildir does.
    pub compress_blobs: bool,
    /// Bytes of recently read or written message bodies kept in memory (an
    /// LRU cache of blob-file values), so a body read again (FETCH after
    /// FETCH, delivery right after receipt) skips the file read, its copy
    /// and its checksum. 0: none, every read goes to the file (through the
    /// OS page cache). Default: 0.
    pub body_cache_bytes: usize,
    /// Keep this many bytes of the filesystem free: a write that would eat
    /// into them fails with [`StoreError::DiskFull`] before RocksDB sees it
    /// (see the module docs). 0: no check. Default: 0.
    pub min_free_bytes: u64,
    /// Bodies of at least this many bytes are appended to segment files
    /// beside the database instead of going through its WAL and memtable
    /// (written once instead of twice; never compressed). `None`: every
    /// body goes into RocksDB. Default: 64 KiB.
    pub segment_min_bytes: Option<u64>,
    /// A segment file is closed, and the next one opened, once it holds
    /// this many bytes. Default: 64 MiB.
    pub segment_file_bytes: u64,
}

impl Default for RocksOptions {
    fn default() -> Self {
        RocksOptions {
            read_only: false,
            min_blob_size: Some(4096),
            write_buffer_size: 64 << 20,
            compress_blobs: false,
            body_cache_bytes: 0,
            min_free_bytes: 0,
            segment_min_bytes: Some(64 << 10),
            segment_file_bytes: 64 << 20,
        }
    }
}

impl RocksStore {
    /// Open (creating when missing, unless read-only) the database at `path`.
    pub fn open(path: &Path, opts: RocksOptions) -> Result<RocksStore, StoreError> {
        // The bindings create the directory before opening, even read-only;
        // a mistyped path given to a read-only tool must not leave one behind.
        if opts.read_only && !path.join("CURRENT").is_file() {
            return Err(StoreError::Engine(format!(
                "no RocksDB store at {}",
                path.display()
            )));
        }
        let mut db_opts = Options::default();
        db_opts.create_if_missing(!opts.read_only);
        db_opts.create_missing_column_families(!opts.read_only);
        // Old info logs pile up otherwise: one per open.
        db_opts.set_keep_log_file_num(4);
        // A WAL file lives until every family with data in it is flushed, and
        // rarely written families (users) would keep gigabytes of WAL around
        // that a restart, or a read-only open, must replay. Past this total
        // RocksDB flushes those families.
        db_opts.set_max_total_wal_size(MAX_TOTAL_WAL_SIZE);

        let body_cache = (opts.body_cache_bytes > 0 && opts.min_blob_size.is_some()).then(|| {
            (
                Cache::new_lru_cache(opts.body_cache_bytes),
                opts.body_cache_bytes,
            )
        });
        // A read-only open names only the families the store has: one made
        // by an older version lacks the newer ones, which read as empty
        // until a server opens it for writing and creates them.
        let present = match opts.read_only {
            true => DB::list_cf(&db_opts, path).map_err(open_error)?,
            false => Family::ALL.iter().map(|f| f.name().to_owned()).collect(),
        };
        let public = Family::ALL.iter().map(|&family| {
            let mut cf = family_options(family, &opts);
            if let (Family::Blobs, Some((cache, _))) = (family, &body_cache) {
                cf.set_blob_cache(cache);
            }
            (family.name(), cf)
        });
        // The segments' own families, created by every writable open (even
        // with segments off: they may hold bodies from when they were on);
        // a read-only open of a store made before them reads them as empty.
        let private = [segments::PLACES, segments::BY_SEGMENT]
            .into_iter()
            .map(|name| (name, private_family_options(&opts)));
        let families = public
            .chain(private)
            .filter(|(name, _)| !opts.read_only || present.iter().any(|p| p == name))
            .map(|(name, cf)| ColumnFamilyDescriptor::new(name, cf));
        let db = if opts.read_only {
            // `false`: a WAL left behind by a running or crashed server is
            // expected; replay it (in memory) rather than refuse to open.
            DB::open_cf_descriptors_read_only(&db_opts, path, families, false)
        } else {
            DB::open_cf_descriptors(&db_opts, path, families)
        }
        .map_err(open_error)?;
        // Off still opens them: bodies stored while it was on are read and
        // deleted as ever.
        let sizes = (
            opts.segment_min_bytes.unwrap_or(u64::MAX),
            opts.segment_file_bytes,
        );
        let segments = Segments::open(path, sizes, &db, opts.read_only)?;
        Ok(RocksStore {
            db,
            read_only: opts.read_only,
            path: path.to_owned(),
            min_free_bytes: opts.min_free_bytes,
            body_cache,
            segments,
        })
    }

    /// Refuse a write of `bytes` that would leave less free than `rule`
    /// keeps.
    fn check_room(&self, rule: RoomRule, bytes: usize) -> Result<(), StoreError> {
        match self.disk_room()? {
            // The WAL takes the batch once more than its payload, with framing.
            Some(room) if !room.fits_under(rule, bytes as u64) => Err(room.refusal()),
            _ => Ok(()),
        }
    }

    /// Whether this store was opened read-only.
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    fn cf(&self, family: Family) -> Result<&ColumnFamily, StoreError> {
        self.db.cf_handle(family.name()).ok_or_else(|| {
            StoreError::Engine(format!("column family {} is missing", family.name()))
        })
    }

    /// Compact all of `family` now (RocksDB does it by itself in time;
    /// this is for tests, and for operators after mass deletions).
    pub fn compact(&self, family: Family) -> Result<(), StoreError> {
        self.db
            .compact_range_cf(self.cf(family)?, None::<&[u8]>, None::<&[u8]>);
        Ok(())
    }

    /// The family to read, or None when a read-only open found a store
    /// made before the family existed (it reads as empty).
    fn cf_to_read(&self, family: Family) -> Result<Option<&ColumnFamily>, StoreError> {
        match self.db.cf_handle(family.name()) {
            None if self.read_only => Ok(None),
            _ => self.cf(family).map(Some),
        }
    }
}

impl RocksStore {
    /// Scan the `blobs` family with the bodies in segments merged in, in
    /// key order, both read from one snapshot. A key in both (a small body
    /// put over a large one) is the inline one, as [`Store::get`] has it.
    fn scan_blobs(
        &self,
        blobs: &ColumnFamily,
        places: &ColumnFamily,
        start: &[u8],
        end: Option<&[u8]>,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StoreError> {
        let snapshot = self.db.snapshot();
        let read_opts = || {
            let mut opts = ReadOptions::default();
            if let Some(end) = end {
                opts.set_iterate_upper_bound(end);
            }
            opts.set_snapshot(&snapshot);
            opts
        };
        let mut inline = self.db.raw_iterator_cf_opt(blobs, read_opts());
        let mut placed = self.db.raw_iterator_cf_opt(places, read_opts());
        inline.seek(start);
        placed.seek(start);
        loop {
            let go_on = match (inline.key(), placed.key()) {
                (None, None) => break,
                (Some(key), other) if other.is_none_or(|p| key <= p) => {
                    if other == Some(key) {
                        placed.next();
                    }
                    let go_on = visit(key, inline.value().unwrap_or_default());
                    inline.next();
                    go_on
                }
                (_, Some(key)) => {
                    let place = placed.value().unwrap_or_default();
                    let body = match self.segments.read_encoded(place)? {
                        Some(body) => Some(body),
                        // Compacted or deleted since the snapshot: as it is now.
                        None => self.segments.read(&self.db, key)?,
                    };
                    let go_on = body.is_none_or(|body| visit(key, &body));
                    placed.next();
                    go_on
                }
                (Some(_), None) => unreachable!("matched above"),
            };
            if !go_on {
                return Ok(());
            }
        }
        inline.status().map_err(StoreError::engine)?;
        placed.status().map_err(StoreError::engine)
    }
}

/// Bytes free for an unprivileged writer on the filesystem holding `path`.
fn free_bytes(path: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::other("store path contains NUL"))?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c_path` is a valid C string; `stat` is written by the call
    // and only read when it succeeded.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), stat.as_mut_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it filled `stat`.
    let stat = unsafe { stat.assume_init() };
    // The field types differ between targets (u32 on some 32-bit ones).
    #[allow(clippy::useless_conversion)]
    let (blocks, size) = (u64::from(stat.f_bavail), u64::from(stat.f_frsize));
    Ok(blocks.saturating_mul(size))
}

/// An open failure, with "someone holds the lock" told apart: tools that
/// need to write say "stop the server first" instead of an engine message.
fn open_error(e: rocksdb::Error) -> StoreError {
    let text = e.to_string();
    // RocksDB's POSIX env reports a held lock as "IO error: While lock file:
    // <dir>/LOCK: Resource temporarily unavailable", or, when this process
    // holds it already, "IO error: lock hold by current process ...".
    if text.contains("While lock file") || text.contains("lock hold by current process") {
        StoreError::Locked(text)
    } else {
        StoreError::Engine(text)
    }
}

/// Column family options for the segments' records: small, point-read.
fn private_family_options(opts: &RocksOptions) -> Options {
    let mut cf = Options::default();
    cf.set_compression_type(DBCompressionType::Lz4);
    cf.set_write_buffer_size(opts.write_buffer_size.min(16 << 20));
    let mut table = BlockBasedOptions::default();
    table.set_bloom_filter(10.0, false);
    cf.set_block_based_table_factory(&table);
    cf
}

/// Column family options for `family`.
fn family_options(family: Family, opts: &RocksOptions) -> Options {
    let mut cf = Options::default();
    cf.set_compression_type(DBCompressionType::Lz4);
    cf.set_bottommost_compression_type(DBCompressionType::Zstd);
    cf.set_write_buffer_size(opts.write_buffer_size);
    let mut table = BlockBasedOptions::default();
    // Point lookups (`get` by message id) dominate reads outside the queue:
    // a bloom filter spares a disk read for every level without the key.
    table.set_bloom_filter(10.0, false);
    cf.set_block_based_table_factory(&table);
    if family == Family::Suppressions {
        // Expired entries read as absent; compaction removes them for good.
        cf.set_compaction_filter(
            "ringpost-expired-suppressions",
            |_level, _key: &[u8], value: &[u8]| {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_micros() as u64);
                if crate::suppression::expired(value, now) {
                    rocksdb::CompactionDecision::Remove
                } else {
                    rocksdb::CompactionDecision::Keep
                }
            },
        );
    }
    if family == Family::Blobs {
        if let Some(min) = opts.min_blob_size {
            cf.set_enable_blob_files(true);
            cf.set_min_blob_size(min);
            cf.set_blob_compression_type(if opts.compress_blobs {
                DBCompressionType::Lz4
            } else {
                DBCompressionType::None
            });
            cf.set_enable_blob_gc(true);
        }
    }
    cf
}

impl Store for RocksStore {
    fn disk_room(&self) -> Result<Option<DiskRoom>, StoreError> {
        if self.min_free_bytes == 0 {
            return Ok(None);
        }
        let free = free_bytes(&self.path).map_err(StoreError::engine)?;
        Ok(Some(DiskRoom {
            free,
            reserve: self.min_free_bytes,
        }))
    }

    fn write(&self, batches: &[WriteBatch], sync: bool) -> Result<(), StoreError> {
        if self.read_only {
            return Err(StoreError::ReadOnly);
        }
        crate::unresolved_changes(batches)?;
        // Size the merged batch up front: one allocation instead of regrowth.
        // Each op also costs a few bytes of RocksDB framing.
        let ops: usize = batches.iter().map(WriteBatch::len).sum();
        let bytes: usize = batches.iter().map(WriteBatch::byte_size).sum();
        // Room not judged yet by the commit writer (a direct write): new
        // mail is held to the reserve, which is there so that what is
        // stored can still be changed, delivered and deleted; those
        // changes only to a quarter of it.
        let unjudged = |rule| {
            batches
                .iter()
                .filter(|b| b.room_rule() == Some(rule))
                .map(WriteBatch::byte_size)
                .sum::<usize>()
        };
        let (mail, changes) = (unjudged(RoomRule::Reserve), unjudged(RoomRule::Floor));
        if mail > 0 {
            self.check_room(RoomRule::Reserve, mail + changes)?;
        } else if changes > 0 {
            self.check_room(RoomRule::Floor, changes)?;
        }
        let mut merged = rocksdb::WriteBatch::with_capacity_bytes(bytes + ops * 16 + 12);
        let mut segment_write = self.segments.begin();
        for op in batches.iter().flat_map(WriteBatch::ops) {
            match op {
                Op::Put {
                    family: Family::Blobs,
                    key,
                    value,
                } if segment_write.takes(value.len()) => {
                    let blobs = self.cf(Family::Blobs)?;
                    segment_write.put(&self.db, key, value, blobs, &mut merged)?
                }
                Op::Delete {
                    family: Family::Blobs,
                    key,
                } => {
                    segment_write.delete(&self.db, key, &mut merged)?;
                    merged.delete_cf(self.cf(Family::Blobs)?, key)
                }
                Op::Put { family, key, value } => merged.put_cf(self.cf(*family)?, key, value),
                Op::Delete { family, key } => merged.delete_cf(self.cf(*family)?, key),
            }
        }
        // The bodies are on disk before the places that name them.
        segment_write.sync()?;
        let mut write_opts = WriteOptions::default();
        write_opts.set_sync(sync);
        self.db
            .write_opt(merged, &write_opts)
            .map_err(StoreError::engine)?;
        segment_write.committed();
        Ok(())
    }

    fn maintain(&self) {
        if !self.read_only {
            self.segments.maintain(&self.db, &|bytes| {
                self.check_room(
                    RoomRule::Reserve,
                    usize::try_from(bytes).unwrap_or(usize::MAX),
                )
            });
        }
    }

    fn get(&self, family: Family, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(cf) = self.cf_to_read(family)? else {
            return Ok(None);
        };
        match (self.db.get_cf(cf, key).map_err(StoreError::engine)?, family) {
            (None, Family::Blobs) => self.segments.read(&self.db, key),
            (found, _) => Ok(found),
        }
    }

    fn get_in_memory(
        &self,
        family: Family,
        key: &[u8],
    ) -> Result<Option<Option<Vec<u8>>>, StoreError> {
        let Some(cf) = self.cf_to_read(family)? else {
            return Ok(Some(None));
        };
        let mut opts = ReadOptions::default();
        opts.set_read_tier(ReadTier::BlockCache);
        match self.db.get_cf_opt(cf, key, &opts) {
            // Not in RocksDB: a body may be in a segment file, on disk.
            Ok(None) if family == Family::Blobs => Ok(None),
            Ok(found) => Ok(Some(found)),
            Err(e) if e.kind() == rocksdb::ErrorKind::Incomplete => Ok(None),
            Err(e) => Err(StoreError::engine(e)),
        }
    }

    fn body_cache_usage(&self) -> Option<CacheUsage> {
        self.body_cache
            .as_ref()
            .map(|(cache, capacity)| CacheUsage {
                used: cache.get_usage(),
                capacity: *capacity,
            })
    }

    fn health(&self) -> Option<EngineHealth> {
        let mut health = EngineHealth::default();
        let int = |family: &str, name: &str| -> u64 {
            self.db
                .cf_handle(family)
                .and_then(|cf| self.db.property_int_value_cf(cf, name).ok().flatten())
                .unwrap_or(0)
        };
        let public = Family::ALL.iter().map(|f| f.name());
        let private = [segments::PLACES, segments::BY_SEGMENT];
        for family in public.chain(private) {
            health.disk_bytes += int(family, "rocksdb.total-sst-files-size")
                + int(family, "rocksdb.live-blob-file-size");
            health.memtable_bytes += int(family, "rocksdb.cur-size-all-mem-tables");
            health.pending_compaction_bytes +=
                int(family, "rocksdb.estimate-pending-compaction-bytes");
            health.write_stopped |= int(family, "rocksdb.is-write-stopped") != 0;
            health.delayed_write_rate = health
                .delayed_write_rate
                .max(int(family, "rocksdb.actual-delayed-write-rate"));
        }
        let usage = self.segments.usage();
        health.segment_bytes = usage.size;
        health.segment_live_bytes = usage.live;
        health.disk_bytes += usage.size;
        Some(health)
    }

    fn get_pinned(&self, family: Family, key: &[u8]) -> Result<Option<Pinned<'_>>, StoreError> {
        let Some(cf) = self.cf_to_read(family)? else {
            return Ok(None);
        };
        match (
            self.db.get_pinned_cf(cf, key).map_err(StoreError::engine)?,
            family,
        ) {
            (None, Family::Blobs) => Ok(self.segments.read(&self.db, key)?.map(Pinned::new)),
            (found, _) => Ok(found.map(Pinned::new)),
        }
    }

    fn scan(
        &self,
        family: Family,
        start: &[u8],
        end: Option<&[u8]>,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StoreError> {
        if matches!(end, Some(end) if end <= start) {
            return Ok(());
        }
        let mut read_opts = ReadOptions::default();
        if let Some(end) = end {
            // Lets RocksDB stop at the bound itself instead of stepping over
            // the deleted queue entries that pile up past it.
            read_opts.set_iterate_upper_bound(end);
        }
        let Some(cf) = self.cf_to_read(family)? else {
            return Ok(());
        };
        if let (Family::Blobs, Some(places)) = (family, self.db.cf_handle(segments::PLACES)) {
            return self.scan_blobs(cf, places, start, end, visit);
        }
        let mut iter = self.db.raw_iterator_cf_opt(cf, read_opts);
        iter.seek(start);
        while let (Some(key), Some(value)) = (iter.key(), iter.value()) {
            if !visit(key, value) {
                return Ok(());
            }
            iter.next();
        }
        // An iterator also stops on an I/O error or corruption: tell them apart.
        iter.status().map_err(StoreError::engine)
    }

    fn flush(&self) -> Result<(), StoreError> {
        if self.read_only {
            return Ok(());
        }
        self.db.flush_wal(true).map_err(StoreError::engine)?;
        let mut families = Family::ALL
            .iter()
            .map(|&family| self.cf(family))
            .collect::<Result<Vec<_>, _>>()?;
        families.extend(
            [segments::PLACES, segments::BY_SEGMENT]
                .iter()
                .filter_map(|name| self.db.cf_handle(name)),
        );
        let mut flush_opts = FlushOptions::default();
        flush_opts.set_wait(true);
        self.db
            .flush_cfs_opt(&families, &flush_opts)
            .map_err(StoreError::engine)
    }
}
