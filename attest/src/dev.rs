//! Development evidence for machines with no TEE, so the whole flow runs in CI.
//!
//! It carries the same binding as an SNP report and a self-declared measurement, and is
//! signed by nothing: it proves nothing. It is refused unless the policy says
//! `[dev] allow_insecure = true`, and its claims say `insecure: true`.

use crate::binding::constant_time_eq;
use crate::claims::{Claims, TeeKind};
use crate::error::{AttestError, Refusal, Result};

/// Insecure development evidence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InsecureDevEvidence {
    /// `SHA-512(nonce ‖ SPKI)`, as for SNP.
    pub report_data: [u8; 64],
    /// A self-declared measurement.
    pub measurement: [u8; 48],
}

/// Checks the binding and the policy switch, and returns insecure claims.
///
/// # Errors
/// [`Refusal::InsecureEvidence`] unless allowed; [`AttestError::BindingMismatch`].
pub fn appraise(
    evidence: &InsecureDevEvidence,
    expected_report_data: &[u8; 64],
    allowed: bool,
) -> Result<Claims> {
    if !allowed {
        return Err(Refusal::InsecureEvidence.into());
    }
    if !constant_time_eq(&evidence.report_data, expected_report_data) {
        return Err(AttestError::BindingMismatch);
    }
    Ok(Claims {
        tee: TeeKind::InsecureDev,
        insecure: true,
        measurement: Some(hex::encode(evidence.measurement)),
        tcb: None,
        debug: None,
        vmpl: None,
        platform: None,
        attestation_key: None,
        pcrs: Default::default(),
    })
}
