//! Intake: what happens to a message between "end of data" and "250".
//!
//! A finished SMTP transaction becomes one [`NewMessage`]: a time-ordered id,
//! the body with a `Received:` trace header prepended (RFC 5321 §4.4), one
//! INBOX row per local account, and for remote recipients an envelope and
//! one queue entry per domain. It is committed as one batch, so a crash
//! leaves either all of it or none of it, and the body is stored once.

use crate::config::Config;
use ringpost_protocols::smtp::dsn_request::{self, Notify, Ret};
use ringpost_protocols::smtp::{replies, Reply, Transaction};
use ringpost_storage::spool::{
    DsnRequest, Envelope, MessageId, NewMessage, QueueEntry, RecipientDsn,
};
use ringpost_storage::StoreError;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

/// Hands out message ids on one shard: unix micros ‖ shard ‖ sequence.
/// The sequence makes ids unique even within one microsecond.
pub struct IdGenerator {
    shard: u16,
    seq: u64,
}

impl IdGenerator {
    /// A generator for `shard`.
    pub fn new(shard: u16) -> Self {
        IdGenerator { shard, seq: 0 }
    }

    /// The next id, stamped with `now_micros`.
    pub fn next(&mut self, now_micros: u64) -> MessageId {
        self.seq = self.seq.wrapping_add(1);
        MessageId::new(now_micros, self.shard, self.seq)
    }
}

/// Who handed us the message, for the trace header, and which domains are ours.
pub struct Origin<'a> {
    /// Client IP address.
    pub ip: IpAddr,
    /// Our name.
    pub hostname: &'a str,
    /// Whether a domain is local: its mail goes into mailboxes.
    pub is_local: &'a dyn Fn(&str) -> bool,
    /// The egress pool remote recipients' queue entries use.
    pub pool: Option<&'a str>,
    /// Where mail for a local address goes ([`local_targets`]); `None`:
    /// to the account it names.
    pub local_targets: Option<LocalTargets<'a>>,
    /// It came by LMTP (RFC 2033), not SMTP.
    pub lmtp: bool,
}

/// Where mail for a local address goes: [`local_targets`], with the
/// store's accounts.
pub type LocalTargets<'a> = &'a dyn Fn(&str) -> Vec<String>;

/// Microseconds since the Unix epoch.
pub fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// `Received:` fields past which a message is taken to be looping
/// (RFC 5321 §6.3: a large number, typically at least 100).
pub const MAX_HOPS: usize = 100;

/// Whether `message`'s header has more than [`MAX_HOPS`] `Received:`
/// fields: each relay adds one, so a message in a loop piles them up.
pub fn too_many_hops(message: &[u8]) -> bool {
    let mut hops = 0;
    for line in message.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            // The end of the header.
            return false;
        }
        if line.len() >= 9 && line[..9].eq_ignore_ascii_case(b"received:") {
            hops += 1;
            if hops > MAX_HOPS {
                return true;
            }
        }
    }
    false
}

/// The originator fields RFC 5322 §3.6 asks every message for that
/// `has(name)` says are missing, as lines to put on top: `Message-ID`
/// (`<message_id>`) and `Date` (`unix_secs`). A submission server adds
/// them (RFC 6409 §8.3), and receivers such as Gmail refuse mail without
/// a Message-ID.
pub fn missing_origin_fields(
    has: impl Fn(&str) -> bool,
    message_id: &str,
    unix_secs: i64,
) -> String {
    let mut out = String::new();
    if !has("message-id") {
        let _ = write!(out, "Message-ID: <{message_id}>\r\n");
    }
    if !has("date") {
        let date = chrono::DateTime::from_timestamp(unix_secs, 0)
            .unwrap_or_default()
            .to_rfc2822();
        let _ = write!(out, "Date: {date}\r\n");
    }
    out
}

/// Put the originator fields `message` lacks on top of it
/// ([`missing_origin_fields`]): what a submission server does for the mail
/// its clients send. The Message-ID is the message's queue id at
/// `hostname`. Whether any were added.
pub fn complete_submission(
    message: &mut Vec<u8>,
    id: &MessageId,
    hostname: &str,
    now_micros: u64,
) -> bool {
    // A message that starts with a folded line would fold it into what is
    // put on top: it is left as it came.
    if message.first().is_some_and(|b| matches!(b, b' ' | b'\t')) {
        return false;
    }
    let message_id = format!("{}@{hostname}", id.to_hex());
    let secs = i64::try_from(now_micros / 1_000_000).unwrap_or(0);
    let added = missing_origin_fields(|name| has_field(message, name), &message_id, secs);
    if added.is_empty() {
        return false;
    }
    message.splice(0..0, added.bytes());
    true
}

/// Whether the header section of `message` has a field called `name`
/// (lowercase), continuation lines aside.
pub fn has_field(message: &[u8], name: &str) -> bool {
    for line in message.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            return false;
        }
        let named = line
            .iter()
            .position(|&b| b == b':')
            .map(|colon| line[..colon].trim_ascii_end());
        if named.is_some_and(|n| n.eq_ignore_ascii_case(name.as_bytes())) {
            return true;
        }
    }
    false
}

/// Build the records for an accepted transaction; `signatures` (DKIM
/// fields, or nothing) go on top, then our `Received:` field.
///
/// The transaction is borrowed so the session can recycle its data buffer.
pub fn new_message(
    id: MessageId,
    tx: &Transaction,
    origin: &Origin<'_>,
    now_micros: u64,
    signatures: &[u8],
) -> NewMessage {
    let trace = received_header(tx, origin, &id, now_micros);
    // Written first here when a recipient is local, so that `stored` need
    // not copy the body to put it on top.
    let local = tx
        .recipients
        .iter()
        .any(|r| (origin.is_local)(&recipient_domain(r, origin.hostname)));
    let return_path = match local {
        true => return_path_line(&tx.mail_from),
        false => String::new(),
    };
    let mut body =
        Vec::with_capacity(return_path.len() + signatures.len() + trace.len() + tx.data.len());
    body.extend_from_slice(return_path.as_bytes());
    body.extend_from_slice(signatures);
    body.extend_from_slice(trace.as_bytes());
    body.extend_from_slice(&tx.data);

    let to = Recipients {
        hostname: origin.hostname,
        is_local: origin.is_local,
        pool: origin.pool,
        local_targets: origin.local_targets,
    };
    let mut message = stored(id, body, &tx.mail_from, &tx.recipients, &to, now_micros);
    message.envelope.dsn = dsn_request(tx, &message.envelope.recipients, &to);
    message
}

