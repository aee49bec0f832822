//! Every SMTP reply the server sends, with its enhanced status code (RFC 3463).
//! No other module writes a bare reply code.
//!
//! # Enhanced status codes
//! RFC 2034 §3 puts an enhanced code on every reply except the greeting and
//! the replies to EHLO and HELO; RFC 3463 defines no class 3, so 354 has none
//! either. Those replies carry an empty [`Reply::status`]. Everything else has
//! one, in HELO sessions too: clients that did not ask for them ignore them.
//!
//! # Which replies count as errors
//! The session counts the replies that say the client broke the protocol
//! ([`Reply::is_protocol_error`]: unknown verb, bad syntax, bad sequence)
//! toward [`ServerConfig::max_errors`](super::ServerConfig::max_errors).
//! Policy answers (size limits, too many recipients, no valid recipients,
//! refused content) and the driver's own refusals do not count.

use std::borrow::Cow;

/// One SMTP reply: a code, an enhanced status code and human text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Three-digit reply code (RFC 5321 §4.2).
    pub code: u16,
    /// Enhanced status code such as `"5.1.1"` (RFC 3463).
    pub status: &'static str,
    /// Free text after the codes.
    pub text: Cow<'static, str>,
}

impl Reply {
    /// A reply with static or owned text.
    pub fn new(code: u16, status: &'static str, text: impl Into<Cow<'static, str>>) -> Self {
        Reply {
            code,
            status,
            text: text.into(),
        }
    }

    /// A reply usable in `const` items: static text only.
    pub const fn fixed(code: u16, status: &'static str, text: &'static str) -> Self {
        Reply {
            code,
            status,
            text: Cow::Borrowed(text),
        }
    }

    /// True for 500, 501, 503 and 555: the codes that mean the client sent
    /// something malformed or out of order.
    pub fn is_protocol_error(&self) -> bool {
        matches!(self.code, 500 | 501 | 503 | 555)
    }

    /// Append the reply in wire format.
    ///
    /// Each `\n`-separated line of [`Self::text`] becomes one reply line; all
    /// but the last use the `250-` continuation form (RFC 5321 §4.2.1) and
    /// every line repeats the enhanced code (RFC 2034 §4). Carriage returns
    /// in the text are dropped, so text from the driver can never end a line
    /// early or inject a reply. The code is written as its last three digits:
    /// codes outside 200..=599 are a bug in the caller.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let code = self.code % 1000;
        let digits = [
            b'0' + (code / 100) as u8,
            b'0' + (code / 10 % 10) as u8,
            b'0' + (code % 10) as u8,
        ];
        let mut lines = self.text.split('\n').peekable();
        while let Some(line) = lines.next() {
            out.extend_from_slice(&digits);
            out.push(if lines.peek().is_some() { b'-' } else { b' ' });
            if !self.status.is_empty() {
                out.extend_from_slice(self.status.as_bytes());
                out.push(b' ');
            }
            let line = line.as_bytes();
            if line.contains(&b'\r') {
                out.extend(line.iter().filter(|&&b| b != b'\r'));
            } else {
                out.extend_from_slice(line);
            }
            out.extend_from_slice(b"\r\n");
        }
    }
}

// ---------------------------------------------------------------------------
// Session-level replies: greeting, closing, HELO/EHLO.

/// `220 <hostname> ESMTP ringpost`, queued when the session starts.
pub fn greeting(hostname: &str) -> Reply {
    Reply::new(220, "", format!("{hostname} ESMTP ringpost"))
}

/// The 220 greeting of an LMTP connection.
pub fn lmtp_greeting(hostname: &str) -> Reply {
    Reply::new(220, "", format!("{hostname} LMTP ringpost"))
}

/// `250 2.1.5 <recipient> delivered (queue id)`: one LMTP recipient's
/// answer at the end of the message (RFC 2033 §4.2).
pub fn lmtp_delivered(recipient: &str, queue_id: &str) -> Reply {
    Reply::new(
        250,
        "2.1.5",
        format!("<{recipient}> delivered (queued as {queue_id})"),
    )
}

