//! Bounces: a delivery status notification (RFC 3464) for recipients that
//! failed, queued like any other message to the original sender.
//!
//! A DSN is sent with the null sender, so a DSN that cannot be delivered is
//! never answered with another one: no bounce loops.

use crate::intake;
use ringpost_protocols::smtp::dsn::{self, RecipientStatus, Report};
use ringpost_storage::spool::{Envelope, MessageId, NewMessage};

/// The records of a DSN about `original` for the `failed` recipients. A
/// sender at one of our domains gets it in their INBOX.
pub fn new_bounce(
    id: MessageId,
    to: &intake::Recipients<'_>,
    original: &MessageId,
    envelope: &Envelope,
    body: &[u8],
    failed: &[RecipientStatus],
    now_micros: u64,
) -> NewMessage {
    let hostname = to.hostname;
    let date = rfc2822(now_micros);
    let queue_id = original.to_hex();
    let message_id = format!("{}@{hostname}", id.to_hex());
    let text = dsn::compose(&Report {
        reporting_mta: hostname,
        to: &envelope.sender,
        date: &date,
        arrival_date: &rfc2822(envelope.received_at),
        message_id: &message_id,
        queue_id: &queue_id,
        recipients: failed,
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

fn rfc2822(micros: u64) -> String {
    chrono::DateTime::from_timestamp_micros(micros as i64)
        .unwrap_or_default()
        .to_rfc2822()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringpost_protocols::smtp::dsn::{Action, Diagnostic};

    #[test]
    fn bounce_goes_to_the_sender_from_the_null_sender() {
        let envelope = Envelope {
            sender: "alice@Origin.test".into(),
            received_at: 1_700_000_000_000_000,
            size: 10,
            recipients: vec!["bob@dest.test".into()],
        };
        let failed = [RecipientStatus {
            recipient: "bob@dest.test".into(),
            action: Action::Failed,
            status: "5.1.1".into(),
            remote_mta: Some("mx.dest.test".into()),
            diagnostic: Some(Diagnostic::Smtp("550 5.1.1 no such user".into())),
            meaning: Some("the address does not exist".into()),
        }];
        let id = MessageId::new(1_700_000_001_000_000, 0x8001, 1);
        let original = MessageId::new(1_700_000_000_000_000, 1, 1);
        let to = intake::Recipients {
            hostname: "relay.test",
            is_local: &|d| d == "relay.test",
            pool: None,
        };
        let m = new_bounce(
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
        let m = new_bounce(id, &to, &original, &local, b"\r\n", &failed, 1);
        assert!(m.queue.is_empty());
        assert_eq!(m.mailboxes, vec!["carol@relay.test"]);
    }
}
