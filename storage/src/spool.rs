//! Typed spool records: message ids, envelopes, queue entries.
//!
//! This module is the only place that knows how these records are laid out in
//! the store, so SMTP, the delivery scheduler and the tools agree on them.
//!
//! # Keys
//! - `blobs`, `envelopes`: the 16-byte [`MessageId`]. Ids start with the
//!   accept time, so both families are in arrival order.
//! - `queue`: due time (unix millis, `u64` big-endian) ‖ message id (16) ‖
//!   domain (UTF-8). Big-endian makes byte order equal numeric order, so a
//!   scan from the start of the family yields entries in due order and
//!   [`due_queue_entries`] is one range scan.
//!
//! # Values
//! Values use the store's small private binary codec (the `codec` module,
//! shared with [`crate::users`]): a format version byte, then the fields in
//! order. Integers are LEB128 varints; strings and lists carry a varint
//! length first. Decoding checks every length against the bytes left and
//! never panics: bad input becomes [`StoreError::Corrupt`].
//!
//! - envelope: version ‖ sender ‖ received_at ‖ size ‖ recipient count ‖
//!   recipients ‖ [DSN request: envid ("" for none) ‖ ret ‖ count ‖ count ×
//!   (recipient ‖ notify ‖ orcpt ("" for none))], the last part only when
//!   the sender used DSN's parameters
//! - queue entry (the key holds due, id and domain): version ‖ recipient count ‖
//!   recipients ‖ attempts ‖ has-error flag (0/1) ‖ [last error]
//!
//! # Changing the queue
//! A scheduler changes an entry by rewriting it in one batch: [`reschedule`]
//! deletes the old key and puts the new one (new due time, fewer recipients,
//! more attempts); [`delete_queue_entry`] drops a finished one and
//! [`delete_message`] the body and envelope once no entry needs them.

use crate::codec::{put_str, put_strs, put_varint, Reader, FORMAT_V1};
use crate::{Family, Pinned, Store, StoreError, WriteBatch};
use std::fmt;

/// Bytes of a queue key before the domain: due (8) ‖ id (16).
const QUEUE_KEY_PREFIX: usize = 8 + 16;

/// 16-byte, time-ordered message id: unix micros (8, big-endian) ‖ shard (2) ‖ per-shard sequence (6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MessageId(pub [u8; 16]);

impl MessageId {
    /// Build an id. `seq` is truncated to 48 bits.
    pub fn new(unix_micros: u64, shard: u16, seq: u64) -> Self {
        let mut id = [0; 16];
        id[..8].copy_from_slice(&unix_micros.to_be_bytes());
        id[8..10].copy_from_slice(&shard.to_be_bytes());
        // The low 6 bytes of the big-endian sequence are its low 48 bits.
        id[10..].copy_from_slice(&seq.to_be_bytes()[2..]);
        MessageId(id)
    }

    /// The id stored as a key: exactly 16 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(MessageId)
    }

    /// When the message was accepted (unix micros).
    pub fn unix_micros(&self) -> u64 {
        u64::from_be_bytes(self.0[..8].try_into().expect("8 bytes"))
    }

    /// The shard that accepted it.
    pub fn shard(&self) -> u16 {
        u16::from_be_bytes([self.0[8], self.0[9]])
    }

    /// Its per-shard sequence number (48 bits).
    pub fn seq(&self) -> u64 {
        let mut seq = [0; 8];
        seq[2..].copy_from_slice(&self.0[10..]);
        u64::from_be_bytes(seq)
    }

    /// 32 lowercase hex characters (the queue id shown to clients and operators).
    pub fn to_hex(&self) -> String {
        self.to_string()
    }

    /// Parse 32 hex characters.
    pub fn from_hex(s: &str) -> Option<Self> {
        let s = s.as_bytes();
        if s.len() != 32 {
            return None;
        }
        let mut id = [0; 16];
        for (byte, pair) in id.iter_mut().zip(s.chunks_exact(2)) {
            *byte = (hex_digit(pair[0])? << 4) | hex_digit(pair[1])?;
        }
        Some(MessageId(id))
    }
}

/// Value of one hex digit (either case).
fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

impl fmt::Display for MessageId {
    /// The hex form, as [`MessageId::to_hex`]: built in place and written
    /// once (ids are in every log line of the mail flow).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut hex = [0u8; 32];
        for (pair, byte) in hex.chunks_exact_mut(2).zip(self.0) {
            pair[0] = DIGITS[usize::from(byte >> 4)];
            pair[1] = DIGITS[usize::from(byte & 0xf)];
        }
        f.write_str(std::str::from_utf8(&hex).expect("hex digits are ASCII"))
    }
}

