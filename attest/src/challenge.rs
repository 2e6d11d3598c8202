//! Challenges: a random 32-byte nonce, valid once, for a short time.
//!
//! The store is bounded (a flood of challenge requests cannot grow it without limit) and
//! safe to share between threads. A nonce leaves the outstanding set when it is used, so a
//! second use is refused as a replay even within its lifetime (LESSONS: trustee #151,
//! veraison #427). Only outstanding challenges count against the bounds: used ones are
//! remembered apart, the most recent `capacity` of them, only to name a replay as such;
//! a replay of one already forgotten is still refused, as unknown.

use std::collections::{HashMap, VecDeque};
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

/// Outstanding challenges, each owned by the identity that asked for it.
#[derive(Debug)]
pub struct ChallengeStore {
    ttl: Duration,
    capacity: usize,
    per_owner: usize,
    clock: Arc<dyn Clock>,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Issued and not yet used (possibly expired: those leave at the next purge).
    outstanding: HashMap<Nonce, Entry>,
    /// Outstanding challenges per owner.
    per_owner: HashMap<Arc<str>, usize>,
    /// Recently used challenges and their owners, to name replays.
    used: Used,
}

/// A challenge's owner and expiry.
#[derive(Debug, Clone)]
struct Entry {
    owner: Arc<str>,
    expires_at: SystemTime,
}

/// The most recently used challenges, oldest first, at most the store's capacity.
#[derive(Debug, Default)]
struct Used {
    owners: HashMap<Nonce, Arc<str>>,
    order: VecDeque<Nonce>,
}

impl Used {
    fn remember(&mut self, nonce: Nonce, owner: Arc<str>, capacity: usize) {
        while self.order.len() >= capacity {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            self.owners.remove(&oldest);
        }
        self.order.push_back(nonce);
        self.owners.insert(nonce, owner);
    }
}

impl State {
    /// Forgets expired outstanding challenges.
    fn purge(&mut self, now: SystemTime) {
        let per_owner = &mut self.per_owner;
        self.outstanding.retain(|_, entry| {
            let keep = entry.expires_at > now;
            if !keep {
                release(per_owner, &entry.owner);
            }
            keep
        });
    }

    fn outstanding_of(&self, owner: &str) -> usize {
        self.per_owner.get(owner).copied().unwrap_or(0)
    }
}

fn release(per_owner: &mut HashMap<Arc<str>, usize>, owner: &str) {
    if let Some(count) = per_owner.get_mut(owner) {
        *count = count.saturating_sub(1);
        if *count == 0 {
            per_owner.remove(owner);
        }
    }
}

impl ChallengeStore {
    /// A store whose challenges live `ttl`, of which at most `capacity` are outstanding at
    /// once and at most `per_owner` for one owner, so that one caller cannot fill the
    /// store for everyone. Used challenges do not count; the last `capacity` of them are
    /// remembered to name replays.
    pub fn new(
        ttl: Duration,
        capacity: usize,
        per_owner: usize,
        clock: Arc<dyn Clock>,
    ) -> ChallengeStore {
        ChallengeStore {
            ttl,
            capacity: capacity.max(1),
            per_owner: per_owner.max(1),
            clock,
            state: Mutex::new(State::default()),
        }
    }

    /// Issues a fresh challenge to `owner`; only `owner` can redeem it.
    ///
    /// # Errors
    /// [`AttestError::ChallengeQuotaExceeded`] when `owner` already has `per_owner`
    /// unexpired challenges outstanding; [`AttestError::ChallengeStoreFull`] when
    /// `capacity` unexpired challenges are outstanding.
    pub fn issue(&self, owner: &str) -> Result<Challenge> {
        let now = self.clock.now();
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.outstanding_of(owner) >= self.per_owner || state.outstanding.len() >= self.capacity
        {
            state.purge(now);
        }
        if state.outstanding_of(owner) >= self.per_owner {
            return Err(AttestError::ChallengeQuotaExceeded(self.per_owner));
        }
        if state.outstanding.len() >= self.capacity {
            return Err(AttestError::ChallengeStoreFull);
        }
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        let challenge = Challenge {
            nonce: Nonce(bytes),
            expires_at: now + self.ttl,
        };
        let owner: Arc<str> = match state.per_owner.get_key_value(owner) {
            Some((shared, _)) => shared.clone(),
            None => Arc::from(owner),
        };
        *state.per_owner.entry(owner.clone()).or_insert(0) += 1;
        let entry = Entry {
            owner,
            expires_at: challenge.expires_at,
        };
        state.outstanding.insert(challenge.nonce, entry);
        Ok(challenge)
    }

    /// Consumes a nonce for `owner`: succeeds once, within its lifetime, for the identity
    /// it was issued to. A refusal changes nothing, except that an expired nonce is
    /// forgotten.
    ///
    /// # Errors
    /// [`AttestError::UnknownChallenge`] if never issued (or forgotten after expiry or
    /// use), [`AttestError::ForeignChallenge`] if issued to another identity,
    /// [`AttestError::ReplayedChallenge`] if recently used, [`AttestError::ExpiredChallenge`].
    pub fn redeem(&self, nonce: &Nonce, owner: &str) -> Result<()> {
        let now = self.clock.now();
        let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let state = &mut *guard;
        let Some(entry) = state.outstanding.get(nonce) else {
            return Err(match state.used.owners.get(nonce) {
                Some(used_by) if **used_by != *owner => AttestError::ForeignChallenge,
                Some(_) => AttestError::ReplayedChallenge,
                None => AttestError::UnknownChallenge,
            });
        };
        if *entry.owner != *owner {
            return Err(AttestError::ForeignChallenge);
        }
        let expired = entry.expires_at <= now;
        let owner = entry.owner.clone();
        state.outstanding.remove(nonce);
        release(&mut state.per_owner, &owner);
        if expired {
            return Err(AttestError::ExpiredChallenge);
        }
        state.used.remember(*nonce, owner, self.capacity);
        Ok(())
    }

