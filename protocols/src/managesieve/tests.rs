use super::*;
use crate::sasl::{Credentials, Mechanism};
use crate::session::{Peer, Session};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn session(peer: Peer, tls_available: bool) -> ManageSieveSession {
    ManageSieveSession::new(
        Arc::new(ManageSieveConfig {
            hostname: "mx.test".into(),
            tls_available,
            ..ManageSieveConfig::default()
        }),
        peer,
    )
}

fn take(s: &mut ManageSieveSession) -> String {
    let out = String::from_utf8_lossy(s.output()).into_owned();
    s.clear_output();
    out
}

fn plain(user: &str, password: &str) -> String {
    crate::sasl::encode(format!("\0{user}\0{password}").as_bytes())
}

/// A logged-in session, greeting and login answers taken.
fn logged_in() -> ManageSieveSession {
    let mut s = session(Peer::default(), false);
    take(&mut s);
    s.feed(
        format!(
            "AUTHENTICATE \"PLAIN\" \"{}\"\r\n",
            plain("alice@x.test", "pw")
        )
        .as_bytes(),
    );
    assert!(matches!(s.poll_event(), Some(Event::Authenticate(_))));
    s.auth_succeeded("alice@x.test".into());
    assert_eq!(take(&mut s), "OK \"Logged in\"\r\n");
    s
}

#[test]
fn greeting_lists_capabilities_and_starttls_only_before_tls() {
    let mut s = session(
        Peer {
            implicit_tls: false,
            plaintext_auth: false,
        },
        true,
    );
    let greeting = take(&mut s);
    assert!(
        greeting.starts_with("\"IMPLEMENTATION\" \"ringpost\"\r\n"),
        "{greeting}"
    );
    // No password mechanisms in plaintext from off loopback.
    assert!(greeting.contains("\"SASL\" \"\"\r\n"), "{greeting}");
    assert!(
        greeting.contains("\"SIEVE\" \"fileinto reject"),
        "{greeting}"
    );
    assert!(greeting.contains("\"STARTTLS\"\r\n"), "{greeting}");
    assert!(greeting.ends_with("\"VERSION\" \"1.0\"\r\nOK \"ManageSieve ready\"\r\n"));
    s.feed(b"AUTHENTICATE \"PLAIN\" \"AGEAYg==\"\r\n");
    assert_eq!(
        take(&mut s),
        "NO (ENCRYPT-NEEDED) \"Use STARTTLS first\"\r\n"
    );
    // STARTTLS, with a command pipelined behind it in plaintext: dropped.
    s.feed(b"STARTTLS\r\nLISTSCRIPTS\r\n");
    assert_eq!(s.poll_event(), Some(Event::StartTls));
    assert_eq!(take(&mut s), "OK \"Begin TLS negotiation now\"\r\n");
    assert_eq!(
        s.feed(b"CAPABILITY\r\n"),
        12,
        "plaintext after STARTTLS is dropped"
    );
    s.tls_established();
    let again = take(&mut s);
    assert!(again.contains("\"SASL\" \"PLAIN LOGIN\"\r\n"), "{again}");
    assert!(!again.contains("STARTTLS"), "{again}");
    assert!(again.ends_with("OK \"TLS negotiation successful\"\r\n"));
    assert_eq!(s.poll_event(), None);
}

#[test]
fn authenticate_with_a_continuation_and_failure() {
    let mut s = session(Peer::default(), false);
    take(&mut s);
    s.feed(b"Authenticate \"PLAIN\"\r\n");
    assert_eq!(take(&mut s), "\"\"\r\n");
    s.feed(format!("\"{}\"\r\n", plain("alice@x.test", "pw")).as_bytes());
    assert_eq!(
        s.poll_event(),
        Some(Event::Authenticate(Credentials {
            mechanism: Mechanism::Plain,
            user: "alice@x.test".into(),
            password: "pw".into(),
        }))
    );
    s.auth_failed();
    assert_eq!(take(&mut s), "NO \"Authentication failed\"\r\n");
    // LOGIN, its answers as literals; then cancelled.
    s.feed(b"AUTHENTICATE \"LOGIN\"\r\n");
    assert_eq!(take(&mut s), "\"VXNlcm5hbWU6\"\r\n");
    s.feed(b"{4+}\r\nYQ==\r\n");
    assert_eq!(take(&mut s), "\"UGFzc3dvcmQ6\"\r\n");
    s.feed(b"\"*\"\r\n");
    assert_eq!(take(&mut s), "NO \"Authentication cancelled\"\r\n");
    s.feed(b"LISTSCRIPTS\r\n");
    assert_eq!(take(&mut s), "NO \"Log in first\"\r\n");
    // Locked out: told to come back later, not that the password is wrong.
    s.feed(
        format!(
            "AUTHENTICATE \"PLAIN\" \"{}\"\r\n",
            plain("a@x.test", "right")
        )
        .as_bytes(),
    );
    assert!(matches!(s.poll_event(), Some(Event::Authenticate(_))));
    s.auth_locked_out();
    assert_eq!(
        take(&mut s),
        "NO (TRYLATER) \"Too many failed logins; try again later\"\r\n"
    );
    s.feed(b"AUTHENTICATE \"CRAM-MD5\"\r\n");
    assert!(take(&mut s).starts_with("NO "));
}

