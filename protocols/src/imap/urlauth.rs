//! URLAUTH (RFC 4467): IMAP URLs that carry their own authorization, so a
//! user can let another party (a submission server, another user, anyone)
//! fetch one message or section without sharing a password.
//!
//! `GENURLAUTH url INTERNAL` answers the URL with `:internal:<token>`
//! appended, the token an HMAC-SHA-256 of the URL up to its access
//! identifier (the "rump") under the mailbox's access key; `URLFETCH url`
//! gives the data of a URL whose token checks out for the caller; `RESETKEY
//! [mailbox]` makes new keys, so every URL made before stops working.
//! URLAUTH=BINARY (RFC 5524) adds the extended URLFETCH, `(url BINARY
//! BODYPARTSTRUCTURE)`: the part decoded, and its structure.
//! imap-codec does not know these commands: [`parse`] reads them.

use imap_codec::encode::Encoder;
use imap_codec::imap_types::body::BodyStructure;
use imap_codec::imap_types::core::Vec1;
use imap_codec::imap_types::fetch::MessageDataItem;
use imap_codec::imap_types::response::{Data, Response};
use imap_codec::ResponseCodec;
use ring::hmac;
use std::num::NonZeroU32;

use super::lexer::{astring, Lexer, Syntax};

/// A URLAUTH command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlAuthCommand {
    /// `GENURLAUTH` of these URLs (each with its mechanism).
    Generate(Vec<(String, String)>),
    /// `URLFETCH` of these URLs.
    Fetch(Vec<UrlFetch>),
    /// `RESETKEY` of one mailbox, or of every one (`None`).
    ResetKey(Option<String>),
}

/// One URL of URLFETCH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlFetch {
    /// The URL.
    pub url: String,
    /// For the extended form (RFC 5524), what to return.
    pub want: Option<FetchWant>,
}

/// What an extended URLFETCH asks of one URL (RFC 5524 §3.1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FetchWant {
    /// The data as stored (`BODY`; also what `(url)` alone means).
    pub body: bool,
    /// The data with its transfer encoding removed (`BINARY`).
    pub binary: bool,
    /// The part's structure (`BODYPARTSTRUCTURE`).
    pub structure: bool,
}

/// If `command` (whole) is a URLAUTH command: its tag and what it asks,
/// or `Err` when it is malformed. `None` for any other command.
pub(crate) fn parse(command: &[u8]) -> Option<Result<(String, UrlAuthCommand), Syntax>> {
    let tag_end = command.iter().position(|&b| b == b' ')?;
    let tag = std::str::from_utf8(&command[..tag_end]).ok()?.to_owned();
    let rest = &command[tag_end + 1..];
    let verb_end = rest
        .iter()
        .position(|&b| b == b' ' || b == b'\r')
        .unwrap_or(rest.len());
    let verb = rest[..verb_end].to_ascii_uppercase();
    if !matches!(verb.as_slice(), b"GENURLAUTH" | b"URLFETCH" | b"RESETKEY") {
        return None;
    }
    let mut lexer = Lexer {
        bytes: command,
        at: tag_end + 1 + verb_end,
    };
    Some(arguments(&verb, &mut lexer).map(|parsed| (tag, parsed)))
}

fn arguments(verb: &[u8], lexer: &mut Lexer<'_>) -> Result<UrlAuthCommand, Syntax> {
    if verb == b"URLFETCH" {
        let mut urls = Vec::new();
        while lexer.keyword(b" ") {
            urls.push(url_fetch(lexer)?);
        }
        if urls.is_empty() || !lexer.keyword(b"\r\n") || lexer.at != lexer.bytes.len() {
            return Err(Syntax);
        }
        return Ok(UrlAuthCommand::Fetch(urls));
    }
    let mut words = Vec::new();
    while lexer.keyword(b" ") {
        words.push(astring(lexer.string()?)?);
    }
    if !lexer.keyword(b"\r\n") || lexer.at != lexer.bytes.len() {
        return Err(Syntax);
    }
    match verb {
        b"GENURLAUTH" if !words.is_empty() && words.len() % 2 == 0 => Ok(UrlAuthCommand::Generate(
            words
                .chunks(2)
                .map(|pair| (pair[0].clone(), pair[1].clone()))
                .collect(),
        )),
        // Mechanisms after the mailbox name only narrow what is reset; we
        // have one, so a reset of the mailbox is all of it.
        b"RESETKEY" => Ok(UrlAuthCommand::ResetKey(words.into_iter().next())),
        _ => Err(Syntax),
    }
}

