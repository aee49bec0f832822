//! An injection request as the application sends it (JSON), checked
//! before anything is stored: every address, the recipient count, the
//! content's shape. A problem here refuses the whole request (400).
//!
//! ```json
//! {
//!   "envelope_sender": "bounces@example.com",
//!   "recipients": ["ann@example.net", {"email": "bob@example.org", "name": "Bob",
//!                  "substitutions": {"code": "B-7"}}],
//!   "substitutions": {"team": "Ops"},
//!   "pool": "bulk",                      (optional: the egress pool, relay.pools)
//!   "content": "From: ...raw RFC 5322..."  |  {"from": ..., "subject": ..., "text_body": ...}
//! }
//! ```

use super::compose::{Built, Content, Person};
use ringpost_protocols::smtp::canonical_mailbox;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// A checked request.
#[derive(Debug)]
pub struct InjectRequest {
    /// The envelope sender (MAIL FROM); empty: the null sender.
    pub sender: String,
    /// Who gets it.
    pub recipients: Vec<Recipient>,
    /// What it says.
    pub content: Content,
    /// Values for every recipient's placeholders.
    pub substitutions: BTreeMap<String, String>,
    /// Rendered once per recipient (substitutions were given), rather than
    /// once for all.
    pub per_recipient: bool,
    /// The egress pool asked for, if any (checked against the config).
    pub pool: Option<String>,
    /// The request body's size: what placeholders may fill a message to
    /// (at least [`super::RENDER_FLOOR`]).
    pub size: usize,
}

/// One recipient.
#[derive(Debug)]
pub struct Recipient {
    /// Its address and name, as To shows it.
    pub person: Person,
    /// Its own placeholder values.
    pub substitutions: BTreeMap<String, String>,
}

impl Recipient {
    /// The address.
    pub fn email(&self) -> &str {
        self.person.email()
    }

