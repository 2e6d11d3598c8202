//! The Keybroker service and the `keybroker` CLI: the only crate that wires the backends,
//! attestation, storage, authorization and transport together (see docs/design.md).
#![forbid(unsafe_code)]

pub mod admin;
pub mod attestation;
pub mod authz;
pub mod backends;
pub mod ca;
pub mod cli;
pub mod config;
pub mod dev;
pub mod error;
pub mod identity;
pub mod keys;
pub mod oidc;
pub mod request;
pub mod sealing;
pub mod secrets;
pub mod server;
mod start;
pub mod store;
pub mod store_key;
pub mod tls;

/// The boxed future of the request stack's tower services (`request/`, `tls/layers.rs`).
pub(crate) type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;
