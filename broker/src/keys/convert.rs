//! Between the wire enums of `keybroker.v1` and the store's types.

use keybroker_api::v1 as pb;

use crate::error::{BrokerError, Result};
use prost::Message as _;

use crate::store::{
    Algorithm, KeyPage, KeyRecord, KeyState, Purpose, VersionState, page_token_after,
};

pub fn algorithm_from_wire(value: i32) -> Result<Algorithm> {
    use pb::KeyAlgorithm as W;
    Ok(match W::try_from(value) {
        Ok(W::EcP256) => Algorithm::EcP256,
        Ok(W::EcP384) => Algorithm::EcP384,
        Ok(W::Rsa2048) => Algorithm::Rsa2048,
        Ok(W::Rsa3072) => Algorithm::Rsa3072,
        Ok(W::Rsa4096) => Algorithm::Rsa4096,
        Ok(W::Aes256) => Algorithm::Aes256,
        Ok(W::Unspecified) | Err(_) => {
            return Err(BrokerError::InvalidArgument(format!(
                "algorithm: {value} is not a supported key algorithm"
            )));
        }
    })
}

pub fn purpose_from_wire(value: i32) -> Result<Purpose> {
    match pb::KeyPurpose::try_from(value) {
        Ok(pb::KeyPurpose::SignVerify) => Ok(Purpose::SignVerify),
        Ok(pb::KeyPurpose::EncryptDecrypt) => Ok(Purpose::EncryptDecrypt),
        Ok(pb::KeyPurpose::WrapUnwrap) => Ok(Purpose::WrapUnwrap),
        _ => Err(BrokerError::InvalidArgument(format!(
            "purpose: {value} is not SIGN_VERIFY, ENCRYPT_DECRYPT or WRAP_UNWRAP"
        ))),
    }
}

/// Stable names, used in policies and tables.
pub fn algorithm_name(a: Algorithm) -> &'static str {
    match a {
        Algorithm::EcP256 => "ec-p256",
        Algorithm::EcP384 => "ec-p384",
        Algorithm::Rsa2048 => "rsa-2048",
        Algorithm::Rsa3072 => "rsa-3072",
        Algorithm::Rsa4096 => "rsa-4096",
        Algorithm::Aes256 => "aes-256",
    }
}

pub fn purpose_name(p: Purpose) -> &'static str {
    match p {
        Purpose::SignVerify => "sign-verify",
        Purpose::EncryptDecrypt => "encrypt-decrypt",
        Purpose::WrapUnwrap => "wrap-unwrap",
    }
}

pub fn state_name(s: KeyState) -> &'static str {
    match s {
        KeyState::Creating => "creating",
        KeyState::Enabled => "enabled",
        KeyState::Disabled => "disabled",
        KeyState::Revoked => "revoked",
        KeyState::PendingDestruction => "pending-destruction",
        KeyState::Destroyed => "destroyed",
    }
}

fn algorithm_to_wire(a: Algorithm) -> pb::KeyAlgorithm {
    match a {
        Algorithm::EcP256 => pb::KeyAlgorithm::EcP256,
        Algorithm::EcP384 => pb::KeyAlgorithm::EcP384,
        Algorithm::Rsa2048 => pb::KeyAlgorithm::Rsa2048,
        Algorithm::Rsa3072 => pb::KeyAlgorithm::Rsa3072,
        Algorithm::Rsa4096 => pb::KeyAlgorithm::Rsa4096,
        Algorithm::Aes256 => pb::KeyAlgorithm::Aes256,
    }
}

fn state_to_wire(s: KeyState) -> pb::KeyState {
    match s {
        KeyState::Creating | KeyState::Enabled => pb::KeyState::Enabled,
        KeyState::Disabled => pb::KeyState::Disabled,
        KeyState::Revoked => pb::KeyState::Revoked,
        KeyState::PendingDestruction => pb::KeyState::PendingDestruction,
        KeyState::Destroyed => pb::KeyState::Destroyed,
    }
}

/// The wire form of a key.
pub fn key_to_wire(k: &KeyRecord) -> pb::Key {
    let versions = k
        .versions
        .iter()
        .filter(|v| v.state != VersionState::Creating)
        .map(|v| pb::KeyVersion {
            version: v.version,
            state: match v.state {
                VersionState::Retired => pb::KeyVersionState::Retired,
                _ if v.version == k.primary_version => pb::KeyVersionState::Primary,
                _ => pb::KeyVersionState::Active,
            } as i32,
            created_at: v.created_at,
        })
        .collect();
    pb::Key {
        name: k.name.clone(),
        algorithm: algorithm_to_wire(k.algorithm) as i32,
        purpose: match k.purpose {
            Purpose::SignVerify => pb::KeyPurpose::SignVerify,
            Purpose::EncryptDecrypt => pb::KeyPurpose::EncryptDecrypt,
            Purpose::WrapUnwrap => pb::KeyPurpose::WrapUnwrap,
        } as i32,
        backend: k.backend.clone(),
        state: state_to_wire(k.state) as i32,
        primary_version: k.primary_version,
        versions,
        created_at: k.created_at,
        destroy_after: k.destroy_after.unwrap_or(0),
        tags: k.tags.clone().into_iter().collect(),
        releasable: k.releasable,
    }
}

/// A public key's SubjectPublicKeyInfo as PEM.
pub fn spki_pem(der: &[u8]) -> Result<String> {
    use der::pem::LineEnding;
    der::pem::encode_string("PUBLIC KEY", LineEnding::LF, der)
        .map_err(|e| BrokerError::Internal(format!("PEM: {e}")))
}

/// A `SignRequest`'s input as (message, digest).
pub fn sign_input(input: Option<pb::sign_request::Input>) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
    match input {
        Some(pb::sign_request::Input::Message(m)) => (Some(m), None),
        Some(pb::sign_request::Input::Digest(d)) => (None, Some(d)),
        None => (None, None),
    }
}

/// A page of keys as a `ListKeysResponse` of at most `budget` bytes of keys. A page of
/// many keys with many tags or versions can be larger than the server may send: it ends
/// early, and the page token continues after its last key.
pub fn page_to_wire(page: &KeyPage, budget: usize) -> pb::ListKeysResponse {
    let (mut keys, mut used) = (Vec::new(), 0usize);
    for record in &page.keys {
        let key = key_to_wire(record);
        let framed = key.encoded_len();
        let framed = framed + 1 + prost::length_delimiter_len(framed);
        if !keys.is_empty() && used.saturating_add(framed) > budget {
            break;
        }
        used = used.saturating_add(framed);
        keys.push(key);
    }
    let next_page_token = match keys.last() {
        Some(last) if keys.len() < page.keys.len() => page_token_after(&last.name),
        _ => page.next_page_token(),
    };
    pb::ListKeysResponse {
        keys,
        next_page_token,
    }
}
