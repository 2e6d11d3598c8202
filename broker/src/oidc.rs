//! `[oidc]`: the JWKS and an OpenID Connect discovery document over plain HTTPS, so that
//! an API gateway or a cloud IAM federation can verify the broker's workload JWTs
//! (`GetToken`) without a client certificate.
//!
//! Read-only and small: `GET` (or `HEAD`) of `/.well-known/openid-configuration` and
//! `/keys`, nothing else. TLS 1.3 with the broker's server certificate, server
//! authentication only. Each connection has a deadline, and at most
//! [`MAX_CONNECTIONS`] are served at once; the rest wait in the kernel's backlog.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::attestation::Attestation;
use crate::config::Config;
use crate::error::{BrokerError, Result};
use crate::tls::{crypto_provider, parse_certs, parse_key};

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 256;
/// The longest a connection lives, handshake included.
const CONNECTION_DEADLINE: Duration = Duration::from_secs(30);

/// What the port publishes.
#[derive(Debug)]
struct Published {
    issuer: String,
    attestation: Option<Arc<Attestation>>,
}

/// The discovery document (OpenID Connect Discovery 1.0 §3), JSON.
fn discovery(issuer: &str) -> String {
    serde_json::json!({
        "issuer": issuer,
        "jwks_uri": format!("{issuer}/keys"),
        "id_token_signing_alg_values_supported": ["ES256"],
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
    })
    .to_string()
}

fn respond(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("max-age=60"),
    );
    response
}

fn route<B>(published: &Published, request: &Request<B>) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return respond(
            StatusCode::METHOD_NOT_ALLOWED,
            r#"{"error":"read-only: GET only"}"#.into(),
        );
    }
    match request.uri().path() {
        "/.well-known/openid-configuration" => {
            respond(StatusCode::OK, discovery(&published.issuer))
        }
        "/keys" => match published
            .attestation
            .as_ref()
            .map(|a| a.token_keys().jwks())
        {
            Some(Ok(jwks)) => respond(StatusCode::OK, jwks),
            Some(Err(_)) => respond(
                StatusCode::SERVICE_UNAVAILABLE,
                r#"{"error":"the signing keys are not loaded yet; retry"}"#.into(),
            ),
            None => respond(
                StatusCode::NOT_FOUND,
                r#"{"error":"this broker signs no tokens"}"#.into(),
            ),
        },
        _ => respond(StatusCode::NOT_FOUND, r#"{"error":"not found"}"#.into()),
    }
}

/// Binds `listen` and serves the documents in the background; returns once bound.
///
/// # Errors
/// The server certificate or key cannot be read, `oidc.issuer` is missing, or the
/// address cannot be bound.
pub async fn spawn(
    listen: SocketAddr,
    config: &Config,
    attestation: Option<Arc<Attestation>>,
) -> Result<SocketAddr> {
    let setup = |what: &str, e: String| BrokerError::FailedPrecondition(format!("{what}: {e}"));
    let issuer = config
        .oidc
        .issuer
        .clone()
        .ok_or_else(|| setup("oidc.issuer", "required with oidc.listen".into()))?;
    let cert_pem =
        std::fs::read(&config.server.cert).map_err(|e| setup("server.cert", e.to_string()))?;
    let key_pem = crate::tls::read_secret_file(&config.server.key)
        .map_err(|e| setup("server.key", e.to_string()))?;
    let certs = parse_certs(&cert_pem, "server certificate chain")
        .map_err(|e| setup("server.cert", e.to_string()))?;
    let key = parse_key(&key_pem, "server private key")
        .map_err(|e| setup("server.key", e.to_string()))?;
    let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(crypto_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| setup("oidc TLS", e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| setup("oidc TLS", e.to_string()))?;
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| setup("oidc.listen", e.to_string()))?;
    let local = listener
        .local_addr()
        .map_err(|e| setup("oidc.listen", e.to_string()))?;
    println!("keybroker: oidc on {local}");
    tracing::info!(%local, %issuer, "serving the JWKS and OIDC discovery over HTTPS");
    let published = Arc::new(Published {
        issuer,
        attestation,
    });
    tokio::spawn(accept_loop(listener, acceptor, published));
    Ok(local)
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    published: Arc<Published>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "oidc: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let published = published.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let serve = async {
                let tls = acceptor.accept(stream).await.ok()?;
                let service = hyper::service::service_fn(move |request| {
                    let response = route(&published, &request);
                    async move { Ok::<_, std::convert::Infallible>(response) }
                });
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await
                    .ok()
            };
            let _ = tokio::time::timeout(CONNECTION_DEADLINE, serve).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_discovery_document_names_the_issuer_and_its_keys() {
        let doc: serde_json::Value =
            serde_json::from_str(&discovery("https://broker.example:8443")).unwrap_or_default();
        assert_eq!(doc["issuer"], "https://broker.example:8443");
        assert_eq!(doc["jwks_uri"], "https://broker.example:8443/keys");
        assert_eq!(doc["id_token_signing_alg_values_supported"][0], "ES256");
    }

    #[test]
    fn only_reads_of_the_two_documents_are_served() {
        let published = Published {
            issuer: "https://b".into(),
            attestation: None,
        };
        let get = |path: &str| Request::get(path).body(()).unwrap_or_default();
        assert_eq!(
            route(&published, &get("/.well-known/openid-configuration")).status(),
            StatusCode::OK
        );
        assert_eq!(
            route(&published, &get("/keys")).status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            route(&published, &get("/admin")).status(),
            StatusCode::NOT_FOUND
        );
        let post = Request::post("/keys").body(()).unwrap_or_default();
        assert_eq!(
            route(&published, &post).status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
    }
}
