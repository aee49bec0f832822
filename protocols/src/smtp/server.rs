//! The server session: [`ServerSession`] and the types it hands the driver.
//!
//! # How a session reads its input
//! A session is always in one [`Phase`]: reading command lines, reading
//! message content (DATA or a BDAT chunk), waiting for the driver's answer to
//! an event, or closed. `feed` hands each slice of input to the receiver of
//! the current phase, which consumes what it can and may switch the phase:
//!
//! ```text
//!   Command ──DATA──▶ Data ──CRLF.CRLF──▶ AwaitMessage ──stored/failed──▶ Command
//!      │  ──BDAT n──▶ Chunk ──n octets──▶ (LAST: AwaitMessage, else Command)
//!      └──RCPT──▶ AwaitRecipient ──accept/reject──▶ Command
//!   any ──QUIT, too many errors, shutdown, timeout──▶ Closed
//! ```
//!
//! Waiting phases consume nothing, which is how pipelined input stays in
//! order behind a decision the driver has not made yet.
//!
//! # Choices where the RFCs leave room
//! - Command lines may end in a bare LF (as Postfix allows); message content
//!   may not (see [`super::data`]).
//! - EXPN gets 502: list membership is not ours to reveal.
//! - RCPT after the first BDAT chunk gets 503: the envelope is closed once the
//!   content starts.
//! - A BDAT message whose last line lacks CRLF gets one appended, so
//!   [`Transaction::data`] always ends in CRLF.
//! - After [`ServerConfig::max_errors`] protocol errors the reply to the last
//!   one is followed by 421 and the session closes.

use std::sync::Arc;

use super::address::{self, Path, PathError};
use super::bdat::{Chunk, LineEndings};
use super::body::Body;
use super::command::{self, Command};
use super::data::DataReceiver;
use super::params::{self, MailParams};
use super::replies::{self, Reply};
use crate::line::{Line, LineReader};

/// Limits and identity for server sessions; shared by every session of a listener.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Name used in the greeting and the EHLO reply.
    pub hostname: String,
    /// Longest command line accepted, CRLF included (RFC 5321 §4.5.3.1.4 minimum: 512).
    pub max_line_len: usize,
    /// Largest message accepted, in bytes after dot-unstuffing; advertised as SIZE.
    pub max_message_size: usize,
    /// Most recipients per transaction; more get 452 4.5.3.
    pub max_recipients: usize,
    /// Bad commands tolerated before the session is closed with 421.
    pub max_errors: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            hostname: "localhost".into(),
            max_line_len: 2048,
            max_message_size: 50 * 1024 * 1024,
            max_recipients: 1000,
            max_errors: 20,
        }
    }
}

/// The BODY= parameter of MAIL FROM (RFC 6152).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BodyType {
    /// No BODY= given, or BODY=7BIT.
    #[default]
    SevenBit,
    /// BODY=8BITMIME.
    EightBitMime,
}

/// A complete mail transaction, handed to the driver at end of DATA or BDAT LAST.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Transaction {
    /// The EHLO/HELO argument.
    pub helo: String,
    /// True when the client greeted with EHLO.
    pub esmtp: bool,
    /// Reverse path without angle brackets; empty for the null sender.
    pub mail_from: String,
    /// Forward paths without angle brackets, in the order accepted.
    pub recipients: Vec<String>,
    /// BODY= parameter.
    pub body_type: BodyType,
    /// SMTPUTF8 parameter given.
    pub smtputf8: bool,
    /// True when the body came by BDAT (CHUNKING) rather than DATA.
    pub chunked: bool,
    /// Message bytes, dot-unstuffed, every line ending CRLF.
    pub data: Vec<u8>,
}

/// Something the driver must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// RCPT TO for this address passed syntax checks; answer with
    /// [`ServerSession::accept_recipient`] or [`ServerSession::reject_recipient`].
    Recipient {
        /// Address without angle brackets.
        address: String,
    },
    /// A message is complete; make it durable, then answer with
    /// [`ServerSession::message_stored`] or [`ServerSession::message_failed`].
    Message(Transaction),
}

