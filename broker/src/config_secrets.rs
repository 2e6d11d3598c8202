//! `[secrets]`: the secret store, and its dynamic roles (docs/secrets.md, docs/leases.md).

use std::collections::BTreeSet;

use serde::Deserialize;

/// `[secrets]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretsConfig {
    /// The `[[hsm]]` that holds the key-encryption key; none: the broker keeps no secrets.
    #[serde(default)]
    pub backend: Option<String>,
    /// How often expired and revoked leases are cleaned up (their database roles dropped).
    #[serde(default = "defaults::sweep_seconds")]
    pub lease_sweep_seconds: u64,
    /// `[[secrets.random]]`: roles that make random secrets from the HSM's generator.
    #[serde(default)]
    pub random: Vec<RandomRole>,
    /// `[[secrets.postgres]]`: roles that make PostgreSQL login roles.
    #[serde(default)]
    pub postgres: Vec<PostgresRole>,
}

impl Default for SecretsConfig {
    fn default() -> Self {
        SecretsConfig {
            backend: None,
            lease_sweep_seconds: defaults::sweep_seconds(),
            random: Vec::new(),
            postgres: Vec::new(),
        }
    }
}

/// The lifetime of a role's leases, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTimes {
    /// A new lease's lifetime when the request names none.
    pub default_ttl: u64,
    /// The longest a lease may live, renewals included, from its creation.
    pub max_ttl: u64,
    /// Live leases one caller may hold on the role.
    pub max_per_caller: u64,
}

impl RandomRole {
    pub fn times(&self) -> LeaseTimes {
        LeaseTimes {
            default_ttl: self.default_ttl_seconds,
            max_ttl: self.max_ttl_seconds,
            max_per_caller: self.max_leases_per_caller,
        }
    }
}

impl PostgresRole {
    pub fn times(&self) -> LeaseTimes {
        LeaseTimes {
            default_ttl: self.default_ttl_seconds,
            max_ttl: self.max_ttl_seconds,
            max_per_caller: self.max_leases_per_caller,
        }
    }
}

/// `[[secrets.random]]`: random bytes from the HSM, leased.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RandomRole {
    /// The role's name, the Cedar resource `Keybroker::Secret::"<name>"` of
    /// `GenerateSecret`, and the first part of its lease ids.
    pub name: String,
    /// How many random bytes (16 to 1024).
    #[serde(default = "defaults::random_bytes")]
    pub bytes: usize,
    /// Live leases one caller may hold on this role at once; past it, `GenerateSecret`
    /// answers `RESOURCE_EXHAUSTED` until one ends, so that one caller cannot flood the
    /// store or the database.
    #[serde(default = "defaults::max_leases_per_caller")]
    pub max_leases_per_caller: u64,
    /// A new lease's lifetime when the request names none.
    #[serde(default = "defaults::default_ttl_seconds")]
    pub default_ttl_seconds: u64,
    /// The longest a lease may live, renewals included, from its creation.
    #[serde(default = "defaults::max_ttl_seconds")]
    pub max_ttl_seconds: u64,
}

/// `[[secrets.postgres]]`: a PostgreSQL login role made for each lease, `VALID UNTIL` its
/// end, dropped (and its sessions ended) when the lease is revoked or expires.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresRole {
    /// As [`RandomRole::name`].
    pub name: String,
    pub host: String,
    #[serde(default = "defaults::postgres_port")]
    pub port: u16,
    pub database: String,
    /// The broker's own login: a role with `CREATEROLE` (and the grant options that
    /// `grants` need).
    pub user: String,
    /// The secret in this broker's store that holds `user`'s password (put it with
    /// `keybroker secrets put`); its newest enabled version is used.
    pub password_secret: String,
    /// Statements run after `CREATE ROLE`, in the same transaction; `{{name}}` is replaced
    /// by the new role's quoted name. Example: `GRANT SELECT ON items TO {{name}}`.
    #[serde(default)]
    pub grants: Vec<String>,
    /// Statements run before `DROP ROLE` (as `grants`): they must take back every
    /// privilege `grants` gave, or the role cannot be dropped.
    #[serde(default)]
    pub revocations: Vec<String>,
    /// Connections the broker keeps to this database.
    #[serde(default = "defaults::postgres_connections")]
    pub connections: usize,
    /// Live leases one caller may hold on this role at once; past it, `GenerateSecret`
    /// answers `RESOURCE_EXHAUSTED` until one ends, so that one caller cannot flood the
    /// store or the database.
    #[serde(default = "defaults::max_leases_per_caller")]
    pub max_leases_per_caller: u64,
    /// A new lease's lifetime when the request names none.
    #[serde(default = "defaults::default_ttl_seconds")]
    pub default_ttl_seconds: u64,
    /// The longest a lease may live, renewals included, from its creation.
    #[serde(default = "defaults::max_ttl_seconds")]
    pub max_ttl_seconds: u64,
}

