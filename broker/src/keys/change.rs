//! Multi-step key changes (creation, rotation, retirement) that run to their end in a task
//! of their own, whatever happens to the caller (`KeyManager` in `manager.rs` uses them).

use std::sync::Arc;
use std::time::Duration;

use super::spec::label;
use crate::backends::{NamedBackend, ObjectSpec};
use crate::error::{BrokerError, Result};
use crate::store::{Algorithm, HardwareHandle, KeyRecord, KeyStore, Purpose, StoreError};

/// How long a dropped creation keeps trying to clear its intent from a store that refuses
/// writes (a full disk), before leaving it to the next start's reconciliation.
const ABANDON_RETRY_FOR: Duration = Duration::from_secs(3600);

/// Destroys an object on `backend`, logging a failure (the orphan scan finds what is left).
pub(super) async fn destroy_on(backend: &NamedBackend, handle: &HardwareHandle) {
    if let Err(e) = backend.backend.destroy(handle).await {
        tracing::error!(backend = %backend.name, error = %e, "cannot destroy a hardware object; the orphan scan will find it");
    }
}

/// Runs a multi-step change in a task of its own and waits for it. If the caller stops
/// waiting, the task still runs to its end: a step that was started is finished or undone,
/// never left half-way for the next restart to find.
pub(super) async fn detached<T: Send + 'static>(
    steps: impl std::future::Future<Output = Result<T>> + Send + 'static,
) -> Result<T> {
    tokio::spawn(steps).await.map_err(|e| {
        tracing::error!(error = %e, "a key change task failed");
        BrokerError::Internal("a key change task failed".into())
    })?
}

/// The version [`make_version`] makes.
pub(super) struct Made {
    pub(super) name: String,
    pub(super) version: u32,
    pub(super) algorithm: Algorithm,
    pub(super) purpose: Purpose,
    pub(super) releasable: bool,
}

/// Makes the object of a version whose intent is recorded, then completes the version. If
/// the hardware fails, or the store refuses the completion without writing it (a full
/// disk, a queue that is full), the creation is undone: the object is destroyed and the
/// intent dropped, so that the name is free again.
pub(super) async fn make_version(
    store: &Arc<dyn KeyStore>,
    made: Made,
    backend: &NamedBackend,
    intent: HardwareHandle,
) -> Result<KeyRecord> {
    let Made {
        name,
        version,
        algorithm,
        purpose,
        releasable,
    } = made;
    let spec = ObjectSpec {
        label: label(&name, version),
        algorithm,
        purpose,
        releasable,
    };
    let handle = match backend.backend.create(&spec, intent).await {
        Ok(handle) => handle,
        Err(e) => {
            abandon(store, name, version).await;
            return Err(e);
        }
    };
    match store.complete_version(&name, version, &handle).await {
        Ok(record) => Ok(record),
        Err(e @ (StoreError::Full | StoreError::Busy(_))) => {
            tracing::warn!(key = %name, version, error = %e, "the store refused a finished creation; undoing it");
            destroy_on(backend, &handle).await;
            abandon(store, name, version).await;
            Err(e.into())
        }
        // Whether it was written is unknown: the next start's reconciliation decides.
        Err(e) => Err(e.into()),
    }
}

/// Drops a creation's intent. A store that refuses (its disk full) is asked again in the
/// background, with backoff, so that the name comes free when space returns.
async fn abandon(store: &Arc<dyn KeyStore>, name: String, version: u32) {
    let Err(first) = store.abandon_version(&name, version).await else {
        return;
    };
    tracing::error!(key = %name, version, error = %first, "cannot drop a failed creation yet; retrying in the background");
    let store = store.clone();
    tokio::spawn(async move {
        let started = tokio::time::Instant::now();
        let mut wait = Duration::from_millis(250);
        while started.elapsed() < ABANDON_RETRY_FOR {
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(30));
            match store.abandon_version(&name, version).await {
                Ok(()) => {
                    tracing::info!(key = %name, version, "failed creation dropped");
                    return;
                }
                Err(StoreError::Full | StoreError::Busy(_)) => {}
                Err(e) => {
                    tracing::error!(key = %name, version, error = %e, "cannot drop a failed creation; reconciliation will");
                    return;
                }
            }
        }
    });
}
