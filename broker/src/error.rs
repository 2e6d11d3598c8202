//! The broker's error type and the one place where it becomes a gRPC status.
//!
//! Messages returned to callers say what was wrong with *their* request; backend and
//! store details go to the log only, because they can reveal the deployment.

use tonic::{Code, Status};

use crate::store::StoreError;

/// What a broker operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The request is malformed: a missing field, a wrong length, an unknown enum value.
    #[error("{0}")]
    InvalidArgument(String),
    #[error("key {0:?} not found")]
    KeyNotFound(String),
    #[error("key {0:?} already exists")]
    KeyExists(String),
    /// The key exists but cannot do this now: disabled, revoked, wrong purpose, retired
    /// version.
    #[error("{0}")]
    FailedPrecondition(String),
    /// A backend name or hardware that is already registered.
    #[error("{0}")]
    AlreadyExists(String),
    #[error("backend {0:?} is not registered")]
    UnknownBackend(String),
    /// Something other than a key that the call names does not exist (a secret).
    #[error("{0}")]
    NotFound(String),
    /// The caller may not do this to this object (another identity's lease).
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    Unsupported(String),
    /// A signature did not verify or a ciphertext was altered.
    #[error("{0}")]
    IntegrityFailure(String),
    /// A stored record failed its integrity check (`crate::store::integrity`).
    #[error("{0}")]
    DataLoss(String),
    /// The hardware is busy or unreachable; the caller may retry.
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    ResourceExhausted(String),
    /// Anything else. The detail is logged, the caller sees a generic message.
    /// A hardware object the store names is not in the hardware (its id, hex); the key
    /// operations turn it into a `FAILED_PRECONDITION` naming the key and version.
    #[error("hardware object {0} is missing")]
    ObjectMissing(String),
    #[error("internal error: {0}")]
    Internal(String),
}

/// Broker results.
pub type Result<T, E = BrokerError> = std::result::Result<T, E>;

impl From<BrokerError> for Status {
    fn from(err: BrokerError) -> Status {
        let code = match &err {
            BrokerError::InvalidArgument(_) => Code::InvalidArgument,
            BrokerError::KeyNotFound(_)
            | BrokerError::UnknownBackend(_)
            | BrokerError::NotFound(_) => Code::NotFound,
            BrokerError::KeyExists(_) | BrokerError::AlreadyExists(_) => Code::AlreadyExists,
            BrokerError::FailedPrecondition(_) | BrokerError::ObjectMissing(_) => {
                Code::FailedPrecondition
            }
            BrokerError::PermissionDenied(_) => Code::PermissionDenied,
            BrokerError::Unsupported(_) => Code::Unimplemented,
            BrokerError::IntegrityFailure(_) => Code::InvalidArgument,
            BrokerError::DataLoss(_) => Code::DataLoss,
            BrokerError::Unavailable(_) => Code::Unavailable,
            BrokerError::ResourceExhausted(_) => Code::ResourceExhausted,
            BrokerError::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                return Status::internal("internal error");
            }
        };
        Status::new(code, err.to_string())
    }
}

impl From<StoreError> for BrokerError {
    fn from(err: StoreError) -> BrokerError {
        match err {
            StoreError::KeyExists(name) => BrokerError::KeyExists(name),
            StoreError::KeyNotFound(name) => BrokerError::KeyNotFound(name),
            StoreError::VersionNotFound { name, version } => {
                BrokerError::FailedPrecondition(format!("key {name:?} has no version {version}"))
            }
            StoreError::StateConflict { .. } => BrokerError::FailedPrecondition(err.to_string()),
            StoreError::BackendExists(name) => {
                BrokerError::InvalidArgument(format!("backend {name:?} is already registered"))
            }
            StoreError::InvalidQuery(m) => BrokerError::InvalidArgument(m),
            StoreError::SecretExists(_) => BrokerError::AlreadyExists(err.to_string()),
            StoreError::SecretNotFound(_) | StoreError::LeaseNotFound(_) => {
                BrokerError::NotFound(err.to_string())
            }
            StoreError::LeaseNotLive { .. } => BrokerError::FailedPrecondition(err.to_string()),
            StoreError::LeaseLimit { .. } => BrokerError::ResourceExhausted(err.to_string()),
            StoreError::SecretVersionNotFound { .. } | StoreError::SecretVersionRace { .. } => {
                BrokerError::FailedPrecondition(err.to_string())
            }
            StoreError::Tampered(detail) => {
                tracing::error!(%detail, "a stored record failed its integrity check");
                BrokerError::DataLoss(
                    "a stored record failed its integrity check; an operator must restore it"
                        .into(),
                )
            }
            StoreError::Locked => BrokerError::Unavailable(err.to_string()),
            StoreError::Busy(_) | StoreError::Full => {
                BrokerError::ResourceExhausted(err.to_string())
            }
            other => BrokerError::Internal(other.to_string()),
        }
    }
}

