//! Traffic shaping per MX site: how many connections and how fast, and how
//! that adapts to what the site answers.
//!
//! A *site* is a set of MX hosts (KumoMTA's word): every domain whose MX
//! records name the same hosts shares one, so the 10,000 Google Workspace
//! domains a sender mails are one site with one set of limits. Connection
//! limits, rates and connection reuse apply to the site, across all shards:
//! each site has one [`SiteLimiter`] in the server-wide [`Sites`] table. A
//! limiter is made of atomics, so taking a connection slot or a sending
//! token never waits on a lock; the table is behind a lock, but a shard
//! reads it only when it meets a site it does not hold yet.
//!
//! Limits come from `relay.max_connections_per_destination` and
//! `relay.max_messages_per_connection`, then every matching
//! `[[relay.shaping]]` rule in order ([`SiteLimits::for_site`]).
//!
//! Adaptive: a reply that asks to slow down ([`asks_to_slow_down`]: 421,
//! the big providers' rate and volume texts, the operator's `rate_limited`
//! bounce rules — not a plain "try again later", nor greylisting, which
//! say nothing about pace) halves the site's
//! connections and rate, once per [`DECREASE_HOLD`] however many
//! connections heard it; at the floor (one connection, the lowest rate) it
//! suspends the site for `suspend_secs`. After each `recover_secs` with
//! successful deliveries and no new complaint, connections go up by one and
//! the rate by half, until they are back at the configured limits. Every
//! change is logged and exported ([`SiteMetrics`]).

use crate::config::{RelayConfig, ShapingRule, TlsPolicy};
use crate::metrics::SiteMetrics;
use ringpost_protocols::smtp::bounce_class::{self, Class};
use ringpost_protocols::smtp::client::ServerReply;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

/// One burst of "slow down" replies (every connection of the site hears it
/// at once) lowers the limits once.
pub const DECREASE_HOLD: Duration = Duration::from_secs(1);
/// The slowest an adaptive decrease takes a rate: one message a minute.
const SLOWEST_INTERVAL_MICROS: u64 = 60_000_000;
/// Default seconds a site at its floor is left alone after a complaint.
const DEFAULT_SUSPEND_SECS: u64 = 60;
/// Default seconds of success between two steps back up.
const DEFAULT_RECOVER_SECS: u64 = 30;
/// Sites the table keeps while no shard holds them and they are at their
/// configured limits; past it such sites are forgotten.
const MAX_IDLE_SITES: usize = 10_000;

/// Microseconds on a monotonic clock shared by all shards.
pub fn now_micros() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    // Start at one second so that 0 can mean "never".
    1_000_000 + u64::try_from(epoch.elapsed().as_micros()).unwrap_or(u64::MAX / 2)
}

/// The name of the site a domain's mail goes to: its MX (or route) host
/// names, lowercase, sorted, joined by `,`. A domain named by a `domain`
/// shaping rule is a site of its own (`domain@hosts`), and a TLS policy
/// other than the default is part of the name, and so is DANE (` dane`:
/// the domain's DNS is validated and a host has TLSA records), so that one
/// connection never carries mail of two domains whose policies differ.
pub fn site_name(
    domain: &str,
    hosts: &[&str],
    policy: TlsPolicy,
    default_policy: TlsPolicy,
    dane: bool,
    rules: &[ShapingRule],
) -> String {
    let mut hosts: Vec<String> = hosts
        .iter()
        .map(|h| h.trim_end_matches('.').to_ascii_lowercase())
        .collect();
    hosts.sort();
    hosts.dedup();
    let mut name = String::new();
    if rules.iter().any(|r| {
        r.domain
            .as_deref()
            .is_some_and(|d| domain_matches(d, domain))
    }) {
        name.push_str(domain);
        name.push('@');
    }
    name.push_str(&hosts.join(","));
    if policy != default_policy {
        let policy = match policy {
            TlsPolicy::None => "none",
            TlsPolicy::May => "may",
            TlsPolicy::Encrypt => "encrypt",
            TlsPolicy::Verify => "verify",
        };
        name.push_str(" tls=");
        name.push_str(policy);
    }
    if dane {
        name.push_str(" dane");
    }
    name
}

/// `pattern` (`example.com`, or `.example.com` for subdomains) names `domain`.
fn domain_matches(pattern: &str, domain: &str) -> bool {
    let pattern = pattern.to_ascii_lowercase();
    match pattern.strip_prefix('.') {
        Some(parent) => domain.len() > parent.len() && domain.ends_with(&pattern),
        None => pattern == domain,
    }
}

