//! An attested workload as the tests and benches make one: a fresh signing key and KEM
//! key, development evidence binding both, and one `Attest` that also returns a
//! certificate, installed as `pki/<name>.pem` so that `BrokerProcess::channel(name)`
//! connects with it and proves the key the token is bound to.

use attest::binding::{bound_keys, snp_report_data};
use attest::challenge::Nonce;
use attest::release::{KemKeyPair, KemPublicKey};
use enclave::key::EphemeralKey;
use keybroker_api::v1 as pb;
use pb::attestation_service_client::AttestationServiceClient;

use super::{BrokerProcess, TRUST_DOMAIN};

/// What [`attest_workload`] made.
pub struct AttestedWorkload {
    pub key: EphemeralKey,
    pub kem: KemKeyPair,
    pub token: String,
    pub issued: pb::IssueCertificateResponse,
}

/// `Attest` on `workload`'s bootstrap connection, with development evidence of
/// `measurement` binding `spki` and `kem`, sending `csr_der` (none if empty).
async fn dev_attest(
    broker: &BrokerProcess,
    spki: &[u8],
    kem: Option<&KemPublicKey>,
    measurement: &str,
    csr_der: Vec<u8>,
) -> pb::AttestResponse {
    let mut att = AttestationServiceClient::new(broker.channel("workload").await.unwrap());
    let challenge = att
        .get_challenge(pb::GetChallengeRequest {})
        .await
        .unwrap()
        .into_inner();
    let nonce = Nonce::from_slice(&challenge.nonce).unwrap();
    let bound = bound_keys(spki, kem);
    att.attest(pb::AttestRequest {
        nonce: nonce.as_bytes().to_vec(),
        ephemeral_public_key: spki.to_vec(),
        evidence: Some(pb::attest_request::Evidence::Dev(pb::DevEvidence {
            report_data: snp_report_data(&nonce, &bound).to_vec(),
            measurement: measurement.into(),
        })),
        csr_der,
        certificate_ttl_seconds: 3600,
        kem_public_key: kem.map(|k| k.as_bytes().to_vec()).unwrap_or_default(),
    })
    .await
    .unwrap()
    .into_inner()
}

/// Attests on `workload`'s bootstrap connection with development evidence of
/// `measurement`, a KEM key if `with_kem`, and a CSR; installs the certificate as
/// `pki/<name>.pem`.
pub async fn attest_workload(
    broker: &BrokerProcess,
    name: &str,
    measurement: &str,
    with_kem: bool,
) -> AttestedWorkload {
    let key = EphemeralKey::generate().unwrap();
    let kem = KemKeyPair::generate();
    let kem_public = with_kem.then(|| kem.public());
    let spiffe_id = format!("spiffe://{TRUST_DOMAIN}/workload");
    let csr = key.csr_der(&spiffe_id).unwrap();
    let answer = dev_attest(
        broker,
        key.spki_der(),
        kem_public.as_ref(),
        measurement,
        csr,
    )
    .await;
    let issued = answer.certificate.unwrap();
    install_identity(broker, name, &issued.chain_der, &key);
    AttestedWorkload {
        key,
        kem,
        token: answer.token,
        issued,
    }
}

/// A fresh KEM key and a token for it and the key of `workload`'s own bootstrap
/// certificate, so that the token works on `workload`'s bootstrap connection: for
/// evidence the policy gives no certificate (a measurement it does not trust).
pub async fn attest_bootstrap_key(
    broker: &BrokerProcess,
    measurement: &str,
) -> (KemKeyPair, String) {
    let pem = std::fs::read(broker.dir.path().join("pki/workload.pem")).unwrap();
    let (_, block) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
    let spki = block.parse_x509().unwrap().public_key().raw.to_vec();
    let kem = KemKeyPair::generate();
    let answer = dev_attest(broker, &spki, Some(&kem.public()), measurement, Vec::new()).await;
    (kem, answer.token)
}

/// A DER object as PEM.
pub fn pem(label: &str, der: &[u8]) -> String {
    der::pem::encode_string(label, der::pem::LineEnding::LF, der).unwrap()
}

/// Writes an issued chain and its key as `pki/<name>.pem` and `pki/<name>-key.pem` (0600),
/// so that [`BrokerProcess::channel`] connects with them.
pub fn install_identity(broker: &BrokerProcess, name: &str, chain: &[Vec<u8>], key: &EphemeralKey) {
    use secrecy::ExposeSecret;
    use std::os::unix::fs::PermissionsExt;
    let pki = broker.dir.path().join("pki");
    let chain_pem: String = chain.iter().map(|c| pem("CERTIFICATE", c)).collect();
    std::fs::write(pki.join(format!("{name}.pem")), chain_pem).unwrap();
    let key_path = pki.join(format!("{name}-key.pem"));
    std::fs::write(&key_path, key.private_key_pem().expose_secret()).unwrap();
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// `keybroker-agent` with the bootstrap identity `workload` of `broker`.
pub fn agent_command(broker: &BrokerProcess) -> std::process::Command {
    let pki = broker.dir.path().join("pki");
    let mut command = std::process::Command::new(super::agent_binary());
    command
        .arg("--endpoint")
        .arg(format!("https://localhost:{}", broker.port()))
        .arg("--server-ca")
        .arg(pki.join("ca.pem"))
        .arg("--cert")
        .arg(pki.join("workload.pem"))
        .arg("--key")
        .arg(pki.join("workload-key.pem"));
    command
}

/// [`agent_command`] with development evidence of `measurement`.
pub fn dev_agent_command(broker: &BrokerProcess, measurement: &str) -> std::process::Command {
    let mut command = agent_command(broker);
    command.args(["--evidence", "dev", "--dev-measurement", measurement]);
    command
}

/// An attested workload's connection with its issued certificate, its token and the KEM
/// key its answers open with, as the benches call it.
#[derive(Clone)]
pub struct Holder {
    pub channel: tonic::transport::Channel,
    pub token: String,
    pub kem: std::sync::Arc<KemKeyPair>,
}

/// [`attest_workload`] with the trusted measurement, then a connection as `name`.
pub async fn attested_holder(broker: &BrokerProcess, name: &str) -> Holder {
    let w = attest_workload(broker, name, super::TRUSTED_MEASUREMENT, true).await;
    Holder {
        channel: broker.channel(name).await.unwrap(),
        token: w.token,
        kem: std::sync::Arc::new(w.kem),
    }
}
