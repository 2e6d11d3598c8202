//! `Attest` with a CSR: the token and the certificate in one call, as the agent does it.
//! The CSR is checked before the challenge is redeemed; the certificate is issued only if
//! the policy allows `IssueCertificate` with the claims just appraised, else the whole
//! call is refused and no token is issued.

use super::outside::{CLAIMS_OID, token_claims};
use super::*;

const ADMIN: &str = "spiffe://test.keybroker/admin";

/// The attestation client on the bootstrap connection of `workload`, and a challenge.
pub(super) async fn challenged(
    broker: &BrokerProcess,
) -> (AttestationServiceClient<Channel>, Nonce) {
    let mut att = AttestationServiceClient::new(broker.channel("workload").await.unwrap());
    let challenge = att
        .get_challenge(pb::GetChallengeRequest {})
        .await
        .unwrap()
        .into_inner();
    (att, Nonce::from_slice(&challenge.nonce).unwrap())
}

/// `Attest` with development evidence of `measurement` over `nonce` and `key`, sending
/// `csr_der` (none if empty).
pub(super) fn request(
    nonce: &Nonce,
    key: &EphemeralKey,
    measurement: &str,
    csr_der: Vec<u8>,
) -> pb::AttestRequest {
    pb::AttestRequest {
        nonce: nonce.as_bytes().to_vec(),
        ephemeral_public_key: key.spki_der().to_vec(),
        evidence: Some(pb::attest_request::Evidence::Dev(pb::DevEvidence {
            report_data: snp_report_data(nonce, key.spki_der()).to_vec(),
            measurement: measurement.into(),
        })),
        csr_der,
        certificate_ttl_seconds: 120,
        kem_public_key: Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn one_attest_call_returns_the_token_and_a_certificate_for_the_attested_key() {
    let broker = BrokerProcess::start();
    let key = EphemeralKey::generate().unwrap();
    let (mut att, nonce) = challenged(&broker).await;
    let csr = key.csr_der(WORKLOAD).unwrap();
    let answer = att
        .attest(request(&nonce, &key, TRUSTED_MEASUREMENT, csr))
        .await
        .unwrap()
        .into_inner();
    let issued = answer.certificate.expect("a certificate with the token");
    assert!(!issued.trust_bundle_der.is_empty());
    let (_, leaf) = x509_parser::parse_x509_certificate(&issued.chain_der[0]).unwrap();
    assert_eq!(leaf.public_key().raw, key.spki_der(), "the attested key");
    let san = leaf.subject_alternative_name().unwrap().unwrap();
    assert_eq!(
        format!("{:?}", san.value.general_names),
        format!("[URI({WORKLOAD:?})]")
    );
    let validity = leaf.validity();
    assert_eq!(
        validity.not_after.timestamp() - validity.not_before.timestamp(),
        120 + 60,
        "the lifetime asked for, from a minute back"
    );
    // The claims extension holds SHA-256 of the claims the token carries.
    let extension = leaf
        .extensions()
        .iter()
        .find(|e| e.oid.to_id_string() == CLAIMS_OID)
        .unwrap();
    let digest = attest::token::claims_digest(&token_claims(&answer.token)).unwrap();
    assert_eq!(&extension.value[2..], digest.as_slice());

    // The token is bound to the certified key: it works on a connection made with the
    // new certificate, and not on the bootstrap connection it came from.
    install_identity(&broker, "one-call", &issued.chain_der, &key);
    let ask = || pb::GetTokenRequest {
        audience: "db".into(),
        ttl_seconds: 0,
    };
    identity(&broker, "one-call")
        .await
        .get_token(with_token(ask(), &answer.token))
        .await
        .unwrap();
    let err = identity(&broker, "workload")
        .await
        .get_token(with_token(ask(), &answer.token))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");

    // Without a CSR, Attest answers with the token only.
    let (mut att, nonce) = challenged(&broker).await;
    let answer = att
        .attest(request(&nonce, &key, TRUSTED_MEASUREMENT, Vec::new()))
        .await
        .unwrap()
        .into_inner();
    assert!(!answer.token.is_empty());
    assert!(answer.certificate.is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_csr_refuses_attest_before_the_challenge_is_spent() {
    let broker = BrokerProcess::start();
    let key = EphemeralKey::generate().unwrap();
    let other = EphemeralKey::generate().unwrap();
    let (mut att, nonce) = challenged(&broker).await;
    let refusals = [
        (other.csr_der(WORKLOAD).unwrap(), "another key"),
        (
            key.csr_der(ADMIN).unwrap(),
            "a certificate names only the caller",
        ),
        (vec![0x30, 0x03, 0x02, 0x01, 0x00], "csr"),
    ];
    for (csr, why) in refusals {
        let err = att
            .attest(request(&nonce, &key, TRUSTED_MEASUREMENT, csr))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(err.message().contains(why), "{why:?} in {err:?}");
    }
    // None of them spent the challenge.
    let answer = att
        .attest(request(
            &nonce,
            &key,
            TRUSTED_MEASUREMENT,
            key.csr_der(WORKLOAD).unwrap(),
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(answer.certificate.is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn attest_with_a_csr_gives_nothing_when_the_policy_denies_the_certificate() {
    let broker = BrokerProcess::start();
    let key = EphemeralKey::generate().unwrap();
    // The appraisal accepts this development measurement, but the authorization policy
    // gives certificates only to the trusted one.
    let untrusted = "11".repeat(48);
    let (mut att, nonce) = challenged(&broker).await;
    let csr = key.csr_der(WORKLOAD).unwrap();
    let err = att
        .attest(request(&nonce, &key, &untrusted, csr.clone()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    // The appraisal redeemed the challenge before the policy refused the certificate.
    let err = att
        .attest(request(&nonce, &key, &untrusted, csr))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("already used"), "{err:?}");
    // Attesting alone is allowed: the refusal was the certificate's.
    let (mut att, nonce) = challenged(&broker).await;
    let answer = att
        .attest(request(&nonce, &key, &untrusted, Vec::new()))
        .await
        .unwrap()
        .into_inner();
    assert!(!answer.token.is_empty());
}
