//! A private PostgreSQL server for one test, with its data directory, unix socket and log
//! in a temporary directory, listening on a free loopback TCP port.
//!
//! `initdb` and `postgres` refuse to run as root, so when the tests run as root (as they do
//! in CI) both run as the `postgres` system user that Debian's package creates: the
//! temporary directory is handed to that user and the commands drop to its uid and gid.
//! Otherwise they run as the current user.
//!
//! Authentication is real where it matters. Over TCP, which is how the broker connects,
//! every login needs a password (`host all all 127.0.0.1/32 scram-sha-256`); the bootstrap
//! superuser has none, so it cannot log in over TCP at all. Over the unix socket the
//! superuser is trusted: the socket lives in a private directory with mode 0700, so only
//! the server's own account (and root) can reach it, which is what `peer` would allow.
//!
//! The fixture creates `keybroker_admin` (LOGIN CREATEROLE, a random password, member of
//! `pg_signal_backend`) and a database `app` whose table `items` holds one row; the admin
//! holds CONNECT on `app` and SELECT on `items` WITH GRANT OPTION, so it can create a login
//! role, grant it SELECT, end its sessions and drop it, as the broker does. The group role
//! `app_readonly` (NOLOGIN, SELECT on `items`) is the one the admin may hand out
//! membership of, since one table's grants hold only a few thousand grantees.
//!
//! The port is picked free; if another process takes it first, the server exits and the
//! fixture tries another. Readiness is polled from `postmaster.pid`, never slept for. On
//! drop the server gets an immediate shutdown (SIGQUIT), which it finishes only once all
//! its processes have exited; then the directory is removed.

use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::packages::{MissingPackage, require_file};

const READY_TIMEOUT: Duration = Duration::from_secs(30);
const POLL_INTERVAL: Duration = Duration::from_millis(5);
const PORT_ATTEMPTS: usize = 20;
const HOST: &str = "127.0.0.1";
const SUPERUSER: &str = "postgres";
const ADMIN_USER: &str = "keybroker_admin";
const DATABASE: &str = "app";
const PACKAGE: &str = "postgresql";
/// Loopback only, the socket for its owner only, and small and fast: the data is thrown
/// away with the directory.
const SERVER_SETTINGS: [&str; 8] = [
    "listen_addresses=127.0.0.1",
    "unix_socket_permissions=0700",
    "fsync=off",
    "full_page_writes=off",
    "synchronous_commit=off",
    "autovacuum=off",
    "shared_buffers=8MB",
    "max_connections=50",
];

/// A running PostgreSQL server with its own data directory, socket directory and port.
#[derive(Debug)]
pub struct Postgres {
    child: Option<Child>,
    bin_dir: PathBuf,
    account: ServerAccount,
    port: u16,
    admin_password: String,
    dir: tempfile::TempDir,
}

/// The operating-system account that runs `initdb` and `postgres`.
#[derive(Debug, Clone, Copy)]
enum ServerAccount {
    /// The tests' own user (not root).
    Current,
    /// The `postgres` system user, because the tests run as root.
    System { uid: u32, gid: u32 },
}

impl Postgres {
    /// Creates a fresh cluster, starts it, and creates the admin role and the `app`
    /// database. Returns once the server accepts connections.
    ///
    /// # Panics
    /// When PostgreSQL is not installed (the message says how to install it), when
    /// `initdb` or the bootstrap SQL fails (the message carries their output), or when the
    /// server does not come up within 30 seconds (the message carries its log).
    pub fn start() -> Self {
        let candidates = server_binaries();
        let postgres = require_file(&candidates, "the PostgreSQL server `postgres`", PACKAGE)
            .unwrap_or_else(|e| panic!("{e}"));
        let bin_dir = postgres.parent().expect("a bin directory").to_path_buf();
        let account = ServerAccount::detect();
        let dir = tempfile::Builder::new()
            .prefix("keybroker-pg-")
            .tempdir()
            .expect("create a temporary PostgreSQL directory");
        let mut pg = Postgres {
            child: None,
            bin_dir,
            account,
            port: 0,
            admin_password: random_password(),
            dir,
        };
        pg.prepare_directories();
        pg.initdb();
        pg.launch();
        pg.bootstrap();
        pg
    }

    /// The TCP port on [`Postgres::host`].
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The loopback address the server listens on: `127.0.0.1`.
    pub fn host(&self) -> &str {
        HOST
    }

    /// The private directory that holds the server's unix socket (mode 0700).
    pub fn socket_dir(&self) -> PathBuf {
        self.dir.path().join("sock")
    }

    /// The role the broker administers the database with: LOGIN CREATEROLE, a member of
    /// `pg_signal_backend`, with grant options on `app` and its table `items`.
    pub fn admin_user(&self) -> &str {
        ADMIN_USER
    }

    /// The admin role's password: 24 random alphanumeric characters.
    pub fn admin_password(&self) -> &str {
        &self.admin_password
    }

