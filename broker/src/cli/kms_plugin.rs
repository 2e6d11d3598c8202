//! `keybroker kms-plugin`: a Kubernetes KMS v2 plugin (docs/kms-plugin.md). It serves
//! `v2.KeyManagementService` to kube-apiserver on a unix socket and seals each of the API
//! server's data-key seeds in the broker (`Seal`, `Unseal`) under one wrap-unwrap key,
//! over the client configuration's mTLS channel.
//!
//! `key_id` is `NAME:vN`, the key and the version that wraps the seed. `Status` reports
//! the primary's, so a rotation shows the API server a new `key_id` and it makes a new
//! seed; older ciphertexts keep opening until their version is retired.

use std::collections::HashMap;
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use clap::Args;
use keybroker_api::kms_v2 as kms;
use keybroker_api::v1 as pb;
use kms::key_management_service_server::{KeyManagementService, KeyManagementServiceServer};
use pb::key_service_client::KeyServiceClient;
use sealed_format::Header;
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use super::CliError;
use super::client::ClientConfig;

/// The API version `Status` reports.
const API_VERSION: &str = "v2";
/// kube-apiserver refuses a ciphertext of 1 kB or more (the v2 API's `EncryptResponse`).
const MAX_CIPHERTEXT: usize = 1024;
/// The encryption context entry of `Status`'s probe, so that a probe envelope is never
/// taken for the API server's.
const PROBE_CONTEXT: (&str, &str) = ("keybroker-kms-plugin", "status-probe");

/// `keybroker kms-plugin`.
#[derive(Debug, Args)]
pub struct KmsPluginArgs {
    /// The unix socket to serve on: kube-apiserver's `endpoint: unix://PATH`. Its
    /// directory must exist; the socket is made owner-only (0600) and removed on exit.
    #[arg(long, value_name = "PATH")]
    pub socket: PathBuf,
    /// The wrap-unwrap key that seals the API server's data-key seeds.
    #[arg(long)]
    pub key: String,
    /// An encryption context entry, KEY=VALUE (repeatable), bound to every ciphertext
    /// (the cluster's name, say); decryption needs the same entries.
    #[arg(long = "context", value_name = "KEY=VALUE", value_parser = parse_entry)]
    pub context: Vec<(String, String)>,
}

fn parse_entry(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| "expected KEY=VALUE".to_string())
}

/// Runs the plugin until SIGINT or SIGTERM.
pub async fn run(args: KmsPluginArgs, client: &ClientConfig) -> Result<(), CliError> {
    let mut context = HashMap::new();
    let mut checked = sealed_format::EncryptionContext::new();
    for (k, v) in &args.context {
        if context.insert(k.clone(), v.clone()).is_some() {
            return Err(CliError::Usage(format!("--context {k} is given twice")));
        }
        checked
            .insert(k.clone(), v.clone())
            .map_err(|e| CliError::Usage(format!("--context: {e}")))?;
    }
    let mut keys = KeyServiceClient::new(client.connect().await?);
    let key = keys
        .get_key(pb::KeyRef {
            name: args.key.clone(),
        })
        .await?
        .into_inner();
    if key.purpose != pb::KeyPurpose::WrapUnwrap as i32 {
        return Err(CliError::Usage(format!(
            "{} is not a wrap-unwrap key (create one with `keys create NAME --algorithm \
             aes-256 --purpose wrap`)",
            args.key
        )));
    }
    let plugin = Plugin {
        keys,
        key: args.key.clone(),
        context,
        last_key_id: Arc::new(Mutex::new(key_id(&args.key, key.primary_version))),
    };
    let mut socket = Socket::bind(&args.socket)?;
    tracing::info!(socket = %args.socket.display(), key = %args.key, "KMS v2 plugin serving");
    eprintln!(
        "keybroker: KMS v2 plugin serving {} on {}",
        args.key,
        args.socket.display()
    );
    let served = tonic::transport::Server::builder()
        .add_service(KeyManagementServiceServer::new(plugin))
        .serve_with_incoming_shutdown(
            UnixListenerStream::new(socket.listener()?),
            super::shutdown_signal(),
        )
        .await;
    drop(socket);
    served.map_err(|e| CliError::Serve(format!("the KMS plugin stopped: {e}")))
}

