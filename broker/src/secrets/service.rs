//! `SecretService` over gRPC: every call through the gate, on the secret it names.

use std::sync::Arc;

use keybroker_api::v1 as pb;
use pb::secret_service_server::SecretService;
use tonic::{Request, Response, Status};

use super::{Leases, Secrets};
use crate::authz::Resource;
use crate::request::Gate;
use crate::store::{
    SecretSummary, SecretVersionRecord, SecretVersionSummary, decode_token, page_token_after,
};

/// Longest secret name.
const MAX_NAME_LEN: usize = 128;
/// Largest value.
pub const MAX_VALUE_LEN: usize = 64 * 1024;
/// Longest description.
const MAX_DESCRIPTION_LEN: usize = 1024;
/// Default and largest `ListSecrets` page.
const PAGE_SIZE: (u32, u32) = (100, 1000);

pub(super) type Reply<T> = Result<Response<T>, Status>;

/// Serves `SecretService`.
#[derive(Debug, Clone)]
pub struct SecretServiceImpl {
    secrets: Option<Arc<Secrets>>,
    pub(super) leases: Option<Arc<Leases>>,
    pub(super) gate: Gate,
}

pub(super) fn invalid(message: impl Into<String>) -> Status {
    Status::invalid_argument(message.into())
}

/// A name of 1 to 128 letters, digits, `-`, `_`, `.` and `/`.
pub(super) fn check_name(name: &str) -> Result<(), Status> {
    let fine = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b));
    match fine {
        true => Ok(()),
        false => Err(invalid(format!(
            "name: 1 to {MAX_NAME_LEN} characters: letters, digits, '-', '_', '.', '/'"
        ))),
    }
}

fn check_value(value: &[u8]) -> Result<(), Status> {
    if value.is_empty() || value.len() > MAX_VALUE_LEN {
        return Err(invalid(format!("value: 1 to {MAX_VALUE_LEN} bytes")));
    }
    Ok(())
}

fn version_info(name: &str, v: SecretVersionSummary) -> pb::SecretVersionInfo {
    pb::SecretVersionInfo {
        name: name.to_string(),
        version: v.version,
        enabled: v.enabled,
        created_at: v.created_at,
    }
}

fn record_info(r: &SecretVersionRecord) -> pb::SecretVersionInfo {
    version_info(&r.name, r.summary())
}

fn summary(s: SecretSummary) -> pb::SecretSummary {
    let versions = s
        .versions
        .into_iter()
        .map(|v| version_info(&s.name, v))
        .collect();
    pb::SecretSummary {
        name: s.name,
        description: s.description,
        created_at: s.created_at,
        versions,
    }
}

impl SecretServiceImpl {
    /// `secrets` is `None` without `[secrets]`: every call is refused.
    pub fn new(secrets: Option<Arc<Secrets>>, leases: Option<Arc<Leases>>, gate: Gate) -> Self {
        SecretServiceImpl {
            secrets,
            leases,
            gate,
        }
    }

    fn secrets(&self) -> Result<&Arc<Secrets>, Status> {
        self.secrets.as_ref().ok_or_else(|| {
            Status::failed_precondition("this broker keeps no secrets (no [secrets] backend)")
        })
    }
}

/// A listing page's size (`0`: the default; at most the largest) and the name it starts
/// after.
pub(super) fn page(size: u32, token: &str) -> Result<(usize, String), Status> {
    let size = match size {
        0 => PAGE_SIZE.0,
        asked => asked.min(PAGE_SIZE.1),
    };
    let after = match token.is_empty() {
        true => String::new(),
        false => decode_token(token).map_err(|e| invalid(e.to_string()))?,
    };
    Ok((usize::try_from(size).unwrap_or(usize::MAX), after))
}

/// The KEM key of the caller's attestation token, which a release is sealed to.
pub(super) fn release_key(
    auth: &crate::request::Authorized,
    call: &str,
) -> Result<attest::release::KemPublicKey, Status> {
    auth.release_key().copied().ok_or_else(|| {
        Status::failed_precondition(format!(
            "{call} needs an attestation token (x-keybroker-attestation) with a KEM key, \
             bound to this connection's key: attest with kem_public_key"
        ))
    })
}

#[tonic::async_trait]
impl SecretService for SecretServiceImpl {
    async fn put_secret(
        &self,
        request: Request<pb::PutSecretRequest>,
    ) -> Reply<pb::SecretVersionInfo> {
        let name = request.get_ref().name.clone();
        let auth = self.gate.authorize(&request, Resource::Secret(&name))?;
        let r = request.get_ref();
        check_name(&name)?;
        check_value(&r.value)?;
        if r.description.len() > MAX_DESCRIPTION_LEN {
            return Err(invalid(format!(
                "description: at most {MAX_DESCRIPTION_LEN} bytes"
            )));
        }
        let record = self
            .secrets()?
            .put(&auth, &name, &r.description, &r.value)
            .await?;
        tracing::info!(caller = %auth.caller(), secret = name, "secret put");
        Ok(Response::new(record_info(&record)))
    }

