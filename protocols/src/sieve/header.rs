//! Header fields as Sieve tests see them: unfolded, with encoded words
//! decoded (RFC 5228 §5.7) and addresses parsed by mail-parser.

use mail_parser::{parsers::MessageStream, Address, HeaderValue};

/// A message's header fields, in order: name as written, and value with
/// folding removed.
pub fn fields(message: &[u8]) -> Vec<(String, Vec<u8>)> {
    let header = &message[..header_end(message)];
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    for line in header.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        if line[0] == b' ' || line[0] == b'\t' {
            if let Some((_, value)) = out.last_mut() {
                value.extend_from_slice(line);
            }
            continue;
        }
        if let Some(colon) = line.iter().position(|&b| b == b':') {
            let name = String::from_utf8_lossy(&line[..colon]).trim().to_owned();
            out.push((name, line[colon + 1..].to_vec()));
        }
    }
    out
}

/// Where the header ends (the blank line's end, or the message's).
pub fn header_end(message: &[u8]) -> usize {
    memchr::memmem::find(message, b"\r\n\r\n").map_or(message.len(), |i| i + 4)
}

/// A field's value as text, encoded words decoded, trimmed.
pub fn text(value: &[u8]) -> String {
    match MessageStream::new(&line(value)).parse_unstructured() {
        HeaderValue::Text(text) => text.trim().to_owned(),
        _ => String::new(),
    }
}

/// The addresses in a field's value (group members counted).
pub fn addresses(value: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let mut push = |a: Option<&str>| out.extend(a.filter(|a| !a.is_empty()).map(str::to_owned));
    match MessageStream::new(&line(value)).parse_address() {
        HeaderValue::Address(Address::List(list)) => {
            list.iter().for_each(|a| push(a.address.as_deref()))
        }
        HeaderValue::Address(Address::Group(groups)) => groups
            .iter()
            .flat_map(|g| &g.addresses)
            .for_each(|a| push(a.address.as_deref())),
        _ => {}
    }
    out
}

/// A field value as mail-parser's readers expect it: ending its line.
fn line(value: &[u8]) -> Vec<u8> {
    [value, b"\r\n"].concat()
}
