//! Running a [`Script`] over one delivery: the message and its envelope
//! in, the actions that are left at the end out ([`Outcome`]). Nothing
//! here touches a mailbox or the queue; the engine carries the outcome
//! out (RFC 5228 §2.10: actions are collected, then done together).

use super::header;
use super::script::*;
use mail_parser::{MessageParser, MimeHeaders, PartType};
use std::cell::OnceCell;
use std::cmp::Ordering;

/// Most `redirect`s one run may do: a filter must not turn one message
/// into a mailing list (Dovecot allows one by default).
pub const MAX_REDIRECTS: usize = 4;

/// Character comparisons one run may make across all its tests: a script
/// of many `:matches` against a large message must not hold the shard.
/// Past it the run fails and the message is kept.
pub const MAX_COMPARISONS: u64 = 100_000_000;

/// The most of a body `body` tests look at, per part.
pub const MAX_BODY_TEXT: usize = 1024 * 1024;

/// One delivery a script decides on.
pub struct Mail<'a> {
    /// The message as stored (our trace fields on top).
    pub message: &'a [u8],
    /// The envelope sender (`""` for the null sender).
    pub envelope_from: &'a str,
    /// The envelope recipient this run is for.
    pub envelope_to: &'a str,
    /// What separates a local part's detail (`+` in `alice+news`); `None`:
    /// addresses have no detail.
    pub detail_separator: Option<char>,
}

/// Where a copy goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filing {
    /// The mailbox (`INBOX` for keep).
    pub mailbox: String,
    /// Its flags, IMAP spelling (`\Seen`, `$Label1`).
    pub flags: Vec<String>,
    /// Make the mailbox if it is missing (`:create`).
    pub create: bool,
}

/// What a run decided.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Outcome {
    /// Mailboxes to store it in, each once; keep and the implicit keep
    /// are INBOX.
    pub filings: Vec<Filing>,
    /// Addresses to send it on to.
    pub redirects: Vec<String>,
    /// Refuse it with this reason (then nothing else is done).
    pub reject: Option<String>,
    /// Maybe answer the sender (if [`super::vacation`] agrees).
    pub vacation: Option<Vacation>,
    /// The run failed (this is why): the outcome is the implicit keep.
    pub error: Option<String>,
}

impl Outcome {
    /// Only the implicit keep: what a failed run leaves (RFC 5228
    /// §2.10.6), with why it failed.
    pub fn implicit_keep(error: Option<String>) -> Outcome {
        Outcome {
            filings: vec![Filing {
                mailbox: "INBOX".into(),
                flags: Vec::new(),
                create: false,
            }],
            error,
            ..Outcome::default()
        }
    }
}

/// Run `script` over `mail`.
pub fn run(script: &Script, mail: &Mail<'_>) -> Outcome {
    let mut run = Run {
        mail,
        view: View::new(mail.message),
        flags: Vec::new(),
        outcome: Outcome::default(),
        keep_cancelled: false,
        budget: MAX_COMPARISONS,
    };
    let ran = run.block(&script.commands);
    if run.budget == 0 {
        return Outcome::implicit_keep(Some("the script took too long".into()));
    }
    match ran {
        Err(error) => Outcome::implicit_keep(Some(error)),
        Ok(_) => {
            let mut outcome = run.outcome;
            if outcome.reject.is_some()
                && (!outcome.filings.is_empty()
                    || !outcome.redirects.is_empty()
                    || outcome.vacation.is_some())
            {
                // RFC 5429 §2.1: reject is incompatible with delivering.
                return Outcome::implicit_keep(Some(
                    "reject cannot be combined with keep, fileinto, redirect or vacation".into(),
                ));
            }
            if !run.keep_cancelled {
                let flags = run.flags.clone();
                add_filing(&mut outcome.filings, "INBOX", flags, false);
            }
            outcome
        }
    }
}

/// Whether a block ended the script (`stop`).
enum Flow {
    Next,
    Stop,
}

