//! Server configuration: every setting has a default, so `ringpost serve` with
//! no file gives a working server on loopback; a TOML file overrides any of it.
//!
//! Unknown keys are errors (a typo must not silently fall back to a default),
//! and [`Config::parse`] reports where in the file a problem is.

use ipnet::IpNet;
use ringpost_protocols::smtp::bounce_class;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

/// Which storage engine holds the spool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreEngine {
    /// Embedded RocksDB in `data_dir` (the default).
    Rocksdb,
    /// In memory only: nothing survives a restart (tests, benchmarks).
    Memory,
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Name this server gives itself in greetings and trace headers.
    pub hostname: String,
    /// Number of shards (executor threads); 0 means one per CPU.
    pub shards: usize,
    /// Pin each shard to its own CPU.
    pub pin_shards: bool,
    /// Microseconds an idle shard spins before it sleeps (0: it sleeps at
    /// once). Sleeping costs a `membarrier` (IPIs to every CPU) each time;
    /// on a busy server with cores to spare, spinning saves them.
    pub shard_spin_us: u64,
    /// Where the embedded store lives.
    pub data_dir: PathBuf,
    /// Storage settings.
    pub store: StoreConfig,
    /// SMTP listener settings (the MX port).
    pub smtp: SmtpConfig,
    /// Mail submission by mail clients (RFC 6409; ports 587 and 465).
    pub submission: SubmissionConfig,
    /// Certificates and TLS policy for every listener.
    pub tls: TlsConfig,
    /// Abuse limits shared by every listener.
    pub limits: LimitsConfig,
    /// Outbound delivery settings.
    pub relay: RelayConfig,
    /// POP3 listener settings.
    pub pop3: Pop3ListenerConfig,
    /// IMAP listener settings.
    pub imap: ImapListenerConfig,
    /// ManageSieve listener settings (RFC 5804): users' Sieve scripts.
    pub managesieve: ManageSieveListenerConfig,
    /// LMTP listener settings (RFC 2033): final delivery from another MTA.
    pub lmtp: LmtpListenerConfig,
    /// Prometheus endpoint settings.
    pub metrics: MetricsConfig,
    /// The admin API.
    pub admin: AdminConfig,
    /// DKIM signing of outbound mail.
    pub dkim: DkimConfig,
    /// The mail log (accepted messages, delivery attempts).
    pub log: MailLogConfig,
    /// What an account may keep, unless its own quota says otherwise.
    pub quota: QuotaConfig,
    /// Addresses mail is no longer sent to after a hard bounce.
    pub suppression: SuppressionConfig,
    /// Delivery events posted to an HTTP endpoint.
    pub webhook: WebhookConfig,
    /// SPF, DKIM and DMARC of inbound mail.
    pub inbound_auth: InboundAuthConfig,
    /// The envelope sender of forwarded mail (SRS).
    pub srs: SrsConfig,
    /// Reports about mail sent earlier (late bounces, complaints).
    pub feedback: FeedbackConfig,
}

/// Reports that come back about relayed mail: delivery status
/// notifications that arrive after the message was handed over
/// ("out-of-band" bounces) and feedback loop complaints (ARF). Mail to
/// any address at `domains` (the return-path domain senders use, and the
/// address given to mailbox providers' feedback loops) is read, not
/// delivered, and each report is a webhook event (`out_of_band_bounce`,
/// `complaint`). Anyone can write such a report, so suppressing on its
/// word is the operator's choice: then a hard bounce or a complaint
/// suppresses the address for mail from the feedback address's domain
/// (never for every sender), for `suppression.ttl_days`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FeedbackConfig {
    /// Domains whose every address takes reports; empty: none.
    pub domains: Vec<String>,
    /// Suppress an address a late bounce says does not exist.
    pub suppress_bounces: bool,
    /// Suppress an address whose owner complained (`abuse` and `fraud`).
    pub suppress_complaints: bool,
}

/// The Sender Rewriting Scheme: mail this server forwards to another
/// domain (an alias's remote address, a Sieve redirect) leaves from an
/// address at `domain`, so the next server's SPF check sees a sender we
/// may send for, and bounces come back here to be sent on to the original
/// sender ([`crate::srs`]).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SrsConfig {
    /// Rewrite at all.
    pub enabled: bool,
    /// The domain of the rewritten addresses; empty: `hostname`. It must
    /// be one of ours (it receives the bounces).
    pub domain: String,
}

impl Default for SrsConfig {
    fn default() -> Self {
        SrsConfig {
            enabled: true,
            domain: String::new(),
        }
    }
}

/// POP3 listener settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Pop3ListenerConfig {
    /// Serve POP3 at all.
    pub enabled: bool,
    /// Address the POP3 listener binds (STLS offered).
    pub listen: SocketAddr,
    /// Address of POP3S, TLS from the first byte (RFC 8314); `"off"`: none.
    #[serde(
        deserialize_with = "optional_addr",
        serialize_with = "optional_addr_out"
    )]
    pub tls_listen: Option<SocketAddr>,
    /// Concurrent POP3 connections per shard; more are refused.
    pub max_connections_per_shard: usize,
    /// Seconds of client silence before the session is closed (RFC 1939
    /// §3: at least 600).
    pub idle_timeout_secs: u64,
    /// Bad commands and failed logins tolerated before a session is closed.
    pub max_errors: usize,
    /// Seconds a failed login waits before it is answered (slows guessing).
    pub auth_failure_delay_secs: u64,
    /// Seconds a client may stay connected without logging in.
    pub login_timeout_secs: u64,
}

/// ManageSieve listener settings: where mail clients and webmail store
/// users' Sieve filters (RFC 5804, port 4190).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ManageSieveListenerConfig {
    /// Serve ManageSieve at all.
    pub enabled: bool,
    /// Address the listener binds (STARTTLS offered).
    pub listen: SocketAddr,
    /// Concurrent connections per shard; more are refused.
    pub max_connections_per_shard: usize,
    /// Seconds of client silence before the session is closed.
    pub idle_timeout_secs: u64,
    /// Bad commands and failed logins tolerated before a session is closed.
    pub max_errors: usize,
    /// Seconds a failed login waits before it is answered (slows guessing).
    pub auth_failure_delay_secs: u64,
    /// Seconds a client may stay connected without logging in.
    pub login_timeout_secs: u64,
}

impl Default for ManageSieveListenerConfig {
    fn default() -> Self {
        ManageSieveListenerConfig {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 4190)),
            max_connections_per_shard: 100,
            idle_timeout_secs: 600,
            max_errors: 10,
            auth_failure_delay_secs: 1,
            login_timeout_secs: 120,
        }
    }
}

/// LMTP listener settings: where another MTA in front (Postfix's
/// `virtual_transport = lmtp:...`, a filtering gateway) hands mail for
/// local accounts over for final delivery (RFC 2033), as to Dovecot's
/// LMTP. Off unless configured.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LmtpListenerConfig {
    /// Serve LMTP at all.
    pub enabled: bool,
    /// Address the listener binds (STARTTLS offered).
    pub listen: SocketAddr,
    /// Clients that may connect: LMTP has no login, and the mail it brings
    /// skips the checks the MTA in front made (SPF, DKIM, DMARC, DNS
    /// blocklists). Others are refused at the greeting.
    pub allowed_networks: Vec<IpNet>,
    /// Concurrent connections per shard; more are refused.
    pub max_connections_per_shard: usize,
}

impl Default for LmtpListenerConfig {
    fn default() -> Self {
        LmtpListenerConfig {
            enabled: false,
            listen: SocketAddr::from(([127, 0, 0, 1], 24)),
            allowed_networks: vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()],
            max_connections_per_shard: 100,
        }
    }
}

/// IMAP listener settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImapListenerConfig {
    /// Serve IMAP at all.
    pub enabled: bool,
    /// Address the IMAP listener binds (STARTTLS offered).
    pub listen: SocketAddr,
    /// Address of IMAPS, TLS from the first byte (RFC 8314); `"off"`: none.
    #[serde(
        deserialize_with = "optional_addr",
        serialize_with = "optional_addr_out"
    )]
    pub tls_listen: Option<SocketAddr>,
    /// Concurrent IMAP connections per shard; more are refused.
    pub max_connections_per_shard: usize,
    /// Seconds of client silence before autologout (RFC 9051 §5.4: at
    /// least 1800; IDLE clients re-issue it within that).
    pub idle_timeout_secs: u64,
    /// Largest command in bytes, literals included: the largest APPEND.
    pub max_command_size: u32,
    /// BAD responses and failed logins tolerated before a session is closed.
    pub max_errors: usize,
    /// Seconds a failed login waits before it is answered.
    pub auth_failure_delay_secs: u64,
    /// Seconds a client may stay connected without logging in.
    pub login_timeout_secs: u64,
    /// IMAP sessions one account may have open at once.
    pub max_sessions_per_account: usize,
}

/// Storage settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Engine.
    pub engine: StoreEngine,
    /// fsync every group commit before acknowledging (never turn off in production).
    pub sync: bool,
    /// Most commit requests waiting for the writer before sessions wait too.
    pub commit_queue: usize,
    /// LZ4-compress stored message bodies (less disk, more CPU per read).
    pub compress_bodies: bool,
    /// MiB of message bodies cached in memory for reading again (FETCH,
    /// RETR, delivery); 0 turns the cache off. Bodies in segment files
    /// (`segment_min_kb`) are left to the OS page cache.
    pub body_cache_mb: usize,
    /// MiB of the store's filesystem kept free: mail is refused (452 4.3.1)
    /// rather than eat into it, so the store never runs out of space
    /// itself and takes mail again the moment space is freed. 0: no check.
    pub min_free_disk_mb: u64,
    /// KiB from which a body bypasses RocksDB's WAL and memtable and is
    /// appended to a segment file, so its bytes reach the disk once
    /// (fsynced before the 250 as always). 0: every body goes into
    /// RocksDB.
    pub segment_min_kb: u64,
}

/// SMTP listener settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpConfig {
    /// Address the MX/relay listener binds.
    pub listen: SocketAddr,
    /// Largest message accepted, bytes (advertised with SIZE).
    pub max_message_size: usize,
    /// Most recipients per message.
    pub max_recipients: usize,
    /// Longest command line, bytes including CRLF.
    pub max_line_length: usize,
    /// Bad commands tolerated before a session is closed.
    pub max_errors: usize,
    /// Concurrent connections per shard; more are answered 421 and closed.
    pub max_connections_per_shard: usize,
    /// Seconds to wait for a command (RFC 5321 §4.5.3.2.7 says at least 300).
    pub command_timeout_secs: u64,
    /// Seconds message content may take, before the time it earns at
    /// `min_data_rate` (RFC 5321: 180 per block).
    pub data_timeout_secs: u64,
    /// Bytes per second message content must keep up beyond
    /// `data_timeout_secs` (0: no extension); a trickle is cut.
    pub min_data_rate: u32,
    /// Seconds a session of a client that is neither in `relay_networks`
    /// nor authenticated may last in all; 0: no cap.
    pub max_session_secs: u64,
    /// Recipients refused in one untrusted session before it is closed.
    pub max_rejected_recipients: usize,
    /// Clients in these networks may relay to any domain.
    pub relay_networks: Vec<IpNet>,
    /// Domains this server receives mail for from anyone.
    pub local_domains: Vec<String>,
    /// What separates an account from a detail in a local address
    /// (`alice+news@` is alice's when no account is called
    /// `alice+news`); empty: no subaddresses.
    pub recipient_delimiter: String,
    /// Addresses at local domains whose mail goes elsewhere: to accounts,
    /// to remote addresses, or both (`"info@ours.test" = ["alice@ours.test",
    /// "bob@far.test"]`); `"@ours.test"` catches every address of the
    /// domain that is no account. Targets are not looked up as aliases
    /// again.
    pub aliases: BTreeMap<String, Vec<String>>,
    /// DNS blocklists (RFC 5782) asked about clients that may not relay:
    /// `"zone"` or `"zone=127.0.0.2,127.0.0.4"` ([`crate::dnsbl`]); a
    /// listed client's recipients get `554 5.7.1`.
    pub dnsbl: Vec<String>,
    /// Refuse mail from clients that may not relay whose sender's domain
    /// has no MX, A or AAAA record (`550 5.1.8`; `451 4.1.8` while DNS
    /// fails), as Postfix's `reject_unknown_sender_domain`: a bounce to
    /// it could never be delivered.
    pub reject_unknown_sender_domain: bool,
    /// A Sieve script run on every message at the end of DATA, before
    /// users' own filters (as Postfix's `header_checks`, in Sieve):
    /// `reject` refuses it (`550 5.7.1`), `discard` takes it and delivers
    /// it to no one, `redirect` sends a copy on (an archive), anything else
    /// delivers it as addressed. Checked when the configuration is read.
    pub sieve_filter: Option<PathBuf>,
}

