//! The server side of one SMTP connection, sans I/O: bytes in, replies out.
//!
//! [`Session::feed`] takes whatever the connection has read, parses every
//! complete command in it, appends each reply to the caller's output buffer
//! (so pipelined commands are answered with one write, RFC 2920) and returns
//! how many bytes it consumed and why it stopped: it needs more input, a
//! message is complete ([`Event::Message`]), or the client said QUIT. Bytes
//! it did not consume are an incomplete command line; the caller keeps them
//! and feeds them again with what it reads next.
//!
//! The session judges commands but not messages: at a message's end it stops
//! so that the caller can decide the reply (fault injection, numbering, the
//! optional delay), append it, and call `feed` again. The message stays
//! readable through [`Session::message`] until then.
//!
//! Three receivers, one per phase:
//! - command lines, ended by LF (a CR before it is dropped), at most
//!   [`Limits::max_line`] bytes: a longer line is discarded as it streams in
//!   and answered 500 once it ends;
//! - DATA, ended only by CRLF "." CRLF, dot-unstuffed; a bare LF is not a
//!   line end, so `LF . CRLF` is content, not the end (no SMTP smuggling);
//! - BDAT chunks, taken by count, unstuffed by nobody (RFC 3030).
//!
//! Every size is bounded: a message over [`Limits::max_message`] is read to
//! its end but not kept, then answered 552.

use std::sync::Arc;

use memchr::memchr;
use memchr::memmem::Finder;

use super::faults::Verdict;
use super::replies;

/// Longest command line, line end excluded (RFC 5321 asks for 512; clients
/// with many ESMTP parameters send more).
pub const MAX_LINE: usize = 4096;
/// Largest message, as received (after unstuffing); also advertised as SIZE.
pub const MAX_MESSAGE: usize = 64 * 1024 * 1024;
/// Most recipients per transaction; more are answered 452.
pub const MAX_RCPTS: usize = 1000;

/// Shrink the message buffer back to this after a message larger than
/// twice it, so that one huge message does not pin its memory for the rest
/// of the connection.
const KEEP_CAPACITY: usize = 1024 * 1024;

/// The bounds a session enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// See [`MAX_LINE`].
    pub max_line: usize,
    /// See [`MAX_MESSAGE`].
    pub max_message: usize,
    /// See [`MAX_RCPTS`].
    pub max_rcpts: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_line: MAX_LINE,
            max_message: MAX_MESSAGE,
            max_rcpts: MAX_RCPTS,
        }
    }
}

/// What every session of one sink shares: its limits and the replies that
/// name its host, built once.
#[derive(Debug)]
pub struct Profile {
    limits: Limits,
    greeting: Vec<u8>,
    ehlo: Vec<u8>,
    helo: Vec<u8>,
    /// Finds the only place where DATA can end or need unstuffing: a line
    /// starting with '.'.
    dot_line: Finder<'static>,
}

impl Profile {
    /// The profile of a sink named `hostname`.
    pub fn new(hostname: &str, limits: Limits) -> Self {
        Self {
            limits,
            greeting: replies::greeting(hostname),
            ehlo: replies::ehlo(hostname, limits.max_message),
            helo: replies::helo(hostname),
            dot_line: Finder::new(b"\r\n."),
        }
    }

    /// The 220 greeting, to be sent before anything is read.
    pub fn greeting(&self) -> &[u8] {
        &self.greeting
    }
}

/// Why [`Session::feed`] stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Every complete command was handled; feed more bytes.
    NeedMore,
    /// A message is complete and within limits: append its reply, then feed
    /// the rest of the input.
    Message,
    /// QUIT was answered (or came before): write the output and close.
    Quit,
}

/// A complete message, as [`Session::message`] shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageRef<'a> {
    /// The last EHLO/HELO argument ("" if none was given).
    pub helo: &'a str,
    /// The reverse path without angle brackets ("" for the null sender).
    pub mail_from: &'a str,
    /// Accepted recipients, in order, without angle brackets.
    pub recipients: &'a [String],
    /// The message: DATA unstuffed up to and including the CRLF before the
    /// final dot, or the BDAT chunks concatenated.
    pub data: &'a [u8],
}

