//! DKIM signing of outbound mail: the keys from the config, which of them
//! sign a message, and the signing itself (`ringpost_protocols::dkim`).
//!
//! A message is signed when a client that may relay sends it (it
//! authenticated, or it is in `smtp.relay_networks`), with every key of
//! its From domain (several selectors: rotation, or RSA and Ed25519 side
//! by side), else with those of `dkim.signing_domain`. It is signed once,
//! before the commit that answers 250: the stored bytes are the signed
//! bytes, and retries send them as they are.

use crate::config::DkimConfig;
use ringpost_protocols::dkim::{Algorithm, SigningKey};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::PrivateKeyDer;
use std::collections::HashMap;
use std::sync::Arc;

/// The configured keys, by signing domain (lowercase).
#[derive(Debug, Default)]
pub struct DkimSigner {
    keys: HashMap<String, Vec<Arc<SigningKey>>>,
    fallback: Option<String>,
}

/// Read a key file: PEM, PKCS#8 or PKCS#1.
pub fn load_key(
    domain: &str,
    selector: &str,
    path: &std::path::Path,
) -> Result<SigningKey, String> {
    let der = PrivateKeyDer::from_pem_file(path).map_err(|e| format!("{}: {e}", path.display()))?;
    SigningKey::from_der(domain, selector, der.secret_der())
        .map_err(|e| format!("{}: {e}", path.display()))
}

impl DkimSigner {
    /// The signer `config` describes; `None` when it has no keys. Any key
    /// that cannot be read stops the start, naming the file.
    pub fn load(config: &DkimConfig) -> Result<Option<DkimSigner>, String> {
        if config.keys.is_empty() {
            return Ok(None);
        }
        let mut signer = DkimSigner {
            fallback: config
                .signing_domain
                .as_deref()
                .map(str::to_ascii_lowercase),
            ..DkimSigner::default()
        };
        for key in &config.keys {
            let loaded = load_key(&key.domain, &key.selector, &key.key)?;
            tracing::info!(domain = %loaded.domain(), selector = %loaded.selector(), algorithm = loaded.algorithm().name(), "DKIM key loaded");
            signer
                .keys
                .entry(loaded.domain().to_owned())
                .or_default()
                .push(Arc::new(loaded));
        }
        if let Some(fallback) = &signer.fallback {
            if !signer.keys.contains_key(fallback) {
                return Err(format!(
                    "dkim.signing_domain {fallback} has no key in dkim.keys"
                ));
            }
        }
        Ok(Some(signer))
    }

    /// The keys that sign `message`: its From domain's, else the
    /// fallback's; none when neither has any.
    pub fn keys_for(&self, message: &[u8]) -> Vec<Arc<SigningKey>> {
        let own = from_domain(message).and_then(|domain| self.keys.get(&domain));
        own.or_else(|| self.keys.get(self.fallback.as_deref()?))
            .cloned()
            .unwrap_or_default()
    }
}

impl DkimSigner {
    /// Whether any key is slow to sign with ([`is_slow`]).
    pub fn has_slow_keys(&self) -> bool {
        self.keys.values().any(|keys| is_slow(keys))
    }
}

/// Whether signing with `keys` is slow enough to move off the shard (RSA:
/// a millisecond or so a signature; Ed25519: tens of microseconds).
pub fn is_slow(keys: &[Arc<SigningKey>]) -> bool {
    keys.iter().any(|k| k.algorithm() == Algorithm::RsaSha256)
}

/// Mail this server writes itself (vacation replies, reports) with the
/// signatures of its From domain's keys on top, as submitted mail gets:
/// an unsigned reply from a domain with a DMARC policy is refused where
/// it goes. Signed here and now: such mail is one message at a time.
pub fn signed_generated(signer: Option<&DkimSigner>, message: Vec<u8>) -> Vec<u8> {
    let keys = signer.map(|s| s.keys_for(&message)).unwrap_or_default();
    match keys.is_empty() {
        true => message,
        false => [sign(&message, &keys), message].concat(),
    }
}

/// The DKIM-Signature fields for `message`, signed now.
pub fn sign(message: &[u8], keys: &[Arc<SigningKey>]) -> Vec<u8> {
    let now = crate::intake::unix_micros() / 1_000_000;
    let keys: Vec<&SigningKey> = keys.iter().map(|k| &**k).collect();
    ringpost_protocols::dkim::sign(message, &keys, now)
}

/// The domain of the first author (From field) of `message`, lowercase.
pub(crate) fn from_domain(message: &[u8]) -> Option<String> {
    author_domains(message).into_iter().next()
}