/// Who sent a message to whom, and how big it is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Envelope {
    /// Reverse path; empty for the null sender.
    pub sender: String,
    /// Unix micros when accepted.
    pub received_at: u64,
    /// Stored body size in bytes (trace header included).
    pub size: u64,
    /// Recipients still to be handled.
    pub recipients: Vec<String>,
    /// What the sender asked of DSNs (RFC 3461).
    pub dsn: DsnRequest,
}

/// What a sender asked delivery status notifications to be (RFC 3461's
/// parameters, as the SMTP layer checked them), kept with the envelope so
/// the relay can honour them and pass them on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DsnRequest {
    /// ENVID=, xtext as given.
    pub envid: Option<String>,
    /// RET=: 0 not given, 1 FULL, 2 HDRS.
    pub ret: u8,
    /// The recipients that gave NOTIFY= or ORCPT=.
    pub recipients: Vec<RecipientDsn>,
}

/// One recipient's NOTIFY= and ORCPT=.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RecipientDsn {
    /// The address, as in the envelope's recipients.
    pub recipient: String,
    /// NOTIFY='s conditions as bits (the SMTP layer's), if given.
    pub notify: Option<u8>,
    /// ORCPT=, as given.
    pub orcpt: Option<String>,
}

impl DsnRequest {
    /// Whether the sender gave none of the parameters.
    pub fn is_empty(&self) -> bool {
        self.envid.is_none() && self.ret == 0 && self.recipients.is_empty()
    }

    /// What was asked for `recipient`, if anything (the first request for
    /// an address given twice).
    pub fn recipient(&self, recipient: &str) -> Option<&RecipientDsn> {
        self.recipients.iter().find(|r| r.recipient == recipient)
    }

    /// Every request by address, for looking many up (as
    /// [`DsnRequest::recipient`]: the first for an address given twice).
    pub fn by_recipient(&self) -> std::collections::HashMap<&str, &RecipientDsn> {
        let mut map = std::collections::HashMap::with_capacity(self.recipients.len());
        for r in &self.recipients {
            map.entry(r.recipient.as_str()).or_insert(r);
        }
        map
    }

    fn encode(&self, out: &mut Vec<u8>) {
        put_str(out, self.envid.as_deref().unwrap_or(""));
        put_varint(out, u64::from(self.ret));
        put_varint(out, self.recipients.len() as u64);
        for r in &self.recipients {
            put_str(out, &r.recipient);
            // 0 for none, else the bits above a marker.
            put_varint(out, r.notify.map_or(0, |n| 0x100 | u64::from(n)));
            put_str(out, r.orcpt.as_deref().unwrap_or(""));
        }
    }

    fn decode(r: &mut Reader<'_>) -> Result<DsnRequest, StoreError> {
        let some = |s: String| (!s.is_empty()).then_some(s);
        let envid = some(r.string()?);
        let ret = u8::try_from(r.varint()?).map_err(|_| r.corrupt("bad RET"))?;
        let count = r.len()?;
        let mut recipients = Vec::with_capacity(count.min(1024));
        for _ in 0..count {
            let recipient = r.string()?;
            let notify = match r.varint()? {
                0 => None,
                n => Some(u8::try_from(n & 0xff).unwrap_or(0)),
            };
            let orcpt = some(r.string()?);
            recipients.push(RecipientDsn {
                recipient,
                notify,
                orcpt,
            });
        }
        Ok(DsnRequest {
            envid,
            ret,
            recipients,
        })
    }
}

impl Envelope {
    /// The stored value (see the module docs for the layout).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            16 + self.sender.len() + self.recipients.iter().map(|r| r.len() + 2).sum::<usize>(),
        );
        out.push(FORMAT_V1);
        put_str(&mut out, &self.sender);
        put_varint(&mut out, self.received_at);
        put_varint(&mut out, self.size);
        put_strs(&mut out, &self.recipients);
        if !self.dsn.is_empty() {
            self.dsn.encode(&mut out);
        }
        out
    }

    /// Read a stored value back.
    pub fn decode(value: &[u8]) -> Result<Envelope, StoreError> {
        let mut r = Reader::new(Family::Envelopes, value);
        r.version()?;
        let mut envelope = Envelope {
            sender: r.string()?,
            received_at: r.varint()?,
            size: r.varint()?,
            recipients: r.strings()?,
            dsn: DsnRequest::default(),
        };
        if !r.at_end() {
            envelope.dsn = DsnRequest::decode(&mut r)?;
        }
        r.finish()?;
        Ok(envelope)
    }
}

/// The due time of a held entry (`ringpost queue hold`): never due, and
/// last in the due-time index, so the scheduler neither loads nor delivers
/// it until it is released (a new due time), across restarts.
pub const HELD: u64 = u64::MAX;