struct Run<'a> {
    mail: &'a Mail<'a>,
    view: View<'a>,
    /// imap4flags' internal variable.
    flags: Vec<String>,
    outcome: Outcome,
    keep_cancelled: bool,
    /// Comparisons left ([`MAX_COMPARISONS`]).
    budget: u64,
}

impl Run<'_> {
    fn block(&mut self, commands: &[Command]) -> Result<Flow, String> {
        for command in commands {
            if let Flow::Stop = self.command(command)? {
                return Ok(Flow::Stop);
            }
        }
        Ok(Flow::Next)
    }

    fn command(&mut self, command: &Command) -> Result<Flow, String> {
        match command {
            Command::If {
                branches,
                otherwise,
            } => {
                for (test, body) in branches {
                    if self.test(test) {
                        return self.block(body);
                    }
                }
                if let Some(body) = otherwise {
                    return self.block(body);
                }
            }
            Command::Stop => return Ok(Flow::Stop),
            Command::Keep { flags } => {
                // Like fileinto INBOX (RFC 5228 §4.3): the flags are those
                // of this moment, and the implicit keep is done with.
                let flags = self.flags_of(flags);
                add_filing(&mut self.outcome.filings, "INBOX", flags, false);
                self.keep_cancelled = true;
            }
            Command::Discard => self.keep_cancelled = true,
            Command::FileInto {
                mailbox,
                copy,
                create,
                flags,
            } => {
                let flags = self.flags_of(flags);
                add_filing(&mut self.outcome.filings, mailbox, flags, *create);
                self.keep_cancelled |= !copy;
            }
            Command::Redirect { address, copy } => {
                let address = bare_address(address).unwrap_or_default();
                let redirects = &mut self.outcome.redirects;
                if !redirects.iter().any(|r| r.eq_ignore_ascii_case(&address)) {
                    if redirects.len() == MAX_REDIRECTS {
                        return Err(format!("more than {MAX_REDIRECTS} redirects"));
                    }
                    redirects.push(address);
                }
                self.keep_cancelled |= !copy;
            }
            Command::Reject { reason } => {
                if self.outcome.reject.is_some() {
                    return Err("reject given twice".into());
                }
                self.outcome.reject = Some(reason.clone());
                self.keep_cancelled = true;
            }
            Command::Vacation(vacation) => {
                if self.outcome.vacation.is_some() {
                    return Err("vacation given twice".into());
                }
                self.outcome.vacation = Some(vacation.clone());
            }
            Command::Flags(op, list) => {
                let given = flag_words(list);
                match op {
                    FlagOp::Set => self.flags = given,
                    FlagOp::Add => {
                        for flag in given {
                            if !self.flags.iter().any(|f| f.eq_ignore_ascii_case(&flag)) {
                                self.flags.push(flag);
                            }
                        }
                    }
                    FlagOp::Remove => self
                        .flags
                        .retain(|f| !given.iter().any(|g| g.eq_ignore_ascii_case(f))),
                }
            }
        }
        Ok(Flow::Next)
    }

    fn flags_of(&self, given: &Option<Vec<String>>) -> Vec<String> {
        match given {
            Some(list) => flag_words(list),
            None => self.flags.clone(),
        }
    }

    fn test(&mut self, test: &Test) -> bool {
        match test {
            Test::True => true,
            Test::False => false,
            Test::Not(inner) => !self.test(inner),
            Test::AllOf(tests) => tests.iter().all(|t| self.test(t)),
            Test::AnyOf(tests) => tests.iter().any(|t| self.test(t)),
            Test::Exists(names) => names.iter().all(|n| self.view.field_count(n) > 0),
            Test::Size { over, limit } => {
                let size = self.mail.message.len() as u64;
                match over {
                    true => size > *limit,
                    false => size < *limit,
                }
            }
            Test::Header {
                matcher,
                names,
                keys,
            } => {
                let values: Vec<String> = names.iter().flat_map(|n| self.view.texts(n)).collect();
                compare(matcher, &values, keys, &mut self.budget)
            }
            Test::Address {
                part,
                matcher,
                names,
                keys,
            } => {
                let sep = self.mail.detail_separator;
                let values: Vec<String> = names
                    .iter()
                    .flat_map(|n| self.view.addresses(n))
                    .filter_map(|a| address_part(&a, *part, sep))
                    .collect();
                compare(matcher, &values, keys, &mut self.budget)
            }
            Test::Envelope {
                part,
                matcher,
                names,
                keys,
            } => {
                let sep = self.mail.detail_separator;
                let values: Vec<String> = names
                    .iter()
                    .map(|n| match n.eq_ignore_ascii_case("from") {
                        true => self.mail.envelope_from,
                        false => self.mail.envelope_to,
                    })
                    .filter_map(|a| address_part(a, *part, sep))
                    .collect();
                compare(matcher, &values, keys, &mut self.budget)
            }
            Test::HasFlag { matcher, keys } => {
                compare(matcher, &self.flags.clone(), keys, &mut self.budget)
            }
            Test::Body {
                matcher,
                transform,
                keys,
            } => {
                let texts = self.view.body(transform);
                // Substring and pattern tests only make sense on a body;
                // `:is` is over the whole text.
                compare(matcher, &texts, keys, &mut self.budget)
            }
        }
    }
}

