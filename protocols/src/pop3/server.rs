//! The server session: [`Pop3Session`] and the types it hands the driver.
//!
//! # States and phases
//! The session is in one of RFC 1939's states: AUTHORIZATION until the
//! driver accepts credentials, then TRANSACTION, then UPDATE once QUIT asks
//! the driver to commit the deletions. Within a state it reads command
//! lines, or the AUTH continuation line, or waits for the driver:
//!
//! ```text
//!   AUTHORIZATION ──USER+PASS / AUTH PLAIN──▶ AwaitAuth ──succeeded──▶ TRANSACTION
//!        │    ▲                                   └──failed / locked──▶ AUTHORIZATION
//!        │    └── tls_established ◀── AwaitTls ◀──STLS──┘
//!   TRANSACTION ──RETR / TOP──▶ AwaitMessage ──message / missing──▶ TRANSACTION
//!               ──QUIT──▶ AwaitCommit (UPDATE) ──committed / failed──▶ Closed
//!   any ──QUIT before login, too many errors, shutdown, timeout──▶ Closed
//! ```
//!
//! Waiting phases consume nothing, which keeps pipelined commands (RFC 2449
//! PIPELINING) in order behind a question the driver has not answered yet.
//! The one exception is the wait for TLS: once the driver has taken the
//! `StartTls` event, every byte fed before [`Pop3Session::tls_established`]
//! is consumed and dropped, because it arrived in plaintext after STLS and
//! must never run as a command once TLS is up (the STARTTLS command
//! injection of CVE-2011-0411, RFC 2595 §4's "discard any knowledge").
//!
//! # Choices where the RFCs leave room
//! - Command lines may end in a bare LF.
//! - NOOP before login gets "not valid in this state", as RFC 1939 §4 lists
//!   it for TRANSACTION only.
//! - USER always answers `+OK`: whether a name exists is not revealed.
//! - A bare AUTH lists the mechanisms, as older clients expect.
//! - CAPA lists USER, SASL PLAIN and STLS only where they can be used now.
//! - After [`Pop3Config::max_errors`] counted errors the response to the
//!   last one is followed by a final `-ERR` and the session closes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::command::{self, Command};
use super::content;
use super::maildrop::{DeleteError, Maildrop, MessageInfo};
use super::replies::{self, Offer, Reply};
use crate::line::{Line, LineReader};
use crate::sasl::{self, Exchange, Failure, Mechanism, Step};
use crate::session::{Peer, Session, Timers};

/// The command-line limit RFC 2449 §4 sets: 255 octets including CRLF.
pub const MAX_COMMAND_LEN: usize = 255;

/// Answers waiting to be written past which [`Pop3Session::feed`] takes
/// no more commands.
pub const OUTPUT_HIGH_WATER: usize = 64 * 1024;

/// Limits and identity for POP3 sessions; shared by every session of a
/// listener.
#[derive(Debug, Clone)]
pub struct Pop3Config {
    /// Name used in the greeting and the closing responses.
    pub hostname: String,
    /// Longest command line accepted, CRLF included ([`MAX_COMMAND_LEN`]
    /// by default). AUTH continuation lines have their own, larger bound.
    pub max_line_len: usize,
    /// Counted errors (see [`Reply::counted`]) tolerated before the session
    /// is closed.
    pub max_errors: usize,
    /// STLS is offered (the driver has a certificate).
    pub stls_available: bool,
    /// USER/PASS and AUTH are allowed without TLS. When false they are
    /// refused with `-ERR [AUTH]` until STLS has succeeded.
    pub plaintext_auth_allowed: bool,
    /// Client silence after which the session ends (RFC 1939 §3: at least
    /// ten minutes). Measured from the last complete command, so a client
    /// that trickles a command byte by byte is cut too.
    pub idle_timeout: Duration,
    /// How long a client may stay without logging in, whatever it does
    /// (ten minutes by default, RFC 1939 §3's shortest autologout).
    pub login_timeout: Duration,
}

