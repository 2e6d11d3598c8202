//! The one-shot commands: `attest`, `get-cert`, `get-token`, `get-secret`, `release-key`,
//! `tpm-create-ak`.

use std::io::Write;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use der::pem::LineEnding;
use secrecy::ExposeSecret;

use super::CliError;
use crate::client::{Agent, Credentials};
use crate::files::{self, SECRET_MODE};

/// `attest`: the identity, expiries and claims as JSON on stdout, or the credentials in
/// `out`.
pub(super) async fn attest(agent: &Agent, out: Option<&Path>) -> Result<(), CliError> {
    let creds = agent.attest().await?;
    match out {
        Some(dir) => write_credentials(dir, &creds),
        None => {
            let summary = serde_json::to_string_pretty(&summary(&creds))
                .map_err(|e| CliError::Output(e.into()))?;
            print(&summary)
        }
    }
}

/// `get-cert`: the credentials in `out`, or with `-` the chain and key on stdout.
pub(super) async fn get_cert(agent: &Agent, out: &Path) -> Result<(), CliError> {
    let creds = agent.attest().await?;
    if !is_stdout(out) {
        return write_credentials(out, &creds);
    }
    let chain = creds.chain_pem().map_err(pem_error)?;
    let key = creds.key.private_key_pem();
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(chain.as_bytes())?;
    stdout.write_all(key.expose_secret().as_bytes())?;
    Ok(stdout.flush()?)
}

/// `get-token`: a JWT for `audience`, in the file `out` (mode 0600) or on stdout.
pub(super) async fn get_token(agent: &Agent, audience: &str, out: &Path) -> Result<(), CliError> {
    let creds = agent.attest().await?;
    let (token, _) = agent.get_token(&creds, audience).await?;
    if is_stdout(out) {
        return print(token.expose_secret());
    }
    write_secret_file(out, token.expose_secret().as_bytes())?;
    eprintln!("keybroker-agent: wrote {}", out.display());
    Ok(())
}

/// `get-secret`: version `version` (0: the newest enabled) of the secret `name`, as it is,
/// in the file `out` (mode 0600) or, without one or with `-`, on stdout. Only the name,
/// the version and the file go to stderr.
pub(super) async fn get_secret(
    agent: &Agent,
    name: &str,
    version: u32,
    out: Option<&Path>,
) -> Result<(), CliError> {
    let creds = agent.attest().await?;
    let secret = agent.get_secret(&creds, name, version).await?;
    let what = format!("{} version {}", secret.name, secret.version);
    deliver(out, &secret.value, &what)
}

/// `release-key`: version `version` (0: the primary) of the releasable key `name`, its 32
/// raw bytes in the file `out` (mode 0600) or, without one or with `-`, on stdout. Only the
/// name, the version and the file go to stderr.
pub(super) async fn release_key(
    agent: &Agent,
    name: &str,
    version: u32,
    out: Option<&Path>,
) -> Result<(), CliError> {
    let creds = agent.attest().await?;
    let released = agent.release_key(&creds, name, version).await?;
    let what = format!("key {} version {}", released.name, released.version);
    deliver(out, released.key.as_slice(), &what)
}

/// `value` in the file `out` (mode 0600), saying so on stderr with `what` (never the value),
/// or, without one or with `-`, as it is on stdout.
fn deliver(out: Option<&Path>, value: &[u8], what: &str) -> Result<(), CliError> {
    match out {
        Some(out) if !is_stdout(out) => {
            write_secret_file(out, value)?;
            eprintln!("keybroker-agent: wrote {what} to {}", out.display());
            Ok(())
        }
        _ => {
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(value)?;
            Ok(stdout.flush()?)
        }
    }
}

/// Replaces the file `out` with `bytes` at mode 0600, atomically ([`files::write_atomic`]).
pub(super) fn write_secret_file(out: &Path, bytes: &[u8]) -> Result<(), CliError> {
    let name = out
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| CliError::Usage(format!("--out {}: not a file name", out.display())))?;
    let dir = match out.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    Ok(files::write_atomic(dir, name, bytes, SECRET_MODE)?)
}

/// `tpm-create-ak`: the AK blob in `out`, its public key (PEM) on stdout.
pub(super) fn tpm_create_ak(tcti: &str, out: &Path) -> Result<(), CliError> {
    let spki = crate::evidence::create_attestation_key(tcti, out)?;
    let pem = der::pem::encode_string("PUBLIC KEY", LineEnding::LF, &spki).map_err(pem_error)?;
    print(pem.trim_end())
}

/// Writes `creds` into `dir`, and says so on stderr (tests wait for the line).
pub(super) fn write_credentials(dir: &Path, creds: &Credentials) -> Result<(), CliError> {
    files::write_credentials(dir, creds, &[])?;
    eprintln!("keybroker-agent: wrote {}", dir.display());
    Ok(())
}

/// What `attest` prints: never the key or the token.
fn summary(creds: &Credentials) -> serde_json::Value {
    let claims = serde_json::from_str(&creds.claims_json)
        .unwrap_or_else(|_| serde_json::Value::String(creds.claims_json.clone()));
    serde_json::json!({
        "spiffe_id": creds.spiffe_id,
        "cert_expires_at": unix_seconds(creds.cert_expires_at),
        "token_expires_at": unix_seconds(creds.token_expires_at),
        "claims": claims,
    })
}

fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

pub(super) fn is_stdout(out: &Path) -> bool {
    out.as_os_str() == "-"
}

/// `text` and a newline on stdout; an error (a closed pipe, say) rather than a panic.
pub(super) fn print(text: &str) -> Result<(), CliError> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{text}")?;
    Ok(stdout.flush()?)
}

fn pem_error(e: der::pem::Error) -> CliError {
    CliError::Output(std::io::Error::other(format!("PEM encoding: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_shows_identity_expiry_and_claims_but_no_secret() {
        let creds = Credentials {
            key: crate::key::EphemeralKey::generate().unwrap(),
            kem: attest::release::KemKeyPair::generate(),
            chain_der: Vec::new(),
            bundle_der: Vec::new(),
            cert_expires_at: UNIX_EPOCH + std::time::Duration::from_secs(2000),
            token: secrecy::SecretString::from("secret.token.value".to_string()),
            token_expires_at: UNIX_EPOCH + std::time::Duration::from_secs(1000),
            spiffe_id: "spiffe://td/w".to_string(),
            claims_json: r#"{"tee":"insecure-dev"}"#.to_string(),
        };
        let summary = summary(&creds);
        assert_eq!(summary["spiffe_id"], "spiffe://td/w");
        assert_eq!(summary["cert_expires_at"], 2000);
        assert_eq!(summary["token_expires_at"], 1000);
        assert_eq!(summary["claims"]["tee"], "insecure-dev");
        let text = summary.to_string();
        assert!(!text.contains("secret.token"), "{text}");
        assert!(!text.contains("PRIVATE"), "{text}");
    }

    #[test]
    fn a_secret_file_is_written_at_0600_whatever_it_replaces() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("db-password");
        std::fs::write(&out, b"old").unwrap();
        std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_secret_file(&out, b"new value").unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), b"new value");
        let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn a_secret_file_needs_a_file_name() {
        let dir = tempfile::tempdir().unwrap();
        let result = write_secret_file(&dir.path().join(".."), b"value");
        assert!(matches!(result, Err(CliError::Usage(_))), "{result:?}");
    }
}
