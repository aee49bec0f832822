//! What the protocol checkers ([`crate::smtp::check`],
//! [`crate::smtp::client::check`], [`crate::pop3::check`]) share: the
//! engine's driving loop for a server session ([`drive`]), the
//! trace it records, the three-way cut comparison, the token mapping that
//! steers random bytes, a dependency-free pseudo-random generator, and the
//! fuzz smoke tests' case loop.
//!
//! Compiled for tests and with the `fuzzing` feature only.
//!
//! # What [`drive`] checks (a violation panics)
//! - `feed` consumes no more than it was given, and stops early only at a
//!   question for the driver or at the end of the session;
//! - at most one question is out at a time;
//! - every piece of output passes the protocol's own check;
//! - a closed session consumes nothing and says nothing more.
//!
//! Whether a question holds back the input is the protocol's answer
//! closure's business ([`assert_waits`]): POP3's STLS, for one, swallows it.

use std::fmt::Debug;
use std::panic::{self, RefUnwindSafe, UnwindSafe};
use std::sync::Arc;

/// A sans-IO session as a driver sees it: bytes in, bytes out, and events
/// for the driver. Implemented (by delegation, in the checkers) for the
/// SMTP and POP3 server sessions, which [`drive`] takes, and for the SMTP
/// client session.
pub trait Session {
    /// What the session asks the driver.
    type Event;
    /// Give the session input; returns how much it consumed.
    fn feed(&mut self, input: &[u8]) -> usize;
    /// The next question for the driver, if any.
    fn poll_event(&mut self) -> Option<Self::Event>;
    /// Bytes the session has to send.
    fn output(&self) -> &[u8];
    /// Forget the output, as sent.
    fn clear_output(&mut self);
    /// Whether the session is over.
    fn is_closed(&self) -> bool;
}

/// Implement [`Session`] for `$session` by calling its inherent methods.
macro_rules! impl_session {
    ($session:ty, $event:ty) => {
        impl $crate::check::Session for $session {
            type Event = $event;
            fn feed(&mut self, input: &[u8]) -> usize {
                <$session>::feed(self, input)
            }
            fn poll_event(&mut self) -> Option<$event> {
                <$session>::poll_event(self)
            }
            fn output(&self) -> &[u8] {
                <$session>::output(self)
            }
            fn clear_output(&mut self) {
                <$session>::clear_output(self)
            }
            fn is_closed(&self) -> bool {
                <$session>::is_closed(self)
            }
        }
    };
}
pub(crate) use impl_session;

/// Everything a session said while driven.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trace<E> {
    /// All bytes the session wrote, greeting included.
    pub output: Vec<u8>,
    /// Every event, in order.
    pub events: Vec<E>,
    /// Input bytes consumed.
    pub consumed: usize,
    /// The session closed.
    pub closed: bool,
}

impl<E> Default for Trace<E> {
    fn default() -> Self {
        Trace {
            output: Vec::new(),
            events: Vec::new(),
            consumed: 0,
            closed: false,
        }
    }
}

impl<E> Trace<E> {
    /// Move the session's output to the end of the trace; returns it.
    pub fn take_output<S: Session<Event = E> + ?Sized>(&mut self, session: &mut S) -> &[u8] {
        let start = self.output.len();
        self.output.extend_from_slice(session.output());
        session.clear_output();
        &self.output[start..]
    }
}

/// Drive `session` with `pieces` of input, one `feed` (or more) per piece,
/// as an engine would: keep what it did not consume, check every piece of
/// output with `check_output`, and hand each question to `answer` together
/// with the earlier events and the input still unread. `answer` checks the
/// question and answers it. Panics if the session breaks a promise (see the
/// module docs).
pub fn drive<'a, S: Session>(
    session: &mut S,
    pieces: impl IntoIterator<Item = &'a [u8]>,
    check_output: fn(&[u8]) -> Result<(), String>,
    mut answer: impl FnMut(&mut S, &S::Event, &[S::Event], &[u8]),
) -> Trace<S::Event> {
    let mut trace = Trace::default();
    let take_output = |session: &mut S, trace: &mut Trace<S::Event>| {
        if let Err(problem) = check_output(trace.take_output(session)) {
            panic!("{problem}");
        }
    };
    take_output(session, &mut trace);
    // Bytes given to the session but not consumed yet, as a driver keeps them.
    let mut unread: Vec<u8> = Vec::new();
    for piece in pieces {
        unread.extend_from_slice(piece);
        loop {
            let used = session.feed(&unread);
            assert!(
                used <= unread.len(),
                "consumed {used} of {} bytes",
                unread.len()
            );
            let stopped_early = used < unread.len();
            unread.drain(..used);
            trace.consumed += used;
            take_output(session, &mut trace);
            let Some(event) = session.poll_event() else {
                if stopped_early && used > 0 && !session.is_closed() {
                    // It stopped to let its answers go out first (they
                    // were just taken): the rest is fed now, as the
                    // engine's driver does.
                    continue;
                }
                assert!(
                    !stopped_early || session.is_closed(),
                    "feed stopped early with no question and no close"
                );
                break;
            };
            assert!(session.poll_event().is_none(), "two questions out at once");
            answer(session, &event, &trace.events, &unread);
            trace.events.push(event);
            take_output(session, &mut trace);
        }
        if session.is_closed() {
            break;
        }
    }
    if session.is_closed() {
        trace.closed = true;
        assert_eq!(session.feed(b"NOOP\r\n"), 0, "a closed session read input");
        assert!(session.output().is_empty(), "a closed session replied");
    }
    trace
}

