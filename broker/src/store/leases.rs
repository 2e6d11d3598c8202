//! What the store keeps of leases (migration `0004_leases.sql`): who holds which dynamic
//! secret until when, and what to undo when it ends. Never the secret.

use super::StoreCall;

/// One lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRecord {
    /// `<role>/<32 hex digits>`.
    pub id: String,
    pub role: String,
    /// The SPIFFE ID it was made for.
    pub owner: String,
    /// What the engine made (a PostgreSQL role name), or empty.
    pub handle: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub max_expires_at: i64,
    pub revoked_at: Option<i64>,
}

impl LeaseRecord {
    /// Neither revoked nor expired at `now`.
    pub fn is_live(&self, now: i64) -> bool {
        self.revoked_at.is_none() && self.expires_at > now
    }
}

/// The lease table of the store. Every key store is one.
pub trait LeaseStore {
    /// Records a new lease, unless its owner already holds `max_live` live leases on its
    /// role (counted and written in one transaction).
    ///
    /// # Errors
    /// [`super::StoreError::LeaseLimit`]; [`super::StoreError::Database`] if the id is
    /// taken (ids are random: never).
    fn create_lease(&self, lease: &LeaseRecord, max_live: u64) -> StoreCall<()>;

    /// One lease.
    ///
    /// # Errors
    /// [`super::StoreError::LeaseNotFound`].
    fn lease(&self, id: &str) -> StoreCall<LeaseRecord>;

    /// Moves a live lease's end to `expires_at` (the caller keeps it within
    /// `max_expires_at`); the lease after the change.
    ///
    /// # Errors
    /// [`super::StoreError::LeaseNotFound`]; [`super::StoreError::LeaseNotLive`] if it was
    /// revoked or had expired at `now`.
    fn extend_lease(&self, id: &str, expires_at: i64, now: i64) -> StoreCall<LeaseRecord>;

    /// Marks a lease revoked at `now` (kept if it already was); the lease after.
    ///
    /// # Errors
    /// [`super::StoreError::LeaseNotFound`].
    fn revoke_lease(&self, id: &str, now: i64) -> StoreCall<LeaseRecord>;

    /// Marks every live lease of `role` revoked at `now`; how many.
    fn revoke_role_leases(&self, role: &str, now: i64) -> StoreCall<u64>;

    /// At most `limit` leases that are revoked or expired at `now`, soonest ended first:
    /// the ones whose engine work is to be undone.
    fn due_leases(&self, now: i64, limit: usize) -> StoreCall<Vec<LeaseRecord>>;

    /// Deletes a lease whose engine work was undone (no error if it is gone already).
    fn forget_lease(&self, id: &str) -> StoreCall<()>;

    /// At most `limit` leases of roles that start with `prefix`, with ids after `after`,
    /// by id.
    fn list_leases(&self, prefix: &str, after: &str, limit: usize) -> StoreCall<Vec<LeaseRecord>>;
}
