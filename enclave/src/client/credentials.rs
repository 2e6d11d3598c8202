//! What one run of the flow yields: the ephemeral key, its certificate chain, the trust
//! bundle and the attestation token; and what the client reads from a certificate.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use attest::release::KemKeyPair;
use der::pem::LineEnding;
use secrecy::SecretString;
use tonic::transport::Channel;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

use super::{ClientError, Step};
use crate::key::EphemeralKey;

/// An attested workload identity: a short-lived certificate for a key that exists only in
/// this process, and the attestation token bound to that key. `Debug` shows neither the
/// key nor the token.
#[derive(Debug)]
pub struct Credentials {
    /// The ephemeral key the certificate and the token are bound to.
    pub key: EphemeralKey,
    /// The KEM key the same evidence bound, to which the broker releases secrets
    /// (`attest::release`); the token carries its public half.
    pub kem: KemKeyPair,
    /// The issued certificate first, then the CA certificates up to (not including) the
    /// root; DER.
    pub chain_der: Vec<Vec<u8>>,
    /// The root certificates that verify the chain (the trust bundle at the time of issue).
    pub bundle_der: Vec<Vec<u8>>,
    /// When the issued certificate expires (its `notAfter`).
    pub cert_expires_at: SystemTime,
    /// The attestation token (a JWT), bound to `key`.
    pub token: SecretString,
    /// When the attestation token expires.
    pub token_expires_at: SystemTime,
    /// The SPIFFE ID in the issued certificate's URI SAN.
    pub spiffe_id: String,
    /// The appraised claims the token carries, JSON, as the broker returned them.
    pub claims_json: String,
}

impl Credentials {
    /// A channel to `endpoint` that authenticates with the issued certificate.
    ///
    /// # Errors
    /// As [`super::channel`].
    pub async fn channel(
        &self,
        endpoint: &str,
        server_ca_pem: &[u8],
    ) -> Result<Channel, ClientError> {
        let chain = self
            .chain_pem()
            .map_err(|e| ClientError::input(Step::Connect, "issued certificate", e.to_string()))?;
        super::channel(
            endpoint,
            server_ca_pem,
            chain.as_bytes(),
            &self.key.private_key_pem(),
        )
        .await
    }

    /// The certificate chain, PEM, leaf first.
    ///
    /// # Errors
    /// Only if a certificate is too large to encode.
    pub fn chain_pem(&self) -> Result<String, der::pem::Error> {
        certificates_pem(&self.chain_der)
    }

    /// The trust bundle, PEM.
    ///
    /// # Errors
    /// Only if a certificate is too large to encode.
    pub fn bundle_pem(&self) -> Result<String, der::pem::Error> {
        certificates_pem(&self.bundle_der)
    }
}

/// DER certificates as concatenated PEM `CERTIFICATE` blocks.
fn certificates_pem(certificates: &[Vec<u8>]) -> Result<String, der::pem::Error> {
    certificates
        .iter()
        .map(|der| der::pem::encode_string("CERTIFICATE", LineEnding::LF, der))
        .collect()
}

/// What the client needs from an X.509 certificate.
#[derive(Debug)]
pub(crate) struct CertificateSummary {
    /// The one `spiffe://` URI SAN.
    pub(crate) spiffe_id: String,
    /// `notAfter`.
    pub(crate) not_after: SystemTime,
    /// The SubjectPublicKeyInfo, DER.
    pub(crate) spki_der: Vec<u8>,
}

impl CertificateSummary {
    /// Reads `der`, which must have exactly one URI SAN and it a `spiffe://` URI.
    ///
    /// # Errors
    /// A message saying what is wrong with the certificate.
    pub(crate) fn read(der: &[u8]) -> Result<CertificateSummary, String> {
        let (_, cert) = X509Certificate::from_der(der).map_err(|e| e.to_string())?;
        let sans = cert
            .subject_alternative_name()
            .map_err(|e| format!("subject alternative names: {e}"))?;
        let uris: Vec<&str> = sans
            .iter()
            .flat_map(|san| san.value.general_names.iter())
            .filter_map(|name| match name {
                GeneralName::URI(uri) => Some(*uri),
                _ => None,
            })
            .collect();
        let spiffe_id = match uris.as_slice() {
            [one] if one.starts_with("spiffe://") => (*one).to_string(),
            _ => return Err(format!("expected one spiffe:// URI SAN, found {uris:?}")),
        };
        let not_after = unix_time(cert.validity().not_after.timestamp())
            .ok_or_else(|| "notAfter is before 1970".to_string())?;
        Ok(CertificateSummary {
            spiffe_id,
            not_after,
            spki_der: cert.public_key().raw.to_vec(),
        })
    }
}

/// Unix seconds as a time; `None` before 1970 (or past what `SystemTime` holds).
pub(crate) fn unix_time(seconds: i64) -> Option<SystemTime> {
    let seconds = u64::try_from(seconds).ok()?;
    UNIX_EPOCH.checked_add(Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certificate(sans: &[&str]) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.subject_alt_names = sans
            .iter()
            .map(|s| rcgen::SanType::URI((*s).try_into().unwrap()))
            .collect();
        params.not_after = rcgen::date_time_ymd(2040, 1, 1);
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn a_certificate_names_exactly_one_spiffe_id() {
        let summary = CertificateSummary::read(&certificate(&["spiffe://td/w"])).unwrap();
        assert_eq!(summary.spiffe_id, "spiffe://td/w");
        let year_2040 = unix_time(2_208_988_800).unwrap();
        assert_eq!(summary.not_after, year_2040);
        for sans in [
            &[][..],
            &["https://td/w"],
            &["spiffe://td/a", "spiffe://td/b"],
        ] {
            assert!(
                CertificateSummary::read(&certificate(sans)).is_err(),
                "{sans:?}"
            );
        }
        assert!(CertificateSummary::read(b"junk").is_err());
    }

    #[test]
    fn unix_times_before_1970_are_refused() {
        assert_eq!(unix_time(0), Some(UNIX_EPOCH));
        assert_eq!(unix_time(-1), None);
    }
}
