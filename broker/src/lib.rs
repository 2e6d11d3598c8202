//! The Keybroker service and the `keybroker` CLI: the only crate that wires the backends,
//! attestation, storage, authorization and transport together (see DESIGN.md).
#![forbid(unsafe_code)]

pub mod authz;
pub mod cli;
pub mod identity;
pub mod store;
pub mod tls;
