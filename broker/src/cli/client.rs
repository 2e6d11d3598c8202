//! How CLI commands reach a running broker: a small TOML file with the endpoint and the
//! mTLS material, named by `--client-config` or `KEYBROKER_CLIENT_CONFIG`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tonic::transport::Channel;

use super::CliError;

/// A client configuration file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// `https://host:port`.
    pub endpoint: String,
    /// CA bundle that signed the server's certificate.
    pub ca: PathBuf,
    /// Client certificate (its URI SAN is the caller's identity).
    pub cert: PathBuf,
    /// Client private key.
    pub key: PathBuf,
}

impl ClientConfig {
    /// Reads a client configuration; relative paths are taken from its directory.
    ///
    /// # Errors
    /// [`CliError::Usage`] naming the file and field.
    pub fn load(path: &Path) -> Result<ClientConfig, CliError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", path.display())))?;
        let de = toml::Deserializer::new(&text);
        let mut config: ClientConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            CliError::Usage(format!(
                "{}: {}: {}",
                path.display(),
                e.path(),
                e.inner().message().trim()
            ))
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [&mut config.ca, &mut config.cert, &mut config.key] {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        Ok(config)
    }

    /// Connects (TCP, TLS, HTTP/2). The private key is read as a secret file: it must not
    /// be open to group or others.
    ///
    /// # Errors
    /// Unreadable files, a key file open to others, or the broker cannot be reached or is
    /// not trusted.
    pub async fn connect(&self) -> Result<Channel, CliError> {
        let read = |p: &Path| {
            std::fs::read(p)
                .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", p.display())))
        };
        let (ca, cert) = (read(&self.ca)?, read(&self.cert)?);
        let key = secret_file::SecretFile::read(&self.key)
            .map_err(|e| CliError::Usage(format!("client key: {e}")))?;
        crate::tls::client_channel(&self.endpoint, &ca, &cert, key.bytes())
            .await
            .map_err(|e| CliError::Connect(e.to_string()))
    }
}