/// The 250 reply to HELO.
pub fn helo(hostname: &str) -> Reply {
    Reply::new(250, "", hostname.to_owned())
}

/// What EHLO offers besides the fixed extensions: each only where the
/// client can use it now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EhloOffer {
    /// STARTTLS (RFC 3207): a certificate is loaded and TLS is not on yet.
    pub starttls: bool,
    /// AUTH (RFC 4954): not authenticated yet, and TLS is on (or plaintext
    /// passwords are allowed for this client).
    pub auth: bool,
}

/// The multi-line 250 reply to EHLO: our name, then the extensions we
/// offer, one per line.
pub fn ehlo(hostname: &str, max_message_size: usize, offer: EhloOffer) -> Reply {
    let mut text = format!(
        "{hostname}\nPIPELINING\nSIZE {max_message_size}\n8BITMIME\nSMTPUTF8\nCHUNKING\nENHANCEDSTATUSCODES\nDSN"
    );
    if offer.starttls {
        text.push_str("\nSTARTTLS");
    }
    if offer.auth {
        text.push_str("\nAUTH");
        for mechanism in crate::sasl::MECHANISMS {
            text.push(' ');
            text.push_str(mechanism.name());
        }
    }
    Reply::new(250, "", text)
}

/// `221 2.0.0 Bye`, the answer to QUIT.
pub const BYE: Reply = Reply::fixed(221, "2.0.0", "Bye");

/// `421 4.3.2 <hostname> Service shutting down`.
pub fn shutting_down(hostname: &str) -> Reply {
    Reply::new(421, "4.3.2", format!("{hostname} Service shutting down"))
}

/// `421 4.4.2 <hostname> Timeout`: the client was silent too long.
pub fn timeout(hostname: &str) -> Reply {
    Reply::new(421, "4.4.2", format!("{hostname} Timeout"))
}

/// `421 4.7.0 <hostname> Too many errors`: the error budget is spent.
pub fn too_many_errors(hostname: &str) -> Reply {
    Reply::new(421, "4.7.0", format!("{hostname} Too many errors"))
}

/// 554 5.7.1 at the greeting: this listener is not for the client's
/// address (RFC 5321 §3.1).
pub fn not_allowed_here(hostname: &str) -> Reply {
    Reply::new(
        554,
        "5.7.1",
        format!("{hostname} This service is not open to your address"),
    )
}

/// 421 4.7.0 at the greeting: the server is at its connection limit.
pub fn too_many_connections(hostname: &str) -> Reply {
    Reply::new(
        421,
        "4.7.0",
        format!("{hostname} Too many connections, try again later"),
    )
}

// ---------------------------------------------------------------------------
// Positive replies to commands.

/// Generic success: RSET, NOOP.
pub const OK: Reply = Reply::fixed(250, "2.0.0", "Ok");
/// MAIL FROM accepted.
pub const SENDER_OK: Reply = Reply::fixed(250, "2.1.0", "Sender ok");
/// RCPT TO accepted (by the driver).
pub const RECIPIENT_OK: Reply = Reply::fixed(250, "2.1.5", "Recipient ok");
/// Go ahead with the message content.
pub const START_DATA: Reply = Reply::fixed(354, "", "End data with <CR><LF>.<CR><LF>");
/// VRFY is answered without looking anything up (RFC 5321 §3.5.3).
pub const CANNOT_VRFY: Reply = Reply::fixed(
    252,
    "2.0.0",
    "Cannot VRFY user, but will accept message and attempt delivery",
);
/// The answer to HELP.
pub const HELP: Reply = Reply::fixed(
    214,
    "2.0.0",
    "Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP STARTTLS AUTH",
);

/// `250 2.0.0 Ok: queued as <queue_id>`: the message is durable.
pub fn queued(queue_id: &str) -> Reply {
    Reply::new(250, "2.0.0", format!("Ok: queued as {queue_id}"))
}

