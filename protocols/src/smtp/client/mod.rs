//! SMTP (RFC 5321) for the client side: one [`ClientSession`] per outbound
//! connection, sending one message at a time, or several back to back when
//! the server takes BDAT with PIPELINING (see [`ClientSession::can_send`]).
//!
//! # Driving a session
//! 1. Connect, then [`ClientSession::new`]; it waits for the greeting.
//! 2. Read bytes from the socket and [`ClientSession::feed`] them; it consumes
//!    whole reply lines and returns how many bytes. Keep the rest (an
//!    unfinished line, or replies after a pause, see below) and feed it again
//!    with what comes next. At end of stream call [`ClientSession::eof`].
//! 3. After every call, drain [`ClientSession::poll_event`], then write
//!    [`ClientSession::output`] and [`ClientSession::clear_output`].
//! 4. [`ClientEvent::Ready`] and [`ClientEvent::Finished`] hand the turn to
//!    the driver: `feed` stops right after them, and the driver answers with
//!    [`ClientSession::send`] or [`ClientSession::quit`] before feeding the
//!    rest. Transactions finish in the order they were sent. On [`ClientEvent::StartTls`], wrap the socket in TLS and call
//!    [`ClientSession::tls_established`].
//! 5. After [`ClientEvent::Failed`] or [`ClientEvent::Closed`] the session
//!    reads nothing more; write what output is left (best effort: it may hold
//!    a QUIT) and close the socket.
//!
//! There is no clock: [`ClientSession::phase`] names the reply being waited
//! for, and the driver applies the RFC 5321 §4.5.3.2 timeout for it. On a
//! timeout it simply drops the connection; the undecided recipients of a
//! transaction in progress should be treated as a transient failure.
//!
//! # Layout
//! - `reply`: assembles replies out of the stream, bounded by
//!   [`ClientConfig::max_reply_len`]; [`ServerReply`]; the replies the client
//!   makes up itself.
//! - `extensions`: the EHLO keywords, [`Extensions`].
//! - `command`: command lines and message content (dot-stuffing) on the wire.
//! - this module: the session that ties them together.
//!
//! # Choices where the RFCs leave room
//! - A 5xx to EHLO falls back to HELO; a 4xx does not (it would fail too).
//! - A greeting or HELO refused with a code other than 421 is answered with
//!   QUIT, as RFC 5321 §3.1 asks after a 554 greeting.
//! - The reply to RSET is not judged: RSET only makes sure no transaction is
//!   left over, and the MAIL reply that follows says whether one can start.
//! - A body with 8-bit bytes goes to a server without 8BITMIME converted
//!   to 7-bit where MIME allows it, as Postfix does ([`downgrade`]), and is
//!   refused locally (554 5.6.3) where it does not, as RFC 6152 §3 asks.
//! - An address with control characters is refused locally (553), as are
//!   non-ASCII addresses for a server without SMTPUTF8 even when the message
//!   did not ask for SMTPUTF8: a command line is never written with them.
//! - A reply of the wrong class for its command (a 3xx to MAIL, a 2xx to
//!   DATA) is a protocol error, so a recipient is never reported delivered
//!   on a reply that did not say so.
//! - Bytes after the 220 to STARTTLS and before the TLS handshake are a
//!   protocol error: they would otherwise be read as replies sent inside TLS
//!   (the STARTTLS response injection of CVE-2011-0411's kind).

use std::collections::VecDeque;
use std::sync::Arc;

#[cfg(any(test, feature = "fuzzing"))]
pub mod check;
mod command;
mod extensions;
mod reply;

#[cfg(test)]
mod tests;

use crate::smtp::downgrade;
use crate::smtp::dsn_request::{RecipientRequest, Ret};
use command::{MailDsn, MailParams};
pub use extensions::Extensions;
pub use reply::ServerReply;
use reply::{Parsed, ReplyReader, SERVICE_CLOSING, SERVICE_READY, START_MAIL_INPUT};