/// `suffix` (`*.google.com`, `.google.com`, `google.com`) ends `host`.
fn suffix_matches(suffix: &str, host: &str) -> bool {
    let suffix = suffix.trim_start_matches('*').to_ascii_lowercase();
    let bare = suffix.trim_start_matches('.');
    host == bare || host.ends_with(&format!(".{bare}"))
}

/// What a site may do, once rules are applied.
#[derive(Debug, Clone, PartialEq)]
pub struct SiteLimits {
    /// Simultaneous connections, all shards together.
    pub max_connections: usize,
    /// Messages over one connection.
    pub max_messages_per_connection: usize,
    /// Messages per second, if limited.
    pub per_second: Option<f64>,
    /// Messages per hour, if limited.
    pub per_hour: Option<u64>,
    /// Recipients per transaction, if limited.
    pub max_recipients: Option<usize>,
    /// Whether "slow down" replies lower the limits.
    pub adaptive: bool,
    /// How long a site at its floor is left alone after a complaint.
    pub suspend: Duration,
    /// Success needed between two steps back up.
    pub recover: Duration,
    /// Whether any rule matched (such sites are always in the metrics).
    pub shaped: bool,
}

impl SiteLimits {
    /// The limits of site `name` (MX hosts `hosts`, made for `domain`).
    pub fn for_site(config: &RelayConfig, name: &str, hosts: &[String], domain: &str) -> Self {
        let mut limits = SiteLimits {
            max_connections: config.max_connections_per_destination,
            max_messages_per_connection: config.max_messages_per_connection,
            per_second: None,
            per_hour: None,
            max_recipients: None,
            adaptive: true,
            suspend: Duration::from_secs(DEFAULT_SUSPEND_SECS),
            recover: Duration::from_secs(DEFAULT_RECOVER_SECS),
            shaped: false,
        };
        // A domain rule only shapes the site it made (`domain@hosts`).
        let own_site = name.starts_with(&format!("{domain}@"));
        for rule in &config.shaping {
            let matches = match (&rule.site, &rule.mx_suffix, &rule.domain) {
                (Some(site), _, _) => site.eq_ignore_ascii_case(name),
                (_, Some(suffix), _) => hosts.iter().any(|h| suffix_matches(suffix, h)),
                (_, _, Some(pattern)) => own_site && domain_matches(pattern, domain),
                _ => false,
            };
            if matches {
                limits.apply(rule);
            }
        }
        limits
    }

    fn apply(&mut self, rule: &ShapingRule) {
        self.shaped = true;
        if let Some(n) = rule.max_connections {
            self.max_connections = n;
        }
        if let Some(n) = rule.max_messages_per_connection {
            self.max_messages_per_connection = n;
        }
        if let Some(rate) = rule.messages_per_second {
            self.per_second = Some(rate);
        }
        if let Some(n) = rule.messages_per_hour {
            self.per_hour = Some(n);
        }
        if let Some(n) = rule.max_recipients {
            self.max_recipients = Some(n);
        }
        if let Some(adaptive) = rule.adaptive {
            self.adaptive = adaptive;
        }
        if let Some(secs) = rule.suspend_secs {
            self.suspend = Duration::from_secs(secs);
        }
        if let Some(secs) = rule.recover_secs {
            self.recover = Duration::from_secs(secs.max(1));
        }
    }

    fn interval_micros(&self) -> u64 {
        self.per_second
            .map_or(0, |rate| ((1e6 / rate) as u64).clamp(1, u64::MAX / 4))
    }
}

/// Texts of temporary refusals that are about pace (Gmail's "unusual
/// rate", Microsoft's "rate limited", Yahoo's "unexpected volume", ...).
const SLOW_DOWN_WORDS: &[&str] = &[
    "rate limit",
    "rate-limit",
    "ratelimit",
    "unusual rate",
    "unexpected volume",
    "too many",
    "throttl",
    "slow down",
];

/// Whether `reply` asks the sender to slow down: a 421 (too many
/// connections, service busy), a text about rate or volume, or one the
/// operator's own bounce rules (`operator_rules`) class as `rate_limited`.
/// A generic "try again later" and greylisting do not: a site that answers
/// some messages so is not asking for less traffic. Replies the client made
/// up itself (a refused connection, a timeout) say nothing of the site's
/// wishes either.
pub fn asks_to_slow_down(reply: &ServerReply, operator_rules: &[bounce_class::Rule]) -> bool {
    if reply.local || !reply.is_transient() {
        return false;
    }
    let status = reply.status.as_deref().unwrap_or("");
    match bounce_class::classify(operator_rules, status, &reply.text) {
        Class::RateLimited => return true,
        Class::Other => {}
        // The operator classed it as something else.
        _ => return false,
    }
    let text = reply.text.to_ascii_lowercase();
    if text.contains("greylist") || text.contains("graylist") {
        return false;
    }
    if reply.code == 421 {
        return true;
    }
    // "452 4.5.3 Too many recipients" (RFC 5321 §4.5.3.1.10) asks for the
    // rest in another transaction, not for less traffic.
    if status == "4.5.3" || reply.code == 452 && text.contains("too many recipients") {
        return false;
    }
    SLOW_DOWN_WORDS.iter().any(|w| text.contains(w))
}

