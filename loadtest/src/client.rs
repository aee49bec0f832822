//! One SMTP client connection and the loop that keeps it sending.
//!
//! [`run_connection`] is one task on a tokio-uring runtime. It connects,
//! reads the greeting, says EHLO once, then sends messages for as long as the
//! shared [`Budget`] hands out sequence numbers, reconnecting after
//! `--messages-per-connection` messages or when the connection breaks.
//!
//! A transaction is MAIL, RCPT×n, DATA, body. With PIPELINING the three
//! commands go out in one write and their replies are read back in order;
//! without it, each command waits for its reply. With `--chain` the next
//! message's commands also ride in the body's write (RFC 2920 lets message
//! content open a group): one write per message. Any reply other than 2xx
//! (354 for DATA) fails the message: the connection is then reset with RSET
//! and reused, or dropped when that is impossible (I/O error, timeout, 421,
//! or a 354 we cannot honour).
//!
//! Buffers are owned by the connection and reused: the envelopes (one per
//! `--domains` recipient domain) are static byte strings built once for the
//! whole run, the body is this connection's copy of the template with the
//! sequence digits patched in.

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::time::{sleep, timeout};
use tokio_uring::buf::BoundedBuf;
use tokio_uring::net::TcpStream;

use crate::acklog::AckLog;
use crate::message::MessageTemplate;
use crate::reply::{has_extension, parse_reply, Parsed};
use crate::send::Budget;
use crate::stats::{keys, ThreadStats};
use crate::timeline::Timeline;
use crate::tls::Tls;

/// Everything a connection needs to know, shared read-only by all of them.
#[derive(Debug)]
pub struct ClientConfig {
    pub addr: SocketAddr,
    /// `EHLO <name>\r\n`.
    pub ehlo: &'static [u8],
    /// `HELO <name>\r\n`, for servers that refuse EHLO.
    pub helo: &'static [u8],
    /// One envelope per recipient domain (`--domains`); message `seq` uses
    /// `envelopes[seq % len]` (see [`ClientConfig::envelope`]).
    pub envelopes: Vec<Envelope>,
    /// One template per size of `--size` (one, unless it is a mix).
    pub templates: Vec<MessageTemplate>,
    /// The running sums of the sizes' weights, in `templates` order.
    pub weights: Vec<u32>,
    pub pipelining: bool,
    /// The next envelope goes out with the body (`--chain`; pipelining,
    /// closed loop).
    pub chain: bool,
    /// 0 = unlimited.
    pub messages_per_connection: u64,
    pub io_timeout: Duration,
    pub connect_timeout: Duration,
    pub max_connect_failures: u32,
    /// TLS on every connection, and how it starts.
    pub tls: Option<TlsSetup>,
    /// `AUTH PLAIN <base64>\r\n`, sent after EHLO (and TLS).
    pub auth: Option<&'static [u8]>,
}

/// How connections get TLS.
#[derive(Debug, Clone)]
pub struct TlsSetup {
    /// STARTTLS after EHLO; else TLS from the first byte.
    pub starttls: bool,
    pub config: Arc<rustls::ClientConfig>,
    pub name: rustls::pki_types::ServerName<'static>,
}

/// The commands of one transaction's envelope, built once per run.
#[derive(Debug, Clone)]
pub struct Envelope {
    /// MAIL, RCPT×n and DATA back to back: the pipelined envelope.
    pub pipelined: &'static [u8],
    /// The same commands one by one (MAIL, RCPTs, DATA), for lock-step mode.
    pub commands: Vec<&'static [u8]>,
}

impl ClientConfig {
    /// The template of message `seq` (and its index): picked by weight,
    /// by a hash of `seq`, so a run's mix is the same every time.
    pub fn template(&self, seq: u64) -> (usize, &MessageTemplate) {
        let total = u64::from(self.weights.last().copied().unwrap_or(1));
        let pick = (seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) % total;
        let index = self
            .weights
            .iter()
            .position(|&w| pick < u64::from(w))
            .unwrap_or(0);
        (index, &self.templates[index])
    }

