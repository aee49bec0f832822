//! `inject`: the `send` load over ringpost's HTTP injection API
//! (`POST /api/v1/inject`) instead of SMTP, to compare the two on the same
//! messages: the template of [`crate::message`], patched per message, sent
//! as the raw `content` of one request per message.
//!
//! One keep-alive HTTP/1.1 connection per OS thread, blocking sockets, one
//! request in flight per connection (HTTP/1.1 has no useful pipelining).
//! A message counts as accepted when the answer is 200 with every
//! recipient stored; the latency is from the request's first byte to the
//! answer's last.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::cli::InjectArgs;
use crate::message::{MessageSpec, MessageTemplate};
use crate::stats::{Report, RunInfo, ThreadStats};

/// Run the `inject` subcommand.
pub fn run(args: &InjectArgs) -> io::Result<Report> {
    let token = match (&args.token, &args.token_file) {
        (Some(token), _) => token.clone(),
        (None, Some(file)) => std::fs::read_to_string(file)?.trim().to_owned(),
        (None, None) => return Err(io::Error::other("give --token or --token-file")),
    };
    let recipients: Vec<String> = (1..=args.rcpts)
        .map(|k| format!("user{k}@{}", args.rcpt_domain))
        .collect();
    let run_id = format!(
        "{:x}",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros())
    );
    let template = Arc::new(MessageTemplate::new(&MessageSpec {
        size: args.size,
        from: &args.from,
        to: &recipients,
        id_domain: "blast.example.test",
        run_id: &run_id,
    }));
    let head = Arc::new(RequestHead {
        path_and_host: format!(
            "POST /api/v1/inject HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\n",
            args.to_addr
        ),
        envelope: format!(
            "{{\"envelope_sender\":{},\"recipients\":{},\"content\":",
            serde_json::to_string(&args.from).expect("a string serializes"),
            serde_json::to_string(&recipients).expect("strings serialize")
        ),
    });
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let threads: Vec<_> = (0..args.connections)
        .map(|_| {
            let (template, head, next) = (template.clone(), head.clone(), next.clone());
            let (addr, total, timeout) = (
                args.to_addr.clone(),
                args.messages,
                Duration::from_secs_f64(args.read_timeout),
            );
            std::thread::spawn(move || {
                let mut stats = ThreadStats::default();
                if let Err(e) =
                    connection(&addr, &template, &head, &next, total, timeout, &mut stats)
                {
                    stats.record_error(&format!("io: {}", e.kind()));
                }
                stats
            })
        })
        .collect();
    let mut stats = ThreadStats::default();
    for thread in threads {
        let done = thread
            .join()
            .map_err(|_| io::Error::other("a thread panicked"))?;
        stats.merge(&done);
    }
    let info = RunInfo {
        target: format!("http://{}/api/v1/inject", args.to_addr),
        connections: args.connections,
        threads: args.connections,
        pipelining: false,
        size: template.message_len(),
        rcpts: args.rcpts,
        size_mix: None,
        rate: None,
    };
    Ok(Report::new(info, &stats, started.elapsed()))
}

/// The parts of every request that never change.
struct RequestHead {
    /// Request line and fixed header fields.
    path_and_host: String,
    /// The JSON body up to the content's string.
    envelope: String,
}

/// One connection's loop: take the next message number until `total`.
fn connection(
    addr: &str,
    template: &MessageTemplate,
    head: &RequestHead,
    next: &AtomicU64,
    total: u64,
    timeout: Duration,
    stats: &mut ThreadStats,
) -> io::Result<()> {
    let stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(timeout))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::with_capacity(64 * 1024, stream);
    let mut message = template.instance();
    let mut request = Vec::with_capacity(message.len() * 2 + 512);
    let mut answer = Vec::with_capacity(1024);
    loop {
        let seq = next.fetch_add(1, Ordering::Relaxed);
        if seq >= total {
            return Ok(());
        }
        template.patch(&mut message, seq);
        // The template ends in DATA's ".\r\n"; the API takes the message alone.
        let content = std::str::from_utf8(&message[..message.len() - 3])
            .map_err(|_| io::Error::other("the template is ASCII"))?;
        let body = format!(
            "{}{}}}",
            head.envelope,
            serde_json::to_string(content).expect("a string serializes")
        );
        request.clear();
        request.extend_from_slice(head.path_and_host.as_bytes());
        request.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
        request.extend_from_slice(body.as_bytes());
        let sent = Instant::now();
        writer.write_all(&request)?;
        let status = read_answer(&mut reader, &mut answer)?;
        let stored = status == 200 && none_failed(&answer);
        if stored {
            stats.record_ok(content.len(), sent.elapsed());
        } else {
            stats.failed += 1;
            stats.record_error(&format!("http {status}"));
        }
    }
}

/// Whether an answer's JSON says no recipient failed.
fn none_failed(answer: &[u8]) -> bool {
    answer
        .windows(b"\"fail_count\":0".len())
        .any(|w| w == b"\"fail_count\":0")
}

/// Read one HTTP/1.1 answer (status line, fields, a Content-Length body)
/// into `body`; returns the status.
fn read_answer(reader: &mut BufReader<TcpStream>, body: &mut Vec<u8>) -> io::Result<u16> {
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let status = line
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::other(format!("not an HTTP answer: {line:?}")))?;
    let mut length = 0usize;
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let field = line.trim_end();
        if field.is_empty() {
            break;
        }
        if let Some((name, value)) = field.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().map_err(io::Error::other)?;
            }
        }
    }
    body.resize(length, 0);
    reader.read_exact(body)?;
    Ok(status)
}
