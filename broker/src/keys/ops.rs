//! Cryptographic operations on one key version, on whichever backend holds it.
//!
//! HSM calls block (PKCS#11), so they run on tokio's blocking pool; TPM calls are queued
//! to the TPM worker and awaited. Public-key operations (verify, RSA encryption for TPM
//! keys) run in software on the exported public key: nothing secret is involved.

use std::sync::Arc;

use hsm_backend::{
    AeadCiphertext, Digest, GCM_NONCE_LEN, HashAlgorithm, KeyId, OaepHash, SignatureAlgorithm,
};
use keybroker_api::v1 as pb;
use prost::Message;
use secrecy::{ExposeSecret, SecretSlice};
use tpm_backend::{TpmBlob, TpmSignScheme};

use crate::backends::{Backend, NamedBackend, on_hsm};
use crate::error::{BrokerError, Result};
use crate::store::{Algorithm, HardwareHandle, KeyRecord, VersionRecord};

/// Largest plaintext `Encrypt` accepts for AES keys.
pub const MAX_PLAINTEXT: usize = 64 * 1024;
/// Length of a generated data key.
pub const DATA_KEY_LEN: usize = 32;

/// Which signature scheme a request asked for, resolved against the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Ecdsa,
    RsaPkcs1v15,
    RsaPss,
}

impl Scheme {
    pub fn resolve(algorithm: Algorithm, wire: i32) -> Result<Scheme> {
        use pb::SignatureScheme as W;
        let rsa = !matches!(algorithm, Algorithm::EcP256 | Algorithm::EcP384);
        match (W::try_from(wire), rsa) {
            (Ok(W::Default), false) | (Ok(W::Ecdsa), false) => Ok(Scheme::Ecdsa),
            (Ok(W::Default), true) | (Ok(W::RsaPkcs1V15), true) => Ok(Scheme::RsaPkcs1v15),
            (Ok(W::RsaPss), true) => Ok(Scheme::RsaPss),
            _ => Err(BrokerError::InvalidArgument(
                "scheme: not a signature scheme for this key's algorithm".into(),
            )),
        }
    }
}

/// The hash a key signs with.
pub fn hash_for(algorithm: Algorithm) -> HashAlgorithm {
    match algorithm {
        Algorithm::EcP384 => HashAlgorithm::Sha384,
        _ => HashAlgorithm::Sha256,
    }
}

/// The digest to sign or verify: the caller's, length-checked, or the hash of its message.
pub fn digest_of(
    algorithm: Algorithm,
    message: Option<&[u8]>,
    digest: Option<&[u8]>,
) -> Result<Digest> {
    let hash = hash_for(algorithm);
    match (message, digest) {
        (Some(m), None) => Ok(Digest::of(hash, m)),
        (None, Some(d)) => Digest::new(hash, d.to_vec()).map_err(|_| {
            BrokerError::InvalidArgument(format!(
                "digest: this key signs {} digests of {} bytes",
                match hash {
                    HashAlgorithm::Sha384 => "SHA-384",
                    _ => "SHA-256",
                },
                hash.output_len()
            ))
        }),
        _ => Err(BrokerError::InvalidArgument(
            "give a message or a digest".into(),
        )),
    }
}

fn hsm_id(version: &VersionRecord) -> Result<KeyId> {
    match &version.handle {
        HardwareHandle::Hsm { object_id } => KeyId::new(object_id.clone())
            .map_err(|e| BrokerError::Internal(format!("stored HSM id: {e}"))),
        HardwareHandle::Tpm { .. } => Err(BrokerError::Internal("TPM handle on an HSM".into())),
    }
}

fn tpm_blob(version: &VersionRecord) -> Result<TpmBlob> {
    match &version.handle {
        HardwareHandle::Tpm { blob } => TpmBlob::from_bytes(blob)
            .map_err(|e| BrokerError::Internal(format!("stored TPM blob: {e}"))),
        HardwareHandle::Hsm { .. } => Err(BrokerError::Internal("HSM handle on a TPM".into())),
    }
}

/// Signs digests with one version. One HSM session checkout per digest; the batch runs
/// in one blocking task so it pays the thread hand-off once.
pub async fn sign(
    backend: Arc<NamedBackend>,
    key: &KeyRecord,
    version: &VersionRecord,
    scheme: Scheme,
    digests: Vec<Digest>,
) -> Result<Vec<Vec<u8>>> {
    match &backend.backend {
        Backend::Hsm(_) => {
            let id = hsm_id(version)?;
            let alg = match (key.algorithm, scheme) {
                (Algorithm::EcP256, _) => SignatureAlgorithm::EcdsaP256Sha256,
                (Algorithm::EcP384, _) => SignatureAlgorithm::EcdsaP384Sha384,
                (_, Scheme::RsaPss) => SignatureAlgorithm::RsaPss(HashAlgorithm::Sha256),
                _ => SignatureAlgorithm::RsaPkcs1v15(HashAlgorithm::Sha256),
            };
            on_hsm(backend, move |hsm| {
                digests
                    .iter()
                    .map(|d| hsm.sign(&id, alg, d).map_err(BrokerError::from))
                    .collect()
            })
            .await
        }
        Backend::Tpm(tpm) => {
            let blob = tpm_blob(version)?;
            let tss = match scheme {
                Scheme::Ecdsa => TpmSignScheme::EcdsaSha256,
                Scheme::RsaPkcs1v15 => TpmSignScheme::RsaPkcs1v15Sha256,
                Scheme::RsaPss => TpmSignScheme::RsaPssSha256,
            };
            let mut out = Vec::with_capacity(digests.len());
            for d in &digests {
                let bytes: [u8; 32] = d.as_bytes().try_into().map_err(|_| {
                    BrokerError::InvalidArgument("TPM keys sign SHA-256 digests".into())
                })?;
                out.push(tpm.sign(&blob, tss, bytes).await?);
            }
            Ok(out)
        }
    }
}

