//! Signatures and MACs made in the token, checked by independent implementations, and
//! independent signatures checked by the token.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::fresh_id;
use hsm_backend::{
    Digest, EcCurve, HashAlgorithm, HsmError, KeyAlgorithm, KeyLabel, KeyUsage, SignatureAlgorithm,
};
use p256::ecdsa::signature::hazmat::{PrehashSigner, PrehashVerifier};
use p256::pkcs8::DecodePublicKey;
use rsa::{Pkcs1v15Sign, Pss, RsaPublicKey};

const MESSAGE: &[u8] = b"keys stay in hardware";

#[test]
fn ecdsa_p256_signatures_verify_with_the_p256_crate() {
    let t = common::token();
    let key = t.generate(KeyAlgorithm::Ec(EcCurve::P256), KeyUsage::SignVerify);
    let digest = Digest::of(HashAlgorithm::Sha256, MESSAGE);
    let sig = t
        .backend
        .sign(&key.id, SignatureAlgorithm::EcdsaP256Sha256, &digest)
        .unwrap();
    let public = p256::ecdsa::VerifyingKey::from_public_key_der(
        t.backend.public_key(&key.id).unwrap().as_der(),
    )
    .unwrap();
    let parsed = p256::ecdsa::Signature::from_der(&sig).unwrap();
    public.verify_prehash(digest.as_bytes(), &parsed).unwrap();
    assert!(
        t.backend
            .verify(&key.id, SignatureAlgorithm::EcdsaP256Sha256, &digest, &sig)
            .unwrap()
    );
    let other = Digest::of(HashAlgorithm::Sha256, b"another message");
    assert!(public.verify_prehash(other.as_bytes(), &parsed).is_err());
    assert!(
        !t.backend
            .verify(&key.id, SignatureAlgorithm::EcdsaP256Sha256, &other, &sig)
            .unwrap()
    );
}

#[test]
fn ecdsa_p384_signatures_verify_with_the_p384_crate() {
    let t = common::token();
    let key = t.generate(KeyAlgorithm::Ec(EcCurve::P384), KeyUsage::SignVerify);
    let digest = Digest::of(HashAlgorithm::Sha384, MESSAGE);
    let sig = t
        .backend
        .sign(&key.id, SignatureAlgorithm::EcdsaP384Sha384, &digest)
        .unwrap();
    let public = p384::ecdsa::VerifyingKey::from_public_key_der(
        t.backend.public_key(&key.id).unwrap().as_der(),
    )
    .unwrap();
    public
        .verify_prehash(
            digest.as_bytes(),
            &p384::ecdsa::Signature::from_der(&sig).unwrap(),
        )
        .unwrap();
    assert!(
        t.backend
            .verify(&key.id, SignatureAlgorithm::EcdsaP384Sha384, &digest, &sig)
            .unwrap()
    );
}

#[test]
fn independent_ecdsa_signatures_verify_in_the_token() {
    let t = common::token();
    for curve in [EcCurve::P256, EcCurve::P384] {
        let (spki, digest, sig, alg) = match curve {
            EcCurve::P256 => {
                let sk = p256::ecdsa::SigningKey::random(&mut rand::thread_rng());
                let digest = Digest::of(HashAlgorithm::Sha256, MESSAGE);
                let sig: p256::ecdsa::Signature = sk.sign_prehash(digest.as_bytes()).unwrap();
                let spki =
                    p256::pkcs8::EncodePublicKey::to_public_key_der(sk.verifying_key()).unwrap();
                (
                    spki.as_bytes().to_vec(),
                    digest,
                    sig.to_der().as_bytes().to_vec(),
                    SignatureAlgorithm::EcdsaP256Sha256,
                )
            }
            EcCurve::P384 => {
                let sk = p384::ecdsa::SigningKey::random(&mut rand::thread_rng());
                let digest = Digest::of(HashAlgorithm::Sha384, MESSAGE);
                let sig: p384::ecdsa::Signature = sk.sign_prehash(digest.as_bytes()).unwrap();
                let spki =
                    p384::pkcs8::EncodePublicKey::to_public_key_der(sk.verifying_key()).unwrap();
                (
                    spki.as_bytes().to_vec(),
                    digest,
                    sig.to_der().as_bytes().to_vec(),
                    SignatureAlgorithm::EcdsaP384Sha384,
                )
            }
        };
        let imported = t
            .backend
            .import_public_key(
                &fresh_id(),
                &KeyLabel::new("external").unwrap(),
                &spki,
                KeyUsage::SignVerify,
            )
            .unwrap();
        assert!(
            t.backend.verify(&imported.id, alg, &digest, &sig).unwrap(),
            "{curve:?}"
        );
        let mut tampered = sig.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(
            !t.backend
                .verify(&imported.id, alg, &digest, &tampered)
                .unwrap()
        );
        // An imported public key has no private half: signing with it is refused.
        let err = t.backend.sign(&imported.id, alg, &digest).unwrap_err();
        assert!(
            matches!(err, HsmError::KeyUsageNotPermitted { .. }),
            "{err}"
        );
    }
}

