//! Reports that come back about mail sent earlier: delivery status
//! notifications that arrive later ("out-of-band" bounces, RFC 3464 in an
//! RFC 6522 `multipart/report`) and feedback loop complaints (ARF, RFC
//! 5965). A sender that relays bulk or transactional mail sends with a
//! return path at a domain of ours; what comes back there is read here,
//! so the driver can stop mail to addresses that do not exist or do not
//! want it.
//!
//! Reading is lenient where senders differ (field case, folding, a
//! missing address type) and strict where a mistake would suppress the
//! wrong address: an address must be a mailbox, and only what the report
//! itself says is taken.

use mail_parser::{MessageParser, MimeHeaders, PartType};

/// Addresses, fields and texts longer than this are cut (reports are
/// attacker-written).
const MAX_FIELD: usize = 1000;
/// Recipients read from one report, at most.
pub const MAX_RECIPIENTS: usize = 100;
/// Octets of a report's machine-readable part that are read, at most.
const MAX_STATUS_TEXT: usize = 256 * 1024;

/// What a report says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// A delivery status notification: one entry per recipient.
    Delivery(Delivery),
    /// A feedback loop report (ARF).
    Complaint(Complaint),
    /// Neither, or unreadable.
    Unknown,
}

/// A delivery status notification (RFC 3464).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The server that wrote it (`Reporting-MTA`), if given.
    pub reporting_mta: Option<String>,
    /// The recipients it reports on.
    pub recipients: Vec<RecipientStatus>,
    /// The Message-ID of the message it is about, when it came back with
    /// its header.
    pub original_message_id: Option<String>,
}

/// One recipient's block of a delivery status notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientStatus {
    /// `Final-Recipient` (else `Original-Recipient`), a mailbox.
    pub recipient: String,
    /// `Action`, lowercased: `failed`, `delayed`, `delivered`, `relayed`,
    /// `expanded`.
    pub action: String,
    /// `Status`: `5.1.1`.
    pub status: String,
    /// `Diagnostic-Code`'s text (`smtp; 550 ...` without its type).
    pub diagnostic: Option<String>,
}

impl RecipientStatus {
    /// A permanent failure: the address is not to be sent to again.
    pub fn is_hard_bounce(&self) -> bool {
        self.action == "failed" && self.status.starts_with('5')
    }
}

/// A feedback loop report (RFC 5965).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Complaint {
    /// `Feedback-Type`, lowercased: `abuse`, `fraud`, `virus`, `other`,
    /// `not-spam`...
    pub feedback_type: String,
    /// Who complained: `Original-Rcpt-To`, else the `To` of the returned
    /// message.
    pub recipients: Vec<String>,
    /// `Reported-Domain`/`Source` aside, who sent the report
    /// (`User-Agent`), if given.
    pub user_agent: Option<String>,
    /// The Message-ID of the message complained about.
    pub original_message_id: Option<String>,
}

