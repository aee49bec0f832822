//! Arbitrary bytes into an SMTP server session, cut at arbitrary points,
//! with the driver's answers alternating yes and no.
//!
//! The first 8 bytes choose the limits, the cuts, SMTP or LMTP, and whether the rest is fed
//! raw or mapped onto SMTP tokens (commands, line endings, dots), which gets
//! much deeper into a session than raw bytes do. `check_input` panics if the
//! session breaks a promise: a panic inside `feed`, a malformed reply line,
//! consuming more than it was given, reading past a question or a close, or
//! behaving differently depending on where the input was cut.

#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use ringpost_protocols::smtp::{check, Peer};

/// Longest input mapped to tokens: each byte becomes up to ~40 bytes.
const MAX_MAPPED: usize = 512;

fuzz_target!(|data: &[u8]| {
    let Some((head, rest)) = data.split_first_chunk::<8>() else {
        return;
    };
    let seed = u64::from_le_bytes(*head);
    let config = Arc::new(check::small_config(seed));
    // One input in four is an LMTP client's (LHLO, an answer per recipient).
    let lmtp = (seed >> 61) & 3 == 3;
    let peer = Peer {
        plaintext_auth: true,
        trusted: lmtp,
        lmtp,
        ..Peer::default()
    };
    if seed >> 63 == 1 {
        let tokens = &rest[..rest.len().min(MAX_MAPPED)];
        let mapped = match lmtp {
            true => check::lmtp_like(tokens),
            false => check::smtp_like(tokens),
        };
        check::check_input_from(config, peer, &mapped, seed >> 32);
    } else {
        check::check_input_from(config, peer, rest, seed >> 32);
    }
});