/// The version's public key, SubjectPublicKeyInfo DER.
pub async fn public_key(backend: Arc<NamedBackend>, version: &VersionRecord) -> Result<Vec<u8>> {
    match &backend.backend {
        Backend::Hsm(_) => {
            let id = hsm_id(version)?;
            on_hsm(backend, move |hsm| {
                Ok(hsm.public_key(&id)?.as_der().to_vec())
            })
            .await
        }
        Backend::Tpm(_) => Ok(tpm_blob(version)?.public_key_der()?),
    }
}

/// Verifies a signature in software against the version's public key.
pub fn verify(
    algorithm: Algorithm,
    spki_der: &[u8],
    scheme: Scheme,
    digest: &Digest,
    signature: &[u8],
) -> Result<bool> {
    use p256::pkcs8::DecodePublicKey;
    use signature_check::*;
    let bad_key = |e: String| BrokerError::Internal(format!("public key: {e}"));
    Ok(match algorithm {
        Algorithm::EcP256 => {
            let key = p256::ecdsa::VerifyingKey::from_public_key_der(spki_der)
                .map_err(|e| bad_key(e.to_string()))?;
            ecdsa_p256(&key, digest.as_bytes(), signature)
        }
        Algorithm::EcP384 => {
            let key = p384::ecdsa::VerifyingKey::from_public_key_der(spki_der)
                .map_err(|e| bad_key(e.to_string()))?;
            ecdsa_p384(&key, digest.as_bytes(), signature)
        }
        Algorithm::Aes256 => {
            return Err(BrokerError::FailedPrecondition(
                "AES keys do not sign".into(),
            ));
        }
        _ => {
            let key = rsa::RsaPublicKey::from_public_key_der(spki_der)
                .map_err(|e| bad_key(e.to_string()))?;
            rsa_sha256(&key, scheme == Scheme::RsaPss, digest.as_bytes(), signature)
        }
    })
}

mod signature_check {
    use p256::ecdsa::signature::hazmat::PrehashVerifier;

    pub fn ecdsa_p256(key: &p256::ecdsa::VerifyingKey, digest: &[u8], sig: &[u8]) -> bool {
        p256::ecdsa::Signature::from_der(sig).is_ok_and(|s| key.verify_prehash(digest, &s).is_ok())
    }

    pub fn ecdsa_p384(key: &p384::ecdsa::VerifyingKey, digest: &[u8], sig: &[u8]) -> bool {
        p384::ecdsa::Signature::from_der(sig).is_ok_and(|s| key.verify_prehash(digest, &s).is_ok())
    }

    pub fn rsa_sha256(key: &rsa::RsaPublicKey, pss: bool, digest: &[u8], sig: &[u8]) -> bool {
        let result = if pss {
            key.verify(rsa::Pss::new::<sha2::Sha256>(), digest, sig)
        } else {
            key.verify(rsa::Pkcs1v15Sign::new::<sha2::Sha256>(), digest, sig)
        };
        result.is_ok()
    }
}