    /// The mean message size of the mix.
    pub fn mean_size(&self) -> usize {
        let mut previous = 0u64;
        let mut sum = 0u64;
        for (template, &w) in self.templates.iter().zip(&self.weights) {
            sum += (u64::from(w) - previous) * template.message_len() as u64;
            previous = u64::from(w);
        }
        (sum / previous.max(1)) as usize
    }

    /// The envelope of message `seq`: recipient domain `seq % domains`.
    /// A lookup, no allocation.
    pub fn envelope(&self, seq: u64) -> &Envelope {
        &self.envelopes[(seq % self.envelopes.len() as u64) as usize]
    }
}

/// Per-thread tallies, shared by the connection tasks of one runtime.
/// Tasks on one tokio-uring runtime never run concurrently, and no borrow is
/// held across an `.await`, so `RefCell` is enough.
#[derive(Debug, Default)]
pub struct Tally {
    pub stats: RefCell<ThreadStats>,
    pub ack: RefCell<Option<AckLog>>,
    /// Second by second, for `--plot`.
    pub timeline: RefCell<Option<Timeline>>,
    /// What the progress line reads from another thread.
    pub live: Arc<LiveCounts>,
}

/// A thread's messages so far, readable from the progress thread. Aligned
/// so that threads never share a cache line.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct LiveCounts {
    pub ok: AtomicU64,
    pub failed: AtomicU64,
}

impl Tally {
    pub fn new(ack: Option<AckLog>, timeline: Option<Timeline>, live: Arc<LiveCounts>) -> Self {
        Self {
            stats: RefCell::default(),
            ack: RefCell::new(ack),
            timeline: RefCell::new(timeline),
            live,
        }
    }

    /// Message `seq` of `bytes` was accepted; it started at `start` (its
    /// scheduled start in an open-loop run).
    fn accepted(&self, seq: u64, bytes: usize, start: Instant, reply: &[u8]) {
        let now = Instant::now();
        let latency = now.saturating_duration_since(start);
        self.stats.borrow_mut().record_ok(bytes, latency);
        self.live.ok.fetch_add(1, Ordering::Relaxed);
        if let Some(timeline) = self.timeline.borrow_mut().as_mut() {
            timeline.ok(now, latency);
        }
        let res = match self.ack.borrow_mut().as_mut() {
            Some(log) => log.record(seq, reply),
            None => Ok(()),
        };
        if let Err(e) = res {
            self.ack_log_failed(&e);
        }
    }

    /// A message failed: count it under `failure`'s key.
    fn failed(&self, failure: &Failure) {
        self.stats.borrow_mut().failed += 1;
        self.live.failed.fetch_add(1, Ordering::Relaxed);
        if let Some(timeline) = self.timeline.borrow_mut().as_mut() {
            timeline.failed(Instant::now());
        }
        self.error(failure);
    }

    /// Count an error; also flush the ack log, so that a run that goes wrong
    /// leaves a complete file even if what follows is a kill.
    fn error(&self, failure: &Failure) {
        self.stats.borrow_mut().record_error(&failure.key());
        let res = match self.ack.borrow_mut().as_mut() {
            Some(log) => log.flush(),
            None => Ok(()),
        };
        if let Err(e) = res {
            self.ack_log_failed(&e);
        }
    }

    fn ack_log_failed(&self, e: &io::Error) {
        static WARNED: AtomicBool = AtomicBool::new(false);
        if !WARNED.swap(true, Ordering::Relaxed) {
            eprintln!("ringpost-blast: writing the ack log failed: {e}");
        }
        self.stats.borrow_mut().record_error("ack-log");
    }
}