/// One queue entry: the recipients of one message at one destination domain.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct QueueEntry {
    /// Unix millis when it is due.
    pub due: u64,
    /// The message.
    pub id: MessageId,
    /// Destination domain (lowercase).
    pub domain: String,
    /// Recipients at that domain.
    pub recipients: Vec<String>,
    /// Attempts made so far.
    pub attempts: u32,
    /// Last temporary error, if any.
    pub last_error: Option<String>,
    /// The egress pool its connections come from (`relay.pools`), chosen
    /// when the message was accepted; None: the default.
    pub pool: Option<String>,
}

impl QueueEntry {
    /// Whether it is held: kept, never delivered, until released.
    pub fn is_held(&self) -> bool {
        self.due == HELD
    }

    /// Its key in the `queue` family: due ‖ id ‖ domain.
    pub fn key(&self) -> Vec<u8> {
        queue_key(self.due, &self.id, &self.domain)
    }

    /// Its value in the `queue` family (what the key does not hold).
    pub fn encode_value(&self) -> Vec<u8> {
        let error_len = self.last_error.as_ref().map_or(0, String::len);
        let mut out = Vec::with_capacity(
            16 + error_len + self.recipients.iter().map(|r| r.len() + 2).sum::<usize>(),
        );
        out.push(FORMAT_V1);
        put_strs(&mut out, &self.recipients);
        put_varint(&mut out, u64::from(self.attempts));
        match &self.last_error {
            None => out.push(0),
            Some(error) => {
                out.push(1);
                put_str(&mut out, error);
            }
        }
        // Added later: absent (not even the flag) when there is none, so
        // entries without a pool read the same in every version.
        if let Some(pool) = &self.pool {
            out.push(1);
            put_str(&mut out, pool);
        }
        out
    }

    /// Rebuild an entry from its key and value.
    pub fn decode(key: &[u8], value: &[u8]) -> Result<QueueEntry, StoreError> {
        let corrupt = |detail: &str| StoreError::Corrupt {
            family: Family::Queue.name(),
            detail: detail.into(),
        };
        if key.len() < QUEUE_KEY_PREFIX {
            return Err(corrupt("queue key shorter than due and id"));
        }
        let (due, rest) = key.split_at(8);
        let (id, domain) = rest.split_at(16);
        let due = u64::from_be_bytes(due.try_into().expect("8 bytes"));
        let id = MessageId::from_bytes(id).expect("16 bytes");
        let domain = std::str::from_utf8(domain)
            .map_err(|_| corrupt("queue key domain is not UTF-8"))?
            .to_owned();

        let mut r = Reader::new(Family::Queue, value);
        r.version()?;
        let recipients = r.strings()?;
        let attempts = u32::try_from(r.varint()?).map_err(|_| corrupt("attempts exceed u32"))?;
        let last_error = match r.byte()? {
            0 => None,
            1 => Some(r.string()?),
            _ => return Err(corrupt("bad last-error flag")),
        };
        let pool = match r.at_end() {
            true => None,
            false => match r.byte()? {
                1 => Some(r.string()?),
                _ => return Err(corrupt("bad pool flag")),
            },
        };
        r.finish()?;
        Ok(QueueEntry {
            due,
            id,
            domain,
            recipients,
            attempts,
            last_error,
            pool,
        })
    }
}

/// The `queue` key for `(due, id, domain)`.
pub fn queue_key(due: u64, id: &MessageId, domain: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(QUEUE_KEY_PREFIX + domain.len());
    key.extend_from_slice(&due.to_be_bytes());
    key.extend_from_slice(&id.0);
    key.extend_from_slice(domain.as_bytes());
    key
}

/// Add `entry` to `batch`.
pub fn put_queue_entry(batch: &mut WriteBatch, entry: &QueueEntry) {
    batch.put(Family::Queue, entry.key(), entry.encode_value());
}

/// Remove `entry` (found by its due time, id and domain) in `batch`.
pub fn delete_queue_entry(batch: &mut WriteBatch, entry: &QueueEntry) {
    batch.delete(Family::Queue, entry.key());
}

/// Replace `old` by `new` in `batch`: a new due time, fewer recipients, one
/// more attempt. Both changes land in the same commit, so a crash never leaves
/// the entry twice or not at all.
pub fn reschedule(batch: &mut WriteBatch, old: &QueueEntry, new: &QueueEntry) {
    let old_key = old.key();
    let new_key = new.key();
    if old_key != new_key {
        batch.delete(Family::Queue, old_key);
    }
    batch.put(Family::Queue, new_key, new.encode_value());
}

