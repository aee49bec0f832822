//! What the client writes: command lines and message content.
//!
//! # Message content after DATA
//! The stored message is written with every line ending made CRLF (a bare CR
//! or LF becomes CRLF), a `.` doubled at the start of each line (RFC 5321
//! §4.5.2), a CRLF added if the last line lacks one, then `.` CRLF. Making
//! line endings CRLF first means no byte sequence in a message can be read as
//! the end of data by a server that also treats a bare LF or CR as a line end
//! (SMTP smuggling). BDAT content is length-delimited and goes out raw.

use crate::smtp::dsn_request::{RecipientRequest, Ret};
use memchr::memchr2;

/// `RSET`.
pub(super) const RSET: &[u8] = b"RSET\r\n";
/// `DATA`.
pub(super) const DATA: &[u8] = b"DATA\r\n";
/// `QUIT`.
pub(super) const QUIT: &[u8] = b"QUIT\r\n";
/// `STARTTLS`.
pub(super) const STARTTLS: &[u8] = b"STARTTLS\r\n";
/// The end-of-data line.
pub(super) const END_OF_DATA: &[u8] = b".\r\n";

/// The ESMTP parameters of MAIL FROM.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct MailParams {
    /// `SIZE=n` (RFC 1870).
    pub(super) size: Option<u64>,
    /// `BODY=8BITMIME` (RFC 6152).
    pub(super) eight_bit: bool,
    /// `SMTPUTF8` (RFC 6531).
    pub(super) smtputf8: bool,
    /// The server offers DSN: the sender's DSN parameters go with MAIL and
    /// RCPT (RFC 3461 §5.2).
    pub(super) dsn: bool,
}

/// DSN's MAIL parameters to pass on.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct MailDsn<'a> {
    /// `RET=`.
    pub(super) ret: Option<Ret>,
    /// `ENVID=`, xtext.
    pub(super) envid: Option<&'a str>,
}

/// True if `text` holds a control character: writing it into a command line
/// could end the line early and inject a command.
pub(super) fn has_control(text: &str) -> bool {
    text.chars().any(char::is_control)
}

/// `EHLO name` or `HELO name`. Control characters are dropped from the name
/// (it comes from configuration and cannot be refused per message).
pub(super) fn hello(out: &mut Vec<u8>, verb: &str, name: &str) {
    out.extend_from_slice(verb.as_bytes());
    out.push(b' ');
    out.extend(name.bytes().filter(|b| !b.is_ascii_control()));
    out.extend_from_slice(b"\r\n");
}