/// Why a connection or a transaction failed; [`Failure::key`] names it in
/// the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The server answered with this (unexpected) code.
    Reply(u16),
    Connect,
    ConnectTimeout,
    Timeout,
    Closed,
    Io,
    Protocol,
    /// The TLS handshake failed.
    Tls,
}

impl Failure {
    pub fn key(&self) -> String {
        match self {
            Failure::Reply(code) => code.to_string(),
            Failure::Connect => keys::CONNECT.into(),
            Failure::ConnectTimeout => keys::CONNECT_TIMEOUT.into(),
            Failure::Timeout => keys::TIMEOUT.into(),
            Failure::Closed => keys::CLOSED.into(),
            Failure::Io => keys::IO.into(),
            Failure::Protocol => keys::PROTOCOL.into(),
            Failure::Tls => "tls".into(),
        }
    }
}

/// How a transaction ended, from the connection's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Txn {
    Accepted,
    /// The message failed but the connection is ready for the next one.
    Rejected,
    /// The connection cannot be used any more.
    Broken,
}

/// How a session (one TCP connection) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SessionEnd {
    /// The budget ran out; QUIT was sent.
    Finished,
    /// `--messages-per-connection` reached; QUIT was sent.
    Recycle,
    Broken,
}

/// Sends messages until the budget runs out or the server keeps failing.
pub async fn run_connection(cfg: Arc<ClientConfig>, budget: Arc<Budget>, tally: Rc<Tally>) {
    // This connection's body buffer, reused across messages and reconnects.
    let mut bodies: Vec<Option<Vec<u8>>> = vec![None; cfg.templates.len()];
    let mut failures_in_a_row = 0u32;
    loop {
        if budget.exhausted() || failures_in_a_row >= cfg.max_connect_failures {
            return;
        }
        if failures_in_a_row > 0 {
            sleep(backoff(failures_in_a_row)).await;
            if budget.exhausted() {
                return;
            }
        }
        let mut conn = match Conn::open(&cfg).await {
            Ok(conn) => conn,
            Err(f) => {
                tally.error(&f);
                failures_in_a_row += 1;
                continue;
            }
        };
        let (end, accepted) = session(&cfg, &budget, &tally, &mut conn, &mut bodies).await;
        if accepted > 0 {
            failures_in_a_row = 0;
        } else if end == SessionEnd::Broken {
            // A server that accepts connections but never takes a message
            // (dying, or resetting everything) must also end the run.
            failures_in_a_row += 1;
        }
        if end == SessionEnd::Finished {
            return;
        }
    }
}

/// 50 ms, 100 ms, 200 ms, ... capped at 1 s: quick retries for a blip, but
/// no busy loop against a dead server.
fn backoff(failures: u32) -> Duration {
    Duration::from_millis(50u64 << failures.saturating_sub(1).min(5)).min(Duration::from_secs(1))
}

/// Sends transactions on an open connection. Returns how it ended and how
/// many messages it got accepted.
async fn session(
    cfg: &ClientConfig,
    budget: &Budget,
    tally: &Tally,
    conn: &mut Conn,
    bodies: &mut [Option<Vec<u8>>],
) -> (SessionEnd, u64) {
    let mut sent = 0u64;
    let mut accepted = 0u64;
    // A message whose envelope went out with the previous body, and when.
    let mut chained: Option<Chained> = None;
    loop {
        // `envelope_sent`: it went out with the previous body.
        let (seq, start, envelope_sent) = match chained.take() {
            Some(next) => (next.seq, Some(next.sent_at), true),
            None => {
                if cfg.messages_per_connection > 0 && sent >= cfg.messages_per_connection {
                    conn.quit().await;
                    return (SessionEnd::Recycle, accepted);
                }
                let Some(seq) = budget.claim() else {
                    conn.quit().await;
                    return (SessionEnd::Finished, accepted);
                };
                // Open loop: wait for the message's turn, and time it from there.
                let scheduled = budget.due(seq);
                if let Some(at) = scheduled {
                    tokio::time::sleep_until(at.into()).await;
                }
                (seq, scheduled, false)
            }
        };
        sent += 1;
        // Chain the next message only if this connection may send it.
        let may_chain = cfg.messages_per_connection == 0 || sent < cfg.messages_per_connection;
        let next = Next {
            budget: (cfg.chain && may_chain).then_some(budget),
            chained: &mut chained,
        };
        let txn = transaction(cfg, tally, conn, seq, bodies, start, envelope_sent, next).await;
        match txn {
            Txn::Accepted => accepted += 1,
            Txn::Rejected => {}
            Txn::Broken => {
                // Its envelope went out, its reply never will come.
                if chained.take().is_some() {
                    tally.failed(&Failure::Closed);
                }
                return (SessionEnd::Broken, accepted);
            }
        }
    }
}