    /// The display name, if given.
    pub fn name(&self) -> Option<&str> {
        match &self.person {
            Person::Named { name, .. } => name.as_deref(),
            Person::Address(_) => None,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    envelope_sender: String,
    recipients: Vec<WireRecipient>,
    content: Value,
    #[serde(default)]
    substitutions: BTreeMap<String, Value>,
    #[serde(default)]
    pool: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum WireRecipient {
    Address(String),
    Full(FullRecipient),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FullRecipient {
    email: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    substitutions: BTreeMap<String, Value>,
}

/// Parse and check a request body; at most `max_recipients` recipients.
pub fn parse(body: &[u8], max_recipients: usize) -> Result<InjectRequest, String> {
    let wire: Wire = serde_json::from_slice(body).map_err(|e| format!("bad request: {e}"))?;
    // Addresses are kept as SMTP would record them, so `"bob"@x` meets
    // the suppression list and the accounts as `bob@x` does.
    let sender = match wire.envelope_sender.as_str() {
        "" => String::new(),
        given => canonical_mailbox(given)
            .ok_or_else(|| format!("envelope_sender `{given}` is not an address"))?,
    };
    if wire.recipients.is_empty() {
        return Err("give at least one recipient".into());
    }
    if wire.recipients.len() > max_recipients {
        return Err(format!(
            "{} recipients; at most {max_recipients} per request (admin.inject_max_recipients)",
            wire.recipients.len()
        ));
    }
    let substitutions = values(wire.substitutions, "substitutions")?;
    let mut recipients = Vec::with_capacity(wire.recipients.len());
    let mut seen = std::collections::HashSet::new();
    for (n, wire) in wire.recipients.into_iter().enumerate() {
        let recipient = match wire {
            WireRecipient::Address(email) => Recipient {
                person: Person::Address(email),
                substitutions: BTreeMap::new(),
            },
            WireRecipient::Full(full) => Recipient {
                person: Person::Named {
                    email: full.email,
                    name: full.name,
                },
                substitutions: values(
                    full.substitutions,
                    &format!("recipients[{n}].substitutions"),
                )?,
            },
        };
        let Some(canonical) = canonical_mailbox(recipient.email()) else {
            return Err(format!(
                "recipient `{}` is not an address",
                recipient.email()
            ));
        };
        // One given twice gets one message, its first entry's.
        if !seen.insert(crate::intake::address_key(&canonical)) {
            continue;
        }
        let recipient = Recipient {
            person: recipient.person.with_email(canonical),
            ..recipient
        };
        recipients.push(recipient);
    }
    let content = match wire.content {
        Value::String(raw) => Content::Raw(raw),
        Value::Object(_) => Content::Built(Box::new(
            serde_json::from_value::<Built>(wire.content).map_err(|e| format!("content: {e}"))?,
        )),
        _ => return Err("content is a raw message (a string) or an object of parts".into()),
    };
    let per_recipient =
        !substitutions.is_empty() || recipients.iter().any(|r| !r.substitutions.is_empty());
    Ok(InjectRequest {
        sender,
        recipients,
        content,
        substitutions,
        per_recipient,
        pool: wire.pool,
        size: body.len(),
    })
}

/// Substitution values: strings, numbers and booleans, as text.
fn values(given: BTreeMap<String, Value>, field: &str) -> Result<BTreeMap<String, String>, String> {
    given
        .into_iter()
        .map(|(key, value)| match value {
            Value::String(s) => Ok((key, s)),
            Value::Number(n) => Ok((key, n.to_string())),
            Value::Bool(b) => Ok((key, b.to_string())),
            _ => Err(format!(
                "{field}.{key}: a value is a string, number or boolean"
            )),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(json: &str) -> Result<InjectRequest, String> {
        parse(json.as_bytes(), 3)
    }

    #[test]
    fn takes_both_recipient_forms_and_both_contents() {
        let request = parsed(
            r#"{"envelope_sender": "b@x.test", "recipients": ["a@y.test", {"email": "c@z.test", "name": "C", "substitutions": {"n": 7}}],
                "content": {"from": "b@x.test", "subject": "s", "text_body": "t"}}"#,
        )
        .unwrap();
        assert_eq!(request.recipients.len(), 2);
        assert_eq!(request.recipients[1].name(), Some("C"));
        assert_eq!(request.recipients[1].substitutions["n"], "7");
        assert!(request.per_recipient);
        assert!(matches!(request.content, Content::Built(_)));

        let raw = parsed(r#"{"envelope_sender": "", "recipients": ["a@y.test"], "content": "From: b@x.test\r\n\r\nhi\r\n"}"#).unwrap();
        assert!(!raw.per_recipient);
        assert!(raw.sender.is_empty());
        assert!(matches!(raw.content, Content::Raw(_)));
    }

    #[test]
    fn addresses_are_kept_as_smtp_records_them() {
        // `"bob"@y.test` is bob@y.test: the suppression list and the
        // accounts must meet it under that one spelling.
        let request = parsed(
            r#"{"envelope_sender": "\"b\"@x.test", "recipients": ["\"bob\"@y.test", {"email": "\"carol\"@y.test", "name": "C"}],
                "content": "From: b@x.test\r\n\r\nhi\r\n"}"#,
        )
        .unwrap();
        assert_eq!(request.sender, "b@x.test");
        assert_eq!(request.recipients[0].email(), "bob@y.test");
        assert_eq!(request.recipients[1].email(), "carol@y.test");
        assert_eq!(request.recipients[1].name(), Some("C"));
        // bob again, however spelt: one message, the first entry's.
        let twice = parsed(
            r#"{"envelope_sender": "", "recipients": [{"email": "bob@y.test", "substitutions": {"n": 1}}, "\"bob\"@Y.test"],
                "content": "From: b@x.test\r\n\r\nhi\r\n"}"#,
        )
        .unwrap();
        assert_eq!(twice.recipients.len(), 1);
        assert_eq!(twice.recipients[0].substitutions["n"], "1");
    }

    #[test]
    fn refusals_say_what_is_wrong() {
        for (json, expected) in [
            ("{", "bad request"),
            (
                r#"{"envelope_sender": "x", "recipients": ["a@y.test"], "content": "c"}"#,
                "envelope_sender `x`",
            ),
            (
                r#"{"envelope_sender": "", "recipients": [], "content": "c"}"#,
                "at least one",
            ),
            (
                r#"{"envelope_sender": "", "recipients": ["a@y.test","b@y.test","c@y.test","d@y.test"], "content": "c"}"#,
                "at most 3",
            ),
            (
                r#"{"envelope_sender": "", "recipients": ["not an address"], "content": "c"}"#,
                "recipient `not an address`",
            ),
            (
                r#"{"envelope_sender": "", "recipients": ["a@y.test"], "content": 5}"#,
                "content is",
            ),
            (
                r#"{"envelope_sender": "", "recipients": ["a@y.test"], "content": {"from": "b@x.test"}}"#,
                "content: missing field `subject`",
            ),
            (
                r#"{"envelope_sender": "", "recipients": ["a@y.test"], "content": "c", "extra": 1}"#,
                "unknown field",
            ),
            (
                r#"{"envelope_sender": "", "recipients": ["a@y.test"], "content": "c", "substitutions": {"k": [1]}}"#,
                "substitutions.k",
            ),
        ] {
            let problem = parsed(json).unwrap_err();
            assert!(problem.contains(expected), "{json}: {problem}");
        }
    }
}
