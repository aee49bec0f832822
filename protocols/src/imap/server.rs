//! The IMAP session: framing (lines and literals), tags, connection states,
//! login, IDLE, and the commands that need nothing from the store.
//!
//! Everything that touches mailboxes comes out as an [`Event`] for the
//! driver, which runs it against the store and writes the responses with
//! [`ImapSession::data`] and friends. The session checks that a command is
//! valid in the current state before the driver sees it, so the driver
//! never has to.
//!
//! # Before login
//! Passwords are taken only over TLS unless the driver allows plaintext for
//! this client (LOGINDISABLED is advertised otherwise, RFC 9051 §6.2.3).
//! Commands before login are small: a literal over [`MAX_LOGIN_COMMAND`] is
//! refused before the client sends it, and a command that grows past it
//! ends the session, so an unauthenticated client cannot make the server
//! hold much (`max_command_size`, sized for APPEND, applies after login).
//! Everything received after STARTTLS and before the handshake is dropped.

use imap_codec::decode::Decoder;
use imap_codec::encode::Encoder;
use imap_codec::fragmentizer::{FragmentInfo, Fragmentizer, LiteralAnnouncement};
use imap_codec::imap_types::auth::AuthMechanism;
use imap_codec::imap_types::command::{Command, CommandBody};
use imap_codec::imap_types::core::{LiteralMode, Tag};
use imap_codec::imap_types::fetch::MessageDataItem;
use imap_codec::imap_types::response::{Data, Response};
use imap_codec::imap_types::IntoStatic;
use imap_codec::{AuthenticateDataCodec, CommandCodec, IdleDoneCodec, ResponseCodec};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::esearch::{self, SearchReturn};
use super::list::{self, ListExtended};
use super::multiappend::{self, AppendMessage, SplitMessage};
use super::notify::{self, BadNotify, NotifyCommand};
use super::urlauth::{self, UrlAuthCommand};
use crate::sasl::{self, Exchange, Failure, Mechanism, Step};
use crate::session::{Peer, Session, Timers};

/// What the server can do once logged in (and before, with the login
/// capabilities of [`ImapSession::capabilities`] added).
pub const CAPABILITIES: &str = "IMAP4rev2 IMAP4rev1 LITERAL+ SASL-IR ENABLE IDLE \
     NAMESPACE ID UNSELECT UIDPLUS MOVE CHILDREN SPECIAL-USE LIST-EXTENDED LIST-STATUS CONDSTORE QRESYNC ESEARCH SORT \
     SORT=DISPLAY THREAD=ORDEREDSUBJECT THREAD=REFERENCES QUOTA QUOTA=RES-STORAGE \
     QUOTA=RES-MESSAGE COMPRESS=DEFLATE BINARY MULTIAPPEND ESORT CATENATE URLAUTH URLAUTH=BINARY NOTIFY \
     CONTEXT=SEARCH CONTEXT=SORT WITHIN";

/// Largest command before login, literals included. The largest it must
/// take is an ID at RFC 2971's limits (30 fields of 30 octets, values of
/// 1024), about 32 KiB quoted; LOGIN and AUTHENTICATE are far smaller.
pub const MAX_LOGIN_COMMAND: usize = 40 * 1024;

/// Longest line of a command after login, its literals not counted (they
/// may carry a whole message, up to `max_command_size`). Dovecot's limit:
/// long UID sets fit, while a set of millions of numbers (megabytes of
/// "1,1,1,...", parsed into a list before any check) does not.
pub const MAX_COMMAND_LINE: usize = 64 * 1024;

/// Answers waiting to be written past which no more commands are run
/// until they are.
pub const OUTPUT_HIGH_WATER: usize = 64 * 1024;

/// Limits and identity shared by every session of a listener.
#[derive(Debug, Clone)]
pub struct ImapConfig {
    /// Name in the greeting.
    pub hostname: String,
    /// Largest command in octets, literals included (APPEND carries a
    /// whole message); larger ones get BAD and are never buffered whole.
    pub max_command_size: u32,
    /// BAD responses and failed logins tolerated before the session is
    /// closed.
    pub max_errors: usize,
    /// STARTTLS is offered (the driver has a certificate).
    pub tls_available: bool,
    /// Autologout after this long without a complete command (RFC 9051
    /// §5.4: at least 30 minutes).
    pub idle_timeout: Duration,
    /// How long a client may stay without logging in, whatever it does.
    pub login_timeout: Duration,
}

impl Default for ImapConfig {
    fn default() -> Self {
        ImapConfig {
            hostname: "localhost".into(),
            max_command_size: 50 * 1024 * 1024 + 64 * 1024,
            max_errors: 20,
            tls_available: false,
            idle_timeout: Duration::from_secs(1800),
            login_timeout: Duration::from_secs(180),
        }
    }
}

