//! Arbitrary messages through what reads and rewrites message bytes
//! outside the protocol sessions: IMAP BINARY's transfer decoding and the
//! stored form of a binary APPEND (`imap::binary::check`), and DKIM's
//! canonicalization and signature field (`dkim::check`), and the 7-bit
//! conversion for servers without 8BITMIME (`smtp::downgrade::check`).
//!
//! Checked: no panic; see each `check` for the rest.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ringpost_protocols::{dkim, imap::binary, smtp::downgrade};

fuzz_target!(|data: &[u8]| {
    binary::check(data);
    dkim::check(data);
    downgrade::check(data);
});
