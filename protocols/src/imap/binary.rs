//! BINARY (RFC 3516): message parts with their Content-Transfer-Encoding
//! removed, and binary content taken in by APPEND.
//!
//! FETCH BINARY[1.2] gives part 1.2's body decoded from base64 or
//! quoted-printable (identity encodings as stored), BINARY.SIZE its decoded
//! length; an encoding we do not know fails the command with
//! `[UNKNOWN-CTE]`. Decoding is lenient, as receivers are: base64 skips
//! what is not in its alphabet, quoted-printable keeps an `=` that starts
//! no escape.
//!
//! APPEND may bring binary content in a literal8 (`~{n}`): a part holding
//! NUL octets, which no IMAP literal may carry. Such parts are stored
//! base64-encoded ([`store_form`]), so BODY[] stays sendable to any client
//! while BINARY[] gives the client its octets back.

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use imap_codec::imap_types::body::{BodyStructure, SpecificFields};
use imap_codec::imap_types::core::IString;
use std::num::NonZeroU32;

use super::mime;

/// A part's Content-Transfer-Encoding is not one we can decode: the FETCH
/// fails with `NO [UNKNOWN-CTE]` (RFC 3516 §4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnknownCte;

/// The content of BINARY[`part`] (RFC 3516 §4.2): the whole message as
/// stored for an empty section, else the part's body with its transfer
/// encoding removed. A part the message lacks is empty.
pub fn section(message: &[u8], part: &[NonZeroU32]) -> Result<Vec<u8>, UnknownCte> {
    if part.is_empty() {
        return Ok(message.to_vec());
    }
    let Some((body, encoding)) = mime::part_body(message, part) else {
        return Ok(Vec::new());
    };
    decode(&body, encoding.as_deref().unwrap_or_default())
}

/// The structure of a part as BINARY gives it (URLFETCH's BODYPARTSTRUCTURE
/// beside BINARY, RFC 5524 §3.2): no transfer encoding left (`binary` when
/// the content holds NUL or 8-bit octets, else `7bit`), the size of
/// `decoded`, no text lines. A multipart's structure is left as it is
/// (servers are not expected to turn multiparts into binary).
pub fn decoded_structure(
    structure: BodyStructure<'static>,
    decoded: &[u8],
) -> BodyStructure<'static> {
    let BodyStructure::Single {
        mut body,
        extension_data,
    } = structure
    else {
        return structure;
    };
    let encoding = match decoded.iter().any(|&b| b == 0 || b >= 0x80) {
        true => "binary",
        false => "7bit",
    };
    if let Ok(encoding) = IString::try_from(encoding) {
        body.basic.content_transfer_encoding = encoding;
    }
    body.basic.size = u32::try_from(decoded.len()).unwrap_or(u32::MAX);
    // Text lines are a property of the transfer form (RFC 3501's
    // body-fld-lines counts the encoded body's); decoded data has none, as
    // Dovecot reports it too.
    match &mut body.specific {
        SpecificFields::Text {
            number_of_lines, ..
        }
        | SpecificFields::Message {
            number_of_lines, ..
        } => *number_of_lines = 0,
        SpecificFields::Basic { .. } => {}
    }
    BodyStructure::Single {
        body,
        extension_data,
    }
}

/// `body` with the transfer encoding named `encoding` removed.
pub fn decode(body: &[u8], encoding: &[u8]) -> Result<Vec<u8>, UnknownCte> {
    let name = encoding.trim_ascii();
    if name.is_empty()
        || ["7bit", "8bit", "binary"]
            .iter()
            .any(|identity| name.eq_ignore_ascii_case(identity.as_bytes()))
    {
        Ok(body.to_vec())
    } else if name.eq_ignore_ascii_case(b"base64") {
        Ok(decode_base64(body))
    } else if name.eq_ignore_ascii_case(b"quoted-printable") {
        Ok(decode_quoted_printable(body))
    } else {
        Err(UnknownCte)
    }
}