/// Something the driver must act on. Until it answers (a tagged response,
/// or [`ImapSession::idle_done`]), the session reads no further command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// LOGIN or AUTHENTICATE: answer with
    /// [`ImapSession::login_succeeded`], [`ImapSession::login_failed`],
    /// [`ImapSession::login_locked_out`] or [`ImapSession::login_unavailable`].
    Login {
        /// The command's tag.
        tag: Tag<'static>,
        /// `"LOGIN"` for the LOGIN command, else `"AUTHENTICATE "` and the
        /// SASL mechanism.
        mechanism: &'static str,
        /// The user name (PLAIN: the authentication identity).
        user: String,
        /// The password.
        password: String,
    },
    /// A command valid in the current state; answer with untagged data and
    /// one tagged response ([`ImapSession::ok`], [`ImapSession::no`],
    /// [`ImapSession::bad`]).
    Command {
        /// The command's tag.
        tag: Tag<'static>,
        /// The command.
        body: Box<CommandBody<'static>>,
        /// What the session read of the command beyond imap-codec's
        /// grammar.
        extra: Extra,
    },
    /// GENURLAUTH, URLFETCH or RESETKEY (RFC 4467), in the authenticated
    /// or selected state; answer as for [`Event::Command`].
    UrlAuth {
        /// The command's tag.
        tag: Tag<'static>,
        /// What it asks.
        command: UrlAuthCommand,
    },
    /// NOTIFY (RFC 5465), in the authenticated or selected state; answer
    /// as for [`Event::Command`], then push what it asks for between
    /// commands (the driver's news).
    Notify {
        /// The command's tag.
        tag: Tag<'static>,
        /// What it asks.
        command: NotifyCommand,
    },
    /// CANCELUPDATE (RFC 5267 §4.3): stop updating the results of the
    /// searches with these tags; answer as for [`Event::Command`].
    CancelUpdate {
        /// The command's tag.
        tag: Tag<'static>,
        /// The tags of the searches.
        searches: Vec<String>,
    },
    /// IDLE began (`+ idling` is written). Send updates with
    /// [`ImapSession::data`] as they happen; the client ends it with DONE.
    Idle,
    /// DONE ended the IDLE: send the last updates, then
    /// [`ImapSession::idle_done`].
    IdleDone,
    /// COMPRESS DEFLATE was accepted (its OK is written, uncompressed):
    /// write the output, then compress and decompress everything after
    /// (RFC 4978), then call [`ImapSession::compression_started`].
    Compress,
    /// STARTTLS was accepted (`OK Begin TLS negotiation now` is written).
    /// Write the output, drop any input not fed yet, run the handshake,
    /// then call [`ImapSession::tls_established`]. If the handshake fails,
    /// close the connection.
    StartTls,
}

/// One item of a FETCH response ([`ImapSession::fetch`]).
// Items live for one message's response; boxing the common variant would
// cost an allocation per item to save stack space nobody holds for long.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchItem<'a> {
    /// Any item imap-codec writes.
    Item(MessageDataItem<'a>),
    /// `BINARY[section]<origin>`: a part's decoded content, or the slice of
    /// it from `origin` when the client asked for a partial one.
    Binary {
        /// The part numbers; empty for the whole message.
        section: Vec<NonZeroU32>,
        /// The first octet of a partial fetch.
        origin: Option<u32>,
        /// The content.
        data: Vec<u8>,
    },
}

/// What the session reads of a command itself, where imap-codec's grammar
/// stops short of an extension.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Extra {
    /// Nothing beyond the command.
    #[default]
    None,
    /// For SEARCH: answer with ESEARCH, giving these (RFC 4731; every
    /// SEARCH of an IMAP4rev2 session).
    SearchReturn(SearchReturn),
    /// For LIST: the options and patterns of an extended LIST (RFC 5258).
    List(Box<ListExtended>),
    /// For APPEND: every message (MULTIAPPEND, RFC 3502: all or none),
    /// CATENATE parts included (RFC 4469); the command's own message is
    /// the first, or an empty placeholder for a CATENATE.
    Appends(Vec<AppendMessage>),
}

/// The connection state (RFC 9051 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    NotAuthenticated,
    Authenticated,
    Selected,
    Logout,
}

