//! The configuration of a running server, which SIGHUP and
//! `POST /api/v1/config/reload` replace without dropping a connection.
//!
//! What a reload changes applies to every decision taken after it: local
//! domains and relay networks at the next RCPT, session limits and
//! timeouts for the next session, connection limits at the next accept,
//! routes, TLS policy, retry times and bounce rules at the next delivery
//! attempt, quotas and suppression at the next check, the injection API's
//! limits at the next request. What is built once at start (listeners,
//! shards, the store, the hostname, DKIM keys, the webhook, the mail log,
//! the DNS resolver) keeps its value until a restart; a reload that
//! changes it says so and keeps the old value, so the configuration in
//! force is always one the server really follows.
//!
//! Readers on a shard keep their own copy ([`LiveConfig::generation`]
//! tells them when to refresh it), so no reference count is shared
//! between cores on the hot path.

use crate::config::Config;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// The configuration in force, and how many times it was replaced.
pub struct LiveConfig {
    current: RwLock<Arc<Config>>,
    generation: AtomicU64,
}

impl LiveConfig {
    /// Start with `config`.
    pub fn new(config: Arc<Config>) -> LiveConfig {
        LiveConfig {
            current: RwLock::new(config),
            generation: AtomicU64::new(0),
        }
    }

    /// The configuration in force.
    pub fn get(&self) -> Arc<Config> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Changes at every reload; a reader refreshes its copy when it moved.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Put `new` (already checked) in force, with what cannot change
    /// while running kept as it was; returns the keys that needed a
    /// restart and were kept.
    pub fn replace(&self, new: Config) -> (Arc<Config>, Vec<&'static str>) {
        let mut current = self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let (new, kept) = keep_fixed(&current, new);
        let new = Arc::new(new);
        *current = new.clone();
        self.generation.fetch_add(1, Ordering::AcqRel);
        (new, kept)
    }
}

/// Where a reload reads the configuration from: the file and the command
/// line's overrides, as at start (the `ringpost` command sets it).
pub type ConfigSource = Arc<dyn Fn() -> Result<Config, String> + Send + Sync>;

/// What a reload did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Reloaded {
    /// How many reloads the server has had.
    pub generation: u64,
    /// Settings that changed but need a restart; their old values stay.
    pub needs_restart: Vec<&'static str>,
    /// The certificates now served, in words (None: TLS is off).
    pub certificates: Option<String>,
}

/// Reloads: reads the source again and puts it in force everywhere, from
/// SIGHUP (the `ringpost` command) or the admin API.
pub struct Reloader {
    live: Arc<LiveConfig>,
    limits: Arc<crate::limits::ConnectionLimits>,
    send_rate: Arc<crate::limits::SendRate>,
    sites: Arc<crate::relay::shaping::Sites>,
    certificates: Option<Arc<crate::tls::CertStore>>,
    security: crate::metrics::SecurityMetrics,
    /// Opened again at every reload, however asked: a logrotate
    /// `postrotate` may use SIGHUP or `ringpost config reload`.
    maillog: Arc<crate::maillog::MailLog>,
    source: RwLock<Option<ConfigSource>>,
    applying: std::sync::Mutex<()>,
}

impl Reloader {
    /// A reloader of `live` and the shared limits made from it.
    pub(crate) fn new(
        live: Arc<LiveConfig>,
        limits: Arc<crate::limits::ConnectionLimits>,
        send_rate: Arc<crate::limits::SendRate>,
        sites: Arc<crate::relay::shaping::Sites>,
        certificates: Option<Arc<crate::tls::CertStore>>,
        security: crate::metrics::SecurityMetrics,
        maillog: Arc<crate::maillog::MailLog>,
    ) -> Reloader {
        Reloader {
            live,
            limits,
            send_rate,
            sites,
            certificates,
            security,
            maillog,
            source: RwLock::new(None),
            applying: std::sync::Mutex::new(()),
        }
    }

    /// Read reloads from `source`.
    pub fn set_source(&self, source: ConfigSource) {
        *self
            .source
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(source);
    }

    /// The configuration in force.
    pub fn current(&self) -> Arc<Config> {
        self.live.get()
    }

    /// Open the mail log file again, read the source again and put it in
    /// force. An unreadable or invalid
    /// configuration changes nothing (the error says why); certificates
    /// that fail to load keep the old ones and fail the reload.
    pub fn reload(&self) -> Result<Reloaded, String> {
        self.maillog.reopen();
        let reloaded = self.read_and_apply();
        if let Err(error) = &reloaded {
            // Said in the log (as JSON when that is its format), whoever
            // asked: SIGHUP or the API.
            tracing::error!(%error, "reload failed; the configuration in force stays");
        }
        reloaded
    }

    fn read_and_apply(&self) -> Result<Reloaded, String> {
        let source = self
            .source
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
            .ok_or("this server has no configuration source to reload from")?;
        let new = source()?;
        new.validate().map_err(|e| e.to_string())?;
        self.apply(new)
    }

