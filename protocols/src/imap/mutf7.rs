//! Modified UTF-7 (RFC 3501 §5.1.3): how IMAP4rev1 clients write mailbox
//! names that are not ASCII. IMAP4rev2 (RFC 9051) uses UTF-8 instead; a
//! server that speaks both keeps names in UTF-8 and converts for the
//! IMAP4rev1 sessions, in both directions.
//!
//! Printable ASCII stands for itself, except `&`, written `&-`; anything
//! else is UTF-16BE in a modified base64 (`,` for `/`, no padding) between
//! `&` and `-`.

use base64::alphabet::Alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;

/// The modified base64 of RFC 3501: `,` instead of `/`, no padding, and no
/// stray bits at the end (a name has one spelling).
fn engine() -> GeneralPurpose {
    let alphabet =
        Alphabet::new("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,")
            .expect("64 distinct printable characters");
    GeneralPurpose::new(
        &alphabet,
        GeneralPurposeConfig::new()
            .with_encode_padding(false)
            .with_decode_padding_mode(DecodePaddingMode::RequireNone)
            .with_decode_allow_trailing_bits(false),
    )
}

fn is_direct(c: char) -> bool {
    matches!(c, ' '..='~') && c != '&'
}

/// `name` (UTF-8) as an IMAP4rev1 client writes it.
pub fn encode(name: &str) -> String {
    let engine = engine();
    let mut out = String::with_capacity(name.len());
    let mut chars = name.chars().peekable();
    while let Some(c) = chars.next() {
        if is_direct(c) {
            out.push(c);
            continue;
        }
        if c == '&' {
            out.push_str("&-");
            continue;
        }
        // A run of characters that are not printable ASCII: one shift.
        let mut units = Vec::new();
        let mut push = |c: char| {
            let mut buf = [0u16; 2];
            for unit in c.encode_utf16(&mut buf) {
                units.extend_from_slice(&unit.to_be_bytes());
            }
        };
        push(c);
        while let Some(&next) = chars.peek() {
            if next == '&' || is_direct(next) {
                break;
            }
            push(next);
            chars.next();
        }
        out.push('&');
        out.push_str(&engine.encode(&units));
        out.push('-');
    }
    out
}

/// The UTF-8 name an IMAP4rev1 client's `name` stands for; `None` when it
/// is not modified UTF-7 (a bare `&`, a shift left open, bad base64, an
/// odd byte or a lone surrogate, printable ASCII shifted, a character
/// outside printable ASCII unshifted).
pub fn decode(name: &str) -> Option<String> {
    let engine = engine();
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(at) = rest.find(|c: char| c == '&' || !is_direct(c)) {
        out.push_str(&rest[..at]);
        if !rest[at..].starts_with('&') {
            return None;
        }
        let shifted = &rest[at + 1..];
        let end = shifted.find('-')?;
        if end == 0 {
            out.push('&');
        } else {
            let bytes = engine.decode(&shifted[..end]).ok()?;
            if bytes.len() % 2 != 0 {
                return None;
            }
            let units = bytes
                .chunks(2)
                .map(|pair| u16::from_be_bytes([pair[0], pair[1]]));
            for c in char::decode_utf16(units) {
                // Printable ASCII is never shifted: one spelling per name.
                match c.ok()? {
                    ' '..='~' => return None,
                    c => out.push(c),
                }
            }
        }
        rest = &shifted[end + 1..];
    }
    out.push_str(rest);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_as_rfc_3501_writes_them() {
        for (utf8, mutf7) in [
            ("INBOX", "INBOX"),
            ("Entwürfe", "Entw&APw-rfe"),
            ("~peter/mail/台北/日本語", "~peter/mail/&U,BTFw-/&ZeVnLIqe-"),
            ("Tom & Jerry", "Tom &- Jerry"),
            ("Gesendete Objekte", "Gesendete Objekte"),
            ("😀", "&2D3eAA-"),
            ("", ""),
        ] {
            assert_eq!(encode(utf8), mutf7, "{utf8}");
            assert_eq!(decode(mutf7).as_deref(), Some(utf8), "{mutf7}");
        }
    }

    #[test]
    fn what_is_not_modified_utf7_is_refused() {
        for bad in [
            "a&b",       // a shift left open
            "&Jjo!",     // not base64, never closed
            "&AGE",      // no closing dash
            "&AP-",      // one byte: half a UTF-16 unit
            "&2D0-",     // a lone high surrogate
            "caf\u{e9}", // 8-bit: not IMAP4rev1's form
            "a\tb",      // a control character
            "&AGE-",     // "a", shifted: printable ASCII stands for itself
            "&AC8-",     // "/" the same way, a hierarchy delimiter in disguise
        ] {
            assert_eq!(decode(bad), None, "{bad}");
        }
    }
}
