//! What the store keeps of secrets (migration `0003_secrets.sql`): metadata, and for each
//! version only a ciphertext and a wrapped data key (docs/secrets.md).

use super::StoreCall;

/// One version of a secret, envelope-encrypted.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretVersionRecord {
    pub name: String,
    pub version: u32,
    pub enabled: bool,
    /// The key-encryption key that wrapped `wrapped_dek`: `<hsm backend>:<CKA_ID>`.
    pub kek: String,
    /// The data key, encrypted in the HSM under `kek`.
    pub wrapped_dek: Vec<u8>,
    /// The AES-256-GCM nonce of `ciphertext`.
    pub nonce: Vec<u8>,
    /// The value, encrypted under the data key, with its tag.
    pub ciphertext: Vec<u8>,
    pub created_at: i64,
}

impl std::fmt::Debug for SecretVersionRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretVersionRecord")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("enabled", &self.enabled)
            .field("kek", &self.kek)
            .finish_non_exhaustive()
    }
}

impl SecretVersionRecord {
    /// The version's metadata.
    pub fn summary(&self) -> SecretVersionSummary {
        SecretVersionSummary {
            version: self.version,
            enabled: self.enabled,
            created_at: self.created_at,
        }
    }
}

/// A version's metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SecretVersionSummary {
    pub version: u32,
    pub enabled: bool,
    pub created_at: i64,
}

/// A secret's metadata and its versions', oldest first; never a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretSummary {
    pub name: String,
    pub description: String,
    pub created_at: i64,
    pub versions: Vec<SecretVersionSummary>,
}

/// The secret tables of the store (each method queues its request, as [`super::KeyStore`]'s
/// do). Every key store is one.
pub trait SecretStore {
    /// Adds a new secret with `first` as its version 1.
    ///
    /// # Errors
    /// [`StoreError::SecretExists`] if the name is taken.
    fn create_secret(&self, description: &str, first: &SecretVersionRecord) -> StoreCall<()>;

    /// The newest version number of a secret (0 if it has none).
    ///
    /// # Errors
    /// [`StoreError::SecretNotFound`].
    fn latest_secret_version(&self, name: &str) -> StoreCall<u32>;

    /// Adds the next version of a secret: `record.version` must be one past the newest.
    ///
    /// # Errors
    /// [`StoreError::SecretNotFound`]; [`StoreError::SecretVersionRace`] if another writer
    /// added that version first.
    fn add_secret_version(&self, record: &SecretVersionRecord) -> StoreCall<()>;

    /// One version of a secret, or with `None` its newest enabled one.
    ///
    /// # Errors
    /// [`StoreError::SecretNotFound`], [`StoreError::SecretVersionNotFound`].
    fn secret_version(&self, name: &str, version: Option<u32>) -> StoreCall<SecretVersionRecord>;

    /// Enables or disables one version of a secret; the version after the change.
    ///
    /// # Errors
    /// As [`SecretStore::secret_version`].
    fn set_secret_version_enabled(
        &self,
        name: &str,
        version: u32,
        enabled: bool,
    ) -> StoreCall<SecretVersionRecord>;

    /// Deletes a secret and all its versions.
    ///
    /// # Errors
    /// [`StoreError::SecretNotFound`].
    fn delete_secret(&self, name: &str) -> StoreCall<()>;

    /// At most `limit` secrets whose names start with `prefix` and sort after `after`, by
    /// name, with their versions' metadata.
    fn list_secrets(
        &self,
        prefix: &str,
        after: &str,
        limit: usize,
    ) -> StoreCall<Vec<SecretSummary>>;
}
