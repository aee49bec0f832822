//! `fetch`: download a whole mailbox over IMAP or POP3 and time it, to
//! compare mail-access servers (ringpost, Dovecot) on the same messages.
//!
//! One connection, as a mail client syncing a mailbox does. IMAP: LOGIN,
//! SELECT INBOX, then one `FETCH 1:* (BODY.PEEK[])`; every literal is read
//! and counted, nothing is parsed further. POP3: USER/PASS, STAT, then
//! `RETR 1..n` pipelined (a window of commands in flight, RFC 2449
//! PIPELINING), each response read to its terminating dot line. The clock
//! runs from the first FETCH/RETR to the last byte, so login and listing
//! are not in the figure. Plain blocking sockets (with `--tls`, rustls
//! over them): the client only reads.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::cli::{FetchArgs, FetchProtocol};

/// The client's receive buffer: large reads, few system calls.
const READ_BUFFER: usize = 1024 * 1024;

/// RETR commands in flight at once.
const POP3_WINDOW: usize = 64;

/// What one fetch run measured.
#[derive(Debug, serde::Serialize)]
pub struct FetchReport {
    /// `imap` or `pop3`.
    pub protocol: &'static str,
    /// Messages downloaded.
    pub messages: u64,
    /// Message bytes downloaded (literal or dot-stuffed body octets).
    pub bytes: u64,
    /// Seconds from the first download command to the last byte.
    pub seconds: f64,
    /// Messages per second.
    pub messages_per_sec: f64,
    /// Megabytes (10^6) per second.
    pub mb_per_sec: f64,
}

/// Run the `fetch` subcommand.
pub fn run(args: &FetchArgs) -> io::Result<FetchReport> {
    let stream = TcpStream::connect(&args.addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(args.timeout_secs)))?;
    stream.set_nodelay(true)?;
    let stream: Box<dyn Duplex> = if args.tls {
        let config = crate::tls::client_config(&args.trust).map_err(io::Error::other)?;
        let host = args
            .addr
            .rsplit_once(':')
            .map_or(args.addr.as_str(), |(h, _)| h.trim_matches(['[', ']']));
        let name = rustls::pki_types::ServerName::try_from(host.to_owned())
            .map_err(|_| io::Error::other(format!("`{host}` is not a TLS name")))?;
        let conn = rustls::ClientConnection::new(config, name).map_err(io::Error::other)?;
        Box::new(rustls::StreamOwned::new(conn, stream))
    } else {
        Box::new(stream)
    };
    let mut conn = BufReader::with_capacity(READ_BUFFER, stream);
    let (protocol, messages, bytes, seconds) = match args.protocol {
        FetchProtocol::Imap => {
            let (m, b, s) = imap(&mut conn, args)?;
            ("imap", m, b, s)
        }
        FetchProtocol::Pop3 => {
            let (m, b, s) = pop3(&mut conn, args)?;
            ("pop3", m, b, s)
        }
    };
    Ok(FetchReport {
        protocol,
        messages,
        bytes,
        seconds,
        messages_per_sec: messages as f64 / seconds.max(1e-9),
        mb_per_sec: bytes as f64 / 1e6 / seconds.max(1e-9),
    })
}

/// A connection both read and written: TCP, or TLS over it.
trait Duplex: Read + Write {}
impl<T: Read + Write> Duplex for T {}

/// The buffered connection; commands are written past the buffer.
type Conn = BufReader<Box<dyn Duplex>>;

