//! Mailboxes: each user's folders of messages, shared by local delivery,
//! IMAP and POP3.
//!
//! A mailbox holds rows, one per message, that point at a body in `blobs`:
//! a message for three local users and a remote one is stored once, with
//! three rows and a queue entry pointing at it.
//!
//! # Keys
//! - `mailbox_meta`: user ‖ `0x00` ‖ mailbox name → [`MailboxMeta`]. Account
//!   names never contain `0x00`, so one user's mailboxes are one prefix.
//!   One more key, [`NEXT_UIDVALIDITY_KEY`], starts with `0x00` and so
//!   belongs to no user.
//! - `mailbox_meta` also: user ‖ `0x02` ‖ uidvalidity (`u32` BE) ‖ uid
//!   (`u32` BE) → the modseq (`u64` BE) of the change that expunged it, so
//!   QRESYNC can say which messages went since a modseq (RFC 7162
//!   §3.2.5.1). Uid 0 holds the modseq from which the record is complete:
//!   0 for a mailbox created with it, the modseq before its first expunge
//!   for one created before.
//! - `mailbox_meta` also: user ‖ `0x01` ‖ mailbox name → empty, one per
//!   subscribed name. Subscriptions are names, not mailboxes: one outlives
//!   its mailbox's DELETE (RFC 9051 §6.3.7) and may name none (RFC 5258's
//!   `\NonExistent`). A mailbox written before these keys were kept may
//!   carry [`MailboxMeta::subscribed`] instead; [`subscriptions`] reads both.
//! - `mailboxes`: user ‖ `0x00` ‖ uidvalidity (`u32` BE) ‖ uid (`u32` BE) →
//!   [`MailboxRow`]. Rows hang off the mailbox's UIDVALIDITY, not its name,
//!   so RENAME rewrites one meta row and no message rows, and a mailbox
//!   deleted and created again starts a fresh key range.
//! - `message_refs`: message id → how many rows point at it (varint).
//!
//! # Who writes
//! Only the commit pipeline's writer thread changes mailboxes: callers put
//! [`Change`]s into their [`WriteBatch`] and the writer turns them into
//! puts and deletes (the `sequencer` module), in commit order. That one
//! thread is what makes UIDs strictly ascending per mailbox and modseqs
//! ascending, without a lock anywhere else. Reads ([`list`], [`meta`],
//! [`rows`], [`row`]) go straight to the store.
//!
//! # When a body goes
//! A body is deleted when nothing needs it any more: no queue entry (the
//! envelope is gone, [`Change::ReleaseSpooled`]) and no row
//! (`message_refs` reaches zero, [`Change::Expunge`]). Whichever comes last
//! deletes it, in the same commit.

mod sequencer;

pub(crate) use sequencer::Sequencer;

use crate::codec::{put_strs, put_varint, Reader, FORMAT_V1};
use crate::spool::MessageId;
use crate::{Family, Store, StoreError};

/// The one mailbox every user has; its name is case-insensitive.
pub const INBOX: &str = "INBOX";
/// Where mail judged suspicious is delivered when the account has it
/// (RFC 6154's `\Junk` mailbox, made for every new account).
pub const JUNK: &str = "Junk";

/// The `mailbox_meta` key of the UIDVALIDITY counter (no user's key starts with `0x00`).
pub const NEXT_UIDVALIDITY_KEY: &[u8] = b"\0next-uidvalidity";

/// The IMAP system flags a row can carry, as bits (`\Recent` is per session).
pub mod flag {
    /// `\Seen`
    pub const SEEN: u8 = 1;
    /// `\Answered`
    pub const ANSWERED: u8 = 2;
    /// `\Flagged`
    pub const FLAGGED: u8 = 4;
    /// `\Deleted`
    pub const DELETED: u8 = 8;
    /// `\Draft`
    pub const DRAFT: u8 = 16;
    /// Every system flag.
    pub const ALL: u8 = SEEN | ANSWERED | FLAGGED | DELETED | DRAFT;
}

/// A message's flags: system flags as bits ([`flag`]) and keywords.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Flags {
    /// System flags, [`flag`] bits.
    pub system: u8,
    /// Keywords (IMAP atoms such as `$Forwarded`), as the client wrote them.
    pub keywords: Vec<String>,
}