mod defaults {
    pub fn sweep_seconds() -> u64 {
        5
    }
    pub fn default_ttl_seconds() -> u64 {
        3600
    }
    pub fn max_ttl_seconds() -> u64 {
        86_400
    }
    pub fn random_bytes() -> usize {
        32
    }
    pub fn postgres_port() -> u16 {
        5432
    }
    pub fn postgres_connections() -> usize {
        4
    }
    pub fn max_leases_per_caller() -> u64 {
        100
    }
}

/// A role name: 1 to 64 letters, digits, `-`, `_`, `.` and `/`.
pub fn check_role_name(name: &str) -> Result<(), String> {
    let fine = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b));
    match fine {
        true => Ok(()),
        false => Err("1 to 64 characters: letters, digits, '-', '_', '.', '/'".into()),
    }
}

impl LeaseTimes {
    fn validate(&self, field: &dyn Fn(&str) -> String) -> Result<(), (String, String)> {
        if self.max_ttl == 0 || self.max_ttl > 31 * 86_400 {
            return Err((field("max_ttl_seconds"), "must be 1 s to 31 days".into()));
        }
        if self.default_ttl == 0 || self.default_ttl > self.max_ttl {
            return Err((
                field("default_ttl_seconds"),
                "must be 1 s to max_ttl_seconds".into(),
            ));
        }
        if !(1..=1_000_000).contains(&self.max_per_caller) {
            return Err((
                field("max_leases_per_caller"),
                "must be 1 to 1,000,000".into(),
            ));
        }
        Ok(())
    }
}

impl SecretsConfig {
    /// Checks the roles: names unique and valid, sizes and times in range, and roles only
    /// with a `backend` (the store that keeps the PostgreSQL passwords).
    pub(super) fn validate(&self) -> Result<(), (String, String)> {
        if !(1..=3600).contains(&self.lease_sweep_seconds) {
            return Err((
                "secrets.lease_sweep_seconds".into(),
                "must be 1 to 3600".into(),
            ));
        }
        let mut names = BTreeSet::new();
        let mut check = |field: String, name: &str| -> Result<(), (String, String)> {
            check_role_name(name).map_err(|r| (field.clone(), r))?;
            if !names.insert(name.to_string()) {
                return Err((field, "another [[secrets.*]] role has this name".into()));
            }
            Ok(())
        };
        for (i, role) in self.random.iter().enumerate() {
            let field = |f: &str| format!("secrets.random[{i}].{f}");
            check(field("name"), &role.name)?;
            if !(16..=1024).contains(&role.bytes) {
                return Err((field("bytes"), "must be 16 to 1024".into()));
            }
            role.times().validate(&field)?;
        }
        for (i, role) in self.postgres.iter().enumerate() {
            let field = |f: &str| format!("secrets.postgres[{i}].{f}");
            check(field("name"), &role.name)?;
            if role.host.is_empty() {
                return Err((field("host"), "must not be empty".into()));
            }
            for (what, value) in [("database", &role.database), ("user", &role.user)] {
                if value.is_empty() || value.contains('\0') {
                    return Err((field(what), "must be a non-empty name".into()));
                }
            }
            if !(1..=64).contains(&role.connections) {
                return Err((field("connections"), "must be 1 to 64".into()));
            }
            if role.password_secret.is_empty() {
                return Err((field("password_secret"), "must name a secret".into()));
            }
            role.times().validate(&field)?;
        }
        let roles = self.random.len() + self.postgres.len();
        if roles > 0 && self.backend.is_none() {
            return Err((
                "secrets.backend".into(),
                "dynamic roles need the secret store: name its [[hsm]]".into(),
            ));
        }
        Ok(())
    }
}
