//! Sieve mail filtering (RFC 5228): a user's script decides, for each
//! message delivered to them, which mailboxes get it, with which flags,
//! whether it goes on to other addresses, is refused, or is answered
//! while they are away.
//!
//! Sans-IO like the protocols beside it: [`parse`] checks a script when
//! it is uploaded; [`run`] decides on one delivery from the message's
//! bytes and envelope and returns an [`Outcome`], which the engine
//! carries out in the delivery's own commit. [`vacation`] says whether a
//! message may be answered and composes the answer.
//!
//! Extensions: `fileinto`, `envelope` (RFC 5228), `reject` and `ereject`
//! (RFC 5429), `imap4flags` (RFC 5232), `vacation` (RFC 5230), `copy`
//! (RFC 3894), `mailbox` (`:create`, RFC 5490), `relational` and
//! `comparator-i;ascii-numeric` (RFC 5231), `subaddress` (RFC 5233),
//! `body` (RFC 5173). Not `variables`, `include` or `date`: a script that
//! requires them is refused at upload, never half run.

mod eval;
mod header;
mod lexer;
mod parse;
pub mod script;
pub mod vacation;

pub use eval::{bare_address, run, Filing, Mail, Outcome, MAX_REDIRECTS};
pub use parse::{parse, MAX_NESTING};
pub use script::Script;

/// The extensions a script may require, as ManageSieve's SIEVE
/// capability lists them.
pub const EXTENSIONS: &str = "fileinto reject ereject envelope imap4flags vacation copy mailbox \
relational comparator-i;ascii-numeric subaddress body";

/// Largest script accepted, in octets (Dovecot's default is 1 MiB; a
/// filter set that large is a mistake, and each delivery reads it).
pub const MAX_SCRIPT_SIZE: usize = 256 * 1024;

/// Why a script was refused: the line and what is wrong there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct SieveError {
    /// 1-based line.
    pub line: usize,
    /// What is wrong, for the person who wrote it.
    pub message: String,
}

impl SieveError {
    pub(crate) fn new(line: usize, message: impl Into<String>) -> SieveError {
        SieveError {
            line,
            message: message.into(),
        }
    }
}

/// Parse `text` as a script no larger than [`MAX_SCRIPT_SIZE`].
pub fn check(text: &[u8]) -> Result<Script, SieveError> {
    if text.len() > MAX_SCRIPT_SIZE {
        return Err(SieveError::new(
            1,
            format!("script is larger than {MAX_SCRIPT_SIZE} octets"),
        ));
    }
    let text = std::str::from_utf8(text).map_err(|e| {
        let line = 1 + text[..e.valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        SieveError::new(line, "script is not UTF-8")
    })?;
    parse(text)
}

#[cfg(test)]
mod tests;
