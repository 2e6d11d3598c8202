//! The server side of the TLS configuration, kept in one place so that every listener gets
//! the same policy: TLS 1.3 only, aws-lc-rs with X25519MLKEM768 preferred, a client
//! certificate required and verified against the configured CA bundles, ALPN `h2`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

use super::files::{read_file, read_private_file};
use super::{TlsError, crypto_provider, parse_certs, parse_key};

/// A ready server TLS configuration; cheap to clone.
#[derive(Clone)]
pub struct ServerTls {
    config: Arc<ServerConfig>,
}

impl ServerTls {
    /// Builds the configuration from PEM: the server's certificate chain (leaf first), its
    /// private key, and one or more CA bundles (each may hold several certificates) that
    /// client certificates must chain to.
    ///
    /// # Errors
    /// [`TlsError`] when a PEM input is malformed or empty, there is no client CA, or rustls
    /// refuses the material (e.g. the key does not match the certificate).
    pub fn from_pem(
        cert_chain_pem: &[u8],
        key_pem: &[u8],
        client_ca_pems: &[Vec<u8>],
    ) -> Result<ServerTls, TlsError> {
        let cas = client_ca_pems
            .iter()
            .enumerate()
            .map(|(i, pem)| (format!("client CA bundle #{}", i + 1), pem.as_slice()))
            .collect::<Vec<_>>();
        build(
            cert_chain_pem,
            "server certificate chain",
            key_pem,
            "server private key",
            &cas,
        )
    }

    /// Like [`ServerTls::from_pem`], reading the files. Errors name the file. On Unix the key
    /// file must not be accessible by group or others.
    ///
    /// # Errors
    /// [`TlsError`] naming the file and what is wrong with it.
    pub fn from_files(
        cert: &Path,
        key: &Path,
        client_cas: &[PathBuf],
    ) -> Result<ServerTls, TlsError> {
        let cert_pem = read_file(cert)?;
        let key_pem = read_private_file(key)?;
        let ca_pems = client_cas
            .iter()
            .map(|path| read_file(path).map(|pem| (path, pem)))
            .collect::<Result<Vec<_>, _>>()?;
        let cas = ca_pems
            .iter()
            .map(|(path, pem)| {
                (
                    format!("client CA bundle {}", path.display()),
                    pem.as_slice(),
                )
            })
            .collect::<Vec<_>>();
        build(
            &cert_pem,
            &format!("server certificate chain {}", cert.display()),
            &key_pem,
            &format!("server private key {}", key.display()),
            &cas,
        )
    }

    /// The rustls configuration, for acceptors other than [`super::TlsIncoming`].
    pub fn config(&self) -> &Arc<ServerConfig> {
        &self.config
    }
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("versions", &"TLS1.3")
            .field("client_auth", &"required")
            .finish_non_exhaustive()
    }
}

fn build(
    cert_pem: &[u8],
    cert_what: &str,
    key_pem: &[u8],
    key_what: &str,
    client_cas: &[(String, &[u8])],
) -> Result<ServerTls, TlsError> {
    let chain = parse_certs(cert_pem, cert_what)?;
    let key = parse_key(key_pem, key_what)?;
    if client_cas.is_empty() {
        return Err(TlsError::Pem {
            what: "client CA bundles".to_string(),
            reason: "none given; client certificates cannot be verified".to_string(),
        });
    }
    let mut roots = RootCertStore::empty();
    for (what, pem) in client_cas {
        for cert in parse_certs(pem, what)? {
            roots.add(cert).map_err(|source| TlsError::Config {
                what: what.clone(),
                source,
            })?;
        }
    }
    let provider = Arc::new(crypto_provider());
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build()?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|source| TlsError::Config {
            what: "TLS versions".to_string(),
            source,
        })?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|source| TlsError::Config {
            what: format!("{cert_what} with {key_what}"),
            source,
        })?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(ServerTls {
        config: Arc::new(config),
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::tls::devpki::DevPki;

    fn set_mode(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn server_tls_from_files_names_the_bad_file() {
        let dir = tempfile::tempdir().unwrap();
        let pki = DevPki::generate("test.example", &[]).unwrap();
        pki.write_to(dir.path()).unwrap();
        let path = |name: &str| dir.path().join(name);
        let cas = [path("ca.pem")];
        ServerTls::from_files(&path("server.pem"), &path("server-key.pem"), &cas).unwrap();

        let missing = ServerTls::from_files(&path("nope.pem"), &path("server-key.pem"), &cas);
        assert!(matches!(&missing, Err(TlsError::Io { path: p, .. }) if p.ends_with("nope.pem")));

        set_mode(&path("server-key.pem"), 0o644);
        let open =
            ServerTls::from_files(&path("server.pem"), &path("server-key.pem"), &cas).unwrap_err();
        assert!(
            matches!(open, TlsError::Permissions { mode: 0o644, .. }),
            "{open}"
        );
        assert!(open.to_string().contains("server-key.pem"), "{open}");
        set_mode(&path("server-key.pem"), 0o600);

        std::fs::write(path("garbage.pem"), "not pem").unwrap();
        let garbage = ServerTls::from_files(
            &path("server.pem"),
            &path("server-key.pem"),
            &[path("garbage.pem")],
        )
        .unwrap_err();
        assert!(garbage.to_string().contains("garbage.pem"), "{garbage}");

        // The CA's key is not the server's.
        let mismatch =
            ServerTls::from_files(&path("server.pem"), &path("ca-key.pem"), &cas).unwrap_err();
        assert!(mismatch.to_string().contains("ca-key.pem"), "{mismatch}");

        assert!(
            ServerTls::from_pem(
                pki.server().cert_pem().as_bytes(),
                pki.server().key_pem().as_bytes(),
                &[]
            )
            .is_err()
        );
    }
}
