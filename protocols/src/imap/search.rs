//! SEARCH keys (RFC 9051 §6.4.4, RFC 3501 §6.4.4) evaluated against one
//! message of the selected mailbox.
//!
//! The IMAP server walks the mailbox and asks [`matches`] about each
//! message. What the store already keeps per message (sequence number, UID,
//! flags, INTERNALDATE, size) comes in a [`Candidate`]; the stored bytes are
//! fetched through a callback only when the key cannot be decided without
//! them, so `SEARCH UNSEEN` or `UID SEARCH 1:*` never read a body.
//!
//! Evaluation is in two passes. The first one uses only the candidate and
//! answers true, false or "unknown" (three-valued logic, so `OR SEEN BODY x`
//! on a seen message is decided without the content). Only when the answer
//! is unknown are the bytes read, parsed once with mail-parser, and the key
//! evaluated again with them.
//!
//! String keys are case-insensitive substring matches (ASCII and Unicode
//! lowercase) on decoded text: header values with RFC 2047 encoded words
//! decoded and folding removed, body text with its transfer encoding and
//! charset decoded; runs of whitespace count as one space on both sides.
//! When the decoded text does not match, the raw bytes are searched too
//! (ASCII case-insensitive), which catches needles that are not UTF-8 (a
//! literal in another charset) and content mail-parser could not decode.

use std::cell::OnceCell;
use std::sync::Arc;

use chrono::Datelike;
use imap_codec::imap_types::{
    core::AString,
    flag::Flag,
    search::SearchKey,
    sequence::{SeqOrUid, Sequence, SequenceSet},
};
use mail_parser::{parsers::MessageStream, Address, HeaderName, HeaderValue, Message, PartType};

/// What SEARCH may ask about one message of the selected mailbox.
pub struct Candidate<'a> {
    /// 1-based message sequence number.
    pub seq: u32,
    /// Its UID.
    pub uid: u32,
    /// Its flags (system flags as `Flag::Seen` etc., keywords as
    /// `Flag::Keyword`).
    pub flags: &'a [Flag<'static>],
    /// `\Recent` in this session (RFC 3501; never for IMAP4rev2).
    pub recent: bool,
    /// Its modseq (RFC 7162 SEARCH MODSEQ).
    pub modseq: u64,
    /// INTERNALDATE, unix seconds (UTC).
    pub internal_date: i64,
    /// RFC822.SIZE.
    pub size: u64,
}

/// The largest sequence number and UID in the mailbox, for `*` in sets.
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    /// Highest sequence number (the message count; 0 when empty).
    pub max_seq: u32,
    /// Highest UID in the mailbox (0 when empty).
    pub max_uid: u32,
    /// When the search runs, Unix seconds: OLDER and YOUNGER (RFC 5032
    /// WITHIN) count back from it.
    pub now: i64,
}

/// Whether `key` searches by MODSEQ anywhere (the SEARCH response then
/// carries the highest modseq found, RFC 7162 §3.1.5).
pub fn uses_modseq(key: &SearchKey<'_>) -> bool {
    match key {
        SearchKey::ModSequence { .. } => true,
        SearchKey::And(keys) => keys.as_ref().iter().any(uses_modseq),
        SearchKey::Or(a, b) => uses_modseq(a) || uses_modseq(b),
        SearchKey::Not(inner) => uses_modseq(inner),
        _ => false,
    }
}

/// Whether the message matches `key`.
///
/// `message` is called at most once, and only when the key cannot be
/// decided without the content (header, body and text keys, and
/// SENTBEFORE/SENTON/SENTSINCE which use the `Date:` header; LARGER and
/// SMALLER use `candidate.size`). It returns the raw stored bytes, or
/// `None` if they cannot be read: then content keys do not match (so
/// `NOT BODY x` does).
///
/// A SEARCH command's key list is an implicit AND: pass it as
/// `SearchKey::And(criteria)` so the content is read at most once for the
/// whole list.
pub fn matches(
    key: &SearchKey<'_>,
    candidate: &Candidate<'_>,
    bounds: Bounds,
    message: &mut dyn FnMut() -> Option<Arc<[u8]>>,
) -> bool {
    evaluate(key, candidate, bounds, false, message)
}

fn evaluate(
    key: &SearchKey<'_>,
    candidate: &Candidate<'_>,
    bounds: Bounds,
    sets_sorted: bool,
    message: &mut dyn FnMut() -> Option<Arc<[u8]>>,
) -> bool {
    let env = Env {
        candidate,
        bounds,
        sets_sorted,
    };
    if let Some(decided) = eval(key, &env, None) {
        return decided;
    }
    let bytes = message();
    let content = Content::new(bytes.as_deref(), needs_body(key));
    // With content every key is decided; `unwrap_or` only keeps this total.
    eval(key, &env, Some(&content)).unwrap_or(false)
}

/// Whether any key of a SEARCH's key list (which is an implicit AND) needs
/// the message content; lets the server skip reading bodies.
pub fn needs_content(keys: &[SearchKey<'_>]) -> bool {
    keys.iter().any(key_needs_content)
}

fn key_needs_content(key: &SearchKey<'_>) -> bool {
    match key {
        SearchKey::And(keys) => keys.as_ref().iter().any(key_needs_content),
        SearchKey::Not(inner) => key_needs_content(inner),
        SearchKey::Or(a, b) => key_needs_content(a) || key_needs_content(b),
        SearchKey::Bcc(_)
        | SearchKey::Body(_)
        | SearchKey::Cc(_)
        | SearchKey::From(_)
        | SearchKey::Header(..)
        | SearchKey::SentBefore(_)
        | SearchKey::SentOn(_)
        | SearchKey::SentSince(_)
        | SearchKey::Subject(_)
        | SearchKey::Text(_)
        | SearchKey::To(_) => true,
        // Keys from extensions this crate does not enable (WITHIN,
        // CONDSTORE) are never evaluated against content.
        _ => false,
    }
}

/// Whether the key needs the body parsed, not just the header block; a
/// header-only parse skips decoding attachments for SUBJECT and the like.
fn needs_body(key: &SearchKey<'_>) -> bool {
    match key {
        SearchKey::And(keys) => keys.as_ref().iter().any(needs_body),
        SearchKey::Not(inner) => needs_body(inner),
        SearchKey::Or(a, b) => needs_body(a) || needs_body(b),
        SearchKey::Body(_) | SearchKey::Text(_) => true,
        _ => false,
    }
}

/// What the first pass knows: everything but the content.
struct Env<'e> {
    candidate: &'e Candidate<'e>,
    bounds: Bounds,
    /// The key's sets are [`Prepared`]'s: resolved, sorted and merged.
    sets_sorted: bool,
}

/// A SEARCH key made ready for a whole mailbox: its sequence and UID sets
/// resolved against the mailbox's bounds (`*` is a number), sorted and
/// merged, so each message costs a binary search per set instead of a
/// walk over it (a command line may carry ten thousand numbers, and a
/// mailbox a hundred thousand messages).
pub struct Prepared {
    key: SearchKey<'static>,
    bounds: Bounds,
}

