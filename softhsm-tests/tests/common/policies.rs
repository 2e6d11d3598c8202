//! The policies every end-to-end broker runs with: authorization (Cedar) and appraisal.

/// The measurement that the test policy trusts in development evidence.
pub const TRUSTED_MEASUREMENT: &str = "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a";

/// The token issuer the test broker is configured with.
pub const ISSUER: &str = "https://broker.test.keybroker";

/// The appraisal policy: development evidence and SEV-SNP reports with one measurement.
/// TPM quotes need an enrolled attestation key: see [`appraisal_policy_enrolling`].
pub const APPRAISAL_POLICY: &str = r#"result_validity_seconds = 120

[snp]
allowed_measurements = ["5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a"]

[dev]
allow_insecure = true
"#;

/// [`APPRAISAL_POLICY`] that also accepts TPM quotes signed by the AK `ak_spki_der`
/// (enrolled as `label`) whose PCR 16 (the debug PCR) is still zero, as on a fresh swtpm.
pub fn appraisal_policy_enrolling(label: &str, ak_spki_der: &[u8]) -> String {
    let spki: String = ak_spki_der.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{APPRAISAL_POLICY}\n[[tpm.attestation_keys]]\nlabel = \"{label}\"\nspki = \"{spki}\"\n\n[tpm.pcrs]\n16 = [\"{}\"]\n",
        "00".repeat(32)
    )
}

/// The test policy: `admin` may do everything; `workload` may sign, verify and read
/// keys and their public keys, for keys tagged team=payments; attest; and encrypt and
/// decrypt (and receive, if releasable) keys tagged team=vault only while presenting a token whose claims carry
/// the trusted measurement; and get a certificate and workload JWTs once attested with
/// the trusted measurement or a quote from the enrolled `workload-host` AK.
pub const POLICY: &str = r#"
@id("admin")
permit (principal == Keybroker::Workload::"spiffe://test.keybroker/admin", action, resource);

@id("payments-sign")
permit (
  principal == Keybroker::Workload::"spiffe://test.keybroker/workload",
  action in [
    Keybroker::Action::"Sign", Keybroker::Action::"Verify",
    Keybroker::Action::"GetKey", Keybroker::Action::"GetPublicKey",
    Keybroker::Action::"Seal"
  ],
  resource is Keybroker::Key
) when { resource.hasTag("team") && resource.getTag("team") == "payments" };

@id("workload-attests")
permit (
  principal == Keybroker::Workload::"spiffe://test.keybroker/workload",
  action in Keybroker::Action::"Attestation",
  resource == Keybroker::Broker::"broker"
);

@id("workload-identity-needs-attestation")
permit (
  principal == Keybroker::Workload::"spiffe://test.keybroker/workload",
  action in [Keybroker::Action::"IssueCertificate", Keybroker::Action::"GetToken"],
  resource == Keybroker::Broker::"broker"
) when {
  context.attested && context has claims && (
    (context.claims has measurement &&
      context.claims.measurement == "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a") ||
    (context.claims has attestation_key && context.claims.attestation_key == "workload-host")
  )
};

@id("workload-secrets-need-measurement")
permit (
  principal == Keybroker::Workload::"spiffe://test.keybroker/workload",
  action in Keybroker::Action::"SecretUse",
  resource is Keybroker::Secret
) when {
  context.attested && context has claims && context.claims has measurement &&
  context.claims.measurement == "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a" &&
  resource.name like "app/*"
};

@id("workload-trust-bundle")
permit (
  principal == Keybroker::Workload::"spiffe://test.keybroker/workload",
  action == Keybroker::Action::"GetTrustBundle",
  resource == Keybroker::Broker::"broker"
);

@id("vault-needs-measurement")
permit (
  principal == Keybroker::Workload::"spiffe://test.keybroker/workload",
  action in [
    Keybroker::Action::"Encrypt", Keybroker::Action::"Decrypt", Keybroker::Action::"ReleaseKey"
  ],
  resource is Keybroker::Key
) when {
  resource.hasTag("team") && resource.getTag("team") == "vault" &&
  context.attested && context has claims && context.claims has measurement &&
  context.claims.measurement == "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a"
};
"#;
