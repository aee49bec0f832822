//! Every POP3 response the server sends. No other module writes `+OK`,
//! `-ERR` or a response code.
//!
//! # Wire form
//! A status line is `+OK` or `-ERR`, then an optional response code in
//! brackets (RFC 2449 §8: `[IN-USE]`, `[LOGIN-DELAY]`; RFC 3206: `[SYS/TEMP]`,
//! `[SYS/PERM]`, `[AUTH]`), then text, then CRLF. Multi-line responses (CAPA,
//! LIST, UIDL, RETR, TOP) follow a `+OK` line with their lines and end with
//! [`END`]; this module writes the lines of listings, the `content` module
//! writes message content.
//!
//! # Which responses count as errors
//! The session counts the responses that say the client did something wrong
//! ([`Reply::counted`]: unknown verb, bad syntax, wrong state, bad base64,
//! bad credentials) toward [`Pop3Config::max_errors`](super::Pop3Config::max_errors).
//! Refusals that are nobody's fault or the server's policy (no such
//! message, maildrop in use, TLS required, store failures) do not count.

use std::borrow::Cow;
use std::io::Write as _;

/// One single-line POP3 response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// `+OK` when true, `-ERR` when false.
    pub ok: bool,
    /// Response code without brackets (`"AUTH"`, `"SYS/TEMP"`), or empty.
    pub code: &'static str,
    /// Free text after the status and code.
    pub text: Cow<'static, str>,
    /// Counts toward `max_errors`: the client broke the protocol or gave
    /// bad credentials.
    pub counted: bool,
}

impl Reply {
    /// `+OK text`.
    pub const fn ok(text: &'static str) -> Self {
        Reply {
            ok: true,
            code: "",
            text: Cow::Borrowed(text),
            counted: false,
        }
    }

    /// `-ERR [code] text`, a refusal that does not count as an error.
    pub const fn refusal(code: &'static str, text: &'static str) -> Self {
        Reply {
            ok: false,
            code,
            text: Cow::Borrowed(text),
            counted: false,
        }
    }

    /// `-ERR [code] text`, counted toward `max_errors`.
    pub const fn error(code: &'static str, text: &'static str) -> Self {
        Reply {
            ok: false,
            code,
            text: Cow::Borrowed(text),
            counted: true,
        }
    }

    /// `+OK` with owned text.
    pub fn ok_owned(text: String) -> Self {
        Reply {
            ok: true,
            code: "",
            text: Cow::Owned(text),
            counted: false,
        }
    }

    /// `-ERR [code]` with owned text, not counted.
    pub fn refusal_owned(code: &'static str, text: String) -> Self {
        Reply {
            ok: false,
            code,
            text: Cow::Owned(text),
            counted: false,
        }
    }

    /// Append the response line in wire format.
    ///
    /// CR and LF in the text are dropped, so text that comes from the
    /// configuration or the driver can never end the line early or inject a
    /// response.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(if self.ok { b"+OK" } else { b"-ERR" });
        if !self.code.is_empty() {
            out.extend_from_slice(b" [");
            out.extend_from_slice(self.code.as_bytes());
            out.push(b']');
        }
        if !self.text.is_empty() {
            out.push(b' ');
            let text = self.text.as_bytes();
            if text.contains(&b'\r') || text.contains(&b'\n') {
                out.extend(text.iter().filter(|&&b| b != b'\r' && b != b'\n'));
            } else {
                out.extend_from_slice(text);
            }
        }
        out.extend_from_slice(b"\r\n");
    }
}

/// The line that ends every multi-line response.
pub const END: &[u8] = b".\r\n";

/// The AUTH continuation with the empty challenge PLAIN starts with
/// (RFC 5034 §4: `+` and a space, then base64 of nothing).
pub const CONTINUE: &[u8] = b"+ \r\n";

/// A SASL challenge (RFC 5034 §4): `+ ` and the base64 challenge.
pub fn write_continuation(out: &mut Vec<u8>, challenge: &str) {
    out.extend_from_slice(b"+ ");
    out.extend_from_slice(challenge.as_bytes());
    out.extend_from_slice(b"\r\n");
}

