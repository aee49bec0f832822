//! Delivery status notifications (RFC 3464): the bounce the queue sends back
//! to a sender when delivery to some recipients failed or is delayed.
//!
//! [`compose`] is a pure function. The caller (the delivery engine) supplies
//! everything, the date and the identifiers included, and gets one complete
//! RFC 5322 message back, to queue for the original envelope sender with a
//! null reverse-path (RFC 3464 §2, RFC 5321 §4.5.5) so that it can never
//! bounce in turn.
//!
//! # Shape
//! A `multipart/report; report-type=delivery-status` message (RFC 6522) with
//! three parts:
//! 1. `text/plain`: a human explanation, one paragraph per recipient.
//! 2. `message/delivery-status`: the per-message fields, then one block of
//!    per-recipient fields for each recipient (RFC 3464 §2.2, §2.3).
//! 3. `text/rfc822-headers`: the header section of the original, at most
//!    [`MAX_ORIGINAL_HEADERS`] octets. Never the body: a bounce should not
//!    carry a spammer's payload to a forged sender, and it stays small.
//!
//! # What the output guarantees, whatever the input
//! - Every line ends in CRLF and is at most [`MAX_LINE_LEN`] octets long.
//! - Caller strings appear only sanitized (see [`MAX_FIELD_LEN`]): control
//!   characters, CR and LF among them, become spaces, so no value can end a
//!   header line early and add a header (`Bcc:` injection) or a DSN field.
//! - The output is valid UTF-8: bytes of the original that are not become
//!   U+FFFD, bare CRs are dropped and bare LFs become CRLF.
//! - The MIME boundary occurs nowhere in the content.
//!
//! # Choices where the RFCs leave room
//! - A part (and the whole message) is labelled `8bit` when it holds
//!   non-ASCII text, such as an internationalized address (RFC 6531); we do
//!   not use RFC 6533's `message/global-delivery-status`.
//! - A `Status` that is not a valid RFC 3463 code is replaced by `5.0.0` or
//!   `4.0.0` (by action), so a bad code from the caller cannot make the
//!   report unparseable.
//! - Long values are cut, not folded: a folded address or diagnostic would
//!   differ from the original once unfolded, a cut one is visibly partial.

use memchr::memmem;

/// The longest line of the message, CRLF excluded (RFC 5322 §2.1.1).
pub const MAX_LINE_LEN: usize = 998;

/// The most octets of one caller-provided value kept on a line; longer
/// values are cut on a character boundary.
///
/// Each line holds at most one such value next to fixed text shorter than
/// [`MAX_FIXED_TEXT`], which is how every line stays within [`MAX_LINE_LEN`].
pub const MAX_FIELD_LEN: usize = 900;

/// Room left on a line for the fixed text around one value.
const MAX_FIXED_TEXT: usize = MAX_LINE_LEN - MAX_FIELD_LEN;

/// The most octets of the original's header section returned in part 3,
/// CRLFs included; the section is cut before the first line that would
/// cross it. It also bounds how much of an original without a header end is
/// returned.
pub const MAX_ORIGINAL_HEADERS: usize = 64 * 1024;

/// The longest MIME boundary (RFC 2046 §5.1.1).
const MAX_BOUNDARY_LEN: usize = 70;

/// Fixed start of every boundary. `=_` is no valid quoted-printable escape,
/// so it cannot occur in QP-encoded text, and the rest makes a chance match
/// unlikely.
const BOUNDARY_PREFIX: &str = "=_ringpost_dsn_";

/// The most characters of the queue id used in the boundary.
const MAX_BOUNDARY_QUEUE_ID: usize = 32;

/// The longest suffix added to vary the boundary: `.`, a `u64` in
/// hexadecimal and `=`.
const MAX_BOUNDARY_SUFFIX: usize = 1 + 16 + 1;

// The longest fixed text next to a value is the From: line's 45 octets.
const _: () = assert!(MAX_FIXED_TEXT >= 64);
const _: () = assert!(
    BOUNDARY_PREFIX.len() + MAX_BOUNDARY_QUEUE_ID + MAX_BOUNDARY_SUFFIX <= MAX_BOUNDARY_LEN
);

/// What happened to one recipient (RFC 3464 §2.3.3). Successful deliveries
/// are not reported: ringpost sends DSNs only for trouble.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Delivery failed for good; the message will not be retried.
    Failed,
    /// Delivery has not succeeded yet; the message is still being retried.
    Delayed,
    /// Delivered into the recipient's mailbox (a success the sender asked
    /// to hear of with NOTIFY=SUCCESS, RFC 3461).
    Delivered,
    /// Handed to a server that does not offer DSN, so no further report
    /// will come (RFC 3461 §5.2.2).
    Relayed,
    /// Delivered to an alias that passed it on to several addresses, of
    /// which no success will be reported (RFC 3461 §6.2.7.3).
    Expanded,
}

impl Action {
    /// The `Action:` field value.
    fn keyword(self) -> &'static str {
        match self {
            Action::Failed => "failed",
            Action::Delayed => "delayed",
            Action::Delivered => "delivered",
            Action::Relayed => "relayed",
            Action::Expanded => "expanded",
        }
    }

    /// The enhanced status code used when the caller's is not valid: "other
    /// undefined status" of the class the action implies (RFC 3463 §3.1).
    fn fallback_status(self) -> &'static str {
        match self {
            Action::Failed => "5.0.0",
            Action::Delayed => "4.0.0",
            Action::Delivered | Action::Relayed | Action::Expanded => "2.0.0",
        }
    }

    /// Whether it reports a success.
    fn is_success(self) -> bool {
        matches!(self, Action::Delivered | Action::Relayed | Action::Expanded)
    }
}

/// The outcome for one recipient of the original message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientStatus {
    /// The address delivery was attempted to: `Final-Recipient: rfc822;addr`.
    pub recipient: String,
    /// Failed or delayed: `Action:`.
    pub action: Action,
    /// The enhanced status code (RFC 3463), e.g. `"5.1.1"`: `Status:`.
    pub status: String,
    /// The host that answered, e.g. `"mx1.example.test"`:
    /// `Remote-MTA: dns;host`. `None` when no host was reached.
    pub remote_mta: Option<String>,
    /// Why, in a reply's words: `Diagnostic-Code:`. `None` when nothing
    /// was said.
    pub diagnostic: Option<Diagnostic>,
    /// What the refusal means, in plain words for the human part (see
    /// [`super::bounce_class`]); `None` to say nothing.
    pub meaning: Option<String>,
    /// The recipient as the sender first named it (DSN's ORCPT, decoded):
    /// `Original-Recipient: rfc822;addr` (RFC 3464 §2.3.1).
    pub original_recipient: Option<String>,
}

