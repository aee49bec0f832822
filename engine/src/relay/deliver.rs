//! One outbound connection task: find the destination's hosts, connect to
//! the first that answers, and send the destination's ready entries over it,
//! one transaction per entry (all of its recipients at once), until the
//! queue stays empty for the idle time or the per-connection limit is hit.
//! A host that pipelines BDAT gets up to [`MAX_IN_FLIGHT`] transactions back
//! to back, so a connection does not wait a round trip per message.
//!
//! A host that cannot be reached, greets with an error, or fails the session
//! before a transaction gets an answer is skipped for the next one; only when
//! every host has failed is the work deferred. So is a message every one of
//! whose recipients got a 4xx while another host is left. STARTTLS is used when offered
//! (see [`super::tls`]); if an opportunistic handshake fails, the same host
//! is tried once more without it.

use super::dane::{self, DaneLookup};
use super::queue::{Loaded, Relay, SiteName, Via};
use super::route::{NoRoute, Target};
use super::shaping::{self, SiteLimiter};
use super::tls;
use crate::config::RelayConfig;
use crate::config::TlsPolicy;
use crate::intake;
use futures_lite::{AsyncReadExt, AsyncWriteExt, FutureExt};
use glommio::net::TcpStream;
use ringpost_protocols::smtp::client::{
    ClientEvent, ClientSession, OutgoingMessage, Phase, RecipientResult, ServerReply,
};
use ringpost_protocols::smtp::dsn_request::{Notify, RecipientRequest};
use ringpost_protocols::smtp::{bounce_class, downgrade};
use ringpost_storage::spool::{Envelope, InMemory, MessageId, QueueEntry};
use ringpost_storage::StoreError;
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Duration;

/// Bytes read from a server at a time; more than the client's reply limit,
/// so a full buffer always means the session has already failed.
const READ_BUFFER: usize = 32 * 1024;
/// Longest wait for the reply to QUIT: the work is done, the slot is wanted.
const QUIT_WAIT: Duration = Duration::from_secs(2);
/// Transactions one connection has sent and not yet seen answered, at most,
/// when the host takes BDAT with PIPELINING. More than one hides the round
/// trip (and the host's work per message) behind the next messages and
/// lets one write and one read carry several; a few are enough for that,
/// and a connection that fails takes no more than these back to the queue.
pub(crate) const MAX_IN_FLIGHT: usize = 8;
/// More are sent only once no more than this many are in flight, so each
/// write carries several transactions rather than one per reply read.
const REFILL_AT: usize = MAX_IN_FLIGHT / 2;
/// Body bytes in flight at most for a message to go behind others: a
/// larger one waits to go alone, so memory per connection stays bounded.
const MAX_BYTES_IN_FLIGHT: usize = 1 << 20;
/// Recipients in flight at most for a message to go behind others. The
/// replies to everything written must fit the socket buffers while the
/// client is still writing, or each side could wait for the other to read
/// (RFC 2920 §3.1).
const MAX_RECIPIENTS_IN_FLIGHT: usize = 200;

/// Frees the connection slot however the task ends.
struct Slot<'a> {
    relay: &'a Rc<Relay>,
    site: &'a SiteName,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.relay.connection_closed(self.site);
    }
}

/// How delivery over one host ended.
enum HostEnd {
    /// Done with this site for now (idle, limit reached, or the connection
    /// broke after its transaction was recorded).
    Done,
    /// The host failed before answering the pending entry: try the next one.
    Failed(ServerReply),
}

/// Where a domain's mail goes: the hosts to try, in order, and the TLS
/// they must use (the configured policy, MTA-STS's, DANE's per host).
pub(crate) struct Found {
    /// Addresses to try, with the host names they came from.
    pub targets: Vec<Target>,
    /// What TLS a connection needs, unless DANE says more for its host.
    pub policy: TlsPolicy,
    /// Who asks for `policy`, for the log and the deferral text.
    required_by: &'static str,
    /// Hosts with DANE TLSA records on validated answers, and what those
    /// ask; empty when DANE does not apply to the domain.
    pub dane: Vec<(String, HostDane)>,
}

impl Found {
    /// What a connection to `host` must do about TLS.
    fn tls_for(&self, host: &str) -> HostTls {
        let dane = self.dane.iter().find(|(name, _)| name == host);
        match dane.map(|(_, dane)| dane) {
            Some(HostDane::Authenticate(config)) => HostTls {
                policy: TlsPolicy::Encrypt,
                dane: Some(config.clone()),
                required_by: "its DANE TLSA records",
            },
            Some(HostDane::EncryptOnly) => HostTls {
                policy: TlsPolicy::Encrypt,
                dane: None,
                required_by: "its DANE TLSA records",
            },
            None => HostTls {
                policy: self.policy,
                dane: None,
                required_by: self.required_by,
            },
        }
    }
}

/// What DANE asks of the connection to one host.
pub(crate) enum HostDane {
    /// TLS, with this configuration: its verifier checks the certificate
    /// against the host's TLSA records.
    Authenticate(std::sync::Arc<rustls::ClientConfig>),
    /// TLS, any certificate (TLSA records, none of them usable).
    EncryptOnly,
}

/// What TLS one connection must use.
struct HostTls {
    policy: TlsPolicy,
    /// DANE's client configuration, which replaces the policy's.
    dane: Option<std::sync::Arc<rustls::ClientConfig>>,
    /// Who requires it, in words.
    required_by: &'static str,
}

