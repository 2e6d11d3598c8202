//! The secret store (docs/secrets.md): secrets put by administrators, kept envelope-
//! encrypted, and released to attested workloads with HPKE.
//!
//! At rest, each version is encrypted (AES-256-GCM, [`envelope`]) under its own data key
//! from the HSM's generator, and the store keeps that data key only wrapped (RFC 5649) by
//! a key-encryption key that is generated in the HSM, sensitive and never extractable.
//! A copy of the store without the HSM reveals nothing. A release unwraps the data key in
//! the HSM, decrypts in this process, and seals the value with HPKE to the KEM key of the
//! caller's verified attestation token (`attest::release`); the plaintext lives only in
//! wiped buffers for the length of the call.

mod envelope;
mod lease_service;
mod leases;
mod postgres;
mod service;

pub use leases::{Issued, Leases, role_of};
pub use service::{MAX_VALUE_LEN, SecretServiceImpl};

use std::sync::Arc;

use attest::release::{self, KemPublicKey, Sealed};
use hsm_backend::{KeyId, WrappedKey};
use secrecy::{ExposeSecret, SecretBox};
use tokio::sync::OnceCell;
use zeroize::Zeroizing;

use crate::authz::Action;
use crate::backends::{Backends, HsmKeys};
use crate::ca::authority::unix_now;
use crate::config::SecretsConfig;
use crate::error::{BrokerError, Result};
use crate::request::Authorized;
use crate::store::{KeyStore, SecretSummary, SecretVersionRecord};

/// The key-encryption key's name: `CKA_ID` `kbsys:secrets:kek:1` (not a managed key: no
/// `KeyService` call can name it, and the orphan scan leaves `kbsys:` objects alone).
const KEK_NAME: &str = "secrets";
/// Its `CKA_ID`.
const KEK_ID: &[u8] = b"kbsys:secrets:kek:1";

/// The secret store of one broker.
pub struct Secrets {
    hsm: Arc<HsmKeys>,
    backend: String,
    store: Arc<dyn KeyStore>,
    /// Found or made on first use.
    kek: OnceCell<KeyId>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

/// The secret store of `config`; `None` without `[secrets] backend`.
///
/// # Errors
/// The backend is not an HSM.
pub fn open(
    config: &SecretsConfig,
    backends: &Backends,
    store: Arc<dyn KeyStore>,
) -> Result<Option<Arc<Secrets>>> {
    let Some(name) = config.backend.as_deref() else {
        return Ok(None);
    };
    let hsm = backends.get_as::<HsmKeys>(name)?.ok_or_else(|| {
        BrokerError::FailedPrecondition(format!(
            "secrets.backend: the key-encryption key lives in an HSM; backend {name:?} is not one"
        ))
    })?;
    Ok(Some(Arc::new(Secrets {
        hsm,
        backend: name.to_string(),
        store,
        kek: OnceCell::new(),
    })))
}

impl Secrets {
    async fn kek(&self) -> Result<KeyId> {
        self.kek
            .get_or_try_init(|| {
                self.hsm.run(|token| {
                    crate::backends::find_or_make_system_key(token, KEK_NAME).map(|(id, _)| id)
                })
            })
            .await
            .cloned()
    }

    /// `value` encrypted for `name`'s version `version`, under a fresh data key wrapped in
    /// the HSM.
    async fn encrypt(&self, name: &str, version: u32, value: &[u8]) -> Result<SecretVersionRecord> {
        let kek = self.kek().await?;
        let kek_name = format!("{}:{}", self.backend, String::from_utf8_lossy(KEK_ID));
        let (name, value) = (name.to_string(), Zeroizing::new(value.to_vec()));
        self.hsm
            .run(move |token| {
                let random = token.random(hsm_backend::DATA_KEY_LEN)?;
                let mut bytes = Box::new([0u8; hsm_backend::DATA_KEY_LEN]);
                bytes.copy_from_slice(random.expose_secret());
                let data_key = hsm_backend::DataKey::new(SecretBox::new(bytes));
                let (nonce, ciphertext) = envelope::seal(&data_key, &name, version, &value)?;
                let wrapped = token.wrap_data_key(&kek, &data_key)?;
                Ok(SecretVersionRecord {
                    name,
                    version,
                    enabled: true,
                    kek: kek_name,
                    wrapped_dek: wrapped.0,
                    nonce,
                    ciphertext,
                    created_at: i64::try_from(unix_now()).unwrap_or(i64::MAX),
                })
            })
            .await
    }

    /// Creates `name` with `value` as version 1.
    ///
    /// # Errors
    /// `ALREADY_EXISTS`; `UNAVAILABLE` when the HSM fails.
    pub async fn put(
        &self,
        auth: &Authorized,
        name: &str,
        description: &str,
        value: &[u8],
    ) -> Result<SecretVersionRecord> {
        auth.require_secret(Action::PutSecret, name)?;
        let record = self.encrypt(name, 1, value).await?;
        self.store.create_secret(description, &record).await?;
        Ok(record)
    }

