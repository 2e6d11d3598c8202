//! `make bench`: verifications per second, on real evidence.
//!
//! - SEV-SNP: the real Milan report from the `sev` package, with the VCEK chain cached (a
//!   long-lived verifier) and cold (a new verifier per report, as a first contact costs).
//! - TPM: a quote from a fresh swtpm, verified against its enrolled AK.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "../tests/common/mod.rs"]
mod common;

use attest::binding::tpm_extra_data;
use attest::challenge::Nonce;
use attest::snp::{SnpEvidence, SnpVerifier};
use attest::tpm;
use softhsm_tests::{Swtpm, throughput};
use tpm_backend::{PcrSelection, Tcti, TpmBackend, TpmConfig};

fn main() {
    let seconds = throughput::seconds_per_row();
    let report = common::milan_report();
    let evidence = SnpEvidence {
        report: report.clone(),
        vek_der: Some(common::milan_vcek()),
    };
    let data: [u8; 64] = report[80..144].try_into().unwrap();
    let warm = SnpVerifier::new(common::clock_2024()).unwrap();

    let tpm = Swtpm::start();
    let backend = TpmBackend::connect(TpmConfig::new(Tcti::new(&tpm.tcti()).unwrap())).unwrap();
    let ak = backend.create_attestation_key().wait().unwrap();
    let nonce = Nonce::from_bytes([1; 32]);
    let extra = tpm_extra_data(&nonce, b"bench key");
    let selection = PcrSelection::sha256(&[0, 1, 2, 3, 4, 5, 6, 7]).unwrap();
    let quote = common::tpm_evidence(backend.quote(&ak, &extra, &selection).wait().unwrap());
    let policy = attest::policy::AppraisalPolicy::from_toml(&format!(
        "[[tpm.attestation_keys]]\nlabel = \"bench\"\nspki = \"{}\"\n[tpm.pcrs]\n0 = [\"{}\"]\n",
        hex::encode(ak.public_key_der().unwrap()),
        "00".repeat(32)
    ))
    .unwrap();
    let enrolled = policy.tpm.as_ref().unwrap().attestation_keys()[0].clone();

    println!("attest verification throughput, 1 thread, {seconds} s per row");
    println!("{:<44} {:>12}", "operation", "per second");
    let rows: Vec<(&str, throughput::Operation<'_>)> = vec![
        (
            "SEV-SNP report, VCEK chain cached",
            Box::new(|| {
                warm.verify(&evidence, &data).unwrap();
            }),
        ),
        (
            "SEV-SNP report, cold (new verifier)",
            Box::new(|| {
                SnpVerifier::new(common::clock_2024())
                    .unwrap()
                    .verify(&evidence, &data)
                    .unwrap();
            }),
        ),
        (
            "TPM quote (8 PCRs), ECDSA P-256 AK",
            Box::new(|| {
                tpm::verify(&quote, &enrolled, &extra).unwrap();
            }),
        ),
    ];
    for (name, op) in &rows {
        println!(
            "{name:<44} {:>12.0}",
            throughput::ops_per_second(op.as_ref(), 1, seconds)
        );
    }
}
