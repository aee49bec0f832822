//! What an injected message says: the request's content, raw RFC 5322 text
//! or structured parts built into MIME by mail-builder, rendered for one
//! recipient (with its substitutions) or once for all of them.
//!
//! Raw text is taken as the sender wrote it, with three repairs a
//! submission server may make (RFC 6409 §8): line ends become CRLF, and a
//! missing `Message-ID` or `Date` is added. What no repair can save (no
//! From, a header line that is not a field, a line over RFC 5322's 998
//! octets, a NUL) is refused with the line named.
//!
//! Substitutions are `{{ name }}` placeholders. A value that would put a
//! line break into a header field is refused: that is header injection.

use mail_builder::headers::raw::Raw;
use mail_builder::headers::text::Text;
use mail_builder::MessageBuilder;
use serde::Deserialize;
use std::borrow::Cow;
use std::collections::BTreeMap;

/// RFC 5322 §2.1.1: a line is at most 998 octets without its CRLF.
const MAX_LINE: usize = 998;

/// The message a request carries.
#[derive(Debug, Clone)]
pub enum Content {
    /// A whole RFC 5322 message as text.
    Raw(String),
    /// Parts for ringpost to put together.
    Built(Box<Built>),
}

/// Structured content: headers and bodies; ringpost writes the MIME.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Built {
    /// The author (From).
    pub from: Person,
    /// The subject.
    pub subject: String,
    /// To; absent: the recipient when the message is for one, else
    /// `undisclosed-recipients:;`.
    #[serde(default)]
    pub to: Option<People>,
    /// Cc.
    #[serde(default)]
    pub cc: Option<People>,
    /// Reply-To.
    #[serde(default)]
    pub reply_to: Option<Person>,
    /// The plain text body.
    #[serde(default)]
    pub text_body: Option<String>,
    /// The HTML body.
    #[serde(default)]
    pub html_body: Option<String>,
    /// More header fields, by name (`List-Unsubscribe`, `X-Campaign`, ...).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Attachments (or inline parts, with a `content_id`).
    #[serde(default)]
    pub attachments: Vec<Attachment>,
}

/// An address, bare or with a display name.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Person {
    /// `"ann@example.com"`.
    Address(String),
    /// `{"email": "ann@example.com", "name": "Ann"}`.
    Named {
        /// The address.
        email: String,
        /// The display name.
        #[serde(default)]
        name: Option<String>,
    },
}

impl Person {
    /// The same person at `email` (the address as SMTP would record it).
    pub fn with_email(self, email: String) -> Person {
        match self {
            Person::Address(_) => Person::Address(email),
            Person::Named { name, .. } => Person::Named { email, name },
        }
    }

    /// The address.
    pub fn email(&self) -> &str {
        match self {
            Person::Address(email) | Person::Named { email, .. } => email,
        }
    }
}

/// One person or several.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum People {
    /// One.
    One(Person),
    /// Several.
    Many(Vec<Person>),
}

impl People {
    fn iter(&self) -> impl Iterator<Item = &Person> {
        match self {
            People::One(one) => std::slice::from_ref(one).iter(),
            People::Many(many) => many.iter(),
        }
    }
}

/// A file sent along.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attachment {
    /// Its MIME type, `type/subtype`.
    pub content_type: String,
    /// The name it is offered under.
    #[serde(default)]
    pub file_name: Option<String>,
    /// Its content: text, or base64 when `base64` is set.
    pub data: String,
    /// `data` is base64 (binary files).
    #[serde(default)]
    pub base64: bool,
    /// Makes it an inline part the HTML refers to as `cid:...`.
    #[serde(default)]
    pub content_id: Option<String>,
}

