//! End to end: `keybroker kms-plugin` as kube-apiserver sees it. A real broker on
//! SoftHSM2, the plugin as its own process on a unix socket, and the Kubernetes KMS v2
//! client generated from the upstream proto: Status, Encrypt and Decrypt; a tampered
//! ciphertext and another key's `key_id` refused; after a rotation, the new `key_id`, and
//! the old ciphertext still opening.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{BrokerProcess, create, eventually, keybroker_binary, terminate};
use hyper_util::rt::TokioIo;
use keybroker_api::kms_v2 as kms;
use keybroker_api::v1 as pb;
use kms::key_management_service_client::KeyManagementServiceClient;
use tonic::transport::{Channel, Endpoint};

/// The plugin process, stopped (SIGTERM, then waited for) when dropped.
struct Plugin(Child);

impl Drop for Plugin {
    fn drop(&mut self) {
        if self.0.try_wait().unwrap().is_none() {
            terminate(&mut self.0);
        }
    }
}

fn spawn_plugin(config: &Path, socket: &Path, key: &str, log: &Path) -> Plugin {
    let log = std::fs::File::create(log).unwrap();
    let child = Command::new(keybroker_binary(false))
        .args(["kms-plugin", "--client-config"])
        .arg(config)
        .arg("--socket")
        .arg(socket)
        .args(["--key", key, "--context", "cluster=test-cluster"])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    Plugin(child)
}

/// A KMS v2 client over the unix socket at `path`, as kube-apiserver connects.
async fn kms_client(path: &Path) -> KeyManagementServiceClient<Channel> {
    let path = path.to_path_buf();
    let channel = Endpoint::try_from("http://kms.invalid")
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_: http::Uri| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        }))
        .await
        .unwrap();
    KeyManagementServiceClient::new(channel)
}

async fn status(client: &mut KeyManagementServiceClient<Channel>) -> kms::StatusResponse {
    client
        .status(kms::StatusRequest {})
        .await
        .unwrap()
        .into_inner()
}

async fn encrypt(
    client: &mut KeyManagementServiceClient<Channel>,
    plaintext: &[u8],
) -> kms::EncryptResponse {
    client
        .encrypt(kms::EncryptRequest {
            plaintext: plaintext.to_vec(),
            uid: "uid-encrypt".into(),
        })
        .await
        .unwrap()
        .into_inner()
}

async fn decrypt(
    client: &mut KeyManagementServiceClient<Channel>,
    ciphertext: &[u8],
    key_id: &str,
) -> Result<Vec<u8>, tonic::Status> {
    client
        .decrypt(kms::DecryptRequest {
            ciphertext: ciphertext.to_vec(),
            uid: "uid-decrypt".into(),
            key_id: key_id.into(),
            annotations: Default::default(),
        })
        .await
        .map(|r| r.into_inner().plaintext.clone())
}

