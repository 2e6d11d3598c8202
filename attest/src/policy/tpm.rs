//! The `[tpm]` section: which attestation keys are trusted, and what their quotes' PCRs
//! must hold.
//!
//! A quote proves something only if its AK is one the operator trusts: anyone can make a
//! P-256 key in software and sign a "quote" with any PCR values (LESSONS: "A quote is only
//! as good as its AK"). So the policy enrols AK public keys, each with a label, and a quote
//! whose AK is not enrolled is refused with [`AttestError::UntrustedAttestationKey`]. The
//! key a workload names in its request only selects among the enrolled ones.
//!
//! ```toml
//! [[tpm.attestation_keys]]
//! label = "rack1-host7"
//! spki = "<hex of the AK's SubjectPublicKeyInfo DER (ECDSA P-256)>"
//!
//! [tpm.pcrs]
//! 7 = ["<64 hex characters>"]
//! ```

use std::collections::{BTreeMap, BTreeSet};

use p256::pkcs8::{DecodePublicKey, EncodePublicKey};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::hex_list;
use crate::error::{AttestError, Result};

/// Longest AK label.
const MAX_LABEL_LEN: usize = 64;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TpmSection {
    #[serde(default)]
    attestation_keys: Vec<AttestationKeyEntry>,
    pcrs: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AttestationKeyEntry {
    label: String,
    spki: String,
}

/// An attestation key the appraisal policy trusts. Only a loaded policy makes one, so a
/// quote can only be verified against a key that configuration enrolled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrolledAttestationKey {
    label: String,
    key: p256::PublicKey,
}

impl EnrolledAttestationKey {
    /// The operator's name for this AK; it goes into the claims of quotes it signed.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The key that verifies this AK's quotes.
    pub fn verifying_key(&self) -> p256::ecdsa::VerifyingKey {
        p256::ecdsa::VerifyingKey::from(&self.key)
    }
}

/// `sha256:<hex>` of a P-256 key's canonical (uncompressed) SPKI DER: how an AK is named
/// in refusals, so an operator can tell which key to enrol.
pub fn ak_fingerprint(key: &p256::PublicKey) -> String {
    let der = key
        .to_public_key_der()
        .map(|d| d.as_bytes().to_vec())
        .unwrap_or_default();
    format!("sha256:{}", hex::encode(Sha256::digest(der)))
}

/// What a TPM quote must satisfy: an enrolled AK signed it, and its PCRs hold reference
/// values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TpmPolicy {
    /// PCR index (0 to 23) → acceptable SHA-256 values.
    pub pcrs: BTreeMap<u8, Vec<[u8; 32]>>,
    attestation_keys: Vec<EnrolledAttestationKey>,
}

impl TpmPolicy {
    /// The enrolled attestation keys.
    pub fn attestation_keys(&self) -> &[EnrolledAttestationKey] {
        &self.attestation_keys
    }

    /// The enrolled AK whose public key is `presented_spki_der` (any valid encoding of the
    /// same P-256 point).
    ///
    /// # Errors
    /// [`AttestError::Malformed`] if it is not a P-256 public key;
    /// [`AttestError::UntrustedAttestationKey`] if no enrolled AK has it.
    pub fn attestation_key(&self, presented_spki_der: &[u8]) -> Result<&EnrolledAttestationKey> {
        let presented = p256::PublicKey::from_public_key_der(presented_spki_der).map_err(|_| {
            AttestError::Malformed("the attestation key is not an ECDSA P-256 public key".into())
        })?;
        self.attestation_keys
            .iter()
            .find(|enrolled| enrolled.key == presented)
            .ok_or_else(|| AttestError::UntrustedAttestationKey(ak_fingerprint(&presented)))
    }
}

pub(super) fn compile(t: TpmSection) -> Result<TpmPolicy> {
    let pcrs = compile_pcrs(&t.pcrs)?;
    Ok(TpmPolicy {
        pcrs,
        attestation_keys: compile_keys(&t.attestation_keys)?,
    })
}

