//! Prometheus metrics.
//!
//! Each shard owns its own counter and histogram instances (a `shard` label),
//! so the hot path only touches memory no other thread writes; a scrape reads
//! them all. `/metrics` is served by the control plane ([`crate::admin`]),
//! on its own thread, so a slow scraper can never stall a shard.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use ringpost_storage::{CommitReport, Store};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

type Labels = Vec<(&'static str, String)>;
type HistogramFamily = Family<Labels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 50 µs .. ~3.3 s
    Histogram::new(exponential_buckets(0.00005, 2.0, 17))
}

fn delivery_histogram() -> Histogram {
    // 1 ms .. ~9 h: from a sink on loopback to a week of retries' worth of hours
    Histogram::new(exponential_buckets(0.001, 4.0, 13))
}

fn batch_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 12))
}

/// Held queue entries counted at one scrape at most (a scan of their keys).
const MAX_HELD_COUNTED: usize = 100_000;

/// Every metric the server exports.
pub struct Metrics {
    registry: Registry,
    /// Metrics under their standard names, without our prefix: the
    /// process's own (`process_*`).
    unprefixed: Registry,
    smtp_connections: Family<Labels, Counter>,
    smtp_connections_active: Family<Labels, Gauge>,
    smtp_connections_refused: Family<Labels, Counter>,
    smtp_messages: Family<Labels, Counter>,
    smtp_bytes: Family<Labels, Counter>,
    smtp_store_failures: Family<Labels, Counter>,
    smtp_timeouts: Family<Labels, Counter>,
    smtp_commit_wait: HistogramFamily,
    local_deliveries: Family<Labels, Counter>,
    delivery_notices: Family<Labels, Counter>,
    dkim_signed: Family<Labels, Counter>,
    session_panics: Family<Labels, Counter>,
    store_commits: Counter,
    store_commit_errors: Counter,
    store_commit_requests: Histogram,
    store_commit_bytes: Counter,
    store_commit_seconds: Histogram,
    body_cache_bytes: Gauge,
    body_cache_capacity: Gauge,
    /// 1 while writes are refused for lack of disk space.
    store_disk_full: Gauge,
    /// The engine's own state, sampled at each scrape.
    store_disk_bytes: Gauge,
    /// Relay queue entries on hold, counted in the store at each scrape.
    relay_queue_held: Gauge,
    store_memtable_bytes: Gauge,
    store_segment_bytes: Gauge,
    store_segment_live_bytes: Gauge,
    store_pending_compaction_bytes: Gauge,
    store_write_stopped: Gauge,
    store_delayed_write_rate: Gauge,
    store_disk_full_refusals: Counter,
    /// Lines a log dropped because its writer fell behind, by log.
    log_lines_dropped: Family<Labels, Counter>,
    /// Where those counts are read at each scrape, and what was read last.
    log_drop_sources: Mutex<Vec<LogDropSource>>,
    /// The store whose caches are sampled at each scrape.
    store: OnceLock<Arc<dyn Store>>,
    relay: RelayFamilies,
    pop3: Pop3Families,
    imap: ImapFamilies,
    managesieve: ManageSieveFamilies,
    security: SecurityMetrics,
    dns: DnsMetrics,
    inject: InjectMetrics,
    sites: SiteMetrics,
    webhook: WebhookMetrics,
}

/// The mutex's data, poisoned or not (a panic elsewhere leaves counts
/// that are still worth reading).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A log's count of dropped lines, read at each scrape.
struct LogDropSource {
    log: &'static str,
    read: Box<dyn Fn() -> u64 + Send + Sync>,
    last: u64,
}

/// Counters of the listeners' defences, shared by all shards: TLS
/// handshakes, logins, lockouts, refused connections. Each event looks its
/// series up by label (a short read lock): they happen once per connection
/// or login, never per command.
#[derive(Clone, Default)]
pub struct SecurityMetrics {
    tls_handshakes: Family<Labels, Counter>,
    auth_attempts: Family<Labels, Counter>,
    lockouts: Family<Labels, Counter>,
    refused: Family<Labels, Counter>,
    rate_limited: Family<Labels, Counter>,
    over_quota: Family<Labels, Counter>,
    rejections: Family<Labels, Counter>,
    session_memory: Family<Labels, Gauge>,
    certificate_expiry: Family<Labels, Gauge>,
    spf: Family<Labels, Counter>,
    dkim: Family<Labels, Counter>,
    dmarc: Family<Labels, Counter>,
    dmarc_reports: Family<Labels, Counter>,
    dnsbl: Family<Labels, Counter>,
    sieve: Family<Labels, Counter>,
    srs: Family<Labels, Counter>,
    feedback: Family<Labels, Counter>,
}

impl SecurityMetrics {
    /// A TLS handshake on `service` ended with `result` (`ok`, `timeout`,
    /// `io`, `protocol`); `version` is empty when it failed.
    pub fn tls_handshake(&self, service: &str, result: &str, version: &str) {
        let labels = vec![
            ("service", service.to_owned()),
            ("result", result.to_owned()),
            ("version", version.to_owned()),
        ];
        self.tls_handshakes.get_or_create(&labels).inc();
    }

    /// A login on `service` with `mechanism` ended with `result` (`ok`,
    /// `failed`, `locked_out`, `unavailable`, `too_many_sessions`).
    pub fn auth(&self, service: &str, mechanism: &str, result: &str) {
        let labels = vec![
            ("service", service.to_owned()),
            ("mechanism", mechanism.to_owned()),
            ("result", result.to_owned()),
        ];
        self.auth_attempts.get_or_create(&labels).inc();
    }

    /// A lockout started (`ip` or `account`).
    pub fn lockout(&self, kind: &str) {
        let labels = vec![("kind", kind.to_owned())];
        self.lockouts.get_or_create(&labels).inc();
    }

    /// A connection to `service` was refused before its session started.
    pub fn refused(&self, service: &str, reason: &str) {
        let labels = vec![
            ("service", service.to_owned()),
            ("reason", reason.to_owned()),
        ];
        self.refused.get_or_create(&labels).inc();
    }

    /// A recipient was refused because its account is over its sending rate.
    pub fn rate_limited(&self, service: &str) {
        let labels = vec![("service", service.to_owned())];
        self.rate_limited.get_or_create(&labels).inc();
    }

    /// New mail for an account at its quota was refused on `service`
    /// (`smtp` at RCPT, `imap` at APPEND or COPY).
    pub fn over_quota(&self, service: &str) {
        let labels = vec![("service", service.to_owned())];
        self.over_quota.get_or_create(&labels).inc();
    }

    /// A recipient was refused on `service` by policy (`reason`:
    /// `unknown_user`, `relay_denied`, `mailbox_full`, `rate_limited`,
    /// `store_error`) with reply `code`.
    pub fn rejected(&self, service: &str, reason: &str, code: u16) {
        let labels = vec![
            ("service", service.to_owned()),
            ("reason", reason.to_owned()),
            ("code", code.to_string()),
        ];
        self.rejections.get_or_create(&labels).inc();
    }

