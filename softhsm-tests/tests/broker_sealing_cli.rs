//! End to end: `keybroker seal`, `unseal` and `rewrap` against a real broker on SoftHSM2
//! and swtpm. Files sealed locally (the broker makes and opens only the data key) and
//! through the broker (`--remote`) open either way, byte for byte; refusals leave no
//! output; a rotation, a rewrap and a retirement leave every rewrapped file readable and
//! the one left behind refused.
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

/// `keybroker COMMAND --client-config CONFIG ARGS...`.
fn cli(config: &Path, command: &str, args: &[&str]) -> Output {
    Command::new(keybroker_binary(false))
        .arg(command)
        .arg("--client-config")
        .arg(config)
        .args(args)
        .output()
        .unwrap()
}

/// Checks that the CLI exited 1 and said `says` on stderr (anything, for "").
fn refused_with(out: &Output, mode: &[&str], says: &str) {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{mode:?}: {stderr}");
    assert!(stderr.contains(says), "{mode:?}: {stderr}");
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Deterministic bytes that differ at every offset of a chunk (no repeating blocks).
fn content(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as u8
        })
        .collect()
}

/// `seal` of `input` to `out`, with extra arguments.
fn seal(config: &Path, key: &str, input: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["--key", key, "--in", s(input), "--out", s(out)];
    args.extend_from_slice(extra);
    cli(config, "seal", &args)
}

fn unseal(config: &Path, input: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["--in", s(input), "--out", s(out)];
    args.extend_from_slice(extra);
    cli(config, "unseal", &args)
}

/// The files of `dir` whose names contain `part` (temporary files left behind, say).
fn names_containing(dir: &Path, part: &str) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(part))
        .collect()
}

async fn wrap_key(broker: &BrokerProcess, name: &str, backend: &str) {
    broker
        .keys("admin")
        .await
        .create_key(create(
            name,
            pb::KeyAlgorithm::Aes256,
            pb::KeyPurpose::WrapUnwrap,
            backend,
        ))
        .await
        .unwrap();
}

