//! Tokens bound to their holder, challenges bound to their owner, and the token key's
//! rotation, attacked from outside the real broker.

use std::time::{Duration, Instant};

use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_token_works_only_for_a_caller_that_proves_it_holds_the_key_it_is_bound_to() {
    let broker = BrokerProcess::start();
    vault_key(&broker).await;
    // The same SPIFFE ID on another machine: a valid certificate, with another key.
    let now = std::time::SystemTime::now();
    let day = Duration::from_secs(86_400);
    broker.issue_client("workload-twin", "/workload", now - day, now + day);
    let token = attest_dev(&broker, "workload").await;

    let mut twin = broker.keys("workload-twin").await;
    let err = twin
        .encrypt(with_token(encrypt("vault"), &token))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(
        broker
            .log()
            .contains("bound to another key than the one the caller proved it holds"),
        "the log says why"
    );
    // Evidence that binds the workload's key gets the twin a token bound to that key,
    // which the twin cannot use: it does not hold the key.
    let mut twin_att = attestation(&broker, "workload-twin").await;
    let nonce = challenge(&mut twin_att).await;
    let theirs = client_spki(&broker, "workload");
    let stolen = twin_att
        .attest(dev_request(&nonce, &theirs, &theirs, TRUSTED_MEASUREMENT))
        .await
        .unwrap()
        .into_inner()
        .token;
    let err = twin
        .encrypt(with_token(encrypt("vault"), &stolen))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");

    // With the bound certificate, on a new connection, the token is accepted.
    let mut bound = broker.keys("workload").await;
    bound
        .encrypt(with_token(encrypt("vault"), &token))
        .await
        .unwrap();
    // And the twin's own token works for the twin, not for the workload's connection.
    let twin_token = attest_dev(&broker, "workload-twin").await;
    twin.encrypt(with_token(encrypt("vault"), &twin_token))
        .await
        .unwrap();
    let err = bound
        .encrypt(with_token(encrypt("vault"), &twin_token))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_challenge_redeemed_by_another_identity_is_refused() {
    let broker = BrokerProcess::start();
    let mut admin = attestation(&broker, "admin").await;
    let mut workload = attestation(&broker, "workload").await;
    let admins = challenge(&mut admin).await;

    let spki = client_spki(&broker, "workload");
    let err = workload
        .attest(dev_request(&admins, &spki, &spki, TRUSTED_MEASUREMENT))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("another identity"), "{err:?}");

    // The refusal used nothing up: the owner redeems its challenge.
    let spki = client_spki(&broker, "admin");
    admin
        .attest(dev_request(&admins, &spki, &spki, TRUSTED_MEASUREMENT))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_challenge_cap_refuses_one_identity_while_another_still_gets_challenges() {
    let broker = BrokerProcess::start_attesting(
        BrokerOptions::default(),
        common::APPRAISAL_POLICY,
        "challenges_per_identity = 3",
    );
    let mut workload = attestation(&broker, "workload").await;
    let mut admin = attestation(&broker, "admin").await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(challenge(&mut workload).await);
    }
    // Each identity has its own allowance: the admin takes all of its own three.
    for _ in 0..3 {
        let err = workload
            .get_challenge(pb::GetChallengeRequest {})
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
        // Another identity is still served while the first is refused.
        challenge(&mut admin).await;
    }
    // Using a challenge gives its owner room for one more.
    let spki = client_spki(&broker, "workload");
    workload
        .attest(dev_request(&held[0], &spki, &spki, TRUSTED_MEASUREMENT))
        .await
        .unwrap();
    challenge(&mut workload).await;
}