/// Where the DATA receiver stands relative to line boundaries. Only what is
/// needed to spot CRLF "." across reads is remembered; the bytes themselves
/// are already in the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DataState {
    /// Inside a line.
    Mid,
    /// The last byte was a CR.
    Cr,
    /// Right after CRLF (or the DATA command).
    LineStart,
    /// A line began with '.', which was dropped.
    Dot,
    /// A line began with "." CR.
    DotCr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Command,
    /// Discarding an overlong command line up to its LF.
    SkipLine,
    Data(DataState),
    /// Inside a BDAT chunk: `left` of `size` octets still to come. When
    /// `refusal` is set the chunk is read and dropped, then answered with it.
    Chunk {
        left: u64,
        size: u64,
        last: bool,
        refusal: Option<&'static [u8]>,
    },
    Closed,
}

/// One connection's SMTP state: the phase, the envelope and the message.
/// Buffers are reused from one transaction to the next.
#[derive(Debug)]
pub struct Session {
    profile: Arc<Profile>,
    state: State,
    helo: String,
    /// MAIL was accepted and the transaction is open.
    in_transaction: bool,
    mail_from: String,
    recipients: Vec<String>,
    data: Vec<u8>,
    /// The message went over the limit; `data` is no longer filled.
    too_big: bool,
    /// BDAT was used in this transaction (DATA is then refused).
    chunked: bool,
    /// A message was handed out with [`Event::Message`]; the next `feed`
    /// closes its transaction.
    delivered: bool,
}

impl Session {
    /// A session that has sent its greeting and awaits the first command.
    pub fn new(profile: Arc<Profile>) -> Self {
        Self {
            profile,
            state: State::Command,
            helo: String::new(),
            in_transaction: false,
            mail_from: String::new(),
            recipients: Vec::new(),
            data: Vec::new(),
            too_big: false,
            chunked: false,
            delivered: false,
        }
    }

    /// Handles `input`, appending replies to `out`; returns the bytes
    /// consumed and why it stopped (see the module doc). `rcpt` decides the
    /// fate of each syntactically valid RCPT.
    pub fn feed(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        rcpt: &mut dyn FnMut() -> Verdict,
    ) -> (usize, Event) {
        if self.delivered {
            self.delivered = false;
            self.reset_transaction();
        }
        let max_line = self.profile.limits.max_line;
        let mut pos = 0;
        loop {
            let rest = &input[pos..];
            match self.state {
                State::Closed => return (input.len(), Event::Quit),
                State::Command => {
                    let Some(nl) = memchr(b'\n', rest) else {
                        // +1: the CR of a line of exactly max_line bytes.
                        if rest.len() > max_line + 1 {
                            self.state = State::SkipLine;
                            return (input.len(), Event::NeedMore);
                        }
                        return (pos, Event::NeedMore);
                    };
                    pos += nl + 1;
                    let line = &rest[..nl];
                    let line = line.strip_suffix(b"\r").unwrap_or(line);
                    if line.len() > max_line {
                        out.extend_from_slice(replies::LINE_TOO_LONG);
                    } else if let Some(event) = self.command(line, out, rcpt) {
                        return (pos, event);
                    }
                }
                State::SkipLine => match memchr(b'\n', rest) {
                    None => return (input.len(), Event::NeedMore),
                    Some(nl) => {
                        pos += nl + 1;
                        out.extend_from_slice(replies::LINE_TOO_LONG);
                        self.state = State::Command;
                    }
                },
                State::Data(ds) => {
                    let (used, done) = self.data_bytes(ds, rest);
                    pos += used;
                    if !done {
                        return (pos, Event::NeedMore);
                    }
                    self.state = State::Command;
                    if let Some(event) = self.end_of_message(out) {
                        return (pos, event);
                    }
                }
                State::Chunk {
                    left,
                    size,
                    last,
                    refusal,
                } => {
                    // `take` is at most rest.len(), so it fits a usize.
                    let take = left.min(rest.len() as u64) as usize;
                    if refusal.is_none() {
                        self.append(&rest[..take]);
                    }
                    pos += take;
                    if (take as u64) < left {
                        self.state = State::Chunk {
                            left: left - take as u64,
                            size,
                            last,
                            refusal,
                        };
                        return (pos, Event::NeedMore);
                    }
                    self.state = State::Command;
                    if let Some(reply) = refusal {
                        out.extend_from_slice(reply);
                    } else if !last {
                        replies::chunk_received(out, size);
                    } else if let Some(event) = self.end_of_message(out) {
                        return (pos, event);
                    }
                }
            }
        }
    }

