//! A development PKI: a throwaway ECDSA P-256 CA, a server certificate and SPIFFE client
//! certificates, so the broker can run with real mutual TLS on a laptop and in tests without
//! an external CA. Not for production: validity is short (30 days) and the CA key sits in a
//! file next to the certificates.
//!
//! The CA key never leaves [`DevPki`] except into its own 0600 file; every key is held in a
//! zeroizing wrapper and no `Debug` output shows one.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType,
};
use zeroize::Zeroizing;

use super::files::{prepare_dir, read_file, read_private_file, secret_utf8, utf8, write_file};
use super::{ServerTls, TlsError};
use crate::identity::SpiffeId;

#[path = "devpki_crl.rs"]
mod crl;

const VALIDITY: Duration = Duration::from_secs(30 * 24 * 60 * 60);
const BACKDATE: Duration = Duration::from_secs(5 * 60);
const CA_CN: &str = "Keybroker development CA";

/// A development CA and the server certificate it issued.
pub struct DevPki {
    trust_domain: String,
    ca_cert_pem: String,
    ca_key: Zeroizing<KeyPair>,
    /// The CA's subject, key usages and key-identifier method, for signing.
    ca_params: CertificateParams,
    server: IssuedCert,
}

/// A certificate (PEM) and its private key (PEM, zeroized on drop, never in `Debug`).
pub struct IssuedCert {
    cert_pem: String,
    key_pem: Zeroizing<String>,
}

impl DevPki {
    /// Creates a CA for `trust_domain` and a server certificate for `server_dns_names` plus
    /// the IP address 127.0.0.1, both valid for 30 days starting 5 minutes ago.
    ///
    /// # Errors
    /// [`TlsError::DevPki`] for an invalid trust domain or DNS name; [`TlsError::Generate`]
    /// if generation fails.
    pub fn generate(trust_domain: &str, server_dns_names: &[String]) -> Result<DevPki, TlsError> {
        check_trust_domain(trust_domain)?;
        let (not_before, not_after) = default_validity()?;

        let mut ca_params = CertificateParams::default();
        ca_params.distinguished_name = ca_name(trust_domain);
        ca_params.subject_alt_names = vec![uri_san(&format!("spiffe://{trust_domain}"))?];
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        ca_params.not_before = not_before.into();
        ca_params.not_after = not_after.into();
        let ca_key = Zeroizing::new(KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?);
        let ca_cert_pem = ca_params.self_signed(&*ca_key)?.pem();

        let mut pki = DevPki {
            trust_domain: trust_domain.to_string(),
            ca_cert_pem,
            ca_key,
            ca_params,
            server: IssuedCert {
                cert_pem: String::new(),
                key_pem: Zeroizing::new(String::new()),
            },
        };
        let mut sans = server_dns_names.to_vec();
        sans.push("127.0.0.1".to_string());
        let mut params = CertificateParams::new(sans)
            .map_err(|e| TlsError::DevPki(format!("server DNS names: {e}")))?;
        params.distinguished_name = DistinguishedName::new();
        let cn = server_dns_names.first().map_or("keybroker", String::as_str);
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        pki.server = pki.issue(params, not_before, not_after)?;
        Ok(pki)
    }

    /// Issues a client certificate for `spiffe://<trust domain><spiffe_path>` (the only URI
    /// SAN), with the clientAuth extended key usage and a fresh P-256 key.
    ///
    /// # Errors
    /// [`TlsError::DevPki`] if the path does not make a valid SPIFFE ID or the validity is
    /// empty; [`TlsError::Generate`] if signing fails.
    pub fn issue_client(
        &self,
        spiffe_path: &str,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<IssuedCert, TlsError> {
        let id = format!("spiffe://{}{spiffe_path}", self.trust_domain);
        SpiffeId::parse(&id).map_err(|e| TlsError::DevPki(format!("{id:?}: {e}")))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, id.as_str());
        params.subject_alt_names = vec![uri_san(&id)?];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(params, not_before, not_after)
    }