/// Find `domain`'s hosts and TLS policy: a static route, the smarthost or
/// its MX hosts, with DANE's demands per host where the domain's DNS is
/// validated, else narrowed by its MTA-STS policy when that is enforced.
pub(crate) async fn destination(relay: &Relay, domain: &str) -> Result<Found, NoRoute> {
    // An internationalised domain is looked up, matched against routes and
    // TLS policies, and asked for its MTA-STS policy by its A-labels.
    let ascii = super::resolver::ascii_domain(domain);
    let domain = ascii.as_str();
    let router = relay.router();
    let mut targets = router.targets(&relay.resolver, domain).await?;
    let config = relay.config();
    let mut found = Found {
        targets: Vec::new(),
        policy: config.relay.tls_policy_for(domain),
        required_by: "relay.tls_policy",
        dane: Vec::new(),
    };
    // DANE and MTA-STS apply to MX delivery, not to configured routes.
    let by_mx = !router.routes_statically(domain);
    // An MX host that is us (and any less preferred) would send the mail
    // back to us; a configured route is the operator's (a content filter
    // on another port of this host).
    let pruned = by_mx
        && relay
            .ourselves
            .prune(&mut targets, |t| t.addr, |t| t.preference);
    if pruned && targets.is_empty() {
        tracing::warn!(shard = relay.shard, %domain, "the best MX host of the domain is this server; bounced");
        return Err(NoRoute {
            permanent: true,
            status: "5.4.6",
            text: format!("mail for {domain} loops back to myself"),
        });
    }
    // The operator's `none` and `verify` are kept as they are, and so is
    // STARTTLS turned off altogether.
    let dane_applies = matches!(found.policy, TlsPolicy::May | TlsPolicy::Encrypt)
        && config.relay.dane
        && config.relay.starttls;
    if dane_applies && by_mx {
        found.dane = dane_hosts(relay, domain, &mut targets).await?;
    }
    // RFC 8461 §2: a host with DANE records is held to them, not to
    // MTA-STS; the domain's other hosts still are.
    let has_dane = |host: &str| found.dane.iter().any(|(name, _)| name == host);
    let all_dane = targets.iter().all(|t| has_dane(&t.host));
    if config.relay.mta_sts && by_mx && !all_dane {
        if let Some(sts) = relay.resolver.mta_sts(domain).await {
            match sts.mode {
                super::mta_sts::Mode::Enforce => {
                    targets.retain(|t| has_dane(&t.host) || sts.matches(&t.host));
                    if targets.is_empty() {
                        tracing::warn!(shard = relay.shard, %domain, "MTA-STS: no MX host matches the policy; deferred");
                        return Err(NoRoute {
                            permanent: false,
                            status: "4.7.5",
                            text: format!(
                                "the MTA-STS policy of {domain} names none of its MX hosts"
                            ),
                        });
                    }
                    found.policy = TlsPolicy::Verify;
                    found.required_by = "its MTA-STS policy";
                }
                super::mta_sts::Mode::Testing => {
                    let unnamed = targets
                        .iter()
                        .find(|t| !has_dane(&t.host) && !sts.matches(&t.host));
                    if let Some(t) = unnamed {
                        tracing::warn!(shard = relay.shard, %domain, host = %t.host, "MTA-STS (testing): an MX host the policy does not name");
                    }
                }
                super::mta_sts::Mode::None => {}
            }
        }
    }
    found.targets = targets;
    Ok(found)
}

/// `domain`'s DANE verdict (RFC 7672), applied to its `targets`: hosts
/// whose TLSA lookup failed, or that the validated MX records do not name,
/// are dropped; the hosts with TLSA records are returned with what their
/// records ask. Deferred when the verdict cannot be had or no host is left.
async fn dane_hosts(
    relay: &Relay,
    domain: &str,
    targets: &mut Vec<Target>,
) -> Result<Vec<(String, HostDane)>, NoRoute> {
    let deferred = |text: String| NoRoute {
        permanent: false,
        status: "4.7.5",
        text,
    };
    let hosts = match relay
        .resolver
        .dane(domain, relay.config().relay.mx_port)
        .await
    {
        DaneLookup::Insecure => {
            relay.metrics.dane("insecure");
            return Ok(Vec::new());
        }
        DaneLookup::Failed(why) => {
            relay.metrics.dane("lookup_failed");
            tracing::warn!(shard = relay.shard, %domain, reason = %why, "DANE: cannot tell whether it applies; deferred");
            return Err(deferred(format!(
                "DANE: DNSSEC lookups for {domain} failed: {why}"
            )));
        }
        DaneLookup::Hosts(hosts) => hosts,
    };
    let mut demands = Vec::new();
    let mut refused = None;
    targets.retain(|target| {
        let Some((_, verdict)) = hosts.iter().find(|(name, _)| *name == target.host) else {
            // The validated MX records do not name it (they changed between
            // the two lookups): not to be trusted with the domain's mail.
            refused.get_or_insert_with(|| {
                format!("{} is not among its validated MX hosts", target.host)
            });
            return false;
        };
        match verdict {
            dane::HostDane::Failed(why) => {
                refused.get_or_insert_with(|| why.clone());
                false
            }
            _ => true,
        }
    });
    for (host, verdict) in hosts {
        let demand = match verdict {
            dane::HostDane::Authenticate(tlsa) => match dane::client_config(tlsa) {
                Ok(config) => HostDane::Authenticate(config),
                Err(why) => return Err(deferred(format!("DANE: {why}"))),
            },
            dane::HostDane::EncryptOnly => HostDane::EncryptOnly,
            dane::HostDane::NotApplicable | dane::HostDane::Failed(_) => continue,
        };
        demands.push((host, demand));
    }
    relay.metrics.dane(match demands.is_empty() {
        true => "no_tlsa",
        false => "tlsa",
    });
    if let Some(why) = &refused {
        tracing::warn!(shard = relay.shard, %domain, reason = %why, "DANE: a host is not used");
    }
    if targets.is_empty() {
        let why = refused.unwrap_or_else(|| "no MX host".to_owned());
        return Err(deferred(format!(
            "DANE: no MX host of {domain} can be used: {why}"
        )));
    }
    Ok(demands)
}