/// The DSN parameters of `tx` (RFC 3461) the relay needs: ENVID, RET, and
/// the NOTIFY and ORCPT of the recipients in `relayed`.
///
/// A remote address an alias leads to carries the alias's request on
/// (RFC 3461 §6.2.7.3), its ORCPT the alias's own address when the client
/// gave none, so the sender hears of it as of the address they wrote. An
/// alias of several addresses is reported "expanded" at once when the
/// sender asked for success ([`expansion`]): its addresses are not
/// reported successful again.
fn dsn_request(tx: &Transaction, relayed: &[String], to: &Recipients<'_>) -> DsnRequest {
    if tx.envid.is_none() && tx.ret.is_none() && tx.recipient_requests.iter().all(|r| r.is_empty())
    {
        // The usual case: nothing asked, nothing to keep.
        return DsnRequest::default();
    }
    // An address given twice is relayed once ([`once_each`]): it keeps the
    // first request any of its RCPTs made.
    let mut asked: HashMap<String, (Option<u8>, Option<String>)> = HashMap::new();
    let mut forwarded = Vec::new();
    for (address, request) in tx.recipients.iter().zip(&tx.recipient_requests) {
        if request.is_empty() {
            continue;
        }
        let notify = request.notify.map(|n| n.bits());
        asked
            .entry(address_key(address))
            .or_insert((notify, request.orcpt.clone()));
        if let Some(expansion) = expansion(address, to) {
            let notify = request.notify.map(|n| expansion.notify_on(n).bits());
            let orcpt = request.orcpt.clone().or_else(|| orcpt_of(address));
            for target in expansion.remote {
                forwarded.push((address_key(&target), (notify, orcpt.clone())));
            }
        }
    }
    // What the client asked for an address itself comes first.
    for (key, request) in forwarded {
        asked.entry(key).or_insert(request);
    }
    let recipients = relayed
        .iter()
        .filter_map(|address| {
            let (notify, orcpt) = asked.get(&address_key(address))?;
            Some(RecipientDsn {
                recipient: address.clone(),
                notify: *notify,
                orcpt: orcpt.clone(),
            })
        })
        .collect();
    DsnRequest {
        envid: tx.envid.clone(),
        ret: ret_to_store(tx.ret),
        recipients,
    }
}

/// RET= as [`DsnRequest::ret`] keeps it: 0 none, 1 FULL, 2 HDRS.
fn ret_to_store(ret: Option<Ret>) -> u8 {
    match ret {
        None => 0,
        Some(Ret::Full) => 1,
        Some(Ret::Headers) => 2,
    }
}

/// RET= from [`DsnRequest::ret`].
pub fn ret_from_store(ret: u8) -> Option<Ret> {
    match ret {
        1 => Some(Ret::Full),
        2 => Some(Ret::Headers),
        _ => None,
    }
}

/// How recipients are told apart (our name and which domains are local),
/// and how the remote ones leave.
pub struct Recipients<'a> {
    /// Our name: where a bare `postmaster` belongs.
    pub hostname: &'a str,
    /// Whether a domain is local: its mail goes into mailboxes.
    pub is_local: &'a dyn Fn(&str) -> bool,
    /// The egress pool of the queue entries (None: the default).
    pub pool: Option<&'a str>,
    /// Where mail for a local address goes ([`local_targets`]); `None`:
    /// to the account it names.
    pub local_targets: Option<LocalTargets<'a>>,
}

/// The records of a message stored for `recipients`: INBOX rows for the
/// local ones, an envelope and queue entries for the others. The
/// envelope lists only the recipients the relay delivers.
pub fn stored(
    id: MessageId,
    body: Vec<u8>,
    sender: &str,
    recipients: &[String],
    to: &Recipients<'_>,
    now_micros: u64,
) -> NewMessage {
    let due = now_micros / 1000;
    let recipients = &once_each(recipients);
    let split = split_recipients(recipients, to);
    let body = match split.local.is_empty() || body.starts_with(b"Return-Path: ") {
        true => body,
        false => with_return_path(body, sender),
    };
    let envelope = Envelope {
        sender: sender.to_owned(),
        received_at: now_micros,
        size: body.len() as u64,
        recipients: split.relayed,
        dsn: DsnRequest::default(),
    };
    let queue = split
        .remote
        .into_iter()
        .map(|(domain, recipients)| QueueEntry {
            pool: to.pool.map(str::to_owned),
            due,
            id,
            domain,
            recipients,
            attempts: 0,
            last_error: None,
        })
        .collect();
    NewMessage {
        id,
        body,
        envelope,
        queue,
        mailboxes: split.local,
        junk: Vec::new(),
        filed: Vec::new(),
    }
}

/// Send `message` to `addresses` as well: local ones into their INBOX,
/// remote ones into the queue entry of their domain (one made if there
/// is none) and the envelope. An address it goes to already is skipped.
pub fn add_recipients(message: &mut NewMessage, addresses: &[String], to: &Recipients<'_>) {
    let split = split_recipients(addresses, to);
    for user in split.local {
        if !message.mailboxes.contains(&user) {
            message.mailboxes.push(user);
        }
    }
    let due = message.envelope.received_at / 1000;
    for (domain, recipients) in split.remote {
        let at = match message.queue.iter().position(|e| e.domain == domain) {
            Some(at) => at,
            None => {
                message.queue.push(QueueEntry {
                    pool: to.pool.map(str::to_owned),
                    due,
                    id: message.id,
                    domain,
                    recipients: Vec::new(),
                    attempts: 0,
                    last_error: None,
                });
                message.queue.len() - 1
            }
        };
        let entry = &mut message.queue[at];
        for address in recipients {
            let key = address_key(&address);
            if !entry.recipients.iter().any(|r| address_key(r) == key) {
                entry.recipients.push(address.clone());
                message.envelope.recipients.push(address);
            }
        }
    }
}