/// `250 2.0.0 <n> octets received`: a non-LAST BDAT chunk arrived.
pub fn chunk_received(octets: u64) -> Reply {
    Reply::new(250, "2.0.0", format!("{octets} octets received"))
}

// ---------------------------------------------------------------------------
// Unknown, unimplemented and malformed command lines.

/// A verb we do not know.
pub const UNKNOWN_COMMAND: Reply = Reply::fixed(500, "5.5.1", "Command unrecognized");
/// A command line over `max_line_len`.
pub const LINE_TOO_LONG: Reply = Reply::fixed(500, "5.5.2", "Line too long");
/// A SASL response line over the limit; the exchange ends (RFC 4954 §4).
pub const AUTH_LINE_TOO_LONG: Reply =
    Reply::fixed(500, "5.5.6", "Authentication Exchange line is too long");
/// A command line that is not UTF-8.
pub const NOT_UTF8: Reply = Reply::fixed(500, "5.5.2", "Command line is not valid UTF-8");
/// A verb we know but do not offer (TURN, ETRN, ATRN, SEND, SOML, SAML).
pub const NOT_IMPLEMENTED: Reply = Reply::fixed(502, "5.5.1", "Command not implemented");
/// EXPN is refused: expanding lists leaks their members (RFC 5321 §7.3).
pub const EXPN_DISABLED: Reply = Reply::fixed(502, "5.5.1", "EXPN not available");

/// EHLO without a domain.
pub const EHLO_SYNTAX: Reply = Reply::fixed(501, "5.5.4", "Syntax: EHLO domain");
/// LHLO without a domain.
pub const LHLO_SYNTAX: Reply = Reply::fixed(501, "5.5.4", "Syntax: LHLO domain");
/// HELO or EHLO on an LMTP connection (RFC 2033 §4.1: LHLO only).
pub const LMTP_NEEDS_LHLO: Reply = Reply::fixed(500, "5.5.1", "This is LMTP: say LHLO");
/// HELO without a domain.
pub const HELO_SYNTAX: Reply = Reply::fixed(501, "5.5.4", "Syntax: HELO domain");
/// MAIL not followed by `FROM:`.
pub const MAIL_SYNTAX: Reply = Reply::fixed(501, "5.5.4", "Syntax: MAIL FROM:<address>");
/// RCPT not followed by `TO:`.
pub const RCPT_SYNTAX: Reply = Reply::fixed(501, "5.5.4", "Syntax: RCPT TO:<address>");
/// DATA with an argument.
pub const DATA_SYNTAX: Reply = Reply::fixed(501, "5.5.4", "Syntax: DATA");
/// BDAT with a bad size or trailing junk.
pub const BDAT_SYNTAX: Reply = Reply::fixed(501, "5.5.4", "Syntax: BDAT size [LAST]");
/// RSET with an argument.
pub const RSET_SYNTAX: Reply = Reply::fixed(501, "5.5.4", "Syntax: RSET");
/// QUIT with an argument.
pub const QUIT_SYNTAX: Reply = Reply::fixed(501, "5.5.4", "Syntax: QUIT");
/// STARTTLS with an argument.
pub const STARTTLS_SYNTAX: Reply = Reply::fixed(501, "5.5.4", "Syntax: STARTTLS");
/// AUTH without a mechanism, or with more than a mechanism and a response.
pub const AUTH_SYNTAX: Reply =
    Reply::fixed(501, "5.5.4", "Syntax: AUTH mechanism [initial-response]");
/// VRFY without an argument.
pub const VRFY_SYNTAX: Reply = Reply::fixed(501, "5.5.4", "Syntax: VRFY address");

// ---------------------------------------------------------------------------
// Addresses and ESMTP parameters.

