//! SORT (RFC 5256, with SORT=DISPLAY of RFC 5957): the sort keys of one
//! message, the base subject, and the order of a list of messages.
//!
//! Keys are compared as RFC 5256 asks: strings with the i;ascii-casemap
//! collation (ASCII letters case-folded, bytes otherwise), dates in UTC;
//! messages that compare equal stay in mailbox order, whatever REVERSE.

use imap_codec::imap_types::extensions::sort::{SortCriterion, SortKey};
use mail_parser::{Address, MessageParser};
use std::cmp::Ordering;

/// What SORT may compare of one message, read once from its header.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SortFields {
    /// Sent date, unix seconds UTC: the Date header, else INTERNALDATE
    /// (RFC 5256 §2.2).
    pub date: i64,
    /// The base subject (§2.1).
    pub subject: String,
    /// The mailbox (local part) of the first From address.
    pub from: String,
    /// ... of the first To address.
    pub to: String,
    /// ... of the first Cc address.
    pub cc: String,
    /// The display name of the first From address, else its address
    /// (RFC 5957).
    pub display_from: String,
    /// ... of the first To address.
    pub display_to: String,
    /// Message-ID, without its angle brackets (THREAD).
    pub message_id: Option<String>,
    /// References, else the first In-Reply-To id, oldest first (THREAD).
    pub references: Vec<String>,
    /// The subject had a reply or forward marker (`Re:`, `Fwd:`, `(fwd)`).
    pub is_reply: bool,
}

impl SortFields {
    /// The fields of `header` (a message, or at least its header), with
    /// `internal_date` (unix seconds) for a missing or unreadable Date.
    pub fn of(header: &[u8], internal_date: i64) -> SortFields {
        let parsed = std::panic::catch_unwind(|| MessageParser::default().parse_headers(header))
            .ok()
            .flatten();
        let Some(message) = parsed else {
            return SortFields {
                date: internal_date,
                ..SortFields::default()
            };
        };
        // The first address as ENVELOPE has it: a group's start is an
        // address whose mailbox is the group name, and a bare word is a
        // mailbox; the display name of either is that name.
        let first = |address: Option<&Address<'_>>| -> (String, String) {
            if let Some(Address::Group(groups)) = address {
                if let Some(name) = groups.first().and_then(|g| g.name.as_deref()) {
                    return (name.to_owned(), name.to_owned());
                }
            }
            let Some(addr) = address.and_then(|a| a.first()) else {
                return (String::new(), String::new());
            };
            let Some(spec) = addr.address.as_deref() else {
                let word = addr.name.as_deref().unwrap_or_default();
                return (word.to_owned(), word.to_owned());
            };
            let mailbox = spec.rsplit_once('@').map_or(spec, |(local, _)| local);
            let display = addr
                .name
                .as_deref()
                .filter(|n| !n.trim().is_empty())
                .unwrap_or(spec);
            (mailbox.to_owned(), display.to_owned())
        };
        let (from, display_from) = first(message.from());
        let (to, display_to) = first(message.to());
        let (cc, _) = first(message.cc());
        let ids = |value: &mail_parser::HeaderValue<'_>| -> Vec<String> {
            match (value.as_text_list(), value.as_text()) {
                (Some(list), _) => list.iter().map(|id| id.to_string()).collect(),
                (None, Some(one)) => vec![one.to_owned()],
                (None, None) => Vec::new(),
            }
        };
        let mut references = ids(message.references());
        if references.is_empty() {
            references = ids(message.in_reply_to()).into_iter().take(1).collect();
        }
        let (subject, is_reply) = base_subject_and_reply(message.subject().unwrap_or_default());
        SortFields {
            message_id: message.message_id().map(str::to_owned),
            references,
            is_reply,
            date: message
                .date()
                .filter(|d| d.is_valid())
                .map_or(internal_date, |d| d.to_timestamp()),
            subject,
            from,
            to,
            cc,
            display_from,
            display_to,
        }
    }
}

/// One message to sort: its fields and what only the mailbox knows.
#[derive(Debug, Clone)]
pub struct Sortable {
    /// Sequence number (the tie-breaker) .
    pub seq: u32,
    /// INTERNALDATE, unix seconds.
    pub arrival: i64,
    /// RFC822.SIZE.
    pub size: u64,
    /// From the header.
    pub fields: SortFields,
}

