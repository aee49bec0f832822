//! ENVELOPE, BODYSTRUCTURE and BODY[section] of a stored message: what a
//! FETCH needs from the message bytes themselves (RFC 9051 §6.4.5, §7.5.2).
//!
//! mail-parser finds the MIME tree and reads the structured fields
//! (addresses, Content-Type, Content-Disposition); every size, line count and
//! section is then cut from the stored bytes by the offsets it reports, never
//! decoded, so BODY[2] and the size BODYSTRUCTURE gives part 2 always agree.
//! Any input is accepted: bytes mail-parser cannot read are a header-less
//! text/plain body, and a damaged part is clipped at its parent's boundary.

use std::{borrow::Cow, num::NonZeroU32, ops::Range};

use base64::Engine as _;
use imap_codec::imap_types::{
    body::{
        BasicFields, Body, BodyStructure, Disposition, Language, Location, MultiPartExtensionData,
        SinglePartExtensionData, SpecificFields,
    },
    core::{AString, IString, NString, Quoted, Vec1},
    envelope::{Address, Envelope},
    fetch::{Part, Section},
};
use mail_parser::{
    Addr, Address as ParsedAddress, ContentType, Group, Header, HeaderName, Message, MessageParser,
    MessagePart, PartType,
};

/// Nesting deeper than this is reported as an opaque leaf: the tree is
/// walked recursively, and a hostile message must not exhaust the stack.
const MAX_DEPTH: usize = 64;

/// The host of an address that has none: NIL there would mean group syntax.
const MISSING_HOST: &str = ".MISSING-HOST-NAME.";

/// The RFC 9051 ENVELOPE of a message.
///
/// Date, subject, in-reply-to and message-id are the raw header values
/// (unfolded, encoded words kept); absent fields are NIL. Sender and
/// reply-to fall back to from when absent or empty (RFC 9051 §7.5.2).
/// Groups appear as a start marker (group name as mailbox, host NIL), the
/// members, and an end marker (all NIL).
pub fn envelope(message: &[u8]) -> Envelope<'static> {
    // The envelope is all header: parsing the body (attachments included)
    // would cost nearly all the time for nothing.
    let header = &message[..header_end(message)];
    let parsed = parse(header);
    Entity::message(parsed.as_ref(), header, 0..header.len(), 0).envelope()
}

/// Where a message's header ends: after the blank line that ends it, or
/// the whole message when it has none.
fn header_end(message: &[u8]) -> usize {
    let mut at = 0;
    while let Some(found) = memchr::memchr(b'\n', &message[at..]) {
        let line_end = at + found + 1;
        match &message[line_end..] {
            [b'\n', ..] => return line_end + 1,
            [b'\r', b'\n', ..] => return line_end + 2,
            _ => at = line_end,
        }
    }
    message.len()
}

/// The BODYSTRUCTURE (`extensible`: with md5 NIL, disposition, language and
/// location; multiparts also with their parameters) or BODY (not
/// `extensible`) of a message.
///
/// Sizes and line counts are those of the part bodies as stored. A part
/// without Content-Type (or with one that cannot be honoured, such as a
/// multipart without boundary) is text/plain; charset=us-ascii (RFC 2045).
pub fn body_structure(message: &[u8], extensible: bool) -> BodyStructure<'static> {
    let parsed = parse(message);
    Entity::message(parsed.as_ref(), message, 0..message.len(), 0).structure(extensible)
}

/// The octets of BODY[section]<partial> (RFC 9051 §6.4.5), raw as stored.
///
/// `None` is the whole message. Header sections end with the blank line
/// that ends the header, when there is one; HEADER.FIELDS(.NOT) keep the
/// matching (or other) fields' original lines in message order. Part 1 of a
/// non-multipart message is its body. A missing part is empty. `partial`
/// is (first octet, most octets).
pub fn section(
    message: &[u8],
    section: Option<&Section<'_>>,
    partial: Option<(u32, u32)>,
) -> Vec<u8> {
    let Some(section) = section else {
        return cut(message, partial).to_vec();
    };
    let parsed = parse(message);
    let root = Entity::message(parsed.as_ref(), message, 0..message.len(), 0);
    cut(&root.select(section), partial).to_vec()
}

/// The BODYSTRUCTURE (as [`body_structure`] makes it) of part `numbers`
/// of a message, for URLFETCH's BODYPARTSTRUCTURE (RFC 5524); the whole
/// message's for no numbers. `None` when the message has no such part.
pub fn part_structure(
    message: &[u8],
    numbers: &[NonZeroU32],
    extensible: bool,
) -> Option<BodyStructure<'static>> {
    let parsed = parse(message);
    let root = Entity::message(parsed.as_ref(), message, 0..message.len(), 0);
    match Vec1::try_from(numbers.to_vec()) {
        Ok(numbers) => Some(root.locate(&Part(numbers))?.structure(extensible)),
        Err(_) => Some(root.structure(extensible)),
    }
}

/// Part `numbers` of a message (RFC 9051 part numbering, as BODY[1.2]
/// uses it): its body as stored and its Content-Transfer-Encoding field's
/// value (trimmed, as written; `None` when it has none). `None` when the
/// message has no such part.
pub(crate) fn part_body(
    message: &[u8],
    numbers: &[NonZeroU32],
) -> Option<(Vec<u8>, Option<Vec<u8>>)> {
    let parsed = parse(message);
    let root = Entity::message(parsed.as_ref(), message, 0..message.len(), 0);
    let part = root.locate(&Part(Vec1::try_from(numbers.to_vec()).ok()?))?;
    let encoding = part.fields().value(b"content-transfer-encoding");
    Some((part.body_bytes().to_vec(), encoding))
}

/// The leaf parts (neither multipart nor message) of a message that lie in
/// its own bytes, in order: where each one's header (with its blank line)
/// and body are. Parts of a transfer-encoded message/rfc822 part are not
/// among them: their bytes are not the message's.
pub(crate) fn leaf_parts(message: &[u8]) -> Vec<(Range<usize>, Range<usize>)> {
    entity_spans(message)
        .into_iter()
        .filter(|span| span.leaf)
        .map(|span| (span.header, span.body))
        .collect()
}

/// Where one MIME entity of a message lies in the message's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EntitySpan {
    /// The header, with the blank line that ends it.
    pub header: Range<usize>,
    pub body: Range<usize>,
    /// Neither multipart nor message: the body is content, not entities.
    pub leaf: bool,
    /// A message (the root, or what a message part holds), not a body part.
    pub message: bool,
}

/// Every MIME entity of a message that lies in its own bytes, the message
/// itself first, each parent before its parts, in the order of the bytes.
/// Parts of a transfer-encoded message/rfc822 part are not among them:
/// their bytes are not the message's.
pub(crate) fn entity_spans(message: &[u8]) -> Vec<EntitySpan> {
    fn walk(entity: &Entity<'_>, is_message: bool, message: &[u8], out: &mut Vec<EntitySpan>) {
        if !std::ptr::eq(entity.raw, message) {
            return;
        }
        out.push(EntitySpan {
            header: entity.header.clone(),
            body: entity.body.clone(),
            leaf: matches!(entity.kind, Kind::Leaf),
            message: is_message,
        });
        match &entity.kind {
            Kind::Leaf => {}
            Kind::Multipart(parts) => parts.iter().for_each(|p| walk(p, false, message, out)),
            Kind::Message(inner) => walk(inner, true, message, out),
        }
    }
    let parsed = parse(message);
    let root = Entity::message(parsed.as_ref(), message, 0..message.len(), 0);
    let mut out = Vec::new();
    walk(&root, true, message, &mut out);
    out
}

/// The value of a header's first `name` field: unfolded, trimmed, not
/// decoded.
pub(crate) fn field_value(header: &[u8], name: &str) -> Option<Vec<u8>> {
    Fields::of(header).value(name.as_bytes())
}

/// `header` with every field named in `fields` replaced by the value given
/// there, added after the others, CRLF-ended. `None` when the header has
/// no blank line to end it (the body would run into the new fields).
pub(crate) fn with_fields(header: &[u8], fields: &[(&str, &str)]) -> Option<Vec<u8>> {
    let parsed = Fields::of(header);
    if parsed.end.is_empty() {
        return None;
    }
    let mut out = Vec::with_capacity(header.len() + 64);
    for field in &parsed.fields {
        let replaced = fields
            .iter()
            .any(|(name, _)| name.as_bytes().eq_ignore_ascii_case(field.name));
        if !replaced {
            out.extend_from_slice(parsed.lines(field));
        }
    }
    for (name, value) in fields {
        out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    out.extend_from_slice(parsed.end);
    Some(out)
}

/// How many lines the bytes hold (LF or CRLF terminated; an unterminated
/// last line counts): the line count of text and message parts.
pub fn line_count(bytes: &[u8]) -> u32 {
    let terminated = memchr::memchr_iter(b'\n', bytes).count();
    let unterminated = bytes.last().is_some_and(|&last| last != b'\n');
    u32::try_from(terminated + usize::from(unterminated)).unwrap_or(u32::MAX)
}

fn parse(message: &[u8]) -> Option<Message<'_>> {
    if may_nest_too_deep(message) {
        return None;
    }
    // mail-parser means never to panic, but its recovery paths carry debug
    // assertions, and one odd stored message must not take a session down.
    std::panic::catch_unwind(|| MessageParser::default().parse(message))
        .ok()
        .flatten()
}

