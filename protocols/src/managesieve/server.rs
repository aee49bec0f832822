//! The ManageSieve server session: [`ManageSieveSession`] and the types
//! it hands the driver.
//!
//! ```text
//!   greeting (capabilities) ──AUTHENTICATE──▶ [SASL exchange] ──▶ AwaitAuth
//!        │   ▲                                   ├─ auth_succeeded ─▶ logged in
//!        │   └─ tls_established ◀── AwaitTls     └─ auth_failed ────▶ back
//!        └─STARTTLS─┘
//!   logged in ──PUTSCRIPT, LISTSCRIPTS, SETACTIVE, GETSCRIPT, DELETESCRIPT,
//!               RENAMESCRIPT──▶ AwaitScripts ──answer──▶ logged in
//!   any ──LOGOUT, too many errors, timeout, shutdown──▶ closed
//! ```
//!
//! CAPABILITY, NOOP, CHECKSCRIPT and HAVESPACE are answered here; script
//! storage is the driver's ([`Event::Scripts`]). A script is checked here
//! before the driver sees a PUTSCRIPT, so a broken one is never stored.
//!
//! Limits: before login a command may hold at most [`MAX_LOGIN_COMMAND`]
//! octets, so a stranger cannot make the server hold a script-sized
//! buffer; after login a literal may be as large as a script can be
//! ([`sieve::MAX_SCRIPT_SIZE`]), and one announced larger ends the
//! session. Waiting phases take no input, so pipelined commands wait
//! their turn; bytes that arrive between STARTTLS and the handshake are
//! dropped (they came in plaintext).

use super::command::{self, Arg, Parsed};
use crate::sasl::{self, Credentials, Exchange, Mechanism, Step};
use crate::session::{self, Peer, Session, Timers};
use crate::sieve;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Most octets of a command before login (AUTHENTICATE with its initial
/// response is the largest that makes sense).
pub const MAX_LOGIN_COMMAND: usize = 8 * 1024;

/// Answers waiting to be written past which no more commands are run.
pub const OUTPUT_HIGH_WATER: usize = 64 * 1024;

/// Largest script literal refused with `NO (QUOTA/MAXSIZE)` while the
/// session goes on (its octets are dropped as they come); a larger one
/// ends the session.
pub const MAX_DISCARD: usize = 16 * 1024 * 1024;

/// Settings shared by every session of a listener.
#[derive(Debug, Clone)]
pub struct ManageSieveConfig {
    /// Shown in the IMPLEMENTATION capability and the greeting.
    pub hostname: String,
    /// STARTTLS is offered (the driver has a certificate).
    pub tls_available: bool,
    /// Client silence after which the session ends.
    pub idle_timeout: Duration,
    /// How long a client may stay without logging in.
    pub login_timeout: Duration,
    /// Errors tolerated before the session is closed.
    pub max_errors: usize,
}

impl Default for ManageSieveConfig {
    fn default() -> Self {
        ManageSieveConfig {
            hostname: "localhost".into(),
            tls_available: false,
            idle_timeout: Duration::from_secs(600),
            login_timeout: Duration::from_secs(120),
            max_errors: 10,
        }
    }
}

/// What the driver must do. Each pauses the session until answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Check these credentials; answer with
    /// [`ManageSieveSession::auth_succeeded`],
    /// [`ManageSieveSession::auth_failed`],
    /// [`ManageSieveSession::auth_locked_out`] or
    /// [`ManageSieveSession::auth_unavailable`].
    Authenticate(Credentials),
    /// STARTTLS was accepted: write the output, drop unread input, run the
    /// handshake, then call [`ManageSieveSession::tls_established`].
    StartTls,
    /// Work on the logged-in user's scripts; answer with
    /// [`ManageSieveSession::answer`].
    Scripts {
        /// The account.
        user: String,
        /// What to do.
        request: Request,
    },
}

/// A script operation (RFC 5804 §2.6–§2.11).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// PUTSCRIPT: store (checked already). Answer [`Answer::Done`].
    Put {
        /// Its name.
        name: String,
        /// Its text.
        text: Vec<u8>,
    },
    /// HAVESPACE of a size within the limit: is there a place for a
    /// script of this name? Answer [`Answer::Done`] or `QUOTA/MAXSCRIPTS`.
    HaveSpace(String),
    /// LISTSCRIPTS. Answer [`Answer::Listing`].
    List,
    /// SETACTIVE; `None` for the empty name (no script active).
    Activate(Option<String>),
    /// GETSCRIPT. Answer [`Answer::Script`].
    Get(String),
    /// DELETESCRIPT.
    Delete(String),
    /// RENAMESCRIPT.
    Rename {
        /// The old name.
        from: String,
        /// The new one.
        to: String,
    },
}

