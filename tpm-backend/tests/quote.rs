//! Quotes from swtpm, verified independently and by `tpm2_checkquote`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Command;

use common::{connect, digest};
use p256::ecdsa::signature::hazmat::PrehashVerifier;
use p256::pkcs8::{DecodePublicKey, EncodePublicKey, LineEnding};
use sha2::{Digest as _, Sha256};
use softhsm_tests::{Swtpm, require_command};
use tpm_backend::{PcrSelection, Quote, TpmBlob, TpmError, TpmKeyKind};
use tss_esapi::structures::{Attest, AttestInfo, Signature};
use tss_esapi::traits::UnMarshall;

/// Checks a quote the way a verifier would, with no TPM: signature, nonce, PCR digest.
fn verify(ak: &TpmBlob, quote: &Quote, nonce: &[u8]) -> Result<(), String> {
    let attest = Attest::unmarshall(&quote.attest).map_err(|e| e.to_string())?;
    let AttestInfo::Quote { info } = attest.attested() else {
        return Err("not a quote".into());
    };
    if attest.extra_data().value() != nonce {
        return Err("nonce mismatch".into());
    }
    let mut h = Sha256::new();
    quote.pcr_values.iter().for_each(|v| h.update(v));
    let expected: [u8; 32] = h.finalize().into();
    if info.pcr_digest().value() != expected {
        return Err("PCR digest mismatch".into());
    }
    let Signature::EcDsa(sig) =
        Signature::unmarshall(&quote.signature).map_err(|e| e.to_string())?
    else {
        return Err("not ECDSA".into());
    };
    let sig = p256::ecdsa::Signature::from_scalars(
        p256::FieldBytes::from(<[u8; 32]>::try_from(sig.signature_r().value()).unwrap()),
        p256::FieldBytes::from(<[u8; 32]>::try_from(sig.signature_s().value()).unwrap()),
    )
    .map_err(|e| e.to_string())?;
    let key =
        p256::ecdsa::VerifyingKey::from_public_key_der(&ak.public_key_der().unwrap()).unwrap();
    key.verify_prehash(&Sha256::digest(&quote.attest), &sig)
        .map_err(|e| e.to_string())
}

#[test]
fn a_quote_verifies_independently_and_binds_nonce_and_pcrs() {
    let tpm = Swtpm::start();
    let backend = connect(&tpm);
    let ak = backend.create_attestation_key().wait().unwrap();
    let pcrs = PcrSelection::sha256(&[0, 7, 16]).unwrap();
    backend
        .pcr_extend(16, digest(b"workload image"))
        .wait()
        .unwrap();
    let nonce = [0x5a; 32];
    let quote = backend.quote(&ak, &nonce, &pcrs).wait().unwrap();
    assert_eq!(quote.pcr_values, backend.pcr_read(&pcrs).wait().unwrap());
    verify(&ak, &quote, &nonce).unwrap();

    assert_eq!(
        verify(&ak, &quote, &[0x5b; 32]),
        Err("nonce mismatch".into())
    );
    let mut forged = quote.clone();
    forged.pcr_values[2] = [0; 32];
    assert_eq!(
        verify(&ak, &forged, &nonce),
        Err("PCR digest mismatch".into())
    );
    let other_ak = backend.create_attestation_key().wait().unwrap();
    assert!(
        verify(&other_ak, &quote, &nonce).is_err(),
        "another AK's key must not verify it"
    );
}

#[test]
fn tpm2_checkquote_accepts_the_quote_and_refuses_a_wrong_nonce() {
    let tpm = Swtpm::start();
    let backend = connect(&tpm);
    let ak = backend.create_attestation_key().wait().unwrap();
    let pcrs = PcrSelection::sha256(&[0, 7, 16]).unwrap();
    let nonce = [0x11u8; 20];
    let quote = backend.quote(&ak, &nonce, &pcrs).wait().unwrap();

    let dir = tpm.scratch_dir();
    let pem = p256::PublicKey::from_public_key_der(&ak.public_key_der().unwrap())
        .unwrap()
        .to_public_key_pem(LineEnding::LF)
        .unwrap();
    std::fs::write(dir.join("ak.pem"), pem).unwrap();
    std::fs::write(dir.join("quote.msg"), &quote.attest).unwrap();
    std::fs::write(dir.join("quote.sig"), &quote.signature).unwrap();
    std::fs::write(dir.join("pcrs.bin"), quote.pcr_values.concat()).unwrap();
    let checkquote = require_command("tpm2_checkquote", "tpm2-tools").unwrap();
    let run = |nonce_hex: &str| {
        Command::new(&checkquote)
            .current_dir(dir)
            .args([
                "-u",
                "ak.pem",
                "-m",
                "quote.msg",
                "-s",
                "quote.sig",
                "-f",
                "pcrs.bin",
            ])
            .args(["-l", "sha256:0,7,16", "-g", "sha256", "-q", nonce_hex])
            .output()
            .unwrap()
    };
    let ok = run(&hex::encode(nonce));
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let wrong = run(&hex::encode([0x12u8; 20]));
    assert!(
        !wrong.status.success(),
        "a wrong nonce must fail tpm2_checkquote"
    );
}

#[test]
fn bad_quote_requests_are_refused() {
    let tpm = Swtpm::start();
    let backend = connect(&tpm);
    let ak = backend.create_attestation_key().wait().unwrap();
    let pcrs = PcrSelection::sha256(&[0]).unwrap();
    assert!(matches!(
        backend.quote(&ak, &[], &pcrs).wait(),
        Err(TpmError::InvalidInput(_))
    ));
    assert!(matches!(
        backend.quote(&ak, &[0; 65], &pcrs).wait(),
        Err(TpmError::InvalidInput(_))
    ));
    let signing = backend.create_key(TpmKeyKind::EcP256Sign).wait().unwrap();
    let err = backend.quote(&signing, &[1; 32], &pcrs).wait().unwrap_err();
    assert!(
        matches!(err, TpmError::InvalidInput(_)),
        "an unrestricted key is not an AK: {err}"
    );
}
