//! Account administration: add, change a password, set a quota, delete,
//! list. One implementation for both ways in: `ringpost user ...` on a
//! stopped server's store, and the admin API of a running one.
//!
//! Each operation reads through a [`Store`] and writes through a commit
//! function: on a running server that is its commit writer, so a new
//! account can log in as soon as the call returns, a changed password is
//! the only one that works from then on (the verified-password cache keys
//! on the stored hash), and a deleted account's mailboxes go in the same
//! commit as the account. The rules for names and passwords are
//! [`crate::users`]'.

use crate::users::{self as rules, UserError};
use ringpost_storage::quota::{self, Quota};
use ringpost_storage::users::{self, User};
use ringpost_storage::{mailbox, Store, StoreError, WriteBatch};
use serde::Serialize;

/// Why an account operation did nothing; phrased for the operator.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// The name or password broke a rule.
    #[error(transparent)]
    Invalid(#[from] UserError),
    /// `add` of a name that has an account.
    #[error("{0} already exists")]
    Exists(String),
    /// No account has this name.
    #[error("no account {0}")]
    NotFound(String),
    /// Reading or writing the store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

/// What `list` tells of one account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccountInfo {
    /// The account name (a full address, lowercased).
    pub name: String,
    /// When it was created, Unix seconds.
    pub created: u64,
    /// Messages in all its mailboxes.
    pub messages: u64,
    /// Their size, bytes.
    pub bytes: u64,
    /// Its storage limit in bytes; `None`: no limit.
    pub quota_bytes: Option<u64>,
    /// Its message limit; `None`: no limit.
    pub quota_messages: Option<u64>,
}

/// Commits a batch durably (the server's commit writer, or one of the
/// tool's own over a stopped store).
pub type Commit<'a> = &'a dyn Fn(WriteBatch) -> Result<(), StoreError>;

/// Create `name` with `password`, with INBOX and the special-use mailboxes
/// (all in one commit). `local_domains`: the names allowed, `None` to skip
/// that check. `now`: Unix seconds.
pub fn add(
    store: &dyn Store,
    commit: Commit<'_>,
    name: &str,
    password: &str,
    local_domains: Option<&[String]>,
    now: u64,
) -> Result<User, AccountError> {
    let key = rules::validate_name(name, local_domains)?;
    if users::user_exists(store, &key)? {
        return Err(AccountError::Exists(key));
    }
    let user = rules::new_account(&key, password, local_domains, now)?;
    let mut batch = WriteBatch::new();
    users::put_user(&mut batch, &user);
    rules::default_mailboxes(&mut batch, &user.name);
    commit(batch)?;
    Ok(user)
}

/// The account `name`, which must exist.
pub fn existing(store: &dyn Store, name: &str) -> Result<User, AccountError> {
    let key = name.to_lowercase();
    users::get_user(store, &key)?.ok_or(AccountError::NotFound(key))
}

/// Give `name` a new password.
pub fn set_password(
    store: &dyn Store,
    commit: Commit<'_>,
    name: &str,
    password: &str,
) -> Result<User, AccountError> {
    let mut user = existing(store, name)?;
    rules::set_password(&mut user, password)?;
    let mut batch = WriteBatch::new();
    users::put_user(&mut batch, &user);
    commit(batch)?;
    Ok(user)
}

/// One limit of an account's quota, as an operator sets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// This many (bytes, or messages).
    At(u64),
    /// No limit for this account.
    Unlimited,
    /// The server's default (`[quota]`).
    Default,
}

/// Give `name` its own limits; a limit not given (`None`) stays as it is.
pub fn set_quota(
    store: &dyn Store,
    commit: Commit<'_>,
    name: &str,
    storage_bytes: Option<Limit>,
    messages: Option<Limit>,
) -> Result<User, AccountError> {
    let mut user = existing(store, name)?;
    // The account's own limits as they are: `None` where it has none.
    let own = quota::of(&user, Quota::default())?;
    let keep = |tag, was: Option<u64>| user.settings.contains_key(&tag).then_some(was);
    let resolve = |given: Option<Limit>, kept: Option<Option<u64>>| match given {
        None => kept,
        Some(Limit::Default) => None,
        Some(Limit::Unlimited) => Some(None),
        Some(Limit::At(n)) => Some(Some(n)),
    };
    let storage = resolve(storage_bytes, keep(quota::SETTING_STORAGE, own.storage));
    let messages = resolve(messages, keep(quota::SETTING_MESSAGES, own.messages));
    quota::set(&mut user, storage, messages);
    let mut batch = WriteBatch::new();
    users::put_user(&mut batch, &user);
    commit(batch)?;
    Ok(user)
}

