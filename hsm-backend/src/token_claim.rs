//! This process's claims on tokens: at most one session pool per token.

use std::sync::Mutex;

use crate::error::{HsmError, Result};

static CLAIMED_TOKENS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// This process's claim on a token: at most one pool per token, because PKCS#11 login
/// state belongs to the whole process.
pub(crate) struct TokenClaim(String);

impl TokenClaim {
    pub(crate) fn take(serial: &str) -> Result<TokenClaim> {
        let mut claimed = CLAIMED_TOKENS.lock().unwrap_or_else(|p| p.into_inner());
        if claimed.iter().any(|s| s == serial) {
            return Err(HsmError::TokenInUse(serial.to_string()));
        }
        claimed.push(serial.to_string());
        Ok(TokenClaim(serial.to_string()))
    }
}

impl Drop for TokenClaim {
    fn drop(&mut self) {
        let mut claimed = CLAIMED_TOKENS.lock().unwrap_or_else(|p| p.into_inner());
        claimed.retain(|s| *s != self.0);
    }
}
