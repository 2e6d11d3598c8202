//! Sealed envelopes (docs/sealing.md) as the key manager sees them: each envelope's data
//! key made by the hardware's generator, wrapped under a key-encryption key's primary
//! version, and unwrapped again under the version its header names, with the checks that
//! make each refusal precise. The chunks are `sealed_format`'s; `crate::sealing` serves
//! and streams them.

use sealed_format::{DataKey, EncryptionContext, FormatError, Header, KekKind, NoncePrefix};
use secrecy::ExposeSecret;

use super::manager::KeyManager;
use super::ops::in_version;
use crate::authz::Action;
use crate::backends::{KeyRef, WrappedDataKey};
use crate::error::{BrokerError, Result};
use crate::request::Authorized;
use crate::store::{KeyRecord, Purpose};

/// Plaintext bytes per chunk when the caller names none.
pub const DEFAULT_CHUNK_SIZE: u32 = 64 * 1024;

/// The actions that make an envelope under a key.
const MAKES: &[Action] = &[
    Action::Seal,
    Action::SealStream,
    Action::GenerateDataKey,
    Action::GenerateDataKeyWithoutPlaintext,
];
/// The actions that open an envelope's data key.
const OPENS: &[Action] = &[
    Action::Unseal,
    Action::UnsealStream,
    Action::Decrypt,
    Action::Rewrap,
];

/// A fresh envelope: its header, and the data key that seals its chunks.
#[derive(Debug)]
pub struct NewEnvelope {
    pub header: Header,
    pub data_key: DataKey,
}

/// A sealed-format error as the caller sees it: a damaged or altered envelope is an
/// integrity failure, a malformed one an invalid argument; both say precisely what.
pub fn format_refusal(error: FormatError) -> BrokerError {
    use FormatError as F;
    match error {
        F::ChunkAuthentication { .. }
        | F::Truncated
        | F::TrailingData
        | F::ChunkLength { .. }
        | F::TooManyChunks => BrokerError::IntegrityFailure(format!("sealed: {error}")),
        F::Crypto(what) => BrokerError::Internal(what.into()),
        other => BrokerError::InvalidArgument(format!("sealed: {other}")),
    }
}

/// An I/O error of the sealed-format reader or writer, as the caller sees it.
pub fn io_refusal(error: &std::io::Error) -> BrokerError {
    match FormatError::from_io(error) {
        Some(format) => format_refusal(format.clone()),
        None => BrokerError::Internal(format!("sealing: {error}")),
    }
}

/// The caller's encryption context.
///
/// # Errors
/// Too many entries, or a key or value out of bounds (`INVALID_ARGUMENT`, saying which).
pub fn context_from<'a>(
    entries: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> Result<EncryptionContext> {
    let mut context = EncryptionContext::new();
    for (k, v) in entries {
        context
            .insert(k.clone(), v.clone())
            .map_err(|e| BrokerError::InvalidArgument(format!("context: {e}")))?;
    }
    Ok(context)
}

impl KeyManager {
    /// A new envelope under the key's primary version, with `chunk_size` (0: the default).
    ///
    /// # Errors
    /// Not a `WRAP_UNWRAP` key, an unusable key, a chunk size out of bounds, or the
    /// hardware refused (on a TPM: PCRs that left the version's state).
    pub async fn new_envelope(
        &self,
        auth: &Authorized,
        key: &KeyRecord,
        chunk_size: u32,
    ) -> Result<NewEnvelope> {
        auth.require_key(MAKES, &key.name)?;
        KeyManager::require_purpose(key, Purpose::WrapUnwrap)?;
        let chunk_size = match chunk_size {
            0 => DEFAULT_CHUNK_SIZE,
            size => size,
        };
        let version = self.usable(key, 0)?;
        let backend = self.backends.get(&key.backend)?;
        let random = backend.backend.random(super::ops::DATA_KEY_LEN).await?;
        let data_key = DataKey::from_slice(random.expose_secret()).map_err(format_refusal)?;
        let wrapped = backend
            .backend
            .wrap_data_key(KeyRef::of(key, &version), &data_key)
            .await
            .map_err(|e| in_version(e, key, &version, &backend))?;
        let prefix = NoncePrefix::random().map_err(format_refusal)?;
        let header = Header::new(
            wrapped.kek,
            key.name.clone(),
            version.version,
            chunk_size,
            prefix,
            wrapped.bytes,
        )
        .map_err(|e| match e {
            FormatError::InvalidChunkSize(_) => BrokerError::InvalidArgument(format!(
                "chunk_size: {e} (0 for {DEFAULT_CHUNK_SIZE})"
            )),
            other => format_refusal(other),
        })?;
        Ok(NewEnvelope { header, data_key })
    }

    /// The data key of an envelope with this header, unwrapped under the version it
    /// names, which must still be usable.
    ///
    /// # Errors
    /// Another key's envelope, a retired version, a wrapping that was altered, or one
    /// the hardware refuses (on a TPM: PCRs that left the sealed-to state).
    pub async fn open_envelope(
        &self,
        auth: &Authorized,
        key: &KeyRecord,
        header: &Header,
    ) -> Result<DataKey> {
        auth.require_key(OPENS, &key.name)?;
        KeyManager::require_purpose(key, Purpose::WrapUnwrap)?;
        if header.kek() == KekKind::HsmAesGcm {
            return Err(BrokerError::InvalidArgument(
                "sealed: this envelope was made by Encrypt under an encrypt-decrypt key; it \
                 opens with Decrypt"
                    .into(),
            ));
        }
        if header.key_name() != key.name {
            return Err(BrokerError::InvalidArgument(format!(
                "sealed: the envelope was sealed under key {:?}, not {:?}",
                header.key_name(),
                key.name
            )));
        }
        let version = self.usable(key, header.key_version())?;
        let backend = self.backends.get(&key.backend)?;
        let wrapped = WrappedDataKey {
            kek: header.kek(),
            bytes: header.wrapped_key().to_vec(),
        };
        let opened = backend
            .backend
            .unwrap_data_key(KeyRef::of(key, &version), &wrapped)
            .await;
        opened.map_err(|e| match e {
            BrokerError::IntegrityFailure(_) => BrokerError::IntegrityFailure(format!(
                "sealed: the wrapped data key does not open under key {:?} version {} \
                 (altered, or wrapped by another key)",
                key.name, version.version
            )),
            other => in_version(other, key, &version, &backend),
        })
    }

    /// The header with its data key wrapped again under the key's primary version; the
    /// same header when that version wraps it already.
    ///
    /// # Errors
    /// As [`KeyManager::open_envelope`], and the hardware refusing the new wrapping.
    pub async fn rewrap(
        &self,
        auth: &Authorized,
        key: &KeyRecord,
        header: &Header,
    ) -> Result<Header> {
        let data_key = self.open_envelope(auth, key, header).await?;
        let primary = self.usable(key, 0)?;
        if primary.version == header.key_version() {
            return Ok(header.clone());
        }
        let backend = self.backends.get(&key.backend)?;
        let wrapped = backend
            .backend
            .wrap_data_key(KeyRef::of(key, &primary), &data_key)
            .await
            .map_err(|e| in_version(e, key, &primary, &backend))?;
        header
            .rewrapped(wrapped.kek, primary.version, wrapped.bytes)
            .map_err(format_refusal)
    }
}
