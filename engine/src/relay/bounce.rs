//! Delivery status notifications (RFC 3464): bounces for recipients that
//! failed, and the successes a sender asked to hear of (RFC 3461's
//! NOTIFY=SUCCESS), queued like any other message to the original sender.
//!
//! A DSN is sent with the null sender, so a DSN that cannot be delivered is
//! never answered with another one: no bounce loops. Which recipients a DSN
//! reports follows what the sender asked with NOTIFY (failures unless told
//! otherwise); ORCPT and ENVID come back as `Original-Recipient` and
//! `Original-Envelope-Id`.

use crate::intake;
use ringpost_protocols::smtp::client::RecipientResult;
use ringpost_protocols::smtp::dsn::{self, Action, Diagnostic, RecipientStatus, Report};
use ringpost_protocols::smtp::dsn_request::{self, Notify};
use ringpost_protocols::smtp::Transaction;
use ringpost_storage::spool::{Envelope, MessageId, NewMessage, RecipientDsn};
use std::collections::{HashMap, HashSet};

/// The failed recipients the sender wants a bounce for: those whose NOTIFY
/// (if any) includes FAILURE, each with its ORCPT.
pub fn failures_to_report(envelope: &Envelope, failed: &[RecipientStatus]) -> Vec<RecipientStatus> {
    let asked = envelope.dsn.by_recipient();
    failed
        .iter()
        .filter(|status| dsn_request::reports_failure(notify_of(&asked, &status.recipient)))
        .map(|status| RecipientStatus {
            original_recipient: original_recipient(&asked, &status.recipient),
            ..status.clone()
        })
        .collect()
}

/// The recipients `host` accepted that asked to hear of success: reported
/// "relayed", because `host` did not offer DSN and so will not report
/// (RFC 3461 §5.2.2). A host that offers DSN got the request passed on.
pub fn relayed_to_report(
    envelope: &Envelope,
    results: &[RecipientResult],
    host: Option<&str>,
) -> Vec<RecipientStatus> {
    if envelope.dsn.recipients.is_empty() {
        return Vec::new();
    }
    let asked = envelope.dsn.by_recipient();
    results
        .iter()
        .filter(|r| r.reply.is_positive())
        .filter(|r| notify_of(&asked, &r.recipient).is_some_and(Notify::on_success))
        .map(|r| RecipientStatus {
            recipient: r.recipient.clone(),
            action: Action::Relayed,
            status: r.reply.status.clone().unwrap_or_else(|| "2.0.0".into()),
            remote_mta: host.map(str::to_owned),
            diagnostic: Some(Diagnostic::Smtp(r.reply.to_string())),
            meaning: None,
            original_recipient: original_recipient(&asked, &r.recipient),
        })
        .collect()
}

/// The local recipients of `tx` (addresses at a domain of `to`'s) that
/// asked to hear of success: "delivered" when their mail went into a
/// mailbox here, "expanded" for an alias of several addresses (RFC 3461
/// §6.2.7.3). An alias of one remote address is left to the next server
/// to report: the request went on with it ([`intake::expansion`]).
pub fn delivered_to_report(tx: &Transaction, to: &intake::Recipients<'_>) -> Vec<RecipientStatus> {
    // An address given twice is one mailbox, reported once.
    let mut seen = HashSet::new();
    tx.recipients
        .iter()
        .zip(&tx.recipient_requests)
        .filter(|(_, request)| request.notify.is_some_and(Notify::on_success))
        .filter(|(address, _)| intake::domain_of(address).is_none_or(|d| (to.is_local)(d)))
        .filter(|(address, _)| seen.insert(address.to_ascii_lowercase()))
        .filter_map(|(address, request)| {
            let action = match intake::expansion(address, to) {
                None => Action::Delivered,
                Some(expansion) if expansion.several => Action::Expanded,
                Some(_) => return None,
            };
            Some((address, request, action))
        })
        .map(|(address, request, action)| RecipientStatus {
            recipient: address.clone(),
            action,
            status: "2.0.0".into(),
            remote_mta: None,
            diagnostic: None,
            meaning: None,
            original_recipient: request
                .orcpt
                .as_deref()
                .and_then(dsn_request::orcpt_for_report),
        })
        .collect()
}

/// A message's DSN requests by address ([`DsnRequest::by_recipient`]).
type Asked<'a> = HashMap<&'a str, &'a RecipientDsn>;

fn notify_of(asked: &Asked<'_>, recipient: &str) -> Option<Notify> {
    asked.get(recipient)?.notify.map(Notify::from_bits)
}

