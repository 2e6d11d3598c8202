//! What the store keeps of secrets (migration `0003_secrets.sql`): metadata, and for each
//! version only a ciphertext and a wrapped data key (docs/secrets.md).

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
