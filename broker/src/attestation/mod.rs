//! Attestation: challenges, evidence appraisal (the pure `attest` crate), attestation
//! tokens signed in the HSM, and their verification when a caller presents one to gain
//! the claims in its authorization context.

pub mod dev;
mod service;
mod signer;

pub use service::AttestationServiceImpl;
pub use signer::HsmTokenSigner;

use std::sync::Arc;
use std::time::Duration;

use attest::Appraiser;
use attest::challenge::{Challenge, ChallengeStore};
use attest::claims::Claims;
use attest::clock::SystemClock;
use attest::policy::AppraisalPolicy;
use attest::snp::SnpVerifier;
use attest::token::{TokenSigner, TokenVerifier};
use tonic::Status;

use crate::authz::Action;
use crate::backends::{Backends, HsmKeys};
use crate::config::AttestationConfig;
use crate::error::{BrokerError, Result};
use crate::identity::SpiffeId;
use crate::request::{Authorized, ClaimsSource};

/// Most challenges outstanding at once (used ones are remembered until they expire, to
/// name replays).
const MAX_OUTSTANDING_CHALLENGES: usize = 10_000;

/// The broker's attestation state.
#[derive(Debug)]
pub struct Attestation {
    /// `None` when no appraisal policy is configured: attestation is refused.
    appraiser: Option<Appraiser>,
    signer: HsmTokenSigner,
    issuer: String,
    jwks: String,
    /// The JWK set parsed once, for the tokens callers present on every call.
    verifier: TokenVerifier,
}

impl Attestation {
    /// Loads the appraisal policy and readies the token key in the signing HSM (blocking).
    /// `None` when the broker has no HSM to hold the token key.
    ///
    /// # Errors
    /// An unreadable or invalid policy (the message names the field), an unusable
    /// certificate cache, or a token that refuses to make the key.
    pub fn open(config: &AttestationConfig, backends: &Backends) -> Result<Option<Attestation>> {
        let signing = match &config.signing_backend {
            Some(name) => Some(backends.get_as::<HsmKeys>(name)?.ok_or_else(|| {
                BrokerError::FailedPrecondition(format!(
                    "attestation tokens are signed in an HSM; backend {name:?} is not one"
                ))
            })?),
            None => backends.first_as::<HsmKeys>(),
        };
        let Some(signing) = signing else {
            tracing::warn!(
                "no HSM backend: attestation tokens cannot be signed; attestation is off"
            );
            return Ok(None);
        };
        let appraiser = match &config.policy {
            Some(path) => Some(appraiser(config, path)?),
            None => {
                tracing::info!("no attestation.policy: attestation requests are refused");
                None
            }
        };
        let signer = HsmTokenSigner::open(signing)?;
        let jwks = attest::token::jwks(&[&signer as &dyn TokenSigner])
            .map_err(|e| BrokerError::Internal(format!("JWK set: {e}")))?;
        let verifier = TokenVerifier::new(&jwks, &config.issuer)
            .map_err(|e| BrokerError::Internal(format!("JWK set: {e}")))?;
        Ok(Some(Attestation {
            appraiser,
            signer,
            issuer: config.issuer.clone(),
            jwks,
            verifier,
        }))
    }

    /// The JWK set that verifies this broker's tokens, JSON (`GetJwks`).
    ///
    /// # Errors
    /// `INTERNAL` for another call's authorization.
    pub fn jwks(&self, auth: &Authorized) -> Result<&str, Status> {
        auth.require_broker(Action::GetJwks)?;
        Ok(&self.jwks)
    }

    /// A fresh challenge (`GetChallenge`).
    ///
    /// # Errors
    /// Attestation is not configured; too many challenges are outstanding.
    pub fn issue_challenge(&self, auth: &Authorized) -> Result<Challenge, Status> {
        auth.require_broker(Action::GetChallenge)?;
        self.appraiser()?.challenges.issue().map_err(status)
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
        clock.clone(),
    );
    Ok(Appraiser::new(challenges, snp, policy, clock))
}

impl ClaimsSource for Attestation {
    fn claims(&self, token: &str, caller: &SpiffeId) -> std::result::Result<Claims, String> {
        let verified = self.verifier.verify(token).map_err(|e| e.to_string())?;
        if verified.sub != caller.as_str() {
            return Err(format!(
                "the token was issued to {}, not to the caller",
                verified.sub
            ));
        }
        serde_json::from_value(verified.attestation)
            .map_err(|e| format!("the token's attestation claims: {e}"))
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
        E::ChallengeStoreFull => Status::resource_exhausted(err.to_string()),
        E::Policy(_) => Status::internal("internal error"),
        _ => Status::permission_denied(format!("attestation refused: {err}")),
    }
}
