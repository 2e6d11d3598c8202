//! SEV-SNP verification and appraisal against real AMD evidence.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::sync::Arc;

use attest::clock::FixedClock;
use attest::policy::AppraisalPolicy;
use attest::snp::{Generation, Signer, SnpEvidence, SnpVerifier, appraise};
use attest::{AttestError, Refusal};
use common::{
    clock_2024, clock_2026, milan_debug_report, milan_debug_vcek, milan_report, milan_vcek,
    recorded, turin_vcek,
};

fn evidence(report: Vec<u8>, vek: Option<Vec<u8>>) -> SnpEvidence {
    SnpEvidence {
        report,
        vek_der: vek,
    }
}

fn own_report_data(report: &[u8]) -> [u8; 64] {
    report[80..144].try_into().unwrap()
}

/// Verifies a report with a VEK, expecting the report's own binding.
fn verify_own(
    v: &SnpVerifier,
    report: &[u8],
    vek: Vec<u8>,
) -> attest::Result<attest::snp::VerifiedReport> {
    v.verify(
        &evidence(report.to_vec(), Some(vek)),
        &own_report_data(report),
    )
}

fn verifier() -> SnpVerifier {
    SnpVerifier::new(clock_2024()).unwrap()
}

fn policy(extra: &str, measurement: &str) -> attest::policy::SnpPolicy {
    let text = format!("[snp]\nallowed_measurements = [\"{measurement}\"]\n{extra}");
    AppraisalPolicy::from_toml(&text).unwrap().snp.unwrap()
}

#[test]
fn the_real_milan_report_verifies_against_the_builtin_roots() {
    let report = milan_report();
    let verified = verify_own(&verifier(), &report, milan_vcek()).unwrap();
    assert_eq!(verified.generation, Generation::Milan);
    assert_eq!(verified.signer, Signer::Vcek);
    let measurement = hex::encode(verified.report.measurement);
    let claims = appraise(
        &verified,
        &policy(
            "min_tcb = { bootloader = 3, snp = 8, microcode = 115 }",
            &measurement,
        ),
    )
    .unwrap();
    assert_eq!(claims.platform.as_deref(), Some("milan/vcek"));
    assert_eq!(claims.debug, Some(false));
    assert!(!claims.insecure);
}

#[test]
fn a_bit_flipped_anywhere_in_the_report_is_refused() {
    let report = milan_report();
    let v = verifier();
    let vcek = milan_vcek();
    let mut accepted = Vec::new();
    for byte in 0..report.len() {
        let mut flipped = report.clone();
        flipped[byte] ^= 0x01;
        if v.verify(
            &evidence(flipped, Some(vcek.clone())),
            &own_report_data(&report),
        )
        .is_ok()
        {
            accepted.push(byte);
        }
    }
    assert!(
        accepted.is_empty(),
        "flips accepted at offsets {accepted:?}"
    );
}

#[test]
fn another_vcek_is_refused() {
    let report = milan_report();
    let err = verify_own(&verifier(), &report, turin_vcek()).unwrap_err();
    assert!(
        matches!(
            err,
            AttestError::Signature(_) | AttestError::CertificateMismatch(_)
        ),
        "{err}"
    );
    let err = verifier()
        .verify(
            &evidence(report.clone(), Some(b"not a certificate".to_vec())),
            &own_report_data(&report),
        )
        .unwrap_err();
    assert!(matches!(err, AttestError::Chain(_)), "{err}");
}

#[test]
fn truncated_oversized_and_unknown_version_reports_are_refused() {
    let report = milan_report();
    for bad in [
        report[..1183].to_vec(),
        Vec::new(),
        [report.clone(), vec![0]].concat(),
    ] {
        let err = verifier()
            .verify(&evidence(bad, Some(milan_vcek())), &[0; 64])
            .unwrap_err();
        assert!(matches!(err, AttestError::Malformed(_)), "{err}");
    }
    for version in [0u32, 1, 6, u32::MAX] {
        let mut bad = report.clone();
        bad[..4].copy_from_slice(&version.to_le_bytes());
        let err = verifier()
            .verify(&evidence(bad, Some(milan_vcek())), &[0; 64])
            .unwrap_err();
        assert_eq!(err, AttestError::UnsupportedVersion(version));
    }
}

#[test]
fn a_report_bound_to_another_challenge_is_refused() {
    let report = milan_report();
    let mut other = own_report_data(&report);
    other[0] ^= 1;
    let err = verifier()
        .verify(&evidence(report, Some(milan_vcek())), &other)
        .unwrap_err();
    assert_eq!(err, AttestError::BindingMismatch);
}

