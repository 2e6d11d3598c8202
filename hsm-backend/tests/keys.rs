//! Key generation, protection, persistence and lifecycle on a real SoftHSM2 token.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{all_specs, fresh_id, selector, spec};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeInfo, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use hsm_backend::{
    Digest, EcCurve, HashAlgorithm, HsmBackend, HsmError, KeyAlgorithm, KeyId, KeyLabel, KeyUsage,
    Pkcs11Module, PoolConfig, SignatureAlgorithm,
};

fn secret_object(session: &Session, id: &KeyId) -> ObjectHandle {
    for class in [ObjectClass::PRIVATE_KEY, ObjectClass::SECRET_KEY] {
        let found = session
            .find_objects(&[
                Attribute::Class(class),
                Attribute::Id(id.as_bytes().to_vec()),
            ])
            .unwrap();
        if let Some(handle) = found.first() {
            return *handle;
        }
    }
    panic!("no private or secret object for {id}");
}

#[test]
fn every_key_type_is_made_in_the_token_sensitive_and_non_extractable() {
    let t = common::token();
    let raw = t.raw_session();
    for (algorithm, usage) in all_specs() {
        let key = t.generate(algorithm, usage);
        assert_eq!(key.spec, spec(algorithm, usage));
        let protection = key.protection.expect("a private or secret part");
        assert!(
            protection.is_hardware_bound(),
            "{algorithm} {usage:?}: {protection:?}"
        );

        let handle = secret_object(&raw, &key.id);
        let secret_attribute = match algorithm {
            KeyAlgorithm::Rsa(_) => AttributeType::PrivateExponent,
            _ => AttributeType::Value,
        };
        let info = raw.get_attribute_info(handle, &[secret_attribute]).unwrap();
        assert!(
            matches!(info.as_slice(), [AttributeInfo::Sensitive]),
            "{algorithm} {usage:?}: {info:?}"
        );
        // Reading it anyway yields nothing (SoftHSM answers Ok with no value).
        assert!(
            raw.get_attributes(handle, &[secret_attribute])
                .unwrap()
                .is_empty()
        );
        // And it cannot be made extractable after the fact.
        assert!(
            raw.update_attributes(handle, &[Attribute::Extractable(true)])
                .is_err()
        );
    }
}

/// Every object of a key, private, secret or public.
fn key_objects(session: &Session, id: &KeyId) -> Vec<(ObjectClass, ObjectHandle)> {
    let mut objects = Vec::new();
    for class in [
        ObjectClass::PRIVATE_KEY,
        ObjectClass::SECRET_KEY,
        ObjectClass::PUBLIC_KEY,
    ] {
        let found = session
            .find_objects(&[
                Attribute::Class(class),
                Attribute::Id(id.as_bytes().to_vec()),
            ])
            .unwrap();
        objects.extend(found.into_iter().map(|handle| (class, handle)));
    }
    objects
}

#[test]
fn a_pin_holder_cannot_turn_on_another_usage_later() {
    let t = common::token();
    let raw = t.raw_session();
    for (algorithm, usage) in all_specs() {
        let key = t.generate(algorithm, usage);
        let objects = key_objects(&raw, &key.id);
        assert!(!objects.is_empty(), "{algorithm} {usage:?}");
        for (class, handle) in objects {
            let modifiable = raw
                .get_attributes(handle, &[AttributeType::Modifiable])
                .unwrap();
            assert!(
                matches!(modifiable.as_slice(), [Attribute::Modifiable(false)]),
                "{algorithm} {usage:?} {class}: {modifiable:?}"
            );
            let widen = [
                Attribute::Decrypt(true),
                Attribute::Encrypt(true),
                Attribute::Wrap(true),
                Attribute::Unwrap(true),
                Attribute::Sign(true),
                Attribute::Verify(true),
                Attribute::Label(b"renamed".to_vec()),
            ];
            for attribute in widen {
                let err = raw
                    .update_attributes(handle, std::slice::from_ref(&attribute))
                    .unwrap_err();
                // SoftHSM2 answers CKR_ACTION_PROHIBITED (CKA_MODIFIABLE false); other
                // modules may say CKR_ATTRIBUTE_READ_ONLY.
                assert!(
                    matches!(
                        err,
                        CkError::Pkcs11(RvError::ActionProhibited | RvError::AttributeReadOnly, _)
                    ),
                    "{algorithm} {usage:?} {class} {attribute:?}: {err}"
                );
            }
        }
        // The key still works as made, and still only as made.
        assert_eq!(t.backend.describe_key(&key.id).unwrap().spec, key.spec);
    }
}

