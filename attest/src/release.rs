//! Secrets released to an attested workload: HPKE (RFC 9180) base mode, single shot, with
//! DHKEM(X25519, HKDF-SHA256), HKDF-SHA256 and AES-256-GCM (suite ids 0x0020, 0x0001,
//! 0x0002), from the `hpke` crate.
//!
//! The recipient is the workload's **KEM key**: an X25519 key pair it makes inside its TEE
//! next to its signing key. The evidence binds both public keys (`crate::binding`), and the
//! attestation token carries the KEM key (`kem` claim), so the broker encrypts to a key
//! the hardware vouched for, never to one that arrives with the request.
//!
//! The `info` string binds what is released to whom ([`release_info`]): the secret's name
//! and version and the caller's SPIFFE ID, each length-prefixed, so a ciphertext made for
//! one secret, version or workload does not open as another. docs/secrets.md has the wire
//! format with a worked example.

use hpke::aead::AesGcm256;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, Kem as _, OpModeR, OpModeS, Serializable};
use jose_b64::base64ct::{Base64UrlUnpadded, Encoding};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::error::{AttestError, Result};

/// The HPKE suite, as (KEM, KDF, AEAD) ids.
pub const SUITE: (u16, u16, u16) = (0x0020, 0x0001, 0x0002);
/// Length of an X25519 public key, and of the encapsulated key `enc`.
pub const KEM_KEY_LEN: usize = 32;
/// The label that starts every `info`.
pub const INFO_LABEL: &[u8] = b"keybroker secret release v1";
/// The first bytes of a leased secret's `info` ([`lease_info`]): another label, so that a
/// lease's release can never be taken for a stored secret's, nor the reverse.
pub const LEASE_INFO_LABEL: &[u8] = b"keybroker lease release v1";

/// A workload's KEM public key (X25519).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct KemPublicKey([u8; KEM_KEY_LEN]);

impl std::fmt::Debug for KemPublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KemPublicKey({})", hex::encode(&self.0[..4]))
    }
}

impl KemPublicKey {
    /// Parses 32 bytes of an X25519 public key.
    ///
    /// # Errors
    /// [`AttestError::Malformed`] for another length.
    pub fn from_slice(bytes: &[u8]) -> Result<KemPublicKey> {
        <[u8; KEM_KEY_LEN]>::try_from(bytes)
            .map(KemPublicKey)
            .map_err(|_| {
                AttestError::Malformed(format!(
                    "a KEM key is an X25519 public key of {KEM_KEY_LEN} bytes, not {}",
                    bytes.len()
                ))
            })
    }

    /// The key's 32 bytes.
    pub fn as_bytes(&self) -> &[u8; KEM_KEY_LEN] {
        &self.0
    }

    /// The key as an RFC 8037 JWK, for the token's `kem` claim.
    pub fn to_jwk(&self) -> KemJwk {
        KemJwk {
            kty: "OKP".into(),
            crv: "X25519".into(),
            x: Base64UrlUnpadded::encode_string(&self.0),
        }
    }

    /// The key of a `kem` claim.
    ///
    /// # Errors
    /// [`AttestError::Malformed`] for a JWK that is not an X25519 OKP key.
    pub fn from_jwk(jwk: &KemJwk) -> Result<KemPublicKey> {
        if jwk.kty != "OKP" || jwk.crv != "X25519" {
            return Err(AttestError::Malformed(
                "the kem claim is not an X25519 OKP key".into(),
            ));
        }
        let bytes = Base64UrlUnpadded::decode_vec(&jwk.x)
            .map_err(|_| AttestError::Malformed("the kem claim's x is not base64url".into()))?;
        KemPublicKey::from_slice(&bytes)
    }
}

/// An X25519 public key as a JWK (RFC 8037): the attestation token's `kem` claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KemJwk {
    pub kty: String,
    pub crv: String,
    pub x: String,
}

/// A workload's KEM key pair, made inside its TEE. The private key is wiped on drop.
pub struct KemKeyPair {
    private: <X25519HkdfSha256 as hpke::Kem>::PrivateKey,
    public: KemPublicKey,
}

impl std::fmt::Debug for KemKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KemKeyPair")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

impl KemKeyPair {
    /// A fresh key pair from the operating system's generator.
    pub fn generate() -> KemKeyPair {
        let (private, public) = X25519HkdfSha256::gen_keypair();
        let mut bytes = [0u8; KEM_KEY_LEN];
        bytes.copy_from_slice(&public.to_bytes());
        KemKeyPair {
            private,
            public: KemPublicKey(bytes),
        }
    }

