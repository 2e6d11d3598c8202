//! Attestation tokens signed by keys inside a real SoftHSM2 token, verified offline
//! against the published JWK set.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::{Duration, SystemTime};

use attest::AttestError;
use attest::claims::{Appraisal, Claims, TeeKind};
use attest::policy::AppraisalPolicy;
use attest::token::{self, Confirmation, TokenAlgorithm, TokenSigner};
use hsm_backend::secrecy::SecretString;
use hsm_backend::{
    Digest, EcCurve, HashAlgorithm, HsmBackend, KeyAlgorithm, KeyId, KeyLabel, KeySpec, KeyUsage,
    Pin, Pkcs11Module, PoolConfig, SignatureAlgorithm, TokenSelector, provision,
};
use p256::elliptic_curve::sec1::ToEncodedPoint as _;
use p256::pkcs8::{DecodePublicKey as _, EncodePublicKey as _};
use sha2::Digest as _;
use softhsm_tests::SoftHsm;

/// A token signer whose key lives in the HSM, as the broker's will.
struct HsmTokenSigner<'a> {
    backend: &'a HsmBackend,
    id: KeyId,
    spki: Vec<u8>,
    algorithm: TokenAlgorithm,
}

impl TokenSigner for HsmTokenSigner<'_> {
    fn algorithm(&self) -> TokenAlgorithm {
        self.algorithm
    }
    fn key_id(&self) -> &str {
        std::str::from_utf8(self.id.as_bytes()).unwrap()
    }
    fn public_key_der(&self) -> &[u8] {
        &self.spki
    }
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, String> {
        let (hash, alg) = match self.algorithm {
            TokenAlgorithm::Es256 => (HashAlgorithm::Sha256, SignatureAlgorithm::EcdsaP256Sha256),
            TokenAlgorithm::Es384 => (HashAlgorithm::Sha384, SignatureAlgorithm::EcdsaP384Sha384),
        };
        self.backend
            .sign(&self.id, alg, &Digest::of(hash, message))
            .map_err(|e| e.to_string())
    }
}

fn hsm() -> (SoftHsm, HsmBackend) {
    let softhsm = SoftHsm::new();
    let module = Pkcs11Module::load(softhsm.module_path()).unwrap();
    let pin = |s: &str| Pin::new(SecretString::from(s)).unwrap();
    let selector = TokenSelector::Label("tokens".into());
    provision::init_token(&module, "tokens", &pin("so-pin-1234")).unwrap();
    provision::init_user_pin(
        &module,
        &selector,
        &pin("so-pin-1234"),
        &pin("user-pin-1234"),
    )
    .unwrap();
    let backend = HsmBackend::open_with(
        module,
        &selector,
        pin("user-pin-1234"),
        PoolConfig::default(),
    )
    .unwrap();
    (softhsm, backend)
}

fn signer<'a>(
    backend: &'a HsmBackend,
    name: &str,
    algorithm: TokenAlgorithm,
) -> HsmTokenSigner<'a> {
    let id = KeyId::new(name.as_bytes().to_vec()).unwrap();
    let curve = match algorithm {
        TokenAlgorithm::Es256 => EcCurve::P256,
        TokenAlgorithm::Es384 => EcCurve::P384,
    };
    let spec = KeySpec::new(KeyAlgorithm::Ec(curve), KeyUsage::SignVerify).unwrap();
    backend
        .generate_key(&id, &KeyLabel::new(name).unwrap(), spec)
        .unwrap();
    let spki = backend.public_key(&id).unwrap().as_der().to_vec();
    HsmTokenSigner {
        backend,
        id,
        spki,
        algorithm,
    }
}

fn appraisal(valid_for: u64, issued_secs_ago: u64) -> Appraisal {
    let policy = AppraisalPolicy::from_toml(&format!(
        "result_validity_seconds = {valid_for}\n[dev]\nallow_insecure = true\n"
    ))
    .unwrap();
    let claims = Claims {
        tee: TeeKind::InsecureDev,
        insecure: true,
        measurement: Some("ab".repeat(48)),
        tcb: None,
        debug: None,
        vmpl: None,
        platform: None,
        attestation_key: None,
        pcrs: Default::default(),
    };
    Appraisal::new(
        claims,
        &policy,
        SystemTime::now() - Duration::from_secs(issued_secs_ago),
    )
}

const ISSUER: &str = "https://broker.example/keybroker";
/// The workload's ephemeral public key (SPKI DER), the one its evidence bound.
fn bound_key() -> Vec<u8> {
    use p256::pkcs8::EncodePublicKey;
    p256::SecretKey::from_slice(&[7; 32])
        .unwrap()
        .public_key()
        .to_public_key_der()
        .unwrap()
        .into_vec()
}

/// A token for `spiffe://example/a` from an appraisal valid `valid_for` seconds, made
/// `issued_secs_ago` seconds ago.
fn token_for(signer: &dyn TokenSigner, valid_for: u64, issued_secs_ago: u64) -> String {
    token::issue(
        &appraisal(valid_for, issued_secs_ago),
        ISSUER,
        "spiffe://example/a",
        Confirmation::for_key(&bound_key()).unwrap(),
        signer,
    )
    .unwrap()
}

