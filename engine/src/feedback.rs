//! Reports about mail sent earlier, taken at `feedback.domains`: late
//! ("out-of-band") bounces and feedback loop complaints, read by
//! [`ringpost_protocols::feedback`] and turned into what the relay's own
//! bounces give: suppression entries and webhook events, in the commit
//! that answers the report's `250`. Nothing is delivered to a mailbox.

use crate::config::{Config, SuppressionScope};
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

/// Read `message`, which came to the feedback address `to`.
pub(crate) fn take(
    config: &Config,
    events: Option<&EventSpool>,
    to: &str,
    message: &[u8],
    now_micros: u64,
) -> Taken {
    let mut taken = Taken {
        batch: WriteBatch::new(),
        kind: "unknown",
        suppressed: 0,
    };
    let to_domain = to
        .rsplit_once('@')
        .map_or("", |(_, d)| d)
        .to_ascii_lowercase();
    // The report came to the return path of the mail it is about: the
    // sending domain whose mail a suppression stops, as for the relay's
    // own bounces.
    let scope = match config.suppression.scope {
        SuppressionScope::SenderDomain => to_domain.as_str(),
        SuppressionScope::Global => "",
    };
    let expires_micros = match config.suppression.ttl_days {
        0 => 0,
        days => now_micros.saturating_add(days.saturating_mul(86_400_000_000)),
    };
    let suppress = |batch: &mut WriteBatch, address: &str, class: &str, reason: String| {
        suppression::put(
            batch,
            &Suppression {
                scope: scope.to_owned(),
                address: address.to_lowercase(),
                added_micros: now_micros,
                expires_micros,
                class: class.to_owned(),
                reason: reason.chars().take(500).collect(),
            },
        );
    };
    match feedback::read(message) {
        Report::Delivery(delivery) => {
            taken.kind = "delivery";
            let rules = config.relay.bounce_classifier().unwrap_or_default();
            for status in delivery.recipients.iter().filter(|r| r.is_hard_bounce()) {
                let text = status.diagnostic.as_deref().unwrap_or("");
                let class = bounce_class::classify(&rules, &status.status, text);
                tracing::info!(to, recipient = %status.recipient, status = %status.status, class = class.name(), "out-of-band bounce");
                if let Some(events) = events {
                    let mut fields = Map::new();
                    fields.insert("recipient".into(), status.recipient.clone().into());
                    fields.insert("status".into(), status.status.clone().into());
                    fields.insert("class".into(), class.name().into());
                    fields.insert("reply".into(), text.into());
                    fields.insert("feedback_address".into(), to.into());
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
                    events.add(&mut taken.batch, "out_of_band_bounce", fields);
                }
                if config.suppression.enabled && class == Class::InvalidRecipient {
                    let reason = format!("out-of-band bounce: {} {text}", status.status);
                    suppress(&mut taken.batch, &status.recipient, class.name(), reason);
                    taken.suppressed += 1;
                }
            }
        }
        Report::Complaint(complaint) => {
            taken.kind = "complaint";
            let stops = COMPLAINTS.contains(&complaint.feedback_type.as_str());
            for recipient in &complaint.recipients {
                tracing::info!(to, %recipient, feedback_type = %complaint.feedback_type, "complaint");
                if let Some(events) = events {
                    let mut fields = Map::new();
                    fields.insert("recipient".into(), recipient.clone().into());
                    fields.insert(
                        "feedback_type".into(),
                        complaint.feedback_type.clone().into(),
                    );
                    fields.insert("feedback_address".into(), to.into());
                    insert_some(&mut fields, "user_agent", complaint.user_agent.as_deref());
                    insert_some(
                        &mut fields,
                        "message_id",
                        complaint.original_message_id.as_deref(),
                    );
                    events.add(&mut taken.batch, "complaint", fields);
                }
                if stops && config.suppression.enabled && config.feedback.suppress_complaints {
                    let reason = format!("complaint ({})", complaint.feedback_type);
                    suppress(&mut taken.batch, recipient, "complaint", reason);
                    taken.suppressed += 1;
                }
            }
        }
        Report::Unknown => {
            tracing::info!(to, "mail to a feedback address that is no report; dropped");
        }
    }
    taken
}

fn insert_some(fields: &mut Map<String, Value>, name: &str, value: Option<&str>) {
    if let Some(value) = value {
        fields.insert(name.into(), value.into());
    }
}
