//! SPF records (RFC 7208), as far as they go without DNS: parsing a record
//! into its terms, expanding macros, matching CIDR ranges. The evaluation
//! that asks DNS lives with the server (`ringpost_engine::spf`).

use std::fmt;
use std::net::IpAddr;

/// A check's result (RFC 7208 §2.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpfResult {
    /// No record, or no checkable domain.
    None,
    /// The record says nothing about this address.
    Neutral,
    /// The address may send for the domain.
    Pass,
    /// The address may not.
    Fail,
    /// Probably not.
    SoftFail,
    /// A DNS failure that may go away.
    TempError,
    /// The record is broken, or takes too many lookups.
    PermError,
}

impl SpfResult {
    /// As Authentication-Results (RFC 8601) and Received-SPF write it.
    pub fn name(self) -> &'static str {
        match self {
            SpfResult::None => "none",
            SpfResult::Neutral => "neutral",
            SpfResult::Pass => "pass",
            SpfResult::Fail => "fail",
            SpfResult::SoftFail => "softfail",
            SpfResult::TempError => "temperror",
            SpfResult::PermError => "permerror",
        }
    }
}

impl fmt::Display for SpfResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a matching mechanism yields (RFC 7208 §4.6.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qualifier {
    /// `+`, the default.
    Pass,
    /// `-`.
    Fail,
    /// `~`.
    SoftFail,
    /// `?`.
    Neutral,
}

impl Qualifier {
    /// The result when the mechanism matches.
    pub fn result(self) -> SpfResult {
        match self {
            Qualifier::Pass => SpfResult::Pass,
            Qualifier::Fail => SpfResult::Fail,
            Qualifier::SoftFail => SpfResult::SoftFail,
            Qualifier::Neutral => SpfResult::Neutral,
        }
    }
}

/// CIDR prefix lengths of `a` and `mx` (`/24//64`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// For IPv4 addresses (default 32).
    pub v4: u8,
    /// For IPv6 addresses (default 128).
    pub v6: u8,
}

impl Default for Cidr {
    fn default() -> Self {
        Cidr { v4: 32, v6: 128 }
    }
}

/// One mechanism (RFC 7208 §5); domain specs are unexpanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mechanism {
    /// `all`.
    All,
    /// `include:domain-spec`.
    Include(String),
    /// `a[:domain-spec][cidr]`.
    A(Option<String>, Cidr),
    /// `mx[:domain-spec][cidr]`.
    Mx(Option<String>, Cidr),
    /// `ptr[:domain-spec]`.
    Ptr(Option<String>),
    /// `ip4:network[/len]` or `ip6:network[/len]`.
    Ip(IpAddr, u8),
    /// `exists:domain-spec`.
    Exists(String),
}

impl Mechanism {
    /// Whether evaluating it asks DNS (and so counts toward the limit of 10).
    pub fn asks_dns(&self) -> bool {
        !matches!(self, Mechanism::All | Mechanism::Ip(..))
    }
}

/// A parsed record: its mechanisms in order, and the modifiers we use.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    /// Qualified mechanisms, in order.
    pub mechanisms: Vec<(Qualifier, Mechanism)>,
    /// `redirect=domain-spec`.
    pub redirect: Option<String>,
}

/// Whether a TXT string is an SPF record (`v=spf1` alone or followed by a
/// space, RFC 7208 §4.5).
pub fn is_spf(txt: &str) -> bool {
    let head = txt.get(..6).unwrap_or("");
    head.eq_ignore_ascii_case("v=spf1") && matches!(txt.as_bytes().get(6), None | Some(b' '))
}

/// Parse an SPF record; `Err` says what is wrong (a permerror).
pub fn parse(record: &str) -> Result<Record, String> {
    if !is_spf(record) {
        return Err("not an SPF record".into());
    }
    let mut parsed = Record::default();
    for term in record[6..].split(' ').filter(|t| !t.is_empty()) {
        // A modifier: name "=" macro-string (the name is letters, digits, - _ .).
        if let Some((name, value)) = term.split_once('=') {
            let is_name = !name.is_empty()
                && name.starts_with(|c: char| c.is_ascii_alphabetic())
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            if is_name && !name.contains(':') {
                // exp= and unknown modifiers are allowed and unused.
                if name.eq_ignore_ascii_case("redirect")
                    && parsed.redirect.replace(value.to_owned()).is_some()
                {
                    return Err("two redirect modifiers".into());
                }
                continue;
            }
        }
        let (qualifier, rest) = match term.as_bytes()[0] {
            b'+' => (Qualifier::Pass, &term[1..]),
            b'-' => (Qualifier::Fail, &term[1..]),
            b'~' => (Qualifier::SoftFail, &term[1..]),
            b'?' => (Qualifier::Neutral, &term[1..]),
            _ => (Qualifier::Pass, term),
        };
        parsed.mechanisms.push((qualifier, mechanism(rest)?));
    }
    Ok(parsed)
}