/// Read `message` as a delivery status notification or a feedback report.
pub fn read(message: &[u8]) -> Report {
    let Some(parsed) = MessageParser::default().parse(message) else {
        return Report::Unknown;
    };
    let root = parsed.root_part();
    let report_type = root
        .content_type()
        .filter(|ct| {
            ct.ctype().eq_ignore_ascii_case("multipart")
                && ct
                    .subtype()
                    .is_some_and(|s| s.eq_ignore_ascii_case("report"))
        })
        .and_then(|ct| ct.attribute("report-type"))
        .map(str::to_ascii_lowercase);
    let Some(parts) = root.sub_parts() else {
        return Report::Unknown;
    };
    let of_type = |wanted: &[&str]| {
        parts.iter().filter_map(|&id| parsed.part(id)).find(|part| {
            part.content_type().is_some_and(|ct| {
                let name = format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or(""));
                wanted.iter().any(|w| name.eq_ignore_ascii_case(w))
            })
        })
    };
    let original = of_type(&[
        "message/rfc822",
        "message/global",
        "text/rfc822-headers",
        "message/rfc822-headers",
        "message/global-headers",
    ]);
    let original_fields = original.and_then(returned_header);
    let original_message_id = original_fields
        .as_ref()
        .and_then(|fields| field(fields, "message-id"))
        .map(|id| clip(id.trim().trim_start_matches('<').trim_end_matches('>')))
        .filter(|id| !id.is_empty());
    match report_type.as_deref() {
        // RFC 6533's internationalised form reads the same (in UTF-8).
        Some("delivery-status" | "global-delivery-status") => {
            let Some(status) =
                of_type(&["message/delivery-status", "message/global-delivery-status"])
            else {
                return Report::Unknown;
            };
            let text = bounded_text(status.contents());
            let mut blocks = blocks(&text).into_iter();
            let per_message = blocks.next().unwrap_or_default();
            let recipients: Vec<RecipientStatus> = blocks
                .filter_map(|block| recipient_status(&block))
                .take(MAX_RECIPIENTS)
                .collect();
            if recipients.is_empty() {
                return Report::Unknown;
            }
            Report::Delivery(Delivery {
                reporting_mta: field(&per_message, "reporting-mta").map(|v| clip(typed(v))),
                recipients,
                original_message_id,
            })
        }
        Some("feedback-report") => {
            let Some(feedback) = of_type(&["message/feedback-report"]) else {
                return Report::Unknown;
            };
            let text = bounded_text(feedback.contents());
            let fields = blocks(&text).into_iter().flatten().collect::<Vec<_>>();
            let Some(feedback_type) = field(&fields, "feedback-type") else {
                return Report::Unknown;
            };
            let mut recipients: Vec<String> = fields
                .iter()
                .filter(|(name, _)| name.eq_ignore_ascii_case("original-rcpt-to"))
                .filter_map(|(_, value)| mailbox(value))
                .collect();
            if recipients.is_empty() {
                // Many reporters redact the envelope but keep the To.
                let to = original_fields.as_ref().and_then(|f| field(f, "to"));
                recipients.extend(to.and_then(mailbox));
            }
            recipients.truncate(MAX_RECIPIENTS);
            Report::Complaint(Complaint {
                feedback_type: clip(feedback_type.trim()).to_ascii_lowercase(),
                recipients,
                user_agent: field(&fields, "user-agent").map(|v| clip(v.trim())),
                original_message_id,
            })
        }
        _ => Report::Unknown,
    }
}

/// The header fields of the returned message (a `message/rfc822` part,
/// or `text/rfc822-headers` with its transfer encoding removed).
fn returned_header(part: &mail_parser::MessagePart<'_>) -> Option<Fields> {
    let raw: &[u8] = match &part.body {
        PartType::Message(inner) => inner.raw_message(),
        _ => part.contents(),
    };
    let head = match raw.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(end) => &raw[..end + 2],
        None => raw,
    };
    let text = bounded_text(head);
    Some(blocks(&text).into_iter().flatten().collect())
}

/// At most [`MAX_STATUS_TEXT`] octets of `bytes`, as text: a report's
/// fields are few, and reading a stranger's megabytes of them would cost
/// many times their size.
fn bounded_text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_STATUS_TEXT)]).into_owned()
}

/// `(name, value)` fields.
type Fields = Vec<(String, String)>;

/// Header-like text (a delivery-status body) as blocks of unfolded fields,
/// split at blank lines.
fn blocks(text: &str) -> Vec<Fields> {
    let mut all = Vec::new();
    let mut block: Fields = Vec::new();
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            if !block.is_empty() {
                all.push(std::mem::take(&mut block));
            }
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = block.last_mut() {
                if value.len() < MAX_FIELD {
                    value.push(' ');
                    value.push_str(line.trim());
                }
            }
            continue;
        }
        if let Some((name, value)) = line.split_once(':') {
            block.push((name.trim().to_owned(), value.trim().to_owned()));
        }
    }
    if !block.is_empty() {
        all.push(block);
    }
    all
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// `rfc822; alice@example.com` is `alice@example.com` (the type is
/// optional in practice).
fn typed(value: &str) -> &str {
    match value.split_once(';') {
        Some((_, rest)) => rest.trim(),
        None => value.trim(),
    }
}

/// A mailbox from a field's value: typed, in angle brackets, or bare.
fn mailbox(value: &str) -> Option<String> {
    let value = typed(value);
    let address = match (value.find('<'), value.rfind('>')) {
        (Some(open), Some(close)) if open < close => &value[open + 1..close],
        _ => value,
    };
    let address = crate::smtp::canonical_mailbox(address.trim()).filter(|a| a.len() <= 254)?;
    // The domain in one case, as addresses are kept; the local part as
    // given (it may be case-sensitive).
    let (local, domain) = address.rsplit_once('@')?;
    Some(format!("{local}@{}", domain.to_ascii_lowercase()))
}