/// The values placeholders take for one recipient: its own substitutions,
/// then the request's, then `email` and `name` (its display name, or its
/// address when it has none).
pub struct Vars<'a> {
    /// The recipient's address.
    pub email: &'a str,
    /// The recipient's name, if given.
    pub name: Option<&'a str>,
    /// The recipient's substitutions.
    pub own: &'a BTreeMap<String, String>,
    /// The request's substitutions.
    pub shared: &'a BTreeMap<String, String>,
    /// The most bytes the filled-in texts of one message may come to,
    /// all its fields together, checked as they grow: placeholders must
    /// not blow a small request up.
    pub limit: usize,
    /// What the texts filled so far came to.
    pub filled: std::cell::Cell<usize>,
}

impl Vars<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        let builtin = match key {
            "email" => Some(self.email),
            "name" => self.name.or(Some(self.email)),
            _ => None,
        };
        self.own
            .get(key)
            .or_else(|| self.shared.get(key))
            .map(String::as_str)
            .or(builtin)
    }
}

/// One rendering of the content.
pub struct Letter<'a> {
    /// The one recipient it is for (names it in To), or None for several.
    pub recipient: Option<&'a Person>,
    /// Placeholder values; None: the content is taken as it is.
    pub vars: Option<&'a Vars<'a>>,
    /// The Message-ID to give it, without brackets, unless it has one.
    pub message_id: &'a str,
    /// Its Date, Unix seconds, unless it has one.
    pub date: i64,
}

/// The message's bytes, CRLF throughout.
pub fn render(content: &Content, letter: &Letter<'_>) -> Result<Vec<u8>, String> {
    match content {
        Content::Raw(text) => raw(text, letter),
        Content::Built(built) => build(built, letter),
    }
}

/// `{{ name }}` placeholders of `text` filled from `vars`. In a header
/// (`in_header`), a value with a line break is refused.
fn fill<'t>(
    text: &'t str,
    vars: Option<&Vars<'_>>,
    in_header: bool,
) -> Result<Cow<'t, str>, String> {
    let Some(vars) = vars else {
        return Ok(Cow::Borrowed(text));
    };
    if !text.contains("{{") {
        return Ok(Cow::Borrowed(text));
    }
    let mut out = String::with_capacity(text.len() + 64);
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else {
            return Err("a `{{` without its `}}`".into());
        };
        let key = after[..close].trim();
        let valid = !key.is_empty()
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if !valid {
            return Err(format!(
                "`{{{{{}}}}}` is not a placeholder name",
                &after[..close]
            ));
        }
        let Some(value) = vars.get(key) else {
            return Err(format!("no value for {{{{ {key} }}}}"));
        };
        if value.contains('\0') {
            return Err(format!("the value of {{{{ {key} }}}} has a NUL character"));
        }
        if in_header && value.contains(['\r', '\n']) {
            return Err(format!(
                "the value of {{{{ {key} }}}} has a line break, and it is used in a header field"
            ));
        }
        out.push_str(value);
        if vars.filled.get() + out.len() > vars.limit {
            return Err(format!(
                "filled in, the message is over {} bytes",
                vars.limit
            ));
        }
        rest = &after[close + 2..];
    }
    out.push_str(rest);
    vars.filled.set(vars.filled.get() + out.len());
    if vars.filled.get() > vars.limit {
        return Err(format!(
            "filled in, the message is over {} bytes",
            vars.limit
        ));
    }
    Ok(Cow::Owned(out))
}

/// Every line end made CRLF: bare LF and bare CR alike.
fn crlf(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 32);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => {
                chars.next_if_eq(&'\n');
                out.push_str("\r\n");
            }
            '\n' => out.push_str("\r\n"),
            c => out.push(c),
        }
    }
    out
}

