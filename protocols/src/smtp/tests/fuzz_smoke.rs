//! The fuzz target's checks on stable Rust: a few thousand pseudo-random
//! inputs (fixed seed, so failures reproduce), both SMTP-like and raw bytes,
//! through [`check::check_input`].

use std::sync::Arc;

use super::check::{self, XorShift};

const SEED: u64 = 0x5EED_2025;

#[test]
fn smtp_like_inputs_keep_every_promise() {
    let mut rng = XorShift::new(SEED);
    for case in 0..3000 {
        let len = rng.below(48);
        let bytes: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        let input = [&b"EHLO c\r\n"[..], &check::smtp_like(&bytes)].concat();
        let config = Arc::new(check::small_config(rng.next_u64()));
        let seed = rng.next_u64();
        // A failure message names the case; rerun it with these values.
        let result = std::panic::catch_unwind(|| check::check_input(config.clone(), &input, seed));
        assert!(
            result.is_ok(),
            "case {case}: config {config:?}, seed {seed}, input {:?}",
            String::from_utf8_lossy(&input)
        );
    }
}

#[test]
fn raw_inputs_keep_every_promise() {
    let mut rng = XorShift::new(SEED ^ 1);
    for _ in 0..1000 {
        let len = rng.below(200);
        let input: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        check::check_input(
            Arc::new(check::small_config(rng.next_u64())),
            &input,
            rng.next_u64(),
        );
    }
}

#[test]
fn smtp_like_inputs_reach_deep_states() {
    // Guard against the generator silently going shallow: over the corpus,
    // messages must get stored by both DATA and BDAT.
    let mut rng = XorShift::new(SEED);
    let (mut data, mut chunked) = (0, 0);
    for _ in 0..500 {
        let bytes: Vec<u8> = (0..rng.below(48)).map(|_| rng.next_u64() as u8).collect();
        let input = [&b"EHLO c\r\n"[..], &check::smtp_like(&bytes)].concat();
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
    }
    assert!(data > 50 && chunked > 50, "data {data}, chunked {chunked}");
}
