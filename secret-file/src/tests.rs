//! Every refusal of [`SecretFile::read`], on real files in a temporary directory.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use super::{SecretFile, SecretFileError};

const SECRET: &str = "correct horse battery staple";

/// A directory (mode 0700) for one test.
fn dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    chmod(dir.path(), 0o700);
    dir
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Writes `contents` to `name` in `dir` with `mode`.
fn secret(dir: &Path, name: &str, contents: &[u8], mode: u32) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    chmod(&path, mode);
    path
}

#[test]
fn a_private_regular_file_is_read_whole() {
    let dir = dir();
    for mode in [0o600, 0o400] {
        let path = secret(
            dir.path(),
            &format!("pin-{mode:o}"),
            SECRET.as_bytes(),
            mode,
        );
        let file = SecretFile::read(&path).unwrap();
        assert_eq!(file.text().unwrap(), SECRET);
        assert_eq!(file.path(), path);
    }
    let empty = secret(dir.path(), "empty", b"", 0o600);
    assert!(SecretFile::read(&empty).unwrap().bytes().is_empty());
}

#[test]
fn a_file_that_group_or_others_may_access_is_refused_and_the_message_names_it() {
    let dir = dir();
    for mode in [0o640, 0o604, 0o620, 0o602, 0o610, 0o601, 0o644] {
        let path = secret(dir.path(), "key.pem", SECRET.as_bytes(), mode);
        match SecretFile::read(&path) {
            Err(e @ SecretFileError::TooOpen { mode: m, .. }) => {
                assert_eq!(m, mode);
                let message = e.to_string();
                assert!(message.contains("key.pem") && message.contains("chmod 600"));
                assert!(!message.contains(SECRET));
            }
            other => panic!("mode {mode:o}: {other:?}"),
        }
    }
}

#[test]
fn a_path_swapped_for_a_symlink_to_an_open_file_is_refused() {
    let dir = dir();
    let path = secret(dir.path(), "pin", SECRET.as_bytes(), 0o600);
    SecretFile::read(&path).unwrap();
    // The path now leads to a file others can read: the check is on what was opened.
    let public = secret(dir.path(), "public", b"attacker's choice", 0o644);
    std::fs::remove_file(&path).unwrap();
    symlink(&public, &path).unwrap();
    assert!(matches!(
        SecretFile::read(&path),
        Err(SecretFileError::TooOpen { mode: 0o644, .. })
    ));
    // A link to a private file is fine: mounted secrets are often links.
    let private = secret(dir.path(), "private", SECRET.as_bytes(), 0o600);
    let link = dir.path().join("link");
    symlink(&private, &link).unwrap();
    assert_eq!(SecretFile::read(&link).unwrap().text().unwrap(), SECRET);
}

#[test]
fn a_directory_is_refused() {
    let dir = dir();
    let sub = dir.path().join("keys");
    std::fs::create_dir(&sub).unwrap();
    chmod(&sub, 0o700);
    assert!(matches!(
        SecretFile::read(&sub),
        Err(SecretFileError::NotRegularFile {
            kind: "directory",
            ..
        })
    ));
}

#[test]
fn a_fifo_is_refused_without_blocking() {
    let dir = dir();
    let fifo = dir.path().join("pin");
    let made = std::process::Command::new("mkfifo")
        .args(["-m", "600"])
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    // No writer ever opens it: a blocking open would never return.
    assert!(matches!(
        SecretFile::read(&fifo),
        Err(SecretFileError::NotRegularFile { kind: "FIFO", .. })
    ));
}

#[test]
fn a_file_past_the_cap_is_refused_and_one_at_the_cap_is_read() {
    let dir = dir();
    let path = secret(dir.path(), "big", &[b'x'; 65], 0o600);
    assert!(matches!(
        SecretFile::read_capped(&path, 64),
        Err(SecretFileError::TooLarge { max_bytes: 64, .. })
    ));
    assert_eq!(
        SecretFile::read_capped(&path, 65).unwrap().bytes().len(),
        65
    );
    let huge = secret(
        dir.path(),
        "huge",
        &vec![0u8; super::DEFAULT_MAX_BYTES + 1],
        0o600,
    );
    assert!(matches!(
        SecretFile::read(&huge),
        Err(SecretFileError::TooLarge { .. })
    ));
}

#[test]
fn a_missing_file_names_the_path_and_text_must_be_utf8() {
    let dir = dir();
    let missing = dir.path().join("absent");
    let err = SecretFile::read(&missing).unwrap_err();
    assert!(matches!(err, SecretFileError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("absent"), "{err}");

    let binary = secret(dir.path(), "binary", &[0xff, 0xfe, 0x00], 0o600);
    let file = SecretFile::read(&binary).unwrap();
    assert_eq!(file.bytes(), [0xff, 0xfe, 0x00]);
    assert!(matches!(file.text(), Err(SecretFileError::NotUtf8 { .. })));
}

#[test]
fn debug_output_shows_the_path_and_never_the_contents() {
    let dir = dir();
    let path = secret(dir.path(), "pin", SECRET.as_bytes(), 0o600);
    let shown = format!("{:?}", SecretFile::read(&path).unwrap());
    assert!(
        shown.contains("pin") && shown.contains("REDACTED"),
        "{shown}"
    );
    assert!(!shown.contains(SECRET), "{shown}");
}
