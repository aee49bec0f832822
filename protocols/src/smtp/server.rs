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
//!      │  ──RCPT──▶ AwaitRecipient ──accept/reject──▶ Command
//!      │  ──AUTH──▶ SaslResponse ──credentials──▶ AwaitAuth ──succeeded/failed──▶ Command
//!      └──STARTTLS──▶ AwaitTls ──tls_established──▶ Command (a fresh session)
//!   any ──QUIT, too many errors, shutdown, deadline──▶ Closed
//! ```
//!
//! Waiting phases consume nothing, which is how pipelined input stays in
//! order behind a decision the driver has not made yet. The one exception
//! is the wait for TLS: everything fed after STARTTLS and before
//! [`ServerSession::tls_established`] arrived in plaintext and is consumed
//! and dropped, so that it can never run as a command under TLS (the
//! command injection of CVE-2011-0411).
//!
//! # Deadlines
//! A command line must be whole within `command_timeout` of the previous
//! one, however its bytes trickle in; message content gets `data_timeout`
//! plus the time its bytes earn at `min_data_rate`. Untrusted clients'
//! sessions end after `max_session`; on the submission port a client must
//! authenticate within `login_timeout`. See [`crate::session`].
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

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::address::{self, Path, PathError};
use super::bdat::{Chunk, LineEndings};
use super::body::Body;
use super::command::{self, Command, ParseError};
use super::data::DataReceiver;
use super::dsn_request::{RecipientRequest, Ret};
use super::params::{self, MailParams};
use super::replies::{self, EhloOffer, Reply};
use crate::line::{Line, LineReader};
use crate::sasl::{self, Credentials, Exchange, Failure, Mechanism, Step};
use crate::session::{Deadline, Session, Timers};

/// Replies waiting to be written past which [`ServerSession::feed`] takes
/// no more commands.
/// What a stranger's size claim may reserve ahead of its bytes.
const UNTRUSTED_RESERVE: usize = 64 * 1024;

pub const OUTPUT_HIGH_WATER: usize = 64 * 1024;

/// Whether a command line is EHLO or HELO with an argument.
fn is_hello(line: &[u8]) -> bool {
    line.len() > 5
        && (line[..4].eq_ignore_ascii_case(b"EHLO") || line[..4].eq_ignore_ascii_case(b"HELO"))
        && line[4] == b' '
}

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
    /// Bad commands and failed AUTHs tolerated before the session is closed
    /// with 421.
    pub max_errors: usize,
    /// Recipients the driver may refuse (unknown users, relaying denied)
    /// before an untrusted session is closed with 421: probing for valid
    /// addresses is not free.
    pub max_rejected_recipients: usize,
    /// A command line must be whole within this of the previous one
    /// (RFC 5321 §4.5.3.2.7: at least five minutes).
    pub command_timeout: Duration,
    /// Message content gets this long (RFC 5321 §4.5.3.2.6: three
    /// minutes per block) ...
    pub data_timeout: Duration,
    /// ... plus one second per this many bytes received (0: no extension),
    /// so a large message at a fair rate has time, and a trickle is cut.
    pub min_data_rate: u32,
    /// The whole life of an untrusted client's session (not from a relay
    /// network, not authenticated); `None`: no cap.
    pub max_session: Option<Duration>,
    /// On the submission port, AUTH must succeed within this.
    pub login_timeout: Duration,
    /// STARTTLS is offered (the driver has a certificate).
    pub tls_available: bool,
    /// Which MAIL FROM an authenticated client may use.
    pub sender_policy: SenderPolicy,
    /// Under [`SenderPolicy::Own`], the addresses besides its own that
    /// an account may send from.
    pub sender_addresses: SenderAddresses,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            hostname: "localhost".into(),
            max_line_len: 2048,
            max_message_size: 50 * 1024 * 1024,
            max_recipients: 1000,
            max_errors: 20,
            max_rejected_recipients: 20,
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(180),
            min_data_rate: 1024,
            max_session: Some(Duration::from_secs(3600)),
            login_timeout: Duration::from_secs(180),
            tls_available: false,
            sender_policy: SenderPolicy::Own,
            sender_addresses: SenderAddresses::default(),
        }
    }
}

/// Which reverse paths an authenticated client may give (Postfix's
/// `reject_sender_login_mismatch` and its looser forms). The null sender
/// is always allowed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SenderPolicy {
    /// The account's own address only.
    #[default]
    Own,
    /// Any address at the account's domain.
    Domain,
    /// Any address (a trusted application that sends for many).
    Any,
}