/// What the session does with the next input bytes.
#[derive(Debug)]
enum Phase {
    /// Reading command lines.
    Command,
    /// Reading message content after 354.
    Data(DataReceiver),
    /// Reading the octets of a BDAT chunk.
    Chunk(Chunk),
    /// A `Recipient` event is out; the address waits here for the answer.
    AwaitRecipient(String),
    /// A `Message` event is out; waiting for stored or failed.
    AwaitMessage,
    /// Nothing more is read.
    Closed,
}

/// The client's HELO or EHLO.
#[derive(Debug)]
struct Greeting {
    name: String,
    esmtp: bool,
}

/// A mail transaction from MAIL until its message is handed out or it is reset.
#[derive(Debug)]
struct OpenTransaction {
    /// The envelope so far; `data` is filled only when the message is complete.
    tx: Transaction,
    /// SIZE= of MAIL, used to pre-size the body buffer.
    size_hint: usize,
    /// Set by the first BDAT: the line-ending check that spans its chunks.
    /// Being set also closes the envelope (no RCPT) and rules out DATA.
    chunks: Option<LineEndings>,
}

/// One SMTP server session.
#[derive(Debug)]
pub struct ServerSession {
    config: Arc<ServerConfig>,
    phase: Phase,
    /// Reply bytes not yet taken by the driver.
    output: Vec<u8>,
    /// The question the driver has not polled yet.
    event: Option<Event>,
    /// The command line being read; moved out while a line is executed.
    lines: LineReader,
    greeting: Option<Greeting>,
    open: Option<OpenTransaction>,
    /// Content of the message being received; its buffer is reused.
    body: Body,
    /// Protocol errors so far (see [`Reply::is_protocol_error`]).
    errors: usize,
}

impl ServerSession {
    /// A new session; the 220 greeting is already in [`Self::output`].
    pub fn new(config: Arc<ServerConfig>) -> Self {
        let mut output = Vec::with_capacity(512);
        replies::greeting(&config.hostname).write_to(&mut output);
        ServerSession {
            config,
            phase: Phase::Command,
            output,
            event: None,
            lines: LineReader::default(),
            greeting: None,
            open: None,
            body: Body::default(),
            errors: 0,
        }
    }

    /// Consume as much input as possible; returns bytes consumed.
    ///
    /// Everything is consumed unless the session stops at a question for the
    /// driver (see [`Self::poll_event`]) or closes; the driver keeps the rest
    /// and feeds it again after answering. Incomplete command lines are kept
    /// inside the session (at most `max_line_len` bytes).
    #[must_use = "unconsumed input must be fed again"]
    pub fn feed(&mut self, input: &[u8]) -> usize {
        let mut used = 0;
        while used < input.len() {
            let rest = &input[used..];
            used += match &mut self.phase {
                Phase::Command => self.read_command(rest),
                Phase::Data(receiver) => {
                    let (n, done) = receiver.ingest(rest, &mut self.body);
                    if done {
                        self.phase = Phase::Command;
                        self.finish_message();
                    }
                    n
                }
                Phase::Chunk(chunk) => {
                    let octets = chunk.take(rest);
                    let (keep, complete) = (chunk.refusal.is_none(), chunk.is_complete());
                    if keep {
                        self.keep_chunk_octets(octets);
                    }
                    if complete {
                        self.finish_chunk();
                    }
                    octets.len()
                }
                Phase::AwaitRecipient(_) | Phase::AwaitMessage | Phase::Closed => break,
            };
        }
        used
    }