#[test]
fn es256_and_es384_tokens_signed_in_the_hsm_verify_against_the_jwks() {
    let (_softhsm, backend) = hsm();
    let es256 = signer(&backend, "token-es256", TokenAlgorithm::Es256);
    let es384 = signer(&backend, "token-es384", TokenAlgorithm::Es384);
    let jwks = token::jwks(&[&es256, &es384]).unwrap();
    let set: serde_json::Value = serde_json::from_str(&jwks).unwrap();
    assert_eq!(set["keys"][0]["kty"], "EC");
    assert_eq!(set["keys"][0]["crv"], "P-256");
    assert_eq!(set["keys"][1]["crv"], "P-384");
    assert!(
        set["keys"][0].get("d").is_none(),
        "no private part is published"
    );

    for signer in [&es256, &es384] {
        let jwt = token::issue(
            &appraisal(300, 0),
            ISSUER,
            "spiffe://example/workload",
            Confirmation::for_key(&bound_key()).unwrap(),
            signer,
        )
        .unwrap();
        let claims = token::verify(&jwt, &jwks, ISSUER).unwrap();
        assert_eq!(claims.sub, "spiffe://example/workload");
        assert_eq!(claims.attestation["tee"], "insecure-dev");
        assert_eq!(claims.attestation["insecure"], true);
        assert_eq!(claims.exp - claims.iat, 300);
        assert_eq!(claims.iat - claims.nbf, token::CLOCK_SKEW_SECONDS);
        // RFC 7800 / RFC 9449: the token names the bound key by its RFC 7638 thumbprint,
        // recomputed here from the canonical JWK members, in their lexicographic order.
        let public = p256::PublicKey::from_public_key_der(&bound_key()).unwrap();
        let point = public.to_encoded_point(false);
        let canonical = format!(
            r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
            jose_b64_encode(point.x().unwrap()),
            jose_b64_encode(point.y().unwrap())
        );
        let thumbprint = jose_b64_encode(&sha2::Sha256::digest(canonical.as_bytes()));
        assert_eq!(
            serde_json::to_value(&claims.cnf).unwrap(),
            serde_json::json!({ "jkt": thumbprint })
        );
        assert!(claims.cnf.matches_key(&bound_key()));
        let other = p256::SecretKey::from_slice(&[8; 32])
            .unwrap()
            .public_key()
            .to_public_key_der()
            .unwrap();
        assert!(!claims.cnf.matches_key(other.as_bytes()));
        assert!(!claims.cnf.matches_key(b"not a key"));
    }
}

#[test]
fn tokens_are_issued_with_low_s_and_a_high_s_twin_is_refused() {
    use p256::ecdsa::Signature;
    let (_softhsm, backend) = hsm();
    let signer = signer(&backend, "token-key", TokenAlgorithm::Es256);
    let jwks = token::jwks(&[&signer]).unwrap();
    // The HSM returns high S about half the time; every issued token must verify.
    for _ in 0..16 {
        let jwt = token_for(&signer, 300, 0);
        token::verify(&jwt, &jwks, ISSUER).unwrap();
        // (r, n - s) is as valid an ECDSA signature as (r, s): the malleable twin.
        let (input, raw) = jwt.rsplit_once('.').unwrap();
        let sig = Signature::from_slice(&jose_b64_decode(raw)).unwrap();
        let (r, s) = sig.split_scalars();
        let twin = Signature::from_scalars(r.to_bytes(), (-*s).to_bytes()).unwrap();
        let forged = format!("{input}.{}", jose_b64_encode(&twin.to_bytes()));
        let err = token::verify(&forged, &jwks, ISSUER).unwrap_err();
        assert!(err.to_string().contains("high S"), "{err}");
    }
}

#[test]
fn tampered_foreign_expired_and_misissued_tokens_are_refused() {
    let (_softhsm, backend) = hsm();
    let signer = signer(&backend, "token-key", TokenAlgorithm::Es256);
    let jwks = token::jwks(&[&signer]).unwrap();
    let jwt = token_for(&signer, 300, 0);

    let parts: Vec<&str> = jwt.split('.').collect();
    let mut payload: serde_json::Value =
        serde_json::from_slice(&jose_b64_decode(parts[1])).unwrap();
    payload["sub"] = "spiffe://example/b".into();
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        jose_b64_encode(&serde_json::to_vec(&payload).unwrap()),
        parts[2]
    );
    assert!(matches!(
        token::verify(&forged, &jwks, ISSUER),
        Err(AttestError::Signature(_))
    ));

    assert!(
        token::verify(&jwt, &jwks, "https://another.example").is_err(),
        "wrong issuer"
    );

    let other = self::signer(&backend, "other-key", TokenAlgorithm::Es256);
    let other_jwks = token::jwks(&[&other]).unwrap();
    assert!(
        token::verify(&jwt, &other_jwks, ISSUER).is_err(),
        "key id not in the set"
    );

    let expired = token_for(&signer, 60, 600);
    assert!(
        token::verify(&expired, &jwks, ISSUER).is_err(),
        "expired long ago"
    );
    let just_expired = token_for(&signer, 60, 70);
    assert!(
        token::verify(&just_expired, &jwks, ISSUER).is_ok(),
        "within the allowed skew"
    );
    assert!(token::verify("not.a.token", &jwks, ISSUER).is_err());
}

fn jose_b64_decode(text: &str) -> Vec<u8> {
    use jose_b64::base64ct::{Base64UrlUnpadded, Encoding};
    Base64UrlUnpadded::decode_vec(text).unwrap()
}

fn jose_b64_encode(bytes: &[u8]) -> String {
    use jose_b64::base64ct::{Base64UrlUnpadded, Encoding};
    Base64UrlUnpadded::encode_string(bytes)
}
