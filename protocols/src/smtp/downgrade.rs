//! 8-bit mail made 7-bit for a server that lacks 8BITMIME (RFC 6152 §3:
//! a client must convert such a message or not send it).
//!
//! As Postfix does, every leaf part whose body holds 8-bit octets and is
//! labelled `7bit`, `8bit` or nothing is re-encoded quoted-printable (RFC
//! 2045 §6.7), which keeps its lines and decodes to the same octets; a
//! multipart or message part labelled `8bit` or `binary` around them is
//! relabelled `7bit`. Everything else is left byte for byte. A message
//! that stays 8-bit after that (8-bit header fields, which need SMTPUTF8;
//! 8-bit preambles; a `base64` part with 8-bit octets; a nested message
//! nobody could parse) cannot be converted: [`to_seven_bit`] says so and
//! the caller refuses it.
//!
//! Conversion changes the body, so a DKIM signature over it no longer
//! verifies; servers without 8BITMIME are rare enough today that this is
//! the price of delivering at all.

use crate::imap::mime::{entity_spans, field_value, squeezed, with_fields};
use std::ops::Range;

/// The longest encoded line, soft line break included (RFC 2045 §6.7 (5)).
const LINE_LIMIT: usize = 76;

/// `message` (CRLF lines) with its 8-bit parts re-encoded so that every
/// octet is 7-bit; `None` when it cannot be (see the module's text).
/// A message that is 7-bit already comes back unchanged.
pub fn to_seven_bit(message: &[u8]) -> Option<Vec<u8>> {
    if message.is_ascii() {
        return Some(message.to_vec());
    }
    let spans = entity_spans(message);
    // The parser is lenient: it takes a boundary in the middle of a line
    // for a delimiter (RFC 2046 §5.1.1 wants one at a line's start), and
    // an edit there would land inside a real part's text. Such a message
    // is refused rather than rewritten in the wrong place.
    if spans
        .iter()
        .any(|span| !span.message && !after_delimiter_line(message, span.header.start))
    {
        return None;
    }
    let mut edits: Vec<(Range<usize>, Vec<u8>)> = Vec::new();
    for span in &spans {
        let body = message.get(span.body.clone())?;
        let header = message.get(span.header.clone())?;
        // Without comments (`8bit (raw)`) or blanks, in lower case.
        let encoding = field_value(header, "content-transfer-encoding").map(|v| squeezed(&v));
        if body.is_ascii() {
            // Labelled 8-bit with nothing 8-bit in it: told the truth, as
            // the rest of the message is about to be 7-bit.
            if matches!(encoding.as_deref(), Some(b"8bit")) {
                let fields = [("Content-Transfer-Encoding", "7bit")];
                edits.push((span.header.clone(), with_fields(header, &fields)?));
            }
            continue;
        }
        let content_type = field_value(header, "content-type");
        let mut fields = Vec::new();
        if span.leaf {
            match encoding.as_deref() {
                None | Some(b"7bit" | b"8bit") => {}
                // base64, quoted-printable or binary holding 8-bit octets: not
                // text we could re-encode without guessing.
                Some(_) => return None,
            }
            // A composite type read as a leaf (nested too deep, or
            // message/partial): RFC 2046 §5.2 forbids it any encoding.
            let declared = content_type.as_deref().unwrap_or_default();
            let is = |prefix: &[u8]| {
                declared.len() >= prefix.len()
                    && declared[..prefix.len()].eq_ignore_ascii_case(prefix)
            };
            if is(b"message/") || is(b"multipart/") {
                return None;
            }
            fields.push(("Content-Transfer-Encoding", "quoted-printable"));
            if span.message && content_type.is_none() {
                // Untyped text is US-ASCII by default (RFC 2045 §5.2): say
                // what its 8-bit octets are, or readers would show them
                // as question marks.
                fields.push((
                    "Content-Type",
                    match std::str::from_utf8(body) {
                        Ok(_) => "text/plain; charset=utf-8",
                        Err(_) => "text/plain; charset=unknown-8bit",
                    },
                ));
            }
        } else if matches!(encoding.as_deref(), Some(b"8bit" | b"binary")) {
            // Its parts are about to be 7-bit; RFC 2045 §6.4 forbids any
            // other encoding of a composite type.
            fields.push(("Content-Transfer-Encoding", "7bit"));
        }
        if span.message && field_value(header, "mime-version").is_none() {
            // Without it the new encoding field would mean nothing (RFC 2045 §4).
            fields.push(("MIME-Version", "1.0"));
        }
        if !fields.is_empty() {
            edits.push((span.header.clone(), with_fields(header, &fields)?));
        }
        if span.leaf {
            edits.push((span.body.clone(), quoted_printable(body)));
        }
    }
    let converted = apply(message, edits)?;
    converted.is_ascii().then_some(converted)
}

