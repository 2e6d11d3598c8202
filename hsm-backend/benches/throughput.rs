//! `make bench`: direct backend throughput on a fresh SoftHSM2 token, in ops/s for 1 and
//! 2 worker threads. This is the baseline the broker is later measured against.
//!
//! `BENCH_SECONDS` sets how long each row runs (default 3).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use hsm_backend::secrecy::SecretString;
use hsm_backend::{
    Digest, EcCurve, HashAlgorithm, HsmBackend, KeyAlgorithm, KeyId, KeyLabel, KeySpec, KeyUsage,
    Pin, Pkcs11Module, PoolConfig, SignatureAlgorithm, TokenSelector, provision,
};
use softhsm_tests::{SoftHsm, throughput};

fn main() {
    let seconds = throughput::seconds_per_row();
    let softhsm = SoftHsm::new();
    let module = Pkcs11Module::load(softhsm.module_path()).unwrap();
    let pin = |s: &str| Pin::new(SecretString::from(s)).unwrap();
    let selector = TokenSelector::Label("bench".into());
    provision::init_token(&module, "bench", &pin("bench-so")).unwrap();
    provision::init_user_pin(&module, &selector, &pin("bench-so"), &pin("bench-user")).unwrap();
    let pool = PoolConfig {
        size: 2,
        ..PoolConfig::default()
    };
    let backend = HsmBackend::open_with(module, &selector, pin("bench-user"), pool).unwrap();

    let make = |name: &str, alg, usage| {
        let id = KeyId::new(name.as_bytes().to_vec()).unwrap();
        backend
            .generate_key(
                &id,
                &KeyLabel::new(name).unwrap(),
                KeySpec::new(alg, usage).unwrap(),
            )
            .unwrap();
        id
    };
    let ec = make("ec", KeyAlgorithm::Ec(EcCurve::P256), KeyUsage::SignVerify);
    let rsa = make("rsa", KeyAlgorithm::Rsa(2048), KeyUsage::SignVerify);
    let aes = make("aes", KeyAlgorithm::Aes256, KeyUsage::EncryptDecrypt);
    let digest = Digest::of(HashAlgorithm::Sha256, b"benchmark");
    let block = vec![0x5a_u8; 4096];

    let ops: Vec<(&str, throughput::Operation<'_>)> = vec![
        (
            "ECDSA P-256 sign",
            Box::new(|| {
                backend
                    .sign(&ec, SignatureAlgorithm::EcdsaP256Sha256, &digest)
                    .unwrap();
            }),
        ),
        (
            "RSA-2048 PKCS#1 v1.5 sign",
            Box::new(|| {
                backend
                    .sign(
                        &rsa,
                        SignatureAlgorithm::RsaPkcs1v15(HashAlgorithm::Sha256),
                        &digest,
                    )
                    .unwrap();
            }),
        ),
        (
            "AES-256-GCM encrypt 4 KiB",
            Box::new(|| {
                backend.aes_gcm_encrypt(&aes, &block, b"").unwrap();
            }),
        ),
    ];

    println!("hsm-backend direct throughput, SoftHSM2, {seconds} s per row, pool of 2 sessions");
    println!(
        "{:<28} {:>8} {:>12} {:>10}",
        "operation", "threads", "ops/s", "vs 1 thread"
    );
    for (name, op) in &ops {
        let single = throughput::ops_per_second(op.as_ref(), 1, seconds);
        println!("{name:<28} {:>8} {single:>12.0} {:>10}", 1, "1.00x");
        let double = throughput::ops_per_second(op.as_ref(), 2, seconds);
        println!(
            "{name:<28} {:>8} {double:>12.0} {:>9.2}x",
            2,
            double / single
        );
    }
}