impl Flags {
    /// Whether every bit of `bits` is set.
    pub fn has(&self, bits: u8) -> bool {
        self.system & bits == bits
    }

    /// These flags after `how` with `change` (keywords compared without
    /// regard to case, as IMAP does).
    pub fn changed(&self, how: FlagChange, change: &Flags) -> Flags {
        match how {
            FlagChange::Replace => change.clone(),
            FlagChange::Add => {
                let mut out = self.clone();
                out.system |= change.system;
                for k in &change.keywords {
                    if !out.keywords.iter().any(|have| have.eq_ignore_ascii_case(k)) {
                        out.keywords.push(k.clone());
                    }
                }
                out
            }
            FlagChange::Remove => {
                let mut out = self.clone();
                out.system &= !change.system;
                out.keywords
                    .retain(|have| !change.keywords.iter().any(|k| k.eq_ignore_ascii_case(have)));
                out
            }
        }
    }
}

/// How [`Change::SetFlags`] changes a message's flags. The commit writer
/// applies it to the flags as stored, so two sessions that change one
/// message at once never undo each other (IMAP `+FLAGS`/`-FLAGS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagChange {
    /// The flags become exactly these (`FLAGS`).
    Replace,
    /// These are added (`+FLAGS`).
    Add,
    /// These are taken away (`-FLAGS`).
    Remove,
}

/// One message in one mailbox.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MailboxRow {
    /// The body in `blobs`.
    pub message: MessageId,
    /// Its flags.
    pub flags: Flags,
    /// IMAP INTERNALDATE: when it arrived, unix micros.
    pub internal_date: u64,
    /// Body size in bytes (IMAP RFC822.SIZE, POP3 octets).
    pub size: u64,
    /// The modseq of its last change (RFC 7162 CONDSTORE).
    pub modseq: u64,
}

impl MailboxRow {
    /// The stored value: version ‖ id (16) ‖ system flags ‖ keywords ‖
    /// internal date ‖ size ‖ modseq.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(40);
        out.push(FORMAT_V1);
        out.extend_from_slice(&self.message.0);
        out.push(self.flags.system);
        put_strs(&mut out, &self.flags.keywords);
        put_varint(&mut out, self.internal_date);
        put_varint(&mut out, self.size);
        put_varint(&mut out, self.modseq);
        out
    }

    /// Read a stored value back.
    pub fn decode(value: &[u8]) -> Result<MailboxRow, StoreError> {
        let mut r = Reader::new(Family::Mailboxes, value);
        r.version()?;
        let mut id = [0; 16];
        for byte in &mut id {
            *byte = r.byte()?;
        }
        let row = MailboxRow {
            message: MessageId(id),
            flags: Flags {
                system: r.byte()? & flag::ALL,
                keywords: r.strings()?,
            },
            internal_date: r.varint()?,
            size: r.varint()?,
            modseq: r.varint()?,
        };
        r.finish()?;
        Ok(row)
    }
}

/// What a mailbox is, apart from its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MailboxMeta {
    /// IMAP UIDVALIDITY; also the mailbox's key in `mailboxes`. Never reused.
    pub uidvalidity: u32,
    /// The UID the next message gets.
    pub uidnext: u32,
    /// The highest modseq any change to it has had.
    pub highest_modseq: u64,
    /// Subscribed, as stored before subscriptions had their own keys (see
    /// [`subscriptions`]); the commit writer moves it to a key when it
    /// touches the mailbox's subscription, and never sets it.
    pub subscribed: bool,
    /// The first UID no read-write session has seen yet: messages from
    /// here on are `\Recent` (RFC 3501 §2.3.2). Claimed with
    /// [`Change::ClaimRecent`].
    pub recent_from: u32,
    /// How many messages it holds.
    pub messages: u32,
    /// The sum of their sizes.
    pub bytes: u64,
    /// Read from a value written before `messages` and `bytes` were kept:
    /// [`meta`], [`list`] and the commit writer count the rows instead.
    pub(crate) uncounted: bool,
}