/// The reverse-path does not parse.
pub const BAD_SENDER: Reply = Reply::fixed(501, "5.1.7", "Bad sender address syntax");
/// The reverse-path is over the RFC 5321 §4.5.3.1 length limits.
pub const SENDER_TOO_LONG: Reply = Reply::fixed(501, "5.1.7", "Sender address too long");
/// The forward-path does not parse.
pub const BAD_RECIPIENT: Reply = Reply::fixed(501, "5.1.3", "Bad recipient address syntax");
/// The forward-path is over the RFC 5321 §4.5.3.1 length limits.
pub const RECIPIENT_TOO_LONG: Reply = Reply::fixed(501, "5.1.3", "Recipient address too long");
/// DMARC could not be decided: the sender's domains' DNS failed or did
/// not answer in time.
pub const AUTH_CHECKS_TIMED_OUT: Reply = Reply::fixed(
    451,
    "4.4.3",
    "Sender authentication could not be completed; try again later",
);

/// A non-ASCII address in a transaction without SMTPUTF8 (RFC 6531 §3.6).
pub const NEEDS_SMTPUTF8: Reply = Reply::fixed(553, "5.6.7", "Non-ASCII address requires SMTPUTF8");

/// A parameter that is not `keyword[=value]`, or given twice.
pub const PARAM_SYNTAX: Reply = Reply::fixed(501, "5.5.4", "Malformed or repeated parameter");
/// SIZE= that is not a decimal number.
pub const SIZE_SYNTAX: Reply = Reply::fixed(501, "5.5.4", "SIZE= needs a decimal number");
/// BODY= other than 7BIT or 8BITMIME.
pub const BODY_SYNTAX: Reply = Reply::fixed(501, "5.5.4", "BODY= must be 7BIT or 8BITMIME");
/// SMTPUTF8 given a value.
pub const SMTPUTF8_SYNTAX: Reply = Reply::fixed(501, "5.5.4", "SMTPUTF8 takes no value");
/// A parameter we do not support.
pub const UNKNOWN_PARAM: Reply = Reply::fixed(555, "5.5.4", "Unsupported parameter");
/// Parameters after HELO: they are an ESMTP feature (RFC 5321 §4.1.1.11).
pub const PARAMS_NEED_EHLO: Reply = Reply::fixed(555, "5.5.4", "Parameters need EHLO");

// ---------------------------------------------------------------------------
// Command sequence.

/// MAIL before HELO/EHLO.
pub const NEED_HELO: Reply = Reply::fixed(503, "5.5.1", "Send HELO or EHLO first");
/// The same over LMTP.
pub const NEED_LHLO: Reply = Reply::fixed(503, "5.5.1", "Send LHLO first");
/// MAIL inside a transaction.
pub const NESTED_MAIL: Reply = Reply::fixed(503, "5.5.1", "Sender already given");
/// RCPT, DATA or BDAT outside a transaction.
pub const NEED_MAIL: Reply = Reply::fixed(503, "5.5.1", "Send MAIL first");
/// DATA in a transaction that began its body with BDAT (RFC 3030 §3).
pub const DATA_AFTER_BDAT: Reply = Reply::fixed(503, "5.5.1", "DATA not allowed after BDAT");
/// RCPT once the message content has begun (BDAT): the envelope is closed.
pub const RCPT_AFTER_BDAT: Reply = Reply::fixed(503, "5.5.1", "RCPT not allowed after BDAT");
/// DATA or BDAT LAST with no accepted recipient.
pub const NO_VALID_RECIPIENTS: Reply = Reply::fixed(554, "5.5.1", "No valid recipients");

// ---------------------------------------------------------------------------
// Limits and message content.

/// More RCPTs than `max_recipients`.
pub const TOO_MANY_RECIPIENTS: Reply = Reply::fixed(452, "4.5.3", "Too many recipients");
/// A BDAT chunk so large its octets are not read: the session ends.
pub const CHUNK_BEYOND_READING: Reply = Reply::fixed(
    552,
    "5.3.4",
    "Chunk far beyond the message size limit; closing the connection",
);
/// SIZE= or the message itself is over `max_message_size`.
pub const MESSAGE_TOO_BIG: Reply = Reply::fixed(
    552,
    "5.3.4",
    "Message size exceeds fixed maximum message size",
);
/// The message had a bare CR or bare LF: refused so that no other server can
/// read a different message end out of it (SMTP smuggling).
pub const BARE_LINE_ENDING: Reply = Reply::fixed(
    550,
    "5.6.0",
    "Message contains bare CR or LF; line endings must be CRLF",
);

