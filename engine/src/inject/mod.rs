//! HTTP injection: `POST /api/v1/inject` on the control plane takes a
//! message and its recipients as JSON from an application and stores it
//! the way SMTP's end of data does, with the same promise: the answer
//! comes only after the durable commit, and names the queue ids.
//!
//! A request is checked whole first ([`request`]); then each recipient
//! meets the same policy as at RCPT (local accounts and quotas, the
//! suppression list); then the content is rendered ([`compose`]) once for
//! all recipients, or once per recipient when substitutions are given,
//! DKIM-signed like submitted mail, given a `Received: ... with HTTP`
//! field and committed through the commit writer. Committed entries go to
//! their owning shards through the relay's hub, as SMTP's do.
//!
//! Bounds: the memory requests hold at once ([`BODY_BUDGET`]: each takes
//! its share, [`Injector::room_for`], before its body is read, and keeps it
//! until its work is done, whether or not its client waits), a request's
//! size and recipient count (`admin.inject_max_*`), each message's size
//! (`smtp.max_message_size`, and what placeholders may fill one to: the
//! request's own size, at least [`RENDER_FLOOR`]), and the messages
//! rendered but not yet committed ([`CHUNK`] of them, or as many as make
//! the request's size, at least [`RENDER_FLOOR`]).

pub mod compose;
pub mod request;

use crate::config::Config;
use crate::dkim::DkimSigner;
use crate::events::EventSpool;
use crate::intake::{self, Recipients, Trace};
use crate::live::LiveConfig;
use crate::maillog::{Accepted, MailLog};
use crate::metrics::{InjectMetrics, SecurityMetrics};
use crate::relay::{Hub, INJECT_ID_BIT};
use compose::{Letter, Vars};
use request::InjectRequest;
use ringpost_protocols::smtp::{replies, Reply};
use ringpost_storage::spool::{MessageId, QueueEntry};
use ringpost_storage::{CommitHandle, Store, StoreError, WriteBatch};
use serde::Serialize;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Request bodies held at once, bytes (or one request of
/// `admin.inject_max_request_bytes`, if that is more): a request waits
/// for its share before its body is read.
pub const BODY_BUDGET: usize = 128 * 1024 * 1024;
/// Messages of one request rendered and committed together, at most.
pub const CHUNK: usize = 32;
/// What a request may render beyond its own size: placeholders may fill a
/// message to the request's size or this, and this much or the request's
/// size of messages may wait for their commit.
pub const RENDER_FLOOR: usize = 256 * 1024;
/// Requests up to this size are parsed and built on the control plane's
/// thread; larger ones on the blocking pool.
const INLINE_BYTES: usize = 64 * 1024;

/// What an injection needs of the server.
pub struct Injector {
    live: Arc<LiveConfig>,
    store: Arc<dyn Store>,
    commits: CommitHandle,
    hub: Option<Arc<Hub>>,
    dkim: Option<Arc<DkimSigner>>,
    maillog: Arc<MailLog>,
    /// Reception events for the webhook, when one is configured.
    events: Option<EventSpool>,
    metrics: InjectMetrics,
    security: SecurityMetrics,
    /// The sequence part of injected message ids; it also picks their
    /// home shard, round robin.
    sequence: AtomicU64,
    /// [`BODY_BUDGET`] in KiB.
    budget: Arc<tokio::sync::Semaphore>,
    budget_kib: usize,
}

/// What became of a request.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// Recipients whose mail is stored.
    pub success_count: usize,
    /// Recipients refused.
    pub fail_count: usize,
    /// Each stored message's queue id.
    pub queue_ids: Vec<String>,
    /// Each refused recipient, and why.
    pub failed_recipients: Vec<Refused>,
    /// Set when a commit failed: nothing of the message is stored; try again.
    #[serde(skip)]
    pub store_failure: Option<StoreFailure>,
}

/// A refused recipient.
#[derive(Debug, Serialize)]
pub struct Refused {
    /// The address.
    pub recipient: String,
    /// Why: an SMTP reply as RCPT would have given it, or what is wrong
    /// with its rendering.
    pub reason: String,
}