/// The driver's answer to [`Event::Scripts`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Done.
    Done,
    /// The scripts: name, and whether it is the active one.
    Listing(Vec<(String, bool)>),
    /// A script's text.
    Script(Vec<u8>),
    /// Refused: a response code (`NONEXISTENT`, `ACTIVE`, `ALREADYEXISTS`,
    /// `QUOTA/MAXSCRIPTS`, `TRYLATER`) and what to say.
    No(Option<&'static str>, String),
}

#[derive(Debug)]
enum Phase {
    /// Reading commands.
    Command,
    /// In a SASL exchange: the next line is the client's answer.
    Sasl(Exchange),
    /// Waiting for the driver's verdict on credentials.
    AwaitAuth,
    /// Waiting for the TLS handshake.
    AwaitTls,
    /// Waiting for the driver's answer on scripts.
    AwaitScripts,
    /// Over.
    Closed,
}

/// One ManageSieve connection's state.
#[derive(Debug)]
pub struct ManageSieveSession {
    config: Arc<ManageSieveConfig>,
    phase: Phase,
    tls: bool,
    plaintext_auth: bool,
    user: Option<String>,
    input: Vec<u8>,
    /// Parse again only once the input holds this many octets.
    need: usize,
    /// Octets of a refused literal still to drop.
    discard: usize,
    /// After them, drop the rest of the command's line, then answer it.
    skip_line: bool,
    output: Vec<u8>,
    event: Option<Event>,
    errors: usize,
    timers: Timers,
}

impl ManageSieveSession {
    /// A session for `peer`; the greeting (the capabilities) is queued.
    pub fn new(config: Arc<ManageSieveConfig>, peer: Peer) -> Self {
        let mut session = ManageSieveSession {
            config,
            phase: Phase::Command,
            tls: peer.implicit_tls,
            plaintext_auth: peer.plaintext_auth,
            user: None,
            input: Vec::new(),
            need: 0,
            discard: 0,
            skip_line: false,
            output: Vec::with_capacity(512),
            event: None,
            errors: 0,
            timers: Timers::default(),
        };
        session.capabilities();
        session.ok(None, "ManageSieve ready");
        session
    }

    /// Logged in.
    pub fn is_authenticated(&self) -> bool {
        self.user.is_some()
    }

    /// The credentials were good: `user` is the account's name.
    pub fn auth_succeeded(&mut self, user: String) {
        if self.resume(|p| matches!(p, Phase::AwaitAuth)) {
            self.user = Some(user);
            self.ok(None, "Logged in");
            self.timers.limit_life(None);
        }
    }

    /// The credentials were wrong (or the account is locked out).
    pub fn auth_failed(&mut self) {
        if self.resume(|p| matches!(p, Phase::AwaitAuth)) {
            self.no(None, "Authentication failed");
            self.count_error();
        }
    }

    /// Too many failed logins from this client or for this account: no
    /// password is checked until the lockout ends.
    pub fn auth_locked_out(&mut self) {
        if self.resume(|p| matches!(p, Phase::AwaitAuth)) {
            self.no(Some("TRYLATER"), "Too many failed logins; try again later");
            self.count_error();
        }
    }

    /// Credentials could not be checked now.
    pub fn auth_unavailable(&mut self) {
        if self.resume(|p| matches!(p, Phase::AwaitAuth)) {
            self.no(
                Some("TRYLATER"),
                "Authentication is unavailable, try again later",
            );
        }
    }

    /// TLS is up: the capabilities are sent again (RFC 5804 §2.2).
    pub fn tls_established(&mut self) {
        if self.resume(|p| matches!(p, Phase::AwaitTls)) {
            self.tls = true;
            self.input.clear();
            self.need = 0;
            self.discard = 0;
            self.skip_line = false;
            self.capabilities();
            self.ok(None, "TLS negotiation successful");
        }
    }

