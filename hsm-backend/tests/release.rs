//! Releasing keys to workloads on a real SoftHSM2 token: the workload's side is played by
//! the `p256`, `aes-kw` and `aes-gcm` crates, and the token's own refusals are checked
//! with raw PKCS#11 calls that bypass the backend.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Command;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use aes_kw::KwpAes256;
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeInfo, AttributeType, KeyType, ObjectClass};
use cryptoki::session::Session;
use hsm_backend::provision::{self, ReleaseSetup};
use hsm_backend::secrecy::ExposeSecret;
use hsm_backend::{
    EcCurve, HsmError, KeyAlgorithm, KeyClass, KeyId, KeyInfo, KeyLabel, KeySpec, KeyUsage,
    RELEASE_POINT_LEN, ReleaseKdf, ReleasedKey, TRANSPORT_KEY_ID,
};
use p256::elliptic_curve::sec1::ToEncodedPoint;

use common::{TestToken, selector};

const SECRET: &[u8] = b"payroll for march";
const AAD: &[u8] = b"tenant=42";

fn releasable(t: &TestToken) -> KeyInfo {
    let id = common::fresh_id();
    let label = KeyLabel::new("releasable").unwrap();
    let spec = KeySpec::releasable(KeyAlgorithm::Aes256, KeyUsage::EncryptDecrypt).unwrap();
    t.backend.generate_key(&id, &label, spec).unwrap()
}

/// A workload's key pair, made outside the HSM.
fn workload() -> (p256::SecretKey, Vec<u8>) {
    let secret = p256::SecretKey::random(&mut rand::rngs::OsRng);
    let point = secret
        .public_key()
        .to_encoded_point(false)
        .as_bytes()
        .to_vec();
    (secret, point)
}

/// What the workload does: ECDH with the broker's ephemeral key, the X coordinate as the
/// AES-256 key-encryption key, and RFC 5649 unwrap.
fn unwrap_at_workload(secret: &p256::SecretKey, released: &ReleasedKey) -> [u8; 32] {
    assert_eq!(released.kdf, ReleaseKdf::EcdhP256X);
    let ephemeral = p256::PublicKey::from_sec1_bytes(&released.ephemeral_public).unwrap();
    let shared = p256::ecdh::diffie_hellman(secret.to_nonzero_scalar(), ephemeral.as_affine());
    let kek = KwpAes256::new_from_slice(&shared.raw_secret_bytes()[..]).unwrap();
    let mut key = [0u8; 32];
    let unwrapped = kek.unwrap_key(&released.wrapped, &mut key).unwrap();
    assert_eq!(unwrapped.len(), 32);
    key
}

fn raw_object(raw: &Session, id: &[u8], class: ObjectClass) -> cryptoki::object::ObjectHandle {
    let found = raw
        .find_objects(&[Attribute::Class(class), Attribute::Id(id.to_vec())])
        .unwrap();
    assert_eq!(found.len(), 1, "objects with id {id:?}");
    *found.first().unwrap()
}

fn count_objects(raw: &Session) -> usize {
    raw.find_objects(&[]).unwrap().len()
}

fn pkcs11_error(result: Result<impl std::fmt::Debug, CkError>) -> RvError {
    match result {
        Err(CkError::Pkcs11(rv, _)) => rv,
        other => panic!("expected a PKCS#11 error, got {other:?}"),
    }
}

