//! MX resolution for outbound delivery.
//!
//! Shards run on glommio and must never block, while hickory-resolver wants
//! tokio. So DNS lives on one small std thread ([`ResolverThread`]) that hosts
//! a tokio current-thread runtime and one hickory resolver (with its cache).
//! A shard holds a cheap [`Resolver`] handle: [`Resolver::mx`] sends the
//! request over a bounded flume channel and awaits the answer on a
//! `futures::channel::oneshot`, both of which work from any executor.
//!
//! Every request runs as its own task on the DNS thread, so slow domains do
//! not hold up fast ones; at most [`MAX_IN_FLIGHT`] run at once, and callers
//! beyond that wait (asynchronously) for room in the channel.
//!
//! The answer is an [`MxLookup`]: either the hosts to try, in order (RFC 5321
//! §5.1: MX by preference, random among equals, else the implicit MX), or a
//! failure already sorted into permanent and temporary, with its enhanced
//! status code. This module never connects to a mail host; it only says where
//! to go.

use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use futures::channel::oneshot;
use futures::future::{self, Either};
use hickory_resolver::config::{
    NameServerConfig, NameServerConfigGroup, ResolveHosts, ResolverConfig as HickoryConfig,
    ResolverOpts,
};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::proto::ProtoErrorKind;
use hickory_resolver::{Name, ResolveError, TokioResolver};
use tokio::sync::Semaphore;

use super::dane::{self, DaneLookup};
use super::mta_sts::Policy;

/// Most lookups running at once on the DNS thread; also the request channel's
/// capacity. A caller past this waits for room instead of growing a queue.
pub const MAX_IN_FLIGHT: usize = 4096;

/// Most record lookups (for SPF, DKIM and DMARC of inbound mail) running
/// at once: a share of [`MAX_IN_FLIGHT`], so that a flood of inbound
/// checks leaves the relay's MX lookups room.
pub const MAX_RECORD_LOOKUPS: usize = MAX_IN_FLIGHT / 4;

/// Most MX hosts of one domain whose addresses are looked up. A domain with
/// more (rare, and never useful to a sender) must not fan one request out into
/// hundreds of queries; the hosts past the cut are the least preferred.
pub const MAX_MX_HOSTS: usize = 16;

/// How the DNS thread finds and queries name servers.
#[derive(Debug, Clone)]
pub struct ResolverConfig {
    /// Recursive name servers, each asked over UDP (TCP when a reply is
    /// truncated). Empty means the ones in the system's `/etc/resolv.conf`.
    pub nameservers: Vec<SocketAddr>,
    /// How long to wait for one reply from one server.
    pub timeout: Duration,
    /// How many times one query is sent before giving up (at least 1); like
    /// resolv.conf's `attempts`, this counts the first try.
    pub attempts: usize,
    /// Records kept in the resolver's cache (positive and negative answers,
    /// each kept for its TTL).
    pub cache_size: usize,
    /// MTA-STS policy fetches (RFC 8461), when on: the TLS settings of
    /// the HTTPS client and the port (443; tests change it).
    pub mta_sts: Option<MtaStsSetup>,
}

impl Default for ResolverConfig {
    fn default() -> Self {
        Self {
            nameservers: Vec::new(),
            timeout: Duration::from_secs(5),
            attempts: 2,
            cache_size: 4096,
            mta_sts: None,
        }
    }
}

/// One mail host to try, with the addresses to connect to.
#[derive(Debug, Clone, PartialEq)]
pub struct MxHost {
    /// The host's name, lowercase and without a trailing dot (the domain
    /// itself for an implicit MX; the bracketed literal for an address
    /// literal).
    pub name: String,
    /// The MX preference (0 for an implicit MX or an address literal).
    pub preference: u16,
    /// IPv4 addresses first, then IPv6, each in the order the server gave.
    /// Never empty.
    pub addrs: Vec<IpAddr>,
}

/// How the DNS thread fetches MTA-STS policies.
#[derive(Debug, Clone)]
pub struct MtaStsSetup {
    /// Trust for `https://mta-sts.DOMAIN/`.
    pub tls: Arc<rustls::ClientConfig>,
    /// The port of that server (443).
    pub port: u16,
}

/// The answer to "where does mail for this domain go?".
#[derive(Debug, Clone, PartialEq)]
pub enum MxLookup {
    /// Hosts in the order to try: preference ascending, shuffled among equal
    /// preference. Hosts whose addresses could not be found are left out. No
    /// MX records but A/AAAA records (the implicit MX, RFC 5321 §5.1) gives
    /// one host: the domain itself, preference 0. Never empty.
    Hosts(Vec<MxHost>),
    /// RFC 7505 null MX (a lone MX record whose exchange is "."): the domain
    /// accepts no mail. Permanent, 5.1.10.
    NullMx,
    /// The domain does not exist (NXDOMAIN), or the name is not a valid
    /// domain or address literal. Permanent, 5.1.2.
    NoSuchDomain,
    /// The domain exists but has neither MX nor A/AAAA records, or none of
    /// its MX hosts has an address. Permanent, 5.4.4.
    NoAddress(String),
    /// SERVFAIL, REFUSED, a timeout or a network error, or some MX hosts
    /// failing temporarily while none resolved. Retry later, 4.4.3.
    TempFail(String),
}

impl MxLookup {
    /// The enhanced status code (RFC 3463) for a failed lookup; `None` for
    /// [`MxLookup::Hosts`]. Codes starting with 5 are permanent, 4 temporary.
    pub fn status(&self) -> Option<&'static str> {
        match self {
            MxLookup::Hosts(_) => None,
            MxLookup::NullMx => Some("5.1.10"),
            MxLookup::NoSuchDomain => Some("5.1.2"),
            MxLookup::NoAddress(_) => Some("5.4.4"),
            MxLookup::TempFail(_) => Some("4.4.3"),
        }
    }
}

/// One lookup on its way to the DNS thread.
enum Request {
    /// Where mail for a domain goes.
    Mx {
        /// Lowercase and fully qualified, so hickory applies no search list.
        domain: Name,
        /// Where the answer goes (and whether it came from the answer
        /// cache); dropped unanswered if the thread stops.
        reply: oneshot::Sender<(MxLookup, bool)>,
    },
    /// A domain's MTA-STS policy.
    MtaSts {
        /// The domain, lowercase.
        domain: String,
        /// Where the policy goes (None: the domain has none we can use).
        reply: oneshot::Sender<Option<Policy>>,
    },
    /// A domain's DANE verdict (RFC 7672) for mail to `port`.
    Dane {
        /// Lowercase and fully qualified.
        domain: Name,
        /// The SMTP port the TLSA records are for (25).
        port: u16,
        /// Where the verdict goes.
        reply: oneshot::Sender<DaneLookup>,
    },
    /// Plain records of one type (SPF's TXT, A, AAAA and MX lookups).
    Records {
        /// Fully qualified.
        name: Name,
        /// Which records.
        kind: RecordKind,
        /// Where the answer goes.
        reply: oneshot::Sender<Records>,
    },
}

