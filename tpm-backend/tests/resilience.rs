//! The backend under a restarted TPM, a long run, a full queue, and async callers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{connect, digest};
use secrecy::ExposeSecret;
use softhsm_tests::Swtpm;
use tpm_backend::{
    PcrSelection, SealPolicy, Tcti, TpmBackend, TpmConfig, TpmError, TpmKeyKind, TpmSignScheme,
};

#[test]
fn a_killed_and_restarted_tpm_is_survived() {
    let mut tpm = Swtpm::start();
    let backend = connect(&tpm);
    let key = backend.create_key(TpmKeyKind::EcP256Sign).wait().unwrap();
    let d = digest(b"before");
    backend
        .sign(&key, TpmSignScheme::EcdsaSha256, d)
        .wait()
        .unwrap();

    tpm.stop();
    for _ in 0..3 {
        let err = backend
            .sign(&key, TpmSignScheme::EcdsaSha256, d)
            .wait()
            .unwrap_err();
        assert!(matches!(err, TpmError::Unavailable(_)), "{err}");
    }
    tpm.restart();
    // The same SRK comes back from the same seed, so the blob loads again.
    let sig = backend
        .sign(&key, TpmSignScheme::EcdsaSha256, digest(b"after"))
        .wait()
        .unwrap();
    assert!(!sig.is_empty());
    let again = backend.create_key(TpmKeyKind::Rsa2048Sign).wait().unwrap();
    backend
        .sign(&again, TpmSignScheme::RsaPssSha256, d)
        .wait()
        .unwrap();
}

#[test]
fn a_restart_between_two_calls_costs_no_failed_call() {
    let mut tpm = Swtpm::start();
    let backend = connect(&tpm);
    let key = backend.create_key(TpmKeyKind::EcP256Sign).wait().unwrap();
    backend
        .sign(&key, TpmSignScheme::EcdsaSha256, digest(b"1"))
        .wait()
        .unwrap();
    tpm.restart();
    // The broken connection is noticed, dropped and re-made within the call.
    backend
        .sign(&key, TpmSignScheme::EcdsaSha256, digest(b"2"))
        .wait()
        .unwrap();
}

#[test]
fn thousands_of_create_load_sign_seal_cycles_leak_no_object() {
    let tpm = Swtpm::start();
    let backend = connect(&tpm);
    let pcrs = PcrSelection::sha256(&[16]).unwrap();
    let policy = SealPolicy {
        pcrs,
        pcr_values: None,
        auth: None,
    };
    let mut keys = Vec::new();
    let cycles = 2000;
    for i in 0..cycles {
        // Create now and then, and rotate through more keys than the TPM has slots for.
        if i % 50 == 0 {
            let kind = if keys.len() % 2 == 0 {
                TpmKeyKind::EcP256Sign
            } else {
                TpmKeyKind::Rsa2048Sign
            };
            keys.push((backend.create_key(kind).wait().unwrap(), kind));
        }
        let (key, kind) = &keys[i % keys.len()];
        let scheme = match kind {
            TpmKeyKind::EcP256Sign => TpmSignScheme::EcdsaSha256,
            _ => TpmSignScheme::RsaPkcs1v15Sha256,
        };
        backend
            .sign(key, scheme, digest(&i.to_be_bytes()))
            .wait()
            .unwrap();
        if i % 10 == 0 {
            let secret = i.to_be_bytes();
            let sealed = backend.seal(&secret, policy.clone()).wait().unwrap();
            assert_eq!(
                backend
                    .unseal(&sealed, None)
                    .wait()
                    .unwrap()
                    .expose_secret(),
                &secret
            );
        }
    }
    assert_eq!(keys.len(), cycles / 50);
    let objects = backend.transient_objects().wait().unwrap();
    assert!(objects <= 3, "{objects} transient objects left: a leak");
}

#[test]
fn a_full_queue_answers_busy_instead_of_growing() {
    let tpm = Swtpm::start();
    let mut config = TpmConfig::new(Tcti::new(&tpm.tcti()).unwrap());
    config.queue_depth = 2;
    let backend = TpmBackend::connect(config).unwrap();
    let key = backend.create_key(TpmKeyKind::Rsa2048Sign).wait().unwrap();
    let pending: Vec<_> = (0..64)
        .map(|i| backend.sign(&key, TpmSignScheme::RsaPssSha256, digest(&[i])))
        .collect();
    let results: Vec<_> = pending.into_iter().map(|p| p.wait()).collect();
    let busy = results
        .iter()
        .filter(|r| matches!(r, Err(TpmError::Busy(2))))
        .count();
    let done = results.iter().filter(|r| r.is_ok()).count();
    assert!(
        busy > 0,
        "64 requests into a queue of 2 must be refused in part"
    );
    assert_eq!(busy + done, 64);
    assert!(
        backend
            .sign(&key, TpmSignScheme::RsaPssSha256, digest(b"after"))
            .wait()
            .is_ok()
    );
}

#[test]
fn results_can_be_awaited_from_async_code() {
    let tpm = Swtpm::start();
    let backend = connect(&tpm);
    let signature = futures::executor::block_on(async {
        let key = backend.create_key(TpmKeyKind::EcP256Sign).await?;
        backend
            .sign(&key, TpmSignScheme::EcdsaSha256, digest(b"async"))
            .await
    })
    .unwrap();
    assert!(!signature.is_empty());
}

#[test]
fn an_unreachable_tpm_fails_to_connect_with_a_clear_error() {
    let port = {
        let tpm = Swtpm::start();
        tpm.port()
    };
    let tcti = Tcti::new(&format!("swtpm:host=127.0.0.1,port={port}")).unwrap();
    let err = TpmBackend::connect(TpmConfig::new(tcti)).unwrap_err();
    assert!(matches!(err, TpmError::Unavailable(_)), "{err}");
    assert!(err.to_string().contains(&port.to_string()), "{err}");
}
