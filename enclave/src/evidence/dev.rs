//! Development evidence, for machines without a TEE: the binding a real SNP report would
//! carry, and a measurement the workload merely claims.
//!
//! Nothing vouches for it, so the broker refuses it unless its appraisal policy allows
//! insecure development evidence, and the token it then issues says `insecure: true`.

use attest::binding::snp_report_data;
use attest::challenge::Nonce;
use keybroker_api::v1::DevEvidence as WireDevEvidence;
use keybroker_api::v1::attest_request::Evidence;

use super::{EvidenceError, EvidenceSource};

/// Length of a claimed launch measurement (SHA-384, as in an SNP report).
const MEASUREMENT_LEN: usize = 48;

/// Insecure development evidence: `REPORT_DATA` as for SEV-SNP
/// ([`attest::binding::snp_report_data`]) with a measurement taken from configuration.
///
/// The broker refuses it unless the appraisal policy allows insecure development
/// evidence; never configure it where a real TEE or TPM is available.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevEvidence {
    measurement: [u8; MEASUREMENT_LEN],
}

impl DevEvidence {
    /// A source claiming `measurement_hex` (96 hex characters, 48 bytes) as its launch
    /// measurement.
    ///
    /// # Errors
    /// [`EvidenceError::Config`] if the value is not 96 hex characters.
    pub fn new(measurement_hex: &str) -> Result<Self, EvidenceError> {
        let expected = 2 * MEASUREMENT_LEN;
        if measurement_hex.len() != expected {
            return Err(EvidenceError::Config(format!(
                "the development measurement has {expected} hex characters, not {}",
                measurement_hex.len()
            )));
        }
        let mut measurement = [0u8; MEASUREMENT_LEN];
        hex::decode_to_slice(measurement_hex, &mut measurement).map_err(|e| {
            EvidenceError::Config(format!("the development measurement is not hex: {e}"))
        })?;
        Ok(Self { measurement })
    }

    /// The claimed measurement.
    pub fn measurement(&self) -> &[u8; MEASUREMENT_LEN] {
        &self.measurement
    }
}

impl EvidenceSource for DevEvidence {
    fn kind(&self) -> &'static str {
        "dev"
    }

    fn collect(&self, nonce: &Nonce, ephemeral_spki_der: &[u8]) -> Result<Evidence, EvidenceError> {
        Ok(Evidence::Dev(WireDevEvidence {
            report_data: snp_report_data(nonce, ephemeral_spki_der).to_vec(),
            measurement: hex::encode(self.measurement),
        }))
    }
}
