//! The broker client: an mTLS channel ([`channel`]), the attestation and issuance flow
//! ([`Agent`]), what it yields ([`Credentials`]), the secrets released to it
//! ([`Agent::get_secret`], [`ReleasedSecret`]), the keys released to it
//! ([`Agent::release_key`], [`ReleasedKey`]) and when to run it again ([`renewal_delay`],
//! [`backoff`]).
//!
//! Every error names the step that failed ([`Step`]) and, for a refused call, the gRPC code
//! and message; none carries key material, a token or a secret.

mod agent;
mod credentials;
mod keys;
mod leases;
mod schedule;
mod sealing;
mod secrets;
mod tls;

pub use agent::{Agent, AgentConfig, AudienceToken};
pub use credentials::Credentials;
pub use keys::{RELEASE_KDF, ReleasedKey, open_released_key};
pub use leases::{LeasedSecret, open_leased};
pub use schedule::{backoff, renewal_delay};
pub use sealing::{local_sealer, local_unsealer};
pub use secrets::{ReleasedSecret, open_released};
pub use tls::channel;

use crate::evidence::EvidenceError;
use crate::key::KeyError;

/// The gRPC metadata key that carries an attestation token (the JWT) on a call.
pub const ATTESTATION_HEADER: &str = "x-keybroker-attestation";

/// A step of the flow, named in every [`ClientError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Reading the TLS inputs and connecting to the broker.
    Connect,
    /// `AttestationService.GetChallenge`.
    Challenge,
    /// Collecting evidence from the TEE or TPM.
    Evidence,
    /// Making the ephemeral key and `AttestationService.Attest`.
    Attest,
    /// Making the CSR and `IdentityService.IssueCertificate`.
    Issue,
    /// `IdentityService.GetToken`.
    Token,
    /// `SecretService.GetSecret` or `GenerateSecret` (checking the answer and opening
    /// it), or a lease call.
    Secret,
    /// `KeyService.ReleaseKey` (checking the answer and unwrapping the key).
    Key,
    /// Sealing or opening data locally under a data key (`GenerateDataKey`, `Decrypt`).
    Seal,
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Step::Connect => "connect",
            Step::Challenge => "challenge",
            Step::Evidence => "evidence",
            Step::Attest => "attest",
            Step::Issue => "issue",
            Step::Token => "token",
            Step::Secret => "secret",
            Step::Key => "key",
            Step::Seal => "seal",
        })
    }
}

/// Why the flow failed, and at which step. Messages never contain key material, tokens or
/// secret values.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// An input is unusable (a PEM file, the endpoint, a certificate); `what` names it.
    #[error("{step}: {what}: {reason}")]
    Input {
        /// The step that needed the input.
        step: Step,
        /// Which input, e.g. "server CA certificate".
        what: String,
        /// What is wrong with it.
        reason: String,
    },
    /// TCP, TLS or HTTP/2 to the broker failed.
    #[error("connect: {endpoint}: {reason}")]
    Connect {
        /// The endpoint as given.
        endpoint: String,
        /// The error and its causes.
        reason: String,
    },
    /// The broker answered with an error status.
    #[error("{step}: {code:?}: {message}")]
    Refused {
        /// The call that was refused.
        step: Step,
        /// The gRPC status code.
        code: tonic::Code,
        /// The broker's message.
        message: String,
    },
    /// The broker's answer cannot be used (a malformed nonce, certificate or time).
    #[error("{step}: unusable answer from the broker: {reason}")]
    Answer {
        /// The call whose answer was unusable.
        step: Step,
        /// What is wrong with it.
        reason: String,
    },
    /// The evidence source failed.
    #[error("evidence: {0}")]
    Evidence(#[source] EvidenceError),
    /// The ephemeral key or its certification request could not be made.
    #[error("{step}: {source}")]
    Key {
        /// The step that needed the key.
        step: Step,
        /// What failed.
        source: KeyError,
    },
}

impl ClientError {
    /// The step that failed.
    pub fn step(&self) -> Step {
        match self {
            ClientError::Connect { .. } => Step::Connect,
            ClientError::Evidence(_) => Step::Evidence,
            ClientError::Input { step, .. }
            | ClientError::Refused { step, .. }
            | ClientError::Answer { step, .. }
            | ClientError::Key { step, .. } => *step,
        }
    }

    /// The gRPC status code, when the broker refused the call.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            ClientError::Refused { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// The refusal of `step`, keeping only the code and message (a `Status` also carries
    /// metadata, which is not for logs).
    pub(crate) fn refused(step: Step) -> impl FnOnce(tonic::Status) -> ClientError {
        move |status| ClientError::Refused {
            step,
            code: status.code(),
            message: status.message().to_string(),
        }
    }

    pub(crate) fn answer(step: Step, reason: impl Into<String>) -> ClientError {
        ClientError::Answer {
            step,
            reason: reason.into(),
        }
    }

    pub(crate) fn input(step: Step, what: &str, reason: impl Into<String>) -> ClientError {
        ClientError::Input {
            step,
            what: what.to_string(),
            reason: reason.into(),
        }
    }
}

/// An error and its chain of sources, joined with ": " (tonic's own messages are terse).
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let next = cause.to_string();
        if !text.ends_with(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = cause.source();
    }
    text
}
