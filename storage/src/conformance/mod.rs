//! The conformance suite every engine passes.
//!
//! Each case is a public function that takes a fresh, empty store and panics
//! when the engine misbehaves; [`run_all`] runs every case, each on a new store
//! from the caller's factory. An engine's own test file is then one line:
//!
//! ```
//! use ringpost_storage::{conformance, MemoryStore};
//! use std::sync::Arc;
//!
//! conformance::run_all(&|| Arc::new(MemoryStore::new()));
//! ```
//!
//! The cases cover the [`Store`] contract (ordering, bounds, atomic batches,
//! odd keys and values), the [`spool`] and [`users`] records on top of it, the
//! [`CommitPipeline`] over it, and mailboxes through the pipeline
//! (`mailbox` module). Pipeline cases that need a precise interleaving
//! wrap the engine in a store whose writes wait at a gate (and can be made to
//! fail), so they never depend on timing.

mod mailbox;

pub use mailbox::{
    mailbox_account_deletion_takes_its_mailboxes, mailbox_body_goes_with_its_last_holder,
    mailbox_deletion_in_the_arrivals_group_keeps_the_queued_body,
    mailbox_failed_write_reuses_nothing_seen, mailbox_folders,
    mailbox_local_delivery_shares_one_body, mailbox_uids_are_sequenced,
};

use crate::spool::{self, Envelope, MessageId, NewMessage, QueueEntry, SpoolStats};
use crate::users::{self, User};
use crate::{
    CommitHandle, CommitPipeline, CommitReport, Family, PipelineConfig, Store, StoreError,
    WriteBatch,
};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Makes a fresh, empty store for one case.
pub type MakeStore<'a> = &'a dyn Fn() -> Arc<dyn Store>;

/// One case: panics unless the fresh store it is given behaves.
pub type Case = fn(Arc<dyn Store>);

/// Every case, by name, in the order [`run_all`] runs them.
pub const CASES: &[(&str, Case)] = &[
    ("put_get_delete", put_get_delete),
    ("overwrite", overwrite),
    ("batch_ops_apply_in_order", batch_ops_apply_in_order),
    ("atomic_multi_family_batch", atomic_multi_family_batch),
    (
        "multiple_batches_in_one_write",
        multiple_batches_in_one_write,
    ),
    ("scan_order_and_ranges", scan_order_and_ranges),
    ("scan_early_stop", scan_early_stop),
    ("scan_many_keys", scan_many_keys),
    ("families_are_separate", families_are_separate),
    ("empty_values", empty_values),
    ("large_values", large_values),
    ("binary_keys", binary_keys),
    (
        "get_pinned_sees_what_get_sees",
        get_pinned_sees_what_get_sees,
    ),
    (
        "get_in_memory_agrees_with_get",
        get_in_memory_agrees_with_get,
    ),
    ("spool_round_trip", spool_round_trip),
    ("spool_queue_changes", spool_queue_changes),
    ("queue_due_order", queue_due_order),
    ("users_round_trip", users_round_trip),
    ("users_list_and_delete", users_list_and_delete),
    ("pipeline_many_committers", pipeline_many_committers),
    (
        "pipeline_batches_queued_requests",
        pipeline_batches_queued_requests,
    ),
    ("pipeline_respects_byte_limit", pipeline_respects_byte_limit),
    (
        "pipeline_shutdown_drains_queue",
        pipeline_shutdown_drains_queue,
    ),
    (
        "pipeline_closed_after_shutdown",
        pipeline_closed_after_shutdown,
    ),
    (
        "pipeline_failed_write_acknowledges_none",
        pipeline_failed_write_acknowledges_none,
    ),
    (
        "pipeline_full_disk_refuses_only_new_mail",
        pipeline_full_disk_refuses_only_new_mail,
    ),
    (
        "mailbox_local_delivery_shares_one_body",
        mailbox_local_delivery_shares_one_body,
    ),
    (
        "mailbox_body_goes_with_its_last_holder",
        mailbox_body_goes_with_its_last_holder,
    ),
    (
        "mailbox_account_deletion_takes_its_mailboxes",
        mailbox_account_deletion_takes_its_mailboxes,
    ),
    ("mailbox_uids_are_sequenced", mailbox_uids_are_sequenced),
    ("mailbox_folders", mailbox_folders),
    (
        "mailbox_failed_write_reuses_nothing_seen",
        mailbox_failed_write_reuses_nothing_seen,
    ),
    (
        "mailbox_deletion_in_the_arrivals_group_keeps_the_queued_body",
        mailbox_deletion_in_the_arrivals_group_keeps_the_queued_body,
    ),
];

/// Run every case in [`CASES`], each on a fresh store from `make`.
pub fn run_all(make: MakeStore<'_>) {
    for (name, case) in CASES {
        eprintln!("conformance: {name}");
        case(make());
    }
}

// ---- helpers ----

fn put(family: Family, key: &[u8], value: &[u8]) -> WriteBatch {
    let mut batch = WriteBatch::new();
    batch.put(family, key.to_vec(), value.to_vec());
    batch
}

fn write(store: &dyn Store, batch: WriteBatch) {
    store.write(&[batch], true).expect("write");
}

fn get(store: &dyn Store, family: Family, key: &[u8]) -> Option<Vec<u8>> {
    store.get(family, key).expect("get")
}

/// Every (key, value) of `family` in `[start, end)`.
fn scan(
    store: &dyn Store,
    family: Family,
    start: &[u8],
    end: Option<&[u8]>,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    store
        .scan(family, start, end, &mut |k, v| {
            out.push((k.to_vec(), v.to_vec()));
            true
        })
        .expect("scan");
    out
}

fn keys(rows: &[(Vec<u8>, Vec<u8>)]) -> Vec<Vec<u8>> {
    rows.iter().map(|(k, _)| k.clone()).collect()
}

/// Deterministic bytes: different for every `seed`, cheap, incompressible enough.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// Poll `done` until it holds; panic after a generous bound so a bug fails
/// the test instead of hanging it.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A store whose writes wait while its gate is closed, optionally fail, and
/// optionally take a fixed extra time (a slow disk). Reads pass straight through.
struct Gated {
    inner: Arc<dyn Store>,
    state: Mutex<GateState>,
    changed: Condvar,
}