/// The next message, sent ahead with a body.
#[derive(Debug, Clone, Copy)]
struct Chained {
    seq: u64,
    sent_at: Instant,
}

/// Where a transaction may take the next message from to send its
/// envelope with its body (`budget` is None when it may not).
struct Next<'a> {
    budget: Option<&'a Budget>,
    chained: &'a mut Option<Chained>,
}

/// One message, start to finish, with its outcome recorded in `tally`.
/// Its latency runs from `start` when given (its scheduled time in an open
/// loop, or when its envelope went out with the previous body), else from
/// now. `envelope_sent`: its envelope is out already; only its replies are
/// to be read.
#[allow(clippy::too_many_arguments)]
async fn transaction(
    cfg: &ClientConfig,
    tally: &Tally,
    conn: &mut Conn,
    seq: u64,
    bodies: &mut [Option<Vec<u8>>],
    start: Option<Instant>,
    envelope_sent: bool,
    next: Next<'_>,
) -> Txn {
    let start = start.unwrap_or_else(Instant::now);
    let env = cfg.envelope(seq);
    let envelope = if cfg.pipelining {
        pipelined_envelope(env, conn, envelope_sent).await
    } else {
        lockstep_envelope(env, conn).await
    };
    let state = match envelope {
        Ok(Ok(())) => send_body(cfg, tally, conn, seq, bodies, start, next).await,
        Ok(Err((failure, reset))) => {
            tally.failed(&failure);
            if reset && !matches!(failure, Failure::Reply(421)) {
                return conn.rset().await;
            }
            return Txn::Broken;
        }
        Err(failure) => Err(failure),
    };
    match state {
        Ok(txn) => txn,
        Err(failure) => {
            tally.failed(&failure);
            Txn::Broken
        }
    }
}

/// The server's verdict on the envelope: `Ok(())` when DATA got 354,
/// `Err((failure, reset))` when it refused something (`reset`: RSET can
/// recover the connection). The outer `Err` is an I/O-level failure.
type EnvelopeVerdict = Result<(), (Failure, bool)>;

async fn pipelined_envelope(
    env: &Envelope,
    conn: &mut Conn,
    sent: bool,
) -> Result<EnvelopeVerdict, Failure> {
    if !sent {
        conn.write(env.pipelined).await?;
    }
    // Replies come back in command order: MAIL, each RCPT, DATA. Read them
    // all even after a refusal, so the connection stays in step.
    let mut first_bad = None;
    for _ in 0..env.commands.len() - 1 {
        let code = conn.next_reply().await?;
        if !is_2xx(code) {
            first_bad.get_or_insert(code);
        }
    }
    let data = conn.next_reply().await?;
    Ok(match (data, first_bad) {
        (354, None) => Ok(()),
        // The server wants a body for a transaction we already count as
        // failed (some RCPT refused). Sending it would deliver a message we
        // report as failed; dropping the connection aborts it cleanly.
        (354, Some(code)) => Err((Failure::Reply(code), false)),
        (code, bad) => Err((Failure::Reply(bad.unwrap_or(code)), true)),
    })
}

