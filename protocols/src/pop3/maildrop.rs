//! The maildrop as the session sees it once authenticated: the messages the
//! driver listed, numbered from 1, and the deletion marks DELE sets and RSET
//! clears. Marks only become deletions when the driver commits them at QUIT.

/// Longest unique-id RFC 1939 §7 allows.
pub const MAX_UID_LEN: usize = 70;

/// One message of the maildrop, as the driver lists it at login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageInfo {
    /// The UIDL unique-id: 1 to [`MAX_UID_LEN`] characters in 0x21..=0x7E,
    /// stable across sessions (RFC 1939 §7).
    pub uid: String,
    /// Size in octets as sent by RETR (CRLF line endings), shown by STAT
    /// and LIST.
    pub size: u64,
}

impl MessageInfo {
    /// True if [`Self::uid`] is one RFC 1939 allows. A maildrop with any
    /// other is refused, since a space or a line break in a uid would break
    /// the UIDL listing.
    pub fn has_valid_uid(&self) -> bool {
        (1..=MAX_UID_LEN).contains(&self.uid.len())
            && self.uid.bytes().all(|b| (0x21..=0x7E).contains(&b))
    }
}

/// Why DELE did not mark a message.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum DeleteError {
    /// Out of range.
    NoSuchMessage,
    /// Marked already.
    AlreadyDeleted,
}

/// The listed messages and their deletion marks.
#[derive(Debug)]
pub(super) struct Maildrop {
    messages: Vec<MessageInfo>,
    /// One mark per message, same index.
    deleted: Vec<bool>,
}

impl Maildrop {
    pub(super) fn new(messages: Vec<MessageInfo>) -> Self {
        let deleted = vec![false; messages.len()];
        Maildrop { messages, deleted }
    }

    /// Message `number` (1-based) unless out of range or marked.
    pub(super) fn get(&self, number: usize) -> Option<&MessageInfo> {
        let index = number.checked_sub(1)?;
        match self.deleted.get(index) {
            Some(false) => self.messages.get(index),
            _ => None,
        }
    }

    /// The unmarked messages with their numbers, in order.
    pub(super) fn live(&self) -> impl Iterator<Item = (usize, &MessageInfo)> {
        self.messages
            .iter()
            .zip(&self.deleted)
            .enumerate()
            .filter(|(_, (_, &deleted))| !deleted)
            .map(|(index, (info, _))| (index + 1, info))
    }

    /// Count and total size of the unmarked messages (STAT, RFC 1939 §5).
    pub(super) fn stat(&self) -> (usize, u64) {
        self.live().fold((0, 0), |(n, octets), (_, info)| {
            (n + 1, octets.saturating_add(info.size))
        })
    }

    /// Mark message `number` (1-based) for deletion.
    pub(super) fn delete(&mut self, number: usize) -> Result<(), DeleteError> {
        let mark = number
            .checked_sub(1)
            .and_then(|index| self.deleted.get_mut(index))
            .ok_or(DeleteError::NoSuchMessage)?;
        if *mark {
            return Err(DeleteError::AlreadyDeleted);
        }
        *mark = true;
        Ok(())
    }

    /// Clear every mark (RSET).
    pub(super) fn reset(&mut self) {
        self.deleted.fill(false);
    }

    /// The marked numbers, ascending.
    pub(super) fn marked(&self) -> Vec<usize> {
        self.deleted
            .iter()
            .enumerate()
            .filter(|(_, &deleted)| deleted)
            .map(|(index, _)| index + 1)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(uid: &str, size: u64) -> MessageInfo {
        MessageInfo {
            uid: uid.into(),
            size,
        }
    }

    #[test]
    fn marks_hide_messages_until_reset() {
        let mut drop = Maildrop::new(vec![info("a", 10), info("b", 20), info("c", 30)]);
        assert_eq!(drop.stat(), (3, 60));
        assert_eq!(drop.delete(2), Ok(()));
        assert_eq!(drop.delete(2), Err(DeleteError::AlreadyDeleted));
        assert_eq!(drop.delete(0), Err(DeleteError::NoSuchMessage));
        assert_eq!(drop.delete(4), Err(DeleteError::NoSuchMessage));
        assert_eq!(drop.stat(), (2, 40));
        assert_eq!(drop.get(2), None);
        assert_eq!(drop.get(3).map(|m| m.size), Some(30));
        assert_eq!(drop.live().map(|(n, _)| n).collect::<Vec<_>>(), [1, 3]);
        assert_eq!(drop.marked(), [2]);
        drop.reset();
        assert_eq!((drop.stat(), drop.marked()), ((3, 60), vec![]));
    }

    #[test]
    fn sizes_saturate() {
        let drop = Maildrop::new(vec![info("a", u64::MAX), info("b", 1)]);
        assert_eq!(drop.stat(), (2, u64::MAX));
    }

    #[test]
    fn uid_rules() {
        assert!(info("A-z~!", 0).has_valid_uid());
        assert!(info(&"x".repeat(MAX_UID_LEN), 0).has_valid_uid());
        for bad in ["", "a b", "a\r\n", "é", "\x7f"] {
            assert!(!info(bad, 0).has_valid_uid(), "{bad:?}");
        }
        assert!(!info(&"x".repeat(MAX_UID_LEN + 1), 0).has_valid_uid());
    }
}