    /// Signs `params` (adding validity and key usage) for a fresh P-256 key, and checks that
    /// the result names this CA as its issuer.
    fn issue(
        &self,
        mut params: CertificateParams,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<IssuedCert, TlsError> {
        if not_after <= not_before {
            return Err(TlsError::DevPki(
                "not_after must be after not_before".into(),
            ));
        }
        params.not_before = not_before.into();
        params.not_after = not_after.into();
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        let key = Zeroizing::new(KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?);
        let issuer = Issuer::from_params(&self.ca_params, &*self.ca_key);
        let cert_pem = params.signed_by(&*key, &issuer)?.pem();
        let issued = IssuedCert {
            cert_pem,
            key_pem: Zeroizing::new(key.serialize_pem()),
        };
        let ca = parse_pem_cert(&self.ca_cert_pem, "CA certificate")?;
        let leaf = parse_pem_cert(&issued.cert_pem, "issued certificate")?;
        if issuer_raw(&leaf)? != subject_raw(&ca)? {
            return Err(TlsError::DevPki(
                "issued certificate does not name the CA".into(),
            ));
        }
        Ok(issued)
    }

    /// Writes `ca.pem`, `ca-key.pem`, `server.pem` and `server-key.pem` into `dir` (created
    /// with mode 0700 if missing; an existing one must not be writable by group or others).
    /// Key files get mode 0600; files are replaced atomically.
    ///
    /// # Errors
    /// [`TlsError::Io`] or [`TlsError::Permissions`] naming the path.
    pub fn write_to(&self, dir: &Path) -> Result<(), TlsError> {
        prepare_dir(dir)?;
        write_file(&dir.join("ca.pem"), self.ca_cert_pem.as_bytes(), 0o644)?;
        let ca_key_pem = Zeroizing::new(self.ca_key.serialize_pem());
        write_file(&dir.join("ca-key.pem"), ca_key_pem.as_bytes(), 0o600)?;
        self.server.write_to(dir, "server")?;
        Ok(())
    }

    /// Loads a PKI written by [`DevPki::write_to`], to keep issuing from the same CA.
    ///
    /// # Errors
    /// [`TlsError`] naming the file that is missing, unreadable, too open, malformed, or
    /// does not belong with the others.
    pub fn load_from(dir: &Path) -> Result<DevPki, TlsError> {
        let ca_path = dir.join("ca.pem");
        let ca_key_path = dir.join("ca-key.pem");
        let ca_cert_pem = utf8(&ca_path, read_file(&ca_path)?)?;
        let ca_key_pem = secret_utf8(&ca_key_path, &read_private_file(&ca_key_path)?)?;
        let ca_key = Zeroizing::new(
            KeyPair::from_pem(&ca_key_pem)
                .map_err(|e| TlsError::DevPki(format!("{}: {e}", ca_key_path.display())))?,
        );
        let server_path = dir.join("server.pem");
        let server_key_path = dir.join("server-key.pem");
        let server = IssuedCert {
            cert_pem: utf8(&server_path, read_file(&server_path)?)?,
            key_pem: secret_utf8(&server_key_path, &read_private_file(&server_key_path)?)?,
        };

        let what = ca_path.display().to_string();
        let der = parse_pem_cert(&ca_cert_pem, &what)?;
        let (_, ca) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| TlsError::DevPki(format!("{what}: {e}")))?;
        if ca.public_key().subject_public_key.data.as_ref() != ca_key.public_key_raw() {
            return Err(TlsError::DevPki(format!(
                "{} does not hold the key of {what}",
                ca_key_path.display()
            )));
        }
        let trust_domain = ca
            .subject_alternative_name()
            .ok()
            .flatten()
            .and_then(|san| {
                san.value.general_names.iter().find_map(|name| match name {
                    x509_parser::extensions::GeneralName::URI(uri) => {
                        uri.strip_prefix("spiffe://").map(str::to_string)
                    }
                    _ => None,
                })
            })
            .ok_or_else(|| TlsError::DevPki(format!("{what}: no spiffe://<trust domain> SAN")))?;
        check_trust_domain(&trust_domain)?;
        let mut ca_params = CertificateParams::default();
        ca_params.distinguished_name = ca_name(&trust_domain);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let pki = DevPki {
            trust_domain,
            ca_cert_pem,
            ca_key,
            ca_params,
            server,
        };
        let server_der = parse_pem_cert(&pki.server.cert_pem, &server_path.display().to_string())?;
        if issuer_raw(&server_der)? != subject_raw(&der)? {
            return Err(TlsError::DevPki(format!(
                "{} was not issued by {what}",
                server_path.display()
            )));
        }
        Ok(pki)
    }

