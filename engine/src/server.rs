//! Starting and stopping the whole server: store, commit pipeline, metrics
//! endpoint, and one shard per core.
//!
//! Read it top to bottom: [`start`] opens the store, starts the group-commit
//! writer, binds one listening socket per shard and service (each service on
//! one port with SO_REUSEPORT), then starts the shards. [`RunningServer::shutdown`] undoes it
//! in reverse: shards stop accepting and finish in-flight transactions, the
//! writer commits what is queued, the store is flushed and closed.

use crate::access::Access;
use crate::admin::{AdminContext, AdminServer, Token};
use crate::auth::Authenticator;
use crate::config::{Config, StoreEngine};
use crate::limits::{ConnectionLimits, Lockout, SendRate};
use crate::live::{ConfigSource, LiveConfig, Reloaded, Reloader};
use crate::maillog::{MailLog, MailLogWriter};
use crate::metrics::Metrics;
use crate::relay::queue::Relay;
use crate::relay::resolver::{self, ResolverConfig, ResolverThread};
use crate::relay::Hub;
use crate::shard::{self, Service, Shard, SharedState};
use crate::tls::{self, CertStore};
use crate::webhook::WebhookPoster;
use futures::channel::oneshot;
use glommio::{ExecutorJoinHandle, LocalExecutorBuilder, Placement};
use ringpost_storage::{
    CommitHandle, CommitPipeline, MemoryStore, PipelineConfig, RocksOptions, RocksStore, Store,
};
use socket2::{Domain, Protocol, Socket, Type};
use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::Arc;

/// Pending connections the kernel queues per shard socket.
const LISTEN_BACKLOG: i32 = 1024;
/// io_uring registered buffer memory per shard; shards do network I/O only.
const SHARD_IO_MEMORY: usize = 512 * 1024;
/// Messages one shard's relay inbox holds; entries that do not fit stay in
/// the store and are swept in by their owner.
const RELAY_INBOX: usize = 16 * 1024;
/// DNS answers cached by the resolver thread.
const DNS_CACHE: usize = 16 * 1024;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The store could not be opened.
    #[error("cannot open store at {path}: {source}")]
    Store {
        /// Data directory.
        path: String,
        /// Engine error.
        source: ringpost_storage::StoreError,
    },
    /// A listening address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// OS error.
        source: std::io::Error,
    },
    /// The outbound TLS settings are unusable (e.g. a bad `relay.ca_file`).
    #[error("cannot set up outbound TLS: {0}")]
    Tls(String),
    /// The listeners' certificates could not be loaded or made.
    #[error("cannot set up TLS for the listeners: {0}")]
    Certificates(String),
    /// The mail log file could not be opened.
    #[error("cannot open the mail log {path} (log.mail_log): {source}")]
    MailLog {
        /// The file.
        path: String,
        /// OS error.
        source: std::io::Error,
    },
    /// A DKIM key could not be loaded.
    #[error("cannot set up DKIM signing: {0}")]
    Dkim(String),
    /// The webhook poster's thread could not start.
    #[error("cannot start the webhook poster: {0}")]
    Webhook(std::io::Error),
    /// The admin API's token file could not be read or made.
    #[error("cannot set up the admin token {path}: {source}")]
    AdminToken {
        /// The token file.
        path: String,
        /// OS error.
        source: std::io::Error,
    },
    /// The DNS resolver thread could not be started.
    #[error("cannot start the DNS resolver: {0}")]
    Resolver(std::io::Error),
    /// A shard thread could not be started.
    #[error("cannot start shard {shard}: {detail}")]
    Shard {
        /// Shard number.
        shard: usize,
        /// Why.
        detail: String,
    },
}

/// A started server; call [`RunningServer::shutdown`] to stop it cleanly.
pub struct RunningServer {
    config: Arc<Config>,
    smtp_addr: SocketAddr,
    listening: Vec<(Service, SocketAddr)>,
    certificates: Option<Arc<CertStore>>,
    store_description: String,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    admin: Option<AdminServer>,
    maillog: Arc<MailLog>,
    maillog_writer: Option<MailLogWriter>,
    pipeline: Option<CommitPipeline>,
    commits: CommitHandle,
    stops: Vec<oneshot::Sender<()>>,
    shards: Vec<ExecutorJoinHandle<()>>,
    resolver: Option<ResolverThread>,
    webhook: Option<WebhookPoster>,
    reloader: Arc<Reloader>,
}

