//! The TPM quote and signature parsers must refuse, never panic, on any bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = attest::tpm::wire::parse_quote(data);
    let _ = attest::tpm::wire::parse_ecdsa_signature(data);
    // Split the input into a quote and a signature and run the whole verifier.
    if let Some((&cut, rest)) = data.split_first() {
        let (attest, signature) = rest.split_at(usize::from(cut).min(rest.len()));
        let evidence = attest::tpm::TpmEvidence {
            attest: attest.to_vec(),
            signature: signature.to_vec(),
            pcr_values: Default::default(),
        };
        let _ = attest::tpm::verify(&evidence, &[], &[]);
    }
});
