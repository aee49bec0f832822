//! What every server session (SMTP, POP3, IMAP) offers the engine's one
//! connection driver, and the deadlines they share.
//!
//! The shape is quinn-proto's: the driver hands in bytes with the time they
//! arrived ([`Session::receive`]), takes out events and output, asks when the
//! session next needs to hear from the client ([`Session::poll_timeout`]) and
//! tells it when that time has come ([`Session::handle_timeout`]). A session
//! never reads a clock: tests drive time by hand.
//!
//! # Deadlines, not idle timers
//! An idle timer that restarts at every byte lets a client that trickles one
//! byte a minute hold a connection for ever. Sessions here use [`Deadline`]s
//! that only the completion of a request moves: a command line must be whole
//! within the command timeout of the previous answer, however its bytes
//! arrive; message content must keep up a minimum rate on top of a fixed
//! allowance (Postfix's `smtpd_min_data_rate` idea); and a session can have a
//! cap on its whole life, or on its life before login.

use std::time::{Duration, Instant};

/// A sans-IO server session as the engine's connection driver sees it.
pub trait Session {
    /// What the session asks the driver to do (policy decisions, commits,
    /// logins, the TLS upgrade). Each protocol documents how to answer.
    type Event;

    /// Take `input` that arrived at `now`; returns how many bytes were
    /// consumed. Unconsumed bytes must be kept and given again once the
    /// pending event is answered.
    fn receive(&mut self, now: Instant, input: &[u8]) -> usize;

    /// The next event for the driver, if any.
    fn poll_event(&mut self) -> Option<Self::Event>;

    /// Bytes to send.
    fn output(&self) -> &[u8];

    /// Forget the output once sent.
    fn clear_output(&mut self);

    /// The session is over: send the output, then close.
    fn is_closed(&self) -> bool;

    /// When the session gives up on the client unless something arrives that
    /// completes a request; `None` while the session waits for the driver,
    /// and before it has been told the time.
    fn poll_timeout(&self) -> Option<Instant>;

    /// Tell the session the time is `now`: once when the connection starts
    /// (the clock of a session starts at the first time it hears), and
    /// whenever [`Self::poll_timeout`] has passed. A passed deadline queues
    /// the goodbye and closes the session.
    fn handle_timeout(&mut self, now: Instant);

    /// The output was written at `now`, which may be long after the
    /// request it answers arrived (a large message to a slow reader): a
    /// session whose request timer measures the client's silence starts it
    /// again here, so the time spent sending is not counted as the
    /// client's. The default keeps the timers as they are.
    fn output_written(&mut self, now: Instant) {
        let _ = now;
    }

    /// Whether the session holds commands it took in but left waiting for
    /// its output to be written: the driver writes it, then gives the
    /// session a turn (a `receive` of nothing) before reading more.
    fn has_more_to_run(&self) -> bool {
        false
    }

    /// The server is stopping: close now, or as soon as the work in progress
    /// (an SMTP transaction) is done.
    fn shutdown(&mut self);

    /// Client bytes the session holds right now (a message being received,
    /// a literal), which the driver charges to its memory budget.
    fn buffered(&self) -> usize {
        0
    }
}

/// What the driver knows about a mail-access client (IMAP, POP3) when the
/// session starts. (SMTP's own `Peer` adds the port and the trust.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    /// TLS from the first byte (IMAPS, POP3S; RFC 8314).
    pub implicit_tls: bool,
    /// Passwords may be sent before TLS (loopback clients, by
    /// configuration).
    pub plaintext_auth: bool,
}

impl Default for Peer {
    /// A plaintext client that may log in without TLS (tests).
    fn default() -> Self {
        Peer {
            implicit_tls: false,
            plaintext_auth: true,
        }
    }
}

/// One pending deadline and how it was set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline {
    at: Instant,
}

impl Deadline {
    /// `allowance` from `start`.
    pub fn after(start: Instant, allowance: Duration) -> Deadline {
        Deadline {
            at: start.checked_add(allowance).unwrap_or(start),
        }
    }

    /// `allowance` from `start`, plus the time `received` bytes earn at
    /// `min_rate` bytes per second (0: no extension).
    pub fn for_content(
        start: Instant,
        allowance: Duration,
        received: usize,
        min_rate: u32,
    ) -> Deadline {
        let earned = match min_rate {
            0 => Duration::ZERO,
            rate => Duration::from_secs_f64(received as f64 / f64::from(rate)),
        };
        Deadline::after(start, allowance.saturating_add(earned))
    }