#[test]
fn certificates_are_checked_against_the_verifiers_clock() {
    let report = milan_report();
    let data = own_report_data(&report);
    for (secs, why) in [(1_600_000_000, "not valid yet"), (1_960_000_000, "expired")] {
        let v = SnpVerifier::new(Arc::new(FixedClock::at_unix(secs))).unwrap();
        let err = v
            .verify(&evidence(report.clone(), Some(milan_vcek())), &data)
            .unwrap_err();
        assert!(
            matches!(&err, AttestError::Chain(m) if m.contains(why)),
            "{err}"
        );
    }
}

#[test]
fn the_vcek_can_come_from_a_local_certificate_cache() {
    let report = milan_report();
    let data = own_report_data(&report);
    let empty = tempfile::tempdir().unwrap();
    let err = verifier()
        .with_certificate_cache(empty.path())
        .unwrap()
        .verify(&evidence(report.clone(), None), &data)
        .unwrap_err();
    assert!(
        matches!(&err, AttestError::Chain(m) if m.contains("certificate cache")),
        "{err}"
    );

    let cache = tempfile::tempdir().unwrap();
    std::fs::write(cache.path().join("turin.der"), turin_vcek()).unwrap();
    std::fs::write(cache.path().join("milan.der"), milan_vcek()).unwrap();
    let v = verifier().with_certificate_cache(cache.path()).unwrap();
    assert!(v.verify(&evidence(report, None), &data).is_ok());

    std::fs::write(cache.path().join("junk.der"), b"junk").unwrap();
    assert!(verifier().with_certificate_cache(cache.path()).is_err());
}

#[test]
fn appraisal_refuses_unlisted_measurements_low_tcb_and_debug() {
    let report = milan_report();
    let verified = verify_own(&verifier(), &report, milan_vcek()).unwrap();
    let good = hex::encode(verified.report.measurement);

    let err = appraise(&verified, &policy("", &"00".repeat(48))).unwrap_err();
    assert_eq!(
        err,
        AttestError::Refused(Refusal::Measurement(good.clone()))
    );

    let err = appraise(&verified, &policy("min_tcb = { snp = 9 }", &good)).unwrap_err();
    assert_eq!(
        err,
        AttestError::Refused(Refusal::TcbTooLow {
            component: "snp",
            reported: 8,
            minimum: 9
        })
    );
    let err = appraise(&verified, &policy("min_tcb = { microcode = 200 }", &good)).unwrap_err();
    assert!(matches!(
        err,
        AttestError::Refused(Refusal::TcbTooLow {
            component: "microcode",
            ..
        })
    ));

    let err = appraise(&verified, &policy("allow_smt = false", &good)).unwrap_err();
    assert_eq!(err, AttestError::Refused(Refusal::SmtAllowed));
    let err = appraise(&verified, &policy("vmpl = 1", &good)).unwrap_err();
    assert_eq!(
        err,
        AttestError::Refused(Refusal::Vmpl {
            reported: 0,
            required: 1
        })
    );
    let err = appraise(
        &verified,
        &policy(&format!("host_data = \"{}\"", "11".repeat(32)), &good),
    )
    .unwrap_err();
    assert_eq!(err, AttestError::Refused(Refusal::HostData));
    let err = appraise(&verified, &policy("report_versions = [3, 5]", &good)).unwrap_err();
    assert_eq!(err, AttestError::UnsupportedVersion(2));

    // This real report forbids debugging; the appraisal rule is pure logic over the
    // verified fields, so it is checked on the same report with the debug bit set.
    let mut debuggable = verified.clone();
    debuggable.report.policy.set_debug_allowed(true);
    assert_eq!(
        appraise(&debuggable, &policy("", &good)).unwrap_err(),
        AttestError::Refused(Refusal::DebugAllowed)
    );
    assert!(appraise(&debuggable, &policy("allow_debug = true", &good)).is_ok());
    let mut migratable = verified.clone();
    migratable.report.policy.set_migrate_ma_allowed(true);
    assert_eq!(
        appraise(&migratable, &policy("", &good)).unwrap_err(),
        AttestError::Refused(Refusal::MigrationAgentAllowed)
    );
}

