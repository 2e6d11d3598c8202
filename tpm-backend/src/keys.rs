//! Keys under the SRK: create, sign a digest, RSA-OAEP decrypt, export the public key.
//!
//! A key exists outside the TPM only as a [`TpmBlob`]; it is loaded on demand into a
//! small cache and evicted when room is needed.

use p256::pkcs8::EncodePublicKey;
use secrecy::SecretSlice;
use tss_esapi::constants::tss::{TPM2_RH_NULL, TPM2_ST_HASHCHECK};
use tss_esapi::interface_types::algorithm::HashingAlgorithm;
use tss_esapi::structures::{
    Data, Digest, HashScheme, Public, PublicKeyRsa, RsaDecryptionScheme, Signature, SignatureScheme,
};
use tss_esapi::tss2_esys::TPMT_TK_HASHCHECK;
use zeroize::Zeroize;

use crate::blob::TpmBlob;
use crate::error::{Result, TpmError, TssResultExt};
use crate::templates::{self, TpmKeyKind};
use crate::worker::{Pending, Retry, TpmBackend};

/// Signature schemes for TPM keys; all over a SHA-256 digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TpmSignScheme {
    /// ECDSA (P-256 keys); the signature is DER.
    EcdsaSha256,
    /// RSASSA-PKCS1-v1_5 (RSA signing keys).
    RsaPkcs1v15Sha256,
    /// RSASSA-PSS (RSA signing keys).
    RsaPssSha256,
}

impl TpmSignScheme {
    fn tss(self) -> SignatureScheme {
        let hash_scheme = HashScheme::new(HashingAlgorithm::Sha256);
        match self {
            TpmSignScheme::EcdsaSha256 => SignatureScheme::EcDsa { hash_scheme },
            TpmSignScheme::RsaPkcs1v15Sha256 => SignatureScheme::RsaSsa { hash_scheme },
            TpmSignScheme::RsaPssSha256 => SignatureScheme::RsaPss { hash_scheme },
        }
    }

    fn fits(self, public: &Public) -> bool {
        let signs =
            public.object_attributes().sign_encrypt() && !public.object_attributes().restricted();
        signs
            && matches!(
                (self, public),
                (TpmSignScheme::EcdsaSha256, Public::Ecc { .. })
                    | (
                        TpmSignScheme::RsaPkcs1v15Sha256 | TpmSignScheme::RsaPssSha256,
                        Public::Rsa { .. }
                    )
            )
    }
}

/// SubjectPublicKeyInfo (DER) of a TPM public area: P-256 or RSA.
pub(crate) fn spki(public: &Public) -> Result<Vec<u8>> {
    let bad = |why: String| TpmError::InvalidBlob(format!("public key: {why}"));
    let der = match public {
        Public::Ecc { unique, .. } => {
            let x = p256::FieldBytes::from(pad32(unique.x().value())?);
            let y = p256::FieldBytes::from(pad32(unique.y().value())?);
            let point = p256::EncodedPoint::from_affine_coordinates(&x, &y, false);
            p256::PublicKey::from_sec1_bytes(point.as_bytes())
                .map_err(|e| bad(e.to_string()))?
                .to_public_key_der()
                .map_err(|e| bad(e.to_string()))?
        }
        Public::Rsa {
            unique, parameters, ..
        } => {
            let exponent = match parameters.exponent().value() {
                0 => 65537,
                e => e,
            };
            rsa::RsaPublicKey::new(
                rsa::BigUint::from_bytes_be(unique.value()),
                rsa::BigUint::from(exponent),
            )
            .map_err(|e| bad(e.to_string()))?
            .to_public_key_der()
            .map_err(|e| bad(e.to_string()))?
        }
        _ => return Err(bad("neither ECC nor RSA".into())),
    };
    Ok(der.as_bytes().to_vec())
}

fn null_ticket() -> Result<tss_esapi::structures::HashcheckTicket> {
    TPMT_TK_HASHCHECK {
        tag: TPM2_ST_HASHCHECK,
        hierarchy: TPM2_RH_NULL,
        digest: Default::default(),
    }
    .try_into()
    .during("build a null hashcheck ticket")
}

