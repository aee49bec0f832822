//! Delivery events for the webhook ([`crate::webhook`]): reception of a
//! message, and each recipient's delivered, deferred, bounced or
//! suppressed outcome. Each event is written into the very commit that
//! makes what it reports true, as a row of the store's `events` family,
//! so a crash loses none that happened and invents none that did not.
//! Nothing is kept when no webhook is configured. Each endpoint gets its
//! own row of each event it takes ([`Endpoint::prefix`]), so each is
//! posted and deleted on its own.
//!
//! An event is the mail log's JSON fields ([`crate::maillog`]) with its
//! `type` and `timestamp` (RFC 3339, microseconds).

use crate::config::WebhookConfig;
use ringpost_storage::{events, WriteBatch};
use serde_json::{Map, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Where events go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Its name in logs and metrics (`default` for `webhook.url`).
    pub name: String,
    /// The start of its rows in the `events` family.
    pub prefix: Vec<u8>,
    /// Where they are posted.
    pub url: String,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
    /// The event types it takes; empty: all.
    pub types: Vec<String>,
}

impl Endpoint {
    /// Whether it takes events of type `kind`.
    pub fn takes(&self, kind: &str) -> bool {
        self.types.is_empty() || self.types.iter().any(|t| t == kind)
    }
}

/// Every endpoint `config` names: `webhook.url` first, then
/// `webhook.endpoints`.
pub fn endpoints(config: &WebhookConfig) -> Vec<Endpoint> {
    let unnamed = config.url.as_ref().map(|url| Endpoint {
        name: "default".into(),
        prefix: events::prefix(None),
        url: url.clone(),
        authorization: config.authorization.clone(),
        types: Vec::new(),
    });
    unnamed
        .into_iter()
        .chain(config.endpoints.iter().map(|e| Endpoint {
            name: e.name.clone(),
            prefix: events::prefix(Some(&e.name)),
            url: e.url.clone(),
            authorization: e.authorization.clone(),
            types: e.events.clone(),
        }))
        .collect()
}

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
    endpoints: Arc<[Endpoint]>,
}

impl EventSpool {
    /// A producer with its own `source` number, for the endpoints of
    /// `config`; None when it has none.
    pub fn new(source: u16, config: &WebhookConfig) -> Option<EventSpool> {
        config.enabled().then(|| EventSpool {
            source,
            sequence: AtomicU64::new(0),
            endpoints: endpoints(config).into(),
        })
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
        let json = Value::Object(fields).to_string().into_bytes();
        for endpoint in self.endpoints.iter().filter(|e| e.takes(kind)) {
            events::put(batch, &endpoint.prefix, key, json.clone());
        }
    }
}
