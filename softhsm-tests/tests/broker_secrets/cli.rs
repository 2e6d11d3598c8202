//! The real `keybroker secrets` CLI against the real broker: values put from an owner-only
//! file and from stdin, rotated, listed, disabled, enabled and deleted, with every step
//! checked through the CLI's output or the gRPC API; and its refusals. No value ever
//! appears in what the CLI prints.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use super::common::keybroker_binary;
use super::*;

/// Everything the CLI printed, kept to check that no value is in any of it.
#[derive(Default)]
struct Transcript(String);

impl Transcript {
    /// Runs `keybroker secrets ARGS` with `stdin` (or none), and records its output.
    fn run(&mut self, config: &Path, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut child = Command::new(keybroker_binary(false))
            .arg("secrets")
            .arg("--client-config")
            .arg(config)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if let Some(bytes) = stdin {
            let mut pipe = child.stdin.take().unwrap();
            pipe.write_all(bytes).unwrap();
        }
        let out = child.wait_with_output().unwrap();
        self.0.push_str(&text(&out.stdout));
        self.0.push_str(&text(&out.stderr));
        out
    }

    fn assert_never_shows(&self, values: &[&str]) {
        for value in values {
            assert!(
                !self.0.contains(value),
                "{value:?} was printed:\n{}",
                self.0
            );
        }
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The JSON the CLI printed, after checking that it succeeded.
fn json(out: &Output) -> serde_json::Value {
    assert!(out.status.success(), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Writes an owner-only value file.
fn value_file(broker: &BrokerProcess, name: &str, value: &[u8], mode: u32) -> String {
    use std::os::unix::fs::PermissionsExt;
    let path = broker.dir.path().join(name);
    std::fs::write(&path, value).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path.to_str().unwrap().to_string()
}

/// Every secret, through the gRPC API.
async fn listed(broker: &BrokerProcess) -> Vec<pb::SecretSummary> {
    secrets(broker, "admin")
        .await
        .list_secrets(pb::ListSecretsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .secrets
}

/// `(version, enabled)` of each version of `name`, through the gRPC API.
async fn versions(broker: &BrokerProcess, name: &str) -> Vec<(u32, bool)> {
    let all = listed(broker).await;
    let secret = all.iter().find(|s| s.name == name).unwrap();
    secret
        .versions
        .iter()
        .map(|v| (v.version, v.enabled))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_puts_rotates_lists_disables_enables_and_deletes_without_showing_values() {
    const FROM_FILE: &str = "cli-value-from-file-5b1e";
    const FROM_STDIN: &str = "cli-value-from-stdin-93c0";
    // Taken byte for byte: the trailing newline is part of the value.
    const ROTATED: &str = "cli-value-rotated-d47a\n";
    let broker = BrokerProcess::start();
    let admin = broker.client_config("admin");
    let mut cli = Transcript::default();

    let file = value_file(&broker, "value", FROM_FILE.as_bytes(), 0o600);
    let put = cli.run(
        &admin,
        &[
            "put",
            "app/cli",
            "--value-file",
            &file,
            "--description",
            "from the CLI",
            "--json",
        ],
        None,
    );
    let put = json(&put);
    assert_eq!(put["name"], "app/cli");
    assert_eq!(put["version"], 1);
    assert_eq!(put["state"], "enabled");
    let out = cli.run(
        &admin,
        &["put", "app/stdin", "--value-file", "-"],
        Some(FROM_STDIN.as_bytes()),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("app/stdin"),
        "{}",
        text(&out.stdout)
    );

    let rotated = cli.run(
        &admin,
        &["rotate", "app/cli", "--value-file", "-", "--json"],
        Some(ROTATED.as_bytes()),
    );
    assert_eq!(json(&rotated)["version"], 2);

    // Every page followed; descriptions and versions, never values.
    let list = json(&cli.run(&admin, &["list", "--page-size", "1", "--json"], None));
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["app/cli", "app/stdin"]);
    assert_eq!(list[0]["description"], "from the CLI");
    let numbers: Vec<u64> = list[0]["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, [1, 2]);

    // What was stored is exactly what was read: the workload opens the newest version.
    let workload = attested(&broker, "holder", TRUSTED_MEASUREMENT, true).await;
    let sealed = get(&broker, "holder", Some(&workload.token), "app/cli", 0)
        .await
        .unwrap();
    assert_eq!(sealed.version, 2);
    let sealed = attest::release::Sealed {
        enc: sealed.enc,
        ciphertext: sealed.ciphertext,
    };
    let info = attest::release::release_info("app/cli", 2, WORKLOAD).unwrap();
    let opened = workload.kem.open(&sealed, &info).unwrap();
    assert_eq!(opened.as_slice(), ROTATED.as_bytes());

    let disabled = cli.run(&admin, &["disable", "app/cli", "--version", "1"], None);
    assert!(disabled.status.success(), "{}", text(&disabled.stderr));
    assert!(text(&disabled.stdout).contains("disabled"));
    assert_eq!(versions(&broker, "app/cli").await, [(1, false), (2, true)]);
    let table = cli.run(&admin, &["list", "--prefix", "app/c"], None);
    let table = text(&table.stdout);
    assert!(table.contains("1 (disabled), 2"), "{table}");
    assert!(!table.contains("app/stdin"), "{table}");

    let enabled = json(&cli.run(
        &admin,
        &["enable", "app/cli", "--version", "1", "--json"],
        None,
    ));
    assert_eq!(enabled["state"], "enabled");
    assert_eq!(versions(&broker, "app/cli").await, [(1, true), (2, true)]);

    let deleted = cli.run(&admin, &["delete", "app/cli"], None);
    assert!(deleted.status.success(), "{}", text(&deleted.stderr));
    let left: Vec<String> = listed(&broker).await.into_iter().map(|s| s.name).collect();
    assert_eq!(left, ["app/stdin"]);
    let again = cli.run(&admin, &["delete", "app/cli"], None);
    assert_eq!(again.status.code(), Some(4), "{}", text(&again.stderr));

    cli.assert_never_shows(&[FROM_FILE, FROM_STDIN, ROTATED.trim_end()]);
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_refuses_bad_value_files_other_identities_and_taken_names() {
    const VALUE: &str = "cli-refused-value-0c8d";
    const SECOND: &str = "cli-second-value-e61f";
    let broker = BrokerProcess::start();
    let admin = broker.client_config("admin");
    let mut cli = Transcript::default();
    let refused_locally = |out: &Output, why: &str| {
        let message = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{message}");
        assert!(
            message.contains("--value-file") && message.contains(why),
            "{message}"
        );
    };

    let missing = broker.dir.path().join("no-such-file");
    let out = cli.run(
        &admin,
        &["put", "app/x", "--value-file", missing.to_str().unwrap()],
        None,
    );
    refused_locally(&out, "no-such-file");
    let empty = value_file(&broker, "empty", b"", 0o600);
    let out = cli.run(&admin, &["put", "app/x", "--value-file", &empty], None);
    refused_locally(&out, "empty");
    let out = cli.run(&admin, &["put", "app/x", "--value-file", "-"], Some(b""));
    refused_locally(&out, "empty");
    // A value file is a secret file: open to others, it is refused before it is read.
    let open = value_file(&broker, "open", VALUE.as_bytes(), 0o644);
    let out = cli.run(&admin, &["put", "app/x", "--value-file", &open], None);
    refused_locally(&out, "chmod 600");
    let big = vec![b'v'; 64 * 1024 + 1];
    let out = cli.run(&admin, &["put", "app/x", "--value-file", "-"], Some(&big));
    refused_locally(&out, "larger than 65536 bytes");
    assert!(
        listed(&broker).await.is_empty(),
        "nothing reached the store"
    );

    // The workload may not administer secrets.
    let file = value_file(&broker, "value", VALUE.as_bytes(), 0o600);
    let workload = broker.client_config("workload");
    let out = cli.run(&workload, &["put", "app/x", "--value-file", &file], None);
    let message = text(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{message}");
    assert!(message.contains("PermissionDenied"), "{message}");
    assert!(
        listed(&broker).await.is_empty(),
        "nothing reached the store"
    );

    // A taken name: refused, and the first value stays the only version.
    let out = cli.run(&admin, &["put", "app/x", "--value-file", &file], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = cli.run(
        &admin,
        &["put", "app/x", "--value-file", "-"],
        Some(SECOND.as_bytes()),
    );
    let message = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{message}");
    assert!(message.contains("already exists"), "{message}");
    assert_eq!(versions(&broker, "app/x").await, [(1, true)]);

    cli.assert_never_shows(&[VALUE, SECOND]);
}
