//! DMARC (RFC 7489) of inbound mail: the From domain's policy, and whether
//! SPF or DKIM passed for a domain aligned with it. Organizational domains
//! come from the Public Suffix List (the `psl` crate).

use super::spf::Verdict as SpfVerdict;
use super::Dns;
use crate::mail_auth::dkim::Verdict as DkimVerdict;
use crate::relay::resolver::{LookupFailure, RecordKind};
use ringpost_protocols::spf::SpfResult;

/// What the domain asks receivers to do with mail that fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// `p=none`: only report.
    None,
    /// `p=quarantine`: treat as suspicious.
    Quarantine,
    /// `p=reject`: refuse.
    Reject,
}

impl Policy {
    fn parse(text: &str) -> Option<Policy> {
        match text.trim().to_ascii_lowercase().as_str() {
            "none" => Some(Policy::None),
            "quarantine" => Some(Policy::Quarantine),
            "reject" => Some(Policy::Reject),
            _ => None,
        }
    }

    /// As records and Authentication-Results write it.
    pub fn name(self) -> &'static str {
        match self {
            Policy::None => "none",
            Policy::Quarantine => "quarantine",
            Policy::Reject => "reject",
        }
    }
}

/// A DMARC record (RFC 7489 §6.3), the tags we use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// `p=`.
    pub policy: Policy,
    /// `sp=`: for subdomains of the organizational domain.
    pub subdomain_policy: Option<Policy>,
    /// `adkim=s`.
    pub strict_dkim: bool,
    /// `aspf=s`.
    pub strict_spf: bool,
    /// `pct=`: the share of failing mail the policy applies to.
    pub percent: u8,
    /// `rua=`'s `mailto:` addresses (size limits dropped): where aggregate
    /// reports go (RFC 7489 §7.2). Other schemes are not used.
    pub reports: Vec<String>,
}

/// `rua=` addresses kept, at most: a record may not make us send many.
const MAX_REPORT_ADDRESSES: usize = 4;

/// The `mailto:` addresses of a `rua=` value: `mailto:a@x.test!10m,
/// mailto:b@y.test` (RFC 7489 §6.2: a size limit may follow `!`).
fn report_addresses(value: &str) -> Vec<String> {
    value
        .split(',')
        .filter_map(|uri| {
            let uri = uri.trim();
            let scheme = uri.get(..7)?;
            if !scheme.eq_ignore_ascii_case("mailto:") {
                return None;
            }
            let address = uri[7..].split('!').next()?.trim();
            let (local, domain) = address.rsplit_once('@')?;
            let plain = |part: &str| {
                !part.is_empty() && part.bytes().all(|b| b.is_ascii_graphic() && b != b'%')
            };
            (plain(local) && plain(domain)).then(|| address.to_owned())
        })
        .take(MAX_REPORT_ADDRESSES)
        .collect()
}

/// What one TXT string at `_dmarc.domain` is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// Not a DMARC record (no `v=DMARC1` first): discarded.
    NotDmarc,
    /// A DMARC record with no valid `p=` (or an invalid `sp=`) and no
    /// `rua=`: DMARC does not apply (RFC 7489 §6.6.3 step 6).
    Unusable,
    /// A usable record.
    Record(Record),
}

/// Parse a record; None when it is not a usable DMARC record.
pub fn parse(text: &str) -> Option<Record> {
    match classify(text) {
        Parsed::Record(record) => Some(record),
        Parsed::NotDmarc | Parsed::Unusable => None,
    }
}

/// Parse one TXT string at `_dmarc.domain`.
pub fn classify(text: &str) -> Parsed {
    let mut tags = text.split(';').map(|t| t.trim()).filter(|t| !t.is_empty());
    if tags.next().map(|v| v.replace(' ', "")).as_deref() != Some("v=DMARC1") {
        return Parsed::NotDmarc;
    }
    let mut record = Record {
        policy: Policy::None,
        subdomain_policy: None,
        strict_dkim: false,
        strict_spf: false,
        percent: 100,
        reports: Vec::new(),
    };
    let (mut policy, mut reports, mut bad_subdomain_policy) = (None, false, false);
    for tag in tags {
        let Some((name, value)) = tag.split_once('=') else {
            continue;
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "p" => policy = Policy::parse(value),
            "sp" => {
                record.subdomain_policy = Policy::parse(value);
                bad_subdomain_policy = record.subdomain_policy.is_none();
            }
            "adkim" => record.strict_dkim = value.eq_ignore_ascii_case("s"),
            "aspf" => record.strict_spf = value.eq_ignore_ascii_case("s"),
            "pct" => {
                record.percent = value
                    .parse::<u8>()
                    .ok()
                    .filter(|&p| p <= 100)
                    .unwrap_or(100)
            }
            "rua" => {
                reports = true;
                record.reports = report_addresses(value);
            }
            _ => {}
        }
    }
    // §6.6.3 step 6: without a valid p= (or with an invalid sp=), a
    // record with rua= counts as p=none, one without means no DMARC.
    record.policy = match (policy, reports) {
        (Some(policy), _) if !bad_subdomain_policy => policy,
        (_, true) => {
            record.subdomain_policy = None;
            Policy::None
        }
        (_, false) => return Parsed::Unusable,
    };
    Parsed::Record(record)
}

