//! Real evidence shipped inside crates.io packages, read in place from the package the
//! build already downloaded (found with `cargo metadata`), never copied.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use attest::clock::FixedClock;

/// The source directory of a dependency package, by name.
pub fn package_dir(name: &str) -> PathBuf {
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--manifest-path"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let manifest = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("package {name} is not in the dependency graph"))["manifest_path"]
        .as_str()
        .unwrap()
        .to_string();
    PathBuf::from(manifest).parent().unwrap().to_path_buf()
}

/// `sev` 8.0.0, `tests/certs_data/report_milan.hex`: a real Milan report (version 2).
pub fn milan_report() -> Vec<u8> {
    let text =
        std::fs::read_to_string(package_dir("sev").join("tests/certs_data/report_milan.hex"))
            .unwrap();
    hex::decode(text.trim()).unwrap()
}

/// `sev` 8.0.0, `tests/certs_data/vcek_milan.der`: the VCEK that signed it.
pub fn milan_vcek() -> Vec<u8> {
    std::fs::read(package_dir("sev").join("tests/certs_data/vcek_milan.der")).unwrap()
}

/// `sev` 8.0.0, `tests/certs_data/vcek_turin.der`: a real Turin VCEK (another chip).
pub fn turin_vcek() -> Vec<u8> {
    std::fs::read(package_dir("sev").join("tests/certs_data/vcek_turin.der")).unwrap()
}

/// A clock inside the Milan VCEK's validity (2023-04-03 to 2030-04-03): 2024-06-01.
pub fn clock_2024() -> Arc<FixedClock> {
    Arc::new(FixedClock::at_unix(1_717_200_000))
}

/// `omne-attest` 0.1.0, `tests/fixtures/snp/attestation.bin`: a real Milan report (v2)
/// from a rented confidential VM, whose guest policy allows debugging (0xb0000).
pub fn milan_debug_report() -> Vec<u8> {
    std::fs::read(package_dir("omne-attest").join("tests/fixtures/snp/attestation.bin")).unwrap()
}

/// `omne-attest` 0.1.0, `tests/fixtures/snp/kds_vcek.der`: its VCEK from AMD's KDS
/// (valid 2026-08-28 to 2033-08-28).
pub fn milan_debug_vcek() -> Vec<u8> {
    std::fs::read(package_dir("omne-attest").join("tests/fixtures/snp/kds_vcek.der")).unwrap()
}

/// A clock inside that VCEK's validity: 2026-11-01.
pub fn clock_2026() -> Arc<FixedClock> {
    Arc::new(FixedClock::at_unix(1_793_491_200))
}

/// The evidence a workload sends for a quote made by `tpm-backend`.
pub fn tpm_evidence(quote: tpm_backend::Quote) -> attest::tpm::TpmEvidence {
    attest::tpm::TpmEvidence {
        attest: quote.attest,
        signature: quote.signature,
        pcr_values: quote
            .pcrs
            .indices()
            .iter()
            .copied()
            .zip(quote.pcr_values)
            .collect(),
    }
}

/// Real evidence that no crates.io package ships, committed under `tests/data/snp/`
/// (provenance in `tests/data/snp/PROVENANCE.md`).
pub fn recorded(name: &str) -> Vec<u8> {
    let path = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/snp")).join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
