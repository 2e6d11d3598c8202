//! Attestation tokens: an appraisal signed as a JWT (ES256 or ES384), bound to the
//! ephemeral key of the workload it was issued to.
//!
//! **Binding (RFC 7800, with the `jkt` member of RFC 9449 §6.1).** `cnf.jkt` is the
//! RFC 7638 SHA-256 thumbprint of the ephemeral public key the evidence bound. A relying
//! party accepts the token only from a caller that proves it holds that key: a mutual-TLS
//! connection whose client certificate carries it, or a certification request signed
//! with it ([`Confirmation::matches_key`]). A copy of the token is useless to anyone who
//! does not hold the private key, which lives in the workload's TEE. Binding the key
//! rather than one certificate lets the workload use the token on the certificate the
//! broker issues for that key after attestation.
//!
//! **Signatures.** ECDSA signatures are malleable: `(r, s)` and `(r, n - s)` both verify.
//! Tokens are issued with low S, and [`TokenVerifier::verify`] refuses high S, so one
//! token has exactly one encoding.
//!
//! The signing key stays wherever its [`TokenSigner`] keeps it (the broker keeps it in the
//! HSM). The header type and all verification come from `jsonwebtoken`; the JWK set from
//! RustCrypto's `jose-jwk`. `jsonwebtoken` signs only with in-memory keys, so the compact
//! form is assembled here from its three base64url parts (RFC 7515 §7.1); `jose-jws` 0.1.2
//! could not be used for it: it emits `"b64": true` in the protected header, which
//! `jsonwebtoken` and other RFC 7515 verifiers refuse.

use jose_jwa::{Algorithm as JwaAlgorithm, Signing};
use jose_jwk::{Jwk, JwkSet, Key, Parameters};
use p256::pkcs8::DecodePublicKey;
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::claims::{Appraisal, Claims};
use crate::error::{AttestError, Result};
use crate::release::{KemJwk, KemPublicKey};

mod verifier;
mod workload;
pub use verifier::{TokenVerifier, verify};
pub use workload::{WorkloadClaims, claims_digest};

/// Allowed clock skew, in seconds, on `nbf` and `exp` (LESSONS: tokens allow tens of seconds).
pub const CLOCK_SKEW_SECONDS: u64 = 30;

/// Token signature algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenAlgorithm {
    /// ECDSA P-256 with SHA-256.
    Es256,
    /// ECDSA P-384 with SHA-384.
    Es384,
}

/// Something that signs tokens without handing out its key (an HSM key, in the broker).
pub trait TokenSigner: Send + Sync {
    /// The algorithm.
    fn algorithm(&self) -> TokenAlgorithm;
    /// The key id published in the JWK set and named in each token.
    fn key_id(&self) -> &str;
    /// The public key, SubjectPublicKeyInfo DER.
    fn public_key_der(&self) -> &[u8];
    /// Signs `message` (hashing with SHA-256 for ES256, SHA-384 for ES384) and returns a
    /// DER-encoded ECDSA signature.
    ///
    /// # Errors
    /// Whatever the key's home fails with, as a message.
    fn sign(&self, message: &[u8]) -> std::result::Result<Vec<u8>, String>;
}

/// The confirmation claim: which key the token is bound to (RFC 7800 `cnf`, with the
/// JWK thumbprint member `jkt`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Confirmation {
    /// The RFC 7638 SHA-256 thumbprint of the bound public key, base64url (unpadded).
    pub jkt: String,
}

impl Confirmation {
    /// The confirmation of the EC P-256 or P-384 public key `spki_der`.
    ///
    /// # Errors
    /// [`AttestError::Malformed`]: not a P-256 or P-384 SubjectPublicKeyInfo.
    pub fn for_key(spki_der: &[u8]) -> Result<Confirmation> {
        Ok(Confirmation {
            jkt: jwk_thumbprint(spki_der)?,
        })
    }

    /// Whether `spki_der` is the key the token is bound to. A key that cannot be a bound
    /// key (not P-256 or P-384) does not match.
    pub fn matches_key(&self, spki_der: &[u8]) -> bool {
        jwk_thumbprint(spki_der)
            .is_ok_and(|jkt| crate::binding::constant_time_eq(jkt.as_bytes(), self.jkt.as_bytes()))
    }
}

