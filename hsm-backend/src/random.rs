//! Random bytes from the token's RNG.

use crate::backend::HsmBackend;
use crate::error::{HsmError, Op, Result};
use crate::secret::{SecretBytes, into_secret};

/// Most random bytes one call returns.
pub const MAX_RANDOM_LEN: usize = 64 * 1024;

impl HsmBackend {
    /// Returns `len` bytes from the token's random number generator.
    ///
    /// # Errors
    /// `len` of zero or over [`MAX_RANDOM_LEN`]; token errors.
    pub fn random(&self, len: usize) -> Result<SecretBytes> {
        if len == 0 || len > MAX_RANDOM_LEN {
            return Err(HsmError::InvalidInput(format!(
                "random length must be 1 to {MAX_RANDOM_LEN}, not {len}"
            )));
        }
        let len32 = u32::try_from(len).map_err(|_| HsmError::InvalidInput("length".into()))?;
        let bytes = self.pool.run(|s| {
            s.session
                .generate_random_vec(len32)
                .map_err(|e| s.error(e, Op::General))
        })?;
        Ok(into_secret(bytes))
    }
}
