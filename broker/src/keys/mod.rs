//! `keybroker.v1.KeyService`: keys in HSMs and TPMs, their use and their lifecycle.

pub mod convert;
pub mod manager;
pub mod ops;
mod reconcile;
mod service;
pub mod spec;

pub use manager::{KeyManager, Reconciliation, StateChange};
pub use service::KeyServiceImpl;
pub(crate) use service::{absent_resource, resource as key_resource};
