//! Hierarchy authorization: the secrets that stand between any local process that can reach
//! the TPM and commands such as `TPM2_Clear`.
//!
//! A TPM fresh from the factory (or swtpm) has empty owner, endorsement and lockout auth, and
//! the platform hierarchy's auth is empty after every start-up until firmware sets it. With
//! those empty, anyone who can open the TPM may clear it, destroying every key under the
//! owner hierarchy. [`take_ownership`] sets owner, endorsement and lockout auth once;
//! [`lock_platform_hierarchy`] gives the platform hierarchy a random auth that nobody keeps,
//! after every start of a TPM without firmware (swtpm). The backend then presents the owner
//! and endorsement auth it is given ([`crate::TpmConfig::hierarchy_auth`]).

use std::fmt;

use rand::RngCore;
use rand::rngs::OsRng;
use tss_esapi::Context;
use tss_esapi::constants::StartupType;
use tss_esapi::handles::{AuthHandle, ObjectHandle};
use tss_esapi::structures::Auth;
use zeroize::Zeroizing;

use crate::error::{Result, TpmError, TssResultExt};
use crate::tcti::Tcti;

/// Auth values longer than a SHA-256 digest are refused by TPMs with a SHA-256 name algorithm.
pub const MAX_AUTH_LEN: usize = 32;

/// One hierarchy's authorization value; zeroized on drop, never in `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct HierarchyAuth(Zeroizing<Vec<u8>>);

impl HierarchyAuth {
    /// An auth value of 1 to [`MAX_AUTH_LEN`] bytes.
    ///
    /// # Errors
    /// [`TpmError::InvalidInput`] for an empty or too long value.
    pub fn new(bytes: Zeroizing<Vec<u8>>) -> Result<HierarchyAuth> {
        if bytes.is_empty() || bytes.len() > MAX_AUTH_LEN {
            return Err(TpmError::InvalidInput(format!(
                "a hierarchy auth value has 1 to {MAX_AUTH_LEN} bytes"
            )));
        }
        Ok(HierarchyAuth(bytes))
    }

    /// A fresh random 32-byte value from the operating system.
    pub fn random() -> HierarchyAuth {
        let mut bytes = Zeroizing::new(vec![0u8; MAX_AUTH_LEN]);
        OsRng.fill_bytes(&mut bytes);
        HierarchyAuth(bytes)
    }

    /// The value, for writing it to a 0600 file.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    fn tss(&self) -> Result<Auth> {
        Auth::try_from(self.0.to_vec())
            .map_err(|_| TpmError::InvalidInput("hierarchy auth value rejected".into()))
    }
}

impl fmt::Debug for HierarchyAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HierarchyAuth([redacted])")
    }
}

/// The auth values the backend presents for the hierarchies it uses; `None` means empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HierarchyAuths {
    /// Owner hierarchy: creating the storage root key.
    pub owner: Option<HierarchyAuth>,
    /// Endorsement hierarchy: the endorsement key, for credential activation.
    pub endorsement: Option<HierarchyAuth>,
    /// Lockout hierarchy: only [`take_ownership`] sets it; the backend never uses it.
    pub lockout: Option<HierarchyAuth>,
}

/// Tells the context which auth values to present for the owner and endorsement hierarchies.
pub(crate) fn present(ctx: &mut Context, auths: &HierarchyAuths) -> Result<()> {
    if let Some(owner) = &auths.owner {
        ctx.tr_set_auth(ObjectHandle::Owner, owner.tss()?)
            .during("set the owner auth")?;
    }
    if let Some(endorsement) = &auths.endorsement {
        ctx.tr_set_auth(ObjectHandle::Endorsement, endorsement.tss()?)
            .during("set the endorsement auth")?;
    }
    Ok(())
}

fn open(tcti: &Tcti) -> Result<Context> {
    Context::new(tcti.conf()?).map_err(|e| {
        TpmError::Unavailable(format!("{}: {}", tcti.as_str(), crate::error::describe(&e)))
    })
}

/// Sets the owner, endorsement and lockout auth of a TPM whose hierarchies still have empty
/// auth (the state after manufacture or `TPM2_Clear`). Each value in `auths` that is `Some`
/// is set; the others stay empty.
///
/// # Errors
/// [`TpmError::Tpm`] when the TPM refuses, typically because an auth is already set
/// (`TPM_RC_BAD_AUTH`); hierarchies changed before the failure keep their new value.
pub fn take_ownership(tcti: &Tcti, auths: &HierarchyAuths) -> Result<()> {
    let mut ctx = open(tcti)?;
    let changes = [
        (AuthHandle::Owner, &auths.owner, "set the owner auth"),
        (
            AuthHandle::Endorsement,
            &auths.endorsement,
            "set the endorsement auth",
        ),
        (AuthHandle::Lockout, &auths.lockout, "set the lockout auth"),
    ];
    for (handle, auth, what) in changes {
        if let Some(auth) = auth {
            let new = auth.tss()?;
            ctx.execute_with_nullauth_session(|c| c.hierarchy_change_auth(handle, new))
                .during(what)?;
        }
    }
    Ok(())
}

/// Gives the platform hierarchy a random auth that is then forgotten, as firmware does at
/// boot. Needed after every start of a TPM that has no firmware (swtpm), whose platform auth
/// is empty after each `TPM2_Startup`; a real TPM's firmware has already done it (then this
/// fails with `TPM_RC_BAD_AUTH` and changes nothing).
///
/// # Errors
/// [`TpmError::Tpm`] when the TPM refuses.
pub fn lock_platform_hierarchy(tcti: &Tcti) -> Result<()> {
    let mut ctx = open(tcti)?;
    let new = HierarchyAuth::random().tss()?;
    ctx.execute_with_nullauth_session(|c| c.hierarchy_change_auth(AuthHandle::Platform, new))
        .during("set the platform auth")
}

/// Sends `TPM2_Shutdown(CLEAR)`, so that stopping the TPM process next is an orderly
/// shutdown (an unordered one counts towards dictionary-attack lockout).
///
/// # Errors
/// [`TpmError`] when the TPM cannot be reached or refuses.
pub fn shutdown(tcti: &Tcti) -> Result<()> {
    let mut ctx = open(tcti)?;
    ctx.shutdown(StartupType::Clear).during("shut down")
}
