//! One shard: a glommio executor pinned to a core, with its own listening
//! sockets (one per service, SO_REUSEPORT, so the kernel spreads
//! connections), its own sessions, counters, memory budget and id
//! sequence. Shared with other shards: the commit handle (a channel), the
//! store (read), the mail-access state ([`Access`]), the authenticator and
//! the per-address limits (one lock each, taken once per connection or
//! login).
//!
//! Every accepted connection goes the same way: the per-address limits and
//! the shard's connection cap first (before any other work), then TLS for
//! the implicit-TLS ports, then the protocol's session on the one driver
//! in [`crate::conn`].

use crate::access::Access;
use crate::auth::Authenticator;
use crate::budget::MemoryBudget;
use crate::config::Config;
use crate::conn::{self, Connection};
use crate::intake::IdGenerator;
use crate::limits::{ConnectionLimits, Refusal, SendRate};
use crate::live::LiveConfig;
use crate::metrics::{
    ImapMetrics, ManageSieveMetrics, Metrics, Pop3Metrics, SecurityMetrics, ShardMetrics,
};
use crate::relay::queue::Relay;
use crate::relay::Hub;
use crate::{imap, managesieve, pop3, smtp};
use futures::channel::oneshot;
use futures::future::{FutureExt as _, Shared};
use futures_lite::{AsyncWriteExt, FutureExt};
use futures_rustls::TlsAcceptor;
use glommio::net::TcpListener;
use ringpost_protocols::imap::{ImapConfig, ImapSession};
use ringpost_protocols::managesieve::{ManageSieveConfig, ManageSieveSession};
use ringpost_protocols::pop3::{self as pop3_proto, replies as pop3_replies, Pop3Config};
use ringpost_protocols::smtp::{self as smtp_proto, replies, ServerConfig, ServerSession};
use ringpost_storage::spool::MessageId;
use ringpost_storage::{CommitHandle, Store};
use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Resolves once the server is asked to stop; cheap to clone.
pub(crate) type ShutdownSignal = Shared<oneshot::Receiver<()>>;

/// How long in-flight transactions may take to finish once shutdown begins.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// The services a shard listens for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Service {
    /// SMTP on the MX port: mail in, STARTTLS offered.
    Smtp,
    /// Submission with STARTTLS (RFC 6409, port 587): AUTH required.
    Submission,
    /// Submission over implicit TLS (RFC 8314, port 465).
    Submissions,
    /// POP3 with STLS.
    Pop3,
    /// POP3 over implicit TLS.
    Pop3s,
    /// IMAP with STARTTLS.
    Imap,
    /// IMAP over implicit TLS.
    Imaps,
    /// ManageSieve with STARTTLS (RFC 5804).
    ManageSieve,
    /// LMTP (RFC 2033): final delivery handed over by another MTA.
    Lmtp,
}

/// The protocol a service speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Smtp,
    Pop3,
    Imap,
    ManageSieve,
}

impl Service {
    /// The metric and log label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Service::Smtp => "smtp",
            Service::Submission => "submission",
            Service::Submissions => "submissions",
            Service::Pop3 => "pop3",
            Service::Pop3s => "pop3s",
            Service::Imap => "imap",
            Service::Imaps => "imaps",
            Service::ManageSieve => "managesieve",
            Service::Lmtp => "lmtp",
        }
    }

    fn kind(self) -> Kind {
        match self {
            Service::Smtp | Service::Submission | Service::Submissions | Service::Lmtp => {
                Kind::Smtp
            }
            Service::Pop3 | Service::Pop3s => Kind::Pop3,
            Service::Imap | Service::Imaps => Kind::Imap,
            Service::ManageSieve => Kind::ManageSieve,
        }
    }

    /// TLS from the first byte.
    fn implicit_tls(self) -> bool {
        matches!(self, Service::Submissions | Service::Pop3s | Service::Imaps)
    }
}

/// What all shards share besides the store and the commit handle.
pub(crate) struct SharedState {
    /// Logins, maildrop locks and change notifications.
    pub access: Arc<Access>,
    /// Password checks and lockouts.
    pub auth: Arc<Authenticator>,
    /// Connections per client address.
    pub limits: Arc<ConnectionLimits>,
    /// Messages per account per hour.
    pub send_rate: Arc<SendRate>,
    /// TLS for every listener, if on.
    pub tls: Option<TlsAcceptor>,
    /// DKIM keys for outbound mail, if any.
    pub dkim: Option<Arc<crate::dkim::DkimSigner>>,
    /// Where accepted messages and delivery attempts are logged.
    pub maillog: Arc<crate::maillog::MailLog>,
    /// The relay's egress sources, if any (their daily counts are shared).
    pub egress: Option<Arc<crate::relay::egress::Egress>>,
    /// Every MX site's shared limits.
    pub sites: Arc<crate::relay::shaping::Sites>,
}

