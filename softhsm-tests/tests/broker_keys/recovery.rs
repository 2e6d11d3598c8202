//! Faults the broker recovers from by itself, with no restart: the token's files taken
//! away and put back, and a full disk under the store.

use std::path::{Path, PathBuf};
use std::time::Duration;

use keybroker_api::v1 as pb;
use pb::KeyAlgorithm as A;
use pb::KeyPurpose as P;
use tonic::Code;

use super::common::{BrokerProcess, create, eventually};
use super::sign_req;

/// Copies a directory tree (the token's files) as `cp -a` would.
fn copy_tree(from: &Path, to: &Path) {
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "cp -a {} {}",
        from.display(),
        to.display()
    );
}

fn entries(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn token_files_removed_and_restored_recover_without_a_restart() {
    let broker = BrokerProcess::start();
    let pid = broker.pid();
    let mut keys = broker.keys("admin").await;
    keys.create_key(create("ec", A::EcP256, P::SignVerify, "softhsm"))
        .await
        .unwrap();
    keys.create_key(create("aes", A::Aes256, P::EncryptDecrypt, "softhsm"))
        .await
        .unwrap();
    let sealed = keys
        .encrypt(pb::EncryptRequest {
            name: "aes".into(),
            plaintext: b"kept".to_vec(),
            aad: Vec::new(),
        })
        .await
        .unwrap()
        .into_inner();

    // An operator's restore drill gone wrong: the token directory is moved away...
    let tokens = broker.hsm.token_dir();
    let backup = broker.dir.path().join("token-backup");
    std::fs::create_dir(&backup).unwrap();
    for entry in entries(tokens) {
        copy_tree(&entry, &backup);
        std::fs::remove_dir_all(&entry).unwrap();
    }
    let err = keys
        .sign(sign_req("ec", b"m", pb::SignatureScheme::Default))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(
        err.message().contains("HSM token is unavailable"),
        "{err:?}"
    );

    // ... and put back. The broker serves again by itself.
    for entry in entries(&backup) {
        copy_tree(&entry, tokens);
    }
    let signs = eventually(Duration::from_secs(30), || {
        let mut keys = keys.clone();
        async move {
            keys.sign(sign_req("ec", b"m", pb::SignatureScheme::Default))
                .await
                .is_ok()
        }
    })
    .await;
    assert!(
        signs,
        "no recovery after the token came back: {}",
        broker.log()
    );
    let opened = keys
        .decrypt(pb::DecryptRequest {
            name: "aes".into(),
            ciphertext: sealed.ciphertext,
            aad: Vec::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(opened.plaintext, b"kept");
    keys.create_key(create("after", A::EcP256, P::SignVerify, "softhsm"))
        .await
        .unwrap();
    assert_eq!(broker.pid(), pid, "the broker recovered without a restart");
}

/// A wrapper that runs the broker in a mount namespace of its own (and a user namespace,
/// so that no root is needed), after `script` has set up its mounts.
fn in_own_mount_namespace(script: &str) -> Vec<String> {
    ["unshare", "-Urm", "--", "sh", "-c", script, "sh"]
        .map(String::from)
        .to_vec()
}

/// Fills the filesystem that holds `dir` with a file named `filler`; returns its path.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write as _;
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).unwrap();
    let block = vec![0u8; 64 * 1024];
    loop {
        match file.write(&block) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(28), "expected ENOSPC: {e}");
                break;
            }
        }
    }
    // Whatever is left is smaller than a block: take it too, a byte at a time.
    while file.write(&[0]).is_ok_and(|n| n == 1) {}
    path
}

/// Whether creating an EC key named `name` succeeds within `limit` (the name comes free).
async fn creates_within(
    keys: &pb::key_service_client::KeyServiceClient<tonic::transport::Channel>,
    name: &str,
    limit: Duration,
) -> bool {
    eventually(limit, || {
        let mut keys = keys.clone();
        let name = name.to_string();
        async move {
            keys.create_key(create(&name, A::EcP256, P::SignVerify, "softhsm"))
                .await
                .is_ok()
        }
    })
    .await
}

