//! Reverse- and forward-paths of MAIL and RCPT (RFC 5321 §4.1.2), with the
//! SMTPUTF8 extensions of RFC 6531 §3.3.
//!
//! # Format
//! `<` [source-route `:`] local-part `@` (domain | `[` address-literal `]`) `>`,
//! or `<>` (null sender), or `<postmaster>` (recipient only). The source
//! route is obsolete; it is parsed and dropped, as §4.1.1.3 asks.
//!
//! Non-ASCII characters are accepted wherever RFC 6531 allows them; whether the
//! transaction may use them (the SMTPUTF8 parameter) is the session's call.

use std::borrow::Cow;
use std::net::Ipv6Addr;

/// Longest local part, in octets (RFC 5321 §4.5.3.1.1).
pub(super) const MAX_LOCAL_PART: usize = 64;
/// Longest domain, in octets (RFC 5321 §4.5.3.1.2).
pub(super) const MAX_DOMAIN: usize = 255;
/// Longest path including the angle brackets (RFC 5321 §4.5.3.1.3).
pub(super) const MAX_PATH: usize = 256;
/// Longest DNS label (RFC 1035 §2.3.4).
const MAX_LABEL: usize = 63;

/// A parsed path, borrowing from the command line (unless a quoted local
/// part that needs no quotes was unquoted).
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Path<'a> {
    /// `<>`: the null reverse-path (bounces).
    Null,
    /// `<postmaster>` without a domain (RFC 5321 §4.1.1.3).
    Postmaster(Cow<'a, str>),
    /// `local@domain`, without brackets or source route.
    Mailbox(Cow<'a, str>),
}

impl Path<'_> {
    /// The address as the driver sees it: no brackets, empty for the null path.
    pub(super) fn as_str(&self) -> &str {
        match self {
            Path::Null => "",
            Path::Postmaster(s) | Path::Mailbox(s) => s,
        }
    }
}

/// Why a path was refused.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum PathError {
    /// Not a path.
    Syntax,
    /// A path, but over a length limit.
    TooLong,
}

/// Parse the path at the start of `arg` (the text after `FROM:` or `TO:`).
///
/// Returns the path and the parameter text after it (spaces trimmed).
pub(super) fn parse_path(arg: &str) -> Result<(Path<'_>, &str), PathError> {
    let mut cur = Cursor {
        s: arg.as_bytes(),
        pos: 0,
    };
    cur.expect(b'<')?;
    let path = if cur.eat(b'>') {
        Path::Null
    } else {
        if cur.peek() == Some(b'@') {
            source_route(&mut cur)?;
        }
        let start = cur.pos;
        local_part(&mut cur)?;
        let local_len = cur.pos - start;
        // `"alice"` is `alice` (RFC 5321 §4.1.2: quotes that are not needed
        // change nothing), so accounts and postmaster are found either way.
        let unquoted = unneeded_quotes(&arg[start..cur.pos]);
        let local = unquoted.as_deref().unwrap_or(&arg[start..cur.pos]);
        let postmaster = cur.peek() == Some(b'>') && local.eq_ignore_ascii_case("postmaster");
        if !postmaster {
            cur.expect(b'@')?;
            let domain_start = cur.pos;
            if cur.peek() == Some(b'[') {
                address_literal(&mut cur)?;
            } else {
                domain(&mut cur)?;
            }
            if cur.pos - domain_start > MAX_DOMAIN {
                return Err(PathError::TooLong);
            }
        }
        if local_len > MAX_LOCAL_PART {
            return Err(PathError::TooLong);
        }
        let mailbox = match unquoted {
            Some(local) => Cow::Owned(format!("{local}{}", &arg[start + local_len..cur.pos])),
            None => Cow::Borrowed(&arg[start..cur.pos]),
        };
        cur.expect(b'>')?;
        if postmaster {
            Path::Postmaster(mailbox)
        } else {
            Path::Mailbox(mailbox)
        }
    };
    if cur.pos > MAX_PATH {
        return Err(PathError::TooLong);
    }
    let rest = &arg[cur.pos..];
    match rest.as_bytes().first() {
        None => Ok((path, rest)),
        Some(b' ') => Ok((path, rest.trim_start_matches(' '))),
        Some(_) => Err(PathError::Syntax),
    }
}

