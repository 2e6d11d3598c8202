//! The keys that sign attestation tokens: EC P-256 keys generated inside an HSM token,
//! sensitive and non-extractable like every other key, one version at a time.
//!
//! They are not managed keys: no `KeyService` call can name them, so no policy mistake can
//! let a workload sign arbitrary digests with one and forge tokens. Their labels do not
//! start with the managed prefix (`kb:`), so reconciliation leaves them alone.
//!
//! **Rotation.** The current key signs for `attestation.token_key_rotation_seconds`; then a
//! new version is generated and becomes current. The one it replaced still verifies, and
//! stays in the JWK set, for `attestation.token_key_overlap_seconds`; after that, tokens
//! it signed are refused even if they have not expired, and the key is destroyed. Each
//! version's label carries its number and creation time
//! (`kbsys:attestation-token:v3:1764338400`), so a restart picks up where the last run
//! left off.
//!
//! **Start-up.** The keys are found once the broker serves, from the listing of the token
//! that the orphan scan uses too (`crate::start`): on a token of 10,000 keys, listing
//! costs seconds, and key operations need not wait for it. Until they are found,
//! attestation answers `UNAVAILABLE`, the gRPC health of `AttestationService` is
//! `NOT_SERVING`, and the broker has not printed `keybroker: ready`. Every HSM call goes
//! through the token's session gate ([`HsmKeys::run`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use attest::token::{TokenClaims, TokenVerifier, UnsignedToken};
use hsm_backend::{Digest, HashAlgorithm, KeyId, SignatureAlgorithm};
use tokio::sync::watch;

use super::token_key::{TokenKey, choose_versions, parse_label};
use crate::backends::{HsmKeys, KeyBackend as _, ListedObject, TypedHandle as _};
use crate::error::{BrokerError, Result};
use crate::request::ClaimsError;

/// How soon a failed rotation is tried again, and the longest wait between two searches
/// for the keys.
const RETRY: Duration = Duration::from_secs(30);
/// The first wait after a failed search for the keys; it doubles up to `RETRY`.
const FIRST_RETRY: Duration = Duration::from_secs(1);

/// How often the token-signing key rotates.
#[derive(Debug, Clone, Copy)]
pub struct RotationSchedule {
    /// How long a key signs.
    pub period: Duration,
    /// How long a replaced key still verifies.
    pub overlap: Duration,
}

/// A key that no longer signs, and when it stops verifying.
#[derive(Debug, Clone)]
struct Retired {
    key: TokenKey,
    verifier: TokenVerifier,
    until: u64,
}

#[derive(Debug)]
struct Ring {
    current: Arc<TokenKey>,
    verifier: TokenVerifier,
    previous: Option<Retired>,
    jwks: String,
}

/// The token-signing keys of one HSM: the current one and the one it replaced. They are
/// found once the broker serves (`crate::start`): until then every use is refused as
/// `UNAVAILABLE`, and `Attest` and `GetJwks` wait a little first ([`TokenKeys::wait_found`]).
#[derive(Debug)]
pub struct TokenKeys {
    hsm: Arc<HsmKeys>,
    issuer: String,
    schedule: RotationSchedule,
    /// `None` until the keys are found.
    ring: RwLock<Option<Ring>>,
    /// Becomes true once the keys are found.
    found: watch::Sender<bool>,
    /// Whether a search failed (why is logged, not told to callers).
    failed: AtomicBool,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Ring {
    fn new(issuer: &str, current: TokenKey, previous: Option<(TokenKey, u64)>) -> Result<Ring> {
        let jwk_error = |e: attest::AttestError| BrokerError::Internal(format!("JWK set: {e}"));
        let verifier_of = |key: &TokenKey| {
            attest::token::jwks_of(&[key.published()])
                .and_then(|jwks| TokenVerifier::new(&jwks, issuer))
                .map_err(jwk_error)
        };
        let mut published = vec![current.published()];
        if let Some((key, _)) = &previous {
            published.push(key.published());
        }
        let jwks = attest::token::jwks_of(&published).map_err(jwk_error)?;
        let verifier = verifier_of(&current)?;
        let previous = match previous {
            Some((key, until)) => Some(Retired {
                verifier: verifier_of(&key)?,
                key,
                until,
            }),
            None => None,
        };
        Ok(Ring {
            current: Arc::new(current),
            verifier,
            previous,
            jwks,
        })
    }
}

impl TokenKeys {
    /// The token-signing keys that `hsm` holds, not yet found: no HSM call is made until
    /// [`TokenKeys::find_until_found`].
    pub fn new(hsm: Arc<HsmKeys>, issuer: &str, schedule: RotationSchedule) -> TokenKeys {
        TokenKeys {
            hsm,
            issuer: issuer.to_string(),
            schedule,
            ring: RwLock::new(None),
            found: watch::Sender::new(false),
            failed: AtomicBool::new(false),
        }
    }