// ---------------------------------------------------------------------------
// Refusals the driver gives through `reject_recipient` and `message_failed`.

// ---------------------------------------------------------------------------
// TLS and authentication (RFC 3207, RFC 4954, RFC 6409).

/// STARTTLS accepted: the handshake starts after this reply.
pub const READY_FOR_TLS: Reply = Reply::fixed(220, "2.0.0", "Ready to start TLS");
/// STARTTLS where no certificate is loaded: not offered, so a command not
/// implemented here (RFC 5321 §4.2.4; 454 would invite retries for ever).
pub const TLS_UNAVAILABLE: Reply = Reply::fixed(502, "5.5.1", "STARTTLS not offered here");
/// STARTTLS when TLS is already on (RFC 3207 §4: only once).
pub const TLS_ALREADY_ACTIVE: Reply = Reply::fixed(503, "5.5.1", "TLS already active");
/// AUTH accepted.
pub const AUTH_SUCCEEDED: Reply = Reply::fixed(235, "2.7.0", "Authentication successful");
/// Wrong user name or password.
pub const AUTH_FAILED: Reply = Reply::fixed(535, "5.7.8", "Authentication credentials invalid");
/// The credentials could not be checked (store failure, queue full).
pub const AUTH_UNAVAILABLE: Reply = Reply::fixed(454, "4.7.0", "Temporary authentication failure");
/// Too many failed attempts from this client or for this account.
pub const AUTH_LOCKED_OUT: Reply = Reply::fixed(
    454,
    "4.7.0",
    "Too many failed authentication attempts, try again later",
);
/// AUTH before TLS where plaintext passwords are not allowed (RFC 4954 §6).
pub const ENCRYPTION_REQUIRED: Reply = Reply::fixed(
    538,
    "5.7.11",
    "Encryption required for requested authentication mechanism",
);
/// AUTH after a successful AUTH.
pub const ALREADY_AUTHENTICATED: Reply = Reply::fixed(503, "5.5.1", "Already authenticated");
/// AUTH inside a mail transaction (RFC 4954 §4).
pub const AUTH_IN_TRANSACTION: Reply =
    Reply::fixed(503, "5.5.1", "AUTH not permitted during a mail transaction");
/// AUTH with a mechanism we do not speak.
pub const UNKNOWN_MECHANISM: Reply = Reply::fixed(504, "5.5.4", "Unrecognized authentication type");
/// The client answered a challenge with `*`.
pub const AUTH_CANCELLED: Reply = Reply::fixed(501, "5.0.0", "Authentication cancelled");
/// A challenge answer that is not base64.
pub const AUTH_BAD_BASE64: Reply = Reply::fixed(501, "5.5.2", "Cannot decode response");
/// Decoded, but not valid credentials for the mechanism.
pub const AUTH_MALFORMED: Reply = Reply::fixed(501, "5.5.2", "Malformed authentication response");
/// PLAIN with an authorization identity other than the user.
pub const AUTHZID_REFUSED: Reply =
    Reply::fixed(535, "5.7.8", "Authorization identity not permitted");
/// MAIL on the submission port before AUTH (RFC 6409 §4.3).
pub const AUTH_REQUIRED: Reply = Reply::fixed(530, "5.7.0", "Authentication required");
/// MAIL FROM an address the authenticated account does not own.
pub fn sender_not_owned(account: &str) -> Reply {
    Reply::new(
        553,
        "5.7.1",
        format!("Sender address rejected: not owned by {account}"),
    )
}
/// 421 4.7.0: too many recipients refused in this session (probing).
pub fn too_many_rejected_recipients(hostname: &str) -> Reply {
    Reply::new(
        421,
        "4.7.0",
        format!("{hostname} Too many rejected recipients"),
    )
}
/// A challenge: `334 <base64>` (RFC 4954 §4).
pub fn challenge(base64: &str) -> Reply {
    Reply::new(334, "", base64.to_owned())
}