/// Whether `address` (no angle brackets) is a mailbox RCPT TO would take:
/// `local@domain` within RFC 5321's lengths, non-ASCII as RFC 6531 allows.
/// For callers that take addresses some other way than SMTP (the HTTP
/// injection API), so both refuse the same things.
pub fn is_mailbox(address: &str) -> bool {
    canonical_mailbox(address).is_some()
}

/// `address` as RCPT TO would record it (a quoted local part that needs no
/// quotes unquoted: `"bob"@x` is `bob@x`), if it is a mailbox
/// ([`is_mailbox`]). Whatever compares addresses (the suppression list,
/// local accounts) must see one spelling per mailbox, however it came.
pub fn canonical_mailbox(address: &str) -> Option<String> {
    if address.is_empty() || address.starts_with('@') || address.contains(['<', '>', ' ']) {
        return None;
    }
    match parse_path(&format!("<{address}>")) {
        Ok((Path::Mailbox(mailbox), "")) => Some(mailbox.into_owned()),
        _ => None,
    }
}

/// The account part of an address with a detail: `alice+news@x` is
/// `alice@x` for the delimiter `+` (RFC 5233's subaddress); `None` without
/// one, or with no delimiter.
pub fn without_detail(address: &str, delimiter: &str) -> Option<String> {
    let (local, domain) = address.rsplit_once('@')?;
    if delimiter.is_empty() {
        return None;
    }
    let (account, _detail) = local.split_once(delimiter)?;
    (!account.is_empty()).then(|| format!("{account}@{domain}"))
}

/// A read position over the path bytes.
struct Cursor<'a> {
    s: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }
    fn eat(&mut self, byte: u8) -> bool {
        let hit = self.peek() == Some(byte);
        self.pos += usize::from(hit);
        hit
    }
    fn expect(&mut self, byte: u8) -> Result<(), PathError> {
        if self.eat(byte) {
            Ok(())
        } else {
            Err(PathError::Syntax)
        }
    }
    /// Advance over bytes matching `class`; returns how many.
    fn take_while(&mut self, class: impl Fn(u8) -> bool) -> usize {
        let start = self.pos;
        while self.peek().is_some_and(&class) {
            self.pos += 1;
        }
        self.pos - start
    }
}

/// `atext` of RFC 5322, plus any non-ASCII byte (RFC 6531 `UTF8-non-ascii`;
/// the input is already known to be UTF-8, so these are whole characters).
fn is_atext(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b) || b >= 0x80
}

/// `qtextSMTP` (RFC 5321 §4.1.2), plus non-ASCII.
fn is_qtext(b: u8) -> bool {
    matches!(b, 32..=33 | 35..=91 | 93..=126) || b >= 0x80
}

/// Letters, digits and (RFC 6531) U-label characters.
fn is_let_dig(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b >= 0x80
}

/// `@domain *("," @domain) ":"`, checked and skipped.
fn source_route(cur: &mut Cursor<'_>) -> Result<(), PathError> {
    loop {
        cur.expect(b'@')?;
        domain(cur)?;
        if !cur.eat(b',') {
            return cur.expect(b':');
        }
    }
}

/// The contents of a quoted local part (`"..."`, escapes undone) when
/// they form a dot-string, which needs no quotes; None otherwise.
fn unneeded_quotes(local: &str) -> Option<String> {
    let inner = local.strip_prefix('"')?.strip_suffix('"')?;
    let mut plain = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        plain.push(if c == '\\' { chars.next()? } else { c });
    }
    let dot_string = plain
        .split('.')
        .all(|atom| !atom.is_empty() && atom.bytes().all(is_atext));
    dot_string.then_some(plain)
}

/// `Dot-string` or `Quoted-string`.
fn local_part(cur: &mut Cursor<'_>) -> Result<(), PathError> {
    if cur.eat(b'"') {
        loop {
            match cur.peek() {
                Some(b'"') => {
                    cur.pos += 1;
                    return Ok(());
                }
                Some(b'\\') => {
                    cur.pos += 1;
                    // quoted-pairSMTP: backslash then any printable ASCII.
                    match cur.peek() {
                        Some(32..=126) => cur.pos += 1,
                        _ => return Err(PathError::Syntax),
                    }
                }
                Some(b) if is_qtext(b) => cur.pos += 1,
                _ => return Err(PathError::Syntax),
            }
        }
    }
    loop {
        if cur.take_while(is_atext) == 0 {
            return Err(PathError::Syntax);
        }
        if !cur.eat(b'.') {
            return Ok(());
        }
    }
}

