//! An IMAP connection: the sans-IO [`ImapSession`] driven over a socket,
//! with every mailbox command run against the store.
//!
//! Reads go straight to the store on the shard (point reads of bodies,
//! range scans of a mailbox's rows); every change is a commit of mailbox
//! [`Change`]s, sequenced by the commit writer, which also tells every
//! session of the account (on any shard) that something changed. A session
//! rescans its mailbox only after such news, so a client fetching a message
//! at a time costs one body read per message.

mod commands;
mod convert;
mod fetch;
mod view;

use crate::access::{self, LoginError};
use crate::shard::{Shard, ShutdownSignal};
use futures_lite::{AsyncReadExt, AsyncWriteExt, FutureExt};
use glommio::net::TcpStream;
use ringpost_protocols::imap::{Event, ImapSession};
use ringpost_storage::Change;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;
use view::View;

/// Socket read buffer; APPEND literals arrive in many reads.
const READ_BUFFER: usize = 64 * 1024;
/// Output past this is written before the next message is rendered, so a
/// FETCH of a whole mailbox never sits in memory at once.
const FLUSH_AT: usize = 256 * 1024;

/// Run one IMAP session over `stream` until it ends.
pub(crate) async fn drive(
    shard: &Shard,
    stream: &mut TcpStream,
    peer: SocketAddr,
    shutdown: ShutdownSignal,
) -> io::Result<()> {
    let mut conn = Conn {
        shard,
        peer,
        user: None,
        changes: None,
        view: None,
    };
    conn.drive(stream, shutdown).await
}

/// One connection's state besides the protocol session.
pub(crate) struct Conn<'a> {
    shard: &'a Shard,
    peer: SocketAddr,
    /// The account, once logged in.
    user: Option<String>,
    /// News of changes to the account's mailboxes.
    changes: Option<flume::Receiver<()>>,
    /// The selected mailbox.
    view: Option<View>,
}

/// What woke the connection.
enum Wake {
    Read(io::Result<usize>),
    Changed,
    Shutdown,
}