    /// An SPF check of inbound mail ended with `result`.
    pub fn spf(&self, result: &str) {
        let labels = vec![("result", result.to_owned())];
        self.spf.get_or_create(&labels).inc();
    }

    /// A DKIM signature of inbound mail was found `result`.
    pub fn dkim(&self, result: &str) {
        let labels = vec![("result", result.to_owned())];
        self.dkim.get_or_create(&labels).inc();
    }

    /// A DMARC evaluation of inbound mail ended with `result`.
    pub fn dmarc(&self, result: &str) {
        let labels = vec![("result", result.to_owned())];
        self.dmarc.get_or_create(&labels).inc();
    }

    /// A DMARC aggregate report for a domain ended with `result`
    /// (`queued`, `no_destination`), or rows past the memory bound were
    /// not counted (`rows_dropped`).
    pub fn dmarc_report(&self, result: &str) {
        let labels = vec![("result", result.to_owned())];
        self.dmarc_reports.get_or_create(&labels).inc();
    }

    /// A DNS blocklist `zone` answered `result` (`listed`, `clear`,
    /// `error`) about a client.
    pub fn dnsbl(&self, zone: &str, result: &str) {
        let labels = vec![("zone", zone.to_owned()), ("result", result.to_owned())];
        self.dnsbl.get_or_create(&labels).inc();
    }

    /// A user's Sieve filter did `action` with a delivery (`fileinto`,
    /// `keep`, `discard`, `redirect`, `redirect_duplicate`, `reject`,
    /// `vacation`, `vacation_skipped`, `error`; the server-wide filter's
    /// as `server_reject`, `server_discard`, `server_redirect`,
    /// `server_error`).
    pub fn sieve(&self, action: &str) {
        let labels = vec![("action", action.to_owned())];
        self.sieve.get_or_create(&labels).inc();
    }

    /// A report came to a feedback address: `delivery` (a late bounce),
    /// `complaint`, `unknown` (neither: dropped); and `suppressed` for each
    /// address it stopped mail to.
    pub fn feedback(&self, kind: &str, count: u64) {
        let labels = vec![("kind", kind.to_owned())];
        self.feedback.get_or_create(&labels).inc_by(count);
    }

    /// SRS did `action`: `forwarded` (a forwarded message's sender
    /// rewritten), `returned` (a bounce to one of our SRS addresses
    /// taken, to go on to the sender it stands for), `refused` (an SRS
    /// address forged, mangled or too old).
    pub fn srs(&self, action: &str) {
        let labels = vec![("action", action.to_owned())];
        self.srs.get_or_create(&labels).inc();
    }

    /// The certificates served now: each one's name and notAfter (Unix
    /// seconds); those of a previous set are forgotten.
    pub fn certificates(&self, expiries: &[(String, i64)]) {
        self.certificate_expiry.clear();
        for (name, not_after) in expiries {
            let labels = vec![("name", name.clone())];
            self.certificate_expiry
                .get_or_create(&labels)
                .set(*not_after);
        }
    }

    /// Bytes of client data `shard`'s sessions hold beyond their free part.
    pub fn session_memory(&self, shard: usize, bytes: u64) {
        let labels = vec![("shard", shard.to_string())];
        self.session_memory
            .get_or_create(&labels)
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    fn register(&self, registry: &mut Registry) {
        for (name, help, family) in [
            (
                "tls_handshakes",
                "TLS handshakes on the listeners, by service, result and protocol version",
                &self.tls_handshakes,
            ),
            (
                "auth_attempts",
                "Logins by service, mechanism and result",
                &self.auth_attempts,
            ),
            (
                "auth_lockouts",
                "Lockouts started after too many failed logins (kind: ip or account)",
                &self.lockouts,
            ),
            (
                "connections_refused",
                "Connections refused before their session started, by service and reason",
                &self.refused,
            ),
            (
                "submission_rate_limited",
                "Recipients refused because the account reached its sending rate",
                &self.rate_limited,
            ),
            (
                "quota_refusals",
                "New mail refused because the account is at its quota, by service",
                &self.over_quota,
            ),
            (
                "spf_results",
                "SPF checks of mail from untrusted clients, by result (RFC 7208)",
                &self.spf,
            ),
            (
                "dkim_verifications",
                "DKIM signatures of mail from untrusted clients, by result (RFC 6376)",
                &self.dkim,
            ),
            (
                "dmarc_results",
                "DMARC evaluations of mail from untrusted clients, by result (RFC 7489)",
                &self.dmarc,
            ),
            (
                "dnsbl_lookups",
                "DNS blocklist lookups of clients that may not relay, by zone and result (listed, clear, error)",
                &self.dnsbl,
            ),
            (
                "feedback_reports",
                "Reports taken at feedback addresses, by kind (delivery: a late bounce, complaint, unknown), and addresses they suppressed (suppressed)",
                &self.feedback,
            ),
            (
                "srs",
                "Sender rewriting (SRS) of forwarded mail, by action (forwarded, returned, refused)",
                &self.srs,
            ),
            (
                "sieve_actions",
                "What users' Sieve filters did with deliveries, by action (fileinto, keep, discard, redirect, redirect_duplicate, reject, vacation, vacation_skipped, error; the server filter's as server_reject, server_discard, server_redirect, server_error)",
                &self.sieve,
            ),
            (
                "dmarc_reports",
                "DMARC aggregate reports by result: queued, no_destination (no rua address agreed to take them), rows_dropped (past the memory bound)",
                &self.dmarc_reports,
            ),
            (
                "smtp_recipients_rejected",
                "Recipients refused by policy, by service, reason and reply code",
                &self.rejections,
            ),
        ] {
            registry.register(name, help, family.clone());
        }
        registry.register(
            "tls_certificate_expiry_timestamp_seconds",
            "When each certificate the listeners serve expires (notAfter), by its first DNS name",
            self.certificate_expiry.clone(),
        );
        registry.register(
            "session_memory_bytes",
            "Client data held by a shard's sessions beyond their free part (the memory budget in use)",
            self.session_memory.clone(),
        );
    }
}

/// DNS lookups of the relay (MX and the implicit MX), shared by all
/// shards: one per destination connection, never per message.
#[derive(Clone, Debug)]
pub struct DnsMetrics {
    lookups: Family<Labels, Counter>,
    cache: Family<Labels, Counter>,
    seconds: Histogram,
}

impl DnsMetrics {
    fn new() -> Self {
        DnsMetrics {
            lookups: Family::default(),
            cache: Family::default(),
            // 100 µs (a cached answer) .. ~6.5 s (timeouts and retries)
            seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 17)),
        }
    }

    /// A lookup ended with `result` (`ok`, `null_mx`, `nxdomain`,
    /// `no_address`, `temp_fail`) after `took`, from the answer cache
    /// (`cached`) or not.
    pub fn lookup(&self, result: &str, took: std::time::Duration, cached: bool) {
        let labels = vec![("result", result.to_owned())];
        self.lookups.get_or_create(&labels).inc();
        let hit = vec![("result", if cached { "hit" } else { "miss" }.to_owned())];
        self.cache.get_or_create(&hit).inc();
        self.seconds.observe(took.as_secs_f64());
    }
}