    /// Challenges outstanding now (issued, not used, possibly expired).
    pub fn len(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .outstanding
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

    const A: &str = "spiffe://td/a";
    const B: &str = "spiffe://td/b";

    fn store(ttl: u64, capacity: usize, now: u64) -> ChallengeStore {
        ChallengeStore::new(
            Duration::from_secs(ttl),
            capacity,
            capacity,
            Arc::new(FixedClock::at_unix(now)),
        )
    }

    #[test]
    fn a_nonce_is_accepted_once() {
        let s = store(60, 10, 1_000);
        let c = s.issue(A).unwrap();
        assert_eq!(s.redeem(&c.nonce, A), Ok(()));
        assert_eq!(s.redeem(&c.nonce, A), Err(AttestError::ReplayedChallenge));
    }

    #[test]
    fn unknown_and_expired_nonces_are_refused() {
        let s = store(60, 10, 1_000);
        assert_eq!(
            s.redeem(&Nonce([7; 32]), A),
            Err(AttestError::UnknownChallenge)
        );
        let expired = store(0, 10, 1_000);
        let c = expired.issue(A).unwrap();
        assert_eq!(
            expired.redeem(&c.nonce, A),
            Err(AttestError::ExpiredChallenge)
        );
        assert_eq!(
            expired.redeem(&c.nonce, A),
            Err(AttestError::UnknownChallenge)
        );
    }

    #[test]
    fn the_store_is_bounded_and_expired_entries_make_room() {
        let s = store(60, 2, 1_000);
        s.issue(A).unwrap();
        s.issue(B).unwrap();
        assert_eq!(
            s.issue("spiffe://td/c"),
            Err(AttestError::ChallengeStoreFull)
        );
        let short = store(0, 2, 1_000);
        for _ in 0..10 {
            short.issue(A).unwrap();
        }
        assert!(short.len() <= 2);
    }

    #[test]
    fn concurrent_redeems_of_one_nonce_succeed_exactly_once() {
        let s = Arc::new(store(60, 100, 1_000));
        let c = s.issue(A).unwrap();
        let wins: usize = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|_| scope.spawn(|| s.redeem(&c.nonce, A).is_ok()))
                .collect();
            handles
                .into_iter()
                .map(|h| usize::from(h.join().unwrap_or(false)))
                .sum()
        });
        assert_eq!(wins, 1);
    }

    #[test]
    fn a_challenge_belongs_to_the_identity_that_asked_for_it() {
        let s = store(60, 10, 1_000);
        let c = s.issue(A).unwrap();
        assert_eq!(s.redeem(&c.nonce, B), Err(AttestError::ForeignChallenge));
        // The refusal used nothing up: the owner still redeems it, once.
        assert_eq!(s.redeem(&c.nonce, A), Ok(()));
        assert_eq!(s.redeem(&c.nonce, B), Err(AttestError::ForeignChallenge));
        assert_eq!(s.redeem(&c.nonce, A), Err(AttestError::ReplayedChallenge));
    }

    #[test]
    fn one_identity_cannot_take_every_challenge() {
        let s = ChallengeStore::new(
            Duration::from_secs(60),
            100,
            3,
            Arc::new(FixedClock::at_unix(1_000)),
        );
        let mine: Vec<_> = (0..3).map(|_| s.issue(A).unwrap()).collect();
        assert_eq!(s.issue(A), Err(AttestError::ChallengeQuotaExceeded(3)));
        assert!(s.issue(B).is_ok(), "another identity is still served");
        // Redeeming one gives the owner room for one more.
        s.redeem(&mine[0].nonce, A).unwrap();
        assert!(s.issue(A).is_ok());
        assert_eq!(s.issue(A), Err(AttestError::ChallengeQuotaExceeded(3)));
    }

    #[test]
    fn expired_challenges_leave_the_owner_quota() {
        let s = ChallengeStore::new(
            Duration::from_secs(0),
            100,
            2,
            Arc::new(FixedClock::at_unix(1_000)),
        );
        for _ in 0..10 {
            s.issue(A).unwrap();
        }
        assert!(s.len() <= 2);
    }

    #[test]
    fn used_challenges_take_no_room_and_replays_stay_refused() {
        let s = store(60, 2, 1_000);
        let used: Vec<_> = (0..10)
            .map(|_| {
                let c = s.issue(A).unwrap();
                s.redeem(&c.nonce, A).unwrap();
                c
            })
            .collect();
        assert!(s.is_empty());
        let outstanding = s.issue(A).unwrap();
        assert!(
            s.issue(B).is_ok(),
            "used challenges leave the room to others"
        );
        // The most recent uses are named as replays, by their owner and by others.
        assert_eq!(
            s.redeem(&used[9].nonce, A),
            Err(AttestError::ReplayedChallenge)
        );
        assert_eq!(
            s.redeem(&used[9].nonce, B),
            Err(AttestError::ForeignChallenge)
        );
        // An older one is forgotten, and still refused.
        assert_eq!(
            s.redeem(&used[0].nonce, A),
            Err(AttestError::UnknownChallenge)
        );
        assert_eq!(s.redeem(&outstanding.nonce, A), Ok(()));
    }
}
