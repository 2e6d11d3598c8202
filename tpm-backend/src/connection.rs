//! One live connection to the TPM: the ESAPI context, the SRK, one reused HMAC session,
//! and a small cache of loaded keys.
//!
//! The session is started once, salted with the SRK, with parameter encryption both ways,
//! so secrets (unsealed data, decrypted plaintext) cross the bus encrypted. Without a
//! resource manager a TPM holds about three transient objects, so the cache is bounded by
//! what the TPM reports (`TPM_PT_HR_TRANSIENT_MIN`) and every temporary object is flushed
//! as soon as it has served (LESSONS: tpm2-tools #303, keylime #620).

use sha2::{Digest as _, Sha256};
use tss_esapi::Context;
use tss_esapi::attributes::SessionAttributesBuilder;
use tss_esapi::constants::{CapabilityType, PropertyTag, SessionType};
use tss_esapi::handles::{KeyHandle, ObjectHandle, PersistentTpmHandle, SessionHandle, TpmHandle};
use tss_esapi::interface_types::algorithm::HashingAlgorithm;
use tss_esapi::interface_types::resource_handles::Hierarchy;
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{CapabilityData, SymmetricDefinition};

use crate::blob::TpmBlob;
use crate::error::{Result, TpmError, TssResultExt};
use crate::hierarchy::{self, HierarchyAuths};
use crate::tcti::Tcti;
use crate::templates;

/// Where the storage root key comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SrkSource {
    /// Re-created at every connection from the fixed template (see `templates::srk`).
    Template,
    /// An SRK already made persistent at this handle (for example `0x81000001`).
    Persistent(u32),
}

/// Transient slots assumed when the TPM does not say.
const DEFAULT_TRANSIENT_SLOTS: usize = 3;

pub(crate) struct Connection {
    pub(crate) ctx: Context,
    pub(crate) srk: KeyHandle,
    pub(crate) session: AuthSession,
    srk_is_transient: bool,
    slots: usize,
    /// Loaded keys, least recently used first.
    cache: Vec<([u8; 32], KeyHandle)>,
}

impl Connection {
    pub(crate) fn open(tcti: &Tcti, srk: SrkSource, auths: &HierarchyAuths) -> Result<Connection> {
        let mut ctx = Context::new(tcti.conf()?).map_err(|e| {
            TpmError::Unavailable(format!("{}: {}", tcti.as_str(), crate::error::describe(&e)))
        })?;
        hierarchy::present(&mut ctx, auths)?;
        if !tcti.has_resource_manager() {
            flush_stale_objects(&mut ctx);
        }
        let slots = transient_slots(&mut ctx);
        let (srk, srk_is_transient) = match srk {
            SrkSource::Template => {
                let public = templates::srk()?;
                let created = ctx
                    .execute_with_nullauth_session(|c| {
                        c.create_primary(Hierarchy::Owner, public, None, None, None, None)
                    })
                    .during("create the SRK")?;
                (created.key_handle, true)
            }
            SrkSource::Persistent(handle) => {
                let persistent = PersistentTpmHandle::new(handle).map_err(|_| {
                    TpmError::InvalidInput(format!("{handle:#x} is not a persistent handle"))
                })?;
                let object = ctx
                    .tr_from_tpm_public(TpmHandle::Persistent(persistent))
                    .during("open the persistent SRK")?;
                (KeyHandle::from(object), false)
            }
        };
        let session = start_session(&mut ctx, srk, SessionType::Hmac, true)?;
        ctx.set_sessions((Some(session), None, None));
        Ok(Connection {
            ctx,
            srk,
            session,
            srk_is_transient,
            slots,
            cache: Vec::new(),
        })
    }

    /// Whether the TPM still answers (after a failed call: a lost connection or a
    /// restarted TPM means this connection must be dropped).
    /// The dictionary-attack counters, if the TPM answers.
    pub(crate) fn lockout_state(&mut self) -> Option<crate::LockoutState> {
        use tss_esapi::constants::PropertyTag;
        let mut read = |tag| {
            self.ctx
                .execute_without_session(|c| c.get_tpm_property(tag))
                .ok()
                .flatten()
        };
        Some(crate::LockoutState {
            failures: read(PropertyTag::LockoutCounter)?,
            max_failures: read(PropertyTag::MaxAuthFail)?,
            interval_seconds: read(PropertyTag::LockoutInterval)?,
        })
    }

    pub(crate) fn alive(&mut self) -> bool {
        self.ctx
            .execute_without_session(|c| c.get_random(1))
            .is_ok()
    }

    /// A key's handle, loading it (and evicting the least recently used) if needed.
    pub(crate) fn key(&mut self, blob: &TpmBlob) -> Result<KeyHandle> {
        let id = blob_id(blob);
        if let Some(at) = self.cache.iter().position(|(cached, _)| *cached == id) {
            let entry = self.cache.remove(at);
            self.cache.push(entry);
            return Ok(entry.1);
        }
        self.make_room(1);
        let handle = self.load(blob)?;
        self.cache.push((id, handle));
        Ok(handle)
    }