/// The egress sources, with the day's counts they had before a restart.
fn load_egress(
    config: &Config,
    store: &dyn Store,
) -> Result<Option<Arc<crate::relay::egress::Egress>>, StartError> {
    let Some(egress) =
        crate::relay::egress::Egress::new(&config.relay.sources, &config.relay.pools)
    else {
        return Ok(None);
    };
    egress.restore(store).map_err(|source| StartError::Store {
        path: config.data_dir.display().to_string(),
        source,
    })?;
    Ok(Some(Arc::new(egress)))
}

/// Load the files `config` names, as [`start`] would, without starting
/// anything (`ringpost config check`): listener certificates and keys,
/// DKIM keys, the relay's CA file. Returns what was loaded, in words.
/// With no certificate configured nothing is made: the self-signed one is
/// [`start`]'s to make.
pub fn check_files(config: &Config) -> Result<Vec<String>, String> {
    let mut loaded = Vec::new();
    if !config.tls.certificates.is_empty() {
        let certificates = tls::load(&config.tls, &config.data_dir, &config.hostname)?;
        loaded.push(format!("certificates: {}", certificates.describe()));
    }
    if crate::dkim::DkimSigner::load(&config.dkim)?.is_some() {
        loaded.push("DKIM keys: loaded".to_owned());
    }
    crate::relay::tls::client_configs(&config.relay)?;
    if let Some(ca) = &config.relay.ca_file {
        loaded.push(format!("relay CA file: {}", ca.display()));
    }
    Ok(loaded)
}