fn rsa_public(t: &common::TestToken, id: &hsm_backend::KeyId) -> RsaPublicKey {
    RsaPublicKey::from_public_key_der(t.backend.public_key(id).unwrap().as_der()).unwrap()
}

fn independent_rsa_verify(
    public: &RsaPublicKey,
    alg: SignatureAlgorithm,
    digest: &Digest,
    sig: &[u8],
) -> bool {
    use HashAlgorithm::*;
    use SignatureAlgorithm::*;
    let d = digest.as_bytes();
    let result = match alg {
        RsaPkcs1v15(Sha256) => public.verify(Pkcs1v15Sign::new::<sha2::Sha256>(), d, sig),
        RsaPkcs1v15(Sha384) => public.verify(Pkcs1v15Sign::new::<sha2::Sha384>(), d, sig),
        RsaPkcs1v15(Sha512) => public.verify(Pkcs1v15Sign::new::<sha2::Sha512>(), d, sig),
        RsaPss(Sha256) => public.verify(Pss::new::<sha2::Sha256>(), d, sig),
        RsaPss(Sha384) => public.verify(Pss::new::<sha2::Sha384>(), d, sig),
        RsaPss(Sha512) => public.verify(Pss::new::<sha2::Sha512>(), d, sig),
        other => panic!("not RSA: {other:?}"),
    };
    result.is_ok()
}

#[test]
fn rsa_signatures_of_every_size_and_padding_verify_with_the_rsa_crate() {
    let t = common::token();
    for bits in [2048, 3072, 4096] {
        let key = t.generate(KeyAlgorithm::Rsa(bits), KeyUsage::SignVerify);
        let public = rsa_public(&t, &key.id);
        for hash in [
            HashAlgorithm::Sha256,
            HashAlgorithm::Sha384,
            HashAlgorithm::Sha512,
        ] {
            for alg in [
                SignatureAlgorithm::RsaPkcs1v15(hash),
                SignatureAlgorithm::RsaPss(hash),
            ] {
                let digest = Digest::of(hash, MESSAGE);
                let sig = t.backend.sign(&key.id, alg, &digest).unwrap();
                assert_eq!(sig.len(), bits as usize / 8);
                assert!(
                    independent_rsa_verify(&public, alg, &digest, &sig),
                    "RSA-{bits} {alg:?}"
                );
                assert!(
                    t.backend.verify(&key.id, alg, &digest, &sig).unwrap(),
                    "RSA-{bits} {alg:?}"
                );
                let other = Digest::of(hash, b"other");
                assert!(!t.backend.verify(&key.id, alg, &other, &sig).unwrap());
            }
        }
    }
}

#[test]
fn independent_rsa_signatures_verify_in_the_token() {
    let t = common::token();
    let sk = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).unwrap();
    let spki = rsa::pkcs8::EncodePublicKey::to_public_key_der(&sk.to_public_key()).unwrap();
    let imported = t
        .backend
        .import_public_key(
            &fresh_id(),
            &KeyLabel::new("external rsa").unwrap(),
            spki.as_bytes(),
            KeyUsage::SignVerify,
        )
        .unwrap();
    let digest = Digest::of(HashAlgorithm::Sha256, MESSAGE);
    let pkcs1 = sk
        .sign(Pkcs1v15Sign::new::<sha2::Sha256>(), digest.as_bytes())
        .unwrap();
    let pss = sk
        .sign_with_rng(
            &mut rand::thread_rng(),
            Pss::new::<sha2::Sha256>(),
            digest.as_bytes(),
        )
        .unwrap();
    let v15 = SignatureAlgorithm::RsaPkcs1v15(HashAlgorithm::Sha256);
    let ps = SignatureAlgorithm::RsaPss(HashAlgorithm::Sha256);
    assert!(
        t.backend
            .verify(&imported.id, v15, &digest, &pkcs1)
            .unwrap()
    );
    assert!(t.backend.verify(&imported.id, ps, &digest, &pss).unwrap());
    assert!(!t.backend.verify(&imported.id, ps, &digest, &pkcs1).unwrap());
}