    /// Next event for the driver, if any.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.event.take()
    }

    /// Reply bytes waiting to be written.
    pub fn output(&self) -> &[u8] {
        &self.output
    }

    /// Forget the output once written.
    pub fn clear_output(&mut self) {
        self.output.clear();
    }

    /// Answer a `Recipient` event: 250.
    pub fn accept_recipient(&mut self) {
        if let Some(address) = self.take_pending_recipient() {
            if let Some(open) = &mut self.open {
                open.tx.recipients.push(address);
            }
            self.send(&replies::RECIPIENT_OK);
        }
    }

    /// Answer a `Recipient` event with this refusal.
    pub fn reject_recipient(&mut self, reply: Reply) {
        if self.take_pending_recipient().is_some() {
            self.send(&reply);
        }
    }

    /// Answer a `Message` event: stored durably under `queue_id`.
    pub fn message_stored(&mut self, queue_id: &str) {
        if self.take_pending_message() {
            self.send(&replies::queued(queue_id));
        }
    }

    /// Answer a `Message` event: not stored.
    pub fn message_failed(&mut self, reply: Reply) {
        if self.take_pending_message() {
            self.send(&reply);
        }
    }

    /// Give back the `data` buffer of a [`Transaction`] once it is stored, so
    /// the next message reuses its capacity instead of growing a new one.
    /// Optional; buffers over 1 MiB are dropped rather than kept.
    pub fn recycle(&mut self, buffer: Vec<u8>) {
        self.body.recycle(buffer);
    }

    /// True while a transaction (MAIL..end of data) is open or awaiting an answer.
    pub fn in_transaction(&self) -> bool {
        self.open.is_some() || matches!(self.phase, Phase::AwaitMessage)
    }

    /// True while the client is sending message content (DATA or BDAT chunk).
    pub fn in_data(&self) -> bool {
        matches!(self.phase, Phase::Data(_) | Phase::Chunk(_))
    }

    /// Close for server shutdown: queues 421 4.3.2.
    pub fn shutdown(&mut self) {
        if !self.is_closed() {
            self.close_with(&replies::shutting_down(&self.config.hostname));
        }
    }

    /// Close because the client was silent too long: queues 421 4.4.2.
    pub fn timed_out(&mut self) {
        if !self.is_closed() {
            self.close_with(&replies::timeout(&self.config.hostname));
        }
    }

    /// True once the session is over (QUIT, fatal error, shutdown, timeout).
    pub fn is_closed(&self) -> bool {
        matches!(self.phase, Phase::Closed)
    }

    // -- replies -------------------------------------------------------------

    /// Queue a reply without judging it (the driver's answers, positive ones).
    fn send(&mut self, reply: &Reply) {
        reply.write_to(&mut self.output);
    }

    /// Queue the session's own answer to a command, counting protocol errors;
    /// the last one tolerated is followed by 421 and the end of the session.
    fn reply(&mut self, reply: Reply) {
        self.send(&reply);
        if reply.is_protocol_error() {
            self.errors += 1;
            if self.errors >= self.config.max_errors {
                self.close_with(&replies::too_many_errors(&self.config.hostname));
            }
        }
    }

    /// Queue a final reply and stop: no more input, events or answers.
    fn close_with(&mut self, reply: &Reply) {
        self.send(reply);
        self.phase = Phase::Closed;
        self.event = None;
        self.open = None;
        self.body.discard();
    }

    // -- commands ------------------------------------------------------------

    /// Read (part of) a command line and run it once complete.
    fn read_command(&mut self, input: &[u8]) -> usize {
        // The reader is moved out so that a line borrowed from its buffer can
        // be executed while the rest of the session changes.
        let mut lines = std::mem::take(&mut self.lines);
        let (used, line) = lines.read(input, self.config.max_line_len);
        match line {
            Some(Line::Complete(line)) => self.execute(line),
            Some(Line::TooLong) => self.reply(replies::LINE_TOO_LONG),
            None => {}
        }
        self.lines = lines;
        used
    }

    fn execute(&mut self, line: &[u8]) {
        let command = match command::parse(line) {
            Ok(command) => command,
            Err(error) => return self.reply(error.into_reply()),
        };
        match command {
            Command::Ehlo(name) => self.hello(name, true),
            Command::Helo(name) => self.hello(name, false),
            Command::Mail(arg) => self.mail(arg),
            Command::Rcpt(arg) => self.rcpt(arg),
            Command::Data => self.data(),
            Command::Bdat { size, last } => self.bdat(size, last),
            Command::Rset => {
                self.open = None;
                self.reply(replies::OK);
            }
            Command::Noop => self.reply(replies::OK),
            Command::Quit => self.close_with(&replies::BYE),
            Command::Vrfy => self.reply(replies::CANNOT_VRFY),
            Command::Expn => self.reply(replies::EXPN_DISABLED),
            Command::Help => self.reply(replies::HELP),
            Command::StartTls | Command::Auth => self.reply(replies::NOT_IMPLEMENTED),
        }
    }

    /// EHLO and HELO: (re)start the session, dropping any transaction.
    fn hello(&mut self, name: &str, esmtp: bool) {
        self.open = None;
        self.greeting = Some(Greeting {
            name: name.to_owned(),
            esmtp,
        });
        let host = &self.config.hostname;
        let reply = if esmtp {
            replies::ehlo(host, self.config.max_message_size)
        } else {
            replies::helo(host)
        };
        self.reply(reply);
    }

    fn mail(&mut self, arg: &str) {
        let Some(greeting) = &self.greeting else {
            return self.reply(replies::NEED_HELO);
        };
        if self.open.is_some() {
            return self.reply(replies::NESTED_MAIL);
        }
        let (path, param_text) = match address::parse_path(arg) {
            Ok((Path::Postmaster(_), _)) | Err(PathError::Syntax) => {
                return self.reply(replies::BAD_SENDER)
            }
            Err(PathError::TooLong) => return self.reply(replies::SENDER_TOO_LONG),
            Ok(parsed) => parsed,
        };
        if !param_text.is_empty() && !greeting.esmtp {
            return self.reply(replies::PARAMS_NEED_EHLO);
        }
        let params = match MailParams::parse(param_text, self.config.max_message_size) {
            Ok(params) => params,
            Err(reply) => return self.reply(reply),
        };
        let mail_from = path.as_str();
        if !params.smtputf8 && !mail_from.is_ascii() {
            return self.reply(replies::NEEDS_SMTPUTF8);
        }
        let tx = Transaction {
            helo: greeting.name.clone(),
            esmtp: greeting.esmtp,
            mail_from: mail_from.to_owned(),
            body_type: params.body,
            smtputf8: params.smtputf8,
            ..Transaction::default()
        };
        self.open = Some(OpenTransaction {
            tx,
            size_hint: params.size.unwrap_or(0),
            chunks: None,
        });
        self.reply(replies::SENDER_OK);
    }

    /// RCPT: check the path, then ask the driver (the session pauses).
    fn rcpt(&mut self, arg: &str) {
        let Some(open) = &self.open else {
            return self.reply(replies::NEED_MAIL);
        };
        if open.chunks.is_some() {
            return self.reply(replies::RCPT_AFTER_BDAT);
        }
        let (path, param_text) = match address::parse_path(arg) {
            Ok((Path::Null, _)) | Err(PathError::Syntax) => {
                return self.reply(replies::BAD_RECIPIENT)
            }
            Err(PathError::TooLong) => return self.reply(replies::RECIPIENT_TOO_LONG),
            Ok(parsed) => parsed,
        };
        if !param_text.is_empty() {
            let checked = if open.tx.esmtp {
                params::check_rcpt(param_text)
            } else {
                Err(replies::PARAMS_NEED_EHLO)
            };
            if let Err(reply) = checked {
                return self.reply(reply);
            }
        }
        let address = path.as_str();
        if !open.tx.smtputf8 && !address.is_ascii() {
            return self.reply(replies::NEEDS_SMTPUTF8);
        }
        if open.tx.recipients.len() >= self.config.max_recipients {
            return self.reply(replies::TOO_MANY_RECIPIENTS);
        }
        self.event = Some(Event::Recipient {
            address: address.to_owned(),
        });
        self.phase = Phase::AwaitRecipient(address.to_owned());
    }

    fn data(&mut self) {
        let Some(open) = &self.open else {
            return self.reply(replies::NEED_MAIL);
        };
        if open.chunks.is_some() {
            return self.reply(replies::DATA_AFTER_BDAT);
        }
        if open.tx.recipients.is_empty() {
            return self.reply(replies::NO_VALID_RECIPIENTS);
        }
        self.body
            .begin(self.config.max_message_size, open.size_hint);
        self.phase = Phase::Data(DataReceiver::default());
        self.reply(replies::START_DATA);
    }

    /// BDAT: decide the chunk's fate now, answer once its octets are read.
    fn bdat(&mut self, size: u64, last: bool) {
        let refusal = match &mut self.open {
            None => Some(replies::NEED_MAIL),
            Some(open) if open.tx.recipients.is_empty() => Some(replies::NO_VALID_RECIPIENTS),
            Some(open) => {
                if open.chunks.is_none() {
                    open.chunks = Some(LineEndings::default());
                    self.body
                        .begin(self.config.max_message_size, open.size_hint);
                }
                self.body
                    .reserve(usize::try_from(size).unwrap_or(usize::MAX));
                None
            }
        };
        self.phase = Phase::Chunk(Chunk::new(size, last, refusal));
        if size == 0 {
            self.finish_chunk();
        }
    }

    // -- message content -----------------------------------------------------

    /// Octets of an accepted chunk: check line endings, then keep them.
    fn keep_chunk_octets(&mut self, octets: &[u8]) {
        if let Some(endings) = self.open.as_mut().and_then(|open| open.chunks.as_mut()) {
            // Once seen, a bare line ending stays; until then every octet is
            // checked, even of a message already too big (see `body`).
            if !self.body.has_bare_line_ending() && !endings.scan(octets) {
                self.body.bare_line_ending();
            }
        }
        self.body.extend(octets);
    }

    /// All octets of a chunk are in: answer it, or end the message at LAST.
    fn finish_chunk(&mut self) {
        let Phase::Chunk(chunk) = std::mem::replace(&mut self.phase, Phase::Command) else {
            return;
        };
        if let Some(reply) = chunk.refusal {
            if chunk.last {
                self.open = None;
            }
            return self.reply(reply);
        }
        if self.body.is_too_big() {
            // RFC 3030 §4.2: the transaction has failed; later chunks
            // already in the pipeline find no transaction and are dropped.
            self.open = None;
            self.body.discard();
            return self.reply(replies::MESSAGE_TOO_BIG);
        }
        if !chunk.last {
            return self.reply(replies::chunk_received(chunk.size));
        }
        let ends_clean = self
            .open
            .as_ref()
            .and_then(|open| open.chunks.as_ref())
            .is_none_or(LineEndings::finish);
        if !ends_clean {
            self.body.bare_line_ending();
        }
        self.finish_message();
    }

    /// The message is complete: hand the transaction to the driver (and
    /// wait for its answer), or refuse it. The transaction ends either way.
    fn finish_message(&mut self) {
        let outcome = self.body.finish();
        match (outcome, self.open.take()) {
            (Ok(mut data), Some(open)) => {
                let chunked = open.chunks.is_some();
                if chunked && !data.is_empty() && !data.ends_with(b"\r\n") {
                    data.extend_from_slice(b"\r\n");
                }
                self.event = Some(Event::Message(Transaction {
                    chunked,
                    data,
                    ..open.tx
                }));
                self.phase = Phase::AwaitMessage;
            }
            (Err(reply), _) => self.reply(reply),
            // Content is only ever received inside a transaction.
            (Ok(_), None) => {}
        }
    }

    // -- answers from the driver ---------------------------------------------

    /// The address of the recipient waiting for an answer, if one is.
    fn take_pending_recipient(&mut self) -> Option<String> {
        let Phase::AwaitRecipient(address) = &mut self.phase else {
            return None;
        };
        let address = std::mem::take(address);
        self.phase = Phase::Command;
        self.event = None;
        Some(address)
    }

    /// True if a message was waiting for an answer (now given).
    fn take_pending_message(&mut self) -> bool {
        if !matches!(self.phase, Phase::AwaitMessage) {
            return false;
        }
        self.phase = Phase::Command;
        self.event = None;
        true
    }
}
