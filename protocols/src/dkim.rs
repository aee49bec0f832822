//! DKIM signing (RFC 6376), with RSA-SHA256 and Ed25519-SHA256 (RFC 8463)
//! keys: relaxed/relaxed canonicalization, the `DKIM-Signature` header
//! field to put on top of the message. The cryptography is ring's.
//!
//! The signed header fields are those of [`DEFAULT_HEADERS`] that the
//! message has, bottom-up as §5.4.2 says, and each name once more than
//! the message has it (oversigned, §8.15), so that no `From`, `Subject`,
//! `Reply-To` or any other of them can be added after signing.
//!
//! The time is an input; nothing here reads a clock or does I/O.

pub mod verify;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair, RsaKeyPair, RSA_PKCS1_SHA256};

/// The header fields signed when present (From always, and once more).
pub const DEFAULT_HEADERS: &[&str] = &[
    "from",
    "reply-to",
    "subject",
    "date",
    "to",
    "cc",
    "message-id",
    "in-reply-to",
    "references",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "list-id",
    "list-unsubscribe",
    "list-unsubscribe-post",
];

/// The longest line of a signature's folded value.
const LINE: usize = 76;

/// A private key that cannot be used for signing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a usable DKIM key: {0}")]
pub struct KeyError(String);

/// The signing algorithm a key implies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// `rsa-sha256` (RFC 6376).
    RsaSha256,
    /// `ed25519-sha256` (RFC 8463).
    Ed25519Sha256,
}

impl Algorithm {
    /// The `a=` value.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::RsaSha256 => "rsa-sha256",
            Algorithm::Ed25519Sha256 => "ed25519-sha256",
        }
    }
}

enum Pair {
    Rsa(RsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

/// A selector's private key for one signing domain.
pub struct SigningKey {
    domain: String,
    selector: String,
    pair: Pair,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SigningKey({}._domainkey.{}, {})",
            self.selector,
            self.domain,
            self.algorithm().name()
        )
    }
}

impl SigningKey {
    /// A key from its DER form: PKCS#8 (RSA or Ed25519, v1 or v2) or
    /// PKCS#1 (RSA). RSA keys must have at least 1024 bits (RFC 8301);
    /// 2048 is what receivers expect.
    pub fn from_der(domain: &str, selector: &str, der: &[u8]) -> Result<SigningKey, KeyError> {
        let pair = if let Ok(rsa) = RsaKeyPair::from_pkcs8(der) {
            Pair::Rsa(rsa)
        } else if let Ok(rsa) = RsaKeyPair::from_der(der) {
            Pair::Rsa(rsa)
        } else {
            Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
                .map(Pair::Ed25519)
                .map_err(|e| KeyError(format!("neither RSA nor Ed25519 ({e})")))?
        };
        if let Pair::Rsa(rsa) = &pair {
            if rsa.public().modulus_len() < 128 {
                return Err(KeyError("RSA keys need at least 1024 bits".into()));
            }
        }
        if domain.is_empty() || selector.is_empty() {
            return Err(KeyError("a key needs a domain and a selector".into()));
        }
        Ok(SigningKey {
            domain: domain.to_ascii_lowercase(),
            selector: selector.to_owned(),
            pair,
        })
    }

    /// The signing domain (`d=`).
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The selector (`s=`).
    pub fn selector(&self) -> &str {
        &self.selector
    }

    /// What it signs with.
    pub fn algorithm(&self) -> Algorithm {
        match self.pair {
            Pair::Rsa(_) => Algorithm::RsaSha256,
            Pair::Ed25519(_) => Algorithm::Ed25519Sha256,
        }
    }

    /// The TXT record to publish at `selector._domainkey.domain`:
    /// `v=DKIM1; k=rsa; p=...` (SubjectPublicKeyInfo) or `k=ed25519`
    /// (the raw 32-byte key, RFC 8463 §4.2).
    pub fn dns_record(&self) -> String {
        let (kind, public) = match &self.pair {
            Pair::Rsa(rsa) => ("rsa", rsa_spki(rsa.public().as_ref())),
            Pair::Ed25519(ed) => ("ed25519", ed.public_key().as_ref().to_vec()),
        };
        format!("v=DKIM1; k={kind}; p={}", STANDARD.encode(public))
    }

    fn sign(&self, data: &[u8]) -> Vec<u8> {
        match &self.pair {
            Pair::Rsa(rsa) => {
                let mut signature = vec![0; rsa.public().modulus_len()];
                rsa.sign(
                    &RSA_PKCS1_SHA256,
                    &SystemRandom::new(),
                    data,
                    &mut signature,
                )
                .expect("signing into a buffer of the modulus length");
                signature
            }
            // RFC 8463 §3: Ed25519 signs the SHA-256 hash of the data.
            Pair::Ed25519(ed) => {
                let digest = ring::digest::digest(&ring::digest::SHA256, data);
                ed.sign(digest.as_ref()).as_ref().to_vec()
            }
        }
    }
}