/// RCPT (or the end of DATA) from an account over its sending rate.
pub const SENDING_RATE_EXCEEDED: Reply =
    Reply::fixed(450, "4.7.1", "Sending rate limit exceeded, try again later");
/// RCPT for a local user that does not exist.
pub const NO_SUCH_USER: Reply = Reply::fixed(550, "5.1.1", "No such user");
/// RCPT to an SRS address of ours from a sender that is not null: such an
/// address takes bounces (and automatic replies) only, or anyone who saw
/// one could send through us to the address it stands for.
pub const BOUNCES_ONLY: Reply = Reply::fixed(
    550,
    "5.7.1",
    "This address takes only bounces (MAIL FROM:<>)",
);
/// RCPT for an address on the suppression list (it bounced as unknown
/// before): refused rather than sent again.
pub fn suppressed(added: &str) -> Reply {
    Reply::new(
        550,
        "5.1.1",
        format!("Recipient suppressed: it bounced as unknown ({added}); not sent again"),
    )
}
/// RCPT for a local user over quota: temporary, so mail waits at the
/// sender while the user makes room (RFC 3463 §3.3).
pub const MAILBOX_FULL: Reply = Reply::fixed(452, "4.2.2", "Mailbox full");
/// A message with more `Received:` fields than a path without a loop
/// has (RFC 5321 §6.3: 554, and RFC 3463's "routing loop detected").
pub const TOO_MANY_HOPS: Reply =
    Reply::fixed(554, "5.4.6", "Too many hops: the message is looping");
/// RCPT for a remote domain from a client that may not relay.
/// 550, one of the replies RFC 5321 §4.3.2 lists for RCPT (Postfix says
/// 554, which the RFC does not list there).
pub const RELAYING_DENIED: Reply = Reply::fixed(550, "5.7.1", "Relay access denied");
/// The disk is (nearly) full: RFC 5321's 452 with RFC 3463's "mail system
/// full"; the client should try again later.
pub const DISK_FULL: Reply =
    Reply::fixed(452, "4.3.1", "Insufficient system storage, try again later");
/// The message could not be made durable; the client should try again.
pub const STORAGE_FAILED: Reply =
    Reply::fixed(451, "4.3.0", "Temporary storage failure, try again later");

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(reply: &Reply) -> String {
        let mut out = Vec::new();
        reply.write_to(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn single_line_with_and_without_status() {
        assert_eq!(wire(&OK), "250 2.0.0 Ok\r\n");
        assert_eq!(wire(&greeting("mx")), "220 mx ESMTP ringpost\r\n");
        assert_eq!(wire(&START_DATA), "354 End data with <CR><LF>.<CR><LF>\r\n");
    }

    #[test]
    fn multi_line_uses_continuations() {
        assert!(wire(&ehlo("mx", 10, EhloOffer::default()))
            .starts_with("250-mx\r\n250-PIPELINING\r\n250-SIZE 10\r\n"));
        let all = wire(&ehlo(
            "mx",
            10,
            EhloOffer {
                starttls: true,
                auth: true,
            },
        ));
        assert!(
            all.ends_with("250-STARTTLS\r\n250 AUTH PLAIN LOGIN\r\n"),
            "{all}"
        );
        assert_eq!(
            wire(&Reply::new(550, "5.1.1", "no\nsuch")),
            "550-5.1.1 no\r\n550 5.1.1 such\r\n"
        );
    }

    #[test]
    fn carriage_returns_in_text_are_dropped() {
        assert_eq!(wire(&queued("a\rb\r")), "250 2.0.0 Ok: queued as ab\r\n");
    }
}
