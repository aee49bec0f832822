//! Authentication of inbound mail: SPF (RFC 7208, [`spf`]), DKIM
//! signatures (RFC 6376, [`dkim`]) and DMARC (RFC 7489, [`dmarc`]) for
//! mail from clients that may not relay, recorded in one
//! `Authentication-Results:` field (RFC 8601) on top of the stored
//! message. Any such field that arrives claiming our name is removed
//! first (RFC 8601 §5), so no sender can forge a verdict of ours.
//!
//! DNS goes through the resolver thread ([`Dns`] is its face here, a table
//! in the unit tests).

pub mod dkim;
pub mod dmarc;
pub mod spf;

use crate::relay::resolver::{RecordKind, Records, Resolver};
use std::future::Future;
use std::net::IpAddr;

/// Where the checks get their records.
pub trait Dns {
    /// The `kind` records of `name`.
    fn records(&self, name: &str, kind: RecordKind) -> impl Future<Output = Records>;
}

impl Dns for Resolver {
    fn records(&self, name: &str, kind: RecordKind) -> impl Future<Output = Records> {
        Resolver::records(self, name, kind)
    }
}

/// The longest the checks of one message may take (RFC 7208 §4.6.4
/// suggests at least 20 s for SPF); past it DMARC is judged with what is
/// known ([`timed_out`]).
pub const DEADLINE: std::time::Duration = std::time::Duration::from_secs(20);

/// The longest the DMARC lookups after a [`DEADLINE`] may take; past it
/// the message is refused for now (451).
pub const DMARC_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// Author (From) domains checked with DMARC per message.
const MAX_AUTHOR_DOMAINS: usize = 3;

/// Every check of one message.
#[derive(Debug, Clone)]
pub struct Verdicts {
    /// SPF of the MAIL FROM (or HELO) identity.
    pub spf: spf::Verdict,
    /// One per DKIM signature looked at; empty: none.
    pub dkim: Vec<dkim::Verdict>,
    /// DMARC of the From domain (None: the message has no From domain).
    pub dmarc: Option<dmarc::Verdict>,
}

/// Check mail from `ip` (MAIL FROM `sender`, HELO `helo`) whose content is
/// `message`, at `now` (Unix seconds).
pub async fn check(
    dns: &impl Dns,
    ip: IpAddr,
    sender: &str,
    helo: &str,
    message: &[u8],
    now: u64,
) -> Verdicts {
    let ip = crate::config::canonical(ip);
    let spf = spf::check(dns, ip, sender, helo).await;
    let dkim = dkim::check(dns, message, now).await;
    with_dmarc(dns, message, spf, dkim).await
}

/// The verdicts for a message whose checks ran out of time: SPF and every
/// DKIM signature a temporary error, and DMARC as it follows from that. A
/// From domain that nothing in the message could align with still fails
/// (an attacker cannot slow the checks down to skip its policy); one that
/// something could align with is a temperror.
pub async fn timed_out(dns: &impl Dns, sender: &str, helo: &str, message: &[u8]) -> Verdicts {
    let spf = spf::timed_out(sender, helo);
    let dkim = dkim::timed_out(message);
    with_dmarc(dns, message, spf, dkim).await
}

/// Whether the mail must wait (451): an identifier aligned with a From
/// domain that asks for quarantine or reject went unchecked (a DNS error,
/// or checks out of time; [`timed_out`]), or that domain's policy could
/// not be read. A forged signature claiming the domain must not pass for
/// unknown.
pub fn must_wait(verdicts: &Verdicts) -> bool {
    verdicts
        .dmarc
        .as_ref()
        .is_some_and(|d| d.result == "temperror" && d.disposition != dmarc::Policy::None)
}

