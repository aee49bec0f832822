//! SPF checks (RFC 7208) of mail from untrusted clients: the client's
//! address against the MAIL FROM domain's record (the HELO name's for the
//! null sender), with RFC 7208's limits — at most 10 mechanisms and
//! modifiers that ask DNS, at most 10 MX names per `mx`, at most 2 lookups
//! that find nothing — and DNS through the resolver thread. The records'
//! syntax and macros are `ringpost_protocols::spf`; this module asks DNS.
//!
//! Not done: `ptr` never matches (RFC 7208 §5.5 asks publishers not to use
//! it) and `%{p}` expands to `unknown` (§7.3 allows it); `exp=` is not
//! fetched.

use super::Dns;
use crate::relay::resolver::{LookupFailure, RecordKind};
use ringpost_protocols::spf::{self, MacroContext, Mechanism, SpfResult};
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;

/// RFC 7208 §4.6.4: DNS-asking terms per check.
const MAX_LOOKUPS: u32 = 10;
/// RFC 7208 §4.6.4: lookups that find nothing.
const MAX_VOID_LOOKUPS: u32 = 2;
/// RFC 7208 §4.6.4: MX names looked at per `mx`.
const MAX_MX_NAMES: usize = 10;

/// A check's outcome, for the Authentication-Results field and the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The result.
    pub result: SpfResult,
    /// Which identity was checked: `mailfrom` or `helo`.
    pub identity: &'static str,
    /// The identity's value: the sender address, or the HELO name.
    pub value: String,
    /// In words.
    pub why: String,
}

/// Which identity SPF checks (`mailfrom`, or `helo` for the null sender),
/// its value, and the sender address macros see.
fn identity(sender: &str, helo: &str) -> (&'static str, String, String) {
    match sender.rsplit_once('@') {
        Some(_) => ("mailfrom", sender.to_owned(), sender.to_owned()),
        None => ("helo", helo.to_owned(), format!("postmaster@{helo}")),
    }
}

/// The verdict of a check that ran out of time: a temporary error for
/// the identity it would have checked (RFC 7208 §4.6.4).
pub fn timed_out(sender: &str, helo: &str) -> Verdict {
    let (identity, value, _) = identity(sender, helo);
    Verdict {
        result: SpfResult::TempError,
        identity,
        why: format!("the check of {value} timed out"),
        value,
    }
}

/// Check `ip` against the SPF record of `sender`'s domain (the null
/// sender: `helo`'s).
pub async fn check(dns: &impl Dns, ip: IpAddr, sender: &str, helo: &str) -> Verdict {
    let (identity, value, checked_sender) = identity(sender, helo);
    let domain = checked_sender
        .rsplit_once('@')
        .map_or(helo, |(_, d)| d)
        .to_ascii_lowercase();
    let mut check = Check {
        dns,
        ip,
        sender: checked_sender,
        helo: helo.to_owned(),
        lookups: 0,
        voids: 0,
    };
    let result = check.host(domain.clone()).await;
    let why = match result {
        SpfResult::Pass => format!("domain of {value} designates {ip} as permitted sender"),
        SpfResult::Fail => format!("domain of {value} does not designate {ip} as permitted sender"),
        SpfResult::SoftFail => {
            format!("domain of transitioning {value} does not designate {ip} as permitted sender")
        }
        SpfResult::Neutral => format!("{ip} is neither permitted nor denied by domain of {value}"),
        SpfResult::None => format!("domain of {value} does not publish an SPF record"),
        SpfResult::TempError => format!("a DNS error while checking {domain}"),
        SpfResult::PermError => format!("the SPF record of {domain} cannot be used"),
    };
    Verdict {
        result,
        identity,
        value,
        why,
    }
}

/// One check's state: what it asked so far.
struct Check<'a, D> {
    dns: &'a D,
    ip: IpAddr,
    sender: String,
    helo: String,
    lookups: u32,
    voids: u32,
}

type Boxed<'b, T> = Pin<Box<dyn Future<Output = T> + 'b>>;

