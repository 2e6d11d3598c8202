//! End to end: attested workloads trade their bootstrap certificate for a short-lived
//! certificate of their attested key, signed by the CA key in the real broker's SoftHSM2
//! token, and get workload JWTs that outside verifiers check.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod agent;
#[path = "../common/mod.rs"]
mod common;
mod flow;
mod intermediate;
mod one_call;
mod outside;
mod refusals;

use attest::binding::snp_report_data;
use attest::challenge::Nonce;
use common::workload::{install_identity, pem};
use common::{BrokerProcess, TRUSTED_MEASUREMENT, encrypt, vault_key, with_token};
use enclave::key::EphemeralKey;
use keybroker_api::v1 as pb;
use pb::attestation_service_client::AttestationServiceClient;
use pb::identity_service_client::IdentityServiceClient;
use tonic::Code;
use tonic::transport::Channel;

const WORKLOAD: &str = "spiffe://test.keybroker/workload";

async fn identity(broker: &BrokerProcess, who: &str) -> IdentityServiceClient<Channel> {
    IdentityServiceClient::new(broker.channel(who).await.unwrap())
}

/// Attests `key` with development evidence over `who`'s connection: the token, bound to
/// `key`.
async fn attest_key(broker: &BrokerProcess, who: &str, key: &EphemeralKey) -> String {
    attest_spki(broker, who, key.spki_der(), TRUSTED_MEASUREMENT)
        .await
        .unwrap()
}

async fn attest_spki(
    broker: &BrokerProcess,
    who: &str,
    spki: &[u8],
    measurement: &str,
) -> Result<String, tonic::Status> {
    let mut att = AttestationServiceClient::new(broker.channel(who).await.unwrap());
    let challenge = att
        .get_challenge(pb::GetChallengeRequest {})
        .await?
        .into_inner();
    let nonce = Nonce::from_slice(&challenge.nonce).unwrap();
    let request = pb::AttestRequest {
        nonce: nonce.as_bytes().to_vec(),
        ephemeral_public_key: spki.to_vec(),
        evidence: Some(pb::attest_request::Evidence::Dev(pb::DevEvidence {
            report_data: snp_report_data(&nonce, spki).to_vec(),
            measurement: measurement.into(),
        })),
        ..Default::default()
    };
    Ok(att.attest(request).await?.into_inner().token)
}

/// `IssueCertificate` over `who`'s connection, presenting `token` if given.
async fn issue(
    broker: &BrokerProcess,
    who: &str,
    csr_der: Vec<u8>,
    token: Option<&str>,
    ttl_seconds: u32,
) -> Result<pb::IssueCertificateResponse, tonic::Status> {
    let message = pb::IssueCertificateRequest {
        csr_der,
        ttl_seconds,
    };
    let request = match token {
        Some(token) => with_token(message, token),
        None => tonic::Request::new(message),
    };
    Ok(identity(broker, who)
        .await
        .issue_certificate(request)
        .await?
        .into_inner())
}

/// An attested workload: a fresh key, attested on the bootstrap connection, and a
/// certificate for it installed as `pki/<name>.pem`. Returns the key, the token and the
/// issue response.
async fn attested(
    broker: &BrokerProcess,
    name: &str,
    ttl_seconds: u32,
) -> (EphemeralKey, String, pb::IssueCertificateResponse) {
    let key = EphemeralKey::generate().unwrap();
    let token = attest_key(broker, "workload", &key).await;
    let issued = issue(
        broker,
        "workload",
        key.csr_der(WORKLOAD).unwrap(),
        Some(&token),
        ttl_seconds,
    )
    .await
    .unwrap();
    install_identity(broker, name, &issued.chain_der, &key);
    (key, token, issued)
}