/// An RSAPublicKey (PKCS#1) wrapped as a SubjectPublicKeyInfo, the form
/// DKIM records publish (what `openssl rsa -pubout` writes).
fn rsa_spki(pkcs1: &[u8]) -> Vec<u8> {
    // AlgorithmIdentifier { rsaEncryption, NULL }
    const ALGORITHM: &[u8] = &[
        0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ];
    let mut bits = vec![0x00]; // no unused bits
    bits.extend_from_slice(pkcs1);
    let mut body = ALGORITHM.to_vec();
    body.extend(der(0x03, &bits));
    der(0x30, &body)
}

/// A DER element: tag, length, contents.
fn der(tag: u8, contents: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = contents.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|&b| b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(contents);
    out
}

/// One header field as the message has it: its name and its whole text
/// (continuation lines and the final CRLF included).
struct Field<'a> {
    name: &'a str,
    raw: &'a [u8],
}

/// The most header fields signed or verified. A message with more (a
/// header of millions of tiny fields would cost gigabytes of [`Field`]s)
/// is neither signed nor verified (RFC 6376 §8: verifiers' limits).
pub const MAX_HEADER_FIELDS: usize = 4096;

/// The header fields of `message`, at most one past
/// [`MAX_HEADER_FIELDS`] (see [`too_many_fields`]), and where its body
/// starts.
fn header_fields(message: &[u8]) -> (Vec<Field<'_>>, usize) {
    let mut fields: Vec<Field<'_>> = Vec::new();
    let mut at = 0;
    while at < message.len() {
        let end = memchr::memchr(b'\n', &message[at..]).map_or(message.len(), |i| at + i + 1);
        let line = &message[at..end];
        if line == b"\r\n" || line == b"\n" {
            return (fields, end);
        }
        let full = too_many_fields(&fields);
        match (fields.last_mut(), line.first()) {
            (Some(field), Some(b' ' | b'\t')) => {
                let start = field.raw.as_ptr() as usize - message.as_ptr() as usize;
                field.raw = &message[start..end];
            }
            _ if full => {}
            _ => {
                let name = memchr::memchr(b':', line)
                    .and_then(|colon| std::str::from_utf8(&line[..colon]).ok())
                    .unwrap_or_default();
                fields.push(Field {
                    name: name.trim_end(),
                    raw: line,
                });
            }
        }
        at = end;
    }
    (fields, message.len())
}

