//! Large bodies in segment files: written once, read back after a reopen
//! and beside a writer, space reclaimed, damage reported.
#![cfg(feature = "rocksdb")]

use ringpost_storage::{
    CommitPipeline, Family, PipelineConfig, RocksOptions, RocksStore, Store, StoreError, WriteBatch,
};
use std::path::Path;
use std::sync::Arc;

const BODY: usize = 100_000;

fn body(n: u32) -> Vec<u8> {
    (0..BODY)
        .map(|i| (i as u32 ^ n.wrapping_mul(31)) as u8)
        .collect()
}

fn key(n: u32) -> Vec<u8> {
    n.to_be_bytes().to_vec()
}

/// Segments of 1 MiB: ten 100 KB bodies each.
fn small_segments() -> RocksOptions {
    RocksOptions {
        segment_min_bytes: Some(1024),
        segment_file_bytes: 1 << 20,
        ..Default::default()
    }
}

/// Each body in a write of its own, then the housekeeping the commit
/// writer does after a group.
fn put_bodies(store: &RocksStore, range: std::ops::Range<u32>) {
    for n in range {
        let mut batch = WriteBatch::new();
        batch.put(Family::Blobs, key(n), body(n));
        store.write(&[batch], true).unwrap();
        store.maintain();
    }
}

fn delete_bodies(store: &RocksStore, range: std::ops::Range<u32>) {
    let mut batch = WriteBatch::new();
    for n in range {
        batch.delete(Family::Blobs, key(n));
    }
    store.write(&[batch], true).unwrap();
    store.maintain();
}

/// Total bytes of the files in `dir` whose names end with `suffix`.
fn bytes_of(dir: &Path, suffix: &str) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(suffix))
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

