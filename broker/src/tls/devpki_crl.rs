//! Certificate revocation lists from the development CA, so that revocation can be tried
//! and tested end to end (`[server] client_crls`, reloaded on SIGHUP) without another tool.

use std::time::SystemTime;

use rcgen::{
    CertificateRevocationListParams, Issuer, KeyIdMethod, RevocationReason, RevokedCertParams,
    SerialNumber,
};

use super::{BACKDATE, DevPki, parse_pem_cert};
use crate::tls::TlsError;

impl DevPki {
    /// A CRL (PEM) signed by this CA that revokes the certificates in `revoked_cert_pems`
    /// (each issued by this CA), numbered `crl_number`, valid from five minutes ago until
    /// `next_update`. An empty list makes a CRL that revokes nothing.
    ///
    /// # Errors
    /// [`TlsError::DevPki`] when a certificate does not parse or `next_update` is not in the
    /// future; [`TlsError::Generate`] if signing fails.
    pub fn revocation_list(
        &self,
        revoked_cert_pems: &[&str],
        crl_number: u64,
        next_update: SystemTime,
    ) -> Result<String, TlsError> {
        let now = SystemTime::now();
        if next_update <= now {
            return Err(TlsError::DevPki("next_update must be in the future".into()));
        }
        let this_update = now.checked_sub(BACKDATE).unwrap_or(now);
        let revoked_certs = revoked_cert_pems
            .iter()
            .map(|pem| {
                Ok(RevokedCertParams {
                    serial_number: serial_of(pem)?,
                    revocation_time: now.into(),
                    reason_code: Some(RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
            })
            .collect::<Result<Vec<_>, TlsError>>()?;
        let params = CertificateRevocationListParams {
            this_update: this_update.into(),
            next_update: next_update.into(),
            crl_number: SerialNumber::from(crl_number),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let issuer = Issuer::from_params(&self.ca_params, &*self.ca_key);
        Ok(params.signed_by(&issuer)?.pem()?)
    }
}

fn serial_of(pem: &str) -> Result<SerialNumber, TlsError> {
    let der = parse_pem_cert(pem, "certificate to revoke")?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| TlsError::DevPki(format!("certificate to revoke: {e}")))?;
    Ok(SerialNumber::from_slice(cert.tbs_certificate.raw_serial()))
}
