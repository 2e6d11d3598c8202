//! TPM 2.0 quotes: verify the signature with an enrolled AK, the binding in `extraData`,
//! and the PCR digest against the PCR values sent with the quote; then appraise the PCRs.
//!
//! [`verify`] takes an [`EnrolledAttestationKey`], which only a loaded appraisal policy
//! makes: a key that arrives in the request it vouches for cannot reach the signature
//! check (a software key can sign any "quote").

pub mod wire;

use std::collections::BTreeMap;

use p256::ecdsa::signature::hazmat::PrehashVerifier;
use sha2::{Digest, Sha256};

use crate::binding::constant_time_eq;
use crate::claims::{Claims, TeeKind};
use crate::error::{AttestError, Refusal, Result};
use crate::policy::{EnrolledAttestationKey, TpmPolicy};

/// A quote as a workload sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TpmEvidence {
    /// Marshalled `TPMS_ATTEST`.
    pub attest: Vec<u8>,
    /// Marshalled `TPMT_SIGNATURE`.
    pub signature: Vec<u8>,
    /// SHA-256 PCR values by index; exactly the quoted ones.
    pub pcr_values: BTreeMap<u8, [u8; 32]>,
}

/// A quote whose signature, binding and PCR digest verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedQuote {
    /// The parsed quote.
    pub quote: wire::QuoteInfo,
    /// The quoted PCR values.
    pub pcrs: BTreeMap<u8, [u8; 32]>,
    /// The label of the enrolled AK that signed it.
    pub attestation_key: String,
}

/// Verifies a quote with an attestation key the appraisal policy enrols (see
/// [`TpmPolicy::attestation_key`]).
///
/// # Errors
/// [`AttestError::Malformed`], [`AttestError::Signature`], [`AttestError::BindingMismatch`].
pub fn verify(
    evidence: &TpmEvidence,
    ak: &EnrolledAttestationKey,
    expected_extra_data: &[u8],
) -> Result<VerifiedQuote> {
    let quote = wire::parse_quote(&evidence.attest)?;
    let (r, s) = wire::parse_ecdsa_signature(&evidence.signature)?;
    let key = ak.verifying_key();
    let signature = p256::ecdsa::Signature::from_scalars(r, s)
        .map_err(|_| AttestError::Signature("not a valid ECDSA P-256 signature".into()))?;
    key.verify_prehash(&Sha256::digest(&evidence.attest), &signature)
        .map_err(|_| AttestError::Signature("the quote is not signed by this AK".into()))?;
    if !constant_time_eq(&quote.extra_data, expected_extra_data) {
        return Err(AttestError::BindingMismatch);
    }
    let [bank] = quote.selections.as_slice() else {
        return Err(AttestError::Malformed(
            "the quote must cover exactly one PCR bank".into(),
        ));
    };
    if bank.hash != wire::SHA256_BANK {
        return Err(AttestError::Malformed(
            "the quote must cover the SHA-256 bank".into(),
        ));
    }
    let supplied: Vec<u8> = evidence.pcr_values.keys().copied().collect();
    if supplied != bank.pcrs {
        return Err(AttestError::Malformed(format!(
            "the PCR values sent ({supplied:?}) are not the PCRs quoted ({:?})",
            bank.pcrs
        )));
    }
    let mut h = Sha256::new();
    evidence.pcr_values.values().for_each(|v| h.update(v));
    if !constant_time_eq(&h.finalize(), &quote.pcr_digest) {
        return Err(AttestError::Signature(
            "the PCR values do not match the quoted digest".into(),
        ));
    }
    Ok(VerifiedQuote {
        quote,
        pcrs: evidence.pcr_values.clone(),
        attestation_key: ak.label().to_string(),
    })
}

/// Checks every PCR the policy names against its reference values.
///
/// # Errors
/// [`Refusal::Pcr`] for the first PCR that is missing or holds another value.
pub fn appraise(verified: &VerifiedQuote, policy: &TpmPolicy) -> Result<Claims> {
    for (pcr, allowed) in &policy.pcrs {
        match verified.pcrs.get(pcr) {
            Some(value) if allowed.contains(value) => {}
            _ => return Err(Refusal::Pcr(*pcr).into()),
        }
    }
    Ok(Claims {
        tee: TeeKind::Tpm,
        insecure: false,
        measurement: None,
        tcb: None,
        debug: None,
        vmpl: None,
        platform: None,
        attestation_key: Some(verified.attestation_key.clone()),
        pcrs: verified
            .pcrs
            .iter()
            .map(|(i, v)| (*i, hex::encode(v)))
            .collect(),
    })
}
