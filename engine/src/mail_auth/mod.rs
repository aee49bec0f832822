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
    let spf = spf::check(dns, ip, sender, helo).await;
    let dkim = dkim::check(dns, message, now).await;
    let dmarc = match crate::dkim::from_domain(message) {
        Some(from) => Some(dmarc::check(dns, &from, &spf, &dkim).await),
        None => None,
    };
    Verdicts { spf, dkim, dmarc }
}

/// The `Authentication-Results:` field (RFC 8601) for `verdicts`, by
/// `authserv_id` (our hostname), folded, CRLF-terminated.
pub fn authentication_results(authserv_id: &str, verdicts: &Verdicts) -> String {
    let clean = |text: &str| text.replace(['(', ')', '\r', '\n', ';'], " ");
    let token = |text: &str| text.replace(['\r', '\n', ' ', ';', '(', ')'], "");
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
pub fn strip_forged_results(message: &[u8], authserv_id: &str) -> Option<Vec<u8>> {
    let head_end = find(message, b"\r\n\r\n").map_or(message.len(), |at| at + 2);
    let head = &message[..head_end];
    let mut kept = Vec::with_capacity(message.len());
    let mut dropping = false;
    let mut dropped = false;
    for line in head.split_inclusive(|&b| b == b'\n') {
        let continuation = matches!(line.first(), Some(b' ' | b'\t'));
        if !continuation {
            dropping = claims(line, authserv_id);
            dropped |= dropping;
        }
        if !dropping {
            kept.extend_from_slice(line);
        }
    }
    if !dropped {
        return None;
    }
    kept.extend_from_slice(&message[head_end..]);
    Some(kept)
}

/// Whether a header line starts an Authentication-Results field whose
/// authserv-id is `authserv_id`.
fn claims(line: &[u8], authserv_id: &str) -> bool {
    let text = String::from_utf8_lossy(line);
    let Some((name, value)) = text.split_once(':') else {
        return false;
    };
    name.trim().eq_ignore_ascii_case("Authentication-Results")
        && value
            .split(';')
            .next()
            .map(|id| id.split_whitespace().next().unwrap_or(""))
            .is_some_and(|id| id.eq_ignore_ascii_case(authserv_id))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
