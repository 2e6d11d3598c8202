//! PINs as secret types, read from a file or the environment, never from argv.

use std::fmt;
use std::path::Path;

use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

use crate::error::{HsmError, Result};

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

    /// Reads a PIN from a file; one trailing newline is removed. The file must not be
    /// readable by other users.
    ///
    /// # Errors
    /// The file is missing, unreadable, readable by others, not UTF-8, or empty.
    pub fn from_file(path: &Path) -> Result<Pin> {
        use std::os::unix::fs::PermissionsExt;
        let source = |reason: String| HsmError::PinSource {
            source_name: format!("file {}", path.display()),
            reason,
        };
        let meta = std::fs::metadata(path).map_err(|e| source(e.to_string()))?;
        if meta.permissions().mode() & 0o007 != 0 {
            return Err(source(
                "the file is readable by other users (chmod 600 it)".into(),
            ));
        }
        let bytes = Zeroizing::new(std::fs::read(path).map_err(|e| source(e.to_string()))?);
        let text = std::str::from_utf8(&bytes).map_err(|_| source("not UTF-8".into()))?;
        let text = text.strip_suffix('\n').unwrap_or(text);
        let text = text.strip_suffix('\r').unwrap_or(text);
        Pin::new(SecretString::from(text)).map_err(|_| source("the file is empty".into()))
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
    fn empty_pin_is_refused() {
        assert!(matches!(
            Pin::new(SecretString::from("")),
            Err(HsmError::PinRejected(_))
        ));
    }
}