#[test]
fn a_released_key_unwraps_at_the_workload_and_decrypts_what_the_token_encrypted() {
    let t = common::token_with_release_transport();
    let key = releasable(&t);
    let sealed = t.backend.aes_gcm_encrypt(&key.id, SECRET, AAD).unwrap();
    let (secret, point) = workload();

    let released = t.backend.release_key(&key.id, &point).unwrap();
    assert_eq!(released.ephemeral_public.len(), RELEASE_POINT_LEN);
    assert_eq!(released.ephemeral_public[0], 0x04);
    assert_eq!(released.wrapped.len(), 40);
    assert_eq!(released.kdf.name(), "ecdh-p256-x");

    let value = unwrap_at_workload(&secret, &released);
    let cipher = Aes256Gcm::new_from_slice(&value).unwrap();
    let opened = cipher
        .decrypt(
            &Nonce::from(sealed.nonce),
            Payload {
                msg: &sealed.ciphertext,
                aad: AAD,
            },
        )
        .unwrap();
    assert_eq!(opened, SECRET);

    // Each release has its own ephemeral key, and carries the same key.
    let again = t.backend.release_key(&key.id, &point).unwrap();
    assert_ne!(again.ephemeral_public, released.ephemeral_public);
    assert_ne!(again.wrapped, released.wrapped);
    assert_eq!(unwrap_at_workload(&secret, &again), value);
    // Another workload cannot open it.
    let (other, _) = workload();
    let ephemeral = p256::PublicKey::from_sec1_bytes(&released.ephemeral_public).unwrap();
    let shared = p256::ecdh::diffie_hellman(other.to_nonzero_scalar(), ephemeral.as_affine());
    let kek = KwpAes256::new_from_slice(&shared.raw_secret_bytes()[..]).unwrap();
    assert!(kek.unwrap_key(&released.wrapped, &mut [0u8; 32]).is_err());
    // The key still works in the token after its release.
    let reopened = t.backend.aes_gcm_decrypt(&key.id, &sealed, AAD).unwrap();
    assert_eq!(reopened.expose_secret(), SECRET);
}

#[test]
fn a_releasable_key_reads_back_sensitive_extractable_and_wrap_with_trusted() {
    let t = common::token_with_release_transport();
    let key = releasable(&t);
    assert_eq!(key.spec.class(), KeyClass::Releasable);
    let protection = key.protection.unwrap();
    assert!(protection.is_releasable(), "{protection:?}");
    assert!(!protection.is_hardware_bound());
    assert_eq!(t.backend.describe_key(&key.id).unwrap(), key);
    let listed = t.backend.list_keys().unwrap();
    assert!(listed.contains(&key), "{listed:?}");

    let raw = t.raw_session();
    let handle = raw_object(&raw, key.id.as_bytes(), ObjectClass::SECRET_KEY);
    let attrs = raw
        .get_attributes(
            handle,
            &[
                AttributeType::Sensitive,
                AttributeType::Extractable,
                AttributeType::WrapWithTrusted,
                AttributeType::AlwaysSensitive,
                AttributeType::NeverExtractable,
                AttributeType::Local,
                AttributeType::Modifiable,
                AttributeType::Trusted,
            ],
        )
        .unwrap();
    assert_eq!(
        attrs,
        vec![
            Attribute::Sensitive(true),
            Attribute::Extractable(true),
            Attribute::WrapWithTrusted(true),
            Attribute::AlwaysSensitive(true),
            Attribute::NeverExtractable(false),
            Attribute::Local(true),
            Attribute::Modifiable(false),
            Attribute::Trusted(false),
        ]
    );
    let value = raw
        .get_attribute_info(handle, &[AttributeType::Value])
        .unwrap();
    assert!(matches!(value.as_slice(), [AttributeInfo::Sensitive]));
    // Its class cannot be changed: not to standard, not to wrappable by anything.
    for change in [
        Attribute::WrapWithTrusted(false),
        Attribute::Extractable(false),
        Attribute::Sensitive(false),
    ] {
        let rv = pkcs11_error(raw.update_attributes(handle, &[change]));
        assert_eq!(rv, RvError::ActionProhibited);
    }
    let rv = pkcs11_error(raw.copy_object(handle, &[Attribute::WrapWithTrusted(false)]));
    assert_eq!(rv, RvError::AttributeReadOnly);
}

