//! `[attestation]`: the appraisal policy, challenges and the token-signing key's schedule.

use std::path::PathBuf;

use serde::Deserialize;

/// `[attestation]`: appraisal policy and tokens.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttestationConfig {
    /// The appraisal policy (reference values), TOML; none: attestation is refused.
    #[serde(default)]
    pub policy: Option<PathBuf>,
    /// The `iss` of attestation tokens.
    #[serde(default = "defaults::issuer")]
    pub issuer: String,
    /// The `[[hsm]]` that holds the token-signing key; required with `policy`. Without
    /// `policy` no token-signing key is made.
    #[serde(default)]
    pub signing_backend: Option<String>,
    /// Challenge lifetime.
    #[serde(default = "defaults::challenge_ttl_seconds")]
    pub challenge_ttl_seconds: u64,
    /// A directory of VCEK/VLEK certificates (DER or PEM), for SEV-SNP evidence that comes
    /// without one.
    #[serde(default)]
    pub certificate_cache: Option<PathBuf>,
    /// Most challenges one identity may have outstanding.
    #[serde(default = "defaults::challenges_per_identity")]
    pub challenges_per_identity: usize,
    /// How long a token-signing key signs before a new one replaces it.
    #[serde(default = "defaults::token_key_rotation_seconds")]
    pub token_key_rotation_seconds: u64,
    /// How long a replaced token-signing key still verifies (and stays in the JWK set).
    /// Tokens it signed are refused afterwards, even if they have not expired.
    #[serde(default = "defaults::token_key_overlap_seconds")]
    pub token_key_overlap_seconds: u64,
}

impl Default for AttestationConfig {
    fn default() -> Self {
        AttestationConfig {
            policy: None,
            issuer: defaults::issuer(),
            signing_backend: None,
            challenge_ttl_seconds: defaults::challenge_ttl_seconds(),
            certificate_cache: None,
            challenges_per_identity: defaults::challenges_per_identity(),
            token_key_rotation_seconds: defaults::token_key_rotation_seconds(),
            token_key_overlap_seconds: defaults::token_key_overlap_seconds(),
        }
    }
}

impl AttestationConfig {
    /// Checks the section's ranges; the error names the field.
    pub(super) fn validate(&self) -> Result<(), (String, String)> {
        let bad = |field: &str, why: &str| (field.to_string(), why.to_string());
        if self.policy.is_some() && self.signing_backend.is_none() {
            return Err(bad(
                "attestation.signing_backend",
                "required with attestation.policy: name the [[hsm]] that holds the \
                 token-signing key",
            ));
        }
        if self.challenge_ttl_seconds == 0 || self.challenge_ttl_seconds > 600 {
            return Err(bad("attestation.challenge_ttl_seconds", "must be 1 to 600"));
        }
        if !(1..=10_000).contains(&self.challenges_per_identity) {
            return Err(bad(
                "attestation.challenges_per_identity",
                "must be 1 to 10000",
            ));
        }
        if !(1..=10 * 365 * 86_400).contains(&self.token_key_rotation_seconds) {
            return Err(bad(
                "attestation.token_key_rotation_seconds",
                "must be 1 second to 10 years",
            ));
        }
        if !(1..=30 * 86_400).contains(&self.token_key_overlap_seconds) {
            return Err(bad(
                "attestation.token_key_overlap_seconds",
                "must be 1 second to 30 days",
            ));
        }
        if self.token_key_overlap_seconds > self.token_key_rotation_seconds {
            return Err(bad(
                "attestation.token_key_overlap_seconds",
                "must not exceed attestation.token_key_rotation_seconds (only one retired key \
             verifies at a time)",
            ));
        }
        Ok(())
    }
}

mod defaults {
    pub fn issuer() -> String {
        "keybroker".into()
    }
    pub fn challenge_ttl_seconds() -> u64 {
        60
    }
    pub fn challenges_per_identity() -> usize {
        16
    }
    /// 30 days.
    pub fn token_key_rotation_seconds() -> u64 {
        30 * 86_400
    }
    /// One day: the longest a token lives (`result_validity_seconds` is at most 86400).
    pub fn token_key_overlap_seconds() -> u64 {
        86_400
    }
}
