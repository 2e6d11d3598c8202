//! The flow: attest on the bootstrap certificate, get a certificate for the attested key,
//! and use the token only where that key is proven.

use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_workload_trades_its_bootstrap_certificate_for_one_of_its_attested_key() {
    let broker = BrokerProcess::start();
    vault_key(&broker).await;
    let (_key, token, issued) = attested(&broker, "attested", 300).await;

    // The certificate: the caller's SPIFFE ID, signed by the CA the bundle names.
    assert_eq!(
        issued.chain_der.len(),
        1,
        "a self-signed CA adds no intermediate"
    );
    let (_, leaf) = x509_parser::parse_x509_certificate(&issued.chain_der[0]).unwrap();
    let san = leaf.subject_alternative_name().unwrap().unwrap();
    assert_eq!(
        format!("{:?}", san.value.general_names),
        format!("[URI({WORKLOAD:?})]")
    );
    let bundle = identity(&broker, "workload")
        .await
        .get_trust_bundle(pb::GetTrustBundleRequest {})
        .await
        .unwrap()
        .into_inner()
        .certificates_der;
    assert_eq!(bundle, issued.trust_bundle_der);
    assert_eq!(bundle.len(), 1);

    // A second mTLS connection, with the new certificate: the broker's own mTLS trusts
    // its CA, and the token, bound to the attested key, is accepted on it.
    let mut attested_keys = broker.keys("attested").await;
    attested_keys
        .encrypt(with_token(encrypt("vault"), &token))
        .await
        .unwrap();
    let jwt = identity(&broker, "attested")
        .await
        .get_token(with_token(
            pb::GetTokenRequest {
                audience: "db".into(),
                ttl_seconds: 0,
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(!jwt.token.is_empty());

    // On the original connection the same token is refused: that connection proves the
    // bootstrap key, not the attested one.
    let err = broker
        .keys("workload")
        .await
        .encrypt(with_token(encrypt("vault"), &token))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    let err = identity(&broker, "workload")
        .await
        .get_token(with_token(
            pb::GetTokenRequest {
                audience: "db".into(),
                ttl_seconds: 0,
            },
            &token,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");

    // Renewal: the issued certificate attests a new key and gets its certificate.
    let next = EphemeralKey::generate().unwrap();
    let next_token = attest_key(&broker, "attested", &next).await;
    issue(
        &broker,
        "attested",
        next.csr_der(WORKLOAD).unwrap(),
        Some(&next_token),
        60,
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_ca_survives_a_restart_and_certificates_it_issued_stay_trusted() {
    let mut broker = BrokerProcess::start();
    let (_key, _token, issued) = attested(&broker, "attested", 600).await;
    broker.restart();
    let bundle = identity(&broker, "attested")
        .await
        .get_trust_bundle(pb::GetTrustBundleRequest {})
        .await
        .unwrap()
        .into_inner()
        .certificates_der;
    assert_eq!(
        bundle, issued.trust_bundle_der,
        "the same CA after a restart"
    );
    // The CA key was made in the token, sensitive and never extractable.
    let token = common::fill::TokenFiller::open(
        broker.hsm.module_path(),
        common::TOKEN_LABEL,
        common::USER_PIN,
    );
    assert_eq!(
        token.private_key_flags(b"kbsys:ca:1"),
        [(true, false, true)],
        "(sensitive, extractable, never extractable)"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_ca_rotation_publishes_the_new_ca_before_it_signs_and_keeps_the_old_one_trusted() {
    use std::time::{Duration, Instant};
    // A CA that lives 75 s and is replaced 70 s before it expires: its successor is made
    // about 5 s after start, published at once, and signs 4 s later.
    let broker = BrokerProcess::start_with(common::BrokerOptions {
        ca_lines: "validity_seconds = 75\nrotate_before_seconds = 70\n\
                   publish_ahead_seconds = 4\nmax_ttl_seconds = 60\ndefault_ttl_seconds = 60",
        ..common::BrokerOptions::default()
    });
    let (_old_key, _token, old) = attested(&broker, "old", 60).await;
    assert_eq!(old.trust_bundle_der.len(), 1);
    let bundle = || async {
        identity(&broker, "workload")
            .await
            .get_trust_bundle(pb::GetTrustBundleRequest {})
            .await
            .unwrap()
            .into_inner()
            .certificates_der
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    // The successor appears first in the bundle, and the old CA is still there. (This
    // CA rotates every 5 s, so on a loaded machine a third version may already be in.)
    loop {
        let now = bundle().await;
        if now.len() >= 2 {
            assert_ne!(now[0], old.trust_bundle_der[0], "newest first");
            assert!(now.contains(&old.trust_bundle_der[0]), "the old CA stays");
            break;
        }
        assert!(Instant::now() < deadline, "no new CA was published");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let issuer_of = |issued: &pb::IssueCertificateResponse| {
        let (_, leaf) = x509_parser::parse_x509_certificate(&issued.chain_der[0]).unwrap();
        leaf.issuer().to_string()
    };
    let (_, old_ca) = x509_parser::parse_x509_certificate(&old.trust_bundle_der[0]).unwrap();
    let old_issuer = old_ca.subject().to_string();
    assert_eq!(issuer_of(&old), old_issuer);
    // Once the new CA signs, new certificates come from it; certificates of both CAs
    // are accepted by the broker's mTLS.
    let new = loop {
        let (_key, _token, issued) = attested(&broker, "new", 60).await;
        if issuer_of(&issued) != old_issuer {
            break issued;
        }
        assert!(Instant::now() < deadline, "the new CA never signed");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    // The bundle given with it holds both the CA that signed it and the old one.
    assert!(new.trust_bundle_der.contains(&old.trust_bundle_der[0]));
    let signer = issuer_of(&new);
    assert!(new.trust_bundle_der.iter().any(|ca| {
        let (_, ca) = x509_parser::parse_x509_certificate(ca).unwrap();
        ca.subject().to_string() == signer
    }));
    for who in ["old", "new"] {
        identity(&broker, who)
            .await
            .get_trust_bundle(pb::GetTrustBundleRequest {})
            .await
            .unwrap();
    }
}