/// Panic unless `session`, with a question out, leaves `unread` alone until
/// the driver answers.
pub fn assert_waits<S: Session>(session: &mut S, unread: &[u8]) {
    assert_eq!(session.feed(unread), 0, "consumed input before the answer");
}

/// Run `drive` on `input` whole, cut at pseudo-random points chosen by
/// `seed`, and byte by byte; after each of the last two, `same(run, whole,
/// how)` compares it with the whole run (`how` names the cutting). Returns
/// the whole run.
pub fn check_cuts<'a, T>(
    input: &'a [u8],
    seed: u64,
    mut drive: impl FnMut(Vec<&'a [u8]>) -> T,
    mut same: impl FnMut(&T, &T, &str),
) -> T {
    let whole = drive(vec![input]);
    let mut rng = XorShift::new(seed);
    let mut cuts: Vec<usize> = (0..rng.below(8))
        .map(|_| rng.below(input.len() + 1))
        .collect();
    cuts.sort_unstable();
    same(
        &drive(split_at(input, &cuts)),
        &whole,
        &format!("cuts {cuts:?}"),
    );
    same(&drive(input.chunks(1).collect()), &whole, "byte by byte");
    whole
}

/// [`check_cuts`], panicking unless all three runs are equal.
pub fn assert_same_when_cut<'a, T: PartialEq + Debug>(
    input: &'a [u8],
    seed: u64,
    drive: impl FnMut(Vec<&'a [u8]>) -> T,
) -> T {
    check_cuts(input, seed, drive, |run, whole, how| {
        assert_eq!(run, whole, "{how}")
    })
}

/// Cut `input` at `cuts` (positions out of order or range are skipped).
pub fn split_at<'a>(input: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut pieces = Vec::with_capacity(cuts.len() + 1);
    let mut start = 0;
    for &cut in cuts {
        if cut > start && cut < input.len() {
            pieces.push(&input[start..cut]);
            start = cut;
        }
    }
    pieces.push(&input[start..]);
    pieces
}

/// Map each byte to one of `tokens` (byte modulo their number), joined.
/// Random bytes mapped onto a protocol's pieces reach deep into a session;
/// raw random bytes rarely get past the first line.
pub fn map_tokens(tokens: &[&[u8]], bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() * 16);
    for &b in bytes {
        out.extend_from_slice(tokens[b as usize % tokens.len()]);
    }
    out
}

/// A tiny deterministic pseudo-random generator (xorshift64), so tests and
/// fuzz targets need no dependency.
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    /// A generator from any seed (zero included).
    pub fn new(seed: u64) -> Self {
        XorShift(seed ^ 0x9E37_79B9_7F4A_7C15 | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }

    /// Fewer than `max_len` random bytes (none when `max_len` is 0).
    pub fn bytes(&mut self, max_len: usize) -> Vec<u8> {
        (0..self.below(max_len))
            .map(|_| self.next_u64() as u8)
            .collect()
    }
}

/// The fuzz smoke tests' loop: `cases` cases from a generator seeded with
/// `seed` (fixed, so failures reproduce). Each case draws its bytes with
/// [`XorShift::bytes`]`(max_len)` and hands them, with its number and the
/// generator for further draws, to `case`.
pub fn random_cases(
    seed: u64,
    cases: usize,
    max_len: usize,
    mut case: impl FnMut(usize, Vec<u8>, &mut XorShift),
) {
    let mut rng = XorShift::new(seed);
    for number in 0..cases {
        let bytes = rng.bytes(max_len);
        case(number, bytes, &mut rng);
    }
}

/// `run()`, or if it panics, a panic with `describe()`: the values that
/// reproduce the failing case.
pub fn reproducible<T>(
    describe: impl FnOnce() -> String,
    run: impl FnOnce() -> T + UnwindSafe,
) -> T {
    match panic::catch_unwind(run) {
        Ok(value) => value,
        Err(_) => panic!("{}", describe()),
    }
}

/// The server smoke tests' check of one case: `check_input` of `input`
/// with `small_config` of a draw from `rng` and the next draw as the cut
/// seed; a failure names the case and those values.
pub fn check_random_case<C: Debug + RefUnwindSafe, T>(
    case: usize,
    input: &[u8],
    rng: &mut XorShift,
    small_config: fn(u64) -> C,
    check_input: fn(Arc<C>, &[u8], u64) -> T,
) -> T {
    let config = Arc::new(small_config(rng.next_u64()));
    let seed = rng.next_u64();
    reproducible(
        || {
            format!(
                "case {case}: config {config:?}, seed {seed}, input {:?}",
                String::from_utf8_lossy(input)
            )
        },
        || check_input(config.clone(), input, seed),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_at_skips_useless_cuts() {
        assert_eq!(split_at(b"abcd", &[0, 2, 1, 9]), [&b"ab"[..], b"cd"]);
    }
}