fn raw(text: &str, letter: &Letter<'_>) -> Result<Vec<u8>, String> {
    if text.contains('\0') {
        return Err("the message has a NUL character".into());
    }
    let text = crlf(text);
    let (head, body) = match text.find("\r\n\r\n") {
        Some(end) => (&text[..end + 2], &text[end + 4..]),
        None if text.ends_with("\r\n") => (text.as_str(), ""),
        None => return Err("the message has no header section".into()),
    };
    let head = fill(head, letter.vars, true)?;
    let body = crlf(&fill(body, letter.vars, false)?);

    let mut names = Vec::new();
    for (n, line) in head.split_terminator("\r\n").enumerate() {
        let number = n + 1;
        if line.len() > MAX_LINE {
            return Err(format!(
                "header line {number} is longer than {MAX_LINE} octets"
            ));
        }
        if line.starts_with([' ', '\t']) {
            if n == 0 {
                return Err("the message starts with a folded line".into());
            }
            continue;
        }
        match line.split_once(':') {
            Some((name, _)) if is_field_name(name) => names.push(name.to_ascii_lowercase()),
            _ => {
                return Err(format!(
                    "header line {number} is not a header field: `{}`",
                    clip(line)
                ))
            }
        }
    }
    if !names.iter().any(|n| n == "from") {
        return Err("the message has no From field".into());
    }
    if let Some(n) = body
        .split_terminator("\r\n")
        .position(|l| l.len() > MAX_LINE)
    {
        return Err(format!(
            "body line {} is longer than {MAX_LINE} octets",
            n + 1
        ));
    }

    let mut out = Vec::with_capacity(head.len() + body.len() + 128);
    let has = |name: &str| names.iter().any(|n| n == name);
    let added = crate::intake::missing_origin_fields(has, letter.message_id, letter.date);
    out.extend_from_slice(added.as_bytes());
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body.as_bytes());
    if !body.is_empty() && !body.ends_with("\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    Ok(out)
}

fn build(built: &Built, letter: &Letter<'_>) -> Result<Vec<u8>, String> {
    let vars = letter.vars;
    if built.text_body.is_none() && built.html_body.is_none() && built.attachments.is_empty() {
        return Err("give text_body, html_body or attachments".into());
    }
    let to = match (&built.to, letter.recipient) {
        (Some(to), _) => addresses(to, vars)?,
        (None, Some(one)) => address(one, vars)?,
        (None, None) => "undisclosed-recipients:;".to_owned(),
    };
    // The subject as given, not only what substitutions put in it: a line
    // break there would start a header of the caller's choosing.
    let subject = fill(&built.subject, vars, true)?.into_owned();
    header_safe(&subject, "the subject")?;
    let mut message = MessageBuilder::new()
        .header("From", Raw::new(address(&built.from, vars)?))
        .header("To", Raw::new(to))
        .subject(subject);
    if let Some(cc) = &built.cc {
        message = message.header("Cc", Raw::new(addresses(cc, vars)?));
    }
    if let Some(reply_to) = &built.reply_to {
        message = message.header("Reply-To", Raw::new(address(reply_to, vars)?));
    }
    let (mut own_id, mut own_date) = (false, false);
    for (name, value) in &built.headers {
        if !is_field_name(name) {
            return Err(format!("`{}` is not a header field name", clip(name)));
        }
        let canonical = match name.to_ascii_lowercase().as_str() {
            "from" | "to" | "cc" | "reply-to" | "subject" => {
                return Err(format!("set {name} with its own field, not in headers"))
            }
            "mime-version" | "content-type" | "content-transfer-encoding" => {
                return Err(format!("{name} is written by ringpost from the bodies"))
            }
            "message-id" => {
                own_id = true;
                "Message-ID".to_owned()
            }
            "date" => {
                own_date = true;
                "Date".to_owned()
            }
            _ => name.clone(),
        };
        let value = fill(value, vars, true)?;
        if value.contains(['\r', '\n']) {
            return Err(format!("the {name} header has a line break"));
        }
        message = message.header(canonical, header_text(value.into_owned()));
    }
    if !own_id {
        message = message.message_id(letter.message_id.to_owned());
    }
    if !own_date {
        message = message.date(letter.date);
    }
    // Text is CRLF in its canonical form (RFC 2046 §4.1.1), whatever the
    // JSON said, before any transfer encoding.
    if let Some(text) = &built.text_body {
        message = message.text_body(crlf(&fill(text, vars, false)?));
    }
    if let Some(html) = &built.html_body {
        message = message.html_body(crlf(&fill(html, vars, false)?));
    }
    for file in &built.attachments {
        let (kind, subtype) = file.content_type.split_once('/').unwrap_or(("", ""));
        if !is_token(kind) || !is_token(subtype) {
            return Err(format!("`{}` is not a MIME type", clip(&file.content_type)));
        }
        let data: Vec<u8> = if file.base64 {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD
                .decode(file.data.trim())
                .map_err(|e| format!("attachment data is not base64: {e}"))?
        } else {
            file.data.clone().into_bytes()
        };
        for (value, what) in [
            (&file.content_id, "a content_id"),
            (&file.file_name, "a file_name"),
        ] {
            if let Some(value) = value {
                header_safe(value, what)?;
            }
        }
        message = match (&file.content_id, &file.file_name) {
            (Some(cid), _) => message.inline(file.content_type.clone(), cid.clone(), data),
            (None, Some(name)) => message.attachment(file.content_type.clone(), name.clone(), data),
            (None, None) => message.attachment(file.content_type.clone(), "attachment", data),
        };
    }
    message
        .write_to_vec()
        .map_err(|e| format!("could not write the message: {e}"))
}

