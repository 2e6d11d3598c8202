//! Attestation: challenges, evidence appraisal (the pure `attest` crate), attestation
//! tokens signed in the HSM, and their verification when a caller presents one to gain
//! the claims in its authorization context.

pub mod dev;
mod service;
mod token_key;
mod token_keys;

pub use service::AttestationServiceImpl;
pub use token_keys::{RotationSchedule, SigningKey, TokenKeys};

use std::sync::Arc;
use std::time::Duration;

use attest::Appraiser;
use attest::challenge::{Challenge, ChallengeStore};
use attest::clock::SystemClock;
use attest::policy::AppraisalPolicy;
use attest::release::KemPublicKey;
use attest::snp::SnpVerifier;
use tonic::Status;

use crate::authz::Action;
use crate::backends::{Backends, HsmKeys, ListedObject};
use crate::config::AttestationConfig;
use crate::error::{BrokerError, Result};
use crate::identity::SpiffeId;
use crate::request::{Authorized, ClaimsError, ClaimsSource, Presented};

/// Most challenges outstanding at once; as many used ones are remembered apart, to name
/// replays (`attest/src/challenge.rs`).
const MAX_OUTSTANDING_CHALLENGES: usize = 10_000;
/// How long `Attest` and `GetJwks` wait for the token keys while the broker starts,
/// before they answer `UNAVAILABLE`.
pub(crate) const TOKEN_KEYS_WAIT: Duration = Duration::from_secs(5);

/// The broker's attestation state.
#[derive(Debug)]
pub struct Attestation {
    /// `None` when no appraisal policy is configured: attestation is refused.
    appraiser: Option<Appraiser>,
    keys: Arc<TokenKeys>,
    issuer: String,
    /// The `[[hsm]]` that holds the token keys.
    signing_backend: String,
}

impl Attestation {
    /// Loads the appraisal policy; the token keys in the HSM that
    /// `attestation.signing_backend` names are found later ([`Attestation::spawn_token_keys`]).
    /// `None` when attestation is not configured (no `attestation.policy`): then no token
    /// key is made anywhere, so a module that cannot make one (or a broker with no HSM at
    /// all) still starts.
    ///
    /// # Errors
    /// An unreadable or invalid policy (the message names the field), no
    /// `attestation.signing_backend` or one that is not an HSM, or an unusable certificate
    /// cache.
    pub fn open(config: &AttestationConfig, backends: &Backends) -> Result<Option<Attestation>> {
        let Some(path) = &config.policy else {
            tracing::info!(
                "no attestation.policy: attestation is off, and no token-signing key is made"
            );
            return Ok(None);
        };
        let name = config.signing_backend.as_deref().ok_or_else(|| {
            BrokerError::FailedPrecondition(
                "attestation.signing_backend: required with attestation.policy; name the \
                 [[hsm]] that holds the token-signing key"
                    .into(),
            )
        })?;
        let signing = backends.get_as::<HsmKeys>(name)?.ok_or_else(|| {
            BrokerError::FailedPrecondition(format!(
                "attestation.signing_backend: attestation tokens are signed in an HSM; backend \
                 {name:?} is not one"
            ))
        })?;
        let appraiser = Some(appraiser(config, path)?);
        let schedule = RotationSchedule {
            period: Duration::from_secs(config.token_key_rotation_seconds),
            overlap: Duration::from_secs(config.token_key_overlap_seconds),
        };
        if let Some(validity) = appraiser
            .as_ref()
            .map(|a| a.policy().result_validity_seconds)
            .filter(|v| *v > config.token_key_overlap_seconds)
        {
            tracing::warn!(
                token_validity_seconds = validity,
                overlap_seconds = config.token_key_overlap_seconds,
                "attestation.token_key_overlap_seconds is shorter than a token's life: tokens \
                 signed just before a rotation stop working before they expire"
            );
        }
        Ok(Some(Attestation {
            appraiser,
            keys: Arc::new(TokenKeys::new(signing, &config.issuer, schedule)),
            issuer: config.issuer.clone(),
            signing_backend: name.to_string(),
        }))
    }

    /// The backend that holds the token keys.
    pub fn signing_backend(&self) -> &str {
        &self.signing_backend
    }

    /// Finds the token-signing keys in the background, from `listed` (a listing of the
    /// signing backend's objects) if given, then rotates them on schedule (needs the
    /// runtime). [`TokenKeys::found`] says when they are found.
    pub fn spawn_token_keys(&self, listed: Option<Vec<ListedObject>>) {
        self.keys.clone().spawn(listed);
    }