/// `MAIL FROM:<from>` and its parameters; `from` holds no control characters.
pub(super) fn mail(out: &mut Vec<u8>, from: &str, params: MailParams, dsn: MailDsn<'_>) {
    out.extend_from_slice(b"MAIL FROM:<");
    out.extend_from_slice(from.as_bytes());
    out.push(b'>');
    if let Some(size) = params.size {
        out.extend_from_slice(format!(" SIZE={size}").as_bytes());
    }
    if params.eight_bit {
        out.extend_from_slice(b" BODY=8BITMIME");
    }
    if params.smtputf8 {
        out.extend_from_slice(b" SMTPUTF8");
    }
    if let Some(ret) = dsn.ret {
        out.extend_from_slice(b" RET=");
        out.extend_from_slice(ret.value().as_bytes());
    }
    // Checked as xtext when it was received: no spaces, no control characters.
    if let Some(envid) = dsn.envid.filter(|e| !has_control(e) && !e.contains(' ')) {
        out.extend_from_slice(b" ENVID=");
        out.extend_from_slice(envid.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

/// `RCPT TO:<to>` with DSN's parameters, if any; `to` holds no control
/// characters. A UTF-8 ORCPT goes only into an SMTPUTF8 transaction.
pub(super) fn rcpt(
    out: &mut Vec<u8>,
    to: &str,
    request: Option<&RecipientRequest>,
    smtputf8: bool,
) {
    out.extend_from_slice(b"RCPT TO:<");
    out.extend_from_slice(to.as_bytes());
    out.push(b'>');
    if let Some(request) = request {
        if let Some(notify) = request.notify {
            out.extend_from_slice(b" NOTIFY=");
            out.extend_from_slice(notify.value().as_bytes());
        }
        if let Some(orcpt) = request.orcpt.as_deref() {
            if !has_control(orcpt) && !orcpt.contains(' ') && (smtputf8 || orcpt.is_ascii()) {
                out.extend_from_slice(b" ORCPT=");
                out.extend_from_slice(orcpt.as_bytes());
            }
        }
    }
    out.extend_from_slice(b"\r\n");
}

/// `BDAT <len> LAST` and the body, raw.
pub(super) fn bdat_last(out: &mut Vec<u8>, body: &[u8]) {
    out.extend_from_slice(format!("BDAT {} LAST\r\n", body.len()).as_bytes());
    out.extend_from_slice(body);
}

/// The body as DATA content, end-of-data line included (see the module doc).
pub(super) fn data_content(out: &mut Vec<u8>, body: &[u8]) {
    // One extra byte per 64 covers the dots of a typical message.
    out.reserve(body.len() + body.len() / 64 + 5);
    let mut rest = body;
    let mut line_start = true;
    while let Some(&first) = rest.first() {
        if line_start && first == b'.' {
            out.push(b'.');
        }
        let Some(end) = memchr2(b'\r', b'\n', rest) else {
            out.extend_from_slice(rest);
            line_start = false;
            break;
        };
        out.extend_from_slice(&rest[..end]);
        out.extend_from_slice(b"\r\n");
        let crlf = rest[end] == b'\r' && rest.get(end + 1) == Some(&b'\n');
        rest = &rest[end + if crlf { 2 } else { 1 }..];
        line_start = true;
    }
    if !line_start {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(END_OF_DATA);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content(body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        data_content(&mut out, body);
        out
    }

    #[test]
    fn dots_are_stuffed_at_line_starts_only() {
        assert_eq!(
            content(b".a\r\nb.c\r\n.\r\n..\r\n"),
            b"..a\r\nb.c\r\n..\r\n...\r\n.\r\n"
        );
    }

    #[test]
    fn last_line_gets_its_crlf() {
        assert_eq!(content(b""), b".\r\n");
        assert_eq!(content(b"a"), b"a\r\n.\r\n");
        assert_eq!(content(b"a\r\n."), b"a\r\n..\r\n.\r\n");
    }

    #[test]
    fn bare_line_endings_become_crlf() {
        assert_eq!(
            content(b"a\n.\nb\r.\r\r\n"),
            b"a\r\n..\r\nb\r\n..\r\n\r\n.\r\n"
        );
    }

    #[test]
    fn mail_parameters() {
        let mut out = Vec::new();
        let params = MailParams {
            size: Some(12),
            eight_bit: true,
            smtputf8: true,
            dsn: false,
        };
        mail(&mut out, "", params, MailDsn::default());
        assert_eq!(out, b"MAIL FROM:<> SIZE=12 BODY=8BITMIME SMTPUTF8\r\n");
    }

    #[test]
    fn dsn_parameters() {
        let mut out = Vec::new();
        let dsn = MailDsn {
            ret: Some(Ret::Headers),
            envid: Some("QQ+2B1"),
        };
        mail(&mut out, "a@b", MailParams::default(), dsn);
        assert_eq!(out, b"MAIL FROM:<a@b> RET=HDRS ENVID=QQ+2B1\r\n");
        out.clear();
        let request = RecipientRequest {
            notify: crate::smtp::dsn_request::Notify::parse("failure,delay"),
            orcpt: Some("rfc822;c@d".into()),
        };
        rcpt(&mut out, "c@d", Some(&request), false);
        assert_eq!(
            out,
            b"RCPT TO:<c@d> NOTIFY=FAILURE,DELAY ORCPT=rfc822;c@d\r\n"
        );
        out.clear();
        rcpt(&mut out, "c@d", Some(&RecipientRequest::default()), false);
        assert_eq!(out, b"RCPT TO:<c@d>\r\n");
        out.clear();
        let utf8 = RecipientRequest {
            notify: None,
            orcpt: Some("utf-8;jörg@d".into()),
        };
        rcpt(&mut out, "c@d", Some(&utf8), false);
        assert_eq!(out, b"RCPT TO:<c@d>\r\n");
        out.clear();
        rcpt(&mut out, "c@d", Some(&utf8), true);
        assert_eq!(out, "RCPT TO:<c@d> ORCPT=utf-8;jörg@d\r\n".as_bytes());
    }
}
