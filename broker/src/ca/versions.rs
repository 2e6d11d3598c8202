//! One CA version as the token and the store hold it: its key (generated here), its
//! certificate, and the check that the two belong together.

use hsm_backend::{EcCurve, HsmBackend, KeyAlgorithm, KeyId, KeyLabel, KeySpec, KeyUsage};

use super::certificate::HsmSigner;
use crate::error::{BrokerError, Result};
use crate::store::CaRecord;

/// CKA_ID prefix of the CA keys (`…<version>`).
const ID_PREFIX: &str = "kbsys:ca:";

/// One CA version, loaded: its key is in the HSM and matches its certificate.
#[derive(Debug, Clone)]
pub(crate) struct CaVersion {
    pub(crate) version: u32,
    pub(crate) key_id: KeyId,
    /// The key's uncompressed P-256 point.
    pub(crate) point: Vec<u8>,
    /// The CA certificate, DER.
    pub(crate) certificate: Vec<u8>,
    /// The certificates above it, DER, root last; empty when self-signed.
    pub(crate) chain: Vec<Vec<u8>>,
    pub(crate) not_after: u64,
    pub(crate) activates_at: u64,
}

fn key_id(version: u32) -> Result<KeyId> {
    KeyId::new(format!("{ID_PREFIX}{version}").into_bytes())
        .map_err(|e| BrokerError::Internal(format!("CA key id: {e}")))
}

fn hsm_error(e: impl std::fmt::Display) -> BrokerError {
    BrokerError::Unavailable(format!("the CA key: {e}"))
}

/// Generates the key of `version`, after destroying any object a crash left under its id.
pub(crate) fn generate_key(token: &HsmBackend, version: u32, created: u64) -> Result<KeyId> {
    let id = key_id(version)?;
    if token.describe_key(&id).is_ok() {
        tracing::warn!(
            version,
            "a CA key with no store row (left by a crash) is destroyed"
        );
        token.destroy_key(&id).map_err(hsm_error)?;
    }
    let label = KeyLabel::new(format!("{ID_PREFIX}v{version}:{created}"))
        .map_err(|e| BrokerError::Internal(format!("CA key label: {e}")))?;
    let spec = KeySpec::new(KeyAlgorithm::Ec(EcCurve::P256), KeyUsage::SignVerify)
        .map_err(|e| BrokerError::Internal(e.to_string()))?;
    token.generate_key(&id, &label, spec).map_err(hsm_error)?;
    Ok(id)
}

/// `(not_before, not_after)` of a DER certificate, Unix seconds, and its public key bytes.
pub(crate) fn certificate_facts(der: &[u8]) -> Result<(u64, Vec<u8>)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| BrokerError::FailedPrecondition(format!("a stored CA certificate: {e}")))?;
    let not_after = u64::try_from(cert.validity().not_after.timestamp()).unwrap_or(0);
    Ok((
        not_after,
        cert.public_key().subject_public_key.data.to_vec(),
    ))
}

/// The DER certificates of a PEM chain.
pub(crate) fn pem_chain(pem: &str) -> Result<Vec<Vec<u8>>> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject as _;
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .map(|c| c.map(|c| c.to_vec()))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| BrokerError::FailedPrecondition(format!("a CA chain: {e}")))
}

/// Checks each stored version against its key in the token (blocking): the key must be
/// there, and be the one its certificate names. Versions of another backend, and
/// versions still waiting for their certificate, are skipped.
pub(crate) fn load_versions(
    token: &HsmBackend,
    backend: &str,
    records: Vec<CaRecord>,
) -> Result<Vec<CaVersion>> {
    let mut versions = Vec::new();
    for record in records {
        if record.backend != backend || record.certificate.is_empty() {
            continue;
        }
        let id = KeyId::new(record.key_id.clone()).map_err(hsm_error)?;
        let signer = HsmSigner::new(token, id.clone()).map_err(|e| {
            BrokerError::FailedPrecondition(format!(
                "CA version {}: its key is not usable on the token: {e}",
                record.version
            ))
        })?;
        let (not_after, public_key) = certificate_facts(&record.certificate)?;
        if public_key != signer.point() {
            return Err(BrokerError::FailedPrecondition(format!(
                "CA version {}: the certificate in the store is not for the key on the token",
                record.version
            )));
        }
        versions.push(CaVersion {
            version: record.version,
            point: signer.point().to_vec(),
            key_id: id,
            certificate: record.certificate,
            chain: pem_chain(&record.chain_pem)?,
            not_after,
            activates_at: u64::try_from(record.activates_at).unwrap_or(0),
        });
    }
    Ok(versions)
}
