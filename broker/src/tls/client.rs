//! The client side, for the CLI, the tests and (later) the enclave SDK: a tonic channel that
//! trusts only the given CA for the server and presents a client certificate.
//!
//! tonic's own `ClientTlsConfig` does the work; its rustls configuration comes from the
//! process-default crypto provider, which [`super::install_crypto_provider`] makes aws-lc-rs
//! with X25519MLKEM768 first. The inputs are parsed here first so that errors say which input
//! is wrong (tonic's say only "transport error").
//!
//! With TLS 1.3 the client finishes its side of the handshake before the server has checked
//! the client certificate: a rejected certificate shows up as a failed first RPC, not as a
//! failed connect.

use std::time::Duration;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use super::{TlsError, error_chain, install_crypto_provider, parse_certs, parse_key};

/// TCP connect and TLS handshake deadlines for [`client_endpoint`].
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A configured, unconnected endpoint for `https://host:port`: the server must present a
/// certificate chaining to `ca_pem` and naming `host` (DNS name or IP address SAN); the
/// client presents `cert_pem`/`key_pem`. Use `connect_lazy()` on it to connect on first use,
/// or [`client_channel`] to connect now. Installs the crypto provider if none is.
///
/// # Errors
/// [`TlsError::Pem`] naming the malformed input, or [`TlsError::Endpoint`] when the endpoint
/// is not an `https://` URI tonic accepts.
pub fn client_endpoint(
    endpoint: &str,
    ca_pem: &[u8],
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<Endpoint, TlsError> {
    install_crypto_provider();
    parse_certs(ca_pem, "CA certificate")?;
    parse_certs(cert_pem, "client certificate")?;
    parse_key(key_pem, "client private key")?;
    let endpoint_error = |reason: String| TlsError::Endpoint {
        endpoint: endpoint.to_string(),
        reason,
    };
    let uri = endpoint
        .parse::<http::Uri>()
        .map_err(|e| endpoint_error(e.to_string()))?;
    if uri.scheme_str() != Some("https") || uri.host().is_none() {
        return Err(endpoint_error("expected https://host:port".to_string()));
    }
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .identity(Identity::from_pem(cert_pem, key_pem))
        .timeout(CONNECT_TIMEOUT);
    Endpoint::from(uri)
        .connect_timeout(CONNECT_TIMEOUT)
        .tls_config(tls)
        .map_err(|e| endpoint_error(error_chain(&e)))
}

/// [`client_endpoint`], connected now (TCP, TLS and HTTP/2), so that an unreachable server or
/// an untrusted server certificate is reported here. The channel reconnects by itself later.
///
/// # Errors
/// As [`client_endpoint`], and [`TlsError::Connect`] when connecting fails.
pub async fn client_channel(
    endpoint: &str,
    ca_pem: &[u8],
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<Channel, TlsError> {
    client_endpoint(endpoint, ca_pem, cert_pem, key_pem)?
        .connect()
        .await
        .map_err(|e| TlsError::Connect {
            endpoint: endpoint.to_string(),
            reason: error_chain(&e),
        })
}
