//! IMAP URLs (RFC 5092) as CATENATE (RFC 4469) uses them: a message, or a
//! section of it, in one of the logged-in user's mailboxes.
//!
//! Taken: `imap://[user@]host[:port]/mailbox[;UIDVALIDITY=n]/;UID=n`, the
//! same without `imap://host` (path-absolute), and `;UID=n` alone (the
//! selected mailbox), each optionally followed by `/;SECTION=...` and
//! `/;PARTIAL=offset[.length]`. Not taken (the server answers `BADURL`):
//! URLAUTH (RFC 4467), searches, and anything else.

use imap_codec::decode::Decoder;
use imap_codec::imap_types::command::CommandBody;
use imap_codec::imap_types::fetch::{MacroOrMessageDataItemNames, MessageDataItemName, Section};
use imap_codec::imap_types::IntoStatic;
use imap_codec::CommandCodec;

/// What a URL names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImapUrl {
    /// The user in the authority (`imap://user@host/`), if any.
    pub user: Option<String>,
    /// The host in the authority, without its port, if any.
    pub host: Option<String>,
    /// The mailbox; `None` for the selected one.
    pub mailbox: Option<String>,
    /// The mailbox's UIDVALIDITY, when given: the URL names nothing if
    /// the mailbox's differs.
    pub uidvalidity: Option<u32>,
    /// The message.
    pub uid: u32,
    /// The section, as `BODY[...]` writes it (`HEADER`, `1.2.MIME`, ...).
    pub section: Option<String>,
    /// `PARTIAL=offset[.length]`.
    pub partial: Option<(u32, Option<u32>)>,
}

