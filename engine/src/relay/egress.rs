//! Egress sources (`relay.sources`): the local addresses outbound
//! connections come from, each with its own EHLO name, grouped into pools
//! (`relay.pools`; a message's pool is chosen when it is accepted). A
//! connection picks a source of its pool (every source when it has none)
//! by weight among those still under their daily limit (the warm-up
//! schedule of a new IP, or a plain cap); when every source has reached
//! its limit, delivery waits (the entries are deferred) until the next UTC
//! day. Counts are per day, shared by every shard through atomics: a
//! connection takes one from its source's allowance for each message it
//! sends, and ends when the source has none left.

use crate::config::{PoolConfig, SourceConfig};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

/// The sources, shared by all shards' relays.
#[derive(Debug)]
pub struct Egress {
    sources: Vec<Source>,
    /// Each pool's sources, as indexes into `sources`.
    pools: HashMap<String, Vec<usize>>,
}

#[derive(Debug)]
struct Source {
    config: SourceConfig,
    /// Day number (high 24 bits) ‖ messages sent that day (low 40 bits).
    sent: AtomicU64,
}

const COUNT_BITS: u32 = 40;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;

impl Egress {
    /// The sources and pools `config` lists; None when it lists no source.
    pub fn new(sources: &[SourceConfig], pools: &[PoolConfig]) -> Option<Egress> {
        let pools = pools
            .iter()
            .map(|pool| {
                let members = (0..sources.len())
                    .filter(|&i| pool.sources.contains(&sources[i].address))
                    .collect();
                (pool.name.clone(), members)
            })
            .collect();
        (!sources.is_empty()).then(|| Egress {
            pools,
            sources: sources
                .iter()
                .map(|config| Source {
                    config: config.clone(),
                    sent: AtomicU64::new(0),
                })
                .collect(),
        })
    }

    /// How many sources there are.
    pub fn len(&self) -> usize {
        self.sources.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// Source `index`'s address.
    pub fn address(&self, index: usize) -> IpAddr {
        self.sources[index].config.address
    }

    /// The EHLO name of source `index`, if it has its own.
    pub fn ehlo(&self, index: usize) -> Option<&str> {
        self.sources[index].config.ehlo.as_deref()
    }

    /// A source of `pool` (None, or a pool that no longer exists: any) for
    /// a new connection on `day` (days since the epoch, UTC), by weight
    /// among those under their limit and of the family of the destination
    /// `to`; `unit` in [0, 1) picks. None: all are at their limit (or none
    /// can reach `to`).
    pub fn pick(&self, day: u64, to: IpAddr, unit: f64, pool: Option<&str>) -> Option<usize> {
        let all: Vec<usize>;
        let members = match pool.and_then(|name| self.pools.get(name)) {
            Some(members) => members,
            None => {
                all = (0..self.sources.len()).collect();
                &all
            }
        };
        let open: Vec<usize> = members
            .iter()
            .copied()
            .filter(|&i| self.sources[i].config.address.is_ipv4() == to.is_ipv4())
            .filter(|&i| self.room(i, day))
            .collect();
        let total: u64 = open
            .iter()
            .map(|&i| u64::from(self.sources[i].config.weight))
            .sum();
        let mut point = (unit * total as f64) as u64;
        for i in open {
            let weight = u64::from(self.sources[i].config.weight);
            if point < weight {
                return Some(i);
            }
            point -= weight;
        }
        None
    }

    /// Whether source `index` may send one more message on `day`.
    pub fn room(&self, index: usize, day: u64) -> bool {
        let source = &self.sources[index];
        match source.config.limit_on(day) {
            None => true,
            Some(limit) => sent_on(source.sent.load(Ordering::Relaxed), day) < limit,
        }
    }

    /// Count one message against source `index`'s limit on `day`: false,
    /// and nothing counted, when it has no room left. The check and the
    /// count are one atomic step, so connections on every shard sending at
    /// once cannot together go past the limit.
    pub fn take(&self, index: usize, day: u64) -> bool {
        let source = &self.sources[index];
        let limit = source.config.limit_on(day).unwrap_or(COUNT_MASK);
        source
            .sent
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |packed| {
                let count = sent_on(packed, day);
                (count < limit.min(COUNT_MASK)).then_some((day << COUNT_BITS) | (count + 1))
            })
            .is_ok()
    }