fn signature_bytes(signature: Signature) -> Result<Vec<u8>> {
    match signature {
        Signature::EcDsa(ecc) => {
            let sig = p256::ecdsa::Signature::from_scalars(
                p256::FieldBytes::from(pad32(ecc.signature_r().value())?),
                p256::FieldBytes::from(pad32(ecc.signature_s().value())?),
            )
            .map_err(|e| TpmError::InvalidBlob(format!("ECDSA signature from the TPM: {e}")))?;
            Ok(sig.to_der().as_bytes().to_vec())
        }
        Signature::RsaSsa(rsa) | Signature::RsaPss(rsa) => Ok(rsa.signature().value().to_vec()),
        _ => Err(TpmError::Tpm {
            operation: "sign",
            detail: "unexpected signature algorithm".into(),
        }),
    }
}

/// Left-pads a big-endian scalar to 32 bytes (the TPM may drop leading zeros).
pub(crate) fn pad32(bytes: &[u8]) -> Result<[u8; 32]> {
    let mut out = [0u8; 32];
    let start = 32usize
        .checked_sub(bytes.len())
        .ok_or_else(|| TpmError::InvalidInput("scalar longer than 32 bytes".into()))?;
    out.get_mut(start..)
        .ok_or_else(|| TpmError::InvalidInput("scalar".into()))?
        .copy_from_slice(bytes);
    Ok(out)
}

impl TpmBackend {
    /// Creates a key under the SRK. The private part leaves the TPM only wrapped.
    pub fn create_key(&self, kind: TpmKeyKind) -> Pending<TpmBlob> {
        self.submit(Retry::Safe, move |c| {
            let template = templates::key(kind)?;
            let srk = c.srk;
            c.make_room(1);
            let created = c
                .ctx
                .create(srk, template, None, None, None, None)
                .during("create a key")?;
            TpmBlob::from_parts(&created.out_public, &created.out_private)
        })
    }

    /// Signs a SHA-256 digest.
    pub fn sign(&self, key: &TpmBlob, scheme: TpmSignScheme, digest: [u8; 32]) -> Pending<Vec<u8>> {
        let key = key.clone();
        self.submit(Retry::Safe, move |c| {
            if !scheme.fits(&key.public()?) {
                return Err(TpmError::InvalidInput(format!(
                    "{scheme:?} does not fit this key"
                )));
            }
            let handle = c.key(&key)?;
            let digest = Digest::try_from(digest.to_vec()).during("sign")?;
            let signature = c
                .ctx
                .sign(handle, digest, scheme.tss(), null_ticket()?)
                .during("sign")?;
            signature_bytes(signature)
        })
    }

    /// Loads `key` (or finds it loaded): whether this TPM can still use it. A blob made
    /// under another SRK (the TPM was cleared, or it is another TPM) does not load.
    pub fn check_loads(&self, key: &TpmBlob) -> Pending<()> {
        let key = key.clone();
        self.submit(Retry::Safe, move |c| c.key(&key).map(drop))
    }

    /// Decrypts an RSA-OAEP (SHA-256) ciphertext with an RSA decryption key.
    pub fn rsa_decrypt(&self, key: &TpmBlob, ciphertext: &[u8]) -> Pending<SecretSlice<u8>> {
        let (key, ciphertext) = (key.clone(), ciphertext.to_vec());
        self.submit(Retry::Safe, move |c| {
            let public = key.public()?;
            if !public.object_attributes().decrypt() || !matches!(public, Public::Rsa { .. }) {
                return Err(TpmError::InvalidInput("not an RSA decryption key".into()));
            }
            let handle = c.key(&key)?;
            let input = PublicKeyRsa::try_from(ciphertext.clone())
                .map_err(|_| TpmError::InvalidInput("ciphertext longer than the modulus".into()))?;
            let scheme = RsaDecryptionScheme::Oaep(HashScheme::new(HashingAlgorithm::Sha256));
            let plaintext = c
                .ctx
                .rsa_decrypt(handle, input, scheme, Data::default())
                .during("RSA decrypt")?;
            let mut bytes = plaintext.value().to_vec();
            let secret = SecretSlice::from(bytes.clone());
            bytes.zeroize();
            Ok(secret)
        })
    }
}

impl TpmBlob {
    /// The key's public half as SubjectPublicKeyInfo DER; computed without the TPM.
    ///
    /// # Errors
    /// [`TpmError::InvalidBlob`] if the public part is not a P-256 or RSA key.
    pub fn public_key_der(&self) -> Result<Vec<u8>> {
        spki(&self.public()?)
    }
}