    /// The application database, `app`, with a table `items(id int)` holding one row.
    pub fn database(&self) -> &str {
        DATABASE
    }

    /// A `psql` command that logs in to `app` over TCP as `user` with `password` and runs
    /// `sql` (unaligned, tuples only, stopping at the first error). It never prompts and
    /// reads no `~/.pgpass` or `~/.psqlrc`. For sessions a test keeps open in the
    /// background; [`Postgres::psql_as`] runs it to completion.
    pub fn psql_command(&self, user: &str, password: &str, sql: &str) -> Command {
        let mut cmd = self.psql();
        cmd.args(["-w", "-h", HOST, "-p", &self.port.to_string(), "-U", user])
            .args(["-d", DATABASE, "-c", sql])
            .env("PGPASSWORD", password)
            .env("PGCONNECT_TIMEOUT", "5")
            // A file that does not exist: /dev/null makes psql warn that it is not a file.
            .env("PGPASSFILE", self.dir.path().join("no-pgpass"));
        cmd
    }

    /// Runs `sql` with the real `psql` client as `user` over TCP, as the broker's client
    /// would connect, and returns its output: the status says whether the login worked.
    ///
    /// # Panics
    /// When `psql` cannot be started.
    pub fn psql_as(&self, user: &str, password: &str, sql: &str) -> Output {
        self.psql_command(user, password, sql)
            .output()
            .unwrap_or_else(|e| panic!("cannot run psql: {e}"))
    }

    /// Runs `sql` in `app` as the superuser over the private unix socket and returns its
    /// rows, `|`-separated, one per line, without the trailing newline.
    ///
    /// # Panics
    /// When the SQL fails (the message carries psql's stderr).
    pub fn superuser_sql(&self, sql: &str) -> String {
        self.superuser_statements(DATABASE, &[sql])
    }

    fn superuser_statements(&self, database: &str, statements: &[&str]) -> String {
        let port = self.port.to_string();
        let mut cmd = self.psql();
        cmd.args(["-q", "-p", &port, "-U", SUPERUSER, "-d", database, "-h"])
            .arg(self.socket_dir());
        for sql in statements {
            cmd.args(["-c", sql]);
        }
        let stdout = run_checked(&mut cmd, &format!("superuser SQL {statements:?}"));
        stdout.trim_end_matches('\n').to_owned()
    }

    /// `psql` from the server's own version, with no inherited `PG*` settings.
    fn psql(&self) -> Command {
        let mut cmd = Command::new(self.bin_dir.join("psql"));
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("PG") {
                cmd.env_remove(key);
            }
        }
        cmd.args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .env_remove("LC_ALL")
            .env("LC_MESSAGES", "C")
            .stdin(Stdio::null());
        cmd
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    fn prepare_directories(&self) {
        let socket_dir = self.socket_dir();
        std::fs::create_dir(&socket_dir).expect("create the PostgreSQL socket directory");
        self.account.give(self.dir.path());
        self.account.give(&socket_dir);
    }

