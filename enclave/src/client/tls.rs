//! An mTLS channel to the broker: the server must chain to the given CA, and the client
//! presents the given certificate chain and key.
//!
//! tonic's `ClientTlsConfig` does the TLS (rustls, through the process-default crypto
//! provider, which [`install_crypto_provider`] makes aws-lc-rs with X25519MLKEM768 first, as
//! the broker does). The inputs are parsed first so that errors say which input is wrong
//! (tonic's say only "transport error").

use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::crypto::aws_lc_rs::{self, kx_group};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use secrecy::{ExposeSecret, SecretString};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use super::{ClientError, Step, error_chain};

/// TCP connect and TLS handshake deadlines.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A channel to `endpoint` (`https://host:port`), connected now so that an unreachable
/// broker or an untrusted server certificate is reported here: the server must present a
/// certificate chaining to `server_ca_pem` and naming `host`; the client presents
/// `cert_chain_pem` (leaf first) and `key_pem`. Installs the crypto provider if none is.
///
/// With TLS 1.3 the server checks the client certificate after the client has finished its
/// handshake: a refused certificate shows up as a failed first call, not here.
///
/// # Errors
/// [`ClientError::Input`] naming the malformed input or a bad endpoint;
/// [`ClientError::Connect`] when connecting fails.
pub async fn channel(
    endpoint: &str,
    server_ca_pem: &[u8],
    cert_chain_pem: &[u8],
    key_pem: &SecretString,
) -> Result<Channel, ClientError> {
    install_crypto_provider();
    parse_certs(server_ca_pem, "server CA certificate")?;
    parse_certs(cert_chain_pem, "client certificate")?;
    check_key(key_pem, "client private key")?;
    let bad_endpoint = |reason: String| ClientError::input(Step::Connect, endpoint, reason);
    let uri = endpoint
        .parse::<http::Uri>()
        .map_err(|e| bad_endpoint(e.to_string()))?;
    if uri.scheme_str() != Some("https") || uri.host().is_none() {
        return Err(bad_endpoint("expected https://host:port".to_string()));
    }
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(server_ca_pem))
        .identity(Identity::from_pem(
            cert_chain_pem,
            key_pem.expose_secret().as_bytes(),
        ))
        .timeout(CONNECT_TIMEOUT);
    Endpoint::from(uri)
        .connect_timeout(CONNECT_TIMEOUT)
        .tls_config(tls)
        .map_err(|e| bad_endpoint(error_chain(&e)))?
        .connect()
        .await
        .map_err(|e| ClientError::Connect {
            endpoint: endpoint.to_string(),
            reason: error_chain(&e),
        })
}

/// Installs aws-lc-rs, key exchange X25519MLKEM768 (post-quantum hybrid) first, as the
/// process-wide rustls provider, unless one is installed already.
fn install_crypto_provider() {
    if CryptoProvider::get_default().is_some() {
        return;
    }
    let mut provider = aws_lc_rs::default_provider();
    provider.kx_groups = vec![
        kx_group::X25519MLKEM768,
        kx_group::X25519,
        kx_group::SECP256R1,
        kx_group::SECP384R1,
    ];
    // Losing a race with another thread is fine: some provider is installed either way.
    if provider.install_default().is_err() {
        tracing::debug!("a rustls crypto provider was installed concurrently; keeping it");
    }
}

/// All certificates in `pem`, in order; `what` names the input in errors.
pub(crate) fn parse_certs(
    pem: &[u8],
    what: &str,
) -> Result<Vec<CertificateDer<'static>>, ClientError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ClientError::input(Step::Connect, what, e.to_string()))?;
    if certs.is_empty() {
        return Err(ClientError::input(
            Step::Connect,
            what,
            "no CERTIFICATE block found",
        ));
    }
    Ok(certs)
}

/// Checks that `pem` holds a private key (PKCS#8, SEC1 or PKCS#1).
pub(crate) fn check_key(pem: &SecretString, what: &str) -> Result<(), ClientError> {
    PrivateKeyDer::from_pem_slice(pem.expose_secret().as_bytes())
        .map(drop)
        .map_err(|e| {
            let reason = match e {
                rustls_pki_types::pem::Error::NoItemsFound => {
                    "no PRIVATE KEY block found".to_string()
                }
                other => other.to_string(),
            };
            ClientError::input(Step::Connect, what, reason)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOT_PEM: &[u8] = b"not a certificate";

    /// Endpoint, server CA, client chain, client key, and the input the error must name.
    type Case<'a> = (&'a str, &'a [u8], &'a [u8], &'a SecretString, &'a str);

    #[tokio::test]
    async fn errors_name_the_bad_input() {
        let key = crate::key::EphemeralKey::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .self_signed(&rcgen::KeyPair::from_pem(key.private_key_pem().expose_secret()).unwrap())
            .unwrap()
            .pem();
        let cert = cert.as_bytes();
        let pem = key.private_key_pem();
        let no_key = SecretString::from("nothing".to_string());
        let cases: [Case<'_>; 5] = [
            (
                "https://localhost:1",
                NOT_PEM,
                cert,
                &pem,
                "server CA certificate",
            ),
            (
                "https://localhost:1",
                cert,
                NOT_PEM,
                &pem,
                "client certificate",
            ),
            (
                "https://localhost:1",
                cert,
                cert,
                &no_key,
                "client private key",
            ),
            ("http://localhost:1", cert, cert, &pem, "http://localhost:1"),
            ("localhost", cert, cert, &pem, "localhost"),
        ];
        for (endpoint, ca, chain, key, named) in cases {
            let err = channel(endpoint, ca, chain, key).await.unwrap_err();
            assert_eq!(err.step(), Step::Connect);
            let ClientError::Input { what, .. } = &err else {
                panic!("{err:?}");
            };
            assert_eq!(what, named, "{err}");
        }
        // Nothing listens on port 1: a connect error, naming the endpoint.
        let err = channel("https://127.0.0.1:1", cert, cert, &pem)
            .await
            .unwrap_err();
        assert!(matches!(err, ClientError::Connect { .. }), "{err:?}");
        assert!(
            err.to_string().starts_with("connect: https://127.0.0.1:1"),
            "{err}"
        );
    }
}