/// Output capacity kept between writes; a large message's buffer is given
/// back once written rather than held for the life of the connection.
const OUTPUT_KEEP: usize = 64 * 1024;

/// Identity and limits for client sessions; shared by every session of a queue runner.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Our name, sent with EHLO and HELO.
    pub hostname: String,
    /// Issue STARTTLS when the server offers it (before any transaction).
    pub try_starttls: bool,
    /// Send the body with BDAT when the server offers CHUNKING and PIPELINING.
    pub use_chunking: bool,
    /// Most bytes one reply may take, all its lines and terminators
    /// included; a longer one is a protocol error.
    pub max_reply_len: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            hostname: "localhost".into(),
            try_starttls: true,
            use_chunking: true,
            max_reply_len: 16 * 1024,
        }
    }
}

/// One message to deliver over the session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutgoingMessage {
    /// Reverse path without angle brackets; empty for the null sender.
    pub mail_from: String,
    /// Forward paths without angle brackets.
    pub recipients: Vec<String>,
    /// The stored message: CRLF lines, not dot-stuffed.
    pub body: Vec<u8>,
    /// The envelope needs SMTPUTF8 (RFC 6531).
    pub smtputf8: bool,
    /// DSN's RET= to pass on to a server that offers DSN (RFC 3461 §5.2).
    pub ret: Option<Ret>,
    /// DSN's ENVID= (xtext) to pass on.
    pub envid: Option<String>,
    /// DSN's NOTIFY= and ORCPT= for each recipient, in the order of
    /// `recipients`; may be shorter (the rest asked for nothing).
    pub recipient_requests: Vec<RecipientRequest>,
}

/// What the session is waiting for the server to say; the driver picks its
/// timeout from it (RFC 5321 §4.5.3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The 220 greeting.
    Greeting,
    /// The reply to EHLO or HELO.
    Ehlo,
    /// The reply to STARTTLS, or the driver's TLS handshake after it.
    StartTls,
    /// Nothing: ready for `send` or `quit`.
    Idle,
    /// The reply to MAIL.
    Mail,
    /// The reply to RCPT.
    Rcpt,
    /// The 354 to DATA.
    DataInit,
    /// The message content is in the output, not yet written.
    DataBlock,
    /// The reply after the content (end of DATA, or BDAT).
    DataDone,
    /// The reply to RSET.
    Rset,
    /// The reply to QUIT.
    Quit,
    /// Nothing more: the session is over.
    Closed,
}

/// How one recipient of a transaction fared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientResult {
    /// The recipient as given in [`OutgoingMessage::recipients`].
    pub recipient: String,
    /// The reply that decided it: positive means delivered to the server.
    pub reply: ServerReply,
}

/// Something the driver must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// Greeting and EHLO (or HELO), and STARTTLS if any, are done:
    /// [`ClientSession::send`] may be called.
    Ready,
    /// The server answered 220 to STARTTLS: wrap the socket in TLS, then call
    /// [`ClientSession::tls_established`].
    StartTls,
    /// The transaction started by `send` is over: one result per recipient,
    /// in the order given. `send` may be called again.
    Finished(Vec<RecipientResult>),
    /// The connection failed before the server answered anything of this
    /// transaction, which was queued behind the one in progress (with
    /// several in flight): every recipient has the failure as its result,
    /// but the server never said a word about the message, so the driver
    /// may send it again elsewhere as if it had not been tried.
    Unanswered(Vec<RecipientResult>),
    /// The connection is unusable: greeting refused, EHLO and HELO refused,
    /// 421, a protocol error or end of stream. Comes at most once, last.
    Failed(ServerReply),
    /// QUIT was answered (or the stream ended after it). Comes last.
    Closed,
}

/// Where the session is in the life of the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Greeting, EHLO/HELO and STARTTLS exchanges.
    Hello,
    /// 220 to STARTTLS came; the driver is doing the TLS handshake.
    AwaitTls,
    /// Usable: idle or in a transaction.
    Ready,
    /// QUIT is out.
    Quitting,
    /// Over.
    Closed,
}