fn compile_keys(entries: &[AttestationKeyEntry]) -> Result<Vec<EnrolledAttestationKey>> {
    if entries.is_empty() {
        return Err(AttestError::Policy(
            "tpm.attestation_keys: enrol at least one attestation key; a quote is trusted only \
             through an enrolled AK"
                .into(),
        ));
    }
    let mut labels = BTreeSet::new();
    let mut keys: Vec<EnrolledAttestationKey> = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        let field = |f: &str| format!("tpm.attestation_keys[{i}].{f}");
        check_label(&entry.label).map_err(|why| AttestError::Policy(field("label") + why))?;
        if !labels.insert(entry.label.as_str()) {
            return Err(AttestError::Policy(
                field("label") + ": another attestation key has this label",
            ));
        }
        let der = hex::decode(entry.spki.trim()).map_err(|_| {
            AttestError::Policy(field("spki") + ": expected the hex of a SubjectPublicKeyInfo")
        })?;
        let key = p256::PublicKey::from_public_key_der(&der).map_err(|_| {
            AttestError::Policy(field("spki") + ": not an ECDSA P-256 public key (SPKI DER)")
        })?;
        if let Some(twin) = keys.iter().find(|k| k.key == key) {
            return Err(AttestError::Policy(format!(
                "{}: the same key is already enrolled as {:?}",
                field("spki"),
                twin.label
            )));
        }
        keys.push(EnrolledAttestationKey {
            label: entry.label.clone(),
            key,
        });
    }
    Ok(keys)
}

fn check_label(label: &str) -> std::result::Result<(), &'static str> {
    let ok = !label.is_empty()
        && label.len() <= MAX_LABEL_LEN
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(": 1 to 64 characters of [A-Za-z0-9._:/-]")
    }
}

fn compile_pcrs(pcrs: &BTreeMap<String, Vec<String>>) -> Result<BTreeMap<u8, Vec<[u8; 32]>>> {
    if pcrs.is_empty() {
        return Err(AttestError::Policy(
            "tpm.pcrs: must name at least one PCR".into(),
        ));
    }
    let mut compiled = BTreeMap::new();
    for (index, values) in pcrs {
        let field = format!("tpm.pcrs.{index}");
        let pcr: u8 = index
            .parse()
            .ok()
            .filter(|i| *i <= 23)
            .ok_or_else(|| AttestError::Policy(format!("{field}: a PCR index is 0 to 23")))?;
        if values.is_empty() {
            return Err(AttestError::Policy(format!(
                "{field}: must list at least one value"
            )));
        }
        compiled.insert(pcr, hex_list(&field, values)?);
    }
    Ok(compiled)
}

#[cfg(test)]
mod tests {
    use p256::pkcs8::EncodePublicKey;

    use super::*;
    use crate::policy::AppraisalPolicy;

    fn spki_hex(seed: u8) -> String {
        let key = p256::SecretKey::from_slice(&[seed; 32])
            .unwrap()
            .public_key();
        hex::encode(key.to_public_key_der().unwrap().as_bytes())
    }

    fn policy(keys: &str) -> Result<AppraisalPolicy> {
        AppraisalPolicy::from_toml(&format!(
            "{keys}\n[tpm.pcrs]\n16 = [\"{}\"]\n",
            "00".repeat(32)
        ))
    }

    fn enrol(label: &str, spki: &str) -> String {
        format!("[[tpm.attestation_keys]]\nlabel = \"{label}\"\nspki = \"{spki}\"\n")
    }

    #[test]
    fn enrolled_keys_are_found_by_their_public_key_and_others_are_untrusted() {
        let p = policy(&(enrol("host-a", &spki_hex(1)) + &enrol("host-b", &spki_hex(2)))).unwrap();
        let tpm = p.tpm.unwrap();
        let b = hex::decode(spki_hex(2)).unwrap();
        assert_eq!(tpm.attestation_key(&b).unwrap().label(), "host-b");
        let stranger = hex::decode(spki_hex(3)).unwrap();
        let err = tpm.attestation_key(&stranger).unwrap_err();
        assert!(
            matches!(&err, AttestError::UntrustedAttestationKey(f) if f.starts_with("sha256:")),
            "{err:?}"
        );
        assert!(matches!(
            tpm.attestation_key(b"not a key"),
            Err(AttestError::Malformed(_))
        ));
    }

    #[test]
    fn errors_name_the_attestation_key_field() {
        let a = spki_hex(1);
        let cases = [
            (String::new(), "tpm.attestation_keys"),
            (enrol("", &a), "tpm.attestation_keys[0].label"),
            (enrol("bad label", &a), "tpm.attestation_keys[0].label"),
            (enrol("x", "zz"), "tpm.attestation_keys[0].spki"),
            (enrol("x", "3000"), "tpm.attestation_keys[0].spki"),
            (
                enrol("x", &a) + &enrol("x", &spki_hex(2)),
                "tpm.attestation_keys[1].label",
            ),
            (
                enrol("x", &a) + &enrol("y", &a),
                "tpm.attestation_keys[1].spki",
            ),
            (
                enrol("x", &a).replace("spki", "spky"),
                "tpm.attestation_keys[0].spky",
            ),
        ];
        for (text, field) in cases {
            let err = policy(&text).unwrap_err().to_string();
            assert!(err.contains(field), "{field:?} not named in {err:?}");
        }
    }
}
