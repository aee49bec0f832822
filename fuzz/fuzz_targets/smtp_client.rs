//! Arbitrary bytes as a server's replies to an SMTP client session that is
//! sending one to three messages (back to back when the replies offer BDAT
//! with PIPELINING), cut at arbitrary points.
//!
//! The first 8 bytes choose the options and limits, the messages, the cuts
//! and whether the rest is fed raw or mapped onto server lines (whole
//! replies, EHLO keywords, stray bytes), which gets much deeper into a
//! session than raw bytes do. `check_input` panics if the session breaks a
//! promise: a panic inside it, consuming more than it was given, leaving a
//! complete line unread or an unfinished one over the limit, results that do
//! not match the recipients, events after the end, output beyond what the
//! messages explain, or behaving differently depending on where the input
//! was cut.

#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use ringpost_protocols::smtp::client::check;

/// Longest input mapped to lines: each byte becomes up to ~25 bytes.
const MAX_MAPPED: usize = 512;

fuzz_target!(|data: &[u8]| {
    let Some((head, rest)) = data.split_first_chunk::<8>() else {
        return;
    };
    let seed = u64::from_le_bytes(*head);
    let config = Arc::new(check::small_config(seed));
    let messages = check::messages(seed >> 8);
    if seed >> 63 == 1 {
        let mapped = check::server_like(&rest[..rest.len().min(MAX_MAPPED)]);
        check::check_input(config, &messages, &mapped, seed >> 16);
    } else {
        check::check_input(config, &messages, rest, seed >> 16);
    }
});
