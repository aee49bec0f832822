//! Arbitrary input through the parsers of inbound mail authentication:
//! SPF records and macro strings (`spf::check`), and DKIM signature fields
//! and their verification (`dkim::verify::check`).
//!
//! Checked: no panic; see each `check` for the rest.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ringpost_protocols::{dkim, spf};

fuzz_target!(|data: &[u8]| {
    spf::check(data);
    dkim::verify::check(data);
});