/// Every way round: sealed here or in the broker, opened here or in the broker.
fn round_trips(config: &Path, key: &str, dir: &Path, sizes: &[usize], extra_seal: &[&str]) {
    for (i, &size) in sizes.iter().enumerate() {
        let plain = dir.join(format!("{key}-{size}.bin"));
        let data = content(size, i as u64);
        std::fs::write(&plain, &data).unwrap();
        let ctx = ["--context", "tenant=acme", "--context", "purpose=backup"];
        for (seal_mode, open_mode) in [
            ("", ""),
            ("--remote", "--remote"),
            ("", "--remote"),
            ("--remote", ""),
        ] {
            let sealed = dir.join(format!("{key}-{size}{seal_mode}.sealed"));
            let opened = dir.join(format!("{key}-{size}{seal_mode}{open_mode}.out"));
            let mut args: Vec<&str> = ctx.to_vec();
            args.extend_from_slice(extra_seal);
            if !seal_mode.is_empty() {
                args.push(seal_mode);
            }
            let out = ok(&seal(config, key, &plain, &sealed, &args));
            assert!(out.contains(&format!("with {key} version 1")), "{out}");
            let sealed_bytes = std::fs::read(&sealed).unwrap();
            assert_eq!(&sealed_bytes[..4], b"KBSE");
            let mut args: Vec<&str> = ctx.to_vec();
            if !open_mode.is_empty() {
                args.push(open_mode);
            }
            ok(&unseal(config, &sealed, &opened, &args));
            let opened_bytes = std::fs::read(&opened).unwrap();
            assert!(
                opened_bytes == data,
                "{key}, {size} bytes, sealed {seal_mode:?} opened {open_mode:?}: {} bytes back",
                opened_bytes.len()
            );
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&opened).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", opened.display());
        }
    }
    assert_eq!(names_containing(dir, "keybroker-tmp"), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn seal_and_unseal_round_trip_locally_and_through_the_broker() {
    let broker = BrokerProcess::start();
    wrap_key(&broker, "files", "softhsm").await;
    let config = broker.client_config("admin");
    let dir = broker.dir.path().join("data");
    std::fs::create_dir(&dir).unwrap();
    let sizes = [0, 1, 65535, 65536, 65537, (3 << 20) + 7];
    round_trips(&config, "files", &dir, &sizes, &[]);
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_envelopes_leave_no_output() {
    let broker = BrokerProcess::start();
    wrap_key(&broker, "guarded", "softhsm").await;
    let config = broker.client_config("admin");
    let dir = broker.dir.path().join("data");
    std::fs::create_dir(&dir).unwrap();
    let plain = dir.join("payroll.csv");
    std::fs::write(&plain, content(200_000, 7)).unwrap();
    let sealed = dir.join("payroll.sealed");
    ok(&seal(
        &config,
        "guarded",
        &plain,
        &sealed,
        &["--context", "tenant=acme"],
    ));
    let mut flipped = std::fs::read(&sealed).unwrap();
    let last = flipped.len() - 100;
    flipped[last] ^= 0x01;
    let altered = dir.join("altered.sealed");
    std::fs::write(&altered, &flipped).unwrap();
    let mut short = std::fs::read(&sealed).unwrap();
    short.truncate(short.len() - 16);
    let truncated = dir.join("truncated.sealed");
    std::fs::write(&truncated, &short).unwrap();

    let out_path = dir.join("payroll.out");
    for mode in [&[][..], &["--remote"][..]] {
        // The wrong context: the first chunk does not authenticate.
        let mut args = vec!["--context", "tenant=other"];
        args.extend_from_slice(mode);
        let out = unseal(&config, &sealed, &out_path, &args);
        refused_with(&out, mode, "chunk 0 failed authentication");
        assert!(!out_path.exists(), "{mode:?}: output left behind");
        // No context at all.
        let out = unseal(&config, &sealed, &out_path, mode);
        refused_with(&out, mode, "");
        assert!(!out_path.exists());
        // A flipped byte in the last chunk: earlier chunks opened, nothing kept.
        let mut args = vec!["--context", "tenant=acme"];
        args.extend_from_slice(mode);
        let out = unseal(&config, &altered, &out_path, &args);
        refused_with(&out, mode, "failed authentication");
        assert!(!out_path.exists(), "{mode:?}: output left behind");
        // Truncated by its last 16 bytes.
        let out = unseal(&config, &truncated, &out_path, &args);
        refused_with(&out, mode, "");
        assert!(!out_path.exists(), "{mode:?}: output left behind");
        // An existing output is left as it was.
        std::fs::write(&out_path, b"before").unwrap();
        let out = unseal(&config, &altered, &out_path, &args);
        refused_with(&out, mode, "");
        assert_eq!(std::fs::read(&out_path).unwrap(), b"before");
        std::fs::remove_file(&out_path).unwrap();
        // --key that is not the file's.
        let mut args = vec!["--context", "tenant=acme", "--key", "another"];
        args.extend_from_slice(mode);
        let out = unseal(&config, &sealed, &out_path, &args);
        refused_with(&out, mode, "sealed under key \"guarded\", not \"another\"");
    }
    // A file that is not sealed.
    let out = unseal(&config, &plain, &out_path, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("KBSE"), "{}", text(&out.stderr));
    // A key that is not a wrap-unwrap key.
    broker
        .keys("admin")
        .await
        .create_key(create(
            "plain-aes",
            pb::KeyAlgorithm::Aes256,
            pb::KeyPurpose::EncryptDecrypt,
            "softhsm",
        ))
        .await
        .unwrap();
    let out = seal(&config, "plain-aes", &plain, &dir.join("x.sealed"), &[]);
    assert_ne!(out.status.code(), Some(0));
    assert!(!dir.join("x.sealed").exists());
    assert_eq!(
        names_containing(&dir, "keybroker-tmp"),
        Vec::<String>::new()
    );
    // The good file still opens.
    ok(&unseal(
        &config,
        &sealed,
        &out_path,
        &["--context", "tenant=acme"],
    ));
    assert_eq!(std::fs::read(&out_path).unwrap(), content(200_000, 7));
}

#[tokio::test(flavor = "multi_thread")]
async fn rewrap_after_rotation_then_retire_the_old_version() {
    let broker = BrokerProcess::start();
    wrap_key(&broker, "archive", "softhsm").await;
    let config = broker.client_config("admin");
    let dir = broker.dir.path().join("vault");
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    let aside = broker.dir.path().join("aside");
    std::fs::create_dir(&aside).unwrap();
    let mut originals = Vec::new();
    for (i, name) in ["a", "b", "sub/c"].iter().enumerate() {
        let plain = aside.join(format!("{i}.plain"));
        let data = content(100_000 + i * 70_000, 40 + i as u64);
        std::fs::write(&plain, &data).unwrap();
        let sealed = dir.join(format!("{name}.sealed"));
        ok(&seal(&config, "archive", &plain, &sealed, &[]));
        originals.push((sealed, data));
    }
    // Not sealed: skipped.
    std::fs::write(dir.join("README"), "not sealed").unwrap();
    std::fs::write(dir.join("sub/empty"), "").unwrap();
    // A copy of a file as it was sealed, kept out of the rewrap.
    let stale = aside.join("a.sealed.stale");
    std::fs::copy(&originals[0].0, &stale).unwrap();

    // Nothing to do before a rotation.
    let out = ok(&cli(&config, "rewrap", &[s(&dir), "--recursive"]));
    assert!(
        out.contains("rewrapped 0, already current 3, skipped 2 (not sealed), failed 0"),
        "{out}"
    );
    ok(&cli(&config, "keys", &["rotate", "archive"]));
    // Without --recursive, only the top directory.
    let out = ok(&cli(&config, "rewrap", &[s(&dir)]));
    assert!(
        out.contains("rewrapped 2, already current 0, skipped 1 (not sealed), failed 0"),
        "{out}"
    );
    let out = ok(&cli(&config, "rewrap", &[s(&dir), "--recursive", "--json"]));
    let summary: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(summary["rewrapped"], 1, "{out}");
    assert_eq!(summary["current"], 2, "{out}");
    assert_eq!(summary["skipped"], 2, "{out}");
    assert_eq!(summary["failed"].as_array().unwrap().len(), 0, "{out}");
    for (sealed, _) in &originals {
        let bytes = std::fs::read(sealed).unwrap();
        let (header, _) = sealed_format::Header::parse(&bytes).unwrap();
        assert_eq!(header.key_version(), 2, "{}", sealed.display());
    }

    broker
        .keys("admin")
        .await
        .retire_key_version(pb::KeyVersionRef {
            name: "archive".into(),
            version: 1,
        })
        .await
        .unwrap();
    for (sealed, data) in &originals {
        let out_path = aside.join("opened");
        for mode in [&[][..], &["--remote"][..]] {
            ok(&unseal(&config, sealed, &out_path, mode));
            assert!(std::fs::read(&out_path).unwrap() == *data);
        }
    }
    // The copy left behind names version 1, which is retired.
    for mode in [&[][..], &["--remote"][..]] {
        let out_path = aside.join("stale.out");
        let out = unseal(&config, &stale, &out_path, mode);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains("version 1 of key \"archive\" is retired"),
            "{mode:?}: {}",
            text(&out.stderr)
        );
        assert!(!out_path.exists());
    }
    // A rewrap that meets it fails, says why, and exits 1; the others are current.
    std::fs::copy(&stale, dir.join("stale.sealed")).unwrap();
    let out = cli(&config, "rewrap", &[s(&dir)]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout)
            .contains("rewrapped 0, already current 2, skipped 1 (not sealed), failed 1"),
        "{}",
        text(&out.stdout)
    );
    assert!(
        text(&out.stderr).contains("stale.sealed") && text(&out.stderr).contains("retired"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        std::fs::read(dir.join("stale.sealed")).unwrap(),
        std::fs::read(&stale).unwrap()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tpm_key_seals_and_unseals() {
    let broker = BrokerProcess::start();
    wrap_key(&broker, "tpm-files", "swtpm").await;
    let config = broker.client_config("admin");
    let dir = broker.dir.path().join("data");
    std::fs::create_dir(&dir).unwrap();
    round_trips(&config, "tpm-files", &dir, &[0, 65537, 1 << 20], &[]);
}
