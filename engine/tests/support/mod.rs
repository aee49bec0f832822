//! Shared helpers for integration tests.
pub mod dns;
pub mod tls_mx;