    /// When it falls.
    pub fn at(self) -> Instant {
        self.at
    }

    /// Whether it has passed at `now`.
    pub fn passed(self, now: Instant) -> bool {
        now >= self.at
    }
}

/// The clock of one session: the latest time it was told, and the two
/// deadlines every protocol has — the current request's and the session's
/// whole life (or its life before login).
#[derive(Debug, Clone, Default)]
pub(crate) struct Timers {
    now: Option<Instant>,
    /// The client must complete its current request (a command, a message)
    /// by then.
    pub(crate) request: Option<Deadline>,
    /// The session ends then, whatever it is doing (unless waiting for the
    /// driver).
    pub(crate) life: Option<Deadline>,
}

impl Timers {
    /// The latest time told, if any.
    pub(crate) fn now(&self) -> Option<Instant> {
        self.now
    }

    /// Whether the clock has started (the session was told the time).
    pub(crate) fn started(&self) -> bool {
        self.now.is_some()
    }

    /// Note the time; returns true the first time (the clock starts).
    pub(crate) fn tell(&mut self, now: Instant) -> bool {
        let first = self.now.is_none();
        if self.now.is_none_or(|t| now > t) {
            self.now = Some(now);
        }
        first
    }

    /// A new request is due within `allowance` of now (no-op before the
    /// clock starts).
    pub(crate) fn expect_request(&mut self, allowance: Duration) {
        if let Some(now) = self.now {
            self.request = Some(Deadline::after(now, allowance));
        }
    }

    /// Cap the session's life at `allowance` from now.
    pub(crate) fn limit_life(&mut self, allowance: Option<Duration>) {
        self.life = match (self.now, allowance) {
            (Some(now), Some(allowance)) => Some(Deadline::after(now, allowance)),
            _ => None,
        };
    }

    /// The earliest deadline, with `request` standing in for the stored one
    /// when the protocol computes it (message content).
    pub(crate) fn next(&self, request: Option<Deadline>) -> Option<Instant> {
        earliest([request.or(self.request), self.life])
    }

    /// Whether a deadline (as [`Self::next`] sees them) has passed.
    pub(crate) fn expired(&self, request: Option<Deadline>) -> bool {
        match (self.now, self.next(request)) {
            (Some(now), Some(at)) => now >= at,
            _ => false,
        }
    }
}

/// Output past this capacity is given back once written: a session that
/// sent one large message must not keep its buffer while it idles.
const KEPT_OUTPUT_CAPACITY: usize = 1024 * 1024;

/// Empty a session's written output, giving back a large buffer's memory.
pub(crate) fn clear_output(output: &mut Vec<u8>) {
    output.clear();
    if output.capacity() > KEPT_OUTPUT_CAPACITY {
        output.shrink_to(64 * 1024);
    }
}

/// The earliest of some optional deadlines.
pub fn earliest(deadlines: impl IntoIterator<Item = Option<Deadline>>) -> Option<Instant> {
    deadlines.into_iter().flatten().map(Deadline::at).min()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_earns_time_at_the_minimum_rate() {
        let start = Instant::now();
        let d = Deadline::for_content(start, Duration::from_secs(10), 5000, 1000);
        assert_eq!(d.at(), start + Duration::from_secs(15));
        let d = Deadline::for_content(start, Duration::from_secs(10), 5000, 0);
        assert_eq!(d.at(), start + Duration::from_secs(10));
        assert!(!d.passed(start + Duration::from_secs(9)));
        assert!(d.passed(start + Duration::from_secs(10)));
    }

    #[test]
    fn a_large_output_buffer_is_given_back_once_written() {
        let mut output = Vec::with_capacity(8 * 1024 * 1024);
        output.extend_from_slice(b"+OK\r\n");
        clear_output(&mut output);
        assert!(output.is_empty() && output.capacity() <= 64 * 1024);
        let mut small = Vec::with_capacity(4096);
        clear_output(&mut small);
        assert_eq!(small.capacity(), 4096, "a small one is kept");
    }

    #[test]
    fn earliest_skips_unset() {
        let start = Instant::now();
        let a = Deadline::after(start, Duration::from_secs(5));
        let b = Deadline::after(start, Duration::from_secs(3));
        assert_eq!(earliest([Some(a), None, Some(b)]), Some(b.at()));
        assert_eq!(earliest([None, None]), None);
    }
}