    /// The driver's answer to [`Event::Scripts`].
    pub fn answer(&mut self, answer: Answer) {
        if !self.resume(|p| matches!(p, Phase::AwaitScripts)) {
            return;
        }
        match answer {
            Answer::Done => self.ok(None, "Done"),
            Answer::Listing(scripts) => {
                for (name, active) in scripts {
                    write_string(&mut self.output, name.as_bytes());
                    if active {
                        self.output.extend_from_slice(b" ACTIVE");
                    }
                    self.output.extend_from_slice(b"\r\n");
                }
                self.ok(None, "Listscripts completed");
            }
            Answer::Script(text) => {
                write_literal(&mut self.output, &text);
                self.output.extend_from_slice(b"\r\n");
                self.ok(None, "Getscript completed");
            }
            Answer::No(code, text) => self.no(code, &text),
        }
    }

    fn resume(&mut self, waiting: impl Fn(&Phase) -> bool) -> bool {
        if !waiting(&self.phase) {
            return false;
        }
        self.phase = Phase::Command;
        self.timers.expect_request(self.config.idle_timeout);
        true
    }

    fn waiting(&self) -> bool {
        matches!(
            self.phase,
            Phase::AwaitAuth | Phase::AwaitTls | Phase::AwaitScripts
        )
    }

    /// Take input; returns how much was consumed.
    pub fn feed(&mut self, input: &[u8]) -> usize {
        if matches!(self.phase, Phase::AwaitTls) {
            // Plaintext after STARTTLS: never run as a command.
            return input.len();
        }
        if self.waiting()
            || matches!(self.phase, Phase::Closed)
            || self.output.len() >= OUTPUT_HIGH_WATER
        {
            return 0;
        }
        // The octets of a refused literal pass straight through.
        let skipped = self.skip(input);
        let input = &input[skipped..];
        // Never hold more than one command may be: the rest waits in the
        // driver's buffer until this is run.
        let room = self.max_held().saturating_sub(self.input.len());
        let taken = input.len().min(room);
        self.input.extend_from_slice(&input[..taken]);
        self.run();
        skipped + taken
    }

    /// Drop what is left of a refused literal from the front of `input`,
    /// then the rest of its command's line, then answer the command;
    /// returns how much was dropped.
    fn skip(&mut self, input: &[u8]) -> usize {
        let mut used = 0;
        if self.discard > 0 {
            used = input.len().min(self.discard);
            self.discard -= used;
            if self.discard > 0 {
                return used;
            }
        }
        if !self.skip_line {
            return used;
        }
        match memchr::memchr(b'\n', &input[used..]) {
            None => input.len(),
            Some(lf) => {
                self.skip_line = false;
                self.no(Some("QUOTA/MAXSIZE"), "Script too large");
                used + lf + 1
            }
        }
    }

    /// The most input held at once: a command at its largest.
    fn max_held(&self) -> usize {
        match self.user {
            Some(_) => sieve::MAX_SCRIPT_SIZE + 4096,
            None => MAX_LOGIN_COMMAND,
        }
    }

    /// The largest literal taken now; a command may be a little longer.
    fn limit(&self) -> usize {
        match self.user {
            Some(_) => sieve::MAX_SCRIPT_SIZE,
            None => MAX_LOGIN_COMMAND,
        }
    }

    fn run(&mut self) {
        // Commands are taken from `read` on; the buffer is moved down once,
        // at the end, however many there were.
        let mut read = 0;
        while !self.waiting()
            && !matches!(self.phase, Phase::Closed)
            && self.output.len() < OUTPUT_HIGH_WATER
            && read < self.input.len()
            && self.input.len() - read >= self.need
        {
            if self.discard > 0 || self.skip_line {
                let input = std::mem::take(&mut self.input);
                read += self.skip(&input[read..]);
                self.input = input;
                continue;
            }
            let limit = self.limit();
            if let Phase::Sasl(_) = self.phase {
                match self.sasl_line(read, limit) {
                    Some(used) => read += used,
                    None => break,
                }
                continue;
            }
            match command::parse(&self.input[read..], limit) {
                Parsed::Incomplete(need) => {
                    let most = self.max_held();
                    if need > most || self.input.len() - read >= most {
                        return self.bye("Command too long");
                    }
                    self.need = need;
                    break;
                }
                // After login a script too large is refused and the session
                // goes on (RFC 5804 §2.6); a stranger's is the end of it.
                Parsed::TooLarge { from, size } if self.user.is_some() && size <= MAX_DISCARD => {
                    read += from;
                    self.need = 0;
                    self.discard = size;
                    self.skip_line = true;
                }
                Parsed::TooLarge { .. } => return self.bye("Literal too large"),
                Parsed::Bad { why, used } => {
                    let Some(used) = used else {
                        return self.bye(why);
                    };
                    read += used;
                    self.need = 0;
                    self.no(None, why);
                    self.count_error();
                }
                Parsed::Command { name, args, used } => {
                    read += used;
                    self.need = 0;
                    self.timers.expect_request(self.config.idle_timeout);
                    self.command(&name, args);
                }
            }
        }
        if matches!(self.phase, Phase::Closed) {
            self.input = Vec::new();
            return;
        }
        self.input.drain(..read.min(self.input.len()));
        // A script-sized buffer is not kept for the commands after it.
        if self.input.capacity() > 64 * 1024 && self.input.len() < 16 * 1024 {
            self.input.shrink_to(16 * 1024);
        }
    }