/// Relay `message` to `moved` (some of its relayed recipients) from
/// `sender` instead of its own sender. The envelope sender matters only
/// to the relay, so when they are every address it relays to, the
/// envelope changes in place; otherwise they go into a copy with an id
/// of its own (`id`), their DSN requests with them, and the others stay.
pub fn split_off(
    message: &mut NewMessage,
    moved: &[String],
    id: impl FnOnce() -> MessageId,
    sender: &str,
) -> Option<NewMessage> {
    let keys: std::collections::HashSet<String> = moved.iter().map(|a| address_key(a)).collect();
    let is_moved = |address: &String| keys.contains(&address_key(address));
    if message.envelope.recipients.iter().all(is_moved) {
        message.envelope.sender = sender.to_owned();
        return None;
    }
    let id = id();
    let envelope = &mut message.envelope;
    let (gone, kept): (Vec<String>, Vec<String>) = std::mem::take(&mut envelope.recipients)
        .into_iter()
        .partition(is_moved);
    envelope.recipients = kept;
    let (gone_dsn, kept_dsn) = std::mem::take(&mut envelope.dsn.recipients)
        .into_iter()
        .partition(|r| is_moved(&r.recipient));
    envelope.dsn.recipients = kept_dsn;
    let mut queue = Vec::new();
    for entry in &mut message.queue {
        let (away, stay) = std::mem::take(&mut entry.recipients)
            .into_iter()
            .partition(is_moved);
        entry.recipients = stay;
        let away: Vec<String> = away;
        if !away.is_empty() {
            queue.push(QueueEntry {
                id,
                recipients: away,
                ..entry.clone()
            });
        }
    }
    message.queue.retain(|entry| !entry.recipients.is_empty());
    Some(NewMessage {
        id,
        body: message.body.clone(),
        envelope: Envelope {
            sender: sender.to_owned(),
            recipients: gone,
            dsn: DsnRequest {
                recipients: gone_dsn,
                ..envelope.dsn.clone()
            },
            ..envelope.clone()
        },
        queue,
        mailboxes: Vec::new(),
        junk: Vec::new(),
        filed: Vec::new(),
    })
}

/// `body` with `Return-Path: <sender>` on top: what final delivery adds
/// (RFC 5321 §4.4), so a mailbox shows the envelope sender (`<>` for
/// bounces and automatic replies). The relay takes it off again before
/// the same body goes on to other servers ([`without_return_path`]).
fn with_return_path(body: Vec<u8>, sender: &str) -> Vec<u8> {
    let line = return_path_line(sender);
    let mut out = Vec::with_capacity(line.len() + body.len());
    out.extend_from_slice(line.as_bytes());
    out.extend_from_slice(&body);
    out
}

fn return_path_line(sender: &str) -> String {
    format!("Return-Path: <{sender}>\r\n")
}

/// `body` without the `Return-Path:` line [`stored`] put on top of a
/// message that also went to local mailboxes (a client's own such field
/// would be below our trace fields, never first).
pub fn without_return_path(body: &mut Vec<u8>) {
    if body.starts_with(b"Return-Path: ") {
        if let Some(end) = body.windows(2).position(|w| w == b"\r\n") {
            body.drain(..end + 2);
        }
    }
}

/// `recipients` with each address once, at its first place: one given
/// twice (in any case of its domain) gets the message once, as Postfix's
/// duplicate filter has it, not two RCPTs and maybe two copies downstream.
fn once_each(recipients: &[String]) -> std::borrow::Cow<'_, [String]> {
    use std::borrow::Cow;
    // The usual message has one recipient, or a few all different: no
    // copy then, and no allocation to find out.
    let same = |a: &str, b: &str| match (a.rsplit_once('@'), b.rsplit_once('@')) {
        (Some((la, da)), Some((lb, db))) => {
            la == lb
                && (da.eq_ignore_ascii_case(db)
                    || da.starts_with('[') && domain_key(da) == domain_key(db))
        }
        _ => a.eq_ignore_ascii_case(b),
    };
    let few_and_apart = recipients.len() <= 16
        && !recipients
            .iter()
            .enumerate()
            .any(|(i, r)| recipients[..i].iter().any(|earlier| same(earlier, r)));
    if recipients.len() < 2 || few_and_apart {
        return Cow::Borrowed(recipients);
    }
    let mut seen = std::collections::HashSet::with_capacity(recipients.len());
    Cow::Owned(
        recipients
            .iter()
            .filter(|r| seen.insert(address_key(r)))
            .cloned()
            .collect(),
    )
}

/// What makes two spellings of a recipient one address: the local part
/// as written, the domain in any case.
pub fn address_key(address: &str) -> String {
    match address.rsplit_once('@') {
        Some((local, domain)) => format!("{local}@{}", domain_key(domain)),
        None => address.to_ascii_lowercase(),
    }
}

/// A domain in any case, and an address literal in any spelling
/// (`[127.000.000.001]` is `[127.0.0.1]`, `[IPv6:0::1]` is `[IPv6:::1]`),
/// as one.
fn domain_key(domain: &str) -> String {
    let literal = domain.strip_prefix('[').and_then(|d| d.strip_suffix(']'));
    let canonical = literal.and_then(|inner| {
        if let Some(v4) = ringpost_protocols::smtp::ipv4_literal(inner) {
            return Some(format!("[{v4}]"));
        }
        let v6 = inner
            .get(..5)
            .filter(|tag| tag.eq_ignore_ascii_case("ipv6:"))?;
        let ip: std::net::Ipv6Addr = inner[v6.len()..].parse().ok()?;
        Some(format!("[IPv6:{ip}]"))
    });
    canonical.unwrap_or_else(|| domain.to_ascii_lowercase())
}

/// Where a message's recipients go.
#[derive(Debug, Default, PartialEq, Eq)]
struct Split {
    /// Accounts (lowercased, each once) whose INBOX gets it.
    local: Vec<String>,
    /// Remote recipients by lowercased domain, for the relay.
    remote: BTreeMap<String, Vec<String>>,
    /// The same, in the order the client gave them (aliases' remote
    /// targets in their place), as the envelope, the relay and DSNs
    /// report them.
    relayed: Vec<String>,
}

/// Where a local recipient's mail goes: a bare `postmaster` is
/// `postmaster@hostname`, and a local address goes where
/// [`Recipients::local_targets`] says (an account, the account without a
/// detail, an alias's targets).
pub fn targets_of(rcpt: &str, to: &Recipients<'_>) -> Vec<String> {
    let named = match rcpt.contains('@') {
        true => rcpt.to_owned(),
        false => format!("postmaster@{}", recipient_domain(rcpt, to.hostname)),
    };
    match to.local_targets {
        Some(resolve) => resolve(&named),
        // Folded as account names are (KELVIN SIGN, Ä: one account).
        None => vec![named.to_lowercase()],
    }
}

/// A local recipient that is an alias of remote addresses, or of several.
pub struct Expansion {
    /// It leads to more than one address.
    pub several: bool,
    /// The remote ones among them.
    pub remote: Vec<String>,
}

impl Expansion {
    /// What a target is asked to report when the client asked `notify`
    /// for the alias: the same, less success when the alias has several
    /// (the alias itself is reported "expanded", RFC 3461 §6.2.7.3).
    pub fn notify_on(&self, notify: Notify) -> Notify {
        match self.several {
            true => notify.without_success(),
            false => notify,
        }
    }
}