/// The HTTP injection API's metrics (`POST /api/v1/inject`).
#[derive(Clone, Default)]
pub struct InjectMetrics {
    requests: Family<Labels, Counter>,
    recipients: Family<Labels, Counter>,
    messages: Counter,
    bytes: Counter,
    dkim_signed: Counter,
}

impl InjectMetrics {
    /// A request ended with `result` (`ok`, `partial`, `refused`,
    /// `bad_request`, `too_large`, `store_error`).
    pub fn request(&self, result: &str) {
        let labels = vec![("result", result.to_owned())];
        self.requests.get_or_create(&labels).inc();
    }

    /// `n` recipients were `accepted` or `refused`.
    pub fn recipients(&self, result: &str, n: usize) {
        let labels = vec![("result", result.to_owned())];
        self.recipients.get_or_create(&labels).inc_by(n as u64);
    }

    /// A message of `size` bytes was stored, with `signatures` DKIM
    /// signatures.
    pub fn stored(&self, size: u64, signatures: usize) {
        self.messages.inc();
        self.bytes.inc_by(size);
        if signatures > 0 {
            self.dkim_signed.inc();
        }
    }

    fn register(&mut self, registry: &mut Registry, dkim_signed: &Family<Labels, Counter>) {
        // Signed injected mail counts with the shards' under shard="inject".
        self.dkim_signed = dkim_signed
            .get_or_create(&vec![("shard", "inject".to_owned())])
            .clone();
        registry.register(
            "inject_requests",
            "Injection API requests, by result",
            self.requests.clone(),
        );
        registry.register(
            "inject_recipients",
            "Recipients of injection requests, accepted or refused",
            self.recipients.clone(),
        );
        registry.register(
            "inject_messages",
            "Messages stored from injection requests",
            self.messages.clone(),
        );
        registry.register(
            "inject_bytes",
            "Bytes stored for injected messages",
            self.bytes.clone(),
        );
    }
}

/// Traffic shaping per MX site ([`crate::relay::shaping`]). Only sites
/// that a shaping rule names or whose limits were changed by what they
/// answered carry a `site` label, so a sender's thousands of quiet sites
/// cost no series.
#[derive(Clone, Default)]
pub struct SiteMetrics {
    connection_limit: Family<Labels, Gauge>,
    rate_limit: Family<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    suspended: Family<Labels, Gauge>,
    changes: Family<Labels, Counter>,
}

impl SiteMetrics {
    /// The limits in force for `site` (rate: messages per second, if any).
    pub fn set(&self, site: &str, connections: usize, rate: Option<f64>, suspended: bool) {
        let labels = vec![("site", site.to_owned())];
        self.connection_limit
            .get_or_create(&labels)
            .set(connections as i64);
        self.rate_limit
            .get_or_create(&labels)
            .set(rate.unwrap_or(0.0));
        self.suspended
            .get_or_create(&labels)
            .set(i64::from(suspended));
    }

    /// `site` is back at limits nobody configured: drop its series.
    pub fn remove(&self, site: &str) {
        let labels = vec![("site", site.to_owned())];
        self.connection_limit.remove(&labels);
        self.rate_limit.remove(&labels);
        self.suspended.remove(&labels);
    }

    /// A site's limits were `lowered`, `raised` or it was `suspended`.
    pub fn changed(&self, direction: &str) {
        let labels = vec![("direction", direction.to_owned())];
        self.changes.get_or_create(&labels).inc();
    }

    fn register(&self, registry: &mut Registry) {
        registry.register(
            "relay_site_connection_limit",
            "Connections a shaped or adapted MX site may have open now",
            self.connection_limit.clone(),
        );
        registry.register(
            "relay_site_rate_limit",
            "Messages per second a shaped or adapted MX site may take now (0: no rate limit)",
            self.rate_limit.clone(),
        );
        registry.register(
            "relay_site_suspended",
            "1 while an MX site is left alone after it asked to slow down",
            self.suspended.clone(),
        );
        registry.register(
            "relay_site_limit_changes",
            "Adaptive changes of MX sites' limits, by direction (lowered, raised, suspended)",
            self.changes.clone(),
        );
    }
}

/// The webhook poster's metrics, per endpoint (`default` is `webhook.url`).
#[derive(Clone, Default)]
pub struct WebhookMetrics {
    posts: Family<Labels, Counter>,
    events: Family<Labels, Counter>,
    dropped: Family<Labels, Counter>,
    oldest: Family<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>,
}

impl WebhookMetrics {
    /// A POST to `endpoint` ended with `result` (`ok`, `failed`,
    /// `refused`, `timeout`).
    pub fn post(&self, endpoint: &str, result: &str) {
        let labels = vec![
            ("endpoint", endpoint.to_owned()),
            ("result", result.to_owned()),
        ];
        self.posts.get_or_create(&labels).inc();
    }

    /// `n` events were posted to `endpoint` and taken.
    pub fn posted(&self, endpoint: &str, n: usize) {
        let labels = vec![("endpoint", endpoint.to_owned())];
        self.events.get_or_create(&labels).inc_by(n as u64);
    }

    /// `n` events for `endpoint` were dropped unposted.
    pub fn dropped(&self, endpoint: &str, n: usize) {
        let labels = vec![("endpoint", endpoint.to_owned())];
        self.dropped.get_or_create(&labels).inc_by(n as u64);
    }

    /// The oldest event waiting for `endpoint` is `seconds` old (0: none).
    pub fn oldest_age(&self, endpoint: &str, seconds: f64) {
        let labels = vec![("endpoint", endpoint.to_owned())];
        self.oldest.get_or_create(&labels).set(seconds);
    }

    fn register(&self, registry: &mut Registry) {
        registry.register(
            "webhook_posts",
            "POSTs of delivery events to the webhook, by result",
            self.posts.clone(),
        );
        registry.register(
            "webhook_events_posted",
            "Delivery events the webhook endpoint took",
            self.events.clone(),
        );
        registry.register(
            "webhook_events_dropped",
            "Delivery events dropped unposted: refused for good by the endpoint (a 4xx for that event alone), or older than webhook.max_event_age_hours",
            self.dropped.clone(),
        );
        registry.register(
            "webhook_oldest_event_age_seconds",
            "Age of the oldest delivery event not yet posted (0: none)",
            self.oldest.clone(),
        );
    }
}

/// IMAP's metric families, one series per shard.
#[derive(Default)]
struct ImapFamilies {
    connections: Family<Labels, Counter>,
    connections_active: Family<Labels, Gauge>,
    connections_refused: Family<Labels, Counter>,
    logins: Family<Labels, Counter>,
    commands: Family<Labels, Counter>,
    fetched: Family<Labels, Counter>,
    timeouts: Family<Labels, Counter>,
    mailbox_reads: Family<Labels, Counter>,
}

