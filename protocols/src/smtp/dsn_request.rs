//! What a sender asks of delivery status notifications: the DSN SMTP
//! extension's parameters (RFC 3461).
//!
//! - `NOTIFY=` on RCPT (§4.1): when to report on that recipient: `NEVER`, or
//!   any of `SUCCESS`, `FAILURE`, `DELAY`. Without it an MTA reports
//!   failures and (if it sends them) delays.
//! - `ORCPT=` on RCPT (§4.2): the recipient's address as the sender first
//!   gave it, `addr-type;xtext`, for the report's `Original-Recipient:`.
//! - `RET=` on MAIL (§4.3): whether a DSN returns the full message or its
//!   headers.
//! - `ENVID=` on MAIL (§4.4): the sender's own id for the transaction, for
//!   the report's `Original-Envelope-Id:`.
//!
//! ORCPT and ENVID are kept as the client wrote them (xtext), which is what
//! a relay passes on (§5.2); [`xtext_decode`] gives the text for a report.

/// `NOTIFY=`: a set of conditions, empty for `NEVER`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Notify(u8);

impl Notify {
    const SUCCESS: u8 = 1;
    const FAILURE: u8 = 2;
    const DELAY: u8 = 4;

    /// `NOTIFY=NEVER`.
    pub const NEVER: Notify = Notify(0);

    /// Parse the parameter's value: `NEVER` alone, or a comma-separated
    /// list of `SUCCESS`, `FAILURE` and `DELAY`, each at most once (any
    /// case). None when malformed.
    pub fn parse(value: &str) -> Option<Notify> {
        if value.eq_ignore_ascii_case("NEVER") {
            return Some(Notify::NEVER);
        }
        let mut bits = 0;
        for word in value.split(',') {
            let bit = match word.to_ascii_uppercase().as_str() {
                "SUCCESS" => Self::SUCCESS,
                "FAILURE" => Self::FAILURE,
                "DELAY" => Self::DELAY,
                _ => return None,
            };
            if bits & bit != 0 {
                return None;
            }
            bits |= bit;
        }
        Some(Notify(bits))
    }

    /// The set as stored: three bits.
    pub fn bits(self) -> u8 {
        self.0
    }

    /// A set from [`Notify::bits`]; bits beyond the three are ignored.
    pub fn from_bits(bits: u8) -> Notify {
        Notify(bits & (Self::SUCCESS | Self::FAILURE | Self::DELAY))
    }

    /// The same conditions less success (what an alias's several
    /// addresses are asked once the alias is reported expanded).
    pub fn without_success(self) -> Notify {
        Notify(self.0 & !Self::SUCCESS)
    }

    /// Failures alone of the same conditions (what is kept for mail whose
    /// sender nobody vouched for: a success or delay report to a forged
    /// sender would carry the stranger's message to whoever it names).
    pub fn failures_only(self) -> Notify {
        Notify(self.0 & Self::FAILURE)
    }

    /// Whether a successful delivery is to be reported.
    pub fn on_success(self) -> bool {
        self.0 & Self::SUCCESS != 0
    }

    /// Whether a failure is to be reported.
    pub fn on_failure(self) -> bool {
        self.0 & Self::FAILURE != 0
    }

    /// Whether a delay is to be reported.
    pub fn on_delay(self) -> bool {
        self.0 & Self::DELAY != 0
    }

    /// The parameter's value, as a relay passes it on.
    pub fn value(self) -> String {
        if self.0 == 0 {
            return "NEVER".into();
        }
        let names = [
            (Self::SUCCESS, "SUCCESS"),
            (Self::FAILURE, "FAILURE"),
            (Self::DELAY, "DELAY"),
        ];
        let words: Vec<&str> = names
            .iter()
            .filter(|(bit, _)| self.0 & bit != 0)
            .map(|(_, name)| *name)
            .collect();
        words.join(",")
    }
}

/// Whether a failure is reported for a recipient with this NOTIFY (or
/// none: failures are reported by default, RFC 3461 §4.1).
pub fn reports_failure(notify: Option<Notify>) -> bool {
    notify.is_none_or(Notify::on_failure)
}

/// `RET=`: how much of the message a DSN returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ret {
    /// `RET=FULL`: the whole message.
    Full,
    /// `RET=HDRS`: its header section.
    Headers,
}

impl Ret {
    /// Parse the parameter's value (any case).
    pub fn parse(value: &str) -> Option<Ret> {
        if value.eq_ignore_ascii_case("FULL") {
            Some(Ret::Full)
        } else if value.eq_ignore_ascii_case("HDRS") {
            Some(Ret::Headers)
        } else {
            None
        }
    }

