//! The fuzz target's checks on stable Rust: a few thousand pseudo-random
//! server inputs (fixed seed, so failures reproduce), raw bytes, bytes mapped
//! onto server lines, and mostly-right dialogues with mistakes mixed in, all
//! through [`check::check_input`] (which also bounds the output).

use std::sync::Arc;

use super::super::check;
use super::*;
use crate::check::{random_cases, reproducible, XorShift};

const SEED: u64 = 0x5EED_C11E;

/// `check_input` for one case; a failure names the case and its values.
fn check_case(case: usize, seed: u64, input: &[u8]) -> check::Trace {
    let config = Arc::new(check::small_config(seed));
    let messages = check::messages(seed >> 8);
    reproducible(
        || {
            format!(
                "case {case}: seed {seed}, input {:?}",
                String::from_utf8_lossy(input)
            )
        },
        || check::check_input(config.clone(), &messages, input, seed >> 16),
    )
}

#[test]
fn server_like_inputs_keep_every_promise() {
    random_cases(SEED, 3000, 48, |case, bytes, rng| {
        check_case(case, rng.next_u64(), &check::server_like(&bytes));
    });
}

#[test]
fn raw_inputs_keep_every_promise() {
    random_cases(SEED ^ 1, 1000, 200, |case, input, rng| {
        check_case(case, rng.next_u64(), &input);
    });
}

/// What a well-behaved server would answer to `messages`, one line in
/// twelve replaced by a random server line.
fn dialogue(rng: &mut XorShift, config: &ClientConfig, messages: &[OutgoingMessage]) -> Vec<u8> {
    let mut lines: Vec<Vec<u8>> = vec![b"220 mx.test ESMTP\r\n".to_vec()];
    let offered: Vec<&str> = [
        "PIPELINING",
        "CHUNKING",
        "SIZE 1000",
        "8BITMIME",
        "SMTPUTF8",
    ]
    .into_iter()
    .filter(|_| rng.below(3) != 0)
    .collect();
    let starttls = config.try_starttls && rng.below(4) == 0;
    let mut ehlo = vec![b"250-mx.test\r\n".to_vec()];
    ehlo.extend(offered.iter().map(|e| format!("250-{e}\r\n").into_bytes()));
    ehlo.push(b"250 HELP\r\n".to_vec());
    if starttls {
        lines.push(b"250-mx.test\r\n250 STARTTLS\r\n".to_vec());
        lines.push(b"220 2.0.0 go ahead\r\n".to_vec());
    }
    lines.extend(ehlo);
    let chunking =
        config.use_chunking && offered.contains(&"PIPELINING") && offered.contains(&"CHUNKING");
    for (i, message) in messages.iter().enumerate() {
        if i > 0 {
            lines.push(b"250 2.0.0 reset\r\n".to_vec());
        }
        lines.push(b"250 2.1.0 sender ok\r\n".to_vec());
        for _ in &message.recipients {
            let rcpt: &[u8] = match rng.below(5) {
                0 => b"550 5.1.1 no such user\r\n",
                _ => b"250 2.1.5 recipient ok\r\n",
            };
            lines.push(rcpt.to_vec());
        }
        if !chunking {
            lines.push(b"354 go ahead\r\n".to_vec());
        }
        lines.push(b"250 2.0.0 queued\r\n".to_vec());
    }
    lines.push(b"221 2.0.0 bye\r\n".to_vec());
    for line in &mut lines {
        if rng.below(12) == 0 {
            *line = check::server_like(&[rng.next_u64() as u8]);
        }
    }
    lines.concat()
}

#[test]
fn dialogues_reach_delivery_by_data_and_bdat() {
    // Guard against the checks going shallow: most dialogues must deliver.
    let mut rng = XorShift::new(SEED ^ 2);
    let (mut data, mut chunked) = (0, 0);
    for case in 0..600 {
        let config = ClientConfig {
            max_reply_len: 512,
            ..check::small_config(rng.next_u64())
        };
        let messages: Vec<OutgoingMessage> = (0..1 + rng.below(2))
            .map(|_| {
                let recipients = ["c@d.test", "e@f.test", "g@h.test"];
                let body = ["hi\r\n", ".dot\r\nno end", "caf\u{e9}\r\n"][rng.below(3)];
                message(&recipients[..1 + rng.below(3)], body)
            })
            .collect();
        let input = dialogue(&mut rng, &config, &messages);
        let seed = rng.next_u64();
        let config = Arc::new(config);
        let trace = reproducible(
            || {
                format!(
                    "case {case}: {config:?}, seed {seed}, input {:?}",
                    String::from_utf8_lossy(&input)
                )
            },
            || check::check_input(config.clone(), &messages, &input, seed),
        );
        let delivered = trace.events.iter().any(|event| {
            matches!(event, ClientEvent::Finished(results)
                if results.iter().any(|r| r.reply.is_positive()))
        });
        if delivered {
            if trace.output.windows(5).any(|w| w == b"BDAT ") {
                chunked += 1;
            } else {
                data += 1;
            }
        }
    }
    assert!(data > 100 && chunked > 50, "data {data}, chunked {chunked}");
}
