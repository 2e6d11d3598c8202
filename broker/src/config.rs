//! The broker's configuration file: TOML, unknown fields refused, every problem reported
//! with the path of the field (`server.listen: invalid socket address ...`).
//!
//! Relative paths are resolved against the directory of the configuration file. PINs are
//! never in this file: it names a file or an environment variable that holds them.

use std::path::{Path, PathBuf};

use serde::Deserialize;

#[path = "config_attestation.rs"]
mod attestation;
#[path = "config_ca.rs"]
mod ca;
#[path = "config_secrets.rs"]
mod secrets;
#[path = "config_server.rs"]
mod server;
pub use attestation::AttestationConfig;
pub use ca::{CaConfig, CaMode, OidcConfig, parse_oid};
pub use secrets::{LeaseTimes, PostgresRole, RandomRole, SecretsConfig, check_role_name};
pub use server::ServerConfig;

/// A configuration error, naming the file and the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("{path}: {field}: {reason}")]
    Invalid {
        path: PathBuf,
        field: String,
        reason: String,
    },
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub store: StoreConfig,
    #[serde(default)]
    pub policy: PolicyConfig,
    #[serde(default)]
    pub keys: KeysConfig,
    #[serde(default)]
    pub hsm: Vec<HsmBackendConfig>,
    #[serde(default)]
    pub tpm: Vec<TpmBackendConfig>,
    #[serde(default)]
    pub attestation: AttestationConfig,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub ca: CaConfig,
    #[serde(default)]
    pub oidc: OidcConfig,
    #[serde(default)]
    pub secrets: SecretsConfig,
}

/// `[admin]`: what the admin API may do at run time.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// PKCS#11 modules that `RegisterHsmBackend` may load, besides those of `[[hsm]]`.
    /// Loading a module runs its code inside the broker, so the API cannot name any other.
    #[serde(default)]
    pub pkcs11_modules: Vec<PathBuf>,
}

impl Config {
    /// Whether the admin API may load this PKCS#11 module.
    pub fn module_allowed(&self, module: &Path) -> bool {
        self.hsm.iter().any(|h| h.module == module)
            || self.admin.pkcs11_modules.iter().any(|m| m == module)
    }
}

/// `[store]`: the metadata database.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// The SQLite file.
    pub path: PathBuf,
    /// The `[[hsm]]` or `[[tpm]]` that protects the store's rows: it wraps (HSM) or seals
    /// to its PCR policy (TPM) the store key whose MACs every row carries
    /// (docs/sealing.md, "The broker's own data at rest"). None: rows carry no MAC.
    #[serde(default)]
    pub protect_with: Option<String>,
}

/// `[policy]`: where the Cedar authorization policy comes from. Either `files`
/// (concatenated; changed by editing them and reloading), or the store (changed through
/// `SetPolicy`), seeded once from `bootstrap` when the store holds none.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    #[serde(default)]
    pub files: Vec<PathBuf>,
    /// The first policy of a store-managed broker, so that someone may call `SetPolicy`.
    #[serde(default)]
    pub bootstrap: Option<PathBuf>,
}

/// What to do with HSM objects that carry the broker's label but that the store does not
/// know (for example after restoring an older database).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum OrphanAction {
    /// Log each one at start-up and leave it.
    #[default]
    Report,
    /// Destroy it.
    Destroy,
}

/// `[keys]`: lifecycle settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysConfig {
    /// The backend for keys created without one.
    #[serde(default)]
    pub default_backend: Option<String>,
    /// Waiting period before a scheduled destruction, when the request names none.
    #[serde(default = "defaults::destruction_pending_days")]
    pub destruction_pending_days: u32,
    /// The shortest waiting period a request may ask for.
    #[serde(default = "defaults::min_destruction_pending_days")]
    pub min_destruction_pending_days: u32,
    #[serde(default)]
    pub orphans: OrphanAction,
    /// The most orphans one start may destroy (with `orphans = "destroy"`). More than that
    /// suggests a store older than the token, not debris: none is destroyed.
    #[serde(default = "defaults::max_orphans_destroyed")]
    pub max_orphans_destroyed: usize,
    /// Set by `keybroker serve --orphan-all-existing-keys`, never by the file: start with
    /// a store that knows no keys although a backend holds the broker's objects.
    #[serde(skip)]
    pub orphan_all_existing_keys: bool,
}