    /// The client's answer in a SASL exchange, a string on its own line,
    /// from `read` on; how much it took, `None` until it is whole.
    fn sasl_line(&mut self, read: usize, limit: usize) -> Option<usize> {
        let parsed = command::parse(&[b"X ", &self.input[read..]].concat(), limit);
        let (args, used) = match parsed {
            Parsed::Incomplete(need) => {
                if need > limit {
                    self.bye("Response too long");
                }
                self.need = need.saturating_sub(2);
                return None;
            }
            Parsed::Command { args, used, .. } => (args, used - 2),
            Parsed::Bad {
                used: Some(used), ..
            } => (Vec::new(), used - 2),
            Parsed::Bad { used: None, .. } | Parsed::TooLarge { .. } => {
                self.bye("Malformed authentication response");
                return None;
            }
        };
        self.need = 0;
        let Phase::Sasl(mut exchange) = std::mem::replace(&mut self.phase, Phase::Command) else {
            return Some(used);
        };
        let step = match args.as_slice() {
            [Arg::String(s)] => match std::str::from_utf8(s) {
                Ok(text) => exchange.respond(text),
                Err(_) => Step::Failed(sasl::Failure::BadBase64),
            },
            _ => Step::Failed(sasl::Failure::Malformed),
        };
        self.sasl_step(exchange, step);
        Some(used)
    }

    fn sasl_step(&mut self, exchange: Exchange, step: Step) {
        match step {
            Step::Challenge(challenge) => {
                write_string(&mut self.output, challenge.as_bytes());
                self.output.extend_from_slice(b"\r\n");
                self.phase = Phase::Sasl(exchange);
            }
            Step::Done(credentials) => {
                self.phase = Phase::AwaitAuth;
                self.event = Some(Event::Authenticate(credentials));
            }
            Step::Failed(sasl::Failure::Cancelled) => self.no(None, "Authentication cancelled"),
            // Acting as another user is not offered: a failed login.
            Step::Failed(sasl::Failure::AuthzidRefused) => {
                self.no(None, "Authentication failed");
                self.count_error();
            }
            Step::Failed(_) => {
                self.no(None, "Malformed authentication response");
                self.count_error();
            }
        }
    }

