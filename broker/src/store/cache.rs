//! A [`KeyStore`] decorator that keeps the key records read on the request path, so a
//! sign or encrypt does not queue a store request (three queries on a reader thread) on
//! every call.
//!
//! The cache is current only while the store's [`KeyStore::generation`] has not moved
//! since it was filled: the writer bumps it after every write, before the write's caller
//! can see the answer, so disable, revoke and retire are effective as soon as the call
//! that made them returns. Because the store bumps it, this holds even for a write whose
//! caller stopped waiting (a cancelled RPC), and for writes that bypass this decorator.
//! A read refills the cache only if the generation was the same before and after it. It
//! relies on this process being the only writer of key records, which holds while the
//! broker opens the store alone: a store shared by several replicas needs a change feed
//! (or no cache) instead.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::{
    BackendRecord, CaRecord, HardwareHandle, KeyPage, KeyQuery, KeyRecord, KeyState, KeyStore,
    LeaseRecord, LeaseStore, NewKey, PendingVersion, SecretStore, SecretSummary,
    SecretVersionRecord, StoreCall,
};

/// Most records kept; past it, reads go to the store until the next write.
const MAX_CACHED_KEYS: usize = 10_000;

#[derive(Debug, Default)]
struct Cached {
    /// The store's generation the records were read at.
    generation: u64,
    by_name: HashMap<String, KeyRecord>,
}

/// Caches [`KeyStore::get`] in front of another store.
#[derive(Debug)]
pub struct CachedKeyStore {
    inner: Arc<dyn KeyStore>,
    cached: Arc<RwLock<Cached>>,
}