    /// The parameter's value.
    pub fn value(self) -> &'static str {
        match self {
            Ret::Full => "FULL",
            Ret::Headers => "HDRS",
        }
    }
}

/// The longest ENVID, in octets of xtext (RFC 3461 §4.4: 100 characters).
pub const MAX_ENVID_LEN: usize = 100;

/// The longest ORCPT, `addr-type;xtext` (RFC 3461 §4.2: 500 characters).
pub const MAX_ORCPT_LEN: usize = 500;

/// What RCPT's DSN parameters asked for one recipient.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecipientRequest {
    /// NOTIFY=, if given.
    pub notify: Option<Notify>,
    /// ORCPT=, as given: `addr-type;xtext`.
    pub orcpt: Option<String>,
}

impl RecipientRequest {
    /// Whether the client gave neither parameter.
    pub fn is_empty(&self) -> bool {
        self.notify.is_none() && self.orcpt.is_none()
    }
}

/// Whether `value` is a valid ENVID: non-empty xtext of at most
/// [`MAX_ENVID_LEN`] octets.
pub fn is_envid(value: &str) -> bool {
    value.len() <= MAX_ENVID_LEN && is_xtext(value)
}

/// Whether `value` is a valid ORCPT: `addr-type ";" xtext` (the type an
/// atom, e.g. `rfc822`), at most [`MAX_ORCPT_LEN`] octets. In an SMTPUTF8
/// transaction (`utf8`) a `utf-8` address may also be RFC 6533's
/// utf-8-addr-unitext: UTF-8 as it is.
pub fn is_orcpt(value: &str, utf8: bool) -> bool {
    let Some((kind, address)) = value.split_once(';') else {
        return false;
    };
    let atom = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b);
    let unitext = || utf8 && kind.eq_ignore_ascii_case("utf-8") && is_unitext(address);
    value.len() <= MAX_ORCPT_LEN
        && !kind.is_empty()
        && kind.bytes().all(atom)
        && (is_xtext(address) || unitext())
}

/// Whether `value` is RFC 6533's utf-8-addr-unitext: printable ASCII but
/// `+`, `=` and `\`, non-ASCII characters, and `\x{HEX}` escapes.
fn is_unitext(value: &str) -> bool {
    let mut rest = value;
    while let Some(c) = rest.chars().next() {
        if let Some(after) = rest.strip_prefix("\\x{") {
            let Some((hex, tail)) = after.split_once('}') else {
                return false;
            };
            if !(1..=6).contains(&hex.len()) || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return false;
            }
            rest = tail;
            continue;
        }
        let ok = match c {
            '+' | '=' | '\\' => false,
            c if c.is_ascii() => c.is_ascii_graphic(),
            c => !c.is_control() && !c.is_whitespace(),
        };
        if !ok {
            return false;
        }
        rest = &rest[c.len_utf8()..];
    }
    !value.is_empty()
}

/// ORCPT's address for `Original-Recipient:` (RFC 3464 §2.3.1 wants the
/// type and the decoded address): `rfc822;bob@example.org`; a `utf-8`
/// unitext address as it was given. None when it does not decode to
/// printable text.
pub fn orcpt_for_report(orcpt: &str) -> Option<String> {
    let (kind, address) = orcpt.split_once(';')?;
    match xtext_decode(address) {
        Some(decoded) => Some(format!("{kind};{decoded}")),
        None if is_unitext(address) => Some(orcpt.to_owned()),
        None => None,
    }
}

/// Whether `value` is xtext (RFC 3461 §4): non-empty, printable ASCII
/// except `+` and `=`, which are written `+XX` (two upper-case hex digits).
pub fn is_xtext(value: &str) -> bool {
    xtext_decode(value).is_some()
}

/// `text` (printable ASCII) as xtext: `+`, `=` and anything else outside
/// `!`..`~` written `+XX`.
pub fn xtext_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'+' | b'=' => out.push_str(&format!("+{byte:02X}")),
            33..=126 => out.push(char::from(byte)),
            _ => out.push_str(&format!("+{byte:02X}")),
        }
    }
    out
}

