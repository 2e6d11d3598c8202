//! The release transport key: an AES-256 key that the security officer makes once, marked
//! `CKA_TRUSTED`. A releasable key is `CKA_WRAP_WITH_TRUSTED`, so the token wraps it under
//! this key and under no key that a user session can make: only the SO may set
//! `CKA_TRUSTED` (a user session gets `CKR_ATTRIBUTE_READ_ONLY` in every template and in
//! `C_SetAttributeValue`).
//!
//! The SO can make public objects only (a private one gets `CKR_USER_NOT_LOGGED_IN`), so
//! the key is `CKA_PRIVATE` false: any session of a process that can load the token may use
//! it, PIN or not. It has no usage but wrap and unwrap: with encrypt or decrypt, AES key
//! wrap could be undone one AES block at a time.

use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;

use crate::error::{HsmError, Op, Result};
use crate::quirks::Quirks;

/// `CKA_ID` of the release transport key (a `kbsys:` object: not a managed key, and the
/// broker's orphan scan leaves it alone).
pub const TRANSPORT_KEY_ID: &[u8] = b"kbsys:release:transport:1";
/// Its `CKA_LABEL`.
pub const TRANSPORT_KEY_LABEL: &str = "kbsys:release:transport:v1";

/// What the token must report of the transport key before a release uses it, and what the
/// set-up checks when it finds the key already made.
const EXPECTED: [(AttributeType, bool); 13] = [
    (AttributeType::Token, true),
    (AttributeType::Trusted, true),
    (AttributeType::Sensitive, true),
    (AttributeType::Extractable, false),
    (AttributeType::Wrap, true),
    (AttributeType::Unwrap, true),
    (AttributeType::Encrypt, false),
    (AttributeType::Decrypt, false),
    (AttributeType::Sign, false),
    (AttributeType::Verify, false),
    (AttributeType::Derive, false),
    (AttributeType::Modifiable, false),
    (AttributeType::Local, true),
];

/// The template the security officer generates the transport key with.
pub(crate) fn template() -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::ValueLen(32.into()),
        Attribute::Token(true),
        Attribute::Private(false),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Trusted(true),
        Attribute::Wrap(true),
        Attribute::Unwrap(true),
        Attribute::Encrypt(false),
        Attribute::Decrypt(false),
        Attribute::Sign(false),
        Attribute::Verify(false),
        Attribute::Derive(false),
        Attribute::Modifiable(false),
        Attribute::Id(TRANSPORT_KEY_ID.to_vec()),
        Attribute::Label(TRANSPORT_KEY_LABEL.as_bytes().to_vec()),
    ]
}

/// The attributes [`check`] reads.
pub(crate) fn checked_attributes() -> Vec<AttributeType> {
    let mut types: Vec<AttributeType> = EXPECTED.iter().map(|(t, _)| *t).collect();
    types.extend([AttributeType::KeyType, AttributeType::ValueLen]);
    types
}

/// Checks attributes read with [`checked_attributes`]: an AES-256 key, trusted, sensitive,
/// never extractable, for wrapping only, unchangeable.
///
/// # Errors
/// [`HsmError::ReleaseNotProvisioned`] naming the first attribute that differs.
pub(crate) fn check(attrs: &[Attribute]) -> Result<()> {
    let wrong = |what: String| {
        HsmError::ReleaseNotProvisioned(format!(
            "the object {TRANSPORT_KEY_LABEL:?} is not the trusted transport key the \
             security officer's set-up makes ({what})"
        ))
    };
    let is_aes256 = attrs
        .iter()
        .any(|a| matches!(a, Attribute::KeyType(KeyType::AES)))
        && attrs
            .iter()
            .any(|a| matches!(a, Attribute::ValueLen(l) if u64::from(*l) == 32));
    if !is_aes256 {
        return Err(wrong("not an AES-256 key".into()));
    }
    for (wanted, value) in EXPECTED {
        let found = attrs
            .iter()
            .find(|a| a.attribute_type() == wanted)
            .and_then(bool_value);
        if found != Some(value) {
            return Err(wrong(format!("{wanted} is {found:?}, not {value}")));
        }
    }
    Ok(())
}

/// Reads and checks the transport key's attributes.
///
/// # Errors
/// As for [`check`]; token errors.
pub(crate) fn read_and_check(
    session: &Session,
    handle: ObjectHandle,
    quirks: &Quirks,
) -> Result<()> {
    let attrs = session
        .get_attributes(handle, &checked_attributes())
        .map_err(|e| HsmError::from_pkcs11(e, Op::General, quirks))?;
    check(&attrs)
}

fn bool_value(attr: &Attribute) -> Option<bool> {
    match attr {
        Attribute::Token(v)
        | Attribute::Trusted(v)
        | Attribute::Sensitive(v)
        | Attribute::Extractable(v)
        | Attribute::Wrap(v)
        | Attribute::Unwrap(v)
        | Attribute::Encrypt(v)
        | Attribute::Decrypt(v)
        | Attribute::Sign(v)
        | Attribute::Verify(v)
        | Attribute::Derive(v)
        | Attribute::Modifiable(v)
        | Attribute::Local(v) => Some(*v),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn as_made() -> Vec<Attribute> {
        let mut attrs: Vec<Attribute> = template()
            .into_iter()
            .filter(|a| checked_attributes().contains(&a.attribute_type()))
            .collect();
        attrs.push(Attribute::Local(true));
        attrs
    }

    #[test]
    fn the_template_passes_its_own_check() {
        check(&as_made()).unwrap();
    }

    #[test]
    fn an_untrusted_or_decrypting_or_missing_attribute_fails_the_check() {
        for (changed, expect) in [
            (Attribute::Trusted(false), "CKA_TRUSTED"),
            (Attribute::Decrypt(true), "CKA_DECRYPT"),
            (Attribute::Extractable(true), "CKA_EXTRACTABLE"),
        ] {
            let mut attrs = as_made();
            attrs.retain(|a| a.attribute_type() != changed.attribute_type());
            attrs.push(changed);
            let err = check(&attrs).unwrap_err().to_string();
            assert!(err.contains(expect), "{err}");
        }
        let mut attrs = as_made();
        attrs.retain(|a| a.attribute_type() != AttributeType::Trusted);
        assert!(check(&attrs).is_err());
        let mut attrs = as_made();
        attrs.retain(|a| a.attribute_type() != AttributeType::ValueLen);
        attrs.push(Attribute::ValueLen(16.into()));
        assert!(check(&attrs).is_err());
    }
}
