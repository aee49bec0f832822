//! The suppression list as an operator sees it: list, add and remove, one
//! implementation behind both the admin API and `ringpost suppression`.
//! The relay adds entries by itself after hard bounces
//! (`relay::queue`); SMTP at RCPT and the injection API refuse mail to
//! them ([`refusal`]).

use crate::accounts::Commit;
use crate::config::Config;
use ringpost_protocols::smtp::{replies, Reply};
use ringpost_storage::suppression::{self, Suppression};
use ringpost_storage::{Store, StoreError, WriteBatch};
use serde::{Deserialize, Serialize};

/// One entry, for JSON and tables.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The address.
    pub address: String,
    /// The sending domain it applies to; empty: every sender.
    pub scope: String,
    /// When it was added, Unix seconds.
    pub added: u64,
    /// When it stops applying, Unix seconds; None: never.
    pub expires: Option<u64>,
    /// Why: a bounce class, or `manual`.
    pub class: String,
    /// The reply that caused it, or the operator's note.
    pub reason: String,
}

impl From<Suppression> for Entry {
    fn from(s: Suppression) -> Self {
        Entry {
            address: s.address,
            scope: s.scope,
            added: s.added_micros / 1_000_000,
            expires: (s.expires_micros != 0).then_some(s.expires_micros / 1_000_000),
            class: s.class,
            reason: s.reason,
        }
    }
}

/// Why an operator's change was refused.
#[derive(Debug, thiserror::Error)]
pub enum SuppressionError {
    /// Not something mail can be addressed to.
    #[error("{0}")]
    Invalid(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Whether mail from `sender` to `recipient` is refused because the
/// recipient bounced as unknown before: the reply and the entry's scope
/// (empty: global). Local recipients, and DSNs (the null sender), are never
/// stopped; nothing is when suppression is off.
pub fn refusal(
    store: &dyn Store,
    config: &Config,
    sender: &str,
    recipient: &str,
) -> Result<Option<(Reply, String)>, StoreError> {
    let (Some((_, sender_domain)), Some((_, domain))) =
        (sender.rsplit_once('@'), recipient.rsplit_once('@'))
    else {
        return Ok(None);
    };
    if !config.suppression.enabled || config.is_local_domain(domain) {
        return Ok(None);
    }
    let now = crate::intake::unix_micros();
    let Some(entry) = suppression::find(store, sender_domain, recipient, now)? else {
        return Ok(None);
    };
    let when = match now.saturating_sub(entry.added_micros) / 86_400_000_000 {
        0 => "today".to_owned(),
        1 => "1 day ago".to_owned(),
        n => format!("{n} days ago"),
    };
    Ok(Some((replies::suppressed(&when), entry.scope)))
}

/// Up to `limit` live entries, global ones first, then by sending domain.
pub fn list(store: &dyn Store, limit: usize, now_micros: u64) -> Result<Vec<Entry>, StoreError> {
    let found = suppression::list(store, None, limit, now_micros)?;
    Ok(found.into_iter().map(Entry::from).collect())
}

/// Suppress `address` for senders of `scope` ("" for all) by hand, for
/// `ttl_days` (0: until removed).
pub fn add(
    commit: Commit<'_>,
    address: &str,
    scope: &str,
    reason: &str,
    ttl_days: u64,
    now_micros: u64,
) -> Result<Entry, SuppressionError> {
    let address = checked_address(address)?;
    if scope.contains(['@', ' ', '\0']) || scope.len() > 253 {
        return Err(SuppressionError::Invalid(format!(
            "scope {scope:?} is not a domain (or \"\" for every sender)"
        )));
    }
    let entry = Suppression {
        scope: scope.to_ascii_lowercase(),
        address,
        added_micros: now_micros,
        expires_micros: match ttl_days {
            0 => 0,
            days => now_micros.saturating_add(days.saturating_mul(86_400_000_000)),
        },
        class: "manual".into(),
        reason: reason.chars().take(500).collect(),
    };
    let mut batch = WriteBatch::new();
    suppression::put(&mut batch, &entry);
    commit(batch)?;
    Ok(entry.into())
}

/// Take `address` off the list for `scope`; whether it was there.
pub fn remove(
    store: &dyn Store,
    commit: Commit<'_>,
    address: &str,
    scope: &str,
    now_micros: u64,
) -> Result<bool, SuppressionError> {
    let address = checked_address(address)?;
    let listed = suppression::find(store, scope, &address, now_micros)?
        .is_some_and(|found| found.scope.eq_ignore_ascii_case(scope));
    let mut batch = WriteBatch::new();
    suppression::remove(&mut batch, scope, &address);
    commit(batch)?;
    Ok(listed)
}

/// `local@domain`, lower-cased, of a sane length.
fn checked_address(address: &str) -> Result<String, SuppressionError> {
    let address = address.trim();
    match address.rsplit_once('@') {
        Some((local, domain))
            if !local.is_empty()
                && !domain.is_empty()
                && address.len() <= 254
                && !address.contains(|c: char| c.is_whitespace() || c.is_control()) =>
        {
            Ok(address.to_ascii_lowercase())
        }
        _ => Err(SuppressionError::Invalid(format!(
            "{address:?} is not an email address"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringpost_storage::MemoryStore;

    #[test]
    fn add_list_remove() {
        let store = MemoryStore::new();
        let commit = |batch| store.write(&[batch], true);
        let now = 1_700_000_000_000_000;
        let added = add(&commit, " Bob@Far.Test ", "", "asked to stop", 0, now).unwrap();
        assert_eq!(added.address, "bob@far.test");
        assert_eq!(added.expires, None);
        let timed = add(&commit, "eve@far.test", "Shop.Test", "", 2, now).unwrap();
        assert_eq!(timed.expires, Some(now / 1_000_000 + 2 * 86_400));
        let listed = list(&store, 10, now).unwrap();
        assert_eq!(listed, vec![added, timed]);
        assert!(add(&commit, "no-at-sign", "", "", 0, now).is_err());
        assert!(add(&commit, "a@b.test", "x@y", "", 0, now).is_err());
        assert!(remove(&store, &commit, "BOB@far.test", "", now).unwrap());
        assert!(!remove(&store, &commit, "bob@far.test", "", now).unwrap());
        assert!(
            !remove(&store, &commit, "eve@far.test", "", now).unwrap(),
            "a scoped entry is not the global one"
        );
        assert_eq!(list(&store, 10, now).unwrap().len(), 1);
    }
}