    /// The key pair of a 32-byte X25519 private key.
    ///
    /// # Errors
    /// [`AttestError::Malformed`] for another length.
    pub fn from_private_bytes(bytes: &[u8]) -> Result<KemKeyPair> {
        let private = <X25519HkdfSha256 as hpke::Kem>::PrivateKey::from_bytes(bytes)
            .map_err(|_| AttestError::Malformed("an X25519 private key has 32 bytes".into()))?;
        let public = X25519HkdfSha256::sk_to_pk(&private);
        Ok(KemKeyPair {
            public: KemPublicKey::from_slice(&public.to_bytes())?,
            private,
        })
    }

    /// The public half.
    pub fn public(&self) -> KemPublicKey {
        self.public
    }

    /// The private key's 32 bytes, to keep it in a 0600 file or hand it to another
    /// implementation in a test.
    pub fn private_bytes(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(self.private.to_bytes().to_vec())
    }

    /// Opens what [`seal`] made for this key with the same `info`.
    ///
    /// # Errors
    /// [`AttestError::Signature`] when it does not open: another key, another `info`, or
    /// altered bytes.
    pub fn open(&self, sealed: &Sealed, info: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        let enc = <X25519HkdfSha256 as hpke::Kem>::EncappedKey::from_bytes(&sealed.enc)
            .map_err(|_| AttestError::Malformed(format!("enc: {KEM_KEY_LEN} bytes")))?;
        hpke::single_shot_open::<AesGcm256, HkdfSha256, X25519HkdfSha256>(
            &OpModeR::Base,
            &self.private,
            &enc,
            info,
            &sealed.ciphertext,
            &[],
        )
        .map(Zeroizing::new)
        .map_err(|_| AttestError::Signature("the sealed secret does not open with this key".into()))
    }
}

/// An HPKE encapsulated key and the ciphertext (with its tag).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub enc: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

/// The `info` of a release: the label, then the name, the version (8 bytes, big-endian)
/// and the caller, the two strings each after its length (2 bytes, big-endian).
///
/// # Errors
/// [`AttestError::Malformed`] for a name or caller longer than 65,535 bytes.
pub fn release_info(name: &str, version: u64, caller: &str) -> Result<Vec<u8>> {
    Ok([
        INFO_LABEL,
        &prefixed(name)?,
        &version.to_be_bytes(),
        &prefixed(caller)?,
    ]
    .concat())
}

/// The `info` of a leased (dynamic) secret's release: [`LEASE_INFO_LABEL`], then the lease
/// id (which begins with its role's name) and the caller, each after its length (2 bytes,
/// big-endian).
///
/// # Errors
/// [`AttestError::Malformed`] for a lease id or caller longer than 65,535 bytes.
pub fn lease_info(lease_id: &str, caller: &str) -> Result<Vec<u8>> {
    Ok([LEASE_INFO_LABEL, &prefixed(lease_id)?, &prefixed(caller)?].concat())
}

/// `text` after its length, 2 bytes big-endian.
fn prefixed(text: &str) -> Result<Vec<u8>> {
    let len = u16::try_from(text.len())
        .map_err(|_| AttestError::Malformed("a name of over 65,535 bytes".into()))?;
    Ok([&len.to_be_bytes()[..], text.as_bytes()].concat())
}

/// Encrypts `plaintext` to `recipient` with `info` (no AAD).
///
/// # Errors
/// [`AttestError::Malformed`] if `recipient` is not a usable X25519 key.
pub fn seal(recipient: &KemPublicKey, info: &[u8], plaintext: &[u8]) -> Result<Sealed> {
    let public = <X25519HkdfSha256 as hpke::Kem>::PublicKey::from_bytes(&recipient.0)
        .map_err(|_| AttestError::Malformed("the KEM key is not an X25519 key".into()))?;
    let (enc, ciphertext) = hpke::single_shot_seal::<AesGcm256, HkdfSha256, X25519HkdfSha256>(
        &OpModeS::Base,
        &public,
        info,
        plaintext,
        &[],
    )
    .map_err(|e| AttestError::Malformed(format!("HPKE: {e}")))?;
    Ok(Sealed {
        enc: enc.to_bytes().to_vec(),
        ciphertext,
    })
}

#[cfg(test)]
#[path = "release_tests.rs"]
mod tests;