/// Start everything `config` describes.
pub fn start(config: Config) -> Result<RunningServer, StartError> {
    let config = Arc::new(config);
    let live = Arc::new(LiveConfig::new(config.clone()));
    let (store, store_description) = open_store(&config)?;
    // Made once, kept with the mail: SRS addresses outlive restarts.
    crate::srs::ensure_secret(&*store).map_err(|source| StartError::Store {
        path: config.data_dir.display().to_string(),
        source,
    })?;
    for caution in config.cautions() {
        tracing::warn!("{caution}");
    }

    let metrics = Metrics::new();
    metrics.watch_store(store.clone());
    let observer_metrics = metrics.clone();
    // Mail-access sessions hear of changed mailboxes from the writer.
    let access = Arc::new(Access::new(config.imap.max_sessions_per_account));
    let notify = access.clone();
    let (pipeline, commits) = CommitPipeline::start_with_listener(
        store.clone(),
        PipelineConfig {
            queue_capacity: config.store.commit_queue,
            sync: config.store.sync,
            ..PipelineConfig::default()
        },
        Some(Box::new(move |report| {
            observer_metrics.observe_commit(report)
        })),
        Some(Box::new(move |user| notify.mailbox_changed(user))),
    );

    // TLS for the listeners: configured certificates, or a self-signed one.
    let (certificates, acceptor) = if config.tls.enabled {
        let loaded = tls::load(&config.tls, &config.data_dir, &config.hostname)
            .map_err(StartError::Certificates)?;
        if loaded.is_self_signed() {
            tracing::warn!(
                certificate = %loaded.describe(),
                "no certificate configured (tls.certificates): serving a self-signed one; clients will not trust it"
            );
        }
        let store = CertStore::new(loaded);
        let server_config = tls::server_config(store.clone()).map_err(StartError::Certificates)?;
        (
            Some(store),
            Some(futures_rustls::TlsAcceptor::from(server_config)),
        )
    } else {
        (None, None)
    };
    let (maillog, maillog_writer) =
        MailLog::open(&config.log).map_err(|source| StartError::MailLog {
            path: config
                .log
                .mail_log
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            source,
        })?;
    let maillog = Arc::new(maillog);
    let counted = maillog.clone();
    metrics.watch_log_drops("mail", move || counted.dropped());
    let security = metrics.security();
    let shared = SharedState {
        access,
        auth: Arc::new(Authenticator::new(
            store.clone(),
            &config.limits,
            Box::new(move |lockout| {
                let kind = match lockout {
                    Lockout::Ip(ip) => {
                        tracing::warn!(%ip, "too many failed logins: address locked out");
                        "ip"
                    }
                    Lockout::Account(account) => {
                        // Debug: the name is the client's, escaped.
                        tracing::warn!(?account, "too many failed logins for the account: failing addresses locked out of it");
                        "account"
                    }
                };
                security.lockout(kind);
            }),
        )),
        limits: ConnectionLimits::new(&config.limits, &config.smtp.relay_networks),
        send_rate: Arc::new(SendRate::new(config.submission.max_messages_per_hour)),
        tls: acceptor,
        dkim: crate::dkim::DkimSigner::load(&config.dkim)
            .map_err(StartError::Dkim)?
            .map(Arc::new),
        maillog: maillog.clone(),
        egress: load_egress(&config, &*store)?,
        sites: Arc::new(crate::relay::shaping::Sites::new(Some(metrics.sites()))),
    };
    if let Some(store) = &certificates {
        metrics.security().certificates(&store.current().expiries());
    }
    let reloader = Arc::new(Reloader::new(
        live.clone(),
        shared.limits.clone(),
        shared.send_rate.clone(),
        shared.sites.clone(),
        certificates.clone(),
        metrics.security(),
        maillog.clone(),
    ));
    let shard_count = config.shard_count();
    let bind = |addr| {
        bind_reuseport(addr, shard_count).map_err(|source| StartError::Bind { addr, source })
    };
    let tls_on = shared.tls.is_some();
    let wanted = [
        (Service::Smtp, Some(config.smtp.listen)),
        (
            Service::Submission,
            config
                .submission
                .enabled
                .then_some(config.submission.listen),
        ),
        (
            Service::Submissions,
            config
                .submission
                .tls_listen
                .filter(|_| config.submission.enabled && tls_on),
        ),
        (
            Service::Pop3,
            config.pop3.enabled.then_some(config.pop3.listen),
        ),
        (
            Service::Pop3s,
            config
                .pop3
                .tls_listen
                .filter(|_| config.pop3.enabled && tls_on),
        ),
        (
            Service::Imap,
            config.imap.enabled.then_some(config.imap.listen),
        ),
        (
            Service::Imaps,
            config
                .imap
                .tls_listen
                .filter(|_| config.imap.enabled && tls_on),
        ),
        (
            Service::ManageSieve,
            config
                .managesieve
                .enabled
                .then_some(config.managesieve.listen),
        ),
        (
            Service::Lmtp,
            config.lmtp.enabled.then_some(config.lmtp.listen),
        ),
    ];
    let mut listening = Vec::new();
    // Per shard, its socket of every service.
    let mut per_shard: Vec<Vec<(Service, OwnedFd)>> =
        (0..shard_count).map(|_| Vec::new()).collect();
    for (service, addr) in wanted {
        let Some(addr) = addr else { continue };
        let (bound, sockets) = bind(addr)?;
        listening.push((service, bound));
        for (shard, socket) in sockets.into_iter().enumerate() {
            per_shard[shard].push((service, socket));
        }
    }
    let smtp_addr = listening[0].1;
    // Where mail reaches us, so that MX hosts that are us are never used.
    let ourselves = Arc::new(crate::relay::ourselves::Ourselves::new(
        listening
            .iter()
            .filter(|(service, _)| {
                matches!(
                    service,
                    Service::Smtp | Service::Submission | Service::Submissions
                )
            })
            .map(|(_, addr)| *addr)
            .collect(),
        config.relay.sources.iter().map(|source| source.address),
    ));

    // Outbound delivery: one DNS thread for everyone, one inbox per shard.
    let tls = match config.relay.enabled && config.relay.starttls {
        true => Some(crate::relay::tls::client_configs(&config.relay).map_err(StartError::Tls)?),
        false => None,
    };
    // DNS for the relay and for SPF checks of inbound mail.
    let wants_dns = config.relay.enabled
        || config.inbound_auth.enabled
        || !config.smtp.dnsbl.is_empty()
        || config.smtp.reject_unknown_sender_domain;
    let (resolver, resolver_thread) = if wants_dns {
        let mta_sts = match config.relay.enabled && config.relay.mta_sts {
            true => Some(resolver::MtaStsSetup {
                tls: crate::relay::tls::client_config(&config.relay, true)
                    .map_err(StartError::Tls)?,
                port: config.relay.mta_sts_port,
            }),
            false => None,
        };
        let started = resolver::start(ResolverConfig {
            nameservers: config.relay.nameservers.clone(),
            timeout: std::time::Duration::from_secs(config.relay.dns_timeout_secs),
            attempts: 2,
            cache_size: DNS_CACHE,
            mta_sts,
        });
        match started {
            Ok((resolver, thread)) => (Some(resolver.with_metrics(metrics.dns())), Some(thread)),
            Err(e) if config.relay.enabled => return Err(StartError::Resolver(e)),
            // Without the relay, only SPF wanted DNS: mail is taken unchecked.
            Err(e) => {
                tracing::warn!(error = %e, "no DNS resolver: SPF checks are off");
                (None, None)
            }
        }
    } else {
        (None, None)
    };
    let (hub, mut inboxes) = if config.relay.enabled {
        let (hub, inboxes) = Hub::new(shard_count, RELAY_INBOX);
        let inboxes: Vec<_> = inboxes.into_iter().map(Some).collect();
        (Some(Arc::new(hub)), inboxes)
    } else {
        (None, Vec::new())
    };

    let admin = match config.metrics.listen {
        Some(addr) => {
            let token_file = crate::admin::token_path(&config.data_dir);
            let token =
                Token::load_or_create(&token_file).map_err(|source| StartError::AdminToken {
                    path: token_file.display().to_string(),
                    source,
                })?;
            let context = Arc::new(AdminContext {
                reloader: reloader.clone(),
                store: store.clone(),
                commits: commits.clone(),
                metrics: metrics.clone(),
                hub: hub.clone(),
                inject: crate::inject::Injector::new(
                    live.clone(),
                    store.clone(),
                    commits.clone(),
                    hub.clone(),
                    shared.dkim.clone(),
                    maillog.clone(),
                    &metrics,
                ),
                token,
                ready: Default::default(),
            });
            let admin = AdminServer::start(addr, context)
                .map_err(|source| StartError::Bind { addr, source })?;
            // For `ringpost user ...` beside the running server.
            let address_file = crate::admin::address_path(&config.data_dir);
            if let Err(e) = std::fs::write(&address_file, format!("{}\n", admin.local_addr())) {
                tracing::warn!(file = %address_file.display(), error = %e, "cannot record the admin address");
            }
            Some(admin)
        }
        None => {
            // No control plane: an address left by an earlier run must not
            // send the CLI (and its token) to whoever listens there now.
            let _ = std::fs::remove_file(crate::admin::address_path(&config.data_dir));
            None
        }
    };

    let webhook = match config.webhook.enabled() {
        true => Some(
            WebhookPoster::start(
                config.webhook.clone(),
                store.clone(),
                commits.clone(),
                metrics.webhook(),
            )
            .map_err(StartError::Webhook)?,
        ),
        false => None,
    };

    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let shared = Arc::new(shared);
    let mut stops = Vec::with_capacity(shard_count);
    let mut shards = Vec::with_capacity(shard_count);
    for (id, sockets) in per_shard.into_iter().enumerate() {
        let (stop_tx, stop_rx) = oneshot::channel();
        stops.push(stop_tx);
        let placement = if config.pin_shards {
            Placement::Fixed(id % cpus)
        } else {
            Placement::Unbound
        };
        let (live, commits, metrics) = (live.clone(), commits.clone(), metrics.clone());
        let relay_metrics = metrics.relay_shard(id);
        let shared = shared.clone();
        let (store, hub, resolver, tls) =
            (store.clone(), hub.clone(), resolver.clone(), tls.clone());
        let inbox = inboxes.get_mut(id).and_then(Option::take);
        let ourselves = ourselves.clone();
        let dns = resolver.clone();
        let mut builder = LocalExecutorBuilder::new(placement)
            .name(&format!("shard{id}"))
            .io_memory(SHARD_IO_MEMORY);
        if config.shard_spin_us > 0 {
            builder =
                builder.spin_before_park(std::time::Duration::from_micros(config.shard_spin_us));
        }
        let handle = builder
            .spawn(move || async move {
                // SAFETY: each fd is a listening TCP socket we own and hand over exactly once.
                let listen = |fd: OwnedFd| unsafe {
                    glommio::net::TcpListener::from_raw_fd(fd.into_raw_fd())
                };
                let listeners = sockets
                    .into_iter()
                    .map(|(service, fd)| (service, listen(fd)))
                    .collect();
                let shutdown = shard::shutdown_signal(stop_rx);
                let relay = match (hub.clone(), resolver, inbox) {
                    (Some(hub), Some(resolver), Some(inbox)) => {
                        let relay = Rc::new(Relay::new(
                            id,
                            live.clone(),
                            store.clone(),
                            commits.clone(),
                            hub,
                            resolver,
                            relay_metrics,
                            tls,
                            shared.maillog.clone(),
                            shared.egress.clone(),
                            shared.sites.clone(),
                            ourselves.clone(),
                        ));
                        glommio::spawn_local(relay.clone().run(inbox, shutdown.clone())).detach();
                        Some(relay)
                    }
                    _ => None,
                };
                let shard = Rc::new(Shard::new(
                    id, live, commits, store, &metrics, hub, &shared, dns,
                ));
                shard::run(shard, listeners, shutdown, relay).await;
            })
            .map_err(|e| StartError::Shard {
                shard: id,
                detail: e.to_string(),
            })?;
        shards.push(handle);
    }

    let services: Vec<String> = listening
        .iter()
        .map(|(service, addr)| format!("{}={addr}", service.label()))
        .collect();
    tracing::info!(listening = %services.join(" "), shards = shard_count, store = %store_description, "ringpost started");
    if let Some(admin) = &admin {
        admin.set_ready(true);
    }
    Ok(RunningServer {
        config,
        smtp_addr,
        listening,
        certificates,
        store_description,
        store,
        metrics,
        admin,
        maillog,
        maillog_writer,
        pipeline: Some(pipeline),
        commits,
        stops,
        shards,
        resolver: resolver_thread,
        webhook,
        reloader,
    })
}

