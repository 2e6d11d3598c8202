//! The PostgreSQL engine of dynamic secrets (docs/leases.md): a login role per lease,
//! `VALID UNTIL` the lease's end, with the grants of the configured template; on revoke or
//! expiry, new logins are stopped, the role's sessions ended, and the role dropped.
//!
//! The broker logs in as the configured `user`, with the password kept in its own secret
//! store (`password_secret`), read again whenever a connection is made, so that rotating
//! that secret takes effect without a restart. The new role's password is sent only as a
//! SCRAM-SHA-256 verifier: the server (and its statement log) never sees it.
//!
//! Not yet: TLS to the server. SCRAM keeps both passwords off the wire, but the
//! connection is not authenticated: use it on loopback or a private network.

use std::sync::Arc;

use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore};
use tokio_postgres::{Client, NoTls};
use zeroize::Zeroizing;

use super::Secrets;
use crate::config::PostgresRole;
use crate::error::{BrokerError, Result};

/// Time to connect to the server.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// One configured PostgreSQL role template and its connections.
pub struct Postgres {
    config: PostgresRole,
    secrets: Arc<Secrets>,
    idle: Mutex<Vec<Client>>,
    slots: Arc<Semaphore>,
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Postgres")
            .field("role", &self.config.name)
            .field("host", &self.config.host)
            .field("database", &self.config.database)
            .finish_non_exhaustive()
    }
}

/// `name` as a quoted identifier.
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Unix seconds as the timestamp literal `VALID UNTIL` takes.
fn timestamp(unix: i64) -> Result<String> {
    let at = time::OffsetDateTime::from_unix_timestamp(unix)
        .map_err(|e| BrokerError::Internal(format!("lease end {unix}: {e}")))?;
    at.format(&time::format_description::well_known::Rfc3339)
        .map_err(|e| BrokerError::Internal(format!("lease end {unix}: {e}")))
}

impl Postgres {
    pub fn new(config: PostgresRole, secrets: Arc<Secrets>) -> Postgres {
        let slots = Arc::new(Semaphore::new(config.connections));
        Postgres {
            config,
            secrets,
            idle: Mutex::new(Vec::new()),
            slots,
        }
    }

    /// Logs what failed; the caller is told only which role's database failed, as
    /// server messages can describe the deployment.
    fn unavailable(&self, what: &str, e: impl std::fmt::Display) -> BrokerError {
        tracing::warn!(role = self.config.name, what, error = %e, "PostgreSQL engine");
        BrokerError::Unavailable(format!(
            "dynamic role {:?}: its PostgreSQL server failed ({what}); the broker's log has \
             the detail",
            self.config.name
        ))
    }

    /// The role name and the attributes the workload is told in the clear.
    pub fn attributes(&self, handle: &str) -> Vec<(String, String)> {
        vec![
            ("username".into(), handle.to_string()),
            ("host".into(), self.config.host.clone()),
            ("port".into(), self.config.port.to_string()),
            ("database".into(), self.config.database.clone()),
        ]
    }