/// Store (or replace) the envelope of `id` in `batch`, e.g. with fewer recipients left.
pub fn put_envelope(batch: &mut WriteBatch, id: &MessageId, envelope: &Envelope) {
    batch.put(Family::Envelopes, id.0.to_vec(), envelope.encode());
}

/// The relay is done with `id`: its envelope goes in `batch`, and its body
/// too unless a mailbox row still points at it (the commit writer decides,
/// see [`crate::mailbox`]). Its queue entries are the caller's.
pub fn delete_message(batch: &mut WriteBatch, id: &MessageId) {
    batch.change(crate::mailbox::Change::ReleaseSpooled { message: *id });
}

/// Counts reported by `ringpost spool stats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SpoolStats {
    /// Stored messages (envelopes).
    pub messages: u64,
    /// Sum of their sizes.
    pub bytes: u64,
    /// Queue entries.
    pub queue_entries: u64,
}

/// A freshly accepted message: everything written in its one commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    /// Its id.
    pub id: MessageId,
    /// Full stored bytes (trace header included).
    pub body: Vec<u8>,
    /// Its envelope; its recipients are those the relay delivers.
    pub envelope: Envelope,
    /// One entry per remote recipient domain.
    pub queue: Vec<QueueEntry>,
    /// Local accounts whose INBOX gets the message, each once.
    pub mailboxes: Vec<String>,
    /// Local accounts whose Junk mailbox gets it instead (mail whose
    /// domain's DMARC policy says quarantine), each once.
    pub junk: Vec<String>,
    /// Other copies for local accounts: where their Sieve filters put it,
    /// with the flags the filter gave.
    pub filed: Vec<Filing>,
}

/// A copy for a mailbox that a user's filter chose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filing {
    /// The account.
    pub user: String,
    /// Its mailbox (which must exist when the batch commits).
    pub mailbox: String,
    /// The copy's flags.
    pub flags: crate::mailbox::Flags,
}

impl NewMessage {
    /// Whether no mailbox and no queue entry gets it (every copy was
    /// discarded): its body then has nothing to be kept for.
    pub fn goes_nowhere(&self) -> bool {
        self.queue.is_empty()
            && self.mailboxes.is_empty()
            && self.junk.is_empty()
            && self.filed.is_empty()
    }

    /// The batch that stores the body once, and with it the envelope and
    /// queue entries (when the relay has recipients) and one INBOX (or
    /// Junk) row per local account.
    pub fn into_batch(self) -> WriteBatch {
        let mut batch = WriteBatch::new();
        let size = self.body.len() as u64;
        // The body moves into the batch: it is the one big value.
        batch.put(Family::Blobs, self.id.0.to_vec(), self.body);
        if !self.queue.is_empty() {
            put_envelope(&mut batch, &self.id, &self.envelope);
        }
        for entry in &self.queue {
            put_queue_entry(&mut batch, entry);
        }
        let inbox = self
            .mailboxes
            .into_iter()
            .map(|user| (user, crate::mailbox::INBOX));
        let junk = self
            .junk
            .into_iter()
            .map(|user| (user, crate::mailbox::JUNK));
        let filed = self.filed.into_iter().map(|f| (f.user, f.mailbox, f.flags));
        let plain = inbox
            .chain(junk)
            .map(|(user, mailbox)| (user, mailbox.to_owned(), Default::default()));
        for (user, mailbox, flags) in plain.chain(filed) {
            batch.change(crate::mailbox::Change::Append {
                user,
                mailbox,
                row: crate::mailbox::MailboxRow {
                    message: self.id,
                    internal_date: self.envelope.received_at,
                    size,
                    flags,
                    ..Default::default()
                },
            });
        }
        batch
    }
}

/// Read a message's stored bytes.
pub fn read_body(store: &dyn Store, id: &MessageId) -> Result<Option<Vec<u8>>, StoreError> {
    store.get(Family::Blobs, &id.0)
}

/// A message's stored bytes, lent by the engine without a copy (`None` if
/// it is gone): for writing straight to a socket.
pub fn read_body_pinned<'a>(
    store: &'a dyn Store,
    id: &MessageId,
) -> Result<Option<Pinned<'a>>, StoreError> {
    store.get_pinned(Family::Blobs, &id.0)
}

/// What memory alone can tell of a stored message ([`read_message_in_memory`]).
#[derive(Debug, PartialEq, Eq)]
pub enum InMemory {
    /// Its envelope and body.
    Found(Envelope, Vec<u8>),
    /// No such message (removed meanwhile).
    Gone,
    /// Some of it would have to be read from the disk.
    OnDisk,
}