#[test]
fn script_commands_go_to_the_driver_after_checks() {
    let mut s = logged_in();
    // A broken script is refused here, with its line.
    s.feed(b"PUTSCRIPT \"main\" {4+}\r\nkeep\r\n");
    assert_eq!(s.poll_event(), None);
    assert_eq!(
        take(&mut s),
        "NO \"line 1: expected ';' or a block after keep\"\r\n"
    );
    s.feed(
        b"CHECKSCRIPT {5+}\r\nkeep;\r\nHAVESPACE \"main\" 999999999\r\nHAVESPACE \"main\" 100\r\n",
    );
    // A size within the limit: the driver says whether there is a
    // place for the name (the number of scripts is its to count).
    assert_eq!(
        take(&mut s),
        "OK \"Script is valid\"\r\nNO (QUOTA/MAXSIZE) \"Script too large\"\r\n"
    );
    assert_eq!(
        s.poll_event(),
        Some(Event::Scripts {
            user: "alice@x.test".into(),
            request: Request::HaveSpace("main".into())
        })
    );
    s.answer(Answer::No(
        Some("QUOTA/MAXSCRIPTS"),
        "at most 32 scripts".into(),
    ));
    assert_eq!(
        take(&mut s),
        "NO (QUOTA/MAXSCRIPTS) \"at most 32 scripts\"\r\n"
    );
    // Pipelined: the second waits for the first's answer.
    s.feed(b"PUTSCRIPT \"main\" {5+}\r\nkeep;\r\nLISTSCRIPTS\r\n");
    assert_eq!(
        s.poll_event(),
        Some(Event::Scripts {
            user: "alice@x.test".into(),
            request: Request::Put {
                name: "main".into(),
                text: b"keep;".to_vec()
            }
        })
    );
    assert_eq!(s.poll_event(), None);
    s.answer(Answer::Done);
    s.feed(b"");
    assert_eq!(
        s.poll_event().map(|e| match e {
            Event::Scripts { request, .. } => request,
            other => panic!("{other:?}"),
        }),
        Some(Request::List)
    );
    s.answer(Answer::Listing(vec![
        ("main".into(), true),
        ("we\"ird".into(), false),
    ]));
    assert_eq!(
        take(&mut s),
        "OK \"Done\"\r\n\"main\" ACTIVE\r\n\"we\\\"ird\"\r\nOK \"Listscripts completed\"\r\n"
    );
    s.feed(b"GETSCRIPT \"main\"\r\n");
    assert!(
        matches!(s.poll_event(), Some(Event::Scripts { request: Request::Get(n), .. }) if n == "main")
    );
    s.answer(Answer::Script(b"keep;\r\n".to_vec()));
    assert_eq!(
        take(&mut s),
        "{7}\r\nkeep;\r\n\r\nOK \"Getscript completed\"\r\n"
    );
    s.feed(b"SETACTIVE \"\"\r\n");
    assert!(matches!(
        s.poll_event(),
        Some(Event::Scripts {
            request: Request::Activate(None),
            ..
        })
    ));
    s.answer(Answer::No(Some("NONEXISTENT"), "no such script".into()));
    assert_eq!(take(&mut s), "NO (NONEXISTENT) \"no such script\"\r\n");
    s.feed(b"RENAMESCRIPT \"a\" \"b\"\r\nDELETESCRIPT \"b\"\r\n");
    assert!(matches!(
        s.poll_event(),
        Some(Event::Scripts {
            request: Request::Rename { .. },
            ..
        })
    ));
    s.answer(Answer::Done);
    s.feed(b"");
    assert!(matches!(
        s.poll_event(),
        Some(Event::Scripts {
            request: Request::Delete(_),
            ..
        })
    ));
    s.answer(Answer::Done);
    s.feed(b"NOOP \"t1\"\r\nLOGOUT\r\nNOOP\r\n");
    assert_eq!(
        take(&mut s),
        "OK \"Done\"\r\nOK \"Done\"\r\nOK (TAG \"t1\") \"Done\"\r\nOK \"Logout completed\"\r\n"
    );
    assert!(s.is_closed());
}