/// `url` or `(url *(SP param))`: BODY, BINARY, BODYPARTSTRUCTURE, not
/// both BODY and BINARY; no parameter at all means BODY.
fn url_fetch(lexer: &mut Lexer<'_>) -> Result<UrlFetch, Syntax> {
    if lexer.peek() != Some(b'(') {
        let url = astring(lexer.string()?)?;
        return Ok(UrlFetch { url, want: None });
    }
    lexer.next();
    let url = astring(lexer.string()?)?;
    let mut want = FetchWant::default();
    while lexer.keyword(b" ") {
        match lexer.word().to_ascii_uppercase().as_slice() {
            b"BODY" => want.body = true,
            b"BINARY" => want.binary = true,
            b"BODYPARTSTRUCTURE" => want.structure = true,
            _ => return Err(Syntax),
        }
    }
    if lexer.next() != Some(b')') || (want.body && want.binary) {
        return Err(Syntax);
    }
    if want == FetchWant::default() {
        want.body = true;
    }
    Ok(UrlFetch {
        url,
        want: Some(want),
    })
}

/// ` (BODYPARTSTRUCTURE (...))`, one item of an extended URLFETCH answer.
pub fn bodypartstructure(structure: BodyStructure<'static>) -> Vec<u8> {
    // imap-codec writes a body structure only inside a response: take it
    // out of `* 1 FETCH (BODYSTRUCTURE (...))`.
    let data = Data::Fetch {
        seq: NonZeroU32::MIN,
        items: Vec1::from(MessageDataItem::BodyStructure(structure)),
    };
    let line = ResponseCodec::default()
        .encode(&Response::Data(data))
        .dump();
    let start = b"* 1 FETCH (BODYSTRUCTURE ".len();
    let end = line.len().saturating_sub(b")\r\n".len()).max(start);
    let mut out = b" (BODYPARTSTRUCTURE ".to_vec();
    out.extend_from_slice(line.get(start..end).unwrap_or_default());
    out.push(b')');
    out
}

/// A URL's authorization: `;URLAUTH=access[:mechanism:token]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    /// The URL up to and including the access identifier: what the token
    /// signs.
    pub rump: String,
    /// `anonymous`, `authuser`, `user+NAME` or `submit+NAME`.
    pub access: String,
    /// The mechanism and token, once generated.
    pub token: Option<(String, String)>,
}

/// The URLAUTH part of `url`, if it has one.
pub fn authorization(url: &str) -> Option<Authorization> {
    let at = url.to_ascii_lowercase().rfind(";urlauth=")?;
    let value = &url[at + ";urlauth=".len()..];
    let (access, token) = match value.split_once(':') {
        Some((access, rest)) => {
            let (mechanism, token) = rest.split_once(':')?;
            (access, Some((mechanism.to_owned(), token.to_owned())))
        }
        None => (value, None),
    };
    if access.is_empty() {
        return None;
    }
    Some(Authorization {
        rump: url[..at + ";urlauth=".len() + access.len()].to_owned(),
        access: access.to_owned(),
        token,
    })
}

/// The URL without its URLAUTH part: what names the data.
pub fn without_authorization(url: &str) -> &str {
    match url.to_ascii_lowercase().rfind(";urlauth=") {
        Some(at) => &url[..at],
        None => url,
    }
}

/// The INTERNAL mechanism's token for `rump` under `key`: HMAC-SHA-256,
/// in hex (RFC 4467 §2.4 wants at least 128 bits).
pub fn token(key: &[u8], rump: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    let tag = hmac::sign(&key, rump.as_bytes());
    tag.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `token` is the one for `rump` under `key`, compared in
/// constant time.
pub fn verify(key: &[u8], rump: &str, token: &str) -> bool {
    let expected = self::token(key, rump);
    expected.len() == token.len()
        && expected
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |diff, (a, b)| diff | (a ^ b.to_ascii_lowercase()))
            == 0
}

