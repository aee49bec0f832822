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
mod context;
mod convert;
mod fetch;
mod notify;
mod rows_cache;
mod urlauth;

pub(crate) use commands::{creation, Creation};
pub(crate) use rows_cache::RowsCache;
mod view;

use crate::auth::LoginOutcome;
use crate::conn::{Connection, Protocol};
use crate::shard::{Service, Shard};
use ringpost_protocols::imap::types::sequence::SequenceSet;
use ringpost_protocols::imap::{Event, ImapSession};
use ringpost_storage::Change;
use std::io;
use std::net::SocketAddr;
use view::View;

/// Output past this is written before the next message is rendered, so a
/// FETCH of a whole mailbox never sits in memory at once.
const FLUSH_AT: usize = 256 * 1024;

/// One connection's state besides the protocol session.
pub(crate) struct Conn<'a> {
    shard: &'a Shard,
    service: Service,
    peer: SocketAddr,
    /// The account, once logged in.
    user: Option<String>,
    /// Held while logged in: the account's session count.
    _session: Option<crate::access::AccountSession>,
    /// News of changes to the account's mailboxes.
    changes: Option<flume::Receiver<()>>,
    /// The selected mailbox may have changes not reported yet (news came
    /// while they could not be, or expunges were held back): look at the
    /// next chance, as if news had come.
    stale: bool,
    /// The selected mailbox.
    view: Option<View>,
    /// What NOTIFY asked to hear of (RFC 5465).
    watch: Option<notify::Watch>,
    /// News came that NOTIFY has not compared yet.
    unwatched_news: bool,
}

impl<'a> Conn<'a> {
    /// A connection from `peer` on `service` (IMAP or IMAPS).
    pub(crate) fn new(shard: &'a Shard, service: Service, peer: SocketAddr) -> Conn<'a> {
        Conn {
            shard,
            service,
            peer,
            user: None,
            _session: None,
            changes: None,
            stale: false,
            view: None,
            watch: None,
            unwatched_news: false,
        }
    }
}

impl Protocol for Conn<'_> {
    type Session = ImapSession;

    async fn handle(
        &mut self,
        imap: &mut ImapSession,
        event: Event,
        conn: &mut Connection,
    ) -> io::Result<()> {
        match event {
            Event::Login {
                tag,
                mechanism,
                user,
                password,
            } => self.login(imap, &tag, mechanism, &user, &password).await,
            Event::Command { tag, body, extra } => {
                self.command(imap, conn, &tag, *body, extra).await?
            }
            Event::UrlAuth { tag, command } => self.urlauth(imap, &tag, command).await,
            Event::Notify { tag, command } => self.notify(imap, &tag, command),
            Event::CancelUpdate { tag, searches } => {
                if let Some(view) = &mut self.view {
                    view.updates.cancel(&searches);
                }
                imap.ok(&tag, None, "CANCELUPDATE completed");
            }
            // Updates come as they happen (`on_news`); nothing to do yet.
            Event::Idle => {
                self.catch_up(imap, true).await;
                self.report_updates(imap);
                self.report_watched(imap);
            }
            Event::IdleDone => {
                self.catch_up(imap, true).await;
                self.report_updates(imap);
                self.report_watched(imap);
                imap.idle_done();
            }
            Event::Compress => {
                conn.write_all(imap.output()).await?;
                imap.clear_output();
                conn.start_compression();
                imap.compression_started();
            }
            Event::StartTls => {
                self.shard.upgrade(conn, self.service, imap).await?;
                imap.tls_established();
            }
        }
        Ok(())
    }

    fn news(&self, imap: &ImapSession) -> Option<flume::Receiver<()>> {
        // Under NOTIFY, changes are pushed between commands too.
        self.changes
            .clone()
            .filter(|_| imap.is_idling() || self.watch.is_some())
    }

