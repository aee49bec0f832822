//! The client session's promises, checked on any server input: the engine's
//! driving loop in miniature, with assertions. The fuzz target and the fuzz
//! smoke test drive sessions through [`drive`] and [`check_input`].
//!
//! Compiled for tests and with the `fuzzing` feature only.
//!
//! # What is checked (a violation panics)
//! - `feed` consumes no more than it was given; what it leaves is either
//!   input after a pause for the driver, or one unfinished line shorter than
//!   `max_reply_len`;
//! - each `Finished` answers a `send`: one result per recipient, in order,
//!   every code 2xx, 4xx or 5xx;
//! - `Failed` or `Closed` comes exactly once by the end of the stream, last,
//!   with the session closed; a closed session consumes everything and writes
//!   nothing more;
//! - the output stays within a bound computed from the messages sent.

use std::collections::VecDeque;
use std::sync::Arc;

use super::{ClientConfig, ClientEvent, ClientSession, OutgoingMessage};
use crate::check::{self as shared, XorShift};

shared::impl_session!(ClientSession, ClientEvent);

/// Everything a session did while driven (`closed` is always true: a run
/// that ends open panics).
pub type Trace = shared::Trace<ClientEvent>;

/// Drive a new session with `pieces` of server input, as an engine would:
/// each `Ready` or `Finished` is answered by sending the next of `messages`
/// (as many as [`ClientSession::can_send`] allows), and QUIT once the last
/// is sent; `StartTls` by `tls_established` at once. The
/// stream ends after the last piece. Panics if the session breaks a promise.
pub fn drive<'a>(
    config: Arc<ClientConfig>,
    messages: &[OutgoingMessage],
    pieces: impl IntoIterator<Item = &'a [u8]>,
) -> Trace {
    let max_reply_len = config.max_reply_len;
    let mut driver = Driver {
        bound: 1024 + 4 * config.hostname.len(),
        session: ClientSession::new(config),
        messages,
        next: 0,
        in_flight: VecDeque::new(),
        trace: Trace::default(),
        done: false,
    };
    // Bytes given to the session but not consumed yet, as a driver keeps them.
    let mut unread: Vec<u8> = Vec::new();
    for piece in pieces {
        unread.extend_from_slice(piece);
        // Each round either consumes input or follows an event; events come
        // from a bounded number of commands, so this ends.
        for _ in 0..10_000 {
            let used = driver.session.feed(&unread);
            assert!(
                used <= unread.len(),
                "consumed {used} of {} bytes",
                unread.len()
            );
            unread.drain(..used);
            driver.trace.consumed += used;
            let reacted = driver.settle();
            if driver.session.is_closed() {
                assert_eq!(driver.session.feed(&unread), unread.len());
                unread.clear();
            }
            if unread.is_empty() {
                break;
            }
            if !reacted {
                assert!(
                    !unread.contains(&b'\n'),
                    "feed left a complete line with no event: {:?}",
                    String::from_utf8_lossy(&unread)
                );
                assert!(
                    unread.len() < max_reply_len.max(1),
                    "feed left {} bytes of an unfinished line",
                    unread.len()
                );
                break;
            }
        }
    }
    driver.session.eof();
    driver.settle();
    assert!(
        driver.session.is_closed(),
        "the session outlived the stream"
    );
    assert!(driver.done, "the session closed without Failed or Closed");
    driver.trace.closed = true;
    assert_eq!(driver.session.feed(b"250 ok\r\n"), 8);
    driver.session.quit();
    driver.session.eof();
    assert!(driver.session.output().is_empty(), "a closed session wrote");
    assert!(
        driver.session.poll_event().is_none(),
        "a closed session spoke"
    );
    driver.trace
}

/// The engine in miniature.
struct Driver<'m> {
    session: ClientSession,
    messages: &'m [OutgoingMessage],
    /// Index of the next message to send.
    next: usize,
    /// Indexes of the messages whose `Finished` is due, oldest first.
    in_flight: VecDeque<usize>,
    trace: Trace,
    /// Most output bytes the messages sent so far can explain.
    bound: usize,
    /// `Failed` or `Closed` came.
    done: bool,
}

impl Driver<'_> {
    /// Take the output and every event, answering each; true if any came.
    fn settle(&mut self) -> bool {
        let mut any = false;
        loop {
            self.take_output();
            let Some(event) = self.session.poll_event() else {
                return any;
            };
            any = true;
            assert!(!self.done, "{event:?} after the end");
            match &event {
                ClientEvent::Ready => {
                    assert!(self.next == 0 && self.in_flight.is_empty(), "Ready twice");
                    self.send_more();
                }
                ClientEvent::StartTls => self.session.tls_established(),
                ClientEvent::Finished(results) | ClientEvent::Unanswered(results) => {
                    let sent = self.in_flight.pop_front().expect("Finished without send");
                    let recipients = &self.messages[sent].recipients;
                    assert_eq!(results.len(), recipients.len(), "results per recipient");
                    for (result, recipient) in results.iter().zip(recipients) {
                        assert_eq!(&result.recipient, recipient, "results out of order");
                        let code = result.reply.code;
                        assert!(
                            (200..600).contains(&code) && code / 100 != 3,
                            "recipient decided by {}",
                            result.reply
                        );
                    }
                    self.send_more();
                }
                ClientEvent::Failed(reply) => {
                    assert!(!reply.is_positive(), "failed on {reply}");
                    self.done = true;
                }
                ClientEvent::Closed => self.done = true,
            }
            if self.done {
                assert!(self.session.is_closed(), "{event:?} but not closed");
            }
            self.trace.events.push(event);
        }
    }

    /// Send the next messages the session takes, and QUIT after the last.
    fn send_more(&mut self) {
        if self.session.is_closed() {
            // Failed is already queued behind this event.
            return;
        }
        while let Some(message) = self.messages.get(self.next) {
            if !self.session.can_send() {
                return;
            }
            let addresses: usize = message.recipients.iter().map(|r| r.len() + 16).sum();
            self.bound += 2 * message.body.len() + message.mail_from.len() + addresses + 160;
            self.in_flight.push_back(self.next);
            self.next += 1;
            self.session.send(message.clone());
        }
        self.session.quit();
    }

    fn take_output(&mut self) {
        self.trace.take_output(&mut self.session);
        assert!(
            self.trace.output.len() <= self.bound,
            "wrote {} bytes, bound {}",
            self.trace.output.len(),
            self.bound
        );
    }
}

