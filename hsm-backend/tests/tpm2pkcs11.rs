//! The backend on a second PKCS#11 module: tpm2-pkcs11 on swtpm behind tpm2-abrmd (the
//! `Tpm2Pkcs11` fixture). What the module offers works; what it lacks is refused before
//! the token is touched, naming the mechanism.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass};
use cryptoki::session::UserType;
use hsm_backend::secrecy::SecretString;
use hsm_backend::{
    Digest, EcCurve, HashAlgorithm, HsmBackend, HsmError, KeyAlgorithm, KeyId, KeyLabel, KeySpec,
    KeyUsage, OaepHash, Pin, Pkcs11Module, PoolConfig, SignatureAlgorithm, TokenSelector,
};
use p256::pkcs8::DecodePublicKey;
use rsa::RsaPublicKey;
use softhsm_tests::Tpm2Pkcs11;

const MESSAGE: &[u8] = b"keys stay in hardware";

struct Token {
    backend: HsmBackend,
    module: Pkcs11Module,
    _fixture: Tpm2Pkcs11,
}

fn token() -> Token {
    let fixture = Tpm2Pkcs11::start();
    fixture.export_env();
    let module = Pkcs11Module::load(fixture.module_path()).unwrap();
    let pin = Pin::new(SecretString::from(Tpm2Pkcs11::USER_PIN)).unwrap();
    let selector = TokenSelector::Label(Tpm2Pkcs11::TOKEN_LABEL.into());
    let backend =
        HsmBackend::open_with(module.clone(), &selector, pin, PoolConfig::default()).unwrap();
    Token {
        backend,
        module,
        _fixture: fixture,
    }
}

impl Token {
    fn generate(&self, id: &str, algorithm: KeyAlgorithm, usage: KeyUsage) -> KeyId {
        let id = KeyId::new(id.as_bytes().to_vec()).unwrap();
        let label = KeyLabel::new(format!("kb:{id}:v1")).unwrap();
        let info = self
            .backend
            .generate_key(&id, &label, KeySpec::new(algorithm, usage).unwrap())
            .unwrap();
        assert_eq!(info.spec.usage(), usage, "{algorithm}");
        assert!(
            info.protection.unwrap().is_hardware_bound(),
            "{algorithm} {:?}",
            info.protection
        );
        id
    }
}

#[test]
fn ec_p256_and_p384_keys_sign_and_verify_with_independent_code() {
    let t = token();
    let p256_key = t.generate(
        "ec256",
        KeyAlgorithm::Ec(EcCurve::P256),
        KeyUsage::SignVerify,
    );
    let digest = Digest::of(HashAlgorithm::Sha256, MESSAGE);
    let sig = t
        .backend
        .sign(&p256_key, SignatureAlgorithm::EcdsaP256Sha256, &digest)
        .unwrap();
    let public = t.backend.public_key(&p256_key).unwrap();
    let vk = p256::ecdsa::VerifyingKey::from_public_key_der(public.as_der()).unwrap();
    use p256::ecdsa::signature::hazmat::PrehashVerifier;
    vk.verify_prehash(
        digest.as_bytes(),
        &p256::ecdsa::Signature::from_der(&sig).unwrap(),
    )
    .unwrap();
    assert!(
        t.backend
            .verify(
                &p256_key,
                SignatureAlgorithm::EcdsaP256Sha256,
                &digest,
                &sig
            )
            .unwrap()
    );

    let p384_key = t.generate(
        "ec384",
        KeyAlgorithm::Ec(EcCurve::P384),
        KeyUsage::SignVerify,
    );
    let digest = Digest::of(HashAlgorithm::Sha384, MESSAGE);
    let sig = t
        .backend
        .sign(&p384_key, SignatureAlgorithm::EcdsaP384Sha384, &digest)
        .unwrap();
    let public = t.backend.public_key(&p384_key).unwrap();
    let vk = p384::ecdsa::VerifyingKey::from_public_key_der(public.as_der()).unwrap();
    vk.verify_prehash(
        digest.as_bytes(),
        &p384::ecdsa::Signature::from_der(&sig).unwrap(),
    )
    .unwrap();
}