/// Whether a session logged in as `user` may fetch a URL with `access`.
pub fn allows(access: &str, user: &str) -> bool {
    let lower = access.to_ascii_lowercase();
    if lower == "anonymous" || lower == "authuser" {
        return true;
    }
    // `submit+NAME` is for a submission server fetching for NAME; ours
    // fetches its own way, so over IMAP it is NAME's as well.
    ["user+", "submit+"].iter().any(|prefix| {
        lower
            .strip_prefix(prefix)
            .is_some_and(|name| name.eq_ignore_ascii_case(user))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands() {
        let parsed = parse(b"a GENURLAUTH \"imap://u@h/INBOX/;uid=1;urlauth=user+u\" INTERNAL\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(parsed.0, "a");
        assert_eq!(
            parsed.1,
            UrlAuthCommand::Generate(vec![(
                "imap://u@h/INBOX/;uid=1;urlauth=user+u".into(),
                "INTERNAL".into()
            )])
        );
        let simple = |url: &str| UrlFetch {
            url: url.into(),
            want: None,
        };
        assert_eq!(
            parse(b"b urlfetch x y\r\n").unwrap().unwrap().1,
            UrlAuthCommand::Fetch(vec![simple("x"), simple("y")])
        );
        let extended = parse(b"b URLFETCH (\"x\" binary BODYPARTSTRUCTURE) (y) z\r\n");
        let wants: Vec<Option<FetchWant>> = match extended.unwrap().unwrap().1 {
            UrlAuthCommand::Fetch(urls) => urls.into_iter().map(|u| u.want).collect(),
            other => panic!("{other:?}"),
        };
        let both = FetchWant {
            binary: true,
            structure: true,
            ..FetchWant::default()
        };
        let body = FetchWant {
            body: true,
            ..FetchWant::default()
        };
        assert_eq!(wants, [Some(both), Some(body), None]);
        assert_eq!(parse(b"b URLFETCH (x BODY BINARY)\r\n"), Some(Err(Syntax)));
        assert_eq!(parse(b"b URLFETCH (x FROB)\r\n"), Some(Err(Syntax)));
        assert_eq!(parse(b"b URLFETCH (x\r\n"), Some(Err(Syntax)));
        assert_eq!(
            parse(b"c RESETKEY\r\n").unwrap().unwrap().1,
            UrlAuthCommand::ResetKey(None)
        );
        assert_eq!(
            parse(b"c RESETKEY INBOX INTERNAL\r\n").unwrap().unwrap().1,
            UrlAuthCommand::ResetKey(Some("INBOX".into()))
        );
        assert_eq!(parse(b"d GENURLAUTH x\r\n"), Some(Err(Syntax)));
        assert_eq!(parse(b"d URLFETCH\r\n"), Some(Err(Syntax)));
        assert_eq!(parse(b"e NOOP\r\n"), None);
    }

    #[test]
    fn tokens_and_access() {
        let url = "imap://u@h/INBOX/;uid=1;urlauth=user+u";
        let auth = authorization(url).unwrap();
        assert_eq!(auth.rump, url);
        assert_eq!(auth.access, "user+u");
        assert_eq!(auth.token, None);
        let token = token(b"key", &auth.rump);
        assert_eq!(token.len(), 64);
        let full = format!("{url}:internal:{token}");
        let auth = authorization(&full).unwrap();
        assert_eq!(auth.rump, url);
        let (mechanism, given) = auth.token.unwrap();
        assert_eq!(mechanism, "internal");
        assert!(verify(b"key", url, &given));
        assert!(!verify(b"other key", url, &given));
        assert!(!verify(
            b"key",
            "imap://u@h/INBOX/;uid=2;urlauth=user+u",
            &given
        ));
        assert_eq!(without_authorization(&full), "imap://u@h/INBOX/;uid=1");
        assert!(allows("user+U", "u") && !allows("user+v", "u"));
        assert!(allows("authuser", "anyone") && allows("anonymous", "x"));
        assert!(!allows("bogus", "u"));
    }
}
