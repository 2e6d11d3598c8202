//! How evidence commits to a challenge and to the workload's ephemeral keys.
//!
//! - SEV-SNP: `REPORT_DATA = SHA-512(nonce ‖ K)` (64 bytes).
//! - TPM quote: `extraData = SHA-256(nonce ‖ K)` (32 bytes).
//!
//! `K` is the key material of [`bound_keys`]: the SPKI DER of the ephemeral signing key,
//! exactly as the workload sends it, then, if the workload has one, the 32 bytes of its
//! X25519 KEM key (`crate::release`), to which secrets are released. A DER SPKI carries
//! its own length, so the split between the two is unambiguous. Any other byte anywhere
//! gives another digest, so a report made for one challenge or one key is useless for
//! another.

use crate::release::KemPublicKey;

use sha2::{Digest, Sha256, Sha512};

use crate::challenge::Nonce;

/// The key material the evidence binds: the signing key's SPKI DER, then the KEM key if
/// there is one.
pub fn bound_keys(spki_der: &[u8], kem: Option<&KemPublicKey>) -> Vec<u8> {
    let kem: &[u8] = kem.map_or(&[], |k| k.as_bytes());
    [spki_der, kem].concat()
}

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