async fn lockstep_envelope(env: &Envelope, conn: &mut Conn) -> Result<EnvelopeVerdict, Failure> {
    let (data, mail_rcpts) = env.commands.split_last().expect("envelope has DATA");
    for &cmd in mail_rcpts {
        conn.write(cmd).await?;
        let code = conn.next_reply().await?;
        if !is_2xx(code) {
            return Ok(Err((Failure::Reply(code), true)));
        }
    }
    conn.write(*data).await?;
    match conn.next_reply().await? {
        354 => Ok(Ok(())),
        code => Ok(Err((Failure::Reply(code), true))),
    }
}

/// Writes the patched body (with its `.\r\n`), and after it the next
/// message's envelope when `next` allows and the budget has one; then
/// reads the final reply.
async fn send_body(
    cfg: &ClientConfig,
    tally: &Tally,
    conn: &mut Conn,
    seq: u64,
    bodies: &mut [Option<Vec<u8>>],
    start: Instant,
    next: Next<'_>,
) -> Result<Txn, Failure> {
    // A buffer lost to a timed-out write is rebuilt; normally it comes back.
    let (index, template) = cfg.template(seq);
    let mut buf = bodies[index].take().unwrap_or_else(|| template.instance());
    template.patch(&mut buf, seq);
    let body_len = buf.len();
    if let Some(following) = next.budget.and_then(Budget::claim) {
        buf.extend_from_slice(cfg.envelope(following).pipelined);
        *next.chained = Some(Chained {
            seq: following,
            sent_at: Instant::now(),
        });
    }
    let mut buf = conn.write(buf).await?;
    buf.truncate(body_len);
    bodies[index] = Some(buf);
    let reply = conn.read_reply().await?;
    let txn = if is_2xx(reply.code) {
        let raw = &conn.rbuf[..reply.len];
        tally.accepted(seq, template.message_len(), start, raw);
        Txn::Accepted
    } else {
        tally.failed(&Failure::Reply(reply.code));
        // The transaction is over either way; only 421 ends the connection.
        if reply.code == 421 {
            Txn::Broken
        } else {
            Txn::Rejected
        }
    };
    conn.consume(reply.len);
    Ok(txn)
}

fn is_2xx(code: u16) -> bool {
    (200..300).contains(&code)
}

/// Warn once per run, not once per connection.
static WARNED_NO_PIPELINING: AtomicBool = AtomicBool::new(false);

/// A TCP connection (plain or TLS) with its read buffer.
struct Conn {
    stream: TcpStream,
    /// Bytes read but not yet consumed (plaintext); replies are parsed from
    /// its front.
    rbuf: Vec<u8>,
    io_timeout: Duration,
    /// TLS, once started, and the buffer raw records are read into.
    tls: Option<(Tls, Vec<u8>)>,
}

impl Conn {
    /// Connects, reads the greeting and introduces itself.
    async fn open(cfg: &ClientConfig) -> Result<Conn, Failure> {
        let stream = match timeout(cfg.connect_timeout, TcpStream::connect(cfg.addr)).await {
            Err(_) => return Err(Failure::ConnectTimeout),
            Ok(Err(_)) => return Err(Failure::Connect),
            Ok(Ok(s)) => s,
        };
        // Small writes (envelopes, replies) must not wait for Nagle.
        let _ = stream.set_nodelay(true);
        let mut conn = Conn {
            stream,
            rbuf: Vec::with_capacity(4096),
            io_timeout: cfg.io_timeout,
            tls: None,
        };
        if let Some(setup) = cfg.tls.as_ref().filter(|t| !t.starttls) {
            conn.start_tls(setup).await?;
        }
        let greeting = conn.next_reply().await?;
        if !is_2xx(greeting) {
            return Err(Failure::Reply(greeting));
        }
        conn.hello(cfg).await?;
        if let Some(setup) = cfg.tls.as_ref().filter(|t| t.starttls) {
            conn.write(&b"STARTTLS\r\n"[..]).await?;
            let code = conn.next_reply().await?;
            if code != 220 {
                return Err(Failure::Reply(code));
            }
            conn.start_tls(setup).await?;
            conn.hello(cfg).await?;
        }
        if let Some(auth) = cfg.auth {
            conn.write(auth).await?;
            let code = conn.next_reply().await?;
            if code != 235 {
                return Err(Failure::Reply(code));
            }
        }
        Ok(conn)
    }