fn original_recipient(asked: &Asked<'_>, recipient: &str) -> Option<String> {
    let orcpt = asked.get(recipient)?.orcpt.as_deref()?;
    dsn_request::orcpt_for_report(orcpt)
}

/// The records of a DSN about `original` reporting on `recipients`. A
/// sender at one of our domains gets it in their INBOX.
pub fn new_dsn(
    id: MessageId,
    to: &intake::Recipients<'_>,
    original: &MessageId,
    envelope: &Envelope,
    body: &[u8],
    recipients: &[RecipientStatus],
    now_micros: u64,
) -> NewMessage {
    let hostname = to.hostname;
    let date = rfc2822(now_micros);
    let queue_id = original.to_hex();
    let message_id = format!("{}@{hostname}", id.to_hex());
    let envelope_id = envelope
        .dsn
        .envid
        .as_deref()
        .and_then(dsn_request::xtext_decode);
    let text = dsn::compose(&Report {
        reporting_mta: hostname,
        to: &envelope.sender,
        date: &date,
        arrival_date: &rfc2822(envelope.received_at),
        message_id: &message_id,
        queue_id: &queue_id,
        envelope_id: envelope_id.as_deref(),
        recipients,
        original: body,
    });
    intake::stored(
        id,
        text,
        "",
        std::slice::from_ref(&envelope.sender),
        to,
        now_micros,
    )
}

