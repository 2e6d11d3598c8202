//! The one entry point the broker calls: redeem the challenge, check the binding, verify
//! the evidence, appraise it, and stamp the result with its lifetime.
//!
//! The nonce is redeemed first, so a failed attempt burns it too: a caller cannot retry
//! variations of evidence against one challenge.

use std::sync::Arc;

use crate::binding::{snp_report_data, tpm_extra_data};
use crate::challenge::{ChallengeStore, Nonce};
use crate::claims::Appraisal;
use crate::clock::Clock;
use crate::dev::{self, InsecureDevEvidence};
use crate::error::{Refusal, Result};
use crate::policy::AppraisalPolicy;
use crate::snp::{self, SnpEvidence, SnpVerifier};
use crate::tpm::{self, TpmEvidence};

/// Evidence of any supported kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Evidence {
    /// An SEV-SNP report.
    Snp(SnpEvidence),
    /// A TPM quote and the AK (SPKI DER) the workload says signed it.
    Tpm {
        /// The quote.
        quote: TpmEvidence,
        /// Selects among the AKs the policy enrols; any other key is refused.
        ak_spki_der: Vec<u8>,
    },
    /// Insecure development evidence.
    InsecureDev(InsecureDevEvidence),
}

/// Challenges, verifiers and policy together.
#[derive(Debug)]
pub struct Appraiser {
    /// Outstanding challenges.
    pub challenges: ChallengeStore,
    snp: SnpVerifier,
    policy: AppraisalPolicy,
    clock: Arc<dyn Clock>,
}

impl Appraiser {
    /// Assembles an appraiser.
    pub fn new(
        challenges: ChallengeStore,
        snp: SnpVerifier,
        policy: AppraisalPolicy,
        clock: Arc<dyn Clock>,
    ) -> Appraiser {
        Appraiser {
            challenges,
            snp,
            policy,
            clock,
        }
    }

    /// The appraisal policy.
    pub fn policy(&self) -> &AppraisalPolicy {
        &self.policy
    }

    /// Appraises evidence that `owner` made for its challenge `nonce` and its ephemeral
    /// key.
    ///
    /// # Errors
    /// A challenge error (including a challenge issued to another identity), a
    /// verification error, or a refusal; each precise.
    pub fn appraise(
        &self,
        owner: &str,
        evidence: &Evidence,
        nonce: &Nonce,
        ephemeral_spki_der: &[u8],
    ) -> Result<Appraisal> {
        self.challenges.redeem(nonce, owner)?;
        let claims = match evidence {
            Evidence::Snp(snp_evidence) => {
                let policy = self
                    .policy
                    .snp
                    .as_ref()
                    .ok_or(Refusal::EvidenceKind("SEV-SNP"))?;
                let verified = self
                    .snp
                    .verify(snp_evidence, &snp_report_data(nonce, ephemeral_spki_der))?;
                snp::appraise(&verified, policy)?
            }
            Evidence::Tpm { quote, ak_spki_der } => {
                let policy = self
                    .policy
                    .tpm
                    .as_ref()
                    .ok_or(Refusal::EvidenceKind("TPM"))?;
                let ak = policy.attestation_key(ak_spki_der)?;
                let verified = tpm::verify(quote, ak, &tpm_extra_data(nonce, ephemeral_spki_der))?;
                tpm::appraise(&verified, policy)?
            }
            Evidence::InsecureDev(dev_evidence) => dev::appraise(
                dev_evidence,
                &snp_report_data(nonce, ephemeral_spki_der),
                self.policy.allow_insecure_dev,
            )?,
        };
        Ok(Appraisal::new(claims, &self.policy, self.clock.now()))
    }
}