/// The addresses an account owns besides its name, as its mail finds it:
/// the name with a detail (`alice+lists@`), and the aliases that lead to
/// it (`info@` when `info@` goes to alice, alone or with others: Postfix's
/// `smtpd_sender_login_maps` built from the alias table). A domain's
/// catch-all gives no one its every address.
#[derive(Clone, Default)]
pub struct SenderAddresses {
    /// `smtp.recipient_delimiter`; empty: no details.
    pub delimiter: String,
    /// An alias address, lowercased, and the accounts it leads to
    /// (lowercased, without their detail).
    pub aliases: HashMap<String, Vec<String>>,
    /// Whether an address is an account of its own (`john-admin@` beside
    /// `john@` with the delimiter `-`): then it is that account's alone,
    /// whatever its detail-less form. `None`: no account has a delimiter
    /// in its name.
    pub is_account: Option<AccountCheck>,
}

/// The driver's look-up of whether an address is an account.
#[derive(Clone)]
pub struct AccountCheck(pub Arc<dyn Fn(&str) -> bool + Send + Sync>);

// A look-up holds nothing a panic could leave half changed.
impl std::panic::RefUnwindSafe for AccountCheck {}
impl std::panic::UnwindSafe for AccountCheck {}

impl std::fmt::Debug for SenderAddresses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SenderAddresses")
            .field("delimiter", &self.delimiter)
            .field("aliases", &self.aliases)
            .field("is_account", &self.is_account.is_some())
            .finish()
    }
}

impl SenderAddresses {
    /// Whether `sender`'s mail is `account`'s (both lowercased; `sender`
    /// is not `account` itself). An alias decides by its own targets;
    /// another account is its own; else the address without its detail.
    fn owned_by(&self, account: &str, sender: &str) -> bool {
        let leads_here = |address: &str| {
            self.aliases
                .get(address)
                .map(|accounts| accounts.iter().any(|a| a == account))
        };
        if let Some(decided) = leads_here(sender) {
            return decided;
        }
        if self.is_account.as_ref().is_some_and(|is| (is.0)(sender)) {
            return false;
        }
        let Some(base) = super::address::without_detail(sender, &self.delimiter) else {
            return false;
        };
        base == account || leads_here(&base) == Some(true)
    }
}

impl SenderPolicy {
    /// Whether `account` may send as `sender` (both `local@domain`);
    /// `owned` are the addresses besides its name that are its own.
    pub fn allows(self, account: &str, sender: &str, owned: &SenderAddresses) -> bool {
        if sender.is_empty() {
            return true;
        }
        let domain = |a: &str| a.rsplit_once('@').map(|(_, d)| d.to_owned());
        match self {
            SenderPolicy::Any => true,
            // Folded as account names are, non-ASCII letters too.
            SenderPolicy::Own => {
                let (account, sender) = (account.to_lowercase(), sender.to_lowercase());
                sender == account || owned.owned_by(&account, &sender)
            }
            SenderPolicy::Domain => match (domain(sender), domain(account)) {
                (Some(s), Some(a)) => s.eq_ignore_ascii_case(&a),
                _ => false,
            },
        }
    }
}