#[test]
fn a_second_real_report_with_debug_enabled_verifies_and_is_refused_by_policy() {
    let report = milan_debug_report();
    let v = SnpVerifier::new(clock_2026()).unwrap();
    let verified = verify_own(&v, &report, milan_debug_vcek()).unwrap();
    assert_eq!(verified.generation, Generation::Milan);
    assert!(verified.report.policy.debug_allowed());
    let measurement = hex::encode(verified.report.measurement);
    assert_eq!(
        appraise(&verified, &policy("", &measurement)).unwrap_err(),
        AttestError::Refused(Refusal::DebugAllowed)
    );
    let claims = appraise(&verified, &policy("allow_debug = true", &measurement)).unwrap();
    assert_eq!(claims.debug, Some(true));
    // The two real reports do not vouch for each other.
    let err = verify_own(&v, &report, milan_vcek()).unwrap_err();
    assert!(
        matches!(
            err,
            AttestError::Signature(_) | AttestError::CertificateMismatch(_) | AttestError::Chain(_)
        ),
        "{err}"
    );
}

#[test]
fn vlek_roots_must_chain_to_amds_builtin_ark() {
    use sev::certs::snp::builtin::{genoa, milan};
    // An ARK that is not the generation's built-in one is refused.
    let err = verifier()
        .with_vlek_root(Generation::Genoa, milan::ARK, milan::ASK)
        .unwrap_err();
    assert!(
        matches!(&err, AttestError::Chain(m) if m.contains("built-in ARK")),
        "{err}"
    );
    // An "ASVK" the ARK did not sign is refused.
    let err = verifier()
        .with_vlek_root(Generation::Milan, milan::ARK, genoa::ASK)
        .unwrap_err();
    assert!(
        matches!(&err, AttestError::Chain(m) if m.contains("does not sign")),
        "{err}"
    );
    // Garbage is refused.
    assert!(
        verifier()
            .with_vlek_root(Generation::Milan, b"junk", b"junk")
            .is_err()
    );
}

/// Verifies a recorded report at a time inside its VCEK's validity.
fn verify_recorded(report: &str, vcek: &str) -> attest::Result<attest::snp::VerifiedReport> {
    let v = SnpVerifier::new(clock_2026()).unwrap();
    verify_own(&v, &recorded(report), recorded(vcek))
}

#[test]
fn a_real_genoa_report_verifies_against_the_builtin_roots() {
    let verified = verify_recorded("genoa_report.bin", "genoa_vcek.der").unwrap();
    assert_eq!(verified.generation, Generation::Genoa);
    assert_eq!(verified.signer, Signer::Vcek);
    assert_eq!(verified.report.version, 3);
    let measurement = hex::encode(verified.report.measurement);
    let claims = appraise(&verified, &policy("allow_smt = true", &measurement)).unwrap();
    assert_eq!(claims.platform.as_deref(), Some("genoa/vcek"));
}

#[test]
fn a_real_turin_report_version_5_verifies_against_the_builtin_roots() {
    let verified = verify_recorded("turin_report.bin", "turin_vcek.der").unwrap();
    assert_eq!(verified.generation, Generation::Turin);
    assert_eq!(verified.signer, Signer::Vcek);
    assert_eq!(verified.report.version, 5);
    let measurement = hex::encode(verified.report.measurement);
    let claims = appraise(&verified, &policy("allow_smt = true", &measurement)).unwrap();
    assert_eq!(claims.platform.as_deref(), Some("turin/vcek"));
}

#[test]
fn genoa_and_turin_reports_refuse_flipped_bits_and_each_others_vcek() {
    let v = SnpVerifier::new(clock_2026()).unwrap();
    for (report, vcek, other) in [
        ("genoa_report.bin", "genoa_vcek.der", "turin_vcek.der"),
        ("turin_report.bin", "turin_vcek.der", "genoa_vcek.der"),
    ] {
        let report = recorded(report);
        let vcek = recorded(vcek);
        let mut accepted = Vec::new();
        for byte in 0..report.len() {
            let mut flipped = report.clone();
            flipped[byte] ^= 0x01;
            if verify_own(&v, &flipped, vcek.clone()).is_ok() {
                accepted.push(byte);
            }
        }
        assert!(accepted.is_empty(), "flips accepted at {accepted:?}");
        let err = verify_own(&v, &report, recorded(other)).unwrap_err();
        assert!(
            matches!(
                err,
                AttestError::Signature(_) | AttestError::CertificateMismatch(_)
            ),
            "{err}"
        );
        // Verified at a time before the VCEK was issued: refused.
        let early = SnpVerifier::new(clock_2024()).unwrap();
        assert!(verify_own(&early, &report, vcek).is_err());
    }
}
