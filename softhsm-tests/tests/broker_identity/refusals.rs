//! Certificate and token requests an attacker would try, each refused with the reason,
//! while the broker goes on serving.

use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_csr_not_signed_by_the_bound_key_or_for_another_name_is_refused() {
    let broker = BrokerProcess::start();
    let bound = EphemeralKey::generate().unwrap();
    let token = attest_key(&broker, "workload", &bound).await;

    // A CSR of another key, with a token bound to the attested one: the holder of a copied
    // token cannot get a certificate for its own key.
    let other = EphemeralKey::generate().unwrap();
    let err = issue(
        &broker,
        "workload",
        other.csr_der(WORKLOAD).unwrap(),
        Some(&token),
        60,
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(
        broker
            .log()
            .contains("bound to another key than the one the caller proved it holds"),
        "the log says why"
    );

    // The bound key's public key in a CSR whose signature was made by another key: the
    // proof of possession fails.
    let mut tampered = bound.csr_der(WORKLOAD).unwrap();
    let last = tampered.len() - 3;
    tampered[last] ^= 0x01;
    let err = issue(&broker, "workload", tampered, Some(&token), 60)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("csr"), "{err:?}");

    // A CSR asking for another SPIFFE ID.
    let err = issue(
        &broker,
        "workload",
        bound.csr_der("spiffe://test.keybroker/admin").unwrap(),
        Some(&token),
        60,
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("names only the caller"), "{err:?}");

    // Garbage.
    let err = issue(&broker, "workload", b"not a csr".to_vec(), Some(&token), 60)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");

    // None of it used anything up: the right CSR still gets its certificate.
    issue(
        &broker,
        "workload",
        bound.csr_der(WORKLOAD).unwrap(),
        Some(&token),
        60,
    )
    .await
    .unwrap();
}

/// `token`'s signing input, signed by a P-256 key that never was in the HSM.
fn resigned(token: &str) -> String {
    use base64ct::{Base64UrlUnpadded, Encoding};
    use p256::ecdsa::signature::Signer;
    let input = token.rsplit_once('.').unwrap().0;
    let key = p256::ecdsa::SigningKey::from_slice(&[0x42; 32]).unwrap();
    let signature: p256::ecdsa::Signature = key.sign(input.as_bytes());
    format!(
        "{input}.{}",
        Base64UrlUnpadded::encode_string(&signature.to_bytes())
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn without_attestation_or_with_an_untrusted_token_no_certificate_is_issued() {
    let broker = BrokerProcess::start();
    let key = EphemeralKey::generate().unwrap();
    // The policy asks for attestation: no token, no certificate.
    let err = issue(
        &broker,
        "workload",
        key.csr_der(WORKLOAD).unwrap(),
        None,
        60,
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let err = identity(&broker, "workload")
        .await
        .get_token(pb::GetTokenRequest {
            audience: "db".into(),
            ttl_seconds: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");

    // A token signed by a key the broker does not trust: the real token's header and
    // claims (same kid, same name, same key), signed again in software.
    let real = attest_key(&broker, "workload", &key).await;
    let forged = resigned(&real);
    let err = issue(
        &broker,
        "workload",
        key.csr_der(WORKLOAD).unwrap(),
        Some(&forged),
        60,
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");

    // Another identity's token (the admin attests the same key): issued to someone else.
    let admins = attest_key(&broker, "admin", &key).await;
    let err = issue(
        &broker,
        "workload",
        key.csr_der(WORKLOAD).unwrap(),
        Some(&admins),
        60,
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");

    // Evidence with a measurement the policy does not trust: attested, but no
    // certificate. (A PCR outside the appraisal policy gets no token at all:
    // `agent::a_tpm_quote_workload_on_swtpm_attests_and_gets_a_certificate`.)
    let untrusted = attest_spki(&broker, "workload", key.spki_der(), &"11".repeat(48))
        .await
        .unwrap();
    let err = issue(
        &broker,
        "workload",
        key.csr_der(WORKLOAD).unwrap(),
        Some(&untrusted),
        60,
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");

    // A stranger (no policy at all) gets nothing, not even the bundle.
    let err = identity(&broker, "stranger")
        .await
        .get_trust_bundle(pb::GetTrustBundleRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn token_requests_outside_the_limits_are_refused_and_ttls_are_capped() {
    let broker = BrokerProcess::start();
    let (_key, token, issued) = attested(&broker, "attested", 100_000).await;
    // A lifetime above `ca.max_ttl_seconds` (one hour by default) is capped.
    let (_, leaf) = x509_parser::parse_x509_certificate(&issued.chain_der[0]).unwrap();
    let validity = leaf.validity();
    let lifetime = validity.not_after.timestamp() - validity.not_before.timestamp();
    assert_eq!(lifetime, 3600 + 60, "one hour, from a minute back");

    let mut ids = identity(&broker, "attested").await;
    for audience in ["", "two words", &"a".repeat(257)] {
        let err = ids
            .get_token(with_token(
                pb::GetTokenRequest {
                    audience: audience.into(),
                    ttl_seconds: 0,
                },
                &token,
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{audience:?}: {err:?}");
    }
    // A JWT lives at most five minutes, whatever is asked.
    let jwt = ids
        .get_token(with_token(
            pb::GetTokenRequest {
                audience: "db".into(),
                ttl_seconds: 86_400,
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let left = u64::try_from(jwt.expires_at).unwrap() - now;
    assert!((290..=300).contains(&left), "{left}");
}