/// Lenient base64: line breaks, spaces and anything else outside the
/// alphabet are skipped, the data ends at the first `=`, and a last group
/// too short to hold an octet is dropped.
fn decode_base64(body: &[u8]) -> Vec<u8> {
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new()
            .with_decode_allow_trailing_bits(true)
            .with_decode_padding_mode(DecodePaddingMode::RequireNone),
    );
    let end = memchr::memchr(b'=', body).unwrap_or(body.len());
    let mut digits: Vec<u8> = body[..end]
        .iter()
        .copied()
        .filter(|b| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/')
        .collect();
    if digits.len() % 4 == 1 {
        digits.pop();
    }
    // Only the alphabet is left, unpadded, in a valid length.
    LENIENT.decode(&digits).unwrap_or_default()
}

/// Quoted-printable (RFC 2045 §6.7): `=XX` escapes, soft line breaks (`=`
/// at a line's end, after trailing whitespace is dropped), trailing
/// whitespace of every line dropped, lines ending in CRLF.
fn decode_quoted_printable(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    let mut lines = body.split(|&b| b == b'\n').peekable();
    while let Some(line) = lines.next() {
        let terminated = lines.peek().is_some();
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let line = line.trim_ascii_end();
        let (line, soft) = match line.strip_suffix(b"=") {
            Some(rest) => (rest, true),
            None => (line, false),
        };
        let mut i = 0;
        while i < line.len() {
            let escaped = (line[i] == b'=')
                .then(|| line.get(i + 1..i + 3))
                .flatten()
                .and_then(|hex| Some(hex_value(hex[0])? << 4 | hex_value(hex[1])?));
            match escaped {
                Some(byte) => {
                    out.push(byte);
                    i += 3;
                }
                None => {
                    out.push(line[i]);
                    i += 1;
                }
            }
        }
        if terminated && !soft {
            out.extend_from_slice(b"\r\n");
        }
    }
    out
}

fn hex_value(digit: u8) -> Option<u8> {
    (digit as char).to_digit(16).map(|v| v as u8)
}

/// The form in which an appended message is stored: as given, unless a
/// leaf part holds NUL octets (binary content from a literal8), which is
/// then stored base64-encoded with its Content-Transfer-Encoding field
/// saying so. `None` when NULs remain outside any such part (in a header,
/// or a multipart's own text): that cannot be stored as a message.
pub fn store_form(message: Vec<u8>) -> Option<Vec<u8>> {
    if memchr::memchr(0, &message).is_none() {
        return Some(message);
    }
    let mut out = Vec::with_capacity(message.len() * 4 / 3 + 256);
    let mut copied = 0;
    for (header, body) in mime::leaf_parts(&message) {
        let content = &message[body.clone()];
        if memchr::memchr(0, content).is_none() || header.start < copied {
            continue;
        }
        out.extend_from_slice(&message[copied..header.start]);
        push_header_as_base64(&mut out, &message[header.clone()]);
        push_base64_lines(&mut out, content);
        // A part that runs to the end of the message ends its last line.
        if body.end == message.len() {
            out.extend_from_slice(b"\r\n");
        }
        copied = body.end;
    }
    out.extend_from_slice(&message[copied..]);
    memchr::memchr(0, &out).is_none().then_some(out)
}

/// A part's header with its Content-Transfer-Encoding field (and that
/// field's continuation lines) replaced by `base64`, before the blank line
/// that ends it.
fn push_header_as_base64(out: &mut Vec<u8>, header: &[u8]) {
    let mut in_encoding_field = false;
    let mut lines = header.split_inclusive(|&b| b == b'\n').peekable();
    while let Some(line) = lines.next() {
        let blank = line.trim_ascii().is_empty();
        if blank && lines.peek().is_none() {
            out.extend_from_slice(b"Content-Transfer-Encoding: base64\r\n");
            out.extend_from_slice(line);
            return;
        }
        let continuation = matches!(line.first(), Some(b' ' | b'\t'));
        if !continuation {
            in_encoding_field = line
                .get(..26)
                .is_some_and(|name| name.eq_ignore_ascii_case(b"content-transfer-encoding:"));
        }
        if !in_encoding_field {
            out.extend_from_slice(line);
        }
    }
    // A header without its blank line (a body-less part): end it.
    out.extend_from_slice(b"Content-Transfer-Encoding: base64\r\n\r\n");
}