impl Default for Pop3Config {
    fn default() -> Self {
        Pop3Config {
            hostname: "localhost".into(),
            max_line_len: MAX_COMMAND_LEN,
            max_errors: 10,
            stls_available: false,
            plaintext_auth_allowed: true,
            idle_timeout: Duration::from_secs(600),
            login_timeout: Duration::from_secs(600),
        }
    }
}

fn config_plaintext(config: &Pop3Config) -> bool {
    config.plaintext_auth_allowed
}

/// Something the driver must act on. Each one pauses the session until the
/// driver gives the answer the variant names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Check these credentials (from USER and PASS, or AUTH PLAIN) and lock
    /// the maildrop. Answer with [`Pop3Session::auth_succeeded`],
    /// [`Pop3Session::auth_failed`], [`Pop3Session::maildrop_locked`] or
    /// [`Pop3Session::auth_unavailable`].
    Authenticate {
        /// How: `"USER"` (USER and PASS) or a SASL mechanism's name.
        mechanism: &'static str,
        /// The user name (PLAIN: the authentication identity).
        user: String,
        /// The password, exactly as sent.
        password: String,
    },
    /// Fetch a message for RETR or TOP. Answer with [`Pop3Session::message`]
    /// (the whole message; the session cuts it for TOP) or
    /// [`Pop3Session::message_missing`].
    Retrieve {
        /// 1-based number in the maildrop listed at login; never one marked
        /// deleted.
        number: usize,
        /// `Some(n)` for TOP: only the header and `n` body lines are sent.
        top_lines: Option<usize>,
    },
    /// QUIT in the TRANSACTION state: the session is in UPDATE. Remove
    /// these messages durably, release the maildrop lock, then answer with
    /// [`Pop3Session::committed`] or [`Pop3Session::commit_failed`].
    ///
    /// This is the only way messages are removed: a session that ends any
    /// other way (dropped connection, timeout, shutdown, too many errors)
    /// deletes nothing, and the driver just releases the lock.
    Commit {
        /// 1-based numbers marked by DELE, ascending; may be empty.
        deleted: Vec<usize>,
    },
    /// STLS was accepted. Write the output (`+OK begin TLS negotiation`),
    /// drop any input not consumed yet (it arrived in plaintext after STLS),
    /// run the TLS handshake, then call [`Pop3Session::tls_established`] and
    /// feed only what comes through TLS.
    StartTls,
}

/// What the session does with the next input bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading command lines.
    Command,
    /// Reading the client's answer to a SASL challenge.
    SaslResponse,
    /// An `Authenticate` event is out.
    AwaitAuth,
    /// A `Retrieve` event is out for this message.
    AwaitMessage { number: usize, top: Option<usize> },
    /// A `Commit` event is out (the UPDATE state).
    AwaitCommit,
    /// A `StartTls` event is out; input is dropped until TLS is up.
    AwaitTls,
    /// Nothing more is read.
    Closed,
}

/// RFC 1939's AUTHORIZATION and TRANSACTION states (UPDATE is
/// [`Phase::AwaitCommit`]).
#[derive(Debug)]
enum State {
    /// Not logged in; `user` is the name given by USER, waiting for PASS.
    Authorization { user: Option<String> },
    /// Logged in, with the maildrop the driver listed.
    Transaction(Maildrop),
}

/// One POP3 server session.
///
/// # Driving a session
/// 1. [`Self::new`] queues the greeting; write [`Self::output`].
/// 2. [`Self::feed`] the bytes read from the socket; it returns how many it
///    consumed. Keep the rest and feed it again after answering an event.
/// 3. After every `feed`, take [`Self::poll_event`] and answer it with the
///    method its variant names (the session consumes nothing until then).
/// 4. Write [`Self::output`], then [`Self::clear_output`].
/// 5. Once [`Self::is_closed`] and the output is written, close the socket
///    and release the maildrop lock, if one was taken.
///
/// The driver owns the clock: RFC 1939 §3 asks for an autologout timer of
/// at least 10 minutes of client silence, after which the driver calls
/// [`Self::timed_out`].
#[derive(Debug)]
pub struct Pop3Session {
    config: Arc<Pop3Config>,
    phase: Phase,
    state: State,
    /// Response bytes not yet taken by the driver.
    output: Vec<u8>,
    /// The question the driver has not polled yet.
    event: Option<Event>,
    /// The line being read; moved out while a line is executed.
    lines: LineReader,
    /// TLS is up (after STLS, or on an implicit-TLS port).
    tls: bool,
    /// The SASL exchange of an AUTH in progress.
    exchange: Option<Exchange>,
    /// Passwords may be sent before TLS.
    plaintext_auth: bool,
    /// Counted errors so far.
    errors: usize,
    timers: Timers,
}

