//! Attestation while the broker starts: its token keys are found once it serves (one
//! listing of the token, shared with the orphan scan), so key operations never wait for
//! them. Until they are found, attestation answers `UNAVAILABLE`, never a refusal that
//! would send a workload to attest again, and the broker has not printed "ready".

use std::time::{Duration, Instant};

use broker::store::Algorithm;
use common::fill::{TokenFiller, random_id};
use common::{TOKEN_LABEL, USER_PIN, eventually};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use super::*;

/// The id and label of a token-signing key's ninth version (`broker/src/attestation`).
const PLANTED_ID: &[u8] = b"kbsys:attestation-token:9";
const PLANTED_LABEL: &str = "kbsys:attestation-token:v9:0";

fn sign_request(name: &str) -> pb::SignRequest {
    pb::SignRequest {
        name: name.into(),
        input: Some(pb::sign_request::Input::Message(b"m".to_vec())),
        scheme: pb::SignatureScheme::Default as i32,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn on_a_large_token_keys_serve_at_once_and_attestation_waits_for_its_keys() {
    let mut broker = BrokerProcess::start();
    vault_key(&broker).await;
    broker.create_signing_key("early").await;
    let token = attest_dev(&broker, "workload").await;
    broker.stop();
    let other = TokenFiller::open(broker.hsm.module_path(), TOKEN_LABEL, USER_PIN);
    for i in 0..1_000 {
        other.generate(&random_id(), &format!("other-app:{i}"), Algorithm::EcP256);
    }
    drop(other);

    let spawned = Instant::now();
    let ready = broker.spawn_listening();
    // Attest asked at once waits for the keys, and its token verifies against the same
    // key as before the restart.
    let fresh = attest_dev(&broker, "workload").await;
    let ready = ready.recv_timeout(Duration::from_secs(60)).unwrap();
    assert!(ready > spawned, "\"ready\" follows the start");
    assert_eq!(
        attest::token::key_id(&fresh).unwrap(),
        attest::token::key_id(&token).unwrap(),
        "the same token key, found again"
    );
    // The token from before the restart still unlocks the gated key, and keys sign.
    let mut keys = broker.keys("workload").await;
    keys.encrypt(with_token(encrypt("vault"), &token))
        .await
        .unwrap();
    keys.sign(sign_request("early")).await.unwrap();
    // The scan, which shared the listing, found nothing of the broker's.
    let scanned = eventually(Duration::from_secs(60), || async {
        broker.log().contains("orphan scan finished orphans=0 ")
    })
    .await;
    assert!(scanned, "{}", broker.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_foreign_object_with_a_token_key_label_stops_attestation_only_until_it_is_removed() {
    let mut broker = BrokerProcess::start();
    vault_key(&broker).await;
    broker.create_signing_key("signer").await;
    let token = attest_dev(&broker, "workload").await;
    broker.stop();
    // An AES key where the ninth token-signing key would be: it must never be taken for
    // one, and finding the keys fails until it is gone.
    let planter = TokenFiller::open(broker.hsm.module_path(), TOKEN_LABEL, USER_PIN);
    planter.generate(PLANTED_ID, PLANTED_LABEL, Algorithm::Aes256);

    let ready = broker.spawn_listening();
    // Key operations do not depend on attestation.
    let mut keys = broker.keys("workload").await;
    keys.sign(sign_request("signer")).await.unwrap();
    // Attestation is unavailable: the log says why, the caller only that it failed. A
    // valid token is not called invalid.
    let mut att = attestation(&broker, "workload").await;
    let err = att.get_jwks(pb::GetJwksRequest {}).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains("could not be found"), "{err:?}");
    assert!(!err.message().contains(PLANTED_LABEL), "{err:?}");
    assert!(
        broker.log().contains("not an EC P-256 signing key"),
        "the log names the cause"
    );
    let spki = client_spki(&broker, "workload");
    let nonce = challenge(&mut att).await;
    let err = att
        .attest(dev_request(&nonce, &spki, &spki, TRUSTED_MEASUREMENT))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    let err = keys
        .encrypt(with_token(encrypt("vault"), &token))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(
        ready.try_recv().is_err(),
        "not ready while the keys are not found"
    );
    assert_eq!(attestation_health(&broker).await, ServingStatus::NotServing);

    // Once the object is gone, the broker finds its keys by itself, without a restart.
    planter.destroy_labelled(PLANTED_LABEL);
    drop(planter);
    ready.recv_timeout(Duration::from_secs(60)).unwrap();
    // The challenge was not redeemed by the refused call: it still works.
    att.attest(dev_request(&nonce, &spki, &spki, TRUSTED_MEASUREMENT))
        .await
        .unwrap();
    keys.encrypt(with_token(encrypt("vault"), &token))
        .await
        .unwrap();
    assert_eq!(attestation_health(&broker).await, ServingStatus::Serving);
}

/// `AttestationService`'s gRPC health, asked as a readiness probe would.
async fn attestation_health(broker: &BrokerProcess) -> ServingStatus {
    let mut health = HealthClient::new(broker.channel("workload").await.unwrap());
    let answer = health
        .check(HealthCheckRequest {
            service: "keybroker.v1.AttestationService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    ServingStatus::try_from(answer.status).unwrap()
}
