//! Keys and their lifecycle: creation with a crash-safe intent record, rotation,
//! state changes, destruction after a waiting period, and start-up reconciliation
//! between the store and the hardware.
//!
//! Creation order: the store records a `Creating` version with the backend's intent
//! handle (for an HSM, the object id the broker chose), *then* the backend makes the
//! object, *then* the store marks it active. A crash at any point leaves either nothing,
//! or a `Creating` record that [`KeyManager::reconcile`] resolves at the next start by
//! destroying the object (if it was made) and dropping the record. Objects with the
//! broker's label prefix that the store does not know at all are orphans, reported or
//! destroyed by configuration. The hardware is reached only through
//! [`crate::backends::KeyBackend`]: nothing here knows which kind holds a key.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use super::change::{Made, destroy_on, detached, make_version};
pub use super::spec::check_key_name;
use super::spec::check_tags;

use crate::authz::Action;
use crate::backends::{Backends, NamedBackend};
use crate::config::KeysConfig;
use crate::error::{BrokerError, Result};
use crate::request::Authorized;
use crate::store::cache::CachedKeyStore;
use crate::store::{
    Algorithm, HardwareHandle, KeyPage, KeyQuery, KeyRecord, KeyState, KeyStore, NewKey, Purpose,
    VersionRecord, VersionState,
};

/// Label prefix of every object the broker makes where the hardware keeps names:
/// `kb:<key name>:v<version>` (see `super::spec::label`).
pub const LABEL_PREFIX: &str = "kb:";
/// Longest key name (a PKCS#11 label must fit in 128 bytes).
pub const MAX_NAME_LEN: usize = 100;
const SECONDS_PER_DAY: i64 = 86_400;

/// What start-up reconciliation found and did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reconciliation {
    /// Interrupted creations whose hardware object existed and was destroyed.
    pub half_made_destroyed: usize,
    /// Interrupted creations dropped from the store.
    pub pending_dropped: usize,
    /// Objects with the broker's label that the store does not know:
    /// `(backend, handle hex, label)`.
    pub orphans: Vec<(String, String, String)>,
    /// Orphans destroyed (`keys.orphans = "destroy"`).
    pub orphans_destroyed: usize,
}

/// The key service's logic, independent of gRPC.
#[derive(Debug)]
pub struct KeyManager {
    pub(super) store: Arc<dyn KeyStore>,
    pub(super) backends: Arc<Backends>,
    pub(super) config: KeysConfig,
    /// Public keys (SPKI DER) by key name and version. A version's key pair never
    /// changes and names are never reused, so entries never go stale; whether a version
    /// may still be used is checked from the store on every call, not here.
    public_keys: Mutex<HashMap<VersionName, Arc<[u8]>>>,
}

/// A key version: the key's name and the version number.
type VersionName = (String, u32);

