//! The service extensions a server offers in its EHLO reply (RFC 5321 §4.1.1.1).

/// What the server said it supports. All false after HELO.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extensions {
    /// PIPELINING (RFC 2920): commands may be sent in groups.
    pub pipelining: bool,
    /// SIZE (RFC 1870): `None` when not offered; `Some(0)` when offered
    /// without a (readable) limit; `Some(n)`: messages over `n` bytes are refused.
    pub size: Option<u64>,
    /// 8BITMIME (RFC 6152): `BODY=8BITMIME` is understood.
    pub eightbitmime: bool,
    /// SMTPUTF8 (RFC 6531): UTF-8 addresses are allowed.
    pub smtputf8: bool,
    /// STARTTLS (RFC 3207).
    pub starttls: bool,
    /// CHUNKING (RFC 3030): BDAT is understood.
    pub chunking: bool,
    /// ENHANCEDSTATUSCODES (RFC 2034).
    pub enhanced_status_codes: bool,
    /// DSN (RFC 3461): NOTIFY, ORCPT, RET and ENVID are understood, and
    /// the server takes over reporting on the recipients it accepts.
    pub dsn: bool,
}

impl Extensions {
    /// Read the keywords out of the text of an EHLO reply's lines; the first
    /// line is the server's name, each later one a keyword and its
    /// parameters. Keywords are case-insensitive; unknown ones are ignored.
    pub(super) fn from_ehlo(lines: &[String]) -> Self {
        let mut found = Extensions::default();
        for line in lines.iter().skip(1) {
            let mut words = line.split_ascii_whitespace();
            let Some(keyword) = words.next() else {
                continue;
            };
            let is = |name: &str| keyword.eq_ignore_ascii_case(name);
            if is("PIPELINING") {
                found.pipelining = true;
            } else if is("SIZE") {
                // A limit we cannot read is treated as none: the server will
                // still refuse a message that is too big, just later.
                let limit = words.next().and_then(|n| n.parse().ok());
                found.size = Some(limit.unwrap_or(0));
            } else if is("8BITMIME") {
                found.eightbitmime = true;
            } else if is("SMTPUTF8") {
                found.smtputf8 = true;
            } else if is("STARTTLS") {
                found.starttls = true;
            } else if is("CHUNKING") {
                found.chunking = true;
            } else if is("ENHANCEDSTATUSCODES") {
                found.enhanced_status_codes = true;
            } else if is("DSN") {
                found.dsn = true;
            }
        }
        found
    }
}