async fn jwks_kids(att: &mut AttestationServiceClient<Channel>) -> Vec<String> {
    let json = att
        .get_jwks(pb::GetJwksRequest {})
        .await
        .unwrap()
        .into_inner()
        .json;
    let set: serde_json::Value = serde_json::from_str(&json).unwrap();
    set["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_string())
        .collect()
}

/// Polls the JWK set until `done` holds (the rotation runs on the broker's clock).
async fn wait_for_jwks(
    att: &mut AttestationServiceClient<Channel>,
    what: &str,
    done: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let kids = jwks_kids(att).await;
        if done(&kids) {
            return kids;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: the JWK set stayed {kids:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn token_kid(token: &str) -> String {
    attest::token::key_id(token).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn after_rotation_the_jwks_holds_two_keys_and_the_retired_key_is_refused_after_its_overlap() {
    // Tokens live 120 s; the key rotates every 10 s, and a replaced key verifies for 8 s:
    // wide enough that the steps between seeing the rotation and using the old token fit
    // in the overlap on a loaded machine.
    let broker = BrokerProcess::start_attesting(
        BrokerOptions::default(),
        common::APPRAISAL_POLICY,
        "token_key_rotation_seconds = 10\ntoken_key_overlap_seconds = 8",
    );
    vault_key(&broker).await;
    let mut att = attestation(&broker, "workload").await;
    let mut keys = broker.keys("workload").await;
    let first = jwks_kids(&mut att).await;
    assert_eq!(first.len(), 1, "{first:?}");
    let old = attest_dev(&broker, "workload").await;
    assert_eq!(token_kid(&old), first[0]);

    // Rotation: the JWK set holds the new key and the retired one...
    let both = wait_for_jwks(&mut att, "rotation", |kids| kids.len() == 2).await;
    assert_eq!(both[1], first[0], "the retired key is published second");
    // ...new tokens come from the new key, and the old token still works in the overlap.
    let new = attest_dev(&broker, "workload").await;
    assert_eq!(token_kid(&new), both[0]);
    keys.encrypt(with_token(encrypt("vault"), &old))
        .await
        .unwrap();

    // Once the overlap has passed, the retired key leaves the set and its token, which
    // has not expired, is refused.
    wait_for_jwks(&mut att, "end of the overlap", |kids| {
        !kids.contains(&first[0])
    })
    .await;
    let err = keys
        .encrypt(with_token(encrypt("vault"), &old))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    // The retired key is gone from the token too.
    let labels = broker.pkcs11_tool(&["--list-objects", "--type", "privkey"]);
    assert!(
        !labels.contains("kbsys:attestation-token:v1"),
        "the retired key is destroyed: {labels}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kem_key_is_accepted_only_when_the_evidence_binds_it_and_the_token_carries_it() {
    use attest::binding::bound_keys;
    use attest::release::{KemKeyPair, KemPublicKey};
    let broker = BrokerProcess::start();
    let mut att = attestation(&broker, "workload").await;
    let spki = client_spki(&broker, "workload");
    let kem = KemKeyPair::generate().public();
    let with_kem = |nonce: &Nonce, bound_to: &[u8]| pb::AttestRequest {
        kem_public_key: kem.as_bytes().to_vec(),
        ..dev_request(nonce, &spki, bound_to, TRUSTED_MEASUREMENT)
    };

    // Evidence over the signing key alone does not vouch for a KEM key sent beside it.
    let nonce = challenge(&mut att).await;
    let err = att.attest(with_kem(&nonce, &spki)).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("bound"), "{err:?}");
    // Nor does evidence over another KEM key.
    let other = KemKeyPair::generate().public();
    let nonce = challenge(&mut att).await;
    let err = att
        .attest(with_kem(&nonce, &bound_keys(&spki, Some(&other))))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    // A KEM key of the wrong size is malformed.
    let nonce = challenge(&mut att).await;
    let short = pb::AttestRequest {
        kem_public_key: vec![7; 31],
        ..dev_request(&nonce, &spki, &spki, TRUSTED_MEASUREMENT)
    };
    let err = att.attest(short).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");

    // Bound by the evidence: the token carries it in its `kem` claim.
    let nonce = challenge(&mut att).await;
    let token = att
        .attest(with_kem(&nonce, &bound_keys(&spki, Some(&kem))))
        .await
        .unwrap()
        .into_inner()
        .token;
    let jwks = att
        .get_jwks(pb::GetJwksRequest {})
        .await
        .unwrap()
        .into_inner()
        .json;
    let claims = attest::token::verify(&token, &jwks, common::ISSUER).unwrap();
    let carried = KemPublicKey::from_jwk(&claims.kem.unwrap()).unwrap();
    assert_eq!(carried, kem);
}