    /// The message just announced by [`Event::Message`]; valid until the
    /// next [`feed`](Self::feed).
    pub fn message(&self) -> MessageRef<'_> {
        MessageRef {
            helo: &self.helo,
            mail_from: &self.mail_from,
            recipients: &self.recipients,
            data: &self.data,
        }
    }

    /// One complete command line (line end stripped). Returns an event when
    /// `feed` must stop after it.
    fn command(
        &mut self,
        line: &[u8],
        out: &mut Vec<u8>,
        rcpt: &mut dyn FnMut() -> Verdict,
    ) -> Option<Event> {
        let (verb, arg) = match memchr(b' ', line) {
            Some(i) => (&line[..i], line[i + 1..].trim_ascii()),
            None => (line, &[][..]),
        };
        let mut upper = [0u8; 4];
        if verb.len() == 4 {
            upper.copy_from_slice(verb);
            upper.make_ascii_uppercase();
        }
        let reply: &[u8] = match &upper {
            b"EHLO" | b"HELO" if arg.is_empty() => replies::SYNTAX,
            b"EHLO" | b"HELO" => {
                self.helo.clear();
                self.helo.push_str(&String::from_utf8_lossy(arg));
                self.reset_transaction();
                let reply = if upper == *b"EHLO" {
                    &self.profile.ehlo
                } else {
                    &self.profile.helo
                };
                out.extend_from_slice(reply);
                return None;
            }
            b"MAIL" => self.mail(arg),
            b"RCPT" => self.rcpt(arg, rcpt),
            b"DATA" => self.data_command(),
            b"BDAT" => self.bdat(arg),
            b"RSET" => {
                self.reset_transaction();
                replies::OK
            }
            b"NOOP" => replies::OK,
            b"QUIT" => {
                out.extend_from_slice(replies::BYE);
                self.state = State::Closed;
                return Some(Event::Quit);
            }
            _ => replies::UNKNOWN,
        };
        out.extend_from_slice(reply);
        None
    }

    /// `MAIL FROM:<path> [params]`; only SIZE= is looked at.
    fn mail(&mut self, arg: &[u8]) -> &'static [u8] {
        if self.in_transaction {
            return replies::NESTED_MAIL;
        }
        let Some((path, params)) = split_path(arg, b"FROM:") else {
            return replies::SYNTAX;
        };
        let announced = params
            .split(|&b| b == b' ')
            .filter_map(|p| {
                p.get(..5)
                    .filter(|k| k.eq_ignore_ascii_case(b"SIZE="))
                    .map(|_| &p[5..])
            })
            .next();
        if let Some(size) = announced {
            match parse_u64(size) {
                Some(n) if n > self.profile.limits.max_message as u64 => return replies::TOO_BIG,
                Some(_) => {}
                None => return replies::SYNTAX,
            }
        }
        self.reset_transaction();
        self.mail_from.push_str(&String::from_utf8_lossy(path));
        self.in_transaction = true;
        replies::MAIL_OK
    }

    /// `RCPT TO:<path> [params]`: any address is accepted unless a fault
    /// says otherwise.
    fn rcpt(&mut self, arg: &[u8], verdict: &mut dyn FnMut() -> Verdict) -> &'static [u8] {
        if !self.in_transaction {
            return replies::NEED_MAIL;
        }
        let Some((path, _)) = split_path(arg, b"TO:").filter(|(p, _)| !p.is_empty()) else {
            return replies::SYNTAX;
        };
        if self.recipients.len() >= self.profile.limits.max_rcpts {
            return replies::TOO_MANY_RCPTS;
        }
        match verdict() {
            Verdict::Tempfail => replies::RCPT_TEMPFAIL,
            Verdict::Permfail => replies::RCPT_PERMFAIL,
            Verdict::Accept => {
                self.recipients
                    .push(String::from_utf8_lossy(path).into_owned());
                replies::RCPT_OK
            }
        }
    }

    fn data_command(&mut self) -> &'static [u8] {
        if let Some(refusal) = self.refusal() {
            return refusal;
        }
        if self.chunked {
            return replies::DATA_AFTER_BDAT;
        }
        self.state = State::Data(DataState::LineStart);
        replies::START_DATA
    }

    /// `BDAT <size> [LAST]`. The reply comes once the chunk is read. A
    /// malformed size cannot be skipped, so its octets will be read as
    /// commands (and answered 500): the client's problem, as RFC 3030 says.
    fn bdat(&mut self, arg: &[u8]) -> &'static [u8] {
        let (size, last) = match memchr(b' ', arg) {
            None => (arg, false),
            Some(i) if arg[i + 1..].eq_ignore_ascii_case(b"LAST") => (&arg[..i], true),
            Some(_) => return replies::SYNTAX,
        };
        let Some(size) = parse_u64(size) else {
            return replies::SYNTAX;
        };
        let refusal = self.refusal();
        if refusal.is_none() {
            self.chunked = true;
        }
        self.state = State::Chunk {
            left: size,
            size,
            last,
            refusal,
        };
        // Nothing yet: the chunk comes first.
        b""
    }

    /// Why DATA/BDAT cannot start a message now, if it cannot.
    fn refusal(&self) -> Option<&'static [u8]> {
        if !self.in_transaction {
            Some(replies::NEED_MAIL)
        } else if self.recipients.is_empty() {
            Some(replies::NO_RECIPIENTS)
        } else {
            None
        }
    }

    /// The message is complete: refuse it here if it is too big, else hand
    /// it to the caller.
    fn end_of_message(&mut self, out: &mut Vec<u8>) -> Option<Event> {
        if self.too_big {
            out.extend_from_slice(replies::TOO_BIG);
            self.reset_transaction();
            return None;
        }
        self.delivered = true;
        Some(Event::Message)
    }

    /// Consumes DATA bytes from `input` starting in state `ds`; returns the
    /// bytes used and whether the final dot line was reached.
    fn data_bytes(&mut self, mut ds: DataState, input: &[u8]) -> (usize, bool) {
        let mut i = 0;
        while i < input.len() {
            ds = match ds {
                DataState::Mid => {
                    // Bulk path: everything up to the next CRLF "." is
                    // content, copied in one go.
                    let rest = &input[i..];
                    match self.profile.dot_line.find(rest) {
                        Some(k) => {
                            self.append(&rest[..k + 2]);
                            i += k + 3;
                            DataState::Dot
                        }
                        None => {
                            self.append(rest);
                            i = input.len();
                            if rest.ends_with(b"\r\n") {
                                DataState::LineStart
                            } else if rest.ends_with(b"\r") {
                                DataState::Cr
                            } else {
                                DataState::Mid
                            }
                        }
                    }
                }
                DataState::Cr => match input[i] {
                    b'\n' => {
                        self.append(b"\n");
                        i += 1;
                        DataState::LineStart
                    }
                    b'\r' => {
                        self.append(b"\r");
                        i += 1;
                        DataState::Cr
                    }
                    _ => DataState::Mid,
                },
                DataState::LineStart if input[i] == b'.' => {
                    i += 1;
                    DataState::Dot
                }
                DataState::LineStart => DataState::Mid,
                DataState::Dot if input[i] == b'\r' => {
                    i += 1;
                    DataState::DotCr
                }
                // A stuffed line: its leading dot stays dropped.
                DataState::Dot => DataState::Mid,
                DataState::DotCr if input[i] == b'\n' => return (i + 1, true),
                // "." CR then something else: content after all, minus the dot.
                DataState::DotCr => {
                    self.append(b"\r");
                    DataState::Cr
                }
            };
        }
        self.state = State::Data(ds);
        (i, false)
    }

    /// Adds message bytes unless the message is already over the limit.
    fn append(&mut self, bytes: &[u8]) {
        if self.too_big {
            return;
        }
        if self.data.len() + bytes.len() > self.profile.limits.max_message {
            self.too_big = true;
            self.data = Vec::new();
            return;
        }
        self.data.extend_from_slice(bytes);
    }

    fn reset_transaction(&mut self) {
        self.in_transaction = false;
        self.mail_from.clear();
        self.recipients.clear();
        self.data.clear();
        if self.data.capacity() > 2 * KEEP_CAPACITY {
            self.data.shrink_to(KEEP_CAPACITY);
        }
        self.too_big = false;
        self.chunked = false;
    }
}

