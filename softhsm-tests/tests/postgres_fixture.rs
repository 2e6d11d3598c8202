//! The PostgreSQL fixture gives each test a private server whose TCP logins need the right
//! password, and whose admin role can create, use, end and drop login roles.
#![allow(clippy::expect_used, clippy::panic)]

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use softhsm_tests::Postgres;

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs `sql` as the fixture's admin role over TCP and returns its rows.
fn admin_sql(pg: &Postgres, sql: &str) -> String {
    let out = pg.psql_as(pg.admin_user(), pg.admin_password(), sql);
    assert!(out.status.success(), "{sql}: {}", stderr(&out));
    stdout(&out)
}

fn assert_login_refused(out: &Output, user: &str) {
    assert!(!out.status.success(), "login as {user} was accepted");
    let expected = format!("password authentication failed for user \"{user}\"");
    assert!(stderr(out).contains(&expected), "{}", stderr(out));
}

/// The cluster name, which every process title of this server carries.
fn cluster_name(pg: &Postgres) -> String {
    let dir = pg.socket_dir();
    let parent = dir.parent().expect("the fixture directory");
    let name = parent.file_name().expect("a directory name");
    name.to_string_lossy().into_owned()
}

fn processes_matching(pattern: &str) -> Vec<String> {
    let out = Command::new("pgrep")
        .args(["-a", "-f", pattern])
        .output()
        .expect("run pgrep");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn admin_password_logs_in_over_tcp_and_a_wrong_one_is_refused() {
    let pg = Postgres::start();
    assert_eq!(admin_sql(&pg, "select current_user"), "keybroker_admin");
    assert_eq!(admin_sql(&pg, "select count(*) from items"), "1");

    let wrong = pg.psql_as(pg.admin_user(), "not-the-password", "select 1");
    assert_login_refused(&wrong, "keybroker_admin");

    // The superuser has no password, so over TCP it cannot log in at all.
    let superuser = pg.psql_as("postgres", "", "select 1");
    assert!(
        !superuser.status.success(),
        "the superuser logged in over TCP"
    );
    // Over the private socket it can.
    assert_eq!(pg.superuser_sql("select current_user"), "postgres");
}

#[test]
fn admin_creates_a_role_that_reads_items_and_is_refused_once_dropped() {
    let pg = Postgres::start();
    let until = admin_sql(&pg, "select now() + interval '1 hour'");
    admin_sql(
        &pg,
        &format!(
            "CREATE ROLE lease_1 LOGIN PASSWORD 'lease-secret' VALID UNTIL '{until}'; \
             GRANT SELECT ON items TO lease_1;"
        ),
    );
    let read = pg.psql_as("lease_1", "lease-secret", "select count(*) from items");
    assert!(read.status.success(), "{}", stderr(&read));
    assert_eq!(stdout(&read), "1");
    let write = pg.psql_as("lease_1", "lease-secret", "insert into items values (2)");
    assert!(stderr(&write).contains("permission denied for table items"));

    // A session the role holds open is ended by the admin.
    let session = pg
        .psql_command("lease_1", "lease-secret", "select pg_sleep(60)")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start a background session");
    let active = "select count(*) from pg_stat_activity where usename = 'lease_1'";
    let deadline = Instant::now() + Duration::from_secs(10);
    while pg.superuser_sql(active) != "1" {
        assert!(Instant::now() < deadline, "the session never appeared");
    }
    let terminated = admin_sql(
        &pg,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'lease_1'",
    );
    assert_eq!(terminated, "t");
    let ended = session.wait_with_output().expect("wait for the session");
    assert!(!ended.status.success());
    assert!(
        stderr(&ended).contains("terminating connection due to administrator command"),
        "{}",
        stderr(&ended)
    );

    // The role's privileges go first: a role that still holds some cannot be dropped.
    admin_sql(&pg, "REVOKE ALL ON items FROM lease_1; DROP ROLE lease_1;");
    let exists = "select count(*) from pg_roles where rolname = 'lease_1'";
    assert_eq!(pg.superuser_sql(exists), "0");
    let after = pg.psql_as("lease_1", "lease-secret", "select 1");
    assert_login_refused(&after, "lease_1");
}

#[test]
fn a_role_past_its_valid_until_is_refused() {
    let pg = Postgres::start();
    admin_sql(
        &pg,
        "CREATE ROLE lease_old LOGIN PASSWORD 'old-secret' VALID UNTIL '2000-01-01 00:00:00+00'",
    );
    let out = pg.psql_as("lease_old", "old-secret", "select 1");
    assert_login_refused(&out, "lease_old");
}

#[test]
fn two_servers_run_side_by_side() {
    let first = Postgres::start();
    let second = Postgres::start();
    assert_ne!(first.port(), second.port());
    assert_ne!(first.socket_dir(), second.socket_dir());
    assert_ne!(first.admin_password(), second.admin_password());
    first.superuser_sql("CREATE TABLE only_here (id int)");
    assert_eq!(
        first.superuser_sql("select count(*) from pg_tables where tablename = 'only_here'"),
        "1"
    );
    assert_eq!(
        second.superuser_sql("select count(*) from pg_tables where tablename = 'only_here'"),
        "0"
    );
    let crossed = second.psql_as(second.admin_user(), first.admin_password(), "select 1");
    assert_login_refused(&crossed, "keybroker_admin");
}

#[test]
fn drop_stops_every_server_process_and_removes_the_directory() {
    let pg = Postgres::start();
    let name = cluster_name(&pg);
    let dir = pg
        .socket_dir()
        .parent()
        .expect("fixture directory")
        .to_owned();
    let running = processes_matching(&name);
    // The postmaster and its checkpointer, background writer, walwriter and launcher.
    assert!(running.len() >= 4, "{running:?}");
    drop(pg);
    assert_eq!(processes_matching(&name), Vec::<String>::new());
    assert!(!dir.exists(), "{} is still there", dir.display());
}
