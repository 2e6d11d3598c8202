//! End to end: the real `keybroker keys sign` CLI, as the workload, and OpenSSL checking
//! its signatures with the public key the CLI exported; `keybroker keys list` following
//! pages and filtering by tag.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{BrokerProcess, create, keybroker_binary};
use keybroker_api::v1 as pb;

fn keys_cli(config: &Path, args: &[&str]) -> Output {
    Command::new(keybroker_binary(false))
        .arg("keys")
        .arg("--client-config")
        .arg(config)
        .args(args)
        .output()
        .unwrap()
}

fn openssl_verify(hash: &str, public: &Path, signature: &Path, file: &Path) -> Output {
    Command::new("openssl")
        .args(["dgst", hash, "-verify"])
        .arg(public)
        .arg("-signature")
        .arg(signature)
        .arg(file)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_signatures_verify_with_openssl() {
    let broker = BrokerProcess::start();
    let mut admin = broker.keys("admin").await;
    use pb::KeyAlgorithm as A;
    let keys = [
        ("cli-ec256", A::EcP256, "-sha256"),
        ("cli-ec384", A::EcP384, "-sha384"),
        ("cli-rsa", A::Rsa2048, "-sha256"),
    ];
    for (name, algorithm, _) in keys {
        admin
            .create_key(create(
                name,
                algorithm,
                pb::KeyPurpose::SignVerify,
                "softhsm",
            ))
            .await
            .unwrap();
    }
    let workload = broker.client_config("workload");
    let dir = broker.dir.path();
    // Larger than any message limit: only the digest travels.
    let file = dir.join("release.tar");
    std::fs::write(&file, vec![0x5a; 5 << 20]).unwrap();
    let tampered = dir.join("tampered.tar");
    std::fs::write(&tampered, vec![0x5b; 5 << 20]).unwrap();

    for (name, _, hash) in keys {
        let signature = dir.join(format!("{name}.sig"));
        let public = dir.join(format!("{name}.pem"));
        let (file_arg, sig_arg) = (file.to_str().unwrap(), signature.to_str().unwrap());
        let out = keys_cli(
            &workload,
            &["sign", name, "--in", file_arg, "--out", sig_arg],
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(
            text(&out.stdout).contains(&format!("signed with {name} version 1")),
            "{}",
            text(&out.stdout)
        );
        let out = keys_cli(
            &workload,
            &["public-key", name, "--out", public.to_str().unwrap()],
        );
        assert!(out.status.success(), "{}", text(&out.stderr));

        let out = openssl_verify(hash, &public, &signature, &file);
        assert!(out.status.success(), "{name}: {}", text(&out.stderr));
        assert_eq!(text(&out.stdout).trim(), "Verified OK");
        assert!(
            !openssl_verify(hash, &public, &signature, &tampered)
                .status
                .success()
        );

        // The CLI's own verify agrees, and says no with exit code 1.
        let out = keys_cli(
            &workload,
            &["verify", name, "--in", file_arg, "--signature", sig_arg],
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        let out = keys_cli(
            &workload,
            &[
                "verify",
                name,
                "--in",
                tampered.to_str().unwrap(),
                "--signature",
                sig_arg,
            ],
        );
        assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    }

    // Without --out: base64 on stdout, the version on stderr.
    let out = keys_cli(
        &workload,
        &["sign", "cli-ec256", "--in", file.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let encoded = text(&out.stdout);
    let base64 = |c: char| c.is_ascii_alphanumeric() || "+/=".contains(c);
    assert!(
        encoded.trim().len() >= 64 && encoded.trim().chars().all(base64),
        "{encoded}"
    );
    assert!(text(&out.stderr).contains("version 1"));

    // Another team's key is refused by policy: exit code 5.
    let mut other = create(
        "cli-other",
        A::EcP256,
        pb::KeyPurpose::SignVerify,
        "softhsm",
    );
    other.tags = [("team".to_string(), "other".to_string())].into();
    admin.create_key(other).await.unwrap();
    let out = keys_cli(
        &workload,
        &["sign", "cli-other", "--in", file.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("PermissionDenied"),
        "{}",
        text(&out.stderr)
    );
}

fn listed_names(out: &Output) -> Vec<String> {
    assert!(out.status.success(), "{}", text(&out.stderr));
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    rows.as_array()
        .unwrap()
        .iter()
        .map(|row| row["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_lists_every_page_filters_by_tag_and_refuses_an_open_key_file() {
    let broker = BrokerProcess::start();
    let mut admin = broker.keys("admin").await;
    for i in 0..5 {
        let mut request = create(
            &format!("l-{i}"),
            pb::KeyAlgorithm::EcP256,
            pb::KeyPurpose::SignVerify,
            "softhsm",
        );
        if i < 3 {
            request.tags.insert("env".into(), "prod".into());
        }
        admin.create_key(request).await.unwrap();
    }
    let config = broker.client_config("admin");
    let all = keys_cli(&config, &["list", "--page-size", "2", "--json"]);
    assert_eq!(listed_names(&all), ["l-0", "l-1", "l-2", "l-3", "l-4"]);
    let prod = keys_cli(
        &config,
        &[
            "list",
            "--tag",
            "env=prod",
            "--tag",
            "team=payments",
            "--page-size",
            "1",
            "--json",
        ],
    );
    assert_eq!(listed_names(&prod), ["l-0", "l-1", "l-2"]);
    let bad = keys_cli(&config, &["list", "--tag", "env"]);
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad.stderr));

    // The client key is a secret file: open to the group, it is refused before any call.
    let key = broker.dir.path().join("pki/admin-key.pem");
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o640)).unwrap();
    let open = keys_cli(&config, &["list"]);
    assert_eq!(open.status.code(), Some(2), "{}", text(&open.stderr));
    let message = text(&open.stderr);
    assert!(
        message.contains("admin-key.pem") && message.contains("chmod 600"),
        "{message}"
    );
}