/// DMARC for every author domain of `message`, given SPF's and DKIM's
/// verdicts.
async fn with_dmarc(
    dns: &impl Dns,
    message: &[u8],
    spf: spf::Verdict,
    dkim: Vec<dkim::Verdict>,
) -> Verdicts {
    // Every author domain is checked (a second From must not hide a
    // failing one); the verdict is the most severe: a failure, else one
    // that must wait ([`must_wait`]), else the first.
    let mut authors = crate::dkim::author_domains(message);
    let mut seen = std::collections::HashSet::new();
    authors.retain(|domain| seen.insert(domain.clone()));
    let severity = |v: &dmarc::Verdict| match v.result {
        "fail" => 2,
        "temperror" if v.disposition != dmarc::Policy::None => 1,
        _ => 0,
    };
    let mut dmarc: Option<dmarc::Verdict> = None;
    for from in authors.iter().take(MAX_AUTHOR_DOMAINS) {
        let verdict = dmarc::check(dns, from, &spf, &dkim).await;
        if dmarc
            .as_ref()
            .is_none_or(|kept| severity(&verdict) > severity(kept))
        {
            dmarc = Some(verdict);
        }
        if dmarc.as_ref().is_some_and(|kept| kept.result == "fail") {
            return Verdicts { spf, dkim, dmarc };
        }
    }
    if authors.len() > MAX_AUTHOR_DOMAINS {
        // The domains past the limit went unchecked, and one of them may
        // be the one forged: the message is not trusted as checked.
        dmarc = Some(dmarc::Verdict {
            result: "fail",
            from: authors[0].clone(),
            disposition: dmarc::Policy::Quarantine,
            why: format!(
                "From names {} domains; only {MAX_AUTHOR_DOMAINS} are checked",
                authors.len()
            ),
            published: None,
            spf_aligned: false,
            dkim_aligned: false,
            sampled_out: false,
        });
    }
    Verdicts { spf, dkim, dmarc }
}

/// The `Authentication-Results:` field (RFC 8601) for `verdicts`, by
/// `authserv_id` (our hostname), folded, CRLF-terminated.
pub fn authentication_results(authserv_id: &str, verdicts: &Verdicts) -> String {
    let clean = |text: &str| -> String {
        let odd = |c: char| c.is_control() || matches!(c, '(' | ')' | ';');
        text.chars().map(|c| if odd(c) { ' ' } else { c }).collect()
    };
    let token = |text: &str| -> String {
        let odd = |c: char| c.is_control() || matches!(c, ' ' | ';' | '(' | ')');
        text.chars().filter(|&c| !odd(c)).collect()
    };
    let spf = &verdicts.spf;
    let property = match spf.identity {
        "helo" => "smtp.helo",
        _ => "smtp.mailfrom",
    };
    let mut field = format!(
        "Authentication-Results: {authserv_id};\r\n\tspf={} ({authserv_id}: {})\r\n\t{property}={}",
        spf.result,
        clean(&spf.why),
        token(&spf.value)
    );
    if verdicts.dkim.is_empty() {
        field.push_str(";\r\n\tdkim=none (no signature)");
    }
    for dkim in &verdicts.dkim {
        field.push_str(&format!(
            ";\r\n\tdkim={} ({})",
            dkim.result,
            clean(&dkim.why)
        ));
        if !dkim.domain.is_empty() {
            field.push_str(&format!(
                " header.d={} header.s={} header.b={}",
                token(&dkim.domain),
                token(&dkim.selector),
                token(&dkim.b_prefix)
            ));
        }
    }
    if let Some(dmarc) = &verdicts.dmarc {
        field.push_str(&format!(
            ";\r\n\tdmarc={} ({}) header.from={}",
            dmarc.result,
            clean(&dmarc.why),
            token(&dmarc.from)
        ));
    }
    field.push_str("\r\n");
    field
}