    fn command(&mut self, name: &str, args: Vec<Arg>) {
        // Argument `i` as a UTF-8 string (script names are, §1.6).
        let text = |i: usize| match args.get(i) {
            Some(Arg::String(s)) => String::from_utf8(s.clone()).ok(),
            _ => None,
        };
        match (name, self.user.clone()) {
            ("CAPABILITY", _) if args.is_empty() => {
                self.capabilities();
                self.ok(None, "Capability completed");
            }
            ("NOOP", _) => match args.as_slice() {
                [] => self.ok(None, "NOOP completed"),
                [Arg::String(tag)] => {
                    let mut code = b"TAG ".to_vec();
                    write_string(&mut code, tag);
                    self.ok(Some(&code), "Done");
                }
                _ => self.bad_args(),
            },
            ("LOGOUT", _) => {
                self.ok(None, "Logout completed");
                self.phase = Phase::Closed;
            }
            ("STARTTLS", None) if args.is_empty() => {
                if self.tls || !self.config.tls_available {
                    self.no(None, "STARTTLS is not available");
                    return self.count_error();
                }
                self.ok(None, "Begin TLS negotiation now");
                self.phase = Phase::AwaitTls;
                self.event = Some(Event::StartTls);
            }
            ("AUTHENTICATE", None) => self.authenticate(&args),
            ("AUTHENTICATE" | "STARTTLS", Some(_)) => {
                self.no(None, "Already logged in");
                self.count_error();
            }
            ("CHECKSCRIPT", Some(_)) => match args.as_slice() {
                [Arg::String(script)] => match sieve::check(script) {
                    Ok(_) => self.ok(None, "Script is valid"),
                    Err(e) => self.no(None, &e.to_string()),
                },
                _ => self.bad_args(),
            },
            ("HAVESPACE", Some(user)) => match (text(0), args.get(1)) {
                (Some(name), Some(Arg::Number(size))) if args.len() == 2 => {
                    if *size as usize > sieve::MAX_SCRIPT_SIZE {
                        self.no(Some("QUOTA/MAXSIZE"), "Script too large");
                    } else {
                        self.ask(user, Request::HaveSpace(name));
                    }
                }
                _ => self.bad_args(),
            },
            ("PUTSCRIPT", Some(user)) => match (text(0), args.get(1), args.len()) {
                (Some(name), Some(Arg::String(script)), 2) => match sieve::check(script) {
                    Ok(_) => self.ask(
                        user,
                        Request::Put {
                            name,
                            text: script.clone(),
                        },
                    ),
                    Err(e) => self.no(None, &e.to_string()),
                },
                _ => self.bad_args(),
            },
            ("LISTSCRIPTS", Some(user)) if args.is_empty() => self.ask(user, Request::List),
            ("SETACTIVE", Some(user)) => match (text(0), args.len()) {
                (Some(name), 1) => {
                    let name = (!name.is_empty()).then_some(name);
                    self.ask(user, Request::Activate(name))
                }
                _ => self.bad_args(),
            },
            ("GETSCRIPT", Some(user)) => match (text(0), args.len()) {
                (Some(name), 1) => self.ask(user, Request::Get(name)),
                _ => self.bad_args(),
            },
            ("DELETESCRIPT", Some(user)) => match (text(0), args.len()) {
                (Some(name), 1) => self.ask(user, Request::Delete(name)),
                _ => self.bad_args(),
            },
            ("RENAMESCRIPT", Some(user)) => match (text(0), text(1), args.len()) {
                (Some(from), Some(to), 2) => self.ask(user, Request::Rename { from, to }),
                _ => self.bad_args(),
            },
            (
                "CHECKSCRIPT" | "HAVESPACE" | "PUTSCRIPT" | "LISTSCRIPTS" | "SETACTIVE"
                | "GETSCRIPT" | "DELETESCRIPT" | "RENAMESCRIPT",
                None,
            ) => {
                self.no(None, "Log in first");
                self.count_error();
            }
            _ => {
                self.no(None, "Unknown command or wrong arguments");
                self.count_error();
            }
        }
    }

    fn bad_args(&mut self) {
        self.no(None, "Wrong arguments");
        self.count_error();
    }

    fn ask(&mut self, user: String, request: Request) {
        self.phase = Phase::AwaitScripts;
        self.event = Some(Event::Scripts { user, request });
    }

    fn authenticate(&mut self, args: &[Arg]) {
        let (mechanism, initial) = match args {
            [Arg::String(m)] => (m, None),
            [Arg::String(m), Arg::String(i)] => (m, Some(i)),
            _ => return self.bad_args(),
        };
        let Some(mechanism) = std::str::from_utf8(mechanism)
            .ok()
            .and_then(Mechanism::from_name)
        else {
            self.no(None, "Unsupported authentication mechanism");
            return self.count_error();
        };
        if !self.tls && !self.plaintext_auth {
            self.no(Some("ENCRYPT-NEEDED"), "Use STARTTLS first");
            return self.count_error();
        }
        let initial = initial.map(|i| String::from_utf8_lossy(i).into_owned());
        let (exchange, step) = Exchange::start(mechanism, initial.as_deref());
        self.sasl_step(exchange, step);
    }