impl Pop3Session {
    /// A new session; the greeting is already in [`Self::output`].
    pub fn new(config: Arc<Pop3Config>) -> Self {
        let mut output = Vec::with_capacity(256);
        replies::greeting(&config.hostname).write_to(&mut output);
        Pop3Session {
            phase: Phase::Command,
            state: State::Authorization { user: None },
            output,
            event: None,
            lines: LineReader::default(),
            tls: false,
            exchange: None,
            plaintext_auth: config_plaintext(&config),
            errors: 0,
            timers: Timers::default(),
            config,
        }
    }

    /// A session for the client `peer` describes: on a connection that is
    /// TLS from the start (POP3S, RFC 8314) passwords may be sent and STLS
    /// is not offered; `plaintext_auth` overrides the configuration's
    /// default for this client.
    pub fn with_peer(config: Arc<Pop3Config>, peer: Peer) -> Self {
        let mut session = Pop3Session::new(config);
        session.tls = peer.implicit_tls;
        session.plaintext_auth = peer.plaintext_auth;
        session
    }

    /// Logged in (the TRANSACTION state or after).
    pub fn is_authenticated(&self) -> bool {
        self.maildrop().is_some()
    }

    /// Consume as much input as possible; returns bytes consumed.
    ///
    /// Stops right after a line that raises an event, and consumes nothing
    /// while the event waits for its answer (except after `StartTls`, see
    /// [`Event::StartTls`]) or once the session is closed. Incomplete lines
    /// are kept inside the session, never more than the line limit. Stops
    /// too once [`OUTPUT_HIGH_WATER`] bytes of answers wait to be written
    /// (pipelined LIST or UIDL of a large maildrop): the rest is fed after
    /// they are, so what a client pipelines cannot make the output grow
    /// without bound.
    #[must_use = "unconsumed input must be fed again"]
    pub fn feed(&mut self, input: &[u8]) -> usize {
        let mut used = 0;
        while used < input.len() && self.event.is_none() && self.output.len() < OUTPUT_HIGH_WATER {
            used += match self.phase {
                Phase::Command | Phase::SaslResponse => self.read_line(&input[used..]),
                // Plaintext after STLS: consumed so the driver cannot run it
                // later, and dropped.
                Phase::AwaitTls => input.len() - used,
                Phase::AwaitAuth
                | Phase::AwaitMessage { .. }
                | Phase::AwaitCommit
                | Phase::Closed => break,
            };
        }
        used
    }