/// `message` without the Authentication-Results fields that claim to be
/// ours (`authserv_id`): RFC 8601 §5 has a receiver remove them, so that
/// no sender can forge our verdicts. Other fields are left as they are.
/// None when there is nothing to remove.
pub fn strip_forged_results(message: &[u8], authserv_id: &str) -> Option<Vec<u8>> {
    let head_end = find(message, b"\r\n\r\n").map_or(message.len(), |at| at + 2);
    let head = &message[..head_end];
    // Whole fields: a line and its continuation lines.
    let mut fields: Vec<&[u8]> = Vec::new();
    let mut start = 0;
    for (at, line) in positions(head) {
        if at > 0 && !matches!(line.first(), Some(b' ' | b'\t')) {
            fields.push(&head[start..at]);
            start = at;
        }
    }
    fields.push(&head[start..]);
    let forged = |field: &&[u8]| claims(field, authserv_id);
    if !fields.iter().any(forged) {
        return None;
    }
    let mut kept = Vec::with_capacity(message.len());
    for field in fields.iter().filter(|f| !forged(f)) {
        kept.extend_from_slice(field);
    }
    kept.extend_from_slice(&message[head_end..]);
    Some(kept)
}

/// The start of each line of `text`, with the line.
fn positions(text: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    let mut at = 0;
    text.split_inclusive(|&b| b == b'\n').map(move |line| {
        let start = at;
        at += line.len();
        (start, line)
    })
}