fn mechanism(text: &str) -> Result<Mechanism, String> {
    let end = text.find([':', '/']).unwrap_or(text.len());
    let (name, rest) = text.split_at(end);
    let domain = |rest: &str| -> Result<Option<String>, String> {
        match rest.strip_prefix(':') {
            Some("") => Err(format!("`{text}`: an empty domain")),
            Some(spec) => Ok(Some(spec.to_owned())),
            None if rest.is_empty() => Ok(None),
            None => Err(format!("`{text}` is not a mechanism")),
        }
    };
    match name.to_ascii_lowercase().as_str() {
        "all" if rest.is_empty() => Ok(Mechanism::All),
        "include" => domain(rest)?
            .map(Mechanism::Include)
            .ok_or_else(|| format!("`{text}`: include needs a domain")),
        "exists" => domain(rest)?
            .map(Mechanism::Exists)
            .ok_or_else(|| format!("`{text}`: exists needs a domain")),
        "ptr" => Ok(Mechanism::Ptr(domain(rest)?)),
        "a" | "mx" => {
            let (spec, cidr) = split_cidr(rest)?;
            let spec = domain(spec)?;
            Ok(match name.eq_ignore_ascii_case("a") {
                true => Mechanism::A(spec, cidr),
                false => Mechanism::Mx(spec, cidr),
            })
        }
        "ip4" | "ip6" => {
            let value = rest
                .strip_prefix(':')
                .ok_or_else(|| format!("`{text}` needs an address"))?;
            let (addr, len) = match value.split_once('/') {
                Some((addr, len)) => (addr, Some(len)),
                None => (value, None),
            };
            let v4 = name.eq_ignore_ascii_case("ip4");
            let ip: IpAddr = addr
                .parse()
                .map_err(|_| format!("`{text}`: `{addr}` is not an address"))?;
            if ip.is_ipv4() != v4 {
                return Err(format!("`{text}`: wrong address family"));
            }
            let max = if v4 { 32 } else { 128 };
            let len = match len {
                Some(len) => {
                    prefix_len(len, max).ok_or_else(|| format!("`{text}`: bad prefix length"))?
                }
                None => max,
            };
            Ok(Mechanism::Ip(ip, len))
        }
        _ => Err(format!("`{text}` is not a mechanism")),
    }
}

/// `rest` split into its domain part and its `/n//m` CIDR lengths.
fn split_cidr(rest: &str) -> Result<(&str, Cidr), String> {
    let mut cidr = Cidr::default();
    // `/` is also a macro delimiter (`%{l/}`, RFC 7208 §7.1): the lengths
    // start after the last macro.
    let after_macros = rest.rfind('}').map_or(0, |i| i + 1);
    let Some(at) = rest[after_macros..].find('/').map(|i| i + after_macros) else {
        return Ok((rest, cidr));
    };
    let (spec, lengths) = rest.split_at(at);
    let bad = || format!("`{lengths}` is not a CIDR length");
    let (v4, v6) = match lengths.strip_prefix("//") {
        Some(v6) => (None, Some(v6)),
        None => {
            let lengths = &lengths[1..];
            match lengths.split_once("//") {
                Some((v4, v6)) => (Some(v4), Some(v6)),
                None => (Some(lengths), None),
            }
        }
    };
    if let Some(v4) = v4 {
        cidr.v4 = prefix_len(v4, 32).ok_or_else(bad)?;
    }
    if let Some(v6) = v6 {
        cidr.v6 = prefix_len(v6, 128).ok_or_else(bad)?;
    }
    Ok((spec, cidr))
}

fn prefix_len(text: &str, max: u8) -> Option<u8> {
    let valid = !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit())
        && !(text.len() > 1 && text.starts_with('0'));
    text.parse::<u8>().ok().filter(|&n| valid && n <= max)
}

/// Whether `ip` is within `network/len` (of the same family).
pub fn in_network(ip: IpAddr, network: IpAddr, len: u8) -> bool {
    match (ip, network) {
        (IpAddr::V4(ip), IpAddr::V4(net)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            u32::from(ip) & mask == u32::from(net) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            u128::from(ip) & mask == u128::from(net) & mask
        }
        _ => false,
    }
}

