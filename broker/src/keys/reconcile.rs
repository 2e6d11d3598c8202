//! Start-up reconciliation between the store and the hardware, and destruction of keys
//! whose waiting period is over. Every backend is asked the same questions through
//! [`crate::backends::KeyBackend`]: is an interrupted creation's object there
//! (`exists`), which objects do you hold (`list_objects`), destroy this one (`destroy`).
//!
//! Reconciliation has two phases: interrupted creations are resolved before the broker
//! serves; the orphan scan, which reads every object on every backend (seconds on a token
//! of many thousands), may run while it serves (`KeyManager::scan_orphans` says why that
//! is safe, and `crate::server` and `crate::start` when it does).

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use super::manager::{KeyManager, LABEL_PREFIX, Reconciliation, now};
use crate::backends::{ListedObject, NamedBackend};
use crate::config::OrphanAction;
use crate::error::{BrokerError, Result};
use crate::store::{KeyState, PendingVersion, StoreError};

/// Listings of backends' objects by backend name, made once and read by every step of
/// start-up that needs them (the orphan scan, finding the attestation token keys).
pub type Listings = BTreeMap<String, Vec<ListedObject>>;

impl KeyManager {
    /// Destroys keys whose waiting period is over. Returns their names.
    pub async fn destroy_due(&self) -> Result<Vec<String>> {
        let mut destroyed = Vec::new();
        for key in self.store.due_for_destruction(now()).await? {
            match self
                .store
                .set_state(
                    &key.name,
                    &[KeyState::PendingDestruction, KeyState::Revoked],
                    KeyState::Destroyed,
                    None,
                )
                .await
            {
                Ok(_) => {}
                Err(StoreError::StateConflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
            for v in &key.versions {
                self.destroy_object(&key.backend, &v.handle).await;
            }
            destroyed.push(key.name);
        }
        Ok(destroyed)
    }

    /// Resolves interrupted creations, then finds objects the store does not know: both
    /// phases of start-up reconciliation, one after the other.
    ///
    /// # Errors
    /// As [`KeyManager::resolve_pending`] and [`KeyManager::scan_orphans`].
    pub async fn reconcile(&self) -> Result<Reconciliation> {
        let mut report = self.resolve_pending().await?;
        let store_knows_keys = self.store_knows_keys().await?;
        self.scan_orphans(store_knows_keys, &mut Listings::new(), &mut report)
            .await?;
        Ok(report)
    }

    /// Start-up reconciliation up to what must end before serving: interrupted creations
    /// always; the orphan scan too when the store knows no keys, since that start may have
    /// to be refused. Returns whether the scan is left for
    /// [`KeyManager::spawn_orphan_scan`], once the broker serves. `started` is when
    /// start-up began, for the log; the listings a scan made are added to `listed`.
    ///
    /// # Errors
    /// As [`KeyManager::reconcile`].
    pub async fn reconcile_before_serving(
        &self,
        started: Instant,
        listed: &mut Listings,
    ) -> Result<bool> {
        let mut report = self.resolve_pending().await?;
        let store_knows_keys = self.store_knows_keys().await?;
        if store_knows_keys {
            tracing::info!(
                half_made_destroyed = report.half_made_destroyed,
                pending_dropped = report.pending_dropped,
                orphan_scan = "once serving",
                elapsed_ms = started.elapsed().as_millis(),
                "store and hardware reconciled"
            );
            return Ok(true);
        }
        self.scan_orphans(false, listed, &mut report).await?;
        tracing::info!(
            half_made_destroyed = report.half_made_destroyed,
            pending_dropped = report.pending_dropped,
            orphans = report.orphans.len(),
            orphans_destroyed = report.orphans_destroyed,
            elapsed_ms = started.elapsed().as_millis(),
            "store and hardware reconciled"
        );
        Ok(false)
    }

    /// The orphan scan while the broker serves, reading the objects of the backends
    /// `listed` holds from it. A failure is logged: the broker keeps serving, and the next
    /// start scans again.
    pub async fn scan_orphans_while_serving(&self, mut listed: Listings) {
        let mut report = Reconciliation::default();
        if let Err(e) = self.scan_orphans(true, &mut listed, &mut report).await {
            tracing::error!(error = %e, "orphan scan failed; the next start scans again");
        }
    }

    /// The objects of the backend `name`, in one pass.
    ///
    /// # Errors
    /// No such backend, or it cannot list its objects.
    pub async fn list_objects(&self, name: &str) -> Result<Vec<ListedObject>> {
        self.backends.get(name)?.backend.list_objects().await
    }

    /// The first phase, which must end before the broker serves: every `Creating` version
    /// left by a broker that stopped is dropped, and its object destroyed if it was made.
    /// Once serving, `Creating` versions are creations under way, not leftovers.
    ///
    /// # Errors
    /// The store cannot be read or written, or a backend cannot be asked.
    pub async fn resolve_pending(&self) -> Result<Reconciliation> {
        let mut report = Reconciliation::default();
        for pending in self.store.pending_versions().await? {
            if self.half_made(&pending).await? {
                self.destroy_object(&pending.backend, &pending.handle).await;
                report.half_made_destroyed += 1;
            }
            self.store
                .abandon_version(&pending.name, pending.version)
                .await?;
            report.pending_dropped += 1;
        }
        Ok(report)
    }

    /// Whether the store knows any key. When it knows none, the orphan scan must run
    /// before serving: objects on the token then mean a lost store, and the start is
    /// refused (docs/operations.md).
    ///
    /// # Errors
    /// The store cannot be read.
    pub async fn store_knows_keys(&self) -> Result<bool> {
        Ok(!self.store.count_keys_by_backend().await?.is_empty())
    }

    /// The second phase: objects with the broker's label that the store does not know,
    /// reported or destroyed as configured, added to `report`. It may run while the broker
    /// serves: each backend's objects are listed *before* the store's handles are read, and
    /// a creation records its handle before it makes its object, so an object made
    /// meanwhile is always known. An object whose version was retired or destroyed
    /// meanwhile may count as an orphan: it is being destroyed anyway. A backend's listing
    /// is taken from `listed` if it is there (made earlier, which keeps that order), else
    /// made and added to it.
    ///
    /// # Errors
    /// A backend cannot list its objects or the store cannot be read; or the store knows
    /// no keys (`store_knows_keys` false) while the backends hold the broker's objects,
    /// and the operator did not pass `--orphan-all-existing-keys`: nothing is changed.
    pub async fn scan_orphans(
        &self,
        store_knows_keys: bool,
        listed: &mut Listings,
        report: &mut Reconciliation,
    ) -> Result<()> {
        let scan = Instant::now();
        let mut orphans = Vec::new();
        for backend in self.backends.all() {
            let objects = match listed.entry(backend.name.clone()) {
                Entry::Occupied(made) => made.into_mut(),
                Entry::Vacant(slot) => slot.insert(backend.backend.list_objects().await?),
            };
            orphans.extend(self.find_orphans(&backend, objects).await?);
        }
        if !store_knows_keys && !orphans.is_empty() && !self.config.orphan_all_existing_keys {
            return Err(BrokerError::FailedPrecondition(format!(
                "the store knows no keys, but the backends hold {} objects labelled as the \
                 broker's ({}...): the store is new, emptied or lost. Restore it from its \
                 backup; nothing was changed. To start anyway, with every one of those keys \
                 an orphan, pass --orphan-all-existing-keys",
                orphans.len(),
                LABEL_PREFIX
            )));
        }
        let destroy = self.config.orphans == OrphanAction::Destroy;
        if destroy && orphans.len() > self.config.max_orphans_destroyed {
            tracing::error!(
                orphans = orphans.len(),
                max = self.config.max_orphans_destroyed,
                "more orphans than keys.max_orphans_destroyed: none destroyed (is the store \
                 older than the token?)"
            );
        }
        let destroy = destroy && orphans.len() <= self.config.max_orphans_destroyed;
        for (backend, object) in orphans {
            let id = hex::encode(object.handle.bytes());
            if destroy {
                self.destroy_object(&backend, &object.handle).await;
                report.orphans_destroyed += 1;
            }
            report.orphans.push((backend, id, object.label));
        }
        tracing::info!(
            orphans = report.orphans.len(),
            orphans_destroyed = report.orphans_destroyed,
            elapsed_ms = scan.elapsed().as_millis(),
            "orphan scan finished"
        );
        Ok(())
    }

    /// Whether an interrupted creation got as far as making its object. A backend that
    /// cannot look objects up is told so in the log: an object it made may be left.
    async fn half_made(&self, pending: &PendingVersion) -> Result<bool> {
        let backend = self.backends.get(&pending.backend)?;
        match backend.backend.exists(&pending.handle).await {
            Err(BrokerError::Unsupported(_)) => {
                tracing::warn!(backend = %backend.name, key = %pending.name, version = pending.version, "interrupted creation on a backend that cannot look objects up; an object may be left");
                Ok(false)
            }
            found => found,
        }
    }

    /// Objects with the broker's label that the store does not know, each logged.
    async fn find_orphans(
        &self,
        backend: &NamedBackend,
        objects: &[ListedObject],
    ) -> Result<Vec<(String, ListedObject)>> {
        if objects.is_empty() {
            return Ok(Vec::new());
        }
        let known: BTreeSet<Vec<u8>> = self
            .store
            .known_handles(&backend.name)
            .await?
            .into_iter()
            .collect();
        let mut orphans = Vec::new();
        for object in objects {
            if !object.label.starts_with(LABEL_PREFIX) || known.contains(object.handle.bytes()) {
                continue;
            }
            let id = hex::encode(object.handle.bytes());
            tracing::warn!(backend = %backend.name, %id, label = %object.label, "object not in the store");
            orphans.push((backend.name.clone(), object.clone()));
        }
        Ok(orphans)
    }
}