impl Prepared {
    /// `key` for a mailbox of `bounds`.
    pub fn new(key: &SearchKey<'_>, bounds: Bounds) -> Prepared {
        Prepared {
            key: with_sorted_sets(key, bounds),
            bounds,
        }
    }

    /// [`matches`], for the prepared key.
    pub fn matches(
        &self,
        candidate: &Candidate<'_>,
        message: &mut dyn FnMut() -> Option<Arc<[u8]>>,
    ) -> bool {
        evaluate(&self.key, candidate, self.bounds, true, message)
    }
}

/// `key` with every set resolved, sorted and merged ([`Prepared`]).
fn with_sorted_sets(key: &SearchKey<'_>, bounds: Bounds) -> SearchKey<'static> {
    use imap_codec::imap_types::core::Vec1;
    use imap_codec::imap_types::IntoStatic;
    let sorted = |set: &SequenceSet, max: u32| -> SequenceSet {
        let mut ranges: Vec<(u32, u32)> = set
            .0
            .as_ref()
            .iter()
            .map(|sequence| {
                let (a, b) = match sequence {
                    Sequence::Single(one) => (*one, *one),
                    Sequence::Range(a, b) => (*a, *b),
                };
                let (a, b) = (resolve(&a, max), resolve(&b, max));
                (a.min(b), a.max(b))
            })
            .filter(|&(_, high)| high > 0)
            .map(|(low, high)| (low.max(1), high))
            .collect();
        ranges.sort_unstable();
        let mut merged: Vec<(u32, u32)> = Vec::with_capacity(ranges.len());
        for (low, high) in ranges {
            match merged.last_mut() {
                Some(last) if low <= last.1.saturating_add(1) => last.1 = last.1.max(high),
                _ => merged.push((low, high)),
            }
        }
        let value = |n: u32| {
            SeqOrUid::Value(std::num::NonZeroU32::new(n).unwrap_or(std::num::NonZeroU32::MIN))
        };
        let sequences: Vec<Sequence> = merged
            .into_iter()
            .map(|(low, high)| Sequence::Range(value(low), value(high)))
            .collect();
        // Only an empty mailbox leaves nothing (`*` is 0): nothing to match.
        match Vec1::try_from(sequences) {
            Ok(sequences) => SequenceSet(sequences),
            Err(_) => set.clone().into_static(),
        }
    };
    match key {
        SearchKey::And(keys) => {
            let keys: Vec<SearchKey<'static>> = keys
                .as_ref()
                .iter()
                .map(|k| with_sorted_sets(k, bounds))
                .collect();
            Vec1::try_from(keys).map_or_else(|_| key.clone().into_static(), SearchKey::And)
        }
        SearchKey::Or(a, b) => SearchKey::Or(
            Box::new(with_sorted_sets(a, bounds)),
            Box::new(with_sorted_sets(b, bounds)),
        ),
        SearchKey::Not(inner) => SearchKey::Not(Box::new(with_sorted_sets(inner, bounds))),
        SearchKey::SequenceSet(set) => SearchKey::SequenceSet(sorted(set, bounds.max_seq)),
        SearchKey::Uid(set) => SearchKey::Uid(sorted(set, bounds.max_uid)),
        other => other.clone().into_static(),
    }
}

/// `None` means "needs the content" and only happens when `content` is
/// `None`. The parser bounds the nesting of NOT/OR/lists, so the recursion
/// depth is small for anything that came off the wire.
fn eval(key: &SearchKey<'_>, env: &Env<'_>, content: Option<&Content<'_>>) -> Option<bool> {
    let c = env.candidate;
    let flag = |f: Flag<'static>| Some(has_flag(c.flags, &f));
    let internal = |cmp: fn(chrono::NaiveDate, chrono::NaiveDate) -> bool,
                    d: &imap_codec::imap_types::datetime::NaiveDate| {
        Some(internal_date(c.internal_date).is_some_and(|day| cmp(day, *d.as_ref())))
    };
    match key {
        SearchKey::And(keys) => {
            let mut unknown = false;
            for k in keys.as_ref() {
                match eval(k, env, content) {
                    Some(false) => return Some(false),
                    Some(true) => {}
                    None => unknown = true,
                }
            }
            if unknown {
                None
            } else {
                Some(true)
            }
        }
        SearchKey::Or(a, b) => match eval(a, env, content) {
            Some(true) => Some(true),
            Some(false) => eval(b, env, content),
            None => match eval(b, env, content) {
                Some(true) => Some(true),
                _ => None,
            },
        },
        SearchKey::Not(inner) => eval(inner, env, content).map(|m| !m),

        SearchKey::All => Some(true),
        // The per-flag entry form is about the flag's own modseq, which is
        // the message's here (RFC 7162 §3.1.5 lets a server do so).
        SearchKey::ModSequence { modseq, .. } => Some(c.modseq >= *modseq),
        SearchKey::Recent => Some(c.recent),
        SearchKey::Old => Some(!c.recent),
        SearchKey::New => Some(c.recent && !has_flag(c.flags, &Flag::Seen)),

        SearchKey::Answered => flag(Flag::Answered),
        SearchKey::Deleted => flag(Flag::Deleted),
        SearchKey::Draft => flag(Flag::Draft),
        SearchKey::Flagged => flag(Flag::Flagged),
        SearchKey::Seen => flag(Flag::Seen),
        SearchKey::Unanswered => flag(Flag::Answered).map(|m| !m),
        SearchKey::Undeleted => flag(Flag::Deleted).map(|m| !m),
        SearchKey::Undraft => flag(Flag::Draft).map(|m| !m),
        SearchKey::Unflagged => flag(Flag::Flagged).map(|m| !m),
        SearchKey::Unseen => flag(Flag::Seen).map(|m| !m),
        SearchKey::Keyword(k) => Some(has_keyword(c.flags, k.inner())),
        SearchKey::Unkeyword(k) => Some(!has_keyword(c.flags, k.inner())),

        SearchKey::Larger(n) => Some(c.size > u64::from(*n)),
        // RFC 5032: by INTERNALDATE, n seconds back from now.
        SearchKey::Older(n) => Some(c.internal_date <= env.bounds.now - i64::from(n.get())),
        SearchKey::Younger(n) => Some(c.internal_date > env.bounds.now - i64::from(n.get())),
        SearchKey::Smaller(n) => Some(c.size < u64::from(*n)),

        SearchKey::SequenceSet(set) if env.sets_sorted => Some(in_sorted_set(set, c.seq)),
        SearchKey::Uid(set) if env.sets_sorted => Some(in_sorted_set(set, c.uid)),
        SearchKey::SequenceSet(set) => Some(in_set(set, c.seq, env.bounds.max_seq)),
        SearchKey::Uid(set) => Some(in_set(set, c.uid, env.bounds.max_uid)),

        SearchKey::Before(d) => internal(|day, d| day < d, d),
        SearchKey::On(d) => internal(|day, d| day == d, d),
        SearchKey::Since(d) => internal(|day, d| day >= d, d),

        SearchKey::SentBefore(d) => content.map(|m| m.sent_date().is_some_and(|s| s < *d.as_ref())),
        SearchKey::SentOn(d) => content.map(|m| m.sent_date().is_some_and(|s| s == *d.as_ref())),
        SearchKey::SentSince(d) => content.map(|m| m.sent_date().is_some_and(|s| s >= *d.as_ref())),

        SearchKey::Bcc(s) => content.map(|m| m.header_contains(b"bcc", &Needle::new(s))),
        SearchKey::Cc(s) => content.map(|m| m.header_contains(b"cc", &Needle::new(s))),
        SearchKey::From(s) => content.map(|m| m.header_contains(b"from", &Needle::new(s))),
        SearchKey::To(s) => content.map(|m| m.header_contains(b"to", &Needle::new(s))),
        SearchKey::Subject(s) => content.map(|m| m.header_contains(b"subject", &Needle::new(s))),
        SearchKey::Header(name, s) => {
            content.map(|m| m.header_contains(name.as_ref(), &Needle::new(s)))
        }
        SearchKey::Body(s) => content.map(|m| m.body_contains(&Needle::new(s))),
        SearchKey::Text(s) => content.map(|m| m.text_contains(&Needle::new(s))),

        // Keys from extensions this crate does not enable (WITHIN's
        // OLDER/YOUNGER, CONDSTORE's MODSEQ) only exist if some other
        // crate turns those features on; the server does not advertise
        // them, so they match nothing.
        #[allow(unreachable_patterns)]
        _ => Some(false),
    }
}

/// System flags are unit variants, so plain equality is exact.
fn has_flag(flags: &[Flag<'static>], wanted: &Flag<'_>) -> bool {
    flags.iter().any(|f| f == wanted)
}

/// Keywords compare case-insensitively (RFC 9051 §2.3.2).
fn has_keyword(flags: &[Flag<'static>], keyword: &str) -> bool {
    flags
        .iter()
        .any(|f| matches!(f, Flag::Keyword(k) if k.inner().eq_ignore_ascii_case(keyword)))
}

/// `*` stands for the largest number in use; a range covers both ends
/// whichever way round it is written (RFC 9051 §9, `seq-range`).
fn in_set(set: &SequenceSet, value: u32, max: u32) -> bool {
    set.0.as_ref().iter().any(|seq| match seq {
        Sequence::Single(s) => resolve(s, max) == value,
        Sequence::Range(a, b) => {
            let (a, b) = (resolve(a, max), resolve(b, max));
            a.min(b) <= value && value <= a.max(b)
        }
    })
}

/// `*` as the largest number in use.
fn resolve(s: &SeqOrUid, max: u32) -> u32 {
    match s {
        SeqOrUid::Value(n) => n.get(),
        SeqOrUid::Asterisk => max,
    }
}

/// [`in_set`] for a set of ranges of numbers, ascending and apart, as
/// [`Prepared`] makes them: a binary search.
fn in_sorted_set(set: &SequenceSet, value: u32) -> bool {
    let ranges = set.0.as_ref();
    let bounds = |s: &Sequence| match s {
        Sequence::Single(one) => (resolve(one, 0), resolve(one, 0)),
        Sequence::Range(a, b) => (resolve(a, 0), resolve(b, 0)),
    };
    let at = ranges.partition_point(|s| bounds(s).1 < value);
    ranges.get(at).is_some_and(|s| bounds(s).0 <= value)
}

/// The UTC calendar day of an INTERNALDATE; `None` for a timestamp chrono
/// cannot represent (then no date key matches).
fn internal_date(secs: i64) -> Option<chrono::NaiveDate> {
    chrono::DateTime::from_timestamp(secs, 0).map(|t| t.date_naive())
}

/// A search string, prepared once per key.
struct Needle {
    /// [`fold`]ed, for decoded text; `None` when not UTF-8.
    text: Option<String>,
    /// ASCII-lowercased bytes, for the raw fallback.
    raw: Vec<u8>,
}

impl Needle {
    fn new(s: &AString<'_>) -> Self {
        let bytes: &[u8] = s.as_ref();
        Needle {
            text: std::str::from_utf8(bytes).ok().map(fold),
            raw: bytes.to_ascii_lowercase(),
        }
    }

    fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// `hay` must already be [`fold`]ed.
    fn in_text(&self, hay: &str) -> bool {
        self.text.as_deref().is_some_and(|n| hay.contains(n))
    }

    /// `hay` must already be ASCII-lowercased.
    fn in_raw(&self, hay: &[u8]) -> bool {
        memchr::memmem::find(hay, &self.raw).is_some()
    }
}

/// The form decoded text is compared in: Unicode lowercase, and every run
/// of whitespace as one space, because unfolding and encoded words leave
/// stray doubled spaces ("a\r\n =?..?= b" decodes with two) and a phrase
/// should match across a line break of the body.
fn fold(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut in_space = false;
    for c in s.chars() {
        if c.is_whitespace() {
            if !in_space {
                out.push(' ');
            }
            in_space = true;
        } else {
            out.extend(c.to_lowercase());
            in_space = false;
        }
    }
    out
}

/// One top-level header field, prepared for searching.
struct HeaderText {
    /// The field name as written.
    name: String,
    /// Decoded renderings of the value, [`fold`]ed.
    decoded: Vec<String>,
    /// Where the raw value lies in the message.
    raw: std::ops::Range<usize>,
}

/// The message content, parsed once, with lowercased views built on first
/// use and shared by every key that needs them.
struct Content<'x> {
    /// `None` when the stored bytes could not be read.
    raw: Option<&'x [u8]>,
    /// `None` when unreadable or when mail-parser found no header at all.
    msg: Option<Message<'x>>,
    raw_lower: OnceCell<Vec<u8>>,
    headers: OnceCell<Vec<HeaderText>>,
    bodies: OnceCell<Vec<String>>,
}

impl<'x> Content<'x> {
    fn new(raw: Option<&'x [u8]>, with_body: bool) -> Self {
        let parser = mail_parser::MessageParser::new();
        let msg = raw.and_then(|r| {
            if !with_body {
                std::panic::catch_unwind(|| parser.parse_headers(r))
                    .ok()
                    .flatten()
            } else if super::mime::may_nest_too_deep(r) {
                // Searched as raw bytes: parsing it could overflow the stack.
                None
            } else {
                // As in `mime`: mail-parser's recovery paths carry debug
                // assertions; one odd message is searched as raw bytes.
                std::panic::catch_unwind(|| parser.parse(r)).ok().flatten()
            }
        });
        Content {
            raw,
            msg,
            raw_lower: OnceCell::new(),
            headers: OnceCell::new(),
            bodies: OnceCell::new(),
        }
    }

    /// ASCII lowercasing keeps byte offsets, so the body offset found by
    /// mail-parser indexes this copy too.
    fn raw_lower(&self) -> &[u8] {
        self.raw_lower
            .get_or_init(|| self.raw.map(<[u8]>::to_ascii_lowercase).unwrap_or_default())
    }

    fn headers(&self) -> &[HeaderText] {
        self.headers.get_or_init(|| {
            let (Some(raw), Some(msg)) = (self.raw, self.msg.as_ref()) else {
                return Vec::new();
            };
            let Some(root) = msg.parts.first() else {
                return Vec::new();
            };
            root.headers
                .iter()
                .map(|h| {
                    let range = h.offset_start as usize..h.offset_end as usize;
                    let value = raw.get(range.clone()).unwrap_or_default();
                    let mut decoded = Vec::new();
                    // Re-read every field as unstructured text: mail-parser
                    // keeps unknown fields raw, and HEADER may name any.
                    if let HeaderValue::Text(t) = MessageStream::new(value).parse_unstructured() {
                        decoded.push(fold(&t));
                    }
                    // Address fields also as "name <addr>", with encoded
                    // words in display names decoded by the address parser.
                    if let HeaderValue::Address(a) = &h.value {
                        address_texts(a, &mut decoded);
                    }
                    HeaderText {
                        name: h.name.as_str().to_owned(),
                        decoded,
                        raw: range,
                    }
                })
                .collect()
        })
    }

    fn bodies(&self) -> &[String] {
        self.bodies.get_or_init(|| {
            let mut out = Vec::new();
            if let Some(msg) = &self.msg {
                body_texts(msg, 0, &mut out);
            }
            out
        })
    }

    /// HEADER semantics: some field called `name` contains the needle; an
    /// empty needle only asks that the field exists.
    fn header_contains(&self, name: &[u8], needle: &Needle) -> bool {
        let raw = self.raw.unwrap_or_default();
        self.headers()
            .iter()
            .filter(|h| h.name.as_bytes().eq_ignore_ascii_case(name))
            .any(|h| {
                needle.is_empty()
                    || h.decoded.iter().any(|d| needle.in_text(d))
                    // Lowercase just this value: a header-only search
                    // should not copy a large body.
                    || raw
                        .get(h.raw.clone())
                        .is_some_and(|r| needle.in_raw(&r.to_ascii_lowercase()))
            })
    }

    /// TEXT: any decoded header value, any decoded text part, then the
    /// whole raw message (which also holds the field names).
    fn text_contains(&self, needle: &Needle) -> bool {
        if self.raw.is_none() {
            return false;
        }
        needle.is_empty()
            || self
                .headers()
                .iter()
                .any(|h| h.decoded.iter().any(|d| needle.in_text(d)))
            || self.bodies().iter().any(|b| needle.in_text(b))
            || needle.in_raw(self.raw_lower())
    }

    /// BODY: decoded text parts, then the raw body.
    fn body_contains(&self, needle: &Needle) -> bool {
        if self.raw.is_none() {
            return false;
        }
        if needle.is_empty() || self.bodies().iter().any(|b| needle.in_text(b)) {
            return true;
        }
        self.raw_lower()
            .get(self.body_offset()..)
            .is_some_and(|r| needle.in_raw(r))
    }

    /// Where the top-level body starts; 0 when mail-parser found no
    /// header (then the whole message is body).
    fn body_offset(&self) -> usize {
        self.msg
            .as_ref()
            .and_then(|m| m.parts.first())
            .map_or(0, |p| p.offset_body as usize)
    }

    /// The `Date:` field's calendar date in its own timezone (RFC 9051:
    /// disregarding time and timezone); the last one wins if repeated, as
    /// mail-parser's own accessors do.
    fn sent_date(&self) -> Option<chrono::NaiveDate> {
        let root = self.msg.as_ref()?.parts.first()?;
        let date = root
            .headers
            .iter()
            .rev()
            .find(|h| h.name == HeaderName::Date)?
            .value
            .as_datetime()?;
        chrono::NaiveDate::from_ymd_opt(
            i32::from(date.year),
            u32::from(date.month),
            u32::from(date.day),
        )
        // Reject the zero dates a lenient parse can leave behind.
        .filter(|d| d.year() > 0)
    }
}

fn address_texts(address: &Address<'_>, out: &mut Vec<String>) {
    let mut push = |name: Option<&str>, addr: Option<&str>| {
        let text = match (name, addr) {
            (Some(n), Some(a)) => format!("{n} <{a}>"),
            (Some(n), None) => n.to_owned(),
            (None, Some(a)) => a.to_owned(),
            (None, None) => return,
        };
        out.push(fold(&text));
    };
    match address {
        Address::List(list) => {
            for a in list {
                push(a.name.as_deref(), a.address.as_deref());
            }
        }
        Address::Group(groups) => {
            for g in groups {
                push(g.name.as_deref(), None);
                for a in &g.addresses {
                    push(a.name.as_deref(), a.address.as_deref());
                }
            }
        }
    }
}

/// Attached messages searched into. mail-parser itself nests without a
/// limit: messages that could nest deeper than `mime`'s limit are not
/// parsed at all (`mime::may_nest_too_deep`).
const MAX_NESTED_MESSAGES: usize = 8;

/// Decoded, lowercased text of every text part (plain and HTML), including
/// those of attached messages, whose header values count as body text of
/// the outer message too.
fn body_texts(msg: &Message<'_>, depth: usize, out: &mut Vec<String>) {
    for part in &msg.parts {
        match &part.body {
            PartType::Text(t) | PartType::Html(t) => out.push(fold(t)),
            PartType::Message(inner) if depth < MAX_NESTED_MESSAGES => {
                if let Some(root) = inner.parts.first() {
                    for h in &root.headers {
                        let value = inner
                            .raw_message
                            .get(h.offset_start as usize..h.offset_end as usize)
                            .unwrap_or_default();
                        if let HeaderValue::Text(t) = MessageStream::new(value).parse_unstructured()
                        {
                            out.push(fold(&t));
                        }
                    }
                }
                body_texts(inner, depth + 1, out);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use imap_codec::decode::Decoder;
    use imap_codec::imap_types::command::CommandBody;
    use imap_codec::imap_types::core::{Atom, Vec1};
    use imap_codec::imap_types::datetime::NaiveDate;
    use imap_codec::CommandCodec;
    use std::cell::Cell;

    /// Parses `A SEARCH <criteria>` with imap-codec; a list of several keys
    /// becomes `And`, as the server will pass it.
    fn key(criteria: &str) -> SearchKey<'static> {
        let line = format!("A SEARCH {criteria}\r\n");
        let (rest, cmd) = CommandCodec::new()
            .decode_static(line.as_bytes())
            .unwrap_or_else(|e| panic!("{criteria:?} does not parse: {e:?}"));
        assert!(rest.is_empty());
        let CommandBody::Search { criteria, .. } = cmd.body else {
            panic!("not a SEARCH: {criteria:?}");
        };
        if criteria.as_ref().len() == 1 {
            criteria.into_inner().remove(0)
        } else {
            SearchKey::And(criteria)
        }
    }

    const B: Bounds = Bounds {
        now: 1_700_000_000,
        max_seq: 10,
        max_uid: 100,
    };

    /// 2023-01-03T00:00:00Z.
    const JAN3: i64 = 1_672_704_000;

    fn cand<'a>(flags: &'a [Flag<'static>]) -> Candidate<'a> {
        Candidate {
            seq: 3,
            uid: 42,
            flags,
            recent: false,
            modseq: 7,
            internal_date: JAN3,
            size: 1000,
        }
    }

    #[test]
    fn prepared_sets_decide_as_the_sets_as_written() {
        // Overlapping, reversed, adjacent and `*` ranges, singles among
        // them, in both kinds of set, nested in NOT and OR.
        for criteria in [
            "5:2,9,*:8,20:*",
            "UID 5:2,9,*:98,40,41,42,60:50",
            "NOT 3,4:6",
            "OR UID 1:10 7:*",
            "1:*",
            "UID *",
            "2,4,6,8,10,3,5,7,9,1",
        ] {
            let key = key(criteria);
            let prepared = Prepared::new(&key, B);
            for seq in 1..=B.max_seq {
                for uid in [1, 2, 5, 9, 10, 11, 40, 42, 43, 50, 55, 60, 98, 99, 100] {
                    let c = Candidate {
                        seq,
                        uid,
                        ..cand(&[])
                    };
                    let written = matches(&key, &c, B, &mut || None);
                    let sorted = prepared.matches(&c, &mut || None);
                    assert_eq!(written, sorted, "{criteria}: seq {seq} uid {uid}");
                }
            }
        }
    }

    /// Evaluates with `bytes` as content; returns the result and how many
    /// times the content was asked for.
    fn run_with(k: &SearchKey<'_>, c: &Candidate<'_>, bytes: Option<&[u8]>) -> (bool, usize) {
        let calls = Cell::new(0);
        let mut load = || {
            calls.set(calls.get() + 1);
            bytes.map(Arc::from)
        };
        let m = matches(k, c, B, &mut load);
        (m, calls.get())
    }

    fn on_msg(criteria: &str, msg: &[u8]) -> bool {
        let (m, calls) = run_with(&key(criteria), &cand(&[]), Some(msg));
        assert!(calls <= 1);
        m
    }

    /// Flag/size/uid/seq/date-only evaluation; asserts the content was
    /// not read.
    fn no_content(criteria: &str, c: &Candidate<'_>) -> bool {
        let (m, calls) = run_with(&key(criteria), c, Some(SIMPLE));
        assert_eq!(calls, 0, "{criteria} read the message");
        m
    }

    const SIMPLE: &[u8] = b"Date: Mon, 02 Jan 2023 23:30:00 -0500\r\n\
From: \"Alice Example\" <alice@example.com>\r\n\
To: bob@example.org, Carol <carol@example.net>\r\n\
Cc: dave@example.com\r\n\
Bcc: eve@example.com\r\n\
Subject: =?UTF-8?B?Q2Fmw6kgbWVldGluZw==?=\r\n\
X-Custom: folded\r\n\
\x20 value here\r\n\
X-Empty:\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
Content-Transfer-Encoding: quoted-printable\r\n\
\r\n\
Soft=\r\n\
break caf=C3=A9 body\r\n";

    const MULTIPART: &[u8] = b"Date: 3 Jan 2023 00:00:01 +0000\r\n\
From: =?ISO-8859-1?Q?Andr=E9?= <andre@example.com>\r\n\
To: undisclosed-recipients:;\r\n\
Subject: =?UTF-8?Q?R=C3=A9sum=C3=A9?= and\r\n\
\x20=?UTF-8?B?IGF0dGFjaGVk?=\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"b1\"\r\n\
\r\n\
preamble\r\n\
--b1\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
Content-Transfer-Encoding: base64\r\n\
\r\n\
SGVsbG8gZnJvbSB0aGUgYmFzZTY0IHBhcnQsIMOcQkVSIHdpY2h0aWcuDQo=\r\n\
--b1\r\n\
Content-Type: text/html; charset=utf-8\r\n\
\r\n\
<p>Html <b>part</b></p>\r\n\
--b1\r\n\
Content-Type: message/rfc822\r\n\
\r\n\
Subject: inner subject line\r\n\
From: inner@example.com\r\n\
\r\n\
inner body words\r\n\
--b1\r\n\
Content-Type: application/octet-stream\r\n\
Content-Transfer-Encoding: base64\r\n\
\r\n\
AAECAwQFBgc=\r\n\
--b1--\r\n";

    #[test]
    fn flag_keys_and_their_negations() {
        let flags = [
            Flag::Seen,
            Flag::Flagged,
            Flag::Keyword(Atom::try_from("$Forwarded").unwrap()),
        ];
        let c = cand(&flags);
        assert!(no_content("SEEN", &c));
        assert!(!no_content("UNSEEN", &c));
        assert!(no_content("FLAGGED", &c));
        assert!(!no_content("UNFLAGGED", &c));
        assert!(!no_content("ANSWERED", &c));
        assert!(no_content("UNANSWERED", &c));
        assert!(!no_content("DELETED", &c));
        assert!(no_content("UNDELETED", &c));
        assert!(!no_content("DRAFT", &c));
        assert!(no_content("UNDRAFT", &c));
        // Keywords compare case-insensitively.
        assert!(no_content("KEYWORD $forwarded", &c));
        assert!(no_content("KEYWORD $FORWARDED", &c));
        assert!(!no_content("UNKEYWORD $Forwarded", &c));
        assert!(!no_content("KEYWORD $Junk", &c));
        assert!(no_content("UNKEYWORD $Junk", &c));

        let c = cand(&[Flag::Answered, Flag::Deleted, Flag::Draft]);
        assert!(no_content("ANSWERED", &c));
        assert!(no_content("DELETED", &c));
        assert!(no_content("DRAFT", &c));
        assert!(no_content("UNSEEN", &c));
        assert!(!no_content("KEYWORD $Forwarded", &c));
    }

    #[test]
    fn all_old_new_recent() {
        let c = cand(&[]);
        assert!(no_content("ALL", &c));
        assert!(no_content("OLD", &c));
        assert!(!no_content("RECENT", &c));
        assert!(!no_content("NEW", &c));
        assert!(no_content("NOT NEW", &c));
        let seen = [Flag::Seen];
        assert!(!no_content("NEW", &cand(&seen)));
        // \Recent (IMAP4rev1): NEW is recent and unseen, OLD not recent.
        let recent = Candidate {
            recent: true,
            ..cand(&[])
        };
        assert!(no_content("RECENT", &recent));
        assert!(no_content("NEW", &recent));
        assert!(!no_content("OLD", &recent));
        let recent_seen = Candidate {
            recent: true,
            ..cand(&seen)
        };
        assert!(!no_content("NEW", &recent_seen));
        assert!(no_content("RECENT SEEN", &recent_seen));
    }

    #[test]
    fn modseq() {
        let c = cand(&[]); // modseq 7
        assert!(no_content("MODSEQ 7", &c));
        assert!(no_content("MODSEQ 1", &c));
        assert!(!no_content("MODSEQ 8", &c));
        assert!(no_content("MODSEQ \"/flags/\\\\seen\" all 7", &c));
    }

    #[test]
    fn larger_smaller() {
        let c = cand(&[]); // size 1000
        assert!(no_content("LARGER 999", &c));
        assert!(!no_content("LARGER 1000", &c));
        assert!(no_content("SMALLER 1001", &c));
        assert!(!no_content("SMALLER 1000", &c));
        let big = Candidate {
            size: u64::from(u32::MAX) + 5,
            ..cand(&[])
        };
        assert!(no_content("LARGER 4294967295", &big));
        assert!(!no_content("SMALLER 4294967295", &big));
    }

    #[test]
    fn older_and_younger_count_back_from_now() {
        // B.now is 1_700_000_000; 100 s before it:
        let c = Candidate {
            internal_date: 1_700_000_000 - 100,
            ..cand(&[])
        };
        assert!(no_content("OLDER 100", &c));
        assert!(!no_content("OLDER 101", &c));
        assert!(no_content("YOUNGER 101", &c));
        assert!(!no_content("YOUNGER 100", &c));
        assert!(no_content("NOT YOUNGER 50", &c));
    }

    #[test]
    fn sequence_sets() {
        let c = cand(&[]); // seq 3 of 10
        assert!(no_content("3", &c));
        assert!(no_content("1,3", &c));
        assert!(no_content("2:4", &c));
        assert!(!no_content("4:6", &c));
        assert!(!no_content("*", &c));
        assert!(no_content("1:*", &c));
        let last = Candidate {
            seq: 10,
            ..cand(&[])
        };
        assert!(no_content("*", &last));
        assert!(no_content("8:*", &last));
        assert!(!no_content("1:9", &last));

        // Reversed ranges, built directly (the codec's parser may normalize
        // them before we see them).
        let set = |s: &str| SequenceSet::try_from(s).unwrap();
        let rev = SearchKey::SequenceSet(set("5:2"));
        assert_eq!(run_with(&rev, &c, None), (true, 0));
        let rev_star = SearchKey::SequenceSet(set("*:3"));
        assert_eq!(run_with(&rev_star, &c, None), (true, 0));
        // `*` beyond the mailbox: 15:* is 10:15, so seq 10 is in it.
        let beyond = SearchKey::SequenceSet(set("15:*"));
        assert_eq!(run_with(&beyond, &last, None), (true, 0));
        assert_eq!(run_with(&beyond, &c, None), (false, 0));
    }

    #[test]
    fn uid_sets() {
        let c = cand(&[]); // uid 42, max 100
        assert!(no_content("UID 42", &c));
        assert!(no_content("UID 1:50", &c));
        assert!(no_content("UID 50:1", &c));
        assert!(!no_content("UID 43:*", &c));
        assert!(!no_content("UID *", &c));
        let top = Candidate {
            uid: 100,
            ..cand(&[])
        };
        assert!(no_content("UID *", &top));
        // RFC 9051: UID 200:* matches the highest UID even though it is
        // below 200.
        assert!(no_content("UID 200:*", &top));
        let set = SequenceSet::try_from("60:40,1").unwrap();
        assert_eq!(run_with(&SearchKey::Uid(set), &c, None), (true, 0));
        // Empty mailbox bounds: `*` is 0 and matches no real UID.
        let empty = Bounds {
            now: 0,
            max_seq: 0,
            max_uid: 0,
        };
        let k = key("UID *");
        assert!(!matches(&k, &c, empty, &mut || None));
    }

    #[test]
    fn internal_dates_around_midnight_utc() {
        let at = |t: i64| Candidate {
            internal_date: t,
            ..cand(&[])
        };
        let before_midnight = at(JAN3 - 1); // 2023-01-02T23:59:59Z
        let midnight = at(JAN3); // 2023-01-03T00:00:00Z
        assert!(no_content("ON 2-Jan-2023", &before_midnight));
        assert!(!no_content("ON 3-Jan-2023", &before_midnight));
        assert!(no_content("BEFORE 3-Jan-2023", &before_midnight));
        assert!(!no_content("SINCE 3-Jan-2023", &before_midnight));
        assert!(no_content("SINCE 2-Jan-2023", &before_midnight));

        assert!(no_content("ON 3-Jan-2023", &midnight));
        assert!(!no_content("BEFORE 3-Jan-2023", &midnight));
        assert!(no_content("SINCE 3-Jan-2023", &midnight));
        assert!(!no_content("SINCE 4-Jan-2023", &midnight));
        assert!(no_content("BEFORE \"4-Jan-2023\"", &midnight));

        // A timestamp chrono cannot represent matches no date key, and
        // does not panic.
        let absurd = at(i64::MAX);
        assert!(!no_content("ON 3-Jan-2023", &absurd));
        assert!(!no_content("BEFORE 3-Jan-2023", &absurd));
        assert!(no_content("NOT SINCE 3-Jan-2023", &absurd));
    }

    #[test]
    fn sent_dates_use_the_date_header_in_its_own_zone() {
        // 23:30 -0500 on Jan 2 is Jan 3 in UTC; the header's own date counts.
        assert!(on_msg("SENTON 2-Jan-2023", SIMPLE));
        assert!(!on_msg("SENTON 3-Jan-2023", SIMPLE));
        assert!(on_msg("SENTBEFORE 3-Jan-2023", SIMPLE));
        assert!(!on_msg("SENTBEFORE 2-Jan-2023", SIMPLE));
        assert!(on_msg("SENTSINCE 2-Jan-2023", SIMPLE));
        assert!(!on_msg("SENTSINCE 3-Jan-2023", SIMPLE));
        // Just after midnight UTC.
        assert!(on_msg("SENTON 3-Jan-2023", MULTIPART));
        assert!(on_msg("SENTSINCE 3-Jan-2023", MULTIPART));
        assert!(!on_msg("SENTBEFORE 3-Jan-2023", MULTIPART));

        let no_date = b"Subject: hi\r\n\r\nbody\r\n";
        let bad_date = b"Date: not a date at all\r\nSubject: hi\r\n\r\nbody\r\n";
        for msg in [&no_date[..], &bad_date[..]] {
            assert!(!on_msg("SENTON 2-Jan-2023", msg));
            assert!(!on_msg("SENTBEFORE 1-Jan-9999", msg));
            assert!(!on_msg("SENTSINCE 1-Jan-1900", msg));
            assert!(on_msg("NOT SENTSINCE 1-Jan-1900", msg));
        }
    }

    #[test]
    fn address_and_subject_keys() {
        assert!(on_msg("FROM alice", SIMPLE));
        assert!(on_msg("FROM \"ALICE EXAMPLE\"", SIMPLE));
        assert!(on_msg("FROM \"example <alice@\"", SIMPLE));
        assert!(!on_msg("FROM bob", SIMPLE));
        assert!(on_msg("TO carol@example.net", SIMPLE));
        assert!(on_msg("TO BOB", SIMPLE));
        assert!(!on_msg("TO alice", SIMPLE));
        assert!(on_msg("CC dave", SIMPLE));
        assert!(!on_msg("CC eve", SIMPLE));
        assert!(on_msg("BCC eve", SIMPLE));
        assert!(!on_msg("BCC dave", SIMPLE));
        // Encoded-word subject, decoded, Unicode case-insensitive.
        assert!(on_msg("SUBJECT meeting", SIMPLE));
        assert!(!on_msg("SUBJECT \"cafe\"", SIMPLE));
        let cafe = SearchKey::Subject(AString::try_from("CAFÉ MEET").unwrap());
        assert_eq!(run_with(&cafe, &cand(&[]), Some(SIMPLE)), (true, 1));
        // Folded, two encoded words (the space inside the second one is
        // kept, the fold between them is not).
        let resume = SearchKey::Subject(AString::try_from("résumé and attached").unwrap());
        assert!(run_with(&resume, &cand(&[]), Some(MULTIPART)).0);
        // ISO-8859-1 encoded display name.
        let andre = SearchKey::From(AString::try_from("andré").unwrap());
        assert!(run_with(&andre, &cand(&[]), Some(MULTIPART)).0);
        // Empty string: the field must exist.
        assert!(on_msg("CC \"\"", SIMPLE));
        assert!(!on_msg("CC \"\"", MULTIPART));
        // Address keys do not look at the body.
        assert!(!on_msg("FROM inner", MULTIPART));
    }

    #[test]
    fn header_key() {
        assert!(on_msg("HEADER X-Custom \"folded value\"", SIMPLE));
        assert!(on_msg("HEADER x-custom VALUE", SIMPLE));
        assert!(!on_msg("HEADER X-Custom nothing", SIMPLE));
        assert!(on_msg("HEADER X-Empty \"\"", SIMPLE));
        assert!(on_msg("HEADER x-custom \"\"", SIMPLE));
        assert!(!on_msg("HEADER X-Missing \"\"", SIMPLE));
        assert!(on_msg("HEADER Subject \"caf\"", SIMPLE));
        assert!(on_msg("HEADER Content-Type plain", SIMPLE));
        assert!(on_msg("HEADER Date 2023", SIMPLE));
        assert!(on_msg("HEADER MIME-Version 1.0", MULTIPART));
        // The raw encoded form is found by the raw fallback.
        assert!(on_msg("HEADER subject =?utf-8?b?", SIMPLE));
        // Headers of parts are not the message's header.
        assert!(!on_msg(
            "HEADER Content-Transfer-Encoding base64",
            MULTIPART
        ));
    }

    #[test]
    fn body_and_text() {
        // Quoted-printable soft line break and =C3=A9, decoded.
        assert!(on_msg("BODY softbreak", SIMPLE));
        let cafe = SearchKey::Body(AString::try_from("CAFÉ BODY").unwrap());
        assert!(run_with(&cafe, &cand(&[]), Some(SIMPLE)).0);
        // Raw fallback: the encoded form is in the stored bytes.
        assert!(on_msg("BODY =c3=a9", SIMPLE));
        assert!(!on_msg("BODY meeting", SIMPLE));
        assert!(!on_msg("BODY alice", SIMPLE));
        assert!(on_msg("BODY \"\"", SIMPLE));

        // Base64 text part, HTML part, attached message, raw preamble.
        let uber = SearchKey::Body(AString::try_from("über wichtig").unwrap());
        assert!(run_with(&uber, &cand(&[]), Some(MULTIPART)).0);
        assert!(on_msg("BODY \"<b>part</b>\"", MULTIPART));
        assert!(on_msg("BODY \"inner body\"", MULTIPART));
        assert!(on_msg("BODY \"inner subject\"", MULTIPART));
        assert!(on_msg("BODY preamble", MULTIPART));
        let resume = SearchKey::Body(AString::try_from("Résumé").unwrap());
        assert!(!run_with(&resume, &cand(&[]), Some(MULTIPART)).0);
        // Whitespace runs count as one space, across line breaks too.
        assert!(on_msg("BODY \"body   words\"", MULTIPART));

        // TEXT: header or body, including field names.
        assert!(on_msg("TEXT meeting", SIMPLE));
        assert!(on_msg("TEXT softbreak", SIMPLE));
        assert!(on_msg("TEXT x-custom", SIMPLE));
        assert!(on_msg("TEXT \"dave@\"", SIMPLE));
        assert!(!on_msg("TEXT nowhere", SIMPLE));
        assert!(on_msg("TEXT \"\"", SIMPLE));
    }

    #[test]
    fn needle_that_is_not_utf8_uses_the_raw_bytes() {
        let latin1 = b"Subject: caf\xe9 latin1\r\n\r\nna\xefve body\r\n";
        let k = |bytes: &'static [u8], body: bool| {
            let s = AString::try_from(bytes.to_vec()).unwrap();
            if body {
                SearchKey::Body(s)
            } else {
                SearchKey::Subject(s)
            }
        };
        assert!(run_with(&k(b"CAF\xe9", false), &cand(&[]), Some(latin1)).0);
        assert!(run_with(&k(b"na\xefve", true), &cand(&[]), Some(latin1)).0);
        assert!(!run_with(&k(b"na\xefve", false), &cand(&[]), Some(latin1)).0);
    }

    #[test]
    fn literal_search_strings_parse() {
        let line = b"A SEARCH CHARSET UTF-8 TEXT {6}\r\ncaf\xc3\xa9!\r\n";
        let (_, cmd) = CommandCodec::new().decode_static(line).unwrap();
        let CommandBody::Search { criteria, .. } = cmd.body else {
            panic!("not SEARCH");
        };
        let k = SearchKey::And(criteria);
        let msg = b"Subject: Caf\xc3\xa9!\r\n\r\nx\r\n";
        assert!(run_with(&k, &cand(&[]), Some(msg)).0);
    }

    #[test]
    fn nested_not_or_and() {
        let flags = [Flag::Seen];
        let c = cand(&flags);
        assert!(no_content("NOT UNSEEN", &c));
        assert!(!no_content("NOT NOT UNSEEN", &c));
        assert!(no_content("OR UNSEEN SEEN", &c));
        assert!(!no_content("OR UNSEEN DELETED", &c));
        assert!(no_content("(SEEN UNDELETED)", &c));
        assert!(!no_content("(SEEN DELETED)", &c));
        assert!(no_content("SEEN UNDELETED 3 UID 42", &c));
        assert!(!no_content("SEEN UNDELETED 4", &c));
        assert!(no_content("OR (DELETED SEEN) NOT (FLAGGED OR 1 2)", &c));
        assert!(no_content("NOT OR DELETED (FLAGGED SEEN)", &c));
        assert!(!no_content("NOT OR DELETED (SEEN 3)", &c));

        // Mixed with content keys.
        assert!(on_msg("OR DELETED (SUBJECT meeting UNSEEN)", SIMPLE));
        let (m, calls) = run_with(
            &key("OR DELETED (SUBJECT meeting UNSEEN)"),
            &c,
            Some(SIMPLE),
        );
        assert!(!m);
        // UNSEEN is false for this message, so the subject is never needed.
        assert_eq!(calls, 0);
        let (m, calls) = run_with(&key("NOT (SEEN NOT FROM alice)"), &c, Some(SIMPLE));
        assert!(m);
        assert_eq!(calls, 1);
        let (m, calls) = run_with(&key("OR SEEN BODY x"), &c, Some(SIMPLE));
        assert!(m);
        assert_eq!(calls, 0);
        let (m, calls) = run_with(
            &key("SUBJECT meeting FROM alice BODY softbreak TEXT bob"),
            &c,
            Some(SIMPLE),
        );
        assert!(m);
        assert_eq!(calls, 1);
        let (m, _) = run_with(
            &key("SUBJECT meeting FROM alice BODY nope"),
            &c,
            Some(SIMPLE),
        );
        assert!(!m);
    }

    #[test]
    fn content_is_read_at_most_once_and_only_when_needed() {
        let flags = [Flag::Seen];
        let c = cand(&flags);
        for criteria in [
            "ALL",
            "SEEN",
            "UNSEEN",
            "LARGER 10",
            "SMALLER 10",
            "UID 1:*",
            "1:*",
            "BEFORE 1-Jan-2024",
            "ON 3-Jan-2023",
            "SINCE 1-Jan-2000",
            "KEYWORD x",
            "NOT (DELETED OR FLAGGED 4)",
        ] {
            let (_, calls) = run_with(&key(criteria), &c, Some(SIMPLE));
            assert_eq!(calls, 0, "{criteria}");
            assert!(!needs_content(&[key(criteria)]), "{criteria}");
        }
        for criteria in [
            "SUBJECT x",
            "FROM x",
            "TO x",
            "CC x",
            "BCC x",
            "HEADER X-Custom x",
            "BODY x",
            "TEXT x",
            "SENTON 1-Jan-2020",
            "SENTBEFORE 1-Jan-2020",
            "SENTSINCE 1-Jan-2020",
            "NOT BODY x",
            "OR SEEN BODY x",
            "(SEEN TEXT x)",
        ] {
            assert!(needs_content(&[key(criteria)]), "{criteria}");
        }
        // Content-free AND content keys in one list.
        assert!(needs_content(&[key("SEEN"), key("SUBJECT x")]));
        assert!(!needs_content(&[key("SEEN"), key("UID 4")]));
        assert!(!needs_content(&[]));
    }

    #[test]
    fn unreadable_content_matches_no_content_key() {
        let c = cand(&[]);
        for criteria in [
            "SUBJECT \"\"",
            "FROM a",
            "HEADER X-Custom \"\"",
            "BODY \"\"",
            "TEXT \"\"",
            "SENTSINCE 1-Jan-1900",
        ] {
            assert_eq!(run_with(&key(criteria), &c, None), (false, 1), "{criteria}");
        }
        assert_eq!(run_with(&key("NOT BODY x"), &c, None), (true, 1));
        assert_eq!(run_with(&key("ALL BODY x"), &c, None), (false, 1));
    }

    #[test]
    fn odd_content_does_not_panic() {
        let inputs: [&[u8]; 8] = [
            b"",
            b"\r\n\r\n",
            b"no headers at all, just text",
            b"Subject",
            b"Subject: =?UTF-8?B?####?=\r\n",
            b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\nContent-Type: message/rfc822\r\n\r\n--x",
            b"\xff\xfe\x00\x01: \xff\r\n\r\n\xff",
            b"Date: Tue, 99 Foo 0000 99:99:99 +9999\r\n\r\n",
        ];
        let keys = [
            "SUBJECT x",
            "FROM x",
            "BODY text",
            "TEXT \"\"",
            "HEADER subject \"\"",
            "SENTON 1-Jan-2000",
        ];
        for input in inputs {
            for k in keys {
                let _ = run_with(&key(k), &cand(&[]), Some(input));
            }
        }
        // mail-parser reads a lone line as a header field: TEXT finds it.
        assert!(on_msg(
            "TEXT \"just text\"",
            b"no headers at all, just text"
        ));
        assert!(!on_msg("SUBJECT \"\"", b"no headers at all, just text"));
    }

    #[test]
    fn truncated_and_mangled_messages_do_not_panic() {
        let keys: Vec<_> = [
            "SUBJECT x",
            "FROM \"\"",
            "BCC a",
            "HEADER x-custom v",
            "BODY wichtig",
            "TEXT attached",
            "SENTSINCE 1-Jan-2023",
        ]
        .iter()
        .map(|k| key(k))
        .collect();
        for msg in [SIMPLE, MULTIPART] {
            for cut in 0..=msg.len() {
                let mut mangled = msg[..cut].to_vec();
                // Also a copy with one byte replaced by a line break or 8-bit byte.
                let mut flipped = msg.to_vec();
                if let Some(b) = flipped.get_mut(cut) {
                    *b = if cut % 2 == 0 { b'\n' } else { 0xff };
                }
                mangled.extend_from_slice(b"\r\n");
                for k in &keys {
                    let _ = run_with(k, &cand(&[]), Some(&mangled));
                    let _ = run_with(k, &cand(&[]), Some(&flipped));
                }
            }
        }
    }

    #[test]
    fn keys_built_directly() {
        let c = cand(&[Flag::Seen]);
        let date = |s: &str| {
            NaiveDate::try_from(chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()).unwrap()
        };
        let and = SearchKey::And(
            Vec1::try_from(vec![
                SearchKey::Seen,
                SearchKey::On(date("2023-01-03")),
                SearchKey::Not(Box::new(SearchKey::Before(date("2023-01-03")))),
                SearchKey::Or(Box::new(SearchKey::Recent), Box::new(SearchKey::Larger(10))),
                SearchKey::SentOn(date("2023-01-02")),
                SearchKey::Header(
                    AString::try_from("x-custom").unwrap(),
                    AString::try_from("FOLDED").unwrap(),
                ),
            ])
            .unwrap(),
        );
        assert_eq!(run_with(&and, &c, Some(SIMPLE)), (true, 1));
    }
}
