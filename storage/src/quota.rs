//! Quotas: how much an account may keep in its mailboxes, and how much it
//! keeps now.
//!
//! A quota has two resources, as IMAP QUOTA (RFC 9208) names them: STORAGE
//! (the sum of message sizes) and MESSAGE (how many). The limits live in the
//! account row as settings ([`SETTING_STORAGE`], [`SETTING_MESSAGES`]); an
//! account without them has the server's default. Usage is the sum of the
//! counts every mailbox keeps in its meta value (see
//! [`crate::mailbox::MailboxMeta`]), so reading it is one short scan of the
//! account's `mailbox_meta` keys, never of its messages.
//!
//! The check is made before new mail is taken (SMTP RCPT, IMAP APPEND and
//! COPY), not inside the commit writer: mail for an account just under its
//! quota is taken, and the next is refused. That is how Postfix and Dovecot
//! behave (quota-status at RCPT), and it keeps the writer's path short.

use crate::codec::{put_varint, Reader};
use crate::users::User;
use crate::{mailbox, Family, Store, StoreError};

/// Account setting tag: the STORAGE limit in bytes (varint; 0 = none).
pub const SETTING_STORAGE: u32 = 1;
/// Account setting tag: the MESSAGE limit (varint; 0 = none).
pub const SETTING_MESSAGES: u32 = 2;

/// Limits; `None` is no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Quota {
    /// Most bytes of messages.
    pub storage: Option<u64>,
    /// Most messages.
    pub messages: Option<u64>,
}

impl Quota {
    /// No limit at all.
    pub fn is_unlimited(&self) -> bool {
        self.storage.is_none() && self.messages.is_none()
    }

    /// Whether an account using `usage` may take `messages` more messages
    /// of `bytes` in all.
    pub fn admits(&self, usage: Usage, messages: u64, bytes: u64) -> bool {
        let within = |limit: Option<u64>, used: u64, more: u64| {
            limit.is_none_or(|limit| used.saturating_add(more) <= limit)
        };
        within(self.storage, usage.bytes, bytes) && within(self.messages, usage.messages, messages)
    }
}

/// What an account's mailboxes hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Messages in all its mailboxes.
    pub messages: u64,
    /// The sum of their sizes.
    pub bytes: u64,
}

/// What `user`'s mailboxes hold now.
pub fn usage(store: &dyn Store, user: &str) -> Result<Usage, StoreError> {
    Ok(mailbox::list(store, user)?
        .iter()
        .fold(Usage::default(), |sum, m| Usage {
            messages: sum.messages + u64::from(m.meta.messages),
            bytes: sum.bytes + m.meta.bytes,
        }))
}

/// The account's quota: its own limits where it has them, else `default`.
pub fn of(user: &User, default: Quota) -> Result<Quota, StoreError> {
    Ok(Quota {
        storage: setting(user, SETTING_STORAGE)?.map_or(default.storage, nonzero),
        messages: setting(user, SETTING_MESSAGES)?.map_or(default.messages, nonzero),
    })
}

/// Give the account its own limits (`None`: back to the server's default;
/// `Some(None)`: explicitly unlimited).
pub fn set(user: &mut User, storage: Option<Option<u64>>, messages: Option<Option<u64>>) {
    for (tag, value) in [(SETTING_STORAGE, storage), (SETTING_MESSAGES, messages)] {
        match value {
            None => {
                user.settings.remove(&tag);
            }
            Some(limit) => {
                let mut bytes = Vec::new();
                put_varint(&mut bytes, limit.unwrap_or(0));
                user.settings.insert(tag, bytes);
            }
        }
    }
}

/// Whether account `name` has room for `messages` more messages of
/// `bytes`; `None` when there is no such account. One point read, and a
/// scan of its mailbox meta keys only when it has a limit.
pub fn room_for(
    store: &dyn Store,
    name: &str,
    default: Quota,
    messages: u64,
    bytes: u64,
) -> Result<Option<bool>, StoreError> {
    let Some(user) = crate::users::get_user(store, name)? else {
        return Ok(None);
    };
    let quota = of(&user, default)?;
    if quota.is_unlimited() {
        return Ok(Some(true));
    }
    Ok(Some(quota.admits(
        usage(store, &user.name)?,
        messages,
        bytes,
    )))
}

fn nonzero(limit: u64) -> Option<u64> {
    (limit > 0).then_some(limit)
}

fn setting(user: &User, tag: u32) -> Result<Option<u64>, StoreError> {
    let Some(value) = user.settings.get(&tag) else {
        return Ok(None);
    };
    let mut r = Reader::new(Family::Users, value);
    let limit = r.varint()?;
    r.finish()?;
    Ok(Some(limit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_admit_up_to_and_including_the_quota() {
        let quota = Quota {
            storage: Some(1000),
            messages: Some(3),
        };
        let used = Usage {
            messages: 2,
            bytes: 900,
        };
        assert!(quota.admits(used, 1, 100));
        assert!(!quota.admits(used, 1, 101), "storage");
        assert!(!quota.admits(used, 2, 0), "messages");
        assert!(Quota::default().admits(used, u64::MAX, u64::MAX));
    }

    #[test]
    fn an_account_overrides_the_default_and_survives_a_round_trip() {
        let default = Quota {
            storage: Some(5),
            messages: None,
        };
        let mut user = User {
            name: "a@x.test".into(),
            ..User::default()
        };
        assert_eq!(of(&user, default).unwrap(), default);
        set(&mut user, Some(Some(100)), Some(None));
        let decoded = User::decode(b"a@x.test", &user.encode_value()).unwrap();
        assert_eq!(
            of(&decoded, default).unwrap(),
            Quota {
                storage: Some(100),
                messages: None
            },
            "explicitly unlimited messages beat the default"
        );
        set(&mut user, None, None);
        assert_eq!(of(&user, default).unwrap(), default);
    }
}
