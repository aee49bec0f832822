//! Between the store's records and imap-types values: flags, mailbox
//! names, dates.

use chrono::{DateTime as ChronoDateTime, FixedOffset};
use ringpost_protocols::imap::mutf7;
use ringpost_protocols::imap::types::core::Atom;
use ringpost_protocols::imap::types::datetime::DateTime;
use ringpost_protocols::imap::types::flag::Flag;
use ringpost_protocols::imap::types::mailbox::{ListMailbox, Mailbox};
use ringpost_storage::mailbox::{flag, Flags, INBOX};

/// The store's flags as IMAP flags (system flags first, then keywords).
pub(crate) fn flags_to_imap(flags: &Flags) -> Vec<Flag<'static>> {
    let mut out = Vec::with_capacity(5 + flags.keywords.len());
    for (bit, imap) in [
        (flag::SEEN, Flag::Seen),
        (flag::ANSWERED, Flag::Answered),
        (flag::FLAGGED, Flag::Flagged),
        (flag::DELETED, Flag::Deleted),
        (flag::DRAFT, Flag::Draft),
    ] {
        if flags.has(bit) {
            out.push(imap);
        }
    }
    out.extend(
        flags
            .keywords
            .iter()
            .filter_map(|k| Atom::try_from(k.clone()).ok().map(Flag::Keyword)),
    );
    out
}

/// IMAP flags as the store keeps them. `\Recent` and unknown
/// backslash-flags are dropped: they cannot be stored (RFC 9051 §2.3.2).
pub(crate) fn flags_from_imap(flags: &[Flag<'_>]) -> Flags {
    let mut out = Flags::default();
    // Keywords compare without case; a set, so a command naming very many
    // costs their number, not its square.
    let mut seen = std::collections::HashSet::new();
    for f in flags {
        match f {
            Flag::Seen => out.system |= flag::SEEN,
            Flag::Answered => out.system |= flag::ANSWERED,
            Flag::Flagged => out.system |= flag::FLAGGED,
            Flag::Deleted => out.system |= flag::DELETED,
            Flag::Draft => out.system |= flag::DRAFT,
            Flag::Keyword(atom) => {
                let keyword = atom.inner();
                if seen.insert(keyword.to_ascii_lowercase()) {
                    out.keywords.push(keyword.to_owned());
                }
            }
            Flag::Extension(_) => {}
        }
    }
    out
}

/// The special use (RFC 6154) of a mailbox, by its name: the folders a new
/// account gets (`users::DEFAULT_MAILBOXES`), and Archive.
pub(crate) fn special_use(name: &str) -> Option<&'static str> {
    match name {
        "Sent" => Some("Sent"),
        "Drafts" => Some("Drafts"),
        "Trash" => Some("Trash"),
        "Junk" => Some("Junk"),
        "Archive" => Some("Archive"),
        _ => None,
    }
}

/// A mailbox name as the store keys it: INBOX in any case is INBOX; other
/// names in UTF-8 ([`from_client`]), without a trailing hierarchy
/// delimiter.
pub(crate) fn mailbox_name(mailbox: &Mailbox<'_>, rev2: bool) -> String {
    match mailbox {
        Mailbox::Inbox => INBOX.to_owned(),
        Mailbox::Other(other) => {
            let name = String::from_utf8_lossy(other.as_ref());
            let name = name.trim_end_matches('/');
            if name.eq_ignore_ascii_case(INBOX) {
                INBOX.to_owned()
            } else {
                from_client(name, rev2)
            }
        }
    }
}

/// A name (or LIST pattern) as a client wrote it, in UTF-8 as the store
/// keeps names. An IMAP4rev1 session (`rev2` false) writes modified UTF-7
/// (RFC 3501 §5.1.3); what is not valid modified UTF-7 (a raw UTF-8 name
/// some clients send) is taken as written.
pub(crate) fn from_client(name: &str, rev2: bool) -> String {
    if rev2 || !name.contains('&') {
        return name.to_owned();
    }
    mutf7::decode(name).unwrap_or_else(|| name.to_owned())
}

/// A LIST or LSUB reference, in UTF-8 ([`from_client`]), its trailing
/// delimiter kept: the pattern is appended to it as written (RFC 3501
/// §6.3.8), so `LIST "Work/" "%"` lists Work's children.
pub(crate) fn list_reference(reference: &Mailbox<'_>, rev2: bool) -> String {
    match reference {
        Mailbox::Inbox => INBOX.to_owned(),
        Mailbox::Other(other) => from_client(&String::from_utf8_lossy(other.as_ref()), rev2),
    }
}

/// A LIST pattern's text, in UTF-8 ([`from_client`]).
pub(crate) fn list_pattern(pattern: &ListMailbox<'_>, rev2: bool) -> String {
    let written = match pattern {
        ListMailbox::Token(token) => String::from_utf8_lossy(token.as_ref()).into_owned(),
        ListMailbox::String(s) => String::from_utf8_lossy(s.as_ref()).into_owned(),
    };
    from_client(&written, rev2)
}

