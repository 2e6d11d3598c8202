//! Attestation keys and quotes.
//!
//! The AK is a restricted ECDSA P-256 key under the SRK: it signs only structures the TPM
//! made itself, so a quote cannot be forged by asking it to sign a chosen digest. A quote
//! returns the marshalled `TPMS_ATTEST`, the marshalled `TPMT_SIGNATURE` and the PCR
//! values whose digest the quote carries.

use sha2::{Digest as _, Sha256};
use tss_esapi::structures::{AttestInfo, Data, SignatureScheme};
use tss_esapi::traits::Marshall;

use crate::blob::TpmBlob;
use crate::error::{TpmError, TssResultExt};
use crate::pcr::{self, PcrSelection, PcrValue};
use crate::policy::pcr_values_digest;
use crate::templates;
use crate::worker::{Pending, Retry, TpmBackend};

/// Longest qualifying data (nonce) a quote takes.
pub const MAX_NONCE_LEN: usize = 64;

/// A quote over PCRs, with the values it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quote {
    /// Marshalled `TPMS_ATTEST` (what the AK signed, hashed with SHA-256).
    pub attest: Vec<u8>,
    /// Marshalled `TPMT_SIGNATURE` (ECDSA-SHA256).
    pub signature: Vec<u8>,
    /// The quoted PCRs.
    pub pcrs: PcrSelection,
    /// Their values, in selection order; their digest is the quote's `pcrDigest`.
    pub pcr_values: Vec<PcrValue>,
}

impl TpmBlob {
    /// The object's TPM name: `nameAlg ‖ SHA-256(TPMT_PUBLIC)`.
    pub fn name(&self) -> Vec<u8> {
        let mut name = vec![0x00, 0x0B];
        name.extend_from_slice(&Sha256::digest(&self.public));
        name
    }
}

/// How many times a quote is retaken when PCRs change between the quote and the read.
const QUOTE_ATTEMPTS: usize = 3;

impl TpmBackend {
    /// Creates an attestation key under the SRK.
    pub fn create_attestation_key(&self) -> Pending<TpmBlob> {
        self.submit(Retry::Safe, |c| {
            let srk = c.srk;
            c.make_room(1);
            let created = c
                .ctx
                .create(srk, templates::attestation_key()?, None, None, None, None)
                .during("create the attestation key")?;
            TpmBlob::from_parts(&created.out_public, &created.out_private)
        })
    }

    /// Quotes PCRs with an attestation key over a caller's nonce (1 to 64 bytes).
    pub fn quote(&self, ak: &TpmBlob, nonce: &[u8], pcrs: &PcrSelection) -> Pending<Quote> {
        let (ak, nonce, pcrs) = (ak.clone(), nonce.to_vec(), pcrs.clone());
        self.submit(Retry::Safe, move |c| {
            if nonce.is_empty() || nonce.len() > MAX_NONCE_LEN {
                return Err(TpmError::InvalidInput(format!(
                    "a quote nonce has 1 to {MAX_NONCE_LEN} bytes, not {}",
                    nonce.len()
                )));
            }
            let ak_public = ak.public()?;
            if !(ak_public.object_attributes().restricted()
                && ak_public.object_attributes().sign_encrypt())
            {
                return Err(TpmError::InvalidInput("not an attestation key".into()));
            }
            let handle = c.key(&ak)?;
            for _ in 0..QUOTE_ATTEMPTS {
                let qualifying = Data::try_from(nonce.clone()).during("quote")?;
                let (attest, signature) = c
                    .ctx
                    .quote(handle, qualifying, SignatureScheme::Null, pcrs.tss()?)
                    .during("quote")?;
                let values = pcr::read(&mut c.ctx, &pcrs)?;
                let quoted = match attest.attested() {
                    AttestInfo::Quote { info } => info.pcr_digest().value().to_vec(),
                    _ => Vec::new(),
                };
                if quoted == pcr_values_digest(&values) {
                    return Ok(Quote {
                        attest: attest.marshall().during("marshal the quote")?,
                        signature: signature.marshall().during("marshal the signature")?,
                        pcrs: pcrs.clone(),
                        pcr_values: values,
                    });
                }
            }
            Err(TpmError::Tpm {
                operation: "quote",
                detail: format!("the PCRs kept changing during {QUOTE_ATTEMPTS} attempts"),
            })
        })
    }
}
