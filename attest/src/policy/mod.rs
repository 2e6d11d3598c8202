//! Reference values and appraisal policy: a TOML file, validated at load.
//!
//! Unknown fields are refused, and every error names its field, for example
//! `snp.allowed_measurements[1]: expected 96 hex characters (48 bytes)`.
//!
//! ```toml
//! result_validity_seconds = 300
//!
//! [snp]
//! allowed_measurements = ["<96 hex characters>"]
//! min_tcb = { bootloader = 3, tee = 0, snp = 8, microcode = 115 }
//! allow_debug = false
//! allow_migration_agent = false
//! allow_smt = true
//! vmpl = 0
//!
//! [[tpm.attestation_keys]]
//! label = "rack1-host7"
//! spki = "<hex of the AK's SubjectPublicKeyInfo DER>"
//!
//! [tpm.pcrs]
//! 7 = ["<64 hex characters>"]
//!
//! [dev]
//! allow_insecure = false
//! ```

mod tpm;

use serde::Deserialize;

use crate::error::{AttestError, Result};
use tpm::TpmSection;
pub use tpm::{EnrolledAttestationKey, TpmPolicy, ak_fingerprint};

/// SNP report versions shipping firmware produces (5 from Turin).
pub const DEFAULT_REPORT_VERSIONS: [u32; 4] = [2, 3, 4, 5];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default = "default_validity")]
    result_validity_seconds: u64,
    snp: Option<SnpSection>,
    tpm: Option<TpmSection>,
    #[serde(default)]
    dev: DevSection,
}

fn default_validity() -> u64 {
    300
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SnpSection {
    allowed_measurements: Vec<String>,
    #[serde(default)]
    min_tcb: MinimumTcb,
    #[serde(default)]
    allow_debug: bool,
    #[serde(default)]
    allow_migration_agent: bool,
    #[serde(default = "yes")]
    allow_smt: bool,
    vmpl: Option<u32>,
    host_data: Option<String>,
    #[serde(default)]
    id_key_digests: Vec<String>,
    #[serde(default)]
    author_key_digests: Vec<String>,
    report_versions: Option<Vec<u32>>,
}

fn yes() -> bool {
    true
}

/// The lowest acceptable SVN of each TCB component.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MinimumTcb {
    /// PSP bootloader.
    #[serde(default)]
    pub bootloader: u8,
    /// PSP OS (TEE).
    #[serde(default)]
    pub tee: u8,
    /// SNP firmware.
    #[serde(default)]
    pub snp: u8,
    /// CPU microcode.
    #[serde(default)]
    pub microcode: u8,
    /// FMC firmware (Turin and later).
    #[serde(default)]
    pub fmc: u8,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DevSection {
    #[serde(default)]
    allow_insecure: bool,
}

/// What SNP evidence must satisfy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnpPolicy {
    /// Allowed launch measurements.
    pub allowed_measurements: Vec<[u8; 48]>,
    /// Minimum TCB.
    pub min_tcb: MinimumTcb,
    /// Whether a debuggable guest is acceptable.
    pub allow_debug: bool,
    /// Whether a guest that allows a migration agent is acceptable.
    pub allow_migration_agent: bool,
    /// Whether a guest that allows SMT is acceptable.
    pub allow_smt: bool,
    /// Required VMPL, if any.
    pub vmpl: Option<u32>,
    /// Required HOST_DATA, if any.
    pub host_data: Option<[u8; 32]>,
    /// Allowed ID key digests (empty: any).
    pub id_key_digests: Vec<[u8; 48]>,
    /// Allowed author key digests (empty: any).
    pub author_key_digests: Vec<[u8; 48]>,
    /// Accepted report versions.
    pub report_versions: Vec<u32>,
}

/// A validated appraisal policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppraisalPolicy {
    /// How long an appraisal result stays valid.
    pub result_validity_seconds: u64,
    /// SNP rules; `None` refuses SNP evidence.
    pub snp: Option<SnpPolicy>,
    /// TPM rules; `None` refuses TPM evidence.
    pub tpm: Option<TpmPolicy>,
    /// Whether insecure development evidence is accepted.
    pub allow_insecure_dev: bool,
}

fn fixed_hex<const N: usize>(field: &str, text: &str) -> Result<[u8; N]> {
    let bad = || {
        AttestError::Policy(format!(
            "{field}: expected {} hex characters ({N} bytes)",
            2 * N
        ))
    };
    let bytes = hex::decode(text).map_err(|_| bad())?;
    <[u8; N]>::try_from(bytes.as_slice()).map_err(|_| bad())
}

pub(crate) fn hex_list<const N: usize>(field: &str, items: &[String]) -> Result<Vec<[u8; N]>> {
    items
        .iter()
        .enumerate()
        .map(|(i, text)| fixed_hex::<N>(&format!("{field}[{i}]"), text))
        .collect()
}