/// A shard's copy of the configuration in force, and the session
/// settings made from it.
struct View {
    generation: u64,
    config: Arc<Config>,
    smtp: Arc<ServerConfig>,
    pop3: Arc<Pop3Config>,
    imap: Arc<ImapConfig>,
    managesieve: Arc<ManageSieveConfig>,
    /// `smtp.sieve_filter`, read and parsed once per configuration.
    sieve_filter: Option<Arc<ringpost_protocols::sieve::Script>>,
}

impl View {
    /// From `config` (copied, so the shard's reference count is its own).
    fn new(config: &Config, store: &Arc<dyn Store>, tls: bool, generation: u64) -> View {
        let secs = Duration::from_secs;
        let smtp = Arc::new(ServerConfig {
            hostname: config.hostname.clone(),
            max_line_len: config.smtp.max_line_length,
            max_message_size: config.smtp.max_message_size,
            max_recipients: config.smtp.max_recipients,
            max_errors: config.smtp.max_errors,
            max_rejected_recipients: config.smtp.max_rejected_recipients,
            command_timeout: secs(config.smtp.command_timeout_secs),
            data_timeout: secs(config.smtp.data_timeout_secs),
            min_data_rate: config.smtp.min_data_rate,
            max_session: (config.smtp.max_session_secs > 0)
                .then(|| secs(config.smtp.max_session_secs)),
            login_timeout: secs(config.submission.login_timeout_secs),
            tls_available: tls,
            sender_policy: match config.submission.sender_policy {
                crate::config::SenderPolicyConfig::Own => smtp_proto::SenderPolicy::Own,
                crate::config::SenderPolicyConfig::Domain => smtp_proto::SenderPolicy::Domain,
                crate::config::SenderPolicyConfig::Any => smtp_proto::SenderPolicy::Any,
            },
            sender_addresses: {
                let store = store.clone();
                smtp_proto::SenderAddresses {
                    is_account: Some(smtp_proto::AccountCheck(Arc::new(move |name: &str| {
                        crate::intake::account_exists(&*store, name)
                    }))),
                    ..config.sender_addresses()
                }
            },
        });
        let pop3 = Arc::new(Pop3Config {
            hostname: config.hostname.clone(),
            max_errors: config.pop3.max_errors,
            stls_available: tls,
            plaintext_auth_allowed: false,
            idle_timeout: secs(config.pop3.idle_timeout_secs),
            login_timeout: secs(config.pop3.login_timeout_secs),
            ..Pop3Config::default()
        });
        let imap = Arc::new(ImapConfig {
            hostname: config.hostname.clone(),
            max_command_size: config.imap.max_command_size,
            max_errors: config.imap.max_errors,
            tls_available: tls,
            idle_timeout: secs(config.imap.idle_timeout_secs),
            login_timeout: secs(config.imap.login_timeout_secs),
        });
        let managesieve = Arc::new(ManageSieveConfig {
            hostname: config.hostname.clone(),
            tls_available: tls,
            idle_timeout: secs(config.managesieve.idle_timeout_secs),
            login_timeout: secs(config.managesieve.login_timeout_secs),
            max_errors: config.managesieve.max_errors,
        });
        let sieve_filter = config.smtp.sieve_filter.as_deref().and_then(|path| {
            crate::sieve::server_filter(path)
                .inspect_err(|e| tracing::error!(error = %e, "smtp.sieve_filter not in force"))
                .ok()
                .map(Arc::new)
        });
        View {
            generation,
            config: Arc::new(config.clone()),
            smtp,
            pop3,
            imap,
            managesieve,
            sieve_filter,
        }
    }
}

