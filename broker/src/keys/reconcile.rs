//! Start-up reconciliation between the store and the hardware, and destruction of keys
//! whose waiting period is over. Every backend is asked the same questions through
//! [`crate::backends::KeyBackend`]: is an interrupted creation's object there
//! (`exists`), which objects do you hold (`list_objects`), destroy this one (`destroy`).

use std::collections::BTreeSet;

use super::manager::{KeyManager, LABEL_PREFIX, Reconciliation, now};
use crate::backends::{ListedObject, NamedBackend};
use crate::config::OrphanAction;
use crate::error::{BrokerError, Result};
use crate::store::{KeyState, PendingVersion, StoreError};

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

    /// Resolves interrupted creations and finds objects the store does not know.
    pub async fn reconcile(&self) -> Result<Reconciliation> {
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
        let store_knows_keys = !self.store.count_keys_by_backend().await?.is_empty();
        let mut orphans = Vec::new();
        for backend in self.backends.all() {
            orphans.extend(self.find_orphans(&backend).await?);
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
        Ok(report)
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
    async fn find_orphans(&self, backend: &NamedBackend) -> Result<Vec<(String, ListedObject)>> {
        let objects = backend.backend.list_objects().await?;
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
            orphans.push((backend.name.clone(), object));
        }
        Ok(orphans)
    }
}