/// `rcpt`'s expansion when it is a local address that leads to several
/// addresses or to a remote one; `None` for a remote address or one that
/// is simply an account's.
pub fn expansion(rcpt: &str, to: &Recipients<'_>) -> Option<Expansion> {
    if !(to.is_local)(&recipient_domain(rcpt, to.hostname)) {
        return None;
    }
    let mut targets = targets_of(rcpt, to);
    // An address listed twice (or in two spellings) is still one.
    let mut seen = std::collections::HashSet::new();
    targets.retain(|t| seen.insert(address_key(t)));
    let remote: Vec<String> = targets
        .iter()
        .filter(|t| !(to.is_local)(&recipient_domain(t, to.hostname)))
        .cloned()
        .collect();
    let several = targets.len() > 1;
    (several || !remote.is_empty()).then_some(Expansion { several, remote })
}

/// The ORCPT that names `address` (RFC 3461 §4.2), if it can be written
/// as one (xtext is ASCII).
fn orcpt_of(address: &str) -> Option<String> {
    address
        .is_ascii()
        .then(|| format!("rfc822;{}", dsn_request::xtext_encode(address)))
}

/// Sort recipients into local accounts and remote domains ([`targets_of`]
/// says where a local one's mail goes). If a bare `postmaster`'s account
/// does not exist the mail waits in that mailbox until the operator
/// creates it.
fn split_recipients(recipients: &[String], to: &Recipients<'_>) -> Split {
    let mut split = Split::default();
    for rcpt in recipients {
        let domain = recipient_domain(rcpt, to.hostname);
        if !(to.is_local)(&domain) {
            split.relay(rcpt.clone(), domain);
            continue;
        }
        for target in targets_of(rcpt, to) {
            let domain = recipient_domain(&target, to.hostname);
            if !(to.is_local)(&domain) {
                split.relay(target, domain);
            } else if !split.local.contains(&target) {
                split.local.push(target);
            }
        }
    }
    split
}

impl Split {
    /// `address` goes to the relay, once (its domain's case aside).
    fn relay(&mut self, address: String, domain: String) {
        let same = self.remote.entry(domain).or_default();
        let key = address_key(&address);
        if !same.iter().any(|a| address_key(a) == key) {
            same.push(address.clone());
            self.relayed.push(address);
        }
    }
}

/// Whether an account called `name` exists in `store`. A failed read
/// says yes: the mail then waits in the mailbox of the name as written,
/// rather than going to an alias or catch-all it was not meant for.
pub fn account_exists(store: &dyn ringpost_storage::Store, name: &str) -> bool {
    !matches!(ringpost_storage::users::get_user(store, name), Ok(None))
}

/// [`local_targets`], with `store`'s accounts; a good SRS address of ours
/// goes to the sender it stands for ([`crate::srs`]).
pub fn local_targets_in<'a>(
    config: &'a Config,
    store: &'a dyn ringpost_storage::Store,
) -> impl Fn(&str) -> Vec<String> + 'a {
    move |address| {
        if let Some(original) = crate::srs::original_sender(config, store, address) {
            return vec![original];
        }
        local_targets(config, address, &|name| account_exists(store, name))
    }
}

/// Where mail for the local `address` goes, lowercased: the account it
/// names; else the account without its detail (`alice+news@` is alice's,
/// `smtp.recipient_delimiter`); else its alias's targets, local or remote
/// (`smtp.aliases`, a domain's catch-all last; targets are not aliases
/// again); else the address itself (its mailbox waits for its account).
pub fn local_targets(
    config: &Config,
    address: &str,
    is_account: &dyn Fn(&str) -> bool,
) -> Vec<String> {
    let address = address.to_lowercase();
    if is_account(&address) {
        return vec![address];
    }
    let base = config.without_detail(&address);
    if let Some(base) = base.as_ref().filter(|base| is_account(base)) {
        return vec![base.clone()];
    }
    let aliased = config
        .smtp
        .aliases
        .get(&address)
        .or_else(|| base.as_ref().and_then(|b| config.smtp.aliases.get(b)))
        .map(Vec::as_slice)
        .or_else(|| config.alias_targets(&address));
    let Some(targets) = aliased else {
        return vec![address];
    };
    // A local target is an account, or one with a detail (never an alias
    // again: no loops); a remote one goes as the operator wrote it.
    targets
        .iter()
        .map(|target| {
            let local = domain_of(target).is_some_and(|d| config.is_local_domain(d));
            if !local {
                return target.clone();
            }
            let target = target.to_lowercase();
            match config.without_detail(&target) {
                Some(base) if !is_account(&target) && is_account(&base) => base,
                _ => target,
            }
        })
        .collect()
}

/// The queue domain of a recipient: its domain, lowercased; a bare
/// `postmaster` belongs to us (`hostname`).
pub fn recipient_domain(rcpt: &str, hostname: &str) -> String {
    domain_of(rcpt).unwrap_or(hostname).to_ascii_lowercase()
}

/// The domain part of an address, if it has one.
pub fn domain_of(address: &str) -> Option<&str> {
    address.rsplit_once('@').map(|(_, d)| d)
}

/// `Received:` header of an SMTP transaction.
fn received_header(
    tx: &Transaction,
    origin: &Origin<'_>,
    id: &MessageId,
    now_micros: u64,
) -> String {
    // RFC 3848 and RFC 6531: S for TLS, A for an authenticated client.
    let base = match (origin.lmtp, tx.smtputf8, tx.esmtp) {
        (true, true, _) => "UTF8LMTP",
        (true, false, _) => "LMTP",
        (false, true, _) => "UTF8SMTP",
        (false, false, true) => "ESMTP",
        (false, false, false) => "SMTP",
    };
    let suffix = match (tx.tls, tx.authenticated.is_some()) {
        (false, false) => "",
        (true, false) => "S",
        (false, true) => "A",
        (true, true) => "SA",
    };
    let only = match tx.recipients.as_slice() {
        [only] => Some(only.as_str()),
        _ => None,
    };
    let trace = Trace {
        from: &tx.helo,
        ip: origin.ip,
        by: origin.hostname,
        with: &format!("{base}{suffix}"),
        only_recipient: only,
    };
    trace.header(id, now_micros)
}

