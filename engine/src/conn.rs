//! One connection driver for every protocol: a [`Session`] from
//! `ringpost-protocols` run over a [`Connection`], which is plain TCP or
//! TLS and can be upgraded in place (STARTTLS, STLS).
//!
//! The loop is the same for SMTP, POP3 and IMAP: feed what has been read,
//! let the [`Protocol`] answer each event (policy, logins, commits, store
//! reads), write the output, then wait for the first of: more input, the
//! session's next deadline, the server stopping, or news the protocol
//! listens for (IMAP IDLE). Replies to pipelined commands go out in one
//! write. Deadlines are the session's (`poll_timeout`); the driver only
//! turns them into a socket read timeout.
//!
//! Memory: the bytes a session holds (a message being received, a literal)
//! are charged to the shard's [`MemoryBudget`] before each read. When the
//! budget is spent the session's socket is not read until there is room,
//! so the client is slowed by TCP itself and nothing more piles up.

use crate::budget::{Lease, MemoryBudget};
use crate::shard::ShutdownSignal;
use futures_lite::{AsyncReadExt, AsyncWriteExt, FutureExt};
use futures_rustls::server::TlsStream;
use futures_rustls::TlsAcceptor;
use glommio::net::TcpStream;
use ringpost_protocols::Session;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The read buffer a connection starts with: commands are short, and an
/// idle connection should cost little.
const FIRST_READ_BUFFER: usize = 4 * 1024;
/// The largest read buffer, reached by doubling while reads fill it
/// (message content, literals). Sessions keep partial lines and content
/// themselves, so this bounds one read only.
const READ_BUFFER: usize = 64 * 1024;
/// One read of compressed input (IMAP COMPRESS).
const COMPRESSED_READ: usize = 16 * 1024;
/// How long a write may wait for the client to read before the connection
/// is given up (each write that makes progress starts it again).
const WRITE_STALL: Duration = Duration::from_secs(300);
/// Compressed bytes held unconsumed, with nothing inflated from them, past
/// which the stream is taken to be broken (inflate consumes what it is
/// given; only a stream that stopped making progress leaves input).
const MAX_COMPRESSED_BACKLOG: usize = 64 * 1024;

/// What a session learns of the TLS under it, for logs, trace headers and
/// metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TlsInfo {
    /// `TLSv1.3` or `TLSv1.2`.
    pub version: &'static str,
    /// The cipher suite, e.g. `TLS13_AES_256_GCM_SHA384`.
    pub cipher: String,
}

/// Why a TLS handshake failed, as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HandshakeFailure {
    /// The client took longer than the handshake timeout.
    Timeout,
    /// The client closed the connection or it broke.
    Io,
    /// The client sent something that is not a TLS handshake, or one we
    /// cannot agree on (protocol version, cipher suites).
    Protocol,
}

impl HandshakeFailure {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            HandshakeFailure::Timeout => "timeout",
            HandshakeFailure::Io => "io",
            HandshakeFailure::Protocol => "protocol",
        }
    }
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// Between taking the plain stream and getting the TLS one back.
    Upgrading,
}

/// A client connection: the stream, what has been read but not consumed,
/// and how to start TLS on it.
pub(crate) struct Connection {
    stream: Stream,
    peer: SocketAddr,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    acceptor: Option<TlsAcceptor>,
    handshake_timeout: Duration,
    tls: Option<TlsInfo>,
    /// IMAP COMPRESS=DEFLATE, once on: inside TLS, around everything.
    deflate: Option<Box<Deflate>>,
}

/// Both directions of RFC 4978 compression: raw deflate, each write
/// flushed to a byte boundary so the client can decode it at once.
///
/// Costs a few hundred KiB per connection (the compressor's window and
/// hash tables), taken only by logged-in clients that ask for it, which
/// the per-account session limit bounds.
struct Deflate {
    compress: flate2::Compress,
    decompress: flate2::Decompress,
    /// Compressed bytes read and not inflated yet.
    input: Vec<u8>,
    consumed: usize,
}