impl AppraisalPolicy {
    /// Parses and validates a policy file's text.
    ///
    /// # Errors
    /// [`AttestError::Policy`] naming the field and the reason.
    pub fn from_toml(text: &str) -> Result<AppraisalPolicy> {
        let file: PolicyFile = serde_path_to_error::deserialize(toml::Deserializer::new(text))
            .map_err(|e| {
                let path = e.path().to_string();
                let inner = e.into_inner();
                let field = if path == "." {
                    String::new()
                } else {
                    format!("{path}: ")
                };
                AttestError::Policy(format!("{field}{}{}", inner.message(), location(&inner)))
            })?;
        if file.result_validity_seconds == 0 || file.result_validity_seconds > 86_400 {
            return Err(AttestError::Policy(
                "result_validity_seconds: must be 1 to 86400".into(),
            ));
        }
        let snp = file.snp.map(compile_snp).transpose()?;
        let tpm = file.tpm.map(tpm::compile).transpose()?;
        if snp.is_none() && tpm.is_none() && !file.dev.allow_insecure {
            return Err(AttestError::Policy(
                "the policy accepts no evidence: add [snp], [tpm] or [dev] allow_insecure".into(),
            ));
        }
        Ok(AppraisalPolicy {
            result_validity_seconds: file.result_validity_seconds,
            snp,
            tpm,
            allow_insecure_dev: file.dev.allow_insecure,
        })
    }
}

fn location(e: &toml::de::Error) -> String {
    e.span()
        .map(|s| format!(" (at byte {})", s.start))
        .unwrap_or_default()
}

fn compile_snp(s: SnpSection) -> Result<SnpPolicy> {
    if s.allowed_measurements.is_empty() {
        return Err(AttestError::Policy(
            "snp.allowed_measurements: must name at least one measurement".into(),
        ));
    }
    let report_versions = s
        .report_versions
        .unwrap_or_else(|| DEFAULT_REPORT_VERSIONS.to_vec());
    if let Some(v) = report_versions
        .iter()
        .find(|v| !DEFAULT_REPORT_VERSIONS.contains(v))
    {
        return Err(AttestError::Policy(format!(
            "snp.report_versions: {v} is not a known SNP report version (2 to 5)"
        )));
    }
    if s.vmpl.is_some_and(|v| v > 3) {
        return Err(AttestError::Policy("snp.vmpl: must be 0 to 3".into()));
    }
    Ok(SnpPolicy {
        allowed_measurements: hex_list("snp.allowed_measurements", &s.allowed_measurements)?,
        min_tcb: s.min_tcb,
        allow_debug: s.allow_debug,
        allow_migration_agent: s.allow_migration_agent,
        allow_smt: s.allow_smt,
        vmpl: s.vmpl,
        host_data: s
            .host_data
            .map(|h| fixed_hex("snp.host_data", &h))
            .transpose()?,
        id_key_digests: hex_list("snp.id_key_digests", &s.id_key_digests)?,
        author_key_digests: hex_list("snp.author_key_digests", &s.author_key_digests)?,
        report_versions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: &str = "aa";

    fn measurement() -> String {
        M.repeat(48)
    }

    #[test]
    fn a_full_policy_loads() {
        use p256::pkcs8::EncodePublicKey;
        let ak = p256::SecretKey::from_slice(&[1; 32]).unwrap().public_key();
        let spki = ak.to_public_key_der().unwrap();
        let text = format!(
            "result_validity_seconds = 120\n[snp]\nallowed_measurements = [\"{}\"]\nmin_tcb = {{ bootloader = 3, snp = 8 }}\nvmpl = 0\n[[tpm.attestation_keys]]\nlabel = \"host-a\"\nspki = \"{}\"\n[tpm.pcrs]\n7 = [\"{}\"]\n[dev]\nallow_insecure = true\n",
            measurement(),
            hex::encode(spki.as_bytes()),
            "bb".repeat(32)
        );
        let p = AppraisalPolicy::from_toml(&text).unwrap();
        assert_eq!(p.result_validity_seconds, 120);
        let snp = p.snp.unwrap();
        assert_eq!(snp.min_tcb.snp, 8);
        assert!(!snp.allow_debug && snp.allow_smt);
        assert_eq!(snp.report_versions, vec![2, 3, 4, 5]);
        let tpm = p.tpm.unwrap();
        assert_eq!(tpm.pcrs[&7], vec![[0xbb; 32]]);
        assert_eq!(
            tpm.attestation_key(spki.as_bytes()).unwrap().label(),
            "host-a"
        );
        assert!(p.allow_insecure_dev);
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (
                "[snp]\nallowed_measurements = [\"zz\"]\n",
                "snp.allowed_measurements[0]",
            ),
            (
                &format!(
                    "[snp]\nallowed_measurements = [\"{}\"]\nbogus = 1\n",
                    measurement()
                ),
                "bogus",
            ),
            (
                &format!(
                    "[snp]\nallowed_measurements = [\"{}\"]\nmin_tcb = {{ snp = 999 }}\n",
                    measurement()
                ),
                "snp",
            ),
            ("[tpm.pcrs]\n24 = [\"00\"]\n", "tpm.pcrs.24"),
            (
                &format!("[tpm.pcrs]\n7 = [\"{}\"]\n", "0".repeat(63)),
                "tpm.pcrs.7[0]",
            ),
            (
                "result_validity_seconds = 0\n[dev]\nallow_insecure = true\n",
                "result_validity_seconds",
            ),
            ("", "accepts no evidence"),
            (
                &format!(
                    "[snp]\nallowed_measurements = [\"{}\"]\nreport_versions = [1]\n",
                    measurement()
                ),
                "snp.report_versions",
            ),
            (
                "[snp]\nallowed_measurements = []\n",
                "snp.allowed_measurements",
            ),
        ];
        for (text, field) in cases {
            let err = AppraisalPolicy::from_toml(text).unwrap_err().to_string();
            assert!(err.contains(field), "{field:?} not named in {err:?}");
        }
    }
}
