//! One SMTP connection, on the MX port or the submission ports: the answers
//! to the sans-IO [`ServerSession`]'s questions. The connection driver
//! ([`crate::conn`]) does the reading, writing and timing.
//!
//! - RCPT: recipient policy (local accounts for anyone; other domains only
//!   for relay networks and authenticated clients) and the per-account
//!   sending rate.
//! - End of data: the message is made durable, then `250` (or `451`).
//! - AUTH: the shard's [`Authenticator`](crate::auth::Authenticator).
//! - STARTTLS: the handshake on the same connection.
//!
//! LMTP (RFC 2033) is the same session with LHLO and an answer per
//! recipient: its client, let in by address (`lmtp.allowed_networks`),
//! hands over mail for local addresses only, and the checks of the MTA in
//! front stand (no SPF, DKIM, DMARC or blocklists here); users' filters
//! run as for any delivery.

use crate::auth::LoginOutcome;
use crate::conn::{Connection, Protocol};
use crate::intake::{self, Origin};
use crate::mail_auth;
use crate::maillog::Accepted;
use crate::relay::bounce;
use crate::shard::{Service, Shard};
use crate::srs::{self, Srs};
use ringpost_protocols::sasl::Credentials;
use ringpost_protocols::smtp::dsn_request::Notify;
use ringpost_protocols::smtp::{replies, Event, ServerSession, Transaction};
use ringpost_storage::StoreError;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

/// The SMTP side of one connection.
pub(crate) struct Smtp<'a> {
    pub shard: &'a Shard,
    pub service: Service,
    pub peer: SocketAddr,
    /// The address the client reached us at: mail to its literal
    /// (`postmaster@[192.0.2.1]`) is ours (RFC 1123 §5.2.17).
    pub local_ip: Option<IpAddr>,
    /// The client is in `relay_networks`.
    pub may_relay: bool,
    /// What the DNS blocklists said of the client, once asked (at its
    /// first recipient).
    pub dnsbl: Option<crate::dnsbl::Verdict>,
    /// The last sender domain looked up for
    /// `smtp.reject_unknown_sender_domain`, and the refusal it earned.
    pub sender_domain: Option<(String, Option<replies::Reply>)>,
}

impl Protocol for Smtp<'_> {
    type Session = ServerSession;

    async fn handle(
        &mut self,
        smtp: &mut ServerSession,
        event: Event,
        conn: &mut Connection,
    ) -> io::Result<()> {
        match event {
            Event::Recipient { address } => self.recipient(smtp, &address).await,
            Event::Message(tx) => self.accept_message(smtp, tx).await,
            Event::Authenticate(credentials) => self.authenticate(smtp, credentials).await,
            Event::StartTls => {
                self.shard.upgrade(conn, self.service, smtp).await?;
                smtp.tls_established();
            }
        }
        Ok(())
    }

    fn trusted(&self, smtp: &ServerSession) -> bool {
        smtp.is_trusted()
    }

    fn on_timeout(&mut self) {
        self.shard.metrics.timeouts.inc();
        tracing::debug!(shard = self.shard.id, peer = %self.peer, "smtp session timed out");
    }
}