/// State owned by one shard's executor.
pub(crate) struct Shard {
    /// Shard number (0-based).
    pub id: usize,
    /// The configuration in force, reloadable.
    live: Arc<LiveConfig>,
    /// This shard's copy of it, and what sessions are handed.
    view: RefCell<View>,
    /// Where messages are made durable.
    pub commits: CommitHandle,
    /// The store, for reads on the shard itself (the recipient check,
    /// mailbox listings, message bodies).
    pub store: Arc<dyn Store>,
    /// This shard's SMTP metric handles.
    pub metrics: ShardMetrics,
    /// This shard's POP3 metric handles.
    pub pop3_metrics: Pop3Metrics,
    /// This shard's ManageSieve metric handles.
    pub managesieve_metrics: ManageSieveMetrics,
    /// This shard's IMAP metric handles.
    pub imap_metrics: ImapMetrics,
    /// Mailbox rows its IMAP sessions read lately, shared among them.
    pub imap_rows: RefCell<crate::imap::RowsCache>,
    /// TLS, AUTH, lockout and refusal counters.
    pub security: SecurityMetrics,
    /// Where accepted queue entries go to be delivered (None: relay off).
    pub hub: Option<Arc<Hub>>,
    /// Logins, maildrop locks and change notifications, shared by all shards.
    pub access: Arc<Access>,
    /// Password checks and lockouts, shared by all shards.
    pub auth: Arc<Authenticator>,
    /// Messages per account per hour, shared by all shards.
    pub send_rate: Arc<SendRate>,
    /// DKIM keys for outbound mail, if any.
    pub dkim: Option<Arc<crate::dkim::DkimSigner>>,
    /// Where accepted messages and delivery attempts are logged.
    pub maillog: Arc<crate::maillog::MailLog>,
    /// Reception events for the webhook, when one is configured.
    pub events: Option<crate::events::EventSpool>,
    /// DNS for SPF checks of inbound mail (None: SPF is off).
    pub spf_dns: Option<crate::relay::resolver::Resolver>,
    /// DNS for anything else the sessions ask (blocklists); None when the
    /// server runs without a resolver.
    pub dns: Option<crate::relay::resolver::Resolver>,
    /// What the inbound checks saw, for DMARC aggregate reports.
    pub dmarc_counter: crate::dmarc_reports::Counter,
    limits: Arc<ConnectionLimits>,
    tls: Option<TlsAcceptor>,
    /// Client data the shard's sessions hold.
    budget: MemoryBudget,
    ids: RefCell<IdGenerator>,
    smtp_active: Cell<usize>,
    lmtp_active: Cell<usize>,
    pop3_active: Cell<usize>,
    managesieve_active: Cell<usize>,
    imap_active: Cell<usize>,
}

/// Counts a session as active until it ends, however it ends.
pub(crate) struct ActiveSession<'a>(&'a Shard, Service);

impl Drop for ActiveSession<'_> {
    fn drop(&mut self) {
        let (count, gauge) = self.0.active(self.1);
        count.set(count.get() - 1);
        gauge.dec();
    }
}