    async fn on_news(&mut self, imap: &mut ImapSession, conn: &mut Connection) {
        if !self.account_exists() {
            imap.bye("the account was deleted");
            return;
        }
        let selected_events = self.watch.as_ref().and_then(|w| w.selected.as_ref());
        if imap.is_idling() || selected_events.is_some() {
            let delayed = !imap.is_idling() && self.watch.as_ref().is_some_and(|w| w.delayed);
            // New messages are those past the last UID seen (expunges in
            // the same sync move sequence numbers, not UIDs).
            let last_uid = self
                .view
                .as_ref()
                .and_then(|v| v.messages.last())
                .map_or(0, |m| m.uid);
            self.refresh(imap, !delayed);
            self.report_recent(imap).await;
            self.fetch_new(imap, conn, last_uid).await;
            self.report_updates(imap);
        } else {
            // Reported at the next command's end, as without NOTIFY.
            self.stale = true;
        }
        self.unwatched_news = true;
        self.report_watched(imap);
    }

    fn trusted(&self, imap: &ImapSession) -> bool {
        imap.is_authenticated()
    }

    fn on_timeout(&mut self) {
        self.shard.imap_metrics.timeouts.inc();
    }
}

impl Conn<'_> {
    async fn login(
        &mut self,
        imap: &mut ImapSession,
        tag: &imap_tag::Tag,
        mechanism: &'static str,
        user: &str,
        password: &str,
    ) {
        let shard = self.shard;
        let metrics = &shard.imap_metrics;
        let service = self.service.label();
        match shard.auth.login(self.peer.ip(), user, password).await {
            LoginOutcome::Accepted(account) => {
                let Some(session) = shard.access.open_session(&account) else {
                    shard.security.auth(service, mechanism, "too_many_sessions");
                    tracing::info!(shard = shard.id, peer = %self.peer, user = %account, "imap login: too many sessions");
                    return imap.no(tag, Some("LIMIT"), "too many sessions for this account");
                };
                metrics.logins_ok.inc();
                shard.security.auth(service, mechanism, "ok");
                tracing::info!(shard = shard.id, peer = %self.peer, user = %account, mechanism, "imap login");
                self.changes = Some(shard.access.watch(&account));
                self._session = Some(session);
                self.user = Some(account);
                imap.login_succeeded(tag);
            }
            LoginOutcome::Rejected => {
                metrics.logins_failed.inc();
                shard.security.auth(service, mechanism, "failed");
                tracing::info!(shard = shard.id, peer = %self.peer, user, mechanism, "imap login failed");
                glommio::timer::sleep(shard.auth_failure_delay(service)).await;
                imap.login_failed(tag);
            }
            LoginOutcome::LockedOut => {
                metrics.logins_failed.inc();
                shard.security.auth(service, mechanism, "locked_out");
                glommio::timer::sleep(shard.auth_failure_delay(service)).await;
                imap.login_locked_out(tag);
            }
            LoginOutcome::Unavailable(e) => {
                metrics.logins_unavailable.inc();
                shard.security.auth(service, mechanism, "unavailable");
                tracing::error!(shard = shard.id, peer = %self.peer, error = %e, "imap login could not run");
                imap.login_unavailable(tag);
            }
        }
    }

    /// Whether news of a change is waiting, or the selected mailbox is
    /// stale (and take both).
    fn take_news(&mut self) -> bool {
        let news = self.changes.as_ref().is_some_and(|c| c.try_recv().is_ok());
        self.unwatched_news |= news;
        news | std::mem::take(&mut self.stale)
    }

    /// NOTIFY's `MessageNew (fetch-att)` for the selected mailbox: FETCH
    /// the messages whose UID is past `last_uid`.
    async fn fetch_new(&mut self, imap: &mut ImapSession, conn: &mut Connection, last_uid: u32) {
        let fetch = self
            .watch
            .as_ref()
            .and_then(|w| w.selected.as_ref()?.fetch.clone());
        let (before, now) = match &self.view {
            Some(view) => (
                view.messages.partition_point(|m| m.uid <= last_uid),
                view.messages.len(),
            ),
            None => (0, 0),
        };
        let Some(names) = fetch.filter(|_| now > before) else {
            return;
        };
        let Ok(set) = SequenceSet::try_from(format!("{}:{now}", before + 1).as_str()) else {
            return;
        };
        if let Err(e) = fetch::run(self, imap, conn, &set, &names, false, None).await {
            tracing::info!(shard = self.shard.id, error = %e, "imap NOTIFY: FETCH of new messages failed");
        }
    }

    /// Bring the selected mailbox up to date if something changed, and
    /// claim what is new as `\Recent`.
    async fn catch_up(&mut self, imap: &mut ImapSession, allow_expunge: bool) {
        if self.take_news() {
            if !self.account_exists() {
                // Deleted by the operator (`ringpost user del`): log out.
                imap.bye("the account was deleted");
                return;
            }
            self.refresh(imap, allow_expunge);
        }
        self.report_recent(imap).await;
    }

    /// Whether the logged-in account still exists (one point read; a
    /// failed read gives it the benefit of the doubt).
    fn account_exists(&self) -> bool {
        let Some(user) = &self.user else {
            return true;
        };
        ringpost_storage::users::user_exists(&*self.shard.store, user).unwrap_or(true)
    }

    /// Claim new messages as `\Recent` and send RECENT if that changed
    /// their number.
    async fn report_recent(&mut self, imap: &mut ImapSession) {
        if self.claim_recent().await {
            if let Some(view) = &self.view {
                view.send_recent(imap);
            }
        }
    }

    /// An IMAP4rev1 read-write session takes the messages no session has
    /// seen as its `\Recent` ones (see `Change::ClaimRecent`). Returns
    /// whether any became recent here. A failed claim only costs the flag.
    async fn claim_recent(&mut self) -> bool {
        let Some(view) = self.view.as_ref().filter(|v| v.wants_recent()) else {
            return false;
        };
        let claim = Change::ClaimRecent {
            user: self.user().to_owned(),
            mailbox: view.name.clone(),
            uidvalidity: view.uidvalidity,
            up_to: view.uidnext,
        };
        let mut batch = ringpost_storage::WriteBatch::new();
        batch.change(claim);
        let applied = self.commit(batch).await;
        let Some(view) = self.view.as_mut() else {
            return false;
        };
        match applied.as_deref() {
            Ok([ringpost_storage::mailbox::Applied::Recent { from }]) => view.mark_recent(*from),
            _ => {
                // Not claimed: don't ask again for these.
                view.recent_to = view.uidnext;
                false
            }
        }
    }

    /// Bring the selected mailbox up to date.
    fn refresh(&mut self, imap: &mut ImapSession, allow_expunge: bool) {
        let Some(view) = self.view.as_mut() else {
            return;
        };
        match view.sync(
            &*self.shard.store,
            &self.shard.imap_rows,
            imap,
            allow_expunge,
        ) {
            Ok(true) => {
                if !allow_expunge {
                    // Expunges were held back: look again at the next chance.
                    self.stale = true;
                }
            }
            Ok(false) => {
                // Deleted or replaced under us: the client must select again.
                imap.bye("the selected mailbox was deleted");
            }
            Err(e) => {
                tracing::error!(shard = self.shard.id, error = %e, "imap: cannot read mailbox");
                self.stale = true;
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

    /// A change for the logged-in account; `if_deleted`: only if the
    /// stored message still has `\Deleted` (EXPUNGE, CLOSE).
    fn expunge(&self, view: &View, uid: u32, if_deleted: bool) -> Change {
        Change::Expunge {
            user: self.user().to_owned(),
            mailbox: view.name.clone(),
            uidvalidity: view.uidvalidity,
            uid,
            if_deleted,
        }
    }
}

/// The tag type, under a short name.
mod imap_tag {
    pub type Tag = ringpost_protocols::imap::types::core::Tag<'static>;
}