    /// A command for one of the server's programs, run as the server's account.
    fn server_command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin_dir.join(program));
        cmd.current_dir(self.dir.path()).stdin(Stdio::null());
        self.account.apply(&mut cmd);
        cmd
    }

    fn initdb(&self) {
        let mut initdb = self.server_command("initdb");
        initdb
            .arg("-D")
            .arg(self.data_dir())
            .args(["-U", SUPERUSER, "-E", "UTF8", "--no-locale"])
            .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
            .args(["--no-sync", "--no-instructions"]);
        run_checked(&mut initdb, "initdb");
    }

    fn launch(&mut self) {
        for _ in 0..PORT_ATTEMPTS {
            self.port = free_port();
            if self.spawn() {
                return;
            }
        }
        panic!("PostgreSQL could not bind a free loopback port in {PORT_ATTEMPTS} attempts");
    }

    /// Starts the server on `self.port`; false if it exited early (the port was taken).
    fn spawn(&mut self) -> bool {
        let log = std::fs::File::create(self.log_path()).expect("create the PostgreSQL log");
        let log_err = log.try_clone().expect("clone the PostgreSQL log handle");
        // Every process title carries the cluster name, so `pgrep -f` finds them all.
        let name = self.dir.path().file_name().expect("a directory name");
        let mut postgres = self.server_command("postgres");
        postgres
            .arg("-D")
            .arg(self.data_dir())
            .arg("-k")
            .arg(self.socket_dir())
            .args(["-p", &self.port.to_string(), "-c"])
            .arg(format!("cluster_name={}", name.to_string_lossy()));
        for setting in SERVER_SETTINGS {
            postgres.args(["-c", setting]);
        }
        let child = postgres
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start PostgreSQL: {e}"));
        self.child = Some(child);
        self.wait_ready()
    }

    /// Polls `postmaster.pid`, whose eighth line reads `ready` once the server accepts
    /// connections (the sockets are bound before that), as `pg_ctl` does.
    fn wait_ready(&mut self) -> bool {
        let pid_file = self.data_dir().join("postmaster.pid");
        let log_path = self.log_path();
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let status = std::fs::read_to_string(&pid_file).unwrap_or_default();
            if status.lines().nth(7).is_some_and(|s| s.trim() == "ready") {
                return true;
            }
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
            if exited.is_some() {
                self.child = None;
                let log = log();
                assert!(
                    log.contains("Address already in use"),
                    "PostgreSQL exited during start-up ({exited:?}); its log:\n{log}"
                );
                return false;
            }
            let late = Instant::now() > deadline;
            assert!(
                !late,
                "PostgreSQL not ready in {READY_TIMEOUT:?}; its log:\n{}",
                log()
            );
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    fn bootstrap(&self) {
        let password = &self.admin_password;
        let create_admin =
            format!("CREATE ROLE keybroker_admin LOGIN CREATEROLE PASSWORD '{password}'");
        self.superuser_statements(
            "postgres",
            &[
                &create_admin,
                "GRANT pg_signal_backend TO keybroker_admin",
                "CREATE DATABASE app",
                "GRANT CONNECT ON DATABASE app TO keybroker_admin WITH GRANT OPTION",
            ],
        );
        self.superuser_statements(
            DATABASE,
            &[
                "CREATE TABLE items (id int)",
                "INSERT INTO items VALUES (1)",
                "GRANT SELECT ON items TO keybroker_admin WITH GRANT OPTION",
                // A group role that holds the privileges, for credentials to join: one
                // table ACL entry per credential would grow `items`' catalog row past its
                // page (on PostgreSQL 15, 3,000 grantees on one table fail).
                "CREATE ROLE app_readonly NOLOGIN",
                "GRANT SELECT ON items TO app_readonly",
                "GRANT app_readonly TO keybroker_admin WITH ADMIN OPTION",
            ],
        );
    }

    /// Immediate shutdown: the server stops its processes, waits for them, then exits.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let signalled = Command::new("kill")
                .args(["-QUIT", &child.id().to_string()])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !signalled {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

impl ServerAccount {
    /// The current user, or the `postgres` system user when running as root.
    fn detect() -> Self {
        if run_checked(Command::new("id").arg("-u"), "id -u").trim() != "0" {
            return ServerAccount::Current;
        }
        let out = Command::new("getent")
            .args(["passwd", "postgres"])
            .output()
            .unwrap_or_else(|e| panic!("cannot run getent: {e}"));
        let entry = String::from_utf8_lossy(&out.stdout);
        let mut fields = entry.trim().split(':').skip(2);
        let id = |field: Option<&str>| field.and_then(|f| f.parse::<u32>().ok());
        match (id(fields.next()), id(fields.next())) {
            (Some(uid), Some(gid)) if out.status.success() => ServerAccount::System { uid, gid },
            _ => panic!(
                "{}",
                MissingPackage {
                    what: "the system user `postgres` (PostgreSQL refuses to run as root)"
                        .to_owned(),
                    package: PACKAGE,
                }
            ),
        }
    }

    /// Makes `path` the account's own, so the server can write there.
    fn give(self, path: &Path) {
        if let ServerAccount::System { uid, gid } = self {
            std::os::unix::fs::chown(path, Some(uid), Some(gid))
                .unwrap_or_else(|e| panic!("cannot chown {}: {e}", path.display()));
        }
    }

    /// Runs `cmd` as this account (dropping root's supplementary groups too).
    fn apply(self, cmd: &mut Command) {
        if let ServerAccount::System { uid, gid } = self {
            cmd.uid(uid).gid(gid);
        }
    }
}

/// `/usr/lib/postgresql/<version>/bin/postgres` for each installed version, newest first.
fn server_binaries() -> Vec<PathBuf> {
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry.file_name().to_string_lossy().parse().ok()?;
            Some((version, entry.path().join("bin").join("postgres")))
        })
        .collect();
    versions.sort_by_key(|(version, _)| std::cmp::Reverse(*version));
    let mut candidates: Vec<PathBuf> = versions.into_iter().map(|(_, path)| path).collect();
    if candidates.is_empty() {
        candidates.push(root.join("<version>/bin/postgres"));
    }
    candidates
}

/// Runs `cmd` and returns its stdout.
///
/// # Panics
/// When it cannot start or fails (the message carries its output).
fn run_checked(cmd: &mut Command, what: &str) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{what} failed:\n{stdout}{stderr}");
    stdout
}

/// 24 random alphanumeric characters: safe inside an SQL string literal.
fn random_password() -> String {
    let mut rng = fastrand::Rng::new();
    (0..24).map(|_| rng.alphanumeric()).collect()
}

/// A port that was free on 127.0.0.1 a moment ago.
fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind an ephemeral port");
    listener.local_addr().expect("local address").port()
}
