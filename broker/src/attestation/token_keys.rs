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
//! left off. Every HSM call after start-up goes through the token's session gate
//! ([`HsmKeys::run`]).

use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use attest::token::{TokenVerifier, UnsignedToken};
use hsm_backend::{Digest, HashAlgorithm, SignatureAlgorithm};

use super::token_key::{TokenKey, internal, parse_label};
use crate::backends::HsmKeys;
use crate::error::{BrokerError, Result};

/// How soon a failed rotation is tried again.
const RETRY: Duration = Duration::from_secs(30);

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

/// The token-signing keys of one HSM: the current one and the one it replaced.
#[derive(Debug)]
pub struct TokenKeys {
    hsm: Arc<HsmKeys>,
    issuer: String,
    schedule: RotationSchedule,
    ring: RwLock<Ring>,
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
    /// Finds the token-signing keys in `hsm`, generating the first on first use and a new
    /// one if the current one is past its period, and destroys versions past their overlap
    /// (blocking: before the server starts).
    ///
    /// # Errors
    /// The token refuses, or holds an object with a token-signing key's label that is not
    /// one.
    pub fn open(hsm: Arc<HsmKeys>, issuer: &str, schedule: RotationSchedule) -> Result<TokenKeys> {
        use crate::backends::KeyBackend;
        let token = hsm.without_gate();
        let mut found = Vec::new();
        // One pass over the token's labels; only keys labelled as token keys are described
        // (describing every key costs a search of the whole token each: minutes at 10,000).
        for (id, label) in token.list_labels().map_err(internal)? {
            if parse_label(&label).is_none() {
                continue;
            }
            let Ok(info) = token.describe_key(&id) else {
                continue;
            };
            if let Some(key) = TokenKey::from_info(&info, token)? {
                found.push(key);
            }
        }
        found.sort_by_key(|k| k.version);
        let now = unix_now();
        let mut current = match found.pop() {
            Some(key) => key,
            None => TokenKey::generate(token, 1, now)?,
        };
        let mut previous = found.pop();
        if now.saturating_sub(current.created) >= schedule.period.as_secs() {
            let next = TokenKey::generate(token, current.version.saturating_add(1), now)?;
            found.extend(previous.replace(std::mem::replace(&mut current, next)));
        }
        // A replaced key verifies until `overlap` after its successor was made.
        let previous = previous.and_then(|key| {
            let until = current.created.saturating_add(schedule.overlap.as_secs());
            if now < until {
                Some((key, until))
            } else {
                found.push(key);
                None
            }
        });
        for stale in &found {
            match token.destroy_key(&stale.id) {
                Ok(()) => tracing::info!(version = stale.version, kid = %stale.kid,
                    "retired attestation token key destroyed"),
                Err(e) => tracing::warn!(version = stale.version, error = %e,
                    "a retired attestation token key could not be destroyed"),
            }
        }
        tracing::info!(
            backend = %hsm.describe(),
            version = current.version,
            kid = %current.kid,
            previous = previous.as_ref().map(|(k, _)| k.kid.as_str()),
            "attestation token keys ready"
        );
        let ring = Ring::new(issuer, current, previous)?;
        Ok(TokenKeys {
            hsm,
            issuer: issuer.to_string(),
            schedule,
            ring: RwLock::new(ring),
        })
    }

    fn ring(&self) -> std::sync::RwLockReadGuard<'_, Ring> {
        self.ring.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The JWK set: the current key and, during its overlap, the one it replaced.
    pub fn jwks(&self) -> String {
        self.ring().jwks.clone()
    }

    /// The current key's id, for [`attest::token::prepare`], and the key itself, so that
    /// a rotation between preparing and signing cannot mix two keys.
    pub fn signing_key(&self) -> SigningKey {
        SigningKey(self.ring().current.clone())
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
    /// Why the token is not valid.
    pub fn verify(&self, token: &str) -> std::result::Result<attest::token::TokenClaims, String> {
        let kid = attest::token::key_id(token).map_err(|e| e.to_string())?;
        let ring = self.ring();
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
    }

    /// When the ring next changes: the current key's rotation, or the end of the previous
    /// key's overlap, whichever is first.
    fn next_change(&self) -> u64 {
        let ring = self.ring();
        let rotation = ring
            .current
            .created
            .saturating_add(self.schedule.period.as_secs());
        match &ring.previous {
            Some(retired) => rotation.min(retired.until),
            None => rotation,
        }
    }

    /// Rotates if the current key's period is over, and drops the previous key from the
    /// JWK set (and destroys it) once its overlap is over.
    async fn tick(&self) -> Result<()> {
        let now = unix_now();
        let (current, previous) = {
            let ring = self.ring();
            (ring.current.clone(), ring.previous.clone())
        };
        if now.saturating_sub(current.created) >= self.schedule.period.as_secs() {
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
            *self.ring.write().unwrap_or_else(|p| p.into_inner()) = ring;
            if let Some(old) = previous {
                self.destroy(old.key).await;
            }
        } else if let Some(retired) = previous.filter(|r| now >= r.until) {
            // Destroyed first: verification needs only the public key, and whoever sees
            // the key leave the JWK set sees it gone from the token.
            tracing::info!(kid = %retired.key.kid, "attestation token key past its overlap");
            self.destroy(retired.key).await;
            let ring = Ring::new(&self.issuer, (*current).clone(), None)?;
            *self.ring.write().unwrap_or_else(|p| p.into_inner()) = ring;
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

    /// Rotates on schedule for as long as the broker runs.
    pub fn spawn_rotation(self: Arc<Self>) {
        tokio::spawn(async move {
            loop {
                let wait = self.next_change().saturating_sub(unix_now());
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
