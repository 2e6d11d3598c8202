//! Metadata storage: key names, versions, hardware handles (HSM object ids, TPM blobs),
//! registered backends and the authorization policy. Never key material.
//!
//! Every method is one transaction, and state changes are compare-and-set, so that
//! several broker replicas can later share one PostgreSQL database behind this trait.
//! [`sqlite::SqliteStore`] is the embedded default.
//!
//! Every method returns a [`StoreCall`] at once: the blocking work runs on the store's
//! own threads, never on the async workers, and the caller `.await`s the answer (or
//! `wait()`s for it where blocking is fine: start-up, tests).

pub mod cache;
mod call;
pub mod integrity;
mod leases;
pub mod page;
mod secrets;
pub mod sqlite;

pub use call::StoreCall;
pub use leases::{LeaseRecord, LeaseStore};
pub use page::{KeyPage, KeyQuery, decode_token, page_token_after};
pub use secrets::{SecretStore, SecretSummary, SecretVersionRecord, SecretVersionSummary};

use std::collections::BTreeMap;
use std::fmt;

/// Store failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("key {0:?} already exists")]
    KeyExists(String),
    #[error("key {0:?} not found")]
    KeyNotFound(String),
    #[error("key {name:?} has no version {version}")]
    VersionNotFound { name: String, version: u32 },
    /// A compare-and-set lost: the key was not in an expected state.
    #[error("key {name:?} is {actual:?}, expected one of {expected}")]
    StateConflict {
        name: String,
        actual: KeyState,
        expected: String,
    },
    #[error("secret {0:?} already exists")]
    SecretExists(String),
    #[error("secret {0:?} not found")]
    SecretNotFound(String),
    /// No such version, or with `None` no enabled one.
    #[error("secret {name:?} has no {}", match version {
        Some(v) => format!("version {v}"),
        None => "enabled version".to_string(),
    })]
    SecretVersionNotFound { name: String, version: Option<u32> },
    /// Another writer added version `version` first.
    #[error("secret {name:?} already has a version {version}; retry")]
    SecretVersionRace { name: String, version: u32 },
    #[error("lease {0:?} not found")]
    LeaseNotFound(String),
    /// The caller holds as many live leases on the role as it may.
    #[error(
        "{owner} holds {held} live leases on {role:?}, its most; revoke one or wait for one to end"
    )]
    LeaseLimit {
        role: String,
        owner: String,
        held: u64,
    },
    /// The lease was revoked or has expired.
    #[error("lease {id:?} is {why}")]
    LeaseNotLive { id: String, why: &'static str },
    #[error("backend {0:?} already registered")]
    BackendExists(String),
    #[error("database schema version {found} is newer than this broker ({supported})")]
    SchemaTooNew { found: u32, supported: u32 },
    /// A listing request the store cannot run (a bad page token, too many tag filters).
    #[error("{0}")]
    InvalidQuery(String),
    /// The disk (or the database's size limit) is full: nothing was written.
    #[error("the key store's disk is full")]
    Full,
    /// Too many requests wait for the store already; the caller may retry.
    #[error("the store is busy ({0} requests queued)")]
    Busy(usize),
    /// A row failed its integrity check (`integrity`): the database was edited outside
    /// the broker. The message names the record, never its content.
    #[error("{0}")]
    Tampered(String),
    /// The database has a store key that has not been unwrapped: nothing is read or
    /// written until it is (`crate::store_key`).
    #[error("the store is protected by a store key and is not unlocked")]
    Locked,
    #[error("store: {0}")]
    Database(String),
}

/// Store results.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// What a key is for; one purpose per key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Purpose {
    SignVerify,
    EncryptDecrypt,
    /// A key-encryption key for sealing (docs/sealing.md).
    WrapUnwrap,
}

/// The key's algorithm; every version has the same one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    EcP256,
    EcP384,
    Rsa2048,
    Rsa3072,
    Rsa4096,
    Aes256,
}

/// Key lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyState {
    /// Version 1 is being made in hardware; invisible to callers.
    Creating,
    Enabled,
    Disabled,
    Revoked,
    PendingDestruction,
    Destroyed,
}

/// Version state. Which version is primary is [`KeyRecord::primary_version`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VersionState {
    /// Being made in hardware (the intent was written first, so a crash leaves a trace).
    Creating,
    Active,
    /// Refuses every use; its hardware object has been destroyed.
    Retired,
}

