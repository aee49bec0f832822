//! SMTP server session throughput, all in memory: EHLO, then pipelined
//! transactions (MAIL, RCPT, DATA, a 2 KB message) answered at once, then
//! QUIT. Throughput is in input bytes.
//!
//! `line_scan_baseline` counts the line ends in the same bytes: the least
//! work any line-oriented SMTP reader must do. The ratio of the two says what
//! the session costs on top of finding lines (parsing, unstuffing, copying
//! the body, writing replies).
//!
//! Run: `cargo bench -p ringpost-benches --bench smtp`.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ringpost_protocols::smtp::{Event, ServerConfig, ServerSession};

/// Transactions per session.
const TRANSACTIONS: usize = 100;
/// Size of each message, close to a typical transactional mail.
const MESSAGE_SIZE: usize = 2048;
/// A socket read, as the engine would feed it.
const READ_SIZE: usize = 16 * 1024;

/// A 2 KB message: a few headers, then 76-character lines; every eighth
/// line starts with a dot, so the stuffing path is on the way.
fn message() -> Vec<u8> {
    let mut msg = b"From: a@b.test\r\nTo: c@d.test\r\nSubject: benchmark\r\n\r\n".to_vec();
    let mut line = 0;
    while msg.len() + 78 <= MESSAGE_SIZE {
        let first = if line % 8 == 0 { b'.' } else { b'a' };
        msg.push(first);
        if first == b'.' {
            msg.push(b'.'); // stuffed on the wire
        }
        msg.extend(std::iter::repeat_n(b'x', 75 - usize::from(first == b'.')));
        msg.extend_from_slice(b"\r\n");
        line += 1;
    }
    msg
}

/// The whole client side of a session.
fn session_input() -> Vec<u8> {
    let msg = message();
    let mut input = b"EHLO client.bench\r\n".to_vec();
    for _ in 0..TRANSACTIONS {
        input.extend_from_slice(
            b"MAIL FROM:<sender@client.bench> SIZE=2048\r\nRCPT TO:<rcpt@server.bench>\r\nDATA\r\n",
        );
        input.extend_from_slice(&msg);
        input.extend_from_slice(b".\r\n");
    }
    input.extend_from_slice(b"QUIT\r\n");
    input
}

/// Drive one session over `input` in reads of `read_size`, accepting every
/// recipient and storing every message; returns the message bytes stored.
fn drive(config: &Arc<ServerConfig>, input: &[u8], read_size: usize) -> usize {
    let mut session = ServerSession::new(config.clone());
    let mut stored = 0;
    let mut pos = 0;
    while pos < input.len() && !session.is_closed() {
        let end = (pos + read_size).min(input.len());
        // Feed this read until it is used up, answering questions between.
        while pos < end {
            pos += session.feed(&input[pos..end]);
            match session.poll_event() {
                Some(Event::Recipient { .. }) => session.accept_recipient(),
                Some(Event::Message(tx)) => {
                    stored += tx.data.len();
                    session.recycle(tx.data);
                    session.message_stored("BENCH0001");
                }
                // The bench input never says AUTH or STARTTLS.
                Some(Event::Authenticate(_) | Event::StartTls) => unreachable!(),
                None => break,
            }
        }
        black_box(session.output());
        session.clear_output();
    }
    assert!(session.is_closed());
    stored
}

fn smtp(c: &mut Criterion) {
    let config = Arc::new(ServerConfig {
        hostname: "server.bench".into(),
        ..ServerConfig::default()
    });
    let input = session_input();
    assert!(drive(&config, &input, input.len()) > TRANSACTIONS * (MESSAGE_SIZE - 100));

    let mut group = c.benchmark_group("smtp");
    group.throughput(Throughput::Bytes(input.len() as u64));
    group.bench_function("session_one_read", |b| {
        b.iter(|| drive(&config, black_box(&input), input.len()))
    });
    group.bench_function("session_16k_reads", |b| {
        b.iter(|| drive(&config, black_box(&input), READ_SIZE))
    });
    group.bench_function("line_scan_baseline", |b| {
        b.iter(|| {
            black_box(&input)
                .iter()
                .filter(|&&byte| byte == b'\n')
                .count()
        })
    });
    group.finish();
}

criterion_group!(benches, smtp);
criterion_main!(benches);
