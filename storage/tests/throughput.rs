//! Rough numbers for group commit on RocksDB with fsync (ignored: slow and
//! machine-dependent). Run with
//! `cargo test -p ringpost-storage --release --test throughput -- --ignored --nocapture`.
//!
//! Prints acknowledged commits per second for one unbatched writer (one
//! synced `Store::write` per commit) and for the pipeline with several
//! numbers of concurrent committers, all in the same run on the same disk.
#![cfg(feature = "rocksdb")]

use ringpost_storage::{
    CommitPipeline, CommitReport, Family, PipelineConfig, RocksOptions, RocksStore, Store,
    WriteBatch,
};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const RUN_FOR: Duration = Duration::from_millis(1500);

fn batch(n: u64, body: usize) -> WriteBatch {
    let mut batch = WriteBatch::new();
    let key = n.to_be_bytes().to_vec();
    let mut value = vec![0u8; body];
    value[..8].copy_from_slice(&n.to_le_bytes());
    batch.put(Family::Blobs, key.clone(), value);
    batch.put(Family::Envelopes, key.clone(), vec![1; 120]);
    batch.put(Family::Queue, key, vec![2; 60]);
    batch
}

fn unbatched(opts: RocksOptions, body: usize) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let store = RocksStore::open(dir.path(), opts).unwrap();
    let started = Instant::now();
    let mut n = 0;
    while started.elapsed() < RUN_FOR {
        store.write(&[batch(n, body)], true).unwrap();
        n += 1;
    }
    n as f64 / started.elapsed().as_secs_f64()
}

/// Returns (commits/s, mean requests per physical write).
fn pipelined(opts: RocksOptions, body: usize, committers: u64) -> (f64, f64) {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(RocksStore::open(dir.path(), opts).unwrap());
    let writes = Arc::new(Mutex::new((0u64, 0u64)));
    let sink = Arc::clone(&writes);
    let observer: Box<dyn Fn(&CommitReport) + Send> = Box::new(move |r: &CommitReport| {
        let mut w = sink.lock().unwrap();
        w.0 += 1;
        w.1 += r.requests as u64;
    });
    let (pipeline, handle) =
        CommitPipeline::start(store, PipelineConfig::default(), Some(observer));
    let stop = AtomicBool::new(false);
    let done = AtomicU64::new(0);
    let started = Instant::now();
    std::thread::scope(|scope| {
        for t in 0..committers {
            let (handle, stop, done) = (handle.clone(), &stop, &done);
            scope.spawn(move || {
                let mut n = t;
                while !stop.load(Ordering::Relaxed) {
                    handle.commit_blocking(batch(n, body)).unwrap();
                    done.fetch_add(1, Ordering::Relaxed);
                    n += committers;
                }
            });
        }
        std::thread::sleep(RUN_FOR);
        stop.store(true, Ordering::Relaxed);
    });
    let elapsed = started.elapsed().as_secs_f64();
    pipeline.shutdown();
    let (physical, requests) = *writes.lock().unwrap();
    (
        done.load(Ordering::Relaxed) as f64 / elapsed,
        requests as f64 / physical.max(1) as f64,
    )
}

#[test]
#[ignore = "benchmark: run by hand with --ignored --nocapture"]
fn group_commit_throughput() {
    let blob = RocksOptions::default();
    let inline = RocksOptions {
        min_blob_size: None,
        ..Default::default()
    };
    for body in [2048, 16 << 10] {
        println!(
            "body {body} B, unbatched sync writes: {:>8.0} commits/s",
            unbatched(blob.clone(), body)
        );
        for committers in [1, 8, 64, 256] {
            for (name, opts) in [("blob files", &blob), ("inline", &inline)] {
                let (rate, per_write) = pipelined(opts.clone(), body, committers);
                println!(
                    "body {body} B, pipeline, {committers:>3} committers, {name:<10}: {rate:>8.0} commits/s, {per_write:>6.1} per fsync"
                );
            }
        }
    }
}
