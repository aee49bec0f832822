//! The IMAP session: framing (lines and literals), tags, connection states,
//! login, IDLE, and the commands that need nothing from the store.
//!
//! Everything that touches mailboxes comes out as an [`Event`] for the
//! driver, which runs it against the store and writes the responses with
//! [`ImapSession::data`] and friends. The session checks that a command is
//! valid in the current state before the driver sees it, so the driver
//! never has to.

use imap_codec::encode::Encoder;
use imap_codec::fragmentizer::{FragmentInfo, Fragmentizer, LiteralAnnouncement};
use imap_codec::imap_types::auth::AuthMechanism;
use imap_codec::imap_types::command::{Command, CommandBody};
use imap_codec::imap_types::core::{LiteralMode, Tag};
use imap_codec::imap_types::response::{Data, Response};
use imap_codec::imap_types::IntoStatic;
use imap_codec::{AuthenticateDataCodec, CommandCodec, IdleDoneCodec, ResponseCodec};
use std::sync::Arc;

/// What the server advertises; the same before and after login.
pub const CAPABILITIES: &str = "IMAP4rev2 IMAP4rev1 LITERAL+ SASL-IR AUTH=PLAIN ENABLE IDLE \
     NAMESPACE ID UNSELECT UIDPLUS MOVE CHILDREN";

/// Limits and identity shared by every session of a listener.
#[derive(Debug, Clone)]
pub struct ImapConfig {
    /// Name in the greeting.
    pub hostname: String,
    /// Largest command in octets, literals included (APPEND carries a
    /// whole message); larger ones get BAD and are never buffered whole.
    pub max_command_size: u32,
    /// BAD responses tolerated before the session is closed.
    pub max_errors: usize,
}

impl Default for ImapConfig {
    fn default() -> Self {
        ImapConfig {
            hostname: "localhost".into(),
            max_command_size: 50 * 1024 * 1024 + 64 * 1024,
            max_errors: 20,
        }
    }
}

