//! What the mail-access sessions (POP3, IMAP) share across shards: logins,
//! POP3 maildrop locks, and news of changed mailboxes.
//!
//! A session on any shard may read a mailbox another shard just delivered
//! into, so these live in one [`Access`] behind an `Arc`. Its locks are
//! taken at login, logout and when a commit changed a mailbox, never per
//! message read, so they stay off the SMTP and fetch hot paths.

use crate::users::verify_password;
use ringpost_storage::{users, Store, StoreError};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

/// State shared by every POP3 and IMAP session of the server.
#[derive(Default)]
pub struct Access {
    /// Accounts whose maildrop a POP3 session holds (RFC 1939 §8).
    pop3_locks: Mutex<HashSet<String>>,
    /// Per account, the sessions that want to hear of changes.
    watchers: Mutex<HashMap<String, Vec<flume::Sender<()>>>>,
}

/// Held while a POP3 session has the maildrop; dropping it releases it.
pub struct MaildropLock {
    access: Arc<Access>,
    user: String,
}

impl Drop for MaildropLock {
    fn drop(&mut self) {
        lock(&self.access.pop3_locks).remove(&self.user);
    }
}

/// A poisoned lock only means a panic elsewhere while it was held; the
/// sets and maps inside are still whole.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Access {
    /// Take `user`'s maildrop for a POP3 session, unless another holds it.
    pub fn lock_maildrop(self: &Arc<Self>, user: &str) -> Option<MaildropLock> {
        let user = user.to_ascii_lowercase();
        if !lock(&self.pop3_locks).insert(user.clone()) {
            return None;
        }
        Some(MaildropLock {
            access: self.clone(),
            user,
        })
    }

    /// Hear of every later change to `user`'s mailboxes. Notifications
    /// coalesce: one waiting is as good as many, so a slow session never
    /// makes them pile up.
    pub fn watch(&self, user: &str) -> flume::Receiver<()> {
        let (sender, receiver) = flume::bounded(1);
        let mut watchers = lock(&self.watchers);
        let list = watchers.entry(user.to_ascii_lowercase()).or_default();
        // Sessions that ended are dropped here as well as on notification,
        // so an account that gets no mail cannot collect them.
        list.retain(|s| !s.is_disconnected());
        list.push(sender);
        receiver
    }

    /// A commit changed `user`'s mailboxes (called on the commit writer
    /// thread for every account a write touched).
    pub fn mailbox_changed(&self, user: &str) {
        let mut watchers = lock(&self.watchers);
        if let Some(list) = watchers.get_mut(user) {
            list.retain(|s| !matches!(s.try_send(()), Err(flume::TrySendError::Disconnected(_))));
            if list.is_empty() {
                watchers.remove(user);
            }
        }
    }
}

/// Why a login did not succeed.
#[derive(Debug, PartialEq, Eq)]
pub enum LoginError {
    /// No such account, or the wrong password: the client is told no more.
    Rejected,
    /// The store could not be read: try again later.
    Unavailable(StoreError),
}

/// Check `name` and `password` against the store; the account name
/// (lowercased) on success. The Argon2 check takes tens of milliseconds of
/// CPU, so it runs on the shard's blocking pool, never on the executor. An
/// unknown name costs the same check against a dummy hash, so timing does
/// not tell which accounts exist.
pub async fn login(
    store: Arc<dyn Store>,
    name: &str,
    password: &str,
) -> Result<String, LoginError> {
    let (name, password) = (name.to_ascii_lowercase(), password.to_owned());
    glommio::executor()
        .spawn_blocking(move || {
            let account = users::get_user(&*store, &name).map_err(LoginError::Unavailable)?;
            let hash = match &account {
                Some(user) => user.password_hash.as_str(),
                None => dummy_hash(),
            };
            match (account.is_some(), verify_password(&password, hash)) {
                (true, Ok(true)) => Ok(name),
                _ => Err(LoginError::Rejected),
            }
        })
        .await
}

/// An Argon2id hash of a random password, made once.
fn dummy_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| {
        let random = format!(
            "{:x}",
            crate::intake::unix_micros().wrapping_mul(0x9e37_79b9_7f4a_7c15)
        );
        crate::users::hash_password(&random).unwrap_or_default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_pop3_session_per_maildrop() {
        let access = Arc::new(Access::default());
        let first = access.lock_maildrop("Ann@x.test").expect("free");
        assert!(access.lock_maildrop("ann@X.TEST").is_none());
        assert!(access.lock_maildrop("bob@x.test").is_some());
        drop(first);
        assert!(access.lock_maildrop("ann@x.test").is_some());
    }

    #[test]
    fn notifications_coalesce_and_forget_ended_sessions() {
        let access = Access::default();
        let a = access.watch("Ann@x.test");
        let b = access.watch("ann@x.test");
        for _ in 0..5 {
            access.mailbox_changed("ann@x.test");
        }
        assert_eq!(a.drain().count(), 1);
        assert_eq!(b.drain().count(), 1);
        access.mailbox_changed("bob@x.test");
        assert!(a.is_empty());
        drop(a);
        drop(b);
        access.mailbox_changed("ann@x.test");
        assert!(lock(&access.watchers).is_empty());
        // Watching prunes too.
        drop(access.watch("c@x.test"));
        let _c = access.watch("c@x.test");
        assert_eq!(lock(&access.watchers)["c@x.test"].len(), 1);
    }
}