impl Conn<'_> {
    async fn drive(&mut self, stream: &mut TcpStream, shutdown: ShutdownSignal) -> io::Result<()> {
        let mut imap = ImapSession::new(self.shard.imap.clone());
        let mut buf = vec![0u8; READ_BUFFER];
        let mut stopping = false;
        loop {
            while let Some(event) = imap.poll_event() {
                match event {
                    Event::Login {
                        tag,
                        user,
                        password,
                    } => self.login(&mut imap, &tag, &user, &password).await,
                    Event::Command { tag, body } => {
                        self.command(&mut imap, stream, &tag, *body).await?;
                    }
                    // Updates come as they happen (below); nothing to do yet.
                    Event::Idle => self.sync(&mut imap, true),
                    Event::IdleDone => {
                        self.sync(&mut imap, true);
                        imap.idle_done();
                    }
                }
                // Commands already received go on.
                imap.feed(&[]);
            }
            if stopping {
                imap.shutdown();
            }
            if !imap.output().is_empty() {
                stream.write_all(imap.output()).await?;
                imap.clear_output();
            }
            if imap.is_closed() {
                return Ok(());
            }

            stream.set_read_timeout(Some(self.shard.config.imap_idle_timeout()))?;
            let read = async { Wake::Read(stream.read(&mut buf).await) };
            let stop = async {
                shutdown.clone().await.ok();
                Wake::Shutdown
            };
            let changes = self.changes.clone().filter(|_| imap.is_idling());
            let changed = async {
                match changes {
                    Some(changes) => {
                        let _ = changes.recv_async().await;
                        Wake::Changed
                    }
                    None => std::future::pending().await,
                }
            };
            match read.or(changed).or(stop).await {
                Wake::Shutdown => stopping = true,
                Wake::Changed => self.refresh(&mut imap, true),
                Wake::Read(Ok(0)) => return Ok(()),
                Wake::Read(Ok(n)) => imap.feed(&buf[..n]),
                Wake::Read(Err(e)) if e.kind() == io::ErrorKind::TimedOut => {
                    self.shard.imap_metrics.timeouts.inc();
                    imap.timed_out();
                    stream.write_all(imap.output()).await?;
                    return Ok(());
                }
                Wake::Read(Err(e)) => return Err(e),
            }
        }
    }

    async fn login(
        &mut self,
        imap: &mut ImapSession,
        tag: &imap_tag::Tag,
        user: &str,
        password: &str,
    ) {
        let metrics = &self.shard.imap_metrics;
        match access::login(self.shard.store.clone(), user, password).await {
            Ok(account) => {
                metrics.logins_ok.inc();
                tracing::info!(shard = self.shard.id, peer = %self.peer, user = %account, "imap login");
                self.changes = Some(self.shard.access.watch(&account));
                self.user = Some(account);
                imap.login_succeeded(tag);
            }
            Err(LoginError::Rejected) => {
                metrics.logins_failed.inc();
                tracing::info!(shard = self.shard.id, peer = %self.peer, user, "imap login failed");
                let delay = Duration::from_secs(self.shard.config.imap.auth_failure_delay_secs);
                glommio::timer::sleep(delay).await;
                imap.login_failed(tag);
            }
            Err(LoginError::Unavailable(e)) => {
                metrics.logins_unavailable.inc();
                tracing::error!(shard = self.shard.id, peer = %self.peer, error = %e, "imap login: store failed");
                imap.login_unavailable(tag);
            }
        }
    }

    /// Whether news of a change is waiting (and take it).
    fn take_news(&self) -> bool {
        self.changes.as_ref().is_some_and(|c| c.try_recv().is_ok())
    }

    /// Leave the news for the next `take_news`.
    fn renotify(&self) {
        if let Some(user) = &self.user {
            self.shard.access.mailbox_changed(user);
        }
    }

    /// Bring the selected mailbox up to date if something changed.
    fn sync(&mut self, imap: &mut ImapSession, allow_expunge: bool) {
        if self.take_news() {
            self.refresh(imap, allow_expunge);
        }
    }

    /// Bring the selected mailbox up to date.
    fn refresh(&mut self, imap: &mut ImapSession, allow_expunge: bool) {
        let Some(view) = self.view.as_mut() else {
            return;
        };
        match view.sync(&*self.shard.store, imap, allow_expunge) {
            Ok(true) => {
                if !allow_expunge {
                    // Expunges were held back: look again at the next chance.
                    self.renotify();
                }
            }
            Ok(false) => {
                // Deleted or replaced under us: the client must select again.
                imap.untagged("BYE the selected mailbox was deleted");
                imap.shutdown();
            }
            Err(e) => {
                tracing::error!(shard = self.shard.id, error = %e, "imap: cannot read mailbox");
                self.renotify();
            }
        }
    }

    /// Commit mailbox changes, counting failures.
    async fn commit(
        &self,
        batch: ringpost_storage::WriteBatch,
    ) -> Result<Vec<ringpost_storage::mailbox::Applied>, ringpost_storage::StoreError> {
        let result = self.shard.commits.commit_changes(batch).await;
        if let Err(e) = &result {
            if !matches!(e, ringpost_storage::StoreError::Refused(_)) {
                tracing::error!(shard = self.shard.id, error = %e, "imap: commit failed");
            }
        }
        result
    }

    fn user(&self) -> &str {
        self.user.as_deref().unwrap_or_default()
    }

    /// A change for the logged-in account.
    fn expunge(&self, view: &View, uid: u32) -> Change {
        Change::Expunge {
            user: self.user().to_owned(),
            mailbox: view.name.clone(),
            uidvalidity: view.uidvalidity,
            uid,
        }
    }
}

/// The tag type, under a short name.
mod imap_tag {
    pub type Tag = ringpost_protocols::imap::types::core::Tag<'static>;
}