impl MailboxMeta {
    /// The stored value: version ‖ uidvalidity ‖ uidnext ‖ highest modseq ‖
    /// subscribed ‖ recent from ‖ messages ‖ bytes (the last three were
    /// added later; a value without them is read as uncounted).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(24);
        out.push(FORMAT_V1);
        put_varint(&mut out, u64::from(self.uidvalidity));
        put_varint(&mut out, u64::from(self.uidnext));
        put_varint(&mut out, self.highest_modseq);
        out.push(u8::from(self.subscribed));
        put_varint(&mut out, u64::from(self.recent_from));
        put_varint(&mut out, u64::from(self.messages));
        put_varint(&mut out, self.bytes);
        out
    }

    /// Read a stored value back.
    pub fn decode(value: &[u8]) -> Result<MailboxMeta, StoreError> {
        let mut r = Reader::new(Family::MailboxMeta, value);
        r.version()?;
        let u32_field = |r: &mut Reader<'_>, what: &str| {
            let v = r.varint()?;
            u32::try_from(v).map_err(|_| r.corrupt(format!("{what} exceeds u32")))
        };
        let mut meta = MailboxMeta {
            uidvalidity: u32_field(&mut r, "uidvalidity")?,
            uidnext: u32_field(&mut r, "uidnext")?,
            highest_modseq: r.varint()?,
            subscribed: match r.byte()? {
                0 => false,
                1 => true,
                _ => return Err(r.corrupt("bad subscribed flag")),
            },
            ..MailboxMeta::default()
        };
        if r.at_end() {
            // Written before these were kept: nothing counts as recent.
            meta.recent_from = meta.uidnext;
            meta.uncounted = true;
        } else {
            meta.recent_from = u32_field(&mut r, "recent from")?;
            meta.messages = u32_field(&mut r, "message count")?;
            meta.bytes = r.varint()?;
        }
        r.finish()?;
        Ok(meta)
    }
}

/// A mailbox by name, as [`list`] returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailbox {
    /// Its full name (`/` separates levels).
    pub name: String,
    /// Its state.
    pub meta: MailboxMeta,
}

/// A change to mailboxes, resolved by the commit writer (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Put `message` into `mailbox` with the next UID. INBOX is created on
    /// first use; any other mailbox must exist ([`Refusal::NoSuchMailbox`]).
    /// Answered with [`Applied::Appended`].
    Append {
        /// Account name.
        user: String,
        /// Mailbox name.
        mailbox: String,
        /// The row to add (its `modseq` is assigned).
        row: MailboxRow,
    },
    /// Add a copy of one of the account's messages (IMAP COPY, MOVE): an
    /// [`Change::Append`] of `row`, unless the row it copies is gone by the
    /// time the writer gets to it (another session expunged it, and its
    /// body may be gone with it): then [`Applied::Gone`] and nothing.
    Copy {
        /// Account name.
        user: String,
        /// Target mailbox name.
        mailbox: String,
        /// The row to add (its `modseq` is assigned).
        row: MailboxRow,
        /// The UIDVALIDITY of the mailbox copied from.
        from_uidvalidity: u32,
        /// The UID copied.
        from_uid: u32,
    },
    /// Change the flags of one message, applied to the flags as stored
    /// when the change is sequenced; answered with [`Applied::Flags`]. A
    /// row already gone is no error ([`Applied::Gone`]): another session
    /// expunged it first.
    SetFlags {
        /// Account name.
        user: String,
        /// Mailbox name.
        mailbox: String,
        /// The mailbox the caller saw (refused if it was replaced since).
        uidvalidity: u32,
        /// The message.
        uid: u32,
        /// Replace, add or remove.
        how: FlagChange,
        /// The flags to set, add or remove.
        flags: Flags,
        /// Only if the row's modseq is at most this (RFC 7162 STORE
        /// UNCHANGEDSINCE); else [`Applied::Modified`] and nothing changes.
        unchanged_since: Option<u64>,
    },
    /// Remove one message. Already gone is no error ([`Applied::Gone`]):
    /// POP3 and IMAP may delete the same message.
    Expunge {
        /// Account name.
        user: String,
        /// Mailbox name.
        mailbox: String,
        /// The mailbox the caller saw.
        uidvalidity: u32,
        /// The message.
        uid: u32,
        /// Only if the stored row has `\Deleted` (IMAP EXPUNGE, CLOSE): a
        /// session's view may be behind another that took the flag off;
        /// else [`Applied::Modified`] and nothing changes.
        if_deleted: bool,
    },
    /// Create an empty mailbox.
    Create {
        /// Account name.
        user: String,
        /// Mailbox name.
        mailbox: String,
    },
    /// Delete a mailbox and every row in it (not INBOX).
    Delete {
        /// Account name.
        user: String,
        /// Mailbox name.
        mailbox: String,
    },
    /// Rename a mailbox. Renaming INBOX moves its messages to the new
    /// name and leaves an empty INBOX (RFC 9051 §6.3.6).
    Rename {
        /// Account name.
        user: String,
        /// Current name.
        from: String,
        /// New name.
        to: String,
    },
    /// IMAP SUBSCRIBE / UNSUBSCRIBE, of a name whether or not a mailbox has it.
    Subscribe {
        /// Account name.
        user: String,
        /// Mailbox name.
        mailbox: String,
        /// Subscribe (true) or unsubscribe.
        subscribed: bool,
    },
    /// A read-write session takes the messages below `up_to` that no
    /// session has seen yet as its `\Recent` ones (RFC 3501 §2.3.2): only
    /// one session ever gets each. Answered with [`Applied::Recent`].
    ClaimRecent {
        /// Account name.
        user: String,
        /// Mailbox name.
        mailbox: String,
        /// The UIDVALIDITY the session saw.
        uidvalidity: u32,
        /// The session's UIDNEXT: it claims only messages it knows of.
        up_to: u32,
    },
    /// Remove every mailbox of an account, INBOX included, with their rows
    /// (`ringpost user del`); bodies no longer referenced go too.
    DeleteAccount {
        /// Account name.
        user: String,
    },
    /// The relay is done with `message`: its envelope goes, and its body
    /// too unless a mailbox row still points at it.
    ReleaseSpooled {
        /// The message.
        message: MessageId,
    },
}

