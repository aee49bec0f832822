//! The fuzz target's checks on stable Rust: a few thousand pseudo-random
//! inputs (fixed seed, so failures reproduce), both POP3-like and raw bytes,
//! through [`check::check_input`].

use std::sync::Arc;

use super::check::{self, XorShift};

const SEED: u64 = 0x5EED_0110;

#[test]
fn pop3_like_inputs_keep_every_promise() {
    let mut rng = XorShift::new(SEED);
    for case in 0..3000 {
        let len = rng.below(48);
        let bytes: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        let input = check::pop3_like(&bytes);
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
fn pop3_like_inputs_reach_deep_states() {
    // Guard against the generator silently going shallow: over the corpus,
    // messages must be served, STLS taken and deletions committed.
    let mut rng = XorShift::new(SEED);
    let (mut served, mut tls, mut commits) = (0, 0, 0);
    for _ in 0..500 {
        let bytes: Vec<u8> = (0..rng.below(48)).map(|_| rng.next_u64() as u8).collect();
        let input = check::pop3_like(&bytes);
        let trace = check::drive(Arc::new(super::config()), [&input[..]], &check::ACCEPT);
        for event in &trace.events {
            match event {
                crate::pop3::Event::Retrieve { .. } => served += 1,
                crate::pop3::Event::StartTls => tls += 1,
                crate::pop3::Event::Commit { deleted } if !deleted.is_empty() => commits += 1,
                _ => {}
            }
        }
    }
    assert!(
        served > 150 && tls > 40 && commits > 25,
        "served {served}, tls {tls}, commits {commits}"
    );
}
