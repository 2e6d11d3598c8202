//! TLS 1.3 with client certificates: the broker's only transport.
//!
//! Every caller authenticates with an X.509 client certificate whose single `spiffe://` URI
//! SAN is its identity (see [`crate::identity`]). This module owns everything between the TCP
//! socket and tonic:
//!
//! * [`ServerTls`]: the rustls server configuration (TLS 1.3 only, aws-lc-rs, post-quantum
//!   hybrid key exchange first, client certificates required and verified, ALPN `h2`);
//! * the client-certificate verifier (`verifier`): no intermediates unless configured, exactly
//!   one URI SAN, CRLs that SIGHUP reloads ([`ServerTls::reload_crls`]);
//! * [`TlsIncoming`]: the accept loop handed to
//!   `tonic::transport::Server::serve_with_incoming_shutdown`, with handshakes in their own
//!   tasks under a deadline and a per-address budget (`budget`), a cap on established
//!   connections, and an idle timeout ([`ConnectionActivity`]);
//! * [`PeerInfo`] / [`peer`]: what a handler learns about the caller, and
//!   [`PeerInfo::check_validity`], which the request stack calls on every call;
//! * [`CertificateValidityLayer`] and [`ConnectionActivityLayer`]: the two per-call
//!   checks the transport needs from the request stack;
//! * [`client_endpoint`] / [`client_channel`]: the matching client side;
//! * [`devpki`]: a throwaway CA for development and tests.
//!
//! One crypto provider (aws-lc-rs) is used throughout and installed explicitly by
//! [`install_crypto_provider`], so nothing depends on rustls guessing from crate features.

pub mod devpki;

mod activity;
mod budget;
mod client;
mod files;
mod incoming;
mod layers;
mod peer;
mod server;
mod verifier;

use std::path::PathBuf;

use rustls::crypto::CryptoProvider;
use rustls::crypto::aws_lc_rs::{self, kx_group};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

pub use activity::{CallGuard, ConnectionActivity};
pub use client::{client_channel, client_endpoint};
pub use incoming::{ConnectionLimits, TlsConnection, TlsIncoming};
pub use layers::{CertificateValidityLayer, ConnectionActivityLayer};
pub use peer::{
    CertificateValidityError, IdentityError, PeerInfo, certificate_identity, der_identity, peer,
};
pub use server::{ClientAuthOptions, ServerTls};

/// Reads a file of secret material (a private key, an auth value) with the one secret-file
/// reader ([`secret_file::SecretFile`]): a regular file that group and others cannot
/// access, checked on the opened handle, read into a zeroizing buffer under a size cap.
///
/// # Errors
/// [`TlsError::SecretFile`] naming the file and what is wrong with it.
pub fn read_secret_file(path: &std::path::Path) -> Result<zeroize::Zeroizing<Vec<u8>>, TlsError> {
    files::read_private_file(path)
}