impl Change {
    /// The account whose sessions must hear of the change, if any (a
    /// claim of `\Recent` changes nothing other sessions show).
    pub fn user(&self) -> Option<&str> {
        match self {
            Change::Append { user, .. }
            | Change::Copy { user, .. }
            | Change::SetFlags { user, .. }
            | Change::Expunge { user, .. }
            | Change::Create { user, .. }
            | Change::Delete { user, .. }
            | Change::Rename { user, .. }
            | Change::Subscribe { user, .. }
            | Change::DeleteAccount { user } => Some(user),
            Change::ClaimRecent { .. } | Change::ReleaseSpooled { .. } => None,
        }
    }
}

/// What one [`Change`] did, in the order the changes were given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The message got this UID in the mailbox with this UIDVALIDITY.
    Appended {
        /// The mailbox's UIDVALIDITY.
        uidvalidity: u32,
        /// The new UID.
        uid: u32,
        /// The row's modseq.
        modseq: u64,
    },
    /// A row was expunged; this is the mailbox's new highest modseq.
    Changed {
        /// The mailbox's new highest modseq.
        modseq: u64,
    },
    /// A message's flags are now these (changed or not), as of `modseq`.
    Flags {
        /// The row's modseq (new if the flags changed).
        modseq: u64,
        /// The flags as stored after the change.
        flags: Flags,
    },
    /// A conditional change found the row changed since the modseq it
    /// gave, or an expunge `if_deleted` found no `\Deleted`: nothing was
    /// done.
    Modified {
        /// The row's modseq.
        modseq: u64,
    },
    /// The row was already gone: nothing to do.
    Gone,
    /// The claiming session's `\Recent` messages are those from this UID
    /// up to the `up_to` it gave (none when `from >= up_to`).
    Recent {
        /// The first UID claimed.
        from: u32,
    },
    /// Done; nothing to report.
    Done,
}

/// Why a request's changes were refused. Nothing of that request is written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The mailbox does not exist (IMAP `[TRYCREATE]` / `[NONEXISTENT]`).
    #[error("no such mailbox")]
    NoSuchMailbox,
    /// A mailbox of that name exists already (`[ALREADYEXISTS]`).
    #[error("mailbox already exists")]
    MailboxExists,
    /// The mailbox was deleted or replaced since the caller looked
    /// (its UIDVALIDITY differs).
    #[error("mailbox was replaced")]
    MailboxReplaced,
    /// INBOX cannot be deleted.
    #[error("INBOX cannot be deleted")]
    InboxIsPermanent,
    /// The mailbox has run out of UIDs (2^32 - 1 messages were ever added).
    #[error("mailbox is out of UIDs")]
    UidsExhausted,
}

