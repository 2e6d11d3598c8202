//! `keybroker policy ...` and `keybroker backends ...`: the operator's side of
//! `AdminService`, and an offline policy check for CI pipelines.

use std::path::{Path, PathBuf};

use clap::Subcommand;
use comfy_table::Table;
use keybroker_api::v1 as pb;
use pb::admin_service_client::AdminServiceClient;
use tonic::transport::Channel;

use super::client::ClientConfig;
use super::{CliError, print_json};
use crate::authz::Authorizer;

/// Policy commands.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Validate Cedar policy files against the schema, offline (no broker needed).
    Check {
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Print the policy in force on the broker.
    Get,
    /// Replace the broker's policy (when it is not loaded from files).
    Set {
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Make the broker re-read its policy files.
    Reload,
    /// Ask the broker which policies decide a request.
    Explain {
        /// `spiffe://trust-domain/path`
        #[arg(long)]
        principal: String,
        /// An action, like `Sign` or `ListKeys`.
        #[arg(long)]
        action: String,
        /// The key, for key actions.
        #[arg(long, default_value = "")]
        key: String,
        /// The secret, for secret actions.
        #[arg(long, default_value = "")]
        secret: String,
    },
}

/// Backend commands.
#[derive(Debug, Subcommand)]
pub enum BackendsCommand {
    /// List the broker's backends.
    List,
    /// Register a PKCS#11 token; the PIN is read on the broker's host.
    RegisterHsm {
        name: String,
        /// The module's path on the broker's host; it must be one the broker allows.
        #[arg(long)]
        module: String,
        #[arg(long)]
        token_label: String,
        /// An absolute path, on the broker's host, of a file holding the user PIN.
        #[arg(
            long,
            conflicts_with = "user_pin_env",
            required_unless_present = "user_pin_env"
        )]
        user_pin_file: Option<String>,
        /// An environment variable of the broker process holding the user PIN.
        #[arg(long)]
        user_pin_env: Option<String>,
    },
    /// Register a TPM.
    RegisterTpm {
        name: String,
        /// For example `device:/dev/tpmrm0`.
        #[arg(long)]
        tcti: String,
    },
}

async fn admin(client: Option<&Path>) -> Result<AdminServiceClient<Channel>, CliError> {
    let path = client.ok_or_else(|| {
        CliError::Usage("--client-config FILE or KEYBROKER_CLIENT_CONFIG is required".into())
    })?;
    let config = ClientConfig::load(path)?;
    Ok(AdminServiceClient::new(config.connect().await?))
}

/// Runs a policy command; only `check` works without a broker.
pub async fn run_policy(
    cmd: PolicyCommand,
    client: Option<&Path>,
    json: bool,
) -> Result<(), CliError> {
    let policy = match cmd {
        PolicyCommand::Check { files } => {
            let authorizer =
                Authorizer::from_files(&files).map_err(|e| CliError::Usage(e.to_string()))?;
            let info = authorizer.policy();
            return print_policy(
                &pb::Policy {
                    text: String::new(),
                    digest: info.digest_hex,
                    policies: u32::try_from(info.policies).unwrap_or(u32::MAX),
                },
                json,
                "valid",
            );
        }
        PolicyCommand::Get => {
            let policy = admin(client)
                .await?
                .get_policy(pb::GetPolicyRequest {})
                .await?
                .into_inner();
            if json {
                return print_json(&serde_json::json!({
                    "digest": policy.digest, "policies": policy.policies, "text": policy.text,
                }));
            }
            print!("{}", policy.text);
            return Ok(());
        }
        PolicyCommand::Set { file } => {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", file.display())))?;
            admin(client)
                .await?
                .set_policy(pb::SetPolicyRequest { text })
                .await?
                .into_inner()
        }
        PolicyCommand::Reload => admin(client)
            .await?
            .reload_policy(pb::ReloadPolicyRequest {})
            .await?
            .into_inner(),
        PolicyCommand::Explain {
            principal,
            action,
            key,
            secret,
        } => {
            let decision = admin(client)
                .await?
                .explain_decision(pb::ExplainDecisionRequest {
                    principal,
                    action,
                    key,
                    secret,
                })
                .await?
                .into_inner();
            return print_decision(&decision, json);
        }
    };
    print_policy(&policy, json, "in force")
}

fn print_policy(policy: &pb::Policy, json: bool, status: &str) -> Result<(), CliError> {
    if json {
        return print_json(&serde_json::json!({
            "status": status, "digest": policy.digest, "policies": policy.policies,
        }));
    }
    println!(
        "policy {status}: {} policies, sha256 {}",
        policy.policies, policy.digest
    );
    Ok(())
}

fn print_decision(decision: &pb::Decision, json: bool) -> Result<(), CliError> {
    let verdict = if decision.allowed { "allow" } else { "deny" };
    if json {
        return print_json(&serde_json::json!({
            "decision": verdict, "policies": decision.policies, "errors": decision.errors,
        }));
    }
    println!("{verdict}");
    match (decision.allowed, decision.policies.is_empty()) {
        (false, true) if decision.errors.is_empty() => {
            println!("  no policy permits it (deny by default)");
        }
        (true, _) => println!("  permitted by: {}", decision.policies.join(", ")),
        (false, false) => println!("  denied by: {}", decision.policies.join(", ")),
        (false, true) => {}
    }
    for error in &decision.errors {
        println!("  error: {error}");
    }
    Ok(())
}

/// Runs a backend command.
pub async fn run_backends(
    cmd: BackendsCommand,
    client: &ClientConfig,
    json: bool,
) -> Result<(), CliError> {
    let mut admin = AdminServiceClient::new(client.connect().await?);
    let backends = match cmd {
        BackendsCommand::List => {
            admin
                .list_backends(pb::ListBackendsRequest {})
                .await?
                .into_inner()
                .backends
        }
        BackendsCommand::RegisterHsm {
            name,
            module,
            token_label,
            user_pin_file,
            user_pin_env,
        } => vec![
            admin
                .register_hsm_backend(pb::RegisterHsmBackendRequest {
                    name,
                    module_path: module,
                    token_label,
                    user_pin_file: user_pin_file.unwrap_or_default(),
                    user_pin_env: user_pin_env.unwrap_or_default(),
                })
                .await?
                .into_inner(),
        ],
        BackendsCommand::RegisterTpm { name, tcti } => vec![
            admin
                .register_tpm_backend(pb::RegisterTpmBackendRequest { name, tcti })
                .await?
                .into_inner(),
        ],
    };
    if json {
        let rows: Vec<serde_json::Value> = backends
            .iter()
            .map(|b| {
                serde_json::json!({
                    "name": b.name, "kind": b.kind, "description": b.description,
                    "available": b.available, "keys": b.keys,
                })
            })
            .collect();
        return print_json(&rows);
    }
    let mut table = Table::new();
    table.set_header(["NAME", "KIND", "KEYS", "AVAILABLE", "DESCRIPTION"]);
    for b in &backends {
        table.add_row([
            b.name.clone(),
            b.kind.clone(),
            b.keys.to_string(),
            if b.available { "yes" } else { "no" }.to_string(),
            b.description.clone(),
        ]);
    }
    println!("{table}");
    Ok(())
}
