//! Runs the conformance suite against every engine: one test per case and
//! engine, so a failure names both.

use ringpost_storage::{conformance, MemoryStore, Store};
#[cfg(feature = "rocksdb")]
use ringpost_storage::{RocksOptions, RocksStore};
use std::sync::Arc;

fn memory() -> Arc<dyn Store> {
    Arc::new(MemoryStore::new())
}

/// A RocksDB store in a fresh directory; keep the directory alive while it is used.
#[cfg(feature = "rocksdb")]
fn rocks(opts: RocksOptions) -> (tempfile::TempDir, Arc<dyn Store>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = RocksStore::open(dir.path(), opts).expect("open RocksDB");
    (dir, Arc::new(store))
}

macro_rules! per_engine {
    ($($case:ident),* $(,)?) => {
        /// Guards against a case added to the suite but not listed here.
        const LISTED: &[&str] = &[$(stringify!($case)),*];

        mod memory {
            $(#[test] fn $case() { ringpost_storage::conformance::$case(super::memory()) })*
        }

        #[cfg(feature = "rocksdb")]
        mod rocks {
            $(#[test] fn $case() {
                let (_dir, store) = super::rocks(ringpost_storage::RocksOptions::default());
                ringpost_storage::conformance::$case(store)
            })*
        }

        /// Bodies cached in memory, in a cache small enough to evict.
        #[cfg(feature = "rocksdb")]
        mod rocks_body_cache {
            $(#[test] fn $case() {
                let opts = ringpost_storage::RocksOptions { body_cache_bytes: 1 << 20, ..Default::default() };
                let (_dir, store) = super::rocks(opts);
                ringpost_storage::conformance::$case(store)
            })*
        }

        /// Every body in segment files, the empty one included.
        #[cfg(feature = "rocksdb")]
        mod rocks_body_segments {
            $(#[test] fn $case() {
                let opts = ringpost_storage::RocksOptions { segment_min_bytes: Some(0), ..Default::default() };
                let (_dir, store) = super::rocks(opts);
                ringpost_storage::conformance::$case(store)
            })*
        }

        /// Blob files off: the blobs family then stores values inline.
        #[cfg(feature = "rocksdb")]
        mod rocks_inline_blobs {
            $(#[test] fn $case() {
                let opts = ringpost_storage::RocksOptions { min_blob_size: None, ..Default::default() };
                let (_dir, store) = super::rocks(opts);
                ringpost_storage::conformance::$case(store)
            })*
        }
    };
}

per_engine!(
    put_get_delete,
    overwrite,
    batch_ops_apply_in_order,
    atomic_multi_family_batch,
    multiple_batches_in_one_write,
    scan_order_and_ranges,
    scan_early_stop,
    scan_many_keys,
    families_are_separate,
    empty_values,
    large_values,
    binary_keys,
    get_pinned_sees_what_get_sees,
    get_in_memory_agrees_with_get,
    spool_round_trip,
    spool_queue_changes,
    queue_due_order,
    users_round_trip,
    users_list_and_delete,
    pipeline_many_committers,
    pipeline_batches_queued_requests,
    pipeline_respects_byte_limit,
    pipeline_shutdown_drains_queue,
    pipeline_closed_after_shutdown,
    pipeline_failed_write_acknowledges_none,
    pipeline_full_disk_refuses_only_new_mail,
    mailbox_local_delivery_shares_one_body,
    mailbox_body_goes_with_its_last_holder,
    mailbox_account_deletion_takes_its_mailboxes,
    mailbox_uids_are_sequenced,
    mailbox_folders,
    mailbox_failed_write_reuses_nothing_seen,
    mailbox_deletion_in_the_arrivals_group_keeps_the_queued_body,
);

#[test]
fn every_case_is_listed() {
    let suite: Vec<&str> = conformance::CASES.iter().map(|(name, _)| *name).collect();
    assert_eq!(suite, LISTED);
}

/// `run_all` itself, on RocksDB: one directory per case.
#[cfg(feature = "rocksdb")]
#[test]
fn run_all_on_rocks() {
    let dirs = std::sync::Mutex::new(Vec::new());
    conformance::run_all(&|| {
        let (dir, store) = rocks(RocksOptions::default());
        dirs.lock().unwrap().push(dir);
        store
    });
}
