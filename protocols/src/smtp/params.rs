//! ESMTP parameters after the path of MAIL and RCPT (RFC 5321 §4.1.2).
//!
//! # Format
//! `keyword[=value] *(SP keyword[=value])`, keyword = alphanumeric start then
//! alphanumerics and hyphens, value = printable ASCII except `=` (or, with
//! SMTPUTF8, any non-ASCII character; RFC 6531 §3.3).
//!
//! MAIL understands `SIZE=n` (RFC 1870), `BODY=7BIT|8BITMIME` (RFC 6152),
//! `SMTPUTF8` (RFC 6531), `AUTH=` (RFC 4954 §5, checked and discarded), and
//! DSN's `RET=` and `ENVID=`; RCPT understands DSN's `NOTIFY=` and `ORCPT=`
//! (RFC 3461, see [`super::dsn_request`]). A malformed parameter earns 501; a
//! well-formed unknown one earns 555 (RFC 5321 §4.1.1.11).

use super::dsn_request::{self, Notify, RecipientRequest, Ret};
use super::replies::{self, Reply};
use super::BodyType;

/// What MAIL FROM's parameters asked for.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct MailParams {
    /// SIZE=: the client's estimate of the message size.
    pub(super) size: Option<usize>,
    /// BODY=.
    pub(super) body: BodyType,
    /// SMTPUTF8 was given.
    pub(super) smtputf8: bool,
    /// RET= (DSN).
    pub(super) ret: Option<Ret>,
    /// ENVID= (DSN), as given (xtext).
    pub(super) envid: Option<String>,
}

impl MailParams {
    /// Parse MAIL's parameter text; `max_size` is the SIZE we advertise.
    pub(super) fn parse(text: &str, max_size: usize) -> Result<Self, Reply> {
        let mut params = MailParams::default();
        let mut seen_body = false;
        let mut seen_auth = false;
        for param in split(text) {
            let (keyword, value) = param?;
            if keyword.eq_ignore_ascii_case("SIZE") {
                if params.size.is_some() {
                    return Err(replies::PARAM_SYNTAX);
                }
                let digits = value
                    .filter(|v| v.bytes().all(|b| b.is_ascii_digit()))
                    .ok_or(replies::SIZE_SYNTAX)?;
                // All digits but too big for usize is certainly over the limit.
                match digits.parse::<usize>() {
                    Ok(size) if size <= max_size => params.size = Some(size),
                    _ => return Err(replies::MESSAGE_TOO_BIG),
                }
            } else if keyword.eq_ignore_ascii_case("BODY") {
                if seen_body {
                    return Err(replies::PARAM_SYNTAX);
                }
                seen_body = true;
                params.body = match value {
                    Some(v) if v.eq_ignore_ascii_case("7BIT") => BodyType::SevenBit,
                    Some(v) if v.eq_ignore_ascii_case("8BITMIME") => BodyType::EightBitMime,
                    // RFC 3030's, which is not offered: known, not implemented.
                    Some(v) if v.eq_ignore_ascii_case("BINARYMIME") => {
                        return Err(replies::UNKNOWN_PARAM)
                    }
                    _ => return Err(replies::BODY_SYNTAX),
                };
            } else if keyword.eq_ignore_ascii_case("AUTH") {
                // RFC 4954 §5: who the message was submitted by, as a relay
                // that authenticated to us says it. Checked, then
                // discarded: the minimum the RFC allows, and what a server
                // that does not trust the claim should do.
                if seen_auth || !value.is_some_and(is_auth_value) {
                    return Err(replies::PARAM_SYNTAX);
                }
                seen_auth = true;
            } else if keyword.eq_ignore_ascii_case("SMTPUTF8") {
                if params.smtputf8 {
                    return Err(replies::PARAM_SYNTAX);
                }
                if value.is_some() {
                    return Err(replies::SMTPUTF8_SYNTAX);
                }
                params.smtputf8 = true;
            } else if keyword.eq_ignore_ascii_case("RET") {
                if params.ret.is_some() {
                    return Err(replies::PARAM_SYNTAX);
                }
                params.ret = Some(value.and_then(Ret::parse).ok_or(replies::PARAM_SYNTAX)?);
            } else if keyword.eq_ignore_ascii_case("ENVID") {
                match value {
                    Some(v) if params.envid.is_none() && dsn_request::is_envid(v) => {
                        params.envid = Some(v.to_owned())
                    }
                    _ => return Err(replies::PARAM_SYNTAX),
                }
            } else {
                return Err(replies::UNKNOWN_PARAM);
            }
        }
        Ok(params)
    }
}

/// Whether `value` is an AUTH parameter's: `<>`, or an address in xtext
/// (RFC 3461 §4: printable ASCII but `+` and `=`, those as `+XX` in hex).
fn is_auth_value(value: &str) -> bool {
    value == "<>" || dsn_request::is_xtext(value)
}

/// Parse RCPT's parameter text: DSN's NOTIFY and ORCPT, each at most once;
/// `smtputf8`: the transaction is SMTPUTF8 (ORCPT may be UTF-8).
pub(super) fn parse_rcpt(text: &str, smtputf8: bool) -> Result<RecipientRequest, Reply> {
    let mut request = RecipientRequest::default();
    for param in split(text) {
        let (keyword, value) = param?;
        if keyword.eq_ignore_ascii_case("NOTIFY") {
            match value.and_then(Notify::parse) {
                Some(notify) if request.notify.is_none() => request.notify = Some(notify),
                _ => return Err(replies::PARAM_SYNTAX),
            }
        } else if keyword.eq_ignore_ascii_case("ORCPT") {
            match value {
                Some(v) if request.orcpt.is_none() && dsn_request::is_orcpt(v, smtputf8) => {
                    request.orcpt = Some(v.to_owned())
                }
                _ => return Err(replies::PARAM_SYNTAX),
            }
        } else {
            return Err(replies::UNKNOWN_PARAM);
        }
    }
    Ok(request)
}