/// Why a connection cannot be opened to a site now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// Its connections are all in use (on this shard or others).
    Full,
    /// Suspended, or out of tokens, until this time ([`now_micros`]).
    Until(u64),
}

/// The limits and live state of one site, shared by every shard.
pub struct SiteLimiter {
    name: String,
    hosts: Vec<String>,
    /// The domain the site was first seen for (for domain rules at reload).
    domain: String,
    connections: AtomicUsize,
    /// The connection limit in force (adaptive), at most the configured one.
    connection_limit: AtomicUsize,
    max_messages_per_connection: AtomicUsize,
    /// 0: unlimited.
    max_recipients: AtomicUsize,
    /// Microseconds between messages in force; 0: no rate.
    interval: AtomicU64,
    /// Theoretical arrival time of the next message (GCRA), per second rate.
    next_send: AtomicU64,
    /// The hourly bucket: microseconds per token (0: none) and its own GCRA time.
    hour_interval: AtomicU64,
    hour_tolerance: AtomicU64,
    hour_next: AtomicU64,
    suspended_until: AtomicU64,
    /// When the next step back up may be taken; `u64::MAX`: nothing to restore.
    recover_at: AtomicU64,
    /// A shard wanted a connection and found every slot taken: idle
    /// connections should give theirs up rather than wait.
    wanted: AtomicBool,
    adapt: Mutex<Adapt>,
    metrics: Option<SiteMetrics>,
}

/// The slow-changing part, behind a lock taken only to adapt.
struct Adapt {
    limits: SiteLimits,
    last_decrease: u64,
}

impl SiteLimiter {
    fn new(
        name: String,
        hosts: Vec<String>,
        domain: String,
        limits: SiteLimits,
        metrics: Option<SiteMetrics>,
    ) -> Self {
        let limiter = SiteLimiter {
            name,
            hosts,
            domain,
            connections: AtomicUsize::new(0),
            connection_limit: AtomicUsize::new(0),
            max_messages_per_connection: AtomicUsize::new(0),
            max_recipients: AtomicUsize::new(0),
            interval: AtomicU64::new(0),
            next_send: AtomicU64::new(0),
            hour_interval: AtomicU64::new(0),
            hour_tolerance: AtomicU64::new(0),
            hour_next: AtomicU64::new(0),
            suspended_until: AtomicU64::new(0),
            recover_at: AtomicU64::new(u64::MAX),
            wanted: AtomicBool::new(false),
            adapt: Mutex::new(Adapt {
                limits: limits.clone(),
                last_decrease: 0,
            }),
            metrics,
        };
        limiter.configure(&limits);
        limiter
    }