/// `sub-domain *("." sub-domain)`; each label starts and ends with a letter
/// or digit and has hyphens only inside.
fn domain(cur: &mut Cursor<'_>) -> Result<(), PathError> {
    loop {
        let start = cur.pos;
        let len = cur.take_while(|b| is_let_dig(b) || b == b'-');
        let label = &cur.s[start..cur.pos];
        if len == 0 || !is_let_dig(label[0]) || !is_let_dig(label[len - 1]) {
            return Err(PathError::Syntax);
        }
        if len > MAX_LABEL {
            return Err(PathError::TooLong);
        }
        if !cur.eat(b'.') {
            return Ok(());
        }
    }
}

/// `[IPv4]`, `[IPv6:...]` or a general `[tag:content]` literal (§4.1.3).
fn address_literal(cur: &mut Cursor<'_>) -> Result<(), PathError> {
    cur.expect(b'[')?;
    let start = cur.pos;
    // dcontent: printable ASCII except "[", "\" and "]".
    cur.take_while(|b| matches!(b, 33..=90 | 94..=126));
    // The slice holds ASCII only, so this cannot fail.
    let inner = std::str::from_utf8(&cur.s[start..cur.pos]).map_err(|_| PathError::Syntax)?;
    cur.expect(b']')?;
    let valid = match inner.split_once(':') {
        None => ipv4_literal(inner).is_some(),
        Some((tag, addr)) if tag.eq_ignore_ascii_case("IPv6") => addr.parse::<Ipv6Addr>().is_ok(),
        // General-address-literal: Standardized-tag ":" 1*dcontent. Tags are
        // registered with IANA; none but IPv6 exists, so only the shape is checked.
        Some((tag, addr)) => {
            let mut tag_cur = Cursor {
                s: tag.as_bytes(),
                pos: 0,
            };
            !addr.is_empty()
                && domain(&mut tag_cur).is_ok()
                && tag_cur.pos == tag.len()
                && !tag.contains('.')
        }
    };
    if valid {
        Ok(())
    } else {
        Err(PathError::Syntax)
    }
}