fn open_store(config: &Config) -> Result<(Arc<dyn Store>, String), StartError> {
    match config.store.engine {
        StoreEngine::Memory => Ok((
            Arc::new(MemoryStore::new()),
            "memory (nothing survives a restart)".into(),
        )),
        StoreEngine::Rocksdb => {
            let path = &config.data_dir;
            let options = RocksOptions {
                compress_blobs: config.store.compress_bodies,
                body_cache_bytes: config.store.body_cache_mb << 20,
                min_free_bytes: config.store.min_free_disk_mb << 20,
                segment_min_bytes: (config.store.segment_min_kb > 0)
                    .then_some(config.store.segment_min_kb << 10),
                ..RocksOptions::default()
            };
            let store = RocksStore::open(path, options).map_err(|source| StartError::Store {
                path: path.display().to_string(),
                source,
            })?;
            Ok((Arc::new(store), format!("rocksdb at {}", path.display())))
        }
    }
}

/// One listening socket per shard, all bound to the same address with
/// SO_REUSEPORT so the kernel spreads connections. Port 0 is resolved by the
/// first socket and reused by the rest.
///
/// SO_REUSEPORT would also let a second server silently share the port, so a
/// fixed port is first probed with a plain bind: if someone holds it, we fail.
fn bind_reuseport(addr: SocketAddr, count: usize) -> std::io::Result<(SocketAddr, Vec<OwnedFd>)> {
    if addr.port() != 0 {
        drop(StdTcpListener::bind(addr)?);
    }
    let mut bound = addr;
    let mut sockets = Vec::with_capacity(count);
    for _ in 0..count {
        let socket = Socket::new(
            Domain::for_address(bound),
            Type::STREAM,
            Some(Protocol::TCP),
        )?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.bind(&bound.into())?;
        socket.listen(LISTEN_BACKLOG)?;
        bound = socket
            .local_addr()?
            .as_socket()
            .expect("an IP socket has an IP address");
        sockets.push(OwnedFd::from(socket));
    }
    Ok((bound, sockets))
}

