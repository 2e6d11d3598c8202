//! The broker as an intermediate CA (`ca.mode = "intermediate"`), as Vault PKI does it:
//! `keybroker ca csr` makes the next CA key in the HSM and a CSR signed there; an external
//! root signs it; `keybroker ca install` checks the chain and stores it. A running broker
//! picks the new version up within 10 s (`authority.rs`).
//!
//! Both run beside a running broker (SQLite and the HSM take several processes). Both are
//! blocking.

use std::time::{Duration, SystemTime};

use hsm_backend::{HsmBackend, KeyId};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyUsagePurpose,
};
use rustls_pki_types::{CertificateDer, UnixTime};

use super::authority::{generate_key, pem_chain, unix_now};
use super::certificate::{HsmSigner, VerifiedCsr, WorkloadProfile, issue};
use crate::config::CaConfig;
use crate::error::{BrokerError, Result};
use crate::identity::SpiffeId;
use crate::store::{CaRecord, KeyStore};

/// The name of the certificate `install` issues, and verifies, to test a chain.
const PROBE: &str = "spiffe://keybroker.invalid/chain-probe";

fn bad(why: impl Into<String>) -> BrokerError {
    BrokerError::InvalidArgument(why.into())
}

/// Makes the next CA version's key in `token` and returns a CSR for it, PEM, signed in
/// the HSM. The store records the version as waiting for its certificate.
///
/// # Errors
/// The HSM or the store fails.
pub fn csr(
    token: &HsmBackend,
    store: &dyn KeyStore,
    backend: &str,
    config: &CaConfig,
) -> Result<String> {
    let records = store.ca_versions().wait()?;
    let version = records.iter().map(|r| r.version).max().unwrap_or(0) + 1;
    let now = unix_now();
    let id = generate_key(token, version, now)?;
    let signer =
        HsmSigner::new(token, id.clone()).map_err(|e| BrokerError::Unavailable(e.to_string()))?;
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(
        DnType::CommonName,
        format!("{} {version}", config.common_name),
    );
    params.distinguished_name = name;
    // What the root should grant: a CA that issues end-entity certificates only.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let request = params
        .serialize_request(&signer)
        .map_err(|e| BrokerError::Unavailable(format!("signing the CSR in the HSM: {e}")))?;
    let pem = request
        .pem()
        .map_err(|e| BrokerError::Internal(format!("CSR PEM: {e}")))?;
    store
        .put_ca_version(&CaRecord {
            version,
            backend: backend.to_string(),
            key_id: id.as_bytes().to_vec(),
            certificate: Vec::new(),
            chain_pem: String::new(),
            created_at: i64::try_from(now).unwrap_or(i64::MAX),
            activates_at: 0,
        })
        .wait()?;
    Ok(pem)
}

