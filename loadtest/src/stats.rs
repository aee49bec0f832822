//! Counting and reporting: per-thread tallies, merged into one [`Report`]
//! that prints as text or as one JSON object.
//!
//! Each runtime thread owns one [`ThreadStats`] (no sharing, no atomics on
//! the hot path); the threads hand them back when they finish and the main
//! thread merges them.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Error keys other than reply codes (which are counted as "451", "554", ...).
pub mod keys {
    /// TCP connect failed (refused, unreachable, reset).
    pub const CONNECT: &str = "connect";
    /// TCP connect did not finish within `--connect-timeout`.
    pub const CONNECT_TIMEOUT: &str = "connect-timeout";
    /// No reply (or no write progress) within `--read-timeout`.
    pub const TIMEOUT: &str = "timeout";
    /// The server closed the connection while a reply was awaited.
    pub const CLOSED: &str = "closed";
    /// Any other socket error (e.g. connection reset while writing).
    pub const IO: &str = "io";
    /// The server sent something that is not an SMTP reply.
    pub const PROTOCOL: &str = "protocol";
}

/// Latency histogram bounds, in microseconds: 1 µs .. 1 hour, 3 significant digits.
fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("static histogram bounds are valid")
}

#[derive(Debug)]
pub struct ThreadStats {
    pub ok: u64,
    pub failed: u64,
    /// Message bytes of accepted messages (for MB/s).
    pub bytes: u64,
    /// Whole-transaction latency of accepted messages, µs (MAIL sent → final 2xx).
    pub latency_us: Histogram<u64>,
    /// Error key → count. Keys: reply codes ("451") or [`keys`].
    pub errors: BTreeMap<String, u64>,
}

impl Default for ThreadStats {
    fn default() -> Self {
        Self {
            ok: 0,
            failed: 0,
            bytes: 0,
            latency_us: new_histogram(),
            errors: BTreeMap::new(),
        }
    }
}

impl ThreadStats {
    pub fn record_ok(&mut self, bytes: usize, latency: Duration) {
        self.ok += 1;
        self.bytes += bytes as u64;
        let us = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        self.latency_us.saturating_record(us);
    }

    pub fn record_error(&mut self, key: &str) {
        // Errors are rare, so the String allocation on first sight is fine.
        match self.errors.get_mut(key) {
            Some(n) => *n += 1,
            None => {
                self.errors.insert(key.to_owned(), 1);
            }
        }
    }

    pub fn merge(&mut self, other: &ThreadStats) {
        self.ok += other.ok;
        self.failed += other.failed;
        self.bytes += other.bytes;
        self.latency_us
            .add(&other.latency_us)
            .expect("histograms with equal bounds always merge");
        for (k, v) in &other.errors {
            *self.errors.entry(k.clone()).or_insert(0) += v;
        }
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

/// What one run did; the fields are exactly the keys of `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub target: String,
    pub connections: usize,
    pub threads: usize,
    pub pipelining: bool,
    /// Message size in bytes (headers + body, as sent inside DATA).
    pub size: usize,
    pub rcpts: usize,
    /// `--size` when it is a mix (`size` is then its mean).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size_mix: Option<String>,
    /// `--rate`: an open-loop run, latencies from each message's scheduled start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    pub messages_ok: u64,
    pub messages_failed: u64,
    pub elapsed_s: f64,
    pub msg_per_s: f64,
    /// Megabytes (10^6 bytes) of accepted message data per second.
    pub mb_per_s: f64,
    pub latency_ms: Latency,
    pub errors: BTreeMap<String, u64>,
}

/// Run parameters echoed in the report.
#[derive(Debug, Clone)]
pub struct RunInfo {
    pub target: String,
    pub connections: usize,
    pub threads: usize,
    pub pipelining: bool,
    pub size: usize,
    pub rcpts: usize,
    pub size_mix: Option<String>,
    pub rate: Option<f64>,
}

impl Report {
    pub fn new(info: RunInfo, stats: &ThreadStats, elapsed: Duration) -> Self {
        let secs = elapsed.as_secs_f64();
        let per_s = |x: f64| if secs > 0.0 { x / secs } else { 0.0 };
        let h = &stats.latency_us;
        let ms = |us: u64| us as f64 / 1000.0;
        let pct = |q: f64| {
            if h.is_empty() {
                0.0
            } else {
                ms(h.value_at_quantile(q))
            }
        };
        Self {
            target: info.target,
            connections: info.connections,
            threads: info.threads,
            pipelining: info.pipelining,
            size: info.size,
            rcpts: info.rcpts,
            size_mix: info.size_mix,
            rate: info.rate,
            messages_ok: stats.ok,
            messages_failed: stats.failed,
            elapsed_s: secs,
            msg_per_s: per_s(stats.ok as f64),
            mb_per_s: per_s(stats.bytes as f64 / 1e6),
            latency_ms: Latency {
                p50: pct(0.50),
                p90: pct(0.90),
                p99: pct(0.99),
                p999: pct(0.999),
                max: if h.is_empty() { 0.0 } else { ms(h.max()) },
            },
            errors: stats.errors.clone(),
        }
    }

