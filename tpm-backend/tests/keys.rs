//! Keys on a real swtpm: created, used, verified independently.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use p256::ecdsa::signature::hazmat::PrehashVerifier;
use p256::pkcs8::DecodePublicKey;
use rsa::{Oaep, Pkcs1v15Sign, Pss, RsaPublicKey};
use sha2::Sha256;
use softhsm_tests::Swtpm;
use tpm_backend::{TpmBlob, TpmError, TpmKeyKind, TpmSignScheme};

mod common;
use common::{connect, digest};

#[test]
fn ecdsa_p256_signatures_verify_with_the_p256_crate() {
    let tpm = Swtpm::start();
    let backend = connect(&tpm);
    let key = backend.create_key(TpmKeyKind::EcP256Sign).wait().unwrap();
    let public =
        p256::ecdsa::VerifyingKey::from_public_key_der(&key.public_key_der().unwrap()).unwrap();
    let d = digest(b"measured boot");
    let sig = backend
        .sign(&key, TpmSignScheme::EcdsaSha256, d)
        .wait()
        .unwrap();
    public
        .verify_prehash(&d, &p256::ecdsa::Signature::from_der(&sig).unwrap())
        .unwrap();
    assert!(
        public
            .verify_prehash(
                &digest(b"other"),
                &p256::ecdsa::Signature::from_der(&sig).unwrap()
            )
            .is_err()
    );
}

#[test]
fn rsa_signatures_verify_with_the_rsa_crate() {
    let tpm = Swtpm::start();
    let backend = connect(&tpm);
    let key = backend.create_key(TpmKeyKind::Rsa2048Sign).wait().unwrap();
    let public = RsaPublicKey::from_public_key_der(&key.public_key_der().unwrap()).unwrap();
    let d = digest(b"measured boot");
    let v15 = backend
        .sign(&key, TpmSignScheme::RsaPkcs1v15Sha256, d)
        .wait()
        .unwrap();
    public
        .verify(Pkcs1v15Sign::new::<Sha256>(), &d, &v15)
        .unwrap();
    let pss = backend
        .sign(&key, TpmSignScheme::RsaPssSha256, d)
        .wait()
        .unwrap();
    public.verify(Pss::new::<Sha256>(), &d, &pss).unwrap();
}

#[test]
fn rsa_oaep_decrypts_what_the_rsa_crate_encrypted() {
    let tpm = Swtpm::start();
    let backend = connect(&tpm);
    let key = backend
        .create_key(TpmKeyKind::Rsa2048Decrypt)
        .wait()
        .unwrap();
    let public = RsaPublicKey::from_public_key_der(&key.public_key_der().unwrap()).unwrap();
    let ciphertext = public
        .encrypt(&mut rand::thread_rng(), Oaep::new::<Sha256>(), b"data key")
        .unwrap();
    let plaintext = backend.rsa_decrypt(&key, &ciphertext).wait().unwrap();
    assert_eq!(
        secrecy::ExposeSecret::expose_secret(&plaintext),
        b"data key"
    );
    let mut tampered = ciphertext.clone();
    tampered[10] ^= 1;
    assert!(backend.rsa_decrypt(&key, &tampered).wait().is_err());
}

#[test]
fn mismatched_schemes_and_foreign_blobs_are_refused() {
    let tpm = Swtpm::start();
    let backend = connect(&tpm);
    let ec = backend.create_key(TpmKeyKind::EcP256Sign).wait().unwrap();
    let d = digest(b"x");
    let err = backend
        .sign(&ec, TpmSignScheme::RsaPssSha256, d)
        .wait()
        .unwrap_err();
    assert!(matches!(err, TpmError::InvalidInput(_)), "{err}");
    let err = backend.rsa_decrypt(&ec, &[0u8; 256]).wait().unwrap_err();
    assert!(matches!(err, TpmError::InvalidInput(_)), "{err}");

    // A blob from another TPM does not load here.
    let other_tpm = Swtpm::start();
    let foreign = connect(&other_tpm)
        .create_key(TpmKeyKind::EcP256Sign)
        .wait()
        .unwrap();
    let err = backend
        .sign(&foreign, TpmSignScheme::EcdsaSha256, d)
        .wait()
        .unwrap_err();
    assert!(
        matches!(err, TpmError::InvalidBlob(_) | TpmError::Tpm { .. }),
        "{err}"
    );
    // And the backend keeps working.
    backend
        .sign(&ec, TpmSignScheme::EcdsaSha256, d)
        .wait()
        .unwrap();

    let bytes = ec.to_bytes();
    assert_eq!(TpmBlob::from_bytes(&bytes).unwrap(), ec);
    assert!(TpmBlob::from_bytes(&bytes[..bytes.len() - 1]).is_err());
}