/// Find `needle` in `haystack`, ignoring ASCII case.
fn find(haystack: &str, needle: &str) -> Option<usize> {
    haystack
        .as_bytes()
        .windows(needle.len())
        .position(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

/// `text` without the ASCII-case-insensitive `prefix`.
fn strip<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

/// `%XX` escapes decoded; `None` when one is broken or the result is not
/// UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

impl ImapUrl {
    /// Parse `url`; `None` when it is not a URL this server takes.
    pub fn parse(url: &str) -> Option<ImapUrl> {
        let (mut user, mut host) = (None, None);
        let rest = match strip(url, "imap://") {
            Some(after) => {
                let slash = after.find('/')?;
                let authority = &after[..slash];
                let hostport = match authority.rsplit_once('@') {
                    Some((userinfo, hostport)) => {
                        let name = userinfo.split(';').next().unwrap_or_default();
                        user = Some(percent_decode(name)?);
                        hostport
                    }
                    None => authority,
                };
                let name = hostport.split(':').next().unwrap_or_default();
                host = (!name.is_empty()).then(|| name.to_ascii_lowercase());
                &after[slash..]
            }
            None => url,
        };
        let (mailbox, uidvalidity, after_uid) = if let Some(path) = rest.strip_prefix('/') {
            let at = find(path, "/;UID=")?;
            let (mut name, mut uidvalidity) = (&path[..at], None);
            if let Some(cut) = find(name, ";UIDVALIDITY=") {
                uidvalidity = Some(name[cut + ";UIDVALIDITY=".len()..].parse().ok()?);
                name = &name[..cut];
            }
            (
                Some(percent_decode(name)?),
                uidvalidity,
                &path[at + "/;UID=".len()..],
            )
        } else {
            (None, None, strip(rest, ";UID=")?)
        };
        let (uid, mut tail) = match after_uid.find('/') {
            Some(slash) => (&after_uid[..slash], &after_uid[slash..]),
            None => (after_uid, ""),
        };
        let uid: u32 = uid.parse().ok().filter(|&n| n > 0)?;
        let mut section = None;
        if let Some(after) = strip(tail, "/;SECTION=") {
            let end = find(after, "/;PARTIAL=").unwrap_or(after.len());
            section = Some(percent_decode(&after[..end])?);
            tail = &after[end..];
        }
        let mut partial = None;
        if let Some(after) = strip(tail, "/;PARTIAL=") {
            let (offset, length) = match after.split_once('.') {
                Some((offset, length)) => (offset, Some(length.parse().ok()?)),
                None => (after, None),
            };
            partial = Some((offset.parse().ok()?, length));
            tail = "";
        }
        if !tail.is_empty() {
            return None; // URLAUTH, or something else we do not take
        }
        Some(ImapUrl {
            user,
            host,
            mailbox,
            uidvalidity,
            uid,
            section,
            partial,
        })
    }

    /// Whether the URL's user is `account` (a full address): the user as
    /// given, or, when it is a bare name, that name at the URL's host
    /// (`imap://alice@example.com/` for the account alice@example.com).
    pub fn user_is(&self, account: &str) -> bool {
        let Some(user) = &self.user else {
            return false;
        };
        user.eq_ignore_ascii_case(account)
            || (!user.contains('@')
                && self
                    .host
                    .as_deref()
                    .is_some_and(|host| account.eq_ignore_ascii_case(&format!("{user}@{host}"))))
    }

    /// The accounts the URL's user may be: as given, and at the host.
    pub fn owners(&self) -> Vec<String> {
        let Some(user) = &self.user else {
            return Vec::new();
        };
        let mut names = vec![user.to_lowercase()];
        if let (false, Some(host)) = (user.contains('@'), &self.host) {
            names.push(format!("{user}@{host}").to_lowercase());
        }
        names
    }

    /// The section as a FETCH names it; `Some(None)` for the whole
    /// message, `None` when the section is not valid IMAP.
    pub fn fetch_section(&self) -> Option<Option<Section<'static>>> {
        let Some(text) = &self.section else {
            return Some(None);
        };
        if text.contains(['\r', '\n', ']']) {
            return None;
        }
        let command = format!("u FETCH 1 BODY.PEEK[{text}]\r\n");
        let (_, decoded) = CommandCodec::default().decode(command.as_bytes()).ok()?;
        match decoded.body {
            CommandBody::Fetch {
                macro_or_item_names: MacroOrMessageDataItemNames::MessageDataItemNames(items),
                ..
            } => match items.into_iter().next()? {
                MessageDataItemName::BodyExt { section, .. } => {
                    Some(section.map(IntoStatic::into_static))
                }
                _ => None,
            },
            _ => None,
        }
    }

    /// `partial` as `mime::section` takes it: (first octet, most octets).
    pub fn cut(&self) -> Option<(u32, u32)> {
        self.partial
            .map(|(offset, length)| (offset, length.unwrap_or(u32::MAX)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_forms_catenate_uses() {
        let url = ImapUrl::parse("/INBOX/;uid=20/;section=1.2.MIME").unwrap();
        assert_eq!(url.mailbox.as_deref(), Some("INBOX"));
        assert_eq!((url.uid, url.uidvalidity), (20, None));
        assert_eq!(url.section.as_deref(), Some("1.2.MIME"));
        let url = ImapUrl::parse(
            "/Lists%20x/sub;UIDVALIDITY=385759045/;UID=4/;SECTION=HEADER/;PARTIAL=0.100",
        )
        .unwrap();
        assert_eq!(url.mailbox.as_deref(), Some("Lists x/sub"));
        assert_eq!(url.uidvalidity, Some(385759045));
        assert_eq!(url.section.as_deref(), Some("HEADER"));
        assert_eq!(url.partial, Some((0, Some(100))));
        assert_eq!(url.cut(), Some((0, 100)));
        let url = ImapUrl::parse("imap://joe;AUTH=*@example.com:143/INBOX/;UID=1").unwrap();
        assert_eq!(url.user.as_deref(), Some("joe"));
        assert_eq!(url.host.as_deref(), Some("example.com"));
        assert!(url.user_is("joe@example.com") && url.user_is("JOE"));
        assert!(!url.user_is("joe@other.test"));
        assert_eq!(url.owners(), ["joe", "joe@example.com"]);
        let url = ImapUrl::parse("imap://joe%40x.test@mail.example.com/INBOX/;UID=1").unwrap();
        assert!(url.user_is("joe@x.test"));
        let url = ImapUrl::parse(";UID=7/;PARTIAL=5").unwrap();
        assert_eq!(
            (url.mailbox, url.uid, url.partial),
            (None, 7, Some((5, None)))
        );
    }

    #[test]
    fn sections_read_as_fetch_reads_them() {
        let section = |text: &str| {
            ImapUrl::parse(&format!("/INBOX/;UID=1/;SECTION={text}"))
                .unwrap()
                .fetch_section()
        };
        assert!(matches!(
            section("HEADER"),
            Some(Some(Section::Header(None)))
        ));
        assert!(matches!(section("1"), Some(Some(Section::Part(_)))));
        assert!(matches!(section("TEXT"), Some(Some(Section::Text(None)))));
        assert_eq!(section("NOPE"), None);
        assert_eq!(section("1]x"), None);
        assert!(matches!(
            ImapUrl::parse("/INBOX/;UID=1").unwrap().fetch_section(),
            Some(None)
        ));
    }

    #[test]
    fn what_is_not_taken() {
        for bad in [
            "",
            "/INBOX",
            "/INBOX/;UID=0",
            "/INBOX/;UID=x",
            "/INBOX/;UID=1;URLAUTH=anonymous",
            "/INBOX/;UID=1/;URLAUTH=submit+fred:internal:91354a",
            "/INBOX?SUBJECT%20x",
            "/IN%ZZBOX/;UID=1",
            "http://example.com/INBOX/;UID=1",
        ] {
            assert_eq!(ImapUrl::parse(bad), None, "{bad}");
        }
    }
}