    async fn rotate_secret(
        &self,
        request: Request<pb::RotateSecretRequest>,
    ) -> Reply<pb::SecretVersionInfo> {
        let name = request.get_ref().name.clone();
        let auth = self.gate.authorize(&request, Resource::Secret(&name))?;
        check_name(&name)?;
        check_value(&request.get_ref().value)?;
        let record = self
            .secrets()?
            .rotate(&auth, &name, &request.get_ref().value)
            .await?;
        tracing::info!(caller = %auth.caller(), secret = name, version = record.version, "secret rotated");
        Ok(Response::new(record_info(&record)))
    }

    async fn list_secrets(
        &self,
        request: Request<pb::ListSecretsRequest>,
    ) -> Reply<pb::ListSecretsResponse> {
        let auth = self.gate.authorize(&request, Resource::Broker)?;
        let r = request.into_inner();
        let (limit, after) = page(r.page_size, &r.page_token)?;
        // One more than the page, to know whether another page follows.
        let mut found = self
            .secrets()?
            .list(&auth, &r.prefix, &after, limit + 1)
            .await?;
        let more = found.len() > limit;
        found.truncate(limit);
        let next_page_token = match (more, found.last()) {
            (true, Some(last)) => page_token_after(&last.name),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListSecretsResponse {
            secrets: found.into_iter().map(summary).collect(),
            next_page_token,
        }))
    }

    async fn delete_secret(
        &self,
        request: Request<pb::DeleteSecretRequest>,
    ) -> Reply<pb::DeleteSecretResponse> {
        let name = request.get_ref().name.clone();
        let auth = self.gate.authorize(&request, Resource::Secret(&name))?;
        check_name(&name)?;
        self.secrets()?.delete(&auth, &name).await?;
        tracing::info!(caller = %auth.caller(), secret = name, "secret deleted");
        Ok(Response::new(pb::DeleteSecretResponse {}))
    }

    async fn disable_secret_version(
        &self,
        request: Request<pb::SecretVersionRequest>,
    ) -> Reply<pb::SecretVersionInfo> {
        self.set_enabled(request, false).await
    }

    async fn enable_secret_version(
        &self,
        request: Request<pb::SecretVersionRequest>,
    ) -> Reply<pb::SecretVersionInfo> {
        self.set_enabled(request, true).await
    }

    async fn get_secret(&self, request: Request<pb::GetSecretRequest>) -> Reply<pb::SealedSecret> {
        let name = request.get_ref().name.clone();
        let auth = self.gate.authorize(&request, Resource::Secret(&name))?;
        check_name(&name)?;
        let recipient = release_key(&auth, "GetSecret")?;
        let version = match request.get_ref().version {
            0 => None,
            v => Some(v),
        };
        let (version, sealed, info) = self
            .secrets()?
            .release(&auth, &name, version, &recipient)
            .await?;
        Ok(Response::new(pb::SealedSecret {
            name,
            version,
            enc: sealed.enc,
            ciphertext: sealed.ciphertext,
            info,
        }))
    }

    async fn generate_secret(
        &self,
        request: Request<pb::GenerateSecretRequest>,
    ) -> Reply<pb::LeasedSecret> {
        self.generate(request).await
    }

    async fn renew_lease(&self, request: Request<pb::RenewLeaseRequest>) -> Reply<pb::LeaseInfo> {
        self.renew(request).await
    }

    async fn revoke_lease(
        &self,
        request: Request<pb::RevokeLeaseRequest>,
    ) -> Reply<pb::RevokeLeaseResponse> {
        self.revoke(request).await
    }

    async fn revoke_leases(
        &self,
        request: Request<pb::RevokeLeasesRequest>,
    ) -> Reply<pb::RevokeLeasesResponse> {
        self.revoke_role(request).await
    }

    async fn list_leases(
        &self,
        request: Request<pb::ListLeasesRequest>,
    ) -> Reply<pb::ListLeasesResponse> {
        self.list_lease_page(request).await
    }
}

impl SecretServiceImpl {
    async fn set_enabled(
        &self,
        request: Request<pb::SecretVersionRequest>,
        enabled: bool,
    ) -> Reply<pb::SecretVersionInfo> {
        let name = request.get_ref().name.clone();
        let auth = self.gate.authorize(&request, Resource::Secret(&name))?;
        check_name(&name)?;
        let version = request.get_ref().version;
        let record = self
            .secrets()?
            .set_enabled(&auth, &name, version, enabled)
            .await?;
        tracing::info!(caller = %auth.caller(), secret = name, version, enabled, "secret version changed");
        Ok(Response::new(record_info(&record)))
    }
}
