//! One pooled session and the key handles it has found.
//!
//! Handles are cached per session, found again by `CKA_ID` when they go stale, and all
//! forgotten when the pool's epoch moves (a key was destroyed somewhere), so a handle
//! number the token reuses can never reach a different key.

use cryptoki::error::Error as CkError;
use cryptoki::object::{Attribute, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, SessionState};

use crate::error::{HsmError, Op, Result, is_stale_handle};
use crate::key::{KeyId, KeySpec};
use crate::quirks::Quirks;
use hashlink::LruCache;

/// Whether a key's spec allows an operation; `Err` says why not.
pub(crate) type UsageCheck<'a> = &'a dyn Fn(KeySpec) -> std::result::Result<(), String>;

/// For a key whose usage was already checked by [`PooledSession::key_for`].
pub(crate) fn already_checked(_: KeySpec) -> std::result::Result<(), String> {
    Ok(())
}

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
    /// Bounded by [`crate::PoolConfig::cached_keys`], least recently used out first.
    pub(crate) keys: LruCache<KeyId, Vec<(ObjectClass, ResolvedKey)>>,
    /// The pool's handle epoch when `keys` was last valid.
    pub(crate) epoch: u64,
    /// The module's generation when the session was opened (see `crate::module`).
    pub(crate) generation: u64,
}

impl PooledSession {
    /// Closes the session, or, if the module was re-initialised since it was opened,
    /// forgets it: its handle is void, and closing it could close a newer session that
    /// was given the same number.
    pub(crate) fn retire(self, generation: u64) {
        if self.generation == generation {
            drop(self);
        } else {
            std::mem::forget(self);
        }
    }
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
            .and_then(|objects| objects.iter().find(|(c, _)| *c == class))
            .map(|(_, found)| *found);
        if let Some(found) = cached {
            return Ok(found);
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
        match self.keys.get_mut(id) {
            Some(objects) => objects.push((class, found)),
            None => {
                self.keys.insert(id.clone(), vec![(class, found)]);
            }
        }
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

    /// Finds the object of `class` for key `id` and checks that its spec allows the
    /// operation. This is the one place where operations are matched against keys.
    pub(crate) fn key_for(
        &mut self,
        id: &KeyId,
        class: ObjectClass,
        allowed: UsageCheck<'_>,
    ) -> Result<ResolvedKey> {
        let key = match self.resolve(id, class) {
            Err(HsmError::KeyNotFound(_)) => {
                // Tell "no such key" apart from "this key has no part for that operation".
                let other = [
                    ObjectClass::PRIVATE_KEY,
                    ObjectClass::SECRET_KEY,
                    ObjectClass::PUBLIC_KEY,
                ]
                .into_iter()
                .filter(|c| *c != class)
                .find_map(|c| self.resolve(id, c).ok());
                return Err(match other {
                    Some(found) => HsmError::KeyUsageNotPermitted {
                        key: id.clone(),
                        reason: format!(
                            "it is a {} key for {:?}",
                            found.spec.algorithm(),
                            found.spec.usage()
                        ),
                    },
                    None => HsmError::KeyNotFound(id.clone()),
                });
            }
            other => other?,
        };
        allowed(key.spec).map_err(|reason| HsmError::KeyUsageNotPermitted {
            key: id.clone(),
            reason,
        })?;
        Ok(key)
    }

    /// Runs `f` with a key's handle once its spec passed `allowed`; if the handle went
    /// stale, finds the key again by id and runs `f` once more.
    pub(crate) fn with_key<T>(
        &mut self,
        id: &KeyId,
        class: ObjectClass,
        op: Op,
        allowed: UsageCheck<'_>,
        mut f: impl FnMut(&Session, ResolvedKey) -> std::result::Result<T, CkError>,
    ) -> Result<T> {
        let key = self.key_for(id, class, allowed)?;
        match f(&self.session, key) {
            Err(e) if is_stale_handle(&e) => {
                self.forget(id);
                let key = self.key_for(id, class, allowed)?;
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
