//! TPM quotes from swtpm (through tpm-backend) and from tpm2-tools, verified and appraised.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use attest::binding::tpm_extra_data;
use attest::challenge::{ChallengeStore, Nonce};
use attest::claims::TeeKind;
use attest::clock::SystemClock;
use attest::dev::InsecureDevEvidence;
use attest::policy::{AppraisalPolicy, EnrolledAttestationKey, TpmPolicy};
use attest::snp::SnpVerifier;
use attest::tpm::{self, TpmEvidence};
use attest::{Appraiser, AttestError, Evidence, Refusal};
use softhsm_tests::Swtpm;
use tpm_backend::{PcrSelection, Tcti, TpmBackend, TpmBlob, TpmConfig};

/// The identity that asks for the challenges and appraises its evidence.
const WORKLOAD: &str = "spiffe://example.org/workload";

const EPHEMERAL_SPKI: &[u8] = b"stand-in for the workload's ephemeral key SPKI";

struct Quoting {
    backend: TpmBackend,
    ak: TpmBlob,
    _tpm: Swtpm,
}

fn quoting() -> Quoting {
    let tpm = Swtpm::start();
    let backend = TpmBackend::connect(TpmConfig::new(Tcti::new(&tpm.tcti()).unwrap())).unwrap();
    let ak = backend.create_attestation_key().wait().unwrap();
    Quoting {
        backend,
        ak,
        _tpm: tpm,
    }
}

fn quote(q: &Quoting, nonce: &Nonce, pcrs: &[u8]) -> TpmEvidence {
    let selection = PcrSelection::sha256(pcrs).unwrap();
    let extra = tpm_extra_data(nonce, EPHEMERAL_SPKI);
    common::tpm_evidence(q.backend.quote(&q.ak, &extra, &selection).wait().unwrap())
}

/// `[tpm]` enrolling `ak` as "swtpm-ak" and requiring `pcrs`.
fn tpm_section(ak_spki: &[u8], pcrs: &BTreeMap<u8, [u8; 32]>) -> String {
    let mut text = format!(
        "[[tpm.attestation_keys]]\nlabel = \"swtpm-ak\"\nspki = \"{}\"\n[tpm.pcrs]\n",
        hex::encode(ak_spki)
    );
    for (i, v) in pcrs {
        text += &format!("{i} = [\"{}\"]\n", hex::encode(v));
    }
    text
}

fn tpm_policy(ak_spki: &[u8], pcrs: &BTreeMap<u8, [u8; 32]>) -> TpmPolicy {
    AppraisalPolicy::from_toml(&tpm_section(ak_spki, pcrs))
        .unwrap()
        .tpm
        .unwrap()
}

/// The enrolled AK of a policy that enrols exactly `ak_spki`.
fn enrolled(ak_spki: &[u8]) -> EnrolledAttestationKey {
    tpm_policy(ak_spki, &[(16, [0; 32])].into()).attestation_keys()[0].clone()
}

#[test]
fn a_swtpm_quote_verifies_and_its_pcrs_are_appraised() {
    let q = quoting();
    let nonce = Nonce::from_bytes([3; 32]);
    let evidence = quote(&q, &nonce, &[0, 7, 16]);
    let ak_spki = q.ak.public_key_der().unwrap();
    let policy = tpm_policy(&ak_spki, &evidence.pcr_values);
    let ak = policy.attestation_key(&ak_spki).unwrap();
    let verified = tpm::verify(&evidence, ak, &tpm_extra_data(&nonce, EPHEMERAL_SPKI)).unwrap();
    let claims = tpm::appraise(&verified, &policy).unwrap();
    assert_eq!(claims.tee, TeeKind::Tpm);
    assert_eq!(claims.pcrs.len(), 3);
    assert_eq!(claims.attestation_key.as_deref(), Some("swtpm-ak"));
}

