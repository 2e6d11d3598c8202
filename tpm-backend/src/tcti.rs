//! Which TPM to talk to: a TCTI string such as `device:/dev/tpmrm0`,
//! `swtpm:host=127.0.0.1,port=2321` or `tabrmd:`. Only the string differs between a real
//! host and the tests.

use std::str::FromStr;

use tss_esapi::tcti_ldr::TctiNameConf;

use crate::error::{Result, TpmError};

/// A validated TCTI configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tcti(String);

impl Tcti {
    /// Parses and validates a TCTI string.
    ///
    /// # Errors
    /// [`TpmError::InvalidTcti`] for anything but `device:`, `swtpm:` and `tabrmd:`
    /// (the `mssim:` TCTI does not speak swtpm's protocol and is refused).
    pub fn new(text: &str) -> Result<Tcti> {
        let accepted = ["device", "swtpm", "tabrmd"]
            .iter()
            .any(|p| text == *p || text.starts_with(&format!("{p}:")));
        if !accepted {
            return Err(TpmError::InvalidTcti(text.to_string()));
        }
        TctiNameConf::from_str(text).map_err(|_| TpmError::InvalidTcti(text.to_string()))?;
        Ok(Tcti(text.to_string()))
    }

    pub(crate) fn conf(&self) -> Result<TctiNameConf> {
        TctiNameConf::from_str(&self.0).map_err(|_| TpmError::InvalidTcti(self.0.clone()))
    }

    /// The TCTI string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether a resource manager stands between this process and the TPM (the kernel's
    /// `/dev/tpmrm0`, or `tpm2-abrmd`): it flushes what a process loaded when the process
    /// dies. Without one (swtpm, `/dev/tpm0`), objects outlive the process that loaded them.
    pub fn has_resource_manager(&self) -> bool {
        self.0.starts_with("tabrmd") || self.0.starts_with("device:/dev/tpmrm")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_supported_forms_and_refuses_others() {
        for ok in [
            "device:/dev/tpmrm0",
            "swtpm:host=127.0.0.1,port=2321",
            "tabrmd:",
            "device",
        ] {
            assert!(Tcti::new(ok).is_ok(), "{ok}");
        }
        for bad in [
            "mssim:host=localhost",
            "",
            "tpm",
            "swtpm:port=notaport",
            "/dev/tpm0",
        ] {
            assert!(
                matches!(Tcti::new(bad), Err(TpmError::InvalidTcti(_))),
                "{bad}"
            );
        }
    }
}
