//! The broker's certificate authority: a CA key generated in an HSM (`authority`), the
//! workload certificates it signs there (`certificate`), and `IdentityService`
//! (`service`).

pub mod authority;
pub mod certificate;
pub mod intermediate;
mod versions;

pub use authority::Authority;
mod service;

pub use service::{IdentityServiceImpl, Issued};

use std::sync::Arc;

use crate::backends::{Backends, HsmKeys};
use crate::config::CaConfig;
use crate::error::{BrokerError, Result};
use crate::store::KeyStore;
use crate::tls::ServerTls;

/// The CA that `[ca]` configures, not yet loaded ([`Authority::spawn`]); `None` without
/// `ca.backend`.
///
/// # Errors
/// `ca.backend` names no HSM.
pub fn open(
    config: &CaConfig,
    backends: &Backends,
    store: Arc<dyn KeyStore>,
) -> Result<Option<Arc<Authority>>> {
    let Some(name) = config.backend.as_deref() else {
        return Ok(None);
    };
    let hsm = backends.get_as::<HsmKeys>(name)?.ok_or_else(|| {
        BrokerError::FailedPrecondition(format!(
            "ca.backend: the CA key lives in an HSM; backend {name:?} is not one"
        ))
    })?;
    Ok(Some(Arc::new(Authority::new(
        hsm,
        name,
        store,
        config.clone(),
    ))))
}

/// Keeps the broker's mTLS trusting the CA's current certificates.
pub fn spawn_anchor_updates(authority: &Authority, tls: ServerTls) {
    let mut anchors = authority.anchors();
    tokio::spawn(async move {
        loop {
            let current = anchors.borrow_and_update().clone();
            match tls.set_workload_anchors(&current) {
                Ok(()) => tracing::info!(
                    anchors = current.len(),
                    "mTLS trusts the workload CA's certificates"
                ),
                Err(e) => tracing::error!(error = %e,
                    "the workload CA's certificates cannot be trusted for mTLS"),
            }
            if anchors.changed().await.is_err() {
                return;
            }
        }
    });
}
