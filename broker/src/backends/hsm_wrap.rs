//! Sealing's data keys in an HSM (`HsmKeys` in `hsm.rs`): wrapped and unwrapped inside the
//! token with `CKM_AES_KEY_WRAP_PAD` (RFC 5649) under an AES-256 key made for nothing else
//! (`CKA_WRAP` and `CKA_UNWRAP` only, so it can never decrypt what it wrapped). The data
//! key is in this process's memory only as zeroed-on-drop buffers.

use hsm_backend::{HsmBackend, KeyAlgorithm, KeyId, KeyLabel, KeySpec, KeyUsage, WrappedKey};
use sealed_format::{DataKey, KekKind};
use secrecy::{ExposeSecret, SecretBox};

use super::TypedHandle;
use super::hsm::HsmKeys;
use super::provide::{KeyRef, WrappedDataKey};
use crate::error::{BrokerError, Result};
use crate::store::HardwareHandle;

/// Wraps `data_key` under the key-encryption key `key`.
pub(super) async fn wrap(
    keys: &HsmKeys,
    key: KeyRef<'_>,
    data_key: &DataKey,
) -> Result<WrappedDataKey> {
    let id = KeyId::decode(key.handle)?;
    let mut bytes = Box::new([0u8; hsm_backend::DATA_KEY_LEN]);
    bytes.copy_from_slice(data_key.expose_secret());
    let copy = hsm_backend::DataKey::new(SecretBox::new(bytes));
    let wrapped = keys
        .run(move |hsm| Ok(hsm.wrap_data_key(&id, &copy)?))
        .await?;
    Ok(WrappedDataKey {
        kek: KekKind::HsmAesKeyWrap,
        bytes: wrapped.0,
    })
}

/// Unwraps a data key that [`wrap`] made under `key`.
pub(super) async fn unwrap(
    keys: &HsmKeys,
    key: KeyRef<'_>,
    wrapped: &WrappedDataKey,
) -> Result<DataKey> {
    if wrapped.kek != KekKind::HsmAesKeyWrap {
        return Err(BrokerError::FailedPrecondition(format!(
            "the data key was wrapped by another kind of key ({:?}), and this key wraps in an HSM",
            wrapped.kek
        )));
    }
    let id = KeyId::decode(key.handle)?;
    let bytes = WrappedKey(wrapped.bytes.clone());
    let opened = keys
        .run(move |hsm| Ok(hsm.unwrap_data_key(&id, &bytes)?))
        .await?;
    DataKey::from_slice(opened.expose())
        .map_err(|_| BrokerError::Internal("the HSM unwrapped a data key of another length".into()))
}

/// The broker's own key-encryption key `kbsys:<name>:kek:1` (label `kbsys:<name>:kek:v1`):
/// the one on the token, or a new one; and whether it was made now. An object under its
/// id that is not a sensitive, never-extractable AES-256 wrapping key is refused, not used.
///
/// # Errors
/// The token fails, or holds another kind of object under the id.
pub fn find_or_make_system_key(token: &HsmBackend, name: &str) -> Result<(KeyId, bool)> {
    let label = format!("kbsys:{name}:kek:v1");
    let id = KeyId::new(format!("kbsys:{name}:kek:1").into_bytes())
        .map_err(|e| BrokerError::Internal(e.to_string()))?;
    let spec = KeySpec::new(KeyAlgorithm::Aes256, KeyUsage::WrapUnwrap)
        .map_err(|e| BrokerError::Internal(e.to_string()))?;
    match token.describe_key(&id) {
        Ok(info) => {
            let sealed = info
                .protection
                .is_some_and(|p| p.sensitive && !p.extractable && p.never_extractable);
            if info.spec != spec || !sealed {
                return Err(BrokerError::Unavailable(format!(
                    "the object {label:?} on the token is not a sensitive, \
                     never-extractable AES-256 key-encryption key"
                )));
            }
            Ok((id, false))
        }
        Err(hsm_backend::HsmError::KeyNotFound(_)) => {
            let key_label =
                KeyLabel::new(label.clone()).map_err(|e| BrokerError::Internal(e.to_string()))?;
            token.generate_key(&id, &key_label, spec)?;
            tracing::info!(label = %label, "key-encryption key generated");
            Ok((id, true))
        }
        Err(e) => Err(e.into()),
    }
}

/// [`find_or_make_system_key`] as a backend call: the key's handle.
pub(super) async fn system_key(keys: &HsmKeys, name: &str) -> Result<(HardwareHandle, bool)> {
    let name = name.to_owned();
    let (id, made) = keys
        .run(move |hsm| find_or_make_system_key(hsm, &name))
        .await?;
    Ok((id.encode(), made))
}
