//! RocksDB-specific behaviour: persistence across reopen, read-only opens
//! beside a writer, blob files.
#![cfg(feature = "rocksdb")]

use ringpost_storage::spool::{self, Envelope, MessageId, NewMessage, QueueEntry};
use ringpost_storage::{Family, RocksOptions, RocksStore, Store, StoreError, WriteBatch};
use std::path::Path;

fn read_only() -> RocksOptions {
    RocksOptions {
        read_only: true,
        ..Default::default()
    }
}

fn put(family: Family, key: &[u8], value: Vec<u8>) -> WriteBatch {
    let mut batch = WriteBatch::new();
    batch.put(family, key.to_vec(), value);
    batch
}

fn message(seq: u64) -> NewMessage {
    let id = MessageId::new(1_700_000_000_000_000 + seq, 0, seq);
    NewMessage {
        id,
        body: vec![b'x'; 3000],
        envelope: Envelope {
            sender: "a@example.org".into(),
            received_at: 1,
            size: 3000,
            recipients: vec!["b@example.com".into()],
            dsn: Default::default(),
        },
        queue: vec![QueueEntry {
            due: 5,
            id,
            domain: "example.com".into(),
            recipients: vec!["b@example.com".into()],
            ..Default::default()
        }],
        mailboxes: Vec::new(),
        junk: Vec::new(),
        filed: Vec::new(),
    }
}

/// Files in `dir` whose name ends with `suffix`.
fn count_files(dir: &Path, suffix: &str) -> usize {
    std::fs::read_dir(dir)
        .expect("read dir")
        .filter(|entry| {
            entry
                .as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(suffix))
        })
        .count()
}

#[test]
fn synced_writes_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = RocksStore::open(dir.path(), RocksOptions::default()).unwrap();
        store
            .write(&[put(Family::Users, b"alice", b"hash".to_vec())], true)
            .unwrap();
        store.write(&[message(1).into_batch()], true).unwrap();
        // Dropped without flush: the data lives only in the WAL.
    }
    let store = RocksStore::open(dir.path(), RocksOptions::default()).unwrap();
    assert_eq!(
        store.get(Family::Users, b"alice").unwrap(),
        Some(b"hash".to_vec())
    );
    assert_eq!(
        spool::read_body(&store, &message(1).id).unwrap(),
        Some(vec![b'x'; 3000])
    );
    assert_eq!(spool::stats(&store).unwrap().queue_entries, 1);
}

#[test]
fn read_only_open_beside_a_writer() {
    let dir = tempfile::tempdir().unwrap();
    let writer = RocksStore::open(dir.path(), RocksOptions::default()).unwrap();
    assert!(!writer.is_read_only());
    for seq in 0..10 {
        writer.write(&[message(seq).into_batch()], true).unwrap();
    }

    // The writer still holds the database (and its lock).
    let reader = RocksStore::open(dir.path(), read_only()).unwrap();
    assert!(reader.is_read_only());
    let stats = spool::stats(&reader).unwrap();
    assert_eq!(
        (stats.messages, stats.bytes, stats.queue_entries),
        (10, 30_000, 10)
    );
    assert_eq!(
        spool::read_body(&reader, &message(3).id).unwrap(),
        Some(vec![b'x'; 3000])
    );

    // Writes are refused; flush has nothing to do.
    assert_eq!(
        reader.write(&[put(Family::Users, b"x", vec![])], true),
        Err(StoreError::ReadOnly)
    );
    assert_eq!(reader.write(&[], true), Err(StoreError::ReadOnly));
    assert_eq!(reader.flush(), Ok(()));

    // A second read-write open is refused while the writer holds the lock,
    // and the error says so.
    assert!(matches!(
        RocksStore::open(dir.path(), RocksOptions::default()),
        Err(StoreError::Locked(_))
    ));

    // A reader sees the store as it was when it opened; a new one sees more.
    writer.write(&[message(10).into_batch()], true).unwrap();
    writer.flush().unwrap();
    let later = RocksStore::open(dir.path(), read_only()).unwrap();
    assert_eq!(spool::stats(&later).unwrap().messages, 11);
    assert_eq!(spool::list_envelopes(&later).unwrap().len(), 11);
}