/// What a `Received:` field (RFC 5321 §4.4) says.
pub struct Trace<'a> {
    /// The name the client gave (HELO), or how it came (`http`).
    pub from: &'a str,
    /// The client's address.
    pub ip: IpAddr,
    /// Our name.
    pub by: &'a str,
    /// The protocol: `ESMTPSA` and friends (RFC 3848), `HTTP`.
    pub with: &'a str,
    /// The recipient, named only when there is one.
    pub only_recipient: Option<&'a str>,
}

impl Trace<'_> {
    /// The field for message `id`, folded, CRLF-terminated.
    pub fn header(&self, id: &MessageId, now_micros: u64) -> String {
        let date = chrono::DateTime::from_timestamp_micros(now_micros as i64)
            .unwrap_or_default()
            .to_rfc2822();
        let mut h = String::with_capacity(160);
        let _ = write!(
            h,
            "Received: from {from} ([{ip}])\r\n\tby {by} (ringpost) with {with} id {qid}",
            from = trace_name(self.from),
            ip = self.ip,
            by = self.by,
            with = self.with,
            qid = id.to_hex()
        );
        if let Some(only) = self.only_recipient {
            let _ = write!(h, "\r\n\tfor <{}>", sanitize(only));
        }
        let _ = write!(h, ";\r\n\t{date}\r\n");
        h
    }
}

/// The name a client gave, as a trace field may show it: what a domain
/// or an address literal holds, anything else `?` (no comment, clause or
/// 8-bit octet of a client's making in our own field: `EHLO evil) by
/// mx.google.com (` or a UTF-8 name would forge or 8-bit it).
fn trace_name(name: &str) -> String {
    name.chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' | '_' | ':' | '[' | ']' => c,
            _ => '?',
        })
        .collect()
}

/// Keep header text on one line and free of control characters.
fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// What a local recipient's account can take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalAccount {
    /// No such account.
    Missing,
    /// It takes mail.
    Open,
    /// It is at its quota.
    Full,
}

/// The metric label of a refusal [`check_recipient`] gave.
pub fn refusal_reason(reply: &Reply) -> &'static str {
    match reply.status {
        "5.1.1" => "unknown_user",
        "5.7.1" => "relay_denied",
        "4.2.2" => "mailbox_full",
        "4.7.1" => "rate_limited",
        "5.4.6" => "loop",
        _ => "store_error",
    }
}

