//! Opening, migrations, backends, policy, and what is read back from the file.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use rusqlite::Connection;

use super::*;
use crate::store::sqlite::Sql;

fn user_version(path: &Path) -> i64 {
    let conn = Connection::open(path).unwrap();
    conn.pragma_query_value(None, "user_version", |row| row.get(0))
        .unwrap()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn open_creates_a_private_file_in_a_private_directory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state/keybroker/store.db");
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(path.parent().unwrap()), 0o700);
    assert_eq!(mode(&dir.path().join("state")), 0o700);

    let pragmas = on_writer(&store, |conn| {
        [
            "journal_mode",
            "synchronous",
            "foreign_keys",
            "busy_timeout",
        ]
        .map(|name| {
            conn.pragma_query_value(None, name, |row| row.get::<_, rusqlite::types::Value>(0))
                .map(|v| format!("{v:?}"))
                .unwrap()
        })
    });
    assert_eq!(pragmas[0], r#"Text("wal")"#);
    assert_eq!(pragmas[1], "Integer(2)"); // FULL
    assert_eq!(pragmas[2], "Integer(1)");
    assert_ne!(pragmas[3], "Integer(0)");
}

#[test]
fn reads_run_on_read_only_connections_beside_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("store.db")).unwrap();
    add_backends(&store);
    let readers = store.readers.as_ref().unwrap();
    let write = readers
        .submit(|conn| conn.execute("DELETE FROM backends", []).sql())
        .wait()
        .unwrap_err();
    assert!(write.to_string().contains("readonly"), "{write}");
    // A read transaction held open on a reader does not stop writes, and sees its
    // snapshot until it ends.
    let (hold, release) = std::sync::mpsc::channel::<()>();
    let (started, snapshot_taken) = std::sync::mpsc::channel::<()>();
    let held = readers.submit(move |conn| {
        let tx = conn.unchecked_transaction().sql()?;
        let before: i64 = tx
            .query_row("SELECT COUNT(*) FROM keys", [], |row| row.get(0))
            .sql()?;
        let _ = started.send(());
        let _ = release.recv();
        let after: i64 = tx
            .query_row("SELECT COUNT(*) FROM keys", [], |row| row.get(0))
            .sql()?;
        Ok((before, after))
    });
    snapshot_taken.recv().unwrap();
    create(&store, "written-meanwhile");
    assert_eq!(list_all(&store, "").len(), 1);
    hold.send(()).unwrap();
    assert_eq!(held.wait().unwrap(), (0, 0));
}

#[test]
fn fresh_database_gets_the_latest_schema_version() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    drop(SqliteStore::open(&path).unwrap());
    assert!(SqliteStore::schema_version() >= 1);
    assert_eq!(
        user_version(&path),
        i64::from(SqliteStore::schema_version())
    );
}

#[test]
fn reopening_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let store = SqliteStore::open(&path).unwrap();
    add_backends(&store);
    let key = create(&store, "k");
    store
        .set_policy("permit(principal, action, resource);")
        .wait()
        .unwrap();
    drop(store);

    for _ in 0..2 {
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.get("k").wait().unwrap(), Some(key.clone()));
        assert_eq!(store.backends().wait().unwrap().len(), 2);
        assert!(store.policy().wait().unwrap().is_some());
        drop(store);
        assert_eq!(
            user_version(&path),
            i64::from(SqliteStore::schema_version())
        );
    }
}

#[test]
fn newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    drop(SqliteStore::open(&path).unwrap());
    let newer = SqliteStore::schema_version() + 1_000;
    Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", newer)
        .unwrap();
    match SqliteStore::open(&path) {
        Err(StoreError::SchemaTooNew { found, supported }) => {
            assert_eq!((found, supported), (newer, SqliteStore::schema_version()));
        }
        other => panic!("{other:?}"),
    }
    // Left alone.
    assert_eq!(user_version(&path), i64::from(newer));
}

#[test]
fn in_memory_store_is_migrated() {
    let store = SqliteStore::open_in_memory().unwrap();
    let version = on_writer(&store, |conn| {
        conn.pragma_query_value(None, "user_version", |row| row.get::<_, u32>(0))
            .unwrap()
    });
    assert_eq!(version, SqliteStore::schema_version());
}

#[test]
fn debug_shows_the_path_not_the_contents() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let store = SqliteStore::open(&path).unwrap();
    add_backends(&store);
    create(&store, "secret-key-name");
    let shown = format!("{store:?}");
    assert!(shown.contains("store.db"), "{shown}");
    assert!(!shown.contains("secret-key-name"), "{shown}");
    let memory = SqliteStore::open_in_memory().unwrap();
    assert_eq!(format!("{memory:?}"), "SqliteStore(in memory)");
}

