//! The control plane: one HTTP/1.1 listener (`metrics.listen`, loopback by
//! default) with `/metrics`, `/healthz`, `/readyz` and the versioned JSON
//! API under `/api/v1/` (see [`routes`]).
//!
//! It runs hyper on a thread of its own with a tokio current-thread
//! runtime, like the DNS thread, so a slow or hostile HTTP client never
//! costs a shard anything. It reads the store and commits through the
//! commit writer like any session; it takes no lock a shard takes.
//!
//! Limits, since the port may be reachable by more than the operator: at
//! most [`MAX_CONNECTIONS`] at once, [`LOOPBACK_RESERVE`] of them for
//! loopback alone (where the operator's own tools run), and
//! `admin.max_connections_per_client` from one other client (an address,
//! an IPv6 /64), more answered 503 and closed at accept; a request
//! head within [`HEADER_TIMEOUT`], a connection no longer than
//! [`CONNECTION_DEADLINE`], request bodies of at most [`MAX_BODY`]. The API
//! wants the bearer token of [`token`]; `/metrics` and the health checks
//! do not unless `admin.metrics_need_token` says so. Injection requests
//! (`POST /api/v1/inject`) have their own, larger body limit and a memory
//! budget their bodies are read within ([`crate::inject`]).

mod exposition;
pub mod routes;
pub mod token;

use crate::config::Config;
use crate::metrics::Metrics;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use ringpost_storage::{CommitHandle, Store};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
pub use token::{address_path, token_path, Token};

/// Connections served at once; more are closed as they come.
pub const MAX_CONNECTIONS: usize = 64;
/// Slots only loopback may take: however many strangers come, the
/// operator's own tools and a local health check get in.
pub const LOOPBACK_RESERVE: usize = 8;
/// A request head must be in within this.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// No connection lasts longer, however busy.
pub const CONNECTION_DEADLINE: Duration = Duration::from_secs(300);
/// Largest request body (JSON for the API).
pub const MAX_BODY: usize = 64 * 1024;

/// What the handlers work with.
pub struct AdminContext {
    /// The configuration in force, and its reload.
    pub reloader: Arc<crate::live::Reloader>,
    /// The server's store (reads).
    pub store: Arc<dyn Store>,
    /// The server's commit writer (every change).
    pub commits: CommitHandle,
    /// Every metric.
    pub metrics: Arc<Metrics>,
    /// The shards' inboxes, for queue actions; `None` when the relay is off.
    pub(crate) hub: Option<Arc<crate::relay::Hub>>,
    /// `POST /api/v1/inject`.
    pub inject: Arc<crate::inject::Injector>,
    /// The API's bearer token.
    pub token: Token,
    /// Set once the shards serve, cleared when shutdown begins (`/readyz`).
    pub ready: AtomicBool,
}

impl AdminContext {
    /// The configuration in force.
    pub fn config(&self) -> Arc<Config> {
        self.reloader.current()
    }
}

/// The listener's thread.
pub struct AdminServer {
    addr: SocketAddr,
    context: Arc<AdminContext>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl AdminServer {
    /// Bind `addr` and serve `context` until [`AdminServer::stop`].
    pub fn start(addr: SocketAddr, context: Arc<AdminContext>) -> std::io::Result<AdminServer> {
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let served = context.clone();
        let thread = std::thread::Builder::new()
            .name("ringpost-admin".into())
            .spawn(move || runtime.block_on(serve(listener, served, stopped)))?;
        Ok(AdminServer {
            addr,
            context,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Where it listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The shards serve: `/readyz` says so from now on.
    pub fn set_ready(&self, ready: bool) {
        self.context.ready.store(ready, Ordering::Release);
    }

    /// Stop serving and join the thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

async fn serve(
    listener: std::net::TcpListener,
    context: Arc<AdminContext>,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(e) => {
            tracing::error!(error = %e, "admin listener failed");
            return;
        }
    };
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let clients = Arc::new(ClientCounts::default());
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::debug!(error = %e, "admin accept failed");
                    continue;
                }
            },
        };
        let per_client = context.config().admin.max_connections_per_client;
        let Some(client) = clients.admit(peer.ip(), per_client) else {
            context.metrics.security().refused("admin", "per_ip");
            tracing::warn!(%peer, "admin: too many connections from this client; answered 503");
            tokio::spawn(turn_away(stream));
            continue;
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            context.metrics.security().refused("admin", "full");
            tracing::warn!(%peer, "admin: too many connections; answered 503");
            tokio::spawn(turn_away(stream));
            continue;
        };
        let context = context.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let _client = client;
            let service = service_fn(move |request| {
                let context = context.clone();
                async move {
                    Ok::<_, std::convert::Infallible>(routes::handle(&context, peer, request).await)
                }
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(CONNECTION_DEADLINE, connection).await {
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "admin connection failed"),
                Err(_) => tracing::debug!(%peer, "admin connection past its deadline"),
                Ok(Ok(())) => {}
            }
        });
    }
}

