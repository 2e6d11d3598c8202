//! A [`KeyStore`] decorator that keeps the key records read on the request path, so a
//! sign or encrypt does not run a database transaction (three queries behind the
//! store's one connection) on every call.
//!
//! Every write made through the decorator drops the whole cache, and a read that raced
//! with a write does not refill it with what it read before that write (a generation
//! counter guards the refill). That keeps disable, revoke and retire effective as soon as
//! the call that made them returns. It relies on this process being the only writer of
//! key records, which holds while the broker opens the store alone: a store shared by
//! several replicas needs a change feed (or no cache) instead.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::{
    BackendRecord, HardwareHandle, KeyRecord, KeyState, KeyStore, NewKey, PendingVersion, Result,
};

/// Most records kept; past it, reads go to the store until the next write.
const MAX_CACHED_KEYS: usize = 10_000;

#[derive(Debug, Default)]
struct Cached {
    /// Bumped by every write; a read refills only if it saw none.
    generation: u64,
    by_name: HashMap<String, KeyRecord>,
}

/// Caches [`KeyStore::get`] in front of another store.
#[derive(Debug)]
pub struct CachedKeyStore {
    inner: Arc<dyn KeyStore>,
    cached: RwLock<Cached>,
}

impl CachedKeyStore {
    pub fn new(inner: Arc<dyn KeyStore>) -> CachedKeyStore {
        CachedKeyStore {
            inner,
            cached: RwLock::default(),
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, Cached> {
        self.cached.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Cached> {
        self.cached.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Caches a record read from the inner store, unless a write happened since the
    /// reader saw generation `seen` (the record may predate it).
    fn remember(&self, key: &KeyRecord, seen: u64) {
        let mut cached = self.write();
        if cached.generation == seen && cached.by_name.len() < MAX_CACHED_KEYS {
            cached.by_name.insert(key.name.clone(), key.clone());
        }
    }

    /// Runs a write on the inner store, then forgets every cached record, whatever the
    /// outcome (a failed compare-and-set may mean the record changed).
    fn writing<T>(&self, write: impl FnOnce(&dyn KeyStore) -> Result<T>) -> Result<T> {
        let result = write(self.inner.as_ref());
        let mut cached = self.write();
        cached.generation = cached.generation.wrapping_add(1);
        cached.by_name.clear();
        result
    }
}

impl KeyStore for CachedKeyStore {
    fn begin_create(&self, key: &NewKey, handle: &HardwareHandle) -> Result<()> {
        self.writing(|s| s.begin_create(key, handle))
    }

    fn begin_version(&self, name: &str, handle: &HardwareHandle, created_at: i64) -> Result<u32> {
        self.writing(|s| s.begin_version(name, handle, created_at))
    }

    fn complete_version(
        &self,
        name: &str,
        version: u32,
        handle: &HardwareHandle,
    ) -> Result<KeyRecord> {
        self.writing(|s| s.complete_version(name, version, handle))
    }

    fn abandon_version(&self, name: &str, version: u32) -> Result<()> {
        self.writing(|s| s.abandon_version(name, version))
    }

    fn pending_versions(&self) -> Result<Vec<PendingVersion>> {
        self.inner.pending_versions()
    }

    fn get(&self, name: &str) -> Result<Option<KeyRecord>> {
        let generation = {
            let cached = self.read();
            if let Some(key) = cached.by_name.get(name) {
                return Ok(Some(key.clone()));
            }
            cached.generation
        };
        let loaded = self.inner.get(name)?;
        if let Some(key) = &loaded {
            self.remember(key, generation);
        }
        Ok(loaded)
    }

    fn list(&self, prefix: &str) -> Result<Vec<KeyRecord>> {
        self.inner.list(prefix)
    }

    fn set_state(
        &self,
        name: &str,
        expected: &[KeyState],
        new: KeyState,
        destroy_after: Option<i64>,
    ) -> Result<KeyRecord> {
        self.writing(|s| s.set_state(name, expected, new, destroy_after))
    }

    fn retire_version(&self, name: &str, version: u32) -> Result<KeyRecord> {
        self.writing(|s| s.retire_version(name, version))
    }

    fn due_for_destruction(&self, now: i64) -> Result<Vec<KeyRecord>> {
        self.inner.due_for_destruction(now)
    }

    fn known_handles(&self, backend: &str) -> Result<Vec<Vec<u8>>> {
        self.inner.known_handles(backend)
    }

    fn add_backend(&self, backend: &BackendRecord) -> Result<()> {
        self.inner.add_backend(backend)
    }

    fn backends(&self) -> Result<Vec<BackendRecord>> {
        self.inner.backends()
    }

    fn set_policy(&self, text: &str) -> Result<()> {
        self.inner.set_policy(text)
    }

    fn policy(&self) -> Result<Option<String>> {
        self.inner.policy()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::store::sqlite::SqliteStore;
    use crate::store::{Algorithm, Purpose, VersionState};

    fn hsm(id: &str) -> HardwareHandle {
        HardwareHandle::new("hsm", id.as_bytes().to_vec())
    }

    /// A cached store over an in-memory one, with key `k` (version 1) enabled.
    fn store_with_key() -> CachedKeyStore {
        let inner = Arc::new(SqliteStore::open_in_memory().unwrap());
        inner
            .add_backend(&BackendRecord::Tpm {
                name: "b".into(),
                tcti: "device:/dev/tpmrm0".into(),
            })
            .unwrap();
        let cached = CachedKeyStore::new(inner);
        let key = NewKey {
            name: "k".into(),
            algorithm: Algorithm::EcP256,
            purpose: Purpose::SignVerify,
            backend: "b".into(),
            tags: BTreeMap::new(),
            created_at: 1,
        };
        cached.begin_create(&key, &hsm("k/1")).unwrap();
        cached.complete_version("k", 1, &hsm("k/1")).unwrap();
        cached
    }

    #[test]
    fn state_changes_are_seen_at_once() {
        let store = store_with_key();
        assert_eq!(store.get("k").unwrap().unwrap().state, KeyState::Enabled);
        store
            .set_state("k", &[KeyState::Enabled], KeyState::Disabled, None)
            .unwrap();
        assert_eq!(store.get("k").unwrap().unwrap().state, KeyState::Disabled);
        store
            .set_state("k", &[KeyState::Disabled], KeyState::Revoked, None)
            .unwrap();
        assert_eq!(store.get("k").unwrap().unwrap().state, KeyState::Revoked);
    }

    #[test]
    fn rotation_and_retirement_are_seen_at_once() {
        let store = store_with_key();
        store.get("k").unwrap();
        let v2 = store.begin_version("k", &hsm("k/2"), 2).unwrap();
        store.complete_version("k", v2, &hsm("k/2")).unwrap();
        assert_eq!(store.get("k").unwrap().unwrap().primary_version, 2);
        store.retire_version("k", 1).unwrap();
        let key = store.get("k").unwrap().unwrap();
        assert_eq!(key.version(1).unwrap().state, VersionState::Retired);
    }

    #[test]
    fn a_read_that_raced_a_write_does_not_refill_the_cache() {
        let store = store_with_key();
        // A reader misses, notes the generation and reads the enabled key...
        let seen = store.read().generation;
        let before = store.inner.get("k").unwrap().unwrap();
        // ...a disable lands before the reader refills...
        store
            .set_state("k", &[KeyState::Enabled], KeyState::Disabled, None)
            .unwrap();
        store.remember(&before, seen);
        // ...and the stale record is not kept.
        assert!(store.read().by_name.is_empty());
        assert_eq!(store.get("k").unwrap().unwrap().state, KeyState::Disabled);
    }

    #[test]
    fn unknown_keys_are_not_cached() {
        let store = store_with_key();
        assert!(store.get("nope").unwrap().is_none());
        assert!(!store.read().by_name.contains_key("nope"));
    }
}