/// Mail submission (RFC 6409): mail clients send here, authenticated.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SubmissionConfig {
    /// Serve submission at all.
    pub enabled: bool,
    /// The STARTTLS port (587 in production).
    pub listen: SocketAddr,
    /// The implicit-TLS port (RFC 8314, 465 in production); `"off"`: none.
    #[serde(
        deserialize_with = "optional_addr",
        serialize_with = "optional_addr_out"
    )]
    pub tls_listen: Option<SocketAddr>,
    /// Which MAIL FROM an account may use: `own` (its address), `domain`
    /// (any address at its domain) or `any`.
    pub sender_policy: SenderPolicyConfig,
    /// Messages one account may submit per hour (all ports together);
    /// 0: no limit.
    pub max_messages_per_hour: u32,
    /// Seconds a client may stay connected without authenticating.
    pub login_timeout_secs: u64,
    /// Seconds a failed AUTH waits before it is answered (slows guessing).
    pub auth_failure_delay_secs: u64,
}

/// [`SubmissionConfig::sender_policy`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SenderPolicyConfig {
    /// The account's own address.
    Own,
    /// Any address at the account's domain.
    Domain,
    /// Any address.
    Any,
}

/// Where passwords may be sent without TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PlaintextAuth {
    /// Only from loopback addresses (the default: local tools and tests).
    Loopback,
    /// Never: TLS first, everywhere.
    Never,
    /// From anywhere (only behind a trusted network; not recommended).
    Always,
}

/// One certificate chain and its private key, PEM files.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CertificatePair {
    /// The chain, leaf first.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// TLS on the listeners.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// Offer TLS at all (STARTTLS and the implicit-TLS ports).
    pub enabled: bool,
    /// Certificates; the first is the default, the others are chosen by
    /// the name the client asks for (SNI). None: a self-signed certificate
    /// made at first start in `data_dir/tls/`.
    pub certificates: Vec<CertificatePair>,
    /// Where AUTH, LOGIN and USER/PASS may be used before TLS.
    pub plaintext_auth: PlaintextAuth,
    /// Seconds a TLS handshake may take.
    pub handshake_timeout_secs: u64,
}

/// Abuse limits, checked before any per-session work.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Connections one client address may hold at once, all listeners
    /// together; 0: no limit.
    pub max_connections_per_ip: usize,
    /// New connections one client address may open per minute; 0: no limit.
    pub connections_per_minute_per_ip: u32,
    /// Clients the connection limits do not apply to (a webmail host);
    /// `smtp.relay_networks` are exempt too. Password-guessing lockouts
    /// apply to everyone.
    pub exempt_networks: Vec<IpNet>,
    /// MiB of client data (messages and literals being received) the
    /// sessions of one shard may hold; a session that would go over waits
    /// (its socket is not read). Untrusted clients get half.
    pub session_memory_mb: usize,
    /// Failed logins from one address within `auth_window_secs` before it
    /// is locked out.
    pub auth_failures_per_ip: u32,
    /// Failed logins for one account within `auth_window_secs` before
    /// addresses that failed for it are locked out of it.
    pub auth_failures_per_account: u32,
    /// The window failures are counted in, seconds.
    pub auth_window_secs: u64,
    /// How long a lockout lasts, seconds.
    pub lockout_secs: u64,
    /// Threads that check passwords (Argon2); 0: half the CPUs, at least one.
    pub auth_threads: usize,
    /// Seconds a checked password is remembered, so a client that logs in
    /// every minute does not cost an Argon2 run each time; 0: never.
    pub auth_cache_secs: u64,
}

/// Outbound delivery: routing, limits, retries and timeouts.
///
/// Defaults follow Postfix where it has an equivalent (concurrency 20 per
/// destination, first retry after 5 minutes, at most an hour between
/// retries, 5 days before a message bounces).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelayConfig {
    /// Deliver queued mail at all (off: mail is only accepted and kept).
    pub enabled: bool,
    /// TCP port of MX hosts (25; tests point it elsewhere).
    pub mx_port: u16,
    /// DNS servers to ask (`ip:port`); empty means the system's resolv.conf.
    pub nameservers: Vec<SocketAddr>,
    /// Seconds before one DNS query is given up.
    pub dns_timeout_secs: u64,
    /// Send everything (except statically routed domains) to this `host:port`.
    pub smarthost: Option<String>,
    /// Per-domain static routes: domain → `host:port`, instead of MX lookup.
    pub routes: BTreeMap<String, String>,
    /// Simultaneous connections to one destination site (the domains
    /// that share a set of MX hosts), all shards together; shaping rules
    /// may set another.
    pub max_connections_per_destination: usize,
    /// Simultaneous outbound connections of one shard.
    pub max_connections_per_shard: usize,
    /// Messages sent over one connection before it is closed and reopened.
    pub max_messages_per_connection: usize,
    /// Seconds an idle outbound connection waits for more mail before QUIT.
    pub idle_connection_secs: u64,
    /// Queue entries one shard keeps in memory; the rest wait in the store.
    pub max_queued_per_shard: usize,
    /// First retry delay, seconds; each later one doubles (with jitter).
    pub retry_initial_secs: u64,
    /// Longest delay between retries, seconds.
    pub retry_max_secs: u64,
    /// A message still undelivered this long after arrival bounces, seconds.
    pub max_lifetime_secs: u64,
    /// Use BDAT (RFC 3030) when the server offers CHUNKING and PIPELINING.
    pub use_chunking: bool,
    /// Use STARTTLS when a server offers it.
    pub starttls: bool,
    /// Check server certificates (web PKI roots, or `ca_file`); a failed
    /// check defers the mail. Off: opportunistic TLS, and a failed handshake
    /// falls back to a plain connection, as Postfix's `may` level does.
    pub verify_certificates: bool,
    /// PEM file of extra trusted CA certificates (for the `verify` policy).
    pub ca_file: Option<PathBuf>,
    /// TLS policy per destination domain (a key starting with `.` covers
    /// every subdomain), over the default that `starttls` and
    /// `verify_certificates` give: `none`, `may` (opportunistic),
    /// `encrypt` (STARTTLS must succeed, any certificate), `verify` (and the
    /// certificate must be valid for the host). A destination whose policy
    /// cannot be met is deferred, never sent in the clear.
    pub tls_policy: BTreeMap<String, TlsPolicy>,
    /// The operator's own bounce classification rules, tried before the
    /// built-in ones: each names a class and a status prefix, a text to
    /// find in the reply (ignoring case), or both.
    pub bounce_rules: Vec<BounceRule>,
    /// Honour destinations' MTA-STS policies (RFC 8461): with `mode:
    /// enforce`, only the MX hosts they name, only over TLS with a
    /// certificate valid for the host; failures defer.
    pub mta_sts: bool,
    /// The port policies are fetched from (443; for tests and proxies).
    pub mta_sts_port: u16,
    /// DANE (RFC 7672): MX hosts that publish TLSA records on
    /// DNSSEC-validated answers get mail only over TLS with a certificate
    /// that matches them. Validation is the resolver's: ringpost believes
    /// the AD bit of `nameservers` (or the system's), so they must be
    /// validating resolvers on a path nobody can forge (loopback); with a
    /// resolver that does not validate, DANE never applies. Takes
    /// precedence over MTA-STS; not applied to routes, the smarthost, or
    /// destinations whose `tls_policy` is `none` or `verify`, nor when
    /// `starttls` is off.
    pub dane: bool,
    /// Local addresses outbound connections come from (egress sources),
    /// picked by weight for each connection; none: the system picks.
    pub sources: Vec<SourceConfig>,
    /// Egress pools (`[[relay.pools]]`): named groups of `sources`, chosen
    /// per message by its sender's domain. See [`PoolConfig`].
    pub pools: Vec<PoolConfig>,
    /// The pool of mail no pool's `senders` names; none: every source.
    pub default_pool: Option<String>,
    /// Traffic shaping rules (`[[relay.shaping]]`), matched by MX site, MX
    /// host suffix or domain; every matching rule's settings apply, later
    /// rules over earlier ones. See [`ShapingRule`].
    pub shaping: Vec<ShapingRule>,
    /// Seconds to wait for a TCP connection.
    pub connect_timeout_secs: u64,
    /// Seconds to wait for the 220 greeting (RFC 5321 §4.5.3.2.1: 5 minutes).
    pub greeting_timeout_secs: u64,
    /// Seconds to wait for EHLO, MAIL, RCPT, RSET and QUIT replies (RFC: 5 minutes).
    pub command_timeout_secs: u64,
    /// Seconds to wait for the 354 after DATA (RFC: 2 minutes).
    pub data_init_timeout_secs: u64,
    /// Seconds one write of message data may take (RFC: 3 minutes).
    pub data_block_timeout_secs: u64,
    /// Seconds to wait for the reply after the final dot (RFC: 10 minutes).
    pub data_done_timeout_secs: u64,
}

/// The default quota of every account (`ringpost user quota` gives one
/// account its own). Mail past it is refused at RCPT (`452 4.2.2`) and
/// APPEND (`NO [OVERQUOTA]`).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuotaConfig {
    /// Most megabytes of messages per account; 0 is no limit.
    pub storage_mb: u64,
    /// Most messages per account; 0 is no limit.
    pub messages: u64,
}

impl QuotaConfig {
    /// As the store's quota type.
    pub fn default_quota(&self) -> ringpost_storage::quota::Quota {
        ringpost_storage::quota::Quota {
            storage: (self.storage_mb > 0).then(|| self.storage_mb.saturating_mul(1024 * 1024)),
            messages: (self.messages > 0).then_some(self.messages),
        }
    }
}

/// The suppression list. A remote's permanent "no such mailbox"
/// (bounce class `invalid_recipient`) adds the address; relayed mail to a
/// suppressed address is then refused at RCPT (`550 5.1.1`) instead of
/// being sent again. Mail from the null sender (DSNs) is never stopped.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SuppressionConfig {
    /// Add hard-bounced addresses, and refuse mail to listed ones.
    pub enabled: bool,
    /// Whose mail a bounce stops: `sender_domain` (the domain that got the
    /// bounce) or `global` (every sender's).
    pub scope: SuppressionScope,
    /// Days an automatic entry lasts; 0: until removed.
    pub ttl_days: u64,
}

impl Default for SuppressionConfig {
    fn default() -> Self {
        SuppressionConfig {
            enabled: true,
            scope: SuppressionScope::SenderDomain,
            ttl_days: 365,
        }
    }
}

/// Whose mail one hard bounce stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SuppressionScope {
    /// Mail from the domain whose message bounced.
    SenderDomain,
    /// Everyone's mail.
    Global,
}