#[test]
fn wrong_nonce_wrong_ak_and_wrong_pcrs_are_refused() {
    let q = quoting();
    let nonce = Nonce::from_bytes([3; 32]);
    let evidence = quote(&q, &nonce, &[0, 16]);
    let ak = enrolled(&q.ak.public_key_der().unwrap());
    let expected = tpm_extra_data(&nonce, EPHEMERAL_SPKI);

    let other_nonce = tpm_extra_data(&Nonce::from_bytes([4; 32]), EPHEMERAL_SPKI);
    assert_eq!(
        tpm::verify(&evidence, &ak, &other_nonce),
        Err(AttestError::BindingMismatch)
    );
    let other_key = tpm_extra_data(&nonce, b"another ephemeral key");
    assert_eq!(
        tpm::verify(&evidence, &ak, &other_key),
        Err(AttestError::BindingMismatch)
    );

    // Another AK of the same TPM, enrolled too: it did not sign this quote.
    let other_ak = enrolled(
        &q.backend
            .create_attestation_key()
            .wait()
            .unwrap()
            .public_key_der()
            .unwrap(),
    );
    assert!(matches!(
        tpm::verify(&evidence, &other_ak, &expected),
        Err(AttestError::Signature(_))
    ));

    let mut lied = evidence.clone();
    lied.pcr_values.insert(16, [0xee; 32]);
    assert!(matches!(
        tpm::verify(&lied, &ak, &expected),
        Err(AttestError::Signature(_))
    ));
    let mut fewer = evidence.clone();
    fewer.pcr_values.remove(&16);
    assert!(matches!(
        tpm::verify(&fewer, &ak, &expected),
        Err(AttestError::Malformed(_))
    ));
    let mut tampered = evidence.clone();
    let last = tampered.attest.len() - 1;
    tampered.attest[last] ^= 1;
    assert!(tpm::verify(&tampered, &ak, &expected).is_err());

    // Genuine, but PCR 16 is not a reference value.
    let verified = tpm::verify(&evidence, &ak, &expected).unwrap();
    let mut reference = evidence.pcr_values.clone();
    reference.insert(16, [0x01; 32]);
    let policy = tpm_policy(&q.ak.public_key_der().unwrap(), &reference);
    assert_eq!(
        tpm::appraise(&verified, &policy),
        Err(AttestError::Refused(Refusal::Pcr(16)))
    );
}

#[test]
fn a_quote_made_by_tpm2_quote_verifies() {
    let tpm = Swtpm::start();
    let dir = tpm.scratch_dir();
    let run = |args: &[&str]| {
        tpm.tpm2_tool(args);
    };
    let nonce = Nonce::from_bytes([9; 32]);
    let extra = hex::encode(tpm_extra_data(&nonce, EPHEMERAL_SPKI));
    run(&[
        "tpm2_createprimary",
        "-C",
        "o",
        "-G",
        "ecc256:aes128cfb",
        "-c",
        "primary.ctx",
    ]);
    run(&[
        "tpm2_create",
        "-C",
        "primary.ctx",
        "-G",
        "ecc256:ecdsa-sha256:null",
        "-u",
        "ak.pub",
        "-r",
        "ak.priv",
        "-a",
        "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|sign",
    ]);
    run(&[
        "tpm2_load",
        "-C",
        "primary.ctx",
        "-u",
        "ak.pub",
        "-r",
        "ak.priv",
        "-c",
        "ak.ctx",
    ]);
    run(&[
        "tpm2_readpublic",
        "-c",
        "ak.ctx",
        "-f",
        "der",
        "-o",
        "ak.der",
    ]);
    run(&[
        "tpm2_quote",
        "-c",
        "ak.ctx",
        "-l",
        "sha256:0,7",
        "-q",
        &extra,
        "-m",
        "quote.msg",
        "-s",
        "quote.sig",
        "-g",
        "sha256",
    ]);
    run(&["tpm2_pcrread", "sha256:0,7", "-o", "pcrs.bin"]);

    let values = std::fs::read(dir.join("pcrs.bin")).unwrap();
    let pcr_values: BTreeMap<u8, [u8; 32]> = [0u8, 7]
        .into_iter()
        .zip(values.chunks_exact(32).map(|c| c.try_into().unwrap()))
        .collect();
    let evidence = TpmEvidence {
        attest: std::fs::read(dir.join("quote.msg")).unwrap(),
        signature: std::fs::read(dir.join("quote.sig")).unwrap(),
        pcr_values,
    };
    let ak = enrolled(&std::fs::read(dir.join("ak.der")).unwrap());
    let verified = tpm::verify(&evidence, &ak, &tpm_extra_data(&nonce, EPHEMERAL_SPKI)).unwrap();
    assert_eq!(verified.pcrs.len(), 2);
    assert_eq!(
        tpm::verify(
            &evidence,
            &ak,
            &tpm_extra_data(&Nonce::from_bytes([8; 32]), EPHEMERAL_SPKI)
        ),
        Err(AttestError::BindingMismatch)
    );
}