/// Delete `name`, its mailboxes and the mail in them (bodies other
/// accounts or the relay still hold stay); returns how many mailboxes went.
pub fn delete(store: &dyn Store, commit: Commit<'_>, name: &str) -> Result<usize, AccountError> {
    let user = existing(store, name)?;
    let mailboxes = mailbox::list(store, &user.name)?.len();
    let mut batch = WriteBatch::new();
    // The commit writer resolves the deletion into rows, references and
    // bodies.
    users::delete_user(&mut batch, &user.name);
    ringpost_storage::sieve::delete_all(store, &mut batch, &user.name)?;
    commit(batch)?;
    Ok(mailboxes)
}

/// Every account with its usage and limits (`default`: the config's).
pub fn list(store: &dyn Store, default: Quota) -> Result<Vec<AccountInfo>, AccountError> {
    users::list_users(store)?
        .into_iter()
        .map(|user| {
            let used = quota::usage(store, &user.name)?;
            let limits = quota::of(&user, default)?;
            Ok(AccountInfo {
                name: user.name,
                created: user.created,
                messages: used.messages,
                bytes: used.bytes,
                quota_bytes: limits.storage,
                quota_messages: limits.messages,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringpost_storage::{CommitPipeline, MemoryStore, PipelineConfig};
    use std::sync::Arc;

    #[test]
    fn add_change_list_and_delete() {
        let store = Arc::new(MemoryStore::new());
        let (pipeline, commits) =
            CommitPipeline::start(store.clone(), PipelineConfig::default(), None);
        let commit = |batch| commits.commit_blocking(batch);
        let locals = vec!["ours.test".to_owned()];
        let user = add(&*store, &commit, "Ann@Ours.test", "pw", Some(&locals), 7).unwrap();
        assert_eq!(user.name, "ann@ours.test");
        assert!(matches!(
            add(&*store, &commit, "ann@ours.test", "pw", Some(&locals), 8),
            Err(AccountError::Exists(_))
        ));
        assert!(matches!(
            add(
                &*store,
                &commit,
                "bob@elsewhere.test",
                "pw",
                Some(&locals),
                8
            ),
            Err(AccountError::Invalid(UserError::NotLocal { .. }))
        ));
        let before = existing(&*store, "ann@ours.test").unwrap().password_hash;
        set_password(&*store, &commit, "ANN@ours.test", "new").unwrap();
        let after = existing(&*store, "ann@ours.test").unwrap().password_hash;
        assert_ne!(before, after);
        assert!(rules::verify_password("new", &after).unwrap());
        let default = Quota {
            storage: Some(5000),
            messages: Some(50),
        };
        set_quota(
            &*store,
            &commit,
            "ann@ours.test",
            Some(Limit::At(1000)),
            None,
        )
        .unwrap();
        let listed = list(&*store, default).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(
            (listed[0].quota_bytes, listed[0].quota_messages),
            (Some(1000), Some(50))
        );
        // A limit not given stays; `Unlimited` and `Default` are kept apart.
        set_quota(
            &*store,
            &commit,
            "ann@ours.test",
            None,
            Some(Limit::Unlimited),
        )
        .unwrap();
        let listed = list(&*store, default).unwrap();
        assert_eq!(
            (listed[0].quota_bytes, listed[0].quota_messages),
            (Some(1000), None)
        );
        set_quota(
            &*store,
            &commit,
            "ann@ours.test",
            Some(Limit::Default),
            None,
        )
        .unwrap();
        let listed = list(&*store, default).unwrap();
        assert_eq!(
            (listed[0].quota_bytes, listed[0].quota_messages),
            (Some(5000), None)
        );
        assert_eq!(listed[0].created, 7);
        assert_eq!(delete(&*store, &commit, "ann@ours.test").unwrap(), 5);
        assert!(matches!(
            delete(&*store, &commit, "ann@ours.test"),
            Err(AccountError::NotFound(_))
        ));
        assert!(list(&*store, Quota::default()).unwrap().is_empty());
        drop(commits);
        pipeline.shutdown();
    }
}
