//! The attestation flow end to end: development evidence earns a token that unlocks gated
//! keys; bad evidence, replays and foreign or tampered tokens are refused; a real SEV-SNP
//! report reaches the verifier.

use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn an_attested_workload_gets_a_token_that_unlocks_gated_keys() {
    let broker = BrokerProcess::start();
    vault_key(&broker).await;
    let mut keys: KeyServiceClient<Channel> = broker.keys("workload").await;
    let mut att = attestation(&broker, "workload").await;

    // Without a token the gated key refuses, and says nothing more.
    let denied = keys.encrypt(encrypt("vault")).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert_eq!(denied.message(), "permission denied");

    let spki = client_spki(&broker, "workload");
    let nonce = challenge(&mut att).await;
    let answer = att
        .attest(dev_request(&nonce, &spki, &spki, TRUSTED_MEASUREMENT))
        .await
        .unwrap()
        .into_inner();
    let claims: serde_json::Value = serde_json::from_str(&answer.claims_json).unwrap();
    assert_eq!(claims["tee"], "insecure-dev");
    assert_eq!(claims["insecure"], true);
    assert_eq!(claims["measurement"], TRUSTED_MEASUREMENT);

    // The token verifies offline against the published JWK set, names the caller and
    // is bound to the client certificate it was issued on (RFC 8705 `x5t#S256`).
    let jwks = att
        .get_jwks(pb::GetJwksRequest {})
        .await
        .unwrap()
        .into_inner()
        .json;
    let verified = attest::token::verify(&answer.token, &jwks, ISSUER).unwrap();
    assert_eq!(verified.sub, "spiffe://test.keybroker/workload");
    assert_eq!(verified.exp, u64::try_from(answer.expires_at).unwrap());
    assert!(verified.cnf.matches_key(&spki), "{:?}", verified.cnf);

    // With the token, the gated key works.
    let ciphertext = keys
        .encrypt(with_token(encrypt("vault"), &answer.token))
        .await
        .unwrap()
        .into_inner()
        .ciphertext;
    let plaintext = keys
        .decrypt(with_token(
            pb::DecryptRequest {
                name: "vault".into(),
                ciphertext,
                aad: Vec::new(),
            },
            &answer.token,
        ))
        .await
        .unwrap()
        .into_inner()
        .plaintext
        .clone();
    assert_eq!(plaintext, b"attested secret");

    // The call log (written as each call completes) names the attested calls.
    let logged = |log: &str| log.contains("KeyService/Decrypt") && log.contains("attested=true");
    let seen = common::eventually(std::time::Duration::from_secs(10), || async {
        logged(&broker.log())
    })
    .await;
    assert!(seen, "{}", broker.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_evidence_replays_and_foreign_or_tampered_tokens_are_refused() {
    let broker = BrokerProcess::start();
    vault_key(&broker).await;
    let mut att = attestation(&broker, "workload").await;
    let spki = client_spki(&broker, "workload");

    // An ephemeral "key" that is no EC key: refused before the nonce is used.
    let nonce = challenge(&mut att).await;
    let err = att
        .attest(dev_request(
            &nonce,
            b"not a key",
            b"not a key",
            TRUSTED_MEASUREMENT,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("P-256 or P-384"), "{err:?}");
    // A key other than the connection's is attested (the token is bound to it), but the
    // token is useless on this connection, which does not prove that key.
    let other = ephemeral_spki(3);
    let token = att
        .attest(dev_request(&nonce, &other, &other, TRUSTED_MEASUREMENT))
        .await
        .unwrap()
        .into_inner()
        .token;
    let err = broker
        .keys("workload")
        .await
        .encrypt(with_token(encrypt("vault"), &token))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");

    // Evidence bound to another key.
    let nonce = challenge(&mut att).await;
    let err = att
        .attest(dev_request(
            &nonce,
            &spki,
            &ephemeral_spki(3),
            TRUSTED_MEASUREMENT,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("not bound"), "{err:?}");
    // The failed attempt burnt the nonce: a replay is refused.
    let err = att
        .attest(dev_request(&nonce, &spki, &spki, TRUSTED_MEASUREMENT))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("already used"), "{err:?}");
    // A nonce the broker never issued.
    let forged = Nonce::from_bytes([9; 32]);
    let err = att
        .attest(dev_request(&forged, &spki, &spki, TRUSTED_MEASUREMENT))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    // Malformed requests.
    let nonce = challenge(&mut att).await;
    let mut no_evidence = dev_request(&nonce, &spki, &spki, TRUSTED_MEASUREMENT);
    no_evidence.evidence = None;
    assert_eq!(
        att.attest(no_evidence).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    let mut short = dev_request(&nonce, &spki, &spki, "abcd");
    short.nonce.truncate(31);
    assert_eq!(
        att.attest(short).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    let tpm = pb::AttestRequest {
        nonce: nonce.as_bytes().to_vec(),
        ephemeral_public_key: spki.clone(),
        evidence: Some(pb::attest_request::Evidence::Tpm(pb::TpmEvidence {
            attest: vec![0xff; 10],
            signature: vec![0; 10],
            pcr_indices: vec![16, 99],
            pcr_values: vec![vec![0; 32], vec![0; 32]],
            ak_spki_der: spki.clone(),
        })),
        ..Default::default()
    };
    assert_eq!(
        att.attest(tpm).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    // A stranger the policy does not name may not attest at all.
    let mut stranger = attestation(&broker, "stranger").await;
    let err = stranger
        .get_challenge(pb::GetChallengeRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    // A valid token with an untrusted measurement: attested, but the policy refuses.
    let nonce = challenge(&mut att).await;
    let untrusted = att
        .attest(dev_request(&nonce, &spki, &spki, &"11".repeat(48)))
        .await
        .unwrap()
        .into_inner()
        .token;
    let mut keys = broker.keys("workload").await;
    let err = keys
        .encrypt(with_token(encrypt("vault"), &untrusted))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    // A trusted token...
    let nonce = challenge(&mut att).await;
    let token = att
        .attest(dev_request(&nonce, &spki, &spki, TRUSTED_MEASUREMENT))
        .await
        .unwrap()
        .into_inner()
        .token;
    // ...presented by another identity is refused as unauthenticated,
    let mut admin = broker.keys("admin").await;
    let err = admin
        .encrypt(with_token(encrypt("vault"), &token))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    // ...and so is the same token with one payload character changed, or garbage.
    let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
    let mut payload = parts[1].clone().into_bytes();
    payload[10] = if payload[10] == b'A' { b'B' } else { b'A' };
    parts[1] = String::from_utf8(payload).unwrap();
    let tampered = parts.join(".");
    for bad in [tampered.as_str(), "not-a-token"] {
        let err = keys
            .encrypt(with_token(encrypt("vault"), bad))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
        assert!(
            !err.message().contains("signature"),
            "no detail for callers: {err:?}"
        );
    }
    // The untampered token still works: nothing above changed the broker's state.
    keys.encrypt(with_token(encrypt("vault"), &token))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_real_genoa_report_reaches_the_snp_verifier_and_is_refused_for_its_binding() {
    // A real report signed by a real VCEK (attest/tests/data/snp/PROVENANCE.md). Its
    // REPORT_DATA was made for someone else's challenge, so it must fail on the binding,
    // after its VCEK chain and signature verified; a flipped byte fails on the signature.
    let data = concat!(env!("CARGO_MANIFEST_DIR"), "/../attest/tests/data/snp/");
    let report = std::fs::read(format!("{data}genoa_report.bin")).unwrap();
    let vcek = std::fs::read(format!("{data}genoa_vcek.der")).unwrap();
    let broker = BrokerProcess::start();
    let mut att = attestation(&broker, "workload").await;
    let spki = client_spki(&broker, "workload");
    let snp = |nonce: &Nonce, report: Vec<u8>, vek_der: Vec<u8>| pb::AttestRequest {
        nonce: nonce.as_bytes().to_vec(),
        ephemeral_public_key: spki.clone(),
        evidence: Some(pb::attest_request::Evidence::Snp(pb::SnpEvidence {
            report,
            vek_der,
        })),
        ..Default::default()
    };

    let nonce = challenge(&mut att).await;
    let err = att
        .attest(snp(&nonce, report.clone(), vcek.clone()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("not bound"), "{err:?}");

    let mut flipped = report.clone();
    flipped[0x300] ^= 1;
    let nonce = challenge(&mut att).await;
    let err = att
        .attest(snp(&nonce, flipped, vcek.clone()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("signature"), "{err:?}");

    let nonce = challenge(&mut att).await;
    let err = att
        .attest(snp(&nonce, report[..100].to_vec(), vcek))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
}