impl Shard {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        id: usize,
        live: Arc<LiveConfig>,
        commits: CommitHandle,
        store: Arc<dyn Store>,
        metrics: &Metrics,
        hub: Option<Arc<Hub>>,
        shared: &SharedState,
        dns: Option<crate::relay::resolver::Resolver>,
    ) -> Shard {
        let imap_metrics = metrics.imap_shard(id);
        let tls = shared.tls.is_some();
        let config = live.get();
        let view = View::new(&config, &store, tls, live.generation());
        Shard {
            id,
            live,
            view: RefCell::new(view),
            commits,
            store,
            metrics: metrics.shard(id),
            pop3_metrics: metrics.pop3_shard(id),
            managesieve_metrics: metrics.managesieve_shard(id),
            imap_rows: RefCell::new(crate::imap::RowsCache::counted(&imap_metrics)),
            imap_metrics,
            security: metrics.security(),
            hub,
            access: shared.access.clone(),
            auth: shared.auth.clone(),
            send_rate: shared.send_rate.clone(),
            dkim: shared.dkim.clone(),
            maillog: shared.maillog.clone(),
            limits: shared.limits.clone(),
            tls: shared.tls.clone(),
            budget: MemoryBudget::new(config.limits.session_memory_mb << 20),
            events: crate::events::EventSpool::new(
                crate::events::source::smtp(id),
                &config.webhook,
            ),
            spf_dns: dns.clone().filter(|_| config.inbound_auth.enabled),
            dns,
            dmarc_counter: crate::dmarc_reports::Counter::default(),
            ids: RefCell::new(IdGenerator::new(id as u16)),
            smtp_active: Cell::new(0),
            lmtp_active: Cell::new(0),
            pop3_active: Cell::new(0),
            managesieve_active: Cell::new(0),
            imap_active: Cell::new(0),
        }
    }

    /// The configuration in force (this shard's copy).
    pub fn config(&self) -> Arc<Config> {
        self.refresh();
        self.view.borrow().config.clone()
    }

    /// What a new SMTP session is handed.
    pub fn smtp_config(&self) -> Arc<ServerConfig> {
        self.refresh();
        self.view.borrow().smtp.clone()
    }

    /// What a new POP3 session is handed.
    pub fn pop3_config(&self) -> Arc<Pop3Config> {
        self.refresh();
        self.view.borrow().pop3.clone()
    }

    /// What a new IMAP session is handed.
    pub fn imap_config(&self) -> Arc<ImapConfig> {
        self.refresh();
        self.view.borrow().imap.clone()
    }

    /// `make` with how recipients are told apart now: local domains by
    /// the configuration, local addresses by accounts and aliases (so
    /// mail the server writes itself to a local alias reaches the account
    /// behind it), remote ones into the default pool.
    pub(crate) fn with_recipients<T>(
        &self,
        make: impl FnOnce(&crate::intake::Recipients<'_>) -> T,
    ) -> T {
        let config = self.config();
        let is_local = |domain: &str| config.is_local_domain(domain);
        let resolve = crate::intake::local_targets_in(&config, &*self.store);
        let to = crate::intake::Recipients {
            hostname: &config.hostname,
            is_local: &is_local,
            pool: config.relay.default_pool.as_deref(),
            local_targets: Some(&resolve),
        };
        make(&to)
    }

    /// The server-wide Sieve filter (`smtp.sieve_filter`), if any.
    pub fn sieve_filter(&self) -> Option<Arc<ringpost_protocols::sieve::Script>> {
        self.refresh();
        self.view.borrow().sieve_filter.clone()
    }

    /// What a new ManageSieve session is handed.
    pub fn managesieve_config(&self) -> Arc<ManageSieveConfig> {
        self.refresh();
        self.view.borrow().managesieve.clone()
    }

    /// Take a reloaded configuration when there is one.
    fn refresh(&self) {
        let generation = self.live.generation();
        if self.view.borrow().generation != generation {
            let view = View::new(
                &self.live.get(),
                &self.store,
                self.tls.is_some(),
                generation,
            );
            *self.view.borrow_mut() = view;
        }
    }

    /// The session count and gauge of a service (LMTP's sessions are
    /// counted apart from SMTP's, for its own limit, and shown with them).
    fn active(
        &self,
        service: Service,
    ) -> (&Cell<usize>, &prometheus_client::metrics::gauge::Gauge) {
        match service.kind() {
            Kind::Smtp if service == Service::Lmtp => {
                (&self.lmtp_active, &self.metrics.connections_active)
            }
            Kind::Smtp => (&self.smtp_active, &self.metrics.connections_active),
            Kind::Pop3 => (&self.pop3_active, &self.pop3_metrics.connections_active),
            Kind::Imap => (&self.imap_active, &self.imap_metrics.connections_active),
            Kind::ManageSieve => (
                &self.managesieve_active,
                &self.managesieve_metrics.connections_active,
            ),
        }
    }

    /// Count a new session of `service` (and its connection).
    fn enter(&self, service: Service) -> ActiveSession<'_> {
        let kind = service.kind();
        let (count, gauge) = self.active(service);
        count.set(count.get() + 1);
        gauge.inc();
        match kind {
            Kind::Smtp => self.metrics.connections.inc(),
            Kind::Pop3 => self.pop3_metrics.connections.inc(),
            Kind::Imap => self.imap_metrics.connections.inc(),
            Kind::ManageSieve => self.managesieve_metrics.connections.inc(),
        };
        ActiveSession(self, service)
    }

    /// A fresh message id, unique on this shard.
    pub(crate) fn next_id(&self, now_micros: u64) -> MessageId {
        self.ids.borrow_mut().next(now_micros)
    }

    /// Whether `service` has room for one more session.
    fn has_room(&self, service: Service) -> bool {
        let kind = service.kind();
        let max = match kind {
            Kind::Smtp if service == Service::Lmtp => self.config().lmtp.max_connections_per_shard,
            Kind::Smtp => self.config().smtp.max_connections_per_shard,
            Kind::Pop3 => self.config().pop3.max_connections_per_shard,
            Kind::Imap => self.config().imap.max_connections_per_shard,
            Kind::ManageSieve => self.config().managesieve.max_connections_per_shard,
        };
        self.active(service).0.get() < max
    }

    /// How long a failed login on `service` waits for its answer.
    pub(crate) fn auth_failure_delay(&self, service: &str) -> Duration {
        let secs = match service {
            "pop3" | "pop3s" => self.config().pop3.auth_failure_delay_secs,
            "imap" | "imaps" => self.config().imap.auth_failure_delay_secs,
            "managesieve" => self.config().managesieve.auth_failure_delay_secs,
            _ => self.config().submission.auth_failure_delay_secs,
        };
        Duration::from_secs(secs)
    }

    /// Run the TLS handshake on `conn` (implicit TLS, or after STARTTLS),
    /// counting and logging how it went; false if it failed.
    pub(crate) async fn start_tls(&self, conn: &mut Connection, service: Service) -> bool {
        let peer = conn.peer();
        match conn.start_tls().await {
            Ok(info) => {
                self.security
                    .tls_handshake(service.label(), "ok", info.version);
                tracing::debug!(shard = self.id, service = service.label(), %peer, version = info.version, cipher = %info.cipher, "tls established");
                true
            }
            Err(failure) => {
                self.security
                    .tls_handshake(service.label(), failure.label(), "");
                tracing::debug!(shard = self.id, service = service.label(), %peer, reason = failure.label(), "tls handshake failed");
                false
            }
        }
    }

    /// Answer a STARTTLS/STLS event: write the session's last plaintext
    /// (the go-ahead), then run the handshake on the same connection. An
    /// error ends the connection; on success the caller tells the session.
    pub(crate) async fn upgrade<S: ringpost_protocols::Session>(
        &self,
        conn: &mut Connection,
        service: Service,
        session: &mut S,
    ) -> std::io::Result<()> {
        conn.write_all(session.output()).await?;
        session.clear_output();
        match self.start_tls(conn, service).await {
            true => Ok(()),
            false => Err(std::io::ErrorKind::ConnectionAborted.into()),
        }
    }

    /// Bytes of client data this shard's sessions hold beyond their free
    /// part (tests, metrics).
    pub(crate) fn budget_used(&self) -> u64 {
        self.budget.used()
    }
}