/// A message's envelope and body if the store can give both from memory
/// ([`Store::get_in_memory`]), without waiting for the disk.
pub fn read_message_in_memory(store: &dyn Store, id: &MessageId) -> Result<InMemory, StoreError> {
    let envelope = match store.get_in_memory(Family::Envelopes, &id.0)? {
        None => return Ok(InMemory::OnDisk),
        Some(None) => return Ok(InMemory::Gone),
        Some(Some(envelope)) => envelope,
    };
    Ok(match store.get_in_memory(Family::Blobs, &id.0)? {
        None => InMemory::OnDisk,
        Some(None) => InMemory::Gone,
        Some(Some(body)) => InMemory::Found(Envelope::decode(&envelope)?, body),
    })
}

/// Read a message's envelope.
pub fn read_envelope(store: &dyn Store, id: &MessageId) -> Result<Option<Envelope>, StoreError> {
    store
        .get(Family::Envelopes, &id.0)?
        .map(|value| Envelope::decode(&value))
        .transpose()
}

/// Every envelope with its id, in id order (tests, tools).
pub fn list_envelopes(store: &dyn Store) -> Result<Vec<(MessageId, Envelope)>, StoreError> {
    let mut out = Vec::new();
    let mut failure = None;
    store.scan(Family::Envelopes, &[], None, &mut |key, value| {
        match decode_envelope_row(key, value) {
            Ok(row) => out.push(row),
            Err(error) => failure = Some(error),
        }
        failure.is_none()
    })?;
    failure.map_or(Ok(out), Err)
}

/// Messages whose envelope is still stored although no queue entry names
/// them: the relay finished them, but the envelope update that should have
/// followed was lost (a crash or a stop between a domain's last outcome and
/// its home shard's update, or a failed commit). Their envelope, and body
/// unless a mailbox row holds it, can go ([`delete_message`]).
///
/// Sound only on a store whose scan of the queue sees it at one moment
/// (RocksDB's iterators read a snapshot): entries move to new keys while
/// the relay runs, and an entry that moved behind the scan must still be
/// seen. Envelopes are read first, so an envelope present then whose
/// message has no entry in the later queue view was finished: a message's
/// envelope and entries are written in one commit, and a message never
/// gains entries again once it has none.
pub fn orphaned_messages(store: &dyn Store) -> Result<Vec<MessageId>, StoreError> {
    // An envelope whose key is not an id names nothing to judge: it stays.
    let mut ids = Vec::new();
    store.scan(Family::Envelopes, &[], None, &mut |key, _| {
        ids.extend(MessageId::from_bytes(key));
        true
    })?;
    if ids.is_empty() {
        return Ok(ids);
    }
    // Scanned in key order, so sorted: a bit per envelope, not a set. Only
    // the keys are read (due ‖ id ‖ domain); a queue key without an id
    // could be any message's, so then nothing is judged.
    let mut queued = vec![false; ids.len()];
    let mut unreadable = false;
    store.scan(Family::Queue, &[], None, &mut |key, _| {
        let id = key.get(8..QUEUE_KEY_PREFIX).and_then(MessageId::from_bytes);
        match id {
            Some(id) => {
                if let Ok(i) = ids.binary_search(&id) {
                    queued[i] = true;
                }
            }
            None => unreadable = true,
        }
        !unreadable
    })?;
    if unreadable {
        return Err(StoreError::Corrupt {
            family: Family::Queue.name(),
            detail: "a key too short to name a message".into(),
        });
    }
    Ok(ids
        .into_iter()
        .zip(queued)
        .filter(|(_, queued)| !queued)
        .map(|(id, _)| id)
        .collect())
}

/// An `envelopes` row: id key and envelope value.
fn decode_envelope_row(key: &[u8], value: &[u8]) -> Result<(MessageId, Envelope), StoreError> {
    let id = MessageId::from_bytes(key).ok_or_else(|| StoreError::Corrupt {
        family: Family::Envelopes.name(),
        detail: "key is not a 16-byte id".into(),
    })?;
    Ok((id, Envelope::decode(value)?))
}

/// Queue entries due at or before `due_before` (unix millis), at most `limit`, in due order.
pub fn due_queue_entries(
    store: &dyn Store,
    due_before: u64,
    limit: usize,
) -> Result<Vec<QueueEntry>, StoreError> {
    let mut out = Vec::new();
    if limit == 0 {
        return Ok(out);
    }
    // Keys start with the due time, so "due <= due_before" is every key below
    // the first one due a millisecond later.
    let end = due_before.checked_add(1).map(u64::to_be_bytes);
    let mut failure = None;
    store.scan(
        Family::Queue,
        &[],
        end.as_ref().map(|end| &end[..]),
        &mut |key, value| {
            match QueueEntry::decode(key, value) {
                Ok(entry) => out.push(entry),
                Err(error) => failure = Some(error),
            }
            failure.is_none() && out.len() < limit
        },
    )?;
    failure.map_or(Ok(out), Err)
}

