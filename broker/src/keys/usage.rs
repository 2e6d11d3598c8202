//! Using a key: sign, verify, encrypt, decrypt, data keys and public keys. Each operation
//! takes the [`Authorized`] capability for its own action on this key, checks the key's
//! purpose and state in one place, and runs on the backend that holds the key.

use secrecy::SecretSlice;

use super::manager::KeyManager;
use super::ops::{self, Scheme};
use crate::authz::Action;
use crate::error::{BrokerError, Result};
use crate::request::Authorized;
use crate::store::{Algorithm, KeyRecord, Purpose};
use hsm_backend::Digest;

/// Signatures and the version that made them.
#[derive(Debug)]
pub struct Signed {
    pub signatures: Vec<Vec<u8>>,
    pub version: u32,
}

/// A ciphertext envelope and the version that made it.
#[derive(Debug)]
pub struct Encrypted {
    pub ciphertext: Vec<u8>,
    pub version: u32,
}

/// A plaintext and the version that recovered it.
#[derive(Debug)]
pub struct Decrypted {
    pub plaintext: SecretSlice<u8>,
    pub version: u32,
}

/// A fresh data key, in the clear and encrypted under the key.
#[derive(Debug)]
pub struct DataKey {
    pub plaintext: SecretSlice<u8>,
    pub ciphertext: Vec<u8>,
    pub version: u32,
}

impl KeyManager {
    /// Signs `digests` with the primary version (`Sign`; `SignBatch` is authorized as Sign).
    ///
    /// # Errors
    /// Wrong purpose, unusable key, or the hardware refused.
    pub async fn sign(
        &self,
        auth: &Authorized,
        key: &KeyRecord,
        scheme: Scheme,
        digests: Vec<Digest>,
    ) -> Result<Signed> {
        auth.require_key(&[Action::Sign], &key.name)?;
        KeyManager::require_purpose(key, Purpose::SignVerify)?;
        let version = self.usable(key, 0)?;
        let backend = self.backends.get(&key.backend)?;
        let signatures = ops::sign(backend, key, &version, scheme, digests).await?;
        Ok(Signed {
            signatures,
            version: version.version,
        })
    }

    /// Checks `signature` over `digest` with `version` (0: the primary), in software.
    ///
    /// # Errors
    /// Wrong purpose or unusable version.
    pub async fn verify(
        &self,
        auth: &Authorized,
        key: &KeyRecord,
        version: u32,
        scheme: Scheme,
        digest: &Digest,
        signature: &[u8],
    ) -> Result<bool> {
        auth.require_key(&[Action::Verify], &key.name)?;
        KeyManager::require_purpose(key, Purpose::SignVerify)?;
        let version = self.usable(key, version)?;
        let spki = self.cached_public_key(key, &version).await?;
        ops::verify(key.algorithm, &spki, scheme, digest, signature)
    }

    /// The public key of `version` (0: the primary): the version used and its SPKI DER.
    ///
    /// # Errors
    /// AES keys have none; unusable version.
    pub async fn public_key(
        &self,
        auth: &Authorized,
        key: &KeyRecord,
        version: u32,
    ) -> Result<(u32, std::sync::Arc<[u8]>)> {
        auth.require_key(&[Action::GetPublicKey], &key.name)?;
        if key.algorithm == Algorithm::Aes256 {
            return Err(BrokerError::FailedPrecondition(
                "AES keys have no public key".into(),
            ));
        }
        let version = self.usable(key, version)?;
        let spki = self.cached_public_key(key, &version).await?;
        Ok((version.version, spki))
    }

    /// Encrypts under the primary version.
    ///
    /// # Errors
    /// Wrong purpose, unusable key, too long, or `aad` on an RSA key.
    pub async fn encrypt(
        &self,
        auth: &Authorized,
        key: &KeyRecord,
        plaintext: SecretSlice<u8>,
        aad: Vec<u8>,
    ) -> Result<Encrypted> {
        auth.require_key(&[Action::Encrypt], &key.name)?;
        KeyManager::require_purpose(key, Purpose::EncryptDecrypt)?;
        let version = self.usable(key, 0)?;
        let backend = self.backends.get(&key.backend)?;
        let ciphertext = ops::encrypt(backend, key, &version, plaintext, aad).await?;
        Ok(Encrypted {
            ciphertext,
            version: version.version,
        })
    }

    /// Decrypts an envelope made by this key, with the version it names.
    ///
    /// # Errors
    /// Another key's or a malformed envelope, a retired version, a tampered ciphertext,
    /// `aad` on an RSA key.
    pub async fn decrypt(
        &self,
        auth: &Authorized,
        key: &KeyRecord,
        ciphertext: &[u8],
        aad: Vec<u8>,
    ) -> Result<Decrypted> {
        auth.require_key(&[Action::Decrypt], &key.name)?;
        KeyManager::require_purpose(key, Purpose::EncryptDecrypt)?;
        if super::envelope::is_sealed(ciphertext) {
            let (header, header_len) = super::envelope::parse(key, ciphertext)?;
            let version = self.usable(key, header.key_version())?;
            let backend = self.backends.get(&key.backend)?;
            let sealed = (&header, header_len, ciphertext);
            let plaintext = super::envelope::decrypt(backend, key, &version, sealed, aad).await?;
            return Ok(Decrypted {
                plaintext,
                version: version.version,
            });
        }
        let envelope = ops::parse_envelope(ciphertext)?;
        if envelope.key != key.name {
            return Err(BrokerError::InvalidArgument(
                "ciphertext: it was made by another key".into(),
            ));
        }
        if envelope.version == 0 {
            return Err(BrokerError::InvalidArgument(
                "ciphertext: no key version".into(),
            ));
        }
        let version = self.usable(key, envelope.version)?;
        let backend = self.backends.get(&key.backend)?;
        let plaintext = ops::decrypt(backend, key, &version, envelope, aad).await?;
        Ok(Decrypted {
            plaintext,
            version: version.version,
        })
    }

    /// A fresh 32-byte data key from the hardware, and its encryption under the key.
    ///
    /// # Errors
    /// As [`KeyManager::encrypt`].
    pub async fn generate_data_key(
        &self,
        auth: &Authorized,
        key: &KeyRecord,
        aad: Vec<u8>,
    ) -> Result<DataKey> {
        auth.require_key(&[Action::GenerateDataKey], &key.name)?;
        KeyManager::require_purpose(key, Purpose::EncryptDecrypt)?;
        let version = self.usable(key, 0)?;
        let backend = self.backends.get(&key.backend)?;
        let plaintext = ops::random_data_key(backend.clone()).await?;
        let copy = {
            use secrecy::ExposeSecret;
            SecretSlice::from(plaintext.expose_secret().to_vec())
        };
        let ciphertext = ops::encrypt(backend, key, &version, copy, aad).await?;
        Ok(DataKey {
            plaintext,
            ciphertext,
            version: version.version,
        })
    }
}
