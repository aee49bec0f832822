//! A POP3 connection: the sans-IO [`Pop3Session`] driven over a socket,
//! with the store behind it.
//!
//! The maildrop is the account's INBOX as it was at login, numbered from 1
//! in UID order. A message's UIDL is its mailbox's UIDVALIDITY and its UID,
//! so it is the same in every session for as long as the message exists.
//! Deletions happen only at QUIT, as one commit of IMAP-style expunges: IMAP
//! sessions see them at once, and a connection that drops deletes nothing.
//! One POP3 session per account at a time ([`Access::lock_maildrop`]).
//!
//! [`Access::lock_maildrop`]: crate::access::Access::lock_maildrop

use crate::access::MaildropLock;
use crate::auth::LoginOutcome;
use crate::conn::{Connection, Protocol};
use crate::shard::{Service, Shard};
use ringpost_protocols::pop3::{Event, MessageInfo, Pop3Session};
use ringpost_storage::mailbox::{self, Change, INBOX};
use ringpost_storage::spool::{self, MessageId};
use ringpost_storage::{StoreError, WriteBatch};
use std::io;
use std::net::SocketAddr;

/// Output past this is written before the next command is answered.
const FLUSH_AT: usize = 256 * 1024;

/// The maildrop a logged-in session works on.
struct Maildrop {
    user: String,
    uidvalidity: u32,
    /// (uid, body) by message number - 1.
    messages: Vec<(u32, MessageId)>,
    /// Released when the session ends, however it ends.
    _lock: MaildropLock,
}

/// The POP3 side of one connection.
pub(crate) struct Pop3<'a> {
    pub shard: &'a Shard,
    pub service: Service,
    pub peer: SocketAddr,
    maildrop: Option<Maildrop>,
}

impl<'a> Pop3<'a> {
    /// A connection from `peer` on `service` (POP3 or POP3S).
    pub(crate) fn new(shard: &'a Shard, service: Service, peer: SocketAddr) -> Pop3<'a> {
        Pop3 {
            shard,
            service,
            peer,
            maildrop: None,
        }
    }
}

impl Protocol for Pop3<'_> {
    type Session = Pop3Session;

    async fn handle(
        &mut self,
        pop3: &mut Pop3Session,
        event: Event,
        conn: &mut Connection,
    ) -> io::Result<()> {
        match event {
            Event::Authenticate {
                mechanism,
                user,
                password,
            } => {
                self.maildrop = self.authenticate(pop3, mechanism, &user, &password).await;
            }
            Event::Retrieve { number, .. } => {
                retrieve(self.shard, pop3, self.maildrop.as_ref(), number);
            }
            Event::Commit { deleted } => {
                commit(
                    self.shard,
                    pop3,
                    self.maildrop.as_ref(),
                    &deleted,
                    self.peer,
                )
                .await;
            }
            Event::StartTls => {
                self.shard.upgrade(conn, self.service, pop3).await?;
                pop3.tls_established();
            }
        }
        // Pipelined RETRs share writes, but a mailbox never sits in memory.
        if pop3.output().len() >= FLUSH_AT {
            conn.write_all(pop3.output()).await?;
            pop3.clear_output();
        }
        Ok(())
    }

    fn trusted(&self, pop3: &Pop3Session) -> bool {
        pop3.is_authenticated()
    }

    fn on_timeout(&mut self) {
        self.shard.pop3_metrics.timeouts.inc();
        tracing::debug!(shard = self.shard.id, peer = %self.peer, "pop3 session timed out");
    }
}