/// A reply the session waits for: one per command written, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Awaiting {
    Greeting,
    Ehlo,
    Helo,
    StartTls,
    Rset,
    Mail,
    /// RCPT for this index into the recipients.
    Rcpt(usize),
    Data,
    /// The reply after DATA content.
    DataEnd,
    Bdat,
    Quit,
}

impl Awaiting {
    /// Whether `code` is a possible answer: 354 (and only 354 of class 3)
    /// to DATA; 2xx, 4xx or 5xx to everything else except a 2xx to DATA.
    fn allows(self, code: u16) -> bool {
        match self {
            Awaiting::Data => code == START_MAIL_INPUT || code >= 400,
            _ => code / 100 != 3,
        }
    }

    /// A reply to a transaction's command (so to the oldest in progress).
    fn is_transactional(self) -> bool {
        matches!(
            self,
            Awaiting::Rset
                | Awaiting::Mail
                | Awaiting::Rcpt(_)
                | Awaiting::Data
                | Awaiting::DataEnd
                | Awaiting::Bdat
        )
    }

    fn phase(self, content_unwritten: bool) -> Phase {
        match self {
            Awaiting::Greeting => Phase::Greeting,
            Awaiting::Ehlo | Awaiting::Helo => Phase::Ehlo,
            Awaiting::StartTls => Phase::StartTls,
            Awaiting::Rset => Phase::Rset,
            Awaiting::Mail => Phase::Mail,
            Awaiting::Rcpt(_) => Phase::Rcpt,
            Awaiting::Data => Phase::DataInit,
            Awaiting::DataEnd | Awaiting::Bdat if content_unwritten => Phase::DataBlock,
            Awaiting::DataEnd | Awaiting::Bdat => Phase::DataDone,
            Awaiting::Quit => Phase::Quit,
        }
    }
}

/// A command of a transaction not written yet (without PIPELINING they go
/// out one reply at a time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Rset,
    Mail,
    Rcpt(usize),
    Data,
    Bdat,
}

/// A transaction from `send` until `Finished`.
#[derive(Debug)]
struct Transaction {
    message: OutgoingMessage,
    params: MailParams,
    /// Per recipient: the reply that decided it, once one has. A recipient
    /// whose RCPT was accepted stays undecided until the content is answered.
    results: Vec<Option<ServerReply>>,
    /// Commands still to write.
    steps: VecDeque<Step>,
    /// Replies still due to commands written for it.
    due: usize,
}

impl Transaction {
    fn undecided(&self) -> bool {
        self.results.iter().any(Option::is_none)
    }

    /// Give every undecided recipient `reply`.
    fn decide_rest(&mut self, reply: &ServerReply) {
        for slot in self.results.iter_mut().filter(|slot| slot.is_none()) {
            *slot = Some(reply.clone());
        }
    }

    fn into_results(self) -> Vec<RecipientResult> {
        self.message
            .recipients
            .into_iter()
            .zip(self.results)
            .map(|(recipient, decided)| RecipientResult {
                recipient,
                // Every recipient is decided before a transaction ends; this
                // only guards against a bug leaving one out.
                reply: decided.unwrap_or_else(|| reply::protocol_error("recipient undecided")),
            })
            .collect()
    }
}

/// One outbound SMTP session.
#[derive(Debug)]
pub struct ClientSession {
    config: Arc<ClientConfig>,
    stage: Stage,
    reader: ReplyReader,
    /// Replies due, oldest first.
    awaiting: VecDeque<Awaiting>,
    /// Bytes not yet taken by the driver.
    output: Vec<u8>,
    events: VecDeque<ClientEvent>,
    extensions: Extensions,
    /// TLS is up: STARTTLS is not offered again.
    tls: bool,
    /// Transactions sent and not finished, oldest first: replies go to the
    /// front one. Only the newest can have commands left to write (another
    /// starts only once every earlier one is written whole).
    transactions: VecDeque<Transaction>,
    /// A MAIL has been written on this connection: later transactions begin with RSET.
    used: bool,
    /// `quit` came while busy: QUIT follows as soon as the session is idle.
    quit_requested: bool,
    /// Message content is in `output` (phase `DataBlock` until written).
    content_unwritten: bool,
    /// An event just handed the turn to the driver: `feed` stops.
    paused: bool,
}

