//! The key that signs attestation tokens: an EC P-256 key generated inside an HSM token,
//! sensitive and non-extractable like every other key, made at the first start.
//!
//! It is not a managed key: no `KeyService` call can name it, so no policy mistake can let
//! a workload sign arbitrary digests with it and forge tokens. Its label does not start
//! with the managed prefix (`kb:`), so reconciliation leaves it alone.

use std::sync::Arc;

use attest::token::{TokenAlgorithm, TokenSigner};
use hsm_backend::{
    Digest, EcCurve, HashAlgorithm, HsmBackend, HsmError, KeyAlgorithm, KeyId, KeyLabel, KeySpec,
    KeyUsage, SignatureAlgorithm,
};
use sha2::Digest as _;

use crate::backends::HsmKeys;
use crate::error::{BrokerError, Result};

/// CKA_ID of the token-signing key, version 1. Managed keys have random 16-byte ids.
const KEY_ID: &[u8] = b"kbsys:attestation-token:1";
/// CKA_LABEL of the token-signing key.
const KEY_LABEL: &str = "kbsys:attestation-token:v1";

/// Signs attestation tokens with the HSM-held key.
#[derive(Debug)]
pub struct HsmTokenSigner {
    hsm: Arc<HsmKeys>,
    id: KeyId,
    kid: String,
    spki: Vec<u8>,
}

impl HsmTokenSigner {
    /// Finds the token-signing key in `hsm`, generating it on first use (blocking).
    ///
    /// # Errors
    /// The token refuses.
    pub fn open(hsm: Arc<HsmKeys>) -> Result<HsmTokenSigner> {
        use crate::backends::KeyBackend;
        let id = KeyId::new(KEY_ID).map_err(internal)?;
        let spki = ensure_key(hsm.without_gate(), &id)?;
        // The key id names the public key, so a new key gets a new id.
        let kid = format!(
            "kb-{}",
            hex::encode(sha2::Sha256::digest(&spki).get(..12).unwrap_or_default())
        );
        tracing::info!(backend = %hsm.describe(), %kid, "attestation token key ready");
        Ok(HsmTokenSigner { hsm, id, kid, spki })
    }
}

fn internal(e: HsmError) -> BrokerError {
    BrokerError::Internal(format!("attestation token key: {e}"))
}

fn ensure_key(hsm: &HsmBackend, id: &KeyId) -> Result<Vec<u8>> {
    match hsm.describe_key(id) {
        Ok(info) => {
            if info.spec.algorithm() != KeyAlgorithm::Ec(EcCurve::P256)
                || info.spec.usage() != KeyUsage::SignVerify
            {
                return Err(BrokerError::FailedPrecondition(format!(
                    "the token holds an object with the attestation key's id that is not an \
                     EC P-256 signing key ({})",
                    info.spec.algorithm()
                )));
            }
        }
        Err(HsmError::KeyNotFound(_)) => {
            let label = KeyLabel::new(KEY_LABEL).map_err(internal)?;
            let spec = KeySpec::new(KeyAlgorithm::Ec(EcCurve::P256), KeyUsage::SignVerify)
                .map_err(internal)?;
            hsm.generate_key(id, &label, spec).map_err(internal)?;
        }
        Err(e) => return Err(internal(e)),
    }
    Ok(hsm.public_key(id).map_err(internal)?.as_der().to_vec())
}

impl TokenSigner for HsmTokenSigner {
    fn algorithm(&self) -> TokenAlgorithm {
        TokenAlgorithm::Es256
    }

    fn key_id(&self) -> &str {
        &self.kid
    }

    fn public_key_der(&self) -> &[u8] {
        &self.spki
    }

    fn sign(&self, message: &[u8]) -> std::result::Result<Vec<u8>, String> {
        self.hsm
            .without_gate()
            .sign(
                &self.id,
                SignatureAlgorithm::EcdsaP256Sha256,
                &Digest::of(HashAlgorithm::Sha256, message),
            )
            .map_err(|e| e.to_string())
    }
}