/// A stored mailbox name for a response: as is to an IMAP4rev2 session,
/// in modified UTF-7 to an IMAP4rev1 one.
pub(crate) fn to_mailbox(name: &str, rev2: bool) -> Option<Mailbox<'static>> {
    let written = match rev2 {
        true => name.to_owned(),
        false => mutf7::encode(name),
    };
    Mailbox::try_from(written).ok()
}

/// Unix micros as an IMAP date-time (UTC).
pub(crate) fn internal_date(micros: u64) -> DateTime {
    let utc = FixedOffset::east_opt(0).expect("UTC is a valid offset");
    // IMAP dates have whole seconds.
    let time = ChronoDateTime::from_timestamp((micros / 1_000_000) as i64, 0)
        .unwrap_or_default()
        .with_timezone(&utc);
    DateTime::try_from(time)
        .unwrap_or_else(|_| DateTime::unvalidated(ChronoDateTime::UNIX_EPOCH.with_timezone(&utc)))
}

/// An IMAP date-time as unix micros.
pub(crate) fn micros_of(date: &DateTime) -> u64 {
    u64::try_from(date.as_ref().timestamp_micros()).unwrap_or(0)
}

/// Longest LIST pattern matched, and most wildcards in one: past them a
/// pattern matches nothing (a client's pattern must not cost the shard
/// more than a few million steps per mailbox).
const MAX_PATTERN: usize = 1024;
const MAX_WILDCARDS: usize = 32;

/// Does `name` match a LIST pattern (`*` anything, `%` anything but `/`)?
/// In time proportional to the two lengths, with no recursion: row by row,
/// which prefixes of `name` the pattern so far matches.
pub(crate) fn matches_pattern(pattern: &[u8], name: &[u8]) -> bool {
    let wildcards = pattern.iter().filter(|&&b| b == b'*' || b == b'%').count();
    if pattern.len() > MAX_PATTERN || wildcards > MAX_WILDCARDS {
        return false;
    }
    // matched[j]: the pattern so far matches name[..j].
    let mut matched = vec![false; name.len() + 1];
    matched[0] = true;
    let mut next = vec![false; name.len() + 1];
    for &p in pattern {
        match p {
            b'*' => {
                next[0] = matched[0];
                for j in 1..=name.len() {
                    next[j] = matched[j] || next[j - 1];
                }
            }
            b'%' => {
                next[0] = matched[0];
                for j in 1..=name.len() {
                    next[j] = matched[j] || (next[j - 1] && name[j - 1] != b'/');
                }
            }
            c => {
                next[0] = false;
                for j in 1..=name.len() {
                    next[j] = matched[j - 1] && name[j - 1] == c;
                }
            }
        }
        std::mem::swap(&mut matched, &mut next);
        if !matched.contains(&true) {
            return false;
        }
    }
    matched[name.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_round_trip_and_combine() {
        let imap = vec![
            Flag::Seen,
            Flag::Deleted,
            Flag::Keyword(Atom::try_from("Work").unwrap()),
        ];
        let stored = flags_from_imap(&imap);
        assert_eq!(stored.system, flag::SEEN | flag::DELETED);
        assert_eq!(flags_to_imap(&stored), imap);
        let minus = flags_from_imap(&[Flag::Seen, Flag::Keyword(Atom::try_from("work").unwrap())]);
        let left = stored.changed(ringpost_storage::mailbox::FlagChange::Remove, &minus);
        assert_eq!(left.system, flag::DELETED);
        assert!(left.keywords.is_empty());
    }

    #[test]
    fn list_patterns() {
        assert!(matches_pattern(b"*", b"a/b/c"));
        assert!(matches_pattern(b"%", b"Sent"));
        assert!(!matches_pattern(b"%", b"a/b"));
        assert!(matches_pattern(b"a/%", b"a/b"));
        assert!(matches_pattern(b"a*c", b"abbc"));
        assert!(!matches_pattern(b"INBOX", b"INBOX2"));
        assert!(matches_pattern(b"", b""));
        assert!(!matches_pattern(b"", b"a"));
        assert!(matches_pattern(b"a%/%c", b"ab/c"));
        assert!(!matches_pattern(b"a%c", b"a/c"));
        assert!(matches_pattern(b"%/*", b"a/b/c"));
        assert!(matches_pattern(b"*%", b"a/b"));
    }

    #[test]
    fn hostile_patterns_cost_little_and_never_overflow_the_stack() {
        // A recursive matcher went one level deep per star, and tried
        // every split of the name per star.
        let stars = vec![b'*'; 100_000];
        assert!(!matches_pattern(&stars, b"INBOX"), "too many wildcards");
        let name = vec![b'a'; 1000];
        let mut pattern = b"*a".repeat(15);
        pattern.push(b'b');
        let started = std::time::Instant::now();
        assert!(!matches_pattern(&pattern, &name));
        assert!(matches_pattern(&b"*a".repeat(15), &name));
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }
}
