//! The part of start-up that runs once the broker serves (`crate::server`): finding the
//! attestation token keys, and the orphan scan, from one listing of the signing token.

use std::sync::Arc;

use keybroker_api::v1::attestation_service_server::AttestationServiceServer;

use crate::attestation::{Attestation, AttestationServiceImpl};
use crate::keys::{KeyManager, Listings};

/// The start-up work left for once the broker serves. The attestation token keys are
/// found; then `keybroker: ready` is printed (for scripts and tests that attest as soon as
/// the broker starts) and `AttestationService`'s health becomes `SERVING`. Meanwhile the
/// orphan scan runs if `scan_later`. Both read the signing HSM's objects from one listing,
/// the one `listed` holds if the scan ran before serving: on a token of 10,000 keys each
/// listing costs seconds (docs/performance.md).
pub(crate) async fn finish_start(
    keys: Arc<KeyManager>,
    attestation: Option<Arc<Attestation>>,
    health: tonic_health::server::HealthReporter,
    (mut listed, scan_later): (Listings, bool),
    started: std::time::Instant,
) {
    let ready = move || {
        println!("keybroker: ready");
        tracing::info!(elapsed_ms = started.elapsed().as_millis(), "ready");
    };
    let Some(attestation) = attestation else {
        ready();
        if scan_later {
            keys.scan_orphans_while_serving(listed).await;
        }
        return;
    };
    let signing = attestation.signing_backend().to_string();
    let objects = match listed.get(&signing) {
        Some(objects) => Some(objects.clone()),
        None => match keys.list_objects(&signing).await {
            Ok(objects) => {
                tracing::info!(backend = %signing, objects = objects.len(),
                    elapsed_ms = started.elapsed().as_millis(), "token-signing HSM listed");
                Some(listed.entry(signing).or_insert(objects).clone())
            }
            Err(e) => {
                tracing::warn!(error = %e, "listing the token-signing HSM failed");
                None
            }
        },
    };
    attestation.spawn_token_keys(objects);
    tokio::spawn(async move {
        attestation.token_keys().found().await;
        health
            .set_serving::<AttestationServiceServer<AttestationServiceImpl>>()
            .await;
        ready();
    });
    if scan_later {
        keys.scan_orphans_while_serving(listed).await;
    }
}
