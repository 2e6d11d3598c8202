//! Signatures and MACs: ECDSA over a digest computed in Rust, RSA PKCS#1 v1.5 and PSS,
//! and HMAC-SHA256.
//!
//! ECDSA signatures are returned DER-encoded (as OpenSSL and X.509 expect); the token's
//! raw `r‖s` form never leaves this module.

use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::ObjectClass;
use sha2::Digest as _;

use crate::backend::HsmBackend;
use crate::error::{HsmError, Op, Result};
use crate::key::{EcCurve, KeyAlgorithm, KeyId, KeySpec, KeyUsage};
use crate::pool::UsageCheck;

/// Largest message accepted by single-part operations (MAC, AES-GCM).
pub const MAX_DATA_LEN: usize = 1 << 20;

/// Hash functions for digests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HashAlgorithm {
    /// SHA-256.
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
}

impl HashAlgorithm {
    /// Digest length in bytes.
    pub fn output_len(self) -> usize {
        match self {
            HashAlgorithm::Sha256 => 32,
            HashAlgorithm::Sha384 => 48,
            HashAlgorithm::Sha512 => 64,
        }
    }

    fn mechanism(self) -> MechanismType {
        match self {
            HashAlgorithm::Sha256 => MechanismType::SHA256,
            HashAlgorithm::Sha384 => MechanismType::SHA384,
            HashAlgorithm::Sha512 => MechanismType::SHA512,
        }
    }

    fn mgf(self) -> PkcsMgfType {
        match self {
            HashAlgorithm::Sha256 => PkcsMgfType::MGF1_SHA256,
            HashAlgorithm::Sha384 => PkcsMgfType::MGF1_SHA384,
            HashAlgorithm::Sha512 => PkcsMgfType::MGF1_SHA512,
        }
    }

    /// The DER DigestInfo prefix that PKCS#1 v1.5 puts before the digest.
    fn digest_info_prefix(self) -> Box<[u8]> {
        match self {
            HashAlgorithm::Sha256 => rsa::Pkcs1v15Sign::new::<sha2::Sha256>().prefix,
            HashAlgorithm::Sha384 => rsa::Pkcs1v15Sign::new::<sha2::Sha384>().prefix,
            HashAlgorithm::Sha512 => rsa::Pkcs1v15Sign::new::<sha2::Sha512>().prefix,
        }
    }
}

/// A message digest of a known hash function, of the right length by construction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digest {
    hash: HashAlgorithm,
    bytes: Vec<u8>,
}

impl Digest {
    /// Wraps a digest the caller computed.
    ///
    /// # Errors
    /// [`HsmError::InvalidInput`] if the length does not match the hash function.
    pub fn new(hash: HashAlgorithm, bytes: impl Into<Vec<u8>>) -> Result<Digest> {
        let bytes = bytes.into();
        if bytes.len() != hash.output_len() {
            return Err(HsmError::InvalidInput(format!(
                "a {hash:?} digest has {} bytes, not {}",
                hash.output_len(),
                bytes.len()
            )));
        }
        Ok(Digest { hash, bytes })
    }

    /// Hashes a message.
    pub fn of(hash: HashAlgorithm, message: &[u8]) -> Digest {
        let bytes = match hash {
            HashAlgorithm::Sha256 => sha2::Sha256::digest(message).to_vec(),
            HashAlgorithm::Sha384 => sha2::Sha384::digest(message).to_vec(),
            HashAlgorithm::Sha512 => sha2::Sha512::digest(message).to_vec(),
        };
        Digest { hash, bytes }
    }

    /// The hash function.
    pub fn hash(&self) -> HashAlgorithm {
        self.hash
    }

    /// The digest bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// Signature schemes, each tied to one hash function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SignatureAlgorithm {
    /// ECDSA on P-256 with SHA-256.
    EcdsaP256Sha256,
    /// ECDSA on P-384 with SHA-384.
    EcdsaP384Sha384,
    /// RSASSA-PKCS1-v1_5.
    RsaPkcs1v15(HashAlgorithm),
    /// RSASSA-PSS with MGF1 of the same hash and a salt as long as the digest.
    RsaPss(HashAlgorithm),
}

impl SignatureAlgorithm {
    /// The hash function the digest must use.
    pub fn hash(self) -> HashAlgorithm {
        match self {
            SignatureAlgorithm::EcdsaP256Sha256 => HashAlgorithm::Sha256,
            SignatureAlgorithm::EcdsaP384Sha384 => HashAlgorithm::Sha384,
            SignatureAlgorithm::RsaPkcs1v15(h) | SignatureAlgorithm::RsaPss(h) => h,
        }
    }