/// `NAME:vN`.
fn key_id(name: &str, version: u32) -> String {
    format!("{name}:v{version}")
}

/// The key name and version of a `key_id`.
fn parse_key_id(key_id: &str) -> Option<(&str, u32)> {
    let (name, version) = key_id.rsplit_once(":v")?;
    Some((name, version.parse().ok()?))
}

/// The socket, bound owner-only from the start, and removed when dropped if it is
/// still ours.
struct Socket {
    path: PathBuf,
    listener: Option<std::os::unix::net::UnixListener>,
    /// Device and inode of the socket this process bound.
    id: (u64, u64),
}

impl Socket {
    /// Binds in a new owner-only directory beside `path`, narrows the socket to 0600,
    /// and renames it to `path`: no other user can connect at any moment. A stale socket
    /// at `path` (nothing answers) is replaced; a live one, or another kind of file, is
    /// refused.
    fn bind(path: &Path) -> Result<Socket, CliError> {
        let shown = path.display();
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if !meta.file_type().is_socket() {
                return Err(CliError::Usage(format!(
                    "{shown} exists and is not a socket"
                )));
            }
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(CliError::Usage(format!(
                    "{shown}: another process is serving on this socket"
                )));
            }
            std::fs::remove_file(path)
                .map_err(|e| CliError::Serve(format!("cannot remove stale {shown}: {e}")))?;
        }
        let dir = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        let private = tempfile::Builder::new()
            .prefix(".keybroker-kms-")
            .tempdir_in(dir)
            .map_err(|e| CliError::Serve(format!("cannot bind {shown}: {}: {e}", dir.display())))?;
        let staged = private.path().join("kms.sock");
        let fail = |e: std::io::Error| CliError::Serve(format!("cannot bind {shown}: {e}"));
        let listener = std::os::unix::net::UnixListener::bind(&staged).map_err(fail)?;
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o600)).map_err(fail)?;
        std::fs::rename(&staged, path).map_err(fail)?;
        let meta = std::fs::symlink_metadata(path).map_err(fail)?;
        listener.set_nonblocking(true).map_err(fail)?;
        Ok(Socket {
            path: path.to_path_buf(),
            listener: Some(listener),
            id: (meta.dev(), meta.ino()),
        })
    }

    fn listener(&mut self) -> Result<UnixListener, CliError> {
        let listener = self
            .listener
            .take()
            .ok_or_else(|| CliError::Serve("the socket is already being served".into()))?;
        UnixListener::from_std(listener)
            .map_err(|e| CliError::Serve(format!("{}: {e}", self.path.display())))
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        let ours = std::fs::symlink_metadata(&self.path)
            .map(|m| (m.dev(), m.ino()) == self.id)
            .unwrap_or(false);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The service: the broker's client, the key and the context.
#[derive(Debug, Clone)]
struct Plugin {
    keys: KeyServiceClient<Channel>,
    key: String,
    context: HashMap<String, String>,
    /// The `key_id` of the last healthy `Status`, reported while unhealthy (it must not
    /// be empty).
    last_key_id: Arc<Mutex<String>>,
}

impl Plugin {
    /// Healthy when the key is enabled, and a probe sealed under its primary opens again
    /// to the same bytes; then the `key_id` of that primary.
    async fn probe(&self) -> Result<String, String> {
        let mut keys = self.keys.clone();
        let key = keys
            .get_key(pb::KeyRef {
                name: self.key.clone(),
            })
            .await
            .map_err(|s| format!("GetKey {}: {}", self.key, s.message()))?
            .into_inner();
        if key.state != pb::KeyState::Enabled as i32 {
            return Err(format!("key {} is not enabled", self.key));
        }
        let probe = b"keybroker kms-plugin status probe".to_vec();
        let context: HashMap<String, String> =
            [(PROBE_CONTEXT.0.to_string(), PROBE_CONTEXT.1.to_string())].into();
        let sealed = keys
            .seal(pb::SealRequest {
                name: self.key.clone(),
                plaintext: probe.clone(),
                context: context.clone(),
                chunk_size: 0,
            })
            .await
            .map_err(|s| format!("Seal {}: {}", self.key, s.message()))?
            .into_inner();
        let opened = keys
            .unseal(pb::UnsealRequest {
                name: self.key.clone(),
                sealed: sealed.sealed,
                context,
            })
            .await
            .map_err(|s| format!("Unseal {}: {}", self.key, s.message()))?
            .into_inner();
        if opened.plaintext != probe {
            return Err("the status probe did not open to what was sealed".into());
        }
        Ok(key_id(&self.key, sealed.key_version))
    }
}

/// A broker's refusal, passed on with its code.
fn from_broker(call: &str, status: &Status) -> Status {
    Status::new(
        status.code(),
        format!("keybroker {call}: {}", status.message()),
    )
}

#[tonic::async_trait]
impl KeyManagementService for Plugin {
    async fn status(
        &self,
        _request: Request<kms::StatusRequest>,
    ) -> Result<Response<kms::StatusResponse>, Status> {
        let (healthz, key_id) = match self.probe().await {
            Ok(key_id) => {
                if let Ok(mut last) = self.last_key_id.lock() {
                    last.clone_from(&key_id);
                }
                ("ok".to_string(), key_id)
            }
            Err(why) => {
                tracing::warn!(reason = %why, "KMS plugin unhealthy");
                let last = self
                    .last_key_id
                    .lock()
                    .map(|l| l.clone())
                    .unwrap_or_else(|_| key_id(&self.key, 0));
                (why, last)
            }
        };
        Ok(Response::new(kms::StatusResponse {
            version: API_VERSION.to_string(),
            healthz,
            key_id,
        }))
    }

    async fn encrypt(
        &self,
        request: Request<kms::EncryptRequest>,
    ) -> Result<Response<kms::EncryptResponse>, Status> {
        let mut request = request.into_inner();
        let reply = self
            .keys
            .clone()
            .seal(pb::SealRequest {
                name: self.key.clone(),
                // Both messages wipe their plaintext when dropped.
                plaintext: std::mem::take(&mut request.plaintext),
                context: self.context.clone(),
                chunk_size: 0,
            })
            .await
            .map_err(|s| from_broker("Seal", &s))?
            .into_inner();
        if reply.sealed.len() >= MAX_CIPHERTEXT {
            return Err(Status::internal(format!(
                "the sealed envelope is {} bytes; kube-apiserver takes less than {MAX_CIPHERTEXT}",
                reply.sealed.len()
            )));
        }
        tracing::debug!(uid = %request.uid, version = reply.key_version, "KMS encrypt");
        Ok(Response::new(kms::EncryptResponse {
            ciphertext: reply.sealed,
            key_id: key_id(&self.key, reply.key_version),
            annotations: HashMap::new(),
        }))
    }

    async fn decrypt(
        &self,
        request: Request<kms::DecryptRequest>,
    ) -> Result<Response<kms::DecryptResponse>, Status> {
        let request = request.into_inner();
        let Some((name, version)) = parse_key_id(&request.key_id) else {
            return Err(Status::invalid_argument(format!(
                "key_id {:?} is not NAME:vVERSION; this plugin serves key {}",
                request.key_id, self.key
            )));
        };
        if name != self.key {
            return Err(Status::invalid_argument(format!(
                "key_id {:?} names key {name:?}; this plugin serves key {:?}",
                request.key_id, self.key
            )));
        }
        let header = Header::parse(&request.ciphertext)
            .map_err(|e| Status::invalid_argument(format!("ciphertext: {e}")))?
            .0;
        if header.key_name() != self.key || header.key_version() != version {
            return Err(Status::invalid_argument(format!(
                "ciphertext: sealed under {}, but key_id says {:?}",
                key_id(header.key_name(), header.key_version()),
                request.key_id
            )));
        }
        let mut reply = self
            .keys
            .clone()
            .unseal(pb::UnsealRequest {
                name: self.key.clone(),
                sealed: request.ciphertext,
                context: self.context.clone(),
            })
            .await
            .map_err(|s| from_broker("Unseal", &s))?
            .into_inner();
        tracing::debug!(uid = %request.uid, version = reply.key_version, "KMS decrypt");
        Ok(Response::new(kms::DecryptResponse {
            plaintext: std::mem::take(&mut reply.plaintext),
        }))
    }
}