/// Where a version lives in hardware: opaque bytes, tagged with the kind of backend that
/// made them (`handle_kind` in the store). Only that backend's module reads the bytes, as
/// its own typed handle (an HSM's `CKA_ID`, a TPM's wrapped blob); see
/// `crate::backends::TypedHandle`. The store keeps them and never looks inside.
#[derive(Clone, PartialEq, Eq)]
pub struct HardwareHandle {
    kind: String,
    bytes: Vec<u8>,
}

impl HardwareHandle {
    /// A handle of `kind` (the backend kind, e.g. `"hsm"`) made of `bytes`.
    pub fn new(kind: impl Into<String>, bytes: Vec<u8>) -> HardwareHandle {
        HardwareHandle {
            kind: kind.into(),
            bytes,
        }
    }

    /// The kind of backend that made it.
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// The bytes, as the backend encoded them.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// Short handles (object ids) in hex; long ones (wrapped blobs) by length only.
impl fmt::Debug for HardwareHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 32;
        if self.bytes.len() <= SHOWN {
            write!(f, "{}({})", self.kind, hex::encode(&self.bytes))
        } else {
            write!(f, "{}({} bytes)", self.kind, self.bytes.len())
        }
    }
}

/// One version of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionRecord {
    pub version: u32,
    pub state: VersionState,
    pub handle: HardwareHandle,
    /// Unix seconds.
    pub created_at: i64,
}

/// A key and all its versions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    pub name: String,
    pub algorithm: Algorithm,
    pub purpose: Purpose,
    /// The name of the registered backend that holds every version.
    pub backend: String,
    pub state: KeyState,
    /// 0 while version 1 is being created.
    pub primary_version: u32,
    pub created_at: i64,
    /// Unix seconds; `Some` only while pending destruction.
    pub destroy_after: Option<i64>,
    pub tags: BTreeMap<String, String>,
    /// Ascending by version.
    pub versions: Vec<VersionRecord>,
    /// The class chosen at creation: `ReleaseKey` may wrap it to an attested workload.
    pub releasable: bool,
}

impl KeyRecord {
    /// A version by number.
    pub fn version(&self, version: u32) -> Option<&VersionRecord> {
        self.versions.iter().find(|v| v.version == version)
    }
}

/// What [`KeyStore::begin_create`] needs.
#[derive(Debug, Clone)]
pub struct NewKey {
    pub name: String,
    pub algorithm: Algorithm,
    pub purpose: Purpose,
    pub backend: String,
    pub tags: BTreeMap<String, String>,
    pub created_at: i64,
    /// The key class `releasable`, for good.
    pub releasable: bool,
}

/// A version whose creation started and never completed (the broker stopped in
/// between). Startup reconciliation removes its hardware object, if any, and the record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingVersion {
    pub name: String,
    pub backend: String,
    pub version: u32,
    pub handle: HardwareHandle,
}

/// A registered backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendRecord {
    Hsm {
        name: String,
        module_path: String,
        token_label: String,
        /// Exactly one of these is set; the PIN itself is never stored.
        user_pin_file: Option<String>,
        user_pin_env: Option<String>,
    },
    Tpm {
        name: String,
        tcti: String,
    },
}

impl BackendRecord {
    pub fn name(&self) -> &str {
        match self {
            BackendRecord::Hsm { name, .. } | BackendRecord::Tpm { name, .. } => name,
        }
    }
}

/// One version of the workload CA (`crate::ca`): its key's handle in an HSM and its
/// certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaRecord {
    pub version: u32,
    /// The `[[hsm]]` that holds the key.
    pub backend: String,
    /// The key's CKA_ID.
    pub key_id: Vec<u8>,
    /// The CA certificate, DER; empty while an intermediate CA waits for
    /// `keybroker ca install`.
    pub certificate: Vec<u8>,
    /// The certificates above it up to the root, PEM; empty for a self-signed CA.
    pub chain_pem: String,
    pub created_at: i64,
    /// When it starts signing; until then it is in the trust bundle only.
    pub activates_at: i64,
}