/// The `(keyword, value)` pairs of a parameter text, or 501 for the first
/// malformed one.
fn split(text: &str) -> impl Iterator<Item = Result<(&str, Option<&str>), Reply>> {
    text.split(' ').filter(|p| !p.is_empty()).map(|param| {
        let (keyword, value) = match param.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (param, None),
        };
        let keyword_ok = keyword
            .as_bytes()
            .first()
            .is_some_and(u8::is_ascii_alphanumeric)
            && keyword
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        let value_ok = value.is_none_or(|v| {
            !v.is_empty()
                && v.bytes()
                    .all(|b| matches!(b, 33..=60 | 62..=126) || b >= 0x80)
        });
        if keyword_ok && value_ok {
            Ok((keyword, value))
        } else {
            Err(replies::PARAM_SYNTAX)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mail_params() {
        let p = MailParams::parse("SIZE=100 body=8bitmime SMTPUTF8", 1000).unwrap();
        assert_eq!(
            p,
            MailParams {
                size: Some(100),
                body: BodyType::EightBitMime,
                smtputf8: true,
                ..MailParams::default()
            }
        );
        let p = MailParams::parse("RET=hdrs ENVID=QQ+2B314", 1000).unwrap();
        assert_eq!(p.ret, Some(Ret::Headers));
        assert_eq!(p.envid.as_deref(), Some("QQ+2B314"));
        assert_eq!(MailParams::parse("", 1000).unwrap(), MailParams::default());
        assert_eq!(
            MailParams::parse("BODY=7BIT", 1000).unwrap().body,
            BodyType::SevenBit
        );
        // RFC 4954 §5: accepted and discarded, whoever it names.
        for auth in [
            "AUTH=<>",
            "AUTH=alice@example.org",
            "auth=e+3Dmc2@example.org",
        ] {
            assert_eq!(
                MailParams::parse(&format!("SIZE=5 {auth}"), 1000).unwrap(),
                MailParams {
                    size: Some(5),
                    ..MailParams::default()
                },
                "{auth}"
            );
        }
    }

    #[test]
    fn mail_param_errors() {
        let err = |text| MailParams::parse(text, 1000).unwrap_err();
        assert_eq!(err("SIZE=1001"), replies::MESSAGE_TOO_BIG);
        assert_eq!(
            err("SIZE=99999999999999999999999"),
            replies::MESSAGE_TOO_BIG
        );
        assert_eq!(err("SIZE=abc"), replies::SIZE_SYNTAX);
        assert_eq!(err("SIZE"), replies::SIZE_SYNTAX);
        assert_eq!(err("SIZE=-1"), replies::SIZE_SYNTAX);
        assert_eq!(err("BODY=BINARYMIME"), replies::UNKNOWN_PARAM);
        assert_eq!(err("BODY=9BIT"), replies::BODY_SYNTAX);
        assert_eq!(err("AUTH=a+4"), replies::PARAM_SYNTAX);
        assert_eq!(err("AUTH=a+zz@b"), replies::PARAM_SYNTAX);
        assert_eq!(err("AUTH=<> AUTH=<>"), replies::PARAM_SYNTAX);
        assert_eq!(err("AUTH"), replies::PARAM_SYNTAX);
        assert_eq!(err("BODY"), replies::BODY_SYNTAX);
        assert_eq!(err("SMTPUTF8=yes"), replies::SMTPUTF8_SYNTAX);
        assert_eq!(err("SIZE=1 SIZE=2"), replies::PARAM_SYNTAX);
        assert_eq!(err("XFORWARD=1"), replies::UNKNOWN_PARAM);
        assert_eq!(err("RET=BODY"), replies::PARAM_SYNTAX);
        assert_eq!(err("RET=FULL RET=FULL"), replies::PARAM_SYNTAX);
        assert_eq!(err("ENVID=a=b"), replies::PARAM_SYNTAX);
        assert_eq!(err("ENVID=a ENVID=b"), replies::PARAM_SYNTAX);
        let long_envid = format!("ENVID={}", "x".repeat(101));
        assert_eq!(err(&long_envid), replies::PARAM_SYNTAX);
        assert_eq!(err("=x"), replies::PARAM_SYNTAX);
        assert_eq!(err("SIZE="), replies::PARAM_SYNTAX);
        assert_eq!(err("-X"), replies::PARAM_SYNTAX);
    }

    #[test]
    fn rcpt_params() {
        assert_eq!(parse_rcpt("", false), Ok(RecipientRequest::default()));
        let request =
            parse_rcpt("notify=SUCCESS,FAILURE ORCPT=rfc822;b+2Bx@y.test", false).unwrap();
        assert_eq!(request.notify, Notify::parse("SUCCESS,FAILURE"));
        assert_eq!(request.orcpt.as_deref(), Some("rfc822;b+2Bx@y.test"));
        assert_eq!(parse_rcpt("NOT=IFY=x", false), Err(replies::PARAM_SYNTAX));
        assert_eq!(parse_rcpt("XYZ=1", false), Err(replies::UNKNOWN_PARAM));
        for bad in [
            "NOTIFY=NEVER,SUCCESS",
            "NOTIFY",
            "NOTIFY=NEVER NOTIFY=NEVER",
            "ORCPT=bob@y.test",
            "ORCPT=rfc822;a ORCPT=rfc822;b",
        ] {
            assert_eq!(parse_rcpt(bad, true), Err(replies::PARAM_SYNTAX), "{bad}");
        }
    }
}
