//! The PostgreSQL engine against a real server (`softhsm_tests::Postgres`, one per test):
//! the agent gets a credential, `psql` logs in with it, and it stops working when the
//! lease is revoked (its open session ended too) and when it expires.

use std::process::Output;
use std::time::{Duration, Instant};

use softhsm_tests::Postgres;

use super::*;

use common::postgres::{ADMIN_SECRET, ROLE, postgres_role};

/// A broker with the `app/db` role on `pg`, and the admin's password in its store; it
/// logs at debug level, so that the tests see what the most verbose log would hold.
async fn broker_on(pg: &Postgres) -> BrokerProcess {
    let options = BrokerOptions {
        log: "debug",
        ..BrokerOptions::default()
    };
    let broker = BrokerProcess::start_with_secrets(options, &postgres_role(pg));
    put(&broker, ADMIN_SECRET, pg.admin_password().as_bytes()).await;
    broker
}

/// `keybroker-agent generate-secret` as the workload, with development evidence of the
/// trusted measurement: the lease (JSON) and the password it wrote.
fn agent_generate(broker: &BrokerProcess, ttl: u32) -> (serde_json::Value, String) {
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("password");
    let run = common::workload::dev_agent_command(broker, TRUSTED_MEASUREMENT)
        .args(["generate-secret", ROLE, "--ttl", &ttl.to_string(), "--out"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(run.status.success(), "{run:?}");
    let password = std::fs::read_to_string(&file).unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        !said.contains(&password),
        "the password is only in the file"
    );
    (serde_json::from_slice(&run.stdout).unwrap(), password)
}

fn logged_in(out: &Output) -> bool {
    out.status.success()
}

fn role_exists(pg: &Postgres, user: &str) -> bool {
    pg.superuser_sql(&format!(
        "SELECT count(*) FROM pg_roles WHERE rolname = '{user}'"
    )) == "1"
}

/// Waits up to 20 s for `done`.
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within 20 s");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_database_credential_logs_in_and_is_refused_once_its_lease_is_revoked() {
    let pg = Postgres::start();
    let broker = broker_on(&pg).await;
    let (lease, password) = agent_generate(&broker, 0);
    let user = lease["attributes"]["username"]
        .as_str()
        .unwrap()
        .to_string();
    let lease_id = lease["lease_id"].as_str().unwrap().to_string();
    assert_eq!(lease["attributes"]["database"], "app");
    assert_eq!(lease["owner"], WORKLOAD);

    // The credential logs in and has exactly the template's grants.
    let read = pg.psql_as(&user, &password, "SELECT count(*) FROM items");
    assert!(logged_in(&read), "{read:?}");
    let write = pg.psql_as(&user, &password, "INSERT INTO items VALUES (2)");
    assert!(!write.status.success(), "{write:?}");
    // Its VALID UNTIL is the lease's end; the server never saw the password itself.
    let valid_until = pg.superuser_sql(&format!(
        "SELECT extract(epoch FROM rolvaliduntil)::bigint FROM pg_roles WHERE rolname = '{user}'"
    ));
    assert_eq!(valid_until, lease["expires_at"].to_string());
    let stored = pg.superuser_sql(&format!(
        "SELECT rolpassword FROM pg_authid WHERE rolname = '{user}'"
    ));
    assert!(stored.starts_with("SCRAM-SHA-256$"), "{stored}");

    // A session held open across the revocation is ended with it.
    let mut session = pg
        .psql_command(&user, &password, "SELECT pg_sleep(60)")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    eventually("the session is open", || {
        pg.superuser_sql(&format!(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = '{user}'"
        )) == "1"
    });

    // Revoked by the workload that holds it: dropped before the call returns.
    let workload = attested(&broker, "holder", TRUSTED_MEASUREMENT, true).await;
    secrets(&broker, "holder")
        .await
        .revoke_lease(with_token(
            pb::RevokeLeaseRequest { lease_id },
            &workload.token,
        ))
        .await
        .unwrap();
    assert!(!role_exists(&pg, &user), "the role is dropped");
    let refused = pg.psql_as(&user, &password, "SELECT 1");
    assert!(!logged_in(&refused), "{refused:?}");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("password authentication failed"),
        "{refused:?}"
    );
    let ended = session.wait().unwrap();
    assert!(!ended.success(), "the open session was ended");
    // Even at debug level, the log holds neither the password nor its SCRAM verifier.
    let log = broker.log();
    assert!(log.contains("DEBUG"), "the broker logged at debug level");
    assert!(!log.contains(&password), "the log holds the password");
    assert!(
        !log.contains("SCRAM-SHA-256$"),
        "the log holds a SCRAM verifier"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_database_credential_is_refused_after_its_lease_expires_and_the_role_is_dropped() {
    let pg = Postgres::start();
    let broker = broker_on(&pg).await;
    let (lease, password) = agent_generate(&broker, 2);
    let user = lease["attributes"]["username"]
        .as_str()
        .unwrap()
        .to_string();
    let read = pg.psql_as(&user, &password, "SELECT count(*) FROM items");
    assert!(logged_in(&read), "{read:?}");
    // Refused once the lease has ended (VALID UNTIL, then the sweep drops the role).
    eventually("the login is refused", || {
        !logged_in(&pg.psql_as(&user, &password, "SELECT 1"))
    });
    eventually("the role is dropped", || !role_exists(&pg, &user));
}

#[tokio::test(flavor = "multi_thread")]
async fn with_a_wrong_admin_password_nothing_is_issued_and_the_lease_is_swept_once_fixed() {
    let pg = Postgres::start();
    let broker = broker_on(&pg).await;
    // The admin password is rotated to a wrong value: the next connection is refused.
    // (Connections already open stay, so this broker has made none yet.)
    put_version(&broker, ADMIN_SECRET, b"not-the-password").await;
    let workload = attested(&broker, "holder", TRUSTED_MEASUREMENT, true).await;
    let err = secrets(&broker, "holder")
        .await
        .generate_secret(with_token(
            pb::GenerateSecretRequest {
                role: ROLE.into(),
                ttl_seconds: 0,
            },
            &workload.token,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(
        !err.message().contains("password authentication"),
        "{err:?}"
    );
    let roles = pg.superuser_sql("SELECT count(*) FROM pg_roles WHERE rolname LIKE 'kb\\_%'");
    assert_eq!(roles, "0");
    // The failed lease is kept, revoked, while the engine cannot confirm that nothing is
    // left; once the password is right again, the sweep forgets it.
    let listed = lease_list(&broker).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_ne!(listed[0].revoked_at, 0, "{listed:?}");
    put_version(&broker, ADMIN_SECRET, pg.admin_password().as_bytes()).await;
    eventually("the failed lease is forgotten", || {
        block_on(lease_list(&broker)).is_empty()
    });
}

async fn put_version(broker: &BrokerProcess, name: &str, value: &[u8]) {
    secrets(broker, "admin")
        .await
        .rotate_secret(pb::RotateSecretRequest {
            name: name.into(),
            value: value.to_vec(),
        })
        .await
        .unwrap();
}

async fn lease_list(broker: &BrokerProcess) -> Vec<pb::LeaseInfo> {
    secrets(broker, "admin")
        .await
        .list_leases(pb::ListLeasesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .leases
}

/// Runs a future to completion from a synchronous poll loop inside the test runtime.
fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_credentials_all_log_in_and_an_administrator_revokes_them_at_once() {
    let pg = Postgres::start();
    let broker = broker_on(&pg).await;
    let workload = attested(&broker, "holder", TRUSTED_MEASUREMENT, true).await;
    let kem = std::sync::Arc::new(workload.kem);
    // Credentials made at once, all on one role: their grants change the same privileges
    // (the engine queues them with an advisory lock; the bench's direct baseline, which
    // runs them truly in parallel, met PostgreSQL's "tuple concurrently updated" without
    // one). Here, every one must work.
    // Enough at once that, over the engine's four connections, grants overlap.
    const CALLS: usize = 32;
    let mut channels = Vec::new();
    for _ in 0..CALLS {
        channels.push(broker.channel("holder").await.unwrap());
    }
    let calls: Vec<_> = channels
        .into_iter()
        .map(|channel| {
            let (token, kem) = (workload.token.clone(), kem.clone());
            tokio::spawn(async move {
                let leased = SecretServiceClient::new(channel)
                    .generate_secret(with_token(
                        pb::GenerateSecretRequest {
                            role: ROLE.into(),
                            ttl_seconds: 0,
                        },
                        &token,
                    ))
                    .await
                    .unwrap()
                    .into_inner();
                let password = kem
                    .open(
                        &attest::release::Sealed {
                            enc: leased.enc,
                            ciphertext: leased.ciphertext,
                        },
                        &leased.info,
                    )
                    .unwrap();
                (
                    leased.attributes["username"].clone(),
                    String::from_utf8(password.to_vec()).unwrap(),
                )
            })
        })
        .collect();
    let mut credentials = Vec::new();
    for call in calls {
        credentials.push(call.await.unwrap());
    }
    // Each logs in (a few are tried with psql: 32 clients take a while).
    for (user, password) in credentials.iter().step_by(8) {
        let read = pg.psql_as(user, password, "SELECT count(*) FROM items");
        assert!(logged_in(&read), "{user}: {read:?}");
    }
    let revoked = secrets(&broker, "admin")
        .await
        .revoke_leases(pb::RevokeLeasesRequest { role: ROLE.into() })
        .await
        .unwrap()
        .into_inner()
        .revoked;
    assert_eq!(revoked, CALLS as u64);
    eventually("every role is dropped", || {
        pg.superuser_sql("SELECT count(*) FROM pg_roles WHERE rolname LIKE 'kb\\_%'") == "0"
    });
    for (user, password) in &credentials {
        assert!(
            !logged_in(&pg.psql_as(user, password, "SELECT 1")),
            "{user}"
        );
    }
}
