//! The backend's one error type, and the one place where PKCS#11 return codes map onto it.
//!
//! Messages name what failed (module path, token, key id, mechanism) and never carry a
//! PIN, a plaintext or key material.

use std::path::PathBuf;
use std::time::Duration;

use cryptoki::error::{Error as CkError, RvError};

use crate::key::KeyId;
use crate::module::TokenSelector;
use crate::quirks::Quirks;

/// Everything that can go wrong in the HSM backend.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HsmError {
    /// The PKCS#11 module could not be loaded or initialised.
    #[error("cannot load PKCS#11 module {path}: {reason}")]
    ModuleLoad { path: PathBuf, reason: String },
    /// No token matches the selector.
    #[error("no token with {0}")]
    TokenNotFound(TokenSelector),
    /// More than one token matches the selector.
    #[error("more than one token has {0}; select it by serial number")]
    TokenAmbiguous(TokenSelector),
    /// A token with this label is already initialised.
    #[error("a token labelled {0:?} is already initialised")]
    TokenExists(String),
    /// This process already has a backend open on the token (login state is shared by
    /// the whole process, so a second one could not check its PIN).
    #[error("token {0} is already open in this process; share its backend")]
    TokenInUse(String),
    /// No slot holds an uninitialised token to initialise.
    #[error("no slot has an uninitialised token")]
    NoFreeSlot,
    /// The token lost its session or login, or went away, and did not come back.
    #[error("the token is unavailable: {0}")]
    TokenUnavailable(String),
    /// The PIN was wrong.
    #[error("incorrect PIN")]
    PinIncorrect,
    /// Too many wrong PINs: the token locked it.
    #[error("the PIN is locked")]
    PinLocked,
    /// The PIN does not meet the token's rules (length, characters, strength).
    #[error("the PIN does not meet the token's requirements ({0})")]
    PinRejected(&'static str),
    /// The PIN has expired and must be changed.
    #[error("the PIN has expired and must be changed")]
    PinExpired,
    /// The token's user PIN has not been set.
    #[error("the token's user PIN is not initialised")]
    UserPinNotInitialized,
    /// A PIN file or variable could not be read.
    #[error("cannot read the PIN from {source_name}: {reason}")]
    PinSource { source_name: String, reason: String },
    /// Both or neither of a PIN file and a PIN environment variable were given.
    #[error("give exactly one of a PIN file and a PIN environment variable ({given} given)")]
    PinSourceCount { given: usize },
    /// No key with this id is on the token.
    #[error("key {0} not found")]
    KeyNotFound(KeyId),
    /// A key with this id is already on the token.
    #[error("key {0} already exists")]
    KeyExists(KeyId),
    /// The token does not offer a mechanism the operation needs.
    #[error("the token does not support mechanism {0}")]
    MechanismNotSupported(String),
    /// The key exists but its algorithm or usage does not allow the operation.
    #[error("key {key} cannot be used for this: {reason}")]
    KeyUsageNotPermitted { key: KeyId, reason: String },
    /// An AEAD tag or key-wrap integrity check failed: the input was modified.
    #[error("authentication failed: the ciphertext, tag, nonce or associated data was modified")]
    AuthenticationFailed,
    /// The key's value cannot leave the token.
    #[error("the key is not extractable")]
    KeyUnextractable,
    /// Releasing keys is not set up on the token: its trusted release transport key is
    /// missing or is not what the security officer's set-up makes.
    #[error("releasing keys is not set up on this token: {0}")]
    ReleaseNotProvisioned(String),
    /// The caller's input is malformed (length, encoding, size).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// No pooled session became free in time.
    #[error("no HSM session became free within {0:?}")]
    PoolExhausted(Duration),
    /// The token has no room for more objects.
    #[error("the token is out of memory")]
    DeviceMemory,
    /// Any other PKCS#11 failure.
    #[error("PKCS#11 {function} failed: {rv}")]
    Pkcs11 { function: String, rv: String },
}

/// Shorthand for results of this crate.
pub type Result<T, E = HsmError> = std::result::Result<T, E>;

/// What the backend was doing when PKCS#11 failed; some return codes mean different things
/// in different operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    General,
    Decrypt,
    Unwrap,
}

