//! Challenges: a random 32-byte nonce, valid once, for a short time.
//!
//! The store is bounded (a flood of challenge requests cannot grow it without limit) and
//! safe to share between threads. A nonce is removed when it is used, so a second use is
//! refused as a replay even within its lifetime (LESSONS: trustee #151, veraison #427).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rand::RngCore;

use crate::clock::Clock;
use crate::error::{AttestError, Result};

/// A challenge nonce.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Nonce([u8; 32]);

impl Nonce {
    /// Wraps 32 bytes received from a client.
    pub fn from_bytes(bytes: [u8; 32]) -> Nonce {
        Nonce(bytes)
    }

    /// Parses a nonce of exactly 32 bytes.
    ///
    /// # Errors
    /// [`AttestError::Malformed`] for another length.
    pub fn from_slice(bytes: &[u8]) -> Result<Nonce> {
        <[u8; 32]>::try_from(bytes).map(Nonce).map_err(|_| {
            AttestError::Malformed(format!("a nonce has 32 bytes, not {}", bytes.len()))
        })
    }

    /// The nonce bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Debug for Nonce {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Nonce({})", hex::encode(&self.0[..4]))
    }
}

/// An issued challenge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Challenge {
    /// The nonce to bind into the evidence.
    pub nonce: Nonce,
    /// When it stops being accepted.
    pub expires_at: SystemTime,
}

/// Outstanding challenges.
#[derive(Debug)]
pub struct ChallengeStore {
    ttl: Duration,
    capacity: usize,
    clock: Arc<dyn Clock>,
    outstanding: Mutex<HashMap<Nonce, Entry>>,
}

/// A challenge's expiry, and whether it was used (kept until expiry to name replays).
#[derive(Debug, Clone, Copy)]
struct Entry {
    expires_at: SystemTime,
    used: bool,
}

impl ChallengeStore {
    /// A store whose challenges live `ttl` and of which at most `capacity` are outstanding.
    pub fn new(ttl: Duration, capacity: usize, clock: Arc<dyn Clock>) -> ChallengeStore {
        ChallengeStore {
            ttl,
            capacity: capacity.max(1),
            clock,
            outstanding: Mutex::new(HashMap::new()),
        }
    }

    /// Issues a fresh challenge.
    ///
    /// # Errors
    /// [`AttestError::ChallengeStoreFull`] when `capacity` unexpired challenges are out.
    pub fn issue(&self) -> Result<Challenge> {
        let now = self.clock.now();
        let mut outstanding = self.outstanding.lock().unwrap_or_else(|p| p.into_inner());
        if outstanding.len() >= self.capacity {
            outstanding.retain(|_, entry| entry.expires_at > now);
            if outstanding.len() >= self.capacity {
                return Err(AttestError::ChallengeStoreFull);
            }
        }
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        let challenge = Challenge {
            nonce: Nonce(bytes),
            expires_at: now + self.ttl,
        };
        let entry = Entry {
            expires_at: challenge.expires_at,
            used: false,
        };
        outstanding.insert(challenge.nonce, entry);
        Ok(challenge)
    }

    /// Consumes a nonce: succeeds once, within its lifetime.
    ///
    /// # Errors
    /// [`AttestError::UnknownChallenge`] if never issued (or forgotten after expiry),
    /// [`AttestError::ReplayedChallenge`] if already used, [`AttestError::ExpiredChallenge`].
    pub fn redeem(&self, nonce: &Nonce) -> Result<()> {
        let now = self.clock.now();
        let mut outstanding = self.outstanding.lock().unwrap_or_else(|p| p.into_inner());
        let entry = outstanding
            .get_mut(nonce)
            .ok_or(AttestError::UnknownChallenge)?;
        if entry.used {
            return Err(AttestError::ReplayedChallenge);
        }
        if entry.expires_at <= now {
            outstanding.remove(nonce);
            return Err(AttestError::ExpiredChallenge);
        }
        entry.used = true;
        Ok(())
    }

    /// Challenges remembered now (outstanding, or used and not yet expired).
    pub fn len(&self) -> usize {
        self.outstanding
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// Whether no challenge is outstanding.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::clock::FixedClock;

    fn store(ttl: u64, capacity: usize, now: u64) -> ChallengeStore {
        ChallengeStore::new(
            Duration::from_secs(ttl),
            capacity,
            Arc::new(FixedClock::at_unix(now)),
        )
    }

    #[test]
    fn a_nonce_is_accepted_once() {
        let s = store(60, 10, 1_000);
        let c = s.issue().unwrap();
        assert_eq!(s.redeem(&c.nonce), Ok(()));
        assert_eq!(s.redeem(&c.nonce), Err(AttestError::ReplayedChallenge));
    }

    #[test]
    fn unknown_and_expired_nonces_are_refused() {
        let s = store(60, 10, 1_000);
        assert_eq!(
            s.redeem(&Nonce([7; 32])),
            Err(AttestError::UnknownChallenge)
        );
        let expired = store(0, 10, 1_000);
        let c = expired.issue().unwrap();
        assert_eq!(expired.redeem(&c.nonce), Err(AttestError::ExpiredChallenge));
        assert_eq!(expired.redeem(&c.nonce), Err(AttestError::UnknownChallenge));
    }

    #[test]
    fn the_store_is_bounded_and_expired_entries_make_room() {
        let s = store(60, 2, 1_000);
        s.issue().unwrap();
        s.issue().unwrap();
        assert_eq!(s.issue(), Err(AttestError::ChallengeStoreFull));
        let short = store(0, 2, 1_000);
        for _ in 0..10 {
            short.issue().unwrap();
        }
        assert!(short.len() <= 2);
    }

    #[test]
    fn concurrent_redeems_of_one_nonce_succeed_exactly_once() {
        let s = Arc::new(store(60, 100, 1_000));
        let c = s.issue().unwrap();
        let wins: usize = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|_| scope.spawn(|| s.redeem(&c.nonce).is_ok()))
                .collect();
            handles
                .into_iter()
                .map(|h| usize::from(h.join().unwrap_or(false)))
                .sum()
        });
        assert_eq!(wins, 1);
    }
}