    /// True when the run should exit non-zero.
    pub fn has_errors(&self) -> bool {
        self.messages_failed > 0 || !self.errors.is_empty()
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("report serializes")
    }

    pub fn to_text(&self) -> String {
        let l = &self.latency_ms;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "target:           {} ({} connections on {} threads, pipelining {}, {} B, {} rcpt/msg)",
            self.target,
            self.connections,
            self.threads,
            if self.pipelining { "on" } else { "off" },
            self.size,
            self.rcpts
        );
        if let Some(mix) = &self.size_mix {
            let _ = writeln!(
                s,
                "size mix:         {mix} (bytes:weight; {} B on average)",
                self.size
            );
        }
        if let Some(rate) = self.rate {
            let _ = writeln!(
                s,
                "open loop:        {rate} msg/s scheduled; latency from each message's scheduled start"
            );
        }
        let _ = writeln!(s, "messages ok:      {}", self.messages_ok);
        let _ = writeln!(s, "messages failed:  {}", self.messages_failed);
        let _ = writeln!(s, "elapsed:          {:.3} s", self.elapsed_s);
        let _ = writeln!(
            s,
            "throughput:       {:.1} msg/s, {:.2} MB/s",
            self.msg_per_s, self.mb_per_s
        );
        let _ = writeln!(
            s,
            "latency ms:       p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
            l.p50, l.p90, l.p99, l.p999, l.max
        );
        let errors = if self.errors.is_empty() {
            "none".to_owned()
        } else {
            self.errors
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(s, "errors:           {errors}");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_and_report() {
        let mut a = ThreadStats::default();
        let mut b = ThreadStats::default();
        for ms in 1..=100 {
            a.record_ok(1000, Duration::from_millis(ms));
        }
        b.record_ok(1000, Duration::from_millis(500));
        b.failed += 2;
        b.record_error("451");
        b.record_error("451");
        a.record_error(keys::CONNECT);
        a.merge(&b);
        let info = RunInfo {
            target: "127.0.0.1:2525".into(),
            connections: 4,
            threads: 2,
            pipelining: true,
            size: 1000,
            rcpts: 1,
            size_mix: None,
            rate: None,
        };
        let r = Report::new(info, &a, Duration::from_secs(2));
        assert_eq!(r.messages_ok, 101);
        assert_eq!(r.messages_failed, 2);
        assert!((r.msg_per_s - 50.5).abs() < 1e-9);
        assert!((r.mb_per_s - 0.0505).abs() < 1e-9);
        assert!(
            (r.latency_ms.p50 - 51.0).abs() < 0.1,
            "{}",
            r.latency_ms.p50
        );
        assert!((r.latency_ms.max - 500.0).abs() < 1.0);
        assert_eq!(r.errors["451"], 2);
        assert_eq!(r.errors["connect"], 1);
        assert!(r.has_errors());
        let json: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(json["errors"]["451"], 2);
        assert_eq!(json["messages_ok"], 101);
        assert!(json["latency_ms"]["p999"].is_number());
        assert!(r.to_text().contains("451: 2"));
    }

    #[test]
    fn empty_run_reports_zeros() {
        let info = RunInfo {
            target: "x".into(),
            connections: 1,
            threads: 1,
            pipelining: false,
            size: 10,
            rcpts: 1,
            size_mix: None,
            rate: None,
        };
        let r = Report::new(info, &ThreadStats::default(), Duration::ZERO);
        assert_eq!(r.msg_per_s, 0.0);
        assert_eq!(r.latency_ms.max, 0.0);
        assert!(!r.has_errors());
    }
}
