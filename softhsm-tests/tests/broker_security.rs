//! End to end: who may call the broker, and how it answers bad requests and crashes.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::{Duration, SystemTime};

use broker::tls::devpki::DevPki;
use common::{BrokerProcess, create};
use keybroker_api::v1 as pb;
use pb::KeyAlgorithm as A;
use pb::KeyPurpose as P;
use pb::key_service_client::KeyServiceClient;
use tonic::Code;

async fn list(
    broker: &BrokerProcess,
    channel: tonic::transport::Channel,
) -> Result<(), tonic::Status> {
    let _ = broker;
    KeyServiceClient::new(channel)
        .list_keys(pb::ListKeysRequest::default())
        .await
        .map(|_| ())
}

#[tokio::test(flavor = "multi_thread")]
async fn clients_without_a_valid_certificate_get_no_service() {
    let broker = BrokerProcess::start();
    let port = broker.addr.rsplit(':').next().unwrap().to_string();
    let ca = std::fs::read(broker.dir.path().join("pki/ca.pem")).unwrap();
    // No client certificate at all.
    let endpoint = tonic::transport::Endpoint::from_shared(format!("https://localhost:{port}"))
        .unwrap()
        .tls_config(
            tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(&ca)),
        )
        .unwrap();
    let refused = match endpoint.connect().await {
        Ok(channel) => list(&broker, channel).await.is_err(),
        Err(_) => true,
    };
    assert!(refused, "a client without a certificate was served");
    // A certificate from another CA.
    let other = DevPki::generate(common::TRUST_DOMAIN, &["localhost".into()]).unwrap();
    let now = SystemTime::now();
    let day = Duration::from_secs(86_400);
    let foreign = other.issue_client("/admin", now - day, now + day).unwrap();
    let result = broker::tls::client_channel(
        &format!("https://localhost:{port}"),
        &ca,
        foreign.cert_pem().as_bytes(),
        foreign.key_pem().as_bytes(),
    )
    .await;
    let refused = match result {
        Ok(channel) => list(&broker, channel).await.is_err(),
        Err(_) => true,
    };
    assert!(refused, "a certificate from another CA was served");
    // An expired certificate from the right CA.
    let refused = match broker.channel("expired").await {
        Ok(channel) => list(&broker, channel).await.is_err(),
        Err(_) => true,
    };
    assert!(refused, "an expired certificate was served");
    // The broker still serves a good client.
    list(&broker, broker.channel("admin").await.unwrap())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn policy_refuses_unnamed_identities_and_operations_outside_a_grant() {
    let broker = BrokerProcess::start();
    let mut admin = broker.keys("admin").await;
    admin
        .create_key(create("pay", A::EcP256, P::SignVerify, "softhsm"))
        .await
        .unwrap();
    let mut other = create("other-team", A::EcP256, P::SignVerify, "softhsm");
    other.tags = [("team".to_string(), "billing".to_string())].into();
    admin.create_key(other).await.unwrap();

    let sign = |name: &str| pb::SignRequest {
        name: name.into(),
        input: Some(pb::sign_request::Input::Message(b"m".to_vec())),
        scheme: 0,
    };
    // The workload may sign with its team's key...
    let mut workload = broker.keys("workload").await;
    workload.sign(sign("pay")).await.unwrap();
    // ...but not with another team's, not create keys, not rotate, not list.
    for status in [
        workload.sign(sign("other-team")).await.unwrap_err(),
        workload
            .create_key(create("mine", A::EcP256, P::SignVerify, "softhsm"))
            .await
            .unwrap_err(),
        workload
            .rotate_key(pb::KeyRef { name: "pay".into() })
            .await
            .unwrap_err(),
        workload
            .list_keys(pb::ListKeysRequest::default())
            .await
            .unwrap_err(),
        // An unknown key is refused the same way: existence does not leak.
        workload.sign(sign("no-such-key")).await.unwrap_err(),
    ] {
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
        assert_eq!(status.message(), "permission denied");
    }
    // An identity the policy does not name gets nothing.
    let mut stranger = broker.keys("stranger").await;
    let status = stranger.sign(sign("pay")).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = stranger
        .list_keys(pb::ListKeysRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_get_clear_statuses_and_the_broker_keeps_serving() {
    let mut broker = BrokerProcess::start();
    let mut keys = broker.keys("admin").await;
    keys.create_key(create("k", A::EcP256, P::SignVerify, "softhsm"))
        .await
        .unwrap();
    // Unknown key.
    let s = keys
        .get_key(pb::KeyRef {
            name: "missing".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::NotFound, "{s:?}");
    // Malformed: unknown algorithm, bad name, wrong digest length, no input, bad purpose.
    let mut bad = create("x", A::EcP256, P::SignVerify, "softhsm");
    bad.algorithm = 99;
    let mut bad_purpose = create("y", A::Aes256, P::SignVerify, "softhsm");
    bad_purpose.tags.clear();
    for s in [
        keys.create_key(bad).await.unwrap_err(),
        keys.create_key(create("../etc", A::EcP256, P::SignVerify, "softhsm"))
            .await
            .unwrap_err(),
        keys.create_key(bad_purpose).await.unwrap_err(),
        keys.sign(pb::SignRequest {
            name: "k".into(),
            input: Some(pb::sign_request::Input::Digest(vec![0; 31])),
            scheme: 0,
        })
        .await
        .unwrap_err(),
        keys.sign(pb::SignRequest {
            name: "k".into(),
            input: None,
            scheme: 0,
        })
        .await
        .unwrap_err(),
        keys.sign(pb::SignRequest {
            name: "k".into(),
            input: Some(pb::sign_request::Input::Message(vec![1])),
            scheme: pb::SignatureScheme::RsaPss as i32,
        })
        .await
        .unwrap_err(),
        keys.decrypt(pb::DecryptRequest {
            name: "k".into(),
            ciphertext: b"garbage".to_vec(),
            aad: vec![],
        })
        .await
        .unwrap_err(),
    ] {
        assert!(
            matches!(s.code(), Code::InvalidArgument | Code::FailedPrecondition),
            "{s:?}"
        );
        assert!(!s.message().is_empty());
    }
    // A duplicate name.
    let s = keys
        .create_key(create("k", A::EcP256, P::SignVerify, "softhsm"))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::AlreadyExists);
    // Oversized: the broker takes at most 64 KiB per message here.
    let s = keys
        .sign(pb::SignRequest {
            name: "k".into(),
            input: Some(pb::sign_request::Input::Message(vec![0; 200_000])),
            scheme: 0,
        })
        .await
        .unwrap_err();
    assert!(
        matches!(s.code(), Code::ResourceExhausted | Code::OutOfRange),
        "{s:?}"
    );
    // Still serving, on the same connection.
    keys.sign(pb::SignRequest {
        name: "k".into(),
        input: Some(pb::sign_request::Input::Message(b"ok".to_vec())),
        scheme: 0,
    })
    .await
    .unwrap();
    assert!(broker.is_running());
}

/// What `grpcurl list` shows (docs/api.md), through the same reflection API.
#[tokio::test(flavor = "multi_thread")]
async fn server_reflection_lists_every_service() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let broker = BrokerProcess::start();
    let mut client = ServerReflectionClient::new(broker.channel("workload").await.unwrap());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = client
        .server_reflection_info(tokio_stream::once(request))
        .await
        .unwrap()
        .into_inner();
    let response = stream.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection answer: {response:?}");
    };
    let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "keybroker.v1.AdminService",
            "keybroker.v1.AttestationService",
            "keybroker.v1.IdentityService",
            "keybroker.v1.KeyService",
            "keybroker.v1.SecretService",
        ]
    );
}