#[tokio::test(flavor = "multi_thread")]
async fn kms_plugin_serves_kube_apiserver_over_a_unix_socket() {
    let broker = BrokerProcess::start();
    let mut admin = broker.keys("admin").await;
    admin
        .create_key(create(
            "k8s-secrets",
            pb::KeyAlgorithm::Aes256,
            pb::KeyPurpose::WrapUnwrap,
            "softhsm",
        ))
        .await
        .unwrap();
    let config = broker.client_config("admin");
    let run = broker.dir.path().join("run");
    std::fs::create_dir(&run).unwrap();
    let socket = run.join("kms.sock");
    let log = broker.dir.path().join("kms-plugin.log");
    let mut plugin = spawn_plugin(&config, &socket, "k8s-secrets", &log);
    assert!(
        eventually(Duration::from_secs(120), || {
            let socket = socket.clone();
            async move { socket.exists() }
        })
        .await,
        "no socket: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let meta = std::fs::metadata(&socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    // Nothing is left of the private directory the socket was bound in.
    assert_eq!(std::fs::read_dir(&run).unwrap().count(), 1);

    let mut client = kms_client(&socket).await;
    let st = status(&mut client).await;
    assert_eq!(st.version, "v2");
    assert_eq!(st.healthz, "ok");
    assert_eq!(st.key_id, "k8s-secrets:v1");

    // A data-key seed, as the API server sends it.
    let seed: Vec<u8> = (0u8..32).collect();
    let first = encrypt(&mut client, &seed).await;
    assert_eq!(first.key_id, "k8s-secrets:v1");
    assert_eq!(&first.ciphertext[..4], b"KBSE");
    // The header (9 + 72 bytes: the name, the version, the chunk size, the nonce prefix,
    // the RFC 5649 wrapping of 40 bytes) and one chunk of 32 + 16: far below 1 kB.
    assert_eq!(first.ciphertext.len(), 129);
    assert_eq!(
        decrypt(&mut client, &first.ciphertext, &first.key_id)
            .await
            .unwrap(),
        seed
    );

    // A flipped byte in the chunk, or in the wrapped key: refused.
    let mut tampered = first.ciphertext.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 0x01;
    let refused = decrypt(&mut client, &tampered, &first.key_id)
        .await
        .unwrap_err();
    assert!(
        refused.message().contains("failed authentication"),
        "{refused:?}"
    );
    let mut tampered = first.ciphertext.clone();
    let in_header = first.ciphertext.len() - 48 - 10;
    tampered[in_header] ^= 0x01;
    assert!(
        decrypt(&mut client, &tampered, &first.key_id)
            .await
            .is_err()
    );
    // Another key's key_id, or one that disagrees with the envelope: refused as such.
    let refused = decrypt(&mut client, &first.ciphertext, "other-key:v1")
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(
        refused.message().contains("this plugin serves key"),
        "{refused:?}"
    );
    let refused = decrypt(&mut client, &first.ciphertext, "k8s-secrets:v2")
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");

    // A disabled key is unhealthy, with the reason; enabled again, healthy.
    let key = |name: &str| pb::KeyRef { name: name.into() };
    admin.disable_key(key("k8s-secrets")).await.unwrap();
    let st = status(&mut client).await;
    assert_ne!(st.healthz, "ok");
    assert!(st.healthz.contains("not enabled"), "{}", st.healthz);
    assert_eq!(st.key_id, "k8s-secrets:v1");
    admin.enable_key(key("k8s-secrets")).await.unwrap();
    assert_eq!(status(&mut client).await.healthz, "ok");

    // Rotation: Status reports the new key_id, new seeds are sealed under it, and the
    // old ciphertext still opens.
    admin.rotate_key(key("k8s-secrets")).await.unwrap();
    let st = status(&mut client).await;
    assert_eq!(st.healthz, "ok");
    assert_eq!(st.key_id, "k8s-secrets:v2");
    let second = encrypt(&mut client, &seed).await;
    assert_eq!(second.key_id, "k8s-secrets:v2");
    assert_eq!(
        decrypt(&mut client, &first.ciphertext, &first.key_id)
            .await
            .unwrap(),
        seed
    );
    assert_eq!(
        decrypt(&mut client, &second.ciphertext, &second.key_id)
            .await
            .unwrap(),
        seed
    );

    // A second plugin on the same socket is refused while the first serves.
    let out = Command::new(keybroker_binary(false))
        .args(["kms-plugin", "--client-config"])
        .arg(&config)
        .arg("--socket")
        .arg(&socket)
        .args(["--key", "k8s-secrets"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("another process is serving"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A TPM key: its sealed blob is larger than an HSM's wrapping, still below 1 kB.
    admin
        .create_key(create(
            "k8s-tpm",
            pb::KeyAlgorithm::Aes256,
            pb::KeyPurpose::WrapUnwrap,
            "swtpm",
        ))
        .await
        .unwrap();
    let tpm_socket = run.join("kms-tpm.sock");
    let _tpm_plugin = spawn_plugin(
        &config,
        &tpm_socket,
        "k8s-tpm",
        &broker.dir.path().join("kms-tpm.log"),
    );
    assert!(
        eventually(Duration::from_secs(120), || {
            let socket = tpm_socket.clone();
            async move { socket.exists() }
        })
        .await
    );
    let mut tpm = kms_client(&tpm_socket).await;
    let st = status(&mut tpm).await;
    assert_eq!(
        (st.healthz.as_str(), st.key_id.as_str()),
        ("ok", "k8s-tpm:v1")
    );
    let sealed = encrypt(&mut tpm, &seed).await;
    assert_eq!(sealed.key_id, "k8s-tpm:v1");
    assert!(
        sealed.ciphertext.len() < 1024,
        "{}",
        sealed.ciphertext.len()
    );
    eprintln!(
        "TPM ciphertext of a 32-byte seed: {} bytes",
        sealed.ciphertext.len()
    );
    assert_eq!(
        decrypt(&mut tpm, &sealed.ciphertext, &sealed.key_id)
            .await
            .unwrap(),
        seed
    );
    // Each plugin serves only its own key.
    let refused = decrypt(&mut tpm, &first.ciphertext, &first.key_id)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);

    // SIGTERM: the plugin stops and removes its socket.
    terminate(&mut plugin.0);
    assert!(!socket.exists());
    // Plaintext never reaches the log.
    let logged = std::fs::read(&log).unwrap();
    assert!(!logged.windows(seed.len()).any(|w| w == seed.as_slice()));
}