#[derive(Default)]
struct GateState {
    closed: bool,
    fail: bool,
    delay: Duration,
    /// Writes that have reached the gate so far.
    entered: usize,
    /// What `disk_room` says (None: as the store says).
    room: Option<crate::DiskRoom>,
}

impl Gated {
    fn new(inner: Arc<dyn Store>) -> Arc<Gated> {
        Arc::new(Gated {
            inner,
            state: Mutex::default(),
            changed: Condvar::new(),
        })
    }

    fn update(&self, change: impl FnOnce(&mut GateState)) {
        change(&mut self.state.lock().unwrap());
        self.changed.notify_all();
    }

    fn wait_entered(&self, writes: usize) {
        let state = self.state.lock().unwrap();
        let (_state, timeout) = self
            .changed
            .wait_timeout_while(state, Duration::from_secs(30), |s| s.entered < writes)
            .unwrap();
        assert!(
            !timeout.timed_out(),
            "timed out waiting for write {writes} to reach the gate"
        );
    }
}

impl Store for Gated {
    fn write(&self, batches: &[WriteBatch], sync: bool) -> Result<(), StoreError> {
        let mut state = self.state.lock().unwrap();
        state.entered += 1;
        self.changed.notify_all();
        state = self.changed.wait_while(state, |s| s.closed).unwrap();
        let (fail, delay) = (state.fail, state.delay);
        drop(state);
        std::thread::sleep(delay);
        if fail {
            return Err(StoreError::Engine("injected failure".into()));
        }
        self.inner.write(batches, sync)
    }

    fn get(&self, family: Family, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get(family, key)
    }