/// A connection there is no room for hears 503 (best effort, within a
/// second) and is closed: a client retries a 503, a reset looks like a
/// fault.
async fn turn_away(mut stream: tokio::net::TcpStream) {
    use tokio::io::AsyncWriteExt;
    let answer = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(answer)).await;
}

/// Connections open per client off loopback.
#[derive(Default)]
struct ClientCounts(std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>);

impl ClientCounts {
    /// A slot for a connection from `ip`, held until the guard drops;
    /// `None` when its client has `per_client` already (0: no such cap),
    /// or clients off loopback hold all but [`LOOPBACK_RESERVE`] slots.
    fn admit(self: &Arc<Self>, ip: std::net::IpAddr, per_client: usize) -> Option<ClientSlot> {
        if ip.is_loopback() || ip.to_canonical().is_loopback() {
            return Some(ClientSlot(None));
        }
        let key = crate::limits::client_key(ip);
        let mut counts = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let others: usize = counts.values().sum();
        if others >= MAX_CONNECTIONS - LOOPBACK_RESERVE {
            return None;
        }
        let open = counts.entry(key).or_default();
        if per_client > 0 && *open >= per_client {
            return None;
        }
        *open += 1;
        Some(ClientSlot(Some((self.clone(), key))))
    }
}

/// One connection's place in [`ClientCounts`].
struct ClientSlot(Option<(Arc<ClientCounts>, std::net::IpAddr)>);

impl Drop for ClientSlot {
    fn drop(&mut self) {
        if let Some((counts, key)) = self.0.take() {
            let mut counts = counts.0.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(open) = counts.get_mut(&key) {
                *open -= 1;
                if *open == 0 {
                    counts.remove(&key);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_client_holds_a_few_connections_loopback_any() {
        const PER_CLIENT: usize = 8;
        let counts = Arc::new(ClientCounts::default());
        let stranger: std::net::IpAddr = "192.0.2.7".parse().unwrap();
        let held: Vec<_> = (0..PER_CLIENT)
            .map(|_| counts.admit(stranger, PER_CLIENT).expect("room"))
            .collect();
        assert!(counts.admit(stranger, PER_CLIENT).is_none(), "one too many");
        // Another address of the same IPv6 /64 is the same client.
        let a: std::net::IpAddr = "2001:db8::1".parse().unwrap();
        let b: std::net::IpAddr = "2001:db8::2".parse().unwrap();
        let v6: Vec<_> = (0..PER_CLIENT)
            .map(|_| counts.admit(a, PER_CLIENT).expect("room"))
            .collect();
        assert!(counts.admit(b, PER_CLIENT).is_none());
        drop(v6);
        assert!(counts.admit(b, PER_CLIENT).is_some());
        drop(held);
        assert!(
            counts.admit(stranger, PER_CLIENT).is_some(),
            "slots come back"
        );
        // 0: no cap per client (a proxy's, a container bridge's).
        let proxied: Vec<_> = (0..20).map(|_| counts.admit(stranger, 0)).collect();
        assert!(proxied.iter().all(Option::is_some));
        drop(proxied);
        let loopback: std::net::IpAddr = "127.0.0.1".parse().unwrap();
        let many: Vec<_> = (0..100)
            .map(|_| counts.admit(loopback, PER_CLIENT))
            .collect();
        assert!(many.iter().all(Option::is_some));
        assert!(
            counts.0.lock().unwrap().is_empty(),
            "nothing kept for loopback or closed ones"
        );
        // Strangers together leave the reserve to loopback.
        let strangers: Vec<_> = (0..MAX_CONNECTIONS)
            .filter_map(|n| counts.admit(std::net::IpAddr::from([192, 0, 2, n as u8]), PER_CLIENT))
            .collect();
        assert_eq!(strangers.len(), MAX_CONNECTIONS - LOOPBACK_RESERVE);
        assert!(counts.admit(loopback, PER_CLIENT).is_some());
    }
}
