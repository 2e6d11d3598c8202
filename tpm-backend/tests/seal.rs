//! PCR-policy sealing on a real swtpm.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{connect, digest};
use secrecy::{ExposeSecret, SecretString};
use softhsm_tests::Swtpm;
use tpm_backend::policy::{extended, pcr_policy_digest};
use tpm_backend::{PcrSelection, SealPolicy, SealedBlob, TpmBackend, TpmError};

const SECRET: &[u8] = b"disk encryption key, 32 bytes..!";

/// Unseals and returns the plaintext bytes, failing the test on any error.
fn unsealed(backend: &TpmBackend, sealed: &SealedBlob) -> Vec<u8> {
    backend
        .unseal(sealed, None)
        .wait()
        .unwrap()
        .expose_secret()
        .to_vec()
}

fn policy(pcrs: &[u8]) -> SealPolicy {
    SealPolicy {
        pcrs: PcrSelection::sha256(pcrs).unwrap(),
        pcr_values: None,
        auth: None,
    }
}

#[test]
fn sealed_data_opens_while_pcrs_hold_and_is_refused_after_an_extend() {
    let tpm = Swtpm::start();
    let backend = connect(&tpm);
    let sealed = backend.seal(SECRET, policy(&[7, 16])).wait().unwrap();
    let opened = backend.unseal(&sealed, None).wait().unwrap();
    assert_eq!(opened.expose_secret(), SECRET);
    assert!(!format!("{opened:?}").contains("disk"));

    backend
        .pcr_extend(16, digest(b"a new boot component"))
        .wait()
        .unwrap();
    let err = backend.unseal(&sealed, None).wait().unwrap_err();
    assert!(matches!(err, TpmError::PcrPolicyNotSatisfied), "{err}");
    assert_eq!(
        err.to_string(),
        "PCR policy not satisfied: the PCRs no longer match the sealing policy"
    );
    // Extending a PCR outside the selection would not have mattered.
    let other = backend.seal(SECRET, policy(&[7])).wait().unwrap();
    backend.pcr_extend(16, digest(b"again")).wait().unwrap();
    assert!(backend.unseal(&other, None).wait().is_ok());
}

#[test]
fn a_sealed_blob_survives_a_restart_of_the_same_tpm_and_pcrs_reset() {
    let mut tpm = Swtpm::start();
    let stored = {
        let backend = connect(&tpm);
        let sealed = backend.seal(SECRET, policy(&[0, 16])).wait().unwrap();
        backend
            .pcr_extend(16, digest(b"runtime event"))
            .wait()
            .unwrap();
        assert!(matches!(
            backend.unseal(&sealed, None).wait(),
            Err(TpmError::PcrPolicyNotSatisfied)
        ));
        sealed.to_bytes()
    };
    tpm.restart(); // a reboot: PCR 16 is back to zero, the seeds and NV remain
    let backend = connect(&tpm);
    let sealed = SealedBlob::from_bytes(&stored).unwrap();
    assert_eq!(unsealed(&backend, &sealed), SECRET);
}

#[test]
fn the_offline_policy_digest_matches_the_tpm_trial_session() {
    let tpm = Swtpm::start();
    let backend = connect(&tpm);
    let pcrs = PcrSelection::sha256(&[0, 7, 16, 23]).unwrap();
    let values = backend.pcr_read(&pcrs).wait().unwrap();
    for with_auth in [false, true] {
        let offline = pcr_policy_digest(&pcrs, &values, with_auth).unwrap();
        let trial = backend
            .trial_pcr_policy(&pcrs, &values, with_auth)
            .wait()
            .unwrap();
        assert_eq!(offline, trial, "with_auth = {with_auth}");
    }
}

#[test]
fn data_sealed_to_a_future_pcr_state_opens_only_once_it_is_reached() {
    let tpm = Swtpm::start();
    let backend = connect(&tpm);
    let pcrs = PcrSelection::sha256(&[16]).unwrap();
    let now = backend.pcr_read(&pcrs).wait().unwrap();
    let update = digest(b"signed kernel 6.1.99");
    let future = vec![extended(&now[0], &update)];
    let sealed = backend
        .seal(
            SECRET,
            SealPolicy {
                pcrs: pcrs.clone(),
                pcr_values: Some(future.clone()),
                auth: None,
            },
        )
        .wait()
        .unwrap();
    assert!(matches!(
        backend.unseal(&sealed, None).wait(),
        Err(TpmError::PcrPolicyNotSatisfied)
    ));
    backend.pcr_extend(16, update).wait().unwrap();
    assert_eq!(backend.pcr_read(&pcrs).wait().unwrap(), future);
    assert_eq!(unsealed(&backend, &sealed), SECRET);
}