impl Default for KeysConfig {
    fn default() -> Self {
        KeysConfig {
            default_backend: None,
            destruction_pending_days: defaults::destruction_pending_days(),
            min_destruction_pending_days: defaults::min_destruction_pending_days(),
            orphans: OrphanAction::Report,
            max_orphans_destroyed: defaults::max_orphans_destroyed(),
            orphan_all_existing_keys: false,
        }
    }
}

/// `[[hsm]]`: a PKCS#11 token.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HsmBackendConfig {
    pub name: String,
    /// The PKCS#11 module.
    pub module: PathBuf,
    pub token_label: String,
    /// A file holding the user PIN (mode 0600).
    #[serde(default)]
    pub user_pin_file: Option<PathBuf>,
    /// An environment variable holding the user PIN.
    #[serde(default)]
    pub user_pin_env: Option<String>,
    #[serde(default = "defaults::sessions")]
    pub sessions: usize,
}

/// `[[tpm]]`: a TPM 2.0.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TpmBackendConfig {
    pub name: String,
    /// `device:/dev/tpmrm0`, `swtpm:host=127.0.0.1,port=2321` or `tabrmd:`.
    pub tcti: String,
    /// A file (mode 0600, hex) holding the owner hierarchy's auth value; none: empty auth.
    #[serde(default)]
    pub owner_auth_file: Option<PathBuf>,
    /// A file (mode 0600, hex) holding the endorsement hierarchy's auth value.
    #[serde(default)]
    pub endorsement_auth_file: Option<PathBuf>,
    /// How long one TPM command may take before the call gets `UNAVAILABLE`.
    #[serde(default = "defaults::tpm_command_timeout_seconds")]
    pub command_timeout_seconds: u64,
    /// The SHA-256 PCRs a wrap-unwrap key's new versions bind (docs/sealing.md).
    #[serde(default = "defaults::seal_pcrs")]
    pub seal_pcrs: Vec<u8>,
}

mod defaults {
    pub fn destruction_pending_days() -> u32 {
        30
    }
    pub fn min_destruction_pending_days() -> u32 {
        7
    }
    pub fn sessions() -> usize {
        4
    }
    pub fn tpm_command_timeout_seconds() -> u64 {
        10
    }
    pub fn seal_pcrs() -> Vec<u8> {
        crate::backends::DEFAULT_SEAL_PCRS.to_vec()
    }
    pub fn max_orphans_destroyed() -> usize {
        10
    }
}