/// Prometheus endpoint settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Address of the control plane's HTTP listener: `/metrics`, the
    /// health checks and the admin API; `"off"`: none.
    #[serde(
        deserialize_with = "optional_addr",
        serialize_with = "optional_addr_out"
    )]
    pub listen: Option<SocketAddr>,
}

/// Where the mail log goes: one line per accepted message and per
/// recipient of each delivery attempt.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MailLogConfig {
    /// A file of its own; none: with the other logs (stderr).
    pub mail_log: Option<PathBuf>,
    /// Its lines: Postfix-like `text`, or `json`.
    pub mail_log_format: MailLogFormat,
}

/// How the mail log file's lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MailLogFormat {
    /// `TIME ringpost[shardN] QUEUEID: key=value ...`, as Postfix's maillog.
    #[default]
    Text,
    /// One JSON object a line.
    Json,
}

/// How delivery to a destination uses TLS (the names are Postfix's
/// `smtp_tls_security_level`'s).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsPolicy {
    /// Never STARTTLS.
    None,
    /// STARTTLS when offered, any certificate; a failed handshake falls
    /// back to a plain connection (RFC 7435).
    May,
    /// STARTTLS must be offered and succeed; any certificate.
    Encrypt,
    /// STARTTLS with a certificate that chains to the web PKI (or
    /// `ca_file`) and names the host.
    Verify,
}

impl TlsPolicy {
    /// Whether mail must not go in the clear.
    pub fn requires_tls(self) -> bool {
        matches!(self, TlsPolicy::Encrypt | TlsPolicy::Verify)
    }
}

/// One `[[relay.bounce_rules]]` entry.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BounceRule {
    /// The class it gives: `invalid_recipient`, `policy`, `rate_limited`, ….
    pub class: String,
    /// The reply's enhanced status code starts with this (`5.7.1`, `4.7.`).
    pub status: Option<String>,
    /// The reply's text contains this, ignoring case.
    pub contains: Option<String>,
}

impl RelayConfig {
    /// The rules that classify refusals: the operator's, then the built-in.
    pub fn bounce_classifier(&self) -> Result<Vec<bounce_class::Rule>, String> {
        let mut rules = self.operator_bounce_rules()?;
        rules.extend(bounce_class::default_rules());
        Ok(rules)
    }

    /// The operator's own classification rules (`bounce_rules`) alone.
    pub fn operator_bounce_rules(&self) -> Result<Vec<bounce_class::Rule>, String> {
        self.bounce_rules
            .iter()
            .map(|r| bounce_class::rule(&r.class, r.status.as_deref(), r.contains.as_deref()))
            .collect()
    }

    /// The TLS policy for mail to `domain`: its own (or its closest parent's
    /// `.parent` entry) in `tls_policy`, else the default.
    pub fn tls_policy_for(&self, domain: &str) -> TlsPolicy {
        let domain = domain.trim_end_matches('.');
        let lookup = |key: &str| {
            self.tls_policy
                .iter()
                .find(|(k, _)| {
                    k.eq_ignore_ascii_case(key) || (!k.is_ascii() && ascii_policy_key(k) == key)
                })
                .map(|(_, p)| *p)
        };
        if let Some(policy) = lookup(domain) {
            return policy;
        }
        let mut rest = domain;
        while let Some(dot) = rest.find('.') {
            if let Some(policy) = lookup(&rest[dot..]) {
                return policy;
            }
            rest = &rest[dot + 1..];
        }
        self.default_tls_policy()
    }

    /// The egress pool of mail from `sender`: the first pool whose
    /// `senders` names its domain, else `default_pool`.
    pub fn pool_for(&self, sender: &str) -> Option<&str> {
        let domain = sender.rsplit_once('@').map_or("", |(_, d)| d);
        let domain = domain.to_ascii_lowercase();
        self.pools
            .iter()
            .find(|pool| {
                pool.senders.iter().any(|pattern| {
                    let pattern = pattern.to_ascii_lowercase();
                    match pattern.strip_prefix('.') {
                        Some(_) => domain.ends_with(&pattern),
                        None => domain == pattern,
                    }
                })
            })
            .map(|pool| pool.name.as_str())
            .or(self.default_pool.as_deref())
    }

    /// The policy of destinations `tls_policy` does not name.
    pub fn default_tls_policy(&self) -> TlsPolicy {
        match (self.starttls, self.verify_certificates) {
            (false, _) => TlsPolicy::None,
            (true, true) => TlsPolicy::Verify,
            (true, false) => TlsPolicy::May,
        }
    }
}

/// DKIM signing (RFC 6376, 8463) of the mail clients send out.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DkimConfig {
    /// The keys; a message is signed with every key of its From domain.
    pub keys: Vec<DkimKeyConfig>,
    /// Sign with this domain's keys when the From domain has none (a
    /// signature that does not align with From, but vouches for the relay).
    pub signing_domain: Option<String>,
}

/// One selector's key.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DkimKeyConfig {
    /// The signing domain (`d=`).
    pub domain: String,
    /// The selector (`s=`): the key is published at
    /// `selector._domainkey.domain`.
    pub selector: String,
    /// The private key, PEM: PKCS#8 (RSA or Ed25519) or PKCS#1 (RSA), as
    /// `ringpost dkim keygen` writes it.
    pub key: PathBuf,
}

/// One egress pool (`[[relay.pools]]`): the sources a message's
/// connections come from, by the sources' weights, when its sender's
/// domain is one of `senders` (or the pool is `relay.default_pool`, or an
/// injection names it). Each site's queue is kept per pool, so one
/// connection carries one pool's mail.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    /// Its name (`[a-z0-9_-]`).
    pub name: String,
    /// Addresses of `relay.sources` in it.
    pub sources: Vec<IpAddr>,
    /// Sender domains whose mail it carries (`.example.com`: every
    /// subdomain).
    #[serde(default)]
    pub senders: Vec<String>,
}

/// One traffic shaping rule (`[[relay.shaping]]`). It matches by one of
/// `site` (a site's name: its MX host names, sorted, joined by `,`),
/// `mx_suffix` (`*.google.com` or `.google.com`: any of the site's MX hosts
/// ends so) or `domain` (`example.com`, or `.example.com` for its
/// subdomains). A domain rule makes the domain a site of its own, so its
/// limits are not shared with other domains on the same MX hosts. Unset
/// settings keep what earlier rules or the defaults gave.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ShapingRule {
    /// The site's name, exactly.
    #[serde(default)]
    pub site: Option<String>,
    /// A suffix of one of the site's MX host names.
    #[serde(default)]
    pub mx_suffix: Option<String>,
    /// A recipient domain.
    #[serde(default)]
    pub domain: Option<String>,
    /// Simultaneous connections to the site, all shards together.
    #[serde(default)]
    pub max_connections: Option<usize>,
    /// Messages over one connection before it is closed.
    #[serde(default)]
    pub max_messages_per_connection: Option<usize>,
    /// Messages per second to the site (fractions allowed), all shards.
    #[serde(default)]
    pub messages_per_second: Option<f64>,
    /// Messages per hour to the site, as a token bucket that starts full.
    #[serde(default)]
    pub messages_per_hour: Option<u64>,
    /// Recipients in one transaction; more are sent in several.
    #[serde(default)]
    pub max_recipients: Option<usize>,
    /// Whether replies that ask to slow down lower the limits.
    #[serde(default)]
    pub adaptive: Option<bool>,
    /// Seconds the site is left alone when it asks to slow down while its
    /// limits are already at their floor.
    #[serde(default)]
    pub suspend_secs: Option<u64>,
    /// Seconds of success between two steps back up towards the limits.
    #[serde(default)]
    pub recover_secs: Option<u64>,
}

/// One egress source (`[[relay.sources]]`): a local address outbound
/// connections are bound to, with its own EHLO name, weight and daily
/// limits (an IP warm-up).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// The local address (it must be one of this host's).
    pub address: IpAddr,
    /// The name said in EHLO from it (its PTR name); default: `hostname`.
    #[serde(default)]
    pub ehlo: Option<String>,
    /// Its share of connections, against the other sources' weights.
    #[serde(default = "one")]
    pub weight: u32,
    /// Most messages a day (UTC) once warmed up; 0: no limit.
    #[serde(default)]
    pub daily_limit: u64,
    /// Warm-up: the daily limits of its first days, from `warmup_start`
    /// on (e.g. `[500, 1000, 2000, 5000]`); after them, `daily_limit`.
    #[serde(default)]
    pub warmup: Vec<u64>,
    /// The first day of the warm-up, `YYYY-MM-DD` (UTC).
    #[serde(default)]
    pub warmup_start: Option<String>,
}

fn one() -> u32 {
    1
}

impl SourceConfig {
    /// Its limit on `day` (days since the Unix epoch, UTC); None: none.
    pub fn limit_on(&self, day: u64) -> Option<u64> {
        let start = self.warmup_start.as_deref().and_then(day_number);
        if let Some(start) = start {
            if day < start {
                return self.warmup.first().copied();
            }
            if let Some(&limit) = self.warmup.get((day - start) as usize) {
                return Some(limit);
            }
        }
        (self.daily_limit > 0).then_some(self.daily_limit)
    }
}

/// `YYYY-MM-DD` as days since the Unix epoch.
fn day_number(date: &str) -> Option<u64> {
    let date = chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()?;
    let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1)?;
    u64::try_from((date - epoch).num_days()).ok()
}

/// SPF (RFC 7208), DKIM (RFC 6376) and DMARC (RFC 7489) for mail from
/// clients that may not relay (the internet, sending to local domains):
/// the verdicts go into an `Authentication-Results:` field (RFC 8601) at
/// the top of the stored message. DNS goes through the relay's resolver
/// (`relay.nameservers`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct InboundAuthConfig {
    /// Check at all.
    pub enabled: bool,
    /// Refuse mail whose SPF check fails (`550 5.7.23`) rather than only
    /// marking it; softfail, neutral and errors only mark.
    pub spf_reject_fail: bool,
    /// Refuse mail that fails DMARC when its domain asks for `p=reject`
    /// (`550 5.7.1`); otherwise it is only marked.
    pub dmarc_reject: bool,
    /// Deliver mail that fails DMARC when its domain asks for
    /// `p=quarantine` to the recipient's Junk mailbox (INBOX when it has
    /// none); otherwise it is only marked.
    pub dmarc_quarantine_to_junk: bool,
    /// Send DMARC aggregate reports (RFC 7489 §7.2) to the domains whose
    /// record asks for them (`rua=mailto:`).
    pub dmarc_reports: bool,
    /// The period one report covers, seconds (a day).
    pub dmarc_report_interval_secs: u64,
    /// The `From:` of reports; empty: `dmarc-noreply@` the hostname.
    pub dmarc_report_from: String,
    /// The reporting organization's name in reports; empty: the hostname.
    pub dmarc_report_org: String,
}

impl Default for InboundAuthConfig {
    fn default() -> Self {
        InboundAuthConfig {
            enabled: true,
            spf_reject_fail: false,
            dmarc_reject: true,
            dmarc_quarantine_to_junk: true,
            dmarc_reports: false,
            dmarc_report_interval_secs: 86_400,
            dmarc_report_from: String::new(),
            dmarc_report_org: String::new(),
        }
    }
}

/// Delivery events (reception, delivered, deferred, bounced, suppressed)
/// posted as JSON arrays to an HTTP endpoint, kept in the store until it
/// takes them.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookConfig {
    /// Where events are posted, `http://` or `https://`; none: no events
    /// are kept.
    pub url: Option<String>,
    /// Sent as the `Authorization` header, e.g. `"Bearer s3cret"`.
    pub authorization: Option<String>,
    /// Most events in one POST.
    pub batch_size: usize,
    /// Seconds a POST may take, connection included.
    pub timeout_secs: u64,
    /// Longest pause between retries of a failed POST, seconds (they
    /// start at one and double).
    pub retry_max_secs: u64,
    /// Events older than this many hours are dropped unposted (logged and
    /// counted): while the endpoint is down, the backlog on disk is bounded
    /// by this much traffic.
    pub max_event_age_hours: u64,
    /// More endpoints (`[[webhook.endpoints]]`), each with its own copy of
    /// the events it takes, so one that is down holds back no other. The
    /// settings above (batch size, timeouts, pauses, age) apply to each.
    pub endpoints: Vec<WebhookEndpoint>,
}

