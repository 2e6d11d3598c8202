//! The lease calls of `SecretService`: every one through the gate, on the role it names.

use keybroker_api::v1 as pb;
use tonic::{Request, Response, Status};

use super::service::{Reply, check_name, page, release_key};
use super::{Leases, SecretServiceImpl, role_of};
use crate::authz::Resource;
use crate::store::{LeaseRecord, page_token_after};

/// The policy resource of a lease call: the lease's role, or for a malformed id the id
/// itself. The gate decides before anything of the request is checked, so that a caller
/// the policy does not name learns nothing; `Leases` then refuses the malformed id.
fn lease_role(lease_id: &str) -> &str {
    role_of(lease_id).unwrap_or(lease_id)
}

/// A renewal or TTL in seconds; `0`: the role's default.
fn seconds(asked: u32) -> Option<u64> {
    (asked != 0).then_some(u64::from(asked))
}

fn lease_info(l: LeaseRecord) -> pb::LeaseInfo {
    pb::LeaseInfo {
        lease_id: l.id,
        role: l.role,
        owner: l.owner,
        created_at: l.created_at,
        expires_at: l.expires_at,
        max_expires_at: l.max_expires_at,
        revoked_at: l.revoked_at.unwrap_or(0),
    }
}

impl SecretServiceImpl {
    fn leases(&self) -> Result<&Leases, Status> {
        self.leases.as_deref().ok_or_else(|| {
            Status::failed_precondition("this broker keeps no secrets (no [secrets] backend)")
        })
    }

    pub(super) async fn generate(
        &self,
        request: Request<pb::GenerateSecretRequest>,
    ) -> Reply<pb::LeasedSecret> {
        let role = request.get_ref().role.clone();
        let auth = self.gate.authorize(&request, Resource::Secret(&role))?;
        check_name(&role)?;
        let recipient = release_key(&auth, "GenerateSecret")?;
        let ttl = seconds(request.get_ref().ttl_seconds);
        let issued = self
            .leases()?
            .generate(&auth, &role, ttl, &recipient)
            .await?;
        Ok(Response::new(pb::LeasedSecret {
            lease: Some(lease_info(issued.lease)),
            enc: issued.sealed.enc,
            ciphertext: issued.sealed.ciphertext,
            info: issued.info,
            attributes: issued.attributes.into_iter().collect(),
        }))
    }

    pub(super) async fn renew(
        &self,
        request: Request<pb::RenewLeaseRequest>,
    ) -> Reply<pb::LeaseInfo> {
        let id = request.get_ref().lease_id.clone();
        let auth = self
            .gate
            .authorize(&request, Resource::Secret(lease_role(&id)))?;
        let increment = seconds(request.get_ref().increment_seconds);
        let lease = self.leases()?.renew(&auth, &id, increment).await?;
        Ok(Response::new(lease_info(lease)))
    }

    pub(super) async fn revoke(
        &self,
        request: Request<pb::RevokeLeaseRequest>,
    ) -> Reply<pb::RevokeLeaseResponse> {
        let id = request.get_ref().lease_id.clone();
        let auth = self
            .gate
            .authorize(&request, Resource::Secret(lease_role(&id)))?;
        self.leases()?.revoke(&auth, &id).await?;
        Ok(Response::new(pb::RevokeLeaseResponse {}))
    }

    pub(super) async fn revoke_role(
        &self,
        request: Request<pb::RevokeLeasesRequest>,
    ) -> Reply<pb::RevokeLeasesResponse> {
        let role = request.get_ref().role.clone();
        let auth = self.gate.authorize(&request, Resource::Secret(&role))?;
        check_name(&role)?;
        let revoked = self.leases()?.revoke_role(&auth, &role).await?;
        Ok(Response::new(pb::RevokeLeasesResponse { revoked }))
    }

    pub(super) async fn list_lease_page(
        &self,
        request: Request<pb::ListLeasesRequest>,
    ) -> Reply<pb::ListLeasesResponse> {
        let auth = self.gate.authorize(&request, Resource::Broker)?;
        let r = request.into_inner();
        let (limit, after) = page(r.page_size, &r.page_token)?;
        let mut found = self
            .leases()?
            .list(&auth, &r.prefix, &after, limit.saturating_add(1))
            .await?;
        let more = found.len() > limit;
        found.truncate(limit);
        let next_page_token = match (more, found.last()) {
            (true, Some(last)) => page_token_after(&last.id),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListLeasesResponse {
            leases: found.into_iter().map(lease_info).collect(),
            next_page_token,
        }))
    }
}