/// Something the driver must act on. Until it answers (a tagged response,
/// or [`ImapSession::idle_done`]), the session reads no further command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// LOGIN or AUTHENTICATE PLAIN: answer with
    /// [`ImapSession::login_succeeded`] or [`ImapSession::login_failed`].
    Login {
        /// The command's tag.
        tag: Tag<'static>,
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
    },
    /// IDLE began (`+ idling` is written). Send updates with
    /// [`ImapSession::data`] as they happen; the client ends it with DONE.
    Idle,
    /// DONE ended the IDLE: send the last updates, then
    /// [`ImapSession::idle_done`].
    IdleDone,
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
    /// The client's answer to an AUTHENTICATE PLAIN continuation.
    SaslResponse(Tag<'static>),
    /// Waiting for DONE.
    Idle(Tag<'static>),
}

/// One IMAP connection, server side.
///
/// Feed it bytes, take events, write [`ImapSession::output`]; close the
/// connection once [`ImapSession::is_closed`] and the output is written.
pub struct ImapSession {
    config: Arc<ImapConfig>,
    framing: Fragmentizer,
    state: State,
    phase: Phase,
    /// An event is out and not answered yet.
    busy: bool,
    event: Option<Event>,
    output: Vec<u8>,
    errors: usize,
}

impl ImapSession {
    /// A new session with the greeting queued.
    pub fn new(config: Arc<ImapConfig>) -> Self {
        let mut session = ImapSession {
            framing: Fragmentizer::new(config.max_command_size),
            config,
            state: State::NotAuthenticated,
            phase: Phase::Command,
            busy: false,
            event: None,
            output: Vec::with_capacity(1024),
            errors: 0,
        };
        let greeting = format!(
            "* OK [CAPABILITY {CAPABILITIES}] {} IMAP4rev2 server ready\r\n",
            session.config.hostname
        );
        session.output.extend_from_slice(greeting.as_bytes());
        session
    }

    /// Take in bytes read from the client and process what can be. All of
    /// `input` is taken; what cannot be processed yet waits inside. After
    /// answering an event, call it again (with no bytes) to go on with
    /// commands already received.
    pub fn feed(&mut self, input: &[u8]) {
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
        self.output.clear();
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

    // -- answers ---------------------------------------------------------

    /// Answer [`Event::Login`]: the session is authenticated.
    pub fn login_succeeded(&mut self, tag: &Tag<'_>) {
        self.state = State::Authenticated;
        let text = format!("[CAPABILITY {CAPABILITIES}] logged in");
        self.ok(tag, None, &text);
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
        // The next pipelined command is read at the next `feed`.
        self.busy = false;
    }

    fn bye(&mut self, text: &str) {
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
        while !self.busy && self.event.is_none() && self.state != State::Logout {
            let Some(fragment) = self.framing.progress() else {
                return;
            };
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
        let fits = (self.framing.message_bytes().len() as u64 + u64::from(length))
            <= u64::from(self.config.max_command_size);
        match (mode, fits) {
            (LiteralMode::Sync, true) => self.output.extend_from_slice(b"+ go ahead\r\n"),
            (LiteralMode::Sync, false) => {
                let tag = self.framing.decode_tag().map(IntoStatic::into_static);
                self.framing.skip_message();
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
            Phase::SaslResponse(tag) => {
                self.phase = Phase::Command;
                let decoded = self
                    .framing
                    .decode_message(&AuthenticateDataCodec::default())
                    .map(|data| data.into_static());
                match decoded {
                    Ok(imap_codec::imap_types::auth::AuthenticateData::Continue(data)) => {
                        self.plain(tag, data.declassify().clone())
                    }
                    Ok(_) => self.tagged(&tag, "BAD", None, "authentication cancelled"),
                    Err(_) => self.bad(&tag, "invalid base64"),
                }
            }
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
        let decoded = self
            .framing
            .decode_message(&CommandCodec::default())
            .map(|command| command.into_static());
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
                match tag {
                    Some(tag) => self.bad(&tag, text),
                    None => {
                        self.untagged(&format!("BAD {text}"));
                        self.count_error();
                    }
                }
                return;
            }
        };
        let Command { tag, body } = command;
        self.dispatch(tag, body);
    }

    fn dispatch(&mut self, tag: Tag<'static>, body: CommandBody<'static>) {
        use CommandBody as C;
        match (&body, self.state) {
            (C::Capability, _) => {
                self.untagged(&format!("CAPABILITY {CAPABILITIES}"));
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
            (C::Login { username, password }, State::NotAuthenticated) => {
                let user = String::from_utf8_lossy(username.as_ref()).into_owned();
                let password = String::from_utf8_lossy(password.declassify().as_ref()).into_owned();
                self.raise(Event::Login {
                    tag,
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
                if *mechanism != AuthMechanism::Plain {
                    return self.no(&tag, None, "unsupported mechanism");
                }
                match initial_response {
                    Some(response) => {
                        let response = response.declassify().to_vec();
                        self.plain(tag, response.into());
                    }
                    None => {
                        self.output.extend_from_slice(b"+ \r\n");
                        self.phase = Phase::SaslResponse(tag);
                    }
                }
            }
            (C::Login { .. } | C::Authenticate { .. }, _) => {
                self.bad(&tag, "already authenticated")
            }
            (_, State::NotAuthenticated) => self.bad(&tag, "log in first"),
            (C::Enable { .. }, _) => {
                // Nothing changes with IMAP4rev2 or UTF8=ACCEPT for us:
                // names and flags are passed through as they come.
                self.untagged("ENABLED");
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
                | C::Move { .. },
                _,
            ) => self.raise(Event::Command {
                tag,
                body: Box::new(body),
            }),
            _ => self.bad(&tag, "command not supported"),
        }
    }

    /// An AUTHENTICATE PLAIN response: authzid NUL authcid NUL password.
    fn plain(&mut self, tag: Tag<'static>, response: std::borrow::Cow<'_, [u8]>) {
        let mut parts = response.split(|&b| b == 0);
        let (Some(authzid), Some(user), Some(password), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return self.bad(&tag, "malformed PLAIN response");
        };
        if !authzid.is_empty() && authzid != user {
            return self.no(
                &tag,
                Some("AUTHORIZATIONFAILED"),
                "cannot act for another user",
            );
        }
        self.raise(Event::Login {
            tag,
            user: String::from_utf8_lossy(user).into_owned(),
            password: String::from_utf8_lossy(password).into_owned(),
        });
    }
}