/// Deliver `site`'s ready work over one connection (to the first host that
/// works), then give the slot back.
pub(crate) async fn run(relay: Rc<Relay>, site: SiteName) {
    let _slot = Slot {
        relay: &relay,
        site: &site,
    };
    let (Some(first), Some((limiter, pool))) = (relay.take_work(&site), relay.limiter(&site))
    else {
        return;
    };
    // Every domain of the site has the same hosts and policy: the first
    // entry's domain stands for them (and gets fresh, shuffled addresses).
    let found = match destination(&relay, &first.domain).await {
        // The first domain's hosts, TLS policy or DANE changed since it
        // was placed: this connection, made for it, must not carry the
        // site's other mail (a domain whose DNS turned insecure would take
        // a DANE domain's mail off DANE). Its entries go to their new site.
        Ok(found) if !relay.still_in(&site, &first.domain, &found, first.pool.as_deref()) => {
            tracing::info!(shard = relay.shard, domain = %first.domain, %site, "the domain's site changed; placed again");
            let first_domain = first.domain.clone();
            let mut entries = relay.drain_domain(&site, &first.domain);
            entries.insert(0, first);
            relay.place_again(&first_domain, entries);
            return;
        }
        Ok(found) => found,
        Err(why) => {
            // This domain's problem (its DNS, its MTA-STS policy), not the
            // site's: only its own entries fail.
            tracing::info!(shard = relay.shard, domain = %first.domain, %site, status = why.status, reason = %why.text, "no route");
            let mut entries = relay.drain_domain(&site, &first.domain);
            entries.insert(0, first);
            relay.fail_all(entries, &why, None);
            return;
        }
    };
    let rules = relay.operator_rules();
    let mut pending = Some(first);
    let mut last_failure = None;
    let targets = &found.targets;
    for (index, target) in targets.iter().enumerate() {
        let has_next = index + 1 < targets.len();
        let tls = found.tls_for(&target.host);
        // A host slow to greet (a tarpit, or one that never answers) must not
        // hold up a shutdown: nothing was sent yet, so the entry simply
        // stays in the store, due, for the next start.
        let opening = async { Some(Connection::open(&relay, target, &tls, pool.as_deref()).await) };
        let stopping = async {
            relay.stopped().await;
            None
        };
        let Some(opened) = opening.or(stopping).await else {
            return;
        };
        let opened = match opened {
            Err(Refused::Tls(reply)) if tls.policy == TlsPolicy::May => {
                // Opportunistic TLS: better in the clear than not at all.
                tracing::info!(shard = relay.shard, %site, host = %target.host, %reply, "TLS failed; retrying without STARTTLS");
                let plain = HostTls {
                    policy: TlsPolicy::None,
                    ..tls
                };
                Connection::open(&relay, target, &plain, pool.as_deref()).await
            }
            other => other,
        };
        let over = Over {
            relay: &relay,
            site: &site,
            limiter: &limiter,
            operator_rules: &rules,
            target,
            has_next,
        };
        match opened.map_err(Refused::into_reply) {
            Ok(mut connection) => {
                relay.metrics.connections_opened.inc();
                let mut sent = 0;
                let ended = over
                    .deliver_over(&mut connection, &mut pending, &mut sent)
                    .await;
                // How much each connection carried: its reuse.
                relay.metrics.messages_per_connection.observe(sent as f64);
                match ended {
                    HostEnd::Done => return,
                    HostEnd::Failed(reply) => {
                        over.heard(&reply);
                        tracing::info!(shard = relay.shard, %site, host = %target.host, addr = %target.addr, %reply, "host failed; trying the next");
                        last_failure = Some((target.host.clone(), reply));
                    }
                }
            }
            Err(reply) => {
                over.heard(&reply);
                relay.metrics.connection_failures.inc();
                tracing::info!(shard = relay.shard, %site, host = %target.host, addr = %target.addr, %reply, "cannot use host; trying the next");
                last_failure = Some((target.host.clone(), reply));
            }
        }
    }
    if let Some(entry) = pending {
        let (host, reply) = last_failure.expect("targets are never empty");
        // Told to slow down while other connections of this shard carry
        // the site's mail: they take this entry too, no attempt is spent.
        if shaping::asks_to_slow_down(&reply, &rules) && relay.other_connections(&site) {
            relay.put_back(&site, entry);
            return;
        }
        // A host refused for its TLS (no STARTTLS where it is required, a
        // certificate or DANE mismatch) is a security failure, not an
        // unreachable host (RFC 3463: X.7.5 against X.4.1).
        let tls_refused = reply.local && reply.status.as_deref() == Some("4.7.5");
        let why = NoRoute {
            permanent: false,
            status: if tls_refused { "4.7.5" } else { "4.4.1" },
            text: format!(
                "no host of {} took the message; last: {host} said {reply}",
                entry.domain
            ),
        };
        fail_destination(&relay, &site, entry, &why, Some(host));
    }
}

/// Defer (or bounce) `entry` and every other ready entry of `site`.
fn fail_destination(
    relay: &Rc<Relay>,
    site: &SiteName,
    entry: QueueEntry,
    why: &NoRoute,
    host: Option<String>,
) {
    let mut entries = vec![entry];
    entries.extend(relay.drain_ready(site));
    relay.fail_all(
        entries,
        why,
        host.map(|host| Via::named(host, site.clone())),
    );
}

/// What became of one message's transactions.
enum Sent {
    /// The connection failed before any recipient got an answer.
    Nothing(ServerReply),
    /// Every recipient's answer, made up for those the connection did not
    /// reach (it has failed then).
    Results(Vec<RecipientResult>),
}