    /// The trust domain of the identities this CA issues.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The CA certificate, PEM: the client CA bundle for the server, and the server CA for
    /// clients.
    pub fn ca_cert_pem(&self) -> &str {
        &self.ca_cert_pem
    }

    /// The server certificate and key.
    pub fn server(&self) -> &IssuedCert {
        &self.server
    }

    /// A server TLS configuration with the server certificate, trusting this CA for clients.
    ///
    /// # Errors
    /// As [`ServerTls::from_pem`].
    pub fn server_tls(&self) -> Result<ServerTls, TlsError> {
        ServerTls::from_pem(
            self.server.cert_pem.as_bytes(),
            self.server.key_pem.as_bytes(),
            &[self.ca_cert_pem.as_bytes().to_vec()],
        )
    }
}

impl fmt::Debug for DevPki {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DevPki")
            .field("trust_domain", &self.trust_domain)
            .field("ca_key", &"[redacted]")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

impl IssuedCert {
    /// The certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The private key, PKCS#8 PEM.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// Writes `<stem>.pem` (mode 0644) and `<stem>-key.pem` (mode 0600) into `dir`, with the
    /// directory rules of [`DevPki::write_to`]; returns the two paths.
    ///
    /// # Errors
    /// [`TlsError::Io`] or [`TlsError::Permissions`] naming the path.
    pub fn write_to(&self, dir: &Path, stem: &str) -> Result<(PathBuf, PathBuf), TlsError> {
        prepare_dir(dir)?;
        let cert = dir.join(format!("{stem}.pem"));
        let key = dir.join(format!("{stem}-key.pem"));
        write_file(&cert, self.cert_pem.as_bytes(), 0o644)?;
        write_file(&key, self.key_pem.as_bytes(), 0o600)?;
        Ok((cert, key))
    }
}

impl fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedCert")
            .field("cert_pem", &format_args!("<{} bytes>", self.cert_pem.len()))
            .field("key_pem", &"[redacted]")
            .finish()
    }
}

fn check_trust_domain(trust_domain: &str) -> Result<(), TlsError> {
    match SpiffeId::parse(&format!("spiffe://{trust_domain}/x")) {
        Ok(_) => Ok(()),
        Err(e) => Err(TlsError::DevPki(format!(
            "trust domain {trust_domain:?}: {e}"
        ))),
    }
}

fn default_validity() -> Result<(SystemTime, SystemTime), TlsError> {
    let now = SystemTime::now();
    match (now.checked_sub(BACKDATE), now.checked_add(VALIDITY)) {
        (Some(from), Some(to)) => Ok((from, to)),
        _ => Err(TlsError::DevPki("the system clock is out of range".into())),
    }
}

/// The CA's subject; rebuilt identically by [`DevPki::load_from`] so issued certificates'
/// issuer names match the CA certificate byte for byte (checked at every issue).
fn ca_name(trust_domain: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, CA_CN);
    name.push(DnType::OrganizationName, trust_domain);
    name
}

fn uri_san(uri: &str) -> Result<SanType, TlsError> {
    let ia5 = uri
        .to_string()
        .try_into()
        .map_err(|e| TlsError::DevPki(format!("{uri:?}: {e}")))?;
    Ok(SanType::URI(ia5))
}

fn parse_pem_cert(pem: &str, what: &str) -> Result<Vec<u8>, TlsError> {
    let certs = super::parse_certs(pem.as_bytes(), what)?;
    certs
        .into_iter()
        .next()
        .map(|der| der.to_vec())
        .ok_or_else(|| TlsError::DevPki(format!("{what}: no certificate")))
}

fn subject_raw(der: &[u8]) -> Result<Vec<u8>, TlsError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| TlsError::DevPki(format!("certificate does not parse: {e}")))?;
    Ok(cert.subject().as_raw().to_vec())
}

fn issuer_raw(der: &[u8]) -> Result<Vec<u8>, TlsError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| TlsError::DevPki(format!("certificate does not parse: {e}")))?;
    Ok(cert.issuer().as_raw().to_vec())
}