#[test]
fn strangers_cannot_make_it_hold_much() {
    let mut s = session(Peer::default(), false);
    take(&mut s);
    // A literal past the login limit ends the session before its bytes.
    s.feed(b"AUTHENTICATE \"PLAIN\" {100000+}\r\n");
    assert!(take(&mut s).starts_with("BYE "));
    assert!(s.is_closed());
    assert_eq!(s.buffered(), 0);

    let mut s = session(Peer::default(), false);
    take(&mut s);
    s.feed(&vec![b'A'; server::MAX_LOGIN_COMMAND + 100]);
    assert!(take(&mut s).starts_with("BYE "));
    assert!(s.is_closed());

    // After login a script too large is refused, its octets dropped as
    // they come, and the session goes on; one past all reason ends it.
    let mut s = logged_in();
    let big = crate::sieve::MAX_SCRIPT_SIZE + 1;
    s.feed(format!("PUTSCRIPT \"x\" {{{big}+}}\r\nkeep;").as_bytes());
    assert_eq!(take(&mut s), "");
    let chunk = vec![b'#'; 64 * 1024];
    let mut left = big - 5;
    while left > 0 {
        let n = left.min(chunk.len());
        assert_eq!(s.feed(&chunk[..n]), n);
        left -= n;
        assert!(s.buffered() < 64 * 1024, "{}", s.buffered());
    }
    s.feed(b"\r\nNOOP\r\n");
    assert_eq!(
        take(&mut s),
        "NO (QUOTA/MAXSIZE) \"Script too large\"\r\nOK \"NOOP completed\"\r\n"
    );
    let huge = server::MAX_DISCARD + 1;
    s.feed(format!("PUTSCRIPT \"x\" {{{huge}+}}\r\n").as_bytes());
    assert!(take(&mut s).starts_with("BYE \"Literal too large\""));
}

#[test]
fn errors_are_counted_and_silence_ends_the_session() {
    let mut s = session(Peer::default(), false);
    take(&mut s);
    for _ in 0..10 {
        s.feed(b"FROB\r\n");
    }
    let out = take(&mut s);
    assert!(out.ends_with("BYE \"Too many errors\"\r\n"), "{out}");
    assert!(s.is_closed());

    let mut s = session(Peer::default(), false);
    let start = Instant::now();
    s.handle_timeout(start);
    take(&mut s);
    // Login within the login timeout, or goodbye.
    s.handle_timeout(start + Duration::from_secs(119));
    assert!(!s.is_closed());
    s.handle_timeout(start + Duration::from_secs(121));
    assert!(s.is_closed());
    assert_eq!(take(&mut s), "BYE \"Disconnected for inactivity\"\r\n");
}

#[test]
fn commands_split_across_reads() {
    let mut s = logged_in();
    let command = b"PUTSCRIPT \"main\" {5}\r\nkeep;\r\n";
    for byte in command.iter() {
        s.feed(std::slice::from_ref(byte));
    }
    assert!(matches!(
        s.poll_event(),
        Some(Event::Scripts {
            request: Request::Put { .. },
            ..
        })
    ));
}

#[test]
fn many_pipelined_commands_are_answered_in_order() {
    let mut s = logged_in();
    let noops = "NOOP\r\n".repeat(5000);
    let mut fed = 0;
    let mut out = String::new();
    while fed < noops.len() {
        fed += s.feed(&noops.as_bytes()[fed..]);
        out.push_str(&take(&mut s));
    }
    s.feed(b"");
    out.push_str(&take(&mut s));
    assert_eq!(out.matches("OK \"NOOP completed\"\r\n").count(), 5000);
}