/// Whether the line before `at` (where a body part's header starts) is a
/// boundary delimiter line: it starts with `--`.
fn after_delimiter_line(message: &[u8], at: usize) -> bool {
    let Some(before) = message.get(..at).and_then(|b| b.strip_suffix(b"\n")) else {
        return false;
    };
    let line_start = memchr::memrchr(b'\n', before).map_or(0, |i| i + 1);
    before[line_start..].starts_with(b"--")
}

/// `message` with each range replaced; `None` if ranges overlap (a part
/// whose place the parser got wrong: better refused than garbled).
fn apply(message: &[u8], mut edits: Vec<(Range<usize>, Vec<u8>)>) -> Option<Vec<u8>> {
    edits.sort_by_key(|(range, _)| range.start);
    let added: usize = edits.iter().map(|(_, bytes)| bytes.len()).sum();
    let removed: usize = edits.iter().map(|(range, _)| range.len()).sum();
    let mut out = Vec::with_capacity((message.len() + added).saturating_sub(removed));
    let mut at = 0;
    for (range, bytes) in edits {
        out.extend_from_slice(message.get(at..range.start)?);
        out.extend_from_slice(&bytes);
        at = range.end;
    }
    out.extend_from_slice(message.get(at..)?);
    Some(out)
}

/// `body` quoted-printable: CRLF ends stay hard line breaks, any other
/// CR or LF is encoded, lines are wrapped with soft breaks. A line that a
/// soft break starts never begins with a literal `-` or `.`: it could
/// otherwise read as a MIME boundary (`--b1--` cut out of the middle of
/// a line) and end the part, or the message, early.
pub fn quoted_printable(body: &[u8]) -> Vec<u8> {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = Vec::with_capacity(body.len() + body.len() / 4 + 8);
    let mut column = 0;
    let mut at = 0;
    while let Some(&octet) = body.get(at) {
        if body[at..].starts_with(b"\r\n") {
            out.extend_from_slice(b"\r\n");
            column = 0;
            at += 2;
            continue;
        }
        at += 1;
        let line_ends = at == body.len() || body[at..].starts_with(b"\r\n");
        let literal = match octet {
            b'=' => false,
            // Blanks at the end of a line may be lost in transit (§6.7 (3)).
            b' ' | b'\t' => !line_ends,
            33..=126 => true,
            _ => false,
        };
        let mut literal = literal;
        let mut width = if literal { 1 } else { 3 };
        // Room is kept for the `=` of a soft break, except after the last
        // octet of a line, which needs none.
        let room = if line_ends {
            LINE_LIMIT
        } else {
            LINE_LIMIT - 1
        };
        if column + width > room {
            out.extend_from_slice(b"=\r\n");
            column = 0;
            if matches!(octet, b'-' | b'.') {
                (literal, width) = (false, 3);
            }
        }
        if literal {
            out.push(octet);
        } else {
            out.extend_from_slice(&[
                b'=',
                HEX[usize::from(octet >> 4)],
                HEX[usize::from(octet & 0x0f)],
            ]);
        }
        column += width;
    }
    out
}