/// One shard's IMAP metric handles.
#[derive(Clone)]
pub struct ImapMetrics {
    /// Connections accepted.
    pub connections: Counter,
    /// Connections open now.
    pub connections_active: Gauge,
    /// Connections refused because the shard was full.
    pub connections_refused: Counter,
    /// Logins that succeeded.
    pub logins_ok: Counter,
    /// Logins refused for bad credentials.
    pub logins_failed: Counter,
    /// Logins that failed because the store failed.
    pub logins_unavailable: Counter,
    /// Commands run against the store.
    pub commands: Counter,
    /// Messages sent in FETCH responses.
    pub fetched: Counter,
    /// Sessions closed by the autologout timer.
    pub timeouts: Counter,
    /// Mailbox row sets read from the store.
    pub rows_read: Counter,
    /// Mailbox row sets another session of the shard had read already.
    pub rows_shared: Counter,
}

/// POP3's metric families, one series per shard.
#[derive(Default)]
struct Pop3Families {
    connections: Family<Labels, Counter>,
    connections_active: Family<Labels, Gauge>,
    connections_refused: Family<Labels, Counter>,
    logins: Family<Labels, Counter>,
    retrieved: Family<Labels, Counter>,
    retrieved_bytes: Family<Labels, Counter>,
    deleted: Family<Labels, Counter>,
    timeouts: Family<Labels, Counter>,
}

#[derive(Default)]
struct ManageSieveFamilies {
    connections: Family<Labels, Counter>,
    connections_active: Family<Labels, Gauge>,
    connections_refused: Family<Labels, Counter>,
    commands: Family<Labels, Counter>,
}

/// One shard's ManageSieve metric handles.
#[derive(Clone)]
pub struct ManageSieveMetrics {
    /// Connections accepted.
    pub connections: Counter,
    /// Connections open now.
    pub connections_active: Gauge,
    /// Connections refused because the shard was full.
    pub connections_refused: Counter,
    commands: Family<Labels, Counter>,
}

impl ManageSieveMetrics {
    /// A script command (`putscript`, `setactive`...) ended with `result`
    /// (`ok`, `no`, `error`).
    pub fn command(&self, command: &str, result: &str) {
        let labels = vec![
            ("command", command.to_owned()),
            ("result", result.to_owned()),
        ];
        self.commands.get_or_create(&labels).inc();
    }
}

/// One shard's POP3 metric handles.
#[derive(Clone)]
pub struct Pop3Metrics {
    /// Connections accepted.
    pub connections: Counter,
    /// Connections open now.
    pub connections_active: Gauge,
    /// Connections refused because the shard was full.
    pub connections_refused: Counter,
    /// Logins that opened the maildrop.
    pub logins_ok: Counter,
    /// Logins refused for bad credentials.
    pub logins_failed: Counter,
    /// Logins refused because another session held the maildrop.
    pub logins_in_use: Counter,
    /// Logins that failed because the store failed.
    pub logins_unavailable: Counter,
    /// Messages sent for RETR or TOP.
    pub retrieved: Counter,
    /// Message bytes read from the store for RETR or TOP.
    pub retrieved_bytes: Counter,
    /// Messages removed at QUIT.
    pub deleted: Counter,
    /// Sessions closed by the autologout timer.
    pub timeouts: Counter,
}

/// The relay's metric families, one series per shard.
struct RelayFamilies {
    recipients: Family<Labels, Counter>,
    refusals: Family<Labels, Counter>,
    sources: Family<Labels, Counter>,
    transactions: Family<Labels, Counter>,
    pipelined: Family<Labels, Counter>,
    dsns: Family<Labels, Counter>,
    suppressions_added: Family<Labels, Counter>,
    connections_opened: Family<Labels, Counter>,
    connection_failures: Family<Labels, Counter>,
    connections_active: Family<Labels, Gauge>,
    tls_connections: Family<Labels, Counter>,
    tls_failures: Family<Labels, Counter>,
    dane: Family<Labels, Counter>,
    queued: Family<Labels, Gauge>,
    deferred: Family<Labels, Gauge>,
    oldest: Family<Labels, Gauge>,
    left_in_store: Family<Labels, Counter>,
    leftovers_removed: Family<Labels, Counter>,
    delivery_seconds: HistogramFamily,
    messages_per_connection: HistogramFamily,
}

impl RelayFamilies {
    fn new() -> Self {
        RelayFamilies {
            recipients: Family::default(),
            refusals: Family::default(),
            sources: Family::default(),
            transactions: Family::default(),
            pipelined: Family::default(),
            dsns: Family::default(),
            suppressions_added: Family::default(),
            connections_opened: Family::default(),
            connection_failures: Family::default(),
            connections_active: Family::default(),
            tls_connections: Family::default(),
            tls_failures: Family::default(),
            dane: Family::default(),
            queued: Family::default(),
            deferred: Family::default(),
            oldest: Family::default(),
            messages_per_connection: Family::new_with_constructor(batch_histogram),
            left_in_store: Family::default(),
            leftovers_removed: Family::default(),
            delivery_seconds: Family::new_with_constructor(delivery_histogram),
        }
    }
}

/// One shard's relay metric handles.
#[derive(Clone)]
pub struct RelayMetrics {
    /// Recipients accepted by the receiving server.
    pub delivered: Counter,
    /// Recipients deferred for a later retry.
    pub deferred_recipients: Counter,
    /// Recipients that failed permanently (or expired).
    pub bounced: Counter,
    /// SMTP transactions completed (one per queue entry attempt).
    pub transactions: Counter,
    /// Transactions sent behind others not yet answered (BDAT pipelined).
    pub pipelined: Counter,
    /// Delivery status notifications queued.
    pub dsns: Counter,
    /// Addresses put on the suppression list after a hard bounce.
    pub suppressions_added: Counter,
    /// Outbound connections that reached the ready state.
    pub connections_opened: Counter,
    /// Hosts that could not be used (refused, timed out, error greeting).
    pub connection_failures: Counter,
    /// Outbound connection tasks running now.
    pub connections_active: Gauge,
    /// STARTTLS handshakes that succeeded.
    pub tls_connections: Counter,
    /// STARTTLS handshakes that failed (or certificates refused).
    pub tls_failures: Counter,
    /// Queue entries held in memory (ready, deferred and in flight).
    pub queued: Gauge,
    /// Queue entries waiting for their retry time.
    pub deferred: Gauge,
    /// Age of the oldest message among the entries in memory, seconds.
    pub oldest: Gauge,
    /// Entries left in the store for lack of memory (swept in later).
    pub left_in_store: Counter,
    /// Finished messages whose envelope stayed in the spool, removed.
    pub leftovers_removed: Counter,
    /// Time from arrival to delivery.
    pub delivery_seconds: Histogram,
    /// Transactions per outbound connection (its reuse).
    pub messages_per_connection: Histogram,
    /// Refused recipients by result and bounce class (see [`RelayMetrics::refused`]).
    refusals: Family<Labels, Counter>,
    /// Messages sent by egress source.
    sources: Family<Labels, Counter>,
    /// DANE verdicts of destinations (see [`RelayMetrics::dane`]).
    dane: Family<Labels, Counter>,
}

