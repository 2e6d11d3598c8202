//! The policies every end-to-end broker runs with: authorization (Cedar) and appraisal.

/// The measurement that the test policy trusts in development evidence.
pub const TRUSTED_MEASUREMENT: &str = "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a";

/// The token issuer the test broker is configured with.
pub const ISSUER: &str = "https://broker.test.keybroker";

/// The appraisal policy: development evidence, TPM quotes whose PCR 16 (the debug PCR)
/// is still zero, as on a fresh swtpm, and SEV-SNP reports with one measurement.
pub const APPRAISAL_POLICY: &str = r#"result_validity_seconds = 120

[snp]
allowed_measurements = ["5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a"]

[tpm.pcrs]
16 = ["0000000000000000000000000000000000000000000000000000000000000000"]

[dev]
allow_insecure = true
"#;

/// The test policy: `admin` may do everything; `workload` may sign, verify and read
/// keys and their public keys, for keys tagged team=payments; attest; and encrypt and
/// decrypt with keys tagged team=vault only while presenting a token whose claims carry
/// the trusted measurement.
pub const POLICY: &str = r#"
@id("admin")
permit (principal == Keybroker::Workload::"spiffe://test.keybroker/admin", action, resource);

@id("payments-sign")
permit (
  principal == Keybroker::Workload::"spiffe://test.keybroker/workload",
  action in [
    Keybroker::Action::"Sign", Keybroker::Action::"Verify",
    Keybroker::Action::"GetKey", Keybroker::Action::"GetPublicKey"
  ],
  resource is Keybroker::Key
) when { resource.hasTag("team") && resource.getTag("team") == "payments" };

@id("workload-attests")
permit (
  principal == Keybroker::Workload::"spiffe://test.keybroker/workload",
  action in Keybroker::Action::"Attestation",
  resource == Keybroker::Broker::"broker"
);

@id("vault-needs-measurement")
permit (
  principal == Keybroker::Workload::"spiffe://test.keybroker/workload",
  action in [Keybroker::Action::"Encrypt", Keybroker::Action::"Decrypt"],
  resource is Keybroker::Key
) when {
  resource.hasTag("team") && resource.getTag("team") == "vault" &&
  context.attested && context has claims && context.claims has measurement &&
  context.claims.measurement == "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a"
};
"#;
