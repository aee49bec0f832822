//! The sink's counters and its report.
//!
//! Each runtime thread owns one [`Counters`] block on its own cache lines and
//! is its only writer, so counting costs no contention; readers
//! ([`SinkStats::sum`]) add the blocks up at any time, which makes the stats
//! live. A message is counted once its id line is written and just before
//! the reply that accepts it goes out, so whatever a reader sees counted is
//! also recorded.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

/// One thread's tallies. Aligned to 128 bytes (two cache lines, what the
/// adjacent-line prefetcher pairs up) so that threads never share a line.
#[derive(Debug)]
#[repr(align(128))]
pub struct Counters {
    /// See [`SinkStats::connections`].
    pub connections: AtomicU64,
    /// See [`SinkStats::refused`].
    pub refused: AtomicU64,
    /// See [`SinkStats::throttled`].
    pub throttled: AtomicU64,
    /// See [`SinkStats::messages`]; bumped last (see [`Counters::accepted`]).
    pub messages: AtomicU64,
    /// See [`SinkStats::recipients`].
    pub recipients: AtomicU64,
    /// See [`SinkStats::bytes`].
    pub bytes: AtomicU64,
    /// See [`SinkStats::tempfails`].
    pub tempfails: AtomicU64,
    /// See [`SinkStats::permfails`].
    pub permfails: AtomicU64,
    /// See [`SinkStats::record_errors`].
    pub record_errors: AtomicU64,
    /// Nanoseconds since the sink started; `u64::MAX` until a message came.
    pub first_message_ns: AtomicU64,
    /// Nanoseconds since the sink started; 0 until a message came.
    pub last_message_ns: AtomicU64,
}

impl Default for Counters {
    fn default() -> Self {
        Self {
            connections: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            throttled: AtomicU64::new(0),
            messages: AtomicU64::new(0),
            recipients: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            tempfails: AtomicU64::new(0),
            permfails: AtomicU64::new(0),
            record_errors: AtomicU64::new(0),
            first_message_ns: AtomicU64::new(u64::MAX),
            last_message_ns: AtomicU64::new(0),
        }
    }
}

/// Adds `n` to a counter. Relaxed: the counters order nothing else.
pub fn bump(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl Counters {
    /// Counts a batch of accepted messages acknowledged at `now_ns`.
    pub fn accepted(&self, messages: u64, recipients: u64, bytes: u64, now_ns: u64) {
        if messages == 0 {
            return;
        }
        self.first_message_ns.fetch_min(now_ns, Ordering::Relaxed);
        self.last_message_ns.fetch_max(now_ns, Ordering::Relaxed);
        bump(&self.recipients, recipients);
        bump(&self.bytes, bytes);
        // Last, so that a reader who sees the message sees the rest.
        self.messages.fetch_add(messages, Ordering::Release);
    }
}

/// What a sink has done so far, summed over its threads.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SinkStats {
    /// TCP connections accepted, refused ones included.
    pub connections: u64,
    /// Messages accepted with 250.
    pub messages: u64,
    /// Recipients of accepted messages.
    pub recipients: u64,
    /// Bytes of accepted messages (as received, unstuffed).
    pub bytes: u64,
    /// Injected 4xx replies (RCPT and end of data).
    pub tempfails: u64,
    /// Injected 5xx replies (RCPT and end of data).
    pub permfails: u64,
    /// Connections greeted with 554 and closed.
    pub refused: u64,
    /// Connections greeted with 421 for being over `max_connections`.
    pub throttled: u64,
    /// The most connections open at once (throttled ones not counted).
    pub peak_connections: u64,
    /// Accepted messages that could not be dumped or id-logged (each is
    /// reported once on stderr as well).
    pub record_errors: u64,
    /// When the first message was accepted, seconds since the sink started.
    pub first_message_secs: Option<f64>,
    /// When the last message so far was accepted, seconds since the start.
    pub last_message_secs: Option<f64>,
    /// Seconds since the sink started.
    pub elapsed_secs: f64,
}

