//! DKIM verification (RFC 6376 §6), sans-IO: the signatures a message
//! carries, and whether one holds given its domain's key record (which the
//! caller looks up at `selector._domainkey.domain`). RSA-SHA256 with keys
//! of 1024 bits and more, Ed25519-SHA256 (RFC 8463); RSA-SHA1 is refused
//! (RFC 8301). Simple and relaxed canonicalization, `l=`, `x=`.

use super::{header_fields, relaxed_body_into, relaxed_header, too_many_fields, Field};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ring::signature::{UnparsedPublicKey, ED25519, RSA_PKCS1_1024_8192_SHA256_FOR_LEGACY_USE_ONLY};

/// Signatures looked at per message; more are ignored (each costs DNS and
/// a public-key operation).
pub const MAX_SIGNATURES: usize = 5;

/// The longest `DKIM-Signature` field read: a 4096-bit RSA signature and
/// a long `h=` fit in a fraction of it.
pub const MAX_SIGNATURE_FIELD: usize = 16 * 1024;

/// The most names an `h=` may list.
pub const MAX_SIGNED_HEADERS: usize = 256;

/// How a part of the message was canonicalized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Canon {
    /// `simple`.
    Simple,
    /// `relaxed`.
    Relaxed,
}

/// A signature's algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigAlgorithm {
    /// `rsa-sha256`.
    RsaSha256,
    /// `ed25519-sha256`.
    Ed25519Sha256,
}

/// One `DKIM-Signature` field, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// `d=`, lowercase.
    pub domain: String,
    /// `s=`.
    pub selector: String,
    /// `a=`.
    pub algorithm: SigAlgorithm,
    /// `c=`, header part.
    pub header_canon: Canon,
    /// `c=`, body part.
    pub body_canon: Canon,
    /// `h=`, lowercase.
    pub headers: Vec<String>,
    /// `bh=`, decoded.
    pub body_hash: Vec<u8>,
    /// `b=`, decoded.
    pub signature: Vec<u8>,
    /// `l=`.
    pub body_length: Option<usize>,
    /// `i=` (default `@d`).
    pub identity: String,
    /// `x=`, Unix seconds.
    pub expires: Option<u64>,
    /// Which `DKIM-Signature` field of the message it is (0: the first).
    index: usize,
}

impl Signature {
    /// Where its key is published.
    pub fn key_name(&self) -> String {
        format!("{}._domainkey.{}", self.selector, self.domain)
    }
}

/// Why a signature does not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// It does not verify: the message changed, or the key is not the
    /// signer's (RFC 8601 `fail`).
    Fail(String),
    /// It cannot be checked: a broken signature or key record
    /// (`permerror`).
    PermError(String),
}

/// The `DKIM-Signature` fields of `message`, at most [`MAX_SIGNATURES`],
/// each parsed or refused (a permerror, with why).
pub fn signatures(message: &[u8]) -> Vec<Result<Signature, String>> {
    let (fields, _) = header_fields(message);
    if too_many_fields(&fields) {
        let why = format!("the header has over {} fields", super::MAX_HEADER_FIELDS);
        return vec![Err(why)];
    }
    // `index` counts DKIM-Signature fields only, as signed_headers finds
    // the signature's own field again.
    fields
        .iter()
        .filter(|f| f.name.eq_ignore_ascii_case("DKIM-Signature"))
        .enumerate()
        .take(MAX_SIGNATURES)
        .map(|(index, field)| parse_signature(field, index))
        .collect()
}

/// The `tag=value` pairs of a tag list (RFC 6376 §3.2), whitespace out of
/// the values' ends.
fn tags(text: &str) -> Vec<(String, String)> {
    text.split(';')
        .filter_map(|part| {
            let (tag, value) = part.split_once('=')?;
            Some((tag.trim().to_ascii_lowercase(), value.trim().to_owned()))
        })
        .collect()
}

/// A value with every whitespace character taken out (base64 may fold).
fn compact(value: &str) -> String {
    value.chars().filter(|c| !c.is_whitespace()).collect()
}