impl ClientSession {
    /// A new session, waiting for the server's greeting.
    pub fn new(config: Arc<ClientConfig>) -> Self {
        ClientSession {
            config,
            stage: Stage::Hello,
            reader: ReplyReader::default(),
            awaiting: VecDeque::from([Awaiting::Greeting]),
            output: Vec::new(),
            events: VecDeque::new(),
            extensions: Extensions::default(),
            tls: false,
            transactions: VecDeque::new(),
            used: false,
            quit_requested: false,
            content_unwritten: false,
            paused: false,
        }
    }

    /// Consume complete reply lines from `input`; returns bytes consumed.
    ///
    /// What is left is an unfinished line, or, when `feed` stopped at
    /// [`ClientEvent::Ready`] or [`ClientEvent::Finished`], replies for the
    /// driver to feed again after it has answered. An unfinished line is
    /// never left longer than [`ClientConfig::max_reply_len`]. Once the
    /// session is over, everything is consumed and ignored.
    #[must_use = "unconsumed input must be fed again"]
    pub fn feed(&mut self, input: &[u8]) -> usize {
        self.paused = false;
        let mut used = 0;
        while used < input.len() {
            match self.stage {
                Stage::Closed => return input.len(),
                Stage::AwaitTls => {
                    self.protocol_error("data after the 220 to STARTTLS");
                    return input.len();
                }
                Stage::Hello | Stage::Ready | Stage::Quitting => {}
            }
            let (n, outcome) = self.reader.read(&input[used..], self.config.max_reply_len);
            used += n;
            match outcome {
                None => break,
                Some(Ok(parsed)) => self.on_reply(parsed),
                Some(Err(error)) => self.protocol_error(error.describe()),
            }
            if self.paused {
                break;
            }
        }
        used
    }

    /// The server closed the connection (or the driver gave up on it).
    pub fn eof(&mut self) {
        match self.stage {
            Stage::Closed => {}
            Stage::Quitting => self.close(),
            Stage::Hello | Stage::AwaitTls | Stage::Ready => self.fail(reply::connection_lost()),
        }
    }

    /// Next event for the driver, if any.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// Bytes waiting to be written.
    pub fn output(&self) -> &[u8] {
        &self.output
    }

    /// Forget the output once written.
    pub fn clear_output(&mut self) {
        self.output.clear();
        self.output.shrink_to(OUTPUT_KEEP);
        self.content_unwritten = false;
    }