/// What the driver knows about the client when the session starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Peer {
    /// The submission port (RFC 6409): AUTH before MAIL.
    pub submission: bool,
    /// TLS from the first byte (RFC 8314, port 465).
    pub implicit_tls: bool,
    /// AUTH may be used before TLS (loopback clients, by configuration).
    pub plaintext_auth: bool,
    /// The client may relay without AUTH (a relay network): untrusted
    /// limits do not apply.
    pub trusted: bool,
    /// The connection speaks LMTP (RFC 2033): LHLO instead of HELO and
    /// EHLO, and at the end of each message one answer per recipient.
    pub lmtp: bool,
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
    /// DSN's RET= (RFC 3461 §4.3).
    pub ret: Option<Ret>,
    /// DSN's ENVID= (RFC 3461 §4.4), as given (xtext).
    pub envid: Option<String>,
    /// DSN's NOTIFY= and ORCPT= for each recipient, in the order of
    /// `recipients`.
    pub recipient_requests: Vec<RecipientRequest>,
    /// True when the body came by BDAT (CHUNKING) rather than DATA.
    pub chunked: bool,
    /// The message came over TLS.
    pub tls: bool,
    /// The account that authenticated, if one did.
    pub authenticated: Option<String>,
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
    /// AUTH carried these credentials; check them and answer with
    /// [`ServerSession::auth_succeeded`], [`ServerSession::auth_failed`],
    /// [`ServerSession::auth_locked_out`] or [`ServerSession::auth_unavailable`].
    Authenticate(Credentials),
    /// STARTTLS was accepted. Write the output (`220 Ready to start TLS`),
    /// drop any input not consumed yet (it came in plaintext after the
    /// command), run the handshake, then call
    /// [`ServerSession::tls_established`] and feed only what comes through
    /// TLS. If the handshake fails, close the connection.
    StartTls,
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
    /// Reading the client's answer to a SASL challenge.
    SaslResponse(Exchange),
    /// An `Authenticate` event is out.
    AwaitAuth,
    /// A `StartTls` event is out; input is dropped until TLS is up.
    AwaitTls,
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
    /// The DSN parameters of the RCPT waiting for an answer.
    pending_request: RecipientRequest,
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
    /// Recipients the driver refused so far.
    rejected: usize,
    peer: Peer,
    /// TLS is on (implicit, or after STARTTLS).
    tls: bool,
    /// The account that authenticated.
    account: Option<String>,
    timers: Timers,
    /// When the content of the current message (or BDAT chunk) began.
    content_started: Option<Instant>,
    /// When content last arrived.
    content_progress: Option<Instant>,
    /// Octets of the message received before that (earlier chunks): each
    /// chunk has its own allowance, so a pause between chunks, which the
    /// command timeout governs, does not eat into the next chunk's.
    content_base: usize,
    /// A BDAT transaction failed: chunks the client had already pipelined
    /// behind the failed one find no transaction, and are read and refused
    /// without counting as the client's errors (RFC 3030 §3). Until MAIL,
    /// RSET, or a LAST chunk.
    chunks_failed: bool,
    /// The server is stopping: close once the transaction is done.
    stopping: bool,
    /// LMTP: the recipients of the message awaiting its answer, each of
    /// which gets one.
    answering: Vec<String>,
}

impl ServerSession {
    /// A new session for an untrusted client on the MX port, without TLS;
    /// the 220 greeting is already in [`Self::output`].
    pub fn new(config: Arc<ServerConfig>) -> Self {
        Self::with_peer(config, Peer::default())
    }