/// The record types [`Resolver::records`] looks up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    /// TXT, each record's strings joined.
    Txt,
    /// A.
    A,
    /// AAAA.
    Aaaa,
    /// MX: the exchanges' names, by preference.
    Mx,
}

/// The records found, as text (TXT data, addresses, exchange names).
pub type Records = Result<Vec<String>, LookupFailure>;

/// Why a lookup of records found none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookupFailure {
    /// The name does not exist (NXDOMAIN), or has no records of the type.
    None,
    /// SERVFAIL, a timeout, a network error: maybe later.
    Temporary(String),
}

/// A handle to the DNS thread; cheap to clone, one per shard or task.
#[derive(Debug, Clone)]
pub struct Resolver {
    requests: flume::Sender<Request>,
    metrics: Option<crate::metrics::DnsMetrics>,
}

impl Resolver {
    /// Finds the hosts to deliver mail for `domain` to.
    ///
    /// `domain` is a domain name (any case, trailing dot allowed) or an
    /// address literal such as `[192.0.2.1]` or `[IPv6:2001:db8::1]`, which is
    /// answered at once without DNS. The future is runtime-agnostic: it only
    /// awaits channels, so a glommio task can await it. It waits for room when
    /// [`MAX_IN_FLIGHT`] lookups are already running, and gives
    /// [`MxLookup::TempFail`] if the DNS thread has stopped.
    pub async fn mx(&self, domain: &str) -> MxLookup {
        self.lookup(domain).await.0
    }

    /// [`Resolver::mx`], and whether the answer came from the DNS thread's
    /// answer cache.
    pub async fn lookup(&self, domain: &str) -> (MxLookup, bool) {
        let started = std::time::Instant::now();
        let (answer, cached) = self.ask(domain).await;
        if let Some(metrics) = &self.metrics {
            let result = match &answer {
                MxLookup::Hosts(_) => "ok",
                MxLookup::NullMx => "null_mx",
                MxLookup::NoSuchDomain => "nxdomain",
                MxLookup::NoAddress(_) => "no_address",
                MxLookup::TempFail(_) => "temp_fail",
            };
            metrics.lookup(result, started.elapsed(), cached);
        }
        (answer, cached)
    }

    /// The same, counted (lookups by result, and how long they took).
    pub fn with_metrics(self, metrics: crate::metrics::DnsMetrics) -> Resolver {
        Resolver {
            metrics: Some(metrics),
            ..self
        }
    }

    async fn ask(&self, domain: &str) -> (MxLookup, bool) {
        let domain = match parse_target(domain) {
            Target::Name(name) => name,
            Target::Literal(text, ip) => {
                let host = MxHost {
                    name: text,
                    preference: 0,
                    addrs: vec![ip],
                };
                return (MxLookup::Hosts(vec![host]), false);
            }
            Target::Invalid => return (MxLookup::NoSuchDomain, false),
        };
        let (reply, answer) = oneshot::channel();
        if self
            .requests
            .send_async(Request::Mx { domain, reply })
            .await
            .is_err()
        {
            return (stopped(), false);
        }
        // Canceled means the thread stopped with this request queued or running.
        answer.await.unwrap_or_else(|_| (stopped(), false))
    }

    /// `domain`'s MTA-STS policy (RFC 8461), from the cache or fetched;
    /// None when it has none, it cannot be had, or MTA-STS is off.
    pub async fn mta_sts(&self, domain: &str) -> Option<Policy> {
        let (reply, answer) = oneshot::channel();
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        self.requests
            .send_async(Request::MtaSts { domain, reply })
            .await
            .ok()?;
        answer.await.ok().flatten()
    }

    /// `domain`'s DANE verdict for mail to `port` (see [`super::dane`]):
    /// from the cache, or looked up with the AD bit. An address literal or
    /// an invalid name is [`DaneLookup::Insecure`]; a stopped DNS thread,
    /// [`DaneLookup::Failed`].
    pub async fn dane(&self, domain: &str, port: u16) -> DaneLookup {
        let Target::Name(domain) = parse_target(domain) else {
            return DaneLookup::Insecure;
        };
        let (reply, answer) = oneshot::channel();
        let stopped = || DaneLookup::Failed("DNS resolver stopped".into());
        let request = Request::Dane {
            domain,
            port,
            reply,
        };
        if self.requests.send_async(request).await.is_err() {
            return stopped();
        }
        answer.await.unwrap_or_else(|_| stopped())
    }

    /// The `kind` records of `name` (any case, trailing dot allowed).
    pub async fn records(&self, name: &str, kind: RecordKind) -> Records {
        let name = match Name::from_ascii(name.trim_end_matches('.')) {
            Ok(mut name) => {
                name.set_fqdn(true);
                name.to_lowercase()
            }
            Err(_) => return Err(LookupFailure::None),
        };
        let (reply, answer) = oneshot::channel();
        let stopped = || LookupFailure::Temporary("DNS resolver stopped".into());
        if self
            .requests
            .send_async(Request::Records { name, kind, reply })
            .await
            .is_err()
        {
            return Err(stopped());
        }
        answer.await.unwrap_or_else(|_| Err(stopped()))
    }
}

/// How long a policy fetch may take (RFC 8461 §3.3 suggests 60 s at most).
const FETCH_TIMEOUT: Duration = Duration::from_secs(20);

/// The MTA-STS state of the DNS thread: policies by domain, each with the
/// id it was fetched under and until when it holds.
struct StsState {
    setup: MtaStsSetup,
    policies: Mutex<std::collections::HashMap<String, (Policy, String, Instant)>>,
    capacity: usize,
}

