//! What the mail-access sessions (POP3, IMAP, ManageSieve) share across
//! shards: POP3 maildrop locks, locks on an account's Sieve scripts while
//! one changes, IMAP session counts per account, and news of changed
//! mailboxes. (Logins themselves are [`crate::auth`]'s.)
//!
//! A session on any shard may read a mailbox another shard just delivered
//! into, so these live in one [`Access`] behind an `Arc`. Its locks are
//! taken at login, logout and when a commit changed a mailbox, never per
//! message read, so they stay off the SMTP and fetch hot paths.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

/// State shared by every POP3 and IMAP session of the server.
#[derive(Default)]
pub struct Access {
    /// Accounts whose maildrop a POP3 session holds (RFC 1939 §8).
    pop3_locks: Mutex<HashSet<String>>,
    /// Accounts whose Sieve scripts a ManageSieve session is changing.
    script_locks: Mutex<HashSet<String>>,
    /// IMAP sessions open per account.
    sessions: Mutex<HashMap<String, usize>>,
    /// Most IMAP sessions per account; 0: no limit.
    max_sessions: usize,
    /// Per account, the sessions that want to hear of changes.
    watchers: Mutex<HashMap<String, Vec<flume::Sender<()>>>>,
}

/// Held while a POP3 session has the maildrop, or while a change to an
/// account's Sieve scripts is read, checked and committed (so two
/// sessions cannot both pass a check the other's commit breaks);
/// dropping it releases it.
pub struct MaildropLock {
    access: Arc<Access>,
    user: String,
    scripts: bool,
}

impl Drop for MaildropLock {
    fn drop(&mut self) {
        let set = match self.scripts {
            true => &self.access.script_locks,
            false => &self.access.pop3_locks,
        };
        lock(set).remove(&self.user);
    }
}

/// A poisoned lock only means a panic elsewhere while it was held; the
/// sets and maps inside are still whole.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Held while an IMAP session is logged in; dropping it gives the
/// account's slot back.
pub struct AccountSession {
    access: Arc<Access>,
    user: String,
}

impl Drop for AccountSession {
    fn drop(&mut self) {
        let mut sessions = lock(&self.access.sessions);
        if let Some(count) = sessions.get_mut(&self.user) {
            *count -= 1;
            if *count == 0 {
                sessions.remove(&self.user);
            }
        }
    }
}

impl Access {
    /// Shared state allowing `max_sessions` IMAP sessions per account.
    pub fn new(max_sessions: usize) -> Access {
        Access {
            max_sessions,
            ..Access::default()
        }
    }

    /// Count one more IMAP session of `user`, unless it has the most
    /// allowed: each selected mailbox costs memory, and a stolen password
    /// should not pin gigabytes.
    pub fn open_session(self: &Arc<Self>, user: &str) -> Option<AccountSession> {
        let user = user.to_lowercase();
        let mut sessions = lock(&self.sessions);
        let count = sessions.entry(user.clone()).or_insert(0);
        if self.max_sessions > 0 && *count >= self.max_sessions {
            return None;
        }
        *count += 1;
        Some(AccountSession {
            access: self.clone(),
            user,
        })
    }

    /// Take `user`'s maildrop for a POP3 session, unless another holds it.
    pub fn lock_maildrop(self: &Arc<Self>, user: &str) -> Option<MaildropLock> {
        self.take(user, false)
    }

    /// Take `user`'s Sieve scripts for one change, unless another
    /// session is changing them.
    pub fn lock_scripts(self: &Arc<Self>, user: &str) -> Option<MaildropLock> {
        self.take(user, true)
    }

    fn take(self: &Arc<Self>, user: &str, scripts: bool) -> Option<MaildropLock> {
        let user = user.to_lowercase();
        let set = match scripts {
            true => &self.script_locks,
            false => &self.pop3_locks,
        };
        if !lock(set).insert(user.clone()) {
            return None;
        }
        Some(MaildropLock {
            access: self.clone(),
            user,
            scripts,
        })
    }

    /// Hear of every later change to `user`'s mailboxes. Notifications
    /// coalesce: one waiting is as good as many, so a slow session never
    /// makes them pile up.
    pub fn watch(&self, user: &str) -> flume::Receiver<()> {
        let (sender, receiver) = flume::bounded(1);
        let mut watchers = lock(&self.watchers);
        let list = watchers.entry(user.to_lowercase()).or_default();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imap_sessions_per_account_are_capped() {
        let access = Arc::new(Access::new(2));
        let a = access.open_session("ann@x.test").unwrap();
        let _b = access.open_session("ANN@x.test").unwrap();
        assert!(access.open_session("ann@x.test").is_none());
        assert!(access.open_session("bob@x.test").is_some());
        drop(a);
        assert!(access.open_session("ann@x.test").is_some());
    }

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
