//! End to end: client certificates that stop being good while the broker runs. One that
//! expires while its connection is open stops working on that connection; one revoked by a
//! CRL is refused, whether the CRL was there at start or arrived with a SIGHUP.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::{Duration, Instant, SystemTime};

use common::{BrokerOptions, BrokerProcess, TransportOptions, create};
use keybroker_api::v1 as pb;
use pb::KeyAlgorithm as A;
use pb::KeyPurpose as P;
use pb::key_service_client::KeyServiceClient;
use tonic::Code;
use tonic::transport::Channel;

const KEY: &str = "transport-signing";
/// A bound for waiting on the broker's state; reached only on failure.
const WAIT_BOUND: Duration = Duration::from_secs(60);
/// Between two looks at the broker's state.
const POLL: Duration = Duration::from_millis(200);

fn sign_request() -> pb::SignRequest {
    pb::SignRequest {
        name: KEY.into(),
        input: Some(pb::sign_request::Input::Message(b"m".to_vec())),
        scheme: pb::SignatureScheme::Default as i32,
    }
}

async fn sign(channel: &Channel) -> Result<(), tonic::Status> {
    KeyServiceClient::new(channel.clone())
        .sign(sign_request())
        .await
        .map(|_| ())
}

/// Whether `who` can open a connection and make a call now.
async fn served(broker: &BrokerProcess, who: &str) -> bool {
    match broker.channel(who).await {
        Ok(channel) => sign(&channel).await.is_ok(),
        Err(_) => false,
    }
}

async fn start(client_crl: bool) -> BrokerProcess {
    let broker = BrokerProcess::start_with_transport(
        BrokerOptions::default(),
        TransportOptions {
            server_lines: String::new(),
            client_crl,
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

#[tokio::test(flavor = "multi_thread")]
async fn a_certificate_that_expires_on_an_open_connection_stops_working_there() {
    let broker = start(false).await;
    let now = SystemTime::now();
    broker.issue_client(
        "short-lived",
        "/workload",
        now - Duration::from_secs(60),
        now + Duration::from_secs(4),
    );
    let channel = broker.channel("short-lived").await.unwrap();
    sign(&channel).await.unwrap();
    // The same connection, until the certificate's notAfter has passed.
    let deadline = Instant::now() + WAIT_BOUND;
    let refusal = loop {
        match sign(&channel).await {
            Ok(()) => {}
            Err(status) => break status,
        }
        assert!(
            Instant::now() < deadline,
            "still served after {WAIT_BOUND:?}"
        );
        tokio::time::sleep(POLL).await;
    };
    // Refused by the per-call check (a new handshake would fail differently).
    assert_eq!(refusal.code(), Code::Unauthenticated, "{refusal}");
    assert!(refusal.message().contains("expired"), "{refusal}");
    assert!(
        SystemTime::now() + Duration::from_secs(1) >= now + Duration::from_secs(4),
        "refused before the certificate expired"
    );
    // Others are unaffected.
    assert!(served(&broker, "workload").await);
}

#[tokio::test(flavor = "multi_thread")]
async fn revoked_certificates_are_refused_at_start_and_after_a_sighup() {
    let mut broker = start(true).await;
    let now = SystemTime::now();
    let day = Duration::from_secs(86_400);
    let early = broker.issue_client("revoked-early", "/workload", now - day, now + day);
    let late = broker.issue_client("revoked-late", "/workload", now - day, now + day);
    assert!(served(&broker, "revoked-early").await);
    let crl_path = broker.dir.path().join("pki/crl.pem");

    // A CRL in place at start.
    let crl = broker
        .pki
        .revocation_list(&[early.cert_pem()], 2, now + day)
        .unwrap();
    std::fs::write(&crl_path, crl).unwrap();
    broker.restart();
    assert!(!served(&broker, "revoked-early").await);
    assert!(served(&broker, "revoked-late").await);
    assert!(served(&broker, "workload").await);

    // Revoked while running: a new CRL and a SIGHUP.
    let crl = broker
        .pki
        .revocation_list(&[early.cert_pem(), late.cert_pem()], 3, now + day)
        .unwrap();
    std::fs::write(&crl_path, crl).unwrap();
    let reloads_before = broker.log().matches("client CRLs reloaded").count();
    broker.signal("HUP");
    let deadline = Instant::now() + WAIT_BOUND;
    while broker.log().matches("client CRLs reloaded").count() == reloads_before {
        assert!(
            Instant::now() < deadline,
            "no reload logged:\n{}",
            broker.log()
        );
        tokio::time::sleep(POLL).await;
    }
    assert!(!served(&broker, "revoked-late").await);
    assert!(!served(&broker, "revoked-early").await);
    assert!(served(&broker, "workload").await);
    assert!(broker.log().contains("client certificate refused"));

    // A CRL that does not parse is logged and the lists in force stay.
    std::fs::write(
        &crl_path,
        "-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n",
    )
    .unwrap();
    broker.signal("HUP");
    let deadline = Instant::now() + WAIT_BOUND;
    while !broker.log().contains("client CRLs not reloaded") {
        assert!(
            Instant::now() < deadline,
            "no failure logged:\n{}",
            broker.log()
        );
        tokio::time::sleep(POLL).await;
    }
    assert!(!served(&broker, "revoked-late").await);
    assert!(served(&broker, "workload").await);
}
