//! PINs as secret types, read from a file or the environment, never from argv. A PIN
//! file is read by the one reader for secret files (`secret-file`), which the broker
//! also uses for TLS keys; [`Pin::from_file_or_env`] is the one place that picks between
//! the two sources, for the broker and the CLI alike.

use std::fmt;
use std::path::Path;

use secrecy::{ExposeSecret, SecretString};
use secret_file::SecretFile;

use crate::error::{HsmError, Result};

/// The largest PIN file read: PINs are short, so anything bigger is not a PIN file.
const MAX_PIN_FILE_BYTES: usize = 1024;

/// A token PIN (user or security officer). Its `Debug` output is redacted and its memory
/// is zeroed on drop.
#[derive(Clone)]
pub struct Pin(SecretString);

impl Pin {
    /// Wraps a PIN that is already held as a secret.
    ///
    /// # Errors
    /// An empty PIN is refused.
    pub fn new(pin: SecretString) -> Result<Pin> {
        if pin.expose_secret().is_empty() {
            return Err(HsmError::PinRejected("empty"));
        }
        Ok(Pin(pin))
    }

    /// Reads a PIN from a file; one trailing newline is removed. The file must be a
    /// regular file that group and others cannot access (checked on the opened file).
    ///
    /// # Errors
    /// [`HsmError::PinSource`]: the file is missing, unreadable, not a regular file,
    /// accessible by others, too large, not UTF-8, or empty.
    pub fn from_file(path: &Path) -> Result<Pin> {
        let source = |reason: String| HsmError::PinSource {
            source_name: format!("file {}", path.display()),
            reason,
        };
        let file =
            SecretFile::read_capped(path, MAX_PIN_FILE_BYTES).map_err(|e| source(reason(e)))?;
        let text = file.text().map_err(|_| source("not UTF-8".into()))?;
        let text = text.strip_suffix('\n').unwrap_or(text);
        let text = text.strip_suffix('\r').unwrap_or(text);
        Pin::new(SecretString::from(text)).map_err(|_| source("the file is empty".into()))
    }

    /// Reads a PIN from exactly one of a file and an environment variable: the one
    /// choice the broker's configuration, registered backends and the CLI all make.
    ///
    /// # Errors
    /// [`HsmError::PinSourceCount`] if both or neither are given; otherwise as for
    /// [`Pin::from_file`] and [`Pin::from_env`].
    pub fn from_file_or_env(file: Option<&Path>, env: Option<&str>) -> Result<Pin> {
        match (file, env) {
            (Some(file), None) => Pin::from_file(file),
            (None, Some(var)) => Pin::from_env(var),
            (file, env) => Err(HsmError::PinSourceCount {
                given: usize::from(file.is_some()) + usize::from(env.is_some()),
            }),
        }
    }

    /// Reads a PIN from an environment variable.
    ///
    /// # Errors
    /// The variable is unset, not UTF-8, or empty.
    pub fn from_env(var: &str) -> Result<Pin> {
        let source = |reason: &str| HsmError::PinSource {
            source_name: format!("environment variable {var}"),
            reason: reason.into(),
        };
        let value = std::env::var(var).map_err(|e| source(&e.to_string()))?;
        Pin::new(SecretString::from(value)).map_err(|_| source("it is empty"))
    }

    pub(crate) fn secret(&self) -> &SecretString {
        &self.0
    }
}

/// A refused PIN file's reason, without the path (the error names the source already).
fn reason(error: secret_file::SecretFileError) -> String {
    use secret_file::SecretFileError as E;
    match error {
        E::Io { source, .. } => source.to_string(),
        E::TooOpen { mode, .. } => {
            format!("group or other users may access it (mode {mode:03o}); chmod 600 it")
        }
        E::TooLarge { max_bytes, .. } => format!("larger than {max_bytes} bytes"),
        other => other.to_string(),
    }
}

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pin([REDACTED])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_is_redacted() {
        let pin = Pin::new(SecretString::from("123456")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(format!("{pin:?}"), "Pin([REDACTED])");
    }

    #[test]
    fn both_or_neither_source_is_refused() {
        let both = Pin::from_file_or_env(Some(Path::new("/etc/pin")), Some("PIN"));
        assert!(matches!(both, Err(HsmError::PinSourceCount { given: 2 })));
        let neither = Pin::from_file_or_env(None, None);
        assert!(matches!(
            neither,
            Err(HsmError::PinSourceCount { given: 0 })
        ));
    }

    #[test]
    fn empty_pin_is_refused() {
        assert!(matches!(
            Pin::new(SecretString::from("")),
            Err(HsmError::PinRejected(_))
        ));
    }
}
