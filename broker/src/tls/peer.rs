//! What a request handler learns about the caller: computed once per connection, right
//! after the handshake, and handed to tonic as the connection's `ConnectInfo` (tonic copies it
//! into every request's extensions, where [`peer`] finds it).

use std::net::SocketAddr;

use rustls::ServerConnection;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

use crate::identity::SpiffeId;

/// The caller of a request, as established by the TLS handshake.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PeerInfo {
    /// The TCP peer address.
    pub remote_addr: Option<SocketAddr>,
    /// The SPIFFE ID in the client certificate, if the leaf has exactly one `spiffe://` URI
    /// SAN and it is valid; `None` otherwise (the certificate was still verified).
    pub identity: Option<SpiffeId>,
    /// The negotiated key exchange group, e.g. `"X25519MLKEM768"`.
    pub kx_group: Option<String>,
    /// The client certificate's notAfter, in seconds since the Unix epoch.
    pub not_after: Option<i64>,
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
        let (identity, not_after) = conn
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|leaf| leaf_facts(leaf))
            .unwrap_or_default();
        PeerInfo {
            remote_addr,
            identity,
            kx_group,
            not_after,
        }
    }
}

/// The [`PeerInfo`] of the connection a request arrived on; `None` when the server was not
/// started over [`super::TlsIncoming`] (or in unit tests that build bare requests).
pub fn peer<T>(request: &tonic::Request<T>) -> Option<&PeerInfo> {
    request.extensions().get::<PeerInfo>()
}

/// The SPIFFE identity and notAfter of a DER leaf certificate.
pub(crate) fn leaf_facts(der: &[u8]) -> (Option<SpiffeId>, Option<i64>) {
    match x509_parser::parse_x509_certificate(der) {
        Ok((_, cert)) => (
            spiffe_identity(&cert),
            Some(cert.validity().not_after.timestamp()),
        ),
        Err(e) => {
            tracing::debug!(error = %e, "verified client certificate does not parse");
            (None, None)
        }
    }
}

/// The certificate's single `spiffe://` URI SAN, parsed. Several SPIFFE URIs make the
/// identity ambiguous, so they count as none (the X.509-SVID rule is exactly one).
fn spiffe_identity(cert: &X509Certificate<'_>) -> Option<SpiffeId> {
    let san = match cert.subject_alternative_name() {
        Ok(Some(san)) => san,
        Ok(None) => return None,
        Err(e) => {
            tracing::debug!(error = %e, "client certificate has a malformed SAN extension");
            return None;
        }
    };
    let mut spiffe_uris = san
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::URI(uri) if is_spiffe(uri) => Some(*uri),
            _ => None,
        });
    let uri = spiffe_uris.next()?;
    if spiffe_uris.next().is_some() {
        tracing::debug!("client certificate has more than one SPIFFE URI SAN; no identity");
        return None;
    }
    match SpiffeId::parse(uri) {
        Ok(id) => Some(id),
        Err(e) => {
            tracing::debug!(uri, error = %e, "client certificate's SPIFFE URI is invalid");
            None
        }
    }
}

fn is_spiffe(uri: &str) -> bool {
    uri.get(.."spiffe://".len())
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("spiffe://"))
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
    fn exactly_one_spiffe_uri_is_the_identity() {
        let der = cert_with_uris(&["https://example.com/x", "spiffe://td.example/w"]);
        let (id, not_after) = leaf_facts(&der);
        assert_eq!(id.unwrap().as_str(), "spiffe://td.example/w");
        assert!(not_after.is_some());
    }

    #[test]
    fn no_several_or_invalid_spiffe_uris_mean_no_identity() {
        for uris in [
            &[][..],
            &["https://example.com/x"][..],
            &["spiffe://td.example/a", "spiffe://td.example/b"][..],
            &["SPIFFE://td.example/a", "spiffe://td.example/b"][..],
            &["spiffe://TD/a"][..],
        ] {
            assert_eq!(leaf_facts(&cert_with_uris(uris)).0, None, "{uris:?}");
        }
        assert_eq!(leaf_facts(b"not a certificate"), (None, None));
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
