//! The backend under a restarted TPM, a long run, a full queue, and async callers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{connect, digest};
use secrecy::ExposeSecret;
use softhsm_tests::Swtpm;
use tpm_backend::{
    PcrSelection, SealPolicy, SrkSource, Tcti, TpmBackend, TpmConfig, TpmError, TpmKeyKind,
    TpmSignScheme,
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
    let policy = SealPolicy {
        pcrs: PcrSelection::sha256(&[16]).unwrap(),
        pcr_values: None,
        auth: None,
    };
    let cycles = 2000;
    let mut recent = std::collections::VecDeque::new();
    for i in 0..cycles {
        // Every cycle creates a key, loads and signs with it, and seals; it also signs with
        // a key from five cycles ago, so the cache keeps evicting and reloading.
        let key = backend.create_key(TpmKeyKind::EcP256Sign).wait().unwrap();
        let d = digest(&u32::try_from(i).unwrap().to_be_bytes());
        backend
            .sign(&key, TpmSignScheme::EcdsaSha256, d)
            .wait()
            .unwrap();
        recent.push_back(key);
        if recent.len() > 5 {
            let old = recent.pop_front().unwrap();
            backend
                .sign(&old, TpmSignScheme::EcdsaSha256, d)
                .wait()
                .unwrap();
        }
        let sealed = backend.seal(&d, policy.clone()).wait().unwrap();
        if i % 4 == 0 {
            assert_eq!(
                backend
                    .unseal(&sealed, None)
                    .wait()
                    .unwrap()
                    .expose_secret(),
                &d
            );
        }
    }
    let objects = backend.transient_objects().wait().unwrap();
    assert!(objects <= 3, "{objects} transient objects left: a leak");
}

#[test]
fn a_persistent_srk_made_by_an_operator_is_used_and_kept() {
    let mut tpm = Swtpm::start();
    let tools = |args: &[&str]| tpm.tpm2_tool(args);
    tools(&[
        "tpm2_createprimary",
        "-C",
        "o",
        "-G",
        "ecc256:aes128cfb",
        "-c",
        "srk.ctx",
    ]);
    tools(&[
        "tpm2_evictcontrol",
        "-C",
        "o",
        "-c",
        "srk.ctx",
        "0x81000001",
    ]);

    let connect_persistent = |tpm: &Swtpm| {
        let mut config = TpmConfig::new(Tcti::new(&tpm.tcti()).unwrap());
        config.srk = SrkSource::Persistent(0x8100_0001);
        TpmBackend::connect(config).unwrap()
    };
    let key = {
        let backend = connect_persistent(&tpm);
        let key = backend.create_key(TpmKeyKind::EcP256Sign).wait().unwrap();
        backend
            .sign(&key, TpmSignScheme::EcdsaSha256, digest(b"x"))
            .wait()
            .unwrap();
        key
    };
    assert!(
        tools(&["tpm2_getcap", "handles-persistent"]).contains("0x81000001"),
        "the SRK must stay"
    );
    tpm.restart();
    let backend = connect_persistent(&tpm);
    backend
        .sign(&key, TpmSignScheme::EcdsaSha256, digest(b"after restart"))
        .wait()
        .unwrap();

    let mut config = TpmConfig::new(Tcti::new(&tpm.tcti()).unwrap());
    config.srk = SrkSource::Persistent(0x8100_0002);
    assert!(
        TpmBackend::connect(config).is_err(),
        "no SRK at that handle"
    );
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

/// A TPM stopped without `TPM2_Shutdown` twenty times (a crashed host, a killed swtpm):
/// its keys must still sign. Keys with an empty auth value are `noDA`, so unclean stops
/// never push the TPM into dictionary-attack lockout.
#[test]
fn twenty_unclean_stops_do_not_lock_the_keys_out() {
    let mut tpm = Swtpm::start();
    let backend = connect(&tpm);
    let keys = [
        backend.create_key(TpmKeyKind::EcP256Sign).wait().unwrap(),
        backend.create_key(TpmKeyKind::Rsa2048Sign).wait().unwrap(),
    ];
    let schemes = [TpmSignScheme::EcdsaSha256, TpmSignScheme::RsaPssSha256];
    for round in 0..20u8 {
        for (key, scheme) in keys.iter().zip(schemes) {
            backend
                .sign(key, scheme, digest(&[round]))
                .wait()
                .unwrap_or_else(|e| panic!("round {round}: {e}"));
        }
        tpm.restart();
    }
    for (key, scheme) in keys.iter().zip(schemes) {
        backend.sign(key, scheme, digest(b"after")).wait().unwrap();
    }
    let lockout = tpm.tpm2_tool(&["tpm2_getcap", "properties-variable"]);
    let failed_tries = lockout
        .lines()
        .find(|l| l.contains("TPM2_PT_LOCKOUT_COUNTER"))
        .and_then(|l| l.rsplit(':').next())
        .map(str::trim)
        .unwrap_or_default()
        .to_string();
    assert_eq!(failed_tries, "0x0", "{lockout}");
}