impl RelayMetrics {
    /// Count one recipient refused (`result` deferred or bounced) for the
    /// reason `class` names.
    pub fn refused(&self, result: &str, class: &'static str) {
        self.refusals
            .get_or_create(&vec![
                ("result", result.to_owned()),
                ("class", class.to_owned()),
            ])
            .inc();
    }

    /// A destination's DANE verdict, as a connection to it was opened:
    /// `insecure` (not DNSSEC-validated), `no_tlsa` (validated, no usable
    /// TLSA records), `tlsa` (TLS required), `lookup_failed` (deferred).
    pub fn dane(&self, verdict: &str) {
        self.dane
            .get_or_create(&vec![("verdict", verdict.to_owned())])
            .inc();
    }

    /// Egress source `address` sent a message.
    pub fn source_sent(&self, address: std::net::IpAddr) {
        self.sources
            .get_or_create(&vec![("source", address.to_string())])
            .inc();
    }
}

/// One shard's handles: clones of the shard's own metric instances.
#[derive(Clone)]
pub struct ShardMetrics {
    /// Connections accepted.
    pub connections: Counter,
    /// Connections open now.
    pub connections_active: Gauge,
    /// Connections refused because the shard was full.
    pub connections_refused: Counter,
    /// Messages acknowledged with 250.
    pub messages: Counter,
    /// Bytes stored for acknowledged messages.
    pub bytes: Counter,
    /// Messages refused because the store failed.
    pub store_failures: Counter,
    /// Sessions closed for idleness.
    pub timeouts: Counter,
    /// Time from end of data to durable commit, as the session saw it.
    pub commit_wait: Histogram,
    /// INBOX rows written for local accounts.
    pub local_deliveries: Counter,
    /// DSNs reporting local deliveries the sender asked to hear of.
    pub delivery_notices: Counter,
    /// Messages DKIM-signed at acceptance.
    pub dkim_signed: Counter,
    /// Sessions ended by a panic (a bug), their connection closed.
    pub session_panics: Counter,
}

