//! `Encrypt` and `Decrypt` on AES-256 keys, in the sealed-data format (docs/sealing.md):
//! the payload under a fresh data key in STREAM chunks, the data key encrypted inside the
//! HSM with AES-256-GCM under the key and the caller's `aad` (kek kind `0x03`). A wrong
//! `aad` therefore fails in the HSM, before any chunk is read. `Decrypt` also still reads
//! the protobuf `Ciphertext` that `Encrypt` wrote before this format
//! (`softhsm-tests/tests/fixtures/pre-kbse/`), and RSA keys still write it (RSA-OAEP of
//! the plaintext itself).

use std::io::{Read, Write};
use std::sync::Arc;

use sealed_format::{
    DataKey, EncryptionContext, FormatError, Header, KekKind, NoncePrefix, SealWriter, UnsealReader,
};
use secrecy::{ExposeSecret, SecretSlice};
use zeroize::Zeroizing;

use super::ops::{DATA_KEY_LEN, in_version};
use super::sealing::{format_refusal, io_refusal};
use crate::backends::{KeyRef, NamedBackend, Sealed};
use crate::error::{BrokerError, Result};
use crate::store::{KeyRecord, VersionRecord};

/// The chunk size of `Encrypt`'s envelopes: one chunk holds the largest plaintext.
const CHUNK_SIZE: u32 = 64 * 1024;
/// The AES-GCM nonce before the encrypted data key.
const NONCE_LEN: usize = 12;

/// Whether `ciphertext` is in the sealed-data format rather than the older protobuf one.
pub fn is_sealed(ciphertext: &[u8]) -> bool {
    ciphertext.starts_with(&sealed_format::MAGIC)
}

/// Encrypts `plaintext` (size already checked) under `version`.
pub async fn encrypt(
    backend: Arc<NamedBackend>,
    key: &KeyRecord,
    version: &VersionRecord,
    plaintext: SecretSlice<u8>,
    aad: Vec<u8>,
) -> Result<Vec<u8>> {
    let random = backend.backend.random(DATA_KEY_LEN).await?;
    let data_key = DataKey::from_slice(random.expose_secret()).map_err(format_refusal)?;
    let wrapped = backend
        .backend
        .encrypt(KeyRef::of(key, version), random, aad)
        .await
        .map_err(|e| in_version(e, key, version, &backend))?;
    let mut wrapped_key = wrapped.iv;
    wrapped_key.extend_from_slice(&wrapped.data);
    let prefix = NoncePrefix::random().map_err(format_refusal)?;
    let header = Header::new(
        KekKind::HsmAesGcm,
        key.name.clone(),
        version.version,
        CHUNK_SIZE,
        prefix,
        wrapped_key,
    )
    .map_err(format_refusal)?;
    let len = plaintext.expose_secret().len();
    let out = Vec::with_capacity(header.encode().len() + len + 16);
    SealWriter::new(out, &header, data_key, &EncryptionContext::new())
        .and_then(|mut writer| {
            writer.write_all(plaintext.expose_secret())?;
            writer.finish()
        })
        .map_err(|e| io_refusal(&e))
}

/// The key version an `Encrypt` envelope names, and its header and length.
///
/// # Errors
/// Not such an envelope, or another key's.
pub fn parse(key: &KeyRecord, ciphertext: &[u8]) -> Result<(Header, usize)> {
    let (header, len) = Header::parse(ciphertext).map_err(|e| match e {
        FormatError::Truncated => {
            BrokerError::InvalidArgument("ciphertext: it ends inside its header".into())
        }
        other => format_refusal(other),
    })?;
    if header.kek() != KekKind::HsmAesGcm {
        return Err(BrokerError::InvalidArgument(
            "ciphertext: a sealed envelope under a wrap-unwrap key; it opens with Unseal".into(),
        ));
    }
    if header.key_name() != key.name {
        return Err(BrokerError::InvalidArgument(
            "ciphertext: it was made by another key".into(),
        ));
    }
    Ok((header, len))
}

/// Decrypts an envelope that [`parse`] read, with the version it names.
pub async fn decrypt(
    backend: Arc<NamedBackend>,
    key: &KeyRecord,
    version: &VersionRecord,
    (header, header_len, ciphertext): (&Header, usize, &[u8]),
    aad: Vec<u8>,
) -> Result<SecretSlice<u8>> {
    let (iv, data) = header
        .wrapped_key()
        .split_at_checked(NONCE_LEN)
        .ok_or_else(|| BrokerError::InvalidArgument("ciphertext: a truncated data key".into()))?;
    let sealed = Sealed {
        iv: iv.to_vec(),
        data: data.to_vec(),
    };
    let opened = backend
        .backend
        .decrypt(KeyRef::of(key, version), sealed, aad)
        .await
        .map_err(|e| match e {
            BrokerError::IntegrityFailure(_) => BrokerError::IntegrityFailure(
                "authentication failed: the ciphertext's data key does not open with this \
                 associated data (the aad, the ciphertext or the key differ)"
                    .into(),
            ),
            other => in_version(other, key, version, &backend),
        })?;
    let data_key = DataKey::from_slice(opened.expose_secret())
        .map_err(|_| BrokerError::IntegrityFailure("ciphertext: its data key is altered".into()))?;
    let payload = ciphertext.get(header_len..).unwrap_or_default();
    let mut plaintext = Zeroizing::new(Vec::with_capacity(payload.len()));
    UnsealReader::new(payload, header, &data_key, &EncryptionContext::new())
        .map_err(format_refusal)?
        .read_to_end(&mut plaintext)
        .map_err(|e| io_refusal(&e))?;
    Ok(SecretSlice::from(std::mem::take(&mut *plaintext)))
}