impl<D: Dns> Check<'_, D> {
    /// RFC 7208 §4: check_host() for `domain`.
    fn host(&mut self, domain: String) -> Boxed<'_, SpfResult> {
        Box::pin(async move {
            if !valid_domain(&domain) {
                return SpfResult::None;
            }
            let texts = match self.dns.records(&domain, RecordKind::Txt).await {
                Ok(texts) => texts,
                Err(LookupFailure::None) => return SpfResult::None,
                Err(LookupFailure::Temporary(_)) => return SpfResult::TempError,
            };
            let mut found = texts.iter().filter(|t| spf::is_spf(t));
            let (Some(text), None) = (found.next(), found.next()) else {
                return match texts.iter().filter(|t| spf::is_spf(t)).count() {
                    0 => SpfResult::None,
                    _ => SpfResult::PermError,
                };
            };
            let Ok(record) = spf::parse(text) else {
                return SpfResult::PermError;
            };
            for (qualifier, mechanism) in &record.mechanisms {
                if mechanism.asks_dns() {
                    self.lookups += 1;
                    if self.lookups > MAX_LOOKUPS {
                        return SpfResult::PermError;
                    }
                }
                match self.matches(mechanism, &domain).await {
                    Ok(true) => return qualifier.result(),
                    Ok(false) => {}
                    Err(result) => return result,
                }
            }
            if let Some(redirect) = &record.redirect {
                self.lookups += 1;
                if self.lookups > MAX_LOOKUPS {
                    return SpfResult::PermError;
                }
                let Ok(target) = self.expand(redirect, &domain) else {
                    return SpfResult::PermError;
                };
                return match self.host(target).await {
                    SpfResult::None => SpfResult::PermError,
                    result => result,
                };
            }
            SpfResult::Neutral
        })
    }

    /// Whether `mechanism` matches; `Err` ends the check with that result.
    async fn matches(&mut self, mechanism: &Mechanism, domain: &str) -> Result<bool, SpfResult> {
        match mechanism {
            Mechanism::All => Ok(true),
            Mechanism::Ip(network, len) => Ok(spf::in_network(self.ip, *network, *len)),
            Mechanism::Ptr(_) => Ok(false),
            Mechanism::Include(spec) => {
                let target = self.expand(spec, domain)?;
                match self.host(target).await {
                    SpfResult::Pass => Ok(true),
                    SpfResult::Fail | SpfResult::SoftFail | SpfResult::Neutral => Ok(false),
                    SpfResult::TempError => Err(SpfResult::TempError),
                    SpfResult::PermError | SpfResult::None => Err(SpfResult::PermError),
                }
            }
            Mechanism::Exists(spec) => {
                let target = self.expand(spec, domain)?;
                let found = self.lookup(&target, RecordKind::A).await?;
                Ok(!found.is_empty())
            }
            Mechanism::A(spec, cidr) => {
                let target = self.target(spec, domain)?;
                self.any_address_matches(&target, cidr).await
            }
            Mechanism::Mx(spec, cidr) => {
                let target = self.target(spec, domain)?;
                let names = self.lookup(&target, RecordKind::Mx).await?;
                if names.len() > MAX_MX_NAMES {
                    return Err(SpfResult::PermError);
                }
                for name in names {
                    if self.any_address_matches(&name, cidr).await? {
                        return Ok(true);
                    }
                }
                Ok(false)
            }
        }
    }

    /// Whether an address of `name` (of the client's family) is within
    /// the CIDR length around the client.
    async fn any_address_matches(
        &mut self,
        name: &str,
        cidr: &spf::Cidr,
    ) -> Result<bool, SpfResult> {
        let (kind, len) = match self.ip {
            IpAddr::V4(_) => (RecordKind::A, cidr.v4),
            IpAddr::V6(_) => (RecordKind::Aaaa, cidr.v6),
        };
        let addrs = self.lookup(name, kind).await?;
        Ok(addrs
            .iter()
            .filter_map(|a| a.parse::<IpAddr>().ok())
            .any(|a| spf::in_network(self.ip, a, len)))
    }

    /// Records of `name`; nothing found counts as a void lookup.
    async fn lookup(&mut self, name: &str, kind: RecordKind) -> Result<Vec<String>, SpfResult> {
        match self.dns.records(name, kind).await {
            Ok(found) => Ok(found),
            Err(LookupFailure::None) => {
                self.voids += 1;
                match self.voids > MAX_VOID_LOOKUPS {
                    true => Err(SpfResult::PermError),
                    false => Ok(Vec::new()),
                }
            }
            Err(LookupFailure::Temporary(_)) => Err(SpfResult::TempError),
        }
    }

    /// The domain a mechanism names, or the current one.
    fn target(&self, spec: &Option<String>, domain: &str) -> Result<String, SpfResult> {
        match spec {
            Some(spec) => self.expand(spec, domain),
            None => Ok(domain.to_owned()),
        }
    }

    fn expand(&self, spec: &str, domain: &str) -> Result<String, SpfResult> {
        let context = MacroContext {
            sender: &self.sender,
            domain,
            ip: self.ip,
            helo: &self.helo,
        };
        let expanded = spf::expand(spec, &context).map_err(|_| SpfResult::PermError)?;
        // RFC 7208 §7.3: longer than 253 characters, left labels go: what
        // is left starts after the first dot that leaves at most 253 (one
        // cut, whatever the length of a record's expansion).
        if expanded.len() <= 253 {
            return Ok(expanded);
        }
        let keep_from = expanded.len() - 253;
        // Bytes, not chars: a cut just after a '.' is on a char boundary.
        match expanded.as_bytes()[keep_from - 1..]
            .iter()
            .position(|&b| b == b'.')
        {
            Some(dot) => Ok(expanded[keep_from + dot..].to_owned()),
            None => Err(SpfResult::PermError),
        }
    }
}