/// One connection's delivery to one host of a site.
struct Over<'a> {
    relay: &'a Rc<Relay>,
    site: &'a SiteName,
    limiter: &'a SiteLimiter,
    /// The operator's bounce rules, which may call a reply rate limited.
    operator_rules: &'a [bounce_class::Rule],
    target: &'a Target,
    /// Another host is left to try after this one.
    has_next: bool,
}

impl Over<'_> {
    /// Tell the site's limiter what the host said.
    fn heard(&self, reply: &ServerReply) {
        let now = shaping::now_micros();
        if shaping::asks_to_slow_down(reply, self.operator_rules) {
            self.limiter
                .slow_down(now, &format!("{}: {reply}", self.target.host));
        } else if reply.is_positive() {
            self.limiter.delivered(now);
        }
    }

    /// Wait for the site's rate to allow one more message. False: not
    /// before the connection would have gone idle anyway.
    async fn paced(&self, idle: Duration) -> bool {
        loop {
            let now = shaping::now_micros();
            match self.limiter.try_send(now) {
                Ok(()) => return true,
                Err(at) => {
                    let wait = Duration::from_micros(at.saturating_sub(now));
                    if wait > idle {
                        return false;
                    }
                    glommio::timer::sleep(wait).await;
                }
            }
        }
    }

    /// Send one message to `recipients` in as many transactions as the
    /// site's recipient limit needs.
    async fn transactions(
        &self,
        connection: &mut Connection,
        envelope: &Envelope,
        recipients: &[String],
        body: Vec<u8>,
        smtputf8: bool,
    ) -> Sent {
        let relay = self.relay;
        let limits = &relay.config().relay;
        let batch = self.limiter.max_recipients().unwrap_or(usize::MAX);
        let batches = recipients.len().div_ceil(batch);
        let mut body = Some(body);
        let mut results = Vec::with_capacity(recipients.len());
        for (n, part) in recipients.chunks(batch).enumerate() {
            let last = n + 1 == batches;
            let body = if last {
                body.take().unwrap_or_default()
            } else {
                body.clone().unwrap_or_default()
            };
            let message = outgoing(envelope, part.to_vec(), body, smtputf8);
            connection.session.send(message);
            let failed = match connection.next_event(limits).await {
                ClientEvent::Finished(part_results) => {
                    results.extend(part_results);
                    relay.metrics.transactions.inc();
                    match connection.session.poll_event() {
                        Some(ClientEvent::Failed(reply)) => Some(reply),
                        _ => None,
                    }
                }
                ClientEvent::Failed(reply) if results.is_empty() => return Sent::Nothing(reply),
                ClientEvent::Failed(reply) => Some(reply),
                other if results.is_empty() => return Sent::Nothing(unexpected(other)),
                other => Some(unexpected(other)),
            };
            if let Some(reply) = failed {
                // Part went through: the rest waits for a later attempt.
                let text = format!("the connection failed after part of the recipients: {reply}");
                results.extend(recipients[results.len()..].iter().map(|r| RecipientResult {
                    recipient: r.clone(),
                    reply: ServerReply::local(421, "4.4.2", text.clone()),
                }));
                return Sent::Results(results);
            }
        }
        Sent::Results(results)
    }

    /// Count one message against the connection's source's daily limit,
    /// however many transactions it takes. False: the source has reached
    /// its limit (other connections used what was left after this one
    /// picked it), and the message must not go from it today.
    fn count_message(&self, connection: &Connection) -> bool {
        let relay = self.relay;
        let (Some(egress), Some(source)) = (&relay.egress, connection.source) else {
            return true;
        };
        if !egress.take(source, super::egress::today()) {
            return false;
        }
        relay.metrics.source_sent(egress.address(source));
        true
    }

    /// Another entry to send behind the transactions in flight, if one is
    /// ready now, fits one transaction and the recipients still allowed in
    /// flight, and the site's rate allows it at once: nothing here waits,
    /// the replies are due.
    fn more_work(&self, recipients_allowed: usize) -> Option<QueueEntry> {
        let batch = self.limiter.max_recipients().unwrap_or(usize::MAX);
        if !self
            .relay
            .next_ready_fits(self.site, batch.min(recipients_allowed))
        {
            return None;
        }
        self.limiter.try_send(shaping::now_micros()).ok()?;
        self.relay.take_work(self.site)
    }

    /// Send entries over an open connection until there is no more work.
    async fn deliver_over(
        &self,
        connection: &mut Connection,
        pending: &mut Option<QueueEntry>,
        sent: &mut usize,
    ) -> HostEnd {
        let mut returned = Vec::new();
        let end = self
            .send_all(connection, pending, sent, &mut returned)
            .await;
        // Entries this connection took and did not attempt go back to the
        // head of the queue, in their order, for the next connection.
        for entry in returned.into_iter().rev() {
            self.relay.put_back(self.site, entry);
        }
        end
    }

    /// A message for the connection: read here when the store has it in
    /// memory; when it must come from the disk, what is written for the
    /// transactions in flight goes out first rather than wait for the read.
    async fn load(
        &self,
        connection: &mut Connection,
        id: MessageId,
    ) -> Result<Option<Loaded>, StoreError> {
        let mut loaded = match self.relay.load_in_memory(id)? {
            InMemory::Found(envelope, body) => Loaded { envelope, body },
            InMemory::Gone => return Ok(None),
            InMemory::OnDisk => {
                connection.write_pending(&self.relay.config().relay).await;
                match self.relay.load_from_disk(id).await? {
                    Some(loaded) => loaded,
                    None => return Ok(None),
                }
            }
        };
        // The envelope sender travels in MAIL FROM; the server that
        // delivers adds its own Return-Path (RFC 5321 §4.4).
        crate::intake::without_return_path(&mut loaded.body);
        Ok(Some(seven_bit_for(connection, loaded).await))
    }

    /// [`Self::deliver_over`]'s work; entries to give back go to `returned`.
    async fn send_all(
        &self,
        connection: &mut Connection,
        pending: &mut Option<QueueEntry>,
        sent: &mut usize,
        returned: &mut Vec<QueueEntry>,
    ) -> HostEnd {
        let relay = self.relay;
        let limits = &relay.config().relay;
        let idle = Duration::from_secs(limits.idle_connection_secs);
        // Sent and not yet answered, oldest first (the order of the replies).
        let mut flights: VecDeque<Flight> = VecDeque::new();
        // Set once a message met only transient failures here while another
        // host is left: nothing more goes to this one, and once what is in
        // flight is answered the connection ends with this reply.
        let mut moving_on: Option<ServerReply> = None;
        // A message too large to go behind others waits for them to end.
        let mut next_goes_alone = false;
        // Set once the connection's egress source has reached its daily
        // limit: nothing more is sent from it.
        let mut source_spent = false;
        loop {
            // Start transactions while the connection and the site allow.
            let mut filling = false;
            while moving_on.is_none()
                && !source_spent
                && flights.len() < MAX_IN_FLIGHT
                && !connection.session.is_closed()
            {
                let behind = !flights.is_empty();
                if behind && (!connection.session.can_send() || next_goes_alone) {
                    break;
                }
                if flights.len() > REFILL_AT && !filling {
                    break;
                }
                let recipients_in_flight: usize =
                    flights.iter().map(|f| f.entry.recipients.len()).sum();
                let bytes_in_flight: usize = flights.iter().map(|f| f.bytes).sum();
                let entry = match pending.take() {
                    Some(entry) => entry,
                    None if *sent >= self.limiter.max_messages_per_connection()
                        || self.limiter.must_close(shaping::now_micros()) =>
                    {
                        break;
                    }
                    None if behind => match self
                        .more_work(MAX_RECIPIENTS_IN_FLIGHT.saturating_sub(recipients_in_flight))
                    {
                        Some(entry) => entry,
                        None => break,
                    },
                    None => match relay.next_work(self.site, idle).await {
                        Some(entry) => entry,
                        None => break,
                    },
                };
                if !behind && !self.paced(idle).await {
                    // Out of tokens for longer than a connection idles: the
                    // site waits in the queue, not on an open connection.
                    relay.put_back(self.site, entry);
                    break;
                }
                let loaded = self.load(connection, entry.id).await;
                if connection.session.is_closed() {
                    // It broke while writing before the read: not tried.
                    returned.push(entry);
                    break;
                }
                let Loaded { envelope, body } = match loaded {
                    Ok(Some(loaded)) => loaded,
                    Ok(None) => {
                        // The message is gone (removed by an operator): forget the entry.
                        glommio::spawn_local(relay.clone().finish(entry, Vec::new(), None, None))
                            .detach();
                        continue;
                    }
                    Err(e) => {
                        tracing::error!(shard = relay.shard, queue_id = %entry.id, error = %e, "cannot read message for delivery");
                        let why = NoRoute {
                            permanent: false,
                            status: "4.3.0",
                            text: format!("cannot read the message from the store: {e}"),
                        };
                        relay.fail_all(vec![entry], &why, None);
                        continue;
                    }
                };
                // Queued before its address bounced elsewhere: never sent, bounced.
                let (recipients, suppressed) = relay.drop_suppressed(&envelope, &entry.recipients);
                if recipients.is_empty() {
                    glommio::spawn_local(relay.clone().finish(entry, suppressed, None, None))
                        .detach();
                    continue;
                }
                if behind && bytes_in_flight + body.len() > MAX_BYTES_IN_FLIGHT {
                    // Back at the head of the queue, to go once the
                    // transactions in flight are over.
                    next_goes_alone = true;
                    relay.put_back(self.site, entry);
                    break;
                }
                next_goes_alone = false;
                if !self.count_message(connection) {
                    // The source's allowance for today is spent: the message
                    // waits for another connection, from another source or
                    // on another day, and this one ends.
                    returned.push(entry);
                    source_spent = true;
                    break;
                }
                let smtputf8 =
                    !envelope.sender.is_ascii() || recipients.iter().any(|r| !r.is_ascii());
                let batch = self.limiter.max_recipients().unwrap_or(usize::MAX);
                if behind || recipients.len() <= batch {
                    let bytes = body.len();
                    let message = outgoing(&envelope, recipients, body, smtputf8);
                    connection.session.send(message);
                    *sent += 1;
                    filling = true;
                    if behind {
                        relay.metrics.pipelined.inc();
                    }
                    flights.push_back(Flight {
                        entry,
                        envelope,
                        suppressed,
                        bytes,
                    });
                    continue;
                }
                // More recipients than one transaction may carry: the
                // transactions go one after the other, alone on the connection.
                let flight = Flight {
                    entry,
                    envelope,
                    suppressed,
                    bytes: 0,
                };
                match self
                    .transactions(connection, &flight.envelope, &recipients, body, smtputf8)
                    .await
                {
                    Sent::Nothing(reply) => {
                        *pending = Some(flight.entry);
                        return HostEnd::Failed(reply);
                    }
                    Sent::Results(results) => {
                        *sent += 1;
                        self.settle(
                            flight,
                            results,
                            connection,
                            pending,
                            &mut moving_on,
                            returned,
                        );
                    }
                }
            }
            let Some(flight) = flights.pop_front() else {
                // Nothing in flight and nothing more to send.
                if !connection.session.is_closed() {
                    connection.quit(limits).await;
                }
                return match moving_on {
                    Some(reply) => HostEnd::Failed(reply),
                    None => HostEnd::Done,
                };
            };
            match connection.next_event(limits).await {
                ClientEvent::Unanswered(_) => {
                    // Behind the transaction in progress when the connection
                    // failed: the server said nothing of it, so it counts as
                    // not tried.
                    returned.push(flight.entry);
                }
                ClientEvent::Finished(results) => {
                    relay.metrics.transactions.inc();
                    self.settle(
                        flight,
                        results,
                        connection,
                        pending,
                        &mut moving_on,
                        returned,
                    );
                }
                other => {
                    // The session ended without answering what is in flight
                    // (it answers every transaction before saying Failed, so
                    // this is only a safeguard): it all goes back unattempted,
                    // the oldest to the next host.
                    let reply = match other {
                        ClientEvent::Failed(reply) => reply,
                        other => unexpected(other),
                    };
                    for flight in std::iter::once(flight).chain(flights.drain(..)) {
                        hand_back(flight.entry, pending, returned);
                    }
                    return HostEnd::Failed(reply);
                }
            }
        }
    }

    /// What this host said to one message: record it, or, when every
    /// recipient got a transient failure and another host is left, hand
    /// the message on to that host in the same attempt and stop sending here.
    fn settle(
        &self,
        flight: Flight,
        mut results: Vec<RecipientResult>,
        connection: &Connection,
        pending: &mut Option<QueueEntry>,
        moving_on: &mut Option<ServerReply>,
        returned: &mut Vec<QueueEntry>,
    ) {
        let relay = self.relay;
        let Flight {
            entry,
            envelope,
            suppressed,
            ..
        } = flight;
        for result in &results {
            self.heard(&result.reply);
        }
        // A temporary failure for every recipient (4xx, or the host dropped
        // us mid-transaction) is this host's problem: the next host, if any,
        // gets the message in the same attempt. The last host's answer is
        // recorded like any other.
        let all_transient = !results.is_empty() && results.iter().all(|r| r.reply.is_transient());
        if all_transient && self.has_next {
            moving_on.get_or_insert_with(|| results[0].reply.clone());
            hand_back(entry, pending, returned);
            return;
        }
        results.extend(suppressed);
        // The outcome needs the envelope; a DSN quotes the original too,
        // which is read again only then.
        let loaded = Some(Loaded {
            envelope,
            body: Vec::new(),
        });
        let via = Via {
            host: self.target.host.clone(),
            addr: Some(self.target.addr),
            tls: connection.tls_version,
            site: Some(self.site.clone()),
            source: connection.source,
            dsn: connection.session.extensions().dsn,
        };
        glommio::spawn_local(relay.clone().finish(entry, results, Some(via), loaded)).detach();
    }
}