/// Most public keys cached; past it the cache starts over.
const MAX_CACHED_PUBLIC_KEYS: usize = 10_000;

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl KeyManager {
    /// Reads of key records on the request path are cached in front of `store`
    /// ([`CachedKeyStore`]); every change goes through the manager and clears it.
    pub fn new(store: Arc<dyn KeyStore>, backends: Arc<Backends>, config: KeysConfig) -> Self {
        KeyManager {
            store: Arc::new(CachedKeyStore::new(store)),
            backends,
            config,
            public_keys: Mutex::default(),
        }
    }

    /// Every registered backend.
    pub fn backends(&self) -> &Arc<Backends> {
        &self.backends
    }

    /// The key a call names, for the gate to decide on: `None` when there is no such key
    /// (or the name is not a valid key name), so that the caller is authorized against an
    /// attribute-less resource before it learns anything.
    ///
    /// # Errors
    /// The store cannot be read.
    pub async fn find_for_authorization(&self, name: &str) -> Result<Option<KeyRecord>> {
        if check_key_name(name).is_err() {
            return Ok(None);
        }
        Ok(self.store.get(name).await?)
    }

    /// One page of the keys that `query` selects (`ListKeys`): the store filters by name
    /// prefix and tags and pages in SQL, never loading more than the page.
    ///
    /// # Errors
    /// The store cannot be read, or the page token is not one it issued.
    pub async fn list(&self, auth: &Authorized, query: &KeyQuery) -> Result<KeyPage> {
        auth.require_broker(Action::ListKeys)?;
        Ok(self.store.list(query).await?)
    }

    /// The name of the backend a new key goes to: the requested one, else the configured
    /// default, else the first registered. `None` when there is none. Reveals nothing the
    /// configuration does not say: it does not check that the backend exists.
    pub fn backend_name_for_new_key(&self, requested: &str) -> Option<String> {
        if !requested.is_empty() {
            return Some(requested.to_string());
        }
        self.config
            .default_backend
            .clone()
            .or_else(|| self.backends.all().first().map(|b| b.name.clone()))
    }

    /// The backend a new key goes to.
    ///
    /// # Errors
    /// No backend is registered, or the named one is not.
    pub fn backend_for_new_key(&self, requested: &str) -> Result<Arc<NamedBackend>> {
        let name = self
            .backend_name_for_new_key(requested)
            .ok_or_else(|| BrokerError::FailedPrecondition("no backend is registered".into()))?;
        self.backends.get(&name)
    }

    /// Validates a creation request without touching hardware.
    pub fn check_new_key(&self, key: &NewKey, backend: &NamedBackend) -> Result<()> {
        check_key_name(&key.name)?;
        check_tags(&key.tags)?;
        backend.backend.check_spec(key.algorithm, key.purpose)?;
        let releasable_spec = key.algorithm == Algorithm::Aes256
            && key.purpose == Purpose::EncryptDecrypt
            && backend.backend.can_release();
        if key.releasable && !releasable_spec {
            return Err(BrokerError::InvalidArgument(
                "releasable: only AES-256 encrypt/decrypt keys in an HSM can be releasable".into(),
            ));
        }
        Ok(())
    }

    /// Creates a key (version 1). The steps run in a task of their own ([`detached`]):
    /// a caller that goes away (a deadline, a dropped connection) cannot stop them between
    /// the intent and the object, so the creation completes, or undoes itself.
    pub async fn create(
        &self,
        auth: &Authorized,
        key: NewKey,
        backend: Arc<NamedBackend>,
    ) -> Result<KeyRecord> {
        auth.require_key(&[Action::CreateKey], &key.name)?;
        self.check_new_key(&key, &backend)?;
        let store = self.store.clone();
        detached(async move {
            let intent = backend.backend.intent();
            store.begin_create(&key, &intent).await?;
            let made = Made {
                name: key.name,
                version: 1,
                algorithm: key.algorithm,
                purpose: key.purpose,
                releasable: key.releasable,
            };
            make_version(&store, made, &backend, intent).await
        })
        .await
    }

    /// Adds a version and makes it primary; like [`KeyManager::create`], it runs to its
    /// end whatever happens to the caller.
    pub async fn rotate(&self, auth: &Authorized, name: &str) -> Result<KeyRecord> {
        auth.require_key(&[Action::RotateKey], name)?;
        let key = self.get(name).await?;
        let backend = self.backends.get(&key.backend)?;
        let store = self.store.clone();
        detached(async move {
            let intent = backend.backend.intent();
            let version = store.begin_version(&key.name, &intent, now()).await?;
            let made = Made {
                name: key.name,
                version,
                algorithm: key.algorithm,
                purpose: key.purpose,
                releasable: key.releasable,
            };
            make_version(&store, made, &backend, intent).await
        })
        .await
    }

    /// The public key of a usable version, SPKI DER: read from the hardware once, then
    /// from memory (`Verify` needs it on every call).
    ///
    /// # Errors
    /// The backend is gone or the hardware cannot read the key.
    pub(super) async fn cached_public_key(
        &self,
        key: &KeyRecord,
        version: &VersionRecord,
    ) -> Result<Arc<[u8]>> {
        let id = (key.name.clone(), version.version);
        let cache = || {
            self.public_keys
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
        };
        if let Some(spki) = cache().get(&id) {
            return Ok(spki.clone());
        }
        let backend = self.backends.get(&key.backend)?;
        let spki: Arc<[u8]> = super::ops::public_key(backend, key, version).await?.into();
        let mut cached = cache();
        if cached.len() >= MAX_CACHED_PUBLIC_KEYS {
            cached.clear();
        }
        cached.insert(id, spki.clone());
        Ok(spki)
    }

    /// A key by name.
    ///
    /// # Errors
    /// An invalid name, an unknown key, or the store cannot be read.
    pub async fn get(&self, name: &str) -> Result<KeyRecord> {
        check_key_name(name)?;
        self.store
            .get(name)
            .await?
            .ok_or_else(|| BrokerError::KeyNotFound(name.to_string()))
    }

    /// A key that may be used now (`Enabled`), and the version to use.
    pub fn usable(&self, key: &KeyRecord, version: u32) -> Result<VersionRecord> {
        if key.state != KeyState::Enabled {
            return Err(BrokerError::FailedPrecondition(format!(
                "key {:?} is {}",
                key.name,
                super::convert::state_name(key.state)
            )));
        }
        let wanted = if version == 0 {
            key.primary_version
        } else {
            version
        };
        let v = key.version(wanted).ok_or_else(|| {
            BrokerError::FailedPrecondition(format!("key {:?} has no version {wanted}", key.name))
        })?;
        if v.state != VersionState::Active {
            return Err(BrokerError::FailedPrecondition(format!(
                "version {wanted} of key {:?} is retired",
                key.name
            )));
        }
        Ok(v.clone())
    }

    pub fn require_purpose(key: &KeyRecord, purpose: Purpose) -> Result<()> {
        if key.purpose == purpose {
            Ok(())
        } else {
            Err(BrokerError::FailedPrecondition(format!(
                "key {:?} is for {}",
                key.name,
                super::convert::purpose_name(key.purpose)
            )))
        }
    }

    /// Moves a key between states.
    pub async fn transition(
        &self,
        auth: &Authorized,
        name: &str,
        change: StateChange,
    ) -> Result<KeyRecord> {
        auth.require_key(&[change.action()], name)?;
        let key = self.get(name).await?;
        use KeyState as S;
        let result = match change {
            StateChange::Disable => self.store.set_state(name, &[S::Enabled], S::Disabled, None),
            StateChange::Enable => self.store.set_state(name, &[S::Disabled], S::Enabled, None),
            StateChange::Revoke => {
                self.store
                    .set_state(name, &[S::Enabled, S::Disabled], S::Revoked, None)
            }
            StateChange::ScheduleDestruction { days } => {
                let days = if days == 0 {
                    self.config.destruction_pending_days
                } else {
                    days
                };
                if days < self.config.min_destruction_pending_days {
                    return Err(BrokerError::InvalidArgument(format!(
                        "pending_days: at least {}",
                        self.config.min_destruction_pending_days
                    )));
                }
                let after = now().saturating_add(i64::from(days) * SECONDS_PER_DAY);
                // A revoked key stays revoked while it waits: cancelling must not revive it.
                let target = if key.state == S::Revoked {
                    S::Revoked
                } else {
                    S::PendingDestruction
                };
                self.store.set_state(
                    name,
                    &[S::Enabled, S::Disabled, S::Revoked],
                    target,
                    Some(after),
                )
            }
            StateChange::CancelDestruction => {
                if key.destroy_after.is_none() {
                    return Err(BrokerError::FailedPrecondition(format!(
                        "key {name:?} is not scheduled for destruction"
                    )));
                }
                let target = if key.state == S::Revoked {
                    S::Revoked
                } else {
                    S::Disabled
                };
                self.store
                    .set_state(name, &[S::PendingDestruction, S::Revoked], target, None)
            }
        };
        Ok(result.await?)
    }

    /// Retires an older version: it refuses every use, and its hardware object is destroyed.
    pub async fn retire_version(
        &self,
        auth: &Authorized,
        name: &str,
        version: u32,
    ) -> Result<KeyRecord> {
        auth.require_key(&[Action::RetireKeyVersion], name)?;
        let key = self.get(name).await?;
        let store = self.store.clone();
        let backend = self.backends.get(&key.backend).ok();
        let name = name.to_string();
        // Detached, so that a retired version's object is destroyed even if the caller
        // goes away in between (else it would linger until the orphan scan).
        detached(async move {
            let retired = store.retire_version(&name, version).await?;
            if let (Some(backend), Some(v)) = (backend, key.version(version)) {
                destroy_on(&backend, &v.handle).await;
            }
            Ok(retired)
        })
        .await
    }

    /// Destroys a version's object, if its backend keeps one. A failure is logged: the
    /// orphan scan finds what is left.
    pub(super) async fn destroy_object(&self, backend: &str, handle: &HardwareHandle) {
        if let Ok(backend) = self.backends.get(backend) {
            destroy_on(&backend, handle).await;
        }
    }
}

/// A lifecycle request.
#[derive(Debug, Clone, Copy)]
pub enum StateChange {
    Disable,
    Enable,
    Revoke,
    ScheduleDestruction { days: u32 },
    CancelDestruction,
}

impl StateChange {
    /// The action that authorizes this change.
    pub fn action(self) -> Action {
        match self {
            StateChange::Disable => Action::DisableKey,
            StateChange::Enable => Action::EnableKey,
            StateChange::Revoke => Action::RevokeKey,
            StateChange::ScheduleDestruction { .. } => Action::ScheduleKeyDestruction,
            StateChange::CancelDestruction => Action::CancelKeyDestruction,
        }
    }
}