fn appraiser(policy: &str) -> Appraiser {
    let clock = Arc::new(SystemClock);
    Appraiser::new(
        ChallengeStore::new(Duration::from_secs(60), 1000, 1000, clock.clone()),
        SnpVerifier::new(clock.clone()).unwrap(),
        AppraisalPolicy::from_toml(policy).unwrap(),
        clock,
    )
}

#[test]
fn the_appraiser_accepts_a_challenge_once_and_refuses_its_replay() {
    let q = quoting();
    let probe = quote(&q, &Nonce::from_bytes([0; 32]), &[7, 16]);
    let policy = format!(
        "result_validity_seconds = 60\n{}",
        tpm_section(&q.ak.public_key_der().unwrap(), &probe.pcr_values)
    );
    let appraiser = appraiser(&policy);
    let challenge = appraiser.challenges.issue(WORKLOAD).unwrap();
    let evidence = Evidence::Tpm {
        quote: quote(&q, &challenge.nonce, &[7, 16]),
        ak_spki_der: q.ak.public_key_der().unwrap(),
    };
    let appraisal = appraiser
        .appraise(WORKLOAD, &evidence, &challenge.nonce, EPHEMERAL_SPKI)
        .unwrap();
    assert_eq!(appraisal.expires_at - appraisal.issued_at, 60);
    assert_eq!(
        appraiser.appraise(WORKLOAD, &evidence, &challenge.nonce, EPHEMERAL_SPKI),
        Err(AttestError::ReplayedChallenge)
    );
    assert_eq!(
        appraiser.appraise(
            WORKLOAD,
            &evidence,
            &Nonce::from_bytes([1; 32]),
            EPHEMERAL_SPKI
        ),
        Err(AttestError::UnknownChallenge)
    );
    // SNP evidence is refused by a policy without an [snp] section.
    let c = appraiser.challenges.issue(WORKLOAD).unwrap();
    let snp = Evidence::Snp(attest::snp::SnpEvidence {
        report: vec![0; 1184],
        vek_der: None,
    });
    assert_eq!(
        appraiser.appraise(WORKLOAD, &snp, &c.nonce, EPHEMERAL_SPKI),
        Err(AttestError::Refused(Refusal::EvidenceKind("SEV-SNP")))
    );
}

#[test]
fn development_evidence_is_refused_unless_allowed_and_is_marked_insecure() {
    let dev = |nonce: &Nonce| {
        Evidence::InsecureDev(InsecureDevEvidence {
            report_data: attest::binding::snp_report_data(nonce, EPHEMERAL_SPKI),
            measurement: [0x42; 48],
        })
    };
    let software_ak = p256::SecretKey::from_slice(&[5; 32]).unwrap().public_key();
    let strict = appraiser(&tpm_section(
        p256::pkcs8::EncodePublicKey::to_public_key_der(&software_ak)
            .unwrap()
            .as_bytes(),
        &[(0, [0; 32])].into(),
    ));
    let c = strict.challenges.issue(WORKLOAD).unwrap();
    assert_eq!(
        strict.appraise(WORKLOAD, &dev(&c.nonce), &c.nonce, EPHEMERAL_SPKI),
        Err(AttestError::Refused(Refusal::InsecureEvidence))
    );
    let lax = appraiser("[dev]\nallow_insecure = true\n");
    let c = lax.challenges.issue(WORKLOAD).unwrap();
    let appraisal = lax
        .appraise(WORKLOAD, &dev(&c.nonce), &c.nonce, EPHEMERAL_SPKI)
        .unwrap();
    assert!(appraisal.claims.insecure);
    assert_eq!(appraisal.claims.tee, TeeKind::InsecureDev);
    let c2 = lax.challenges.issue(WORKLOAD).unwrap();
    assert_eq!(
        lax.appraise(WORKLOAD, &dev(&c.nonce), &c2.nonce, EPHEMERAL_SPKI),
        Err(AttestError::BindingMismatch),
        "evidence bound to another challenge"
    );
}