/// A recipient's diagnostic (RFC 3464 §2.3.6): a reply, and who gave it.
///
/// The type is written once, before the text (`diagnostic-type ";" text`),
/// and says where the text comes from, so that a reader never takes our own
/// verdict (no MX, a dead host, a message past its lifetime) for what a
/// remote server said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Diagnostic {
    /// What a remote SMTP server replied, e.g. `"550 5.1.1 no such user"`:
    /// `Diagnostic-Code: smtp; 550 5.1.1 no such user`.
    Smtp(String),
    /// Our own verdict in reply form, e.g. `"550 5.1.2 no such domain"`,
    /// when no remote server said it: `Diagnostic-Code: X-Ringpost; ...`
    /// (an `X-` diagnostic type, as RFC 3464 §2.3.6 allows for types not
    /// registered with IANA).
    Local(String),
}

impl Diagnostic {
    /// The `diagnostic-type` of the `Diagnostic-Code` field.
    fn diagnostic_type(&self) -> &'static str {
        match self {
            Diagnostic::Smtp(_) => "smtp",
            Diagnostic::Local(_) => "X-Ringpost",
        }
    }

    /// How the human-readable part introduces the text.
    fn human_label(&self) -> &'static str {
        match self {
            Diagnostic::Smtp(_) => "Remote host said",
            Diagnostic::Local(_) => "Reason",
        }
    }

    /// The reply text, without its type.
    pub fn text(&self) -> &str {
        match self {
            Diagnostic::Smtp(text) | Diagnostic::Local(text) => text,
        }
    }
}

/// Everything a DSN says. No field may be trusted to be clean: all are
/// sanitized on the way in (see the module docs).
#[derive(Debug, Clone, Copy)]
pub struct Report<'a> {
    /// Our hostname: `Reporting-MTA: dns;host`, and the DSN comes from
    /// `MAILER-DAEMON@host`.
    pub reporting_mta: &'a str,
    /// The original envelope sender, a bare address; the DSN goes to them.
    /// Angle brackets in it are dropped.
    pub to: &'a str,
    /// The RFC 5322 date for `Date:`; the caller reads the clock.
    pub date: &'a str,
    /// When we accepted the original, an RFC 5322 date: `Arrival-Date:`.
    pub arrival_date: &'a str,
    /// The DSN's own Message-ID, without angle brackets.
    pub message_id: &'a str,
    /// Our queue id of the original: `X-Ringpost-Queue-ID:` and the text.
    pub queue_id: &'a str,
    /// The sender's id for the transaction (DSN's ENVID, decoded):
    /// `Original-Envelope-Id:` (RFC 3464 §2.2.1).
    pub envelope_id: Option<&'a str>,
    /// One entry per recipient being reported, in the order to list them.
    /// RFC 3464 wants at least one.
    pub recipients: &'a [RecipientStatus],
    /// The original message as queued; only its header section is used.
    pub original: &'a [u8],
}

/// Compose the DSN for `report`: a complete message with CRLF line endings.
///
/// The subject says "Delayed Mail (still being retried)" when every
/// recipient is [`Action::Delayed`], "Successful Mail Delivery Report" when
/// every one is delivered or relayed, "Undelivered Mail Returned to
/// Sender" otherwise.
///
/// ```
/// use ringpost_protocols::smtp::dsn::{compose, Action, Diagnostic, RecipientStatus, Report};
///
/// let recipients = [RecipientStatus {
///     recipient: "bob@example.test".into(),
///     action: Action::Failed,
///     status: "5.1.1".into(),
///     remote_mta: Some("mx1.example.test".into()),
///     diagnostic: Some(Diagnostic::Smtp("550 5.1.1 no such user".into())),
///     meaning: Some("the address does not exist".into()),
///     original_recipient: None,
/// }];
/// let dsn = compose(&Report {
///     reporting_mta: "mail.example.org",
///     to: "alice@example.org",
///     date: "Tue, 3 Mar 2026 10:00:00 +0000",
///     arrival_date: "Tue, 3 Mar 2026 09:00:00 +0000",
///     message_id: "dsn-Q123@mail.example.org",
///     queue_id: "Q123",
///     envelope_id: None,
///     recipients: &recipients,
///     original: b"Subject: hi\r\n\r\nbody\r\n",
/// });
/// let text = String::from_utf8(dsn).unwrap();
/// assert!(text.contains("\r\nFinal-Recipient: rfc822;bob@example.test\r\n"));
/// assert!(text.contains("\r\nDiagnostic-Code: smtp; 550 5.1.1 no such user\r\n"));
/// assert!(text.contains("\r\nSubject: hi\r\n"));
/// ```
pub fn compose(report: &Report<'_>) -> Vec<u8> {
    let mta = field(report.reporting_mta);
    let queue_id = field(report.queue_id);
    let all = |test: fn(&RecipientStatus) -> bool| {
        !report.recipients.is_empty() && report.recipients.iter().all(test)
    };
    let subject = if all(|r| r.action == Action::Delayed) {
        "Delayed Mail (still being retried)"
    } else if all(|r| r.action.is_success()) {
        "Successful Mail Delivery Report"
    } else {
        "Undelivered Mail Returned to Sender"
    };
    let headers_description = if all(|r| r.action.is_success()) {
        "Content-Description: Message headers"
    } else {
        "Content-Description: Undelivered message headers"
    };

    let parts = [
        Part {
            headers: [
                "Content-Type: text/plain; charset=utf-8",
                "Content-Description: Notification",
            ],
            body: explanation(report, &mta, &queue_id),
        },
        Part {
            headers: [
                "Content-Type: message/delivery-status",
                "Content-Description: Delivery report",
            ],
            body: delivery_status(report, &mta, &queue_id),
        },
        Part {
            headers: ["Content-Type: text/rfc822-headers", headers_description],
            body: original_headers(report.original),
        },
    ];
    let boundary = boundary(&queue_id, &parts);
    let eight_bit = parts.iter().any(|p| !p.body.is_ascii());

    let mut out = String::with_capacity(2048 + parts.iter().map(|p| p.body.len()).sum::<usize>());
    push_line(
        &mut out,
        &["From: \"Mail Delivery System\" <MAILER-DAEMON@", &mta, ">"],
    );
    // Brackets inside are dropped so that the value cannot close the address
    // early and start a second one.
    let to = field(report.to).replace(['<', '>'], "");
    push_line(&mut out, &["To: <", &to, ">"]);
    push_line(&mut out, &["Subject: ", subject]);
    push_line(&mut out, &["Date: ", &field(report.date)]);
    // Brackets are trimmed so that a caller passing "<id>" still gets one pair.
    let message_id = field(report.message_id);
    push_line(
        &mut out,
        &["Message-ID: <", message_id.trim_matches(['<', '>']), ">"],
    );
    push_line(&mut out, &["MIME-Version: 1.0"]);
    // RFC 3834 §5: tells auto-responders not to answer the bounce.
    push_line(&mut out, &["Auto-Submitted: auto-replied"]);
    push_line(&mut out, &["X-Ringpost-Queue-ID: ", &queue_id]);
    push_line(
        &mut out,
        &["Content-Type: multipart/report; report-type=delivery-status;"],
    );
    push_line(&mut out, &["\tboundary=\"", &boundary, "\""]);
    push_line(
        &mut out,
        &["Content-Transfer-Encoding: ", encoding(eight_bit)],
    );
    push_line(&mut out, &[]);
    push_line(&mut out, &["This is a MIME-encapsulated message."]);
    for part in &parts {
        // The CRLF before each delimiter belongs to the delimiter (RFC 2046
        // §5.1.1), so every part body keeps its own final CRLF.
        push_line(&mut out, &[]);
        push_line(&mut out, &["--", &boundary]);
        for header in part.headers {
            push_line(&mut out, &[header]);
        }
        push_line(
            &mut out,
            &[
                "Content-Transfer-Encoding: ",
                encoding(!part.body.is_ascii()),
            ],
        );
        push_line(&mut out, &[]);
        out.push_str(&part.body);
    }
    push_line(&mut out, &[]);
    push_line(&mut out, &["--", &boundary, "--"]);
    out.into_bytes()
}

