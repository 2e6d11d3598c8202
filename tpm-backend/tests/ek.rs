//! The EK certificate and AK-to-EK binding, on a swtpm manufactured with `swtpm_setup`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::connect;
use der::{Decode, Encode};
use secrecy::ExposeSecret;
use softhsm_tests::Swtpm;
use tpm_backend::TpmError;

#[test]
fn the_ek_certificate_holds_the_key_the_tpm_derives_for_its_ek() {
    let tpm = Swtpm::start_with_ek_certificates();
    let backend = connect(&tpm);
    let der = backend.ek_certificate().wait().unwrap();
    let cert = x509_cert::Certificate::from_der(&der).unwrap();
    let cert_spki = cert
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .unwrap();
    let ek = backend.ek_public().wait().unwrap();
    assert_eq!(ek.spki().unwrap(), cert_spki);
}

#[test]
fn a_credential_made_for_the_ak_is_released_only_to_that_ak_in_that_tpm() {
    let tpm = Swtpm::start_with_ek_certificates();
    let backend = connect(&tpm);
    let ak = backend.create_attestation_key().wait().unwrap();
    let ek = backend.ek_public().wait().unwrap();
    let secret = [0x42u8; 32];
    let credential = backend
        .make_credential(&ek, &ak.name(), &secret)
        .wait()
        .unwrap();
    let released = backend
        .activate_credential(&ak, &credential)
        .wait()
        .unwrap();
    assert_eq!(released.expose_secret(), &secret);

    // Another AK on the same TPM cannot claim it.
    let other_ak = backend.create_attestation_key().wait().unwrap();
    assert!(
        backend
            .activate_credential(&other_ak, &credential)
            .wait()
            .is_err()
    );

    // Nor can the same AK name on another TPM (whose EK is different).
    let other_tpm = Swtpm::start_with_ek_certificates();
    let other = connect(&other_tpm);
    let other_ak = other.create_attestation_key().wait().unwrap();
    let for_other = backend
        .make_credential(&ek, &other_ak.name(), &secret)
        .wait()
        .unwrap();
    assert!(
        other
            .activate_credential(&other_ak, &for_other)
            .wait()
            .is_err()
    );

    // Nothing leaked: the TPM still works for the rightful AK.
    assert!(backend.activate_credential(&ak, &credential).wait().is_ok());
}

#[test]
fn a_tpm_without_an_ek_certificate_says_so() {
    let tpm = Swtpm::start();
    let backend = connect(&tpm);
    let err = backend.ek_certificate().wait().unwrap_err();
    assert!(
        matches!(err, TpmError::EkCertificateMissing(0x01c0_0002)),
        "{err}"
    );
}
