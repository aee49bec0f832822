//! Session tests. Everything goes through bytes: a test feeds input and
//! looks at the reply lines and events that come out.
//!
//! [`run`] drives a fresh session with the whole input at once *and* byte by
//! byte, and fails unless both give the same trace, so every test also
//! checks that how the input is cut never changes what the session does.

use std::sync::Arc;

use super::check::{self, Answers, Trace};
use super::{Event, ServerConfig, Transaction};

mod auth;
mod bdat;
mod commands;
mod data;
mod deadlines;
mod envelope;
mod fuzz_smoke;
mod lmtp;
mod pipelining;

/// The configuration most tests use.
fn config() -> ServerConfig {
    ServerConfig {
        hostname: "mx.test".into(),
        ..ServerConfig::default()
    }
}

/// What a driven session said.
struct Run(Trace);

impl Run {
    /// Every output line, CRLF stripped.
    fn lines(&self) -> Vec<&str> {
        let text = std::str::from_utf8(&self.0.output).unwrap();
        text.split_terminator("\r\n").collect()
    }

    /// One entry per reply: its code and enhanced status, e.g. `"250 2.1.0"`,
    /// or the code alone when it has none (`"354"`).
    fn codes(&self) -> Vec<String> {
        self.lines()
            .into_iter()
            .filter(|line| line.as_bytes().get(3) != Some(&b'-'))
            .map(|line| {
                let mut words = line.split(' ');
                let code = words.next().unwrap();
                match words.next() {
                    Some(status) if status.len() >= 5 && status.as_bytes()[1] == b'.' => {
                        format!("{code} {status}")
                    }
                    _ => code.to_owned(),
                }
            })
            .collect()
    }

    /// Codes after the greeting and the EHLO reply of [`ehlo_run`].
    fn after_ehlo(&self) -> Vec<String> {
        self.codes().split_off(2)
    }

    /// The transactions handed out.
    fn messages(&self) -> Vec<&Transaction> {
        self.0
            .events
            .iter()
            .filter_map(|e| {
                if let Event::Message(tx) = e {
                    Some(tx)
                } else {
                    None
                }
            })
            .collect()
    }

    /// The recipients the driver was asked about.
    fn asked(&self) -> Vec<&str> {
        self.0
            .events
            .iter()
            .filter_map(|e| {
                if let Event::Recipient { address } = e {
                    Some(address.as_str())
                } else {
                    None
                }
            })
            .collect()
    }
}

/// Drive a session with `config` over `input`, answering `answers`; checks
/// that byte-by-byte input gives the same trace.
fn run_with(config: ServerConfig, input: &[u8], answers: Answers) -> Run {
    let config = Arc::new(config);
    let whole = check::drive(config.clone(), [input], answers);
    let bytes = check::drive(config, input.chunks(1), answers);
    assert_eq!(whole, bytes, "byte-by-byte input changed the outcome");
    Run(whole)
}

/// [`run_with`] the default config, every question answered yes.
fn run(input: &[u8]) -> Run {
    run_with(config(), input, Answers::Accept)
}

/// [`run`] with `EHLO client.test` first; see [`Run::after_ehlo`].
fn ehlo_run(input: &[u8]) -> Run {
    let mut all = b"EHLO client.test\r\n".to_vec();
    all.extend_from_slice(input);
    run(&all)
}

/// The codes after EHLO for `input`.
fn ehlo_codes(input: &[u8]) -> Vec<String> {
    ehlo_run(input).after_ehlo()
}

/// Assert that cutting `input` anywhere (two pieces, every position) gives
/// the same trace as feeding it whole.
fn assert_split_invariant(config: ServerConfig, input: &[u8], answers: Answers) {
    let config = Arc::new(config);
    let whole = check::drive(config.clone(), [input], answers);
    for cut in 1..input.len() {
        let (a, b) = input.split_at(cut);
        assert_eq!(
            check::drive(config.clone(), [a, b], answers),
            whole,
            "cut at {cut}"
        );
    }
    assert_eq!(
        check::drive(config, input.chunks(1), answers),
        whole,
        "byte by byte"
    );
}

/// A MAIL/RCPT/DATA transaction for `to`, with `body` as the content (given
/// already dot-stuffed and terminated).
fn transaction(to: &str, body: &str) -> Vec<u8> {
    format!("MAIL FROM:<sender@client.test>\r\nRCPT TO:<{to}>\r\nDATA\r\n{body}").into_bytes()
}

/// Codes of an accepted MAIL, RCPT, DATA and stored message.
const DELIVERED: [&str; 4] = ["250 2.1.0", "250 2.1.5", "354", "250 2.0.0"];