    /// Put `limits` in force (at creation and at a reload).
    fn configure(&self, limits: &SiteLimits) {
        self.connection_limit
            .store(limits.max_connections, Ordering::Relaxed);
        self.max_messages_per_connection
            .store(limits.max_messages_per_connection, Ordering::Relaxed);
        self.max_recipients
            .store(limits.max_recipients.unwrap_or(0), Ordering::Relaxed);
        self.interval
            .store(limits.interval_micros(), Ordering::Relaxed);
        let (interval, tolerance) = match limits.per_hour {
            Some(n) => {
                let interval = (3_600_000_000 / n).max(1);
                (interval, interval.saturating_mul(n.saturating_sub(1)))
            }
            None => (0, 0),
        };
        self.hour_interval.store(interval, Ordering::Relaxed);
        self.hour_tolerance.store(tolerance, Ordering::Relaxed);
        // Adaptation starts again from the configured limits.
        self.recover_at.store(u64::MAX, Ordering::Relaxed);
        self.suspended_until.store(0, Ordering::Relaxed);
        let mut adapt = self.lock();
        adapt.limits = limits.clone();
        drop(adapt);
        self.export(limits.shaped);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Adapt> {
        self.adapt.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The site's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Take a connection slot, unless the site is suspended, out of hourly
    /// tokens, at its connection limit, or its next message may not go
    /// within `patience` (µs: what a connection waits idle), which would
    /// open a connection only to close it unused.
    pub fn try_open(&self, now: u64, patience: u64) -> Result<(), Closed> {
        let until = self.suspended_until.load(Ordering::Relaxed);
        if until > now {
            return Err(Closed::Until(until));
        }
        if let Err(at) = self.hour_ready(now) {
            return Err(Closed::Until(at));
        }
        let next_send = self.next_send.load(Ordering::Relaxed);
        if next_send > now.saturating_add(patience) {
            return Err(Closed::Until(next_send - patience));
        }
        let limit = self.connection_limit.load(Ordering::Relaxed);
        let taken = self
            .connections
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < limit).then_some(n + 1)
            });
        match taken {
            Ok(_) => Ok(()),
            Err(_) => {
                self.wanted.store(true, Ordering::Relaxed);
                Err(Closed::Full)
            }
        }
    }

    /// Give a connection slot back.
    pub fn close(&self) {
        self.connections.fetch_sub(1, Ordering::AcqRel);
    }

    /// Connections open to the site now, all shards.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// Whether a connection with nothing to do should give its slot up now:
    /// another shard is waiting for one, the site is over its (lowered)
    /// limit, or suspended. Clears the waiting flag: one slot per request.
    pub fn should_yield(&self, now: u64) -> bool {
        self.suspended_until.load(Ordering::Relaxed) > now
            || self.connections.load(Ordering::Relaxed)
                > self.connection_limit.load(Ordering::Relaxed)
            || self.wanted.swap(false, Ordering::Relaxed)
    }

    /// Whether a connection that has work should still stop: suspended, or
    /// over a connection limit lowered after it opened.
    pub fn must_close(&self, now: u64) -> bool {
        self.suspended_until.load(Ordering::Relaxed) > now
            || self.connections.load(Ordering::Relaxed)
                > self.connection_limit.load(Ordering::Relaxed)
    }

    /// Messages one connection may carry.
    pub fn max_messages_per_connection(&self) -> usize {
        self.max_messages_per_connection.load(Ordering::Relaxed)
    }

    /// Recipients one transaction may carry (None: all of an entry's).
    pub fn max_recipients(&self) -> Option<usize> {
        let n = self.max_recipients.load(Ordering::Relaxed);
        (n > 0).then_some(n)
    }

    /// Take a token for one message, or learn when to ask again.
    pub fn try_send(&self, now: u64) -> Result<(), u64> {
        let interval = self.interval.load(Ordering::Relaxed);
        if interval > 0 {
            // GCRA with a burst of one: a message at most every `interval`.
            let taken = self
                .next_send
                .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |tat| {
                    (tat <= now).then_some(now + interval)
                });
            taken?;
        }
        let hour = self.hour_interval.load(Ordering::Relaxed);
        if hour > 0 {
            let tolerance = self.hour_tolerance.load(Ordering::Relaxed);
            let taken = self
                .hour_next
                .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |tat| {
                    let t = tat.max(now);
                    (t - now <= tolerance).then_some(t + hour)
                });
            if let Err(tat) = taken {
                return Err(tat.max(now) - tolerance);
            }
        }
        Ok(())
    }

    /// When the hourly bucket has a token again (Ok: it has one now).
    fn hour_ready(&self, now: u64) -> Result<(), u64> {
        let hour = self.hour_interval.load(Ordering::Relaxed);
        if hour == 0 {
            return Ok(());
        }
        let tolerance = self.hour_tolerance.load(Ordering::Relaxed);
        let t = self.hour_next.load(Ordering::Relaxed).max(now);
        if t - now <= tolerance {
            Ok(())
        } else {
            Err(t - tolerance)
        }
    }

    /// The site asked to slow down (`why` is its reply): lower the limits,
    /// or at the floor suspend the site.
    pub fn slow_down(&self, now: u64, why: &str) {
        let mut adapt = self.lock();
        if !adapt.limits.adaptive || now < adapt.last_decrease + DECREASE_HOLD.as_micros() as u64 {
            return;
        }
        adapt.last_decrease = now;
        let connections = self.connection_limit.load(Ordering::Relaxed);
        let interval = self.interval.load(Ordering::Relaxed);
        let rate_floor = interval == 0 || interval >= SLOWEST_INTERVAL_MICROS;
        if connections > 1 || !rate_floor {
            let connections = (connections / 2).max(1);
            self.connection_limit.store(connections, Ordering::Relaxed);
            if interval > 0 {
                // Halved, but never below one a minute by this route (nor
                // faster than a configured rate slower than that).
                let slower = interval
                    .saturating_mul(2)
                    .min(SLOWEST_INTERVAL_MICROS)
                    .max(interval);
                self.interval.store(slower, Ordering::Relaxed);
            }
            tracing::warn!(site = %self.name, connections, rate = self.rate().unwrap_or(0.0), reply = %why, "site asked to slow down; limits lowered");
            self.count_change("lowered");
        } else {
            let until = now + adapt.limits.suspend.as_micros() as u64;
            self.suspended_until.store(until, Ordering::Relaxed);
            tracing::warn!(site = %self.name, secs = adapt.limits.suspend.as_secs(), reply = %why, "site asked to slow down at its lowest limits; suspended");
            self.count_change("suspended");
        }
        self.recover_at.store(
            now + adapt.limits.recover.as_micros() as u64,
            Ordering::Relaxed,
        );
        drop(adapt);
        self.export(true);
    }

    /// A message was delivered: after enough quiet time, one step back up.
    pub fn delivered(&self, now: u64) {
        if now < self.recover_at.load(Ordering::Relaxed) {
            return;
        }
        let adapt = self.lock();
        // Another shard may have lowered the limits since the check above.
        if now < self.recover_at.load(Ordering::Relaxed) {
            return;
        }
        let base = &adapt.limits;
        let connections = self.connection_limit.load(Ordering::Relaxed);
        let interval = self.interval.load(Ordering::Relaxed);
        let raised_connections = (connections + 1).min(base.max_connections);
        let base_interval = base.interval_micros();
        let raised_interval = if interval == 0 {
            0
        } else {
            (interval * 2 / 3).max(base_interval)
        };
        self.connection_limit
            .store(raised_connections, Ordering::Relaxed);
        self.interval.store(raised_interval, Ordering::Relaxed);
        let restored =
            raised_connections == base.max_connections && raised_interval == base_interval;
        self.recover_at.store(
            if restored {
                u64::MAX
            } else {
                now + base.recover.as_micros() as u64
            },
            Ordering::Relaxed,
        );
        let shaped = base.shaped;
        drop(adapt);
        tracing::info!(site = %self.name, connections = raised_connections, rate = self.rate().unwrap_or(0.0), restored, "site limits raised");
        self.count_change("raised");
        // A site no rule names leaves the metrics once it is back to normal.
        self.export(shaped || !restored);
    }

    /// The rate in force, messages per second.
    pub fn rate(&self) -> Option<f64> {
        let interval = self.interval.load(Ordering::Relaxed);
        (interval > 0).then(|| 1e6 / interval as f64)
    }

    /// Whether the limits in force are the configured ones.
    fn at_base(&self) -> bool {
        self.recover_at.load(Ordering::Relaxed) == u64::MAX
            && self.suspended_until.load(Ordering::Relaxed) <= now_micros()
    }

    /// Whether forgetting the site loses nothing: its limits are the
    /// configured ones and its rate buckets are full again (a site made
    /// afresh starts full, so forgetting a drained one would hand out its
    /// hour's allowance again).
    fn may_forget(&self) -> bool {
        let now = now_micros();
        self.at_base()
            && self.next_send.load(Ordering::Relaxed) <= now
            && self.hour_next.load(Ordering::Relaxed) <= now
    }

    fn count_change(&self, direction: &str) {
        if let Some(metrics) = &self.metrics {
            metrics.changed(direction);
        }
    }

    /// Show the limits in force in the metrics (`show`), or take the site
    /// out of them.
    fn export(&self, show: bool) {
        let Some(metrics) = &self.metrics else {
            return;
        };
        if show {
            let suspended = self.suspended_until.load(Ordering::Relaxed) > now_micros();
            metrics.set(
                &self.name,
                self.connection_limit.load(Ordering::Relaxed),
                self.rate(),
                suspended,
            );
        } else {
            metrics.remove(&self.name);
        }
    }
}

