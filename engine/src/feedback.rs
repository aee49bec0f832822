//! Reports about mail sent earlier, taken at `feedback.domains`: late
//! ("out-of-band") bounces and feedback loop complaints, read once per
//! message by [`ringpost_protocols::feedback`] and turned into webhook
//! events and, where the operator trusts them, suppression entries, in the
//! commit that answers the report's `250`. Nothing is delivered to a
//! mailbox.
//!
//! Anyone can write a report. So a report suppresses only for mail from
//! the domain it came to (the return path it answers), never for every
//! sender, and only with `feedback.suppress_bounces` or
//! `suppress_complaints` on; it names at most
//! [`feedback::MAX_RECIPIENTS`] addresses.

use crate::config::Config;
use crate::events::EventSpool;
use ringpost_protocols::feedback::{self, Report};
use ringpost_protocols::smtp::bounce_class::{self, Class};
use ringpost_storage::suppression::{self, Suppression};
use ringpost_storage::WriteBatch;
use serde_json::{Map, Value};

/// Complaints that stop mail to the address (`not-spam` and the like do
/// not).
const COMPLAINTS: [&str; 2] = ["abuse", "fraud"];

/// What one report came to.
pub(crate) struct Taken {
    /// Suppression entries and events, for the commit.
    pub batch: WriteBatch,
    /// `delivery`, `complaint` or `unknown` (the metric's label).
    pub kind: &'static str,
    /// Addresses suppressed.
    pub suppressed: usize,
}

/// Read `message`, which came to the feedback addresses `to` (one or
/// more, each at a feedback domain).
pub(crate) fn take(
    config: &Config,
    events: Option<&EventSpool>,
    to: &[String],
    message: &[u8],
    now_micros: u64,
) -> Taken {
    let mut kind = "unknown";
    let mut suppressed = 0;
    let first = to.first().map_or("", String::as_str);
    // The domains it came to: the return paths of the mail it is about,
    // whose senders' mail a suppression stops.
    let mut scopes: Vec<String> = to
        .iter()
        .filter_map(|a| a.rsplit_once('@'))
        .map(|(_, d)| d.to_ascii_lowercase())
        .collect();
    scopes.sort();
    scopes.dedup();
    let expires_micros = match config.suppression.ttl_days {
        0 => 0,
        days => now_micros.saturating_add(days.saturating_mul(86_400_000_000)),
    };
    let mut suppress = |batch: &mut WriteBatch, address: &str, class: &str, reason: String| {
        for scope in &scopes {
            suppression::put(
                batch,
                &Suppression {
                    scope: scope.clone(),
                    address: address.to_owned(),
                    added_micros: now_micros,
                    expires_micros,
                    class: class.to_owned(),
                    reason: reason.chars().take(500).collect(),
                },
            );
        }
        suppressed += 1;
    };
    let mut batch = WriteBatch::new();
    let event = |batch: &mut WriteBatch, kind: &str, fields: Map<String, Value>| {
        if let Some(events) = events {
            events.add(batch, kind, fields);
        }
    };
    match feedback::read(message) {
        Report::Delivery(delivery) => {
            kind = "delivery";
            let rules = config.relay.bounce_classifier().unwrap_or_default();
            for status in delivery.recipients.iter().filter(|r| r.is_hard_bounce()) {
                let text = status.diagnostic.as_deref().unwrap_or("");
                let class = bounce_class::classify(&rules, &status.status, text);
                tracing::info!(to = first, recipient = %status.recipient, status = %status.status, class = class.name(), "out-of-band bounce");
                let mut fields = Map::new();
                fields.insert("recipient".into(), status.recipient.clone().into());
                fields.insert("status".into(), status.status.clone().into());
                fields.insert("class".into(), class.name().into());
                fields.insert("reply".into(), text.into());
                fields.insert("feedback_address".into(), first.into());
                insert_some(
                    &mut fields,
                    "reporting_mta",
                    delivery.reporting_mta.as_deref(),
                );
                insert_some(
                    &mut fields,
                    "message_id",
                    delivery.original_message_id.as_deref(),
                );
                event(&mut batch, "out_of_band_bounce", fields);
                let on = config.suppression.enabled && config.feedback.suppress_bounces;
                if on && class == Class::InvalidRecipient {
                    let reason = format!("out-of-band bounce: {} {text}", status.status);
                    suppress(&mut batch, &status.recipient, class.name(), reason);
                }
            }
        }
        Report::Complaint(complaint) => {
            kind = "complaint";
            let stops = COMPLAINTS.contains(&complaint.feedback_type.as_str());
            for recipient in &complaint.recipients {
                tracing::info!(to = first, %recipient, feedback_type = %complaint.feedback_type, "complaint");
                let mut fields = Map::new();
                fields.insert("recipient".into(), recipient.clone().into());
                fields.insert(
                    "feedback_type".into(),
                    complaint.feedback_type.clone().into(),
                );
                fields.insert("feedback_address".into(), first.into());
                insert_some(&mut fields, "user_agent", complaint.user_agent.as_deref());
                insert_some(
                    &mut fields,
                    "message_id",
                    complaint.original_message_id.as_deref(),
                );
                event(&mut batch, "complaint", fields);
                let on = config.suppression.enabled && config.feedback.suppress_complaints;
                if stops && on {
                    let reason = format!("complaint ({})", complaint.feedback_type);
                    suppress(&mut batch, recipient, "complaint", reason);
                }
            }
        }
        Report::Unknown => {
            tracing::info!(
                to = first,
                "mail to a feedback address that is no report; dropped"
            );
        }
    }
    Taken {
        batch,
        kind,
        suppressed,
    }
}

fn insert_some(fields: &mut Map<String, Value>, name: &str, value: Option<&str>) {
    if let Some(value) = value {
        fields.insert(name.into(), value.into());
    }
}