/// Why a request got no report.
#[derive(Debug)]
pub enum Refusal {
    /// The request is wrong (400): what to change. Nothing was stored.
    BadRequest(String),
    /// The server failed part way (500); what it committed before stays
    /// queued, and the report of it is lost.
    Failed(String),
}

/// How a commit failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreFailure {
    /// No room on disk (507).
    DiskFull,
    /// Anything else (503).
    Other,
}

/// A message rendered and signed, ready to commit.
struct Prepared {
    id: MessageId,
    home: usize,
    /// Its records, taken when it is committed.
    batch: Option<WriteBatch>,
    /// Its queue entries, for their shards once it is durable.
    queue: Vec<QueueEntry>,
    size: u64,
    /// Indexes of its recipients in the request.
    recipients: Vec<usize>,
    signatures: usize,
}

impl Prepared {
    /// What the mail log and the reception event say of it.
    fn accepted<'a>(&self, queue_id: &'a str, client: IpAddr, sender: &'a str) -> Accepted<'a> {
        Accepted {
            queue_id,
            shard: self.home,
            client,
            helo: "api",
            user: Some("api"),
            tls: false,
            sender,
            recipients: self.recipients.len(),
            size: self.size,
            dkim: self.signatures,
        }
    }
}

impl Injector {
    /// An injector over the server's parts.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        live: Arc<LiveConfig>,
        store: Arc<dyn Store>,
        commits: CommitHandle,
        hub: Option<Arc<Hub>>,
        dkim: Option<Arc<DkimSigner>>,
        maillog: Arc<MailLog>,
        metrics: &crate::metrics::Metrics,
    ) -> Arc<Injector> {
        let budget_kib = BODY_BUDGET
            .max(live.get().admin.inject_max_request_bytes)
            .div_ceil(1024);
        Arc::new(Injector {
            events: EventSpool::new(crate::events::source::INJECT, &live.get().webhook),
            store,
            commits,
            hub,
            dkim,
            maillog,
            metrics: metrics.inject(),
            security: metrics.security(),
            sequence: AtomicU64::new(0),
            budget: Arc::new(tokio::sync::Semaphore::new(budget_kib)),
            budget_kib,
            live,
        })
    }

    /// Wait until a request of `declared` bytes (None: not declared, so
    /// the largest) fits the budget: its body, and what it renders at once
    /// (twice the body or [`RENDER_FLOOR`]). The permit goes to
    /// [`Injector::inject`], which holds it until the work is done.
    pub async fn room_for(&self, declared: Option<usize>) -> tokio::sync::OwnedSemaphorePermit {
        let max = self.max_request_bytes();
        let kib = self.kib_for(declared.unwrap_or(max).min(max));
        self.budget
            .clone()
            .acquire_many_owned(u32::try_from(kib).unwrap_or(u32::MAX))
            .await
            .expect("the injection budget is never closed")
    }

    /// Give back what `room` holds beyond what a body of `bytes` needs: a
    /// request that declared no length (a chunked upload) or more than it
    /// sent was given room for the largest.
    pub fn fit_room(&self, room: &mut tokio::sync::OwnedSemaphorePermit, bytes: usize) {
        let extra = room.num_permits().saturating_sub(self.kib_for(bytes));
        if extra > 0 {
            drop(room.split(extra));
        }
    }

    /// The budget, in KiB, a request body of `bytes` holds: the body, and
    /// what it renders at once. Never more than the budget holds, or the
    /// request would wait for ever.
    fn kib_for(&self, bytes: usize) -> usize {
        let held = bytes.saturating_add(2 * bytes.max(RENDER_FLOOR));
        held.div_ceil(1024).clamp(1, self.budget_kib)
    }

    /// The largest request body taken.
    pub fn max_request_bytes(&self) -> usize {
        self.live.get().admin.inject_max_request_bytes
    }

    /// Whether some DKIM key is one whose signing takes milliseconds (RSA).
    fn signs_slowly(&self) -> bool {
        self.dkim
            .as_ref()
            .is_some_and(|signer| signer.has_slow_keys())
    }

    /// The metrics, for the route's own outcomes (too large).
    pub fn metrics(&self) -> &InjectMetrics {
        &self.metrics
    }

    /// Serve one request body from `client`, holding `room` (from
    /// [`Injector::room_for`]) until done. [`Refusal::BadRequest`] says
    /// what is wrong, and nothing is stored then.
    ///
    /// The work runs as a task of its own: a client that goes away (hyper
    /// drops the request) must not cut it between a commit and handing the
    /// committed entries to their shards, nor free its memory's share
    /// while it goes on.
    pub async fn inject(
        self: &Arc<Self>,
        client: IpAddr,
        body: Vec<u8>,
        room: tokio::sync::OwnedSemaphorePermit,
    ) -> Result<Report, Refusal> {
        let this = self.clone();
        let work = tokio::spawn(async move {
            let _room = room;
            this.serve(client, body).await
        });
        let outcome = match work.await {
            Ok(outcome) => outcome,
            Err(e) => Err(Refusal::Failed(e.to_string())),
        };
        if let Err(Refusal::Failed(e)) = &outcome {
            self.metrics.request("failed");
            tracing::error!(error = %e, "an injection failed part way; what it committed before stays queued");
        }
        outcome
    }

    async fn serve(self: &Arc<Self>, client: IpAddr, body: Vec<u8>) -> Result<Report, Refusal> {
        // Small requests are planned and built right here: two trips to the
        // blocking pool would cost more than the work.
        let small = body.len() <= INLINE_BYTES;
        let this = self.clone();
        let planned = off_thread(small, move || this.plan(body)).await?;
        let (request, groups, mut report) = match planned {
            Ok(planned) => planned,
            Err(problem) => {
                self.metrics.request("bad_request");
                return Err(Refusal::BadRequest(problem));
            }
        };
        let request = Arc::new(request);
        // What waits for its commit at once: up to CHUNK messages, and no
        // more bytes than the request's share of the budget allows.
        let chunk_bytes = request.size.max(RENDER_FLOOR);
        let mut rest = &groups[..];
        while !rest.is_empty() {
            let chunk = rest[..rest.len().min(CHUNK)].to_vec();
            let (this, shared) = (self.clone(), request.clone());
            let inline = small && chunk.len() == 1 && !self.signs_slowly();
            let prepared = off_thread(inline, move || {
                let mut prepared = Vec::with_capacity(chunk.len());
                let mut bytes = 0;
                for group in chunk {
                    if bytes >= chunk_bytes {
                        break;
                    }
                    let outcome = this.prepare(&shared, group, client);
                    bytes += outcome.as_ref().map_or(0, |p| p.size as usize);
                    prepared.push(outcome);
                }
                prepared
            })
            .await?;
            rest = &rest[prepared.len()..];
            let mut ready = Vec::new();
            for outcome in prepared {
                match outcome {
                    Ok(prepared) => ready.push(prepared),
                    // The same content for everyone: the request is wrong.
                    Err((_, problem)) if !request.per_recipient => {
                        self.metrics.request("bad_request");
                        return Err(Refusal::BadRequest(problem));
                    }
                    Err((group, problem)) => {
                        for i in group {
                            report.refuse(request.recipients[i].email(), problem.clone());
                        }
                    }
                }
            }
            let commits = ready.iter_mut().map(|p| {
                let batch = p.batch.take().unwrap_or_default();
                self.commits.commit(batch)
            });
            let committed = futures::future::join_all(commits).await;
            for (prepared, outcome) in ready.into_iter().zip(committed) {
                self.settle(&request, prepared, outcome, client, &mut report);
            }
        }
        self.metrics.recipients("accepted", report.success_count);
        self.metrics.recipients("refused", report.fail_count);
        self.metrics
            .request(match (report.success_count, report.fail_count) {
                (_, 0) => "ok",
                (0, _) if report.store_failure.is_some() => "store_error",
                (0, _) => "refused",
                _ => "partial",
            });
        tracing::info!(
            %client,
            sender = %request.sender,
            accepted = report.success_count,
            refused = report.fail_count,
            messages = report.queue_ids.len(),
            "admin: injection"
        );
        Ok(report)
    }

    /// Parse the body, check every recipient, and group the accepted ones
    /// into messages (indexes into the request's recipients).
    #[allow(clippy::type_complexity)]
    fn plan(&self, body: Vec<u8>) -> Result<(InjectRequest, Vec<Vec<usize>>, Report), String> {
        let config = self.live.get();
        let request = request::parse(&body, config.admin.inject_max_recipients)?;
        drop(body);
        if let Some(pool) = &request.pool {
            if !config.relay.pools.iter().any(|p| &p.name == pool) {
                return Err(format!("pool `{pool}` is not one of relay.pools"));
            }
        }
        let mut report = Report::default();
        let mut accepted = Vec::new();
        for (i, recipient) in request.recipients.iter().enumerate() {
            match self.check(&config, &request.sender, recipient.email()) {
                Ok(()) => accepted.push(i),
                Err(reply) => {
                    let reason = format!("{} {} {}", reply.code, reply.status, reply.text);
                    report.refuse(recipient.email(), reason);
                }
            }
        }
        let groups = match (request.per_recipient, accepted.is_empty()) {
            (_, true) => Vec::new(),
            (true, false) => accepted.into_iter().map(|i| vec![i]).collect(),
            (false, false) => vec![accepted],
        };
        Ok((request, groups, report))
    }

    /// The policy of RCPT for a client that may relay: local recipients
    /// must be accounts with room, and suppressed addresses are refused.
    fn check(&self, config: &Config, sender: &str, recipient: &str) -> Result<(), Reply> {
        let default = config.quota.default_quota();
        intake::check_recipient(recipient, true, config, |name| {
            ringpost_storage::quota::room_for(&*self.store, name, default, 1, 0).map(|room| {
                match room {
                    None => intake::LocalAccount::Missing,
                    Some(true) => intake::LocalAccount::Open,
                    Some(false) => intake::LocalAccount::Full,
                }
            })
        })
        .inspect_err(|reply| {
            self.security
                .rejected("inject", intake::refusal_reason(reply), reply.code)
        })?;
        match crate::suppressions::refusal(&*self.store, config, sender, recipient) {
            Ok(None) => Ok(()),
            Ok(Some((reply, _scope))) => {
                self.security.rejected("inject", "suppressed", reply.code);
                Err(reply)
            }
            Err(e) => {
                tracing::error!(error = %e, "suppression lookup failed; recipient refused");
                Err(replies::STORAGE_FAILED)
            }
        }
    }

    /// Render, sign and record one message for the recipients `group`.
    fn prepare(
        &self,
        request: &InjectRequest,
        group: Vec<usize>,
        client: IpAddr,
    ) -> Result<Prepared, (Vec<usize>, String)> {
        let config = self.live.get();
        let now = intake::unix_micros();
        let sequence = self.sequence.fetch_add(1, Ordering::Relaxed);
        let shards = self.hub.as_ref().map_or(1, |hub| hub.shards());
        let home = (sequence % shards as u64) as usize;
        let id = MessageId::new(now, INJECT_ID_BIT | home as u16, sequence);
        let message_id = format!("{}@{}", id.to_hex(), config.hostname);
        let one = match group.as_slice() {
            [only] => Some(&request.recipients[*only]),
            _ => None,
        };
        let vars = one.filter(|_| request.per_recipient).map(|r| Vars {
            email: r.email(),
            name: r.name(),
            own: &r.substitutions,
            shared: &request.substitutions,
            limit: config
                .smtp
                .max_message_size
                .min(request.size.max(RENDER_FLOOR)),
            filled: Default::default(),
        });
        let letter = Letter {
            recipient: one.map(|r| &r.person),
            vars: vars.as_ref(),
            message_id: &message_id,
            date: (now / 1_000_000) as i64,
        };
        let mut content = match compose::render(&request.content, &letter) {
            Ok(content) => content,
            Err(problem) => return Err((group, problem)),
        };
        // A verdict in our name that reaches a local mailbox must be ours.
        let local = group.iter().any(|&i| {
            let domain = intake::recipient_domain(request.recipients[i].email(), &config.hostname);
            config.is_local_domain(&domain)
        });
        if local {
            if let Some(stripped) =
                crate::mail_auth::strip_forged_results(&content, &config.hostname)
            {
                content = stripped;
            }
        }
        if content.len() > config.smtp.max_message_size {
            let problem = format!(
                "the message is {} bytes; at most {} are taken (smtp.max_message_size)",
                content.len(),
                config.smtp.max_message_size
            );
            return Err((group, problem));
        }
        let (signatures, signed) = match &self.dkim {
            Some(signer) => {
                let keys = signer.keys_for(&content);
                match keys.is_empty() {
                    true => (Vec::new(), 0),
                    false => (crate::dkim::sign(&content, &keys), keys.len()),
                }
            }
            None => (Vec::new(), 0),
        };
        let trace = Trace {
            from: "api",
            ip: client,
            by: &config.hostname,
            with: "HTTP",
            only_recipient: one.map(|r| r.email()),
        }
        .header(&id, now);
        let mut body = Vec::with_capacity(signatures.len() + trace.len() + content.len());
        body.extend_from_slice(&signatures);
        body.extend_from_slice(trace.as_bytes());
        body.extend_from_slice(&content);
        let addresses: Vec<String> = group
            .iter()
            .map(|&i| request.recipients[i].email().to_owned())
            .collect();
        let is_local = |domain: &str| config.is_local_domain(domain);
        let resolve = intake::local_targets_in(&config, &*self.store);
        let to = Recipients {
            local_targets: Some(&resolve),
            hostname: &config.hostname,
            is_local: &is_local,
            pool: request
                .pool
                .as_deref()
                .or_else(|| config.relay.pool_for(&request.sender)),
        };
        let message = intake::stored(id, body, &request.sender, &addresses, &to, now);
        let mut prepared = Prepared {
            id,
            home,
            queue: message.queue.clone(),
            size: message.body.len() as u64,
            batch: None,
            recipients: group,
            signatures: signed,
        };
        let mut batch = message.into_batch();
        if let Some(events) = &self.events {
            let queue_id = id.to_hex();
            let accepted = prepared.accepted(&queue_id, client, &request.sender);
            events.add(&mut batch, "reception", accepted.fields());
        }
        prepared.batch = Some(batch);
        Ok(prepared)
    }

    /// After the commit: hand the queue entries to their shards, log and
    /// count, or refuse the recipients when it failed.
    fn settle(
        &self,
        request: &InjectRequest,
        mut prepared: Prepared,
        outcome: Result<(), StoreError>,
        client: IpAddr,
        report: &mut Report,
    ) {
        let size = prepared.size;
        match outcome {
            Ok(()) => {
                if let Some(hub) = &self.hub {
                    hub.route(std::mem::take(&mut prepared.queue));
                }
                let queue_id = prepared.id.to_hex();
                self.maillog
                    .accepted(&prepared.accepted(&queue_id, client, &request.sender));
                self.metrics.stored(size, prepared.signatures);
                report.success_count += prepared.recipients.len();
                report.queue_ids.push(queue_id);
            }
            Err(e) => {
                let (failure, reply) = match e {
                    StoreError::DiskFull { .. } => (StoreFailure::DiskFull, replies::DISK_FULL),
                    e => {
                        tracing::error!(error = %e, "could not store an injected message");
                        (StoreFailure::Other, replies::STORAGE_FAILED)
                    }
                };
                report.store_failure = Some(failure);
                let reason = format!("{} {} {}", reply.code, reply.status, reply.text);
                for i in prepared.recipients {
                    report.refuse(request.recipients[i].email(), reason.clone());
                }
            }
        }
    }
}

/// Run `work` here (`inline`) or on tokio's blocking pool.
async fn off_thread<T: Send + 'static>(
    inline: bool,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Refusal> {
    match inline {
        true => Ok(work()),
        false => tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| Refusal::Failed(e.to_string())),
    }
}

impl Report {
    fn refuse(&mut self, recipient: &str, reason: String) {
        self.fail_count += 1;
        self.failed_recipients.push(Refused {
            recipient: recipient.to_owned(),
            reason,
        });
    }
}