    /// Loads `blob` for the length of `f` only, then flushes it, whatever `f` returns.
    pub(crate) fn with_temporary<T>(
        &mut self,
        blob: &TpmBlob,
        f: impl FnOnce(&mut Connection, KeyHandle) -> Result<T>,
    ) -> Result<T> {
        self.make_room(1);
        let handle = self.load(blob)?;
        let result = f(self, handle);
        self.flush(handle.into());
        result
    }

    /// Evicts cached keys until `needed` more objects fit beside the SRK.
    pub(crate) fn make_room(&mut self, needed: usize) {
        let fixed = usize::from(self.srk_is_transient);
        while !self.cache.is_empty() && self.cache.len() + fixed + needed > self.slots {
            let (_, handle) = self.cache.remove(0);
            self.flush(handle.into());
        }
    }

    pub(crate) fn flush(&mut self, handle: ObjectHandle) {
        if let Err(e) = self.ctx.flush_context(handle) {
            tracing::warn!(error = %e, "could not flush a transient TPM object");
        }
    }

    fn load(&mut self, blob: &TpmBlob) -> Result<KeyHandle> {
        let (public, private) = (blob.public()?, blob.private()?);
        let srk = self.srk;
        self.ctx.load(srk, private, public).during("load a key")
    }

    /// Number of transient objects the TPM holds now (diagnostics and leak tests).
    pub(crate) fn transient_objects(&mut self) -> Result<usize> {
        let (data, _) = self
            .ctx
            .execute_without_session(|c| c.get_capability(CapabilityType::Handles, 0x8000_0000, 64))
            .during("read handles")?;
        match data {
            CapabilityData::Handles(list) => Ok(list.len()),
            _ => Err(TpmError::Tpm {
                operation: "read handles",
                detail: "unexpected capability data".into(),
            }),
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        for (_, handle) in std::mem::take(&mut self.cache) {
            let _ = self.ctx.flush_context(handle.into());
        }
        let _ = self
            .ctx
            .flush_context(SessionHandle::from(self.session).into());
        if self.srk_is_transient {
            let _ = self.ctx.flush_context(self.srk.into());
        }
    }
}

/// Flushes every transient object and loaded session in the TPM. Without a resource
/// manager only one process uses the TPM at a time, so whatever is loaded when this one
/// connects was left by a process that died (a `kill -9`), and would fill the TPM's few
/// slots: the next start failed with "out of memory for object contexts" (or "for session
/// contexts").
fn flush_stale_objects(ctx: &mut Context) {
    // Transient objects, then loaded HMAC and policy sessions.
    const RANGES: [u32; 3] = [0x8000_0000, 0x0200_0000, 0x0300_0000];
    let mut flushed = 0usize;
    for first in RANGES {
        let listed =
            ctx.execute_without_session(|c| c.get_capability(CapabilityType::Handles, first, 64));
        let handles = match listed {
            Ok((CapabilityData::Handles(list), _)) => list.into_inner(),
            Ok(_) => continue,
            Err(e) => {
                tracing::warn!(error = %e, first, "could not list stale TPM handles");
                continue;
            }
        };
        for handle in handles {
            let named = ctx.execute_without_session(|c| c.tr_from_tpm_public(handle));
            let flushed_one = named.and_then(|object| ctx.flush_context(object));
            match flushed_one {
                Ok(()) => flushed += 1,
                Err(e) => tracing::warn!(error = %e, ?handle, "could not flush a stale TPM handle"),
            }
        }
    }
    if flushed > 0 {
        tracing::info!(
            flushed,
            "TPM objects and sessions left by a process that died were flushed"
        );
    }
}

/// Starts a session salted with the SRK; with `encrypt`, parameters are encrypted both
/// ways (only one session of a command may do that).
pub(crate) fn start_session(
    ctx: &mut Context,
    srk: KeyHandle,
    kind: SessionType,
    encrypt: bool,
) -> Result<AuthSession> {
    let session = ctx
        .execute_without_session(|c| {
            c.start_auth_session(
                Some(srk),
                None,
                None,
                kind,
                SymmetricDefinition::AES_128_CFB,
                HashingAlgorithm::Sha256,
            )
        })
        .during("start a session")?
        .ok_or_else(|| TpmError::Tpm {
            operation: "start a session",
            detail: "no session returned".into(),
        })?;
    let (attributes, mask) = SessionAttributesBuilder::new()
        .with_decrypt(encrypt)
        .with_encrypt(encrypt)
        .with_continue_session(true)
        .build();
    ctx.tr_sess_set_attributes(session, attributes, mask)
        .during("set session attributes")?;
    Ok(session)
}

fn transient_slots(ctx: &mut Context) -> usize {
    let answer = ctx.execute_without_session(|c| {
        c.get_capability(
            CapabilityType::TpmProperties,
            PropertyTag::HrTransientMin.into(),
            1,
        )
    });
    match answer {
        Ok((CapabilityData::TpmProperties(list), _)) => list
            .iter()
            .find(|p| p.property() == PropertyTag::HrTransientMin)
            .map(|p| p.value() as usize)
            .filter(|n| *n >= 3)
            .unwrap_or(DEFAULT_TRANSIENT_SLOTS),
        _ => DEFAULT_TRANSIENT_SLOTS,
    }
}

fn blob_id(blob: &TpmBlob) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(&blob.public);
    h.update(&blob.private);
    h.finalize().into()
}