impl Smtp<'_> {
    async fn recipient(&mut self, smtp: &mut ServerSession, given: &str) {
        let shard = self.shard;
        let ours = self
            .local_ip
            .and_then(|ip| at_own_literal(given, ip, &shard.config().hostname));
        let address = ours.as_deref().unwrap_or(given);
        let may_relay = self.may_relay || smtp.authenticated().is_some();
        // A bounce to an SRS address of ours is for the sender it stands
        // for, from here on.
        let mut sent_on = None;
        let feedback = address
            .rsplit_once('@')
            .is_some_and(|(_, domain)| shard.config().is_feedback_domain(domain));
        let checked = match self.srs_recipient(smtp, address) {
            Some(Ok(original)) => {
                sent_on = Some(original);
                Ok(())
            }
            Some(Err(reply)) => Err(reply),
            // Reports about our mail come to any address there.
            None if feedback => Ok(()),
            None => intake::check_recipient(address, may_relay, &shard.config(), |name| {
                local_account(shard, name)
            }),
        };
        if let Err(reply) = checked {
            self.count_rejection(&reply);
            return smtp.reject_recipient(reply);
        }
        if !may_relay && !is_postmaster(address) && self.service != Service::Lmtp {
            if let Some(reply) = self.blocklisted().await {
                shard
                    .security
                    .rejected(self.service.label(), "dnsbl", reply.code);
                return smtp.reject_recipient(reply);
            }
            if let Some(reply) = self.unknown_sender_domain(smtp).await {
                shard
                    .security
                    .rejected(self.service.label(), "unknown_sender_domain", reply.code);
                return smtp.reject_recipient(reply);
            }
        }
        if let Err(reply) = self.check_suppression(smtp, address) {
            shard
                .security
                .rejected(self.service.label(), "suppressed", reply.code);
            return smtp.reject_recipient(reply);
        }
        if let Some(account) = smtp.authenticated() {
            if !shard.send_rate.has_room(account, Instant::now()) {
                shard.security.rate_limited(self.service.label());
                tracing::info!(shard = shard.id, peer = %self.peer, account, "sending rate limit reached");
                self.count_rejection(&replies::SENDING_RATE_EXCEEDED);
                return smtp.reject_recipient(replies::SENDING_RATE_EXCEEDED);
            }
        }
        match sent_on.as_ref().or(ours.as_ref()) {
            Some(address) => smtp.accept_recipient_as(address),
            None => smtp.accept_recipient(),
        }
    }

    /// Take the recipients of `tx` at feedback domains out of it, and read
    /// the message as a report, once for all of them: what to commit.
    fn take_feedback(&self, tx: &mut Transaction) -> Option<ringpost_storage::WriteBatch> {
        let shard = self.shard;
        let config = shard.config();
        let at_feedback = |r: &String| {
            r.rsplit_once('@')
                .is_some_and(|(_, d)| config.is_feedback_domain(d))
        };
        if !tx.recipients.iter().any(at_feedback) {
            return None;
        }
        let mut requests = std::mem::take(&mut tx.recipient_requests).into_iter();
        let mut reports_to = Vec::new();
        let (mut kept, mut kept_requests) = (Vec::new(), Vec::new());
        for recipient in std::mem::take(&mut tx.recipients) {
            let request = requests.next().unwrap_or_default();
            match at_feedback(&recipient) {
                true => reports_to.push(recipient),
                false => {
                    kept.push(recipient);
                    kept_requests.push(request);
                }
            }
        }
        tx.recipients = kept;
        tx.recipient_requests = kept_requests;
        let now = intake::unix_micros();
        let taken =
            crate::feedback::take(&config, shard.events.as_ref(), &reports_to, &tx.data, now);
        shard.security.feedback(taken.kind, 1);
        shard
            .security
            .feedback("suppressed", taken.suppressed as u64);
        tracing::info!(shard = shard.id, peer = %self.peer, to = %reports_to[0], kind = taken.kind, suppressed = taken.suppressed, "feedback report taken");
        Some(taken.batch)
    }

    /// Commit what reports alone came to (the message had no other
    /// recipient), and answer it.
    async fn commit_feedback(
        &self,
        smtp: &mut ServerSession,
        tx: Transaction,
        feedback: Option<ringpost_storage::WriteBatch>,
    ) {
        let shard = self.shard;
        smtp.recycle(tx.data);
        let id = shard.next_id(intake::unix_micros()).to_hex();
        match shard.commits.commit(feedback.unwrap_or_default()).await {
            Ok(()) => smtp.message_stored(&id),
            Err(e) => self.commit_failed(smtp, e, "a report's outcome"),
        }
    }

    /// An SRS address of ours (a bounce of mail we forwarded): taken when
    /// good, from anyone, for the sender it stands for (`Ok`: that
    /// address); `550 5.1.1` when forged, mangled or too old, and
    /// `550 5.7.1` from a sender that is not null (bounces and automatic
    /// replies come from `<>`; anything else would be relaying for
    /// whoever saw the address). `None`: not one.
    fn srs_recipient(
        &self,
        smtp: &ServerSession,
        address: &str,
    ) -> Option<Result<String, replies::Reply>> {
        let shard = self.shard;
        let config = shard.config();
        let (local, domain) = address.rsplit_once('@')?;
        if !srs::is_srs(local) || !domain.eq_ignore_ascii_case(config.srs_domain()) {
            return None;
        }
        if !config.srs.enabled {
            return None;
        }
        if smtp.sender().is_some_and(|sender| !sender.is_empty()) {
            shard.security.srs("refused");
            tracing::info!(shard = shard.id, peer = %self.peer, "SRS address refused to a sender that is not null");
            return Some(Err(replies::BOUNCES_ONLY));
        }
        let srs = match Srs::of(&config, &*shard.store) {
            Ok(srs) => srs?,
            Err(e) => {
                tracing::error!(shard = shard.id, error = %e, "SRS key unreadable; answered 451");
                return Some(Err(replies::STORAGE_FAILED));
            }
        };
        match srs.reverse(address, srs::day_of(intake::unix_micros())) {
            srs::Reversed::Valid(original) => {
                shard.security.srs("returned");
                tracing::info!(shard = shard.id, peer = %self.peer, to = %original, "mail to an SRS address taken for the sender it stands for");
                Some(Ok(original))
            }
            srs::Reversed::Invalid => {
                shard.security.srs("refused");
                tracing::info!(shard = shard.id, peer = %self.peer, "forged, mangled or expired SRS address refused");
                Some(Err(replies::NO_SUCH_USER))
            }
            srs::Reversed::NotSrs => None,
        }
    }

    /// Mail this server forwards for a stranger (an alias's remote
    /// address, a filter's redirect: the relayed recipients the client did
    /// not name) leaves from our SRS address for its sender, so the next
    /// server's SPF check passes; a copy when others get it as sent.
    ///
    /// A sender nobody vouched for (a stranger's, SPF not passing) hears
    /// of the forwarded copies' failures only: the relay's success and
    /// delay reports would go to whoever the stranger named.
    fn rewrite_forwarded(
        &self,
        tx: &Transaction,
        message: &mut ringpost_storage::spool::NewMessage,
        sender_vouched: bool,
        now: u64,
    ) -> Option<ringpost_storage::spool::NewMessage> {
        let shard = self.shard;
        let config = shard.config();
        if tx.mail_from.is_empty() || message.envelope.recipients.is_empty() {
            return None;
        }
        // As the client wrote it (the usual case: few recipients, no
        // allocation; many, one set), or in another case of its domain.
        let many = (tx.recipients.len() > 16).then(|| {
            tx.recipients
                .iter()
                .map(String::as_str)
                .collect::<std::collections::HashSet<_>>()
        });
        let named = |r: &String| {
            let exact = match &many {
                Some(set) => set.contains(r.as_str()),
                None => tx.recipients.iter().any(|t| t == r),
            };
            exact || {
                let key = intake::address_key(r);
                tx.recipients.iter().any(|t| intake::address_key(t) == key)
            }
        };
        let forwarded: Vec<String> = message
            .envelope
            .recipients
            .iter()
            .filter(|r| !named(r))
            .cloned()
            .collect();
        if forwarded.is_empty() {
            return None;
        }
        // Whatever becomes of the sender below.
        if !sender_vouched {
            for request in &mut message.envelope.dsn.recipients {
                if let (true, Some(bits)) = (forwarded.contains(&request.recipient), request.notify)
                {
                    request.notify = Some(Notify::from_bits(bits).failures_only().bits());
                }
            }
        }
        let (_, sender_domain) = tx.mail_from.rsplit_once('@')?;
        if config.is_local_domain(sender_domain) {
            return None;
        }
        let srs = match Srs::of(&config, &*shard.store) {
            Ok(srs) => srs?,
            Err(e) => {
                tracing::error!(shard = shard.id, error = %e, "SRS key unreadable; forwarded with the sender as it came");
                return None;
            }
        };
        let Some(sender) = srs.forward(&tx.mail_from, srs::day_of(now)) else {
            tracing::info!(shard = shard.id, from = %tx.mail_from, "forwarded with its sender as it came: no SRS form of it is a valid address");
            return None;
        };
        shard.security.srs("forwarded");
        tracing::debug!(shard = shard.id, from = %tx.mail_from, %sender, recipients = forwarded.len(), "forwarded mail's sender rewritten (SRS)");
        intake::split_off(message, &forwarded, || shard.next_id(now), &sender)
    }

    /// The refusal for a client a DNS blocklist names ([`crate::dnsbl`]),
    /// asked once per session, on the SMTP port only (submission needs a
    /// login, and a logged-in client is not asked).
    async fn blocklisted(&mut self) -> Option<replies::Reply> {
        let shard = self.shard;
        if self.service != Service::Smtp {
            return None;
        }
        if self.dnsbl.is_none() {
            let zones = shard.config().dnsbl_zones();
            let looked_up = |zone: &str, result: &str| shard.security.dnsbl(zone, result);
            let verdict = match &shard.dns {
                Some(dns) => crate::dnsbl::check(dns, self.peer.ip(), &zones, looked_up).await,
                // Zones added by a reload to a server started without a
                // resolver: nothing can be asked (counted as errors).
                None => {
                    zones.iter().for_each(|z| looked_up(&z.name, "error"));
                    crate::dnsbl::Verdict::Clear
                }
            };
            if let crate::dnsbl::Verdict::Listed { zone, .. } = &verdict {
                tracing::info!(shard = shard.id, peer = %self.peer, %zone, "client listed in a DNS blocklist; its recipients are refused");
            }
            self.dnsbl = Some(verdict);
        }
        match &self.dnsbl {
            Some(crate::dnsbl::Verdict::Listed { zone, reason }) => {
                // Postfix's words, so those who parse them are not surprised.
                let mut text = format!(
                    "Service unavailable; Client host [{}] blocked using {zone}",
                    self.peer.ip()
                );
                if let Some(reason) = reason {
                    text.push_str("; ");
                    text.push_str(reason);
                }
                Some(replies::Reply::new(554, "5.7.1", text))
            }
            _ => None,
        }
    }

    /// The refusal for a sender whose domain does not exist in the DNS,
    /// when `smtp.reject_unknown_sender_domain` asks for it; one lookup
    /// per sender domain in a session. Not for the null sender, nor our
    /// own domains.
    async fn unknown_sender_domain(&mut self, smtp: &ServerSession) -> Option<replies::Reply> {
        use crate::relay::resolver::{LookupFailure, RecordKind};
        let config = self.shard.config();
        if !config.smtp.reject_unknown_sender_domain {
            return None;
        }
        let sender = smtp.sender()?;
        let domain = sender.rsplit_once('@')?.1.to_ascii_lowercase();
        if config.is_local_domain(&domain) || domain.starts_with('[') {
            return None;
        }
        if let Some((known, refusal)) = &self.sender_domain {
            if *known == domain {
                return refusal.clone();
            }
        }
        let dns = self.shard.dns.as_ref()?;
        // A domain takes mail if it has an MX, or an address (RFC 5321 §5.1).
        let mut temporary = false;
        let mut exists = false;
        for kind in [RecordKind::Mx, RecordKind::A, RecordKind::Aaaa] {
            match dns.records(&domain, kind).await {
                Ok(found) if !found.is_empty() => {
                    exists = true;
                    break;
                }
                Ok(_) | Err(LookupFailure::None) => {}
                Err(LookupFailure::Temporary(_)) => temporary = true,
            }
        }
        let refusal = match (exists, temporary) {
            (true, _) => None,
            (false, true) => Some(replies::Reply::new(
                451,
                "4.1.8",
                format!(
                    "<{sender}>: Sender address rejected: Domain not found (DNS failed; try again)"
                ),
            )),
            (false, false) => Some(replies::Reply::new(
                550,
                "5.1.8",
                format!("<{sender}>: Sender address rejected: Domain not found"),
            )),
        };
        if refusal.is_some() {
            tracing::info!(shard = self.shard.id, peer = %self.peer, %domain, "sender domain not found in the DNS; recipient refused");
        }
        self.sender_domain = Some((domain, refusal.clone()));
        refusal
    }

    /// Relayed mail to an address on the suppression list is refused
    /// ([`crate::suppressions::refusal`]).
    fn check_suppression(&self, smtp: &ServerSession, address: &str) -> Result<(), replies::Reply> {
        let shard = self.shard;
        let sender = smtp.sender().unwrap_or_default();
        match crate::suppressions::refusal(&*shard.store, &shard.config(), sender, address) {
            Ok(None) => Ok(()),
            Ok(Some((reply, scope))) => {
                tracing::info!(shard = shard.id, peer = %self.peer, recipient = address, scope = %scope, "recipient suppressed; answered 550");
                Err(reply)
            }
            Err(e) => {
                shard.metrics.store_failures.inc();
                tracing::error!(shard = shard.id, error = %e, "suppression lookup failed; answered 451");
                Err(replies::STORAGE_FAILED)
            }
        }
    }

    /// A recipient refused by policy, counted by why and with what code.
    fn count_rejection(&self, reply: &replies::Reply) {
        self.shard.security.rejected(
            self.service.label(),
            intake::refusal_reason(reply),
            reply.code,
        );
    }

    async fn authenticate(&self, smtp: &mut ServerSession, credentials: Credentials) {
        let shard = self.shard;
        let service = self.service.label();
        let mechanism = credentials.mechanism.name();
        let ip = self.peer.ip();
        match shard
            .auth
            .login(ip, &credentials.user, &credentials.password)
            .await
        {
            LoginOutcome::Accepted(account) => {
                shard.security.auth(service, mechanism, "ok");
                tracing::info!(shard = shard.id, peer = %self.peer, user = %account, mechanism, "smtp auth");
                smtp.auth_succeeded(&account);
            }
            LoginOutcome::Rejected => {
                shard.security.auth(service, mechanism, "failed");
                tracing::info!(shard = shard.id, peer = %self.peer, user = ?credentials.user, mechanism, "smtp auth failed");
                glommio::timer::sleep(shard.auth_failure_delay(service)).await;
                smtp.auth_failed();
            }
            LoginOutcome::LockedOut => {
                shard.security.auth(service, mechanism, "locked_out");
                glommio::timer::sleep(shard.auth_failure_delay(service)).await;
                smtp.auth_locked_out();
            }
            LoginOutcome::Unavailable(why) => {
                shard.security.auth(service, mechanism, "unavailable");
                tracing::error!(shard = shard.id, peer = %self.peer, error = %why, "smtp auth could not run");
                smtp.auth_unavailable();
            }
        }
    }

    /// Make the message durable, then let the session say 250 (or 451).
    async fn accept_message(&self, smtp: &mut ServerSession, tx: Transaction) {
        let shard = self.shard;
        let is_local = |domain: &str| shard.config().is_local_domain(domain);
        let config = shard.config();
        let resolve = intake::local_targets_in(&config, &*shard.store);
        let origin = Origin {
            ip: self.peer.ip(),
            hostname: &config.hostname,
            is_local: &is_local,
            pool: config.relay.pool_for(&tx.mail_from),
            local_targets: Some(&resolve),
            lmtp: self.service == Service::Lmtp,
        };
        if intake::too_many_hops(&tx.data) {
            tracing::warn!(shard = shard.id, peer = %self.peer, "message with too many Received: fields; answered 554 (a mail loop)");
            self.count_rejection(&replies::TOO_MANY_HOPS);
            smtp.recycle(tx.data);
            return smtp.message_failed(replies::TOO_MANY_HOPS);
        }
        // Reports to feedback addresses are read here, not delivered.
        let mut tx = tx;
        let feedback = self.take_feedback(&mut tx);
        if tx.recipients.is_empty() {
            return self.commit_feedback(smtp, tx, feedback).await;
        }
        // Inbound mail is checked (SPF, DKIM, DMARC), outbound mail signed
        // (DKIM), both before it is stored (and so before 250).
        let Inbound {
            results,
            quarantine,
            sender_vouched,
        } = match self.check_inbound(&mut tx).await {
            Ok(checked) => checked,
            Err(refusal) => {
                smtp.recycle(tx.data);
                return smtp.message_failed(refusal);
            }
        };
        let now = intake::unix_micros();
        let id = shard.next_id(now);
        if tx.authenticated.is_some() {
            // A submission lacking Message-ID or Date gets them (RFC 6409
            // §8.3), before it is signed: DKIM's oversigning would make
            // fields added after the signature break it. Mail from relay
            // networks (applications, other MTAs) passes as it came.
            intake::complete_submission(&mut tx.data, &id, &config.hostname, now);
        }
        let (tx, signatures) = self.dkim_sign(tx).await;
        let signatures = [results, signatures].concat();
        let recipients = tx.recipients.len();
        let mut message = intake::new_message(id, &tx, &origin, now, &signatures);
        if quarantine {
            self.to_junk(&mut message);
        }
        let signed = signatures
            .windows(b"DKIM-Signature:".len())
            .filter(|w| *w == b"DKIM-Signature:")
            .count();
        if let Some(script) = shard.sieve_filter() {
            if let Err(reply) = crate::sieve::server_verdict(shard, &script, &tx, &mut message) {
                self.count_rejection(&reply);
                smtp.recycle(tx.data);
                return smtp.message_failed(reply);
            }
        }
        let mut filtered =
            match crate::sieve::filter(shard, &tx, &mut message, sender_vouched, now).await {
                Ok(filtered) => filtered,
                Err(reply) => {
                    self.count_rejection(&reply);
                    smtp.recycle(tx.data);
                    return smtp.message_failed(reply);
                }
            };
        let forwarded_copy = self.rewrite_forwarded(&tx, &mut message, sender_vouched, now);
        // Over LMTP, a recipient every account of which refused it: by its
        // filter, or because its mailbox filled since RCPT (each account
        // has its own answer, as Dovecot's LMTP gives).
        let refused = match self.service {
            Service::Lmtp => {
                let mut refused = std::mem::take(&mut filtered.refused);
                refused.extend(self.take_full_mailboxes(&mut message));
                refused
            }
            _ => Vec::new(),
        };
        let refused: Vec<(String, replies::Reply)> = tx
            .recipients
            .iter()
            .filter(|_| !refused.is_empty())
            .filter_map(|recipient| {
                let targets = resolve(recipient);
                let reply = |target: &String| refused.iter().find(|(user, _)| user == target);
                let all = targets.iter().all(|t| reply(t).is_some());
                let first = targets.first().and_then(reply).filter(|_| all)?;
                Some((recipient.clone(), first.1.clone()))
            })
            .collect();
        let account = tx.authenticated.clone();
        // Mail a filter delivered to no one was not delivered. Over LMTP
        // the client reports delivery itself (RFC 2033 §4.2).
        let lmtp = self.service == Service::Lmtp;
        let notice = match sender_vouched && !message.goes_nowhere() && !lmtp {
            true => self.delivered_notice(&tx, &message, now),
            false => None,
        };
        smtp.recycle(tx.data);
        let size = message.body.len() as u64;
        let local = message.mailboxes.len() + message.junk.len() + message.filed.len();
        // The owners of the entries hear of them once they are durable.
        let mut queue = shard.hub.is_some().then(|| message.queue.clone());
        if let Some(queue) = &mut queue {
            let others = notice
                .iter()
                .chain(&filtered.messages)
                .chain(&forwarded_copy);
            queue.extend(others.flat_map(|n| n.queue.iter().cloned()));
        }
        let queue_id = id.to_hex();
        let accepted = Accepted {
            queue_id: &queue_id,
            shard: shard.id,
            client: self.peer.ip(),
            helo: &tx.helo,
            user: account.as_deref(),
            tls: tx.tls,
            sender: &tx.mail_from,
            recipients,
            size,
            dkim: signed,
        };
        if let Err(reply) = self.mailboxes_still_open(&message) {
            return smtp.message_failed(reply);
        }
        // The hourly allowance is taken here, just before the commit, so
        // sessions of one account on every shard cannot all pass it at RCPT.
        if let Some(account) = &account {
            if !shard.send_rate.take(account, Instant::now()) {
                shard.security.rate_limited(self.service.label());
                tracing::info!(shard = shard.id, peer = %self.peer, account, "sending rate limit reached");
                self.count_rejection(&replies::SENDING_RATE_EXCEEDED);
                return smtp.message_failed(replies::SENDING_RATE_EXCEEDED);
            }
        }
        // Filters may have discarded every copy: then nothing refers to the
        // body and it is not stored at all.
        let mut batch = match message.goes_nowhere() {
            true => ringpost_storage::WriteBatch::new(),
            false => message.into_batch(),
        };
        let notice_id = notice.as_ref().map(|n| n.id);
        if let Some(notice) = notice {
            batch.append(notice.into_batch());
        }
        for extra in filtered.messages.into_iter().chain(forwarded_copy) {
            batch.append(extra.into_batch());
        }
        batch.append(filtered.state);
        if let Some(feedback) = feedback {
            batch.append(feedback);
        }
        if let Some(events) = &shard.events {
            events.add(&mut batch, "reception", accepted.fields());
        }
        let started = Instant::now();
        let committed = shard.commits.commit(batch).await;
        if let (Err(_), Some(account)) = (&committed, &account) {
            shard.send_rate.give_back(account);
        }
        match committed {
            Ok(()) => {
                if let (Some(hub), Some(queue)) = (&shard.hub, queue) {
                    hub.route(queue);
                }
                shard
                    .metrics
                    .commit_wait
                    .observe(started.elapsed().as_secs_f64());
                shard.metrics.messages.inc();
                shard.metrics.bytes.inc_by(size);
                shard.metrics.local_deliveries.inc_by(local as u64);
                shard.maillog.accepted(&accepted);
                if let Some(dsn_id) = notice_id {
                    shard.metrics.delivery_notices.inc();
                    tracing::info!(shard = shard.id, %queue_id, %dsn_id, to = %tx.mail_from, "DSN queued: delivered, as the sender asked (NOTIFY=SUCCESS)");
                }
                smtp.message_stored_except(&queue_id, &refused);
            }
            Err(e) => self.commit_failed(smtp, e, "message"),
        }
    }
}