/// Sort `messages` by `criteria`, ties in mailbox order.
pub fn sort(messages: &mut [Sortable], criteria: &[SortCriterion]) {
    messages.sort_by(|a, b| {
        for criterion in criteria {
            let order = compare(a, b, &criterion.key);
            let order = if criterion.reverse {
                order.reverse()
            } else {
                order
            };
            if order != Ordering::Equal {
                return order;
            }
        }
        a.seq.cmp(&b.seq)
    });
}

fn compare(a: &Sortable, b: &Sortable, key: &SortKey) -> Ordering {
    let text = |x: &str, y: &str| casemap(x).cmp(casemap(y));
    match key {
        SortKey::Arrival => a.arrival.cmp(&b.arrival),
        SortKey::Date => a.fields.date.cmp(&b.fields.date),
        SortKey::Size => a.size.cmp(&b.size),
        SortKey::Subject => text(&a.fields.subject, &b.fields.subject),
        SortKey::From => text(&a.fields.from, &b.fields.from),
        SortKey::To => text(&a.fields.to, &b.fields.to),
        SortKey::Cc => text(&a.fields.cc, &b.fields.cc),
        SortKey::DisplayFrom => text(&a.fields.display_from, &b.fields.display_from),
        SortKey::DisplayTo => text(&a.fields.display_to, &b.fields.display_to),
    }
}

/// i;ascii-casemap: ASCII letters upper-cased, every other byte as it is.
fn casemap(text: &str) -> impl Iterator<Item = u8> + '_ {
    text.bytes().map(|b| b.to_ascii_uppercase())
}

/// The base subject of RFC 5256 §2.1: reply and forward markers, list
/// tags (`[list]`) and `(fwd)` trailers taken away, white space collapsed.
/// `subject` has its encoded words decoded already.
pub fn base_subject(subject: &str) -> String {
    base_subject_and_reply(subject).0
}

/// The base subject, and whether taking it took a reply or forward marker
/// away (THREAD tells replies from originals by it).
fn base_subject_and_reply(subject: &str) -> (String, bool) {
    let mut reply = false;
    // (1) Tabs and line breaks are spaces; runs of spaces are one.
    let mut s = String::with_capacity(subject.len());
    for c in subject.chars() {
        let c = if c.is_whitespace() { ' ' } else { c };
        if !(c == ' ' && s.ends_with(' ')) {
            s.push(c);
        }
    }
    loop {
        // (2) Trailing "(fwd)" and spaces.
        loop {
            if s.ends_with(' ') {
                s.pop();
            } else if s.len() >= 5
                && s.is_char_boundary(s.len() - 5)
                && s[s.len() - 5..].eq_ignore_ascii_case("(fwd)")
            {
                s.truncate(s.len() - 5);
                reply = true;
            } else {
                break;
            }
        }
        // (3)-(5) Leading "Re:", "Fwd:", "[blob] Re:", a leading blob.
        loop {
            let before = s.len();
            while let Some((rest, refwd)) = strip_leader(&s) {
                reply |= refwd;
                s = rest.to_owned();
            }
            if let Some(rest) = strip_blob(&s) {
                if !rest.is_empty() {
                    s = rest.to_owned();
                }
            }
            if s.len() == before {
                break;
            }
        }
        // (6) "[fwd: ... ]" around it all: take it off and start again.
        if s.len() >= 6
            && s.get(..5).is_some_and(|h| h.eq_ignore_ascii_case("[fwd:"))
            && s.ends_with(']')
        {
            s = s[5..s.len() - 1].to_owned();
            reply = true;
            continue;
        }
        return (s, reply);
    }
}

/// `s` after one subj-leader: a space, or `*subj-blob subj-refwd` (then
/// true: a reply or forward marker).
fn strip_leader(s: &str) -> Option<(&str, bool)> {
    if let Some(rest) = s.strip_prefix(' ') {
        return Some((rest, false));
    }
    let mut rest = s;
    while let Some(after) = strip_blob(rest) {
        rest = after;
    }
    // subj-refwd = ("re" / ("fw" ["d"])) *WSP [subj-blob] ":"
    let lower = rest.get(..3).unwrap_or(rest).to_ascii_lowercase();
    let skip = if lower.starts_with("re") {
        2
    } else if lower.starts_with("fwd") {
        3
    } else if lower.starts_with("fw") {
        2
    } else {
        return None;
    };
    let mut rest = rest[skip..].trim_start_matches(' ');
    if let Some(after) = strip_blob(rest) {
        rest = after;
    }
    rest.strip_prefix(':').map(|rest| (rest, true))
}