/// INBOX in any case is INBOX; every other name is kept as given.
pub fn normalize_name(name: &str) -> &str {
    if name.eq_ignore_ascii_case(INBOX) {
        INBOX
    } else {
        name
    }
}

/// The `mailbox_meta` key of `user`'s `mailbox`.
pub fn meta_key(user: &str, mailbox: &str) -> Vec<u8> {
    let mailbox = normalize_name(mailbox);
    let mut key = user_prefix(user);
    key.extend_from_slice(mailbox.as_bytes());
    key
}

/// The `mailbox_meta` key that says `user` subscribed to `mailbox`.
pub(crate) fn subscription_key(user: &str, mailbox: &str) -> Vec<u8> {
    let mut key = subscriptions_prefix(user);
    key.extend_from_slice(normalize_name(mailbox).as_bytes());
    key
}

/// The prefix of every subscription key of `user`: name ‖ `0x01`.
pub(crate) fn subscriptions_prefix(user: &str) -> Vec<u8> {
    let mut key = user_prefix(user);
    *key.last_mut().expect("the prefix ends with 0x00") = 1;
    key
}

/// The prefix of the expunge records of one mailbox: user ‖ `0x02` ‖ uidvalidity.
pub(crate) fn expunged_prefix(user: &str, uidvalidity: u32) -> Vec<u8> {
    let mut key = expunged_account_prefix(user);
    key.extend_from_slice(&uidvalidity.to_be_bytes());
    key
}

/// The prefix of every expunge record of `user`: name ‖ `0x02`.
pub(crate) fn expunged_account_prefix(user: &str) -> Vec<u8> {
    let mut key = user_prefix(user);
    *key.last_mut().expect("the prefix ends with 0x00") = 2;
    key
}

/// The UIDs expunged from a mailbox by changes after `modseq`, ascending;
/// `None` when the record does not reach back that far (the mailbox is
/// older than it, and `modseq` is older than its first recorded expunge).
pub fn expunged_since(
    store: &dyn Store,
    user: &str,
    uidvalidity: u32,
    modseq: u64,
) -> Result<Option<Vec<u32>>, StoreError> {
    let prefix = expunged_prefix(user, uidvalidity);
    let end = prefix_end(&prefix);
    let mut floor = None;
    let mut uids = Vec::new();
    store.scan(
        Family::MailboxMeta,
        &prefix,
        end.as_deref(),
        &mut |key, value| {
            let (Some(uid), Some(when)) = (
                key.get(prefix.len()..)
                    .and_then(|b| <[u8; 4]>::try_from(b).ok()),
                <[u8; 8]>::try_from(value).ok(),
            ) else {
                return true;
            };
            let (uid, when) = (u32::from_be_bytes(uid), u64::from_be_bytes(when));
            if uid == 0 {
                floor = Some(when);
            } else if when > modseq {
                uids.push(uid);
            }
            true
        },
    )?;
    Ok(floor.filter(|&floor| floor <= modseq).map(|_| uids))
}

/// The names `user` subscribed to, sorted, whether a mailbox has them or not.
pub fn subscriptions(store: &dyn Store, user: &str) -> Result<Vec<String>, StoreError> {
    let prefix = subscriptions_prefix(user);
    let end = prefix_end(&prefix);
    let mut names = std::collections::BTreeSet::new();
    store.scan(
        Family::MailboxMeta,
        &prefix,
        end.as_deref(),
        &mut |key, _| {
            names.insert(String::from_utf8_lossy(&key[prefix.len()..]).into_owned());
            true
        },
    )?;
    for mailbox in list(store, user)? {
        if mailbox.meta.subscribed {
            names.insert(mailbox.name);
        }
    }
    Ok(names.into_iter().collect())
}

/// The `mailboxes` key of one row.
pub fn row_key(user: &str, uidvalidity: u32, uid: u32) -> Vec<u8> {
    let mut key = rows_prefix(user, uidvalidity);
    key.extend_from_slice(&uid.to_be_bytes());
    key
}

/// The prefix every key of `user` starts with: name ‖ `0x00`, the name
/// folded as account names are ([`crate::users`]: `to_lowercase`), so
/// every spelling of an account reaches its one set of mailboxes.
fn user_prefix(user: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(user.len() + 24);
    key.extend_from_slice(user.to_lowercase().as_bytes());
    key.push(0);
    key
}