impl StsState {
    fn policies(
        &self,
    ) -> MutexGuard<'_, std::collections::HashMap<String, (Policy, String, Instant)>> {
        self.policies.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Cache `domain`'s policy, in a cache of at most `capacity` domains.
/// A policy is the defence against a downgrade (RFC 8461 §10.2), so a new
/// one always goes in: expired ones make room first, then the one that
/// expires soonest.
fn remember<P>(
    policies: &mut std::collections::HashMap<String, (P, String, Instant)>,
    capacity: usize,
    domain: String,
    entry: (P, String, Instant),
    now: Instant,
) {
    if !policies.contains_key(&domain) && policies.len() >= capacity {
        policies.retain(|_, (_, _, until)| *until > now);
        if policies.len() >= capacity {
            let soonest = policies
                .iter()
                .min_by_key(|(_, (_, _, until))| *until)
                .map(|(name, _)| name.clone());
            if let Some(soonest) = soonest {
                policies.remove(&soonest);
            }
        }
    }
    policies.insert(domain, entry);
}

/// `domain`'s policy (RFC 8461 §3, §5): the cached one while its id is
/// still the published one (or while nothing can be read of the record),
/// else a fresh fetch, which falls back to the cached one when it fails.
async fn discover(resolver: &TokioResolver, sts: &StsState, domain: String) -> Option<Policy> {
    let name = Name::from_ascii(format!("_mta-sts.{domain}.")).ok()?;
    let records = lookup_records(resolver, name, RecordKind::Txt).await;
    let id = records.as_deref().ok().and_then(super::mta_sts::policy_id);
    let now = Instant::now();
    let cached = sts
        .policies()
        .get(&domain)
        .filter(|(_, _, until)| *until > now)
        .cloned();
    match (&id, &cached) {
        (Some(id), Some((policy, known, _))) if id == known => return Some(policy.clone()),
        (None, Some((policy, _, _))) => return Some(policy.clone()),
        (None, None) => return None,
        _ => {}
    }
    let fetched = fetch_policy(resolver, &sts.setup, &domain);
    match tokio::time::timeout(FETCH_TIMEOUT, fetched).await {
        Ok(Ok(policy)) => {
            let until = now + Duration::from_secs(policy.max_age);
            let entry = (policy.clone(), id.unwrap_or_default(), until);
            remember(&mut sts.policies(), sts.capacity, domain, entry, now);
            Some(policy)
        }
        failed => {
            let why = match failed {
                Ok(Err(why)) => why,
                _ => "no answer in time".to_owned(),
            };
            tracing::info!(%domain, error = %why, "MTA-STS policy fetch failed");
            cached.map(|(policy, _, _)| policy)
        }
    }
}

/// GET `https://mta-sts.DOMAIN/.well-known/mta-sts.txt` (RFC 8461 §3.3):
/// a 200, no redirect, at most 64 KiB.
async fn fetch_policy(
    resolver: &TokioResolver,
    setup: &MtaStsSetup,
    domain: &str,
) -> Result<Policy, String> {
    let host = format!("mta-sts.{domain}");
    // The policy host's address, from our resolver like every other name.
    let name = Name::from_ascii(format!("{host}.")).map_err(|e| format!("{host}: {e}"))?;
    let ip = match lookup_addrs(resolver, name).await.0 {
        Addrs::Found(addrs) => addrs[0],
        Addrs::None => return Err(format!("{host} has no address")),
        Addrs::Temporary(why) => return Err(format!("{host}: {why}")),
    };
    let authority = match setup.port {
        443 => host.clone(),
        port => format!("{host}:{port}"),
    };
    let uri: hyper::Uri = format!("https://{authority}/.well-known/mta-sts.txt")
        .parse()
        .map_err(|e| format!("bad policy URL: {e}"))?;
    let request = hyper::Request::get(uri.clone())
        .header(hyper::header::HOST, host)
        .header(hyper::header::USER_AGENT, "ringpost")
        .body(http_body_util::Full::new(hyper::body::Bytes::new()))
        .map_err(|e| format!("cannot build the request: {e}"))?;
    let (status, body) = crate::http_client::send_to(
        Some(SocketAddr::new(ip, setup.port)),
        &uri,
        request,
        &setup.tls,
        super::mta_sts::MAX_POLICY_BYTES,
    )
    .await?;
    if status != hyper::StatusCode::OK {
        return Err(format!("the policy server answered {status}"));
    }
    let body = body.ok_or("the policy is too large")?;
    let text = std::str::from_utf8(&body).map_err(|_| "the policy is not UTF-8".to_owned())?;
    super::mta_sts::parse_policy(text)
}

/// Look up the `kind` records of `name`.
async fn lookup_records(resolver: &TokioResolver, name: Name, kind: RecordKind) -> Records {
    let failure = |e: ResolveError| match classify(&e) {
        Failure::NoSuchName | Failure::NoRecords => LookupFailure::None,
        Failure::Temporary(why) => LookupFailure::Temporary(why),
    };
    let found: Vec<String> = match kind {
        RecordKind::Txt => resolver
            .txt_lookup(name)
            .await
            .map_err(failure)?
            .iter()
            .map(|txt| {
                txt.txt_data()
                    .iter()
                    .map(|part| String::from_utf8_lossy(part).into_owned())
                    .collect::<String>()
            })
            .collect(),
        RecordKind::A => resolver
            .ipv4_lookup(name)
            .await
            .map_err(failure)?
            .iter()
            .map(|a| a.0.to_string())
            .collect(),
        RecordKind::Aaaa => resolver
            .ipv6_lookup(name)
            .await
            .map_err(failure)?
            .iter()
            .map(|a| a.0.to_string())
            .collect(),
        RecordKind::Mx => {
            let mut mx: Vec<(u16, String)> = resolver
                .mx_lookup(name)
                .await
                .map_err(failure)?
                .iter()
                .map(|mx| (mx.preference(), display_name(mx.exchange())))
                .collect();
            mx.sort();
            mx.into_iter().map(|(_, name)| name).collect()
        }
    };
    match found.is_empty() {
        true => Err(LookupFailure::None),
        false => Ok(found),
    }
}

fn stopped() -> MxLookup {
    MxLookup::TempFail("DNS resolver stopped".into())
}

/// How long a negative answer (no such domain, null MX, no address) is
/// kept: long enough to spare a burst of mail to a dead domain the lookups,
/// short enough that a fixed domain is soon seen.
const NEGATIVE_TTL: Duration = Duration::from_secs(60);
/// No answer is kept longer than this, whatever its records' TTL.
const MAX_TTL: Duration = Duration::from_secs(3600);

/// Answers by what was asked, each until the shortest TTL of the records
/// it was made from: whole MX answers (hosts with their addresses) by
/// domain, in front of hickory's record cache, which spares a cached domain
/// three lookups and counts hits; DANE verdicts by domain and port. At most
/// `capacity` entries (expired ones go first, then any).
struct AnswerCache<K, V> {
    entries: std::collections::HashMap<K, (V, Instant)>,
    capacity: usize,
}

impl<K: std::hash::Hash + Eq + Clone, V: Clone> AnswerCache<K, V> {
    fn new(capacity: usize) -> AnswerCache<K, V> {
        AnswerCache {
            entries: std::collections::HashMap::new(),
            capacity: capacity.max(1),
        }
    }

    /// The answer to `key`, if kept and fresh.
    fn get(&mut self, key: &K, now: Instant) -> Option<V> {
        match self.entries.get(key) {
            Some((answer, until)) if *until > now => Some(answer.clone()),
            Some(_) => {
                self.entries.remove(key);
                None
            }
            None => None,
        }
    }

