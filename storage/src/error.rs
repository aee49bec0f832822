use std::fmt;

/// What can go wrong in the store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The engine failed (I/O, corruption, full disk): the text says how.
    #[error("storage engine error: {0}")]
    Engine(String),
    /// A stored record could not be decoded.
    #[error("corrupt record in {family}: {detail}")]
    Corrupt {
        /// Family name.
        family: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// The commit pipeline has stopped (shutdown or writer died).
    #[error("commit pipeline is closed")]
    Closed,
    /// The store is opened read-only.
    #[error("store is read-only")]
    ReadOnly,
    /// Another opener holds the store for writing (RocksDB's `LOCK` file):
    /// typically a running server. The text is the engine's.
    #[error("store is locked by another process: {0}")]
    Locked(String),
    /// The disk is (nearly) full: the write was refused before the engine
    /// saw it, so the engine stays healthy and writes resume as soon as
    /// space is freed.
    #[error("disk nearly full: {free} bytes free, {reserve} kept in reserve")]
    DiskFull {
        /// Bytes free for the store.
        free: u64,
        /// Bytes the store keeps free (for its own flushes and compactions).
        reserve: u64,
    },
    /// The request's mailbox changes were refused; nothing of it was written.
    #[error("refused: {0}")]
    Refused(#[from] crate::mailbox::Refusal),
}

impl StoreError {
    /// Wrap any displayable engine error.
    pub fn engine(e: impl fmt::Display) -> Self {
        StoreError::Engine(e.to_string())
    }
}
