//! The client-certificate verifier: rustls' WebPKI verifier, plus the broker's own rules,
//! checked during the handshake so that a refused client never reaches the HTTP/2 layer.
//!
//! * **No intermediates** unless `[server] allow_client_intermediates` says so. WebPKI does
//!   not enforce `pathLenConstraint` on the client CA, so an intermediate that a client CA
//!   once signed could mint client certificates the operator never meant to trust. A chain
//!   that merely repeats a configured root is not counted as one.
//! * **Exactly one URI SAN, a SPIFFE ID** ([`super::peer::certificate_identity`]).
//! * **Revocation**: CRLs from `[server] client_crls`, replaceable at run time
//!   ([`ClientVerifier::set_crls`], called on SIGHUP) without restarting the listener.
//!   With CRLs configured, a certificate whose issuer has no CRL is refused (fail closed).
//! * **Certificates the broker issued** (`IssueCertificate`) are accepted when they do not
//!   chain to a configured root but verify directly against one of the workload CA's
//!   certificates ([`ClientVerifier::set_workload_anchors`], replaced when the CA rotates).
//!   They live minutes, so they have no CRL; intermediates sent with them are ignored.

use std::fmt;
use std::sync::{Arc, RwLock};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, Error, OtherError, RootCertStore,
    SignatureScheme,
};
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, UnixTime};

use super::TlsError;
use super::peer::der_identity;

/// Verifies client certificates; see the module documentation.
pub(crate) struct ClientVerifier {
    roots: Arc<RootCertStore>,
    /// The configured roots as DER, to recognise a root sent along as an "intermediate".
    root_ders: Vec<CertificateDer<'static>>,
    hints: Vec<DistinguishedName>,
    allow_intermediates: bool,
    provider: Arc<CryptoProvider>,
    /// The WebPKI verifier for the current CRLs; replaced whole on reload.
    webpki: RwLock<Arc<dyn ClientCertVerifier>>,
    /// The WebPKI verifier for the broker's own workload CA, if it has one.
    workload: RwLock<Option<Arc<dyn ClientCertVerifier>>>,
}

impl ClientVerifier {
    pub(crate) fn new(
        root_ders: Vec<CertificateDer<'static>>,
        roots: RootCertStore,
        allow_intermediates: bool,
        crls: Vec<CertificateRevocationListDer<'static>>,
        provider: Arc<CryptoProvider>,
    ) -> Result<ClientVerifier, TlsError> {
        let roots = Arc::new(roots);
        let webpki = build_webpki(&roots, &provider, crls)?;
        Ok(ClientVerifier {
            hints: webpki.root_hint_subjects().to_vec(),
            roots,
            root_ders,
            allow_intermediates,
            provider,
            webpki: RwLock::new(webpki),
            workload: RwLock::new(None),
        })
    }

    /// Trusts certificates issued by these CA certificates (DER), replacing the ones
    /// trusted before; none: only the configured roots.
    pub(crate) fn set_workload_anchors(&self, anchors: &[Vec<u8>]) -> Result<(), TlsError> {
        let fresh = if anchors.is_empty() {
            None
        } else {
            let mut roots = RootCertStore::empty();
            for der in anchors {
                roots
                    .add(CertificateDer::from(der.clone()))
                    .map_err(|source| TlsError::Config {
                        what: "a workload CA certificate as a trust anchor".into(),
                        source,
                    })?;
            }
            Some(
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                    .build()?,
            )
        };
        *self
            .workload
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = fresh;
        Ok(())
    }

    fn workload(&self) -> Option<Arc<dyn ClientCertVerifier>> {
        self.workload
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Replaces the revocation lists. On error the lists in force stay.
    pub(crate) fn set_crls(
        &self,
        crls: Vec<CertificateRevocationListDer<'static>>,
    ) -> Result<(), TlsError> {
        let fresh = build_webpki(&self.roots, &self.provider, crls)?;
        *self
            .webpki
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = fresh;
        Ok(())
    }

    fn current(&self) -> Arc<dyn ClientCertVerifier> {
        self.webpki
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn check_chain_shape(&self, intermediates: &[CertificateDer<'_>]) -> Result<(), Error> {
        if self.allow_intermediates {
            return Ok(());
        }
        let real = intermediates
            .iter()
            .filter(|cert| {
                !self
                    .root_ders
                    .iter()
                    .any(|root| root.as_ref() == cert.as_ref())
            })
            .count();
        if real == 0 {
            return Ok(());
        }
        Err(refusal(format!(
            "the client certificate chain has {real} intermediate certificate(s) and \
             [server] allow_client_intermediates is false"
        )))
    }
}

fn build_webpki(
    roots: &Arc<RootCertStore>,
    provider: &Arc<CryptoProvider>,
    crls: Vec<CertificateRevocationListDer<'static>>,
) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    Ok(
        WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .with_crls(crls)
            .build()?,
    )
}

/// A refusal by the broker's own rules; rustls sends `bad_certificate` and the reason reaches
/// the broker's log through the handshake error.
fn refusal(reason: String) -> Error {
    Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(BrokerRule(
        reason,
    )))))
}

#[derive(Debug)]
struct BrokerRule(String);

impl fmt::Display for BrokerRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BrokerRule {}

impl ClientCertVerifier for ClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let configured = self.check_chain_shape(intermediates).and_then(|()| {
            self.current()
                .verify_client_cert(end_entity, intermediates, now)
        });
        let verified = match (configured, self.workload()) {
            (Ok(verified), _) => verified,
            // The refusal names the configured roots' reason, not the workload CA's.
            (Err(refused), Some(workload)) => workload
                .verify_client_cert(end_entity, &[], now)
                .map_err(|_| refused)?,
            (Err(refused), None) => return Err(refused),
        };
        der_identity(end_entity).map_err(|e| refusal(e.to_string()))?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.current().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.current().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.current().supported_verify_schemes()
    }
}

impl fmt::Debug for ClientVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientVerifier")
            .field("roots", &self.root_ders.len())
            .field("allow_intermediates", &self.allow_intermediates)
            .finish_non_exhaustive()
    }
}
