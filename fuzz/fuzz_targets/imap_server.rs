//! Arbitrary bytes into an IMAP server session, cut at arbitrary points,
//! answered by a driver that logs `alice` in and says OK to every command.
//!
//! The first 8 bytes choose the cuts and whether the rest is fed raw or
//! mapped onto IMAP tokens (commands, literals, IDLE/DONE, SASL), which
//! gets much deeper into a session than raw bytes do. `check_input` panics
//! if the session breaks a promise: a panic inside it, output that ends
//! mid-line, a mailbox command before a login, or a conversation that
//! depends on where the input was cut.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ringpost_protocols::imap::check;

/// Longest input mapped to tokens: each byte becomes up to ~55 bytes.
const MAX_MAPPED: usize = 256;

fuzz_target!(|data: &[u8]| {
    let Some((head, rest)) = data.split_first_chunk::<8>() else {
        return;
    };
    let seed = u64::from_le_bytes(*head);
    if seed >> 63 == 1 {
        check::check_input(&check::imap_like(&rest[..rest.len().min(MAX_MAPPED)]), seed);
    } else {
        check::check_input(rest, seed);
    }
});
