//! Three attacks on the broker's connections, each against a real broker (SoftHSM2, swtpm,
//! mutual TLS) while a well-behaved workload on its own connection signs 200 times:
//!
//! (a) one connection whose SPIFFE ID no policy names opens 600 calls that never send their
//!     request; (b) 1,024 TCP sockets that never start a handshake; (c) about 1,000 TLS
//!     connections that never make a call.
//!
//! (a') is (a) spread over 12 connections of the same identity. And one on the token: (d) a batch of slow RSA-4096 signatures while the token has one
//! session.
//!
//! Each good call must succeed within its deadline; the p99 is printed, not asserted (timings
//! go to `make bench`). The broker runs with small limits so that the attacks are cheap.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{BrokerOptions, BrokerProcess, TransportOptions, create};
use keybroker_api::v1 as pb;
use pb::KeyAlgorithm as A;
use pb::KeyPurpose as P;
use pb::key_service_client::KeyServiceClient;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpSocket, TcpStream};
use tonic::transport::Channel;

const KEY: &str = "exhaustion-signing";
const GOOD_CALLS: usize = 200;
/// Each good call's deadline: the broker's request timeout.
const CALL_DEADLINE: Duration = Duration::from_secs(30);
/// A bound on each whole attack, well above what it takes; reached only on failure.
const ATTACK_BOUND: Duration = Duration::from_secs(120);

/// Small limits: 64 calls in flight, 16 streams per connection, 8 handshakes per address,
/// 3-second handshakes, connections closed after 10 idle seconds.
const LIMITS: &str = "max_concurrent_requests = 64
max_concurrent_streams = 16
max_connections = 1500
max_handshakes = 64
max_handshakes_per_address = 8
handshake_timeout_seconds = 3
idle_timeout_seconds = 10";

async fn broker_with_key() -> BrokerProcess {
    let broker = BrokerProcess::start_with_transport(
        BrokerOptions::default(),
        TransportOptions {
            server_lines: LIMITS.to_string(),
            client_crl: false,
        },
    );
    broker
        .keys("admin")
        .await
        .create_key(create(KEY, A::EcP256, P::SignVerify, "softhsm"))
        .await
        .unwrap();
    broker
}

/// 200 sequential Sign calls by `workload` on a fresh connection; each must succeed within
/// its deadline. Returns the p99 latency, printed by the caller.
async fn well_behaved_workload_is_served(broker: &BrokerProcess, attack: &str) -> Duration {
    let mut client = KeyServiceClient::new(broker.channel("workload").await.unwrap());
    let mut latencies = Vec::with_capacity(GOOD_CALLS);
    for i in 0..GOOD_CALLS {
        let request = pb::SignRequest {
            name: KEY.into(),
            input: Some(pb::sign_request::Input::Message(
                format!("{attack} {i}").into_bytes(),
            )),
            scheme: pb::SignatureScheme::Ecdsa as i32,
        };
        let started = Instant::now();
        let result = tokio::time::timeout(CALL_DEADLINE, client.sign(request)).await;
        latencies.push(started.elapsed());
        match result {
            Ok(Ok(_)) => {}
            Ok(Err(status)) => panic!("{attack}: good call {i} refused: {status}"),
            Err(_) => panic!("{attack}: good call {i} missed its {CALL_DEADLINE:?} deadline"),
        }
    }
    latencies.sort();
    let p99 = latencies[(latencies.len() * 99 / 100).min(latencies.len() - 1)];
    println!(
        "{attack}: {GOOD_CALLS} good Sign calls served; p50 {:?}, p99 {p99:?}, max {:?}",
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1]
    );
    p99
}

/// (a) One connection of an identity that no policy names opens 600 calls whose request
/// never arrives. HTTP/2 lets it have 16 open at once (MAX_CONCURRENT_STREAMS); the rest wait
/// in its own client. The broker's 64 in-flight permits are not all taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn streams_that_never_end_on_one_connection_do_not_starve_others() {
    let started = Instant::now();
    let broker = broker_with_key().await;
    let stranger = broker.channel("stranger").await.unwrap();
    let mut hanging = Vec::new();
    for _ in 0..600 {
        hanging.push(tokio::spawn(never_ending_call(stranger.clone())));
    }
    let p99 = well_behaved_workload_is_served(&broker, "(a) 600 endless streams").await;
    // The attack was live the whole time: its calls are still open or waiting, except those
    // the broker refused for going over the stream limit; none was served.
    let mut ended = Vec::new();
    for handle in hanging {
        if handle.is_finished() {
            ended.push(handle.await.unwrap());
        } else {
            handle.abort();
        }
    }
    println!("(a) {} endless calls ended early: {ended:?}", ended.len());
    assert!(ended.len() < 600 - 16, "the attack did not hold");
    assert!(ended.iter().all(Result::is_err), "{ended:?}");
    assert!(p99 <= CALL_DEADLINE);
    assert!(started.elapsed() < ATTACK_BOUND, "{:?}", started.elapsed());
}

