//! FETCH: the data items of RFC 9051 §6.4.5 for each message of a set,
//! written as they are rendered so a whole mailbox never sits in memory.

use super::commands::{Done, Outcome};
use super::convert::internal_date;
use super::view::Message;
use super::{Conn, FLUSH_AT};
use crate::conn::Connection;
use crate::gather::Gather;
use ringpost_protocols::imap::types::core::{IString, Literal, NString};
use ringpost_protocols::imap::types::fetch::{
    Macro, MacroOrMessageDataItemNames, MessageDataItem, MessageDataItemName,
};
use ringpost_protocols::imap::types::flag::FlagFetch;
use ringpost_protocols::imap::types::sequence::SequenceSet;
use ringpost_protocols::imap::{binary, mime, FetchItem, ImapSession};
use ringpost_storage::mailbox::{flag, Applied, Change, FlagChange, Flags};
use ringpost_storage::{spool, Pinned, WriteBatch};
use std::io;
use std::num::NonZeroU32;

/// Most items one FETCH may name (a client names a handful).
const MAX_ITEMS: usize = 256;

/// Run a FETCH (or UID FETCH) and return how it ended.
pub(super) async fn run(
    conn: &mut Conn<'_>,
    imap: &mut ImapSession,
    io: &mut Connection,
    set: &SequenceSet,
    names: &MacroOrMessageDataItemNames<'static>,
    uid: bool,
    changed_since: Option<u64>,
) -> io::Result<Outcome> {
    let Some(view) = &conn.view else {
        return Ok(Ok(Done::Bad("no mailbox selected")));
    };
    if !uid && view.beyond_the_end(set) {
        return Ok(Ok(Done::Bad(super::commands::BEYOND_THE_END)));
    }
    let items: Vec<MessageDataItemName<'static>> = match names {
        MacroOrMessageDataItemNames::Macro(m) => expand(m.clone()),
        MacroOrMessageDataItemNames::MessageDataItemNames(items) => items.clone(),
    };
    // Each item once: a body named a thousand times must not be copied a
    // thousand times (nor its MIME parsed as often).
    if items.len() > MAX_ITEMS {
        return Ok(Ok(Done::Bad("too many FETCH items")));
    }
    let mut distinct = Vec::with_capacity(items.len());
    for item in items {
        if !distinct.contains(&item) {
            distinct.push(item);
        }
    }
    let mut items = distinct;
    // UID FETCH, and every FETCH of a QRESYNC session (RFC 7162 §3.2.4),
    // answers with the UID.
    if (uid || imap.is_qresync()) && !items.contains(&MessageDataItemName::Uid) {
        items.insert(0, MessageDataItemName::Uid);
    }
    // CONDSTORE (RFC 7162 §3.1.4): MODSEQ and CHANGEDSINCE turn it on;
    // once on, MODSEQ goes with every FLAGS, and CHANGEDSINCE implies it.
    if changed_since.is_some() || items.contains(&MessageDataItemName::ModSeq) {
        super::view::condstore_on(imap, Some(view));
    }
    let wants_modseq = changed_since.is_some()
        || (imap.is_condstore() && items.contains(&MessageDataItemName::Flags));
    if wants_modseq && !items.contains(&MessageDataItemName::ModSeq) {
        items.push(MessageDataItemName::ModSeq);
    }
    let needs_body = items.iter().any(|i| {
        !matches!(
            i,
            MessageDataItemName::Uid
                | MessageDataItemName::Flags
                | MessageDataItemName::InternalDate
                | MessageDataItemName::Rfc822Size
                | MessageDataItemName::ModSeq
        )
    });
    // Reading the body (not its header) sets \Seen, in a writable mailbox.
    let sets_seen = !view.read_only
        && items.iter().any(|i| {
            matches!(
                i,
                MessageDataItemName::BodyExt { peek: false, .. }
                    | MessageDataItemName::Binary { peek: false, .. }
                    | MessageDataItemName::Rfc822
                    | MessageDataItemName::Rfc822Text
            )
        });
    let store = conn.shard.store.clone();
    let mut picked = view.select(set, uid);
    if let Some(since) = changed_since {
        picked.retain(|&index| view.messages[index].row.modseq > since);
    }
    let plain = plain_items(&items);
    let mut seen = Vec::new();
    let mut missing = false;
    // The plain path's output: bodies go out as the store lends them.
    let mut gathered = Gather::default();
    if plain.is_some() && !imap.output().is_empty() {
        gathered.text(imap.output());
        imap.clear_output();
    }
    // A FETCH that stops early (a part BINARY cannot decode, too much
    // asked of one message) still records the \Seen it has reported.
    let mut ended = None;
    'messages: for &index in &picked {
        let message = &view.messages[index];
        let newly_seen = sets_seen && !message.row.flags.has(flag::SEEN);
        if let Some(plain) = &plain {
            // The common sync case, written by hand, the body never copied.
            match spool::read_body_pinned(&*store, &message.row.message) {
                Ok(Some(body)) => plain.write(&mut gathered, index + 1, message, body, sets_seen),
                // Expunged elsewhere; the client hears of it later.
                Ok(None) => {
                    missing = true;
                    continue;
                }
                Err(e) => return Ok(Err(e)),
            }
            if newly_seen {
                seen.push(index);
            }
            if gathered.len() >= FLUSH_AT {
                gathered.write_to(io).await?;
            }
            continue;
        }
        let body = if needs_body {
            match spool::read_body(&*store, &message.row.message) {
                Ok(Some(body)) => Some(body),
                Ok(None) => {
                    // Expunged elsewhere; the client hears of it later.
                    missing = true;
                    continue;
                }
                Err(e) => return Ok(Err(e)),
            }
        } else {
            None
        };
        let mut out = Vec::with_capacity(items.len());
        let mut flags_sent = false;
        // Items differing only in their partial origin each copy the body:
        // the data of one message's items is held to twice its size.
        let allowance = 2 * body.as_ref().map_or(0, Vec::len) + 64 * 1024;
        let mut carried = 0;
        for item in &items {
            if carried > allowance {
                ended = Some(too_much_asked());
                break 'messages;
            }
            let body = body.as_deref().unwrap_or_default();
            let binary = |section: &[NonZeroU32]| binary::section(body, section);
            let codec_item = match item {
                MessageDataItemName::Uid => match NonZeroU32::new(message.uid) {
                    Some(uid) => MessageDataItem::Uid(uid),
                    None => continue,
                },
                MessageDataItemName::Flags => {
                    flags_sent = true;
                    MessageDataItem::Flags(message.fetch_flags(sets_seen))
                }
                MessageDataItemName::ModSeq => message.modseq_item(),
                MessageDataItemName::InternalDate => {
                    MessageDataItem::InternalDate(internal_date(message.row.internal_date))
                }
                MessageDataItemName::Rfc822Size => {
                    MessageDataItem::Rfc822Size(u32::try_from(message.row.size).unwrap_or(u32::MAX))
                }
                MessageDataItemName::Envelope => MessageDataItem::Envelope(mime::envelope(body)),
                MessageDataItemName::BodyStructure => {
                    MessageDataItem::BodyStructure(mime::body_structure(body, true))
                }
                MessageDataItemName::Body => {
                    MessageDataItem::Body(mime::body_structure(body, false))
                }
                MessageDataItemName::BodyExt {
                    section, partial, ..
                } => {
                    let cut = partial.map(|(start, len)| (start, len.get()));
                    let data = mime::section(body, section.as_ref(), cut);
                    carried += data.len();
                    MessageDataItem::BodyExt {
                        section: section.clone(),
                        origin: partial.map(|(start, _)| start),
                        data: literal(data),
                    }
                }
                MessageDataItemName::Rfc822 => {
                    carried += body.len();
                    MessageDataItem::Rfc822(literal(body.to_vec()))
                }
                MessageDataItemName::Rfc822Header => {
                    let header = mime::section(
                        body,
                        Some(&ringpost_protocols::imap::types::fetch::Section::Header(
                            None,
                        )),
                        None,
                    );
                    carried += header.len();
                    MessageDataItem::Rfc822Header(literal(header))
                }
                MessageDataItemName::Rfc822Text => {
                    let text = mime::section(
                        body,
                        Some(&ringpost_protocols::imap::types::fetch::Section::Text(None)),
                        None,
                    );
                    carried += text.len();
                    MessageDataItem::Rfc822Text(literal(text))
                }
                MessageDataItemName::Binary {
                    section, partial, ..
                } => {
                    let Ok(decoded) = binary(section) else {
                        ended = Some(unknown_cte());
                        break 'messages;
                    };
                    let cut = partial.map(|(start, len)| (start, len.get()));
                    let data = mime::cut(&decoded, cut).to_vec();
                    carried += data.len();
                    out.push(FetchItem::Binary {
                        section: section.clone(),
                        origin: partial.map(|(start, _)| start),
                        data,
                    });
                    continue;
                }
                MessageDataItemName::BinarySize { section } => {
                    let Ok(decoded) = binary(section) else {
                        ended = Some(unknown_cte());
                        break 'messages;
                    };
                    MessageDataItem::BinarySize {
                        section: section.clone(),
                        size: u32::try_from(decoded.len()).unwrap_or(u32::MAX),
                    }
                }
            };
            out.push(FetchItem::Item(codec_item));
        }
        if carried > allowance {
            ended = Some(too_much_asked());
            break 'messages;
        }
        if newly_seen {
            seen.push(index);
            if !flags_sent {
                out.push(FetchItem::Item(MessageDataItem::Flags(
                    message.fetch_flags(true),
                )));
            }
        }
        if let Some(seq) = NonZeroU32::new(index as u32 + 1) {
            imap.fetch(seq, out);
        }
        if imap.output().len() >= FLUSH_AT {
            io.write_all(imap.output()).await?;
            imap.clear_output();
        }
    }
    if gathered.len() > 0 {
        gathered.write_to(io).await?;
    }
    conn.shard.imap_metrics.fetched.inc_by(picked.len() as u64);
    if !seen.is_empty() {
        let view = conn.view.as_ref().expect("checked above");
        let mut batch = WriteBatch::new();
        for &index in &seen {
            batch.change(Change::SetFlags {
                user: view.user.clone(),
                mailbox: view.name.clone(),
                uidvalidity: view.uidvalidity,
                uid: view.messages[index].uid,
                how: FlagChange::Add,
                flags: Flags {
                    system: flag::SEEN,
                    keywords: Vec::new(),
                },
                unchanged_since: None,
            });
        }
        let applied = match conn.commit(batch).await {
            Ok(applied) => applied,
            Err(e) => return Ok(Err(e)),
        };
        let view = conn.view.as_mut().expect("checked above");
        for (index, applied) in seen.into_iter().zip(applied) {
            if let Applied::Flags { flags, modseq } = applied {
                view.messages[index].row.flags = flags;
                view.messages[index].row.modseq = modseq;
                view.highest_modseq = view.highest_modseq.max(modseq);
                // RFC 7162 §3.1: under CONDSTORE the flags \Seen changed
                // go out with the modseq of that change, which the FETCH
                // above could not know yet.
                if imap.is_condstore() {
                    let message = &view.messages[index];
                    let mut out = Vec::with_capacity(3);
                    if uid || imap.is_qresync() {
                        if let Some(uid) = NonZeroU32::new(message.uid) {
                            out.push(FetchItem::Item(MessageDataItem::Uid(uid)));
                        }
                    }
                    out.push(FetchItem::Item(MessageDataItem::Flags(
                        message.fetch_flags(false),
                    )));
                    out.push(FetchItem::Item(message.modseq_item()));
                    if let Some(seq) = NonZeroU32::new(index as u32 + 1) {
                        imap.fetch(seq, out);
                    }
                }
            }
        }
    }
    // RFC 9051 §6.4.9: a UID FETCH ignores UIDs that no longer exist (the
    // EXPUNGE comes with the answer); a FETCH by number says they are gone
    // (RFC 2180 §4.1.2).
    if let Some(ended) = ended {
        return Ok(Ok(ended));
    }
    Ok(Ok(if missing && !uid {
        Done::No(
            Some("EXPUNGEISSUED"),
            "some of the requested messages no longer exist",
        )
    } else {
        Done::Ok("FETCH completed")
    }))
}

