//! Dynamic secrets (docs/leases.md): made on request for an attested caller, sealed to its
//! KEM key, and leased. The store keeps who holds which lease until when and what to undo
//! at its end, never the secret.
//!
//! A lease is written *before* its engine makes anything, under the handle the engine
//! will use, so that a crash between the two leaves a lease that the sweep undoes. The
//! sweep ([`Leases::sweep`]) undoes revoked and expired leases and forgets them; an engine
//! that fails is tried again on the next sweep. PostgreSQL's own `VALID UNTIL` refuses an
//! expired role's logins even before the sweep drops it.

use std::collections::BTreeMap;
use std::sync::Arc;

use attest::release::{self, KemPublicKey, Sealed};
use zeroize::Zeroizing;

use super::Secrets;
use super::postgres::{self, Postgres};
use crate::authz::Action;
use crate::ca::authority::unix_now;
use crate::config::{LeaseTimes, SecretsConfig};
use crate::error::{BrokerError, Result};
use crate::request::Authorized;
use crate::store::{KeyStore, LeaseRecord};

/// Random bytes in a lease id, after the role name.
const LEASE_ID_RANDOM: usize = 16;
/// Random bytes of a PostgreSQL password, before base64url.
const PASSWORD_RANDOM: usize = 32;
/// Leases undone per sweep round.
const SWEEP_BATCH: usize = 256;

/// What a role's engine makes.
#[derive(Debug)]
enum Engine {
    /// Random bytes from the HSM.
    Random { bytes: usize },
    /// A PostgreSQL login role.
    Postgres(Box<Postgres>),
}

#[derive(Debug)]
struct Role {
    times: LeaseTimes,
    engine: Engine,
}

/// A new lease and its secret, sealed.
#[derive(Debug)]
pub struct Issued {
    pub lease: LeaseRecord,
    pub sealed: Sealed,
    pub info: Vec<u8>,
    /// What the caller is told in the clear (a database user name, host, port).
    pub attributes: Vec<(String, String)>,
}

/// The dynamic roles of one broker, and their leases.
#[derive(Debug)]
pub struct Leases {
    secrets: Arc<Secrets>,
    store: Arc<dyn KeyStore>,
    roles: BTreeMap<String, Role>,
}

fn now() -> i64 {
    i64::try_from(unix_now()).unwrap_or(i64::MAX)
}

/// The role a lease id names: everything before its last `/`.
pub fn role_of(lease_id: &str) -> Result<&str> {
    lease_id
        .rsplit_once('/')
        .filter(|(role, random)| {
            !role.is_empty()
                && random.len() == 2 * LEASE_ID_RANDOM
                && random.bytes().all(|b| b.is_ascii_hexdigit())
        })
        .map(|(role, _)| role)
        .ok_or_else(|| {
            BrokerError::InvalidArgument(
                "lease_id: \"<role>/<32 hex digits>\", as GenerateSecret returned it".into(),
            )
        })
}

impl Leases {
    /// The roles of `config`.
    pub fn new(config: &SecretsConfig, secrets: Arc<Secrets>, store: Arc<dyn KeyStore>) -> Leases {
        let mut roles = BTreeMap::new();
        for r in &config.random {
            let engine = Engine::Random { bytes: r.bytes };
            roles.insert(
                r.name.clone(),
                Role {
                    times: r.times(),
                    engine,
                },
            );
        }
        for r in &config.postgres {
            let engine = Engine::Postgres(Box::new(Postgres::new(r.clone(), secrets.clone())));
            roles.insert(
                r.name.clone(),
                Role {
                    times: r.times(),
                    engine,
                },
            );
        }
        Leases {
            secrets,
            store,
            roles,
        }
    }

    fn role(&self, name: &str) -> Result<&Role> {
        self.roles.get(name).ok_or_else(|| {
            BrokerError::NotFound(format!("no dynamic secret role {name:?} is configured"))
        })
    }