    /// Whether a key of this spec can make or check such signatures.
    fn check(self, spec: KeySpec) -> std::result::Result<(), String> {
        let fits = spec.usage() == KeyUsage::SignVerify
            && matches!(
                (self, spec.algorithm()),
                (
                    SignatureAlgorithm::EcdsaP256Sha256,
                    KeyAlgorithm::Ec(EcCurve::P256)
                ) | (
                    SignatureAlgorithm::EcdsaP384Sha384,
                    KeyAlgorithm::Ec(EcCurve::P384)
                ) | (
                    SignatureAlgorithm::RsaPkcs1v15(_) | SignatureAlgorithm::RsaPss(_),
                    KeyAlgorithm::Rsa(_)
                )
            );
        if fits {
            Ok(())
        } else {
            Err(format!(
                "{self:?} does not fit a {} key for {:?}",
                spec.algorithm(),
                spec.usage()
            ))
        }
    }

    /// The PKCS#11 mechanism and the bytes it signs for a digest.
    fn mechanism_and_input(self, digest: &Digest) -> (Mechanism<'static>, Vec<u8>) {
        match self {
            SignatureAlgorithm::EcdsaP256Sha256 | SignatureAlgorithm::EcdsaP384Sha384 => {
                (Mechanism::Ecdsa, digest.bytes.clone())
            }
            SignatureAlgorithm::RsaPkcs1v15(h) => {
                let mut input = h.digest_info_prefix().into_vec();
                input.extend_from_slice(&digest.bytes);
                (Mechanism::RsaPkcs, input)
            }
            SignatureAlgorithm::RsaPss(h) => {
                let params = PkcsPssParams {
                    hash_alg: h.mechanism(),
                    mgf: h.mgf(),
                    s_len: (h.output_len() as u64).into(),
                };
                (Mechanism::RsaPkcsPss(params), digest.bytes.clone())
            }
        }
    }

    fn check_digest(self, digest: &Digest) -> Result<()> {
        if digest.hash == self.hash() {
            Ok(())
        } else {
            Err(HsmError::InvalidInput(format!(
                "{self:?} needs a {:?} digest, not {:?}",
                self.hash(),
                digest.hash
            )))
        }
    }
}

/// ECDSA raw `r‖s` → DER, and back.
fn ecdsa_raw_to_der(curve: EcCurve, raw: &[u8]) -> Option<Vec<u8>> {
    match curve {
        EcCurve::P256 => p256::ecdsa::Signature::from_slice(raw)
            .ok()
            .map(|s| s.to_der().as_bytes().to_vec()),
        EcCurve::P384 => p384::ecdsa::Signature::from_slice(raw)
            .ok()
            .map(|s| s.to_der().as_bytes().to_vec()),
    }
}

fn ecdsa_der_to_raw(curve: EcCurve, der: &[u8]) -> Option<Vec<u8>> {
    match curve {
        EcCurve::P256 => p256::ecdsa::Signature::from_der(der)
            .ok()
            .map(|s| s.to_bytes().to_vec()),
        EcCurve::P384 => p384::ecdsa::Signature::from_der(der)
            .ok()
            .map(|s| s.to_bytes().to_vec()),
    }
}

fn curve_of(alg: SignatureAlgorithm) -> Option<EcCurve> {
    match alg {
        SignatureAlgorithm::EcdsaP256Sha256 => Some(EcCurve::P256),
        SignatureAlgorithm::EcdsaP384Sha384 => Some(EcCurve::P384),
        _ => None,
    }
}

pub(crate) fn check_data_len(data: &[u8]) -> Result<()> {
    if data.len() > MAX_DATA_LEN {
        return Err(HsmError::InvalidInput(format!(
            "the message has {} bytes; the limit is {MAX_DATA_LEN}",
            data.len()
        )));
    }
    Ok(())
}

impl HsmBackend {
    /// Signs a digest with a private key. ECDSA signatures are DER; RSA ones are raw.
    ///
    /// # Errors
    /// Unknown key; a key, digest or scheme that does not fit or the token lacks; token errors.
    pub fn sign(&self, id: &KeyId, alg: SignatureAlgorithm, digest: &Digest) -> Result<Vec<u8>> {
        alg.check_digest(digest)?;
        self.capabilities().check_signature(alg)?;
        let (mechanism, input) = alg.mechanism_and_input(digest);
        let signature = self.pool.run(|s| {
            s.with_key(
                id,
                ObjectClass::PRIVATE_KEY,
                Op::General,
                &|spec| alg.check(spec),
                |session, key| session.sign(&mechanism, key.handle, &input),
            )
        })?;
        match curve_of(alg) {
            Some(curve) => ecdsa_raw_to_der(curve, &signature).ok_or_else(|| HsmError::Pkcs11 {
                function: "C_Sign".into(),
                rv: "the token returned a malformed ECDSA signature".into(),
            }),
            None => Ok(signature),
        }
    }