/// One more webhook endpoint.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct WebhookEndpoint {
    /// Its name in logs and metrics (`[a-z0-9_-]`, not `default`, which
    /// is `webhook.url`'s).
    pub name: String,
    /// `http://` or `https://`.
    pub url: String,
    /// Sent as the `Authorization` header.
    #[serde(default)]
    pub authorization: Option<String>,
    /// The event types it takes (`reception`, `delivered`, `deferred`,
    /// `bounced`, `suppressed`); empty: all.
    #[serde(default)]
    pub events: Vec<String>,
}

/// The delivery event types, as events and `webhook.endpoints` name them.
pub const EVENT_TYPES: [&str; 5] = [
    "reception",
    "delivered",
    "deferred",
    "bounced",
    "suppressed",
];

impl WebhookConfig {
    /// Whether events are kept and posted at all.
    pub fn enabled(&self) -> bool {
        self.url.is_some() || !self.endpoints.is_empty()
    }
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            url: None,
            authorization: None,
            batch_size: 100,
            timeout_secs: 10,
            retry_max_secs: 300,
            max_event_age_hours: 72,
            endpoints: Vec::new(),
        }
    }
}

/// The admin API on the control plane's listener (`metrics.listen`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// `/metrics` wants the API's bearer token too (for a listener that
    /// others can reach). Off by default: scrapers on loopback need none.
    pub metrics_need_token: bool,
    /// Most recipients in one `POST /api/v1/inject`.
    pub inject_max_recipients: usize,
    /// Largest `POST /api/v1/inject` body, bytes (JSON, attachments in
    /// base64): keep it above `smtp.max_message_size` × 4/3.
    pub inject_max_request_bytes: usize,
    /// Connections one client off loopback (an address, an IPv6 /64) may
    /// hold at once; 0: no cap of its own (the listener's 64 remain). Raise
    /// it for a proxy, a container bridge or a pool of injecting workers.
    pub max_connections_per_client: usize,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            metrics_need_token: false,
            inject_max_recipients: 10_000,
            // 50 MiB of message in base64, and room for the JSON around it.
            inject_max_request_bytes: 70 * 1024 * 1024,
            max_connections_per_client: 8,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            hostname: default_hostname(),
            shards: 0,
            pin_shards: true,
            shard_spin_us: 0,
            data_dir: PathBuf::from("./ringpost-data"),
            store: StoreConfig::default(),
            smtp: SmtpConfig::default(),
            submission: SubmissionConfig::default(),
            tls: TlsConfig::default(),
            limits: LimitsConfig::default(),
            relay: RelayConfig::default(),
            pop3: Pop3ListenerConfig::default(),
            imap: ImapListenerConfig::default(),
            managesieve: ManageSieveListenerConfig::default(),
            lmtp: LmtpListenerConfig::default(),
            metrics: MetricsConfig::default(),
            admin: AdminConfig::default(),
            dkim: DkimConfig::default(),
            log: MailLogConfig::default(),
            quota: QuotaConfig::default(),
            suppression: SuppressionConfig::default(),
            webhook: WebhookConfig::default(),
            inbound_auth: InboundAuthConfig::default(),
            srs: SrsConfig::default(),
            feedback: FeedbackConfig::default(),
        }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            engine: StoreEngine::Rocksdb,
            sync: true,
            commit_queue: 8192,
            compress_bodies: false,
            body_cache_mb: 256,
            min_free_disk_mb: 256,
            segment_min_kb: 64,
        }
    }
}

impl Default for SmtpConfig {
    fn default() -> Self {
        SmtpConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 2525)),
            max_message_size: 50 * 1024 * 1024,
            max_recipients: 1000,
            max_line_length: 2048,
            max_errors: 20,
            max_connections_per_shard: 2000,
            command_timeout_secs: 300,
            data_timeout_secs: 180,
            min_data_rate: 1024,
            max_session_secs: 3600,
            max_rejected_recipients: 20,
            relay_networks: vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()],
            local_domains: Vec::new(),
            recipient_delimiter: "+".into(),
            aliases: BTreeMap::new(),
            dnsbl: Vec::new(),
            reject_unknown_sender_domain: false,
            sieve_filter: None,
        }
    }
}

impl Default for SubmissionConfig {
    fn default() -> Self {
        SubmissionConfig {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 2587)),
            tls_listen: Some(SocketAddr::from(([127, 0, 0, 1], 2465))),
            sender_policy: SenderPolicyConfig::Own,
            max_messages_per_hour: 1000,
            login_timeout_secs: 180,
            auth_failure_delay_secs: 1,
        }
    }
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            enabled: true,
            certificates: Vec::new(),
            plaintext_auth: PlaintextAuth::Loopback,
            handshake_timeout_secs: 10,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_connections_per_ip: 50,
            connections_per_minute_per_ip: 300,
            exempt_networks: Vec::new(),
            session_memory_mb: 256,
            auth_failures_per_ip: 10,
            auth_failures_per_account: 30,
            auth_window_secs: 600,
            lockout_secs: 900,
            auth_threads: 0,
            auth_cache_secs: 300,
        }
    }
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            enabled: true,
            mx_port: 25,
            nameservers: Vec::new(),
            dns_timeout_secs: 5,
            smarthost: None,
            routes: BTreeMap::new(),
            max_connections_per_destination: 20,
            max_connections_per_shard: 1000,
            max_messages_per_connection: 1000,
            idle_connection_secs: 2,
            max_queued_per_shard: 200_000,
            retry_initial_secs: 300,
            retry_max_secs: 3600,
            max_lifetime_secs: 5 * 24 * 3600,
            use_chunking: true,
            starttls: true,
            verify_certificates: false,
            ca_file: None,
            tls_policy: BTreeMap::new(),
            bounce_rules: Vec::new(),
            sources: Vec::new(),
            pools: Vec::new(),
            default_pool: None,
            shaping: Vec::new(),
            mta_sts: true,
            mta_sts_port: 443,
            dane: true,
            connect_timeout_secs: 30,
            greeting_timeout_secs: 300,
            command_timeout_secs: 300,
            data_init_timeout_secs: 120,
            data_block_timeout_secs: 180,
            data_done_timeout_secs: 600,
        }
    }
}

impl Default for Pop3ListenerConfig {
    fn default() -> Self {
        Pop3ListenerConfig {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 1110)),
            tls_listen: Some(SocketAddr::from(([127, 0, 0, 1], 1995))),
            max_connections_per_shard: 1000,
            idle_timeout_secs: 600,
            max_errors: 10,
            auth_failure_delay_secs: 1,
            login_timeout_secs: 600,
        }
    }
}

impl Default for ImapListenerConfig {
    fn default() -> Self {
        ImapListenerConfig {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 1143)),
            tls_listen: Some(SocketAddr::from(([127, 0, 0, 1], 1993))),
            max_connections_per_shard: 2000,
            idle_timeout_secs: 1800,
            max_command_size: 50 * 1024 * 1024 + 64 * 1024,
            max_errors: 20,
            auth_failure_delay_secs: 1,
            login_timeout_secs: 180,
            max_sessions_per_account: 20,
        }
    }
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 9090))),
        }
    }
}

/// A configuration problem, phrased for the operator.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// TOML syntax or an unknown/mistyped key; the text names line and column.
    #[error("{0}")]
    Syntax(String),
    /// A value is out of range or inconsistent.
    #[error("{key}: {problem}")]
    Invalid {
        /// Dotted key path.
        key: &'static str,
        /// What is wrong.
        problem: String,
    },
}

/// The shortest `smtp.max_line_length` that takes every valid MAIL and
/// RCPT line with the parameters offered in EHLO: 512 octets (RFC 5321
/// §4.5.3.1.4) plus SIZE's 26 (RFC 1870 §3), DSN's 100 on MAIL and 500 on
/// RCPT (RFC 3461 §4), AUTH='s 500 (RFC 4954 §5), rounded up. Less is
/// allowed (RFC 5321's own minimum is 512), with a caution.
const MIN_COMMAND_LINE: usize = 1200;

