//! The server side of the TLS configuration, kept in one place so that every listener gets
//! the same policy: TLS 1.3 only, aws-lc-rs with X25519MLKEM768 preferred, a client
//! certificate required and verified against the configured CA bundles (and CRLs, with the
//! broker's own rules: see `super::verifier`), ALPN `h2`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::CertificateRevocationListDer;
use rustls_pki_types::pem::PemObject;

use super::files::{read_file, read_private_file};
use super::verifier::ClientVerifier;
use super::{TlsError, crypto_provider, parse_certs, parse_key};

/// A ready server TLS configuration; cheap to clone (clones share the verifier, so
/// [`ServerTls::reload_crls`] on one reaches every listener).
#[derive(Clone)]
pub struct ServerTls {
    config: Arc<ServerConfig>,
    verifier: Arc<ClientVerifier>,
    crl_files: Vec<PathBuf>,
}

/// How client certificates are checked beyond chaining to a configured CA.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientAuthOptions {
    /// Accept chains with intermediate certificates (`[server] allow_client_intermediates`).
    pub allow_intermediates: bool,
    /// CRL files, PEM or DER (`[server] client_crls`), re-read by [`ServerTls::reload_crls`].
    pub crl_files: Vec<PathBuf>,
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
            (cert_chain_pem, "server certificate chain"),
            (key_pem, "server private key"),
            &cas,
            false,
            Vec::new(),
        )
    }

    /// Like [`ServerTls::from_pem`], with CRLs (PEM or DER) and the intermediate rule given.
    ///
    /// # Errors
    /// As [`ServerTls::from_pem`], and [`TlsError::Pem`] for a CRL that does not parse.
    pub fn from_pem_with(
        cert_chain_pem: &[u8],
        key_pem: &[u8],
        client_ca_pems: &[Vec<u8>],
        allow_intermediates: bool,
        crls: &[Vec<u8>],
    ) -> Result<ServerTls, TlsError> {
        let cas = client_ca_pems
            .iter()
            .enumerate()
            .map(|(i, pem)| (format!("client CA bundle #{}", i + 1), pem.as_slice()))
            .collect::<Vec<_>>();
        let crls = parse_crl_inputs(
            crls.iter()
                .enumerate()
                .map(|(i, c)| (format!("client CRL #{}", i + 1), c.as_slice())),
        )?;
        build(
            (cert_chain_pem, "server certificate chain"),
            (key_pem, "server private key"),
            &cas,
            allow_intermediates,
            crls,
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
        ServerTls::from_files_with(cert, key, client_cas, &ClientAuthOptions::default())
    }

    /// Like [`ServerTls::from_files`], with the client-certificate options of `[server]`.
    ///
    /// # Errors
    /// [`TlsError`] naming the file and what is wrong with it.
    pub fn from_files_with(
        cert: &Path,
        key: &Path,
        client_cas: &[PathBuf],
        options: &ClientAuthOptions,
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
        let mut tls = build(
            (
                &cert_pem,
                &format!("server certificate chain {}", cert.display()),
            ),
            (&key_pem, &format!("server private key {}", key.display())),
            &cas,
            options.allow_intermediates,
            read_crl_files(&options.crl_files)?,
        )?;
        tls.crl_files = options.crl_files.clone();
        Ok(tls)
    }

    /// Re-reads the CRL files this configuration was built with and puts them in force for
    /// new handshakes; returns how many lists are now in force. Established connections are
    /// not re-checked here (the per-call checks see only certificate validity).
    ///
    /// # Errors
    /// [`TlsError`] naming the file that cannot be read or parsed; the lists in force stay.
    pub fn reload_crls(&self) -> Result<usize, TlsError> {
        let crls = read_crl_files(&self.crl_files)?;
        let count = crls.len();
        self.verifier.set_crls(crls)?;
        Ok(count)
    }

    /// Puts `crls` (PEM or DER each) in force for new handshakes, replacing any others.
    ///
    /// # Errors
    /// [`TlsError::Pem`] for a CRL that does not parse; the lists in force stay.
    pub fn set_crls(&self, crls: &[Vec<u8>]) -> Result<(), TlsError> {
        let parsed = parse_crl_inputs(
            crls.iter()
                .enumerate()
                .map(|(i, c)| (format!("client CRL #{}", i + 1), c.as_slice())),
        )?;
        self.verifier.set_crls(parsed)
    }

    /// Trusts client certificates issued by the broker's workload CA: `anchors` are its
    /// CA certificates (DER), replacing those trusted before.
    ///
    /// # Errors
    /// A certificate rustls cannot use as a trust anchor; the anchors in force stay.
    pub fn set_workload_anchors(&self, anchors: &[Vec<u8>]) -> Result<(), TlsError> {
        self.verifier.set_workload_anchors(anchors)
    }

    /// The CRL files re-read by [`ServerTls::reload_crls`].
    pub fn crl_files(&self) -> &[PathBuf] {
        &self.crl_files
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

fn read_crl_files(
    paths: &[PathBuf],
) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    let contents = paths
        .iter()
        .map(|path| read_file(path).map(|bytes| (format!("client CRL {}", path.display()), bytes)))
        .collect::<Result<Vec<_>, _>>()?;
    parse_crl_inputs(
        contents
            .iter()
            .map(|(what, b)| (what.clone(), b.as_slice())),
    )
}

/// CRLs from PEM (any number of `X509 CRL` blocks) or one DER list each.
fn parse_crl_inputs<'a>(
    inputs: impl Iterator<Item = (String, &'a [u8])>,
) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    let mut crls = Vec::new();
    for (what, bytes) in inputs {
        if bytes.starts_with(b"-----") {
            let found = CertificateRevocationListDer::pem_slice_iter(bytes)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| TlsError::Pem {
                    what: what.clone(),
                    reason: e.to_string(),
                })?;
            if found.is_empty() {
                return Err(TlsError::Pem {
                    what,
                    reason: "no X509 CRL block found".to_string(),
                });
            }
            crls.extend(found);
        } else {
            crls.push(CertificateRevocationListDer::from(bytes.to_vec()));
        }
    }
    Ok(crls)
}

fn build(
    (cert_pem, cert_what): (&[u8], &str),
    (key_pem, key_what): (&[u8], &str),
    client_cas: &[(String, &[u8])],
    allow_intermediates: bool,
    crls: Vec<CertificateRevocationListDer<'static>>,
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
    let mut root_ders = Vec::new();
    for (what, pem) in client_cas {
        for cert in parse_certs(pem, what)? {
            roots.add(cert.clone()).map_err(|source| TlsError::Config {
                what: what.clone(),
                source,
            })?;
            root_ders.push(cert);
        }
    }
    let provider = Arc::new(crypto_provider());
    let verifier = Arc::new(ClientVerifier::new(
        root_ders,
        roots,
        allow_intermediates,
        crls,
        provider.clone(),
    )?);
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|source| TlsError::Config {
            what: "TLS versions".to_string(),
            source,
        })?
        .with_client_cert_verifier(verifier.clone())
        .with_single_cert(chain, key)
        .map_err(|source| TlsError::Config {
            what: format!("{cert_what} with {key_what}"),
            source,
        })?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(ServerTls {
        config: Arc::new(config),
        verifier,
        crl_files: Vec::new(),
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
            matches!(
                open,
                TlsError::SecretFile(secret_file::SecretFileError::TooOpen { mode: 0o644, .. })
            ),
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
