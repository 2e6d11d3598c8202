//! The session pool under concurrency and after losing its login.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashSet;
use std::sync::Mutex;

use cryptoki::session::SessionState;
use hsm_backend::{
    Digest, EcCurve, HashAlgorithm, KeyAlgorithm, KeyLabel, KeyUsage, PoolConfig,
    SignatureAlgorithm,
};

#[test]
fn many_threads_sign_through_a_small_pool_without_errors() {
    let t = common::token_with_pool(PoolConfig {
        size: 3,
        ..PoolConfig::default()
    });
    let ec = t.generate(KeyAlgorithm::Ec(EcCurve::P256), KeyUsage::SignVerify);
    let rsa = t.generate(KeyAlgorithm::Rsa(2048), KeyUsage::SignVerify);
    let signatures = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for worker in 0..8 {
            let (t, ec, rsa, signatures) = (&t, &ec, &rsa, &signatures);
            scope.spawn(move || {
                for i in 0..150 {
                    let digest =
                        Digest::of(HashAlgorithm::Sha256, format!("{worker}/{i}").as_bytes());
                    let (id, alg) = if i % 10 == 0 {
                        (&rsa.id, SignatureAlgorithm::RsaPss(HashAlgorithm::Sha256))
                    } else {
                        (&ec.id, SignatureAlgorithm::EcdsaP256Sha256)
                    };
                    let sig = t.backend.sign(id, alg, &digest).unwrap();
                    signatures
                        .lock()
                        .unwrap()
                        .push((id.clone(), alg, digest, sig));
                }
            });
        }
    });
    let signatures = signatures.into_inner().unwrap();
    assert_eq!(signatures.len(), 8 * 150);
    for (id, alg, digest, sig) in signatures.iter().step_by(7) {
        assert!(t.backend.verify(id, *alg, digest, sig).unwrap());
    }
}

#[test]
fn the_pool_logs_in_again_after_the_token_drops_its_login() {
    let t = common::token();
    let key = t.generate(KeyAlgorithm::Ec(EcCurve::P256), KeyUsage::SignVerify);
    let digest = Digest::of(HashAlgorithm::Sha256, b"before");
    t.backend
        .sign(&key.id, SignatureAlgorithm::EcdsaP256Sha256, &digest)
        .unwrap();

    // Log the application out behind the pool's back, as an expired HSM login would.
    let raw = t.raw_session();
    raw.logout().unwrap();
    assert_eq!(
        raw.get_session_info().unwrap().session_state(),
        SessionState::RwPublic
    );

    for i in 0..8 {
        let digest = Digest::of(HashAlgorithm::Sha256, format!("after {i}").as_bytes());
        let sig = t
            .backend
            .sign(&key.id, SignatureAlgorithm::EcdsaP256Sha256, &digest)
            .unwrap();
        assert!(
            t.backend
                .verify(&key.id, SignatureAlgorithm::EcdsaP256Sha256, &digest, &sig)
                .unwrap()
        );
    }
    assert_eq!(
        raw.get_session_info().unwrap().session_state(),
        SessionState::RwUser
    );
}

#[test]
fn keys_generated_from_many_threads_at_once_are_all_distinct_and_usable() {
    let t = common::token();
    let ids = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for worker in 0..6 {
            let (t, ids) = (&t, &ids);
            scope.spawn(move || {
                for i in 0..5 {
                    let id = common::fresh_id();
                    let (alg, usage) = match (worker + i) % 3 {
                        0 => (KeyAlgorithm::Ec(EcCurve::P256), KeyUsage::SignVerify),
                        1 => (KeyAlgorithm::Aes256, KeyUsage::EncryptDecrypt),
                        _ => (KeyAlgorithm::HmacSha256, KeyUsage::Mac),
                    };
                    let label = KeyLabel::new(format!("stress {worker}/{i}")).unwrap();
                    t.backend
                        .generate_key(&id, &label, common::spec(alg, usage))
                        .unwrap();
                    ids.lock().unwrap().push((id, alg));
                }
            });
        }
    });
    let ids = ids.into_inner().unwrap();
    assert_eq!(
        ids.iter()
            .map(|(id, _)| id.clone())
            .collect::<HashSet<_>>()
            .len(),
        30
    );
    assert_eq!(t.backend.list_keys().unwrap().len(), 30);
    for (id, alg) in &ids {
        match alg {
            KeyAlgorithm::Ec(_) => {
                let d = Digest::of(HashAlgorithm::Sha256, b"x");
                t.backend
                    .sign(id, SignatureAlgorithm::EcdsaP256Sha256, &d)
                    .unwrap();
            }
            KeyAlgorithm::Aes256 => {
                t.backend.aes_gcm_encrypt(id, b"x", b"").unwrap();
            }
            _ => {
                t.backend.mac(id, b"x").unwrap();
            }
        }
    }
}

#[test]
fn a_pool_of_zero_sessions_is_refused() {
    let softhsm = softhsm_tests::SoftHsm::new();
    let module = hsm_backend::Pkcs11Module::load(softhsm.module_path()).unwrap();
    let so = common::pin("so-secret-1234");
    hsm_backend::provision::init_token(&module, common::TOKEN_LABEL, &so).unwrap();
    hsm_backend::provision::init_user_pin(
        &module,
        &common::selector(),
        &so,
        &common::pin("user-1234"),
    )
    .unwrap();
    let err = hsm_backend::HsmBackend::open_with(
        module,
        &common::selector(),
        common::pin("user-1234"),
        PoolConfig {
            size: 0,
            ..PoolConfig::default()
        },
    )
    .unwrap_err();
    assert!(
        matches!(err, hsm_backend::HsmError::InvalidInput(_)),
        "{err}"
    );
}

#[test]
fn a_session_remembers_at_most_its_cap_of_keys_and_finds_the_others_again() {
    let t = common::token_with_pool(PoolConfig {
        size: 1,
        cached_keys: 2,
        ..PoolConfig::default()
    });
    let keys: Vec<_> = (0..5)
        .map(|_| t.generate(KeyAlgorithm::Ec(EcCurve::P256), KeyUsage::SignVerify))
        .collect();
    for round in 0..2u8 {
        for key in &keys {
            let digest = Digest::of(HashAlgorithm::Sha256, &[round]);
            t.backend
                .sign(&key.id, SignatureAlgorithm::EcdsaP256Sha256, &digest)
                .unwrap();
            let cached = t.backend.cached_keys();
            assert_eq!(cached.len(), 1, "one idle session: {cached:?}");
            assert!(cached.iter().all(|n| *n <= 2), "{cached:?}");
        }
    }
    assert_eq!(t.backend.cached_keys(), [2]);
}