fn parse_signature(field: &Field<'_>, index: usize) -> Result<Signature, String> {
    if field.raw.len() > MAX_SIGNATURE_FIELD {
        return Err(format!("the field is over {MAX_SIGNATURE_FIELD} octets"));
    }
    let raw = String::from_utf8_lossy(field.raw);
    let value = raw.split_once(':').map_or("", |(_, v)| v);
    let tags = tags(value);
    let get = |name: &str| {
        tags.iter()
            .find(|(t, _)| t == name)
            .map(|(_, v)| v.as_str())
    };
    let need = |name: &str| get(name).ok_or_else(|| format!("no {name}= tag"));
    if need("v")? != "1" {
        return Err("v= is not 1".into());
    }
    let algorithm = match need("a")?.to_ascii_lowercase().as_str() {
        "rsa-sha256" => SigAlgorithm::RsaSha256,
        "ed25519-sha256" => SigAlgorithm::Ed25519Sha256,
        "rsa-sha1" => return Err("rsa-sha1 is not accepted (RFC 8301)".into()),
        other => return Err(format!("unknown algorithm {other}")),
    };
    let canon = |name: &str| match name.to_ascii_lowercase().as_str() {
        "simple" => Ok(Canon::Simple),
        "relaxed" => Ok(Canon::Relaxed),
        other => Err(format!("unknown canonicalization {other}")),
    };
    let (header_canon, body_canon) = match get("c") {
        None => (Canon::Simple, Canon::Simple),
        Some(c) => match c.split_once('/') {
            Some((h, b)) => (canon(h)?, canon(b)?),
            None => (canon(c)?, Canon::Simple),
        },
    };
    let domain = need("d")?.to_ascii_lowercase();
    let selector = need("s")?.to_owned();
    if domain.is_empty() || selector.is_empty() {
        return Err("empty d= or s=".into());
    }
    let headers: Vec<String> = need("h")?
        .split(':')
        .map(|h| h.trim().to_ascii_lowercase())
        .filter(|h| !h.is_empty())
        .collect();
    if headers.len() > MAX_SIGNED_HEADERS {
        return Err(format!("h= names over {MAX_SIGNED_HEADERS} fields"));
    }
    if !headers.iter().any(|h| h == "from") {
        return Err("h= does not sign From".into());
    }
    let decode = |name: &str| -> Result<Vec<u8>, String> {
        STANDARD
            .decode(compact(need(name)?))
            .map_err(|e| format!("{name}= is not base64: {e}"))
    };
    let identity = get("i").map_or_else(|| format!("@{domain}"), str::to_owned);
    let identity_domain = identity
        .rsplit_once('@')
        .map_or("", |(_, d)| d)
        .to_ascii_lowercase();
    if identity_domain != domain && !identity_domain.ends_with(&format!(".{domain}")) {
        return Err("i= is not within d=".into());
    }
    let number = |name: &str| -> Result<Option<u64>, String> {
        get(name)
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| format!("{name}= is not a number"))
            })
            .transpose()
    };
    Ok(Signature {
        domain,
        selector,
        algorithm,
        header_canon,
        body_canon,
        headers,
        body_hash: decode("bh")?,
        signature: decode("b")?,
        body_length: number("l")?.map(|n| n as usize),
        identity,
        expires: number("x")?,
        index,
    })
}

/// Check `signature` of `message` with the key record `key` (the TXT at
/// [`Signature::key_name`]) at `now` (Unix seconds).
pub fn verify(message: &[u8], signature: &Signature, key: &str, now: u64) -> Result<(), Failure> {
    verify_with(message, signature, key, now, &BodyHashes::default())
}

/// The body's SHA-256 and length under each canonicalization, computed
/// once for all the signatures of one message, without a copy of the body.
#[derive(Debug, Default)]
pub struct BodyHashes {
    simple: std::cell::OnceCell<(Vec<u8>, usize)>,
    relaxed: std::cell::OnceCell<(Vec<u8>, usize)>,
}

impl BodyHashes {
    fn get(&self, message: &[u8], canon: Canon) -> (&[u8], usize) {
        let (_, body_start) = header_fields(message);
        let body = &message[body_start.min(message.len())..];
        let cell = match canon {
            Canon::Simple => &self.simple,
            Canon::Relaxed => &self.relaxed,
        };
        let (digest, length) = cell.get_or_init(|| {
            let mut hash = ring::digest::Context::new(&ring::digest::SHA256);
            let mut length = 0;
            let mut feed = |piece: &[u8]| {
                hash.update(piece);
                length += piece.len();
            };
            match canon {
                Canon::Relaxed => relaxed_body_into(body, feed),
                Canon::Simple => simple_body_into(body, &mut feed),
            }
            (hash.finish().as_ref().to_vec(), length)
        });
        (digest, *length)
    }
}