/// What macros expand from (RFC 7208 §7.2).
pub struct MacroContext<'a> {
    /// The sender, `local@domain` (for the HELO check: `postmaster@helo`).
    pub sender: &'a str,
    /// The domain being checked now (`%{d}`).
    pub domain: &'a str,
    /// The client's address.
    pub ip: IpAddr,
    /// The HELO name.
    pub helo: &'a str,
}

/// Expand the macros of a domain-spec; `Err` is a syntax error (permerror).
pub fn expand(spec: &str, ctx: &MacroContext<'_>) -> Result<String, String> {
    let mut out = String::with_capacity(spec.len() + 32);
    let mut chars = spec.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('%') => out.push('%'),
            Some('_') => out.push(' '),
            Some('-') => out.push_str("%20"),
            Some('{') => {
                let mut body = String::new();
                loop {
                    match chars.next() {
                        Some('}') => break,
                        Some(c) => body.push(c),
                        None => return Err(format!("`{spec}`: a macro without its `}}`")),
                    }
                }
                out.push_str(
                    &expand_one(&body, ctx)
                        .ok_or_else(|| format!("`%{{{body}}}` is not a macro"))?,
                );
            }
            _ => return Err(format!("`{spec}`: a `%` that starts no macro")),
        }
    }
    Ok(out)
}

/// One `%{...}` body: letter, digits, `r`, delimiters.
fn expand_one(body: &str, ctx: &MacroContext<'_>) -> Option<String> {
    let mut chars = body.chars();
    let letter = chars.next()?;
    let rest: String = chars.collect();
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    let rest = &rest[digits.len()..];
    let (reverse, delimiters) = match rest.strip_prefix(['r', 'R']) {
        Some(delimiters) => (true, delimiters),
        None => (false, rest),
    };
    if !delimiters.chars().all(|c| ".-+,/_=".contains(c)) {
        return None;
    }
    let (local, sender_domain) = ctx
        .sender
        .rsplit_once('@')
        .unwrap_or(("postmaster", ctx.sender));
    let value = match letter.to_ascii_lowercase() {
        's' => ctx.sender.to_owned(),
        'l' => local.to_owned(),
        'o' => sender_domain.to_owned(),
        'd' => ctx.domain.to_owned(),
        'i' => match ctx.ip {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => v6
                .octets()
                .iter()
                .flat_map(|b| [b >> 4, b & 0xf])
                .map(|n| format!("{n:x}"))
                .collect::<Vec<_>>()
                .join("."),
        },
        // The validated PTR name: not looked up here (RFC 7208 §7.3 lets
        // "unknown" stand in).
        'p' => "unknown".to_owned(),
        'v' => match ctx.ip {
            IpAddr::V4(_) => "in-addr".to_owned(),
            IpAddr::V6(_) => "ip6".to_owned(),
        },
        'h' => ctx.helo.to_owned(),
        _ => return None,
    };
    let delimiters: Vec<char> = match delimiters.is_empty() {
        true => vec!['.'],
        false => delimiters.chars().collect(),
    };
    let mut parts: Vec<&str> = value.split(|c| delimiters.contains(&c)).collect();
    if reverse {
        parts.reverse();
    }
    if !digits.is_empty() {
        let keep: usize = digits.parse().ok().filter(|&n| n > 0)?;
        if parts.len() > keep {
            parts = parts.split_off(parts.len() - keep);
        }
    }
    let joined = parts.join(".");
    Some(match letter.is_ascii_uppercase() {
        true => url_escape(&joined),
        false => joined,
    })
}

