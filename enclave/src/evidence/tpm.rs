//! TPM 2.0 quotes with an attestation key (AK) kept as a blob on disk.
//!
//! The AK is a restricted ECDSA P-256 key made inside the TPM ([`create_attestation_key`]);
//! the operator enrols its SPKI in the broker's appraisal policy. A quote carries
//! `extraData = SHA-256(nonce ‖ ephemeral SPKI)` ([`attest::binding::tpm_extra_data`]) and
//! the SHA-256 PCR values it covers.

use std::io::Write as _;
use std::path::Path;

use attest::binding::tpm_extra_data;
use attest::challenge::Nonce;
use keybroker_api::v1::TpmEvidence;
use keybroker_api::v1::attest_request::Evidence;
use tpm_backend::{PcrSelection, Tcti, TpmBackend, TpmBlob, TpmConfig, TpmError};

use super::{EvidenceError, EvidenceSource};

const KIND: &str = "tpm";

/// Quotes PCRs of the SHA-256 bank with an enrolled attestation key.
#[derive(Debug)]
pub struct TpmQuote {
    backend: TpmBackend,
    ak: TpmBlob,
    ak_spki_der: Vec<u8>,
    pcrs: PcrSelection,
}

impl TpmQuote {
    /// Connects to the TPM at `tcti` (for example `device:/dev/tpmrm0` or
    /// `swtpm:host=127.0.0.1,port=2321`) and takes one quote with the AK stored at
    /// `ak_blob`, so a wrong AK shows now and not at the first attestation; quotes will
    /// cover the SHA-256 PCRs `pcrs`.
    ///
    /// # Errors
    /// [`EvidenceError::Config`] for an unreadable or malformed AK file, a PCR selection
    /// that is empty or names an index over 23, a TCTI string that is not accepted, or a
    /// blob that is not an AK of this TPM; [`EvidenceError::Device`] if the TPM cannot be
    /// reached or fails.
    pub fn open(tcti: &str, ak_blob: &Path, pcrs: &[u8]) -> Result<Self, EvidenceError> {
        let bytes = std::fs::read(ak_blob).map_err(|e| ak_file_error(ak_blob, e))?;
        let ak = TpmBlob::from_bytes(&bytes).map_err(|e| ak_file_error(ak_blob, e))?;
        let ak_spki_der = ak.public_key_der().map_err(|e| ak_file_error(ak_blob, e))?;
        let pcrs = PcrSelection::sha256(pcrs)
            .map_err(|e| EvidenceError::Config(format!("TPM PCRs {pcrs:?}: {e}")))?;
        let backend = connect(tcti)?;
        // The quote checks what loading alone does not: that the key is a restricted
        // signing key. Its nonce binds no challenge, so the quote is useless to anyone.
        backend
            .quote(&ak, &[0; 32], &pcrs)
            .wait()
            .map_err(|e| match e {
                TpmError::InvalidBlob(_) | TpmError::InvalidInput(_) => ak_file_error(
                    ak_blob,
                    format!("{e} (is it an attestation key made by this TPM?)"),
                ),
                e => device(e),
            })?;
        Ok(Self {
            backend,
            ak,
            ak_spki_der,
            pcrs,
        })
    }

    /// The AK's public key, SPKI DER: what the appraisal policy must enrol.
    pub fn ak_spki_der(&self) -> &[u8] {
        &self.ak_spki_der
    }

    /// The PCRs each quote covers, ascending.
    pub fn pcr_indices(&self) -> &[u8] {
        self.pcrs.indices()
    }
}

impl EvidenceSource for TpmQuote {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn collect(&self, nonce: &Nonce, ephemeral_spki_der: &[u8]) -> Result<Evidence, EvidenceError> {
        let extra_data = tpm_extra_data(nonce, ephemeral_spki_der);
        let quote = self
            .backend
            .quote(&self.ak, &extra_data, &self.pcrs)
            .wait()
            .map_err(device)?;
        Ok(Evidence::Tpm(TpmEvidence {
            pcr_indices: quote.pcrs.indices().iter().map(|i| u32::from(*i)).collect(),
            pcr_values: quote.pcr_values.iter().map(|v| v.to_vec()).collect(),
            attest: quote.attest,
            signature: quote.signature,
            ak_spki_der: self.ak_spki_der.clone(),
        }))
    }
}

/// Creates an attestation key in the TPM at `tcti`, writes its blob to `out` (a new
/// file, mode 0600), and returns its public key as SPKI DER, for the operator to enrol in
/// the broker's appraisal policy (`[[tpm.attestation_keys]]`).
///
/// The blob's private part is wrapped by the TPM and useless elsewhere; the mode keeps
/// other local users from quoting with it. On a TPM without a resource manager (swtpm,
/// `/dev/tpm0`) run it while nothing else uses the TPM: a new connection there flushes
/// what other connections loaded.
///
/// # Errors
/// [`EvidenceError::Config`] if `out` exists or cannot be created, or for a TCTI string
/// that is not accepted; [`EvidenceError::Device`] if the TPM fails. Nothing is left at
/// `out` on failure.
pub fn create_attestation_key(tcti: &str, out: &Path) -> Result<Vec<u8>, EvidenceError> {
    let tcti = parse_tcti(tcti)?;
    let mut file = create_private_file(out)?;
    let made = make_and_store(tcti, &mut file).map_err(|e| match e {
        Stored::Tpm(e) => device(e),
        Stored::File(e) => ak_file_error(out, e),
    });
    if made.is_err() {
        // This call created the file, so removing it loses nothing of anyone else's.
        let _ = std::fs::remove_file(out);
    }
    made
}

/// Why [`make_and_store`] failed.
enum Stored {
    Tpm(TpmError),
    File(std::io::Error),
}

fn make_and_store(tcti: Tcti, file: &mut std::fs::File) -> Result<Vec<u8>, Stored> {
    let backend = TpmBackend::connect(TpmConfig::new(tcti)).map_err(Stored::Tpm)?;
    let ak = backend
        .create_attestation_key()
        .wait()
        .map_err(Stored::Tpm)?;
    let spki = ak.public_key_der().map_err(Stored::Tpm)?;
    file.write_all(&ak.to_bytes())
        .and_then(|()| file.sync_all())
        .map_err(Stored::File)?;
    Ok(spki)
}

/// Creates `path`, refusing to replace an existing file, readable by its owner only.
fn create_private_file(path: &Path) -> Result<std::fs::File, EvidenceError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path).map_err(|e| {
        let why = if e.kind() == std::io::ErrorKind::AlreadyExists {
            "already exists; refusing to replace an attestation key".to_string()
        } else {
            e.to_string()
        };
        ak_file_error(path, why)
    })
}

fn parse_tcti(tcti: &str) -> Result<Tcti, EvidenceError> {
    Tcti::new(tcti).map_err(|e| EvidenceError::Config(format!("TPM TCTI: {e}")))
}

fn connect(tcti: &str) -> Result<TpmBackend, EvidenceError> {
    TpmBackend::connect(TpmConfig::new(parse_tcti(tcti)?)).map_err(device)
}

fn ak_file_error(path: &Path, e: impl std::fmt::Display) -> EvidenceError {
    EvidenceError::Config(format!("TPM AK file {}: {e}", path.display()))
}

/// The one mapping of TPM backend failures onto evidence errors.
fn device(e: TpmError) -> EvidenceError {
    EvidenceError::Device {
        source_kind: KIND,
        reason: e.to_string(),
    }
}