fn segment_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join("segments"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn large_bodies_reach_the_disk_once() {
    let dir = tempfile::tempdir().unwrap();
    let count = 40;
    {
        let store = RocksStore::open(dir.path(), RocksOptions::default()).unwrap();
        put_bodies(&store, 0..count);
        // A small one beside them stays in RocksDB.
        let mut batch = WriteBatch::new();
        batch.put(Family::Blobs, b"small".to_vec(), vec![1; 5000]);
        store.write(&[batch], true).unwrap();

        let bodies = u64::from(count) * BODY as u64;
        let wal = bytes_of(dir.path(), ".log");
        let segments = bytes_of(&dir.path().join("segments"), ".seg");
        assert_eq!(segments, bodies, "each body once in a segment");
        assert!(
            wal < bodies / 20,
            "the WAL carries places, not bodies: {wal}"
        );
        store.flush().unwrap();
        let blob_files = bytes_of(dir.path(), ".blob");
        assert!(
            (5000..6000).contains(&blob_files),
            "only the small body in a blob file: {blob_files}"
        );
        let health = store.health().unwrap();
        assert_eq!(
            (health.segment_bytes, health.segment_live_bytes),
            (bodies, bodies)
        );

        // A reader beside the writer sees them.
        let beside = RocksStore::open(
            dir.path(),
            RocksOptions {
                read_only: true,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(beside.get(Family::Blobs, &key(7)).unwrap(), Some(body(7)));
    }
    let store = RocksStore::open(dir.path(), RocksOptions::default()).unwrap();
    for n in 0..count {
        assert_eq!(
            store.get(Family::Blobs, &key(n)).unwrap(),
            Some(body(n)),
            "body {n}"
        );
        assert_eq!(
            store.get_pinned(Family::Blobs, &key(n)).unwrap().as_deref(),
            Some(&body(n)[..])
        );
    }
    let mut scanned = Vec::new();
    store
        .scan(Family::Blobs, &[], None, &mut |k, v| {
            scanned.push((k.to_vec(), v.len()));
            true
        })
        .unwrap();
    assert_eq!(scanned.len(), count as usize + 1, "scan merges both kinds");
    assert!(scanned.windows(2).all(|w| w[0].0 < w[1].0), "in key order");
}

#[test]
fn emptied_segments_are_unlinked_and_sparse_ones_compacted() {
    let dir = tempfile::tempdir().unwrap();
    let store = RocksStore::open(dir.path(), small_segments()).unwrap();
    put_bodies(&store, 0..30);
    assert_eq!(
        segment_names(dir.path()),
        ["00000000.seg", "00000001.seg", "00000002.seg"]
    );

    // Every body of the first segment deleted: its file goes.
    delete_bodies(&store, 0..10);
    assert_eq!(segment_names(dir.path()), ["00000001.seg", "00000002.seg"]);

    // The second left a fifth live: its two bodies move, and it goes.
    delete_bodies(&store, 10..18);
    assert!(
        !segment_names(dir.path()).contains(&"00000001.seg".to_owned()),
        "{:?}",
        segment_names(dir.path())
    );
    for n in 18..30 {
        assert_eq!(
            store.get(Family::Blobs, &key(n)).unwrap(),
            Some(body(n)),
            "body {n}"
        );
    }
    for n in 0..18 {
        assert_eq!(store.get(Family::Blobs, &key(n)).unwrap(), None);
    }
    let health = store.health().unwrap();
    assert_eq!(health.segment_live_bytes, 12 * BODY as u64);
    assert_eq!(
        health.segment_bytes,
        bytes_of(&dir.path().join("segments"), ".seg")
    );

    // The counts hold across a reopen.
    drop(store);
    let store = RocksStore::open(dir.path(), small_segments()).unwrap();
    assert_eq!(store.health().unwrap().segment_live_bytes, 12 * BODY as u64);
    delete_bodies(&store, 18..30);
    assert_eq!(store.health().unwrap().segment_live_bytes, 0);
    put_bodies(&store, 30..31);
    assert_eq!(
        segment_names(dir.path()).len(),
        1,
        "{:?}",
        segment_names(dir.path())
    );
}

#[test]
fn bytes_no_place_names_are_never_served_and_orphan_segments_go() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = RocksStore::open(dir.path(), small_segments()).unwrap();
        put_bodies(&store, 0..3);
    }
    // As if the server died between appending and committing: bytes at the
    // end of a segment, and a whole segment, that no place names.
    let segments = dir.path().join("segments");
    let mut tail = std::fs::OpenOptions::new()
        .append(true)
        .open(segments.join("00000000.seg"))
        .unwrap();
    std::io::Write::write_all(&mut tail, &[0xee; 5000]).unwrap();
    std::fs::write(segments.join("000000ff.seg"), vec![0xee; 5000]).unwrap();

    let store = RocksStore::open(dir.path(), small_segments()).unwrap();
    assert_eq!(segment_names(dir.path()), ["00000000.seg"]);
    for n in 0..3 {
        assert_eq!(store.get(Family::Blobs, &key(n)).unwrap(), Some(body(n)));
    }
    // New bodies go to a new segment, numbered past every one ever named
    // (the orphan's number was never named).
    put_bodies(&store, 3..4);
    assert_eq!(segment_names(dir.path()), ["00000000.seg", "00000001.seg"]);
    assert_eq!(store.get(Family::Blobs, &key(3)).unwrap(), Some(body(3)));
}

#[test]
fn damaged_segment_bytes_are_reported_not_served() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = RocksStore::open(dir.path(), small_segments()).unwrap();
        put_bodies(&store, 0..2);
    }
    let file = dir.path().join("segments/00000000.seg");
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[10] ^= 0xff;
    std::fs::write(&file, &bytes).unwrap();
    let store = RocksStore::open(dir.path(), small_segments()).unwrap();
    assert!(matches!(
        store.get(Family::Blobs, &key(0)),
        Err(StoreError::Corrupt { .. })
    ));
    assert_eq!(store.get(Family::Blobs, &key(1)).unwrap(), Some(body(1)));

    // Cut short: the second body's place points past the end.
    drop(store);
    std::fs::write(&file, &bytes[..BODY + 10]).unwrap();
    let store = RocksStore::open(dir.path(), small_segments()).unwrap();
    assert!(matches!(
        store.get(Family::Blobs, &key(1)),
        Err(StoreError::Corrupt { .. })
    ));
}

