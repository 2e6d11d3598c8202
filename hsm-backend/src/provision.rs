//! Token set-up for security teams: initialise a token, set the user PIN, change PINs,
//! and make the trusted key that releasing keys needs.
//!
//! These run over local PKCS#11 with the security officer's PIN and do not need (or
//! use) the session pool. Login state belongs to the whole process, so they run before a
//! backend opens the token in this process, or in another process.

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass};
use cryptoki::session::{Session, UserType};

use crate::error::{HsmError, Op, Result};
use crate::module::{Pkcs11Module, Token, TokenDescription, TokenSelector};
use crate::pin::Pin;
use crate::quirks::Quirks;
use crate::release::{
    TRANSPORT_KEY_ID, TRANSPORT_KEY_LABEL, check_transport_key, transport_template,
};

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

/// What [`create_release_transport_key`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReleaseSetup {
    /// The transport key was made now.
    Created,
    /// It was already there, with the attributes the set-up gives it.
    AlreadyProvisioned,
}

/// Makes the token's release transport key, as the security officer: the one
/// `CKA_TRUSTED` key, under which the token wraps releasable keys on their way to a
/// workload ([`crate::HsmBackend::release_key`]). Idempotent: a key already there is
/// checked, not made again.
///
/// Only the SO can mark a key trusted, and the SO can make public objects only, so the
/// key is `CKA_PRIVATE` false: usable, for wrapping and unwrapping only, by any process
/// that can load the token. It is sensitive and never extractable.
///
/// # Errors
/// Token not found; wrong SO PIN; [`HsmError::ReleaseNotProvisioned`] if an object with
/// the key's id is there but is not such a key (destroy it and run again), or if several
/// are.
pub fn create_release_transport_key(
    module: &Pkcs11Module,
    selector: &TokenSelector,
    so_pin: &Pin,
) -> Result<ReleaseSetup> {
    let token = module.find_token(selector)?;
    as_security_officer(module, &token, so_pin, |session| {
        let found = session
            .find_objects(&[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::Id(TRANSPORT_KEY_ID.to_vec()),
            ])
            .map_err(map)?;
        match found.as_slice() {
            [] => {
                session
                    .generate_key(&Mechanism::AesKeyGen, &transport_template())
                    .map_err(map)?;
                tracing::info!(label = TRANSPORT_KEY_LABEL, token = %token.description.label,
                    "release transport key created");
                Ok(ReleaseSetup::Created)
            }
            [key] => {
                check_transport_key(session, *key, &Quirks::STANDARD)?;
                Ok(ReleaseSetup::AlreadyProvisioned)
            }
            _ => Err(HsmError::ReleaseNotProvisioned(format!(
                "{} objects carry the release transport key's id; destroy all but the \
                 trusted one",
                found.len()
            ))),
        }
    })
}
