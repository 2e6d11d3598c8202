//! The integrity of the store's rows (docs/sealing.md, "The broker's own data at rest").
//!
//! Each protected row carries a MAC: HMAC-SHA-256, under a key derived (HKDF-SHA-256)
//! from the store key, over a canonical encoding ([`Canon`]) of the whole record, with
//! the table and the primary key first. The store key is random, made once, and kept in
//! the database only wrapped by the HSM or sealed by the TPM (`crate::store_key`), so a
//! copy of the database file proves nothing about new rows and whoever can write the file
//! but not use the hardware cannot forge one: an edited, swapped or added row is refused
//! when it is read, not acted on.
//!
//! A key's record is one MAC over the key, its tags and its versions: deleting a tag or a
//! version row, or moving one to another key, breaks it too.

use std::sync::{Arc, PoisonError, RwLock};

use aws_lc_rs::{hkdf, hmac};
use sealed_format::DataKey;
use secrecy::ExposeSecret;

use super::{Result, StoreError};

/// What the row key is derived for; a later key for another purpose takes another label.
const ROW_KEY_INFO: &[u8] = b"keybroker store row mac v1";

/// Starts every MAC input, so that a MAC of this format is never taken for another.
const DOMAIN: &[u8] = b"keybroker-store-row-v1";

/// The key rows are MACed with, derived from the store key; never stored.
#[derive(Clone)]
pub struct RowKey(hmac::Key);

impl std::fmt::Debug for RowKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RowKey(..)")
    }
}

impl RowKey {
    /// The row key of the store key `store_key` (32 random bytes).
    ///
    /// # Errors
    /// [`StoreError::Database`] if HKDF fails.
    pub fn derive(store_key: &DataKey) -> Result<RowKey> {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &[]).extract(store_key.expose_secret());
        // The derived key goes from aws-lc's HKDF into its HMAC key, never through ours.
        let okm = prk
            .expand(&[ROW_KEY_INFO], hmac::HMAC_SHA256)
            .map_err(|_| StoreError::Database("cannot derive the row key".into()))?;
        Ok(RowKey(hmac::Key::from(okm)))
    }

    fn tag(&self, canon: &Canon) -> Vec<u8> {
        hmac::sign(&self.0, &canon.0).as_ref().to_vec()
    }

    fn verify(&self, canon: &Canon, mac: &[u8]) -> bool {
        hmac::verify(&self.0, &canon.0, mac).is_ok()
    }
}

/// The canonical encoding of a record: a type byte, and for text and bytes a 4-byte
/// big-endian length, before each field. No two records (or tables) encode alike.
#[derive(Debug, Clone)]
pub struct Canon(Vec<u8>);

impl Canon {
    /// A record of `table`; its primary key comes next.
    pub fn new(table: &str) -> Canon {
        Canon(DOMAIN.to_vec()).text(table)
    }

    fn field(mut self, kind: u8, bytes: &[u8]) -> Canon {
        self.0.push(kind);
        let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
        self.0.extend_from_slice(&len.to_be_bytes());
        self.0.extend_from_slice(bytes);
        self
    }

    pub fn text(self, text: &str) -> Canon {
        self.field(b's', text.as_bytes())
    }

    pub fn bytes(self, bytes: &[u8]) -> Canon {
        self.field(b'b', bytes)
    }

    pub fn int(mut self, value: i64) -> Canon {
        self.0.push(b'i');
        self.0.extend_from_slice(&value.to_be_bytes());
        self
    }

    pub fn opt_int(mut self, value: Option<i64>) -> Canon {
        match value {
            Some(value) => self.int(value),
            None => {
                self.0.push(b'n');
                self
            }
        }
    }

    pub fn opt_text(mut self, value: Option<&str>) -> Canon {
        match value {
            Some(value) => self.text(value),
            None => {
                self.0.push(b'n');
                self
            }
        }
    }

    pub fn flag(self, value: bool) -> Canon {
        self.int(i64::from(value))
    }

    /// The start of a list of `len` items.
    pub fn count(self, len: usize) -> Canon {
        self.int(i64::try_from(len).unwrap_or(i64::MAX))
    }
}

/// Whether, and how, a store checks its rows.
#[derive(Debug)]
enum State {
    /// The database has no store key: rows carry no MAC and none is written.
    Unprotected,
    /// The database has a store key that has not been unwrapped yet: every protected
    /// read and write is refused.
    Locked,
    Unlocked(Box<RowKey>),
}

/// A store's protection, shared by its threads.
#[derive(Debug, Clone)]
pub struct Guard(Arc<RwLock<State>>);

impl Guard {
    /// The guard of a store that holds a store key (`locked`) or none.
    pub fn new(locked: bool) -> Guard {
        let state = match locked {
            true => State::Locked,
            false => State::Unprotected,
        };
        Guard(Arc::new(RwLock::new(state)))
    }

