//! Delivery events on their way to the webhook: each row is one event's
//! JSON, written in the same commit as what it reports (the acceptance,
//! the delivery attempt), so a crash never loses an event nor reports what
//! did not happen. Keys are unix micros ‖ source ‖ sequence: a scan from
//! the start reads them oldest first, and a message's events in the order
//! they happened. The webhook poster deletes rows once they are posted.
//!
//! Each endpoint has its own copy of the events it takes, so one endpoint
//! that is down holds back no other: its rows start with its [`prefix`]
//! (nothing for the unnamed `webhook.url`, whose keys start with the time's
//! first byte, 0 until the year 4253; `name ‖ 0` for a named one).

use crate::{Family, Store, StoreError, WriteBatch};

/// Length of a key.
pub const KEY_LEN: usize = 18;

/// The key of an event at `unix_micros` from `source` (a shard, or the
/// injection API), the `seq`th of that source.
pub fn key(unix_micros: u64, source: u16, seq: u64) -> [u8; KEY_LEN] {
    let mut key = [0u8; KEY_LEN];
    key[..8].copy_from_slice(&unix_micros.to_be_bytes());
    key[8..10].copy_from_slice(&source.to_be_bytes());
    key[10..].copy_from_slice(&seq.to_be_bytes());
    key
}

/// The time part of a key, prefix or not, unix micros (0 for a malformed
/// key).
pub fn key_micros(key: &[u8]) -> u64 {
    key.len()
        .checked_sub(KEY_LEN)
        .and_then(|start| key.get(start..start + 8))
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_be_bytes)
}

/// The prefix of an endpoint's rows: none for the unnamed one.
pub fn prefix(name: Option<&str>) -> Vec<u8> {
    match name {
        None => Vec::new(),
        Some(name) => [name.as_bytes(), &[0]].concat(),
    }
}

/// Add an event for the endpoint whose rows start with `prefix`.
pub fn put(batch: &mut WriteBatch, prefix: &[u8], key: [u8; KEY_LEN], json: Vec<u8>) {
    batch.put(Family::Events, [prefix, &key].concat(), json);
}

/// Remove a posted event.
pub fn delete(batch: &mut WriteBatch, key: &[u8]) {
    batch.delete(Family::Events, key.to_vec());
}

/// Delete the rows of endpoints not in `prefixes` (endpoints removed from
/// the configuration), at most `limit` of them: the deletes, to commit.
pub fn forget_others(
    store: &dyn Store,
    prefixes: &[Vec<u8>],
    limit: usize,
) -> Result<WriteBatch, StoreError> {
    let mut batch = WriteBatch::new();
    let mut n = 0;
    store.scan(Family::Events, &[], None, &mut |key, _| {
        // A key is its endpoint's prefix and an event key of KEY_LEN bytes.
        let prefix = &key[..key.len().saturating_sub(KEY_LEN)];
        if !prefixes.iter().any(|p| p == prefix) {
            batch.delete(Family::Events, key.to_vec());
            n += 1;
        }
        n < limit
    })?;
    Ok(batch)
}

/// An event as stored: its key and its JSON.
pub type StoredEvent = (Vec<u8>, Vec<u8>);

/// Up to `limit` events of the endpoint whose rows start with `prefix`,
/// oldest first.
pub fn oldest(
    store: &dyn Store,
    prefix: &[u8],
    limit: usize,
) -> Result<Vec<StoredEvent>, StoreError> {
    // Every event key starts with 0 (the time's first byte), after the
    // prefix: the endpoint's rows end where that byte would be 1.
    let end = [prefix, &[1]].concat();
    let mut found = Vec::with_capacity(limit.min(1024));
    store.scan(Family::Events, prefix, Some(&end), &mut |key, value| {
        found.push((key.to_vec(), value.to_vec()));
        found.len() < limit
    })?;
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryStore;

    #[test]
    fn oldest_first_and_deleted_once_posted() {
        let store = MemoryStore::new();
        let mut batch = WriteBatch::new();
        put(&mut batch, &[], key(20, 1, 1), b"{\"n\":2}".to_vec());
        put(&mut batch, &[], key(10, 2, 9), b"{\"n\":1}".to_vec());
        put(&mut batch, &[], key(20, 1, 2), b"{\"n\":3}".to_vec());
        store.write(&[batch], true).unwrap();
        let events = oldest(&store, &[], 2).unwrap();
        let values: Vec<&[u8]> = events.iter().map(|(_, v)| v.as_slice()).collect();
        assert_eq!(values, [b"{\"n\":1}".as_slice(), b"{\"n\":2}"]);
        assert_eq!(key_micros(&events[0].0), 10);
        let mut batch = WriteBatch::new();
        for (key, _) in &events {
            delete(&mut batch, key);
        }
        store.write(&[batch], true).unwrap();
        assert_eq!(oldest(&store, &[], 10).unwrap().len(), 1);
    }

    #[test]
    fn rows_of_removed_endpoints_are_found() {
        let store = MemoryStore::new();
        let mut batch = WriteBatch::new();
        put(&mut batch, &[], key(1, 1, 1), b"x".to_vec());
        put(
            &mut batch,
            &prefix(Some("old")),
            key(2, 1, 1),
            b"x".to_vec(),
        );
        put(
            &mut batch,
            &prefix(Some("kept")),
            key(3, 1, 1),
            b"x".to_vec(),
        );
        store.write(&[batch], true).unwrap();
        let gone = forget_others(&store, &[prefix(Some("kept"))], 100).unwrap();
        store.write(&[gone], true).unwrap();
        assert!(oldest(&store, &[], 10).unwrap().is_empty());
        assert!(oldest(&store, &prefix(Some("old")), 10).unwrap().is_empty());
        assert_eq!(oldest(&store, &prefix(Some("kept")), 10).unwrap().len(), 1);
    }

    #[test]
    fn each_endpoint_reads_only_its_own_rows() {
        let store = MemoryStore::new();
        let mut batch = WriteBatch::new();
        let (a, ab) = (prefix(Some("a")), prefix(Some("ab")));
        put(&mut batch, &[], key(30, 1, 1), b"plain".to_vec());
        put(&mut batch, &a, key(20, 1, 1), b"a1".to_vec());
        put(&mut batch, &a, key(10, 1, 2), b"a0".to_vec());
        put(&mut batch, &ab, key(5, 1, 1), b"ab".to_vec());
        store.write(&[batch], true).unwrap();
        let values = |prefix: &[u8]| -> Vec<Vec<u8>> {
            oldest(&store, prefix, 10)
                .unwrap()
                .into_iter()
                .map(|(_, v)| v)
                .collect()
        };
        assert_eq!(values(&[]), [b"plain".to_vec()]);
        assert_eq!(values(&a), [b"a0".to_vec(), b"a1".to_vec()]);
        assert_eq!(values(&ab), [b"ab".to_vec()]);
        let first = &oldest(&store, &a, 1).unwrap()[0].0;
        assert_eq!(key_micros(first), 10);
    }
}
