//! Delivery events for the webhook ([`crate::webhook`]): reception of a
//! message, and each recipient's delivered, deferred, bounced or
//! suppressed outcome. Each event is written into the very commit that
//! makes what it reports true, as a row of the store's `events` family,
//! so a crash loses none that happened and invents none that did not.
//! Nothing is kept when no webhook is configured.
//!
//! An event is the mail log's JSON fields ([`crate::maillog`]) with its
//! `type` and `timestamp` (RFC 3339, microseconds).

use ringpost_storage::{events, WriteBatch};
use serde_json::{Map, Value};
use std::sync::atomic::{AtomicU64, Ordering};

/// Event sources: one per producer, so keys never collide.
pub mod source {
    /// SMTP intake on shard `n`: `n` itself.
    pub fn smtp(shard: usize) -> u16 {
        shard as u16
    }
    /// The relay of shard `n`.
    pub fn relay(shard: usize) -> u16 {
        0x8000 | shard as u16
    }
    /// The HTTP injection API.
    pub const INJECT: u16 = 0x4000;
}

/// One producer's events.
#[derive(Debug)]
pub struct EventSpool {
    source: u16,
    sequence: AtomicU64,
}

impl EventSpool {
    /// A producer with its own `source` number.
    pub fn new(source: u16) -> EventSpool {
        EventSpool {
            source,
            sequence: AtomicU64::new(0),
        }
    }

    /// Add a `kind` event with `fields` to `batch`, stamped now.
    pub fn add(&self, batch: &mut WriteBatch, kind: &str, mut fields: Map<String, Value>) {
        let now = crate::intake::unix_micros();
        let timestamp = chrono::DateTime::from_timestamp_micros(now as i64)
            .unwrap_or_default()
            .format("%Y-%m-%dT%H:%M:%S%.6fZ")
            .to_string();
        fields.insert("type".into(), kind.into());
        fields.insert("timestamp".into(), timestamp.into());
        let sequence = self.sequence.fetch_add(1, Ordering::Relaxed);
        let key = events::key(now, self.source, sequence);
        events::put(batch, key, Value::Object(fields).to_string().into_bytes());
    }
}