/// RFC 7208 §4.3: a checkable domain has at least two labels, none empty
/// or over 63 octets.
fn valid_domain(domain: &str) -> bool {
    let domain = domain.trim_end_matches('.');
    domain.len() <= 253
        && domain.contains('.')
        && domain
            .split('.')
            .all(|label| !label.is_empty() && label.len() <= 63)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::resolver::Records;
    use std::collections::HashMap;

    /// DNS from a table: (name, kind) → records; names not in it do not
    /// exist; `temp.test` fails for now.
    struct Table(HashMap<(String, &'static str), Vec<String>>);

    impl Table {
        fn new(entries: &[(&str, &'static str, &[&str])]) -> Table {
            Table(
                entries
                    .iter()
                    .map(|(name, kind, records)| {
                        (
                            (name.to_string(), *kind),
                            records.iter().map(|r| r.to_string()).collect(),
                        )
                    })
                    .collect(),
            )
        }
    }

    impl Dns for Table {
        fn records(&self, name: &str, kind: RecordKind) -> impl Future<Output = Records> {
            let kind = match kind {
                RecordKind::Txt => "txt",
                RecordKind::A => "a",
                RecordKind::Aaaa => "aaaa",
                RecordKind::Mx => "mx",
            };
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            let answer = match (name.as_str(), self.0.get(&(name.clone(), kind))) {
                ("temp.test", _) => Err(LookupFailure::Temporary("SERVFAIL".into())),
                (_, Some(records)) => Ok(records.clone()),
                (_, None) => Err(LookupFailure::None),
            };
            std::future::ready(answer)
        }
    }

    fn result(dns: &Table, ip: &str, sender: &str) -> SpfResult {
        futures::executor::block_on(check(dns, ip.parse().unwrap(), sender, "client.test")).result
    }

    #[test]
    fn a_long_expansion_loses_its_left_labels() {
        // 278 characters expanded: cut after a dot to the last 251.
        let record = format!("v=spf1 exists:{}end.test -all", "%{d}.".repeat(30));
        let kept = format!("{}end.test", "big.test.".repeat(27));
        assert_eq!(kept.len(), 251);
        let dns = Table::new(&[
            ("big.test", "txt", &[record.as_str()]),
            (kept.as_str(), "a", &["127.0.0.2"]),
        ]);
        assert_eq!(result(&dns, "192.0.2.1", "x@big.test"), SpfResult::Pass);
        let dns = Table::new(&[("big.test", "txt", &[record.as_str()])]);
        assert_eq!(result(&dns, "192.0.2.1", "x@big.test"), SpfResult::Fail);
    }

    #[test]
    fn mechanisms_and_qualifiers() {
        let dns = Table::new(&[
            (
                "ip.test",
                "txt",
                &[
                    "v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 -all",
                    "unrelated text",
                ],
            ),
            ("a.test", "txt", &["v=spf1 a a:other.test/24 ~all"]),
            ("a.test", "a", &["198.51.100.1"]),
            ("other.test", "a", &["203.0.113.9"]),
            ("mx.test", "txt", &["v=spf1 mx ?all"]),
            ("mx.test", "mx", &["mail.mx.test"]),
            ("mail.mx.test", "a", &["198.51.100.25"]),
            ("inc.test", "txt", &["v=spf1 include:ip.test -all"]),
            ("redir.test", "txt", &["v=spf1 redirect=ip.test"]),
            (
                "exists.test",
                "txt",
                &["v=spf1 exists:%{ir}.list.test -all"],
            ),
            ("9.113.0.203.list.test", "a", &["127.0.0.2"]),
            ("neutral.test", "txt", &["v=spf1"]),
        ]);
        assert_eq!(result(&dns, "192.0.2.7", "a@ip.test"), SpfResult::Pass);
        assert_eq!(result(&dns, "2001:db8::5", "a@ip.test"), SpfResult::Pass);
        assert_eq!(result(&dns, "203.0.113.1", "a@ip.test"), SpfResult::Fail);
        assert_eq!(result(&dns, "198.51.100.1", "a@a.test"), SpfResult::Pass);
        assert_eq!(
            result(&dns, "203.0.113.200", "a@a.test"),
            SpfResult::Pass,
            "a:other.test/24"
        );
        assert_eq!(result(&dns, "192.0.2.1", "a@a.test"), SpfResult::SoftFail);
        assert_eq!(result(&dns, "198.51.100.25", "a@mx.test"), SpfResult::Pass);
        assert_eq!(result(&dns, "192.0.2.1", "a@mx.test"), SpfResult::Neutral);
        assert_eq!(result(&dns, "192.0.2.9", "a@inc.test"), SpfResult::Pass);
        assert_eq!(result(&dns, "203.0.113.1", "a@inc.test"), SpfResult::Fail);
        assert_eq!(result(&dns, "192.0.2.9", "a@redir.test"), SpfResult::Pass);
        assert_eq!(
            result(&dns, "203.0.113.9", "a@exists.test"),
            SpfResult::Pass
        );
        assert_eq!(
            result(&dns, "203.0.113.8", "a@exists.test"),
            SpfResult::Fail
        );
        assert_eq!(
            result(&dns, "192.0.2.1", "a@neutral.test"),
            SpfResult::Neutral
        );
    }

    #[test]
    fn none_temperror_permerror() {
        let dns = Table::new(&[
            ("two.test", "txt", &["v=spf1 -all", "v=spf1 +all"]),
            ("bad.test", "txt", &["v=spf1 ip4:999.1.1.1 -all"]),
            (
                "inc-none.test",
                "txt",
                &["v=spf1 include:nothing.test -all"],
            ),
            ("inc-temp.test", "txt", &["v=spf1 include:temp.test -all"]),
            ("redir-none.test", "txt", &["v=spf1 redirect=nothing.test"]),
        ]);
        assert_eq!(result(&dns, "192.0.2.1", "a@nothing.test"), SpfResult::None);
        assert_eq!(
            result(&dns, "192.0.2.1", "a@localhost"),
            SpfResult::None,
            "not a checkable domain"
        );
        assert_eq!(
            result(&dns, "192.0.2.1", "a@temp.test"),
            SpfResult::TempError
        );
        assert_eq!(
            result(&dns, "192.0.2.1", "a@two.test"),
            SpfResult::PermError
        );
        assert_eq!(
            result(&dns, "192.0.2.1", "a@bad.test"),
            SpfResult::PermError
        );
        assert_eq!(
            result(&dns, "192.0.2.1", "a@inc-none.test"),
            SpfResult::PermError
        );
        assert_eq!(
            result(&dns, "192.0.2.1", "a@inc-temp.test"),
            SpfResult::TempError
        );
        assert_eq!(
            result(&dns, "192.0.2.1", "a@redir-none.test"),
            SpfResult::PermError
        );
    }

    #[test]
    fn lookup_limits_end_in_permerror() {
        // Eleven includes of a domain that matches nothing: one too many.
        let chain: Vec<String> = (0..11).map(|n| format!("include:n{n}.test")).collect();
        let many = format!("v=spf1 {} -all", chain.join(" "));
        let names: Vec<String> = (0..11).map(|n| format!("n{n}.test")).collect();
        let mut entries: Vec<(&str, &'static str, &[&str])> = vec![("many.test", "txt", &[])];
        let neutral: &[&str] = &["v=spf1 ?all"];
        for name in &names {
            entries.push((name.as_str(), "txt", neutral));
        }
        let mut dns = Table::new(&entries);
        dns.0.insert(("many.test".into(), "txt"), vec![many]);
        assert_eq!(
            result(&dns, "192.0.2.1", "a@many.test"),
            SpfResult::PermError
        );
        // Three lookups that find nothing: one too many.
        let dns = Table::new(&[(
            "void.test",
            "txt",
            &["v=spf1 a:x1.test a:x2.test a:x3.test -all"],
        )]);
        assert_eq!(
            result(&dns, "192.0.2.1", "a@void.test"),
            SpfResult::PermError
        );
        let dns = Table::new(&[("void.test", "txt", &["v=spf1 a:x1.test a:x2.test -all"])]);
        assert_eq!(result(&dns, "192.0.2.1", "a@void.test"), SpfResult::Fail);
        // A self-include loops until the limit stops it.
        let dns = Table::new(&[("loop.test", "txt", &["v=spf1 include:loop.test -all"])]);
        assert_eq!(
            result(&dns, "192.0.2.1", "a@loop.test"),
            SpfResult::PermError
        );
    }

    #[test]
    fn the_null_sender_is_checked_by_its_helo() {
        let dns = Table::new(&[("client.test", "txt", &["v=spf1 ip4:192.0.2.1 -all"])]);
        let verdict = futures::executor::block_on(check(
            &dns,
            "192.0.2.1".parse().unwrap(),
            "",
            "client.test",
        ));
        assert_eq!(
            (verdict.result, verdict.identity),
            (SpfResult::Pass, "helo")
        );
        assert_eq!(verdict.value, "client.test");
    }
}
