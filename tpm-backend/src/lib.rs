//! A TPM 2.0 backend over tss-esapi 7.7: keys under a storage root key, PCR-policy
//! sealing, quotes with an attestation key, and EK-bound credential activation.
//!
//! The same code serves `/dev/tpmrm0` and swtpm; only the TCTI string differs. The crate
//! knows nothing of gRPC, policy or storage: callers keep the [`TpmBlob`]s it returns.
#![forbid(unsafe_code)]

mod blob;
mod connection;
mod ek;
mod error;
pub mod hierarchy;
mod keys;
mod pcr;
pub mod policy;
mod quote;
mod seal;
mod tcti;
mod templates;
mod worker;

pub use blob::TpmBlob;
pub use connection::SrkSource;
pub use ek::{CredentialBlob, EkPublic, MAX_CREDENTIAL_LEN, RSA_EK_CERTIFICATE_NV_INDEX};
pub use error::{LockoutState, Result, TpmError};
pub use hierarchy::{HierarchyAuth, HierarchyAuths};
pub use keys::TpmSignScheme;
pub use pcr::{MAX_PCR_INDEX, PcrSelection, PcrValue};
pub use quote::{MAX_NONCE_LEN, Quote};
pub use seal::{MAX_SEAL_LEN, SealPolicy, SealedBlob};
pub use tcti::Tcti;
pub use templates::TpmKeyKind;
pub use worker::{Pending, TpmBackend, TpmConfig};
