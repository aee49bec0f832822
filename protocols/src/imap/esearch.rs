//! ESEARCH (RFC 4731): `SEARCH RETURN (MIN MAX COUNT ALL)` and the
//! `* ESEARCH` response; with CONTEXT=SEARCH and CONTEXT=SORT (RFC 5267)
//! also `PARTIAL low:high`, `UPDATE` (the driver then reports the result's
//! changes as `ADDTO` and `REMOVEFROM`, see [`update_line`]) and the
//! `CONTEXT` hint, and the CANCELUPDATE command ([`parse_cancel_update`]).
//!
//! imap-codec does not parse search return options, so the session takes
//! them out of the command ([`split_return`]) before it decodes the rest,
//! and hands them to the driver with the command. IMAP4rev2 sessions get
//! ESEARCH for every SEARCH (RFC 9051 §7.3.4): a plain SEARCH is
//! `RETURN (ALL)` for them.

/// What a SEARCH asked to get back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SearchReturn {
    /// The lowest matching number.
    pub min: bool,
    /// The highest.
    pub max: bool,
    /// All of them, as a set.
    pub all: bool,
    /// How many.
    pub count: bool,
    /// The results at these positions (1-based, low first) of the result
    /// list (RFC 5267 §4.4).
    pub partial: Option<(u32, u32)>,
    /// Keep the result up to date with `ADDTO` and `REMOVEFROM` while the
    /// mailbox is selected (RFC 5267 §4.3).
    pub update: bool,
}

impl SearchReturn {
    /// `RETURN (ALL)`, which an empty `RETURN ()` also means.
    pub const ALL: SearchReturn = SearchReturn {
        min: false,
        max: false,
        all: true,
        count: false,
        partial: None,
        update: false,
    };

    /// The numbers at the PARTIAL positions of `results`, if asked.
    fn partial_of<'r>(&self, results: &'r [u32]) -> Option<(u32, u32, &'r [u32])> {
        let (low, high) = self.partial?;
        let start = (low as usize - 1).min(results.len());
        let end = (high as usize).min(results.len());
        Some((low, high, &results[start..end]))
    }

    /// The MODSEQ an ESEARCH by MODSEQ reports, given the modseqs of the
    /// messages found, in order: of the messages MIN and MAX name when only
    /// they are asked for, else the highest of all (RFC 7162 §3.1.5).
    pub fn modseq(&self, modseqs: &[u64]) -> Option<u64> {
        let (first, last) = (*modseqs.first()?, *modseqs.last()?);
        if (self.min || self.max) && !self.all && !self.count {
            let min = if self.min { first } else { 0 };
            let max = if self.max { last } else { 0 };
            return Some(min.max(max));
        }
        modseqs.iter().copied().max()
    }

    /// The `* ESEARCH` line (without `* `) for `found` (ascending), which
    /// are UIDs when `uid`. `modseq` is the highest modseq of what was
    /// found, for a search by MODSEQ (RFC 7162 §3.1.5).
    pub fn response(&self, tag: &str, uid: bool, found: &[u32], modseq: Option<u64>) -> String {
        let mut line = self.head(tag, uid, found);
        if self.all && !found.is_empty() {
            line.push_str(&format!(" ALL {}", sequence_set(found)));
        }
        if let Some((low, high, part)) = self.partial_of(found) {
            line.push_str(&partial(low, high, &sequence_set(part)));
        }
        if let (Some(modseq), false) = (modseq, found.is_empty()) {
            line.push_str(&format!(" MODSEQ {modseq}"));
        }
        line
    }
}

impl SearchReturn {
    /// `ESEARCH (TAG ...) [UID]` and MIN, MAX (the first and last of
    /// `numbers`) and COUNT as asked.
    fn head(&self, tag: &str, uid: bool, numbers: &[u32]) -> String {
        let mut line = format!("ESEARCH (TAG {})", super::quoted(tag));
        if uid {
            line.push_str(" UID");
        }
        if let (true, Some(min)) = (self.min, numbers.first()) {
            line.push_str(&format!(" MIN {min}"));
        }
        if let (true, Some(max)) = (self.max, numbers.last()) {
            line.push_str(&format!(" MAX {max}"));
        }
        if self.count {
            line.push_str(&format!(" COUNT {}", numbers.len()));
        }
        line
    }