    /// A new lease on `role` for the caller of `auth`, `ttl` seconds long (`None`: the
    /// role's default; never past its maximum), and its secret sealed to `recipient`.
    ///
    /// # Errors
    /// `PERMISSION_DENIED`; `NOT_FOUND` for an unknown role; `UNAVAILABLE` when the HSM or
    /// the database fails (then nothing is left behind once the sweep has run).
    pub async fn generate(
        &self,
        auth: &Authorized,
        role_name: &str,
        ttl: Option<u64>,
        recipient: &KemPublicKey,
    ) -> Result<Issued> {
        auth.require_secret(Action::GenerateSecret, role_name)?;
        let role = self.role(role_name)?;
        let random = hex::encode(self.secrets.random(LEASE_ID_RANDOM).await?);
        let created_at = now();
        let ttl = ttl
            .unwrap_or(role.times.default_ttl)
            .min(role.times.max_ttl);
        let seconds = |s: u64| i64::try_from(s).unwrap_or(i64::MAX);
        let lease = LeaseRecord {
            id: format!("{role_name}/{random}"),
            role: role_name.to_string(),
            owner: auth.caller().as_str().to_string(),
            handle: match role.engine {
                Engine::Random { .. } => String::new(),
                Engine::Postgres(_) => format!("kb_{random}"),
            },
            created_at,
            expires_at: created_at.saturating_add(seconds(ttl)),
            max_expires_at: created_at.saturating_add(seconds(role.times.max_ttl)),
            revoked_at: None,
        };
        let info = release::lease_info(&lease.id, auth.caller().as_str())
            .map_err(|e| BrokerError::InvalidArgument(e.to_string()))?;
        self.store
            .create_lease(&lease, role.times.max_per_caller)
            .await?;
        let made = self.make(role, &lease).await;
        let (value, attributes) = match made {
            Ok(made) => made,
            Err(e) => {
                // The sweep undoes whatever part was made.
                self.store.revoke_lease(&lease.id, now()).await?;
                return Err(e);
            }
        };
        let sealed = release::seal(recipient, &info, &value)
            .map_err(|e| BrokerError::InvalidArgument(format!("the KEM key: {e}")))?;
        tracing::info!(caller = %auth.caller(), lease = lease.id, expires_at = lease.expires_at, "lease issued");
        Ok(Issued {
            lease,
            sealed,
            info,
            attributes,
        })
    }

    async fn make(
        &self,
        role: &Role,
        lease: &LeaseRecord,
    ) -> Result<(Zeroizing<Vec<u8>>, Vec<(String, String)>)> {
        match &role.engine {
            Engine::Random { bytes } => Ok((self.secrets.random(*bytes).await?, Vec::new())),
            Engine::Postgres(pg) => {
                let password =
                    postgres::password_text(&self.secrets.random(PASSWORD_RANDOM).await?);
                pg.create(&lease.handle, &password, lease.expires_at)
                    .await?;
                Ok((password, pg.attributes(&lease.handle)))
            }
        }
    }

    /// The caller's own lease `lease_id`, after the policy allowed `action` on its role.
    async fn own_lease(
        &self,
        auth: &Authorized,
        action: Action,
        lease_id: &str,
    ) -> Result<LeaseRecord> {
        let role = role_of(lease_id)?;
        auth.require_secret(action, role)?;
        let lease = self.store.lease(lease_id).await?;
        if lease.owner != auth.caller().as_str() {
            return Err(BrokerError::PermissionDenied(format!(
                "lease {lease_id:?} was issued to another identity"
            )));
        }
        Ok(lease)
    }

    /// Extends the caller's live lease by `increment` seconds from now (`None`: the role's
    /// default), never past its maximum.
    ///
    /// # Errors
    /// `PERMISSION_DENIED` (the policy, or another identity's lease); `NOT_FOUND`;
    /// `FAILED_PRECONDITION` for a revoked or expired lease; `UNAVAILABLE`.
    pub async fn renew(
        &self,
        auth: &Authorized,
        lease_id: &str,
        increment: Option<u64>,
    ) -> Result<LeaseRecord> {
        let lease = self.own_lease(auth, Action::RenewLease, lease_id).await?;
        let role = self.role(&lease.role)?;
        let increment = increment.unwrap_or(role.times.default_ttl);
        let at = now();
        let expires_at = at
            .saturating_add(i64::try_from(increment).unwrap_or(i64::MAX))
            .min(lease.max_expires_at);
        let lease = self.store.extend_lease(lease_id, expires_at, at).await?;
        if let Engine::Postgres(pg) = &role.engine {
            pg.extend(&lease.handle, lease.expires_at).await?;
        }
        tracing::info!(caller = %auth.caller(), lease = lease_id, expires_at, "lease renewed");
        Ok(lease)
    }

