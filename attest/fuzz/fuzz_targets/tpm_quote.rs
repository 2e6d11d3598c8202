//! The TPM quote and signature parsers must refuse, never panic, on any bytes.
#![no_main]

use std::sync::OnceLock;

use attest::policy::{AppraisalPolicy, EnrolledAttestationKey};
use libfuzzer_sys::fuzz_target;

/// A P-256 public key (made with `openssl ecparam -name prime256v1 -genkey`), enrolled.
const AK_SPKI: &str = "3059301306072a8648ce3d020106082a8648ce3d030107034200045d32994784ecaa446f1b075fdaa5fb22704b8ad794c9f8d2d9d59d5261507ef2adff1d150c9ccb773bf8b98aeca85827ae534a115d0c7e089dae8c87869dff25";

fn enrolled() -> Option<&'static EnrolledAttestationKey> {
    static POLICY: OnceLock<Option<AppraisalPolicy>> = OnceLock::new();
    POLICY
        .get_or_init(|| {
            AppraisalPolicy::from_toml(&format!(
                "[[tpm.attestation_keys]]\nlabel = \"fuzz\"\nspki = \"{AK_SPKI}\"\n[tpm.pcrs]\n0 = [\"{}\"]\n",
                "00".repeat(32)
            ))
            .ok()
        })
        .as_ref()?
        .tpm
        .as_ref()?
        .attestation_keys()
        .first()
}

fuzz_target!(|data: &[u8]| {
    let _ = attest::tpm::wire::parse_quote(data);
    let _ = attest::tpm::wire::parse_ecdsa_signature(data);
    // Split the input into a quote and a signature and run the whole verifier.
    if let (Some((&cut, rest)), Some(ak)) = (data.split_first(), enrolled()) {
        let (attest, signature) = rest.split_at(usize::from(cut).min(rest.len()));
        let evidence = attest::tpm::TpmEvidence {
            attest: attest.to_vec(),
            signature: signature.to_vec(),
            pcr_values: Default::default(),
        };
        let _ = attest::tpm::verify(&evidence, ak, &[]);
    }
});