/// (a') The same identity on 12 connections, 16 endless calls on each: 192 calls, more than
/// the broker's 64 in flight. The identity may hold 64 calls (`max_calls_per_identity`)
/// whichever connections they come on; the rest are refused at once with
/// `RESOURCE_EXHAUSTED`, and the workload is served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn endless_calls_on_many_connections_of_one_identity_do_not_starve_others() {
    let started = Instant::now();
    let broker = broker_with_key().await;
    let mut hanging = Vec::new();
    for _ in 0..12 {
        let connection = broker.channel("stranger").await.unwrap();
        for _ in 0..16 {
            hanging.push(tokio::spawn(never_ending_call(connection.clone())));
        }
    }
    // Wait until the broker has refused every call past the identity's allowance.
    let deadline = Instant::now() + ATTACK_BOUND;
    while hanging.iter().filter(|h| h.is_finished()).count() < 192 - 64 {
        assert!(
            Instant::now() < deadline,
            "the identity bound did not refuse"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let p99 =
        well_behaved_workload_is_served(&broker, "(a') 192 endless calls, 12 connections").await;
    let mut refused = 0;
    let mut open = 0;
    for handle in hanging {
        if handle.is_finished() {
            let status = handle.await.unwrap().unwrap_err();
            assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
            refused += 1;
        } else {
            handle.abort();
            open += 1;
        }
    }
    println!("(a') {refused} refused, {open} held open by the attacker");
    assert_eq!(open, 64, "the identity holds exactly its allowance");
    assert!(p99 <= CALL_DEADLINE);
    assert!(started.elapsed() < ATTACK_BOUND, "{:?}", started.elapsed());
}

/// A Sign call whose request body never comes: the handler never runs, so nothing is
/// authorized, but the stream stays open until the request timeout.
async fn never_ending_call(channel: Channel) -> Result<(), tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let path = http::uri::PathAndQuery::from_static("/keybroker.v1.KeyService/Sign");
    let codec = tonic_prost::ProstCodec::<pb::SignRequest, pb::SignResponse>::default();
    let body = tokio_stream::pending::<pb::SignRequest>();
    grpc.client_streaming(tonic::Request::new(body), path, codec)
        .await
        .map(|_| ())
}

/// (b) 1,024 TCP sockets from 127.0.0.2 that never start a handshake. That address gets 8
/// handshakes in flight; the others are closed at once, and the 8 after 3 seconds. New
/// connections from another address are served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn silent_sockets_take_only_their_own_address_budget() {
    let started = Instant::now();
    let broker = broker_with_key().await;
    let addr: SocketAddr = broker.addr.parse().unwrap();
    let mut silent = Vec::new();
    for _ in 0..1024 {
        let connect = connect_from([127, 0, 0, 2], addr);
        if let Ok(Ok(stream)) = tokio::time::timeout(Duration::from_secs(5), connect).await {
            silent.push(stream);
        }
    }
    assert!(
        silent.len() > 900,
        "only {} sockets connected",
        silent.len()
    );
    let p99 = well_behaved_workload_is_served(&broker, "(b) 1,024 silent sockets").await;
    assert!(p99 <= CALL_DEADLINE);
    // None is held: each one is closed by the broker, at once or at the handshake timeout.
    let deadline = Instant::now() + ATTACK_BOUND;
    for stream in &mut silent {
        closed_by_broker(stream, deadline).await;
    }
    assert!(started.elapsed() < ATTACK_BOUND, "{:?}", started.elapsed());
}