fn add_filing(filings: &mut Vec<Filing>, mailbox: &str, flags: Vec<String>, create: bool) {
    let same = |f: &&mut Filing| same_mailbox(&f.mailbox, mailbox);
    match filings.iter_mut().find(|f| same(f)) {
        // The same mailbox twice is one copy (§2.10.3), its flags joined.
        Some(earlier) => {
            for flag in flags {
                if !earlier.flags.iter().any(|f| f.eq_ignore_ascii_case(&flag)) {
                    earlier.flags.push(flag);
                }
            }
            earlier.create |= create;
        }
        None => filings.push(Filing {
            mailbox: mailbox.to_owned(),
            flags,
            create,
        }),
    }
}

/// INBOX in any case is INBOX; other names are exact.
fn same_mailbox(a: &str, b: &str) -> bool {
    a == b || (a.eq_ignore_ascii_case("INBOX") && b.eq_ignore_ascii_case("INBOX"))
}

/// The flags a list names: each string may hold several, space-separated.
fn flag_words(list: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for word in list.iter().flat_map(|s| s.split_ascii_whitespace()) {
        if !out.iter().any(|f| f.eq_ignore_ascii_case(word)) {
            out.push(word.to_owned());
        }
    }
    out
}

/// `address` if it is one bare `local@domain`, without angle brackets.
pub fn bare_address(address: &str) -> Option<String> {
    let address = address.trim();
    let address = address
        .strip_prefix('<')
        .and_then(|a| a.strip_suffix('>'))
        .unwrap_or(address);
    let (local, domain) = address.rsplit_once('@')?;
    let fine = !local.is_empty()
        && !domain.is_empty()
        && !address
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | ',' | ';'));
    fine.then(|| address.to_owned())
}

/// The part of `address` a test asks for; `None` when it has none (no
/// detail to `:detail`).
fn address_part(address: &str, part: AddressPart, separator: Option<char>) -> Option<String> {
    let (local, domain) = address.rsplit_once('@').unwrap_or((address, ""));
    let split = || separator.and_then(|s| local.split_once(s));
    Some(match part {
        AddressPart::All => address.to_owned(),
        AddressPart::LocalPart => local.to_owned(),
        AddressPart::Domain => domain.to_owned(),
        AddressPart::User => split().map_or(local, |(user, _)| user).to_owned(),
        AddressPart::Detail => split()?.1.to_owned(),
    })
}