impl Config {
    /// Read and check a TOML file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text).map_err(|e| match e {
            ConfigError::Syntax(s) => ConfigError::Syntax(format!("{}: {s}", path.display())),
            other => other,
        })
    }

    /// Parse and check TOML text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let config: Config =
            toml::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Check ranges and consistency.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn invalid(key: &'static str, problem: impl Into<String>) -> Result<(), ConfigError> {
            Err(ConfigError::Invalid {
                key,
                problem: problem.into(),
            })
        }
        /// The first of `keys` whose value is 0 named as wrong, so the
        /// operator is sent to the setting that is.
        fn none_zero(keys: &[(&'static str, u64)], problem: &str) -> Result<(), ConfigError> {
            match keys.iter().find(|(_, value)| *value == 0) {
                Some((key, _)) => invalid(key, problem),
                None => Ok(()),
            }
        }
        if self.hostname.is_empty() || self.hostname.contains(char::is_whitespace) {
            return invalid("hostname", "must be a non-empty name without spaces");
        }
        if self.shards > 1024 {
            return invalid("shards", format!("{} is more than 1024", self.shards));
        }
        if self.store.commit_queue == 0 {
            return invalid("store.commit_queue", "must be at least 1");
        }
        let s = &self.smtp;
        for (alias, targets) in &s.aliases {
            let domain = match alias.strip_prefix('@') {
                Some(domain) => Some(domain),
                None if ringpost_protocols::smtp::is_mailbox(alias) => {
                    alias.rsplit_once('@').map(|(_, d)| d)
                }
                None => None,
            };
            let Some(domain) = domain.filter(|d| !d.is_empty()) else {
                return invalid(
                    "smtp.aliases",
                    format!("`{alias}` is neither an address nor `@domain`"),
                );
            };
            if *alias != alias.to_lowercase() {
                return invalid("smtp.aliases", format!("write `{alias}` in lowercase"));
            }
            if !self.is_local_domain(domain) {
                return invalid(
                    "smtp.aliases",
                    format!("`{alias}`: {domain} is not a local domain (hostname or smtp.local_domains)"),
                );
            }
            if targets.is_empty() {
                return invalid("smtp.aliases", format!("`{alias}` goes nowhere"));
            }
            if let Some(bad) = targets
                .iter()
                .find(|t| !ringpost_protocols::smtp::is_mailbox(t))
            {
                return invalid(
                    "smtp.aliases",
                    format!("`{alias}`: `{bad}` is not an address"),
                );
            }
        }
        if s.recipient_delimiter.contains(['@', ' '])
            || s.recipient_delimiter != s.recipient_delimiter.to_lowercase()
        {
            return invalid(
                "smtp.recipient_delimiter",
                "must not hold `@`, spaces or capital letters",
            );
        }
        let web_url = |url: &str| {
            url.parse::<hyper::Uri>().is_ok_and(|uri| {
                matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some()
            })
        };
        if let Some(url) = &self.webhook.url {
            if !web_url(url) {
                return invalid(
                    "webhook.url",
                    format!("`{url}` is not an http:// or https:// URL"),
                );
            }
        }
        for (n, endpoint) in self.webhook.endpoints.iter().enumerate() {
            let name = &endpoint.name;
            let name_ok = !name.is_empty()
                && name != "default"
                && name.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'
                });
            if !name_ok {
                return invalid(
                    "webhook.endpoints",
                    format!("endpoint {n}: a name is [a-z0-9_-] and not `default`, not {name:?}"),
                );
            }
            if self.webhook.endpoints[..n].iter().any(|e| &e.name == name) {
                return invalid("webhook.endpoints", format!("{name} is given twice"));
            }
            if !web_url(&endpoint.url) {
                return invalid(
                    "webhook.endpoints",
                    format!(
                        "{name}: `{}` is not an http:// or https:// URL",
                        endpoint.url
                    ),
                );
            }
            if let Some(kind) = endpoint
                .events
                .iter()
                .find(|kind| !EVENT_TYPES.contains(&kind.as_str()))
            {
                return invalid(
                    "webhook.endpoints",
                    format!("{name}: `{kind}` is none of {}", EVENT_TYPES.join(", ")),
                );
            }
        }
        if !(1..=10_000).contains(&self.webhook.batch_size) {
            return invalid("webhook.batch_size", "must be 1 to 10000");
        }
        if let Some(path) = &self.smtp.sieve_filter {
            if let Err(problem) = crate::sieve::server_filter(path) {
                return invalid("smtp.sieve_filter", problem);
            }
        }
        for zone in &self.smtp.dnsbl {
            if let Err(problem) = crate::dnsbl::parse_zone(zone) {
                return invalid("smtp.dnsbl", problem);
            }
        }
        let auth = &self.inbound_auth;
        if auth.dmarc_report_interval_secs == 0 {
            return invalid(
                "inbound_auth.dmarc_report_interval_secs",
                "must be at least 1",
            );
        }
        if !auth.dmarc_report_from.is_empty()
            && !ringpost_protocols::smtp::is_mailbox(&auth.dmarc_report_from)
        {
            return invalid(
                "inbound_auth.dmarc_report_from",
                "must be an address (local@domain)",
            );
        }
        if self.webhook.max_event_age_hours == 0 {
            return invalid("webhook.max_event_age_hours", "must be at least 1");
        }
        none_zero(
            &[
                ("webhook.timeout_secs", self.webhook.timeout_secs),
                ("webhook.retry_max_secs", self.webhook.retry_max_secs),
            ],
            "timeouts and pauses are at least 1 second",
        )?;
        if self.admin.inject_max_recipients == 0 {
            return invalid("admin.inject_max_recipients", "must be at least 1");
        }
        if self.admin.inject_max_request_bytes < 1024 {
            return invalid(
                "admin.inject_max_request_bytes",
                "must be at least 1024 bytes",
            );
        }
        if s.max_message_size < 1024 {
            return invalid("smtp.max_message_size", "must be at least 1024 bytes");
        }
        if s.max_recipients == 0 {
            return invalid(
                "smtp.max_recipients",
                "must be at least 1 (RFC 5321 asks for 100)",
            );
        }
        if s.max_line_length < 512 {
            return invalid(
                "smtp.max_line_length",
                "must be at least 512 (RFC 5321 §4.5.3.1.4)",
            );
        }
        if s.max_connections_per_shard == 0 {
            return invalid("smtp.max_connections_per_shard", "must be at least 1");
        }
        none_zero(
            &[
                ("smtp.command_timeout_secs", s.command_timeout_secs),
                ("smtp.data_timeout_secs", s.data_timeout_secs),
            ],
            "timeouts must be at least 1 second",
        )?;
        let r = &self.relay;
        for (n, source) in r.sources.iter().enumerate() {
            if source.address.is_unspecified() || source.address.is_multicast() {
                return invalid(
                    "relay.sources",
                    format!("source {n}: {} is not a local address", source.address),
                );
            }
            if r.sources[..n]
                .iter()
                .any(|other| other.address == source.address)
            {
                return invalid(
                    "relay.sources",
                    format!("{} is given twice", source.address),
                );
            }
            if source.weight == 0 {
                return invalid(
                    "relay.sources",
                    format!("{}: weight must be at least 1", source.address),
                );
            }
            if source.warmup.contains(&0) {
                return invalid(
                    "relay.sources",
                    format!("{}: a warm-up day's limit is at least 1", source.address),
                );
            }
            match (&source.warmup_start, source.warmup.is_empty()) {
                (Some(date), _) if day_number(date).is_none() => {
                    return invalid(
                        "relay.sources",
                        format!(
                            "{}: warmup_start `{date}` is not YYYY-MM-DD",
                            source.address
                        ),
                    );
                }
                (None, false) => {
                    return invalid(
                        "relay.sources",
                        format!("{}: a warmup needs its warmup_start", source.address),
                    );
                }
                _ => {}
            }
            if source.ehlo.as_deref().is_some_and(|name| {
                name.is_empty()
                    || !name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
            }) {
                return invalid(
                    "relay.sources",
                    format!("{}: ehlo must be a host name", source.address),
                );
            }
        }
        for (n, pool) in r.pools.iter().enumerate() {
            let name_ok = !pool.name.is_empty()
                && pool.name.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'
                });
            if !name_ok {
                return invalid(
                    "relay.pools",
                    format!("pool {n}: a name is [a-z0-9_-], not {:?}", pool.name),
                );
            }
            if r.pools[..n].iter().any(|other| other.name == pool.name) {
                return invalid("relay.pools", format!("{} is given twice", pool.name));
            }
            if pool.sources.is_empty() {
                return invalid("relay.pools", format!("{} has no sources", pool.name));
            }
            if let Some(missing) = pool
                .sources
                .iter()
                .find(|address| !r.sources.iter().any(|s| s.address == **address))
            {
                return invalid(
                    "relay.pools",
                    format!("{}: {missing} is not one of relay.sources", pool.name),
                );
            }
        }
        if let Some(name) = &r.default_pool {
            if !r.pools.iter().any(|pool| &pool.name == name) {
                return invalid(
                    "relay.default_pool",
                    format!("there is no pool named {name:?}"),
                );
            }
        }
        for (n, rule) in r.shaping.iter().enumerate() {
            let matchers = [&rule.site, &rule.mx_suffix, &rule.domain]
                .iter()
                .filter(|m| m.as_deref().is_some_and(|m| !m.is_empty()))
                .count();
            if matchers != 1 {
                return invalid(
                    "relay.shaping",
                    format!("rule {n}: give exactly one of site, mx_suffix, domain"),
                );
            }
            if rule.max_connections == Some(0)
                || rule.max_messages_per_connection == Some(0)
                || rule.max_recipients == Some(0)
                || rule.messages_per_hour == Some(0)
            {
                return invalid(
                    "relay.shaping",
                    format!("rule {n}: limits are at least 1 (leave one out for none)"),
                );
            }
            if rule
                .messages_per_second
                .is_some_and(|rate| !(rate.is_finite() && rate >= 0.001))
            {
                return invalid(
                    "relay.shaping",
                    format!("rule {n}: messages_per_second must be at least 0.001"),
                );
            }
        }
        none_zero(
            &[
                (
                    "relay.max_connections_per_destination",
                    r.max_connections_per_destination as u64,
                ),
                (
                    "relay.max_connections_per_shard",
                    r.max_connections_per_shard as u64,
                ),
                (
                    "relay.max_messages_per_connection",
                    r.max_messages_per_connection as u64,
                ),
            ],
            "connection and message limits must be at least 1",
        )?;
        if r.max_queued_per_shard < 16 {
            return invalid("relay.max_queued_per_shard", "must be at least 16");
        }
        if r.max_lifetime_secs < r.retry_initial_secs {
            return invalid(
                "relay.max_lifetime_secs",
                "must be at least retry_initial_secs (a shorter life bounces mail at its first delay)",
            );
        }
        if r.retry_initial_secs == 0 {
            return invalid("relay.retry_initial_secs", "must be at least 1");
        }
        if r.retry_max_secs < r.retry_initial_secs {
            return invalid(
                "relay.retry_max_secs",
                "must be at least retry_initial_secs",
            );
        }
        none_zero(
            &[
                ("relay.dns_timeout_secs", r.dns_timeout_secs),
                ("relay.connect_timeout_secs", r.connect_timeout_secs),
                ("relay.greeting_timeout_secs", r.greeting_timeout_secs),
                ("relay.command_timeout_secs", r.command_timeout_secs),
                ("relay.data_init_timeout_secs", r.data_init_timeout_secs),
                ("relay.data_block_timeout_secs", r.data_block_timeout_secs),
                ("relay.data_done_timeout_secs", r.data_done_timeout_secs),
            ],
            "timeouts must be at least 1 second",
        )?;
        if r.ca_file.is_some() && !r.starttls {
            return invalid("relay.ca_file", "is only used with starttls = true");
        }
        if r.verify_certificates && !r.starttls {
            // Said otherwise, mail would go out in the clear while the
            // operator believes it goes over verified TLS.
            return invalid(
                "relay.verify_certificates",
                "asks for verified TLS while starttls = false",
            );
        }
        if !r.starttls
            && r.tls_policy
                .values()
                .any(|p| matches!(p, TlsPolicy::Encrypt | TlsPolicy::Verify))
        {
            return invalid("relay.tls_policy", "asks for TLS while starttls = false");
        }
        if let Err(problem) = r.bounce_classifier() {
            return invalid("relay.bounce_rules", problem);
        }
        if let Some(host) = &r.smarthost {
            if let Err(problem) = crate::relay::route::parse_host_port(host) {
                return invalid("relay.smarthost", problem);
            }
        }
        for (domain, target) in &r.routes {
            if let Err(problem) = crate::relay::route::parse_host_port(target) {
                return invalid("relay.routes", format!("{domain}: {problem}"));
            }
        }
        let p = &self.pop3;
        if p.max_connections_per_shard == 0 {
            return invalid("pop3.max_connections_per_shard", "must be at least 1");
        }
        if p.idle_timeout_secs < 600 {
            return invalid(
                "pop3.idle_timeout_secs",
                "must be at least 600 (RFC 1939 §3: ten minutes)",
            );
        }
        if p.max_errors == 0 {
            return invalid("pop3.max_errors", "must be at least 1");
        }
        if self.submission.auth_failure_delay_secs > 60 {
            return invalid("submission.auth_failure_delay_secs", "must be at most 60");
        }
        if p.auth_failure_delay_secs > 60 {
            return invalid("pop3.auth_failure_delay_secs", "must be at most 60");
        }
        if p.login_timeout_secs == 0 {
            return invalid("pop3.login_timeout_secs", "must be at least 1");
        }
        let m = &self.managesieve;
        none_zero(
            &[
                (
                    "managesieve.max_connections_per_shard",
                    m.max_connections_per_shard as u64,
                ),
                ("managesieve.idle_timeout_secs", m.idle_timeout_secs),
                ("managesieve.max_errors", m.max_errors as u64),
                ("managesieve.login_timeout_secs", m.login_timeout_secs),
            ],
            "must be at least 1",
        )?;
        if m.auth_failure_delay_secs > 60 {
            return invalid("managesieve.auth_failure_delay_secs", "must be at most 60");
        }
        if self.lmtp.max_connections_per_shard == 0 {
            return invalid("lmtp.max_connections_per_shard", "must be at least 1");
        }
        if let Some(both) = self
            .feedback
            .domains
            .iter()
            .find(|d| self.is_local_domain(d))
        {
            return invalid(
                "feedback.domains",
                format!("{both} is a local domain: its mail goes into mailboxes, reports are read elsewhere"),
            );
        }
        if !self.srs.domain.is_empty() && !self.is_local_domain(&self.srs.domain) {
            return invalid(
                "srs.domain",
                "must be hostname or one of smtp.local_domains (bounces to it must be taken)",
            );
        }
        let i = &self.imap;
        none_zero(
            &[
                ("imap.login_timeout_secs", i.login_timeout_secs),
                (
                    "imap.max_sessions_per_account",
                    i.max_sessions_per_account as u64,
                ),
            ],
            "must be at least 1",
        )?;
        if self.submission.login_timeout_secs == 0 {
            return invalid("submission.login_timeout_secs", "must be at least 1");
        }
        if self.tls.handshake_timeout_secs == 0 {
            return invalid("tls.handshake_timeout_secs", "must be at least 1");
        }
        if self.limits.session_memory_mb < 4 {
            return invalid(
                "limits.session_memory_mb",
                "must be at least 4 (MiB per shard)",
            );
        }
        none_zero(
            &[
                ("limits.auth_window_secs", self.limits.auth_window_secs),
                ("limits.lockout_secs", self.limits.lockout_secs),
            ],
            "the failure window and the lockout must be at least 1 second",
        )?;
        // 0 would turn password-guessing lockouts off altogether.
        if self.limits.auth_failures_per_ip == 0 || self.limits.auth_failures_per_account == 0 {
            let key = match self.limits.auth_failures_per_ip {
                0 => "limits.auth_failures_per_ip",
                _ => "limits.auth_failures_per_account",
            };
            return invalid(
                key,
                "auth_failures_per_ip and auth_failures_per_account must be at least 1 \
                 (0 would allow unlimited password guessing)",
            );
        }
        if s.max_rejected_recipients == 0 {
            return invalid("smtp.max_rejected_recipients", "must be at least 1");
        }
        none_zero(
            &[
                (
                    "imap.max_connections_per_shard",
                    i.max_connections_per_shard as u64,
                ),
                ("imap.max_errors", i.max_errors as u64),
            ],
            "connection and error limits must be at least 1",
        )?;
        if i.idle_timeout_secs < 1800 {
            return invalid(
                "imap.idle_timeout_secs",
                "must be at least 1800 (RFC 9051 §5.4: thirty minutes)",
            );
        }
        if i.max_command_size < 64 * 1024 {
            return invalid("imap.max_command_size", "must be at least 65536");
        }
        if i.auth_failure_delay_secs > 60 {
            return invalid("imap.auth_failure_delay_secs", "must be at most 60");
        }
        let sub = &self.submission;
        let tls = self.tls.enabled;
        let listeners = [
            ("smtp.listen", Some(s.listen)),
            ("submission.listen", sub.enabled.then_some(sub.listen)),
            (
                "submission.tls_listen",
                sub.tls_listen.filter(|_| sub.enabled && tls),
            ),
            ("pop3.listen", p.enabled.then_some(p.listen)),
            ("pop3.tls_listen", p.tls_listen.filter(|_| p.enabled && tls)),
            ("imap.listen", i.enabled.then_some(i.listen)),
            ("imap.tls_listen", i.tls_listen.filter(|_| i.enabled && tls)),
            (
                "managesieve.listen",
                self.managesieve.enabled.then_some(self.managesieve.listen),
            ),
            ("lmtp.listen", self.lmtp.enabled.then_some(self.lmtp.listen)),
            ("metrics.listen", self.metrics.listen),
        ];
        for (i, (key, addr)) in listeners.iter().enumerate() {
            let Some(addr) = addr.filter(|a| a.port() != 0) else {
                continue;
            };
            // A wildcard address takes its port on every address of its
            // family ([::] on both, dual-stack), so the bind would fail.
            let covers = |wide: SocketAddr, other: SocketAddr| {
                wide.ip().is_unspecified() && (wide.is_ipv6() || other.is_ipv4())
            };
            let overlaps = |other: SocketAddr| {
                other.port() == addr.port()
                    && (other.ip() == addr.ip() || covers(other, addr) || covers(addr, other))
            };
            if let Some((other, used)) =
                listeners[..i].iter().find(|(_, a)| a.is_some_and(overlaps))
            {
                let used = used.map(|a| a.to_string()).unwrap_or_default();
                return invalid(key, format!("{addr} takes the port of {other} ({used})"));
            }
        }
        Ok(())
    }

    /// Shards to start: the configured count, or one per CPU.
    pub fn shard_count(&self) -> usize {
        match self.shards {
            0 => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            n => n,
        }
    }

    /// Whether a client at `ip` may relay to domains that are not local.
    pub fn may_relay(&self, ip: IpAddr) -> bool {
        in_networks(&self.smtp.relay_networks, ip)
    }

    /// Whether mail to `domain` is reports to read (`feedback.domains`).
    pub fn is_feedback_domain(&self, domain: &str) -> bool {
        self.feedback
            .domains
            .iter()
            .any(|d| d.eq_ignore_ascii_case(domain))
    }

    /// The domain of SRS addresses: `srs.domain`, else `hostname`.
    pub fn srs_domain(&self) -> &str {
        match self.srs.domain.is_empty() {
            true => &self.hostname,
            false => &self.srs.domain,
        }
    }

    /// Whether a client at `ip` may hand mail over by LMTP.
    pub fn may_use_lmtp(&self, ip: IpAddr) -> bool {
        in_networks(&self.lmtp.allowed_networks, ip)
    }

    /// Every listener (SMTP, submission, IMAP, POP3, their TLS ports,
    /// ManageSieve, the metrics) on `ip` with a port the OS picks: tests, side-by-side runs.
    /// Listeners that are off stay off.
    pub fn use_ephemeral_ports(&mut self, ip: IpAddr) {
        let any = SocketAddr::new(ip, 0);
        self.smtp.listen = any;
        self.submission.listen = any;
        self.submission.tls_listen = self.submission.tls_listen.map(|_| any);
        self.pop3.listen = any;
        self.pop3.tls_listen = self.pop3.tls_listen.map(|_| any);
        self.imap.listen = any;
        self.imap.tls_listen = self.imap.tls_listen.map(|_| any);
        self.managesieve.listen = any;
        self.lmtp.listen = any;
        self.metrics.listen = self.metrics.listen.map(|_| any);
    }

    /// Whether a client at `ip` may send passwords before TLS.
    pub fn plaintext_auth_allowed(&self, ip: IpAddr) -> bool {
        match self.tls.plaintext_auth {
            PlaintextAuth::Always => true,
            PlaintextAuth::Never => false,
            PlaintextAuth::Loopback => canonical(ip).is_loopback(),
        }
    }

    /// Where mail for the local `address` goes when it is no account: its
    /// alias's targets (the address itself, lowercased, or its domain's
    /// catch-all `@domain`).
    pub fn alias_targets(&self, address: &str) -> Option<&[String]> {
        let address = address.to_lowercase();
        let catch_all = address.rsplit_once('@').map(|(_, d)| format!("@{d}"));
        self.smtp
            .aliases
            .get(&address)
            .or_else(|| catch_all.and_then(|c| self.smtp.aliases.get(&c)))
            .map(Vec::as_slice)
    }

    /// The account part of a local address with a detail (`alice+news@x`
    /// is `alice@x` for the delimiter `+`); `None` without one.
    pub fn without_detail(&self, address: &str) -> Option<String> {
        ringpost_protocols::smtp::without_detail(address, &self.smtp.recipient_delimiter)
    }

    /// The addresses besides its name an account may send from under the
    /// `own` sender policy: its name with a detail, and the aliases
    /// (`smtp.aliases`, not a domain's catch-all) that lead to it.
    pub fn sender_addresses(&self) -> ringpost_protocols::smtp::SenderAddresses {
        let mut aliases = std::collections::HashMap::new();
        for (alias, targets) in &self.smtp.aliases {
            if alias.starts_with('@') {
                continue;
            }
            let accounts: Vec<String> = targets
                .iter()
                .filter(|t| crate::intake::domain_of(t).is_some_and(|d| self.is_local_domain(d)))
                .flat_map(|t| {
                    let t = t.to_lowercase();
                    let base = self.without_detail(&t);
                    std::iter::once(t).chain(base)
                })
                .collect();
            if !accounts.is_empty() {
                aliases.insert(alias.to_lowercase(), accounts);
            }
        }
        ringpost_protocols::smtp::SenderAddresses {
            delimiter: self.smtp.recipient_delimiter.clone(),
            aliases,
            is_account: None,
        }
    }

    /// The DNS blocklists of `smtp.dnsbl` (checked at start and reload).
    pub fn dnsbl_zones(&self) -> Vec<crate::dnsbl::Zone> {
        self.smtp
            .dnsbl
            .iter()
            .filter_map(|zone| crate::dnsbl::parse_zone(zone).ok())
            .collect()
    }

    /// The `From:` of DMARC aggregate reports.
    pub fn dmarc_report_from(&self) -> String {
        match self.inbound_auth.dmarc_report_from.as_str() {
            "" => format!("dmarc-noreply@{}", self.hostname),
            from => from.to_owned(),
        }
    }

    /// The organization that signs DMARC aggregate reports.
    pub fn dmarc_report_org(&self) -> &str {
        match self.inbound_auth.dmarc_report_org.as_str() {
            "" => &self.hostname,
            org => org,
        }
    }

    /// The domains [`Config::is_local_domain`] takes: the hostname, then
    /// `smtp.local_domains` (where accounts may be made).
    pub fn local_domain_list(&self) -> Vec<String> {
        let mut domains = vec![self.hostname.clone()];
        domains.extend(self.smtp.local_domains.iter().cloned());
        domains
    }

    /// Whether `domain` (any case) is one of ours: our `hostname` or one of
    /// `local_domains`. Mail for it goes into mailboxes, never to the relay.
    pub fn is_local_domain(&self, domain: &str) -> bool {
        domain.eq_ignore_ascii_case(&self.hostname)
            || self
                .smtp
                .local_domains
                .iter()
                .any(|d| d.eq_ignore_ascii_case(domain))
    }
}

