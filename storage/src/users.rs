//! Accounts: the `users` family.
//!
//! This module is the only place that knows how an account is laid out in
//! the store. It does no hashing and no validation: the engine hashes
//! passwords (argon2) and checks names against the local domains before it
//! writes a [`User`] here.
//!
//! # Keys
//! The account name: the full address, lowercased (`alice@example.test`),
//! as UTF-8 bytes. Every function here lowercases the name it is given
//! ([`user_key`]), so `Alice@Example.TEST` finds the same account. An
//! SMTP recipient check is therefore one point read ([`user_exists`]).
//!
//! # Value
//! Written with the store's value codec (version byte, LEB128 varints,
//! length-prefixed strings; decoding never panics):
//!
//! version (1) ‖ kind (0 = account) ‖ password hash (PHC string) ‖
//! created (unix seconds) ‖ setting count ‖ (tag ‖ length-prefixed bytes)*
//!
//! Settings are tagged and opaque to this module; [`crate::quota`]
//! defines the first (the account's quota limits). Tags are stored in ascending order, and a record with a tag this version
//! does not know keeps it as it is, so rewriting an account with an older
//! binary (a password change) never drops a setting a newer one added. A new
//! per-account setting (a quota, a forwarding address) is a new tag, with no
//! format change.
//!
//! # Aliases and catch-all (later)
//! Aliases are not settings of their target: RCPT has the alias address in
//! hand, so an alias is its own row in this family, keyed by the alias
//! address, with another `kind` byte (1 = alias) and the target account as
//! value. A catch-all for a domain is the same kind of row keyed by
//! `@domain`, which can never be an account name (an account's local part is
//! never empty). A recipient check then stays at most two point reads: the
//! address, then `@domain`. Until aliases exist, a row of another kind reads
//! as [`StoreError::Corrupt`].

use crate::codec::{put_bytes, put_str, put_varint, Reader, FORMAT_V1};
use crate::{Family, Store, StoreError, WriteBatch};
use std::collections::BTreeMap;

/// The `kind` byte of an account row (aliases will get their own kind).
const KIND_ACCOUNT: u8 = 0;

/// One account.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct User {
    /// The account name: the full address (`local@domain`); stored lowercased.
    pub name: String,
    /// The password hash as a PHC string (`$argon2id$v=19$...`).
    pub password_hash: String,
    /// When the account was created, unix seconds.
    pub created: u64,
    /// Tagged settings, tag → bytes; opaque here and kept across rewrites
    /// (see the module docs; [`crate::quota`] has the tags in use).
    pub settings: BTreeMap<u32, Vec<u8>>,
}

impl User {
    /// The stored value (see the module docs for the layout).
    pub fn encode_value(&self) -> Vec<u8> {
        let settings: usize = self.settings.values().map(|v| v.len() + 8).sum();
        let mut out = Vec::with_capacity(16 + self.password_hash.len() + settings);
        out.push(FORMAT_V1);
        out.push(KIND_ACCOUNT);
        put_str(&mut out, &self.password_hash);
        put_varint(&mut out, self.created);
        put_varint(&mut out, self.settings.len() as u64);
        for (tag, value) in &self.settings {
            put_varint(&mut out, u64::from(*tag));
            put_bytes(&mut out, value);
        }
        out
    }

    /// Rebuild an account from its key and value.
    pub fn decode(key: &[u8], value: &[u8]) -> Result<User, StoreError> {
        let mut r = Reader::new(Family::Users, value);
        let name = std::str::from_utf8(key)
            .map_err(|_| r.corrupt("account name is not UTF-8"))?
            .to_owned();
        r.version()?;
        match r.byte()? {
            KIND_ACCOUNT => {}
            other => return Err(r.corrupt(format!("record kind {other} is not an account"))),
        }
        let password_hash = r.string()?;
        let created = r.varint()?;
        // Every setting takes at least two bytes (tag, length), so the count
        // is bounded by what is left, like any other length.
        let count = r.len()?;
        let mut settings = BTreeMap::new();
        let mut last = None;
        for _ in 0..count {
            let tag =
                u32::try_from(r.varint()?).map_err(|_| r.corrupt("setting tag exceeds u32"))?;
            if last.is_some_and(|last| tag <= last) {
                return Err(r.corrupt("setting tags out of order"));
            }
            last = Some(tag);
            settings.insert(tag, r.bytes()?.to_vec());
        }
        r.finish()?;
        Ok(User {
            name,
            password_hash,
            created,
            settings,
        })
    }
}

/// The `users` key of an account name: the name lowercased, as UTF-8.
pub fn user_key(name: &str) -> Vec<u8> {
    name.to_lowercase().into_bytes()
}

/// Store (or replace) `user` in `batch`, under its lowercased name.
pub fn put_user(batch: &mut WriteBatch, user: &User) {
    batch.put(Family::Users, user_key(&user.name), user.encode_value());
}

/// Remove the account `name` in `batch`, and with it every mailbox it has
/// (no error when there is none). The batch then carries a mailbox change:
/// commit it through the [`CommitPipeline`](crate::CommitPipeline).
pub fn delete_user(batch: &mut WriteBatch, name: &str) {
    batch.delete(Family::Users, user_key(name));
    batch.change(crate::mailbox::Change::DeleteAccount {
        user: name.to_lowercase(),
    });
}

