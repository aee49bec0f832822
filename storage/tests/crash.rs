//! Crash test: what the pipeline acknowledged survives a SIGKILL.
//!
//! The parent test re-runs this very test binary as a child process that runs
//! only the (ignored) `crash_child` test. The child opens a RocksDB store,
//! commits deterministic records through the commit pipeline from several
//! threads, and prints `ack <n>` only after commit `n` resolved `Ok`. The
//! parent collects acks, kills the child with SIGKILL mid-stream, then opens
//! the store again (read-only first, as `ringpost spool stats` would, then
//! read-write) and checks that every acknowledged record is there, byte for
//! byte, in every family it was written to.
#![cfg(feature = "rocksdb")]

use ringpost_storage::{
    CommitPipeline, Family, PipelineConfig, RocksOptions, RocksStore, Store, WriteBatch,
};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Tells the child process where its store is (and that it is the child).
const DIR_VAR: &str = "RINGPOST_CRASH_DIR";
/// Committing threads in the child.
const THREADS: u64 = 8;
/// Kill after this many acks...
const KILL_AFTER_ACKS: usize = 2000;
/// ...or this long after the child started, whichever comes first.
const KILL_AFTER: Duration = Duration::from_secs(3);

/// The blob of record `n`: sizes from a few bytes to 64 KiB, so some stay
/// inline and some go to blob files; contents differ for every `n`.
fn value(n: u64) -> Vec<u8> {
    let len = match n % 4 {
        0 => 1 + (n % 200) as usize,
        1 => 2048,
        2 => (n as usize).wrapping_mul(37) % 8192,
        _ => 1 + (n as usize).wrapping_mul(7919) % (64 << 10),
    };
    ringpost_storage::conformance::pattern(n, len)
}

/// Record `n`: its blob plus a small row in another family, in one batch, so
/// the check also catches a torn (half-applied) batch.
fn batch(n: u64) -> WriteBatch {
    let mut batch = WriteBatch::new();
    batch.put(Family::Blobs, n.to_be_bytes().to_vec(), value(n));
    batch.put(
        Family::Envelopes,
        n.to_be_bytes().to_vec(),
        format!("envelope {n}").into_bytes(),
    );
    batch
}

/// The child: commit until killed. Ignored so that a plain `cargo test` does
/// not run it; the parent runs it with `--ignored`.
#[test]
#[ignore = "run by crash_after_acks_loses_nothing as a child process"]
fn crash_child() {
    let Some(dir) = std::env::var_os(DIR_VAR) else {
        return;
    };
    let store = Arc::new(RocksStore::open(Path::new(&dir), RocksOptions::default()).expect("open"));
    let (_pipeline, handle) = CommitPipeline::start(store, PipelineConfig::default(), None);
    std::thread::scope(|scope| {
        for t in 0..THREADS {
            let handle = handle.clone();
            scope.spawn(move || {
                for n in (t..).step_by(THREADS as usize) {
                    handle.commit_blocking(batch(n)).expect("commit");
                    // One line per ack, flushed before the next commit: an
                    // ack the parent reads is one the pipeline gave.
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ack {n}")
                        .and_then(|()| out.flush())
                        .expect("stdout");
                }
            });
        }
    });
}

/// Read the store at `dir` and check every acknowledged record.
fn check(store: &dyn Store, acked: &[u64]) {
    for &n in acked {
        let key = n.to_be_bytes();
        let blob = store.get(Family::Blobs, &key).expect("get");
        assert!(
            blob.as_deref() == Some(&value(n)[..]),
            "acked record {n}: blob missing or different"
        );
        let envelope = store.get(Family::Envelopes, &key).expect("get");
        assert_eq!(
            envelope,
            Some(format!("envelope {n}").into_bytes()),
            "acked record {n}: envelope"
        );
    }
}

#[test]
fn crash_after_acks_loses_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let started = Instant::now();
    let mut child = Command::new(std::env::current_exe().expect("own test binary"))
        .args([
            "--exact",
            "crash_child",
            "--nocapture",
            "--ignored",
            "--test-threads=1",
        ])
        .env(DIR_VAR, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child");

    // A reader thread turns lines into acks, so the parent can wait with a deadline.
    let stdout = child.stdout.take().expect("child stdout");
    let (acks, acks_in) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            // libtest may print its own text on the same line ("test crash_child ... ").
            if let Some((_, n)) = line.rsplit_once("ack ") {
                let n: u64 = n
                    .trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("bad ack line {line:?}"));
                if acks.send(n).is_err() {
                    break;
                }
            }
        }
    });

    let mut acked = Vec::new();
    let deadline = started + KILL_AFTER;
    while acked.len() < KILL_AFTER_ACKS {
        let left = deadline.saturating_duration_since(Instant::now());
        match acks_in.recv_timeout(left) {
            Ok(n) => acked.push(n),
            Err(mpsc::RecvTimeoutError::Timeout) => break,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                panic!("child exited early: {:?}", child.wait())
            }
        }
    }
    let pid = i32::try_from(child.id()).expect("pid fits in pid_t");
    // SAFETY: kill(2) with a pid we spawned and still own (not yet waited for).
    let killed = unsafe { libc::kill(pid, libc::SIGKILL) };
    assert_eq!(killed, 0, "kill failed");
    let status = child.wait().expect("wait for child");
    assert!(
        !status.success(),
        "child must die by the signal, got {status:?}"
    );
    // Acks already in the pipe were given before the kill: they count too.
    reader.join().expect("reader thread");
    acked.extend(acks_in.try_iter());
    let ran_for = started.elapsed();
    assert!(
        !acked.is_empty(),
        "the child acknowledged nothing before the deadline"
    );

    let read_only = RocksStore::open(
        dir.path(),
        RocksOptions {
            read_only: true,
            ..Default::default()
        },
    )
    .expect("read-only open after the crash");
    check(&read_only, &acked);
    assert_eq!(
        read_only.write(&[WriteBatch::new()], true),
        Err(ringpost_storage::StoreError::ReadOnly)
    );
    drop(read_only);

    let store = RocksStore::open(dir.path(), RocksOptions::default())
        .expect("read-write open after the crash");
    check(&store, &acked);
    eprintln!(
        "crash test: {} acked records (max n {}) in {:.2?}, all present after SIGKILL",
        acked.len(),
        acked.iter().max().unwrap(),
        ran_for
    );
}
