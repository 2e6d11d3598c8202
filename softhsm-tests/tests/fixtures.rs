//! The fixtures themselves work: each gives a private, usable instance.

use std::process::Command;

use softhsm_tests::{SoftHsm, Swtpm, require_command};

#[test]
fn softhsm_fixture_gives_a_private_token_directory() {
    let hsm = SoftHsm::new();
    assert!(hsm.token_dir().is_dir());
    let conf = std::fs::read_to_string(hsm.conf_path()).expect("read conf");
    assert!(conf.contains(&hsm.token_dir().display().to_string()));
    assert_eq!(
        std::env::var_os("SOFTHSM2_CONF").as_deref(),
        Some(hsm.conf_path().as_os_str())
    );
    // softhsm2-util, pointed at our conf, sees only the fresh empty slot.
    let util = require_command("softhsm2-util", "softhsm2").expect("softhsm2-util");
    let out = Command::new(util)
        .arg("--show-slots")
        .output()
        .expect("run softhsm2-util");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Initialized:      no"), "{text}");
    assert!(!text.contains("Initialized:      yes"), "{text}");
}

#[test]
fn softhsm_fixture_removes_its_directory_on_drop() {
    let dir = {
        let hsm = SoftHsm::new();
        hsm.token_dir().to_path_buf()
    };
    assert!(!dir.exists());
}

#[test]
fn swtpm_fixture_answers_tpm2_tools_and_survives_restart() {
    let mut tpm = Swtpm::start();
    let getrandom = require_command("tpm2_getrandom", "tpm2-tools").expect("tpm2-tools");
    let run = |tpm: &Swtpm| {
        Command::new(&getrandom)
            .args(["--hex", "16"])
            .env("TPM2TOOLS_TCTI", tpm.tcti())
            .output()
            .expect("run tpm2_getrandom")
    };
    let out = run(&tpm);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout.len(), 32, "16 random bytes in hex");

    tpm.stop();
    assert!(
        !run(&tpm).status.success(),
        "a stopped swtpm must not answer"
    );
    tpm.restart();
    assert!(
        run(&tpm).status.success(),
        "a restarted swtpm answers again"
    );
}

#[test]
fn swtpm_fixture_kills_its_process_on_drop() {
    let port = {
        let tpm = Swtpm::start();
        tpm.port()
    };
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[test]
fn swtpm_fixtures_run_side_by_side_on_different_ports() {
    let tpms: Vec<Swtpm> = (0..4).map(|_| Swtpm::start()).collect();
    let mut ports: Vec<u16> = tpms.iter().map(Swtpm::port).collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), 4);
}

#[test]
fn swtpm_fixture_can_manufacture_ek_certificates() {
    let tpm = Swtpm::start_with_ek_certificates();
    let nvread = require_command("tpm2_nvreadpublic", "tpm2-tools").expect("tpm2-tools");
    let out = Command::new(nvread)
        .env("TPM2TOOLS_TCTI", tpm.tcti())
        .output()
        .expect("run tpm2_nvreadpublic");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("0x1c00002"),
        "RSA EK certificate index missing: {text}"
    );
}
