//! Every reply the sink sends, with its enhanced status code (RFC 3463), in
//! one place: no bare `250` or `354` anywhere else in the sink.
//!
//! Fixed replies are byte-string constants, written into the output buffer
//! without formatting; the few that carry a number are small functions that
//! append to the caller's buffer rather than allocate.

use std::io::Write as _;

/// Greeting of a connection picked by `refuse_pct`; the connection is then closed.
pub const REFUSED: &[u8] = b"554 5.3.2 refused\r\n";
/// Greeting of a connection over `max_connections`; the connection is then closed.
pub const TOO_MANY: &[u8] =
    b"421 4.7.0 Too many concurrent SMTP connections from this IP address; please try again later\r\n";
/// NOOP, RSET.
pub const OK: &[u8] = b"250 2.0.0 Ok\r\n";
/// MAIL accepted.
pub const MAIL_OK: &[u8] = b"250 2.1.0 Ok\r\n";
/// RCPT accepted (every address is).
pub const RCPT_OK: &[u8] = b"250 2.1.5 Ok\r\n";
/// DATA accepted: send the message.
pub const START_DATA: &[u8] = b"354 End data with <CR><LF>.<CR><LF>\r\n";
/// QUIT.
pub const BYE: &[u8] = b"221 2.0.0 Bye\r\n";

/// Fault injected at RCPT (`tempfail_rcpt_pct`).
pub const RCPT_TEMPFAIL: &[u8] = b"450 4.2.0 Mailbox busy, try again later (injected)\r\n";
/// Fault injected at RCPT (`permfail_rcpt_pct`).
pub const RCPT_PERMFAIL: &[u8] = b"550 5.1.1 No such user (injected)\r\n";
/// Fault injected after the end of data (`tempfail_data_pct`, `tempfail_data_first`).
pub const DATA_TEMPFAIL: &[u8] = b"451 4.3.0 Try again later (injected)\r\n";
/// Fault injected after the end of data (`permfail_data_pct`).
pub const DATA_PERMFAIL: &[u8] = b"554 5.6.0 Message rejected (injected)\r\n";

/// A message completed after `exit_after` was reached; the connection is closed.
pub const SHUTTING_DOWN: &[u8] = b"421 4.3.2 Service shutting down\r\n";
/// Message (or announced SIZE) over the limit.
pub const TOO_BIG: &[u8] = b"552 5.3.4 Message too big\r\n";
/// Recipient limit reached; the client may send the rest in another transaction.
pub const TOO_MANY_RCPTS: &[u8] = b"452 4.5.3 Too many recipients\r\n";
/// A command line over the line limit (it is discarded).
pub const LINE_TOO_LONG: &[u8] = b"500 5.5.0 Line too long\r\n";
/// Unknown verb.
pub const UNKNOWN: &[u8] = b"500 5.5.2 Command not recognized\r\n";
/// Known verb, unusable argument.
pub const SYNTAX: &[u8] = b"501 5.5.4 Syntax error in parameters\r\n";
/// MAIL inside a transaction.
pub const NESTED_MAIL: &[u8] = b"503 5.5.1 Nested MAIL command\r\n";
/// RCPT, DATA or BDAT without MAIL.
pub const NEED_MAIL: &[u8] = b"503 5.5.1 Need MAIL command\r\n";
/// DATA after BDAT in the same transaction (RFC 3030 §2).
pub const DATA_AFTER_BDAT: &[u8] = b"503 5.5.1 DATA not allowed after BDAT\r\n";
/// DATA or BDAT when every RCPT was refused.
pub const NO_RECIPIENTS: &[u8] = b"554 5.5.1 No valid recipients\r\n";

/// The greeting: `220 <hostname> ESMTP ...`.
pub fn greeting(hostname: &str) -> Vec<u8> {
    format!("220 {hostname} ESMTP ringpost-blast sink\r\n").into_bytes()
}

/// The EHLO reply: every extension the sink implements.
pub fn ehlo(hostname: &str, max_message: usize) -> Vec<u8> {
    format!(
        "250-{hostname}\r\n250-PIPELINING\r\n250-SIZE {max_message}\r\n250-8BITMIME\r\n\
         250-SMTPUTF8\r\n250-ENHANCEDSTATUSCODES\r\n250 CHUNKING\r\n"
    )
    .into_bytes()
}

/// The HELO reply.
pub fn helo(hostname: &str) -> Vec<u8> {
    format!("250 {hostname}\r\n").into_bytes()
}

/// Message number `n` accepted: `250 2.0.0 Ok: <n>`.
pub fn accepted(out: &mut Vec<u8>, n: u64) {
    // Writing into a Vec cannot fail.
    let _ = write!(out, "250 2.0.0 Ok: {n}\r\n");
}

/// A non-final BDAT chunk of `size` octets received.
pub fn chunk_received(out: &mut Vec<u8>, size: u64) {
    let _ = write!(out, "250 2.0.0 {size} octets received\r\n");
}
