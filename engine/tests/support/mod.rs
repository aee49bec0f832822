//! Shared helpers for integration tests.
pub mod ca;
pub mod dns;
pub mod https;
pub mod tls_mx;
