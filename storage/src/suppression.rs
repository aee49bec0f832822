//! The suppression list: addresses mail is no longer sent to, because they
//! bounced hard (the remote said the mailbox does not exist) or because an
//! operator put them there. An entry belongs to a *scope*: the sending
//! domain whose mail bounced, or the empty scope, which covers every
//! sender. Entries may expire; an expired entry reads as absent, and
//! RocksDB drops it at its next compaction ([`expired`] is the filter).

use crate::codec::{put_str, put_varint, Reader, FORMAT_V1};
use crate::{Family, Store, StoreError, WriteBatch};

/// One suppressed address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suppression {
    /// Sending domain it applies to; empty: every sender.
    pub scope: String,
    /// The address, lower-cased.
    pub address: String,
    /// When it was added, microseconds since the Unix epoch.
    pub added_micros: u64,
    /// When it stops applying (same clock); 0: never.
    pub expires_micros: u64,
    /// Why: the bounce class, or `manual`.
    pub class: String,
    /// The reply that caused it, or the operator's note.
    pub reason: String,
}

impl Suppression {
    /// Whether it still applies at `now_micros`.
    pub fn is_live(&self, now_micros: u64) -> bool {
        self.expires_micros == 0 || now_micros < self.expires_micros
    }
}

/// Case-folded key: scope ‖ 0 ‖ address. Domains and, in practice, local
/// parts are compared without case.
fn key(scope: &str, address: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(scope.len() + 1 + address.len());
    key.extend_from_slice(scope.to_ascii_lowercase().as_bytes());
    key.push(0);
    key.extend_from_slice(address.to_ascii_lowercase().as_bytes());
    key
}

/// Add (or replace) `entry`.
pub fn put(batch: &mut WriteBatch, entry: &Suppression) {
    let mut value = vec![FORMAT_V1];
    put_varint(&mut value, entry.added_micros);
    put_varint(&mut value, entry.expires_micros);
    put_str(&mut value, &entry.class);
    put_str(&mut value, &entry.reason);
    batch.put(
        Family::Suppressions,
        key(&entry.scope, &entry.address),
        value,
    );
}

/// Remove the entry of `address` in `scope`.
pub fn remove(batch: &mut WriteBatch, scope: &str, address: &str) {
    batch.delete(Family::Suppressions, key(scope, address));
}

fn decode(key: &[u8], value: &[u8]) -> Result<Suppression, StoreError> {
    let mut r = Reader::new(Family::Suppressions, value);
    let split = key
        .iter()
        .position(|&b| b == 0)
        .ok_or_else(|| r.corrupt("key without a scope separator"))?;
    let text =
        |bytes: &[u8]| String::from_utf8(bytes.to_vec()).map_err(|_| r.corrupt("key is not UTF-8"));
    let (scope, address) = (text(&key[..split])?, text(&key[split + 1..])?);
    r.version()?;
    let entry = Suppression {
        scope,
        address,
        added_micros: r.varint()?,
        expires_micros: r.varint()?,
        class: r.string()?,
        reason: r.string()?,
    };
    r.finish()?;
    Ok(entry)
}

/// Whether the stored `value` of an entry had expired at `now_micros`;
/// false for anything that does not decode (kept, to be reported by the
/// readers rather than silently dropped).
pub fn expired(value: &[u8], now_micros: u64) -> bool {
    let mut r = Reader::new(Family::Suppressions, value);
    match (r.version(), r.varint(), r.varint()) {
        (Ok(()), Ok(_added), Ok(expires)) => expires != 0 && now_micros >= expires,
        _ => false,
    }
}