    /// EHLO (HELO if refused), noting PIPELINING.
    async fn hello(&mut self, cfg: &ClientConfig) -> Result<(), Failure> {
        let conn = self;
        conn.write(cfg.ehlo).await?;
        let ehlo = conn.read_reply().await?;
        if is_2xx(ehlo.code) {
            let advertised = has_extension(&conn.rbuf[..ehlo.len], "PIPELINING");
            conn.consume(ehlo.len);
            if cfg.pipelining && !advertised && !WARNED_NO_PIPELINING.swap(true, Ordering::Relaxed)
            {
                eprintln!(
                    "ringpost-blast: warning: {} does not advertise PIPELINING; pipelining anyway",
                    cfg.addr
                );
            }
        } else {
            conn.consume(ehlo.len);
            conn.write(cfg.helo).await?;
            let code = conn.next_reply().await?;
            if !is_2xx(code) {
                return Err(Failure::Reply(code));
            }
        }
        Ok(())
    }

    /// Run the TLS handshake as a client; replies after it come in plaintext
    /// through [`Self::fill`].
    async fn start_tls(&mut self, setup: &TlsSetup) -> Result<(), Failure> {
        let tls = Tls::new(setup.config.clone(), setup.name.clone()).map_err(|_| Failure::Tls)?;
        self.tls = Some((tls, vec![0; 16 * 1024 + 512]));
        loop {
            self.flush_tls().await?;
            let handshaking = self.tls.as_ref().is_some_and(|(t, _)| t.is_handshaking());
            if !handshaking {
                return Ok(());
            }
            self.read_tls().await?;
        }
    }

    /// Send the TLS records rustls has ready.
    async fn flush_tls(&mut self) -> Result<(), Failure> {
        let Some((tls, _)) = self.tls.as_mut() else {
            return Ok(());
        };
        tls.pull_records().map_err(|_| Failure::Tls)?;
        let out = tls.outgoing();
        if out.is_empty() {
            tls.sent(out);
            return Ok(());
        }
        let out = self.raw_write(out).await?;
        if let Some((tls, _)) = self.tls.as_mut() {
            tls.sent(out);
        }
        Ok(())
    }

    /// Read raw TLS records and decrypt what they carry into `rbuf`.
    async fn read_tls(&mut self) -> Result<(), Failure> {
        let Some((_, raw)) = self.tls.as_mut() else {
            return Err(Failure::Tls);
        };
        let buf = std::mem::take(raw);
        let (res, buf) = match timeout(self.io_timeout, self.stream.read(buf)).await {
            Err(_) => return Err(Failure::Timeout),
            Ok(done) => done,
        };
        let n = match res {
            Ok(0) => return Err(Failure::Closed),
            Ok(n) => n,
            Err(_) => return Err(Failure::Io),
        };
        let Some((tls, raw)) = self.tls.as_mut() else {
            return Err(Failure::Tls);
        };
        let opened = tls.open(&buf[..n], &mut self.rbuf);
        *raw = buf;
        opened.map_err(|_| Failure::Tls)?;
        // Handshake messages and alerts go back at once.
        self.flush_tls().await
    }

    /// Write bytes as they are (plaintext, or records).
    async fn raw_write<T: BoundedBuf>(&mut self, buf: T) -> Result<T, Failure> {
        match timeout(self.io_timeout, self.stream.write_all(buf)).await {
            Err(_) => Err(Failure::Timeout),
            Ok((Ok(()), buf)) => Ok(buf),
            Ok((Err(_), _)) => Err(Failure::Io),
        }
    }

