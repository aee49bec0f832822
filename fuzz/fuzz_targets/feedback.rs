//! Arbitrary bytes as a report that came back to a feedback address (a
//! late bounce, an ARF complaint): strangers write these.
//!
//! Checked: `read` never panics; what it reads keeps its promises: every
//! address is a mailbox with its domain lowercased, at most
//! `MAX_RECIPIENTS` of them, a delivery report names at least one, and
//! statuses are `d.d.d`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ringpost_protocols::feedback::{self, Report, MAX_RECIPIENTS};
use ringpost_protocols::smtp::is_mailbox;

fuzz_target!(|data: &[u8]| {
    let address_ok = |a: &str| {
        is_mailbox(a) && a.rsplit_once('@').is_some_and(|(_, d)| d == d.to_ascii_lowercase())
    };
    match feedback::read(data) {
        Report::Delivery(delivery) => {
            assert!(!delivery.recipients.is_empty());
            assert!(delivery.recipients.len() <= MAX_RECIPIENTS);
            for r in &delivery.recipients {
                assert!(address_ok(&r.recipient), "{r:?}");
                assert_eq!(r.status.split('.').count(), 3, "{r:?}");
            }
        }
        Report::Complaint(complaint) => {
            assert!(complaint.recipients.len() <= MAX_RECIPIENTS);
            assert!(complaint.recipients.iter().all(|a| address_ok(a)));
        }
        Report::Unknown => {}
    }
});