impl HsmError {
    /// Whether a fresh session and login may cure this error (the pool retries once).
    pub(crate) fn session_lost(&self) -> bool {
        matches!(self, HsmError::TokenUnavailable(_))
    }

    /// Whether a broken token would explain this error, so that the pool asks whether the
    /// token still answers (and re-initialises the module if not).
    pub(crate) fn token_suspect(&self) -> bool {
        matches!(
            self,
            HsmError::TokenUnavailable(_)
                | HsmError::TokenNotFound(_)
                | HsmError::KeyNotFound(_)
                | HsmError::Pkcs11 { .. }
        )
    }

    /// Maps a PKCS#11 error. This is the only place where `CKR_*` codes are interpreted.
    pub(crate) fn from_pkcs11(err: CkError, op: Op, quirks: &Quirks) -> HsmError {
        let (rv, function) = match err {
            CkError::Pkcs11(rv, function) => (rv, function),
            other => {
                return HsmError::Pkcs11 {
                    function: "binding".into(),
                    rv: other.to_string(),
                };
            }
        };
        match (rv, op) {
            (RvError::PinIncorrect, _) => HsmError::PinIncorrect,
            (RvError::PinLocked, _) => HsmError::PinLocked,
            (RvError::PinExpired, _) => HsmError::PinExpired,
            (RvError::PinLenRange, _) => HsmError::PinRejected("length out of range"),
            (RvError::PinInvalid, _) => HsmError::PinRejected("invalid characters"),
            (RvError::PinTooWeak, _) => HsmError::PinRejected("too weak"),
            (RvError::UserPinNotInitialized, _) => HsmError::UserPinNotInitialized,
            (RvError::UserAnotherAlreadyLoggedIn | RvError::SessionReadWriteSoExists, _) => {
                HsmError::TokenInUse(format!("{function}: {rv}"))
            }
            (
                RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::UserNotLoggedIn
                | RvError::DeviceRemoved
                | RvError::TokenNotPresent
                | RvError::TokenNotRecognized
                | RvError::CryptokiNotInitialized,
                _,
            ) => HsmError::TokenUnavailable(format!("{function}: {rv}")),
            // What the module does not do, or a template it will not take: the module's
            // limits, not the caller's mistake (tpm2-pkcs11 answers an AES C_GenerateKey with
            // CKR_FUNCTION_NOT_SUPPORTED and an over-specified template with
            // CKR_ATTRIBUTE_VALUE_INVALID).
            (
                RvError::MechanismInvalid
                | RvError::MechanismParamInvalid
                | RvError::FunctionNotSupported
                | RvError::KeySizeRange
                | RvError::KeyTypeInconsistent
                | RvError::KeyFunctionNotPermitted
                | RvError::TemplateInconsistent
                | RvError::TemplateIncomplete
                | RvError::AttributeTypeInvalid
                | RvError::AttributeValueInvalid,
                _,
            ) => HsmError::MechanismNotSupported(format!("{function}: {rv}")),
            (RvError::EncryptedDataInvalid | RvError::EncryptedDataLenRange, Op::Decrypt)
            | (
                RvError::WrappedKeyInvalid
                | RvError::WrappedKeyLenRange
                | RvError::EncryptedDataInvalid,
                Op::Unwrap,
            ) => HsmError::AuthenticationFailed,
            (RvError::GeneralError | RvError::FunctionFailed, Op::Decrypt | Op::Unwrap)
                if quirks.integrity_failure_is_general_error =>
            {
                HsmError::AuthenticationFailed
            }
            (RvError::KeyUnextractable | RvError::KeyNotWrappable, _) => HsmError::KeyUnextractable,
            (RvError::DataLenRange | RvError::DataInvalid, _) => HsmError::InvalidInput(format!(
                "the token rejected the input length or format ({rv})"
            )),
            (RvError::DeviceMemory | RvError::HostMemory, _) => HsmError::DeviceMemory,
            _ => HsmError::Pkcs11 {
                function: function.to_string(),
                rv: rv.to_string(),
            },
        }
    }
}

/// Whether a PKCS#11 error means an object handle went stale (so the key should be found
/// again by its id).
pub(crate) fn is_stale_handle(err: &CkError) -> bool {
    matches!(
        err,
        CkError::Pkcs11(RvError::ObjectHandleInvalid | RvError::KeyHandleInvalid, _)
    )
}