    fn put(&mut self, key: K, answer: V, until: Instant, now: Instant) {
        if self.entries.len() >= self.capacity {
            self.entries.retain(|_, (_, until)| *until > now);
        }
        if self.entries.len() >= self.capacity {
            if let Some(any) = self.entries.keys().next().cloned() {
                self.entries.remove(&any);
            }
        }
        self.entries.insert(key, (answer, until));
    }
}

/// Hosts stay in preference order; those of equal preference are shuffled.
fn shuffle_equal_preferences(hosts: &mut [MxHost], rng: &mut fastrand::Rng) {
    let mut start = 0;
    while start < hosts.len() {
        let preference = hosts[start].preference;
        let end = start
            + hosts[start..]
                .iter()
                .take_while(|h| h.preference == preference)
                .count();
        rng.shuffle(&mut hosts[start..end]);
        start = end;
    }
}

/// Until when an answer may be kept: `records_until` (the earliest expiry
/// of the records it was made from) for hosts, [`NEGATIVE_TTL`] for a
/// negative answer, never for a temporary failure; at most [`MAX_TTL`].
fn keep_until(answer: &MxLookup, records_until: Option<Instant>, now: Instant) -> Option<Instant> {
    let until = match answer {
        MxLookup::Hosts(_) => records_until?,
        MxLookup::NullMx | MxLookup::NoSuchDomain | MxLookup::NoAddress(_) => now + NEGATIVE_TTL,
        MxLookup::TempFail(_) => return None,
    };
    Some(until.min(now + MAX_TTL))
}

/// The DNS thread. Dropping it (or calling [`ResolverThread::shutdown`]) stops
/// the thread: lookups running or queued then answer
/// [`MxLookup::TempFail`], as do later calls on any [`Resolver`].
pub struct ResolverThread {
    /// Dropping or firing this ends the thread's serve loop.
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl ResolverThread {
    /// Stops the thread and waits for it to exit.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        if let Some(stop) = self.stop.take() {
            // The loop may already have ended (all handles dropped): fine.
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("DNS resolver thread panicked");
            }
        }
    }
}

impl Drop for ResolverThread {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// Starts the DNS thread.
///
/// Fails if the runtime or thread cannot be created, or if `nameservers` is
/// empty and the system configuration cannot be read or names no server.
pub fn start(config: ResolverConfig) -> io::Result<(Resolver, ResolverThread)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (resolver, direct, servers) = {
        // hickory may look for the current runtime while it is built.
        let _context = runtime.enter();
        build_resolver(&config)?
    };
    let deadline = lookup_deadline(&config, servers);
    let cache_size = config.cache_size;
    let mta_sts = config.mta_sts.clone();

    let (requests, incoming) = flume::bounded(MAX_IN_FLIGHT);
    let (stop, stopped) = oneshot::channel();
    let thread = std::thread::Builder::new()
        .name("ringpost-dns".into())
        .spawn(move || {
            runtime.block_on(serve(
                Dns { resolver, direct },
                incoming,
                stopped,
                deadline,
                cache_size,
                mta_sts,
            ));
            // Dropping the runtime here cancels running lookups; their reply
            // senders drop with them, which callers see as TempFail.
        })?;

    Ok((
        Resolver {
            requests,
            metrics: None,
        },
        ResolverThread {
            stop: Some(stop),
            thread: Some(thread),
        },
    ))
}

/// The DNS thread's two ways to the name servers.
#[derive(Clone)]
struct Dns {
    /// hickory's resolver, with its record cache.
    resolver: TokioResolver,
    /// The same servers asked directly, for answers whose AD bit matters.
    direct: Arc<dane::Servers>,
}

/// Builds the hickory resolver and the direct pool over the same servers;
/// also returns how many servers they ask.
fn build_resolver(
    config: &ResolverConfig,
) -> io::Result<(TokioResolver, Arc<dane::Servers>, usize)> {
    let servers: Vec<NameServerConfig> = if config.nameservers.is_empty() {
        let (system, _) = hickory_resolver::system_conf::read_system_conf()
            .map_err(|e| io::Error::other(format!("reading system DNS configuration: {e}")))?;
        // Only the servers: our own options replace the system's, and names
        // are always fully qualified, so its search list would be unused.
        system.name_servers().to_vec()
    } else {
        config
            .nameservers
            .iter()
            .flat_map(|&addr| [Protocol::Udp, Protocol::Tcp].map(|p| server(addr, p)))
            .collect()
    };
    let count = servers
        .iter()
        .filter(|s| s.protocol == Protocol::Udp)
        .count();
    if count == 0 {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "no DNS name servers configured",
        ));
    }

    let mut opts = ResolverOpts::default();
    opts.timeout = config.timeout;
    // hickory counts retries after the first try.
    opts.attempts = config.attempts.max(1) - 1;
    opts.cache_size = config.cache_size;
    // /etc/hosts is for local programs, not for where a domain's mail goes,
    // and it would make results differ from one machine to the next.
    opts.use_hosts_file = ResolveHosts::Never;
    opts.ndots = 0;
    // Large MX and AAAA sets fit one UDP reply instead of falling back to TCP.
    opts.edns0 = true;

    let direct = dane::Servers::from_config(
        NameServerConfigGroup::from(servers.clone()),
        opts.clone(),
        TokioConnectionProvider::default(),
    );
    let hickory_config =
        HickoryConfig::from_parts(None, vec![], NameServerConfigGroup::from(servers));
    let resolver =
        TokioResolver::builder_with_config(hickory_config, TokioConnectionProvider::default())
            .with_options(opts)
            .build();
    Ok((resolver, Arc::new(direct), count))
}

fn server(addr: SocketAddr, protocol: Protocol) -> NameServerConfig {
    let mut server = NameServerConfig::new(addr, protocol);
    // These are our own recursive resolvers: an NXDOMAIN from one is the
    // answer, not a reason to ask the next.
    server.trust_negative_responses = true;
    server
}

/// A hard cap on one lookup, so every request is answered even if a query
/// hangs past hickory's own timeouts. A lookup is two rounds (MX, then all
/// addresses in parallel); each query may try every server, two at a time,
/// `attempts` times; one timeout more is slack.
fn lookup_deadline(config: &ResolverConfig, servers: usize) -> Duration {
    let rounds_per_try = servers.div_ceil(2).max(1);
    let tries = config.attempts.max(1) * rounds_per_try;
    let timeouts = u32::try_from(2 * tries + 1).unwrap_or(u32::MAX);
    config.timeout.saturating_mul(timeouts)
}