#[test]
fn small_and_large_bodies_replace_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let store = RocksStore::open(dir.path(), small_segments()).unwrap();
    let put = |value: Vec<u8>| {
        let mut batch = WriteBatch::new();
        batch.put(Family::Blobs, b"k".to_vec(), value);
        store.write(&[batch], true).unwrap();
    };
    put(body(1));
    put(vec![5; 10]);
    assert_eq!(store.get(Family::Blobs, b"k").unwrap(), Some(vec![5; 10]));
    put(body(2));
    assert_eq!(store.get(Family::Blobs, b"k").unwrap(), Some(body(2)));
    put(body(3));
    assert_eq!(store.get(Family::Blobs, b"k").unwrap(), Some(body(3)));
    assert_eq!(store.health().unwrap().segment_live_bytes, BODY as u64);

    // Put and delete in one write: nothing is left, and nothing counted.
    let mut batch = WriteBatch::new();
    batch.put(Family::Blobs, b"j".to_vec(), body(4));
    batch.delete(Family::Blobs, b"j".to_vec());
    batch.delete(Family::Blobs, b"k".to_vec());
    store.write(&[batch], true).unwrap();
    assert_eq!(store.get(Family::Blobs, b"j").unwrap(), None);
    assert_eq!(store.get(Family::Blobs, b"k").unwrap(), None);
    assert_eq!(store.health().unwrap().segment_live_bytes, 0);
}

#[test]
fn segment_numbers_are_never_used_twice() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = RocksStore::open(dir.path(), small_segments()).unwrap();
        put_bodies(&store, 0..15);
        // Both segments emptied; the sealed one goes at once, the open one
        // when the next open finds it empty.
        delete_bodies(&store, 0..15);
    }
    let store = RocksStore::open(dir.path(), small_segments()).unwrap();
    assert!(segment_names(dir.path()).is_empty());
    put_bodies(&store, 15..16);
    // A reader holding an old view must never find other bytes under a
    // number it knows.
    assert_eq!(segment_names(dir.path()), ["00000002.seg"]);
    assert_eq!(store.get(Family::Blobs, &key(15)).unwrap(), Some(body(15)));
}

#[test]
fn unsynced_writes_free_space_too() {
    let dir = tempfile::tempdir().unwrap();
    let store = RocksStore::open(dir.path(), small_segments()).unwrap();
    put_bodies(&store, 0..12);
    let mut batch = WriteBatch::new();
    for n in 0..10 {
        batch.delete(Family::Blobs, key(n));
    }
    store.write(&[batch], false).unwrap();
    store.maintain();
    assert_eq!(segment_names(dir.path()), ["00000001.seg"]);
}

#[test]
fn one_write_can_fill_segments_and_go_on_in_the_next() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = RocksStore::open(dir.path(), small_segments()).unwrap();
        let mut batch = WriteBatch::new();
        for n in 0..25 {
            batch.put(Family::Blobs, key(n), body(n));
        }
        // Not synced by RocksDB: the segments are synced all the same.
        store.write(&[batch], false).unwrap();
        assert_eq!(segment_names(dir.path()).len(), 3);
        store.flush().unwrap();
    }
    let store = RocksStore::open(dir.path(), small_segments()).unwrap();
    for n in 0..25 {
        assert_eq!(
            store.get(Family::Blobs, &key(n)).unwrap(),
            Some(body(n)),
            "body {n}"
        );
    }
    assert_eq!(store.health().unwrap().segment_live_bytes, 25 * BODY as u64);
}