impl Deflate {
    fn new() -> Deflate {
        Deflate {
            compress: flate2::Compress::new(flate2::Compression::fast(), false),
            decompress: flate2::Decompress::new(false),
            input: Vec::new(),
            consumed: 0,
        }
    }

    /// Compress `data` onto `out`; `flush` ends a write.
    fn deflate(&mut self, mut data: &[u8], out: &mut Vec<u8>, flush: bool) -> io::Result<()> {
        let mode = if flush {
            flate2::FlushCompress::Sync
        } else {
            flate2::FlushCompress::None
        };
        loop {
            out.reserve(data.len() / 2 + 256);
            let before = self.compress.total_in();
            self.compress
                .compress_vec(data, out, mode)
                .map_err(|e| io::Error::other(e.to_string()))?;
            data = &data[(self.compress.total_in() - before) as usize..];
            // Done when all is in and the output had room to spare (so the
            // flush is complete).
            if data.is_empty() && out.len() < out.capacity() {
                return Ok(());
            }
        }
    }

    /// Inflate what was read into `out`; how many bytes came out.
    fn inflate(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let (before_in, before_out) = (self.decompress.total_in(), self.decompress.total_out());
        let status = self
            .decompress
            .decompress(
                &self.input[self.consumed..],
                out,
                flate2::FlushDecompress::Sync,
            )
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        if status == flate2::Status::StreamEnd {
            // RFC 4978 has one stream for the whole connection: a client
            // that ends it would have everything after it pile up unread.
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the client ended its compressed stream",
            ));
        }
        self.consumed += (self.decompress.total_in() - before_in) as usize;
        if self.consumed == self.input.len() {
            self.input.clear();
            self.consumed = 0;
        }
        let produced = (self.decompress.total_out() - before_out) as usize;
        if produced == 0 && self.input.len() - self.consumed > MAX_COMPRESSED_BACKLOG {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "compressed input that inflates to nothing",
            ));
        }
        Ok(produced)
    }
}

impl Connection {
    /// A plaintext connection; `acceptor` makes STARTTLS possible.
    pub(crate) fn plain(
        stream: TcpStream,
        peer: SocketAddr,
        acceptor: Option<TlsAcceptor>,
        handshake_timeout: Duration,
    ) -> Connection {
        // A client that stops reading must not hold its connection (and
        // what the server has to say to it) past every deadline: the
        // session's deadlines are checked only while reading.
        let _ = stream.set_write_timeout(Some(WRITE_STALL));
        Connection {
            stream: Stream::Plain(stream),
            peer,
            buf: vec![0; FIRST_READ_BUFFER],
            start: 0,
            end: 0,
            acceptor,
            handshake_timeout,
            tls: None,
            deflate: None,
        }
    }

    /// Compress and decompress everything from now on (IMAP COMPRESS).
    /// What was read and not consumed is dropped: a client may send
    /// nothing after COMPRESS before its answer.
    pub(crate) fn start_compression(&mut self) {
        (self.start, self.end) = (0, 0);
        self.deflate = Some(Box::new(Deflate::new()));
    }

    /// The client's address.
    pub(crate) fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// TLS details, once TLS is up.
    pub(crate) fn tls(&self) -> Option<&TlsInfo> {
        self.tls.as_ref()
    }

    /// Bytes read and not consumed yet.
    fn unread(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    fn consume(&mut self, n: usize) {
        self.start += n.min(self.end - self.start);
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        }
    }

