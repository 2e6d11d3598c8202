//! Multi-step key changes (creation, rotation, retirement) that run to their end in a task
//! of their own, whatever happens to the caller (`KeyManager` in `manager.rs` uses them).

use super::spec::label;
use crate::backends::{NamedBackend, ObjectSpec};
use crate::error::{BrokerError, Result};
use crate::store::{Algorithm, HardwareHandle, KeyRecord, KeyStore, Purpose};

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
}

/// Makes the object of a version whose intent is recorded, then completes the version; if
/// the hardware fails, drops the intent.
pub(super) async fn make_version(
    store: &dyn KeyStore,
    made: Made,
    backend: &NamedBackend,
    intent: HardwareHandle,
) -> Result<KeyRecord> {
    let Made {
        name,
        version,
        algorithm,
        purpose,
    } = made;
    let spec = ObjectSpec {
        label: label(&name, version),
        algorithm,
        purpose,
    };
    match backend.backend.create(&spec, intent).await {
        Ok(handle) => Ok(store.complete_version(&name, version, &handle).await?),
        Err(e) => {
            if let Err(store_err) = store.abandon_version(&name, version).await {
                tracing::error!(key = %name, version, %store_err, "cannot drop a failed creation; reconciliation will");
            }
            Err(e)
        }
    }
}
