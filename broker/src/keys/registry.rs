//! Operator operations on what the keys live in and what governs them: registering a
//! backend, counting keys per backend, storing the policy. Each takes the [`Authorized`]
//! capability for its admin action.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::manager::KeyManager;
use crate::authz::Action;
use crate::backends::{self, NamedBackend};
use crate::error::{BrokerError, Result};
use crate::request::Authorized;
use crate::store::BackendRecord;

impl KeyManager {
    /// Opens a backend, records it, then serves it: a backend that does not open is not
    /// recorded, so a refused registration changes nothing.
    ///
    /// # Errors
    /// The name or the hardware is already registered; the backend does not open.
    pub async fn register_backend(
        &self,
        auth: &Authorized,
        record: BackendRecord,
    ) -> Result<Arc<NamedBackend>> {
        let action = match record {
            BackendRecord::Hsm { .. } => Action::RegisterHsmBackend,
            BackendRecord::Tpm { .. } => Action::RegisterTpmBackend,
        };
        auth.require_broker(action)?;
        if self.backends.get(record.name()).is_ok() {
            return Err(BrokerError::AlreadyExists(format!(
                "backend {:?} is already registered",
                record.name()
            )));
        }
        let known = self.store.backends().await?;
        if let Some(existing) = known.iter().find(|k| backends::same_hardware(k, &record)) {
            return Err(BrokerError::AlreadyExists(format!(
                "this hardware is already registered as {:?}",
                existing.name()
            )));
        }
        let to_open = record.clone();
        let opened = tokio::task::spawn_blocking(move || backends::open_record(&to_open)).await??;
        // At start a TPM that is away may join later; a registration must reach it now.
        opened.backend.probe().await?;
        self.store.add_backend(&record).await?;
        let opened = self.backends.insert(opened)?;
        tracing::info!(backend = %opened.name, kind = opened.kind(), "backend registered");
        Ok(opened)
    }

    /// How many keys each backend holds (`ListBackends`).
    ///
    /// # Errors
    /// The store cannot be read.
    pub async fn key_counts(&self, auth: &Authorized) -> Result<BTreeMap<String, u64>> {
        auth.require_broker(Action::ListBackends)?;
        // One `COUNT(*) … GROUP BY backend` in the store: no key is loaded.
        Ok(self.store.count_keys_by_backend().await?)
    }

    /// Stores a policy set through the API (validated by the caller first), so that a
    /// restart loads what is in force.
    ///
    /// # Errors
    /// The store cannot be written.
    pub async fn store_policy(&self, auth: &Authorized, text: &str) -> Result<()> {
        auth.require_broker(Action::SetPolicy)?;
        Ok(self.store.set_policy(text).await?)
    }
}