/// Splits `FROM:<path> params` (or `TO:`): the path without brackets and the
/// parameters. Lenient about a space after the colon and missing brackets.
fn split_path<'a>(arg: &'a [u8], keyword: &[u8]) -> Option<(&'a [u8], &'a [u8])> {
    let head = arg.get(..keyword.len())?;
    if !head.eq_ignore_ascii_case(keyword) {
        return None;
    }
    let rest = arg[keyword.len()..].trim_ascii();
    if let Some(inner) = rest.strip_prefix(b"<") {
        let end = memchr(b'>', inner)?;
        Some((&inner[..end], inner[end + 1..].trim_ascii()))
    } else {
        let end = memchr(b' ', rest).unwrap_or(rest.len());
        (end > 0).then(|| (&rest[..end], rest[end..].trim_ascii()))
    }
}

/// Decimal digits only (no sign, no spaces), without overflow.
fn parse_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s.iter().fold(0, |n, &d| n * 10 + u64::from(d - b'0')))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a session did with some input: its output and the messages it
    /// delivered as (mail from, recipients, data).
    #[derive(Debug, Default, PartialEq)]
    struct Transcript {
        out: Vec<u8>,
        messages: Vec<(String, Vec<String>, Vec<u8>)>,
        quit: bool,
    }

    fn session(limits: Limits) -> Session {
        Session::new(Arc::new(Profile::new("sink.test", limits)))
    }

    /// Drives a session the way the connection does: input arrives in
    /// `chunks`, unconsumed bytes are kept for the next round, each message
    /// is answered "250 n".
    fn drive(
        limits: Limits,
        chunks: &[&[u8]],
        verdicts: &mut dyn FnMut() -> Verdict,
    ) -> Transcript {
        let mut s = session(limits);
        let mut t = Transcript::default();
        let mut buf = Vec::new();
        for chunk in chunks {
            buf.extend_from_slice(chunk);
            let mut pos = 0;
            loop {
                let (used, event) = s.feed(&buf[pos..], &mut t.out, verdicts);
                pos += used;
                match event {
                    Event::NeedMore => break,
                    Event::Quit => {
                        t.quit = true;
                        return t;
                    }
                    Event::Message => {
                        let m = s.message();
                        t.messages.push((
                            m.mail_from.to_owned(),
                            m.recipients.to_vec(),
                            m.data.to_vec(),
                        ));
                        t.out
                            .extend_from_slice(format!("250 {}\r\n", t.messages.len()).as_bytes());
                    }
                }
            }
            buf.drain(..pos);
        }
        t
    }

    fn all(input: &[u8]) -> Transcript {
        drive(Limits::default(), &[input], &mut || Verdict::Accept)
    }

    fn codes(out: &[u8]) -> Vec<u16> {
        String::from_utf8_lossy(out)
            .lines()
            .filter(|l| l.as_bytes().get(3) != Some(&b'-'))
            .map(|l| l[..3].parse().unwrap())
            .collect()
    }

    const SESSION: &[u8] = b"EHLO client.test\r\n\
        MAIL FROM:<a@example.org> SIZE=100 BODY=8BITMIME\r\n\
        RCPT TO:<b@example.net>\r\n\
        rcpt to: <c@example.net> NOTIFY=NEVER\r\n\
        DATA\r\n\
        Subject: x\r\n\r\n..dot\r\n.x\r\na\n.\r\nb\r.\r\n\r\n.\r\n\
        MAIL FROM:<>\r\nRCPT TO:<d@example.net>\r\n\
        BDAT 5\r\nab\r\n.\
        BDAT 3 LAST\r\nx\r\n\
        NOOP\r\nRSET\r\nVRFY x\r\nQUIT\r\nNOOP\r\n";

    #[test]
    fn a_whole_session() {
        let t = all(SESSION);
        assert!(t.quit);
        assert_eq!(
            codes(&t.out),
            [250, 250, 250, 250, 354, 250, 250, 250, 250, 250, 250, 250, 500, 221]
        );
        let text = String::from_utf8(t.out.clone()).unwrap();
        assert!(
            text.starts_with("250-sink.test\r\n250-PIPELINING\r\n"),
            "{text}"
        );
        for ext in [
            "SIZE 67108864",
            "8BITMIME",
            "SMTPUTF8",
            "ENHANCEDSTATUSCODES",
            "CHUNKING",
        ] {
            assert!(text.contains(ext), "{ext}");
        }
        assert!(text.contains("250 2.0.0 5 octets received\r\n"), "{text}");
        assert_eq!(t.messages.len(), 2);
        let (from, rcpts, data) = &t.messages[0];
        assert_eq!(from, "a@example.org");
        assert_eq!(rcpts, &["b@example.net", "c@example.net"]);
        assert_eq!(data, b"Subject: x\r\n\r\n.dot\r\nx\r\na\n.\r\nb\r.\r\n\r\n");
        assert_eq!(
            t.messages[1],
            (
                "".into(),
                vec!["d@example.net".into()],
                b"ab\r\n.x\r\n".to_vec()
            )
        );
    }

    #[test]
    fn split_at_every_byte_gives_the_same_result() {
        let whole = all(SESSION);
        for cut in 0..=SESSION.len() {
            let (a, b) = SESSION.split_at(cut);
            let split = drive(Limits::default(), &[a, b], &mut || Verdict::Accept);
            assert_eq!(split, whole, "cut at {cut}");
        }
        let bytes: Vec<&[u8]> = SESSION.chunks(1).collect();
        assert_eq!(
            drive(Limits::default(), &bytes, &mut || Verdict::Accept),
            whole
        );
    }

    #[test]
    fn data_ends_only_at_crlf_dot_crlf() {
        let start = b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n";
        let case = |body: &[u8]| {
            let t = all(&[&start[..], body].concat());
            t.messages.first().map(|m| m.2.clone())
        };
        // The DATA line's own CRLF counts: an immediate dot is an empty message.
        assert_eq!(case(b".\r\n"), Some(vec![]));
        assert_eq!(case(b"a\r\n.\r\n"), Some(b"a\r\n".to_vec()));
        // Bare LF or bare CR around the dot: content, still waiting.
        assert_eq!(case(b"a\n.\n"), None);
        assert_eq!(case(b"a\n.\r\n"), None);
        assert_eq!(case(b"a\r.\r\n"), None);
        assert_eq!(case(b"a\r\n.\n"), None);
        assert_eq!(case(b"a\r\n.\r"), None);
        // ". CR x" is a stuffed line after all.
        assert_eq!(case(b".\rx\r\n.\r\n"), Some(b"\rx\r\n".to_vec()));
        assert_eq!(case(b"..\r\n...\r\n.\r\n"), Some(b".\r\n..\r\n".to_vec()));
        assert_eq!(case(b"\r\r\n.\r\n"), Some(b"\r\r\n".to_vec()));
    }

    #[test]
    fn pipelined_transactions_each_deliver() {
        let one = b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\nhi\r\n.\r\n";
        let t = all(&one.repeat(3));
        assert_eq!(t.messages.len(), 3);
        assert_eq!(codes(&t.out), [250, 250, 354, 250].repeat(3));
        assert!(t.out.ends_with(b"250 3\r\n"));
    }

    #[test]
    fn overlong_lines_are_refused_and_skipped() {
        let limits = Limits {
            max_line: 16,
            ..Limits::default()
        };
        let long = [b"NOOP ".repeat(10), b"\r\nNOOP\r\n".to_vec()].concat();
        let t = drive(limits, &[&long], &mut || Verdict::Accept);
        assert_eq!(codes(&t.out), [500, 250]);
        // Streamed in pieces, the line is dropped before it ends.
        let pieces: Vec<&[u8]> = long.chunks(7).collect();
        let t = drive(limits, &pieces, &mut || Verdict::Accept);
        assert_eq!(codes(&t.out), [500, 250]);
        // Exactly max_line is fine.
        let t = drive(limits, &[b"NOOP 89012345678\r\n"], &mut || Verdict::Accept);
        assert_eq!(codes(&t.out), [250]);
    }

    #[test]
    fn oversize_messages_are_read_and_refused() {
        let limits = Limits {
            max_message: 10,
            ..Limits::default()
        };
        let env = b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\n";
        let input = [
            &env[..],
            b"DATA\r\n0123456789abc\r\n.\r\n",
            env,
            b"BDAT 6\r\n012345BDAT 6 LAST\r\n012345",
            env,
            b"DATA\r\n0123456\r\n.\r\nNOOP\r\n",
        ]
        .concat();
        let t = drive(limits, &[&input], &mut || Verdict::Accept);
        assert_eq!(
            codes(&t.out),
            [250, 250, 354, 552, 250, 250, 250, 552, 250, 250, 354, 250, 250]
        );
        assert_eq!(t.messages.len(), 1);
        let t = all(b"MAIL FROM:<a@x> SIZE=99999999999\r\nMAIL FROM:<a@x> SIZE=x\r\n");
        assert_eq!(codes(&t.out), [552, 501]);
    }

    #[test]
    fn sequence_errors() {
        let t = all(b"RCPT TO:<b@y>\r\nDATA\r\nBDAT 3\r\nabcMAIL FROM:<a@x>\r\nMAIL FROM:<a@x>\r\n\
            DATA\r\nRCPT TO:<>\r\nRCPT TO:<b@y>\r\nBDAT 1\r\nxDATA\r\nMAIL\r\nHELO\r\n\r\nBDAT x\r\n");
        assert_eq!(
            codes(&t.out),
            [503, 503, 503, 250, 503, 554, 501, 250, 250, 503, 503, 501, 500, 501]
        );
        assert!(t.messages.is_empty());
    }

    #[test]
    fn rcpt_verdicts_are_applied() {
        let mut n = 0;
        let mut verdicts = || {
            n += 1;
            [Verdict::Tempfail, Verdict::Permfail, Verdict::Accept][(n - 1) % 3]
        };
        let t = drive(
            Limits::default(),
            &[b"MAIL FROM:<a@x>\r\nRCPT TO:<1@y>\r\nRCPT TO:<2@y>\r\nDATA\r\nRCPT TO:<3@y>\r\nDATA\r\n.\r\n"],
            &mut verdicts,
        );
        assert_eq!(codes(&t.out), [250, 450, 550, 554, 250, 354, 250]);
        assert_eq!(t.messages[0].1, ["3@y"]);
    }

    #[test]
    fn recipients_are_bounded() {
        let limits = Limits {
            max_rcpts: 2,
            ..Limits::default()
        };
        let t = drive(
            limits,
            &[b"MAIL FROM:<a@x>\r\nRCPT TO:<1@y>\r\nRCPT TO:<2@y>\r\nRCPT TO:<3@y>\r\n"],
            &mut || Verdict::Accept,
        );
        assert_eq!(codes(&t.out), [250, 250, 250, 452]);
    }

    #[test]
    fn helo_and_ehlo_reset_the_transaction() {
        let t = all(b"MAIL FROM:<a@x>\r\nHELO h\r\nRCPT TO:<b@y>\r\n");
        assert_eq!(codes(&t.out), [250, 250, 503]);
        assert!(String::from_utf8_lossy(&t.out).contains("250 sink.test\r\n"));
    }
}
