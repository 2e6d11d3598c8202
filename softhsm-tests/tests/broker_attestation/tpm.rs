//! TPM quotes end to end: only an attestation key enrolled in the appraisal policy makes a
//! quote evidence. The forged-AK attack (a software key, chosen PCRs) is refused; a quote
//! from the enrolled AK of a real swtpm is accepted.

use super::*;

/// A "quote" made in software: a TPMS_ATTEST with PCR 16 zero (what the policy wants)
/// and the right binding, signed by a P-256 key that never was inside a TPM.
fn forged_quote(key: &p256::ecdsa::SigningKey, nonce: &Nonce, spki: &[u8]) -> pb::TpmEvidence {
    use attest::tpm::wire::{self, PcrBankSelection, QuoteInfo};
    use p256::ecdsa::signature::hazmat::PrehashSigner;
    use sha2::Digest as _;
    let quote = QuoteInfo {
        qualified_signer: vec![0x00, 0x0b, 0x42],
        extra_data: tpm_extra_data(nonce, spki).to_vec(),
        clock: 1,
        reset_count: 0,
        restart_count: 0,
        selections: vec![PcrBankSelection {
            hash: wire::SHA256_BANK,
            pcrs: vec![16],
        }],
        pcr_digest: sha2::Sha256::digest([0u8; 32]).to_vec(),
    };
    let attest = wire::marshal_quote(&quote).unwrap();
    let signature: p256::ecdsa::Signature =
        key.sign_prehash(&sha2::Sha256::digest(&attest)).unwrap();
    let (r, s) = signature.split_bytes();
    pb::TpmEvidence {
        attest,
        signature: wire::marshal_ecdsa_signature(&r.into(), &s.into()),
        pcr_indices: vec![16],
        pcr_values: vec![vec![0; 32]],
        ak_spki_der: key
            .verifying_key()
            .to_public_key_der()
            .unwrap()
            .as_bytes()
            .to_vec(),
    }
}

pub(super) fn tpm_request(
    nonce: &Nonce,
    spki: &[u8],
    evidence: pb::TpmEvidence,
) -> pb::AttestRequest {
    pb::AttestRequest {
        nonce: nonce.as_bytes().to_vec(),
        ephemeral_public_key: spki.to_vec(),
        evidence: Some(pb::attest_request::Evidence::Tpm(evidence)),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_quote_from_the_enrolled_swtpm_ak_is_accepted_and_a_software_forgery_is_refused() {
    // The workload's TPM: a second swtpm, with an attestation key made inside it and
    // enrolled in the appraisal policy before the broker starts.
    let workload_tpm = Swtpm::start();
    let tpm =
        TpmBackend::connect(TpmConfig::new(Tcti::new(&workload_tpm.tcti()).unwrap())).unwrap();
    let ak = tpm.create_attestation_key().wait().unwrap();
    let ak_spki = ak.public_key_der().unwrap();
    let broker = BrokerProcess::start_attesting(
        BrokerOptions::default(),
        &appraisal_policy_enrolling("workload-host", &ak_spki),
        "",
    );
    let mut att = attestation(&broker, "workload").await;
    let spki = client_spki(&broker, "workload");
    let quote_with = |ak: &tpm_backend::TpmBlob, nonce: &Nonce| {
        let extra = tpm_extra_data(nonce, &spki);
        let quote = tpm
            .quote(ak, &extra, &PcrSelection::sha256(&[16]).unwrap())
            .wait()
            .unwrap();
        pb::TpmEvidence {
            pcr_indices: quote.pcrs.indices().iter().map(|i| u32::from(*i)).collect(),
            pcr_values: quote.pcr_values.iter().map(|v| v.to_vec()).collect(),
            attest: quote.attest,
            signature: quote.signature,
            ak_spki_der: ak.public_key_der().unwrap(),
        }
    };

    // The forged-AK attack: a software key, chosen PCRs, the right binding. Refused, and
    // the reason names the key that is not enrolled.
    let attacker = p256::ecdsa::SigningKey::from_slice(&[0x66; 32]).unwrap();
    let nonce = challenge(&mut att).await;
    let err = att
        .attest(tpm_request(
            &nonce,
            &spki,
            forged_quote(&attacker, &nonce, &spki),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("not enrolled"), "{err:?}");
    // Naming the enrolled AK does not make the software signature its own.
    let nonce = challenge(&mut att).await;
    let mut posing = forged_quote(&attacker, &nonce, &spki);
    posing.ak_spki_der = ak_spki.clone();
    let err = att
        .attest(tpm_request(&nonce, &spki, posing))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("signature"), "{err:?}");
    // A genuine AK of the same real TPM that nobody enrolled is refused too.
    let stray = tpm.create_attestation_key().wait().unwrap();
    let nonce = challenge(&mut att).await;
    let err = att
        .attest(tpm_request(&nonce, &spki, quote_with(&stray, &nonce)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("not enrolled"), "{err:?}");

    // The enrolled AK's quote is accepted, and the claims name it.
    let nonce = challenge(&mut att).await;
    let answer = att
        .attest(tpm_request(&nonce, &spki, quote_with(&ak, &nonce)))
        .await
        .unwrap()
        .into_inner();
    let claims: serde_json::Value = serde_json::from_str(&answer.claims_json).unwrap();
    assert_eq!(claims["tee"], "tpm");
    assert_eq!(claims["insecure"], false);
    assert_eq!(claims["attestation_key"], "workload-host");
    assert_eq!(claims["pcrs"]["16"], "00".repeat(32));

    // A quote over another challenge's nonce is not bound to this one.
    let nonce = challenge(&mut att).await;
    let other = challenge(&mut att).await;
    let err = att
        .attest(tpm_request(&nonce, &spki, quote_with(&ak, &other)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("not bound"), "{err:?}");
}
