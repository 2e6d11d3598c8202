//! The release format's round trip and refusals. The independent check (another HPKE
//! implementation opening what the broker sealed) is end to end:
//! `softhsm-tests/tests/broker_secrets/`.

use super::*;

const CALLER: &str = "spiffe://td/workload";

#[test]
fn what_is_sealed_to_a_key_opens_with_it_and_its_info_only() {
    let pair = KemKeyPair::generate();
    let info = release_info("db-password", 3, CALLER).unwrap();
    let sealed = seal(&pair.public(), &info, b"hunter2").unwrap();
    assert_eq!(sealed.enc.len(), KEM_KEY_LEN);
    assert_eq!(
        sealed.ciphertext.len(),
        7 + 16,
        "the plaintext and the GCM tag"
    );
    assert_eq!(pair.open(&sealed, &info).unwrap().as_slice(), b"hunter2");

    // Another key, another name, version or caller: nothing opens.
    assert!(KemKeyPair::generate().open(&sealed, &info).is_err());
    for other in [
        release_info("db-passwore", 3, CALLER).unwrap(),
        release_info("db-password", 4, CALLER).unwrap(),
        release_info("db-password", 3, "spiffe://td/other").unwrap(),
    ] {
        assert!(pair.open(&sealed, &other).is_err());
    }
    // Altered bytes do not open either.
    for flip in [0, sealed.ciphertext.len() - 1] {
        let mut tampered = sealed.clone();
        tampered.ciphertext[flip] ^= 1;
        assert!(pair.open(&tampered, &info).is_err());
    }
    let mut tampered = sealed.clone();
    tampered.enc[0] ^= 1;
    assert!(pair.open(&tampered, &info).is_err());
}

#[test]
fn the_info_is_length_prefixed_so_fields_cannot_slide() {
    let info = release_info("ab", 1, "c").unwrap();
    let mut expected = INFO_LABEL.to_vec();
    expected.extend_from_slice(&[0, 2, b'a', b'b']);
    expected.extend_from_slice(&1u64.to_be_bytes());
    expected.extend_from_slice(&[0, 1, b'c']);
    assert_eq!(info, expected);
    assert_ne!(
        release_info("a", 1, "bc").unwrap(),
        release_info("ab", 1, "c").unwrap()
    );
    assert!(release_info(&"n".repeat(70_000), 1, CALLER).is_err());
}

#[test]
fn kem_keys_round_trip_as_jwks_and_private_bytes() {
    let pair = KemKeyPair::generate();
    let jwk = pair.public().to_jwk();
    assert_eq!((jwk.kty.as_str(), jwk.crv.as_str()), ("OKP", "X25519"));
    assert_eq!(KemPublicKey::from_jwk(&jwk).unwrap(), pair.public());
    let again = KemKeyPair::from_private_bytes(&pair.private_bytes()).unwrap();
    assert_eq!(again.public(), pair.public());

    let wrong_curve = KemJwk {
        crv: "P-256".into(),
        ..jwk.clone()
    };
    assert!(KemPublicKey::from_jwk(&wrong_curve).is_err());
    assert!(KemPublicKey::from_slice(&[1; 31]).is_err());
    assert!(!format!("{pair:?}").contains(&hex::encode(pair.private_bytes().as_slice())));
}