/// Whether `message` may hold messages nested deeper than mail-parser can
/// take: it builds (and drops) its tree of parts recursively, with no
/// limit, so a message of a few hundred KB of nested `message/rfc822`
/// parts would overflow the stack and kill the process. Each level needs
/// a `Content-Type` field of its own (a `message/*` part, or a
/// `multipart/digest` whose parts are messages), so counting those fields
/// (their values unfolded, without whitespace or comments, as the parser
/// reads them) bounds the depth; a message with more than
/// [`MAX_NESTING_FIELDS`] is not parsed at all (its structure is opaque).
pub fn may_nest_too_deep(message: &[u8]) -> bool {
    let mut nesting = 0;
    let mut lines = message.split(|&b| b == b'\n').peekable();
    while let Some(line) = lines.next() {
        let Some(first) = content_type_value(line) else {
            continue;
        };
        let mut value = first.to_vec();
        while let Some(next) =
            lines.next_if(|l| l.first().is_some_and(|&b| b == b' ' || b == b'\t'))
        {
            value.extend_from_slice(next);
        }
        let value = squeezed(&value);
        if value.starts_with(b"message/") || value.starts_with(b"multipart/digest") {
            nesting += 1;
            if nesting > MAX_NESTING_FIELDS {
                return true;
            }
        }
    }
    false
}

/// `Content-Type` fields, counted anywhere, past which a message is not
/// parsed: far more than real mail nests (a digest of a couple of hundred
/// forwarded messages passes), far fewer than the stack takes.
const MAX_NESTING_FIELDS: usize = 256;

/// The value of a `Content-Type` field starting `line` (its name in any
/// case, blanks allowed before the colon), if it is one.
fn content_type_value(line: &[u8]) -> Option<&[u8]> {
    const NAME: &[u8] = b"content-type";
    if line.len() < NAME.len() || !line[..NAME.len()].eq_ignore_ascii_case(NAME) {
        return None;
    }
    let rest = &line[NAME.len()..];
    let blanks = rest
        .iter()
        .take_while(|&&b| b == b' ' || b == b'\t')
        .count();
    rest[blanks..].strip_prefix(b":")
}

/// A field value lowercased, without whitespace or `(comments)`.
pub(crate) fn squeezed(value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len());
    let mut depth = 0usize;
    for &b in value {
        match b {
            b'(' => depth += 1,
            b')' => depth = depth.saturating_sub(1),
            _ if depth > 0 || b.is_ascii_whitespace() => {}
            _ => out.push(b.to_ascii_lowercase()),
        }
    }
    out
}

/// `partial` applied: past the end is empty, a long length is cut short.
pub fn cut(bytes: &[u8], partial: Option<(u32, u32)>) -> &[u8] {
    let Some((start, length)) = partial else {
        return bytes;
    };
    let start = (start as usize).min(bytes.len());
    let end = start.saturating_add(length as usize).min(bytes.len());
    bytes.get(start..end).unwrap_or_default()
}

/// A MIME entity (a message or a body part): where its header and body lie
/// in the bytes it was parsed from, and what its body holds.
struct Entity<'m> {
    /// The bytes the ranges index: the stored message, or the decoded body
    /// of a transfer-encoded message/rfc822 part.
    raw: &'m [u8],
    /// The header, with the blank line that ends it.
    header: Range<usize>,
    body: Range<usize>,
    /// The header as mail-parser read it, for the structured fields.
    parsed: &'m [Header<'m>],
    kind: Kind<'m>,
}