/// Encrypts under one version and returns the self-describing envelope.
pub async fn encrypt(
    backend: Arc<NamedBackend>,
    key: &KeyRecord,
    version: &VersionRecord,
    plaintext: SecretSlice<u8>,
    aad: Vec<u8>,
) -> Result<Vec<u8>> {
    let (iv, data) = match (&backend.backend, key.algorithm) {
        (Backend::Hsm(_), Algorithm::Aes256) => {
            if plaintext.expose_secret().len() > MAX_PLAINTEXT {
                return Err(BrokerError::InvalidArgument(format!(
                    "plaintext: at most {MAX_PLAINTEXT} bytes; encrypt a data key instead"
                )));
            }
            let id = hsm_id(version)?;
            let sealed = on_hsm(backend, move |hsm| {
                Ok(hsm.aes_gcm_encrypt(&id, plaintext.expose_secret(), &aad)?)
            })
            .await?;
            (sealed.nonce.to_vec(), sealed.ciphertext)
        }
        (_, Algorithm::Aes256) => {
            return Err(BrokerError::Unsupported(
                "AES keys live in HSMs only".into(),
            ));
        }
        (_, _) if !aad.is_empty() => {
            return Err(BrokerError::InvalidArgument(
                "aad: RSA-OAEP takes no associated data".into(),
            ));
        }
        (Backend::Hsm(hsm), _) => {
            let hash = oaep_hash(hsm);
            let id = hsm_id(version)?;
            let data = on_hsm(backend, move |hsm| {
                Ok(hsm.rsa_encrypt(&id, hash, plaintext.expose_secret())?)
            })
            .await?;
            (Vec::new(), data)
        }
        (Backend::Tpm(_), _) => {
            use rsa::pkcs8::DecodePublicKey;
            let spki = tpm_blob(version)?.public_key_der()?;
            let public = rsa::RsaPublicKey::from_public_key_der(&spki)
                .map_err(|e| BrokerError::Internal(format!("TPM public key: {e}")))?;
            let data = public
                .encrypt(
                    &mut rand::rngs::OsRng,
                    rsa::Oaep::new::<sha2::Sha256>(),
                    plaintext.expose_secret(),
                )
                .map_err(|_| {
                    BrokerError::InvalidArgument("plaintext: too long for RSA-OAEP".into())
                })?;
            (Vec::new(), data)
        }
    };
    Ok(pb::Ciphertext {
        key: key.name.clone(),
        version: version.version,
        iv,
        data,
    }
    .encode_to_vec())
}

/// Parses an envelope made by [`encrypt`].
pub fn parse_envelope(bytes: &[u8]) -> Result<pb::Ciphertext> {
    pb::Ciphertext::decode(bytes)
        .map_err(|_| BrokerError::InvalidArgument("ciphertext: not a Keybroker ciphertext".into()))
}

/// Decrypts an envelope's payload with the version it names.
pub async fn decrypt(
    backend: Arc<NamedBackend>,
    key: &KeyRecord,
    version: &VersionRecord,
    envelope: pb::Ciphertext,
    aad: Vec<u8>,
) -> Result<SecretSlice<u8>> {
    match (&backend.backend, key.algorithm) {
        (Backend::Hsm(_), Algorithm::Aes256) => {
            let nonce: [u8; GCM_NONCE_LEN] = envelope.iv.as_slice().try_into().map_err(|_| {
                BrokerError::IntegrityFailure("ciphertext: the nonce is malformed".into())
            })?;
            let id = hsm_id(version)?;
            on_hsm(backend, move |hsm| {
                let sealed = AeadCiphertext {
                    nonce,
                    ciphertext: envelope.data,
                };
                Ok(hsm.aes_gcm_decrypt(&id, &sealed, &aad)?)
            })
            .await
        }
        // As `encrypt` refuses it: associated data that is silently ignored would let a
        // caller believe the ciphertext is bound to it.
        (_, _) if !aad.is_empty() => Err(BrokerError::InvalidArgument(
            "aad: RSA-OAEP takes no associated data".into(),
        )),
        (Backend::Hsm(hsm), _) => {
            let hash = oaep_hash(hsm);
            let id = hsm_id(version)?;
            on_hsm(backend, move |hsm| {
                hsm.rsa_decrypt(&id, hash, &envelope.data)
                    .map_err(|e| match e {
                        hsm_backend::HsmError::InvalidInput(_)
                        | hsm_backend::HsmError::Pkcs11 { .. } => {
                            BrokerError::IntegrityFailure("decryption failed".into())
                        }
                        other => other.into(),
                    })
            })
            .await
        }
        (Backend::Tpm(tpm), _) => {
            let blob = tpm_blob(version)?;
            tpm.rsa_decrypt(&blob, &envelope.data)
                .await
                .map_err(|e| match e {
                    tpm_backend::TpmError::InvalidInput(_) | tpm_backend::TpmError::Tpm { .. } => {
                        BrokerError::IntegrityFailure("decryption failed".into())
                    }
                    other => other.into(),
                })
        }
    }
}

/// RSA-OAEP with SHA-256, unless the token can only do SHA-1 (SoftHSM 2.6).
fn oaep_hash(hsm: &hsm_backend::HsmBackend) -> OaepHash {
    if hsm.token().quirks().oaep_sha1_only {
        OaepHash::Sha1
    } else {
        OaepHash::Sha256
    }
}

/// 32 random bytes from the hardware (the HSM's generator; the OS for TPM-held keys).
pub async fn random_data_key(backend: Arc<NamedBackend>) -> Result<SecretSlice<u8>> {
    match &backend.backend {
        Backend::Hsm(_) => on_hsm(backend, move |hsm| Ok(hsm.random(DATA_KEY_LEN)?)).await,
        Backend::Tpm(_) => {
            use rand::RngCore;
            let mut bytes = zeroize::Zeroizing::new(vec![0u8; DATA_KEY_LEN]);
            rand::rngs::OsRng.fill_bytes(&mut bytes);
            Ok(SecretSlice::from(bytes.to_vec()))
        }
    }
}
