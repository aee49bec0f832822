//! One shard: a glommio executor pinned to a core, with its own listening
//! sockets (SMTP, POP3; SO_REUSEPORT, so the kernel spreads connections),
//! its own sessions, counters and id sequence. Nothing here is shared with
//! other shards except the commit handle, which is a channel, the store,
//! which sessions read, and the mail-access state ([`Access`]).

use crate::access::Access;
use crate::config::Config;
use crate::intake::IdGenerator;
use crate::metrics::{ImapMetrics, Metrics, Pop3Metrics, ShardMetrics};
use crate::relay::queue::Relay;
use crate::relay::Hub;
use crate::{imap, pop3, session};
use futures::channel::oneshot;
use futures::future::{FutureExt as _, Shared};
use futures_lite::{AsyncWriteExt, FutureExt};
use glommio::net::TcpListener;
use ringpost_protocols::imap::ImapConfig;
use ringpost_protocols::pop3::{replies as pop3_replies, Pop3Config};
use ringpost_protocols::smtp::{replies, ServerConfig};
use ringpost_storage::spool::MessageId;
use ringpost_storage::{CommitHandle, Store};
use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
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
    /// SMTP: mail in.
    Smtp,
    /// POP3: mail out to its owner.
    Pop3,
    /// IMAP: mailboxes kept on the server.
    Imap,
}

/// State owned by one shard's executor.
pub(crate) struct Shard {
    /// Shard number (0-based).
    pub id: usize,
    /// Server configuration.
    pub config: Arc<Config>,
    /// Limits handed to every SMTP session.
    pub smtp: Arc<ServerConfig>,
    /// Limits handed to every POP3 session.
    pub pop3: Arc<Pop3Config>,
    /// Limits handed to every IMAP session.
    pub imap: Arc<ImapConfig>,
    /// Where messages are made durable.
    pub commits: CommitHandle,
    /// The store, for reads on the shard itself (the recipient check,
    /// mailbox listings, message bodies).
    pub store: Arc<dyn Store>,
    /// This shard's SMTP metric handles.
    pub metrics: ShardMetrics,
    /// This shard's POP3 metric handles.
    pub pop3_metrics: Pop3Metrics,
    /// This shard's IMAP metric handles.
    pub imap_metrics: ImapMetrics,
    /// Where accepted queue entries go to be delivered (None: relay off).
    pub hub: Option<Arc<Hub>>,
    /// Logins, maildrop locks and change notifications, shared by all shards.
    pub access: Arc<Access>,
    ids: RefCell<IdGenerator>,
    smtp_active: Cell<usize>,
    pop3_active: Cell<usize>,
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
    pub(crate) fn new(
        id: usize,
        config: Arc<Config>,
        commits: CommitHandle,
        store: Arc<dyn Store>,
        metrics: &Metrics,
        hub: Option<Arc<Hub>>,
        access: Arc<Access>,
    ) -> Shard {
        let smtp = Arc::new(ServerConfig {
            hostname: config.hostname.clone(),
            max_line_len: config.smtp.max_line_length,
            max_message_size: config.smtp.max_message_size,
            max_recipients: config.smtp.max_recipients,
            max_errors: config.smtp.max_errors,
        });
        let pop3 = Arc::new(Pop3Config {
            hostname: config.hostname.clone(),
            max_errors: config.pop3.max_errors,
            ..Pop3Config::default()
        });
        let imap = Arc::new(ImapConfig {
            hostname: config.hostname.clone(),
            max_command_size: config.imap.max_command_size,
            max_errors: config.imap.max_errors,
        });
        Shard {
            id,
            smtp,
            pop3,
            imap,
            commits,
            store,
            metrics: metrics.shard(id),
            pop3_metrics: metrics.pop3_shard(id),
            imap_metrics: metrics.imap_shard(id),
            hub,
            access,
            config,
            ids: RefCell::new(IdGenerator::new(id as u16)),
            smtp_active: Cell::new(0),
            pop3_active: Cell::new(0),
            imap_active: Cell::new(0),
        }
    }

    /// The session count and gauge of `service`.
    fn active(
        &self,
        service: Service,
    ) -> (&Cell<usize>, &prometheus_client::metrics::gauge::Gauge) {
        match service {
            Service::Smtp => (&self.smtp_active, &self.metrics.connections_active),
            Service::Pop3 => (&self.pop3_active, &self.pop3_metrics.connections_active),
            Service::Imap => (&self.imap_active, &self.imap_metrics.connections_active),
        }
    }

