//! A session borrowed from a [`SessionPool`], returned or discarded when dropped.

use super::{PooledSession, SessionPool};
use crate::error::{HsmError, Result};

/// A session borrowed from the pool. It holds one of the pool's `open` places until it
/// goes back on drop, or is discarded.
pub(super) struct Lease<'a> {
    pool: &'a SessionPool,
    session: Option<PooledSession>,
    holds_place: bool,
    generation: u64,
}

impl<'a> Lease<'a> {
    pub(super) fn new(pool: &'a SessionPool, session: PooledSession, generation: u64) -> Self {
        Lease {
            pool,
            session: Some(session),
            holds_place: true,
            generation,
        }
    }

    pub(super) fn session(&mut self) -> Result<&mut PooledSession> {
        self.session
            .as_mut()
            .ok_or_else(|| HsmError::TokenUnavailable("no session could be opened".into()))
    }

    /// Throws the session away and opens a fresh one in its place.
    pub(super) fn replace(&mut self) -> Result<()> {
        if let Some(old) = self.session.take() {
            old.retire(self.generation);
        }
        match self.pool.new_session(self.generation) {
            Ok(session) => {
                self.session = Some(session);
                Ok(())
            }
            Err(e) => {
                self.discard();
                Err(e)
            }
        }
    }

    /// Throws the session away; the pool opens a new one on a later checkout.
    pub(super) fn discard(&mut self) {
        if let Some(old) = self.session.take() {
            old.retire(self.generation);
        }
        if std::mem::take(&mut self.holds_place) {
            self.pool.release_slot();
        }
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        match self.session.take() {
            Some(session) => self.pool.checkin(session),
            None => self.discard(),
        }
    }
}