    /// Next event for the driver, if any.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.event.take()
    }

    /// Response bytes waiting to be written.
    pub fn output(&self) -> &[u8] {
        &self.output
    }

    /// Forget the output once written.
    pub fn clear_output(&mut self) {
        crate::session::clear_output(&mut self.output);
    }

    /// Answer `Authenticate`: the credentials are good and the maildrop is
    /// locked; `maildrop` lists its messages in order (they get numbers from
    /// 1). A message whose uid breaks [`MessageInfo::has_valid_uid`] makes
    /// the login fail with `-ERR [SYS/TEMP]`; the driver must then release
    /// the lock.
    pub fn auth_succeeded(&mut self, maildrop: Vec<MessageInfo>) {
        if !self.answer(Phase::AwaitAuth) {
            return;
        }
        if !maildrop.iter().all(MessageInfo::has_valid_uid) {
            return self.send(&replies::MAILDROP_UNUSABLE);
        }
        let maildrop = Maildrop::new(maildrop);
        let (count, octets) = maildrop.stat();
        self.state = State::Transaction(maildrop);
        // Logged in: only the idle timer is left.
        self.timers.limit_life(None);
        self.send(&replies::maildrop_ready(count, octets));
    }

    /// Answer `Authenticate`: bad credentials. Counts as an error.
    pub fn auth_failed(&mut self) {
        if self.answer(Phase::AwaitAuth) {
            self.reply(replies::INVALID_CREDENTIALS);
        }
    }

    /// Answer `Authenticate`: the credentials could not be checked or the
    /// maildrop not read, because the store failed (`-ERR [SYS/TEMP]`).
    /// Not counted as an error: the client did nothing wrong.
    pub fn auth_unavailable(&mut self) {
        if self.answer(Phase::AwaitAuth) {
            self.send(&replies::MAILDROP_UNUSABLE);
        }
    }

    /// Answer `Authenticate`: too many failed logins from this client or
    /// for this account; try again later (`-ERR [AUTH]`, not counted).
    pub fn auth_locked_out(&mut self) {
        if self.answer(Phase::AwaitAuth) {
            self.send(&replies::LOCKED_OUT);
        }
    }

    /// Answer `Authenticate`: good credentials, but another session holds
    /// the maildrop (`-ERR [IN-USE]`).
    pub fn maildrop_locked(&mut self) {
        if self.answer(Phase::AwaitAuth) {
            self.send(&replies::MAILDROP_LOCKED);
        }
    }

    /// Answer `Retrieve` with the whole message as stored. The session
    /// sends it dot-stuffed with CRLF line endings, cut for TOP. The whole
    /// response is queued in [`Self::output`] at once.
    pub fn message(&mut self, bytes: &[u8]) {
        let Phase::AwaitMessage { number, top } = self.phase else {
            return;
        };
        self.answer(self.phase);
        let heading = match (top, self.maildrop().and_then(|m| m.get(number))) {
            (Some(_), _) => replies::TOP_FOLLOWS,
            (None, Some(info)) => replies::message_follows(info.size),
            // Retrieve is only raised for a listed message.
            (None, None) => replies::message_follows(bytes.len() as u64),
        };
        heading.write_to(&mut self.output);
        content::write(&mut self.output, bytes, top);
    }

    /// Answer `Retrieve`: the store cannot serve the message now
    /// (`-ERR [SYS/TEMP]`).
    pub fn message_missing(&mut self) {
        if matches!(self.phase, Phase::AwaitMessage { .. }) && self.answer(self.phase) {
            self.send(&replies::MESSAGE_UNAVAILABLE);
        }
    }

    /// Answer `Retrieve`: the message is gone for good (expunged over IMAP
    /// since login): a plain `-ERR`, so the client does not retry it.
    pub fn message_gone(&mut self) {
        if matches!(self.phase, Phase::AwaitMessage { .. }) && self.answer(self.phase) {
            self.send(&replies::NO_SUCH_MESSAGE);
        }
    }

    /// Answer `Commit`: the deletions are durable. The session closes.
    pub fn committed(&mut self) {
        if self.answer(Phase::AwaitCommit) {
            let left = self.maildrop().map_or(0, |m| m.stat().0);
            self.close_with(&replies::committed(&self.config.hostname, left));
        }
    }

    /// Answer `Commit`: the deletions failed (`-ERR [SYS/TEMP]`). The
    /// session closes.
    pub fn commit_failed(&mut self) {
        if self.answer(Phase::AwaitCommit) {
            self.close_with(&replies::COMMIT_FAILED);
        }
    }

    /// Answer `StartTls`: the handshake is done. The session forgets what it
    /// learnt before (a USER name, a partial line) and waits for commands,
    /// without a new greeting (RFC 2595 §4).
    pub fn tls_established(&mut self) {
        if self.answer(Phase::AwaitTls) {
            self.tls = true;
            self.lines = LineReader::default();
            self.exchange = None;
            self.state = State::Authorization { user: None };
        }
    }

    /// Close because the client was silent too long. Nothing is deleted:
    /// the session never reaches UPDATE.
    pub fn timed_out(&mut self) {
        if !self.is_closed() {
            self.close_with(&replies::timeout(&self.config.hostname));
        }
    }

    /// Close for server shutdown (`-ERR [SYS/TEMP]`). Nothing is deleted,
    /// unless the driver has already taken a `Commit` event: that commit is
    /// the driver's to finish or abandon.
    pub fn shutdown(&mut self) {
        if !self.is_closed() {
            self.close_with(&replies::shutting_down(&self.config.hostname));
        }
    }

    /// True once the session is over.
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// Waiting for the driver's answer to an event.
    fn waiting(&self) -> bool {
        self.event.is_some()
            || matches!(
                self.phase,
                Phase::AwaitAuth
                    | Phase::AwaitMessage { .. }
                    | Phase::AwaitCommit
                    | Phase::AwaitTls
            )
    }

    /// True in the TRANSACTION state: logged in, QUIT not given yet.
    pub fn in_transaction(&self) -> bool {
        matches!(self.state, State::Transaction(_))
            && !matches!(self.phase, Phase::AwaitCommit | Phase::Closed)
    }

    // -- responses -----------------------------------------------------------

    /// Queue a response without judging it.
    fn send(&mut self, reply: &Reply) {
        reply.write_to(&mut self.output);
    }

    /// Queue a response, counting errors; the last one tolerated is
    /// followed by the final `-ERR` and the end of the session.
    fn reply(&mut self, reply: Reply) {
        self.send(&reply);
        if reply.counted {
            self.errors += 1;
            if self.errors >= self.config.max_errors {
                self.close_with(&replies::too_many_errors(&self.config.hostname));
            }
        }
    }

    /// Queue a final response and stop: no more input, events or answers.
    fn close_with(&mut self, reply: &Reply) {
        self.send(reply);
        self.phase = Phase::Closed;
        self.event = None;
        self.state = State::Authorization { user: None };
    }

    /// Raise an event and wait in `phase` for its answer.
    fn ask(&mut self, event: Event, phase: Phase) {
        self.event = Some(event);
        self.phase = phase;
    }

    /// If the session waits in `phase`, stop waiting and return true; an
    /// answer that comes at any other time is ignored.
    fn answer(&mut self, phase: Phase) -> bool {
        if self.phase != phase {
            return false;
        }
        self.phase = Phase::Command;
        self.event = None;
        true
    }

    fn maildrop(&self) -> Option<&Maildrop> {
        match &self.state {
            State::Transaction(maildrop) => Some(maildrop),
            State::Authorization { .. } => None,
        }
    }

    // -- lines ---------------------------------------------------------------

    /// Read (part of) a line and act on it once complete.
    fn read_line(&mut self, input: &[u8]) -> usize {
        // The reader is moved out so that a line borrowed from its buffer can
        // be executed while the rest of the session changes.
        let mut lines = std::mem::take(&mut self.lines);
        let sasl = self.phase == Phase::SaslResponse;
        let limit = if sasl {
            sasl::MAX_RESPONSE_LEN
        } else {
            self.config.max_line_len
        };
        let (used, line) = lines.read(input, limit);
        if line.is_some() {
            // A whole line (or a too-long one) came: the idle timer restarts.
            self.timers.expect_request(self.config.idle_timeout);
        }
        match (line, sasl) {
            (Some(Line::Complete(line)), false) => self.execute(line),
            (Some(Line::Complete(line)), true) => self.sasl_response(line),
            (Some(Line::TooLong), _) => {
                // A too-long SASL response ends the exchange too.
                self.phase = Phase::Command;
                self.exchange = None;
                self.reply(replies::LINE_TOO_LONG);
            }
            (None, _) => {}
        }
        self.lines = lines;
        used
    }

    /// The client's answer to a SASL challenge.
    fn sasl_response(&mut self, line: &[u8]) {
        self.phase = Phase::Command;
        let Some(mut exchange) = self.exchange.take() else {
            return;
        };
        match std::str::from_utf8(line) {
            Ok(response) => {
                let step = exchange.respond(response);
                self.sasl_step(exchange, step);
            }
            Err(_) => self.reply(replies::BAD_BASE64),
        }
    }

    /// Go on with an exchange: challenge, ask the driver, or refuse.
    fn sasl_step(&mut self, exchange: Exchange, step: Step) {
        match step {
            Step::Challenge(challenge) => {
                replies::write_continuation(&mut self.output, &challenge);
                self.exchange = Some(exchange);
                self.phase = Phase::SaslResponse;
            }
            Step::Done(credentials) => {
                self.state = State::Authorization { user: None };
                let event = Event::Authenticate {
                    mechanism: credentials.mechanism.name(),
                    user: credentials.user,
                    password: credentials.password,
                };
                self.ask(event, Phase::AwaitAuth);
            }
            Step::Failed(Failure::Cancelled) => self.send(&replies::AUTH_CANCELLED),
            Step::Failed(Failure::BadBase64) => self.reply(replies::BAD_BASE64),
            Step::Failed(Failure::Malformed) => self.reply(replies::BAD_PLAIN),
            Step::Failed(Failure::AuthzidRefused) => self.reply(replies::AUTHZID_REFUSED),
        }
    }

    // -- commands ------------------------------------------------------------

    fn execute(&mut self, line: &[u8]) {
        let (verb, arg) = match command::split(line) {
            Ok(split) => split,
            Err(error) => return self.reply(error.into_reply()),
        };
        if !verb.allowed(self.maildrop().is_some()) {
            return self.reply(replies::WRONG_STATE);
        }
        let command = match command::parse(verb, arg) {
            Ok(command) => command,
            Err(reply) => return self.reply(reply),
        };
        match command {
            Command::User(name) => self.user(name),
            Command::Pass(password) => self.pass(password),
            Command::Auth { mechanism, initial } => self.auth(mechanism, initial),
            Command::Stls => self.stls(),
            Command::Capa => {
                let authorization = self.maildrop().is_none();
                let offer = Offer {
                    login: authorization && self.plaintext_ok(),
                    stls: authorization && self.config.stls_available && !self.tls,
                };
                replies::write_capa(&mut self.output, offer);
            }
            Command::Quit => self.quit(),
            Command::Stat => {
                let (count, octets) = self.maildrop().map_or((0, 0), Maildrop::stat);
                self.send(&replies::stat(count, octets));
            }
            Command::List(number) => self.list(number),
            Command::Uidl(number) => self.uidl(number),
            Command::Retr(number) => self.retrieve(number, None),
            Command::Top(number, lines) => self.retrieve(number, Some(lines)),
            Command::Dele(number) => self.dele(number),
            Command::Noop => self.send(&replies::OK),
            Command::Rset => {
                if let State::Transaction(maildrop) = &mut self.state {
                    maildrop.reset();
                    let (count, octets) = maildrop.stat();
                    self.send(&replies::maildrop_ready(count, octets));
                }
            }
        }
    }

    /// Passwords may be sent now: plaintext is allowed, or TLS is up.
    fn plaintext_ok(&self) -> bool {
        self.plaintext_auth || self.tls
    }

    fn user(&mut self, name: &str) {
        if !self.plaintext_ok() {
            return self.send(&replies::TLS_REQUIRED);
        }
        self.state = State::Authorization {
            user: Some(name.to_owned()),
        };
        self.send(&replies::SEND_PASS);
    }

    fn pass(&mut self, password: &str) {
        if !self.plaintext_ok() {
            return self.send(&replies::TLS_REQUIRED);
        }
        let State::Authorization { user } = &mut self.state else {
            return;
        };
        // USER is good for one PASS, whatever its outcome.
        let Some(user) = user.take() else {
            return self.reply(replies::NEED_USER);
        };
        let event = Event::Authenticate {
            mechanism: "USER",
            user,
            password: password.to_owned(),
        };
        self.ask(event, Phase::AwaitAuth);
    }

    fn auth(&mut self, mechanism: Option<&str>, initial: Option<&str>) {
        let plaintext_ok = self.plaintext_ok();
        let Some(mechanism) = mechanism else {
            return replies::write_mechanisms(&mut self.output, plaintext_ok);
        };
        let Some(mechanism) = Mechanism::from_name(mechanism) else {
            return self.send(&replies::UNSUPPORTED_MECHANISM);
        };
        if !plaintext_ok {
            return self.send(&replies::TLS_REQUIRED);
        }
        let (exchange, step) = Exchange::start(mechanism, initial);
        self.sasl_step(exchange, step);
    }

    fn stls(&mut self) {
        if !self.config.stls_available || self.tls {
            return self.send(&replies::STLS_UNAVAILABLE);
        }
        self.send(&replies::BEGIN_TLS);
        self.ask(Event::StartTls, Phase::AwaitTls);
    }

    fn quit(&mut self) {
        match &self.state {
            State::Authorization { .. } => {
                self.close_with(&replies::signing_off(&self.config.hostname));
            }
            State::Transaction(maildrop) => {
                let deleted = maildrop.marked();
                self.ask(Event::Commit { deleted }, Phase::AwaitCommit);
            }
        }
    }

    fn list(&mut self, number: Option<usize>) {
        // Fields, not methods: the maildrop is read while the output grows.
        let State::Transaction(maildrop) = &self.state else {
            return;
        };
        let out = &mut self.output;
        match number {
            Some(number) => match maildrop.get(number) {
                Some(info) => replies::scan(number, info.size).write_to(out),
                None => replies::NO_SUCH_MESSAGE.write_to(out),
            },
            None => {
                let (count, octets) = maildrop.stat();
                replies::listing(count, octets).write_to(out);
                for (number, info) in maildrop.live() {
                    replies::write_scan_line(out, number, info.size);
                }
                out.extend_from_slice(replies::END);
            }
        }
    }

    fn uidl(&mut self, number: Option<usize>) {
        let State::Transaction(maildrop) = &self.state else {
            return;
        };
        let out = &mut self.output;
        match number {
            Some(number) => match maildrop.get(number) {
                Some(info) => replies::unique_id(number, &info.uid).write_to(out),
                None => replies::NO_SUCH_MESSAGE.write_to(out),
            },
            None => {
                replies::UIDL_FOLLOWS.write_to(out);
                for (number, info) in maildrop.live() {
                    replies::write_uid_line(out, number, &info.uid);
                }
                out.extend_from_slice(replies::END);
            }
        }
    }

    fn retrieve(&mut self, number: usize, top: Option<usize>) {
        if self.maildrop().and_then(|m| m.get(number)).is_none() {
            return self.send(&replies::NO_SUCH_MESSAGE);
        }
        let event = Event::Retrieve {
            number,
            top_lines: top,
        };
        self.ask(event, Phase::AwaitMessage { number, top });
    }

    fn dele(&mut self, number: usize) {
        let State::Transaction(maildrop) = &mut self.state else {
            return;
        };
        let reply = match maildrop.delete(number) {
            Ok(()) => replies::deleted(number),
            Err(DeleteError::AlreadyDeleted) => replies::already_deleted(number),
            Err(DeleteError::NoSuchMessage) => replies::NO_SUCH_MESSAGE,
        };
        self.send(&reply);
    }
}