    /// Record source `index`'s count for the day with `batch`, the commit
    /// of a delivery shard `shard` made from it, so a restart does not
    /// forget it. Each shard has its own key: its commits land in order,
    /// so its value only grows, where shards' commits may cross.
    pub fn save(&self, index: usize, shard: usize, batch: &mut ringpost_storage::WriteBatch) {
        let packed = self.sources[index].sent.load(Ordering::Relaxed);
        let key = format!("{}{shard}", state_prefix(&self.sources[index].config));
        ringpost_storage::state::put(batch, &key, packed.to_le_bytes().to_vec());
    }

    /// Take back the counts [`Egress::save`] recorded: the latest of the
    /// shards' (another day's reads as zero).
    pub fn restore(
        &self,
        store: &dyn ringpost_storage::Store,
    ) -> Result<(), ringpost_storage::StoreError> {
        for source in &self.sources {
            let saved = ringpost_storage::state::with_prefix(store, &state_prefix(&source.config))?;
            let latest = saved
                .iter()
                .filter_map(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
                .map(u64::from_le_bytes)
                .max();
            if let Some(packed) = latest {
                source.sent.store(packed, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// Messages source `index` sent on `day`.
    pub fn sent_today(&self, index: usize, day: u64) -> u64 {
        sent_on(self.sources[index].sent.load(Ordering::Relaxed), day)
    }
}

/// Where a source's counts are kept across restarts: this, then the
/// shard's number. (Packed day ‖ count values order by day, then count.)
fn state_prefix(source: &SourceConfig) -> String {
    format!("egress/{}/", source.address)
}

/// The count a packed value holds for `day` (0 when it is another day's).
fn sent_on(packed: u64, day: u64) -> u64 {
    match packed >> COUNT_BITS == day {
        true => packed & COUNT_MASK,
        false => 0,
    }
}

/// Today, in days since the Unix epoch (UTC).
pub fn today() -> u64 {
    crate::intake::unix_micros() / 86_400_000_000
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(address: &str, weight: u32, warmup: &[u64], start: Option<&str>) -> SourceConfig {
        SourceConfig {
            address: address.parse().unwrap(),
            ehlo: None,
            weight,
            daily_limit: 0,
            warmup: warmup.to_vec(),
            warmup_start: start.map(str::to_owned),
        }
    }

    #[test]
    fn picks_by_weight_and_family() {
        let bulk = PoolConfig {
            name: "bulk".into(),
            sources: vec!["192.0.2.2".parse().unwrap(), "192.0.2.3".parse().unwrap()],
            senders: Vec::new(),
        };
        let egress = Egress::new(
            &[
                source("192.0.2.1", 3, &[], None),
                source("192.0.2.2", 1, &[], None),
                source("2001:db8::1", 1, &[], None),
                source("192.0.2.3", 1, &[], None),
            ],
            &[bulk],
        )
        .unwrap();
        let v4: IpAddr = "198.51.100.1".parse().unwrap();
        let mut counts = [0; 4];
        for k in 0..500 {
            counts[egress.pick(0, v4, f64::from(k) / 500.0, None).unwrap()] += 1;
        }
        assert_eq!(counts, [300, 100, 0, 100]);
        assert_eq!(
            egress.pick(0, "2001:db8::9".parse().unwrap(), 0.5, None),
            Some(2)
        );
        // A pool: its sources only, by their weights.
        let mut counts = [0; 4];
        for k in 0..400 {
            counts[egress
                .pick(0, v4, f64::from(k) / 400.0, Some("bulk"))
                .unwrap()] += 1;
        }
        assert_eq!(counts, [0, 200, 0, 200]);
        assert_eq!(
            egress.pick(0, "2001:db8::9".parse().unwrap(), 0.5, Some("bulk")),
            None,
            "no IPv6 source in the pool"
        );
    }

    #[test]
    fn warmup_limits_per_day_then_the_daily_limit() {
        // 2026-12-01 is day 20788.
        let mut config = source("192.0.2.1", 1, &[2, 5], Some("2026-12-01"));
        config.daily_limit = 10;
        assert_eq!(config.limit_on(20_788), Some(2));
        assert_eq!(config.limit_on(20_789), Some(5));
        assert_eq!(config.limit_on(20_790), Some(10));
        assert_eq!(
            config.limit_on(20_000),
            Some(2),
            "before the start: the first day's"
        );
        let egress = Egress::new(
            &[config, source("192.0.2.2", 1, &[1], Some("2026-12-01"))],
            &[],
        )
        .unwrap();
        let to: IpAddr = "198.51.100.1".parse().unwrap();
        assert!(egress.take(0, 20_788));
        assert!(egress.take(0, 20_788));
        assert!(!egress.take(0, 20_788), "the day's limit is 2");
        assert!(egress.take(1, 20_788));
        assert!(!egress.take(1, 20_788));
        assert_eq!(
            egress.pick(20_788, to, 0.0, None),
            None,
            "both at their limit today"
        );
        assert_eq!(
            egress.pick(20_789, to, 0.0, None),
            Some(0),
            "a new day, new counts"
        );
        assert_eq!(egress.sent_today(0, 20_788), 2);
        assert_eq!(egress.sent_today(0, 20_789), 0);
    }

    #[test]
    fn threads_taking_at_once_never_pass_the_limit() {
        let egress = std::sync::Arc::new(
            Egress::new(&[source("192.0.2.1", 1, &[100], Some("2026-12-01"))], &[]).unwrap(),
        );
        let taken: usize = (0..4)
            .map(|_| {
                let egress = egress.clone();
                std::thread::spawn(move || (0..1000).filter(|_| egress.take(0, 20_788)).count())
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|thread| thread.join().unwrap())
            .sum();
        assert_eq!(taken, 100);
        assert_eq!(egress.sent_today(0, 20_788), 100);
        assert!(egress.take(0, 20_789), "a new day");
    }

    #[test]
    fn counts_survive_a_restart_through_the_store() {
        let store = ringpost_storage::memory::MemoryStore::new();
        let sources = [
            source("192.0.2.1", 1, &[3], None),
            source("192.0.2.2", 1, &[3], None),
        ];
        let before = Egress::new(&sources, &[]).unwrap();
        assert!(before.take(1, 20_788) && before.take(1, 20_788));
        let mut late = ringpost_storage::WriteBatch::new();
        before.save(1, 0, &mut late);
        assert!(before.take(1, 20_788));
        let mut batch = ringpost_storage::WriteBatch::new();
        before.save(1, 1, &mut batch);
        // Shard 1's commit lands first, then shard 0's older count: the
        // later count is the one taken back.
        ringpost_storage::Store::write(&store, &[batch], false).unwrap();
        ringpost_storage::Store::write(&store, &[late], false).unwrap();
        let after = Egress::new(&sources, &[]).unwrap();
        after.restore(&store).unwrap();
        assert_eq!(after.sent_today(1, 20_788), 3);
        assert_eq!(after.sent_today(0, 20_788), 0);
        assert_eq!(after.sent_today(1, 20_789), 0, "another day");
    }

    #[test]
    fn a_source_without_a_limit_always_has_room() {
        let egress = Egress::new(&[source("192.0.2.1", 1, &[], None)], &[]).unwrap();
        assert!((0..10_000).all(|_| egress.take(0, 20_788)));
        assert_eq!(egress.sent_today(0, 20_788), 10_000);
    }
}