/// How many queue entries are held (at most `limit` are counted). Held
/// entries sort last (due time [`HELD`]), so only they are visited.
pub fn count_held(store: &dyn Store, limit: usize) -> Result<usize, StoreError> {
    let mut held = 0;
    store.scan(Family::Queue, &HELD.to_be_bytes(), None, &mut |_, _| {
        held += 1;
        held < limit
    })?;
    Ok(held)
}

/// Visit every queue entry in due order until `visit` returns false.
///
/// The delivery scheduler rebuilds its schedule with this one range scan at
/// start-up (and again when entries had to stay in the store for lack of
/// memory); bodies are never read.
pub fn scan_queue_entries(
    store: &dyn Store,
    visit: &mut dyn FnMut(QueueEntry) -> bool,
) -> Result<(), StoreError> {
    scan_queue_entries_from(store, &[], visit)
}

/// [`scan_queue_entries`] from the key `start` on (inclusive).
pub fn scan_queue_entries_from(
    store: &dyn Store,
    start: &[u8],
    visit: &mut dyn FnMut(QueueEntry) -> bool,
) -> Result<(), StoreError> {
    let mut failure = None;
    store.scan(
        Family::Queue,
        start,
        None,
        &mut |key, value| match QueueEntry::decode(key, value) {
            Ok(entry) => visit(entry),
            Err(error) => {
                failure = Some(error);
                false
            }
        },
    )?;
    failure.map_or(Ok(()), Err)
}