/// [`verify`], with the body hashes of other signatures of the message.
pub fn verify_with(
    message: &[u8],
    signature: &Signature,
    key: &str,
    now: u64,
    hashes: &BodyHashes,
) -> Result<(), Failure> {
    if signature.expires.is_some_and(|x| x < now) {
        return Err(Failure::Fail("the signature has expired".into()));
    }
    let record = tags(key);
    let get = |name: &str| {
        record
            .iter()
            .find(|(t, _)| t == name)
            .map(|(_, v)| v.as_str())
    };
    if get("v").is_some_and(|v| v != "DKIM1") {
        return Err(Failure::PermError(
            "the key record's v= is not DKIM1".into(),
        ));
    }
    let kind = get("k").unwrap_or("rsa").to_ascii_lowercase();
    let public =
        compact(get("p").ok_or_else(|| Failure::PermError("the key record has no p=".into()))?);
    if public.is_empty() {
        return Err(Failure::Fail("the key is revoked".into()));
    }
    let public = STANDARD
        .decode(public)
        .map_err(|e| Failure::PermError(format!("the key is not base64: {e}")))?;
    let flags = get("t").unwrap_or("");
    if flags.split(':').any(|f| f.trim() == "s") {
        let identity_domain = signature.identity.rsplit_once('@').map_or("", |(_, d)| d);
        if !identity_domain.eq_ignore_ascii_case(&signature.domain) {
            return Err(Failure::PermError(
                "the key (t=s) wants i= in d= itself".into(),
            ));
        }
    }
    if get("s").is_some_and(|s| !s.split(':').any(|t| matches!(t.trim(), "*" | "email"))) {
        return Err(Failure::PermError("the key is not for email (s=)".into()));
    }
    if get("h").is_some_and(|h| {
        !h.split(':')
            .any(|a| a.trim().eq_ignore_ascii_case("sha256"))
    }) {
        return Err(Failure::PermError("the key does not allow sha256".into()));
    }

    let (fields, _) = header_fields(message);
    let (body_hash, length) = hashes.get(message, signature.body_canon);
    if let Some(signed) = signature.body_length {
        // A signature that leaves part of the body unsigned lets anyone
        // append to a signed message: it does not pass here.
        if signed != length {
            return Err(Failure::Fail("l= does not cover the whole body".into()));
        }
    }
    if body_hash != signature.body_hash.as_slice() {
        return Err(Failure::Fail("the body hash does not match".into()));
    }

    let data = signed_headers(&fields, signature);
    let checked = match (signature.algorithm, kind.as_str()) {
        (SigAlgorithm::RsaSha256, "rsa") => {
            let pkcs1 = rsa_public_key(&public)
                .ok_or_else(|| Failure::PermError("the RSA key cannot be read".into()))?;
            UnparsedPublicKey::new(&RSA_PKCS1_1024_8192_SHA256_FOR_LEGACY_USE_ONLY, pkcs1)
                .verify(&data, &signature.signature)
        }
        (SigAlgorithm::Ed25519Sha256, "ed25519") => {
            // RFC 8463 §3: Ed25519 signs the SHA-256 hash of the data.
            let digest = ring::digest::digest(&ring::digest::SHA256, &data);
            UnparsedPublicKey::new(&ED25519, &public).verify(digest.as_ref(), &signature.signature)
        }
        _ => {
            return Err(Failure::PermError(format!(
                "a {kind} key for this algorithm"
            )))
        }
    };
    checked.map_err(|_| Failure::Fail("the signature does not verify".into()))
}

