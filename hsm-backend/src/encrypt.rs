//! Encryption: RSA-OAEP-SHA256 and AES-256-GCM with associated data.
//!
//! AES-GCM nonces are 96 bits from the token's RNG, fresh for every call. With random
//! nonces a key should encrypt at most 2^32 messages; rotate keys well before that.

use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::ObjectClass;

use crate::backend::HsmBackend;
use crate::error::{HsmError, Op, Result};
use crate::key::{KeyAlgorithm, KeyId, KeySpec, KeyUsage};
use crate::pool::already_checked;
use crate::quirks::Quirks;
use crate::secret::{SecretBytes, into_secret};
use crate::sign::check_data_len;

/// Length of an AES-GCM nonce.
pub const GCM_NONCE_LEN: usize = 12;
/// Length of an AES-GCM tag.
pub const GCM_TAG_LEN: usize = 16;

/// An AES-GCM ciphertext: the nonce, and the ciphertext with its tag appended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AeadCiphertext {
    /// The 96-bit nonce.
    pub nonce: [u8; GCM_NONCE_LEN],
    /// Ciphertext followed by the 128-bit tag.
    pub ciphertext: Vec<u8>,
}

/// The hash (and MGF1 hash) of RSA-OAEP. The label is always empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OaepHash {
    /// SHA-1: still sound for OAEP, and all that SoftHSM2 2.6 offers.
    Sha1,
    /// SHA-256: the default for new keys on tokens that support it.
    Sha256,
}

impl OaepHash {
    fn len(self) -> usize {
        match self {
            OaepHash::Sha1 => 20,
            OaepHash::Sha256 => 32,
        }
    }

    fn mechanism(self, quirks: &Quirks) -> Result<Mechanism<'static>> {
        let (hash, mgf) = match self {
            OaepHash::Sha1 => (MechanismType::SHA1, PkcsMgfType::MGF1_SHA1),
            OaepHash::Sha256 if quirks.oaep_sha1_only => {
                return Err(HsmError::MechanismNotSupported(
                    "CKM_RSA_PKCS_OAEP with SHA-256: this token offers RSA-OAEP only with SHA-1"
                        .into(),
                ));
            }
            OaepHash::Sha256 => (MechanismType::SHA256, PkcsMgfType::MGF1_SHA256),
        };
        Ok(Mechanism::RsaPkcsOaep(PkcsOaepParams::new(
            hash,
            mgf,
            PkcsOaepSource::empty(),
        )))
    }
}

fn rsa_encryption_key(spec: KeySpec) -> std::result::Result<(), String> {
    match (spec.algorithm(), spec.usage()) {
        (KeyAlgorithm::Rsa(_), KeyUsage::EncryptDecrypt) => Ok(()),
        (alg, usage) => Err(format!(
            "it is a {alg} key for {usage:?}, not an RSA encryption key"
        )),
    }
}

fn aes_encryption_key(spec: KeySpec) -> std::result::Result<(), String> {
    match (spec.algorithm(), spec.usage()) {
        (KeyAlgorithm::Aes256, KeyUsage::EncryptDecrypt) => Ok(()),
        (alg, usage) => Err(format!(
            "it is a {alg} key for {usage:?}, not an AES encryption key"
        )),
    }
}

fn modulus_len(spec: KeySpec) -> usize {
    match spec.algorithm() {
        KeyAlgorithm::Rsa(bits) => bits as usize / 8,
        _ => 0,
    }
}

impl HsmBackend {
    /// Encrypts a short message to an RSA key with OAEP (MGF1 with the same hash).
    ///
    /// # Errors
    /// Unknown key, not an RSA encryption key, a message longer than the key allows, or
    /// a hash the token does not offer for OAEP.
    pub fn rsa_encrypt(&self, id: &KeyId, hash: OaepHash, plaintext: &[u8]) -> Result<Vec<u8>> {
        let mechanism = hash.mechanism(&self.pool.quirks())?;
        self.pool.run(|s| {
            let key = s.key_for(id, ObjectClass::PUBLIC_KEY, &rsa_encryption_key)?;
            let max = modulus_len(key.spec).saturating_sub(2 * hash.len() + 2);
            if plaintext.len() > max {
                return Err(HsmError::InvalidInput(format!(
                    "RSA-OAEP with this key encrypts at most {max} bytes, not {}",
                    plaintext.len()
                )));
            }
            s.with_key(
                id,
                ObjectClass::PUBLIC_KEY,
                Op::General,
                &already_checked,
                |session, key| session.encrypt(&mechanism, key.handle, plaintext),
            )
        })
    }