    /// Adds the next version of `name` with `value`.
    ///
    /// # Errors
    /// `NOT_FOUND`; `FAILED_PRECONDITION` when another rotation took the version first.
    pub async fn rotate(
        &self,
        auth: &Authorized,
        name: &str,
        value: &[u8],
    ) -> Result<SecretVersionRecord> {
        auth.require_secret(Action::RotateSecret, name)?;
        let next = self
            .store
            .latest_secret_version(name)
            .await?
            .saturating_add(1);
        let record = self.encrypt(name, next, value).await?;
        self.store.add_secret_version(&record).await?;
        Ok(record)
    }

    /// Enables or disables one version.
    ///
    /// # Errors
    /// `NOT_FOUND`, or `FAILED_PRECONDITION` for a version that does not exist.
    pub async fn set_enabled(
        &self,
        auth: &Authorized,
        name: &str,
        version: u32,
        enabled: bool,
    ) -> Result<SecretVersionRecord> {
        let action = match enabled {
            true => Action::EnableSecretVersion,
            false => Action::DisableSecretVersion,
        };
        auth.require_secret(action, name)?;
        Ok(self
            .store
            .set_secret_version_enabled(name, version, enabled)
            .await?)
    }

    /// Deletes `name` and its versions' wrapped data keys.
    ///
    /// # Errors
    /// `NOT_FOUND`.
    pub async fn delete(&self, auth: &Authorized, name: &str) -> Result<()> {
        auth.require_secret(Action::DeleteSecret, name)?;
        Ok(self.store.delete_secret(name).await?)
    }

    /// Secrets whose names start with `prefix`, after `after`, at most `limit`.
    ///
    /// # Errors
    /// The store's.
    pub async fn list(
        &self,
        auth: &Authorized,
        prefix: &str,
        after: &str,
        limit: usize,
    ) -> Result<Vec<SecretSummary>> {
        auth.require_broker(Action::ListSecrets)?;
        Ok(self.store.list_secrets(prefix, after, limit).await?)
    }

    /// The newest enabled version of `name`, for the broker's own use (the password of a
    /// `[[secrets.postgres]]` role, which its configuration names): no caller, no policy.
    ///
    /// # Errors
    /// `NOT_FOUND`; `FAILED_PRECONDITION` when no version is enabled; `UNAVAILABLE`.
    pub(crate) async fn value_for_broker(&self, name: &str) -> Result<Zeroizing<Vec<u8>>> {
        let record = self.store.secret_version(name, None).await?;
        let kek = self.kek().await?;
        self.hsm
            .run(move |token| {
                let data_key = token.unwrap_data_key(&kek, &WrappedKey(record.wrapped_dek))?;
                envelope::open(
                    &data_key,
                    &record.name,
                    record.version,
                    &record.nonce,
                    &record.ciphertext,
                )
            })
            .await
    }

    /// `len` bytes from the HSM's generator.
    ///
    /// # Errors
    /// `UNAVAILABLE` when the HSM fails.
    pub(crate) async fn random(&self, len: usize) -> Result<Zeroizing<Vec<u8>>> {
        self.hsm
            .run(move |token| {
                let bytes = token.random(len)?;
                Ok(Zeroizing::new(bytes.expose_secret().to_vec()))
            })
            .await
    }

    /// `name`'s version `version` (`None`: the newest enabled), sealed to `recipient` for
    /// the caller of `auth`: the version, the HPKE output and its `info`.
    ///
    /// # Errors
    /// `NOT_FOUND`; `FAILED_PRECONDITION` for a disabled or missing version;
    /// `INVALID_ARGUMENT` if the stored version was altered; `UNAVAILABLE` when the HSM
    /// fails.
    pub async fn release(
        &self,
        auth: &Authorized,
        name: &str,
        version: Option<u32>,
        recipient: &KemPublicKey,
    ) -> Result<(u32, Sealed, Vec<u8>)> {
        auth.require_secret(Action::GetSecret, name)?;
        let record = self.store.secret_version(name, version).await?;
        if !record.enabled {
            return Err(BrokerError::FailedPrecondition(format!(
                "secret {name:?} version {} is disabled",
                record.version
            )));
        }
        let info = release::release_info(name, u64::from(record.version), auth.caller().as_str())
            .map_err(|e| BrokerError::InvalidArgument(e.to_string()))?;
        let kek = self.kek().await?;
        let recipient = *recipient;
        let version = record.version;
        let sealing_info = info.clone();
        let sealed = self
            .hsm
            .run(move |token| {
                let data_key = token.unwrap_data_key(&kek, &WrappedKey(record.wrapped_dek))?;
                let value = envelope::open(
                    &data_key,
                    &record.name,
                    record.version,
                    &record.nonce,
                    &record.ciphertext,
                )?;
                release::seal(&recipient, &sealing_info, &value)
                    .map_err(|e| BrokerError::InvalidArgument(format!("the KEM key: {e}")))
            })
            .await?;
        tracing::info!(caller = %auth.caller(), secret = name, version, "secret released");
        Ok((version, sealed, info))
    }
}