/// Refuse control characters (line breaks above all: they would start new
/// header fields) in text that goes into a header.
fn header_safe(text: &str, what: &str) -> Result<(), String> {
    match text.chars().any(char::is_control) {
        true => Err(format!("{what} has a control character (a line break?)")),
        false => Ok(()),
    }
}

/// A mailbox for an address field: `"Name" <addr>`, the name as a
/// quoted string when ASCII and as encoded words otherwise (RFC 2047 §5
/// forbids them inside quotes, which mail-builder's own writer does).
fn address(person: &Person, vars: Option<&Vars<'_>>) -> Result<String, String> {
    let email = fill(person.email(), vars, true)?;
    if !ringpost_protocols::smtp::is_mailbox(&email) {
        return Err(format!("`{}` is not an address", clip(&email)));
    }
    let name = match person {
        Person::Named {
            name: Some(name), ..
        } => fill(name, vars, true)?,
        _ => Cow::Borrowed(""),
    };
    header_safe(&name, "a display name")?;
    Ok(match name.trim() {
        "" => email.into_owned(),
        name if name.is_ascii() => {
            let quoted = name.replace('\\', "\\\\").replace('"', "\\\"");
            format!("\"{quoted}\" <{email}>")
        }
        name => format!("{} <{email}>", encoded_words(name)),
    })
}

fn addresses(people: &People, vars: Option<&Vars<'_>>) -> Result<String, String> {
    let list = people
        .iter()
        .map(|person| address(person, vars))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(list.join(", "))
}

/// `text` as RFC 2047 encoded words (UTF-8, base64), each within the
/// 75-character limit, split between characters.
fn encoded_words(text: &str) -> String {
    use base64::Engine as _;
    let mut words = Vec::new();
    let mut start = 0;
    while start < text.len() {
        // 45 octets make 60 base64 characters: 72 with the markers.
        let mut end = (start + 45).min(text.len());
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let encoded = base64::engine::general_purpose::STANDARD.encode(&text[start..end]);
        words.push(format!("=?utf-8?B?{encoded}?="));
        start = end;
    }
    words.join(" ")
}

/// Header text: ASCII as written; anything else encoded (RFC 2047).
fn header_text(value: String) -> mail_builder::headers::HeaderType<'static> {
    match value.is_ascii() {
        true => Raw::new(value).into(),
        false => Text::new(value).into(),
    }
}

/// RFC 5322 §3.6.8: printable ASCII except the colon.
fn is_field_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| (33..=126).contains(&b) && b != b':')
}

/// RFC 2045's token.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?=".contains(&b))
}