impl Config {
    /// Reads, parses and validates a configuration file.
    ///
    /// # Errors
    /// [`ConfigError`] naming the file, the field and the reason.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::from_toml(&text, base).map_err(|(field, reason)| ConfigError::Invalid {
            path: path.to_path_buf(),
            field,
            reason,
        })
    }

    /// Parses and validates TOML text; relative paths are taken from `base`.
    ///
    /// # Errors
    /// `(field path, reason)`.
    pub fn from_toml(text: &str, base: &Path) -> Result<Config, (String, String)> {
        let de = toml::Deserializer::new(text);
        let mut config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let field = e.path().to_string();
            (field, e.into_inner().message().trim().to_string())
        })?;
        config.validate()?;
        config.resolve_paths(base);
        Ok(config)
    }

    fn validate(&self) -> Result<(), (String, String)> {
        let bad = |field: &str, reason: &str| Err((field.to_string(), reason.to_string()));
        if self.server.client_ca.is_empty() {
            return bad("server.client_ca", "at least one CA bundle is required");
        }
        if self.server.max_message_bytes < 1024 || self.server.max_message_bytes > 64 << 20 {
            return bad("server.max_message_bytes", "must be 1 KiB to 64 MiB");
        }
        self.server.validate_transport()?;
        let mut names = std::collections::BTreeSet::new();
        for (i, hsm) in self.hsm.iter().enumerate() {
            let field = |f: &str| format!("hsm[{i}].{f}");
            check_name(&hsm.name).or_else(|r| bad(&field("name"), &r))?;
            if !names.insert(hsm.name.clone()) {
                return bad(&field("name"), "another backend has this name");
            }
            if hsm.user_pin_file.is_some() == hsm.user_pin_env.is_some() {
                return bad(
                    &field("user_pin_file"),
                    "set exactly one of user_pin_file and user_pin_env",
                );
            }
            if hsm.sessions == 0 || hsm.sessions > 256 {
                return bad(&field("sessions"), "must be 1 to 256");
            }
        }
        for (i, tpm) in self.tpm.iter().enumerate() {
            check_name(&tpm.name).or_else(|r| bad(&format!("tpm[{i}].name"), &r))?;
            if !names.insert(tpm.name.clone()) {
                return bad(&format!("tpm[{i}].name"), "another backend has this name");
            }
            tpm_backend::Tcti::new(&tpm.tcti)
                .map_err(|e| (format!("tpm[{i}].tcti"), e.to_string()))?;
            if !(1..=600).contains(&tpm.command_timeout_seconds) {
                return Err((
                    format!("tpm[{i}].command_timeout_seconds"),
                    "must be 1 to 600".into(),
                ));
            }
            tpm_backend::PcrSelection::sha256(&tpm.seal_pcrs)
                .map_err(|e| (format!("tpm[{i}].seal_pcrs"), e.to_string()))?;
        }
        if let Some(default) = &self.keys.default_backend {
            if !names.contains(default) {
                return bad(
                    "keys.default_backend",
                    "no [[hsm]] or [[tpm]] has this name",
                );
            }
        }
        if let Some(protect) = &self.store.protect_with {
            if !names.contains(protect) {
                return bad("store.protect_with", "no [[hsm]] or [[tpm]] has this name");
            }
        }
        if let Some(signing) = &self.attestation.signing_backend {
            if !self.hsm.iter().any(|h| &h.name == signing) {
                return bad("attestation.signing_backend", "no [[hsm]] has this name");
            }
        }
        if let Some(ca) = &self.ca.backend {
            if !self.hsm.iter().any(|h| &h.name == ca) {
                return bad(
                    "ca.backend",
                    "no [[hsm]] has this name (the CA key lives in an HSM)",
                );
            }
        }
        if let Some(secrets) = &self.secrets.backend {
            if !self.hsm.iter().any(|h| &h.name == secrets) {
                return bad(
                    "secrets.backend",
                    "no [[hsm]] has this name (the key-encryption key lives in an HSM)",
                );
            }
        }
        self.secrets.validate()?;
        if !self.policy.files.is_empty() && self.policy.bootstrap.is_some() {
            return bad(
                "policy.bootstrap",
                "only for a store-managed policy: remove it or policy.files",
            );
        }
        if self.keys.destruction_pending_days < self.keys.min_destruction_pending_days {
            return bad(
                "keys.destruction_pending_days",
                "must be at least keys.min_destruction_pending_days",
            );
        }
        self.attestation.validate()?;
        self.ca.validate()?;
        self.oidc.validate()?;
        Ok(())
    }

    fn resolve_paths(&mut self, base: &Path) {
        let abs = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        abs(&mut self.server.cert);
        abs(&mut self.server.key);
        self.server.client_ca.iter_mut().for_each(abs);
        self.server.client_crls.iter_mut().for_each(abs);
        abs(&mut self.store.path);
        self.policy.files.iter_mut().for_each(abs);
        if let Some(p) = self.policy.bootstrap.as_mut() {
            abs(p);
        }
        for hsm in &mut self.hsm {
            if let Some(p) = hsm.user_pin_file.as_mut() {
                abs(p);
            }
        }
        for tpm in &mut self.tpm {
            tpm.owner_auth_file.iter_mut().for_each(abs);
            tpm.endorsement_auth_file.iter_mut().for_each(abs);
        }
        if let Some(p) = self.attestation.policy.as_mut() {
            abs(p);
        }
        if let Some(p) = self.attestation.certificate_cache.as_mut() {
            abs(p);
        }
    }
}

/// Backend names appear in key metadata and policies: keep them simple.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err("1 to 64 characters of [A-Za-z0-9._-]".into())
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