    /// Start a transaction for `message`; its outcome comes as
    /// [`ClientEvent::Finished`], possibly at once (nothing written) when the
    /// server cannot take it: over the SIZE limit (local 552 5.3.4), or
    /// SMTPUTF8 needed and not offered (local 553 5.6.7), or 8-bit content
    /// that cannot be made 7-bit for a server without 8BITMIME (local 554
    /// 5.6.3).
    ///
    /// Only when [`Self::can_send`]: after `Ready` or `Finished`, or with
    /// earlier transactions still waiting for replies when the server
    /// pipelines BDAT. On a session that has closed meanwhile, `Finished`
    /// comes at once with a local 421 4.4.2 for every recipient. Calling it
    /// in the middle of a greeting or of a transaction not written whole is
    /// a bug (a debug assertion); release builds answer with a local 451
    /// 4.3.0 for every recipient.
    pub fn send(&mut self, message: OutgoingMessage) {
        if !self.can_send() {
            debug_assert!(self.is_closed(), "send() on a busy session");
            let refusal = if self.is_closed() {
                reply::connection_lost()
            } else {
                reply::not_ready()
            };
            // Reported directly: a transaction in progress must stay untouched.
            let results = message
                .recipients
                .into_iter()
                .map(|recipient| RecipientResult {
                    recipient,
                    reply: refusal.clone(),
                });
            return self
                .events
                .push_back(ClientEvent::Finished(results.collect()));
        }
        let ext = &self.extensions;
        let needs_utf8 = message.smtputf8
            || !message.mail_from.is_ascii()
            || message.recipients.iter().any(|r| !r.is_ascii());
        let mut message = message;
        let mut unconvertible = false;
        if !ext.eightbitmime && !message.body.is_ascii() {
            match downgrade::to_seven_bit(&message.body) {
                Some(seven_bit) => message.body = seven_bit,
                None => unconvertible = true,
            }
        }
        let size = message.body.len() as u64;
        let refusal = match ext.size {
            Some(limit) if limit > 0 && size > limit => Some(reply::too_big(limit)),
            _ if needs_utf8 && !ext.smtputf8 => Some(reply::needs_smtputf8()),
            _ if unconvertible => Some(reply::needs_8bitmime()),
            _ if command::has_control(&message.mail_from) => Some(reply::bad_sender()),
            _ => None,
        };
        let results: Vec<_> = match refusal {
            Some(refusal) => vec![Some(refusal); message.recipients.len()],
            None => message
                .recipients
                .iter()
                .map(|r| command::has_control(r).then(reply::bad_recipient))
                .collect(),
        };
        if results.iter().all(Option::is_some) {
            return self.finish_with(message, results);
        }

        let params = MailParams {
            size: ext.size.map(|_| size),
            eight_bit: ext.eightbitmime && !message.body.is_ascii(),
            smtputf8: needs_utf8,
            dsn: ext.dsn,
        };
        let pipelining = ext.pipelining;
        let chunking = self.uses_chunking();
        let mut steps = VecDeque::with_capacity(results.len() + 3);
        if self.used {
            steps.push_back(Step::Rset);
        }
        steps.push_back(Step::Mail);
        let to_send = results.iter().enumerate().filter(|(_, r)| r.is_none());
        steps.extend(to_send.map(|(i, _)| Step::Rcpt(i)));
        steps.push_back(if chunking { Step::Bdat } else { Step::Data });
        self.used = true;
        self.transactions.push_back(Transaction {
            message,
            params,
            results,
            steps,
            due: 0,
        });
        if pipelining {
            // RFC 2920 §3.1: DATA and BDAT LAST may end a group, so the whole
            // transaction goes out in one write.
            while self.write_next_step() {}
        } else {
            self.write_next_step();
        }
    }

    /// End the session politely: QUIT now if idle, else once the transaction
    /// in progress (or the greeting exchange) is over. [`ClientEvent::Closed`]
    /// follows the reply. Between STARTTLS and `tls_established` the session
    /// just closes.
    pub fn quit(&mut self) {
        match self.stage {
            Stage::Closed | Stage::Quitting => {}
            Stage::AwaitTls => self.close(),
            Stage::Ready if self.is_idle() => self.write_quit(),
            Stage::Hello | Stage::Ready => self.quit_requested = true,
        }
    }

    /// The TLS handshake after [`ClientEvent::StartTls`] succeeded: forget
    /// what the server said in plain text and greet it again (RFC 3207 §4.2).
    /// Does nothing on a session that has closed meanwhile.
    pub fn tls_established(&mut self) {
        if self.stage != Stage::AwaitTls {
            debug_assert!(self.is_closed(), "tls_established() without StartTls");
            return;
        }
        self.tls = true;
        self.extensions = Extensions::default();
        self.stage = Stage::Hello;
        self.write_hello("EHLO", Awaiting::Ehlo);
    }

