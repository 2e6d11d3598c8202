//! The forged-AK attack as pure logic: a "quote" signed by a P-256 key made in software,
//! with the PCR values the policy wants and the right binding, is refused unless its key is
//! enrolled; naming an enrolled AK does not help a quote that AK did not sign.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use attest::binding::tpm_extra_data;
use attest::challenge::ChallengeStore;
use attest::clock::SystemClock;
use attest::policy::{AppraisalPolicy, ak_fingerprint};
use attest::snp::SnpVerifier;
use attest::tpm::TpmEvidence;
use attest::tpm::wire::{self, PcrBankSelection, QuoteInfo};
use attest::{Appraiser, AttestError, Evidence};
use p256::ecdsa::SigningKey;
use p256::ecdsa::signature::hazmat::PrehashSigner;
use p256::pkcs8::EncodePublicKey;
use sha2::{Digest, Sha256};

/// The identity that asks for the challenges and appraises its evidence.
const WORKLOAD: &str = "spiffe://example.org/workload";

const EPHEMERAL_SPKI: &[u8] = b"stand-in for the workload's ephemeral key SPKI";

fn software_key(seed: u8) -> SigningKey {
    SigningKey::from_slice(&[seed; 32]).unwrap()
}

fn spki(key: &SigningKey) -> Vec<u8> {
    key.verifying_key()
        .to_public_key_der()
        .unwrap()
        .as_bytes()
        .to_vec()
}

/// A TPMS_ATTEST quoting `pcrs` over `extra_data`, signed by `key` as a TPM AK would.
fn forge(key: &SigningKey, extra_data: &[u8], pcrs: &BTreeMap<u8, [u8; 32]>) -> TpmEvidence {
    let mut digest = Sha256::new();
    pcrs.values().for_each(|v| digest.update(v));
    let quote = QuoteInfo {
        qualified_signer: vec![0x00, 0x0b, 0x42],
        extra_data: extra_data.to_vec(),
        clock: 1,
        reset_count: 0,
        restart_count: 0,
        selections: vec![PcrBankSelection {
            hash: wire::SHA256_BANK,
            pcrs: pcrs.keys().copied().collect(),
        }],
        pcr_digest: digest.finalize().to_vec(),
    };
    let attest = wire::marshal_quote(&quote).unwrap();
    let signature: p256::ecdsa::Signature = key.sign_prehash(&Sha256::digest(&attest)).unwrap();
    let (r, s) = signature.split_bytes();
    TpmEvidence {
        attest,
        signature: wire::marshal_ecdsa_signature(&r.into(), &s.into()),
        pcr_values: pcrs.clone(),
    }
}

/// A policy that wants PCR 16 zero and enrols `enrolled` as "host-a".
fn appraiser(enrolled: &SigningKey) -> Appraiser {
    let policy = format!(
        "[[tpm.attestation_keys]]\nlabel = \"host-a\"\nspki = \"{}\"\n[tpm.pcrs]\n16 = [\"{}\"]\n",
        hex::encode(spki(enrolled)),
        "00".repeat(32)
    );
    let clock = Arc::new(SystemClock);
    Appraiser::new(
        ChallengeStore::new(Duration::from_secs(60), 100, 100, clock.clone()),
        SnpVerifier::new(clock.clone()).unwrap(),
        AppraisalPolicy::from_toml(&policy).unwrap(),
        clock,
    )
}

fn attempt(appraiser: &Appraiser, signer: &SigningKey, named_ak: &[u8]) -> attest::Result<()> {
    let challenge = appraiser.challenges.issue(WORKLOAD).unwrap();
    let pcrs = [(16u8, [0u8; 32])].into();
    let quote = forge(
        signer,
        &tpm_extra_data(&challenge.nonce, EPHEMERAL_SPKI),
        &pcrs,
    );
    let evidence = Evidence::Tpm {
        quote,
        ak_spki_der: named_ak.to_vec(),
    };
    appraiser
        .appraise(WORKLOAD, &evidence, &challenge.nonce, EPHEMERAL_SPKI)
        .map(|appraisal| {
            assert_eq!(appraisal.claims.attestation_key.as_deref(), Some("host-a"));
        })
}

#[test]
fn a_quote_signed_by_a_key_the_policy_does_not_enrol_is_refused() {
    let enrolled = software_key(1);
    let attacker = software_key(2);
    let appraiser = appraiser(&enrolled);
    let err = attempt(&appraiser, &attacker, &spki(&attacker)).unwrap_err();
    let fingerprint = ak_fingerprint(&p256::PublicKey::from(attacker.verifying_key()));
    assert_eq!(err, AttestError::UntrustedAttestationKey(fingerprint));
    assert!(err.to_string().contains("not enrolled"), "{err}");
}

#[test]
fn naming_an_enrolled_ak_does_not_help_a_quote_it_did_not_sign() {
    let enrolled = software_key(1);
    let appraiser = appraiser(&enrolled);
    let err = attempt(&appraiser, &software_key(2), &spki(&enrolled)).unwrap_err();
    assert!(matches!(err, AttestError::Signature(_)), "{err:?}");
}

#[test]
fn the_same_quote_from_the_enrolled_key_is_accepted_with_its_label() {
    // The enrolled key stands in for a TPM here; the end-to-end test uses a real swtpm AK.
    let enrolled = software_key(1);
    attempt(&appraiser(&enrolled), &enrolled, &spki(&enrolled)).unwrap();
}

#[test]
fn an_ak_that_is_not_a_p256_key_is_malformed() {
    let appraiser = appraiser(&software_key(1));
    let err = attempt(&appraiser, &software_key(1), b"garbage").unwrap_err();
    assert!(matches!(err, AttestError::Malformed(_)), "{err:?}");
}