    /// Verifies a signature over a digest with a key's public half. `Ok(false)` means the
    /// signature is well-formed but does not verify.
    ///
    /// # Errors
    /// Unknown key, a key or digest that does not fit, a signature that is not DER
    /// (ECDSA), token errors.
    pub fn verify(
        &self,
        id: &KeyId,
        alg: SignatureAlgorithm,
        digest: &Digest,
        signature: &[u8],
    ) -> Result<bool> {
        alg.check_digest(digest)?;
        let (mechanism, input) = alg.mechanism_and_input(digest);
        let signature = match curve_of(alg) {
            Some(curve) => ecdsa_der_to_raw(curve, signature).ok_or_else(|| {
                HsmError::InvalidInput("the signature is not a DER-encoded ECDSA signature".into())
            })?,
            None => signature.to_vec(),
        };
        self.verify_with(
            id,
            ObjectClass::PUBLIC_KEY,
            &mechanism,
            &input,
            &signature,
            &|spec| alg.check(spec),
        )
    }

    /// Computes HMAC-SHA256 over a message.
    ///
    /// # Errors
    /// Unknown key, a key that is not an HMAC key, a message over [`MAX_DATA_LEN`].
    pub fn mac(&self, id: &KeyId, message: &[u8]) -> Result<Vec<u8>> {
        check_data_len(message)?;
        self.pool.run(|s| {
            s.with_key(
                id,
                ObjectClass::SECRET_KEY,
                Op::General,
                &check_mac_key,
                |session, key| session.sign(&Mechanism::Sha256Hmac, key.handle, message),
            )
        })
    }

    /// Checks an HMAC-SHA256 tag; `Ok(false)` when it does not match.
    ///
    /// # Errors
    /// As for [`HsmBackend::mac`].
    pub fn verify_mac(&self, id: &KeyId, message: &[u8], tag: &[u8]) -> Result<bool> {
        check_data_len(message)?;
        self.verify_with(
            id,
            ObjectClass::SECRET_KEY,
            &Mechanism::Sha256Hmac,
            message,
            tag,
            &check_mac_key,
        )
    }

    fn verify_with(
        &self,
        id: &KeyId,
        class: ObjectClass,
        mechanism: &Mechanism<'_>,
        input: &[u8],
        signature: &[u8],
        allowed: UsageCheck<'_>,
    ) -> Result<bool> {
        use cryptoki::error::{Error as CkError, RvError};
        self.pool.run(|s| {
            s.with_key(
                id,
                class,
                Op::General,
                allowed,
                |session, key| match session.verify(mechanism, key.handle, input, signature) {
                    Ok(()) => Ok(true),
                    Err(CkError::Pkcs11(
                        RvError::SignatureInvalid | RvError::SignatureLenRange,
                        _,
                    )) => Ok(false),
                    Err(e) => Err(e),
                },
            )
        })
    }
}

fn check_mac_key(spec: KeySpec) -> std::result::Result<(), String> {
    if spec.usage() == KeyUsage::Mac {
        Ok(())
    } else {
        Err(format!("it is a {} key, not an HMAC key", spec.algorithm()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_of_the_wrong_length_are_refused() {
        assert!(Digest::new(HashAlgorithm::Sha256, vec![0; 31]).is_err());
        assert!(Digest::new(HashAlgorithm::Sha384, vec![0; 32]).is_err());
        assert!(Digest::new(HashAlgorithm::Sha512, vec![0; 64]).is_ok());
    }

    #[test]
    fn a_digest_of_another_hash_is_refused_before_the_token() {
        let d = Digest::of(HashAlgorithm::Sha384, b"x");
        assert!(
            SignatureAlgorithm::EcdsaP256Sha256
                .check_digest(&d)
                .is_err()
        );
        assert!(
            SignatureAlgorithm::RsaPss(HashAlgorithm::Sha384)
                .check_digest(&d)
                .is_ok()
        );
    }

    #[test]
    fn ecdsa_der_round_trips_and_garbage_is_refused() {
        let mut raw = vec![1u8; 64];
        raw[0] = 0x7f;
        let der = ecdsa_raw_to_der(EcCurve::P256, &raw).unwrap();
        assert_eq!(ecdsa_der_to_raw(EcCurve::P256, &der).unwrap(), raw);
        assert!(ecdsa_der_to_raw(EcCurve::P256, b"\x30\x02\x01").is_none());
    }
}
