//! Encryption, decryption and data-key wrapping on a real SoftHSM2 token, with every
//! kind of tampering refused.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use hsm_backend::secrecy::{ExposeSecret, SecretBox};
use hsm_backend::{
    AeadCiphertext, DataKey, HsmError, KeyAlgorithm, KeyUsage, OaepHash, WrappedKey,
};
use rsa::pkcs8::DecodePublicKey;
use rsa::{Oaep, RsaPublicKey};

const SECRET: &[u8] = b"the launch codes";

#[test]
fn rsa_oaep_of_every_size_decrypts_what_an_independent_implementation_encrypted() {
    let t = common::token();
    for bits in [2048, 3072, 4096] {
        let key = t.generate(KeyAlgorithm::Rsa(bits), KeyUsage::EncryptDecrypt);
        let public =
            RsaPublicKey::from_public_key_der(t.backend.public_key(&key.id).unwrap().as_der())
                .unwrap();
        let outside = public
            .encrypt(&mut rand::thread_rng(), Oaep::new::<sha1::Sha1>(), SECRET)
            .unwrap();
        let opened = t
            .backend
            .rsa_decrypt(&key.id, OaepHash::Sha1, &outside)
            .unwrap();
        assert_eq!(opened.expose_secret(), SECRET, "RSA-{bits}");
        let inside = t
            .backend
            .rsa_encrypt(&key.id, OaepHash::Sha1, SECRET)
            .unwrap();
        assert_eq!(inside.len(), bits as usize / 8);
        assert_eq!(
            t.backend
                .rsa_decrypt(&key.id, OaepHash::Sha1, &inside)
                .unwrap()
                .expose_secret(),
            SECRET
        );
    }
}

#[test]
fn rsa_oaep_sha256_is_refused_clearly_where_softhsm_cannot_do_it() {
    // SoftHSM2 2.6.1 (Debian 12's) accepts OAEP only with SHA-1: the backend says so
    // before the token answers CKR_ARGUMENTS_BAD. A network HSM takes the same call.
    let t = common::token();
    let key = t.generate(KeyAlgorithm::Rsa(2048), KeyUsage::EncryptDecrypt);
    for err in [
        t.backend
            .rsa_encrypt(&key.id, OaepHash::Sha256, SECRET)
            .unwrap_err(),
        t.backend
            .rsa_decrypt(&key.id, OaepHash::Sha256, &[0u8; 256])
            .unwrap_err(),
    ] {
        assert!(
            matches!(&err, HsmError::MechanismNotSupported(m) if m.contains("SHA-1")),
            "{err}"
        );
    }
}

#[test]
fn rsa_oaep_refuses_tampering_wrong_lengths_and_oversized_messages() {
    let t = common::token();
    let key = t.generate(KeyAlgorithm::Rsa(2048), KeyUsage::EncryptDecrypt);
    let sha1 = OaepHash::Sha1;
    let mut ciphertext = t.backend.rsa_encrypt(&key.id, sha1, SECRET).unwrap();
    ciphertext[100] ^= 0x01;
    let err = t
        .backend
        .rsa_decrypt(&key.id, sha1, &ciphertext)
        .unwrap_err();
    assert!(
        matches!(
            err,
            HsmError::AuthenticationFailed | HsmError::InvalidInput(_)
        ),
        "{err}"
    );
    assert!(matches!(
        t.backend.rsa_decrypt(&key.id, sha1, &ciphertext[1..]),
        Err(HsmError::InvalidInput(_))
    ));
    let too_long = vec![0u8; 256 - 2 * 20 - 1];
    assert!(matches!(
        t.backend.rsa_encrypt(&key.id, sha1, &too_long),
        Err(HsmError::InvalidInput(_))
    ));
    assert!(t.backend.rsa_encrypt(&key.id, sha1, &too_long[1..]).is_ok());
    let signing = t.generate(KeyAlgorithm::Rsa(2048), KeyUsage::SignVerify);
    let err = t
        .backend
        .rsa_encrypt(&signing.id, sha1, SECRET)
        .unwrap_err();
    assert!(
        matches!(err, HsmError::KeyUsageNotPermitted { .. }),
        "{err}"
    );
}

#[test]
fn aes_gcm_round_trips_with_and_without_associated_data() {
    let t = common::token();
    let key = t.generate(KeyAlgorithm::Aes256, KeyUsage::EncryptDecrypt);
    for (plaintext, aad) in [
        (SECRET, &b"tenant=42"[..]),
        (SECRET, &b""[..]),
        (&b""[..], &b"only aad"[..]),
    ] {
        let sealed = t.backend.aes_gcm_encrypt(&key.id, plaintext, aad).unwrap();
        assert_eq!(
            sealed.ciphertext.len(),
            plaintext.len() + hsm_backend::GCM_TAG_LEN
        );
        let opened = t.backend.aes_gcm_decrypt(&key.id, &sealed, aad).unwrap();
        assert_eq!(opened.expose_secret(), plaintext);
        assert!(!format!("{opened:?}").contains("launch"));
    }
    let a = t.backend.aes_gcm_encrypt(&key.id, SECRET, b"").unwrap();
    let b = t.backend.aes_gcm_encrypt(&key.id, SECRET, b"").unwrap();
    assert_ne!(a.nonce, b.nonce, "every encryption takes a fresh nonce");
    assert_ne!(a.ciphertext, b.ciphertext);
}