    /// From now on, rows are checked and MACed with `key`.
    pub fn unlock(&self, key: RowKey) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = State::Unlocked(Box::new(key));
    }

    /// Whether rows are MACed.
    pub fn protected(&self) -> bool {
        !matches!(
            *self.0.read().unwrap_or_else(PoisonError::into_inner),
            State::Unprotected
        )
    }

    /// The MAC a row written now carries: `None` in an unprotected store.
    ///
    /// # Errors
    /// [`StoreError::Locked`] before the store key is unwrapped.
    pub fn tag(&self, canon: &Canon) -> Result<Option<Vec<u8>>> {
        match &*self.0.read().unwrap_or_else(PoisonError::into_inner) {
            State::Unprotected => Ok(None),
            State::Locked => Err(StoreError::Locked),
            State::Unlocked(key) => Ok(Some(key.tag(canon))),
        }
    }

    /// Checks the MAC `mac` read with the record `canon`, which is `what` (`key "a"`).
    ///
    /// # Errors
    /// [`StoreError::Tampered`] for a MAC that does not verify, a missing one, or one in
    /// a store that has no store key (its row was deleted); [`StoreError::Locked`] before
    /// the store key is unwrapped.
    pub fn check(
        &self,
        what: &dyn Fn() -> String,
        canon: &Canon,
        mac: Option<&[u8]>,
    ) -> Result<()> {
        let why = match (&*self.0.read().unwrap_or_else(PoisonError::into_inner), mac) {
            (State::Locked, _) => return Err(StoreError::Locked),
            (State::Unprotected, None) => return Ok(()),
            (State::Unlocked(key), Some(mac)) if key.verify(canon, mac) => return Ok(()),
            (State::Unprotected, Some(_)) => {
                "carries a MAC, but the database holds no store key (was its row deleted?)"
            }
            (State::Unlocked(_), None) => "has no MAC: it was written outside the broker",
            (State::Unlocked(_), Some(_)) => {
                "fails its integrity check: it was changed outside the broker"
            }
        };
        Err(StoreError::Tampered(format!("the stored {} {why}", what())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> RowKey {
        RowKey::derive(&DataKey::from_slice(&[byte; 32]).expect("32 bytes")).expect("derived")
    }

    fn unlocked(byte: u8) -> Guard {
        let guard = Guard::new(true);
        guard.unlock(key(byte));
        guard
    }

    fn what() -> String {
        "key \"a\"".into()
    }

    #[test]
    fn a_row_checks_under_its_key_only() {
        let canon = Canon::new("keys").text("a").int(1);
        let mac = unlocked(1).tag(&canon).expect("tag").expect("protected");
        assert!(unlocked(1).check(&what, &canon, Some(&mac)).is_ok());
        let other = unlocked(2).check(&what, &canon, Some(&mac));
        assert!(matches!(other, Err(StoreError::Tampered(m)) if m.contains("integrity check")));
    }

    #[test]
    fn any_changed_field_fails() {
        let guard = unlocked(1);
        let canon = Canon::new("keys").text("a").int(1).opt_int(None);
        let mac = guard.tag(&canon).expect("tag").expect("protected");
        for changed in [
            Canon::new("keys").text("a").int(2).opt_int(None),
            Canon::new("keys").text("b").int(1).opt_int(None),
            Canon::new("leases").text("a").int(1).opt_int(None),
            Canon::new("keys").text("a").int(1).opt_int(Some(0)),
        ] {
            assert!(guard.check(&what, &changed, Some(&mac)).is_err());
        }
    }

    #[test]
    fn fields_cannot_slide_into_each_other() {
        let a = Canon::new("t").text("ab").text("c");
        let b = Canon::new("t").text("a").text("bc");
        assert_ne!(a.0, b.0);
        assert_ne!(Canon::new("t").bytes(b"x").0, Canon::new("t").text("x").0);
        assert_ne!(
            Canon::new("t").opt_text(None).0,
            Canon::new("t").opt_text(Some("")).0
        );
    }

    #[test]
    fn missing_and_orphaned_macs_are_refused() {
        let canon = Canon::new("keys").text("a");
        let missing = unlocked(1).check(&what, &canon, None);
        assert!(matches!(missing, Err(StoreError::Tampered(m)) if m.contains("has no MAC")));
        let orphan = Guard::new(false).check(&what, &canon, Some(&[0; 32]));
        assert!(matches!(orphan, Err(StoreError::Tampered(m)) if m.contains("no store key")));
        assert!(Guard::new(false).check(&what, &canon, None).is_ok());
        assert_eq!(Guard::new(false).tag(&canon).expect("unprotected"), None);
    }

    #[test]
    fn a_locked_store_neither_reads_nor_writes() {
        let canon = Canon::new("keys").text("a");
        assert!(matches!(
            Guard::new(true).tag(&canon),
            Err(StoreError::Locked)
        ));
        let read = Guard::new(true).check(&what, &canon, Some(&[0; 32]));
        assert!(matches!(read, Err(StoreError::Locked)));
    }
}