/// Drive `input` whole, cut at pseudo-random points chosen by `seed`, and
/// byte by byte; panics unless the traces agree (and each run keeps every
/// promise). Returns the trace of the whole run.
///
/// Input after a STARTTLS go-ahead stands for TLS-decrypted bytes in one run
/// and for injected plain text in another (the session refuses those when
/// they come in the same read as the 220), so past a `StartTls` event only
/// the events up to it are compared.
pub fn check_input(
    config: Arc<ClientConfig>,
    messages: &[OutgoingMessage],
    input: &[u8],
    seed: u64,
) -> Trace {
    shared::check_cuts(
        input,
        seed,
        |pieces| drive(config.clone(), messages, pieces),
        |trace, whole, how| {
            let tls = whole
                .events
                .iter()
                .position(|e| *e == ClientEvent::StartTls);
            match tls {
                None => assert_eq!(trace, whole, "{how}"),
                Some(at) => assert_eq!(trace.events[..=at], whole.events[..=at], "{how}"),
            }
        },
    )
}

/// Limits and options chosen by `seed`, small enough that short random
/// inputs reach them.
pub fn small_config(seed: u64) -> ClientConfig {
    ClientConfig {
        hostname: "client.test".into(),
        try_starttls: seed & 1 == 1,
        use_chunking: seed & 2 == 2,
        max_reply_len: [12, 64, 512, 16384][(seed >> 2) as usize % 4],
    }
}

/// One to three messages chosen by `seed`: null and UTF-8 senders, zero to
/// three recipients (some with control characters), bodies with dots,
/// 8-bit bytes or no final CRLF.
pub fn messages(seed: u64) -> Vec<OutgoingMessage> {
    let mut rng = XorShift::new(seed);
    const FROM: &[&str] = &["a@b.test", "", "\u{fc}@b.test", "a\r\nRSET@b.test"];
    const TO: &[&str] = &["c@d.test", "e@f.test", "\u{fc}@d.test", "x\ry@d.test"];
    const BODIES: &[&[u8]] = &[
        b"",
        b"hi\r\n",
        b".dot\r\n..\r\n.\r\nno end",
        b"8 bit \xc3\xa9\r\n",
        b"Subject: s\r\n\r\nline one\r\nline two\r\n.\r\nline four\r\n",
    ];
    (0..1 + rng.below(3))
        .map(|_| OutgoingMessage {
            mail_from: FROM[rng.below(FROM.len())].to_owned(),
            recipients: (0..rng.below(4))
                .map(|_| TO[rng.below(TO.len())].to_owned())
                .collect(),
            body: BODIES[rng.below(BODIES.len())].to_vec(),
            smtputf8: rng.below(4) == 0,
            ..OutgoingMessage::default()
        })
        .collect()
}

/// Server lines that random bytes are mapped onto by [`server_like`].
const TOKENS: &[&[u8]] = &[
    b"220 mx.test ESMTP\r\n",
    b"220-mx.test\r\n",
    b"220 2.0.0 go ahead\r\n",
    b"250-mx.test\r\n",
    b"250-PIPELINING\r\n",
    b"250-CHUNKING\r\n",
    b"250-SIZE 20\r\n",
    b"250-size\r\n",
    b"250-STARTTLS\r\n",
    b"250-8BITMIME\r\n",
    b"250-SMTPUTF8\r\n",
    b"250-ENHANCEDSTATUSCODES\r\n",
    b"250 2.1.5 ok\r\n",
    b"354 go on\r\n",
    b"221 2.0.0 bye\r\n",
    b"421 4.3.2 shutting down\r\n",
    b"451 4.3.0 later\r\n",
    b"452 4.5.3 too many\r\n",
    b"500 5.5.1 what\r\n",
    b"502 5.5.1 no\r\n",
    b"550 5.1.1 no such user\r\n",
    b"552 5.3.4 too big\r\n",
    b"554 5.7.1 go away\r\n",
    b"250",
    b"-",
    b" ",
    b"\r",
    b"\n",
    b"\r\n",
    b"x",
    b"\xff",
    // The common path, several times over so random picks follow it often.
    b"250 ok\r\n",
    b"250 ok\r\n",
    b"250 ok\r\n",
    b"250 ok\r\n",
    b"250 ok\r\n",
    b"250 ok\r\n",
    b"250 ok\r\n",
    b"250 ok\r\n",
    b"354 go on\r\n",
];

/// Map each byte to a piece of a server's talk (a whole reply line, an EHLO
/// keyword line, a stray byte). Random bytes mapped this way get past the
/// greeting; raw random bytes rarely do.
pub fn server_like(bytes: &[u8]) -> Vec<u8> {
    shared::map_tokens(TOKENS, bytes)
}