enum Kind<'m> {
    Leaf,
    Multipart(Vec<Entity<'m>>),
    /// message/rfc822 (or global): the body is a message of its own.
    Message(Box<Entity<'m>>),
}

impl<'m> Entity<'m> {
    /// The message in `raw[span]` as mail-parser read it, or a header-less
    /// body when it could not.
    fn message(
        parsed: Option<&'m Message<'m>>,
        raw: &'m [u8],
        span: Range<usize>,
        depth: usize,
    ) -> Self {
        let Some((message, root)) = parsed.and_then(|m| Some((m, m.parts.first()?))) else {
            return Self::headerless(raw, span);
        };
        let mut entity = Self::part(message, 0, root, None, depth);
        if std::ptr::eq(entity.raw, raw) {
            // An inline message/rfc822 is read in place: it ends where its
            // part does, whatever mail-parser made of its own end, and its
            // body is all the rest of the part (mail-parser ends a
            // multipart at its close delimiter, before the epilogue).
            entity.clip(span.end);
            entity.body.end = span.end.max(entity.body.start);
        }
        entity
    }

    /// Cuts this entity and all within it (in the same bytes) at `end`.
    fn clip(&mut self, end: usize) {
        let raw = self.raw;
        for range in [&mut self.header, &mut self.body] {
            *range = range.start.min(end)..range.end.min(end);
        }
        match &mut self.kind {
            Kind::Multipart(parts) => parts.iter_mut().for_each(|part| part.clip(end)),
            Kind::Message(inner) if std::ptr::eq(inner.raw, raw) => inner.clip(end),
            Kind::Message(_) | Kind::Leaf => {}
        }
    }

    fn part(
        message: &'m Message<'m>,
        id: usize,
        part: &'m MessagePart<'m>,
        parent_boundary: Option<&str>,
        depth: usize,
    ) -> Self {
        let raw: &'m [u8] = &message.raw_message;
        let header = span(raw, part.offset_header, part.offset_body);
        let mut body = span(raw, part.offset_body, part.offset_end);
        if let Some(boundary) = parent_boundary {
            body.end = end_before_boundary(raw, &body, boundary);
        }
        let declared = content_type(&part.headers);
        let kind = match &part.body {
            _ if depth >= MAX_DEPTH => Kind::Leaf,
            PartType::Multipart(ids) if is_multipart(declared) => {
                let boundary = declared.and_then(|c| c.attribute("boundary"));
                let children = ids
                    .iter()
                    .map(|&child| child as usize)
                    // Part ids only grow down the tree; anything else would loop.
                    .filter(|&child| child > id)
                    .filter_map(|child| {
                        let part = message.parts.get(child)?;
                        Some(Self::part(message, child, part, boundary, depth + 1))
                    })
                    .collect();
                Kind::Multipart(children)
            }
            PartType::Message(inner) => Kind::Message(Box::new(Self::message(
                Some(inner),
                raw,
                body.clone(),
                depth + 1,
            ))),
            _ if is_message(declared) => {
                Kind::Message(Box::new(Self::headerless(raw, body.clone())))
            }
            _ => Kind::Leaf,
        };
        Self {
            raw,
            header,
            body,
            parsed: &part.headers,
            kind,
        }
    }

    fn headerless(raw: &'m [u8], body: Range<usize>) -> Self {
        Self {
            raw,
            header: body.start..body.start,
            body,
            parsed: &[],
            kind: Kind::Leaf,
        }
    }

    fn header_bytes(&self) -> &'m [u8] {
        self.raw.get(self.header.clone()).unwrap_or_default()
    }

    fn body_bytes(&self) -> &'m [u8] {
        self.raw.get(self.body.clone()).unwrap_or_default()
    }

    fn fields(&self) -> Fields<'m> {
        Fields::of(self.header_bytes())
    }

    fn envelope(&self) -> Envelope<'static> {
        let fields = self.fields();
        let from = self.addresses(&HeaderName::From);
        let or_from = |list: Vec<Address<'static>>| {
            if list.is_empty() {
                from.clone()
            } else {
                list
            }
        };
        Envelope {
            date: nstring(fields.value(b"date")),
            subject: nstring(fields.value(b"subject")),
            sender: or_from(self.addresses(&HeaderName::Sender)),
            reply_to: or_from(self.addresses(&HeaderName::ReplyTo)),
            to: self.addresses(&HeaderName::To),
            cc: self.addresses(&HeaderName::Cc),
            bcc: self.addresses(&HeaderName::Bcc),
            in_reply_to: nstring(fields.value(b"in-reply-to")),
            message_id: nstring(fields.value(b"message-id")),
            from,
        }
    }

    /// The first `name` field's addresses, groups spelled out.
    fn addresses(&self, name: &HeaderName<'_>) -> Vec<Address<'static>> {
        let value = self.parsed.iter().find(|h| h.name == *name);
        match value.and_then(|h| h.value.as_address()) {
            Some(ParsedAddress::List(list)) => list.iter().map(mailbox).collect(),
            Some(ParsedAddress::Group(groups)) => groups.iter().flat_map(group).collect(),
            None => Vec::new(),
        }
    }

    fn structure(&self, extensible: bool) -> BodyStructure<'static> {
        let Kind::Multipart(parts) = &self.kind else {
            return BodyStructure::Single {
                body: self.body(extensible),
                extension_data: extensible.then(|| SinglePartExtensionData {
                    md5: NString::NIL,
                    tail: Some(self.disposition()),
                }),
            };
        };
        let bodies: Vec<_> = parts.iter().map(|p| p.structure(extensible)).collect();
        let media = self.media_type();
        BodyStructure::Multi {
            // A multipart with no part at all still needs one in IMAP's
            // grammar: an empty text/plain, as Dovecot reports it.
            bodies: Vec1::try_from(bodies).unwrap_or_else(|_| {
                Vec1::from(Entity::headerless(&[], 0..0).structure(extensible))
            }),
            subtype: istring(media.subtype),
            extension_data: extensible.then(|| MultiPartExtensionData {
                parameter_list: media.parameters,
                tail: Some(self.disposition()),
            }),
        }
    }

    /// A non-multipart body: the basic fields, then what its type adds.
    fn body(&self, extensible: bool) -> Body<'static> {
        let fields = self.fields();
        let media = self.media_type();
        let content = self.body_bytes();
        let encoding = fields
            .value(b"content-transfer-encoding")
            .filter(|e| !e.is_empty())
            .map_or_else(|| b"7BIT".to_vec(), |e| e.to_ascii_uppercase());
        let basic = BasicFields {
            parameter_list: media.parameters,
            id: nstring(fields.value(b"content-id")),
            description: nstring(fields.value(b"content-description")),
            content_transfer_encoding: istring(encoding),
            size: u32::try_from(content.len()).unwrap_or(u32::MAX),
        };
        let specific = match &self.kind {
            Kind::Message(inner) => SpecificFields::Message {
                envelope: Box::new(inner.envelope()),
                body_structure: Box::new(inner.structure(extensible)),
                number_of_lines: line_count(content),
            },
            _ if media.r#type == "TEXT" => SpecificFields::Text {
                subtype: istring(media.subtype),
                number_of_lines: line_count(content),
            },
            _ => SpecificFields::Basic {
                r#type: istring(media.r#type),
                subtype: istring(media.subtype),
            },
        };
        Body { basic, specific }
    }

    /// Type, subtype and parameters as BODYSTRUCTURE reports them: names
    /// upper-cased (the UW-IMAP spelling), values as given.
    fn media_type(&self) -> MediaType {
        let declared = content_type(self.parsed);
        let subtype = declared.and_then(ContentType::subtype);
        let (r#type, subtype) = match (&self.kind, declared, subtype) {
            (Kind::Message(_), Some(ct), Some(subtype)) if is_message(Some(ct)) => {
                ("MESSAGE".to_owned(), subtype.to_ascii_uppercase())
            }
            (Kind::Message(_), _, _) => ("MESSAGE".to_owned(), "RFC822".to_owned()),
            (Kind::Multipart(_), _, Some(subtype)) => {
                ("MULTIPART".to_owned(), subtype.to_ascii_uppercase())
            }
            (Kind::Multipart(_), _, None) => ("MULTIPART".to_owned(), "MIXED".to_owned()),
            (Kind::Leaf, Some(ct), Some(subtype))
                if !is_multipart(Some(ct)) && !is_message(Some(ct)) =>
            {
                (
                    ct.ctype().to_ascii_uppercase(),
                    subtype.to_ascii_uppercase(),
                )
            }
            // What the parser could not honour is the RFC 2045 default.
            (Kind::Leaf, _, _) => return MediaType::default_text(),
        };
        let mut parameters = parameters(declared);
        if r#type == "TEXT" && declared.and_then(|ct| ct.attribute("charset")).is_none() {
            parameters.push(charset_us_ascii());
        }
        MediaType {
            r#type,
            subtype,
            parameters,
        }
    }

    /// The extension data after md5 (or a multipart's parameters):
    /// disposition, language, location.
    fn disposition(&self) -> Disposition<'static> {
        let fields = self.fields();
        let declared = self
            .parsed
            .iter()
            .find(|h| h.name == HeaderName::ContentDisposition)
            .and_then(|h| h.value.as_content_type());
        let languages = fields.value(b"content-language").unwrap_or_default();
        Disposition {
            disposition: declared
                .map(|d| (istring(d.ctype().to_ascii_uppercase()), parameters(Some(d)))),
            tail: Some(Language {
                language: languages
                    .split(|&b| b == b',')
                    .map(<[u8]>::trim_ascii)
                    .filter(|tag| !tag.is_empty())
                    .map(istring)
                    .collect(),
                tail: Some(Location {
                    location: nstring(fields.value(b"content-location")),
                    extensions: Vec::new(),
                }),
            }),
        }
    }

    fn select(&self, section: &Section<'_>) -> Cow<'m, [u8]> {
        let found = match section {
            Section::Part(part) => self.locate(part).map(|e| e.body_bytes().into()),
            Section::Mime(part) => self.locate(part).map(|e| e.header_bytes().into()),
            Section::Header(part) => self
                .message_at(part.as_ref())
                .map(|m| m.header_bytes().into()),
            Section::Text(part) => self
                .message_at(part.as_ref())
                .map(|m| m.body_bytes().into()),
            Section::HeaderFields(part, names) => self
                .message_at(part.as_ref())
                .map(|m| m.fields().subset(names.as_ref(), true).into()),
            Section::HeaderFieldsNot(part, names) => self
                .message_at(part.as_ref())
                .map(|m| m.fields().subset(names.as_ref(), false).into()),
        };
        found.unwrap_or_default()
    }

    /// The message HEADER and TEXT refer to: this one, or the one a
    /// message/rfc822 part holds.
    fn message_at(&self, part: Option<&Part>) -> Option<&Entity<'m>> {
        let Some(part) = part else {
            return Some(self);
        };
        match &self.locate(part)?.kind {
            Kind::Message(inner) => Some(inner),
            _ => None,
        }
    }

    /// The part a part number names, this entity being the message.
    fn locate(&self, part: &Part) -> Option<&Entity<'m>> {
        let mut numbers = part.0.as_ref().iter().map(|n| n.get() as usize);
        let mut entity = self.message_part(numbers.next()?)?;
        for number in numbers {
            entity = entity.subpart(number)?;
        }
        Some(entity)
    }

    /// Part `number` of the message this entity heads: a multipart's parts,
    /// or else part 1 alone, the entity itself (its body is the body).
    fn message_part(&self, number: usize) -> Option<&Entity<'m>> {
        match &self.kind {
            Kind::Multipart(parts) => parts.get(number.checked_sub(1)?),
            _ => (number == 1).then_some(self),
        }
    }

    /// Part `number` inside this part: a multipart's parts, or those of the
    /// message a message/rfc822 part holds.
    fn subpart(&self, number: usize) -> Option<&Entity<'m>> {
        match &self.kind {
            Kind::Multipart(parts) => parts.get(number.checked_sub(1)?),
            Kind::Message(inner) => inner.message_part(number),
            Kind::Leaf => None,
        }
    }
}

/// A body type as BODYSTRUCTURE spells it.
struct MediaType {
    r#type: String,
    subtype: String,
    parameters: Vec<(IString<'static>, IString<'static>)>,
}

impl MediaType {
    fn default_text() -> Self {
        Self {
            r#type: "TEXT".to_owned(),
            subtype: "PLAIN".to_owned(),
            parameters: vec![charset_us_ascii()],
        }
    }
}

fn charset_us_ascii() -> (IString<'static>, IString<'static>) {
    (istring("CHARSET"), istring("us-ascii"))
}

/// A range of `raw`, clamped: an offset mail-parser got wrong makes a
/// short section, never an out-of-bounds slice.
fn span(raw: &[u8], start: u32, end: u32) -> Range<usize> {
    let start = (start as usize).min(raw.len());
    let end = (end as usize).clamp(start, raw.len());
    start..end
}

