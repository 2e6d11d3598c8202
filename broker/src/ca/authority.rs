//! The workload CA's versions: each one a P-256 key generated inside an HSM token
//! (sensitive, non-extractable), and its certificate, kept in the store.
//!
//! **Versions.** The key of version `n` has CKA_ID `kbsys:ca:<n>` and CKA_LABEL
//! `kbsys:ca:v<n>:<created>`; it is not a managed key (no `kb:` prefix), so no
//! `KeyService` call can name it and the orphan scan leaves it alone. The store row is
//! written after the key is made; a key left by a crash in between has no row, and is
//! destroyed before its id is used again.
//!
//! **Self-signed mode.** The first start makes version 1 and its self-signed certificate.
//! When the current certificate has `ca.rotate_before_seconds` left, the next version is made
//! and published in the trust bundle at once, but signs only `ca.publish_ahead_seconds`
//! later: relying parties that refresh the bundle in that time trust both before any
//! certificate from the new CA reaches them. A CA certificate stays in the bundle, and a
//! trust anchor of the broker's own mTLS, until it expires.
//!
//! **Intermediate mode.** `keybroker ca csr` makes the key and a CSR signed in the HSM;
//! an external root signs it; `keybroker ca install` stores the certificate and the chain
//! above it. Until then `IssueCertificate` answers `FAILED_PRECONDITION`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

use super::certificate::{CaProfile, HsmSigner, self_signed};
pub(crate) use super::versions::{CaVersion, generate_key, pem_chain};
use super::versions::{certificate_facts, load_versions};
use crate::backends::HsmKeys;
use crate::config::{CaConfig, CaMode};
use crate::error::{BrokerError, Result};
use crate::store::{CaRecord, KeyStore};

/// The longest wait between two attempts to load the CA.
const RETRY: Duration = Duration::from_secs(10);

/// What the CA serves at one time.
#[derive(Debug, Clone)]
pub(crate) struct CaState {
    /// The version that signs.
    pub(crate) current: Arc<CaVersion>,
    /// The roots that verify issued certificates: `GetTrustBundle`, newest first.
    pub(crate) bundle: Vec<Vec<u8>>,
    /// Every unexpired CA certificate: the broker's own mTLS trusts certificates they
    /// signed.
    pub(crate) anchors: Vec<Vec<u8>>,
    /// When the state next needs a look: a rotation is due, a new version activates, or
    /// a certificate in the bundle expires.
    next_change: u64,
}