/// One body part: its fixed headers and its content, already made of
/// CRLF-terminated lines.
struct Part {
    /// Header lines other than Content-Transfer-Encoding, which depends on
    /// the body.
    headers: [&'static str; 2],
    /// The content, every line ending in CRLF.
    body: String,
}

/// The Content-Transfer-Encoding for content with or without 8-bit octets.
fn encoding(eight_bit: bool) -> &'static str {
    if eight_bit {
        "8bit"
    } else {
        "7bit"
    }
}

/// Append the concatenation of `pieces` and a CRLF.
fn push_line(out: &mut String, pieces: &[&str]) {
    for piece in pieces {
        out.push_str(piece);
    }
    out.push_str("\r\n");
}

/// `value` made safe for one header or field line: control characters (CR,
/// LF and TAB among them) become spaces, surrounding whitespace is trimmed
/// and the result is cut to [`MAX_FIELD_LEN`] octets on a character
/// boundary. Stops reading once full, so a huge value costs no more than a
/// short one.
fn field(value: &str) -> String {
    let mut out = String::new();
    for c in value.chars() {
        let c = if c.is_control() { ' ' } else { c };
        if out.is_empty() && c.is_whitespace() {
            continue;
        }
        if out.len() + c.len_utf8() > MAX_FIELD_LEN {
            break;
        }
        out.push(c);
    }
    out.truncate(out.trim_end().len());
    out
}

/// `field(value)`, or `None` when nothing is left of it.
fn optional_field(value: Option<&str>) -> Option<String> {
    value.map(field).filter(|v| !v.is_empty())
}

/// The recipient's diagnostic with its text sanitized, unless it has none
/// or its text is empty.
fn diagnostic_of(recipient: &RecipientStatus) -> Option<(&Diagnostic, String)> {
    let diagnostic = recipient.diagnostic.as_ref()?;
    Some((diagnostic, optional_field(Some(diagnostic.text()))?))
}

/// The recipient's status code when it is a valid RFC 3463 code
/// (`class.subject.detail`, class 2, 4 or 5, the others 1 to 3 digits), the
/// action's fallback otherwise.
fn status_code(recipient: &RecipientStatus) -> &str {
    let status = recipient.status.trim();
    let mut numbers = status.split('.');
    let valid = matches!(numbers.next(), Some("2" | "4" | "5"))
        && numbers
            .by_ref()
            .take(2)
            .filter(|n| (1..=3).contains(&n.len()) && n.bytes().all(|b| b.is_ascii_digit()))
            .count()
            == 2
        && numbers.next().is_none();
    if valid {
        status
    } else {
        recipient.action.fallback_status()
    }
}

/// Part 1: the explanation for people.
fn explanation(report: &Report<'_>, mta: &str, queue_id: &str) -> String {
    let any_failed = report.recipients.iter().any(|r| r.action == Action::Failed);
    let any_delayed = report
        .recipients
        .iter()
        .any(|r| r.action == Action::Delayed);
    let any = |action: Action| report.recipients.iter().any(|r| r.action == action);
    let mut out = String::new();
    push_line(&mut out, &["This is the mail system at host ", mta, "."]);
    push_line(&mut out, &[]);
    if any_failed {
        push_line(
            &mut out,
            &["Your message could not be delivered to one or more of its recipients."],
        );
        push_line(
            &mut out,
            &["Delivery to those marked \"failed\" will not be retried."],
        );
    }
    if any_delayed {
        push_line(
            &mut out,
            &["Your message has not been delivered yet to one or more of its recipients."],
        );
        push_line(
            &mut out,
            &["Delivery to those marked \"delayed\" is still being retried; you do not"],
        );
        push_line(&mut out, &["need to send the message to them again."]);
    }
    if any(Action::Delivered) {
        push_line(
            &mut out,
            &["Your message was delivered to the mailboxes of those marked \"delivered\"."],
        );
    }
    if any(Action::Relayed) {
        push_line(
            &mut out,
            &["Your message was handed on to the servers of those marked \"relayed\";"],
        );
        push_line(
            &mut out,
            &["those servers do not send delivery reports, so none will follow."],
        );
    }
    if any(Action::Expanded) {
        push_line(
            &mut out,
            &["Your message was delivered to the aliases marked \"expanded\", which"],
        );
        push_line(
            &mut out,
            &["passed it on to several addresses; no success is reported for those."],
        );
    }
    push_line(&mut out, &[]);
    push_line(&mut out, &["Queue ID: ", queue_id]);
    for recipient in report.recipients {
        push_line(&mut out, &[]);
        push_line(
            &mut out,
            &[
                "<",
                &field(&recipient.recipient),
                ">: ",
                recipient.action.keyword(),
                ", status ",
                status_code(recipient),
            ],
        );
        if let Some(host) = optional_field(recipient.remote_mta.as_deref()) {
            push_line(&mut out, &["    Remote host: ", &host]);
        }
        if let Some((diagnostic, said)) = diagnostic_of(recipient) {
            push_line(&mut out, &["    ", diagnostic.human_label(), ": ", &said]);
        }
        if let Some(meaning) = optional_field(recipient.meaning.as_deref()) {
            push_line(&mut out, &["    In short: ", &meaning]);
        }
    }
    push_line(&mut out, &[]);
    push_line(&mut out, &["The headers of your message are attached."]);
    out
}