/// Whether any value stands in the matcher's relation to any key, each
/// comparison paid for from `budget` (none is made once it is spent).
fn compare<S: AsRef<str>>(
    matcher: &Matcher,
    values: &[S],
    keys: &[String],
    budget: &mut u64,
) -> bool {
    let comparator = matcher.comparator;
    match matcher.how {
        How::Count(relation) => {
            let count = values.len().to_string();
            keys.iter()
                .any(|key| relation.holds(numeric_order(&count, key)))
        }
        how => values.iter().map(AsRef::as_ref).any(|value: &str| {
            keys.iter().any(|key| {
                let cost = match how {
                    How::Matches => (value.len() as u64 + 1) * (key.len() as u64 + 1),
                    _ => value.len() as u64 + key.len() as u64 + 1,
                };
                if *budget < cost {
                    *budget = 0;
                    return false;
                }
                *budget -= cost;
                match how {
                    How::Is => order(comparator, value, key) == Ordering::Equal,
                    How::Contains => contains(comparator, value, key),
                    How::Matches => wildcard(comparator, value, key),
                    How::Value(relation) => relation.holds(order(comparator, value, key)),
                    How::Count(_) => false,
                }
            })
        }),
    }
}

fn order(comparator: Comparator, a: &str, b: &str) -> Ordering {
    match comparator {
        Comparator::Octet => a.as_bytes().cmp(b.as_bytes()),
        Comparator::AsciiCasemap => a
            .bytes()
            .map(|c| c.to_ascii_lowercase())
            .cmp(b.bytes().map(|c| c.to_ascii_lowercase())),
        Comparator::AsciiNumeric => numeric_order(a, b),
    }
}

/// RFC 4790 §9.1: by the value of the leading digits; a string without
/// any is bigger than every number.
fn numeric_order(a: &str, b: &str) -> Ordering {
    let digits = |s: &str| -> Option<String> {
        let run: &str = &s[..s.bytes().take_while(u8::is_ascii_digit).count()];
        (!run.is_empty()).then(|| run.trim_start_matches('0').to_owned())
    };
    match (digits(a), digits(b)) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Greater,
        (Some(_), None) => Ordering::Less,
        (Some(x), Some(y)) => x.len().cmp(&y.len()).then_with(|| x.cmp(&y)),
    }
}

fn contains(comparator: Comparator, hay: &str, needle: &str) -> bool {
    match comparator {
        Comparator::Octet => memchr::memmem::find(hay.as_bytes(), needle.as_bytes()).is_some(),
        Comparator::AsciiCasemap => {
            // Linear whatever the two are (Two-Way), on lowercased copies.
            let hay = hay.to_ascii_lowercase();
            let needle = needle.to_ascii_lowercase();
            memchr::memmem::find(hay.as_bytes(), needle.as_bytes()).is_some()
        }
        // i;ascii-numeric has no substring operation (RFC 4790 §9.1).
        Comparator::AsciiNumeric => false,
    }
}

/// `:matches`: `*` any run of characters, `?` one character, `\` takes
/// the next as it is. Greedy with one backtrack point (the last `*`):
/// time is at most the product of the two lengths, whatever the pattern.
fn wildcard(comparator: Comparator, value: &str, pattern: &str) -> bool {
    #[derive(Clone, Copy)]
    enum P {
        Star,
        One,
        Char(char),
    }
    let mut tokens = Vec::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        tokens.push(match c {
            '*' => P::Star,
            '?' => P::One,
            '\\' => P::Char(chars.next().unwrap_or('\\')),
            c => P::Char(c),
        });
    }
    if comparator == Comparator::AsciiNumeric {
        return false;
    }
    let same = |a: char, b: char| match comparator {
        Comparator::Octet => a == b,
        _ => a.eq_ignore_ascii_case(&b),
    };
    let value: Vec<char> = value.chars().collect();
    let (mut v, mut p) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while v < value.len() {
        match tokens.get(p) {
            Some(P::Star) => {
                star = Some((p, v));
                p += 1;
            }
            Some(P::One) => {
                v += 1;
                p += 1;
            }
            Some(P::Char(c)) if same(*c, value[v]) => {
                v += 1;
                p += 1;
            }
            _ => match star {
                Some((sp, sv)) => {
                    star = Some((sp, sv + 1));
                    p = sp + 1;
                    v = sv + 1;
                }
                None => return false,
            },
        }
    }
    tokens[p..].iter().all(|t| matches!(t, P::Star))
}