impl Metrics {
    /// Create and register every metric.
    pub fn new() -> Arc<Metrics> {
        let mut registry = Registry::with_prefix("ringpost");
        let mut m = Metrics {
            smtp_connections: Family::default(),
            smtp_connections_active: Family::default(),
            smtp_connections_refused: Family::default(),
            smtp_messages: Family::default(),
            smtp_bytes: Family::default(),
            smtp_store_failures: Family::default(),
            smtp_timeouts: Family::default(),
            smtp_commit_wait: Family::new_with_constructor(latency_histogram),
            local_deliveries: Family::default(),
            delivery_notices: Family::default(),
            dkim_signed: Family::default(),
            session_panics: Family::default(),
            store_commits: Counter::default(),
            store_commit_errors: Counter::default(),
            store_commit_requests: batch_histogram(),
            store_commit_bytes: Counter::default(),
            store_commit_seconds: latency_histogram(),
            body_cache_bytes: Gauge::default(),
            body_cache_capacity: Gauge::default(),
            store_disk_full: Gauge::default(),
            store_disk_bytes: Gauge::default(),
            relay_queue_held: Gauge::default(),
            store_memtable_bytes: Gauge::default(),
            store_segment_bytes: Gauge::default(),
            store_segment_live_bytes: Gauge::default(),
            store_pending_compaction_bytes: Gauge::default(),
            store_write_stopped: Gauge::default(),
            store_delayed_write_rate: Gauge::default(),
            store_disk_full_refusals: Counter::default(),
            log_lines_dropped: Family::default(),
            log_drop_sources: Mutex::new(Vec::new()),
            store: OnceLock::new(),
            relay: RelayFamilies::new(),
            pop3: Pop3Families::default(),
            imap: ImapFamilies::default(),
            managesieve: ManageSieveFamilies::default(),
            security: SecurityMetrics::default(),
            dns: DnsMetrics::new(),
            inject: InjectMetrics::default(),
            sites: SiteMetrics::default(),
            webhook: WebhookMetrics::default(),
            registry: Registry::default(),
            unprefixed: Registry::default(),
        };
        m.security.register(&mut registry);
        registry.register(
            "build",
            "The running build: ringpost's version",
            prometheus_client::metrics::info::Info::new(vec![(
                "version",
                env!("CARGO_PKG_VERSION").to_owned(),
            )]),
        );
        registry.register(
            "dns_lookups",
            "MX lookups of the relay (with the implicit MX), by result",
            m.dns.lookups.clone(),
        );
        registry.register(
            "dns_cache_lookups",
            "MX lookups answered from the relay's answer cache (hit) or by DNS (miss)",
            m.dns.cache.clone(),
        );
        registry.register(
            "dns_lookup_seconds",
            "How long MX lookups took (cache hits included)",
            m.dns.seconds.clone(),
        );
        m.inject.register(&mut registry, &m.dkim_signed);
        m.webhook.register(&mut registry);
        m.sites.register(&mut registry);
        let mut unprefixed = Registry::default();
        unprefixed.register_collector(Box::new(crate::process_metrics::ProcessCollector));
        registry.register(
            "smtp_connections",
            "SMTP connections accepted",
            m.smtp_connections.clone(),
        );
        registry.register(
            "smtp_connections_active",
            "SMTP connections open now",
            m.smtp_connections_active.clone(),
        );
        registry.register(
            "smtp_connections_refused",
            "SMTP connections refused with 421 because the shard was full",
            m.smtp_connections_refused.clone(),
        );
        registry.register(
            "smtp_messages_accepted",
            "Messages acknowledged with 250 after a durable commit",
            m.smtp_messages.clone(),
        );
        registry.register(
            "smtp_bytes_accepted",
            "Stored bytes of acknowledged messages",
            m.smtp_bytes.clone(),
        );
        registry.register(
            "smtp_store_failures",
            "Messages refused with 451 because the store failed",
            m.smtp_store_failures.clone(),
        );
        registry.register(
            "smtp_timeouts",
            "SMTP sessions closed for idleness",
            m.smtp_timeouts.clone(),
        );
        registry.register(
            "smtp_commit_wait_seconds",
            "Time from end of message data to durable commit, per shard",
            m.smtp_commit_wait.clone(),
        );
        registry.register(
            "local_deliveries",
            "Messages put into a local user's INBOX on arrival (one per account)",
            m.local_deliveries.clone(),
        );
        registry.register(
            "local_delivery_dsns",
            "DSNs queued on arrival for local deliveries the sender asked to hear of (NOTIFY=SUCCESS)",
            m.delivery_notices.clone(),
        );
        for (name, help, gauge) in [
            (
                "relay_queue_held",
                "Relay queue entries on hold (never delivered until released), counted in the store at each scrape, up to 100000",
                &m.relay_queue_held,
            ),
            (
                "store_disk_bytes",
                "Bytes of the store's data files on disk (tables, blob files and body segments)",
                &m.store_disk_bytes,
            ),
            (
                "store_segment_bytes",
                "Bytes of the body segment files (large bodies, written once)",
                &m.store_segment_bytes,
            ),
            (
                "store_segment_live_bytes",
                "Bytes of live bodies in the segment files (the rest is reclaimed by compaction)",
                &m.store_segment_live_bytes,
            ),
            (
                "store_memtable_bytes",
                "Bytes written to the store and not yet flushed from memory",
                &m.store_memtable_bytes,
            ),
            (
                "store_pending_compaction_bytes",
                "Bytes the store's compaction is estimated to have to rewrite",
                &m.store_pending_compaction_bytes,
            ),
            (
                "store_write_stopped",
                "1 while the store stops writes until compaction catches up",
                &m.store_write_stopped,
            ),
            (
                "store_delayed_write_rate_bytes",
                "Bytes a second the store slows writes to (0: not slowed)",
                &m.store_delayed_write_rate,
            ),
        ] {
            registry.register(name, help, gauge.clone());
        }
        registry.register(
            "dkim_signed_messages",
            "Outbound messages DKIM-signed when accepted, per shard",
            m.dkim_signed.clone(),
        );
        registry.register(
            "session_panics",
            "Sessions (SMTP, IMAP, POP3) ended by a panic, a bug: the connection closed, the shard went on",
            m.session_panics.clone(),
        );
        registry.register(
            "store_commits",
            "Physical group-commit writes",
            m.store_commits.clone(),
        );
        registry.register(
            "store_body_cache_bytes",
            "Bytes of message bodies held in the in-memory body cache",
            m.body_cache_bytes.clone(),
        );
        registry.register(
            "store_body_cache_capacity_bytes",
            "Capacity of the body cache (store.body_cache_mb); 0: off",
            m.body_cache_capacity.clone(),
        );
        registry.register(
            "store_disk_full",
            "1 while mail is refused because the disk is nearly full (store.min_free_disk_mb)",
            m.store_disk_full.clone(),
        );
        registry.register(
            "store_disk_full_refusals",
            "Group-commit writes refused because the disk is nearly full",
            m.store_disk_full_refusals.clone(),
        );
        registry.register(
            "log_lines_dropped",
            "Log lines dropped because the log's writer fell behind, by log (log: the server log, mail: the mail log file)",
            m.log_lines_dropped.clone(),
        );
        registry.register(
            "store_commit_errors",
            "Group-commit writes that failed",
            m.store_commit_errors.clone(),
        );
        registry.register(
            "store_commit_batch_requests",
            "Logical commits merged into one physical write (group commit batch size)",
            m.store_commit_requests.clone(),
        );
        registry.register(
            "store_commit_bytes",
            "Key and value bytes written by group commits",
            m.store_commit_bytes.clone(),
        );
        registry.register(
            "store_commit_seconds",
            "Time of one physical write including fsync",
            m.store_commit_seconds.clone(),
        );
        let r = &m.relay;
        registry.register(
            "relay_recipients",
            "Recipients by delivery attempt result (delivered, deferred, bounced)",
            r.recipients.clone(),
        );
        registry.register(
            "relay_source_messages",
            "Messages sent from each egress source (relay.sources)",
            r.sources.clone(),
        );
        registry.register(
            "relay_refusals",
            "Recipients deferred or bounced, by bounce class (invalid_recipient, policy, rate_limited, ...)",
            r.refusals.clone(),
        );
        registry.register(
            "relay_suppressions_added",
            "Addresses put on the suppression list after a hard bounce",
            r.suppressions_added.clone(),
        );
        registry.register(
            "relay_transactions",
            "Outbound SMTP transactions completed",
            r.transactions.clone(),
        );
        registry.register(
            "relay_transactions_pipelined",
            "Outbound SMTP transactions sent before the ones ahead of them were answered",
            r.pipelined.clone(),
        );
        registry.register(
            "relay_dsns",
            "Delivery status notifications queued to senders",
            r.dsns.clone(),
        );
        registry.register(
            "relay_connections_opened",
            "Outbound SMTP connections that reached the ready state",
            r.connections_opened.clone(),
        );
        registry.register(
            "relay_connection_failures",
            "Outbound hosts that could not be used (refused, timed out, error greeting)",
            r.connection_failures.clone(),
        );
        registry.register(
            "relay_connections_active",
            "Outbound connection tasks running now",
            r.connections_active.clone(),
        );
        registry.register(
            "relay_tls_connections",
            "Outbound STARTTLS handshakes that succeeded",
            r.tls_connections.clone(),
        );
        registry.register(
            "relay_tls_failures",
            "Outbound STARTTLS handshakes that failed or whose certificate was refused",
            r.tls_failures.clone(),
        );
        registry.register(
            "relay_dane",
            "DANE verdicts of destinations as connections to them were opened (insecure, no_tlsa, tlsa, lookup_failed)",
            r.dane.clone(),
        );
        registry.register(
            "relay_queue_entries",
            "Queue entries held in memory by the scheduler",
            r.queued.clone(),
        );
        registry.register(
            "relay_queue_deferred",
            "Queue entries waiting for their retry time",
            r.deferred.clone(),
        );
        registry.register(
            "relay_messages_per_connection",
            "Transactions each outbound connection carried before it closed (connection reuse)",
            r.messages_per_connection.clone(),
        );
        registry.register(
            "relay_queue_oldest_seconds",
            "Age of the oldest message among the queue entries a shard has in memory",
            r.oldest.clone(),
        );
        registry.register(
            "relay_queue_left_in_store",
            "Queue entries left in the store for lack of memory, swept in later",
            r.left_in_store.clone(),
        );
        registry.register(
            "relay_spool_leftovers_removed",
            "Finished messages whose envelope and body stayed in the spool (a crash or stop mid-delivery), removed",
            r.leftovers_removed.clone(),
        );
        registry.register(
            "relay_delivery_seconds",
            "Time from arrival to delivery",
            r.delivery_seconds.clone(),
        );
        let p = &m.pop3;
        for (name, help, family) in [
            (
                "pop3_connections",
                "POP3 connections accepted",
                &p.connections,
            ),
            (
                "pop3_connections_refused",
                "POP3 connections refused because the shard was full",
                &p.connections_refused,
            ),
            (
                "pop3_logins",
                "POP3 logins by result (ok, failed, in_use, unavailable)",
                &p.logins,
            ),
            (
                "pop3_messages_retrieved",
                "Messages sent for RETR or TOP",
                &p.retrieved,
            ),
            (
                "pop3_retrieved_bytes",
                "Message bytes read from the store for RETR or TOP",
                &p.retrieved_bytes,
            ),
            (
                "pop3_messages_deleted",
                "Messages removed at QUIT",
                &p.deleted,
            ),
            (
                "pop3_timeouts",
                "POP3 sessions closed by the autologout timer",
                &p.timeouts,
            ),
        ] {
            registry.register(name, help, family.clone());
        }
        let i = &m.imap;
        for (name, help, family) in [
            (
                "imap_connections",
                "IMAP connections accepted",
                &i.connections,
            ),
            (
                "imap_connections_refused",
                "IMAP connections refused because the shard was full",
                &i.connections_refused,
            ),
            (
                "imap_logins",
                "IMAP logins by result (ok, failed, unavailable)",
                &i.logins,
            ),
            (
                "imap_commands",
                "IMAP commands run against the store",
                &i.commands,
            ),
            (
                "imap_messages_fetched",
                "Messages sent in FETCH responses",
                &i.fetched,
            ),
            (
                "imap_timeouts",
                "IMAP sessions closed by the autologout timer",
                &i.timeouts,
            ),
            (
                "imap_mailbox_reads",
                "Mailbox row sets IMAP sessions needed, by where they came from (store, or shared: read already by another session of the shard)",
                &i.mailbox_reads,
            ),
        ] {
            registry.register(name, help, family.clone());
        }
        registry.register(
            "imap_connections_active",
            "IMAP connections open now",
            i.connections_active.clone(),
        );
        registry.register(
            "pop3_connections_active",
            "POP3 connections open now",
            p.connections_active.clone(),
        );
        let s = &m.managesieve;
        for (name, help, family) in [
            (
                "managesieve_connections",
                "ManageSieve connections accepted",
                &s.connections,
            ),
            (
                "managesieve_connections_refused",
                "ManageSieve connections refused because the shard was full",
                &s.connections_refused,
            ),
            (
                "managesieve_commands",
                "ManageSieve script commands by command and result (ok, no, error)",
                &s.commands,
            ),
        ] {
            registry.register(name, help, family.clone());
        }
        registry.register(
            "managesieve_connections_active",
            "ManageSieve connections open now",
            s.connections_active.clone(),
        );
        Arc::new(Metrics {
            registry,
            unprefixed,
            ..m
        })
    }