impl SinkStats {
    /// Adds up the threads' counters, `elapsed` after the start.
    pub fn sum(counters: &[Counters], elapsed: Duration) -> Self {
        let load = |f: fn(&Counters) -> &AtomicU64| -> u64 {
            counters.iter().map(|c| f(c).load(Ordering::Acquire)).sum()
        };
        let first = counters
            .iter()
            .map(|c| c.first_message_ns.load(Ordering::Relaxed))
            .min()
            .filter(|&ns| ns != u64::MAX);
        let last = counters
            .iter()
            .map(|c| c.last_message_ns.load(Ordering::Relaxed))
            .max();
        let secs = |ns: u64| ns as f64 / 1e9;
        // Messages first: every other count of a message is in by then.
        let messages = load(|c| &c.messages);
        Self {
            connections: load(|c| &c.connections),
            messages,
            recipients: load(|c| &c.recipients),
            bytes: load(|c| &c.bytes),
            tempfails: load(|c| &c.tempfails),
            permfails: load(|c| &c.permfails),
            refused: load(|c| &c.refused),
            throttled: load(|c| &c.throttled),
            peak_connections: 0,
            record_errors: load(|c| &c.record_errors),
            first_message_secs: first.map(secs),
            last_message_secs: first.and(last).map(secs),
            elapsed_secs: elapsed.as_secs_f64(),
        }
    }

    /// Accepted messages per second between the first and the last one:
    /// (messages − 1) / (last − first), the rate at which the sink was fed
    /// once traffic started, unaffected by idle time before or after. 0 with
    /// fewer than two messages.
    pub fn msg_per_sec(&self) -> f64 {
        match (self.first_message_secs, self.last_message_secs) {
            (Some(first), Some(last)) if self.messages >= 2 && last > first => {
                (self.messages - 1) as f64 / (last - first)
            }
            _ => 0.0,
        }
    }

    /// The report as one JSON object: every field plus `msg_per_sec`.
    pub fn to_json(&self) -> String {
        let mut value = serde_json::to_value(self).expect("stats serialize");
        value["msg_per_sec"] = self.msg_per_sec().into();
        value.to_string()
    }

    /// The report as text, one `name: value` line per figure.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "messages:      {}", self.messages);
        let _ = writeln!(s, "recipients:    {}", self.recipients);
        let _ = writeln!(s, "bytes:         {}", self.bytes);
        let _ = writeln!(s, "connections:   {}", self.connections);
        let _ = writeln!(s, "tempfails:     {}", self.tempfails);
        let _ = writeln!(s, "permfails:     {}", self.permfails);
        let _ = writeln!(s, "refused:       {}", self.refused);
        if self.throttled > 0 {
            let _ = writeln!(s, "throttled:     {}", self.throttled);
        }
        let _ = writeln!(s, "peak conns:    {}", self.peak_connections);
        if self.record_errors > 0 {
            let _ = writeln!(s, "record errors: {}", self.record_errors);
        }
        let _ = writeln!(
            s,
            "throughput:    {:.1} msg/s (first to last message)",
            self.msg_per_sec()
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_threads_and_rates_between_first_and_last() {
        let threads = [Counters::default(), Counters::default()];
        bump(&threads[0].connections, 2);
        bump(&threads[1].connections, 1);
        bump(&threads[1].tempfails, 3);
        threads[0].accepted(5, 5, 500, 1_000_000_000);
        threads[1].accepted(6, 12, 600, 3_000_000_000);
        threads[1].accepted(0, 0, 0, 9_000_000_000);
        let s = SinkStats::sum(&threads, Duration::from_secs(10));
        assert_eq!(
            (s.connections, s.messages, s.recipients, s.bytes),
            (3, 11, 17, 1100)
        );
        assert_eq!(s.tempfails, 3);
        assert_eq!(s.first_message_secs, Some(1.0));
        assert_eq!(s.last_message_secs, Some(3.0));
        assert!((s.msg_per_sec() - 5.0).abs() < 1e-9);
        let json: serde_json::Value = serde_json::from_str(&s.to_json()).unwrap();
        assert_eq!(json["messages"], 11);
        assert_eq!(json["msg_per_sec"], 5.0);
        assert!(s.to_text().contains("messages:      11\n"));
        assert!(s.to_text().contains("5.0 msg/s"));
    }

    #[test]
    fn no_messages_no_rate() {
        let s = SinkStats::sum(&[Counters::default()], Duration::ZERO);
        assert_eq!(s.first_message_secs, None);
        assert_eq!(s.last_message_secs, None);
        assert_eq!(s.msg_per_sec(), 0.0);
        let json: serde_json::Value = serde_json::from_str(&s.to_json()).unwrap();
        assert!(json["first_message_secs"].is_null());
    }
}
