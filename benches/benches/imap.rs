//! IMAP FETCH rendering: what a FETCH of ENVELOPE, BODYSTRUCTURE and a body
//! section costs per message, on a typical multipart message (text, HTML,
//! a base64 attachment; about 24 KB).
//!
//! Baseline (same run): one pass over the message's bytes finding every
//! line end, the least any parser must do. `cargo bench -p
//! ringpost-benches --bench imap` prints both; the ratio is what MIME
//! parsing and rendering cost over reading the message once.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ringpost_protocols::imap::mime;
use ringpost_protocols::imap::types::fetch::{Part, Section};
use std::hint::black_box;
use std::num::NonZeroU32;

fn message() -> Vec<u8> {
    let mut m = String::from(
        "Return-Path: <alice@example.org>\r\n\
         Received: from mx.example.org by mail.test; Sat, 5 Dec 2026 10:00:00 +0000\r\n\
         From: Alice Example <alice@example.org>\r\n\
         To: Bob <bob@example.com>, carol@example.com\r\n\
         Cc: \"Dave, the reviewer\" <dave@example.net>\r\n\
         Subject: =?UTF-8?Q?Quarterly_report_=E2=80=94_draft?=\r\n\
         Date: Sat, 5 Dec 2026 10:00:00 +0000\r\n\
         Message-ID: <report-42@example.org>\r\n\
         In-Reply-To: <report-41@example.org>\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"outer\"\r\n\r\n\
         --outer\r\n\
         Content-Type: multipart/alternative; boundary=\"inner\"\r\n\r\n\
         --inner\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n",
    );
    for i in 0..60 {
        m.push_str(&format!(
            "Line {i} of the report, with some words in it to read.\r\n"
        ));
    }
    m.push_str("--inner\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<html><body>\r\n");
    for i in 0..60 {
        m.push_str(&format!(
            "<p>Line {i} of the report, with some words in it.</p>\r\n"
        ));
    }
    m.push_str("</body></html>\r\n--inner--\r\n--outer\r\n");
    m.push_str(
        "Content-Type: application/pdf; name=\"report.pdf\"\r\n\
         Content-Disposition: attachment; filename=\"report.pdf\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n",
    );
    for _ in 0..220 {
        m.push_str("JVBERi0xLjQKJcfsj6IKNSAwIG9iago8PC9MZW5ndGggNiAwIFIvRmlsdGVyIC9GbGF0ZURl\r\n");
    }
    m.push_str("--outer--\r\n");
    m.into_bytes()
}

fn fetch(c: &mut Criterion) {
    let message = message();
    let mut group = c.benchmark_group("imap_fetch_24k");
    group.throughput(Throughput::Bytes(message.len() as u64));
    group.bench_function("line_scan_baseline", |b| {
        b.iter(|| memchr::memchr_iter(b'\n', black_box(&message)).count())
    });
    group.bench_function("envelope", |b| {
        b.iter(|| mime::envelope(black_box(&message)))
    });
    group.bench_function("bodystructure", |b| {
        b.iter(|| mime::body_structure(black_box(&message), true))
    });
    let text = Section::Part(Part(
        vec![NonZeroU32::MIN, NonZeroU32::MIN].try_into().unwrap(),
    ));
    group.bench_function("body_section_1_1", |b| {
        b.iter(|| mime::section(black_box(&message), Some(&text), None))
    });
    group.finish();
}

criterion_group!(benches, fetch);
criterion_main!(benches);