#[test]
fn rsa_pss_signs_and_pkcs1v15_over_a_digest_is_refused_by_name() {
    let t = token();
    let key = t.generate("rsa-sign", KeyAlgorithm::Rsa(2048), KeyUsage::SignVerify);
    let digest = Digest::of(HashAlgorithm::Sha256, MESSAGE);
    let sig = t
        .backend
        .sign(
            &key,
            SignatureAlgorithm::RsaPss(HashAlgorithm::Sha256),
            &digest,
        )
        .unwrap();
    let public =
        RsaPublicKey::from_public_key_der(t.backend.public_key(&key).unwrap().as_der()).unwrap();
    public
        .verify(rsa::Pss::new::<sha2::Sha256>(), digest.as_bytes(), &sig)
        .unwrap();
    match t.backend.sign(
        &key,
        SignatureAlgorithm::RsaPkcs1v15(HashAlgorithm::Sha256),
        &digest,
    ) {
        Err(HsmError::MechanismNotSupported(m)) => {
            assert!(m.contains("CKM_RSA_PKCS") && m.contains("RSA-PSS"), "{m}");
        }
        other => panic!("PKCS#1 v1.5 over a digest: {other:?}"),
    }
}

/// The quirk the refusal above rests on: the module's raw `CKM_RSA_PKCS` fails with a
/// sign-only key. If a later tpm2-pkcs11 signs here, `Quirks::TPM2_PKCS11` can drop it.
#[test]
fn raw_rsa_pkcs_signing_fails_on_a_sign_only_key_of_this_module() {
    let t = token();
    let key = t.generate("rsa-raw", KeyAlgorithm::Rsa(2048), KeyUsage::SignVerify);
    let token = t
        .module
        .find_token(&TokenSelector::Label(Tpm2Pkcs11::TOKEN_LABEL.into()))
        .unwrap();
    let session = t.module.context().open_rw_session(token.slot()).unwrap();
    // The backend's pool already logged the application in.
    let _ = session.login(UserType::User, None);
    let handle = session
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Id(key.as_bytes().to_vec()),
        ])
        .unwrap()[0];
    let mut input = vec![
        0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01,
        0x05, 0x00, 0x04, 0x20,
    ];
    input.extend_from_slice(Digest::of(HashAlgorithm::Sha256, MESSAGE).as_bytes());
    let raw = session.sign(&Mechanism::RsaPkcs, handle, &input);
    assert!(raw.is_err(), "raw CKM_RSA_PKCS signed with a sign-only key");
}

#[test]
fn rsa_usage_is_read_from_the_private_half() {
    let t = token();
    let signing = t.generate("rsa-s", KeyAlgorithm::Rsa(2048), KeyUsage::SignVerify);
    let encrypting = t.generate("rsa-e", KeyAlgorithm::Rsa(2048), KeyUsage::EncryptDecrypt);
    for (id, usage) in [
        (&signing, KeyUsage::SignVerify),
        (&encrypting, KeyUsage::EncryptDecrypt),
    ] {
        assert_eq!(t.backend.describe_key(id).unwrap().spec.usage(), usage);
    }
    // The public half of the decryption key (CKA_VERIFY set by the module) still encrypts,
    // and the private half decrypts.
    let ciphertext = t
        .backend
        .rsa_encrypt(&encrypting, OaepHash::Sha256, b"data key")
        .unwrap();
    let plain = t
        .backend
        .rsa_decrypt(&encrypting, OaepHash::Sha256, &ciphertext)
        .unwrap();
    use hsm_backend::secrecy::ExposeSecret;
    assert_eq!(plain.expose_secret(), b"data key");
}

#[test]
fn keys_the_module_cannot_make_are_refused_and_nothing_is_created() {
    let t = token();
    let caps = t.backend.capabilities();
    assert_eq!(caps.rsa_key_bits(), Some((1024, 3072)));
    for (algorithm, usage, mechanism) in [
        (
            KeyAlgorithm::Aes256,
            KeyUsage::EncryptDecrypt,
            "CKM_AES_GCM",
        ),
        (
            KeyAlgorithm::Aes256,
            KeyUsage::WrapUnwrap,
            "CKM_AES_KEY_WRAP_PAD",
        ),
        (
            KeyAlgorithm::Rsa(4096),
            KeyUsage::SignVerify,
            "CKM_RSA_PKCS_KEY_PAIR_GEN",
        ),
    ] {
        let id = KeyId::new(b"refused".to_vec()).unwrap();
        let label = KeyLabel::new("kb:refused:v1").unwrap();
        match t
            .backend
            .generate_key(&id, &label, KeySpec::new(algorithm, usage).unwrap())
        {
            Err(HsmError::MechanismNotSupported(m)) => {
                assert!(m.starts_with(mechanism), "{algorithm}: {m}");
            }
            other => panic!("{algorithm}: {other:?}"),
        }
    }
    assert!(t.backend.list_labels().unwrap().is_empty());
}
