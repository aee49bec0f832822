//! Users' Sieve scripts in [`Family::State`]: each stored under its name
//! (ManageSieve's model, RFC 5804), at most one of them active, the one
//! delivery runs. Vacation replies are remembered beside them, so that a
//! deleted account leaves nothing behind.
//!
//! Keys: `sieve\0USER\0script\0NAME` (the text), `sieve\0USER\0active`
//! (the active script's name), `sieve\0USER\0memory\0KEY` (until when
//! something done is remembered: a vacation reply to a sender, a message
//! redirected to an address). NUL cannot occur in an account name or a
//! script name, so one user's keys never run into another's.

use crate::{state, Store, StoreError, WriteBatch};

fn user_prefix(user: &str) -> String {
    format!("sieve\0{}\0", user.to_lowercase())
}

fn script_key(user: &str, name: &str) -> String {
    format!("{}script\0{name}", user_prefix(user))
}

fn active_key(user: &str) -> String {
    format!("{}active", user_prefix(user))
}

fn memory_prefix(user: &str) -> String {
    format!("{}memory\0", user_prefix(user))
}

/// Whether `user` remembers `key` at `now` (Unix seconds).
pub fn remembers(store: &dyn Store, user: &str, key: &str, now: u64) -> Result<bool, StoreError> {
    let until = state::get(store, &format!("{}{key}", memory_prefix(user)))?;
    Ok(until.is_some_and(|until| now < decode_until(&until)))
}

/// Remember `key` for `user` until `until` (Unix seconds), with `batch`.
pub fn remember(batch: &mut WriteBatch, user: &str, key: &str, until: u64) {
    state::put(
        batch,
        &format!("{}{key}", memory_prefix(user)),
        until.to_be_bytes().to_vec(),
    );
}

/// Forget, with `batch`, what `user` remembered until before `now`: at
/// most `limit` keys are looked at.
pub fn forget_expired(
    store: &dyn Store,
    batch: &mut WriteBatch,
    user: &str,
    now: u64,
    limit: usize,
) -> Result<usize, StoreError> {
    let mut expired = Vec::new();
    let mut seen = 0;
    state::scan_prefix(store, &memory_prefix(user), &mut |key, until| {
        seen += 1;
        if decode_until(until) <= now {
            expired.push(key.to_owned());
        }
        seen < limit
    })?;
    for key in &expired {
        state::delete(batch, key);
    }
    Ok(expired.len())
}

fn decode_until(value: &[u8]) -> u64 {
    value.try_into().map_or(0, u64::from_be_bytes)
}

/// The text of `user`'s script `name`.
pub fn script(store: &dyn Store, user: &str, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
    state::get(store, &script_key(user, name))
}

/// Store `text` as `user`'s script `name` (replacing one of that name).
pub fn put_script(batch: &mut WriteBatch, user: &str, name: &str, text: Vec<u8>) {
    state::put(batch, &script_key(user, name), text);
}

/// Remove `user`'s script `name`.
pub fn delete_script(batch: &mut WriteBatch, user: &str, name: &str) {
    state::delete(batch, &script_key(user, name));
}

/// Make `name` the active script, or none.
pub fn set_active(batch: &mut WriteBatch, user: &str, name: Option<&str>) {
    match name {
        Some(name) => state::put(batch, &active_key(user), name.as_bytes().to_vec()),
        None => state::delete(batch, &active_key(user)),
    }
}

/// The name of `user`'s active script.
pub fn active_name(store: &dyn Store, user: &str) -> Result<Option<String>, StoreError> {
    Ok(state::get(store, &active_key(user))?.map(|n| String::from_utf8_lossy(&n).into_owned()))
}

/// The active script's text, if `user` has one: what delivery runs.
pub fn active(store: &dyn Store, user: &str) -> Result<Option<Vec<u8>>, StoreError> {
    match active_name(store, user)? {
        Some(name) => script(store, user, &name),
        None => Ok(None),
    }
}

/// `user`'s scripts: name and size, in name order.
pub fn list(store: &dyn Store, user: &str) -> Result<Vec<(String, usize)>, StoreError> {
    let prefix = format!("{}script\0", user_prefix(user));
    let mut out = Vec::new();
    state::scan_prefix(store, &prefix, &mut |key, value| {
        out.push((key[prefix.len()..].to_owned(), value.len()));
        true
    })?;
    Ok(out)
}

/// Remove everything of `user`'s kept here (their account is going).
pub fn delete_all(store: &dyn Store, batch: &mut WriteBatch, user: &str) -> Result<(), StoreError> {
    let mut keys = Vec::new();
    state::scan_prefix(store, &user_prefix(user), &mut |key, _| {
        keys.push(key.to_owned());
        true
    })?;
    for key in keys {
        state::delete(batch, &key);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryStore;

    #[test]
    fn scripts_one_active_and_nothing_left_after_delete_all() {
        let store = MemoryStore::new();
        let mut batch = WriteBatch::new();
        put_script(&mut batch, "Alice@example.com", "main", b"keep;".to_vec());
        put_script(
            &mut batch,
            "alice@example.com",
            "away",
            b"discard;".to_vec(),
        );
        put_script(&mut batch, "alice@example.comx", "other", b"stop;".to_vec());
        set_active(&mut batch, "alice@example.com", Some("away"));
        remember(&mut batch, "alice@example.com", "k", 100);
        store.write(&[batch], false).unwrap();
        let user = "alice@example.com";
        assert_eq!(
            list(&store, user).unwrap(),
            [("away".to_owned(), 8), ("main".to_owned(), 5)]
        );
        assert_eq!(active(&store, user).unwrap().unwrap(), b"discard;");
        assert!(remembers(&store, user, "k", 99).unwrap());
        assert!(!remembers(&store, user, "k", 100).unwrap());
        assert!(!remembers(&store, user, "other", 1).unwrap());
        let mut batch = WriteBatch::new();
        remember(&mut batch, user, "old", 50);
        store.write(&[batch], false).unwrap();
        let mut batch = WriteBatch::new();
        assert_eq!(
            forget_expired(&store, &mut batch, user, 60, 100).unwrap(),
            1
        );
        store.write(&[batch], false).unwrap();
        assert!(remembers(&store, user, "k", 60).unwrap());
        let mut batch = WriteBatch::new();
        set_active(&mut batch, user, None);
        store.write(&[batch], false).unwrap();
        assert_eq!(active(&store, user).unwrap(), None);

        let mut batch = WriteBatch::new();
        delete_all(&store, &mut batch, user).unwrap();
        store.write(&[batch], false).unwrap();
        assert!(list(&store, user).unwrap().is_empty());
        assert!(state::get(&store, &format!("{}k", memory_prefix(user)))
            .unwrap()
            .is_none());
        assert_eq!(list(&store, "alice@example.comx").unwrap().len(), 1);
    }
}
