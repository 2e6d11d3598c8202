//! What an appraisal concludes: typed claims and how long they hold.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::policy::AppraisalPolicy;

/// The kind of evidence the claims came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TeeKind {
    /// An AMD SEV-SNP guest.
    SevSnp,
    /// A TPM-measured host.
    Tpm,
    /// Development evidence with no hardware root: proves nothing.
    InsecureDev,
}

/// TCB SVNs as reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TcbClaims {
    /// PSP bootloader.
    pub bootloader: u8,
    /// PSP OS.
    pub tee: u8,
    /// SNP firmware.
    pub snp: u8,
    /// Microcode.
    pub microcode: u8,
    /// FMC (Turin and later).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fmc: Option<u8>,
}

/// Appraised claims about a workload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claims {
    /// Evidence kind.
    pub tee: TeeKind,
    /// True for development evidence: nothing here is proven.
    pub insecure: bool,
    /// Launch measurement (hex), for SNP and development evidence.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub measurement: Option<String>,
    /// Reported TCB (SNP).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcb: Option<TcbClaims>,
    /// Whether the guest allows debugging (SNP).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub debug: Option<bool>,
    /// VMPL of the requester (SNP).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vmpl: Option<u32>,
    /// Processor generation and endorsement key, like `genoa/vcek` (SNP).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    /// The label of the enrolled attestation key that signed the quote (TPM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attestation_key: Option<String>,
    /// PCR values (hex) by index (TPM).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pcrs: BTreeMap<u8, String>,
}

/// An appraisal result: claims and their lifetime.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Appraisal {
    /// The claims.
    pub claims: Claims,
    /// Seconds since the epoch when it was made.
    pub issued_at: u64,
    /// Seconds since the epoch after which it must not be used.
    pub expires_at: u64,
}

impl Appraisal {
    /// Wraps claims with a lifetime from the policy, starting `now`.
    pub fn new(claims: Claims, policy: &AppraisalPolicy, now: SystemTime) -> Appraisal {
        let issued_at = now
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs();
        Appraisal {
            claims,
            issued_at,
            expires_at: issued_at.saturating_add(policy.result_validity_seconds),
        }
    }
}
