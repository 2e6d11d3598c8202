//! Token set-up for security teams: initialise a token, set the user PIN, change PINs.
//!
//! These run over local PKCS#11 with the security officer's PIN and do not need (or
//! use) the session pool.

use cryptoki::session::{Session, UserType};

use crate::error::{HsmError, Op, Result};
use crate::module::{Pkcs11Module, Token, TokenDescription, TokenSelector};
use crate::pin::Pin;
use crate::quirks::Quirks;

/// Longest token label PKCS#11 allows, in bytes.
pub const MAX_TOKEN_LABEL_LEN: usize = 32;

fn map(e: cryptoki::error::Error) -> HsmError {
    HsmError::from_pkcs11(e, Op::General, &Quirks::STANDARD)
}

fn open(module: &Pkcs11Module, token: &Token) -> Result<Session> {
    module.context().open_rw_session(token.slot).map_err(map)
}

/// Runs `f` in a session logged in as the security officer, and logs out after.
fn as_security_officer<T>(
    module: &Pkcs11Module,
    token: &Token,
    so_pin: &Pin,
    f: impl FnOnce(&Session) -> Result<T>,
) -> Result<T> {
    let session = open(module, token)?;
    session
        .login(UserType::So, Some(so_pin.secret()))
        .map_err(map)?;
    let result = f(&session);
    if let Err(e) = session.logout() {
        tracing::warn!(error = %e, "security officer logout failed");
    }
    result
}

/// Initialises an empty token with a label and a security-officer PIN.
///
/// Refuses to touch a token that is already initialised, and refuses a label that
/// another token already has.
///
/// # Errors
/// [`HsmError::TokenExists`], [`HsmError::NoFreeSlot`], [`HsmError::InvalidInput`] for a
/// label over 32 bytes, [`HsmError::PinRejected`] for a PIN the token will not take.
pub fn init_token(module: &Pkcs11Module, label: &str, so_pin: &Pin) -> Result<TokenDescription> {
    if label.is_empty() || label.len() > MAX_TOKEN_LABEL_LEN || label.trim_end() != label {
        return Err(HsmError::InvalidInput(format!(
            "a token label has 1 to {MAX_TOKEN_LABEL_LEN} bytes and no trailing spaces"
        )));
    }
    let tokens = module.tokens()?;
    if tokens
        .iter()
        .any(|t| t.description.initialized && t.description.label == label)
    {
        return Err(HsmError::TokenExists(label.to_string()));
    }
    let free = tokens
        .iter()
        .find(|t| !t.description.initialized)
        .ok_or(HsmError::NoFreeSlot)?;
    module
        .context()
        .init_token(free.slot, so_pin.secret(), label)
        .map_err(map)?;
    // The token may now sit on another slot: find it again by label.
    let token = module.find_token(&TokenSelector::Label(label.to_string()))?;
    tracing::info!(label, serial = %token.description.serial, "token initialised");
    Ok(token.description)
}

/// Sets (or resets) the user PIN, as the security officer.
///
/// # Errors
/// Token not found, wrong SO PIN, or a PIN the token will not take.
pub fn init_user_pin(
    module: &Pkcs11Module,
    selector: &TokenSelector,
    so_pin: &Pin,
    user_pin: &Pin,
) -> Result<()> {
    let token = module.find_token(selector)?;
    as_security_officer(module, &token, so_pin, |session| {
        session.init_pin(user_pin.secret()).map_err(map)
    })
}

/// Changes the user PIN, given the current one.
///
/// # Errors
/// Token not found, wrong current PIN, or a new PIN the token will not take.
pub fn change_user_pin(
    module: &Pkcs11Module,
    selector: &TokenSelector,
    old: &Pin,
    new: &Pin,
) -> Result<()> {
    let token = module.find_token(selector)?;
    let session = open(module, &token)?;
    session.set_pin(old.secret(), new.secret()).map_err(map)
}

/// Changes the security officer's PIN, given the current one.
///
/// # Errors
/// Token not found, wrong current PIN, or a new PIN the token will not take.
pub fn change_so_pin(
    module: &Pkcs11Module,
    selector: &TokenSelector,
    old: &Pin,
    new: &Pin,
) -> Result<()> {
    let token = module.find_token(selector)?;
    as_security_officer(module, &token, old, |session| {
        session.set_pin(old.secret(), new.secret()).map_err(map)
    })
}