    async fn connect(&self) -> Result<Client> {
        let password = self
            .secrets
            .value_for_broker(&self.config.password_secret)
            .await
            .map_err(|e| {
                self.unavailable(
                    &format!("password_secret {:?}", self.config.password_secret),
                    e,
                )
            })?;
        let mut config = tokio_postgres::Config::new();
        config
            .host(&self.config.host)
            .port(self.config.port)
            .dbname(&self.config.database)
            .user(&self.config.user)
            .password(password.as_slice())
            .application_name("keybroker")
            .connect_timeout(CONNECT_TIMEOUT);
        let (client, connection) = config
            .connect(NoTls)
            .await
            .map_err(|e| self.unavailable("connect", e))?;
        let role = self.config.name.clone();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(role, error = %e, "PostgreSQL connection closed");
            }
        });
        Ok(client)
    }

    /// A connection, and the slot it takes. Give it back with [`Postgres::give_back`]
    /// after a success; one that failed is dropped, as its state is unknown.
    async fn lend(&self) -> Result<(Client, OwnedSemaphorePermit)> {
        let slot = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| BrokerError::Internal("PostgreSQL pool closed".into()))?;
        let idle = self.idle.lock().await.pop();
        let client = match idle.filter(|c| !c.is_closed()) {
            Some(client) => client,
            None => self.connect().await?,
        };
        Ok((client, slot))
    }

    async fn give_back(&self, client: Client) {
        if !client.is_closed() {
            self.idle.lock().await.push(client);
        }
    }

    /// `SELECT pg_advisory_xact_lock(k)` with `k` this role's own number: the grants and
    /// revocations of one role's credentials change the same privileges, and PostgreSQL
    /// refuses two transactions that do so at once ("tuple concurrently updated"). The
    /// lock queues them instead, across every connection and every broker replica.
    fn lock_statement(&self) -> String {
        use sha2::Digest as _;
        let digest = sha2::Sha256::digest(format!("keybroker role {}", self.config.name));
        let mut first = [0u8; 8];
        first.copy_from_slice(digest.get(..8).unwrap_or(&[0; 8]));
        format!(
            "SELECT pg_advisory_xact_lock({})",
            i64::from_be_bytes(first)
        )
    }

    /// `templates` with `{{name}}` replaced by `handle`, quoted; each named `what`.
    fn statements(
        &self,
        what: &'static str,
        templates: &[String],
        handle: &str,
    ) -> Vec<(&'static str, String)> {
        let name = quote(handle);
        templates
            .iter()
            .map(|t| (what, t.replace("{{name}}", &name)))
            .collect()
    }

    /// Creates the login role `handle` with `password`, valid until `expires_at`, and its
    /// grants, in one transaction: on error nothing is left.
    pub async fn create(&self, handle: &str, password: &[u8], expires_at: i64) -> Result<()> {
        let verifier = postgres_protocol::password::scram_sha_256(password);
        let create = format!(
            "CREATE ROLE {} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION \
             PASSWORD '{verifier}' VALID UNTIL '{}'",
            quote(handle),
            timestamp(expires_at)?
        );
        let mut steps = vec![("CREATE ROLE", create)];
        steps.extend(self.statements("a grants statement", &self.config.grants, handle));
        let (mut client, _slot) = self.lend().await?;
        self.locked_transaction(&mut client, steps).await?;
        self.give_back(client).await;
        Ok(())
    }

    /// Runs `steps` (what each is, for errors; the SQL) in one transaction that first
    /// takes this role's advisory lock ([`Postgres::lock_statement`]).
    async fn locked_transaction(
        &self,
        client: &mut Client,
        steps: Vec<(&'static str, String)>,
    ) -> Result<()> {
        let tx = client
            .transaction()
            .await
            .map_err(|e| self.unavailable("begin", e))?;
        let lock = ("pg_advisory_xact_lock", self.lock_statement());
        for (what, sql) in std::iter::once(lock).chain(steps) {
            tx.batch_execute(&sql)
                .await
                .map_err(|e| self.unavailable(what, e))?;
        }
        tx.commit().await.map_err(|e| self.unavailable("commit", e))
    }

    /// Moves the role's `VALID UNTIL` to `expires_at`.
    pub async fn extend(&self, handle: &str, expires_at: i64) -> Result<()> {
        let statement = format!(
            "ALTER ROLE {} VALID UNTIL '{}'",
            quote(handle),
            timestamp(expires_at)?
        );
        let (client, _slot) = self.lend().await?;
        client
            .batch_execute(&statement)
            .await
            .map_err(|e| self.unavailable("ALTER ROLE", e))?;
        self.give_back(client).await;
        Ok(())
    }

    /// Stops new logins as `handle`, ends its sessions, runs the revocations and drops it.
    /// A role that is gone already is done.
    pub async fn drop_role(&self, handle: &str) -> Result<()> {
        let (mut client, _slot) = self.lend().await?;
        let exists = client
            .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&handle])
            .await
            .map_err(|e| self.unavailable("pg_roles", e))?
            .is_some();
        if !exists {
            self.give_back(client).await;
            return Ok(());
        }
        client
            .batch_execute(&format!("ALTER ROLE {} NOLOGIN", quote(handle)))
            .await
            .map_err(|e| self.unavailable("ALTER ROLE NOLOGIN", e))?;
        client
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1",
                &[&handle],
            )
            .await
            .map_err(|e| self.unavailable("pg_terminate_backend", e))?;
        let mut steps =
            self.statements("a revocations statement", &self.config.revocations, handle);
        steps.push((
            "DROP ROLE",
            format!("DROP ROLE IF EXISTS {}", quote(handle)),
        ));
        self.locked_transaction(&mut client, steps).await?;
        self.give_back(client).await;
        Ok(())
    }
}

/// A new role's password: `bytes` random bytes from the HSM, base64url, so that it is
/// printable for every client.
pub fn password_text(random: &[u8]) -> Zeroizing<Vec<u8>> {
    use base64::Engine as _;
    Zeroizing::new(
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(random)
            .into_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted_and_their_quotes_doubled() {
        assert_eq!(quote("kb_ab"), "\"kb_ab\"");
        assert_eq!(quote("a\"b"), "\"a\"\"b\"");
    }

    #[test]
    fn lease_ends_are_rfc3339_utc() {
        assert_eq!(timestamp(0).unwrap(), "1970-01-01T00:00:00Z");
        assert_eq!(timestamp(1_800_000_000).unwrap(), "2027-01-15T08:00:00Z");
    }
}