/// The prefix of every row of one mailbox.
fn rows_prefix(user: &str, uidvalidity: u32) -> Vec<u8> {
    let mut key = user_prefix(user);
    key.extend_from_slice(&uidvalidity.to_be_bytes());
    key
}

/// The smallest key after every key that starts with `prefix`, or `None`
/// when there is none (a prefix of only `0xff` bytes).
pub(crate) fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// One mailbox's state, if it exists.
pub fn meta(
    store: &dyn Store,
    user: &str,
    mailbox: &str,
) -> Result<Option<MailboxMeta>, StoreError> {
    store
        .get(Family::MailboxMeta, &meta_key(user, mailbox))?
        .map(|value| counted(store, user, MailboxMeta::decode(&value)?))
        .transpose()
}

/// `meta` with its message count and size, counted from its rows if it
/// was stored before they were kept.
pub(crate) fn counted(
    store: &dyn Store,
    user: &str,
    mut meta: MailboxMeta,
) -> Result<MailboxMeta, StoreError> {
    if meta.uncounted {
        rows(store, user, meta.uidvalidity, &mut |_, row| {
            meta.messages += 1;
            meta.bytes += row.size;
            true
        })?;
        meta.uncounted = false;
    }
    Ok(meta)
}

/// Every mailbox of `user`, by name.
pub fn list(store: &dyn Store, user: &str) -> Result<Vec<Mailbox>, StoreError> {
    let prefix = user_prefix(user);
    let end = prefix_end(&prefix);
    let mut out = Vec::new();
    let mut failure = None;
    store.scan(
        Family::MailboxMeta,
        &prefix,
        end.as_deref(),
        &mut |key, value| {
            let decoded = std::str::from_utf8(&key[prefix.len()..])
                .map_err(|_| StoreError::Corrupt {
                    family: Family::MailboxMeta.name(),
                    detail: "mailbox name is not UTF-8".into(),
                })
                .and_then(|name| Ok((name.to_owned(), MailboxMeta::decode(value)?)));
            match decoded {
                Ok((name, meta)) => out.push(Mailbox { name, meta }),
                Err(error) => failure = Some(error),
            }
            failure.is_none()
        },
    )?;
    if let Some(error) = failure {
        return Err(error);
    }
    for mailbox in &mut out {
        mailbox.meta = counted(store, user, std::mem::take(&mut mailbox.meta))?;
    }
    Ok(out)
}

/// Visit the rows of a mailbox in UID order until `visit` returns false.
pub fn rows(
    store: &dyn Store,
    user: &str,
    uidvalidity: u32,
    visit: &mut dyn FnMut(u32, MailboxRow) -> bool,
) -> Result<(), StoreError> {
    rows_from(store, user, uidvalidity, 0, visit)
}

/// [`rows`] from UID `first` on. UIDs are never used twice, so a reader
/// that knows no row below `first` is left can start there and skip the
/// deletions of expunged rows below it (which a scan walks one by one
/// until the store compacts them away).
pub fn rows_from(
    store: &dyn Store,
    user: &str,
    uidvalidity: u32,
    first: u32,
    visit: &mut dyn FnMut(u32, MailboxRow) -> bool,
) -> Result<(), StoreError> {
    let prefix = rows_prefix(user, uidvalidity);
    let end = prefix_end(&prefix);
    let start = row_key(user, uidvalidity, first);
    let mut failure = None;
    store.scan(
        Family::Mailboxes,
        &start,
        end.as_deref(),
        &mut |key, value| {
            let uid = key[prefix.len()..]
                .try_into()
                .map(u32::from_be_bytes)
                .map_err(|_| StoreError::Corrupt {
                    family: Family::Mailboxes.name(),
                    detail: "row key is not prefix ‖ uid".into(),
                });
            match uid.and_then(|uid| Ok((uid, MailboxRow::decode(value)?))) {
                Ok((uid, row)) => visit(uid, row),
                Err(error) => {
                    failure = Some(error);
                    false
                }
            }
        },
    )?;
    failure.map_or(Ok(()), Err)
}

/// Every row of a mailbox, in UID order.
pub fn all_rows(
    store: &dyn Store,
    user: &str,
    uidvalidity: u32,
) -> Result<Vec<(u32, MailboxRow)>, StoreError> {
    let mut out = Vec::new();
    rows(store, user, uidvalidity, &mut |uid, row| {
        out.push((uid, row));
        true
    })?;
    Ok(out)
}

