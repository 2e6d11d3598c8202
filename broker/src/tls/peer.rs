//! What a request handler learns about the caller: computed once per connection, right
//! after the handshake, and handed to tonic as the connection's `ConnectInfo` (tonic copies it
//! into every request's extensions, where [`peer`] finds it).
//!
//! The identity rule lives here, [`certificate_identity`]: a client certificate carries
//! exactly one URI SAN and it is a SPIFFE ID. The handshake refuses any other certificate
//! (`super::verifier`), so an established connection always has an identity.

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use rustls::ServerConnection;
use sha2::Digest as _;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

use super::ConnectionActivity;
use crate::identity::SpiffeId;

/// The caller of a request, as established by the TLS handshake.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PeerInfo {
    /// The TCP peer address.
    pub remote_addr: Option<SocketAddr>,
    /// The SPIFFE ID in the client certificate (see [`certificate_identity`]); `None` only
    /// when no certificate was verified (a `PeerInfo` built outside `TlsIncoming`).
    pub identity: Option<SpiffeId>,
    /// The negotiated key exchange group, e.g. `"X25519MLKEM768"`.
    pub kx_group: Option<String>,
    /// The client certificate's notBefore, in seconds since the Unix epoch.
    pub not_before: Option<i64>,
    /// The client certificate's notAfter, in seconds since the Unix epoch.
    pub not_after: Option<i64>,
    /// SHA-256 of the client certificate's DER: what an attestation token's
    /// `cnf.x5t#S256` names (RFC 8705).
    pub certificate_sha256: Option<[u8; 32]>,
    /// The client certificate's SubjectPublicKeyInfo, DER: the key the connection proved
    /// it holds, which attestation evidence must bind.
    pub public_key_der: Option<Vec<u8>>,
    /// Whether the connection has calls open, for its idle timeout.
    pub activity: ConnectionActivity,
}

/// Why a connection's client certificate no longer (or not yet) vouches for its calls.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertificateValidityError {
    /// The connection has no verified client certificate.
    #[error("the connection has no verified client certificate")]
    NoCertificate,
    /// notBefore is in the future.
    #[error("the client certificate is not valid yet")]
    NotYetValid,
    /// notAfter has passed while the connection was open.
    #[error("the client certificate has expired")]
    Expired,
}

impl PeerInfo {
    /// Describes a connection whose handshake has completed.
    pub(crate) fn from_connection(
        remote_addr: Option<SocketAddr>,
        conn: &ServerConnection,
    ) -> PeerInfo {
        let kx_group = conn
            .negotiated_key_exchange_group()
            .map(|group| format!("{:?}", group.name()));
        let facts = conn
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|leaf| leaf_facts(leaf))
            .unwrap_or_default();
        PeerInfo {
            remote_addr,
            identity: facts.identity,
            kx_group,
            not_before: facts.not_before,
            not_after: facts.not_after,
            certificate_sha256: facts.certificate_sha256,
            public_key_der: facts.public_key_der,
            activity: ConnectionActivity::new(),
        }
    }

    /// Whether the client certificate is valid at `now`. The handshake checked it once;
    /// connections outlive certificates, so the request stack calls this on every call.
    ///
    /// # Errors
    /// [`CertificateValidityError`] saying which bound `now` is outside of.
    pub fn check_validity(&self, now: SystemTime) -> Result<(), CertificateValidityError> {
        let (Some(not_before), Some(not_after)) = (self.not_before, self.not_after) else {
            return Err(CertificateValidityError::NoCertificate);
        };
        let now = unix_seconds(now);
        if now < not_before {
            return Err(CertificateValidityError::NotYetValid);
        }
        // X.509 validity is inclusive of notAfter, to the second.
        if now > not_after {
            return Err(CertificateValidityError::Expired);
        }
        Ok(())
    }
}

fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_secs()).map_or(i64::MIN, |s| -s),
    }
}

/// The [`PeerInfo`] of the connection a request arrived on; `None` when the server was not
/// started over [`super::TlsIncoming`] (or in unit tests that build bare requests).
pub fn peer<T>(request: &tonic::Request<T>) -> Option<&PeerInfo> {
    request.extensions().get::<PeerInfo>()
}

/// What a verified leaf certificate says about the caller.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct LeafFacts {
    pub(crate) identity: Option<SpiffeId>,
    pub(crate) not_before: Option<i64>,
    pub(crate) not_after: Option<i64>,
    pub(crate) certificate_sha256: Option<[u8; 32]>,
    pub(crate) public_key_der: Option<Vec<u8>>,
}

/// The identity and validity of a DER leaf certificate.
pub(crate) fn leaf_facts(der: &[u8]) -> LeafFacts {
    match x509_parser::parse_x509_certificate(der) {
        Ok((_, cert)) => LeafFacts {
            identity: certificate_identity(&cert)
                .map_err(
                    |e| tracing::debug!(error = %e, "verified client certificate has no identity"),
                )
                .ok(),
            not_before: Some(cert.validity().not_before.timestamp()),
            not_after: Some(cert.validity().not_after.timestamp()),
            certificate_sha256: Some(sha2::Sha256::digest(der).into()),
            public_key_der: Some(cert.public_key().raw.to_vec()),
        },
        Err(e) => {
            tracing::debug!(error = %e, "verified client certificate does not parse");
            LeafFacts::default()
        }
    }
}

