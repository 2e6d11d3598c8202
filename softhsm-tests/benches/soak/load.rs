//! The load of the memory soak (`benches/soak_memory.rs`): the keys it uses, and clients
//! that call the broker as `workload` (signing) or `admin` (encryption, TPM signing, data
//! keys, attestation) until told to stop, reconnecting every so many calls.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use attest::binding::snp_report_data;
use attest::challenge::Nonce;
use keybroker_api::v1 as pb;
use pb::KeyAlgorithm as A;
use pb::KeyPurpose as P;
use pb::attestation_service_client::AttestationServiceClient;
use pb::key_service_client::KeyServiceClient;
use sha2::Digest;
use tonic::transport::Channel;

use super::common::{BrokerProcess, TRUSTED_MEASUREMENT, create};

/// Calls made and refused, and connections opened, by all clients.
#[derive(Debug, Default)]
pub struct Counters {
    pub calls: AtomicU64,
    pub refused: AtomicU64,
    pub connections: AtomicU64,
}

const KEYS: [(&str, A, P, &str); 5] = [
    ("mem-sign", A::EcP256, P::SignVerify, "softhsm"),
    ("mem-aes", A::Aes256, P::EncryptDecrypt, "softhsm"),
    ("mem-rsa", A::Rsa2048, P::EncryptDecrypt, "softhsm"),
    ("mem-tpm-sign", A::EcP256, P::SignVerify, "swtpm"),
    ("mem-tpm-rsa", A::Rsa2048, P::EncryptDecrypt, "swtpm"),
];

pub async fn make_keys(broker: &BrokerProcess) {
    let mut admin = broker.keys("admin").await;
    for (name, alg, purpose, backend) in KEYS {
        admin
            .create_key(create(name, alg, purpose, backend))
            .await
            .unwrap();
    }
}

/// What a client needs to open connections as one identity, without the fixture.
#[derive(Clone)]
struct Connector {
    endpoint: String,
    ca: Vec<u8>,
    cert: Vec<u8>,
    key: Vec<u8>,
    /// The SPKI of the certificate's key, which development evidence binds.
    spki: Vec<u8>,
}

impl Connector {
    fn new(broker: &BrokerProcess, who: &str) -> Connector {
        use p256::pkcs8::{DecodePrivateKey, EncodePublicKey};
        let key = broker.pem(&format!("{who}-key.pem"));
        let spki = p256::SecretKey::from_pkcs8_pem(std::str::from_utf8(&key).unwrap())
            .unwrap()
            .public_key()
            .to_public_key_der()
            .unwrap()
            .as_bytes()
            .to_vec();
        Connector {
            endpoint: format!("https://localhost:{}", broker.port()),
            ca: broker.pem("ca.pem"),
            cert: broker.pem(&format!("{who}.pem")),
            key,
            spki,
        }
    }

    async fn connect(&self) -> Option<Channel> {
        broker::tls::client_channel(&self.endpoint, &self.ca, &self.cert, &self.key)
            .await
            .ok()
    }
}

/// Starts `clients` clients, half `workload` and half `admin`.
pub fn spawn(
    broker: &BrokerProcess,
    clients: usize,
    per_connection: u64,
    seed: u64,
    stop: &Arc<AtomicBool>,
    counters: &Arc<Counters>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let workload = Connector::new(broker, "workload");
    let admin = Connector::new(broker, "admin");
    (0..clients)
        .map(|i| {
            let signer = i % 2 == 0;
            let connector = if signer {
                workload.clone()
            } else {
                admin.clone()
            };
            let client = Client {
                signer,
                rng: softhsm_tests::soak::rng(seed.wrapping_add(i as u64)),
                spki: connector.spki.clone(),
            };
            let (stop, counters) = (stop.clone(), counters.clone());
            tokio::spawn(client.run(connector, per_connection, stop, counters))
        })
        .collect()
}

struct Client {
    signer: bool,
    rng: fastrand::Rng,
    spki: Vec<u8>,
}

type Call = Result<(), tonic::Status>;