/// Items that would copy one message's data more than twice over.
fn too_much_asked() -> Done {
    Done::No(
        Some("LIMIT"),
        "the items asked for carry more than twice the message; ask for fewer",
    )
}

/// A part whose transfer encoding BINARY cannot remove (RFC 3516 §4.3).
fn unknown_cte() -> Done {
    Done::No(
        Some("UNKNOWN-CTE"),
        "a requested part has an unknown Content-Transfer-Encoding",
    )
}

/// A FETCH of nothing but UID, FLAGS, RFC822.SIZE and the whole message
/// (BODY[], BODY.PEEK[], RFC822): what a client syncing a mailbox asks for.
/// Such responses are written directly, without building imap-codec values.
struct Plain {
    /// The items, in the order asked.
    items: Vec<PlainItem>,
}

#[derive(Clone, Copy)]
enum PlainItem {
    Uid,
    Flags,
    Size,
    /// The whole message, under this name.
    Body(&'static str),
}

/// The [`Plain`] form of `items`, if they all have one.
fn plain_items(items: &[MessageDataItemName<'_>]) -> Option<Plain> {
    let items = items
        .iter()
        .map(|item| match item {
            MessageDataItemName::Uid => Some(PlainItem::Uid),
            MessageDataItemName::Flags => Some(PlainItem::Flags),
            MessageDataItemName::Rfc822Size => Some(PlainItem::Size),
            MessageDataItemName::BodyExt {
                section: None,
                partial: None,
                ..
            } => Some(PlainItem::Body("BODY[]")),
            MessageDataItemName::Rfc822 => Some(PlainItem::Body("RFC822")),
            _ => None,
        })
        .collect::<Option<Vec<_>>>()?;
    // Exactly one body: the response is then head, body, tail.
    let bodies = items
        .iter()
        .filter(|i| matches!(i, PlainItem::Body(_)))
        .count();
    (bodies == 1).then_some(Plain { items })
}

impl Plain {
    /// `* seq FETCH (...)` for one message: the items before the body, the
    /// body (lent by the store), the items after it.
    fn write<'a>(
        &self,
        out: &mut Gather<'a>,
        seq: usize,
        message: &Message,
        body: Pinned<'a>,
        seen: bool,
    ) {
        let flags = flags_text(message, seen);
        let mut flags_written = false;
        let (mut pre, mut post) = (format!("* {seq} FETCH ("), String::new());
        let mut text = &mut pre;
        for (i, item) in self.items.iter().enumerate() {
            if i > 0 {
                text.push(' ');
            }
            match item {
                PlainItem::Uid => text.push_str(&format!("UID {}", message.uid)),
                PlainItem::Size => text.push_str(&format!("RFC822.SIZE {}", message.row.size)),
                PlainItem::Flags => {
                    flags_written = true;
                    text.push_str(&flags);
                }
                PlainItem::Body(name) => {
                    text.push_str(&format!("{name} {{{}}}\r\n", body.len()));
                    text = &mut post;
                }
            }
        }
        if seen && !flags_written {
            post.push(' ');
            post.push_str(&flags);
        }
        post.push_str(")\r\n");
        out.text(pre.as_bytes());
        out.body(body);
        out.text(post.as_bytes());
    }
}

/// `FLAGS (...)` of a message as IMAP writes it.
fn flags_text(message: &Message, set_seen: bool) -> String {
    let names: Vec<String> = message
        .fetch_flags(set_seen)
        .iter()
        .map(|f| match f {
            FlagFetch::Flag(flag) => flag.to_string(),
            FlagFetch::Recent => "\\Recent".to_owned(),
        })
        .collect();
    format!("FLAGS ({})", names.join(" "))
}

/// The items a FETCH macro stands for.
fn expand(m: Macro) -> Vec<MessageDataItemName<'static>> {
    let mut items = vec![
        MessageDataItemName::Flags,
        MessageDataItemName::InternalDate,
        MessageDataItemName::Rfc822Size,
    ];
    if matches!(m, Macro::All | Macro::Full) {
        items.push(MessageDataItemName::Envelope);
    }
    if m == Macro::Full {
        items.push(MessageDataItemName::Body);
    }
    items
}

/// Bytes as a literal (a message may hold anything but a NUL; one that
/// does is still sent as stored).
fn literal(bytes: Vec<u8>) -> NString<'static> {
    NString(Some(IString::Literal(Literal::unvalidated(bytes))))
}