impl Pop3<'_> {
    /// Check the credentials, lock and list the maildrop, answer the session.
    async fn authenticate(
        &self,
        pop3: &mut Pop3Session,
        mechanism: &'static str,
        user: &str,
        password: &str,
    ) -> Option<Maildrop> {
        let shard = self.shard;
        let peer = self.peer;
        let metrics = &shard.pop3_metrics;
        let service = self.service.label();
        let account = match shard.auth.login(peer.ip(), user, password).await {
            LoginOutcome::Accepted(account) => account,
            LoginOutcome::Rejected => {
                metrics.logins_failed.inc();
                shard.security.auth(service, mechanism, "failed");
                tracing::info!(shard = shard.id, %peer, user, mechanism, "pop3 login failed");
                glommio::timer::sleep(shard.auth_failure_delay(service)).await;
                pop3.auth_failed();
                return None;
            }
            LoginOutcome::LockedOut => {
                metrics.logins_failed.inc();
                shard.security.auth(service, mechanism, "locked_out");
                glommio::timer::sleep(shard.auth_failure_delay(service)).await;
                pop3.auth_locked_out();
                return None;
            }
            LoginOutcome::Unavailable(e) => {
                metrics.logins_unavailable.inc();
                shard.security.auth(service, mechanism, "unavailable");
                tracing::error!(shard = shard.id, %peer, user, error = %e, "pop3 login could not run");
                pop3.auth_unavailable();
                return None;
            }
        };
        shard.security.auth(service, mechanism, "ok");
        let Some(lock) = shard.access.lock_maildrop(&account) else {
            metrics.logins_in_use.inc();
            tracing::info!(shard = shard.id, %peer, user = %account, "pop3 maildrop in use");
            pop3.maildrop_locked();
            return None;
        };
        match list_inbox(shard, &account) {
            Ok((uidvalidity, rows)) => {
                let listing = rows
                    .iter()
                    .map(|(uid, _, size)| MessageInfo {
                        uid: uidl(uidvalidity, *uid),
                        size: *size,
                    })
                    .collect();
                metrics.logins_ok.inc();
                tracing::info!(shard = shard.id, %peer, user = %account, messages = rows.len(), "pop3 login");
                pop3.auth_succeeded(listing);
                Some(Maildrop {
                    user: account,
                    uidvalidity,
                    messages: rows.into_iter().map(|(uid, id, _)| (uid, id)).collect(),
                    _lock: lock,
                })
            }
            Err(e) => {
                metrics.logins_unavailable.inc();
                tracing::error!(shard = shard.id, %peer, user = %account, error = %e, "pop3 login: cannot list INBOX");
                pop3.auth_unavailable();
                None
            }
        }
    }
}

/// One INBOX message as listed at login: (uid, body, size).
type Listed = (u32, MessageId, u64);

/// The INBOX: its UIDVALIDITY and its messages. An account that never got
/// mail has no INBOX yet: an empty maildrop.
fn list_inbox(shard: &Shard, user: &str) -> Result<(u32, Vec<Listed>), StoreError> {
    let store = &*shard.store;
    let Some(meta) = mailbox::meta(store, user, INBOX)? else {
        return Ok((0, Vec::new()));
    };
    let mut rows = Vec::new();
    mailbox::rows(store, user, meta.uidvalidity, &mut |uid, row| {
        rows.push((uid, row.message, row.size));
        true
    })?;
    Ok((meta.uidvalidity, rows))
}

/// A message's unique-id listing: UIDVALIDITY and UID, 16 hex digits.
fn uidl(uidvalidity: u32, uid: u32) -> String {
    format!("{uidvalidity:08x}{uid:08x}")
}

/// Serve RETR or TOP for message `number`.
fn retrieve(shard: &Shard, pop3: &mut Pop3Session, maildrop: Option<&Maildrop>, number: usize) {
    let Some(&(_, id)) = maildrop.and_then(|m| m.messages.get(number.wrapping_sub(1))) else {
        return pop3.message_missing();
    };
    match spool::read_body_pinned(&*shard.store, &id) {
        Ok(Some(body)) => {
            shard.pop3_metrics.retrieved.inc();
            shard.pop3_metrics.retrieved_bytes.inc_by(body.len() as u64);
            pop3.message(&body);
        }
        // Expunged over IMAP since login.
        Ok(None) => pop3.message_gone(),
        Err(e) => {
            tracing::error!(shard = shard.id, queue_id = %id, error = %e, "pop3: cannot read message");
            pop3.message_missing();
        }
    }
}

/// QUIT in the TRANSACTION state: remove the marked messages in one commit.
async fn commit(
    shard: &Shard,
    pop3: &mut Pop3Session,
    maildrop: Option<&Maildrop>,
    deleted: &[usize],
    peer: SocketAddr,
) {
    let Some(maildrop) = maildrop else {
        return pop3.commit_failed();
    };
    if deleted.is_empty() {
        return pop3.committed();
    }
    let mut batch = WriteBatch::new();
    for &number in deleted {
        if let Some(&(uid, _)) = maildrop.messages.get(number - 1) {
            batch.change(Change::Expunge {
                user: maildrop.user.clone(),
                mailbox: INBOX.to_owned(),
                uidvalidity: maildrop.uidvalidity,
                uid,
                // DELE needs no flag.
                if_deleted: false,
            });
        }
    }
    match shard.commits.commit_changes(batch).await {
        Ok(_) => {
            shard.pop3_metrics.deleted.inc_by(deleted.len() as u64);
            tracing::info!(shard = shard.id, %peer, user = %maildrop.user, deleted = deleted.len(), "pop3 deletions committed");
            pop3.committed();
        }
        Err(e) => {
            tracing::error!(shard = shard.id, %peer, user = %maildrop.user, error = %e, "pop3 deletions failed");
            pop3.commit_failed();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::uidl;

    #[test]
    fn uidl_is_uidvalidity_and_uid() {
        assert_eq!(uidl(0x6553_f100, 7), "6553f10000000007");
        assert_eq!(uidl(u32::MAX, u32::MAX).len(), 16);
    }
}
