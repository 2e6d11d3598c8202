//! The PostgreSQL role the dynamic-secret tests and benches configure on a
//! `softhsm_tests::Postgres` server.

use softhsm_tests::Postgres;

/// The role's name (and its leases' prefix).
pub const ROLE: &str = "app/db";
/// Where the broker's own PostgreSQL password is kept: not under `app/`, which the test
/// policy releases to the workload.
pub const ADMIN_SECRET: &str = "broker/pg-admin";

/// The `[[secrets.postgres]]` role `app/db` on `pg`: credentials join the group role
/// `app_readonly` (docs/leases.md says why not table grants).
pub fn postgres_role(pg: &Postgres) -> String {
    format!(
        r#"
[[secrets.postgres]]
name = "{ROLE}"
host = "{}"
port = {}
database = "{}"
user = "{}"
password_secret = "{ADMIN_SECRET}"
grants = ["GRANT app_readonly TO {{{{name}}}}"]
revocations = ["REVOKE app_readonly FROM {{{{name}}}}"]
default_ttl_seconds = 60
max_ttl_seconds = 120
max_leases_per_caller = 1000000
"#,
        pg.host(),
        pg.port(),
        pg.database(),
        pg.admin_user(),
    )
}