/// Where a body part ends at the latest: before the first delimiter line
/// of its parent's boundary, which owns the line break in front of it
/// (RFC 2046 §5.1.1). mail-parser's own end can run past it when it
/// recovers a broken part.
fn end_before_boundary(raw: &[u8], body: &Range<usize>, boundary: &str) -> usize {
    let bytes = raw.get(body.clone()).unwrap_or_default();
    if boundary.is_empty() {
        return body.end;
    }
    let delimiter = [b"\n--", boundary.as_bytes()].concat();
    if bytes.starts_with(&delimiter[1..]) {
        return body.start;
    }
    match memchr::memmem::find(bytes, &delimiter) {
        Some(at) if at > 0 && bytes.get(at - 1) == Some(&b'\r') => body.start + at - 1,
        Some(at) => body.start + at,
        None => body.end,
    }
}

fn content_type<'m>(headers: &'m [Header<'m>]) -> Option<&'m ContentType<'m>> {
    headers
        .iter()
        .find(|h| h.name == HeaderName::ContentType)
        .and_then(|h| h.value.as_content_type())
}

fn is_multipart(content_type: Option<&ContentType<'_>>) -> bool {
    content_type.is_some_and(|ct| ct.ctype().eq_ignore_ascii_case("multipart"))
}

/// The types mail-parser reads as an encapsulated message.
fn is_message(content_type: Option<&ContentType<'_>>) -> bool {
    content_type.is_some_and(|ct| {
        ct.ctype().eq_ignore_ascii_case("message")
            && ct.subtype().is_some_and(|s| {
                s.eq_ignore_ascii_case("rfc822") || s.eq_ignore_ascii_case("global")
            })
    })
}

fn parameters(content_type: Option<&ContentType<'_>>) -> Vec<(IString<'static>, IString<'static>)> {
    content_type
        .and_then(ContentType::attributes)
        .unwrap_or_default()
        .iter()
        .map(|a| (istring(a.name.to_ascii_uppercase()), header_text(&a.value)))
        .collect()
}

/// A group as RFC 9051 §7.5.2 spells it. mail-parser puts the addresses
/// outside any group into groups without a name: those stand alone.
fn group(group: &Group<'_>) -> Vec<Address<'static>> {
    let Some(name) = &group.name else {
        return group.addresses.iter().map(mailbox).collect();
    };
    let mut list = Vec::with_capacity(group.addresses.len() + 2);
    list.push(Address {
        name: NString::NIL,
        adl: NString::NIL,
        mailbox: NString(Some(header_text(name))),
        host: NString::NIL,
    });
    // Only mailboxes are members: a comment alone ("g: (foo) ;") is
    // what mail-parser reads as a name without an address.
    list.extend(
        group
            .addresses
            .iter()
            .filter(|addr| addr.address.is_some())
            .map(mailbox),
    );
    list.push(Address {
        name: NString::NIL,
        adl: NString::NIL,
        mailbox: NString::NIL,
        host: NString::NIL,
    });
    list
}

fn mailbox(addr: &Addr<'_>) -> Address<'static> {
    // A bare word ("From: MAILER-DAEMON") is a name to mail-parser and a
    // mailbox to IMAP.
    let (name, address) = match (addr.name.as_deref(), addr.address.as_deref()) {
        (name, Some(address)) => (name, address),
        (Some(name), None) => (None, name),
        (None, None) => (None, ""),
    };
    // An obsolete source route ("<@relay:user@host>", RFC 5322 §4.4) is
    // the ENVELOPE's adl, apart from the address.
    let (route, address) = match address.split_once(':') {
        Some((route, spec)) if route.starts_with('@') => (Some(route), spec),
        _ => (None, address),
    };
    let (local, host) = address.rsplit_once('@').unwrap_or((address, MISSING_HOST));
    Address {
        name: NString(name.filter(|n| !n.is_empty()).map(header_text)),
        adl: NString(route.map(istring)),
        mailbox: NString(Some(istring(local))),
        host: NString(Some(istring(host))),
    }
}

/// Header text as an IMAP string. mail-parser decodes encoded words; IMAP
/// header data is 7-bit, so 8-bit text goes back into one (RFC 2047).
fn header_text(text: &str) -> IString<'static> {
    if text.is_ascii() {
        return istring(text);
    }
    let encoded = base64::engine::general_purpose::STANDARD.encode(text);
    istring(format!("=?UTF-8?B?{encoded}?="))
}

/// Bytes as an IMAP string: quoted where they can be, a literal otherwise.
/// NUL is the one octet no IMAP string may carry, so it is dropped.
fn istring(bytes: impl Into<Vec<u8>>) -> IString<'static> {
    let mut bytes = bytes.into();
    bytes.retain(|&b| b != 0);
    IString::try_from(bytes).unwrap_or_else(|_| IString::from(Quoted::unvalidated("")))
}

fn nstring(value: Option<Vec<u8>>) -> NString<'static> {
    NString(value.map(istring))
}

/// A header as stored: its fields in order, and the blank line that ends
/// it (empty when the header runs to the end of the message).
struct Fields<'a> {
    header: &'a [u8],
    fields: Vec<Field<'a>>,
    end: &'a [u8],
}

/// One header field: its name and its lines, continuation lines included.
struct Field<'a> {
    name: &'a [u8],
    lines: Range<usize>,
}

impl<'a> Fields<'a> {
    fn of(header: &'a [u8]) -> Self {
        let mut fields: Vec<Field<'a>> = Vec::new();
        let mut start = 0;
        while let Some(rest) = header.get(start..).filter(|rest| !rest.is_empty()) {
            let length = memchr::memchr(b'\n', rest).map_or(rest.len(), |at| at + 1);
            let line = rest.get(..length).unwrap_or_default();
            let end = start + length;
            // mail-parser ends the header at an empty line, or at a
            // whitespace one when nothing follows.
            if matches!(line, b"\n" | b"\r\n")
                || (end == header.len() && line.trim_ascii().is_empty())
            {
                return Self {
                    header,
                    fields,
                    end: line,
                };
            }
            match fields.last_mut() {
                Some(field) if matches!(line.first(), Some(b' ' | b'\t')) => field.lines.end = end,
                _ => fields.push(Field {
                    name: field_name(line),
                    lines: start..end,
                }),
            }
            start = end;
        }
        Self {
            header,
            fields,
            end: &[],
        }
    }

