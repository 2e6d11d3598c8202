//! The broker's background tasks: reloads on SIGHUP, scheduled key destruction, and the
//! lease sweep.

use std::sync::Arc;
use std::time::Duration;

use crate::authz::Authorizer;
use crate::keys::KeyManager;
use crate::tls::ServerTls;

/// How often due key destructions are carried out.
const DESTRUCTION_INTERVAL: Duration = Duration::from_secs(60);

/// Re-reads the policy files on SIGHUP, as `ReloadPolicy` does. A policy that does not
/// validate is logged and the one in force stays.
pub(super) fn spawn_policy_reloader(authorizer: Arc<Authorizer>) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = match signal(SignalKind::hangup()) {
        Ok(stream) => stream,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGHUP: reload the policy through the API");
            return;
        }
    };
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            if authorizer.files().is_empty() {
                tracing::warn!("SIGHUP: the policy is not loaded from files; nothing to reload");
                continue;
            }
            match authorizer.reload_on_hangup() {
                Ok(info) => tracing::info!(
                    digest = %info.digest_hex,
                    policies = info.policies,
                    "SIGHUP: policy reloaded"
                ),
                Err(e) => {
                    tracing::error!(error = %e, "SIGHUP: policy not reloaded; the old one stays")
                }
            }
        }
    });
}

/// Re-reads the client CRL files on SIGHUP, beside the policy. Lists that do not parse are
/// logged and the ones in force stay.
pub(super) fn spawn_crl_reloader(tls: ServerTls) {
    use tokio::signal::unix::{SignalKind, signal};
    if tls.crl_files().is_empty() {
        return;
    }
    let mut hangups = match signal(SignalKind::hangup()) {
        Ok(stream) => stream,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGHUP: client CRLs load only at start");
            return;
        }
    };
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            match tls.reload_crls() {
                Ok(lists) => tracing::info!(lists, "SIGHUP: client CRLs reloaded"),
                Err(e) => {
                    tracing::error!(error = %e, "SIGHUP: client CRLs not reloaded; the old ones stay")
                }
            }
        }
    });
}

/// Undoes revoked and expired leases every `every` (docs/leases.md).
pub(super) fn spawn_lease_sweeper(leases: Arc<crate::secrets::Leases>, every: Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            leases.sweep().await;
        }
    });
}

/// Destroys the keys whose destruction is due, every minute.
pub(super) fn spawn_destroyer(keys: Arc<KeyManager>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(DESTRUCTION_INTERVAL);
        loop {
            tick.tick().await;
            match keys.destroy_due().await {
                Ok(names) if !names.is_empty() => tracing::info!(?names, "keys destroyed"),
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "scheduled destruction failed"),
            }
        }
    });
}
