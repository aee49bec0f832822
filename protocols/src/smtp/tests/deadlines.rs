//! Deadlines, driven by hand through the `Session` interface: a command
//! must be whole in time however its bytes trickle in, message content
//! must keep a minimum rate, untrusted sessions have a life cap, and the
//! submission port wants AUTH in time. No clock is read: time is an input.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::smtp::{Peer, ServerSession};
use crate::Session;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn session(config: ServerConfig, peer: Peer, t0: Instant) -> ServerSession {
    let mut s = ServerSession::with_peer(Arc::new(config), peer);
    s.handle_timeout(t0);
    s.clear_output();
    s
}

fn said(s: &mut ServerSession) -> String {
    let text = String::from_utf8(s.output().to_vec()).unwrap();
    s.clear_output();
    text
}

/// A trusted session at `t0` with a recipient accepted, content allowed
/// 5 s plus a second per 100 bytes.
fn in_transaction(t0: Instant) -> ServerSession {
    let config = ServerConfig {
        command_timeout: secs(300),
        data_timeout: secs(5),
        min_data_rate: 100,
        ..config()
    };
    let mut s = session(config, trusted(), t0);
    s.receive(
        t0,
        b"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\n",
    );
    assert!(matches!(s.poll_event(), Some(Event::Recipient { .. })));
    s.accept_recipient();
    s
}

fn trusted() -> Peer {
    Peer {
        trusted: true,
        ..Peer::default()
    }
}

#[test]
fn a_trickled_command_is_cut_at_the_command_deadline() {
    let config = ServerConfig {
        command_timeout: secs(10),
        ..config()
    };
    let t0 = Instant::now();
    let mut s = session(config, trusted(), t0);
    assert_eq!(s.poll_timeout(), Some(t0 + secs(10)));
    // One byte every 3 s: the deadline does not move.
    for (i, byte) in b"EHLO".iter().enumerate() {
        let now = t0 + secs(3 * i as u64);
        assert_eq!(s.receive(now, &[*byte]), 1);
        assert_eq!(s.poll_timeout(), Some(t0 + secs(10)), "byte {i}");
    }
    s.handle_timeout(t0 + secs(10));
    assert!(s.is_closed());
    assert_eq!(said(&mut s), "421 4.4.2 mx.test Timeout\r\n");
}

#[test]
fn a_whole_command_moves_the_deadline() {
    let config = ServerConfig {
        command_timeout: secs(10),
        ..config()
    };
    let t0 = Instant::now();
    let mut s = session(config, trusted(), t0);
    s.receive(t0 + secs(8), b"EHLO c\r\n");
    assert_eq!(s.poll_timeout(), Some(t0 + secs(18)));
    s.handle_timeout(t0 + secs(12));
    assert!(!s.is_closed());
}

#[test]
fn the_command_timer_starts_when_the_reply_is_out() {
    let config = ServerConfig {
        command_timeout: secs(10),
        ..config()
    };
    let t0 = Instant::now();
    let mut s = session(config, trusted(), t0);
    s.receive(t0 + secs(8), b"EHLO c\r\n");
    assert_eq!(s.poll_timeout(), Some(t0 + secs(18)));
    // The reply went out 7 s later (a slow reader, or checks behind it).
    said(&mut s);
    s.output_written(t0 + secs(15));
    assert_eq!(s.poll_timeout(), Some(t0 + secs(25)));
}

#[test]
fn content_must_keep_the_minimum_rate() {
    let t0 = Instant::now();
    let mut s = in_transaction(t0);
    s.receive(t0, b"DATA\r\n");
    said(&mut s);
    // 5 s allowance + 1 s per 100 bytes received.
    assert_eq!(s.poll_timeout(), Some(t0 + secs(5)));
    s.receive(t0 + secs(4), &[b'x'; 300]);
    assert_eq!(s.poll_timeout(), Some(t0 + secs(8)));
    // A trickle: 1 byte a second earns 10 ms each, and falls behind.
    let mut now = t0 + secs(4);
    while !s.is_closed() {
        now += secs(1);
        if s.poll_timeout().is_some_and(|at| now >= at) {
            s.handle_timeout(now);
        } else {
            s.receive(now, b"y");
        }
        assert!(now < t0 + secs(20), "never cut");
    }
    assert_eq!(said(&mut s), "421 4.4.2 mx.test Timeout\r\n");
}

#[test]
fn each_bdat_chunk_has_its_own_allowance() {
    // A pause between chunks is the command timeout's business: the next
    // chunk still gets the whole content allowance.
    let t0 = Instant::now();
    let mut s = in_transaction(t0);
    s.receive(t0, b"BDAT 300\r\n");
    s.receive(t0 + secs(1), &[b'x'; 300]);
    assert!(said(&mut s).ends_with("250 2.0.0 300 octets received\r\n"));
    assert_eq!(
        s.poll_timeout(),
        Some(t0 + secs(301)),
        "the command timeout"
    );
    // 60 s later, the next chunk: 5 s from its start, not from the first.
    let t1 = t0 + secs(61);
    s.receive(t1, b"BDAT 200 LAST\r\n");
    assert_eq!(s.poll_timeout(), Some(t1 + secs(5)));
    s.receive(t1 + secs(4), &[b'y'; 100]);
    assert_eq!(s.poll_timeout(), Some(t1 + secs(6)));
    s.handle_timeout(t1 + secs(5));
    assert!(!s.is_closed());
}