/// Bodies larger than this are made 7-bit off the shard thread.
const CONVERT_INLINE_MAX: usize = 256 * 1024;

/// `loaded` made 7-bit for a server without 8BITMIME when its body is
/// large: the conversion parses and re-encodes the whole message, which
/// for a big one would hold up every other session on the shard.
/// `ClientSession::send` converts (or refuses) whatever is left, inline.
async fn seven_bit_for(connection: &Connection, mut loaded: Loaded) -> Loaded {
    if connection.session.extensions().eightbitmime
        || loaded.body.len() <= CONVERT_INLINE_MAX
        || loaded.body.is_ascii()
    {
        return loaded;
    }
    let body = std::mem::take(&mut loaded.body);
    loaded.body = glommio::executor()
        .spawn_blocking(move || downgrade::to_seven_bit(&body).unwrap_or(body))
        .await;
    loaded
}

/// The transaction for `recipients` of the message `envelope` describes,
/// with the sender's DSN parameters for a server that takes them.
fn outgoing(
    envelope: &Envelope,
    recipients: Vec<String>,
    body: Vec<u8>,
    smtputf8: bool,
) -> OutgoingMessage {
    let dsn = &envelope.dsn;
    let recipient_requests = if dsn.recipients.is_empty() {
        Vec::new()
    } else {
        let asked = dsn.by_recipient();
        recipients
            .iter()
            .map(|r| match asked.get(r.as_str()) {
                Some(asked) => RecipientRequest {
                    notify: asked.notify.map(Notify::from_bits),
                    orcpt: asked.orcpt.clone(),
                },
                None => RecipientRequest::default(),
            })
            .collect()
    };
    OutgoingMessage {
        mail_from: envelope.sender.clone(),
        recipients,
        body,
        smtputf8,
        ret: intake::ret_from_store(dsn.ret),
        envid: dsn.envid.clone(),
        recipient_requests,
    }
}

