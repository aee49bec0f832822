//! ManageSieve (RFC 5804): how mail clients and webmail (Thunderbird's
//! and Roundcube's filter editors, `sieve-connect`) upload, list, fetch
//! and activate a user's Sieve scripts, on port 4190.
//!
//! - `command`: the grammar of commands (strings, literals, numbers).
//! - [`server`]: the session: capabilities, STARTTLS, AUTHENTICATE with
//!   the SASL mechanisms the other protocols share, and the script
//!   commands, whose storage is the driver's.

mod command;
pub mod server;

pub use server::{Answer, Event, ManageSieveConfig, ManageSieveSession, Request};

#[cfg(test)]
mod tests;