fn line(reader: &mut impl BufRead, buf: &mut Vec<u8>) -> io::Result<()> {
    buf.clear();
    if reader.read_until(b'\n', buf)? == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

fn fail(what: &str, got: &[u8]) -> io::Error {
    io::Error::other(format!(
        "{what}: {}",
        String::from_utf8_lossy(got).trim_end()
    ))
}

/// Read IMAP responses up to the tagged one; count literals. Returns
/// (literals, literal bytes).
fn imap_until(reader: &mut impl BufRead, tag: &str, buf: &mut Vec<u8>) -> io::Result<(u64, u64)> {
    let (mut literals, mut bytes) = (0, 0);
    loop {
        line(reader, buf)?;
        // A line ending in {n} announces n literal octets, then more line.
        while let Some(n) = literal_length(buf) {
            skip(reader, n)?;
            literals += 1;
            bytes += n;
            line(reader, buf)?;
        }
        if buf.starts_with(tag.as_bytes()) && buf.get(tag.len()) == Some(&b' ') {
            if buf[tag.len() + 1..].starts_with(b"OK") {
                return Ok((literals, bytes));
            }
            return Err(fail("IMAP command failed", buf));
        }
    }
}

/// Pass over `n` octets where they lie in the reader's buffer: the client
/// shares the machine with the server it measures, so it copies nothing it
/// does not look at.
fn skip(reader: &mut impl BufRead, n: u64) -> io::Result<()> {
    let mut left = n;
    while left > 0 {
        let available = reader.fill_buf()?.len();
        if available == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let take = left.min(available as u64) as usize;
        reader.consume(take);
        left -= take as u64;
    }
    Ok(())
}

/// Pass over a POP3 multi-line body up to its `.` line, in place like
/// [`skip`]; returns the body's octets (dot-stuffed, terminator excluded).
fn skip_dot_body(reader: &mut impl BufRead) -> io::Result<u64> {
    let mut bytes = 0u64;
    // The current line's length so far and its first three octets: enough
    // to tell the terminator even when it straddles two reads.
    let (mut line_len, mut head) = (0usize, [0u8; 3]);
    loop {
        let chunk = reader.fill_buf()?;
        if chunk.is_empty() {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let end = memchr::memchr(b'\n', chunk);
        let taken = end.map_or(chunk.len(), |i| i + 1);
        for (slot, &b) in head.iter_mut().skip(line_len).zip(&chunk[..taken]) {
            *slot = b;
        }
        line_len += taken;
        reader.consume(taken);
        if end.is_some() {
            if line_len == 3 && head == *b".\r\n" {
                return Ok(bytes);
            }
            bytes += line_len as u64;
            line_len = 0;
        }
    }
}

/// `{n}` (or `{n+}`) at the end of a line.
fn literal_length(line: &[u8]) -> Option<u64> {
    let line = line
        .strip_suffix(b"\r\n")
        .or_else(|| line.strip_suffix(b"\n"))?;
    let line = line.strip_suffix(b"}")?;
    let open = line.iter().rposition(|&b| b == b'{')?;
    let digits = line[open + 1..]
        .strip_suffix(b"+")
        .unwrap_or(&line[open + 1..]);
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Write a command (flushed: under TLS it sits in rustls until then).
fn send(conn: &mut Conn, command: &[u8]) -> io::Result<()> {
    let stream = conn.get_mut();
    stream.write_all(command)?;
    stream.flush()
}

fn imap(conn: &mut Conn, args: &FetchArgs) -> io::Result<(u64, u64, f64)> {
    let mut buf = Vec::with_capacity(1024);
    line(conn, &mut buf)?;
    if !buf.starts_with(b"* OK") {
        return Err(fail("IMAP greeting", &buf));
    }
    let login = format!("a LOGIN \"{}\" \"{}\"\r\n", args.user, args.password);
    send(conn, login.as_bytes())?;
    imap_until(conn, "a", &mut buf)?;
    send(conn, b"b SELECT INBOX\r\n")?;
    imap_until(conn, "b", &mut buf)?;
    let started = Instant::now();
    send(conn, b"c FETCH 1:* (BODY.PEEK[])\r\n")?;
    let (messages, bytes) = imap_until(conn, "c", &mut buf)?;
    let seconds = started.elapsed().as_secs_f64();
    send(conn, b"d LOGOUT\r\n")?;
    Ok((messages, bytes, seconds))
}

fn pop3_ok(reader: &mut impl BufRead, buf: &mut Vec<u8>) -> io::Result<()> {
    line(reader, buf)?;
    if buf.starts_with(b"+OK") {
        Ok(())
    } else {
        Err(fail("POP3 command failed", buf))
    }
}

fn pop3(conn: &mut Conn, args: &FetchArgs) -> io::Result<(u64, u64, f64)> {
    let mut buf = Vec::with_capacity(1024);
    pop3_ok(conn, &mut buf)?;
    send(conn, format!("USER {}\r\n", args.user).as_bytes())?;
    pop3_ok(conn, &mut buf)?;
    send(conn, format!("PASS {}\r\n", args.password).as_bytes())?;
    pop3_ok(conn, &mut buf)?;
    send(conn, b"STAT\r\n")?;
    pop3_ok(conn, &mut buf)?;
    let count: usize = std::str::from_utf8(&buf[4..])
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| fail("STAT", &buf))?;
    let started = Instant::now();
    let (mut sent, mut bytes) = (0usize, 0u64);
    let mut pending = String::new();
    for done in 0..count {
        // Keep a window of RETRs in flight.
        while sent < count && sent < done + POP3_WINDOW {
            sent += 1;
            pending.push_str(&format!("RETR {sent}\r\n"));
        }
        if !pending.is_empty() {
            send(conn, pending.as_bytes())?;
            pending.clear();
        }
        pop3_ok(conn, &mut buf)?;
        bytes += skip_dot_body(conn)?;
    }
    let seconds = started.elapsed().as_secs_f64();
    send(conn, b"QUIT\r\n")?;
    Ok((count as u64, bytes, seconds))
}

#[cfg(test)]
mod tests {
    use super::{literal_length, skip_dot_body};

    #[test]
    fn dot_bodies_end_at_the_dot_line_wherever_reads_split() {
        let wire = b"a\r\n..b\r\n\r\n.\r\nnext";
        for capacity in 1..wire.len() {
            let mut reader = std::io::BufReader::with_capacity(capacity, &wire[..]);
            assert_eq!(
                skip_dot_body(&mut reader).unwrap(),
                10,
                "capacity {capacity}"
            );
            let mut rest = Vec::new();
            std::io::Read::read_to_end(&mut reader, &mut rest).unwrap();
            assert_eq!(rest, b"next");
        }
        let mut truncated = &b"a\r\n.\r"[..];
        assert!(skip_dot_body(&mut truncated).is_err());
    }

    #[test]
    fn literal_lengths() {
        assert_eq!(literal_length(b"* 1 FETCH (BODY[] {123}\r\n"), Some(123));
        assert_eq!(literal_length(b"x {7+}\r\n"), Some(7));
        assert_eq!(literal_length(b"* 1 FETCH (FLAGS ())\r\n"), None);
        assert_eq!(literal_length(b"{x}\r\n"), None);
    }
}