#[test]
fn wrapping_private_and_secret_keys_out_of_the_token_fails() {
    let t = common::token();
    let kek = t.generate(KeyAlgorithm::Aes256, KeyUsage::WrapUnwrap);
    let raw = t.raw_session();
    let kek_handle = secret_object(&raw, &kek.id);
    for (algorithm, usage) in [
        (KeyAlgorithm::Ec(EcCurve::P256), KeyUsage::SignVerify),
        (KeyAlgorithm::Rsa(2048), KeyUsage::SignVerify),
        (KeyAlgorithm::Aes256, KeyUsage::EncryptDecrypt),
        (KeyAlgorithm::HmacSha256, KeyUsage::Mac),
    ] {
        let target = secret_object(&raw, &t.generate(algorithm, usage).id);
        let err = raw
            .wrap_key(&Mechanism::AesKeyWrapPad, kek_handle, target)
            .unwrap_err();
        assert!(
            matches!(err, CkError::Pkcs11(RvError::KeyUnextractable, _)),
            "{algorithm}: {err}"
        );
    }
}

#[test]
fn the_token_itself_refuses_a_use_outside_the_key_usage() {
    let t = common::token();
    let decrypt_only = t.generate(KeyAlgorithm::Rsa(2048), KeyUsage::EncryptDecrypt);
    let raw = t.raw_session();
    let handle = secret_object(&raw, &decrypt_only.id);
    let err = raw
        .sign(&Mechanism::RsaPkcs, handle, &[0u8; 51])
        .unwrap_err();
    assert!(
        matches!(err, CkError::Pkcs11(RvError::KeyFunctionNotPermitted, _)),
        "{err}"
    );
    // The backend says so before asking the token.
    let digest = Digest::of(HashAlgorithm::Sha256, b"m");
    let err = t
        .backend
        .sign(
            &decrypt_only.id,
            SignatureAlgorithm::RsaPss(HashAlgorithm::Sha256),
            &digest,
        )
        .unwrap_err();
    assert!(
        matches!(err, HsmError::KeyUsageNotPermitted { .. }),
        "{err}"
    );
}

#[test]
fn keys_are_found_again_by_id_after_the_process_lets_go_of_the_module() {
    let common::TestToken {
        backend,
        module,
        user_pin,
        softhsm,
        ..
    } = common::token();
    let ec = backend
        .generate_key(
            &KeyId::new(b"persistent-ec".to_vec()).unwrap(),
            &KeyLabel::new("persistent").unwrap(),
            spec(KeyAlgorithm::Ec(EcCurve::P256), KeyUsage::SignVerify),
        )
        .unwrap();
    let public_before = backend.public_key(&ec.id).unwrap();
    drop(backend);
    drop(module); // C_Finalize: nothing survives but the token directory.

    let module = Pkcs11Module::load(softhsm.module_path()).unwrap();
    let backend =
        HsmBackend::open_with(module, &selector(), user_pin, PoolConfig::default()).unwrap();
    let found = backend.describe_key(&ec.id).unwrap();
    assert_eq!(found, ec);
    assert_eq!(backend.public_key(&ec.id).unwrap(), public_before);
    let digest = Digest::of(HashAlgorithm::Sha256, b"after restart");
    let sig = backend
        .sign(&ec.id, SignatureAlgorithm::EcdsaP256Sha256, &digest)
        .unwrap();
    assert!(
        backend
            .verify(&ec.id, SignatureAlgorithm::EcdsaP256Sha256, &digest, &sig)
            .unwrap()
    );
}

#[test]
fn a_taken_id_is_refused_and_the_existing_key_is_untouched() {
    let t = common::token();
    let key = t.generate(KeyAlgorithm::Ec(EcCurve::P256), KeyUsage::SignVerify);
    let public = t.backend.public_key(&key.id).unwrap();
    let err = t
        .backend
        .generate_key(
            &key.id,
            &KeyLabel::new("again").unwrap(),
            spec(KeyAlgorithm::Aes256, KeyUsage::EncryptDecrypt),
        )
        .unwrap_err();
    assert!(matches!(err, HsmError::KeyExists(_)), "{err}");
    assert_eq!(t.backend.describe_key(&key.id).unwrap(), key);
    assert_eq!(t.backend.public_key(&key.id).unwrap(), public);
}

