//! Group commit vs one write per request: on the memory engine with a
//! simulated fsync, so the benchmark measures the pipeline and not the disk;
//! and on RocksDB with real fsyncs, in a temporary directory on the disk
//! the benchmark runs from.
//!
//! Baseline (same run): every request calls `Store::write` alone and pays the
//! sync itself (RocksDB still joins concurrent writers in its own write
//! groups), which is what a server without group commit does.
//! `cargo bench -p ringpost-benches --bench commit` prints both; the ratio is
//! the gain of batching.

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use ringpost_storage::{
    CommitPipeline, Family, MemoryStore, PipelineConfig, RocksOptions, RocksStore, Store,
    StoreError, WriteBatch,
};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Memory store whose synced writes cost a fixed time, like an fsync of one
/// write-ahead log: syncs happen one at a time.
struct SlowSync {
    inner: MemoryStore,
    sync_cost: Duration,
    wal: Mutex<()>,
}

impl Store for SlowSync {
    fn write(&self, batches: &[WriteBatch], sync: bool) -> Result<(), StoreError> {
        self.inner.write(batches, false)?;
        if sync {
            let _wal = self.wal.lock().unwrap();
            let until = Instant::now() + self.sync_cost;
            while Instant::now() < until {
                std::hint::spin_loop();
            }
        }
        Ok(())
    }
    fn get(&self, family: Family, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get(family, key)
    }
    fn scan(
        &self,
        family: Family,
        start: &[u8],
        end: Option<&[u8]>,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StoreError> {
        self.inner.scan(family, start, end, visit)
    }
}

const BODY: usize = 2048;
const COMMITTERS: usize = 64;
const PER_COMMITTER: usize = 32;

fn batch(n: u64) -> WriteBatch {
    let mut b = WriteBatch::new();
    b.put(Family::Blobs, n.to_be_bytes().to_vec(), vec![b'x'; BODY]);
    b.put(Family::Envelopes, n.to_be_bytes().to_vec(), vec![b'e'; 64]);
    b
}

fn store() -> Arc<SlowSync> {
    Arc::new(SlowSync {
        inner: MemoryStore::new(),
        sync_cost: Duration::from_micros(50),
        wal: Mutex::new(()),
    })
}

/// Every request of COMMITTERS threads at once, `per_committer` each:
/// `request(n)` for n in 0..COMMITTERS × per_committer.
fn from_committers(per_committer: usize, request: impl Fn(u64) + Sync) {
    std::thread::scope(|s| {
        for t in 0..COMMITTERS {
            let request = &request;
            s.spawn(move || {
                for i in 0..per_committer {
                    request((t * per_committer + i) as u64);
                }
            });
        }
    });
}

/// One write per request, each paying its own sync.
fn one_write_each(store: &dyn Store, per_committer: usize) {
    from_committers(per_committer, |n| store.write(&[batch(n)], true).unwrap());
}

/// The same requests through the commit pipeline (group commit).
fn group_committed(store: Arc<dyn Store>, per_committer: usize) {
    let (pipeline, handle) = CommitPipeline::start(store, PipelineConfig::default(), None);
    from_committers(per_committer, |n| {
        futures::executor::block_on(handle.commit(batch(n))).unwrap()
    });
    pipeline.shutdown();
}

fn commit(c: &mut Criterion) {
    let total = (COMMITTERS * PER_COMMITTER) as u64;
    let mut group = c.benchmark_group("commit_2k_50us_sync");
    group.throughput(Throughput::Elements(total));
    group.sample_size(10);
    group.bench_function(BenchmarkId::new("one_write_per_request", COMMITTERS), |b| {
        b.iter(|| one_write_each(&*store(), PER_COMMITTER))
    });
    group.bench_function(BenchmarkId::new("group_commit", COMMITTERS), |b| {
        b.iter(|| group_committed(store(), PER_COMMITTER))
    });
    group.finish();
}

/// Requests per committer on RocksDB: every write is fsynced.
const ROCKS_PER_COMMITTER: usize = 8;

/// A fresh RocksDB store in a temporary directory (kept with it).
fn rocks() -> (tempfile::TempDir, Arc<RocksStore>) {
    let dir = tempfile::tempdir().unwrap();
    let store = RocksStore::open(dir.path(), RocksOptions::default()).unwrap();
    (dir, Arc::new(store))
}

fn commit_rocksdb(c: &mut Criterion) {
    let total = (COMMITTERS * ROCKS_PER_COMMITTER) as u64;
    let mut group = c.benchmark_group("commit_2k_rocksdb_fsync");
    group.throughput(Throughput::Elements(total));
    group.sample_size(10);
    group.bench_function(BenchmarkId::new("one_write_per_request", COMMITTERS), |b| {
        b.iter_batched(
            rocks,
            |(_dir, store)| one_write_each(&*store, ROCKS_PER_COMMITTER),
            BatchSize::PerIteration,
        )
    });
    group.bench_function(BenchmarkId::new("group_commit", COMMITTERS), |b| {
        b.iter_batched(
            rocks,
            |(_dir, store)| group_committed(store, ROCKS_PER_COMMITTER),
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, commit, commit_rocksdb);
criterion_main!(benches);