/// RFC 3986 escaping of an uppercase macro letter.
fn url_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// What the fuzz target and the smoke test check of any text: parsing a
/// record and expanding a macro string never panic, and an expansion has
/// no `%{` left.
#[cfg(any(test, feature = "fuzzing"))]
pub fn check(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = parse(&format!("v=spf1 {text}"));
    let _ = parse(&text);
    let context = MacroContext {
        sender: "user@example.com",
        domain: "example.com",
        ip: "2001:db8::1".parse().expect("an address"),
        helo: "mx.example.com",
    };
    if let Ok(expanded) = expand(&text, &context) {
        assert!(!expanded.contains("%{") || text.contains("%%{"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fuzz_smoke() {
        for text in [
            "",
            "%",
            "%{",
            "%{d9999999999999999999}",
            "%{ir}.%{v}",
            "a:%{l-}//64",
            "ip6:::/0 -all",
            "\u{0}\u{ff}",
            "redirect=%{d}",
        ] {
            check(text.as_bytes());
        }
    }

    #[test]
    fn a_slash_inside_a_macro_is_its_delimiter_not_a_prefix_length() {
        assert_eq!(
            split_cidr(":%{l/}.example.com").unwrap(),
            (":%{l/}.example.com", Cidr::default())
        );
        let (spec, cidr) = split_cidr(":%{l/}.example.com/24//64").unwrap();
        assert_eq!((spec, cidr.v4, cidr.v6), (":%{l/}.example.com", 24, 64));
        assert!(parse("v=spf1 a:%{l/}.example.com -all").is_ok());
    }

    #[test]
    fn records_parse_into_terms() {
        let r = parse("v=spf1 +a mx/24 -ip4:192.0.2.0/24 ip6:2001:db8::/32 ~include:_spf.example.com ?exists:%{i}.x.example a:b.example//64 redirect=other.example exp=why.example").unwrap();
        assert_eq!(
            r.mechanisms,
            vec![
                (Qualifier::Pass, Mechanism::A(None, Cidr::default())),
                (
                    Qualifier::Pass,
                    Mechanism::Mx(None, Cidr { v4: 24, v6: 128 })
                ),
                (
                    Qualifier::Fail,
                    Mechanism::Ip("192.0.2.0".parse().unwrap(), 24)
                ),
                (
                    Qualifier::Pass,
                    Mechanism::Ip("2001:db8::".parse().unwrap(), 32)
                ),
                (
                    Qualifier::SoftFail,
                    Mechanism::Include("_spf.example.com".into())
                ),
                (
                    Qualifier::Neutral,
                    Mechanism::Exists("%{i}.x.example".into())
                ),
                (
                    Qualifier::Pass,
                    Mechanism::A(Some("b.example".into()), Cidr { v4: 32, v6: 64 })
                ),
            ]
        );
        assert_eq!(r.redirect.as_deref(), Some("other.example"));
        assert!(
            is_spf("v=spf1") && is_spf("V=SPF1 -all") && !is_spf("v=spf10 -all") && !is_spf("spf1")
        );
    }

    #[test]
    fn broken_records_are_refused() {
        for bad in [
            "v=spf1 foo",
            "v=spf1 ip4:300.1.1.1",
            "v=spf1 ip4:192.0.2.1/33",
            "v=spf1 ip6:192.0.2.1",
            "v=spf1 include",
            "v=spf1 a:",
            "v=spf1 a/0x",
            "v=spf1 redirect=a redirect=b",
            "v=spf1 -all/24",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cidr_matching() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(in_network(ip("192.0.2.77"), ip("192.0.2.0"), 24));
        assert!(!in_network(ip("192.0.3.1"), ip("192.0.2.0"), 24));
        assert!(in_network(ip("10.1.2.3"), ip("0.0.0.0"), 0));
        assert!(in_network(ip("2001:db8::1"), ip("2001:db8::"), 32));
        assert!(!in_network(ip("2001:db8::1"), ip("192.0.2.0"), 0));
    }

    /// RFC 7208 §7.4's examples.
    #[test]
    fn macros_expand_as_the_rfc_shows() {
        let v4 = MacroContext {
            sender: "strong-bad@email.example.com",
            domain: "email.example.com",
            ip: "192.0.2.3".parse().unwrap(),
            helo: "mx.example.org",
        };
        let cases = [
            ("%{s}", "strong-bad@email.example.com"),
            ("%{o}", "email.example.com"),
            ("%{d}", "email.example.com"),
            ("%{d4}", "email.example.com"),
            ("%{d3}", "email.example.com"),
            ("%{d2}", "example.com"),
            ("%{d1}", "com"),
            ("%{dr}", "com.example.email"),
            ("%{d2r}", "example.email"),
            ("%{l}", "strong-bad"),
            ("%{l-}", "strong.bad"),
            ("%{lr}", "strong-bad"),
            ("%{lr-}", "bad.strong"),
            ("%{l1r-}", "strong"),
            (
                "%{ir}.%{v}._spf.%{d2}",
                "3.2.0.192.in-addr._spf.example.com",
            ),
            ("%{lr-}.lp._spf.%{d2}", "bad.strong.lp._spf.example.com"),
            (
                "%{d2}.trusted-domains.example.net",
                "example.com.trusted-domains.example.net",
            ),
            ("%%%_%-", "% %20"),
        ];
        for (spec, want) in cases {
            assert_eq!(expand(spec, &v4).unwrap(), want, "{spec}");
        }
        let v6 = MacroContext {
            ip: "2001:db8::cb01".parse().unwrap(),
            ..v4
        };
        assert_eq!(
            expand("%{ir}.%{v}._spf.%{d2}", &v6).unwrap(),
            "1.0.b.c.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6._spf.example.com"
        );
        for bad in ["%{x}", "%{d", "%a", "%{d0}"] {
            assert!(expand(bad, &v4).is_err(), "{bad}");
        }
    }
}
