//! One pooled session and the key handles it has found.
//!
//! Handles are cached per session, found again by `CKA_ID` when they go stale, and all
//! forgotten when the pool's epoch moves (a key was destroyed somewhere), so a handle
//! number the token reuses can never reach a different key.

use std::collections::HashMap;

use cryptoki::error::Error as CkError;
use cryptoki::object::{Attribute, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, SessionState};

use crate::error::{HsmError, Op, Result, is_stale_handle};
use crate::key::{KeyId, KeySpec};
use crate::quirks::Quirks;

/// A key found on the token through one session: its handle there and what it is.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ResolvedKey {
    pub(crate) handle: ObjectHandle,
    pub(crate) spec: KeySpec,
}

/// One session and the handles it has found.
pub(crate) struct PooledSession {
    pub(crate) session: Session,
    pub(crate) quirks: Quirks,
    pub(crate) keys: HashMap<KeyId, Vec<(ObjectClass, ResolvedKey)>>,
    /// The pool's handle epoch when `keys` was last valid.
    pub(crate) epoch: u64,
}

impl PooledSession {
    /// Maps a PKCS#11 error with this token's quirks.
    pub(crate) fn error(&self, e: CkError, op: Op) -> HsmError {
        HsmError::from_pkcs11(e, op, &self.quirks)
    }

    /// Finds a key object by id and class, from the cache or the token.
    pub(crate) fn resolve(&mut self, id: &KeyId, class: ObjectClass) -> Result<ResolvedKey> {
        let cached = self
            .keys
            .get(id)
            .and_then(|objects| objects.iter().find(|(c, _)| *c == class));
        if let Some((_, found)) = cached {
            return Ok(*found);
        }
        let template = [
            Attribute::Class(class),
            Attribute::Id(id.as_bytes().to_vec()),
        ];
        let handles = self
            .session
            .find_objects(&template)
            .map_err(|e| self.error(e, Op::General))?;
        let Some(handle) = handles.first().copied() else {
            return Err(self.missing(id, class));
        };
        let spec = crate::lookup::read_spec(&self.session, handle, id, &self.quirks)?;
        let found = ResolvedKey { handle, spec };
        self.keys
            .entry(id.clone())
            .or_default()
            .push((class, found));
        Ok(found)
    }

    /// Why a key object was not found: private objects are invisible to a session whose
    /// login was lost, which must be healed rather than reported as a missing key.
    fn missing(&self, id: &KeyId, class: ObjectClass) -> HsmError {
        if class != ObjectClass::PUBLIC_KEY {
            let logged_out = self.session.get_session_info().map(|info| {
                matches!(
                    info.session_state(),
                    SessionState::RoPublic | SessionState::RwPublic
                )
            });
            if !matches!(logged_out, Ok(false)) {
                return HsmError::TokenUnavailable("the session is no longer logged in".into());
            }
        }
        HsmError::KeyNotFound(id.clone())
    }

    /// Runs `f` with a key's handle; if the handle went stale, finds the key again by id
    /// and runs `f` once more.
    pub(crate) fn with_key<T>(
        &mut self,
        id: &KeyId,
        class: ObjectClass,
        op: Op,
        mut f: impl FnMut(&Session, ResolvedKey) -> std::result::Result<T, CkError>,
    ) -> Result<T> {
        let key = self.resolve(id, class)?;
        match f(&self.session, key) {
            Err(e) if is_stale_handle(&e) => {
                self.forget(id);
                let key = self.resolve(id, class)?;
                f(&self.session, key).map_err(|e| self.error(e, op))
            }
            other => other.map_err(|e| self.error(e, op)),
        }
    }

    /// Drops cached handles of a key (after destroying it, or when they went stale).
    pub(crate) fn forget(&mut self, id: &KeyId) {
        self.keys.remove(id);
    }

    /// Forgets every cached handle if keys were destroyed since the cache was filled, so
    /// that a handle number the token reuses can never reach a different key.
    pub(crate) fn sync_epoch(&mut self, epoch: u64) {
        if self.epoch != epoch {
            self.keys.clear();
            self.epoch = epoch;
        }
    }
}