/// Count messages, bytes and queue entries.
pub fn stats(store: &dyn Store) -> Result<SpoolStats, StoreError> {
    let mut stats = SpoolStats::default();
    let mut failure = None;
    store.scan(Family::Envelopes, &[], None, &mut |_, value| {
        match Envelope::decode(value) {
            Ok(envelope) => {
                stats.messages += 1;
                stats.bytes += envelope.size;
            }
            Err(error) => failure = Some(error),
        }
        failure.is_none()
    })?;
    if let Some(error) = failure {
        return Err(error);
    }
    store.scan(Family::Queue, &[], None, &mut |_, _| {
        stats.queue_entries += 1;
        true
    })?;
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope() -> Envelope {
        Envelope {
            sender: "alice@example.org".into(),
            received_at: 1_700_000_000_123_456,
            size: 2048,
            recipients: vec![
                "bob@example.com".into(),
                "carol@example.net".into(),
                "".into(),
            ],
            dsn: DsnRequest::default(),
        }
    }

    fn entry() -> QueueEntry {
        QueueEntry {
            pool: None,
            due: 1_700_000_000_123,
            id: MessageId::new(1_700_000_000_123_456, 3, 42),
            domain: "example.com".into(),
            recipients: vec!["bob@example.com".into(), "dave@example.com".into()],
            attempts: 7,
            last_error: Some("451 4.7.1 try later".into()),
        }
    }

    /// A small deterministic generator, so "garbage" tests are repeatable.
    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    #[test]
    fn message_id_fields_round_trip() {
        let id = MessageId::new(0x0102_0304_0506_0708, 0x090a, 0xffff_0b0c_0d0e_0f10);
        assert_eq!(
            id.0,
            [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]
        );
        assert_eq!(id.unix_micros(), 0x0102_0304_0506_0708);
        assert_eq!(id.shard(), 0x090a);
        assert_eq!(id.seq(), 0x0b0c_0d0e_0f10, "seq is truncated to 48 bits");
        assert_eq!(MessageId::from_bytes(&id.0), Some(id));
        assert_eq!(MessageId::from_bytes(&id.0[..15]), None);
    }

    #[test]
    fn message_id_orders_by_time_then_shard_then_seq() {
        let ids = [
            MessageId::new(1, 9, 9),
            MessageId::new(2, 0, 0),
            MessageId::new(2, 0, 1),
            MessageId::new(2, 0, 256),
            MessageId::new(2, 1, 0),
            MessageId::new(256, 0, 0),
            MessageId::new(u64::MAX, u16::MAX, u64::MAX),
        ];
        for pair in ids.windows(2) {
            assert!(pair[0] < pair[1], "{:?} < {:?}", pair[0], pair[1]);
            assert!(pair[0].0 < pair[1].0, "byte order matches");
            assert!(pair[0].to_hex() < pair[1].to_hex(), "hex order matches");
        }
    }

    #[test]
    fn message_id_hex() {
        let id = MessageId::new(0x0102_0304_0506_0708, 0x090a, 0x0b0c_0d0e_0fff);
        assert_eq!(id.to_hex(), "0102030405060708090a0b0c0d0e0fff");
        assert_eq!(id.to_string(), id.to_hex());
        assert_eq!(MessageId::from_hex(&id.to_hex()), Some(id));
        assert_eq!(
            MessageId::from_hex("0102030405060708090A0B0C0D0E0FFF"),
            Some(id)
        );
        assert_eq!(MessageId::from_hex(""), None);
        assert_eq!(MessageId::from_hex("0102030405060708090a0b0c0d0e0ff"), None);
        assert_eq!(
            MessageId::from_hex("0102030405060708090a0b0c0d0e0fff0"),
            None
        );
        assert_eq!(
            MessageId::from_hex("0102030405060708090a0b0c0d0e0fgf"),
            None
        );
        // 32 bytes but not 32 characters: must not panic on a char boundary.
        assert_eq!(MessageId::from_hex("éééééééééééééééé"), None);
        assert_eq!(MessageId::default().to_hex(), "0".repeat(32));
    }

    #[test]
    fn envelope_round_trip() {
        let with_dsn = Envelope {
            dsn: DsnRequest {
                envid: Some("QQ+2B314".into()),
                ret: 2,
                recipients: vec![
                    RecipientDsn {
                        recipient: "bob@example.com".into(),
                        notify: Some(0),
                        orcpt: None,
                    },
                    RecipientDsn {
                        recipient: "carol@example.net".into(),
                        notify: Some(5),
                        orcpt: Some("rfc822;carol@example.net".into()),
                    },
                ],
            },
            ..envelope()
        };
        for envelope in [envelope(), Envelope::default(), with_dsn.clone()] {
            assert_eq!(Envelope::decode(&envelope.encode()).unwrap(), envelope);
        }
        // An envelope without DSN parameters is stored as before they existed.
        let plain = envelope().encode();
        assert!(with_dsn.encode().starts_with(&plain));
        assert_eq!(
            with_dsn.dsn.recipient("carol@example.net").unwrap().notify,
            Some(5)
        );
        assert!(with_dsn.dsn.recipient("dave@example.net").is_none());
        let map = with_dsn.dsn.by_recipient();
        assert_eq!(map.len(), 2);
        assert_eq!(map["carol@example.net"].notify, Some(5));
    }

    #[test]
    fn queue_entry_round_trip() {
        let mut e = entry();
        assert_eq!(QueueEntry::decode(&e.key(), &e.encode_value()).unwrap(), e);
        e.last_error = None;
        e.attempts = u32::MAX;
        e.domain = String::new();
        e.recipients.clear();
        assert_eq!(QueueEntry::decode(&e.key(), &e.encode_value()).unwrap(), e);
        // The pool came later: an entry without one encodes as before it
        // existed, and one with it reads back.
        let plain = entry().encode_value();
        e = entry();
        e.pool = Some("bulk".into());
        let pooled = e.encode_value();
        assert_eq!(&pooled[..plain.len()], &plain[..]);
        assert_eq!(QueueEntry::decode(&e.key(), &pooled).unwrap(), e);
        let mut bad = pooled.clone();
        bad[plain.len()] = 7;
        assert!(QueueEntry::decode(&e.key(), &bad).is_err());
    }

    #[test]
    fn queue_key_layout() {
        let e = entry();
        let key = e.key();
        assert_eq!(&key[..8], &e.due.to_be_bytes());
        assert_eq!(&key[8..24], &e.id.0);
        assert_eq!(&key[24..], b"example.com");
        assert_eq!(key, queue_key(e.due, &e.id, &e.domain));
    }

    #[test]
    fn truncated_values_are_corrupt() {
        let envelope = envelope().encode();
        for len in 0..envelope.len() {
            let err = Envelope::decode(&envelope[..len]).unwrap_err();
            assert!(
                matches!(
                    err,
                    StoreError::Corrupt {
                        family: "envelopes",
                        ..
                    }
                ),
                "{len}: {err:?}"
            );
        }
        let e = entry();
        let (key, value) = (e.key(), e.encode_value());
        for len in 0..value.len() {
            let err = QueueEntry::decode(&key, &value[..len]).unwrap_err();
            assert!(
                matches!(
                    err,
                    StoreError::Corrupt {
                        family: "queue",
                        ..
                    }
                ),
                "{len}: {err:?}"
            );
        }
        for len in 0..QUEUE_KEY_PREFIX {
            assert!(QueueEntry::decode(&key[..len], &value).is_err());
        }
    }

    #[test]
    fn trailing_bytes_and_bad_fields_are_corrupt() {
        let mut value = envelope().encode();
        value.push(0);
        assert!(Envelope::decode(&value).is_err());

        let mut value = envelope().encode();
        value[0] = 2;
        assert!(Envelope::decode(&value).is_err(), "unknown version");

        let e = entry();
        let mut value = e.encode_value();
        let flag = value.len() - e.last_error.as_ref().unwrap().len() - 2;
        value[flag] = 2;
        assert!(QueueEntry::decode(&e.key(), &value).is_err(), "bad flag");

        let mut key = e.key();
        key.push(0xff);
        assert!(
            QueueEntry::decode(&key, &e.encode_value()).is_err(),
            "non-UTF-8 domain"
        );

        let mut value = vec![FORMAT_V1, 1, 2, 0xc3, 0x28]; // one recipient, invalid UTF-8
        assert!(QueueEntry::decode(&e.key(), &value).is_err());
        value = vec![FORMAT_V1, 0, 0x80, 0x80, 0x80, 0x80, 0x10, 0]; // attempts > u32
        assert!(QueueEntry::decode(&e.key(), &value).is_err());
    }

    #[test]
    fn garbage_never_panics() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let valid = [envelope().encode(), entry().encode_value()];
        for round in 0..20_000 {
            let bytes: Vec<u8> = if round % 2 == 0 {
                let len = (rng.next() % 64) as usize;
                (0..len).map(|_| rng.next() as u8).collect()
            } else {
                // Flip a few bytes of a valid value: reaches deeper than pure noise.
                let mut bytes = valid[round % 4 / 2].clone();
                for _ in 0..1 + rng.next() % 3 {
                    let at = (rng.next() as usize) % bytes.len();
                    bytes[at] = rng.next() as u8;
                }
                bytes
            };
            let _ = Envelope::decode(&bytes);
            let _ = QueueEntry::decode(&bytes, &bytes);
            let _ = QueueEntry::decode(&entry().key(), &bytes);
        }
    }

    #[test]
    fn reschedule_replaces_the_key() {
        let old = entry();
        let new = QueueEntry {
            due: old.due + 60_000,
            attempts: old.attempts + 1,
            ..old.clone()
        };
        let mut batch = WriteBatch::new();
        reschedule(&mut batch, &old, &new);
        assert_eq!(
            batch.ops(),
            &[
                crate::Op::Delete {
                    family: Family::Queue,
                    key: old.key()
                },
                crate::Op::Put {
                    family: Family::Queue,
                    key: new.key(),
                    value: new.encode_value()
                },
            ]
        );
        // Same key (only recipients changed): a plain overwrite.
        let fewer = QueueEntry {
            recipients: vec!["bob@example.com".into()],
            ..old.clone()
        };
        let mut batch = WriteBatch::new();
        reschedule(&mut batch, &old, &fewer);
        assert_eq!(batch.len(), 1);
    }

    #[test]
    fn orphaned_messages_are_envelopes_without_queue_entries() {
        use crate::memory::MemoryStore;
        let store = MemoryStore::new();
        assert!(orphaned_messages(&store).unwrap().is_empty());
        let queued = MessageId::new(100, 0, 1);
        let finished = MessageId::new(200, 1, 2);
        let held = MessageId::new(900, 0, 3);
        let mut batch = WriteBatch::new();
        for id in [queued, finished, held] {
            put_envelope(&mut batch, &id, &envelope());
        }
        put_queue_entry(
            &mut batch,
            &QueueEntry {
                id: queued,
                ..entry()
            },
        );
        put_queue_entry(
            &mut batch,
            &QueueEntry {
                id: held,
                domain: "example.net".into(),
                due: HELD,
                ..entry()
            },
        );
        store.write(&[batch], true).unwrap();
        assert_eq!(orphaned_messages(&store).unwrap(), vec![finished]);
    }

    #[test]
    fn new_message_batch_holds_everything() {
        let id = MessageId::new(5, 1, 1);
        let message = NewMessage {
            id,
            body: b"Subject: hi\r\n\r\nhello\r\n".to_vec(),
            envelope: envelope(),
            queue: vec![
                QueueEntry { id, ..entry() },
                QueueEntry {
                    id,
                    domain: "example.net".into(),
                    ..entry()
                },
            ],
            mailboxes: Vec::new(),
            junk: Vec::new(),
            filed: Vec::new(),
        };
        let batch = message.clone().into_batch();
        assert_eq!(batch.len(), 4);
        assert_eq!(
            batch.ops()[0],
            crate::Op::Put {
                family: Family::Blobs,
                key: id.0.to_vec(),
                value: message.body.clone()
            }
        );
    }
}