/// The start of a long line, for an error message.
fn clip(s: &str) -> &str {
    match s.char_indices().nth(60) {
        Some((at, _)) => &s[..at],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter<'a>(recipient: Option<&'a Person>, vars: Option<&'a Vars<'a>>) -> Letter<'a> {
        Letter {
            recipient,
            vars,
            message_id: "abc@mx.test",
            date: 1_700_000_000,
        }
    }

    fn text(bytes: Vec<u8>) -> String {
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn raw_gets_crlf_message_id_and_date() {
        let out = text(
            render(
                &Content::Raw("From: a@x.test\nSubject: hi\n\nline one\nline two".into()),
                &letter(None, None),
            )
            .unwrap(),
        );
        assert_eq!(
            out,
            "Message-ID: <abc@mx.test>\r\nDate: Tue, 14 Nov 2023 22:13:20 +0000\r\nFrom: a@x.test\r\nSubject: hi\r\n\r\nline one\r\nline two\r\n"
        );
    }

    #[test]
    fn raw_keeps_its_own_ids_and_crlf() {
        let given = "From: a@x.test\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\nMessage-Id: <m@x>\r\n\r\nbody\r\n";
        let out = render(&Content::Raw(given.into()), &letter(None, None)).unwrap();
        assert_eq!(text(out), given);
    }

    #[test]
    fn raw_refusals_name_the_problem() {
        let cases = [
            ("Subject: hi\r\n\r\nbody\r\n", "no From"),
            (
                "From: a@x.test\r\nnot a field\r\n\r\nbody\r\n",
                "header line 2",
            ),
            (" folded\r\nFrom: a@x.test\r\n\r\n", "folded"),
            ("just text", "no header section"),
            ("From: a@x.test\r\n\r\nnul\0\r\n", "NUL"),
        ];
        for (raw, expected) in cases {
            let problem = render(&Content::Raw(raw.into()), &letter(None, None)).unwrap_err();
            assert!(problem.contains(expected), "{raw:?}: {problem}");
        }
        let long = format!("From: a@x.test\r\n\r\n{}\r\n", "x".repeat(999));
        let problem = render(&Content::Raw(long), &letter(None, None)).unwrap_err();
        assert!(problem.contains("body line 1"), "{problem}");
    }

    fn vars<'a>(
        own: &'a BTreeMap<String, String>,
        shared: &'a BTreeMap<String, String>,
    ) -> Vars<'a> {
        Vars {
            email: "bob@y.test",
            name: Some("Bob"),
            own,
            shared,
            limit: 1 << 20,
            filled: Default::default(),
        }
    }

    #[test]
    fn substitutions_fill_placeholders_own_first() {
        let own = BTreeMap::from([("code".to_owned(), "B-7".to_owned())]);
        let shared = BTreeMap::from([
            ("code".to_owned(), "shared".to_owned()),
            ("team".to_owned(), "Ops".to_owned()),
        ]);
        let vars = vars(&own, &shared);
        let raw = "From: a@x.test\r\nSubject: Hi {{ name }}\r\n\r\n{{code}} from {{ team }} to {{ email }}\r\n";
        let out = text(render(&Content::Raw(raw.into()), &letter(None, Some(&vars))).unwrap());
        assert!(out.contains("Subject: Hi Bob\r\n"), "{out}");
        assert!(
            out.ends_with("\r\n\r\nB-7 from Ops to bob@y.test\r\n"),
            "{out}"
        );
    }

    #[test]
    fn substitutions_never_inject_header_fields() {
        let own = BTreeMap::from([("name".to_owned(), "x\r\nBcc: victim@z.test".to_owned())]);
        let shared = BTreeMap::new();
        let vars = vars(&own, &shared);
        let raw = "From: a@x.test\r\nSubject: Hi {{ name }}\r\n\r\nbody\r\n";
        let problem = render(&Content::Raw(raw.into()), &letter(None, Some(&vars))).unwrap_err();
        assert!(problem.contains("line break"), "{problem}");
        // In the body a line break is just text.
        let raw = "From: a@x.test\r\n\r\nDear {{ name }}\n";
        let out = text(render(&Content::Raw(raw.into()), &letter(None, Some(&vars))).unwrap());
        assert!(
            out.ends_with("\r\n\r\nDear x\r\nBcc: victim@z.test\r\n"),
            "{out}"
        );
    }

    #[test]
    fn missing_or_malformed_placeholders_are_refused() {
        let own = BTreeMap::new();
        let vars = vars(&own, &own);
        for (raw, expected) in [
            (
                "From: a@x.test\r\n\r\n{{ nope }}\r\n",
                "no value for {{ nope }}",
            ),
            ("From: a@x.test\r\n\r\n{{ open\r\n", "without its"),
            ("From: a@x.test\r\n\r\n{{ a b }}\r\n", "not a placeholder"),
        ] {
            let problem =
                render(&Content::Raw(raw.into()), &letter(None, Some(&vars))).unwrap_err();
            assert!(problem.contains(expected), "{raw:?}: {problem}");
        }
        // Without substitutions the text is taken as it is.
        let raw = "From: a@x.test\r\n\r\n{{ nope }}\r\n";
        assert!(render(&Content::Raw(raw.into()), &letter(None, None)).is_ok());
    }

    fn built() -> Built {
        serde_json::from_value(serde_json::json!({
            "from": {"email": "news@x.test", "name": "Nëws"},
            "subject": "Hello {{ name }}",
            "text_body": "Hi {{ name }}",
            "html_body": "<p>Hi {{ name }}</p>",
            "headers": {"List-Unsubscribe": "<mailto:u@x.test>"},
            "attachments": [{"content_type": "application/octet-stream", "file_name": "a.bin", "data": "AAEC", "base64": true}]
        }))
        .unwrap()
    }

    #[test]
    fn built_content_is_mime_for_one_recipient() {
        let own = BTreeMap::new();
        let vars = vars(&own, &own);
        let bob = Person::Named {
            email: "bob@y.test".into(),
            name: Some("Bob".into()),
        };
        let content = Content::Built(Box::new(built()));
        let out = text(render(&content, &letter(Some(&bob), Some(&vars))).unwrap());
        assert!(
            out.contains("From: =?utf-8?B?TsOrd3M=?= <news@x.test>\r\n"),
            "{out}"
        );
        assert!(out.contains("To: \"Bob\" <bob@y.test>\r\n"), "{out}");
        assert!(out.contains("Subject: Hello Bob\r\n"), "{out}");
        assert!(out.contains("Message-ID: <abc@mx.test>\r\n"), "{out}");
        assert!(
            out.contains("List-Unsubscribe: <mailto:u@x.test>\r\n"),
            "{out}"
        );
        assert!(out.contains("multipart/mixed"), "{out}");
        assert!(out.contains("filename=\"a.bin\""), "{out}");
        assert!(!out.replace("\r\n", "").contains('\n'), "CRLF only");
    }

    #[test]
    fn built_content_for_many_hides_them() {
        let mut plain = built();
        plain.subject = "Hello".into();
        plain.text_body = Some("Hi".into());
        plain.html_body = None;
        let out = text(render(&Content::Built(Box::new(plain)), &letter(None, None)).unwrap());
        assert!(out.contains("To: undisclosed-recipients:;\r\n"), "{out}");
    }

    #[test]
    fn display_names_are_quoted_or_encoded() {
        let named = |name: &str| Person::Named {
            email: "a@x.test".into(),
            name: Some(name.into()),
        };
        assert_eq!(
            address(&named("A \"B\" \\ C"), None).unwrap(),
            r#""A \"B\" \\ C" <a@x.test>"#
        );
        assert_eq!(address(&named(" "), None).unwrap(), "a@x.test");
        let long = "Ünïcödé ".repeat(10);
        let field = address(&named(&long), None).unwrap();
        let words: Vec<&str> = field.trim_end_matches(" <a@x.test>").split(' ').collect();
        assert!(words.len() > 1, "{field}");
        let mut decoded = Vec::new();
        for word in words {
            assert!(
                word.len() <= 75 && word.starts_with("=?utf-8?B?") && word.ends_with("?="),
                "{word}"
            );
            use base64::Engine as _;
            let inner = &word[10..word.len() - 2];
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(inner)
                .unwrap();
            assert!(
                std::str::from_utf8(&bytes).is_ok(),
                "split between characters"
            );
            decoded.extend(bytes);
        }
        assert_eq!(String::from_utf8(decoded).unwrap(), long.trim());
        assert!(address(&Person::Address("nope".into()), None).is_err());
    }

    #[test]
    fn placeholders_cannot_blow_a_request_up() {
        let own = BTreeMap::from([("a".to_owned(), "x".repeat(1000))]);
        let shared = BTreeMap::new();
        let mut vars = vars(&own, &shared);
        vars.limit = 10_000;
        let raw = format!("From: a@x.test\r\n\r\n{}\r\n", "{{a}}".repeat(100));
        let problem = render(&Content::Raw(raw), &letter(None, Some(&vars))).unwrap_err();
        assert!(problem.contains("over 10000 bytes"), "{problem}");
        // The limit is the message's, all fields together: a header and a
        // body each under it are not both taken when together over it.
        let parts = BTreeMap::from([
            ("a".to_owned(), "y".repeat(950)),
            ("b".to_owned(), "z".repeat(900)),
        ]);
        let mut both = super::tests::vars(&parts, &shared);
        both.limit = 10_000;
        let raw = format!(
            "From: a@x.test\r\nX-B: {{{{b}}}}\r\n\r\n{}",
            "{{a}}\r\n".repeat(10)
        );
        let problem = render(&Content::Raw(raw), &letter(None, Some(&both))).unwrap_err();
        assert!(problem.contains("over 10000 bytes"), "{problem}");
        // A NUL the content could not carry cannot come in as a value.
        let nul = BTreeMap::from([("a".to_owned(), "x\0y".to_owned())]);
        let with_nul = super::tests::vars(&nul, &shared);
        let raw = "From: a@x.test\r\n\r\n{{a}}\r\n".to_owned();
        let problem = render(&Content::Raw(raw), &letter(None, Some(&with_nul))).unwrap_err();
        assert!(problem.contains("NUL"), "{problem}");
    }

    #[test]
    fn literal_names_and_file_names_cannot_inject_fields() {
        let mut b = built();
        b.from = Person::Named {
            email: "news@x.test".into(),
            name: Some("x\r\nBcc: victim@z.test".into()),
        };
        let problem = render(&Content::Built(Box::new(b)), &letter(None, None)).unwrap_err();
        assert!(problem.contains("control character"), "{problem}");
        let mut b = built();
        b.attachments[0].file_name = Some("a.bin\r\nX-Evil: 1".into());
        let problem = render(&Content::Built(Box::new(b)), &letter(None, None)).unwrap_err();
        assert!(problem.contains("control character"), "{problem}");
        // A literal subject too (mail-builder writes a short ASCII one raw).
        for subject in ["Hi\r\nBcc: victim@z.test", "Hi\r\n\r\n<html>"] {
            let mut b = built();
            b.subject = subject.into();
            let problem = render(&Content::Built(Box::new(b)), &letter(None, None)).unwrap_err();
            assert!(
                problem.contains("the subject has a control character"),
                "{problem}"
            );
        }
    }

    #[test]
    fn built_content_refuses_unsafe_headers() {
        for (name, value, expected) in [
            ("Content-Type", "text/plain", "written by ringpost"),
            ("Bcc", "x\r\nBcc: y", "line break"),
            ("Bad Name", "x", "not a header field name"),
            ("Subject", "x", "own field"),
        ] {
            let mut b = built();
            b.headers = BTreeMap::from([(name.to_owned(), value.to_owned())]);
            let problem = render(&Content::Built(Box::new(b)), &letter(None, None)).unwrap_err();
            assert!(problem.contains(expected), "{name}: {problem}");
        }
        let mut empty = built();
        empty.text_body = None;
        empty.html_body = None;
        empty.attachments.clear();
        assert!(render(&Content::Built(Box::new(empty)), &letter(None, None)).is_err());
    }
}