    /// The security counters (shared by all shards).
    pub fn security(&self) -> SecurityMetrics {
        self.security.clone()
    }

    /// The IMAP handles one shard updates.
    pub fn imap_shard(&self, shard: usize) -> ImapMetrics {
        let i = &self.imap;
        let labels: Labels = vec![("shard", shard.to_string())];
        let result = |result: &str| -> Labels {
            vec![("shard", shard.to_string()), ("result", result.to_owned())]
        };
        // One guard at a time per family (see `relay_shard`).
        let logins_ok = i.logins.get_or_create(&result("ok")).clone();
        let logins_failed = i.logins.get_or_create(&result("failed")).clone();
        let logins_unavailable = i.logins.get_or_create(&result("unavailable")).clone();
        let from = |from: &str| -> Labels {
            vec![("shard", shard.to_string()), ("from", from.to_owned())]
        };
        let rows_read = i.mailbox_reads.get_or_create(&from("store")).clone();
        let rows_shared = i.mailbox_reads.get_or_create(&from("shared")).clone();
        ImapMetrics {
            connections: i.connections.get_or_create(&labels).clone(),
            connections_active: i.connections_active.get_or_create(&labels).clone(),
            connections_refused: i.connections_refused.get_or_create(&labels).clone(),
            logins_ok,
            logins_failed,
            logins_unavailable,
            commands: i.commands.get_or_create(&labels).clone(),
            fetched: i.fetched.get_or_create(&labels).clone(),
            timeouts: i.timeouts.get_or_create(&labels).clone(),
            rows_read,
            rows_shared,
        }
    }

    /// The ManageSieve handles one shard updates.
    pub fn managesieve_shard(&self, shard: usize) -> ManageSieveMetrics {
        let s = &self.managesieve;
        let labels: Labels = vec![("shard", shard.to_string())];
        ManageSieveMetrics {
            connections: s.connections.get_or_create(&labels).clone(),
            connections_active: s.connections_active.get_or_create(&labels).clone(),
            connections_refused: s.connections_refused.get_or_create(&labels).clone(),
            commands: s.commands.clone(),
        }
    }

    /// The POP3 handles one shard updates.
    pub fn pop3_shard(&self, shard: usize) -> Pop3Metrics {
        let p = &self.pop3;
        let labels: Labels = vec![("shard", shard.to_string())];
        let result = |result: &str| -> Labels {
            vec![("shard", shard.to_string()), ("result", result.to_owned())]
        };
        // One guard at a time per family (see `relay_shard`).
        let logins_ok = p.logins.get_or_create(&result("ok")).clone();
        let logins_failed = p.logins.get_or_create(&result("failed")).clone();
        let logins_in_use = p.logins.get_or_create(&result("in_use")).clone();
        let logins_unavailable = p.logins.get_or_create(&result("unavailable")).clone();
        Pop3Metrics {
            connections: p.connections.get_or_create(&labels).clone(),
            connections_active: p.connections_active.get_or_create(&labels).clone(),
            connections_refused: p.connections_refused.get_or_create(&labels).clone(),
            logins_ok,
            logins_failed,
            logins_in_use,
            logins_unavailable,
            retrieved: p.retrieved.get_or_create(&labels).clone(),
            retrieved_bytes: p.retrieved_bytes.get_or_create(&labels).clone(),
            deleted: p.deleted.get_or_create(&labels).clone(),
            timeouts: p.timeouts.get_or_create(&labels).clone(),
        }
    }

    /// The relay handles one shard updates.
    pub fn relay_shard(&self, shard: usize) -> RelayMetrics {
        let r = &self.relay;
        let labels: Labels = vec![("shard", shard.to_string())];
        let result = |result: &str| -> Labels {
            vec![("shard", shard.to_string()), ("result", result.to_owned())]
        };
        // Each guard from `get_or_create` must be dropped before the next
        // call on the same family, or the insert would wait on our own lock.
        let delivered = r.recipients.get_or_create(&result("delivered")).clone();
        let deferred_recipients = r.recipients.get_or_create(&result("deferred")).clone();
        let bounced = r.recipients.get_or_create(&result("bounced")).clone();
        RelayMetrics {
            delivered,
            deferred_recipients,
            bounced,
            transactions: r.transactions.get_or_create(&labels).clone(),
            pipelined: r.pipelined.get_or_create(&labels).clone(),
            dsns: r.dsns.get_or_create(&labels).clone(),
            suppressions_added: r.suppressions_added.get_or_create(&labels).clone(),
            connections_opened: r.connections_opened.get_or_create(&labels).clone(),
            connection_failures: r.connection_failures.get_or_create(&labels).clone(),
            connections_active: r.connections_active.get_or_create(&labels).clone(),
            tls_connections: r.tls_connections.get_or_create(&labels).clone(),
            tls_failures: r.tls_failures.get_or_create(&labels).clone(),
            queued: r.queued.get_or_create(&labels).clone(),
            deferred: r.deferred.get_or_create(&labels).clone(),
            oldest: r.oldest.get_or_create(&labels).clone(),
            left_in_store: r.left_in_store.get_or_create(&labels).clone(),
            leftovers_removed: r.leftovers_removed.get_or_create(&labels).clone(),
            delivery_seconds: r.delivery_seconds.get_or_create(&labels).clone(),
            messages_per_connection: r.messages_per_connection.get_or_create(&labels).clone(),
            refusals: r.refusals.clone(),
            sources: r.sources.clone(),
            dane: r.dane.clone(),
        }
    }