#[test]
fn a_standard_key_is_refused_and_the_token_refuses_to_wrap_it_too() {
    let t = common::token_with_release_transport();
    let standard = t.generate(KeyAlgorithm::Aes256, KeyUsage::EncryptDecrypt);
    assert_eq!(standard.spec.class(), KeyClass::Standard);
    let protection = standard.protection.unwrap();
    assert!(protection.is_hardware_bound() && !protection.is_releasable());
    let (_, point) = workload();

    let err = t.backend.release_key(&standard.id, &point).unwrap_err();
    assert!(
        matches!(&err, HsmError::KeyUsageNotPermitted { reason, .. }
            if reason.contains("not a releasable key")),
        "{err}"
    );
    let signing = t.generate(KeyAlgorithm::Ec(EcCurve::P256), KeyUsage::SignVerify);
    assert!(matches!(
        t.backend.release_key(&signing.id, &point),
        Err(HsmError::KeyUsageNotPermitted { .. })
    ));
    let missing = KeyId::new(b"no-such-key".to_vec()).unwrap();
    assert!(matches!(
        t.backend.release_key(&missing, &point),
        Err(HsmError::KeyNotFound(_))
    ));

    // The token, asked directly, says the same: not extractable, not even under the
    // trusted transport key.
    let raw = t.raw_session();
    let handle = raw_object(&raw, standard.id.as_bytes(), ObjectClass::SECRET_KEY);
    assert_eq!(
        raw.get_attributes(handle, &[AttributeType::Extractable])
            .unwrap(),
        vec![Attribute::Extractable(false)]
    );
    let transport = raw_object(&raw, TRANSPORT_KEY_ID, ObjectClass::SECRET_KEY);
    let rv = pkcs11_error(raw.wrap_key(&Mechanism::AesKeyWrapPad, transport, handle));
    assert_eq!(rv, RvError::KeyUnextractable);
}

#[test]
fn the_token_refuses_to_wrap_a_releasable_key_under_an_untrusted_key() {
    let t = common::token_with_release_transport();
    let key = releasable(&t);
    let raw = t.raw_session();
    let handle = raw_object(&raw, key.id.as_bytes(), ObjectClass::SECRET_KEY);
    let untrusted = raw
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::ValueLen(32.into()),
                Attribute::Token(false),
                Attribute::Wrap(true),
            ],
        )
        .unwrap();
    let rv = pkcs11_error(raw.wrap_key(&Mechanism::AesKeyWrapPad, untrusted, handle));
    assert_eq!(rv, RvError::KeyNotWrappable);
    // And a user session cannot make a trusted key of its own.
    let rv = pkcs11_error(raw.generate_key(
        &Mechanism::AesKeyGen,
        &[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::ValueLen(32.into()),
            Attribute::Token(false),
            Attribute::Wrap(true),
            Attribute::Trusted(true),
        ],
    ));
    assert_eq!(rv, RvError::AttributeReadOnly);
    let rv = pkcs11_error(raw.update_attributes(untrusted, &[Attribute::Trusted(true)]));
    assert_eq!(rv, RvError::AttributeReadOnly);
    // The trusted transport key does wrap it: the one way out.
    let transport = raw_object(&raw, TRANSPORT_KEY_ID, ObjectClass::SECRET_KEY);
    assert!(
        raw.wrap_key(&Mechanism::AesKeyWrapPad, transport, handle)
            .is_ok()
    );
}

#[test]
fn a_bad_workload_point_is_refused() {
    let t = common::token_with_release_transport();
    let key = releasable(&t);
    let (secret, point) = workload();
    let compressed = secret
        .public_key()
        .to_encoded_point(true)
        .as_bytes()
        .to_vec();
    let mut off_curve = point.clone();
    off_curve[64] ^= 0x01;
    let mut hybrid = point.clone();
    hybrid[0] = 0x06;
    let p384 = p384::SecretKey::random(&mut rand::rngs::OsRng)
        .public_key()
        .to_encoded_point(false)
        .as_bytes()
        .to_vec();
    for (what, bad) in [
        ("empty", Vec::new()),
        ("compressed", compressed),
        ("off the curve", off_curve),
        ("not uncompressed", hybrid),
        ("a P-384 point", p384),
        ("all zero", vec![0u8; RELEASE_POINT_LEN]),
        ("too long", [point.as_slice(), &[0]].concat()),
    ] {
        let err = t.backend.release_key(&key.id, &bad).unwrap_err();
        assert!(matches!(err, HsmError::InvalidInput(_)), "{what}: {err}");
    }
}

#[test]
fn a_release_leaves_no_object_behind_whether_it_succeeds_or_fails() {
    let t = common::token_with_release_transport();
    let key = releasable(&t);
    let standard = t.generate(KeyAlgorithm::Aes256, KeyUsage::EncryptDecrypt);
    let raw = t.raw_session();
    let before = count_objects(&raw);
    let (_, point) = workload();
    for _ in 0..3 {
        t.backend.release_key(&key.id, &point).unwrap();
    }
    assert!(t.backend.release_key(&standard.id, &point).is_err());
    assert!(t.backend.release_key(&key.id, &point[1..]).is_err());
    assert_eq!(count_objects(&raw), before);
}