/// Whether a whole (possibly folded) field is an Authentication-Results
/// field whose authserv-id (RFC 8601 §2.2: after any comments, quoted or
/// not) is `authserv_id`.
fn claims(field: &[u8], authserv_id: &str) -> bool {
    let text = String::from_utf8_lossy(field);
    let Some((name, value)) = text.split_once(':') else {
        return false;
    };
    if !name.trim().eq_ignore_ascii_case("Authentication-Results") {
        return false;
    }
    // Skip folding whitespace and comments, then read the first token.
    let mut chars = value.chars().peekable();
    let mut depth = 0u32;
    while let Some(&c) = chars.peek() {
        match (depth, c) {
            (_, '(') => depth += 1,
            (1.., ')') => depth -= 1,
            (1.., _) => {}
            (0, c) if c.is_whitespace() => {}
            _ => break,
        }
        chars.next();
    }
    let rest: String = chars.collect();
    let id = match rest.strip_prefix('"') {
        Some(quoted) => quoted.split('"').next().unwrap_or(""),
        None => rest
            .split(|c: char| c == ';' || c == '(' || c.is_whitespace())
            .next()
            .unwrap_or(""),
    };
    id.eq_ignore_ascii_case(authserv_id)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A DNS where nothing exists.
    struct Empty;

    impl Dns for Empty {
        fn records(&self, _name: &str, _kind: RecordKind) -> impl Future<Output = Records> {
            std::future::ready(Err(crate::relay::resolver::LookupFailure::None))
        }
    }

    fn dmarc_of(message: &[u8]) -> Option<dmarc::Verdict> {
        let ip = "192.0.2.1".parse().unwrap();
        let verdicts =
            futures::executor::block_on(check(&Empty, ip, "a@x.test", "h.test", message, 0));
        verdicts.dmarc
    }

    /// A DNS with one DMARC record: `bank.test`'s, p=reject.
    struct Bank;

    impl Dns for Bank {
        fn records(&self, name: &str, _kind: RecordKind) -> impl Future<Output = Records> {
            std::future::ready(match name {
                "_dmarc.bank.test" => Ok(vec!["v=DMARC1; p=reject".to_owned()]),
                _ => Err(crate::relay::resolver::LookupFailure::None),
            })
        }
    }

    #[test]
    fn checks_that_time_out_still_fail_a_domain_nothing_aligns_with() {
        let signed_by = |d: &str| {
            format!("DKIM-Signature: v=1; a=rsa-sha256; d={d}; s=x; h=from; bh=AA==; b=AA==\r\nFrom: ceo@bank.test\r\n\r\nhi\r\n")
        };
        let judge = |sender: &str, message: String| {
            let v =
                futures::executor::block_on(timed_out(&Bank, sender, "h.test", message.as_bytes()));
            assert_eq!(v.spf.result, ringpost_protocols::spf::SpfResult::TempError);
            let dmarc = v.dmarc.unwrap();
            (dmarc.result, dmarc.disposition)
        };
        assert_eq!(
            judge("x@evil.test", signed_by("evil.test")),
            ("fail", dmarc::Policy::Reject)
        );
        // A signature claiming the domain, unchecked: not trusted, not
        // refused for good; the mail must wait (451).
        assert_eq!(
            judge("x@evil.test", signed_by("bank.test")),
            ("temperror", dmarc::Policy::Reject)
        );
        assert_eq!(judge("x@bank.test", signed_by("evil.test")).0, "temperror");
        let v = futures::executor::block_on(timed_out(
            &Bank,
            "x@evil.test",
            "h.test",
            signed_by("bank.test").as_bytes(),
        ));
        assert!(must_wait(&v));
        let v = futures::executor::block_on(timed_out(
            &Bank,
            "x@evil.test",
            "h.test",
            signed_by("evil.test").as_bytes(),
        ));
        assert!(!must_wait(&v), "a failure is decided");
        // A harmless first author does not hide the second's.
        let two = "DKIM-Signature: v=1; a=rsa-sha256; d=bank.test; s=x; h=from; bh=AA==; b=AA==\r\nFrom: a@evil.test, ceo@bank.test\r\n\r\nhi\r\n";
        let v =
            futures::executor::block_on(timed_out(&Bank, "x@evil.test", "h.test", two.as_bytes()));
        assert!(must_wait(&v), "{:?}", v.dmarc);
    }

    #[test]
    fn every_author_domain_is_checked_or_the_message_is_not_trusted() {
        // Repeats, adjacent or not, are one domain.
        let v = dmarc_of(b"From: a@x.test, b@y.test, c@x.test, d@y.test\r\n\r\n").unwrap();
        assert_eq!(v.result, "none");
        // More domains than are looked up: the one left out may be forged.
        let v = dmarc_of(b"From: a@1.test, a@2.test, a@3.test, ceo@bank.test\r\n\r\n").unwrap();
        assert_eq!(
            (v.result, v.disposition),
            ("fail", dmarc::Policy::Quarantine)
        );
    }

    #[test]
    fn forged_results_of_ours_are_removed() {
        let message = b"Authentication-Results: MX.test; spf=pass\r\n\tsmtp.mailfrom=forged\r\nAuthentication-Results: other.example; dkim=pass\r\nSubject: hi\r\n\r\nAuthentication-Results: mx.test; in the body\r\n";
        let stripped = strip_forged_results(message, "mx.test").unwrap();
        assert_eq!(
            String::from_utf8(stripped).unwrap(),
            "Authentication-Results: other.example; dkim=pass\r\nSubject: hi\r\n\r\nAuthentication-Results: mx.test; in the body\r\n"
        );
        assert_eq!(
            strip_forged_results(b"Subject: x\r\n\r\nbody\r\n", "mx.test"),
            None
        );
        // Folded right after the colon, behind a comment, or quoted.
        for forged in [
            "Authentication-Results:\r\n mx.test; dkim=pass\r\n",
            "Authentication-Results: (ours) mx.test; dmarc=pass\r\n",
            "Authentication-Results: \"MX.TEST\"; spf=pass\r\n",
            "authentication-results : mx.test;\r\n\tdmarc=pass\r\n",
        ] {
            let message = format!("{forged}Subject: s\r\n\r\nbody\r\n");
            let stripped = strip_forged_results(message.as_bytes(), "mx.test").unwrap();
            assert_eq!(stripped, b"Subject: s\r\n\r\nbody\r\n", "{forged:?}");
        }
    }
}