#[test]
fn read_only_open_of_a_missing_store_fails() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nothing-here");
    assert!(matches!(
        RocksStore::open(&missing, read_only()),
        Err(StoreError::Engine(_))
    ));
    assert!(!missing.exists(), "read-only must not create the store");
}

#[test]
fn large_bodies_go_to_blob_files() {
    let dir = tempfile::tempdir().unwrap();
    // Above the blob size, below the segment size.
    let big = vec![7u8; 30_000];
    {
        let store = RocksStore::open(dir.path(), RocksOptions::default()).unwrap();
        store
            .write(&[put(Family::Blobs, b"big", big.clone())], true)
            .unwrap();
        store
            .write(&[put(Family::Blobs, b"small", vec![1; 100])], true)
            .unwrap();
        store.flush().unwrap();
        assert!(
            count_files(dir.path(), ".blob") >= 1,
            "flush wrote a blob file"
        );
    }
    let store = RocksStore::open(dir.path(), read_only()).unwrap();
    assert!(store.get(Family::Blobs, b"big").unwrap() == Some(big));
    assert_eq!(
        store.get(Family::Blobs, b"small").unwrap(),
        Some(vec![1; 100])
    );

    // Blob files off: nothing goes to blob files.
    let inline = tempfile::tempdir().unwrap();
    let opts = RocksOptions {
        min_blob_size: None,
        ..Default::default()
    };
    let store = RocksStore::open(inline.path(), opts).unwrap();
    store
        .write(&[put(Family::Blobs, b"big", vec![7; 30_000])], true)
        .unwrap();
    store.flush().unwrap();
    assert_eq!(count_files(inline.path(), ".blob"), 0);
}

#[test]
fn writes_that_would_eat_into_the_free_space_reserve_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    // A reserve larger than any disk: every write is refused, unseen by RocksDB.
    let store = RocksStore::open(
        dir.path(),
        RocksOptions {
            min_free_bytes: u64::MAX / 4,
            ..RocksOptions::default()
        },
    )
    .unwrap();
    let refused = store.write(&[put(Family::Blobs, b"mail", b"body".to_vec())], true);
    assert!(
        matches!(refused, Err(StoreError::DiskFull { free, .. }) if free > 0),
        "{refused:?}"
    );
    assert_eq!(store.get(Family::Blobs, b"mail").unwrap(), None);
    // Not even a change without mail eats into a quarter of it.
    let refused = store.write(&[put(Family::Users, b"alice", b"hash".to_vec())], true);
    assert!(
        matches!(refused, Err(StoreError::DiskFull { .. })),
        "{refused:?}"
    );
    let free = store.disk_room().unwrap().unwrap().free;
    drop(store);
    // A reserve twice what is free: new mail is refused, and a change
    // without a body, what the reserve is kept for, passes.
    let store = RocksStore::open(
        dir.path(),
        RocksOptions {
            min_free_bytes: free * 2,
            ..RocksOptions::default()
        },
    )
    .unwrap();
    let refused = store.write(&[put(Family::Blobs, b"mail", b"body".to_vec())], true);
    assert!(
        matches!(refused, Err(StoreError::DiskFull { .. })),
        "{refused:?}"
    );
    store
        .write(&[put(Family::Users, b"alice", b"hash".to_vec())], true)
        .expect("a change without a body passes the reserve");
    drop(store);
    // A reserve the disk has: writes go through.
    let store = RocksStore::open(
        dir.path(),
        RocksOptions {
            min_free_bytes: 1 << 20,
            ..RocksOptions::default()
        },
    )
    .unwrap();
    store
        .write(&[put(Family::Users, b"alice", b"hash".to_vec())], true)
        .unwrap();
}

#[test]
fn health_reports_memtables_then_files() {
    let dir = tempfile::tempdir().unwrap();
    let store = RocksStore::open(dir.path(), RocksOptions::default()).unwrap();
    for seq in 0..50 {
        store.write(&[message(seq).into_batch()], true).unwrap();
    }
    let before = store.health().expect("RocksDB reports its health");
    assert!(before.memtable_bytes > 0, "{before:?}");
    assert!(!before.write_stopped);
    store.flush().unwrap();
    let after = store.health().unwrap();
    // (The bodies compress to almost nothing: only growth is certain.)
    assert!(after.disk_bytes > before.disk_bytes, "{before:?} {after:?}");
    // The memory engine has nothing to say.
    assert_eq!(ringpost_storage::MemoryStore::new().health(), None);
}