    fn disk_room(&self) -> Result<Option<crate::DiskRoom>, StoreError> {
        match self.state.lock().unwrap().room {
            Some(room) => Ok(Some(room)),
            None => self.inner.disk_room(),
        }
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

/// A pipeline whose observer records every report.
fn start_recorded(
    store: Arc<dyn Store>,
    config: PipelineConfig,
) -> (CommitPipeline, CommitHandle, Arc<Mutex<Vec<CommitReport>>>) {
    let reports = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&reports);
    let observer: Box<dyn Fn(&CommitReport) + Send> =
        Box::new(move |report: &CommitReport| sink.lock().unwrap().push(*report));
    let (pipeline, handle) = CommitPipeline::start(store, config, Some(observer));
    (pipeline, handle, reports)
}

fn requests_per_write(reports: &Mutex<Vec<CommitReport>>) -> Vec<usize> {
    reports.lock().unwrap().iter().map(|r| r.requests).collect()
}

/// Key and value of commit `n` in the pipeline cases.
fn commit_record(n: u64) -> (Vec<u8>, Vec<u8>) {
    (
        format!("commit-{n:08}").into_bytes(),
        pattern(n, 16 + (n as usize * 37) % 2000),
    )
}

fn commit_batch(n: u64) -> WriteBatch {
    let (key, value) = commit_record(n);
    let mut batch = WriteBatch::new();
    batch.put(Family::Mailboxes, key, value);
    batch
}

fn assert_committed(store: &dyn Store, n: u64) {
    let (key, value) = commit_record(n);
    assert_eq!(
        get(store, Family::Mailboxes, &key).as_deref(),
        Some(&value[..]),
        "commit {n} is readable"
    );
}

/// Start a thread that commits record `n` and returns the outcome.
fn spawn_commit(handle: &CommitHandle, n: u64) -> std::thread::JoinHandle<Result<(), StoreError>> {
    let handle = handle.clone();
    std::thread::spawn(move || futures::executor::block_on(handle.commit(commit_batch(n))))
}

// ---- the Store contract ----

/// Put, get, delete; deleting a missing key is not an error.
pub fn put_get_delete(store: Arc<dyn Store>) {
    let store = &*store;
    assert_eq!(get(store, Family::Users, b"alice"), None);
    write(store, put(Family::Users, b"alice", b"secret"));
    assert_eq!(
        get(store, Family::Users, b"alice").as_deref(),
        Some(&b"secret"[..])
    );
    assert_eq!(get(store, Family::Users, b"alic"), None, "no prefix match");
    assert_eq!(
        get(store, Family::Users, b"alice2"),
        None,
        "no extension match"
    );

    let mut batch = WriteBatch::new();
    batch.delete(Family::Users, b"alice".to_vec());
    write(store, batch);
    assert_eq!(get(store, Family::Users, b"alice"), None);

    let mut batch = WriteBatch::new();
    batch.delete(Family::Users, b"nobody".to_vec());
    write(store, batch);
    // An empty write is fine too (the pipeline may send one).
    store.write(&[], true).expect("empty write");
    store
        .write(&[WriteBatch::new()], false)
        .expect("empty batch");
    assert!(scan(store, Family::Users, b"", None).is_empty());
}

/// A later put replaces the value, whether longer or shorter.
pub fn overwrite(store: Arc<dyn Store>) {
    let store = &*store;
    write(store, put(Family::MailboxMeta, b"k", b"first value"));
    write(store, put(Family::MailboxMeta, b"k", b"2nd"));
    assert_eq!(
        get(store, Family::MailboxMeta, b"k").as_deref(),
        Some(&b"2nd"[..])
    );
    write(
        store,
        put(Family::MailboxMeta, b"k", b"a much longer third value"),
    );
    assert_eq!(
        get(store, Family::MailboxMeta, b"k").as_deref(),
        Some(&b"a much longer third value"[..])
    );
    assert_eq!(scan(store, Family::MailboxMeta, b"", None).len(), 1);
}

/// Ops inside one batch apply in order: the last change to a key wins.
pub fn batch_ops_apply_in_order(store: Arc<dyn Store>) {
    let store = &*store;
    let mut batch = WriteBatch::new();
    batch.put(Family::Users, b"a".to_vec(), b"1".to_vec());
    batch.delete(Family::Users, b"a".to_vec());
    batch.delete(Family::Users, b"b".to_vec());
    batch.put(Family::Users, b"b".to_vec(), b"2".to_vec());
    batch.put(Family::Users, b"c".to_vec(), b"3".to_vec());
    batch.put(Family::Users, b"c".to_vec(), b"4".to_vec());
    write(store, batch);
    assert_eq!(get(store, Family::Users, b"a"), None);
    assert_eq!(get(store, Family::Users, b"b").as_deref(), Some(&b"2"[..]));
    assert_eq!(get(store, Family::Users, b"c").as_deref(), Some(&b"4"[..]));
}

/// One batch touching every family lands entirely.
pub fn atomic_multi_family_batch(store: Arc<dyn Store>) {
    let store = &*store;
    let mut batch = WriteBatch::new();
    for (i, family) in Family::ALL.iter().enumerate() {
        batch.put(*family, b"shared-key".to_vec(), vec![i as u8; i + 1]);
    }
    write(store, batch);
    for (i, family) in Family::ALL.iter().enumerate() {
        assert_eq!(
            get(store, *family, b"shared-key"),
            Some(vec![i as u8; i + 1]),
            "{}",
            family.name()
        );
    }
    // And one batch removing them all.
    let mut batch = WriteBatch::new();
    for family in Family::ALL {
        batch.delete(family, b"shared-key".to_vec());
    }
    write(store, batch);
    for family in Family::ALL {
        assert_eq!(get(store, family, b"shared-key"), None, "{}", family.name());
    }
}

/// Several batches in one write apply in order, as one unit.
pub fn multiple_batches_in_one_write(store: Arc<dyn Store>) {
    let store = &*store;
    write(store, put(Family::Envelopes, b"gone", b"old"));
    let first = put(Family::Envelopes, b"x", b"from first");
    let second = put(Family::Envelopes, b"x", b"from second");
    let mut third = put(Family::Queue, b"q", b"queued");
    third.delete(Family::Envelopes, b"gone".to_vec());
    store.write(&[first, second, third], true).expect("write");
    assert_eq!(
        get(store, Family::Envelopes, b"x").as_deref(),
        Some(&b"from second"[..])
    );
    assert_eq!(
        get(store, Family::Queue, b"q").as_deref(),
        Some(&b"queued"[..])
    );
    assert_eq!(get(store, Family::Envelopes, b"gone"), None);
}

/// Scans are ordered by unsigned bytes, start-inclusive and end-exclusive.
pub fn scan_order_and_ranges(store: Arc<dyn Store>) {
    let store = &*store;
    let all: Vec<&[u8]> = vec![b"a", b"a\0", b"a\x01", b"ab", b"abc", b"b", b"ba", b"c"];
    // Written out of order, in two writes.
    let mut batch = WriteBatch::new();
    for key in all.iter().rev().step_by(2) {
        batch.put(Family::Mailboxes, key.to_vec(), [&b"v:"[..], key].concat());
    }
    write(store, batch);
    let mut batch = WriteBatch::new();
    for key in all.iter().rev().skip(1).step_by(2) {
        batch.put(Family::Mailboxes, key.to_vec(), [&b"v:"[..], key].concat());
    }
    write(store, batch);

    let expect = |keys: &[&[u8]]| keys.iter().map(|k| k.to_vec()).collect::<Vec<_>>();
    let rows = scan(store, Family::Mailboxes, b"", None);
    assert_eq!(keys(&rows), expect(&all), "full scan is sorted");
    for (key, value) in &rows {
        assert_eq!(
            value,
            &[&b"v:"[..], &key[..]].concat(),
            "values travel with their keys"
        );
    }
    assert_eq!(
        keys(&scan(store, Family::Mailboxes, b"ab", None)),
        expect(&all[3..]),
        "start is inclusive"
    );
    assert_eq!(
        keys(&scan(store, Family::Mailboxes, b"aa", None)),
        expect(&all[3..]),
        "start need not exist"
    );
    assert_eq!(
        keys(&scan(store, Family::Mailboxes, b"a", Some(b"b"))),
        expect(&all[..5]),
        "end is exclusive"
    );
    assert_eq!(
        keys(&scan(store, Family::Mailboxes, b"a\0", Some(b"ab\0"))),
        expect(&all[1..4])
    );
    assert_eq!(
        keys(&scan(store, Family::Mailboxes, b"b", Some(b"bz"))),
        expect(&all[5..7])
    );
    assert_eq!(
        keys(&scan(store, Family::Mailboxes, b"d", None)),
        Vec::<Vec<u8>>::new(),
        "past the end"
    );
    assert!(
        scan(store, Family::Mailboxes, b"b", Some(b"b")).is_empty(),
        "empty range"
    );
    assert!(
        scan(store, Family::Mailboxes, b"c", Some(b"a")).is_empty(),
        "inverted range"
    );
    assert!(scan(store, Family::Mailboxes, b"", Some(b"")).is_empty());
}

/// A visitor returning false stops the scan at once.
pub fn scan_early_stop(store: Arc<dyn Store>) {
    let store = &*store;
    let mut batch = WriteBatch::new();
    for i in 0u32..100 {
        batch.put(Family::Queue, i.to_be_bytes().to_vec(), vec![1]);
    }
    write(store, batch);
    for stop_after in [1usize, 2, 50, 100] {
        let mut seen = Vec::new();
        store
            .scan(Family::Queue, b"", None, &mut |k, _| {
                seen.push(k.to_vec());
                seen.len() < stop_after
            })
            .expect("scan");
        let expect: Vec<Vec<u8>> = (0u32..stop_after as u32)
            .map(|i| i.to_be_bytes().to_vec())
            .collect();
        assert_eq!(seen, expect);
    }
}

/// Scans over more keys than any internal chunk or block, with a bound in the middle.
pub fn scan_many_keys(store: Arc<dyn Store>) {
    let store = &*store;
    let mut batch = WriteBatch::new();
    // Keys written in a scrambled order (7919 is prime, so i*7919 mod n is a permutation).
    let n = 5000u64;
    for i in 0..n {
        let k = (i * 7919) % n;
        batch.put(
            Family::Blobs,
            k.to_be_bytes().to_vec(),
            k.to_le_bytes().to_vec(),
        );
    }
    write(store, batch);
    let rows = scan(
        store,
        Family::Blobs,
        &1000u64.to_be_bytes(),
        Some(&4000u64.to_be_bytes()),
    );
    assert_eq!(rows.len(), 3000);
    for (i, (key, value)) in rows.iter().enumerate() {
        let k = 1000 + i as u64;
        assert_eq!(key, &k.to_be_bytes());
        assert_eq!(value, &k.to_le_bytes());
    }
    assert_eq!(scan(store, Family::Blobs, b"", None).len(), n as usize);
}

/// The same key in two families is two records; scans never cross families.
pub fn families_are_separate(store: Arc<dyn Store>) {
    let store = &*store;
    let mut batch = WriteBatch::new();
    for family in Family::ALL {
        batch.put(family, b"k".to_vec(), family.name().as_bytes().to_vec());
        batch.put(family, family.name().as_bytes().to_vec(), b"own".to_vec());
    }
    write(store, batch);
    for family in Family::ALL {
        assert_eq!(
            get(store, family, b"k").as_deref(),
            Some(family.name().as_bytes())
        );
        let rows = scan(store, family, b"", None);
        assert_eq!(rows.len(), 2, "{}", family.name());
        assert!(rows.iter().any(|(k, _)| k == family.name().as_bytes()));
    }
}

/// An empty value is a value (present, distinct from absent).
pub fn empty_values(store: Arc<dyn Store>) {
    let store = &*store;
    write(store, put(Family::Envelopes, b"empty", b""));
    assert_eq!(get(store, Family::Envelopes, b"empty"), Some(Vec::new()));
    assert_eq!(
        scan(store, Family::Envelopes, b"", None),
        vec![(b"empty".to_vec(), Vec::new())]
    );
}

/// Values of 64 KiB and 1 MiB come back byte for byte (also through a scan).
pub fn large_values(store: Arc<dyn Store>) {
    let store = &*store;
    let sizes = [4095usize, 4096, 4097, 64 << 10, 1 << 20];
    let mut batch = WriteBatch::new();
    for (i, &size) in sizes.iter().enumerate() {
        batch.put(Family::Blobs, vec![i as u8], pattern(i as u64, size));
    }
    write(store, batch);
    for (i, &size) in sizes.iter().enumerate() {
        let value = get(store, Family::Blobs, &[i as u8]).expect("present");
        assert!(
            value == pattern(i as u64, size),
            "value {i} ({size} bytes) differs"
        );
    }
    let rows = scan(store, Family::Blobs, b"", None);
    assert_eq!(rows.len(), sizes.len());
    assert!(rows[4].1 == pattern(4, 1 << 20));
}

/// Any bytes make a key: empty, zeros, 0xff, long; ordered as unsigned bytes.
pub fn binary_keys(store: Arc<dyn Store>) {
    let store = &*store;
    let keys_in_order: Vec<Vec<u8>> = vec![
        vec![],
        vec![0],
        vec![0, 0],
        vec![0, 0xff],
        vec![0x7f],
        vec![0x80],
        vec![0xfe, 0xff, 0xff],
        vec![0xff],
        vec![0xff; 1000],
    ];
    let mut batch = WriteBatch::new();
    for (i, key) in keys_in_order.iter().enumerate().rev() {
        batch.put(Family::Users, key.clone(), vec![i as u8]);
    }
    write(store, batch);
    for (i, key) in keys_in_order.iter().enumerate() {
        assert_eq!(
            get(store, Family::Users, key),
            Some(vec![i as u8]),
            "key {key:?}"
        );
    }
    assert_eq!(keys(&scan(store, Family::Users, b"", None)), keys_in_order);
    assert_eq!(
        keys(&scan(store, Family::Users, &[0x80], Some(&[0xff]))),
        keys_in_order[5..7].to_vec()
    );
}

/// Whatever `get_in_memory` answers is what `get` answers: it may only
/// decline (the disk would be needed), never differ; after a delete it
/// never answers with the old value.
pub fn get_in_memory_agrees_with_get(store: Arc<dyn Store>) {
    let store = &*store;
    let big = pattern(9, 300_000);
    let mut batch = WriteBatch::new();
    batch.put(Family::Blobs, b"big".to_vec(), big);
    batch.put(Family::Blobs, b"small".to_vec(), b"x".to_vec());
    batch.put(Family::Envelopes, b"env".to_vec(), b"e".to_vec());
    batch.put(Family::Users, b"empty".to_vec(), Vec::new());
    write(store, batch);
    let keys = [
        (Family::Blobs, &b"big"[..]),
        (Family::Blobs, b"small"),
        (Family::Blobs, b"missing"),
        (Family::Envelopes, b"env"),
        (Family::Users, b"empty"),
    ];
    for (family, key) in keys {
        if let Some(found) = store.get_in_memory(family, key).expect("get_in_memory") {
            assert_eq!(found, get(store, family, key), "{key:?}");
        }
    }
    let mut batch = WriteBatch::new();
    for (family, key) in keys {
        batch.delete(family, key.to_vec());
    }
    write(store, batch);
    for (family, key) in keys {
        let found = store.get_in_memory(family, key).expect("get_in_memory");
        assert!(matches!(found, None | Some(None)), "{key:?}: {found:?}");
    }
}

/// `get_pinned` lends exactly what `get` returns, absent included, large
/// values (blob files) too, and several loans may be held at once.
pub fn get_pinned_sees_what_get_sees(store: Arc<dyn Store>) {
    let store = &*store;
    let big = pattern(7, 300_000);
    let mut batch = WriteBatch::new();
    batch.put(Family::Blobs, b"big".to_vec(), big.clone());
    batch.put(Family::Blobs, b"small".to_vec(), b"x".to_vec());
    batch.put(Family::Users, b"empty".to_vec(), Vec::new());
    write(store, batch);
    for (family, key) in [
        (Family::Blobs, &b"big"[..]),
        (Family::Blobs, b"small"),
        (Family::Blobs, b"missing"),
        (Family::Users, b"empty"),
    ] {
        let pinned = store.get_pinned(family, key).expect("get_pinned");
        assert_eq!(
            pinned.as_deref().map(<[u8]>::to_vec),
            get(store, family, key),
            "{key:?}"
        );
    }
    let held: Vec<_> = [&b"big"[..], b"small"]
        .iter()
        .map(|key| store.get_pinned(Family::Blobs, key).expect("get_pinned"))
        .collect();
    // Overwritten while lent: the loans keep what they were given.
    let mut batch = WriteBatch::new();
    batch.put(Family::Blobs, b"big".to_vec(), b"new".to_vec());
    write(store, batch);
    assert_eq!(held[0].as_deref(), Some(&big[..]));
    assert_eq!(held[1].as_deref(), Some(&b"x"[..]));
    drop(held);
    assert_eq!(get(store, Family::Blobs, b"big"), Some(b"new".to_vec()));
}

// ---- spool records ----

fn message(micros: u64, seq: u64, domains: &[&str], due: u64) -> NewMessage {
    let id = MessageId::new(micros, 1, seq);
    let recipients: Vec<String> = domains.iter().map(|d| format!("user{seq}@{d}")).collect();
    let body = pattern(seq, 500 + seq as usize * 100);
    NewMessage {
        id,
        envelope: Envelope {
            sender: format!("sender{seq}@example.org"),
            received_at: micros,
            size: body.len() as u64,
            recipients: recipients.clone(),
            dsn: Default::default(),
        },
        queue: domains
            .iter()
            .zip(&recipients)
            .map(|(domain, rcpt)| QueueEntry {
                pool: None,
                due,
                id,
                domain: domain.to_string(),
                recipients: vec![rcpt.clone()],
                attempts: 0,
                last_error: None,
            })
            .collect(),
        body,
        mailboxes: Vec::new(),
        junk: Vec::new(),
        filed: Vec::new(),
    }
}

/// NewMessage → body, envelope, listing, due entries and stats.
pub fn spool_round_trip(store: Arc<dyn Store>) {
    let store = &*store;
    let messages = [
        message(3_000, 3, &["c.example", "a.example"], 30),
        message(1_000, 1, &["b.example"], 10),
        message(2_000, 2, &["a.example", "b.example"], 10),
    ];
    for m in &messages {
        write(store, m.clone().into_batch());
    }
    for m in &messages {
        assert_eq!(
            spool::read_body(store, &m.id).unwrap().as_ref(),
            Some(&m.body)
        );
        assert_eq!(
            spool::read_envelope(store, &m.id).unwrap().as_ref(),
            Some(&m.envelope)
        );
    }
    let unknown = MessageId::new(9, 9, 9);
    assert_eq!(spool::read_body(store, &unknown).unwrap(), None);
    assert_eq!(spool::read_envelope(store, &unknown).unwrap(), None);

    let listed = spool::list_envelopes(store).unwrap();
    let ids: Vec<MessageId> = listed.iter().map(|(id, _)| *id).collect();
    assert_eq!(
        ids,
        vec![messages[1].id, messages[2].id, messages[0].id],
        "id (time) order"
    );
    assert_eq!(listed[0].1, messages[1].envelope);

    let mut expect: Vec<QueueEntry> = messages.iter().flat_map(|m| m.queue.clone()).collect();
    expect.sort_by_key(QueueEntry::key);
    assert_eq!(
        spool::due_queue_entries(store, u64::MAX, 100).unwrap(),
        expect
    );
    assert_eq!(
        spool::due_queue_entries(store, 10, 100).unwrap(),
        expect[..3].to_vec(),
        "due <= 10"
    );
    assert_eq!(spool::due_queue_entries(store, 9, 100).unwrap(), vec![]);
    let mut scanned = Vec::new();
    spool::scan_queue_entries(store, &mut |entry| {
        scanned.push(entry);
        scanned.len() < 4
    })
    .unwrap();
    assert_eq!(
        scanned,
        expect[..4].to_vec(),
        "scan in due order, early stop"
    );
    assert_eq!(
        spool::due_queue_entries(store, 30, 2).unwrap(),
        expect[..2].to_vec(),
        "limit"
    );

    assert_eq!(
        spool::stats(store).unwrap(),
        SpoolStats {
            messages: 3,
            bytes: messages.iter().map(|m| m.body.len() as u64).sum(),
            queue_entries: 5,
        }
    );
}

/// Reschedule, remove a finished entry, delete a delivered message.
pub fn spool_queue_changes(store: Arc<dyn Store>) {
    let shared = store.clone();
    let store = &*store;
    let m = message(1_000, 1, &["a.example", "b.example"], 100);
    write(store, m.clone().into_batch());

    // a.example failed temporarily: due later, one more attempt, error kept.
    let old = m.queue[0].clone();
    let new = QueueEntry {
        due: 500,
        attempts: 1,
        last_error: Some("451 later".into()),
        ..old.clone()
    };
    let mut batch = WriteBatch::new();
    spool::reschedule(&mut batch, &old, &new);
    write(store, batch);
    assert_eq!(
        spool::due_queue_entries(store, 100, 10).unwrap(),
        vec![m.queue[1].clone()]
    );
    assert_eq!(
        spool::due_queue_entries(store, 500, 10).unwrap(),
        vec![m.queue[1].clone(), new.clone()]
    );

    // b.example delivered: its entry goes, the envelope loses a recipient.
    let mut batch = WriteBatch::new();
    spool::delete_queue_entry(&mut batch, &m.queue[1]);
    let envelope = Envelope {
        recipients: vec![m.envelope.recipients[0].clone()],
        ..m.envelope.clone()
    };
    spool::put_envelope(&mut batch, &m.id, &envelope);
    write(store, batch);
    assert_eq!(spool::read_envelope(store, &m.id).unwrap(), Some(envelope));
    assert_eq!(spool::stats(store).unwrap().queue_entries, 1);

    // a.example delivered at last: nothing left.
    // Releasing a message is a change only the commit writer resolves.
    let mut batch = WriteBatch::new();
    spool::delete_queue_entry(&mut batch, &new);
    spool::delete_message(&mut batch, &m.id);
    assert!(
        store.write(&[batch.clone()], true).is_err(),
        "a store refuses unresolved changes"
    );
    let (pipeline, commits) = CommitPipeline::start(shared, PipelineConfig::default(), None);
    commits.commit_blocking(batch).expect("commit");
    pipeline.shutdown();
    assert_eq!(spool::stats(store).unwrap(), SpoolStats::default());
    assert_eq!(spool::read_body(store, &m.id).unwrap(), None);
}

/// Many entries with scrambled due times come back in (due, id, domain) order.
pub fn queue_due_order(store: Arc<dyn Store>) {
    let store = &*store;
    let mut all = Vec::new();
    let mut batch = WriteBatch::new();
    for i in 0u64..600 {
        // Due times collide on purpose (i*7919 mod 250), ids do not.
        let entry = QueueEntry {
            pool: None,
            due: (i * 7919) % 250 * 1000,
            id: MessageId::new(1_000_000 - i, (i % 3) as u16, i),
            domain: format!("d{}.example", i % 5),
            recipients: vec![format!("r{i}@d{}.example", i % 5)],
            attempts: (i % 4) as u32,
            last_error: (i % 2 == 0).then(|| format!("error {i}")),
        };
        spool::put_queue_entry(&mut batch, &entry);
        all.push(entry);
    }
    let far = QueueEntry {
        due: u64::MAX,
        domain: "far.example".into(),
        ..QueueEntry::default()
    };
    spool::put_queue_entry(&mut batch, &far);
    write(store, batch);
    all.sort_by(|a, b| (a.due, a.id, &a.domain).cmp(&(b.due, b.id, &b.domain)));

    let due = spool::due_queue_entries(store, 100_000, usize::MAX).unwrap();
    let expect: Vec<QueueEntry> = all.iter().filter(|e| e.due <= 100_000).cloned().collect();
    assert!(
        expect.iter().any(|e| e.due == 100_000),
        "the bound itself is included"
    );
    assert_eq!(due, expect);
    assert_eq!(
        spool::due_queue_entries(store, 100_000, 7).unwrap(),
        expect[..7].to_vec()
    );
    assert_eq!(
        spool::due_queue_entries(store, 0, usize::MAX)
            .unwrap()
            .len(),
        all.iter().filter(|e| e.due == 0).count()
    );
    assert!(spool::due_queue_entries(store, u64::MAX, 0)
        .unwrap()
        .is_empty());
    let everything = spool::due_queue_entries(store, u64::MAX, usize::MAX).unwrap();
    assert_eq!(everything.len(), all.len() + 1);
    assert_eq!(everything.last(), Some(&far));
    assert_eq!(
        spool::stats(store).unwrap().queue_entries,
        all.len() as u64 + 1
    );
}

// ---- accounts ----

fn account(name: &str, hash: &str, created: u64) -> User {
    User {
        name: name.into(),
        password_hash: hash.into(),
        created,
        settings: Default::default(),
    }
}

/// Put, get in any case, existence checks, a password change that keeps the
/// rest of the record.
pub fn users_round_trip(store: Arc<dyn Store>) {
    let store = &*store;
    assert_eq!(users::get_user(store, "alice@example.test").unwrap(), None);
    assert!(!users::user_exists(store, "alice@example.test").unwrap());

    let mut alice = account("Alice@Example.Test", "$argon2id$v=19$first", 1_700_000_000);
    alice.settings.insert(7, b"kept".to_vec());
    let mut batch = WriteBatch::new();
    users::put_user(&mut batch, &alice);
    write(store, batch);

    let expect = User {
        name: "alice@example.test".into(),
        ..alice.clone()
    };
    for name in [
        "alice@example.test",
        "ALICE@EXAMPLE.TEST",
        "Alice@Example.Test",
    ] {
        assert_eq!(
            users::get_user(store, name).unwrap().as_ref(),
            Some(&expect),
            "{name}"
        );
        assert!(users::user_exists(store, name).unwrap(), "{name}");
    }
    assert_eq!(
        get(store, Family::Users, b"alice@example.test"),
        Some(alice.encode_value()),
        "keyed by the lowercased name"
    );
    assert!(!users::user_exists(store, "alice@example.tes").unwrap());
    assert!(!users::user_exists(store, "alice@example.test.").unwrap());
    assert!(!users::user_exists(store, "bob@example.test").unwrap());

    // A password change rewrites the record; created and settings stay.
    let changed = User {
        password_hash: "$argon2id$v=19$second".into(),
        ..users::get_user(store, "alice@example.test")
            .unwrap()
            .unwrap()
    };
    let mut batch = WriteBatch::new();
    users::put_user(&mut batch, &changed);
    write(store, batch);
    let read = users::get_user(store, "alice@example.test")
        .unwrap()
        .unwrap();
    assert_eq!(read.password_hash, "$argon2id$v=19$second");
    assert_eq!(read.created, 1_700_000_000);
    assert_eq!(read.settings.get(&7).map(Vec::as_slice), Some(&b"kept"[..]));
    assert_eq!(users::list_users(store).unwrap(), vec![read]);
}

/// Listing is in name order; deleting removes exactly one account; other
/// families never show up as accounts.
pub fn users_list_and_delete(shared: Arc<dyn Store>) {
    let store = &*shared;
    assert!(users::list_users(store).unwrap().is_empty());
    let names = [
        "zoe@example.test",
        "bob@b.test",
        "bob@a.test",
        "éloïse@bücher.test",
        "a@example.test",
    ];
    let mut batch = WriteBatch::new();
    for (i, name) in names.iter().enumerate() {
        users::put_user(&mut batch, &account(name, &format!("hash-{i}"), i as u64));
    }
    write(store, batch);
    // Something in another family under an account-like key is not an account.
    write(store, put(Family::MailboxMeta, b"carol@example.test", b"x"));

    let listed: Vec<String> = users::list_users(store)
        .unwrap()
        .into_iter()
        .map(|u| u.name)
        .collect();
    let mut sorted: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    sorted.sort();
    assert_eq!(listed, sorted, "byte (name) order");
    assert!(!users::user_exists(store, "carol@example.test").unwrap());

    let mut batch = WriteBatch::new();
    users::delete_user(&mut batch, "BOB@A.TEST");
    users::delete_user(&mut batch, "nobody@example.test");
    // Deleting carries mailbox changes: only a commit writer applies them.
    assert!(store.write(&[batch.clone()], true).is_err());
    let (pipeline, commits) =
        CommitPipeline::start(shared.clone(), PipelineConfig::default(), None);
    commits.commit_blocking(batch).expect("delete");
    pipeline.shutdown();
    assert_eq!(users::get_user(store, "bob@a.test").unwrap(), None);
    assert!(users::user_exists(store, "bob@b.test").unwrap());
    assert_eq!(users::list_users(store).unwrap().len(), names.len() - 1);

    // A damaged record is reported, not skipped or panicked on.
    write(
        store,
        put(Family::Users, b"broken@example.test", &[1, 0, 200]),
    );
    assert!(matches!(
        users::list_users(store),
        Err(StoreError::Corrupt {
            family: "users",
            ..
        })
    ));
    assert!(users::get_user(store, "broken@example.test").is_err());
    assert!(users::user_exists(store, "broken@example.test").unwrap());
}

// ---- the commit pipeline ----

/// Many threads committing at once: all acknowledged, all readable, and the
/// writer groups them (on a store with a 1 ms write, like a real fsync).
pub fn pipeline_many_committers(store: Arc<dyn Store>) {
    const THREADS: u64 = 16;
    const PER_THREAD: u64 = 40;
    let gated = Gated::new(store);
    gated.update(|s| s.delay = Duration::from_millis(1));
    let (pipeline, handle, reports) = start_recorded(gated.clone(), PipelineConfig::default());
    std::thread::scope(|scope| {
        for t in 0..THREADS {
            let handle = handle.clone();
            scope.spawn(move || {
                for i in 0..PER_THREAD {
                    let n = t * PER_THREAD + i;
                    futures::executor::block_on(handle.commit(commit_batch(n)))
                        .expect("commit acknowledged");
                }
            });
        }
    });
    pipeline.shutdown();
    for n in 0..THREADS * PER_THREAD {
        assert_committed(&*gated, n);
    }
    let requests = requests_per_write(&reports);
    assert_eq!(
        requests.iter().sum::<usize>() as u64,
        THREADS * PER_THREAD,
        "every request in exactly one write"
    );
    assert!(reports
        .lock()
        .unwrap()
        .iter()
        .all(|r| r.ok && r.ops == r.requests));
    let biggest = requests.iter().max().copied().unwrap_or(0);
    assert!(
        biggest > 1,
        "16 committers on a 1 ms store must share writes: {requests:?}"
    );
}

/// Requests queued while a write runs go together into the next write, in
/// groups of at most `max_batch_requests`.
pub fn pipeline_batches_queued_requests(store: Arc<dyn Store>) {
    let gated = Gated::new(store);
    let config = PipelineConfig {
        max_batch_requests: 8,
        ..PipelineConfig::default()
    };
    let (pipeline, handle, reports) = start_recorded(gated.clone(), config);
    gated.update(|s| s.closed = true);
    let first = spawn_commit(&handle, 0);
    gated.wait_entered(1);
    let queued: Vec<_> = (1..=20).map(|n| spawn_commit(&handle, n)).collect();
    wait_until("20 queued commits", || handle.queued() == 20);
    gated.update(|s| s.closed = false);
    first.join().unwrap().expect("first commit");
    for commit in queued {
        commit.join().unwrap().expect("queued commit");
    }
    assert_eq!(requests_per_write(&reports), vec![1, 8, 8, 4]);
    for n in 0..=20 {
        assert_committed(&*gated, n);
    }
    pipeline.shutdown();
}

/// A group stops before `max_batch_bytes`; a single larger request goes alone.
pub fn pipeline_respects_byte_limit(store: Arc<dyn Store>) {
    let gated = Gated::new(store);
    let config = PipelineConfig {
        max_batch_bytes: 250,
        ..PipelineConfig::default()
    };
    let (pipeline, handle, reports) = start_recorded(gated.clone(), config);
    let sized = |n: u8, bytes: usize| put(Family::Users, &[n], &vec![n; bytes - 1]);

    gated.update(|s| s.closed = true);
    let blocker = {
        let handle = handle.clone();
        std::thread::spawn(move || handle.commit_blocking(sized(0, 10)))
    };
    gated.wait_entered(1);
    // Queue one at a time so their order is known.
    let mut waiters = Vec::new();
    for (i, bytes) in [100usize, 100, 100, 400, 100].into_iter().enumerate() {
        let committer = handle.clone();
        let batch = sized(i as u8 + 1, bytes);
        waiters.push(std::thread::spawn(move || committer.commit_blocking(batch)));
        wait_until("the commit to queue", || handle.queued() == i + 1);
    }
    gated.update(|s| s.closed = false);
    blocker.join().unwrap().expect("blocker");
    for waiter in waiters {
        waiter.join().unwrap().expect("commit");
    }
    let bytes: Vec<usize> = reports.lock().unwrap().iter().map(|r| r.bytes).collect();
    assert_eq!(bytes, vec![10, 200, 100, 400, 100]);
    pipeline.shutdown();
}

/// Shutdown commits everything queued before it, then `commit` says `Closed`.
pub fn pipeline_shutdown_drains_queue(store: Arc<dyn Store>) {
    let gated = Gated::new(store);
    let (pipeline, handle, reports) = start_recorded(gated.clone(), PipelineConfig::default());
    gated.update(|s| s.closed = true);
    let first = spawn_commit(&handle, 0);
    gated.wait_entered(1);
    let queued: Vec<_> = (1..=10).map(|n| spawn_commit(&handle, n)).collect();
    wait_until("10 queued commits", || handle.queued() == 10);
    let stopper = std::thread::spawn(move || pipeline.shutdown());
    // The shutdown marker queues behind the ten commits.
    wait_until("the shutdown marker", || handle.queued() == 11);
    gated.update(|s| s.closed = false);
    stopper.join().unwrap();
    first.join().unwrap().expect("first commit");
    for commit in queued {
        commit
            .join()
            .unwrap()
            .expect("queued commit acknowledged by shutdown");
    }
    for n in 0..=10 {
        assert_committed(&*gated, n);
    }
    assert_eq!(requests_per_write(&reports).iter().sum::<usize>(), 11);
    assert_eq!(
        handle.commit_blocking(commit_batch(11)),
        Err(StoreError::Closed)
    );
    assert_eq!(get(&*gated, Family::Mailboxes, &commit_record(11).0), None);
}

/// A nearly full disk refuses new mail request by request: a change
/// without a body that shares its group (a delivery recorded, flags, a
/// deletion) still commits, and the report says how many were refused.
pub fn pipeline_full_disk_refuses_only_new_mail(store: Arc<dyn Store>) {
    let gated = Gated::new(store);
    let (pipeline, handle, reports) = start_recorded(gated.clone(), PipelineConfig::default());
    gated.update(|s| s.closed = true);
    let first = spawn_commit(&handle, 0);
    gated.wait_entered(1);
    let mail = {
        let handle = handle.clone();
        let batch = message(1_700_000_000_000_000, 1, &["far.test"], 5).into_batch();
        std::thread::spawn(move || handle.commit_blocking(batch))
    };
    wait_until("the mail queued", || handle.queued() == 1);
    let change = spawn_commit(&handle, 1);
    wait_until("the change queued", || handle.queued() == 2);
    gated.update(|s| {
        s.room = Some(crate::DiskRoom {
            free: 1 << 30,
            reserve: 1 << 31,
        });
        s.closed = false;
    });
    first.join().unwrap().expect("first commit");
    let refused = mail.join().unwrap();
    assert!(
        matches!(refused, Err(StoreError::DiskFull { .. })),
        "{refused:?}"
    );
    change
        .join()
        .unwrap()
        .expect("a change without a body passes the reserve");
    assert_committed(&*gated, 1);
    assert_eq!(spool::stats(&*gated).unwrap().messages, 0);
    let last = *reports.lock().unwrap().last().unwrap();
    assert_eq!(
        (
            last.requests,
            last.refused,
            last.disk_full,
            last.ok,
            last.room_again
        ),
        (1, 1, true, true, false)
    );
    // Still full: a change alone does not say otherwise.
    handle.commit_blocking(commit_batch(2)).expect("a change");
    assert!(!reports.lock().unwrap().last().unwrap().room_again);
    // Room again: the next write says so, with mail or without.
    gated.update(|s| s.room = None);
    handle.commit_blocking(commit_batch(3)).expect("a change");
    assert!(reports.lock().unwrap().last().unwrap().room_again);
    let batch = message(1_700_000_000_000_000, 2, &["far.test"], 5).into_batch();
    handle.commit_blocking(batch).expect("mail with room");
    // A delivery's outcome with its DSN passes the reserve.
    gated.update(|s| {
        s.room = Some(crate::DiskRoom {
            free: 1 << 30,
            reserve: 1 << 31,
        })
    });
    let mut outcome = message(1_700_000_000_000_000, 3, &["far.test"], 5).into_batch();
    outcome.pass_reserve();
    handle.commit_blocking(outcome).expect("an outcome passes");
    // Nothing passes the last quarter of the reserve.
    gated.update(|s| {
        s.room = Some(crate::DiskRoom {
            free: 1 << 20,
            reserve: 1 << 30,
        })
    });
    assert!(matches!(
        handle.commit_blocking(commit_batch(4)),
        Err(StoreError::DiskFull { .. })
    ));
    pipeline.shutdown();
}

/// After shutdown or drop, every handle (and its clones) gets `Closed`.
pub fn pipeline_closed_after_shutdown(store: Arc<dyn Store>) {
    let (pipeline, handle) =
        CommitPipeline::start(Arc::clone(&store), PipelineConfig::default(), None);
    let clone = handle.clone();
    handle
        .commit_blocking(commit_batch(1))
        .expect("commit before shutdown");
    pipeline.shutdown();
    assert_eq!(
        handle.commit_blocking(commit_batch(2)),
        Err(StoreError::Closed)
    );
    assert_eq!(
        futures::executor::block_on(clone.commit(commit_batch(3))),
        Err(StoreError::Closed)
    );
    assert_committed(&*store, 1);

    // Dropping the pipeline stops it the same way.
    let (pipeline, handle) =
        CommitPipeline::start(Arc::clone(&store), PipelineConfig::default(), None);
    handle
        .commit_blocking(commit_batch(4))
        .expect("commit before drop");
    drop(pipeline);
    assert_eq!(
        handle.commit_blocking(commit_batch(5)),
        Err(StoreError::Closed)
    );
    assert_committed(&*store, 4);
    assert_eq!(get(&*store, Family::Mailboxes, &commit_record(5).0), None);
}

/// A failed write gives its error to every waiter in it and acknowledges
/// none; the pipeline keeps going afterwards.
pub fn pipeline_failed_write_acknowledges_none(store: Arc<dyn Store>) {
    let gated = Gated::new(store);
    let (pipeline, handle, reports) = start_recorded(gated.clone(), PipelineConfig::default());
    gated.update(|s| s.closed = true);
    let first = spawn_commit(&handle, 0);
    gated.wait_entered(1);
    let queued: Vec<_> = (1..=5).map(|n| spawn_commit(&handle, n)).collect();
    wait_until("5 queued commits", || handle.queued() == 5);
    gated.update(|s| {
        s.fail = true;
        s.closed = false;
    });
    let injected = Err(StoreError::Engine("injected failure".into()));
    assert_eq!(first.join().unwrap(), injected);
    for commit in queued {
        assert_eq!(
            commit.join().unwrap(),
            injected,
            "every waiter of the failed write hears of it"
        );
    }
    for n in 0..=5 {
        assert_eq!(
            get(&*gated, Family::Mailboxes, &commit_record(n).0),
            None,
            "commit {n} must not be stored"
        );
    }
    let seen: Vec<(usize, bool)> = reports
        .lock()
        .unwrap()
        .iter()
        .map(|r| (r.requests, r.ok))
        .collect();
    assert_eq!(seen, vec![(1, false), (5, false)]);

    gated.update(|s| s.fail = false);
    handle
        .commit_blocking(commit_batch(6))
        .expect("the pipeline survives a failed write");
    assert_committed(&*gated, 6);
    pipeline.shutdown();
}