#[test]
fn waiting_for_the_driver_stops_the_clock() {
    let config = ServerConfig {
        command_timeout: secs(10),
        ..config()
    };
    let t0 = Instant::now();
    let mut s = session(config, trusted(), t0);
    s.receive(
        t0,
        b"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\n",
    );
    assert!(s.poll_event().is_some());
    assert_eq!(s.poll_timeout(), None);
    s.handle_timeout(t0 + secs(60));
    assert!(
        !s.is_closed(),
        "a slow policy lookup is not the client's fault"
    );
}

#[test]
fn untrusted_sessions_have_a_life_cap() {
    let config = ServerConfig {
        command_timeout: secs(10),
        max_session: Some(secs(30)),
        ..config()
    };
    let t0 = Instant::now();
    let mut s = session(config.clone(), Peer::default(), t0);
    let mut now = t0;
    while !s.is_closed() {
        now += secs(5);
        s.receive(now, b"NOOP\r\n");
        s.handle_timeout(now);
    }
    assert_eq!(now, t0 + secs(30));
    // Trusted clients have none.
    let mut s = session(config, trusted(), t0);
    for i in 1..100 {
        s.receive(t0 + secs(5 * i), b"NOOP\r\n");
    }
    assert!(!s.is_closed());
}

#[test]
fn submission_wants_auth_in_time() {
    let config = ServerConfig {
        login_timeout: secs(20),
        max_session: None,
        ..config()
    };
    let peer = Peer {
        submission: true,
        plaintext_auth: true,
        trusted: true,
        ..Peer::default()
    };
    let t0 = Instant::now();
    let mut s = session(config, peer, t0);
    assert_eq!(s.poll_timeout(), Some(t0 + secs(20)));
    s.receive(t0 + secs(1), b"EHLO c\r\nAUTH PLAIN AGFubgBwdw==\r\n");
    assert!(matches!(s.poll_event(), Some(Event::Authenticate(_))));
    s.auth_succeeded("ann");
    // Logged in: only the command deadline is left.
    assert_eq!(s.poll_timeout(), Some(t0 + secs(301)));
}

#[test]
fn shutdown_waits_for_the_transaction() {
    let t0 = Instant::now();
    let mut s = session(config(), trusted(), t0);
    s.receive(t0, b"EHLO c\r\nMAIL FROM:<a@b.test>\r\n");
    said(&mut s);
    s.shutdown();
    assert!(!s.is_closed(), "MAIL is open");
    s.receive(t0, b"RCPT TO:<c@d.test>\r\n");
    assert!(s.poll_event().is_some());
    s.accept_recipient();
    s.receive(t0, b"DATA\r\nhi\r\n.\r\n");
    assert!(matches!(s.poll_event(), Some(Event::Message(_))));
    s.message_stored("Q1");
    assert!(s.is_closed());
    assert!(said(&mut s)
        .ends_with("250 2.0.0 Ok: queued as Q1\r\n421 4.3.2 mx.test Service shutting down\r\n"));
}

#[test]
fn time_earned_by_fast_content_does_not_cover_silence() {
    // 100 KB at once earns 1,000 s at 100 bytes/s, but with nothing more
    // the message ends at the data timeout (5 s) after the last bytes.
    let t0 = Instant::now();
    let mut s = in_transaction(t0);
    s.receive(t0, b"DATA\r\n");
    let content = vec![b'x'; 100_000];
    assert_eq!(s.receive(t0 + secs(1), &content), content.len());
    assert_eq!(s.poll_timeout(), Some(t0 + secs(6)));
    // More content moves it on; the rate bound still stands behind it.
    s.receive(t0 + secs(4), b"more");
    assert_eq!(s.poll_timeout(), Some(t0 + secs(9)));
    s.handle_timeout(t0 + secs(9));
    assert!(s.is_closed());
}

#[test]
fn a_busy_strangers_session_ends_at_its_cap() {
    let config = ServerConfig {
        command_timeout: secs(300),
        max_session: Some(secs(60)),
        ..config()
    };
    let t0 = Instant::now();
    let mut s = session(config, Peer::default(), t0);
    for i in 0..12 {
        s.receive(t0 + secs(5 * i), b"NOOP\r\n");
        assert!(!s.is_closed(), "closed at {}", 5 * i);
    }
    assert_eq!(s.poll_timeout(), Some(t0 + secs(60)));
    s.receive(t0 + secs(61), b"NOOP\r\n");
    assert!(s.is_closed());
}