/// `ip`, with an IPv4-mapped IPv6 address as the IPv4 address it maps.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// Whether `ip` is in one of `networks`.
pub fn in_networks(networks: &[IpNet], ip: IpAddr) -> bool {
    let ip = canonical(ip);
    networks.iter().any(|net| net.contains(&ip))
}

/// A listen address, or `"off"` for none.
fn optional_addr<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    let text = String::deserialize(d)?;
    if text.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|_| {
        serde::de::Error::custom(format!("`{text}` is not an address:port or \"off\""))
    })
}

/// The other way: `"off"` for none, as a file says it.
fn optional_addr_out<S: Serializer>(addr: &Option<SocketAddr>, s: S) -> Result<S::Ok, S::Error> {
    match addr {
        Some(addr) => s.collect_str(addr),
        None => s.serialize_str("off"),
    }
}

impl Config {
    /// Settings that are valid but risky on a server others can reach,
    /// each in words: `serve` logs them as warnings at start and `config
    /// check` prints them.
    pub fn cautions(&self) -> Vec<String> {
        let mut said = Vec::new();
        let reachable = |addr: &SocketAddr| !addr.ip().is_loopback();
        let login_listeners = [
            (
                "submission.listen",
                self.submission.enabled,
                self.submission.listen,
            ),
            ("imap.listen", self.imap.enabled, self.imap.listen),
            ("pop3.listen", self.pop3.enabled, self.pop3.listen),
            (
                "managesieve.listen",
                self.managesieve.enabled,
                self.managesieve.listen,
            ),
        ];
        let reached: Vec<&str> = login_listeners
            .iter()
            .filter(|(_, enabled, addr)| *enabled && reachable(addr))
            .map(|(key, _, _)| *key)
            .collect();
        if self.smtp.max_line_length < MIN_COMMAND_LINE {
            said.push(format!(
                "smtp.max_line_length = {} refuses some valid MAIL and RCPT lines (with \
                 SIZE, DSN and AUTH= parameters they may reach {MIN_COMMAND_LINE})",
                self.smtp.max_line_length
            ));
        }
        if !self.store.sync {
            said.push(
                "store.sync is off: mail is acknowledged before the write-ahead log reaches \
                 the disk, and a crash or power loss loses it; never so in production"
                    .to_owned(),
            );
        }
        if self.tls.plaintext_auth == PlaintextAuth::Always && !reached.is_empty() {
            said.push(format!(
                "tls.plaintext_auth = \"always\" with {} off loopback: passwords may cross \
                 the network in the clear",
                reached.join(", ")
            ));
        }
        if !self.tls.enabled && !reached.is_empty() {
            said.push(format!(
                "tls.enabled = false with {} off loopback: no STARTTLS, mail and logins \
                 in the clear",
                reached.join(", ")
            ));
        }
        if !self.tls.enabled && self.tls.plaintext_auth == PlaintextAuth::Never {
            said.push(
                "tls.enabled = false with tls.plaintext_auth = \"never\": no client can log in"
                    .to_owned(),
            );
        }
        if let Some(addr) = self.metrics.listen.filter(reachable) {
            let metrics = match self.admin.metrics_need_token {
                true => "",
                false => " /metrics answers anyone (admin.metrics_need_token), and",
            };
            said.push(format!(
                "metrics.listen = {addr} is off loopback:{metrics} the API's token crosses \
                 plain HTTP; keep it on loopback or behind a TLS proxy"
            ));
        }
        said
    }

