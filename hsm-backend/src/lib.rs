//! A PKCS#11 backend: keys are generated inside an HSM token and used there.
//!
//! Any conformant module serves (SoftHSM2 in tests, a network HSM's client library in
//! production). The backend knows nothing of gRPC, policy or storage: it takes typed
//! requests and returns typed results and [`HsmError`]s.
//!
//! - [`Pkcs11Module`]: load a module, list tokens and mechanisms, find a token by label
//!   or serial (never by slot index).
//! - [`provision`]: initialise tokens and set PINs, for security teams.
//! - [`Capabilities`]: what the token's module offers, asked of it once at open; keys
//!   and signatures it cannot make are refused before the token is touched.
//! - [`HsmBackend`]: a pool of logged-in sessions on one token, and every key operation.
//! - [`HsmBackend::release_key`]: hands a [`KeyClass::Releasable`] key to a workload,
//!   wrapped to its P-256 public key inside the token.
#![forbid(unsafe_code)]

mod backend;
mod capabilities;
mod encrypt;
mod error;
mod key;
mod key_management;
mod lookup;
mod module;
mod pin;
mod pool;
mod pooled_session;
pub mod provision;
mod public_key;
mod quirks;
mod random;
mod release;
mod secret;
mod sign;
mod token_claim;
mod wrap;

pub use backend::{HsmBackend, HsmConfig};
pub use capabilities::{Capabilities, MechanismUse};
pub use encrypt::{AeadCiphertext, GCM_NONCE_LEN, GCM_TAG_LEN, OaepHash};
pub use error::{HsmError, Result};
pub use key::{
    EcCurve, KeyAlgorithm, KeyClass, KeyId, KeyInfo, KeyLabel, KeyProtection, KeySpec, KeyUsage,
};
pub use module::{Pkcs11Module, Token, TokenDescription, TokenSelector};
pub use pin::Pin;
pub use pool::PoolConfig;
pub use public_key::PublicKeyDer;
pub use quirks::Quirks;
pub use random::MAX_RANDOM_LEN;
pub use release::{
    RELEASE_POINT_LEN, ReleaseKdf, ReleasedKey, TRANSPORT_KEY_ID, TRANSPORT_KEY_LABEL,
};
pub use secret::SecretBytes;
pub use sign::{Digest, HashAlgorithm, MAX_DATA_LEN, SignatureAlgorithm};
pub use wrap::{DATA_KEY_LEN, DataKey, WrappedKey};

/// Re-exported so callers can build [`Pin`]s and read secrets without naming versions.
pub use secrecy;