#[test]
fn an_unknown_key_is_refused_by_every_operation() {
    let t = common::token();
    let id = fresh_id();
    let digest = Digest::of(HashAlgorithm::Sha256, b"m");
    let errors = [
        t.backend.describe_key(&id).unwrap_err(),
        t.backend.public_key(&id).unwrap_err(),
        t.backend
            .sign(&id, SignatureAlgorithm::EcdsaP256Sha256, &digest)
            .unwrap_err(),
        t.backend
            .verify(
                &id,
                SignatureAlgorithm::EcdsaP256Sha256,
                &digest,
                &[0x30, 0],
            )
            .unwrap_err(),
        t.backend.mac(&id, b"m").unwrap_err(),
        t.backend.aes_gcm_encrypt(&id, b"m", b"").unwrap_err(),
        t.backend
            .rsa_encrypt(&id, hsm_backend::OaepHash::Sha1, b"m")
            .unwrap_err(),
        t.backend.destroy_key(&id).unwrap_err(),
    ];
    for err in errors {
        assert!(
            matches!(&err, HsmError::KeyNotFound(k) if *k == id)
                || matches!(err, HsmError::InvalidInput(_)),
            "{err}"
        );
    }
    assert_eq!(
        t.backend.describe_key(&id).unwrap_err().to_string(),
        format!("key {id} not found")
    );
}

#[test]
fn destroyed_keys_are_gone_from_every_pooled_session() {
    let t = common::token();
    let key = t.generate(KeyAlgorithm::Ec(EcCurve::P256), KeyUsage::SignVerify);
    let digest = Digest::of(HashAlgorithm::Sha256, b"m");
    // Use it from several sessions so that each caches the handle.
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                for _ in 0..10 {
                    t.backend
                        .sign(&key.id, SignatureAlgorithm::EcdsaP256Sha256, &digest)
                        .unwrap();
                }
            });
        }
    });
    t.backend.destroy_key(&key.id).unwrap();
    for _ in 0..8 {
        let err = t
            .backend
            .sign(&key.id, SignatureAlgorithm::EcdsaP256Sha256, &digest)
            .unwrap_err();
        assert!(matches!(err, HsmError::KeyNotFound(_)), "{err}");
    }
    assert!(matches!(
        t.backend.destroy_key(&key.id),
        Err(HsmError::KeyNotFound(_))
    ));
    let raw = t.raw_session();
    let left = raw
        .find_objects(&[Attribute::Id(key.id.as_bytes().to_vec())])
        .unwrap();
    assert!(left.is_empty(), "public and private halves are both gone");
}

#[test]
fn list_shows_generated_and_imported_keys() {
    let t = common::token();
    let ec = t.generate(KeyAlgorithm::Ec(EcCurve::P384), KeyUsage::SignVerify);
    let aes = t.generate(KeyAlgorithm::Aes256, KeyUsage::EncryptDecrypt);
    let spki = t.backend.public_key(&ec.id).unwrap();
    let imported = t
        .backend
        .import_public_key(
            &fresh_id(),
            &KeyLabel::new("imported").unwrap(),
            spki.as_der(),
            KeyUsage::SignVerify,
        )
        .unwrap();
    let listed = t.backend.list_keys().unwrap();
    assert_eq!(listed.len(), 3, "{listed:?}");
    for key in [&ec, &aes, &imported] {
        assert!(listed.contains(key), "{key:?} missing");
    }
    assert_eq!(imported.protection, None);
}

#[test]
fn labels_are_listed_once_per_key_in_one_pass() {
    let t = common::token();
    let ec = t.generate(KeyAlgorithm::Ec(EcCurve::P256), KeyUsage::SignVerify);
    let aes = t.generate(KeyAlgorithm::Aes256, KeyUsage::EncryptDecrypt);
    let mut listed = t.backend.list_labels().unwrap();
    listed.sort();
    let mut expected = vec![
        (ec.id.clone(), ec.label.clone()),
        (aes.id.clone(), aes.label.clone()),
    ];
    expected.sort();
    // The EC key's private and public objects share an id: it is listed once.
    assert_eq!(listed, expected);
    // The same keys that the describing listing finds.
    let described: Vec<_> = t
        .backend
        .list_keys()
        .unwrap()
        .into_iter()
        .map(|k| k.id)
        .collect();
    assert_eq!(described.len(), listed.len());
}

#[test]
fn bad_key_names_are_refused() {
    assert!(KeyId::new(Vec::new()).is_err());
    assert!(KeyLabel::new("line\nbreak").is_err());
    assert!(hsm_backend::KeySpec::new(KeyAlgorithm::Rsa(1024), KeyUsage::SignVerify).is_err());
}