    /// What the server offered in its last EHLO reply (nothing after HELO).
    pub fn extensions(&self) -> &Extensions {
        &self.extensions
    }

    /// The reply being waited for.
    pub fn phase(&self) -> Phase {
        match self.stage {
            Stage::Closed => Phase::Closed,
            Stage::AwaitTls => Phase::StartTls,
            Stage::Hello | Stage::Ready | Stage::Quitting => match self.awaiting.front() {
                Some(awaiting) => awaiting.phase(self.content_unwritten),
                None => Phase::Idle,
            },
        }
    }

    /// True when greeted and no transaction is in progress.
    pub fn is_idle(&self) -> bool {
        self.stage == Stage::Ready && self.transactions.is_empty() && self.awaiting.is_empty()
    }

    /// True when [`Self::send`] may be called: idle, or every transaction
    /// in progress written whole to a server that takes PIPELINING and
    /// CHUNKING, so the next one can go out behind them without waiting
    /// for their replies (RFC 3030 §4.2, RFC 2920 §3.1: BDAT LAST may be
    /// followed by more commands in the same group). With DATA the client
    /// must wait for the 354, so transactions go one at a time.
    pub fn can_send(&self) -> bool {
        if self.is_idle() {
            return true;
        }
        self.stage == Stage::Ready
            && !self.quit_requested
            && self.uses_chunking()
            && self.transactions.iter().all(|tx| tx.steps.is_empty())
    }

    /// Transactions sent and not finished yet.
    pub fn in_flight(&self) -> usize {
        self.transactions.len()
    }

    /// Bodies go with BDAT, every command pipelined.
    fn uses_chunking(&self) -> bool {
        let ext = &self.extensions;
        ext.pipelining && ext.chunking && self.config.use_chunking
    }

    /// True once the session is over (after `Failed` or `Closed`).
    pub fn is_closed(&self) -> bool {
        self.stage == Stage::Closed
    }

    // -- replies -------------------------------------------------------------

    fn on_reply(&mut self, Parsed { reply, lines }: Parsed) {
        let Some(awaiting) = self.awaiting.pop_front() else {
            // A server may announce its shutdown at any time (RFC 5321 §3.8).
            if reply.code == SERVICE_CLOSING {
                return self.fail(reply);
            }
            return self.protocol_error("reply to no command");
        };
        if awaiting == Awaiting::Quit {
            return self.close();
        }
        if !awaiting.allows(reply.code) {
            let what = format!("unexpected {} reply", reply.code);
            return self.protocol_error(&what);
        }
        if reply.code == SERVICE_CLOSING {
            return self.fail(reply);
        }
        if awaiting.is_transactional() {
            if let Some(tx) = self.transactions.front_mut() {
                tx.due = tx.due.saturating_sub(1);
            }
        }
        match awaiting {
            Awaiting::Greeting if reply.is_positive() => self.write_hello("EHLO", Awaiting::Ehlo),
            Awaiting::Ehlo if reply.is_positive() => {
                self.extensions = Extensions::from_ehlo(&lines);
                self.greeted();
            }
            Awaiting::Ehlo if reply.is_permanent() => self.write_hello("HELO", Awaiting::Helo),
            Awaiting::Helo if reply.is_positive() => {
                self.extensions = Extensions::default();
                self.greeted();
            }
            Awaiting::Greeting | Awaiting::Ehlo | Awaiting::Helo => self.refused(reply),
            Awaiting::StartTls if reply.code == SERVICE_READY => {
                if self.quit_requested {
                    self.close();
                } else {
                    self.stage = Stage::AwaitTls;
                    self.events.push_back(ClientEvent::StartTls);
                }
            }
            // Refused: carry on in plain text (whether that is acceptable
            // is the driver's policy, decided on `extensions()`).
            Awaiting::StartTls => self.ready(),
            Awaiting::Rset | Awaiting::Mail | Awaiting::Rcpt(_) if reply.is_positive() => {
                self.advance();
            }
            Awaiting::Rset => self.advance(),
            Awaiting::Rcpt(i) => {
                if let Some(slot) = self
                    .transactions
                    .front_mut()
                    .and_then(|tx| tx.results.get_mut(i))
                {
                    slot.get_or_insert(rcpt_reply(reply));
                }
                self.advance();
            }
            Awaiting::Data if reply.code == START_MAIL_INPUT => self.write_content(),
            Awaiting::Mail | Awaiting::Data | Awaiting::DataEnd | Awaiting::Bdat => {
                if let Some(tx) = self.transactions.front_mut() {
                    tx.decide_rest(&reply);
                }
                self.advance();
            }
            Awaiting::Quit => self.close(),
        }
    }