    /// Start TLS on this connection now: everything read and not consumed
    /// is dropped first (it came in plaintext after the STARTTLS command,
    /// and must never be taken as coming through TLS).
    pub(crate) async fn start_tls(&mut self) -> Result<&TlsInfo, HandshakeFailure> {
        (self.start, self.end) = (0, 0);
        let Some(acceptor) = self.acceptor.clone() else {
            return Err(HandshakeFailure::Protocol);
        };
        let Stream::Plain(tcp) = std::mem::replace(&mut self.stream, Stream::Upgrading) else {
            return Err(HandshakeFailure::Protocol);
        };
        let limit = self.handshake_timeout;
        let handshake = async { Some(acceptor.accept(tcp).await) };
        let timeout = async {
            glommio::timer::sleep(limit).await;
            None
        };
        let stream = match handshake.or(timeout).await {
            None => return Err(HandshakeFailure::Timeout),
            Some(Err(e)) if e.kind() == io::ErrorKind::InvalidData => {
                return Err(HandshakeFailure::Protocol)
            }
            Some(Err(_)) => return Err(HandshakeFailure::Io),
            Some(Ok(stream)) => stream,
        };
        let (_, session) = stream.get_ref();
        let version = match session.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
            _ => "TLS",
        };
        let cipher = session
            .negotiated_cipher_suite()
            .map(|suite| format!("{:?}", suite.suite()))
            .unwrap_or_default();
        self.stream = Stream::Tls(Box::new(stream));
        Ok(self.tls.insert(TlsInfo { version, cipher }))
    }

    /// Write all of `bytes`.
    pub(crate) async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.write_pieces(&[bytes]).await
    }

    /// Write the bytes as they go on the wire (compressed or not).
    async fn write_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        match &mut self.stream {
            Stream::Plain(tcp) => tcp.write_all(bytes).await,
            Stream::Tls(tls) => {
                tls.write_all(bytes).await?;
                tls.flush().await
            }
            Stream::Upgrading => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    /// Write pieces in order; under TLS they go through rustls (which
    /// encrypts from them into its records), in plaintext the caller uses
    /// [`Self::plain_socket`] for a gathered write instead.
    pub(crate) async fn write_pieces(&mut self, pieces: &[&[u8]]) -> io::Result<()> {
        if let Some(deflate) = &mut self.deflate {
            let mut out = Vec::new();
            for (i, piece) in pieces.iter().enumerate() {
                deflate.deflate(piece, &mut out, i + 1 == pieces.len())?;
            }
            return self.write_raw(&out).await;
        }
        if let [only] = pieces {
            return self.write_raw(only).await;
        }
        match &mut self.stream {
            Stream::Tls(tls) => {
                for piece in pieces {
                    tls.write_all(piece).await?;
                }
                tls.flush().await
            }
            Stream::Plain(tcp) => {
                for piece in pieces {
                    tcp.write_all(piece).await?;
                }
                Ok(())
            }
            Stream::Upgrading => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    /// The plaintext TCP stream, if the connection is not TLS: the
    /// zero-copy path writes bodies straight from the store to it.
    pub(crate) fn plain_socket(&mut self) -> Option<&mut TcpStream> {
        if self.deflate.is_some() {
            return None;
        }
        match &mut self.stream {
            Stream::Plain(tcp) => Some(tcp),
            _ => None,
        }
    }

    /// Bytes of memory the read buffer takes.
    fn buffer_size(&self) -> usize {
        self.buf.len()
    }

    /// Read more into the buffer, giving up at `deadline`
    /// (`ErrorKind::TimedOut`). Ok(0) is the end of the stream. The deadline
    /// becomes the socket's read timeout, which io_uring links to the read:
    /// no timer of our own per read.
    async fn read(&mut self, deadline: Option<Instant>) -> io::Result<usize> {
        if self.end == self.buf.len() {
            // Only unconsumed bytes remain; make room behind them.
            self.buf.copy_within(self.start..self.end, 0);
            (self.start, self.end) = (0, self.end - self.start);
        }
        let timeout = match deadline {
            None => None,
            Some(at) => match at.checked_duration_since(Instant::now()) {
                Some(left) if left >= Duration::from_millis(1) => Some(left),
                _ => return Err(io::ErrorKind::TimedOut.into()),
            },
        };
        let tcp = match &self.stream {
            Stream::Plain(tcp) => tcp,
            Stream::Tls(tls) => tls.get_ref().0,
            Stream::Upgrading => return Err(io::ErrorKind::NotConnected.into()),
        };
        tcp.set_read_timeout(timeout)?;
        let room = &mut self.buf[self.end..];
        let wanted = room.len();
        let n = match &mut self.deflate {
            None => match &mut self.stream {
                Stream::Plain(tcp) => tcp.read(room).await?,
                Stream::Tls(tls) => tls.read(room).await?,
                Stream::Upgrading => return Err(io::ErrorKind::NotConnected.into()),
            },
            Some(deflate) => loop {
                let n = deflate.inflate(room)?;
                if n > 0 {
                    break n;
                }
                // Nothing whole to inflate yet: read more compressed bytes
                // (into the heap, behind what is there, so a connection's
                // future stays small).
                let have = deflate.input.len();
                deflate.input.resize(have + COMPRESSED_READ, 0);
                let tail = &mut deflate.input[have..];
                let read = match &mut self.stream {
                    Stream::Plain(tcp) => tcp.read(tail).await,
                    Stream::Tls(tls) => tls.read(tail).await,
                    Stream::Upgrading => Err(io::ErrorKind::NotConnected.into()),
                };
                let read = read.inspect_err(|_| deflate.input.truncate(have))?;
                deflate.input.truncate(have + read);
                if read == 0 {
                    break 0;
                }
            },
        };
        self.end += n;
        if n == wanted && self.buf.len() < READ_BUFFER {
            // Data is streaming in: read more at a time.
            let size = (self.buf.len() * 2).min(READ_BUFFER);
            self.buf.resize(size, 0);
        }
        Ok(n)
    }

    /// Close: a TLS close_notify, then the socket.
    pub(crate) async fn close(&mut self) {
        match &mut self.stream {
            Stream::Plain(tcp) => {
                let _ = tcp.close().await;
            }
            Stream::Tls(tls) => {
                let _ = tls.close().await;
            }
            Stream::Upgrading => {}
        }
    }
}

/// What a protocol adds to the driver: how to answer its session's events.
pub(crate) trait Protocol {
    /// The sans-IO session it drives.
    type Session: Session;

    /// Answer one event. The protocol may write to the connection itself
    /// (after writing the session's output first, to keep order), and
    /// starts TLS on it for a STARTTLS event.
    async fn handle(
        &mut self,
        session: &mut Self::Session,
        event: <Self::Session as Session>::Event,
        conn: &mut Connection,
    ) -> io::Result<()>;

    /// Something besides the socket that should wake the session now
    /// (IMAP: news of changed mailboxes while it idles).
    fn news(&self, _session: &Self::Session) -> Option<flume::Receiver<()>> {
        None
    }

    /// [`Self::news`] fired.
    async fn on_news(&mut self, _session: &mut Self::Session, _conn: &mut Connection) {}

    /// The session was closed by one of its deadlines.
    fn on_timeout(&mut self) {}

    /// The client is trusted (a relay network, logged in): its data draws
    /// on the whole memory budget, not the untrusted half.
    fn trusted(&self, session: &Self::Session) -> bool;
}

/// What woke the driver.
enum Wake {
    Read(io::Result<usize>),
    Deadline,
    News,
    Shutdown,
}

/// Write `bytes`, giving up at `deadline` (`ErrorKind::TimedOut`; the
/// connection is closed then, so a write cut short does no harm).
async fn write_within(
    conn: &mut Connection,
    bytes: &[u8],
    deadline: Option<Instant>,
) -> io::Result<()> {
    let mut write = std::pin::pin!(conn.write_all(bytes));
    let Some(at) = deadline else {
        return write.await;
    };
    // Most writes finish at once (the socket has room): no timer for them.
    if let Some(done) = futures_lite::future::poll_once(&mut write).await {
        return done;
    }
    let left = at.saturating_duration_since(Instant::now());
    let late = async {
        glommio::timer::sleep(left).await;
        Err(io::Error::from(io::ErrorKind::TimedOut))
    };
    write.or(late).await
}

/// Run `session` over `conn` until it ends. Returns once the session is
/// closed and its last output written, or the client went away.
pub(crate) async fn drive<P: Protocol>(
    protocol: &mut P,
    session: &mut P::Session,
    conn: &mut Connection,
    shutdown: ShutdownSignal,
    budget: &MemoryBudget,
) -> io::Result<()> {
    let mut lease = Lease::new(budget, conn.peer().ip());
    let mut stopping = false;
    session.handle_timeout(Instant::now());
    loop {
        // Feed until the session neither consumes input nor asks anything.
        // One clock read for what arrived in one read (events answered in
        // between only move deadlines the session sets itself).
        let now = Instant::now();
        let mut fed = false;
        loop {
            let consumed = session.receive(now, conn.unread());
            conn.consume(consumed);
            fed |= consumed > 0;
            let mut asked = false;
            while let Some(event) = session.poll_event() {
                asked = true;
                protocol.handle(session, event, conn).await?;
            }
            if !asked {
                break;
            }
        }
        if !session.output().is_empty() {
            // A stranger that does not read what it asked for cannot hold
            // the connection past its own deadline (a login's, a
            // command's): WRITE_STALL alone restarts at each byte read.
            let deadline = match protocol.trusted(session) {
                true => None,
                false => session.poll_timeout(),
            };
            write_within(conn, session.output(), deadline).await?;
            session.clear_output();
            session.output_written(Instant::now());
        }
        if session.is_closed() {
            return Ok(());
        }
        if fed && !conn.unread().is_empty() || session.has_more_to_run() {
            // The session stopped taking input (or running what it took)
            // to let its output go out first (pipelined commands, each
            // with a long answer): give it the rest before waiting for more.
            continue;
        }

        let deadline = session.poll_timeout();
        // What the session holds, and the buffer one more read may need:
        // wait for room in the budget first (within the deadline).
        let holding = session.buffered() + conn.buffer_size().max(READ_BUFFER);
        let is_trusted = protocol.trusted(session);
        let read = async {
            if !lease.fits(holding, is_trusted) {
                // Over budget: wait for room, but not past the deadline.
                let room = async {
                    lease.hold(holding, is_trusted).await;
                    true
                };
                let late = async {
                    match deadline {
                        Some(at) => {
                            let left = at.saturating_duration_since(Instant::now());
                            glommio::timer::sleep(left).await;
                            false
                        }
                        None => std::future::pending().await,
                    }
                };
                if !room.or(late).await {
                    return Wake::Deadline;
                }
            }
            lease.hold(holding, is_trusted).await;
            match conn.read(deadline).await {
                Err(e) if e.kind() == io::ErrorKind::TimedOut => Wake::Deadline,
                read => Wake::Read(read),
            }
        };
        let news = protocol.news(session);
        let heard = async {
            match news {
                Some(news) => {
                    let _ = news.recv_async().await;
                    Wake::News
                }
                None => std::future::pending().await,
            }
        };
        let wake = if stopping {
            read.or(heard).await
        } else {
            let stop = async {
                shutdown.clone().await.ok();
                Wake::Shutdown
            };
            read.or(heard).or(stop).await
        };
        match wake {
            Wake::Shutdown => {
                stopping = true;
                session.shutdown();
            }
            Wake::News => protocol.on_news(session, conn).await,
            // The client vanished: nothing it was not promised is kept.
            Wake::Read(Ok(0)) => return Ok(()),
            Wake::Read(Ok(_)) => {}
            Wake::Deadline => {
                session.handle_timeout(Instant::now());
                if session.is_closed() {
                    protocol.on_timeout();
                }
            }
            Wake::Read(Err(e)) => return Err(e),
        }
    }
}