    /// Decrypts an RSA-OAEP ciphertext.
    ///
    /// # Errors
    /// Unknown key, not an RSA encryption key, a ciphertext of the wrong length, a hash
    /// the token does not offer, or [`HsmError::AuthenticationFailed`] when the padding
    /// check fails.
    pub fn rsa_decrypt(
        &self,
        id: &KeyId,
        hash: OaepHash,
        ciphertext: &[u8],
    ) -> Result<SecretBytes> {
        let mechanism = hash.mechanism(&self.pool.quirks())?;
        let plaintext = self.pool.run(|s| {
            let key = s.key_for(id, ObjectClass::PRIVATE_KEY, &rsa_encryption_key)?;
            if ciphertext.len() != modulus_len(key.spec) {
                return Err(HsmError::InvalidInput(format!(
                    "an RSA-OAEP ciphertext for this key has {} bytes, not {}",
                    modulus_len(key.spec),
                    ciphertext.len()
                )));
            }
            s.with_key(
                id,
                ObjectClass::PRIVATE_KEY,
                Op::Decrypt,
                &already_checked,
                |session, key| session.decrypt(&mechanism, key.handle, ciphertext),
            )
        })?;
        Ok(into_secret(plaintext))
    }

    /// Encrypts with AES-256-GCM under a fresh random nonce.
    ///
    /// # Errors
    /// Unknown key, not an AES encryption key, a message over
    /// [`MAX_DATA_LEN`](crate::MAX_DATA_LEN).
    pub fn aes_gcm_encrypt(
        &self,
        id: &KeyId,
        plaintext: &[u8],
        aad: &[u8],
    ) -> Result<AeadCiphertext> {
        check_data_len(plaintext)?;
        check_data_len(aad)?;
        self.pool.run(|s| {
            let mut nonce = [0u8; GCM_NONCE_LEN];
            s.session
                .generate_random_slice(&mut nonce)
                .map_err(|e| s.error(e, Op::General))?;
            let ciphertext = s.with_key(
                id,
                ObjectClass::SECRET_KEY,
                Op::General,
                &aes_encryption_key,
                |session, key| {
                    let mut iv = nonce;
                    let params = GcmParams::new(&mut iv, aad, (GCM_TAG_LEN as u64 * 8).into())?;
                    session.encrypt(&Mechanism::AesGcm(params), key.handle, plaintext)
                },
            )?;
            Ok(AeadCiphertext { nonce, ciphertext })
        })
    }

    /// Decrypts and authenticates AES-256-GCM.
    ///
    /// # Errors
    /// [`HsmError::AuthenticationFailed`] if the ciphertext, tag, nonce or associated
    /// data were changed; unknown key; not an AES encryption key.
    pub fn aes_gcm_decrypt(
        &self,
        id: &KeyId,
        sealed: &AeadCiphertext,
        aad: &[u8],
    ) -> Result<SecretBytes> {
        check_data_len(&sealed.ciphertext)?;
        check_data_len(aad)?;
        if sealed.ciphertext.len() < GCM_TAG_LEN {
            return Err(HsmError::InvalidInput(format!(
                "an AES-GCM ciphertext has at least {GCM_TAG_LEN} bytes (the tag)"
            )));
        }
        let plaintext = self.pool.run(|s| {
            s.with_key(
                id,
                ObjectClass::SECRET_KEY,
                Op::Decrypt,
                &aes_encryption_key,
                |session, key| {
                    let mut iv = sealed.nonce;
                    let params = GcmParams::new(&mut iv, aad, (GCM_TAG_LEN as u64 * 8).into())?;
                    session.decrypt(&Mechanism::AesGcm(params), key.handle, &sealed.ciphertext)
                },
            )
        })?;
        Ok(into_secret(plaintext))
    }
}