#[test]
fn wrong_length_digests_and_mismatched_algorithms_are_refused() {
    let t = common::token();
    let p256_key = t.generate(KeyAlgorithm::Ec(EcCurve::P256), KeyUsage::SignVerify);
    assert!(matches!(
        Digest::new(HashAlgorithm::Sha256, vec![0u8; 20]),
        Err(HsmError::InvalidInput(_))
    ));
    let sha384 = Digest::of(HashAlgorithm::Sha384, MESSAGE);
    let err = t
        .backend
        .sign(&p256_key.id, SignatureAlgorithm::EcdsaP256Sha256, &sha384)
        .unwrap_err();
    assert!(matches!(err, HsmError::InvalidInput(_)), "{err}");
    let err = t
        .backend
        .sign(&p256_key.id, SignatureAlgorithm::EcdsaP384Sha384, &sha384)
        .unwrap_err();
    assert!(
        matches!(err, HsmError::KeyUsageNotPermitted { .. }),
        "{err}"
    );
    let err = t
        .backend
        .sign(
            &p256_key.id,
            SignatureAlgorithm::RsaPss(HashAlgorithm::Sha384),
            &sha384,
        )
        .unwrap_err();
    assert!(
        matches!(err, HsmError::KeyUsageNotPermitted { .. }),
        "{err}"
    );
    let sha256 = Digest::of(HashAlgorithm::Sha256, MESSAGE);
    let err = t
        .backend
        .verify(
            &p256_key.id,
            SignatureAlgorithm::EcdsaP256Sha256,
            &sha256,
            b"not der",
        )
        .unwrap_err();
    assert!(matches!(err, HsmError::InvalidInput(_)), "{err}");
    let aes = t.generate(KeyAlgorithm::Aes256, KeyUsage::EncryptDecrypt);
    let err = t
        .backend
        .sign(&aes.id, SignatureAlgorithm::EcdsaP256Sha256, &sha256)
        .unwrap_err();
    assert!(
        matches!(err, HsmError::KeyUsageNotPermitted { .. }),
        "{err}"
    );
}

#[test]
fn hmac_tags_verify_and_any_change_fails() {
    let t = common::token();
    let key = t.generate(KeyAlgorithm::HmacSha256, KeyUsage::Mac);
    let tag = t.backend.mac(&key.id, MESSAGE).unwrap();
    assert_eq!(tag.len(), 32);
    assert_eq!(
        t.backend.mac(&key.id, MESSAGE).unwrap(),
        tag,
        "HMAC is deterministic"
    );
    assert!(t.backend.verify_mac(&key.id, MESSAGE, &tag).unwrap());
    assert!(
        !t.backend
            .verify_mac(&key.id, b"keys stay in hardwarE", &tag)
            .unwrap()
    );
    let mut bad = tag.clone();
    bad[0] ^= 0x80;
    assert!(!t.backend.verify_mac(&key.id, MESSAGE, &bad).unwrap());
    assert!(!t.backend.verify_mac(&key.id, MESSAGE, &tag[..16]).unwrap());
    let other = t.generate(KeyAlgorithm::HmacSha256, KeyUsage::Mac);
    assert_ne!(t.backend.mac(&other.id, MESSAGE).unwrap(), tag);
    let oversized = vec![0u8; hsm_backend::MAX_DATA_LEN + 1];
    assert!(matches!(
        t.backend.mac(&key.id, &oversized),
        Err(HsmError::InvalidInput(_))
    ));
}

#[test]
fn random_bytes_come_from_the_token_within_bounds() {
    use hsm_backend::secrecy::ExposeSecret;
    let t = common::token();
    let a = t.backend.random(32).unwrap();
    let b = t.backend.random(32).unwrap();
    assert_eq!(a.expose_secret().len(), 32);
    assert_ne!(a.expose_secret(), b.expose_secret());
    assert!(matches!(
        t.backend.random(0),
        Err(HsmError::InvalidInput(_))
    ));
    assert!(matches!(
        t.backend.random(hsm_backend::MAX_RANDOM_LEN + 1),
        Err(HsmError::InvalidInput(_))
    ));
    assert!(!format!("{a:?}").contains(&format!("{:?}", &a.expose_secret()[..4])));
}