/// The organizational domain of `domain` (RFC 7489 §3.2): its registrable
/// domain by the Public Suffix List, or itself.
pub fn organizational(domain: &str) -> String {
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    psl::domain_str(&domain).unwrap_or(&domain).to_owned()
}

fn aligned(identifier: &str, from: &str, strict: bool) -> bool {
    let identifier = identifier.trim_end_matches('.').to_ascii_lowercase();
    match strict {
        true => identifier == from,
        false => organizational(&identifier) == organizational(from),
    }
}

/// The DMARC verdict on a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// `pass`, `fail`, `none`, `temperror` or `permerror`.
    pub result: &'static str,
    /// The From domain.
    pub from: String,
    /// What the domain asks for when it fails (after `sp=` and `pct=`).
    pub disposition: Policy,
    /// In words.
    pub why: String,
    /// The record that decided, and the domain it was found at (the From
    /// domain or its organizational domain); `None` when there was none.
    pub published: Option<(String, Record)>,
    /// SPF passed for a domain aligned with From.
    pub spf_aligned: bool,
    /// DKIM passed for a domain aligned with From.
    pub dkim_aligned: bool,
    /// The message fell outside `pct=`: its disposition is the policy's
    /// next one down (RFC 7489 §6.6.4), reported as `sampled_out`.
    pub sampled_out: bool,
}

/// The DMARC verdict for mail from `from` (the From domain, lowercase)
/// that had `spf` and `dkim`.
pub async fn check(dns: &impl Dns, from: &str, spf: &SpfVerdict, dkim: &[DkimVerdict]) -> Verdict {
    let from = from.trim_end_matches('.').to_ascii_lowercase();
    let verdict = |result, disposition, why: String| Verdict {
        result,
        from: from.clone(),
        disposition,
        why,
        published: None,
        spf_aligned: false,
        dkim_aligned: false,
        sampled_out: false,
    };
    let organization = organizational(&from);
    let mut found = lookup(dns, &from).await;
    let mut at_organization = false;
    if matches!(found, Ok(Found::Nothing)) && organization != from {
        found = lookup(dns, &organization).await;
        at_organization = true;
    }
    let record = match found {
        Ok(Found::Record(record)) => record,
        Ok(Found::Nothing | Found::Several | Found::Unusable) => {
            let why = format!("{from} publishes no usable DMARC policy");
            return verdict("none", Policy::None, why);
        }
        // The policy could not be read: for a caller deciding whether the
        // mail must wait, it may be the strictest.
        Err(why) => return verdict("temperror", Policy::Reject, why),
    };
    let spf_domain = match spf.identity {
        "helo" => spf.value.clone(),
        _ => spf
            .value
            .rsplit_once('@')
            .map_or(String::new(), |(_, d)| d.to_owned()),
    };
    let spf_aligned =
        spf.result == SpfResult::Pass && aligned(&spf_domain, &from, record.strict_spf);
    let dkim_aligned = dkim
        .iter()
        .any(|d| d.result == "pass" && aligned(&d.domain, &from, record.strict_dkim));
    let found_at = match at_organization {
        true => organization.clone(),
        false => from.clone(),
    };
    // What a report needs besides the outcome.
    let decided = |verdict: Verdict| Verdict {
        published: Some((found_at.clone(), record.clone())),
        spf_aligned,
        dkim_aligned,
        ..verdict
    };
    if spf_aligned || dkim_aligned {
        let by = match (spf_aligned, dkim_aligned) {
            (true, true) => "SPF and DKIM",
            (true, false) => "SPF",
            _ => "DKIM",
        };
        return decided(verdict(
            "pass",
            Policy::None,
            format!("{by} aligned with {from}"),
        ));
    }
    let policy = match at_organization {
        true => record.subdomain_policy.unwrap_or(record.policy),
        false => record.policy,
    };
    // A DNS failure may have hidden an aligned pass: not a failure yet.
    // Only for an identifier that would align: a lookup an attacker makes
    // fail for a domain of their own must not soften the policy (§4.2).
    // The verdict carries the policy that would apply, for a caller that
    // must decide without waiting for DNS.
    let unsure = (spf.result == SpfResult::TempError
        && aligned(&spf_domain, &from, record.strict_spf))
        || dkim
            .iter()
            .any(|d| d.result == "temperror" && aligned(&d.domain, &from, record.strict_dkim));
    // §6.6.4: mail outside pct= gets the next policy down.
    let applies = record.percent >= 100 || fastrand::u8(0..100) < record.percent;
    let disposition = match (applies, policy) {
        (true, policy) => policy,
        (false, Policy::Reject) => Policy::Quarantine,
        (false, _) => Policy::None,
    };
    let decided = |verdict: Verdict| Verdict {
        sampled_out: !applies && policy != Policy::None,
        ..decided(verdict)
    };
    if unsure {
        let why = format!("a DNS error left alignment with {from} unknown");
        return decided(verdict("temperror", disposition, why));
    }
    decided(verdict(
        "fail",
        disposition,
        format!(
            "neither SPF nor DKIM aligned with {from}; p={}",
            policy.name()
        ),
    ))
}

