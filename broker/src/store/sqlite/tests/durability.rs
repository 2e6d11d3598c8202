//! A call that returned survives `kill -9`. The test runs its own test binary again, as
//! a writer that acknowledges each key on stdout after the store call returned, kills it
//! mid-stream with SIGKILL, and reopens the database.
//!
//! The child is started with `--exact <this test> --nocapture`, which both libtest
//! (`cargo test`) and `cargo nextest` (one process per test, the same arguments) accept;
//! the environment variable tells that run to be the writer.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::*;

/// Set (to the database path) only in the child: act as the writer.
const WRITER_ENV: &str = "KEYBROKER_STORE_TEST_WRITER_DB";
/// Marks an acknowledgement in the child's stdout, which libtest also writes to.
const ACK: &str = "store-test-ack:";
const TEST: &str = "acknowledged_keys_survive_sigkill";
/// Acknowledgements to wait for before the kill.
const WANT: usize = 300;
/// Upper bound for the writer, should the parent vanish without killing it.
const WRITER_LIMIT: usize = 100_000;

/// The name libtest and nextest know this test by: the module path without the crate.
fn test_name() -> String {
    let module = module_path!();
    let module = module.split_once("::").map_or(module, |(_, rest)| rest);
    format!("{module}::{TEST}")
}

/// The child's work: create keys until killed (or stdout is gone).
fn write_until_killed(path: &Path) {
    let store = SqliteStore::open(path).unwrap();
    let mut out = std::io::stdout().lock();
    for i in 0..WRITER_LIMIT {
        let name = format!("key-{i:06}");
        store
            .begin_create(&new_key(&name), &hsm(&name))
            .wait()
            .unwrap();
        store
            .complete_version(&name, 1, &hsm(&name))
            .wait()
            .unwrap();
        if writeln!(out, "{ACK}{name}")
            .and_then(|()| out.flush())
            .is_err()
        {
            return;
        }
    }
}

/// Kills the writer if the test fails before it does.
struct Writer(Child);

impl Drop for Writer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn acknowledged_keys_survive_sigkill() {
    if let Some(path) = std::env::var_os(WRITER_ENV) {
        write_until_killed(Path::new(&path));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    add_backends(&SqliteStore::open(&path).unwrap());

    let mut writer = Writer(
        Command::new(std::env::current_exe().unwrap())
            .args(["--exact", &test_name(), "--nocapture"])
            .env(WRITER_ENV, &path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let stdout = writer.0.stdout.take().unwrap();
    let (acks, acked) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut stdout = BufReader::new(stdout);
        let mut line = String::new();
        // Only whole lines: a line cut short by the kill was not acknowledged.
        while stdout.read_line(&mut line).unwrap_or(0) > 0 && line.ends_with('\n') {
            if let Some((_, name)) = line.trim_end().split_once(ACK) {
                let _ = acks.send(name.to_owned());
            }
            line.clear();
        }
    });

    let deadline = Instant::now() + Duration::from_secs(120);
    let mut names = Vec::new();
    while names.len() < WANT {
        let left = deadline.saturating_duration_since(Instant::now());
        match acked.recv_timeout(left) {
            Ok(name) => names.push(name),
            Err(e) => panic!("writer stopped after {} keys: {e}", names.len()),
        }
    }
    writer.0.kill().unwrap();
    let status = writer.0.wait().unwrap();
    assert_eq!(status.signal(), Some(9), "{status:?}");
    // Lines already in the pipe were acknowledged too.
    reader.join().unwrap();
    names.extend(acked.try_iter());
    eprintln!("{} keys acknowledged before SIGKILL", names.len());

    let store = SqliteStore::open(&path).unwrap();
    let integrity: String = on_writer(&store, |conn| {
        conn.query_row("PRAGMA integrity_check", [], |row| row.get(0))
            .unwrap()
    });
    assert_eq!(integrity, "ok");
    for name in &names {
        let key = store.get(name).wait().unwrap();
        let key = key.unwrap_or_else(|| panic!("acknowledged key {name} is gone"));
        assert_eq!((key.state, key.primary_version), (KeyState::Enabled, 1));
    }
    // At most the one key in flight at the kill is unacknowledged.
    let stored = list_all(&store, "key-").len() + store.pending_versions().wait().unwrap().len();
    assert!(
        (names.len()..=names.len() + 1).contains(&stored),
        "{stored} stored, {} acknowledged",
        names.len()
    );
}
