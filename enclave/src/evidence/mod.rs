//! Evidence sources: what proves, to the broker, what this workload runs, bound to a
//! challenge and to the workload's ephemeral key (`attest::binding`).

mod dev;
mod snp;
mod tpm;

pub use dev::DevEvidence;
pub use snp::{SnpGuest, Vmpl};
pub use tpm::{TpmQuote, create_attestation_key};

use attest::challenge::Nonce;
use keybroker_api::v1::attest_request::Evidence;

/// Collects evidence for one attestation.
pub trait EvidenceSource: Send + Sync + std::fmt::Debug {
    /// A short name for logs: `"dev"`, `"tpm"`, `"snp"`.
    fn kind(&self) -> &'static str;

    /// Evidence over `nonce` that binds `ephemeral_spki_der` (the exact SPKI DER sent in
    /// `AttestRequest.ephemeral_public_key`). May block on a device: call it from
    /// `spawn_blocking`.
    ///
    /// # Errors
    /// The device or TPM could not produce the evidence.
    fn collect(&self, nonce: &Nonce, ephemeral_spki_der: &[u8]) -> Result<Evidence, EvidenceError>;
}

/// Why evidence could not be collected.
#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    /// The source is misconfigured (the message names the setting).
    #[error("evidence configuration: {0}")]
    Config(String),
    /// The TEE device or TPM refused or failed.
    #[error("{source_kind} evidence: {reason}")]
    Device {
        /// Which source.
        source_kind: &'static str,
        /// What failed.
        reason: String,
    },
}