/// The DNS thread's loop: takes requests until stopped or until every
/// [`Resolver`] handle is gone, each running as its own task.
async fn serve(
    dns: Dns,
    incoming: flume::Receiver<Request>,
    mut stop: oneshot::Receiver<()>,
    deadline: Duration,
    cache_size: usize,
    mta_sts: Option<MtaStsSetup>,
) {
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let record_slots = Arc::new(Semaphore::new(MAX_RECORD_LOOKUPS));
    let resolver = dns.resolver.clone();
    let cache = Arc::new(Mutex::new(AnswerCache::new(cache_size)));
    let dane_cache = Arc::new(Mutex::new(AnswerCache::new(cache_size)));
    let sts = mta_sts.map(|setup| {
        Arc::new(StsState {
            setup,
            policies: Mutex::new(std::collections::HashMap::new()),
            capacity: cache_size,
        })
    });
    loop {
        // Take a slot before a request, so that a request is only taken off
        // the channel when it can start.
        let next = pin!(async {
            let slot = slots.clone().acquire_owned().await.ok()?;
            let request = incoming.recv_async().await.ok()?;
            Some((slot, request))
        });
        let (slot, request) = match future::select(next, &mut stop).await {
            Either::Left((Some(next), _)) => next,
            // All handles dropped, or told to stop (or the stop handle dropped).
            _ => return,
        };
        let (domain, reply) = match request {
            Request::Mx { domain, reply } => (domain, reply),
            Request::MtaSts { domain, reply } => {
                let Some(sts) = sts.clone() else {
                    let _ = reply.send(None);
                    continue;
                };
                let resolver = resolver.clone();
                tokio::spawn(async move {
                    let _slot = slot;
                    let policy = tokio::time::timeout(
                        deadline + FETCH_TIMEOUT,
                        discover(&resolver, &sts, domain),
                    )
                    .await
                    .ok()
                    .flatten();
                    let _ = reply.send(policy);
                });
                continue;
            }
            Request::Dane {
                domain,
                port,
                reply,
            } => {
                let now = Instant::now();
                let key = (domain, port);
                if let Some(verdict) = lock(&dane_cache).get(&key, now) {
                    let _ = reply.send(verdict);
                    continue;
                }
                let (direct, dane_cache) = (dns.direct.clone(), dane_cache.clone());
                tokio::spawn(async move {
                    let _slot = slot;
                    // MX, then addresses, then TLSA: a round more than MX.
                    let looked_up =
                        tokio::time::timeout(deadline * 2, dane::lookup(&direct, &key.0, port));
                    let (verdict, keep) = looked_up.await.unwrap_or_else(|_| {
                        (DaneLookup::Failed("DNSSEC lookups timed out".into()), None)
                    });
                    if let Some(keep) = keep {
                        let now = Instant::now();
                        let until = now + keep.min(MAX_TTL);
                        lock(&dane_cache).put(key, verdict.clone(), until, now);
                    }
                    let _ = reply.send(verdict);
                });
                continue;
            }
            Request::Records { name, kind, reply } => {
                if reply.is_canceled() {
                    continue;
                }
                // Inbound checks (SPF, DKIM, DMARC) may not crowd out the
                // relay's own lookups: past their share, they fail for now.
                let Ok(record_slot) = record_slots.clone().try_acquire_owned() else {
                    let busy = LookupFailure::Temporary("too many DNS lookups at once".into());
                    let _ = reply.send(Err(busy));
                    continue;
                };
                let resolver = resolver.clone();
                tokio::spawn(async move {
                    let _slot = (slot, record_slot);
                    let found =
                        tokio::time::timeout(deadline, lookup_records(&resolver, name, kind))
                            .await
                            .unwrap_or_else(|_| {
                                Err(LookupFailure::Temporary("DNS lookup timed out".into()))
                            });
                    let _ = reply.send(found);
                });
                continue;
            }
        };
        if reply.is_canceled() {
            continue; // the caller gave up while the request was queued
        }
        let now = Instant::now();
        if let Some(mut answer) = lock(&cache).get(&domain, now) {
            // Hosts of equal preference shuffled again, as a fresh lookup would.
            if let MxLookup::Hosts(hosts) = &mut answer {
                shuffle_equal_preferences(hosts, &mut fastrand::Rng::new());
            }
            let _ = reply.send((answer, true));
            continue;
        }
        let (resolver, cache) = (resolver.clone(), cache.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let looked_up =
                tokio::time::timeout(deadline, lookup_mx(&resolver, domain.clone())).await;
            let (answer, records_until) = looked_up
                .unwrap_or_else(|_| (MxLookup::TempFail("DNS lookup timed out".into()), None));
            let now = Instant::now();
            if let Some(until) = keep_until(&answer, records_until, now) {
                lock(&cache).put(domain, answer.clone(), until, now);
            }
            // The caller may have stopped waiting; nothing to do then.
            let _ = reply.send((answer, false));
        });
    }
}

/// Resolves `domain` (fully qualified) to the hosts to try, and the
/// earliest expiry of the records the answer was made from (None when it
/// cannot be kept).
async fn lookup_mx(resolver: &TokioResolver, domain: Name) -> (MxLookup, Option<Instant>) {
    let mut until = None;
    let records: Vec<(u16, Name)> = match resolver.mx_lookup(domain.clone()).await {
        Ok(mx) => {
            until = Some(mx.valid_until());
            mx.iter()
                .map(|mx| (mx.preference(), mx.exchange().clone()))
                .collect()
        }
        Err(e) => match classify(&e) {
            Failure::NoSuchName => return (MxLookup::NoSuchDomain, None),
            // Checked below as the implicit MX.
            Failure::NoRecords => Vec::new(),
            Failure::Temporary(why) => {
                return (MxLookup::TempFail(format!("MX lookup: {why}")), None)
            }
        },
    };

    let hosts = match order_mx(records, &mut fastrand::Rng::new()) {
        MxSet::Null => return (MxLookup::NullMx, until),
        MxSet::Implicit => return implicit_mx(resolver, domain).await,
        MxSet::Hosts(hosts) => hosts,
    };

    let resolved = future::join_all(
        hosts
            .iter()
            .map(|(_, name)| lookup_addrs(resolver, name.clone())),
    )
    .await;

    let mut found = Vec::with_capacity(hosts.len());
    let mut temporary = None;
    for ((preference, name), (addrs, addrs_until)) in hosts.into_iter().zip(resolved) {
        until = earliest(until, addrs_until);
        match addrs {
            Addrs::Found(addrs) => found.push(MxHost {
                name: display_name(&name),
                preference,
                addrs,
            }),
            Addrs::None => {}
            Addrs::Temporary(why) => {
                temporary.get_or_insert_with(|| format!("{}: {why}", display_name(&name)));
            }
        }
    }
    let answer = match (found.is_empty(), temporary) {
        // A host that failed for now may answer next time: not kept.
        (false, Some(_)) => return (MxLookup::Hosts(found), None),
        (false, None) => MxLookup::Hosts(found),
        (true, Some(why)) => MxLookup::TempFail(format!("MX host address lookup: {why}")),
        (true, None) => MxLookup::NoAddress("no MX host has an address".into()),
    };
    (answer, until)
}

