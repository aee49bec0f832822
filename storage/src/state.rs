//! Small named values the server keeps across restarts, one key each in
//! [`Family::State`]: what a restart must not forget but that belongs to
//! no message or account (each egress source's count for the day, so its
//! daily limit holds across a restart).

use crate::{Family, Store, StoreError, WriteBatch};

/// The value stored under `name`, if any.
pub fn get(store: &dyn Store, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
    store.get(Family::State, name.as_bytes())
}

/// The values stored under every name that starts with `prefix`.
pub fn with_prefix(store: &dyn Store, prefix: &str) -> Result<Vec<Vec<u8>>, StoreError> {
    let end = crate::mailbox::prefix_end(prefix.as_bytes());
    let mut values = Vec::new();
    store.scan(
        Family::State,
        prefix.as_bytes(),
        end.as_deref(),
        &mut |_, value| {
            values.push(value.to_vec());
            true
        },
    )?;
    Ok(values)
}

/// Each name that starts with `prefix` and its value, in name order,
/// until `each` returns false.
pub fn scan_prefix(
    store: &dyn Store,
    prefix: &str,
    each: &mut dyn FnMut(&str, &[u8]) -> bool,
) -> Result<(), StoreError> {
    let end = crate::mailbox::prefix_end(prefix.as_bytes());
    store.scan(
        Family::State,
        prefix.as_bytes(),
        end.as_deref(),
        &mut |key, value| each(&String::from_utf8_lossy(key), value),
    )
}

/// Remove `name` with `batch`.
pub fn delete(batch: &mut WriteBatch, name: &str) {
    batch.delete(Family::State, name.as_bytes().to_vec());
}

/// Store `value` under `name` with `batch`.
pub fn put(batch: &mut WriteBatch, name: &str, value: Vec<u8>) {
    batch.put(Family::State, name.as_bytes().to_vec(), value);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryStore;

    #[test]
    fn a_value_reads_back() {
        let store = MemoryStore::new();
        assert_eq!(get(&store, "egress/192.0.2.1").unwrap(), None);
        let mut batch = WriteBatch::new();
        put(&mut batch, "egress/192.0.2.1", vec![1, 2, 3]);
        store.write(&[batch], false).unwrap();
        assert_eq!(
            get(&store, "egress/192.0.2.1").unwrap(),
            Some(vec![1, 2, 3])
        );
        let mut batch = WriteBatch::new();
        put(&mut batch, "egress/192.0.2.10", vec![4]);
        put(&mut batch, "egress/192.0.3.1", vec![5]);
        store.write(&[batch], false).unwrap();
        assert_eq!(
            with_prefix(&store, "egress/192.0.2.1").unwrap(),
            vec![vec![1, 2, 3], vec![4]]
        );
        // Names and values in order, as far as the caller reads; removed
        // names are gone.
        let mut seen = Vec::new();
        scan_prefix(&store, "egress/", &mut |name, value| {
            seen.push((name.to_owned(), value.to_vec()));
            seen.len() < 2
        })
        .unwrap();
        assert_eq!(
            seen,
            [
                ("egress/192.0.2.1".to_owned(), vec![1, 2, 3]),
                ("egress/192.0.2.10".to_owned(), vec![4])
            ]
        );
        let mut batch = WriteBatch::new();
        delete(&mut batch, "egress/192.0.2.1");
        store.write(&[batch], false).unwrap();
        assert_eq!(get(&store, "egress/192.0.2.1").unwrap(), None);
    }
}
