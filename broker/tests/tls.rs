//! Mutual TLS end to end: a real tonic server (gRPC health) over `TlsIncoming`, real clients,
//! certificates from the development PKI. An interceptor records `tls::peer(&request)` so the
//! tests see what a handler would see.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use broker::tls::devpki::{DevPki, IssuedCert};
use broker::tls::{ConnectionLimits, ServerTls, TlsError, client_channel};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use support::{
    DAY, RPC_DEADLINE, TestServer, check_with, client_without_spiffe, health, new_pki, valid_client,
};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
use tonic_health::pb::health_check_response::ServingStatus;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_client_is_served_and_identified_and_bad_clients_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pki = new_pki();
    pki.write_to(dir.path()).unwrap();
    let (other_ca_pem, no_spiffe_cert, no_spiffe_key) = client_without_spiffe();
    let other_ca_path = dir.path().join("other-ca.pem");
    std::fs::write(&other_ca_path, &other_ca_pem).unwrap();
    let server_tls = ServerTls::from_files(
        &dir.path().join("server.pem"),
        &dir.path().join("server-key.pem"),
        &[dir.path().join("ca.pem"), other_ca_path],
    )
    .unwrap();
    let server = TestServer::start(&server_tls, ConnectionLimits::default()).await;
    let ca = pki.ca_cert_pem();

    // A valid client: served, and the handler sees its SPIFFE ID and the PQ hybrid group.
    let good = valid_client(&pki, "/workload");
    assert_eq!(
        check_with(&server, ca, &good).await,
        Ok(ServingStatus::Serving)
    );
    let peer = server.last_peer().expect("PeerInfo reaches the handler");
    assert_eq!(
        peer.identity.as_ref().map(|id| id.as_str()),
        Some("spiffe://test.example/workload")
    );
    assert_eq!(peer.kx_group.as_deref(), Some("X25519MLKEM768"));
    assert_eq!(
        peer.remote_addr.map(|a| a.ip().to_string()).as_deref(),
        Some("127.0.0.1")
    );
    let expected_not_after = SystemTime::now() + DAY;
    let not_after = peer.not_after.unwrap();
    let expected = expected_not_after
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        (not_after - expected).abs() < 60,
        "{not_after} vs {expected}"
    );
    let served = server.requests_seen();

    // No client certificate at all.
    let endpoint = Endpoint::from_shared(server.url())
        .unwrap()
        .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)))
        .unwrap();
    let result = match endpoint.connect().await {
        Ok(channel) => health(channel).await.map_err(|s| s.to_string()),
        Err(e) => Err(e.to_string()),
    };
    assert!(result.is_err(), "no client certificate: {result:?}");

    // A certificate from a CA the server does not trust.
    let stranger = valid_client(&new_pki(), "/workload");
    let result = check_with(&server, ca, &stranger).await;
    assert!(result.is_err(), "foreign CA: {result:?}");

    // An expired certificate.
    let now = SystemTime::now();
    let expired = pki
        .issue_client("/workload", now - 2 * DAY, now - DAY)
        .unwrap();
    let result = check_with(&server, ca, &expired).await;
    assert!(result.is_err(), "expired: {result:?}");
    assert_eq!(
        server.requests_seen(),
        served,
        "no refused client reached the handler"
    );

    // A certificate from a trusted CA without a SPIFFE URI: refused at the handshake, so
    // no connection without an identity ever reaches a handler.
    let result = match client_channel(
        &server.url(),
        ca.as_bytes(),
        no_spiffe_cert.as_bytes(),
        no_spiffe_key.as_bytes(),
    )
    .await
    {
        Ok(channel) => health(channel).await.map_err(|s| s.to_string()),
        Err(e) => Err(e.to_string()),
    };
    assert!(result.is_err(), "no URI SAN: {result:?}");
    assert_eq!(server.requests_seen(), served);

    // A TLS 1.2-only client cannot even finish the handshake.
    tls12_only_handshake_fails(server.addr, ca, &good).await;

    // After all that, the server still serves good clients.
    assert_eq!(
        check_with(&server, ca, &good).await,
        Ok(ServingStatus::Serving)
    );
    server.stop().await;
}