/// `s` after one leading subj-blob (`[` text without brackets `]`, then
/// spaces).
fn strip_blob(s: &str) -> Option<&str> {
    let inner = s.strip_prefix('[')?;
    let end = inner.find([']', '['])?;
    (inner.as_bytes()[end] == b']').then(|| inner[end + 1..].trim_start_matches(' '))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_subjects_as_rfc_5256_defines_them() {
        for (subject, base) in [
            ("a", "a"),
            ("Re: [FWD: c]", "c"),
            ("[foo] Fwd: [bar] Re: fw: b (fWd)  (fwd)", "b"),
            ("b (a)", "b (a)"),
            ("[xyz]", "[xyz]"),
            ("Re: b", "b"),
            ("RE: C", "C"),
            ("Ad: Re: Ad: Re: Ad: x", "Ad: Re: Ad: Re: Ad: x"),
            ("re: [fwd: [fwd: re: [fwd: babylon]]]", "babylon"),
            ("Reply: soon", "Reply: soon"),
            ("  spaced\t out  ", "spaced out"),
            (" ", ""),
            ("Re:", ""),
            ("[list] ", "[list]"),
        ] {
            assert_eq!(base_subject(subject), base, "{subject:?}");
        }
    }

    fn message(seq: u32, header: &str, arrival: i64, size: u64) -> Sortable {
        Sortable {
            seq,
            arrival,
            size,
            fields: SortFields::of(header.as_bytes(), arrival),
        }
    }

    #[test]
    fn groups_and_bare_words_sort_by_their_name() {
        let fields = SortFields::of(b"To: team: a@x.test, b@x.test;\r\nCc: d\r\n\r\n", 0);
        assert_eq!(
            (fields.to.as_str(), fields.display_to.as_str()),
            ("team", "team")
        );
        assert_eq!(fields.cc, "d");
        let fields = SortFields::of(b"From: =?iso-8859-1?q?foo_aar?= <e@f.g>\r\n\r\n", 0);
        assert_eq!(
            (fields.from.as_str(), fields.display_from.as_str()),
            ("e", "foo aar")
        );
    }

    #[test]
    fn keys_reverse_and_ties() {
        let mut messages = vec![
            message(1, "From: Zed <b@x>\r\nSubject: Re: beta\r\nDate: Mon, 1 Jan 2024 10:00:00 +0000\r\n\r\n", 30, 5),
            message(2, "From: a@x\r\nSubject: alpha\r\nDate: Mon, 1 Jan 2024 12:00:00 +0200\r\n\r\n", 20, 5),
            message(3, "From: C <c@x>\r\nSubject: Beta\r\n\r\n", 10, 7),
        ];
        let by = |key, reverse| SortCriterion { reverse, key };
        let order = |messages: &mut Vec<Sortable>, criteria: &[SortCriterion]| {
            sort(messages, criteria);
            messages.iter().map(|m| m.seq).collect::<Vec<_>>()
        };
        assert_eq!(
            order(&mut messages, &[by(SortKey::Arrival, false)]),
            [3, 2, 1]
        );
        // 12:00 +0200 is 10:00 UTC, the same as message 1: mailbox order.
        // Message 3 has no Date: its arrival (10 s after the epoch) counts.
        assert_eq!(order(&mut messages, &[by(SortKey::Date, false)]), [3, 1, 2]);
        assert_eq!(
            order(&mut messages, &[by(SortKey::Subject, false)]),
            [2, 1, 3]
        );
        assert_eq!(
            order(
                &mut messages,
                &[by(SortKey::Subject, false), by(SortKey::Size, true)]
            ),
            [2, 3, 1]
        );
        assert_eq!(order(&mut messages, &[by(SortKey::From, true)]), [3, 1, 2]);
        assert_eq!(
            order(&mut messages, &[by(SortKey::DisplayFrom, false)]),
            [2, 3, 1]
        );
    }
}