/// One row, if it exists.
pub fn row(
    store: &dyn Store,
    user: &str,
    uidvalidity: u32,
    uid: u32,
) -> Result<Option<MailboxRow>, StoreError> {
    store
        .get(Family::Mailboxes, &row_key(user, uidvalidity, uid))?
        .map(|value| MailboxRow::decode(&value))
        .transpose()
}

/// How many rows point at `message`.
pub fn refs(store: &dyn Store, message: &MessageId) -> Result<u64, StoreError> {
    match store.get(Family::MessageRefs, &message.0)? {
        None => Ok(0),
        Some(value) => decode_refs(&value),
    }
}

/// A `message_refs` value: version ‖ count.
pub(crate) fn encode_refs(count: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(4);
    out.push(FORMAT_V1);
    put_varint(&mut out, count);
    out
}

/// Read a `message_refs` value back.
pub(crate) fn decode_refs(value: &[u8]) -> Result<u64, StoreError> {
    let mut r = Reader::new(Family::MessageRefs, value);
    r.version()?;
    let count = r.varint()?;
    r.finish()?;
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip() {
        let row = MailboxRow {
            message: MessageId::new(1_700_000_000_000_000, 2, 9),
            flags: Flags {
                system: flag::SEEN | flag::FLAGGED,
                keywords: vec!["$Forwarded".into(), "work".into()],
            },
            internal_date: 1_700_000_000_000_000,
            size: 12_345,
            modseq: 77,
        };
        assert_eq!(MailboxRow::decode(&row.encode()).unwrap(), row);
        let meta = MailboxMeta {
            uidvalidity: u32::MAX,
            uidnext: 1,
            highest_modseq: u64::MAX,
            subscribed: true,
            recent_from: 7,
            messages: 3,
            bytes: u64::MAX,
            uncounted: false,
        };
        assert_eq!(MailboxMeta::decode(&meta.encode()).unwrap(), meta);
        // A value from before recent_from, messages and bytes were kept:
        // nothing recent, and counted from the rows when read.
        let old = [FORMAT_V1, 9, 5, 12, 1];
        let legacy = MailboxMeta::decode(&old).unwrap();
        assert_eq!((legacy.uidnext, legacy.recent_from), (5, 5));
        assert!(legacy.uncounted);
        assert_eq!(decode_refs(&encode_refs(3)).unwrap(), 3);
    }

    #[test]
    fn truncated_or_garbled_values_are_corrupt_not_panics() {
        let row = MailboxRow::default().encode();
        for cut in 0..row.len() {
            assert!(MailboxRow::decode(&row[..cut]).is_err(), "cut {cut}");
        }
        let meta = MailboxMeta::default().encode();
        // Cut after `subscribed` is a value of the older layout.
        const OLD_LAYOUT: usize = 5;
        for cut in (0..meta.len()).filter(|&cut| cut != OLD_LAYOUT) {
            assert!(MailboxMeta::decode(&meta[..cut]).is_err(), "cut {cut}");
        }
        let mut bad = meta.clone();
        bad[OLD_LAYOUT - 1] = 7; // subscribed is 0 or 1
        assert!(MailboxMeta::decode(&bad).is_err());
        let mut long = MailboxMeta::default().encode();
        long.push(0);
        assert!(MailboxMeta::decode(&long).is_err());
    }

    #[test]
    fn keys_group_by_user_and_mailbox() {
        assert_eq!(meta_key("Bob@X.test", "inbox"), b"bob@x.test\0INBOX");
        assert_eq!(meta_key("bob@x.test", "Sent"), b"bob@x.test\0Sent");
        let key = row_key("bob@x.test", 0x0102_0304, 5);
        assert_eq!(&key[..11], b"bob@x.test\0");
        assert_eq!(&key[11..], &[1, 2, 3, 4, 0, 0, 0, 5]);
        // Numeric order is key order.
        assert!(row_key("b@x", 1, 255) < row_key("b@x", 1, 256));
        assert!(row_key("b@x", 1, u32::MAX) < row_key("b@x", 2, 0));
        assert_eq!(prefix_end(b"ab\xff"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), None);
        assert!(NEXT_UIDVALIDITY_KEY < meta_key("a@b", "INBOX").as_slice());
    }
}