/// The domain of every address in every From field (RFC 5322 §3.6.2), in
/// order, lowercase: quoted strings and comments are skipped, so a display
/// name that looks like an address is never taken for one.
pub(crate) fn author_domains(message: &[u8]) -> Vec<String> {
    let mut domains = Vec::new();
    let mut field: Option<String> = None;
    let flush = |field: &mut Option<String>, domains: &mut Vec<String>| {
        if let Some(value) = field.take() {
            domains.extend(domains_in(&value));
        }
    };
    for line in message.split_inclusive(|&b| b == b'\n') {
        if line == b"\r\n" || line == b"\n" {
            break;
        }
        let text = String::from_utf8_lossy(line);
        if matches!(line.first(), Some(b' ' | b'\t')) {
            if let Some(value) = field.as_mut() {
                value.push_str(text.trim_end_matches(['\r', '\n']));
            }
            continue;
        }
        flush(&mut field, &mut domains);
        if let Some((name, value)) = text.split_once(':') {
            if name.trim().eq_ignore_ascii_case("from") {
                field = Some(value.trim_end_matches(['\r', '\n']).to_owned());
            }
        }
    }
    flush(&mut field, &mut domains);
    domains
}

/// The domains of the addresses in an address list.
fn domains_in(value: &str) -> Vec<String> {
    // Take out quoted strings and comments (nested, with escapes).
    let mut cleaned = String::with_capacity(value.len());
    let (mut quoted, mut depth, mut escaped) = (false, 0u32, false);
    for c in value.chars() {
        if escaped {
            escaped = false;
            continue;
        }
        match (quoted, depth, c) {
            (true, _, '\\') | (_, 1.., '\\') => escaped = true,
            (true, _, '"') => quoted = false,
            (true, _, _) => {}
            (false, 1.., '(') => depth += 1,
            (false, 1.., ')') => depth -= 1,
            (false, 1.., _) => {}
            (false, 0, '"') => quoted = true,
            (false, 0, '(') => depth = 1,
            (false, 0, c) => cleaned.push(c),
        }
    }
    // Mailboxes are separated by commas (and a group ends with `;`), but
    // not inside an angle address, whose obsolete route has commas of its
    // own (RFC 5322 §4.4: `<@relay1,@relay2:user@domain>`).
    let mut parts = Vec::new();
    let (mut start, mut in_angle) = (0, false);
    for (i, c) in cleaned.char_indices() {
        match c {
            '<' => in_angle = true,
            '>' => in_angle = false,
            ',' | ';' if !in_angle => {
                parts.push(&cleaned[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&cleaned[start..]);
    parts
        .into_iter()
        .filter_map(|part| {
            let address = match (part.find('<'), part.rfind('>')) {
                // The route, if any, ends with a colon.
                (Some(open), Some(close)) if open < close => {
                    let inner = &part[open + 1..close];
                    inner.rsplit_once(':').map_or(inner, |(_, rest)| rest)
                }
                // A group's name ends with a colon: what follows is a mailbox.
                _ => part.rsplit_once(':').map_or(part, |(_, rest)| rest).trim(),
            };
            let domain = address.rsplit_once('@')?.1.trim();
            (!domain.is_empty() && !domain.contains(char::is_whitespace))
                .then(|| domain.to_ascii_lowercase())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_domains() {
        let d = |m: &[u8]| from_domain(m);
        assert_eq!(
            d(b"From: a@Example.COM\r\n\r\n").as_deref(),
            Some("example.com")
        );
        assert_eq!(
            d(b"Subject: x\r\nFROM: \"Ann, B\" <ann@b.test>\r\n\r\n").as_deref(),
            Some("b.test")
        );
        assert_eq!(
            d(b"From: Ann\r\n <ann@folded.test>\r\n\r\n").as_deref(),
            Some("folded.test")
        );
        assert_eq!(d(b"Subject: none\r\n\r\nFrom: a@body.test\r\n"), None);
        assert_eq!(d(b"From: nobody\r\n\r\n"), None);
        // An obsolete route names relays, not the author's domain.
        assert_eq!(
            d(b"From: <@relay.test:ceo@bank.test>\r\n\r\n").as_deref(),
            Some("bank.test")
        );
        assert_eq!(
            author_domains(b"From: Ceo <@r1.test,@r2.test:ceo@bank.test>, x@y.test\r\n\r\n"),
            ["bank.test", "y.test"]
        );
        assert_eq!(
            author_domains(b"From: team: a@one.test, b@two.test;\r\n\r\n"),
            ["one.test", "two.test"]
        );
        // Display names and comments that look like addresses are not taken.
        assert_eq!(
            d(b"From: \"<x@evil.test>\" <ceo@bank.test>\r\n\r\n").as_deref(),
            Some("bank.test")
        );
        assert_eq!(
            d(b"From: ceo@bank.test (<x@evil.test>)\r\n\r\n").as_deref(),
            Some("bank.test")
        );
        assert_eq!(
            d(b"From : a@spaced.test\r\n\r\n").as_deref(),
            Some("spaced.test")
        );
        assert_eq!(
            author_domains(b"From: a@one.test, \"B\" <b@two.test>\r\nFrom: c@three.test\r\n\r\n"),
            ["one.test", "two.test", "three.test"]
        );
        assert_eq!(
            author_domains(b"From: friends: a@g.test, b@h.test;\r\n\r\n"),
            ["g.test", "h.test"]
        );
    }
}