/// `content` in base64, 76 characters a line (RFC 2045 §6.8), the lines
/// separated by CRLF.
fn push_base64_lines(out: &mut Vec<u8>, content: &[u8]) {
    let encoded = STANDARD.encode(content);
    for (i, line) in encoded.as_bytes().chunks(76).enumerate() {
        if i > 0 {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(line);
    }
}

/// What the fuzz target and the smoke test check of any input: BINARY of
/// some sections and the stored form of an APPEND never panic; the stored
/// form holds no NUL, and a message without NUL is stored as given.
#[cfg(any(test, feature = "fuzzing"))]
pub fn check(input: &[u8]) {
    let part = |numbers: &[u32]| -> Vec<NonZeroU32> {
        numbers.iter().filter_map(|&n| NonZeroU32::new(n)).collect()
    };
    for numbers in [&[][..], &[1], &[2], &[1, 1], &[2, 1], &[3, 2, 1]] {
        if let Ok(decoded) = section(input, &part(numbers)) {
            assert!(decoded.len() <= 2 * input.len() + 2, "{numbers:?}");
        }
    }
    let has_nul = input.contains(&0);
    match store_form(input.to_vec()) {
        Some(stored) => {
            assert!(!stored.contains(&0));
            if !has_nul {
                assert_eq!(stored, input);
            }
        }
        None => assert!(has_nul),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fuzz_smoke() {
        // MIME skeletons with random bytes (NULs included) in between.
        let pieces: [&[u8]; 8] = [
            b"Content-Type: multipart/mixed; boundary=b\r\n\r\n",
            b"--b\r\n",
            b"Content-Transfer-Encoding: base64\r\n\r\n",
            b"Content-Transfer-Encoding: quoted-printable\r\n\r\n",
            b"Content-Transfer-Encoding: binary\r\n\r\n",
            b"--b--\r\n",
            b"=\r\n=4",
            b"\0\r\n",
        ];
        crate::check::random_cases(7, 3000, 64, |_, bytes, rng| {
            let mut input = Vec::new();
            for &b in &bytes {
                if b % 3 == 0 {
                    input.extend_from_slice(pieces[rng.below(pieces.len())]);
                } else {
                    input.push(b);
                }
            }
            crate::check::reproducible(|| format!("{input:?}"), || check(&input));
        });
    }

    fn part(numbers: &[u32]) -> Vec<NonZeroU32> {
        numbers
            .iter()
            .map(|&n| NonZeroU32::new(n).unwrap())
            .collect()
    }

    const MULTI: &[u8] = b"From: a@example.org\r\n\
        Content-Type: multipart/mixed; boundary=\"b\"\r\n\
        \r\n\
        prologue\r\n\
        --b\r\n\
        Content-Type: text/plain\r\n\
        Content-Transfer-Encoding: base64\r\n\
        \r\n\
        \x20 aGVs \r\n\
        bG8gd29y\t\r\n\
        bGQ=\r\n\
        --b\r\n\
        Content-Type: text/plain\r\n\
        Content-Transfer-Encoding: Quoted-Printable\r\n\
        \r\n\
        hello  \r\n\
        bar=\r\n\
        \r\n\
        foo =\t\r\n\
        =62=3d=ZZ\r\n\
        --b\r\n\
        Content-Type: application/octet-stream\r\n\
        Content-Transfer-Encoding: x-uuencode\r\n\
        \r\n\
        begin 644 x\r\n\
        --b\r\n\
        Content-Type: text/plain\r\n\
        \r\n\
        as is\r\n\
        --b--\r\n";

    #[test]
    fn base64_parts_are_decoded_whatever_their_spacing() {
        assert_eq!(section(MULTI, &part(&[1])).unwrap(), b"hello world");
        assert_eq!(decode(b"YWJjZA", b"BASE64").unwrap(), b"abcd");
        assert_eq!(
            decode(b"YW*Jj\r\nZA==\r\nignored", b"base64").unwrap(),
            b"abcd"
        );
        assert_eq!(decode(b"YWJjZ", b"base64").unwrap(), b"abc");
        assert_eq!(decode(b"", b"base64").unwrap(), b"");
    }

    #[test]
    fn quoted_printable_soft_breaks_escapes_and_trailing_space() {
        assert_eq!(
            section(MULTI, &part(&[2])).unwrap(),
            b"hello\r\nbar\r\nfoo b==ZZ".to_vec()
        );
        assert_eq!(
            decode(b"a=\r\nb\r\nc", b"quoted-printable").unwrap(),
            b"ab\r\nc"
        );
        assert_eq!(
            decode(b"=00=FF=e9", b"quoted-printable").unwrap(),
            b"\0\xff\xe9"
        );
    }

    #[test]
    fn identity_and_unknown_encodings() {
        assert_eq!(section(MULTI, &part(&[4])).unwrap(), b"as is");
        assert_eq!(section(MULTI, &part(&[3])), Err(UnknownCte));
        assert_eq!(section(MULTI, &part(&[9])).unwrap(), b"");
        assert_eq!(section(MULTI, &[]).unwrap(), MULTI);
        assert_eq!(decode(b"x\0y", b" Binary ").unwrap(), b"x\0y");
    }

    #[test]
    fn binary_content_is_stored_base64_and_decodes_back() {
        let appended = b"From: a@example.org\r\n\
            Content-Type: application/octet-stream\r\n\
            Content-Transfer-Encoding:\r\n binary\r\n\
            \r\n\
            \0-\xe4\n\r\n\n"
            .to_vec();
        let stored = store_form(appended).unwrap();
        assert!(!stored.contains(&0));
        let text = String::from_utf8(stored.clone()).unwrap();
        assert!(
            text.contains("Content-Transfer-Encoding: base64\r\n\r\nAC3kCg0KCg==\r\n"),
            "{text}"
        );
        assert!(!text.contains("binary"), "{text}");
        assert_eq!(section(&stored, &part(&[1])).unwrap(), b"\0-\xe4\n\r\n\n");
    }

    #[test]
    fn only_parts_with_nul_are_rewritten() {
        let appended = b"Content-Type: multipart/mixed; boundary=b\r\n\
            \r\n\
            --b\r\n\
            Content-Type: text/plain\r\n\
            \r\n\
            plain text\r\n\
            --b\r\n\
            Content-Type: image/png\r\n\
            Content-Transfer-Encoding: binary\r\n\
            \r\n\
            \x89PNG\0\0\x01\r\n\
            --b--\r\n"
            .to_vec();
        let stored = store_form(appended).unwrap();
        let text = String::from_utf8(stored.clone()).unwrap();
        assert!(text.contains("\r\nplain text\r\n--b\r\n"), "{text}");
        assert_eq!(section(&stored, &part(&[2])).unwrap(), b"\x89PNG\0\0\x01");
        assert_eq!(section(&stored, &part(&[1])).unwrap(), b"plain text");
        // Text without NULs is stored as given.
        let plain = b"Subject: hi\r\n\r\nbody\r\n".to_vec();
        assert_eq!(store_form(plain.clone()), Some(plain));
    }

    #[test]
    fn nul_outside_a_part_body_cannot_be_stored() {
        assert_eq!(store_form(b"Subject: a\0b\r\n\r\nbody\r\n".to_vec()), None);
    }
}
