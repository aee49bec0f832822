//! One shard's delivery schedule and the outcome of every attempt.
//!
//! Per destination site (the domains that share a set of MX hosts, see
//! [`super::shaping`]) and egress pool the shard keeps a ready queue, its
//! open connections and the connections waiting idle for more mail; a
//! connection takes that queue's work whatever its domain. An entry whose
//! domain's site is not known yet waits in `unresolved` while one task per
//! domain looks it up (through the resolver's caches, so once per domain
//! and TTL). Deferred entries wait as keys in a due-ordered set and are read
//! back from the store when due ([`schedule`]); the schedule also names
//! every entry held in memory, in flight included, so an entry reached twice
//! (through the inbox and through a sweep of the store) is scheduled once.
//! Memory holds at most `relay.max_queued_per_shard` entries; the rest stay
//! in the store and [`Relay::sweep`] brings them in when there is room, or
//! when they are due before the deferred entries in memory.
//!
//! All of it lives on one executor thread: `RefCell`s, no locks. Borrows are
//! never held across an `.await`. The one thing shared with other shards is
//! each site's [`SiteLimiter`], which is atomics.

mod leftovers;
mod operator;
mod schedule;

use super::bounce;
use super::resolver::Resolver;
use super::route::{NoRoute, Router};
use super::shaping::{self, Closed, SiteLimiter, Sites};
use super::{owner_of, Hub, Inbox, RELAY_ID_BIT};
use crate::config::{Config, RelayConfig, StoreEngine, SuppressionScope};
use crate::events::EventSpool;
use crate::intake::{self, IdGenerator};
use crate::live::LiveConfig;
use crate::maillog::{Attempt, Disposition, MailLog};
use crate::metrics::RelayMetrics;
use crate::shard::ShutdownSignal;
use futures::channel::oneshot;
use futures_lite::FutureExt;
use ringpost_protocols::smtp::bounce_class::{self, Class};
use ringpost_protocols::smtp::client::{ClientConfig, RecipientResult, ServerReply};
use ringpost_protocols::smtp::dsn::{Action, Diagnostic, RecipientStatus};
use ringpost_storage::spool::{self, Envelope, InMemory, MessageId, QueueEntry};
use ringpost_storage::suppression::{self, Suppression};
use ringpost_storage::{CommitHandle, Store, StoreError, WriteBatch};
pub use schedule::{Schedule, Slot};
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet, VecDeque};
use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often due entries are moved to their ready queues.
const TICK: Duration = Duration::from_millis(50);
/// How long a connection with nothing to send keeps its slot when another
/// shard asks for one (see [`Relay::next_work`]).
const YIELD_GRACE: Duration = Duration::from_millis(100);
/// Least time between two sweeps of the store.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// Due entries one sweep brings in when memory is full, each in place of a
/// deferred entry due later (which waits in the store instead).
const SWEEP_BATCH: usize = 10_000;
/// Deferred entries read back from the store per tick once due.
const WAKE_BATCH: usize = 10_000;
/// Retry delay after the store refused to record an outcome.
const STORE_RETRY: Duration = Duration::from_secs(30);
/// How often a domain may be placed again because its site changed under
/// a connection (see [`Relay::place_again`]).
const PLACE_AGAIN_EVERY: Duration = Duration::from_secs(60);
/// How long a domain's site, once learned, is trusted before it is looked
/// up again (the MX answers themselves are cached by the resolver).
const SITE_TTL: Duration = Duration::from_secs(60);

/// An entry's identity, stable across reschedules (its due time changes).
type EntryKey = (MessageId, String);

/// A message read back from the store for delivery.
pub(crate) struct Loaded {
    /// Sender, arrival and recipients left.
    pub envelope: Envelope,
    /// The stored bytes, trace header included.
    pub body: Vec<u8>,
}

/// Who an attempt reached: the host (MX or route), and when a connection
/// was made its address and TLS version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Via {
    /// The host's name.
    pub host: String,
    /// The address connected to.
    pub addr: Option<std::net::SocketAddr>,
    /// `TLSv1.3`, `TLSv1.2`; none in the clear.
    pub tls: Option<&'static str>,
    /// The MX site the host serves.
    pub site: Option<SiteName>,
    /// The egress source the connection came from (`relay.sources`).
    pub source: Option<usize>,
    /// The host offered DSN: it got the sender's NOTIFY and reports
    /// successes itself (RFC 3461 §5.2).
    pub dsn: bool,
}

impl Via {
    /// A host of `site` by name only (no connection was made to it).
    pub fn named(host: String, site: SiteName) -> Via {
        Via {
            host,
            addr: None,
            tls: None,
            site: Some(site),
            source: None,
            dsn: false,
        }
    }
}

/// One shard's outbound side.
pub(crate) struct Relay {
    /// Shard number.
    pub shard: usize,
    /// The configuration in force, reloadable.
    live: Arc<LiveConfig>,
    /// This relay's copy of it, with what is made from it.
    view: RefCell<RelayView>,
    /// The store, for reading messages.
    pub store: Arc<dyn Store>,
    /// Where outcomes are committed.
    pub commits: CommitHandle,
    /// Channels to the other shards.
    pub hub: Arc<Hub>,
    /// DNS.
    pub resolver: Resolver,
    /// Settings of every outbound SMTP session.
    pub client: Arc<ClientConfig>,
    /// The same without STARTTLS: for the plain retry after a failed
    /// opportunistic handshake.
    pub client_plain: Arc<ClientConfig>,
    /// TLS client settings (None: STARTTLS off).
    pub tls: Option<super::tls::TlsClients>,
    /// This shard's relay metrics.
    pub metrics: RelayMetrics,
    /// Where each recipient's outcome is logged.
    pub maillog: Arc<MailLog>,
    /// Each recipient's outcome for the webhook, when one is configured.
    events: Option<EventSpool>,
    /// The egress sources connections come from, if any.
    pub egress: Option<Arc<super::egress::Egress>>,
    /// Where mail reaches this server (MX hosts that are us are dropped).
    pub ourselves: Arc<super::ourselves::Ourselves>,
    /// Every site's shared limits.
    sites: Arc<Sites>,
    /// Per source: its client settings with STARTTLS, and without.
    pub source_clients: Vec<(Arc<ClientConfig>, Arc<ClientConfig>)>,
    ids: RefCell<IdGenerator>,
    rng: Cell<u64>,
    state: RefCell<State>,
    /// Resolves when the shard stops (set by [`Relay::run`]).
    shutdown: RefCell<Option<ShutdownSignal>>,
}

/// Our own refusal of a recipient on the suppression list.
const SUPPRESSED: &str = "recipient suppressed: it bounced as unknown before; not sent again";

/// A queue's name: its site's, and its egress pool's when it has one
/// (`site via pool`). Shared by the maps that refer to it.
pub(crate) type SiteName = Rc<str>;

/// The site a domain's mail goes to, as `found` says (see
/// [`shaping::site_name`]), and its host names as the site's limiter
/// knows them. A route or smarthost on another port is another
/// destination, however its host is named.
fn site_of(
    relay: &crate::config::RelayConfig,
    domain: &str,
    found: &super::deliver::Found,
) -> (SiteName, Vec<String>) {
    let mut hosts: Vec<String> = found
        .targets
        .iter()
        .map(|t| {
            let host = t.host.trim_end_matches('.').to_ascii_lowercase();
            match t.addr.port() == relay.mx_port {
                true => host,
                false => format!("{host}:{}", t.addr.port()),
            }
        })
        .collect();
    hosts.sort();
    hosts.dedup();
    let names: Vec<&str> = hosts.iter().map(String::as_str).collect();
    let name = shaping::site_name(
        domain,
        &names,
        found.policy,
        relay.default_tls_policy(),
        !found.dane.is_empty(),
        &relay.shaping,
    );
    (name.into(), hosts)
}

/// The queue of `site`'s mail that leaves through `pool`.
fn queue_name(site: &SiteName, pool: Option<&str>) -> SiteName {
    match pool {
        None => site.clone(),
        Some(pool) => format!("{site} via {pool}").into(),
    }
}

