//! The fuzz target's checks on stable Rust: a few thousand pseudo-random
//! inputs (fixed seed, so failures reproduce), both SMTP-like and raw bytes,
//! through [`check::check_input`].

use std::sync::Arc;

use super::check::{self, XorShift};
use crate::check::{check_random_case, random_cases};

const SEED: u64 = 0x5EED_2025;

/// `check_input` with a config and a cut seed drawn from `rng`.
fn check_case(case: usize, input: &[u8], rng: &mut XorShift) {
    check_random_case(case, input, rng, check::small_config, check::check_input);
}

fn smtp_like(bytes: &[u8]) -> Vec<u8> {
    [&b"EHLO c\r\n"[..], &check::smtp_like(bytes)].concat()
}

#[test]
fn smtp_like_inputs_keep_every_promise() {
    random_cases(SEED, 3000, 48, |case, bytes, rng| {
        check_case(case, &smtp_like(&bytes), rng)
    });
}

#[test]
fn raw_inputs_keep_every_promise() {
    random_cases(SEED ^ 1, 1000, 200, |case, input, rng| {
        check_case(case, &input, rng)
    });
}

#[test]
fn smtp_like_inputs_reach_deep_states() {
    // Guard against the generator silently going shallow: over the corpus,
    // messages must get stored by both DATA and BDAT.
    let (mut data, mut chunked) = (0, 0);
    random_cases(SEED, 500, 48, |_, bytes, _| {
        let input = smtp_like(&bytes);
        let trace = check::drive(
            Arc::new(super::config()),
            [&input[..]],
            check::Answers::Accept,
        );
        for event in &trace.events {
            if let crate::smtp::Event::Message(tx) = event {
                if tx.chunked {
                    chunked += 1;
                } else {
                    data += 1;
                }
            }
        }
    });
    assert!(data > 50 && chunked > 50, "data {data}, chunked {chunked}");
}

#[test]
fn lmtp_like_inputs_keep_every_promise_and_get_stored() {
    let peer = crate::smtp::Peer {
        lmtp: true,
        trusted: true,
        ..Default::default()
    };
    let mut stored = 0;
    random_cases(SEED ^ 2, 1000, 48, |_, bytes, rng| {
        let input = [&b"LHLO c\r\n"[..], &check::lmtp_like(&bytes)].concat();
        let trace =
            check::check_input_from(Arc::new(super::config()), peer, &input, rng.next_u64());
        stored += trace
            .events
            .iter()
            .filter(|e| matches!(e, crate::smtp::Event::Message(_)))
            .count();
    });
    assert!(stored > 50, "{stored} messages");
}