#[test]
fn an_auth_value_is_required_when_sealed_with_one() {
    let tpm = Swtpm::start();
    let backend = connect(&tpm);
    let mut p = policy(&[16]);
    p.auth = Some(SecretString::from("correct horse"));
    let sealed = backend.seal(SECRET, p).wait().unwrap();
    assert!(sealed.needs_auth());
    let err = backend.unseal(&sealed, None).wait().unwrap_err();
    assert!(matches!(err, TpmError::InvalidInput(_)), "{err}");
    let err = backend
        .unseal(&sealed, Some(SecretString::from("wrong horse")))
        .wait()
        .unwrap_err();
    assert!(matches!(err, TpmError::AuthFailed), "{err}");
    let opened = backend
        .unseal(&sealed, Some(SecretString::from("correct horse")))
        .wait()
        .unwrap();
    assert_eq!(opened.expose_secret(), SECRET);
}

#[test]
fn bad_seal_requests_and_blobs_are_refused() {
    let tpm = Swtpm::start();
    let backend = connect(&tpm);
    assert!(matches!(
        backend.seal(&[0u8; 129], policy(&[16])).wait(),
        Err(TpmError::InvalidInput(_))
    ));
    assert!(matches!(
        backend.seal(&[], policy(&[16])).wait(),
        Err(TpmError::InvalidInput(_))
    ));
    let wrong_count = SealPolicy {
        pcr_values: Some(vec![[0; 32]; 2]),
        ..policy(&[16])
    };
    assert!(matches!(
        backend.seal(SECRET, wrong_count).wait(),
        Err(TpmError::InvalidInput(_))
    ));
    assert!(matches!(
        PcrSelection::sha256(&[24]),
        Err(TpmError::InvalidInput(_))
    ));

    let sealed = backend.seal(SECRET, policy(&[16])).wait().unwrap();
    let mut bytes = sealed.to_bytes();
    let last = bytes.len() - 5;
    bytes[last] ^= 0x01; // inside the TPM-encrypted private part
    let tampered = SealedBlob::from_bytes(&bytes).unwrap();
    let err = backend.unseal(&tampered, None).wait().unwrap_err();
    assert!(
        matches!(err, TpmError::InvalidBlob(_) | TpmError::Tpm { .. }),
        "{err}"
    );
    assert!(SealedBlob::from_bytes(&bytes[..3]).is_err());
    // The untouched blob still opens.
    assert_eq!(unsealed(&backend, &sealed), SECRET);
}

#[test]
fn lockout_is_reported_with_the_time_left_and_ends_by_itself() {
    let tpm = Swtpm::start();
    // Two failed authorizations lock the TPM out, and one is forgiven every 2 s (a fresh
    // swtpm's lockout auth is empty, so the parameters can be set).
    tpm.tpm2_tool(&[
        "tpm2_dictionarylockout",
        "--setup-parameters",
        "--max-tries=2",
        "--recovery-time=2",
        "--lockout-recovery-time=2",
    ]);
    let backend = connect(&tpm);
    let mut p = policy(&[16]);
    p.auth = Some(SecretString::from("correct horse"));
    let sealed = backend.seal(SECRET, p).wait().unwrap();
    let open = |auth: &str| {
        backend
            .unseal(&sealed, Some(SecretString::from(auth)))
            .wait()
    };
    for _ in 0..2 {
        assert!(matches!(open("wrong horse"), Err(TpmError::AuthFailed)));
    }

    // Even the right value is refused now, and the error says for how long.
    let err = open("correct horse").unwrap_err();
    let TpmError::Lockout(Some(state)) = &err else {
        panic!("expected lockout with its counters: {err}");
    };
    assert_eq!((state.failures, state.max_failures), (2, 2), "{err}");
    assert_eq!(state.interval_seconds, 2, "{err}");
    assert_eq!(state.seconds_left(), Some(2), "{err}");
    assert!(err.to_string().contains("in at most 2 s"), "{err}");

    // It ends by itself within that time (polled, with a margin for a loaded machine).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        match open("correct horse") {
            Ok(opened) => {
                assert_eq!(opened.expose_secret(), SECRET);
                break;
            }
            Err(TpmError::Lockout(_)) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(250));
            }
            Err(e) => panic!("still refused: {e}"),
        }
    }
}
