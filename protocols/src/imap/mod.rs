//! IMAP4rev2 (RFC 9051), usable by IMAP4rev1 (RFC 3501) clients: the
//! server side, sans-IO. The grammar is imap-codec's; MIME structure is
//! mail-parser's.
//!
//! # Layout
//! - `mime`: ENVELOPE, BODYSTRUCTURE and BODY[section] of a stored message.
//! - `search`: whether a message matches a SEARCH key.

pub mod mime;
pub mod search;