/// The account `name` (any case), if there is one.
pub fn get_user(store: &dyn Store, name: &str) -> Result<Option<User>, StoreError> {
    let key = user_key(name);
    store
        .get(Family::Users, &key)?
        .map(|value| User::decode(&key, &value))
        .transpose()
}

/// Whether the account `name` (any case) exists: one point read, no decoding
/// (the SMTP recipient check).
pub fn user_exists(store: &dyn Store, name: &str) -> Result<bool, StoreError> {
    Ok(store.get(Family::Users, &user_key(name))?.is_some())
}

/// Every account, in name order.
pub fn list_users(store: &dyn Store) -> Result<Vec<User>, StoreError> {
    let mut out = Vec::new();
    let mut failure = None;
    store.scan(Family::Users, &[], None, &mut |key, value| {
        match User::decode(key, value) {
            Ok(user) => out.push(user),
            Err(error) => failure = Some(error),
        }
        failure.is_none()
    })?;
    failure.map_or(Ok(out), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> User {
        User {
            name: "alice@example.test".into(),
            password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo".into(),
            created: 1_700_000_000,
            settings: BTreeMap::from([(1, b"one".to_vec()), (300, Vec::new())]),
        }
    }

    fn round_trip(user: &User) -> User {
        User::decode(&user_key(&user.name), &user.encode_value()).unwrap()
    }

    #[test]
    fn account_round_trip() {
        let u = user();
        assert_eq!(round_trip(&u), u);
        let bare = User {
            settings: BTreeMap::new(),
            created: 0,
            ..user()
        };
        assert_eq!(round_trip(&bare), bare);
        let max = User {
            created: u64::MAX,
            settings: BTreeMap::from([(u32::MAX, vec![0xff; 300])]),
            ..user()
        };
        assert_eq!(round_trip(&max), max);
    }

    #[test]
    fn value_layout() {
        let u = User {
            name: "a@b".into(),
            password_hash: "h".into(),
            created: 300,
            settings: BTreeMap::from([(2, b"xy".to_vec())]),
        };
        assert_eq!(
            u.encode_value(),
            [
                FORMAT_V1,
                KIND_ACCOUNT,
                1,
                b'h',
                0xac,
                0x02,
                1,
                2,
                2,
                b'x',
                b'y'
            ]
        );
    }

    #[test]
    fn keys_are_lowercased_names() {
        assert_eq!(user_key("Alice@Example.TEST"), b"alice@example.test");
        assert_eq!(
            user_key("ÉLOÏSE@Bücher.Test"),
            "éloïse@bücher.test".as_bytes()
        );
        let mut batch = WriteBatch::new();
        put_user(
            &mut batch,
            &User {
                name: "Bob@Example.Test".into(),
                ..user()
            },
        );
        delete_user(&mut batch, "BOB@example.test");
        match batch.ops() {
            [crate::Op::Put { family, key, .. }, crate::Op::Delete { key: deleted, .. }] => {
                assert_eq!(*family, Family::Users);
                assert_eq!(key, b"bob@example.test");
                assert_eq!(deleted, key);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn truncated_and_bad_values_are_corrupt() {
        let u = user();
        let (key, value) = (user_key(&u.name), u.encode_value());
        for len in 0..value.len() {
            let err = User::decode(&key, &value[..len]).unwrap_err();
            assert!(
                matches!(
                    err,
                    StoreError::Corrupt {
                        family: "users",
                        ..
                    }
                ),
                "{len}: {err:?}"
            );
        }
        let mut trailing = value.clone();
        trailing.push(0);
        assert!(User::decode(&key, &trailing).is_err(), "trailing bytes");
        let mut version = value.clone();
        version[0] = 2;
        assert!(User::decode(&key, &version).is_err(), "unknown version");
        let mut alias = value.clone();
        alias[1] = 1;
        let err = User::decode(&key, &alias).unwrap_err().to_string();
        assert!(err.contains("not an account"), "{err}");
        assert!(
            User::decode(&[0xff, b'@'], &value).is_err(),
            "non-UTF-8 key"
        );
        // Tags must ascend, so one tag never appears twice.
        let twice = [FORMAT_V1, KIND_ACCOUNT, 0, 0, 2, 5, 0, 5, 0];
        assert!(User::decode(b"a@b", &twice).is_err());
        let ascending = [FORMAT_V1, KIND_ACCOUNT, 0, 0, 2, 5, 0, 6, 0];
        assert_eq!(User::decode(b"a@b", &ascending).unwrap().settings.len(), 2);
        // A tag past u32.
        let big = [
            FORMAT_V1,
            KIND_ACCOUNT,
            0,
            0,
            1,
            0x80,
            0x80,
            0x80,
            0x80,
            0x10,
            0,
        ];
        assert!(User::decode(b"a@b", &big).is_err());
    }

    #[test]
    fn garbage_never_panics() {
        // The same xorshift as the spool tests: repeatable noise.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let valid = user().encode_value();
        for round in 0..20_000 {
            let bytes: Vec<u8> = if round % 2 == 0 {
                let len = (next() % 64) as usize;
                (0..len).map(|_| next() as u8).collect()
            } else {
                let mut bytes = valid.clone();
                for _ in 0..1 + next() % 3 {
                    let at = (next() as usize) % bytes.len();
                    bytes[at] = next() as u8;
                }
                bytes
            };
            let _ = User::decode(&bytes, &bytes);
            let _ = User::decode(b"alice@example.test", &bytes);
        }
    }
}
