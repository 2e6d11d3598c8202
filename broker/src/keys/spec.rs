//! What a key may be: names, tags, and which algorithm and purpose each backend holds.

use std::collections::BTreeMap;

use hsm_backend::{EcCurve, KeyAlgorithm, KeyLabel, KeySpec, KeyUsage};
use tpm_backend::TpmKeyKind;

use super::manager::{LABEL_PREFIX, MAX_NAME_LEN};
use crate::error::{BrokerError, Result};
use crate::store::{Algorithm, Purpose};

const MAX_TAGS: usize = 32;

/// Checks a key name: 1 to 100 characters of `[A-Za-z0-9/_.-]`, made of `/`-separated
/// segments that are neither empty nor `.` or `..`.
pub fn check_key_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/_.-".contains(&b))
        && name
            .split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != "..");
    if ok {
        Ok(())
    } else {
        Err(BrokerError::InvalidArgument(format!(
            "name: 1 to {MAX_NAME_LEN} characters of [A-Za-z0-9/_.-], in /-separated segments that are not empty, . or .."
        )))
    }
}

pub fn check_tags(tags: &BTreeMap<String, String>) -> Result<()> {
    if tags.len() > MAX_TAGS {
        return Err(BrokerError::InvalidArgument(format!(
            "tags: at most {MAX_TAGS}"
        )));
    }
    for (k, v) in tags {
        let key_ok = !k.is_empty()
            && k.len() <= 64
            && k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
        if !key_ok || v.len() > 256 || v.chars().any(char::is_control) {
            return Err(BrokerError::InvalidArgument(format!(
                "tags: {k:?}: names are 1 to 64 of [A-Za-z0-9_.-], values up to 256 printable characters"
            )));
        }
    }
    Ok(())
}

pub fn hsm_spec(algorithm: Algorithm, purpose: Purpose) -> Result<KeySpec> {
    let alg = match algorithm {
        Algorithm::EcP256 => KeyAlgorithm::Ec(EcCurve::P256),
        Algorithm::EcP384 => KeyAlgorithm::Ec(EcCurve::P384),
        Algorithm::Rsa2048 => KeyAlgorithm::Rsa(2048),
        Algorithm::Rsa3072 => KeyAlgorithm::Rsa(3072),
        Algorithm::Rsa4096 => KeyAlgorithm::Rsa(4096),
        Algorithm::Aes256 => KeyAlgorithm::Aes256,
    };
    let usage = match purpose {
        Purpose::SignVerify => KeyUsage::SignVerify,
        Purpose::EncryptDecrypt => KeyUsage::EncryptDecrypt,
    };
    KeySpec::new(alg, usage).map_err(|_| {
        BrokerError::InvalidArgument(format!(
            "purpose: {} keys cannot be used for {}",
            super::convert::algorithm_name(algorithm),
            super::convert::purpose_name(purpose)
        ))
    })
}

pub fn tpm_kind(algorithm: Algorithm, purpose: Purpose) -> Result<TpmKeyKind> {
    match (algorithm, purpose) {
        (Algorithm::EcP256, Purpose::SignVerify) => Ok(TpmKeyKind::EcP256Sign),
        (Algorithm::Rsa2048, Purpose::SignVerify) => Ok(TpmKeyKind::Rsa2048Sign),
        (Algorithm::Rsa2048, Purpose::EncryptDecrypt) => Ok(TpmKeyKind::Rsa2048Decrypt),
        _ => Err(BrokerError::Unsupported(
            "TPM backends hold EC P-256 signing keys and RSA-2048 signing or decryption keys"
                .into(),
        )),
    }
}

pub fn label(name: &str, version: u32) -> Result<KeyLabel> {
    KeyLabel::new(format!("{LABEL_PREFIX}{name}:v{version}"))
        .map_err(|e| BrokerError::InvalidArgument(e.to_string()))
}