/// What woke the accept loop.
enum Wake {
    Accepted(glommio::Result<glommio::net::TcpStream, ()>),
    Shutdown,
}

/// Serve the shard's listeners until shutdown, then give in-flight work
/// (sessions, relay connections and commits) a bounded time to finish.
pub(crate) async fn run(
    shard: Rc<Shard>,
    listeners: Vec<(Service, TcpListener)>,
    shutdown: ShutdownSignal,
    relay: Option<Rc<Relay>>,
) {
    let loops: Vec<_> = listeners
        .into_iter()
        .map(|(service, listener)| {
            glommio::spawn_local(accept(shard.clone(), service, listener, shutdown.clone()))
        })
        .collect();
    let sample = glommio::spawn_local(sample_budget(shard.clone(), shutdown.clone()));
    let reports = glommio::spawn_local(crate::dmarc_reports::run(shard.clone(), shutdown.clone()));
    for accept_loop in loops {
        accept_loop.await;
    }
    sample.await;
    reports.await;
    let deadline = Instant::now() + SHUTDOWN_GRACE;
    let sessions = || {
        shard.smtp_active.get()
            + shard.lmtp_active.get()
            + shard.pop3_active.get()
            + shard.imap_active.get()
            + shard.managesieve_active.get()
    };
    let busy = || sessions() > 0 || relay.as_ref().is_some_and(|r| r.busy());
    let mut next_report = Instant::now() + Duration::from_secs(5);
    while busy() && Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(5)).await;
        if Instant::now() >= next_report {
            next_report += Duration::from_secs(5);
            let (connections, commits) = relay.as_ref().map_or((0, 0), |r| r.in_flight());
            let queues = relay.as_ref().map(|r| format!("{:?}", r.open_queues()));
            tracing::info!(
                shard = shard.id,
                sessions = sessions(),
                connections,
                commits,
                queues,
                "shutting down: waiting for these to finish"
            );
        }
    }
    if sessions() > 0 {
        tracing::warn!(
            shard = shard.id,
            sessions = sessions(),
            "sessions still open after the shutdown grace period"
        );
    }
    // What the sessions counted for DMARC reports up to their end.
    crate::dmarc_reports::flush(&shard).await;
}

/// Export the memory budget's use every second until shutdown.
async fn sample_budget(shard: Rc<Shard>, shutdown: ShutdownSignal) {
    loop {
        shard.security.session_memory(shard.id, shard.budget_used());
        let tick = async {
            glommio::timer::sleep(Duration::from_secs(1)).await;
            false
        };
        let stop = async {
            shutdown.clone().await.ok();
            true
        };
        if tick.or(stop).await {
            return;
        }
    }
}