/// A store made before a family existed opens read-only (the tools' way
/// beside a stopped server), the new family reading as empty; a writable
/// open adds it.
#[test]
fn read_only_open_of_a_store_older_than_a_family() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path();
    {
        let mut opts = rocksdb::Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        let older: Vec<&str> = Family::ALL
            .iter()
            .filter(|f| **f != Family::Suppressions)
            .map(|f| f.name())
            .collect();
        rocksdb::DB::open_cf(&opts, path, older).unwrap();
    }
    let store = RocksStore::open(path, read_only()).unwrap();
    assert_eq!(store.get(Family::Suppressions, b"k").unwrap(), None);
    let mut visited = 0;
    store
        .scan(Family::Suppressions, b"", None, &mut |_, _| {
            visited += 1;
            true
        })
        .unwrap();
    assert_eq!(visited, 0);
    assert_eq!(store.get(Family::Users, b"k").unwrap(), None);
    drop(store);

    let store = RocksStore::open(path, RocksOptions::default()).unwrap();
    let mut batch = WriteBatch::new();
    batch.put(Family::Suppressions, b"k".to_vec(), b"v".to_vec());
    store.write(&[batch], true).unwrap();
    drop(store);
    let store = RocksStore::open(path, read_only()).unwrap();
    assert_eq!(
        store.get(Family::Suppressions, b"k").unwrap(),
        Some(b"v".to_vec())
    );
}

/// Expired suppression entries leave the disk at compaction; live ones
/// and entries that never expire stay.
#[test]
fn compaction_drops_expired_suppressions() {
    use ringpost_storage::suppression::{self, Suppression};
    let dir = tempfile::tempdir().unwrap();
    let store = RocksStore::open(dir.path(), RocksOptions::default()).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64;
    let mut batch = WriteBatch::new();
    for (address, expires_micros) in [
        ("old@far.test", 1),
        ("live@far.test", now + 3_600_000_000),
        ("forever@far.test", 0),
    ] {
        suppression::put(
            &mut batch,
            &Suppression {
                scope: String::new(),
                address: address.into(),
                added_micros: 1,
                expires_micros,
                class: "manual".into(),
                reason: String::new(),
            },
        );
    }
    store.write(&[batch], true).unwrap();
    store.flush().unwrap();
    store.compact(Family::Suppressions).unwrap();
    let mut left = Vec::new();
    store
        .scan(Family::Suppressions, b"", None, &mut |k, _| {
            left.push(String::from_utf8_lossy(&k[1..]).into_owned());
            true
        })
        .unwrap();
    assert_eq!(left, ["forever@far.test", "live@far.test"]);
}

#[test]
fn memory_reads_answer_from_memtables_and_decline_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let opts = || RocksOptions {
        segment_min_bytes: Some(64 * 1024),
        ..Default::default()
    };
    let big = vec![b'y'; 100 * 1024];
    {
        let store = RocksStore::open(dir.path(), opts()).unwrap();
        store.write(&[message(1).into_batch()], true).unwrap();
        store
            .write(&[put(Family::Blobs, b"segment", big.clone())], true)
            .unwrap();
        // Just written: in the memtable.
        assert_eq!(
            store
                .get_in_memory(Family::Blobs, &message(1).id.0)
                .unwrap(),
            Some(Some(vec![b'x'; 3000]))
        );
        assert!(store
            .get_in_memory(Family::Envelopes, &message(1).id.0)
            .unwrap()
            .is_some_and(|found| found.is_some()));
        // A body in a segment file is always a disk read.
        assert_eq!(
            store.get_in_memory(Family::Blobs, b"segment").unwrap(),
            None
        );
        assert_eq!(
            store.get(Family::Blobs, b"segment").unwrap(),
            Some(big.clone())
        );
        store.flush().unwrap();
    }
    // Reopened: the table files are cold, so memory declines (or, where
    // RocksDB has the blocks already, answers the same as a read).
    let store = RocksStore::open(dir.path(), opts()).unwrap();
    let id = message(1).id;
    match store.get_in_memory(Family::Blobs, &id.0).unwrap() {
        None => {}
        Some(found) => assert_eq!(found, Some(vec![b'x'; 3000])),
    }
    assert_eq!(
        spool::read_body(&store, &id).unwrap(),
        Some(vec![b'x'; 3000])
    );
}
