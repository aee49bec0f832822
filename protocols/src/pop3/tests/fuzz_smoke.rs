//! The fuzz target's checks on stable Rust: a few thousand pseudo-random
//! inputs (fixed seed, so failures reproduce), both POP3-like and raw bytes,
//! through [`check::check_input`].

use std::sync::Arc;

use super::check::{self, XorShift};
use crate::check::{check_random_case, random_cases};

const SEED: u64 = 0x5EED_0110;

/// `check_input` with a config and a cut seed drawn from `rng`.
fn check_case(case: usize, input: &[u8], rng: &mut XorShift) {
    check_random_case(case, input, rng, check::small_config, check::check_input);
}

#[test]
fn pop3_like_inputs_keep_every_promise() {
    random_cases(SEED, 3000, 48, |case, bytes, rng| {
        check_case(case, &check::pop3_like(&bytes), rng)
    });
}

#[test]
fn raw_inputs_keep_every_promise() {
    random_cases(SEED ^ 1, 1000, 200, |case, input, rng| {
        check_case(case, &input, rng)
    });
}

#[test]
fn pop3_like_inputs_reach_deep_states() {
    // Guard against the generator silently going shallow: over the corpus,
    // messages must be served, STLS taken and deletions committed.
    let (mut served, mut tls, mut commits) = (0, 0, 0);
    random_cases(SEED, 500, 48, |_, bytes, _| {
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
    });
    assert!(
        served > 150 && tls > 40 && commits > 25,
        "served {served}, tls {tls}, commits {commits}"
    );
}