/// Restarts the broker with its store on a 4 MiB filesystem of its own: a tmpfs mounted
/// in a private mount namespace of the broker (no root needed), seeded with the store as
/// it is. Returns that filesystem's directory as seen from outside the namespace.
fn store_on_small_disk(broker: &mut BrokerProcess) -> PathBuf {
    let state = broker.dir.path().join("state");
    let small = broker.dir.path().join("small");
    std::fs::create_dir(&small).unwrap();
    let config = std::fs::read_to_string(broker.config_path()).unwrap();
    std::fs::write(
        broker.config_path(),
        config.replace("state/keybroker.db", "small/keybroker.db"),
    )
    .unwrap();
    let script = format!(
        "mount -t tmpfs -o size=4m tmpfs '{}' && cp -a '{}/.' '{}/' && exec \"$@\"",
        small.display(),
        state.display(),
        small.display()
    );
    broker.wrapper = in_own_mount_namespace(&script);
    broker.spawn();
    // The broker's view of that filesystem, from outside its namespace.
    PathBuf::from(format!("/proc/{}/root", broker.pid().unwrap()))
        .join(small.strip_prefix("/").unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_is_resource_exhausted_naming_the_store_and_recovers_when_space_returns() {
    let mut broker = BrokerProcess::start();
    let mut keys = broker.keys("admin").await;
    keys.create_key(create("before", A::EcP256, P::SignVerify, "softhsm"))
        .await
        .unwrap();
    broker.stop();
    let seen = store_on_small_disk(&mut broker);
    let mut keys = broker.keys("admin").await;
    keys.sign(sign_req("before", b"m", pb::SignatureScheme::Default))
        .await
        .unwrap();

    let filler = fill(&seen);
    let mut refused = None;
    for i in 0..50 {
        match keys
            .create_key(create(
                &format!("k{i}"),
                A::EcP256,
                P::SignVerify,
                "softhsm",
            ))
            .await
        {
            Ok(_) => continue,
            Err(e) => {
                refused = Some((format!("k{i}"), e));
                break;
            }
        }
    }
    let (name, err) = refused.expect("50 creations on a full disk all succeeded");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(
        err.message().contains("store") && err.message().contains("full"),
        "{err:?}"
    );
    // Reads go on while the disk is full.
    keys.sign(sign_req("before", b"m", pb::SignatureScheme::Default))
        .await
        .unwrap();

    // Space comes back: the refused name is free, and creation works, with no restart.
    std::fs::remove_file(&filler).unwrap();
    let created = creates_within(&keys, &name, Duration::from_secs(20)).await;
    assert!(
        created,
        "{name} stays blocked after space returned: {}",
        broker.log()
    );
    keys.sign(sign_req(&name, b"m", pb::SignatureScheme::Default))
        .await
        .unwrap();
    // Nothing the refusal left behind: every broker object on the token is a listed key.
    let listed = keys
        .list_keys(pb::ListKeysRequest::default())
        .await
        .unwrap()
        .into_inner()
        .keys
        .len();
    assert_eq!(
        broker.broker_objects().len(),
        listed,
        "{:?}",
        broker.broker_objects()
    );
}

/// The broker's log line when the store refuses to record a finished creation
/// (`broker/src/keys/change.rs`).
const UNDOING: &str = "the store refused a finished creation; undoing it";

#[tokio::test(flavor = "multi_thread")]
async fn a_disk_that_fills_while_a_key_is_generated_undoes_the_creation() {
    let mut broker = BrokerProcess::start();
    broker.stop();
    let seen = store_on_small_disk(&mut broker);
    let keys = broker.keys("admin").await;

    // The intent is written at once; an RSA-4096 key then takes SoftHSM2 seconds to make,
    // and the disk fills meanwhile, so the store cannot record the finished key. A
    // creation that beats the filler, or one refused before its intent, is tried again.
    let mut undone = None;
    for attempt in 0..6 {
        let name = format!("rsa{attempt}");
        let log_before = broker.log().len();
        let creating = tokio::spawn({
            let mut keys = keys.clone();
            let name = name.clone();
            async move {
                keys.create_key(create(&name, A::Rsa4096, P::SignVerify, "softhsm"))
                    .await
            }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        let filler = fill(&seen);
        let answer = creating.await.unwrap();
        if let Err(refused) = answer
            && broker.log()[log_before..].contains(UNDOING)
        {
            undone = Some((name, refused, filler));
            break;
        }
        std::fs::remove_file(&filler).unwrap();
    }
    let (name, err, filler) = undone.expect("no creation was refused after its key was made");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    // The object is gone already, while the disk is still full: no orphan, even if the
    // broker stopped now.
    assert!(
        broker.broker_objects().is_empty(),
        "left on the token: {:?}",
        broker.broker_objects()
    );

    // Space returns: the intent is dropped in the background, and the name is free.
    std::fs::remove_file(&filler).unwrap();
    let created = creates_within(&keys, &name, Duration::from_secs(30)).await;
    assert!(created, "{name} stays blocked: {}", broker.log());
    assert_eq!(
        broker.broker_objects().len(),
        1,
        "{:?}",
        broker.broker_objects()
    );
}

/// Runs `mount` inside the broker's mount namespace.
fn mount_in(broker: &BrokerProcess, args: &[&str]) {
    let pid = broker.pid().unwrap().to_string();
    let status = std::process::Command::new("nsenter")
        .args(["-t", &pid, "-U", "-m", "--", "mount"])
        .args(args)
        .status()
        .unwrap();
    assert!(status.success(), "mount {args:?} in the broker's namespace");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_read_only_token_is_unavailable_naming_the_call_and_recovers_when_writable() {
    let mut broker = BrokerProcess::start();
    broker.stop();
    // The token directory becomes a mount point of the broker's own, which the test can
    // make read-only and writable again from outside.
    let tokens = broker.hsm.token_dir().display().to_string();
    let script = format!("mount --bind '{tokens}' '{tokens}' && exec \"$@\"");
    broker.wrapper = in_own_mount_namespace(&script);
    broker.spawn();
    let mut keys = broker.keys("admin").await;
    keys.create_key(create("before", A::EcP256, P::SignVerify, "softhsm"))
        .await
        .unwrap();

    mount_in(&broker, &["-o", "remount,bind,ro", &tokens]);
    let err = keys
        .create_key(create("refused", A::EcP256, P::SignVerify, "softhsm"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(
        err.message().contains("C_GenerateKeyPair") && err.message().contains("read-only"),
        "{err:?}"
    );
    keys.sign(sign_req("before", b"m", pb::SignatureScheme::Default))
        .await
        .unwrap();

    mount_in(&broker, &["-o", "remount,bind,rw", &tokens]);
    keys.create_key(create("refused", A::EcP256, P::SignVerify, "softhsm"))
        .await
        .unwrap();
    keys.sign(sign_req("refused", b"m", pb::SignatureScheme::Default))
        .await
        .unwrap();
}
