//! The lease commands: `generate-secret`, `renew-lease`, `revoke-lease`.

use std::io::Write;
use std::path::Path;

use keybroker_api::v1 as pb;

use super::CliError;
use super::commands::{is_stdout, print, write_secret_file};
use crate::client::Agent;

/// A lease as JSON, with the attributes the broker sent in the clear.
fn lease_json(
    lease: &pb::LeaseInfo,
    attributes: Option<&std::collections::BTreeMap<String, String>>,
) -> Result<String, CliError> {
    let mut json = serde_json::json!({
        "lease_id": lease.lease_id,
        "role": lease.role,
        "owner": lease.owner,
        "created_at": lease.created_at,
        "expires_at": lease.expires_at,
        "max_expires_at": lease.max_expires_at,
    });
    if let (Some(attributes), Some(object)) = (attributes, json.as_object_mut()) {
        object.insert("attributes".into(), serde_json::json!(attributes));
    }
    serde_json::to_string_pretty(&json).map_err(|e| CliError::Output(e.into()))
}

/// `generate-secret`: the value in `out` (0600) and the lease on stdout, or the value on
/// stdout and the lease on stderr.
pub(super) async fn generate(
    agent: &Agent,
    role: &str,
    ttl: u32,
    out: Option<&Path>,
) -> Result<(), CliError> {
    let creds = agent.attest().await?;
    let leased = agent.generate_secret(&creds, role, ttl).await?;
    let json = lease_json(&leased.lease, Some(&leased.attributes))?;
    match out {
        Some(out) if !is_stdout(out) => {
            write_secret_file(out, &leased.value)?;
            eprintln!(
                "keybroker-agent: wrote the secret of {} to {}",
                leased.lease.lease_id,
                out.display()
            );
            print(&json)
        }
        _ => {
            eprintln!("{json}");
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(&leased.value)?;
            Ok(stdout.flush()?)
        }
    }
}

/// `renew-lease`: the lease after renewal on stdout.
pub(super) async fn renew(agent: &Agent, lease_id: &str, increment: u32) -> Result<(), CliError> {
    let creds = agent.attest().await?;
    let lease = agent.renew_lease(&creds, lease_id, increment).await?;
    print(&lease_json(&lease, None)?)
}

/// `revoke-lease`.
pub(super) async fn revoke(agent: &Agent, lease_id: &str) -> Result<(), CliError> {
    let creds = agent.attest().await?;
    agent.revoke_lease(&creds, lease_id).await?;
    eprintln!("keybroker-agent: revoked {lease_id}");
    Ok(())
}
