//! Cryptographic operations on one key version, on whichever backend holds it, and the
//! checks that do not depend on the hardware, made here once for every backend: the
//! digest's length, `aad` on RSA keys, the plaintext's size, the envelope's format.
//! Verification runs in software on the version's public key: nothing secret is involved.

use std::sync::Arc;

use hsm_backend::{Digest, HashAlgorithm};
use keybroker_api::v1 as pb;
use prost::Message;
use secrecy::{ExposeSecret, SecretSlice};

pub use crate::backends::Scheme;
use crate::backends::{KeyRef, NamedBackend, Sealed};
use crate::error::{BrokerError, Result};
use crate::store::{Algorithm, KeyRecord, VersionRecord};

/// Largest plaintext `Encrypt` accepts for AES keys.
pub const MAX_PLAINTEXT: usize = 64 * 1024;
/// Length of a generated data key.
pub const DATA_KEY_LEN: usize = 32;

impl Scheme {
    /// The scheme a request names (`DEFAULT`: ECDSA or PKCS#1 v1.5), if it fits the key.
    ///
    /// # Errors
    /// A scheme for another algorithm, or not a scheme.
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

/// Signs digests with one version.
pub async fn sign(
    backend: Arc<NamedBackend>,
    key: &KeyRecord,
    version: &VersionRecord,
    scheme: Scheme,
    digests: Vec<Digest>,
) -> Result<Vec<Vec<u8>>> {
    let named = KeyRef::of(key, version);
    let signed = backend.backend.sign(named, scheme, digests).await;
    signed.map_err(|e| in_version(e, key, version, &backend))
}

/// The version's public key, SubjectPublicKeyInfo DER.
pub async fn public_key(
    backend: Arc<NamedBackend>,
    key: &KeyRecord,
    version: &VersionRecord,
) -> Result<Vec<u8>> {
    let spki = backend.backend.public_key(&version.handle).await;
    spki.map_err(|e| in_version(e, key, version, &backend))
}

/// A backend's error, told in terms of the key: a missing object is the key version's
/// problem (`FAILED_PRECONDITION`, naming both), not an internal error.
pub(crate) fn in_version(
    error: BrokerError,
    key: &KeyRecord,
    version: &VersionRecord,
    backend: &NamedBackend,
) -> BrokerError {
    match error {
        BrokerError::ObjectMissing(id) => {
            tracing::error!(key = %key.name, version = version.version, backend = %backend.name, object = %id, "the key's hardware object is missing");
            BrokerError::FailedPrecondition(format!(
                "key {:?} version {}: its object is missing from backend {:?}, or no longer \
                 loads there (restore the hardware, or rotate and retire this version)",
                key.name, version.version, backend.name
            ))
        }
        other => other,
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

/// Refuses associated data on RSA-OAEP, for encryption and decryption and every backend
/// alike: data that is silently ignored would let a caller believe the ciphertext is
/// bound to it.
fn refuse_aad_without_aead(algorithm: Algorithm, aad: &[u8]) -> Result<()> {
    if algorithm != Algorithm::Aes256 && !aad.is_empty() {
        return Err(BrokerError::InvalidArgument(
            "aad: RSA-OAEP takes no associated data".into(),
        ));
    }
    Ok(())
}

/// Encrypts under one version and returns the self-describing envelope: the sealed-data
/// format for AES keys ([`super::envelope`]), the protobuf `Ciphertext` for RSA-OAEP.
pub async fn encrypt(
    backend: Arc<NamedBackend>,
    key: &KeyRecord,
    version: &VersionRecord,
    plaintext: SecretSlice<u8>,
    aad: Vec<u8>,
) -> Result<Vec<u8>> {
    refuse_aad_without_aead(key.algorithm, &aad)?;
    if key.algorithm == Algorithm::Aes256 && plaintext.expose_secret().len() > MAX_PLAINTEXT {
        return Err(BrokerError::InvalidArgument(format!(
            "plaintext: at most {MAX_PLAINTEXT} bytes; encrypt a data key instead"
        )));
    }
    if key.algorithm == Algorithm::Aes256 {
        return super::envelope::encrypt(backend, key, version, plaintext, aad).await;
    }
    let sealed = backend
        .backend
        .encrypt(KeyRef::of(key, version), plaintext, aad)
        .await
        .map_err(|e| in_version(e, key, version, &backend))?;
    Ok(pb::Ciphertext {
        key: key.name.clone(),
        version: version.version,
        iv: sealed.iv,
        data: sealed.data,
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
    refuse_aad_without_aead(key.algorithm, &aad)?;
    let sealed = Sealed {
        iv: envelope.iv,
        data: envelope.data,
    };
    let opened = backend
        .backend
        .decrypt(KeyRef::of(key, version), sealed, aad)
        .await;
    opened.map_err(|e| in_version(e, key, version, &backend))
}

/// A fresh data key from the backend's generator.
pub async fn random_data_key(backend: Arc<NamedBackend>) -> Result<SecretSlice<u8>> {
    backend.backend.random(DATA_KEY_LEN).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backends::KeyBackend;
    use crate::store::{HardwareHandle, KeyState, Purpose, VersionState};

    /// A backend that does nothing: whatever reaches it answers `UNIMPLEMENTED`, so a
    /// refusal with another code was made above the trait, for every backend alike.
    #[derive(Debug)]
    struct Nothing;

    impl KeyBackend for Nothing {
        fn kind(&self) -> &'static str {
            "nothing"
        }
        fn describe(&self) -> String {
            "does nothing".into()
        }
    }

    fn key(algorithm: Algorithm) -> (KeyRecord, VersionRecord) {
        let version = VersionRecord {
            version: 1,
            state: VersionState::Active,
            handle: HardwareHandle::new("nothing", vec![1]),
            created_at: 0,
        };
        let key = KeyRecord {
            name: "k".into(),
            algorithm,
            purpose: Purpose::EncryptDecrypt,
            backend: "n".into(),
            state: KeyState::Enabled,
            primary_version: 1,
            created_at: 0,
            destroy_after: None,
            tags: Default::default(),
            versions: vec![version.clone()],
            releasable: false,
        };
        (key, version)
    }

    fn backend() -> Arc<NamedBackend> {
        Arc::new(NamedBackend::new("n", Nothing))
    }

    fn envelope() -> pb::Ciphertext {
        pb::Ciphertext {
            key: "k".into(),
            version: 1,
            iv: Vec::new(),
            data: vec![1],
        }
    }

    #[tokio::test]
    async fn rsa_keys_refuse_associated_data_before_any_backend_is_asked() {
        let (key, version) = key(Algorithm::Rsa2048);
        let plaintext = SecretSlice::from(b"secret".to_vec());
        let aad = b"bound?".to_vec();
        let err = encrypt(backend(), &key, &version, plaintext, aad.clone())
            .await
            .unwrap_err();
        assert!(matches!(err, BrokerError::InvalidArgument(m) if m.starts_with("aad:")));
        let err = decrypt(backend(), &key, &version, envelope(), aad)
            .await
            .unwrap_err();
        assert!(matches!(err, BrokerError::InvalidArgument(m) if m.starts_with("aad:")));
    }

    #[tokio::test]
    async fn aes_plaintexts_over_the_limit_are_refused_before_any_backend_is_asked() {
        let (key, version) = key(Algorithm::Aes256);
        let plaintext = SecretSlice::from(vec![0u8; MAX_PLAINTEXT + 1]);
        let err = encrypt(backend(), &key, &version, plaintext, Vec::new())
            .await
            .unwrap_err();
        assert!(matches!(err, BrokerError::InvalidArgument(m) if m.starts_with("plaintext:")));
        // At the limit, the request goes on to the backend (which cannot encrypt).
        let plaintext = SecretSlice::from(vec![0u8; MAX_PLAINTEXT]);
        let err = encrypt(backend(), &key, &version, plaintext, b"aad".to_vec())
            .await
            .unwrap_err();
        assert!(matches!(err, BrokerError::Unsupported(_)));
    }
}
