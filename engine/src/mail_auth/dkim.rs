//! DKIM verification of inbound mail: each signature (at most
//! `ringpost_protocols::dkim::verify::MAX_SIGNATURES`) checked against the
//! key its domain publishes at `selector._domainkey.domain`.

use super::Dns;
use crate::relay::resolver::{LookupFailure, RecordKind};
use ringpost_protocols::dkim::verify::{self, Failure};

/// One signature's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// `pass`, `fail`, `permerror` or `temperror` (RFC 8601).
    pub result: &'static str,
    /// `d=` (empty when the signature could not be read).
    pub domain: String,
    /// `s=`.
    pub selector: String,
    /// The first characters of `b=`, which tell signatures apart.
    pub b_prefix: String,
    /// In words.
    pub why: String,
}

/// The verdicts of checks that ran out of time: a temporary error for
/// each readable signature, whose `d=` DMARC may still align with.
pub fn timed_out(message: &[u8]) -> Vec<Verdict> {
    verify::signatures(message)
        .into_iter()
        .flatten()
        .map(|signature| Verdict {
            result: "temperror",
            domain: signature.domain.clone(),
            selector: signature.selector.clone(),
            b_prefix: String::new(),
            why: "the check timed out".into(),
        })
        .collect()
}

/// Verify the signatures of `message` at `now` (Unix seconds).
pub async fn check(dns: &impl Dns, message: &[u8], now: u64) -> Vec<Verdict> {
    let mut verdicts = Vec::new();
    let hashes = verify::BodyHashes::default();
    for parsed in verify::signatures(message) {
        let signature = match parsed {
            Ok(signature) => signature,
            Err(why) => {
                verdicts.push(Verdict {
                    result: "permerror",
                    domain: String::new(),
                    selector: String::new(),
                    b_prefix: String::new(),
                    why: format!("unusable signature: {why}"),
                });
                continue;
            }
        };
        let b_prefix = {
            use base64::Engine as _;
            let b = base64::engine::general_purpose::STANDARD.encode(&signature.signature);
            b.chars().take(8).collect()
        };
        let verdict = |result, why: String| Verdict {
            result,
            domain: signature.domain.clone(),
            selector: signature.selector.clone(),
            b_prefix: String::clone(&b_prefix),
            why,
        };
        let key_name = signature.key_name();
        let records = match dns.records(&key_name, RecordKind::Txt).await {
            Ok(records) => records,
            Err(LookupFailure::None) => {
                verdicts.push(verdict("permerror", format!("no key at {key_name}")));
                continue;
            }
            Err(LookupFailure::Temporary(why)) => {
                verdicts.push(verdict("temperror", format!("key lookup: {why}")));
                continue;
            }
        };
        let Some(key) = records.iter().find(|r| r.contains("p=")) else {
            verdicts.push(verdict("permerror", format!("no key record at {key_name}")));
            continue;
        };
        verdicts.push(
            match verify::verify_with(message, &signature, key, now, &hashes) {
                Ok(()) => verdict("pass", format!("good signature of {}", signature.domain)),
                Err(Failure::Fail(why)) => verdict("fail", why),
                Err(Failure::PermError(why)) => verdict("permerror", why),
            },
        );
    }
    verdicts
}