    /// Finds the keys, generating the first on first use and a new one if the current one
    /// is past its period, and destroys versions past their overlap; after a failure, tries
    /// again with back-off until it succeeds. `listed` is a listing of the token's objects
    /// already made (the orphan scan's): the first attempt reads only the keys it names.
    pub async fn find_until_found(&self, listed: Option<Vec<ListedObject>>) {
        let mut listed = listed;
        let mut wait = FIRST_RETRY;
        loop {
            match self.find(listed.take()).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::error!(error = %e, retry_in_s = wait.as_secs(),
                        "attestation token keys not found; attestation is unavailable");
                    self.failed.store(true, Ordering::Relaxed);
                }
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(RETRY);
        }
    }

    async fn find(&self, listed: Option<Vec<ListedObject>>) -> Result<()> {
        // Only the objects labelled as token keys are described: describing one costs a
        // search of the whole token (seconds at 10,000 keys for all of them).
        let candidates = listed.map(|objects| {
            objects
                .into_iter()
                .filter(|o| parse_label(&o.label).is_some())
                .filter_map(|o| KeyId::decode(&o.handle).ok())
                .collect()
        });
        let schedule = self.schedule;
        let (current, previous) = self
            .hsm
            .run(move |token| choose_versions(token, candidates, schedule, unix_now()))
            .await?;
        tracing::info!(
            backend = %self.hsm.describe(),
            version = current.version,
            kid = %current.kid,
            previous = previous.as_ref().map(|(k, _)| k.kid.as_str()),
            "attestation token keys ready"
        );
        let ring = Ring::new(&self.issuer, current, previous)?;
        *self.ring.write().unwrap_or_else(|p| p.into_inner()) = Some(ring);
        self.found.send_replace(true);
        Ok(())
    }

    /// Waits up to `limit` for the keys to be found.
    ///
    /// # Errors
    /// `UNAVAILABLE`: they are not found yet (the message says whether a search failed).
    pub async fn wait_found(&self, limit: Duration) -> Result<()> {
        tokio::time::timeout(limit, self.found())
            .await
            .map_err(|_| self.not_found())
    }

    /// Returns once the keys are found.
    pub async fn found(&self) {
        let mut found = self.found.subscribe();
        // The sender lives as long as `self`: this ends only when the keys are found.
        let _ = found.wait_for(|f| *f).await;
    }

    fn not_found(&self) -> BrokerError {
        BrokerError::Unavailable(if self.failed.load(Ordering::Relaxed) {
            "the attestation token keys could not be found on the token (the broker's log \
             says why); retry"
                .into()
        } else {
            "the attestation token keys are still being found on the token (the broker is \
             starting); retry"
                .into()
        })
    }

    /// Reads the ring.
    ///
    /// # Errors
    /// `UNAVAILABLE`: the keys are not found yet.
    fn with_ring<T>(&self, read: impl FnOnce(&Ring) -> T) -> Result<T> {
        let ring = self.ring.read().unwrap_or_else(|p| p.into_inner());
        ring.as_ref().map(read).ok_or_else(|| self.not_found())
    }

    /// The JWK set: the current key and, during its overlap, the one it replaced.
    ///
    /// # Errors
    /// `UNAVAILABLE`: the keys are not found yet.
    pub fn jwks(&self) -> Result<String> {
        self.with_ring(|ring| ring.jwks.clone())
    }

    /// The current key's id, for [`attest::token::prepare`], and the key itself, so that
    /// a rotation between preparing and signing cannot mix two keys.
    ///
    /// # Errors
    /// `UNAVAILABLE`: the keys are not found yet.
    pub fn signing_key(&self) -> Result<SigningKey> {
        self.with_ring(|ring| SigningKey(ring.current.clone()))
    }

    /// Signs a prepared token with the key it was prepared for, through the HSM's
    /// session gate.
    ///
    /// # Errors
    /// The HSM refuses or is busy; the signature is malformed.
    pub async fn sign(&self, key: &SigningKey, unsigned: UnsignedToken) -> Result<String> {
        let id = key.0.id.clone();
        let digest = Digest::of(HashAlgorithm::Sha256, unsigned.signing_input());
        let der = self
            .hsm
            .run(move |hsm| Ok(hsm.sign(&id, SignatureAlgorithm::EcdsaP256Sha256, &digest)?))
            .await?;
        unsigned
            .finish(&der)
            .map_err(|e| BrokerError::Internal(format!("attestation token signature: {e}")))
    }

