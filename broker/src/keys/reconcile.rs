//! Start-up reconciliation between the store and the hardware, and destruction of keys
//! whose waiting period is over.

use std::collections::BTreeSet;

use hsm_backend::KeyId;

use super::manager::{KeyManager, LABEL_PREFIX, Reconciliation, now};
use crate::backends::{Backend, on_hsm};
use crate::config::OrphanAction;
use crate::error::{BrokerError, Result};
use crate::store::{HardwareHandle, KeyState, StoreError};

impl KeyManager {
    /// Destroys keys whose waiting period is over. Returns their names.
    pub async fn destroy_due(&self) -> Result<Vec<String>> {
        let mut destroyed = Vec::new();
        for key in self.store.due_for_destruction(now())? {
            match self.store.set_state(
                &key.name,
                &[KeyState::PendingDestruction, KeyState::Revoked],
                KeyState::Destroyed,
                None,
            ) {
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

    /// Resolves interrupted creations and finds HSM objects the store does not know.
    pub async fn reconcile(&self) -> Result<Reconciliation> {
        let mut report = Reconciliation::default();
        for pending in self.store.pending_versions()? {
            if let HardwareHandle::Hsm { object_id } = &pending.handle {
                if self.hsm_object_exists(&pending.backend, object_id).await? {
                    self.destroy_object(&pending.backend, &pending.handle).await;
                    report.half_made_destroyed += 1;
                }
            }
            self.store.abandon_version(&pending.name, pending.version)?;
            report.pending_dropped += 1;
        }
        for backend in self.backends.all() {
            if !matches!(backend.backend, Backend::Hsm(_)) {
                continue;
            }
            let known: BTreeSet<Vec<u8>> = self
                .store
                .known_hsm_objects(&backend.name)?
                .into_iter()
                .collect();
            let b = backend.clone();
            let objects = on_hsm(b, |hsm| Ok(hsm.list_keys()?)).await?;
            for object in objects {
                if !object.label.starts_with(LABEL_PREFIX) || known.contains(object.id.as_bytes()) {
                    continue;
                }
                tracing::warn!(backend = %backend.name, id = %object.id, label = %object.label, "HSM object not in the store");
                report.orphans.push((
                    backend.name.clone(),
                    object.id.to_string(),
                    object.label.clone(),
                ));
                if self.config.orphans == OrphanAction::Destroy {
                    let handle = HardwareHandle::Hsm {
                        object_id: object.id.as_bytes().to_vec(),
                    };
                    self.destroy_object(&backend.name, &handle).await;
                    report.orphans_destroyed += 1;
                }
            }
        }
        Ok(report)
    }

    async fn hsm_object_exists(&self, backend: &str, object_id: &[u8]) -> Result<bool> {
        let backend = self.backends.get(backend)?;
        let id = KeyId::new(object_id.to_vec())
            .map_err(|e| BrokerError::Internal(format!("stored HSM id: {e}")))?;
        on_hsm(backend, move |hsm| match hsm.describe_key(&id) {
            Ok(_) => Ok(true),
            Err(hsm_backend::HsmError::KeyNotFound(_)) => Ok(false),
            Err(e) => Err(e.into()),
        })
        .await
    }
}