/// A message sent over the connection, waiting for its transaction's end.
struct Flight {
    entry: QueueEntry,
    envelope: Envelope,
    /// Recipients not sent (on the suppression list), already decided.
    suppressed: Vec<RecipientResult>,
    /// Its body's size.
    bytes: usize,
}

/// An entry a host did not take: the first for the next host in the same
/// attempt, the others back to the queue.
fn hand_back(entry: QueueEntry, pending: &mut Option<QueueEntry>, returned: &mut Vec<QueueEntry>) {
    match pending {
        None => *pending = Some(entry),
        Some(_) => returned.push(entry),
    }
}

fn unexpected(event: ClientEvent) -> ServerReply {
    ServerReply {
        code: 421,
        status: Some("4.5.0".into()),
        text: format!("unexpected client event {event:?}"),
        local: true,
    }
}

/// Why a connection could not be made ready.
enum Refused {
    /// The STARTTLS handshake failed (or the certificate was refused).
    Tls(ServerReply),
    /// Anything else: connect, greeting, EHLO.
    Other(ServerReply),
}

impl Refused {
    fn into_reply(self) -> ServerReply {
        match self {
            Refused::Tls(reply) | Refused::Other(reply) => reply,
        }
    }
}

/// A TCP connection to `to` from the local address `from` (an egress
/// source): bound, then connected on the executor's blocking pool (glommio
/// connects only from the address the system picks).
async fn connect_from(
    from: std::net::IpAddr,
    to: std::net::SocketAddr,
    timeout: Duration,
) -> std::io::Result<TcpStream> {
    use std::os::fd::{FromRawFd, IntoRawFd};
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(to),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.bind(&std::net::SocketAddr::new(from, 0).into())?;
    let socket = glommio::executor()
        .spawn_blocking(move || socket.connect_timeout(&to.into(), timeout).map(|()| socket))
        .await?;
    socket.set_nonblocking(true)?;
    // SAFETY: a connected TCP socket we own, handed over once.
    Ok(unsafe { TcpStream::from_raw_fd(socket.into_raw_fd()) })
}