#[test]
fn backends_are_listed_by_name_and_never_registered_twice() {
    let store = SqliteStore::open_in_memory().unwrap();
    assert!(store.backends().wait().unwrap().is_empty());
    let env_pin = BackendRecord::Hsm {
        name: "b-hsm".into(),
        module_path: "/opt/hsm.so".into(),
        token_label: "t".into(),
        user_pin_file: None,
        user_pin_env: Some("PIN".into()),
    };
    store.add_backend(&tpm_backend("c-tpm")).wait().unwrap();
    store.add_backend(&env_pin).wait().unwrap();
    store.add_backend(&hsm_backend("a-hsm")).wait().unwrap();
    assert_eq!(
        store.backends().wait().unwrap(),
        vec![hsm_backend("a-hsm"), env_pin, tpm_backend("c-tpm")]
    );
    // The name is taken whatever the kind.
    for duplicate in [hsm_backend("c-tpm"), tpm_backend("a-hsm")] {
        match store.add_backend(&duplicate).wait() {
            Err(StoreError::BackendExists(name)) => assert_eq!(name, duplicate.name()),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(store.backends().wait().unwrap().len(), 3);
}

#[test]
fn hsm_backend_needs_exactly_one_pin_source() {
    let store = SqliteStore::open_in_memory().unwrap();
    for (file, env) in [
        (None, None),
        (Some("/pin".to_owned()), Some("PIN".to_owned())),
    ] {
        let backend = BackendRecord::Hsm {
            name: "h".into(),
            module_path: "/opt/hsm.so".into(),
            token_label: "t".into(),
            user_pin_file: file,
            user_pin_env: env,
        };
        match store.add_backend(&backend).wait() {
            Err(StoreError::Database(m)) => assert!(m.contains("needs exactly one of"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
    assert!(store.backends().wait().unwrap().is_empty());
}

#[test]
fn policy_is_replaced_whole() {
    let store = SqliteStore::open_in_memory().unwrap();
    assert_eq!(store.policy().wait().unwrap(), None);
    store.set_policy("first").wait().unwrap();
    assert_eq!(store.policy().wait().unwrap().as_deref(), Some("first"));
    store.set_policy("").wait().unwrap();
    assert_eq!(store.policy().wait().unwrap().as_deref(), Some(""));
    store.set_policy("second").wait().unwrap();
    assert_eq!(store.policy().wait().unwrap().as_deref(), Some("second"));
}

/// Runs `sql` straight on the store's connection, as a newer broker or an editor might.
fn tamper(store: &SqliteStore, sql: &str) {
    let sql = sql.to_owned();
    on_writer(store, move |conn| conn.execute_batch(&sql).unwrap());
}

#[test]
fn unknown_stored_values_are_errors() {
    let cases = [
        ("UPDATE keys SET state = 'melting'", "melting"),
        ("UPDATE keys SET algorithm = 'ec-p521'", "ec-p521"),
        ("UPDATE keys SET purpose = 'wrap'", "wrap"),
        ("UPDATE key_versions SET state = 'asleep'", "asleep"),
        // handle_kind is opaque to the store: the backend that decodes the handle refuses
        // one of another kind (`broker/src/backends/handle.rs`).
    ];
    for (sql, value) in cases {
        let store = store();
        create(&store, "k");
        tamper(&store, sql);
        match store.list(&query("")).wait() {
            Err(StoreError::Database(m)) => {
                assert!(m.starts_with("list: "), "{m}");
                assert!(m.contains(value), "{m}");
            }
            other => panic!("{sql}: {other:?}"),
        }
    }

    let backends = store();
    tamper(&backends, "UPDATE backends SET kind = 'cloud'");
    assert!(
        matches!(backends.backends().wait(), Err(StoreError::Database(m)) if m.contains("cloud"))
    );

    let keys = store();
    create(&keys, "k");
    tamper(&keys, "UPDATE keys SET state = 'melting'");
    let err = keys
        .set_state("k", &[KeyState::Enabled], KeyState::Disabled, None)
        .wait()
        .unwrap_err();
    assert!(matches!(err, StoreError::Database(m) if m.starts_with("set_state: ")));
}

#[test]
fn a_failed_call_changes_nothing() {
    let store = store();
    create(&store, "k");
    // The tag insert fails after the key row was written: the whole call rolls back.
    tamper(
        &store,
        "CREATE TRIGGER no_tags BEFORE INSERT ON key_tags \
         BEGIN SELECT RAISE(ABORT, 'no tags today'); END;",
    );
    let err = store
        .begin_create(&new_key("j"), &hsm("j"))
        .wait()
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Database(m) if m.contains("no tags today")),
        "{err:?}"
    );
    assert!(store.pending_versions().wait().unwrap().is_empty());
    tamper(&store, "DROP TRIGGER no_tags");
    create(&store, "j");
}

#[test]
fn a_full_disk_is_its_own_error_and_a_resource_exhausted_status() {
    let full = rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
        Some("database or disk is full".into()),
    );
    let err = super::super::store_error(&full, Some("begin_create"));
    assert!(matches!(err, StoreError::Full), "{err:?}");
    let status = tonic::Status::from(crate::error::BrokerError::from(err));
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert!(status.message().contains("key store"), "{status:?}");
}