    /// EHLO or HELO accepted: STARTTLS if wanted, else ready.
    fn greeted(&mut self) {
        let starttls = self.config.try_starttls && self.extensions.starttls && !self.tls;
        if starttls && !self.quit_requested {
            self.output.extend_from_slice(command::STARTTLS);
            self.awaiting.push_back(Awaiting::StartTls);
        } else {
            self.ready();
        }
    }

    fn ready(&mut self) {
        self.stage = Stage::Ready;
        if self.quit_requested {
            self.write_quit();
        } else {
            self.events.push_back(ClientEvent::Ready);
            self.paused = true;
        }
    }

    /// After a reply to the oldest transaction: once all its written
    /// commands are answered, write its next one, or end it if nothing is
    /// left to decide (MAIL refused, every RCPT refused, content answered).
    fn advance(&mut self) {
        let Some(tx) = self.transactions.front() else {
            return;
        };
        if tx.due > 0 {
            return;
        }
        if !tx.undecided() || !self.write_next_step() {
            self.finish();
        }
    }

    /// 354: the content if a recipient is still waiting for it, else just
    /// the end-of-data line (a pipelining server may say 354 with no
    /// recipient accepted); the transaction then ends on its reply.
    fn write_content(&mut self) {
        match self.transactions.front_mut() {
            Some(tx) if tx.undecided() => {
                command::data_content(&mut self.output, &tx.message.body);
                self.content_unwritten = true;
                tx.due += 1;
            }
            Some(tx) => {
                self.output.extend_from_slice(command::END_OF_DATA);
                tx.due += 1;
            }
            None => self.output.extend_from_slice(command::END_OF_DATA),
        }
        self.awaiting.push_back(Awaiting::DataEnd);
    }

    // -- writing -------------------------------------------------------------

    fn write_hello(&mut self, verb: &str, awaiting: Awaiting) {
        command::hello(&mut self.output, verb, &self.config.hostname);
        self.awaiting.push_back(awaiting);
    }

    /// Write the newest transaction's next command (only it can have
    /// any left); false if none is left.
    fn write_next_step(&mut self) -> bool {
        let Some(tx) = self.transactions.back_mut() else {
            return false;
        };
        let Some(step) = tx.steps.pop_front() else {
            return false;
        };
        let out = &mut self.output;
        let awaiting = match step {
            Step::Rset => {
                out.extend_from_slice(command::RSET);
                Awaiting::Rset
            }
            Step::Mail => {
                let message = &tx.message;
                let dsn = match tx.params.dsn {
                    true => MailDsn {
                        ret: message.ret,
                        envid: message.envid.as_deref(),
                    },
                    false => MailDsn::default(),
                };
                command::mail(out, &message.mail_from, tx.params, dsn);
                Awaiting::Mail
            }
            Step::Rcpt(i) => {
                let message = &tx.message;
                let request = message.recipient_requests.get(i);
                let request = request.filter(|_| tx.params.dsn);
                command::rcpt(out, &message.recipients[i], request, tx.params.smtputf8);
                Awaiting::Rcpt(i)
            }
            Step::Data => {
                out.extend_from_slice(command::DATA);
                Awaiting::Data
            }
            Step::Bdat => {
                command::bdat_last(out, &tx.message.body);
                // Never needed again: with several transactions in flight,
                // keeping each body until its reply would hold them twice.
                tx.message.body = Vec::new();
                self.content_unwritten = true;
                Awaiting::Bdat
            }
        };
        tx.due += 1;
        self.awaiting.push_back(awaiting);
        true
    }