/// Whether `header_fields` found more fields than are handled.
fn too_many_fields(fields: &[Field<'_>]) -> bool {
    fields.len() > MAX_HEADER_FIELDS
}

/// Relaxed header canonicalization (RFC 6376 §3.4.2): the name lowercased,
/// unfolded, runs of whitespace one space, none at the ends of the value,
/// none around the colon; with CRLF when `crlf`.
fn relaxed_header(raw: &[u8], crlf: bool) -> Vec<u8> {
    let colon = memchr::memchr(b':', raw).unwrap_or(raw.len());
    let mut out: Vec<u8> = raw[..colon]
        .trim_ascii()
        .iter()
        .map(u8::to_ascii_lowercase)
        .collect();
    out.push(b':');
    let value = raw.get(colon + 1..).unwrap_or_default();
    let (mut space, mut started) = (false, false);
    for &b in value {
        match b {
            b'\r' | b'\n' => {}
            b' ' | b'\t' => space = true,
            _ => {
                if space && started {
                    out.push(b' ');
                }
                space = false;
                started = true;
                out.push(b);
            }
        }
    }
    if crlf {
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Relaxed body canonicalization (§3.4.4): trailing whitespace of each
/// line dropped, runs of it one space, empty lines at the end dropped,
/// every line ending CRLF. The canonical body goes to `emit` piece by
/// piece, so hashing it needs no copy of the body.
fn relaxed_body_into(body: &[u8], mut emit: impl FnMut(&[u8])) {
    let mut line_buf = Vec::with_capacity(128);
    let mut blank_run = 0;
    let mut lines = body.split(|&b| b == b'\n').peekable();
    while let Some(line) = lines.next() {
        if lines.peek().is_none() && line.is_empty() {
            break; // the text after the last LF
        }
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        line_buf.clear();
        let mut space = false;
        for &b in line {
            if b == b' ' || b == b'\t' {
                space = true;
            } else {
                if space {
                    line_buf.push(b' ');
                }
                space = false;
                line_buf.push(b);
            }
        }
        if line_buf.is_empty() {
            blank_run += 1;
            continue;
        }
        for _ in 0..blank_run {
            emit(b"\r\n");
        }
        blank_run = 0;
        emit(&line_buf);
        emit(b"\r\n");
    }
}

/// The SHA-256 of the relaxed canonical body.
fn body_hash(body: &[u8]) -> ring::digest::Digest {
    let mut hash = ring::digest::Context::new(&ring::digest::SHA256);
    relaxed_body_into(body, |piece| hash.update(piece));
    hash.finish()
}

/// The `DKIM-Signature` fields for `message` (header and body, CRLF line
/// ends), one per key, each ending in CRLF: put them on top of the
/// message. `now` is the signing time (`t=`), Unix seconds.
pub fn sign(message: &[u8], keys: &[&SigningKey], now: u64) -> Vec<u8> {
    let (fields, body_start) = header_fields(message);
    if too_many_fields(&fields) {
        return Vec::new();
    }
    let body_hash = body_hash(&message[body_start.min(message.len())..]);
    // Bottom-up: the n-th mention of a name signs its n-th field from the
    // end; a mention with no field left signs "nothing" (oversigning).
    let mut names: Vec<&str> = Vec::new();
    let mut signed: Vec<u8> = Vec::new();
    for &name in DEFAULT_HEADERS {
        let present: Vec<&Field<'_>> = fields
            .iter()
            .rev()
            .filter(|f| f.name.eq_ignore_ascii_case(name))
            .collect();
        for field in &present {
            names.push(name);
            signed.extend(relaxed_header(field.raw, true));
        }
        names.push(name);
    }
    // h= folded before a name that would take its line past LINE (FWS is
    // allowed around each colon, RFC 6376 §3.5).
    let mut header_list = String::new();
    let mut line = "\tt=0000000000; h=".len();
    for (i, name) in names.iter().enumerate() {
        if i > 0 {
            header_list.push(':');
            line += 1;
            if line + name.len() > LINE {
                header_list.push_str("\r\n\t");
                line = 1;
            }
        }
        header_list.push_str(name);
        line += name.len();
    }
    let mut out = Vec::new();
    for key in keys {
        let head = format!(
            "DKIM-Signature: v=1; a={}; c=relaxed/relaxed; d={}; s={};\r\n\tt={now}; h={};\r\n\tbh={};\r\n\tb=",
            key.algorithm().name(),
            key.domain,
            key.selector,
            header_list,
            STANDARD.encode(body_hash.as_ref()),
        );
        let mut data = signed.clone();
        data.extend(relaxed_header(head.as_bytes(), false));
        let signature = STANDARD.encode(key.sign(&data));
        out.extend_from_slice(head.as_bytes());
        for (i, chunk) in signature.as_bytes().chunks(LINE).enumerate() {
            if i > 0 {
                out.extend_from_slice(b"\r\n\t");
            }
            out.extend_from_slice(chunk);
        }
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// What the fuzz target and the smoke test check of any message: signing
/// never panics, and the signature field is ASCII, every line of it at most
/// 998 octets, CRLF-ended, one per key.
#[cfg(any(test, feature = "fuzzing"))]
pub fn check(message: &[u8]) {
    static KEY: std::sync::OnceLock<SigningKey> = std::sync::OnceLock::new();
    let key = KEY.get_or_init(|| {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).expect("a key");
        SigningKey::from_der("example.com", "fuzz", pkcs8.as_ref()).expect("a key")
    });
    let field = sign(message, &[key, key], 1);
    assert!(field.is_ascii());
    assert!(field.ends_with(b"\r\n"));
    let text = String::from_utf8(field).expect("ASCII");
    assert_eq!(text.matches("DKIM-Signature: ").count(), 2);
    assert!(text.split("\r\n").all(|line| line.len() <= 998));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relaxed_body(body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        relaxed_body_into(body, |piece| out.extend_from_slice(piece));
        out
    }

    #[test]
    fn fuzz_smoke() {
        let pieces: [&[u8]; 6] = [
            b"From: a@example.com\r\n",
            b"Subject: \t x \r\n \t y\r\n",
            b"\r\n",
            b" \t ",
            b"\n",
            b"To:",
        ];
        crate::check::random_cases(11, 2000, 48, |_, bytes, rng| {
            let mut input = Vec::new();
            for &b in &bytes {
                if b % 2 == 0 {
                    input.extend_from_slice(pieces[rng.below(pieces.len())]);
                } else {
                    input.push(b);
                }
            }
            crate::check::reproducible(|| format!("{input:?}"), || check(&input));
        });
    }

    fn ed25519_key(domain: &str) -> SigningKey {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        SigningKey::from_der(domain, "s1", pkcs8.as_ref()).unwrap()
    }

    #[test]
    fn relaxed_canonicalization_follows_rfc_6376_examples() {
        // RFC 6376 §3.4.6.
        let message = b"A: X\r\nB : Y\t\r\n\tZ  \r\n\r\n C \r\nD \t E\r\n\r\n\r\n";
        let (fields, body) = header_fields(message);
        assert_eq!(fields.len(), 2);
        assert_eq!(relaxed_header(fields[0].raw, true), b"a:X\r\n");
        assert_eq!(relaxed_header(fields[1].raw, true), b"b:Y Z\r\n");
        assert_eq!(
            relaxed_header(b"Subject:  Re: hi \r\n", false),
            b"subject:Re: hi"
        );
        assert_eq!(relaxed_body(&message[body..]), b" C\r\nD E\r\n");
        assert_eq!(relaxed_body(b""), b"");
        assert_eq!(relaxed_body(b"\r\n\r\n"), b"");
        assert_eq!(relaxed_body(b"no end"), b"no end\r\n");
        assert_eq!(relaxed_body(b"a\r\n\r\nb\r\n"), b"a\r\n\r\nb\r\n");
    }

    #[test]
    fn signature_field_names_what_it_signs() {
        let key = ed25519_key("Example.COM");
        let message = b"From: a@example.com\r\nTo: b@example.net\r\nX-Other: 1\r\n\
            Subject: hi\r\nReceived: x\r\nSubject: again\r\n\r\nbody\r\n";
        let signed = String::from_utf8(sign(message, &[&key], 1_700_000_000)).unwrap();
        assert!(signed.starts_with("DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed; d=example.com; s=s1;\r\n\tt=1700000000; h=from:from:reply-to:subject:subject:subject:date:to:to:cc:\r\n\tmessage-id:"), "{signed}");
        // Each name once more than present: none can be added unnoticed.
        let list: String = signed
            .split("h=")
            .nth(1)
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .into();
        let names: Vec<&str> = list.split(':').map(str::trim).collect();
        for name in DEFAULT_HEADERS {
            let present = match *name {
                "from" | "to" => 1,
                "subject" => 2,
                _ => 0,
            };
            assert_eq!(
                names.iter().filter(|n| *n == name).count(),
                present + 1,
                "{name}"
            );
        }
        assert!(signed.lines().all(|l| l.len() <= 80), "{signed}");
        assert!(signed.ends_with("\r\n"));
        assert!(signed.lines().all(|l| l.len() <= 998));
        // The body hash of "body\r\n" (relaxed), base64.
        let expected = STANDARD.encode(ring::digest::digest(&ring::digest::SHA256, b"body\r\n"));
        assert!(signed.contains(&format!("bh={expected};")), "{signed}");
    }

    #[test]
    fn ed25519_signature_verifies_with_the_public_key() {
        let key = ed25519_key("example.com");
        let message = b"From: a@example.com\r\nSubject: s\r\n\r\nhello  world \r\n\r\n";
        let field = sign(message, &[&key], 7);
        let text = String::from_utf8(field.clone()).unwrap();
        let (head, b) = text.rsplit_once("b=").unwrap();
        let signature: String = b.chars().filter(|c| !c.is_whitespace()).collect();
        let signature = STANDARD.decode(signature).unwrap();
        let mut data = relaxed_header(b"From: a@example.com\r\n", true);
        data.extend(relaxed_header(b"Subject: s\r\n", true));
        data.extend(relaxed_header(format!("{head}b=").as_bytes(), false));
        let digest = ring::digest::digest(&ring::digest::SHA256, &data);
        let record = key.dns_record();
        let public = STANDARD
            .decode(record.rsplit("p=").next().unwrap())
            .unwrap();
        ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, public)
            .verify(digest.as_ref(), &signature)
            .expect("the signature verifies");
        assert!(record.starts_with("v=DKIM1; k=ed25519; p="));
    }

    #[test]
    fn bad_keys_are_refused() {
        assert!(SigningKey::from_der("example.com", "s", b"not a key").is_err());
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        assert!(SigningKey::from_der("", "s", pkcs8.as_ref()).is_err());
    }

    #[test]
    fn der_lengths() {
        assert_eq!(der(0x04, &[1, 2]), [0x04, 2, 1, 2]);
        let long = der(0x04, &[0; 300]);
        assert_eq!(&long[..4], &[0x04, 0x82, 0x01, 0x2c]);
    }
}