/// Every site's limiter, server-wide.
pub struct Sites {
    table: RwLock<HashMap<String, Arc<SiteLimiter>>>,
    metrics: Option<SiteMetrics>,
}

impl Sites {
    /// An empty table exporting to `metrics`.
    pub fn new(metrics: Option<SiteMetrics>) -> Self {
        Sites {
            table: RwLock::new(HashMap::new()),
            metrics,
        }
    }

    /// The limiter of site `name`, made under `config` if new.
    pub fn get(
        &self,
        config: &RelayConfig,
        name: &str,
        hosts: &[String],
        domain: &str,
    ) -> Arc<SiteLimiter> {
        if let Some(site) = self
            .table
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
        {
            return site.clone();
        }
        let mut table = self.table.write().unwrap_or_else(|e| e.into_inner());
        if table.len() >= MAX_IDLE_SITES {
            // Forget sites nobody holds, at their configured limits with
            // full buckets; the next use makes them again from the
            // configuration.
            table.retain(|_, site| Arc::strong_count(site) > 1 || !site.may_forget());
        }
        table
            .entry(name.to_owned())
            .or_insert_with(|| {
                let limits = SiteLimits::for_site(config, name, hosts, domain);
                if limits.shaped {
                    tracing::info!(
                        site = name,
                        connections = limits.max_connections,
                        rate = limits.per_second.unwrap_or(0.0),
                        per_hour = limits.per_hour.unwrap_or(0),
                        "shaping rules apply to site"
                    );
                }
                Arc::new(SiteLimiter::new(
                    name.to_owned(),
                    hosts.to_vec(),
                    domain.to_owned(),
                    limits,
                    self.metrics.clone(),
                ))
            })
            .clone()
    }

