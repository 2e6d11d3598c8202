//! Sealing's data keys in an HSM (`HsmKeys` in `hsm.rs`): wrapped and unwrapped inside the
//! token with `CKM_AES_KEY_WRAP_PAD` (RFC 5649) under an AES-256 key made for nothing else
//! (`CKA_WRAP` and `CKA_UNWRAP` only, so it can never decrypt what it wrapped). The data
//! key is in this process's memory only as zeroed-on-drop buffers.

use hsm_backend::{KeyId, WrappedKey};
use sealed_format::{DataKey, KekKind};
use secrecy::{ExposeSecret, SecretBox};

use super::TypedHandle;
use super::hsm::HsmKeys;
use super::provide::{KeyRef, WrappedDataKey};
use crate::error::{BrokerError, Result};

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