// ---------------------------------------------------------------------------
// Session: greeting, closing, limits.

/// `+OK <hostname> POP3 ready`, queued when the session starts. No APOP
/// timestamp: APOP needs the plaintext password stored (RFC 1939 §7).
pub fn greeting(hostname: &str) -> Reply {
    Reply::ok_owned(format!("{hostname} POP3 ready"))
}

/// QUIT in the AUTHORIZATION state.
pub fn signing_off(hostname: &str) -> Reply {
    Reply::ok_owned(format!("{hostname} POP3 server signing off"))
}

/// QUIT in the TRANSACTION state, once the driver committed the deletions.
pub fn committed(hostname: &str, left: usize) -> Reply {
    if left == 0 {
        Reply::ok_owned(format!(
            "{hostname} POP3 server signing off (maildrop empty)"
        ))
    } else {
        Reply::ok_owned(format!(
            "{hostname} POP3 server signing off ({left} messages left)"
        ))
    }
}

/// The greeting of a server with no room for another session; the
/// connection is closed after it.
pub const TOO_MANY_CONNECTIONS: Reply =
    Reply::refusal("SYS/TEMP", "too many connections, try again later");

/// The deletions could not be made durable (RFC 1939 §6: "some deleted
/// messages not removed"); the session closes anyway.
pub const COMMIT_FAILED: Reply = Reply::refusal("SYS/TEMP", "some deleted messages not removed");

/// Server shutdown.
pub fn shutting_down(hostname: &str) -> Reply {
    Reply::refusal_owned("SYS/TEMP", format!("{hostname} shutting down"))
}

/// The autologout timer fired (RFC 1939 §3). The RFC would close silently;
/// saying why costs one line and helps whoever reads the client's log.
pub fn timeout(hostname: &str) -> Reply {
    Reply::refusal_owned("", format!("{hostname} autologout, idle too long"))
}

/// The error budget is spent; the session closes.
pub fn too_many_errors(hostname: &str) -> Reply {
    Reply::refusal_owned("", format!("{hostname} too many errors, closing"))
}

// ---------------------------------------------------------------------------
// Malformed and out-of-place command lines.

/// A verb we do not know (or an empty line).
pub const UNKNOWN_COMMAND: Reply = Reply::error("", "unknown command");
/// A command line over `max_line_len`.
pub const LINE_TOO_LONG: Reply = Reply::error("", "line too long");
/// A command line that is not UTF-8.
pub const NOT_UTF8: Reply = Reply::error("", "command line is not valid UTF-8");
/// A known command in the wrong state (RFC 1939 §3).
pub const WRONG_STATE: Reply = Reply::error("", "command not valid in this state");
/// A command that takes no argument got one.
pub const NO_ARGUMENT: Reply = Reply::error("", "syntax: command takes no argument");
/// A message-number argument that is not a decimal number, or missing.
pub const NUMBER_SYNTAX: Reply = Reply::error("", "syntax: message number expected");
/// TOP without a decimal line count.
pub const TOP_SYNTAX: Reply = Reply::error("", "syntax: TOP msg n");
/// USER without a name.
pub const USER_SYNTAX: Reply = Reply::error("", "syntax: USER name");
/// PASS without a password.
pub const PASS_SYNTAX: Reply = Reply::error("", "syntax: PASS password");
/// AUTH with more than a mechanism and an initial response.
pub const AUTH_SYNTAX: Reply = Reply::error("", "syntax: AUTH mechanism [initial-response]");
/// PASS not right after USER.
pub const NEED_USER: Reply = Reply::error("", "send USER first");

// ---------------------------------------------------------------------------
// AUTHORIZATION.