impl RunningServer {
    /// Where SMTP listens (with the real port when 0 was configured).
    pub fn smtp_addr(&self) -> SocketAddr {
        self.smtp_addr
    }

    fn addr_of(&self, service: Service) -> Option<SocketAddr> {
        self.listening
            .iter()
            .find(|(s, _)| *s == service)
            .map(|(_, addr)| *addr)
    }

    /// Every listener: its service name (`smtp`, `submission`,
    /// `submissions`, `pop3`, `pop3s`, `imap`, `imaps`) and address.
    pub fn listeners(&self) -> Vec<(&'static str, SocketAddr)> {
        self.listening
            .iter()
            .map(|(service, addr)| (service.label(), *addr))
            .collect()
    }

    /// Where submission (STARTTLS, AUTH required) listens, if enabled.
    pub fn submission_addr(&self) -> Option<SocketAddr> {
        self.addr_of(Service::Submission)
    }

    /// Where submission over implicit TLS listens, if enabled.
    pub fn submissions_addr(&self) -> Option<SocketAddr> {
        self.addr_of(Service::Submissions)
    }

    /// Where POP3 listens, if enabled (with the real port when 0 was configured).
    pub fn pop3_addr(&self) -> Option<SocketAddr> {
        self.addr_of(Service::Pop3)
    }

