//! STARTTLS (RFC 3207), AUTH (RFC 4954) and the submission port's rules
//! (RFC 6409): what is offered when, what pipelined plaintext after
//! STARTTLS becomes (nothing), who may send as whom.

use std::sync::Arc;

use super::*;
use crate::sasl::{encode, Mechanism};
use crate::smtp::{AccountCheck, Peer, SenderAddresses, SenderPolicy, ServerSession};

fn tls_config() -> ServerConfig {
    ServerConfig {
        tls_available: true,
        ..config()
    }
}

/// Drive `input` for `peer` (whole and byte by byte), all answers yes.
fn run_peer(config: ServerConfig, peer: Peer, input: &[u8]) -> Run {
    let config = Arc::new(config);
    let whole = check::drive_peer(config.clone(), peer, [input], Answers::Accept);
    let bytes = check::drive_peer(config, peer, input.chunks(1), Answers::Accept);
    assert_eq!(whole, bytes, "byte-by-byte input changed the outcome");
    Run(whole)
}

fn submission() -> Peer {
    Peer {
        submission: true,
        ..Peer::default()
    }
}

fn ehlo_text(run: &Run) -> String {
    run.lines()
        .iter()
        .filter(|l| l.starts_with("250"))
        .copied()
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn ehlo_offers_starttls_before_tls_and_auth_only_where_usable() {
    // MX port, no plaintext passwords: STARTTLS, no AUTH.
    let run = run_peer(tls_config(), Peer::default(), b"EHLO c\r\n");
    let text = ehlo_text(&run);
    assert!(
        text.contains("STARTTLS") && !text.contains("AUTH"),
        "{text}"
    );
    // After the handshake (the harness answers at once): AUTH, no STARTTLS.
    let run = run_peer(tls_config(), Peer::default(), b"STARTTLS\r\nEHLO c\r\n");
    let text = ehlo_text(&run);
    assert!(
        !text.contains("STARTTLS") && text.contains("AUTH PLAIN LOGIN"),
        "{text}"
    );
    // Implicit TLS: AUTH at once.
    let implicit = Peer {
        implicit_tls: true,
        ..submission()
    };
    let text = ehlo_text(&run_peer(tls_config(), implicit, b"EHLO c\r\n"));
    assert!(
        !text.contains("STARTTLS") && text.contains("AUTH"),
        "{text}"
    );
    // No certificate: no STARTTLS.
    let text = ehlo_text(&run_peer(config(), Peer::default(), b"EHLO c\r\n"));
    assert!(!text.contains("STARTTLS"), "{text}");
}

#[test]
fn starttls_once_and_only_with_a_certificate() {
    let run = run_peer(config(), Peer::default(), b"EHLO c\r\nSTARTTLS\r\n");
    assert_eq!(run.after_ehlo(), ["502 5.5.1"]);
    let run = run_peer(
        tls_config(),
        Peer::default(),
        b"EHLO c\r\nSTARTTLS\r\nEHLO c\r\nSTARTTLS\r\nSTARTTLS now\r\n",
    );
    assert_eq!(
        run.codes()[2..],
        ["220 2.0.0", "250", "503 5.5.1", "501 5.5.4"]
    );
    assert_eq!(run.0.events, [Event::StartTls]);
}

#[test]
fn commands_pipelined_after_starttls_are_never_run() {
    // The CVE-2011-0411 attack: commands sent in plaintext right behind
    // STARTTLS, hoping to be read as if they came through TLS. The checker
    // also feeds plaintext while the handshake is pending (swallowed).
    let config = Arc::new(tls_config());
    let mut session = ServerSession::new(config);
    session.clear_output();
    let input = b"EHLO c\r\nSTARTTLS\r\nMAIL FROM:<evil@x.test>\r\nRCPT TO:<v@y.test>\r\n";
    // The session stops right after STARTTLS; the driver drops the rest.
    assert_eq!(session.feed(input), 18);
    assert_eq!(session.poll_event(), Some(Event::StartTls));
    let said = String::from_utf8(session.output().to_vec()).unwrap();
    assert!(said.ends_with("220 2.0.0 Ready to start TLS\r\n"), "{said}");
    session.clear_output();
    // A driver that fed it anyway before the handshake: swallowed, unheard.
    let rest = &input[18..];
    assert_eq!(session.feed(rest), rest.len());
    assert!(session.output().is_empty() && session.poll_event().is_none());
    session.tls_established();
    // The session starts over: MAIL needs a new EHLO, nothing was pipelined.
    assert_eq!(session.feed(b"MAIL FROM:<a@b.test>\r\n"), 22);
    assert!(
        String::from_utf8_lossy(session.output()).starts_with("503 5.5.1"),
        "{:?}",
        String::from_utf8_lossy(session.output())
    );
    assert!(session.is_tls());
}

#[test]
fn a_login_before_starttls_does_not_survive_it() {
    // RFC 3207 §4.2: what was learnt before TLS is forgotten, a login too
    // (possible only where plaintext passwords are allowed).
    let plain = encode(b"\0ann@x.test\0pw");
    let peer = Peer {
        plaintext_auth: true,
        ..submission()
    };
    let input =
        format!("EHLO c\r\nAUTH PLAIN {plain}\r\nSTARTTLS\r\nEHLO c\r\nMAIL FROM:<ann@x.test>\r\n");
    let run = run_peer(tls_config(), peer, input.as_bytes());
    assert_eq!(
        run.codes()[2..],
        ["235 2.7.0", "220 2.0.0", "250", "530 5.7.0"],
        "{:?}",
        run.lines()
    );
}

#[test]
fn an_overlong_sasl_response_ends_the_exchange_with_5_5_6() {
    let peer = Peer {
        plaintext_auth: true,
        ..Peer::default()
    };
    let long = "A".repeat(20_000);
    let input = format!("EHLO c\r\nAUTH PLAIN\r\n{long}\r\nNOOP\r\n");
    let run = run_peer(config(), peer, input.as_bytes());
    assert_eq!(run.after_ehlo(), ["334", "500 5.5.6", "250 2.0.0"]);
}

#[test]
fn auth_plain_and_login_ask_the_driver() {
    let plain = encode(b"\0ann@x.test\0pw");
    let peer = Peer {
        plaintext_auth: true,
        ..Peer::default()
    };
    let input = format!("EHLO c\r\nAUTH PLAIN {plain}\r\nMAIL FROM:<ann@x.test>\r\n");
    let run = run_peer(config(), peer, input.as_bytes());
    assert_eq!(run.after_ehlo(), ["235 2.7.0", "250 2.1.0"]);
    match &run.0.events[..] {
        [Event::Authenticate(c)] => {
            assert_eq!(
                (c.mechanism, c.user.as_str()),
                (Mechanism::Plain, "ann@x.test")
            );
            assert_eq!(c.password, "pw");
        }
        other => panic!("{other:?}"),
    }
    let input = format!(
        "EHLO c\r\nAUTH LOGIN\r\n{}\r\n{}\r\n",
        encode(b"bob@x.test"),
        encode(b"pw")
    );
    let run = run_peer(config(), peer, input.as_bytes());
    assert_eq!(run.after_ehlo(), ["334", "334", "235 2.7.0"]);
    assert!(run.lines().contains(&"334 VXNlcm5hbWU6"));
}

#[test]
fn auth_refusals() {
    let plain = encode(b"\0ann@x.test\0pw");
    // Before TLS, without plaintext allowed: 538.
    let input = format!("EHLO c\r\nAUTH PLAIN {plain}\r\n");
    let run = run_peer(tls_config(), Peer::default(), input.as_bytes());
    assert_eq!(run.after_ehlo(), ["538 5.7.11"]);
    assert!(run.0.events.is_empty());
    let peer = Peer {
        plaintext_auth: true,
        ..Peer::default()
    };
    let input = format!(
        concat!(
            "AUTH PLAIN {p}\r\n", // before EHLO
            "EHLO c\r\n",
            "AUTH CRAM-MD5\r\n",    // unknown mechanism
            "AUTH PLAIN !!\r\n",    // not base64
            "AUTH PLAIN\r\n*\r\n",  // cancelled
            "AUTH PLAIN {bad}\r\n", // acting for another user
            "MAIL FROM:<a@b.test>\r\n",
            "AUTH PLAIN {p}\r\n", // inside a transaction
            "RSET\r\n",
            "AUTH PLAIN {p}\r\n", // good
            "AUTH PLAIN {p}\r\n", // again
        ),
        p = plain,
        bad = encode(b"bob@x.test\0ann@x.test\0pw"),
    );
    let run = run_peer(config(), peer, input.as_bytes());
    assert_eq!(
        run.codes()[1..],
        [
            "503 5.5.1",
            "250",
            "504 5.5.4",
            "501 5.5.2",
            "334",
            "501 5.0.0",
            "535 5.7.8",
            "250 2.1.0",
            "503 5.5.1",
            "250 2.0.0",
            "235 2.7.0",
            "503 5.5.1"
        ]
    );
}

#[test]
fn failed_auths_count_toward_the_error_limit() {
    let config = Arc::new(ServerConfig {
        max_errors: 3,
        ..config()
    });
    let peer = Peer {
        plaintext_auth: true,
        ..Peer::default()
    };
    let plain = encode(b"\0ann@x.test\0guess");
    let input = format!("EHLO c\r\n{}", format!("AUTH PLAIN {plain}\r\n").repeat(5));
    // Every AUTH is refused.
    let trace = check::drive_peer(config, peer, [input.as_bytes()], Answers::Refuse);
    let text = String::from_utf8_lossy(&trace.output);
    assert!(trace.closed, "{text}");
    assert!(
        text.ends_with("421 4.7.0 mx.test Too many errors\r\n"),
        "{text}"
    );
}

#[test]
fn submission_requires_auth_before_mail() {
    let run = run_peer(
        tls_config(),
        submission(),
        b"EHLO c\r\nMAIL FROM:<a@b.test>\r\n",
    );
    assert_eq!(run.after_ehlo(), ["530 5.7.0"]);
    // After STARTTLS and AUTH, mail goes.
    let input = format!(
        "EHLO c\r\nSTARTTLS\r\nEHLO c\r\nAUTH PLAIN {}\r\nMAIL FROM:<ann@x.test>\r\nRCPT TO:<z@far.test>\r\n",
        encode(b"\0ann@x.test\0pw")
    );
    let run = run_peer(tls_config(), submission(), input.as_bytes());
    assert_eq!(
        run.codes()[2..],
        ["220 2.0.0", "250", "235 2.7.0", "250 2.1.0", "250 2.1.5"]
    );
}

#[test]
fn mail_from_must_belong_to_the_account() {
    let login = |policy: SenderPolicy, from: &str| {
        let config = ServerConfig {
            sender_policy: policy,
            ..config()
        };
        let peer = Peer {
            plaintext_auth: true,
            ..submission()
        };
        let input = format!(
            "EHLO c\r\nAUTH PLAIN {}\r\nMAIL FROM:<{from}>\r\n",
            encode(b"\0ann@x.test\0pw")
        );
        run_peer(config, peer, input.as_bytes()).after_ehlo()[1].clone()
    };
    assert_eq!(login(SenderPolicy::Own, "ann@x.test"), "250 2.1.0");
    assert_eq!(login(SenderPolicy::Own, "ANN@X.test"), "250 2.1.0");
    assert_eq!(login(SenderPolicy::Own, ""), "250 2.1.0");
    assert_eq!(login(SenderPolicy::Own, "boss@x.test"), "553 5.7.1");
    assert_eq!(login(SenderPolicy::Domain, "boss@x.test"), "250 2.1.0");
    assert_eq!(login(SenderPolicy::Domain, "boss@y.test"), "553 5.7.1");
    assert_eq!(login(SenderPolicy::Any, "boss@y.test"), "250 2.1.0");
    // Non-ASCII letters fold too, as account names do.
    let none = SenderAddresses::default();
    assert!(SenderPolicy::Own.allows("änn@x.test", "ÄNN@X.test", &none));
    assert!(!SenderPolicy::Own.allows("änn@x.test", "ann@x.test", &none));
}

/// Her address with a detail and the aliases that lead to her are hers;
/// others' details, aliases of others and lookalikes are not.
#[test]
fn an_accounts_details_and_aliases_are_its_own() {
    let owned = SenderAddresses {
        delimiter: "+".into(),
        aliases: [
            (
                "info@x.test".to_owned(),
                vec!["ann@x.test".to_owned(), "bob@x.test".to_owned()],
            ),
            ("boss@x.test".to_owned(), vec!["bob@x.test".to_owned()]),
        ]
        .into(),
        is_account: None,
    };
    let own = |sender: &str| SenderPolicy::Own.allows("ann@x.test", sender, &owned);
    assert!(own("ann+lists@x.test"));
    assert!(own("Ann+Lists@X.test"));
    assert!(own("info@x.test"));
    assert!(own("info+sales@x.test"));
    assert!(!own("boss@x.test"));
    assert!(!own("bob+ann@x.test"));
    assert!(!own("ann+x@y.test"), "another domain");
    assert!(!own("+ann@x.test"));
    assert!(!own("annie@x.test"));
    let no_details = SenderAddresses {
        delimiter: String::new(),
        ..owned.clone()
    };
    assert!(!SenderPolicy::Own.allows("ann@x.test", "ann+lists@x.test", &no_details));
    // An account or an alias of its own with a delimiter in its name is
    // not the detail-less account's.
    let with_accounts = SenderAddresses {
        aliases: [("ann+eu@x.test".to_owned(), vec!["bob@x.test".to_owned()])].into(),
        is_account: Some(AccountCheck(Arc::new(|a: &str| a == "ann+admin@x.test"))),
        ..owned
    };
    let own = |sender: &str| SenderPolicy::Own.allows("ann@x.test", sender, &with_accounts);
    assert!(own("ann+lists@x.test"));
    assert!(!own("ann+admin@x.test"));
    assert!(!own("ann+eu@x.test"));
    assert!(SenderPolicy::Own.allows("bob@x.test", "ann+eu@x.test", &with_accounts));
}

#[test]
fn the_transaction_says_how_it_came() {
    let peer = Peer {
        plaintext_auth: true,
        ..Peer::default()
    };
    let input = format!(
        "EHLO c\r\nSTARTTLS\r\nEHLO c\r\nAUTH PLAIN {}\r\n{}",
        encode(b"\0ann@x.test\0pw"),
        String::from_utf8(transaction("z@far.test", "hi\r\n.\r\n")).unwrap()
    );
    let config = ServerConfig {
        sender_policy: SenderPolicy::Any,
        ..tls_config()
    };
    let run = run_peer(config, peer, input.as_bytes());
    let tx = run.messages()[0];
    assert!(tx.tls);
    assert_eq!(tx.authenticated.as_deref(), Some("ann@x.test"));
}

#[test]
fn untrusted_clients_are_cut_off_after_too_many_refused_recipients() {
    let config = Arc::new(ServerConfig {
        max_rejected_recipients: 3,
        ..config()
    });
    let input = format!(
        "EHLO c\r\nMAIL FROM:<a@b.test>\r\n{}",
        "RCPT TO:<nobody@mx.test>\r\n".repeat(10)
    );
    // Alternate: every second question is refused with 550.
    let trace = check::drive_peer(
        config.clone(),
        Peer::default(),
        [input.as_bytes()],
        Answers::Alternate,
    );
    let text = String::from_utf8_lossy(&trace.output);
    assert!(trace.closed, "{text}");
    assert!(
        text.ends_with("421 4.7.0 mx.test Too many rejected recipients\r\n"),
        "{text}"
    );
    assert_eq!(text.matches("550 5.1.1").count(), 3);
    // A trusted client (a relay network) is not.
    let trusted = Peer {
        trusted: true,
        ..Peer::default()
    };
    let trace = check::drive_peer(config, trusted, [input.as_bytes()], Answers::Alternate);
    assert!(!trace.closed);
}