/// Recipient policy: never an open relay, and no mail for nobody.
///
/// A recipient at one of our local domains must be an account
/// (`account`, given the address as written; the store lowercases it),
/// whoever the client is: an unknown one gets `550 5.1.1` at RCPT time, so
/// no bounce is ever owed for it, and one at its quota `452 4.2.2`.
/// `postmaster` at a local domain is always accepted, as is a bare
/// `<postmaster>` (RFC 5321 §4.5.1). A lookup that fails gets `451 4.3.0`:
/// the client tries again later.
///
/// An address that is no account may still be one with a detail
/// (`alice+news@`, `smtp.recipient_delimiter`) or an alias
/// (`smtp.aliases`, a domain's catch-all included): see [`local_targets`].
///
/// Other domains are accepted only from clients that may relay: those in
/// `relay_networks`, and authenticated ones.
pub fn check_recipient(
    address: &str,
    client_may_relay: bool,
    config: &Config,
    account: impl Fn(&str) -> Result<LocalAccount, StoreError>,
) -> Result<(), Reply> {
    let Some((local_part, domain)) = address.rsplit_once('@') else {
        // RFC 5321 §4.5.1: <postmaster> must always be accepted.
        return Ok(());
    };
    if config.is_local_domain(domain) {
        if local_part.eq_ignore_ascii_case("postmaster") {
            return Ok(());
        }
        let without_detail = config.without_detail(address);
        for name in std::iter::once(address).chain(without_detail.as_deref()) {
            match account(name) {
                Ok(LocalAccount::Open) => return Ok(()),
                Ok(LocalAccount::Full) => return Err(replies::MAILBOX_FULL),
                Ok(LocalAccount::Missing) => {}
                Err(_) => return Err(replies::STORAGE_FAILED),
            }
        }
        let targets = config.alias_targets(address).or_else(|| {
            without_detail
                .as_deref()
                .and_then(|base| config.alias_targets(base))
        });
        let Some(targets) = targets else {
            return Err(replies::NO_SUCH_USER);
        };
        // An alias whose every address is a local account over its quota
        // cannot take the message either (one that goes anywhere else can).
        let full = |target: &String| {
            domain_of(target).is_some_and(|d| config.is_local_domain(d))
                && matches!(account(target), Ok(LocalAccount::Full))
        };
        return match !targets.is_empty() && targets.iter().all(full) {
            true => Err(replies::MAILBOX_FULL),
            false => Ok(()),
        };
    }
    if client_may_relay {
        Ok(())
    } else {
        Err(replies::RELAYING_DENIED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_submission_gets_the_message_id_and_date_it_lacks() {
        let id = MessageId::new(1_700_000_000_000_000, 1, 7);
        let mut bare = b"From: a@x.test\r\nSubject: hi\r\n\r\nDate: not a field\r\n".to_vec();
        assert!(complete_submission(
            &mut bare,
            &id,
            "mx.test",
            1_700_000_000_000_000
        ));
        let text = String::from_utf8(bare).unwrap();
        assert!(
            text.starts_with(&format!(
                "Message-ID: <{}@mx.test>\r\nDate: Tue, 14 Nov 2023 22:13:20 +0000\r\nFrom: a@x.test"
            , id.to_hex())),
            "{text}"
        );
        // A field in any case, with space before its colon, counts; the
        // body's lines do not.
        let mut whole =
            b"message-id : <m@x>\r\nDATE: Mon, 1 Jan 2024 00:00:00 +0000\r\n\r\nb\r\n".to_vec();
        let before = whole.clone();
        assert!(!complete_submission(&mut whole, &id, "mx.test", 0));
        assert_eq!(whole, before);
        assert!(!has_field(b"A: b\r\n\r\nDate: x\r\n", "date"));
        // A first line that is folded would fold into ours: left alone.
        let mut folded = b" x\r\nFrom: a@x.test\r\n\r\nb\r\n".to_vec();
        assert!(!complete_submission(&mut folded, &id, "mx.test", 0));
        assert!(has_field(b"A: b\r\n folded: no\r\nDate: x\r\n\r\n", "date"));
    }

    #[test]
    fn a_hundred_hops_pass_one_more_is_a_loop() {
        let with = |n: usize, body: &str| {
            format!(
                "{}Subject: x\r\n\r\n{body}",
                "Received: from a by b\r\n".repeat(n)
            )
        };
        assert!(!too_many_hops(with(MAX_HOPS, "").as_bytes()));
        assert!(too_many_hops(with(MAX_HOPS + 1, "").as_bytes()));
        assert!(too_many_hops("RECEIVED: x\n".repeat(101).as_bytes()));
        // Only the header counts.
        let quoted = "Received: quoted\r\n".repeat(200);
        assert!(!too_many_hops(with(1, &quoted).as_bytes()));
    }

    /// A client on loopback to `mx.test`, whose local domains `is_local` says.
    fn client<'a>(
        is_local: &'a dyn Fn(&str) -> bool,
        local_targets: Option<LocalTargets<'a>>,
    ) -> Origin<'a> {
        Origin {
            pool: None,
            local_targets,
            ip: "127.0.0.1".parse().unwrap(),
            hostname: "mx.test",
            is_local,
            lmtp: false,
        }
    }

    fn tx(rcpts: &[&str]) -> Transaction {
        Transaction {
            helo: "client.example".into(),
            esmtp: true,
            mail_from: "a@example.org".into(),
            recipients: rcpts.iter().map(|s| s.to_string()).collect(),
            data: b"Subject: hi\r\n\r\nbody\r\n".to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn an_address_given_twice_keeps_the_first_dsn_request_made_for_it() {
        use ringpost_protocols::smtp::dsn_request::{Notify, RecipientRequest};
        let origin = client(&|_| false, None);
        let mut given = tx(&["x@far.test", "x@FAR.test", "y@far.test"]);
        let success = RecipientRequest {
            notify: Notify::parse("SUCCESS"),
            orcpt: Some("rfc822;x@far.test".into()),
        };
        given.recipient_requests = vec![
            RecipientRequest::default(),
            success.clone(),
            RecipientRequest::default(),
        ];
        let m = new_message(MessageId::default(), &given, &origin, 1_000, b"");
        assert_eq!(m.envelope.recipients, vec!["x@far.test", "y@far.test"]);
        let asked = &m.envelope.dsn.recipients;
        assert_eq!(asked.len(), 1, "{asked:?}");
        assert_eq!(asked[0].recipient, "x@far.test");
        assert_eq!(asked[0].notify, success.notify.map(Notify::bits));
        assert_eq!(asked[0].orcpt, success.orcpt);
    }

    #[test]
    fn an_aliases_remote_addresses_carry_its_dsn_request_on() {
        use ringpost_protocols::smtp::dsn_request::{Notify, RecipientRequest};
        let is_local = |d: &str| d == "ours.test";
        let resolve = |address: &str| match address {
            "fwd@ours.test" => vec!["Bob+x@far.test".into()],
            "team@ours.test" => vec!["ann@ours.test".into(), "c@far.test".into()],
            other => vec![other.to_owned()],
        };
        let origin = client(&is_local, Some(&resolve));
        let mut given = tx(&["fwd@ours.test", "team@ours.test", "c@far.test"]);
        let all = RecipientRequest {
            notify: Notify::parse("SUCCESS,FAILURE"),
            orcpt: None,
        };
        let own = RecipientRequest {
            notify: Notify::parse("DELAY"),
            orcpt: Some("rfc822;c@far.test".into()),
        };
        given.recipient_requests = vec![all.clone(), all, own.clone()];
        let m = new_message(MessageId::default(), &given, &origin, 1_000, b"");
        assert_eq!(m.envelope.recipients, vec!["Bob+x@far.test", "c@far.test"]);
        let asked = &m.envelope.dsn.recipients;
        assert_eq!(asked.len(), 2, "{asked:?}");
        // Forwarded: the same request, the alias as the original address.
        assert_eq!(asked[0].recipient, "Bob+x@far.test");
        assert_eq!(
            asked[0].notify,
            Notify::parse("SUCCESS,FAILURE").map(Notify::bits)
        );
        assert_eq!(asked[0].orcpt.as_deref(), Some("rfc822;fwd@ours.test"));
        // Asked for itself too: its own request wins over the alias's.
        assert_eq!(asked[1].recipient, "c@far.test");
        assert_eq!(asked[1].notify, own.notify.map(Notify::bits));
        assert_eq!(asked[1].orcpt, own.orcpt);

        // Given only through an alias of several: no success asked of it.
        let mut given = tx(&["team@ours.test"]);
        given.recipient_requests = vec![RecipientRequest {
            notify: Notify::parse("SUCCESS,FAILURE"),
            orcpt: None,
        }];
        let m = new_message(MessageId::default(), &given, &origin, 1_000, b"");
        let asked = &m.envelope.dsn.recipients;
        assert_eq!(asked[0].recipient, "c@far.test");
        assert_eq!(asked[0].notify, Notify::parse("FAILURE").map(Notify::bits));
        assert_eq!(asked[0].orcpt.as_deref(), Some("rfc822;team@ours.test"));
    }

    #[test]
    fn an_address_literal_in_two_spellings_is_one_recipient() {
        let origin = client(&|_| false, None);
        let given = tx(&[
            "a@[127.0.0.1]",
            "a@[127.000.000.001]",
            "b@[IPv6:::1]",
            "b@[ipv6:0:0:0:0:0:0:0:1]",
        ]);
        let m = new_message(MessageId::default(), &given, &origin, 1_000, b"");
        assert_eq!(m.envelope.recipients, ["a@[127.0.0.1]", "b@[IPv6:::1]"]);
    }

    #[test]
    fn a_client_cannot_write_clauses_or_8bit_into_our_trace_field() {
        let mut given = tx(&["x@far.test"]);
        for (helo, shown) in [
            (
                "evil) by mx.google.com (Postfix",
                "evil??by?mx.google.com??Postfix",
            ),
            ("x;y=z", "x?y?z"),
            ("\u{fc}.example", "?.example"),
            ("[IPv6:::1]", "[IPv6:::1]"),
        ] {
            given.helo = helo.into();
            let origin = client(&|_| false, None);
            let m = new_message(MessageId::default(), &given, &origin, 1_000, b"");
            let text = String::from_utf8(m.body).unwrap();
            assert!(
                text.starts_with(&format!("Received: from {shown} ([127.0.0.1])")),
                "{text}"
            );
        }
    }

    #[test]
    fn one_queue_entry_per_domain_and_trace_header_first() {
        let origin = client(&|_| false, None);
        let mut ids = IdGenerator::new(3);
        let id = ids.next(1_700_000_000_000_000);
        let m = new_message(
            id,
            &tx(&["x@B.test", "y@b.test", "z@c.test"]),
            &origin,
            1_700_000_000_000_000,
            b"",
        );
        let domains: Vec<_> = m
            .queue
            .iter()
            .map(|q| (q.domain.as_str(), q.recipients.len()))
            .collect();
        assert_eq!(domains, vec![("b.test", 2), ("c.test", 1)]);
        let text = String::from_utf8(m.body.clone()).unwrap();
        assert!(text.starts_with(
            "Received: from client.example ([127.0.0.1])\r\n\tby mx.test (ringpost) with ESMTP id "
        ));
        assert!(
            text.ends_with("+0000\r\nSubject: hi\r\n\r\nbody\r\n"),
            "{text}"
        );
        assert!(
            !text.contains("\tfor <"),
            "several recipients are not named"
        );
        assert_eq!(m.envelope.size, m.body.len() as u64);
        assert_eq!(m.queue[0].due, 1_700_000_000_000);
    }

    /// Forwarded recipients leave with another sender: in place when they
    /// are all the relay has, else in a copy that takes their queue
    /// entries and DSN requests with it.
    #[test]
    fn split_off_moves_recipients_to_a_copy_or_rewrites_in_place() {
        let is_local = |d: &str| d == "ours.test";
        let to = Recipients {
            hostname: "mx.test",
            is_local: &is_local,
            pool: None,
            local_targets: None,
        };
        let recipients: Vec<String> = ["a@ours.test", "b@far.test", "c@far.test", "d@else.test"]
            .map(str::to_owned)
            .to_vec();
        let id = MessageId::new(1_700_000_000_000_000, 1, 1);
        let mut message = stored(id, b"x\r\n".to_vec(), "s@src.test", &recipients, &to, 1);
        message.envelope.dsn.recipients = vec![RecipientDsn {
            recipient: "c@far.test".into(),
            notify: Some(1),
            orcpt: None,
        }];
        let copy_id = MessageId::new(1_700_000_000_000_000, 1, 2);
        let moved = ["c@FAR.test".to_owned(), "d@else.test".to_owned()];
        let copy = split_off(&mut message, &moved, || copy_id, "SRS0=x@mx.test").unwrap();
        assert_eq!(message.envelope.sender, "s@src.test");
        assert_eq!(message.envelope.recipients, ["b@far.test"]);
        assert!(message.envelope.dsn.recipients.is_empty());
        assert_eq!(message.mailboxes, ["a@ours.test"]);
        let domains = |m: &NewMessage| -> Vec<(String, Vec<String>)> {
            m.queue
                .iter()
                .map(|e| (e.domain.clone(), e.recipients.clone()))
                .collect()
        };
        assert_eq!(
            domains(&message),
            [("far.test".into(), vec!["b@far.test".into()])]
        );
        assert_eq!(copy.id, copy_id);
        assert!(copy.queue.iter().all(|e| e.id == copy_id));
        assert_eq!(copy.envelope.sender, "SRS0=x@mx.test");
        assert_eq!(copy.envelope.recipients, ["c@far.test", "d@else.test"]);
        assert_eq!(copy.envelope.dsn.recipients[0].recipient, "c@far.test");
        assert!(copy.mailboxes.is_empty() && copy.body == message.body);
        let mut copy_domains = domains(&copy);
        copy_domains.sort();
        assert_eq!(
            copy_domains,
            [
                ("else.test".into(), vec!["d@else.test".into()]),
                ("far.test".into(), vec!["c@far.test".into()])
            ]
        );
        // Every relayed recipient moved: the envelope changes, no copy.
        let mut all = stored(id, b"x\r\n".to_vec(), "s@src.test", &recipients, &to, 1);
        let moved = ["b@far.test", "c@far.test", "d@else.test"].map(str::to_owned);
        assert!(split_off(&mut all, &moved, || copy_id, "SRS0=y@mx.test").is_none());
        assert_eq!(all.envelope.sender, "SRS0=y@mx.test");
        assert_eq!(all.queue.len(), 2);
    }

    #[test]
    fn single_recipient_is_named_and_ids_are_unique() {
        let origin = Origin {
            ip: "::1".parse().unwrap(),
            ..client(&|d| d.eq_ignore_ascii_case("mx.test"), None)
        };
        let mut ids = IdGenerator::new(0);
        let (a, b) = (ids.next(5), ids.next(5));
        assert!(a < b);
        let m = new_message(
            a,
            &tx(&["postmaster"]),
            &origin,
            5,
            b"DKIM-Signature: x\r\n",
        );
        // Local delivery: the envelope sender on top (RFC 5321 §4.4).
        let sender = format!("Return-Path: <{}>\r\n", tx(&["postmaster"]).mail_from);
        let rest = m
            .body
            .strip_prefix(sender.as_bytes())
            .expect("Return-Path first");
        assert!(rest.starts_with(b"DKIM-Signature: x\r\nReceived: "));
        let mut relayed = m.body.clone();
        without_return_path(&mut relayed);
        assert_eq!(relayed, rest, "the relay sends it without");
        assert!(String::from_utf8_lossy(&m.body).contains("\tfor <postmaster>;"));
        assert!(m.queue.is_empty());
        assert_eq!(m.mailboxes, vec!["postmaster@mx.test"]);
    }

    #[test]
    fn local_recipients_get_mailboxes_and_the_rest_the_queue() {
        let origin = client(&|d| d.eq_ignore_ascii_case("ours.test"), None);
        let m = new_message(
            MessageId::default(),
            &tx(&[
                "Ann@Ours.test",
                "x@far.test",
                "ann@ours.test",
                "bo@OURS.TEST",
                "y@far.test",
                // Given twice: sent once (the domain's case aside; the
                // local part's is the remote server's to judge).
                "x@FAR.test",
                "Y@far.test",
            ]),
            &origin,
            1_000,
            b"",
        );
        assert_eq!(m.mailboxes, vec!["ann@ours.test", "bo@ours.test"]);
        assert_eq!(m.queue.len(), 1);
        assert_eq!(
            m.queue[0].recipients,
            vec!["x@far.test", "y@far.test", "Y@far.test"]
        );
        assert_eq!(
            m.envelope.recipients,
            vec!["x@far.test", "y@far.test", "Y@far.test"]
        );
        let local_only = new_message(
            MessageId::default(),
            &tx(&["ann@ours.test"]),
            &origin,
            1_000,
            b"",
        );
        assert!(local_only.queue.is_empty() && local_only.envelope.recipients.is_empty());
    }

    /// A configuration whose local domain is ours.test.
    fn ours() -> Config {
        let mut config = Config::default();
        config.smtp.local_domains = vec!["ours.test".into()];
        config
    }

    #[test]
    fn relay_policy() {
        let local = ours();
        let nobody = |_: &str| -> Result<LocalAccount, StoreError> { panic!("no lookup expected") };
        assert!(check_recipient("postmaster", false, &local, nobody).is_ok());
        assert!(check_recipient("a@else.test", true, &local, nobody).is_ok());
        let err = check_recipient("a@else.test", false, &local, nobody).unwrap_err();
        assert_eq!((err.code, err.status), (550, "5.7.1"));
    }

    #[test]
    fn local_recipients_must_be_accounts() {
        let local = ours();
        let known = |name: &str| {
            Ok(match name.to_ascii_lowercase().as_str() {
                "alice@ours.test" => LocalAccount::Open,
                "full@ours.test" => LocalAccount::Full,
                _ => LocalAccount::Missing,
            })
        };
        for may_relay in [false, true] {
            assert!(check_recipient("alice@ours.test", may_relay, &local, known).is_ok());
            assert!(check_recipient("ALICE@Ours.Test", may_relay, &local, known).is_ok());
            let err = check_recipient("bob@ours.test", may_relay, &local, known).unwrap_err();
            assert_eq!((err.code, err.status), (550, "5.1.1"), "relay: {may_relay}");
            let err = check_recipient("full@ours.test", may_relay, &local, known).unwrap_err();
            assert_eq!((err.code, err.status), (452, "4.2.2"), "relay: {may_relay}");
        }
        // postmaster at a local domain needs no account.
        let nobody = |_: &str| -> Result<LocalAccount, StoreError> { panic!("no lookup expected") };
        assert!(check_recipient("PostMaster@ours.test", false, &local, nobody).is_ok());
        // A failed lookup is temporary.
        let broken = |_: &str| Err(StoreError::Engine("disk on fire".into()));
        let err = check_recipient("alice@ours.test", false, &local, broken).unwrap_err();
        assert_eq!((err.code, err.status), (451, "4.3.0"));
    }

    #[test]
    fn subaddresses_and_aliases_are_recipients_and_go_where_they_say() {
        let mut config = ours();
        config.smtp.aliases = BTreeMap::from([
            (
                "info@ours.test".to_owned(),
                vec!["alice@ours.test".to_owned(), "bob@Far.test".to_owned()],
            ),
            ("@ours.test".to_owned(), vec!["alice@ours.test".to_owned()]),
        ]);
        config.validate().unwrap();
        let known = |name: &str| {
            Ok(match name.to_ascii_lowercase().as_str() {
                "alice@ours.test" => LocalAccount::Open,
                "full@ours.test" => LocalAccount::Full,
                _ => LocalAccount::Missing,
            })
        };
        for address in [
            "alice+news@ours.test",
            "info@ours.test",
            "Info+x@ours.test",
            "anyone@ours.test",
        ] {
            assert!(
                check_recipient(address, false, &config, known).is_ok(),
                "{address}"
            );
        }
        let err = check_recipient("full+x@ours.test", false, &config, known).unwrap_err();
        assert_eq!(err.code, 452, "the account's quota, with a detail too");
        // An alias of full accounts only is full; one with another way is not.
        config
            .smtp
            .aliases
            .insert("desk@ours.test".into(), vec!["full@ours.test".into()]);
        let err = check_recipient("desk@ours.test", false, &config, known).unwrap_err();
        assert_eq!(err.code, 452, "an alias of a full account");
        config.smtp.aliases.insert(
            "desk@ours.test".into(),
            vec!["full@ours.test".into(), "alice@ours.test".into()],
        );
        assert!(check_recipient("desk@ours.test", false, &config, known).is_ok());
        // Without the catch-all, an unknown address is still unknown.
        config.smtp.aliases.remove("@ours.test");
        let err = check_recipient("anyone@ours.test", false, &config, known).unwrap_err();
        assert_eq!(err.code, 550);
        config.smtp.recipient_delimiter = String::new();
        let err = check_recipient("alice+news@ours.test", false, &config, known).unwrap_err();
        assert_eq!(err.code, 550, "no subaddresses without a delimiter");
        config.smtp.recipient_delimiter = "+".into();

        let is_account = |name: &str| name == "alice@ours.test";
        assert_eq!(
            local_targets(&config, "Alice+News@ours.test", &is_account),
            ["alice@ours.test"]
        );
        assert_eq!(
            local_targets(&config, "info@ours.test", &is_account),
            ["alice@ours.test", "bob@Far.test"]
        );
        assert_eq!(
            local_targets(&config, "ghost@ours.test", &is_account),
            ["ghost@ours.test"]
        );

        // An alias's local targets are accounts, with a detail too (never
        // aliases again); its remote ones go as written.
        let mut two = config.clone();
        two.smtp.aliases = BTreeMap::from([(
            "desk@ours.test".to_owned(),
            vec![
                "alice+desk@ours.test".to_owned(),
                "info@ours.test".to_owned(),
                "carol@Far.test".to_owned(),
            ],
        )]);
        assert_eq!(
            local_targets(&two, "desk@ours.test", &is_account),
            ["alice@ours.test", "info@ours.test", "carol@Far.test"]
        );
        // A bare postmaster is postmaster@hostname, aliased like any.
        two.smtp
            .aliases
            .insert("postmaster@mx.test".into(), vec!["alice@ours.test".into()]);
        let resolve = |a: &str| local_targets(&two, a, &is_account);
        let is_local = |d: &str| d == "mx.test" || two.is_local_domain(d);
        let origin = client(&is_local, Some(&resolve));
        let m = new_message(
            MessageId::default(),
            &tx(&["postmaster", "carol@far.test", "desk@ours.test"]),
            &origin,
            1_000,
            b"",
        );
        assert_eq!(m.mailboxes, ["alice@ours.test", "info@ours.test"]);
        assert_eq!(
            m.envelope.recipients,
            ["carol@far.test"],
            "once, the domain's case aside"
        );

        // In a message: alice once, bob relayed, in the client's order.
        let origin_config = config.clone();
        let resolve = |a: &str| local_targets(&origin_config, a, &is_account);
        let is_local = |d: &str| origin_config.is_local_domain(d);
        let origin = client(&is_local, Some(&resolve));
        let m = new_message(
            MessageId::default(),
            &tx(&[
                "x@else.test",
                "info@ours.test",
                "alice+a@ours.test",
                "bob@far.test",
            ]),
            &origin,
            1_000,
            b"",
        );
        assert_eq!(m.mailboxes, ["alice@ours.test"]);
        assert_eq!(m.envelope.recipients, ["x@else.test", "bob@Far.test"]);
        assert_eq!(m.queue.len(), 2);
    }
}