/// Part 2: the machine-readable report (RFC 3464 §2.1): per-message fields,
/// then a blank line before each per-recipient block.
fn delivery_status(report: &Report<'_>, mta: &str, queue_id: &str) -> String {
    let mut out = String::new();
    if let Some(envid) = optional_field(report.envelope_id) {
        push_line(&mut out, &["Original-Envelope-Id: ", &envid]);
    }
    push_line(&mut out, &["Reporting-MTA: dns;", mta]);
    // An extension field (RFC 3464 §2.4), so a reader can find the original
    // in our queue.
    push_line(&mut out, &["X-Ringpost-Queue-ID: ", queue_id]);
    push_line(&mut out, &["Arrival-Date: ", &field(report.arrival_date)]);
    for recipient in report.recipients {
        push_line(&mut out, &[]);
        if let Some(original) = optional_field(recipient.original_recipient.as_deref()) {
            push_line(&mut out, &["Original-Recipient: ", &original]);
        }
        push_line(
            &mut out,
            &["Final-Recipient: rfc822;", &field(&recipient.recipient)],
        );
        push_line(&mut out, &["Action: ", recipient.action.keyword()]);
        push_line(&mut out, &["Status: ", status_code(recipient)]);
        if let Some(host) = optional_field(recipient.remote_mta.as_deref()) {
            push_line(&mut out, &["Remote-MTA: dns;", &host]);
        }
        if let Some((diagnostic, said)) = diagnostic_of(recipient) {
            let kind = diagnostic.diagnostic_type();
            push_line(&mut out, &["Diagnostic-Code: ", kind, "; ", &said]);
        }
    }
    out
}

/// Part 3: the original's header section, up to its first empty line (the
/// whole original when it has none), each line cleaned by
/// [`original_line`], cut before the line that would cross
/// [`MAX_ORIGINAL_HEADERS`].
fn original_headers(original: &[u8]) -> String {
    let mut out = String::new();
    let mut rest = original;
    while !rest.is_empty() {
        // Any LF ends a line, bare or not: the original may predate our
        // line-ending checks (a local submission, an old queue file).
        let (raw, next) = match memchr::memchr(b'\n', rest) {
            Some(end) => (&rest[..end], &rest[end + 1..]),
            None => (rest, &[][..]),
        };
        rest = next;
        let line = original_line(raw);
        if line.is_empty() || out.len() + line.len() + 2 > MAX_ORIGINAL_HEADERS {
            break;
        }
        push_line(&mut out, &[&line]);
    }
    out
}

/// One line of the original, made safe to return: CRs dropped (a bare CR is
/// no line ending we honour), invalid UTF-8 replaced with U+FFFD, control
/// characters other than TAB (which folds headers) replaced with spaces, and
/// cut to [`MAX_LINE_LEN`] octets. At most [`MAX_LINE_LEN`] octets are read,
/// so a huge line costs no more than a long one.
fn original_line(raw: &[u8]) -> String {
    let bytes: Vec<u8> = raw
        .iter()
        .copied()
        .filter(|&b| b != b'\r')
        .take(MAX_LINE_LEN)
        .collect();
    let mut out = String::with_capacity(bytes.len());
    for c in String::from_utf8_lossy(&bytes).chars() {
        let c = if c.is_control() && c != '\t' { ' ' } else { c };
        // U+FFFD is 3 octets, so a line of invalid bytes can grow past the cap.
        if out.len() + c.len_utf8() > MAX_LINE_LEN {
            break;
        }
        out.push(c);
    }
    out
}

/// A boundary made from the queue id that occurs in none of the part
/// bodies, so no content line can be read as a delimiter.
fn boundary(queue_id: &str, parts: &[Part]) -> String {
    let mut base = String::from(BOUNDARY_PREFIX);
    // Only characters that are safe in a boundary and in any parser's idea
    // of one.
    base.extend(
        queue_id
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            .take(MAX_BOUNDARY_QUEUE_ID),
    );
    let seed = parts
        .iter()
        .fold(FNV_OFFSET, |hash, part| fnv1a(hash, part.body.as_bytes()));
    pick_boundary(&base, seed, |candidate| {
        let finder = memmem::Finder::new(candidate.as_bytes());
        parts
            .iter()
            .any(|p| finder.find(p.body.as_bytes()).is_some())
    })
}

/// The first candidate for which `occurs` is false: `base` itself, then
/// `base.<hex>=` for `seed`, `seed + 1`, …
///
/// Why a hash of the content and not a counter: content is partly written
/// by the sender (its headers, its recipients), and with a counter it could
/// hold `base`, `base.1=`, … and make us scan it thousands of times. To
/// block a hashed candidate the content would have to contain its own hash.
/// The loop still ends on any content: each candidate is distinct and a
/// finite text holds finitely many of them.
fn pick_boundary(base: &str, seed: u64, occurs: impl Fn(&str) -> bool) -> String {
    if !occurs(base) {
        return base.to_owned();
    }
    (0u64..)
        .map(|n| format!("{base}.{:016x}=", seed.wrapping_add(n)))
        .find(|candidate| !occurs(candidate))
        .expect("finite content cannot hold every candidate")
}