    /// Count a new session of `service` (and its connection).
    pub(crate) fn enter(&self, service: Service) -> ActiveSession<'_> {
        let (count, gauge) = self.active(service);
        count.set(count.get() + 1);
        gauge.inc();
        match service {
            Service::Smtp => self.metrics.connections.inc(),
            Service::Pop3 => self.pop3_metrics.connections.inc(),
            Service::Imap => self.imap_metrics.connections.inc(),
        };
        ActiveSession(self, service)
    }

    /// A fresh message id, unique on this shard.
    pub(crate) fn next_id(&self, now_micros: u64) -> MessageId {
        self.ids.borrow_mut().next(now_micros)
    }

    /// Whether `service` has room for one more session.
    fn has_room(&self, service: Service) -> bool {
        let max = match service {
            Service::Smtp => self.config.smtp.max_connections_per_shard,
            Service::Pop3 => self.config.pop3.max_connections_per_shard,
            Service::Imap => self.config.imap.max_connections_per_shard,
        };
        self.active(service).0.get() < max
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
    for accept_loop in loops {
        accept_loop.await;
    }
    let deadline = Instant::now() + SHUTDOWN_GRACE;
    let sessions = || shard.smtp_active.get() + shard.pop3_active.get() + shard.imap_active.get();
    let busy = || sessions() > 0 || relay.as_ref().is_some_and(|r| r.busy());
    while busy() && Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
    if sessions() > 0 {
        tracing::warn!(
            shard = shard.id,
            sessions = sessions(),
            "sessions still open after the shutdown grace period"
        );
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
                if !shard.has_room(service) {
                    glommio::spawn_local(refuse(shard.clone(), service, stream)).detach();
                    continue;
                }
                let (shard, shutdown) = (shard.clone(), shutdown.clone());
                glommio::spawn_local(serve(shard, service, stream, peer, shutdown)).detach();
            }
            Wake::Accepted(Err(e)) => {
                tracing::warn!(shard = shard.id, ?service, error = %e, "accept failed");
                glommio::timer::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Serve one `service` client until it quits, times out, vanishes or the
/// server stops.
async fn serve(
    shard: Rc<Shard>,
    service: Service,
    mut stream: glommio::net::TcpStream,
    peer: SocketAddr,
    shutdown: ShutdownSignal,
) {
    let _active = shard.enter(service);
    let _ = stream.set_nodelay(true);
    let ended = match service {
        Service::Smtp => session::drive(&shard, &mut stream, peer, shutdown).await,
        Service::Pop3 => pop3::drive(&shard, &mut stream, peer, shutdown).await,
        Service::Imap => imap::drive(&shard, &mut stream, peer, shutdown).await,
    };
    match ended {
        Ok(()) => tracing::debug!(shard = shard.id, ?service, %peer, "session closed"),
        Err(e) => {
            tracing::debug!(shard = shard.id, ?service, %peer, error = %e, "session ended by I/O error")
        }
    }
    let _ = stream.close().await;
}

/// Tell a client we are full and hang up: SMTP's 421 at the greeting
/// (RFC 5321 §3.8), POP3's `-ERR [SYS/TEMP]` greeting (RFC 2449 §8.1.2),
/// IMAP's BYE greeting (RFC 9051 §7.1.5).
async fn refuse(shard: Rc<Shard>, service: Service, mut stream: glommio::net::TcpStream) {
    let mut line = Vec::with_capacity(80);
    match service {
        Service::Smtp => {
            shard.metrics.connections_refused.inc();
            replies::too_many_connections(&shard.config.hostname).write_to(&mut line);
        }
        Service::Pop3 => {
            shard.pop3_metrics.connections_refused.inc();
            pop3_replies::TOO_MANY_CONNECTIONS.write_to(&mut line);
        }
        Service::Imap => {
            shard.imap_metrics.connections_refused.inc();
            line.extend_from_slice(
                b"* BYE [UNAVAILABLE] too many connections, try again later\r\n",
            );
        }
    }
    let _ = stream.write_all(&line).await;
    let _ = stream.close().await;
}

/// Turn a shutdown receiver into the shared signal sessions clone.
pub(crate) fn shutdown_signal(rx: oneshot::Receiver<()>) -> ShutdownSignal {
    rx.shared()
}