#[derive(Default)]
struct State {
    /// Ready work and connections per site and pool.
    sites: HashMap<SiteName, Destination>,
    /// Each domain's site and its limiter, until the instant it should be
    /// looked up again, and the configuration generation it was found
    /// under (routes, TLS policies and shaping rules decide sites: a reload
    /// makes every one stale).
    site_of: HashMap<String, KnownSite>,
    /// Ready entries of domains whose site is being looked up.
    unresolved: HashMap<String, Vec<QueueEntry>>,
    /// Domains placed again because their site had changed, and when: a
    /// domain whose lookups keep disagreeing waits instead of going round.
    placed_again: HashMap<String, Instant>,
    /// Sites with work that their limits keep waiting, and when to try
    /// again (shaping's clock): at the next tick when every connection was
    /// taken (one may free on another shard), else when the suspension
    /// ends or a token comes.
    blocked: HashMap<SiteName, u64>,
    /// Which entries are in memory, and the deferred ones' times.
    schedule: Schedule,
    /// Sites that wanted a connection when the shard had none left, each
    /// once, in the order they asked.
    starved: VecDeque<SiteName>,
    starved_set: HashSet<SiteName>,
    connections: usize,
    pending_commits: usize,
    /// Some owned entries are in the store but not in memory.
    overflow: bool,
    /// The earliest due time (ms) of an entry known to be left in the store
    /// (`u64::MAX`: none known; 0: unknown, perhaps now).
    store_min_due: u64,
    last_sweep: Option<Instant>,
    /// Where the sweep in progress goes on (it loads [`SWEEP_BATCH`]
    /// entries at a time, so memory never holds a whole scan's worth), and
    /// what it loaded so far.
    sweep_from: Option<Vec<u8>>,
    sweep_loaded: usize,
    /// When the oldest entry's age was last measured.
    last_oldest_sample: Option<Instant>,
    stopping: bool,
    /// Envelope updates of messages this shard is home to, newest first
    /// while their commit is in flight.
    home: HashMap<MessageId, (Envelope, u64)>,
    home_generation: u64,
    /// Store scans in flight (the startup load, sweeps).
    scans: usize,
    /// Entries taken out of memory while a scan was in flight: the scan
    /// may have read them before they left the store, and must not bring
    /// them back (a finished entry would be delivered again).
    forgotten_in_scan: HashSet<(MessageId, String)>,
    /// Entries an operator's action is on: scans leave them be.
    leaving: HashSet<(MessageId, String)>,
}

impl State {
    /// `id` at `domain` leaves memory (finished, or an operator's).
    fn forget(&mut self, id: MessageId, domain: &str) {
        self.schedule.forget(id, domain);
        if self.scans > 0 {
            self.forgotten_in_scan.insert((id, domain.to_owned()));
        }
    }
}

/// What a shard remembers of a domain's site.
struct KnownSite {
    name: SiteName,
    limiter: Arc<SiteLimiter>,
    until: Instant,
    generation: u64,
}

/// One site's work and connections on this shard, for one egress pool.
struct Destination {
    ready: VecDeque<QueueEntry>,
    connections: usize,
    /// Connections waiting for work; a send wakes one.
    idle: VecDeque<oneshot::Sender<()>>,
    /// The site's limits, shared with the other shards (and pools).
    limiter: Arc<SiteLimiter>,
    /// The egress pool its connections come from.
    pool: Option<Rc<str>>,
}

impl Destination {
    fn new(limiter: Arc<SiteLimiter>, pool: Option<&str>) -> Destination {
        Destination {
            ready: VecDeque::new(),
            connections: 0,
            idle: VecDeque::new(),
            limiter,
            pool: pool.map(Rc::from),
        }
    }
}

/// A relay's copy of the configuration in force, and what is made from it.
struct RelayView {
    generation: u64,
    config: Arc<Config>,
    router: Rc<Router>,
    bounce_rules: Rc<Vec<bounce_class::Rule>>,
    /// The operator's own rules alone: they may call a reply rate limited.
    operator_rules: Rc<Vec<bounce_class::Rule>>,
}

impl RelayView {
    fn new(config: &Config, generation: u64) -> RelayView {
        // The config was checked when it was loaded.
        let bounce_rules = config
            .relay
            .bounce_classifier()
            .unwrap_or_else(|_| bounce_class::default_rules());
        RelayView {
            generation,
            config: Arc::new(config.clone()),
            router: Rc::new(Router::new(&config.relay)),
            bounce_rules: Rc::new(bounce_rules),
            operator_rules: Rc::new(config.relay.operator_bounce_rules().unwrap_or_default()),
        }
    }
}

/// Whether a sweep of shard `shard` (of `shards`) takes `entry` into
/// memory: the shard owns it, it is for a remote domain, and not held.
fn sweeps_in(entry: &QueueEntry, shard: usize, shards: usize, config: &Config) -> bool {
    owner_of(&entry.domain, &entry.id, shards) == shard
        && !config.is_local_domain(&entry.domain)
        && !entry.is_held()
}

/// What a sweep of the store looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sweep {
    /// Whatever fits in memory, in due order.
    All,
    /// Only entries due now, in place of deferred ones due later.
    Due,
}

/// How the recipients of one attempt ended.
struct Sorted {
    delivered: usize,
    deferred: Vec<String>,
    failed: Vec<RecipientStatus>,
    last_error: Option<String>,
    /// The bounce class of each result (None: accepted).
    classes: Vec<Option<Class>>,
    /// The message outlived `max_lifetime_secs`: every refusal is final.
    expired: bool,
}