    /// Verifies a token signed by the current key, or by the one it replaced while its
    /// overlap lasts.
    ///
    /// # Errors
    /// Why the token is not valid, or that the keys are not found yet.
    pub fn verify(&self, token: &str) -> std::result::Result<TokenClaims, ClaimsError> {
        let invalid = |e: String| ClaimsError::Invalid(e);
        let kid = attest::token::key_id(token).map_err(|e| invalid(e.to_string()))?;
        let checked = self.with_ring(|ring| {
            if kid == ring.current.kid {
                return ring.verifier.verify(token).map_err(|e| e.to_string());
            }
            match &ring.previous {
                Some(retired) if retired.key.kid == kid => {
                    if unix_now() >= retired.until {
                        return Err(format!(
                            "the token was signed by key {kid}, retired and past its overlap"
                        ));
                    }
                    retired.verifier.verify(token).map_err(|e| e.to_string())
                }
                _ => Err(format!("the token was signed by an unknown key {kid}")),
            }
        });
        match checked {
            Ok(verified) => verified.map_err(invalid),
            Err(not_found) => Err(ClaimsError::Unavailable(not_found.to_string())),
        }
    }

    /// When the ring next changes: the current key's rotation, or the end of the previous
    /// key's overlap, whichever is first.
    fn next_change(&self) -> Result<u64> {
        self.with_ring(|ring| {
            let rotation = ring
                .current
                .created
                .saturating_add(self.schedule.period.as_secs());
            match &ring.previous {
                Some(retired) => rotation.min(retired.until),
                None => rotation,
            }
        })
    }

    fn set_ring(&self, ring: Ring) {
        *self.ring.write().unwrap_or_else(|p| p.into_inner()) = Some(ring);
    }

    /// Rotates if the current key's period is over, and drops the previous key from the
    /// JWK set (and destroys it) once its overlap is over.
    async fn tick(&self) -> Result<()> {
        let now = unix_now();
        let (current, previous) =
            self.with_ring(|ring| (ring.current.clone(), ring.previous.clone()))?;
        if current.due(self.schedule, now) {
            let version = current.version.saturating_add(1);
            let next = self
                .hsm
                .run(move |hsm| TokenKey::generate(hsm, version, now))
                .await?;
            let until = now.saturating_add(self.schedule.overlap.as_secs());
            let ring = Ring::new(&self.issuer, next, Some(((*current).clone(), until)))?;
            tracing::info!(
                version = ring.current.version,
                kid = %ring.current.kid,
                retired = %current.kid,
                "attestation token key rotated"
            );
            self.set_ring(ring);
            if let Some(old) = previous {
                self.destroy(old.key).await;
            }
        } else if let Some(retired) = previous.filter(|r| now >= r.until) {
            // Destroyed first: verification needs only the public key, and whoever sees
            // the key leave the JWK set sees it gone from the token.
            tracing::info!(kid = %retired.key.kid, "attestation token key past its overlap");
            self.destroy(retired.key).await;
            self.set_ring(Ring::new(&self.issuer, (*current).clone(), None)?);
        }
        Ok(())
    }

    async fn destroy(&self, key: TokenKey) {
        let id = key.id.clone();
        match self.hsm.run(move |hsm| Ok(hsm.destroy_key(&id)?)).await {
            Ok(()) => tracing::info!(version = key.version, kid = %key.kid,
                "retired attestation token key destroyed"),
            Err(e) => tracing::warn!(version = key.version, error = %e,
                "a retired attestation token key could not be destroyed"),
        }
    }

    /// Finds the keys (see [`TokenKeys::find_until_found`]), then rotates on schedule for
    /// as long as the broker runs.
    pub fn spawn(self: Arc<Self>, listed: Option<Vec<ListedObject>>) {
        tokio::spawn(async move {
            self.find_until_found(listed).await;
            loop {
                let wait = match self.next_change() {
                    Ok(at) => at.saturating_sub(unix_now()),
                    Err(_) => RETRY.as_secs(),
                };
                tokio::time::sleep(Duration::from_secs(wait)).await;
                if let Err(e) = self.tick().await {
                    tracing::error!(error = %e, "attestation token key rotation failed; retrying");
                    tokio::time::sleep(RETRY).await;
                }
            }
        });
    }
}

/// The key a token was prepared for.
#[derive(Debug, Clone)]
pub struct SigningKey(Arc<TokenKey>);

impl SigningKey {
    /// Its key id (`kid`).
    pub fn key_id(&self) -> &str {
        &self.0.kid
    }
}
