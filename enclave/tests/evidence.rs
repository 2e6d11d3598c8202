//! The evidence sources against what the broker checks: development evidence, TPM quotes
//! from a real swtpm verified by the broker's own verifier (`attest::tpm::verify`), and
//! the SEV-SNP source on a machine without `/dev/sev-guest`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeMap;
use std::path::Path;

use attest::AttestError;
use attest::binding::{snp_report_data, tpm_extra_data};
use attest::challenge::Nonce;
use attest::policy::{AppraisalPolicy, TpmPolicy};
use enclave::evidence::{
    DevEvidence, EvidenceError, EvidenceSource, SnpGuest, TpmQuote, create_attestation_key,
};
use keybroker_api::v1::attest_request::Evidence;
use softhsm_tests::Swtpm;
use tpm_backend::{Tcti, TpmBackend, TpmConfig, TpmKeyKind};

const SPKI: &[u8] = b"stand-in for the workload's ephemeral key SPKI";
const OTHER_SPKI: &[u8] = b"stand-in for another ephemeral key SPKI";
/// A TCTI nobody listens on.
const NOWHERE: &str = "swtpm:host=127.0.0.1,port=1";

fn measurement_hex() -> String {
    "ab".repeat(48)
}

#[test]
fn dev_evidence_binds_the_nonce_and_the_key() {
    let source = DevEvidence::new(&measurement_hex()).unwrap();
    assert_eq!(source.kind(), "dev");
    let nonce = Nonce::from_bytes([1; 32]);
    let Evidence::Dev(dev) = source.collect(&nonce, SPKI).unwrap() else {
        panic!("not dev evidence");
    };
    assert_eq!(dev.report_data, snp_report_data(&nonce, SPKI));
    assert_ne!(dev.report_data, snp_report_data(&nonce, OTHER_SPKI));
    assert_eq!(dev.measurement, measurement_hex());
    // Upper-case configuration is sent as the canonical lower case.
    let upper = DevEvidence::new(&measurement_hex().to_uppercase()).unwrap();
    assert_eq!(upper, source);
}

#[test]
fn dev_evidence_refuses_a_measurement_that_is_not_96_hex_characters() {
    for (bad, why) in [
        (String::new(), "96 hex characters, not 0"),
        ("ab".repeat(47), "not 94"),
        ("ab".repeat(49), "not 98"),
        (format!("{}zz", "ab".repeat(47)), "not hex"),
    ] {
        let err = DevEvidence::new(&bad).unwrap_err();
        assert!(
            matches!(&err, EvidenceError::Config(m) if m.contains(why)),
            "{bad:?}: {err}"
        );
    }
}

/// A policy enrolling `ak_spki`, as the operator writes it after `create_attestation_key`.
fn policy_enrolling(ak_spki: &[u8]) -> TpmPolicy {
    let text = format!(
        "[[tpm.attestation_keys]]\nlabel = \"workload-ak\"\nspki = \"{}\"\n\
         [tpm.pcrs]\n16 = [\"{}\"]\n",
        hex::encode(ak_spki),
        "00".repeat(32)
    );
    AppraisalPolicy::from_toml(&text).unwrap().tpm.unwrap()
}

/// The broker's view of the wire evidence (`broker/src/attestation/service.rs`).
fn as_verified(evidence: Evidence) -> (attest::tpm::TpmEvidence, Vec<u8>) {
    let Evidence::Tpm(tpm) = evidence else {
        panic!("not a TPM quote");
    };
    assert_eq!(tpm.pcr_indices.len(), tpm.pcr_values.len());
    let pcr_values: BTreeMap<u8, [u8; 32]> = tpm
        .pcr_indices
        .iter()
        .zip(&tpm.pcr_values)
        .map(|(i, v)| (u8::try_from(*i).unwrap(), v.as_slice().try_into().unwrap()))
        .collect();
    let evidence = attest::tpm::TpmEvidence {
        attest: tpm.attest,
        signature: tpm.signature,
        pcr_values,
    };
    (evidence, tpm.ak_spki_der)
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn a_quote_verifies_with_the_enrolled_ak_and_binds_only_its_nonce_and_key() {
    let tpm = Swtpm::start();
    let dir = tempfile::tempdir().unwrap();
    let ak_file = dir.path().join("ak.blob");
    let ak_spki = create_attestation_key(&tpm.tcti(), &ak_file).unwrap();
    #[cfg(unix)]
    assert_eq!(mode(&ak_file), 0o600);
    // Made before the quoting connection opens: swtpm has no resource manager, so a new
    // connection flushes what another one loaded.
    let second_spki = create_attestation_key(&tpm.tcti(), &dir.path().join("second.blob")).unwrap();
    assert_ne!(second_spki, ak_spki);

    let source = TpmQuote::open(&tpm.tcti(), &ak_file, &[16, 0, 16]).unwrap();
    assert_eq!(source.kind(), "tpm");
    assert_eq!(source.ak_spki_der(), ak_spki.as_slice());
    assert_eq!(source.pcr_indices(), &[0, 16]);

    let nonce = Nonce::from_bytes([5; 32]);
    let (evidence, presented_ak) = as_verified(source.collect(&nonce, SPKI).unwrap());
    assert_eq!(presented_ak, ak_spki);
    assert_eq!(
        evidence.pcr_values.keys().copied().collect::<Vec<_>>(),
        [0, 16]
    );
    let policy = policy_enrolling(&ak_spki);
    let ak = policy.attestation_key(&presented_ak).unwrap();
    let verified = attest::tpm::verify(&evidence, ak, &tpm_extra_data(&nonce, SPKI)).unwrap();
    assert_eq!(verified.attestation_key, "workload-ak");
    assert_eq!(verified.quote.extra_data, tpm_extra_data(&nonce, SPKI));
    attest::tpm::appraise(&verified, &policy).unwrap();

    // The quote is useless for another ephemeral key or another challenge.
    let other_key = tpm_extra_data(&nonce, OTHER_SPKI);
    assert_eq!(
        attest::tpm::verify(&evidence, ak, &other_key),
        Err(AttestError::BindingMismatch)
    );
    let other_nonce = tpm_extra_data(&Nonce::from_bytes([6; 32]), SPKI);
    assert_eq!(
        attest::tpm::verify(&evidence, ak, &other_nonce),
        Err(AttestError::BindingMismatch)
    );

    // A second AK of the same TPM did not sign it.
    let second_policy = policy_enrolling(&second_spki);
    let second = second_policy.attestation_key(&second_spki).unwrap();
    assert!(matches!(
        attest::tpm::verify(&evidence, second, &tpm_extra_data(&nonce, SPKI)),
        Err(AttestError::Signature(_))
    ));
}

fn assert_config(result: Result<impl std::fmt::Debug, EvidenceError>, needle: &str) {
    let err = result.unwrap_err();
    assert!(
        matches!(&err, EvidenceError::Config(m) if m.contains(needle)),
        "expected a configuration error naming {needle:?}: {err}"
    );
}

#[test]
fn a_missing_or_garbage_ak_file_is_refused_before_the_tpm_is_asked() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.blob");
    assert_config(TpmQuote::open(NOWHERE, &missing, &[16]), "missing.blob");
    let garbage = dir.path().join("garbage.blob");
    std::fs::write(&garbage, b"not a TPM blob at all").unwrap();
    assert_config(TpmQuote::open(NOWHERE, &garbage, &[16]), "garbage.blob");
    std::fs::write(&garbage, []).unwrap();
    assert_config(TpmQuote::open(NOWHERE, &garbage, &[16]), "garbage.blob");
}