/// RFC 5321 §5.1: with no MX records, the domain itself is the mail host.
async fn implicit_mx(resolver: &TokioResolver, domain: Name) -> (MxLookup, Option<Instant>) {
    let (addrs, until) = lookup_addrs(resolver, domain.clone()).await;
    let answer = match addrs {
        Addrs::Found(addrs) => MxLookup::Hosts(vec![MxHost {
            name: display_name(&domain),
            preference: 0,
            addrs,
        }]),
        Addrs::None => MxLookup::NoAddress("no MX, A or AAAA records".into()),
        Addrs::Temporary(why) => MxLookup::TempFail(format!("address lookup: {why}")),
    };
    (answer, until)
}

/// The earlier of two expiries (None: none known).
fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// What an address lookup of one host found.
#[derive(Debug, PartialEq)]
enum Addrs {
    Found(Vec<IpAddr>),
    /// Definitively none: no A and no AAAA records (or no such name).
    None,
    /// No address, and at least one of the two queries failed temporarily.
    Temporary(String),
}

/// Looks up A and AAAA of `host` in parallel; also the earliest expiry of
/// the records found.
async fn lookup_addrs(resolver: &TokioResolver, host: Name) -> (Addrs, Option<Instant>) {
    let (v4, v6) = future::join(
        resolver.ipv4_lookup(host.clone()),
        resolver.ipv6_lookup(host),
    )
    .await;
    let mut addrs = Vec::new();
    let mut temporary = None;
    let mut until = None;
    match v4 {
        Ok(found) => {
            until = earliest(until, Some(found.valid_until()));
            addrs.extend(found.iter().map(|a| IpAddr::V4(a.0)));
        }
        Err(e) => note_failure(&e, &mut temporary),
    }
    match v6 {
        Ok(found) => {
            until = earliest(until, Some(found.valid_until()));
            addrs.extend(found.iter().map(|a| IpAddr::V6(a.0)));
        }
        Err(e) => note_failure(&e, &mut temporary),
    }
    // Addresses from one family are enough to try the host now (but such
    // an answer is not kept: the other family may answer next time).
    let addrs = match (addrs.is_empty(), temporary) {
        (false, Some(_)) => return (Addrs::Found(addrs), None),
        (false, None) => Addrs::Found(addrs),
        (true, Some(why)) => Addrs::Temporary(why),
        (true, None) => Addrs::None,
    };
    (addrs, until)
}

fn note_failure(e: &ResolveError, temporary: &mut Option<String>) {
    if let Failure::Temporary(why) = classify(e) {
        temporary.get_or_insert(why);
    }
}

/// The answer cache, whatever a panicking holder left (it holds only
/// whole entries).
fn lock<T>(cache: &Mutex<T>) -> MutexGuard<'_, T> {
    cache
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A failed query, sorted by what it means for delivery.
#[derive(Debug, PartialEq)]
enum Failure {
    /// NXDOMAIN: the name does not exist.
    NoSuchName,
    /// The name exists but has no records of the asked type.
    NoRecords,
    /// Anything that may work later: SERVFAIL, REFUSED, timeouts, I/O.
    Temporary(String),
}

/// hickory reports every non-answer as an error; sort it. Only NXDOMAIN and
/// an empty NOERROR say something about the domain; every other response
/// code (SERVFAIL, REFUSED, ...) comes as the same error kind but says only
/// that this server could not answer now.
fn classify(e: &ResolveError) -> Failure {
    if let Some(ProtoErrorKind::NoRecordsFound { response_code, .. }) = e.proto().map(|p| p.kind())
    {
        match *response_code {
            ResponseCode::NXDomain => return Failure::NoSuchName,
            ResponseCode::NoError => return Failure::NoRecords,
            code => return Failure::Temporary(format!("server answered {code}")),
        }
    }
    Failure::Temporary(e.to_string())
}

/// A domain's MX records, sorted out.
#[derive(Debug, PartialEq)]
enum MxSet {
    /// RFC 7505: the only MX is ".".
    Null,
    /// No usable MX records: fall back to the domain's own addresses.
    Implicit,
    /// Exchanges to try, in order, at most [`MAX_MX_HOSTS`].
    Hosts(Vec<(u16, Name)>),
}

/// Orders MX records: preference ascending, shuffled among equal preference
/// (RFC 5321 §5.1, to spread load), duplicates removed.
fn order_mx(mut records: Vec<(u16, Name)>, rng: &mut fastrand::Rng) -> MxSet {
    if records.is_empty() {
        return MxSet::Implicit;
    }
    // RFC 7505 requires a null MX to stand alone with preference 0; we take
    // any lone "." as null, since no mail can go to the root anyway. A "."
    // beside real hosts is a misconfiguration; those hosts are still tried.
    if records.iter().all(|(_, name)| name.is_root()) {
        return MxSet::Null;
    }
    records.retain(|(_, name)| !name.is_root());
    for (_, name) in &mut records {
        *name = name.to_lowercase();
    }

    // Shuffle all, then sort stably: equal preferences end up shuffled.
    rng.shuffle(&mut records);
    records.sort_by_key(|&(preference, _)| preference);
    // Keep the first (best) occurrence of a host listed twice.
    let mut seen = Vec::with_capacity(records.len());
    records.retain(|(_, name)| {
        let fresh = !seen.contains(name);
        if fresh {
            seen.push(name.clone());
        }
        fresh
    });
    records.truncate(MAX_MX_HOSTS);
    MxSet::Hosts(records)
}

/// A name as shown to users and used for TLS: lowercase, no trailing dot.
fn display_name(name: &Name) -> String {
    let text = name.to_lowercase().to_ascii();
    match text.strip_suffix('.') {
        Some(stripped) if !stripped.is_empty() => stripped.to_owned(),
        _ => text,
    }
}

/// What the caller asked to resolve.
#[derive(Debug, PartialEq)]
enum Target {
    /// A domain name: lowercase, fully qualified.
    Name(Name),
    /// An address literal (RFC 5321 §4.1.3): its text (lowercase), and the address.
    Literal(String, IpAddr),
    /// Neither a valid name nor a valid literal.
    Invalid,
}

