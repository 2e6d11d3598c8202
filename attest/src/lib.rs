//! Attestation: evidence in, appraisal out.
//!
//! Pure computation over bytes: no hardware, no transport, no backends. It verifies AMD
//! SEV-SNP reports (VCEK or VLEK, chained to AMD's roots) and TPM 2.0 quotes, checks that
//! the evidence is bound to a single-use challenge and the workload's ephemeral key, and
//! appraises the claims against a reference-value policy.
#![forbid(unsafe_code)]

mod appraiser;
pub mod binding;
pub mod challenge;
pub mod claims;
pub mod clock;
pub mod dev;
mod error;
pub mod policy;
pub mod release;
pub mod snp;
pub mod token;
pub mod tpm;

pub use appraiser::{Appraiser, Evidence};
pub use error::{AttestError, Refusal, Result};