#[test]
fn bad_pcrs_a_bad_tcti_and_an_unreachable_tpm_are_refused() {
    let tpm = Swtpm::start();
    let dir = tempfile::tempdir().unwrap();
    let ak_file = dir.path().join("ak.blob");
    create_attestation_key(&tpm.tcti(), &ak_file).unwrap();
    assert_config(TpmQuote::open(&tpm.tcti(), &ak_file, &[]), "PCRs");
    assert_config(TpmQuote::open(&tpm.tcti(), &ak_file, &[24]), "PCRs");
    assert_config(
        TpmQuote::open("mssim:host=127.0.0.1,port=2321", &ak_file, &[16]),
        "TCTI",
    );
    let err = TpmQuote::open(NOWHERE, &ak_file, &[16]).unwrap_err();
    assert!(
        matches!(
            err,
            EvidenceError::Device {
                source_kind: "tpm",
                ..
            }
        ),
        "{err}"
    );

    // An AK another TPM made does not load here.
    let other_tpm = Swtpm::start();
    assert_config(
        TpmQuote::open(&other_tpm.tcti(), &ak_file, &[16]),
        "made by this TPM",
    );

    // A key of this TPM that is not an attestation key (unrestricted: it would sign any
    // digest, a forged quote included) is refused at open.
    let signing_file = dir.path().join("signing.blob");
    {
        let backend = TpmBackend::connect(TpmConfig::new(Tcti::new(&tpm.tcti()).unwrap())).unwrap();
        let key = backend.create_key(TpmKeyKind::EcP256Sign).wait().unwrap();
        std::fs::write(&signing_file, key.to_bytes()).unwrap();
    }
    assert_config(
        TpmQuote::open(&tpm.tcti(), &signing_file, &[16]),
        "not an attestation key",
    );
}

#[test]
fn an_existing_ak_file_is_never_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let existing = dir.path().join("ak.blob");
    std::fs::write(&existing, b"the operator's enrolled AK").unwrap();
    // Refused before any TPM is reached (none listens at NOWHERE).
    assert_config(create_attestation_key(NOWHERE, &existing), "already exists");
    assert_eq!(
        std::fs::read(&existing).unwrap(),
        b"the operator's enrolled AK"
    );
}

#[test]
fn a_failed_creation_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ak.blob");
    let err = create_attestation_key(NOWHERE, &out).unwrap_err();
    assert!(
        matches!(
            err,
            EvidenceError::Device {
                source_kind: "tpm",
                ..
            }
        ),
        "{err}"
    );
    assert!(!out.exists());
    assert_config(create_attestation_key("mssim:", &out), "TCTI");
    assert!(!out.exists());
}

#[test]
fn snp_evidence_without_the_guest_device_names_it() {
    let source = SnpGuest::new(0).unwrap();
    assert_eq!(source.kind(), "snp");
    let nonce = Nonce::from_bytes([9; 32]);
    if Path::new("/dev/sev-guest").exists() {
        // On an SEV-SNP guest: a report for this nonce and key, as the broker parses it.
        let Evidence::Snp(snp) = source.collect(&nonce, SPKI).unwrap() else {
            panic!("not SNP evidence");
        };
        let report = attest::snp::parse_report(&snp.report).unwrap();
        assert_eq!(report.report_data, snp_report_data(&nonce, SPKI));
        return;
    }
    let err = source.collect(&nonce, SPKI).unwrap_err();
    assert!(
        matches!(&err, EvidenceError::Device { source_kind: "snp", reason } if reason.contains("/dev/sev-guest")),
        "{err}"
    );
    assert!(SnpGuest::new(4).is_err());
}