    fn capabilities(&mut self) {
        // An empty list is only right where STARTTLS is offered (RFC 5804
        // §1.7); without TLS at all the mechanisms are listed, and a
        // login refused with ENCRYPT-NEEDED says why.
        let usable = self.tls || self.plaintext_auth || !self.config.tls_available;
        let mechanisms = match usable {
            true => sasl::MECHANISMS.map(Mechanism::name).join(" "),
            false => String::new(),
        };
        let mut line = |key: &str, value: Option<&str>| {
            write_string(&mut self.output, key.as_bytes());
            if let Some(value) = value {
                self.output.push(b' ');
                write_string(&mut self.output, value.as_bytes());
            }
            self.output.extend_from_slice(b"\r\n");
        };
        line("IMPLEMENTATION", Some("ringpost"));
        line("SASL", Some(&mechanisms));
        line("SIEVE", Some(sieve::EXTENSIONS));
        line("MAXREDIRECTS", Some(&sieve::MAX_REDIRECTS.to_string()));
        if !self.tls && self.config.tls_available && self.user.is_none() {
            line("STARTTLS", None);
        }
        line("VERSION", Some("1.0"));
    }

    fn ok(&mut self, code: Option<&[u8]>, text: &str) {
        self.response(b"OK", code, text);
    }

    fn no(&mut self, code: Option<&str>, text: &str) {
        self.response(b"NO", code.map(str::as_bytes), text);
    }

    fn response(&mut self, kind: &[u8], code: Option<&[u8]>, text: &str) {
        self.output.extend_from_slice(kind);
        if let Some(code) = code {
            self.output.extend_from_slice(b" (");
            self.output.extend_from_slice(code);
            self.output.push(b')');
        }
        self.output.push(b' ');
        write_string(&mut self.output, text.as_bytes());
        self.output.extend_from_slice(b"\r\n");
    }

    fn bye(&mut self, text: &str) {
        self.response(b"BYE", None, text);
        self.phase = Phase::Closed;
        self.input = Vec::new();
    }

    fn count_error(&mut self) {
        self.errors += 1;
        if self.errors >= self.config.max_errors && !matches!(self.phase, Phase::Closed) {
            self.bye("Too many errors");
        }
    }

    /// The next event for the driver.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.event.take()
    }

    /// The server is stopping.
    pub fn shutdown(&mut self) {
        if !matches!(self.phase, Phase::Closed) {
            self.bye("Server shutting down");
        }
    }
}

/// A string as ManageSieve writes it: quoted when it can be, a literal
/// when it holds a line end, a quote's trouble or many octets.
fn write_string(out: &mut Vec<u8>, s: &[u8]) {
    if s.len() > 1024 || s.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0) {
        return write_literal(out, s);
    }
    out.push(b'"');
    for &b in s {
        if b == b'"' || b == b'\\' {
            out.push(b'\\');
        }
        out.push(b);
    }
    out.push(b'"');
}

fn write_literal(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(format!("{{{}}}\r\n", s.len()).as_bytes());
    out.extend_from_slice(s);
}

impl Session for ManageSieveSession {
    type Event = Event;

    fn receive(&mut self, now: Instant, input: &[u8]) -> usize {
        self.handle_timeout(now);
        self.feed(input)
    }

    fn poll_event(&mut self) -> Option<Event> {
        ManageSieveSession::poll_event(self)
    }

    fn output(&self) -> &[u8] {
        &self.output
    }

    fn clear_output(&mut self) {
        session::clear_output(&mut self.output);
    }

    fn is_closed(&self) -> bool {
        matches!(self.phase, Phase::Closed)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        if self.waiting() || self.is_closed() {
            return None;
        }
        self.timers.next(None)
    }

    fn output_written(&mut self, now: Instant) {
        if self.timers.started() && !self.waiting() && !self.is_closed() {
            self.timers.tell(now);
            self.timers.expect_request(self.config.idle_timeout);
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        if self.timers.tell(now) {
            self.timers.expect_request(self.config.idle_timeout);
            if self.user.is_none() {
                self.timers.limit_life(Some(self.config.login_timeout));
            }
        }
        if !self.waiting() && !self.is_closed() && self.timers.expired(None) {
            self.bye("Disconnected for inactivity");
        }
    }

    fn has_more_to_run(&self) -> bool {
        !self.input.is_empty()
            && self.input.len() >= self.need
            && !self.waiting()
            && !self.is_closed()
    }

    fn shutdown(&mut self) {
        ManageSieveSession::shutdown(self)
    }

    fn buffered(&self) -> usize {
        self.input.capacity()
    }
}