/// RFC 5321's IPv4-address-literal (the text between the brackets): four
/// `Snum`s of one to three digits, each at most 255. Leading zeros are
/// allowed there (`192.000.002.001`), though Rust's `Ipv4Addr` parser
/// refuses them.
pub fn ipv4_literal(text: &str) -> Option<std::net::Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut parts = text.split('.');
    for octet in &mut octets {
        let part = parts.next()?;
        if !(1..=3).contains(&part.len()) || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        *octet = part.parse().ok()?;
    }
    parts
        .next()
        .is_none()
        .then_some(std::net::Ipv4Addr::from(octets))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_literals_may_have_leading_zeros() {
        for ok in ["192.0.2.1", "0.0.0.0", "255.255.255.255"] {
            assert_eq!(ipv4_literal(ok), ok.parse().ok(), "{ok}");
        }
        assert_eq!(ipv4_literal("192.000.002.001"), "192.0.2.1".parse().ok());
        for bad in [
            "256.0.0.1",
            "1.2.3",
            "1.2.3.4.5",
            "1..2.3",
            "0001.2.3.4",
            "a.b.c.d",
            "",
        ] {
            assert_eq!(ipv4_literal(bad), None, "{bad}");
        }
    }

    fn mailbox(arg: &str) -> (&'static str, &str) {
        match parse_path(arg) {
            // Leaked: a test's few bytes, so results compare as plain strs.
            Ok((path, rest)) => (path.as_str().to_owned().leak(), rest),
            Err(e) => panic!("{arg}: {e:?}"),
        }
    }

    #[test]
    fn accepts_valid_paths() {
        assert_eq!(parse_path("<>").unwrap(), (Path::Null, ""));
        assert_eq!(
            parse_path("<Postmaster>").unwrap(),
            (Path::Postmaster("Postmaster".into()), "")
        );
        // Quotes that are not needed are dropped; needed ones are kept.
        assert_eq!(
            parse_path("<\"Postmaster\">").unwrap(),
            (Path::Postmaster("Postmaster".into()), "")
        );
        assert_eq!(mailbox("<\"alice\"@b.example>"), ("alice@b.example", ""));
        assert_eq!(
            mailbox("<\"first.l\\ast\"@b.example> SIZE=1"),
            ("first.last@b.example", "SIZE=1")
        );
        for kept in [
            "\"a b\"@x.example",
            "\"a..b\"@x.example",
            "\".a\"@x.example",
            "\"\"@x.example",
        ] {
            assert_eq!(mailbox(&format!("<{kept}>")).0, kept);
        }
        assert_eq!(mailbox("<a@b.example>"), ("a@b.example", ""));
        assert_eq!(
            mailbox("<first.last+tag@sub-1.example.org> SIZE=10"),
            ("first.last+tag@sub-1.example.org", "SIZE=10")
        );
        assert_eq!(
            mailbox("<\"john doe\\\"x\"@example.com>"),
            ("\"john doe\\\"x\"@example.com", "")
        );
        assert_eq!(mailbox("<a@[192.0.2.1]>"), ("a@[192.0.2.1]", ""));
        assert_eq!(
            mailbox("<a@[IPv6:2001:db8::1]>"),
            ("a@[IPv6:2001:db8::1]", "")
        );
        assert_eq!(mailbox("<a@[x-tag:stuff]>"), ("a@[x-tag:stuff]", ""));
        assert_eq!(
            mailbox("<@relay.example,@r2.example:user@example.com>"),
            ("user@example.com", "")
        );
        assert_eq!(
            mailbox("<jöran@bücher.example>"),
            ("jöran@bücher.example", "")
        );
    }

    #[test]
    fn mailboxes_outside_smtp() {
        for good in [
            "a@b.example",
            "first.last+tag@x.example",
            "jöran@bücher.example",
            "a@[192.0.2.1]",
        ] {
            assert!(is_mailbox(good), "{good}");
        }
        for bad in [
            "",
            "a",
            "postmaster",
            "@a.example",
            "a@",
            "<a@b.example>",
            "a@b.example x",
            "a b@c.example",
            "@r.example:a@b.example",
            "a@b..example",
        ] {
            assert!(!is_mailbox(bad), "{bad}");
        }
        // One spelling per mailbox, as RCPT TO records it.
        assert_eq!(
            canonical_mailbox("\"bob\"@x.example").as_deref(),
            Some("bob@x.example")
        );
        assert_eq!(canonical_mailbox("a b@x.example"), None);
    }

    #[test]
    fn refuses_bad_syntax() {
        for bad in [
            "",
            "a@b",
            "<a@b",
            "a@b>",
            "<a>",
            "<@b>",
            "<a@>",
            "<a@b.>",
            "<a@.b>",
            "<.a@b>",
            "<a.@b>",
            "<a..b@c>",
            "<a b@c>",
            "<a@-b>",
            "<a@b->",
            "<a@b_c>",
            "<\"unterminated@b>",
            "<a@[1.2.3]>",
            "<a@[1.2.3.4.5]>",
            "<a@[IPv6:zz]>",
            "<a@[tag:]>",
            "<a@b>x",
            "<postmaster",
            "<@r:>",
            "<a@b>>",
            "<a@[x.y:z]>",
        ] {
            assert_eq!(parse_path(bad).unwrap_err(), PathError::Syntax, "{bad:?}");
        }
    }

    #[test]
    fn length_limits() {
        let local64 = "l".repeat(MAX_LOCAL_PART);
        assert!(parse_path(&format!("<{local64}@example.com>")).is_ok());
        assert_eq!(
            parse_path(&format!("<{local64}l@example.com>")).unwrap_err(),
            PathError::TooLong
        );
        // 256 octets with the brackets is the longest path.
        let domain = format!(
            "{}.{}.{}.{}",
            "d".repeat(63),
            "d".repeat(63),
            "d".repeat(63),
            "d".repeat(59)
        );
        let longest = format!("<ab@{domain}>");
        assert_eq!(longest.len(), MAX_PATH);
        assert!(parse_path(&longest).is_ok());
        assert_eq!(
            parse_path(&format!("<abc@{domain}>")).unwrap_err(),
            PathError::TooLong
        );
        assert_eq!(
            parse_path(&format!("<a@{}.com>", "d".repeat(64))).unwrap_err(),
            PathError::TooLong
        );
    }
}