    /// Revokes the caller's lease and undoes it now (the database role is dropped before
    /// this returns).
    ///
    /// # Errors
    /// As [`Leases::renew`]; `UNAVAILABLE` if the engine failed (the lease stays revoked
    /// and the sweep tries again).
    pub async fn revoke(&self, auth: &Authorized, lease_id: &str) -> Result<()> {
        self.own_lease(auth, Action::RevokeLease, lease_id).await?;
        let lease = self.store.revoke_lease(lease_id, now()).await?;
        tracing::info!(caller = %auth.caller(), lease = lease_id, "lease revoked");
        self.undo(&lease).await
    }

    /// Revokes every lease of `role`, whoever holds it (an administrator's call, for an
    /// incident), and undoes them; how many were revoked.
    ///
    /// # Errors
    /// `PERMISSION_DENIED`; the store's.
    pub async fn revoke_role(&self, auth: &Authorized, role: &str) -> Result<u64> {
        auth.require_secret(Action::RevokeLeases, role)?;
        let revoked = self.store.revoke_role_leases(role, now()).await?;
        tracing::warn!(caller = %auth.caller(), role, revoked, "every lease of a role revoked");
        self.sweep().await;
        Ok(revoked)
    }

    /// Leases of roles starting with `prefix`, ids after `after`, at most `limit`.
    ///
    /// # Errors
    /// `PERMISSION_DENIED`; the store's.
    pub async fn list(
        &self,
        auth: &Authorized,
        prefix: &str,
        after: &str,
        limit: usize,
    ) -> Result<Vec<LeaseRecord>> {
        auth.require_broker(Action::ListLeases)?;
        Ok(self.store.list_leases(prefix, after, limit).await?)
    }

    /// Undoes what the lease's engine made, then forgets the lease.
    async fn undo(&self, lease: &LeaseRecord) -> Result<()> {
        match self.roles.get(&lease.role).map(|r| &r.engine) {
            Some(Engine::Postgres(pg)) => pg.drop_role(&lease.handle).await?,
            Some(Engine::Random { .. }) => {}
            None if lease.handle.is_empty() => {}
            None => {
                return Err(BrokerError::FailedPrecondition(format!(
                    "lease {:?}: its role is no longer configured, so its database role \
                     {:?} cannot be dropped (it stops working at its VALID UNTIL)",
                    lease.id, lease.handle
                )));
            }
        }
        self.store.forget_lease(&lease.id).await?;
        Ok(())
    }

    /// Undoes and forgets the revoked and expired leases; how many. Failures are logged
    /// and left for the next sweep.
    pub async fn sweep(&self) -> usize {
        let due = match self.store.due_leases(now(), SWEEP_BATCH).await {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(error = %e, "lease sweep: cannot read the store");
                return 0;
            }
        };
        let mut undone = 0;
        for lease in &due {
            match self.undo(lease).await {
                Ok(()) => undone += 1,
                Err(e) => tracing::warn!(lease = lease.id, error = %e, "lease sweep: cannot undo"),
            }
        }
        if undone > 0 {
            tracing::info!(undone, "lease sweep");
        }
        undone
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_id_names_its_role() {
        let random = "0123456789abcdef0123456789abcdef";
        assert_eq!(role_of(&format!("db/app/{random}")).unwrap(), "db/app");
        for bad in [
            random.to_string(),
            format!("/{random}"),
            "db/app/short".to_string(),
            format!("db/{}", "z".repeat(32)),
            String::new(),
        ] {
            assert!(role_of(&bad).is_err(), "{bad:?}");
        }
    }
}