    /// Write `buf`, through TLS if it is on.
    async fn write<T: BoundedBuf + AsRef<[u8]>>(&mut self, buf: T) -> Result<T, Failure> {
        match self.tls.as_mut() {
            None => self.raw_write(buf).await,
            Some((tls, _)) => {
                tls.seal(buf.as_ref()).map_err(|_| Failure::Tls)?;
                self.flush_tls().await?;
                Ok(buf)
            }
        }
    }

    /// Waits for the next complete reply; it stays at the front of `rbuf`
    /// until [`consume`](Self::consume)d.
    async fn read_reply(&mut self) -> Result<Parsed, Failure> {
        loop {
            match parse_reply(&self.rbuf) {
                Ok(Some(p)) => return Ok(p),
                Ok(None) => self.fill().await?,
                Err(_) => return Err(Failure::Protocol),
            }
        }
    }

    /// The next reply's code, consumed.
    async fn next_reply(&mut self) -> Result<u16, Failure> {
        let p = self.read_reply().await?;
        self.consume(p.len);
        Ok(p.code)
    }

    fn consume(&mut self, len: usize) {
        // Usually the whole buffer; with pipelining at most a few short
        // replies remain, so the move is cheap.
        self.rbuf.drain(..len);
    }

    /// Reads more bytes into `rbuf`.
    async fn fill(&mut self) -> Result<(), Failure> {
        if self.tls.is_some() {
            let before = self.rbuf.len();
            while self.rbuf.len() == before {
                self.read_tls().await?;
            }
            return Ok(());
        }
        if self.rbuf.capacity() - self.rbuf.len() < 1024 {
            self.rbuf.reserve(4096);
        }
        // tokio-uring takes the buffer by value for the kernel to write into;
        // the slice starts at the end of the unconsumed bytes.
        let buf = std::mem::take(&mut self.rbuf);
        let filled = buf.len();
        match timeout(self.io_timeout, self.stream.read(buf.slice(filled..))).await {
            // The buffer stays with the cancelled read; the connection is
            // abandoned after a timeout anyway.
            Err(_) => Err(Failure::Timeout),
            Ok((res, slice)) => {
                self.rbuf = slice.into_inner();
                match res {
                    Ok(0) => Err(Failure::Closed),
                    Ok(_) => Ok(()),
                    Err(_) => Err(Failure::Io),
                }
            }
        }
    }

    /// Aborts a failed transaction. The connection is reusable only if the
    /// server agrees.
    async fn rset(&mut self) -> Txn {
        if self.write(&b"RSET\r\n"[..]).await.is_err() {
            return Txn::Broken;
        }
        match self.next_reply().await {
            Ok(code) if is_2xx(code) => Txn::Rejected,
            _ => Txn::Broken,
        }
    }

    /// Polite goodbye. Its outcome does not matter to the measurement, so
    /// errors are ignored and the wait is short.
    async fn quit(&mut self) {
        self.io_timeout = self.io_timeout.min(Duration::from_secs(2));
        if self.write(&b"QUIT\r\n"[..]).await.is_ok() {
            let _ = self.next_reply().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        assert_eq!(backoff(1), Duration::from_millis(50));
        assert_eq!(backoff(2), Duration::from_millis(100));
        assert_eq!(backoff(5), Duration::from_millis(800));
        assert_eq!(backoff(6), Duration::from_secs(1));
        assert_eq!(backoff(100), Duration::from_secs(1));
    }

    #[test]
    fn failure_keys() {
        assert_eq!(Failure::Reply(451).key(), "451");
        assert_eq!(Failure::Connect.key(), "connect");
        assert_eq!(Failure::Timeout.key(), "timeout");
    }
}