/// Quoted-printable decoded, as strictly as [`quoted_printable`] encodes.
#[cfg(any(test, feature = "fuzzing"))]
fn decode(encoded: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < encoded.len() {
        match encoded[at] {
            b'=' if encoded[at + 1..].starts_with(b"\r\n") => at += 3,
            b'=' => {
                let hex = std::str::from_utf8(&encoded[at + 1..at + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                at += 3;
            }
            octet => {
                out.push(octet);
                at += 1;
            }
        }
    }
    out
}

#[cfg(any(test, feature = "fuzzing"))]
fn lines_fit(encoded: &[u8]) {
    for line in encoded.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        assert!(
            line.len() <= LINE_LIMIT,
            "{:?}",
            String::from_utf8_lossy(line)
        );
    }
}

/// What the fuzz target checks of any input: quoted-printable is 7-bit,
/// keeps its lines short and decodes to the input; a conversion never
/// panics, comes back 7-bit, and leaves 7-bit input as it was.
#[cfg(any(test, feature = "fuzzing"))]
pub fn check(input: &[u8]) {
    let encoded = quoted_printable(input);
    assert!(encoded.is_ascii());
    lines_fit(&encoded);
    assert_eq!(decode(&encoded), input);
    if let Some(converted) = to_seven_bit(input) {
        assert!(converted.is_ascii());
        if input.is_ascii() {
            assert_eq!(converted, input);
        }
        // The MIME structure is the same: no part lost, none made up.
        let shape = |message: &[u8]| {
            entity_spans(message)
                .iter()
                .map(|span| (span.leaf, span.message))
                .collect::<Vec<_>>()
        };
        assert_eq!(shape(&converted), shape(input));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_printable_round_trips_and_keeps_lines_short() {
        let samples: Vec<Vec<u8>> = vec![
            "Grüße aus Köln\r\n".into(),
            b"trailing blank \r\nand tab\t\r\n".to_vec(),
            "é".repeat(100).into_bytes(),
            [b"x".repeat(200), b"\r\n".to_vec(), b"=".repeat(80)].concat(),
            b"bare\rCR and bare\nLF\r\n".to_vec(),
            [
                b"y".repeat(70),
                b"\n".to_vec(),
                b"z".repeat(70),
                b"\r\n".to_vec(),
            ]
            .concat(),
            (0u8..=255).collect(),
            Vec::new(),
        ];
        for sample in samples {
            let encoded = quoted_printable(&sample);
            assert!(encoded.is_ascii());
            lines_fit(&encoded);
            assert_eq!(
                decode(&encoded),
                sample,
                "{:?}",
                String::from_utf8_lossy(&encoded)
            );
        }
        assert_eq!(quoted_printable(b"a b \r\n"), b"a b=20\r\n");
        // A boundary cut out of the middle of a line stays inside it.
        let line = ["\u{e9}", &"x".repeat(69), "--b1--\r\n"].concat();
        let encoded = String::from_utf8(quoted_printable(line.as_bytes())).unwrap();
        assert!(encoded.lines().all(|l| !l.starts_with('-')), "{encoded}");
        assert_eq!(decode(encoded.as_bytes()), line.as_bytes());
        assert_eq!(quoted_printable("ü=\r\n".as_bytes()), b"=C3=BC=3D\r\n");
    }

    #[test]
    fn a_plain_8bit_message_becomes_quoted_printable_mime() {
        let message = "From: a@x.test\r\nSubject: hi\r\n\r\nGrüße\r\n".as_bytes();
        let converted = to_seven_bit(message).unwrap();
        assert_eq!(
            String::from_utf8(converted).unwrap(),
            "From: a@x.test\r\nSubject: hi\r\nContent-Transfer-Encoding: quoted-printable\r\n\
             Content-Type: text/plain; charset=utf-8\r\nMIME-Version: 1.0\r\n\r\n\
             Gr=C3=BC=C3=9Fe\r\n"
        );
    }

    #[test]
    fn the_encoding_field_is_replaced_where_it_was_folded() {
        let message = "MIME-Version: 1.0\r\nContent-Transfer-Encoding:\r\n 8bit\r\n\
                       Content-Type: text/plain; charset=utf-8\r\n\r\nçà\r\n"
            .as_bytes();
        let converted = String::from_utf8(to_seven_bit(message).unwrap()).unwrap();
        assert_eq!(
            converted,
            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\
             Content-Transfer-Encoding: quoted-printable\r\n\r\n=C3=A7=C3=A0\r\n"
        );
    }

    #[test]
    fn only_the_8bit_parts_of_a_multipart_change() {
        let message = "MIME-Version: 1.0\r\n\
            Content-Type: multipart/mixed; boundary=\"b1\"\r\n\
            Content-Transfer-Encoding: 8bit\r\n\r\n\
            preamble\r\n\
            --b1\r\nContent-Type: text/plain\r\n\r\nplain ascii\r\n\
            --b1\r\nContent-Type: text/plain; charset=utf-8\r\n\
            Content-Transfer-Encoding: 8bit\r\n\r\nnaïve\r\n\
            --b1\r\nContent-Type: message/rfc822\r\n\r\n\
            Subject: inner\r\n\r\nsmörgåsbord\r\n\
            --b1--\r\nepilogue\r\n"
            .as_bytes();
        let converted = String::from_utf8(to_seven_bit(message).unwrap()).unwrap();
        assert_eq!(
            converted,
            "MIME-Version: 1.0\r\n\
            Content-Type: multipart/mixed; boundary=\"b1\"\r\n\
            Content-Transfer-Encoding: 7bit\r\n\r\n\
            preamble\r\n\
            --b1\r\nContent-Type: text/plain\r\n\r\nplain ascii\r\n\
            --b1\r\nContent-Type: text/plain; charset=utf-8\r\n\
            Content-Transfer-Encoding: quoted-printable\r\n\r\nna=C3=AFve\r\n\
            --b1\r\nContent-Type: message/rfc822\r\n\r\n\
            Subject: inner\r\nContent-Transfer-Encoding: quoted-printable\r\n\
            Content-Type: text/plain; charset=utf-8\r\n\
            MIME-Version: 1.0\r\n\r\nsm=C3=B6rg=C3=A5sbord\r\n\
            --b1--\r\nepilogue\r\n"
        );
    }

    #[test]
    fn what_cannot_be_made_7bit_is_refused() {
        let refused: [&[u8]; 6] = [
            // An 8-bit header field needs SMTPUTF8, not a new encoding.
            "Subject: Grüße\r\n\r\nbody\r\n".as_bytes(),
            // base64 does not hold 8-bit octets; re-encoding would guess.
            "MIME-Version: 1.0\r\nContent-Transfer-Encoding: base64\r\n\r\nü\r\n".as_bytes(),
            // An 8-bit preamble belongs to no part.
            "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n\
             préambule\r\n--b\r\n\r\nx\r\n--b--\r\n"
                .as_bytes(),
            // A fragment of a message may be given no encoding (RFC 2046 §5.2.2).
            "MIME-Version: 1.0\r\nContent-Type: message/partial; id=x\r\n\r\n\u{e9}\r\n".as_bytes(),
            // A boundary in the middle of a line is no delimiter: the
            // lenient parser's parts cannot be trusted for an edit.
            "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n\
             --b\r\n\r\nsee x--b\r\nContent-Type: text/plain\r\n\r\nfake \u{e9}\r\n--b--\r\n"
                .as_bytes(),
            // A header without its blank line.
            "From: a@x.test\r\nX: \u{e9}".as_bytes(),
        ];
        for message in refused {
            assert_eq!(
                to_seven_bit(message),
                None,
                "{:?}",
                String::from_utf8_lossy(message)
            );
        }
    }

    #[test]
    fn labels_are_read_without_comments_and_made_true() {
        let message = "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n\
            --b\r\nContent-Transfer-Encoding: 8bit (raw)\r\n\r\n\u{e9}\r\n\
            --b\r\nContent-Transfer-Encoding: 8BIT\r\n\r\nascii\r\n--b--\r\n"
            .as_bytes();
        let converted = String::from_utf8(to_seven_bit(message).unwrap()).unwrap();
        assert_eq!(
            converted,
            "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n\
            --b\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n=C3=A9\r\n\
            --b\r\nContent-Transfer-Encoding: 7bit\r\n\r\nascii\r\n--b--\r\n"
        );
    }

    #[test]
    fn seven_bit_mail_is_left_alone() {
        let message = b"Subject: x\r\nContent-Transfer-Encoding: 8bit\r\n\r\nascii\r\n";
        assert_eq!(to_seven_bit(message).unwrap(), message);
    }

    #[test]
    fn random_bytes_never_panic_and_never_come_back_8bit() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let pieces: [&[u8]; 10] = [
            b"\r\n",
            b"Content-Type: multipart/mixed; boundary=q\r\n",
            b"--q\r\n",
            b"--q--\r\n",
            b"Content-Transfer-Encoding: 8bit\r\n",
            b"Content-Type: message/rfc822\r\n",
            "é".as_bytes(),
            b"text ",
            b"\xff\xfe",
            b"Subject: s\r\n",
        ];
        for _ in 0..2_000 {
            let mut message = Vec::new();
            for _ in 0..(state % 24) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                message.extend_from_slice(pieces[(state % pieces.len() as u64) as usize]);
            }
            check(&message);
        }
    }
}