/// The workload CA of one HSM.
#[derive(Debug)]
pub struct Authority {
    hsm: Arc<HsmKeys>,
    backend: String,
    store: Arc<dyn KeyStore>,
    config: CaConfig,
    /// `config.claims_extension_oid`, parsed once (the configuration validated it).
    claims_oid: Vec<u64>,
    state: RwLock<Option<Arc<CaState>>>,
    /// The store's records last checked against the token, and what the check found.
    loaded: Mutex<Option<(Vec<CaRecord>, Vec<CaVersion>)>>,
    /// The trust anchors for the broker's mTLS; sent each time they change.
    anchors: watch::Sender<Vec<Vec<u8>>>,
    found: watch::Sender<bool>,
    failed: AtomicBool,
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Authority {
    /// The CA whose key lives in `hsm` (the `[[hsm]]` named `backend`); nothing is
    /// loaded until [`Authority::spawn`].
    pub fn new(
        hsm: Arc<HsmKeys>,
        backend: &str,
        store: Arc<dyn KeyStore>,
        config: CaConfig,
    ) -> Authority {
        Authority {
            hsm,
            backend: backend.to_string(),
            store,
            claims_oid: crate::config::parse_oid(&config.claims_extension_oid).unwrap_or_default(),
            config,
            state: RwLock::new(None),
            loaded: Mutex::new(None),
            anchors: watch::Sender::new(Vec::new()),
            found: watch::Sender::new(false),
            failed: AtomicBool::new(false),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &CaConfig {
        &self.config
    }

    /// The arcs of the attestation-claims extension's OID.
    pub(crate) fn claims_oid(&self) -> &[u64] {
        &self.claims_oid
    }

    /// The HSM that holds the CA key.
    pub(crate) fn hsm(&self) -> &Arc<HsmKeys> {
        &self.hsm
    }

    /// The trust anchors of the broker's mTLS for certificates this CA issued.
    pub fn anchors(&self) -> watch::Receiver<Vec<Vec<u8>>> {
        self.anchors.subscribe()
    }

    /// What the CA serves now.
    ///
    /// # Errors
    /// `UNAVAILABLE` while it is being loaded; `FAILED_PRECONDITION` for an intermediate
    /// CA with no installed certificate.
    pub(crate) fn state(&self) -> Result<Arc<CaState>> {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        state.clone().ok_or_else(|| self.not_loaded())
    }

    fn not_loaded(&self) -> BrokerError {
        if self.config.mode == CaMode::Intermediate && self.failed.load(Ordering::Relaxed) {
            BrokerError::FailedPrecondition(
                "the CA has no installed certificate: run `keybroker ca csr`, have the root \
                 sign it, then `keybroker ca install`"
                    .into(),
            )
        } else if self.failed.load(Ordering::Relaxed) {
            BrokerError::Unavailable(
                "the CA could not be loaded (the broker's log says why); retry".into(),
            )
        } else {
            BrokerError::Unavailable(
                "the CA is being loaded (the broker is starting); retry".into(),
            )
        }
    }

    /// Waits up to `limit` for the CA to be loaded.
    ///
    /// # Errors
    /// As [`Authority::state`].
    pub(crate) async fn wait_loaded(&self, limit: Duration) -> Result<Arc<CaState>> {
        let mut found = self.found.subscribe();
        let _ = tokio::time::timeout(limit, found.wait_for(|f| *f)).await;
        self.state()
    }

    /// Loads the CA (making its first version, or the next, in self-signed mode), then
    /// looks again whenever the state is due to change, for as long as the broker runs.
    pub fn spawn(self: Arc<Self>) {
        tokio::spawn(async move {
            let mut wait = Duration::from_secs(1);
            loop {
                let next = match self.refresh().await {
                    Ok(next) => {
                        wait = Duration::from_secs(1);
                        Duration::from_secs(next.saturating_sub(unix_now()).max(1))
                    }
                    Err(e) => {
                        tracing::error!(error = %e, retry_in_s = wait.as_secs(),
                            "the workload CA could not be loaded");
                        self.failed.store(true, Ordering::Relaxed);
                        let this = wait;
                        wait = (wait * 2).min(RETRY);
                        this
                    }
                };
                // Also looks within RETRY, so that `keybroker ca install` in another
                // process is picked up; an unchanged store costs one read.
                tokio::time::sleep(next.min(RETRY)).await;
            }
        });
    }

    /// Loads the versions from the store, makes a new one if one is due, and publishes
    /// the state. Returns when it next needs a look.
    async fn refresh(&self) -> Result<u64> {
        let mut records = self.store.ca_versions().await?;
        let now = unix_now();
        if self.config.mode == CaMode::SelfSigned
            && let Some(record) = self.due_version(&records, now)?
        {
            records.push(self.make_version(record).await?);
        }
        let loaded = self.load(records).await?;
        let state = Arc::new(self.choose(loaded, now)?);
        let next = state.next_change;
        let changed = self
            .state
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .is_none_or(|old| {
                old.anchors != state.anchors || old.current.version != state.current.version
            });
        if changed {
            tracing::info!(
                version = state.current.version,
                anchors = state.anchors.len(),
                "workload CA ready"
            );
            self.anchors.send_replace(state.anchors.clone());
        }
        *self.state.write().unwrap_or_else(|p| p.into_inner()) = Some(state);
        self.failed.store(false, Ordering::Relaxed);
        self.found.send_replace(true);
        Ok(next)
    }

    /// The versions of `records`, checked against the token; the last check is reused
    /// while the store has not changed (each check searches the token, which costs
    /// seconds on a token of 10,000 keys).
    async fn load(&self, records: Vec<CaRecord>) -> Result<Vec<CaVersion>> {
        if let Some((seen, versions)) = self
            .loaded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            && *seen == records
        {
            return Ok(versions.clone());
        }
        let backend = self.backend.clone();
        let checking = records.clone();
        let versions = self
            .hsm
            .run(move |token| load_versions(token, &backend, checking))
            .await?;
        *self.loaded.lock().unwrap_or_else(|p| p.into_inner()) = Some((records, versions.clone()));
        Ok(versions)
    }

    /// The record of the version to make now, if one is due: the first, or the next
    /// when the newest has `rotate_before_seconds` left.
    fn due_version(&self, records: &[CaRecord], now: u64) -> Result<Option<CaRecord>> {
        let newest = records.iter().rev().find(|r| !r.certificate.is_empty());
        let next = records
            .iter()
            .map(|r| u64::from(r.version))
            .max()
            .unwrap_or(0)
            + 1;
        let (version, activates_at) = match newest {
            None => (next, now),
            Some(record) => {
                let (not_after, _) = certificate_facts(&record.certificate)?;
                let rotate_at = not_after.saturating_sub(self.config.rotate_before_seconds);
                if now < rotate_at {
                    return Ok(None);
                }
                (next, now.saturating_add(self.config.publish_ahead_seconds))
            }
        };
        let version = u32::try_from(version)
            .map_err(|_| BrokerError::Internal("CA version out of range".into()))?;
        Ok(Some(CaRecord {
            version,
            backend: self.backend.clone(),
            key_id: Vec::new(),
            certificate: Vec::new(),
            chain_pem: String::new(),
            created_at: i64::try_from(now).unwrap_or(i64::MAX),
            activates_at: i64::try_from(activates_at).unwrap_or(i64::MAX),
        }))
    }

    /// Makes the key and self-signed certificate of `record`'s version, then stores it.
    async fn make_version(&self, mut record: CaRecord) -> Result<CaRecord> {
        let profile = CaProfile {
            common_name: format!("{} {}", self.config.common_name, record.version),
            not_before: SystemTime::now()
                .checked_sub(Duration::from_secs(60))
                .unwrap_or(UNIX_EPOCH),
            not_after: SystemTime::now() + Duration::from_secs(self.config.validity_seconds),
        };
        let version = record.version;
        let created = u64::try_from(record.created_at).unwrap_or(0);
        let (id, certificate) = self
            .hsm
            .run(move |token| {
                let id = generate_key(token, version, created)?;
                let signer = HsmSigner::new(token, id.clone())
                    .map_err(|e| BrokerError::Unavailable(e.to_string()))?;
                let certificate = self_signed(&signer, &profile)
                    .map_err(|e| BrokerError::Unavailable(e.to_string()))?;
                Ok((id, certificate))
            })
            .await?;
        record.key_id = id.as_bytes().to_vec();
        record.certificate = certificate;
        self.store.put_ca_version(&record).await?;
        tracing::info!(
            version,
            activates_at = record.activates_at,
            "workload CA version made"
        );
        Ok(record)
    }

    /// The state from the loaded versions at `now`.
    fn choose(&self, versions: Vec<CaVersion>, now: u64) -> Result<CaState> {
        let live: Vec<&CaVersion> = versions.iter().filter(|v| v.not_after > now).collect();
        let current = live
            .iter()
            .filter(|v| v.activates_at <= now)
            .max_by_key(|v| v.version)
            .ok_or_else(|| match self.config.mode {
                CaMode::Intermediate => {
                    BrokerError::FailedPrecondition("the CA has no installed certificate".into())
                }
                CaMode::SelfSigned => {
                    BrokerError::Unavailable("the CA has no valid version".into())
                }
            })?;
        let mut bundle: Vec<Vec<u8>> = Vec::new();
        for version in live.iter().rev() {
            let root = version.chain.last().unwrap_or(&version.certificate);
            if !bundle.contains(root) {
                bundle.push(root.clone());
            }
        }
        let anchors = live.iter().rev().map(|v| v.certificate.clone()).collect();
        let rotation = current
            .not_after
            .saturating_sub(self.config.rotate_before_seconds);
        let next_change = live
            .iter()
            .flat_map(|v| [v.not_after, v.activates_at])
            .filter(|t| *t > now)
            .chain([rotation.max(now.saturating_add(1))])
            .min()
            .unwrap_or(now.saturating_add(RETRY.as_secs()));
        Ok(CaState {
            current: Arc::new((*current).clone()),
            bundle,
            anchors,
            next_change,
        })
    }
}
