//! From options to an [`Agent`]: the TLS inputs read from files, the evidence source
//! opened. Options that the chosen evidence source would not use are refused, not ignored.

use std::path::Path;
use std::sync::Arc;

use secrecy::SecretString;
use secret_file::SecretFile;

use super::{CliError, EvidenceKind, Options};
use crate::client::{Agent, AgentConfig};
use crate::evidence::{DevEvidence, EvidenceSource, SnpGuest, TpmQuote};

/// The TCTI used when `--tpm-tcti` is not given.
const DEFAULT_TCTI: &str = "device:/dev/tpmrm0";

/// The agent `options` describe. Opens the TPM for `--evidence tpm`, which blocks.
pub(super) fn agent(options: &Options) -> Result<Agent, CliError> {
    let endpoint = required(options.endpoint.as_ref(), "--endpoint")?;
    let server_ca = required(options.server_ca.as_ref(), "--server-ca")?;
    let cert = required(options.cert.as_ref(), "--cert")?;
    let key = required(options.key.as_ref(), "--key")?;
    let config = AgentConfig {
        endpoint: endpoint.clone(),
        server_ca_pem: read_public(server_ca, "server CA certificate")?,
        bootstrap_cert_pem: read_public(cert, "bootstrap certificate")?,
        bootstrap_key_pem: read_key(key)?,
        evidence: evidence_source(options)?,
        ttl_seconds: options.ttl_seconds,
    };
    Ok(Agent::new(config)?)
}

/// `--tpm-tcti`, or the default.
pub(super) fn tcti(options: &Options) -> &str {
    options.tpm_tcti.as_deref().unwrap_or(DEFAULT_TCTI)
}

fn evidence_source(options: &Options) -> Result<Arc<dyn EvidenceSource>, CliError> {
    let kind = *required(options.evidence.as_ref(), "--evidence")?;
    let only_with = |given: bool, option: &str, evidence: &str| {
        if given {
            Err(CliError::Usage(format!(
                "{option} is only for --evidence {evidence}"
            )))
        } else {
            Ok(())
        }
    };
    only_with(
        kind != EvidenceKind::Dev && options.dev_measurement.is_some(),
        "--dev-measurement",
        "dev",
    )?;
    let tpm_options =
        options.tpm_ak.is_some() || !options.pcrs.is_empty() || options.tpm_tcti.is_some();
    only_with(
        kind != EvidenceKind::Tpm && tpm_options,
        "--tpm-tcti, --tpm-ak and --pcrs are",
        "tpm",
    )?;
    only_with(
        kind != EvidenceKind::Snp && options.snp_vmpl.is_some(),
        "--snp-vmpl",
        "snp",
    )?;
    Ok(match kind {
        EvidenceKind::Dev => {
            let measurement = required(options.dev_measurement.as_ref(), "--dev-measurement")?;
            Arc::new(DevEvidence::new(measurement)?)
        }
        EvidenceKind::Tpm => {
            let ak = required(options.tpm_ak.as_ref(), "--tpm-ak")?;
            if options.pcrs.is_empty() {
                return Err(CliError::Usage("--evidence tpm needs --pcrs".to_string()));
            }
            Arc::new(TpmQuote::open(tcti(options), ak, &options.pcrs)?)
        }
        EvidenceKind::Snp => Arc::new(SnpGuest::new(options.snp_vmpl.unwrap_or(0))?),
    })
}

fn required<'a, T>(value: Option<&'a T>, option: &str) -> Result<&'a T, CliError> {
    value.ok_or_else(|| CliError::Usage(format!("{option} is required")))
}

/// A file of public material (certificates).
fn read_public(path: &Path, what: &'static str) -> Result<Vec<u8>, CliError> {
    std::fs::read(path).map_err(|e| CliError::Input {
        what,
        reason: format!("{}: {e}", path.display()),
    })
}

/// The bootstrap key, through the one secret-file reader (mode 0600, size cap, wiped).
fn read_key(path: &Path) -> Result<SecretString, CliError> {
    let what = "bootstrap key";
    let refused = |e: secret_file::SecretFileError| CliError::Input {
        what,
        reason: e.to_string(),
    };
    let file = SecretFile::read(path).map_err(refused)?;
    let text = file.text().map_err(refused)?;
    Ok(SecretString::from(text.to_owned()))
}
