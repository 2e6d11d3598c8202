//! End to end: the real `keybroker` process on SoftHSM2 and swtpm, called over mTLS: every
//! key operation, listing page by page, restarts, and a `kill -9` in the middle of a
//! creation.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;
// Listing and crash recovery, in files of their own so that each stays short.
#[path = "broker_keys/crash.rs"]
mod crash;
#[path = "broker_keys/faults.rs"]
mod faults;
#[path = "broker_keys/listing.rs"]
mod listing;
#[path = "broker_keys/recovery.rs"]
mod recovery;
#[path = "broker_keys/startup.rs"]
mod startup;
#[path = "broker_keys/store_integrity.rs"]
mod store_integrity;
#[path = "broker_keys/store_loss.rs"]
mod store_loss;

use common::{BrokerProcess, create};
use keybroker_api::v1 as pb;
use pb::KeyAlgorithm as A;
use pb::KeyPurpose as P;
use sha2::Digest as _;
use tonic::Code;

fn sign_req(name: &str, message: &[u8], scheme: pb::SignatureScheme) -> pb::SignRequest {
    pb::SignRequest {
        name: name.into(),
        input: Some(pb::sign_request::Input::Message(message.to_vec())),
        scheme: scheme as i32,
    }
}

fn verify_req(
    name: &str,
    version: u32,
    message: &[u8],
    signature: Vec<u8>,
    scheme: pb::SignatureScheme,
) -> pb::VerifyRequest {
    pb::VerifyRequest {
        name: name.into(),
        key_version: version,
        input: Some(pb::verify_request::Input::Message(message.to_vec())),
        signature,
        scheme: scheme as i32,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_key_operation_works_on_both_backends() {
    let broker = BrokerProcess::start();
    let mut keys = broker.keys("admin").await;
    use pb::SignatureScheme as S;
    let signing = [
        ("softhsm", "hsm-ec256", A::EcP256, S::Default),
        ("softhsm", "hsm-ec384", A::EcP384, S::Ecdsa),
        ("softhsm", "hsm-rsa", A::Rsa2048, S::RsaPkcs1V15),
        ("softhsm", "hsm-rsa-pss", A::Rsa2048, S::RsaPss),
        ("swtpm", "tpm-ec256", A::EcP256, S::Default),
        ("swtpm", "tpm-rsa", A::Rsa2048, S::RsaPss),
    ];
    for (backend, name, alg, scheme) in signing {
        let key = keys
            .create_key(create(name, alg, P::SignVerify, backend))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(key.backend, backend);
        assert_eq!(key.primary_version, 1);
        let got = keys
            .get_key(pb::KeyRef { name: name.into() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(got, key);
        let signed = keys
            .sign(sign_req(name, b"hello", scheme))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(signed.key_version, 1);
        let ok = keys
            .verify(verify_req(
                name,
                1,
                b"hello",
                signed.signature.clone(),
                scheme,
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(ok.valid, "{name}");
        let bad = keys
            .verify(verify_req(
                name,
                1,
                b"hellO",
                signed.signature.clone(),
                scheme,
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(!bad.valid, "{name}");
        let public = keys
            .get_public_key(pb::GetPublicKeyRequest {
                name: name.into(),
                version: 0,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(public.pem.starts_with("-----BEGIN PUBLIC KEY-----"));
        if alg == A::EcP256 {
            // Verified outside the broker too.
            use p256::ecdsa::signature::Verifier;
            use p256::pkcs8::DecodePublicKey;
            let vk = p256::ecdsa::VerifyingKey::from_public_key_der(&public.spki_der).unwrap();
            let sig = p256::ecdsa::Signature::from_der(&signed.signature).unwrap();
            vk.verify(b"hello", &sig).unwrap();
        }
        // A batch signs many digests under one version.
        let digests: Vec<Vec<u8>> = (0..4u8)
            .map(|i| {
                if alg == A::EcP384 {
                    sha2::Sha384::digest([i]).to_vec()
                } else {
                    sha2::Sha256::digest([i]).to_vec()
                }
            })
            .collect();
        let batch = keys
            .sign_batch(pb::SignBatchRequest {
                name: name.into(),
                digests: digests.clone(),
                scheme: scheme as i32,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(batch.signatures.len(), 4);
        for (d, s) in digests.iter().zip(batch.signatures) {
            let v = pb::VerifyRequest {
                name: name.into(),
                key_version: 1,
                input: Some(pb::verify_request::Input::Digest(d.clone())),
                signature: s,
                scheme: scheme as i32,
            };
            assert!(keys.verify(v).await.unwrap().into_inner().valid);
        }
    }
    let encryption = [
        ("softhsm", "hsm-aes", A::Aes256, b"aad".to_vec()),
        ("softhsm", "hsm-rsa-enc", A::Rsa2048, vec![]),
        ("swtpm", "tpm-rsa-enc", A::Rsa2048, vec![]),
    ];
    for (backend, name, alg, aad) in encryption {
        keys.create_key(create(name, alg, P::EncryptDecrypt, backend))
            .await
            .unwrap();
        let sealed = keys
            .encrypt(pb::EncryptRequest {
                name: name.into(),
                plaintext: b"secret".to_vec(),
                aad: aad.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        let opened = keys
            .decrypt(pb::DecryptRequest {
                name: name.into(),
                ciphertext: sealed.ciphertext.clone(),
                aad: aad.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(opened.plaintext, b"secret");
        let mut tampered = sealed.ciphertext.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        let err = keys
            .decrypt(pb::DecryptRequest {
                name: name.into(),
                ciphertext: tampered,
                aad: aad.clone(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{name}: {err:?}");
        let data_key = keys
            .generate_data_key(pb::GenerateDataKeyRequest {
                name: name.into(),
                aad: aad.clone(),
                chunk_size: 0,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(data_key.plaintext.len(), 32);
        let again = keys
            .decrypt(pb::DecryptRequest {
                name: name.into(),
                ciphertext: data_key.ciphertext.clone(),
                aad,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(again.plaintext, data_key.plaintext);
    }
    // AES keys exist only in HSMs.
    let err = keys
        .create_key(create("tpm-aes", A::Aes256, P::EncryptDecrypt, "swtpm"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);
    let listed = keys
        .list_keys(pb::ListKeysRequest {
            prefix: "tpm-".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.keys.len(), 3);
    // Keys stay in hardware: every private and secret key is sensitive and not extractable.
    for kind in ["privkey", "secrkey"] {
        let objects = broker.pkcs11_tool(&["--list-objects", "--type", kind]);
        let access: Vec<&str> = objects
            .lines()
            .filter(|l| l.trim().starts_with("Access:"))
            .collect();
        assert!(!access.is_empty(), "{objects}");
        for line in access {
            assert!(
                line.contains("always sensitive") && line.contains("never extractable"),
                "{line}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rotation_keeps_old_ciphertexts_and_signatures_usable_until_retired() {
    let broker = BrokerProcess::start();
    let mut keys = broker.keys("admin").await;
    for (backend, alg) in [("softhsm", A::Aes256), ("swtpm", A::Rsa2048)] {
        let name = format!("rot-{backend}");
        keys.create_key(create(&name, alg, P::EncryptDecrypt, backend))
            .await
            .unwrap();
        let old = keys
            .encrypt(pb::EncryptRequest {
                name: name.clone(),
                plaintext: b"v1 data".to_vec(),
                aad: vec![],
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(old.key_version, 1);
        let rotated = keys
            .rotate_key(pb::KeyRef { name: name.clone() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(rotated.primary_version, 2);
        assert_eq!(rotated.versions.len(), 2);
        let new = keys
            .encrypt(pb::EncryptRequest {
                name: name.clone(),
                plaintext: b"v2 data".to_vec(),
                aad: vec![],
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(new.key_version, 2);
        let opened = keys
            .decrypt(pb::DecryptRequest {
                name: name.clone(),
                ciphertext: old.ciphertext.clone(),
                aad: vec![],
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            (opened.plaintext.as_slice(), opened.key_version),
            (&b"v1 data"[..], 1)
        );
        // Retire version 1: its ciphertexts are refused; version 2 still works.
        keys.retire_key_version(pb::KeyVersionRef {
            name: name.clone(),
            version: 1,
        })
        .await
        .unwrap();
        let err = keys
            .decrypt(pb::DecryptRequest {
                name: name.clone(),
                ciphertext: old.ciphertext,
                aad: vec![],
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
        keys.decrypt(pb::DecryptRequest {
            name: name.clone(),
            ciphertext: new.ciphertext,
            aad: vec![],
        })
        .await
        .unwrap();
        // The primary version cannot be retired.
        let err = keys
            .retire_key_version(pb::KeyVersionRef { name, version: 2 })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition);
    }
    // Signatures name their version and verify after rotation.
    keys.create_key(create("rot-sign", A::EcP256, P::SignVerify, "softhsm"))
        .await
        .unwrap();
    let s1 = keys
        .sign(sign_req("rot-sign", b"m", pb::SignatureScheme::Default))
        .await
        .unwrap()
        .into_inner();
    keys.rotate_key(pb::KeyRef {
        name: "rot-sign".into(),
    })
    .await
    .unwrap();
    let s2 = keys
        .sign(sign_req("rot-sign", b"m", pb::SignatureScheme::Default))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((s1.key_version, s2.key_version), (1, 2));
    let v = keys
        .verify(verify_req(
            "rot-sign",
            1,
            b"m",
            s1.signature.clone(),
            pb::SignatureScheme::Default,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(v.valid);
    let wrong_version = keys
        .verify(verify_req(
            "rot-sign",
            2,
            b"m",
            s1.signature,
            pb::SignatureScheme::Default,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(!wrong_version.valid);
}

#[tokio::test(flavor = "multi_thread")]
async fn disabled_revoked_and_scheduled_keys_refuse_use() {
    let broker = BrokerProcess::start();
    let mut keys = broker.keys("admin").await;
    keys.create_key(create("life", A::EcP256, P::SignVerify, "softhsm"))
        .await
        .unwrap();
    let r = || pb::KeyRef {
        name: "life".into(),
    };
    let sign = || sign_req("life", b"x", pb::SignatureScheme::Default);
    keys.disable_key(r()).await.unwrap();
    assert_eq!(
        keys.sign(sign()).await.unwrap_err().code(),
        Code::FailedPrecondition
    );
    keys.enable_key(r()).await.unwrap();
    keys.sign(sign()).await.unwrap();
    let revoked = keys.revoke_key(r()).await.unwrap().into_inner();
    assert_eq!(revoked.state, pb::KeyState::Revoked as i32);
    assert_eq!(
        keys.sign(sign()).await.unwrap_err().code(),
        Code::FailedPrecondition
    );
    // Revocation is final: enabling is refused.
    assert_eq!(
        keys.enable_key(r()).await.unwrap_err().code(),
        Code::FailedPrecondition
    );
    // Destruction waits; below the configured minimum is refused; cancelling keeps it revoked.
    let err = keys
        .schedule_key_destruction(pb::ScheduleKeyDestructionRequest {
            name: "life".into(),
            pending_days: 0,
        })
        .await;
    assert!(err.is_ok(), "{err:?}");
    let scheduled = keys.get_key(r()).await.unwrap().into_inner();
    assert!(scheduled.destroy_after > 0);
    let cancelled = keys.cancel_key_destruction(r()).await.unwrap().into_inner();
    assert_eq!(
        (cancelled.state, cancelled.destroy_after),
        (pb::KeyState::Revoked as i32, 0)
    );

    keys.create_key(create("doomed", A::Aes256, P::EncryptDecrypt, "softhsm"))
        .await
        .unwrap();
    let pending = keys
        .schedule_key_destruction(pb::ScheduleKeyDestructionRequest {
            name: "doomed".into(),
            pending_days: 3,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(pending.state, pb::KeyState::PendingDestruction as i32);
    let err = keys
        .encrypt(pb::EncryptRequest {
            name: "doomed".into(),
            plaintext: b"x".to_vec(),
            aad: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    let restored = keys
        .cancel_key_destruction(pb::KeyRef {
            name: "doomed".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(restored.state, pb::KeyState::Disabled as i32);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_key_survives_a_broker_restart() {
    let mut broker = BrokerProcess::start();
    let mut keys = broker.keys("admin").await;
    let mut sealed = Vec::new();
    for (backend, name, alg, purpose) in [
        ("softhsm", "r-ec", A::EcP256, P::SignVerify),
        ("softhsm", "r-aes", A::Aes256, P::EncryptDecrypt),
        ("swtpm", "r-tpm-ec", A::EcP256, P::SignVerify),
        ("swtpm", "r-tpm-rsa", A::Rsa2048, P::EncryptDecrypt),
    ] {
        keys.create_key(create(name, alg, purpose, backend))
            .await
            .unwrap();
        if purpose == P::EncryptDecrypt {
            let c = keys
                .encrypt(pb::EncryptRequest {
                    name: name.into(),
                    plaintext: name.as_bytes().to_vec(),
                    aad: vec![],
                })
                .await
                .unwrap()
                .into_inner();
            sealed.push((name, c.ciphertext));
        }
    }
    broker.restart();
    let mut keys = broker.keys("admin").await;
    for name in ["r-ec", "r-tpm-ec"] {
        let s = keys
            .sign(sign_req(name, b"after", pb::SignatureScheme::Default))
            .await
            .unwrap()
            .into_inner();
        let v = keys
            .verify(verify_req(
                name,
                s.key_version,
                b"after",
                s.signature,
                pb::SignatureScheme::Default,
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(v.valid);
    }
    for (name, ciphertext) in sealed {
        let p = keys
            .decrypt(pb::DecryptRequest {
                name: name.into(),
                ciphertext,
                aad: vec![],
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(p.plaintext, name.as_bytes());
    }
}