/// Installs `chain_pem` (the CA certificate first, then each certificate above it, the
/// root last) for the version whose key it certifies. Returns that version.
///
/// The chain is checked by use: the new CA key signs a one-minute certificate in the HSM,
/// and rustls' WebPKI verifies it through the chain to the root, as relying parties will.
///
/// # Errors
/// `INVALID_ARGUMENT`: the chain does not parse, certifies no key waiting for its
/// certificate, is not a CA allowed to sign certificates, or does not verify to its root.
pub fn install(
    token: &HsmBackend,
    store: &dyn KeyStore,
    backend: &str,
    chain_pem: &str,
) -> Result<u32> {
    let chain = pem_chain(chain_pem).map_err(|e| bad(e.to_string()))?;
    let [ca, above @ ..] = chain.as_slice() else {
        return Err(bad("the chain holds no certificate"));
    };
    if above.is_empty() {
        return Err(bad(
            "the chain holds only the CA certificate: add the certificates above it, up to \
             the root",
        ));
    }
    let (_, parsed) = x509_parser::parse_x509_certificate(ca)
        .map_err(|e| bad(format!("the CA certificate: {e}")))?;
    if !parsed.is_ca() {
        return Err(bad(
            "the certificate is not a CA certificate (basicConstraints)",
        ));
    }
    if parsed
        .key_usage()
        .ok()
        .flatten()
        .is_some_and(|usage| !usage.value.key_cert_sign())
    {
        return Err(bad("the certificate may not sign certificates (keyUsage)"));
    }
    let point = parsed.public_key().subject_public_key.data.to_vec();
    let mut record = store
        .ca_versions()
        .wait()?
        .into_iter()
        .filter(|r| r.backend == backend && r.certificate.is_empty())
        .find(|r| {
            KeyId::new(r.key_id.clone())
                .ok()
                .and_then(|id| HsmSigner::new(token, id).ok())
                .is_some_and(|signer| signer.point() == point)
        })
        .ok_or_else(|| {
            bad(
                "the certificate is for no CA key waiting for one: run `keybroker ca csr` first, \
                 and install the certificate the root made from that CSR",
            )
        })?;
    let id = KeyId::new(record.key_id.clone()).map_err(|e| bad(e.to_string()))?;
    probe(token, id, ca, &chain)?;
    record.certificate = ca.clone();
    record.chain_pem = above
        .iter()
        .map(|cert| der::pem::encode_string("CERTIFICATE", der::pem::LineEnding::LF, cert))
        .collect::<std::result::Result<String, _>>()
        .map_err(|e| BrokerError::Internal(format!("chain PEM: {e}")))?;
    record.activates_at = i64::try_from(unix_now()).unwrap_or(i64::MAX);
    store.put_ca_version(&record).wait()?;
    Ok(record.version)
}

/// Issues a one-minute certificate with the new CA key and verifies it through `chain` to
/// its last certificate, with WebPKI.
fn probe(token: &HsmBackend, id: KeyId, ca: &[u8], chain: &[Vec<u8>]) -> Result<()> {
    let leaf_key = rcgen::KeyPair::generate().map_err(|e| BrokerError::Internal(e.to_string()))?;
    let mut request = CertificateParams::new(Vec::<String>::new())
        .map_err(|e| BrokerError::Internal(e.to_string()))?;
    request.subject_alt_names = vec![rcgen::SanType::URI(
        PROBE
            .try_into()
            .map_err(|_| BrokerError::Internal("probe name".into()))?,
    )];
    let csr_der = request
        .serialize_request(&leaf_key)
        .map_err(|e| BrokerError::Internal(e.to_string()))?
        .der()
        .to_vec();
    let spiffe_id = SpiffeId::parse(PROBE).map_err(|e| BrokerError::Internal(e.to_string()))?;
    let csr = VerifiedCsr::parse(&csr_der, &spiffe_id)
        .map_err(|e| BrokerError::Internal(e.to_string()))?;
    let signer = HsmSigner::new(token, id).map_err(|e| BrokerError::Unavailable(e.to_string()))?;
    let profile = WorkloadProfile {
        spiffe_id: &spiffe_id,
        ttl: Duration::from_secs(60),
        now: SystemTime::now(),
        claims: None,
    };
    let leaf =
        issue(&signer, ca, &csr, &profile).map_err(|e| BrokerError::Unavailable(e.to_string()))?;
    let leaf = CertificateDer::from(leaf);
    let end_entity = webpki::EndEntityCert::try_from(&leaf)
        .map_err(|e| BrokerError::Internal(format!("the probe certificate: {e}")))?;
    let root = chain
        .last()
        .map(|r| CertificateDer::from(r.clone()))
        .ok_or_else(|| bad("no root"))?;
    let anchor = webpki::anchor_from_trusted_cert(&root)
        .map_err(|e| bad(format!("the root certificate: {e}")))?
        .to_owned();
    let intermediates: Vec<CertificateDer<'_>> = chain
        .iter()
        .take(chain.len().saturating_sub(1))
        .map(|c| CertificateDer::from(c.as_slice()))
        .collect();
    end_entity
        .verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &[anchor],
            &intermediates,
            UnixTime::now(),
            webpki::KeyUsage::client_auth(),
            None,
            None,
        )
        .map(drop)
        .map_err(|e| {
            bad(format!(
                "a certificate from this CA does not verify through the chain to its root: {e}"
            ))
        })
}