/// The RFC 7638 thumbprint (SHA-256) of an EC public key. The JWK comes from RustCrypto's
/// `jose-jwk`, the thumbprint from `jsonwebtoken`.
fn jwk_thumbprint(spki_der: &[u8]) -> Result<String> {
    let key = if let Ok(public) = p256::PublicKey::from_public_key_der(spki_der) {
        Key::from(&jose_jwk::crypto::Key::from(public))
    } else if let Ok(public) = p384::PublicKey::from_public_key_der(spki_der) {
        Key::from(&jose_jwk::crypto::Key::from(public))
    } else {
        return Err(AttestError::Malformed(
            "a bound key is an EC P-256 or P-384 SubjectPublicKeyInfo".into(),
        ));
    };
    let jwk: jsonwebtoken::jwk::Jwk = serde_json::to_value(&key)
        .and_then(serde_json::from_value)
        .map_err(|e| AttestError::Malformed(format!("the bound key as a JWK: {e}")))?;
    Ok(jwk.thumbprint(jsonwebtoken::jwk::ThumbprintHash::SHA256))
}

/// The claims an attestation token carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenClaims {
    /// Issuer (the broker).
    pub iss: String,
    /// Subject (the workload's identity).
    pub sub: String,
    /// Issued at.
    pub iat: u64,
    /// Not before (back-dated by the clock skew).
    pub nbf: u64,
    /// Expiry.
    pub exp: u64,
    /// Unique token id.
    pub jti: String,
    /// The key the workload proved it holds inside its TEE.
    pub cnf: Confirmation,
    /// The appraisal's claims.
    pub attestation: serde_json::Value,
    /// The KEM key the evidence also bound, to which secrets are released
    /// (`crate::release`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kem: Option<KemJwk>,
}

fn b64url(bytes: &[u8]) -> String {
    use jose_b64::base64ct::{Base64UrlUnpadded, Encoding};
    Base64UrlUnpadded::encode_string(bytes)
}

fn raw_signature(algorithm: TokenAlgorithm, der: &[u8]) -> Result<Vec<u8>> {
    let bad =
        |e: String| AttestError::Signature(format!("token signer returned a bad signature: {e}"));
    // Low S: an HSM returns either of the two valid encodings, verifiers accept one.
    Ok(match algorithm {
        TokenAlgorithm::Es256 => {
            let sig = p256::ecdsa::Signature::from_der(der).map_err(|e| bad(e.to_string()))?;
            sig.normalize_s().unwrap_or(sig).to_bytes().to_vec()
        }
        TokenAlgorithm::Es384 => {
            let sig = p384::ecdsa::Signature::from_der(der).map_err(|e| bad(e.to_string()))?;
            sig.normalize_s().unwrap_or(sig).to_bytes().to_vec()
        }
    })
}

/// A token whose signing input is ready and whose signature is not: for a signer that
/// must be awaited (the broker's HSM gate), where [`TokenSigner`] cannot be used.
#[derive(Debug)]
pub struct UnsignedToken {
    signing_input: String,
    algorithm: TokenAlgorithm,
}

impl UnsignedToken {
    /// What the key signs (hashing with SHA-256 for ES256, SHA-384 for ES384).
    pub fn signing_input(&self) -> &[u8] {
        self.signing_input.as_bytes()
    }

    /// The compact JWS, given the DER-encoded ECDSA signature over
    /// [`UnsignedToken::signing_input`].
    ///
    /// # Errors
    /// [`AttestError::Signature`] for a signature that is not DER ECDSA of the algorithm.
    pub fn finish(self, der_signature: &[u8]) -> Result<String> {
        let signature = raw_signature(self.algorithm, der_signature)?;
        Ok(format!("{}.{}", self.signing_input, b64url(&signature)))
    }
}

/// The keys the evidence bound, as a token carries them: the signing key's thumbprint in
/// `cnf`, and the KEM key, if any, in `kem`.
#[derive(Debug, Clone)]
pub struct Bound {
    pub cnf: Confirmation,
    pub kem: Option<KemPublicKey>,
}

impl From<Confirmation> for Bound {
    fn from(cnf: Confirmation) -> Bound {
        Bound { cnf, kem: None }
    }
}

/// Signs an appraisal for `subject`, bound to the keys of `bound`, as a compact JWS.
///
/// # Errors
/// The signer failed or returned a malformed signature.
pub fn issue(
    appraisal: &Appraisal,
    issuer: &str,
    subject: &str,
    bound: impl Into<Bound>,
    signer: &dyn TokenSigner,
) -> Result<String> {
    let unsigned = prepare(
        appraisal,
        issuer,
        subject,
        bound.into(),
        signer.algorithm(),
        signer.key_id(),
    )?;
    let der = signer
        .sign(unsigned.signing_input())
        .map_err(AttestError::Signature)?;
    unsigned.finish(&der)
}

