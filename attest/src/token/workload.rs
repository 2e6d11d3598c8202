//! Workload JWTs (`GetToken`, like SPIFFE JWT-SVIDs), and the digest of attestation
//! claims that they and issued certificates carry.

use rand::RngCore;
use serde::{Deserialize, Serialize};

use super::b64url;
use crate::claims::Claims;
use crate::error::{AttestError, Result};

/// The claims of a workload JWT (`GetToken`, like a SPIFFE JWT-SVID): for one audience,
/// naming the workload and the attestation it was issued on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadClaims {
    pub iss: String,
    /// The workload's SPIFFE ID.
    pub sub: String,
    pub aud: String,
    pub iat: u64,
    pub exp: u64,
    pub jti: String,
    /// [`claims_digest`] of the attestation the workload presented, base64url.
    pub attestation_sha256: String,
}

impl WorkloadClaims {
    /// Claims for `subject` and `audience`, valid from `now` for `ttl_seconds`.
    pub fn new(
        issuer: &str,
        subject: &str,
        audience: &str,
        now: u64,
        ttl_seconds: u64,
        attestation: &Claims,
    ) -> Result<WorkloadClaims> {
        let mut jti = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut jti);
        Ok(WorkloadClaims {
            iss: issuer.to_string(),
            sub: subject.to_string(),
            aud: audience.to_string(),
            iat: now,
            exp: now.saturating_add(ttl_seconds),
            jti: hex::encode(jti),
            attestation_sha256: b64url(&claims_digest(attestation)?),
        })
    }
}

/// SHA-256 of attestation claims as JSON, object members sorted by name and no
/// whitespace: what a certificate's claims extension and a workload JWT carry. Anyone
/// holding the attestation token recomputes it from its `attestation` member.
///
/// # Errors
/// The claims cannot be serialised.
pub fn claims_digest(claims: &Claims) -> Result<[u8; 32]> {
    use sha2::{Digest as _, Sha256};
    let value =
        serde_json::to_value(claims).map_err(|e| AttestError::Malformed(format!("claims: {e}")))?;
    let bytes = serde_json::to_vec(&sorted(value))
        .map_err(|e| AttestError::Malformed(format!("claims: {e}")))?;
    Ok(Sha256::digest(bytes).into())
}

/// `value` with every object's members in name order. (serde_json keeps insertion order
/// when any crate in the build enables its `preserve_order` feature, so order is made
/// explicit here.)
fn sorted(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut members: Vec<(String, Value)> = map.into_iter().collect();
            members.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(members.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
        other => other,
    }
}