/// USER accepted; no hint whether the name exists.
pub const SEND_PASS: Reply = Reply::ok("send PASS");
/// USER, PASS or AUTH before TLS where plaintext authentication is off
/// (RFC 2595 §2: the server may refuse plaintext passwords without TLS).
pub const TLS_REQUIRED: Reply = Reply::refusal(
    "AUTH",
    "plaintext authentication disallowed, use STLS first",
);
/// The driver refused the credentials.
pub const INVALID_CREDENTIALS: Reply = Reply::error("AUTH", "invalid credentials");
/// Too many failed logins from this client or for this account: refused
/// for a while without checking (not counted as an error).
pub const LOCKED_OUT: Reply = Reply::refusal("SYS/TEMP", "too many failed logins, try again later");
/// The driver could not lock the maildrop (RFC 2449 §8.1.1).
pub const MAILDROP_LOCKED: Reply =
    Reply::refusal("IN-USE", "maildrop already locked by another session");
/// The driver's maildrop had a unique-id RFC 1939 §7 does not allow.
pub const MAILDROP_UNUSABLE: Reply = Reply::refusal("SYS/TEMP", "maildrop unavailable");
/// AUTH with a mechanism other than PLAIN.
pub const UNSUPPORTED_MECHANISM: Reply = Reply::refusal("", "unsupported SASL mechanism");
/// The client answered the continuation with `*` (RFC 5034 §4).
pub const AUTH_CANCELLED: Reply = Reply::refusal("", "authentication cancelled");
/// A SASL response that is not base64.
pub const BAD_BASE64: Reply = Reply::error("", "invalid base64");
/// A PLAIN message that is not `authzid NUL authcid NUL passwd` in UTF-8.
pub const BAD_PLAIN: Reply = Reply::error("AUTH", "malformed PLAIN credentials");
/// A PLAIN authorization identity other than the authentication identity:
/// acting as another user is not offered.
pub const AUTHZID_REFUSED: Reply = Reply::error("AUTH", "authorization identity not permitted");
/// STLS where it is not offered or TLS is already on.
pub const STLS_UNAVAILABLE: Reply = Reply::refusal("", "STLS not available");
/// STLS accepted; the driver starts the handshake after writing this.
pub const BEGIN_TLS: Reply = Reply::ok("begin TLS negotiation");

/// Authenticated; the session is in the TRANSACTION state.
pub fn maildrop_ready(count: usize, octets: u64) -> Reply {
    Reply::ok_owned(format!("maildrop has {count} messages ({octets} octets)"))
}

// ---------------------------------------------------------------------------
// TRANSACTION.

/// Generic success: NOOP.
pub const OK: Reply = Reply::ok("");
/// A message number out of range or marked deleted.
pub const NO_SUCH_MESSAGE: Reply = Reply::refusal("", "no such message");
/// The store could not serve a message it listed.
pub const MESSAGE_UNAVAILABLE: Reply = Reply::refusal("SYS/TEMP", "message unavailable");
/// The heading of a TOP response.
pub const TOP_FOLLOWS: Reply = Reply::ok("top of message follows");
/// The heading of a CAPA response.
pub const CAPA_FOLLOWS: Reply = Reply::ok("capability list follows");
/// The heading of the mechanism list given for a bare AUTH.
pub const MECHANISMS_FOLLOW: Reply = Reply::ok("SASL mechanisms follow");

/// STAT: `+OK count octets` (RFC 1939 §5, exactly this form).
pub fn stat(count: usize, octets: u64) -> Reply {
    Reply::ok_owned(format!("{count} {octets}"))
}

/// The heading of LIST without argument.
pub fn listing(count: usize, octets: u64) -> Reply {
    Reply::ok_owned(format!("{count} messages ({octets} octets)"))
}

/// LIST with an argument: `+OK n size`.
pub fn scan(number: usize, size: u64) -> Reply {
    Reply::ok_owned(format!("{number} {size}"))
}

/// UIDL with an argument: `+OK n uid`.
pub fn unique_id(number: usize, uid: &str) -> Reply {
    Reply::ok_owned(format!("{number} {uid}"))
}

/// The heading of UIDL without argument.
pub const UIDL_FOLLOWS: Reply = Reply::ok("unique-id listing follows");

/// The heading of RETR.
pub fn message_follows(size: u64) -> Reply {
    Reply::ok_owned(format!("{size} octets"))
}