/// What `_dmarc.domain` holds.
enum Found {
    /// One usable record.
    Record(Record),
    /// None: look at the organizational domain.
    Nothing,
    /// More than one: discovery ends with no policy (RFC 7489 §6.6.3).
    Several,
    /// One, unusable: discovery ends with no policy (§6.6.3 step 6).
    Unusable,
}

async fn lookup(dns: &impl Dns, domain: &str) -> Result<Found, String> {
    match dns
        .records(&format!("_dmarc.{domain}"), RecordKind::Txt)
        .await
    {
        Ok(texts) => {
            let mut records = texts
                .iter()
                .map(|t| classify(t))
                .filter(|p| *p != Parsed::NotDmarc);
            Ok(match (records.next(), records.next()) {
                (Some(Parsed::Record(record)), None) => Found::Record(record),
                (Some(_), None) => Found::Unusable,
                (Some(_), Some(_)) => Found::Several,
                (None, _) => Found::Nothing,
            })
        }
        Err(LookupFailure::None) => Ok(Found::Nothing),
        Err(LookupFailure::Temporary(why)) => Err(format!("DMARC lookup: {why}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_organizational_domains() {
        let r = parse("v=DMARC1; p=reject; sp=quarantine; adkim=s; pct=50; rua=mailto:d@x.test")
            .unwrap();
        assert_eq!(r.policy, Policy::Reject);
        assert_eq!(r.subdomain_policy, Some(Policy::Quarantine));
        assert!(r.strict_dkim && !r.strict_spf);
        assert_eq!(r.percent, 50);
        assert_eq!(r.reports, ["d@x.test"]);
        let many = parse(
            "v=DMARC1; p=none; rua=mailto:a@x.test!10m, https://x.test/r, MAILTO:b@y.test,mailto:%bad@x",
        )
        .unwrap();
        assert_eq!(many.reports, ["a@x.test", "b@y.test"]);
        assert_eq!(
            parse("v=DMARC1; rua=mailto:x@y.test").unwrap().policy,
            Policy::None
        );
        assert!(parse("v=DMARC1; p=bogus").is_none());
        let lenient = parse("v=DMARC1; p=bogus; rua=mailto:x@y.test").unwrap();
        assert_eq!(lenient.policy, Policy::None);
        assert!(parse("v=spf1 -all").is_none());
        assert!(parse("p=reject; v=DMARC1").is_none(), "v= must come first");
        assert_eq!(organizational("mail.example.co.uk"), "example.co.uk");
        assert_eq!(organizational("a.b.example.com."), "example.com");
        assert!(aligned("bounce.example.com", "example.com", false));
        assert!(!aligned("bounce.example.com", "example.com", true));
        assert!(!aligned("example.net", "example.com", false));
    }

    /// `_dmarc` TXT records by domain; anything else does not exist.
    struct Records(&'static [(&'static str, &'static str)]);

    impl Dns for Records {
        fn records(
            &self,
            name: &str,
            _kind: RecordKind,
        ) -> impl std::future::Future<Output = crate::relay::resolver::Records> {
            let found: Vec<String> = self
                .0
                .iter()
                .filter(|(n, _)| format!("_dmarc.{n}") == name)
                .map(|(_, text)| text.to_string())
                .collect();
            let answer = match found.is_empty() {
                true => Err(LookupFailure::None),
                false => Ok(found),
            };
            std::future::ready(answer)
        }
    }

    fn spf(result: SpfResult, sender: &str) -> SpfVerdict {
        SpfVerdict {
            result,
            identity: "mailfrom",
            value: sender.into(),
            why: String::new(),
        }
    }

    fn dkim(result: &'static str, domain: &str) -> DkimVerdict {
        DkimVerdict {
            result,
            domain: domain.into(),
            selector: "s".into(),
            b_prefix: String::new(),
            why: String::new(),
        }
    }

    fn run(dns: &Records, from: &str, spf: SpfVerdict, dkim: &[DkimVerdict]) -> Verdict {
        futures::executor::block_on(check(dns, from, &spf, dkim))
    }

    #[test]
    fn only_a_dns_error_for_an_aligned_identifier_softens_a_failure() {
        let dns = Records(&[("bank.test", "v=DMARC1; p=reject")]);
        // The attacker's own domains fail to resolve: still a failure.
        let v = run(
            &dns,
            "bank.test",
            spf(SpfResult::TempError, "x@evil.test"),
            &[dkim("temperror", "evil.test")],
        );
        assert_eq!((v.result, v.disposition), ("fail", Policy::Reject));
        // The bank's own key could not be fetched: unknown.
        let v = run(
            &dns,
            "bank.test",
            spf(SpfResult::Fail, "x@evil.test"),
            &[dkim("temperror", "mail.bank.test")],
        );
        assert_eq!(v.result, "temperror");
        let v = run(
            &dns,
            "bank.test",
            spf(SpfResult::TempError, "x@bank.test"),
            &[],
        );
        assert_eq!(v.result, "temperror");
    }

    /// A policy that cannot be read may be the strictest: the verdict
    /// says so, and the caller makes the mail wait.
    #[test]
    fn an_unreadable_policy_is_a_temperror_taken_as_strict() {
        struct Failing;
        impl Dns for Failing {
            fn records(
                &self,
                _name: &str,
                _kind: RecordKind,
            ) -> impl std::future::Future<Output = crate::relay::resolver::Records> {
                std::future::ready(Err(LookupFailure::Temporary("SERVFAIL".into())))
            }
        }
        let v = futures::executor::block_on(check(
            &Failing,
            "bank.test",
            &spf(SpfResult::Fail, "x@evil.test"),
            &[],
        ));
        assert_eq!((v.result, v.disposition), ("temperror", Policy::Reject));
    }

    #[test]
    fn an_unusable_record_ends_discovery_without_the_parents_policy() {
        let dns = Records(&[
            ("sub.bank.test", "v=DMARC1; p=rejct"),
            ("bank.test", "v=DMARC1; p=reject; sp=reject"),
            ("other.bank.test", "v=DMARC1; p=reject; sp=bogus"),
            (
                "rua.bank.test",
                "v=DMARC1; p=reject; sp=bogus; rua=mailto:d@bank.test",
            ),
        ]);
        let no_pass = || spf(SpfResult::Fail, "x@evil.test");
        assert_eq!(run(&dns, "sub.bank.test", no_pass(), &[]).result, "none");
        assert_eq!(run(&dns, "other.bank.test", no_pass(), &[]).result, "none");
        let v = run(&dns, "rua.bank.test", no_pass(), &[]);
        assert_eq!((v.result, v.disposition), ("fail", Policy::None));
        // No record at all: the organizational domain's sp= applies.
        let v = run(&dns, "none.bank.test", no_pass(), &[]);
        assert_eq!((v.result, v.disposition), ("fail", Policy::Reject));
        assert_eq!(classify("v=spf1 -all"), Parsed::NotDmarc);
        assert_eq!(classify("v=DMARC1; p=x"), Parsed::Unusable);
    }

    #[test]
    fn mail_outside_pct_gets_the_next_policy_and_says_so() {
        let dns = Records(&[(
            "bank.test",
            "v=DMARC1; p=reject; pct=0; rua=mailto:d@bank.test",
        )]);
        let v = run(&dns, "bank.test", spf(SpfResult::Fail, "x@evil.test"), &[]);
        assert_eq!((v.result, v.disposition), ("fail", Policy::Quarantine));
        assert!(v.sampled_out);
        let published = v.published.unwrap();
        assert_eq!(published.0, "bank.test");
        assert_eq!(published.1.reports, ["d@bank.test"]);
        let passed = run(&dns, "bank.test", spf(SpfResult::Pass, "x@bank.test"), &[]);
        assert!(!passed.sampled_out && passed.spf_aligned);
    }
}