/// What the next input is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    /// Commands.
    Command,
    /// The client's answer to an AUTHENTICATE challenge.
    SaslResponse(Tag<'static>, Exchange),
    /// Waiting for DONE.
    Idle(Tag<'static>),
    /// STARTTLS accepted; input is dropped until TLS is up.
    AwaitTls,
    /// COMPRESS accepted; input is dropped until the driver compresses.
    AwaitCompress,
}

/// One IMAP connection, server side.
///
/// Feed it bytes, take events, write [`ImapSession::output`]; close the
/// connection once [`ImapSession::is_closed`] and the output is written.
pub struct ImapSession {
    config: Arc<ImapConfig>,
    framing: Fragmentizer,
    /// Where the line being read starts in the framing's message: after
    /// its last literal ([`MAX_COMMAND_LINE`] is per line).
    line_start: usize,
    state: State,
    phase: Phase,
    /// An event is out and not answered yet.
    busy: bool,
    event: Option<Event>,
    output: Vec<u8>,
    /// Commands were left waiting because [`OUTPUT_HIGH_WATER`] bytes of
    /// answers had not been written yet: they run once those are.
    held_back: bool,
    errors: usize,
    peer: Peer,
    /// TLS is on (implicit, or after STARTTLS).
    tls: bool,
    /// The client sent `ENABLE IMAP4rev2`; until then it is an IMAP4rev1
    /// client, which is told of `\Recent` (RFC 3501 §2.3.2).
    rev2: bool,
    /// CONDSTORE is on (RFC 7162 §3.1: ENABLE CONDSTORE, or the first
    /// command that uses it): FETCH responses with FLAGS carry MODSEQ.
    condstore: bool,
    /// QRESYNC is on (RFC 7162 §3.2.3: only by ENABLE QRESYNC): expunges
    /// are told as VANISHED, and SELECT (QRESYNC ...) and FETCH VANISHED
    /// may be used.
    qresync: bool,
    /// COMPRESS=DEFLATE is on (RFC 4978).
    compressed: bool,
    timers: Timers,
}

impl ImapSession {
    /// A new session with the greeting queued, for a plaintext client that
    /// may log in without TLS (tests; see [`Self::with_peer`]).
    pub fn new(config: Arc<ImapConfig>) -> Self {
        Self::with_peer(config, Peer::default())
    }

    /// A new session for the client `peer` describes, greeting queued.
    pub fn with_peer(config: Arc<ImapConfig>, peer: Peer) -> Self {
        let mut session = ImapSession {
            framing: Fragmentizer::new(config.max_command_size),
            line_start: 0,
            config,
            state: State::NotAuthenticated,
            phase: Phase::Command,
            busy: false,
            held_back: false,
            event: None,
            output: Vec::with_capacity(1024),
            errors: 0,
            tls: peer.implicit_tls,
            peer,
            rev2: false,
            condstore: false,
            qresync: false,
            compressed: false,
            timers: Timers::default(),
        };
        let greeting = format!(
            "* OK [CAPABILITY {}] {} IMAP4rev2 server ready\r\n",
            session.capabilities(),
            session.config.hostname
        );
        session.output.extend_from_slice(greeting.as_bytes());
        session
    }

    /// The capability list for the current state: before login it says
    /// how to log in (STARTTLS, LOGINDISABLED, the AUTH= mechanisms).
    pub fn capabilities(&self) -> String {
        if self.state != State::NotAuthenticated {
            return CAPABILITIES.to_owned();
        }
        let mut list = CAPABILITIES.to_owned();
        if self.config.tls_available && !self.tls {
            list.push_str(" STARTTLS");
        }
        if self.auth_allowed() {
            for mechanism in sasl::MECHANISMS {
                list.push_str(" AUTH=");
                list.push_str(mechanism.name());
            }
        } else {
            list.push_str(" LOGINDISABLED");
        }
        list
    }

    /// Passwords may be sent now: TLS is on, or plaintext is allowed.
    fn auth_allowed(&self) -> bool {
        self.tls || self.peer.plaintext_auth
    }

    /// TLS is on.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// Logged in.
    pub fn is_authenticated(&self) -> bool {
        matches!(self.state, State::Authenticated | State::Selected)
    }

    /// Take in bytes read from the client and process what can be. All of
    /// `input` is taken; what cannot be processed yet waits inside. After
    /// answering an event, call it again (with no bytes) to go on with
    /// commands already received.
    pub fn feed(&mut self, input: &[u8]) {
        if matches!(self.phase, Phase::AwaitTls | Phase::AwaitCompress) {
            // Plaintext after STARTTLS, or what a client pipelined after
            // COMPRESS (which it must not): never run as a command.
            return;
        }
        self.framing.enqueue_bytes(input);
        self.run();
    }

    /// The next event for the driver, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.event.take()
    }

    /// Bytes to write to the client.
    pub fn output(&self) -> &[u8] {
        &self.output
    }

    /// Forget the output once written.
    pub fn clear_output(&mut self) {
        crate::session::clear_output(&mut self.output);
    }

    /// True once the connection should be closed (after writing the output).
    pub fn is_closed(&self) -> bool {
        self.state == State::Logout
    }

    /// True while a mailbox is selected.
    pub fn is_selected(&self) -> bool {
        self.state == State::Selected
    }

    /// True between [`Event::Idle`] and DONE.
    pub fn is_idling(&self) -> bool {
        matches!(self.phase, Phase::Idle(_))
    }

    /// The client enabled IMAP4rev2: no `\Recent`, no RECENT responses.
    pub fn is_rev2(&self) -> bool {
        self.rev2
    }

    /// CONDSTORE is on for this session.
    pub fn is_condstore(&self) -> bool {
        self.condstore
    }

    /// QRESYNC is on for this session (it implies CONDSTORE).
    pub fn is_qresync(&self) -> bool {
        self.qresync
    }

    /// The client used a CONDSTORE-enabling command (SELECT (CONDSTORE),
    /// FETCH MODSEQ or CHANGEDSINCE, STORE UNCHANGEDSINCE, SEARCH MODSEQ,
    /// STATUS HIGHESTMODSEQ): CONDSTORE is on from now (RFC 7162 §3.1).
    /// True if it was off: with a mailbox selected, the driver then sends
    /// its HIGHESTMODSEQ (§3.1.1).
    pub fn enable_condstore(&mut self) -> bool {
        !std::mem::replace(&mut self.condstore, true)
    }

    // -- answers ---------------------------------------------------------

    /// Answer [`Event::Login`]: the session is authenticated.
    pub fn login_succeeded(&mut self, tag: &Tag<'_>) {
        self.state = State::Authenticated;
        self.timers.limit_life(None);
        let text = format!("[CAPABILITY {CAPABILITIES}] logged in");
        self.ok(tag, None, &text);
    }

    /// Answer [`Event::Login`]: too many failed logins from this client or
    /// for this account (counts as an error).
    pub fn login_locked_out(&mut self, tag: &Tag<'_>) {
        self.no(
            tag,
            Some("UNAVAILABLE"),
            "too many failed logins, try again later",
        );
        self.count_error();
    }

    /// Answer [`Event::StartTls`]: the handshake is done. Nothing learnt
    /// before counts; the client asks for capabilities again (RFC 9051
    /// §6.2.1).
    pub fn tls_established(&mut self) {
        if self.phase == Phase::AwaitTls {
            self.tls = true;
            self.phase = Phase::Command;
            self.busy = false;
            self.framing = Fragmentizer::new(self.config.max_command_size);
            self.line_start = 0;
        }
    }

    /// Answer [`Event::Compress`]: the driver compresses from now on.
    pub fn compression_started(&mut self) {
        if self.phase == Phase::AwaitCompress {
            self.compressed = true;
            self.phase = Phase::Command;
            self.busy = false;
            self.framing = Fragmentizer::new(self.config.max_command_size);
            self.line_start = 0;
        }
    }

    /// Answer [`Event::Login`]: wrong name or password (counts as an error).
    pub fn login_failed(&mut self, tag: &Tag<'_>) {
        self.no(tag, Some("AUTHENTICATIONFAILED"), "invalid credentials");
        self.count_error();
    }

    /// Answer [`Event::Login`]: the store could not be read.
    pub fn login_unavailable(&mut self, tag: &Tag<'_>) {
        self.no(tag, Some("UNAVAILABLE"), "try again later");
    }

    /// A mailbox is now selected (SELECT or EXAMINE succeeded).
    pub fn selected(&mut self) {
        if self.state != State::NotAuthenticated {
            self.state = State::Selected;
        }
    }

    /// No mailbox is selected any more (CLOSE, UNSELECT, a failed SELECT).
    pub fn unselected(&mut self) {
        if self.state == State::Selected {
            self.state = State::Authenticated;
        }
    }

    /// Untagged data (EXISTS, FETCH, LIST, ...), encoded by imap-codec.
    pub fn data(&mut self, data: Data<'_>) {
        let encoded = ResponseCodec::default().encode(&Response::Data(data));
        self.output.extend_from_slice(&encoded.dump());
    }

    /// `* seq FETCH (...)` for one message. Written by imap-codec unless an
    /// item needs what its grammar lacks (BINARY's origin, RFC 3516 §4.2),
    /// in which case each item is encoded on its own and joined.
    pub fn fetch(&mut self, seq: NonZeroU32, items: Vec<FetchItem<'_>>) {
        if items.iter().all(|item| matches!(item, FetchItem::Item(_))) {
            let items: Vec<_> = items
                .into_iter()
                .filter_map(|item| match item {
                    FetchItem::Item(item) => Some(item),
                    FetchItem::Binary { .. } => None,
                })
                .collect();
            if let Ok(data) = Data::fetch(seq, items) {
                self.data(data);
            }
            return;
        }
        let prefix = format!("* {seq} FETCH (");
        let mut line = prefix.clone().into_bytes();
        for (i, item) in items.into_iter().enumerate() {
            if i > 0 {
                line.push(b' ');
            }
            match item {
                FetchItem::Item(item) => {
                    let Ok(data) = Data::fetch(seq, vec![item]) else {
                        continue;
                    };
                    let encoded = ResponseCodec::default()
                        .encode(&Response::Data(data))
                        .dump();
                    let inner = encoded
                        .strip_prefix(prefix.as_bytes())
                        .and_then(|rest| rest.strip_suffix(b")\r\n"));
                    line.extend_from_slice(inner.unwrap_or_default());
                }
                FetchItem::Binary {
                    section,
                    origin,
                    data,
                } => {
                    let numbers: Vec<String> = section.iter().map(|n| n.to_string()).collect();
                    line.extend_from_slice(format!("BINARY[{}]", numbers.join(".")).as_bytes());
                    if let Some(origin) = origin {
                        line.extend_from_slice(format!("<{origin}>").as_bytes());
                    }
                    // NUL needs a literal8 (RFC 3516 §4.2); anything else
                    // goes in a plain literal any client reads.
                    let marker = if data.contains(&0) { "~" } else { "" };
                    line.extend_from_slice(format!(" {marker}{{{}}}\r\n", data.len()).as_bytes());
                    line.extend_from_slice(&data);
                }
            }
        }
        line.extend_from_slice(b")\r\n");
        self.output.extend_from_slice(&line);
    }

    /// Untagged data with more after it on its line: a LIST's extended
    /// data (RFC 5258 §3.5), which imap-codec does not write.
    pub fn data_extended(&mut self, data: Data<'_>, after: &str) {
        let encoded = ResponseCodec::default().encode(&Response::Data(data));
        let mut line = encoded.dump();
        if line.ends_with(b"\r\n") {
            line.truncate(line.len() - 2);
        }
        self.output.extend_from_slice(&line);
        self.output.extend_from_slice(after.as_bytes());
        self.output.extend_from_slice(b"\r\n");
    }

    /// An untagged line written as given (without the `* ` and CRLF).
    pub fn untagged(&mut self, line: &str) {
        self.output.extend_from_slice(b"* ");
        self.output.extend_from_slice(line.as_bytes());
        self.output.extend_from_slice(b"\r\n");
    }

    /// Tagged OK, with an optional response code (e.g. `READ-WRITE`).
    pub fn ok(&mut self, tag: &Tag<'_>, code: Option<&str>, text: &str) {
        self.tagged(tag, "OK", code, text);
    }

    /// Tagged NO.
    pub fn no(&mut self, tag: &Tag<'_>, code: Option<&str>, text: &str) {
        self.tagged(tag, "NO", code, text);
    }

    /// Tagged BAD (counts as an error).
    pub fn bad(&mut self, tag: &Tag<'_>, text: &str) {
        self.tagged(tag, "BAD", None, text);
        self.count_error();
    }

    /// Answer [`Event::IdleDone`]: the IDLE command completes.
    pub fn idle_done(&mut self) {
        if let Phase::Idle(tag) = std::mem::replace(&mut self.phase, Phase::Command) {
            self.ok(&tag, None, "IDLE terminated");
        }
    }

    /// Close because the client was silent too long (RFC 9051 §5.4: at
    /// least 30 minutes).
    pub fn timed_out(&mut self) {
        self.bye("autologout; idle for too long");
    }

    /// Close for server shutdown.
    pub fn shutdown(&mut self) {
        self.bye("server shutting down");
    }

    // -- inside ----------------------------------------------------------

    fn tagged(&mut self, tag: &Tag<'_>, kind: &str, code: Option<&str>, text: &str) {
        let code = code.map(|c| format!("[{c}] ")).unwrap_or_default();
        let line = format!("{} {kind} {code}{text}\r\n", tag.as_ref());
        self.output.extend_from_slice(line.as_bytes());
        // The next pipelined command is read at the next `feed`, and is due
        // within the idle timeout of this answer.
        self.busy = false;
        self.timers.expect_request(self.config.idle_timeout);
    }

    /// `* BYE text` (once), then the session ends: the driver closes the
    /// connection once the output is written.
    pub fn bye(&mut self, text: &str) {
        if self.state != State::Logout {
            self.untagged(&format!("BYE {text}"));
            self.state = State::Logout;
        }
    }

    fn count_error(&mut self) {
        self.errors += 1;
        if self.errors >= self.config.max_errors {
            self.bye("too many errors");
        }
    }

    fn raise(&mut self, event: Event) {
        self.busy = true;
        self.event = Some(event);
    }

    /// Process fragments until an event is raised or more input is needed.
    fn run(&mut self) {
        self.held_back = false;
        while !self.busy
            && self.event.is_none()
            && self.state != State::Logout
            && !matches!(self.phase, Phase::AwaitTls | Phase::AwaitCompress)
        {
            if self.output.len() >= OUTPUT_HIGH_WATER {
                // Pipelined commands, each with a long answer: the rest
                // wait until these answers are written, so what a client
                // pipelines cannot make the output grow without bound.
                self.held_back = true;
                return;
            }
            let Some(fragment) = self.framing.progress() else {
                let read = self.framing.message_bytes().len();
                if self.state == State::NotAuthenticated && read > MAX_LOGIN_COMMAND {
                    self.untagged("BAD command too long before login");
                    self.bye("command too long");
                } else if read.saturating_sub(self.line_start) > MAX_COMMAND_LINE {
                    // The rest of the line is still coming, and could not
                    // be told from a next command: the session ends.
                    self.untagged("BAD command line too long");
                    self.bye("command line too long");
                }
                return;
            };
            match fragment {
                FragmentInfo::Literal { end, .. } => self.line_start = end,
                FragmentInfo::Line {
                    start,
                    end,
                    announcement,
                    ..
                } => {
                    // A literal's octets are not the line's: the next line
                    // starts after them.
                    if let Some(literal) = announcement {
                        self.line_start = end + literal.length as usize;
                    }
                    let limit = match self.state {
                        State::NotAuthenticated => MAX_LOGIN_COMMAND,
                        _ => MAX_COMMAND_LINE,
                    };
                    if end.saturating_sub(start) > limit {
                        self.untagged("BAD command line too long");
                        return self.bye("command line too long");
                    }
                    if self.framing.is_message_complete() {
                        self.line_start = 0;
                    }
                }
            }
            if let FragmentInfo::Line {
                announcement: Some(LiteralAnnouncement { mode, length }),
                ..
            } = fragment
            {
                self.literal_announced(mode, length);
                continue;
            }
            if self.framing.is_message_complete() {
                self.message();
            }
        }
    }

    /// A line ended in `{n}` or `{n+}`: accept the literal, or refuse it
    /// before the client sends a byte of it.
    fn literal_announced(&mut self, mode: LiteralMode, length: u32) {
        let limit = match self.state {
            State::NotAuthenticated => MAX_LOGIN_COMMAND as u64,
            _ => u64::from(self.config.max_command_size),
        };
        let fits = (self.framing.message_bytes().len() as u64 + u64::from(length)) <= limit;
        if !fits && mode == LiteralMode::NonSync && self.state == State::NotAuthenticated {
            // Its bytes come anyway, and are not worth reading.
            self.untagged("BAD literal too big before login");
            return self.bye("literal too big");
        }
        match (mode, fits) {
            (LiteralMode::Sync, true) => self.output.extend_from_slice(b"+ go ahead\r\n"),
            (LiteralMode::Sync, false) => {
                let tag = self.framing.decode_tag().map(IntoStatic::into_static);
                self.framing.skip_message();
                self.line_start = 0;
                match tag {
                    Some(tag) => self.tagged(&tag, "NO", Some("TOOBIG"), "literal too big"),
                    None => self.untagged("BAD literal too big"),
                }
            }
            // LITERAL+: the bytes come anyway; the framing drops what is
            // over the limit and the command fails as too long.
            (LiteralMode::NonSync, _) => {}
        }
    }

    /// A whole message (line plus literals) arrived.
    fn message(&mut self) {
        match self.phase.clone() {
            Phase::Command => self.command(),
            Phase::SaslResponse(tag, mut exchange) => {
                self.phase = Phase::Command;
                let decoded = self
                    .framing
                    .decode_message(&AuthenticateDataCodec::default())
                    .map(|data| data.into_static());
                match decoded {
                    Ok(imap_codec::imap_types::auth::AuthenticateData::Continue(data)) => {
                        let step = exchange.respond_decoded(data.declassify().to_vec());
                        self.sasl_step(tag, exchange, step);
                    }
                    Ok(_) => self.tagged(&tag, "BAD", None, "authentication cancelled"),
                    Err(_) => self.bad(&tag, "invalid base64"),
                }
            }
            Phase::AwaitTls | Phase::AwaitCompress => {}
            Phase::Idle(_) => match self.framing.decode_message(&IdleDoneCodec::default()) {
                Ok(_) => {
                    self.raise(Event::IdleDone);
                }
                Err(_) => {
                    // Anything but DONE ends the session (RFC 2177 leaves it open).
                    self.untagged("BAD expected DONE");
                    self.bye("protocol error in IDLE");
                }
            },
        }
    }

    fn command(&mut self) {
        if let Some(parsed) = urlauth::parse(self.framing.message_bytes()) {
            return self.urlauth(parsed);
        }
        if let Some(parsed) = notify::parse(self.framing.message_bytes()) {
            return self.notify(parsed);
        }
        if let Some(parsed) = esearch::parse_cancel_update(self.framing.message_bytes()) {
            let tag = self.framing.decode_tag().map(IntoStatic::into_static);
            return match (parsed, tag) {
                (Ok((_, searches)), Some(tag)) if self.state == State::Selected => {
                    self.raise(Event::CancelUpdate { tag, searches })
                }
                (Ok(_), Some(tag)) => self.bad(&tag, "no mailbox selected"),
                (_, tag) => self.bad_command(tag, "syntax error"),
            };
        }
        if let Some(appends) = multiappend::split_append(self.framing.message_bytes()) {
            return self.multiappend(appends);
        }
        // SEARCH RETURN (...) and the extended LIST are ours to parse; the
        // rest is imap-codec's.
        let bytes = self.framing.message_bytes();
        let split = match esearch::split_return(bytes) {
            Some(Ok((plain, wanted))) => Some(Ok((plain, Extra::SearchReturn(wanted)))),
            Some(Err(esearch::BadReturn)) => Some(Err("unknown SEARCH RETURN option")),
            None => list::split_list(bytes).map(|split| match split {
                Ok((plain, options)) => Ok((plain, Extra::List(Box::new(options)))),
                Err(list::BadList::Option) => Err("unknown LIST option"),
                Err(list::BadList::Syntax) => Err("syntax error"),
            }),
        };
        let mut extra = Extra::None;
        let decoded = match split {
            None => self
                .framing
                .decode_message(&CommandCodec::default())
                .map(|command| command.into_static()),
            Some(Ok((plain, options))) => {
                extra = options;
                match CommandCodec::default().decode(&plain) {
                    Ok((_, command)) => Ok(command.into_static()),
                    Err(_) => {
                        let tag = self.framing.decode_tag().map(IntoStatic::into_static);
                        return self.bad_command(tag, "syntax error");
                    }
                }
            }
            Some(Err(text)) => {
                let tag = self.framing.decode_tag().map(IntoStatic::into_static);
                return self.bad_command(tag, text);
            }
        };
        let command: Command<'static> = match decoded {
            Ok(command) => command,
            Err(error) => {
                let too_long = matches!(
                    error,
                    imap_codec::fragmentizer::DecodeMessageError::MessageTooLong { .. }
                );
                let tag = self.framing.decode_tag().map(IntoStatic::into_static);
                let text = if too_long {
                    "command too long"
                } else {
                    "syntax error"
                };
                return self.bad_command(tag, text);
            }
        };
        let Command { tag, body } = command;
        if matches!(body, CommandBody::Search { .. }) && self.rev2 && extra == Extra::None {
            extra = Extra::SearchReturn(SearchReturn::ALL);
        }
        self.dispatch(tag, body, extra);
    }

    /// An APPEND of several messages or with CATENATE, taken apart into
    /// single APPENDs that imap-codec reads; the first goes out as the
    /// command, and all of them (CATENATE parts with them) beside it.
    fn multiappend(&mut self, split: Vec<SplitMessage>) {
        let mut first = None;
        let mut messages = Vec::with_capacity(split.len());
        for message in split {
            let decoded = CommandCodec::default()
                .decode(&message.command)
                .map(|(_, command)| command.into_static());
            let Ok(Command {
                tag,
                body: body @ CommandBody::Append { .. },
            }) = decoded
            else {
                let tag = self.framing.decode_tag().map(IntoStatic::into_static);
                return self.bad_command(tag, "syntax error");
            };
            if let CommandBody::Append {
                flags,
                date,
                message: literal,
                ..
            } = &body
            {
                messages.push(AppendMessage {
                    flags: flags.clone(),
                    date: date.clone(),
                    message: literal.clone(),
                    catenate: message.catenate,
                });
            }
            first.get_or_insert((tag, body));
        }
        if let Some((tag, body)) = first {
            self.dispatch(tag, body, Extra::Appends(messages));
        }
    }

    /// A URLAUTH command: for the driver once logged in.
    fn urlauth(&mut self, parsed: Result<(String, UrlAuthCommand), super::lexer::Syntax>) {
        let tag = self.framing.decode_tag().map(IntoStatic::into_static);
        let Ok((_, command)) = parsed else {
            return self.bad_command(tag, "syntax error");
        };
        let Some(tag) = tag else {
            return self.bad_command(None, "syntax error");
        };
        match self.state {
            State::Authenticated | State::Selected => self.raise(Event::UrlAuth { tag, command }),
            _ => self.bad(&tag, "log in first"),
        }
    }

    /// A NOTIFY command: for the driver once logged in.
    fn notify(&mut self, parsed: Result<(String, NotifyCommand), BadNotify>) {
        let tag = self.framing.decode_tag().map(IntoStatic::into_static);
        let command = match parsed {
            Ok((_, command)) => command,
            Err(BadNotify(why)) => return self.bad_command(tag, why),
        };
        let Some(tag) = tag else {
            return self.bad_command(None, "syntax error");
        };
        match self.state {
            State::Authenticated | State::Selected => self.raise(Event::Notify { tag, command }),
            _ => self.bad(&tag, "log in first"),
        }
    }

    /// Bytes written as they are (a response with a literal that
    /// imap-codec has no type for: URLFETCH).
    pub fn raw(&mut self, bytes: &[u8]) {
        self.output.extend_from_slice(bytes);
    }

    /// BAD for a command that could not be read, tagged if its tag could.
    fn bad_command(&mut self, tag: Option<Tag<'static>>, text: &str) {
        match tag {
            Some(tag) => self.bad(&tag, text),
            None => {
                self.untagged(&format!("BAD {text}"));
                self.count_error();
            }
        }
    }

    fn dispatch(&mut self, tag: Tag<'static>, body: CommandBody<'static>, extra: Extra) {
        use CommandBody as C;
        match (&body, self.state) {
            (C::Capability, _) => {
                self.untagged(&format!("CAPABILITY {}", self.capabilities()));
                self.ok(&tag, None, "CAPABILITY completed");
            }
            (C::Logout, _) => {
                self.untagged("BYE logging out");
                self.ok(&tag, None, "LOGOUT completed");
                self.state = State::Logout;
            }
            (C::Id { .. }, _) => {
                self.untagged("ID (\"name\" \"ringpost\")");
                self.ok(&tag, None, "ID completed");
            }
            // RFC 9051 §6.1.2: NOOP is valid in any state. In the
            // authenticated states the driver reports mailbox news with it.
            (C::Noop, State::NotAuthenticated) => self.ok(&tag, None, "NOOP completed"),
            (C::StartTLS, State::NotAuthenticated) => {
                if self.tls || !self.config.tls_available {
                    return self.bad(&tag, "STARTTLS not available");
                }
                self.ok(&tag, None, "Begin TLS negotiation now");
                self.phase = Phase::AwaitTls;
                // Whatever was pipelined after STARTTLS goes unread.
                self.framing = Fragmentizer::new(self.config.max_command_size);
                self.line_start = 0;
                self.raise(Event::StartTls);
            }
            (C::Login { .. } | C::Authenticate { .. }, State::NotAuthenticated)
                if !self.auth_allowed() =>
            {
                self.no(
                    &tag,
                    Some("PRIVACYREQUIRED"),
                    "login is disabled until STARTTLS",
                );
            }
            (C::Login { username, password }, State::NotAuthenticated) => {
                let user = String::from_utf8_lossy(username.as_ref()).into_owned();
                let password = String::from_utf8_lossy(password.declassify().as_ref()).into_owned();
                self.raise(Event::Login {
                    tag,
                    mechanism: "LOGIN",
                    user,
                    password,
                });
            }
            (
                C::Authenticate {
                    mechanism,
                    initial_response,
                },
                State::NotAuthenticated,
            ) => {
                let mechanism = match mechanism {
                    AuthMechanism::Plain => Mechanism::Plain,
                    AuthMechanism::Login => Mechanism::Login,
                    _ => return self.no(&tag, None, "unsupported mechanism"),
                };
                let initial = initial_response
                    .as_ref()
                    .map(|response| response.declassify().to_vec());
                let (exchange, step) = Exchange::start_decoded(mechanism, initial);
                self.sasl_step(tag, exchange, step);
            }
            (C::Login { .. } | C::Authenticate { .. } | C::StartTLS, _) => {
                self.bad(&tag, "already authenticated")
            }
            (_, State::NotAuthenticated) => self.bad(&tag, "log in first"),
            (C::Compress { .. }, _) if self.compressed => {
                self.no(&tag, Some("COMPRESSIONACTIVE"), "DEFLATE is on already")
            }
            (C::Compress { .. }, _) => {
                self.ok(&tag, None, "DEFLATE active");
                self.phase = Phase::AwaitCompress;
                self.framing = Fragmentizer::new(self.config.max_command_size);
                self.line_start = 0;
                self.raise(Event::Compress);
            }
            (C::Enable { capabilities }, _) => {
                // Only what CAPABILITY offers can be enabled, and ENABLED
                // names what this command newly turned on (RFC 5161 §3.1).
                let mut enabled = String::from("ENABLED");
                for capability in capabilities.as_ref() {
                    let name = capability.to_string();
                    if name.eq_ignore_ascii_case("IMAP4rev2") && !self.rev2 {
                        self.rev2 = true;
                        enabled.push_str(" IMAP4rev2");
                    } else if name.eq_ignore_ascii_case("CONDSTORE") && !self.condstore {
                        self.condstore = true;
                        enabled.push_str(" CONDSTORE");
                    } else if name.eq_ignore_ascii_case("QRESYNC") && !self.qresync {
                        // QRESYNC implies CONDSTORE (RFC 7162 §3.2.3).
                        self.qresync = true;
                        self.condstore = true;
                        enabled.push_str(" QRESYNC");
                    }
                }
                self.untagged(&enabled);
                self.ok(&tag, None, "ENABLE completed");
            }
            (C::Namespace, _) => {
                self.untagged("NAMESPACE ((\"\" \"/\")) NIL NIL");
                self.ok(&tag, None, "NAMESPACE completed");
            }
            (C::Idle, _) => {
                self.output.extend_from_slice(b"+ idling\r\n");
                self.phase = Phase::Idle(tag);
                self.raise(Event::Idle);
                // The session reads on for DONE while the driver waits.
                self.busy = false;
                // A whole idle timeout from here: clients re-issue IDLE
                // every 29 minutes (RFC 2177), however long they were
                // silent before it.
                self.timers.expect_request(self.config.idle_timeout);
            }
            (
                C::Check
                | C::Close
                | C::Unselect
                | C::Expunge
                | C::ExpungeUid { .. }
                | C::Search { .. }
                | C::Fetch { .. }
                | C::Store { .. }
                | C::Copy { .. }
                | C::Move { .. },
                State::Authenticated,
            ) => self.bad(&tag, "no mailbox selected"),
            (
                C::Noop
                | C::Select { .. }
                | C::Examine { .. }
                | C::Create { .. }
                | C::Delete { .. }
                | C::Rename { .. }
                | C::Subscribe { .. }
                | C::Unsubscribe { .. }
                | C::List { .. }
                | C::Lsub { .. }
                | C::Status { .. }
                | C::Append { .. }
                | C::Check
                | C::Close
                | C::Unselect
                | C::Expunge
                | C::ExpungeUid { .. }
                | C::Search { .. }
                | C::Fetch { .. }
                | C::Store { .. }
                | C::Copy { .. }
                | C::Move { .. }
                | C::Sort { .. }
                | C::Thread { .. }
                | C::GetQuota { .. }
                | C::GetQuotaRoot { .. }
                | C::SetQuota { .. },
                _,
            ) => self.raise(Event::Command {
                tag,
                body: Box::new(body),
                extra,
            }),
        }
    }

    /// Go on with an AUTHENTICATE exchange: challenge, ask the driver, or
    /// refuse.
    fn sasl_step(&mut self, tag: Tag<'static>, exchange: Exchange, step: Step) {
        match step {
            Step::Challenge(challenge) => {
                self.output.extend_from_slice(b"+ ");
                self.output.extend_from_slice(challenge.as_bytes());
                self.output.extend_from_slice(b"\r\n");
                self.phase = Phase::SaslResponse(tag, exchange);
            }
            Step::Done(credentials) => self.raise(Event::Login {
                tag,
                mechanism: match credentials.mechanism {
                    Mechanism::Plain => "AUTHENTICATE PLAIN",
                    Mechanism::Login => "AUTHENTICATE LOGIN",
                },
                user: credentials.user,
                password: credentials.password,
            }),
            Step::Failed(Failure::Cancelled) => {
                self.tagged(&tag, "BAD", None, "authentication cancelled")
            }
            Step::Failed(Failure::BadBase64) => self.bad(&tag, "invalid base64"),
            Step::Failed(Failure::Malformed) => self.bad(&tag, "malformed credentials"),
            Step::Failed(Failure::AuthzidRefused) => self.no(
                &tag,
                Some("AUTHORIZATIONFAILED"),
                "cannot act for another user",
            ),
        }
    }
}