/// Parses a recipient domain: `example.com`, `Example.COM.`, `[192.0.2.1]`,
/// `[IPv6:2001:db8::1]` (and, leniently, `[2001:db8::1]`).
fn parse_target(domain: &str) -> Target {
    let domain = domain.trim();
    if let Some(inner) = domain.strip_prefix('[').and_then(|d| d.strip_suffix(']')) {
        let ip = match inner.get(..5) {
            Some(tag) if tag.eq_ignore_ascii_case("ipv6:") => {
                inner[5..].parse::<Ipv6Addr>().map(IpAddr::V6).ok()
            }
            // Leading zeros are allowed in a literal (RFC 5321 §4.1.3).
            _ => ringpost_protocols::smtp::ipv4_literal(inner)
                .map(IpAddr::V4)
                .or_else(|| inner.parse::<Ipv6Addr>().map(IpAddr::V6).ok()),
        };
        return match ip {
            Some(ip) => Target::Literal(domain.to_ascii_lowercase(), ip),
            None => Target::Invalid,
        };
    }

    let domain = domain.strip_suffix('.').unwrap_or(domain);
    // A bare address is not a domain (RFC 5321 wants brackets); refuse it
    // rather than look it up as a name.
    if domain.is_empty() || domain.parse::<IpAddr>().is_ok() {
        return Target::Invalid;
    }
    // from_utf8 also turns an internationalised name into its A-label form.
    match Name::from_utf8(domain.to_lowercase()) {
        Ok(mut name) => {
            name.set_fqdn(true);
            Target::Name(name.to_lowercase())
        }
        Err(_) => Target::Invalid,
    }
}

