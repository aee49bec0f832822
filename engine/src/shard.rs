//! One shard: a glommio executor pinned to a core, with its own listening
//! socket (SO_REUSEPORT; the kernel spreads connections), its own sessions,
//! counters and id sequence. Nothing here is shared with other shards except
//! the commit handle, which is a channel, and the store, which sessions read
//! (the recipient check).

use crate::config::Config;
use crate::intake::IdGenerator;
use crate::metrics::ShardMetrics;
use crate::relay::queue::Relay;
use crate::relay::Hub;
use crate::session;
use futures::channel::oneshot;
use futures::future::{FutureExt as _, Shared};
use futures_lite::{AsyncWriteExt, FutureExt};
use glommio::net::TcpListener;
use ringpost_protocols::smtp::{replies, ServerConfig};
use ringpost_storage::spool::MessageId;
use ringpost_storage::{CommitHandle, Store};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Resolves once the server is asked to stop; cheap to clone.
pub(crate) type ShutdownSignal = Shared<oneshot::Receiver<()>>;

/// How long in-flight transactions may take to finish once shutdown begins.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// State owned by one shard's executor.
pub(crate) struct Shard {
    /// Shard number (0-based).
    pub id: usize,
    /// Server configuration.
    pub config: Arc<Config>,
    /// Limits handed to every SMTP session.
    pub smtp: Arc<ServerConfig>,
    /// Where messages are made durable.
    pub commits: CommitHandle,
    /// The store, for reads on the shard itself (the recipient check: one
    /// point read of the `users` family).
    pub store: Arc<dyn Store>,
    /// This shard's metric handles.
    pub metrics: ShardMetrics,
    /// Where accepted queue entries go to be delivered (None: relay off).
    pub hub: Option<Arc<Hub>>,
    ids: RefCell<IdGenerator>,
    active: Cell<usize>,
}

/// Decrements the active-session count when a session ends, however it ends.
pub(crate) struct ActiveSession<'a>(&'a Shard);

impl Drop for ActiveSession<'_> {
    fn drop(&mut self) {
        self.0.active.set(self.0.active.get() - 1);
        self.0.metrics.connections_active.dec();
    }
}

impl Shard {
    pub(crate) fn new(
        id: usize,
        config: Arc<Config>,
        commits: CommitHandle,
        store: Arc<dyn Store>,
        metrics: ShardMetrics,
        hub: Option<Arc<Hub>>,
    ) -> Shard {
        let smtp = Arc::new(ServerConfig {
            hostname: config.hostname.clone(),
            max_line_len: config.smtp.max_line_length,
            max_message_size: config.smtp.max_message_size,
            max_recipients: config.smtp.max_recipients,
            max_errors: config.smtp.max_errors,
        });
        Shard {
            id,
            config,
            smtp,
            commits,
            store,
            metrics,
            hub,
            ids: RefCell::new(IdGenerator::new(id as u16)),
            active: Cell::new(0),
        }
    }

    /// Count a session in; the guard counts it out.
    pub(crate) fn enter(&self) -> ActiveSession<'_> {
        self.active.set(self.active.get() + 1);
        self.metrics.connections.inc();
        self.metrics.connections_active.inc();
        ActiveSession(self)
    }

    /// A fresh message id.
    pub(crate) fn next_id(&self, now_micros: u64) -> MessageId {
        self.ids.borrow_mut().next(now_micros)
    }
}

enum Wake {
    Accepted(glommio::Result<glommio::net::TcpStream, ()>),
    Shutdown,
}

/// Accept connections until shutdown, then wait (bounded) for sessions and
/// outbound deliveries to finish.
pub(crate) async fn run(
    shard: Rc<Shard>,
    listener: TcpListener,
    shutdown: ShutdownSignal,
    relay: Option<Rc<Relay>>,
) {
    let max = shard.config.smtp.max_connections_per_shard;
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
                if shard.active.get() >= max {
                    shard.metrics.connections_refused.inc();
                    glommio::spawn_local(refuse(stream, shard.config.hostname.clone())).detach();
                    continue;
                }
                glommio::spawn_local(session::serve(
                    shard.clone(),
                    stream,
                    peer,
                    shutdown.clone(),
                ))
                .detach();
            }
            Wake::Accepted(Err(e)) => {
                // Typically EMFILE: back off instead of spinning.
                tracing::warn!(shard = shard.id, error = %e, "accept failed");
                glommio::timer::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    drop(listener);
    let deadline = Instant::now() + SHUTDOWN_GRACE;
    let busy = || shard.active.get() > 0 || relay.as_ref().is_some_and(|r| r.busy());
    while busy() && Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
    if shard.active.get() > 0 {
        tracing::warn!(
            shard = shard.id,
            sessions = shard.active.get(),
            "sessions still open after the shutdown grace period"
        );
    }
}

/// Tell a client we are full (RFC 5321 §3.8: 421 at the greeting) and hang up.
async fn refuse(mut stream: glommio::net::TcpStream, hostname: String) {
    let mut line = Vec::with_capacity(80);
    replies::too_many_connections(&hostname).write_to(&mut line);
    let _ = stream.write_all(&line).await;
    let _ = stream.close().await;
}

/// Turn a shutdown receiver into the shared signal sessions clone.
pub(crate) fn shutdown_signal(rx: oneshot::Receiver<()>) -> ShutdownSignal {
    rx.shared()
}