/// Why a client certificate names no identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The certificate does not parse, or its SAN extension does not.
    #[error("the client certificate or its subjectAltName does not parse: {0}")]
    Malformed(String),
    /// No URI SAN at all.
    #[error("the client certificate has no URI SAN; it must carry exactly one SPIFFE ID")]
    NoUri,
    /// More than one URI SAN: which would be the caller?
    #[error("the client certificate has {0} URI SANs; it must carry exactly one SPIFFE ID")]
    SeveralUris(usize),
    /// The one URI SAN is not a valid SPIFFE ID.
    #[error("the client certificate's URI SAN is not a valid SPIFFE ID: {0}")]
    NotSpiffe(String),
}

/// The caller's identity: the certificate's only URI SAN, which must be a SPIFFE ID (the
/// X.509-SVID rule). Several URIs would make the caller ambiguous, whatever their schemes.
///
/// # Errors
/// [`IdentityError`] naming what is wrong.
pub fn certificate_identity(cert: &X509Certificate<'_>) -> Result<SpiffeId, IdentityError> {
    let uris: Vec<&str> = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|name| match name {
                GeneralName::URI(uri) => Some(*uri),
                _ => None,
            })
            .collect(),
        Ok(None) => Vec::new(),
        Err(e) => return Err(IdentityError::Malformed(e.to_string())),
    };
    match uris.as_slice() {
        [] => Err(IdentityError::NoUri),
        [uri] => SpiffeId::parse(uri).map_err(|e| IdentityError::NotSpiffe(e.to_string())),
        several => Err(IdentityError::SeveralUris(several.len())),
    }
}

/// [`certificate_identity`] of a DER certificate.
///
/// # Errors
/// As [`certificate_identity`]; [`IdentityError::Malformed`] when the DER does not parse.
pub fn der_identity(der: &[u8]) -> Result<SpiffeId, IdentityError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| IdentityError::Malformed(e.to_string()))?;
    certificate_identity(&cert)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, KeyPair, SanType};

    fn cert_with_uris(uris: &[&str]) -> Vec<u8> {
        let mut params = CertificateParams::new(vec!["client.test".to_string()]).unwrap();
        for uri in uris {
            params
                .subject_alt_names
                .push(SanType::URI(uri.to_string().try_into().unwrap()));
        }
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn exactly_one_uri_san_that_is_a_spiffe_id_is_the_identity() {
        let der = cert_with_uris(&["spiffe://td.example/w"]);
        let facts = leaf_facts(&der);
        assert_eq!(facts.identity.unwrap().as_str(), "spiffe://td.example/w");
        assert!(facts.not_before.is_some() && facts.not_after.is_some());
    }

    #[test]
    fn no_several_or_invalid_uris_are_refused_with_a_reason() {
        let cases: [(&[&str], IdentityError); 5] = [
            (&[], IdentityError::NoUri),
            (
                &["https://example.com/x", "spiffe://td.example/w"],
                IdentityError::SeveralUris(2),
            ),
            (
                &["spiffe://td.example/a", "spiffe://td.example/b"],
                IdentityError::SeveralUris(2),
            ),
            (
                &["https://example.com/x"],
                IdentityError::NotSpiffe(crate::identity::SpiffeIdError::Scheme.to_string()),
            ),
            (
                &["spiffe://TD/a"],
                IdentityError::NotSpiffe(crate::identity::SpiffeIdError::TrustDomain.to_string()),
            ),
        ];
        for (uris, want) in cases {
            let der = cert_with_uris(uris);
            assert_eq!(der_identity(&der), Err(want), "{uris:?}");
            assert_eq!(leaf_facts(&der).identity, None, "{uris:?}");
        }
        assert_eq!(leaf_facts(b"not a certificate"), LeafFacts::default());
        assert!(matches!(
            der_identity(b"junk"),
            Err(IdentityError::Malformed(_))
        ));
    }

    #[test]
    fn validity_is_checked_against_the_time_of_the_call() {
        let at = |s: u64| UNIX_EPOCH + std::time::Duration::from_secs(s);
        let info = PeerInfo {
            not_before: Some(1_000),
            not_after: Some(2_000),
            ..PeerInfo::default()
        };
        assert_eq!(info.check_validity(at(1_000)), Ok(()));
        assert_eq!(info.check_validity(at(2_000)), Ok(()));
        assert_eq!(
            info.check_validity(at(999)),
            Err(CertificateValidityError::NotYetValid)
        );
        assert_eq!(
            info.check_validity(at(2_001)),
            Err(CertificateValidityError::Expired)
        );
        assert_eq!(
            PeerInfo::default().check_validity(at(1_500)),
            Err(CertificateValidityError::NoCertificate)
        );
    }

    #[test]
    fn peer_reads_the_request_extension() {
        let mut request = tonic::Request::new(());
        assert!(peer(&request).is_none());
        let info = PeerInfo {
            kx_group: Some("X25519".to_string()),
            ..PeerInfo::default()
        };
        request.extensions_mut().insert(info.clone());
        assert_eq!(peer(&request), Some(&info));
    }
}
