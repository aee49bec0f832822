//! The relay scheduler with a deep queue: 1,000,000 deferred entries put
//! in (in the order deferrals arrive: mostly ascending wake times, one
//! domain in a hundred), then taken out as they come due.
//!
//! Baseline (same run): the same keys in a plain `BTreeSet<(u64, u128)>`,
//! the structure the schedule had before its buckets. `cargo bench -p
//! ringpost-benches --bench schedule` prints both; the ratio is the
//! schedule's cost over the bare ordered set (it also interns domains and
//! tracks which entries are in memory).

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ringpost_engine::relay::Schedule;
use ringpost_storage::spool::MessageId;
use std::collections::BTreeSet;

const ENTRIES: u64 = 1_000_000;

/// Wake time (ms) of entry `n`: a day of deferrals, jittered.
fn wake(n: u64) -> u64 {
    86_400_000 + n * 80 + (n * 7919) % 1_000
}

fn domains() -> Vec<String> {
    (0..100).map(|d| format!("d{d}.example")).collect()
}

fn schedule(c: &mut Criterion) {
    let domains = domains();
    let mut group = c.benchmark_group("schedule_1m");
    group.throughput(Throughput::Elements(ENTRIES));
    group.sample_size(10);
    group.bench_function("btreeset_baseline", |b| {
        b.iter_batched(
            BTreeSet::new,
            |mut set: BTreeSet<(u64, u128)>| {
                for n in 0..ENTRIES {
                    set.insert((wake(n), u128::from(n)));
                }
                let mut popped = 0;
                while set.pop_first().is_some() {
                    popped += 1;
                }
                popped
            },
            BatchSize::PerIteration,
        )
    });
    group.bench_function("schedule", |b| {
        b.iter_batched(
            Schedule::default,
            |mut s: Schedule| {
                for n in 0..ENTRIES {
                    let id = MessageId::new(n, 0, n);
                    let domain = &domains[(n % 100) as usize];
                    s.insert_known(id, domain);
                    s.defer(wake(n), id, domain, wake(n));
                }
                let mut popped = 0;
                while s.pop_due(u64::MAX).is_some() {
                    popped += 1;
                }
                popped
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, schedule);
criterion_main!(benches);
