//! `make bench`: TPM backend throughput on a fresh swtpm, in ops/s. A TPM runs one command
//! at a time, so 2 callers measure queueing through the worker, not parallelism.
//!
//! `BENCH_SECONDS` sets how long each row runs (default 3).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use softhsm_tests::{Swtpm, throughput};
use tpm_backend::{
    PcrSelection, SealPolicy, Tcti, TpmBackend, TpmConfig, TpmKeyKind, TpmSignScheme,
};

fn main() {
    let seconds = throughput::seconds_per_row();
    let tpm = Swtpm::start();
    let backend = TpmBackend::connect(TpmConfig::new(Tcti::new(&tpm.tcti()).unwrap())).unwrap();
    let ec = backend.create_key(TpmKeyKind::EcP256Sign).wait().unwrap();
    let rsa = backend.create_key(TpmKeyKind::Rsa2048Sign).wait().unwrap();
    let policy = SealPolicy {
        pcrs: PcrSelection::sha256(&[7, 16]).unwrap(),
        pcr_values: None,
        auth: None,
    };
    let sealed = backend.seal(&[7u8; 32], policy.clone()).wait().unwrap();
    let digest = [0x42u8; 32];

    let ops: Vec<(&str, throughput::Operation<'_>)> = vec![
        (
            "ECDSA P-256 sign",
            Box::new(|| {
                backend
                    .sign(&ec, TpmSignScheme::EcdsaSha256, digest)
                    .wait()
                    .unwrap();
            }),
        ),
        (
            "RSA-2048 PKCS#1 v1.5 sign",
            Box::new(|| {
                backend
                    .sign(&rsa, TpmSignScheme::RsaPkcs1v15Sha256, digest)
                    .wait()
                    .unwrap();
            }),
        ),
        (
            "seal 32 B to 2 PCRs",
            Box::new(|| {
                backend.seal(&[7u8; 32], policy.clone()).wait().unwrap();
            }),
        ),
        (
            "unseal 32 B (PCR policy)",
            Box::new(|| {
                backend.unseal(&sealed, None).wait().unwrap();
            }),
        ),
    ];

    println!("tpm-backend throughput, swtpm 0.7 over TCP, {seconds} s per row");
    println!("{:<28} {:>8} {:>12}", "operation", "callers", "ops/s");
    for (name, op) in &ops {
        for callers in [1, 2] {
            println!(
                "{name:<28} {callers:>8} {:>12.0}",
                throughput::ops_per_second(op.as_ref(), callers, seconds)
            );
        }
    }
    println!(
        "transient objects left in the TPM: {}",
        backend.transient_objects().wait().unwrap()
    );
}
