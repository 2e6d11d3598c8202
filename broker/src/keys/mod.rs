//! `keybroker.v1.KeyService`: keys in HSMs and TPMs, their use and their lifecycle.

mod authorize;
mod change;
pub mod convert;
mod envelope;
pub mod manager;
pub mod ops;
mod reconcile;
mod registry;
mod release;
pub mod sealing;
mod service;
pub mod spec;
mod usage;

pub use manager::{KeyManager, Reconciliation, StateChange};
pub use reconcile::Listings;
pub use release::Released;
pub use service::KeyServiceImpl;
pub(crate) use service::{absent_resource, authorize_key, resource as key_resource};
pub use usage::{DataKey, Decrypted, Encrypted, Signed};
