//! What a run did second by second, for `--plot`: messages accepted and
//! failed, and a coarse latency histogram, per second of the run. Each
//! thread keeps its own and they are merged at the end, so the hot path
//! touches no shared memory.
//!
//! Latencies go into log-scale buckets: 8 per doubling from 1 µs, so a
//! percentile read back is within about 9% of the true value, in 8 bytes
//! per bucket and a few KiB per second of the run.

use std::time::{Duration, Instant};

/// Buckets per doubling of the latency.
const STEPS: u32 = 8;
/// Doublings from 1 µs: up to about 2^33 µs, 2.4 hours.
const DOUBLINGS: u32 = 33;
const BUCKETS: usize = (STEPS * DOUBLINGS) as usize;
/// Longest run recorded second by second (a day); later seconds fold into the last.
const MAX_SECONDS: usize = 86_400;

/// One second of the run.
#[derive(Debug, Clone)]
pub struct Second {
    /// Messages accepted in it.
    pub ok: u64,
    /// Messages that failed in it.
    pub failed: u64,
    latency: Box<[u32; BUCKETS]>,
}

impl Default for Second {
    fn default() -> Self {
        Second {
            ok: 0,
            failed: 0,
            latency: Box::new([0; BUCKETS]),
        }
    }
}

impl Second {
    /// The latency at quantile `q` (0..=1) of the messages accepted in
    /// this second, or None when there were none.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let total: u64 = self.latency.iter().map(|&n| u64::from(n)).sum();
        if total == 0 {
            return None;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0u64;
        for (i, &n) in self.latency.iter().enumerate() {
            seen += u64::from(n);
            if seen >= rank {
                return Some(bucket_value(i));
            }
        }
        None
    }
}

/// Per-second record of one thread (or, merged, of the run).
#[derive(Debug, Clone)]
pub struct Timeline {
    started: Instant,
    seconds: Vec<Second>,
}

impl Timeline {
    /// A timeline whose second 0 starts at `started`.
    pub fn new(started: Instant) -> Timeline {
        Timeline {
            started,
            seconds: Vec::new(),
        }
    }

    fn second(&mut self, at: Instant) -> &mut Second {
        let index =
            (at.saturating_duration_since(self.started).as_secs() as usize).min(MAX_SECONDS - 1);
        if self.seconds.len() <= index {
            self.seconds.resize_with(index + 1, Second::default);
        }
        &mut self.seconds[index]
    }

    /// A message was accepted at `at`, `latency` after it started.
    pub fn ok(&mut self, at: Instant, latency: Duration) {
        let second = self.second(at);
        second.ok += 1;
        let bucket = bucket_of(latency);
        second.latency[bucket] = second.latency[bucket].saturating_add(1);
    }

    /// A message failed at `at`.
    pub fn failed(&mut self, at: Instant) {
        self.second(at).failed += 1;
    }

    /// Add `other` (same start) into this one.
    pub fn merge(&mut self, other: &Timeline) {
        if self.seconds.len() < other.seconds.len() {
            self.seconds
                .resize_with(other.seconds.len(), Second::default);
        }
        for (mine, theirs) in self.seconds.iter_mut().zip(&other.seconds) {
            mine.ok += theirs.ok;
            mine.failed += theirs.failed;
            for (a, b) in mine.latency.iter_mut().zip(theirs.latency.iter()) {
                *a = a.saturating_add(*b);
            }
        }
    }

    /// The seconds recorded, from the start.
    pub fn seconds(&self) -> &[Second] {
        &self.seconds
    }
}

fn bucket_of(latency: Duration) -> usize {
    let us = latency.as_micros().max(1) as f64;
    let index = (us.log2() * f64::from(STEPS)).floor() as usize;
    index.min(BUCKETS - 1)
}

/// The upper edge of bucket `i`.
fn bucket_value(i: usize) -> Duration {
    let us = 2f64.powf((i as f64 + 1.0) / f64::from(STEPS));
    Duration::from_nanos((us * 1000.0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_and_quantiles() {
        let start = Instant::now();
        let mut a = Timeline::new(start);
        let mut b = Timeline::new(start);
        for ms in 1..=100u64 {
            a.ok(start + Duration::from_millis(10), Duration::from_millis(ms));
        }
        b.ok(
            start + Duration::from_millis(2500),
            Duration::from_micros(300),
        );
        b.failed(start + Duration::from_millis(2600));
        a.merge(&b);
        let s = a.seconds();
        assert_eq!(s.len(), 3);
        assert_eq!((s[0].ok, s[1].ok, s[2].ok, s[2].failed), (100, 0, 1, 1));
        let p50 = s[0].quantile(0.5).unwrap().as_secs_f64() * 1000.0;
        assert!((45.0..=56.0).contains(&p50), "{p50}");
        let p99 = s[0].quantile(0.99).unwrap().as_secs_f64() * 1000.0;
        assert!((90.0..=110.0).contains(&p99), "{p99}");
        assert!(s[1].quantile(0.5).is_none());
        let one = s[2].quantile(0.5).unwrap().as_micros();
        assert!((280..=330).contains(&one), "{one}");
    }
}
