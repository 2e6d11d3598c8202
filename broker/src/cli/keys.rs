//! `keybroker keys ...`: key management over the admin's mTLS connection; the commands
//! that use a key are in [`super::crypto`].

use std::collections::HashMap;
use std::path::PathBuf;

use clap::{Subcommand, ValueEnum};
use comfy_table::Table;
use keybroker_api::v1 as pb;
use pb::key_service_client::KeyServiceClient;

use super::client::ClientConfig;
use super::{CliError, print_json};

/// Key algorithms, as the CLI spells them: the names policies and tables use.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum AlgorithmArg {
    EcP256,
    EcP384,
    #[value(name = "rsa-2048", alias = "rsa2048")]
    Rsa2048,
    #[value(name = "rsa-3072", alias = "rsa3072")]
    Rsa3072,
    #[value(name = "rsa-4096", alias = "rsa4096")]
    Rsa4096,
    #[value(name = "aes-256", alias = "aes256")]
    Aes256,
}

/// Key purposes.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum PurposeArg {
    Sign,
    Encrypt,
    /// A key-encryption key for `keybroker seal` (AES-256).
    Wrap,
}

/// Key commands.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key inside a backend.
    Create {
        name: String,
        #[arg(long, value_enum)]
        algorithm: AlgorithmArg,
        #[arg(long, value_enum)]
        purpose: PurposeArg,
        /// The backend (default: the broker's default).
        #[arg(long, default_value = "")]
        backend: String,
        /// A tag, NAME=VALUE (repeatable); policies see them.
        #[arg(long = "tag", value_parser = parse_tag)]
        tags: Vec<(String, String)>,
        /// The class `releasable` (AES-256 encrypt keys in an HSM): attested workloads the
        /// policy allows may receive it with ReleaseKey. Chosen now, never changed
        /// (docs/releasable-keys.md).
        #[arg(long)]
        releasable: bool,
    },
    /// List keys, following every page.
    List {
        /// Only keys whose name starts with this.
        #[arg(long, default_value = "")]
        prefix: String,
        /// Only keys with this tag, NAME=VALUE (repeatable: all must match).
        #[arg(long = "tag", value_parser = parse_tag)]
        tags: Vec<(String, String)>,
        /// Keys per request (the broker allows at most 1000; 0: its default).
        #[arg(long, default_value_t = 0)]
        page_size: u32,
    },
    /// Show one key and its versions.
    Get { name: String },
    /// Add a version and make it primary.
    Rotate { name: String },
    /// Refuse every use until enabled again.
    Disable { name: String },
    /// Undo disable.
    Enable { name: String },
    /// Refuse every use, for good.
    Revoke { name: String },
    /// Destroy after a waiting period.
    Destroy {
        name: String,
        /// Days to wait (default: the broker's configured period).
        #[arg(long, default_value_t = 0)]
        pending_days: u32,
    },
    /// Cancel a scheduled destruction.
    CancelDestroy { name: String },
    /// Write the public key (PEM) to stdout or a file.
    PublicKey {
        name: String,
        #[arg(long, default_value_t = 0)]
        version: u32,
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Sign, verify, encrypt, decrypt, data-key: using a key.
    #[command(flatten)]
    Use(super::crypto::CryptoCommand),
}

fn parse_tag(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| "expected NAME=VALUE".to_string())
}

fn algorithm(a: AlgorithmArg) -> pb::KeyAlgorithm {
    match a {
        AlgorithmArg::EcP256 => pb::KeyAlgorithm::EcP256,
        AlgorithmArg::EcP384 => pb::KeyAlgorithm::EcP384,
        AlgorithmArg::Rsa2048 => pb::KeyAlgorithm::Rsa2048,
        AlgorithmArg::Rsa3072 => pb::KeyAlgorithm::Rsa3072,
        AlgorithmArg::Rsa4096 => pb::KeyAlgorithm::Rsa4096,
        AlgorithmArg::Aes256 => pb::KeyAlgorithm::Aes256,
    }
}

