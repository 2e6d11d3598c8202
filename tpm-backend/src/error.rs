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
    /// The TPM is in dictionary-attack lockout; its counters, if they could be read.
    #[error("the TPM is in dictionary-attack lockout{}", lockout_detail(.0.as_ref()))]
    Lockout(Option<LockoutState>),
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

/// A TPM's dictionary-attack counters (TPM 2.0 Part 1, "Dictionary Attack Protection"):
/// the TPM refuses authorizations of DA-protected objects while `failures` is at least
/// `max_failures`, and forgives one failure every `interval_seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockoutState {
    /// Failed authorizations counted now (`TPM_PT_LOCKOUT_COUNTER`).
    pub failures: u32,
    /// The count at which lockout starts (`TPM_PT_MAX_AUTH_FAIL`).
    pub max_failures: u32,
    /// Seconds for one failure to be forgiven (`TPM_PT_LOCKOUT_INTERVAL`); 0: never.
    pub interval_seconds: u32,
}

impl LockoutState {
    /// The longest the lockout can last from now, in seconds, if nobody resets it: the
    /// failures over the limit, plus one, each forgiven after an interval (the current
    /// interval may already have partly passed). `None` when the TPM never forgives on its
    /// own (interval 0).
    #[must_use]
    pub fn seconds_left(&self) -> Option<u64> {
        if self.interval_seconds == 0 {
            return None;
        }
        let over = u64::from(self.failures.saturating_sub(self.max_failures)) + 1;
        Some(over.saturating_mul(u64::from(self.interval_seconds)))
    }
}

impl std::fmt::Display for LockoutState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} failed authorizations counted, lockout at {}",
            self.failures, self.max_failures
        )?;
        match self.seconds_left() {
            Some(left) => write!(
                f,
                "; one is forgiven every {} s: authorizations work again in at most {left} s, \
                 or once the lockout hierarchy's owner resets the counter",
                self.interval_seconds
            ),
            None => write!(
                f,
                "; the TPM forgives none on its own (lockout interval 0): only the lockout \
                 hierarchy's owner can reset the counter"
            ),
        }
    }
}

fn lockout_detail(state: Option<&LockoutState>) -> String {
    state.map(|s| format!(" ({s})")).unwrap_or_default()
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
            Some(Tss2ResponseCodeKind::Lockout) => TpmError::Lockout(None),
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
                detail: describe(&err),
            },
        }
    }
}

/// A tss-esapi error as text. tss-esapi 7 names TPM response codes, but prints "response
/// code not recognized" for the codes of the software stack's own layers (the TCTI that
/// could not connect, say): those are named here from their layer and base code (TCG TSS
/// 2.0 Overview, "TSS2_RC" layers and base codes).
pub(crate) fn describe(err: &tss_esapi::Error) -> String {
    let tss_esapi::Error::Tss2Error(rc) = err else {
        return err.to_string();
    };
    if rc.kind().is_some() {
        return err.to_string();
    }
    let raw = match rc {
        tss_esapi::constants::response_code::Tss2ResponseCode::FormatZero(c) => c.to_string(),
        tss_esapi::constants::response_code::Tss2ResponseCode::FormatOne(c) => c.to_string(),
        tss_esapi::constants::response_code::Tss2ResponseCode::Success => return err.to_string(),
    };
    // Both print "Response code value: 0x...".
    let Some(code) = raw
        .rsplit("0x")
        .next()
        .and_then(|hex| u32::from_str_radix(hex, 16).ok())
    else {
        return raw;
    };
    stack_code(code)
}

/// Names a TSS2_RC of the software stack's layers: `layer: cause (0x...)`.
pub(crate) fn stack_code(code: u32) -> String {
    let layer = match (code >> 16) & 0xff {
        0 => "TPM",
        5 => "feature API",
        6 => "system API",
        7 => "ESAPI",
        8 => "marshalling",
        10 => "TCTI",
        11 => "resource manager",
        12 => "resource manager driver",
        _ => "TSS",
    };
    let cause = match code & 0xffff {
        1 => "general failure",
        2 => "not implemented",
        3 => "bad context",
        5 => "bad reference",
        6 => "insufficient buffer",
        7 => "bad sequence",
        8 => "no connection",
        9 => "try again",
        10 => {
            "I/O error: nothing answers at that address (is the TPM, swtpm or the resource manager running?)"
        }
        11 => "bad value",
        12 => "not permitted",
        17 => "malformed response",
        20 => "incompatible TCTI",
        21 => "not supported",
        23 => "out of memory",
        28 => "no configuration",
        _ => "unknown cause",
    };
    format!("{layer}: {cause} ({code:#x})")
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

#[cfg(test)]
mod tests {
    use super::{LockoutState, TpmError, stack_code};

    #[test]
    fn lockout_says_how_long_it_can_last() {
        let state = |failures, interval_seconds| LockoutState {
            failures,
            max_failures: 3,
            interval_seconds,
        };
        // Two failures over the limit: three intervals until one fewer than the limit.
        assert_eq!(state(5, 600).seconds_left(), Some(1_800));
        assert_eq!(state(3, 600).seconds_left(), Some(600));
        assert_eq!(state(3, 0).seconds_left(), None);
        let err = TpmError::Lockout(Some(state(3, 0))).to_string();
        assert!(err.contains("forgives none on its own"), "{err}");
        assert_eq!(
            TpmError::Lockout(None).to_string(),
            "the TPM is in dictionary-attack lockout"
        );
    }

    #[test]
    fn stack_codes_name_their_layer_and_cause() {
        assert!(stack_code(0x000a_000a).starts_with("TCTI: I/O error"));
        assert_eq!(stack_code(0x0007_0001), "ESAPI: general failure (0x70001)");
        assert_eq!(stack_code(0x00ff_ffff), "TSS: unknown cause (0xffffff)");
    }
}