/// The live entry that stops mail from a sender of `sender_domain` to
/// `address`: its own scope's, else the global one.
pub fn find(
    store: &dyn Store,
    sender_domain: &str,
    address: &str,
    now_micros: u64,
) -> Result<Option<Suppression>, StoreError> {
    let scopes: &[&str] = if sender_domain.is_empty() {
        &[""]
    } else {
        &[sender_domain, ""]
    };
    for scope in scopes {
        let key = key(scope, address);
        if let Some(value) = store.get(Family::Suppressions, &key)? {
            let entry = decode(&key, &value)?;
            if entry.is_live(now_micros) {
                return Ok(Some(entry));
            }
        }
    }
    Ok(None)
}

/// Up to `limit` live entries in key order (scope, then address),
/// starting after `after` (a scope and address from the previous page).
pub fn list(
    store: &dyn Store,
    after: Option<(&str, &str)>,
    limit: usize,
    now_micros: u64,
) -> Result<Vec<Suppression>, StoreError> {
    let start = match after {
        Some((scope, address)) => {
            let mut k = key(scope, address);
            k.push(0); // just past it
            k
        }
        None => Vec::new(),
    };
    let mut found = Vec::new();
    let mut error = None;
    store.scan(Family::Suppressions, &start, None, &mut |k, v| {
        match decode(k, v) {
            Ok(entry) if entry.is_live(now_micros) => found.push(entry),
            Ok(_) => {}
            Err(e) => {
                error = Some(e);
                return false;
            }
        }
        found.len() < limit
    })?;
    match error {
        Some(e) => Err(e),
        None => Ok(found),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryStore;

    fn entry(scope: &str, address: &str, expires_micros: u64) -> Suppression {
        Suppression {
            scope: scope.into(),
            address: address.into(),
            added_micros: 100,
            expires_micros,
            class: "invalid_recipient".into(),
            reason: "550 5.1.1 no such user".into(),
        }
    }

    fn write(store: &MemoryStore, batch: WriteBatch) {
        store.write(&[batch], true).unwrap();
    }

    #[test]
    fn scoped_global_and_expiring_entries() {
        let store = MemoryStore::new();
        let mut batch = WriteBatch::new();
        put(&mut batch, &entry("shop.test", "gone@far.test", 0));
        put(&mut batch, &entry("", "everyone@far.test", 0));
        put(&mut batch, &entry("shop.test", "old@far.test", 1_000));
        write(&store, batch);

        let found = find(&store, "Shop.Test", "GONE@far.test", 500).unwrap();
        assert_eq!(found, Some(entry("shop.test", "gone@far.test", 0)));
        assert_eq!(
            find(&store, "other.test", "gone@far.test", 500).unwrap(),
            None,
            "another sender's bounce does not stop this sender"
        );
        assert!(find(&store, "other.test", "everyone@far.test", 500)
            .unwrap()
            .is_some());
        assert!(find(&store, "", "everyone@far.test", 500)
            .unwrap()
            .is_some());
        assert!(find(&store, "shop.test", "old@far.test", 999)
            .unwrap()
            .is_some());
        assert_eq!(
            find(&store, "shop.test", "old@far.test", 1_000).unwrap(),
            None
        );

        let all = list(&store, None, 10, 500).unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(all[0].scope, "", "the global scope sorts first");
        let live = list(&store, None, 10, 2_000).unwrap();
        assert_eq!(live.len(), 2, "the expired entry is not listed");
        let page = list(&store, Some(("", "everyone@far.test")), 1, 500).unwrap();
        assert_eq!(page[0].address, "gone@far.test");

        let mut value = Vec::new();
        store
            .scan(
                Family::Suppressions,
                &key("shop.test", "old@far.test"),
                None,
                &mut |_, v| {
                    value = v.to_vec();
                    false
                },
            )
            .unwrap();
        assert!(!expired(&value, 999) && expired(&value, 1_000));
        assert!(
            !expired(b"garbage", u64::MAX),
            "undecodable values are kept"
        );

        let mut batch = WriteBatch::new();
        remove(&mut batch, "SHOP.test", "Gone@Far.Test");
        write(&store, batch);
        assert_eq!(
            find(&store, "shop.test", "gone@far.test", 500).unwrap(),
            None
        );
    }
}