/// The header and claims of a token for `subject`, bound to the keys of `bound`, to be
/// signed by the key `key_id` with `algorithm`.
///
/// # Errors
/// The claims cannot be serialised.
pub fn prepare(
    appraisal: &Appraisal,
    issuer: &str,
    subject: &str,
    bound: Bound,
    algorithm: TokenAlgorithm,
    key_id: &str,
) -> Result<UnsignedToken> {
    let mut jti = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut jti);
    let claims = TokenClaims {
        iss: issuer.to_string(),
        sub: subject.to_string(),
        iat: appraisal.issued_at,
        nbf: appraisal.issued_at.saturating_sub(CLOCK_SKEW_SECONDS),
        exp: appraisal.expires_at,
        jti: hex::encode(jti),
        cnf: bound.cnf,
        attestation: serde_json::to_value::<&Claims>(&appraisal.claims)
            .map_err(|e| AttestError::Malformed(format!("claims: {e}")))?,
        kem: bound.kem.map(|k| k.to_jwk()),
    };
    prepare_jwt(&claims, algorithm, key_id)
}

/// The header and these claims, to be signed by the key `key_id` with `algorithm`.
///
/// # Errors
/// The claims cannot be serialised.
pub fn prepare_jwt<C: Serialize>(
    claims: &C,
    algorithm: TokenAlgorithm,
    key_id: &str,
) -> Result<UnsignedToken> {
    let mut header = jsonwebtoken::Header::new(match algorithm {
        TokenAlgorithm::Es256 => jsonwebtoken::Algorithm::ES256,
        TokenAlgorithm::Es384 => jsonwebtoken::Algorithm::ES384,
    });
    header.kid = Some(key_id.to_string());
    let part = |json: serde_json::Result<Vec<u8>>| {
        json.map(|bytes| b64url(&bytes))
            .map_err(|e| AttestError::Malformed(format!("token: {e}")))
    };
    let signing_input = format!(
        "{}.{}",
        part(serde_json::to_vec(&header))?,
        part(serde_json::to_vec(claims))?
    );
    Ok(UnsignedToken {
        signing_input,
        algorithm,
    })
}

/// A token-signing public key, as the JWK set publishes it.
#[derive(Debug, Clone, Copy)]
pub struct PublishedKey<'a> {
    /// The key id tokens name (`kid`).
    pub key_id: &'a str,
    /// The algorithm.
    pub algorithm: TokenAlgorithm,
    /// The public key, SubjectPublicKeyInfo DER.
    pub spki_der: &'a [u8],
}

/// The JWK set that publishes the signers' public keys, as JSON.
///
/// # Errors
/// A signer's key is not a P-256 or P-384 public key matching its algorithm.
pub fn jwks(signers: &[&dyn TokenSigner]) -> Result<String> {
    let keys: Vec<PublishedKey<'_>> = signers
        .iter()
        .map(|s| PublishedKey {
            key_id: s.key_id(),
            algorithm: s.algorithm(),
            spki_der: s.public_key_der(),
        })
        .collect();
    jwks_of(&keys)
}

/// The JWK set of these public keys, as JSON.
///
/// # Errors
/// A key is not a P-256 or P-384 public key matching its algorithm.
pub fn jwks_of(published: &[PublishedKey<'_>]) -> Result<String> {
    let keys = published
        .iter()
        .map(|s| {
            let bad = |e: String| AttestError::Malformed(format!("token key {}: {e}", s.key_id));
            let (key, alg): (Key, Signing) = match s.algorithm {
                TokenAlgorithm::Es256 => {
                    let public = p256::PublicKey::from_public_key_der(s.spki_der)
                        .map_err(|e| bad(e.to_string()))?;
                    (
                        Key::from(&jose_jwk::crypto::Key::from(public)),
                        Signing::Es256,
                    )
                }
                TokenAlgorithm::Es384 => {
                    let public = p384::PublicKey::from_public_key_der(s.spki_der)
                        .map_err(|e| bad(e.to_string()))?;
                    (
                        Key::from(&jose_jwk::crypto::Key::from(public)),
                        Signing::Es384,
                    )
                }
            };
            Ok(Jwk {
                key,
                prm: Parameters {
                    alg: Some(JwaAlgorithm::Signing(alg)),
                    kid: Some(s.key_id.to_string()),
                    ..Parameters::default()
                },
            })
        })
        .collect::<Result<Vec<_>>>()?;
    serde_json::to_string(&JwkSet { keys }).map_err(|e| AttestError::Malformed(e.to_string()))
}

/// The key id (`kid`) a token's header names, unverified: to choose which key to verify
/// it with.
///
/// # Errors
/// [`AttestError::Signature`] when the header does not parse or names no key.
pub fn key_id(token: &str) -> Result<String> {
    let invalid = |why: String| AttestError::Signature(format!("attestation token: {why}"));
    jsonwebtoken::decode_header(token)
        .map_err(|e| invalid(e.to_string()))?
        .kid
        .ok_or_else(|| invalid("no key id".into()))
}