#[test]
fn segments_turned_off_still_read_and_delete_what_they_hold() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = RocksStore::open(dir.path(), small_segments()).unwrap();
        put_bodies(&store, 0..12);
    }
    let off = RocksOptions {
        segment_min_bytes: None,
        ..small_segments()
    };
    let store = RocksStore::open(dir.path(), off).unwrap();
    assert_eq!(store.get(Family::Blobs, &key(3)).unwrap(), Some(body(3)));
    // New bodies go to RocksDB.
    put_bodies(&store, 12..13);
    assert_eq!(segment_names(dir.path()).len(), 2);
    delete_bodies(&store, 0..12);
    assert!(
        segment_names(dir.path()).is_empty(),
        "{:?}",
        segment_names(dir.path())
    );
    assert_eq!(store.get(Family::Blobs, &key(12)).unwrap(), Some(body(12)));
}

#[test]
fn a_body_compaction_cannot_read_fails_no_write_and_stays() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = RocksStore::open(dir.path(), small_segments()).unwrap();
        put_bodies(&store, 0..12);
    }
    // Damage body 9, in the first (sealed) segment.
    let file = dir.path().join("segments/00000000.seg");
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[9 * BODY + 1] ^= 0xff;
    std::fs::write(&file, &bytes).unwrap();

    let store = RocksStore::open(dir.path(), small_segments()).unwrap();
    // Sparse now: compaction runs after this write, moves 8, cannot read 9.
    delete_bodies(&store, 0..8);
    put_bodies(&store, 12..13);
    assert_eq!(store.get(Family::Blobs, &key(8)).unwrap(), Some(body(8)));
    assert!(matches!(
        store.get(Family::Blobs, &key(9)),
        Err(StoreError::Corrupt { .. })
    ));
    assert!(segment_names(dir.path()).contains(&"00000000.seg".to_owned()));
    // Deleting the damaged body empties the segment, and it goes.
    delete_bodies(&store, 9..10);
    assert!(!segment_names(dir.path()).contains(&"00000000.seg".to_owned()));
}

#[test]
fn the_commit_writer_frees_space_after_its_groups() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(RocksStore::open(dir.path(), small_segments()).unwrap());
    let (pipeline, commits) = CommitPipeline::start(store.clone(), PipelineConfig::default(), None);
    for n in 0..12 {
        let mut batch = WriteBatch::new();
        batch.put(Family::Blobs, key(n), body(n));
        commits.commit_blocking(batch).unwrap();
    }
    let mut batch = WriteBatch::new();
    for n in 0..10 {
        batch.delete(Family::Blobs, key(n));
    }
    commits.commit_blocking(batch).unwrap();
    // Housekeeping runs on the writer after the answer: wait for it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while segment_names(dir.path()).len() > 1 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(segment_names(dir.path()), ["00000001.seg"]);
    drop(commits);
    pipeline.shutdown();
}

#[test]
fn read_handles_stay_bounded_however_many_segments_are_read() {
    let dir = tempfile::tempdir().unwrap();
    // One 2 KB body per segment: 300 segments.
    let opts = RocksOptions {
        segment_min_bytes: Some(1024),
        segment_file_bytes: 2048,
        ..Default::default()
    };
    let store = RocksStore::open(dir.path(), opts).unwrap();
    let small = |n: u32| vec![(n % 251) as u8; 2000];
    for n in 0..300 {
        let mut batch = WriteBatch::new();
        batch.put(Family::Blobs, key(n), small(n));
        store.write(&[batch], true).unwrap();
    }
    assert_eq!(segment_names(dir.path()).len(), 300);
    for round in 0..2 {
        for n in 0..300 {
            let got = store.get(Family::Blobs, &key(n)).unwrap();
            assert_eq!(got, Some(small(n)), "round {round}, body {n}");
        }
    }
    let segments = dir.path().join("segments");
    let open = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter(|target| target.starts_with(&segments))
        .count();
    // At most the cache's 256 read handles and the writer's one.
    assert!(open <= 257, "{open} segment files open");
}