    /// The configuration as TOML, every setting with its value (defaults
    /// included): what `ringpost config show` prints.
    pub fn to_toml(&self) -> Result<String, String> {
        toml::to_string(&self.without_secrets()).map_err(|e| e.to_string())
    }

    /// This configuration as it may be shown (`config show`, `GET
    /// /api/v1/config`): the webhooks' `authorization` credentials say
    /// only that they are set, so whoever reads it cannot post as this
    /// server.
    pub fn without_secrets(&self) -> Config {
        let hide = |secret: &mut Option<String>| {
            if secret.is_some() {
                *secret = Some(SECRET_SHOWN_AS.to_owned());
            }
        };
        let mut shown = self.clone();
        hide(&mut shown.webhook.authorization);
        for endpoint in &mut shown.webhook.endpoints {
            hide(&mut endpoint.authorization);
        }
        shown
    }
}

/// What stands for a secret in a configuration shown.
pub const SECRET_SHOWN_AS: &str = "(set; not shown)";

fn default_hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty() && !s.contains(char::is_whitespace))
        .unwrap_or_else(|| "localhost".to_owned())
}

/// A `relay.tls_policy` key written with non-ASCII labels, in the ASCII
/// form destinations are matched in (`.parent` keys keep their dot).
fn ascii_policy_key(key: &str) -> String {
    use crate::relay::resolver::ascii_domain;
    match key.strip_prefix('.') {
        Some(parent) => format!(".{}", ascii_domain(parent)),
        None => ascii_domain(key),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_control_plane_can_be_turned_off() {
        let config = Config::parse("[metrics]\nlisten = \"off\"\n").unwrap();
        assert_eq!(config.metrics.listen, None);
        assert!(config.to_toml().unwrap().contains("listen = \"off\""));
        let config = Config::parse("[metrics]\nlisten = \"127.0.0.1:9191\"\n").unwrap();
        assert_eq!(
            config.metrics.listen,
            Some("127.0.0.1:9191".parse().unwrap())
        );
    }

    #[test]
    fn a_configuration_shown_keeps_webhook_credentials_secret() {
        let mut config = Config::default();
        config.webhook.url = Some("https://hooks.test/in".into());
        config.webhook.authorization = Some("Bearer hunter2".into());
        config.webhook.endpoints.push(WebhookEndpoint {
            name: "crm".into(),
            url: "https://crm.test/in".into(),
            authorization: Some("Basic c2VjcmV0".into()),
            events: Vec::new(),
        });
        let shown = config.to_toml().unwrap();
        assert!(
            !shown.contains("hunter2") && !shown.contains("c2VjcmV0"),
            "{shown}"
        );
        assert_eq!(shown.matches(SECRET_SHOWN_AS).count(), 2, "{shown}");
        let json = serde_json::to_value(config.without_secrets()).unwrap();
        assert_eq!(json["webhook"]["authorization"], SECRET_SHOWN_AS);
        assert_eq!(json["webhook"]["url"], "https://hooks.test/in");
        // Unset stays unset; the configuration in force keeps its secret.
        let plain = Config::default().without_secrets();
        assert!(plain.webhook.authorization.is_none());
        assert_eq!(
            config.webhook.authorization.as_deref(),
            Some("Bearer hunter2")
        );
    }

    #[test]
    fn tls_policy_by_domain_and_parent() {
        let mut relay = RelayConfig::default();
        assert_eq!(relay.tls_policy_for("any.test"), TlsPolicy::May);
        relay.verify_certificates = true;
        assert_eq!(relay.tls_policy_for("any.test"), TlsPolicy::Verify);
        relay
            .tls_policy
            .insert("Bank.Example".into(), TlsPolicy::Encrypt);
        relay.tls_policy.insert(".example".into(), TlsPolicy::None);
        assert_eq!(relay.tls_policy_for("bank.example"), TlsPolicy::Encrypt);
        assert_eq!(relay.tls_policy_for("mx.shop.example."), TlsPolicy::None);
        assert_eq!(relay.tls_policy_for("example"), TlsPolicy::Verify);
        // Destinations come in A-labels; a key may be written either way.
        relay
            .tls_policy
            .insert("Bücher.test".into(), TlsPolicy::Encrypt);
        relay
            .tls_policy
            .insert(".straße.test".into(), TlsPolicy::None);
        assert_eq!(
            relay.tls_policy_for("xn--bcher-kva.test"),
            TlsPolicy::Encrypt
        );
        assert_eq!(
            relay.tls_policy_for(&crate::relay::resolver::ascii_domain("mx.straße.test")),
            TlsPolicy::None
        );
        let text = Config::parse(
            "[relay]\nstarttls = false\n[relay.tls_policy]\n\"a.test\" = \"verify\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(text.contains("relay.tls_policy"), "{text}");
        let ok =
            Config::parse("[relay.tls_policy]\n\"a.test\" = \"encrypt\"\n\".b.test\" = \"none\"\n")
                .unwrap();
        assert_eq!(ok.relay.tls_policy_for("x.b.test"), TlsPolicy::None);
    }

    #[test]
    fn empty_file_gives_defaults() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.smtp.listen, "127.0.0.1:2525".parse().unwrap());
        assert_eq!(c.metrics.listen, Some("127.0.0.1:9090".parse().unwrap()));
        assert_eq!(c.data_dir, PathBuf::from("./ringpost-data"));
        assert_eq!(c.store.engine, StoreEngine::Rocksdb);
    }

    #[test]
    fn overrides_apply() {
        let c = Config::parse(
            "shards = 3\n[smtp]\nlisten = \"127.0.0.1:2626\"\nlocal_domains = [\"Example.Test\"]\n[store]\nengine = \"memory\"\n",
        )
        .unwrap();
        assert_eq!(c.shard_count(), 3);
        assert_eq!(c.smtp.listen.port(), 2626);
        assert!(c.is_local_domain("example.test"));
        assert_eq!(c.store.engine, StoreEngine::Memory);
    }

    #[test]
    fn aliases_are_checked() {
        let c = Config::parse(
            "[smtp]\nlocal_domains = [\"ours.test\"]\n[smtp.aliases]\n\"info@ours.test\" = [\"a@ours.test\", \"b@far.test\"]\n\"@ours.test\" = [\"a@ours.test\"]\n",
        )
        .unwrap();
        assert_eq!(c.alias_targets("INFO@ours.test").unwrap().len(), 2);
        assert_eq!(c.alias_targets("who@ours.test").unwrap(), ["a@ours.test"]);
        assert_eq!(
            c.without_detail("a+b+c@ours.test").as_deref(),
            Some("a@ours.test")
        );
        assert_eq!(c.without_detail("+b@ours.test"), None);
        for (aliases, problem) in [
            (
                "\"info@far.test\" = [\"a@ours.test\"]",
                "not a local domain",
            ),
            ("\"Info@ours.test\" = [\"a@ours.test\"]", "lowercase"),
            ("\"info\" = [\"a@ours.test\"]", "neither an address"),
            ("\"info@ours.test\" = []", "goes nowhere"),
            (
                "\"info@ours.test\" = [\"not an address\"]",
                "is not an address",
            ),
        ] {
            let text = Config::parse(&format!(
                "[smtp]\nlocal_domains = [\"ours.test\"]\n[smtp.aliases]\n{aliases}\n"
            ))
            .unwrap_err()
            .to_string();
            assert!(text.contains(problem), "{aliases}: {text}");
        }
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let err =
            Config::parse("shards = 1\n[smtp]\nlisten = \"127.0.0.1:1\"\nmax_mesage_size = 5\n")
                .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("max_mesage_size"), "{text}");
        assert!(text.contains("line 4"), "{text}");
    }

    #[test]
    fn wrong_type_is_named() {
        let text = Config::parse("[smtp]\nmax_recipients = \"many\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            text.contains("line 2") && text.contains("max_recipients"),
            "{text}"
        );
    }

    #[test]
    fn webhook_and_injection_settings_are_checked() {
        for (toml, key) in [
            ("[webhook]\nurl = \"ftp://x.test/\"\n", "webhook.url"),
            ("[webhook]\nurl = \"not a url\"\n", "webhook.url"),
            ("[webhook]\nbatch_size = 0\n", "webhook.batch_size"),
            (
                "[admin]\ninject_max_recipients = 0\n",
                "admin.inject_max_recipients",
            ),
            (
                "[admin]\ninject_max_request_bytes = 10\n",
                "admin.inject_max_request_bytes",
            ),
        ] {
            let text = Config::parse(toml).unwrap_err().to_string();
            assert!(text.starts_with(key), "{toml}: {text}");
        }
        let ok = Config::parse("[webhook]\nurl = \"https://hooks.example.com/ringpost?x=1\"\n");
        assert!(ok.is_ok(), "{ok:?}");
        let endpoint = |fields: &str| format!("[[webhook.endpoints]]\n{fields}\n");
        for fields in [
            "name = \"default\"\nurl = \"http://a.test/\"",
            "name = \"A b\"\nurl = \"http://a.test/\"",
            "name = \"crm\"\nurl = \"ftp://a.test/\"",
            "name = \"crm\"\nurl = \"http://a.test/\"\nevents = [\"opened\"]",
        ] {
            let text = Config::parse(&endpoint(fields)).unwrap_err().to_string();
            assert!(text.starts_with("webhook.endpoints"), "{fields}: {text}");
        }
        let twice = endpoint("name = \"crm\"\nurl = \"http://a.test/\"").repeat(2);
        assert!(Config::parse(&twice).is_err());
        let c = Config::parse(&endpoint(
            "name = \"crm\"\nurl = \"http://a.test/\"\nevents = [\"bounced\"]",
        ))
        .unwrap();
        assert!(c.webhook.enabled() && c.webhook.url.is_none());
    }

    #[test]
    fn bad_address_is_rejected() {
        let text = Config::parse("[smtp]\nlisten = \"nowhere\"\n")
            .unwrap_err()
            .to_string();
        assert!(text.contains("listen"), "{text}");
    }

    #[test]
    fn out_of_range_values_name_their_key() {
        let text = Config::parse("[smtp]\nmax_line_length = 100\n")
            .unwrap_err()
            .to_string();
        assert!(text.starts_with("smtp.max_line_length:"), "{text}");
        let text = Config::parse("[metrics]\nlisten = \"127.0.0.1:2525\"\n")
            .unwrap_err()
            .to_string();
        assert!(text.starts_with("metrics.listen:"), "{text}");
        let text = Config::parse("[pop3]\nlisten = \"127.0.0.1:2525\"\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            text,
            "pop3.listen: 127.0.0.1:2525 takes the port of smtp.listen (127.0.0.1:2525)"
        );
        // A wildcard takes its port on every address: [::] on both families.
        for (a, b, clash) in [
            ("0.0.0.0:2525", "127.0.0.1:2525", true),
            ("[::]:2525", "127.0.0.1:2525", true),
            ("0.0.0.0:2525", "[::]:2525", true),
            ("0.0.0.0:2525", "[::1]:2525", false),
            ("0.0.0.0:2525", "127.0.0.1:2526", false),
        ] {
            let toml = format!("[smtp]\nlisten = \"{a}\"\n[pop3]\nlisten = \"{b}\"\n");
            assert_eq!(Config::parse(&toml).is_err(), clash, "{a} {b}");
        }
        let text = Config::parse("[pop3]\nidle_timeout_secs = 60\n")
            .unwrap_err()
            .to_string();
        assert!(text.starts_with("pop3.idle_timeout_secs:"), "{text}");
        // Port 0 never clashes, and a POP3 that is off clashes with nothing.
        let c =
            Config::parse("[pop3]\nlisten = \"127.0.0.1:0\"\n[smtp]\nlisten = \"127.0.0.1:0\"\n")
                .unwrap();
        assert_eq!(c.pop3.listen, "127.0.0.1:0".parse().unwrap());
        let c = Config::parse("[pop3]\nenabled = false\nlisten = \"127.0.0.1:2525\"\n").unwrap();
        assert!(!c.pop3.enabled);
    }

    #[test]
    fn relay_section_parses_and_checks_routes() {
        let c = Config::parse(
            "[relay]\nmx_port = 2626\nnameservers = [\"127.0.0.1:5353\"]\n[relay.routes]\n\"a.test\" = \"127.0.0.1:2700\"\n",
        )
        .unwrap();
        assert_eq!(c.relay.mx_port, 2626);
        assert_eq!(c.relay.routes["a.test"], "127.0.0.1:2700");
        let text = Config::parse("[relay.routes]\n\"a.test\" = \"nowhere\"\n")
            .unwrap_err()
            .to_string();
        assert!(text.starts_with("relay.routes: a.test:"), "{text}");
        let text = Config::parse("[relay]\nretry_initial_secs = 10\nretry_max_secs = 5\n")
            .unwrap_err()
            .to_string();
        assert!(text.starts_with("relay.retry_max_secs:"), "{text}");
        // Values that would switch a protection off, or cannot work; each
        // error names the setting that is wrong, not a neighbour of it.
        for (toml, key) in [
            ("[relay]\ndns_timeout_secs = 0\n", "relay.dns_timeout_secs:"),
            ("[smtp]\ndata_timeout_secs = 0\n", "smtp.data_timeout_secs:"),
            (
                "[relay]\nmax_messages_per_connection = 0\n",
                "relay.max_messages_per_connection:",
            ),
            (
                "[imap]\nmax_sessions_per_account = 0\n",
                "imap.max_sessions_per_account:",
            ),
            ("[limits]\nlockout_secs = 0\n", "limits.lockout_secs:"),
            (
                "[limits]\nauth_failures_per_account = 0\n",
                "limits.auth_failures_per_account:",
            ),
            (
                "[relay]\nretry_initial_secs = 0\n",
                "relay.retry_initial_secs:",
            ),
            ("[webhook]\nretry_max_secs = 0\n", "webhook.retry_max_secs:"),
            ("[imap]\nmax_errors = 0\n", "imap.max_errors:"),
            (
                "[inbound_auth]\ndmarc_report_interval_secs = 0\n",
                "inbound_auth.dmarc_report_interval_secs:",
            ),
            (
                "[inbound_auth]\ndmarc_report_from = \"nobody\"\n",
                "inbound_auth.dmarc_report_from:",
            ),
            (
                "[relay]\nmax_lifetime_secs = 0\n",
                "relay.max_lifetime_secs:",
            ),
            (
                "[limits]\nauth_failures_per_ip = 0\n",
                "limits.auth_failures_per_ip:",
            ),
        ] {
            let text = Config::parse(toml).unwrap_err().to_string();
            assert!(text.starts_with(key), "{toml}: {text}");
        }
    }

    #[test]
    fn risky_settings_are_cautioned_and_plain_relaying_under_verify_refused() {
        assert_eq!(Config::default().cautions(), Vec::<String>::new());
        let exposed = Config::parse(
            "[tls]\nplaintext_auth = \"always\"\n[submission]\nlisten = \"0.0.0.0:587\"\n\
             [metrics]\nlisten = \"0.0.0.0:9090\"\n",
        )
        .unwrap()
        .cautions();
        assert_eq!(exposed.len(), 2, "{exposed:?}");
        assert!(exposed[0].contains("submission.listen"), "{exposed:?}");
        assert!(
            exposed[1].contains("/metrics answers anyone"),
            "{exposed:?}"
        );
        let locked = Config::parse("[tls]\nenabled = false\nplaintext_auth = \"never\"\n")
            .unwrap()
            .cautions();
        assert!(locked[0].contains("no client can log in"), "{locked:?}");
        let text = Config::parse("[relay]\nstarttls = false\nverify_certificates = true\n")
            .unwrap_err()
            .to_string();
        assert!(text.starts_with("relay.verify_certificates:"), "{text}");
    }

    #[test]
    fn pools_and_shaping_rules_are_checked() {
        let sources = "[[relay.sources]]\naddress = \"192.0.2.1\"\n[[relay.sources]]\naddress = \"192.0.2.2\"\n";
        let pools = format!(
            "{sources}[relay]\ndefault_pool = \"main\"\n[[relay.pools]]\nname = \"main\"\nsources = [\"192.0.2.1\"]\n[[relay.pools]]\nname = \"bulk\"\nsources = [\"192.0.2.2\"]\nsenders = [\"news.example.com\", \".lists.example.com\"]\n"
        );
        let c = Config::parse(&pools).unwrap();
        assert_eq!(c.relay.pool_for("a@News.Example.com"), Some("bulk"));
        assert_eq!(c.relay.pool_for("a@x.lists.example.com"), Some("bulk"));
        assert_eq!(c.relay.pool_for("a@example.com"), Some("main"));
        assert_eq!(c.relay.pool_for(""), Some("main"));
        for (toml, key) in [
            (
                format!("{sources}[[relay.pools]]\nname = \"x\"\nsources = [\"192.0.2.9\"]\n"),
                "relay.pools",
            ),
            (
                format!(
                    "{sources}[[relay.pools]]\nname = \"Bad Name\"\nsources = [\"192.0.2.1\"]\n"
                ),
                "relay.pools",
            ),
            (
                "[relay]\ndefault_pool = \"none\"\n".to_owned(),
                "relay.default_pool",
            ),
            (
                "[[relay.shaping]]\nmax_connections = 2\n".to_owned(),
                "relay.shaping",
            ),
            (
                "[[relay.shaping]]\nsite = \"a\"\ndomain = \"b\"\n".to_owned(),
                "relay.shaping",
            ),
            (
                "[[relay.shaping]]\nsite = \"a\"\nmessages_per_second = 0.0\n".to_owned(),
                "relay.shaping",
            ),
            (
                "[[relay.shaping]]\nsite = \"a\"\nmax_connections = 0\n".to_owned(),
                "relay.shaping",
            ),
        ] {
            let text = Config::parse(&toml).unwrap_err().to_string();
            assert!(text.starts_with(key), "{toml}: {text}");
        }
    }

    #[test]
    fn the_readme_examples_are_valid() {
        let readme = include_str!("../../README.md");
        let mut examples = Vec::new();
        let mut rest = readme;
        while let Some(start) = rest.find("```toml\n") {
            let body = &rest[start + 8..];
            let end = body.find("```").expect("a TOML example ends");
            examples.push(Config::parse(&body[..end]).unwrap());
            rest = &body[end..];
        }
        assert!(examples.len() >= 2, "{} examples", examples.len());
        let full = examples
            .iter()
            .find(|c| !c.relay.routes.is_empty())
            .expect("the configuration example");
        assert_eq!(full.relay.routes["partner.example"], "10.1.2.3:25");
        assert_eq!(full.shard_spin_us, 0);
        assert!(full.relay.starttls && !full.relay.verify_certificates);
    }

    #[test]
    fn tls_and_submission_sections() {
        let c = Config::default();
        assert_eq!(c.submission.listen, "127.0.0.1:2587".parse().unwrap());
        assert_eq!(
            c.submission.tls_listen,
            Some("127.0.0.1:2465".parse().unwrap())
        );
        assert_eq!(c.imap.tls_listen, Some("127.0.0.1:1993".parse().unwrap()));
        assert_eq!(c.pop3.tls_listen, Some("127.0.0.1:1995".parse().unwrap()));
        assert!(c.tls.enabled && c.tls.certificates.is_empty());
        let c = Config::parse(
            "[imap]\ntls_listen = \"off\"\n[submission]\nsender_policy = \"domain\"\n\
             [tls]\nplaintext_auth = \"never\"\n[[tls.certificates]]\ncert = \"/a.pem\"\nkey = \"/a.key\"\n",
        )
        .unwrap();
        assert_eq!(c.imap.tls_listen, None);
        assert_eq!(c.submission.sender_policy, SenderPolicyConfig::Domain);
        assert_eq!(c.tls.certificates[0].key, PathBuf::from("/a.key"));
        assert!(!c.plaintext_auth_allowed("127.0.0.1".parse().unwrap()));
        let text = Config::parse("[pop3]\ntls_listen = \"nowhere\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            text.contains("nowhere") && text.contains("line 2"),
            "{text}"
        );
        // Two listeners on one port are refused, TLS ones included.
        let text = Config::parse("[imap]\ntls_listen = \"127.0.0.1:2525\"\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            text,
            "imap.tls_listen: 127.0.0.1:2525 takes the port of smtp.listen (127.0.0.1:2525)"
        );
    }

    #[test]
    fn plaintext_passwords_only_from_loopback_by_default() {
        let c = Config::default();
        assert!(c.plaintext_auth_allowed("127.0.0.1".parse().unwrap()));
        assert!(c.plaintext_auth_allowed("::1".parse().unwrap()));
        assert!(c.plaintext_auth_allowed("::ffff:127.0.0.2".parse().unwrap()));
        assert!(!c.plaintext_auth_allowed("192.0.2.1".parse().unwrap()));
    }

    #[test]
    fn relay_networks_cover_loopback_only_by_default() {
        let c = Config::default();
        assert!(c.may_relay("127.0.0.1".parse().unwrap()));
        assert!(c.may_relay("::1".parse().unwrap()));
        assert!(c.may_relay("::ffff:127.0.0.9".parse().unwrap()));
        assert!(!c.may_relay("192.0.2.1".parse().unwrap()));
    }

    /// The aliases that lead to local accounts are their senders' own;
    /// a catch-all and remote targets give no one anything.
    #[test]
    fn sender_addresses_come_from_the_alias_table() {
        let mut c = Config::default();
        c.smtp.local_domains = vec!["ours.test".into()];
        c.smtp.aliases = [
            (
                "info@ours.test",
                vec!["Alice+Info@ours.test", "bob@far.test"],
            ),
            ("@ours.test", vec!["alice@ours.test"]),
            ("out@ours.test", vec!["carol@far.test"]),
        ]
        .into_iter()
        .map(|(a, t)| (a.to_owned(), t.into_iter().map(str::to_owned).collect()))
        .collect();
        let owned = c.sender_addresses();
        assert_eq!(owned.delimiter, "+");
        assert_eq!(
            owned.aliases,
            [(
                "info@ours.test".to_owned(),
                vec![
                    "alice+info@ours.test".to_owned(),
                    "alice@ours.test".to_owned()
                ]
            )]
            .into()
        );
    }
}
