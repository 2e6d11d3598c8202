//! Reading what a key object is from its attributes.
//!
//! An RSA key's usage comes from its private half's `CKA_SIGN`/`CKA_DECRYPT`, never from
//! `CKA_SIGN || CKA_VERIFY`: modules set `CKA_VERIFY` on the public half of decryption keys
//! (tpm2-pkcs11 does), which would make every such key look like a signing key.

use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;

use crate::error::{HsmError, Op, Result};
use crate::key::{KeyAlgorithm, KeyId, KeyProtection, KeySpec, KeyUsage};
use crate::public_key::curve_from_params;
use crate::quirks::Quirks;

/// Reads attributes of an object; those it does not have are simply absent.
fn read(
    session: &Session,
    handle: ObjectHandle,
    types: &[AttributeType],
    quirks: &Quirks,
) -> Result<Vec<Attribute>> {
    session
        .get_attributes(handle, types)
        .map_err(|e| HsmError::from_pkcs11(e, Op::General, quirks))
}

/// Reads the algorithm and usage of a key object.
pub(crate) fn read_spec(
    session: &Session,
    handle: ObjectHandle,
    id: &KeyId,
    quirks: &Quirks,
) -> Result<KeySpec> {
    let attrs = read(
        session,
        handle,
        &[
            AttributeType::Class,
            AttributeType::KeyType,
            AttributeType::EcParams,
            AttributeType::Modulus,
            AttributeType::ValueLen,
            AttributeType::Sign,
            AttributeType::Verify,
            AttributeType::Encrypt,
            AttributeType::Decrypt,
            AttributeType::Wrap,
            AttributeType::Unwrap,
            AttributeType::Sensitive,
            AttributeType::Extractable,
            AttributeType::WrapWithTrusted,
        ],
        quirks,
    )?;
    let unsupported = |what: &str| HsmError::KeyUsageNotPermitted {
        key: id.clone(),
        reason: format!("the object is {what}, which this backend does not use"),
    };
    let flag = |wanted: AttributeType| {
        attrs.iter().any(|a| {
            a.attribute_type() == wanted
                && matches!(
                    a,
                    Attribute::Sign(true)
                        | Attribute::Verify(true)
                        | Attribute::Encrypt(true)
                        | Attribute::Decrypt(true)
                        | Attribute::Wrap(true)
                        | Attribute::Unwrap(true)
                        | Attribute::Sensitive(true)
                        | Attribute::Extractable(true)
                        | Attribute::WrapWithTrusted(true)
                )
        })
    };
    let key_type = attrs.iter().find_map(|a| match a {
        Attribute::KeyType(t) => Some(*t),
        _ => None,
    });
    let wraps = flag(AttributeType::Wrap) || flag(AttributeType::Unwrap);
    let (algorithm, usage) = match key_type {
        Some(KeyType::EC) => {
            let curve = attrs
                .iter()
                .find_map(|a| match a {
                    Attribute::EcParams(p) => curve_from_params(p),
                    _ => None,
                })
                .ok_or_else(|| unsupported("an EC key on another curve"))?;
            (KeyAlgorithm::Ec(curve), KeyUsage::SignVerify)
        }
        Some(KeyType::RSA) => {
            let bits = attrs
                .iter()
                .find_map(|a| match a {
                    Attribute::Modulus(n) => Some(significant_bits(n)),
                    _ => None,
                })
                .ok_or_else(|| unsupported("an RSA key without a modulus"))?;
            let is_public = attrs
                .iter()
                .any(|a| matches!(a, Attribute::Class(ObjectClass::PUBLIC_KEY)));
            let usage = if is_public {
                rsa_public_usage(session, id, &flag, quirks)?
            } else {
                rsa_private_usage(&flag)
            };
            let usage = usage.ok_or_else(|| unsupported("an RSA key whose usage is unclear"))?;
            (KeyAlgorithm::Rsa(bits), usage)
        }
        Some(KeyType::AES) => {
            let len = attrs.iter().find_map(|a| match a {
                Attribute::ValueLen(l) => Some(u64::from(*l)),
                _ => None,
            });
            if len != Some(32) {
                return Err(unsupported("an AES key that is not 256 bits"));
            }
            let usage = if wraps {
                KeyUsage::WrapUnwrap
            } else {
                KeyUsage::EncryptDecrypt
            };
            // Releasable exactly when the token says so; anything else extractable is a key
            // this backend did not make, and is not released.
            let releasable = flag(AttributeType::Sensitive)
                && flag(AttributeType::Extractable)
                && flag(AttributeType::WrapWithTrusted);
            if releasable {
                return KeySpec::releasable(KeyAlgorithm::Aes256, usage)
                    .map_err(|_| unsupported("an extractable AES key not for encryption"));
            }
            (KeyAlgorithm::Aes256, usage)
        }
        Some(KeyType::GENERIC_SECRET) => (KeyAlgorithm::HmacSha256, KeyUsage::Mac),
        _ => return Err(unsupported("of an unsupported key type")),
    };
    KeySpec::new(algorithm, usage).map_err(|_| unsupported("an unsupported combination"))
}