/// What a client is told when the token fails a call: the call and the module's code, and
/// for a call that writes, the likely causes an operator can fix (SoftHSM2 answers
/// `CKR_GENERAL_ERROR` when its token directory is read-only or its disk full).
fn hsm_failure(function: &str, rv: &str) -> String {
    let function = function.trim_start_matches("Function::");
    let writes = [
        "GenerateKey",
        "GenerateKeyPair",
        "CreateObject",
        "CopyObject",
        "DestroyObject",
        "SetAttributeValue",
        "UnwrapKey",
    ];
    let hint = if writes.contains(&function) {
        " (is the token read-only, or its storage full?)"
    } else {
        ""
    };
    format!("the HSM token failed C_{function}: {rv}{hint}")
}

impl From<hsm_backend::HsmError> for BrokerError {
    fn from(err: hsm_backend::HsmError) -> BrokerError {
        use hsm_backend::HsmError as H;
        match err {
            H::AuthenticationFailed => BrokerError::IntegrityFailure(
                "authentication failed: the ciphertext or associated data was modified".into(),
            ),
            H::InvalidInput(m) => BrokerError::InvalidArgument(m),
            H::MechanismNotSupported(m) => {
                BrokerError::Unsupported(format!("the HSM does not support {m}"))
            }
            H::PoolExhausted(_) => BrokerError::ResourceExhausted("the HSM is busy".into()),
            H::TokenUnavailable(cause) => {
                BrokerError::Unavailable(format!("the HSM token is unavailable: {cause}"))
            }
            H::KeyNotFound(id) => BrokerError::ObjectMissing(id.to_string()),
            // The broker checks a key's purpose before it calls the token, so a token that
            // finds only another part of the key (its public half, say) lacks the object
            // the store names.
            H::KeyUsageNotPermitted { key, reason } => {
                tracing::warn!(object = %key, %reason, "the token lacks the part of a key the store names");
                BrokerError::ObjectMissing(key.to_string())
            }
            H::DeviceMemory => {
                BrokerError::ResourceExhausted("the HSM token is out of memory".into())
            }
            H::Pkcs11 { function, rv } => BrokerError::Unavailable(hsm_failure(&function, &rv)),
            H::ReleaseNotProvisioned(detail) => {
                tracing::warn!(%detail, "a key release on a token without its transport key");
                BrokerError::FailedPrecondition(
                    "releasing keys is not set up on this key's HSM token: its security \
                     officer runs `keybroker token enable-release` once"
                        .into(),
                )
            }
            H::KeyUnextractable => BrokerError::FailedPrecondition(
                "the key is not extractable: its material never leaves the HSM".into(),
            ),
            other => BrokerError::Internal(format!("HSM: {other}")),
        }
    }
}

impl From<tpm_backend::TpmError> for BrokerError {
    fn from(err: tpm_backend::TpmError) -> BrokerError {
        use tpm_backend::TpmError as T;
        match err {
            T::Busy(_) => BrokerError::ResourceExhausted("the TPM is busy".into()),
            T::Unavailable(_) | T::Reset(_) | T::InvalidTcti(_) | T::Tpm { .. } => {
                tracing::warn!(error = %err, "TPM unavailable");
                BrokerError::Unavailable(err.to_string())
            }
            T::InvalidInput(m) => BrokerError::InvalidArgument(m),
            T::Unsupported(m) => BrokerError::Unsupported(m),
            // With the time left when the TPM's counters could be read.
            T::Lockout(Some(_)) => BrokerError::Unavailable(err.to_string()),
            T::Lockout(None) => BrokerError::Unavailable(
                "the TPM is in dictionary-attack lockout: it recovers after its lockout \
                 interval, or when the lockout hierarchy's owner resets it"
                    .into(),
            ),
            T::ObjectMemory => BrokerError::Unavailable(
                "the TPM is out of object memory (transient objects left loaded?)".into(),
            ),
            T::PcrPolicyNotSatisfied => BrokerError::FailedPrecondition(
                "the TPM's PCRs do not satisfy the object's policy".into(),
            ),
            // The stored object cannot be used with this TPM (a store restored onto other
            // hardware, a cleared TPM, an altered blob): the caller names key and version.
            T::InvalidBlob(why) => {
                tracing::error!(%why, "a TPM key's blob does not load");
                BrokerError::ObjectMissing("(its TPM blob no longer loads)".into())
            }
            T::AuthFailed | T::EkCertificateMissing(_) => {
                BrokerError::FailedPrecondition(err.to_string())
            }
            other => BrokerError::Internal(format!("TPM: {other}")),
        }
    }
}

impl From<tokio::task::JoinError> for BrokerError {
    fn from(err: tokio::task::JoinError) -> BrokerError {
        BrokerError::Internal(format!("worker task: {err}"))
    }
}