    fn lines(&self, field: &Field<'_>) -> &'a [u8] {
        self.header.get(field.lines.clone()).unwrap_or_default()
    }

    /// The first `name` field's value: unfolded, trimmed, not decoded.
    fn value(&self, name: &[u8]) -> Option<Vec<u8>> {
        let field = self
            .fields
            .iter()
            .find(|f| f.name.eq_ignore_ascii_case(name))?;
        let lines = self.lines(field);
        let value = lines.get(memchr::memchr(b':', lines)? + 1..)?;
        let unfolded: Vec<u8> = value
            .iter()
            .copied()
            .filter(|&b| b != b'\r' && b != b'\n')
            .collect();
        Some(unfolded.trim_ascii().to_vec())
    }

    /// HEADER.FIELDS (`matching`) or HEADER.FIELDS.NOT: the fields' lines as
    /// stored, in message order, then the blank line.
    fn subset(&self, names: &[AString<'_>], matching: bool) -> Vec<u8> {
        let mut subset = Vec::new();
        for field in &self.fields {
            let named = !field.name.is_empty()
                && names
                    .iter()
                    .any(|n| n.as_ref().eq_ignore_ascii_case(field.name));
            if named == matching {
                subset.extend_from_slice(self.lines(field));
            }
        }
        subset.extend_from_slice(self.end);
        subset
    }
}

/// A field's name: what comes before the colon, less the space obsolete
/// syntax allows there. A line without a colon has none.
fn field_name(line: &[u8]) -> &[u8] {
    match memchr::memchr(b':', line) {
        Some(colon) => line.get(..colon).unwrap_or_default().trim_ascii_end(),
        None => &[],
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn messages_nested_past_the_limit_are_never_parsed() {
        // 50,000 levels of message/rfc822: mail-parser would build (and
        // drop) that tree recursively and overflow the stack.
        let level = b"Content-Type: message/rfc822\r\n\r\n";
        let deep = level.repeat(50_000);
        assert!(super::may_nest_too_deep(&deep));
        assert!(super::parse(&deep).is_none());
        let _ = super::body_structure(&deep, true);
        let digests = b"Content-Type: MULTIPART/Digest; boundary=x\r\n\r\n--x\r\n\r\n".repeat(300);
        assert!(super::may_nest_too_deep(&digests));
        // However the type is written: blanks, comments, folded.
        for odd in [
            &b"Content-Type: message /rfc822\r\n\r\n"[..],
            b"content-type : message(x)/rfc822\r\n\r\n",
            b"Content-Type:\r\n\tmessage\r\n /rfc822\r\n\r\n",
        ] {
            assert!(super::may_nest_too_deep(&odd.repeat(300)));
        }
        // Mail that forwards a hundred messages, or talks of message/ a
        // lot, is parsed as ever.
        assert!(!super::may_nest_too_deep(&level.repeat(100)));
        // As deep as is still parsed: the parser's tree, built and dropped,
        // fits the stack (a debug build's test thread, 2 MiB).
        let deepest = level.repeat(256);
        assert!(!super::may_nest_too_deep(&deepest));
        let _ = super::body_structure(&deepest, true);
        let talk = b"see message/rfc822 and message/global\r\n".repeat(1000);
        let text = [&b"Content-Type: text/plain\r\n\r\n"[..], &talk].concat();
        assert!(!super::may_nest_too_deep(&text));
    }

    #[test]
    fn the_envelope_reads_the_header_alone_and_says_the_same() {
        let whole = |m: &[u8]| {
            let parsed = super::parse(m);
            super::Entity::message(parsed.as_ref(), m, 0..m.len(), 0).envelope()
        };
        let attached = format!(
            "From: A <a@x.test>\r\nTo: b@y.test, \"C, D\" <c@z.test>\r\nSubject: hi\r\n\
             Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\
             Content-Type: message/rfc822\r\n\r\nFrom: inner@x.test\r\n\r\nbody\r\n--b--\r\n{}",
            "QUJD\r\n".repeat(1000)
        );
        for message in [
            attached.as_bytes(),
            b"Subject: lf only\nFrom: e@x.test\n\nbody\n",
            b"Subject: no body\r\nFrom: f@x.test\r\n",
            b"",
            b"\r\nbody only\r\n",
        ] {
            assert_eq!(super::envelope(message), whole(message), "{message:?}");
        }
        assert_eq!(super::header_end(b"A: b\r\n\r\nrest"), 8);
        assert_eq!(super::header_end(b"A: b\n\nrest"), 6);
        assert_eq!(super::header_end(b"A: b\r\n"), 6);
    }

    use std::num::NonZeroU32;

    use imap_codec::{
        encode::Encoder,
        imap_types::{
            fetch::MessageDataItem,
            response::{Data, Response},
        },
        ResponseCodec,
    };

    use super::*;

    /// How a FETCH response carrying `item` reads on the wire.
    fn wire(item: MessageDataItem<'static>) -> String {
        let response = Response::Data(Data::Fetch {
            seq: NonZeroU32::MIN,
            items: Vec1::from(item),
        });
        let bytes = ResponseCodec::default().encode(&response).dump();
        String::from_utf8(bytes).expect("test responses are UTF-8")
    }

    fn wire_structure(message: &[u8]) -> String {
        wire(MessageDataItem::BodyStructure(body_structure(
            message, true,
        )))
    }

    fn part(numbers: &[u32]) -> Part {
        let numbers = numbers
            .iter()
            .map(|&n| NonZeroU32::new(n).expect("part numbers are not 0"))
            .collect::<Vec<_>>();
        Part(Vec1::try_from(numbers).expect("at least one part number"))
    }

    fn names(names: &[&'static str]) -> Vec1<AString<'static>> {
        let names = names
            .iter()
            .map(|&n| AString::try_from(n).expect("valid field name"))
            .collect::<Vec<_>>();
        Vec1::try_from(names).expect("at least one name")
    }

    fn fetch(message: &[u8], section: &Section<'_>) -> String {
        String::from_utf8_lossy(&super::section(message, Some(section), None)).into_owned()
    }

    fn text(value: &NString<'_>) -> Option<String> {
        value
            .0
            .as_ref()
            .map(|s| String::from_utf8_lossy(s.as_ref()).into_owned())
    }

    const SIMPLE: &[u8] = b"From: Alice <alice@example.com>\r\n\
        To: bob@example.org\r\n\
        Subject: Lunch\r\n\
        Date: Mon, 7 Feb 2022 21:52:25 -0800\r\n\
        Message-ID: <1@example.com>\r\n\
        \r\n\
        Hello IMAP\r\n";

    const ALTERNATIVE: &[u8] = b"From: a@example.com\r\n\
        Content-Type: multipart/alternative; boundary=\"alt\"\r\n\
        \r\n\
        --alt\r\n\
        Content-Type: text/plain; charset=utf-8\r\n\
        \r\n\
        plain\r\n\
        --alt\r\n\
        Content-Type: text/html; charset=utf-8\r\n\
        Content-Transfer-Encoding: quoted-printable\r\n\
        \r\n\
        <p>html</p>\r\n\
        --alt--\r\n";

    const MIXED: &[u8] = b"From: Alice <alice@example.com>\r\n\
        To: Bob <bob@example.com>\r\n\
        Subject: mixed\r\n\
        Content-Type: multipart/mixed; boundary=\"outer\"\r\n\
        \r\n\
        preamble\r\n\
        --outer\r\n\
        Content-Type: multipart/alternative; boundary=\"inner\"\r\n\
        \r\n\
        --inner\r\n\
        Content-Type: text/plain\r\n\
        \r\n\
        inner plain\r\n\
        --inner\r\n\
        Content-Type: text/html\r\n\
        \r\n\
        <b>inner</b>\r\n\
        --inner--\r\n\
        --outer\r\n\
        Content-Type: application/pdf; name=\"doc.pdf\"\r\n\
        Content-Disposition: attachment; filename=\"doc.pdf\"\r\n\
        Content-Transfer-Encoding: base64\r\n\
        Content-ID: <pdf@example.com>\r\n\
        Content-Description: A document\r\n\
        \r\n\
        JVBERi0xLjQK\r\n\
        --outer\r\n\
        Content-Type: message/rfc822\r\n\
        \r\n\
        From: Carol <carol@example.com>\r\n\
        Subject: forwarded\r\n\
        Message-ID: <fwd@example.com>\r\n\
        \r\n\
        forwarded body\r\n\
        line two\r\n\
        --outer--\r\n\
        epilogue\r\n";

    #[test]
    fn plain_message_envelope() {
        assert_eq!(
            wire(MessageDataItem::Envelope(envelope(SIMPLE))),
            "* 1 FETCH (ENVELOPE (\"Mon, 7 Feb 2022 21:52:25 -0800\" \"Lunch\" \
             ((\"Alice\" NIL \"alice\" \"example.com\")) \
             ((\"Alice\" NIL \"alice\" \"example.com\")) \
             ((\"Alice\" NIL \"alice\" \"example.com\")) \
             ((NIL NIL \"bob\" \"example.org\")) NIL NIL NIL \"<1@example.com>\"))\r\n"
        );
    }

    #[test]
    fn envelope_groups_and_source_routes() {
        let groups = b"From: user@domain (Real Name)\r\n\
            To: group: g1@d1.org, g2@d2.org;, group2: g3@d3.org;\r\n\
            Cc: group:;, group2: (foo) ;\r\n\r\nbody\r\n";
        let listed = wire(MessageDataItem::Envelope(envelope(groups)));
        assert!(
            listed.contains(
                "((NIL NIL \"group\" NIL)(NIL NIL \"g1\" \"d1.org\")(NIL NIL \"g2\" \"d2.org\")\
                 (NIL NIL NIL NIL)(NIL NIL \"group2\" NIL)(NIL NIL \"g3\" \"d3.org\")(NIL NIL NIL NIL)) \
                 ((NIL NIL \"group\" NIL)(NIL NIL NIL NIL)(NIL NIL \"group2\" NIL)(NIL NIL NIL NIL))"
            ),
            "{listed}"
        );
        let routed = b"From: <@route:user@domain>\r\n\r\nbody\r\n";
        let routed = wire(MessageDataItem::Envelope(envelope(routed)));
        assert!(
            routed.contains("((NIL \"@route\" \"user\" \"domain\"))"),
            "{routed}"
        );
    }

    #[test]
    fn text_of_an_attached_multipart_keeps_its_epilogue() {
        let message = b"Content-Type: multipart/mixed; boundary=\"o\"\r\n\r\n\
            --o\r\nContent-Type: message/rfc822\r\n\r\n\
            Subject: inner\r\nContent-Type: multipart/mixed; boundary=\"i\"\r\n\r\n\
            prologue\r\n--i\r\n\r\npart\r\n--i--\r\nepilogue\r\n\
            --o--\r\n";
        assert_eq!(
            fetch(message, &Section::Text(Some(part(&[1])))),
            "prologue\r\n--i\r\n\r\npart\r\n--i--\r\nepilogue"
        );
    }

    #[test]
    fn plain_message_structure() {
        assert_eq!(
            wire_structure(SIMPLE),
            "* 1 FETCH (BODYSTRUCTURE (\"TEXT\" \"PLAIN\" (\"CHARSET\" \"us-ascii\") \
             NIL NIL \"7BIT\" 12 1 NIL NIL NIL NIL))\r\n"
        );
        assert_eq!(
            wire(MessageDataItem::Body(body_structure(SIMPLE, false))),
            "* 1 FETCH (BODY (\"TEXT\" \"PLAIN\" (\"CHARSET\" \"us-ascii\") \
             NIL NIL \"7BIT\" 12 1))\r\n"
        );
        let declared = b"Content-Type: text/plain; charset=\"ISO-8859-1\"; format=flowed\r\n\
            Content-Transfer-Encoding: 8bit\r\n\r\nline\r\nline\r\n";
        assert_eq!(
            wire_structure(declared),
            "* 1 FETCH (BODYSTRUCTURE (\"TEXT\" \"PLAIN\" (\"CHARSET\" \"ISO-8859-1\" \
             \"FORMAT\" \"flowed\") NIL NIL \"8BIT\" 12 2 NIL NIL NIL NIL))\r\n"
        );
    }

    #[test]
    fn alternative_structure() {
        assert_eq!(
            wire_structure(ALTERNATIVE),
            "* 1 FETCH (BODYSTRUCTURE (\
             (\"TEXT\" \"PLAIN\" (\"CHARSET\" \"utf-8\") NIL NIL \"7BIT\" 5 1 NIL NIL NIL NIL)\
             (\"TEXT\" \"HTML\" (\"CHARSET\" \"utf-8\") NIL NIL \"QUOTED-PRINTABLE\" 11 1 \
             NIL NIL NIL NIL) \
             \"ALTERNATIVE\" (\"BOUNDARY\" \"alt\") NIL NIL NIL))\r\n"
        );
        assert_eq!(
            wire(MessageDataItem::Body(body_structure(ALTERNATIVE, false))),
            "* 1 FETCH (BODY (\
             (\"TEXT\" \"PLAIN\" (\"CHARSET\" \"utf-8\") NIL NIL \"7BIT\" 5 1)\
             (\"TEXT\" \"HTML\" (\"CHARSET\" \"utf-8\") NIL NIL \"QUOTED-PRINTABLE\" 11 1) \
             \"ALTERNATIVE\"))\r\n"
        );
        assert_eq!(fetch(ALTERNATIVE, &Section::Part(part(&[1]))), "plain");
        assert_eq!(
            fetch(ALTERNATIVE, &Section::Part(part(&[2]))),
            "<p>html</p>"
        );
    }

    #[test]
    fn mixed_structure() {
        let forwarded = "From: Carol <carol@example.com>\r\nSubject: forwarded\r\n\
            Message-ID: <fwd@example.com>\r\n\r\nforwarded body\r\nline two";
        assert_eq!(
            wire_structure(MIXED),
            format!(
                "* 1 FETCH (BODYSTRUCTURE (\
                 ((\"TEXT\" \"PLAIN\" (\"CHARSET\" \"us-ascii\") NIL NIL \"7BIT\" 11 1 \
                 NIL NIL NIL NIL)\
                 (\"TEXT\" \"HTML\" (\"CHARSET\" \"us-ascii\") NIL NIL \"7BIT\" 12 1 \
                 NIL NIL NIL NIL) \"ALTERNATIVE\" (\"BOUNDARY\" \"inner\") NIL NIL NIL)\
                 (\"APPLICATION\" \"PDF\" (\"NAME\" \"doc.pdf\") \"<pdf@example.com>\" \
                 \"A document\" \"BASE64\" 12 NIL (\"ATTACHMENT\" (\"FILENAME\" \"doc.pdf\")) \
                 NIL NIL)\
                 (\"MESSAGE\" \"RFC822\" NIL NIL NIL \"7BIT\" {} \
                 (NIL \"forwarded\" ((\"Carol\" NIL \"carol\" \"example.com\")) \
                 ((\"Carol\" NIL \"carol\" \"example.com\")) \
                 ((\"Carol\" NIL \"carol\" \"example.com\")) NIL NIL NIL NIL \
                 \"<fwd@example.com>\") \
                 (\"TEXT\" \"PLAIN\" (\"CHARSET\" \"us-ascii\") NIL NIL \"7BIT\" 24 2 \
                 NIL NIL NIL NIL) 6 NIL NIL NIL NIL) \
                 \"MIXED\" (\"BOUNDARY\" \"outer\") NIL NIL NIL))\r\n",
                forwarded.len()
            )
        );
    }

    #[test]
    fn mixed_sections() {
        assert_eq!(fetch(MIXED, &Section::Part(part(&[1, 1]))), "inner plain");
        assert_eq!(fetch(MIXED, &Section::Part(part(&[1, 2]))), "<b>inner</b>");
        assert_eq!(
            fetch(MIXED, &Section::Part(part(&[1]))),
            "--inner\r\nContent-Type: text/plain\r\n\r\ninner plain\r\n--inner\r\n\
             Content-Type: text/html\r\n\r\n<b>inner</b>\r\n--inner--"
        );
        assert_eq!(
            fetch(MIXED, &Section::Mime(part(&[1, 2]))),
            "Content-Type: text/html\r\n\r\n"
        );
        assert_eq!(fetch(MIXED, &Section::Part(part(&[2]))), "JVBERi0xLjQK");
        assert_eq!(
            fetch(MIXED, &Section::Mime(part(&[2]))),
            "Content-Type: application/pdf; name=\"doc.pdf\"\r\n\
             Content-Disposition: attachment; filename=\"doc.pdf\"\r\n\
             Content-Transfer-Encoding: base64\r\n\
             Content-ID: <pdf@example.com>\r\n\
             Content-Description: A document\r\n\r\n"
        );
        assert_eq!(
            fetch(MIXED, &Section::Part(part(&[3]))),
            "From: Carol <carol@example.com>\r\nSubject: forwarded\r\n\
             Message-ID: <fwd@example.com>\r\n\r\nforwarded body\r\nline two"
        );
        assert_eq!(
            fetch(MIXED, &Section::Header(Some(part(&[3])))),
            "From: Carol <carol@example.com>\r\nSubject: forwarded\r\n\
             Message-ID: <fwd@example.com>\r\n\r\n"
        );
        assert_eq!(
            fetch(MIXED, &Section::Text(Some(part(&[3])))),
            "forwarded body\r\nline two"
        );
        // The forwarded message is not multipart: its part 1 is its body.
        assert_eq!(
            fetch(MIXED, &Section::Part(part(&[3, 1]))),
            "forwarded body\r\nline two"
        );
        assert_eq!(
            fetch(
                MIXED,
                &Section::HeaderFields(Some(part(&[3])), names(&["subject"]))
            ),
            "Subject: forwarded\r\n\r\n"
        );
        assert_eq!(
            fetch(MIXED, &Section::Mime(part(&[3]))),
            "Content-Type: message/rfc822\r\n\r\n"
        );
        // Missing parts, and HEADER of a part that holds no message.
        assert_eq!(fetch(MIXED, &Section::Part(part(&[4]))), "");
        assert_eq!(fetch(MIXED, &Section::Part(part(&[2, 1]))), "");
        assert_eq!(fetch(MIXED, &Section::Part(part(&[3, 2]))), "");
        assert_eq!(fetch(MIXED, &Section::Part(part(&[1, 1, 1]))), "");
        assert_eq!(fetch(MIXED, &Section::Header(Some(part(&[2])))), "");
        assert_eq!(fetch(MIXED, &Section::Text(Some(part(&[1])))), "");
    }

    #[test]
    fn nested_message_with_multipart() {
        let message = b"Content-Type: multipart/mixed; boundary=XX\r\n\r\n\
            --XX\r\nContent-Type: message/rfc822\r\n\r\n\
            Subject: inner\r\nContent-Type: multipart/alternative; boundary=YY\r\n\r\n\
            --YY\r\n\r\ninner a\r\n--YY\r\nContent-Type: text/html\r\n\r\n<b>x</b>\r\n\
            --YY--\r\n--XX--\r\n";
        assert_eq!(fetch(message, &Section::Part(part(&[1, 1]))), "inner a");
        assert_eq!(fetch(message, &Section::Part(part(&[1, 2]))), "<b>x</b>");
        assert_eq!(
            fetch(message, &Section::Mime(part(&[1, 2]))),
            "Content-Type: text/html\r\n\r\n"
        );
        assert_eq!(
            fetch(message, &Section::Text(Some(part(&[1])))),
            "--YY\r\n\r\ninner a\r\n--YY\r\nContent-Type: text/html\r\n\r\n<b>x</b>\r\n--YY--"
        );
        let BodyStructure::Multi { bodies, .. } = body_structure(message, true) else {
            panic!("multipart/mixed");
        };
        let [BodyStructure::Single { body, .. }] = bodies.as_ref() else {
            panic!("one part");
        };
        let SpecificFields::Message {
            body_structure,
            envelope,
            ..
        } = &body.specific
        else {
            panic!("message/rfc822");
        };
        assert_eq!(text(&envelope.subject).as_deref(), Some("inner"));
        assert!(matches!(**body_structure, BodyStructure::Multi { .. }));
    }

    #[test]
    fn top_level_sections() {
        let header = "From: Alice <alice@example.com>\r\nTo: bob@example.org\r\nSubject: Lunch\r\n\
            Date: Mon, 7 Feb 2022 21:52:25 -0800\r\nMessage-ID: <1@example.com>\r\n\r\n";
        assert_eq!(fetch(SIMPLE, &Section::Header(None)), header);
        assert_eq!(fetch(SIMPLE, &Section::Text(None)), "Hello IMAP\r\n");
        assert_eq!(fetch(SIMPLE, &Section::Part(part(&[1]))), "Hello IMAP\r\n");
        assert_eq!(fetch(SIMPLE, &Section::Mime(part(&[1]))), header);
        assert_eq!(fetch(SIMPLE, &Section::Part(part(&[2]))), "");
        assert_eq!(section(SIMPLE, None, None), SIMPLE);
        let header = section(MIXED, Some(&Section::Header(None)), None);
        let text = section(MIXED, Some(&Section::Text(None)), None);
        assert!(text.starts_with(b"preamble\r\n--outer\r\n"));
        assert_eq!([header, text].concat(), MIXED);
    }

    #[test]
    fn header_fields() {
        let message = b"From: a@example.com\r\n\
            Subject: a folded\r\n \tsubject line\r\n\
            X-Other: x\r\n\
            To: b@example.com,\r\n  c@example.com\r\n\
            subject: second\r\n\
            \r\n\
            body\r\n";
        assert_eq!(
            fetch(
                message,
                &Section::HeaderFields(None, names(&["FROM", "Subject"]))
            ),
            "From: a@example.com\r\nSubject: a folded\r\n \tsubject line\r\n\
             subject: second\r\n\r\n"
        );
        assert_eq!(
            fetch(
                message,
                &Section::HeaderFieldsNot(None, names(&["subject", "from"]))
            ),
            "X-Other: x\r\nTo: b@example.com,\r\n  c@example.com\r\n\r\n"
        );
        assert_eq!(
            fetch(message, &Section::HeaderFields(None, names(&["Cc"]))),
            "\r\n"
        );
        let envelope = envelope(message);
        assert_eq!(
            text(&envelope.subject).as_deref(),
            Some("a folded \tsubject line")
        );
        assert_eq!(envelope.to.len(), 2);
    }

    #[test]
    fn partials() {
        let whole = |partial| section(SIMPLE, None, partial);
        assert_eq!(whole(Some((0, 6))), b"From: ");
        assert_eq!(whole(Some((6, 5))), b"Alice");
        assert_eq!(whole(Some((SIMPLE.len() as u32 - 3, 100))), b"P\r\n");
        assert_eq!(whole(Some((SIMPLE.len() as u32, 10))), b"");
        assert_eq!(whole(Some((u32::MAX, u32::MAX))), b"");
        assert_eq!(whole(Some((2, 0))), b"");
        let text = Section::Text(None);
        assert_eq!(section(SIMPLE, Some(&text), Some((6, 4))), b"IMAP");
        assert_eq!(
            section(SIMPLE, Some(&text), Some((1, u32::MAX))),
            b"ello IMAP\r\n"
        );
    }

    #[test]
    fn no_body() {
        let message = b"From: a@example.com\r\nSubject: nothing else\r\n";
        assert_eq!(
            fetch(message, &Section::Header(None)),
            String::from_utf8_lossy(message)
        );
        assert_eq!(fetch(message, &Section::Text(None)), "");
        // No blank line to add when the header runs to the end.
        assert_eq!(
            fetch(message, &Section::HeaderFields(None, names(&["subject"]))),
            "Subject: nothing else\r\n"
        );
        assert_eq!(
            wire_structure(message),
            "* 1 FETCH (BODYSTRUCTURE (\"TEXT\" \"PLAIN\" (\"CHARSET\" \"us-ascii\") \
             NIL NIL \"7BIT\" 0 0 NIL NIL NIL NIL))\r\n"
        );
        let unterminated = b"Subject: cut";
        assert_eq!(
            text(&envelope(unterminated).subject).as_deref(),
            Some("cut")
        );
        assert_eq!(fetch(unterminated, &Section::Header(None)), "Subject: cut");
    }

    #[test]
    fn no_header() {
        let message = b"Hello world\nsecond line\n";
        let envelope = envelope(message);
        assert_eq!(envelope.subject, NString::NIL);
        assert!(envelope.from.is_empty() && envelope.sender.is_empty());
        assert_eq!(
            wire_structure(message),
            "* 1 FETCH (BODYSTRUCTURE (\"TEXT\" \"PLAIN\" (\"CHARSET\" \"us-ascii\") \
             NIL NIL \"7BIT\" 24 2 NIL NIL NIL NIL))\r\n"
        );
        assert_eq!(fetch(message, &Section::Header(None)), "");
        assert_eq!(
            fetch(message, &Section::Text(None)),
            "Hello world\nsecond line\n"
        );
        assert_eq!(
            fetch(message, &Section::Part(part(&[1]))),
            "Hello world\nsecond line\n"
        );
        // An empty header: the blank line is all of it.
        let blank_first = b"\r\nbody";
        assert_eq!(fetch(blank_first, &Section::Header(None)), "\r\n");
        assert_eq!(fetch(blank_first, &Section::Text(None)), "body");
    }

    #[test]
    fn bare_line_feeds() {
        let message = b"From: a@example.com\nSubject: lf\nContent-Type: multipart/mixed; \
            boundary=b\n\n--b\nContent-Type: text/plain\n\nline1\nline2\n--b\n\nsecond\n--b--\n";
        assert_eq!(text(&envelope(message).subject).as_deref(), Some("lf"));
        assert_eq!(fetch(message, &Section::Part(part(&[1]))), "line1\nline2");
        assert_eq!(
            fetch(message, &Section::Mime(part(&[1]))),
            "Content-Type: text/plain\n\n"
        );
        assert_eq!(fetch(message, &Section::Part(part(&[2]))), "second");
        assert_eq!(
            fetch(message, &Section::HeaderFields(None, names(&["subject"]))),
            "Subject: lf\n\n"
        );
        let BodyStructure::Multi { bodies, .. } = body_structure(message, false) else {
            panic!("multipart");
        };
        let BodyStructure::Single { body, .. } = &bodies.as_ref()[0] else {
            panic!("text part");
        };
        assert_eq!(body.basic.size, 11);
        assert!(matches!(
            body.specific,
            SpecificFields::Text {
                number_of_lines: 2,
                ..
            }
        ));
    }

    #[test]
    fn groups() {
        let message = b"From: Alice <alice@example.com>\r\n\
            To: Friends: a@example.com, Bob <b@example.com>;, c@example.com\r\n\
            Cc: undisclosed-recipients:;\r\n\
            Reply-To: replies@example.com\r\n\
            \r\n\
            body\r\n";
        let envelope = envelope(message);
        assert_eq!(
            wire(MessageDataItem::Envelope(envelope)),
            "* 1 FETCH (ENVELOPE (NIL NIL \
             ((\"Alice\" NIL \"alice\" \"example.com\")) \
             ((\"Alice\" NIL \"alice\" \"example.com\")) \
             ((NIL NIL \"replies\" \"example.com\")) \
             ((NIL NIL \"Friends\" NIL)(NIL NIL \"a\" \"example.com\")\
             (\"Bob\" NIL \"b\" \"example.com\")(NIL NIL NIL NIL)\
             (NIL NIL \"c\" \"example.com\")) \
             ((NIL NIL \"undisclosed-recipients\" NIL)(NIL NIL NIL NIL)) \
             NIL NIL NIL))\r\n"
        );
    }

    #[test]
    fn encoded_words() {
        let message = b"From: =?ISO-8859-1?Q?Andr=E9?= <andre@example.com>\r\n\
            Subject: =?UTF-8?B?w6l0w6k=?=\r\n =?UTF-8?Q?news?=\r\n\
            In-Reply-To: <0@example.com>\r\n\
            Sender: MAILER-DAEMON\r\n\
            \r\n\
            body\r\n";
        let envelope = envelope(message);
        assert_eq!(
            text(&envelope.subject).as_deref(),
            Some("=?UTF-8?B?w6l0w6k=?= =?UTF-8?Q?news?=")
        );
        assert_eq!(
            text(&envelope.in_reply_to).as_deref(),
            Some("<0@example.com>")
        );
        assert_eq!(
            text(&envelope.from[0].name).as_deref(),
            Some("=?UTF-8?B?QW5kcsOp?=")
        );
        assert_eq!(
            text(&envelope.sender[0].mailbox).as_deref(),
            Some("MAILER-DAEMON")
        );
        assert_eq!(
            text(&envelope.sender[0].host).as_deref(),
            Some(MISSING_HOST)
        );
        // 8-bit header text is kept as is, in a literal.
        let raw = "Subject: caf\u{e9}\r\n\r\n".as_bytes();
        assert_eq!(
            text(&super::envelope(raw).subject).as_deref(),
            Some("caf\u{e9}")
        );
    }

    #[test]
    fn damaged_parts_stop_at_the_boundary() {
        let message = b"Content-Type: multipart/mixed; boundary=\"XX\"\r\n\r\n\
            --XX\r\nContent-Type: message/rfc822\r\n\r\njunk without headers\r\n\
            --XX\r\n\r\nsecond\r\n--XX--\r\n";
        assert_eq!(
            fetch(message, &Section::Part(part(&[1]))),
            "junk without headers"
        );
        // mail-parser reads the junk as a header; it must not run on into
        // the next part.
        assert_eq!(
            fetch(message, &Section::Header(Some(part(&[1])))),
            "junk without headers"
        );
        assert_eq!(fetch(message, &Section::Text(Some(part(&[1])))), "");
        let empty = b"Content-Type: multipart/mixed; boundary=\"XX\"\r\n\r\n--XX--\r\n";
        assert_eq!(
            wire_structure(empty),
            "* 1 FETCH (BODYSTRUCTURE ((\"TEXT\" \"PLAIN\" (\"CHARSET\" \"us-ascii\") \
             NIL NIL \"7BIT\" 0 0 NIL NIL NIL NIL) \"MIXED\" (\"BOUNDARY\" \"XX\") \
             NIL NIL NIL))\r\n"
        );
        let no_boundary = b"Content-Type: multipart/mixed\r\n\r\nno boundary\r\n";
        assert_eq!(
            wire_structure(no_boundary),
            "* 1 FETCH (BODYSTRUCTURE (\"TEXT\" \"PLAIN\" (\"CHARSET\" \"us-ascii\") \
             NIL NIL \"7BIT\" 13 1 NIL NIL NIL NIL))\r\n"
        );
    }

    #[test]
    fn odd_input_never_panics() {
        let mut deep = Vec::new();
        for level in 0..200 {
            deep.extend_from_slice(
                format!("Content-Type: multipart/mixed; boundary=b{level}\r\n\r\n--b{level}\r\n")
                    .as_bytes(),
            );
        }
        deep.extend_from_slice(b"\r\nleaf\r\n");
        let inputs: Vec<&[u8]> = vec![
            b"",
            b"\0",
            b"\r",
            b"\n",
            b"\r\n\r\n",
            b":",
            b"From:\r\nTo: <>\r\nCc: @\r\nSubject:\r\n\r\n",
            b"From: \"unterminated <a@b\r\n\r\n",
            b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n",
            b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\nContent-Type: \
              message/rfc822\r\n\r\n--x--",
            b"Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!",
            b"Content-Type: text/plain; charset=\"\0\"\r\nSubject: \0\xff\r\n\r\n\xfe\0",
            &deep,
        ];
        let sections = [
            Section::Part(part(&[1])),
            Section::Part(part(&[1, 1, 1, 1])),
            Section::Mime(part(&[1, 1])),
            Section::Header(Some(part(&[1]))),
            Section::Text(None),
            Section::HeaderFields(None, names(&["subject"])),
            Section::HeaderFieldsNot(Some(part(&[1])), names(&["subject"])),
        ];
        for input in inputs {
            envelope(input);
            wire_structure(input);
            body_structure(input, false);
            for section in &sections {
                super::section(input, Some(section), Some((1, 3)));
            }
        }
    }

    #[test]
    fn encoded_message_is_read_decoded() {
        // RFC 2046 forbids a transfer-encoded message/rfc822; mail-parser
        // decodes it, and its inside is reported from the decoded bytes.
        let message = b"Content-Type: multipart/mixed; boundary=XX\r\n\r\n--XX\r\n\
            Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n\
            U3ViamVjdDogeAoKYm9keQo=\r\n--XX--\r\n";
        assert_eq!(
            fetch(message, &Section::Part(part(&[1]))),
            "U3ViamVjdDogeAoKYm9keQo="
        );
        assert_eq!(fetch(message, &Section::Text(Some(part(&[1])))), "body\n");
        assert_eq!(
            fetch(message, &Section::Header(Some(part(&[1])))),
            "Subject: x\n\n"
        );
        check_sizes(message);
    }

    /// Every part's BODYSTRUCTURE size (and line count) is that of the
    /// octets BODY[part] gives.
    fn check_sizes(message: &[u8]) {
        fn walk(message: &[u8], structure: &BodyStructure<'_>, path: &mut Vec<u32>) {
            match structure {
                BodyStructure::Multi { bodies, .. } => {
                    for (index, body) in bodies.as_ref().iter().enumerate() {
                        path.push(index as u32 + 1);
                        walk(message, body, path);
                        path.pop();
                    }
                }
                BodyStructure::Single { body, .. } => {
                    let octets = section(message, Some(&Section::Part(part(path))), None);
                    assert_eq!(body.basic.size as usize, octets.len(), "part {path:?}");
                    match &body.specific {
                        SpecificFields::Text {
                            number_of_lines, ..
                        } => assert_eq!(*number_of_lines, line_count(&octets)),
                        SpecificFields::Message {
                            body_structure,
                            number_of_lines,
                            ..
                        } => {
                            assert_eq!(*number_of_lines, line_count(&octets));
                            // The encapsulated message's parts are numbered
                            // under this one, a lone body as part 1 of it.
                            if let BodyStructure::Single { .. } = **body_structure {
                                path.push(1);
                                walk(message, body_structure, path);
                                path.pop();
                            } else {
                                walk(message, body_structure, path);
                            }
                        }
                        SpecificFields::Basic { .. } => {}
                    }
                }
            }
        }
        let structure = body_structure(message, true);
        let mut path = Vec::new();
        if let BodyStructure::Single { .. } = structure {
            path.push(1);
        }
        walk(message, &structure, &mut path);
    }

    #[test]
    fn sizes_match_sections() {
        for message in [SIMPLE, ALTERNATIVE, MIXED] {
            check_sizes(message);
        }
    }

    /// Messages stitched from MIME fragments at random: whatever comes
    /// out, nothing panics and sizes agree with sections. (Some trip
    /// mail-parser's debug assertions, whose messages show in the test
    /// output: `parse` catches them.)
    #[test]
    fn random_mime_holds_together() {
        const PIECES: &[&[u8]] = &[
            b"Content-Type: multipart/mixed; boundary=a\r\n",
            b"Content-Type: multipart/digest; boundary=b\n",
            b"Content-Type: message/rfc822\r\n",
            b"Content-Type: text/plain; charset=utf-8\r\n",
            b"Content-Transfer-Encoding: base64\r\n",
            b"Content-Disposition: attachment; filename=x\r\n",
            b"From: A <a@example.com>, b@\r\n",
            b"Subject: s\r\n folded\r\n",
            b"--a\r\n",
            b"--a--\r\n",
            b"--b\n",
            b"--b--\n",
            b"\r\n",
            b"\n",
            b"text line\r\n",
            b"QUJD\r\n",
            b"\0\xff:",
            b" ",
        ];
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..3000 {
            let mut message = Vec::new();
            for _ in 0..next() % 24 {
                message.extend_from_slice(PIECES[(next() % PIECES.len() as u64) as usize]);
            }
            envelope(&message);
            check_sizes(&message);
            for numbers in [&[1][..], &[1, 1], &[2, 1, 1]] {
                section(&message, Some(&Section::Mime(part(numbers))), None);
                section(&message, Some(&Section::Header(Some(part(numbers)))), None);
                section(&message, Some(&Section::Text(Some(part(numbers)))), None);
            }
        }
    }

    #[test]
    fn counts_lines() {
        assert_eq!(line_count(b""), 0);
        assert_eq!(line_count(b"a"), 1);
        assert_eq!(line_count(b"a\n"), 1);
        assert_eq!(line_count(b"a\r\nb"), 2);
        assert_eq!(line_count(b"a\n\n"), 2);
        assert_eq!(line_count(b"\r\n\r\n"), 2);
    }
}
