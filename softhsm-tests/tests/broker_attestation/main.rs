//! End to end: a workload attests to the real `keybroker` process over mTLS, receives an
//! HSM-signed attestation token, and presents it to use keys the policy gates on
//! attestation claims. Every refusal keeps the broker serving.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod binding;
#[path = "../common/mod.rs"]
mod common;
mod dev_mode;
mod flows;
mod startup;
mod tpm;

use attest::binding::{snp_report_data, tpm_extra_data};
use attest::challenge::Nonce;
use common::{
    BrokerOptions, BrokerProcess, ISSUER, TRUSTED_MEASUREMENT, appraisal_policy_enrolling, encrypt,
    vault_key, with_token,
};
use keybroker_api::v1 as pb;
use p256::pkcs8::EncodePublicKey;
use pb::attestation_service_client::AttestationServiceClient;
use pb::key_service_client::KeyServiceClient;
use softhsm_tests::Swtpm;
use tonic::Code;
use tonic::transport::Channel;
use tpm_backend::{PcrSelection, Tcti, TpmBackend, TpmConfig};

/// The SPKI DER of a PKCS#8 PEM P-256 private key (the test PKI's client keys).
fn key_spki(key_pem: &[u8]) -> Vec<u8> {
    use p256::pkcs8::DecodePrivateKey;
    let pem = std::str::from_utf8(key_pem).unwrap();
    p256::SecretKey::from_pkcs8_pem(pem)
        .unwrap()
        .public_key()
        .to_public_key_der()
        .unwrap()
        .as_bytes()
        .to_vec()
}

/// The key of `who`'s client certificate, SPKI DER: what its evidence binds when it
/// uses its token on that same connection (the token is bound to the key the evidence
/// binds). In a TEE, that key lives inside it.
fn client_spki(broker: &BrokerProcess, who: &str) -> Vec<u8> {
    key_spki(&std::fs::read(broker.dir.path().join(format!("pki/{who}-key.pem"))).unwrap())
}

/// Another P-256 key than any certificate's, SPKI DER.
fn ephemeral_spki(seed: u8) -> Vec<u8> {
    let secret = p256::SecretKey::from_slice(&[seed; 32]).unwrap();
    secret
        .public_key()
        .to_public_key_der()
        .unwrap()
        .as_bytes()
        .to_vec()
}

async fn attestation(broker: &BrokerProcess, who: &str) -> AttestationServiceClient<Channel> {
    AttestationServiceClient::new(broker.channel(who).await.unwrap())
}

async fn challenge(client: &mut AttestationServiceClient<Channel>) -> Nonce {
    let c = client
        .get_challenge(pb::GetChallengeRequest {})
        .await
        .unwrap()
        .into_inner();
    Nonce::from_slice(&c.nonce).unwrap()
}

fn dev_request(
    nonce: &Nonce,
    spki: &[u8],
    bound_to: &[u8],
    measurement: &str,
) -> pb::AttestRequest {
    pb::AttestRequest {
        nonce: nonce.as_bytes().to_vec(),
        ephemeral_public_key: spki.to_vec(),
        evidence: Some(pb::attest_request::Evidence::Dev(pb::DevEvidence {
            report_data: snp_report_data(nonce, bound_to).to_vec(),
            measurement: measurement.into(),
        })),
        ..Default::default()
    }
}

/// A trusted token for `who`, attested on `who`'s own connection.
async fn attest_dev(broker: &BrokerProcess, who: &str) -> String {
    let mut att = attestation(broker, who).await;
    let spki = client_spki(broker, who);
    let nonce = challenge(&mut att).await;
    att.attest(dev_request(&nonce, &spki, &spki, TRUSTED_MEASUREMENT))
        .await
        .unwrap()
        .into_inner()
        .token
}
