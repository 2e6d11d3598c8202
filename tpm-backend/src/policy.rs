//! Policy digests computed offline, so data can be sealed to a PCR state the TPM is not in
//! yet (after an update, say). The TPM computes the same digest in a trial session; the
//! tests check that they agree.
//!
//! `PolicyPCR`:   `d' = H(d ‖ TPM_CC_PolicyPCR ‖ TPML_PCR_SELECTION ‖ H(pcr values))`
//! `PolicyAuthValue` (and `PolicyPassword`): `d' = H(d ‖ TPM_CC_PolicyAuthValue)`

use sha2::{Digest as _, Sha256};

use crate::error::{Result, TpmError};
use crate::pcr::{PcrSelection, PcrValue};

const TPM_CC_POLICY_PCR: u32 = 0x0000_017F;
const TPM_CC_POLICY_AUTH_VALUE: u32 = 0x0000_016B;
const TPM_ALG_SHA256: u16 = 0x000B;

/// A policy digest (SHA-256).
pub type PolicyDigest = [u8; 32];

/// `TPML_PCR_SELECTION` for one SHA-256 selection, in TPM wire format.
fn marshal_selection(selection: &PcrSelection) -> Vec<u8> {
    let mut out = Vec::with_capacity(10);
    out.extend_from_slice(&1u32.to_be_bytes());
    out.extend_from_slice(&TPM_ALG_SHA256.to_be_bytes());
    out.push(3);
    out.extend_from_slice(&selection.bitmap());
    out
}

/// The digest of the selected PCR values, as `TPM2_PolicyPCR` takes it.
pub fn pcr_values_digest(values: &[PcrValue]) -> [u8; 32] {
    let mut h = Sha256::new();
    values.iter().for_each(|v| h.update(v));
    h.finalize().into()
}

/// The policy `PolicyPCR(selection, values)`, then `PolicyAuthValue` if `with_auth_value`.
///
/// # Errors
/// [`TpmError::InvalidInput`] if there is not one value per selected PCR.
pub fn pcr_policy_digest(
    selection: &PcrSelection,
    values: &[PcrValue],
    with_auth_value: bool,
) -> Result<PolicyDigest> {
    if values.len() != selection.indices().len() {
        return Err(TpmError::InvalidInput(format!(
            "{} PCR values for {} selected PCRs",
            values.len(),
            selection.indices().len()
        )));
    }
    let mut digest: PolicyDigest = Sha256::new()
        .chain_update([0u8; 32])
        .chain_update(TPM_CC_POLICY_PCR.to_be_bytes())
        .chain_update(marshal_selection(selection))
        .chain_update(pcr_values_digest(values))
        .finalize()
        .into();
    if with_auth_value {
        digest = Sha256::new()
            .chain_update(digest)
            .chain_update(TPM_CC_POLICY_AUTH_VALUE.to_be_bytes())
            .finalize()
            .into();
    }
    Ok(digest)
}

/// The value a SHA-256 PCR holds after extending `current` with `digest`.
pub fn extended(current: &PcrValue, digest: &PcrValue) -> PcrValue {
    Sha256::new()
        .chain_update(current)
        .chain_update(digest)
        .finalize()
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selection_marshals_as_tpml_pcr_selection() {
        let s = PcrSelection::sha256(&[0, 16]).unwrap();
        assert_eq!(
            marshal_selection(&s),
            [0, 0, 0, 1, 0x00, 0x0B, 3, 0x01, 0x00, 0x01]
        );
    }

    #[test]
    fn value_count_must_match_the_selection() {
        let s = PcrSelection::sha256(&[0, 1]).unwrap();
        assert!(pcr_policy_digest(&s, &[[0; 32]], false).is_err());
        let a = pcr_policy_digest(&s, &[[0; 32], [0; 32]], false).unwrap();
        let b = pcr_policy_digest(&s, &[[0; 32], [0; 32]], true).unwrap();
        assert_ne!(a, b);
    }
}