    /// The `* ESEARCH` line (without `* `) answering a SORT RETURN (ESORT,
    /// RFC 5267 §3.2) for `sorted`, in sort order: MIN and MAX are the
    /// first and last of that order, ALL lists it in that order (ranges
    /// only for ascending runs).
    pub fn sorted_response(&self, tag: &str, uid: bool, sorted: &[u32]) -> String {
        let mut line = self.head(tag, uid, sorted);
        if self.all && !sorted.is_empty() {
            line.push_str(&format!(" ALL {}", in_order(sorted)));
        }
        if let Some((low, high, part)) = self.partial_of(sorted) {
            line.push_str(&partial(low, high, &in_order(part)));
        }
        line
    }
}

/// ` PARTIAL (low:high set)`, or `NIL` for the set when nothing lies there.
fn partial(low: u32, high: u32, set: &str) -> String {
    match set.is_empty() {
        true => format!(" PARTIAL ({low}:{high} NIL)"),
        false => format!(" PARTIAL ({low}:{high} {set})"),
    }
}

/// Numbers in the order given, runs of n, n+1, ... as ranges (a sort
/// result).
fn in_order(sorted: &[u32]) -> String {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let mut end = i;
        while end + 1 < sorted.len() && sorted[end + 1] == sorted[end] + 1 {
            end += 1;
        }
        parts.push(match end > i {
            true => format!("{}:{}", sorted[i], sorted[end]),
            false => sorted[i].to_string(),
        });
        i = end + 1;
    }
    parts.join(",")
}

/// How an UPDATE result changed (RFC 5267 §4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delta {
    /// `ADDTO`: these joined the result.
    AddTo,
    /// `REMOVEFROM`: these left it.
    RemoveFrom,
}

/// `ESEARCH (TAG "tag") [UID] ADDTO|REMOVEFROM (position numbers)`: the
/// untagged line (without `* `) telling a client with an UPDATE search
/// that `numbers` joined or left its result at `position` (0 for an
/// unsorted SEARCH, whose order is the mailbox's). `numbers` are listed
/// in the order given, as [`SearchReturn::sorted_response`] lists them.
pub fn update_line(tag: &str, uid: bool, delta: Delta, position: u32, numbers: &[u32]) -> String {
    let mut line = format!("ESEARCH (TAG {})", super::quoted(tag));
    if uid {
        line.push_str(" UID");
    }
    let word = match delta {
        Delta::AddTo => "ADDTO",
        Delta::RemoveFrom => "REMOVEFROM",
    };
    line.push_str(&format!(" {word} ({position} {})", in_order(numbers)));
    line
}

/// If `command` (whole) is `tag CANCELUPDATE "t1" ...` (RFC 5267 §4.3):
/// its tag and the tags of the searches to stop updating, or `Err` when
/// malformed. `None` for any other command.
pub fn parse_cancel_update(command: &[u8]) -> Option<Result<(String, Vec<String>), BadReturn>> {
    let tag_end = command.iter().position(|&b| b == b' ')?;
    let rest = &command[tag_end + 1..];
    let verb = b"CANCELUPDATE";
    if !rest
        .get(..verb.len())
        .is_some_and(|v| v.eq_ignore_ascii_case(verb))
    {
        return None;
    }
    let tag = std::str::from_utf8(&command[..tag_end]).ok()?.to_owned();
    let mut lexer = super::lexer::Lexer {
        bytes: command,
        at: tag_end + 1 + verb.len(),
    };
    let mut tags = Vec::new();
    while lexer.keyword(b" ") {
        let written = lexer.string().map_err(|_| BadReturn);
        match written.and_then(|w| super::lexer::astring(w).map_err(|_| BadReturn)) {
            Ok(one) => tags.push(one),
            Err(bad) => return Some(Err(bad)),
        }
    }
    if tags.is_empty() || !lexer.keyword(b"\r\n") || lexer.at != command.len() {
        return Some(Err(BadReturn));
    }
    Some(Ok((tag, tags)))
}

/// Ascending numbers as a compact set: `1:3,5,8:9` (ESEARCH ALL,
/// COPYUID's UID sets).
pub fn sequence_set(numbers: &[u32]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < numbers.len() {
        let start = numbers[i];
        let mut end = start;
        while i + 1 < numbers.len() && numbers[i + 1] == end + 1 {
            i += 1;
            end = numbers[i];
        }
        if !out.is_empty() {
            out.push(',');
        }
        if start == end {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}:{end}"));
        }
        i += 1;
    }
    out
}