/// (c) About 1,000 TLS connections, with a valid certificate, that never make a call. All are
/// established (the cap is 1,500), the workload is served meanwhile, and the idle timeout
/// closes every one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idle_tls_connections_are_closed_and_do_not_starve_others() {
    let started = Instant::now();
    let broker = broker_with_key().await;
    let addr: SocketAddr = broker.addr.parse().unwrap();
    let connector = Arc::new(stranger_connector(&broker));
    // Eight source addresses, eight handshakes each in flight: within the per-address budget.
    let mut waves = tokio::task::JoinSet::new();
    for source in 3..11u8 {
        let connector = connector.clone();
        waves.spawn(async move {
            let mut held = Vec::new();
            for _ in 0..125 {
                let tcp = connect_from([127, 0, 0, source], addr).await.unwrap();
                let name = ServerName::try_from("localhost").unwrap();
                held.push(connector.connect(name, tcp).await.unwrap());
            }
            held
        });
    }
    let mut idle = Vec::new();
    while let Some(wave) = waves.join_next().await {
        idle.extend(wave.unwrap());
    }
    assert_eq!(idle.len(), 1000);
    let p99 = well_behaved_workload_is_served(&broker, "(c) 1,000 idle TLS connections").await;
    assert!(p99 <= CALL_DEADLINE);
    let deadline = Instant::now() + ATTACK_BOUND;
    for stream in &mut idle {
        closed_by_broker(stream, deadline).await;
    }
    println!(
        "(c) all 1,000 idle connections closed after {:?}",
        started.elapsed()
    );
    assert!(started.elapsed() < ATTACK_BOUND, "{:?}", started.elapsed());
}

/// A raw TLS 1.3 client with the `stranger` certificate (valid, named by no policy).
fn stranger_connector(broker: &BrokerProcess) -> tokio_rustls::TlsConnector {
    broker::tls::install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(&broker.pem("ca.pem")).unwrap())
        .unwrap();
    let chain = vec![CertificateDer::from_pem_slice(&broker.pem("stranger.pem")).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(&broker.pem("stranger-key.pem")).unwrap();
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

async fn connect_from(from: [u8; 4], server: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((from, 0)))?;
    socket.connect(server).await
}

/// Reads until the broker closes the stream (EOF or reset); panics at `deadline`.
async fn closed_by_broker<S: tokio::io::AsyncRead + Unpin>(stream: &mut S, deadline: Instant) {
    let mut buf = [0u8; 256];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(_)) => continue, // session tickets, HTTP/2 settings
            Err(_) => panic!("a connection was still open at the deadline"),
        }
    }
}

/// (d) A batch of slow signatures cannot hold the token's only session: single signs on
/// another key are served between its parts. Were the batch one task, the first single
/// sign queued behind it would return only after the whole batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_of_rsa_4096_signatures_does_not_hold_the_session_from_other_calls() {
    let broker = BrokerProcess::start_with(BrokerOptions {
        hsm_sessions: 1,
        ..BrokerOptions::default()
    });
    let mut admin = broker.keys("admin").await;
    for (name, algorithm) in [("slow", A::Rsa4096), ("quick", A::EcP256)] {
        admin
            .create_key(create(name, algorithm, P::SignVerify, "softhsm"))
            .await
            .unwrap();
    }
    // 96 RSA-4096 signatures: about a second of the session's time.
    let mut batcher = KeyServiceClient::new(broker.channel("admin").await.unwrap());
    let batch = tokio::spawn(async move {
        let started = Instant::now();
        batcher
            .sign_batch(pb::SignBatchRequest {
                name: "slow".into(),
                digests: (0..96u8).map(|i| vec![i; 32]).collect(),
                scheme: pb::SignatureScheme::Default as i32,
            })
            .await
            .unwrap();
        started.elapsed()
    });
    let mut signer = KeyServiceClient::new(broker.channel("admin").await.unwrap());
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    for i in 0..10u8 {
        let call = Instant::now();
        signer
            .sign(pb::SignRequest {
                name: "quick".into(),
                input: Some(pb::sign_request::Input::Digest(vec![i; 32])),
                scheme: pb::SignatureScheme::Default as i32,
            })
            .await
            .unwrap();
        slowest = slowest.max(call.elapsed());
    }
    let singles = started.elapsed();
    assert!(
        !batch.is_finished(),
        "ten single signs took {singles:?}: as long as the whole batch"
    );
    let batch_took = batch.await.unwrap();
    println!(
        "(d) 10 single signs in {singles:?} (slowest {slowest:?}) beside a batch of {batch_took:?}"
    );
}
