//! A ManageSieve connection (RFC 5804): the sans-IO
//! [`ManageSieveSession`] driven over a socket, logins through the shared
//! [`crate::auth`], scripts through [`crate::sieve::scripts`] (the rules
//! `ringpost user sieve` and the admin API follow too), each change one
//! commit of the shard's writer.

use crate::auth::LoginOutcome;
use crate::conn::{Connection, Protocol};
use crate::shard::{Service, Shard};
use crate::sieve::scripts::{self, ScriptError};
use ringpost_protocols::managesieve::{Answer, Event, ManageSieveSession, Request};
use ringpost_protocols::sasl::Credentials;
use ringpost_storage::{StoreError, WriteBatch};
use std::io;
use std::net::SocketAddr;

/// The ManageSieve side of one connection.
pub(crate) struct ManageSieve<'a> {
    shard: &'a Shard,
    service: Service,
    peer: SocketAddr,
}

impl<'a> ManageSieve<'a> {
    /// A connection from `peer`.
    pub(crate) fn new(shard: &'a Shard, service: Service, peer: SocketAddr) -> Self {
        ManageSieve {
            shard,
            service,
            peer,
        }
    }
}

impl Protocol for ManageSieve<'_> {
    type Session = ManageSieveSession;

    async fn handle(
        &mut self,
        session: &mut ManageSieveSession,
        event: Event,
        conn: &mut Connection,
    ) -> io::Result<()> {
        match event {
            Event::Authenticate(credentials) => self.authenticate(session, credentials).await,
            Event::StartTls => {
                self.shard.upgrade(conn, self.service, session).await?;
                session.tls_established();
            }
            Event::Scripts { user, request } => {
                let answer = self.scripts(&user, request).await;
                session.answer(answer);
            }
        }
        Ok(())
    }

    fn trusted(&self, session: &ManageSieveSession) -> bool {
        session.is_authenticated()
    }

    fn on_timeout(&mut self) {
        tracing::debug!(shard = self.shard.id, peer = %self.peer, "managesieve session timed out");
    }
}

impl ManageSieve<'_> {
    async fn authenticate(&self, session: &mut ManageSieveSession, credentials: Credentials) {
        let shard = self.shard;
        let peer = self.peer;
        let service = self.service.label();
        let mechanism = credentials.mechanism.name();
        let user = credentials.user.as_str();
        match shard
            .auth
            .login(peer.ip(), user, &credentials.password)
            .await
        {
            LoginOutcome::Accepted(account) => {
                shard.security.auth(service, mechanism, "ok");
                tracing::info!(shard = shard.id, %peer, user = %account, "managesieve login");
                session.auth_succeeded(account);
            }
            LoginOutcome::Rejected => {
                shard.security.auth(service, mechanism, "failed");
                tracing::info!(shard = shard.id, %peer, user, mechanism, "managesieve login failed");
                glommio::timer::sleep(shard.auth_failure_delay(service)).await;
                session.auth_failed();
            }
            LoginOutcome::LockedOut => {
                shard.security.auth(service, mechanism, "locked_out");
                glommio::timer::sleep(shard.auth_failure_delay(service)).await;
                session.auth_locked_out();
            }
            LoginOutcome::Unavailable(e) => {
                shard.security.auth(service, mechanism, "unavailable");
                tracing::error!(shard = shard.id, %peer, user, error = %e, "managesieve login could not run");
                session.auth_unavailable();
            }
        }
    }

    /// Do `request` on `user`'s scripts; reads on the shard, each change
    /// one commit.
    async fn scripts(&self, user: &str, request: Request) -> Answer {
        let shard = self.shard;
        let store = &*shard.store;
        let command = match &request {
            Request::Put { .. } => "putscript",
            Request::HaveSpace(_) => "havespace",
            Request::List => "listscripts",
            Request::Activate(_) => "setactive",
            Request::Get(_) => "getscript",
            Request::Delete(_) => "deletescript",
            Request::Rename { .. } => "renamescript",
        };
        match &request {
            Request::List => {
                return match scripts::list(store, user) {
                    Ok(list) => {
                        shard.managesieve_metrics.command(command, "ok");
                        Answer::Listing(list.into_iter().map(|s| (s.name, s.active)).collect())
                    }
                    Err(e) => self.refused(command, user, e),
                }
            }
            Request::HaveSpace(name) => {
                return match scripts::room(store, user, name) {
                    Ok(()) => {
                        shard.managesieve_metrics.command(command, "ok");
                        Answer::Done
                    }
                    Err(e) => self.refused(command, user, e),
                }
            }
            Request::Get(name) => {
                return match scripts::get(store, user, name) {
                    Ok(text) => {
                        shard.managesieve_metrics.command(command, "ok");
                        Answer::Script(text)
                    }
                    Err(e) => self.refused(command, user, e),
                }
            }
            _ => {}
        }
        // One change per account at a time, on every shard: the checks
        // below read what the commit then changes.
        let Some(_lock) = shard.access.lock_scripts(user) else {
            shard.managesieve_metrics.command(command, "no");
            return Answer::No(
                Some("TRYLATER"),
                "another change to these scripts is in progress".into(),
            );
        };
        let planned: Result<WriteBatch, ScriptError> = match &request {
            Request::Put { name, text } => scripts::put_batch(store, user, name, text, false),
            Request::Activate(name) => scripts::activate_batch(store, user, name.as_deref()),
            Request::Delete(name) => scripts::delete_batch(store, user, name),
            Request::Rename { from, to } => scripts::rename_batch(store, user, from, to),
            Request::List | Request::Get(_) | Request::HaveSpace(_) => {
                unreachable!("answered above")
            }
        };
        let batch = match planned {
            Ok(batch) => batch,
            Err(e) => return self.refused(command, user, e),
        };
        match shard.commits.commit(batch).await {
            Ok(()) => {
                shard.managesieve_metrics.command(command, "ok");
                tracing::info!(shard = shard.id, peer = %self.peer, user, command, "managesieve change stored");
                Answer::Done
            }
            Err(e) => self.refused(command, user, ScriptError::from(e)),
        }
    }

    /// The answer to a refused request, in RFC 5804 §1.3's response codes.
    fn refused(&self, command: &str, user: &str, e: ScriptError) -> Answer {
        let shard = self.shard;
        let code = match &e {
            ScriptError::NoSuchScript(_) => Some("NONEXISTENT"),
            ScriptError::Active(_) => Some("ACTIVE"),
            ScriptError::Exists(_) => Some("ALREADYEXISTS"),
            ScriptError::TooMany => Some("QUOTA/MAXSCRIPTS"),
            ScriptError::Account(crate::accounts::AccountError::Store(StoreError::DiskFull {
                ..
            })) => Some("QUOTA"),
            ScriptError::Account(_) => Some("TRYLATER"),
            ScriptError::Invalid(_) | ScriptError::BadName(_) => None,
        };
        if code == Some("TRYLATER") {
            // The store's own words stay in the log.
            tracing::error!(shard = shard.id, peer = %self.peer, user, command, error = %e, "managesieve request failed");
            shard.managesieve_metrics.command(command, "error");
            return Answer::No(
                code,
                "the server could not do this now; try again later".into(),
            );
        }
        shard.managesieve_metrics.command(command, "no");
        Answer::No(code, e.to_string())
    }
}