/// Why the return options could not be taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadReturn;

/// If `command` (a whole command, literals included) is `tag [UID] SEARCH
/// RETURN (...) ...`, the command without `RETURN (...)` and the options;
/// `None` when it has no RETURN.
pub fn split_return(command: &[u8]) -> Option<Result<(Vec<u8>, SearchReturn), BadReturn>> {
    let tag_end = command.iter().position(|&b| b == b' ')?;
    let mut at = tag_end + 1;
    let word = |at: usize, word: &[u8]| {
        command
            .get(at..at + word.len())
            .is_some_and(|w| w.eq_ignore_ascii_case(word))
    };
    if word(at, b"UID ") {
        at += 4;
    }
    // SEARCH (RFC 4731) or SORT (ESORT, RFC 5267).
    let verb = [&b"SEARCH"[..], b"SORT"]
        .into_iter()
        .find(|verb| word(at, verb) && word(at + verb.len(), b" RETURN ("))?;
    let options_start = at + verb.len() + b" RETURN (".len();
    let Some(close) = command[options_start..].iter().position(|&b| b == b')') else {
        return Some(Err(BadReturn));
    };
    let options = &command[options_start..options_start + close];
    let mut wanted = SearchReturn::default();
    let mut words = options.split(|&b| b == b' ').filter(|o| !o.is_empty());
    while let Some(option) = words.next() {
        match option.to_ascii_uppercase().as_slice() {
            b"MIN" => wanted.min = true,
            b"MAX" => wanted.max = true,
            b"ALL" => wanted.all = true,
            b"COUNT" => wanted.count = true,
            b"PARTIAL" => match words.next().and_then(partial_range) {
                Some(range) => wanted.partial = Some(range),
                None => return Some(Err(BadReturn)),
            },
            b"UPDATE" => wanted.update = true,
            // A hint that the client will ask again (RFC 5267 §4.2).
            b"CONTEXT" => {}
            _ => return Some(Err(BadReturn)),
        }
    }
    // PARTIAL is ALL for a window of the result: not both.
    if wanted.all && wanted.partial.is_some() {
        return Some(Err(BadReturn));
    }
    let results = SearchReturn {
        update: false,
        ..wanted
    };
    if results == SearchReturn::default() {
        wanted.all = true;
    }
    // "tag [UID] SEARCH|SORT" ‖ the rest after "RETURN (...)".
    let rest = &command[options_start + close + 1..];
    let mut plain = command[..at + verb.len()].to_vec();
    plain.extend_from_slice(rest);
    Some(Ok((plain, wanted)))
}