async fn tls12_only_handshake_fails(addr: SocketAddr, ca_pem: &str, client: &IssuedCert) {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let chain = vec![CertificateDer::from_pem_slice(client.cert_pem().as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(client.key_pem().as_bytes()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let result = tokio::time::timeout(RPC_DEADLINE, connector.connect(name, tcp))
        .await
        .unwrap();
    let err = result.expect_err("TLS 1.2 must be refused");
    assert!(err.to_string().to_lowercase().contains("protocol"), "{err}");
}

/// Waits until `stream` is closed by the server (EOF or reset), or panics after `limit`.
async fn closed_within(stream: &mut TcpStream, limit: Duration) {
    let mut buf = [0u8; 64];
    match tokio::time::timeout(limit, stream.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => {}
        Ok(Ok(n)) => panic!("server sent {n} bytes to a client that sent nothing"),
        Err(_) => panic!("connection still open after {limit:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_clients_do_not_block_others_and_time_out() {
    let pki = new_pki();
    let limits = ConnectionLimits {
        max_connections: 64,
        handshake_timeout: Duration::from_secs(3),
        ..ConnectionLimits::default()
    };
    let server = TestServer::start(&pki.server_tls().unwrap(), limits).await;
    let mut silent = Vec::new();
    for _ in 0..3 {
        silent.push(TcpStream::connect(server.addr).await.unwrap());
    }
    // No wait needed: the listener accepts in connection order, so the silent sockets are
    // taken before the good client's.

    // Served well before any silent handshake times out: handshakes are concurrent.
    let started = std::time::Instant::now();
    let good = valid_client(&pki, "/workload");
    assert_eq!(
        check_with(&server, pki.ca_cert_pem(), &good).await,
        Ok(ServingStatus::Serving)
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    // The silent connections are dropped once the handshake deadline passes.
    for stream in &mut silent {
        closed_within(stream, Duration::from_secs(6)).await;
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshakes_beyond_the_budget_are_closed_at_once() {
    let pki = new_pki();
    let limits = ConnectionLimits {
        max_connections: 2,
        max_handshakes: 2,
        handshake_timeout: Duration::from_secs(30),
        ..ConnectionLimits::default()
    };
    let server = TestServer::start(&pki.server_tls().unwrap(), limits).await;
    let first = TcpStream::connect(server.addr).await.unwrap();
    let second = TcpStream::connect(server.addr).await.unwrap();
    // Accepted in connection order: the first two hold both handshake permits.
    let mut third = TcpStream::connect(server.addr).await.unwrap();
    closed_within(&mut third, Duration::from_secs(2)).await;

    // Closing the silent ones frees their permits.
    drop((first, second));
    let good = valid_client(&pki, "/workload");
    let mut result = Err(String::new());
    for _ in 0..20 {
        result = check_with(&server, pki.ca_cert_pem(), &good).await;
        if result.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(result, Ok(ServingStatus::Serving));
    server.stop().await;
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_pki_round_trips_through_files_and_keeps_issuing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pki");
    let original = new_pki();
    original.write_to(&dir).unwrap();
    assert_eq!(mode_of(&dir), 0o700);
    assert_eq!(mode_of(&dir.join("ca-key.pem")), 0o600);
    assert_eq!(mode_of(&dir.join("server-key.pem")), 0o600);
    assert_eq!(mode_of(&dir.join("ca.pem")), 0o644);

    let loaded = DevPki::load_from(&dir).unwrap();
    assert_eq!(loaded.trust_domain(), "test.example");
    assert_eq!(loaded.ca_cert_pem(), original.ca_cert_pem());
    let debug = format!("{loaded:?} {:?}", loaded.server());
    assert!(!debug.contains("PRIVATE KEY"), "{debug}");

    // A client issued by the reloaded CA is accepted by a server of the original one.
    let client = loaded
        .issue_client("/ns/cli", SystemTime::now(), SystemTime::now() + DAY)
        .unwrap();
    let (cert, key) = client.write_to(&dir, "cli").unwrap();
    assert_eq!(mode_of(&key), 0o600);
    assert!(cert.ends_with("cli.pem"));
    let server =
        TestServer::start(&original.server_tls().unwrap(), ConnectionLimits::default()).await;
    assert_eq!(
        check_with(&server, original.ca_cert_pem(), &client).await,
        Ok(ServingStatus::Serving)
    );
    assert_eq!(
        server
            .last_peer()
            .and_then(|p| p.identity)
            .map(|id| id.to_string())
            .as_deref(),
        Some("spiffe://test.example/ns/cli")
    );
    server.stop().await;

    // An open directory and a bad SPIFFE path are refused.
    set_mode(&dir, 0o775);
    assert!(matches!(
        original.write_to(&dir),
        Err(TlsError::Permissions { .. })
    ));
    assert!(
        original
            .issue_client("no-slash", SystemTime::now(), SystemTime::now() + DAY)
            .is_err()
    );
    assert!(DevPki::generate("Bad Domain", &[]).is_err());
}