/// What the inbound checks made of a message.
struct Inbound {
    /// The `Authentication-Results:` field to put on top (or nothing).
    results: Vec<u8>,
    /// DMARC asks for quarantine: the message goes to Junk.
    quarantine: bool,
    /// The envelope sender is the client's to use: a trusted client, or
    /// SPF passed for it. Only then does a success the sender asked for
    /// (NOTIFY=SUCCESS) get a DSN: to a forged sender it would be
    /// backscatter, carrying a stranger's headers to whoever they name.
    sender_vouched: bool,
}

impl Smtp<'_> {
    /// The DSN for the local recipients of `tx` that asked to hear of
    /// delivery (NOTIFY=SUCCESS, RFC 3461), committed with the message:
    /// it is delivered to their mailboxes in that same commit.
    fn delivered_notice(
        &self,
        tx: &Transaction,
        message: &ringpost_storage::spool::NewMessage,
        now: u64,
    ) -> Option<ringpost_storage::spool::NewMessage> {
        // Quarantined mail failed DMARC: its sender may be forged, and a
        // report would be backscatter confirming the mailbox to a spammer.
        if tx.mail_from.is_empty() || !message.junk.is_empty() {
            return None;
        }
        let shard = self.shard;
        shard.with_recipients(|to| {
            let reported = bounce::delivered_to_report(tx, to);
            if reported.is_empty() {
                return None;
            }
            let id = shard.next_id(now);
            Some(bounce::new_dsn(
                id,
                to,
                &message.id,
                &message.envelope,
                &message.body,
                &reported,
                now,
            ))
        })
    }

    /// Answer a message whose commit failed: the full disk's reply (the
    /// commit writer logs it once per episode), else 451 and the error.
    fn commit_failed(&self, smtp: &mut ServerSession, error: StoreError, what: &str) {
        let shard = self.shard;
        shard.metrics.store_failures.inc();
        match error {
            StoreError::DiskFull { .. } => smtp.message_failed(replies::DISK_FULL),
            e => {
                tracing::error!(shard = shard.id, error = %e, what, "could not store; answered 451");
                smtp.message_failed(replies::STORAGE_FAILED);
            }
        }
    }

    /// Take the accounts whose mailbox filled since RCPT out of `message`
    /// (LMTP answers them apart): each with `452 4.2.2`. A quota that
    /// cannot be read is left to the commit.
    fn take_full_mailboxes(
        &self,
        message: &mut ringpost_storage::spool::NewMessage,
    ) -> Vec<(String, replies::Reply)> {
        let shard = self.shard;
        let default = shard.config().quota.default_quota();
        let mut accounts: Vec<String> = message.mailboxes.clone();
        accounts.extend(message.junk.iter().cloned());
        accounts.extend(message.filed.iter().map(|f| f.user.clone()));
        accounts.sort();
        accounts.dedup();
        let full: Vec<String> = accounts
            .into_iter()
            .filter(|user| {
                matches!(
                    ringpost_storage::quota::room_for(&*shard.store, user, default, 1, 0),
                    Ok(Some(false))
                )
            })
            .collect();
        if full.is_empty() {
            return Vec::new();
        }
        shard.security.over_quota("lmtp");
        tracing::info!(shard = shard.id, peer = %self.peer, accounts = full.len(), "mailboxes filled since RCPT; those recipients answered 452");
        message.mailboxes.retain(|u| !full.contains(u));
        message.junk.retain(|u| !full.contains(u));
        message.filed.retain(|f| !full.contains(&f.user));
        full.into_iter()
            .map(|user| (user, replies::MAILBOX_FULL))
            .collect()
    }

    /// Whether the message may still go to the local accounts it is for.
    /// RCPT checked each one's quota, but a transaction can last long and
    /// others commit meanwhile (on any shard): without this, every session
    /// that passed RCPT together would land past the limit. The one reply
    /// after DATA is for every recipient, so the message is refused only
    /// when it has no one else to go to; with others, a full account takes
    /// it a little past its limit, as a message taken at RCPT may.
    fn mailboxes_still_open(
        &self,
        message: &ringpost_storage::spool::NewMessage,
    ) -> Result<(), replies::Reply> {
        let shard = self.shard;
        let filed = message.filed.iter().map(|f| &f.user);
        let local: Vec<&String> = message
            .mailboxes
            .iter()
            .chain(&message.junk)
            .chain(filed)
            .collect();
        if local.is_empty() || !message.queue.is_empty() {
            return Ok(());
        }
        let default = shard.config().quota.default_quota();
        for name in &local {
            match ringpost_storage::quota::room_for(&*shard.store, name, default, 1, 0) {
                Ok(Some(false)) => {}
                // Room (or gone meanwhile: the store keeps the copy for no
                // one, as for an account deleted a moment after the 250).
                Ok(None) | Ok(Some(true)) => return Ok(()),
                Err(e) => {
                    shard.metrics.store_failures.inc();
                    tracing::error!(shard = shard.id, error = %e, "quota lookup failed; answered 451");
                    return Err(replies::STORAGE_FAILED);
                }
            }
        }
        shard.security.over_quota("smtp");
        tracing::info!(shard = shard.id, peer = %self.peer, accounts = local.len(), "mailboxes filled during the transaction; answered 452");
        Err(replies::MAILBOX_FULL)
    }

    /// SPF, DKIM and DMARC for mail from a client that may not relay (the
    /// internet): the `Authentication-Results:` field to put on top, after
    /// any that forge our name are taken out ([`crate::mail_auth`]); `Err`
    /// refuses the message when `inbound_auth` says to. Nothing for
    /// trusted clients or with the checks off.
    async fn check_inbound(&self, tx: &mut Transaction) -> Result<Inbound, replies::Reply> {
        let shard = self.shard;
        let config = shard.config();
        // Whoever the client is, a verdict in our name that reaches a local
        // mailbox must be ours (an MTA in front of LMTP writes its own
        // under its own name).
        let local = tx
            .recipients
            .iter()
            .any(|r| config.is_local_domain(&intake::recipient_domain(r, &config.hostname)));
        if local {
            if let Some(stripped) = mail_auth::strip_forged_results(&tx.data, &config.hostname) {
                tracing::info!(shard = shard.id, peer = %self.peer, "forged Authentication-Results of ours removed");
                tx.data = stripped;
            }
        }
        // The MTA in front of LMTP made the checks; what it let through
        // may still have a forged sender, which hears nothing from us
        // (a filter's refusal is answered over LMTP, and that MTA bounces).
        if self.service == Service::Lmtp {
            return Ok(Inbound {
                results: Vec::new(),
                quarantine: false,
                sender_vouched: false,
            });
        }
        // A client we trust (a relay network, a login) vouches for its
        // sender; a stranger's only through SPF.
        let trusted = self.may_relay || tx.authenticated.is_some();
        let unchecked = Inbound {
            results: Vec::new(),
            quarantine: false,
            sender_vouched: trusted,
        };
        let Some(dns) = &shard.spf_dns else {
            return Ok(unchecked);
        };
        if trusted {
            return Ok(unchecked);
        }
        let now = intake::unix_micros() / 1_000_000;
        let checks = std::pin::pin!(mail_auth::check(
            dns,
            self.peer.ip(),
            &tx.mail_from,
            &tx.helo,
            &tx.data,
            now
        ));
        let deadline = std::pin::pin!(glommio::timer::sleep(mail_auth::DEADLINE));
        let verdicts = match futures::future::select(checks, deadline).await {
            futures::future::Either::Left((verdicts, _)) if mail_auth::must_wait(&verdicts) => {
                tracing::info!(shard = shard.id, peer = %self.peer, "DMARC could not be decided (a DNS error); answered 451");
                self.count_rejection(&replies::AUTH_CHECKS_TIMED_OUT);
                return Err(replies::AUTH_CHECKS_TIMED_OUT);
            }
            futures::future::Either::Left((verdicts, _)) => verdicts,
            futures::future::Either::Right(_) => {
                // Slow DNS must not skip the From domain's policy: judge on
                // what is known (every check a temporary error), which
                // still fails a domain nothing in the message aligns with.
                tracing::warn!(shard = shard.id, peer = %self.peer, "inbound authentication took too long; DMARC judged with SPF and DKIM as temporary errors");
                let judged =
                    std::pin::pin!(mail_auth::timed_out(dns, &tx.mail_from, &tx.helo, &tx.data));
                let deadline = std::pin::pin!(glommio::timer::sleep(mail_auth::DMARC_DEADLINE));
                match futures::future::select(judged, deadline).await {
                    futures::future::Either::Left((verdicts, _))
                        if !mail_auth::must_wait(&verdicts) =>
                    {
                        verdicts
                    }
                    _ => {
                        tracing::warn!(shard = shard.id, peer = %self.peer, "DMARC could not be decided in time; answered 451");
                        self.count_rejection(&replies::AUTH_CHECKS_TIMED_OUT);
                        return Err(replies::AUTH_CHECKS_TIMED_OUT);
                    }
                }
            }
        };
        let spf = &verdicts.spf;
        shard.security.spf(spf.result.name());
        let dkim: Vec<&str> = verdicts.dkim.iter().map(|d| d.result).collect();
        let dmarc = verdicts.dmarc.as_ref();
        for result in &dkim {
            shard.security.dkim(result);
        }
        if let Some(dmarc) = dmarc {
            shard.security.dmarc(dmarc.result);
        }
        tracing::info!(
            shard = shard.id,
            peer = %self.peer,
            spf = %spf.result,
            identity = spf.identity,
            value = %spf.value,
            dkim = %dkim.join(","),
            dmarc = dmarc.map_or("-", |d| d.result),
            from = dmarc.map_or("-", |d| d.from.as_str()),
            "inbound authentication"
        );
        // Counted for the From domain's aggregate report as handled: refused,
        // to Junk, or delivered.
        let report = |disposition| {
            // Without the relay no report could leave: nothing is counted.
            if config.inbound_auth.dmarc_reports && shard.hub.is_some() {
                let interval = config.inbound_auth.dmarc_report_interval_secs;
                let ip = self.peer.ip();
                if !shard
                    .dmarc_counter
                    .observe(now, interval, ip, &verdicts, disposition)
                {
                    shard.security.dmarc_report("rows_dropped");
                }
            }
        };
        if spf.result == ringpost_protocols::spf::SpfResult::Fail
            && config.inbound_auth.spf_reject_fail
        {
            report(mail_auth::dmarc::Policy::Reject);
            return Err(replies::Reply::new(
                550,
                "5.7.23",
                format!("SPF check failed: {}", spf.why),
            ));
        }
        if let Some(dmarc) = dmarc {
            if dmarc.result == "fail"
                && dmarc.disposition == mail_auth::dmarc::Policy::Reject
                && config.inbound_auth.dmarc_reject
            {
                report(mail_auth::dmarc::Policy::Reject);
                return Err(replies::Reply::new(
                    550,
                    "5.7.1",
                    format!(
                        "DMARC policy of {} rejects this message: {}",
                        dmarc.from, dmarc.why
                    ),
                ));
            }
        }
        let quarantine = dmarc.is_some_and(|d| {
            d.result == "fail" && d.disposition == mail_auth::dmarc::Policy::Quarantine
        }) && config.inbound_auth.dmarc_quarantine_to_junk;
        report(match quarantine {
            true => mail_auth::dmarc::Policy::Quarantine,
            false => mail_auth::dmarc::Policy::None,
        });
        let field = mail_auth::authentication_results(&config.hostname, &verdicts);
        Ok(Inbound {
            results: field.into_bytes(),
            quarantine,
            sender_vouched: spf.result == ringpost_protocols::spf::SpfResult::Pass
                && !tx.mail_from.is_empty(),
        })
    }

    /// Deliver `message` to the Junk mailbox of each local recipient that
    /// has one (the others keep it in INBOX): its DMARC policy said
    /// quarantine. A failed lookup leaves it in INBOX.
    fn to_junk(&self, message: &mut ringpost_storage::spool::NewMessage) {
        let store = &*self.shard.store;
        let (junk, inbox): (Vec<String>, Vec<String>) = std::mem::take(&mut message.mailboxes)
            .into_iter()
            .partition(|user| {
                matches!(
                    ringpost_storage::mailbox::meta(store, user, ringpost_storage::mailbox::JUNK),
                    Ok(Some(_))
                )
            });
        message.mailboxes = inbox;
        message.junk = junk;
    }

    /// DKIM signatures for a message a client that may relay sends (it
    /// authenticated, or it is in `relay_networks`), by the keys of its
    /// From domain; nothing for other mail. RSA signing runs on the
    /// executor's blocking pool, Ed25519 (microseconds) right here.
    async fn dkim_sign(&self, tx: Transaction) -> (Transaction, Vec<u8>) {
        let Some(signer) = &self.shard.dkim else {
            return (tx, Vec::new());
        };
        if tx.authenticated.is_none() && !self.may_relay {
            return (tx, Vec::new());
        }
        let keys = signer.keys_for(&tx.data);
        if keys.is_empty() {
            return (tx, Vec::new());
        }
        let signed = if crate::dkim::is_slow(&keys) {
            glommio::executor()
                .spawn_blocking(move || {
                    let signatures = crate::dkim::sign(&tx.data, &keys);
                    (tx, signatures)
                })
                .await
        } else {
            let signatures = crate::dkim::sign(&tx.data, &keys);
            (tx, signatures)
        };
        self.shard.metrics.dkim_signed.inc();
        signed
    }
}

