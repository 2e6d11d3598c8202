//! ECDSA P-256 signing with the bench key: directly on the broker's token (the baseline
//! every broker row is compared with) and through the broker's `KeyService`.
//!
//! The direct rows open the broker's own token in this process with
//! `hsm_backend::HsmBackend` and the same PIN, and sign with the broker's key (found by its
//! label `kb:<name>:v1`).

use std::sync::atomic::{AtomicU64, Ordering};

use hsm_backend::secrecy::SecretString;
use hsm_backend::{
    Digest, HashAlgorithm, HsmBackend, KeyId, Pin, Pkcs11Module, PoolConfig, SignatureAlgorithm,
    TokenSelector,
};
use keybroker_api::v1 as pb;
use pb::key_service_client::KeyServiceClient;
use softhsm_tests::throughput;
use tonic::transport::Channel;

use super::callers::Call;
use super::cpu::{CpuClock, cpu_us_per_op};
use super::table::Row;
use crate::common::{BrokerProcess, TOKEN_LABEL, USER_PIN, create};

/// The EC P-256 signing key every row signs with.
pub const KEY: &str = "bench-p256";
/// Digests per `SignBatch` call.
pub const BATCH: usize = 64;

/// Creates [`KEY`] on the broker's SoftHSM2 token, as the admin.
pub async fn create_bench_key(broker: &BrokerProcess) {
    broker
        .keys("admin")
        .await
        .create_key(create(
            KEY,
            pb::KeyAlgorithm::EcP256,
            pb::KeyPurpose::SignVerify,
            "softhsm",
        ))
        .await
        .unwrap();
}

/// Signs with the broker's key from this process, on the broker's token, with a pool of
/// `sessions` sessions: one row for each count of `threads`.
pub fn direct_rows(clock: &CpuClock, sessions: usize, threads: &[usize], seconds: f64) -> Vec<Row> {
    let broker_pin = Pin::new(SecretString::from(USER_PIN)).unwrap();
    let module =
        Pkcs11Module::load(&softhsm_tests::SoftHsm::module_path_or_missing().unwrap()).unwrap();
    let pool = PoolConfig {
        size: sessions,
        ..PoolConfig::default()
    };
    let selector = TokenSelector::Label(TOKEN_LABEL.into());
    let hsm = HsmBackend::open_with(module, &selector, broker_pin, pool).unwrap();
    let label = format!("kb:{KEY}:v1");
    let id: KeyId = hsm
        .list_keys()
        .unwrap()
        .into_iter()
        .find(|k| k.label == label)
        .unwrap_or_else(|| panic!("no object labelled {label} on the token"))
        .id;
    let digest = Digest::of(HashAlgorithm::Sha256, b"benchmark");
    let signs = AtomicU64::new(0);
    let op = || {
        hsm.sign(&id, SignatureAlgorithm::EcdsaP256Sha256, &digest)
            .unwrap();
        signs.fetch_add(1, Ordering::Relaxed);
    };
    let me = std::process::id();
    threads
        .iter()
        .map(|&threads| {
            signs.store(0, Ordering::Relaxed);
            let cpu = clock.seconds(me);
            // The shared loop, so the figure compares with hsm-backend's own bench; the
            // counter also sees its warm-up, so CPU per sign covers the same calls.
            let ops_per_second = throughput::ops_per_second(&op, threads, seconds);
            let bench_cpu_us = cpu_us_per_op(cpu, clock.seconds(me), signs.load(Ordering::Relaxed));
            Row {
                name: "direct hsm-backend sign",
                callers: threads,
                ops_per_second,
                latency: None,
                broker_cpu_us: None,
                bench_cpu_us,
            }
        })
        .collect()
}

#[derive(Debug, Clone, Copy)]
pub enum Mode {
    Unary,
    Batch,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Unary => "broker Sign (unary)",
            Mode::Batch => "broker SignBatch",
        }
    }
}

/// Signs with [`KEY`] through the broker, one digest (`Sign`) or [`BATCH`] (`SignBatch`)
/// per call.
pub struct SignCall {
    client: KeyServiceClient<Channel>,
    mode: Mode,
    digest: Vec<u8>,
}

impl SignCall {
    pub fn new(client: KeyServiceClient<Channel>, mode: Mode) -> SignCall {
        let digest = Digest::of(HashAlgorithm::Sha256, b"benchmark")
            .as_bytes()
            .to_vec();
        SignCall {
            client,
            mode,
            digest,
        }
    }
}

impl Call for SignCall {
    async fn call(&mut self) -> u64 {
        match self.mode {
            Mode::Unary => {
                let reply = self
                    .client
                    .sign(pb::SignRequest {
                        name: KEY.into(),
                        input: Some(pb::sign_request::Input::Digest(self.digest.clone())),
                        scheme: pb::SignatureScheme::Default as i32,
                    })
                    .await
                    .unwrap();
                assert!(!reply.get_ref().signature.is_empty());
                1
            }
            Mode::Batch => {
                let reply = self
                    .client
                    .sign_batch(pb::SignBatchRequest {
                        name: KEY.into(),
                        digests: vec![self.digest.clone(); BATCH],
                        scheme: pb::SignatureScheme::Default as i32,
                    })
                    .await
                    .unwrap();
                assert_eq!(reply.get_ref().signatures.len(), BATCH);
                BATCH as u64
            }
        }
    }
}