    fn write_quit(&mut self) {
        self.quit_requested = false;
        self.output.extend_from_slice(command::QUIT);
        self.awaiting.push_back(Awaiting::Quit);
        self.stage = Stage::Quitting;
    }

    // -- endings -------------------------------------------------------------

    /// The oldest transaction is over: report it, and any decided behind
    /// it without a command written (their turn has come), then QUIT if
    /// asked to meanwhile and nothing is left.
    fn finish(&mut self) {
        let mut over = self.transactions.pop_front();
        while let Some(tx) = over {
            self.events
                .push_back(ClientEvent::Finished(tx.into_results()));
            self.paused = true;
            let decided = |tx: &Transaction| tx.due == 0 && tx.steps.is_empty() && !tx.undecided();
            over = match self.transactions.front() {
                Some(next) if decided(next) => self.transactions.pop_front(),
                _ => None,
            };
        }
        if self.quit_requested && self.stage == Stage::Ready && self.transactions.is_empty() {
            self.write_quit();
        }
    }

    /// A transaction decided before anything was written: it finishes in
    /// its turn, after those sent before it.
    fn finish_with(&mut self, message: OutgoingMessage, results: Vec<Option<ServerReply>>) {
        let steps = VecDeque::new();
        let params = MailParams::default();
        let waits = !self.transactions.is_empty();
        self.transactions.push_back(Transaction {
            message,
            params,
            results,
            steps,
            due: 0,
        });
        if !waits {
            self.finish();
        }
    }

    /// The server refused the greeting, EHLO or HELO: fail, and say QUIT on
    /// the way out (RFC 5321 §3.1).
    fn refused(&mut self, reply: ServerReply) {
        self.output.extend_from_slice(command::QUIT);
        self.fail(reply);
    }

    fn protocol_error(&mut self, what: &str) {
        if self.stage == Stage::Quitting {
            // Whatever the server says after QUIT, the session is over.
            return self.close();
        }
        self.fail(reply::protocol_error(what));
    }

    /// The connection is unusable: each transaction in progress, oldest
    /// first, ends with `reply` for every undecided recipient, then `Failed`.
    /// The oldest may have had replies (`Finished`); those behind it cannot
    /// have, replies coming in order (`Unanswered`).
    fn fail(&mut self, reply: ServerReply) {
        if self.stage == Stage::Closed {
            return;
        }
        for (n, mut tx) in std::mem::take(&mut self.transactions)
            .into_iter()
            .enumerate()
        {
            tx.decide_rest(&reply);
            let results = tx.into_results();
            self.events.push_back(match n {
                0 => ClientEvent::Finished(results),
                _ => ClientEvent::Unanswered(results),
            });
        }
        self.events.push_back(ClientEvent::Failed(reply));
        self.end();
    }

    /// QUIT answered (or the session dropped while quitting).
    fn close(&mut self) {
        if self.stage != Stage::Closed {
            self.events.push_back(ClientEvent::Closed);
            self.end();
        }
    }

    fn end(&mut self) {
        self.stage = Stage::Closed;
        self.awaiting.clear();
        self.quit_requested = false;
    }
}

/// A refusal of RCPT as the queue should take it: RFC 5321 §4.5.3.1.10
/// asks clients to treat 552 there as 452 (servers of old said 552 for
/// "too many recipients"), so the recipient is tried again, not bounced.
fn rcpt_reply(mut reply: ServerReply) -> ServerReply {
    if reply.code == 552 {
        reply.code = 452;
        if let Some(status) = reply.status.as_mut().filter(|s| s.starts_with('5')) {
            status.replace_range(..1, "4");
        }
    }
    reply
}