impl Session for Pop3Session {
    type Event = Event;

    fn receive(&mut self, now: Instant, input: &[u8]) -> usize {
        self.handle_timeout(now);
        self.feed(input)
    }

    fn poll_event(&mut self) -> Option<Event> {
        Pop3Session::poll_event(self)
    }

    fn output(&self) -> &[u8] {
        Pop3Session::output(self)
    }

    fn clear_output(&mut self) {
        Pop3Session::clear_output(self)
    }

    fn is_closed(&self) -> bool {
        Pop3Session::is_closed(self)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        if self.waiting() || self.is_closed() {
            return None;
        }
        self.timers.next(None)
    }

    fn output_written(&mut self, now: Instant) {
        // RFC 1939 §3: the autologout timer measures the client's
        // inactivity, and it cannot act while its answer is still going out.
        if self.timers.started() && !self.waiting() && !self.is_closed() {
            self.timers.tell(now);
            self.timers.expect_request(self.config.idle_timeout);
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        if self.timers.tell(now) {
            self.timers.expect_request(self.config.idle_timeout);
            if self.maildrop().is_none() {
                self.timers.limit_life(Some(self.config.login_timeout));
            }
        }
        if !self.waiting() && self.timers.expired(None) {
            self.timed_out();
        }
    }

    fn shutdown(&mut self) {
        Pop3Session::shutdown(self)
    }
}