/// An RSA private key's usage, from its own `CKA_SIGN` and `CKA_DECRYPT`; the broker makes
/// each key with exactly one of them.
fn rsa_private_usage(flag: &dyn Fn(AttributeType) -> bool) -> Option<KeyUsage> {
    match (flag(AttributeType::Sign), flag(AttributeType::Decrypt)) {
        (true, false) => Some(KeyUsage::SignVerify),
        (false, true) => Some(KeyUsage::EncryptDecrypt),
        _ => None,
    }
}

/// An RSA public key's usage: its private half's, when the token holds it. A public key's
/// own `CKA_VERIFY`/`CKA_ENCRYPT` are the module's defaults (tpm2-pkcs11 sets both), so
/// they settle the usage only when exactly one is set.
fn rsa_public_usage(
    session: &Session,
    id: &KeyId,
    own_flag: &dyn Fn(AttributeType) -> bool,
    quirks: &Quirks,
) -> Result<Option<KeyUsage>> {
    let template = [
        Attribute::Class(ObjectClass::PRIVATE_KEY),
        Attribute::Id(id.as_bytes().to_vec()),
    ];
    let private = session
        .find_objects(&template)
        .map_err(|e| HsmError::from_pkcs11(e, Op::General, quirks))?;
    if let Some(handle) = private.first() {
        let attrs = read(
            session,
            *handle,
            &[AttributeType::Sign, AttributeType::Decrypt],
            quirks,
        )?;
        let flag = |wanted: AttributeType| {
            attrs.iter().any(|a| {
                a.attribute_type() == wanted
                    && matches!(a, Attribute::Sign(true) | Attribute::Decrypt(true))
            })
        };
        return Ok(rsa_private_usage(&flag));
    }
    Ok(
        match (
            own_flag(AttributeType::Verify),
            own_flag(AttributeType::Encrypt),
        ) {
            (true, false) => Some(KeyUsage::SignVerify),
            (false, true) => Some(KeyUsage::EncryptDecrypt),
            _ => None,
        },
    )
}

/// Reads how a private or secret key is protected.
pub(crate) fn read_protection(
    session: &Session,
    handle: ObjectHandle,
    quirks: &Quirks,
) -> Result<KeyProtection> {
    let attrs = read(
        session,
        handle,
        &[
            AttributeType::Token,
            AttributeType::Private,
            AttributeType::Sensitive,
            AttributeType::Extractable,
            AttributeType::AlwaysSensitive,
            AttributeType::NeverExtractable,
            AttributeType::Local,
            AttributeType::WrapWithTrusted,
        ],
        quirks,
    )?;
    let mut p = KeyProtection {
        token: false,
        private: false,
        sensitive: false,
        extractable: true,
        always_sensitive: false,
        never_extractable: false,
        local: false,
        wrap_with_trusted: false,
    };
    for attr in attrs {
        match attr {
            Attribute::Token(v) => p.token = v,
            Attribute::Private(v) => p.private = v,
            Attribute::Sensitive(v) => p.sensitive = v,
            Attribute::Extractable(v) => p.extractable = v,
            Attribute::AlwaysSensitive(v) => p.always_sensitive = v,
            Attribute::NeverExtractable(v) => p.never_extractable = v,
            Attribute::Local(v) => p.local = v,
            Attribute::WrapWithTrusted(v) => p.wrap_with_trusted = v,
            _ => {}
        }
    }
    Ok(p)
}

/// Reads a key object's label.
pub(crate) fn read_label(
    session: &Session,
    handle: ObjectHandle,
    quirks: &Quirks,
) -> Result<String> {
    let attrs = read(session, handle, &[AttributeType::Label], quirks)?;
    Ok(attrs
        .into_iter()
        .find_map(|a| match a {
            Attribute::Label(l) => Some(String::from_utf8_lossy(&l).into_owned()),
            _ => None,
        })
        .unwrap_or_default())
}

/// Bit length of a big-endian unsigned integer.
fn significant_bits(be: &[u8]) -> u32 {
    let skipped = be.iter().take_while(|b| **b == 0).count();
    let rest = be.get(skipped..).unwrap_or_default();
    match rest.first() {
        None => 0,
        Some(top) => (rest.len() as u32 - 1) * 8 + (8 - top.leading_zeros()),
    }
}

#[cfg(test)]
mod tests {
    use super::significant_bits;

    #[test]
    fn modulus_bits_ignore_leading_zero_bytes() {
        assert_eq!(significant_bits(&[0x00, 0x80, 0x00]), 16);
        assert_eq!(significant_bits(&[0x01]), 1);
        assert_eq!(significant_bits(&[]), 0);
    }
}
