//! The backend's one error type, and the one place where TSS and TPM response codes map
//! onto it.

use tss_esapi::constants::response_code::Tss2ResponseCodeKind;

/// Everything that can go wrong in the TPM backend.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TpmError {
    /// The TCTI string is not one this backend accepts.
    #[error("invalid TCTI {0:?}: expected device:PATH, swtpm:host=H,port=P or tabrmd:")]
    InvalidTcti(String),
    /// The TPM cannot be reached, or the connection was lost.
    #[error("the TPM is unavailable: {0}")]
    Unavailable(String),
    /// The TPM no longer holds the objects or sessions this connection made: it was reset.
    #[error("the TPM was reset under the connection: {0}")]
    Reset(String),
    /// Too many requests are queued for the TPM.
    #[error("the TPM is busy: {0} requests are already queued")]
    Busy(usize),
    /// The PCRs do not hold the values the sealed data was bound to.
    #[error("PCR policy not satisfied: the PCRs no longer match the sealing policy")]
    PcrPolicyNotSatisfied,
    /// A wrong authorization value for a sealed object.
    #[error("authorization failed: wrong auth value")]
    AuthFailed,
    /// The TPM is in dictionary-attack lockout.
    #[error("the TPM is in dictionary-attack lockout")]
    Lockout,
    /// A key or sealed blob is malformed, altered, or belongs to another TPM or parent.
    #[error("the blob cannot be used with this TPM: {0}")]
    InvalidBlob(String),
    /// The caller's input is malformed.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The TPM has no room for another object (the backend leaked a handle).
    #[error("the TPM is out of object memory")]
    ObjectMemory,
    /// No endorsement-key certificate is stored in the TPM's NV.
    #[error("no EK certificate in NV index {0:#010x}")]
    EkCertificateMissing(u32),
    /// The TPM lacks something this backend needs.
    #[error("the TPM does not support this: {0}")]
    Unsupported(String),
    /// Any other TPM or TSS failure.
    #[error("TPM {operation} failed: {detail}")]
    Tpm {
        operation: &'static str,
        detail: String,
    },
}

/// Shorthand for results of this crate.
pub type Result<T, E = TpmError> = std::result::Result<T, E>;

impl TpmError {
    /// Maps a tss-esapi error raised while doing `operation`. This is the only place where
    /// response codes are interpreted.
    pub(crate) fn from_tss(operation: &'static str, err: tss_esapi::Error) -> TpmError {
        let kind = match err {
            tss_esapi::Error::Tss2Error(rc) => rc.kind(),
            tss_esapi::Error::WrapperError(_) => None,
        };
        match kind {
            Some(Tss2ResponseCodeKind::PolicyFail) => TpmError::PcrPolicyNotSatisfied,
            Some(Tss2ResponseCodeKind::AuthFail | Tss2ResponseCodeKind::BadAuth) => {
                TpmError::AuthFailed
            }
            Some(Tss2ResponseCodeKind::Lockout) => TpmError::Lockout,
            Some(Tss2ResponseCodeKind::ObjectMemory) => TpmError::ObjectMemory,
            Some(
                Tss2ResponseCodeKind::ReferenceH0
                | Tss2ResponseCodeKind::ReferenceH1
                | Tss2ResponseCodeKind::ReferenceH2
                | Tss2ResponseCodeKind::ReferenceH3
                | Tss2ResponseCodeKind::ReferenceH4
                | Tss2ResponseCodeKind::ReferenceH5
                | Tss2ResponseCodeKind::ReferenceH6
                | Tss2ResponseCodeKind::ReferenceS0
                | Tss2ResponseCodeKind::ReferenceS1
                | Tss2ResponseCodeKind::ReferenceS2
                | Tss2ResponseCodeKind::ReferenceS3
                | Tss2ResponseCodeKind::ReferenceS4
                | Tss2ResponseCodeKind::ReferenceS5
                | Tss2ResponseCodeKind::ReferenceS6
                | Tss2ResponseCodeKind::Initialize,
            ) => TpmError::Reset(format!("{operation}: {err}")),
            Some(Tss2ResponseCodeKind::Integrity) => {
                TpmError::InvalidBlob("integrity check failed (altered, or another parent)".into())
            }
            _ => TpmError::Tpm {
                operation,
                detail: err.to_string(),
            },
        }
    }
}

/// Extension to tag tss-esapi results with the operation they belong to.
pub(crate) trait TssResultExt<T> {
    fn during(self, operation: &'static str) -> Result<T>;
}

impl<T> TssResultExt<T> for std::result::Result<T, tss_esapi::Error> {
    fn during(self, operation: &'static str) -> Result<T> {
        self.map_err(|e| TpmError::from_tss(operation, e))
    }
}