/// FNV-1a's 64-bit offset basis: the hash of no bytes.
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// Continue the 64-bit FNV-1a hash `hash` over `bytes`. Chosen for being
/// tiny and stable across Rust releases (unlike `DefaultHasher`), so the
/// same report always gets the same boundary.
fn fnv1a(hash: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(hash, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mail_parser::{MessageParser, MimeHeaders};

    fn failed(recipient: &str) -> RecipientStatus {
        RecipientStatus {
            recipient: recipient.to_owned(),
            action: Action::Failed,
            status: "5.1.1".to_owned(),
            remote_mta: Some("mx1.example.test".to_owned()),
            diagnostic: Some(Diagnostic::Smtp("550 5.1.1 no such user".to_owned())),
            meaning: Some("the address does not exist".to_owned()),
            original_recipient: None,
        }
    }

    fn delayed(recipient: &str) -> RecipientStatus {
        RecipientStatus {
            recipient: recipient.to_owned(),
            action: Action::Delayed,
            status: "4.4.1".to_owned(),
            remote_mta: None,
            diagnostic: None,
            meaning: None,
            original_recipient: None,
        }
    }

    const ORIGINAL: &[u8] = b"From: alice@example.org\r\n\
        To: bob@example.test\r\n\
        Subject: Lunch on Friday?\r\n\
        Message-ID: <orig-1@example.org>\r\n\
        \r\n\
        Secret body text.\r\n";

    fn report<'a>(recipients: &'a [RecipientStatus], original: &'a [u8]) -> Report<'a> {
        Report {
            reporting_mta: "mail.example.org",
            to: "alice@example.org",
            date: "Tue, 3 Mar 2026 10:00:00 +0000",
            arrival_date: "Tue, 3 Mar 2026 09:00:00 +0000",
            message_id: "dsn-Q123@mail.example.org",
            queue_id: "Q123",
            envelope_id: None,
            recipients,
            original,
        }
    }

    /// Checks the line invariants every output must keep and returns the
    /// output as text.
    fn well_formed(dsn: &[u8]) -> &str {
        let text = std::str::from_utf8(dsn).expect("output is UTF-8");
        assert!(text.ends_with("\r\n"));
        for (i, &b) in dsn.iter().enumerate() {
            match b {
                b'\r' => assert_eq!(dsn.get(i + 1), Some(&b'\n'), "bare CR at {i}"),
                b'\n' => assert!(i > 0 && dsn[i - 1] == b'\r', "bare LF at {i}"),
                _ => {}
            }
        }
        for line in text.split("\r\n") {
            assert!(line.len() <= MAX_LINE_LEN, "line of {} octets", line.len());
        }
        text
    }

    /// The boundary, read back from the top-level Content-Type.
    fn boundary_of(dsn: &[u8]) -> String {
        let message = MessageParser::default().parse(dsn).unwrap();
        let content_type = message.root_part().content_type().unwrap();
        content_type.attribute("boundary").unwrap().to_owned()
    }

    /// The parts of the parsed DSN: (content type, contents).
    fn parts(dsn: &[u8]) -> Vec<(String, Vec<u8>)> {
        let message = MessageParser::default().parse(dsn).expect("parses");
        let root = message.root_part();
        root.sub_parts()
            .expect("multipart")
            .iter()
            .map(|&id| {
                let part = message.part(id).unwrap();
                let ct = part.content_type().unwrap();
                (
                    format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or("")),
                    part.contents().to_vec(),
                )
            })
            .collect()
    }

    fn part_text(dsn: &[u8], index: usize) -> String {
        String::from_utf8(parts(dsn)[index].1.clone()).unwrap()
    }

    /// The delivery-status part as blocks of `(name, value)` fields.
    fn status_blocks(dsn: &[u8]) -> Vec<Vec<(String, String)>> {
        part_text(dsn, 1)
            .split("\r\n\r\n")
            .map(|block| {
                block
                    .split("\r\n")
                    .filter(|l| !l.is_empty())
                    .map(|l| {
                        let (name, value) = l.split_once(": ").expect("name: value");
                        (name.to_owned(), value.to_owned())
                    })
                    .collect()
            })
            .collect()
    }

    fn pairs(fields: &[(&str, &str)]) -> Vec<(String, String)> {
        fields
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn is_a_multipart_report_with_three_parts() {
        let recipients = [failed("bob@example.test")];
        let dsn = compose(&report(&recipients, ORIGINAL));
        well_formed(&dsn);
        let message = MessageParser::default().parse(&dsn[..]).unwrap();
        let ct = message.root_part().content_type().unwrap();
        assert_eq!(ct.ctype(), "multipart");
        assert_eq!(ct.subtype(), Some("report"));
        assert_eq!(ct.attribute("report-type"), Some("delivery-status"));
        let types: Vec<String> = parts(&dsn).into_iter().map(|(t, _)| t).collect();
        assert_eq!(
            types,
            [
                "text/plain",
                "message/delivery-status",
                "text/rfc822-headers"
            ]
        );
        let plain = message
            .part(message.root_part().sub_parts().unwrap()[0])
            .unwrap();
        assert_eq!(
            plain.content_type().unwrap().attribute("charset"),
            Some("utf-8")
        );
    }

    #[test]
    fn top_level_headers() {
        let recipients = [failed("bob@example.test")];
        let dsn = compose(&report(&recipients, ORIGINAL));
        let message = MessageParser::default().parse(&dsn[..]).unwrap();
        let from = message.from().unwrap().first().unwrap();
        assert_eq!(from.name(), Some("Mail Delivery System"));
        assert_eq!(from.address(), Some("MAILER-DAEMON@mail.example.org"));
        let to = message.to().unwrap().first().unwrap();
        assert_eq!(to.address(), Some("alice@example.org"));
        assert_eq!(
            message.subject(),
            Some("Undelivered Mail Returned to Sender")
        );
        assert_eq!(message.message_id(), Some("dsn-Q123@mail.example.org"));
        assert_eq!(message.date().unwrap().to_rfc3339(), "2026-03-03T10:00:00Z");
        assert_eq!(message.header_raw("MIME-Version").unwrap().trim(), "1.0");
        assert_eq!(
            message.header_raw("Auto-Submitted").unwrap().trim(),
            "auto-replied"
        );
        assert_eq!(
            message.header_raw("X-Ringpost-Queue-ID").unwrap().trim(),
            "Q123"
        );
    }

    #[test]
    fn delivery_status_fields_for_two_recipients() {
        let recipients = [failed("bob@example.test"), delayed("carol@example.net")];
        let dsn = compose(&report(&recipients, ORIGINAL));
        well_formed(&dsn);
        assert_eq!(
            status_blocks(&dsn),
            [
                pairs(&[
                    ("Reporting-MTA", "dns;mail.example.org"),
                    ("X-Ringpost-Queue-ID", "Q123"),
                    ("Arrival-Date", "Tue, 3 Mar 2026 09:00:00 +0000"),
                ]),
                pairs(&[
                    ("Final-Recipient", "rfc822;bob@example.test"),
                    ("Action", "failed"),
                    ("Status", "5.1.1"),
                    ("Remote-MTA", "dns;mx1.example.test"),
                    ("Diagnostic-Code", "smtp; 550 5.1.1 no such user"),
                ]),
                pairs(&[
                    ("Final-Recipient", "rfc822;carol@example.net"),
                    ("Action", "delayed"),
                    ("Status", "4.4.1"),
                ]),
            ]
        );
    }

    #[test]
    fn explanation_lists_each_recipient_and_diagnostic() {
        let recipients = [failed("bob@example.test"), delayed("carol@example.net")];
        let dsn = compose(&report(&recipients, ORIGINAL));
        let text = part_text(&dsn, 0);
        assert!(text.contains("mail system at host mail.example.org."));
        assert!(text.contains("Queue ID: Q123"));
        assert!(text.contains("<bob@example.test>: failed, status 5.1.1\r\n"));
        assert!(text.contains("    Remote host: mx1.example.test\r\n"));
        assert!(text.contains("    Remote host said: 550 5.1.1 no such user\r\n"));
        assert!(text.contains("    In short: the address does not exist\r\n"));
        assert!(text.contains("<carol@example.net>: delayed, status 4.4.1\r\n"));
        assert!(text.contains("could not be delivered"));
        assert!(text.contains("still being retried"));
    }

    #[test]
    fn our_own_verdict_is_typed_as_ours_and_said_by_no_remote_host() {
        let mut nxdomain = failed("bob@gone.example");
        nxdomain.status = "5.1.2".to_owned();
        nxdomain.remote_mta = None;
        nxdomain.diagnostic = Some(Diagnostic::Local(
            "550 5.1.2 gone.example: no such domain".to_owned(),
        ));
        let recipients = [nxdomain];
        let dsn = compose(&report(&recipients, ORIGINAL));
        well_formed(&dsn);
        assert_eq!(
            status_blocks(&dsn)[1],
            pairs(&[
                ("Final-Recipient", "rfc822;bob@gone.example"),
                ("Action", "failed"),
                ("Status", "5.1.2"),
                (
                    "Diagnostic-Code",
                    "X-Ringpost; 550 5.1.2 gone.example: no such domain"
                ),
            ])
        );
        let text = part_text(&dsn, 0);
        assert!(
            text.contains("    Reason: 550 5.1.2 gone.example: no such domain\r\n"),
            "{text}"
        );
        assert!(!text.contains("Remote host"), "{text}");
    }

    #[test]
    fn original_headers_without_body() {
        let recipients = [failed("bob@example.test")];
        let dsn = compose(&report(&recipients, ORIGINAL));
        let headers = part_text(&dsn, 2);
        assert!(headers.contains("Subject: Lunch on Friday?\r\n"));
        assert_eq!(
            headers,
            "From: alice@example.org\r\nTo: bob@example.test\r\n\
             Subject: Lunch on Friday?\r\nMessage-ID: <orig-1@example.org>\r\n"
        );
        assert!(!well_formed(&dsn).contains("Secret body text"));
    }

    #[test]
    fn delayed_subject_only_when_every_recipient_is_delayed() {
        let all_delayed = [delayed("bob@example.test"), delayed("carol@example.net")];
        let dsn = compose(&report(&all_delayed, ORIGINAL));
        let message = MessageParser::default().parse(&dsn[..]).unwrap();
        assert_eq!(
            message.subject(),
            Some("Delayed Mail (still being retried)")
        );
        let text = part_text(&dsn, 0);
        assert!(!text.contains("could not be delivered"));
        assert!(text.contains("still being retried"));

        let mixed = [delayed("bob@example.test"), failed("carol@example.net")];
        let dsn = compose(&report(&mixed, ORIGINAL));
        let message = MessageParser::default().parse(&dsn[..]).unwrap();
        assert_eq!(
            message.subject(),
            Some("Undelivered Mail Returned to Sender")
        );
    }

    #[test]
    fn no_recipients_is_not_called_delayed() {
        let dsn = compose(&report(&[], ORIGINAL));
        let message = MessageParser::default().parse(&dsn[..]).unwrap();
        assert_eq!(
            message.subject(),
            Some("Undelivered Mail Returned to Sender")
        );
        assert_eq!(status_blocks(&dsn).len(), 1);
    }

    #[test]
    fn recipient_cannot_inject_a_header_or_field() {
        let mut evil = failed("x@example.test\r\nBcc: victim@example.net");
        evil.remote_mta = Some("mx\r\nBcc: a@b".to_owned());
        evil.diagnostic = Some(Diagnostic::Smtp(
            "550 no\r\n\r\nBcc: c@d\nX-Evil: 1".to_owned(),
        ));
        evil.status = "5.1.1\r\nBcc: e@f".to_owned();
        let recipients = [evil];
        let mut r = report(&recipients, ORIGINAL);
        r.to = "alice@example.org>\r\nBcc: <g@h";
        r.reporting_mta = "mail\r\nBcc: i@j";
        r.date = "Tue\r\nBcc: k@l";
        r.arrival_date = "Tue\nBcc: m@n";
        r.message_id = "id\rBcc: o@p";
        r.queue_id = "Q\r\nBcc: q@r";
        let dsn = compose(&r);
        let text = well_formed(&dsn);
        for line in text.split("\r\n") {
            assert!(!line.starts_with("Bcc"), "injected line {line:?}");
            assert!(!line.starts_with("X-Evil"), "injected line {line:?}");
        }
        let message = MessageParser::default().parse(&dsn[..]).unwrap();
        assert!(message.header_raw("Bcc").is_none());
        assert!(text.contains("\r\nTo: <alice@example.org  Bcc: g@h>\r\n"));
        assert_eq!(message.to().unwrap().iter().count(), 1);
        let blocks = status_blocks(&dsn);
        assert_eq!(blocks.len(), 2);
        assert_eq!(
            blocks[1],
            pairs(&[
                (
                    "Final-Recipient",
                    "rfc822;x@example.test  Bcc: victim@example.net"
                ),
                ("Action", "failed"),
                // Not a valid code any more: the fallback for the action.
                ("Status", "5.0.0"),
                ("Remote-MTA", "dns;mx  Bcc: a@b"),
                ("Diagnostic-Code", "smtp; 550 no    Bcc: c@d X-Evil: 1"),
            ])
        );
    }

    #[test]
    fn hostile_input_keeps_crlf_and_line_limits() {
        let long = format!(
            "{}\r\n{}\n{}\r",
            "a".repeat(5000),
            "é".repeat(3000),
            "\0".repeat(10)
        );
        let bad = RecipientStatus {
            recipient: long.clone(),
            action: Action::Delayed,
            status: long.clone(),
            remote_mta: Some(long.clone()),
            diagnostic: Some(Diagnostic::Local(long.clone())),
            meaning: Some(long.clone()),
            original_recipient: Some(long.clone()),
        };
        let recipients = [bad.clone(), bad];
        let mut original = b"Subject: caf\xe9 \xff\xfe\rbare CR\nBare-LF: yes\n".to_vec();
        original.extend_from_slice(&[b'X'; 5000]);
        original.extend_from_slice(b"\r\n");
        original.extend_from_slice(&[0xff; 2000]);
        original.extend_from_slice(b"\n\x01\x7f: ctl\r\r\n\r\nbody\n");
        let r = Report {
            reporting_mta: &long,
            to: &long,
            date: &long,
            arrival_date: &long,
            message_id: &long,
            queue_id: &long,
            envelope_id: Some(&long),
            recipients: &recipients,
            original: &original,
        };
        let dsn = compose(&r);
        well_formed(&dsn);
        assert_eq!(parts(&dsn).len(), 3);
        let headers = part_text(&dsn, 2);
        let lines: Vec<&str> = headers.split_terminator("\r\n").collect();
        assert_eq!(lines.len(), 5);
        assert_eq!(lines[0], "Subject: caf\u{fffd} \u{fffd}\u{fffd}bare CR");
        assert_eq!(lines[1], "Bare-LF: yes");
        assert_eq!(lines[2], "X".repeat(MAX_LINE_LEN));
        assert!(lines[3].chars().all(|c| c == '\u{fffd}'));
        assert_eq!(lines[4], "  : ctl");
        assert!(!headers.contains("body"));
    }

    #[test]
    fn huge_original_header_is_capped_at_a_line_boundary() {
        let mut original = Vec::new();
        for i in 0..20_000 {
            original.extend_from_slice(format!("X-Filler-{i}: some header value\r\n").as_bytes());
        }
        original.extend_from_slice(b"\r\nbody\r\n");
        let recipients = [failed("bob@example.test")];
        let dsn = compose(&report(&recipients, &original));
        well_formed(&dsn);
        let headers = part_text(&dsn, 2);
        assert!(headers.len() <= MAX_ORIGINAL_HEADERS);
        // Within one line of the cap, and a prefix of the original cut after
        // a whole line.
        assert!(headers.len() > MAX_ORIGINAL_HEADERS - 40);
        assert!(original.starts_with(headers.as_bytes()));
        assert!(headers.ends_with("some header value\r\n"));
    }

    #[test]
    fn original_without_header_end_is_returned_whole_up_to_the_cap() {
        let original = b"Subject: no end\nFrom: x@example.test";
        let recipients = [failed("bob@example.test")];
        let dsn = compose(&report(&recipients, original));
        well_formed(&dsn);
        assert_eq!(
            part_text(&dsn, 2),
            "Subject: no end\r\nFrom: x@example.test\r\n"
        );

        let huge = "Subject: no end\n".repeat(100_000);
        let dsn = compose(&report(&recipients, huge.as_bytes()));
        well_formed(&dsn);
        let headers = part_text(&dsn, 2);
        assert!(headers.len() <= MAX_ORIGINAL_HEADERS);
        assert_eq!(headers.len(), MAX_ORIGINAL_HEADERS / 17 * 17);
    }

    #[test]
    fn empty_or_bodyless_originals() {
        let recipients = [failed("bob@example.test")];
        for original in [&b""[..], b"\r\nbody only\r\n", b"\n", b"\r\r\n"] {
            let dsn = compose(&report(&recipients, original));
            well_formed(&dsn);
            let parts = parts(&dsn);
            assert_eq!(parts.len(), 3, "{original:?}");
            assert!(parts[2].1.is_empty(), "{original:?}");
        }
    }

    /// Asserts that `boundary` is `=_ringpost_dsn_Q123` varied by a hashed
    /// suffix, and occurs in `dsn` only where MIME puts it.
    fn assert_varied(dsn: &[u8], boundary: &str) {
        let suffix = boundary.strip_prefix("=_ringpost_dsn_Q123.").unwrap();
        let hex = suffix.strip_suffix('=').unwrap();
        assert_eq!(hex.len(), 16);
        assert!(hex.bytes().all(|b| b.is_ascii_hexdigit()));
        // One in Content-Type, three delimiters, one close delimiter.
        assert_eq!(well_formed(dsn).matches(boundary).count(), 5);
    }

    #[test]
    fn boundary_comes_from_the_queue_id_and_avoids_the_content() {
        let recipients = [failed("bob@example.test")];
        let dsn = compose(&report(&recipients, ORIGINAL));
        assert_eq!(boundary_of(&dsn), "=_ringpost_dsn_Q123");

        // The original's headers hold it: the boundary is varied.
        let original = b"Subject: --=_ringpost_dsn_Q123\r\n\r\n";
        let dsn = compose(&report(&recipients, original));
        let boundary = boundary_of(&dsn);
        assert_varied(&dsn, &boundary);
        let returned = parts(&dsn);
        assert_eq!(returned.len(), 3);
        assert_eq!(returned[2].1, original[..original.len() - 2]);

        // So can a recipient, in parts 1 and 2.
        let recipients = [failed("=_ringpost_dsn_Q123@example.test")];
        let dsn = compose(&report(&recipients, ORIGINAL));
        let boundary = boundary_of(&dsn);
        assert_varied(&dsn, &boundary);
        assert_eq!(parts(&dsn).len(), 3);
    }

    #[test]
    fn boundary_candidates_in_order() {
        let never = |_: &str| false;
        assert_eq!(pick_boundary("b", 7, never), "b");
        let taken = ["b", "b.0000000000000007=", "b.0000000000000008="];
        assert_eq!(
            pick_boundary("b", 7, |c| taken.contains(&c)),
            "b.0000000000000009="
        );
        // The seed wraps instead of overflowing.
        assert_eq!(
            pick_boundary("b", u64::MAX, |c| c == "b" || c == "b.ffffffffffffffff="),
            "b.0000000000000000="
        );
    }

    #[test]
    fn fnv1a_matches_the_reference_vectors() {
        assert_eq!(fnv1a(FNV_OFFSET, b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(FNV_OFFSET, b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(FNV_OFFSET, b"foobar"), 0x85944171f73967e8);
        assert_eq!(fnv1a(fnv1a(FNV_OFFSET, b"foo"), b"bar"), 0x85944171f73967e8);
    }

    #[test]
    fn boundary_keeps_only_safe_queue_id_characters() {
        let recipients = [failed("bob@example.test")];
        let mut r = report(&recipients, ORIGINAL);
        let queue_id = format!("a\"b c;d{}", "9".repeat(100));
        r.queue_id = &queue_id;
        let dsn = compose(&r);
        let boundary = boundary_of(&dsn);
        assert_eq!(boundary, format!("=_ringpost_dsn_abcd{}", "9".repeat(28)));
        assert!(boundary.len() <= MAX_BOUNDARY_LEN);
        assert_eq!(parts(&dsn).len(), 3);
    }

    #[test]
    fn transfer_encoding_follows_the_content() {
        let recipients = [failed("bob@example.test")];
        let dsn = compose(&report(&recipients, ORIGINAL));
        let text = well_formed(&dsn);
        assert!(!text.contains("8bit"));
        assert_eq!(
            text.matches("Content-Transfer-Encoding: 7bit\r\n").count(),
            4
        );

        let recipients = [failed("jürgen@bücher.example")];
        let dsn = compose(&report(&recipients, ORIGINAL));
        let text = well_formed(&dsn);
        assert_eq!(
            text.matches("Content-Transfer-Encoding: 8bit\r\n").count(),
            3
        );
        assert_eq!(
            text.matches("Content-Transfer-Encoding: 7bit\r\n").count(),
            1
        );
        assert_eq!(status_blocks(&dsn)[1][0].1, "rfc822;jürgen@bücher.example");
    }

    #[test]
    fn message_id_gets_exactly_one_pair_of_brackets() {
        let recipients = [failed("bob@example.test")];
        let mut r = report(&recipients, ORIGINAL);
        r.message_id = "<already@bracketed>";
        let text = String::from_utf8(compose(&r)).unwrap();
        assert!(text.contains("\r\nMessage-ID: <already@bracketed>\r\n"));
    }

    #[test]
    fn invalid_status_codes_fall_back_by_action() {
        for (status, action, want) in [
            ("5.1.1", Action::Failed, "5.1.1"),
            (" 4.4.7 ", Action::Delayed, "4.4.7"),
            ("2.0.0", Action::Failed, "2.0.0"),
            ("5.123.456", Action::Failed, "5.123.456"),
            ("", Action::Failed, "5.0.0"),
            ("", Action::Delayed, "4.0.0"),
            ("3.1.1", Action::Failed, "5.0.0"),
            ("5.1", Action::Failed, "5.0.0"),
            ("5.1.1.1", Action::Failed, "5.0.0"),
            ("5.1234.1", Action::Failed, "5.0.0"),
            ("5..1", Action::Failed, "5.0.0"),
            ("5.a.1", Action::Failed, "5.0.0"),
            ("550", Action::Failed, "5.0.0"),
        ] {
            let recipient = RecipientStatus {
                status: status.to_owned(),
                action,
                ..failed("x@example.test")
            };
            assert_eq!(status_code(&recipient), want, "{status:?}");
        }
    }

    #[test]
    fn field_sanitizing() {
        assert_eq!(field("  plain  "), "plain");
        assert_eq!(field("a\r\nb\tc\0d\u{7f}e\u{85}f"), "a  b c d e f");
        assert_eq!(field("\r\n"), "");
        let long = "é".repeat(MAX_FIELD_LEN);
        let cut = field(&long);
        assert_eq!(cut.len(), MAX_FIELD_LEN);
        assert!(cut.chars().all(|c| c == 'é'));
        let odd = format!("a{}", "é".repeat(MAX_FIELD_LEN));
        assert_eq!(field(&odd).len(), MAX_FIELD_LEN - 1);
        assert_eq!(optional_field(Some(" \r\n ")), None);
        assert_eq!(optional_field(None), None);
        assert_eq!(optional_field(Some("mx")), Some("mx".to_owned()));
    }

    #[test]
    fn compose_is_deterministic() {
        let recipients = [failed("bob@example.test"), delayed("carol@example.net")];
        let r = report(&recipients, ORIGINAL);
        assert_eq!(compose(&r), compose(&r));
    }

    #[test]
    fn success_reports_name_the_original_recipient_and_envelope() {
        let delivered = RecipientStatus {
            action: Action::Delivered,
            status: "2.0.0".into(),
            remote_mta: None,
            diagnostic: None,
            meaning: None,
            original_recipient: Some("rfc822;Bob@example.test".into()),
            ..failed("bob@example.test")
        };
        let relayed = RecipientStatus {
            action: Action::Relayed,
            recipient: "carol@example.net".into(),
            original_recipient: None,
            ..delivered.clone()
        };
        let recipients = [delivered, relayed];
        let dsn = compose(&Report {
            envelope_id: Some("QQ314"),
            ..report(&recipients, ORIGINAL)
        });
        let text = well_formed(&dsn);
        assert!(text.contains("\r\nSubject: Successful Mail Delivery Report\r\n"));
        assert!(text.contains(
            "\r\nOriginal-Envelope-Id: QQ314\r\nReporting-MTA: dns;mail.example.org\r\n"
        ));
        assert!(text.contains(
            "\r\n\r\nOriginal-Recipient: rfc822;Bob@example.test\r\nFinal-Recipient: rfc822;bob@example.test\r\nAction: delivered\r\nStatus: 2.0.0\r\n"
        ));
        assert!(text
            .contains("\r\n\r\nFinal-Recipient: rfc822;carol@example.net\r\nAction: relayed\r\n"));
        assert!(text.contains("Content-Description: Message headers"));
        assert!(!text.contains("could not be delivered"));
    }
}
