//! `keybroker token` against a real SoftHSM2 token directory.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use softhsm_tests::SoftHsm;

fn keybroker(hsm: &SoftHsm, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_keybroker"))
        .args(args)
        .env("SOFTHSM2_CONF", hsm.conf_path())
        .env("KEYBROKER_PKCS11_MODULE", hsm.module_path())
        .output()
        .unwrap()
}

fn pin_file(dir: &Path, name: &str, pin: &str, mode: u32) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, pin).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn init_then_list_shows_a_ready_token_and_its_mechanisms() {
    let hsm = SoftHsm::new();
    let so = pin_file(hsm.scratch_dir(), "so.pin", "so-pin-123456", 0o600);
    let user = pin_file(hsm.scratch_dir(), "user.pin", "user-pin-123456\n", 0o600);
    let out = keybroker(
        &hsm,
        &[
            "token",
            "init",
            "--label",
            "payments",
            "--so-pin-file",
            so.to_str().unwrap(),
            "--user-pin-file",
            user.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains("pin-123456"), "PINs are never printed");

    let out = keybroker(&hsm, &["token", "list", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ready = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["label"] == "payments")
        .unwrap();
    assert_eq!(ready["initialized"], true);
    assert_eq!(ready["user_pin_initialized"], true);

    let out = keybroker(&hsm, &["token", "list"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("ready"),
        "{}",
        text(&out)
    );
    let out = keybroker(&hsm, &["token", "mechanisms", "--label", "payments"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("CKM_ECDSA"),
        "{}",
        text(&out)
    );
}

#[test]
fn refusals_have_clear_messages_and_exit_codes() {
    let hsm = SoftHsm::new();
    let so = pin_file(hsm.scratch_dir(), "so.pin", "so-pin-123456", 0o600);
    // Open to others, or only to the group: refused before the token is touched.
    for mode in [0o644, 0o640] {
        let loose = pin_file(hsm.scratch_dir(), "loose.pin", "user-pin-123456", mode);
        let out = keybroker(
            &hsm,
            &[
                "token",
                "init",
                "--label",
                "t",
                "--so-pin-file",
                so.to_str().unwrap(),
                "--user-pin-file",
                loose.to_str().unwrap(),
            ],
        );
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        assert!(
            text(&out).contains("other users may access it"),
            "{}",
            text(&out)
        );
    }

    let out = keybroker(&hsm, &["token", "mechanisms", "--label", "absent"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(
        text(&out).contains(r#"no token with label "absent""#),
        "{}",
        text(&out)
    );

    let out = keybroker(&hsm, &["token", "init", "--label", "t", "--so-pin", "1234"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a PIN on the command line is not accepted"
    );

    let out = Command::new(env!("CARGO_BIN_EXE_keybroker"))
        .args(["token", "list", "--module", "/nonexistent/module.so"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("/nonexistent/module.so"),
        "{}",
        text(&out)
    );
}

#[test]
fn a_pin_file_and_a_pin_variable_together_are_refused_and_change_nothing() {
    let hsm = SoftHsm::new();
    let so = pin_file(hsm.scratch_dir(), "so.pin", "so-pin-123456", 0o600);
    let user = pin_file(hsm.scratch_dir(), "user.pin", "user-pin-123456", 0o600);
    let out = Command::new(env!("CARGO_BIN_EXE_keybroker"))
        .args(["token", "init", "--label", "both", "--so-pin-file"])
        .arg(&so)
        .args(["--so-pin-env", "KEYBROKER_TEST_SO_PIN", "--user-pin-file"])
        .arg(&user)
        .env("KEYBROKER_TEST_SO_PIN", "so-pin-123456")
        .env("SOFTHSM2_CONF", hsm.conf_path())
        .env("KEYBROKER_PKCS11_MODULE", hsm.module_path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("so-pin-env"), "{}", text(&out));
    // No token was initialised.
    let out = keybroker(&hsm, &["token", "list", "--json"]);
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        rows.as_array()
            .unwrap()
            .iter()
            .all(|r| r["label"] != "both" && r["initialized"] == false),
        "{rows}"
    );
}

#[test]
fn enable_release_makes_the_transport_key_once_and_then_checks_it() {
    let hsm = SoftHsm::new();
    let so = pin_file(hsm.scratch_dir(), "so.pin", "so-pin-123456", 0o600);
    let user = pin_file(hsm.scratch_dir(), "user.pin", "user-pin-123456", 0o600);
    let so = so.to_str().unwrap();
    let out = keybroker(
        &hsm,
        &[
            "token",
            "init",
            "--label",
            "disks",
            "--so-pin-file",
            so,
            "--user-pin-file",
            user.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let enable = [
        "token",
        "enable-release",
        "--label",
        "disks",
        "--so-pin-file",
        so,
    ];
    let out = keybroker(&hsm, &enable);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "token \"disks\": release transport key created\n"
    );
    let out = keybroker(&hsm, &enable);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "token \"disks\": release transport key present and as made\n"
    );
    // The user PIN is not the SO's: refused, nothing made.
    let wrong = pin_file(hsm.scratch_dir(), "wrong.pin", "user-pin-123456", 0o600);
    let other = [
        "token",
        "enable-release",
        "--label",
        "disks",
        "--so-pin-file",
        wrong.to_str().unwrap(),
    ];
    let out = keybroker(&hsm, &other);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains("pin-123456"), "PINs are never printed");
}
