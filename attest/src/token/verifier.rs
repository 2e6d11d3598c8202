//! Verifying tokens: offline, against a published JWK set, refusing high-S signatures.

use super::{CLOCK_SKEW_SECONDS, TokenClaims};
use crate::error::{AttestError, Result};

/// Whether a raw (`r || s`) JWS signature has a high S, which [`TokenVerifier::verify`]
/// refuses. A signature of the wrong length is left to the verifier to refuse.
fn has_high_s(algorithm: jsonwebtoken::Algorithm, raw: &[u8]) -> bool {
    match algorithm {
        jsonwebtoken::Algorithm::ES256 => {
            p256::ecdsa::Signature::from_slice(raw).is_ok_and(|sig| sig.normalize_s().is_some())
        }
        jsonwebtoken::Algorithm::ES384 => {
            p384::ecdsa::Signature::from_slice(raw).is_ok_and(|sig| sig.normalize_s().is_some())
        }
        _ => false,
    }
}

/// Verifies tokens offline against a published JWK set: the set is parsed once, for a
/// relying party (or the broker) that checks many tokens.
#[derive(Clone)]
pub struct TokenVerifier {
    keys: Vec<(String, jsonwebtoken::DecodingKey)>,
    issuer: String,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier")
            .field(
                "key_ids",
                &self.keys.iter().map(|(kid, _)| kid).collect::<Vec<_>>(),
            )
            .field("issuer", &self.issuer)
            .finish()
    }
}

impl TokenVerifier {
    /// Parses a JWK set (keys without a key id are skipped: tokens name theirs).
    ///
    /// # Errors
    /// [`AttestError::Signature`] for a set or a key that does not parse.
    pub fn new(jwks_json: &str, issuer: &str) -> Result<TokenVerifier> {
        let invalid = |why: String| AttestError::Signature(format!("attestation token: {why}"));
        let set: jsonwebtoken::jwk::JwkSet =
            serde_json::from_str(jwks_json).map_err(|e| invalid(format!("JWK set: {e}")))?;
        let keys = set
            .keys
            .iter()
            .filter_map(|jwk| {
                let kid = jwk.common.key_id.clone()?;
                Some(
                    jsonwebtoken::DecodingKey::from_jwk(jwk)
                        .map(|key| (kid, key))
                        .map_err(|e| invalid(e.to_string())),
                )
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(TokenVerifier {
            keys,
            issuer: issuer.to_string(),
        })
    }

    /// Verifies a token and returns its claims.
    ///
    /// # Errors
    /// [`AttestError::Signature`] for any failure: unknown key id, bad signature, a high-S
    /// signature, wrong issuer, expired or not yet valid (beyond the allowed skew).
    pub fn verify(&self, token: &str) -> Result<TokenClaims> {
        use jsonwebtoken::{Algorithm, Validation, decode, decode_header};
        let invalid = |why: String| AttestError::Signature(format!("attestation token: {why}"));
        let header = decode_header(token).map_err(|e| invalid(e.to_string()))?;
        if !matches!(header.alg, Algorithm::ES256 | Algorithm::ES384) {
            return Err(invalid(format!(
                "algorithm {:?} is not accepted",
                header.alg
            )));
        }
        let kid = header.kid.ok_or_else(|| invalid("no key id".into()))?;
        let key = self
            .keys
            .iter()
            .find(|(id, _)| *id == kid)
            .map(|(_, key)| key)
            .ok_or_else(|| invalid(format!("unknown key id {kid}")))?;
        let raw_signature = token
            .rsplit('.')
            .next()
            .and_then(|part| {
                use jose_b64::base64ct::{Base64UrlUnpadded, Encoding};
                Base64UrlUnpadded::decode_vec(part).ok()
            })
            .ok_or_else(|| invalid("the signature is not base64url".into()))?;
        if has_high_s(header.alg, &raw_signature) {
            return Err(invalid(
                "the ECDSA signature has a high S (not the canonical encoding)".into(),
            ));
        }
        let mut validation = Validation::new(header.alg);
        validation.leeway = CLOCK_SKEW_SECONDS;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.issuer]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "sub"]);
        decode::<TokenClaims>(token, key, &validation)
            .map(|data| data.claims)
            .map_err(|e| invalid(e.to_string()))
    }
}

/// Verifies a token offline against a published JWK set and returns its claims.
///
/// # Errors
/// As [`TokenVerifier::new`] and [`TokenVerifier::verify`].
pub fn verify(token: &str, jwks_json: &str, issuer: &str) -> Result<TokenClaims> {
    TokenVerifier::new(jwks_json, issuer)?.verify(token)
}