pub(crate) fn rfc2822(micros: u64) -> String {
    chrono::DateTime::from_timestamp_micros(micros as i64)
        .unwrap_or_default()
        .to_rfc2822()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounce_goes_to_the_sender_from_the_null_sender() {
        let envelope = Envelope {
            sender: "alice@Origin.test".into(),
            received_at: 1_700_000_000_000_000,
            size: 10,
            recipients: vec!["bob@dest.test".into()],
            dsn: Default::default(),
        };
        let failed = [RecipientStatus {
            recipient: "bob@dest.test".into(),
            action: Action::Failed,
            status: "5.1.1".into(),
            remote_mta: Some("mx.dest.test".into()),
            diagnostic: Some(Diagnostic::Smtp("550 5.1.1 no such user".into())),
            meaning: Some("the address does not exist".into()),
            original_recipient: None,
        }];
        let id = MessageId::new(1_700_000_001_000_000, 0x8001, 1);
        let original = MessageId::new(1_700_000_000_000_000, 1, 1);
        let to = intake::Recipients {
            local_targets: None,
            hostname: "relay.test",
            is_local: &|d| d == "relay.test",
            pool: None,
        };
        let m = new_dsn(
            id,
            &to,
            &original,
            &envelope,
            b"Subject: hello\r\n\r\nbody\r\n",
            &failed,
            1_700_000_001_000_000,
        );
        assert_eq!(m.envelope.sender, "");
        assert_eq!(m.envelope.recipients, vec!["alice@Origin.test"]);
        assert_eq!(m.queue.len(), 1);
        assert_eq!(m.queue[0].domain, "origin.test");
        let text = String::from_utf8_lossy(&m.body);
        assert!(text.contains("Status: 5.1.1"), "{text}");
        assert!(text.contains("Subject: hello"), "{text}");
        assert!(text.contains(&original.to_hex()), "{text}");
        assert!(m.mailboxes.is_empty());

        // A local sender gets the DSN in their INBOX.
        let local = Envelope {
            sender: "Carol@Relay.test".into(),
            ..envelope
        };
        let m = new_dsn(id, &to, &original, &local, b"\r\n", &failed, 1);
        assert!(m.queue.is_empty());
        assert_eq!(m.mailboxes, vec!["carol@relay.test"]);
    }

    fn dsn_envelope() -> Envelope {
        use ringpost_storage::spool::DsnRequest;
        let notify = |n: &str| Notify::parse(n).map(Notify::bits);
        Envelope {
            sender: "alice@origin.test".into(),
            recipients: vec!["a@d.test".into(), "b@d.test".into(), "c@d.test".into()],
            dsn: DsnRequest {
                envid: Some("E+2B1".into()),
                ret: 0,
                recipients: vec![
                    RecipientDsn {
                        recipient: "a@d.test".into(),
                        notify: notify("NEVER"),
                        orcpt: None,
                    },
                    RecipientDsn {
                        recipient: "b@d.test".into(),
                        notify: notify("SUCCESS,FAILURE"),
                        orcpt: Some("rfc822;B+2Bx@d.test".into()),
                    },
                ],
            },
            ..Envelope::default()
        }
    }

    fn status(recipient: &str) -> RecipientStatus {
        RecipientStatus {
            recipient: recipient.into(),
            action: Action::Failed,
            status: "5.1.1".into(),
            remote_mta: None,
            diagnostic: None,
            meaning: None,
            original_recipient: None,
        }
    }

    #[test]
    fn notify_decides_which_failures_bounce() {
        let envelope = dsn_envelope();
        let failed = [status("a@d.test"), status("b@d.test"), status("c@d.test")];
        let reported = failures_to_report(&envelope, &failed);
        // NEVER is left out; no NOTIFY means failures are reported.
        let names: Vec<_> = reported.iter().map(|r| r.recipient.as_str()).collect();
        assert_eq!(names, ["b@d.test", "c@d.test"]);
        assert_eq!(
            reported[0].original_recipient.as_deref(),
            Some("rfc822;B+x@d.test")
        );
        assert_eq!(reported[1].original_recipient, None);
        assert!(failures_to_report(&envelope, &failed[..1]).is_empty());
    }

    #[test]
    fn success_is_reported_only_when_asked() {
        use ringpost_protocols::smtp::client::ServerReply;
        let envelope = dsn_envelope();
        let ok = ServerReply {
            code: 250,
            status: Some("2.0.0".into()),
            text: "queued".into(),
            local: false,
        };
        let results: Vec<RecipientResult> = ["a@d.test", "b@d.test", "c@d.test"]
            .iter()
            .map(|r| RecipientResult {
                recipient: (*r).into(),
                reply: ok.clone(),
            })
            .collect();
        let relayed = relayed_to_report(&envelope, &results, Some("mx.d.test"));
        assert_eq!(relayed.len(), 1);
        assert_eq!(relayed[0].recipient, "b@d.test");
        assert_eq!(relayed[0].action, Action::Relayed);
        assert_eq!(relayed[0].remote_mta.as_deref(), Some("mx.d.test"));

        let to = intake::Recipients {
            local_targets: None,
            hostname: "relay.test",
            is_local: &|d| d == "relay.test",
            pool: None,
        };
        let m = new_dsn(
            MessageId::new(2, 1, 1),
            &to,
            &MessageId::new(1, 1, 1),
            &envelope,
            b"Subject: hello\r\n\r\n",
            &relayed,
            2,
        );
        let text = String::from_utf8_lossy(&m.body);
        assert!(
            text.contains("Subject: Successful Mail Delivery Report"),
            "{text}"
        );
        assert!(text.contains("Original-Envelope-Id: E+1\r\n"), "{text}");
        assert!(
            text.contains("Original-Recipient: rfc822;B+x@d.test\r\n"),
            "{text}"
        );
        assert!(text.contains("Action: relayed\r\n"), "{text}");
        assert_eq!(m.envelope.sender, "");
    }

    #[test]
    fn local_deliveries_are_reported_when_asked() {
        use ringpost_protocols::smtp::dsn_request::RecipientRequest;
        let asks = RecipientRequest {
            notify: Notify::parse("SUCCESS"),
            orcpt: Some("rfc822;Me@relay.test".into()),
        };
        let tx = Transaction {
            mail_from: "alice@origin.test".into(),
            recipients: vec![
                "me@relay.test".into(),
                "far@d.test".into(),
                "quiet@relay.test".into(),
                "Me@Relay.test".into(),
                "team@relay.test".into(),
                "away@relay.test".into(),
            ],
            recipient_requests: vec![
                asks.clone(),
                asks.clone(),
                RecipientRequest::default(),
                asks.clone(),
                asks.clone(),
                asks,
            ],
            ..Transaction::default()
        };
        let is_local = |d: &str| d.eq_ignore_ascii_case("relay.test");
        // Two aliases: one of several addresses, one forwarding elsewhere.
        let resolve = |address: &str| match address {
            "team@relay.test" => vec!["me@relay.test".into(), "x@d.test".into()],
            "away@relay.test" => vec!["away@elsewhere.test".into()],
            other => vec![other.to_lowercase()],
        };
        let to = intake::Recipients {
            hostname: "relay.test",
            is_local: &is_local,
            pool: None,
            local_targets: Some(&resolve),
        };
        let reported = delivered_to_report(&tx, &to);
        assert_eq!(reported.len(), 2, "one mailbox, one report: {reported:?}");
        assert_eq!(reported[0].recipient, "me@relay.test");
        assert_eq!(reported[0].action, Action::Delivered);
        assert_eq!(
            reported[0].original_recipient.as_deref(),
            Some("rfc822;Me@relay.test")
        );
        // The forwarding alias is the next server's to report.
        assert_eq!(reported[1].recipient, "team@relay.test");
        assert_eq!(reported[1].action, Action::Expanded);
    }
}