/// `domain` in its ASCII (A-label) form, lowercase, without a final dot:
/// `bücher.example` → `xn--bcher-kva.example`. Names are compared in that
/// form (RFC 5890), whichever form the recipient or the operator wrote;
/// one that is not a valid name comes back lowercased as it was.
pub fn ascii_domain(domain: &str) -> String {
    let domain = domain.strip_suffix('.').unwrap_or(domain);
    if domain.is_ascii() {
        return domain.to_ascii_lowercase();
    }
    match Name::from_utf8(domain.to_lowercase()) {
        Ok(name) => name
            .to_lowercase()
            .to_ascii()
            .trim_end_matches('.')
            .to_owned(),
        Err(_) => domain.to_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_full_policy_cache_still_takes_new_and_changed_policies() {
        use std::time::{Duration, Instant};
        let now = Instant::now();
        let later = |secs| now + Duration::from_secs(secs);
        let mut policies = std::collections::HashMap::new();
        super::remember(
            &mut policies,
            2,
            "a.test".into(),
            ((), "1".into(), later(100)),
            now,
        );
        super::remember(
            &mut policies,
            2,
            "b.test".into(),
            ((), "1".into(), later(50)),
            now,
        );
        // Full, nothing expired: the soonest to expire makes room.
        super::remember(
            &mut policies,
            2,
            "c.test".into(),
            ((), "1".into(), later(80)),
            now,
        );
        assert!(policies.contains_key("c.test") && policies.contains_key("a.test"));
        assert_eq!(policies.len(), 2);
        // A changed policy of a known domain replaces the old one.
        super::remember(
            &mut policies,
            2,
            "a.test".into(),
            ((), "2".into(), later(100)),
            now,
        );
        assert_eq!(policies["a.test"].1, "2");
        assert_eq!(policies.len(), 2);
    }

    #[test]
    fn domains_compare_in_their_ascii_form() {
        use super::ascii_domain;
        assert_eq!(ascii_domain("Bücher.Example."), "xn--bcher-kva.example");
        assert_eq!(ascii_domain("Plain.Example"), "plain.example");
        assert_eq!(
            ascii_domain("xn--bcher-kva.example"),
            "xn--bcher-kva.example"
        );
    }

    #[test]
    fn kept_until_the_records_expire_negatives_briefly_failures_never() {
        let now = Instant::now();
        let hosts = MxLookup::Hosts(vec![]);
        let soon = now + Duration::from_secs(30);
        assert_eq!(keep_until(&hosts, Some(soon), now), Some(soon));
        assert_eq!(keep_until(&hosts, None, now), None);
        let far = now + Duration::from_secs(86_400);
        assert_eq!(keep_until(&hosts, Some(far), now), Some(now + MAX_TTL));
        assert_eq!(
            keep_until(&MxLookup::NoSuchDomain, None, now),
            Some(now + NEGATIVE_TTL)
        );
        assert_eq!(
            keep_until(&MxLookup::TempFail("x".into()), Some(far), now),
            None
        );
    }

    #[test]
    fn the_cache_is_bounded_and_forgets_what_expired() {
        let now = Instant::now();
        let mut cache = AnswerCache::new(2);
        let name = |s: &str| Name::from_ascii(s).unwrap();
        cache.put(
            name("a.test."),
            MxLookup::NullMx,
            now + Duration::from_secs(1),
            now,
        );
        cache.put(
            name("b.test."),
            MxLookup::NullMx,
            now + Duration::from_secs(60),
            now,
        );
        let later = now + Duration::from_secs(2);
        assert_eq!(cache.get(&name("a.test."), later), None, "expired");
        cache.put(
            name("c.test."),
            MxLookup::NullMx,
            later + Duration::from_secs(60),
            later,
        );
        cache.put(
            name("d.test."),
            MxLookup::NullMx,
            later + Duration::from_secs(60),
            later,
        );
        assert_eq!(cache.entries.len(), 2);
        assert_eq!(cache.get(&name("d.test."), later), Some(MxLookup::NullMx));
    }

    #[test]
    fn equal_preferences_are_shuffled_in_place() {
        let host = |name: &str, preference| MxHost {
            name: name.into(),
            preference,
            addrs: vec![],
        };
        let mut seen = std::collections::HashSet::new();
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..50 {
            let mut hosts = vec![
                host("a", 10),
                host("b", 10),
                host("c", 20),
                host("d", 30),
                host("e", 30),
            ];
            shuffle_equal_preferences(&mut hosts, &mut rng);
            let prefs: Vec<u16> = hosts.iter().map(|h| h.preference).collect();
            assert_eq!(prefs, [10, 10, 20, 30, 30]);
            assert_eq!(hosts[2].name, "c");
            seen.insert(hosts.iter().map(|h| h.name.clone()).collect::<String>());
        }
        assert_eq!(seen.len(), 4, "{seen:?}");
    }
    use super::*;
    use hickory_resolver::proto::op::Query;
    use hickory_resolver::proto::rr::RecordType;
    use hickory_resolver::proto::ProtoError;

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    #[test]
    fn status_codes() {
        assert_eq!(MxLookup::Hosts(vec![]).status(), None);
        assert_eq!(MxLookup::NullMx.status(), Some("5.1.10"));
        assert_eq!(MxLookup::NoSuchDomain.status(), Some("5.1.2"));
        assert_eq!(MxLookup::NoAddress("x".into()).status(), Some("5.4.4"));
        assert_eq!(MxLookup::TempFail("x".into()).status(), Some("4.4.3"));
    }

    #[test]
    fn names_are_lowercased_and_qualified() {
        for input in ["Example.COM", "example.com.", " example.com "] {
            match parse_target(input) {
                Target::Name(n) => {
                    assert!(n.is_fqdn());
                    assert_eq!(n.to_ascii(), "example.com.");
                }
                other => panic!("{input}: {other:?}"),
            }
        }
    }

    #[test]
    fn internationalised_names_become_a_labels() {
        match parse_target("Bücher.example") {
            Target::Name(n) => assert_eq!(n.to_ascii(), "xn--bcher-kva.example."),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn address_literals() {
        let v4 = "127.0.0.1".parse().unwrap();
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(
            parse_target("[127.0.0.1]"),
            Target::Literal("[127.0.0.1]".into(), v4)
        );
        assert_eq!(
            parse_target("[IPv6:2001:DB8::1]"),
            Target::Literal("[ipv6:2001:db8::1]".into(), v6)
        );
        assert_eq!(
            parse_target("[2001:db8::1]"),
            Target::Literal("[2001:db8::1]".into(), v6)
        );
        // What RCPT accepts, the relay reaches: leading zeros included.
        assert_eq!(
            parse_target("[127.000.000.001]"),
            Target::Literal("[127.000.000.001]".into(), v4)
        );
    }

    #[test]
    fn invalid_targets() {
        for input in [
            "",
            ".",
            "[]",
            "[300.0.0.1]",
            "[IPv6:127.0.0.1]",
            "[tag:stuff]",
            "127.0.0.1",
            "a..b",
            &format!("{}.com", "a".repeat(64)),
        ] {
            assert_eq!(parse_target(input), Target::Invalid, "{input:?}");
        }
    }

    #[test]
    fn lone_root_mx_is_null() {
        let mut rng = fastrand::Rng::with_seed(1);
        assert_eq!(order_mx(vec![(0, Name::root())], &mut rng), MxSet::Null);
        assert_eq!(order_mx(vec![(10, Name::root())], &mut rng), MxSet::Null);
        assert_eq!(order_mx(vec![], &mut rng), MxSet::Implicit);
    }

    #[test]
    fn root_beside_real_hosts_is_dropped() {
        let mut rng = fastrand::Rng::with_seed(1);
        assert_eq!(
            order_mx(vec![(0, Name::root()), (10, name("mx.test."))], &mut rng),
            MxSet::Hosts(vec![(10, name("mx.test."))])
        );
    }

    #[test]
    fn mx_sorted_by_preference_and_deduplicated() {
        let mut rng = fastrand::Rng::with_seed(7);
        let records = vec![
            (30, name("c.test.")),
            (10, name("A.test.")),
            (20, name("b.test.")),
            (40, name("a.test.")),
        ];
        assert_eq!(
            order_mx(records, &mut rng),
            MxSet::Hosts(vec![
                (10, name("a.test.")),
                (20, name("b.test.")),
                (30, name("c.test.")),
            ])
        );
    }

    #[test]
    fn equal_preferences_are_shuffled() {
        let mut rng = fastrand::Rng::with_seed(42);
        let records = vec![
            (10, name("x.test.")),
            (10, name("y.test.")),
            (5, name("first.test.")),
        ];
        let mut x_second = 0;
        for _ in 0..200 {
            let MxSet::Hosts(hosts) = order_mx(records.clone(), &mut rng) else {
                panic!("hosts expected");
            };
            assert_eq!(hosts[0].1, name("first.test."));
            if hosts[1].1 == name("x.test.") {
                x_second += 1;
            }
        }
        assert!((50..150).contains(&x_second), "{x_second} of 200");
    }

    #[test]
    fn mx_host_count_is_capped() {
        let records = (0..100)
            .map(|i| (i, name(&format!("mx{i}.test."))))
            .collect();
        let MxSet::Hosts(hosts) = order_mx(records, &mut fastrand::Rng::with_seed(1)) else {
            panic!("hosts expected");
        };
        assert_eq!(hosts.len(), MAX_MX_HOSTS);
        assert_eq!(hosts[0].0, 0);
    }

    #[test]
    fn display_names() {
        assert_eq!(display_name(&name("MX1.Example.COM.")), "mx1.example.com");
        assert_eq!(display_name(&Name::root()), ".");
    }

    fn no_records(code: ResponseCode) -> ResolveError {
        ProtoError::from(ProtoErrorKind::NoRecordsFound {
            query: Box::new(Query::query(name("x.test."), RecordType::MX)),
            soa: None,
            ns: None,
            negative_ttl: None,
            response_code: code,
            trusted: true,
            authorities: None,
        })
        .into()
    }

    #[test]
    fn failures_are_classified() {
        assert_eq!(
            classify(&no_records(ResponseCode::NXDomain)),
            Failure::NoSuchName
        );
        assert_eq!(
            classify(&no_records(ResponseCode::NoError)),
            Failure::NoRecords
        );
        for code in [ResponseCode::ServFail, ResponseCode::Refused] {
            assert!(matches!(classify(&no_records(code)), Failure::Temporary(_)));
        }
        let timeout: ResolveError = ProtoError::from(ProtoErrorKind::Timeout).into();
        assert!(matches!(classify(&timeout), Failure::Temporary(_)));
    }

    #[test]
    fn deadline_covers_every_try() {
        let config = ResolverConfig {
            timeout: Duration::from_millis(300),
            attempts: 1,
            ..ResolverConfig::default()
        };
        assert_eq!(lookup_deadline(&config, 1), Duration::from_millis(900));
        let config = ResolverConfig {
            attempts: 2,
            ..config
        };
        assert_eq!(lookup_deadline(&config, 3), Duration::from_millis(300 * 9));
    }

    fn unused_server() -> ResolverConfig {
        // Nothing is sent in these tests; the address only has to be valid.
        ResolverConfig {
            nameservers: vec!["127.0.0.1:9".parse().unwrap()],
            ..ResolverConfig::default()
        }
    }

    #[test]
    fn literals_and_invalid_names_need_no_dns() {
        let (resolver, thread) = start(unused_server()).unwrap();
        let answer = futures::executor::block_on(resolver.mx("[192.0.2.7]"));
        assert_eq!(
            answer,
            MxLookup::Hosts(vec![MxHost {
                name: "[192.0.2.7]".into(),
                preference: 0,
                addrs: vec!["192.0.2.7".parse().unwrap()],
            }])
        );
        let answer = futures::executor::block_on(resolver.mx("bad..name"));
        assert_eq!(answer, MxLookup::NoSuchDomain);
        thread.shutdown();
    }

    #[test]
    fn lookups_after_shutdown_fail_temporarily() {
        let (resolver, thread) = start(unused_server()).unwrap();
        drop(thread);
        let answer = futures::executor::block_on(resolver.mx("example.test"));
        assert!(matches!(answer, MxLookup::TempFail(_)), "{answer:?}");
    }

    #[test]
    fn thread_ends_when_every_handle_is_gone() {
        let (resolver, thread) = start(unused_server()).unwrap();
        drop(resolver);
        // Joins; would hang if the loop ignored the closed channel.
        thread.shutdown();
    }
}