/// Runs a key command against the broker.
pub async fn run(cmd: KeysCommand, client: &ClientConfig, json: bool) -> Result<(), CliError> {
    let mut keys = KeyServiceClient::new(client.connect().await?);
    let key_ref = |name: String| pb::KeyRef { name };
    let key = match cmd {
        KeysCommand::Use(cmd) => return super::crypto::run(cmd, &mut keys, json).await,
        KeysCommand::Create {
            name,
            algorithm: a,
            purpose,
            backend,
            tags,
            releasable,
        } => keys
            .create_key(pb::CreateKeyRequest {
                name,
                algorithm: algorithm(a) as i32,
                purpose: match purpose {
                    PurposeArg::Sign => pb::KeyPurpose::SignVerify,
                    PurposeArg::Encrypt => pb::KeyPurpose::EncryptDecrypt,
                    PurposeArg::Wrap => pb::KeyPurpose::WrapUnwrap,
                } as i32,
                backend,
                tags: tags.into_iter().collect::<HashMap<_, _>>(),
                releasable,
            })
            .await?
            .into_inner(),
        KeysCommand::List {
            prefix,
            tags,
            page_size,
        } => {
            let request = pb::ListKeysRequest {
                prefix,
                page_size,
                page_token: String::new(),
                tags: tags.into_iter().collect(),
            };
            return print_keys(&list_all(&mut keys, request).await?, json);
        }
        KeysCommand::Get { name } => keys.get_key(key_ref(name)).await?.into_inner(),
        KeysCommand::Rotate { name } => keys.rotate_key(key_ref(name)).await?.into_inner(),
        KeysCommand::Disable { name } => keys.disable_key(key_ref(name)).await?.into_inner(),
        KeysCommand::Enable { name } => keys.enable_key(key_ref(name)).await?.into_inner(),
        KeysCommand::Revoke { name } => keys.revoke_key(key_ref(name)).await?.into_inner(),
        KeysCommand::Destroy { name, pending_days } => keys
            .schedule_key_destruction(pb::ScheduleKeyDestructionRequest { name, pending_days })
            .await?
            .into_inner(),
        KeysCommand::CancelDestroy { name } => keys
            .cancel_key_destruction(key_ref(name))
            .await?
            .into_inner(),
        KeysCommand::PublicKey { name, version, out } => {
            let public = keys
                .get_public_key(pb::GetPublicKeyRequest { name, version })
                .await?
                .into_inner();
            return match out {
                Some(path) => std::fs::write(&path, public.pem)
                    .map_err(|e| CliError::Output(format!("{}: {e}", path.display()))),
                None => {
                    print!("{}", public.pem);
                    Ok(())
                }
            };
        }
    };
    print_keys(&[key], json)
}

/// Every key `request` selects, following `next_page_token` from page to page.
async fn list_all(
    keys: &mut KeyServiceClient<tonic::transport::Channel>,
    request: pb::ListKeysRequest,
) -> Result<Vec<pb::Key>, CliError> {
    let first = request.page_token.clone();
    super::follow_pages("keys", first, async |page_token| {
        let page = keys
            .list_keys(pb::ListKeysRequest {
                page_token,
                ..request.clone()
            })
            .await?
            .into_inner();
        Ok((page.keys, page.next_page_token))
    })
    .await
}

fn state(k: &pb::Key) -> String {
    pb::KeyState::try_from(k.state)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("KEY_STATE_")
                .to_lowercase()
        })
        .unwrap_or_else(|_| k.state.to_string())
}

/// The policy's name for the algorithm (`ec-p256`, `aes-256`), as `--algorithm` takes it.
fn algorithm_name(k: &pb::Key) -> String {
    pb::KeyAlgorithm::try_from(k.algorithm)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("KEY_ALGORITHM_")
                .to_lowercase()
                .replace('_', "-")
        })
        .unwrap_or_else(|_| k.algorithm.to_string())
}

fn print_keys(keys: &[pb::Key], json: bool) -> Result<(), CliError> {
    if json {
        let rows: Vec<serde_json::Value> = keys
            .iter()
            .map(|k| {
                serde_json::json!({
                    "name": k.name,
                    "algorithm": algorithm_name(k),
                    "backend": k.backend,
                    "state": state(k),
                    "primary_version": k.primary_version,
                    "versions": k.versions.iter().map(|v| v.version).collect::<Vec<_>>(),
                    "destroy_after": (k.destroy_after != 0).then_some(k.destroy_after),
                    "tags": k.tags,
                })
            })
            .collect();
        return print_json(&rows);
    }
    let mut table = Table::new();
    table.set_header([
        "NAME",
        "ALGORITHM",
        "BACKEND",
        "STATE",
        "PRIMARY",
        "VERSIONS",
    ]);
    for k in keys {
        table.add_row([
            k.name.clone(),
            algorithm_name(k),
            k.backend.clone(),
            state(k),
            k.primary_version.to_string(),
            k.versions.len().to_string(),
        ]);
    }
    println!("{table}");
    Ok(())
}