fn recipient_status(block: &[(String, String)]) -> Option<RecipientStatus> {
    let recipient = field(block, "final-recipient")
        .and_then(mailbox)
        .or_else(|| field(block, "original-recipient").and_then(mailbox))?;
    let action = field(block, "action")?.trim().to_ascii_lowercase();
    let status = field(block, "status")?.trim();
    // RFC 3463: class.subject.detail, digits.
    let valid = status.split('.').count() == 3
        && status
            .split('.')
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    if !valid || action.len() > 20 {
        return None;
    }
    Some(RecipientStatus {
        recipient,
        action,
        status: clip(status),
        diagnostic: field(block, "diagnostic-code").map(|v| clip(typed(v))),
    })
}

fn clip(text: &str) -> String {
    text.chars().take(MAX_FIELD).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smtp::dsn::{self, Action, Diagnostic};

    const ORIGINAL: &[u8] = b"From: news@shop.example\r\n\
        To: gone@far.example\r\n\
        Subject: Offers\r\n\
        Message-ID: <m1@shop.example>\r\n\
        \r\n\
        Body.\r\n";

    #[test]
    fn a_dsn_written_by_this_server_reads_back() {
        let recipients = [
            dsn::RecipientStatus {
                recipient: "gone@far.example".into(),
                action: Action::Failed,
                status: "5.1.1".into(),
                remote_mta: Some("mx.far.example".into()),
                diagnostic: Some(Diagnostic::Smtp("550 5.1.1 no such user".into())),
                meaning: None,
                original_recipient: None,
            },
            dsn::RecipientStatus {
                recipient: "slow@far.example".into(),
                action: Action::Delayed,
                status: "4.4.1".into(),
                remote_mta: None,
                diagnostic: None,
                meaning: None,
                original_recipient: None,
            },
        ];
        let text = dsn::compose(&dsn::Report {
            reporting_mta: "mx.relay.example",
            to: "bounces@fb.example",
            date: "Tue, 3 Mar 2026 10:00:00 +0000",
            arrival_date: "Tue, 3 Mar 2026 09:00:00 +0000",
            message_id: "d1@mx.relay.example",
            queue_id: "Q1",
            envelope_id: None,
            recipients: &recipients,
            original: ORIGINAL,
        });
        let Report::Delivery(delivery) = read(&text) else {
            panic!("{}", String::from_utf8_lossy(&text));
        };
        assert_eq!(delivery.reporting_mta.as_deref(), Some("mx.relay.example"));
        assert_eq!(
            delivery.original_message_id.as_deref(),
            Some("m1@shop.example")
        );
        assert_eq!(delivery.recipients.len(), 2);
        let gone = &delivery.recipients[0];
        assert_eq!(gone.recipient, "gone@far.example");
        assert!(gone.is_hard_bounce());
        assert_eq!(gone.diagnostic.as_deref(), Some("550 5.1.1 no such user"));
        assert!(!delivery.recipients[1].is_hard_bounce());
    }

    #[test]
    fn another_servers_dsn_with_folding_and_headers_only() {
        let text = b"From: MAILER-DAEMON@mx.far.example\r\n\
            To: bounces+42@fb.example\r\n\
            Subject: Undelivered Mail Returned to Sender\r\n\
            MIME-Version: 1.0\r\n\
            Content-Type: multipart/report; report-type=\"Delivery-Status\";\r\n\
            \tboundary=\"B1\"\r\n\
            \r\n\
            --B1\r\n\
            Content-Type: text/plain\r\n\
            \r\n\
            Sorry.\r\n\
            --B1\r\n\
            Content-Type: message/delivery-status\r\n\
            \r\n\
            Reporting-MTA: dns; mx.far.example\r\n\
            \r\n\
            final-recipient: RFC822;\r\n\
            \x20<Gone@Far.Example>\r\n\
            ACTION: Failed\r\n\
            Status: 5.1.1\r\n\
            Diagnostic-Code: smtp; 550 5.1.1 <gone@far.example>:\r\n\
            \x20Recipient address rejected\r\n\
            \r\n\
            --B1\r\n\
            Content-Type: text/rfc822-headers\r\n\
            \r\n\
            Message-ID: <m2@shop.example>\r\n\
            To: gone@far.example\r\n\
            \r\n\
            --B1--\r\n";
        let Report::Delivery(delivery) = read(text) else {
            panic!("not read");
        };
        let gone = &delivery.recipients[0];
        assert_eq!(gone.recipient, "Gone@far.example");
        assert_eq!(gone.action, "failed");
        assert_eq!(
            gone.diagnostic.as_deref(),
            Some("550 5.1.1 <gone@far.example>: Recipient address rejected")
        );
        assert_eq!(
            delivery.original_message_id.as_deref(),
            Some("m2@shop.example")
        );
        // The internationalised form (RFC 6533) reads the same.
        let global = String::from_utf8_lossy(text)
            .replace("\"Delivery-Status\"", "global-delivery-status")
            .replace("message/delivery-status", "message/global-delivery-status")
            .replace("text/rfc822-headers", "message/global-headers");
        let Report::Delivery(delivery) = read(global.as_bytes()) else {
            panic!("not read");
        };
        assert_eq!(delivery.recipients[0].recipient, "Gone@far.example");
        assert_eq!(
            delivery.original_message_id.as_deref(),
            Some("m2@shop.example")
        );
    }

    #[test]
    fn an_arf_complaint_names_who_complained() {
        let text = b"From: fbl@isp.example\r\n\
            To: fbl@fb.example\r\n\
            Subject: FW: Offers\r\n\
            MIME-Version: 1.0\r\n\
            Content-Type: multipart/report; report-type=feedback-report; boundary=\"F\"\r\n\
            \r\n\
            --F\r\n\
            Content-Type: text/plain\r\n\
            \r\n\
            This is an email abuse report.\r\n\
            --F\r\n\
            Content-Type: message/feedback-report\r\n\
            \r\n\
            Feedback-Type: Abuse\r\n\
            User-Agent: SomeISP-FBL/1.0\r\n\
            Version: 1\r\n\
            Original-Mail-From: <bounces@fb.example>\r\n\
            Original-Rcpt-To: <reader@isp.example>\r\n\
            \r\n\
            --F\r\n\
            Content-Type: message/rfc822\r\n\
            \r\n\
            From: news@shop.example\r\n\
            To: reader@isp.example\r\n\
            Message-ID: <m3@shop.example>\r\n\
            Subject: Offers\r\n\
            \r\n\
            Buy.\r\n\
            --F--\r\n";
        let Report::Complaint(complaint) = read(text) else {
            panic!("not read");
        };
        assert_eq!(complaint.feedback_type, "abuse");
        assert_eq!(complaint.recipients, ["reader@isp.example"]);
        assert_eq!(complaint.user_agent.as_deref(), Some("SomeISP-FBL/1.0"));
        assert_eq!(
            complaint.original_message_id.as_deref(),
            Some("m3@shop.example")
        );
        // Redacted envelope: the returned message's To names who it was.
        let redacted = String::from_utf8_lossy(text)
            .replace("Original-Rcpt-To: <reader@isp.example>\r\n", "")
            .into_bytes();
        let Report::Complaint(complaint) = read(&redacted) else {
            panic!("not read");
        };
        assert_eq!(complaint.recipients, ["reader@isp.example"]);
    }

    /// A stranger's report naming thousands of addresses yields at most
    /// MAX_RECIPIENTS of them.
    #[test]
    fn a_report_names_at_most_max_recipients() {
        let mut text = String::from(
            "Content-Type: multipart/report; report-type=delivery-status; boundary=B\r\n\r\n\
             --B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; x\r\n",
        );
        for i in 0..5000 {
            text.push_str(&format!(
                "\r\nFinal-Recipient: rfc822; u{i}@far.example\r\nAction: failed\r\nStatus: 5.1.1\r\n"
            ));
        }
        text.push_str("\r\n--B--\r\n");
        let Report::Delivery(delivery) = read(text.as_bytes()) else {
            panic!("not read");
        };
        assert_eq!(delivery.recipients.len(), MAX_RECIPIENTS);
    }

    #[test]
    fn other_mail_and_broken_reports_are_unknown() {
        assert_eq!(read(b"Subject: hi\r\n\r\nhello\r\n"), Report::Unknown);
        assert_eq!(read(b""), Report::Unknown);
        let no_address = b"Content-Type: multipart/report; report-type=delivery-status; boundary=B\r\n\r\n\
            --B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; x\r\n\r\n\
            Final-Recipient: rfc822; not an address\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n--B--\r\n";
        assert_eq!(read(no_address), Report::Unknown);
        let bad_status = String::from_utf8_lossy(no_address)
            .replace("not an address", "a@b.example")
            .replace("5.1.1", "5.x.1");
        assert_eq!(read(bad_status.as_bytes()), Report::Unknown);
    }
}