    /// A new session for the client `peer` describes.
    pub fn with_peer(config: Arc<ServerConfig>, peer: Peer) -> Self {
        let mut output = Vec::with_capacity(512);
        match peer.lmtp {
            true => replies::lmtp_greeting(&config.hostname).write_to(&mut output),
            false => replies::greeting(&config.hostname).write_to(&mut output),
        }
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
            rejected: 0,
            tls: peer.implicit_tls,
            peer,
            account: None,
            timers: Timers::default(),
            content_started: None,
            content_progress: None,
            content_base: 0,
            chunks_failed: false,
            stopping: false,
            answering: Vec::new(),
        }
    }

    /// Consume as much input as possible; returns bytes consumed.
    ///
    /// Everything is consumed unless the session stops at a question for the
    /// driver (see [`Self::poll_event`]) or closes; the driver keeps the rest
    /// and feeds it again after answering. Incomplete command lines are kept
    /// inside the session (at most `max_line_len` bytes). It stops too once
    /// [`OUTPUT_HIGH_WATER`] bytes of replies wait to be written: the rest is
    /// fed after they are, so a client pipelining thousands of EHLOs (each
    /// answer twenty times its command) cannot make the output grow without
    /// bound while it reads slowly.
    #[must_use = "unconsumed input must be fed again"]
    pub fn feed(&mut self, input: &[u8]) -> usize {
        if self.in_data() && !input.is_empty() {
            // Content arrived: the idle bound of `content_deadline` starts
            // again (the rate bound does not).
            self.content_progress = self.timers.now();
        }
        let mut used = 0;
        while used < input.len() {
            let rest = &input[used..];
            used += match &mut self.phase {
                Phase::Command | Phase::SaslResponse(_)
                    if self.output.len() >= OUTPUT_HIGH_WATER =>
                {
                    break
                }
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
                Phase::SaslResponse(_) => self.read_command(rest),
                // The driver drops what it has not fed yet when it takes
                // the event; anything fed after that, before the handshake
                // is done, is plaintext after STARTTLS: consumed, dropped.
                Phase::AwaitTls if self.event.is_some() => break,
                Phase::AwaitTls => rest.len(),
                Phase::AwaitRecipient(_)
                | Phase::AwaitMessage
                | Phase::AwaitAuth
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

    /// Reply bytes waiting to be written.
    pub fn output(&self) -> &[u8] {
        &self.output
    }

    /// Forget the output once written.
    pub fn clear_output(&mut self) {
        crate::session::clear_output(&mut self.output);
    }

    /// Answer a `Recipient` event: 250.
    pub fn accept_recipient(&mut self) {
        if let Some(address) = self.take_pending_recipient() {
            self.add_recipient(address);
        }
    }

    /// Answer a `Recipient` event: 250, the recipient being `address`
    /// (the same mailbox as the client wrote it, in the form the driver
    /// keeps: `postmaster@[192.0.2.1]`, our own address literal, is
    /// `postmaster@our.host`).
    pub fn accept_recipient_as(&mut self, address: &str) {
        if self.take_pending_recipient().is_some() {
            self.add_recipient(address.to_owned());
        }
    }

    fn add_recipient(&mut self, address: String) {
        if let Some(open) = &mut self.open {
            open.tx.recipients.push(address);
            let request = std::mem::take(&mut open.pending_request);
            open.tx.recipient_requests.push(request);
        }
        self.send(&replies::RECIPIENT_OK);
    }

    /// Answer a `Recipient` event with this refusal. An untrusted client
    /// refused permanently too often is cut off.
    pub fn reject_recipient(&mut self, reply: Reply) {
        if self.take_pending_recipient().is_some() {
            self.send(&reply);
            if reply.code >= 500 && !self.is_trusted() {
                self.rejected += 1;
                if self.rejected >= self.config.max_rejected_recipients {
                    self.close_with(&replies::too_many_rejected_recipients(
                        &self.config.hostname,
                    ));
                }
            }
        }
    }

    /// Answer a `Message` event: stored durably under `queue_id`. Over
    /// LMTP every recipient hears so.
    pub fn message_stored(&mut self, queue_id: &str) {
        self.message_stored_except(queue_id, &[]);
    }

    /// Answer a `Message` event: stored durably under `queue_id`, but
    /// refused for these recipients (a user's filter said no). Over LMTP
    /// each of those gets its refusal (RFC 2033 §4.2); over SMTP the
    /// message was taken, and the one reply says so.
    pub fn message_stored_except(&mut self, queue_id: &str, refused: &[(String, Reply)]) {
        if self.take_pending_message() {
            match self.peer.lmtp {
                true => {
                    for recipient in std::mem::take(&mut self.answering) {
                        match refused.iter().find(|(address, _)| *address == recipient) {
                            Some((_, reply)) => self.send(reply),
                            None => self.send(&replies::lmtp_delivered(&recipient, queue_id)),
                        }
                    }
                }
                false => self.send(&replies::queued(queue_id)),
            }
            self.stop_if_asked();
        }
    }

    /// Answer a `Message` event: not stored. Over LMTP every recipient
    /// hears so.
    pub fn message_failed(&mut self, reply: Reply) {
        if self.take_pending_message() {
            let answers = match self.peer.lmtp {
                true => std::mem::take(&mut self.answering).len(),
                false => 1,
            };
            for _ in 0..answers {
                self.send(&reply);
            }
            self.stop_if_asked();
        }
    }

    /// Answer `Authenticate`: the credentials are good; `account` is the
    /// canonical account name. Limits for untrusted clients end.
    pub fn auth_succeeded(&mut self, account: &str) {
        if self.answer(Phase::AwaitAuth) {
            self.account = Some(account.to_owned());
            self.timers.limit_life(None);
            self.send(&replies::AUTH_SUCCEEDED);
        }
    }

    /// Answer `Authenticate`: wrong name or password (counts as an error).
    pub fn auth_failed(&mut self) {
        if self.answer(Phase::AwaitAuth) {
            self.send(&replies::AUTH_FAILED);
            self.count_error();
        }
    }

    /// Answer `Authenticate`: this client or account is locked out for a
    /// while after too many failures (counts as an error).
    pub fn auth_locked_out(&mut self) {
        if self.answer(Phase::AwaitAuth) {
            self.send(&replies::AUTH_LOCKED_OUT);
            self.count_error();
        }
    }

    /// Answer `Authenticate`: the credentials could not be checked now.
    pub fn auth_unavailable(&mut self) {
        if self.answer(Phase::AwaitAuth) {
            self.send(&replies::AUTH_UNAVAILABLE);
        }
    }

    /// Answer `StartTls`: the handshake is done. The session starts over
    /// (RFC 3207 §4.2): the client must say EHLO again, and nothing learnt
    /// before counts, a login included.
    pub fn tls_established(&mut self) {
        if self.answer(Phase::AwaitTls) {
            self.tls = true;
            self.greeting = None;
            self.open = None;
            self.lines = LineReader::default();
            if self.account.take().is_some() {
                self.timers.limit_life(self.life_before_login());
            }
            self.timers.expect_request(self.config.command_timeout);
        }
    }

    /// How long the session may last until it logs in: submission must
    /// log in within the login timeout, and an untrusted client's session
    /// has its cap.
    fn life_before_login(&self) -> Option<Duration> {
        let login = self.peer.submission.then_some(self.config.login_timeout);
        let session = (!self.peer.trusted)
            .then_some(self.config.max_session)
            .flatten();
        login.into_iter().chain(session).min()
    }

    /// The account that authenticated, if one did.
    pub fn authenticated(&self) -> Option<&str> {
        self.account.as_deref()
    }

    /// The sender (MAIL FROM) of the open transaction; `""` is the null
    /// sender.
    pub fn sender(&self) -> Option<&str> {
        self.open.as_ref().map(|open| open.tx.mail_from.as_str())
    }

    /// TLS is on.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// The client is trusted: a relay network, or authenticated.
    pub fn is_trusted(&self) -> bool {
        self.peer.trusted || self.account.is_some()
    }

    /// Most of a size claim (SIZE=, a BDAT chunk's size) reserved before
    /// its bytes come: a stranger's claim costs no more than a read's
    /// worth (else a hundred bytes of `BDAT 52428000` would pin a
    /// megabyte); the buffer grows as bytes arrive.
    fn reserve_cap(&self) -> usize {
        match self.is_trusted() {
            true => usize::MAX,
            false => UNTRUSTED_RESERVE,
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

    /// Close for server shutdown with 421 4.3.2: at once outside a
    /// transaction, else once the transaction is done (its message answered
    /// or the transaction reset).
    pub fn shutdown(&mut self) {
        self.stopping = true;
        self.stop_if_asked();
    }

    /// Close now if shutdown was asked and no transaction is open.
    fn stop_if_asked(&mut self) {
        if self.stopping && !self.is_closed() && !self.in_transaction() {
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
            self.count_error();
        }
    }

    /// The reply to a command that needs the greeting first.
    fn need_greeting(&self) -> Reply {
        match self.peer.lmtp {
            true => replies::NEED_LHLO,
            false => replies::NEED_HELO,
        }
    }

    /// How many answers the end of `open`'s message gets: one, or over
    /// LMTP one per accepted recipient (RFC 2033 §4.2).
    fn answers_for(&self, open: Option<&OpenTransaction>) -> usize {
        match (self.peer.lmtp, open) {
            (true, Some(open)) => open.tx.recipients.len().max(1),
            _ => 1,
        }
    }

    /// Refuse a message at its end with `reply`, said `answers` times.
    fn refuse_message(&mut self, reply: Reply, answers: usize) {
        for _ in 1..answers {
            self.send(&reply);
        }
        self.reply(reply);
    }

    fn count_error(&mut self) {
        self.errors += 1;
        if self.errors >= self.config.max_errors {
            self.close_with(&replies::too_many_errors(&self.config.hostname));
        }
    }

    /// If the session waits in `phase`'s kind, stop waiting and return true.
    fn answer(&mut self, phase: Phase) -> bool {
        if std::mem::discriminant(&self.phase) != std::mem::discriminant(&phase) {
            return false;
        }
        self.phase = Phase::Command;
        self.event = None;
        true
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
        let sasl = matches!(self.phase, Phase::SaslResponse(_));
        let limit = match sasl {
            true => sasl::MAX_RESPONSE_LEN.max(self.config.max_line_len),
            false => self.config.max_line_len,
        };
        let (used, line) = lines.read(input, limit);
        if line.is_some() {
            // A whole line came: the next is due within the command timeout.
            self.timers.expect_request(self.config.command_timeout);
        }
        match (line, sasl) {
            (Some(Line::Complete(line)), false) => self.execute(line),
            (Some(Line::Complete(line)), true) => self.sasl_response(line),
            (Some(Line::TooLong), false) => self.reply(replies::LINE_TOO_LONG),
            (Some(Line::TooLong), true) => {
                self.phase = Phase::Command;
                self.reply(replies::AUTH_LINE_TOO_LONG)
            }
            (None, _) => {}
        }
        self.lines = lines;
        used
    }

    fn execute(&mut self, line: &[u8]) {
        // Windows names a machine in its code page (`EHLO M\xfcller-PC`):
        // refused, such a client could never get past its greeting. As
        // Postfix does, the name is taken; its 8-bit bytes become `?`, so
        // nothing 8-bit reaches a trace field.
        let ascii;
        let line = match std::str::from_utf8(line) {
            Err(_) if is_hello(line) => {
                ascii = line
                    .iter()
                    .map(|&b| if b.is_ascii() { b } else { b'?' })
                    .collect::<Vec<u8>>();
                &ascii[..]
            }
            _ => line,
        };
        let command = match command::parse(line) {
            Ok(command) => command,
            Err(ParseError::BdatKeyword { size }) => return self.bad_bdat(size),
            Err(error) => return self.reply(error.into_reply()),
        };
        match command {
            Command::Ehlo(_) | Command::Helo(_) if self.peer.lmtp => {
                self.reply(replies::LMTP_NEEDS_LHLO)
            }
            Command::Lhlo(name) if self.peer.lmtp => self.hello(name, true),
            Command::Lhlo(_) => self.reply(replies::UNKNOWN_COMMAND),
            Command::Ehlo(name) => self.hello(name, true),
            Command::Helo(name) => self.hello(name, false),
            Command::Mail(arg) => self.mail(arg),
            Command::Rcpt(arg) => self.rcpt(arg),
            Command::Data => self.data(),
            Command::Bdat { size, last } => self.bdat(size, last),
            Command::Rset => {
                self.open = None;
                self.chunks_failed = false;
                self.reply(replies::OK);
                self.stop_if_asked();
            }
            Command::Noop => self.reply(replies::OK),
            Command::Quit => self.close_with(&replies::BYE),
            Command::Vrfy => self.reply(replies::CANNOT_VRFY),
            Command::Expn => self.reply(replies::EXPN_DISABLED),
            Command::Help => self.reply(replies::HELP),
            Command::StartTls => self.starttls(),
            Command::Auth { mechanism, initial } => self.auth(mechanism, initial),
        }
    }

    /// STARTTLS (RFC 3207): once, where a certificate is loaded.
    fn starttls(&mut self) {
        if self.tls {
            return self.reply(replies::TLS_ALREADY_ACTIVE);
        }
        if !self.config.tls_available {
            return self.reply(replies::TLS_UNAVAILABLE);
        }
        self.open = None;
        self.send(&replies::READY_FOR_TLS);
        self.event = Some(Event::StartTls);
        self.phase = Phase::AwaitTls;
    }

    /// Passwords may be sent now: TLS is on, or plaintext is allowed.
    fn auth_allowed(&self) -> bool {
        self.tls || self.peer.plaintext_auth
    }

    /// AUTH (RFC 4954).
    fn auth(&mut self, mechanism: &str, initial: Option<&str>) {
        if self.peer.lmtp {
            return self.reply(replies::NOT_IMPLEMENTED);
        }
        if self.greeting.is_none() {
            return self.reply(self.need_greeting());
        }
        if self.account.is_some() {
            return self.reply(replies::ALREADY_AUTHENTICATED);
        }
        if self.open.is_some() {
            return self.reply(replies::AUTH_IN_TRANSACTION);
        }
        if !self.auth_allowed() {
            return self.reply(replies::ENCRYPTION_REQUIRED);
        }
        let Some(mechanism) = Mechanism::from_name(mechanism) else {
            return self.reply(replies::UNKNOWN_MECHANISM);
        };
        let (exchange, step) = Exchange::start(mechanism, initial);
        self.sasl_step(exchange, step);
    }

    /// The client's answer to a challenge.
    fn sasl_response(&mut self, line: &[u8]) {
        let Phase::SaslResponse(mut exchange) = std::mem::replace(&mut self.phase, Phase::Command)
        else {
            return;
        };
        match std::str::from_utf8(line) {
            Ok(answer) => {
                let step = exchange.respond(answer);
                self.sasl_step(exchange, step);
            }
            Err(_) => self.reply(replies::AUTH_BAD_BASE64),
        }
    }

    /// Go on with an exchange: challenge, ask the driver, or refuse.
    fn sasl_step(&mut self, exchange: Exchange, step: Step) {
        match step {
            Step::Challenge(challenge) => {
                self.send(&replies::challenge(&challenge));
                self.phase = Phase::SaslResponse(exchange);
            }
            Step::Done(credentials) => {
                self.event = Some(Event::Authenticate(credentials));
                self.phase = Phase::AwaitAuth;
            }
            Step::Failed(Failure::Cancelled) => self.reply(replies::AUTH_CANCELLED),
            Step::Failed(Failure::BadBase64) => self.reply(replies::AUTH_BAD_BASE64),
            Step::Failed(Failure::Malformed) => self.reply(replies::AUTH_MALFORMED),
            Step::Failed(Failure::AuthzidRefused) => {
                self.send(&replies::AUTHZID_REFUSED);
                self.count_error();
            }
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
            // LMTP clients are let in by address, never by password.
            let offer = EhloOffer {
                starttls: self.config.tls_available && !self.tls,
                auth: self.account.is_none() && self.auth_allowed() && !self.peer.lmtp,
            };
            replies::ehlo(host, self.config.max_message_size, offer)
        } else {
            replies::helo(host)
        };
        self.reply(reply);
        self.stop_if_asked();
    }

    fn mail(&mut self, arg: &str) {
        self.chunks_failed = false;
        let Some(greeting) = &self.greeting else {
            return self.reply(self.need_greeting());
        };
        if self.open.is_some() {
            return self.reply(replies::NESTED_MAIL);
        }
        if self.peer.submission && self.account.is_none() {
            return self.reply(replies::AUTH_REQUIRED);
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
        if let Some(account) = &self.account {
            let config = &self.config;
            if !config
                .sender_policy
                .allows(account, mail_from, &config.sender_addresses)
            {
                let reply = replies::sender_not_owned(account);
                return self.reply(reply);
            }
        }
        let tx = Transaction {
            helo: greeting.name.clone(),
            esmtp: greeting.esmtp,
            mail_from: mail_from.to_owned(),
            body_type: params.body,
            smtputf8: params.smtputf8,
            ret: params.ret,
            envid: params.envid,
            tls: self.tls,
            authenticated: self.account.clone(),
            ..Transaction::default()
        };
        self.open = Some(OpenTransaction {
            tx,
            size_hint: params.size.unwrap_or(0),
            pending_request: RecipientRequest::default(),
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
        let request = match (param_text.is_empty(), open.tx.esmtp) {
            (true, _) => RecipientRequest::default(),
            (false, false) => return self.reply(replies::PARAMS_NEED_EHLO),
            (false, true) => match params::parse_rcpt(param_text, open.tx.smtputf8) {
                Ok(request) => request,
                Err(reply) => return self.reply(reply),
            },
        };
        let address = path.as_str();
        if !open.tx.smtputf8 && !address.is_ascii() {
            return self.reply(replies::NEEDS_SMTPUTF8);
        }
        if open.tx.recipients.len() >= self.config.max_recipients {
            return self.reply(replies::TOO_MANY_RECIPIENTS);
        }
        let address = address.to_owned();
        if let Some(open) = &mut self.open {
            open.pending_request = request;
        }
        self.event = Some(Event::Recipient {
            address: address.clone(),
        });
        self.phase = Phase::AwaitRecipient(address);
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
        let hint = open.size_hint.min(self.reserve_cap());
        self.body.begin(self.config.max_message_size, hint);
        self.content_started = self.timers.now();
        self.content_base = 0;
        self.phase = Phase::Data(DataReceiver::default());
        self.reply(replies::START_DATA);
    }

    /// BDAT: decide the chunk's fate now, answer once its octets are read.
    fn bdat(&mut self, size: u64, last: bool) {
        if size > self.hopeless_chunk() {
            return self.close_with(&replies::CHUNK_BEYOND_READING);
        }
        let cap = self.reserve_cap();
        let refusal = match &mut self.open {
            None => Some(replies::NEED_MAIL),
            Some(open) if open.tx.recipients.is_empty() => Some(replies::NO_VALID_RECIPIENTS),
            Some(open) => {
                if open.chunks.is_none() {
                    open.chunks = Some(LineEndings::default());
                    let hint = open.size_hint.min(cap);
                    self.body.begin(self.config.max_message_size, hint);
                }
                self.content_started = self.timers.now();
                self.content_base = self.body.received();
                self.body
                    .reserve(usize::try_from(size).unwrap_or(usize::MAX).min(cap));
                None
            }
        };
        self.phase = Phase::Chunk(Chunk::new(size, last, refusal));
        if size == 0 {
            self.finish_chunk();
        }
    }

    /// A chunk size past which the octets are not read at all: many times
    /// any message this server takes (or past what a number holds, which
    /// parses as `u64::MAX`). Reading them would hold the session as long
    /// as the client likes, and once a chunk is not read there is no way
    /// back into step (RFC 3030 §2), so the session ends instead.
    fn hopeless_chunk(&self) -> u64 {
        (self.config.max_message_size as u64)
            .saturating_mul(4)
            .max(64 << 20)
    }

    /// BDAT with a size and a keyword other than LAST: its octets are read
    /// and dropped rather than run as commands, and the transaction fails
    /// (a message missing a chunk must not be taken), as do the chunks
    /// pipelined behind it.
    fn bad_bdat(&mut self, size: u64) {
        if size > self.hopeless_chunk() {
            return self.close_with(&replies::CHUNK_BEYOND_READING);
        }
        self.open = None;
        self.body.discard();
        self.content_started = None;
        self.count_error();
        if self.is_closed() {
            return;
        }
        self.chunks_failed = true;
        self.phase = Phase::Chunk(Chunk::new(size, false, Some(replies::BDAT_SYNTAX)));
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
        self.timers.expect_request(self.config.command_timeout);
        if let Some(reply) = chunk.refusal {
            if chunk.last {
                self.open = None;
            }
            if self.open.is_none() && self.chunks_failed {
                // Behind a failed chunk, already on its way: no error.
                self.chunks_failed = !chunk.last;
                return self.send(&reply);
            }
            return self.reply(reply);
        }
        if self.body.is_too_big() {
            // RFC 3030 §4.2: the transaction has failed; later chunks
            // already in the pipeline find no transaction and are dropped.
            self.chunks_failed = !chunk.last;
            let open = self.open.take();
            self.body.discard();
            self.content_started = None;
            // The last chunk answers for the message: over LMTP, once per
            // recipient.
            let answers = match chunk.last {
                true => self.answers_for(open.as_ref()),
                false => 1,
            };
            self.refuse_message(replies::MESSAGE_TOO_BIG, answers);
            return self.stop_if_asked();
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
        // The content is in: the next command is due from now.
        self.content_started = None;
        self.timers.expect_request(self.config.command_timeout);
        let outcome = self.body.finish();
        match (outcome, self.open.take()) {
            (Ok(mut data), Some(open)) => {
                if self.peer.lmtp {
                    self.answering = open.tx.recipients.clone();
                }
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
            (Err(reply), open) => {
                let answers = self.answers_for(open.as_ref());
                self.refuse_message(reply, answers);
                self.stop_if_asked();
            }
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

impl ServerSession {
    /// The deadline of the message content being received, if any.
    fn content_deadline(&self) -> Option<Deadline> {
        let started = self.content_started?;
        if !self.in_data() {
            return None;
        }
        let rate = Deadline::for_content(
            started,
            self.config.data_timeout,
            self.body.received().saturating_sub(self.content_base),
            self.config.min_data_rate,
        );
        // Time earned by a fast start is not a licence to fall silent: no
        // content for data_timeout ends it too (RFC 5321 §4.5.3.2.5's
        // data block timeout), so a client that sent megabytes quickly
        // cannot then hold them, and the memory, for hours.
        let progress = self
            .content_progress
            .filter(|p| *p > started)
            .unwrap_or(started);
        let idle = Deadline::after(progress, self.config.data_timeout);
        Some(if idle.at() < rate.at() { idle } else { rate })
    }

    /// Waiting for the driver's answer to an event.
    fn waiting(&self) -> bool {
        self.event.is_some()
            || matches!(
                self.phase,
                Phase::AwaitRecipient(_) | Phase::AwaitMessage | Phase::AwaitAuth | Phase::AwaitTls
            )
    }
}

impl Session for ServerSession {
    type Event = Event;

    fn receive(&mut self, now: Instant, input: &[u8]) -> usize {
        self.handle_timeout(now);
        self.feed(input)
    }

    fn poll_event(&mut self) -> Option<Event> {
        ServerSession::poll_event(self)
    }

    fn output(&self) -> &[u8] {
        ServerSession::output(self)
    }

    fn clear_output(&mut self) {
        ServerSession::clear_output(self)
    }

    fn is_closed(&self) -> bool {
        ServerSession::is_closed(self)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        if self.waiting() || self.is_closed() {
            return None;
        }
        self.timers.next(self.content_deadline())
    }

    fn output_written(&mut self, now: Instant) {
        // RFC 5321 §4.5.3.2: the server waits for the next command from
        // when its reply went out; time spent on the answer (the checks
        // and the commit behind a 250) is not the client's.
        if self.timers.started() && !self.waiting() && !self.is_closed() {
            self.timers.tell(now);
            self.timers.expect_request(self.config.command_timeout);
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        if self.timers.tell(now) {
            self.timers.expect_request(self.config.command_timeout);
            self.timers.limit_life(self.life_before_login());
        }
        if !self.waiting() && self.timers.expired(self.content_deadline()) {
            self.timed_out();
        }
    }

    fn shutdown(&mut self) {
        ServerSession::shutdown(self)
    }

    fn buffered(&self) -> usize {
        self.body.held()
    }
}