#[test]
fn release_without_the_transport_key_is_refused_clearly() {
    let t = common::token();
    let key = releasable(&t);
    assert_eq!(key.spec.class(), KeyClass::Releasable);
    let raw = t.raw_session();
    let before = count_objects(&raw);
    let (_, point) = workload();
    let err = t.backend.release_key(&key.id, &point).unwrap_err();
    assert!(
        matches!(&err, HsmError::ReleaseNotProvisioned(m)
            if m.contains("create_release_transport_key")),
        "{err}"
    );
    assert_eq!(count_objects(&raw), before);
}

#[test]
fn the_transport_key_set_up_is_idempotent_and_makes_a_trusted_wrap_only_key() {
    let softhsm = softhsm_tests::SoftHsm::new();
    let module = hsm_backend::Pkcs11Module::load(softhsm.module_path()).unwrap();
    let so_pin = common::pin("so-secret-1234");
    provision::init_token(&module, common::TOKEN_LABEL, &so_pin).unwrap();
    provision::init_user_pin(&module, &selector(), &so_pin, &common::pin("user-5678")).unwrap();
    let wrong = provision::create_release_transport_key(&module, &selector(), &common::pin("no"));
    assert!(matches!(wrong, Err(HsmError::PinIncorrect)), "{wrong:?}");
    assert_eq!(
        provision::create_release_transport_key(&module, &selector(), &so_pin).unwrap(),
        ReleaseSetup::Created
    );
    assert_eq!(
        provision::create_release_transport_key(&module, &selector(), &so_pin).unwrap(),
        ReleaseSetup::AlreadyProvisioned
    );
    // Public (the SO makes no private objects), trusted, for wrapping only.
    let token = module.find_token(&selector()).unwrap();
    let raw = module.context().open_ro_session(token.slot()).unwrap();
    let handle = raw_object(&raw, TRANSPORT_KEY_ID, ObjectClass::SECRET_KEY);
    let attrs = raw
        .get_attributes(
            handle,
            &[
                AttributeType::Private,
                AttributeType::Trusted,
                AttributeType::Sensitive,
                AttributeType::Extractable,
                AttributeType::Wrap,
                AttributeType::Unwrap,
                AttributeType::Encrypt,
                AttributeType::Decrypt,
                AttributeType::Modifiable,
            ],
        )
        .unwrap();
    assert_eq!(
        attrs,
        vec![
            Attribute::Private(false),
            Attribute::Trusted(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Wrap(true),
            Attribute::Unwrap(true),
            Attribute::Encrypt(false),
            Attribute::Decrypt(false),
            Attribute::Modifiable(false),
        ]
    );
}

/// `pkcs11-tool` (opensc 0.23) as an operator would run it. It prints no line for
/// `CKA_TRUSTED` or `CKA_WRAP_WITH_TRUSTED`; those are checked above with raw PKCS#11.
#[test]
fn pkcs11_tool_lists_the_standard_key_unextractable_and_the_releasable_key_extractable() {
    let t = common::token_with_release_transport();
    let standard = t.generate(KeyAlgorithm::Aes256, KeyUsage::EncryptDecrypt);
    let key = releasable(&t);
    let tool = softhsm_tests::require_command("pkcs11-tool", "opensc").unwrap();
    let out = Command::new(tool)
        .arg("--module")
        .arg(t.softhsm.module_path())
        .args(["--token-label", common::TOKEN_LABEL])
        .args(["--login", "--pin", "user-secret-5678", "--list-objects"])
        .env("SOFTHSM2_CONF", t.softhsm.conf_path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listing = String::from_utf8_lossy(&out.stdout);
    // Each object is a few indented lines; its Access line follows its ID line.
    let access = |id: &KeyId| -> String {
        listing
            .lines()
            .skip_while(|l| l.trim() != format!("ID:         {id}"))
            .find_map(|l| l.trim().strip_prefix("Access:"))
            .unwrap_or_else(|| panic!("no object {id} with an Access line in:\n{listing}"))
            .trim()
            .to_string()
    };
    assert_eq!(
        access(&standard.id),
        "sensitive, always sensitive, never extractable, local",
        "{listing}"
    );
    assert_eq!(
        access(&key.id),
        "sensitive, always sensitive, extractable, local",
        "{listing}"
    );
    eprintln!("{listing}");
}
