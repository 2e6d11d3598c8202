//! `make bench`: TPM backend throughput on a fresh swtpm, in ops/s. A TPM runs one command
//! at a time, so 2 callers measure queueing through the worker, not parallelism.
//!
//! `BENCH_SECONDS` sets how long each row runs (default 3).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use softhsm_tests::Swtpm;
use tpm_backend::{
    PcrSelection, SealPolicy, Tcti, TpmBackend, TpmConfig, TpmKeyKind, TpmSignScheme,
};

type Op<'a> = Box<dyn Fn() + Sync + 'a>;

fn main() {
    let seconds: f64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
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

    let ops: Vec<(&str, Op<'_>)> = vec![
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
                measure(op, callers, seconds)
            );
        }
    }
    println!(
        "transient objects left in the TPM: {}",
        backend.transient_objects().wait().unwrap()
    );
}

/// Runs `op` from `threads` threads for `seconds` (after a short warm-up); returns ops/s.
fn measure(op: &Op<'_>, threads: usize, seconds: f64) -> f64 {
    let run = |duration: Duration| {
        let stop = AtomicBool::new(false);
        let count = AtomicU64::new(0);
        let start = Instant::now();
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| {
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        op();
                        n += 1;
                    }
                    count.fetch_add(n, Ordering::Relaxed);
                });
            }
            std::thread::sleep(duration);
            stop.store(true, Ordering::Relaxed);
        });
        count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
    };
    run(Duration::from_millis(300));
    run(Duration::from_secs_f64(seconds))
}
