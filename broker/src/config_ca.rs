//! `[ca]`: the workload CA, and `[oidc]`: the HTTPS port that publishes the JWKS.

use std::net::SocketAddr;

use serde::Deserialize;

/// How the CA certificate is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum CaMode {
    /// The broker makes its own root (development, or a closed deployment).
    #[default]
    SelfSigned,
    /// An external root signs the broker's CA: `keybroker ca csr`, then `keybroker ca
    /// install`. Nothing is issued until a chain is installed.
    Intermediate,
}

/// `[ca]`: issuing short-lived workload certificates (`IssueCertificate`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaConfig {
    /// The `[[hsm]]` that holds the CA key; none: the broker issues no certificates.
    #[serde(default)]
    pub backend: Option<String>,
    #[serde(default)]
    pub mode: CaMode,
    /// The CA certificate's common name.
    #[serde(default = "defaults::common_name")]
    pub common_name: String,
    /// A workload certificate's lifetime when the request names none.
    #[serde(default = "defaults::default_ttl_seconds")]
    pub default_ttl_seconds: u64,
    /// The longest lifetime a request may ask for.
    #[serde(default = "defaults::max_ttl_seconds")]
    pub max_ttl_seconds: u64,
    /// A self-signed CA certificate's lifetime.
    #[serde(default = "defaults::validity_seconds")]
    pub validity_seconds: u64,
    /// A self-signed CA is replaced when this little of its lifetime is left. At least
    /// `publish_ahead_seconds + max_ttl_seconds`, so that every certificate the old CA
    /// signed expires before the old CA does.
    #[serde(default = "defaults::rotate_before_seconds")]
    pub rotate_before_seconds: u64,
    /// How long a new CA is in the trust bundle before it signs, so that relying parties
    /// fetch it first.
    #[serde(default = "defaults::publish_ahead_seconds")]
    pub publish_ahead_seconds: u64,
    /// The OID of the extension that carries the SHA-256 of the attestation claims
    /// (docs/identity.md). Each arc must fit in 64 bits.
    #[serde(default = "defaults::claims_extension_oid")]
    pub claims_extension_oid: String,
}

impl Default for CaConfig {
    fn default() -> Self {
        CaConfig {
            backend: None,
            mode: CaMode::default(),
            common_name: defaults::common_name(),
            default_ttl_seconds: defaults::default_ttl_seconds(),
            max_ttl_seconds: defaults::max_ttl_seconds(),
            validity_seconds: defaults::validity_seconds(),
            rotate_before_seconds: defaults::rotate_before_seconds(),
            publish_ahead_seconds: defaults::publish_ahead_seconds(),
            claims_extension_oid: defaults::claims_extension_oid(),
        }
    }
}

/// Parses a dotted OID into arcs (at least two, each within 64 bits).
pub fn parse_oid(text: &str) -> Option<Vec<u64>> {
    let arcs = text
        .split('.')
        .map(|arc| arc.parse::<u64>().ok())
        .collect::<Option<Vec<_>>>()?;
    match arcs.as_slice() {
        [first, second, ..] if *first <= 2 && (*first == 2 || *second < 40) => Some(arcs),
        _ => None,
    }
}

impl CaConfig {
    /// Checks the section's ranges; the error names the field.
    pub(super) fn validate(&self) -> Result<(), (String, String)> {
        let bad = |field: &str, why: &str| Err((format!("ca.{field}"), why.to_string()));
        let max_ttl = crate::ca::certificate::MAX_WORKLOAD_TTL.as_secs();
        if !(60..=max_ttl).contains(&self.max_ttl_seconds) {
            return bad("max_ttl_seconds", "must be 60 to 86400 (one day)");
        }
        if !(60..=self.max_ttl_seconds).contains(&self.default_ttl_seconds) {
            return bad("default_ttl_seconds", "must be 60 to ca.max_ttl_seconds");
        }
        if !(60..=20 * 365 * 86_400).contains(&self.validity_seconds) {
            return bad("validity_seconds", "must be 60 s to 20 years");
        }
        if self.rotate_before_seconds >= self.validity_seconds {
            return bad(
                "rotate_before_seconds",
                "must be less than ca.validity_seconds",
            );
        }
        if self.rotate_before_seconds
            < self
                .publish_ahead_seconds
                .saturating_add(self.max_ttl_seconds)
        {
            return bad(
                "rotate_before_seconds",
                "must be at least ca.publish_ahead_seconds + ca.max_ttl_seconds (every \
                 certificate the old CA signs must expire before it does)",
            );
        }
        if self.common_name.is_empty() || self.common_name.len() > 64 {
            return bad("common_name", "must be 1 to 64 characters");
        }
        if parse_oid(&self.claims_extension_oid).is_none() {
            return bad(
                "claims_extension_oid",
                "must be a dotted OID (like 1.3.6.1.4.1.n.1) whose arcs fit in 64 bits",
            );
        }
        Ok(())
    }
}

/// `[oidc]`: the JWKS and an OpenID Connect discovery document on a plain HTTPS port
/// (server authentication only, read-only), so that services outside the broker can
/// verify its JWTs (`GetToken`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// Where to listen; none: not served.
    #[serde(default)]
    pub listen: Option<SocketAddr>,
    /// The issuer URL that the tokens carry as `iss` and the discovery document names
    /// (`https://host:port`); required with `listen`.
    #[serde(default)]
    pub issuer: Option<String>,
    /// The longest a `GetToken` JWT lives, in seconds (at most 300).
    #[serde(default = "defaults::jwt_max_ttl_seconds")]
    pub jwt_max_ttl_seconds: u64,
}

impl Default for OidcConfig {
    fn default() -> Self {
        OidcConfig {
            listen: None,
            issuer: None,
            jwt_max_ttl_seconds: defaults::jwt_max_ttl_seconds(),
        }
    }
}

impl OidcConfig {
    /// Checks the section; the error names the field.
    pub(super) fn validate(&self) -> Result<(), (String, String)> {
        let bad = |field: &str, why: &str| Err((format!("oidc.{field}"), why.to_string()));
        if !(1..=300).contains(&self.jwt_max_ttl_seconds) {
            return bad("jwt_max_ttl_seconds", "must be 1 to 300");
        }
        match &self.issuer {
            Some(issuer) if !issuer.starts_with("https://") || issuer.ends_with('/') => bad(
                "issuer",
                "must be an https:// URL without a trailing slash, like https://broker:8443",
            ),
            None if self.listen.is_some() => bad("issuer", "required with oidc.listen"),
            _ => Ok(()),
        }
    }
}

mod defaults {
    pub fn common_name() -> String {
        "Keybroker workload CA".into()
    }
    /// 15 minutes.
    pub fn default_ttl_seconds() -> u64 {
        900
    }
    /// One hour.
    pub fn max_ttl_seconds() -> u64 {
        3600
    }
    /// One year.
    pub fn validity_seconds() -> u64 {
        365 * 86_400
    }
    /// 30 days.
    pub fn rotate_before_seconds() -> u64 {
        30 * 86_400
    }
    /// One day.
    pub fn publish_ahead_seconds() -> u64 {
        86_400
    }
    /// Keybroker has no registered private enterprise number yet; this arc is a
    /// placeholder an operator can replace (docs/identity.md).
    pub fn claims_extension_oid() -> String {
        "1.3.6.1.4.1.99999.1.1".into()
    }
    pub fn jwt_max_ttl_seconds() -> u64 {
        300
    }
}