    /// The JWK set that verifies this broker's tokens, JSON (`GetJwks`): the current key
    /// and, during its overlap, the one it replaced.
    ///
    /// # Errors
    /// `INTERNAL` for another call's authorization; `UNAVAILABLE` while the broker starts
    /// and the keys are not found within [`TOKEN_KEYS_WAIT`].
    pub async fn jwks(&self, auth: &Authorized) -> Result<String, Status> {
        auth.require_broker(Action::GetJwks)?;
        self.keys.wait_found(TOKEN_KEYS_WAIT).await?;
        Ok(self.keys.jwks()?)
    }

    /// A fresh challenge for the caller (`GetChallenge`): only the caller can redeem it.
    ///
    /// # Errors
    /// Attestation is not configured; the caller, or the broker, has too many challenges
    /// outstanding.
    pub fn issue_challenge(&self, auth: &Authorized) -> Result<Challenge, Status> {
        auth.require_broker(Action::GetChallenge)?;
        self.appraiser()?
            .challenges
            .issue(auth.caller().as_str())
            .map_err(status)
    }

    /// The token-signing keys.
    pub fn token_keys(&self) -> &TokenKeys {
        &self.keys
    }

    /// The appraiser, for a caller allowed `Attest`.
    ///
    /// # Errors
    /// Attestation is not configured, or another call's authorization.
    pub fn appraiser_for(&self, auth: &Authorized) -> Result<&Appraiser, Status> {
        auth.require_broker(Action::Attest)?;
        self.appraiser()
    }

    /// The `iss` of this broker's tokens.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    fn appraiser(&self) -> Result<&Appraiser, Status> {
        self.appraiser.as_ref().ok_or_else(not_configured)
    }
}

/// The refusal of every attestation call on a broker without attestation.
fn not_configured() -> Status {
    Status::failed_precondition("attestation is not configured on this broker")
}

fn appraiser(config: &AttestationConfig, path: &std::path::Path) -> Result<Appraiser> {
    let setup = |what: &str, e: String| {
        BrokerError::FailedPrecondition(format!("attestation.{what} ({}): {e}", path.display()))
    };
    let text = std::fs::read_to_string(path).map_err(|e| setup("policy", e.to_string()))?;
    let policy = AppraisalPolicy::from_toml(&text).map_err(|e| setup("policy", e.to_string()))?;
    let clock = Arc::new(SystemClock);
    let mut snp = SnpVerifier::new(clock.clone())
        .map_err(|e| BrokerError::Internal(format!("SEV-SNP roots: {e}")))?;
    if let Some(dir) = &config.certificate_cache {
        snp = snp
            .with_certificate_cache(dir)
            .map_err(|e| setup("certificate_cache", e.to_string()))?;
    }
    let challenges = ChallengeStore::new(
        Duration::from_secs(config.challenge_ttl_seconds),
        MAX_OUTSTANDING_CHALLENGES,
        config.challenges_per_identity,
        clock.clone(),
    );
    Ok(Appraiser::new(challenges, snp, policy, clock))
}

impl ClaimsSource for Attestation {
    fn claims(
        &self,
        token: &str,
        caller: &SpiffeId,
        holder_spki_der: &[u8],
    ) -> std::result::Result<Presented, ClaimsError> {
        let verified = self.keys.verify(token)?;
        if verified.sub != caller.as_str() {
            return Err(format!(
                "the token was issued to {}, not to the caller",
                verified.sub
            )
            .into());
        }
        // RFC 7800: only the holder of the key the evidence bound may use the token.
        if !verified.cnf.matches_key(holder_spki_der) {
            return Err(ClaimsError::Invalid(
                "the token is bound to another key than the one the caller proved it holds".into(),
            ));
        }
        let kem = verified
            .kem
            .as_ref()
            .map(KemPublicKey::from_jwk)
            .transpose()
            .map_err(|e| ClaimsError::Invalid(format!("the token's kem claim: {e}")))?;
        let claims = serde_json::from_value(verified.attestation)
            .map_err(|e| ClaimsError::Invalid(format!("the token's attestation claims: {e}")))?;
        Ok(Presented { claims, kem })
    }
}

/// An attestation failure as a status for the workload. The reason is the workload's own
/// evidence's problem, so it is returned; configuration faults are not.
fn status(err: attest::AttestError) -> Status {
    use attest::AttestError as E;
    tracing::warn!(error = %err, "attestation refused");
    match err {
        E::Malformed(_) | E::UnsupportedVersion(_) => Status::invalid_argument(err.to_string()),
        E::UnknownChallenge | E::ExpiredChallenge | E::ReplayedChallenge => {
            Status::failed_precondition(format!("{err}: request a new challenge"))
        }
        E::ChallengeStoreFull | E::ChallengeQuotaExceeded(_) => {
            Status::resource_exhausted(err.to_string())
        }
        E::Policy(_) => Status::internal("internal error"),
        _ => Status::permission_denied(format!("attestation refused: {err}")),
    }
}