    /// Put `new` (valid) in force.
    pub fn apply(&self, new: Config) -> Result<Reloaded, String> {
        // One reload at a time (SIGHUP and the API may meet).
        let _one = self
            .applying
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // The data dir and hostname stay what they are (keep_fixed).
        let current = self.live.get();
        valid_when_merged(&current, &new)?;
        let certificates = match &self.certificates {
            Some(store) => {
                let loaded = crate::tls::load(&new.tls, &current.data_dir, &current.hostname)?;
                let described = loaded.describe();
                self.security.certificates(&loaded.expiries());
                store.replace(loaded);
                Some(described)
            }
            None => None,
        };
        let (now, needs_restart) = self.live.replace(new);
        self.limits
            .reconfigure(&now.limits, &now.smtp.relay_networks);
        self.send_rate
            .reconfigure(now.submission.max_messages_per_hour);
        self.sites.reconfigure(&now.relay);
        let generation = self.live.generation();
        if needs_restart.is_empty() {
            tracing::info!(generation, "configuration reloaded");
        } else {
            tracing::warn!(generation, needs_restart = %needs_restart.join(", "), "configuration reloaded; these settings need a restart and keep their old values");
        }
        Ok(Reloaded {
            generation,
            needs_restart,
            certificates,
        })
    }
}

/// Whether what would be in force, `new` with the settings fixed at start
/// kept from `current`, is valid too: a TLS policy that asks for STARTTLS
/// while the kept `relay.starttls` is off would defer mail until it
/// bounced.
fn valid_when_merged(current: &Config, new: &Config) -> Result<(), String> {
    let (merged, _) = keep_fixed(current, new.clone());
    merged
        .validate()
        .map_err(|e| format!("{e} (with the settings that need a restart kept as they are)"))
}

/// `new` with the settings that are fixed at start taken from `old`, and
/// the names of those that differed.
fn keep_fixed(old: &Config, mut new: Config) -> (Config, Vec<&'static str>) {
    let mut kept = Vec::new();
    macro_rules! fixed {
        ($($field:ident).+) => {
            if serde_json::to_value(&new.$($field).+).ok() != serde_json::to_value(&old.$($field).+).ok() {
                kept.push(stringify!($($field).+));
                new.$($field).+ = old.$($field).+.clone();
            }
        };
    }
    fixed!(hostname);
    fixed!(shards);
    fixed!(pin_shards);
    fixed!(shard_spin_us);
    fixed!(data_dir);
    fixed!(store);
    fixed!(smtp.listen);
    fixed!(submission.enabled);
    fixed!(submission.listen);
    fixed!(submission.tls_listen);
    fixed!(pop3.enabled);
    fixed!(pop3.listen);
    fixed!(pop3.tls_listen);
    fixed!(imap.enabled);
    fixed!(imap.listen);
    fixed!(imap.tls_listen);
    fixed!(imap.max_sessions_per_account);
    fixed!(managesieve.enabled);
    fixed!(managesieve.listen);
    fixed!(lmtp.enabled);
    fixed!(lmtp.listen);
    fixed!(tls.enabled);
    fixed!(relay.enabled);
    fixed!(relay.nameservers);
    fixed!(relay.dns_timeout_secs);
    fixed!(relay.max_queued_per_shard);
    fixed!(metrics);
    fixed!(limits.session_memory_mb);
    fixed!(limits.auth_threads);
    fixed!(limits.auth_failures_per_ip);
    fixed!(limits.auth_failures_per_account);
    fixed!(limits.auth_window_secs);
    fixed!(limits.lockout_secs);
    fixed!(limits.auth_cache_secs);
    fixed!(dkim);
    fixed!(log);
    fixed!(webhook);
    fixed!(relay.starttls);
    fixed!(relay.ca_file);
    fixed!(relay.use_chunking);
    fixed!(relay.sources);
    fixed!(relay.pools);
    fixed!(relay.default_pool);
    fixed!(relay.mta_sts);
    fixed!(relay.mta_sts_port);
    fixed!(admin.inject_max_request_bytes);
    fixed!(inbound_auth.enabled);
    (new, kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reload_changes_what_it_can_and_names_what_it_kept() {
        let old = Config::default();
        let live = LiveConfig::new(Arc::new(old.clone()));
        assert_eq!(live.generation(), 0);
        let mut new = old.clone();
        new.smtp.local_domains = vec!["new.example".into()];
        new.smtp.max_recipients = 7;
        new.hostname = "other.example".into();
        new.smtp.listen = "127.0.0.1:1".parse().unwrap();
        let (now, kept) = live.replace(new);
        assert_eq!(kept, ["hostname", "smtp.listen"]);
        assert_eq!(now.smtp.local_domains, ["new.example"]);
        assert_eq!(now.smtp.max_recipients, 7);
        assert_eq!(now.hostname, old.hostname);
        assert_eq!(now.smtp.listen, old.smtp.listen);
        assert_eq!(live.generation(), 1);
        assert_eq!(live.get().smtp.max_recipients, 7);
    }

    #[test]
    fn a_reload_is_judged_with_the_settings_it_cannot_change() {
        let mut old = Config::default();
        old.relay.starttls = false;
        let mut new = Config::default();
        new.relay
            .tls_policy
            .insert("bank.example".into(), crate::config::TlsPolicy::Verify);
        assert!(new.validate().is_ok(), "valid on its own");
        let refused = valid_when_merged(&old, &new).unwrap_err();
        assert!(refused.contains("need a restart kept"), "{refused}");
        assert!(valid_when_merged(&Config::default(), &new).is_ok());
    }
}
