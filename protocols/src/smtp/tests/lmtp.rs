//! LMTP (RFC 2033): the same session, greeted with LHLO, with one answer
//! per recipient at the end of each message.

use std::sync::Arc;

use super::*;
use crate::smtp::{Peer, ServerSession};

fn lmtp() -> Peer {
    Peer {
        lmtp: true,
        trusted: true,
        ..Peer::default()
    }
}

fn run_lmtp(input: &[u8], answers: Answers) -> Run {
    let config = Arc::new(config());
    let whole = check::drive_peer(config.clone(), lmtp(), [input], answers);
    let bytes = check::drive_peer(config, lmtp(), input.chunks(1), answers);
    assert_eq!(whole, bytes, "byte-by-byte input changed the outcome");
    Run(whole)
}

#[test]
fn lmtp_greets_as_lmtp_and_takes_only_lhlo() {
    let run = run_lmtp(b"EHLO c\r\nHELO c\r\nLHLO c\r\n", Answers::Accept);
    let lines = run.lines();
    assert_eq!(lines[0], "220 mx.test LMTP ringpost");
    assert_eq!(lines[1], "500 5.5.1 This is LMTP: say LHLO");
    assert_eq!(lines[2], "500 5.5.1 This is LMTP: say LHLO");
    let offer = lines[3..].join("\n");
    assert!(offer.starts_with("250-mx.test"), "{offer}");
    assert!(offer.contains("PIPELINING") && offer.contains("ENHANCEDSTATUSCODES"));
    assert!(!offer.contains("AUTH"), "no passwords over LMTP: {offer}");
    // SMTP does not know LHLO.
    assert_eq!(
        run_with(config(), b"LHLO c\r\n", Answers::Accept).codes()[1],
        "500 5.5.1"
    );
    assert_eq!(
        run_lmtp(b"LHLO c\r\nAUTH PLAIN AGFAYg==\r\n", Answers::Accept).codes()[2],
        "502 5.5.1"
    );
}

#[test]
fn each_accepted_recipient_gets_its_own_answer_after_the_data() {
    // Four recipients, the second and fourth refused (then the message is
    // stored): two answers after the dot, in the order of the recipients
    // accepted.
    let input = b"LHLO c\r\nMAIL FROM:<s@c.test>\r\nRCPT TO:<a@x.test>\r\nRCPT TO:<b@x.test>\r\n\
        RCPT TO:<c@x.test>\r\nRCPT TO:<d@x.test>\r\nDATA\r\nhi\r\n.\r\n";
    let run = run_lmtp(input, Answers::Alternate);
    let lines = run.lines();
    let after: Vec<&str> = lines
        .iter()
        .copied()
        .skip_while(|l| !l.starts_with("354"))
        .collect();
    assert_eq!(after.len(), 3, "{lines:?}");
    assert!(
        after[1].starts_with("250 2.1.5 <a@x.test> delivered"),
        "{after:?}"
    );
    assert!(
        after[2].starts_with("250 2.1.5 <c@x.test> delivered"),
        "{after:?}"
    );

    // A message the driver could not store: each recipient hears it.
    let input = b"LHLO c\r\nMAIL FROM:<s@c.test>\r\nRCPT TO:<a@x.test>\r\nRCPT TO:<b@x.test>\r\n\
        BDAT 4 LAST\r\nhi\r\nQUIT\r\n";
    let mut session = ServerSession::with_peer(Arc::new(config()), lmtp());
    let mut rest: &[u8] = input;
    let mut failed = false;
    for _ in 0..10 {
        rest = &rest[session.feed(rest)..];
        match session.poll_event() {
            Some(Event::Recipient { .. }) => session.accept_recipient(),
            Some(Event::Message(tx)) => {
                assert_eq!(tx.recipients, ["a@x.test", "b@x.test"]);
                session.message_failed(crate::smtp::replies::STORAGE_FAILED);
                failed = true;
            }
            Some(other) => panic!("{other:?}"),
            None => {}
        }
    }
    assert!(failed);
    let text = String::from_utf8_lossy(session.output()).into_owned();
    assert_eq!(text.matches("451 4.3.0").count(), 2, "{text}");
}

/// Content refused at its end (too big, a bare line ending) is refused
/// for each recipient too, whether by DATA or BDAT LAST: an LMTP client
/// waits for as many answers as it had recipients.
#[test]
fn content_refused_at_its_end_is_answered_once_per_recipient() {
    let config = ServerConfig {
        max_message_size: 10,
        ..config()
    };
    let envelope = "LHLO c\r\nMAIL FROM:<s@c.test>\r\nRCPT TO:<a@x.test>\r\nRCPT TO:<b@x.test>\r\n";
    for (content, code) in [
        ("DATA\r\nfar more than ten octets\r\n.\r\n", "552 5.3.4"),
        ("DATA\r\nbare\nline\r\n.\r\n", "550 5.6.0"),
        (
            "BDAT 31 LAST\r\nfar more than ten octets here\r\n",
            "552 5.3.4",
        ),
    ] {
        let input = format!("{envelope}{content}NOOP\r\n");
        let run = run_with_peer(config.clone(), input.as_bytes());
        let codes = run.codes();
        let after = &codes[codes.len() - 3..];
        assert_eq!(
            after,
            [code, code, "250 2.0.0"],
            "{content}: {:?}",
            run.lines()
        );
    }
}

fn run_with_peer(config: ServerConfig, input: &[u8]) -> Run {
    let config = Arc::new(config);
    let whole = check::drive_peer(config.clone(), lmtp(), [input], Answers::Accept);
    let bytes = check::drive_peer(config, lmtp(), input.chunks(1), Answers::Accept);
    assert_eq!(whole, bytes, "byte-by-byte input changed the outcome");
    Run(whole)
}