/// `address` at our `hostname` when its domain is the literal of `ip`,
/// the address the client reached us at (`alice@[192.0.2.1]`,
/// `alice@[IPv6:2001:db8::1]`): RFC 1123 §5.2.17 has a server take mail
/// for its own address literals as its own.
fn at_own_literal(address: &str, ip: IpAddr, hostname: &str) -> Option<String> {
    let (local, domain) = address.rsplit_once('@')?;
    let literal = domain.strip_prefix('[')?.strip_suffix(']')?;
    let named: IpAddr = match literal.get(..5) {
        Some(tag) if tag.eq_ignore_ascii_case("IPv6:") => IpAddr::V6(literal[5..].parse().ok()?),
        _ => IpAddr::V4(ringpost_protocols::smtp::ipv4_literal(literal)?),
    };
    let canonical = crate::config::canonical;
    (canonical(named) == canonical(ip)).then(|| format!("{local}@{hostname}"))
}

/// Whether `address` is a postmaster: bare, or at any domain (RFC 5321
/// §4.5.1 wants their mail taken whoever sends it).
fn is_postmaster(address: &str) -> bool {
    let local = address.rsplit_once('@').map_or(address, |(local, _)| local);
    local.trim_matches('"').eq_ignore_ascii_case("postmaster")
}

/// Whether a local recipient is an account with room: one point read of
/// the `users` family, run right here on the shard's executor (the family
/// is small and hot: memtable, block cache, bloom filter), and, when it has
/// a quota, a scan of its few mailbox meta keys.
fn local_account(shard: &Shard, name: &str) -> Result<intake::LocalAccount, StoreError> {
    let default = shard.config().quota.default_quota();
    ringpost_storage::quota::room_for(&*shard.store, name, default, 1, 0)
        .map(|room| match room {
            None => intake::LocalAccount::Missing,
            Some(true) => intake::LocalAccount::Open,
            Some(false) => {
                shard.security.over_quota("smtp");
                tracing::info!(
                    shard = shard.id,
                    user = name,
                    "recipient over quota; answered 452"
                );
                intake::LocalAccount::Full
            }
        })
        .inspect_err(|e| {
            shard.metrics.store_failures.inc();
            tracing::error!(shard = shard.id, error = %e, "recipient lookup failed; answered 451");
        })
}
