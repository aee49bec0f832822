//! Drives IMAP sessions for tests and fuzzing and checks their promises.
//!
//! [`Run`] is a driver that answers like a tiny server: the login of
//! `alice` succeeds, every other fails, every mailbox command is `OK`.
//! [`check_input`] feeds one input whole and cut at pseudo-random points
//! and panics if the session breaks a promise: a panic inside it, a
//! response not ending in CRLF, a mailbox command before a login, or a
//! different conversation depending on the cuts.

use super::server::{Event, ImapConfig, ImapSession};
use imap_codec::imap_types::command::CommandBody;
use std::sync::Arc;

/// Small limits, so that limits are hit.
pub fn config() -> ImapConfig {
    ImapConfig {
        hostname: "imap.test".into(),
        max_command_size: 4096,
        max_errors: 5,
        tls_available: true,
        ..ImapConfig::default()
    }
}

/// A session, the events it raised and everything it wrote.
pub struct Run {
    /// The session.
    pub session: ImapSession,
    /// Events in order.
    pub events: Vec<Event>,
    /// Output in order.
    pub out: String,
    /// A login succeeded.
    logged_in: bool,
}

impl Run {
    /// A session with [`config`]; the greeting is in `out`.
    pub fn new() -> Run {
        Run::with(config())
    }

    /// A session with `config`.
    pub fn with(config: ImapConfig) -> Run {
        let mut session = ImapSession::new(Arc::new(config));
        let out = String::from_utf8(session.output().to_vec()).expect("greeting is text");
        session.clear_output();
        Run {
            session,
            events: Vec::new(),
            out,
            logged_in: false,
        }
    }

    /// Feed `input` in pieces of `step` bytes, answering events.
    pub fn feed_in(&mut self, input: &[u8], step: usize) -> &mut Run {
        for piece in input.chunks(step.max(1)) {
            self.session.feed(piece);
            self.answer();
        }
        self
    }

    /// Feed all of `input` at once.
    pub fn feed(&mut self, input: &str) -> &mut Run {
        self.feed_in(input.as_bytes(), usize::MAX)
    }

    /// Answer every pending event and collect the output.
    pub fn answer(&mut self) {
        while let Some(event) = self.session.poll_event() {
            match &event {
                Event::Login { tag, user, .. } if user == "alice" => {
                    self.logged_in = true;
                    self.session.login_succeeded(tag)
                }
                Event::Login { tag, .. } => self.session.login_failed(tag),
                Event::Command { tag, body, .. } => {
                    assert!(self.logged_in, "a mailbox command before login: {body:?}");
                    if matches!(**body, CommandBody::Select { .. }) {
                        self.session.selected();
                    }
                    self.session.ok(tag, None, "done");
                }
                Event::UrlAuth { tag, .. }
                | Event::Notify { tag, .. }
                | Event::CancelUpdate { tag, .. } => {
                    assert!(self.logged_in, "a URLAUTH or NOTIFY command before login");
                    self.session.ok(tag, None, "done");
                }
                Event::Idle => assert!(self.logged_in, "IDLE before login"),
                Event::IdleDone => self.session.idle_done(),
                Event::StartTls => {
                    assert!(!self.logged_in, "STARTTLS after login");
                    // Plaintext after STARTTLS is swallowed unheard.
                    self.session.feed(b"x LOGIN alice secret\r\n");
                    assert!(self.session.poll_event().is_none(), "plaintext ran");
                    self.session.tls_established();
                }
                Event::Compress => {
                    assert!(self.logged_in, "COMPRESS before login");
                    // What a client pipelines after COMPRESS is not run.
                    self.session.feed(b"x NOOP\r\n");
                    assert!(self.session.poll_event().is_none(), "pipelined ran");
                    self.session.compression_started();
                }
            }
            self.events.push(event);
            self.session.feed(&[]);
        }
        let output = self.session.output();
        assert!(
            output.is_empty() || output.ends_with(b"\r\n"),
            "output ends mid-line: {:?}",
            String::from_utf8_lossy(output)
        );
        self.out.push_str(&String::from_utf8_lossy(output));
        self.session.clear_output();
        if crate::Session::has_more_to_run(&self.session) {
            // It waited for its answers to be written, as the driver does.
            self.session.feed(&[]);
            self.answer();
        }
    }

    /// The output, line by line.
    pub fn lines(&self) -> Vec<&str> {
        self.out.split_inclusive("\r\n").collect()
    }

    /// Take the output so far.
    pub fn take(&mut self) -> String {
        std::mem::take(&mut self.out)
    }
}

impl Default for Run {
    fn default() -> Self {
        Run::new()
    }
}

/// A xorshift step.
pub fn next(mut x: u64) -> u64 {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

/// Map bytes onto IMAP tokens: commands, literals, line ends, DONE, SASL.
pub fn imap_like(bytes: &[u8]) -> Vec<u8> {
    const TOKENS: [&[u8]; 16] = [
        b"a LOGIN alice secret\r\n",
        b"b LOGIN bob x\r\n",
        b"{3}\r\n",
        b"{4+}\r\n",
        b"\r\n",
        b"c IDLE\r\n",
        b"DONE\r\n",
        b"d FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])\r\n",
        b"e AUTHENTICATE PLAIN\r\n",
        b"AGFsaWNlAHNlY3JldA==\r\n",
        b"f SELECT INBOX\r\n",
        b"g APPEND INBOX (\\Seen) {5}\r\nhello\r\n",
        b"h UID STORE 1:3 +FLAGS.SILENT (\\Deleted)\r\n",
        b"\xff\x00\"",
        b"i SEARCH OR SEEN (NOT TEXT \"x\")\r\n",
        b"j LOGOUT\r\n",
    ];
    bytes
        .iter()
        .flat_map(|b| TOKENS[usize::from(b % 16)].iter().copied())
        .collect()
}

/// Feed `input` whole and cut at points chosen by `seed`; panic on a
/// broken promise (see the module docs).
pub fn check_input(input: &[u8], seed: u64) {
    let mut whole = Run::new();
    whole.feed_in(input, usize::MAX);
    let mut cut = Run::new();
    let mut rest = input;
    let mut x = seed | 1;
    while !rest.is_empty() {
        x = next(x);
        let take = (x % 17 + 1) as usize;
        let (piece, tail) = rest.split_at(take.min(rest.len()));
        cut.feed_in(piece, usize::MAX);
        rest = tail;
    }
    assert_eq!(whole.out, cut.out, "output depends on the cuts");
    assert_eq!(whole.events, cut.events, "events depend on the cuts");
}
