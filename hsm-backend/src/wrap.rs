//! Data keys wrapped under a key-encryption key (AES key wrap with padding, RFC 5649).
//!
//! A data key is plaintext only in this process's memory (as [`DataKey`], zeroed on
//! drop) and, for the length of one call, as a session object in the token. The wrapped
//! form is what callers store.

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use secrecy::{ExposeSecret, SecretBox};
use zeroize::Zeroize;

use crate::backend::HsmBackend;
use crate::error::{HsmError, Op, Result};
use crate::key::{KeyAlgorithm, KeyId, KeySpec, KeyUsage};
use crate::pool::already_checked;

/// Length of a data key.
pub const DATA_KEY_LEN: usize = 32;

/// An AES-256 data key in plaintext: zeroed on drop, redacted in `Debug`.
#[derive(Debug)]
pub struct DataKey(SecretBox<[u8; DATA_KEY_LEN]>);

impl DataKey {
    /// Wraps key bytes the caller holds.
    pub fn new(bytes: SecretBox<[u8; DATA_KEY_LEN]>) -> DataKey {
        DataKey(bytes)
    }

    /// The key bytes.
    pub fn expose(&self) -> &[u8; DATA_KEY_LEN] {
        self.0.expose_secret()
    }
}

/// A data key wrapped by a key-encryption key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrappedKey(pub Vec<u8>);

fn kek(spec: KeySpec) -> std::result::Result<(), String> {
    match (spec.algorithm(), spec.usage()) {
        (KeyAlgorithm::Aes256, KeyUsage::WrapUnwrap) => Ok(()),
        (alg, usage) => Err(format!(
            "it is a {alg} key for {usage:?}, not a key-encryption key"
        )),
    }
}

/// A session-only AES key object that may leave the token, and is destroyed after use.
fn transient_aes_template() -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Token(false),
        Attribute::Private(true),
        Attribute::Sensitive(false),
        Attribute::Extractable(true),
    ]
}

/// Destroys a session object made for one call; a failure is logged, not returned (the
/// object goes when its session closes anyway).
pub(crate) fn destroy_quietly(session: &Session, handle: ObjectHandle) {
    if let Err(e) = session.destroy_object(handle) {
        tracing::warn!(error = %e, "could not destroy a transient session object");
    }
}

impl HsmBackend {
    /// Wraps a data key under a key-encryption key.
    ///
    /// # Errors
    /// Unknown key, or not a key-encryption key.
    pub fn wrap_data_key(&self, kek_id: &KeyId, data_key: &DataKey) -> Result<WrappedKey> {
        self.pool.run(|s| {
            // Checked before a transient object is created for nothing.
            s.key_for(kek_id, ObjectClass::SECRET_KEY, &kek)?;
            let mut template = transient_aes_template();
            template.push(Attribute::Value(data_key.expose().to_vec()));
            let created = s.session.create_object(&template);
            if let Some(Attribute::Value(v)) = template.last_mut() {
                v.zeroize();
            }
            let object = created.map_err(|e| s.error(e, Op::General))?;
            let wrapped = s.with_key(
                kek_id,
                ObjectClass::SECRET_KEY,
                Op::General,
                &already_checked,
                |session, key| session.wrap_key(&Mechanism::AesKeyWrapPad, key.handle, object),
            );
            destroy_quietly(&s.session, object);
            wrapped.map(WrappedKey)
        })
    }

    /// Unwraps a data key.
    ///
    /// # Errors
    /// [`HsmError::AuthenticationFailed`] if the wrapped key was changed or was wrapped by
    /// another key; unknown key; not a key-encryption key.
    pub fn unwrap_data_key(&self, kek_id: &KeyId, wrapped: &WrappedKey) -> Result<DataKey> {
        if wrapped.0.len() != DATA_KEY_LEN + 8 {
            return Err(HsmError::InvalidInput(format!(
                "a wrapped data key has {} bytes, not {}",
                DATA_KEY_LEN + 8,
                wrapped.0.len()
            )));
        }
        self.pool.run(|s| {
            let object = s.with_key(
                kek_id,
                ObjectClass::SECRET_KEY,
                Op::Unwrap,
                &kek,
                |session, key| {
                    session.unwrap_key(
                        &Mechanism::AesKeyWrapPad,
                        key.handle,
                        &wrapped.0,
                        &transient_aes_template(),
                    )
                },
            )?;
            let value = s.session.get_attributes(object, &[AttributeType::Value]);
            destroy_quietly(&s.session, object);
            let mut value = value.map_err(|e| s.error(e, Op::General))?;
            let key = match value.first_mut() {
                Some(Attribute::Value(bytes)) if bytes.len() == DATA_KEY_LEN => {
                    let mut key = Box::new([0u8; DATA_KEY_LEN]);
                    key.copy_from_slice(bytes);
                    bytes.zeroize();
                    Ok(DataKey(SecretBox::new(key)))
                }
                _ => Err(HsmError::AuthenticationFailed),
            };
            value.iter_mut().for_each(|a| {
                if let Attribute::Value(v) = a {
                    v.zeroize();
                }
            });
            key
        })
    }

    /// Makes a fresh data key from the token's RNG and returns it with its wrapped form.
    ///
    /// # Errors
    /// As for [`HsmBackend::wrap_data_key`].
    pub fn generate_data_key(&self, kek_id: &KeyId) -> Result<(DataKey, WrappedKey)> {
        let mut bytes = Box::new([0u8; DATA_KEY_LEN]);
        self.pool.run(|s| {
            s.session
                .generate_random_slice(bytes.as_mut_slice())
                .map_err(|e| s.error(e, Op::General))
        })?;
        let data_key = DataKey(SecretBox::new(bytes));
        let wrapped = self.wrap_data_key(kek_id, &data_key)?;
        Ok((data_key, wrapped))
    }
}