impl Relay {
    /// The relay of shard `shard`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        shard: usize,
        live: Arc<LiveConfig>,
        store: Arc<dyn Store>,
        commits: CommitHandle,
        hub: Arc<Hub>,
        resolver: Resolver,
        metrics: RelayMetrics,
        tls: Option<super::tls::TlsClients>,
        maillog: Arc<MailLog>,
        egress: Option<Arc<super::egress::Egress>>,
        sites: Arc<Sites>,
        ourselves: Arc<super::ourselves::Ourselves>,
    ) -> Relay {
        let config = live.get();
        let client_plain = ClientConfig {
            hostname: config.hostname.clone(),
            try_starttls: false,
            use_chunking: config.relay.use_chunking,
            ..ClientConfig::default()
        };
        let client = Arc::new(ClientConfig {
            try_starttls: tls.is_some(),
            ..client_plain.clone()
        });
        let events = EventSpool::new(crate::events::source::relay(shard), &config.webhook);
        // Each egress source says its own name in EHLO.
        let source_clients = egress.as_ref().map_or_else(Vec::new, |egress| {
            (0..egress.len())
                .map(|i| {
                    let hostname = egress.ehlo(i).unwrap_or(&config.hostname).to_owned();
                    let plain = ClientConfig {
                        hostname,
                        ..client_plain.clone()
                    };
                    let tls = ClientConfig {
                        try_starttls: tls.is_some(),
                        ..plain.clone()
                    };
                    (Arc::new(tls), Arc::new(plain))
                })
                .collect()
        });
        Relay {
            egress,
            ourselves,
            sites,
            source_clients,
            events,
            client_plain: Arc::new(client_plain),
            tls,
            shard,
            view: RefCell::new(RelayView::new(&config, live.generation())),
            live,
            store,
            commits,
            hub,
            resolver,
            client,
            metrics,
            maillog,
            ids: RefCell::new(IdGenerator::new(shard as u16 | RELAY_ID_BIT)),
            rng: Cell::new(intake::unix_micros() | 1),
            state: RefCell::new(State {
                overflow: true, // nothing is loaded yet: the first tick sweeps
                store_min_due: 0,
                ..State::default()
            }),
            shutdown: RefCell::new(None),
        }
    }

    /// The configuration in force (this relay's copy).
    pub fn config(&self) -> Arc<Config> {
        self.refresh();
        self.view.borrow().config.clone()
    }

    /// Static routes, smarthost, MX port.
    pub fn router(&self) -> Rc<Router> {
        self.refresh();
        self.view.borrow().router.clone()
    }

    /// What tells one refusal from another: the operator's rules, then
    /// the built-in ones.
    pub fn bounce_rules(&self) -> Rc<Vec<bounce_class::Rule>> {
        self.refresh();
        self.view.borrow().bounce_rules.clone()
    }

    /// The operator's own classification rules, for
    /// [`shaping::asks_to_slow_down`].
    pub fn operator_rules(&self) -> Rc<Vec<bounce_class::Rule>> {
        self.refresh();
        self.view.borrow().operator_rules.clone()
    }

    /// Take a reloaded configuration when there is one.
    fn refresh(&self) {
        let generation = self.live.generation();
        if self.view.borrow().generation != generation {
            let view = RelayView::new(&self.live.get(), generation);
            *self.view.borrow_mut() = view;
        }
    }

    /// The generation of the configuration in force (this relay's copy).
    fn generation(&self) -> u64 {
        self.refresh();
        self.view.borrow().generation
    }

    /// Schedule until shutdown: take entries from the inbox, move due ones to
    /// their ready queues, sweep the store when entries were left there.
    pub async fn run(self: Rc<Self>, inbox: flume::Receiver<Inbox>, shutdown: ShutdownSignal) {
        *self.shutdown.borrow_mut() = Some(shutdown.clone());
        if self.shard == 0 && self.config().store.engine == StoreEngine::Rocksdb {
            glommio::spawn_local(leftovers::look_from_time_to_time(self.clone())).detach();
        }
        let inbox_loop = {
            let relay = self.clone();
            async move {
                while let Ok(message) = inbox.recv_async().await {
                    match message {
                        Inbox::Entry(entry) => relay.admit(entry),
                        Inbox::DomainDone { id, domain } => relay.domain_done(id, domain),
                        Inbox::Operator {
                            action,
                            entry,
                            reply,
                        } => {
                            let relay = relay.clone();
                            glommio::spawn_local(async move {
                                let _ = reply.send(relay.administer(action, entry).await);
                            })
                            .detach();
                        }
                    }
                }
            }
        };
        let timer_loop = {
            let relay = self.clone();
            async move {
                loop {
                    relay.tick().await;
                    glommio::timer::sleep(TICK).await;
                }
            }
        };
        let stop = async {
            shutdown.await.ok();
        };
        inbox_loop.or(timer_loop).or(stop).await;
        self.stop();
    }

    /// Stop handing out work; idle connections wake and say QUIT.
    fn stop(&self) {
        let mut state = self.state.borrow_mut();
        state.stopping = true;
        for dest in state.sites.values_mut() {
            dest.idle.clear();
        }
    }

    /// Resolves once the shard stops (never, before [`Relay::run`]).
    pub async fn stopped(&self) {
        let signal = self.shutdown.borrow().clone();
        match signal {
            Some(signal) => {
                let _ = signal.await;
            }
            None => std::future::pending::<()>().await,
        }
    }

    /// Whether connections or commits of this relay are still running.
    pub fn busy(&self) -> bool {
        let (connections, commits) = self.in_flight();
        connections > 0 || commits > 0
    }

    /// Open connections and outcome commits not yet done.
    pub fn in_flight(&self) -> (usize, usize) {
        let state = self.state.borrow();
        (state.connections, state.pending_commits)
    }

    /// The queues that still have connections, and how many (for the
    /// shutdown's log).
    pub fn open_queues(&self) -> Vec<(SiteName, usize)> {
        let state = self.state.borrow();
        state
            .sites
            .iter()
            .filter(|(_, dest)| dest.connections > 0)
            .map(|(name, dest)| (name.clone(), dest.connections))
            .collect()
    }

    /// Take an entry into memory (once), ready or deferred by its due time.
    pub fn admit(self: &Rc<Self>, entry: QueueEntry) {
        // Mail for our own domains goes into mailboxes when it is accepted.
        // An entry for one can only be older than the domain's listing in
        // `local_domains`; it stays in the store, untouched.
        if self.config().is_local_domain(&entry.domain) {
            return;
        }
        // Held by the operator: it stays in the store until released.
        if entry.is_held() {
            return;
        }
        let now = now_millis();
        {
            let max = self.config().relay.max_queued_per_shard;
            let mut state = self.state.borrow_mut();
            if state.schedule.is_known(entry.id, &entry.domain) {
                return;
            }
            if state.schedule.known_len() >= max {
                // Memory is full. A deferred entry due later than this one
                // gives up its place and waits in the store instead, so a
                // deep queue of deferred mail never keeps new mail out.
                let later = state
                    .schedule
                    .latest_wake()
                    .is_some_and(|wake| wake > entry.due);
                state.overflow = true;
                self.metrics.left_in_store.inc();
                let left_due = match later {
                    true => state.schedule.evict_latest(),
                    false => None,
                };
                match left_due {
                    Some(due) => state.store_min_due = state.store_min_due.min(due),
                    None => {
                        state.store_min_due = state.store_min_due.min(entry.due);
                        return;
                    }
                }
            }
            state.schedule.insert_known(entry.id, &entry.domain);
            self.metrics.queued.set(state.schedule.known_len() as i64);
            if entry.due > now {
                let due = entry.due;
                state.schedule.defer(due, entry.id, &entry.domain, due);
                self.metrics
                    .deferred
                    .set(state.schedule.deferred_len() as i64);
                return;
            }
        }
        self.make_ready(entry);
    }

    /// Queue a due entry on its site, or on its domain while the site is
    /// being looked up.
    fn make_ready(self: &Rc<Self>, entry: QueueEntry) {
        let generation = self.generation();
        let mut state = self.state.borrow_mut();
        let site = state
            .site_of
            .get(&entry.domain)
            .filter(|known| Instant::now() < known.until && known.generation == generation)
            .map(|known| (known.name.clone(), known.limiter.clone()));
        if let Some((site, limiter)) = site {
            let name = queue_name(&site, entry.pool.as_deref());
            state
                .sites
                .entry(name.clone())
                .or_insert_with(|| Destination::new(limiter, entry.pool.as_deref()))
                .ready
                .push_back(entry);
            drop(state);
            self.dispatch(&name);
            return;
        }
        // Not known, or known too long: look it up (the first entry of the
        // domain starts the lookup).
        let domain = entry.domain.clone();
        let waiting = state.unresolved.entry(domain.clone()).or_default();
        waiting.push(entry);
        if waiting.len() == 1 {
            drop(state);
            glommio::spawn_local(self.clone().place(domain)).detach();
        }
    }

    /// Learn `domain`'s site, then move its waiting entries to their
    /// queues (one per pool); a domain with no route fails them.
    async fn place(self: Rc<Self>, domain: String) {
        let generation = self.generation();
        let found = super::deliver::destination(&self, &domain).await;
        let config = self.config();
        let queues = match found {
            Err(why) => {
                let entries = self.state.borrow_mut().unresolved.remove(&domain);
                tracing::info!(shard = self.shard, %domain, status = why.status, reason = %why.text, "no route");
                self.fail_all(entries.unwrap_or_default(), &why, None);
                return;
            }
            Ok(found) => {
                let (name, hosts) = site_of(&config.relay, &domain, &found);
                let limiter = self.sites.get(&config.relay, &name, &hosts, &domain);
                let mut state = self.state.borrow_mut();
                let entries = state.unresolved.remove(&domain).unwrap_or_default();
                let mut queues: Vec<SiteName> = Vec::new();
                for entry in entries {
                    let queue = queue_name(&name, entry.pool.as_deref());
                    state
                        .sites
                        .entry(queue.clone())
                        .or_insert_with(|| Destination::new(limiter.clone(), entry.pool.as_deref()))
                        .ready
                        .push_back(entry);
                    if !queues.contains(&queue) {
                        queues.push(queue);
                    }
                }
                let known = KnownSite {
                    name,
                    limiter,
                    until: Instant::now() + SITE_TTL,
                    generation,
                };
                state.site_of.insert(domain, known);
                queues
            }
        };
        for queue in queues {
            self.dispatch(&queue);
        }
    }

    /// Give the site's work to an idle connection, or open another
    /// connection if the limits allow and the work outnumbers the connections.
    fn dispatch(self: &Rc<Self>, site: &SiteName) {
        let limits = &self.config().relay;
        let mut state = self.state.borrow_mut();
        if state.stopping {
            return;
        }
        let shard_full = state.connections >= limits.max_connections_per_shard;
        let Some(dest) = state.sites.get_mut(site) else {
            return;
        };
        while let Some(waiter) = dest.idle.pop_front() {
            if waiter.send(()).is_ok() {
                return;
            }
        }
        if dest.ready.len() <= dest.connections {
            return;
        }
        if shard_full {
            if state.starved_set.insert(site.clone()) {
                state.starved.push_back(site.clone());
            }
            return;
        }
        let patience = limits.idle_connection_secs.saturating_mul(1_000_000);
        match dest.limiter.try_open(shaping::now_micros(), patience) {
            Ok(()) => {}
            Err(closed) => {
                let at = match closed {
                    Closed::Full => 0,
                    Closed::Until(at) => at,
                };
                state.blocked.insert(site.clone(), at);
                return;
            }
        }
        dest.connections += 1;
        state.connections += 1;
        self.metrics.connections_active.inc();
        drop(state);
        let (relay, site) = (self.clone(), site.clone());
        glommio::spawn_local(async move {
            // A bug that panics must end this connection, not the shard
            // with every session and delivery on it. What the connection
            // had taken stays in the store, tried again after a restart.
            let delivery = super::deliver::run(relay.clone(), site.clone());
            let caught = futures::FutureExt::catch_unwind(AssertUnwindSafe(delivery));
            if caught.await.is_err() {
                tracing::error!(shard = relay.shard, site = %site, "a delivery connection panicked; it was closed");
            }
        })
        .detach();
    }

    /// A connection task ended: free its slot and let waiting work use it.
    pub fn connection_closed(self: &Rc<Self>, site: &SiteName) {
        let starved = {
            let mut state = self.state.borrow_mut();
            state.connections -= 1;
            self.metrics.connections_active.dec();
            if let Some(dest) = state.sites.get_mut(site) {
                dest.connections -= 1;
                dest.limiter.close();
                if dest.ready.is_empty() && dest.connections == 0 {
                    // Forget empty sites so many destinations cost no memory.
                    state.sites.remove(site);
                }
            }
            let next = state.starved.pop_front();
            if let Some(site) = &next {
                state.starved_set.remove(site);
            }
            next
        };
        self.dispatch(site);
        if let Some(other) = starved {
            self.dispatch(&other);
        }
    }

    /// Whether this shard has a connection to `site` besides the caller's.
    pub fn other_connections(&self, site: &SiteName) -> bool {
        self.state
            .borrow()
            .sites
            .get(site)
            .is_some_and(|dest| dest.connections > 1)
    }

    /// The queue's site limiter and egress pool, while the shard holds it.
    pub fn limiter(&self, site: &SiteName) -> Option<(Arc<SiteLimiter>, Option<Rc<str>>)> {
        let state = self.state.borrow();
        let dest = state.sites.get(site)?;
        Some((dest.limiter.clone(), dest.pool.clone()))
    }

    /// The next entry for `site`, if any and if not stopping.
    pub fn take_work(&self, site: &SiteName) -> Option<QueueEntry> {
        let mut state = self.state.borrow_mut();
        if state.stopping {
            return None;
        }
        state.sites.get_mut(site)?.ready.pop_front()
    }

    /// Whether `site`'s next ready entry has at most `recipients`
    /// recipients (false when none is ready, or when stopping).
    pub fn next_ready_fits(&self, site: &SiteName, recipients: usize) -> bool {
        let state = self.state.borrow();
        !state.stopping
            && state
                .sites
                .get(site)
                .and_then(|dest| dest.ready.front())
                .is_some_and(|entry| entry.recipients.len() <= recipients)
    }

    /// Put an entry taken for sending back at the head of its site's queue
    /// (the connection could not send it now; no attempt was made).
    pub fn put_back(self: &Rc<Self>, site: &SiteName, entry: QueueEntry) {
        let mut state = self.state.borrow_mut();
        match state.sites.get_mut(site) {
            Some(dest) => {
                dest.ready.push_front(entry);
                state.blocked.entry(site.clone()).or_insert(0);
            }
            None => {
                drop(state);
                self.make_ready(entry);
            }
        }
    }

    /// The next entry for `site`, waiting up to `idle` for one to arrive,
    /// unless another shard wants the site's connection slot. The slot is
    /// given up only after [`YIELD_GRACE`] without work: under load a
    /// queue is often empty for a moment, and closing a connection for that
    /// to open another costs both ends far more than the wait.
    pub async fn next_work(&self, site: &SiteName, idle: Duration) -> Option<QueueEntry> {
        let started = Instant::now();
        let give_up = started + idle;
        let may_yield = started + YIELD_GRACE.min(idle);
        loop {
            // Woken for work another connection took first: wait on.
            if let Some(entry) = self.take_work(site) {
                return Some(entry);
            }
            let now = Instant::now();
            if now >= give_up {
                return None;
            }
            if now >= may_yield {
                let state = self.state.borrow();
                let dest = state.sites.get(site)?;
                if dest.limiter.should_yield(shaping::now_micros()) {
                    return None;
                }
            }
            let until = if now < may_yield { may_yield } else { give_up };
            self.wait_for_work(site, until - now).await?;
        }
    }

    /// Wait up to `wait` for `site` to get work: whether it came, or None
    /// when stopping or the site is gone.
    async fn wait_for_work(&self, site: &SiteName, wait: Duration) -> Option<bool> {
        let (wake, woken) = oneshot::channel();
        {
            let mut state = self.state.borrow_mut();
            if state.stopping {
                return None;
            }
            state.sites.get_mut(site)?.idle.push_back(wake);
        }
        let woken = async { woken.await.is_ok() };
        let timeout = async {
            glommio::timer::sleep(wait).await;
            false
        };
        Some(woken.or(timeout).await)
    }

    /// Whether `domain`, as `found` now, still belongs to the site whose
    /// queue is `queue` (its MX hosts, TLS policy or DANE may have changed
    /// since it was placed there).
    pub(crate) fn still_in(
        &self,
        queue: &SiteName,
        domain: &str,
        found: &super::deliver::Found,
        pool: Option<&str>,
    ) -> bool {
        let config = self.config();
        let (name, _) = site_of(&config.relay, domain, found);
        queue_name(&name, pool) == *queue
    }

    /// Queue `domain`'s `entries` again, its site looked up afresh. Once
    /// a minute at most: a domain whose lookups disagree again (hosts that
    /// resolve only at times, a policy that cannot always be fetched) is
    /// deferred instead, so it never goes round without an attempt.
    pub(crate) fn place_again(self: &Rc<Self>, domain: &str, entries: Vec<QueueEntry>) {
        let now = Instant::now();
        let again = {
            let mut state = self.state.borrow_mut();
            state.site_of.remove(domain);
            state
                .placed_again
                .retain(|_, at| now.duration_since(*at) < PLACE_AGAIN_EVERY);
            match state.placed_again.contains_key(domain) {
                true => true,
                false => {
                    state.placed_again.insert(domain.to_owned(), now);
                    false
                }
            }
        };
        if again {
            let why = NoRoute {
                permanent: false,
                status: "4.4.3",
                text: format!(
                    "the MX hosts or TLS policy of {domain} keep changing between lookups"
                ),
            };
            self.fail_all(entries, &why, None);
            return;
        }
        for entry in entries {
            self.make_ready(entry);
        }
    }

    /// The ready entries of `domain` in `site`'s queue; the domain's site
    /// will be looked up again.
    pub fn drain_domain(&self, site: &SiteName, domain: &str) -> Vec<QueueEntry> {
        let mut state = self.state.borrow_mut();
        state.site_of.remove(domain);
        let Some(dest) = state.sites.get_mut(site) else {
            return Vec::new();
        };
        let (theirs, others): (Vec<_>, Vec<_>) =
            dest.ready.drain(..).partition(|e| e.domain == domain);
        dest.ready = others.into();
        theirs
    }

    /// Every ready entry of `site` (a destination that cannot be reached
    /// fails them all at once, as Postfix does with a dead destination).
    pub fn drain_ready(&self, site: &SiteName) -> Vec<QueueEntry> {
        let mut state = self.state.borrow_mut();
        match state.sites.get_mut(site) {
            Some(dest) => dest.ready.drain(..).collect(),
            None => Vec::new(),
        }
    }

    /// Read a message's envelope and body: here when the store has both in
    /// memory (mail just taken usually is), else off the executor thread,
    /// which must not wait for the disk.
    pub async fn load(&self, id: MessageId) -> Result<Option<Loaded>, StoreError> {
        let mut loaded = match self.load_in_memory(id)? {
            InMemory::Found(envelope, body) => Loaded { envelope, body },
            InMemory::Gone => return Ok(None),
            InMemory::OnDisk => match self.load_from_disk(id).await? {
                Some(loaded) => loaded,
                None => return Ok(None),
            },
        };
        // The envelope sender travels in MAIL FROM; the next server adds
        // its own Return-Path when it delivers (RFC 5321 §4.4).
        crate::intake::without_return_path(&mut loaded.body);
        Ok(Some(loaded))
    }

    /// A message's envelope and body if the store has them in memory.
    pub fn load_in_memory(&self, id: MessageId) -> Result<InMemory, StoreError> {
        spool::read_message_in_memory(&*self.store, &id)
    }

    /// Read a message's envelope and body off the executor thread.
    pub async fn load_from_disk(&self, id: MessageId) -> Result<Option<Loaded>, StoreError> {
        let store = self.store.clone();
        glommio::executor()
            .spawn_blocking(move || {
                let Some(envelope) = spool::read_envelope(&*store, &id)? else {
                    return Ok(None);
                };
                let Some(body) = spool::read_body(&*store, &id)? else {
                    return Ok(None);
                };
                Ok(Some(Loaded { envelope, body }))
            })
            .await
    }

    /// Move due entries to their ready queues; sweep the store if needed.
    async fn tick(self: &Rc<Self>) {
        let now = now_millis();
        let due: Vec<schedule::Slot> = {
            let mut state = self.state.borrow_mut();
            std::iter::from_fn(|| state.schedule.pop_due(now))
                .take(WAKE_BATCH)
                .collect()
        };
        if !due.is_empty() {
            self.wake(due).await;
        }
        self.metrics
            .deferred
            .set(self.state.borrow().schedule.deferred_len() as i64);
        // Sites their limits held back whose time has come (a slot may have
        // freed on another shard, a suspension ended, a token come), and
        // sites that found the shard's connections all taken.
        let retry: Vec<SiteName> = {
            let mut state = self.state.borrow_mut();
            let now = shaping::now_micros();
            let due: Vec<SiteName> = state
                .blocked
                .iter()
                .filter(|(_, at)| **at <= now)
                .map(|(site, _)| site.clone())
                .collect();
            for site in &due {
                state.blocked.remove(site);
            }
            let starved: Vec<SiteName> = state.starved.drain(..).collect();
            state.starved_set.clear();
            due.into_iter().chain(starved).collect()
        };
        for site in retry {
            self.dispatch(&site);
        }
        self.sample_oldest();
        if self.hub.take_overflow(self.shard) {
            let mut state = self.state.borrow_mut();
            state.overflow = true;
            // Entries the inbox had no room for are due now.
            state.store_min_due = 0;
        }
        let max = self.config().relay.max_queued_per_shard;
        let sweep = {
            let state = self.state.borrow();
            // A sweep in progress goes on at the next tick while there is room.
            let going_on = state.sweep_from.is_some() && state.schedule.known_len() < max;
            let time = !state.stopping
                && (going_on
                    || state.overflow
                        && state
                            .last_sweep
                            .is_none_or(|t| t.elapsed() >= SWEEP_INTERVAL));
            if !time {
                None
            } else if going_on || state.schedule.known_len() < max / 2 + 1 {
                Some(Sweep::All)
            } else if state.store_min_due <= now_millis() {
                Some(Sweep::Due)
            } else {
                None
            }
        };
        if let Some(kind) = sweep {
            self.sweep(kind).await;
        }
    }

    /// Read deferred entries whose time has come back from the store (the
    /// schedule keeps only their keys) and make them ready. One that is no
    /// longer there under that key was changed or removed meanwhile (an
    /// operator): it leaves memory, and a sweep finds what the store has.
    async fn wake(self: &Rc<Self>, due: Vec<schedule::Slot>) {
        let keys: Vec<Vec<u8>> = due
            .iter()
            .map(|(_, id, domain, stored_due)| spool::queue_key(*stored_due, id, domain))
            .collect();
        let store = self.store.clone();
        let read = glommio::executor()
            .spawn_blocking(move || {
                keys.iter()
                    .map(|key| {
                        store
                            .get(ringpost_storage::Family::Queue, key)
                            .and_then(|value| {
                                value
                                    .map(|value| QueueEntry::decode(key, &value))
                                    .transpose()
                            })
                    })
                    .collect::<Vec<_>>()
            })
            .await;
        for (slot, entry) in due.into_iter().zip(read) {
            let (_, id, domain, stored_due) = slot;
            match entry {
                Ok(Some(entry)) => self.make_ready(entry),
                Ok(None) => {
                    let mut state = self.state.borrow_mut();
                    state.forget(id, &domain);
                    state.overflow = true;
                    state.store_min_due = 0;
                }
                Err(e) => {
                    tracing::error!(shard = self.shard, queue_id = %id, error = %e, "cannot read a due queue entry; retrying later");
                    let wake = now_millis() + STORE_RETRY.as_millis() as u64;
                    let mut state = self.state.borrow_mut();
                    state.schedule.defer(wake, id, &domain, stored_due);
                }
            }
        }
    }

    /// The oldest entry's age, at most once a second (a pass over the
    /// entries in memory).
    fn sample_oldest(&self) {
        let mut state = self.state.borrow_mut();
        if state
            .last_oldest_sample
            .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
        {
            return;
        }
        state.last_oldest_sample = Some(Instant::now());
        // Forget what domains' sites were once it is stale.
        let now = Instant::now();
        state.site_of.retain(|_, known| now < known.until);
        state.schedule.prune_domains();
        let oldest = state.schedule.oldest_micros();
        let age = oldest.map_or(0, |micros| {
            intake::unix_micros().saturating_sub(micros) / 1_000_000
        });
        self.metrics
            .oldest
            .set(i64::try_from(age).unwrap_or(i64::MAX));
    }

    /// Load owned entries the store has and memory lacks, in due order: up
    /// to the memory limit ([`Sweep::All`]), or the due ones in place of
    /// deferred ones due later ([`Sweep::Due`]). A range scan of the
    /// due-time index, run off the executor, [`SWEEP_BATCH`] entries at a
    /// time; bodies are not read.
    async fn sweep(self: &Rc<Self>, kind: Sweep) {
        if kind == Sweep::Due {
            return self.sweep_due().await;
        }
        let (from, room) = {
            let mut state = self.state.borrow_mut();
            state.last_sweep = Some(Instant::now());
            let from = state.sweep_from.take();
            if from.is_none() {
                // A new pass: it will find what the store has (entries left
                // there meanwhile set these again).
                state.overflow = false;
                state.store_min_due = u64::MAX;
                state.sweep_loaded = 0;
            }
            let room = self
                .config()
                .relay
                .max_queued_per_shard
                .saturating_sub(state.schedule.known_len());
            (from.unwrap_or_default(), room)
        };
        let (store, shard, shards) = (self.store.clone(), self.shard, self.hub.shards());
        let config = self.config();
        self.begin_scan();
        let scanned = glommio::executor()
            .spawn_blocking(move || {
                let mut found = Vec::new();
                let mut last = Vec::new();
                let mut ended = true;
                let result = spool::scan_queue_entries_from(&*store, &from, &mut |entry| {
                    if found.len() == SWEEP_BATCH {
                        last = entry.key();
                        ended = false;
                        return false;
                    }
                    if sweeps_in(&entry, shard, shards, &config) {
                        found.push(entry);
                    }
                    true
                });
                result.map(|()| (found, last, ended))
            })
            .await;
        let fresh = scanned.map(|(found, last, ended)| (self.not_in_memory(found), last, ended));
        self.end_scan();
        let (fresh, last, ended) = match fresh {
            Ok(scanned) => scanned,
            Err(e) => {
                tracing::error!(shard = self.shard, error = %e, "queue sweep failed; will retry");
                let mut state = self.state.borrow_mut();
                state.overflow = true;
                state.store_min_due = 0;
                return;
            }
        };
        let left_out = fresh.len() > room;
        let loaded = fresh.len().min(room);
        for entry in fresh.into_iter().take(room) {
            self.admit(entry);
        }
        let mut state = self.state.borrow_mut();
        state.sweep_loaded += loaded;
        if left_out {
            // No room for all of it: the rest waits for the next pass.
            state.overflow = true;
            state.store_min_due = 0;
            state.sweep_from = None;
        } else if ended {
            state.sweep_from = None;
        } else {
            state.sweep_from = Some(last);
            return;
        }
        if state.sweep_loaded > 0 {
            tracing::info!(
                shard = self.shard,
                entries = state.sweep_loaded,
                more = left_out,
                "queue entries loaded from the store"
            );
        }
    }

    /// A store scan starts: entries forgotten from now on are noted.
    fn begin_scan(&self) {
        self.state.borrow_mut().scans += 1;
    }

    /// The entries of a store scan (begun with [`Relay::begin_scan`]) that
    /// memory does not hold yet and that did not leave it while the scan
    /// ran.
    fn not_in_memory(&self, found: Vec<QueueEntry>) -> Vec<QueueEntry> {
        let state = self.state.borrow();
        found
            .into_iter()
            .filter(|e| !state.schedule.is_known(e.id, &e.domain))
            .filter(|e| {
                let key = (e.id, e.domain.clone());
                !state.forgotten_in_scan.contains(&key) && !state.leaving.contains(&key)
            })
            .collect()
    }

    /// A store scan is over.
    fn end_scan(&self) {
        let mut state = self.state.borrow_mut();
        state.scans -= 1;
        if state.scans == 0 {
            state.forgotten_in_scan = HashSet::new();
        }
    }

    /// With memory full: bring in up to [`SWEEP_BATCH`] owned entries that
    /// are due now and not in memory; each takes the place of a deferred
    /// entry due later ([`Relay::admit`]). The scan stops at the first entry
    /// due later, and learns when the next one is due.
    async fn sweep_due(self: &Rc<Self>) {
        let limit = {
            let mut state = self.state.borrow_mut();
            state.last_sweep = Some(Instant::now());
            // Due entries in memory (ready, in flight) come up in the scan
            // too, and are skipped after it.
            state.schedule.known_len() - state.schedule.deferred_len() + SWEEP_BATCH
        };
        let now = now_millis();
        let (store, shard, shards) = (self.store.clone(), self.shard, self.hub.shards());
        let config = self.config();
        self.begin_scan();
        let scanned = glommio::executor()
            .spawn_blocking(move || {
                let mut found = Vec::new();
                let mut next_due = u64::MAX;
                let result = spool::scan_queue_entries(&*store, &mut |entry| {
                    if entry.due > now || found.len() == limit {
                        next_due = if entry.due > now { entry.due } else { 0 };
                        return false;
                    }
                    if sweeps_in(&entry, shard, shards, &config) {
                        found.push(entry);
                    }
                    true
                });
                result.map(|()| (found, next_due))
            })
            .await;
        let fresh = scanned.map(|(found, next_due)| (self.not_in_memory(found), next_due));
        self.end_scan();
        let (mut fresh, next_due) = match fresh {
            Ok(scanned) => scanned,
            Err(e) => {
                tracing::error!(shard = self.shard, error = %e, "queue sweep failed; will retry");
                return;
            }
        };
        fresh.truncate(SWEEP_BATCH);
        {
            // What the admits below evict lowers this again.
            let mut state = self.state.borrow_mut();
            state.store_min_due = if fresh.len() == SWEEP_BATCH {
                0
            } else {
                next_due
            };
        }
        if !fresh.is_empty() {
            tracing::info!(
                shard = self.shard,
                entries = fresh.len(),
                "due queue entries loaded from the store in place of later ones"
            );
        }
        for entry in fresh {
            self.admit(entry);
        }
    }

    /// Record the outcome of one delivery attempt of `entry`: finished
    /// recipients leave the queue, deferred ones get a later due time, failed
    /// ones a DSN to the sender, all in one commit.
    ///
    /// `via` is who answered (None when no host was reached); `loaded` is the
    /// message if the caller already read it.
    pub async fn finish(
        self: Rc<Self>,
        entry: QueueEntry,
        results: Vec<RecipientResult>,
        via: Option<Via>,
        loaded: Option<Loaded>,
    ) {
        self.state.borrow_mut().pending_commits += 1;
        self.record(entry, results, via, loaded).await;
        self.state.borrow_mut().pending_commits -= 1;
    }

    async fn record(
        self: &Rc<Self>,
        entry: QueueEntry,
        results: Vec<RecipientResult>,
        via: Option<Via>,
        loaded: Option<Loaded>,
    ) {
        let now_micros = intake::unix_micros();
        let age = Duration::from_micros(now_micros.saturating_sub(entry.id.unix_micros()));
        let expired = age >= Duration::from_secs(self.config().relay.max_lifetime_secs);
        let host = via.as_ref().map(|v| v.host.as_str());
        let sorted = sort_results(&results, &self.bounce_rules(), host, expired);
        log_attempt(self.shard, &entry, host, &results, &sorted);
        let events = self.log_recipients(&entry, &results, &sorted, via.as_ref(), &loaded, age);
        self.metrics.delivered.inc_by(sorted.delivered as u64);
        self.metrics
            .deferred_recipients
            .inc_by(sorted.deferred.len() as u64);
        self.metrics.bounced.inc_by(sorted.failed.len() as u64);
        if sorted.delivered > 0 {
            self.metrics.delivery_seconds.observe(age.as_secs_f64());
        }

        let finished = sorted.deferred.is_empty();
        let loaded = match loaded {
            Some(loaded) => Some(loaded),
            // The envelope decides the DSNs and the end of the message.
            None if finished || !sorted.failed.is_empty() => match self.load(entry.id).await {
                Ok(loaded) => loaded,
                Err(e) => {
                    tracing::error!(shard = self.shard, queue_id = %entry.id, error = %e, "cannot read message; retrying later");
                    self.retry_later(entry);
                    return;
                }
            },
            None => None,
        };
        // What the sender asked to hear of (NOTIFY): failures, and
        // successes at a host that will not report them itself.
        let mut reported = Vec::new();
        let mut null_sender = false;
        if let Some(Loaded { envelope, .. }) = &loaded {
            null_sender = envelope.sender.is_empty();
            if !null_sender {
                reported = bounce::failures_to_report(envelope, &sorted.failed);
                if !via.as_ref().is_some_and(|v| v.dsn) {
                    reported.extend(bounce::relayed_to_report(envelope, &results, host));
                }
            }
        }
        // A DSN quotes the original's header; the caller may have had only
        // the envelope.
        let loaded = match loaded {
            Some(Loaded { envelope, body }) if body.is_empty() && !reported.is_empty() => {
                match self.load(entry.id).await {
                    Ok(Some(full)) => Some(Loaded {
                        envelope,
                        body: full.body,
                    }),
                    Ok(None) => Some(Loaded { envelope, body }),
                    // The outcome is recorded all the same (retrying would
                    // send the message again to whoever took it); the DSN
                    // goes without the original's header section.
                    Err(e) => {
                        tracing::warn!(shard = self.shard, queue_id = %entry.id, error = %e, "cannot read message for its DSN; the DSN goes without its header section");
                        Some(Loaded { envelope, body })
                    }
                }
            }
            other => other,
        };

        let mut batch = WriteBatch::new();
        // What happened to mail is recorded on a nearly full disk too, DSN
        // and all: refused, the attempt would be repeated and the mail sent
        // again.
        batch.pass_reserve();
        if let Some(spool) = &self.events {
            for (kind, fields) in events {
                spool.add(&mut batch, kind, fields);
            }
        }
        let next = if finished {
            spool::delete_queue_entry(&mut batch, &entry);
            None
        } else {
            let attempts = entry.attempts.saturating_add(1);
            let next = QueueEntry {
                due: now_micros / 1000 + self.backoff(attempts).as_millis() as u64,
                recipients: sorted.deferred,
                attempts,
                last_error: sorted.last_error,
                ..entry.clone()
            };
            spool::reschedule(&mut batch, &entry, &next);
            Some(next)
        };
        let mut bounce_entries = Vec::new();
        let mut tell_home = false;
        if let Some(Loaded { envelope, body }) = &loaded {
            if null_sender {
                if !sorted.failed.is_empty() {
                    tracing::info!(shard = self.shard, queue_id = %entry.id, "no DSN: the sender is null");
                }
            } else if reported.is_empty() {
                if !sorted.failed.is_empty() {
                    tracing::info!(shard = self.shard, queue_id = %entry.id, "no DSN: the sender asked for none (NOTIFY)");
                }
            } else {
                let id = self.ids.borrow_mut().next(now_micros);
                let is_local = |d: &str| self.config().is_local_domain(d);
                // Bounces leave through the default pool.
                let config = self.config();
                // A local sender's report goes where its mail would.
                let resolve = intake::local_targets_in(&config, &*self.store);
                let to = intake::Recipients {
                    local_targets: Some(&resolve),
                    hostname: &config.hostname,
                    is_local: &is_local,
                    pool: config.relay.default_pool.as_deref(),
                };
                let dsn =
                    bounce::new_dsn(id, &to, &entry.id, envelope, body, &reported, now_micros);
                tracing::info!(shard = self.shard, queue_id = %entry.id, dsn_id = %id, to = %envelope.sender, recipients = reported.len(), "DSN queued");
                self.metrics.dsns.inc();
                bounce_entries = dsn.queue.clone();
                batch.append(dsn.into_batch());
            }
            if !sorted.failed.is_empty() {
                self.suppress_hard_bounces(
                    &mut batch,
                    &entry,
                    envelope,
                    &results,
                    &sorted.classes,
                    now_micros,
                );
            }
            if finished {
                let hostname = &self.config().hostname;
                let only_domain = envelope
                    .recipients
                    .iter()
                    .all(|r| intake::recipient_domain(r, hostname) == entry.domain);
                if only_domain {
                    spool::delete_message(&mut batch, &entry.id);
                } else {
                    tell_home = true;
                }
            }
        }

        if let (Some(egress), Some(source)) = (&self.egress, via.as_ref().and_then(|v| v.source)) {
            egress.save(source, self.shard, &mut batch);
        }
        match self.commits.commit(batch).await {
            Ok(()) => {
                self.hub.route(bounce_entries);
                {
                    let mut state = self.state.borrow_mut();
                    match next {
                        Some(next) => {
                            state
                                .schedule
                                .defer(next.due, next.id, &next.domain, next.due)
                        }
                        None => {
                            state.forget(entry.id, &entry.domain);
                            self.metrics.queued.set(state.schedule.known_len() as i64);
                        }
                    }
                }
                if tell_home {
                    self.hub.domain_done(entry.id, entry.domain).await;
                }
            }
            Err(e) => {
                tracing::error!(shard = self.shard, queue_id = %entry.id, error = %e, "cannot record delivery outcome; the attempt will be repeated");
                self.retry_later(entry);
            }
        }
    }

    /// Split `recipients` into those to send and the suppressed ones, the
    /// latter with our own permanent refusal. A failed lookup sends: the
    /// list only saves remote servers from repeats, it guards nothing.
    pub(crate) fn drop_suppressed(
        &self,
        envelope: &Envelope,
        recipients: &[String],
    ) -> (Vec<String>, Vec<RecipientResult>) {
        let Some((_, sender_domain)) = envelope.sender.rsplit_once('@') else {
            return (recipients.to_vec(), Vec::new());
        };
        if !self.config().suppression.enabled {
            return (recipients.to_vec(), Vec::new());
        }
        let now = intake::unix_micros();
        let mut send = Vec::with_capacity(recipients.len());
        let mut refused = Vec::new();
        for recipient in recipients {
            match suppression::find(&*self.store, sender_domain, recipient, now) {
                Ok(Some(_)) => refused.push(RecipientResult {
                    recipient: recipient.clone(),
                    reply: ServerReply {
                        code: 550,
                        status: Some("5.1.1".into()),
                        text: SUPPRESSED.into(),
                        local: true,
                    },
                }),
                Ok(None) => send.push(recipient.clone()),
                Err(e) => {
                    tracing::warn!(shard = self.shard, error = %e, "suppression lookup failed; sending");
                    send.push(recipient.clone());
                }
            }
        }
        (send, refused)
    }

    /// Put the recipients a remote refused as nonexistent on the
    /// suppression list, in the commit that records the bounce.
    fn suppress_hard_bounces(
        &self,
        batch: &mut WriteBatch,
        entry: &QueueEntry,
        envelope: &Envelope,
        results: &[RecipientResult],
        classes: &[Option<Class>],
        now_micros: u64,
    ) {
        let config = &self.config().suppression;
        let Some((_, sender_domain)) = envelope.sender.rsplit_once('@') else {
            return; // the null sender: a DSN that bounced stops nobody's mail
        };
        if !config.enabled {
            return;
        }
        let scope = match config.scope {
            SuppressionScope::SenderDomain => sender_domain,
            SuppressionScope::Global => "",
        };
        let expires_micros = match config.ttl_days {
            0 => 0,
            days => now_micros.saturating_add(days.saturating_mul(86_400_000_000)),
        };
        for (result, class) in results.iter().zip(classes) {
            let reply = &result.reply;
            if *class != Some(Class::InvalidRecipient) || !reply.is_permanent() || reply.local {
                continue;
            }
            suppression::put(
                batch,
                &Suppression {
                    scope: scope.to_owned(),
                    address: result.recipient.clone(),
                    added_micros: now_micros,
                    expires_micros,
                    class: Class::InvalidRecipient.name().to_owned(),
                    reason: reply.to_string(),
                },
            );
            self.metrics.suppressions_added.inc();
            tracing::info!(shard = self.shard, queue_id = %entry.id, recipient = %result.recipient, scope, "address suppressed after a hard bounce");
        }
    }

    /// One mail log line per recipient of an attempt; and, when the
    /// webhook is on, each one's event (kind and fields) for the commit.
    fn log_recipients(
        &self,
        entry: &QueueEntry,
        results: &[RecipientResult],
        sorted: &Sorted,
        via: Option<&Via>,
        loaded: &Option<Loaded>,
        age: Duration,
    ) -> Vec<(&'static str, serde_json::Map<String, serde_json::Value>)> {
        let mut events = Vec::new();
        let queue_id = entry.id.to_hex();
        for (result, class) in results.iter().zip(&sorted.classes) {
            let reply = &result.reply;
            let disposition = if reply.is_positive() {
                Disposition::Delivered
            } else if reply.is_permanent() || sorted.expired {
                Disposition::Bounced
            } else {
                Disposition::Deferred
            };
            let status = reply.status.as_deref().unwrap_or(match disposition {
                Disposition::Delivered => "2.0.0",
                Disposition::Deferred => "4.0.0",
                Disposition::Bounced => "5.0.0",
            });
            let class = class.map(Class::name);
            if let Some(class) = class {
                self.metrics.refused(disposition.name(), class);
            }
            let attempt = Attempt {
                queue_id: &queue_id,
                shard: self.shard,
                recipient: &result.recipient,
                domain: &entry.domain,
                host: via.filter(|_| !reply.local).map(|v| v.host.as_str()),
                site: via.and_then(|v| v.site.as_deref()),
                addr: via.filter(|_| !reply.local).and_then(|v| v.addr),
                tls: via.and_then(|v| v.tls),
                attempt: entry.attempts + 1,
                result: disposition,
                status,
                class,
                reply: &reply.to_string(),
                delay: age.as_secs_f64(),
                size: loaded.as_ref().map(|l| l.envelope.size),
            };
            self.maillog.attempt(&attempt);
            if self.events.is_some() {
                let kind = match reply.local && reply.text == SUPPRESSED {
                    true => "suppressed",
                    false => disposition.name(),
                };
                events.push((kind, attempt.fields()));
            }
        }
        events
    }

    /// Keep an unchanged entry in memory and try it again after a pause.
    fn retry_later(&self, entry: QueueEntry) {
        // The store still has it as it was: under its old due time.
        let wake = now_millis() + STORE_RETRY.as_millis() as u64;
        self.state
            .borrow_mut()
            .schedule
            .defer(wake, entry.id, &entry.domain, entry.due);
    }

    /// A destination with no usable host: every entry in `entries` gets the
    /// same answer (deferred or, if permanent, bounced).
    pub fn fail_all(self: &Rc<Self>, entries: Vec<QueueEntry>, why: &NoRoute, via: Option<Via>) {
        let reply = ServerReply {
            code: if why.permanent { 550 } else { 451 },
            status: Some(why.status.to_owned()),
            text: why.text.clone(),
            local: true,
        };
        for entry in entries {
            let results = same_reply(&entry, &reply);
            glommio::spawn_local(self.clone().finish(entry, results, via.clone(), None)).detach();
        }
    }

    /// Retry delay before attempt `attempts + 1`, with this shard's jitter.
    fn backoff(&self, attempts: u32) -> Duration {
        retry_delay(&self.config().relay, attempts, self.random_unit())
    }

    /// A number in [0, 1) from a per-shard xorshift generator.
    pub(crate) fn random_unit(&self) -> f64 {
        let mut x = self.rng.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng.set(x);
        (x >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Home-shard bookkeeping: the recipients of `domain` of message `id` are
    /// done. Drop them from the envelope; delete the message when none is left.
    fn domain_done(self: &Rc<Self>, id: MessageId, domain: String) {
        let pending = self.state.borrow().home.get(&id).map(|(e, _)| e.clone());
        // A point read of a recent record; usually served from memory.
        let envelope = match pending {
            Some(envelope) => envelope,
            None => match spool::read_envelope(&*self.store, &id) {
                Ok(Some(envelope)) => envelope,
                Ok(None) => return, // already gone
                Err(e) => {
                    tracing::error!(shard = self.shard, queue_id = %id, error = %e, "cannot read envelope; the message stays");
                    return;
                }
            },
        };
        let hostname = &self.config().hostname;
        let mut left = envelope;
        left.recipients
            .retain(|r| intake::recipient_domain(r, hostname) != domain);
        let mut batch = WriteBatch::new();
        if left.recipients.is_empty() {
            spool::delete_message(&mut batch, &id);
        } else {
            spool::put_envelope(&mut batch, &id, &left);
        }
        let generation = {
            let mut state = self.state.borrow_mut();
            state.home_generation += 1;
            let generation = state.home_generation;
            state.home.insert(id, (left, generation));
            state.pending_commits += 1;
            generation
        };
        let relay = self.clone();
        glommio::spawn_local(async move {
            if let Err(e) = relay.commits.commit(batch).await {
                tracing::error!(shard = relay.shard, queue_id = %id, error = %e, "cannot update envelope; the body stays");
            }
            let mut state = relay.state.borrow_mut();
            if state.home.get(&id).is_some_and(|(_, g)| *g == generation) {
                state.home.remove(&id);
            }
            state.pending_commits -= 1;
        })
        .detach();
    }
}

/// Retry delay before attempt `attempts + 1`: doubling from the initial
/// delay up to the maximum, then ±25 % jitter (`unit` in [0, 1)) so that
/// entries deferred together do not all come back together.
fn retry_delay(relay: &RelayConfig, attempts: u32, unit: f64) -> Duration {
    let doublings = attempts.saturating_sub(1).min(30);
    let base = relay
        .retry_initial_secs
        .saturating_mul(1 << doublings)
        .min(relay.retry_max_secs) as f64;
    Duration::from_secs_f64(base * (0.75 + 0.5 * unit))
}

/// Every recipient of `entry` with the same `reply`.
fn same_reply(entry: &QueueEntry, reply: &ServerReply) -> Vec<RecipientResult> {
    entry
        .recipients
        .iter()
        .map(|r| RecipientResult {
            recipient: r.clone(),
            reply: reply.clone(),
        })
        .collect()
}

/// The bounce class of each refused recipient (None: accepted).
fn classify(rules: &[bounce_class::Rule], results: &[RecipientResult]) -> Vec<Option<Class>> {
    results
        .iter()
        .map(|r| {
            let reply = &r.reply;
            (!reply.is_positive()).then(|| {
                bounce_class::classify(rules, reply.status.as_deref().unwrap_or(""), &reply.text)
            })
        })
        .collect()
}

/// Split results into delivered, deferred and failed recipients, and
/// classify each refusal by `rules`.
fn sort_results(
    results: &[RecipientResult],
    rules: &[bounce_class::Rule],
    host: Option<&str>,
    expired: bool,
) -> Sorted {
    let classes = classify(rules, results);
    let mut sorted = Sorted {
        delivered: 0,
        deferred: Vec::new(),
        failed: Vec::new(),
        last_error: None,
        classes: Vec::new(),
        expired,
    };
    for (result, class) in results.iter().zip(&classes) {
        let reply = &result.reply;
        if reply.is_positive() {
            sorted.delivered += 1;
            continue;
        }
        sorted.last_error = Some(reply.to_string());
        if reply.is_permanent() || expired {
            let status = reply.status.clone().unwrap_or_else(|| {
                if reply.is_permanent() {
                    "5.0.0"
                } else {
                    "4.4.7"
                }
                .to_owned()
            });
            sorted.failed.push(RecipientStatus {
                recipient: result.recipient.clone(),
                action: Action::Failed,
                status,
                remote_mta: (!reply.local).then(|| host.map(str::to_owned)).flatten(),
                diagnostic: Some(if reply.local {
                    Diagnostic::Local(reply.to_string())
                } else {
                    Diagnostic::Smtp(reply.to_string())
                }),
                meaning: class.map(|c| c.describe().to_owned()),
                original_recipient: None,
            });
        } else {
            sorted.deferred.push(result.recipient.clone());
        }
    }
    sorted.classes = classes;
    sorted
}

/// One log line per attempt: queue id, domain, host, and the deciding reply.
fn log_attempt(
    shard: usize,
    entry: &QueueEntry,
    host: Option<&str>,
    results: &[RecipientResult],
    sorted: &Sorted,
) {
    let reply = results
        .iter()
        .find(|r| !r.reply.is_positive())
        .or(results.first())
        .map(|r| r.reply.to_string())
        .unwrap_or_default();
    // The mail log has a line per recipient at info; this one sums the
    // attempt up, for whoever debugs the relay.
    tracing::debug!(
        shard,
        queue_id = %entry.id,
        domain = %entry.domain,
        host = host.unwrap_or("-"),
        attempt = entry.attempts + 1,
        delivered = sorted.delivered,
        deferred = sorted.deferred.len(),
        bounced = sorted.failed.len(),
        %reply,
        "delivery attempt"
    );
}

/// Milliseconds since the Unix epoch.
fn now_millis() -> u64 {
    intake::unix_micros() / 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An entry that leaves memory while a store scan runs is remembered
    /// until the scan is over, so the scan cannot bring it back.
    #[test]
    fn entries_forgotten_during_a_scan_are_remembered_for_it() {
        let id = MessageId::new(1, 0, 1);
        let mut state = State::default();
        state.schedule.defer(10, id, "d.test", 10);
        state.forget(id, "d.test");
        assert!(state.forgotten_in_scan.is_empty(), "no scan, nothing kept");
        state.scans = 1;
        state.schedule.defer(10, id, "d.test", 10);
        state.forget(id, "d.test");
        assert!(!state.schedule.is_known(id, "d.test"));
        assert!(state.forgotten_in_scan.contains(&(id, "d.test".to_owned())));
    }

    fn result(recipient: &str, code: u16, status: Option<&str>, local: bool) -> RecipientResult {
        RecipientResult {
            recipient: recipient.into(),
            reply: ServerReply {
                code,
                status: status.map(str::to_owned),
                text: "text".into(),
                local,
            },
        }
    }

    #[test]
    fn results_sort_into_delivered_deferred_and_failed() {
        let results = [
            result("a@x.test", 250, Some("2.0.0"), false),
            result("b@x.test", 451, Some("4.3.0"), false),
            result("c@x.test", 550, Some("5.1.1"), false),
            result("d@x.test", 552, None, true),
        ];
        let rules = bounce_class::default_rules();
        let classes = classify(&rules, &results);
        assert_eq!(
            classes,
            [
                None,
                Some(Class::Other),
                Some(Class::InvalidRecipient),
                Some(Class::Other)
            ]
        );
        let sorted = sort_results(&results, &rules, Some("mx.x.test"), false);
        assert_eq!(sorted.classes, classes);
        assert_eq!(sorted.delivered, 1);
        assert_eq!(sorted.deferred, vec!["b@x.test"]);
        assert_eq!(sorted.failed.len(), 2);
        assert_eq!(sorted.failed[0].status, "5.1.1");
        assert_eq!(sorted.failed[0].remote_mta.as_deref(), Some("mx.x.test"));
        assert_eq!(
            sorted.failed[0].diagnostic,
            Some(Diagnostic::Smtp("550 5.1.1 text".into()))
        );
        assert_eq!(
            sorted.failed[0].meaning.as_deref(),
            Some(Class::InvalidRecipient.describe())
        );
        assert_eq!(
            sorted.failed[1].diagnostic,
            Some(Diagnostic::Local("552 text".into())),
            "our own verdict is not typed smtp"
        );
        assert_eq!(
            sorted.failed[1].status, "5.0.0",
            "a missing status is filled in"
        );
        assert_eq!(
            sorted.failed[1].remote_mta, None,
            "our own verdict names no host"
        );
        assert_eq!(sorted.last_error.as_deref(), Some("552 text"));
    }

    #[test]
    fn operators_rules_come_before_the_built_in_ones() {
        let config: Config = Config::parse(
            "[[relay.bounce_rules]]\nclass = \"rate_limited\"\nstatus = \"5.7.1\"\ncontains = \"slow down\"\n",
        )
        .unwrap();
        let rules = config.relay.bounce_classifier().unwrap();
        let results = [
            result("a@x.test", 550, Some("5.7.1"), false),
            RecipientResult {
                recipient: "b@x.test".into(),
                reply: ServerReply {
                    code: 550,
                    status: Some("5.7.1".into()),
                    text: "Please SLOW DOWN".into(),
                    local: false,
                },
            },
        ];
        assert_eq!(
            classify(&rules, &results),
            [Some(Class::Policy), Some(Class::RateLimited)]
        );
        for (bad, why) in [
            ("class = \"nonsense\"\nstatus = \"5.\"", "is none of"),
            ("class = \"policy\"", "needs `status`"),
        ] {
            let err = Config::parse(&format!("[[relay.bounce_rules]]\n{bad}\n")).unwrap_err();
            let text = err.to_string();
            assert!(
                text.contains("relay.bounce_rules") && text.contains(why),
                "{text}"
            );
        }
    }

    #[test]
    fn retries_double_up_to_the_cap_with_jitter() {
        let relay = RelayConfig {
            retry_initial_secs: 300,
            retry_max_secs: 3600,
            ..RelayConfig::default()
        };
        let secs = |attempts, unit| retry_delay(&relay, attempts, unit).as_secs();
        assert_eq!(secs(1, 0.5), 300);
        assert_eq!(secs(2, 0.5), 600);
        assert_eq!(secs(4, 0.5), 2400);
        assert_eq!(secs(5, 0.5), 3600, "capped");
        assert_eq!(secs(500, 0.5), 3600, "no overflow");
        assert_eq!(secs(1, 0.0), 225, "-25 %");
        assert_eq!(secs(1, 0.999_999), 374, "just under +25 %");
    }

    #[test]
    fn expired_messages_fail_instead_of_deferring() {
        let results = [result("b@x.test", 451, None, false)];
        let sorted = sort_results(&results, &bounce_class::default_rules(), None, true);
        assert!(sorted.deferred.is_empty());
        assert_eq!(sorted.failed[0].status, "4.4.7");
        assert_eq!(sorted.failed[0].action, Action::Failed);
    }
}