impl Client {
    async fn run(
        mut self,
        connector: Connector,
        per_connection: u64,
        stop: Arc<AtomicBool>,
        counters: Arc<Counters>,
    ) {
        while !stop.load(Ordering::Relaxed) {
            let Some(channel) = connector.connect().await else {
                counters.refused.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            counters.connections.fetch_add(1, Ordering::Relaxed);
            let mut keys = KeyServiceClient::new(channel.clone());
            let mut att = AttestationServiceClient::new(channel);
            for _ in 0..per_connection {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let result = if self.signer {
                    self.workload_call(&mut keys).await
                } else {
                    self.admin_call(&mut keys, &mut att).await
                };
                counters.calls.fetch_add(1, Ordering::Relaxed);
                if let Err(status) = result {
                    if counters.refused.fetch_add(1, Ordering::Relaxed) < 5 {
                        eprintln!("refused: {status:?}");
                    }
                }
            }
        }
    }

    async fn workload_call(&mut self, keys: &mut KeyServiceClient<Channel>) -> Call {
        let message = self.rng.u64(..).to_le_bytes().to_vec();
        match self.rng.u32(0..100) {
            0..70 => sign(keys, "mem-sign", message).await.map(drop),
            70..80 => {
                let digests = (0..16u8)
                    .map(|i| sha2::Sha256::digest([i]).to_vec())
                    .collect();
                keys.sign_batch(pb::SignBatchRequest {
                    name: "mem-sign".into(),
                    digests,
                    scheme: 0,
                })
                .await
                .map(drop)
            }
            80..88 => {
                let (version, signature) = sign(keys, "mem-sign", message.clone()).await?;
                keys.verify(pb::VerifyRequest {
                    name: "mem-sign".into(),
                    key_version: version,
                    input: Some(pb::verify_request::Input::Message(message)),
                    signature,
                    scheme: 0,
                })
                .await
                .map(drop)
            }
            88..94 => keys
                .get_public_key(pb::GetPublicKeyRequest {
                    name: "mem-sign".into(),
                    version: 0,
                })
                .await
                .map(drop),
            _ => keys
                .get_key(pb::KeyRef {
                    name: "mem-sign".into(),
                })
                .await
                .map(drop),
        }
    }

    async fn admin_call(
        &mut self,
        keys: &mut KeyServiceClient<Channel>,
        att: &mut AttestationServiceClient<Channel>,
    ) -> Call {
        let plaintext = self.rng.u64(..).to_le_bytes().to_vec();
        match self.rng.u32(0..100) {
            0..35 => round_trip(keys, "mem-aes", plaintext).await,
            35..45 => round_trip(keys, "mem-rsa", plaintext).await,
            45..50 => round_trip(keys, "mem-tpm-rsa", plaintext).await,
            50..65 => sign(keys, "mem-tpm-sign", plaintext).await.map(drop),
            65..80 => keys
                .generate_data_key(pb::GenerateDataKeyRequest {
                    name: "mem-aes".into(),
                    aad: vec![],
                    chunk_size: 0,
                })
                .await
                .map(drop),
            80..95 => list(keys).await,
            _ => self.attest(att).await,
        }
    }

    /// Challenge, development evidence bound to this client's certificate key, and the
    /// token-signing keys.
    async fn attest(&mut self, att: &mut AttestationServiceClient<Channel>) -> Call {
        let challenge = att
            .get_challenge(pb::GetChallengeRequest {})
            .await?
            .into_inner();
        let nonce = Nonce::from_slice(&challenge.nonce)
            .map_err(|_| tonic::Status::internal("a nonce of the wrong size"))?;
        att.attest(pb::AttestRequest {
            nonce: challenge.nonce,
            ephemeral_public_key: self.spki.clone(),
            evidence: Some(pb::attest_request::Evidence::Dev(pb::DevEvidence {
                report_data: snp_report_data(&nonce, &self.spki).to_vec(),
                measurement: TRUSTED_MEASUREMENT.into(),
            })),
            ..Default::default()
        })
        .await?;
        att.get_jwks(pb::GetJwksRequest {}).await.map(drop)
    }
}

async fn sign(
    keys: &mut KeyServiceClient<Channel>,
    name: &str,
    message: Vec<u8>,
) -> Result<(u32, Vec<u8>), tonic::Status> {
    let signed = keys
        .sign(pb::SignRequest {
            name: name.into(),
            input: Some(pb::sign_request::Input::Message(message)),
            scheme: 0,
        })
        .await?
        .into_inner();
    Ok((signed.key_version, signed.signature))
}

async fn round_trip(keys: &mut KeyServiceClient<Channel>, name: &str, plaintext: Vec<u8>) -> Call {
    let sealed = keys
        .encrypt(pb::EncryptRequest {
            name: name.into(),
            plaintext,
            aad: vec![],
        })
        .await?
        .into_inner();
    keys.decrypt(pb::DecryptRequest {
        name: name.into(),
        ciphertext: sealed.ciphertext,
        aad: vec![],
    })
    .await
    .map(drop)
}

async fn list(keys: &mut KeyServiceClient<Channel>) -> Call {
    keys.list_keys(pb::ListKeysRequest {
        prefix: "mem-".into(),
        ..Default::default()
    })
    .await
    .map(drop)
}
