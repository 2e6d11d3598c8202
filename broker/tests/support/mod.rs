//! What the TLS tests share: a real tonic server (gRPC health) over `TlsIncoming` whose
//! interceptor records `tls::peer(&request)`, clients from the development PKI, and raw
//! TLS 1.3 connections for clients that misbehave.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use broker::tls::devpki::{DevPki, IssuedCert};
use broker::tls::{
    self, ConnectionLimits, PeerInfo, ServerTls, TlsIncoming, client_channel,
    install_crypto_provider,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::oneshot;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Server};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

pub const DAY: Duration = Duration::from_secs(24 * 60 * 60);
pub const RPC_DEADLINE: Duration = Duration::from_secs(5);

pub struct TestServer {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Option<PeerInfo>>>>,
    _reporter: tonic_health::server::HealthReporter,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
}

impl TestServer {
    pub async fn start(tls: &ServerTls, limits: ConnectionLimits) -> TestServer {
        install_crypto_provider();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let incoming = TlsIncoming::new(listener, tls, limits);
        let addr = incoming.local_addr().unwrap();
        let (reporter, health) = tonic_health::server::health_reporter();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let health = InterceptedService::new(health, move |req: tonic::Request<()>| {
            record.lock().unwrap().push(tls::peer(&req).cloned());
            Ok(req)
        });
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(
            Server::builder()
                .add_service(health)
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                }),
        );
        TestServer {
            addr,
            seen,
            _reporter: reporter,
            stop: Some(stop),
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }

    pub fn last_peer(&self) -> Option<PeerInfo> {
        self.seen.lock().unwrap().last().cloned().flatten()
    }

    pub fn requests_seen(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap().unwrap();
    }
}

pub fn new_pki() -> DevPki {
    DevPki::generate("test.example", &["localhost".to_string()]).unwrap()
}

pub fn valid_client(pki: &DevPki, path: &str) -> IssuedCert {
    let now = SystemTime::now();
    pki.issue_client(path, now - Duration::from_secs(60), now + DAY)
        .unwrap()
}

pub async fn health(channel: Channel) -> Result<ServingStatus, tonic::Status> {
    let request = HealthCheckRequest {
        service: String::new(),
    };
    let mut client = HealthClient::new(channel);
    let call = client.check(request);
    match tokio::time::timeout(RPC_DEADLINE, call).await {
        Ok(response) => Ok(response?.into_inner().status()),
        Err(_) => Err(tonic::Status::deadline_exceeded("test deadline")),
    }
}

/// Connects with a client certificate and calls the health service; any failure is `Err`.
pub async fn check_with(
    server: &TestServer,
    ca_pem: &str,
    client: &IssuedCert,
) -> Result<ServingStatus, String> {
    let channel = client_channel(
        &server.url(),
        ca_pem.as_bytes(),
        client.cert_pem().as_bytes(),
        client.key_pem().as_bytes(),
    )
    .await
    .map_err(|e| format!("connect: {e}"))?;
    health(channel).await.map_err(|s| format!("rpc: {s}"))
}

/// A CA outside the dev PKI that issues a client certificate with a DNS SAN only.
/// Returns the CA certificate, the client certificate and its key, PEM.
pub fn client_without_spiffe() -> (String, String, String) {
    use rcgen::{
        BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    };
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca_pem = ca_params.self_signed(&ca_key).unwrap().pem();
    let mut params = CertificateParams::new(vec!["client.test".to_string()]).unwrap();
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate().unwrap();
    let cert = params
        .signed_by(&key, &Issuer::from_params(&ca_params, &ca_key))
        .unwrap();
    (ca_pem, cert.pem(), key.serialize_pem())
}

/// Waits until `stream` is closed by the server (EOF or reset), or panics after `limit`.
pub async fn closed_by_server_within<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    limit: Duration,
) {
    let mut buf = [0u8; 64];
    loop {
        match tokio::time::timeout(limit, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return,
            // TLS session tickets and HTTP/2 settings may arrive first; keep reading.
            Ok(Ok(_)) => continue,
            Err(_) => panic!("connection still open after {limit:?}"),
        }
    }
}

/// Waits until the server speaks HTTP/2 on `stream` (its SETTINGS frame), which it does only
/// once it has accepted the connection as established.
pub async fn served_by_http2<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) {
    let mut buf = [0u8; 9];
    let read = tokio::time::timeout(Duration::from_secs(20), stream.read(&mut buf)).await;
    match read {
        Ok(Ok(n)) if n > 0 => {}
        other => panic!("the server did not start HTTP/2 on the connection: {other:?}"),
    }
}

/// A TCP connection to `server` from the loopback address `from` (e.g. 127.0.0.2), so that
/// one test can play several client addresses.
pub async fn connect_from(from: [u8; 4], server: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((from, 0)))?;
    socket.connect(server).await
}

/// A raw TLS 1.3 client that presents `chain_pem` (leaf first) and `key_pem` and trusts
/// `ca_pem` for the server; ALPN h2.
pub fn tls13_connector(ca_pem: &str, chain_pem: &str, key_pem: &str) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let chain = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// Connects `connector` to `addr` (server name 127.0.0.1) and completes the client's side of
/// the handshake.
pub async fn tls13_connect(
    connector: &tokio_rustls::TlsConnector,
    addr: SocketAddr,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("127.0.0.1").unwrap();
    connector.connect(name, tcp).await
}

/// A CA this test controls fully (unlike the dev PKI): issues leaves with any SANs and
/// intermediate CAs. PEM out.
pub struct TestCa {
    pub params: rcgen::CertificateParams,
    pub key: rcgen::KeyPair,
    pub pem: String,
}

impl TestCa {
    pub fn root(name: &str) -> TestCa {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let key = rcgen::KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        TestCa { params, key, pem }
    }

    /// An intermediate CA signed by this one.
    pub fn intermediate(&self, name: &str) -> TestCa {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
        let key = rcgen::KeyPair::generate().unwrap();
        let issuer = rcgen::Issuer::from_params(&self.params, &self.key);
        let pem = params.signed_by(&key, &issuer).unwrap().pem();
        TestCa { params, key, pem }
    }

    /// A client leaf with these URI SANs; returns (certificate PEM, key PEM).
    pub fn leaf(&self, uris: &[&str]) -> (String, String) {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        for uri in uris {
            params
                .subject_alt_names
                .push(rcgen::SanType::URI(uri.to_string().try_into().unwrap()));
        }
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let key = rcgen::KeyPair::generate().unwrap();
        let issuer = rcgen::Issuer::from_params(&self.params, &self.key);
        let pem = params.signed_by(&key, &issuer).unwrap().pem();
        (pem, key.serialize_pem())
    }
}

/// Calls the health service with a client that presents `chain_pem` (leaf first).
pub async fn check_with_chain(
    server: &TestServer,
    ca_pem: &str,
    chain_pem: &str,
    key_pem: &str,
) -> Result<ServingStatus, String> {
    let channel = client_channel(
        &server.url(),
        ca_pem.as_bytes(),
        chain_pem.as_bytes(),
        key_pem.as_bytes(),
    )
    .await
    .map_err(|e| format!("connect: {e}"))?;
    health(channel).await.map_err(|s| format!("rpc: {s}"))
}