/// The socket, in the clear or inside TLS after STARTTLS.
enum Stream {
    Plain(TcpStream),
    Tls(Box<futures_rustls::client::TlsStream<TcpStream>>),
    /// Only while the socket moves into TLS.
    Upgrading,
}

impl Stream {
    fn tcp(&self) -> Option<&TcpStream> {
        match self {
            Stream::Plain(tcp) => Some(tcp),
            Stream::Tls(tls) => Some(tls.get_ref().0),
            Stream::Upgrading => None,
        }
    }

    async fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(tcp) => tcp.read(buf).await,
            Stream::Tls(tls) => tls.read(buf).await,
            Stream::Upgrading => Err(std::io::ErrorKind::NotConnected.into()),
        }
    }

    async fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Stream::Plain(tcp) => tcp.write_all(bytes).await,
            Stream::Tls(tls) => {
                tls.write_all(bytes).await?;
                tls.flush().await
            }
            Stream::Upgrading => Err(std::io::ErrorKind::NotConnected.into()),
        }
    }

    async fn close(&mut self) {
        let _ = match self {
            Stream::Plain(tcp) => tcp.close().await,
            Stream::Tls(tls) => tls.close().await,
            Stream::Upgrading => Ok(()),
        };
    }
}

/// A socket and the client session driven over it.
struct Connection {
    stream: Stream,
    /// The egress source it comes from (`relay.sources`), if any.
    source: Option<usize>,
    /// The TLS version, once STARTTLS succeeded.
    tls_version: Option<&'static str>,
    session: ClientSession,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Connection {
    /// Connect (from a source of egress `pool`, when there are sources),
    /// read the greeting, say EHLO (and unless `tls.policy` is `none`,
    /// STARTTLS when offered, then EHLO again): a session ready to send.
    /// Under `encrypt` and `verify`, a session without TLS is refused.
    async fn open(
        relay: &Relay,
        target: &Target,
        tls: &HostTls,
        pool: Option<&str>,
    ) -> Result<Connection, Refused> {
        let limits = &relay.config().relay;
        let connect_timeout = Duration::from_secs(limits.connect_timeout_secs);
        // An egress source, by weight among those under their daily limit.
        let source = match &relay.egress {
            Some(egress) => match egress.pick(super::egress::today(), target.addr.ip(), relay.random_unit(), pool) {
                Some(source) => Some((source, egress.address(source))),
                None => {
                    return Err(Refused::Other(ServerReply::local(
                        421,
                        "4.7.0",
                        "every egress source has reached its daily limit (relay.sources); trying again later".to_owned(),
                    )))
                }
            },
            None => None,
        };
        let connected = match source {
            Some((_, from)) => connect_from(from, target.addr, connect_timeout).await,
            None => TcpStream::connect_timeout(target.addr, connect_timeout)
                .await
                .map_err(std::io::Error::from),
        };
        let stream = connected.map_err(|e| {
            Refused::Other(ServerReply::local(
                421,
                "4.4.1",
                format!("cannot connect to {}: {e}", target.addr),
            ))
        })?;
        let _ = stream.set_nodelay(true);
        let (client_tls, client_plain) = match source {
            Some((i, _)) => relay.source_clients[i].clone(),
            None => (relay.client.clone(), relay.client_plain.clone()),
        };
        let client = match (tls.policy, &relay.tls) {
            (TlsPolicy::None, _) | (_, None) => client_plain,
            _ => client_tls,
        };
        let mut connection = Connection {
            source: source.map(|(i, _)| i),
            stream: Stream::Plain(stream),
            tls_version: None,
            session: ClientSession::new(client),
            buf: vec![0; READ_BUFFER],
            start: 0,
            end: 0,
        };
        loop {
            match connection.next_event(limits).await {
                ClientEvent::Ready
                    if tls.policy.requires_tls() && connection.tls_version.is_none() =>
                {
                    connection.quit(limits).await;
                    relay.metrics.tls_failures.inc();
                    return Err(Refused::Tls(ServerReply::local(
                        421,
                        "4.7.5",
                        format!(
                            "TLS is required for this destination ({}), but {} offered no STARTTLS",
                            tls.required_by, target.host
                        ),
                    )));
                }
                ClientEvent::Ready => return Ok(connection),
                ClientEvent::StartTls => connection.start_tls(relay, target, tls).await?,
                ClientEvent::Failed(reply) => return Err(Refused::Other(reply)),
                other => return Err(Refused::Other(unexpected(other))),
            }
        }
    }

    /// The server said 220 to STARTTLS: run the handshake over the socket.
    async fn start_tls(
        &mut self,
        relay: &Relay,
        target: &Target,
        tls: &HostTls,
    ) -> Result<(), Refused> {
        let failed = |why: String| {
            relay.metrics.tls_failures.inc();
            Refused::Tls(ServerReply::local(421, "4.7.5", why))
        };
        let config = relay
            .tls
            .as_ref()
            .map(|clients| match (&tls.dane, tls.policy) {
                (Some(dane), _) => dane.clone(),
                (None, TlsPolicy::Verify) => clients.verified.clone(),
                (None, _) => clients.opportunistic.clone(),
            });
        let (Some(config), Some(name)) = (config, tls::server_name(&target.host)) else {
            return Err(failed(format!("no TLS name for {}", target.host)));
        };
        let Stream::Plain(tcp) = std::mem::replace(&mut self.stream, Stream::Upgrading) else {
            return Err(failed("STARTTLS on a stream already in TLS".into()));
        };
        let limits = &relay.config().relay;
        let _ = tcp.set_read_timeout(Some(Duration::from_secs(limits.command_timeout_secs)));
        let connector = futures_rustls::TlsConnector::from(config);
        match connector.connect(name, tcp).await {
            Ok(tls) => {
                let (_, state) = tls.get_ref();
                tracing::debug!(shard = relay.shard, host = %target.host, version = ?state.protocol_version(), cipher = ?state.negotiated_cipher_suite().map(|c| c.suite()), "TLS established");
                relay.metrics.tls_connections.inc();
                self.tls_version = match state.protocol_version() {
                    Some(rustls::ProtocolVersion::TLSv1_3) => Some("TLSv1.3"),
                    Some(rustls::ProtocolVersion::TLSv1_2) => Some("TLSv1.2"),
                    Some(_) => Some("TLS"),
                    None => None,
                };
                self.stream = Stream::Tls(Box::new(tls));
                self.session.tls_established();
                Ok(())
            }
            Err(e) => Err(failed(format!(
                "TLS handshake with {} failed: {e}",
                target.host
            ))),
        }
    }

    /// Write what the session has to say and read replies until it has an event.
    async fn next_event(&mut self, limits: &RelayConfig) -> ClientEvent {
        loop {
            if let Some(event) = self.session.poll_event() {
                return event;
            }
            // The session stops feeding at each `Finished`: replies to the
            // transactions behind it may be here already.
            if self.start < self.end && !self.session.is_closed() && self.feed_buffered() > 0 {
                continue;
            }
            let Some(tcp) = self.stream.tcp() else {
                // No socket (a failed TLS upgrade): the session ends here.
                if self.session.is_closed() {
                    return ClientEvent::Closed;
                }
                self.session.eof();
                continue;
            };
            if !self.session.output().is_empty() {
                self.write_pending(limits).await;
                continue;
            }
            if self.session.is_closed() {
                return ClientEvent::Closed;
            }
            let _ = tcp.set_read_timeout(Some(phase_timeout(limits, self.session.phase())));
            match self.stream.read(&mut self.buf[self.end..]).await {
                Ok(0) | Err(_) => self.session.eof(),
                Ok(n) => {
                    self.end += n;
                    self.feed_buffered();
                }
            }
        }
    }

    /// Write what the session has to say, if anything.
    async fn write_pending(&mut self, limits: &RelayConfig) {
        let Some(tcp) = self.stream.tcp() else {
            return;
        };
        if self.session.output().is_empty() {
            return;
        }
        let block = Duration::from_secs(limits.data_block_timeout_secs);
        let _ = tcp.set_write_timeout(Some(block));
        let written = self.stream.write_all(self.session.output()).await;
        self.session.clear_output();
        if written.is_err() {
            // The server may have answered transactions in flight, then
            // closed, before this write failed: take what it said first.
            self.read_to_end().await;
            self.session.eof();
        }
    }

    /// Feed the session whatever the server still sends, until the end of
    /// the stream, an error, or [`QUIT_WAIT`] in all (a server that drips
    /// bytes holds the connection no longer).
    async fn read_to_end(&mut self) {
        let deadline = std::time::Instant::now() + QUIT_WAIT;
        loop {
            while self.start < self.end && !self.session.is_closed() && self.feed_buffered() > 0 {}
            let Some(tcp) = self.stream.tcp() else {
                return;
            };
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if self.end == self.buf.len() || self.session.is_closed() || left.is_zero() {
                return;
            }
            let _ = tcp.set_read_timeout(Some(left));
            match self.stream.read(&mut self.buf[self.end..]).await {
                Ok(0) | Err(_) => return,
                Ok(n) => self.end += n,
            }
        }
    }

    /// Feed the session what has been read and not yet taken; returns the
    /// bytes it took.
    fn feed_buffered(&mut self) -> usize {
        let used = self.session.feed(&self.buf[self.start..self.end]);
        self.start += used;
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        } else if self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            (self.start, self.end) = (0, self.end - self.start);
            if self.end == self.buf.len() {
                // Cannot happen: the session bounds a reply below the buffer.
                self.session.eof();
            }
        }
        used
    }

    /// Say QUIT and wait briefly for the answer.
    async fn quit(&mut self, limits: &RelayConfig) {
        self.session.quit();
        let answer = async {
            self.next_event(limits).await;
        };
        answer
            .or(async {
                glommio::timer::sleep(QUIT_WAIT).await;
            })
            .await;
        self.stream.close().await;
    }
}

/// RFC 5321 §4.5.3.2: how long to wait for each kind of reply.
fn phase_timeout(limits: &RelayConfig, phase: Phase) -> Duration {
    Duration::from_secs(match phase {
        Phase::Greeting => limits.greeting_timeout_secs,
        Phase::DataInit => limits.data_init_timeout_secs,
        Phase::DataBlock => limits.data_block_timeout_secs,
        Phase::DataDone => limits.data_done_timeout_secs,
        Phase::Ehlo
        | Phase::StartTls
        | Phase::Idle
        | Phase::Mail
        | Phase::Rcpt
        | Phase::Rset
        | Phase::Quit
        | Phase::Closed => limits.command_timeout_secs,
    })
}