/// `low:high` of PARTIAL: two non-zero numbers, either order (`*` is not
/// a position); lowest first.
fn partial_range(text: &[u8]) -> Option<(u32, u32)> {
    let text = std::str::from_utf8(text).ok()?;
    let (a, b) = text.split_once(':')?;
    let number = |n: &str| n.parse::<u32>().ok().filter(|&n| n > 0);
    let (a, b) = (number(a)?, number(b)?);
    Some((a.min(b), a.max(b)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_windows_and_update_lines() {
        let (_, wanted) = split_return(b"a SEARCH RETURN (PARTIAL 4:2) ALL\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(wanted.partial, Some((2, 4)));
        assert!(!wanted.all);
        assert_eq!(
            wanted.response("a", false, &[1, 2, 4, 5], None),
            "ESEARCH (TAG \"a\") PARTIAL (2:4 2,4:5)"
        );
        assert_eq!(
            wanted.response("a", false, &[1], None),
            "ESEARCH (TAG \"a\") PARTIAL (2:4 NIL)"
        );
        assert_eq!(
            wanted.sorted_response("s", false, &[5, 3, 4, 2, 1]),
            "ESEARCH (TAG \"s\") PARTIAL (2:4 3:4,2)"
        );
        for bad in [
            "PARTIAL 1",
            "PARTIAL 1:*",
            "PARTIAL *:1",
            "PARTIAL 0:3",
            "PARTIAL",
            "ALL PARTIAL 1:2",
        ] {
            let command = format!("a SEARCH RETURN ({bad}) ALL\r\n");
            assert_eq!(
                split_return(command.as_bytes()),
                Some(Err(BadReturn)),
                "{bad}"
            );
        }
        let (_, wanted) = split_return(b"u SEARCH RETURN (UPDATE CONTEXT) SEEN\r\n")
            .unwrap()
            .unwrap();
        assert!(wanted.update && wanted.all, "UPDATE alone returns ALL");
        assert_eq!(
            update_line("u", true, Delta::AddTo, 0, &[3, 4, 7]),
            "ESEARCH (TAG \"u\") UID ADDTO (0 3:4,7)"
        );
        assert_eq!(
            parse_cancel_update(b"c CANCELUPDATE \"u\" v\r\n"),
            Some(Ok(("c".into(), vec!["u".into(), "v".into()])))
        );
        assert_eq!(
            parse_cancel_update(b"c CANCELUPDATE\r\n"),
            Some(Err(BadReturn))
        );
        assert_eq!(parse_cancel_update(b"c NOOP\r\n"), None);
    }

    #[test]
    fn esort_keeps_the_sort_order() {
        let all = SearchReturn {
            min: true,
            max: true,
            all: true,
            count: true,
            ..SearchReturn::default()
        };
        assert_eq!(
            all.sorted_response("a", false, &[5, 2, 3, 4, 1]),
            "ESEARCH (TAG \"a\") MIN 5 MAX 1 COUNT 5 ALL 5,2:4,1"
        );
        assert_eq!(
            SearchReturn::ALL.sorted_response("b", true, &[]),
            "ESEARCH (TAG \"b\") UID"
        );
    }

    #[test]
    fn return_options_come_out_and_the_rest_stays() {
        let (plain, wanted) = split_return(b"a UID search return (MIN count) UNSEEN\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(plain, b"a UID search UNSEEN\r\n");
        assert!(wanted.min && wanted.count && !wanted.max && !wanted.all);
        let (plain, wanted) = split_return(b"b SEARCH RETURN () ALL\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(
            (plain.as_slice(), wanted),
            (&b"b SEARCH ALL\r\n"[..], SearchReturn::ALL)
        );
        assert_eq!(split_return(b"c SEARCH ALL\r\n"), None);
        let (plain, wanted) = split_return(b"s UID SORT RETURN (COUNT) (ARRIVAL) UTF-8 ALL\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(plain, b"s UID SORT (ARRIVAL) UTF-8 ALL\r\n");
        assert!(wanted.count && !wanted.all);
        assert_eq!(split_return(b"s SORT (ARRIVAL) UTF-8 ALL\r\n"), None);
        assert_eq!(split_return(b"c FETCH 1 (FLAGS)\r\n"), None);
        assert_eq!(
            split_return(b"d SEARCH RETURN (SAVE) ALL\r\n"),
            Some(Err(BadReturn))
        );
        assert_eq!(split_return(b"d SEARCH RETURN (MIN"), Some(Err(BadReturn)));
    }

    #[test]
    fn responses_as_rfc_4731_shows_them() {
        let all = SearchReturn {
            min: true,
            max: true,
            all: true,
            count: true,
            ..SearchReturn::default()
        };
        assert_eq!(
            all.response("A282", false, &[2, 3, 4, 10, 12, 13], None),
            "ESEARCH (TAG \"A282\") MIN 2 MAX 13 COUNT 6 ALL 2:4,10,12:13"
        );
        assert_eq!(
            all.response("A283", true, &[], Some(9)),
            "ESEARCH (TAG \"A283\") UID COUNT 0"
        );
        assert_eq!(
            SearchReturn::ALL.response("t", false, &[5], Some(9)),
            "ESEARCH (TAG \"t\") ALL 5 MODSEQ 9"
        );
    }

    #[test]
    fn modseq_is_of_what_min_and_max_name_else_of_all() {
        let modseqs = [6, 8, 7];
        let only = |min, max| SearchReturn {
            min,
            max,
            ..SearchReturn::default()
        };
        assert_eq!(only(true, false).modseq(&modseqs), Some(6));
        assert_eq!(only(false, true).modseq(&modseqs), Some(7));
        assert_eq!(only(true, true).modseq(&modseqs), Some(7));
        assert_eq!(SearchReturn::ALL.modseq(&modseqs), Some(8));
        let counted = SearchReturn {
            min: true,
            count: true,
            ..SearchReturn::default()
        };
        assert_eq!(counted.modseq(&modseqs), Some(8));
        assert_eq!(SearchReturn::ALL.modseq(&[]), None);
    }
}