impl CachedKeyStore {
    pub fn new(inner: Arc<dyn KeyStore>) -> CachedKeyStore {
        CachedKeyStore {
            inner,
            cached: Arc::default(),
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, Cached> {
        self.cached.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// A cached record, if the cache is current.
    fn hit(&self, name: &str) -> Option<KeyRecord> {
        let cached = self.read();
        if cached.generation != self.inner.generation() {
            return None;
        }
        cached.by_name.get(name).cloned()
    }
}

fn write(cached: &RwLock<Cached>) -> RwLockWriteGuard<'_, Cached> {
    cached.write().unwrap_or_else(PoisonError::into_inner)
}

/// Caches `key`, read from `store` while its generation was `seen` throughout; a cache
/// from an older generation is emptied first.
fn remember(cached: &RwLock<Cached>, store: &dyn KeyStore, key: &KeyRecord, seen: u64) {
    let mut cached = write(cached);
    if store.generation() != seen {
        return;
    }
    if cached.generation != seen {
        cached.by_name.clear();
        cached.generation = seen;
    }
    if cached.by_name.len() < MAX_CACHED_KEYS {
        cached.by_name.insert(key.name.clone(), key.clone());
    }
}

impl KeyStore for CachedKeyStore {
    fn begin_create(&self, key: &NewKey, handle: &HardwareHandle) -> StoreCall<()> {
        self.inner.begin_create(key, handle)
    }

    fn begin_version(
        &self,
        name: &str,
        handle: &HardwareHandle,
        created_at: i64,
    ) -> StoreCall<u32> {
        self.inner.begin_version(name, handle, created_at)
    }

    fn complete_version(
        &self,
        name: &str,
        version: u32,
        handle: &HardwareHandle,
    ) -> StoreCall<KeyRecord> {
        self.inner.complete_version(name, version, handle)
    }

    fn abandon_version(&self, name: &str, version: u32) -> StoreCall<()> {
        self.inner.abandon_version(name, version)
    }

    fn pending_versions(&self) -> StoreCall<Vec<PendingVersion>> {
        self.inner.pending_versions()
    }

    /// From the cache when current; else from the store, refilling the cache when the
    /// caller reads the answer.
    fn get(&self, name: &str) -> StoreCall<Option<KeyRecord>> {
        if let Some(key) = self.hit(name) {
            return StoreCall::ready(Ok(Some(key)));
        }
        let seen = self.inner.generation();
        let loaded = self.inner.get(name);
        let (cached, inner) = (self.cached.clone(), self.inner.clone());
        loaded.inspect(move |key| {
            if let Ok(Some(key)) = key {
                remember(&cached, inner.as_ref(), key, seen);
            }
        })
    }

    fn list(&self, query: &KeyQuery) -> StoreCall<KeyPage> {
        self.inner.list(query)
    }

    fn count_keys_by_backend(&self) -> StoreCall<BTreeMap<String, u64>> {
        self.inner.count_keys_by_backend()
    }

    fn set_state(
        &self,
        name: &str,
        expected: &[KeyState],
        new: KeyState,
        destroy_after: Option<i64>,
    ) -> StoreCall<KeyRecord> {
        self.inner.set_state(name, expected, new, destroy_after)
    }

    fn retire_version(&self, name: &str, version: u32) -> StoreCall<KeyRecord> {
        self.inner.retire_version(name, version)
    }

    fn due_for_destruction(&self, now: i64) -> StoreCall<Vec<KeyRecord>> {
        self.inner.due_for_destruction(now)
    }

    fn known_handles(&self, backend: &str) -> StoreCall<Vec<Vec<u8>>> {
        self.inner.known_handles(backend)
    }

    fn add_backend(&self, backend: &BackendRecord) -> StoreCall<()> {
        self.inner.add_backend(backend)
    }

    fn backends(&self) -> StoreCall<Vec<BackendRecord>> {
        self.inner.backends()
    }

    fn set_policy(&self, text: &str) -> StoreCall<()> {
        self.inner.set_policy(text)
    }

    fn policy(&self) -> StoreCall<Option<String>> {
        self.inner.policy()
    }

    fn ca_versions(&self) -> StoreCall<Vec<CaRecord>> {
        self.inner.ca_versions()
    }

    fn put_ca_version(&self, record: &CaRecord) -> StoreCall<()> {
        self.inner.put_ca_version(record)
    }

    fn drop_ca_versions_before(&self, version: u32) -> StoreCall<()> {
        self.inner.drop_ca_versions_before(version)
    }

    fn generation(&self) -> u64 {
        self.inner.generation()
    }
}

/// Secrets are not cached: they pass through.
impl SecretStore for CachedKeyStore {
    fn create_secret(&self, description: &str, first: &SecretVersionRecord) -> StoreCall<()> {
        self.inner.create_secret(description, first)
    }

    fn latest_secret_version(&self, name: &str) -> StoreCall<u32> {
        self.inner.latest_secret_version(name)
    }

    fn add_secret_version(&self, record: &SecretVersionRecord) -> StoreCall<()> {
        self.inner.add_secret_version(record)
    }

    fn secret_version(&self, name: &str, version: Option<u32>) -> StoreCall<SecretVersionRecord> {
        self.inner.secret_version(name, version)
    }

    fn set_secret_version_enabled(
        &self,
        name: &str,
        version: u32,
        enabled: bool,
    ) -> StoreCall<SecretVersionRecord> {
        self.inner
            .set_secret_version_enabled(name, version, enabled)
    }

    fn delete_secret(&self, name: &str) -> StoreCall<()> {
        self.inner.delete_secret(name)
    }

    fn list_secrets(
        &self,
        prefix: &str,
        after: &str,
        limit: usize,
    ) -> StoreCall<Vec<SecretSummary>> {
        self.inner.list_secrets(prefix, after, limit)
    }
}

/// Leases are not cached: they pass through.
impl LeaseStore for CachedKeyStore {
    fn create_lease(&self, lease: &LeaseRecord, max_live: u64) -> StoreCall<()> {
        self.inner.create_lease(lease, max_live)
    }

    fn lease(&self, id: &str) -> StoreCall<LeaseRecord> {
        self.inner.lease(id)
    }

    fn extend_lease(&self, id: &str, expires_at: i64, now: i64) -> StoreCall<LeaseRecord> {
        self.inner.extend_lease(id, expires_at, now)
    }

    fn revoke_lease(&self, id: &str, now: i64) -> StoreCall<LeaseRecord> {
        self.inner.revoke_lease(id, now)
    }

    fn revoke_role_leases(&self, role: &str, now: i64) -> StoreCall<u64> {
        self.inner.revoke_role_leases(role, now)
    }

    fn due_leases(&self, now: i64, limit: usize) -> StoreCall<Vec<LeaseRecord>> {
        self.inner.due_leases(now, limit)
    }

    fn forget_lease(&self, id: &str) -> StoreCall<()> {
        self.inner.forget_lease(id)
    }

    fn list_leases(&self, prefix: &str, after: &str, limit: usize) -> StoreCall<Vec<LeaseRecord>> {
        self.inner.list_leases(prefix, after, limit)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::{Duration, Instant};

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
            .wait()
            .unwrap();
        let cached = CachedKeyStore::new(inner);
        let key = NewKey {
            name: "k".into(),
            algorithm: Algorithm::EcP256,
            purpose: Purpose::SignVerify,
            backend: "b".into(),
            tags: BTreeMap::new(),
            created_at: 1,
            releasable: false,
        };
        cached.begin_create(&key, &hsm("k/1")).wait().unwrap();
        cached.complete_version("k", 1, &hsm("k/1")).wait().unwrap();
        cached
    }

    fn state(store: &CachedKeyStore) -> KeyState {
        store.get("k").wait().unwrap().unwrap().state
    }

    fn is_cached(store: &CachedKeyStore, name: &str) -> bool {
        store.hit(name).is_some()
    }

    #[test]
    fn reads_are_served_from_the_cache_until_a_write() {
        let store = store_with_key();
        assert!(!is_cached(&store, "k"));
        assert_eq!(state(&store), KeyState::Enabled);
        assert!(is_cached(&store, "k"));
        store
            .set_state("k", &[KeyState::Enabled], KeyState::Disabled, None)
            .wait()
            .unwrap();
        assert!(!is_cached(&store, "k"));
    }

    #[test]
    fn state_changes_are_seen_at_once() {
        let store = store_with_key();
        assert_eq!(state(&store), KeyState::Enabled);
        store
            .set_state("k", &[KeyState::Enabled], KeyState::Disabled, None)
            .wait()
            .unwrap();
        assert_eq!(state(&store), KeyState::Disabled);
        store
            .set_state("k", &[KeyState::Disabled], KeyState::Revoked, None)
            .wait()
            .unwrap();
        assert_eq!(state(&store), KeyState::Revoked);
    }

    #[test]
    fn rotation_and_retirement_are_seen_at_once() {
        let store = store_with_key();
        store.get("k").wait().unwrap();
        let v2 = store.begin_version("k", &hsm("k/2"), 2).wait().unwrap();
        store.complete_version("k", v2, &hsm("k/2")).wait().unwrap();
        assert_eq!(store.get("k").wait().unwrap().unwrap().primary_version, 2);
        store.retire_version("k", 1).wait().unwrap();
        let key = store.get("k").wait().unwrap().unwrap();
        assert_eq!(key.version(1).unwrap().state, VersionState::Retired);
    }

    #[test]
    fn a_read_that_raced_a_write_does_not_refill_the_cache() {
        let store = store_with_key();
        // A reader misses, notes the generation and reads the enabled key...
        let seen = store.inner.generation();
        let before = store.inner.get("k").wait().unwrap().unwrap();
        // ...a disable lands before the reader refills...
        store
            .set_state("k", &[KeyState::Enabled], KeyState::Disabled, None)
            .wait()
            .unwrap();
        remember(&store.cached, store.inner.as_ref(), &before, seen);
        // ...and the stale record is not kept.
        assert!(store.read().by_name.is_empty());
        assert_eq!(state(&store), KeyState::Disabled);
    }

    #[test]
    fn a_write_whose_caller_stopped_waiting_still_invalidates_the_cache() {
        let store = store_with_key();
        assert_eq!(state(&store), KeyState::Enabled);
        let before = store.generation();
        // A cancelled RPC drops its call; the queued write is made all the same.
        drop(store.set_state("k", &[KeyState::Enabled], KeyState::Disabled, None));
        let deadline = Instant::now() + Duration::from_secs(10);
        while store.generation() == before {
            assert!(Instant::now() < deadline, "the write never finished");
            std::thread::yield_now();
        }
        assert_eq!(state(&store), KeyState::Disabled);
    }

    #[test]
    fn a_write_that_bypasses_the_cache_invalidates_it() {
        let store = store_with_key();
        assert_eq!(state(&store), KeyState::Enabled);
        store
            .inner
            .set_state("k", &[KeyState::Enabled], KeyState::Disabled, None)
            .wait()
            .unwrap();
        assert_eq!(state(&store), KeyState::Disabled);
    }

    #[test]
    fn unknown_keys_are_not_cached() {
        let store = store_with_key();
        assert!(store.get("nope").wait().unwrap().is_none());
        assert!(!store.read().by_name.contains_key("nope"));
    }
}
