//! A small receiving SMTP server with STARTTLS (rustls, blocking std I/O)
//! for the relay's TLS tests. It records each message with whether it came
//! over TLS. One thread per connection; plain std sockets on loopback.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the server does when asked for STARTTLS.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// A real handshake with the generated certificate.
    Working,
    /// Says 220, then answers the handshake with garbage.
    Broken,
    /// Offers no STARTTLS at all.
    Absent,
    /// Offers neither STARTTLS nor 8BITMIME: a 7-bit server of old.
    SevenBit,
}

/// One received message.
#[derive(Debug, Clone)]
pub struct Received {
    /// Came over TLS.
    pub tls: bool,
    /// MAIL FROM address.
    pub mail_from: String,
    /// RCPT TO addresses, in order.
    pub rcpt_to: Vec<String>,
    /// DATA content, unstuffed, without the final dot line.
    pub data: Vec<u8>,
}

/// The server; stops accepting when dropped.
pub struct TlsMx {
    addr: SocketAddr,
    /// PEM of the self-signed certificate (a CA for verifying clients).
    pub cert_pem: String,
    received: Arc<Mutex<Vec<Received>>>,
}

trait Io: Read + Write + Send {}
impl<T: Read + Write + Send> Io for T {}

impl TlsMx {
    /// Listen on 127.0.0.1:0 with a certificate for `name`.
    pub fn start(name: &str, mode: TlsMode) -> TlsMx {
        let (config, cert_pem) = super::ca::self_signed_server(&[name]);
        Self::with_config(config, cert_pem, mode)
    }

    /// Listen on 127.0.0.1:0 with `config`'s certificate (`cert_pem`).
    pub fn with_config(
        config: Arc<rustls::ServerConfig>,
        cert_pem: String,
        mode: TlsMode,
    ) -> TlsMx {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let sink = received.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (config, sink) = (config.clone(), sink.clone());
                std::thread::spawn(move || {
                    let _ = serve(stream, config, mode, sink);
                });
            }
        });
        TlsMx {
            addr,
            cert_pem,
            received,
        }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Messages so far.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

fn serve(
    stream: TcpStream,
    config: Arc<rustls::ServerConfig>,
    mode: TlsMode,
    sink: Arc<Mutex<Vec<Received>>>,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(20)))?;
    let mut io: Box<dyn Io> = Box::new(stream.try_clone()?);
    let mut tls = false;
    io.write_all(b"220 tls.test ESMTP\r\n")?;
    'session: loop {
        let mut reader = BufReader::new(&mut io);
        let mut mail_from = String::new();
        let mut rcpt_to = Vec::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            let verb = line.trim_end().to_ascii_uppercase();
            let reply: &[u8] = if verb.starts_with("EHLO") {
                if mode == TlsMode::SevenBit {
                    b"250-tls.test\r\n250 PIPELINING\r\n"
                } else if tls || mode == TlsMode::Absent {
                    b"250-tls.test\r\n250 8BITMIME\r\n"
                } else {
                    b"250-tls.test\r\n250-STARTTLS\r\n250 8BITMIME\r\n"
                }
            } else if verb == "STARTTLS" && !tls && mode != TlsMode::SevenBit {
                reader.get_mut().write_all(b"220 2.0.0 go ahead\r\n")?;
                drop(reader);
                if mode == TlsMode::Broken {
                    io.write_all(b"this is not a TLS record\r\n")?;
                    return Ok(());
                }
                let conn = rustls::ServerConnection::new(config.clone()).unwrap();
                io = Box::new(rustls::StreamOwned::new(conn, stream.try_clone()?));
                tls = true;
                continue 'session;
            } else if verb.starts_with("MAIL FROM:") {
                mail_from = line.trim_end()[10..]
                    .trim_matches(|c| c == '<' || c == '>')
                    .to_owned();
                b"250 2.1.0 ok\r\n"
            } else if verb.starts_with("RCPT TO:") {
                let address = line.trim_end()[8..].trim_matches(|c| c == '<' || c == '>');
                rcpt_to.push(address.to_owned());
                b"250 2.1.5 ok\r\n"
            } else if verb == "RSET" || verb == "NOOP" {
                if verb == "RSET" {
                    rcpt_to.clear();
                }
                b"250 2.1.5 ok\r\n"
            } else if verb == "DATA" {
                reader.get_mut().write_all(b"354 go\r\n")?;
                let mut data = Vec::new();
                loop {
                    let mut l = Vec::new();
                    if reader.read_until(b'\n', &mut l)? == 0 {
                        return Ok(());
                    }
                    if l == b".\r\n" {
                        break;
                    }
                    data.extend_from_slice(l.strip_prefix(b".").unwrap_or(&l));
                }
                sink.lock().unwrap().push(Received {
                    tls,
                    mail_from: std::mem::take(&mut mail_from),
                    rcpt_to: std::mem::take(&mut rcpt_to),
                    data,
                });
                b"250 2.0.0 queued\r\n"
            } else if verb == "QUIT" {
                reader.get_mut().write_all(b"221 2.0.0 bye\r\n")?;
                reader.get_mut().flush()?;
                return Ok(());
            } else {
                b"500 5.5.1 what\r\n"
            };
            reader.get_mut().write_all(reply)?;
            reader.get_mut().flush()?;
        }
    }
}
