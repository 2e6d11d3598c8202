//! Object templates: the SRK, keys, sealed data and the attestation key.

use tss_esapi::attributes::{ObjectAttributes, ObjectAttributesBuilder};
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, PublicAlgorithm};
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::key_bits::RsaKeyBits;
use tss_esapi::structures::{
    Digest, EccPoint, EccScheme, HashScheme, KeyDerivationFunctionScheme, KeyedHashScheme, Public,
    PublicBuilder, PublicEccParameters, PublicEccParametersBuilder, PublicKeyRsa,
    PublicKeyedHashParameters, PublicRsaParametersBuilder, RsaExponent, RsaScheme,
    SymmetricDefinitionObject,
};

use crate::error::{Result, TssResultExt};

/// The kinds of keys the backend creates under the SRK.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TpmKeyKind {
    /// ECDSA P-256 signing key.
    EcP256Sign,
    /// RSA-2048 signing key (PKCS#1 v1.5 or PSS, SHA-256).
    Rsa2048Sign,
    /// RSA-2048 decryption key (OAEP, SHA-256).
    Rsa2048Decrypt,
}

/// Attributes of every object this backend creates: bound to this TPM and this parent,
/// its secret generated inside (where it has one).
fn bound_to_this_tpm() -> ObjectAttributesBuilder {
    ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_sensitive_data_origin(true)
        .with_user_with_auth(true)
}

/// An ECC public area with SHA-256 names and an empty unique field.
fn ecc_public(
    attributes: ObjectAttributes,
    params: PublicEccParameters,
    what: &'static str,
) -> Result<Public> {
    PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::Ecc)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attributes)
        .with_ecc_parameters(params)
        .with_ecc_unique_identifier(EccPoint::default())
        .build()
        .during(what)
}

/// The storage root key: ECC P-256, restricted decryption, AES-128-CFB, with the TCG
/// provisioning guidance's attributes and an all-zero unique field, so the same TPM always
/// re-creates the same key from its storage seed.
pub(crate) fn srk() -> Result<Public> {
    let attributes = bound_to_this_tpm()
        .with_no_da(true)
        .with_restricted(true)
        .with_decrypt(true)
        .build()
        .during("SRK template")?;
    let params = PublicEccParametersBuilder::new_restricted_decryption_key(
        SymmetricDefinitionObject::AES_128_CFB,
        EccCurve::NistP256,
    )
    .build()
    .during("SRK template")?;
    ecc_public(attributes, params, "SRK template")
}

/// A key under the SRK: made inside the TPM, never leaves it in the clear.
///
/// `noDA`: its auth value is empty, so dictionary-attack protection guards nothing, and
/// without `noDA` every start after an unclean stop counts as a failed authorization
/// until the TPM locks its keys out (three unclean stops on swtpm's defaults).
pub(crate) fn key(kind: TpmKeyKind) -> Result<Public> {
    let signs = kind != TpmKeyKind::Rsa2048Decrypt;
    let attributes = bound_to_this_tpm()
        .with_no_da(true)
        .with_sign_encrypt(signs)
        .with_decrypt(!signs)
        .build()
        .during("key template")?;
    match kind {
        TpmKeyKind::EcP256Sign => {
            // The wrapper requires a scheme on ECC signing keys; ECDSA-SHA256 is the only
            // one offered for them anyway.
            let params = PublicEccParametersBuilder::new_unrestricted_signing_key(
                EccScheme::EcDsa(HashScheme::new(HashingAlgorithm::Sha256)),
                EccCurve::NistP256,
            )
            .build()
            .during("key template")?;
            ecc_public(attributes, params, "key template")
        }
        TpmKeyKind::Rsa2048Sign | TpmKeyKind::Rsa2048Decrypt => {
            let params = PublicRsaParametersBuilder::new()
                .with_scheme(RsaScheme::Null)
                .with_key_bits(RsaKeyBits::Rsa2048)
                .with_exponent(RsaExponent::default())
                .with_is_signing_key(signs)
                .with_is_decryption_key(!signs)
                .with_restricted(false)
                .build()
                .during("key template")?;
            PublicBuilder::new()
                .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
                .with_object_attributes(attributes)
                .with_public_algorithm(PublicAlgorithm::Rsa)
                .with_rsa_parameters(params)
                .with_rsa_unique_identifier(PublicKeyRsa::default())
                .build()
                .during("key template")
        }
    }
}

/// A sealed data object: usable only through its policy (no `userWithAuth`).
pub(crate) fn sealed(policy: Digest) -> Result<Public> {
    let attributes = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_no_da(false)
        .build()
        .during("sealed object template")?;
    PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::KeyedHash)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attributes)
        .with_auth_policy(policy)
        .with_keyed_hash_parameters(PublicKeyedHashParameters::new(KeyedHashScheme::Null))
        .with_keyed_hash_unique_identifier(Digest::default())
        .build()
        .during("sealed object template")
}

/// The attestation key: restricted ECDSA P-256 with SHA-256, so it signs only what the
/// TPM itself produced (quotes, certifications), never an outside digest.
pub(crate) fn attestation_key() -> Result<Public> {
    let attributes = bound_to_this_tpm()
        .with_no_da(true)
        .with_restricted(true)
        .with_sign_encrypt(true)
        .build()
        .during("AK template")?;
    let params = PublicEccParametersBuilder::new()
        .with_ecc_scheme(EccScheme::EcDsa(HashScheme::new(HashingAlgorithm::Sha256)))
        .with_curve(EccCurve::NistP256)
        .with_is_signing_key(true)
        .with_is_decryption_key(false)
        .with_restricted(true)
        .with_key_derivation_function_scheme(KeyDerivationFunctionScheme::Null)
        .build()
        .during("AK template")?;
    ecc_public(attributes, params, "AK template")
}
