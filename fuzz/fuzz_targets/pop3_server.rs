//! Arbitrary bytes into a POP3 server session, cut at arbitrary points,
//! with the driver's answers cycling through yes, no, yes, locked.
//!
//! The first 8 bytes choose the limits, the TLS options, the cuts and
//! whether the rest is fed raw or mapped onto POP3 tokens (commands, logins,
//! SASL lines, line endings), which gets much deeper into a session than raw
//! bytes do. `check_input` panics if the session breaks a promise: a panic
//! inside `feed`, a malformed response, an unstuffed or unterminated
//! multi-line response, consuming more than it was given, reading past a
//! question or a close, running plaintext sent after STLS, an event outside
//! its state, or behaving differently depending on where the input was cut.

#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use ringpost_protocols::pop3::check;

/// Longest input mapped to tokens: each byte becomes up to ~25 bytes.
const MAX_MAPPED: usize = 512;

fuzz_target!(|data: &[u8]| {
    let Some((head, rest)) = data.split_first_chunk::<8>() else {
        return;
    };
    let seed = u64::from_le_bytes(*head);
    let config = Arc::new(check::small_config(seed));
    if seed >> 63 == 1 {
        let mapped = check::pop3_like(&rest[..rest.len().min(MAX_MAPPED)]);
        check::check_input(config, &mapped, seed >> 32);
    } else {
        check::check_input(config, rest, seed >> 32);
    }
});