/// Accept `service` connections until shutdown; each gets its own task.
async fn accept(
    shard: Rc<Shard>,
    service: Service,
    listener: TcpListener,
    shutdown: ShutdownSignal,
) {
    loop {
        let accept = async { Wake::Accepted(listener.accept().await) };
        let stop = async {
            shutdown.clone().await.ok();
            Wake::Shutdown
        };
        match accept.or(stop).await {
            Wake::Shutdown => break,
            Wake::Accepted(Ok(stream)) => {
                let peer = match stream.peer_addr() {
                    Ok(peer) => peer,
                    Err(_) => continue, // already gone
                };
                // Limits first: a refused client costs one lock and a write.
                let admitted = match shard.limits.admit(peer.ip(), Instant::now()) {
                    Ok(admission) if shard.has_room(service) => admission,
                    Ok(_) => {
                        glommio::spawn_local(refuse(
                            shard.clone(),
                            service,
                            stream,
                            Refusal::Shard,
                        ))
                        .detach();
                        continue;
                    }
                    Err(refusal) => {
                        glommio::spawn_local(refuse(shard.clone(), service, stream, refusal))
                            .detach();
                        continue;
                    }
                };
                // LMTP is for its allowed networks only (after the limits,
                // so that refusing costs a stranger as much as any client).
                if service == Service::Lmtp && !shard.config().may_use_lmtp(peer.ip()) {
                    drop(admitted);
                    tracing::warn!(shard = shard.id, %peer, "LMTP connection from outside lmtp.allowed_networks refused");
                    glommio::spawn_local(refuse(shard.clone(), service, stream, Refusal::Network))
                        .detach();
                    continue;
                }
                let (shard, shutdown) = (shard.clone(), shutdown.clone());
                glommio::spawn_local(async move {
                    // A bug that panics on some input must end that one
                    // session, not the shard's thread with every session,
                    // delivery and timer on it (glommio does not catch it).
                    let session = serve(&shard, service, stream, peer, shutdown);
                    let caught = futures::FutureExt::catch_unwind(AssertUnwindSafe(session));
                    if caught.await.is_err() {
                        shard.metrics.session_panics.inc();
                        tracing::error!(shard = shard.id, service = service.label(), %peer, "a session panicked; its connection was closed");
                    }
                    drop(admitted);
                })
                .detach();
            }
            Wake::Accepted(Err(e)) => {
                tracing::warn!(shard = shard.id, service = service.label(), error = %e, "accept failed");
                glommio::timer::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Serve one `service` client until it quits, times out, vanishes or the
/// server stops.
async fn serve(
    shard: &Shard,
    service: Service,
    stream: glommio::net::TcpStream,
    peer: SocketAddr,
    shutdown: ShutdownSignal,
) {
    let _active = shard.enter(service);
    let _ = stream.set_nodelay(true);
    let local_ip = stream.local_addr().ok().map(|a| a.ip());
    let handshake = Duration::from_secs(shard.config().tls.handshake_timeout_secs);
    let mut conn = Connection::plain(stream, peer, shard.tls.clone(), handshake);
    if service.implicit_tls() && !shard.start_tls(&mut conn, service).await {
        conn.close().await;
        return;
    }
    let tls = conn.tls().is_some();
    let plaintext_auth = shard.config().plaintext_auth_allowed(peer.ip());
    let access_peer = ringpost_protocols::session::Peer {
        implicit_tls: tls,
        plaintext_auth,
    };
    let budget = &shard.budget;
    let ended = match service.kind() {
        Kind::Smtp => {
            // An LMTP client (let in by address) hands over mail for local
            // accounts only, free of the limits strangers meet.
            let lmtp = service == Service::Lmtp;
            let may_relay = !lmtp && shard.config().may_relay(peer.ip());
            let mut session = ServerSession::with_peer(
                shard.smtp_config(),
                smtp_proto::Peer {
                    submission: matches!(service, Service::Submission | Service::Submissions),
                    implicit_tls: tls,
                    plaintext_auth,
                    trusted: may_relay || lmtp,
                    lmtp,
                },
            );
            let mut protocol = smtp::Smtp {
                shard,
                service,
                peer,
                local_ip,
                may_relay,
                dnsbl: None,
                sender_domain: None,
            };
            conn::drive(&mut protocol, &mut session, &mut conn, shutdown, budget).await
        }
        Kind::Pop3 => {
            let mut session = pop3_proto::Pop3Session::with_peer(shard.pop3_config(), access_peer);
            let mut protocol = pop3::Pop3::new(shard, service, peer);
            conn::drive(&mut protocol, &mut session, &mut conn, shutdown, budget).await
        }
        Kind::Imap => {
            let mut session = ImapSession::with_peer(shard.imap_config(), access_peer);
            let mut protocol = imap::Conn::new(shard, service, peer);
            conn::drive(&mut protocol, &mut session, &mut conn, shutdown, budget).await
        }
        Kind::ManageSieve => {
            let mut session = ManageSieveSession::new(shard.managesieve_config(), access_peer);
            let mut protocol = managesieve::ManageSieve::new(shard, service, peer);
            conn::drive(&mut protocol, &mut session, &mut conn, shutdown, budget).await
        }
    };
    match ended {
        Ok(()) => {
            tracing::debug!(shard = shard.id, service = service.label(), %peer, "session closed")
        }
        Err(e) => {
            tracing::debug!(shard = shard.id, service = service.label(), %peer, error = %e, "session ended by I/O error")
        }
    }
    conn.close().await;
}

/// Tell a client why it cannot be served and hang up: SMTP's 421 at the
/// greeting (RFC 5321 §3.8), POP3's `-ERR [SYS/TEMP]` greeting (RFC 2449
/// §8.1.2), IMAP's BYE greeting (RFC 9051 §7.1.5). On the implicit-TLS
/// ports a plaintext line would mean nothing to the client: they just close.
async fn refuse(
    shard: Rc<Shard>,
    service: Service,
    mut stream: glommio::net::TcpStream,
    why: Refusal,
) {
    shard.security.refused(service.label(), why.label());
    let mut line = Vec::with_capacity(80);
    match service.kind() {
        Kind::Smtp => {
            shard.metrics.connections_refused.inc();
            let hostname = &shard.config().hostname;
            match why {
                Refusal::Network => replies::not_allowed_here(hostname).write_to(&mut line),
                _ => replies::too_many_connections(hostname).write_to(&mut line),
            }
        }
        Kind::Pop3 => {
            shard.pop3_metrics.connections_refused.inc();
            pop3_replies::TOO_MANY_CONNECTIONS.write_to(&mut line);
        }
        Kind::Imap => {
            shard.imap_metrics.connections_refused.inc();
            line.extend_from_slice(
                b"* BYE [UNAVAILABLE] too many connections, try again later\r\n",
            );
        }
        Kind::ManageSieve => {
            shard.managesieve_metrics.connections_refused.inc();
            line.extend_from_slice(b"BYE (TRYLATER) \"Too many connections\"\r\n");
        }
    }
    if !service.implicit_tls() {
        let _ = stream.write_all(&line).await;
    }
    let _ = stream.close().await;
}

/// Turn a shutdown receiver into the shared signal sessions clone.
pub(crate) fn shutdown_signal(rx: oneshot::Receiver<()>) -> ShutdownSignal {
    rx.shared()
}

#[cfg(test)]
mod tests {
    use futures::channel::oneshot;
    use std::future::Future;
    use std::path::Path;
    use std::time::Duration;

    /// Run `work` on a shard of its own built by `shard`; fail with `stuck`
    /// unless it finishes within `deadline` (a shard that sleeps for good
    /// never would).
    fn run_on_a_shard<F>(
        shard: glommio::LocalExecutorBuilder,
        work: impl FnOnce() -> F + Send + 'static,
        deadline: Duration,
        stuck: &str,
    ) where
        F: Future<Output = ()> + 'static,
    {
        let (finished, all_done) = std::sync::mpsc::channel();
        let shard = shard
            .spawn(move || async move {
                work().await;
                finished.send(()).unwrap();
            })
            .unwrap();
        all_done.recv_timeout(deadline).expect(stuck);
        shard.join().unwrap();
    }

    /// A task on the current shard that sleeps `period` after `period`,
    /// until cancelled: the shard always has a timer pending.
    fn tick_every(period: Duration) -> glommio::task::JoinHandle<()> {
        glommio::spawn_local(async move {
            loop {
                glommio::timer::sleep(period).await;
            }
        })
        .detach()
    }

    /// A shard with nothing to do sleeps in io_uring; the commit writer wakes
    /// it from its own thread by completing a oneshot, and glommio's blocking
    /// pool (the relay's disk reads) by queueing a result. A wake-up that
    /// lands between the shard's last look for work and its sleep must not
    /// be lost: glommio's barrier at that point is patched
    /// (vendor/glommio/RINGPOST.md), and a lost wake-up would leave the
    /// shard asleep for good, which the deadline catches. The replies come
    /// first while a timer task ticks, so the shard sleeps with a timeout
    /// armed to wake it for that timer, then with no timer at all.
    #[test]
    fn a_shard_woken_from_another_thread_misses_no_wake_up() {
        const ROUNDS: usize = 30_000;
        const BLOCKING_ROUNDS: usize = 5_000;
        let (to_waker, requests) = std::sync::mpsc::channel::<oneshot::Sender<usize>>();
        let waker = std::thread::spawn(move || {
            for (round, done) in requests.iter().enumerate() {
                // Answers come at varied delays, so some land before the
                // shard's barrier, some in the window and some after it.
                for _ in 0..(round % 97) {
                    std::hint::spin_loop();
                }
                let _ = done.send(round);
            }
        });
        run_on_a_shard(
            glommio::LocalExecutorBuilder::default().name("wake-test"),
            move || async move {
                let ask = |round| {
                    let (done, reply) = oneshot::channel();
                    to_waker.send(done).unwrap();
                    async move { assert_eq!(reply.await.unwrap(), round) }
                };
                let ticks = tick_every(Duration::from_millis(20));
                for round in 0..ROUNDS {
                    ask(round).await;
                }
                ticks.cancel();
                for round in ROUNDS..2 * ROUNDS {
                    ask(round).await;
                }
                for round in 0..BLOCKING_ROUNDS {
                    let answer = glommio::executor().spawn_blocking(move || round).await;
                    assert_eq!(answer, round);
                }
            },
            Duration::from_secs(120),
            "a wake-up was lost: the shard slept through a reply",
        );
        waker.join().unwrap();
    }

    /// A task that keeps the shard busy, yielding only when glommio says
    /// its time slice is over, must still let timers fire and other tasks
    /// run: the preemption timer that ends the slice is kept armed across
    /// turns of the loop by the patch (vendor/glommio/RINGPOST.md), and
    /// if it never fired the busy task would run for ever.
    #[test]
    fn a_busy_task_is_preempted_for_timers_and_other_tasks() {
        run_on_a_shard(
            glommio::LocalExecutorBuilder::default()
                .name("preempt-test")
                .preempt_timer(Duration::from_millis(5)),
            || async {
                for _ in 0..20 {
                    let timer_fired = std::rc::Rc::new(std::cell::Cell::new(false));
                    let flag = timer_fired.clone();
                    let timer = glommio::spawn_local(async move {
                        glommio::timer::sleep(Duration::from_millis(2)).await;
                        flag.set(true);
                    });
                    // Only a preemption lets the timer's task run.
                    while !timer_fired.get() {
                        glommio::yield_if_needed().await;
                    }
                    timer.await;
                }
            },
            Duration::from_secs(60),
            "a busy task was never preempted: the timer did not fire",
        );
    }

    /// An idle shard sleeps until its next timer: the preemption timer the
    /// patch keeps armed while the shard is busy (vendor/glommio/RINGPOST.md)
    /// must not wake it every preemption period. Each wake-up is a
    /// voluntary context switch of its thread, which the kernel counts.
    #[test]
    fn an_idle_shard_wakes_only_for_its_timers() {
        const SETTLE: Duration = Duration::from_millis(300);
        const WATCHED: Duration = Duration::from_secs(1);
        let (to_watcher, shard_thread) = std::sync::mpsc::channel::<std::path::PathBuf>();
        let (finish, finished) = oneshot::channel::<u64>();
        let watcher = std::thread::spawn(move || {
            let status = shard_thread.recv().unwrap().join("status");
            let switches = || {
                let status = std::fs::read_to_string(&status).unwrap();
                let line = status
                    .lines()
                    .find_map(|line| line.strip_prefix("voluntary_ctxt_switches:"))
                    .unwrap();
                line.trim().parse::<u64>().unwrap()
            };
            std::thread::sleep(SETTLE);
            let before = switches();
            std::thread::sleep(WATCHED);
            finish.send(switches() - before).unwrap();
        });
        run_on_a_shard(
            glommio::LocalExecutorBuilder::default()
                .name("idle-test")
                .preempt_timer(Duration::from_millis(5)),
            move || async move {
                // A timer task, as the budget sampler's once a second.
                let ticks = tick_every(Duration::from_millis(250));
                // "/proc/thread-self" links to "PID/task/TID".
                let thread = std::fs::read_link("/proc/thread-self").unwrap();
                to_watcher.send(Path::new("/proc").join(thread)).unwrap();
                let wake_ups = finished.await.unwrap();
                ticks.cancel();
                // Four ticks and the watcher's answer: 4 measured, with
                // room for a few early ones. Waking every preemption period
                // (5 ms) would be 200.
                assert!(wake_ups <= 20, "an idle shard woke {wake_ups} times in 1 s");
            },
            Duration::from_secs(60),
            "the idle shard never finished",
        );
        watcher.join().unwrap();
    }
}