/// The text an xtext stands for; None when `value` is not xtext or
/// decodes to something other than printable ASCII and spaces.
pub fn xtext_decode(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut out = String::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => {
                let digit = |b: u8| match b {
                    b'0'..=b'9' => Some(b - b'0'),
                    b'A'..=b'F' => Some(b - b'A' + 10),
                    _ => None,
                };
                let high = digit(*bytes.get(i + 1)?)?;
                let low = digit(*bytes.get(i + 2)?)?;
                let byte = (high << 4) | low;
                if !(byte == b' ' || byte.is_ascii_graphic()) {
                    return None;
                }
                out.push(char::from(byte));
                i += 3;
            }
            b @ (33..=42 | 44..=60 | 62..=126) => {
                out.push(char::from(b));
                i += 1;
            }
            _ => return None,
        }
    }
    (!out.is_empty()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_is_never_alone_or_a_set_without_repeats() {
        assert_eq!(Notify::parse("never"), Some(Notify::NEVER));
        let n = Notify::parse("success,Failure").unwrap();
        assert!(n.on_success() && n.on_failure() && !n.on_delay());
        assert_eq!(n.value(), "SUCCESS,FAILURE");
        assert_eq!(Notify::parse("DELAY").unwrap().value(), "DELAY");
        assert_eq!(Notify::NEVER.value(), "NEVER");
        for bad in ["", "NEVER,SUCCESS", "SUCCESS,SUCCESS", "SUCCESS,", "ALWAYS"] {
            assert_eq!(Notify::parse(bad), None, "{bad}");
        }
        assert_eq!(Notify::from_bits(n.bits()), n);
        assert_eq!(Notify::from_bits(0xff).bits(), 7);
    }

    #[test]
    fn failures_are_reported_unless_notify_leaves_them_out() {
        assert!(reports_failure(None));
        assert!(reports_failure(Notify::parse("FAILURE,DELAY")));
        assert!(!reports_failure(Notify::parse("SUCCESS")));
        assert!(!reports_failure(Some(Notify::NEVER)));
    }

    #[test]
    fn ret_is_full_or_hdrs() {
        assert_eq!(Ret::parse("full"), Some(Ret::Full));
        assert_eq!(Ret::parse("HDRS"), Some(Ret::Headers));
        assert_eq!(Ret::parse("HEADERS"), None);
        assert_eq!(Ret::Headers.value(), "HDRS");
    }

    #[test]
    fn xtext_encoding_round_trips() {
        for text in ["bob@example.test", "a+b=c@x.test", "with space@x"] {
            let encoded = xtext_encode(text);
            assert!(is_xtext(&encoded), "{encoded}");
            assert_eq!(xtext_decode(&encoded).as_deref(), Some(text));
        }
        assert_eq!(xtext_encode("a+b=c"), "a+2Bb+3Dc");
        let all = Notify::parse("SUCCESS,FAILURE,DELAY").unwrap();
        assert_eq!(all.without_success().value(), "FAILURE,DELAY");
        assert_eq!(
            Notify::parse("SUCCESS").unwrap().without_success(),
            Notify::NEVER
        );
    }

    #[test]
    fn xtext_escapes_plus_and_equals_and_nothing_else_unprintable() {
        assert_eq!(xtext_decode("a+2Bb+3Dc").as_deref(), Some("a+b=c"));
        assert_eq!(xtext_decode("x+20y").as_deref(), Some("x y"));
        for bad in ["", "a+b", "a+2b", "a=b", "a b", "a+0D", "a+", "é"] {
            assert_eq!(xtext_decode(bad), None, "{bad}");
        }
        assert!(is_envid(&"x".repeat(MAX_ENVID_LEN)));
        assert!(!is_envid(&"x".repeat(MAX_ENVID_LEN + 1)));
    }

    #[test]
    fn orcpt_in_utf8_is_taken_only_with_smtputf8() {
        assert!(is_orcpt("utf-8;jörg@bücher.test", true));
        assert!(is_orcpt(r"utf-8;j\x{F6}rg@example.test", true));
        assert!(!is_orcpt("utf-8;jörg@bücher.test", false));
        assert!(!is_orcpt("rfc822;jörg@bücher.test", true));
        for bad in [
            "utf-8;a b",
            "utf-8;a=b",
            r"utf-8;ö\x{}",
            r"utf-8;ö\x{zz}",
            "utf-8;ö+",
            "utf-8;",
        ] {
            assert!(!is_orcpt(bad, true), "{bad}");
        }
        assert_eq!(
            orcpt_for_report("utf-8;jörg@bücher.test").as_deref(),
            Some("utf-8;jörg@bücher.test")
        );
    }

    #[test]
    fn orcpt_is_a_type_and_an_xtext_address() {
        assert!(is_orcpt("rfc822;bob@example.org", false));
        assert!(is_orcpt("rfc822;bob+2Btag@example.org", false));
        assert_eq!(
            orcpt_for_report("rfc822;bob+2Btag@example.org").as_deref(),
            Some("rfc822;bob+tag@example.org")
        );
        for bad in [
            "bob@example.org",
            ";bob@x",
            "rfc822;",
            "rf c;x",
            "rfc822;a=b",
        ] {
            assert!(!is_orcpt(bad, false), "{bad}");
        }
        let long = format!("rfc822;{}", "x".repeat(MAX_ORCPT_LEN));
        assert!(!is_orcpt(&long, true));
    }
}
