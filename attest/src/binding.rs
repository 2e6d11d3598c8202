//! How evidence commits to a challenge and to the workload's ephemeral key.
//!
//! - SEV-SNP: `REPORT_DATA = SHA-512(nonce ‖ SPKI DER of the ephemeral public key)` (64 bytes).
//! - TPM quote: `extraData = SHA-256(nonce ‖ SPKI DER of the ephemeral public key)` (32 bytes).
//!
//! The SPKI DER is the exact encoding the workload sends; the broker later wraps secrets
//! to that key. Any other byte anywhere gives another digest, so a report made for one
//! challenge or one key is useless for another.

use sha2::{Digest, Sha256, Sha512};

use crate::challenge::Nonce;

/// The 64 bytes an SNP report must carry in `REPORT_DATA`.
pub fn snp_report_data(nonce: &Nonce, ephemeral_spki_der: &[u8]) -> [u8; 64] {
    Sha512::new()
        .chain_update(nonce.as_bytes())
        .chain_update(ephemeral_spki_der)
        .finalize()
        .into()
}

/// The 32 bytes a TPM quote must carry in `extraData`.
pub fn tpm_extra_data(nonce: &Nonce, ephemeral_spki_der: &[u8]) -> [u8; 32] {
    Sha256::new()
        .chain_update(nonce.as_bytes())
        .chain_update(ephemeral_spki_der)
        .finalize()
        .into()
}

/// Compares without an early exit.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
