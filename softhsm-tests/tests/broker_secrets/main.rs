//! End to end: secrets put by an administrator, kept envelope-encrypted under a key that
//! never leaves the real broker's SoftHSM2 token, and released with HPKE to the KEM key
//! an attested workload's evidence bound; opened by the agent and by an independent HPKE
//! implementation (`tests/hpke_open.py`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod cli;
#[path = "../common/mod.rs"]
mod common;
mod refusals;
mod release;

use attest::binding::{bound_keys, snp_report_data};
use attest::challenge::Nonce;
use attest::release::KemKeyPair;
use common::{BrokerProcess, TRUSTED_MEASUREMENT, with_token};
use enclave::key::EphemeralKey;
use keybroker_api::v1 as pb;
use pb::attestation_service_client::AttestationServiceClient;
use pb::secret_service_client::SecretServiceClient;
use tonic::Code;
use tonic::transport::Channel;

const WORKLOAD: &str = "spiffe://test.keybroker/workload";

async fn secrets(broker: &BrokerProcess, who: &str) -> SecretServiceClient<Channel> {
    SecretServiceClient::new(broker.channel(who).await.unwrap())
}

/// Puts `name` = `value` as the admin.
async fn put(broker: &BrokerProcess, name: &str, value: &[u8]) -> pb::SecretVersionInfo {
    secrets(broker, "admin")
        .await
        .put_secret(pb::PutSecretRequest {
            name: name.into(),
            value: value.to_vec(),
            description: format!("test secret {name}"),
        })
        .await
        .unwrap()
        .into_inner()
}

/// An attested workload: its keys, its token (with the KEM key when `kem` is set), and
/// a certificate for its signing key installed as `pki/<name>.pem`, so that
/// `broker.channel(name)` proves it holds the key the token is bound to.
struct Attested {
    kem: KemKeyPair,
    token: String,
}

async fn attested(
    broker: &BrokerProcess,
    name: &str,
    measurement: &str,
    with_kem: bool,
) -> Attested {
    let key = EphemeralKey::generate().unwrap();
    let kem = KemKeyPair::generate();
    let kem_public = with_kem.then(|| kem.public());
    let mut att = AttestationServiceClient::new(broker.channel("workload").await.unwrap());
    let challenge = att
        .get_challenge(pb::GetChallengeRequest {})
        .await
        .unwrap()
        .into_inner();
    let nonce = Nonce::from_slice(&challenge.nonce).unwrap();
    let bound = bound_keys(key.spki_der(), kem_public.as_ref());
    let answer = att
        .attest(pb::AttestRequest {
            nonce: nonce.as_bytes().to_vec(),
            ephemeral_public_key: key.spki_der().to_vec(),
            evidence: Some(pb::attest_request::Evidence::Dev(pb::DevEvidence {
                report_data: snp_report_data(&nonce, &bound).to_vec(),
                measurement: measurement.into(),
            })),
            csr_der: key.csr_der(WORKLOAD).unwrap(),
            certificate_ttl_seconds: 600,
            kem_public_key: kem_public
                .map(|k| k.as_bytes().to_vec())
                .unwrap_or_default(),
        })
        .await
        .unwrap()
        .into_inner();
    install_identity(broker, name, &answer.certificate.unwrap().chain_der, &key);
    Attested {
        kem,
        token: answer.token,
    }
}

/// A token for a fresh KEM key and the key of `workload`'s own bootstrap certificate, so
/// that it works on `workload`'s bootstrap connection: for evidence the policy gives no
/// certificate (a measurement it does not trust).
async fn attested_on_bootstrap(broker: &BrokerProcess, measurement: &str) -> Attested {
    let pem = std::fs::read(broker.dir.path().join("pki/workload.pem")).unwrap();
    let (_, block) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
    let spki = block.parse_x509().unwrap().public_key().raw.to_vec();
    let kem = KemKeyPair::generate();
    let mut att = AttestationServiceClient::new(broker.channel("workload").await.unwrap());
    let challenge = att
        .get_challenge(pb::GetChallengeRequest {})
        .await
        .unwrap()
        .into_inner();
    let nonce = Nonce::from_slice(&challenge.nonce).unwrap();
    let bound = bound_keys(&spki, Some(&kem.public()));
    let token = att
        .attest(pb::AttestRequest {
            nonce: nonce.as_bytes().to_vec(),
            ephemeral_public_key: spki,
            evidence: Some(pb::attest_request::Evidence::Dev(pb::DevEvidence {
                report_data: snp_report_data(&nonce, &bound).to_vec(),
                measurement: measurement.into(),
            })),
            kem_public_key: kem.public().as_bytes().to_vec(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .token;
    Attested { kem, token }
}

fn pem(label: &str, der: &[u8]) -> String {
    der::pem::encode_string(label, der::pem::LineEnding::LF, der).unwrap()
}

fn install_identity(broker: &BrokerProcess, name: &str, chain: &[Vec<u8>], key: &EphemeralKey) {
    use secrecy::ExposeSecret;
    use std::os::unix::fs::PermissionsExt;
    let pki = broker.dir.path().join("pki");
    let chain_pem: String = chain.iter().map(|c| pem("CERTIFICATE", c)).collect();
    std::fs::write(pki.join(format!("{name}.pem")), chain_pem).unwrap();
    let key_path = pki.join(format!("{name}-key.pem"));
    std::fs::write(&key_path, key.private_key_pem().expose_secret()).unwrap();
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// `GetSecret` on `who`'s connection, presenting `token`.
async fn get(
    broker: &BrokerProcess,
    who: &str,
    token: Option<&str>,
    name: &str,
    version: u32,
) -> Result<pb::SealedSecret, tonic::Status> {
    let message = pb::GetSecretRequest {
        name: name.into(),
        version,
    };
    let request = match token {
        Some(token) => with_token(message, token),
        None => tonic::Request::new(message),
    };
    Ok(secrets(broker, who)
        .await
        .get_secret(request)
        .await?
        .into_inner())
}