/// DELE accepted.
pub fn deleted(number: usize) -> Reply {
    Reply::ok_owned(format!("message {number} deleted"))
}

/// DELE of a message already marked.
pub fn already_deleted(number: usize) -> Reply {
    Reply::refusal_owned("", format!("message {number} already deleted"))
}

/// One line of a LIST listing: `n size`.
pub fn write_scan_line(out: &mut Vec<u8>, number: usize, size: u64) {
    // Writing into a Vec cannot fail.
    let _ = write!(out, "{number} {size}\r\n");
}

/// One line of a UIDL listing: `n uid`.
pub fn write_uid_line(out: &mut Vec<u8>, number: usize, uid: &str) {
    let _ = write!(out, "{number} {uid}\r\n");
}

/// What CAPA offers right now.
#[derive(Debug, Clone, Copy)]
pub struct Offer {
    /// USER/PASS and SASL PLAIN may be used now (AUTHORIZATION state, and
    /// plaintext allowed or TLS on).
    pub login: bool,
    /// STLS may be used now (AUTHORIZATION, offered, TLS not on yet).
    pub stls: bool,
}

/// The whole CAPA response (RFC 2449 §5). Login and STLS are listed only
/// where they can be used: a client that sees them after TLS or after login
/// would only get refusals.
pub fn write_capa(out: &mut Vec<u8>, offer: Offer) {
    CAPA_FOLLOWS.write_to(out);
    out.extend_from_slice(b"TOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\n");
    if offer.login {
        out.extend_from_slice(b"USER\r\nSASL PLAIN LOGIN\r\n");
    }
    if offer.stls {
        out.extend_from_slice(b"STLS\r\n");
    }
    out.extend_from_slice(b"IMPLEMENTATION ringpost\r\n");
    out.extend_from_slice(END);
}

/// The answer to a bare AUTH, which older clients send to list mechanisms
/// (RFC 1734 practice; RFC 5034 leaves it undefined).
pub fn write_mechanisms(out: &mut Vec<u8>, plain: bool) {
    MECHANISMS_FOLLOW.write_to(out);
    if plain {
        out.extend_from_slice(b"PLAIN\r\nLOGIN\r\n");
    }
    out.extend_from_slice(END);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(reply: &Reply) -> String {
        let mut out = Vec::new();
        reply.write_to(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn status_code_and_text() {
        assert_eq!(wire(&OK), "+OK\r\n");
        assert_eq!(wire(&greeting("pop")), "+OK pop POP3 ready\r\n");
        assert_eq!(wire(&NO_SUCH_MESSAGE), "-ERR no such message\r\n");
        assert_eq!(
            wire(&MAILDROP_LOCKED),
            "-ERR [IN-USE] maildrop already locked by another session\r\n"
        );
        assert_eq!(wire(&stat(2, 320)), "+OK 2 320\r\n");
    }

    #[test]
    fn line_breaks_in_text_are_dropped() {
        assert_eq!(wire(&greeting("a\r\n+OK b\n")), "+OK a+OK b POP3 ready\r\n");
    }

    #[test]
    fn committed_says_what_is_left() {
        assert_eq!(
            wire(&committed("h", 0)),
            "+OK h POP3 server signing off (maildrop empty)\r\n"
        );
        assert_eq!(
            wire(&committed("h", 2)),
            "+OK h POP3 server signing off (2 messages left)\r\n"
        );
    }

    #[test]
    fn capa_lists_what_can_be_used() {
        let capa = |login, stls| {
            let mut out = Vec::new();
            write_capa(&mut out, Offer { login, stls });
            String::from_utf8(out).unwrap()
        };
        assert_eq!(
            capa(true, true),
            "+OK capability list follows\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\n\
             PIPELINING\r\nUSER\r\nSASL PLAIN LOGIN\r\nSTLS\r\nIMPLEMENTATION ringpost\r\n.\r\n"
        );
        assert!(!capa(false, false).contains("USER"));
        assert!(!capa(false, false).contains("SASL"));
        assert!(!capa(false, false).contains("STLS"));
    }
}
