//! What the broker's algorithms, purposes and schemes are in PKCS#11 terms (`HsmKeys` in
//! `hsm.rs`).

use hsm_backend::{EcCurve, HashAlgorithm, KeyAlgorithm, KeySpec, KeyUsage, SignatureAlgorithm};

use super::provide::Scheme;
use crate::error::{BrokerError, Result};
use crate::store::{Algorithm, Purpose};

/// The PKCS#11 key spec for an algorithm and purpose.
pub(super) fn key_spec(
    algorithm: Algorithm,
    purpose: Purpose,
    releasable: bool,
) -> Result<KeySpec> {
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
        Purpose::WrapUnwrap => KeyUsage::WrapUnwrap,
    };
    if releasable {
        return KeySpec::releasable(alg, usage).map_err(|_| {
            BrokerError::InvalidArgument(
                "releasable: only AES-256 encrypt/decrypt keys can be releasable".into(),
            )
        });
    }
    KeySpec::new(alg, usage).map_err(|_| {
        BrokerError::InvalidArgument(format!(
            "purpose: {} keys cannot be used for {}",
            crate::keys::convert::algorithm_name(algorithm),
            crate::keys::convert::purpose_name(purpose)
        ))
    })
}

pub(super) fn signature_algorithm(algorithm: Algorithm, scheme: Scheme) -> SignatureAlgorithm {
    match (algorithm, scheme) {
        (Algorithm::EcP256, _) => SignatureAlgorithm::EcdsaP256Sha256,
        (Algorithm::EcP384, _) => SignatureAlgorithm::EcdsaP384Sha384,
        (_, Scheme::RsaPss) => SignatureAlgorithm::RsaPss(HashAlgorithm::Sha256),
        _ => SignatureAlgorithm::RsaPkcs1v15(HashAlgorithm::Sha256),
    }
}
