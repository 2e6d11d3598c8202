//! `keybroker secrets ...`: the administrators' side of the secret store (docs/secrets.md),
//! over the admin's mTLS connection.
//!
//! Values are read from a file only its owner may read, or from stdin, never from
//! arguments; they are held in wiped buffers and appear in no output, error or `Debug`.
//! There is deliberately no `get`: values are released only to attested workloads,
//! sealed to their KEM key (`keybroker-agent get-secret`).

use std::io::{ErrorKind, Read};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use clap::Subcommand;
use comfy_table::Table;
use keybroker_api::v1 as pb;
use pb::secret_service_client::SecretServiceClient;
use secrecy::{ExposeSecretMut, SecretBox};
use secret_file::SecretFile;
use tonic::transport::Channel;
use zeroize::Zeroizing;

use super::client::ClientConfig;
use super::{CliError, print_json};

// The largest value the broker keeps (docs/secrets.md: values are 1 byte to 64 KiB).
use crate::secrets::MAX_VALUE_LEN as MAX_VALUE_BYTES;

/// What `--value-file` takes for stdin.
const STDIN: &str = "-";

/// Secret commands.
#[derive(Debug, Subcommand)]
pub enum SecretsCommand {
    /// Put a new secret, as version 1 (refused if the name is taken). Prints the version.
    Put {
        /// 1 to 128 letters, digits, '-', '_', '.', '/'.
        name: String,
        /// The value (1 byte to 64 KiB, taken byte for byte: a trailing newline is part of
        /// it): a file only its owner may read, or `-` for stdin.
        #[arg(long, value_name = "FILE|-")]
        value_file: PathBuf,
        /// What the secret is for; `list` shows it.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Add the next version of a secret; releases without a version get it from now on.
    Rotate {
        name: String,
        /// The new value, as for `put`.
        #[arg(long, value_name = "FILE|-")]
        value_file: PathBuf,
    },
    /// List secrets with their descriptions and versions (never values), following every
    /// page.
    List {
        /// Only secrets whose name starts with this.
        #[arg(long, default_value = "")]
        prefix: String,
        /// Secrets per request (the broker allows at most 1000; 0: its default).
        #[arg(long, default_value_t = 0)]
        page_size: u32,
    },
    /// Stop releasing one version (it is kept; `enable` undoes this).
    Disable {
        name: String,
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        version: u32,
    },
    /// Release a disabled version again.
    Enable {
        name: String,
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        version: u32,
    },
    /// Forget a secret and every version, for good.
    Delete { name: String },
}

/// Runs a secret command against the broker. Values are read, and refused, before the
/// broker is contacted.
pub async fn run(cmd: SecretsCommand, client: &ClientConfig, json: bool) -> Result<(), CliError> {
    let version = |name: String, version: u32| pb::SecretVersionRequest { name, version };
    let info = match cmd {
        SecretsCommand::Put {
            name,
            value_file,
            description,
        } => {
            let value = read_value(&value_file)?;
            let request = pb::PutSecretRequest {
                name,
                value: into_request_bytes(value),
                description,
            };
            connect(client).await?.put_secret(request).await?
        }
        SecretsCommand::Rotate { name, value_file } => {
            let value = read_value(&value_file)?;
            let request = pb::RotateSecretRequest {
                name,
                value: into_request_bytes(value),
            };
            connect(client).await?.rotate_secret(request).await?
        }
        SecretsCommand::List { prefix, page_size } => {
            let request = pb::ListSecretsRequest {
                prefix,
                page_size,
                page_token: String::new(),
            };
            let all = list_all(&mut connect(client).await?, request).await?;
            return print_secrets(&all, json);
        }
        SecretsCommand::Disable { name, version: v } => {
            let request = version(name, v);
            connect(client)
                .await?
                .disable_secret_version(request)
                .await?
        }
        SecretsCommand::Enable { name, version: v } => {
            let request = version(name, v);
            connect(client)
                .await?
                .enable_secret_version(request)
                .await?
        }
        SecretsCommand::Delete { name } => {
            let request = pb::DeleteSecretRequest { name: name.clone() };
            connect(client).await?.delete_secret(request).await?;
            if json {
                return print_json(&serde_json::json!({ "name": name, "deleted": true }));
            }
            println!("deleted {name} and every version");
            return Ok(());
        }
    };
    print_version(&info.into_inner(), json)
}

async fn connect(client: &ClientConfig) -> Result<SecretServiceClient<Channel>, CliError> {
    Ok(SecretServiceClient::new(client.connect().await?))
}

/// Reads the value `--value-file` names: 1 byte to [`MAX_VALUE_BYTES`], from a file that
/// passes the secret-file checks (owner-only, regular, read once) or from stdin.
fn read_value(source: &Path) -> Result<SecretBox<Vec<u8>>, CliError> {
    let refused = |reason: String| CliError::Usage(format!("--value-file: {reason}"));
    let mut bytes = if source == Path::new(STDIN) {
        read_stdin().map_err(|e| refused(format!("stdin: {e}")))?
    } else {
        SecretFile::read_capped(source, MAX_VALUE_BYTES)
            .map_err(|e| refused(e.to_string()))?
            .into_bytes()
    };
    if bytes.is_empty() {
        let what = match source == Path::new(STDIN) {
            true => "stdin".to_string(),
            false => source.display().to_string(),
        };
        return Err(refused(format!(
            "{what}: empty; a secret value is 1 byte to {MAX_VALUE_BYTES} bytes"
        )));
    }
    // Moves the buffer, not its contents: no unwiped copy is left behind.
    Ok(SecretBox::new(Box::new(std::mem::take(&mut *bytes))))
}

/// The value, moved into a request (`PutSecretRequest` and `RotateSecretRequest` wipe it
/// when dropped). The gRPC stack's copies while encoding are beyond our reach.
fn into_request_bytes(mut value: SecretBox<Vec<u8>>) -> Vec<u8> {
    std::mem::take(value.expose_secret_mut())
}

/// Reads stdin to its end, at most [`MAX_VALUE_BYTES`], into one buffer of its final size.
/// It reads a duplicate of descriptor 0 rather than `std::io::stdin()`, whose internal
/// buffer would keep an unwiped copy.
fn read_stdin() -> std::io::Result<Zeroizing<Vec<u8>>> {
    let mut stdin = std::fs::File::from(std::io::stdin().as_fd().try_clone_to_owned()?);
    // One byte over the limit, only to notice a larger value; the buffer never grows.
    let mut buffer = Zeroizing::new(vec![0u8; MAX_VALUE_BYTES + 1]);
    let mut filled = 0;
    while let Some(rest) = buffer.get_mut(filled..).filter(|rest| !rest.is_empty()) {
        match stdin.read(rest) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    if filled > MAX_VALUE_BYTES {
        return Err(std::io::Error::other(format!(
            "larger than {MAX_VALUE_BYTES} bytes"
        )));
    }
    buffer.truncate(filled);
    Ok(buffer)
}

/// Every secret `request` selects, following `next_page_token` from page to page.
async fn list_all(
    secrets: &mut SecretServiceClient<Channel>,
    request: pb::ListSecretsRequest,
) -> Result<Vec<pb::SecretSummary>, CliError> {
    let first = request.page_token.clone();
    super::follow_pages("secrets", first, async |page_token| {
        let page = secrets
            .list_secrets(pb::ListSecretsRequest {
                page_token,
                ..request.clone()
            })
            .await?
            .into_inner();
        Ok((page.secrets, page.next_page_token))
    })
    .await
}

fn state(v: &pb::SecretVersionInfo) -> &'static str {
    match v.enabled {
        true => "enabled",
        false => "disabled",
    }
}

fn version_json(v: &pb::SecretVersionInfo) -> serde_json::Value {
    serde_json::json!({
        "version": v.version,
        "state": state(v),
        "created_at": v.created_at,
    })
}

fn print_version(info: &pb::SecretVersionInfo, json: bool) -> Result<(), CliError> {
    if json {
        return print_json(&serde_json::json!({
            "name": info.name,
            "version": info.version,
            "state": state(info),
            "created_at": info.created_at,
        }));
    }
    let mut table = Table::new();
    table.set_header(["NAME", "VERSION", "STATE"]);
    table.add_row([
        info.name.clone(),
        info.version.to_string(),
        state(info).to_string(),
    ]);
    println!("{table}");
    Ok(())
}

fn print_secrets(secrets: &[pb::SecretSummary], json: bool) -> Result<(), CliError> {
    if json {
        let rows: Vec<serde_json::Value> = secrets
            .iter()
            .map(|s| {
                serde_json::json!({
                    "name": s.name,
                    "description": s.description,
                    "created_at": s.created_at,
                    "versions": s.versions.iter().map(version_json).collect::<Vec<_>>(),
                })
            })
            .collect();
        return print_json(&rows);
    }
    let mut table = Table::new();
    table.set_header(["NAME", "DESCRIPTION", "VERSIONS"]);
    for s in secrets {
        let versions: Vec<String> = s
            .versions
            .iter()
            .map(|v| match v.enabled {
                true => v.version.to_string(),
                false => format!("{} (disabled)", v.version),
            })
            .collect();
        table.add_row([s.name.clone(), s.description.clone(), versions.join(", ")]);
    }
    println!("{table}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_or_open_or_missing_value_file_is_refused_naming_the_flag() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty");
        std::fs::write(&empty, b"").unwrap();
        std::fs::set_permissions(&empty, std::fs::Permissions::from_mode(0o600)).unwrap();
        let open = dir.path().join("open");
        std::fs::write(&open, b"s3cret-open").unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'x'; MAX_VALUE_BYTES + 1]).unwrap();
        std::fs::set_permissions(&big, std::fs::Permissions::from_mode(0o600)).unwrap();
        for path in [empty, open, big, dir.path().join("missing")] {
            let Err(err) = read_value(&path) else {
                panic!("{} accepted", path.display());
            };
            let message = err.to_string();
            assert_eq!(err.exit_code(), 2, "{message}");
            assert!(message.starts_with("--value-file: "), "{message}");
            assert!(!message.contains("s3cret"), "{message}");
        }
    }

    #[test]
    fn values_are_never_arguments_and_versions_start_at_one() {
        use clap::Parser;
        let parse = |args: &[&str]| {
            let base = ["keybroker", "secrets", "--client-config", "c.toml"];
            crate::cli::Cli::try_parse_from(base.iter().chain(args)).map(drop)
        };
        assert!(parse(&["put", "app/x", "--value-file", "-"]).is_ok());
        assert!(parse(&["put", "app/x", "--value", "s3cret"]).is_err());
        assert!(parse(&["put", "app/x", "s3cret"]).is_err());
        assert!(parse(&["disable", "app/x", "--version", "0"]).is_err());
        assert!(parse(&["enable", "app/x"]).is_err());
    }

    #[test]
    fn the_largest_value_is_read_whole() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("value");
        std::fs::write(&path, vec![7u8; MAX_VALUE_BYTES]).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let bytes = into_request_bytes(read_value(&path).unwrap());
        assert_eq!(bytes, vec![7u8; MAX_VALUE_BYTES]);
    }
}