impl Session for ImapSession {
    type Event = Event;

    fn receive(&mut self, now: Instant, input: &[u8]) -> usize {
        self.handle_timeout(now);
        if !self.is_closed() {
            self.feed(input);
        }
        input.len()
    }

    fn poll_event(&mut self) -> Option<Event> {
        ImapSession::poll_event(self)
    }

    fn output(&self) -> &[u8] {
        ImapSession::output(self)
    }

    fn clear_output(&mut self) {
        ImapSession::clear_output(self)
    }

    fn is_closed(&self) -> bool {
        ImapSession::is_closed(self)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        if self.busy || self.event.is_some() || self.is_closed() {
            return None;
        }
        self.timers.next(None)
    }

    fn handle_timeout(&mut self, now: Instant) {
        if self.timers.tell(now) {
            self.timers.expect_request(self.config.idle_timeout);
            if self.state == State::NotAuthenticated {
                self.timers.limit_life(Some(self.config.login_timeout));
            }
        }
        let waiting = self.busy || self.event.is_some();
        if !waiting && self.timers.expired(None) {
            self.timed_out();
        }
    }

    fn shutdown(&mut self) {
        ImapSession::shutdown(self)
    }

    fn buffered(&self) -> usize {
        self.framing.message_bytes().len()
    }

    fn has_more_to_run(&self) -> bool {
        self.held_back
    }
}
