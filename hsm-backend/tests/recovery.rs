//! A token whose files vanish and come back serves again without re-opening the backend,
//! and a key missing from a healthy token does not disturb anything else.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::process::Command;

use hsm_backend::secrecy::ExposeSecret;
use hsm_backend::{
    Digest, EcCurve, HashAlgorithm, HsmError, KeyAlgorithm, KeyUsage, SignatureAlgorithm,
};

const ALG: SignatureAlgorithm = SignatureAlgorithm::EcdsaP256Sha256;

fn sh(script: &str) {
    let status = Command::new("sh").arg("-c").arg(script).status().unwrap();
    assert!(status.success(), "{script}");
}

/// Moves every file of the token directory to `backup`, as a bad restore drill would.
fn take_away(tokens: &Path, backup: &Path) {
    sh(&format!(
        "cp -a '{0}/.' '{1}/' && rm -rf '{0}'/*",
        tokens.display(),
        backup.display()
    ));
}

fn put_back(tokens: &Path, backup: &Path) {
    sh(&format!(
        "cp -a '{}/.' '{}/'",
        backup.display(),
        tokens.display()
    ));
}

#[test]
fn a_token_whose_files_are_removed_and_restored_serves_again() {
    let t = common::token();
    let ec = t.generate(KeyAlgorithm::Ec(EcCurve::P256), KeyUsage::SignVerify);
    let aes = t.generate(KeyAlgorithm::Aes256, KeyUsage::EncryptDecrypt);
    let sealed = t.backend.aes_gcm_encrypt(&aes.id, b"kept", b"").unwrap();
    let d = Digest::of(HashAlgorithm::Sha256, b"x");
    t.backend.sign(&ec.id, ALG, &d).unwrap();

    let backup = tempfile::tempdir().unwrap();
    take_away(t.softhsm.token_dir(), backup.path());
    let err = t.backend.sign(&ec.id, ALG, &d).unwrap_err();
    assert!(
        matches!(
            err,
            HsmError::TokenUnavailable(_) | HsmError::KeyNotFound(_)
        ),
        "{err:?}"
    );

    put_back(t.softhsm.token_dir(), backup.path());
    // The pool re-initialises the module at most once a second: a few tries may be refused.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let signature = loop {
        match t.backend.sign(&ec.id, ALG, &d) {
            Ok(signature) => break signature,
            Err(e) if std::time::Instant::now() < deadline => {
                eprintln!("not yet: {e}");
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            Err(e) => panic!("no recovery: {e}"),
        }
    };
    assert!(t.backend.verify(&ec.id, ALG, &d, &signature).unwrap());
    let opened = t.backend.aes_gcm_decrypt(&aes.id, &sealed, b"").unwrap();
    assert_eq!(opened.expose_secret(), b"kept");
    t.generate(KeyAlgorithm::Ec(EcCurve::P384), KeyUsage::SignVerify);
}

#[test]
fn a_key_missing_from_a_healthy_token_leaves_the_module_alone() {
    let t = common::token();
    let kept = t.generate(KeyAlgorithm::Ec(EcCurve::P256), KeyUsage::SignVerify);
    let gone = t.generate(KeyAlgorithm::Ec(EcCurve::P256), KeyUsage::SignVerify);
    // A session of someone else's in this process: a re-initialisation would void it.
    let bystander = t.raw_session();
    t.backend.destroy_key(&gone.id).unwrap();
    let d = Digest::of(HashAlgorithm::Sha256, b"x");
    for _ in 0..5 {
        let err = t.backend.sign(&gone.id, ALG, &d).unwrap_err();
        assert!(matches!(err, HsmError::KeyNotFound(_)), "{err:?}");
    }
    t.backend.sign(&kept.id, ALG, &d).unwrap();
    bystander
        .get_session_info()
        .expect("the module was not re-initialised");
}

#[test]
fn an_object_that_cannot_be_described_is_still_found_by_id_and_destroyed() {
    use cryptoki::object::{Attribute, KeyType, ObjectClass};
    let t = common::token();
    let id = common::fresh_id();
    // What a kill during key generation can leave: an object with the broker's id whose
    // attributes are not what the broker makes (here: a curve it does not use).
    let secp256k1 = vec![0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x0a];
    let mut point = vec![0x04, 0x41, 0x04];
    point.extend([7u8; 64]);
    let raw = t.raw_session();
    raw.create_object(&[
        Attribute::Class(ObjectClass::PUBLIC_KEY),
        Attribute::KeyType(KeyType::EC),
        Attribute::Token(true),
        Attribute::Id(id.as_bytes().to_vec()),
        Attribute::EcParams(secp256k1),
        Attribute::EcPoint(point),
    ])
    .unwrap();
    assert!(t.backend.describe_key(&id).is_err());
    assert!(t.backend.id_in_use(&id).unwrap());
    t.backend.destroy_key(&id).unwrap();
    assert!(!t.backend.id_in_use(&id).unwrap());
    assert!(!t.backend.id_in_use(&common::fresh_id()).unwrap());
}
