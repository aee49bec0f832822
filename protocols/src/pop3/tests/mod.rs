//! Session tests. Everything goes through bytes: a test feeds input and
//! looks at the response lines and events that come out.
//!
//! [`run_with`] drives a fresh session with the whole input, then cut in two
//! at every position, then byte by byte, and fails unless every run gives
//! the same trace: every test also checks that how the input is cut never
//! changes what the session does.

use std::sync::Arc;

use super::check::{self, Answer, Driver, Trace, ACCEPT, ALTERNATE};
use super::{Event, Pop3Config};

mod authorization;
mod fuzz_smoke;
mod session;
mod stls;
mod transaction;

/// The configuration most tests use: plaintext allowed, STLS offered.
fn config() -> Pop3Config {
    Pop3Config {
        hostname: "pop.test".into(),
        stls_available: true,
        ..Pop3Config::default()
    }
}

/// Logs in as alice with USER/PASS (answered yes by [`ACCEPT`]).
const LOGIN: &str = "USER alice\r\nPASS secret\r\n";

/// What a driven session said.
struct Run(Trace);

impl Run {
    /// Every output line, CRLF stripped (message content must be UTF-8).
    fn lines(&self) -> Vec<&str> {
        std::str::from_utf8(&self.0.output)
            .unwrap()
            .split_terminator("\r\n")
            .collect()
    }

    /// The status lines only (`+OK…`, `-ERR…`, `+ `), in order, with the
    /// lines of multi-line responses left out. Tests that use it keep
    /// message content free of lines starting with `+` or `-`.
    fn statuses(&self) -> Vec<&str> {
        self.lines()
            .into_iter()
            .filter(|l| l.starts_with("+OK") || l.starts_with("-ERR") || *l == "+ ")
            .collect()
    }

    /// The statuses after the greeting and the login of [`LOGIN`].
    fn after_login(&self) -> Vec<&str> {
        self.statuses().split_off(3)
    }

    /// Short form of each status: `+OK`, `-ERR` or `-ERR [CODE]`, `+`.
    fn kinds(&self) -> Vec<String> {
        self.statuses()
            .into_iter()
            .map(|line| {
                if let Some(rest) = line.strip_prefix("-ERR [") {
                    format!("-ERR [{}]", &rest[..rest.find(']').unwrap()])
                } else {
                    line.split(' ').next().unwrap().to_owned()
                }
            })
            .collect()
    }
}

/// Drive a session with `config` over `input`, answering as `driver` says;
/// checks that cutting the input anywhere gives the same trace.
fn run_with(config: Pop3Config, input: &[u8], driver: &Driver) -> Run {
    let config = Arc::new(config);
    let whole = check::drive(config.clone(), [input], driver);
    for cut in 1..input.len() {
        let (a, b) = input.split_at(cut);
        assert_eq!(
            check::drive(config.clone(), [a, b], driver),
            whole,
            "cut at {cut}"
        );
    }
    assert_eq!(
        check::drive(config, input.chunks(1), driver),
        whole,
        "byte by byte"
    );
    Run(whole)
}

/// [`run_with`] the default config, every question answered yes.
fn run(input: &str) -> Run {
    run_with(config(), input.as_bytes(), &ACCEPT)
}

/// [`run`] after [`LOGIN`]; see [`Run::after_login`].
fn logged_in(input: &str) -> Run {
    run(&format!("{LOGIN}{input}"))
}

/// A driver that answers every question with `answer`.
fn always(answer: Answer) -> Driver {
    let answers: &'static [Answer] = match answer {
        Answer::Yes => &[Answer::Yes],
        Answer::No => &[Answer::No],
        Answer::Locked => &[Answer::Locked],
        Answer::Unavailable => &[Answer::Unavailable],
    };
    Driver { answers, ..ACCEPT }
}