    /// The handles one shard updates.
    pub fn shard(&self, shard: usize) -> ShardMetrics {
        let labels: Labels = vec![("shard", shard.to_string())];
        ShardMetrics {
            connections: self.smtp_connections.get_or_create(&labels).clone(),
            connections_active: self.smtp_connections_active.get_or_create(&labels).clone(),
            connections_refused: self.smtp_connections_refused.get_or_create(&labels).clone(),
            messages: self.smtp_messages.get_or_create(&labels).clone(),
            bytes: self.smtp_bytes.get_or_create(&labels).clone(),
            store_failures: self.smtp_store_failures.get_or_create(&labels).clone(),
            timeouts: self.smtp_timeouts.get_or_create(&labels).clone(),
            commit_wait: self.smtp_commit_wait.get_or_create(&labels).clone(),
            local_deliveries: self.local_deliveries.get_or_create(&labels).clone(),
            delivery_notices: self.delivery_notices.get_or_create(&labels).clone(),
            dkim_signed: self.dkim_signed.get_or_create(&labels).clone(),
            session_panics: self.session_panics.get_or_create(&labels).clone(),
        }
    }

    /// Record one physical write of the commit pipeline (called on the writer
    /// thread). A full disk is logged when it starts and when it ends.
    pub fn observe_commit(&self, report: &CommitReport) {
        if report.disk_full {
            self.store_disk_full_refusals.inc_by(report.refused as u64);
            if self.store_disk_full.set(1) == 0 {
                tracing::error!(
                    "disk nearly full (store.min_free_disk_mb): refusing new mail with 452 until space is freed; deliveries, flags and deletions go on"
                );
            }
        } else if report.room_again && self.store_disk_full.set(0) == 1 {
            tracing::warn!("disk has room again: taking mail");
        }
        if report.requests == 0 {
            // Every request was refused: no write happened.
            return;
        }
        self.store_commits.inc();
        if !report.ok {
            self.store_commit_errors.inc();
        }
        self.store_commit_requests.observe(report.requests as f64);
        self.store_commit_bytes.inc_by(report.bytes as u64);
        self.store_commit_seconds
            .observe(report.latency.as_secs_f64());
    }

    /// The webhook poster's metrics.
    pub fn webhook(&self) -> WebhookMetrics {
        self.webhook.clone()
    }

    /// The injection API's metrics.
    pub fn inject(&self) -> InjectMetrics {
        self.inject.clone()
    }

    /// The MX sites' shaping metrics.
    pub fn sites(&self) -> SiteMetrics {
        self.sites.clone()
    }

    /// The relay's DNS metrics.
    pub fn dns(&self) -> DnsMetrics {
        self.dns.clone()
    }

    /// Whether writes are refused for lack of disk space now.
    pub fn disk_full(&self) -> bool {
        self.store_disk_full.get() != 0
    }

    /// Sample `store`'s cache use at every scrape (the first store given).
    pub fn watch_store(&self, store: Arc<dyn Store>) {
        let _ = self.store.set(store);
    }

    /// Read the count of lines `log` dropped with `read` at every scrape
    /// (`ringpost_log_lines_dropped_total{log}`): a log that cannot keep
    /// up loses lines rather than stall the server, and this says so.
    pub fn watch_log_drops(
        &self,
        log: &'static str,
        read: impl Fn() -> u64 + Send + Sync + 'static,
    ) {
        lock(&self.log_drop_sources).push(LogDropSource {
            log,
            read: Box::new(read),
            last: 0,
        });
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        for source in lock(&self.log_drop_sources).iter_mut() {
            let now = (source.read)();
            if now > source.last {
                self.log_lines_dropped
                    .get_or_create(&vec![("log", source.log.to_owned())])
                    .inc_by(now - source.last);
                source.last = now;
            }
        }
        if let Some(usage) = self.store.get().and_then(|s| s.body_cache_usage()) {
            self.body_cache_bytes.set(usage.used as i64);
            self.body_cache_capacity.set(usage.capacity as i64);
        }
        if let Some(health) = self.store.get().and_then(|s| s.health()) {
            let set =
                |gauge: &Gauge, value: u64| gauge.set(i64::try_from(value).unwrap_or(i64::MAX));
            set(&self.store_disk_bytes, health.disk_bytes);
            set(&self.store_memtable_bytes, health.memtable_bytes);
            set(&self.store_segment_bytes, health.segment_bytes);
            set(&self.store_segment_live_bytes, health.segment_live_bytes);
            set(
                &self.store_pending_compaction_bytes,
                health.pending_compaction_bytes,
            );
            set(&self.store_write_stopped, u64::from(health.write_stopped));
            set(&self.store_delayed_write_rate, health.delayed_write_rate);
        }
        if let Some(store) = self.store.get() {
            if let Ok(held) = ringpost_storage::spool::count_held(&**store, MAX_HELD_COUNTED) {
                self.relay_queue_held.set(held as i64);
            }
        }
        let mut out = String::with_capacity(16 * 1024);
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        // One exposition: the second registry's text goes before the one
        // `# EOF` its encoding ends with.
        if out.ends_with("# EOF\n") {
            out.truncate(out.len() - "# EOF\n".len());
        }
        encode(&mut out, &self.unprefixed).expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn dropped_log_lines_are_counted_as_they_grow() {
        use std::sync::atomic::{AtomicU64, Ordering};
        let m = Metrics::new();
        let dropped = Arc::new(AtomicU64::new(0));
        let read = dropped.clone();
        m.watch_log_drops("mail", move || read.load(Ordering::Relaxed));
        assert!(!m.render().contains("ringpost_log_lines_dropped_total{"));
        dropped.store(3, Ordering::Relaxed);
        assert!(m
            .render()
            .contains("ringpost_log_lines_dropped_total{log=\"mail\"} 3"));
        dropped.store(5, Ordering::Relaxed);
        let text = m.render();
        assert!(
            text.contains("ringpost_log_lines_dropped_total{log=\"mail\"} 5"),
            "{text}"
        );
    }

    #[test]
    fn render_includes_shard_labels_and_commit_histogram() {
        let m = Metrics::new();
        let s = m.shard(1);
        s.messages.inc();
        s.commit_wait.observe(0.001);
        m.observe_commit(&CommitReport {
            requests: 7,
            ops: 21,
            bytes: 14000,
            latency: Duration::from_millis(1),
            ok: true,
            disk_full: false,
            refused: 0,
            room_again: false,
        });
        let text = m.render();
        assert!(
            text.contains("ringpost_smtp_messages_accepted_total{shard=\"1\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("ringpost_store_commit_batch_requests_count 1"),
            "{text}"
        );
        assert!(
            text.contains("ringpost_store_commit_bytes_total 14000"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
        assert_eq!(text.matches("# EOF").count(), 1, "{text}");
        assert!(text.contains("ringpost_build_info{version=\""), "{text}");
        assert!(text.contains("\nprocess_resident_memory_bytes "), "{text}");
    }
}