/// The metadata store. Each method queues its request and returns at once; the
/// [`StoreCall`] resolves when the store has run it (see the module doc).
pub trait KeyStore: SecretStore + LeaseStore + Send + Sync + std::fmt::Debug + 'static {
    /// Records the intent to create version 1 of a new key: the key in `Creating` state
    /// with one `Creating` version. Written *before* the hardware object is made.
    ///
    /// # Errors
    /// [`StoreError::KeyExists`] if the name is taken (in any state, even `Destroyed`:
    /// names are never reused).
    fn begin_create(&self, key: &NewKey, handle: &HardwareHandle) -> StoreCall<()>;

    /// Records the intent to add the next version to an `Enabled` key, returning its
    /// number.
    ///
    /// # Errors
    /// [`StoreError::StateConflict`] unless the key is `Enabled`.
    fn begin_version(&self, name: &str, handle: &HardwareHandle, created_at: i64)
    -> StoreCall<u32>;

    /// The hardware object exists: the version becomes `Active` (with its final handle,
    /// e.g. the TPM blob), and the key's primary version. A `Creating` key becomes
    /// `Enabled`.
    fn complete_version(
        &self,
        name: &str,
        version: u32,
        handle: &HardwareHandle,
    ) -> StoreCall<KeyRecord>;

    /// Drops a `Creating` version (and the key, if that was version 1).
    fn abandon_version(&self, name: &str, version: u32) -> StoreCall<()>;

    /// Every `Creating` version, for startup reconciliation.
    fn pending_versions(&self) -> StoreCall<Vec<PendingVersion>>;

    /// A key that is not `Creating`.
    fn get(&self, name: &str) -> StoreCall<Option<KeyRecord>>;

    /// One page of the keys (not `Creating`) that match `query`, by name. The store
    /// filters and pages; it never loads more than the page.
    fn list(&self, query: &KeyQuery) -> StoreCall<KeyPage>;

    /// How many keys (not `Creating`, `Destroyed` included) each backend holds; a
    /// backend with none is absent.
    fn count_keys_by_backend(&self) -> StoreCall<BTreeMap<String, u64>>;

    /// Compare-and-set of the key state; `destroy_after` is stored as given.
    ///
    /// # Errors
    /// [`StoreError::StateConflict`] unless the current state is in `expected`.
    fn set_state(
        &self,
        name: &str,
        expected: &[KeyState],
        new: KeyState,
        destroy_after: Option<i64>,
    ) -> StoreCall<KeyRecord>;

    /// Marks a non-primary `Active` version `Retired`.
    fn retire_version(&self, name: &str, version: u32) -> StoreCall<KeyRecord>;

    /// Keys `PendingDestruction` (or `Revoked` with a destruction scheduled) whose
    /// `destroy_after` is at or before `now`.
    fn due_for_destruction(&self, now: i64) -> StoreCall<Vec<KeyRecord>>;

    /// The handle bytes of every version the store knows for a backend, in any state but
    /// `Destroyed` keys and `Retired` versions (including `Creating` ones): what the
    /// orphan scan compares the backend's objects with.
    fn known_handles(&self, backend: &str) -> StoreCall<Vec<Vec<u8>>>;

    /// Registers a backend.
    ///
    /// # Errors
    /// [`StoreError::BackendExists`] if the name is taken.
    fn add_backend(&self, backend: &BackendRecord) -> StoreCall<()>;

    /// Registered backends, by name.
    fn backends(&self) -> StoreCall<Vec<BackendRecord>>;

    /// Stores the current authorization policy text.
    fn set_policy(&self, text: &str) -> StoreCall<()>;

    /// The stored authorization policy text, if one was set through the API.
    fn policy(&self) -> StoreCall<Option<String>>;

    /// Every version of the workload CA, oldest first.
    fn ca_versions(&self) -> StoreCall<Vec<CaRecord>>;

    /// Records a CA version, or replaces the one of the same number (an intermediate CA
    /// whose certificate is installed).
    fn put_ca_version(&self, record: &CaRecord) -> StoreCall<()>;

    /// Forgets CA versions older than `version`, once no certificate they signed can
    /// still be valid.
    fn drop_ca_versions_before(&self, version: u32) -> StoreCall<()>;

    /// A counter that every finished write request increases, before its [`StoreCall`]
    /// resolves (whether or not the caller still waits for it). A cache of reads is
    /// current while this has not moved since it was filled.
    fn generation(&self) -> u64;
}