    /// Where POP3S listens, if enabled.
    pub fn pop3s_addr(&self) -> Option<SocketAddr> {
        self.addr_of(Service::Pop3s)
    }

    /// Where IMAP listens, if enabled (with the real port when 0 was configured).
    pub fn imap_addr(&self) -> Option<SocketAddr> {
        self.addr_of(Service::Imap)
    }

    /// Where ManageSieve listens, if enabled.
    pub fn managesieve_addr(&self) -> Option<SocketAddr> {
        self.addr_of(Service::ManageSieve)
    }

    /// Where LMTP listens, if enabled.
    pub fn lmtp_addr(&self) -> Option<SocketAddr> {
        self.addr_of(Service::Lmtp)
    }

    /// Where IMAPS listens, if enabled.
    pub fn imaps_addr(&self) -> Option<SocketAddr> {
        self.addr_of(Service::Imaps)
    }

    /// The certificates being served, in words (None: TLS is off).
    pub fn certificates(&self) -> Option<String> {
        self.certificates.as_ref().map(|c| c.current().describe())
    }

    /// Read the configuration again and put it in force (SIGHUP, and
    /// `POST /api/v1/config/reload`): see [`crate::live`]. New handshakes
    /// get reloaded certificates; connections already up keep theirs. On
    /// error nothing changes.
    pub fn reload(&self) -> Result<Reloaded, String> {
        self.reloader.reload()
    }

    /// Where [`RunningServer::reload`] reads the configuration from.
    pub fn set_config_source(&self, source: ConfigSource) {
        self.reloader.set_source(source);
    }

    /// The configuration in force now (reloads included).
    pub fn live_config(&self) -> Arc<Config> {
        self.reloader.current()
    }

    /// Open the mail log file again (after logrotate moved it).
    pub fn reopen_logs(&self) {
        self.maillog.reopen();
    }

    /// Where the control plane (`/metrics`, health, the admin API) is
    /// served, if enabled.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(|a| a.local_addr())
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Number of shards running.
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// Which store is in use, in words.
    pub fn store_description(&self) -> &str {
        &self.store_description
    }

    /// The store (tests and tools read it).
    pub fn store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    /// The metrics registry.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// A handle on the server's commit writer: the one way to change its
    /// store while it runs (mailbox changes, accounts; tests, tools).
    pub fn commit_handle(&self) -> CommitHandle {
        self.commits.clone()
    }

    /// Stop accepting, let in-flight transactions finish (bounded), commit
    /// everything queued, flush and close the store. False when something
    /// went wrong on the way (logged): a shard that ended abnormally, a
    /// store that could not be flushed.
    pub fn shutdown(mut self) -> bool {
        let mut clean = true;
        if let Some(admin) = &self.admin {
            admin.set_ready(false);
        }
        for stop in self.stops.drain(..) {
            let _ = stop.send(());
        }
        for (id, shard) in self.shards.drain(..).enumerate() {
            if let Err(e) = shard.join() {
                tracing::error!(shard = id, error = %e, "shard ended abnormally");
                clean = false;
            }
        }
        // Before the commit writer goes: the poster deletes what it posted.
        drop(self.webhook.take());
        if let Some(pipeline) = self.pipeline.take() {
            pipeline.shutdown();
        }
        drop(self.resolver.take());
        if let Err(e) = self.store.flush() {
            tracing::error!(error = %e, "store flush at shutdown failed");
            clean = false;
        }
        if let Some(admin) = self.admin.take() {
            admin.stop();
            // Nothing listens there any more (see `start`).
            let _ = std::fs::remove_file(crate::admin::address_path(&self.config.data_dir));
        }
        // The shards and relays are gone: so are the other senders of the
        // mail log, and its writer writes what is left and ends.
        drop(self.maillog_writer.take());
        tracing::info!("ringpost stopped");
        clean
    }
}