/// Why TLS material could not be loaded or a TLS connection could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating-system error.
        source: std::io::Error,
    },
    /// A private key file is accessible by group or others, or the directory meant to hold
    /// one is writable by them.
    #[error(
        "{}: too open for private key material (mode {mode:03o}); chmod {want:o} it",
        path.display()
    )]
    Permissions {
        /// The file or directory.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
        /// The mode it should have.
        want: u32,
    },
    /// A private key file was refused by the secret-file reader (open to others, not a
    /// regular file, too large) or could not be read.
    #[error(transparent)]
    SecretFile(#[from] secret_file::SecretFileError),
    /// PEM input that is malformed or holds nothing usable.
    #[error("{what}: {reason}")]
    Pem {
        /// What was being read, e.g. "client CA bundle /etc/keybroker/ca.pem".
        what: String,
        /// What is wrong with it.
        reason: String,
    },
    /// rustls refused the configuration (e.g. the key does not match the certificate).
    #[error("{what}: {source}")]
    Config {
        /// What was being configured.
        what: String,
        /// The rustls error.
        source: rustls::Error,
    },
    /// The client CA bundles or CRLs cannot build a client-certificate verifier.
    #[error("client certificate verifier (CA bundles and CRLs): {0}")]
    ClientVerifier(#[from] rustls::server::VerifierBuilderError),
    /// The endpoint URI is unusable (not `https://host:port`, or tonic refused it).
    #[error("endpoint {endpoint:?}: {reason}")]
    Endpoint {
        /// The endpoint as given.
        endpoint: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Connecting (TCP + TLS + HTTP/2) to the endpoint failed.
    #[error("connecting to {endpoint}: {reason}")]
    Connect {
        /// The endpoint as given.
        endpoint: String,
        /// The error and its causes, joined.
        reason: String,
    },
    /// Generating a development certificate or key failed.
    #[error("development PKI: {0}")]
    Generate(#[from] rcgen::Error),
    /// A development PKI directory or request is inconsistent.
    #[error("development PKI: {0}")]
    DevPki(String),
}

/// The one crypto provider the broker uses: aws-lc-rs, with key exchange groups in the order
/// X25519MLKEM768 (post-quantum hybrid), X25519, P-256, P-384.
pub(crate) fn crypto_provider() -> CryptoProvider {
    let mut provider = aws_lc_rs::default_provider();
    provider.kx_groups = vec![
        kx_group::X25519MLKEM768,
        kx_group::X25519,
        kx_group::SECP256R1,
        kx_group::SECP384R1,
    ];
    provider
}

/// Installs aws-lc-rs (with the broker's key exchange order) as the process-wide rustls
/// crypto provider, for code that uses `rustls`' defaults (tonic's client TLS does).
///
/// Call it once at start-up; calling it again, or after another provider was installed,
/// does nothing (the first installed provider stays) and never panics.
pub fn install_crypto_provider() {
    if CryptoProvider::get_default().is_some() {
        return;
    }
    // Losing a race with another thread is fine: some provider is installed either way.
    if crypto_provider().install_default().is_err() {
        tracing::debug!("a rustls crypto provider was installed concurrently; keeping it");
    }
}

/// All certificates in `pem`, in order; `what` names the input in errors.
pub(crate) fn parse_certs(
    pem: &[u8],
    what: &str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(what, &e.to_string()))?;
    if certs.is_empty() {
        return Err(pem_error(what, "no CERTIFICATE block found"));
    }
    Ok(certs)
}

/// The first private key in `pem` (PKCS#8, SEC1 or PKCS#1); `what` names the input in errors.
pub(crate) fn parse_key(pem: &[u8], what: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => pem_error(what, "no PRIVATE KEY block found"),
        other => pem_error(what, &other.to_string()),
    })
}

fn pem_error(what: &str, reason: &str) -> TlsError {
    TlsError::Pem {
        what: what.to_string(),
        reason: reason.to_string(),
    }
}

/// An error and its chain of sources, joined with ": " (tonic's own messages are terse).
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let next = cause.to_string();
        if !text.ends_with(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installing_the_provider_twice_is_harmless() {
        install_crypto_provider();
        install_crypto_provider();
        let groups: Vec<_> = CryptoProvider::get_default()
            .unwrap()
            .kx_groups
            .iter()
            .map(|g| format!("{:?}", g.name()))
            .collect();
        assert_eq!(groups.first().map(String::as_str), Some("X25519MLKEM768"));
    }

    #[test]
    fn pem_errors_name_the_input() {
        let err = parse_certs(b"nothing here", "server certificate chain x.pem").unwrap_err();
        assert_eq!(
            err.to_string(),
            "server certificate chain x.pem: no CERTIFICATE block found"
        );
        let err = parse_key(b"", "server key k.pem").unwrap_err();
        assert!(err.to_string().starts_with("server key k.pem: "), "{err}");
    }
}