#[test]
fn aes_gcm_refuses_any_tampered_ciphertext_tag_nonce_or_aad() {
    let t = common::token();
    let key = t.generate(KeyAlgorithm::Aes256, KeyUsage::EncryptDecrypt);
    let aad = b"tenant=42";
    let sealed = t.backend.aes_gcm_encrypt(&key.id, SECRET, aad).unwrap();
    let last = sealed.ciphertext.len() - 1;
    let flip = |f: &dyn Fn(&mut AeadCiphertext)| {
        let mut copy = sealed.clone();
        f(&mut copy);
        copy
    };
    let cases = [
        ("ciphertext", flip(&|c| c.ciphertext[0] ^= 1), &aad[..]),
        ("tag", flip(&|c| c.ciphertext[last] ^= 0x80), &aad[..]),
        ("nonce", flip(&|c| c.nonce[11] ^= 1), &aad[..]),
        ("aad", sealed.clone(), &b"tenant=43"[..]),
    ];
    for (what, tampered, aad) in cases {
        let err = t
            .backend
            .aes_gcm_decrypt(&key.id, &tampered, aad)
            .unwrap_err();
        assert!(
            matches!(err, HsmError::AuthenticationFailed),
            "{what}: {err}"
        );
    }
    // The genuine ciphertext still opens: the refusals changed nothing.
    assert_eq!(
        t.backend
            .aes_gcm_decrypt(&key.id, &sealed, aad)
            .unwrap()
            .expose_secret(),
        SECRET
    );
    let short = AeadCiphertext {
        nonce: sealed.nonce,
        ciphertext: vec![0; 15],
    };
    assert!(matches!(
        t.backend.aes_gcm_decrypt(&key.id, &short, aad),
        Err(HsmError::InvalidInput(_))
    ));
    let oversized = vec![0u8; hsm_backend::MAX_DATA_LEN + 1];
    assert!(matches!(
        t.backend.aes_gcm_encrypt(&key.id, &oversized, b""),
        Err(HsmError::InvalidInput(_))
    ));
    let other = t.generate(KeyAlgorithm::Aes256, KeyUsage::EncryptDecrypt);
    assert!(matches!(
        t.backend.aes_gcm_decrypt(&other.id, &sealed, aad),
        Err(HsmError::AuthenticationFailed)
    ));
}

#[test]
fn data_keys_wrap_and_unwrap_under_a_key_encryption_key() {
    let t = common::token();
    let kek = t.generate(KeyAlgorithm::Aes256, KeyUsage::WrapUnwrap);
    let (data_key, wrapped) = t.backend.generate_data_key(&kek.id).unwrap();
    assert_eq!(wrapped.0.len(), hsm_backend::DATA_KEY_LEN + 8);
    assert_eq!(
        t.backend
            .unwrap_data_key(&kek.id, &wrapped)
            .unwrap()
            .expose(),
        data_key.expose()
    );
    assert!(
        !format!("{data_key:?}").contains(&format!("{}", data_key.expose()[0]))
            || format!("{data_key:?}").contains("REDACTED")
    );

    let mine = DataKey::new(SecretBox::new(Box::new([7u8; 32])));
    let wrapped_mine = t.backend.wrap_data_key(&kek.id, &mine).unwrap();
    assert_eq!(
        t.backend
            .unwrap_data_key(&kek.id, &wrapped_mine)
            .unwrap()
            .expose(),
        &[7u8; 32]
    );
    // The wrapped form is not the key.
    assert!(!wrapped_mine.0.windows(8).any(|w| w == [7u8; 8]));
}

#[test]
fn tampered_or_foreign_wrapped_keys_are_refused() {
    let t = common::token();
    let kek = t.generate(KeyAlgorithm::Aes256, KeyUsage::WrapUnwrap);
    let other_kek = t.generate(KeyAlgorithm::Aes256, KeyUsage::WrapUnwrap);
    let (_, wrapped) = t.backend.generate_data_key(&kek.id).unwrap();
    let mut tampered = wrapped.clone();
    tampered.0[5] ^= 1;
    assert!(matches!(
        t.backend.unwrap_data_key(&kek.id, &tampered),
        Err(HsmError::AuthenticationFailed)
    ));
    assert!(matches!(
        t.backend.unwrap_data_key(&other_kek.id, &wrapped),
        Err(HsmError::AuthenticationFailed)
    ));
    let short = WrappedKey(wrapped.0[..20].to_vec());
    assert!(matches!(
        t.backend.unwrap_data_key(&kek.id, &short),
        Err(HsmError::InvalidInput(_))
    ));
    let not_a_kek = t.generate(KeyAlgorithm::Aes256, KeyUsage::EncryptDecrypt);
    let err = t
        .backend
        .unwrap_data_key(&not_a_kek.id, &wrapped)
        .unwrap_err();
    assert!(
        matches!(err, HsmError::KeyUsageNotPermitted { .. }),
        "{err}"
    );
    // The genuine one still unwraps.
    assert!(t.backend.unwrap_data_key(&kek.id, &wrapped).is_ok());
}