/// The hashed header data: the fields `h=` names, each taken from the
/// bottom up (a name given twice takes the next one up; none left: none),
/// then the signature's own field without its `b=` value and final CRLF.
fn signed_headers(fields: &[Field<'_>], signature: &Signature) -> Vec<u8> {
    // Each name's fields, top to bottom: taken from the end. One pass over
    // the fields, so a crafted `h=` of many names against many fields costs
    // their sum, not their product.
    let mut by_name: std::collections::HashMap<String, Vec<&Field<'_>>> =
        std::collections::HashMap::new();
    for field in fields {
        by_name
            .entry(field.name.to_ascii_lowercase())
            .or_default()
            .push(field);
    }
    let mut data = Vec::new();
    for name in &signature.headers {
        let found = by_name
            .get_mut(&name.to_ascii_lowercase())
            .and_then(Vec::pop);
        if let Some(field) = found {
            data.extend(canonical_header(field.raw, signature.header_canon, true));
        }
    }
    let own = fields
        .iter()
        .filter(|f| f.name.eq_ignore_ascii_case("DKIM-Signature"))
        .nth(signature.index)
        .map_or(&[][..], |f| f.raw);
    let without_b = remove_b_value(own);
    data.extend(canonical_header(&without_b, signature.header_canon, false));
    data
}

fn canonical_header(raw: &[u8], canon: Canon, crlf: bool) -> Vec<u8> {
    match canon {
        Canon::Relaxed => relaxed_header(raw, crlf),
        Canon::Simple => {
            let mut out = raw.to_vec();
            if !crlf {
                while out.last().is_some_and(|&b| b == b'\n' || b == b'\r') {
                    out.pop();
                }
            }
            out
        }
    }
}

/// The field with the value of its `b=` tag emptied (RFC 6376 §3.7).
fn remove_b_value(raw: &[u8]) -> Vec<u8> {
    let colon = raw.iter().position(|&b| b == b':').map_or(0, |c| c + 1);
    let mut out = raw[..colon].to_vec();
    let mut rest = &raw[colon..];
    while !rest.is_empty() {
        let end = rest
            .iter()
            .position(|&b| b == b';')
            .map_or(rest.len(), |i| i + 1);
        let part = &rest[..end];
        let eq = part.iter().position(|&b| b == b'=');
        let is_b = eq.is_some_and(|eq| part[..eq].trim_ascii() == b"b");
        match (is_b, eq) {
            (true, Some(eq)) => {
                out.extend_from_slice(&part[..=eq]);
                if part.ends_with(b";") {
                    out.push(b';');
                } else if part.ends_with(b"\r\n") {
                    out.extend_from_slice(b"\r\n");
                }
            }
            _ => out.extend_from_slice(part),
        }
        rest = &rest[end..];
    }
    out
}

/// Simple body canonicalization (RFC 6376 §3.4.3): empty lines at the end
/// dropped, CRLF at the end; an empty body is one CRLF. The canonical body
/// goes to `emit` (the body itself and at most a final CRLF: no copy).
fn simple_body_into(body: &[u8], emit: &mut impl FnMut(&[u8])) {
    let mut end = body.len();
    while body[..end].ends_with(b"\r\n\r\n") {
        end -= 2;
    }
    let body = &body[..end];
    if body == b"\r\n" || body.is_empty() {
        emit(b"\r\n");
        return;
    }
    emit(body);
    if !body.ends_with(b"\r\n") {
        emit(b"\r\n");
    }
}

/// The RSAPublicKey (PKCS#1) of a key record: inside a
/// SubjectPublicKeyInfo (what records usually hold), or bare.
fn rsa_public_key(der: &[u8]) -> Option<&[u8]> {
    // SubjectPublicKeyInfo ::= SEQUENCE { AlgorithmIdentifier, BIT STRING }
    let (tag, spki, _) = tlv(der)?;
    if tag != 0x30 {
        return None;
    }
    let (tag, algorithm, rest) = tlv(spki)?;
    const RSA_ENCRYPTION: &[u8] = &[
        0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
    ];
    if tag == 0x30 && algorithm.starts_with(RSA_ENCRYPTION) {
        let (tag, bits, _) = tlv(rest)?;
        return (tag == 0x03 && bits.first() == Some(&0)).then(|| &bits[1..]);
    }
    // A bare RSAPublicKey: SEQUENCE { INTEGER n, INTEGER e }.
    (tag == 0x02).then_some(der)
}

/// One DER element: its tag, its contents, and what follows it.
fn tlv(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = der.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = match first {
        n if n < 0x80 => (usize::from(n), rest),
        0x81 => (usize::from(*rest.first()?), &rest[1..]),
        0x82 => (
            usize::from(u16::from_be_bytes([*rest.first()?, *rest.get(1)?])),
            rest.get(2..)?,
        ),
        _ => return None,
    };
    let contents = rest.get(..len)?;
    Some((tag, contents, &rest[len..]))
}

/// What the fuzz target and the smoke test check of any message: finding
/// and checking its signatures never panics, and no made-up signature
/// verifies against a real key.
#[cfg(any(test, feature = "fuzzing"))]
pub fn check(message: &[u8]) {
    const KEY: &str = "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=";
    for signature in signatures(message).into_iter().flatten() {
        assert!(verify(message, &signature, KEY, 0).is_err());
    }
}

#[cfg(test)]
mod tests {
    use super::super::{sign, SigningKey};
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::Ed25519KeyPair;

    const MESSAGE: &[u8] = b"From: Ann <ann@example.com>\r\nTo: bob@example.net\r\nSubject: Hello  there\r\n\r\nHi Bob,\r\n\r\nthe  body.\r\n\r\n\r\n";

    fn ed25519() -> SigningKey {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        SigningKey::from_der("example.com", "sel", pkcs8.as_ref()).unwrap()
    }

    fn signed(key: &SigningKey, message: &[u8]) -> Vec<u8> {
        let mut out = sign(message, &[key], 1_700_000_000);
        out.extend_from_slice(message);
        out
    }

    #[test]
    fn our_own_signatures_verify_and_tampering_fails() {
        let key = ed25519();
        let message = signed(&key, MESSAGE);
        let found = signatures(&message);
        assert_eq!(found.len(), 1);
        let signature = found[0].clone().unwrap();
        assert_eq!(signature.key_name(), "sel._domainkey.example.com");
        assert_eq!(
            verify(&message, &signature, &key.dns_record(), 1_700_000_100),
            Ok(())
        );
        // Folding and whitespace changes survive relaxed canonicalization.
        let refolded = String::from_utf8(message.clone())
            .unwrap()
            .replace("Subject: Hello  there", "Subject:   Hello\r\n  there");
        assert_eq!(
            verify(refolded.as_bytes(), &signature, &key.dns_record(), 0),
            Ok(())
        );
        let tampered = String::from_utf8(message.clone())
            .unwrap()
            .replace("Hi Bob", "Hi Eve");
        assert!(matches!(
            verify(tampered.as_bytes(), &signature, &key.dns_record(), 0),
            Err(Failure::Fail(_))
        ));
        let resubject = String::from_utf8(message.clone())
            .unwrap()
            .replace("Hello", "Bye");
        assert!(matches!(
            verify(resubject.as_bytes(), &signature, &key.dns_record(), 0),
            Err(Failure::Fail(_))
        ));
        // Another key, a revoked one, a broken record.
        assert!(matches!(
            verify(&message, &signature, &ed25519().dns_record(), 0),
            Err(Failure::Fail(_))
        ));
        assert!(matches!(
            verify(&message, &signature, "v=DKIM1; k=ed25519; p=", 0),
            Err(Failure::Fail(_))
        ));
        assert!(matches!(
            verify(&message, &signature, "v=DKIM1; p=%%%", 0),
            Err(Failure::PermError(_))
        ));
    }

    #[test]
    fn a_signature_below_other_fields_verifies() {
        let key = ed25519();
        let message = signed(&key, MESSAGE);
        let mut relayed = b"Received: from a by b; Sun, 6 Dec 2026 10:00:00 +0000\r\n".to_vec();
        relayed.extend_from_slice(&message);
        let signature = signatures(&relayed)[0].clone().unwrap();
        assert_eq!(verify(&relayed, &signature, &key.dns_record(), 0), Ok(()));
    }

    #[test]
    fn rsa_keys_in_spki_form_verify() {
        let pem = include_str!("../../../engine/tests/data/dkim-rsa2048.pem");
        let der = STANDARD
            .decode(
                pem.lines()
                    .filter(|l| !l.starts_with("-----"))
                    .collect::<String>(),
            )
            .unwrap();
        let key = SigningKey::from_der("example.com", "rsa", &der).unwrap();
        let message = signed(&key, MESSAGE);
        let signature = signatures(&message)[0].clone().unwrap();
        assert_eq!(signature.algorithm, SigAlgorithm::RsaSha256);
        assert_eq!(verify(&message, &signature, &key.dns_record(), 0), Ok(()));
    }

    #[test]
    fn broken_signatures_are_permerrors() {
        for bad in [
            "DKIM-Signature: v=1; a=rsa-sha1; d=x.test; s=s; h=from; bh=AA==; b=AA==\r\n",
            "DKIM-Signature: v=1; a=rsa-sha256; d=x.test; s=s; h=to; bh=AA==; b=AA==\r\n",
            "DKIM-Signature: v=1; a=rsa-sha256; d=x.test; s=s; h=from; bh=AA==\r\n",
            "DKIM-Signature: v=2; a=rsa-sha256; d=x.test; s=s; h=from; bh=AA==; b=AA==\r\n",
            "DKIM-Signature: v=1; a=rsa-sha256; d=x.test; s=s; h=from; i=a@other.test; bh=AA==; b=AA==\r\n",
        ] {
            let message = format!("{bad}From: a@x.test\r\n\r\nbody\r\n");
            assert!(signatures(message.as_bytes())[0].is_err(), "{bad}");
        }
    }

    /// Hostile sizes are refused before they cost memory: a huge h=, a
    /// huge field, a header of countless tiny fields.
    #[test]
    fn oversized_signatures_and_headers_are_refused() {
        let many_names = format!(
            "DKIM-Signature: v=1; a=rsa-sha256; d=x.test; s=s; h={}from; bh=AA==; b=AA==\r\nFrom: a@x.test\r\n\r\n",
            "a:".repeat(MAX_SIGNED_HEADERS)
        );
        let found = signatures(many_names.as_bytes());
        assert!(
            found[0].as_ref().unwrap_err().contains("h= names over"),
            "{found:?}"
        );
        let huge = format!(
            "DKIM-Signature: v=1; a=rsa-sha256; d=x.test; s=s; h=from; bh=AA==; b={}\r\nFrom: a@x.test\r\n\r\n",
            "A".repeat(MAX_SIGNATURE_FIELD)
        );
        assert!(signatures(huge.as_bytes())[0].is_err());
        let mut many_fields = b"DKIM-Signature: v=1; a=rsa-sha256; d=x.test; s=s; h=from; bh=AA==; b=AA==\r\nFrom: a@x.test\r\n".to_vec();
        for _ in 0..super::super::MAX_HEADER_FIELDS {
            many_fields.extend_from_slice(b"a:\r\n");
        }
        many_fields.extend_from_slice(b"\r\nbody\r\n");
        let found = signatures(&many_fields);
        assert_eq!(found.len(), 1);
        assert!(found[0].as_ref().unwrap_err().contains("over 4096 fields"));
        assert!(super::super::sign(&many_fields, &[&ed25519()], 1).is_empty());
    }

    #[test]
    fn fuzz_smoke() {
        for message in [
            &b""[..],
            b"DKIM-Signature: v=1; a=ed25519-sha256; d=x.test; s=s; h=from:from:to; l=999; bh=AAAA; b=AAAA\r\nFrom: a@x.test\r\n\r\nbody",
            b"DKIM-Signature: v=1; a=rsa-sha256; c=simple/simple; d=x.test; s=s; h=from; l=0; bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=; b=AAAA\r\nFrom: a\r\n\r\n",
            b"DKIM-Signature:\r\n\r\n",
        ] {
            check(message);
        }
    }

    #[test]
    fn simple_body_and_b_removal() {
        let simple = |body: &[u8]| {
            let mut out = Vec::new();
            simple_body_into(body, &mut |piece: &[u8]| out.extend_from_slice(piece));
            out
        };
        assert_eq!(simple(b"a\r\n\r\n\r\n"), b"a\r\n");
        assert_eq!(simple(b""), b"\r\n");
        assert_eq!(simple(b"a"), b"a\r\n");
        assert_eq!(
            remove_b_value(b"DKIM-Signature: a=1; b=abc\r\n\tdef; bh=xyz\r\n"),
            b"DKIM-Signature: a=1; b=; bh=xyz\r\n"
        );
    }
}