/// The message's header fields and body, read once when a test first
/// needs them.
struct View<'a> {
    message: &'a [u8],
    /// Each field: lowercased name, unfolded value.
    fields: OnceCell<Vec<(String, Vec<u8>)>>,
    /// The body as stored, for `body :raw`.
    raw_body: OnceCell<String>,
    /// The decoded parts, for `body :text` and `:content`.
    parts: OnceCell<Vec<(String, String, String)>>,
}

impl<'a> View<'a> {
    fn new(message: &'a [u8]) -> Self {
        View {
            message,
            fields: OnceCell::new(),
            raw_body: OnceCell::new(),
            parts: OnceCell::new(),
        }
    }

    fn raw_values(&self, name: &str) -> impl Iterator<Item = &[u8]> + '_ {
        let fields = self.fields.get_or_init(|| {
            let mut fields = header::fields(self.message);
            fields
                .iter_mut()
                .for_each(|(n, _)| n.make_ascii_lowercase());
            fields
        });
        let name = name.to_ascii_lowercase();
        fields
            .iter()
            .filter(move |(n, _)| *n == name)
            .map(|(_, v)| v.as_slice())
    }

    fn field_count(&self, name: &str) -> usize {
        self.raw_values(name).count()
    }

    /// Each field's value unfolded, encoded words decoded.
    fn texts(&self, name: &str) -> Vec<String> {
        self.raw_values(name).map(header::text).collect()
    }

    fn addresses(&self, name: &str) -> Vec<String> {
        self.raw_values(name).flat_map(header::addresses).collect()
    }

    /// The texts `body` looks at, each cut at [`MAX_BODY_TEXT`]; the
    /// message is parsed once for every `body` test of the run.
    fn body(&self, transform: &BodyTransform) -> Vec<&str> {
        if let BodyTransform::Raw = transform {
            let raw = self.raw_body.get_or_init(|| {
                let start = header::header_end(self.message);
                let end = self.message.len().min(start + MAX_BODY_TEXT);
                String::from_utf8_lossy(&self.message[start..end]).into_owned()
            });
            return vec![raw.as_str()];
        }
        let parts = self.parts.get_or_init(|| body_parts(self.message));
        let wanted = |kind: &str, sub: &str| match transform {
            BodyTransform::Content(types) => types.iter().any(|t| {
                let t = t.to_ascii_lowercase();
                t.is_empty()
                    || t == kind
                    || t.split_once('/')
                        .is_some_and(|(k, s)| k == kind && s == sub)
            }),
            _ => kind == "text",
        };
        parts
            .iter()
            .filter(|(kind, sub, _)| wanted(kind, sub))
            .map(|(_, _, text)| text.as_str())
            .collect()
    }
}

/// Each leaf part's type, subtype and decoded text (cut at
/// [`MAX_BODY_TEXT`]).
fn body_parts(message: &[u8]) -> Vec<(String, String, String)> {
    if crate::imap::mime::may_nest_too_deep(message) {
        return Vec::new();
    }
    let Some(parsed) = std::panic::catch_unwind(|| MessageParser::new().parse(message))
        .ok()
        .flatten()
    else {
        return Vec::new();
    };
    let cut = |text: String| match text.len() > MAX_BODY_TEXT {
        false => text,
        true => {
            let mut end = MAX_BODY_TEXT;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text[..end].to_owned()
        }
    };
    let mut out = Vec::new();
    for part in &parsed.parts {
        let (kind, sub) = part
            .content_type()
            .map(|ct| {
                (
                    ct.ctype().to_ascii_lowercase(),
                    ct.subtype().unwrap_or_default().to_ascii_lowercase(),
                )
            })
            .unwrap_or(("text".into(), "plain".into()));
        let text = match &part.body {
            PartType::Text(text) | PartType::Html(text) => text.to_string(),
            PartType::Binary(bytes) | PartType::InlineBinary(bytes) => {
                String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_BODY_TEXT)]).into_owned()
            }
            _ => continue,
        };
        out.push((kind, sub, cut(text)));
    }
    out
}