    /// A reloaded configuration: every known site gets its limits again
    /// (adaptive changes are dropped with the old limits).
    pub fn reconfigure(&self, config: &RelayConfig) {
        let table = self.table.read().unwrap_or_else(|e| e.into_inner());
        for site in table.values() {
            let limits = SiteLimits::for_site(config, &site.name, &site.hosts, &site.domain);
            let changed = site.lock().limits != limits;
            if changed {
                site.configure(&limits);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(f: impl FnOnce(&mut ShapingRule)) -> ShapingRule {
        let mut rule = ShapingRule::default();
        f(&mut rule);
        rule
    }

    fn limiter(config: &RelayConfig, name: &str, hosts: &[&str]) -> Arc<SiteLimiter> {
        let hosts: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
        Sites::new(None).get(config, name, &hosts, "a.test")
    }

    const SEC: u64 = 1_000_000;

    #[test]
    fn site_names_group_domains_by_their_mx_hosts() {
        let (may, rules) = (TlsPolicy::May, Vec::new());
        let a = site_name(
            "a.test",
            &["MX2.google.com.", "mx1.google.com"],
            may,
            may,
            false,
            &rules,
        );
        let b = site_name(
            "b.test",
            &["mx1.google.com", "mx2.google.com"],
            may,
            may,
            false,
            &rules,
        );
        assert_eq!(a, "mx1.google.com,mx2.google.com");
        assert_eq!(a, b);
        let verified = site_name(
            "c.test",
            &["mx1.google.com"],
            TlsPolicy::Verify,
            may,
            false,
            &rules,
        );
        assert_eq!(verified, "mx1.google.com tls=verify");
        let dane = site_name("d.test", &["mx1.google.com"], may, may, true, &rules);
        assert_eq!(
            dane, "mx1.google.com dane",
            "never shared with non-DANE domains"
        );
        let own = [rule(|r| r.domain = Some(".corp.test".into()))];
        assert_eq!(
            site_name("x.corp.test", &["mx.test"], may, may, false, &own),
            "x.corp.test@mx.test"
        );
        assert_eq!(
            site_name("corp.test", &["mx.test"], may, may, false, &own),
            "mx.test"
        );
    }

    #[test]
    fn rules_match_by_site_suffix_and_domain_in_order() {
        let config = RelayConfig {
            shaping: vec![
                rule(|r| {
                    r.mx_suffix = Some("*.google.com".into());
                    r.max_connections = Some(5);
                    r.messages_per_second = Some(10.0);
                }),
                rule(|r| {
                    r.site = Some("aspmx.l.google.com".into());
                    r.max_connections = Some(2);
                }),
                rule(|r| {
                    r.domain = Some("big.test".into());
                    r.max_recipients = Some(50);
                }),
            ],
            ..RelayConfig::default()
        };
        let hosts = vec!["aspmx.l.google.com".to_owned()];
        let limits = SiteLimits::for_site(&config, "aspmx.l.google.com", &hosts, "x.test");
        assert_eq!(limits.max_connections, 2);
        assert_eq!(limits.per_second, Some(10.0));
        assert_eq!(limits.max_recipients, None);
        assert!(limits.shaped);
        let own =
            SiteLimits::for_site(&config, "big.test@mx.test", &["mx.test".into()], "big.test");
        assert_eq!(own.max_recipients, Some(50));
        let plain = SiteLimits::for_site(&config, "mx.other", &["mx.other".into()], "o.test");
        assert!(!plain.shaped);
        assert_eq!(
            plain.max_connections,
            config.max_connections_per_destination
        );
        assert!(!suffix_matches(".google.com", "notgoogle.com"));
        assert!(suffix_matches("google.com", "google.com"));
    }

    #[test]
    fn connections_are_capped_across_callers() {
        let config = RelayConfig {
            max_connections_per_destination: 2,
            ..RelayConfig::default()
        };
        let site = limiter(&config, "mx.test", &["mx.test"]);
        let now = 10 * SEC;
        assert_eq!(site.try_open(now, 0), Ok(()));
        assert_eq!(site.try_open(now, 0), Ok(()));
        assert_eq!(site.try_open(now, 0), Err(Closed::Full));
        assert!(site.should_yield(now), "a refused opener asks for a slot");
        assert!(!site.should_yield(now), "once");
        site.close();
        assert_eq!(site.try_open(now, 0), Ok(()));
    }

    #[test]
    fn the_rate_spaces_messages_and_the_hourly_bucket_runs_dry() {
        let config = RelayConfig {
            shaping: vec![rule(|r| {
                r.site = Some("mx.test".into());
                r.messages_per_second = Some(4.0);
                r.messages_per_hour = Some(3);
            })],
            ..RelayConfig::default()
        };
        let site = limiter(&config, "mx.test", &["mx.test"]);
        let t = 100 * SEC;
        assert_eq!(site.try_send(t), Ok(()));
        assert_eq!(site.try_send(t), Err(t + SEC / 4));
        assert_eq!(site.try_send(t + SEC / 4), Ok(()));
        assert_eq!(site.try_send(t + SEC / 2), Ok(()));
        // Three this hour: the fourth waits for a token (20 minutes each).
        let Err(at) = site.try_send(t + SEC) else {
            panic!("the hourly bucket should be empty");
        };
        assert!(at > t + 1000 * SEC && at <= t + 1200 * SEC, "{at}");
        assert!(matches!(site.try_open(t + SEC, 0), Err(Closed::Until(_))));
    }

    #[test]
    fn no_connection_opens_that_would_only_wait_for_its_token() {
        let config = RelayConfig {
            shaping: vec![rule(|r| {
                r.site = Some("mx.test".into());
                r.messages_per_second = Some(0.1);
            })],
            ..RelayConfig::default()
        };
        let site = limiter(&config, "mx.test", &["mx.test"]);
        let t = 100 * SEC;
        assert_eq!(site.try_send(t), Ok(()));
        // The next token is 10 s away; a connection waits 2 s idle at most.
        assert_eq!(site.try_open(t, 2 * SEC), Err(Closed::Until(t + 8 * SEC)));
        assert_eq!(site.try_open(t + 8 * SEC, 2 * SEC), Ok(()));
    }

    #[test]
    fn slow_down_halves_then_suspends_and_success_restores_step_by_step() {
        let config = RelayConfig {
            shaping: vec![rule(|r| {
                r.site = Some("mx.test".into());
                r.max_connections = Some(4);
                r.messages_per_second = Some(8.0);
                r.suspend_secs = Some(5);
                r.recover_secs = Some(2);
            })],
            ..RelayConfig::default()
        };
        let site = limiter(&config, "mx.test", &["mx.test"]);
        let mut t = 100 * SEC;
        site.slow_down(t, "421 too many connections");
        assert_eq!(site.connection_limit.load(Ordering::Relaxed), 2);
        assert_eq!(site.rate(), Some(4.0));
        // The same burst heard by another connection: no second step.
        site.slow_down(t + SEC / 2, "421");
        assert_eq!(site.connection_limit.load(Ordering::Relaxed), 2);
        // A configured rate slower than the floor is never sped up.
        let slow = RelayConfig {
            shaping: vec![rule(|r| {
                r.site = Some("slow.test".into());
                r.messages_per_second = Some(0.001);
            })],
            ..RelayConfig::default()
        };
        let slow = limiter(&slow, "slow.test", &["slow.test"]);
        slow.slow_down(t, "421");
        assert_eq!(slow.rate(), Some(0.001));
        // Down to one connection and the slowest rate, then suspended.
        for _ in 0..12 {
            t += 2 * SEC;
            site.slow_down(t, "421");
        }
        assert_eq!(site.connection_limit.load(Ordering::Relaxed), 1);
        assert!(matches!(site.try_open(t, 0), Err(Closed::Until(u)) if u == t + 5 * SEC));
        // Quiet success brings it back, one step per recover_secs.
        site.delivered(t + SEC);
        assert_eq!(site.connection_limit.load(Ordering::Relaxed), 1, "too soon");
        let mut steps = 0;
        while site.recover_at.load(Ordering::Relaxed) != u64::MAX {
            t += 2 * SEC;
            site.delivered(t);
            steps += 1;
            assert!(steps < 100);
        }
        assert_eq!(site.connection_limit.load(Ordering::Relaxed), 4);
        assert_eq!(site.rate(), Some(8.0));
        assert!(steps > 3, "gradual: {steps} steps");
    }

    #[test]
    fn a_forgotten_site_does_not_get_its_hour_back() {
        // One message an hour. A full table forgets idle sites, but not
        // one whose hour is spent: made afresh it would allow another.
        let config = RelayConfig {
            shaping: vec![rule(|r| {
                r.site = Some("spent.test".into());
                r.messages_per_hour = Some(1);
            })],
            ..RelayConfig::default()
        };
        let sites = Sites::new(None);
        let hosts = vec!["spent.test".to_owned()];
        let spent = sites.get(&config, "spent.test", &hosts, "a.test");
        assert!(spent.try_send(now_micros()).is_ok());
        assert!(spent.try_send(now_micros()).is_err());
        drop(spent);
        for n in 0..MAX_IDLE_SITES {
            let name = format!("idle{n}.test");
            sites.get(&config, &name, std::slice::from_ref(&name), "b.test");
        }
        let again = sites.get(&config, "spent.test", &hosts, "a.test");
        assert!(again.try_send(now_micros()).is_err(), "still spent");
        assert!(
            sites.table.read().unwrap().len() < MAX_IDLE_SITES,
            "the idle ones were forgotten"
        );
    }

    #[test]
    fn a_site_that_is_not_adaptive_keeps_its_limits() {
        let config = RelayConfig {
            shaping: vec![rule(|r| {
                r.site = Some("mx.test".into());
                r.adaptive = Some(false);
            })],
            ..RelayConfig::default()
        };
        let site = limiter(&config, "mx.test", &["mx.test"]);
        site.slow_down(100 * SEC, "421");
        assert_eq!(
            site.connection_limit.load(Ordering::Relaxed),
            config.max_connections_per_destination
        );
    }

    #[test]
    fn slow_down_replies_are_recognised() {
        let none = Vec::new();
        let reply = |code, status: Option<&str>, text: &str| ServerReply {
            code,
            status: status.map(str::to_owned),
            text: text.to_owned(),
            local: false,
        };
        let slows = |r: ServerReply| asks_to_slow_down(&r, &none);
        // The big providers' ways of saying it.
        assert!(slows(reply(
            421,
            Some("4.7.0"),
            "Try again later, closing connection."
        )));
        assert!(slows(reply(421, Some("4.7.0"), "[TSS04] Messages from 192.0.2.1 temporarily deferred due to unexpected volume or user complaints")));
        assert!(slows(reply(
            451,
            Some("4.7.650"),
            "The mail server [192.0.2.1] has been temporarily rate limited due to IP reputation."
        )));
        assert!(slows(reply(450, Some("4.7.28"), "Our system has detected an unusual rate of unsolicited mail originating from your IP address.")));
        assert!(slows(reply(
            450,
            None,
            "Requested mail action not taken: sending rate limit exceeded"
        )));
        // A plain temporary failure, or greylisting, is not about pace.
        assert!(!slows(reply(451, Some("4.3.0"), "Try again later")));
        assert!(!slows(reply(
            451,
            Some("4.7.1"),
            "Greylisted, please try again later"
        )));
        assert!(!slows(reply(450, Some("4.2.0"), "mailbox busy")));
        // Too many recipients: the rest go in another transaction.
        assert!(!slows(reply(
            452,
            Some("4.5.3"),
            "Your message has too many recipients"
        )));
        assert!(!slows(reply(452, None, "Too many recipients")));
        assert!(slows(reply(
            421,
            Some("4.7.0"),
            "too many recipients this hour"
        )));
        assert!(slows(reply(450, None, "too many recipients this hour")));
        assert!(!slows(reply(550, Some("5.7.1"), "too many connections")));
        let mut local = reply(421, Some("4.4.1"), "cannot connect");
        local.local = true;
        assert!(!slows(local));
        // The operator's rules decide first.
        let theirs = vec![
            bounce_class::rule("rate_limited", Some("4.3.5"), None).unwrap(),
            bounce_class::rule("policy", None, Some("too many spam")).unwrap(),
        ];
        assert!(asks_to_slow_down(
            &reply(451, Some("4.3.5"), "later"),
            &theirs
        ));
        assert!(!asks_to_slow_down(
            &reply(451, None, "too many spam complaints"),
            &theirs
        ));
    }
}
